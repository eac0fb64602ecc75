"""Export embeddings with thumbnails and labels to the TensorBoard embedding projector.

    export_projector(run_dir / "tensorboard" / "projector", emb, paths, labels_df)
    tensorboard --logdir runs/cpu/tensorboard/projector     # then the PROJECTOR tab

Writes, in ``log_dir``: ``embeddings.tsv`` (the vectors, one row per image, tab-separated),
``metadata.tsv`` (a header row and one row of labels per image — e.g. group, photo, kind),
``sprite.png`` (the thumbnails tiled row by row in one image, as the projector expects) and
``projector_config.pbtxt`` tying them together. A TSV tensor needs no TensorFlow
checkpoint, so the export works anywhere; the projector loads it directly.

The projector's sprite is at most 8192×8192 pixels, so ``thumb`` × ceil(sqrt(N)) must fit:
:func:`export_projector` refuses more images than that (choose a sample, or smaller thumbs).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from nnutils.data.images import UnreadableImageError, read_rgb

__all__ = ["MAX_SPRITE_SIDE", "make_sprite", "export_projector"]

MAX_SPRITE_SIDE = 8192


def make_sprite(paths: Sequence[str | None], thumb: int = 64, progress: bool = False) -> np.ndarray:
    """Tile thumbnails of ``paths`` into one sprite image for the TensorBoard projector.

    Each image is squashed to ``thumb``×``thumb`` pixels (the projector shows squares);
    unreadable images and ``None`` are mid-grey tiles. Order: row by row.

    Parameters
    ----------
    paths : sequence of str or None, length N
    thumb : int, default 64
        Tile side in pixels.
    progress : bool, default False

    Returns
    -------
    ndarray of uint8, shape (S·thumb, S·thumb, 3)
        S = ceil(sqrt(N)).

    Raises
    ------
    ValueError
        When the sprite would exceed ``MAX_SPRITE_SIDE`` pixels.
    """
    from PIL import Image
    from tqdm.auto import tqdm

    n = len(paths)
    side = max(1, math.ceil(math.sqrt(n)))
    if side * thumb > MAX_SPRITE_SIDE:
        raise ValueError(f"{n} images of {thumb} px do not fit the projector's {MAX_SPRITE_SIDE} px sprite; "
                         f"use at most {(MAX_SPRITE_SIDE // thumb) ** 2} images or smaller thumbnails")
    sprite = np.full((side * thumb, side * thumb, 3), 128, np.uint8)
    for k, p in enumerate(tqdm(paths, desc="sprite", disable=not progress)):
        if p is None:
            continue
        try:
            img = Image.fromarray(read_rgb(p)).resize((thumb, thumb), Image.BILINEAR)
        except (UnreadableImageError, OSError):
            continue
        r, c = divmod(k, side)
        sprite[r * thumb:(r + 1) * thumb, c * thumb:(c + 1) * thumb] = np.asarray(img)
    return sprite


def _clean(v) -> str:
    return str(v).replace("\t", " ").replace("\n", " ")


def export_projector(log_dir, emb: np.ndarray, paths: Sequence[str | None], labels: pd.DataFrame | None = None,
                     *, thumb: int = 64, name: str = "embeddings", progress: bool = False) -> Path:
    """Write the TensorBoard projector files for embeddings ``emb`` of images ``paths``.

    Rows with non-finite embeddings (unreadable images) are dropped. Writes
    ``embeddings.tsv``, ``metadata.tsv``, ``sprite.png`` and the projector config.

    Parameters
    ----------
    log_dir : str or Path
        Created if missing.
    emb : ndarray, shape (N, D)
        Embeddings (cast to float32).
    paths : sequence of str or None, length N
    labels : DataFrame, N rows, optional
        Columns to colour and search by in the projector (e.g. ``group``, ``photo``,
        ``kind``); a ``file`` column (the image's file name) is always added first.
    thumb : int, default 64
        Sprite tile side in pixels.
    name : str, default "embeddings"
        The tensor's name in the projector.
    progress : bool, default False

    Returns
    -------
    Path
        ``log_dir``.

    Raises
    ------
    ValueError
        When ``emb`` is not (N, D) with N = len(paths), ``labels`` has another length, no
        embedding is finite, or the sprite would be too large.
    """
    from tensorboard.plugins import projector
    emb = np.asarray(emb, np.float32)
    paths = list(paths)
    if emb.ndim != 2 or len(emb) != len(paths):
        raise ValueError(f"emb must be (N, D) with N = len(paths) = {len(paths)}, got {emb.shape}")
    if labels is not None and len(labels) != len(paths):
        raise ValueError(f"labels has {len(labels)} rows for {len(paths)} images")
    keep = np.isfinite(emb).all(axis=1)
    meta = pd.DataFrame({"file": [Path(p).name if p else "" for p in paths]})
    if labels is not None:
        meta = pd.concat([meta, labels.reset_index(drop=True).drop(columns=["file"], errors="ignore")], axis=1)
    emb, meta = emb[keep], meta[keep].reset_index(drop=True)
    paths = [p for p, k in zip(paths, keep) if k]
    if not len(emb):
        raise ValueError("no finite embeddings to export")
    log_dir = Path(log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    from PIL import Image
    Image.fromarray(make_sprite(paths, thumb, progress)).save(log_dir / "sprite.png")
    np.savetxt(log_dir / "embeddings.tsv", emb, delimiter="\t", fmt="%.6g")
    # the projector reads a header row only when there are two or more columns
    meta.map(_clean).to_csv(log_dir / "metadata.tsv", sep="\t", index=False, header=meta.shape[1] > 1)
    config = projector.ProjectorConfig()
    e = config.embeddings.add()
    e.tensor_name = name
    e.tensor_path = "embeddings.tsv"
    e.tensor_shape.extend([len(emb), emb.shape[1]])
    e.metadata_path = "metadata.tsv"
    e.sprite.image_path = "sprite.png"
    e.sprite.single_image_dim.extend([thumb, thumb])
    projector.visualize_embeddings(str(log_dir), config)
    return log_dir
