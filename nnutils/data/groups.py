"""Groups of the same photo, a leak-free train/validation split, balanced pairs and triplets.

Positive pairs are an equivalence relation in disguise: if a~b and b~c then a, b and c
are re-posts of one photo. :func:`group_ids` recovers those groups as connected
components, and everything downstream works on groups, never on single pairs, so that
no photo is on both sides of a split.
"""
from __future__ import annotations

from collections import deque

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

__all__ = ["group_ids", "group_split", "balance_pairs", "make_triplets", "check_no_leak", "links_from_key"]


def _index(urls: pd.Series) -> tuple[pd.Index, dict]:
    uniq = pd.Index(pd.unique(urls))
    return uniq, {u: i for i, u in enumerate(uniq)}


def group_ids(pairs: pd.DataFrame, links: pd.DataFrame | None = None) -> pd.Series:
    """Connected components of the "same photo" graph.

    Every image in ``pairs`` gets a group, and images joined by a chain of ``is_same == 1``
    pairs share one.

    Parameters
    ----------
    pairs : DataFrame
        With ``image_url1``, ``image_url2`` and ``is_same``.
    links : DataFrame, optional
        Two columns ``image_url1, image_url2`` of edges known from elsewhere, e.g. crops of
        one source photo in the embedded data's metadata (:func:`links_from_key`).

    Returns
    -------
    Series of int
        Indexed by URL, named ``group``: group ids 0, 1, … numbered by first appearance.
    """
    urls = pd.concat([pairs.image_url1, pairs.image_url2], ignore_index=True)
    pos = pairs[pairs.is_same == 1][["image_url1", "image_url2"]]
    if links is not None:
        urls = pd.concat([urls, links.image_url1, links.image_url2], ignore_index=True)
        pos = pd.concat([pos, links[["image_url1", "image_url2"]]], ignore_index=True)
    uniq, idx = _index(urls)
    a = pos.image_url1.map(idx).to_numpy()
    b = pos.image_url2.map(idx).to_numpy()
    n = len(uniq)
    graph = coo_matrix((np.ones(len(a)), (a, b)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    # renumber by first appearance so ids are stable and readable
    _, first = np.unique(labels, return_index=True)
    order = np.argsort(np.argsort(first))
    return pd.Series(order[labels], index=uniq, name="group")


def group_split(pairs: pd.DataFrame, groups: pd.Series, val_fraction: float = 0.2,
                seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Split pairs into train and validation so that no group has images on both sides.

    Groups are taken in breadth-first order over the pair graph from a random start and
    put into validation until it holds ``val_fraction`` of the images, which keeps most
    negative pairs inside one side. A negative pair whose two groups land on different
    sides cannot be kept without leaking; it is returned in ``dropped``.

    Parameters
    ----------
    pairs : DataFrame
        With ``image_url1`` and ``image_url2`` (and ``is_same``).
    groups : Series of int
        URL → group id, as :func:`group_ids` returns; must cover every image of ``pairs``.
    val_fraction : float, default 0.2
        Share of the images (not pairs) to put in validation, in (0, 1).
    seed : int, default 0
        Seed of the start order and the breadth-first tie-breaking.

    Returns
    -------
    train : DataFrame
        Pairs with both images on the train side (index reset).
    val : DataFrame
        Pairs with both images on the validation side (index reset).
    dropped : DataFrame
        Pairs across the split, with ``reason = "crosses split"``.

    Raises
    ------
    ValueError
        When ``val_fraction`` is not in (0, 1) or an image of ``pairs`` has no group.
    """
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    g1 = pairs.image_url1.map(groups).to_numpy()
    g2 = pairs.image_url2.map(groups).to_numpy()
    if np.isnan(g1.astype(float)).any() or np.isnan(g2.astype(float)).any():
        raise ValueError("every image of `pairs` needs a group: compute groups with group_ids(pairs)")
    n_groups = int(groups.max()) + 1
    size = np.bincount(groups.to_numpy(), minlength=n_groups)
    adj: list[set] = [set() for _ in range(n_groups)]
    for a, b in zip(g1, g2):
        if a != b:
            adj[a].add(b)
            adj[b].add(a)
    rng = np.random.default_rng(seed)
    target = val_fraction * size.sum()
    in_val = np.zeros(n_groups, bool)
    taken, seen = 0, np.zeros(n_groups, bool)
    for start in rng.permutation(n_groups):
        if taken >= target:
            break
        if seen[start]:
            continue
        queue = deque([start])
        seen[start] = True
        while queue and taken < target:
            g = queue.popleft()
            in_val[g] = True
            taken += size[g]
            for nb in sorted(adj[g], key=lambda _: rng.random()):
                if not seen[nb]:
                    seen[nb] = True
                    queue.append(nb)
    v1, v2 = in_val[g1], in_val[g2]
    train = pairs[~v1 & ~v2].reset_index(drop=True)
    val = pairs[v1 & v2].reset_index(drop=True)
    dropped = pairs[v1 != v2].assign(reason="crosses split").reset_index(drop=True)
    return train, val, dropped


def check_no_leak(train: pd.DataFrame, val: pd.DataFrame, groups: pd.Series) -> None:
    """Raise ``AssertionError`` naming the groups found on both sides of a split.

    Parameters
    ----------
    train, val : DataFrame
        Pair tables with ``image_url1`` and ``image_url2``.
    groups : Series of int
        URL → group id (:func:`group_ids`).

    Raises
    ------
    AssertionError
        When a group has images in both tables (the message gives their number and up to 5).
    """
    def gset(df):
        return set(df.image_url1.map(groups)) | set(df.image_url2.map(groups))
    both = gset(train) & gset(val)
    if both:
        raise AssertionError(f"{len(both)} group(s) on both sides of the split, e.g. {sorted(both)[:5]}")


def balance_pairs(pairs: pd.DataFrame, negatives_per_positive: float = 1.0, seed: int = 0) -> pd.DataFrame:
    """All positive pairs plus a random sample of ``negatives_per_positive`` × as many negatives.

    Use it for training only: validation keeps the natural class balance, since F1 depends
    on it. If there are fewer negatives than asked for, all are kept.

    Parameters
    ----------
    pairs : DataFrame
        With ``is_same``.
    negatives_per_positive : float, default 1.0
        Negatives kept per positive.
    seed : int, default 0
        Seed of the sample and the shuffle.

    Returns
    -------
    DataFrame
        The kept pairs, shuffled, index reset.
    """
    pos = pairs[pairs.is_same == 1]
    neg = pairs[pairs.is_same == 0]
    k = min(len(neg), int(round(len(pos) * negatives_per_positive)))
    out = pd.concat([pos, neg.sample(n=k, random_state=seed)])
    return out.sample(frac=1.0, random_state=seed + 1).reset_index(drop=True)


def make_triplets(pairs: pd.DataFrame, groups: pd.Series, hard_fraction: float = 0.5,
                  both_directions: bool = True, seed: int = 0) -> pd.DataFrame:
    """Anchor/positive/negative triplets from labelled pairs.

    Every positive pair (a, p) gives a triplet (and (p, a) too when ``both_directions``).
    The negative is *hard* with probability ``hard_fraction`` when the anchor has a
    labelled negative partner (an image the data says is a different photo, which in LUN
    was chosen to look alike), otherwise *random*: any image of another group.

    Parameters
    ----------
    pairs : DataFrame
        With ``image_url1``, ``image_url2`` and ``is_same``.
    groups : Series of int
        URL → group id (:func:`group_ids`); random negatives come from other groups.
    hard_fraction : float, default 0.5
        Probability in [0, 1] of a hard negative when one is available.
    both_directions : bool, default True
        Also use each positive pair reversed.
    seed : int, default 0
        Seed of the negative draws.

    Returns
    -------
    DataFrame
        Columns ``anchor, positive, negative`` (URLs) and ``negative_kind``
        (``"hard"`` | ``"random"``).
    """
    rng = np.random.default_rng(seed)
    pos = pairs[pairs.is_same == 1]
    neg = pairs[pairs.is_same == 0]
    partners: dict[str, list[str]] = {}
    for a, b in zip(neg.image_url1, neg.image_url2):
        partners.setdefault(a, []).append(b)
        partners.setdefault(b, []).append(a)
    anchors = list(zip(pos.image_url1, pos.image_url2))
    if both_directions:
        anchors += [(p, a) for a, p in anchors]
    all_urls = groups.index.to_numpy()
    all_groups = groups.to_numpy()
    rows = []
    for a, p in anchors:
        ga = groups[a]
        hard = [n for n in partners.get(a, ()) if groups[n] != ga]
        if hard and rng.random() < hard_fraction:
            rows.append((a, p, hard[int(rng.integers(len(hard)))], "hard"))
            continue
        for _ in range(100):
            j = int(rng.integers(len(all_urls)))
            if all_groups[j] != ga:
                rows.append((a, p, all_urls[j], "random"))
                break
    return pd.DataFrame(rows, columns=["anchor", "positive", "negative", "negative_kind"])


def links_from_key(images: pd.DataFrame, key: str, url_col: str = "file") -> pd.DataFrame:
    """Edges that chain together all images sharing a value of ``key`` (for :func:`group_ids`'s ``links``).

    E.g. the embedded data's ``images.csv`` with ``key="photo_id"`` links every crop and
    re-post of one source photo, so a split keeps them on one side.

    Parameters
    ----------
    images : DataFrame
        One row per image, with columns ``key`` and ``url_col``.
    key : str
        The column whose equal values join images.
    url_col : str, default "file"
        The column holding the image URL or path.

    Returns
    -------
    DataFrame
        Columns ``image_url1, image_url2``: for each value of ``key``, a chain of ``n - 1``
        edges through its ``n`` images.
    """
    rows = []
    for _, grp in images.groupby(key, sort=False):
        urls = grp[url_col].tolist()
        rows += list(zip(urls[:-1], urls[1:]))
    return pd.DataFrame(rows, columns=["image_url1", "image_url2"])
