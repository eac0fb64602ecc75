"""Kaggle submissions in the exact LUN.UA format ``ID,is_same``, validated before they are written."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["SubmissionError", "make_submission", "validate_submission", "write_submission"]


class SubmissionError(ValueError):
    """A submission that Kaggle would reject or mis-score; the message says which rows and why."""


def make_submission(test: pd.DataFrame, scores, threshold: float, unreadable=None) -> pd.DataFrame:
    """``ID, is_same`` for a test table: ``is_same = score >= threshold``.

    Pairs flagged in ``unreadable`` or with a NaN score get 0, the documented
    unreadable-image policy (:data:`nnutils.data.pairs.UNREADABLE_POLICY`).

    Parameters
    ----------
    test : DataFrame, N rows
        With ``ID``.
    scores : array-like of float, shape (N,)
    threshold : float
    unreadable : array-like of bool, shape (N,), optional
        Pairs with an unreadable image.

    Returns
    -------
    DataFrame
        Columns ``ID`` and ``is_same`` (int 0/1), in the order of ``test``.
    """
    s = np.asarray(scores, float)
    bad = np.isnan(s) if unreadable is None else (np.asarray(unreadable, bool) | np.isnan(s))
    pred = np.where(bad, 0, (np.nan_to_num(s, nan=-np.inf) >= threshold).astype(int))
    return pd.DataFrame({"ID": test.ID.to_numpy(), "is_same": pred.astype(int)})


def validate_submission(sub: pd.DataFrame, test_ids) -> None:
    """Check a submission the way Kaggle would score it.

    Parameters
    ----------
    sub : DataFrame
        The submission.
    test_ids : array-like of int
        The test set's IDs.

    Raises
    ------
    SubmissionError
        Unless ``sub`` has exactly the columns ``ID, is_same``, every test ID exactly once
        and nothing else, and ``is_same`` values in {0, 1} without NaN.
    """
    if list(sub.columns) != ["ID", "is_same"]:
        raise SubmissionError(f"columns must be exactly ['ID', 'is_same'], got {list(sub.columns)}")
    if sub.is_same.isna().any():
        raise SubmissionError(f"is_same is NaN for IDs {sub.ID[sub.is_same.isna()].head(5).tolist()}")
    bad = ~sub.is_same.isin([0, 1])
    if bad.any():
        raise SubmissionError(f"is_same must be 0 or 1; IDs {sub.ID[bad].head(5).tolist()} have "
                              f"{sub.is_same[bad].head(5).tolist()}")
    dup = sub.ID.duplicated()
    if dup.any():
        raise SubmissionError(f"duplicate IDs {sub.ID[dup].head(5).tolist()}")
    want, have = set(pd.Series(test_ids).tolist()), set(sub.ID.tolist())
    if want - have:
        raise SubmissionError(f"{len(want - have)} test IDs missing, e.g. {sorted(want - have)[:5]}")
    if have - want:
        raise SubmissionError(f"{len(have - want)} IDs not in the test set, e.g. {sorted(have - want)[:5]}")


def write_submission(sub: pd.DataFrame, path: str | Path, test_ids, scores=None) -> Path:
    """Validate, then write ``path`` (``ID,is_same``); with ``scores``, also ``<stem>_scores.csv``.

    Parameters
    ----------
    sub : DataFrame
        ``ID, is_same``.
    path : str or Path
        The CSV to write (its folder is created).
    test_ids : array-like of int
        The test set's IDs (:func:`validate_submission`).
    scores : array-like of float, shape (len(sub),), optional
        Written next to the submission with a ``score`` column.

    Returns
    -------
    Path

    Raises
    ------
    SubmissionError
        When the submission is invalid (nothing is written).
    """
    validate_submission(sub, test_ids)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sub.astype({"is_same": int}).to_csv(path, index=False)
    if scores is not None:
        sub.assign(score=np.asarray(scores, float)).to_csv(path.with_name(f"{path.stem}_scores.csv"), index=False)
    return path
