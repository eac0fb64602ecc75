"""The collection dedup of :mod:`nnutils.scale.dedup` as Apache Beam pipelines (issue 13, section 1).

    python -m nnutils.dedup --images photos/ --model runs/cpu --out dedup/ --runner DirectRunner --workers 2

The work that grows with the collection runs on a Beam runner (the embedded default is the
``DirectRunner`` in multi-process mode on this machine; ``FlinkRunner``, ``SparkRunner`` or
``DataflowRunner`` take the same pipeline and their own options); the launcher only does what
needs the whole collection at once, on O(N·k) data:

1. **embed** (pipeline 1): list the images (a folder, a glob, or a CSV of paths/URLs; folders and
   globs through Beam's ``fileio.MatchFiles``, so any filesystem Beam reads) → read the bytes
   (content digest, size) and decode them with the suite's reader
   (:func:`nnutils.data.decode.decode_square`; unreadable files go to their own output with
   :func:`nnutils.data.images.inspect_image`'s reason, never dropped) → ``RunInference`` with
   :func:`make_model_handler`, a ``ModelHandler`` around the suite's own TFLite embedder
   (:func:`nnutils.models.embedders.load_embedder`, one per worker), so the vectors equal
   ``nnutils.dedup``'s → Parquet embedding shards ``embeddings/part-*.parquet`` (``path``,
   ``digest``, ``size``, ``vector``) and ``unreadable/part-*.parquet`` (``path``, ``reason``).
2. **index** (launcher): a faiss index (:func:`nnutils.scale.index.build_index`'s kinds) trained
   on a random sample of the shards, then the shards added one at a time (the vectors are never
   all in memory at once); written to ``index.faiss``.
3. **search** (pipeline 2): the shards cut into query chunks of ``query_rows`` rows, each chunk
   searched in parallel against the index (loaded once per worker); each row keeps only the
   neighbours at or above the lowest threshold in play (which changes no edge) → ``knn/*.parquet``.
4. **group** (launcher): :func:`~nnutils.scale.grouping.neighbour_edges` (threshold, min2,
   mutual) → :func:`~nnutils.scale.grouping.connected_groups` →
   :func:`~nnutils.scale.dedup.group_table` (vectors read back for group members only) →
   :func:`~nnutils.scale.dedup.files_to_remove`; ``groups.csv`` / ``to_remove.csv`` /
   ``unreadable.csv`` / ``report.json`` in the format of :mod:`nnutils.scale.dedup`.

Runners
-------
``runner="DirectRunner"`` is pinned to Beam's ``FnApiRunner`` with
``direct_running_mode=multi_processing`` and ``direct_num_workers=workers``: Beam's own
``DirectRunner`` name first tries the Prism runner, which downloads a binary at first use
(it fails offline and ignores ``direct_num_workers``). Any other runner name and the extra
``pipeline_args`` (``--flink_master=…``, ``--project=… --region=… --temp_location=gs://…``) go
to Beam unchanged. On a cluster the model file, the images and ``out`` must be on storage
every worker reads (``gs://``, ``s3://``, HDFS or a shared mount); ``keep="largest"`` reads the
pixel size of group members from local files only (remote members fall back to path order).

Importing this module does not import Beam, faiss or TensorFlow.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from nnutils.data.decode import decode_square
from nnutils.data.images import inspect_image
from nnutils.data.download import is_url
from nnutils.data.pairs import resolve_images
from nnutils.scale.dedup import (IMAGE_EXTENSIONS, DuplicateGroups, dedup_settings, files_to_remove, group_table,
                                 read_image_list)
from nnutils.scale.grouping import group_edges, neighbour_edges
from nnutils.scale.index import _default_nlist, build_index, resolve_kind, search

DIRECT_RUNNERS = ("DirectRunner", "direct")
GLOB_CHARS = "*?["


# ----------------------------------------------------------------------------- runner and options
def pipeline_options(runner: str = "DirectRunner", workers: int = 2, pipeline_args: Sequence[str] = ()):
    """Beam runner and options: the DirectRunner pinned to multi-process FnApi, others passed through.

    Parameters
    ----------
    runner : str, default "DirectRunner"
        ``"DirectRunner"`` (this machine, ``workers`` processes) or any Beam runner name
        (``FlinkRunner``, ``SparkRunner``, ``DataflowRunner``, …).
    workers : int, default 2
        Worker processes of the DirectRunner (``direct_num_workers``); ignored by other runners
        (give their own options in ``pipeline_args``).
    pipeline_args : sequence of str
        Extra Beam command-line options, unchanged.

    Returns
    -------
    runner : str or apache_beam.runners.PipelineRunner
        What ``beam.Pipeline(runner=...)`` gets: an ``FnApiRunner`` instance for the DirectRunner
        (so Beam never tries Prism), else the name.
    options : apache_beam.options.pipeline_options.PipelineOptions

    Raises
    ------
    ValueError
        When ``workers < 1``.
    """
    from apache_beam.options.pipeline_options import PipelineOptions
    if int(workers) < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    args = list(pipeline_args)
    if runner in DIRECT_RUNNERS:
        from apache_beam.runners.portability.fn_api_runner import FnApiRunner
        mode = "multi_processing" if int(workers) > 1 else "in_memory"
        opts = PipelineOptions(args, direct_num_workers=int(workers), direct_running_mode=mode,
                               save_main_session=False)
        return FnApiRunner(), opts
    return runner, PipelineOptions(args, runner=runner, save_main_session=False)


# ----------------------------------------------------------------------------- inputs
def image_pattern(images) -> tuple[str, str]:
    """How ``images`` is listed: ``("csv", path)``, ``("glob", pattern)``.

    Parameters
    ----------
    images : str or Path
        A folder (local or a filesystem prefix such as ``gs://bucket/photos``: every file under
        it), a glob (``photos/**/*.jpg``) or a ``.csv`` of paths/URLs.

    Returns
    -------
    kind : {"csv", "glob"}
    value : str
        The CSV path or the glob (``<folder>/**`` for a folder).
    """
    s = str(images)
    if s.lower().endswith(".csv"):
        return "csv", s
    if any(c in s for c in GLOB_CHARS):
        return "glob", s
    return "glob", s.rstrip("/") + "/**"


def _has_image_extension(path: str, extensions=IMAGE_EXTENSIONS) -> bool:
    return os.path.splitext(path)[1].lower() in {e.lower() for e in extensions}


def _is_local(path: str) -> bool:
    return "://" not in path


def read_and_decode(path: str, size: int, download_dir: str | None = None) -> dict:
    """Read one image with the suite's reader: digest, byte size, and the decoded square or a reason.

    Parameters
    ----------
    path : str
        A local path, an ``http(s)`` URL (downloaded with :func:`nnutils.data.pairs.resolve_images`)
        or any path Beam's ``FileSystems`` opens (``gs://…``; copied to a temporary file).
    size : int
        The model's input side S in pixels.
    download_dir : str, optional
        Cache folder of URL downloads (default: a temporary folder).

    Returns
    -------
    dict
        ``path``, ``digest`` (SHA-1 hex of the bytes, "" when unreadable), ``size`` (bytes, -1
        when unreadable), ``image`` (float32 (S, S, 3) in [0, 255], or None) and ``reason``
        (None, or why the image is unreadable: :func:`nnutils.data.images.inspect_image`'s
        reason, ``"download failed"``, …).
    """
    local, tmp = path, None
    try:
        if is_url(path):
            got = resolve_images([path], None, cache_dir=download_dir or tempfile.gettempdir(), workers=1,
                                 progress=False)
            local = got[path]
            if local is None:
                return dict(path=path, digest="", size=-1, image=None, reason="download failed")
        elif not _is_local(path):
            from apache_beam.io.filesystems import FileSystems
            with FileSystems.open(path) as fh:
                data = fh.read()
            fd, tmp = tempfile.mkstemp(suffix=os.path.splitext(path)[1])
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            local = tmp
        try:
            with open(local, "rb") as fh:
                data = fh.read()
        except OSError:
            data = None
        img = decode_square(local, size)
        if img is None:
            reason = inspect_image(local).reason or "unreadable"
            return dict(path=path, digest="", size=-1, image=None, reason=reason)
        return dict(path=path, digest=hashlib.sha1(data).hexdigest() if data is not None else "",
                    size=len(data) if data is not None else -1, image=img, reason=None)
    finally:
        if tmp is not None:
            os.unlink(tmp)


# ----------------------------------------------------------------------------- RunInference
def make_model_handler(model_path, *, threads: int = 1, batch_size: int = 32):
    """A Beam ``ModelHandler`` around the suite's TFLite embedder (one per worker process).

    ``load_model`` is :func:`nnutils.models.embedders.load_embedder` ``(model_path,
    runtime="tflite", threads=threads)``; ``run_inference`` embeds a batch of decoded squares
    with :meth:`~nnutils.models.embedders.TFLiteEmbedder.embed_arrays`, so the vectors are
    the ones ``nnutils.dedup`` computes.

    Parameters
    ----------
    model_path : str or Path
        A ``.tflite`` embedder (a ``.keras`` file is converted once per worker; convert it on
        the launcher instead, as :func:`beam_find_duplicates` does).
    threads : int, default 1
        Interpreter threads per worker (one worker process per core is the usual layout).
    batch_size : int, default 32
        Largest batch ``RunInference`` forms.

    Returns
    -------
    apache_beam.ml.inference.base.ModelHandler
        Takes float32 (S, S, 3) arrays in [0, 255]; gives ``PredictionResult`` with
        ``example=None`` (the pixels are not carried on) and ``inference`` a float32 (D,) vector.
    """
    from apache_beam.ml.inference.base import ModelHandler, PredictionResult

    class _TFLiteEmbedderHandler(ModelHandler):
        def __init__(self, path, threads, batch_size):
            self._path = str(path)
            self._threads = int(threads)
            self._batch_size = int(batch_size)

        def load_model(self):
            from nnutils.models.embedders import load_embedder
            return load_embedder(self._path, runtime="tflite", threads=self._threads)

        def run_inference(self, batch, model, inference_args=None):
            emb = model.embed_arrays(np.stack(batch), batch_size=max(1, len(batch)))
            return [PredictionResult(None, e) for e in emb]

        def batch_elements_kwargs(self):
            return {"min_batch_size": 1, "max_batch_size": self._batch_size}

        def get_num_bytes(self, batch):
            return int(sum(np.asarray(b).nbytes for b in batch))

        def get_metrics_namespace(self):
            return "nnutils_tflite_embedder"

    return _TFLiteEmbedderHandler(model_path, threads, batch_size)



# ----------------------------------------------------------------------------- shard I/O
def _match(pattern: str) -> list[str]:
    from apache_beam.io.filesystems import FileSystems
    try:
        res = FileSystems.match([pattern])[0].metadata_list
    except Exception:  # noqa: BLE001 - nothing matched (Beam raises for an empty match on some filesystems)
        return []
    return sorted(m.path for m in res)


def _read_table(path: str, columns=None):
    import pyarrow.parquet as pq
    from apache_beam.io.filesystems import FileSystems
    with FileSystems.open(path) as fh:
        return pq.read_table(fh, columns=columns)


def _vectors(table) -> np.ndarray:
    import pyarrow as pa
    col = table.column("vector").combine_chunks()
    if len(col) == 0:
        return np.zeros((0, 0), np.float32)
    if isinstance(col.type, pa.FixedSizeListType):
        d = col.type.list_size
    else:
        d = len(col[0].as_py())
    return np.asarray(col.flatten().to_numpy(zero_copy_only=False), np.float32).reshape(len(col), d)


def _join(*parts: str) -> str:
    from apache_beam.io.filesystems import FileSystems
    return FileSystems.join(*parts)


def _write_bytes(path: str, data: bytes) -> None:
    from apache_beam.io.filesystems import FileSystems
    if _is_local(path):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    with FileSystems.create(path) as fh:
        fh.write(data)


def _read_bytes(path: str) -> bytes:
    from apache_beam.io.filesystems import FileSystems
    with FileSystems.open(path) as fh:
        return fh.read()


def _clear(prefix: str) -> None:
    from apache_beam.io.filesystems import FileSystems
    old = _match(prefix + "*")
    if old:
        FileSystems.delete(old)


# ----------------------------------------------------------------------------- pipeline 1: embed
def run_embed_pipeline(images, out: str, tflite_path, size: int, dim: int, *, runner="DirectRunner",
                       workers: int = 2, pipeline_args: Sequence[str] = (), batch_size: int = 32,
                       threads: int = 1, extensions=IMAGE_EXTENSIONS, download_dir: str | None = None) -> float:
    """Pipeline 1: list → read and decode → ``RunInference`` → Parquet embedding and unreadable shards.

    Parameters
    ----------
    images : str or Path or sequence of str
        A folder, a glob, a CSV of paths/URLs (:func:`image_pattern`) or a list of paths.
    out : str
        Output folder (any Beam filesystem); shards go to ``out/embeddings/part-*.parquet``
        and ``out/unreadable/part-*.parquet`` (earlier shards there are deleted first).
    tflite_path : str or Path
        The ``.tflite`` embedder every worker loads.
    size, dim : int
        Its input side S (pixels) and embedding dimension D.
    runner, workers, pipeline_args
        See :func:`pipeline_options`.
    batch_size : int, default 32
        Largest inference batch.
    threads : int, default 1
        Interpreter threads per worker.
    extensions : sequence of str
        Image suffixes kept from a folder or glob listing (a CSV is taken as it is).
    download_dir : str, optional
        Where workers cache URL downloads.

    Returns
    -------
    float
        Seconds the pipeline ran (start-up included).
    """
    import apache_beam as beam
    import pyarrow as pa
    from apache_beam.io import fileio
    from apache_beam.ml.inference.base import KeyedModelHandler, RunInference

    emb_prefix, bad_prefix = _join(out, "embeddings", "part"), _join(out, "unreadable", "part")
    _clear(emb_prefix)
    _clear(bad_prefix)
    emb_schema = pa.schema([("path", pa.string()), ("digest", pa.string()), ("size", pa.int64()),
                            ("vector", pa.list_(pa.float32(), int(dim)))])
    bad_schema = pa.schema([("path", pa.string()), ("reason", pa.string())])
    exts = tuple(extensions)

    class Decode(beam.DoFn):
        def process(self, path):
            r = read_and_decode(path, size, download_dir)
            if r["image"] is None:
                yield beam.pvalue.TaggedOutput("unreadable", {"path": r["path"], "reason": r["reason"]})
            else:
                yield (r["path"], r["digest"], r["size"]), r["image"]

    runner_, options = pipeline_options(runner, workers, pipeline_args)
    t0 = time.perf_counter()
    with beam.Pipeline(runner=runner_, options=options) as p:
        if isinstance(images, (list, tuple)):
            paths = p | "paths" >> beam.Create([str(x) for x in images])
        else:
            kind, value = image_pattern(images)
            if kind == "csv":
                paths = p | "csv" >> beam.Create(read_image_list(value))
            else:
                paths = (p | "match" >> fileio.MatchFiles(value)
                         | "path" >> beam.Map(lambda m: m.path)
                         | "images only" >> beam.Filter(_has_image_extension, exts))
        decoded = (paths | "spread" >> beam.Reshuffle()
                   | "decode" >> beam.ParDo(Decode()).with_outputs("unreadable", main="ok"))
        handler = KeyedModelHandler(make_model_handler(tflite_path, threads=threads, batch_size=batch_size))
        (decoded.ok
         | "embed" >> RunInference(handler)
         | "row" >> beam.Map(lambda kv: {"path": kv[0][0], "digest": kv[0][1], "size": kv[0][2],
                                         "vector": np.asarray(kv[1].inference, np.float32).tolist()})
         | "embedding shards" >> beam.io.WriteToParquet(emb_prefix, emb_schema, file_name_suffix=".parquet"))
        (decoded.unreadable
         | "unreadable shards" >> beam.io.WriteToParquet(bad_prefix, bad_schema, file_name_suffix=".parquet"))
    return time.perf_counter() - t0


# ----------------------------------------------------------------------------- the index (launcher)
def build_sharded_index(shards: Sequence[str], kind: str = "auto", *, sample_size: int | None = None,
                        seed: int = 0):
    """A faiss index trained on a random sample of the shards' vectors, then every shard added in order.

    Parameters
    ----------
    shards : sequence of str
        Parquet embedding shards (``path``, ``vector``), in the order their rows get index ids.
    kind : str, default "auto"
        :func:`nnutils.scale.index.build_index`'s kinds, resolved for the total row count.
    sample_size : int, optional
        Training rows for IVF kinds (default ``min(N, max(64·nlist, 256·39))``); unused for
        ``flat`` and ``hnsw``.
    seed : int, default 0
        Seed of the sample and of k-means.

    Returns
    -------
    index : faiss.Index
        Index row r is row r of the shards read in order.
    paths : list of str
        The path of each index row.
    rows : list of int
        Rows per shard.

    Raises
    ------
    ValueError
        When the shards hold no vector.
    """
    counts, paths = [], []
    for s in shards:
        t = _read_table(s, ["path"])
        counts.append(t.num_rows)
        paths.extend(t.column("path").to_pylist())
    n = len(paths)
    if n == 0:
        raise ValueError("no embedded image: nothing to index")
    kind = resolve_kind(kind, n)
    nlist = None
    rng = np.random.default_rng(seed)
    if kind in ("ivf", "ivfpq"):
        nlist = _default_nlist(n)
        m = min(n, max(64 * nlist, 256 * 39)) if sample_size is None else min(n, int(sample_size))
        chosen = np.sort(rng.choice(n, m, replace=False))
    else:
        chosen = np.arange(min(n, 1))
    starts = np.r_[0, np.cumsum(counts)]
    parts = []
    for s, a, b in zip(shards, starts[:-1], starts[1:]):
        sel = chosen[(chosen >= a) & (chosen < b)] - a
        if len(sel):
            parts.append(_vectors(_read_table(s, ["vector"]))[sel])
    sample = np.vstack(parts)
    index = build_index(sample, kind=kind, nlist=nlist, train_size=len(sample), seed=seed)
    index.reset()                     # keep the training (IVF cells, PQ codebooks), drop the sample
    for s in shards:
        v = _vectors(_read_table(s, ["vector"]))
        if len(v):
            index.add(np.ascontiguousarray(v, np.float32))
    return index, paths, counts


# ----------------------------------------------------------------------------- pipeline 2: search
def run_search_pipeline(out: str, chunks: Sequence[tuple[str, int, int]], k: int, floor: float, *,
                        runner="DirectRunner", workers: int = 2, pipeline_args: Sequence[str] = (),
                        threads: int = 1) -> float:
    """Pipeline 2: every query chunk searched against ``out/index.faiss`` in parallel → ``out/knn`` shards.

    Parameters
    ----------
    out : str
        The output folder holding ``index.faiss``.
    chunks : sequence of (str, int, int)
        (embedding shard, first row, end row): the query chunks.
    k : int
        Neighbours per query, itself included.
    floor : float
        Neighbours below this cosine are dropped (the lowest threshold in play: no edge changes).
    runner, workers, pipeline_args
        See :func:`pipeline_options`.
    threads : int, default 1
        faiss threads per worker.

    Returns
    -------
    float
        Seconds the pipeline ran.
    """
    import apache_beam as beam
    import pyarrow as pa

    index_path = _join(out, "index.faiss")
    knn_prefix = _join(out, "knn", "part")
    _clear(knn_prefix)
    schema = pa.schema([("path", pa.string()), ("ids", pa.list_(pa.int64())), ("sims", pa.list_(pa.float32()))])

    class Search(beam.DoFn):
        def setup(self):
            import faiss
            self.index = faiss.deserialize_index(np.frombuffer(_read_bytes(index_path), np.uint8))

        def process(self, chunk):
            shard, a, b = chunk
            t = _read_table(shard, ["path", "vector"]).slice(a, b - a)
            q = _vectors(t)
            if not len(q):
                return
            sims, ids = search(self.index, q, k, threads=threads)
            for path, s, i in zip(t.column("path").to_pylist(), sims, ids):
                keep = (i >= 0) & (s >= floor)
                yield {"path": path, "ids": i[keep].tolist(), "sims": s[keep].tolist()}

    runner_, options = pipeline_options(runner, workers, pipeline_args)
    t0 = time.perf_counter()
    with beam.Pipeline(runner=runner_, options=options) as p:
        (p | "chunks" >> beam.Create(list(chunks))
         | "spread" >> beam.Reshuffle()
         | "search" >> beam.ParDo(Search())
         | "knn shards" >> beam.io.WriteToParquet(knn_prefix, schema, file_name_suffix=".parquet"))
    return time.perf_counter() - t0


# ----------------------------------------------------------------------------- the whole dedup
def beam_find_duplicates(images, model, out, *, runner: str = "DirectRunner", workers: int = 2,
                         pipeline_args: Sequence[str] = (), threshold: float | None = None, k: int | None = None,
                         index: str = "auto", min2: bool | None = None, min2_threshold: float | None = None,
                         mutual: bool | None = None, keep: str = "largest", cache_dir=None, batch_size: int = 32,
                         threads: int = 1, query_rows: int = 4096, sample_size: int | None = None,
                         seed: int = 0) -> DuplicateGroups:
    """:func:`nnutils.scale.dedup.find_duplicates` on Apache Beam (see the module docstring).

    Settings left as None come from the run folder exactly as in ``find_duplicates``.

    Parameters
    ----------
    images : str or Path or sequence of str
        A folder, a glob, a CSV of paths/URLs, or a list of paths.
    model : str or Path
        A run folder or a ``.keras`` / ``.tflite`` embedder (then ``threshold`` is required).
    out : str or Path
        Output folder: shards, ``index.faiss`` and the tables.
    runner : str, default "DirectRunner"
        Beam runner (:func:`pipeline_options`).
    workers : int, default 2
        DirectRunner worker processes.
    pipeline_args : sequence of str
        Extra Beam options, unchanged.
    threshold, k, index, min2, min2_threshold, mutual, keep
        As :func:`~nnutils.scale.dedup.find_duplicates` (``index`` also takes ``"ivfpq"``).
    cache_dir : str or Path, optional
        Where a ``.keras`` model is converted to ``.tflite`` (on the launcher) and URL
        downloads go (default ``<out>/cache``).
    batch_size : int, default 32
        Largest inference batch.
    threads : int, default 1
        TFLite and faiss threads per worker.
    query_rows : int, default 4096
        Rows per query chunk of the search pipeline.
    sample_size : int, optional
        IVF training rows (:func:`build_sharded_index`).
    seed : int, default 0
        Training sample seed.

    Returns
    -------
    DuplicateGroups
        As ``find_duplicates``; ``paths`` sorted, ``embeddings`` None (the vectors stay in the
        shards), ``report`` with ``runner``, ``workers``, ``embed_s`` (pipeline 1),
        ``index_s``, ``search_s`` (pipeline 2), ``group_s`` and ``seconds``. The tables are
        also written to ``out`` (``groups.csv``, ``to_remove.csv``, ``unreadable.csv``,
        ``report.json``).

    Raises
    ------
    ValueError
        No image found, ``model`` is ``"phash"``, a model file without a threshold, or
        ``workers < 1``.
    FileNotFoundError
        When ``model`` is neither a run folder nor an existing file.
    """
    import faiss
    t0 = time.perf_counter()
    out = str(out)
    decision, opts = dedup_settings(model, threshold=threshold, k=k, min2=min2, min2_threshold=min2_threshold,
                                    mutual=mutual)
    k, min2, min2_threshold, mutual, star = (opts[n] for n in ("k", "min2", "min2_threshold", "mutual", "star"))
    threshold = float(decision.threshold)
    cache_dir = cache_dir if cache_dir is not None else (_join(out, "cache") if _is_local(out) else None)
    embedder = decision.embedder(runtime="tflite", cache_dir=cache_dir)   # converts a .keras file once, here
    download_dir = str(Path(cache_dir) / "downloads") if cache_dir is not None else None
    embed_s = run_embed_pipeline(images, out, embedder.path, embedder.size, embedder.dim, runner=runner,
                                 workers=workers, pipeline_args=pipeline_args, batch_size=batch_size,
                                 threads=threads, download_dir=download_dir)
    shards = _match(_join(out, "embeddings", "part") + "*")
    bad_shards = _match(_join(out, "unreadable", "part") + "*")
    unreadable = (pd.concat([_read_table(s).to_pandas() for s in bad_shards], ignore_index=True)
                  if bad_shards else pd.DataFrame(columns=["path", "reason"]))
    unreadable = unreadable.reindex(columns=["path", "reason"]).sort_values("path").reset_index(drop=True)

    t1 = time.perf_counter()
    counts = [_read_table(s, ["path"]).num_rows for s in shards]
    if sum(counts) == 0 and not len(unreadable):
        raise ValueError(f"no images found in {images}")
    labels_good = np.zeros(0, np.int64)
    edges = pd.DataFrame({"i": np.zeros(0, np.int64), "j": np.zeros(0, np.int64),
                          "similarity": np.zeros(0, np.float32), "via_min2": np.zeros(0, bool)})
    index_kind_ = resolve_kind(index, max(1, sum(counts)))
    search_s = 0.0
    good_paths: list[str] = []
    if sum(counts):
        idx, index_paths, counts = build_sharded_index(shards, index, sample_size=sample_size, seed=seed)
        _write_bytes(_join(out, "index.faiss"), faiss.serialize_index(idx).tobytes())
        del idx
        t2 = time.perf_counter()
        chunks = [(s, a, min(a + query_rows, c)) for s, c in zip(shards, counts) for a in range(0, c, query_rows)]
        floor = min(threshold, (threshold - 0.05 if min2_threshold is None else float(min2_threshold))
                    if min2 else threshold)
        search_s = run_search_pipeline(out, chunks, int(min(k, len(index_paths))), floor, runner=runner,
                                       workers=workers, pipeline_args=pipeline_args, threads=threads)
        t3 = time.perf_counter()
        # the kNN table, rows in sorted path order (find_duplicates' order), index rows mapped to them
        good_paths = sorted(index_paths)
        row_of = {p: r for r, p in enumerate(good_paths)}
        to_row = np.array([row_of[p] for p in index_paths], np.int64)
        kk = int(min(k, len(index_paths)))
        sims = np.full((len(good_paths), kk), np.nan, np.float32)
        ids = np.full((len(good_paths), kk), -1, np.int64)
        for s in _match(_join(out, "knn", "part") + "*"):
            t = _read_table(s).to_pydict()
            for path, i, v in zip(t["path"], t["ids"], t["sims"]):
                r = row_of[path]
                ids[r, :len(i)] = to_row[np.asarray(i, np.int64)]
                sims[r, :len(v)] = v
        edges = neighbour_edges(sims, ids, threshold, min2=min2, min2_threshold=min2_threshold, mutual=mutual)
        labels_good = group_edges(len(good_paths), edges, star=star)
        index_s = round(t2 - t1, 3)
    else:
        t2 = t3 = time.perf_counter()
        index_s = 0.0
    # group members' vectors only, then the suite's tables
    sizes = np.bincount(labels_good) if len(labels_good) else np.zeros(0, np.int64)
    member = np.flatnonzero(sizes[labels_good] >= 2) if len(labels_good) else np.zeros(0, np.int64)
    member_paths = [good_paths[m] for m in member]
    want = set(member_paths)
    vec = {}
    for s in shards:
        t = _read_table(s, ["path", "vector"])
        ps = t.column("path").to_pylist()
        sel = [r for r, p in enumerate(ps) if p in want]
        if sel:
            v = _vectors(t.take(sel))
            vec.update({ps[r]: v[n] for n, r in enumerate(sel)})
    member_emb = np.stack([vec[p] for p in member_paths]) if member_paths else np.zeros((0, 1), np.float32)
    groups = group_table(member_paths, labels_good[member], member_emb, keep=keep)
    to_remove = files_to_remove(groups)
    group_s = time.perf_counter() - t3

    all_paths = sorted(good_paths + unreadable.path.tolist())
    pos = {p: r for r, p in enumerate(all_paths)}
    good_pos = np.array([pos[p] for p in good_paths], np.int64)
    labels = np.full(len(all_paths), -1, np.int64)
    labels[good_pos] = labels_good
    if len(edges):
        edges = edges.assign(i=good_pos[edges.i.to_numpy()], j=good_pos[edges.j.to_numpy()])
    ok = labels >= 0
    report = dict(images=len(all_paths), embedded_now=len(good_paths), unreadable=len(unreadable),
                  groups=int(groups.group.nunique()) if len(groups) else 0, images_in_groups=len(groups),
                  files_to_remove=len(to_remove), model=decision.model, threshold=threshold, k=k, min2=min2,
                  mutual=mutual, keep=keep, runner=str(runner), workers=int(workers), index=index_kind_,
                  shards=len(shards), query_chunks=len(chunks) if sum(counts) else 0,
                  embed_s=round(embed_s, 2), index_s=index_s, search_s=round(search_s, 3),
                  group_s=round(group_s, 3), seconds=round(time.perf_counter() - t0, 2))
    res = DuplicateGroups(groups, to_remove, edges, labels, all_paths, unreadable, report, None, ok)
    if _is_local(out):
        res.save(out)
    else:
        for name, df in (("groups", groups), ("to_remove", to_remove), ("unreadable", unreadable)):
            _write_bytes(_join(out, f"{name}.csv"), df.to_csv(index=False).encode())
        _write_bytes(_join(out, "report.json"), json.dumps(report, indent=2).encode())
    return res
