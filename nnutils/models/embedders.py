"""Image files → unit embeddings, with the TFLite or the Keras runtime, and pair scores.

The project's prediction budget is ≤ 10 ms per pair on 2 CPU cores, each image decoded and
embedded once. :class:`TFLiteEmbedder` runs a ``.tflite`` model (from
:func:`nnutils.models.runtime.convert_to_tflite`) with the LiteRT interpreter and XNNPACK;
:class:`KerasEmbedder` is the same API around the Keras model. :meth:`~TFLiteEmbedder.embed_paths`
decodes each distinct path once (:func:`nnutils.data.decode.decode_square`), in a thread pool
that works on the next batch while the interpreter runs the current one, and reports
unreadable images as NaN rows with ``ok = False``. :func:`embed_cached` adds the on-disk
cache by file content; :func:`score_pairs` turns embeddings into pair scores (cosine = dot
product of the unit vectors; NaN where an image is unreadable). :meth:`~TFLiteEmbedder.embed_prepared`
is the same engine with a decoder that also returns something else of the same decode (the
one pass of :mod:`nnutils.decide.onepass`: embedding and local features from one decode);
:func:`square_from_rgb` squashes such a decode to the model's input.

Batch dimension
---------------
The ``.tflite`` file keeps a dynamic batch dimension (input ``(-1, S, S, 3)``, output
``(-1, D)``). :class:`TFLiteEmbedder` runs it with :class:`nnutils.models.runtime.TFLiteRunner`,
which resizes the interpreter's input only when the batch size changes, and
``embed_paths`` feeds full batches, so only the last, smaller batch triggers a
re-allocation. A ``.tflite`` file with a fixed batch size also works: batches are
then zero-padded to that size.

Importing this module does not import TensorFlow (only :class:`KerasEmbedder` does).
"""
from __future__ import annotations

import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
from PIL import Image

from nnutils.data.cache import ContentCache, model_key
from nnutils.data.decode import decode_square
from nnutils.models.runtime import (
    TFLiteRunner,
    _load_keras,
    conversion_is_current,
    convert_to_tflite,
    tflite_path_for,
)


def square_from_rgb(rgb: np.ndarray, size: int) -> np.ndarray:
    """A decoded image squashed to the model's square input, as :func:`decode_square` squashes.

    Parameters
    ----------
    rgb : ndarray of uint8, shape (H, W, 3)
        Decoded pixels (e.g. the one decode of :mod:`nnutils.decide.onepass`).
    size : int
        The model's input side S in pixels.

    Returns
    -------
    ndarray of float32, shape (S, S, 3)
        Values in [0, 255]; PIL BILINEAR (antialiased when shrinking), not cropped.
    """
    return np.asarray(Image.fromarray(np.ascontiguousarray(rgb, np.uint8)).resize(
        (int(size), int(size)), Image.Resampling.BILINEAR), dtype=np.float32)


class _Embedder:
    """Shared :meth:`embed_paths` logic; subclasses set ``size``, ``dim`` and ``_embed_batch``."""

    size: int
    dim: int
    runtime: str

    def _embed_batch(self, x: np.ndarray) -> np.ndarray:  # (b, S, S, 3) float32 → (b, D) float32
        raise NotImplementedError

    def embed_arrays(self, x, batch_size: int = 32) -> np.ndarray:
        """Embed decoded images.

        Parameters
        ----------
        x : array-like, shape (N, S, S, 3) or (S, S, 3)
            Images, float32 RGB in [0, 255] at the model's input side S; one image gives (1, D).
        batch_size : int, default 32
            Images per inference batch.

        Returns
        -------
        ndarray of float32, shape (N, D)
            The embeddings (L2-normalised by the project's models).

        Raises
        ------
        ValueError
            When the images are not (N, S, S, 3).
        """
        x = np.asarray(x, dtype=np.float32)
        if x.ndim == 3:
            x = x[None]
        if x.ndim != 4 or x.shape[1:] != (self.size, self.size, 3):
            raise ValueError(f"expected images (N, {self.size}, {self.size}, 3), got {x.shape}")
        out = np.empty((len(x), self.dim), np.float32)
        for s in range(0, len(x), batch_size):
            out[s:s + batch_size] = self._embed_batch(np.ascontiguousarray(x[s:s + batch_size]))
        return out

    def embed_paths(self, paths: Iterable, batch_size: int = 32, decode_workers: int = 2,
                    progress: bool = False, decoder: Callable | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Decode and embed image files.

        Each distinct path is decoded and embedded once (duplicates reuse the row). Images
        are decoded by ``decoder(path, size)`` (default :func:`decode_square`) in
        ``decode_workers`` threads that run up to two batches ahead of the model, so
        decoding overlaps inference (``decode_workers=0`` decodes in the calling thread).
        Readable images are gathered into full batches of ``batch_size``.

        Parameters
        ----------
        paths : iterable of str or PathLike or None, length N
            Image files; unreadable or invalid entries (None, NaN, missing, corrupt, …) give a
            NaN row and ``ok = False``.
        batch_size : int, default 32
            Images per inference batch.
        decode_workers : int, default 2
            Decoding threads; 0 decodes in the calling thread.
        progress : bool, default False
            Show a progress bar.
        decoder : callable, optional
            ``decoder(path, size) -> (S, S, 3) float32 in [0, 255] or None``.

        Returns
        -------
        emb : ndarray of float32, shape (N, D)
            Embeddings in the order of ``paths``; NaN rows where unreadable.
        ok : ndarray of bool, shape (N,)
            Which rows are valid.
        """
        decoder = decoder or decode_square
        emb, ok, _ = self.embed_prepared(paths, lambda k, size: (decoder(k, size), None), batch_size=batch_size,
                                         decode_workers=decode_workers, progress=progress)
        return emb, ok

    def embed_prepared(self, paths: Iterable, prepare: Callable, batch_size: int = 32, decode_workers: int = 2,
                       progress: bool = False) -> tuple[np.ndarray, np.ndarray, list]:
        """Embed image files with a decoder that also returns something else of the same decode.

        The engine of :meth:`embed_paths`: each distinct path is prepared once, in
        ``decode_workers`` threads running up to two batches ahead of the model. The one pass
        of :mod:`nnutils.decide.onepass` uses it to get, from ONE decode of each file, the
        model's input and the file's local features and facts (``payload``).

        Parameters
        ----------
        paths : iterable of str or PathLike or None, length N
            Image files; None / NaN / invalid entries are never prepared (NaN row, payload None).
        prepare : callable
            ``prepare(path, size) -> (image, payload)``: ``image`` float32 (S, S, 3) in
            [0, 255] or None (unreadable), ``payload`` anything (returned as is). An
            exception counts as ``(None, None)``.
        batch_size : int, default 32
            Images per inference batch.
        decode_workers : int, default 2
            Preparing threads; 0 prepares in the calling thread.
        progress : bool, default False
            Show a progress bar.

        Returns
        -------
        emb : ndarray of float32, shape (N, D)
            Embeddings in the order of ``paths``; NaN rows where unreadable.
        ok : ndarray of bool, shape (N,)
            Which rows are valid.
        payloads : list, length N
            Each path's payload (the same object for repeated paths; None where not prepared).
        """
        paths = list(paths)
        keys: list[str | None] = []
        for p in paths:
            try:
                keys.append(os.fspath(p) if p is not None else None)
            except TypeError:
                keys.append(None)
        uniq = list(dict.fromkeys(k for k in keys if k is not None))
        row = {k: i for i, k in enumerate(uniq)}
        uemb = np.full((len(uniq), self.dim), np.nan, np.float32)
        uok = np.zeros(len(uniq), bool)

        bar = None
        if progress:
            from tqdm.auto import tqdm
            bar = tqdm(total=len(uniq), desc=f"embedding ({self.runtime})", unit="img")
        buf_idx: list[int] = []
        buf = np.empty((batch_size, self.size, self.size, 3), np.float32)

        def flush():
            if buf_idx:
                n = len(buf_idx)
                uemb[buf_idx] = self._embed_batch(buf[:n])
                uok[buf_idx] = True
                buf_idx.clear()

        upay: list = [None] * len(uniq)

        def consume(j, prepared):
            img, upay[j] = prepared
            if img is not None:
                buf[len(buf_idx)] = img
                buf_idx.append(j)
                if len(buf_idx) == batch_size:
                    flush()
            if bar is not None:
                bar.update(1)

        def safe_decode(k):
            try:
                return prepare(k, self.size)
            except Exception:  # a decoder must not crash the batch
                return None, None

        try:
            if decode_workers <= 0:
                for j, k in enumerate(uniq):
                    consume(j, safe_decode(k))
            else:
                ahead = 2 * batch_size
                with ThreadPoolExecutor(decode_workers, thread_name_prefix="decode") as pool:
                    pending: deque = deque()
                    it = iter(enumerate(uniq))
                    for j, k in it:
                        pending.append((j, pool.submit(safe_decode, k)))
                        if len(pending) >= ahead:
                            break
                    while pending:
                        j, fut = pending.popleft()
                        nxt = next(it, None)
                        if nxt is not None:
                            pending.append((nxt[0], pool.submit(safe_decode, nxt[1])))
                        consume(j, fut.result())
            flush()
        finally:
            if bar is not None:
                bar.close()

        emb = np.full((len(paths), self.dim), np.nan, np.float32)
        ok = np.zeros(len(paths), bool)
        sel = np.array([i for i, k in enumerate(keys) if k is not None], dtype=np.int64)
        payloads: list = [None] * len(paths)
        if len(sel):
            src = np.array([row[keys[i]] for i in sel], dtype=np.int64)
            emb[sel] = uemb[src]
            ok[sel] = uok[src]
            for i, j in zip(sel, src):
                payloads[i] = upay[j]
        return emb, ok, payloads


class TFLiteEmbedder(_Embedder):
    """A ``.tflite`` image → embedding model run by the LiteRT interpreter (XNNPACK, CPU).

    A thin layer over :class:`nnutils.models.runtime.TFLiteRunner`, which resizes the input
    only when the batch size changes, zero-pads batches for a fixed-batch file and
    serialises calls with a lock (one instance may be shared by threads; they do not run in
    parallel).

    Parameters
    ----------
    tflite_path : path
        From :func:`convert_to_tflite`: one input, float32 (B, S, S, 3) in [0, 255]; one
        output, float32 (B, D) embeddings.
    threads : int
        Interpreter threads (XNNPACK), default 2.

    Attributes
    ----------
    size : int
        Input side S in pixels.
    dim : int
        Embedding dimension D.
    dynamic_batch : bool
        Whether the file's batch dimension is dynamic (else batches are zero-padded).

    Raises
    ------
    ValueError
        Not a readable ``.tflite`` file (the interpreter's error), not one input and one
        output, or an input that is not (B, S, S, 3).
    """

    runtime = "tflite"

    def __init__(self, tflite_path: str | os.PathLike, threads: int = 2):
        self.path = Path(tflite_path)
        self.threads = int(threads)
        self._runner = TFLiteRunner(self.path, threads=self.threads)
        n_out = len(self._runner.output_names)
        if n_out != 1:
            raise ValueError(f"{self.path}: expected one input and one output, got 1 and {n_out}")
        sig = list(self._runner.input_signature)
        if len(sig) != 4 or sig[1] <= 0 or sig[1] != sig[2] or sig[3] != 3:
            raise ValueError(f"{self.path}: expected input (B, S, S, 3), got {sig}")
        self.size = sig[1]
        self._output = self._runner.output_names[0]
        self.dim = int(self._runner.output_signatures[self._output][-1])
        self.dynamic_batch = self._runner.fixed_batch is None

    def _embed_batch(self, x: np.ndarray) -> np.ndarray:
        e = self._runner.run(x)[self._output].astype(np.float32, copy=False)
        # unit rows again: an int8 file's L2 normalisation is quantised (norms off by up to a few %,
        # cosines above 1); a float file's rows are unit already (a change of ~1e-7)
        n = np.linalg.norm(e, axis=1, keepdims=True)
        return np.divide(e, n, out=np.zeros_like(e), where=n > 0)

    def __repr__(self):
        return f"TFLiteEmbedder({str(self.path)!r}, size={self.size}, dim={self.dim}, threads={self.threads})"


class KerasEmbedder(_Embedder):
    """The same API as :class:`TFLiteEmbedder` around a Keras model (a ``tf.function``, batch dynamic).

    Parameters
    ----------
    model_or_path : keras.Model or str or PathLike
        A model, or a ``.keras`` file (loaded with :func:`nnutils.models.saving.load_model`);
        input float32 (B, S, S, 3) in [0, 255], output (B, D) L2-normalised embeddings.

    Attributes
    ----------
    model : keras.Model
    size : int
        Input side S in pixels.
    dim : int
        Embedding dimension D.

    Raises
    ------
    ValueError
        When the model's input is not a square image batch (B, S, S, 3).
    """

    runtime = "keras"

    def __init__(self, model_or_path):
        import tensorflow as tf
        self.model = _load_keras(model_or_path)
        shape = tuple(self.model.input.shape)
        if len(shape) != 4 or shape[1] is None or shape[1] != shape[2]:
            raise ValueError(f"expected a square image model (B, S, S, 3), got input {shape}")
        self.size = int(shape[1])
        self.dim = int(self.model.output.shape[-1])
        model = self.model
        self._fn = tf.function(lambda x: model(x, training=False), reduce_retracing=True,
                               input_signature=[tf.TensorSpec((None, self.size, self.size, 3), tf.float32)])

    def _embed_batch(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self._fn(np.ascontiguousarray(x, dtype=np.float32)), dtype=np.float32)

    def __repr__(self):
        return f"KerasEmbedder({self.model.name!r}, size={self.size}, dim={self.dim})"


def load_embedder(path: str | os.PathLike, runtime: str = "tflite", cache_dir: str | os.PathLike | None = None,
                  *, quantize: str = "none", threads: int = 2):
    """An embedder for a saved model: :class:`TFLiteEmbedder` or :class:`KerasEmbedder`.

    With ``runtime="tflite"`` a ``.keras`` file is converted once (:func:`convert_to_tflite`)
    to :func:`tflite_path_for` ``(path, cache_dir, quantize)``; that file is reused as long
    as it is at least as new as the ``.keras`` file (a ``.keras`` file replaced by an
    *older* one, e.g. ``cp -p``, is not noticed: delete the ``.tflite``).

    Parameters
    ----------
    path : str or PathLike
        A ``.keras`` file, or a ``.tflite`` file (used as is).
    runtime : {"tflite", "keras"}, default "tflite"
        ``"keras"`` loads the Keras model instead of converting it.
    cache_dir : str or PathLike, optional
        Where the converted ``.tflite`` goes (:func:`tflite_path_for`).
    quantize : str, default "none"
        The conversion's quantisation (:func:`convert_to_tflite`).
    threads : int, default 2
        TFLite interpreter threads.

    Returns
    -------
    TFLiteEmbedder or KerasEmbedder

    Raises
    ------
    ValueError
        For an unknown ``runtime``, or a ``.tflite`` file with ``runtime="keras"``.
    FileNotFoundError
        When the ``.keras`` file does not exist.
    """
    path = Path(path)
    if runtime not in ("tflite", "keras"):
        raise ValueError(f"runtime must be 'tflite' or 'keras', got {runtime!r}")
    if path.suffix == ".tflite":
        if runtime != "tflite":
            raise ValueError(f"{path} is a .tflite file: runtime must be 'tflite'")
        return TFLiteEmbedder(path, threads=threads)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such model file")
    if runtime == "keras":
        return KerasEmbedder(path)
    target = tflite_path_for(path, cache_dir, quantize)
    if not conversion_is_current(path, target):
        convert_to_tflite(path, target, quantize=quantize)
    return TFLiteEmbedder(target, threads=threads)


def score_pairs(emb: np.ndarray, ok: np.ndarray, idx1: Sequence[int], idx2: Sequence[int],
                chunk: int = 65536) -> np.ndarray:
    """Cosine similarity of pairs of rows, NaN where either image is unreadable.

    The score is the dot product (the rows are unit vectors). Callers replace NaN by their
    score for unreadable images (usually 0).

    Parameters
    ----------
    emb : ndarray, shape (N, D)
        L2-normalised embeddings (cast to float32), e.g. from ``embed_paths``.
    ok : ndarray of bool, shape (N,)
        Which rows are valid.
    idx1, idx2 : sequence of int, shape (P,)
        Row indices of each pair's two images.
    chunk : int, default 65536
        Pairs scored per step (bounds the temporary memory to ``2 * chunk * D`` floats).

    Returns
    -------
    ndarray of float32, shape (P,)
        Cosine in [-1, 1]; NaN where ``ok`` is False for either row.

    Raises
    ------
    ValueError
        When ``idx1`` and ``idx2`` are not 1-d of one length.
    """
    emb = np.asarray(emb, dtype=np.float32)
    ok = np.asarray(ok, dtype=bool)
    i1 = np.asarray(idx1, dtype=np.int64)
    i2 = np.asarray(idx2, dtype=np.int64)
    if i1.shape != i2.shape or i1.ndim != 1:
        raise ValueError(f"idx1 and idx2 must be 1-d and the same length, got {i1.shape} and {i2.shape}")
    out = np.empty(len(i1), np.float32)
    for s in range(0, len(i1), chunk):
        a, b = i1[s:s + chunk], i2[s:s + chunk]
        out[s:s + chunk] = np.einsum("ij,ij->i", emb[a], emb[b])
    out[~(ok[i1] & ok[i2])] = np.nan
    return out


def embed_cached(embedder, model_path, runtime: str, paths: list, cache_dir, batch_size: int = 32,
                 progress: bool = True) -> tuple[np.ndarray, np.ndarray, int]:
    """Embed ``paths`` once each, reusing the rows cached in ``<cache_dir>/embeddings/<key>/`` by file content.

    ``key`` names the saved model (``model_path``: stem and modification time) and the
    runtime, so predict and ``nnutils.dedup`` share one cache.

    Parameters
    ----------
    embedder : TFLiteEmbedder or KerasEmbedder
        What embeds the images not in the cache.
    model_path : str or PathLike
        The saved model file the embedder was loaded from (must exist).
    runtime : str
        ``"tflite"`` or ``"keras"`` (part of the key: the two differ by float rounding).
    paths : list of str or None, length N
        Image files.
    cache_dir : str or PathLike or None
        Cache root; None caches nothing.
    batch_size : int, default 32
        Images per inference batch.
    progress : bool, default True
        Show a progress bar while embedding.

    Returns
    -------
    emb : ndarray of float32, shape (N, D)
        Embeddings; NaN rows where unreadable.
    ok : ndarray of bool, shape (N,)
        Which rows are valid.
    n_new : int
        How many images were embedded now (not read from the cache).
    """
    key = model_key(Path(model_path).stem, Path(model_path).stat().st_mtime_ns, runtime)
    cache = ContentCache(Path(cache_dir) / "embeddings" / key if cache_dir else None, paths)
    emb = np.full((len(paths), embedder.dim), np.nan, "float32")
    ok = np.zeros(len(paths), bool)
    todo = cache.lookup(emb, ok)
    if todo:
        e, o = embedder.embed_paths([paths[i] for i in todo], batch_size=batch_size, progress=progress)
        emb[todo], ok[todo] = e, o
        for i in todo:
            if ok[i]:
                cache.store(i, emb[i])
    return emb, ok, int(ok[todo].sum()) if todo else 0
