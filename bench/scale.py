"""Self-kNN at scale: faiss flat / IVF / HNSW vs the dense N×N similarity matrix.

    python bench/scale.py                         # N = 10k, 100k, 1M at 512-d (~35 min on 2 shared cores)
    python bench/scale.py --quick                 # N = 10k, 100k (~10 min)
    python bench/scale.py --sizes 10000 --dim 5120 --kinds flat hnsw --out scale.csv
    python bench/scale.py --sizes 10000000 --kinds ivfpq-rerank ivfsq8 --sample-queries 10000 \
        --data-cache /tmp/scale-data              # 10M × 512 (20.5 GB on disk), peak RSS ≤ 9.2 GiB (~1.2 h)

What it measures, for each N, on synthetic embeddings that look like ours: float32 unit
vectors, 512-d by default (our trained heads; the untrained pretrained grid features are
5,120-d: ten times the memory and time per vector — pass ``--dim 5120``), drawn around
N/2000 cluster centres with a 32-d latent spread (so neighbours are well defined, as for
real image embeddings) and with planted near-duplicate groups (~60 % of the vectors are in
groups of 2–8 copies at cosine ≈ 0.9–0.99 of one original), the job of ``nnutils.dedup``:

- ``build s``: time to build the index (IVF: k-means training included) with
  :func:`nnutils.scale.index.build_index` defaults;
- ``search s``: time to find the k = 10 nearest neighbours of all N vectors (self-kNN).
  Up to ``--full-max`` (default 100k) all N queries are searched; above, a random sample of
  ``--sample-queries`` (default 10k) is timed and extrapolated linearly to N (marked
  ``extrapolated from …``): exact search of 1M×1M at 512-d is ~1e15 flops, hours on 2
  cores, and IVF with its default nprobe compares each query with ~N/16 vectors;
- ``peak RSS GiB``: the peak resident memory of the process that ran the case
  (``resource.getrusage``; each case runs in its own process, so cases do not mix), the
  embeddings themselves included (``data GiB``); tracemalloc would not see faiss's memory;
- ``index MiB``: :func:`nnutils.scale.index.memory_bytes` (the serialised index);
- ``recall@10``: |approximate top-10 ∩ exact top-10| / 10 over 1,000 random queries;
- ``dup recall@10``: the fraction of each query's planted duplicates found in its top 10
  (what grouping needs), over the same queries that have duplicates;
- ``dense``: what imagededup does — the full N×N float32 similarity matrix (one matmul) then
  the top 10 of each row; run only where N²·4 bytes fit in half the RAM, otherwise its
  memory (N²·4 bytes: 40 GB at 100k, 4 TB at 1M) is printed and marked "does not fit".

Columns added for the compact indexes: ``exact dup recall@10`` is the planted-duplicate recall
of the exact top 10 of the same queries (what any index can at best reach: a query with more
than 9 copies cannot have all of them in its top 10) and ``dup recall / exact`` the ratio
(issue 13's goal at 10M: ≥ 0.98).

The vectors are generated in chunks (float32 throughout) and written sequentially into a
temporary ``.npy`` file (under ``$TMPDIR`` or ``--tmp-dir``), so the 1M×512 case (2 GiB of
embeddings) fits easily in 24 GiB. The exact top 10 of the recall queries is computed by
streaming over that file in chunks (one (1000 × chunk) product at a time), and each query's
planted duplicates come from the sorted labels, so neither needs the N vectors in RAM.

Compact indexes for N beyond RAM (10M × 512 float32 is 19 GiB), built with
``faiss.index_factory`` on the file itself: the coarse k-means and the codebooks are trained
on a random sample of ``--train-size`` rows (default 200k), then the vectors are added in
chunks read with plain file reads (never memory-mapped, so the file's pages are the kernel's
page cache, not the process's RSS); ``--nlist`` cells (4096), ``--nprobe`` searched (32):

- ``ivfpq-rerank``: ``IVF<nlist>,PQ<m>np`` (m = ``--pq-m`` bytes per vector, 64) finds
  ``--rerank`` candidates (k' = 100) per query, re-scored, keeping the top 10. With
  ``--rerank-from sq8`` (default) the re-scoring uses 8-bit scalar-quantised copies of the
  vectors held in RAM (faiss ``IndexRefine`` with an ``IndexScalarQuantizer``: D more bytes
  per vector); with ``--rerank-from file`` it uses the exact float32 rows read back from the
  file, which is exact but bound by the disk: on this machine's disk ~500–1,000 random
  2 KiB reads/s once the file is larger than the page cache (10M: ~0.1–0.2 s per query for
  k' = 100, so weeks for a full self-kNN).
- ``ivfsq8``: ``IVF<nlist>,SQ8`` (D bytes per vector), its own SQ8 scores, no re-ranking
  (with ``--rerank-from file``: k' candidates re-scored from the file).

``search s`` includes the re-scoring. Only these two kinds run when the embeddings are
larger than ``--ram-max-gib`` (default a third of the RAM); the in-RAM kinds (flat / ivf /
hnsw / ivfpq / dense) are then listed as not run. ``--data-cache DIR`` keeps the generated
vectors, labels and exact top 10 there (named by N, dim and seed) and reuses them in later
runs (10M: ~17 min of generation and ~10 min of exact search saved).

Prints one markdown table per run (and writes it as CSV with ``--out``); no asserts. Timings depend on the other load on
the machine: run it on an idle one.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

K = 10
CHUNK = 65_536                    # generation chunk (part of the data's definition: keep it)
READ_CHUNK = 131_072              # rows per sequential read of the file (256 MiB at 512-d)
STREAM_KINDS = ("ivfpq-rerank", "ivfsq8")
IN_RAM_KINDS = ("flat", "ivf", "hnsw", "ivfpq")
GROUP_SIZES = np.array([1, 2, 3, 4, 5, 6, 8])
GROUP_P = np.array([0.70, 0.12, 0.07, 0.04, 0.03, 0.02, 0.02])   # of groups; ~60 % of vectors are in groups ≥ 2


# ----------------------------------------------------------------------------- data
def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def make_embeddings(path: Path, n: int, dim: int, seed: int = 0, latent: int = 32) -> tuple[Path, Path]:
    """Write ``n`` synthetic unit vectors (float32, ``path``.npy) and their group labels (int64).

    x = unit(centre + u + 0.3·e) with u a 32-d latent direction (‖u‖ ≈ 1) and e isotropic
    noise (‖e‖ ≈ 1); a group's copies are unit(x + s·e') with s ~ U(0.15, 0.45). Generated
    chunk by chunk (peak memory ~ a few chunks) and written to the file sequentially (it is
    never memory-mapped for writing), deterministic for (n, dim, seed).
    """
    rng = np.random.default_rng(seed)
    n_centres = max(8, n // 2000)
    centres = _unit(rng.standard_normal((n_centres, dim), dtype=np.float32))
    w = rng.standard_normal((latent, dim), dtype=np.float32) / np.sqrt(dim)
    f = open(str(path) + ".npy", "wb")
    np.lib.format.write_array_header_1_0(f, {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)),
                                             "fortran_order": False, "shape": (n, dim)})
    labels = np.empty(n, np.int64)
    start, next_group = 0, 0
    while start < n:
        crng = np.random.default_rng([seed, start])
        sizes = crng.choice(GROUP_SIZES, size=CHUNK, p=GROUP_P)
        sizes = sizes[: np.searchsorted(np.cumsum(sizes), min(CHUNK, n - start)) + 1]
        sizes[-1] -= max(0, sizes.sum() - min(CHUNK, n - start))
        g = len(sizes)
        z = crng.standard_normal((g, latent), dtype=np.float32) / np.sqrt(latent)
        base = centres[crng.integers(0, n_centres, g)] + z @ w \
            + 0.3 * crng.standard_normal((g, dim), dtype=np.float32) / np.sqrt(dim)
        base = _unit(base)
        gid = np.repeat(np.arange(g), sizes)
        first = np.r_[0, np.cumsum(sizes)[:-1]]
        strength = crng.uniform(0.15, 0.45, (len(gid), 1)).astype(np.float32)
        strength[first] = 0                                  # the original itself
        x = _unit(base[gid] + strength * crng.standard_normal((len(gid), dim), dtype=np.float32) / np.sqrt(dim))
        perm = crng.permutation(len(gid))
        x[perm].tofile(f)                                    # rows start .. start + len(gid), in order
        labels[start:start + len(gid)] = next_group + gid[perm]
        start += len(gid)
        next_group += g
    f.close()
    np.save(str(path) + "_labels.npy", labels)
    return Path(str(path) + ".npy"), Path(str(path) + "_labels.npy")


class NpyRows:
    """Rows of a 2-d float32 ``.npy`` file, read with ``pread`` (not memory-mapped).

    Reads go through the kernel's page cache into fresh arrays, so a pass over a 20 GB file
    costs the process only the chunk it holds (a memory map would count every touched page
    in its RSS).

    Parameters
    ----------
    path : str or Path
        A C-ordered float32 ``.npy`` file of shape (N, D).
    """

    def __init__(self, path):
        m = np.load(path, mmap_mode="r")           # header only: offset, shape and dtype
        if m.dtype != np.float32 or m.ndim != 2 or np.isfortran(m):
            raise ValueError(f"{path}: expected a C-ordered 2-d float32 array, got {m.dtype} {m.shape}")
        self.shape, self.offset = tuple(m.shape), int(m.offset)
        del m
        self.row_bytes = self.shape[1] * 4
        self.fd = os.open(str(path), os.O_RDONLY)

    def __len__(self) -> int:
        return self.shape[0]

    def _pread_into(self, out: np.ndarray, row: int) -> None:
        view, pos = memoryview(out).cast("B"), self.offset + row * self.row_bytes
        while len(view):
            got = os.preadv(self.fd, [view], pos)
            if got <= 0:
                raise OSError(f"short read at byte {pos}")
            view, pos = view[got:], pos + got

    def read(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` (clipped to N) as a new (stop - start, D) float32 array."""
        stop = min(int(stop), self.shape[0])
        out = np.empty((max(0, stop - int(start)), self.shape[1]), np.float32)
        if len(out):
            self._pread_into(out, int(start))
        return out

    def take(self, ids) -> np.ndarray:
        """Rows ``ids`` (any order, repeats allowed) as a new (len(ids), D) float32 array."""
        ids = np.asarray(ids, np.int64)
        out = np.empty((len(ids), self.shape[1]), np.float32)
        order = np.argsort(ids, kind="stable")              # ascending offsets: friendlier to the disk
        for j in order:
            self._pread_into(out[j], int(ids[j]))
        return out

    def chunks(self, size: int = READ_CHUNK):
        """Yield ``(start, rows)`` over the whole file, ``size`` rows at a time."""
        for s in range(0, self.shape[0], size):
            yield s, self.read(s, s + size)

    def close(self) -> None:
        os.close(self.fd)


def exact_topk(data_path: Path, qids: np.ndarray, k: int) -> np.ndarray:
    """The exact top ``k`` (inner product) of rows ``qids`` among all rows, streaming the file in chunks.

    Returns (len(qids), k) int64 row ids, most similar first (the query itself included).
    """
    import faiss
    rows = NpyRows(data_path)
    q = rows.take(qids)
    best_s = np.full((len(q), k), -np.inf, np.float32)
    best_i = np.full((len(q), k), -1, np.int64)
    for start, x in rows.chunks():
        s, i = faiss.knn(q, x, min(k, len(x)), metric=faiss.METRIC_INNER_PRODUCT)
        s_all, i_all = np.hstack([best_s, s]), np.hstack([best_i, i + start])
        top = np.argsort(-s_all, axis=1, kind="stable")[:, :k]
        best_s, best_i = np.take_along_axis(s_all, top, 1), np.take_along_axis(i_all, top, 1)
    rows.close()
    return best_i


def planted_partners(labels: np.ndarray, qids: np.ndarray) -> list[list[int]]:
    """For each query row, the other rows of its planted group (sorted labels: no N-long scan per query)."""
    order = np.argsort(labels, kind="stable")
    sorted_labels = labels[order]
    out = []
    for q in qids:
        lo, hi = np.searchsorted(sorted_labels, labels[q], "left"), np.searchsorted(sorted_labels, labels[q], "right")
        out.append(sorted(int(r) for r in order[lo:hi] if r != q))
    return out


def dup_recall(ids_q: np.ndarray, partners: list) -> float:
    """Mean share of each query's planted duplicates found in its row of ``ids_q`` (queries with some)."""
    dups = [len(set(p) & set(row.tolist())) / len(p) for row, p in zip(ids_q, partners) if p]
    return float(np.mean(dups)) if dups else float("nan")


# ----------------------------------------------------------------------------- one case (own process)
def _rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20    # KiB on Linux


def _rerank(rows: NpyRows, q: np.ndarray, cand: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact re-scoring of candidate ids (b, k') with their float32 rows from the file; the top ``k``."""
    flat = cand.ravel()
    uniq, inv = np.unique(np.where(flat < 0, 0, flat), return_inverse=True)
    vec = rows.take(uniq)
    s = np.einsum("bd,bkd->bk", q, vec[inv.reshape(cand.shape)])
    s[cand < 0] = -np.inf
    top = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(s, top, 1), np.take_along_axis(cand, top, 1)


def run_stream_case(a: dict) -> dict:
    """Build and search a compact IVF index (PQ or SQ8 codes) over the file, re-ranking as asked."""
    import faiss
    from nnutils.scale import index as I
    rows = NpyRows(a["data"])
    n, d = rows.shape
    pq = a["kind"] == "ivfpq-rerank"
    codes = f"PQ{a['pq_m']}np" if pq else "SQ8"                   # np: no polysemous training
    nlist = int(min(a["nlist"], max(1, n // 39)))
    from_file = a["rerank_from"] == "file"
    out = dict(N=n, method=a["kind"], data_gib=round(n * d * 4 / 2**30, 2))
    t0 = time.perf_counter()
    base = faiss.index_factory(d, f"IVF{nlist},{codes}", faiss.METRIC_INNER_PRODUCT)
    ivf = faiss.extract_index_ivf(base)
    ivf.cp.seed, ivf.cp.verbose = int(a["seed"]), False
    kp = int(min(n, max(K, a["rerank"])))
    if pq and not from_file:                                        # PQ short list re-scored by in-RAM SQ8 codes
        index = faiss.IndexRefine(base, faiss.IndexScalarQuantizer(d, faiss.ScalarQuantizer.QT_8bit,
                                                                    faiss.METRIC_INNER_PRODUCT))
        index.k_factor = kp / K
        rerank = f"rerank k'={kp} by SQ8 codes in RAM"
    else:
        index = base
        rerank = f"rerank k'={kp} exact from the file" if from_file else "no rerank (SQ8 scores)"
    n_train = int(min(n, max(a["train_size"], 39 * nlist, 256 * 39 if pq else 0)))
    train_ids = np.sort(np.random.default_rng(a["seed"]).choice(n, n_train, replace=False))
    index.train(rows.take(train_ids))
    for _, x in rows.chunks():
        index.add(x)
    out["build_s"] = time.perf_counter() - t0
    ivf.nprobe = int(min(nlist, a["nprobe"]))
    out["index_mib"] = I.memory_bytes(index) / 2**20

    def search(ids_q: np.ndarray, batch: int = 500) -> np.ndarray:
        res = np.empty((len(ids_q), K), np.int64)
        for s in range(0, len(ids_q), batch):
            q = rows.take(ids_q[s:s + batch])
            if from_file:
                _, cand = index.search(q, kp)
                res[s:s + batch] = _rerank(rows, q, cand, K)[1]
            else:
                res[s:s + batch] = index.search(q, K)[1]
        return res

    m = min(n, a["sample_queries"]) if n > a["full_max"] else n
    sample = np.sort(np.random.default_rng(1).choice(n, m, replace=False)) if m < n else np.arange(n)
    t0 = time.perf_counter()
    search(sample)
    out["search_s"] = (time.perf_counter() - t0) * n / m
    out["search_note"] = ("" if m == n else f"extrapolated from {m:,} queries; ") + "data on disk"
    ids_q = search(np.array(a["qids"], np.int64))
    out["params"] = f"nlist={nlist} nprobe={ivf.nprobe} {codes} {rerank} train={n_train:,}"
    rows.close()
    return _score(out, ids_q, a)


def _score(out: dict, ids_q: np.ndarray, a: dict) -> dict:
    gt = np.array(a["gt"], np.int64)
    out["recall@10"] = float(np.mean([len(set(a_) & set(b_)) / K for a_, b_ in zip(ids_q, gt)]))
    out["dup_recall@10"] = dup_recall(ids_q, a["partners"])
    out["peak_rss_gib"] = _rss_gib()
    return out


def run_case(a: dict) -> dict:
    """Build + self-search for one (N, kind); runs in a fresh process so peak RSS is its own."""
    if a["kind"] in STREAM_KINDS:
        return run_stream_case(a)
    from nnutils.scale import index as I
    x = np.load(a["data"])
    qids = np.array(a["qids"], np.int64)
    n = len(x)
    out = dict(N=n, method=a["kind"], data_gib=round(x.nbytes / 2**30, 2))
    if a["kind"] == "dense":
        t0 = time.perf_counter()
        s = x @ x.T                                       # the full N×N float32 similarity matrix
        top = np.argpartition(-s, K - 1, axis=1)[:, :K]
        order = np.argsort(-np.take_along_axis(s, top, 1), axis=1)
        ids_q = np.take_along_axis(top, order, 1)[qids]
        out.update(build_s=0.0, search_s=time.perf_counter() - t0, search_note="",
                   index_mib=s.nbytes / 2**20)
        del s
    else:
        t0 = time.perf_counter()
        idx = I.build_index(x, a["kind"])
        out["build_s"] = time.perf_counter() - t0
        out["index_mib"] = I.memory_bytes(idx) / 2**20
        m = n if n <= a["full_max"] else min(n, a["sample_queries"])
        rng = np.random.default_rng(1)
        sample = np.arange(n) if m == n else np.sort(rng.choice(n, m, replace=False))
        t0 = time.perf_counter()
        _, ids_s = I.search(idx, x[sample] if m < n else x, K)
        dt = time.perf_counter() - t0
        out["search_s"] = dt * n / m
        out["search_note"] = "" if m == n else f"extrapolated from {m:,} queries"
        if m == n:
            ids_q = ids_s[qids]
        else:
            _, ids_q = I.search(idx, x[qids], K)
        params = {"ivf": lambda i: f"nlist={i.nlist} nprobe={i.nprobe}",
                  "hnsw": lambda i: f"M={i.hnsw.nb_neighbors(1)} efC={i.hnsw.efConstruction} "
                                    f"efS={i.hnsw.efSearch}"}
        import faiss
        out["params"] = params.get(I.index_kind(idx), lambda i: "")(faiss.downcast_index(idx))
    return _score(out, ids_q, a)


# ----------------------------------------------------------------------------- driver
def _total_ram() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--quick", action="store_true", help="sizes 10k and 100k only")
    ap.add_argument("--dim", type=int, default=512, help="embedding dimension (ours: 512; pretrained grid: 5120)")
    ap.add_argument("--kinds", nargs="+", default=["flat", "ivf", "hnsw"], choices=[*IN_RAM_KINDS, *STREAM_KINDS])
    ap.add_argument("--no-dense", action="store_true", help="skip the dense N×N baseline")
    ap.add_argument("--full-max", type=int, default=100_000,
                    help="search all N queries up to this N; above, time a sample and extrapolate (default 100k)")
    ap.add_argument("--sample-queries", type=int, default=10_000,
                    help="queries timed above --full-max (default 10k)")
    ap.add_argument("--recall-queries", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--nlist", type=int, default=4096, help="IVF cells of ivfpq-rerank / ivfsq8 (default 4096)")
    ap.add_argument("--nprobe", type=int, default=32, help="cells searched by ivfpq-rerank / ivfsq8 (default 32)")
    ap.add_argument("--pq-m", type=int, default=64, help="ivfpq-rerank bytes per vector (8-bit sub-quantisers)")
    ap.add_argument("--rerank", type=int, default=100, help="ivfpq-rerank: candidates k' re-scored (default 100)")
    ap.add_argument("--rerank-from", choices=["sq8", "file"], default="sq8",
                    help="re-score with SQ8 codes in RAM (default) or the exact float32 rows read from the file")
    ap.add_argument("--data-cache", default=None,
                    help="keep and reuse the generated vectors, labels and exact top 10 in this folder")
    ap.add_argument("--train-size", type=int, default=200_000, help="training sample of ivfpq-rerank / ivfsq8")
    ap.add_argument("--ram-max-gib", type=float, default=None,
                    help="above this many GiB of embeddings only ivfpq-rerank / ivfsq8 run (default: RAM / 3)")
    ap.add_argument("--tmp-dir", default=None, help="where the temporary .npy goes (default $TMPDIR or /tmp)")
    ap.add_argument("--out", help="also write the table as CSV here")
    ap.add_argument("--_case", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a._case:
        print(json.dumps(run_case(json.loads(Path(a._case).read_text()))))
        return 0
    import faiss
    import pandas as pd
    sizes = [10_000, 100_000] if a.quick else a.sizes
    print(f"machine: {os.cpu_count()} cores, {platform.processor() or platform.machine()}, "
          f"{_total_ram() / 2**30:.0f} GiB RAM; faiss {faiss.__version__} (OpenMP threads "
          f"{faiss.omp_get_max_threads()}); dim={a.dim}, k={K}", flush=True)
    rows = []
    ram_max = (_total_ram() / 3 if a.ram_max_gib is None else a.ram_max_gib * 2**30)
    with tempfile.TemporaryDirectory(prefix="nnutils-scale-", dir=a.tmp_dir) as tmp:
        for n in sizes:
            t0 = time.perf_counter()
            folder = Path(a.data_cache or tmp)
            folder.mkdir(parents=True, exist_ok=True)
            stem = folder / f"emb{n}_d{a.dim}_s{a.seed}"
            data, labels = Path(str(stem) + ".npy"), Path(str(stem) + "_labels.npy")
            reused = bool(a.data_cache and data.is_file() and labels.is_file())
            if not reused:
                data, labels = make_embeddings(stem, n, a.dim, a.seed)
            t_gen = time.perf_counter() - t0
            qids = np.sort(np.random.default_rng(a.seed + 7).choice(n, min(n, a.recall_queries), replace=False))
            gt_file = Path(str(stem) + f"_gt{len(qids)}.npy")
            if a.data_cache and gt_file.is_file():
                gt = np.load(gt_file)
            else:
                gt = exact_topk(data, qids, K)
                if a.data_cache:
                    np.save(gt_file, gt)
            partners = planted_partners(np.load(labels), qids)
            exact_dup = dup_recall(gt, partners)
            print(f"N={n:,}: data {t_gen:.1f} s generation, {time.perf_counter() - t0 - t_gen:.1f} s exact top-10 "
                  f"of {len(qids)} queries (streamed){' (data reused from ' + str(folder) + ')' if reused else ''}; "
                  f"exact dup recall@10 {exact_dup:.4f}", flush=True)
            cases = list(a.kinds)
            data_bytes = n * a.dim * 4
            if data_bytes > ram_max:
                for kind in [c for c in cases if c not in STREAM_KINDS] + ([] if a.no_dense else ["dense"]):
                    rows.append(dict(N=n, method=kind, search_note=f"not run: the embeddings ({data_bytes / 2**30:.1f} "
                                     f"GiB) exceed --ram-max-gib {ram_max / 2**30:.1f}; use {'/'.join(STREAM_KINDS)}"))
                cases = [c for c in cases if c in STREAM_KINDS]
            elif not a.no_dense:
                if n * n * 4 <= _total_ram() / 2:
                    cases.append("dense")
                else:
                    rows.append(dict(N=n, method="dense", index_mib=n * n * 4 / 2**20,
                                     search_note=f"does not fit: N²·4 = {n * n * 4 / 1e9:,.0f} GB"))
            for kind in cases:
                spec = dict(kind=kind, data=str(data), labels=str(labels), qids=qids.tolist(), gt=gt.tolist(),
                            partners=partners, full_max=a.full_max, sample_queries=a.sample_queries, seed=a.seed,
                            nlist=a.nlist, nprobe=a.nprobe, pq_m=a.pq_m, rerank=a.rerank, train_size=a.train_size,
                            rerank_from=a.rerank_from)
                spec_path = Path(tmp) / "case.json"
                spec_path.write_text(json.dumps(spec))
                t1 = time.perf_counter()
                res = subprocess.run([sys.executable, __file__, "--_case", str(spec_path)],
                                     capture_output=True, text=True)
                if res.returncode != 0:
                    print(res.stderr[-3000:], file=sys.stderr)
                    rows.append(dict(N=n, method=kind, search_note=f"FAILED (exit {res.returncode})"))
                    continue
                r = json.loads(res.stdout.strip().splitlines()[-1])
                r.update(exact_dup_recall=exact_dup, dup_ratio=r["dup_recall@10"] / exact_dup)
                rows.append(r)
                print(f"  {kind}: {time.perf_counter() - t1:.0f} s wall  {r}", flush=True)
            if not a.data_cache:
                for p in (data, labels):
                    p.unlink()
    df = pd.DataFrame(rows)
    cols = ["N", "method", "params", "build_s", "search_s", "search_note", "peak_rss_gib", "data_gib", "index_mib",
            "recall@10", "dup_recall@10", "exact_dup_recall", "dup_ratio"]
    df = df.reindex(columns=cols)
    show = df.rename(columns={"build_s": "build s", "search_s": "search s (all N, k=10)", "search_note": "note",
                              "peak_rss_gib": "peak RSS GiB", "data_gib": "data GiB", "index_mib": "index MiB",
                              "dup_recall@10": "dup recall@10", "exact_dup_recall": "exact dup recall@10",
                              "dup_ratio": "dup recall / exact"})
    print()
    print(show.to_markdown(index=False, floatfmt=".3g"))
    if a.out:
        df.to_csv(a.out, index=False)
        print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
