"""The on-disk cache by file content: ``nnutils.data.cache.ContentCache``."""
from __future__ import annotations

import shutil

import numpy as np

from nnutils.data.cache import ContentCache, model_key
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
    assert sorted(f.name for f in folder.iterdir()) == sorted(f"{file_digest(p)}.npy" for p in again[:2])
    # a damaged row (a run killed mid-write before writes were atomic) or one of another shape is a
    # miss, recomputed and rewritten, not a crash deep in numpy
    (folder / f"{file_digest(again[1])}.npy").write_bytes(b"\x93NUMPY truncated")
    out3, ok3 = np.zeros((3, 3), np.float32), np.zeros(3, bool)
    c3 = ContentCache(folder, again)
    assert c3.lookup(out3, ok3) == [1, 2] and ok3.tolist() == [True, False, False]
    c3.store(1, np.array([7, 8, 9], np.float32))
    assert ContentCache(folder, again).lookup(out3, ok3) == [2] and out3[1].tolist() == [7, 8, 9]
    assert ContentCache(folder, again).lookup(np.zeros((3, 5), np.float32), np.zeros(3, bool)) == [0, 1, 2]
    assert not list(folder.glob("*.tmp"))
    # no folder: nothing cached, nothing hashed
    off = ContentCache(None, paths)
    assert off.folder is None and off.digests == [None] * 4
    off.store(0, np.ones(3))
    assert off.lookup(np.zeros((4, 3)), np.zeros(4, bool)) == [0, 1, 2, 3]
