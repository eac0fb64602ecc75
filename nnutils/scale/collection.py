"""A collection that persists: "is this new photo already here?" without redoing everything.

A :class:`Collection` is a folder on disk::

    COLL/collection.json       settings, written once: the model (its key), dimension, format version
    COLL/collection.sqlite     SQLite in WAL mode: items (id, sha1 digest, path, bytes, vector as a
                               float32 blob, removed), paths seen, "not the same" marks, unreadable
                               files, and the state (which base index file covers which ids)
    COLL/base-<generation>.faiss   the base faiss index (``IndexIDMap2`` over flat or HNSW,
                               ids = item ids), covering the items with id <= ``base_upto``

**Writes are cheap and crash-safe.** :meth:`Collection.add` digests each file (SHA-1 of its
bytes, :func:`nnutils.data.images.file_digest`; content already in the collection is
recognised and not embedded again), embeds the new ones and commits them batch by batch, one
SQLite transaction per batch (``synchronous=FULL``): a ``kill -9`` in the middle of an add
loses at most the batch being written, never what was committed before, and the database is
never half-written. An add costs time in proportion to what it adds: its rows go to the
*delta* (the items with id > ``base_upto``), which queries search exactly; no index file is
rewritten. Now and then (when the delta exceeds :data:`MERGE_ROWS` rows, or on
:meth:`Collection.merge`) the delta is merged into a new base file, written to a temporary
file and renamed over (atomic), then recorded in the state table; a crash before the rename
leaves the old base in force.

**Removal** marks items removed (tombstones, filtered at query time): faiss HNSW cannot delete
ids. A merge with many tombstones (more than :data:`REBUILD_SHARE` of the base) rebuilds the
base from the live vectors; so does a merge whose size calls for another index kind (flat up
to :data:`~nnutils.scale.index.AUTO_FLAT_MAX` items, HNSW above).

**Readers see a consistent index.** A :class:`Snapshot` is read in one SQLite read transaction:
the base file named by the state, the delta rows up to the last committed id and the
tombstones at that moment. Writers that commit meanwhile are not seen until
:meth:`Collection.refresh` (which :meth:`Collection.query` calls: it loads only the rows added
since). A merge keeps the previous base file, so a reader that has just read the state still
finds its file.

**False-positive memory.** :meth:`Collection.mark_different` records that two photos are not
the same (by content digest, so the mark survives a remove and re-add). :meth:`Collection.groups`
never puts a marked pair in one group, even through a third photo
(:func:`nnutils.scale.grouping.constrained_groups`), :meth:`Collection.query` decides a marked
pair 0, and :meth:`Collection.export_marks` writes the marks as labelled pairs (the LUN labels
format ``image_url1,image_url2,is_same``) for the next fusion fit.

**Queries** (:meth:`Collection.query`) return each new photo's existing copies with their
cosine scores and the run's full :class:`~nnutils.decide.decision.Decision`
(:meth:`~nnutils.decide.decision.Decision.decide`: the global threshold and, when the run
verifies, the local verification of the candidates in its verify range), timed apart:
embedding, search and verification.

The command front-end is ``python -m nnutils.collection``.
"""
from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from nnutils.data.cache import model_key
from nnutils.data.images import UnreadableImageError, file_digest, inspect_image
from nnutils.decide.decision import Decision
from nnutils.scale.dedup import group_table, list_images, read_image_list
from nnutils.scale.grouping import group_edges, grouping_options, neighbour_edges
from nnutils.scale.index import check_embeddings, knn, resolve_kind
from nnutils.scale.index import search as index_search

__all__ = ["Collection", "Snapshot", "AddResult", "QueryResult", "FORMAT", "VERSION", "MERGE_ROWS",
           "REBUILD_SHARE"]

FORMAT = "nnutils.collection"
VERSION = 1
SETTINGS_FILE = "collection.json"
DB_FILE = "collection.sqlite"
#: The delta (items not yet in the base index, searched exactly) is merged into a new base
#: file when it reaches this many rows: exact search of 20,000 × 512 floats is ~2 ms per query.
MERGE_ROWS = 20_000
#: A merge rebuilds the base from the live vectors when more than this share of it is removed.
REBUILD_SHARE = 0.2
_CHUNK = 65_536
_FEW = 64

_SCHEMA = """
CREATE TABLE IF NOT EXISTS items(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    digest TEXT NOT NULL,
    path TEXT NOT NULL,
    bytes INTEGER,
    added REAL NOT NULL,
    removed REAL,
    removed_seq INTEGER,
    purged INTEGER NOT NULL DEFAULT 0,
    vector BLOB);
CREATE UNIQUE INDEX IF NOT EXISTS items_live_digest ON items(digest) WHERE removed IS NULL;
CREATE INDEX IF NOT EXISTS items_path ON items(path);
CREATE INDEX IF NOT EXISTS items_removed ON items(id, purged, removed_seq) WHERE removed IS NOT NULL;
CREATE TABLE IF NOT EXISTS paths(path TEXT PRIMARY KEY, digest TEXT NOT NULL, seen REAL NOT NULL);
CREATE TABLE IF NOT EXISTS marks(
    digest1 TEXT NOT NULL, digest2 TEXT NOT NULL, path1 TEXT, path2 TEXT, created REAL NOT NULL,
    PRIMARY KEY(digest1, digest2));
CREATE TABLE IF NOT EXISTS unreadable(path TEXT PRIMARY KEY, reason TEXT, seen REAL NOT NULL);
CREATE TABLE IF NOT EXISTS state(key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


def _faiss():
    import faiss
    return faiss


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _blob(v: np.ndarray) -> bytes:
    return np.ascontiguousarray(v, np.float32).tobytes()


def _vectors(blobs: Sequence[bytes], dim: int) -> np.ndarray:
    if not blobs:
        return np.zeros((0, dim), np.float32)
    return np.frombuffer(b"".join(blobs), np.float32).reshape(len(blobs), dim)


@dataclass
class Snapshot:
    """A consistent, read-only view of a collection: the base index, the delta and the tombstones.

    Parameters
    ----------
    dim : int
        Vector dimension D.
    index : faiss.Index or None
        The base index (``IndexIDMap2``: search returns item ids); None before the first merge.
    base_file : str or None
        Its file name in the collection folder.
    base_upto : int
        The base covers items with id <= base_upto (0: no base).
    upto : int
        The last committed item id this snapshot sees.
    delta_ids : ndarray of int64, shape (M,)
        Items with base_upto < id <= upto (searched exactly).
    delta : ndarray of float32, shape (M, D)
        Their unit vectors.
    tombstones : ndarray of int64
        Removed ids still held by the base or the delta (filtered from every result).
    generation : int
        The base generation (increases with every merge).
    removals : int
        The removal counter at the snapshot.
    """

    dim: int
    index: object | None
    base_file: str | None
    base_upto: int
    upto: int
    delta_ids: np.ndarray
    delta: np.ndarray
    tombstones: np.ndarray
    generation: int
    removals: int

    @property
    def base_size(self) -> int:
        """Vectors in the base index, tombstones included."""
        return 0 if self.index is None else int(self.index.ntotal)

    @property
    def size(self) -> int:
        """Live items the snapshot can return."""
        tomb = self.tombstones
        in_base = int((tomb <= self.base_upto).sum()) if self.index is not None else 0
        return self.base_size + len(self.delta_ids) - in_base - int(np.isin(self.delta_ids, tomb).sum())

    def search(self, queries, k: int, *, ef_search: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` most similar live items of each query: base and delta merged, tombstones dropped.

        Parameters
        ----------
        queries : array-like, shape (Q, D)
            Unit vectors (float32).
        k : int
            Results per query (fewer when the collection is smaller).
        ef_search : int, optional
            HNSW search beam width of the base (default: as built, 128; ignored by a flat base).

        Returns
        -------
        sims : ndarray of float32, shape (Q, k)
            Cosine similarities, descending; ``-inf`` in empty slots.
        ids : ndarray of int64, shape (Q, k)
            Item ids; -1 in empty slots.

        Raises
        ------
        ValueError
            For k < 1 or queries of another dimension.
        """
        if int(k) < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        q = check_embeddings(queries, "queries", dim=self.dim, unit_norm=False)
        k = int(k)
        parts_s, parts_i = [], []
        tomb = self.tombstones
        if self.index is not None and self.index.ntotal:
            kk = int(min(self.index.ntotal, k + len(tomb)))      # over-fetch: tombstones are dropped below
            inner = _faiss().downcast_index(self.index.index)
            if ef_search is not None and hasattr(inner, "hnsw"):
                inner.hnsw.efSearch = int(ef_search)
            # a few queries: one OpenMP thread (faiss's spinning threads cost 20-60 ms on a shared machine)
            s, i = index_search(self.index, q, kk, threads=1 if len(q) < _FEW else None)
            parts_s.append(s)
            parts_i.append(i)
        if len(self.delta_ids):
            s = q @ self.delta.T                                  # exact: the delta is small
            kk = min(k + len(tomb), s.shape[1])
            top = np.argpartition(-s, kk - 1, axis=1)[:, :kk] if kk < s.shape[1] else \
                np.broadcast_to(np.arange(s.shape[1]), (len(q), s.shape[1]))
            parts_s.append(np.take_along_axis(s, top, 1))
            parts_i.append(self.delta_ids[top])
        if not parts_s:
            return np.full((len(q), k), -np.inf, np.float32), np.full((len(q), k), -1, np.int64)
        s = np.concatenate(parts_s, 1).astype(np.float32)
        i = np.concatenate(parts_i, 1).astype(np.int64)
        s[i < 0] = -np.inf
        if len(tomb):
            dead = np.isin(i, tomb)
            s[dead], i[dead] = -np.inf, -1
        order = np.argsort(-s, axis=1, kind="stable")[:, :k]
        s, i = np.take_along_axis(s, order, 1), np.take_along_axis(i, order, 1)
        i[~np.isfinite(s)] = -1
        if s.shape[1] < k:
            pad = k - s.shape[1]
            s = np.pad(s, ((0, 0), (0, pad)), constant_values=-np.inf)
            i = np.pad(i, ((0, 0), (0, pad)), constant_values=-1)
        return s, i


@dataclass
class AddResult:
    """What :meth:`Collection.add` did.

    Parameters
    ----------
    added : DataFrame
        ``id``, ``path``, ``digest``: the items added now.
    known : DataFrame
        ``path``, ``digest``, ``id`` (the existing item with that content): files whose
        content was already in the collection (not embedded again).
    unreadable : DataFrame
        ``path``, ``reason``.
    report : dict
        ``added``, ``known``, ``unreadable``, ``items`` (live after the add), ``digest_s``,
        ``embed_s``, ``write_s``, ``merge`` (the merge's report, or None) and ``seconds``.
    """

    added: pd.DataFrame
    known: pd.DataFrame
    unreadable: pd.DataFrame
    report: dict = field(default_factory=dict)


@dataclass
class QueryResult:
    """What :meth:`Collection.query` found.

    Parameters
    ----------
    matches : DataFrame
        One row per query × candidate (the top ``k`` at or above the candidate floor):
        ``query`` (path), ``rank`` (1 = most similar), ``id``, ``match`` (the item's path),
        ``score`` (cosine in [-1, 1]), ``same_bytes`` (identical file content),
        ``global_decision`` (0/1 at the decision's threshold), ``verified`` (whether the pair
        was in the verify range and checked locally; the range is of the model the
        verification was fitted on, :meth:`~nnutils.decide.decision.Decision.fusion_scores`:
        the int8 model's cosine when the run has one), ``marked`` (the user marked the pair
        "not the same") and ``decision`` (the final 0/1).
    unreadable : DataFrame
        ``path``, ``reason`` of query images that could not be read.
    report : dict
        ``queries``, ``candidates``, ``copies``, ``embed_s``, ``search_s``, ``decide_s`` (seconds),
        ``ms_per_query_embed_search`` and, when the decision verifies, ``pairs_verified``,
        ``verify_s``, ``ms_per_verified_pair``, ``fusion``.
    """

    matches: pd.DataFrame
    unreadable: pd.DataFrame
    report: dict = field(default_factory=dict)

    @property
    def copies(self) -> pd.DataFrame:
        """The matches decided to be copies (``decision == 1``)."""
        return self.matches[self.matches.decision == 1].reset_index(drop=True)


def _resolve_images(images) -> list[str]:
    """A folder, a CSV of paths, one path or a sequence of paths → absolute path strings."""
    if isinstance(images, (str, os.PathLike)):
        p = Path(images)
        if p.is_dir():
            paths = list_images(p)
        elif p.suffix.lower() == ".csv":
            paths = read_image_list(p)
        else:
            paths = [str(p)]
    else:
        paths = [str(x) for x in images]
    return list(dict.fromkeys(str(Path(x).resolve()) for x in paths))


class Collection:
    """A persistent collection of image embeddings: add, query, remove, mark, group (module docstring).

    Open one with :meth:`open`; it is a context manager (``with Collection.open(...) as c``).
    One :class:`Collection` object is meant for one thread; several processes may open the
    same folder (SQLite serialises the writers; each reader searches its own snapshot).

    Parameters
    ----------
    path : Path
        The collection folder.
    settings : dict
        ``collection.json``.
    decision : Decision
        How a query pair is decided.
    embedder : object, optional
        Has ``dim`` and ``embed_paths(paths, batch_size=...) -> (emb, ok)``; loaded from the
        decision's model when first needed.
    runtime : str
        ``"tflite"`` or ``"keras"``.
    cache_dir : Path, optional
        Where a ``.keras`` model is converted to ``.tflite``.
    grouping : dict
        :func:`~nnutils.scale.grouping.grouping_options` of the run (``{}`` without one).
    """

    def __init__(self, path: Path, settings: dict, decision: Decision, embedder=None, runtime: str = "tflite",
                 cache_dir=None, grouping: dict | None = None):
        self.path = Path(path)
        self.settings = settings
        self.dim = int(settings["dim"])
        self.decision = decision
        self._embedder = embedder
        self.runtime = runtime
        self.cache_dir = cache_dir
        self.grouping = dict(grouping or {})
        self.db = sqlite3.connect(self.path / DB_FILE, timeout=60, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(_SCHEMA)
        self._snap: Snapshot | None = None

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(cls, path, model=None, *, threshold: float | None = None, runtime: str = "tflite", cache_dir=None,
             decision: Decision | None = None, embedder=None, create: bool = True) -> "Collection":
        """Open (or create) the collection in folder ``path``.

        Parameters
        ----------
        path : str or Path
            The collection folder (created with ``create=True``).
        model : str or Path, optional
            A run folder (its :class:`~nnutils.decide.decision.Decision`, the embedding model
            of :meth:`~nnutils.decide.decision.Decision.for_embeddings`, with the run's
            verification when it fits, and its ``grouping.json``) or a ``.keras`` / ``.tflite``
            embedder (then ``threshold`` is required). Default: the model the collection was
            created with.
        threshold : float, optional
            Overrides the decision's cosine threshold (a verification fitted at another
            threshold is then dropped).
        runtime : {"tflite", "keras"}, default "tflite"
        cache_dir : str or Path, optional
            Where a ``.keras`` model is converted (default ``<path>/cache``).
        decision : Decision, optional
            A decision to use instead of ``model``'s (with ``embedder``: tests, benchmarks).
        embedder : object, optional
            An embedder to use instead of loading the decision's model (which is otherwise
            loaded when the collection is created, or when it first embeds).
        create : bool, default True
            Create the collection when ``path`` holds none.

        Returns
        -------
        Collection

        Raises
        ------
        FileNotFoundError
            When there is no collection and ``create`` is False, or the model is missing.
        ValueError
            When the collection was built with another model (its vectors would not compare),
            or no model is given for a new collection.
        """
        path = Path(path)
        settings_file = path / SETTINGS_FILE
        settings = json.loads(settings_file.read_text()) if settings_file.is_file() else None
        if settings is not None and settings.get("format") != FORMAT:
            raise ValueError(f"{settings_file}: not a collection (format {settings.get('format')!r})")
        if settings is not None and int(settings.get("version", 0)) > VERSION:
            raise ValueError(f"{settings_file}: collection format version {settings['version']} is newer than "
                             f"this nnutils ({VERSION})")
        if settings is None and not create:
            raise FileNotFoundError(f"{path}: no collection here ({SETTINGS_FILE} not found)")
        if model is None and decision is None:
            if settings is None:
                raise ValueError(f"{path}: a new collection needs a model (a run folder or a model file)")
            model = settings["model"]
            if model is None:
                raise ValueError(f"{path} was created with a decision and an embedder of its own: "
                                 "pass decision= and embedder= again")
            if settings.get("threshold") is not None and threshold is None and not Path(model).is_dir():
                threshold = settings["threshold"]
        grouping = {}
        if decision is None:
            if Path(str(model)).is_dir():
                decision = Decision.load(model).for_embeddings()
                decision = decision.adopt_verification(Decision.load_verified(model))
                decision = decision if threshold is None else decision.at_threshold(threshold)
                grouping = grouping_options(model)
            else:
                decision = Decision.for_model(model, threshold)
        elif threshold is not None:
            decision = decision.at_threshold(threshold)
        cache_dir = Path(cache_dir) if cache_dir is not None else path / "cache"
        if embedder is None and settings is None:
            embedder = decision.embedder(runtime=runtime, cache_dir=cache_dir)
        d = int(embedder.dim) if embedder is not None else int(settings["dim"])
        key = cls._model_key(decision, runtime, d)
        if settings is None:
            path.mkdir(parents=True, exist_ok=True)
            settings = {"format": FORMAT, "version": VERSION,
                        "model": None if model is None else str(Path(str(model)).resolve()),
                        "model_name": decision.model, "model_key": key, "runtime": runtime, "dim": d,
                        "threshold": None if model is None or Path(str(model)).is_dir() else float(decision.threshold),
                        "created": time.time()}
            tmp = settings_file.with_suffix(".json.tmp")
            tmp.write_text(json.dumps(settings, indent=2))
            tmp.replace(settings_file)
        elif settings["model_key"] != key or int(settings["dim"]) != d:
            raise ValueError(f"{path} was built with model {settings['model_name']!r} (key {settings['model_key']}, "
                             f"{settings['dim']}-d), not {decision.model!r} (key {key}, {d}-d): its vectors do not "
                             "compare; build a new collection in another folder")
        return cls(path, settings, decision, embedder, runtime, cache_dir, grouping)

    @staticmethod
    def _model_key(decision: Decision, runtime: str, dim: int) -> str:
        mp = decision.model_path
        if mp is not None and Path(mp).is_file():
            return model_key(Path(mp).stem, Path(mp).stat().st_mtime_ns, runtime, dim)
        return model_key(decision.model, runtime, dim)

    @property
    def embedder(self):
        """The embedder (loaded on first use)."""
        if self._embedder is None:
            self._embedder = self.decision.embedder(runtime=self.runtime, cache_dir=self.cache_dir)
        return self._embedder

    def close(self) -> None:
        """Close the database connection (the files stay consistent whether or not this is called)."""
        self.db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return f"Collection({str(self.path)!r}, model={self.settings['model_name']!r}, dim={self.dim})"

    # ------------------------------------------------------------------ state
    @contextmanager
    def _txn(self, write: bool = False):
        self.db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def _state(self) -> dict:
        rows = dict(self.db.execute("SELECT key, value FROM state").fetchall())
        return {"base_file": rows.get("base_file"), "base_upto": int(rows.get("base_upto", 0)),
                "base_n": int(rows.get("base_n", 0)),
                "generation": int(rows.get("generation", 0)), "removals": int(rows.get("removals", 0)),
                "base_kind": rows.get("base_kind")}

    def _set_state(self, **kv) -> None:
        self.db.executemany("INSERT OR REPLACE INTO state(key, value) VALUES (?, ?)",
                            [(k, str(v)) for k, v in kv.items()])

    def snapshot(self, *, fresh: bool = False) -> Snapshot:
        """The current consistent view, refreshed with what was committed since it was read.

        Parameters
        ----------
        fresh : bool, default False
            Re-read everything (base file included) instead of only the new rows.

        Returns
        -------
        Snapshot
        """
        old = None if fresh else self._snap
        for attempt in range(5):
            with self._txn():
                st = self._state()
                upto = int(self.db.execute("SELECT COALESCE(MAX(id), 0) FROM items").fetchone()[0])
                tomb = np.array([r[0] for r in self.db.execute(
                    "SELECT id FROM items INDEXED BY items_removed WHERE removed IS NOT NULL AND purged = 0 "
                    "ORDER BY id")], np.int64)
                reuse = old is not None and old.generation == st["generation"]
                since = old.upto if reuse else st["base_upto"]
                rows = self.db.execute("SELECT id, vector FROM items WHERE id > ? AND id <= ? AND removed IS NULL "
                                       "ORDER BY id", (since, upto)).fetchall()
            ids = np.array([r[0] for r in rows], np.int64)
            vecs = _vectors([r[1] for r in rows], self.dim)
            if reuse:
                index = old.index
                ids, vecs = np.concatenate([old.delta_ids, ids]), np.concatenate([old.delta, vecs])
            elif st["base_file"]:
                try:
                    index = _faiss().read_index(str(self.path / st["base_file"]))
                except RuntimeError:
                    if not (self.path / st["base_file"]).exists() and attempt < 4:
                        continue                   # two merges since the state was read: read it again
                    raise
            else:
                index = None
            self._snap = Snapshot(self.dim, index, st["base_file"], st["base_upto"], upto, ids,
                                  np.ascontiguousarray(vecs, np.float32), tomb, st["generation"], st["removals"])
            return self._snap
        raise RuntimeError(f"{self.path}: could not read a consistent snapshot")  # pragma: no cover

    refresh = snapshot

    # ------------------------------------------------------------------ writing
    def add(self, images, *, batch_size: int = 64, merge: bool = True, progress: bool = False) -> AddResult:
        """Add images: new content is embedded and committed batch by batch; known content is recognised.

        Parameters
        ----------
        images : str or Path or sequence of str
            A folder (searched recursively), a CSV of paths, one file or a list of files.
        batch_size : int, default 64
            Images embedded and committed per transaction (what a crash can lose at most).
        merge : bool, default True
            Merge the delta into a new base file when it exceeds :data:`MERGE_ROWS` rows.
        progress : bool, default False
            Show a progress bar.

        Returns
        -------
        AddResult

        Raises
        ------
        ValueError
            When the embedder's vectors are not of the collection's dimension.
        """
        t0 = time.perf_counter()
        paths = _resolve_images(images)
        added, known, bad = [], [], []
        t_digest = t_embed = t_write = 0.0
        bar = None
        if progress:
            from tqdm.auto import tqdm
            bar = tqdm(total=len(paths), desc="add", unit="img")
        try:
            for s in range(0, len(paths), int(batch_size)):
                chunk = paths[s:s + int(batch_size)]
                t = time.perf_counter()
                digests, reasons = {}, []
                for p in chunk:
                    try:
                        digests[p] = file_digest(p)
                    except UnreadableImageError as e:
                        reasons.append((p, e.reason))
                have = self._ids_of_digests(list(set(digests.values())))
                new, seen_now = [], {}
                for p, d in digests.items():
                    if d in have:
                        known.append((p, d, have[d]))
                    elif d in seen_now:                      # twice in this batch: one item
                        known.append((p, d, None))
                    else:
                        seen_now[d] = p
                        new.append(p)
                t_digest += time.perf_counter() - t
                t = time.perf_counter()
                emb, ok = (self.embedder.embed_paths(new, batch_size=max(1, len(new))) if new
                           else (np.zeros((0, self.dim), np.float32), np.zeros(0, bool)))
                if len(new) and emb.shape[1] != self.dim:
                    raise ValueError(f"the embedder gives {emb.shape[1]}-d vectors, the collection holds {self.dim}-d")
                t_embed += time.perf_counter() - t
                t = time.perf_counter()
                reasons += [(p, inspect_image(p).reason or "unreadable") for p, o in zip(new, ok) if not o]
                bad.extend(reasons)
                now = time.time()
                rows = [(digests[p], p, Path(p).stat().st_size, now, _blob(emb[j])) for j, p in enumerate(new) if ok[j]]
                with self._txn(write=True):
                    for r in rows:
                        cur = self.db.execute("INSERT INTO items(digest, path, bytes, added, vector) "
                                              "VALUES (?, ?, ?, ?, ?)", r)
                        added.append((cur.lastrowid, r[1], r[0]))
                    unread = {p for p, _ in reasons}
                    self.db.executemany("INSERT OR REPLACE INTO paths(path, digest, seen) VALUES (?, ?, ?)",
                                        [(p, d, now) for p, d in digests.items() if p not in unread])
                    self.db.executemany("INSERT OR REPLACE INTO unreadable(path, reason, seen) VALUES (?, ?, ?)",
                                        [(p, r, now) for p, r in reasons])
                    self.db.executemany("DELETE FROM unreadable WHERE path = ?", [(r[1],) for r in rows])
                t_write += time.perf_counter() - t
                if bar is not None:
                    bar.update(len(chunk))
        finally:
            if bar is not None:
                bar.close()
        first_id = {d: i for i, p, d in added}
        known = [(p, d, i if i is not None else first_id.get(d)) for p, d, i in known]
        merged = self.merge() if merge and self.delta_rows() >= MERGE_ROWS else None
        report = dict(added=len(added), known=len(known), unreadable=len(bad), items=self.size(),
                      digest_s=round(t_digest, 3), embed_s=round(t_embed, 3), write_s=round(t_write, 3),
                      merge=merged, seconds=round(time.perf_counter() - t0, 3))
        return AddResult(pd.DataFrame(added, columns=["id", "path", "digest"]),
                         pd.DataFrame(known, columns=["path", "digest", "id"]),
                         pd.DataFrame(bad, columns=["path", "reason"]).drop_duplicates("path"), report)

    def add_vectors(self, vectors, paths: Sequence[str], digests: Sequence[str], *, batch_size: int = 10_000,
                    merge: bool = False) -> int:
        """Add precomputed unit vectors (a benchmark's synthetic collection, or vectors embedded elsewhere).

        Parameters
        ----------
        vectors : array-like, shape (N, D)
            Unit vectors of the collection's dimension.
        paths, digests : sequence of str, length N
            Their files and content digests (digests already live in the collection are skipped).
        batch_size : int, default 10000
            Rows per transaction.
        merge : bool, default False
            Merge the delta into the base afterwards when it exceeds :data:`MERGE_ROWS`.

        Returns
        -------
        int
            Rows added.

        Raises
        ------
        ValueError
            When the shapes disagree or the rows are not unit vectors.
        """
        x = check_embeddings(vectors, "vectors", dim=self.dim)
        if not (len(x) == len(paths) == len(digests)):
            raise ValueError(f"vectors ({len(x)}), paths ({len(paths)}) and digests ({len(digests)}) differ in length")
        n = 0
        now = time.time()
        for s in range(0, len(x), int(batch_size)):
            with self._txn(write=True):
                cur = self.db.executemany(
                    "INSERT OR IGNORE INTO items(digest, path, bytes, added, vector) VALUES (?, ?, NULL, ?, ?)",
                    ((digests[j], str(paths[j]), now, _blob(x[j])) for j in range(s, min(s + int(batch_size), len(x)))))
                n += cur.rowcount
        if merge and self.delta_rows() >= MERGE_ROWS:
            self.merge()
        return n

    def remove(self, items) -> int:
        """Mark items removed (tombstones): they are never returned again and leave the base at its next rebuild.

        Parameters
        ----------
        items : str or int or sequence of str / int
            Paths (as added, or any path whose content was added) or item ids.

        Returns
        -------
        int
            Items removed now.
        """
        items = [items] if isinstance(items, (str, int, os.PathLike)) else list(items)
        ids = set()
        for it in items:
            if isinstance(it, (int, np.integer)):
                ids.add(int(it))
                continue
            p = str(Path(it).resolve())           # two indexed look-ups (an OR would scan the table)
            ids.update(r[0] for r in self.db.execute("SELECT id FROM items WHERE path = ? AND removed IS NULL", (p,)))
            ids.update(r[0] for r in self.db.execute(
                "SELECT id FROM items WHERE removed IS NULL AND digest IN (SELECT digest FROM paths WHERE path = ?)",
                (p,)))
        if not ids:
            return 0
        with self._txn(write=True):
            seq = self._state()["removals"] + 1
            cur = self.db.executemany("UPDATE items SET removed = ?, removed_seq = ? WHERE id = ? AND removed IS NULL",
                                      [(time.time(), seq, i) for i in sorted(ids)])
            n = cur.rowcount
            self._set_state(removals=seq)
        return int(n)

    def merge(self, *, rebuild: bool | None = None, kind: str = "auto", hnsw_m: int = 32,
              ef_construction: int = 40, ef_search: int = 128, progress: bool = False) -> dict | None:
        """Merge the delta into a new base index file (atomically), rebuilding it when needed.

        The delta's live vectors are added to the base (cost: the delta, plus writing the file);
        the base is rebuilt from all live vectors instead when ``rebuild`` is True, when more
        than :data:`REBUILD_SHARE` of it is removed, or when the collection's size calls for
        another index kind (``kind="auto"``: flat up to 50,000 items, HNSW above). The new file
        is written beside the old one, fsync-ed and renamed into place, then the state is
        committed; the previous base file is kept (a reader may be opening it) and older ones
        deleted. Only one merge runs at a time (a lock file); a second returns None.

        Parameters
        ----------
        rebuild : bool, optional
            Force (True) or forbid (False) a rebuild; default: decided as above.
        kind : {"auto", "flat", "hnsw"}, default "auto"
            The base index kind.
        hnsw_m, ef_construction, ef_search : int
            HNSW graph degree and beam widths.
        progress : bool, default False
            Show a progress bar while vectors are added.

        Returns
        -------
        dict or None
            ``kind``, ``rebuilt``, ``base`` (vectors in the new base), ``added``, ``purged``,
            ``seconds``, ``file``; None when there was nothing to merge or another merge runs.

        Raises
        ------
        ValueError
            For an unknown ``kind``.
        """
        faiss = _faiss()
        if kind not in ("auto", "flat", "hnsw"):
            raise ValueError(f"kind must be 'auto', 'flat' or 'hnsw', got {kind!r}")
        t0 = time.perf_counter()
        lock = open(self.path / "merge.lock", "w")
        try:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return None
            with self._txn():
                st = self._state()
                upto = int(self.db.execute("SELECT COALESCE(MAX(id), 0) FROM items").fetchone()[0])
                n_live = int(self.db.execute("SELECT COUNT(*) FROM items WHERE removed IS NULL").fetchone()[0])
                n_tomb_base = int(self.db.execute("SELECT COUNT(*) FROM items INDEXED BY items_removed "
                                                  "WHERE removed IS NOT NULL AND purged = 0 AND id <= ?",
                                                  (st["base_upto"],)).fetchone()[0])
                n_delta = int(self.db.execute("SELECT COUNT(*) FROM items WHERE id > ? AND removed IS NULL",
                                              (st["base_upto"],)).fetchone()[0])
            target = resolve_kind(kind, max(n_live, 1))
            old = None
            if st["base_file"]:
                old = faiss.read_index(str(self.path / st["base_file"]))
            base_n = 0 if old is None else int(old.ntotal)
            if rebuild is None:
                rebuild = old is None or st["base_kind"] != target or n_tomb_base > REBUILD_SHARE * max(base_n, 1)
            if not rebuild and n_delta == 0:
                return None
            if rebuild:
                inner = (faiss.IndexFlatIP(self.dim) if target == "flat" else
                         faiss.IndexHNSWFlat(self.dim, int(hnsw_m), faiss.METRIC_INNER_PRODUCT))
                if target == "hnsw":
                    inner.hnsw.efConstruction = int(ef_construction)
                    inner.hnsw.efSearch = int(ef_search)
                index = faiss.IndexIDMap2(inner)
                lo, kind_now = 0, target
            else:
                index, lo, kind_now = old, st["base_upto"], st["base_kind"]
            del old
            # one read transaction: the vectors as of this moment (writers go on meanwhile: WAL)
            added = 0
            bar = None
            if progress:
                from tqdm.auto import tqdm
                bar = tqdm(total=n_live if rebuild else n_delta, desc=f"merge ({kind_now})", unit="vec",
                           unit_scale=True)
            with self._txn():
                seq = self._state()["removals"]
                cur = self.db.execute("SELECT id, vector FROM items WHERE id > ? AND id <= ? AND removed IS NULL "
                                      "ORDER BY id", (lo, upto))
                while True:
                    rows = cur.fetchmany(_CHUNK)
                    if not rows:
                        break
                    index.add_with_ids(_vectors([r[1] for r in rows], self.dim),
                                       np.array([r[0] for r in rows], np.int64))
                    added += len(rows)
                    if bar is not None:
                        bar.update(len(rows))
            if bar is not None:
                bar.close()
            gen = st["generation"] + 1
            name = f"base-{gen:06d}.faiss"
            tmp = self.path / (name + ".tmp")
            faiss.write_index(index, str(tmp))
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, self.path / name)
            _fsync_dir(self.path)
            with self._txn(write=True):
                self._set_state(base_file=name, base_upto=upto, generation=gen, base_kind=kind_now,
                                base_n=int(index.ntotal))
                # rows no index holds any more: removed before the vectors were read, and left out of this base
                cur = self.db.execute("UPDATE items SET purged = 1, vector = NULL WHERE removed IS NOT NULL "
                                      "AND purged = 0 AND removed_seq <= ? AND id <= ? AND id > ?",
                                      (seq, upto, -1 if rebuild else st["base_upto"]))
                purged = cur.rowcount
            keep = {name, st["base_file"]}
            for f in self.path.glob("base-*.faiss*"):
                if f.name not in keep:
                    f.unlink(missing_ok=True)
            return dict(kind=kind_now, rebuilt=bool(rebuild), base=int(index.ntotal), added=added, purged=int(purged),
                        seconds=round(time.perf_counter() - t0, 3), file=name)
        finally:
            lock.close()

    # ------------------------------------------------------------------ reading
    def _ids_of_digests(self, digests: list[str]) -> dict[str, int]:
        out = {}
        for s in range(0, len(digests), 500):
            part = digests[s:s + 500]
            q = f"SELECT digest, id FROM items WHERE removed IS NULL AND digest IN ({','.join('?' * len(part))})"
            out.update(dict(self.db.execute(q, part).fetchall()))
        return out

    def items(self, ids: Sequence[int] | None = None) -> pd.DataFrame:
        """The live items (or the given ids): ``id``, ``digest``, ``path``, ``bytes``, ``added`` (Unix time).

        Parameters
        ----------
        ids : sequence of int, optional

        Returns
        -------
        DataFrame
            Indexed by nothing, sorted by id.
        """
        cols = "id, digest, path, bytes, added"
        if ids is None:
            rows = self.db.execute(f"SELECT {cols} FROM items WHERE removed IS NULL ORDER BY id").fetchall()
        else:
            ids = sorted({int(i) for i in ids})
            rows = []
            for s in range(0, len(ids), 500):
                part = ids[s:s + 500]
                rows += self.db.execute(f"SELECT {cols} FROM items WHERE id IN ({','.join('?' * len(part))})",
                                        part).fetchall()
        return pd.DataFrame(rows, columns=["id", "digest", "path", "bytes", "added"])

    def vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """All live vectors.

        Returns
        -------
        ids : ndarray of int64, shape (N,)
        vectors : ndarray of float32, shape (N, D)
        """
        rows = self.db.execute("SELECT id, vector FROM items WHERE removed IS NULL ORDER BY id").fetchall()
        return np.array([r[0] for r in rows], np.int64), _vectors([r[1] for r in rows], self.dim).copy()

    def size(self) -> int:
        """Live items."""
        return int(self.db.execute("SELECT COUNT(*) FROM items WHERE removed IS NULL").fetchone()[0])

    __len__ = size

    def delta_rows(self) -> int:
        """Live items not yet in the base index (searched exactly)."""
        upto = self._state()["base_upto"]
        return int(self.db.execute("SELECT COUNT(*) FROM items WHERE id > ? AND removed IS NULL",
                                   (upto,)).fetchone()[0])

    def stats(self) -> dict:
        """Counts and sizes.

        Returns
        -------
        dict
            ``items`` (live), ``removed`` (tombstones still in an index), ``purged``, ``paths``
            (files seen), ``marks``, ``unreadable``, ``delta`` (rows searched exactly),
            ``base`` (vectors in the base file, tombstones included), ``base_kind``, ``base_file``, ``generation``,
            ``dim``, ``model``, ``disk_bytes`` (the folder's files).
        """
        st = self._state()
        one = lambda q, *a: int(self.db.execute(q, a).fetchone()[0])
        return dict(items=self.size(),
                    removed=one("SELECT COUNT(*) FROM items INDEXED BY items_removed "
                                "WHERE removed IS NOT NULL AND purged = 0"),
                    purged=one("SELECT COUNT(*) FROM items INDEXED BY items_removed "
                               "WHERE removed IS NOT NULL AND purged = 1"),
                    paths=one("SELECT COUNT(*) FROM paths"), marks=one("SELECT COUNT(*) FROM marks"),
                    unreadable=one("SELECT COUNT(*) FROM unreadable"), delta=self.delta_rows(),
                    base=st["base_n"],
                    base_kind=st["base_kind"], base_file=st["base_file"], generation=st["generation"],
                    dim=self.dim, model=self.settings["model_name"],
                    disk_bytes=int(sum(f.stat().st_size for f in self.path.iterdir() if f.is_file())))

    def unreadable(self) -> pd.DataFrame:
        """Files that could not be added: ``path``, ``reason``."""
        return pd.DataFrame(self.db.execute("SELECT path, reason FROM unreadable ORDER BY path").fetchall(),
                            columns=["path", "reason"])

    def embed(self, images, batch_size: int = 32) -> tuple[list[str], np.ndarray, np.ndarray]:
        """Embed images with the collection's model.

        Parameters
        ----------
        images : str or Path or sequence of str
            As for :meth:`add`.
        batch_size : int, default 32

        Returns
        -------
        paths : list of str, length Q
        emb : ndarray of float32, shape (Q, D)
            NaN rows where unreadable.
        ok : ndarray of bool, shape (Q,)
        """
        paths = _resolve_images(images)
        emb, ok = self.embedder.embed_paths(paths, batch_size=batch_size)
        return paths, emb, ok

    def query(self, images, *, k: int = 10, verify: bool = True, min_score: float | None = None,
              ef_search: int | None = None, batch_size: int = 32, progress: bool = False) -> QueryResult:
        """The existing copies of new photos: embed, search the snapshot, apply the run's decision.

        Parameters
        ----------
        images : str or Path or sequence of str
            Query images (a folder, a CSV, a file or a list).
        k : int, default 10
            Candidates per query.
        verify : bool, default True
            Apply the decision's verification to the candidates in its verify range (when it
            verifies); False: the global threshold only.
        min_score : float, optional
            Candidates below this cosine are not returned; default the lower end of the
            verify range when verifying, else the decision's threshold.
        ef_search : int, optional
            HNSW beam width for the base.
        batch_size : int, default 32
            Images per inference batch.
        progress : bool, default False
            Progress bars while verifying.

        Returns
        -------
        QueryResult
        """
        t0 = time.perf_counter()
        paths, emb, ok = self.embed(images, batch_size=batch_size)
        t1 = time.perf_counter()
        snap = self.snapshot()
        good = np.flatnonzero(ok)
        sims, ids = snap.search(emb[good], k, ef_search=ef_search) if len(good) else \
            (np.zeros((0, k), np.float32), np.zeros((0, k), np.int64))
        t2 = time.perf_counter()
        decision = self.decision if verify else self.decision.without_verification()
        floor = decision.threshold if min_score is None else float(min_score)
        if min_score is None and decision.verifies:
            floor = min(floor, decision.verify_range[0])
        qi, rank = np.nonzero((ids >= 0) & (sims >= floor))
        cand = ids[qi, rank]
        info = self.items(cand.tolist()).set_index("id") if len(cand) else None
        q_paths = [paths[good[a]] for a in qi]
        m_paths = [info.path.at[int(c)] for c in cand] if len(cand) else []
        scores = sims[qi, rank].astype(np.float64)
        q_digest = {}
        for p in set(q_paths):
            try:
                q_digest[p] = file_digest(p)
            except UnreadableImageError:
                q_digest[p] = None
        m_digest = [info.digest.at[int(c)] for c in cand] if len(cand) else []
        same = np.array([q_digest[a] == b for a, b in zip(q_paths, m_digest)], bool)
        marked = self._marked(list(zip([q_digest[p] for p in q_paths], m_digest)))
        glob = decision.global_decisions(scores)
        t3 = time.perf_counter()
        # the verify range and the fusion read the scores of the model they were fitted on (int8: rescored here)
        vscores = decision.fusion_scores(scores, q_paths, m_paths, cache_dir=self.cache_dir) \
            if decision.verifies and len(cand) else scores
        verified = decision.to_verify(vscores)
        dec, vrep = decision.decide(vscores, q_paths, m_paths, progress=progress) if len(cand) else \
            (np.zeros(0, int), {})
        dec = np.where(marked, 0, dec).astype(int)
        t4 = time.perf_counter()
        matches = pd.DataFrame({"query": q_paths, "rank": rank + 1, "id": cand.astype(np.int64), "match": m_paths,
                                "score": scores, "same_bytes": same, "global_decision": glob.astype(int),
                                "verified": verified.astype(bool), "marked": marked, "decision": dec})
        bad = [(paths[i], inspect_image(paths[i]).reason or "unreadable") for i in np.flatnonzero(~ok)]
        n_q = max(len(paths), 1)
        report = dict(queries=len(paths), candidates=len(matches), copies=int(dec.sum()), unreadable=len(bad),
                      items=snap.size, embed_s=round(t1 - t0, 4), search_s=round(t2 - t1, 4),
                      decide_s=round(t4 - t3, 4),
                      ms_per_query_embed_search=round(1000 * (t2 - t0) / n_q, 3), **vrep)
        return QueryResult(matches, pd.DataFrame(bad, columns=["path", "reason"]), report)

    # ------------------------------------------------------------------ marks
    def _digest_of(self, item) -> tuple[str, str]:
        if isinstance(item, (int, np.integer)):
            row = self.db.execute("SELECT digest, path FROM items WHERE id = ?", (int(item),)).fetchone()
            if row is None:
                raise KeyError(f"no item {item}")
            return row[0], row[1]
        p = str(Path(item).resolve())
        row = self.db.execute("SELECT digest FROM paths WHERE path = ?", (p,)).fetchone()
        if row is not None:
            return row[0], p
        if Path(p).is_file():
            return file_digest(p), p
        raise KeyError(f"{item}: not in the collection and not a readable file")

    def mark_different(self, a, b) -> bool:
        """Remember that ``a`` and ``b`` are not the same photo (a false match).

        Parameters
        ----------
        a, b : str or int
            Paths (added, or any file: it is marked by its content digest) or item ids.

        Returns
        -------
        bool
            Whether the mark is new.

        Raises
        ------
        KeyError
            When an item is unknown and not a readable file.
        ValueError
            When ``a`` and ``b`` have the same content.
        """
        (da, pa), (db, pb) = self._digest_of(a), self._digest_of(b)
        if da == db:
            raise ValueError(f"{pa} and {pb} have the same content: they cannot be marked different")
        if db < da:
            (da, pa), (db, pb) = (db, pb), (da, pa)
        with self._txn(write=True):
            cur = self.db.execute("INSERT OR IGNORE INTO marks(digest1, digest2, path1, path2, created) "
                                  "VALUES (?, ?, ?, ?, ?)", (da, db, pa, pb, time.time()))
        return cur.rowcount == 1

    def marks(self) -> pd.DataFrame:
        """The "not the same" marks: ``digest1``, ``digest2``, ``path1``, ``path2``, ``created``."""
        return pd.DataFrame(self.db.execute("SELECT digest1, digest2, path1, path2, created FROM marks "
                                            "ORDER BY created").fetchall(),
                            columns=["digest1", "digest2", "path1", "path2", "created"])

    def _marked(self, pairs: list[tuple]) -> np.ndarray:
        if not pairs:
            return np.zeros(0, bool)
        m = self.marks()
        known = set(zip(m.digest1, m.digest2))
        return np.array([a is not None and b is not None and ((a, b) in known or (b, a) in known)
                         for a, b in pairs], bool)

    def export_marks(self, csv_path) -> Path:
        """Write the marks as labelled pairs, the LUN labels format ``image_url1,image_url2,is_same`` (all 0).

        The paths are the items' current paths when they are in the collection, else the
        paths they were marked with.

        Parameters
        ----------
        csv_path : str or Path

        Returns
        -------
        Path
        """
        m = self.marks()
        cur = dict(self.db.execute("SELECT digest, path FROM items WHERE removed IS NULL").fetchall()) if len(m) else {}
        out = pd.DataFrame({"image_url1": [cur.get(d, p) for d, p in zip(m.digest1, m.path1)],
                            "image_url2": [cur.get(d, p) for d, p in zip(m.digest2, m.path2)],
                            "is_same": np.zeros(len(m), int)})
        csv_path = Path(csv_path)
        csv_path.parent.mkdir(parents=True, exist_ok=True)
        out.to_csv(csv_path, index=False)
        return csv_path

    # ------------------------------------------------------------------ groups
    def groups(self, *, threshold: float | None = None, k: int | None = None, min2: bool | None = None,
               mutual: bool | None = None, star: bool | None = None, min2_margin: float | None = None,
               keep: str = "largest") -> pd.DataFrame:
        """The groups of duplicates in the collection; a marked pair is never in one group.

        A self-kNN of the live vectors, links at or above the threshold, then
        :func:`~nnutils.scale.grouping.group_edges` with the marks as cannot-link pairs.
        Settings left as None come from the run's ``grouping.json`` when the collection was
        opened from a run folder, else the decision's threshold, ``k=10``, no min2/mutual/star.

        Parameters
        ----------
        threshold : float, optional
            Cosine at or above which neighbours are linked.
        k : int, optional
            Neighbours per item.
        min2, mutual, star : bool, optional
            Grouping variant (:data:`~nnutils.scale.grouping.VARIANTS`).
        min2_margin : float, optional
            ``min2`` keeps the nearest neighbour down to ``threshold - min2_margin``.
        keep : str, default "largest"
            Each group's representative (:func:`~nnutils.scale.dedup.group_table`).

        Returns
        -------
        DataFrame
            :func:`~nnutils.scale.dedup.group_table`'s columns (``group``, ``size``, ``path``,
            ``representative``, ``similarity``, ``min_similarity``) plus ``id``.
        """
        g = self.grouping
        threshold = g.get("threshold", self.decision.threshold) if threshold is None else threshold
        k = g.get("k", 10) if k is None else k
        min2 = g.get("min2", False) if min2 is None else min2
        mutual = g.get("mutual", False) if mutual is None else mutual
        star = g.get("star", False) if star is None else star
        margin = g.get("min2_margin", 0.05) if min2_margin is None else min2_margin
        ids, x = self.vectors()
        cols = ["group", "size", "path", "representative", "similarity", "min_similarity", "id"]
        if len(ids) < 2:
            return pd.DataFrame(columns=cols)
        s, i = knn(x, min(int(k), len(ids)))
        e = neighbour_edges(s, i, threshold, min2=min2, min2_threshold=threshold - margin, mutual=mutual)
        info = self.items(ids.tolist())
        row_of = {d: r for r, d in enumerate(info.digest)}
        m = self.marks()
        cl = [(row_of[a], row_of[b]) for a, b in zip(m.digest1, m.digest2) if a in row_of and b in row_of]
        lab = group_edges(len(ids), e, star=star, cannot_link=cl)
        paths = info.path.tolist()
        out = group_table(paths, lab, x, keep=keep)
        return out.assign(id=out.path.map(dict(zip(paths, info.id))).astype(np.int64))[cols]
