"""Backbone outputs for many images, computed once, batched, cached on disk by image content.

On a CPU the frozen part of a backbone dominates the cost of training, so its outputs are
computed once (:func:`compute_features`) and every notebook trains on them. The cache is
keyed by the SHA-1 of each image file's bytes plus a model key
(:class:`nnutils.data.cache.ContentCache`), so renamed or duplicated files are computed
once, and an image that changes is recomputed. :class:`FeatureBank` holds those outputs for a
run's images, with extra augmented views (:func:`random_repost`) for feature-space
augmentation.

Images are decoded by :func:`nnutils.data.decode.decode_square`, the decoder that prediction
uses, and resized to a square ``size × size``: squashing rather than cropping, so a re-post
with a changed aspect ratio maps back onto the original's square. Unreadable images give a
row of zeros and ``ok = False``.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd
from PIL import Image
from tqdm.auto import tqdm

from nnutils.data.cache import ContentCache, model_key
from nnutils.data.decode import decode_square
from nnutils.data.distortions import DISTORTIONS, apply_distortion
from nnutils.data.images import UnreadableImageError, open_image
from nnutils.models.embedders import score_pairs


def random_repost(img, rng):
    """One random re-posting distortion (for augmented feature views); same signature as the distortions."""
    kinds = [k for k in DISTORTIONS if k != "jpeg"]
    out, _, detail = apply_distortion(img, kinds[int(rng.integers(len(kinds)))], rng)
    return out, detail


class FeatureBank:
    """Trunk outputs for a fixed list of images, computed once (cached on disk by file content).

    ``views`` extra copies are computed from randomly re-posted versions of each image
    (:func:`random_repost`): feature-space augmentation for CPU training.
    """

    def __init__(self, trunk, urls: Sequence[str], path_of: dict, image_size: int, *, cache_dir=None,
                 key: str | None = None, views: int = 0, seed: int = 0, batch_size: int = 32,
                 progress: bool = True):
        self.urls = list(urls)
        self.index = {u: i for i, u in enumerate(self.urls)}
        self.key = key or model_key(trunk.name, image_size)
        paths = [path_of.get(u) for u in self.urls]
        common = dict(batch_size=batch_size, cache_dir=cache_dir, key=self.key, progress=progress)
        self.feats, self.ok = compute_features(trunk, paths, image_size, desc="trunk features", **common)
        self.views = [compute_features(trunk, paths, image_size, transform=random_repost, seed=seed + v,
                                       desc=f"augmented view {v + 1}", **common)[0] for v in range(views)]

    @property
    def shape(self) -> tuple:
        return tuple(self.feats.shape[1:])

    def rows(self, urls: Sequence[str]) -> np.ndarray:
        return np.array([self.index[u] for u in urls], dtype=int)

    def take(self, urls: Sequence[str], rng: np.random.Generator | None = None) -> np.ndarray:
        """Features of ``urls`` (float32); with ``rng`` and views, each row from a random view."""
        rows = self.rows(urls)
        if rng is None or not self.views:
            return self.feats[rows].astype("float32")
        stack = [self.feats] + self.views
        pick = rng.integers(len(stack), size=len(rows))
        return np.stack([stack[v][r] for v, r in zip(pick, rows)]).astype("float32")


def embed_bank(top, bank: FeatureBank, batch_size: int = 256) -> np.ndarray:
    """Embeddings (N, D) of every image in the bank (rows of unreadable images are NaN)."""
    emb = np.asarray(top.predict(bank.feats.astype("float32"), batch_size=batch_size, verbose=0), "float32")
    emb[~bank.ok] = np.nan
    return emb


def pair_scores(emb: np.ndarray, bank: FeatureBank, pairs: pd.DataFrame) -> np.ndarray:
    """Cosine similarity per pair (N,); NaN where an image is unreadable."""
    return score_pairs(emb, bank.ok, bank.rows(pairs.image_url1), bank.rows(pairs.image_url2))


DECODER_VERSION = 2


def load_square(path: str | None, size: int, transform: Callable | None = None,
                rng: np.random.Generator | None = None) -> np.ndarray | None:
    """One image as float32 (size, size, 3) in [0, 255], or None if unreadable.

    ``transform(img, rng) -> (img, ...)`` (e.g. an :mod:`nnutils.data.distortions` function)
    is applied to the PIL image before resizing, for augmented views.
    """
    if path is None:
        return None
    if transform is None:
        # the one decoder of training, evaluation and prediction (DCT-scaled JPEG decoding)
        return decode_square(path, size)
    try:
        img = open_image(path, draft_size=(size, size))
    except UnreadableImageError:
        return None
    img = transform(img, rng)[0]
    img = img.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(img, dtype=np.float32)


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
