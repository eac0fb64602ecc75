"""Query images against a reference set: top-k search, mAP / recall@k, alpha-QE and DBA.

The NAVER 2018 hackathon recipe for near-duplicate retrieval: L2-normalised global
embeddings, cosine top-k with a faiss index (:mod:`nnutils.scale.index`), then two cheap
re-rankings from Radenović, Tolias & Chum ("Fine-tuning CNN image retrieval with no human
annotation", TPAMI 2018):

- **alpha query expansion** (:func:`alpha_qe`): each query is replaced by the normalised
  weighted sum of itself and its top-``n`` references, weights ``sim^alpha`` (only for
  positive similarities), then searched again;
- **database-side augmentation** (:func:`dba`): each reference is replaced, once and
  offline, by the normalised weighted sum of itself and its top-``n`` neighbours among the
  references, with the same weights.

:func:`retrieve` applies either or both; :func:`compare_expansions` tabulates mAP,
recall@1/5/10 and query time for each setting; :func:`compare_poolings` does so for
several embeddings of one collection (a model's, and a backbone's feature maps under each
pooling, :func:`pooled_embeddings`), queries being the photos' originals.

Conventions
-----------
- ``queries`` (Q, D) and ``refs`` (R, D): float32 rows of unit L2 norm (validated).
- ``ids`` (Q, k) int64: reference rows in ranked order (best first); ``-1`` = no result
  (never relevant). ``sims`` (Q, k) float32 cosine similarities.
- Relevance is given either as ``relevant``, a list of Q sets of reference rows, or as
  ``query_labels`` (Q,) and ``ref_labels`` (R,): a reference is relevant to a query when
  their labels are equal (the common case: one label per photograph).
"""
from __future__ import annotations

import time
from typing import Sequence

import numpy as np
import pandas as pd

from nnutils.scale.index import build_index, check_embeddings, knn, search

__all__ = ["search_topk", "relevance_matrix", "average_precision", "mean_average_precision", "recall_at_k",
           "alpha_qe", "dba", "retrieve", "compare_expansions", "expansion_settings", "pooled_embeddings",
           "compare_poolings", "DEFAULT_SETTINGS"]

#: the four settings of :func:`compare_expansions` (keyword arguments of :func:`retrieve`)
DEFAULT_SETTINGS = {
    "baseline": {},
    "alpha-QE": {"qe": {}},
    "DBA": {"dba": {}},
    "DBA + alpha-QE": {"dba": {}, "qe": {}},
}


def search_topk(queries, refs, k: int, kind: str = "auto", *, progress: bool = False,
                **index_kw) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` references for each query by cosine similarity.

    Parameters
    ----------
    queries : (Q, D) float32 unit rows; refs : (R, D) float32 unit rows.
    k : results per query (clipped to R). kind, index_kw : see :func:`nnutils.scale.index.build_index`.

    Returns
    -------
    sims (Q, min(k, R)) float32 descending, ids (Q, min(k, R)) int64 rows of ``refs``
    (``-1``/``-inf`` where an approximate index found fewer).
    """
    index = build_index(refs, kind, progress=progress, **index_kw)
    return search(index, queries, k, progress=progress)


# ----------------------------------------------------------------------------- metrics
def relevance_matrix(ids, relevant: Sequence[set] | None = None, *, query_labels=None,
                     ref_labels=None) -> tuple[np.ndarray, np.ndarray]:
    """Which retrieved items are relevant, and how many relevant items each query has.

    Parameters
    ----------
    ids : (Q, k) int ranked reference rows (``-1`` = no result).
    relevant : Q sets (or lists) of relevant reference rows; or else
    query_labels (Q,), ref_labels (R,) : relevant = same label.

    Returns
    -------
    rel : (Q, k) bool, ``rel[q, i]`` = the i-th result of query q is relevant.
    n_relevant : (Q,) int64, relevant references in the whole database for each query.
    """
    ids = np.asarray(ids)
    if ids.ndim != 2:
        raise ValueError(f"ids must be a 2-d array (Q, k), got shape {ids.shape}")
    if not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"ids must be integers (reference rows), got dtype {ids.dtype}")
    if relevant is not None:
        if query_labels is not None or ref_labels is not None:
            raise ValueError("give either relevant or query_labels + ref_labels, not both")
        if len(relevant) != len(ids):
            raise ValueError(f"relevant has {len(relevant)} entries but ids has {len(ids)} queries")
        sets = [set(int(r) for r in s) for s in relevant]
        rel = np.array([[int(j) in s for j in row] for row, s in zip(ids, sets)], bool).reshape(ids.shape)
        rel &= ids >= 0
        return rel, np.array([len(s) for s in sets], np.int64)
    if query_labels is None or ref_labels is None:
        raise ValueError("give relevant (a list of sets) or both query_labels and ref_labels")
    ql, rl = np.asarray(query_labels), np.asarray(ref_labels)
    if ql.shape != (len(ids),):
        raise ValueError(f"query_labels must have shape ({len(ids)},) like the queries of ids, got {ql.shape}")
    if rl.ndim != 1:
        raise ValueError(f"ref_labels must be 1-d, got shape {rl.shape}")
    if ids.size and ids.max() >= len(rl):
        raise ValueError(f"ids refer to reference row {ids.max()} but ref_labels has {len(rl)} entries")
    rel = (ids >= 0) & (rl[np.clip(ids, 0, None)] == ql[:, None]) if len(rl) else np.zeros(ids.shape, bool)
    counts = pd.Series(rl).value_counts()
    n_rel = pd.Series(ql).map(counts).fillna(0).to_numpy(np.int64)
    return rel, n_rel


def average_precision(ranked_relevance, n_relevant: int | None = None) -> float:
    """Average precision of one ranked list.

    AP = (1 / n_relevant) · Σ_{i : item i is relevant} precision@i, with ranks i = 1, 2, …
    and precision@i = (relevant items among the first i) / i. ``n_relevant`` is the number
    of relevant items in the whole database (default: those in the list), so relevant items
    that were not retrieved contribute 0 — the standard (TREC / Oxford-Paris) definition.

    Parameters
    ----------
    ranked_relevance : (k,) bool or 0/1, the relevance of each retrieved item, best first.
    n_relevant : relevant items in the database (≥ those in the list).

    Returns
    -------
    float in [0, 1]; NaN when there is nothing relevant (n_relevant = 0).

    Examples
    --------
    >>> average_precision([1, 0, 1])          # (1/1 + 2/3) / 2
    0.8333333333333333
    >>> average_precision([1, 0, 1], n_relevant=4)
    0.41666666666666663
    """
    r = np.asarray(ranked_relevance)
    if r.ndim != 1:
        raise ValueError(f"ranked_relevance must be 1-d (one ranked list), got shape {r.shape}")
    r = r.astype(bool)
    n = int(r.sum()) if n_relevant is None else int(n_relevant)
    if n < r.sum():
        raise ValueError(f"n_relevant={n} is smaller than the {int(r.sum())} relevant items in the list")
    if n == 0:
        return float("nan")
    prec = np.cumsum(r) / np.arange(1, len(r) + 1)
    return float(prec[r].sum() / n)


def _ap_rows(rel: np.ndarray, n_rel: np.ndarray) -> np.ndarray:
    prec = np.cumsum(rel, axis=1) / np.arange(1, rel.shape[1] + 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n_rel > 0, (prec * rel).sum(1) / n_rel, np.nan)


def mean_average_precision(ids, relevant: Sequence[set] | None = None, *, query_labels=None,
                           ref_labels=None) -> float:
    """mAP of ranked results: the mean of :func:`average_precision` over the queries.

    Each query's AP divides by its number of relevant references in the whole database, so
    with top-k lists a relevant reference beyond rank k counts as missed (0). Queries
    without any relevant reference are left out of the mean (their AP is undefined).

    Parameters
    ----------
    ids : ndarray of int, shape (Q, k)
        Ranked reference rows per query.
    relevant : sequence of set, length Q, optional
        The relevant reference rows of each query; or give ``query_labels`` and ``ref_labels``
        (see :func:`relevance_matrix`).
    query_labels, ref_labels : array-like, optional
        Labels of the queries (Q,) and references (R,): equal labels are relevant.

    Returns
    -------
    float
        In [0, 1]; NaN if no query has a relevant reference.
    """
    rel, n_rel = relevance_matrix(ids, relevant, query_labels=query_labels, ref_labels=ref_labels)
    ap = _ap_rows(rel, n_rel)
    return float(np.nanmean(ap)) if np.isfinite(ap).any() else float("nan")


def recall_at_k(ids, relevant: Sequence[set] | None = None, ks: Sequence[int] = (1, 5, 10), *,
                query_labels=None, ref_labels=None) -> dict[int, float]:
    """Recall@k: the fraction of queries with at least one relevant reference in their top k.

    The image-retrieval "Recall@K" (hit rate), not the fraction of all relevant items found.
    Queries without any relevant reference are left out.

    Parameters
    ----------
    ids : ndarray of int, shape (Q, k)
        Ranked reference rows per query.
    relevant : sequence of set, length Q, optional
        The relevant reference rows of each query; or give ``query_labels`` and ``ref_labels``
        (see :func:`relevance_matrix`).
    query_labels, ref_labels : array-like, optional
        Labels of the queries (Q,) and references (R,): equal labels are relevant.
    ks : sequence of int, default (1, 5, 10)
        Each in 1..k.

    Returns
    -------
    dict of int to float
        ``{k: value}``, values in [0, 1] (NaN when no query has a relevant reference).

    Raises
    ------
    ValueError
        When a k exceeds ``ids.shape[1]``.
    """
    rel, n_rel = relevance_matrix(ids, relevant, query_labels=query_labels, ref_labels=ref_labels)
    has = n_rel > 0
    out = {}
    for k in ks:
        if not 1 <= int(k) <= rel.shape[1]:
            raise ValueError(f"recall@{k}: k must be in 1..{rel.shape[1]} (the number of results per query)")
        out[int(k)] = float(rel[has, :int(k)].any(1).mean()) if has.any() else float("nan")
    return out


# ----------------------------------------------------------------------------- expansions
def _weighted_sum(base: np.ndarray, refs: np.ndarray, sims: np.ndarray, ids: np.ndarray, alpha: float,
                  progress: bool, desc: str) -> np.ndarray:
    """unit(base_i + Σ_j w_ij refs[ids_ij]) with w = sim^alpha where sim > 0 and id ≥ 0, else 0."""
    from tqdm.auto import tqdm
    w = np.where((ids >= 0) & (sims > 0), np.power(np.clip(sims, 0, None), alpha), 0).astype(np.float32)
    safe = np.clip(ids, 0, None)
    out = np.empty_like(base)
    step = max(1, 2**24 // max(1, ids.shape[1] * refs.shape[1]))     # ≤ 64 MB of gathered rows per step
    for s in tqdm(range(0, len(base), step), desc=desc, disable=not progress, leave=False):
        e = slice(s, s + step)
        v = base[e] + np.einsum("qn,qnd->qd", w[e], refs[safe[e]])
        out[e] = v / np.linalg.norm(v, axis=1, keepdims=True)
    return out


def alpha_qe(queries, refs, sims, ids, n: int = 2, alpha: float = 3.0, *, progress: bool = False) -> np.ndarray:
    """Alpha query expansion: q' = unit(q + Σ_{i < n} sim_i^alpha · ref_{ids_i}), only sim_i > 0.

    Parameters
    ----------
    queries : (Q, D) float32 unit rows; refs : (R, D) float32 unit rows (the database that
        was searched, after :func:`dba` if it was applied).
    sims, ids : (Q, k) the first search's results (k ≥ n is not required: min(n, k) are used).
    n : neighbours expanded with (the query itself always has weight 1 = 1^alpha).
    alpha : weight exponent; large alpha trusts only the very close neighbours (alpha = 0
        is plain average QE).

    Returns
    -------
    (Q, D) float32 expanded queries, unit L2 norm.
    """
    q = check_embeddings(queries, "queries")
    r = check_embeddings(refs, "refs", dim=q.shape[1])
    sims, ids = np.asarray(sims, np.float32), np.asarray(ids, np.int64)
    if sims.shape != ids.shape or sims.ndim != 2 or len(ids) != len(q):
        raise ValueError(f"sims {sims.shape} and ids {ids.shape} must both be (Q, k) with Q = {len(q)} queries")
    if n < 0 or alpha < 0:
        raise ValueError(f"n and alpha must be >= 0, got n={n}, alpha={alpha}")
    if ids.size and ids.max() >= len(r):
        raise ValueError(f"ids refer to reference row {ids.max()} but refs has {len(r)} rows")
    m = min(int(n), ids.shape[1])
    return _weighted_sum(q, r, sims[:, :m], ids[:, :m], alpha, progress, "alpha-QE")


def dba(refs, n: int = 2, alpha: float = 3.0, *, kind: str = "auto", progress: bool = False,
        **index_kw) -> np.ndarray:
    """Database-side augmentation: ref_i' = unit(ref_i + Σ_{j ∈ top-n(i), j ≠ i} sim_ij^alpha · ref_j).

    The top ``n`` neighbours of each reference among the references (itself excluded) come
    from :func:`nnutils.scale.index.knn`; weights as in :func:`alpha_qe`.

    Parameters
    ----------
    refs : array-like, shape (R, D)
        Unit-norm reference embeddings.
    n : int, default 2
        Neighbours added per reference.
    alpha : float, default 3.0
        Exponent of the (cosine) weights.
    kind : str, default "auto"
        Index kind.
    progress : bool, default False
    **index_kw
        Passed to :func:`~nnutils.scale.index.knn`.

    Returns
    -------
    ndarray of float32, shape (R, D)
        Unit L2 norm, row i replacing ``refs[i]`` (row order kept).
    """
    r = check_embeddings(refs, "refs")
    if n < 0 or alpha < 0:
        raise ValueError(f"n and alpha must be >= 0, got n={n}, alpha={alpha}")
    if n == 0 or len(r) < 2:
        return r.copy()
    sims, ids = knn(r, int(n) + 1, kind, progress=progress, **index_kw)
    # drop each row's own id wherever it is (an exact twin can outrank it), keep the first n others
    order = np.argsort(ids == np.arange(len(r))[:, None], axis=1, kind="stable")[:, :int(n)]
    sims, ids = np.take_along_axis(sims, order, 1), np.take_along_axis(ids, order, 1)
    return _weighted_sum(r, r, sims, ids, alpha, progress, "DBA")


def _retrieve(queries, refs, k, qe, dba_kw, kind, progress):
    t0 = time.perf_counter()
    r = dba(refs, kind=kind, progress=progress, **dba_kw) if dba_kw is not None else check_embeddings(refs, "refs")
    index = build_index(r, kind, progress=progress)
    t1 = time.perf_counter()
    q = check_embeddings(queries, "queries", dim=r.shape[1])
    n_qe = int((qe or {}).get("n", 2)) if qe is not None else 0
    sims, ids = search(index, q, max(int(k), n_qe), progress=progress)
    if qe is not None:
        q2 = alpha_qe(q, r, sims, ids, progress=progress, **qe)
        sims, ids = search(index, q2, k, progress=progress)
    else:
        sims, ids = sims[:, :k], ids[:, :k]
    return sims, ids, dict(offline_s=t1 - t0, query_s=time.perf_counter() - t1)


def retrieve(queries, refs, k: int, *, qe: dict | None = None, dba: dict | None = None, kind: str = "auto",
             progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` references for each query, with optional DBA and alpha-QE.

    Parameters
    ----------
    queries (Q, D), refs (R, D) : float32 unit rows.
    k : results per query (clipped to R).
    qe : None (no query expansion) or keyword arguments of :func:`alpha_qe` (``{}`` for the
        defaults n=2, alpha=3): search, expand each query with its top n, search again.
    dba : None or keyword arguments of :func:`dba` (``{}`` for the defaults): the references
        are augmented first and everything then runs on the augmented ones.
    kind : the index kind (:func:`nnutils.scale.index.build_index`).

    Returns
    -------
    sims (Q, k') float32, ids (Q, k') int64 rows of ``refs``, k' = min(k, R). With QE or DBA
    the similarities are between the expanded query and the augmented references.
    """
    sims, ids, _ = _retrieve(queries, refs, k, qe, dba, kind, progress)
    return sims, ids


def compare_expansions(queries, refs, query_labels, ref_labels, k: int = 100,
                       settings: dict[str, dict] | None = None, *, kind: str = "auto",
                       progress: bool = False) -> pd.DataFrame:
    """mAP, recall@1/5/10 and query time of each retrieval setting on labelled data.

    Parameters
    ----------
    queries (Q, D), refs (R, D) : float32 unit rows; query_labels (Q,), ref_labels (R,):
        relevant = same label.
    k : results per query on which mAP is computed (a relevant reference beyond rank k
        counts as missed); must be ≥ 10 for recall@10 (or ≥ R).
    settings : ``{name: retrieve() keyword arguments}``; default :data:`DEFAULT_SETTINGS`
        ("baseline", "alpha-QE", "DBA", "DBA + alpha-QE" with default parameters).

    Returns
    -------
    DataFrame, one row per setting: ``setting``, ``mAP``, ``recall@1``, ``recall@5``,
    ``recall@10`` (those ≤ k'), ``ms_per_query`` (search + expansion + re-search, wall
    clock, per query), ``offline_s`` (DBA + index build, seconds, once per database).
    """
    settings = DEFAULT_SETTINGS if settings is None else settings
    rows = []
    for name, kw in settings.items():
        unknown = set(kw) - {"qe", "dba"}
        if unknown:
            raise ValueError(f"setting {name!r}: unknown keys {sorted(unknown)} (allowed: 'qe', 'dba')")
        sims, ids, t = _retrieve(queries, refs, k, kw.get("qe"), kw.get("dba"), kind, progress)
        ks = [x for x in (1, 5, 10) if x <= ids.shape[1]]
        rec = recall_at_k(ids, ks=ks, query_labels=query_labels, ref_labels=ref_labels)
        rows.append({"setting": name,
                     "mAP": mean_average_precision(ids, query_labels=query_labels, ref_labels=ref_labels),
                     **{f"recall@{x}": v for x, v in rec.items()},
                     "ms_per_query": 1000 * t["query_s"] / max(1, len(ids)), "offline_s": t["offline_s"]})
    return pd.DataFrame(rows)


def expansion_settings(qe_n: int = 2, dba_n: int = 2, alpha: float = 3.0) -> dict[str, dict]:
    """The four settings of :data:`DEFAULT_SETTINGS` with given neighbours and exponent.

    Parameters
    ----------
    qe_n : int
        Neighbours of alpha-QE (:func:`alpha_qe`'s ``n``).
    dba_n : int
        Neighbours of DBA (:func:`dba`'s ``n``).
    alpha : float
        The weight exponent of both.

    Returns
    -------
    dict
        ``{"baseline": {}, "alpha-QE": {"qe": ...}, "DBA": {"dba": ...}, "DBA + alpha-QE": {...}}``,
        :func:`retrieve` keyword arguments for :func:`compare_expansions`.
    """
    qe, db = dict(n=int(qe_n), alpha=float(alpha)), dict(n=int(dba_n), alpha=float(alpha))
    return {"baseline": {}, "alpha-QE": {"qe": qe}, "DBA": {"dba": db}, "DBA + alpha-QE": {"qe": qe, "dba": db}}


def pooled_embeddings(maps, poolings: Sequence[str], *, batch_size: int = 256) -> dict[str, np.ndarray]:
    """Embeddings of cached backbone feature maps under each pooling, without training.

    Parameters
    ----------
    maps : ndarray, shape (N, H, W, C)
        Feature maps of a backbone (e.g. :func:`nnutils.train.features.compute_features`).
    poolings : sequence of str
        Poolings of :func:`nnutils.models.heads.build_raw_top` (``gap``, ``gem``, ``rmac``, ``grid2``).
    batch_size : int
        Rows per predict batch.

    Returns
    -------
    dict of str to ndarray of float32, shape (N, D)
        ``{"pretrained, <pooling> pooling": unit rows}`` in the order of ``poolings``.
    """
    from nnutils.models.heads import build_raw_top   # Keras at import time
    maps = np.asarray(maps)
    out = {}
    for pooling in poolings:
        top = build_raw_top(tuple(maps.shape[1:]), pooling)
        out[f"pretrained, {pooling} pooling"] = top.predict(maps.astype("float32"), batch_size=batch_size, verbose=0)
    return out


def compare_poolings(embeddings: dict[str, np.ndarray], labels, is_query, k: int = 100,
                     settings: dict[str, dict] | None = None, *, ok=None, kind: str = "auto",
                     progress: bool = False) -> pd.DataFrame:
    """:func:`compare_expansions` for several embeddings of one labelled collection.

    The queries are the rows where ``is_query`` holds (e.g. each photo's original, role
    ``ref``), the references all other usable rows; a reference is relevant to a query when
    their labels are equal.

    Parameters
    ----------
    embeddings : dict of str to ndarray of float32, shape (N, D_e)
        Named unit-row embeddings of the same N images (e.g. a model's, and
        :func:`pooled_embeddings`); compared in the dict's order.
    labels : array-like, shape (N,)
        True group of each image (e.g. :func:`nnutils.data.tables.true_groups`).
    is_query : array-like of bool, shape (N,)
        Which images are queries.
    k : int
        Results per query (clipped to the number of references).
    settings : dict, optional
        :func:`compare_expansions`' settings; default :data:`DEFAULT_SETTINGS`.
    ok : array-like of bool, shape (N,), optional
        Usable rows (readable images); default all.
    kind, progress
        The index kind and progress bars (:func:`retrieve`).

    Returns
    -------
    DataFrame
        Index (``embedding``, ``setting``); columns of :func:`compare_expansions` (``mAP``,
        ``recall@1/5/10``, ``ms_per_query``, ``offline_s``).

    Raises
    ------
    ValueError
        When the shapes disagree, or there is no query or no reference.
    """
    labels = np.asarray(labels, dtype=object)
    n = len(labels)
    is_query = np.asarray(is_query, bool)
    ok = np.ones(n, bool) if ok is None else np.asarray(ok, bool)
    if is_query.shape != (n,) or ok.shape != (n,):
        raise ValueError(f"labels ({n}), is_query {is_query.shape} and ok {ok.shape} must have one length")
    q, r = np.flatnonzero(ok & is_query), np.flatnonzero(ok & ~is_query)
    if len(q) == 0 or len(r) == 0:
        raise ValueError(f"need queries and references, got {len(q)} queries and {len(r)} references")
    rows = []
    for name, e in embeddings.items():
        e = np.asarray(e)
        if len(e) != n:
            raise ValueError(f"embedding {name!r} has {len(e)} rows, labels has {n}")
        t = compare_expansions(e[q], e[r], labels[q], labels[r], k=min(int(k), len(r)), settings=settings,
                               kind=kind, progress=progress)
        rows.append(t.assign(embedding=name))
    return pd.concat(rows).set_index(["embedding", "setting"])
