"""The persistent collection: add / query / remove / stats, crash safety (kill -9), snapshots, marks, the command."""
import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from nnutils.decide.decision import Decision
from nnutils.decide.fusion import Fusion
from nnutils.scale.collection import DB_FILE, Collection

ROOT = Path(__file__).resolve().parents[1]


class PixelEmbedder:
    """A model-free embedder for the storage tests: the 8×8 grey thumbnail, centred and L2-normalised (64-d).

    Resized or re-encoded copies of one picture give a cosine near 1; different random
    pictures near 0. ``delay`` seconds are slept per call (to kill a process mid-add).
    """

    dim = 64
    runtime = "tflite"

    def __init__(self, delay: float = 0.0):
        self.delay = delay
        self.calls = 0

    def embed_paths(self, paths, batch_size=32, **kw):
        self.calls += 1
        if self.delay:
            time.sleep(self.delay)
        emb = np.full((len(paths), self.dim), np.nan, np.float32)
        ok = np.zeros(len(paths), bool)
        for i, p in enumerate(paths):
            try:
                with Image.open(p) as im:
                    a = np.asarray(im.convert("L").resize((8, 8), Image.BILINEAR), np.float32).ravel()
            except Exception:  # noqa: BLE001 - unreadable: a NaN row
                continue
            a -= a.mean()
            emb[i], ok[i] = a / (np.linalg.norm(a) + 1e-9), True
        return emb, ok


def fake_decision(threshold=0.9):
    return Decision(model="pixels8", threshold=threshold, model_path=Path("pixels8.keras"))


def open_coll(path, **kw):
    kw.setdefault("decision", fake_decision())
    kw.setdefault("embedder", PixelEmbedder())
    return Collection.open(path, **kw)


def picture(seed):
    """A 96×96 photo-like picture: smooth random blocks (distinct for every seed)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
    return Image.fromarray(small).resize((96, 96), Image.BICUBIC)


def write_pictures(folder, seeds, *, suffix=""):
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for s in seeds:
        p = folder / f"p{s:03d}{suffix}.png"
        picture(s).save(p)
        out.append(p)
    return out


@pytest.fixture()
def photos(tmp_path):
    """10 pictures, a resized JPEG copy of 3 of them, a byte-identical copy of one, and a broken file."""
    orig = write_pictures(tmp_path / "orig", range(10))
    copies = tmp_path / "copies"
    copies.mkdir()
    for s in (1, 4, 7):
        picture(s).resize((80, 80)).save(copies / f"copy{s}.jpg", quality=90)
    (copies / "same_bytes.png").write_bytes(orig[2].read_bytes())
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0garbage")
    return tmp_path


def test_add_query_remove_stats(photos, tmp_path):
    coll = open_coll(tmp_path / "coll")
    r = coll.add(photos / "orig", batch_size=4)
    assert r.report["added"] == 10 and r.report["known"] == 0 and len(coll) == 10
    # known content (same bytes under another name) is recognised, not embedded again; broken files are listed
    emb = coll.embedder
    calls = emb.calls
    r2 = coll.add([photos / "copies" / "same_bytes.png", photos / "broken" / "broken.jpg"])
    assert r2.report["added"] == 0 and r2.known.path.map(os.path.basename).tolist() == ["same_bytes.png"]
    assert r2.known.id.tolist() == [int(r.added.set_index("path").id[str((photos / "orig" / "p002.png").resolve())])]
    assert r2.unreadable.reason.tolist() == ["truncated"] and emb.calls == calls + 1   # only the broken file
    assert coll.unreadable().path.map(os.path.basename).tolist() == ["broken.jpg"]
    # query: the resized copies find their originals; a new picture finds nothing
    q = coll.query([photos / "copies" / "copy4.jpg", photos / "copies" / "copy7.jpg",
                    write_pictures(tmp_path / "new", [99])[0]], k=3)
    best = q.copies.groupby("query").first()
    assert {os.path.basename(a): os.path.basename(b) for a, b in best.match.items()} == {
        "copy4.jpg": "p004.png", "copy7.jpg": "p007.png"}
    assert (q.copies.score > 0.95).all() and (q.copies.global_decision == 1).all() and not q.copies.same_bytes.any()
    assert q.report["queries"] == 3 and q.report["copies"] == 2 and q.report["embed_s"] >= 0
    assert q.matches.columns.tolist() == ["query", "rank", "id", "match", "score", "same_bytes", "global_decision",
                                          "verified", "marked", "decision"]
    same = coll.query(photos / "copies" / "same_bytes.png", k=1).matches
    assert same.same_bytes.tolist() == [True] and same.score.iloc[0] == pytest.approx(1.0, abs=1e-5)
    # remove by path: a tombstone, never returned again
    assert coll.remove(photos / "orig" / "p004.png") == 1 and coll.remove(photos / "orig" / "p004.png") == 0
    q = coll.query(photos / "copies" / "copy4.jpg", k=3)
    assert q.copies.empty and len(coll) == 9
    st = coll.stats()
    assert (st["items"], st["removed"], st["delta"], st["base"], st["dim"]) == (9, 1, 9, 0, 64)
    assert st["paths"] == 11 and st["unreadable"] == 1
    # a merge writes a base file; the tombstone is purged from it (the base never held p004)
    m = coll.merge()
    assert m["kind"] == "flat" and m["rebuilt"] and m["base"] == 9 and m["purged"] == 1
    st = coll.stats()
    assert (st["items"], st["removed"], st["delta"], st["base"], st["generation"]) == (9, 0, 0, 9, 1)
    q = coll.query([photos / "copies" / "copy7.jpg", photos / "copies" / "copy4.jpg"], k=3)
    assert q.copies.match.map(os.path.basename).tolist() == ["p007.png"]
    # re-adding removed content makes a new item (a new id: ids are never reused)
    r3 = coll.add(photos / "orig" / "p004.png")
    assert r3.report["added"] == 1 and r3.added.id.iloc[0] > r.added.id.max()
    coll.close()


def test_base_plus_delta_equals_exact_search_with_tombstones(tmp_path):
    """A base (flat or HNSW), a delta and tombstones give the exact top-k of the live vectors."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 64)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    q = x[:20] + 0.05 * rng.normal(size=(20, 64)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    for kind in ("flat", "hnsw"):
        coll = open_coll(tmp_path / kind)
        coll.add_vectors(x[:400], [f"v{i}" for i in range(400)], [f"d{i}" for i in range(400)])
        assert coll.merge(kind=kind, ef_search=400)["kind"] == kind
        coll.add_vectors(x[400:], [f"v{i}" for i in range(400, 600)], [f"d{i}" for i in range(400, 600)])
        dead = [1, 5, 450, 7]
        assert coll.remove([i + 1 for i in dead]) == 4                     # ids start at 1
        snap = coll.snapshot()
        assert (snap.base_size, len(snap.delta_ids), snap.size) == (400, 199, 596)   # 450 left out of the delta
        s, ids = snap.search(q, 5, ef_search=400)
        live = np.setdiff1d(np.arange(600), dead)
        exact = np.argsort(-(q @ x[live].T), axis=1)[:, :5]
        assert (ids == live[exact] + 1).mean() >= (1.0 if kind == "flat" else 0.95)
        assert not np.isin(ids, np.array(dead) + 1).any()
        assert np.all(np.diff(s, axis=1) <= 1e-6)
        coll.close()


def test_readers_see_a_consistent_snapshot(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(50, 64)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    writer = open_coll(tmp_path / "c")
    writer.add_vectors(x[:30], [f"v{i}" for i in range(30)], [f"d{i}" for i in range(30)])
    reader = open_coll(tmp_path / "c")
    snap = reader.snapshot()
    assert snap.size == 30
    # the writer adds, merges and removes: the reader's snapshot is unchanged ...
    writer.add_vectors(x[30:], [f"v{i}" for i in range(30, 50)], [f"d{i}" for i in range(30, 50)])
    writer.merge()
    writer.remove([1, 2])
    writer.merge(rebuild=True)            # generation 2: the reader's base (none) and generation 1 may go
    assert snap.size == 30 and snap.search(x[40:41], 1)[1][0, 0] != 41
    # ... until it refreshes, which sees every commit
    snap2 = reader.snapshot()
    assert snap2.size == 48 and snap2.generation == 2 and snap2.search(x[40:41], 1)[1][0, 0] == 41
    assert sorted(p.name for p in (tmp_path / "c").glob("base-*")) == ["base-000001.faiss", "base-000002.faiss"]
    # new rows after a snapshot are loaded incrementally (the base object is kept)
    writer.add_vectors(-x[:1], ["neg"], ["dneg"])
    snap3 = reader.snapshot()
    assert snap3.index is snap2.index and snap3.size == 49 and snap3.search(-x[:1], 1)[1][0, 0] == 51
    writer.close()
    reader.close()


_KILL_SCRIPT = """
import sys
sys.path.insert(0, {root!r})
from tests.test_collection import open_coll, PixelEmbedder
coll = open_coll({coll!r}, embedder=PixelEmbedder(delay={delay}))
coll.add({first!r}, batch_size=5)
print("first done", flush=True)
coll.add({second!r}, batch_size=2)
print("second done", flush=True)
"""


def test_kill_9_in_the_middle_of_an_add_loses_nothing_added_before(tmp_path):
    first = write_pictures(tmp_path / "first", range(20))
    write_pictures(tmp_path / "second", range(100, 140))
    coll_dir = tmp_path / "coll"
    script = _KILL_SCRIPT.format(root=str(ROOT), coll=str(coll_dir), delay=0.15, first=str(tmp_path / "first"),
                                 second=str(tmp_path / "second"))
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    try:
        assert proc.stdout.readline().strip() == "first done", proc.stderr.read()
        deadline = time.time() + 60
        n = 0
        while time.time() < deadline:              # wait until part of the second add is committed
            with sqlite3.connect(coll_dir / DB_FILE, timeout=30) as db:
                n = db.execute("SELECT COUNT(*) FROM items").fetchone()[0]
            if n >= 26:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the add finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    with sqlite3.connect(coll_dir / DB_FILE) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    coll = open_coll(coll_dir)
    items = coll.items()
    names = set(items.path.map(os.path.basename))
    assert {p.name for p in first} <= names                       # everything added before the kill is there
    got_second = names - {p.name for p in first}
    assert 6 <= len(got_second) < 40 and len(items) == 20 + len(got_second)
    assert (len(got_second)) % 2 == 0                             # whole batches of 2: no half-written batch
    # the collection works: a query finds a first photo, and the interrupted add resumes where it stopped
    q = coll.query(first[3], k=1)
    assert q.copies.match.map(os.path.basename).tolist() == [first[3].name]
    again = coll.add(tmp_path / "second")
    assert again.report["known"] == len(got_second) and again.report["added"] == 40 - len(got_second)
    assert len(coll) == 60
    coll.close()


def test_a_stray_temporary_base_file_is_ignored_and_cleaned(tmp_path):
    coll = open_coll(tmp_path / "c")
    rng = np.random.default_rng(2)
    x = rng.normal(size=(10, 64)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    coll.add_vectors(x, [f"v{i}" for i in range(10)], [f"d{i}" for i in range(10)])
    coll.merge()
    (tmp_path / "c" / "base-000002.faiss.tmp").write_bytes(b"a merge killed while writing")
    again = open_coll(tmp_path / "c")
    assert again.snapshot().size == 10 and again.snapshot().search(x[:1], 1)[1][0, 0] == 1
    again.add_vectors(-x[:1], ["n"], ["dn"])
    assert again.merge()["file"] == "base-000002.faiss"
    assert not (tmp_path / "c" / "base-000002.faiss.tmp").exists()
    coll.close()
    again.close()


def test_marks_split_groups_even_through_a_third_photo_and_export_as_labels(tmp_path):
    # a, b, c lie on a chain: a~b and b~c above the threshold, a-c below it
    base = np.zeros(64, np.float32)
    base[0] = 1
    other = np.zeros(64, np.float32)
    other[1] = 1

    def at(deg):
        t = np.deg2rad(deg)
        return np.cos(t) * base + np.sin(t) * other

    x = np.stack([at(0), at(12), at(24), at(90), at(91)]).astype(np.float32)
    coll = open_coll(tmp_path / "c", decision=fake_decision(0.97))
    coll.add_vectors(x, ["a", "b", "c", "d", "e"], ["da", "db", "dc", "dd", "de"])
    g = coll.groups(k=5)
    assert g.groupby("group").path.apply(sorted).tolist() == [["a", "b", "c"], ["d", "e"]]
    coll.mark_different(1, 3)                            # a and c: "not the same"
    assert not coll.mark_different(3, 1)                 # the same mark twice is one mark
    g = coll.groups(k=5)
    members = g.groupby("group").path.apply(sorted).tolist()
    assert ["a", "b"] in members and ["d", "e"] in members and not any({"a", "c"} <= set(m) for m in members)
    for m in coll.groups(k=5, star=True).groupby("group").path.apply(set):   # stars respect the mark too
        assert not {"a", "c"} <= m
    out = coll.export_marks(tmp_path / "marks.csv")
    labels = pd.read_csv(out)
    assert labels.columns.tolist() == ["image_url1", "image_url2", "is_same"]
    assert labels.values.tolist() == [["a", "c", 0]]
    with pytest.raises(ValueError, match="same content"):
        coll.mark_different(1, 1)
    # the mark is kept by content: it survives a remove and re-add, and persists on disk
    coll.remove(3)
    coll.add_vectors(x[2:3], ["c2"], ["dc"])
    coll.close()
    coll = open_coll(tmp_path / "c", decision=fake_decision(0.97))
    members = coll.groups(k=5).groupby("group").path.apply(set).tolist()
    assert not any({"a", "c2"} <= m for m in members)
    assert pd.read_csv(coll.export_marks(tmp_path / "m2.csv")).values.tolist() == [["a", "c2", 0]]
    coll.close()


def test_query_marks_and_verification_reach_the_decision(photos, tmp_path):
    rng = np.random.default_rng(0)
    n = 120
    y = (rng.random(n) < 0.5).astype(int)
    X = pd.DataFrame({"cos_global": 0.9 + 0.08 * (y - 0.5) + rng.normal(0, 0.01, n)})
    fz = Fusion(kind="logistic", folds=3).fit(X, y, importance_repeats=1)
    dec = fake_decision(0.9).with_verification(fz, (0.8, math.inf), None)
    coll = open_coll(tmp_path / "coll", decision=dec)
    coll.add(photos / "orig")
    q = coll.query([photos / "copies" / "copy1.jpg", photos / "orig" / "p002.png"], k=2)
    top = q.matches[q.matches["rank"] == 1]
    assert top.verified.all() and q.report["pairs_verified"] == q.matches.verified.sum() >= 2
    assert "ms_per_verified_pair" in q.report and q.report["fusion"] == "logistic+no local"
    assert top.decision.tolist() == [1, 1]
    unverified = coll.query([photos / "copies" / "copy1.jpg"], k=2, verify=False)
    assert not unverified.matches.verified.any() and "pairs_verified" not in unverified.report
    # a copy in the collection marked "not the same" as the query's photo: that pair is decided 0 from now on
    coll.add(photos / "copies" / "copy1.jpg")
    p1, c1 = photos / "orig" / "p001.png", photos / "copies" / "copy1.jpg"
    before = coll.query(p1, k=2).matches.set_index(coll.query(p1, k=2).matches.match.map(os.path.basename))
    assert before.decision.to_dict() == {"p001.png": 1, "copy1.jpg": 1} and not before.marked.any()
    assert coll.mark_different(p1, c1)
    after = coll.query(p1, k=2).matches.set_index("match")
    assert after.marked.to_dict() == {str(p1.resolve()): False, str(c1.resolve()): True}
    assert after.decision.to_dict() == {str(p1.resolve()): 1, str(c1.resolve()): 0}
    coll.close()


def test_the_collection_refuses_another_model(tmp_path):
    coll = open_coll(tmp_path / "c")
    coll.close()
    with pytest.raises(ValueError, match="do not compare"):
        open_coll(tmp_path / "c", decision=Decision(model="other", threshold=0.5, model_path=Path("o.keras")))
    with pytest.raises(FileNotFoundError, match="no collection"):
        Collection.open(tmp_path / "none", create=False)
    with pytest.raises(ValueError, match="decision= and embedder="):
        Collection.open(tmp_path / "c")
    settings = json.loads((tmp_path / "c" / "collection.json").read_text())
    assert settings["format"] == "nnutils.collection" and settings["dim"] == 64


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A real (untrained-head) 96×96 EfficientNet-Lite0 embedder saved as .keras, as the dedup tests use."""
    from nnutils.models.efficientnet_lite import build_efficientnet_lite0
    from nnutils.models.heads import build_embedder, build_raw_top
    root = tmp_path_factory.mktemp("coll_model")
    trunk = build_efficientnet_lite0((96, 96, 3), weights="imagenet")
    build_embedder(trunk, build_raw_top(tuple(trunk.output.shape[1:]), "grid2")).save(root / "tiny.keras")
    return root / "tiny.keras"


def test_command_add_query_mark_export_stats_remove(tiny_model, photos, tmp_path, capsys):
    from nnutils.collection import main
    coll = str(tmp_path / "coll")
    base = ["--dir", coll]
    assert main(["add", *base, "--model", str(tiny_model), "--threshold", "0.7", str(photos / "orig"),
                 "--quiet"]) == 0
    assert "10 added" in capsys.readouterr().out
    out = tmp_path / "q.csv"
    assert main(["query", *base, str(photos / "copies" / "copy4.jpg"), "--k", "3", "--out", str(out)]) == 0
    res = pd.read_csv(out)
    best = res.sort_values("score", ascending=False).iloc[0]
    assert os.path.basename(best.match) == "p004.png" and best.decision == 1
    a, b = str(photos / "orig" / "p001.png"), str(photos / "orig" / "p002.png")
    assert main(["mark-different", *base, a, b]) == 0
    assert main(["export-marks", *base, "--out", str(tmp_path / "labels.csv")]) == 0
    assert pd.read_csv(tmp_path / "labels.csv").is_same.tolist() == [0]
    assert main(["remove", *base, str(photos / "orig" / "p004.png")]) == 0
    capsys.readouterr()
    assert main(["stats", *base]) == 0
    st = json.loads(capsys.readouterr().out)
    assert st["items"] == 9 and st["marks"] == 1 and st["removed"] == 1
    assert main(["merge", *base]) == 0
    assert main(["query", *base, str(tmp_path / "nope.jpg")]) == 2
    assert "nope" in capsys.readouterr().err
