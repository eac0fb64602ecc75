"""The machinery every training run uses: seeds, the distribution strategy, the optimiser, callbacks.

- :func:`set_seed` and :func:`get_strategy` (TPU, several GPUs, one GPU or CPU, picked
  automatically so one notebook runs on any Kaggle accelerator);
- :func:`adam` (gradient-norm clipping) and :func:`callbacks`: resume after a kill
  (``BackupAndRestore``), ``TerminateOnNaN``, TensorBoard scalars and a CSV log per run,
  keyed by a :func:`fingerprint` of the model and its settings.
"""
from __future__ import annotations

import json
from pathlib import Path


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and the backend (``keras.utils.set_random_seed``).

    Parameters
    ----------
    seed : int
    """
    import keras
    keras.utils.set_random_seed(int(seed))


def get_strategy():
    """The ``tf.distribute`` strategy for the hardware present: TPU → GPUs (mirrored) → one GPU → CPU.

    Returns
    -------
    tf.distribute.Strategy
        ``TPUStrategy``, ``MirroredStrategy``, ``OneDeviceStrategy("/gpu:0")`` or the default
        (CPU) strategy.
    """
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
    """Adam with gradient-norm clipping (the guard against the NaNs that cost other teams runs).

    Parameters
    ----------
    learning_rate : float
    clipnorm : float or None, default 1.0
        Per-variable gradient norm clip; None disables it.

    Returns
    -------
    keras.optimizers.Adam
    """
    import keras
    return keras.optimizers.Adam(learning_rate=learning_rate, clipnorm=clipnorm)


def fingerprint(model, **settings) -> str:
    """8 hex digits identifying a model's architecture and its training settings.

    The architecture is read from the shapes and trainability of its weights, not from
    layer names (Keras numbers unnamed layers per session, so names are not stable).

    Parameters
    ----------
    model : keras.Model
    **settings
        Training settings (JSON-serialised, ``str`` for other values).

    Returns
    -------
    str
        The first 8 hex digits of a SHA-1.
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

    Parameters
    ----------
    run_dir : str or Path
        The run folder.
    name : str
        The training run's name.
    resume : bool, default True
        Add ``BackupAndRestore`` (and append to the CSV log).
    tensorboard : bool, default True
        Add the ``TensorBoard`` callback.
    fingerprint : str, optional
        Suffix of the checkpoint folder.

    Returns
    -------
    list of keras.callbacks.Callback
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
