"""Pair-decision metrics: F1 of class 1 (the competition's score), macro F1, ROC AUC, thresholds.

``y`` is a 0/1 array of labels (N,), ``scores`` a float array (N,) where larger means
"more likely the same photo" (cosine similarity, 1 - normalised Hamming distance, ...).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import (
    f1_score,
    precision_recall_curve,
    precision_score,
    recall_score,
    roc_auc_score,
)

__all__ = ["best_threshold", "pair_metrics", "breakdown", "wilson_interval"]


def best_threshold(y, scores) -> tuple[float, float]:
    """The threshold maximising class-1 F1 on ``(y, scores)``, and that F1.

    Predictions are ``scores >= threshold``. The threshold returned is the midpoint
    between the chosen score and the next lower one, so it generalises a little better
    than the exact score.

    Parameters
    ----------
    y : array-like of 0/1, shape (N,)
        Labels.
    scores : array-like of float, shape (N,)
        Scores (no NaN).

    Returns
    -------
    threshold : float
    f1 : float
        Class-1 F1 in [0, 1] at that threshold.

    Raises
    ------
    ValueError
        When ``y`` has one class only.
    """
    y, s = np.asarray(y).astype(int), np.asarray(scores, float)
    if y.min() == y.max():
        raise ValueError("best_threshold needs both classes in y")
    prec, rec, thr = precision_recall_curve(y, s)
    f1 = np.where(prec + rec > 0, 2 * prec * rec / np.maximum(prec + rec, 1e-12), 0)[:-1]
    i = int(np.argmax(f1))
    lower = s[s < thr[i]]
    t = float((thr[i] + lower.max()) / 2) if lower.size else float(thr[i])
    return t, float(f1[i])


def pair_metrics(y, scores, threshold: float) -> dict:
    """Metrics of the decision ``scores >= threshold``.

    Parameters
    ----------
    y : array-like of 0/1, shape (N,)
        Labels.
    scores : array-like of float, shape (N,)
        Scores (or 0/1 decisions with ``threshold=0.5``).
    threshold : float

    Returns
    -------
    dict
        ``f1`` (class 1), ``macro_f1``, ``precision``, ``recall``, ``accuracy`` (floats in
        [0, 1]), ``roc_auc`` (threshold-free; NaN if one class is absent), ``threshold``,
        ``n``, ``positives`` and the confusion counts ``tp, fp, fn, tn`` (int).
    """
    y, s = np.asarray(y).astype(int), np.asarray(scores, float)
    pred = (s >= threshold).astype(int)
    tp = int(((pred == 1) & (y == 1)).sum())
    fp = int(((pred == 1) & (y == 0)).sum())
    fn = int(((pred == 0) & (y == 1)).sum())
    tn = int(((pred == 0) & (y == 0)).sum())
    both = y.min() != y.max()
    return dict(
        f1=float(f1_score(y, pred, zero_division=0)),
        macro_f1=float(f1_score(y, pred, average="macro", zero_division=0)),
        precision=float(precision_score(y, pred, zero_division=0)),
        recall=float(recall_score(y, pred, zero_division=0)),
        accuracy=float((pred == y).mean()),
        roc_auc=float(roc_auc_score(y, s)) if both else float("nan"),
        threshold=float(threshold), n=int(len(y)), positives=int(y.sum()),
        tp=tp, fp=fp, fn=fn, tn=tn,
    )


def breakdown(pairs: pd.DataFrame, scores, threshold: float, by: str) -> pd.DataFrame:
    """Per-kind results, e.g. ``by="distortion"`` for positives or ``"negative_kind"`` for negatives.

    For each non-empty value of ``pairs[by]``: number of pairs, mean score, and the share
    decided correctly at ``threshold`` (recall for positive kinds, 1 - false-positive
    rate for negative kinds).

    Parameters
    ----------
    pairs : DataFrame, N rows
        With ``is_same`` and the column ``by``.
    scores : array-like of float, shape (N,)
    threshold : float
    by : str
        The column to group by.

    Returns
    -------
    DataFrame
        Indexed by kind: ``pairs``, ``mean_score``, ``correct`` (share) and ``errors``
        (count); the worst kinds first, rounded to 4 decimals.
    """
    s = np.asarray(scores, float)
    df = pairs.assign(score=s, correct=((s >= threshold).astype(int) == pairs.is_same.to_numpy()))
    df = df[df[by].astype(str).str.len() > 0]
    out = df.groupby(by).agg(pairs=("score", "size"), mean_score=("score", "mean"),
                             correct=("correct", "mean"), errors=("correct", lambda c: int((~c).sum())))
    return out.sort_values("correct").round(4)


def wilson_interval(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval of a proportion ``k / n`` (95 % with the default ``z``).

    Parameters
    ----------
    k : int
        Successes (e.g. false positives, or positives found), ``0 <= k <= n``.
    n : int
        Trials (pairs of the kind).
    z : float, default 1.959964
        The normal quantile of the interval's level.

    Returns
    -------
    tuple of float
        ``(low, high)`` in [0, 1]; ``(nan, nan)`` when ``n == 0``.

    Raises
    ------
    ValueError
        If ``k`` or ``n`` is negative or ``k > n``.
    """
    if n < 0 or k < 0 or k > n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return float("nan"), float("nan")
    p = k / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    low = 0.0 if k == 0 else max(0.0, mid - half)      # exact ends: no rounding past 0 or 1
    high = 1.0 if k == n else min(1.0, mid + half)
    return float(low), float(high)
