"""The on-disk cache by file content: ``nnutils.data.cache.ContentCache`` over a ``PackStore``."""
from __future__ import annotations

import os
import shutil
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from nnutils.data.cache import ContentCache, PackStore, model_key
from nnutils.data.images import file_digest, file_digest_or_none


def test_content_cache_keys_rows_by_file_content(tmp_path):
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    (imgs / "a.jpg").write_bytes(b"first image bytes")
    shutil.copy(imgs / "a.jpg", imgs / "a_renamed.jpg")         # the same content under another name
    (imgs / "b.jpg").write_bytes(b"second image bytes")
    paths = [str(imgs / "a.jpg"), None, str(imgs / "missing.jpg"), str(imgs / "b.jpg")]
    folder = tmp_path / "cache" / model_key("m", 1)
    c = ContentCache(folder, paths)
    assert c.digests == [file_digest(paths[0]), None, None, file_digest(paths[3])]
    assert file_digest_or_none(imgs) is None and file_digest_or_none(np.zeros(3)) is None   # a folder, an array
    out, ok = np.zeros((4, 3), np.float32), np.zeros(4, bool)
    assert c.lookup(out, ok) == [0, 1, 2, 3] and not ok.any()
    c.store(0, np.array([1, 2, 3], np.float32))
    c.store(1, np.array([9, 9, 9], np.float32))                 # no digest: nothing stored
    c.store(3, np.array([4, 5, 6], np.float32))
    again = [str(imgs / "a_renamed.jpg"), str(imgs / "b.jpg"), None]
    c2 = ContentCache(folder, again)
    out2, ok2 = np.zeros((3, 3), np.float32), np.zeros(3, bool)
    assert c2.lookup(out2, ok2) == [2]
    np.testing.assert_array_equal(out2[:2], [[1, 2, 3], [4, 5, 6]])
    assert ok2.tolist() == [True, True, False]
    # one pack and its index per writing cache, not a file per image
    assert sorted(f.suffix for f in folder.iterdir()) == [".idx", ".pack"]
    assert len(PackStore(folder)) == 2 and file_digest(again[1]) in PackStore(folder)
    # a damaged row or one of another shape is a miss, recomputed and stored again, not a crash deep in numpy
    PackStore(folder).put(file_digest(again[1]), b"\x93NUMPY truncated")
    out3, ok3 = np.zeros((3, 3), np.float32), np.zeros(3, bool)
    c3 = ContentCache(folder, again)
    assert c3.lookup(out3, ok3) == [1, 2] and ok3.tolist() == [True, False, False]
    c3.store(1, np.array([7, 8, 9], np.float32))
    assert ContentCache(folder, again).lookup(out3, ok3) == [2] and out3[1].tolist() == [7, 8, 9]
    assert ContentCache(folder, again).lookup(np.zeros((3, 5), np.float32), np.zeros(3, bool)) == [0, 1, 2]
    assert not list(folder.glob("*.tmp")) and len(list(folder.glob("*.pack"))) == 3
    # no folder: nothing cached, nothing hashed
    off = ContentCache(None, paths)
    assert off.folder is None and off.digests == [None] * 4
    off.store(0, np.ones(3))
    assert off.lookup(np.zeros((4, 3)), np.zeros(4, bool)) == [0, 1, 2, 3]


def test_pack_store_appends_values_and_survives_a_killed_writer(tmp_path, monkeypatch):
    folder = tmp_path / "packs"
    s = PackStore(folder)
    assert len(s) == 0 and s.get("k1") is None and not list(folder.iterdir())   # nothing written yet
    s.put("k1", b"one")
    s.put("k2", np.arange(5, dtype=np.uint8).tobytes())
    s.put("k1", b"one again")                                   # the later value wins
    assert s.get("k1") == b"one again" and s.get("k2") == bytes(range(5))
    assert "k2" in s and "k3" not in s and len(s) == 2
    s.close()
    assert s.get("k1") == b"one again"                          # reopens its files after close
    packs = list(folder.glob("*.pack"))
    assert len(packs) == 1 and packs[0].stat().st_size == len(b"one" + bytes(5) + b"one again")
    r = PackStore(folder)
    assert (r.get("k1"), r.get("k2"), len(r)) == (b"one again", bytes(range(5)), 2)
    # a run killed mid-write: a value cut short and a half-written index line are not read back
    idx = packs[0].with_suffix(".idx")
    with open(idx, "a") as f:
        f.write("k4 17 1000\nk5 1")                             # past the pack's end; cut mid-line
    with open(packs[0], "ab") as f:
        f.write(b"partial")
    r = PackStore(folder)
    assert r.get("k4") is None and r.get("k5") is None and r.get("k1") == b"one again" and len(r) == 2
    # a second writer in the same folder (another process, another thread's store) writes files of its own
    w = PackStore(folder)
    w.put("k6", b"six")
    assert len(list(folder.glob("*.pack"))) == 2 and PackStore(folder).get("k6") == b"six"
    assert r.get("k6") is None                                  # opened before: a miss, recomputed
    # a forked child (another pid) writes a pack of its own, never the parent's
    real_pid = os.getpid()
    monkeypatch.setattr(os, "getpid", lambda: real_pid + 1)
    w.put("k7", b"seven")
    monkeypatch.setattr(os, "getpid", lambda: real_pid)
    assert len(list(folder.glob("*.pack"))) == 3 and PackStore(folder).get("k7") == b"seven"
    with pytest.raises(ValueError, match="printable ASCII"):
        w.put("two words", b"x")
    with pytest.raises(ValueError, match="printable ASCII"):
        w.put("", b"x")


def test_pack_store_is_thread_safe(tmp_path):
    s = PackStore(tmp_path)
    values = {f"{i:04x}": bytes([i % 256]) * (1 + i * 37 % 5000) for i in range(400)}
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda kv: s.put(*kv), values.items()))
    with ThreadPoolExecutor(4) as pool:
        got = dict(zip(values, pool.map(s.get, values)))
    assert got == values
    r = PackStore(tmp_path)
    assert len(r) == 400 and all(r.get(k) == v for k, v in values.items())
