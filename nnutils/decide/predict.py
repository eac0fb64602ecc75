"""Decide every pair of a LUN-format pairs table with a run's decision, end to end.

Each distinct image is decoded and embedded once, batched, with the TFLite runtime by
default; embeddings are cached on disk by image content, so a rerun or another CSV over the
same images costs almost nothing. Pairs with an unreadable image are predicted 0 and counted
(the unreadable-image policy). Notebook 08 and ``python -m nnutils.predict`` call
:func:`predict_pairs`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from nnutils.data.pairs import read_pairs, resolve_images, unique_urls
from nnutils.decide.decision import _resolve_fusion, _resolve_model
from nnutils.decide.submission import make_submission
from nnutils.models.embedders import embed_cached


@dataclass
class Prediction:
    submission: pd.DataFrame   # ID, is_same
    scores: np.ndarray         # (N,) cosine similarity (or hash similarity), NaN if unreadable
    unreadable: np.ndarray     # (N,) bool: pairs decided by the unreadable-image policy
    report: dict               # counts and timings


def predict_pairs(pairs, images_dir, model, *, threshold: float | None = None, runtime: str = "tflite",
                  cache_dir=None, batch_size: int = 32, progress: bool = True, verify=None) -> Prediction:
    """Decide every pair of a LUN ``test``-format table or CSV path.

    Returns a :class:`Prediction`; ``report`` holds ``pairs``, ``images``, ``images_embedded``
    (embedded now, i.e. not found in the cache), ``unreadable_images``, ``pairs_unreadable`` (predicted 0),
    ``predicted_same``, ``seconds`` (wall, end to end: reading, decoding, embedding, scoring;
    the one-off model load/conversion is ``model_load_s``), ``ms_per_pair``, ``images_per_s``,
    ``runtime``, ``model``, ``threshold``.

    ``verify`` adds local verification and the fused decision of notebook 10 for the pairs
    in its uncertain band (:func:`nnutils.decide.fusion.verify_band`): ``"auto"`` uses the run
    folder's ``fusion.joblib`` when there is one, ``True`` requires it, a path names the
    file. The report then also has ``pairs_verified``, ``share_verified``, ``verify_s``,
    ``ms_per_verified_pair`` and ``fusion``; ``seconds`` includes the verification.
    """
    t_load = time.perf_counter()
    model_path, threshold, name = _resolve_model(model, threshold)
    embedder = None
    if model_path != "phash":  # loaded (and converted to TFLite, once) before the clock starts
        from nnutils.models.embedders import load_embedder
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
        from nnutils.decide.hashes import hash_images, hash_similarity
        hashes = hash_images([p for p in paths if p], progress=progress)
        ok = np.array([p is not None and hashes.get(p) is not None for p in paths])
        scores = hash_similarity(hashes, test.image_url1.map(path_of), test.image_url2.map(path_of))
        embedded = int(ok.sum())
    else:
        emb, ok, embedded = embed_cached(embedder, model_path, runtime, paths, cache_dir, batch_size, progress)
        from nnutils.models.embedders import score_pairs
        idx = {u: i for i, u in enumerate(urls)}
        scores = score_pairs(emb, ok, test.image_url1.map(idx), test.image_url2.map(idx))
    embed_s = time.perf_counter() - t_embed
    unreadable = np.isnan(scores)
    sub = make_submission(test, scores, threshold, unreadable)
    fusion = _resolve_fusion(verify, model, name) if model_path != "phash" else None
    vreport = {}
    if fusion is not None:
        from nnutils.decide.fusion import verify_band
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
