"""``query`` of one new photo against a 1M-vector persistent collection (issue 13's target: ≤ 50 ms).

    python bench/collection.py                          # 1M × 512, HNSW base, built once under --dir
    python bench/collection.py --n 100000 --dir /tmp/c100k
    python bench/collection.py --queries 30 --out collection.json

What it does:

1. Builds once (kept in ``--dir``, default ``/tmp/nnutils-bench-collection``; a rerun reuses
   it) a :class:`nnutils.scale.collection.Collection` of ``--n`` synthetic 512-d unit vectors
   (drawn around ``n/2000`` cluster centres with a 32-d latent spread, as ``bench/scale.py``),
   inserted with :meth:`~nnutils.scale.collection.Collection.add_vectors` and merged into an
   HNSW base file (M = 32, efConstruction = 40). The embedder is a tiny real model: the
   96×96 EfficientNet-Lite0 trunk with a 512-d head (ImageNet trunk weights, untrained head:
   its speed is a trained head's), run by the TFLite runtime, 2 threads.
2. Reopens the collection in a fresh object and loads its snapshot (``load s``: reading the
   base index file and the delta), then times ``--queries`` calls of
   :meth:`~nnutils.scale.collection.Collection.query` with one real photo each (scikit-image's
   sample photos, JPEG-encoded; a first call is a warm-up), without verification: decode +
   embed (``embed ms``) and search (``search ms``: the snapshot refresh, HNSW over the base
   plus the exact delta, tombstones) and the whole call (``query ms``: also the file digest,
   the SQLite look-ups of the candidates and the decision).
3. The cost of verifying each returned candidate, apart: the smoke run's verified decision
   (``runs/smoke``: notebook 10's fused decision with ORB) applied to ``--verify-pairs`` real
   pairs of the embedded smoke data (``ms per verified pair`` from
   :meth:`nnutils.decide.decision.Decision.decide`), skipped when the run is absent.

Why HNSW and not IVF for the base: a collection grows by merges, and HNSW takes new vectors
without retraining (IVF's k-means cells are trained once on a sample and drift as the
collection changes); its query cost grows ~log N (IVF's with the cells probed); and it needs no
training pass at build. Its costs: ~10 % more memory than the vectors for the graph, a slower
build (a one-off here: the base is rebuilt only when a fifth of it is removed), and no removal
(handled by tombstones). Peak RSS is printed (the 1M × 512 base is ~2.3 GiB).
"""
from __future__ import annotations

import argparse
import io
import json
import os
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

from nnutils.decide.decision import Decision  # noqa: E402
from nnutils.scale.collection import Collection  # noqa: E402

DIM = 512
CHUNK = 50_000


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def tiny_model(folder: Path) -> Path:
    """A 96×96 EfficientNet-Lite0 → 512-d embedder saved as .keras (built once)."""
    path = folder / "tiny512.keras"
    if path.is_file():
        return path
    from nnutils.models.efficientnet_lite import build_efficientnet_lite0
    from nnutils.models.heads import build_embedder, build_top
    trunk = build_efficientnet_lite0((96, 96, 3), weights="imagenet")
    top = build_top(None, tuple(trunk.output.shape[1:]), "gem", embedding_dim=DIM, hidden_dim=512)
    folder.mkdir(parents=True, exist_ok=True)
    build_embedder(trunk, top).save(path)
    return path


def synthetic(n: int, seed: int = 0):
    """Chunks of (n, 512) float32 unit vectors around n/2000 centres, spread in a 32-d latent space."""
    rng = np.random.default_rng(seed)
    n_c = max(1, n // 2000)
    centres = rng.normal(size=(n_c, DIM)).astype(np.float32)
    basis = rng.normal(size=(32, DIM)).astype(np.float32) / np.sqrt(32)
    for s in range(0, n, CHUNK):
        m = min(CHUNK, n - s)
        x = centres[rng.integers(0, n_c, m)] + 0.6 * rng.normal(size=(m, 32)).astype(np.float32) @ basis \
            + 0.05 * rng.normal(size=(m, DIM)).astype(np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        yield s, x


def build(folder: Path, n: int, model: Path) -> dict:
    coll = Collection.open(folder, model, threshold=0.8)
    have = len(coll)
    t0 = time.perf_counter()
    if have < n:
        for s, x in synthetic(n):
            if s + len(x) <= have:
                continue
            coll.add_vectors(x, [f"synthetic/{s + j:07d}.jpg" for j in range(len(x))],
                             [f"{s + j:040x}" for j in range(len(x))])
            print(f"  inserted {s + len(x):,} / {n:,} ({time.perf_counter() - t0:.0f} s)", flush=True)
    t_insert = time.perf_counter() - t0
    m = coll.merge(kind="hnsw", progress=True) if coll.delta_rows() else None
    st = coll.stats()
    coll.close()
    return dict(insert_s=round(t_insert, 1), merge=m, stats=st)


def photos(folder: Path, n: int) -> list[Path]:
    """``n`` real photos (scikit-image samples, JPEG; flipped/cropped variants past the first few)."""
    from PIL import Image
    from skimage import data as skd
    names = ["astronaut", "coffee", "chelsea", "rocket", "camera", "cat", "immunohistochemistry", "hubble_deep_field"]
    out = []
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        arr = getattr(skd, names[i % len(names)])()
        im = Image.fromarray(arr).convert("RGB")
        if i >= len(names):
            w, h = im.size
            c = (i // len(names)) * 7 % 40
            im = im.crop((c, c, w - c, h - c)).transpose(Image.FLIP_LEFT_RIGHT)
        p = folder / f"q{i:03d}.jpg"
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=90)
        p.write_bytes(buf.getvalue())
        out.append(p)
    return out


def time_queries(folder: Path, queries: list[Path], k: int) -> dict:
    t0 = time.perf_counter()
    coll = Collection.open(folder, create=False)
    _ = coll.embedder                                         # the model load is not a query's cost
    t1 = time.perf_counter()
    snap = coll.snapshot()
    t2 = time.perf_counter()
    coll.query(queries[0], k=k, verify=False)                 # warm-up
    emb, search, total = [], [], []
    for q in queries:
        t = time.perf_counter()
        r = coll.query(q, k=k, verify=False)
        total.append(time.perf_counter() - t)
        emb.append(r.report["embed_s"])
        search.append(r.report["search_s"])
    coll.close()
    ms = lambda v: dict(median=round(1000 * float(np.median(v)), 2), p95=round(1000 * float(np.percentile(v, 95)), 2))
    return dict(items=snap.size, base=snap.base_size, delta=len(snap.delta_ids), model_load_s=round(t1 - t0, 2),
                snapshot_load_s=round(t2 - t1, 2), embed_ms=ms(emb), search_ms=ms(search),
                embed_plus_search_ms=ms(np.add(emb, search)), query_ms=ms(total), queries=len(queries), k=k)


def verification_cost(run_dir: Path, n_pairs: int) -> dict | None:
    """ms per verified pair of the run's verified decision on real pairs of its data (None without one)."""
    import pandas as pd
    d = Decision.load_verified(run_dir) if (run_dir / "decision.json").exists() else None
    data = ROOT / "data" / "lun-embedded-smoke"
    if d is None or not (data / "test.csv").exists():
        return None
    pairs = pd.read_csv(data / "test.csv").head(n_pairs)
    p1 = [str(data / "images" / u) for u in pairs.image_url1]
    p2 = [str(data / "images" / u) for u in pairs.image_url2]
    lo, hi = d.verify_range
    scores = np.full(len(pairs), min(hi, max(lo, d.threshold)))   # every pair in the verify range
    _, rep = d.decide(scores, p1, p2)
    return dict(decision=repr(d), pairs_verified=rep.get("pairs_verified"), verify_s=rep.get("verify_s"),
                ms_per_verified_pair=rep.get("ms_per_verified_pair"), local_method=d.local_method)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dir", default="/tmp/nnutils-bench-collection")
    ap.add_argument("--queries", type=int, default=20)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--run", default=str(ROOT / "runs" / "smoke"), help="run folder whose verified decision is timed")
    ap.add_argument("--verify-pairs", type=int, default=40)
    ap.add_argument("--out", default=None, help="write the results as JSON")
    a = ap.parse_args(argv)
    folder = Path(a.dir)
    model = tiny_model(folder.parent / (folder.name + "-model"))
    print(f"collection {folder}: {a.n:,} × {DIM} synthetic vectors, model {model.name}")
    built = build(folder, a.n, model)
    print(f"built: insert {built['insert_s']} s, merge {built['merge']}")
    res = dict(n=a.n, dim=DIM, build=built,
               query=time_queries(folder, photos(folder.parent / (folder.name + "-photos"), a.queries), a.k))
    res["verification"] = verification_cost(Path(a.run), a.verify_pairs)
    res["peak_rss_gib"] = round(peak_rss_gib(), 2)
    q = res["query"]
    print(f"\nquery of one photo against {q['items']:,} vectors (base {q['base']:,} HNSW + delta {q['delta']:,}), "
          f"k = {q['k']}, {q['queries']} queries, after the index is loaded ({q['snapshot_load_s']} s):")
    print("| part | median ms | p95 ms |\n|---|---|---|")
    for name, key in (("decode + embed (TFLite, 512-d)", "embed_ms"), ("search (snapshot refresh + HNSW + delta)",
                                                                       "search_ms"),
                      ("embed + search", "embed_plus_search_ms"), ("whole query() call", "query_ms")):
        print(f"| {name} | {q[key]['median']} | {q[key]['p95']} |")
    v = res["verification"]
    if v:
        print(f"\nverification, apart: {v['ms_per_verified_pair']} ms per verified candidate "
              f"({v['pairs_verified']} pairs, {v['decision']})")
    print(f"peak RSS {res['peak_rss_gib']} GiB")
    if a.out:
        Path(a.out).write_text(json.dumps(res, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
