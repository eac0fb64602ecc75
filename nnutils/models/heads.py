"""Embedding models: backbone → pooling → two dense layers with batch norm → L2-normalised embedding.

The score of a pair is the cosine similarity of its two embeddings (a dot product, since
they are unit vectors). Everything is built from serialisable Keras 3 layers, so a model
saves as one ``.keras`` file and loads without custom code.

CPU-aware training splits a model in two: a frozen **trunk** (the backbone up to some
layer) whose outputs are computed once and cached (:mod:`nnutils.features`), and a
trainable **top** (the rest of the backbone, if any, plus pooling and head) trained on
those cached tensors. :func:`build_embedder` joins them back into one image → embedding
model for prediction.
"""
from __future__ import annotations

import keras
import numpy as np
from keras import layers, ops

__all__ = ["GeMPooling2D", "RMACPooling2D", "GridPooling2D", "L2Normalize", "CosineSimilarity", "make_pooling", "build_head",
           "build_raw_top", "build_top", "build_embedder", "build_pair_model", "build_triplet_model", "split_backbone"]


@keras.saving.register_keras_serializable(package="nnutils")
class GeMPooling2D(layers.Layer):
    """Generalised-mean pooling: ``(mean(x^p))^(1/p)`` over H, W; (B, H, W, C) → (B, C).

    ``p = 1`` is average pooling and ``p → ∞`` max pooling; ``p = 3`` (learnable) is the
    usual choice for instance retrieval (Radenović et al., 2018). Inputs are clipped at
    ``eps`` because ReLU feature maps are non-negative but may be exactly zero.

    Parameters
    ----------
    p : float, default 3.0
        Initial exponent; used as ``max(p, 1)``.
    trainable_p : bool, default True
        Whether ``p`` is learnt.
    eps : float, default 1e-6
        Lower clip of the inputs.
    **kw
        Passed to ``keras.layers.Layer``.
    """

    def __init__(self, p: float = 3.0, trainable_p: bool = True, eps: float = 1e-6, **kw):
        super().__init__(**kw)
        self.p_init, self.trainable_p, self.eps = float(p), bool(trainable_p), float(eps)

    def build(self, input_shape):
        self.p = self.add_weight(name="p", shape=(), initializer=keras.initializers.Constant(self.p_init),
                                 trainable=self.trainable_p)

    def call(self, x):
        """Pool each channel over H, W.

        Parameters
        ----------
        x : tensor, shape (B, H, W, C)
            Feature maps (cast to float32).

        Returns
        -------
        tensor of float32, shape (B, C)
            The generalised means (not normalised).
        """
        p = ops.maximum(self.p, 1.0)
        x = ops.maximum(ops.cast(x, "float32"), self.eps)
        return ops.power(ops.mean(ops.power(x, p), axis=(1, 2)), 1.0 / p)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1])

    def get_config(self):
        return {**super().get_config(), "p": self.p_init, "trainable_p": self.trainable_p, "eps": self.eps}


@keras.saving.register_keras_serializable(package="nnutils")
class RMACPooling2D(layers.Layer):
    """Regional maximum activations of convolutions (Tolias et al., 2016); (B, H, W, C) → (B, C).

    Max-pools square regions on ``levels`` scales (1 region covering the map, then grids
    of 2×2, 3×3, … with overlap), L2-normalises each regional vector, sums them and
    L2-normalises the sum. Regions are fixed by the map size, so the input's spatial
    size must be known when the layer is built.

    Parameters
    ----------
    levels : int, default 3
        Number of region scales.
    **kw
        Passed to ``keras.layers.Layer``.
    """

    def __init__(self, levels: int = 3, **kw):
        super().__init__(**kw)
        self.levels = int(levels)

    def build(self, input_shape):
        h, w = int(input_shape[1]), int(input_shape[2])
        self.regions = []
        for level in range(1, self.levels + 1):
            size = max(1, int(round(2 * min(h, w) / (level + 1))))
            steps = level
            ys = [0] if h == size else [round(i * (h - size) / max(1, steps - 1)) for i in range(steps)]
            xs = [0] if w == size else [round(i * (w - size) / max(1, steps - 1)) for i in range(steps)]
            for y in sorted(set(ys)):
                for x in sorted(set(xs)):
                    self.regions.append((y, x, size))

    def call(self, x):
        """Sum the L2-normalised regional maxima.

        Parameters
        ----------
        x : tensor, shape (B, H, W, C)
            Feature maps (cast to float32).

        Returns
        -------
        tensor of float32, shape (B, C)
            Unit-norm vectors.
        """
        x = ops.cast(x, "float32")
        total = 0.0
        for y, x0, size in self.regions:
            r = ops.max(x[:, y:y + size, x0:x0 + size, :], axis=(1, 2))
            total = total + r / (ops.norm(r, axis=-1, keepdims=True) + 1e-6)
        return total / (ops.norm(total, axis=-1, keepdims=True) + 1e-6)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1])

    def get_config(self):
        return {**super().get_config(), "levels": self.levels}


@keras.saving.register_keras_serializable(package="nnutils")
class GridPooling2D(layers.Layer):
    """Spatial-pyramid pooling that keeps layout: (B, H, W, C) → (B, sum(g² for g in levels) · C).

    For each level ``g`` the map is cut into a g×g grid of equal cells that partition it
    exactly (a row or column on a cell boundary counts for both cells by area, so odd map
    sizes work), each cell is average- or GeM-pooled, and the cell vectors are
    L2-normalised and concatenated. Global pooling cannot tell two crops of one photo
    apart (same content, other layout); a near-duplicate keeps its layout, so a coarse grid
    separates them while staying robust to ~20 % crops, borders and shifts.

    Parameters
    ----------
    levels : tuple of int, default (2,)
        Grid sizes g.
    mode : {"avg", "gem"}, default "avg"
        Cell pooling: average, or GeM with a fixed p = 3.
    **kw
        Passed to ``keras.layers.Layer``.

    Raises
    ------
    ValueError
        For another ``mode``.
    """

    def __init__(self, levels: tuple = (2,), mode: str = "avg", **kw):
        super().__init__(**kw)
        self.levels = tuple(int(g) for g in levels)
        if mode not in ("avg", "gem"):
            raise ValueError(f"mode must be 'avg' or 'gem', got {mode!r}")
        self.mode = mode

    @staticmethod
    def _weights_1d(n: int, g: int) -> np.ndarray:
        """(g, n) overlap of g equal cells of [0, n) with the n unit pixels (rows sum to n/g)."""
        w = np.zeros((g, n), "float32")
        for i in range(g):
            lo, hi = i * n / g, (i + 1) * n / g
            for r in range(n):
                w[i, r] = max(0.0, min(hi, r + 1) - max(lo, r))
        return w / w.sum(axis=1, keepdims=True)

    def build(self, input_shape):
        h, w = int(input_shape[1]), int(input_shape[2])
        # cells partition the map exactly: a boundary row/column is shared by area
        mats = [np.einsum("ih,jw->ijhw", self._weights_1d(h, g), self._weights_1d(w, g)).reshape(g * g, h, w)
                for g in self.levels]
        self.cell_weights = np.concatenate(mats, axis=0)  # (cells, H, W), each cell sums to 1

    def call(self, x):
        """Pool every grid cell and concatenate the normalised cell vectors.

        Parameters
        ----------
        x : tensor, shape (B, H, W, C)
            Feature maps (cast to float32).

        Returns
        -------
        tensor of float32, shape (B, K · C)
            K = sum of g² over ``levels``; each C-block has unit norm (cells in level order, row-major).
        """
        x = ops.cast(x, "float32")
        if self.mode == "gem":
            x = ops.power(ops.maximum(x, 1e-6), 3.0)
        v = ops.einsum("bhwc,khw->bkc", x, ops.convert_to_tensor(self.cell_weights))
        if self.mode == "gem":
            v = ops.power(v, 1.0 / 3.0)
        v = v / (ops.norm(v, axis=-1, keepdims=True) + 1e-6)
        return ops.reshape(v, (-1, self.cell_weights.shape[0] * v.shape[-1]))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], sum(g * g for g in self.levels) * input_shape[-1])

    def get_config(self):
        return {**super().get_config(), "levels": list(self.levels), "mode": self.mode}


@keras.saving.register_keras_serializable(package="nnutils")
class L2Normalize(layers.Layer):
    """Scale each row to unit L2 norm; (B, D) → (B, D)."""

    def call(self, x):
        """Divide each row by its L2 norm (at least 1e-6).

        Parameters
        ----------
        x : tensor, shape (B, D)

        Returns
        -------
        tensor of float32, shape (B, D)
            Unit-norm rows (an all-zero row stays zero).
        """
        x = ops.cast(x, "float32")
        return x / ops.sqrt(ops.maximum(ops.sum(ops.square(x), axis=-1, keepdims=True), 1e-12))


@keras.saving.register_keras_serializable(package="nnutils")
class CosineSimilarity(layers.Layer):
    """Row-wise cosine similarity of two batches of unit vectors; [(B, D), (B, D)] → (B,)."""

    def call(self, inputs):
        """Row-wise dot product of two batches of unit vectors.

        Parameters
        ----------
        inputs : list of two tensors, each (B, D)
            L2-normalised embeddings.

        Returns
        -------
        tensor, shape (B,)
            Cosine in [-1, 1].
        """
        a, b = inputs
        return ops.sum(a * b, axis=-1)


def make_pooling(pooling: str, name: str = "pool") -> layers.Layer:
    """A pooling layer by name.

    Parameters
    ----------
    pooling : str
        ``"gap"`` global average; ``"gem"`` generalised mean (learnable p); ``"rmac"``;
        ``"grid2"`` / ``"grid3"`` a 2×2 / 3×3 grid of average-pooled cells; ``"pyramid"``
        levels 1 + 2 (global + 2×2); suffix ``"-gem"`` (e.g. ``"grid2-gem"``) GeM cells.
    name : str, default "pool"
        The layer's name.

    Returns
    -------
    keras.layers.Layer
        (B, H, W, C) → (B, C), or (B, K · C) for the grid kinds (:class:`GridPooling2D`).

    Raises
    ------
    ValueError
        For an unknown name.
    """
    base, _, mode = pooling.partition("-")
    if base in ("grid2", "grid3", "pyramid"):
        levels = {"grid2": (2,), "grid3": (3,), "pyramid": (1, 2)}[base]
        return GridPooling2D(levels, mode=mode or "avg", name=name)
    if pooling == "gap":
        return layers.GlobalAveragePooling2D(name=name)
    if pooling == "gem":
        return GeMPooling2D(name=name)
    if pooling == "rmac":
        return RMACPooling2D(name=name)
    raise ValueError(f"pooling must be gap, gem, rmac, grid2, grid3 or pyramid (grid ones optionally "
                     f"with -gem), got {pooling!r}")


def build_head(feature_shape: tuple, pooling: str = "gem", embedding_dim: int = 256,
               hidden_dim: int = 512, dropout: float = 0.1, name: str = "head") -> keras.Model:
    """Pooling → Dense(hidden) → BN → ReLU → Dropout → Dense(embedding_dim) → BN → L2.

    Parameters
    ----------
    feature_shape : tuple of int
        A feature map ``(h, w, C)`` (pooled here) or a vector ``(C,)`` (no pooling, e.g. a
        TF-Hub feature vector).
    pooling : str, default "gem"
        :func:`make_pooling` name.
    embedding_dim : int, default 256
        Output dimension D.
    hidden_dim : int, default 512
        Width of the hidden Dense layer.
    dropout : float, default 0.1
        Dropout rate after the ReLU; 0 leaves the layer out.
    name : str, default "head"
        Model name and layer-name prefix.

    Returns
    -------
    keras.Model
        (B, *feature_shape) → (B, embedding_dim) float32, unit norm.
    """
    inp = keras.Input(feature_shape, name=f"{name}_in")
    x = make_pooling(pooling, name=f"{name}_pool")(inp) if len(feature_shape) == 3 else inp
    x = layers.Dense(hidden_dim, use_bias=False, name=f"{name}_dense1")(x)
    x = layers.BatchNormalization(name=f"{name}_bn1")(x)
    x = layers.Activation("relu", name=f"{name}_relu")(x)
    if dropout:
        x = layers.Dropout(dropout, name=f"{name}_dropout")(x)
    x = layers.Dense(embedding_dim, use_bias=False, name=f"{name}_dense2")(x)
    x = layers.BatchNormalization(name=f"{name}_bn2")(x)
    out = L2Normalize(name="embedding")(x)
    return keras.Model(inp, out, name=name)


def split_backbone(backbone: keras.Model, at_layer: str | None) -> tuple[keras.Model, keras.Model | None]:
    """Cut a functional backbone into ``trunk`` (input → ``at_layer``) and ``rest`` (``at_layer`` → output).

    The cut must be a tensor that everything after it depends on alone (true between the
    blocks of every registry backbone). Both parts share their layers, and so their weights,
    with ``backbone``.

    Parameters
    ----------
    backbone : keras.Model
        A functional model.
    at_layer : str or None
        Name of the layer whose output is the cut; None does not cut.

    Returns
    -------
    trunk : keras.Model
        Input → ``at_layer``'s output (``backbone`` itself when ``at_layer`` is None).
    rest : keras.Model or None
        ``at_layer``'s output → the backbone's output; None when not cut.

    Raises
    ------
    ValueError
        When ``backbone`` has no layer ``at_layer`` (Keras' error).
    """
    if at_layer is None:
        return backbone, None
    cut = backbone.get_layer(at_layer).output
    trunk = keras.Model(backbone.input, cut, name=f"{backbone.name}_trunk")
    rest = keras.Model(cut, backbone.output, name=f"{backbone.name}_rest")
    return trunk, rest


def build_raw_top(feature_shape: tuple, pooling: str = "grid2", name: str = "raw_top") -> keras.Model:
    """No training: pooling → L2 normalisation. The pretrained-backbone baseline's "head".

    Parameters
    ----------
    feature_shape : tuple of int
        ``(h, w, C)`` feature maps (pooled) or ``(C,)`` vectors (normalised only).
    pooling : str, default "grid2"
        :func:`make_pooling` name.
    name : str, default "raw_top"
        Model name.

    Returns
    -------
    keras.Model
        (B, *feature_shape) → (B, D) float32 unit-norm embeddings (D = C, or K · C for grids).
    """
    inp = keras.Input(feature_shape, name="features")
    x = make_pooling(pooling, name="pool")(inp) if len(feature_shape) == 3 else inp
    return keras.Model(inp, L2Normalize(name="embedding")(x), name=name)


def build_top(rest: keras.Model | None, feature_shape: tuple, pooling: str = "gem", embedding_dim: int = 256,
              hidden_dim: int = 512, dropout: float = 0.1, name: str = "top") -> keras.Model:
    """The trainable part: ``rest`` of the backbone (optional) + :func:`build_head`; cached features → embedding.

    Parameters
    ----------
    rest : keras.Model or None
        The backbone after the cut (:func:`build_parts`), trained with the head; None when
        the whole backbone is frozen.
    feature_shape : tuple of int
        Shape of one cached feature (the trunk's output without the batch axis).
    pooling, embedding_dim, hidden_dim, dropout
        As in :func:`build_head`.
    name : str, default "top"
        Model name.

    Returns
    -------
    keras.Model
        (B, *feature_shape) → (B, embedding_dim) float32, unit norm.
    """
    inp = keras.Input(feature_shape, name="features")
    x = rest(inp) if rest is not None else inp
    head = build_head(tuple(x.shape[1:]), pooling, embedding_dim, hidden_dim, dropout)
    return keras.Model(inp, head(x), name=name)


def build_embedder(trunk: keras.Model, top: keras.Model, name: str = "embedder") -> keras.Model:
    """Join ``trunk`` and ``top`` into one image → embedding model.

    Parameters
    ----------
    trunk : keras.Model
        Images (B, H, W, 3) RGB in [0, 255] → features.
    top : keras.Model
        Features → embeddings (:func:`build_top` or :func:`build_raw_top`).
    name : str, default "embedder"
        Model name.

    Returns
    -------
    keras.Model
        (B, H, W, 3) → (B, D); layers and weights shared with ``trunk`` and ``top``.
    """
    inp = keras.Input(tuple(trunk.input.shape[1:]), name="image")
    return keras.Model(inp, top(trunk(inp)), name=name)


def build_pair_model(embedder: keras.Model, name: str = "siamese") -> keras.Model:
    """Two inputs shaped like ``embedder``'s input → cosine similarity through the shared embedder.

    Parameters
    ----------
    embedder : keras.Model
        Image → unit-norm embedding.
    name : str, default "siamese"
        Model name.

    Returns
    -------
    keras.Model
        Inputs ``[input_1, input_2]``, each (B, H, W, 3) → (B,) cosine in [-1, 1]
        (for :class:`~nnutils.models.losses.SiameseBCE`).
    """
    shape = tuple(embedder.input.shape[1:])
    a, b = keras.Input(shape, name="input_1"), keras.Input(shape, name="input_2")
    return keras.Model([a, b], CosineSimilarity(name="cosine")([embedder(a), embedder(b)]), name=name)


def build_triplet_model(embedder: keras.Model, name: str = "triplet") -> keras.Model:
    """Anchor, positive, negative inputs → stacked embeddings for ``TripletCosineLoss``.

    Parameters
    ----------
    embedder : keras.Model
        Image → embedding (shared by the three inputs).
    name : str, default "triplet"
        Model name.

    Returns
    -------
    keras.Model
        Inputs ``anchor, positive, negative``, each (B, H, W, 3) → (B, 3, D).
    """
    shape = tuple(embedder.input.shape[1:])
    ins = [keras.Input(shape, name=n) for n in ("anchor", "positive", "negative")]
    embs = [embedder(x) for x in ins]
    return keras.Model(ins, ops.stack(embs, axis=1), name=name)


def build_parts(backbone: str, image_size: int, trunk_layer: str | None = None, weights="imagenet",
                weights_dir=None):
    """Backbone cut into a frozen ``trunk`` and a trainable ``rest`` (None if ``trunk_layer`` is None).

    BatchNorm layers of ``rest`` stay frozen (inference mode), as Keras recommends for
    fine-tuning.

    Parameters
    ----------
    backbone : str
        Registry name (:func:`nnutils.models.backbones.list_backbones`).
    image_size : int
        Input side in pixels (square input).
    trunk_layer : str or None, default None
        None (the whole backbone is frozen), ``"last"`` (cut just before the backbone's last
        block(s), e.g. VGG16 ``block5_*``, Lite0 ``block6*``/``block7*``/``top_*``, which then
        train) or a layer name.
    weights : str or None, default "imagenet"
        Passed to :func:`~nnutils.models.backbones.build_backbone`.
    weights_dir : str or PathLike, optional
        Passed to :func:`~nnutils.models.backbones.build_backbone`.

    Returns
    -------
    trunk : keras.Model
        Images (B, S, S, 3) RGB in [0, 255] → features; not trainable.
    rest : keras.Model or None
        Features → the backbone's output, trainable except BatchNorm; None without a cut.

    Raises
    ------
    ValueError
        For an unknown backbone or layer name.
    WeightsNotFoundError
        When the pretrained weights cannot be found.
    """
    import keras

    from nnutils.models.backbones import build_backbone, get_spec
    bb = build_backbone(backbone, (image_size, image_size, 3), weights=weights, weights_dir=weights_dir)
    if trunk_layer == "last":
        prefixes = get_spec(backbone).finetune_prefixes
        first = next(lyr for lyr in bb.layers if any(lyr.name.startswith(p) for p in prefixes))
        cut = first.input
    elif trunk_layer:
        cut = bb.get_layer(trunk_layer).output
    else:
        cut = None
    if cut is None:
        trunk, rest = bb, None
    else:
        trunk = keras.Model(bb.input, cut, name=f"{bb.name}_trunk")
        rest = keras.Model(cut, bb.output, name=f"{bb.name}_rest")
    trunk.trainable = False
    if rest is not None:
        for lyr in rest.layers:
            lyr.trainable = not isinstance(lyr, keras.layers.BatchNormalization)
    return trunk, rest
