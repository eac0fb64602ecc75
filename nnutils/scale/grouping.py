"""Groups of duplicates from nearest-neighbour links: edges, components, and choosing the settings.

:func:`neighbour_edges` keeps the kNN links at or above a threshold (with Shopee's ``min2``
and a mutual-neighbour option), :func:`connected_groups` joins them into groups,
:func:`rowwise_f1` scores a grouping (the Shopee metric) and :func:`sweep_grouping` scores a
grid of settings from one kNN search. The settings chosen on labelled data are saved to
``<run_dir>/grouping.json`` (:func:`save_grouping`).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd


def _check_knn(sims, ids):
    sims, ids = np.asarray(sims, np.float32), np.asarray(ids, np.int64)
    if sims.ndim != 2 or sims.shape != ids.shape:
        raise ValueError(f"sims and ids must be 2-d arrays of one shape (N, k), got {sims.shape} and {ids.shape}")
    if ids.size and ids.max() >= len(ids):
        raise ValueError(f"ids refer to row {ids.max()} but there are only {len(ids)} rows (a self-kNN is expected)")
    return sims, ids


def neighbour_edges(sims, ids, threshold: float, *, min2: bool = False, min2_threshold: float | None = None,
                    mutual: bool = False) -> pd.DataFrame:
    """Duplicate links from a self-kNN: pairs ``i < j`` with their similarity.

    Parameters
    ----------
    sims, ids : (N, k) float32 similarities (descending per row) and int64 neighbour rows of
        each of the N items against the same N items (self-matches and ``-1`` ids are ignored).
    threshold : keep a neighbour when its similarity is ``>= threshold``.
    min2 : also keep each item's nearest other neighbour when its similarity is
        ``>= min2_threshold`` (default: ``threshold - 0.05``) — the Shopee "at least two per
        group" trick for duplicates just under the threshold.
    mutual : keep an edge only if each item is in the other's kept neighbour list
        (applied before ``min2``; the nearest-neighbour link of ``min2`` is kept regardless).

    Returns
    -------
    DataFrame with int columns ``i``, ``j`` (i < j), float ``similarity`` (the larger of the
    two directions), and bool ``via_min2``; one row per undirected edge, sorted by (i, j).
    """
    sims, ids = _check_knn(sims, ids)
    n, k = ids.shape
    rows = np.repeat(np.arange(n), k)
    cols, s = ids.ravel(), sims.ravel()
    valid = (cols >= 0) & (cols != rows) & np.isfinite(s)
    rows, cols, s = rows[valid], cols[valid], s[valid]
    keep = s >= threshold
    main = pd.DataFrame({"a": rows[keep], "b": cols[keep], "similarity": s[keep]})
    if mutual and len(main):
        fwd = set(zip(main.a.to_numpy().tolist(), main.b.to_numpy().tolist()))
        back = [(b, a) in fwd for a, b in zip(main.a.to_numpy().tolist(), main.b.to_numpy().tolist())]
        main = main[np.array(back, bool)]
    main = main.assign(via_min2=False)
    parts = [main]
    if min2:
        t2 = threshold - 0.05 if min2_threshold is None else float(min2_threshold)
        first = pd.DataFrame({"a": rows, "b": cols, "similarity": s}).drop_duplicates("a")  # nearest per row
        first = first[first.similarity >= t2].assign(via_min2=True)
        parts.append(first)
    e = pd.concat(parts, ignore_index=True)
    e["i"], e["j"] = np.minimum(e.a, e.b), np.maximum(e.a, e.b)
    # one row per undirected edge; an edge found by the plain rule is not "via_min2"
    e = (e.sort_values(["i", "j", "via_min2", "similarity"], ascending=[True, True, True, False])
          .groupby(["i", "j"], as_index=False).agg(similarity=("similarity", "max"), via_min2=("via_min2", "min")))
    return e[["i", "j", "similarity", "via_min2"]].astype({"i": np.int64, "j": np.int64, "similarity": np.float32})


def connected_groups(n: int, edges: pd.DataFrame) -> np.ndarray:
    """Group label per item: (n,) int64, the connected components of ``edges`` (columns ``i``, ``j``).

    Labels are 0..G-1, numbered by decreasing group size then by first member, so label 0 is
    the largest group. Items without an edge are groups of one.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    if n == 0:
        return np.zeros(0, np.int64)
    i = edges["i"].to_numpy(np.int64) if len(edges) else np.zeros(0, np.int64)
    j = edges["j"].to_numpy(np.int64) if len(edges) else np.zeros(0, np.int64)
    if len(i) and (i.min() < 0 or max(i.max(), j.max()) >= n):
        raise ValueError(f"edges refer to items outside 0..{n - 1}")
    g = coo_matrix((np.ones(len(i), np.int8), (i, j)), shape=(n, n))
    _, lab = connected_components(g, directed=False)
    sizes = np.bincount(lab)
    first = np.full(len(sizes), n)
    np.minimum.at(first, lab, np.arange(n))
    order = np.lexsort((first, -sizes))           # largest first, ties by first member
    relabel = np.empty_like(order)
    relabel[order] = np.arange(len(order))
    return relabel[lab].astype(np.int64)


def rowwise_f1(pred_labels, true_labels) -> float:
    """Kaggle Shopee metric: mean over items of F1(predicted group, true group), each containing the item.

    For item i with predicted set P_i and true set T_i (both include i),
    F1_i = 2·|P_i ∩ T_i| / (|P_i| + |T_i|). Singletons predicted as singletons score 1.
    ``pred_labels``, ``true_labels``: (N,) group labels of any hashable dtype.
    """
    p = pd.Series(pd.factorize(pd.Series(pred_labels))[0])
    t = pd.Series(pd.factorize(pd.Series(true_labels))[0])
    if len(p) != len(t):
        raise ValueError(f"pred_labels ({len(p)}) and true_labels ({len(t)}) differ in length")
    if len(p) == 0:
        return float("nan")
    ps, ts = p.map(p.value_counts()), t.map(t.value_counts())
    both = pd.Series(list(zip(p, t)))
    inter = both.map(both.value_counts())
    return float((2 * inter / (ps + ts)).mean())


def sweep_grouping(sims, ids, truth, thresholds: Sequence[float], *, min2_margin: float = 0.05,
                   variants: Sequence[str] = ("plain", "min2", "mutual", "mutual+min2")) -> pd.DataFrame:
    """Row-wise F1 of the groups for every threshold × variant, from one self-kNN.

    ``sims``, ``ids``: (N, k) self-kNN; ``truth``: (N,) true group labels. Variants:
    ``plain``, ``min2`` (nearest neighbour kept down to ``threshold - min2_margin``),
    ``mutual`` and ``mutual+min2``. Returns a DataFrame ``threshold``, ``variant``,
    ``rowwise_f1``, ``groups`` (of two or more), ``largest`` (size of the largest group), ``edges``.
    """
    rows = []
    for t in thresholds:
        for v in variants:
            if v not in ("plain", "min2", "mutual", "mutual+min2"):
                raise ValueError(f"unknown variant {v!r}")
            e = neighbour_edges(sims, ids, t, min2="min2" in v, min2_threshold=t - min2_margin,
                                mutual="mutual" in v)
            lab = connected_groups(len(ids), e)
            size = np.bincount(lab)
            rows.append(dict(threshold=float(t), variant=v, rowwise_f1=rowwise_f1(lab, truth),
                             groups=int((size >= 2).sum()), largest=int(size.max()) if len(size) else 0,
                             edges=len(e)))
    return pd.DataFrame(rows)


def save_grouping(run_dir, *, threshold: float, variant: str, k: int, min2_margin: float = 0.05, **extra) -> Path:
    """Record the grouping settings chosen on labelled data in ``<run_dir>/grouping.json``.

    ``variant`` is one of :func:`sweep_grouping`'s; :func:`find_duplicates` given this run
    folder uses these settings unless told otherwise.
    """
    if variant not in ("plain", "min2", "mutual", "mutual+min2"):
        raise ValueError(f"unknown variant {variant!r}")
    path = Path(run_dir) / "grouping.json"
    path.write_text(json.dumps(dict(threshold=float(threshold), variant=variant, k=int(k),
                                    min2_margin=float(min2_margin), **extra), indent=2))
    return path


def read_grouping(run_dir) -> dict | None:
    """The settings :func:`save_grouping` wrote, or None."""
    path = Path(run_dir) / "grouping.json"
    return json.loads(path.read_text()) if path.is_file() else None


def grouping_options(run_dir) -> dict:
    """:func:`find_duplicates` keyword arguments from ``<run_dir>/grouping.json`` (``{}`` if absent):
    ``threshold``, ``k``, ``min2``, ``mutual``, ``min2_margin``."""
    g = read_grouping(run_dir)
    if not g:
        return {}
    return dict(threshold=g["threshold"], k=g["k"], min2="min2" in g["variant"], mutual="mutual" in g["variant"],
                min2_margin=g.get("min2_margin", 0.05))
