"""Training machinery shared by notebooks 03–06.

- :func:`set_seed` and :func:`get_strategy` (TPU, several GPUs, one GPU or CPU, picked
  automatically so one notebook runs on any Kaggle accelerator);
- :func:`callbacks`: resume after a kill (``BackupAndRestore``), ``TerminateOnNaN``,
  TensorBoard scalars and a CSV log per run; optimisers clip gradients (:func:`adam`);
- :func:`pk_indices`: batches of P groups × K images for online triplet mining;
- :func:`image_pair_dataset` / :func:`image_triplet_dataset`: ``tf.data`` pipelines that
  decode in parallel (with the robust reader), cache, augment in-graph and prefetch, for
  end-to-end training on a GPU;
- :func:`save_metrics` / :func:`read_metrics`: the machine-readable result of a notebook.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Sequence

import numpy as np

__all__ = ["set_seed", "get_strategy", "adam", "fingerprint", "callbacks", "pk_indices", "augmentation",
           "image_pair_dataset", "image_triplet_dataset", "save_metrics", "read_metrics", "Timer"]


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and the backend (``keras.utils.set_random_seed``)."""
    import keras
    keras.utils.set_random_seed(int(seed))


def get_strategy():
    """The ``tf.distribute`` strategy for the hardware present: TPU → GPUs (mirrored) → one GPU → CPU."""
    import tensorflow as tf
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    except (ValueError, tf.errors.NotFoundError, RuntimeError):
        pass
    gpus = tf.config.list_logical_devices("GPU")
    if len(gpus) > 1:
        return tf.distribute.MirroredStrategy()
    if len(gpus) == 1:
        return tf.distribute.OneDeviceStrategy("/gpu:0")
    return tf.distribute.get_strategy()  # the default strategy: CPU


def adam(learning_rate: float, clipnorm: float | None = 1.0):
    """Adam with gradient-norm clipping (the guard against the NaNs that cost other teams runs)."""
    import keras
    return keras.optimizers.Adam(learning_rate=learning_rate, clipnorm=clipnorm)


def fingerprint(model, **settings) -> str:
    """8 hex digits identifying a model's architecture and its training settings.

    The architecture is read from the shapes and trainability of its weights, not from
    layer names (Keras numbers unnamed layers per session, so names are not stable).
    """
    import hashlib
    arch = [(tuple(int(d) for d in w.shape), bool(w.trainable)) for w in model.weights]
    text = json.dumps([arch, settings], sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:8]


def callbacks(run_dir: str | Path, name: str, *, resume: bool = True, tensorboard: bool = True,
              fingerprint: str | None = None) -> list:
    """Callbacks for one training run ``name`` under ``run_dir``.

    - ``BackupAndRestore`` in ``checkpoints/<name>[-<fingerprint>]/``: if the process is
      killed, rerunning the same ``fit`` continues from the last finished epoch (the backup
      is deleted when training completes). Pass a :func:`fingerprint` of the model and its
      settings so that a rerun with *other* settings starts afresh instead of restoring an
      incompatible backup;
    - ``TerminateOnNaN``; ``CSVLogger`` to ``logs/<name>.csv``;
    - ``TensorBoard`` scalars to ``tensorboard/<name>/``.
    """
    import keras
    run_dir = Path(run_dir)
    cbs = [keras.callbacks.TerminateOnNaN()]
    if resume:
        folder = f"{name}-{fingerprint}" if fingerprint else name
        cbs.append(keras.callbacks.BackupAndRestore(str(run_dir / "checkpoints" / folder), delete_checkpoint=True))
    (run_dir / "logs").mkdir(parents=True, exist_ok=True)
    cbs.append(keras.callbacks.CSVLogger(str(run_dir / "logs" / f"{name}.csv"), append=resume))
    if tensorboard:
        cbs.append(keras.callbacks.TensorBoard(str(run_dir / "tensorboard" / name), write_graph=False,
                                               profile_batch=0))
    return cbs


def pk_indices(groups: Sequence[int], p: int, k: int, n_batches: int, seed: int = 0,
               confusers: dict | None = None) -> np.ndarray:
    """Row indices for ``n_batches`` batches of ``p`` groups × ``k`` rows each, flattened (n_batches·p·k,).

    Only groups with at least two rows are drawn (an anchor needs a positive); a group
    smaller than ``k`` is sampled with replacement. Feed the result to ``fit`` with
    ``batch_size = p * k`` and ``shuffle=False`` so each batch keeps its P×K structure.

    ``confusers`` maps a group to groups the model confuses it with (from mined hard
    negatives): then half of each batch's groups are seeds and the other half one of
    their confusers, so online mining meets those hard negatives inside the batch.
    """
    groups = np.asarray(groups)
    rng = np.random.default_rng(seed)
    members: dict[int, np.ndarray] = {}
    for g in np.unique(groups):
        idx = np.flatnonzero(groups == g)
        if len(idx) >= 2:
            members[int(g)] = idx
    keys = np.array(sorted(members))
    if len(keys) < 2:
        raise ValueError("online mining needs at least two groups with two or more images each")
    p = min(p, len(keys))
    out = []
    for _ in range(n_batches):
        chosen: list[int] = []
        for g in rng.permutation(keys):
            if len(chosen) >= p:
                break
            if int(g) in chosen:
                continue
            chosen.append(int(g))
            mates = [c for c in (confusers or {}).get(int(g), ()) if c in members and c not in chosen]
            if mates and len(chosen) < p:
                chosen.append(int(mates[int(rng.integers(len(mates)))]))
        for g in chosen:
            m = members[g]
            out.append(rng.choice(m, size=k, replace=len(m) < k))
    return np.concatenate(out)


# ----------------------------------------------------------------------------- tf.data
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
    from .features import load_square

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


# ----------------------------------------------------------------------------- results
class Timer:
    """``with Timer() as t: ...``; ``t.seconds`` afterwards."""

    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start


def save_metrics(run_dir: str | Path, notebook: str, **fields) -> Path:
    """Write ``<run_dir>/metrics/<notebook>.json`` (floats rounded to 5 digits) and return its path."""
    def clean(v):
        if isinstance(v, (float, np.floating)):
            return round(float(v), 5)
        if isinstance(v, (np.integer,)):
            return int(v)
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return v
    path = Path(run_dir) / "metrics" / f"{notebook}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(clean(dict(notebook=notebook, **fields)), indent=2))
    return path


def read_metrics(run_dir: str | Path):
    """All ``metrics/*.json`` of a run as a DataFrame, one row per notebook."""
    import pandas as pd
    rows = [json.loads(p.read_text()) for p in sorted((Path(run_dir) / "metrics").glob("*.json"))]
    return pd.json_normalize(rows)
