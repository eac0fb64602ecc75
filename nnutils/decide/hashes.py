"""Baselines any learned model must beat: perceptual hashes (imagehash) compared by Hamming distance.

A perceptual hash costs ~2 ms per image and catches byte-identical, re-encoded, resized
and lightly recoloured copies; it fails on crops, borders, padding and heavy overlays.
"""
from __future__ import annotations

from typing import Iterable

import imagehash
import numpy as np
from tqdm.auto import tqdm

from nnutils.data.images import UnreadableImageError, open_image

__all__ = ["HASHES", "hash_images", "hash_similarity", "hash_vectors"]

HASHES = {"phash": imagehash.phash, "dhash": imagehash.dhash, "whash": imagehash.whash,
          "ahash": imagehash.average_hash}


def hash_images(paths: Iterable[str], kind: str = "phash", hash_size: int = 8,
                progress: bool = True) -> dict[str, np.ndarray | None]:
    """Hash every distinct path once.

    Parameters
    ----------
    paths : iterable of str
        Image files (duplicates are hashed once).
    kind : str, default "phash"
        One of :data:`HASHES` (``imagehash`` functions).
    hash_size : int, default 8
        Side of the hash grid: ``hash_size ** 2`` bits.
    progress : bool, default True
        Show a progress bar.

    Returns
    -------
    dict of str to ndarray or None
        Path → bool array of shape (hash_size**2,); None if unreadable.

    Raises
    ------
    ValueError
        For an unknown ``kind``.
    """
    if kind not in HASHES:
        raise ValueError(f"kind must be one of {sorted(HASHES)}, got {kind!r}")
    fn = HASHES[kind]
    out: dict[str, np.ndarray | None] = {}
    for p in tqdm(list(dict.fromkeys(paths)), desc=kind, disable=not progress):
        try:
            with open_image(p, draft_size=(128, 128)) as im:
                out[p] = fn(im, hash_size=hash_size).hash.flatten()
        except UnreadableImageError:
            out[p] = None
    return out


def hash_similarity(hashes: dict, paths1: Iterable[str], paths2: Iterable[str]) -> np.ndarray:
    """``1 - Hamming / bits`` per pair, in [0, 1]; NaN where an image is unreadable.

    Parameters
    ----------
    hashes : dict of str to ndarray or None
        :func:`hash_images`' output.
    paths1, paths2 : iterable of str, length N
        The pairs' two images.

    Returns
    -------
    ndarray of float, shape (N,)
    """
    out = []
    for a, b in zip(paths1, paths2):
        ha, hb = hashes.get(a), hashes.get(b)
        out.append(np.nan if ha is None or hb is None else 1.0 - np.count_nonzero(ha != hb) / ha.size)
    return np.asarray(out, float)


def hash_vectors(hashes: dict, paths: Iterable[str]) -> tuple[np.ndarray, np.ndarray]:
    """Hashes as unit vectors, so a kNN index over embeddings can group by hash too.

    Bit b becomes ``(2b - 1) / sqrt(bits)``: the dot product of two such vectors is
    ``1 - 2 * Hamming / bits``, i.e. ``2 * hash_similarity - 1``.

    Parameters
    ----------
    hashes : dict of str to ndarray or None
        :func:`hash_images`' output.
    paths : iterable of str, length N
        The images, in row order.

    Returns
    -------
    vectors : ndarray of float32, shape (N, bits)
        Unit rows; zero rows where unreadable.
    ok : ndarray of bool, shape (N,)
    """
    paths = list(paths)
    bits = next((h.size for h in hashes.values() if h is not None), 64)
    out = np.zeros((len(paths), bits), np.float32)
    ok = np.zeros(len(paths), bool)
    for i, p in enumerate(paths):
        h = hashes.get(p)
        if h is not None:
            out[i] = (2.0 * h.astype(np.float32) - 1.0) / np.sqrt(bits)
            ok[i] = True
    return out, ok
