"""Compute a model's outputs for many images once, batched, cached on disk by image content.

On a CPU the frozen part of a backbone dominates the cost of training, so its outputs are
computed once (:func:`compute_features`) and every notebook trains on them. The cache is
keyed by the SHA-1 of each image file's bytes plus a model key, so renamed or duplicated
files are computed once, and an image that changes is recomputed.

Images are decoded by :func:`nnutils.inference.decode_square` — the same decoder that
prediction uses (DCT-scaled JPEG decoding, the robust reader for everything else), in
threads — and resized to a square ``size × size``: squashing rather than cropping, so a
re-post with a changed aspect ratio maps back onto the original's square. Unreadable images give a row of zeros
and ``ok = False``.
"""
from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from tqdm.auto import tqdm

from PIL import Image

from .images import UnreadableImageError, file_digest, open_image

__all__ = ["ContentCache", "load_square", "compute_features", "embed_images", "model_key"]

# Part of every cache key: bump when decoding changes, so cached features are recomputed.
DECODER_VERSION = 2


def load_square(path: str | None, size: int, transform: Callable | None = None,
                rng: np.random.Generator | None = None) -> np.ndarray | None:
    """One image as float32 (size, size, 3) in [0, 255], or None if unreadable.

    ``transform(img, rng) -> (img, ...)`` (e.g. an :mod:`nnutils.distortions` function)
    is applied to the PIL image before resizing, for augmented views.
    """
    if path is None:
        return None
    if transform is None:
        # the one decoder of training, evaluation and prediction (DCT-scaled JPEG decoding)
        from .inference import decode_square
        return decode_square(path, size)
    try:
        img = open_image(path, draft_size=(size, size))
    except UnreadableImageError:
        return None
    img = transform(img, rng)[0]
    img = img.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(img, dtype=np.float32)


class ContentCache:
    """Per-image results stored as ``<folder>/<sha1 of the file's bytes>.npy``.

    ``lookup`` fills an output array from the cache and returns the rows still to
    compute; ``store`` saves one computed row. ``folder=None`` caches nothing.
    """

    def __init__(self, folder: str | Path | None, paths: Sequence[str | None], workers: int = 2):
        self.folder = Path(folder) if folder is not None else None
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)
            with ThreadPoolExecutor(workers) as pool:
                self.digests = list(pool.map(self._digest, paths))
        else:
            self.digests = [None] * len(paths)

    @staticmethod
    def _digest(path: str | None) -> str | None:
        try:
            return file_digest(path) if path else None
        except UnreadableImageError:
            return None

    def lookup(self, out: np.ndarray, ok: np.ndarray) -> list[int]:
        """Copy cached rows into ``out`` (marking ``ok``); return the indices not cached."""
        todo = []
        for i, d in enumerate(self.digests):
            if self.folder is not None and d and (self.folder / f"{d}.npy").exists():
                out[i], ok[i] = np.load(self.folder / f"{d}.npy"), True
            else:
                todo.append(i)
        return todo

    def store(self, i: int, row: np.ndarray) -> None:
        if self.folder is not None and self.digests[i]:
            np.save(self.folder / f"{self.digests[i]}.npy", row)


def compute_features(model, paths: Sequence[str | None], size: int, *, batch_size: int = 32,
                     cache_dir: str | Path | None = None, key: str = "model", dtype: str = "float16",
                     transform: Callable | None = None, seed: int = 0, workers: int = 2,
                     progress: bool = True, desc: str = "features") -> tuple[np.ndarray, np.ndarray]:
    """Run ``model`` on every image: returns ``(features (N, *model_output_shape), ok (N,) bool)``.

    ``model`` maps float images (B, size, size, 3) in [0, 255] to any tensor. With
    ``cache_dir``, results are stored as ``<cache_dir>/<key>/<sha1 of file>.npy`` and reused.
    With a ``transform``, the cache key includes ``seed`` (one augmented view per seed).
    """
    paths = list(paths)
    out_shape = tuple(int(d) for d in model.output.shape[1:])
    feats = np.zeros((len(paths), *out_shape), dtype=dtype)
    ok = np.zeros(len(paths), bool)
    tag = f"{key}-dec{DECODER_VERSION}" if transform is None else f"{key}-aug{seed}"
    cache = ContentCache(Path(cache_dir) / tag if cache_dir is not None else None, paths, workers)
    todo = cache.lookup(feats, ok)
    rngs = {i: np.random.default_rng([seed, i]) for i in todo} if transform else {}
    bar = tqdm(total=len(todo), desc=desc, unit="img", disable=not progress or not todo)
    with ThreadPoolExecutor(workers) as pool:
        for start in range(0, len(todo), batch_size):
            idx = todo[start:start + batch_size]
            imgs = list(pool.map(lambda i: load_square(paths[i], size, transform, rngs.get(i)), idx))
            good = [j for j, im in zip(idx, imgs) if im is not None]
            if good:
                batch = np.stack([im for im in imgs if im is not None])
                n = len(batch)
                if n < batch_size:  # pad: one input shape means one traced graph, not two
                    batch = np.concatenate([batch, np.zeros((batch_size - n, *batch.shape[1:]), batch.dtype)])
                y = np.asarray(model.predict_on_batch(batch))[:n].astype(dtype)
                for j, row in zip(good, y):
                    feats[j], ok[j] = row, True
                    cache.store(j, row)
            bar.update(len(idx))
    bar.close()
    return feats, ok


def embed_images(embedder, paths: Sequence[str | None], size: int, **kw) -> tuple[np.ndarray, np.ndarray]:
    """L2-normalised embeddings (N, D) float32 of images via :func:`compute_features` (cached if asked)."""
    kw.setdefault("dtype", "float32")
    kw.setdefault("desc", "embedding")
    return compute_features(embedder, paths, size, **kw)


def model_key(*parts) -> str:
    """A short, filesystem-safe cache key from descriptive parts (backbone, size, layer, weights...)."""
    text = "-".join(str(p) for p in parts)
    return f"{text[:60].replace('/', '_')}-{hashlib.sha1(text.encode()).hexdigest()[:8]}"
