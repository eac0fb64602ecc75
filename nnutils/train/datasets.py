"""``tf.data`` pipelines of image pairs and triplets, for end-to-end training on a GPU.

They decode in parallel (with the robust reader), cache, augment in-graph
(:func:`augmentation`) and prefetch. The notebooks train on cached features instead
(:mod:`nnutils.train.features`); these pipelines are for training the whole backbone.
"""
from __future__ import annotations

import numpy as np


def augmentation(size: int, seed: int = 0):
    """In-graph augmentation for [0, 255] images: flip, zoom, small rotation, brightness, contrast, shift.

    The re-posting distortions that matter most (borders, crops, resizing, recompression)
    are already in the data; these add the photometric and geometric jitter.
    """
    import keras
    return keras.Sequential([
        keras.layers.RandomFlip("horizontal", seed=seed),
        keras.layers.RandomZoom((-0.15, 0.1), seed=seed),
        keras.layers.RandomRotation(0.015, seed=seed),
        keras.layers.RandomTranslation(0.05, 0.05, seed=seed),
        keras.layers.RandomBrightness(0.15, value_range=(0, 255), seed=seed),
        keras.layers.RandomContrast(0.2, seed=seed),
    ], name="augmentation")


def _decode_op(size: int):
    import tensorflow as tf

    from nnutils.train.features import load_square

    def read(path):
        arr = load_square(path.numpy().decode() if hasattr(path, "numpy") else path.decode(), size)
        return np.zeros((size, size, 3), np.float32) if arr is None else arr

    def op(path):
        img = tf.numpy_function(lambda p: read(p), [path], tf.float32)
        img.set_shape((size, size, 3))
        return img
    return op


def _finish(ds, n: int, batch_size: int, shuffle: bool, seed: int, cache: bool):
    import tensorflow as tf
    if cache:
        ds = ds.cache()
    if shuffle:
        ds = ds.shuffle(min(n, 4096), seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def image_pair_dataset(paths1, paths2, labels, size: int, batch_size: int = 32, *, augment: bool = False,
                       shuffle: bool = False, seed: int = 0, cache: bool = True):
    """``((img1, img2), label)`` batches; images float32 (B, size, size, 3) in [0, 255]."""
    import tensorflow as tf
    decode = _decode_op(size)
    aug = augmentation(size, seed) if augment else None
    ds = tf.data.Dataset.from_tensor_slices((list(paths1), list(paths2), np.asarray(labels, "float32")))
    ds = ds.map(lambda a, b, y: ((decode(a), decode(b)), y), num_parallel_calls=tf.data.AUTOTUNE)
    ds = _finish(ds, len(labels), batch_size, shuffle, seed, cache)
    if aug is not None:
        ds = ds.map(lambda x, y: ((aug(x[0], training=True), aug(x[1], training=True)), y),
                    num_parallel_calls=tf.data.AUTOTUNE)
    return ds


def image_triplet_dataset(anchors, positives, negatives, size: int, batch_size: int = 32, *,
                          augment: bool = False, shuffle: bool = False, seed: int = 0, cache: bool = True):
    """``((anchor, positive, negative), dummy)`` batches for a triplet model; images as above."""
    import tensorflow as tf
    decode = _decode_op(size)
    aug = augmentation(size, seed) if augment else None
    n = len(anchors)
    ds = tf.data.Dataset.from_tensor_slices((list(anchors), list(positives), list(negatives)))
    ds = ds.map(lambda a, p, q: ((decode(a), decode(p), decode(q)), 0.0), num_parallel_calls=tf.data.AUTOTUNE)
    ds = _finish(ds, n, batch_size, shuffle, seed, cache)
    if aug is not None:
        ds = ds.map(lambda x, y: (tuple(aug(t, training=True) for t in x), y), num_parallel_calls=tf.data.AUTOTUNE)
    return ds
