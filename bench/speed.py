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

``--decision RUN_DIR`` adds the one-pass table (issue 12 §2), each row from a cold cache
(a fresh temporary cache folder): the run's verifying decision end to end by
``predict_pairs`` with ``one_pass=False`` (embed with ``decode_square``, then decode and
extract the verified pairs' images again) and ``one_pass=True`` (one decode per image
gives embedding, local features and facts), and with every pair verified (the decision's
range widened to ``(-inf, inf)``); img/s of decode+embed alone, ms per image of the local
features, ms per verified pair of matching + geometry only (two cached feature sets),
ms per pair end to end. ``--delg`` adds the cost of reading DELF's features from the
global model's own forward pass (a two-output TFLite model: embedding and the stride-16
map through the run's DELF head) against the embedding alone and DELF's pyramid.

    python bench/speed.py --model runs/smoke/models/00_pretrained.keras --data-dir data/lun-embedded-smoke \
        --runtimes tflite --decision runs/smoke --delg
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
from nnutils.data.tables import read_test_labels  # noqa: E402
from nnutils.train.features import load_square  # noqa: E402
from nnutils.data.decode import decode_square  # noqa: E402
from nnutils.models.embedders import load_embedder, score_pairs
from nnutils.models.runtime import tflite_path_for

RUNTIMES = {"keras": ("keras", "none"), "tflite": ("tflite", "none"), "tflite-dynamic": ("tflite", "dynamic"),
            "tflite-float16": ("tflite", "float16")}


def default_model(run_dir: Path = ROOT / "runs" / "cpu") -> str:
    """The run's chosen model (notebook 07's, in ``decision.json``), else the untrained baseline."""
    from nnutils.decide.decision import Decision

    try:
        path = Decision.load(run_dir).model_path
    except (OSError, ValueError, KeyError):
        path = None
    return str(path) if path else str(run_dir / "models" / "00_pretrained.keras")


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


def _timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def bench_one_pass(run_dir: Path, data: Path, test, paths: list[str], runtime: str = "tflite") -> list[dict]:
    """The one-pass table: see the module docstring. Every row starts from an empty cache."""
    import tempfile
    from dataclasses import replace

    from nnutils.decide.decision import Decision
    from nnutils.decide.onepass import embed_and_describe
    from nnutils.decide.predict import predict_pairs
    from nnutils.local.features_cache import LocalSpec
    from nnutils.local.verify import verify

    dec = Decision.load(run_dir)
    if not dec.verifies:
        dec = Decision.load_verified(run_dir)
    if dec is None or not dec.verifies:
        print(f"- {run_dir}: no verifying decision; one-pass table skipped")
        return []
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_onepass_") as tmp:
        tmp = Path(tmp)
        dec.save(tmp / "run")                    # the decision as is ...
        every = replace(dec, verify_range=(-np.inf, np.inf))
        every.save(tmp / "every")                # ... and verifying every pair
        emb = dec.embedder(runtime=runtime)
        pass_emb = dec.pair_embedder(runtime=runtime)   # the int8 model when the fusion was fitted on its scores
        # decode + embed alone, and the one pass alone (cold caches)
        (_, ok), t_plain = _timed(lambda: emb.embed_paths(paths))
        spec = LocalSpec.from_decision(dec.local_method, dec.local_kw, dec.local_model)
        row = {u: p for u, p in zip(P.unique_urls(test), paths)}
        p1, p2 = test.image_url1.map(row).tolist(), test.image_url2.map(row).tolist()
        (e, ok1, records, rep), t_pass = _timed(lambda: embed_and_describe(pass_emb, dec.pair_model_path,
                                                                            "tflite" if dec.global_model else runtime,
                                                                            paths, spec,
                                                                            tmp / "c_pass", pairs=(p1, p2),
                                                                            hash_kinds=dec.fusion.hash_kinds))
        # matching + geometry only, on cached features, over the decision's verified pairs
        vkw = {k: v for k, v in dec.local_kw.items() if k not in spec.extract_kw}
        pairs = [(a, b) for a, b in zip(p1, p2) if a in records and b in records]
        _, t_match = _timed(lambda: [verify(records[a].keypoints, records[b].keypoints, **vkw) for a, b in pairs])
        n_img = int(ok.sum())
        rows.append({"what": "decode_square + embed (global only)", "img/s": n_img / t_plain,
                     "ms/image": 1e3 * t_plain / max(1, n_img)})
        rows.append({"what": f"one pass: decode + embed ({dec.pair_model_path.name}) + {dec.local_method} + facts "
                             f"({rep['mirrored']} images "
                             f"with mirrored descriptors)", "img/s": n_img / t_pass,
                     "ms/image": 1e3 * t_pass / max(1, n_img),
                     "local ms/image": rep["ms_local_per_image"]})
        rows.append({"what": f"matching + geometry only ({dec.local_method}, cached features, one thread)",
                     "pairs verified": len(pairs), "ms/verified pair": 1e3 * t_match / max(1, len(pairs))})
        for label, folder in (("decision's range", tmp / "run"), ("every pair verified", tmp / "every")):
            for one in (False, True):
                cache = tmp / f"c_{folder.name}_{one}"
                pred, t = _timed(lambda: predict_pairs(test, data / "images", dec.model_path, threshold=dec.threshold,
                                                       runtime=runtime, cache_dir=cache, progress=False,
                                                       verify=folder, one_pass=one))
                r = pred.report
                rows.append({"what": f"predict, {label}, {'one pass' if one else 'two decodes'}",
                             "pairs verified": r.get("pairs_verified"), "ms/pair": r["ms_per_pair"],
                             "ms/pair incl. model load": 1e3 * t / len(test),
                             "ms/verified pair": r.get("ms_per_verified_pair"),
                             "images decoded by verification": r.get("images_decoded", "all"),
                             "predicted same": r["predicted_same"], "decisions": pred.submission.is_same.to_numpy()})
        base = {}
        for r in rows:
            if "decisions" in r:
                key = r["what"].rsplit(",", 1)[0]
                d = r.pop("decisions")
                if key in base:
                    r["decisions ≠ two decodes"] = int((d != base[key]).sum())
                else:
                    base[key] = d
    return rows


def bench_delg(run_dir: Path, paths: list[str], threads: int = 2, batch: int = 32) -> list[dict]:
    """Cost of DELF features from the global model's forward pass (DELG's way), vs the embedding alone and the pyramid."""
    import keras
    from keras import ops

    from nnutils.decide.decision import Decision
    from nnutils.local.delf import DelfExtractor
    from nnutils.models.backbones import get_spec
    from nnutils.models.embedders import TFLiteEmbedder
    from nnutils.models.runtime import TFLiteRunner, convert_to_tflite
    from nnutils.models.saving import load_model

    dec = Decision.load(run_dir).for_embeddings()
    delf_dir = Path(run_dir) / "models" / "delf"
    if not delf_dir.is_dir():
        print(f"- {delf_dir}: no DELF extractor; DELG table skipped")
        return []
    ex = DelfExtractor.load(delf_dir)
    m = load_model(str(dec.model_path))
    trunk = next(l for l in m.layers if isinstance(l, keras.Model) and l.name != "raw_top")
    top = m.layers[-1]
    s16 = trunk.get_layer(get_spec(ex.backbone).stride16_layer).output
    both = keras.Model(trunk.input, [trunk.output, s16])
    x = keras.Input(tuple(m.input.shape[1:]), name="image")
    f, s = both(x)
    z = ex.head.get_layer("attention_conv2")(ex.head.get_layer("attention_conv1")(s))
    att = ops.relu(z) + ops.log1p(ops.exp(-ops.abs(z)))
    fn = s / (ops.sqrt(ops.sum(ops.square(s), axis=-1, keepdims=True)) + 1e-6)
    two = keras.Model(x, [top(f), ops.concatenate([fn, att], axis=-1)])
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        one_file = convert_to_tflite(m, Path(tmp) / "one.tflite")
        two_file = convert_to_tflite(two, Path(tmp) / "two.tflite", output_names=["embedding", "delf"])
        size = int(m.input.shape[1])
        xb = np.random.default_rng(0).uniform(0, 255, (batch, size, size, 3)).astype(np.float32)
        r1, r2 = TFLiteEmbedder(one_file, threads=threads), TFLiteRunner(two_file, threads=threads)
        r1.embed_arrays(xb), r2.run(xb)
        t1, t2 = [], []
        for _ in range(6):
            t1.append(_timed(lambda: r1.embed_arrays(xb, batch_size=batch))[1])
            t2.append(_timed(lambda: r2.run(xb))[1])
        out = r2.run(xb[:1])
        hw = out["delf"].shape[1:3]
    sample = [p for p in paths if p][:60]
    kps, t_pyr = _timed(lambda: [ex.extract(p) for p in sample])
    n_pyr = float(np.mean([len(k) for k in kps]))
    return [{"what": f"embedding alone, {size}² (TFLite b{batch})", "ms/image": 1e3 * np.median(t1) / batch},
            {"what": f"embedding + DELF map of the same pass ({hw[0]}×{hw[1]} locations)",
             "ms/image": 1e3 * np.median(t2) / batch, "locations": int(hw[0] * hw[1])},
            {"what": f"DELF pyramid {ex.image_size} px × {len((0.7071, 1, 1.4142))} scales (own decode + 3 invokes)",
             "ms/image": 1e3 * t_pyr / len(sample), "locations": n_pyr}]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="a .keras embedder (default: the chosen model of --decision, "
                                                  "else of runs/cpu)")
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
    ap.add_argument("--decision", default=None, help="a run folder: add the one-pass table for its verifying decision")
    ap.add_argument("--delg", action="store_true", help="with --decision: DELF features from the global model's pass")
    ap.add_argument("--only-one-pass", action="store_true", help="skip the runtime and decoding tables")
    args = ap.parse_args(argv)
    if args.model is None:
        args.model = default_model(Path(args.decision)) if args.decision else default_model()

    data = Path(args.data_dir)
    test = P.read_pairs(data / "test.csv", "test")   # no train.csv needed: the shifted benchmark has none
    urls = P.unique_urls(test)
    path_of = P.resolve_images(urls, data / "images", progress=False)
    paths = [path_of[u] for u in urls]
    row_of = {u: i for i, u in enumerate(urls)}
    i1 = test.image_url1.map(row_of).to_numpy()
    i2 = test.image_url2.map(row_of).to_numpy()
    y = read_test_labels(data, test.ID)

    print(f"# Prediction speed: {Path(args.model)}\n")
    print(f"- machine: {machine()}")
    print(f"- data: {data} — {len(test)} test pairs, {len(urls)} unique images "
          f"({sum(not (p and os.path.isfile(p)) for p in paths)} missing)")

    if args.decision:
        print("\n## One pass per image (cold cache each row; 2 decode threads, TFLite 2 threads)\n")
        rows = bench_one_pass(Path(args.decision), data, test, paths)
        print(table(rows, ["what", "img/s", "ms/image", "local ms/image", "pairs verified", "ms/verified pair",
                           "ms/pair", "ms/pair incl. model load", "images decoded by verification", "predicted same", "decisions ≠ two decodes"]))
        if args.delg:
            print("\n## DELF from the global model's forward pass (DELG) vs the pyramid\n")
            print(table(bench_delg(Path(args.decision), paths, args.threads), ["what", "ms/image", "locations"]))
        if args.only_one_pass:
            return 0
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
