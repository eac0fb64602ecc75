"""Hard examples: P×K batches of groups for online mining, and mined hard negatives.

:func:`pk_indices` draws batches of P groups × K images (optionally pairing each group with
the groups it is confused with); :func:`mine_hard_negatives` finds each image's nearest
images from other groups; :func:`confusable_groups` turns those into the confuser map.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from nnutils.train.features import FeatureBank


def mine_hard_negatives(emb: np.ndarray, bank: FeatureBank, urls: Sequence[str], groups: pd.Series,
                        per_anchor: int = 2, seed: int = 0) -> pd.DataFrame:
    """For each image with a group mate, its ``per_anchor`` nearest images from other groups.

    The positive is drawn from the anchor's group: the triplets are the hardest mistakes
    the model can make. Unreadable images are left out.

    Parameters
    ----------
    emb : ndarray of float32, shape (N, D)
        L2-normalised embeddings of the bank's rows.
    bank : FeatureBank
        Maps URLs to rows of ``emb``.
    urls : sequence of str, length M
        The images mined among (memory: an (M, M) float matrix).
    groups : Series of int
        URL → group id.
    per_anchor : int, default 2
        Negatives per anchor.
    seed : int, default 0
        Seed of the positive draws.

    Returns
    -------
    DataFrame
        Columns ``anchor, positive, negative`` (URLs), ``negative_kind`` (``"mined"``) and
        ``similarity`` (float cosine in [-1, 1] of anchor and negative).
    """
    rng = np.random.default_rng(seed)
    urls = [u for u in urls if bank.ok[bank.index[u]]]
    g = groups.reindex(urls).to_numpy()
    e = emb[bank.rows(urls)]
    sims = e @ e.T
    sims[g[:, None] == g[None, :]] = -np.inf
    rows = []
    for i, u in enumerate(urls):
        mates = np.flatnonzero(g == g[i])
        mates = mates[mates != i]
        if not len(mates):
            continue
        for j in np.argsort(-sims[i])[:per_anchor]:
            rows.append((u, urls[int(rng.choice(mates))], urls[int(j)], "mined", float(sims[i, j])))
    return pd.DataFrame(rows, columns=["anchor", "positive", "negative", "negative_kind", "similarity"])


def confusable_groups(mined: pd.DataFrame, groups: pd.Series) -> dict[int, list[int]]:
    """Group → the groups of its mined hard negatives (both directions), for :func:`train_online`.

    Parameters
    ----------
    mined : DataFrame
        With ``anchor`` and ``negative`` URLs (:func:`mine_hard_negatives`).
    groups : Series of int
        URL → group id.

    Returns
    -------
    dict of int to list of int
        Sorted confusable groups per group.
    """
    out: dict[int, set] = {}
    for a, n in zip(mined.anchor.map(groups), mined.negative.map(groups)):
        out.setdefault(int(a), set()).add(int(n))
        out.setdefault(int(n), set()).add(int(a))
    return {g: sorted(v) for g, v in out.items()}


def pk_indices(groups: Sequence[int], p: int, k: int, n_batches: int, seed: int = 0,
               confusers: dict | None = None) -> np.ndarray:
    """Row indices for ``n_batches`` batches of ``p`` groups × ``k`` rows each, flattened.

    Only groups with at least two rows are drawn (an anchor needs a positive); a group
    smaller than ``k`` is sampled with replacement. Feed the result to ``fit`` with
    ``batch_size = p * k`` and ``shuffle=False`` so each batch keeps its P×K structure.

    ``confusers`` maps a group to groups the model confuses it with (from mined hard
    negatives): then after each drawn group one of its confusers (when available) is added,
    so online mining meets those hard negatives inside the batch.

    Parameters
    ----------
    groups : sequence of int, length N
        Group id of each row.
    p : int
        Groups per batch (at most the number of eligible groups).
    k : int
        Rows per group.
    n_batches : int
        Batches to draw.
    seed : int, default 0
        Seed of the draws.
    confusers : dict, optional
        Group → confusable groups.

    Returns
    -------
    ndarray of int, shape (n_batches * p * k,)
        Row indices into ``groups``, batch after batch.

    Raises
    ------
    ValueError
        When fewer than two groups have two or more rows.
    """
    groups = np.asarray(groups)
    rng = np.random.default_rng(seed)
    members: dict[int, np.ndarray] = {}
    for g in np.unique(groups):
        idx = np.flatnonzero(groups == g)
        if len(idx) >= 2:
            members[int(g)] = idx
    keys = np.array(sorted(members))
    if len(keys) < 2:
        raise ValueError("online mining needs at least two groups with two or more images each")
    p = min(p, len(keys))
    out = []
    for _ in range(n_batches):
        chosen: list[int] = []
        for g in rng.permutation(keys):
            if len(chosen) >= p:
                break
            if int(g) in chosen:
                continue
            chosen.append(int(g))
            mates = [c for c in (confusers or {}).get(int(g), ()) if c in members and c not in chosen]
            if mates and len(chosen) < p:
                chosen.append(int(mates[int(rng.integers(len(mates)))]))
        for g in chosen:
            m = members[g]
            out.append(rng.choice(m, size=k, replace=len(m) < k))
    return np.concatenate(out)
