"""The run's Decision: built, validated, saved in a versioned format, loaded, applied."""
import json
import math

import numpy as np
import pandas as pd
import pytest

from nnutils.decide.decision import FORMAT, VERSION, Decision
from nnutils.decide.fusion import Fusion


def _run(tmp_path, name="m"):
    run = tmp_path / "run"
    (run / "models").mkdir(parents=True)
    (run / "models" / f"{name}.keras").write_bytes(b"not read here")
    return run


def _fusion(local=True, seed=0):
    rng = np.random.default_rng(seed)
    n = 120
    y = (rng.random(n) < 0.4).astype(int)
    X = pd.DataFrame({"cos_global": 0.5 + 0.2 * (y - 0.5) + rng.normal(0, 0.1, n)})
    if local:
        X["lf_inliers"] = np.where(y == 1, 40, 3) + rng.normal(0, 2, n)
    return Fusion(kind="logistic", folds=3).fit(X, y, importance_repeats=2), X, y


def test_chosen_decision_round_trips_and_is_versioned(tmp_path):
    run = _run(tmp_path)
    d = Decision.chosen(run, "m", 0.61, cv_f1=0.97, folds=5)
    path = d.save()
    raw = json.loads(path.read_text())
    assert raw["format"] == FORMAT and raw["version"] == VERSION
    assert raw["model_path"] == "models/m.keras"          # relative: the run folder can move
    back = Decision.load(run)
    assert (back.model, back.threshold, back.info["cv_f1"], back.verifies) == ("m", 0.61, 0.97, False)
    moved = tmp_path / "elsewhere"
    run.rename(moved)
    assert Decision.load(moved).model_path == moved / "models" / "m.keras"


def test_verification_with_its_own_int8_global_model(tmp_path):
    run = _run(tmp_path)
    (run / "models" / "m.int8.tflite").write_bytes(b"not read here")
    fz, X, y = _fusion()
    plain = Decision.chosen(run, "m", 0.5)
    assert plain.pair_model_path == run / "models" / "m.keras"
    d = plain.with_verification(fz, (0.3, math.inf), "orb", global_model=run / "models" / "m.int8.tflite")
    d.save()
    raw = json.loads((run / "decision.json").read_text())
    assert raw["verification"]["global_model"] == "models/m.int8.tflite"      # relative, like the model
    back = Decision.load(run)
    assert back.global_model == run / "models" / "m.int8.tflite" == back.pair_model_path
    assert back.without_verification().global_model is None                   # the threshold alone: the float model
    assert back.without_verification().pair_model_path == run / "models" / "m.keras"
    assert Decision.chosen(run, "m", 0.5).verified_like(back).global_model == back.global_model
    (run / "models" / "m.int8.tflite").unlink()
    with pytest.raises(FileNotFoundError, match="int8"):
        Decision.load(run)
    with pytest.raises(ValueError, match="tflite"):
        plain.with_verification(fz, (0.3, math.inf), "orb", global_model=run / "models" / "m.keras")
    with pytest.raises(ValueError, match="global model"):
        Decision.chosen(run, "m", 0.5, ).__class__(model="m", threshold=0.5, model_path=run / "models" / "m.keras",
                                                   global_model=run / "x.tflite").validate()

def test_verification_round_trips_without_pickling_nnutils_classes(tmp_path):
    run = _run(tmp_path)
    fz, X, y = _fusion()
    d = Decision.chosen(run, "m", 0.5).with_verification(fz, (0.3, math.inf), "orb", local_kw={"ratio": 0.7})
    d.save()
    est = (run / "decision_fusion.joblib").read_bytes()
    assert b"nnutils" not in est                           # moving our classes cannot break a saved run
    back = Decision.load(run)
    assert back.verifies and back.verify_range == (0.3, math.inf) and back.local_method == "orb"
    assert back.local_kw == {"ratio": 0.7} and back.fusion.threshold == fz.threshold
    assert np.array_equal(back.fusion.predict_proba(X), fz.predict_proba(X))
    assert np.array_equal(back.fusion.oof, fz.oof)
    # saving the plain decision again removes the stale estimator
    back.without_verification().save(run)
    assert not (run / "decision_fusion.joblib").exists() and not Decision.load(run).verifies


def test_version_0_files_still_load(tmp_path):
    run = _run(tmp_path)
    (run / "decision.json").write_text(json.dumps({"model": "m", "model_path": str(run / "models" / "m.keras"),
                                                   "threshold": 0.7, "cv_f1": 0.9}))
    d = Decision.load(run)
    assert d.threshold == 0.7 and d.info == {"cv_f1": 0.9} and d.model_path == run / "models" / "m.keras"


@pytest.mark.parametrize("change, fragment", [
    (lambda raw: raw.update(version=VERSION + 1), "newer"),
    (lambda raw: raw.update(format="something.else"), "not a decision file"),
])
def test_bad_files_are_refused_with_a_reason(tmp_path, change, fragment):
    run = _run(tmp_path)
    path = Decision.chosen(run, "m", 0.5).save()
    raw = json.loads(path.read_text())
    change(raw)
    path.write_text(json.dumps(raw))
    with pytest.raises(ValueError, match=fragment):
        Decision.load(run)


def test_missing_files_name_the_notebook(tmp_path):
    with pytest.raises(FileNotFoundError, match="07_threshold_sweep"):
        Decision.load(tmp_path)
    run = _run(tmp_path)
    fz, _, _ = _fusion()
    Decision.chosen(run, "m", 0.5).with_verification(fz, (0.3, 0.7), "sift").save()
    (run / "decision_fusion.joblib").unlink()
    with pytest.raises(FileNotFoundError, match="10_local_verification"):
        Decision.load(run)


def test_half_built_decisions_are_refused(tmp_path):
    run = _run(tmp_path)
    base = Decision.chosen(run, "m", 0.5)
    fz, _, _ = _fusion()
    plain, _, _ = _fusion(local=False)
    with pytest.raises(ValueError, match="contain the global threshold"):
        base.with_verification(fz, (0.6, 0.9), "sift")
    with pytest.raises(ValueError, match="local_model"):
        base.with_verification(fz, (0.3, 0.9), "delf")
    with pytest.raises(ValueError, match="reads local-check features"):
        base.with_verification(fz, (0.3, 0.9), None)
    with pytest.raises(ValueError, match="does not read"):
        base.with_verification(plain, (0.3, 0.9), "orb")
    with pytest.raises(ValueError, match="local_method must be"):
        base.with_verification(fz, (0.3, 0.9), "surf")
    with pytest.raises(ValueError, match="not fitted"):
        base.with_verification(Fusion(features=["cos_global"]), (0.3, 0.9), None)
    with pytest.raises(ValueError, match="phash"):
        Decision.chosen(run, "phash", 0.8).with_verification(plain, (0.3, 0.9), None)
    with pytest.raises(ValueError, match="finite"):
        Decision.chosen(run, "m", float("nan"))


def test_applying_the_global_threshold_and_the_verify_range(tmp_path):
    run = _run(tmp_path)
    d = Decision.chosen(run, "m", 0.5)
    s = np.array([0.2, 0.5, 0.49, np.nan, 0.9])
    decisions, report = d.decide(s)
    assert decisions.tolist() == [0, 1, 0, 0, 1] and report == {}     # NaN: the unreadable-image policy
    fz, _, _ = _fusion(local=False)
    v = d.with_verification(fz, (0.45, 0.55), None)
    assert v.to_verify(s).tolist() == [False, True, True, False, False]
    with pytest.raises(ValueError, match="image paths"):
        v.decide(s)
    # a changed threshold drops a verification fitted at the old one
    assert not v.at_threshold(0.6).verifies and v.at_threshold(0.5) is v


def test_verification_is_adopted_only_when_it_fits(tmp_path):
    run = _run(tmp_path)
    fz, _, _ = _fusion()
    saved = Decision.chosen(run, "m", 0.5).with_verification(fz, (0.3, 0.7), "sift")
    assert Decision.chosen(run, "m", 0.5).adopt_verification(saved).verifies
    assert not Decision.chosen(run, "m", 0.52).adopt_verification(saved).verifies
    (run / "models" / "other.keras").write_bytes(b"")
    assert not Decision.chosen(run, "other", 0.5).adopt_verification(saved).verifies
    with pytest.raises(ValueError, match="another|'m'"):
        Decision.chosen(run, "other", 0.5).verified_like(saved)


def test_collections_fall_back_to_the_best_embedding_model(tmp_path):
    run = _run(tmp_path, "06_hard_negatives")
    (run / "metrics").mkdir()
    pd.DataFrame({"model": ["phash", "06_hard_negatives", "03_siamese_bce"], "cv_f1": [0.99, 0.97, 0.95],
                  "threshold": [0.8, 0.7, 0.6]}).to_csv(run / "metrics" / "07_threshold_sweep.csv", index=False)
    d = Decision.chosen(run, "phash", 0.8)
    e = d.for_embeddings()
    assert (e.model, e.threshold, e.info["fallback_from"]) == ("06_hard_negatives", 0.7, "phash")
    assert e.model_path == run / "models" / "06_hard_negatives.keras"
    assert Decision.chosen(run, "06_hard_negatives", 0.7).for_embeddings().info == {}


def test_resolve_names_what_model_means(tmp_path):
    run = _run(tmp_path)
    Decision.chosen(run, "m", 0.5).save()
    assert Decision.resolve(run).threshold == 0.5 and Decision.resolve(run, 0.6).threshold == 0.6
    assert Decision.resolve("phash", 0.8).model_path is None
    assert Decision.resolve(run / "models" / "m.keras", 0.4).model == "m"
    with pytest.raises(ValueError, match="--threshold is required"):
        Decision.resolve("phash")
    with pytest.raises(ValueError, match="--threshold is required"):
        Decision.resolve(run / "models" / "m.keras")
    with pytest.raises(FileNotFoundError, match="not found"):
        Decision.resolve(tmp_path / "nope.keras", 0.5)
