"""Losses on cosine similarity for near-duplicate matching, written in ``keras.ops`` only.

tensorflow-addons (``tfa.losses.TripletSemiHardLoss`` & co.) is unmaintained; everything
here is plain ``keras.ops`` so it runs on any Keras 3 backend (TensorFlow, JAX, PyTorch).

Conventions
-----------
* Embeddings are vectors of shape ``(B, D)``; they are meant to be L2-normalised, but every
  function normalises them again (defensively, see *Epsilon handling*), so unnormalised
  inputs give the same result as their normalised versions.
* The score of a pair is the **cosine similarity** ``s = <a, b> / (|a| |b|)`` in ``[-1, 1]``.
* The **cosine distance** is ``d = 1 - s`` in ``[0, 2]`` (0: same direction, 1: orthogonal,
  2: opposite). Triplet margins are in these units: ``margin=0.2`` asks the negative to be
  0.2 further (in cosine distance) from the anchor than the positive.
* The original team's "cosine similarity normalised to [0, 1]" is
  :func:`similarity_to_probability`, ``p = (s + 1) / 2``.

Epsilon handling
----------------
* L2 normalisation is ``x * rsqrt(max(|x|^2, NORM_EPSILON))`` with ``NORM_EPSILON = 1e-12``
  (as ``tf.math.l2_normalize``): a norm below ``1e-6`` is treated as ``1e-6``, so an all-zero
  vector gives similarity 0 with everything and finite gradients (``keras.ops.normalize``
  uses ``rsqrt`` of the raw sum, whose gradient at 0 is not finite, hence not used).
* Similarities are **not** clipped to ``[-1, 1]``: float32 rounding can put them ~1e-7
  outside the range, which is harmless here (no ``sqrt``/``arccos`` is taken of them) and
  clipping would zero the gradient of exactly-collapsed pairs.
* :func:`siamese_bce` clips the probability ``p`` to ``[epsilon, 1 - epsilon]``
  (``epsilon=1e-7``, ``keras.backend.epsilon()``), as Keras' own binary cross-entropy does:
  the loss is bounded by ``-log(1e-7) ~= 16.12`` and its gradient is zero in the saturated
  region ``|s| > 1 - 2 * epsilon``. ``1 - p`` is computed as ``(1 - s) / 2`` (then clipped),
  not as ``1 - p``, so the bound is symmetric in float32 (``s = 1``, label 0 costs exactly
  ``-log(epsilon)``, like ``s = -1``, label 1).
* Mining losses select masked minima/maxima with finite sentinels (distances are in
  ``[0, 2]``), never ``inf``, and divide by ``max(count, 1)``, so a batch without a single
  valid triplet gives loss 0 and finite (zero) gradients instead of NaN.

Labels for the mining losses are integer group ids of shape ``(B,)`` (or ``(B, 1)``).
``keras.losses.Loss.__call__`` casts ``y_true`` to the loss dtype (float32), which is
exact for ids below ``2**24``; :func:`nnutils.data.groups.group_ids` numbers groups 0..N-1.
"""

from __future__ import annotations

import keras
from keras import ops

__all__ = [
    "NORM_EPSILON",
    "l2_normalize",
    "cosine_similarity",
    "pairwise_cosine_similarity",
    "pairwise_cosine_distance",
    "similarity_to_probability",
    "siamese_bce",
    "triplet_cosine",
    "batch_hard_triplet_loss",
    "batch_semi_hard_triplet_loss",
    "triplet_fraction_positive",
    "SiameseBCE",
    "TripletCosineLoss",
    "BatchHardTripletLoss",
    "SemiHardTripletLoss",
]

NORM_EPSILON = 1e-12
"""Floor of the *squared* L2 norm in :func:`l2_normalize` (norm floor ``1e-6``)."""

# Sentinels for masked min/max over cosine distances, which lie in [0, 2].
_BELOW_ANY_DISTANCE = -1.0
_ABOVE_ANY_DISTANCE = 3.0


# --------------------------------------------------------------------------- similarity


def _as_float(x):
    x = ops.convert_to_tensor(x)
    if not keras.backend.is_float_dtype(x.dtype):
        x = ops.cast(x, keras.backend.floatx())
    return x


def l2_normalize(x, axis=-1):
    """L2-normalise ``x`` along ``axis``: ``x * rsqrt(max(sum(x**2), NORM_EPSILON))``.

    Vectors with norm below ``1e-6`` are divided by ``1e-6`` (an all-zero vector stays zero,
    with a finite gradient).

    Parameters
    ----------
    x : tensor or array-like
        Any shape (cast to a float dtype).
    axis : int, default -1
        The axis normalised.

    Returns
    -------
    tensor
        Same shape as ``x``, float dtype.
    """
    x = _as_float(x)
    square_sum = ops.sum(ops.square(x), axis=axis, keepdims=True)
    return x * ops.rsqrt(ops.maximum(square_sum, NORM_EPSILON))


def cosine_similarity(a, b):
    """Rowwise cosine similarity of ``a`` and ``b``.

    Parameters
    ----------
    a, b : tensor, shape (B, D)
        Embeddings (normalised or not).

    Returns
    -------
    tensor of float, shape (B,)
        ``s[i] = cos(a[i], b[i])`` in [-1, 1] (up to float rounding, not clipped).
    """
    return ops.sum(l2_normalize(a) * l2_normalize(b), axis=-1)


def pairwise_cosine_similarity(x):
    """All-pairs cosine similarity of a batch.

    Parameters
    ----------
    x : tensor, shape (B, D)
        Embeddings (normalised or not).

    Returns
    -------
    tensor of float, shape (B, B)
        ``S[i, j] = cos(x[i], x[j])`` in [-1, 1]; symmetric, with diagonal 1 (0 for an
        all-zero row).
    """
    xn = l2_normalize(x)
    return ops.matmul(xn, ops.transpose(xn))


def pairwise_cosine_distance(x):
    """All-pairs cosine distance ``1 - S`` of a batch.

    Parameters
    ----------
    x : tensor, shape (B, D)
        Embeddings (normalised or not).

    Returns
    -------
    tensor of float, shape (B, B)
        ``1 - cos(x[i], x[j])`` in [0, 2]; diagonal 0 (1 for an all-zero row).
    """
    return 1.0 - pairwise_cosine_similarity(x)


def similarity_to_probability(s):
    """Map cosine similarity ``s`` in ``[-1, 1]`` to ``p = (s + 1) / 2`` in ``[0, 1]``.

    The original team's "cosine similarity normalised to [0, 1]".

    Parameters
    ----------
    s : tensor or array-like
        Any shape.

    Returns
    -------
    tensor
        Same shape, float dtype.
    """
    return (_as_float(s) + 1.0) / 2.0


# --------------------------------------------------------------------------- siamese BCE


def _flat(x):
    return ops.reshape(x, (-1,))


def _siamese_bce_terms(y_true, s, epsilon=1e-7):
    s = _flat(_as_float(s))
    y = ops.cast(_flat(ops.convert_to_tensor(y_true)), s.dtype)
    # p = (1 + s) / 2 and 1 - p = (1 - s) / 2 are each computed from s and clipped to
    # [eps, 1 - eps]: same values as clipping p, but 1 - p keeps float32 precision near
    # s = 1 (1 - float32(1 - 1e-7) is 1.19e-7, not 1e-7), so s = 1 with label 0 costs
    # exactly -log(eps), like s = -1 with label 1.
    p = ops.clip((1.0 + s) / 2.0, epsilon, 1.0 - epsilon)
    q = ops.clip((1.0 - s) / 2.0, epsilon, 1.0 - epsilon)
    return -(y * ops.log(p) + (1.0 - y) * ops.log(q))


def siamese_bce(y_true, s, epsilon=1e-7):
    """Binary cross-entropy of pair labels against the similarity mapped to ``[0, 1]``.

    ``loss = mean_i -[y_i log p_i + (1 - y_i) log(1 - p_i)]`` with
    ``p = clip((s + 1) / 2, epsilon, 1 - epsilon)``.

    Parameters
    ----------
    y_true : tensor, shape (B,) or (B, 1)
        Labels, 1 = same photo, 0 = different.
    s : tensor, shape (B,) or (B, 1)
        Cosine similarities in [-1, 1].
    epsilon : float, default 1e-7
        Probability clip; bounds the per-pair loss by ``-log(epsilon)`` (16.12 nats for the
        default).

    Returns
    -------
    tensor, scalar
        Mean loss in nats, in ``[0, -log(epsilon)]``. ``s = 0`` gives ``log 2`` whatever the
        label; ``s = 1`` gives ~0 for label 1 and ``-log(epsilon)`` for label 0.
    """
    return ops.mean(_siamese_bce_terms(y_true, s, epsilon))


@keras.saving.register_keras_serializable(package="nnutils")
class SiameseBCE(keras.losses.Loss):
    """:func:`siamese_bce` as a Keras loss.

    ``y_true``: ``(B,)`` labels in {0, 1}; ``y_pred``: ``(B,)`` or ``(B, 1)`` cosine
    similarities in ``[-1, 1]`` (e.g. the output of a siamese head computing
    :func:`cosine_similarity` of the two towers). ``call`` returns per-pair losses ``(B,)``,
    so ``sample_weight`` and ``reduction`` work as for any Keras loss.

    Parameters
    ----------
    epsilon : float, default 1e-7
        Probability clip (:func:`siamese_bce`).
    name : str, default "siamese_bce"
    reduction : str, default "sum_over_batch_size"
        Keras loss reduction.
    **kwargs
        Passed to ``keras.losses.Loss``.
    """

    def __init__(self, epsilon=1e-7, name="siamese_bce", reduction="sum_over_batch_size", **kwargs):
        super().__init__(name=name, reduction=reduction, **kwargs)
        self.epsilon = float(epsilon)

    def call(self, y_true, y_pred):
        """Per-pair binary cross-entropy.

        Parameters
        ----------
        y_true : tensor, shape (B,) or (B, 1)
            Labels in {0, 1}.
        y_pred : tensor, shape (B,) or (B, 1)
            Cosine similarities in [-1, 1].

        Returns
        -------
        tensor, shape (B,)
            Losses in nats, in ``[0, -log(epsilon)]``.
        """
        return _siamese_bce_terms(y_true, y_pred, self.epsilon)

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon}


# --------------------------------------------------------------------------- offline triplets


def _triplet_cosine_terms(anchor, positive, negative, margin):
    d_ap = 1.0 - cosine_similarity(anchor, positive)
    d_an = 1.0 - cosine_similarity(anchor, negative)
    return ops.relu(d_ap - d_an + margin)


def triplet_cosine(anchor, positive, negative, margin=0.2):
    """Standard triplet loss on cosine distance, for pre-formed triplets.

    ``loss = mean_i max(d(a_i, p_i) - d(a_i, n_i) + margin, 0)`` with ``d = 1 - cos``.

    Note: the original team's code computed ``max(pos + neg + alpha, 0)``, which *adds*
    the negative distance and so rewards pulling negatives closer; it is wrong. This is the
    standard FaceNet form (Schroff et al. 2015), which is zero once the negative is at least
    ``margin`` further from the anchor than the positive.

    Parameters
    ----------
    anchor, positive, negative : tensor, shape (B, D)
        Embeddings (normalised or not).
    margin : float, default 0.2
        In cosine-distance units (distances lie in [0, 2]).

    Returns
    -------
    tensor, scalar
        Mean loss in ``[0, 2 + margin]``.
    """
    return ops.mean(_triplet_cosine_terms(anchor, positive, negative, margin))


@keras.saving.register_keras_serializable(package="nnutils")
class TripletCosineLoss(keras.losses.Loss):
    """:func:`triplet_cosine` as a Keras loss for a model that embeds whole triplets.

    Convention: ``y_pred`` is the stacked embeddings of shape ``(B, 3, D)`` with
    ``y_pred[:, 0] = anchor``, ``y_pred[:, 1] = positive``, ``y_pred[:, 2] = negative``
    (e.g. ``ops.stack([emb(a), emb(p), emb(n)], axis=1)``). ``y_true`` is ignored (pass
    zeros of shape ``(B,)``). ``call`` returns per-triplet losses ``(B,)``.

    Parameters
    ----------
    margin : float, default 0.2
        In cosine-distance units.
    name : str, default "triplet_cosine"
    reduction : str, default "sum_over_batch_size"
        Keras loss reduction.
    **kwargs
        Passed to ``keras.losses.Loss``.
    """

    def __init__(self, margin=0.2, name="triplet_cosine", reduction="sum_over_batch_size", **kwargs):
        super().__init__(name=name, reduction=reduction, **kwargs)
        self.margin = float(margin)

    def call(self, y_true, y_pred):
        """Per-triplet hinge losses.

        Parameters
        ----------
        y_true : tensor
            Ignored.
        y_pred : tensor, shape (B, 3, D)
            Stacked anchor, positive and negative embeddings.

        Returns
        -------
        tensor, shape (B,)
            ``max(d(a, p) - d(a, n) + margin, 0)``, in ``[0, 2 + margin]``.
        """
        return _triplet_cosine_terms(y_pred[:, 0], y_pred[:, 1], y_pred[:, 2], self.margin)

    def get_config(self):
        return {**super().get_config(), "margin": self.margin}


# --------------------------------------------------------------------------- online mining


def _masks(labels, n_ref):
    """Boolean ``(B, B)`` masks: positives (same label, not self) and negatives (other label)."""
    labels = _flat(ops.convert_to_tensor(labels))
    same = ops.equal(ops.expand_dims(labels, 1), ops.expand_dims(labels, 0))
    idx = ops.arange(ops.shape(n_ref)[0])
    eye = ops.equal(ops.expand_dims(idx, 1), ops.expand_dims(idx, 0))
    return ops.logical_and(same, ops.logical_not(eye)), ops.logical_not(same)


def _safe_mean(values, mask):
    """Mean of ``values`` over ``mask`` (same shape); 0 when the mask is empty."""
    mask_f = ops.cast(mask, values.dtype)
    total = ops.sum(ops.where(mask, values, ops.zeros_like(values)))
    return total / ops.maximum(ops.sum(mask_f), 1.0)


def batch_hard_triplet_loss(labels, embeddings, margin=0.2):
    """Batch-hard triplet loss on cosine distance (Hermans et al. 2017, "In defense of the triplet loss").

    For each anchor ``a``: hardest positive ``max_{p: y_p = y_a, p != a} d(a, p)``, hardest
    negative ``min_{n: y_n != y_a} d(a, n)``, term ``max(d_ap - d_an + margin, 0)``.

    Parameters
    ----------
    labels : tensor of int, shape (B,)
        Group ids (equal = same photo).
    embeddings : tensor, shape (B, D)
        Embeddings (normalised or not).
    margin : float, default 0.2
        In cosine-distance units (``d = 1 - cos`` in [0, 2]).

    Returns
    -------
    tensor, scalar
        Mean of the terms over anchors that have at least one positive and one negative in
        the batch (other anchors are excluded from the mean, not counted as 0); 0 (with zero,
        finite gradients) if no anchor is valid, e.g. all labels equal or all distinct.
    """
    dist = pairwise_cosine_distance(embeddings)
    pos, neg = _masks(labels, dist)
    hardest_pos = ops.max(ops.where(pos, dist, _BELOW_ANY_DISTANCE), axis=1)
    hardest_neg = ops.min(ops.where(neg, dist, _ABOVE_ANY_DISTANCE), axis=1)
    terms = ops.relu(hardest_pos - hardest_neg + margin)
    valid = ops.logical_and(ops.any(pos, axis=1), ops.any(neg, axis=1))
    return _safe_mean(terms, valid)


def batch_semi_hard_triplet_loss(labels, embeddings, margin=0.2):
    """Semi-hard triplet loss on cosine distance (FaceNet; ``tfa.losses.TripletSemiHardLoss``).

    For every anchor-positive pair ``(a, p)`` (same label, ``p != a``) the negative is the
    *semi-hard* one: the smallest ``d(a, n)`` with ``d(a, n) > d(a, p)`` (strictly, as in
    tfa). If no negative is further than the positive, tfa's fallback is used: the negative
    with the *largest* ``d(a, n)``. Term: ``max(d_ap - d_an + margin, 0)``.

    Differences from tfa: cosine distance ``1 - cos`` instead of squared Euclidean; pairs
    whose anchor has no negative in the batch are excluded (tfa would compare them with a
    distance-0 "negative"); a batch without any valid pair returns 0 instead of NaN.
    Memory is ``O(B**3)`` booleans/floats (B=256: 16.8M elements).

    Parameters
    ----------
    labels : tensor of int, shape (B,)
        Group ids (equal = same photo).
    embeddings : tensor, shape (B, D)
        Embeddings (normalised or not).
    margin : float, default 0.2
        In cosine-distance units (``d = 1 - cos`` in [0, 2]).

    Returns
    -------
    tensor, scalar
        Mean of the terms over valid ``(a, p)`` pairs (0 if there is none).
    """
    dist = pairwise_cosine_distance(embeddings)
    pos, neg = _masks(labels, dist)
    d_ap = ops.expand_dims(dist, 2)  # [a, p, 1]
    d_an = ops.expand_dims(dist, 1)  # [a, 1, n]
    # semi[a, p, n]: n is a negative of a and further from a than p is
    semi = ops.logical_and(ops.expand_dims(neg, 1), ops.greater(d_an, d_ap))
    d_an_b = d_an + ops.zeros_like(d_ap)  # broadcast to [a, p, n]
    semi_hard = ops.min(ops.where(semi, d_an_b, _ABOVE_ANY_DISTANCE), axis=2)  # [a, p]
    easiest = ops.max(ops.where(neg, dist, _BELOW_ANY_DISTANCE), axis=1, keepdims=True)  # [a, 1]
    chosen = ops.where(ops.any(semi, axis=2), semi_hard, easiest)
    terms = ops.relu(dist - chosen + margin)
    valid = ops.logical_and(pos, ops.any(neg, axis=1, keepdims=True))
    return _safe_mean(terms, valid)


def triplet_fraction_positive(labels, embeddings, margin=0.2):
    """Share of all valid batch triplets that still violate the margin (a training metric).

    Valid triplet: ``(a, p, n)`` with ``y_p = y_a``, ``p != a``, ``y_n != y_a``. Falling
    towards 0 means mining finds fewer informative triplets.

    Parameters
    ----------
    labels : tensor of int, shape (B,)
        Group ids (equal = same photo).
    embeddings : tensor, shape (B, D)
        Embeddings (normalised or not).
    margin : float, default 0.2
        In cosine-distance units (``d = 1 - cos`` in [0, 2]).

    Returns
    -------
    tensor, scalar
        The fraction in [0, 1] with ``d(a, p) - d(a, n) + margin > 0``; 0 if the batch has no
        valid triplet.
    """
    dist = pairwise_cosine_distance(embeddings)
    pos, neg = _masks(labels, dist)
    valid = ops.logical_and(ops.expand_dims(pos, 2), ops.expand_dims(neg, 1))  # [a, p, n]
    violating = ops.greater(ops.expand_dims(dist, 2) - ops.expand_dims(dist, 1) + margin, 0.0)
    hits = ops.sum(ops.cast(ops.logical_and(valid, violating), dist.dtype))
    return hits / ops.maximum(ops.sum(ops.cast(valid, dist.dtype)), 1.0)


class _MiningLoss(keras.losses.Loss):
    """Base for losses that mine triplets inside a batch: ``y_true`` labels ``(B,)``,
    ``y_pred`` embeddings ``(B, D)``; ``call`` returns the scalar batch loss, so
    ``sample_weight`` is not meaningful (do not pass one)."""

    _fn = None

    def __init__(self, margin=0.2, name=None, reduction="sum_over_batch_size", **kwargs):
        super().__init__(name=name, reduction=reduction, **kwargs)
        self.margin = float(margin)

    def call(self, y_true, y_pred):
        return type(self)._fn(y_true, y_pred, self.margin)

    def get_config(self):
        return {**super().get_config(), "margin": self.margin}


@keras.saving.register_keras_serializable(package="nnutils")
class BatchHardTripletLoss(_MiningLoss):
    """:func:`batch_hard_triplet_loss` as a Keras loss.

    ``y_true``: labels ``(B,)``; ``y_pred``: embeddings ``(B, D)``; the loss is one scalar
    per batch, so ``sample_weight`` is not meaningful.

    Parameters
    ----------
    margin : float, default 0.2
        In cosine-distance units.
    name : str, default "batch_hard_triplet"
    reduction : str, default "sum_over_batch_size"
        Keras loss reduction.
    **kwargs
        Passed to ``keras.losses.Loss``.
    """

    _fn = staticmethod(batch_hard_triplet_loss)

    def __init__(self, margin=0.2, name="batch_hard_triplet", reduction="sum_over_batch_size", **kwargs):
        super().__init__(margin=margin, name=name, reduction=reduction, **kwargs)


@keras.saving.register_keras_serializable(package="nnutils")
class SemiHardTripletLoss(_MiningLoss):
    """:func:`batch_semi_hard_triplet_loss` as a Keras loss.

    ``y_true``: labels ``(B,)``; ``y_pred``: embeddings ``(B, D)``; scalar per batch.
    Drop-in for ``tfa.losses.TripletSemiHardLoss`` with cosine instead of squared Euclidean
    distance.

    Parameters
    ----------
    margin : float, default 0.2
        In cosine-distance units.
    name : str, default "semi_hard_triplet"
    reduction : str, default "sum_over_batch_size"
        Keras loss reduction.
    **kwargs
        Passed to ``keras.losses.Loss``.
    """

    _fn = staticmethod(batch_semi_hard_triplet_loss)

    def __init__(self, margin=0.2, name="semi_hard_triplet", reduction="sum_over_batch_size", **kwargs):
        super().__init__(margin=margin, name=name, reduction=reduction, **kwargs)
