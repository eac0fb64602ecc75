"""Threshold choice by cross-validation, the HParams log, and submission validation."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import numpy as np
import pandas as pd
import pytest

from nnutils.decide.submission import SubmissionError, make_submission, validate_submission, write_submission
from nnutils.decide.thresholds import candidate_bound, cv_threshold, log_hparams, sweep


def separable(n=200, gap=0.1, seed=0):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.35).astype(int)
    s = np.where(y == 1, rng.uniform(0.6 + gap / 2, 1.0, n), rng.uniform(0.0, 0.6 - gap / 2, n))
    return y, s


def test_cv_threshold_lands_in_the_gap_and_reports_spread():
    y, s = separable()
    r = cv_threshold(y, s, k=5, seed=0)
    assert 0.55 < r["threshold"] < 0.65 and len(r["fold_thresholds"]) == 5
    assert r["cv_f1"] == 1.0 and r["cv_f1_std"] == 0.0
    assert all(0.55 < t < 0.65 for t in r["fold_thresholds"]) and r["threshold_std"] < 0.05


def test_cv_threshold_with_noise_is_honest():
    rng = np.random.default_rng(1)
    y = (rng.random(300) < 0.3).astype(int)
    s = y * 0.3 + rng.normal(0, 0.25, 300)
    r = cv_threshold(y, s, k=4)
    assert 0 < r["cv_f1"] < 1 and r["threshold_std"] > 0
    with pytest.raises(ValueError):
        cv_threshold([1, 0, 0, 0], [0.9, 0.1, 0.2, 0.3])  # one positive cannot be split in 2 folds


def test_sweep_matches_hand_counts():
    y = np.array([1, 1, 0, 0])
    df = sweep(y, np.array([0.9, 0.6, 0.7, 0.1]), thresholds=[0.5, 0.8])
    assert df.f1.tolist() == pytest.approx([0.8, 2 / 3])
    assert df.precision.tolist() == pytest.approx([2 / 3, 1.0])


def test_hparams_log_is_readable(tmp_path):
    from tensorboard.backend.event_processing import event_accumulator
    results = pd.DataFrame({"model": ["a", "a", "b"], "threshold": [0.5, 0.7, 0.6], "f1": [0.9, 0.8, 0.95],
                            "roc_auc": [0.99, 0.99, 0.98]})
    log_hparams(tmp_path, results)
    runs = sorted(p for p in tmp_path.iterdir() if p.is_dir())
    assert len(runs) == 3
    acc = event_accumulator.EventAccumulator(str(runs[2]), size_guidance={"tensors": 0})
    acc.Reload()
    assert "f1" in acc.Tags()["tensors"]
    import tensorflow as tf
    assert float(tf.make_ndarray(acc.Tensors("f1")[0].tensor_proto)) == pytest.approx(0.95)
    assert acc.PluginTagToContent("hparams")  # the HParams dashboard has its data


def test_make_submission_applies_threshold_and_unreadable_policy():
    test = pd.DataFrame({"ID": [10, 11, 12, 13]})
    sub = make_submission(test, [0.9, 0.2, np.nan, 0.95], 0.5, unreadable=[False, False, False, True])
    assert sub.is_same.tolist() == [1, 0, 0, 0] and sub.ID.tolist() == [10, 11, 12, 13]


@pytest.mark.parametrize("sub, fragment", [
    (pd.DataFrame({"ID": [0, 1], "label": [0, 1]}), "columns must be exactly"),
    (pd.DataFrame({"ID": [0, 1], "is_same": [0, np.nan]}), "NaN"),
    (pd.DataFrame({"ID": [0, 1], "is_same": [0, 2]}), "0 or 1"),
    (pd.DataFrame({"ID": [0, 0, 1], "is_same": [0, 1, 1]}), "duplicate IDs [0]"),
    (pd.DataFrame({"ID": [0], "is_same": [1]}), "1 test IDs missing"),
    (pd.DataFrame({"ID": [0, 1, 7], "is_same": [1, 0, 0]}), "not in the test set"),
])
def test_validate_submission_rejects(sub, fragment):
    with pytest.raises(SubmissionError) as ei:
        validate_submission(sub, [0, 1])
    assert fragment in str(ei.value)


def test_write_submission_exact_format(tmp_path):
    sub = pd.DataFrame({"ID": [0, 1], "is_same": [1, 0]})
    path = write_submission(sub, tmp_path / "s" / "sub.csv", [0, 1], scores=[0.9, 0.1])
    assert path.read_text() == "ID,is_same\n0,1\n1,0\n"
    assert (tmp_path / "s" / "sub_scores.csv").read_text().startswith("ID,is_same,score")
    with pytest.raises(SubmissionError):
        write_submission(sub, tmp_path / "bad.csv", [0, 1, 2])
    assert not (tmp_path / "bad.csv").exists()


def test_candidate_bound_sits_below_the_lowest_positive():
    y = np.array([1, 1, 0, 0, 1, 0])
    s = np.array([0.9, 0.42, 0.1, 0.5, np.nan, 0.3])
    assert candidate_bound(y, s, margin=0.05) == pytest.approx(0.37)   # 0.42 - 0.05; NaN ignored
    assert candidate_bound(y, s, margin=0.0) == pytest.approx(0.42)
    with pytest.raises(ValueError, match="positive"):
        candidate_bound([0, 0, 1], [0.2, 0.3, np.nan])
