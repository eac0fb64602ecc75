"""k-nearest-neighbour search over L2-normalised embeddings with faiss (cosine = inner product).

Embeddings are (N, D) float32 rows of unit L2 norm, so the inner product *is* the cosine
similarity, in [-1, 1]. Every index here uses the inner-product metric:

=========  ==========================================  ==========================================
kind       faiss index                                 when
=========  ==========================================  ==========================================
``flat``   ``IndexFlatIP``: exact, brute force         N ≤ :data:`AUTO_FLAT_MAX` (``auto``), or few
                                                       queries against any N
``hnsw``   ``IndexHNSWFlat`` (graph), ``efSearch``     N above the cut (``auto``): search time
                                                       grows ~log N per query
``ivf``    ``IndexIVFFlat`` (k-means cells, inner      approximate; recall ≈ 1 with the default
           product), ``nprobe`` cells searched         nprobe, but that visits ~N/16 vectors per
                                                       query, so it is linear in N
``ivfpq``  ``IndexIVFPQ`` (product-quantised codes)    approximate, for memory: ``pq_m`` bytes per
                                                       vector instead of 4·D
=========  ==========================================  ==========================================

``kind="auto"`` is ``flat`` for N ≤ :data:`AUTO_FLAT_MAX` (50,000) and ``hnsw`` above.
Measured by ``bench/scale.py`` (self-kNN, k = 10, 512-d, 2 shared cores): exact flat costs
~2–3e-8·N² s (10k: 3 s, 100k: 160–230 s, 1M: ~4 h extrapolated), HNSW build + search 80–87 s at
100k (recall@10 0.97) and 18 min at 1M (recall@10 0.94), IVF with the default nprobe 105 s at
100k (recall 1.0) but ~1.9 h at 1M (its cost per query grows with N). Flat and HNSW cross
near 30k–50k; up to 50k exact search stays under a minute, so exact results are kept there.
For more recall from HNSW at 1M raise ``ef_search`` (and ``ef_construction``). Our trained heads emit 512-d
embeddings; the untrained pretrained grid features are 5,120-d (ten times the memory and
search time per vector).

Functions
---------
:func:`build_index` (validate, build, add in chunks), :func:`search` (batched top-k),
:func:`knn` (build + self-search), :func:`index_kind`, :func:`memory_bytes`.

Threads: :func:`build_index`, :func:`search` and :func:`knn` take ``threads``: ``None``
leaves faiss's OpenMP default (all cores); an int sets ``faiss.omp_set_num_threads`` for
the call only and restores the previous value afterwards. On a machine shared with other
busy processes, ``threads=1`` can be much faster (OpenMP threads spin-wait for each other).
"""
from __future__ import annotations

import math
from contextlib import contextmanager

import numpy as np

__all__ = ["AUTO_FLAT_MAX", "KINDS", "resolve_kind", "build_index", "search", "knn", "index_kind",
           "memory_bytes", "check_embeddings"]

#: ``kind="auto"`` builds an exact flat index up to this many vectors, HNSW above
#: (bench/scale.py, 512-d, 2 cores: flat self-kNN grows as N², 100k takes 3–4 min vs ~1.5 min for HNSW).
AUTO_FLAT_MAX = 50_000
KINDS = ("auto", "flat", "ivf", "hnsw", "ivfpq")
_NORM_TOL = 1e-3
_CHUNK = 65_536


def _faiss():
    try:
        import faiss
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("nnutils.scale.index needs faiss: pip install 'faiss-cpu>=1.8' "
                          "(or the 'scale' extra: pip install -e '.[scale]')") from e
    return faiss


@contextmanager
def _threads(n: int | None):
    """Set faiss's OpenMP thread count for the block (``None``: leave it)."""
    if n is None:
        yield
        return
    faiss = _faiss()
    if int(n) < 1:
        raise ValueError(f"threads must be >= 1 or None, got {n}")
    prev = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(int(n))
    try:
        yield
    finally:
        faiss.omp_set_num_threads(prev)


def _progress(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm
    return tqdm(total=total, desc=desc, unit="vec", unit_scale=True, disable=not enabled, leave=False)


def check_embeddings(x, name: str = "emb", *, dim: int | None = None, unit_norm: bool = True,
                     normalize: bool = False) -> np.ndarray:
    """Validate (N, D) embeddings and return them as C-contiguous float32.

    Parameters
    ----------
    x : array-like (N, D), real numbers. Converted to float32 (a copy only if needed).
    name : the argument's name in error messages.
    dim : required D (e.g. the index's dimension), or None.
    unit_norm : require every row to have L2 norm 1 within 1e-3.
    normalize : instead of requiring unit norm, return an L2-normalised copy (zero rows
        are still an error: they have no direction).

    Raises
    ------
    ValueError naming the problem: not 2-D, no columns, wrong D, non-finite values (with
    the first offending rows), rows not of unit norm (with the first rows and their norms)
    or zero rows when normalising.
    """
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-d array (N, D), got shape {x.shape}"
                         + (" (one vector? use x[None, :])" if x.ndim == 1 else ""))
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise ValueError(f"{name} must hold real numbers, got dtype {x.dtype}")
    if x.shape[1] == 0:
        raise ValueError(f"{name} has 0 columns (D = 0)")
    if dim is not None and x.shape[1] != dim:
        raise ValueError(f"{name} has dimension {x.shape[1]} but the index has dimension {dim}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    bad, norms = [], []
    for s in range(0, len(x), _CHUNK):           # chunked: no N×D boolean temporaries
        c = x[s:s + _CHUNK]
        fin = np.isfinite(c).all(1)
        if not fin.all():
            bad.extend((s + np.flatnonzero(~fin)[:5]).tolist())
        c = c if fin.all() else np.where(fin[:, None], c, 0)
        norms.append(np.sqrt(np.einsum("ij,ij->i", c, c)))
        if len(bad) >= 5:
            break
    if bad:
        n_bad = sum(int((~np.isfinite(x[s:s + _CHUNK]).all(1)).sum()) for s in range(0, len(x), _CHUNK))
        raise ValueError(f"{name} has non-finite values (NaN or inf) in {n_bad} row(s), e.g. rows {bad[:5]}")
    norms = np.concatenate(norms) if norms else np.zeros(0, np.float32)
    if normalize:
        zero = np.flatnonzero(norms == 0)
        if len(zero):
            raise ValueError(f"{name} has {len(zero)} all-zero row(s) (e.g. rows {zero[:5].tolist()}), "
                             "which cannot be L2-normalised")
        return np.ascontiguousarray(x / norms[:, None], dtype=np.float32)
    if unit_norm and len(x):
        off = np.flatnonzero(np.abs(norms - 1) > _NORM_TOL)
        if len(off):
            raise ValueError(f"{name} rows must be L2-normalised (cosine = inner product): {len(off)} row(s) have "
                             f"norm != 1 within {_NORM_TOL}, e.g. rows {off[:5].tolist()} with norms "
                             f"{np.round(norms[off[:5]], 4).tolist()}; normalise them "
                             "(x / np.linalg.norm(x, axis=1, keepdims=True)) or pass normalize=True")
    return x


def resolve_kind(kind: str, n: int) -> str:
    """The concrete index kind for ``kind`` and ``n`` vectors.

    Parameters
    ----------
    kind : str
        One of :data:`KINDS`.
    n : int
        Number of vectors.

    Returns
    -------
    str
        ``kind`` itself, or for ``auto``: ``flat`` if n ≤ AUTO_FLAT_MAX else ``hnsw``.

    Raises
    ------
    ValueError
        For an unknown kind.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if kind == "auto":
        return "flat" if n <= AUTO_FLAT_MAX else "hnsw"
    return kind


def _default_nlist(n: int) -> int:
    # ≈ 4·sqrt(N) cells, but at least 39 training points per cell (faiss k-means warns below)
    return int(max(1, min(round(4 * math.sqrt(n)), n // 39)))


def build_index(emb, kind: str = "auto", *, normalize: bool = False, nlist: int | None = None,
                nprobe: int | None = None, hnsw_m: int = 32, ef_construction: int = 40, ef_search: int = 128,
                pq_m: int | None = None, train_size: int | None = None, seed: int = 0, threads: int | None = None,
                progress: bool = False):
    """Build a faiss inner-product index over L2-normalised embeddings.

    Parameters
    ----------
    emb : (N, D) float32 array, rows of unit L2 norm (within 1e-3), N ≥ 1. Other real
        dtypes are converted to float32. Row ``i`` gets id ``i``.
    kind : ``"auto"`` (``flat`` for N ≤ :data:`AUTO_FLAT_MAX` = 50,000, else ``hnsw``), ``"flat"``
        (exact), ``"ivf"``, ``"hnsw"`` or ``"ivfpq"``; see the module docstring.
    normalize : L2-normalise a copy of ``emb`` instead of raising when rows are not unit norm.
    nlist : IVF cells (``ivf``/``ivfpq``); default ≈ 4·sqrt(N), at most N // 39.
    nprobe : IVF cells visited per query; default ``max(8, nlist // 16)`` (≤ nlist): high
        recall rather than the fastest search (about N/16 vectors compared per query; lower
        it for speed on large N).
    hnsw_m, ef_construction, ef_search : HNSW graph degree, build-time and search-time beam
        widths (larger = better recall, slower). ``ef_search`` is raised to k by faiss when smaller.
    pq_m : ``ivfpq`` bytes per vector (sub-quantisers of 8 bits); default D // 8; must divide D.
    train_size : IVF k-means training rows, a random sample; default ``min(N, 64·nlist)``
        (faiss wants 39–256 per cell; 64 keeps 1M×512 training to ~2 minutes on 2 cores).
    seed : seed of the IVF training sample and of k-means (the same data and seed give the same index).
    threads : faiss OpenMP threads for this call (None: faiss default, all cores).
    progress : show a progress bar while vectors are added (in chunks of 65,536).

    Returns
    -------
    faiss.Index with ``ntotal == N`` and ``d == D``.

    Raises
    ------
    ValueError for a bad ``kind``, empty / non-2-d / non-finite / non-unit-norm ``emb``,
    or a ``pq_m`` that does not divide D.
    """
    faiss = _faiss()
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    x = check_embeddings(emb, "emb", normalize=normalize)
    n, d = x.shape
    if n == 0:
        raise ValueError("emb has no rows: cannot build an index over 0 vectors")
    kind = resolve_kind(kind, n)
    with _threads(threads):
        if kind == "flat":
            index = faiss.IndexFlatIP(d)
        elif kind == "hnsw":
            index = faiss.IndexHNSWFlat(d, int(hnsw_m), faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = int(ef_construction)
            index.hnsw.efSearch = int(ef_search)
        else:  # ivf, ivfpq
            nl = _default_nlist(n) if nlist is None else int(nlist)
            if not 1 <= nl <= n:
                raise ValueError(f"nlist must be in 1..N={n}, got {nl}")
            quantizer = faiss.IndexFlatIP(d)
            if kind == "ivf":
                index = faiss.IndexIVFFlat(quantizer, d, nl, faiss.METRIC_INNER_PRODUCT)
            else:
                m = max(1, d // 8) if pq_m is None else int(pq_m)
                if m < 1 or d % m:
                    raise ValueError(f"pq_m must divide the dimension D={d}, got {m}")
                index = faiss.IndexIVFPQ(quantizer, d, nl, m, 8, faiss.METRIC_INNER_PRODUCT)
            index.cp.seed = int(seed)
            index.cp.verbose = False
            n_train = min(n, 64 * nl) if train_size is None else min(n, int(train_size))
            if kind == "ivfpq":
                n_train = max(n_train, min(n, 256 * 39))   # PQ codebooks: 256 centroids, ≥ 39 points each
            if n_train < nl:
                raise ValueError(f"train_size={n_train} is smaller than nlist={nl}")
            rng = np.random.default_rng(seed)
            sample = x if n_train == n else x[np.sort(rng.choice(n, n_train, replace=False))]
            index.train(sample)
            index.nprobe = int(min(nl, max(8, nl // 16)) if nprobe is None else min(nl, int(nprobe)))
        with _progress(n, f"index {kind}", progress) as bar:
            for s in range(0, n, _CHUNK):
                index.add(x[s:s + _CHUNK])
                bar.update(min(_CHUNK, n - s))
    return index


def search(index, queries, k: int, *, batch_size: int = 65_536, threads: int | None = None,
           progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` most similar indexed vectors for each query, in batches.

    Parameters
    ----------
    index : a faiss index from :func:`build_index` (inner product over unit vectors).
    queries : (n, D) real array, D == ``index.d``, finite. Rows should be L2-normalised for
        the similarities to be cosines; this is not enforced here.
    k : neighbours per query, ≥ 1; clipped to ``index.ntotal``.
    batch_size : queries per faiss call (bounds the (batch, k) temporaries; progress step).
    threads : faiss OpenMP threads for this call (None: faiss default).
    progress : progress bar over the queries.

    Returns
    -------
    sims : (n, k') float32 inner products (cosine similarities), descending in each row.
    ids : (n, k') int64 row numbers of the indexed vectors, k' = min(k, ntotal).
        An approximate index (IVF with few probed cells, HNSW) can find fewer than k'
        vectors: those slots have id ``-1`` and similarity ``-inf``.

    Raises
    ------
    ValueError for k < 1, an empty index, or queries that are not 2-d, not finite, or of
    another dimension than the index.
    """
    if int(k) != k or k < 1:
        raise ValueError(f"k must be a positive integer, got {k}")
    if index.ntotal == 0:
        raise ValueError("the index is empty (ntotal = 0)")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    q = check_embeddings(queries, "queries", dim=index.d, unit_norm=False)
    k = int(min(k, index.ntotal))
    n = len(q)
    sims = np.empty((n, k), np.float32)
    ids = np.empty((n, k), np.int64)
    with _threads(threads), _progress(n, "search", progress) as bar:
        for s in range(0, n, batch_size):
            d_, i_ = index.search(q[s:s + batch_size], k)
            sims[s:s + batch_size], ids[s:s + batch_size] = d_, i_
            bar.update(len(i_))
    sims[ids < 0] = -np.inf
    return sims, ids


def knn(emb, k: int, kind: str = "auto", *, batch_size: int = 65_536, threads: int | None = None,
        progress: bool = False, **build_kw) -> tuple[np.ndarray, np.ndarray]:
    """Self-kNN: the ``k`` nearest rows of ``emb`` to each row of ``emb`` (itself included).

    Builds an index with :func:`build_index` and searches it with every row. Each row's own
    id is normally in column 0 (similarity 1); with exact duplicates a twin may come first,
    and an approximate index may miss it.

    Parameters
    ----------
    emb : array-like, shape (N, D)
        Embeddings (L2-normalised unless ``normalize=True`` is passed).
    k : int
        Neighbours per row.
    kind : str, default "auto"
        Index kind (:func:`build_index`).
    batch_size : int, default 65536
        Queries per search call.
    threads : int, optional
        faiss threads.
    progress : bool, default False
    **build_kw
        Passed to :func:`build_index` (e.g. ``nprobe``, ``ef_search``, ``normalize``).

    Returns
    -------
    sims : ndarray of float32, shape (N, min(k, N))
        Cosine, descending per row.
    ids : ndarray of int64, shape (N, min(k, N))
        Neighbour rows (-1 where fewer were found), as :func:`search`.
    """
    index = build_index(emb, kind, threads=threads, progress=progress, **build_kw)
    x = check_embeddings(emb, "emb", normalize=bool(build_kw.get("normalize", False)))
    return search(index, x, k, batch_size=batch_size, threads=threads, progress=progress)


def index_kind(index) -> str:
    """The kind of a faiss index.

    Parameters
    ----------
    index : faiss.Index

    Returns
    -------
    str
        ``"flat"``, ``"ivf"``, ``"hnsw"`` or ``"ivfpq"`` for indexes built here; else the faiss
        class name.
    """
    faiss = _faiss()
    index = faiss.downcast_index(index)
    for cls, name in ((faiss.IndexFlat, "flat"), (faiss.IndexIVFFlat, "ivf"), (faiss.IndexHNSWFlat, "hnsw"),
                      (faiss.IndexIVFPQ, "ivfpq")):
        if isinstance(index, cls):
            return name
    return type(index).__name__


def memory_bytes(index) -> int:
    """Size of the index in bytes, as serialised by faiss (vectors, codes, ids, graph, centroids).

    This is what the index occupies in RAM to within a few percent (containers' slack is
    not counted). The serialised bytes are counted as they stream out (1 MiB at a time),
    never held: no copy of a large index is made.

    Parameters
    ----------
    index : faiss.Index

    Returns
    -------
    int
    """
    faiss = _faiss()
    total = 0

    def count(chunk) -> int:
        nonlocal total
        total += len(chunk)
        return len(chunk)

    writer = faiss.PyCallbackIOWriter(count, 1 << 20)
    faiss.write_index(index, writer)
    del writer                       # flushes the last buffered bytes
    return int(total)
