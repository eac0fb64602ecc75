"""Prediction speed on the embedded data's test split: decoding, model, end to end, per runtime.

    python bench/speed.py                                   # runs/cpu model on data/lun-embedded
    python bench/speed.py --model runs/smoke/models/00_pretrained.keras --data-dir data/lun-embedded-smoke

For each runtime — ``keras`` (tf.function), ``tflite`` (float32, XNNPACK) and
``tflite-dynamic`` (dynamic-range int8 weights) — it measures the model alone (img/s at
batch 32 on random images, from the median batch time) and the whole prediction of the
test set: decode every unique image once (``decode_square``, 2 threads overlapping the
model), embed, score every pair (unreadable → 0). Scores are compared with the Keras ones
(max abs Δ cosine, "max Δcos") and, when the data has ``test_labels.csv``, ROC AUC is
reported so a quantised model's accuracy can be judged. Decoding alone is compared
single-threaded: PIL ``load_square`` vs ``decode_square`` (simplejpeg, any k/8 DCT scale)
vs ``decode_square(pil_scale=True)``. The ``.tflite`` conversions are cached next to the
model (``load_embedder``). Prints markdown tables; no asserts.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from nnutils.data import pairs as P  # noqa: E402
from nnutils.train.features import load_square  # noqa: E402
from nnutils.data.decode import decode_square  # noqa: E402
from nnutils.models.embedders import load_embedder, score_pairs
from nnutils.models.runtime import tflite_path_for

RUNTIMES = {"keras": ("keras", "none"), "tflite": ("tflite", "none"), "tflite-dynamic": ("tflite", "dynamic"),
            "tflite-float16": ("tflite", "float16")}


def default_model() -> str:
    models = ROOT / "runs" / "cpu" / "models"
    best = models / "06_hard_negatives.keras"
    return str(best if best.exists() else models / "00_pretrained.keras")


def machine() -> str:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        load = " load average %.2f %.2f %.2f" % os.getloadavg()
    except OSError:
        load = ""
    return f"nproc={os.cpu_count()} (usable {len(os.sched_getaffinity(0))}), CPU: {cpu}, {platform.python_version()};{load}"


def table(rows: list[dict], cols: list[str]) -> str:
    def fmt(v):
        if isinstance(v, float):
            return "nan" if np.isnan(v) else (f"{v:.4g}" if abs(v) < 1e4 else f"{v:.0f}")
        return str(v)
    out = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    out += ["| " + " | ".join(fmt(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(out)


def bench_decode(paths: list[str], size: int, n: int) -> list[dict]:
    sample = [p for p in paths if p and os.path.isfile(p)][:n]
    for p in sample:  # warm the page cache: time decoding, not the disk
        Path(p).read_bytes()
    ref = [load_square(p, size) for p in sample]
    decoders = {"PIL load_square": lambda p: load_square(p, size),
                "decode_square (any k/8 DCT scale)": lambda p: decode_square(p, size),
                "decode_square(pil_scale=True)": lambda p: decode_square(p, size, pil_scale=True)}
    best, out = {n: np.inf for n in decoders}, {}
    for _ in range(3):  # take turns, keep each one's best round
        for name, fn in decoders.items():
            t = time.perf_counter()
            out[name] = [fn(p) for p in sample]
            best[name] = min(best[name], time.perf_counter() - t)
    rows = []
    for name in decoders:
        diffs = [np.abs(a - b).mean() for a, b in zip(out[name], ref) if a is not None and b is not None]
        rows.append({"decoder": name, "ms/image": 1e3 * best[name] / max(1, len(sample)),
                     "mean absΔ vs load_square": float(np.mean(diffs)) if diffs else float("nan"),
                     "p99 absΔ": float(np.percentile(diffs, 99)) if diffs else float("nan"),
                     "images": len(sample)})
    return rows


def model_throughput(embedders: dict, batch: int, seconds: float) -> dict:
    """img/s of each model alone at ``batch``: batch / median time of one batch.

    The runtimes take turns (a few batches each, round after round) so that a busy machine
    slows them all alike; the median is robust to the odd slow batch.
    """
    size = next(iter(embedders.values())).size
    x = np.random.default_rng(0).uniform(0, 255, (batch, size, size, 3)).astype(np.float32)
    times = {n: [] for n in embedders}
    for e in embedders.values():
        e.embed_arrays(x, batch_size=batch)  # warm-up (tracing / allocation)
    t0 = time.perf_counter()
    while min(len(v) for v in times.values()) < 6 or time.perf_counter() - t0 < seconds * len(embedders):
        for n, e in embedders.items():
            for _ in range(2):
                t = time.perf_counter()
                e.embed_arrays(x, batch_size=batch)
                times[n].append(time.perf_counter() - t)
    return {n: batch / float(np.median(v)) for n, v in times.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=default_model(), help="a .keras embedder")
    ap.add_argument("--data-dir", default=str(ROOT / "data" / "lun-embedded"))
    ap.add_argument("--runtimes", default="keras,tflite,tflite-dynamic",
                    help=f"comma-separated, from {', '.join(RUNTIMES)}")
    ap.add_argument("--cache-dir", default=None, help="where .tflite conversions go (default: next to the model)")
    ap.add_argument("--threads", type=int, default=2, help="TFLite interpreter threads")
    ap.add_argument("--decode-workers", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--decode-sample", type=int, default=200, help="images for the decoding table")
    ap.add_argument("--model-seconds", type=float, default=3.0,
                    help="seconds per runtime spent on the model-only throughput")
    args = ap.parse_args(argv)

    data = Path(args.data_dir)
    lun = P.load_lun_folder(data)
    test = lun["test"]
    urls = P.unique_urls(test)
    path_of = P.resolve_images(urls, data / "images", progress=False)
    paths = [path_of[u] for u in urls]
    row_of = {u: i for i, u in enumerate(urls)}
    i1 = test.image_url1.map(row_of).to_numpy()
    i2 = test.image_url2.map(row_of).to_numpy()
    y = None
    if "test_labels" in lun:
        y = test[["ID"]].merge(lun["test_labels"], on="ID", how="left").is_same.to_numpy()

    print(f"# Prediction speed: {Path(args.model)}\n")
    print(f"- machine: {machine()}")
    print(f"- data: {data} — {len(test)} test pairs, {len(urls)} unique images "
          f"({sum(not (p and os.path.isfile(p)) for p in paths)} missing)")

    names = [r.strip() for r in args.runtimes.split(",") if r.strip()]
    embedders, load_s = {}, {}
    for name in names:
        runtime, quantize = RUNTIMES[name]
        cached = runtime == "tflite" and tflite_path_for(args.model, args.cache_dir, quantize).is_file()
        t = time.perf_counter()
        embedders[name] = load_embedder(args.model, runtime=runtime, cache_dir=args.cache_dir, quantize=quantize,
                                        threads=args.threads)
        load_s[name] = f"{time.perf_counter() - t:.1f}" + (" (cached)" if cached else "")
    size = next(iter(embedders.values())).size
    ips = model_throughput(embedders, args.batch_size, args.model_seconds)

    rows, scores = [], {}
    for name, emb in embedders.items():
        t = time.perf_counter()
        e, ok = emb.embed_paths(paths, batch_size=args.batch_size, decode_workers=args.decode_workers)
        s = score_pairs(e, ok, i1, i2)
        s = np.where(np.isnan(s), 0.0, s)  # unreadable → 0, the documented policy
        wall = time.perf_counter() - t
        scores[name] = s
        r = {"runtime": name, "load/convert s": load_s[name], "model img/s (b32)": ips[name], "end-to-end s": wall,
             "ms/pair": 1e3 * wall / len(test), "ms/image": 1e3 * wall / len(urls), "unreadable": int((~ok).sum())}
        if hasattr(emb, "path"):
            r["model MB"] = emb.path.stat().st_size / 2**20
        if y is not None:
            from sklearn.metrics import roc_auc_score
            r["ROC AUC"] = float(roc_auc_score(y, s))
        rows.append(r)
    ref = "keras" if "keras" in scores else ("tflite" if "tflite" in scores else None)
    for r in rows:
        r[f"max Δcos vs {ref}"] = float(np.abs(scores[r["runtime"]] - scores[ref]).max()) if ref else float("nan")
        if "tflite" in scores:
            r["max Δcos vs tflite"] = float(np.abs(scores[r["runtime"]] - scores["tflite"]).max())

    print(f"- model input {size}×{size}, batch {args.batch_size}, TFLite threads {args.threads}, "
          f"decode workers {args.decode_workers}\n")
    cols = ["runtime", "load/convert s", "model MB", "model img/s (b32)", "end-to-end s", "ms/pair", "ms/image",
            f"max Δcos vs {ref}", "max Δcos vs tflite", "ROC AUC", "unreadable"]
    print("## Runtimes (end to end = decode each unique image once + embed + score all pairs)\n")
    print(table(rows, [c for c in dict.fromkeys(cols) if any(c in r for r in rows)]))
    print("\n## Decoding alone (1 thread, page cache warm)\n")
    print(table(bench_decode(paths, size, args.decode_sample),
                ["decoder", "ms/image", "mean absΔ vs load_square", "p99 absΔ", "images"]))
    print(f"\n- load average at the end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
