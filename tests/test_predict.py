"""The predict command: a real (tiny) model through TFLite, the run-folder decision, bad inputs, the cache."""
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from nnutils.predict import main
from nnutils.decide.decision import Decision
from nnutils.decide.predict import predict_pairs


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from nnutils.models.efficientnet_lite import build_efficientnet_lite0
    from nnutils.models.heads import build_embedder, build_raw_top
    root = tmp_path_factory.mktemp("predict")
    images = root / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    base = (rng.random((60, 80, 3)) * 255).astype(np.uint8)
    Image.fromarray(base).save(images / "a.jpg", quality=90)
    Image.fromarray(base).resize((120, 90)).save(images / "a_big.png")                  # same photo, resized
    Image.fromarray((rng.random((60, 80, 3)) * 255).astype(np.uint8)).save(images / "b.jpg")
    (images / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0garbage")
    test = pd.DataFrame({"ID": [0, 1, 2, 3], "image_url1": ["a.jpg", "a.jpg", "b.jpg", "missing.jpg"],
                         "image_url2": ["a_big.png", "b.jpg", "broken.jpg", "a.jpg"]})
    test.to_csv(root / "test.csv", index=False)
    trunk = build_efficientnet_lite0((64, 64, 3), weights="imagenet")
    model = build_embedder(trunk, build_raw_top(tuple(trunk.output.shape[1:]), "grid2"))
    run = root / "run"
    (run / "models").mkdir(parents=True)
    model.save(run / "models" / "tiny.keras")
    (run / "decision.json").write_text(json.dumps({"model": "tiny", "model_path": str(run / "models" / "tiny.keras"),
                                                   "threshold": 0.8}))
    return root


def test_run_folder_decision_tflite_and_policy(setup, capsys):
    out = setup / "sub.csv"
    rc = main(["--pairs", str(setup / "test.csv"), "--images", str(setup / "images"), "--model", str(setup / "run"),
               "--out", str(out), "--cache-dir", str(setup / "cache"), "--scores", "--quiet"])
    assert rc == 0, capsys.readouterr().err
    sub = pd.read_csv(out)
    assert list(sub.columns) == ["ID", "is_same"] and sub.ID.tolist() == [0, 1, 2, 3]
    assert sub.is_same.tolist()[0] == 1            # the resized copy is found
    assert sub.is_same.tolist()[1] == 0            # another photo is not
    assert sub.is_same.tolist()[2:] == [0, 0]      # unreadable pairs: 0 by policy
    report = json.loads(capsys.readouterr().out.split("wrote")[0])
    assert report["pairs_unreadable"] == 2 and report["unreadable_images"] == 2 and report["runtime"] == "tflite"
    assert report["images_embedded"] == 3 and report["ms_per_pair"] > 0
    scores = pd.read_csv(setup / "sub_scores.csv")
    assert scores.score.isna().tolist() == [False, False, True, True]


def test_second_run_reads_the_embedding_cache(setup):
    a = predict_pairs(setup / "test.csv", setup / "images", setup / "run", cache_dir=setup / "cache2", progress=False)
    b = predict_pairs(setup / "test.csv", setup / "images", setup / "run", cache_dir=setup / "cache2", progress=False)
    assert a.report["images_embedded"] == 3 and b.report["images_embedded"] == 0
    assert np.allclose(a.scores, b.scores, equal_nan=True)


def test_keras_runtime_agrees_with_tflite(setup):
    a = predict_pairs(setup / "test.csv", setup / "images", setup / "run", runtime="keras", progress=False)
    b = predict_pairs(setup / "test.csv", setup / "images", setup / "run", runtime="tflite", progress=False)
    assert np.allclose(a.scores, b.scores, atol=1e-3, equal_nan=True)


@pytest.mark.parametrize("case, fragment", [
    ("bad_csv", "line 3: ID must be an integer"),
    ("no_model", "not found"),
    ("no_images", "images folder"),
    ("no_threshold", "--threshold is required"),
    ("no_decision", "run 07_threshold_sweep first"),
])
def test_bad_inputs_exit_2_with_a_clear_message(setup, tmp_path, capsys, case, fragment):
    args = {"--pairs": str(setup / "test.csv"), "--images": str(setup / "images"), "--model": str(setup / "run"),
            "--out": str(tmp_path / "s.csv")}
    if case == "bad_csv":
        (tmp_path / "t.csv").write_text("ID,image_url1,image_url2\n0,a.jpg,b.jpg\nX,a.jpg,b.jpg\n")
        args["--pairs"] = str(tmp_path / "t.csv")
    elif case == "no_model":
        args["--model"] = str(tmp_path / "nope.keras")
    elif case == "no_images":
        args["--images"] = str(tmp_path / "no_such_folder")
    elif case == "no_threshold":
        args["--model"] = str(setup / "run" / "models" / "tiny.keras")
    elif case == "no_decision":
        args["--model"] = str(tmp_path)
    rc = main([x for kv in args.items() for x in kv] + ["--quiet", "--cache-dir", str(tmp_path / "c")])
    assert rc == 2
    assert fragment in capsys.readouterr().err
    assert not (tmp_path / "s.csv").exists()


def _fit_fusion(setup, tmp_path, **fields):
    """A fused decision trained on the fixture's own pair features (labels: a/a_big same, the rest not)."""
    from nnutils.decide.fusion import Fusion, pair_features
    from nnutils.local.verify import verify_pairs
    img = setup / "images"
    p1 = [str(img / "a.jpg"), str(img / "a.jpg"), str(img / "b.jpg")]
    p2 = [str(img / "a_big.png"), str(img / "b.jpg"), str(img / "a_big.png")]
    X = pair_features(p1, p2, global_scores={"global": [0.9, 0.3, 0.35]}, local=verify_pairs(p1, p2, progress=False))
    rng = np.random.default_rng(0)
    X = pd.concat([X] * 8, ignore_index=True)
    X["cos_global"] += rng.normal(0, 0.01, len(X))
    fz = Fusion(kind="logistic", folds=2).fit(X, np.tile([1, 0, 0], 8), importance_repeats=0)
    opts = {**dict(band=(-1.0, 2.0), threshold=0.8, model="tiny", local_method="sift", local_kw={}), **fields}
    base = Decision.chosen(tmp_path, opts["model"], opts["threshold"])
    (tmp_path / "models").mkdir(parents=True, exist_ok=True)
    decision = base.with_verification(fz, opts["band"], opts["local_method"], local_kw=opts["local_kw"])
    return decision.save(tmp_path)


def test_verify_runs_the_fused_decision_in_the_band(setup, tmp_path):
    path = _fit_fusion(setup, tmp_path)
    plain = predict_pairs(setup / "test.csv", setup / "images", setup / "run", cache_dir=tmp_path / "c", progress=False)
    assert "pairs_verified" not in plain.report
    auto = predict_pairs(setup / "test.csv", setup / "images", setup / "run", cache_dir=tmp_path / "c", progress=False,
                         verify="auto")               # the run folder's decision does not verify: no verification
    assert "pairs_verified" not in auto.report
    v = predict_pairs(setup / "test.csv", setup / "images", setup / "run", cache_dir=tmp_path / "c", progress=False,
                      verify=path)
    assert v.report["pairs_verified"] == 2 and v.report["share_verified"] == 0.5   # unreadable pairs are not verified
    assert v.report["ms_per_verified_pair"] > 0 and v.report["fusion"] == "logistic+sift"
    assert v.submission.is_same.tolist() == [1, 0, 0, 0]
    # a verify range that holds no pair leaves the global decision
    narrow = _fit_fusion(setup, tmp_path / "n", band=(0.8, 0.8))   # the threshold alone: no pair scores exactly that
    n = predict_pairs(setup / "test.csv", setup / "images", setup / "run", cache_dir=tmp_path / "c", progress=False,
                      verify=narrow)
    assert n.report["pairs_verified"] == 0 and n.submission.is_same.tolist() == plain.submission.is_same.tolist()


def test_explain_says_why_each_verified_pair_was_decided(setup, tmp_path, capsys):
    path = _fit_fusion(setup, tmp_path)
    v = predict_pairs(setup / "test.csv", setup / "images", setup / "run", cache_dir=tmp_path / "c", progress=False,
                      verify=path, details=True)
    why = v.verification
    assert len(why) == v.report["pairs_verified"] == 2 and why.ID.tolist() == [0, 1]   # unreadable pairs: not verified
    decided = v.submission.set_index("ID").is_same.loc[why.ID].to_numpy()
    assert ((why.fused_p >= why.fused_threshold).astype(int).to_numpy() == decided).all()
    assert not why.vetoed.any()
    assert why.reason.tolist()[0] == "" and why.inliers[0] > why.inliers[1]          # the copy passed the check
    assert {"scale", "rotation_deg", "coverage1", "perspective", "dense_residual", "mirrored"} <= set(why.columns)
    assert "details" not in v.report
    json.dumps(v.report)                                                          # the report stays JSON
    assert predict_pairs(setup / "test.csv", setup / "images", setup / "run", cache_dir=tmp_path / "c",
                         progress=False, verify=path).verification is None        # only when asked for
    args = ["--pairs", str(setup / "test.csv"), "--images", str(setup / "images"), "--model", str(setup / "run"),
            "--out", str(tmp_path / "s.csv"), "--cache-dir", str(tmp_path / "c"), "--quiet"]
    assert main(args + ["--verify", str(path), "--explain", str(tmp_path / "why.csv")]) == 0
    written = pd.read_csv(tmp_path / "why.csv", keep_default_na=False)
    assert written.ID.tolist() == [0, 1] and {"global", "fused_p", "reason", "inliers"} <= set(written.columns)
    (tmp_path / "s.csv").unlink()
    assert main(args + ["--verify", "off", "--explain", str(tmp_path / "w2.csv")]) == 2
    assert "--explain needs a verifying decision" in capsys.readouterr().err
    assert not (tmp_path / "s.csv").exists() and not (tmp_path / "w2.csv").exists()   # nothing half-written


def test_verify_refuses_a_fusion_for_another_model_or_threshold(setup, tmp_path, capsys):
    other = _fit_fusion(setup, tmp_path / "o", model="another")
    with pytest.raises(ValueError, match="another"):
        predict_pairs(setup / "test.csv", setup / "images", setup / "run", progress=False, verify=other)
    good = _fit_fusion(setup, tmp_path / "g")
    with pytest.raises(ValueError, match="threshold"):
        predict_pairs(setup / "test.csv", setup / "images", setup / "run", threshold=0.5, progress=False, verify=good)
    rc = main(["--pairs", str(setup / "test.csv"), "--images", str(setup / "images"), "--model", str(setup / "run"),
               "--out", str(tmp_path / "s.csv"), "--verify", "on", "--quiet"])
    assert rc == 2 and "10_local_verification" in capsys.readouterr().err


def test_verify_uses_the_fusions_local_options(setup, tmp_path):
    """The local check runs with the options the fusion's features were computed with."""
    bad = _fit_fusion(setup, tmp_path / "k", local_kw={"no_such_option": 1})
    with pytest.raises(TypeError, match="no_such_option"):
        predict_pairs(setup / "test.csv", setup / "images", setup / "run", progress=False, verify=bad)


def test_verify_is_one_pass_per_image_cached_by_content(setup, tmp_path, monkeypatch):
    """A verifying decision decodes each image once (embedding, local features, facts) and caches
    them; verification decodes nothing; a second run decodes only the unreadable files again."""
    from nnutils.data.images import read_any
    from nnutils.decide import fusion, onepass
    path = _fit_fusion(setup, tmp_path)
    old = predict_pairs(setup / "test.csv", setup / "images", setup / "run", cache_dir=tmp_path / "c0", progress=False,
                        verify=path, one_pass=False)
    calls = []

    def counting(p, max_side=None):
        calls.append(os.path.basename(p))
        return read_any(p, max_side)

    def no_decode(*a, **k):
        raise AssertionError("verification must not decode images the one pass described")

    monkeypatch.setattr(onepass, "read_any", counting)
    monkeypatch.setattr(fusion, "try_read_rgb", no_decode)
    monkeypatch.setattr(fusion, "read_rgb", no_decode)
    a = predict_pairs(setup / "test.csv", setup / "images", setup / "run", cache_dir=tmp_path / "c", progress=False,
                      verify=path, one_pass=True)
    assert sorted(calls) == ["a.jpg", "a_big.png", "b.jpg", "broken.jpg", "missing.jpg"]   # each once
    assert a.report["images_decoded"] == 0 and a.report["pairs_verified"] == 2
    assert a.report["one_pass"]["extracted"] == 3 and a.report["images_embedded"] == 3
    assert a.submission.is_same.tolist() == old.submission.is_same.tolist() == [1, 0, 0, 0]
    np.testing.assert_allclose(a.scores[:2], old.scores[:2], atol=0.02)         # resized from the one decode
    assert np.isnan(a.scores[2:]).all()
    calls.clear()
    b = predict_pairs(setup / "test.csv", setup / "images", setup / "run", cache_dir=tmp_path / "c", progress=False,
                      verify=path, one_pass=True)
    assert sorted(calls) == ["broken.jpg", "missing.jpg"] and b.report["one_pass"]["extracted"] == 0 and b.report["images_embedded"] == 0
    assert b.submission.is_same.tolist() == a.submission.is_same.tolist()
    np.testing.assert_array_equal(b.scores, a.scores)
    from nnutils.data.cache import PackStore
    (folder,) = (tmp_path / "c" / "local").iterdir()
    assert len(PackStore(folder)) == 3 and not list(folder.glob("*.rec"))


def test_one_pass_is_the_default_for_a_decision_that_verifies_every_candidate(setup, tmp_path):
    import math
    band = predict_pairs(setup / "test.csv", setup / "images", setup / "run", cache_dir=tmp_path / "c", progress=False,
                         verify=_fit_fusion(setup, tmp_path / "band"))
    assert "one_pass" not in band.report                  # a band: the two-decode path it was fitted for
    cand = predict_pairs(setup / "test.csv", setup / "images", setup / "run", cache_dir=tmp_path / "c", progress=False,
                         verify=_fit_fusion(setup, tmp_path / "cand", band=(-1.0, math.inf)))
    assert cand.report["one_pass"]["extracted"] == 3 and cand.report["images_decoded"] == 0
    assert cand.submission.is_same.tolist() == band.submission.is_same.tolist() == [1, 0, 0, 0]
