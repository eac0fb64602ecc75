"""Self-kNN at scale: faiss flat / IVF / HNSW vs the dense N×N similarity matrix.

    python bench/scale.py                         # N = 10k, 100k, 1M at 512-d (~35 min on 2 shared cores)
    python bench/scale.py --quick                 # N = 10k, 100k (~10 min)
    python bench/scale.py --sizes 10000 --dim 5120 --kinds flat hnsw --out scale.csv

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

The vectors are generated in chunks (float32 throughout) into a temporary ``.npy`` file, so
the 1M×512 case (2 GiB of embeddings) fits easily in 24 GiB. Prints one markdown table per
run (and writes it as CSV with ``--out``); no asserts. Timings depend on the other load on
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
CHUNK = 65_536
GROUP_SIZES = np.array([1, 2, 3, 4, 5, 6, 8])
GROUP_P = np.array([0.70, 0.12, 0.07, 0.04, 0.03, 0.02, 0.02])   # of groups; ~60 % of vectors are in groups ≥ 2


# ----------------------------------------------------------------------------- data
def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def make_embeddings(path: Path, n: int, dim: int, seed: int = 0, latent: int = 32) -> tuple[Path, Path]:
    """Write ``n`` synthetic unit vectors (float32, ``path``.npy) and their group labels (int64).

    x = unit(centre + u + 0.3·e) with u a 32-d latent direction (‖u‖ ≈ 1) and e isotropic
    noise (‖e‖ ≈ 1); a group's copies are unit(x + s·e') with s ~ U(0.15, 0.45). Generated
    chunk by chunk (peak memory ~ a few chunks), deterministic for (n, dim, seed).
    """
    rng = np.random.default_rng(seed)
    n_centres = max(8, n // 2000)
    centres = _unit(rng.standard_normal((n_centres, dim), dtype=np.float32))
    w = rng.standard_normal((latent, dim), dtype=np.float32) / np.sqrt(dim)
    emb = np.lib.format.open_memmap(str(path) + ".npy", mode="w+", dtype=np.float32, shape=(n, dim))
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
        emb[start:start + len(gid)] = x[perm]
        labels[start:start + len(gid)] = next_group + gid[perm]
        start += len(gid)
        next_group += g
    emb.flush()
    del emb
    np.save(str(path) + "_labels.npy", labels)
    return Path(str(path) + ".npy"), Path(str(path) + "_labels.npy")


def exact_topk(data_path: Path, qids: np.ndarray, k: int) -> np.ndarray:
    import faiss
    x = np.load(data_path, mmap_mode="r")
    _, ids = faiss.knn(np.ascontiguousarray(x[qids]), x, k, metric=faiss.METRIC_INNER_PRODUCT)
    return ids


# ----------------------------------------------------------------------------- one case (own process)
def _rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20    # KiB on Linux


def run_case(a: dict) -> dict:
    """Build + self-search for one (N, kind); runs in a fresh process so peak RSS is its own."""
    from nnutils.scale import index as I
    x = np.load(a["data"])
    labels = np.load(a["labels"])
    qids = np.array(a["qids"], np.int64)
    gt = np.array(a["gt"], np.int64)
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
    out["recall@10"] = float(np.mean([len(set(a_) & set(b_)) / K for a_, b_ in zip(ids_q, gt)]))
    dups = []
    for q, row in zip(qids, ids_q):
        partners = set(np.flatnonzero(labels == labels[q]).tolist()) - {int(q)}
        if partners:
            dups.append(len(partners & set(row.tolist())) / len(partners))
    out["dup_recall@10"] = float(np.mean(dups)) if dups else float("nan")
    out["peak_rss_gib"] = _rss_gib()
    return out


# ----------------------------------------------------------------------------- driver
def _total_ram() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--quick", action="store_true", help="sizes 10k and 100k only")
    ap.add_argument("--dim", type=int, default=512, help="embedding dimension (ours: 512; pretrained grid: 5120)")
    ap.add_argument("--kinds", nargs="+", default=["flat", "ivf", "hnsw"], choices=["flat", "ivf", "hnsw", "ivfpq"])
    ap.add_argument("--no-dense", action="store_true", help="skip the dense N×N baseline")
    ap.add_argument("--full-max", type=int, default=100_000,
                    help="search all N queries up to this N; above, time a sample and extrapolate (default 100k)")
    ap.add_argument("--sample-queries", type=int, default=10_000,
                    help="queries timed above --full-max (default 10k)")
    ap.add_argument("--recall-queries", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
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
    with tempfile.TemporaryDirectory(prefix="nnutils-scale-") as tmp:
        for n in sizes:
            t0 = time.perf_counter()
            data, labels = make_embeddings(Path(tmp) / f"emb{n}", n, a.dim, a.seed)
            qids = np.sort(np.random.default_rng(a.seed + 7).choice(n, min(n, a.recall_queries), replace=False))
            gt = exact_topk(data, qids, K)
            print(f"N={n:,}: data {time.perf_counter() - t0:.1f} s (generation + exact top-10 of "
                  f"{len(qids)} queries)", flush=True)
            cases = list(a.kinds)
            if not a.no_dense:
                if n * n * 4 <= _total_ram() / 2:
                    cases.append("dense")
                else:
                    rows.append(dict(N=n, method="dense", index_mib=n * n * 4 / 2**20,
                                     search_note=f"does not fit: N²·4 = {n * n * 4 / 1e9:,.0f} GB"))
            for kind in cases:
                spec = dict(kind=kind, data=str(data), labels=str(labels), qids=qids.tolist(), gt=gt.tolist(),
                            full_max=a.full_max, sample_queries=a.sample_queries)
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
                rows.append(r)
                print(f"  {kind}: {time.perf_counter() - t1:.0f} s wall  {r}", flush=True)
            for p in (data, labels):
                p.unlink()
    df = pd.DataFrame(rows)
    cols = ["N", "method", "params", "build_s", "search_s", "search_note", "peak_rss_gib", "data_gib", "index_mib",
            "recall@10", "dup_recall@10"]
    df = df.reindex(columns=cols)
    show = df.rename(columns={"build_s": "build s", "search_s": "search s (all N, k=10)", "search_note": "note",
                              "peak_rss_gib": "peak RSS GiB", "data_gib": "data GiB", "index_mib": "index MiB",
                              "dup_recall@10": "dup recall@10"})
    print()
    print(show.to_markdown(index=False, floatfmt=".3g"))
    if a.out:
        df.to_csv(a.out, index=False)
        print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
