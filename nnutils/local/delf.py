"""DELF-style learned local features: attention over a frozen backbone's stride-16 map.

The LUN.UA team listed DELF as "in development"; this is a small, CPU-friendly version of
Noh et al. 2017 (*Large-Scale Image Retrieval with Attentive Deep Local Features*):

* **dense features** — the backbone's last stride-16 map
  (:func:`nnutils.models.backbones.stride16_model`; 112 channels for ``efficientnet_lite0``, 512
  for ``vgg16`` ``block5_conv3``, 1024 for ``resnet50`` ``conv4_block6_out``), each
  location L2-normalised. The backbone stays frozen (ImageNet weights).
* **attention** — a head of two 1×1 convolutions (``hidden`` channels + ReLU → 1) and a
  softplus, one non-negative score per location. It is trained on cached stride-16 maps
  (:func:`nnutils.train.features.compute_features`, cached by file content) with the DELF
  objective: the attention-weighted mean of the normalised features feeds a linear
  softmax classifier over *photo groups* (images of the same photo = one class, e.g. the
  embedded data's ``base_id``). Locations that tell photos apart get high attention;
  flat walls, sky and borders that all photos share get low attention.
* **keypoints** — :meth:`DelfExtractor.extract` runs the stride-16 model + head on an
  image pyramid (default scales 1/√2, 1, √2), keeps the locations whose attention is at
  least ``score_threshold``, and the ``max_keypoints`` strongest across all scales. No
  NMS by default, as in DELF's multi-scale extraction: the same region at two scales
  gives two keypoints (this is what lets a 0.5× re-post match the original's coarser
  scale); ``nms_radius`` (original pixels) suppresses weaker keypoints near a stronger one.
* **descriptors** — the normalised feature at each kept location, reduced by PCA (fitted
  on the highest-attention training features; 40 dims by default, whitening optional) and
  L2-normalised again: float32, unit length, ready for L2 / cosine matching
  (:func:`nnutils.local.keypoints.match` / ``verify`` take them as they take SIFT).

Geometry
--------
At scale ``s`` an image of ``w0 × h0`` pixels is resized to about ``(s · image_size)²``
pixels at the nearest of a few aspect ratios (:data:`ASPECTS`, 1:2 … 2:1; at most ~7.5 %
stretch per axis), each side a multiple of 16 so that the
map covers the image exactly. Because the *area* is fixed, the same photo at any
resolution gives the same network input (a 0.5× re-post is described like its original).
A map location ``(i, j)`` is the centre of its receptive field, ``16·j + offset`` resized
pixels (``offset`` 15 for Lite0, 7.5 for VGG16, 0 for ResNet50: TensorFlow's "same"
padding), mapped back per axis to ORIGINAL pixels (``(x + 0.5) · w0 / W - 0.5``).
``Keypoints.scale`` is the theoretical receptive-field size (339 px for Lite0, 196 VGG16,
291 ResNet50) divided by the image scale (geometric mean of the two axes), so keypoints
found at a coarser pyramid level are larger. ``Keypoints.score`` is the attention.

Empty results (never an exception for a bad image): ``reason`` is
``"unreadable (<why>)"`` (see :mod:`nnutils.data.images`), ``"too small"`` (shorter side <
``min_side``), ``"too flat"`` (constant image, or no location's attention reaches the
threshold).

Runtimes and speed
------------------
``runtime="tflite"`` (default when ``ai_edge_litert`` is installed) converts the fused
image → (features, attention) model once (~5–15 s,
:func:`nnutils.models.runtime.tflite_flatbuffer`, input ``(1, None, None, 3)``; saved with
:meth:`DelfExtractor.save`, so :meth:`~DelfExtractor.load` does not even build the
backbone) and runs it with :class:`nnutils.models.runtime.TFLiteRunner` (XNNPACK): one
interpreter, resized when the input shape changes (at most 7 aspects × len(scales)
shapes; on the smoke model this was no slower than keeping one interpreter per shape).
``runtime="keras"`` runs a ``tf.function`` with a dynamic input shape (no conversion,
~2.5× slower). Both give the same keypoints up to float rounding.

Measured on the 2-core machine (EfficientNet-Lite0, ``image_size=160``, scales 1/√2, 1,
√2, 300 keypoints, 120 embedded-data test images, while another job used ~1.2 cores):
TFLite 19 ms per image wall (19 ms CPU: decode ~2, resize ~2, network ~15), Keras 49 ms;
``image_size=192``: 26 ms, 224: 34 ms. Training on 2,269 images: stride-16 maps ~25 s
(cached by file content), 5 epochs + PCA ~10 s. Quality on the embedded test pairs
(800, mutual-NN matching + similarity RANSAC inlier count as the score): ROC AUC 0.999 on
the 795 pairs whose images are readable, about the same at 160, 192 and 224 px.

Typical use::

    ex = train_delf(paths, groups)                    # ~35 s on 2 cores for ~2,300 images
    ex.save("runs/cpu/models/delf")
    ex = DelfExtractor.load("runs/cpu/models/delf")
    kp = ex.extract("a.jpg")                          # nnutils.local.keypoints.Keypoints
    att = ex.attention_map("a.jpg"); plot_attention("a.jpg", att)

Importing this module does not import TensorFlow (building, training and the keras runtime do).
"""
from __future__ import annotations

import json
import math
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from nnutils.data.cache import model_key
from nnutils.data.images import read_any as read_image  # noqa: F401  (re-exported: path/PIL/array → RGB, size, reason)
from nnutils.local.keypoints import Keypoints
from nnutils.models.runtime import TFLiteRunner, tflite_flatbuffer
from nnutils.train.features import compute_features, random_repost

__all__ = ["ASPECTS", "DEFAULT_SCALES", "RECEPTIVE_FIELDS", "DelfExtractor", "Pca", "build_attention_head",
           "build_training_model", "train_delf", "plot_attention", "read_image"]

#: DELF's default image pyramid: 1/√2, 1, √2.
DEFAULT_SCALES = (0.7071, 1.0, 1.4142)

#: backbone → (theoretical receptive field in pixels, centre of location 0 in pixels) of the
#: stride-16 map, measured from the gradient of one location (input sides multiples of 16).
#: MobileNetV3 / DenseNet121 see the whole image (squeeze-excite / depth); a nominal value is used.
RECEPTIVE_FIELDS = {
    "efficientnet_lite0": (339.0, 15.0),
    "vgg16": (196.0, 7.5),
    "resnet50": (291.0, 0.0),
}
_NOMINAL_RF = (256.0, 7.5)
_STRIDE = 16

_FILES = {"head": "head.keras", "pca": "delf.npz", "settings": "delf.json", "tflite": "delf.tflite"}


# ----------------------------------------------------------------------------- model parts
def build_attention_head(channels: int, hidden: int = 512, name: str = "delf_attention"):
    """The attention head: (B, h, w, channels) features → (B, h, w, 1) scores ≥ 0.

    1×1 conv (``hidden``, ReLU) → 1×1 conv (1) → softplus, as in DELF. Plain Keras layers
    only, so the ``.keras`` file loads without custom objects.
    """
    import keras
    inp = keras.Input((None, None, int(channels)), name="features")
    x = keras.layers.Conv2D(int(hidden), 1, activation="relu", name="attention_conv1")(inp)
    x = keras.layers.Conv2D(1, 1, name="attention_conv2")(x)
    x = keras.layers.Activation("softplus", name="attention_softplus")(x)
    return keras.Model(inp, x, name=name)


def build_training_model(head, map_shape: Sequence[int], n_classes: int):
    """DELF's training graph on cached maps: (B, h, w, C) → (B, n_classes) logits.

    ``pooled = mean over locations of attention · L2-normalised feature``, then a linear
    classifier (softmax cross-entropy over photo groups). Only ``head`` is kept afterwards.
    """
    import keras
    from keras import ops
    inp = keras.Input(tuple(int(d) for d in map_shape), name="stride16_map")
    att = head(inp)
    feats = inp / (ops.sqrt(ops.sum(ops.square(inp), axis=-1, keepdims=True)) + 1e-6)
    pooled = ops.mean(att * feats, axis=(1, 2))
    logits = keras.layers.Dense(int(n_classes), name="group_logits")(pooled)
    return keras.Model(inp, logits, name="delf_train")


@dataclass
class Pca:
    """Descriptor reduction: ``normalise((x - mean) @ components.T [/ sqrt(variances)])``."""

    mean: np.ndarray          # (C,)
    components: np.ndarray    # (d, C), rows = principal axes
    variances: np.ndarray     # (d,)
    whiten: bool = False

    @property
    def dim(self) -> int:
        return int(self.components.shape[0])

    @classmethod
    def fit(cls, x: np.ndarray, dim: int, whiten: bool = False) -> "Pca":
        x = np.asarray(x, np.float32)
        mean = x.mean(axis=0, dtype=np.float64)
        xc = x - mean.astype(np.float32)
        cov = (xc.T @ xc).astype(np.float64) / max(1, len(x) - 1)
        vals, vecs = np.linalg.eigh(cov)
        order = np.argsort(vals)[::-1][:dim]
        comps = vecs[:, order].T
        # a deterministic sign per axis (largest |coefficient| positive)
        comps *= np.sign(comps[np.arange(len(comps)), np.abs(comps).argmax(axis=1)])[:, None]
        return cls(mean.astype(np.float32), comps.astype(np.float32),
                   np.maximum(vals[order], 0).astype(np.float32), bool(whiten))

    def transform(self, x: np.ndarray) -> np.ndarray:
        # einsum, not BLAS: OpenBLAS takes ~8 ms for this tiny (300×112)·(112×40) product on
        # 2 busy cores (thread wake-ups); einsum's plain loop takes ~0.4 ms
        y = np.einsum("nc,dc->nd", np.asarray(x, np.float32) - self.mean, self.components)
        if self.whiten:
            y /= np.sqrt(self.variances + 1e-6 * float(self.variances.max(initial=1.0)))
        return _l2n(y)


def _l2n(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return x / (np.linalg.norm(x, axis=-1, keepdims=True) + 1e-7)


# ----------------------------------------------------------------------------- reading


#: Aspect ratios (width / height) an image is resized to: the nearest one (in log scale), so a
#: few input shapes serve all images; the stretch this adds is at most ~7.5 % per axis up
#: to 2:1 (an image beyond 2:1 is squashed to 2:1).
ASPECTS = (1 / 2, 2 / 3, 3 / 4, 1.0, 4 / 3, 3 / 2, 2.0)


def _input_shape(w0: int, h0: int, image_size: int, scale: float) -> tuple[int, int]:
    """(H, W) of the network input at ``scale``: area ≈ (scale · image_size)², the aspect ratio
    the nearest of :data:`ASPECTS`, sides multiples of 16."""
    ar = min(ASPECTS, key=lambda a: abs(math.log(a) - math.log(w0 / h0)))
    side = scale * image_size
    r = lambda v: max(2 * _STRIDE, int(round(v / _STRIDE)) * _STRIDE)  # noqa: E731
    return r(side / math.sqrt(ar)), r(side * math.sqrt(ar))


def _resize(a: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """uint8 RGB resized to (H, W): INTER_AREA when shrinking, bilinear otherwise."""
    import cv2
    h, w = hw
    shrink = w < a.shape[1] and h < a.shape[0]
    return cv2.resize(a, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


# ----------------------------------------------------------------------------- runtimes
class _KerasRunner:
    def __init__(self, model):
        import tensorflow as tf
        self._fn = tf.function(lambda x: model(x, training=False), reduce_retracing=True,
                               input_signature=[tf.TensorSpec([1, None, None, 3], tf.float32)])

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self._fn(x))[0]


class _TFLiteDelf:
    """The fused model's flatbuffer run by :class:`nnutils.models.runtime.TFLiteRunner`:
    (1, H, W, 3) → (h, w, C + 1). One interpreter, resized when the input shape changes."""

    def __init__(self, flatbuffer: bytes, threads: int = 2):
        self.runner = TFLiteRunner(flatbuffer, threads=threads)
        if len(self.runner.output_names) != 1:
            raise ValueError(f"the DELF model must have one output, got {self.runner.output_names}")
        self._output = self.runner.output_names[0]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.runner.run(x)[self._output][0]


def _convert_fused(model) -> bytes:
    """Fused image → (h, w, C+1) model → TFLite flatbuffer with input (1, None, None, 3)."""
    return tflite_flatbuffer(model, input_shape=(1, None, None, 3))


def _default_runtime() -> str:
    try:
        import ai_edge_litert.interpreter  # noqa: F401
        return "tflite"
    except ImportError:  # pragma: no cover - in the project's environment
        return "keras"


# ----------------------------------------------------------------------------- extractor
class DelfExtractor:
    """Attention head + PCA on a frozen backbone's stride-16 map; see the module docstring.

    Parameters
    ----------
    backbone : str
        A registered backbone with a stride-16 layer (``efficientnet_lite0``, ``vgg16``,
        ``resnet50``, ...).
    head : keras.Model
        From :func:`build_attention_head` (trained by :func:`train_delf`).
    pca : Pca or None
        Descriptor reduction; None keeps the normalised C-dim features.
    image_size : int
        Side of the square (in pixels² area) an image is resized to at scale 1.0.
    score_threshold : float
        Default minimum attention of a keypoint (``extract(score_threshold=None)``).
    weights_dir : path or None
        Forwarded to :func:`nnutils.models.backbones.build_backbone` (Kaggle ``.h5`` folder).
    runtime : {"auto", "tflite", "keras"}
    threads : int
        TFLite interpreter threads.
    backbone_model : keras.Model or None
        An already built ``build_backbone(backbone, (None, None, 3))`` (shared weights).
    """

    kind = "delf"

    def __init__(self, backbone: str, head, pca: Pca | None = None, *, image_size: int = 160,
                 score_threshold: float = 0.0, weights_dir=None, runtime: str = "auto", threads: int = 2,
                 backbone_model=None, settings: dict | None = None, history: dict | None = None,
                 tflite: bytes | None = None):
        if runtime not in ("auto", "tflite", "keras"):
            raise ValueError(f"runtime must be 'auto', 'tflite' or 'keras', got {runtime!r}")
        self.backbone = str(backbone)
        self.head = head
        self.pca = pca
        self.image_size = int(image_size)
        self.score_threshold = float(score_threshold)
        self.weights_dir = weights_dir
        self.runtime = _default_runtime() if runtime == "auto" else runtime
        self.threads = int(threads)
        self.settings = dict(settings or {})
        self.history = dict(history or {})
        self.receptive_field, self.rf_offset = RECEPTIVE_FIELDS.get(self.backbone, _NOMINAL_RF)
        self._backbone_model = backbone_model
        self._s16 = None
        self._fused = None
        self._runner = None
        self._tflite = tflite
        self._lock = threading.Lock()

    # -- models ---------------------------------------------------------------
    @property
    def channels(self) -> int:
        return int(self.head.input.shape[-1])

    @property
    def dim(self) -> int:
        """Descriptor dimension (PCA dims, or the backbone's stride-16 channels)."""
        return self.pca.dim if self.pca is not None else self.channels

    def stride16(self):
        """The frozen image → stride-16 map model (variable input size), built on first use."""
        if self._s16 is None:
            from nnutils.models.backbones import build_backbone, stride16_model
            if self._backbone_model is None:
                self._backbone_model = build_backbone(self.backbone, (None, None, 3), weights_dir=self.weights_dir)
            self._s16 = stride16_model(self._backbone_model, self.backbone)
            self._s16.trainable = False
        return self._s16

    def fused_model(self):
        """image (1, H, W, 3) in [0, 255] → (1, h, w, C + 1): L2-normalised features, attention last."""
        if self._fused is None:
            import keras
            from keras import ops
            s16 = self.stride16()
            inp = keras.Input((None, None, 3), name="image")
            f = s16(inp)
            # the head's convolutions + a softplus that cannot overflow: TFLite's SOFTPLUS
            # kernel gives inf for large inputs, Keras' is stable; this form is stable in both
            z = self.head.get_layer("attention_conv2")(self.head.get_layer("attention_conv1")(f))
            att = ops.relu(z) + ops.log1p(ops.exp(-ops.abs(z)))
            fn = f / (ops.sqrt(ops.sum(ops.square(f), axis=-1, keepdims=True)) + 1e-6)
            self._fused = keras.Model(inp, ops.concatenate([fn, att], axis=-1), name="delf_fused")
        return self._fused

    def _run(self, x: np.ndarray) -> np.ndarray:
        with self._lock:
            if self._runner is None:
                if self.runtime == "tflite":
                    if self._tflite is None:
                        self._tflite = _convert_fused(self.fused_model())
                    self._runner = _TFLiteDelf(self._tflite, self.threads)
                else:
                    self._runner = _KerasRunner(self.fused_model())
        return self._runner(x)

    # -- dense outputs --------------------------------------------------------
    def dense(self, image, scale: float = 1.0):
        """Normalised features (h, w, C), attention (h, w), network input (H, W), original (w0, h0).

        At ``scale`` of the pyramid; None for an unreadable image.
        """
        rgb, size, _ = read_image(image, self._decode_side((scale,)))
        if rgb is None or min(size) < 1:
            return None
        return self._dense(rgb, size, scale)

    def _dense(self, rgb: np.ndarray, size: tuple[int, int], scale: float, resized: list | None = None):
        hw = _input_shape(size[0], size[1], self.image_size, scale)
        src = rgb
        if resized:  # resize from the smallest larger level already made (cheaper than the original)
            bigger = [r for r in resized if r.shape[0] >= hw[0] and r.shape[1] >= hw[1]]
            if bigger:
                src = min(bigger, key=lambda r: r.size)
        x = _resize(src, hw)
        if resized is not None:
            resized.append(x)
        out = self._run(x.astype(np.float32)[None])
        return out[..., :-1], out[..., -1], hw, size

    def attention_map(self, image, scale: float = 1.0) -> np.ndarray:
        """Attention (h, w) float32 on the stride-16 grid at ``scale`` (for heatmaps).

        Cell ``(i, j)`` is centred at ORIGINAL pixel ``((16 j + offset + .5) w0 / W - .5, ...)``;
        :func:`plot_attention` stretches it over the image. An unreadable image gives a
        (0, 0) array.
        """
        d = self.dense(image, scale)
        return np.zeros((0, 0), np.float32) if d is None else d[1].astype(np.float32)

    def _decode_side(self, scales) -> int:
        return int(math.ceil(1.42 * max(scales) * self.image_size))  # the longest network input side

    # -- keypoints ------------------------------------------------------------
    def extract(self, image, *, scales: Sequence[float] = DEFAULT_SCALES, max_keypoints: int = 300,
                score_threshold: float | None = None, nms_radius: float = 0.0, min_side: int = 16) -> Keypoints:
        """Keypoints of one image (ORIGINAL pixel coordinates); never raises for a bad image.

        Parameters
        ----------
        image : path, PIL image or RGB array
        scales : image pyramid; each scale runs the network once on ≈ (scale · image_size)² pixels.
        max_keypoints : the strongest (by attention) over all scales.
        score_threshold : minimum attention; None: ``self.score_threshold`` (set by training).
        nms_radius : > 0: drop a keypoint within this many original pixels of a stronger one
            (greedy, across scales). 0 (default): no NMS, as DELF.
        min_side : shorter side in original pixels below which the image is "too small".

        Returns
        -------
        Keypoints
            ``kind="delf"``, ``xy`` receptive-field centres, ``scale`` receptive field / image
            scale, ``score`` attention, ``desc`` (n, dim) float32 unit-norm; empty with
            ``reason`` "unreadable (<why>)", "too small" or "too flat".
        """
        thr = self.score_threshold if score_threshold is None else float(score_threshold)
        rgb, size, reason = read_image(image, self._decode_side(scales))

        def empty(why):
            return Keypoints.empty(self.kind, size, reason=why, dim=self.dim)

        if rgb is None:
            return empty(reason)
        if min(size) < min_side or min(rgb.shape[:2]) < 2:
            return empty("too small")
        if int(rgb.max()) - int(rgb.min()) < 2:  # constant image: skip the network
            return empty("too flat")
        w0, h0 = size
        xy, sc, score, feats, resized = [], [], [], [], []
        for s in sorted(scales, reverse=True):
            f, att, (H, W), _ = self._dense(rgb, size, s, resized)
            ii, jj = np.nonzero(att >= thr)
            if not len(ii):
                continue
            cx = _STRIDE * jj + self.rf_offset
            cy = _STRIDE * ii + self.rf_offset
            x = (cx + 0.5) * (w0 / W) - 0.5
            y = (cy + 0.5) * (h0 / H) - 0.5
            xy.append(np.stack([np.clip(x, 0, w0 - 1), np.clip(y, 0, h0 - 1)], axis=1))
            img_scale = math.sqrt((W / w0) * (H / h0))
            sc.append(np.full(len(ii), self.receptive_field / img_scale))
            score.append(att[ii, jj])
            feats.append(f[ii, jj])
        if not xy:
            return empty("too flat")
        xy, sc, score, feats = (np.concatenate(v) for v in (xy, sc, score, feats))
        order = np.argsort(-score, kind="stable")
        if nms_radius > 0:
            order = _nms(xy, order, float(nms_radius), int(max_keypoints))
        order = order[:int(max_keypoints)]
        desc = self.pca.transform(feats[order]) if self.pca is not None else _l2n(feats[order])
        return Keypoints(xy[order].astype(np.float32), sc[order].astype(np.float32),
                         score[order].astype(np.float32), np.ascontiguousarray(desc, np.float32),
                         (int(w0), int(h0)), self.kind, "")

    # -- persistence ----------------------------------------------------------
    def save(self, path) -> Path:
        """Write ``path/`` with ``head.keras``, ``delf.npz`` (PCA), ``delf.json`` (settings,
        history) and ``delf.tflite`` (the converted fused model, when the tflite runtime
        has been used or is the runtime: converted here if needed)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.head.save(path / _FILES["head"])
        pca = {} if self.pca is None else dict(mean=self.pca.mean, components=self.pca.components,
                                               variances=self.pca.variances, whiten=np.array(self.pca.whiten))
        np.savez(path / _FILES["pca"], **pca)
        meta = dict(backbone=self.backbone, image_size=self.image_size, score_threshold=self.score_threshold,
                    receptive_field=self.receptive_field, rf_offset=self.rf_offset, settings=self.settings,
                    history=self.history)
        (path / _FILES["settings"]).write_text(json.dumps(meta, indent=1, default=_jsonable))
        if self.runtime == "tflite" and self._tflite is None:
            self._tflite = _convert_fused(self.fused_model())
        if self._tflite is not None:
            (path / _FILES["tflite"]).write_bytes(self._tflite)
        return path

    @classmethod
    def load(cls, path, *, weights_dir=None, runtime: str = "auto", threads: int = 2,
             backbone_model=None) -> "DelfExtractor":
        """Read what :meth:`save` wrote. With the tflite runtime and a saved ``delf.tflite``
        the backbone is not built at all (fast); the keras runtime rebuilds it (ImageNet
        weights, ``weights_dir``)."""
        import keras
        path = Path(path)
        meta = json.loads((path / _FILES["settings"]).read_text())
        head = keras.models.load_model(path / _FILES["head"], compile=False)
        with np.load(path / _FILES["pca"]) as z:
            pca = None if "mean" not in z else Pca(z["mean"], z["components"], z["variances"], bool(z["whiten"]))
        tfl = path / _FILES["tflite"]
        ex = cls(meta["backbone"], head, pca, image_size=meta["image_size"],
                 score_threshold=meta["score_threshold"], weights_dir=weights_dir, runtime=runtime,
                 threads=threads, backbone_model=backbone_model, settings=meta.get("settings"),
                 history=meta.get("history"), tflite=tfl.read_bytes() if tfl.exists() else None)
        return ex

    def __repr__(self):
        return (f"DelfExtractor(backbone={self.backbone!r}, image_size={self.image_size}, dim={self.dim}, "
                f"threshold={self.score_threshold:.3g}, runtime={self.runtime!r})")


def _jsonable(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def _nms(xy: np.ndarray, order: np.ndarray, radius: float, limit: int) -> np.ndarray:
    keep: list[int] = []
    r2 = radius * radius
    for i in order:
        if keep:
            d = xy[keep] - xy[i]
            if (d * d).sum(axis=1).min() < r2:
                continue
        keep.append(int(i))
        if len(keep) >= limit:
            break
    return np.array(keep, dtype=int)


# ----------------------------------------------------------------------------- training
def train_delf(paths: Sequence, labels: Sequence, *, backbone: str = "efficientnet_lite0", image_size: int = 160,
               epochs: int = 5, batch_size: int = 32, learning_rate: float = 1e-3, hidden: int = 512,
               views: int = 0, pca_dims: int | None = 40, whiten: bool = False, pca_per_image: int = 64,
               threshold_fraction: float = 0.25, weights_dir=None, cache_dir=None, runtime: str = "auto",
               progress: bool = True, seed: int = 0) -> DelfExtractor:
    """Train the attention head on cached stride-16 maps; fit the PCA; return the extractor.

    Parameters
    ----------
    paths, labels : the training images and their photo group (any hashable: images of the
        same photo share a label, e.g. the embedded data's ``base_id``). Unreadable images
        are skipped.
    backbone, image_size : the frozen backbone; maps are computed on ``image_size²`` squashed
        squares (:func:`nnutils.train.features.load_square`), cached in ``cache_dir`` by file content.
    epochs, batch_size, learning_rate : Adam on softmax cross-entropy over groups.
    hidden : channels of the attention head's first 1×1 conv.
    views : extra randomly re-posted copies of every image (:func:`nnutils.train.features.random_repost`),
        each another cached pass over the images: feature-space augmentation.
    pca_dims, whiten : descriptor PCA (None or 0: none); capped at the channels and samples.
    pca_per_image : PCA is fitted on each image's this-many highest-attention locations.
    threshold_fraction : the extractor's default ``score_threshold`` is this fraction of the
        median (over training images) of an image's highest attention. Relative, so it
        follows the attention's scale, which grows with training; at 0.25 every photo of
        the embedded test set keeps keypoints, while a flat noisy grey image does not.
    runtime : the returned extractor's runtime ("auto": tflite if available).

    Returns
    -------
    DelfExtractor
        ``.history`` has the per-epoch ``loss`` / ``accuracy`` lists; ``.settings`` the
        arguments plus ``n_images``, ``n_classes``, ``train_seconds`` (training + PCA,
        without the feature computation) and ``feature_seconds``.
    """
    import keras

    from nnutils.models.backbones import build_backbone, get_spec, stride16_model

    t0 = time.perf_counter()
    paths = list(paths)
    labels = list(labels)
    if len(paths) != len(labels):
        raise ValueError(f"{len(paths)} paths but {len(labels)} labels")
    spec = get_spec(backbone)
    bb = build_backbone(spec.name, (None, None, 3), weights_dir=weights_dir)
    s16 = stride16_model(bb, spec.name)
    s16.trainable = False
    inp = keras.Input((int(image_size), int(image_size), 3), name="image")
    fixed = keras.Model(inp, s16(inp), name=f"{spec.name}_stride16_{image_size}")
    key = model_key("delf", spec.name, spec.stride16_layer, image_size)
    common = dict(batch_size=16, cache_dir=cache_dir, key=key, progress=progress)
    feats, ok = compute_features(fixed, paths, int(image_size), desc="stride-16 maps", **common)
    stack_x, stack_y = [feats[ok]], [np.asarray(labels, dtype=object)[ok]]
    if views:
        for v in range(int(views)):
            fv, okv = compute_features(fixed, paths, int(image_size), transform=random_repost, seed=seed + v,
                                       desc=f"augmented view {v + 1}", **common)
            stack_x.append(fv[okv])
            stack_y.append(np.asarray(labels, dtype=object)[okv])
    x = np.concatenate(stack_x)  # float16 (as cached): Keras casts each batch
    ylab = np.concatenate(stack_y)
    if not len(x):
        raise ValueError("no readable training image")
    classes, y = np.unique(ylab.astype(str), return_inverse=True)
    t_feat = time.perf_counter() - t0

    t1 = time.perf_counter()
    keras.utils.set_random_seed(int(seed))
    head = build_attention_head(spec.stride16_channels, hidden)
    model = build_training_model(head, x.shape[1:], len(classes))
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=keras.losses.SparseCategoricalCrossentropy(
        from_logits=True), metrics=["accuracy"])
    hist = model.fit(x, y, epochs=int(epochs), batch_size=int(batch_size), shuffle=True,
                     verbose=2 if progress else 0)

    # PCA on the highest-attention normalised features of the (un-augmented) training maps
    base = feats[ok]
    att = np.asarray(head.predict(base, batch_size=64, verbose=0))[..., 0]
    flat_att = att.reshape(len(base), -1)
    k = max(1, min(int(pca_per_image), flat_att.shape[1]))
    top = np.argsort(-flat_att, axis=1)[:, :k]
    sample = _l2n(np.take_along_axis(base.reshape(len(base), -1, base.shape[-1]), top[..., None], axis=1)
                  .reshape(-1, base.shape[-1]))
    rng = np.random.default_rng(seed)
    if len(sample) > 40_000:
        sample = sample[rng.choice(len(sample), 40_000, replace=False)]
    pca = None
    if pca_dims:
        d = int(min(pca_dims, sample.shape[1], max(1, len(sample) - 1)))
        pca = Pca.fit(sample, d, whiten)
    threshold = float(threshold_fraction * np.median(flat_att.max(axis=1)))
    t_train = time.perf_counter() - t1

    settings = dict(backbone=spec.name, image_size=int(image_size), epochs=int(epochs), batch_size=int(batch_size),
                    learning_rate=float(learning_rate), hidden=int(hidden), views=int(views),
                    pca_dims=None if pca is None else pca.dim, whiten=bool(whiten), pca_per_image=k,
                    threshold_fraction=float(threshold_fraction), seed=int(seed), n_images=int(ok.sum()),
                    n_unreadable=int((~ok).sum()), n_samples=int(len(x)), n_classes=int(len(classes)),
                    map_shape=list(x.shape[1:]), train_seconds=round(t_train, 2),
                    feature_seconds=round(t_feat, 2))
    history = {k_: [float(v) for v in vals] for k_, vals in hist.history.items()}
    return DelfExtractor(spec.name, head, pca, image_size=image_size, score_threshold=threshold,
                         weights_dir=weights_dir, runtime=runtime, backbone_model=bb, settings=settings,
                         history=history)


# ----------------------------------------------------------------------------- plotting
def plot_attention(image, attention: np.ndarray, ax=None, *, keypoints: Keypoints | None = None,
                   alpha: float = 0.5, cmap: str = "jet", title: str | None = None):
    """Draw ``image`` with ``attention`` (h, w) stretched over it; optional keypoints (dots).

    ``image``: what :meth:`DelfExtractor.extract` accepts. Returns the matplotlib axes.
    """
    import matplotlib.pyplot as plt
    rgb, size, reason = read_image(image, 1024)
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 6 * (size[1] / size[0]) if size[0] else 6))
    if rgb is None:
        ax.text(0.5, 0.5, reason, ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return ax
    w0, h0 = size
    ax.imshow(rgb, extent=(0, w0, h0, 0))
    if attention is not None and np.size(attention):
        ax.imshow(attention, extent=(0, w0, h0, 0), cmap=cmap, alpha=alpha, interpolation="bilinear")
    if keypoints is not None and len(keypoints):
        ax.scatter(keypoints.xy[:, 0], keypoints.xy[:, 1], s=8, c="white", edgecolors="black", linewidths=0.5)
    ax.set_xlim(0, w0)
    ax.set_ylim(h0, 0)
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    return ax
