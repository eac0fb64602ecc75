"""Grouping a collection: edges from a kNN, thresholds, min2, mutual neighbours, transitivity, the command."""
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from nnutils.scale.grouping import connected_groups, neighbour_edges, rowwise_f1
from nnutils.scale.dedup import files_to_remove, group_embeddings, group_table, list_images, read_image_list
from nnutils.dedup import main


def unit(*rows):
    a = np.array(rows, np.float32)
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def exact_knn(emb, k):
    s = emb @ emb.T
    ids = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(s, ids, 1).astype(np.float32), ids.astype(np.int64)


# A hand-made kNN over 5 items: 0-1 very close, 1-2 close, 3-4 just under 0.8, item 4's nearest is 3.
SIMS = np.array([[1.0, 0.95, 0.50], [1.0, 0.95, 0.85], [1.0, 0.85, 0.40], [1.0, 0.78, 0.10], [1.0, 0.78, 0.20]],
                np.float32)
IDS = np.array([[0, 1, 2], [1, 0, 2], [2, 1, 0], [3, 4, 0], [4, 3, 1]])


def test_edges_threshold_self_and_dedup():
    e = neighbour_edges(SIMS, IDS, 0.8)
    assert e[["i", "j"]].values.tolist() == [[0, 1], [1, 2]]   # each undirected edge once, no self-loops
    assert np.allclose(e.similarity, [0.95, 0.85]) and not e.via_min2.any()
    assert neighbour_edges(SIMS, IDS, 0.9)[["i", "j"]].values.tolist() == [[0, 1]]
    assert len(neighbour_edges(SIMS, IDS, 0.99)) == 0
    # the threshold is inclusive
    assert neighbour_edges(SIMS, IDS, 0.85)[["i", "j"]].values.tolist() == [[0, 1], [1, 2]]


def test_transitivity_joins_chains_into_one_group():
    lab = connected_groups(5, neighbour_edges(SIMS, IDS, 0.8))
    assert lab[0] == lab[1] == lab[2]             # 0~1, 1~2 => {0,1,2} although sim(0,2) = 0.5
    assert len({lab[0], lab[3], lab[4]}) == 3     # 3 and 4 stay apart at 0.8
    assert lab[0] == 0                            # the largest group is labelled 0


def test_min2_keeps_the_nearest_neighbour_when_close_enough():
    e = neighbour_edges(SIMS, IDS, 0.8, min2=True, min2_threshold=0.75)
    assert [3, 4] in e[["i", "j"]].values.tolist()
    assert e.set_index(["i", "j"]).via_min2.to_dict() == {(0, 1): False, (1, 2): False, (3, 4): True}
    lab = connected_groups(5, e)
    assert lab[3] == lab[4] != lab[0]
    # not when the nearest neighbour is too far
    assert [3, 4] not in neighbour_edges(SIMS, IDS, 0.8, min2=True, min2_threshold=0.79)[["i", "j"]].values.tolist()
    # the default min2 threshold is threshold - 0.05
    assert [3, 4] in neighbour_edges(SIMS, IDS, 0.8, min2=True)[["i", "j"]].values.tolist()


def test_mutual_filter_removes_one_sided_links():
    # item 2 lists 0 above threshold, but 0 does not list 2 (k=2): a one-sided link
    sims = np.array([[1.0, 0.9], [1.0, 0.9], [1.0, 0.85]], np.float32)
    ids = np.array([[0, 1], [1, 0], [2, 0]])
    assert neighbour_edges(sims, ids, 0.8)[["i", "j"]].values.tolist() == [[0, 1], [0, 2]]
    assert neighbour_edges(sims, ids, 0.8, mutual=True)[["i", "j"]].values.tolist() == [[0, 1]]


def test_missing_neighbours_and_bad_input():
    sims = np.array([[1.0, np.nan], [1.0, 0.9]], np.float32)
    ids = np.array([[0, -1], [1, 0]])
    assert neighbour_edges(sims, ids, 0.5)[["i", "j"]].values.tolist() == [[0, 1]]
    with pytest.raises(ValueError, match="one shape"):
        neighbour_edges(sims, ids[:, :1], 0.5)
    with pytest.raises(ValueError, match="only 2 rows"):
        neighbour_edges(sims, np.array([[0, 5], [1, 0]]), 0.5)
    with pytest.raises(ValueError, match="outside"):
        connected_groups(2, pd.DataFrame({"i": [0], "j": [7]}))
    assert connected_groups(0, pd.DataFrame({"i": [], "j": []})).shape == (0,)


def test_rowwise_f1_hand_computed():
    assert rowwise_f1([0, 0, 1], [5, 5, 6]) == pytest.approx(1.0)
    # true {0,1},{2}; predicted all in one: F1 = 2*2/(3+2)=0.8 for 0 and 1, 2*1/(3+1)=0.5 for 2
    assert rowwise_f1([0, 0, 0], ["a", "a", "b"]) == pytest.approx((0.8 + 0.8 + 0.5) / 3)
    # true {0,1,2}; predicted singletons: 2*1/(1+3) = 0.5 each
    assert rowwise_f1([0, 1, 2], [7, 7, 7]) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="differ"):
        rowwise_f1([0], [0, 1])


def test_group_embeddings_finds_planted_groups_with_faiss():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(30, 32))
    emb = np.repeat(centres, 3, axis=0) + 0.05 * rng.normal(size=(90, 32))   # 30 groups of 3
    emb = np.vstack([emb, rng.normal(size=(40, 32))]).astype(np.float32)       # 40 singletons
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    truth = np.r_[np.repeat(np.arange(30), 3), 100 + np.arange(40)]
    lab, edges, timing = group_embeddings(emb, 0.9, k=5)
    assert rowwise_f1(lab, truth) == pytest.approx(1.0)
    # exactly the 3 within-group links of each planted triple, nothing to a singleton
    assert len(edges) == 90 and (edges.i // 3 == edges.j // 3).all() and edges.j.max() < 90
    assert timing["index"] == "flat"                                    # auto: 130 vectors → exact
    assert set(timing) == {"index", "index_s", "search_s", "group_s"}
    lab_hnsw, _, timing_hnsw = group_embeddings(emb, 0.9, k=5, index="hnsw")
    assert timing_hnsw["index"] == "hnsw" and (lab_hnsw == lab).all()
    # against the exact kNN, the same groups
    s, i = exact_knn(emb, 5)
    assert rowwise_f1(connected_groups(len(emb), neighbour_edges(s, i, 0.9)), lab) == pytest.approx(1.0)


def test_group_table_representative_and_files_to_remove(tmp_path):
    paths = []
    for name, size in [("small.jpg", (40, 30)), ("big.jpg", (160, 120)), ("mid.jpg", (80, 60)), ("other.jpg", (50, 50))]:
        Image.new("RGB", size, (120, 80, 40)).save(tmp_path / name)
        paths.append(str(tmp_path / name))
    emb = unit([1, 0, 0], [0.99, 0.1, 0], [0.98, 0.0, 0.2], [0, 0, 1])
    labels = np.array([0, 0, 0, 1])
    g = group_table(paths, labels, emb)
    assert len(g) == 3 and g.group.tolist() == [0, 0, 0]           # the singleton is not listed
    rep = g[g.representative]
    assert rep.path.tolist() == [paths[1]] and rep.similarity.tolist() == [1.0]   # the largest image is kept
    assert np.allclose(g.similarity.iloc[1:], np.sort(emb[[0, 2]] @ emb[1])[::-1], atol=1e-6)
    assert g.min_similarity.iloc[0] == pytest.approx(min(emb[[0, 2]] @ emb[1]))
    rm = files_to_remove(g)
    assert sorted(rm.path) == sorted([paths[0], paths[2]]) and set(rm.keep) == {paths[1]}
    assert group_table(paths, labels, emb, keep="first")[lambda d: d.representative].path.tolist() == [paths[0]]
    with pytest.raises(ValueError, match="keep"):
        group_table(paths, labels, emb, keep="best")
    with pytest.raises(ValueError, match="length"):
        group_table(paths[:2], labels, emb)


def test_inputs_folder_and_csv(tmp_path):
    (tmp_path / "sub").mkdir()
    for name in ("a.JPG", "sub/b.png", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    assert [os.path.basename(p) for p in list_images(tmp_path)] == ["a.JPG", "b.png"]
    assert len(list_images(tmp_path, recursive=False)) == 1
    with pytest.raises(FileNotFoundError):
        list_images(tmp_path / "nope")
    (tmp_path / "list.csv").write_text("path\na.JPG\nsub/b.png\na.JPG\n")
    got = read_image_list(tmp_path / "list.csv")
    assert got == [str(tmp_path / "a.JPG"), str(tmp_path / "sub/b.png")]     # relative to the CSV, deduplicated
    (tmp_path / "bad.csv").write_text("image_url\na.JPG\n\n \n")
    with pytest.raises(ValueError, match="row"):
        read_image_list(tmp_path / "bad.csv")
    (tmp_path / "nocol.csv").write_text("name\na.JPG\n")
    with pytest.raises(ValueError, match="column"):
        read_image_list(tmp_path / "nocol.csv")


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    """A folder of real photos, re-posted copies (resized, re-encoded, bordered) and a broken file, plus a tiny model."""
    from nnutils.data.distortions import apply_distortion  # noqa: F401  (the data's own distortions live there)
    from nnutils.models.efficientnet_lite import build_efficientnet_lite0
    from nnutils.models.heads import build_embedder, build_raw_top
    from skimage import data as skd
    root = tmp_path_factory.mktemp("dedup")
    images = root / "photos"
    (images / "nested").mkdir(parents=True)
    for name, arr in [("astronaut", skd.astronaut()), ("coffee", skd.coffee()), ("chelsea", skd.chelsea())]:
        im = Image.fromarray(arr)
        im.save(images / f"{name}.jpg", quality=92)
        im.resize((im.width // 2, im.height // 2)).save(images / "nested" / f"{name}_small.png")
        framed = Image.new("RGB", (im.width + 40, im.height + 40), (255, 255, 255))
        framed.paste(im, (20, 20))
        framed.save(images / f"{name}_framed.jpg", quality=70)
    Image.fromarray(skd.rocket()).save(images / "rocket.jpg")
    (images / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0garbage")
    trunk = build_efficientnet_lite0((96, 96, 3), weights="imagenet")
    model = build_embedder(trunk, build_raw_top(tuple(trunk.output.shape[1:]), "grid2"))
    model.save(root / "tiny.keras")
    return root


def test_command_groups_a_folder(collection, capsys):
    out = collection / "out"
    rc = main(["--images", str(collection / "photos"), "--model", str(collection / "tiny.keras"),
               "--threshold", "0.7", "--k", "5", "--out", str(out), "--quiet"])
    assert rc == 0, capsys.readouterr().err
    groups = pd.read_csv(out / "groups.csv")
    stem = groups.path.map(lambda p: os.path.basename(p).split("_")[0].split(".")[0])
    assert groups.groupby("group").apply(lambda d: stem[d.index].nunique()).eq(1).all()   # no mixed groups
    assert sorted(stem.unique()) == ["astronaut", "chelsea", "coffee"] and len(groups) == 9
    assert (groups.groupby("group").representative.sum() == 1).all()
    kept = groups[groups.representative].path.map(os.path.basename)
    assert all("small" not in k for k in kept)                    # the largest copy is kept
    rm = pd.read_csv(out / "to_remove.csv")
    assert len(rm) == 6 and not set(rm.path) & set(groups[groups.representative].path)
    bad = pd.read_csv(out / "unreadable.csv")
    assert bad.path.map(os.path.basename).tolist() == ["broken.jpg"] and bad.reason.tolist() == ["truncated"]
    report = json.loads((out / "report.json").read_text())
    assert report["images"] == 11 and report["groups"] == 3 and report["unreadable"] == 1
    # a second run reads every embedding from the cache
    assert main(["--images", str(collection / "photos"), "--model", str(collection / "tiny.keras"),
                 "--threshold", "0.7", "--out", str(out), "--quiet"]) == 0
    assert json.loads((out / "report.json").read_text())["embedded_now"] == 0


def _verifying_run(collection, tmp_path, threshold: float):
    """A run folder that groups at ``threshold`` and whose pair decision lets the ORB check decide every candidate."""
    import math
    import shutil
    from nnutils.decide.decision import Decision
    from nnutils.decide.fusion import Fusion
    run = tmp_path / "run"
    (run / "models").mkdir(parents=True)
    shutil.copy(collection / "tiny.keras", run / "models" / "tiny.keras")
    X = pd.DataFrame({"lf_passed": [1.0, 0.0] * 10})
    fz = Fusion(kind="logistic", folds=2).fit(X, np.tile([1, 0], 10), importance_repeats=0)
    d = Decision.chosen(run, "tiny", threshold + 0.1).with_verification(fz, (threshold - 0.05, math.inf), "orb")
    d.save(run)
    # the grouping links at its own threshold (below the pair threshold); the pair decision still checks every link
    from nnutils.scale.grouping import save_grouping
    save_grouping(run, threshold=threshold, variant="plain", k=5)
    return run


def test_dedup_verifies_every_link_before_grouping(collection, tmp_path, capsys):
    """At a threshold low enough to link different photos, the run's verification drops those links."""
    run = _verifying_run(collection, tmp_path, threshold=0.2)
    stem = lambda p: os.path.basename(p).split("_")[0].split(".")[0]  # noqa: E731
    out_off, out_on = tmp_path / "off", tmp_path / "on"
    assert main(["--images", str(collection / "photos"), "--model", str(run), "--k", "5", "--out", str(out_off),
                 "--verify", "off", "--quiet"]) == 0
    off = pd.read_csv(out_off / "groups.csv")
    assert off.groupby("group").path.apply(lambda s: s.map(stem).nunique()).max() > 1   # the threshold alone mixes photos
    assert main(["--images", str(collection / "photos"), "--model", str(run), "--k", "5", "--out", str(out_on),
                 "--quiet"]) == 0                                                           # --verify auto: the run's check
    assert "links rejected" in capsys.readouterr().out
    on = pd.read_csv(out_on / "groups.csv")
    assert on.groupby("group").path.apply(lambda s: s.map(stem).nunique()).max() == 1   # no mixed group left
    assert sorted(on.path.map(stem).unique()) == ["astronaut", "chelsea", "coffee"]
    v = json.loads((out_on / "report.json").read_text())["verification"]
    assert v["verified_with"] == "orb" and 0 < v["links_rejected"] < v["links"]
    assert json.loads((out_off / "report.json").read_text())["verification"] is None


def test_command_errors_are_clear(collection, capsys):
    rc = main(["--images", str(collection / "nope"), "--model", str(collection / "tiny.keras"),
               "--out", str(collection / "o2"), "--quiet"])
    assert rc == 2 and "nope" in capsys.readouterr().err
    rc = main(["--images", str(collection / "photos"), "--model", str(collection / "tiny.keras"),
               "--out", str(collection / "o3"), "--quiet"])
    assert rc == 2 and "threshold" in capsys.readouterr().err


def test_sweep_grouping_matches_single_runs():
    from nnutils.scale.grouping import sweep_grouping
    truth = np.array([0, 0, 0, 1, 1])
    sw = sweep_grouping(SIMS, IDS, truth, [0.8, 0.9], min2_margin=0.05)
    assert len(sw) == 8 and set(sw.variant) == {"plain", "min2", "mutual", "mutual+min2"}
    row = sw.set_index(["threshold", "variant"])
    # at 0.8 plain: {0,1,2} right, 3 and 4 apart: F1 1,1,1, 2/3, 2/3
    assert row.loc[(0.8, "plain"), "rowwise_f1"] == pytest.approx((3 + 2 * 2 / 3) / 5)
    assert row.loc[(0.8, "min2"), "rowwise_f1"] == pytest.approx(1.0)   # min2 joins 3-4 at 0.78 >= 0.75
    assert row.loc[(0.8, "plain"), "groups"] == 1 and row.loc[(0.8, "min2"), "groups"] == 2
    with pytest.raises(ValueError, match="variant"):
        sweep_grouping(SIMS, IDS, truth, [0.8], variants=["best"])


def test_hash_vectors_dot_is_hamming():
    from nnutils.decide.hashes import hash_similarity, hash_vectors
    rng = np.random.default_rng(1)
    hashes = {"a": rng.random(64) > 0.5, "b": rng.random(64) > 0.5, "c": None}
    v, ok = hash_vectors(hashes, ["a", "b", "c"])
    assert ok.tolist() == [True, True, False] and np.allclose(np.linalg.norm(v[:2], axis=1), 1)
    assert v[0] @ v[1] == pytest.approx(2 * hash_similarity(hashes, ["a"], ["b"])[0] - 1, abs=1e-6)


def test_run_folder_grouping_settings_are_used(collection, tmp_path):
    from nnutils.scale.dedup import find_duplicates
    from nnutils.scale.grouping import read_grouping, save_grouping
    run = tmp_path / "run"
    run.mkdir()
    (run / "decision.json").write_text(json.dumps({"model": "tiny", "model_path": str(collection / "tiny.keras"),
                                                   "threshold": 0.999}))
    strict = find_duplicates(collection / "photos", run, cache_dir=tmp_path / "c", progress=False)
    assert strict.report["threshold"] == 0.999 and strict.report["k"] == 10 and not strict.report["min2"]
    save_grouping(run, threshold=0.7, variant="mutual+min2", k=4, rowwise_f1=1.0)
    assert read_grouping(run)["variant"] == "mutual+min2"
    res = find_duplicates(collection / "photos", run, cache_dir=tmp_path / "c", progress=False)
    assert res.report["threshold"] == 0.7 and res.report["k"] == 4 and res.report["min2"] and res.report["mutual"]
    assert res.report["groups"] == 3 and res.report["embedded_now"] == 0
    assert find_duplicates(collection / "photos", run, threshold=0.999, cache_dir=tmp_path / "c",
                           progress=False).report["threshold"] == 0.999          # an explicit value wins
    with pytest.raises(ValueError, match="variant"):
        save_grouping(run, threshold=0.7, variant="best", k=4)


# ----------------------------------------------------------------------------- choosing the grouping
def at_angles(*degrees):
    a = np.deg2rad(np.array(degrees, float))
    return np.stack([np.cos(a), np.sin(a)], 1).astype(np.float32)


def planted_collection():
    """Train: A at 0/10/20°, B at 50/60/70° (nearest across: 20°-50°, cos 30° = 0.866); test: C at
    100/105°, D at 140/150° (nearest across: cos 35° = 0.819); one unreadable train row and one row of
    neither part. Within a group the links are cos 5-10° ≥ 0.98."""
    emb = at_angles(0, 10, 20, 50, 60, 70, 100, 105, 140, 150, 15, 200)
    truth = np.array(["A", "A", "A", "B", "B", "B", "C", "C", "D", "D", "A", "E"], dtype=object)
    part = np.array(["train"] * 6 + ["test"] * 4 + ["train", "val"], dtype=object)
    ok = np.ones(12, bool)
    ok[10] = False
    return emb, truth, part, ok


def test_choose_grouping_on_train_judged_on_test(tmp_path):
    from nnutils.scale.grouping import choose_grouping, grouping_options, grouping_table, read_grouping
    emb, truth, part, ok = planted_collection()
    c = choose_grouping(emb, truth, part, [0.8, 0.9, 0.95, 0.99], k=6, ok=ok, pair_threshold=0.8)
    # 0.8 joins A and B (every item: P=6, T=3 → F1 2·3/9); 0.9 and 0.95 are right; 0.99 leaves all alone (F1 2/4)
    curves = c.curves()
    assert curves.shape == (4, 6) and curves.loc[0.8, "plain"] == pytest.approx(2 / 3)   # 4 chaining, 2 star
    assert curves.loc[0.9, "plain"] == 1.0 and curves.loc[0.99, "plain"] == pytest.approx(0.5)
    assert (c.threshold, c.variant, c.train_rowwise_f1) == (0.9, "plain", 1.0)   # the first of the ties
    assert (c.n_train, c.n_test) == (6, 4)                                        # unreadable and "val" rows out
    assert c.test_rowwise_f1 == 1.0
    # test images at the pair threshold 0.8: C and D merge (P=4, T=2 → F1 2·2/6)
    assert c.test_rowwise_f1_pair_threshold == pytest.approx(2 / 3) and c.pair_threshold == 0.8
    c.save(tmp_path)
    saved = read_grouping(tmp_path)
    assert saved == dict(threshold=0.9, variant="plain", k=6, min2_margin=0.05, train_rowwise_f1=1.0,
                         test_rowwise_f1=1.0)
    assert grouping_options(tmp_path) == dict(threshold=0.9, k=6, min2=False, mutual=False, min2_margin=0.05)
    no_pair = choose_grouping(emb, truth, part, [0.8, 0.9], k=6, ok=ok)
    t = grouping_table({"model": c, "other": no_pair})
    assert list(t.columns) == ["threshold (chosen on train)", "variant", "train row-wise F1", "test row-wise F1",
                               "test F1, plain, pair threshold"]
    assert t.loc["model", "test F1, plain, pair threshold"] == pytest.approx(2 / 3)
    assert np.isnan(t.loc["other", "test F1, plain, pair threshold"])
    with pytest.raises(ValueError, match="no usable train image"):
        choose_grouping(emb, truth, np.array(["test"] * 12), [0.9], k=6)
    with pytest.raises(ValueError, match="one length"):
        choose_grouping(emb, truth[:5], part, [0.9], k=6)


def test_choose_grouping_min2_wins_when_a_copy_sits_just_under(tmp_path):
    from nnutils.scale.grouping import choose_grouping
    # A: 0° and 25° (cos 0.906) — just under 0.95, caught by min2 (down to 0.90); B far away
    emb = at_angles(0, 25, 90, 95)
    truth = np.array(["A", "A", "B", "B"], dtype=object)
    c = choose_grouping(emb, truth, np.array(["train"] * 4), [0.95], k=4)
    assert (c.threshold, c.variant, c.train_rowwise_f1) == (0.95, "min2", 1.0)
    assert np.isnan(c.test_rowwise_f1) and c.n_test == 0 and c.test_rowwise_f1_pair_threshold is None


@pytest.fixture(scope="module")
def hash_photos(tmp_path_factory):
    """Three photos in two sizes each, and a broken file."""
    from skimage import data as skd
    root = tmp_path_factory.mktemp("hash_photos")
    paths, truth = [], []
    for name, arr in [("astronaut", skd.astronaut()), ("coffee", skd.coffee()), ("chelsea", skd.chelsea())]:
        im = Image.fromarray(arr)
        for tag, img in (("big", im), ("small", im.resize((im.width // 2, im.height // 2)))):
            p = root / f"{name}_{tag}.jpg"
            img.save(p, quality=85)
            paths.append(str(p))
            truth.append(name)
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0garbage")
    paths.append(str(root / "broken.jpg"))
    truth.append("broken")
    return paths, np.array(truth, dtype=object)


def test_hash_grouping_groups_resized_copies(hash_photos):
    from nnutils.decide.hashes import hash_images
    from nnutils.scale.grouping import hash_grouping, hash_thresholds
    paths, truth = hash_photos
    part = np.array(["train"] * 4 + ["test"] * 2 + ["train"], dtype=object)
    c = hash_grouping(paths, truth, part, k=5)
    assert c.train_rowwise_f1 == 1.0 and c.test_rowwise_f1 == 1.0
    assert c.n_train == 4 and c.n_test == 2                     # the broken file has no hash: left out
    assert c.threshold in hash_thresholds(12) and c.pair_threshold is None
    assert hash_thresholds(3).tolist() == [0.5, 0.725, 0.95]
    again = hash_grouping(paths, truth, part, [0.5, 0.95], k=5, hashes=hash_images(paths, progress=False))
    assert again.sweep.threshold.unique().tolist() == [0.5, 0.95] and again.train_rowwise_f1 == 1.0


# ----------------------------------------------------------------------------- groups that do not chain
def chain_edges(n, sims):
    """Edges of a path 0-1-…-(n-1) with the given similarities."""
    return pd.DataFrame({"i": np.arange(n - 1), "j": np.arange(1, n), "similarity": np.asarray(sims, np.float32)})


def test_star_groups_do_not_chain():
    from nnutils.scale.grouping import group_edges, star_groups
    e = chain_edges(5, [0.95, 0.9, 0.9, 0.95])
    assert connected_groups(5, e).tolist() == [0, 0, 0, 0, 0]          # components: one chain of 5
    lab = star_groups(5, e)
    # the most connected item (1: degree 2, similarity sum 1.85) is the first centre: {0, 1, 2}; then {3, 4}
    assert lab.tolist() == [0, 0, 0, 1, 1]
    # every member of a star group is linked to its centre: no group holds two items without a path of one edge
    linked = set(map(tuple, e[["i", "j"]].values.tolist()))
    for g in np.unique(lab):
        m = np.flatnonzero(lab == g)
        assert any(all(a == c or (min(a, c), max(a, c)) in linked for a in m) for c in m)
    # a clique is one star, items without an edge stay alone, and group_edges dispatches
    clique = pd.DataFrame({"i": [0, 0, 1], "j": [1, 2, 2], "similarity": [0.9, 0.9, 0.9]})
    assert star_groups(4, clique).tolist() == [0, 0, 0, 1]
    assert group_edges(5, e, star=True).tolist() == lab.tolist()
    assert group_edges(5, e).tolist() == [0] * 5
    assert star_groups(0, e.iloc[:0]).shape == (0,)
    with pytest.raises(ValueError, match="outside"):
        star_groups(3, e)


def test_cannot_link_splits_a_component_even_through_a_third_item():
    from nnutils.scale.grouping import constrained_groups, group_edges, star_groups
    # a ~ b (0.95), b ~ c (0.90), d ~ e (0.99); the user marked a and c "not the same"
    e = pd.DataFrame({"i": [0, 1, 3], "j": [1, 2, 4], "similarity": [0.95, 0.90, 0.99]})
    assert connected_groups(5, e).tolist() == [0, 0, 0, 1, 1]
    lab = constrained_groups(5, e, [(0, 2)])
    assert lab[0] == lab[1] != lab[2]                                  # split at the weaker link b-c
    assert lab[3] == lab[4] and len(set(lab.tolist())) == 3           # an unmarked component is untouched
    assert group_edges(5, e, cannot_link=pd.DataFrame({"i": [2], "j": [0]})).tolist() == lab.tolist()
    # stars respect the marks too: b is the centre but may not take both a and c
    s = star_groups(5, e, cannot_link=[(0, 2)])
    assert s[0] != s[2] and s[3] == s[4]
    # a marked pair in two groups already changes nothing; bad pairs are refused
    assert constrained_groups(5, e, [(0, 3)]).tolist() == connected_groups(5, e).tolist()
    with pytest.raises(ValueError, match="outside"):
        constrained_groups(5, e, [(0, 9)])
    with pytest.raises(ValueError, match="itself"):
        constrained_groups(5, e, [(1, 1)])


def test_choose_grouping_picks_star_when_a_wrong_link_chains_two_groups():
    from nnutils.scale.grouping import VARIANTS, choose_grouping, sweep_grouping
    # A at 0/8/16°, B at 32/40/48°: within a group cos ≥ 0.96, and one wrong link 16°-32° (cos 0.961)
    emb = at_angles(0, 8, 16, 32, 40, 48)
    truth = np.array(list("AAABBB"), dtype=object)
    s, i = exact_knn(emb, 6)
    sw = sweep_grouping(s, i, truth, [0.96], variants=VARIANTS).set_index("variant")
    assert sw.loc["plain", "largest"] == 6 and sw.loc["plain", "rowwise_f1"] == pytest.approx(2 / 3)
    # the bridge 16° (degree 3) is the first centre and takes 32° with it: {0, 8, 16, 32}, {40, 48};
    # F1: A's three 2·3/7, 32°'s 2·1/7, 40° and 48° 2·2/5
    assert sw.loc["star", "largest"] == 4
    assert sw.loc["star", "rowwise_f1"] == pytest.approx((3 * 6 / 7 + 2 / 7 + 2 * 4 / 5) / 6)
    c = choose_grouping(emb, truth, np.array(["train"] * 6), [0.96], k=6)
    assert c.variant == "star" and c.train_rowwise_f1 > sw.loc["plain", "rowwise_f1"]
    assert set(c.curves().columns) == set(VARIANTS)


def test_star_setting_reaches_find_duplicates(tmp_path):
    from nnutils.scale.grouping import grouping_options, save_grouping
    save_grouping(tmp_path, threshold=0.8, variant="min2+star", k=5)
    assert grouping_options(tmp_path) == dict(threshold=0.8, k=5, min2=True, mutual=False, min2_margin=0.05, star=True)
    # group_embeddings (what find_duplicates runs) with star: the chain of 5 unit vectors splits
    emb = at_angles(0, 10, 20, 30, 40)
    lab, _, _ = group_embeddings(emb, 0.97, k=3, index="flat")
    assert lab.tolist() == [0] * 5
    lab, _, _ = group_embeddings(emb, 0.97, k=3, index="flat", star=True)
    assert len(set(lab.tolist())) == 2 and np.bincount(lab).tolist() == [3, 2]
