"""nnutils.scale.index: exact search equals brute force, approximate recall, clipping, bad input."""
import numpy as np
import pytest

import faiss  # noqa: E402  (the test command installs the scale extra; a missing faiss must fail)

from nnutils.scale import index as I  # noqa: E402


pytestmark = pytest.mark.usefixtures("one_faiss_thread")


def unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def clustered():
    """20k × 64 unit vectors around 200 centres (neighbours well defined, as for image embeddings)."""
    rng = np.random.default_rng(0)
    centres = unit(rng.standard_normal((200, 64)))
    x = centres[rng.integers(0, 200, 20_000)] + 0.5 * rng.standard_normal((20_000, 64)) / 8
    return unit(x)


def brute_topk(q, x, k):
    s = q @ x.T
    ids = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(s, ids, 1), ids


def test_flat_equals_numpy_brute_force():
    rng = np.random.default_rng(1)
    x, q = unit(rng.standard_normal((500, 32))), unit(rng.standard_normal((40, 32)))
    idx = I.build_index(x, "flat")
    assert I.index_kind(idx) == "flat" and idx.ntotal == 500 and idx.d == 32
    sims, ids = I.search(idx, q, 7, batch_size=16)        # several batches
    want_s, want_i = brute_topk(q, x, 7)
    assert sims.dtype == np.float32 and ids.dtype == np.int64 and sims.shape == ids.shape == (40, 7)
    np.testing.assert_array_equal(ids, want_i)
    np.testing.assert_allclose(sims, want_s, atol=1e-5)


def test_auto_is_flat_for_small_and_knn_finds_itself_first():
    rng = np.random.default_rng(2)
    x = unit(rng.standard_normal((300, 16)))
    assert I.resolve_kind("auto", 300) == "flat"
    assert I.resolve_kind("auto", I.AUTO_FLAT_MAX + 1) == "hnsw"
    sims, ids = I.knn(x, 5)
    np.testing.assert_array_equal(ids[:, 0], np.arange(300))
    np.testing.assert_allclose(sims[:, 0], 1, atol=1e-5)
    assert (np.diff(sims, axis=1) <= 1e-6).all()          # descending


@pytest.mark.parametrize("kind, kw", [("ivf", {}), ("hnsw", {})])
def test_approximate_recall_at_10_vs_flat(clustered, kind, kw):
    q = clustered[:1000]
    _, exact = I.search(I.build_index(clustered, "flat"), q, 10)
    idx = I.build_index(clustered, kind, **kw)
    assert I.index_kind(idx) == kind
    _, got = I.search(idx, q, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got, exact)])
    assert recall >= 0.9, f"{kind} recall@10 = {recall:.3f}"


def test_ivf_defaults_and_determinism(clustered):
    x = clustered[:5000]
    a, b = I.build_index(x, "ivf", seed=3), I.build_index(x, "ivf", seed=3)
    ia, ib = faiss.downcast_index(a), faiss.downcast_index(b)
    assert ia.nlist == min(round(4 * np.sqrt(5000)), 5000 // 39) and ia.nprobe == max(8, ia.nlist // 16)
    np.testing.assert_array_equal(I.search(a, x[:50], 5)[1], I.search(b, x[:50], 5)[1])
    assert faiss.downcast_index(I.build_index(x, "ivf", nlist=10, nprobe=3)).nprobe == 3


def test_ivfpq_is_smaller(clustered):
    x = clustered[:2000]
    flat, pq = I.build_index(x, "flat"), I.build_index(x, "ivfpq", nlist=8, pq_m=8)
    assert I.index_kind(pq) == "ivfpq"
    assert I.memory_bytes(pq) < I.memory_bytes(flat) / 4
    assert x.nbytes <= I.memory_bytes(flat) <= x.nbytes + 1024   # the raw vectors plus a small header (measured +45)
    assert I.memory_bytes(pq) >= len(x) * 8 * 2                     # 8 one-byte codes and an int64 id per vector
    _, ids = I.search(pq, x[:100], 10)
    assert (ids[:, :10] == np.arange(100)[:, None]).any(1).mean() > 0.9   # finds itself


def test_k_larger_than_n_is_clipped():
    x = unit(np.random.default_rng(3).standard_normal((4, 8)))
    sims, ids = I.search(I.build_index(x, "flat"), x, 10)
    assert sims.shape == ids.shape == (4, 4)
    assert sorted(ids[0].tolist()) == [0, 1, 2, 3]
    assert I.knn(x, 99)[1].shape == (4, 4)


def test_missing_results_are_minus_one_and_minus_inf():
    # one IVF cell probed out of many: fewer than k vectors are found for some queries
    x = unit(np.random.default_rng(4).standard_normal((2000, 16)))
    idx = I.build_index(x, "ivf", nlist=50, nprobe=1)
    sims, ids = I.search(idx, x[:200], 200)
    assert (ids == -1).any()
    assert np.isneginf(sims[ids == -1]).all() and np.isfinite(sims[ids >= 0]).all()


def test_normalize_option_and_threads(monkeypatch):
    rng = np.random.default_rng(5)
    raw = rng.standard_normal((50, 8)).astype(np.float32) * 3
    with pytest.raises(ValueError, match="L2-normalised.*normalize=True"):
        I.build_index(raw, "flat")
    idx = I.build_index(raw, "flat", normalize=True)
    before = faiss.omp_get_max_threads()                 # 1 (the one_faiss_thread fixture)
    set_calls = []
    real_set = faiss.omp_set_num_threads
    monkeypatch.setattr(faiss, "omp_set_num_threads", lambda n: set_calls.append(n) or real_set(n))
    sims, _ = I.search(idx, unit(raw), 1, threads=before + 1)
    assert set_calls == [before + 1, before]             # set for the call, then restored
    assert faiss.omp_get_max_threads() == before
    np.testing.assert_allclose(sims[:, 0], 1, atol=1e-5)
    set_calls.clear()
    I.search(idx, unit(raw), 1)                          # threads=None: faiss's setting untouched
    assert set_calls == []
    with pytest.raises(ValueError, match="threads must be >= 1"):
        I.search(idx, unit(raw), 1, threads=0)
    assert set_calls == [] and faiss.omp_get_max_threads() == before
    with pytest.raises(ValueError, match="all-zero"):
        I.build_index(np.zeros((3, 8), np.float32), normalize=True)


@pytest.mark.parametrize("bad, match", [
    (np.ones(8, np.float32), "2-d array"),
    (np.zeros((0, 8), np.float32), "0 vectors"),
    (np.zeros((5, 0), np.float32), "0 columns"),
    (np.array([[1.0, 0.0], [np.nan, 0.0]], np.float32), r"non-finite.*rows \[1\]"),
    (np.array([[1.0, 0.0], [np.inf, 0.0]], np.float32), "non-finite"),
    (np.array([["a", "b"]]), "real numbers"),
])
def test_bad_embeddings(bad, match):
    with pytest.raises(ValueError, match=match):
        I.build_index(bad, "flat")


def test_bad_queries_and_k():
    x = unit(np.random.default_rng(6).standard_normal((20, 8)))
    idx = I.build_index(x, "flat")
    with pytest.raises(ValueError, match="dimension 4 but the index has dimension 8"):
        I.search(idx, x[:, :4], 3)
    with pytest.raises(ValueError, match="non-finite"):
        I.search(idx, np.full((2, 8), np.nan, np.float32), 3)
    with pytest.raises(ValueError, match="2-d"):
        I.search(idx, x[0], 3)
    with pytest.raises(ValueError, match="k must be a positive integer"):
        I.search(idx, x, 0)
    with pytest.raises(ValueError, match="kind must be one of"):
        I.build_index(x, "annoy")
    with pytest.raises(ValueError, match="pq_m must divide"):
        I.build_index(x, "ivfpq", nlist=1, pq_m=3)
    with pytest.raises(ValueError, match="empty"):
        I.search(faiss.IndexFlatIP(8), x, 3)
    assert I.search(idx, np.zeros((0, 8), np.float32), 3)[1].shape == (0, 3)
