"""Fast prediction: a trained ``.keras`` embedder run by TFLite (XNNPACK) with fast JPEG decoding.

The project's prediction budget is ≤ 10 ms per pair on 2 CPU cores, each image decoded and
embedded once. Two things dominate that cost and both are handled here:

* **the forward pass** — :func:`convert_to_tflite` turns the Keras 3 model into a
  ``.tflite`` flatbuffer (via ``model.export`` → SavedModel → ``TFLiteConverter``), which
  :class:`TFLiteEmbedder` runs with the LiteRT interpreter (``ai_edge_litert``) and its
  default XNNPACK delegate; :class:`KerasEmbedder` is the same API around the Keras model
  (a ``tf.function``), so callers can switch runtimes;
* **JPEG decoding** — :func:`decode_square` lets libjpeg-turbo (``simplejpeg``) decode at a
  reduced DCT scale that is still at least the model's input size, then squashes the
  result to a square exactly like :func:`nnutils.features.load_square`. Every other
  format, and any JPEG that the fast path does not handle, goes through
  :func:`nnutils.images.open_image`, so the result is the same robust RGB image.

:meth:`TFLiteEmbedder.embed_paths` decodes each distinct path once, in a thread pool that
works on the next batch while the interpreter runs the current one (the interpreter
releases the GIL), and reports unreadable images as NaN rows with ``ok = False``;
:func:`score_pairs` turns embeddings into pair scores (cosine = dot product of the unit
vectors; NaN where an image is unreadable — the caller decides what such a pair scores,
usually 0).

Batch dimension
---------------
The ``.tflite`` file keeps a **dynamic batch dimension** (input signature
``(-1, S, S, 3)``, output ``(-1, D)``). :class:`TFLiteEmbedder` resizes the interpreter's
input (``resize_tensor_input`` + ``allocate_tensors``) only when the batch size changes,
and :meth:`~TFLiteEmbedder.embed_paths` feeds full batches (readable images are gathered
across unreadable ones), so only the last, smaller batch triggers a re-allocation
(< 1 ms after the first allocation of each size). A ``.tflite`` file with a fixed batch
size (converted elsewhere) also works: batches are then zero-padded to that size.

Importing this module does not import TensorFlow (only :func:`convert_to_tflite` and
:class:`KerasEmbedder` do); :class:`TFLiteEmbedder` needs only ``ai_edge_litert``.
"""
from __future__ import annotations

import os
import stat
import tempfile
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from .images import DEFAULT_MAX_PIXELS, UnreadableImageError, open_image

try:  # optional: the fast JPEG path
    import simplejpeg as _simplejpeg
except ImportError:  # pragma: no cover - simplejpeg is in the project's environment
    _simplejpeg = None

__all__ = ["QUANTIZE_MODES", "convert_to_tflite", "decode_square", "jpeg_orientation", "TFLiteEmbedder",
           "KerasEmbedder", "load_embedder", "tflite_path_for", "score_pairs"]

#: Values accepted by ``quantize``: float32 weights, dynamic-range int8 weights, float16 weights.
QUANTIZE_MODES = ("none", "dynamic", "float16")


# --------------------------------------------------------------------------- #
# Conversion
# --------------------------------------------------------------------------- #
def convert_to_tflite(model_or_path, out_path: str | os.PathLike, *, quantize: str = "none",
                      input_size: int | None = None) -> Path:
    """Convert a Keras 3 image → embedding model into a ``.tflite`` file with a dynamic batch.

    Parameters
    ----------
    model_or_path : keras.Model or path of a ``.keras`` file
        Input float32 images (B, S, S, 3) in [0, 255]; output (B, D) embeddings. A path is
        loaded with :func:`nnutils.experiments.load_model` (custom layers registered).
    out_path : path
        Where to write the flatbuffer (parent folders are created). Written to a temporary
        file first and renamed, so a concurrent reader never sees half a file.
    quantize : {"none", "dynamic", "float16"}
        ``"none"``: float32 weights (outputs match Keras to ~1e-6). ``"dynamic"``:
        dynamic-range quantisation (int8 weights, ~4× smaller; activations stay float).
        ``"float16"``: float16 weights (~2× smaller), computed in float32 on CPU.
    input_size : int, optional
        Square input size S, needed only when the model's spatial input size is unknown
        (``None``); otherwise the model's own size is used.

    Returns
    -------
    Path
        ``out_path``. The model's input signature is ``(-1, S, S, 3)`` (dynamic batch).

    Raises
    ------
    ValueError
        Unknown ``quantize`` or unknown input size.
    RuntimeError
        The converter failed (e.g. an op without a TFLite builtin kernel); the converter's
        message is attached. Select-TF ops are deliberately not enabled, because the LiteRT
        interpreter cannot run them without the Flex delegate.
    """
    if quantize not in QUANTIZE_MODES:
        raise ValueError(f"quantize must be one of {QUANTIZE_MODES}, got {quantize!r}")
    import tensorflow as tf

    model = _load_keras(model_or_path)
    shape = tuple(model.input.shape)
    if len(shape) != 4 or shape[-1] != 3:
        raise ValueError(f"expected an image model with input (B, S, S, 3), got {shape}")
    h, w = shape[1], shape[2]
    if h is None or w is None:
        if input_size is None:
            raise ValueError("the model's input size is unknown: pass input_size")
        h = w = int(input_size)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="tflite_export_") as tmp:
        saved = os.path.join(tmp, "saved_model")
        spec = tf.TensorSpec((None, int(h), int(w), 3), tf.float32, name="image")
        model.export(saved, format="tf_saved_model", verbose=False, input_signature=[spec])
        converter = tf.lite.TFLiteConverter.from_saved_model(saved)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        if quantize == "dynamic":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        elif quantize == "float16":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.target_spec.supported_types = [tf.float16]
        try:
            flat = converter.convert()
        except Exception as exc:  # ConverterError and friends
            raise RuntimeError(f"TFLite conversion of {getattr(model, 'name', 'model')} failed: {exc}") from exc
    fd, tmp_file = tempfile.mkstemp(prefix=out_path.name + ".", suffix=".tmp", dir=out_path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(flat)
        os.replace(tmp_file, out_path)
    except BaseException:
        if os.path.exists(tmp_file):
            os.unlink(tmp_file)
        raise
    return out_path


def _load_keras(model_or_path):
    if isinstance(model_or_path, (str, os.PathLike)):
        from .experiments import load_model
        return load_model(os.fspath(model_or_path))
    return model_or_path


# --------------------------------------------------------------------------- #
# Decoding
# --------------------------------------------------------------------------- #
_XMP_HEADER = b"http://ns.adobe.com/xap/1.0/\x00"
_FALLBACK = -1  # jpeg_orientation: "let PIL decide"


def jpeg_orientation(data: bytes) -> int | None:
    """EXIF ``Orientation`` (1–8) of JPEG bytes, ``None`` if absent, or ``-1`` if unsure.

    Reads only the marker segments before the scan: the first ``Exif`` APP1 segment's
    IFD0 (as PIL does). ``-1`` means "this parser cannot tell as reliably as PIL" (an
    XMP packet that mentions ``tiff:Orientation``, which PIL also honours); callers then
    decode with PIL. A malformed EXIF block gives ``None`` like
    :func:`nnutils.images.open_image` (orientation ignored).
    """
    n = len(data)
    pos = 2
    orientation: int | None = None
    seen_exif = False
    while pos + 4 <= n:
        if data[pos] != 0xFF:
            return _FALLBACK  # not a marker where one must be: let PIL judge the file
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # standalone markers
            pos += 2
            continue
        if marker in (0xDA, 0xD9):  # start of scan / end of image: headers are over
            break
        length = int.from_bytes(data[pos + 2:pos + 4], "big")
        seg = data[pos + 4:pos + 2 + length]
        if marker == 0xE1:
            if seg[:6] == b"Exif\x00\x00" and not seen_exif:
                seen_exif = True
                orientation = _exif_ifd0_orientation(seg[6:])
            elif seg.startswith(_XMP_HEADER) and b"Orientation" in seg:
                return _FALLBACK
        pos += 2 + length
    return orientation


def _exif_ifd0_orientation(tiff: bytes) -> int | None:
    try:
        if tiff[:2] == b"II":
            order = "little"
        elif tiff[:2] == b"MM":
            order = "big"
        else:
            return None
        ifd = int.from_bytes(tiff[4:8], order)
        count = int.from_bytes(tiff[ifd:ifd + 2], order)
        for k in range(count):
            e = ifd + 2 + 12 * k
            if e + 12 > len(tiff):
                return None
            if int.from_bytes(tiff[e:e + 2], order) == 0x0112:
                typ = int.from_bytes(tiff[e + 2:e + 4], order)
                if typ == 3:  # SHORT
                    return int.from_bytes(tiff[e + 8:e + 10], order)
                if typ == 4:  # LONG
                    return int.from_bytes(tiff[e + 8:e + 12], order)
                return None
    except Exception:
        return None
    return None


def _apply_orientation(a: np.ndarray, orientation: int | None) -> np.ndarray:
    """(H, W, C) array as displayed, like ``PIL.ImageOps.exif_transpose``."""
    if orientation == 2:
        return a[:, ::-1]
    if orientation == 3:
        return a[::-1, ::-1]
    if orientation == 4:
        return a[::-1]
    if orientation == 5:
        return a.transpose(1, 0, 2)
    if orientation == 6:
        return np.rot90(a, -1)
    if orientation == 7:
        return a[::-1, ::-1].transpose(1, 0, 2)
    if orientation == 8:
        return np.rot90(a, 1)
    return a


def _pow2_scaled_size(w: int, h: int, size: int) -> tuple[int, int]:
    """The size PIL's ``draft`` decodes a w×h JPEG at for a (size, size) target."""
    scale = min(w // size, h // size)
    s = next(s for s in (8, 4, 2, 1) if scale >= s) if scale >= 1 else 1
    return -(-w // s), -(-h // s)


def _decode_jpeg_fast(data: bytes, size: int, max_pixels: int | None, pil_scale: bool) -> np.ndarray | None:
    """uint8 (h, w, 4) displayed RGBX at a reduced DCT scale, or None to fall back to PIL.

    RGBX (4 bytes a pixel) is PIL's internal layout for RGB, so :func:`_squash` wraps the
    buffer without a copy.
    """
    h, w, colorspace, _ = _simplejpeg.decode_jpeg_header(data)
    if colorspace not in ("YCbCr", "Gray", "RGB"):  # CMYK / YCCK: PIL's conversion
        return None
    if w <= 0 or h <= 0 or (max_pixels is not None and w * h > max_pixels):
        return None
    orientation = jpeg_orientation(data)
    if orientation == _FALLBACK:
        return None
    if pil_scale:
        mw, mh = _pow2_scaled_size(w, h, size)
    else:
        mw = mh = size
    a = _simplejpeg.decode_jpeg(data, colorspace="RGBX", min_height=min(mh, h), min_width=min(mw, w), strict=True)
    return _apply_orientation(a, orientation)


def _squash(img, size: int) -> np.ndarray:
    """PIL image or uint8 RGBX array → float32 (size, size, 3), PIL BILINEAR (as ``load_square``)."""
    from PIL import Image
    if isinstance(img, np.ndarray):  # RGBX from the fast path: share the buffer
        a = np.ascontiguousarray(img)
        img = Image.frombuffer("RGBX", (a.shape[1], a.shape[0]), a, "raw", "RGBX", 0, 1)
        return np.asarray(img.resize((size, size), Image.Resampling.BILINEAR))[..., :3].astype(np.float32)
    return np.asarray(img.resize((size, size), Image.Resampling.BILINEAR), dtype=np.float32)


def decode_square(path, size: int, *, max_pixels: int | None = DEFAULT_MAX_PIXELS,
                  pil_scale: bool = False) -> np.ndarray | None:
    """One image as float32 (size, size, 3) in [0, 255], RGB, squashed; None if unreadable.

    The same image as :func:`nnutils.features.load_square` (EXIF orientation applied,
    squashed — not cropped — to a square with PIL BILINEAR), decoded faster: a
    YCbCr/grey/RGB JPEG is decoded by libjpeg-turbo (``simplejpeg``) at the smallest DCT
    scale k/8 that is still ≥ ``size`` in both dimensions, then resized. Everything else
    (PNG, GIF, WebP, CMYK JPEGs, …) and any JPEG the fast path rejects (truncated,
    corrupt, XMP orientation, …) is decoded by :func:`nnutils.images.open_image`, so
    unreadable files give None exactly as ``load_square`` does. Never raises for a bad
    file or path (None, NaN, missing, directory, …).

    Parameters
    ----------
    path : str, os.PathLike or None
    size : int
        Output side S in pixels.
    max_pixels : int or None
        Decompression-bomb limit on the stored width × height (as :func:`open_image`).
    pil_scale : bool
        Restrict the DCT scale to 1, 1/2, 1/4, 1/8 chosen like PIL's ``draft`` (what
        ``load_square`` does): pixels are then the same as ``load_square``'s (identical
        on the test data). The default (any k/8 scale) decodes fewer pixels when the
        image is 1–2× the target size, and differs from ``load_square`` by ~1 level on
        average (mean abs difference ~0.9, ~5 for the 1 % most textured images on the
        embedded test set at 192 px; embeddings agree to cosine > 0.99).

    Returns
    -------
    numpy.ndarray or None
        float32 (size, size, 3), values in [0, 255].
    """
    if path is None:
        return None
    try:
        p = os.fspath(path)
    except TypeError:  # NaN from a DataFrame column, ...
        return None
    if _simplejpeg is not None:
        try:
            st = os.stat(p)
            if stat.S_ISREG(st.st_mode) and st.st_size > 3:
                with open(p, "rb") as f:
                    if f.read(3) == b"\xff\xd8\xff":
                        data = b"\xff\xd8\xff" + f.read()
                        a = _decode_jpeg_fast(data, size, max_pixels, pil_scale)
                        if a is not None:
                            return _squash(a, size)
        except Exception:
            pass  # anything odd: PIL decides (and reports unreadable files)
    try:
        img = open_image(p, max_pixels=max_pixels, draft_size=(size, size))
    except UnreadableImageError:
        return None
    return _squash(img, size)


# --------------------------------------------------------------------------- #
# Embedders
# --------------------------------------------------------------------------- #
class _Embedder:
    """Shared :meth:`embed_paths` logic; subclasses set ``size``, ``dim`` and ``_embed_batch``."""

    size: int
    dim: int
    runtime: str

    def _embed_batch(self, x: np.ndarray) -> np.ndarray:  # (b, S, S, 3) float32 → (b, D) float32
        raise NotImplementedError

    def embed_arrays(self, x, batch_size: int = 32) -> np.ndarray:
        """Embeddings float32 (N, D) of images float32 (N, S, S, 3) in [0, 255] (also one (S, S, 3) image → (1, D))."""
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
        """Decode and embed image files: ``(emb (N, D) float32, ok (N,) bool)``.

        Each distinct path is decoded and embedded once (duplicates reuse the row). Images
        are decoded by ``decoder(path, size)`` (default :func:`decode_square`) in
        ``decode_workers`` threads that run up to two batches ahead of the model, so
        decoding overlaps inference (``decode_workers=0`` decodes in the calling thread).
        Readable images are gathered into full batches of ``batch_size``. Unreadable or
        invalid paths (None, NaN, missing, corrupt, …) give a NaN row and ``ok = False``.
        """
        decoder = decoder or decode_square
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

        def consume(j, img):
            if img is not None:
                buf[len(buf_idx)] = img
                buf_idx.append(j)
                if len(buf_idx) == batch_size:
                    flush()
            if bar is not None:
                bar.update(1)

        def safe_decode(k):
            try:
                return decoder(k, self.size)
            except Exception:  # a decoder must not crash the batch
                return None

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
        if len(sel):
            src = np.array([row[keys[i]] for i in sel], dtype=np.int64)
            emb[sel] = uemb[src]
            ok[sel] = uok[src]
        return emb, ok


class TFLiteEmbedder(_Embedder):
    """A ``.tflite`` image → embedding model run by the LiteRT interpreter (XNNPACK, CPU).

    Parameters
    ----------
    tflite_path : path
        From :func:`convert_to_tflite`: input float32 (B, S, S, 3) in [0, 255], output (B, D).
    threads : int
        Interpreter threads (XNNPACK), default 2.

    Attributes
    ----------
    size : int   input side S in pixels.
    dim : int    embedding dimension D.

    The interpreter is not re-entrant; calls are serialised with a lock, so one instance
    may be shared by threads (they do not run in parallel).
    """

    runtime = "tflite"

    def __init__(self, tflite_path: str | os.PathLike, threads: int = 2):
        from ai_edge_litert.interpreter import Interpreter
        self.path = Path(tflite_path)
        self.threads = int(threads)
        self._it = Interpreter(model_path=str(self.path), num_threads=self.threads)
        inp = self._it.get_input_details()
        out = self._it.get_output_details()
        if len(inp) != 1 or len(out) != 1:
            raise ValueError(f"{self.path}: expected one input and one output, got {len(inp)} and {len(out)}")
        sig = [int(v) for v in inp[0].get("shape_signature", inp[0]["shape"])]
        if len(sig) != 4 or sig[1] <= 0 or sig[1] != sig[2] or sig[3] != 3:
            raise ValueError(f"{self.path}: expected input (B, S, S, 3), got {sig}")
        self.size = sig[1]
        self.dim = int(out[0]["shape"][-1])
        self._in, self._out = inp[0]["index"], out[0]["index"]
        self.dynamic_batch = sig[0] == -1
        self._it.allocate_tensors()
        self._batch = int(self._it.get_input_details()[0]["shape"][0])
        self._lock = threading.Lock()

    def _invoke(self, x: np.ndarray) -> np.ndarray:
        if len(x) != self._batch:
            self._it.resize_tensor_input(self._in, list(x.shape))
            self._it.allocate_tensors()
            self._batch = len(x)
        self._it.set_tensor(self._in, x)
        self._it.invoke()
        return self._it.get_tensor(self._out).astype(np.float32, copy=True)

    def _embed_batch(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        with self._lock:
            if self.dynamic_batch:
                return self._invoke(x)
            fixed, n = self._batch, len(x)  # fixed-batch model: zero-pad each chunk
            out = np.empty((n, self.dim), np.float32)
            for s in range(0, n, fixed):
                chunk = x[s:s + fixed]
                if len(chunk) < fixed:
                    pad = np.zeros((fixed, *x.shape[1:]), np.float32)
                    pad[:len(chunk)] = chunk
                    chunk = pad
                out[s:s + fixed] = self._invoke(chunk)[:min(fixed, n - s)]
            return out

    def __repr__(self):
        return f"TFLiteEmbedder({str(self.path)!r}, size={self.size}, dim={self.dim}, threads={self.threads})"


class KerasEmbedder(_Embedder):
    """The same API as :class:`TFLiteEmbedder` around a Keras model (a ``tf.function``, batch dynamic).

    ``model_or_path``: a ``keras.Model`` or a ``.keras`` file (loaded with
    :func:`nnutils.experiments.load_model`); input float32 (B, S, S, 3) in [0, 255],
    output (B, D) L2-normalised embeddings.
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


def tflite_path_for(keras_path: str | os.PathLike, cache_dir: str | os.PathLike | None = None,
                    quantize: str = "none") -> Path:
    """Where :func:`load_embedder` keeps the conversion of ``keras_path``.

    Next to the model: ``<stem>.tflite`` (``<stem>.<quantize>.tflite`` for quantised
    conversions). In a shared ``cache_dir``: ``<stem>-<hash of the absolute path>.tflite``
    (same suffixes), so models with the same file name in different run folders (e.g.
    ``runs/cpu/models/00_pretrained.keras`` and ``runs/smoke/models/00_pretrained.keras``)
    never share a conversion.
    """
    import hashlib
    src = Path(keras_path)
    tag = "" if quantize == "none" else f".{quantize}"
    if cache_dir is None:
        return src.parent / f"{src.stem}{tag}.tflite"
    digest = hashlib.sha1(os.fsencode(os.path.abspath(src))).hexdigest()[:8]
    return Path(cache_dir) / f"{src.stem}-{digest}{tag}.tflite"


def load_embedder(path: str | os.PathLike, runtime: str = "tflite", cache_dir: str | os.PathLike | None = None,
                  *, quantize: str = "none", threads: int = 2):
    """An embedder for a saved model: :class:`TFLiteEmbedder` or :class:`KerasEmbedder`.

    ``path`` is a ``.keras`` file (or a ``.tflite`` file, used as is). With
    ``runtime="tflite"`` the ``.keras`` file is converted once (:func:`convert_to_tflite`)
    to :func:`tflite_path_for` ``(path, cache_dir, quantize)``; that file is reused as long
    as it is at least as new as the ``.keras`` file (a ``.keras`` file replaced by an
    *older* one, e.g. ``cp -p``, is not noticed: delete the ``.tflite``).
    ``runtime="keras"`` loads the model. ``threads``: TFLite interpreter threads.
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
    if not target.is_file() or target.stat().st_mtime < path.stat().st_mtime:
        convert_to_tflite(path, target, quantize=quantize)
    return TFLiteEmbedder(target, threads=threads)


# --------------------------------------------------------------------------- #
# Scoring
# --------------------------------------------------------------------------- #
def score_pairs(emb: np.ndarray, ok: np.ndarray, idx1: Sequence[int], idx2: Sequence[int],
                chunk: int = 65536) -> np.ndarray:
    """Cosine similarity of pairs of rows: float32 (P,) in [-1, 1], NaN where either image is unreadable.

    ``emb`` (N, D) L2-normalised embeddings and ``ok`` (N,) bool from ``embed_paths``;
    ``idx1``, ``idx2`` (P,) row indices of each pair's two images. The score is the dot
    product (the rows are unit vectors). Callers replace NaN by their score for unreadable
    images (usually 0).
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
