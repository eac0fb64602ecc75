"""Converting a Keras 3 image model to TFLite (LiteRT), for fast CPU inference.

:func:`convert_to_tflite` turns the model into a ``.tflite`` flatbuffer with a dynamic batch
(via ``model.export`` → SavedModel → ``TFLiteConverter``); :func:`tflite_path_for` says where
:func:`nnutils.models.embedders.load_embedder` keeps that conversion. On 2 CPU cores the
LiteRT interpreter with XNNPACK is ~3× faster than a Keras ``tf.function`` for the same model.

Importing this module does not import TensorFlow (only :func:`convert_to_tflite` does).
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

#: Values accepted by ``quantize``: float32 weights, dynamic-range int8 weights, float16 weights.
QUANTIZE_MODES = ("none", "dynamic", "float16")


def convert_to_tflite(model_or_path, out_path: str | os.PathLike, *, quantize: str = "none",
                      input_size: int | None = None) -> Path:
    """Convert a Keras 3 image → embedding model into a ``.tflite`` file with a dynamic batch.

    Parameters
    ----------
    model_or_path : keras.Model or path of a ``.keras`` file
        Input float32 images (B, S, S, 3) in [0, 255]; output (B, D) embeddings. A path is
        loaded with :func:`nnutils.models.saving.load_model` (custom layers registered).
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
        from nnutils.models.saving import load_model
        return load_model(os.fspath(model_or_path))
    return model_or_path


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
