"""One pass per image: one decode gives the global embedding, the local features and the facts.

Without it, prediction decodes each image for the global model (a DCT-scaled decode at the
model's input size) and :func:`nnutils.decide.fusion.verify_band` decodes both images of
every verified pair again (full size) and extracts their local features anew.
:func:`embed_and_describe` decodes each distinct file ONCE, at the size the decision's
local extractor reads a file at (:attr:`nnutils.local.features_cache.LocalSpec.decode_side`:
640 px for ORB/SIFT, the pyramid's longest side for DELF; a JPEG at the smallest DCT scale
still that large), and from that array derives

* the global model's input (:func:`nnutils.models.embedders.square_from_rgb`), embedded in
  batches by the same engine as :meth:`~nnutils.models.embedders.TFLiteEmbedder.embed_paths`
  (decoding threads run ahead of the interpreter);
* the local features (:meth:`~nnutils.local.features_cache.LocalSpec.extract`, in the
  original image's pixels) — ORB on the decoded pixels, or the DELF pyramid;
* the facts of the fused decision (:func:`nnutils.decide.fusion.image_facts_of`: size,
  digests, perceptual hashes).

Everything is cached by file content: the embedding in ``<cache_dir>/embeddings/<key>/``
(a key of its own, ``…-onepass<side>``: the square is resized from the one decode, not
from the DCT-scaled decode of :func:`nnutils.data.decode.decode_square`, so the two kinds
of embedding never mix in one folder), the local features and facts in
``<cache_dir>/local/<key>/`` (:class:`~nnutils.local.features_cache.FeatureCache`), each a
:class:`~nnutils.data.cache.PackStore` (records appended to pack files, not a file per image).
A second run over the same files decodes and extracts nothing. Verifying a pair then only
matches two cached feature sets and fits the geometric model
(``verify_band(..., features=...)``).

Why the global embedding of the one pass is resized from the local decode and not the
other way round: ORB needs ≥ 640 px and the global model 96–192 px, so the one decode is
the local one; squashing it to the model's side costs ~0.3 ms. The embedding then differs
from :func:`decode_square`'s (another DCT scale, then another resize): on the smoke test
images with the smoke DELF decision (one decode at 193 px) cosine median 0.996, min 0.974
between the two embeddings of one image; pair scores move by median 0.004, max 0.031, and
2 of 60 test pairs crossed an edge of the verify range. That is why its cache key differs.

Why DELF's features are not read from the global model's forward pass (DELG's way) for the
run's models: see ``bench/speed.py --delg`` and the report of issue 12; in short, the global
model sees a 96–192 px *squashed square* (a 6×6 to 12×12 stride-16 map: 36–144 locations),
while DELF's head was trained and its fusion fitted on an aspect-preserving 3-scale pyramid
at ``delf_image_size`` (~350 locations at 160 px). Sharing the pass would change the
features the fusion was fitted on, and at 96 px leave too few locations for a geometric fit.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

import numpy as np

from nnutils.data.cache import ContentCache, model_key
from nnutils.data.images import file_digest_or_none, read_any
from nnutils.decide.fusion import HASH_KINDS, image_facts_of
from nnutils.local.features_cache import FeatureCache, ImageRecord, LocalSpec
from nnutils.local.verify import mirrored_images
from nnutils.models.embedders import square_from_rgb

__all__ = ["embed_and_describe", "onepass_embedding_key"]


def onepass_embedding_key(model_path, runtime: str, side: int | None) -> str:
    """The embedding cache key of the one pass (distinct from :func:`embed_cached`'s).

    Parameters
    ----------
    model_path : path
        The saved model (must exist: its stem and modification time are part of the key).
    runtime : str
        ``"tflite"`` or ``"keras"``.
    side : int or None
        The one decode's side in pixels (None: full size).

    Returns
    -------
    str
    """
    p = Path(model_path)
    return model_key(p.stem, p.stat().st_mtime_ns, runtime, f"onepass{side}")


def _lacks_mirror(rec: ImageRecord) -> bool:
    """An ORB record with keypoints but without their mirrored descriptors."""
    kp = rec.keypoints
    return kp.kind == "orb" and len(kp) > 0 and kp.mirror is None


def embed_and_describe(embedder, model_path, runtime: str, paths: Sequence, spec: LocalSpec, cache_dir=None, *,
                       hash_kinds: Sequence[str] = HASH_KINDS, batch_size: int = 32, decode_workers: int = 2,
                       pairs: tuple[Sequence, Sequence] | None = None,
                       progress: bool = False) -> tuple[np.ndarray, np.ndarray, dict, dict]:
    """Embed every image and describe it (local features + facts), each file decoded once.

    Parameters
    ----------
    embedder : TFLiteEmbedder or KerasEmbedder
        The global model.
    model_path : path
        Its saved ``.keras`` / ``.tflite`` file (part of the embedding cache key).
    runtime : str
        ``"tflite"`` or ``"keras"`` (part of the key).
    paths : sequence of str or None, length N
        Image files; None / missing / unreadable give a NaN row, ``ok = False`` and no record.
    spec : LocalSpec
        The local extractor and its settings (the decision's local check).
    cache_dir : path, optional
        Cache root; None caches nothing (everything is computed, each file decoded once).
    hash_kinds : sequence of str
        Perceptual hashes of the facts.
    batch_size : int, default 32
        Images per inference batch.
    decode_workers : int, default 2
        Threads that decode and extract local features while the interpreter runs.
    pairs : (paths1, paths2), optional
        The pairs that will be verified. With ORB, only the images that are the mirrored
        side of one of them (:func:`nnutils.local.verify.mirror_side`: a property of the two
        files' digests) get the mirrored descriptors, ~2 ms of ORB's ~6.4 ms per image; a
        cached record without them is extracted anew when a pair needs them. None: every
        image gets them (a collection, whose pairs are not known yet).
    progress : bool, default False

    Returns
    -------
    emb : ndarray of float32, shape (N, D)
        Embeddings; NaN rows where unreadable.
    ok : ndarray of bool, shape (N,)
    records : dict
        ``{path: ImageRecord}`` for every readable path (keypoints in original pixels, facts).
    report : dict
        ``images`` (distinct readable-or-not paths), ``decoded`` (files decoded now),
        ``embedded`` (embedded now), ``extracted`` (local features computed now),
        ``cached`` (images served wholly from the cache), ``mirrored`` (images extracted now
        with the mirrored descriptors), ``seconds`` and ``ms_local_per_image`` (CPU time of
        the local extraction per extracted image, summed over the decoding threads).
    """
    t0 = time.perf_counter()
    paths = list(paths)
    side = spec.decode_side
    n = len(paths)
    ecache = ContentCache(Path(cache_dir) / "embeddings" / onepass_embedding_key(model_path, runtime, side)
                          if cache_dir else None, paths, workers=max(1, decode_workers))
    fcache = FeatureCache(cache_dir, spec.key(hash_kinds))
    emb = np.full((n, embedder.dim), np.nan, np.float32)
    ok = np.zeros(n, bool)
    emb_todo = set(ecache.lookup(emb, ok))
    digests = ecache.digests if cache_dir or pairs is None else [file_digest_or_none(p) for p in paths]
    digest_of = {p: d for p, d in zip(paths, digests) if p}
    need_mirror = None                      # None: every image (the spec's setting)
    if pairs is not None and spec.mirrors:
        need_mirror = mirrored_images([digest_of.get(p) for p in pairs[0]], [digest_of.get(p) for p in pairs[1]])
    records: dict = {}
    todo = []
    for i, p in enumerate(paths):
        rec = fcache.get(digests[i]) if p else None
        if rec is not None and need_mirror is not None and digests[i] in need_mirror and _lacks_mirror(rec):
            rec = None                      # cached for a list that did not mirror it: extract anew
        if rec is not None:
            records[p] = rec
        if p and (i in emb_todo or rec is None):
            todo.append(i)
    local_ms: list[float] = []
    mirrored: list[bool] = []              # list.append is atomic across the decoding threads

    def prepare(path, size):
        # in the decoding threads: the payload keeps the features and facts, never the pixels
        rgb, orig, reason = read_any(path, side)          # THE decode of this file
        if rgb is None:
            return None, None
        square = square_from_rgb(rgb, size)
        if path in records:                               # only the embedding was missing
            return square, None
        t = time.perf_counter()
        mirror = None if need_mirror is None else digest_of.get(path) in need_mirror
        kp = spec.extract(rgb, orig, mirror=mirror)
        local_ms.append(1e3 * (time.perf_counter() - t))
        mirrored.append(kp.mirror is not None)
        return square, ImageRecord(kp, image_facts_of(path, rgb, hash_kinds, size=orig,
                                                      digest=digest_of.get(path), thumb=kp.thumb))

    extracted = 0
    if todo:
        tp = [paths[i] for i in todo]
        e, o, payloads = embedder.embed_prepared(tp, prepare, batch_size=batch_size, decode_workers=decode_workers,
                                                 progress=progress)
        done = set()
        for i, ei, oi, rec in zip(todo, e, o, payloads):
            p = paths[i]
            if i in emb_todo:
                emb[i], ok[i] = ei, oi
                if oi:
                    ecache.store(i, ei)
            if rec is None or p in done:
                continue
            done.add(p)
            if p not in records:
                records[p] = rec
                fcache.put(digests[i], rec)
                extracted += 1
    uniq = {p for p in paths if p}
    decoded = len({paths[i] for i in todo})
    report = dict(images=len(uniq), decoded=decoded, embedded=len({paths[i] for i in emb_todo if ok[i]}),
                  extracted=int(extracted), cached=len(uniq) - decoded, mirrored=int(sum(mirrored)),
                  seconds=round(time.perf_counter() - t0, 3),
                  ms_local_per_image=round(float(np.mean(local_ms)), 2) if local_ms else None)
    return emb, ok, records, report
