"""Choosing the decision threshold: sweeps, k-fold cross-validation, and the TensorBoard HParams dashboard.

The LUN.UA team picked ``threshold = 0.75`` from a coarse grid in the HParams dashboard.
Here every (model, threshold) is logged as an HParams run, and the threshold used is
chosen by k-fold cross-validation on the validation pairs: on each fold the F1-optimal
threshold of the other folds is applied to the held-out fold, so the reported F1 is not
measured on the pairs that chose it, and the spread of the fold thresholds shows how
stable the choice is.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedKFold

from nnutils.decide.metrics import best_threshold, pair_metrics

__all__ = ["sweep", "cv_threshold", "candidate_bound", "log_hparams"]


def sweep(y, scores, thresholds=None) -> pd.DataFrame:
    """F1 (class 1), macro F1, precision and recall at each threshold.

    Parameters
    ----------
    y : array-like of 0/1, shape (N,)
    scores : array-like of float, shape (N,)
    thresholds : array-like of float, optional
        Default: 101 points over the score range.

    Returns
    -------
    DataFrame
        One row per threshold: ``threshold``, ``f1``, ``macro_f1``, ``precision``, ``recall``.
    """
    y, s = np.asarray(y).astype(int), np.asarray(scores, float)
    if thresholds is None:
        thresholds = np.linspace(np.nanmin(s), np.nanmax(s), 101)
    rows = []
    for t in thresholds:
        m = pair_metrics(y, s, float(t))
        rows.append({k: m[k] for k in ("threshold", "f1", "macro_f1", "precision", "recall")})
    return pd.DataFrame(rows)


def cv_threshold(y, scores, k: int = 5, seed: int = 0) -> dict:
    """Threshold by stratified k-fold cross-validation.

    Parameters
    ----------
    y : array-like of 0/1, shape (N,)
    scores : array-like of float, shape (N,)
    k : int, default 5
        Folds (at most the smaller class's count).
    seed : int, default 0
        Seed of the fold split.

    Returns
    -------
    dict
        ``threshold`` (the median of the per-fold F1-optimal thresholds),
        ``fold_thresholds``, ``threshold_std``, the held-out ``cv_f1`` / ``cv_f1_std`` (each
        fold scored with the threshold chosen on the other folds) and ``k`` (folds used).

    Raises
    ------
    ValueError
        With fewer than 2 examples of either class.
    """
    y, s = np.asarray(y).astype(int), np.asarray(scores, float)
    k = int(min(k, np.bincount(y, minlength=2).min()))
    if k < 2:
        raise ValueError("cv_threshold needs at least 2 examples of each class")
    folds = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    ts, f1s = [], []
    for fit_idx, held_idx in folds.split(s, y):
        t, _ = best_threshold(y[fit_idx], s[fit_idx])
        ts.append(t)
        f1s.append(pair_metrics(y[held_idx], s[held_idx], t)["f1"])
    return dict(threshold=float(np.median(ts)), fold_thresholds=[float(t) for t in ts],
                threshold_std=float(np.std(ts)), cv_f1=float(np.mean(f1s)), cv_f1_std=float(np.std(f1s)), k=k)


def candidate_bound(y, scores, *, margin: float = 0.05) -> float:
    """The lower bound of global scores at or above which every pair is a candidate to verify.

    Set on validation *below its lowest positive* with a margin, not at a quantile: with
    ~170 validation positives any quantile rests on one or two pairs, and a positive
    below the bound is lost for good (the fused decision never sees it).

    Parameters
    ----------
    y : array-like of 0/1, shape (N,)
        Validation labels.
    scores : array-like of float, shape (N,)
        Global scores (cosine similarity in [-1, 1]); NaN (unreadable image) is ignored.
    margin : float
        Subtracted from the lowest positive score (same units as ``scores``).

    Returns
    -------
    float
        ``min(scores of positives) - margin``.

    Raises
    ------
    ValueError
        When no positive has a finite score.
    """
    y, s = np.asarray(y).astype(int), np.asarray(scores, float)
    pos = s[(y == 1) & np.isfinite(s)]
    if not len(pos):
        raise ValueError("candidate_bound needs at least one positive with a finite score")
    return float(pos.min() - margin)


def log_hparams(logdir: str | Path, results: pd.DataFrame) -> Path:
    """Log one TensorBoard HParams run per row of ``results``.

    Open with ``tensorboard --logdir <logdir>`` → HPARAMS tab.

    Parameters
    ----------
    logdir : str or Path
        The log folder (``run-NNNN`` sub-folders are written).
    results : DataFrame
        Columns ``model``, ``threshold`` and metric columns (``f1``, ``macro_f1``,
        ``precision``, ``recall``, ``roc_auc``).

    Returns
    -------
    Path
        ``logdir``.
    """
    import tensorflow as tf
    from tensorboard.plugins.hparams import api as hp

    logdir = Path(logdir)
    metric_cols = [c for c in ("f1", "macro_f1", "precision", "recall", "roc_auc") if c in results]
    hp_model = hp.HParam("model", hp.Discrete(sorted(results.model.unique())))
    hp_thr = hp.HParam("threshold", hp.RealInterval(float(results.threshold.min()), float(results.threshold.max())))
    with tf.summary.create_file_writer(str(logdir)).as_default():
        hp.hparams_config(hparams=[hp_model, hp_thr], metrics=[hp.Metric(c, display_name=c) for c in metric_cols])
    for i, r in enumerate(results.itertuples(index=False)):
        with tf.summary.create_file_writer(str(logdir / f"run-{i:04d}")).as_default():
            hp.hparams({hp_model: r.model, hp_thr: float(r.threshold)}, trial_id=f"{r.model}@{r.threshold:.4f}")
            for c in metric_cols:
                tf.summary.scalar(c, float(getattr(r, c)), step=1)
    return logdir
