"""nnutils.scale.retrieval: AP / mAP / recall@k by hand, alpha-QE and DBA behaviour, the comparison table."""
import numpy as np
import pytest

import faiss  # noqa: E402  (the test command installs the scale extra; a missing faiss must fail)

from nnutils.scale import retrieval as R  # noqa: E402


pytestmark = pytest.mark.usefixtures("one_faiss_thread")


def u(v):
    v = np.asarray(v, np.float32)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


# ----------------------------------------------------------------------------- metrics
def test_average_precision_by_hand():
    assert R.average_precision([1, 0, 1]) == pytest.approx((1 + 2 / 3) / 2)          # 0.8333
    assert R.average_precision([1, 0, 1], n_relevant=3) == pytest.approx((1 + 2 / 3) / 3)  # one missed → 0
    assert R.average_precision([0, 1, 0, 1]) == pytest.approx((1 / 2 + 2 / 4) / 2)
    assert R.average_precision([1, 1, 1]) == 1.0
    assert R.average_precision([0, 0], n_relevant=2) == 0.0
    assert np.isnan(R.average_precision([0, 0]))
    with pytest.raises(ValueError, match="smaller than the 2 relevant"):
        R.average_precision([1, 1], n_relevant=1)
    with pytest.raises(ValueError, match="1-d"):
        R.average_precision([[1, 0]])


def test_map_and_recall_with_sets_and_labels():
    ids = np.array([[0, 5, 2],        # relevant {0, 2}: ranks 1, 3 → (1 + 2/3) / 2
                    [4, 1, -1],       # relevant {1, 3}: rank 2, 3 missed → (1/2) / 2
                    [4, 5, 0]])       # relevant {}: left out
    relevant = [{0, 2}, {1, 3}, set()]
    want = ((1 + 2 / 3) / 2 + 0.25) / 2
    assert R.mean_average_precision(ids, relevant) == pytest.approx(want)
    assert R.recall_at_k(ids, relevant, ks=(1, 2, 3)) == {1: 0.5, 2: 1.0, 3: 1.0}
    # the same through labels: refs 0..5 with labels, queries labelled like their relevant refs
    ref_labels = np.array(["a", "b", "a", "b", "c", "d"])
    query_labels = np.array(["a", "b", "z"])
    assert R.mean_average_precision(ids, query_labels=query_labels, ref_labels=ref_labels) == pytest.approx(want)
    assert R.recall_at_k(ids, ks=(1, 2), query_labels=query_labels, ref_labels=ref_labels) == {1: 0.5, 2: 1.0}
    rel, n_rel = R.relevance_matrix(ids, query_labels=query_labels, ref_labels=ref_labels)
    np.testing.assert_array_equal(n_rel, [2, 2, 0])
    assert not rel[1, 2]                                  # -1 is never relevant


def test_metric_input_errors():
    ids = np.array([[0, 1]])
    with pytest.raises(ValueError, match="k must be in 1..2"):
        R.recall_at_k(ids, [{0}], ks=(5,))
    with pytest.raises(ValueError, match="either relevant or"):
        R.mean_average_precision(ids, [{0}], query_labels=[0], ref_labels=[0, 1])
    with pytest.raises(ValueError, match="relevant has 2 entries"):
        R.mean_average_precision(ids, [{0}, {1}])
    with pytest.raises(ValueError, match="ref_labels has 1 entries"):
        R.mean_average_precision(ids, query_labels=[0], ref_labels=[0])
    with pytest.raises(ValueError, match="give relevant"):
        R.mean_average_precision(ids)


# ----------------------------------------------------------------------------- expansions
@pytest.fixture
def chain():
    """A query close to one member (a) of its photo's group; the others (b, c) are close to a
    but a distractor d is closer to the query than b and c: sims q·[a, b, c, d] = .970 .868 .864 .883."""
    refs = u([[1, 0, 0, 0], [1, .5, 0, 0], [1, .5, 0, .1], [1, 0, .9, 0]])
    q = u([[1, 0, .25, 0]])
    return q, refs, [{0, 1, 2}]


def test_alpha_qe_improves_map_on_constructed_case(chain):
    q, refs, relevant = chain
    _, ids = R.retrieve(q, refs, 4)
    np.testing.assert_array_equal(ids, [[0, 3, 1, 2]])
    assert R.mean_average_precision(ids, relevant) == pytest.approx((1 + 2 / 3 + 3 / 4) / 3)   # 0.806
    sims, ids = R.retrieve(q, refs, 4, qe={"n": 1, "alpha": 3.0})
    np.testing.assert_array_equal(ids, [[0, 1, 2, 3]])
    assert R.mean_average_precision(ids, relevant) == 1.0
    # the expanded query by hand: unit(q + sim(q, a)^3 · a)
    s0 = float(q[0] @ refs[0])
    want = u(q[0] + s0 ** 3 * refs[0])
    np.testing.assert_allclose(R.alpha_qe(q, refs, [[s0]], [[0]], n=1), want[None], atol=1e-6)


def test_alpha_qe_weights_only_positive_sims_and_valid_ids():
    refs = u([[1, 0], [0, 1], [-1, 0]])
    q = u([[1, 0.1]])
    out = R.alpha_qe(q, refs, sims=[[-0.9, 0.5]], ids=[[2, -1]], n=2)
    np.testing.assert_allclose(out, q, atol=1e-6)           # negative sim and -1 id: no change
    with pytest.raises(ValueError, match="refs has 3 rows"):
        R.alpha_qe(q, refs, [[0.5]], [[7]])
    with pytest.raises(ValueError, match="dimension 2 but the index has dimension 3"):
        R.alpha_qe(u([[1, 0, 0]]), refs, [[0.5]], [[0]])


def test_dba_shape_norm_and_by_hand():
    rng = np.random.default_rng(0)
    refs = u(rng.standard_normal((300, 16)))
    out = R.dba(refs, n=3, alpha=2.0)
    assert out.shape == refs.shape and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1, atol=1e-5)
    # row 0 by hand: itself + its 3 nearest others weighted by sim^2 (positive sims only)
    s = refs @ refs[0]
    s[0] = -np.inf
    nb = np.argsort(-s)[:3]
    w = np.clip(s[nb], 0, None) ** 2
    np.testing.assert_allclose(out[0], u(refs[0] + w @ refs[nb]), atol=1e-5)
    np.testing.assert_array_equal(R.dba(refs, n=0), refs)
    with pytest.raises(ValueError, match="non-finite"):
        R.dba(np.full((3, 4), np.nan, np.float32))


def _clusters(noise, seed=1):
    """40 centres; 5 noisy references and 1 noisy query per centre (query i is relevant to refs 5i..5i+4)."""
    rng = np.random.default_rng(seed)
    centres = u(rng.standard_normal((40, 32)))
    ref_labels = np.repeat(np.arange(40), 5)
    refs = u(centres[ref_labels] + noise * rng.standard_normal((200, 32)) / np.sqrt(32))
    query_labels = np.arange(40)
    queries = u(centres + noise * rng.standard_normal((40, 32)) / np.sqrt(32))
    return queries, refs, query_labels, ref_labels


def _numpy_map_and_recall(queries, refs, query_labels, ref_labels, k):
    """mAP@k and recall@1/5/10 of exact cosine search, from scratch (no faiss, no R.*)."""
    aps, hits = [], {1: [], 5: [], 10: []}
    for q, lab in zip(queries, query_labels):
        order = np.argsort(-(refs @ q), kind="stable")[:k]
        rel = ref_labels[order] == lab
        n_rel = int((ref_labels == lab).sum())
        ranks = np.flatnonzero(rel) + 1
        aps.append(sum((i + 1) / r for i, r in enumerate(ranks)) / n_rel)
        for x in hits:
            hits[x].append(rel[:x].any())
    return float(np.mean(aps)), {x: float(np.mean(h)) for x, h in hits.items()}


def test_compare_expansions_on_clusters():
    """Tight groups of near-duplicates: every setting finds all of them; the table has one row per setting."""
    queries, refs, query_labels, ref_labels = _clusters(0.35)
    df = R.compare_expansions(queries, refs, query_labels, ref_labels, k=20)
    assert list(df.setting) == ["baseline", "alpha-QE", "DBA", "DBA + alpha-QE"]
    assert list(df.columns) == ["setting", "mAP", "recall@1", "recall@5", "recall@10", "ms_per_query", "offline_s"]
    assert (df[["mAP", "recall@1", "recall@5", "recall@10"]] == 1.0).all().all()   # measured: perfect
    assert _numpy_map_and_recall(queries, refs, query_labels, ref_labels, 20) == (1.0, {1: 1.0, 5: 1.0, 10: 1.0})
    with pytest.raises(ValueError, match="unknown keys"):
        R.compare_expansions(queries, refs, query_labels, ref_labels, settings={"x": {"qe": {}, "rerank": 1}})


def test_compare_expansions_help_on_loose_clusters():
    """Looser groups: the baseline row equals a from-scratch NumPy evaluation, each expansion row
    equals retrieve() with its setting, and DBA / alpha-QE raise mAP (measured .834 → .885 / .889 → .930)."""
    queries, refs, query_labels, ref_labels = _clusters(1.0)
    df = R.compare_expansions(queries, refs, query_labels, ref_labels, k=20).set_index("setting")
    want_map, want_recall = _numpy_map_and_recall(queries, refs, query_labels, ref_labels, 20)
    assert df.loc["baseline", "mAP"] == pytest.approx(want_map)
    assert {x: df.loc["baseline", f"recall@{x}"] for x in (1, 5, 10)} == pytest.approx(want_recall)
    assert want_recall[1] == 38 / 40                                    # two queries miss at rank 1
    for name, kw in R.DEFAULT_SETTINGS.items():
        _, ids = R.retrieve(queries, refs, 20, **kw)
        assert df.loc[name, "mAP"] == pytest.approx(
            R.mean_average_precision(ids, query_labels=query_labels, ref_labels=ref_labels)), name
        assert df.loc[name, "recall@1"] == pytest.approx(
            R.recall_at_k(ids, ks=(1,), query_labels=query_labels, ref_labels=ref_labels)[1]), name
    m = df["mAP"]
    assert m["baseline"] < m["alpha-QE"] and m["baseline"] < m["DBA"] < m["DBA + alpha-QE"]
    assert m["DBA + alpha-QE"] - m["baseline"] > 0.05
    assert (df["recall@1"] <= df["recall@5"]).all() and (df["recall@5"] <= df["recall@10"]).all()


# ----------------------------------------------------------------------------- several embeddings
def test_expansion_settings_carry_the_parameters():
    s = R.expansion_settings(qe_n=3, dba_n=4, alpha=2.0)
    assert list(s) == list(R.DEFAULT_SETTINGS)
    assert s["baseline"] == {} and s["alpha-QE"] == {"qe": {"n": 3, "alpha": 2.0}}
    assert s["DBA"] == {"dba": {"n": 4, "alpha": 2.0}}
    assert s["DBA + alpha-QE"] == {"qe": {"n": 3, "alpha": 2.0}, "dba": {"n": 4, "alpha": 2.0}}


def test_compare_poolings_queries_are_the_originals():
    """One collection, two embeddings: queries are the rows flagged as originals, references all other
    usable rows; each embedding's rows equal compare_expansions on those rows."""
    queries, refs, query_labels, ref_labels = _clusters(0.35)
    emb = np.concatenate([queries, refs])
    labels = np.concatenate([query_labels, ref_labels]).astype(object)
    is_query = np.arange(len(emb)) < len(queries)
    ok = np.ones(len(emb), bool)
    ok[[3, 45]] = False                                   # an unreadable query and an unreadable reference
    noisy = u(emb + 3.0 * np.random.default_rng(2).standard_normal(emb.shape) / np.sqrt(32))
    settings = R.expansion_settings()
    df = R.compare_poolings({"tight": emb, "noisy": noisy}, labels, is_query, k=20, settings=settings, ok=ok)
    assert df.index.names == ["embedding", "setting"]
    assert df.index.get_level_values(0).unique().tolist() == ["tight", "noisy"]     # in the dict's order
    assert (df.loc["tight", "mAP"] == 1.0).all()
    q, r = np.flatnonzero(ok & is_query), np.flatnonzero(ok & ~is_query)
    assert len(q) == 39 and len(r) == 199
    want = R.compare_expansions(noisy[q], noisy[r], labels[q], labels[r], k=20, settings=settings).set_index("setting")
    got = df.loc["noisy"]
    assert got["mAP"].to_numpy() == pytest.approx(want["mAP"].to_numpy())
    assert got["recall@1"].to_numpy() == pytest.approx(want["recall@1"].to_numpy())
    assert got.loc["baseline", "mAP"] < 0.9                                           # the noise hurts
    small = R.compare_poolings({"tight": emb}, labels, is_query, k=1000)               # k is clipped to R
    assert (small["mAP"] == 1.0).all()
    with pytest.raises(ValueError, match="queries and references"):
        R.compare_poolings({"tight": emb}, labels, np.zeros(len(emb), bool))
    with pytest.raises(ValueError, match="rows"):
        R.compare_poolings({"short": emb[:10]}, labels, is_query)


def test_pooled_embeddings_are_unit_poolings_of_the_maps():
    rng = np.random.default_rng(0)
    maps = rng.random((5, 4, 4, 8)).astype(np.float32)
    out = R.pooled_embeddings(maps, ["gap", "grid2"])
    assert list(out) == ["pretrained, gap pooling", "pretrained, grid2 pooling"]
    gap = maps.mean(axis=(1, 2))
    assert out["pretrained, gap pooling"] == pytest.approx(gap / np.linalg.norm(gap, axis=1, keepdims=True), abs=1e-5)
    assert out["pretrained, grid2 pooling"].shape == (5, 32)
    assert np.linalg.norm(out["pretrained, grid2 pooling"], axis=1) == pytest.approx(np.ones(5), abs=1e-5)
