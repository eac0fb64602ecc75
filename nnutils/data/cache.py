"""Per-image results cached on disk by the content of the image file.

:class:`ContentCache` stores one row per file under the SHA-1 of the file's bytes, so renamed
or duplicated files are computed once and a changed file is recomputed; :func:`model_key`
names the folder after the model and settings that made the rows. The rows (and the local
features' records, :class:`nnutils.local.features_cache.FeatureCache`) live in a
:class:`PackStore`: values appended to a few pack files with an index beside them, not one
file per image. On this machine's disk (ext4 in a VM) creating a file costs ~0.7–1.2 ms of
kernel time whatever its size, against ~0.05–0.15 ms to append a 150 KB record to an open
file (``python bench/cache_store.py``): with a file per image, the one pass's two cache files
cost ~1.4 ms per image of its ~8, and a collection of tens of millions of photos would be
tens of millions of files.
"""
from __future__ import annotations

import hashlib
import io
import os
import secrets
import socket
import tempfile
import threading
import time
import weakref
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


def _close_fds(fds: dict) -> None:
    for fd in fds.values():
        try:
            os.close(fd)
        except OSError:
            pass
    fds.clear()


class PackStore:
    """Byte values by key, appended to pack files: ``<folder>/<writer>.pack`` and ``<writer>.idx``.

    Each store that writes appends to a pack file of its own (named after the time, host and
    process, so concurrent processes never write one file; a forked child starts its own;
    threads share the store's, under a lock) and, after each value,
    one line ``<key> <offset> <length>`` to the pack's index. Opening a store reads every
    index in the folder (in name order, i.e. oldest writer first; a later entry for a key
    wins); a line that does not parse or points past its pack's end (a run killed
    mid-write) is ignored, so a killed run never leaves a truncated value under a key. A
    store sees the values other processes add after it opened only when opened again (a
    cache: a miss is recomputed). Nothing is ever rewritten in place; a key stored again
    is appended again.

    Parameters
    ----------
    folder : str or Path
        Created if missing.

    Examples
    --------
    >>> import tempfile
    >>> s = PackStore(tempfile.mkdtemp())
    >>> s.put("ab12", b"hello")
    >>> s.get("ab12"), s.get("cd34"), len(PackStore(s.folder))
    (b'hello', None, 1)
    """

    PACK, INDEX = ".pack", ".idx"

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._index: dict[str, tuple[str, int, int]] = {}
        self._lock = threading.Lock()
        self._fds: dict[str, int] = {}          # read descriptors by pack name, and the writer's
        self._writer: tuple[str, int, int, int] | None = None   # (pack name, pack fd, index fd, pid)
        self._finalizer = weakref.finalize(self, _close_fds, self._fds)
        for idx in sorted(self.folder.glob(f"*{self.INDEX}")):
            self._read_index(idx)

    def _read_index(self, idx: Path) -> None:
        pack = idx.with_suffix(self.PACK)
        try:
            size = pack.stat().st_size
            lines = idx.read_bytes().split(b"\n")
        except OSError:
            return
        for line in lines:
            parts = line.split()
            if len(parts) != 3:
                continue
            try:
                key, offset, length = parts[0].decode("ascii"), int(parts[1]), int(parts[2])
            except (UnicodeDecodeError, ValueError):
                continue
            if offset >= 0 and length >= 0 and offset + length <= size:
                self._index[key] = (pack.name, offset, length)

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, key) -> bool:
        return key in self._index

    def _fd(self, name: str) -> int:
        fd = self._fds.get(name)
        if fd is None:
            fd = self._fds[name] = os.open(self.folder / name, os.O_RDONLY)
        return fd

    def get(self, key: str) -> bytes | None:
        """The value stored under ``key``, or None (not stored, or its pack is gone or short)."""
        entry = self._index.get(key)
        if entry is None:
            return None
        name, offset, length = entry
        try:
            with self._lock:
                fd = self._fd(name)
            data = os.pread(fd, length, offset)
        except OSError:
            return None
        return data if len(data) == length else None

    def put(self, key: str, data: bytes) -> None:
        """Append ``data`` under ``key`` (thread-safe).

        Parameters
        ----------
        key : str
            Printable ASCII without spaces (a hex digest).
        data : bytes-like

        Raises
        ------
        ValueError
            A key with whitespace or non-ASCII characters.
        """
        if not key or not key.isascii() or any(c.isspace() for c in key):
            raise ValueError(f"a pack key must be printable ASCII without spaces, got {key!r}")
        data = memoryview(data).cast("B")
        with self._lock:
            if self._writer is None or self._writer[3] != os.getpid():   # none yet, or a forked child's
                pid = os.getpid()
                stem = f"{time.time_ns():016x}-{socket.gethostname()[:24]}-{pid}-{secrets.token_hex(4)}"
                flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
                pack = os.open(self.folder / f"{stem}{self.PACK}", flags, 0o644)
                idx = os.open(self.folder / f"{stem}{self.INDEX}", flags, 0o644)
                self._fds[f"w-pack-{pid}"], self._fds[f"w-idx-{pid}"] = pack, idx
                self._writer = (f"{stem}{self.PACK}", pack, idx, pid)
            name, pack, idx, _ = self._writer
            offset, done = os.lseek(pack, 0, os.SEEK_END), 0   # the real end, even after a failed write
            while done < len(data):
                done += os.write(pack, data[done:])
            os.write(idx, f"{key} {offset} {len(data)}\n".encode("ascii"))
            self._index[key] = (name, offset, len(data))

    def close(self) -> None:
        """Close the store's files (also done when it is garbage-collected)."""
        with self._lock:
            _close_fds(self._fds)
            self._writer = None


class ContentCache:
    """Per-image results stored by the SHA-1 of the file's bytes, in a :class:`PackStore`.

    ``lookup`` fills an output array from the cache and returns the rows still to
    compute; ``store`` saves one computed row (appended to the folder's packs, see
    :class:`PackStore`). A damaged value, or a row whose shape does not fit, is a miss:
    recomputed and stored again, never a crash. ``folder=None`` caches nothing.

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
        self.packs = PackStore(self.folder) if self.folder is not None else None
        if self.folder is not None:
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
        if self.packs is None or not digest:
            return None
        data = self.packs.get(digest)
        if data is None:
            return None
        try:
            return np.load(io.BytesIO(data), allow_pickle=False)
        except (OSError, ValueError, EOFError):   # not an .npy's bytes
            return None

    def store(self, i: int, row: np.ndarray) -> None:
        """Save row ``i``'s computed result to the cache (nothing when caching is off or the path has no digest).

        Parameters
        ----------
        i : int
            Row index into the ``paths`` given to the constructor.
        row : ndarray
            The result, stored as the bytes of an ``.npy`` file under the file's SHA-1.
        """
        if self.packs is not None and self.digests[i]:
            buf = io.BytesIO()
            np.save(buf, np.asarray(row), allow_pickle=False)
            self.packs.put(self.digests[i], buf.getbuffer())


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
