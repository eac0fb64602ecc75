"""Scoring predictions against held-out labels."""
from __future__ import annotations

import numpy as np
import pandas as pd

from nnutils.data.tables import HARD_KINDS
from nnutils.decide import metrics as M


def evaluate(scores: np.ndarray, pairs: pd.DataFrame, threshold: float | None = None) -> dict:
    """Metrics of ``scores`` on readable ``pairs``; the threshold maximises F1 unless given.

    Adds ``hard_negative_fp_rate`` (false positives among other-crop / same-scene /
    similar-colour negatives) when the pairs carry ``negative_kind``.
    """
    ok = ~np.isnan(scores)
    y, s = pairs.is_same.to_numpy()[ok], scores[ok]
    thr = M.best_threshold(y, s)[0] if threshold is None else threshold
    out = M.pair_metrics(y, s, thr)
    if "negative_kind" in pairs:
        hard = pairs.negative_kind.to_numpy()[ok]
        mask = np.isin(hard, HARD_KINDS)
        if mask.any():
            out["hard_negative_fp_rate"] = float((s[mask] >= thr).mean())
            out["hard_negatives"] = int(mask.sum())
    return out
