"""Groups from positive pairs, the group split (no leakage), balancing and triplets."""
import numpy as np
import pandas as pd
import pytest

from nnutils.data.groups import balance_pairs, check_no_leak, group_ids, group_split, links_from_key, make_triplets


def P(rows):
    return pd.DataFrame(rows, columns=["image_url1", "image_url2", "is_same"])


def test_groups_are_transitive_components():
    pairs = P([("a", "b", 1), ("b", "c", 1), ("d", "e", 1), ("a", "d", 0), ("f", "a", 0)])
    g = group_ids(pairs)
    assert g["a"] == g["b"] == g["c"]
    assert g["d"] == g["e"] != g["a"]
    assert g["f"] not in (g["a"], g["d"])
    assert sorted(g.unique()) == [0, 1, 2]  # numbered by first appearance
    assert g["a"] == 0


def test_links_merge_groups():
    pairs = P([("a", "b", 1), ("c", "d", 0)])
    images = pd.DataFrame({"file": ["a", "b", "c", "d"], "photo_id": ["p1", "p1", "p1", "p2"]})
    g = group_ids(pairs, links=links_from_key(images, "photo_id"))
    assert g["a"] == g["b"] == g["c"] != g["d"]


def random_pairs(n_groups=60, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for gi in range(n_groups):
        members = [f"g{gi}_{k}" for k in range(rng.integers(1, 5))]
        rows += [(members[0], m, 1) for m in members[1:]]
    urls = [r[1] for r in rows] + [f"g{gi}_0" for gi in range(n_groups)]
    for _ in range(3 * n_groups):
        a, b = rng.choice(urls, 2, replace=False)
        if a.split("_")[0] != b.split("_")[0]:
            rows.append((a, b, 0))
    return P(rows)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_group_split_never_leaks_and_keeps_all_positives(seed):
    pairs = random_pairs(seed=seed)
    groups = group_ids(pairs)
    train, val, dropped = group_split(pairs, groups, val_fraction=0.25, seed=seed)
    check_no_leak(train, val, groups)
    tg = set(train.image_url1.map(groups)) | set(train.image_url2.map(groups))
    vg = set(val.image_url1.map(groups)) | set(val.image_url2.map(groups))
    assert not tg & vg
    assert len(train) + len(val) + len(dropped) == len(pairs)
    assert (dropped.is_same == 0).all()           # positives never cross: they share a group
    assert train.is_same.sum() + val.is_same.sum() == pairs.is_same.sum()
    share = len(set(val.image_url1) | set(val.image_url2)) / len(groups)
    assert 0.1 < share < 0.45


def test_check_no_leak_detects_a_leak():
    pairs = P([("a", "b", 1), ("c", "d", 1)])
    g = group_ids(pairs)
    with pytest.raises(AssertionError, match="both sides"):
        check_no_leak(P([("a", "c", 0)]), P([("b", "d", 0)]), g)


def test_group_split_rejects_bad_fraction():
    pairs = P([("a", "b", 1)])
    with pytest.raises(ValueError):
        group_split(pairs, group_ids(pairs), val_fraction=1.5)


def test_balance_pairs_counts():
    pairs = P([(f"p{i}", f"q{i}", 1) for i in range(10)] + [(f"n{i}", f"m{i}", 0) for i in range(50)])
    b = balance_pairs(pairs, negatives_per_positive=2.0, seed=0)
    assert b.is_same.sum() == 10 and (b.is_same == 0).sum() == 20
    assert len(balance_pairs(pairs.head(12), negatives_per_positive=5)) == 12  # not enough negatives: keep all


def test_triplets_negatives_come_from_other_groups():
    pairs = random_pairs(seed=3)
    groups = group_ids(pairs)
    t = make_triplets(pairs, groups, hard_fraction=0.5, seed=0)
    assert len(t) == 2 * pairs.is_same.sum()
    assert (t.anchor.map(groups) == t.positive.map(groups)).all()
    assert (t.anchor.map(groups) != t.negative.map(groups)).all()
    assert set(t.negative_kind) == {"hard", "random"}
    neg = pairs[pairs.is_same == 0]
    labelled = set(zip(neg.image_url1, neg.image_url2)) | set(zip(neg.image_url2, neg.image_url1))
    hard = t[t.negative_kind == "hard"]
    assert all((a, n) in labelled for a, n in zip(hard.anchor, hard.negative))
    assert (make_triplets(pairs, groups, hard_fraction=0.0).negative_kind == "random").all()
