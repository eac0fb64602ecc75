"""Decisions scored end to end on a labelled pairs folder: the test split, or data made differently.

The shifted benchmark (:mod:`nnutils.data.shift`: held-out photos, re-posts made by another
library) is where a setting fitted on validation shows whether it carries. Notebooks 07 and
10 call :func:`report_on` to put it beside the test split; nothing here fits anything, so the
numbers are for reporting, never for choosing a threshold, a range or a model.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from nnutils.data import pairs as P
from nnutils.data.tables import read_test_labels, test_kinds
from nnutils.decide.predict import predict_pairs
from nnutils.decide.scoring import compare_decisions, kind_rates, score_against_labels

__all__ = ["report_on"]


def report_on(data_dir, jobs: dict, *, images_dir=None, **predict_kw) -> dict:
    """Run each decision end to end on ``data_dir``'s test pairs and score it against the labels.

    Parameters
    ----------
    data_dir : str or Path
        A LUN-format folder with ``test.csv``, ``test_labels.csv`` and (for the per-kind
        tables) ``metadata.csv``, e.g. ``data/lun-shift``.
    jobs : dict
        Decision name → keyword arguments of :func:`nnutils.decide.predict.predict_pairs`
        (``model``, and e.g. ``threshold`` and ``verify``).
    images_dir : str or Path, optional
        Default ``<data_dir>/images``.
    **predict_kw
        Passed to every :func:`predict_pairs` call (``runtime``, ``cache_dir``, ``progress``).

    Returns
    -------
    dict
        ``table`` (DataFrame, one row per decision: F1, macro F1, errors, FP, FN, FP on hard
        negatives and ``ms per pair``), ``false_positives`` (per hard-negative kind) and
        ``recall`` (per distortion), both from :func:`nnutils.decide.scoring.kind_rates` with
        95 % Wilson intervals, and ``reports`` (each prediction's report).

    Raises
    ------
    FileNotFoundError
        When ``data_dir`` has no ``test.csv`` or no test labels.
    """
    data_dir = Path(data_dir)
    test_csv = data_dir / "test.csv"
    if not test_csv.exists():
        raise FileNotFoundError(f"{test_csv} not found")
    ids = P.read_pairs(test_csv, "test").ID
    y = read_test_labels(data_dir, ids)
    if y is None:
        raise FileNotFoundError(f"{data_dir}: no test_labels.csv to score against")
    kinds = test_kinds(data_dir, ids)
    images_dir = Path(images_dir) if images_dir is not None else data_dir / "images"
    preds = {name: predict_pairs(test_csv, images_dir, **{**predict_kw, **kw}) for name, kw in jobs.items()}
    decisions = {n: p.submission.is_same.to_numpy() for n, p in preds.items()}
    table, _ = compare_decisions(y, decisions, kinds=kinds,
                                 extra={n: {"ms per pair": p.report["ms_per_pair"]} for n, p in preds.items()})
    per_kind = {n: score_against_labels(y, d, kinds=kinds)["breakdown"] for n, d in decisions.items()}
    return dict(table=table, false_positives=kind_rates(per_kind, "negative_kind", hard_only=True),
                recall=kind_rates(per_kind, "distortion"), reports={n: p.report for n, p in preds.items()})
