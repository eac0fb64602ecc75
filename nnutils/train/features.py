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
    """One random re-posting distortion (for augmented feature views); same signature as the distortions.

    Parameters
    ----------
    img : PIL.Image.Image
        RGB photo.
    rng : numpy.random.Generator
        Draws the kind (any of :data:`~nnutils.data.distortions.DISTORTIONS` but ``jpeg``)
        and its parameters.

    Returns
    -------
    image : PIL.Image.Image
        The distorted RGB image.
    detail : str
        The parameters drawn (:func:`~nnutils.data.distortions.apply_distortion`).
    """
    kinds = [k for k in DISTORTIONS if k != "jpeg"]
    out, _, detail = apply_distortion(img, kinds[int(rng.integers(len(kinds)))], rng)
    return out, detail


class FeatureBank:
    """Trunk outputs for a fixed list of images, computed once (cached on disk by file content).

    ``views`` extra copies are computed from randomly re-posted versions of each image
    (:func:`random_repost`): feature-space augmentation for CPU training.

    Parameters
    ----------
    trunk : keras.Model
        Images (B, S, S, 3) in [0, 255] → features.
    urls : sequence of str, length N
        The images' URLs, in row order.
    path_of : dict of str to str or None
        URL → local file (None or missing: an unreadable row).
    image_size : int
        Input side S in pixels.
    cache_dir : str or Path, optional
        Cache root of :func:`compute_features`; None caches nothing.
    key : str, optional
        Cache key of the trunk; default :func:`~nnutils.data.cache.model_key` of its name and
        ``image_size``.
    views : int, default 0
        Augmented views computed besides the plain features.
    seed : int, default 0
        View ``v`` uses seed ``seed + v``.
    batch_size : int, default 32
        Images per trunk batch.
    progress : bool, default True
        Show progress bars.

    Attributes
    ----------
    urls : list of str
    index : dict of str to int
        URL → row.
    feats : ndarray of float16, shape (N, *trunk_output_shape)
        Plain features (zeros where unreadable).
    ok : ndarray of bool, shape (N,)
        Which rows are readable.
    views : list of ndarray
        ``views`` arrays shaped like ``feats``.
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
        """Shape of one feature (the trunk's output shape without the batch axis).

        Returns
        -------
        tuple of int
        """
        return tuple(self.feats.shape[1:])

    def rows(self, urls: Sequence[str]) -> np.ndarray:
        """Row indices of ``urls`` in the bank.

        Parameters
        ----------
        urls : sequence of str
            URLs of the bank.

        Returns
        -------
        ndarray of int, shape (len(urls),)

        Raises
        ------
        KeyError
            For a URL not in the bank.
        """
        return np.array([self.index[u] for u in urls], dtype=int)

    def take(self, urls: Sequence[str], rng: np.random.Generator | None = None) -> np.ndarray:
        """Features of ``urls``; with ``rng`` and views, each row from a random view.

        Parameters
        ----------
        urls : sequence of str, length M
            URLs of the bank.
        rng : numpy.random.Generator, optional
            When given (and the bank has views), each row comes from the plain features or one
            of the views, uniformly.

        Returns
        -------
        ndarray of float32, shape (M, *shape)
        """
        rows = self.rows(urls)
        if rng is None or not self.views:
            return self.feats[rows].astype("float32")
        stack = [self.feats] + self.views
        pick = rng.integers(len(stack), size=len(rows))
        return np.stack([stack[v][r] for v, r in zip(pick, rows)]).astype("float32")


def embed_bank(top, bank: FeatureBank, batch_size: int = 256) -> np.ndarray:
    """Embeddings of every image in the bank.

    Parameters
    ----------
    top : keras.Model
        Features → embeddings.
    bank : FeatureBank
    batch_size : int, default 256
        Rows per ``predict`` batch.

    Returns
    -------
    ndarray of float32, shape (N, D)
        Rows of unreadable images are NaN.
    """
    emb = np.asarray(top.predict(bank.feats.astype("float32"), batch_size=batch_size, verbose=0), "float32")
    emb[~bank.ok] = np.nan
    return emb


def pair_scores(emb: np.ndarray, bank: FeatureBank, pairs: pd.DataFrame) -> np.ndarray:
    """Cosine similarity per pair; NaN where an image is unreadable.

    Parameters
    ----------
    emb : ndarray, shape (N, D)
        L2-normalised embeddings of the bank's rows (:func:`embed_bank`).
    bank : FeatureBank
        Maps URLs to rows and says which are readable.
    pairs : DataFrame, P rows
        With ``image_url1`` and ``image_url2`` (URLs of the bank).

    Returns
    -------
    ndarray of float32, shape (P,)
        Cosine in [-1, 1]; NaN where either image is unreadable.
    """
    return score_pairs(emb, bank.ok, bank.rows(pairs.image_url1), bank.rows(pairs.image_url2))


DECODER_VERSION = 2


def load_square(path: str | None, size: int, transform: Callable | None = None,
                rng: np.random.Generator | None = None) -> np.ndarray | None:
    """One image as float32 (size, size, 3) in [0, 255], or None if unreadable.

    Without ``transform`` the image is decoded by :func:`nnutils.data.decode.decode_square`
    (the one decoder of training, evaluation and prediction).

    Parameters
    ----------
    path : str or None
        The image file.
    size : int
        Output side in pixels (the image is squashed, not cropped).
    transform : callable, optional
        ``transform(img, rng) -> (img, ...)`` (e.g. an :mod:`nnutils.data.distortions`
        function), applied to the PIL image before resizing, for augmented views.
    rng : numpy.random.Generator, optional
        Passed to ``transform``.

    Returns
    -------
    ndarray of float32, shape (size, size, 3), or None
        RGB in [0, 255]; None for a None path or an unreadable file.
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
    """Run ``model`` on every image.

    With ``cache_dir``, each image's result is stored in ``<cache_dir>/<key>/`` under the
    SHA-1 of its file (:class:`~nnutils.data.cache.ContentCache`) and reused. With a
    ``transform``, the cache key includes ``seed`` (one augmented view per seed). Batches
    are zero-padded to ``batch_size`` so one graph is traced.

    Parameters
    ----------
    model : keras.Model
        Maps float images (B, size, size, 3) in [0, 255] to any tensor.
    paths : sequence of str or None, length N
        Image files.
    size : int
        Input side in pixels.
    batch_size : int, default 32
        Images per batch.
    cache_dir : str or Path, optional
        Cache root; None caches nothing.
    key : str, default "model"
        Cache sub-folder naming the model.
    dtype : str, default "float16"
        Dtype of the returned (and cached) features.
    transform : callable, optional
        Augmentation applied before resizing (:func:`load_square`).
    seed : int, default 0
        Seed of the augmentation (image ``i`` uses ``default_rng([seed, i])``).
    workers : int, default 2
        Decoding and hashing threads.
    progress : bool, default True
        Show a progress bar.
    desc : str, default "features"
        Progress-bar label.

    Returns
    -------
    features : ndarray of ``dtype``, shape (N, *model_output_shape)
        Zero rows where unreadable.
    ok : ndarray of bool, shape (N,)
        Which rows are valid.
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
    """L2-normalised embeddings of images via :func:`compute_features` (cached if asked).

    Parameters
    ----------
    embedder : keras.Model
        Images (B, size, size, 3) in [0, 255] → (B, D) unit-norm embeddings.
    paths : sequence of str or None, length N
        Image files.
    size : int
        Input side in pixels.
    **kw
        Passed to :func:`compute_features` (``dtype`` defaults to ``"float32"``).

    Returns
    -------
    emb : ndarray of float32, shape (N, D)
        Zero rows where unreadable.
    ok : ndarray of bool, shape (N,)
    """
    kw.setdefault("dtype", "float32")
    kw.setdefault("desc", "embedding")
    return compute_features(embedder, paths, size, **kw)
