"""Per-image results cached on disk by the content of the image file.

:class:`ContentCache` stores one ``.npy`` row per file as ``<folder>/<sha1 of the bytes>.npy``,
so renamed or duplicated files are computed once and a changed file is recomputed;
:func:`model_key` names the folder after the model and settings that made the rows.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np

from nnutils.data.images import file_digest_or_none


def atomic_write(target: str | os.PathLike, write) -> None:
    """Write ``target`` atomically: ``write(f)`` fills a temporary file beside it, then it is renamed.

    A run killed mid-write leaves no half-written file under ``target``'s name (a truncated
    cache file would otherwise be read back by every later run).

    Parameters
    ----------
    target : path
        The file to (re)write; its folder must exist.
    write : callable
        ``write(f)`` with ``f`` a binary file object open for writing.
    """
    target = Path(target)
    fd, tmp = tempfile.mkstemp(prefix=target.name + ".", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class ContentCache:
    """Per-image results stored as ``<folder>/<sha1 of the file's bytes>.npy``.

    ``lookup`` fills an output array from the cache and returns the rows still to
    compute; ``store`` saves one computed row (atomically: a temporary file renamed). A
    damaged file, or a row whose shape does not fit, is a miss: recomputed and rewritten,
    never a crash. ``folder=None`` caches nothing.

    Parameters
    ----------
    folder : str or Path or None
        The cache folder (created if missing); None disables caching.
    paths : sequence of str or None, length N
        The image files, in row order; a None (or unreadable) path is never cached.
    workers : int, default 2
        Threads that hash the files' bytes when the cache is created.
    """

    def __init__(self, folder: str | Path | None, paths: Sequence[str | None], workers: int = 2):
        self.folder = Path(folder) if folder is not None else None
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)
            with ThreadPoolExecutor(workers) as pool:
                self.digests = list(pool.map(file_digest_or_none, paths))
        else:
            self.digests = [None] * len(paths)

    def lookup(self, out: np.ndarray, ok: np.ndarray) -> list[int]:
        """Copy cached rows into ``out`` (marking ``ok``); return the indices not cached.

        Parameters
        ----------
        out : ndarray, shape (N, ...)
            Filled in place: row ``i`` gets the cached result of ``paths[i]``.
        ok : ndarray of bool, shape (N,)
            Set True in place for every row filled from the cache.

        Returns
        -------
        list of int
            The row indices that still have to be computed (all of them when ``folder`` is None).
        """
        todo = []
        for i, d in enumerate(self.digests):
            row = self._load(d)
            if row is not None and row.shape == out.shape[1:]:
                out[i], ok[i] = row, True
            else:
                todo.append(i)
        return todo

    def _load(self, digest: str | None) -> np.ndarray | None:
        """The stored row, or None: not cached, or a damaged file (recomputed and rewritten)."""
        if self.folder is None or not digest:
            return None
        f = self.folder / f"{digest}.npy"
        try:
            return np.load(f, allow_pickle=False)
        except (OSError, ValueError, EOFError):   # absent, truncated by a killed run, or not an .npy
            return None

    def store(self, i: int, row: np.ndarray) -> None:
        """Save row ``i``'s computed result to the cache (nothing when caching is off or the path has no digest).

        Parameters
        ----------
        i : int
            Row index into the ``paths`` given to the constructor.
        row : ndarray
            The result, written as ``<folder>/<sha1>.npy``.
        """
        if self.folder is not None and self.digests[i]:
            row = np.asarray(row)
            atomic_write(self.folder / f"{self.digests[i]}.npy", lambda f: np.save(f, row, allow_pickle=False))


def model_key(*parts) -> str:
    """A short, filesystem-safe cache key from descriptive parts (backbone, size, layer, weights...).

    Parameters
    ----------
    *parts : object
        Joined with ``-`` after ``str()``.

    Returns
    -------
    str
        The first 60 characters of the joined text (``/`` replaced by ``_``), a dash and the
        first 8 hex digits of its SHA-1, so different part lists never share a key.
    """
    text = "-".join(str(p) for p in parts)
    return f"{text[:60].replace('/', '_')}-{hashlib.sha1(text.encode()).hexdigest()[:8]}"
