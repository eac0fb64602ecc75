"""Score a LUN-format pairs CSV with a trained model and write a validated Kaggle submission.

    python -m nnutils.predict --pairs data/lun-embedded/test.csv --images data/lun-embedded/images \\
        --model runs/cpu --out submissions/cpu.csv

``--model`` is a run folder (its ``decision.json`` from notebook 07 names the model and
threshold), a ``.keras`` embedder, or ``phash`` (the perceptual-hash baseline); the last
two need ``--threshold``. Each distinct image
is decoded and embedded once, batched, with the TFLite runtime by default; embeddings are
cached on disk by image content, so a rerun or another CSV over the same images costs
almost nothing. Pairs with an unreadable image are predicted 0 and counted (the
unreadable-image policy). Notebook 08 calls :func:`predict_pairs`, the same code path.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .pairs import PairsCSVError, read_pairs, resolve_images, unique_urls
from .submission import make_submission, write_submission

__all__ = ["Prediction", "predict_pairs", "embed_cached", "main"]


@dataclass
class Prediction:
    submission: pd.DataFrame   # ID, is_same
    scores: np.ndarray         # (N,) cosine similarity (or hash similarity), NaN if unreadable
    unreadable: np.ndarray     # (N,) bool: pairs decided by the unreadable-image policy
    report: dict               # counts and timings


def _resolve_model(model, threshold):
    if str(model) == "phash":
        if threshold is None:
            raise ValueError("--threshold is required with --model phash")
        return "phash", threshold, "phash"
    model = Path(model)
    if model.is_dir():
        from .evaluation import read_decision
        d = read_decision(model)
        path = d["model_path"]
        return (Path(path) if path else "phash"), (d["threshold"] if threshold is None else threshold), d["model"]
    if not model.exists():
        raise FileNotFoundError(f"model {model} not found (give a run folder with decision.json or a .keras file)")
    if threshold is None:
        raise ValueError(f"--threshold is required with a model file ({model}); a run folder provides its own")
    return model, threshold, model.stem


def embed_cached(embedder, model_path, runtime: str, paths: list, cache_dir, batch_size: int = 32,
                 progress: bool = True) -> tuple[np.ndarray, np.ndarray, int]:
    """Embed ``paths`` once each, reusing ``<cache_dir>/embeddings/<key>/<sha1>.npy`` by file content.

    ``key`` names the saved model (``model_path``: stem and modification time) and the
    runtime, so predict and ``nnutils.dedup`` share one cache. Returns ``(emb (N, D) float32,
    NaN rows where unreadable; ok (N,) bool; how many were embedded now, not read from the cache)``.
    """
    from .features import ContentCache, model_key
    key = model_key(Path(model_path).stem, Path(model_path).stat().st_mtime_ns, runtime)
    cache = ContentCache(Path(cache_dir) / "embeddings" / key if cache_dir else None, paths)
    emb = np.full((len(paths), embedder.dim), np.nan, "float32")
    ok = np.zeros(len(paths), bool)
    todo = cache.lookup(emb, ok)
    if todo:
        e, o = embedder.embed_paths([paths[i] for i in todo], batch_size=batch_size, progress=progress)
        emb[todo], ok[todo] = e, o
        for i in todo:
            if ok[i]:
                cache.store(i, emb[i])
    return emb, ok, int(ok[todo].sum()) if todo else 0


def _resolve_fusion(verify, model, name: str):
    """The Fusion to apply, or None. ``verify``: None/False (off), "auto" (the run folder's
    ``fusion.joblib`` if present), True (the run folder's, required) or a path."""
    if verify in (None, False, "off", "none"):
        return None
    from .fusion import Fusion
    if verify in (True, "auto", "on"):
        if not Path(str(model)).is_dir():
            if verify == "auto":
                return None
            raise ValueError("verify=True needs --model to be a run folder (it holds fusion.joblib); "
                             "or give the fusion file")
        path = Path(model) / "fusion.joblib"
        if verify == "auto" and not path.is_file():
            return None
    else:
        path = Path(verify)
    fz = Fusion.load(path)
    if fz.global_model is not None and fz.global_model != name:
        raise ValueError(f"{path} was trained on the scores of model {fz.global_model!r}, not {name!r}; "
                         "rerun 10_local_verification for this model")
    return fz


def predict_pairs(pairs, images_dir, model, *, threshold: float | None = None, runtime: str = "tflite",
                  cache_dir=None, batch_size: int = 32, progress: bool = True, verify=None) -> Prediction:
    """Decide every pair of a LUN ``test``-format table or CSV path.

    Returns a :class:`Prediction`; ``report`` holds ``pairs``, ``images``, ``images_embedded``
    (embedded now, i.e. not found in the cache), ``unreadable_images``, ``pairs_unreadable`` (predicted 0),
    ``predicted_same``, ``seconds`` (wall, end to end: reading, decoding, embedding, scoring;
    the one-off model load/conversion is ``model_load_s``), ``ms_per_pair``, ``images_per_s``,
    ``runtime``, ``model``, ``threshold``.

    ``verify`` adds local verification and the fused decision of notebook 10 for the pairs
    in its uncertain band (:func:`nnutils.fusion.verify_band`): ``"auto"`` uses the run
    folder's ``fusion.joblib`` when there is one, ``True`` requires it, a path names the
    file. The report then also has ``pairs_verified``, ``share_verified``, ``verify_s``,
    ``ms_per_verified_pair`` and ``fusion``; ``seconds`` includes the verification.
    """
    t_load = time.perf_counter()
    model_path, threshold, name = _resolve_model(model, threshold)
    embedder = None
    if model_path != "phash":  # loaded (and converted to TFLite, once) before the clock starts
        from .inference import load_embedder
        embedder = load_embedder(model_path, runtime=runtime, cache_dir=cache_dir)
    load_s = time.perf_counter() - t_load
    t0 = time.perf_counter()
    test = pairs if isinstance(pairs, pd.DataFrame) else read_pairs(pairs, "test")
    images_dir = Path(images_dir) if images_dir is not None else None
    urls = unique_urls(test)
    if images_dir is not None and not images_dir.is_dir() and any(not u.startswith(("http://", "https://", "/"))
                                                                   for u in urls):
        raise FileNotFoundError(f"images folder {images_dir} not found (the CSV has relative image paths)")
    cache_dir = Path(cache_dir) if cache_dir else None
    path_of = resolve_images(urls, images_dir, cache_dir=(cache_dir / "downloads") if cache_dir else None,
                             progress=progress).to_dict()
    paths = [path_of[u] for u in urls]
    t_embed = time.perf_counter()
    if model_path == "phash":
        from .baselines import hash_images, hash_similarity
        hashes = hash_images([p for p in paths if p], progress=progress)
        ok = np.array([p is not None and hashes.get(p) is not None for p in paths])
        scores = hash_similarity(hashes, test.image_url1.map(path_of), test.image_url2.map(path_of))
        embedded = int(ok.sum())
    else:
        emb, ok, embedded = embed_cached(embedder, model_path, runtime, paths, cache_dir, batch_size, progress)
        from .inference import score_pairs
        idx = {u: i for i, u in enumerate(urls)}
        scores = score_pairs(emb, ok, test.image_url1.map(idx), test.image_url2.map(idx))
    embed_s = time.perf_counter() - t_embed
    unreadable = np.isnan(scores)
    sub = make_submission(test, scores, threshold, unreadable)
    fusion = _resolve_fusion(verify, model, name) if model_path != "phash" else None
    vreport = {}
    if fusion is not None:
        from .fusion import verify_band
        if abs(fusion.global_threshold - threshold) > 1e-9:
            raise ValueError(f"the fusion was fitted at global threshold {fusion.global_threshold:.4f}, "
                             f"not {threshold:.4f}: drop --threshold or rerun 10_local_verification")
        decisions, vreport = verify_band(fusion, list(test.image_url1.map(path_of)), list(test.image_url2.map(path_of)),
                                         scores, progress=progress)
        sub = sub.assign(is_same=decisions)
        vreport["fusion"] = f"{fusion.kind}+{fusion.local_method or 'no local'}"
    seconds = time.perf_counter() - t0
    report = dict(pairs=len(test), images=len(urls), images_embedded=int(embedded),
                  unreadable_images=int((~ok).sum()), pairs_unreadable=int(unreadable.sum()),
                  predicted_same=int(sub.is_same.sum()), seconds=round(seconds, 3),
                  ms_per_pair=round(1000 * seconds / max(1, len(test)), 3),
                  images_per_s=round(embedded / embed_s, 1) if embedded and embed_s > 0 else None,
                  model_load_s=round(load_s, 2),
                  runtime=runtime if model_path != "phash" else "imagehash", model=name, threshold=float(threshold),
                  **vreport)
    return Prediction(sub, scores, unreadable, report)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m nnutils.predict", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", required=True, help="test CSV: ID,image_url1,image_url2")
    ap.add_argument("--images", default=None, help="folder that relative image paths are relative to")
    ap.add_argument("--model", required=True, help="run folder (with decision.json) or a .keras embedder")
    ap.add_argument("--out", required=True, help="submission CSV to write (ID,is_same)")
    ap.add_argument("--threshold", type=float, default=None, help="override the run's threshold")
    ap.add_argument("--runtime", choices=["tflite", "keras"], default="tflite")
    ap.add_argument("--cache-dir", default="cache", help="embedding/download cache (default: %(default)s)")
    ap.add_argument("--scores", action="store_true", help="also write <out>_scores.csv")
    ap.add_argument("--labels", default=None, help="ID,is_same labels to score the submission against")
    ap.add_argument("--verify", default="off", metavar="off|auto|on|FILE",
                    help="local verification + fused decision in the uncertain band (notebook 10's fusion.joblib): "
                         "off (default), auto (if the run folder has one), on (required), or a fusion file")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    args = ap.parse_args(argv)
    try:
        pred = predict_pairs(args.pairs, args.images, args.model, threshold=args.threshold, runtime=args.runtime,
                             cache_dir=args.cache_dir, progress=not args.quiet, verify=args.verify)
        test_ids = pred.submission.ID
        out = write_submission(pred.submission, args.out, test_ids, pred.scores if args.scores else None)
        if args.labels:
            from .metrics import pair_metrics
            lab = read_pairs(args.labels, "labels").set_index("ID").is_same.reindex(test_ids)
            m = pair_metrics(lab.to_numpy(), pred.submission.is_same.to_numpy(), 0.5)
            pred.report.update(f1=round(m["f1"], 5), macro_f1=round(m["macro_f1"], 5))
    except (FileNotFoundError, PairsCSVError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(pred.report, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
