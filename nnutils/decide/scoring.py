"""Scoring predictions against held-out labels.

:func:`evaluate` scores similarity scores on labelled pairs (choosing the F1-best threshold
unless given one); :func:`score_against_labels` scores 0/1 decisions, or scores at a given
threshold, against labels — the one scorer of a submission, of the predict command's
output and of a benchmark. Both report the false-positive rate on hard negatives with the
one definition of :func:`nnutils.data.tables.is_hard_negative` (every negative kind that is
not ``random`` and not empty), and ``fp_rate_<kind>`` for every negative kind present.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from nnutils.data.tables import is_hard_negative
from nnutils.decide import metrics as M

__all__ = ["evaluate", "score_against_labels", "negative_rates", "compare_decisions", "kind_rates",
           "kind_rates_markdown"]


def negative_rates(y, pred, negative_kind) -> dict:
    """False-positive counts and rates on the negatives, by kind.

    Parameters
    ----------
    y : array-like of 0/1, shape (N,)
        Labels (1 = same photo).
    pred : array-like of 0/1 or bool, shape (N,)
        Decisions.
    negative_kind : array-like of str, shape (N,)
        The pairs' negative kinds (empty for positives and unknown pairs).

    Returns
    -------
    dict
        ``hard_negatives`` (int: negatives of a hard kind, :func:`~nnutils.data.tables.is_hard_negative`),
        ``hard_negative_fp`` (int: those decided 1) and ``hard_negative_fp_rate`` (float,
        their share; NaN when there are no hard negatives); and ``fp_rate_<kind>`` (float)
        for every non-empty negative kind present among the negatives (``random`` too).
    """
    y = np.asarray(y).astype(int)
    pred = np.asarray(pred).astype(bool)
    kind = pd.Series(np.asarray(negative_kind, dtype=object)).fillna("").astype(str).to_numpy()
    if not len(y) == len(pred) == len(kind):
        raise ValueError(f"y ({len(y)}), pred ({len(pred)}) and negative_kind ({len(kind)}) differ in length")
    neg = y == 0
    hard = neg & is_hard_negative(kind)
    out = {"hard_negatives": int(hard.sum()), "hard_negative_fp": int((pred & hard).sum()),
           "hard_negative_fp_rate": float(pred[hard].mean()) if hard.any() else float("nan")}
    for k in sorted(set(kind[neg]) - {""}):
        m = neg & (kind == k)
        out[f"fp_rate_{k}"] = float(pred[m].mean())
    return out


def evaluate(scores: np.ndarray, pairs: pd.DataFrame, threshold: float | None = None) -> dict:
    """Metrics of ``scores`` on the readable ``pairs``; the threshold maximises F1 unless given.

    Parameters
    ----------
    scores : ndarray of float, shape (N,)
        Similarity of each pair (larger = more likely the same photo); NaN for a pair with
        an unreadable image, which is left out.
    pairs : DataFrame, N rows
        With ``is_same`` and optionally ``negative_kind``.
    threshold : float, optional
        Decide ``scores >= threshold``; None chooses the F1-best threshold on these pairs
        (:func:`nnutils.decide.metrics.best_threshold`).

    Returns
    -------
    dict
        :func:`nnutils.decide.metrics.pair_metrics`' keys; when the pairs carry
        ``negative_kind`` and include hard negatives, also ``hard_negative_fp_rate`` (share
        of the hard negatives decided 1), ``hard_negatives`` (their number) and
        ``fp_rate_<kind>`` for every negative kind present.
    """
    ok = ~np.isnan(scores)
    y, s = pairs.is_same.to_numpy()[ok], scores[ok]
    thr = M.best_threshold(y, s)[0] if threshold is None else threshold
    out = M.pair_metrics(y, s, thr)
    if "negative_kind" in pairs:
        rates = negative_rates(y, s >= thr, pairs.negative_kind.to_numpy()[ok])
        if rates["hard_negatives"]:
            out["hard_negative_fp_rate"] = rates["hard_negative_fp_rate"]
            out["hard_negatives"] = rates["hard_negatives"]
        out.update({k: v for k, v in rates.items() if k.startswith("fp_rate_")})
    return out


def score_against_labels(y_true, y_pred_or_scores, threshold: float | None = None,
                         kinds: pd.DataFrame | None = None) -> dict:
    """Score 0/1 predictions, or scores at a threshold, against 0/1 labels.

    Parameters
    ----------
    y_true : array-like of 0/1, shape (N,)
        Labels (1 = same photo), e.g. :func:`nnutils.data.tables.read_test_labels`.
    y_pred_or_scores : array-like, shape (N,)
        With ``threshold`` None: the decisions, 0/1 (or bool). With a ``threshold``:
        similarity scores, decided ``score >= threshold``; a NaN score (unreadable image)
        decides 0 and ranks below every other score for the ROC AUC.
    threshold : float, optional
        The threshold on the scores; None means ``y_pred_or_scores`` are decisions.
    kinds : DataFrame, N rows, optional
        Rows aligned with ``y_true`` carrying ``distortion`` and/or ``negative_kind`` (e.g.
        :func:`nnutils.data.tables.test_kinds`); adds the hard-negative and per-kind results.

    Returns
    -------
    dict
        ``f1`` (class 1, the competition's score), ``macro_f1``, ``precision``, ``recall``,
        ``accuracy``, ``tp``, ``fp``, ``fn``, ``tn``, ``errors`` (= fp + fn), ``n``,
        ``positives``, ``threshold`` (float, or None for decisions); ``roc_auc`` when scores
        are given (NaN when one class is absent). With ``kinds`` carrying ``negative_kind``:
        the keys of :func:`negative_rates` (``hard_negatives``, ``hard_negative_fp``,
        ``hard_negative_fp_rate``, ``fp_rate_<kind>``). With ``kinds``: ``breakdown``, a dict
        of per-kind tables (:func:`nnutils.decide.metrics.breakdown`) under ``"distortion"``
        (positives) and ``"negative_kind"`` (negatives), for each column ``kinds`` has; the
        tables' ``mean_score`` is the share decided 1 when decisions were given. Every
        other value is a plain int / float, ready for JSON.

    Raises
    ------
    ValueError
        When the lengths differ, the labels are not 0/1, decisions (no threshold) are not
        0/1, or ``kinds`` has another number of rows.
    """
    y = np.asarray(y_true)
    v = np.asarray(y_pred_or_scores, float)
    if y.ndim != 1 or v.shape != y.shape:
        raise ValueError(f"y_true {y.shape} and y_pred_or_scores {v.shape} must be 1-d of one length")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("y_true must be 0/1 labels")
    y = y.astype(int)
    if threshold is None:
        if not np.isin(v, (0, 1)).all():
            raise ValueError("without a threshold y_pred_or_scores must be 0/1 decisions "
                             "(give threshold= to decide scores)")
        pred, thr = v.astype(int), 0.5
        out = M.pair_metrics(y, pred, thr)
        del out["roc_auc"]
        out["threshold"] = None
    else:
        thr = float(threshold)
        finite = v[np.isfinite(v)]
        low = min(float(finite.min()) if finite.size else thr, thr) - 1.0   # NaN: decided 0, ranked last
        filled = np.where(np.isnan(v), low, v)
        pred = (filled >= thr).astype(int)
        out = M.pair_metrics(y, filled, thr)
    out["errors"] = out["fp"] + out["fn"]
    if kinds is not None:
        if len(kinds) != len(y):
            raise ValueError(f"kinds has {len(kinds)} rows but there are {len(y)} labels")
        if "negative_kind" in kinds:
            out.update(negative_rates(y, pred, kinds["negative_kind"].to_numpy()))
        table = pd.DataFrame({c: kinds[c].fillna("").astype(str).to_numpy() for c in ("distortion", "negative_kind")
                              if c in kinds}).assign(is_same=y)
        out["breakdown"] = {c: M.breakdown(table, pred if threshold is None else v, thr, c)
                            for c in ("distortion", "negative_kind") if c in table}
    return out


def compare_decisions(y_true, decisions: dict, kinds: pd.DataFrame | None = None,
                      extra: dict | None = None) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """Several sets of 0/1 decisions on the same labelled pairs, side by side.

    Parameters
    ----------
    y_true : (N,) 0/1 labels
    decisions : ``{name: (N,) 0/1 decisions}``
    kinds : DataFrame, N rows, optional
        ``distortion`` / ``negative_kind`` per pair (e.g. :func:`nnutils.data.tables.test_kinds`).
    extra : ``{name: {column: value}}``, optional
        More columns per row (e.g. ``{"ms per pair": 4.4}`` from a prediction report).

    Returns
    -------
    table : DataFrame
        One row per name: ``F1``, ``macro F1``, ``errors``, ``FP``, ``FN``, ``FP on hard
        negatives``, ``hard negatives`` and the ``extra`` columns.
    per_kind : DataFrame or None
        With ``kinds``: the share decided correctly per kind (rows) and name (columns).
    """
    scored = {name: score_against_labels(y_true, d, kinds=kinds) for name, d in decisions.items()}
    table = pd.DataFrame({name: {"F1": m["f1"], "macro F1": m["macro_f1"], "errors": m["errors"], "FP": m["fp"],
                                 "FN": m["fn"], "FP on hard negatives": m.get("hard_negative_fp", 0),
                                 "hard negatives": m.get("hard_negatives", 0), **(extra or {}).get(name, {})}
                          for name, m in scored.items()}).T
    per_kind = None
    if kinds is not None:
        per_kind = pd.concat({name: pd.concat(list(m["breakdown"].values())).correct for name, m in scored.items()},
                             axis=1)
    return table, per_kind


def kind_rates(per_kind: dict, column: str, hard_only: bool = False) -> pd.DataFrame:
    """One row per kind, one column per decision: ``"k/n rate [low, high]"`` with a 95 % Wilson interval.

    For negative kinds the rate is the false-positive rate (``k`` = pairs called the same);
    for distortions it is the recall (``k`` = duplicates found).

    Parameters
    ----------
    per_kind : dict
        Decision name → ``score_against_labels(...)["breakdown"]`` of its decisions.
    column : {"negative_kind", "distortion"}
        Which breakdown: negatives or positives.
    hard_only : bool, default False
        Keep only hard-negative kinds (:func:`nnutils.data.tables.is_hard_negative`).

    Returns
    -------
    pandas.DataFrame
        Indexed by kind (sorted), one string column per decision; empty when no decision
        has the breakdown.
    """
    out = {}
    for name, breakdown in per_kind.items():
        t = breakdown.get(column)
        if t is None or not len(t):
            continue
        cells = {}
        for kind, r in t.iterrows():
            if hard_only and not bool(is_hard_negative([kind])[0]):
                continue
            n, err = int(r["pairs"]), int(r["errors"])
            k = err if column == "negative_kind" else n - err   # FPs of a negative kind, hits of a distortion
            lo, hi = M.wilson_interval(k, n)
            cells[kind] = f"{k}/{n} {k / n:.3f} [{lo:.3f}, {hi:.3f}]"
        out[name] = cells
    return pd.DataFrame(out).sort_index()


def kind_rates_markdown(per_kind: dict) -> str:
    """Both :func:`kind_rates` tables as markdown under their titles (what the benches print).

    Parameters
    ----------
    per_kind : dict
        Decision name → ``score_against_labels(...)["breakdown"]``, as for :func:`kind_rates`.

    Returns
    -------
    str
        "false-positive rate per hard-negative kind" and "recall per distortion", each with
        its table; a table no decision has is left out ("" when neither is there).
    """
    parts = []
    for title, column, hard_only in (("false-positive rate per hard-negative kind", "negative_kind", True),
                                     ("recall per distortion", "distortion", False)):
        table = kind_rates(per_kind, column, hard_only)
        if len(table):
            parts.append(f"\n{title} (k/n, rate, 95 % Wilson interval)\n{table.to_markdown()}")
    return "\n".join(parts)
