"""Groups of duplicates from nearest-neighbour links: edges, components, and choosing the settings.

:func:`neighbour_edges` keeps the kNN links at or above a threshold (with Shopee's ``min2``
and a mutual-neighbour option), :func:`connected_groups` joins them into groups (transitive:
one wrong link merges two groups), :func:`star_groups` forms groups that do not chain (every
member is linked to its group's centre), :func:`constrained_groups` splits components so that
no "not the same" pair (a cannot-link mark) ends up in one group, and :func:`group_edges` is
the one entry point for all three,
:func:`rowwise_f1` scores a grouping (the Shopee metric) and :func:`sweep_grouping` scores a
grid of settings from one kNN search. :func:`choose_grouping` picks the threshold and
variant on one part of a labelled collection (the train images) and judges them on another
(the test images); :func:`hash_grouping` does the same for the perceptual hash, the
baseline; :func:`grouping_table` puts the choices side by side. The settings chosen on
labelled data are saved to ``<run_dir>/grouping.json`` (:func:`save_grouping`,
:meth:`GroupingChoice.save`).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from nnutils.decide.hashes import hash_images, hash_vectors
from nnutils.scale.index import knn

#: The grouping variants :func:`choose_grouping` chooses between: the edge rule (``min2``,
#: ``mutual``) and, with ``star``, groups that do not chain (:func:`star_groups`) instead of
#: connected components.
VARIANTS = ("plain", "min2", "mutual", "mutual+min2", "star", "min2+star")
_CHAINING = ("plain", "min2", "mutual", "mutual+min2")


def _check_variant(variant: str) -> str:
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r} (one of {VARIANTS})")
    return variant


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
    """Group label per item: the connected components of ``edges``.

    Labels are 0..G-1, numbered by decreasing group size then by first member, so label 0 is
    the largest group. Items without an edge are groups of one.

    Parameters
    ----------
    n : int
        Number of items.
    edges : DataFrame
        Columns ``i``, ``j`` (item indices in 0..n-1).

    Returns
    -------
    ndarray of int64, shape (n,)

    Raises
    ------
    ValueError
        When an edge refers to an item outside 0..n-1.
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
    return _relabel(lab)


def _relabel(lab: np.ndarray) -> np.ndarray:
    """Labels 0..G-1 by decreasing group size, then by first member (label 0: the largest group)."""
    lab = np.asarray(lab, np.int64)
    n = len(lab)
    if n == 0:
        return np.zeros(0, np.int64)
    _, lab = np.unique(lab, return_inverse=True)
    lab = lab.reshape(-1)
    sizes = np.bincount(lab)
    first = np.full(len(sizes), n)
    np.minimum.at(first, lab, np.arange(n))
    order = np.lexsort((first, -sizes))           # largest first, ties by first member
    relabel = np.empty_like(order)
    relabel[order] = np.arange(len(order))
    return relabel[lab].astype(np.int64)


def _edge_arrays(n: int, edges: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``i``, ``j`` (int64) and ``similarity`` (float64; 1.0 when absent) of ``edges``, checked against ``n``."""
    if len(edges) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float64)
    i, j = edges["i"].to_numpy(np.int64), edges["j"].to_numpy(np.int64)
    s = edges["similarity"].to_numpy(np.float64) if "similarity" in edges else np.ones(len(i))
    if i.min() < 0 or j.min() < 0 or max(i.max(), j.max()) >= n:
        raise ValueError(f"edges refer to items outside 0..{n - 1}")
    return i, j, s


def _cannot_link_pairs(n: int, cannot_link) -> np.ndarray:
    """(M, 2) int64 item pairs from a DataFrame with ``i``, ``j`` or any (M, 2) array-like; checked."""
    if cannot_link is None:
        return np.zeros((0, 2), np.int64)
    if isinstance(cannot_link, pd.DataFrame):
        cl = cannot_link[["i", "j"]].to_numpy(np.int64)
    else:
        cl = np.asarray(list(cannot_link), np.int64).reshape(-1, 2)
    if len(cl) and (cl.min() < 0 or cl.max() >= n):
        raise ValueError(f"cannot-link pairs refer to items outside 0..{n - 1}")
    if len(cl) and (cl[:, 0] == cl[:, 1]).any():
        raise ValueError("a cannot-link pair joins an item with itself")
    return cl


def _partners(cl: np.ndarray) -> dict[int, set]:
    out: dict[int, set] = {}
    for a, b in cl.tolist():
        out.setdefault(a, set()).add(b)
        out.setdefault(b, set()).add(a)
    return out


def star_groups(n: int, edges: pd.DataFrame, cannot_link=None) -> np.ndarray:
    """Groups that do not chain: every member is linked by an edge to its group's centre.

    Greedy star clustering: items are taken in order of decreasing degree (then decreasing
    sum of edge similarities, then index); an item not yet in a group becomes a centre and
    takes every neighbour not yet in a group, the most similar first. A chain a–b–c–d–e,
    which connected components make one group, becomes {a, b, c} and {d, e}: an image joins
    a group only through a direct link to its centre, never through a third image.

    Parameters
    ----------
    n : int
        Number of items.
    edges : DataFrame
        Columns ``i``, ``j`` (items in 0..n-1) and optionally ``similarity`` (cosine; ties
        in degree are broken by it, and a centre takes its closest neighbours first).
    cannot_link : DataFrame or array-like of shape (M, 2), optional
        Item pairs that must not share a group: a neighbour is skipped when it is marked
        against the centre or against a member already taken.

    Returns
    -------
    ndarray of int64, shape (n,)
        Labels numbered as :func:`connected_groups` (0 = the largest group).

    Raises
    ------
    ValueError
        When an edge or cannot-link pair refers to an item outside 0..n-1.
    """
    i, j, s = _edge_arrays(n, edges)
    partners = _partners(_cannot_link_pairs(n, cannot_link))
    if n == 0:
        return np.zeros(0, np.int64)
    keep = i != j
    i, j, s = i[keep], j[keep], s[keep]
    src, dst, w = np.concatenate([i, j]), np.concatenate([j, i]), np.concatenate([s, s])
    deg = np.bincount(src, minlength=n)
    wsum = np.bincount(src, weights=w, minlength=n)
    by = np.lexsort((dst, -w, src))                    # adjacency rows, the most similar neighbour first
    dst = dst[by]
    start = np.concatenate([[0], np.cumsum(deg)])
    lab = np.full(n, -1, np.int64)
    g = 0
    for c in np.lexsort((np.arange(n), -wsum, -deg)).tolist():
        if deg[c] == 0:
            break                                     # the rest have no edge: groups of one
        if lab[c] >= 0:
            continue
        lab[c] = g
        banned = set(partners.get(c, ()))
        for v in dst[start[c]:start[c + 1]].tolist():
            if lab[v] < 0 and v not in banned:
                lab[v] = g
                banned |= partners.get(v, set())
        g += 1
    alone = np.flatnonzero(lab < 0)
    lab[alone] = g + np.arange(len(alone))
    return _relabel(lab)


def constrained_groups(n: int, edges: pd.DataFrame, cannot_link=None, labels=None) -> np.ndarray:
    """Connected components split so that no cannot-link pair shares a group, even through a third item.

    Components without a marked pair are kept as they are. In a component that holds both
    items of a marked pair, the edges are joined again one by one, the most similar first
    (single linkage, Kruskal's order), and an edge is skipped when it would put a marked pair
    in one group; so the component splits at its weakest links between the two marked items.

    Parameters
    ----------
    n : int
        Number of items.
    edges : DataFrame
        Columns ``i``, ``j`` (items in 0..n-1) and optionally ``similarity``.
    cannot_link : DataFrame or array-like of shape (M, 2), optional
        Item pairs marked "not the same" (e.g. by a user).
    labels : ndarray of int, shape (n,), optional
        A grouping of ``edges`` to split instead of its connected components (e.g. from
        :func:`star_groups`); only edges inside a group are used to rejoin it.

    Returns
    -------
    ndarray of int64, shape (n,)
        Labels numbered as :func:`connected_groups`.

    Raises
    ------
    ValueError
        When an edge or pair refers to an item outside 0..n-1, or ``labels`` is not of length n.
    """
    i, j, s = _edge_arrays(n, edges)
    cl = _cannot_link_pairs(n, cannot_link)
    lab = connected_groups(n, edges) if labels is None else np.asarray(labels, np.int64).copy()
    if len(lab) != n:
        raise ValueError(f"labels has length {len(lab)}, expected {n}")
    if not len(cl):
        return _relabel(lab)
    bad = np.unique(lab[cl[:, 0]][lab[cl[:, 0]] == lab[cl[:, 1]]])
    if not len(bad):
        return _relabel(lab)
    partners = _partners(cl)
    parent = np.arange(n)

    def find(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    inside = np.isin(lab[i], bad) & (lab[i] == lab[j])
    order = np.lexsort((j[inside], i[inside], -s[inside]))
    ei, ej = i[inside][order].tolist(), j[inside][order].tolist()
    members = {x: {x} for x in np.flatnonzero(np.isin(lab, bad)).tolist()}
    for a, b in zip(ei, ej):
        ra, rb = find(a), find(b)
        if ra == rb:
            continue
        ma, mb = members[ra], members[rb]
        if len(ma) > len(mb):
            ra, rb, ma, mb = rb, ra, mb, ma
        if any(partners.get(x, set()) & mb for x in ma):
            continue                                   # would join a marked pair
        parent[ra] = rb
        mb |= ma
        del members[ra]
    out = lab.copy()
    top = int(lab.max()) + 1 if n else 0
    for x in members:                                   # one new label per part of a split group
        for y in members[x]:
            out[y] = top
        top += 1
    return _relabel(out)


def group_edges(n: int, edges: pd.DataFrame, *, star: bool = False, cannot_link=None) -> np.ndarray:
    """Group labels from duplicate links: connected components or stars, split by cannot-link marks.

    The one grouping step of :func:`~nnutils.scale.dedup.find_duplicates`,
    :func:`sweep_grouping` and :class:`~nnutils.scale.collection.Collection`.

    Parameters
    ----------
    n : int
        Number of items.
    edges : DataFrame
        ``i``, ``j`` and ``similarity`` (:func:`neighbour_edges`).
    star : bool, default False
        :func:`star_groups` (no chaining) instead of :func:`connected_groups`.
    cannot_link : DataFrame or array-like of shape (M, 2), optional
        Pairs never put in one group (:func:`constrained_groups`).

    Returns
    -------
    ndarray of int64, shape (n,)
        Labels numbered as :func:`connected_groups` (0 = the largest group).
    """
    if star:
        return star_groups(n, edges, cannot_link)
    if cannot_link is None or len(cannot_link) == 0:
        return connected_groups(n, edges)
    return constrained_groups(n, edges, cannot_link)


def rowwise_f1(pred_labels, true_labels) -> float:
    """Kaggle Shopee metric: mean over items of F1(predicted group, true group), each containing the item.

    For item i with predicted set P_i and true set T_i (both include i),
    F1_i = 2·|P_i ∩ T_i| / (|P_i| + |T_i|). Singletons predicted as singletons score 1.

    Parameters
    ----------
    pred_labels, true_labels : array-like, shape (N,)
        Group labels of any hashable dtype.

    Returns
    -------
    float
        In [0, 1]; NaN when N is 0.

    Raises
    ------
    ValueError
        When the two differ in length.
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
                   variants: Sequence[str] = _CHAINING) -> pd.DataFrame:
    """Row-wise F1 of the groups for every threshold × variant, from one self-kNN.

    Parameters
    ----------
    sims, ids : ndarray, shape (N, k)
        Self-kNN similarities (float32 cosine) and neighbour rows (int64).
    truth : array-like, shape (N,)
        True group labels.
    thresholds : sequence of float
        Cosine thresholds.
    min2_margin : float, default 0.05
        ``min2`` keeps the nearest neighbour down to ``threshold - min2_margin``.
    variants : sequence of str
        Any of :data:`VARIANTS`: ``plain``, ``min2``, ``mutual`` and ``mutual+min2`` join the
        links into connected components (default: these four); ``star`` and ``min2+star``
        form groups that do not chain (:func:`star_groups`).

    Returns
    -------
    DataFrame
        One row per threshold × variant: ``threshold``, ``variant``, ``rowwise_f1``,
        ``groups`` (of two or more), ``largest`` (size of the largest group), ``edges``.

    Raises
    ------
    ValueError
        For an unknown variant.
    """
    rows = []
    for t in thresholds:
        for v in variants:
            _check_variant(v)
            e = neighbour_edges(sims, ids, t, min2="min2" in v, min2_threshold=t - min2_margin,
                                mutual="mutual" in v)
            lab = group_edges(len(ids), e, star="star" in v)
            size = np.bincount(lab)
            rows.append(dict(threshold=float(t), variant=v, rowwise_f1=rowwise_f1(lab, truth),
                             groups=int((size >= 2).sum()), largest=int(size.max()) if len(size) else 0,
                             edges=len(e)))
    return pd.DataFrame(rows)


def save_grouping(run_dir, *, threshold: float, variant: str, k: int, min2_margin: float = 0.05, **extra) -> Path:
    """Record the grouping settings chosen on labelled data in ``<run_dir>/grouping.json``.

    :func:`find_duplicates` given this run folder uses these settings unless told otherwise.

    Parameters
    ----------
    run_dir : str or Path
        The run folder.
    threshold : float
        Cosine threshold.
    variant : str
        One of :data:`VARIANTS`.
    k : int
        Neighbours per item.
    min2_margin : float, default 0.05
    **extra
        Further JSON-serialisable fields (e.g. row-wise F1).

    Returns
    -------
    Path

    Raises
    ------
    ValueError
        For an unknown variant.
    """
    _check_variant(variant)
    path = Path(run_dir) / "grouping.json"
    path.write_text(json.dumps(dict(threshold=float(threshold), variant=variant, k=int(k),
                                    min2_margin=float(min2_margin), **extra), indent=2))
    return path


def read_grouping(run_dir) -> dict | None:
    """The settings :func:`save_grouping` wrote, or None.

    Parameters
    ----------
    run_dir : str or Path
        The run folder.

    Returns
    -------
    dict or None
    """
    path = Path(run_dir) / "grouping.json"
    return json.loads(path.read_text()) if path.is_file() else None


def grouping_options(run_dir) -> dict:
    """:func:`find_duplicates` keyword arguments from ``<run_dir>/grouping.json``.

    Parameters
    ----------
    run_dir : str or Path
        The run folder.

    Returns
    -------
    dict
        ``threshold``, ``k``, ``min2``, ``mutual``, ``min2_margin``, and ``star=True`` when
        the variant does not chain (:func:`star_groups`); ``{}`` when the file is absent.
    """
    g = read_grouping(run_dir)
    if not g:
        return {}
    out = dict(threshold=g["threshold"], k=g["k"], min2="min2" in g["variant"], mutual="mutual" in g["variant"],
               min2_margin=g.get("min2_margin", 0.05))
    if "star" in g["variant"]:
        out["star"] = True
    return out


# ----------------------------------------------------------------------------- choosing on labelled data
def sweep_rows(embeddings, rows, truth, thresholds: Sequence[float], *, k: int, min2_margin: float = 0.05,
               variants: Sequence[str] = VARIANTS) -> pd.DataFrame:
    """:func:`sweep_grouping` on a subset of a collection, with its own self-kNN.

    Parameters
    ----------
    embeddings : ndarray of float32, shape (N, D)
        Unit rows of the whole collection.
    rows : ndarray of int, shape (M,)
        The rows forming the sub-collection (grouped among themselves only).
    truth : array-like, shape (N,)
        True group labels of the whole collection.
    thresholds : sequence of float
        Similarity thresholds to try.
    k : int
        Neighbours per image (clipped to M).
    min2_margin, variants
        See :func:`sweep_grouping`.

    Returns
    -------
    DataFrame
        :func:`sweep_grouping`'s table for the M images (empty when M = 0).
    """
    rows = np.asarray(rows, np.int64)
    if len(rows) == 0:
        return pd.DataFrame(columns=["threshold", "variant", "rowwise_f1", "groups", "largest", "edges"])
    s, i = knn(np.asarray(embeddings)[rows], min(int(k), len(rows)))
    return sweep_grouping(s, i, np.asarray(truth, dtype=object)[rows], thresholds, min2_margin=min2_margin,
                          variants=variants)


@dataclass
class GroupingChoice:
    """Grouping settings chosen on labelled train images and judged on test images.

    Attributes
    ----------
    threshold, variant : the chosen settings (the best train row-wise F1; the first of ties
        in the sweep's order: thresholds ascending, variants as given).
    train_rowwise_f1 : row-wise F1 on the train images at the chosen settings.
    test_rowwise_f1 : row-wise F1 on the test images at the chosen settings (NaN without test images).
    test_rowwise_f1_pair_threshold : row-wise F1 on the test images, variant ``plain``, at
        ``pair_threshold`` (None when no pair threshold was given).
    pair_threshold : the pair decision's threshold, or None.
    sweep : the train sweep, :func:`sweep_grouping`'s table (for the plot).
    k, min2_margin : the settings the sweep used.
    n_train, n_test : images in each part.
    """

    threshold: float
    variant: str
    train_rowwise_f1: float
    test_rowwise_f1: float
    test_rowwise_f1_pair_threshold: float | None
    pair_threshold: float | None
    sweep: pd.DataFrame
    k: int
    min2_margin: float
    n_train: int
    n_test: int

    def save(self, run_dir, **extra) -> Path:
        """:func:`save_grouping` with these settings and their train / test row-wise F1.

        Parameters
        ----------
        run_dir : str or Path
            The run folder.
        **extra
            Further fields for ``grouping.json``.

        Returns
        -------
        Path
        """
        return save_grouping(run_dir, threshold=self.threshold, variant=self.variant, k=self.k,
                             min2_margin=self.min2_margin, train_rowwise_f1=float(self.train_rowwise_f1),
                             test_rowwise_f1=float(self.test_rowwise_f1), **extra)

    def curves(self) -> pd.DataFrame:
        """The train sweep as a table threshold × variant of row-wise F1.

        Returns
        -------
        DataFrame
            Index: thresholds; columns: variants.
        """
        return self.sweep.pivot(index="threshold", columns="variant", values="rowwise_f1")


def choose_grouping(embeddings, truth, part, thresholds: Sequence[float], *, k: int, min2_margin: float = 0.05,
                    ok=None, pair_threshold: float | None = None,
                    variants: Sequence[str] = VARIANTS) -> GroupingChoice:
    """Choose the grouping threshold and variant on the train images, judge them on the test images.

    The train images and the test images are two separate collections: each gets its own
    self-kNN (``k`` neighbours) and its groups are formed among its own images only.

    Parameters
    ----------
    embeddings : ndarray of float32, shape (N, D)
        Unit rows (an embedding model's, or :func:`nnutils.decide.hashes.hash_vectors`).
    truth : array-like, shape (N,)
        True group labels (e.g. :func:`nnutils.data.tables.true_groups`).
    part : array-like of str, shape (N,)
        ``"train"`` or ``"test"`` per image (e.g. :func:`nnutils.data.tables.image_column`
        of ``split``); other values are in neither part.
    thresholds : sequence of float
        The similarity thresholds tried on the train images.
    k : int
        Neighbours per image.
    min2_margin : float
        ``min2`` keeps the nearest neighbour down to ``threshold - min2_margin``.
    ok : array-like of bool, shape (N,), optional
        Usable rows (readable images); default all.
    pair_threshold : float, optional
        Also report the test row-wise F1 of variant ``plain`` at this threshold.
    variants : sequence of str
        The variants tried (:func:`sweep_grouping`).

    Returns
    -------
    GroupingChoice

    Raises
    ------
    ValueError
        When the shapes disagree or there is no usable train image.
    """
    n = len(embeddings)
    part = np.asarray(part, dtype=object)
    ok = np.ones(n, bool) if ok is None else np.asarray(ok, bool)
    if len(part) != n or len(ok) != n or len(truth) != n:
        raise ValueError(f"embeddings ({n}), truth ({len(truth)}), part ({len(part)}) and ok ({len(ok)}) "
                         "must have one length")
    tr, te = np.flatnonzero(ok & (part == "train")), np.flatnonzero(ok & (part == "test"))
    if len(tr) == 0:
        raise ValueError("no usable train image to choose the grouping on")
    sw = sweep_rows(embeddings, tr, truth, thresholds, k=k, min2_margin=min2_margin, variants=variants)
    best = sw.loc[sw.rowwise_f1.idxmax()]
    test_f1, test_pair = float("nan"), None
    if len(te):
        s, i = knn(np.asarray(embeddings)[te], min(int(k), len(te)))
        t_truth = np.asarray(truth, dtype=object)[te]
        test_f1 = float(sweep_grouping(s, i, t_truth, [best.threshold], min2_margin=min2_margin,
                                       variants=[best.variant]).rowwise_f1.iloc[0])
        if pair_threshold is not None:
            test_pair = float(sweep_grouping(s, i, t_truth, [pair_threshold], min2_margin=min2_margin,
                                             variants=["plain"]).rowwise_f1.iloc[0])
    elif pair_threshold is not None:
        test_pair = float("nan")
    return GroupingChoice(threshold=float(best.threshold), variant=str(best.variant),
                          train_rowwise_f1=float(best.rowwise_f1), test_rowwise_f1=test_f1,
                          test_rowwise_f1_pair_threshold=test_pair,
                          pair_threshold=None if pair_threshold is None else float(pair_threshold),
                          sweep=sw, k=int(k), min2_margin=float(min2_margin), n_train=len(tr), n_test=len(te))


def hash_thresholds(n: int) -> np.ndarray:
    """``n`` thresholds for grouping by hash vectors: 0.5 … 0.95, rounded to 4 decimals.

    The dot product of two :func:`~nnutils.decide.hashes.hash_vectors` is
    ``1 - 2 · Hamming / bits``, so 0.5 … 0.95 is a Hamming distance of 16 … 1.6 bits of 64.

    Parameters
    ----------
    n : int

    Returns
    -------
    ndarray of float, shape (n,)
    """
    return np.round(np.linspace(0.5, 0.95, int(n)), 4)


def hash_grouping(paths: Sequence[str], truth, part, thresholds: Sequence[float] | None = None, *, k: int,
                  min2_margin: float = 0.05, hashes: dict | None = None, kind: str = "phash",
                  progress: bool = False, variants: Sequence[str] = VARIANTS) -> GroupingChoice:
    """The perceptual-hash baseline, grouped by the same machinery as :func:`choose_grouping`.

    Parameters
    ----------
    paths : sequence of str, length N
        Image files.
    truth, part, k, min2_margin, variants
        As in :func:`choose_grouping`.
    thresholds : sequence of float, optional
        Thresholds on the hash vectors' dot product; default :func:`hash_thresholds` (12).
    hashes : dict, optional
        ``{path: bits}`` from :func:`nnutils.decide.hashes.hash_images`, computed when absent.
    kind : str
        The hash (``phash``, ...) when computing them.
    progress : bool
        Show a progress bar while hashing.

    Returns
    -------
    GroupingChoice
        Unreadable images (no hash) are left out of both parts; ``pair_threshold`` is None.
    """
    paths = [str(p) for p in paths]
    if hashes is None:
        hashes = hash_images(paths, kind=kind, progress=progress)
    hv, hok = hash_vectors(hashes, paths)
    thresholds = hash_thresholds(12) if thresholds is None else thresholds
    return choose_grouping(hv, truth, part, thresholds, k=k, min2_margin=min2_margin, ok=hok, variants=variants)


def grouping_table(choices: dict[str, GroupingChoice]) -> pd.DataFrame:
    """The choices side by side, one row per name (e.g. the model and ``"pHash"``).

    Parameters
    ----------
    choices : dict of str to GroupingChoice

    Returns
    -------
    DataFrame
        Index the names; columns ``threshold (chosen on train)``, ``variant``,
        ``train row-wise F1``, ``test row-wise F1`` and ``test F1, plain, pair threshold``
        (NaN for a choice made without a pair threshold).
    """
    return pd.DataFrame({
        "threshold (chosen on train)": [c.threshold for c in choices.values()],
        "variant": [c.variant for c in choices.values()],
        "train row-wise F1": [c.train_rowwise_f1 for c in choices.values()],
        "test row-wise F1": [c.test_rowwise_f1 for c in choices.values()],
        "test F1, plain, pair threshold": [np.nan if c.test_rowwise_f1_pair_threshold is None
                                           else c.test_rowwise_f1_pair_threshold for c in choices.values()],
    }, index=list(choices))
