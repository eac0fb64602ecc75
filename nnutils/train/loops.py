"""The training loops of notebooks 03–06, on cached backbone outputs (a :class:`~nnutils.train.features.FeatureBank`).

- :func:`train_pairs`    siamese BCE on pairs (notebook 03)
- :func:`train_triplets` cosine triplet loss on fixed (anchor, positive, negative) rows (04)
- :func:`train_online`   semi-hard or batch-hard mining over P×K batches of groups (04–06)

Each builds the Keras model from :mod:`nnutils.models.heads`, compiles it with a loss of
:mod:`nnutils.models.losses` and fits it with the callbacks of :mod:`nnutils.train.session`
(resume after a kill, NaN guard, TensorBoard, CSV log).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from nnutils.train.features import FeatureBank
from nnutils.train.mining import pk_indices
from nnutils.train.session import adam, callbacks, fingerprint


def _fit(model, x, y, *, epochs, batch_size, run_dir, name, validation_data=None, verbose=2, shuffle=True, **settings):
    fp = fingerprint(model, epochs=epochs, batch_size=batch_size, n=len(y), **settings)
    return model.fit(x, y, epochs=epochs, batch_size=batch_size, validation_data=validation_data,
                     callbacks=callbacks(run_dir, name, fingerprint=fp), verbose=verbose, shuffle=shuffle)


def _readable(bank: FeatureBank, df: pd.DataFrame, cols: Sequence[str]) -> pd.DataFrame:
    keep = np.ones(len(df), bool)
    for c in cols:
        keep &= bank.ok[bank.rows(df[c])]
    return df[keep]


def train_pairs(top, bank: FeatureBank, train: pd.DataFrame, val: pd.DataFrame, *, learning_rate: float,
                epochs: int, batch_size: int, run_dir, name: str, seed: int = 0, repeats: int = 1, verbose=2):
    """Siamese BCE: ``top`` embeds both images' features; loss on (cos + 1) / 2 against ``is_same``.

    Pairs with an unreadable image are left out. ``top`` is trained in place.

    Parameters
    ----------
    top : keras.Model
        Features → unit-norm embeddings.
    bank : FeatureBank
        The features of every image of ``train`` and ``val``.
    train, val : DataFrame
        Pairs with ``image_url1``, ``image_url2`` and ``is_same``.
    learning_rate : float
        Adam learning rate (gradient norm clipped at 1).
    epochs : int
        Training epochs.
    batch_size : int
        Examples per step.
    run_dir : str or Path
        The run folder: checkpoints, logs and TensorBoard go under it
        (:func:`~nnutils.train.session.callbacks`).
    name : str
        The training run's name (folders and log file).
    seed : int, default 0
        Seed of the view choice.
    repeats : int, default 1
        Copies of ``train`` per epoch, each with its own random views.
    verbose : int, default 2
        Keras ``fit`` verbosity.

    Returns
    -------
    keras.callbacks.History
        The ``fit`` history (``history.history["loss"]`` per epoch, and ``val_loss``).
    """
    from nnutils.models.heads import build_pair_model
    from nnutils.models.losses import SiameseBCE
    rng = np.random.default_rng(seed)
    train, val = _readable(bank, train, ["image_url1", "image_url2"]), _readable(bank, val, ["image_url1", "image_url2"])
    reps = pd.concat([train] * max(1, repeats), ignore_index=True)
    x = (bank.take(reps.image_url1, rng), bank.take(reps.image_url2, rng))
    vx = (bank.take(val.image_url1), bank.take(val.image_url2))
    model = build_pair_model(top)
    model.compile(optimizer=adam(learning_rate), loss=SiameseBCE())
    return _fit(model, x, reps.is_same.to_numpy("float32"), epochs=epochs, batch_size=batch_size, run_dir=run_dir,
                name=name, validation_data=(vx, val.is_same.to_numpy("float32")), verbose=verbose,
                learning_rate=learning_rate, seed=seed, loss="bce")


def train_triplets(top, bank: FeatureBank, triplets: pd.DataFrame, *, learning_rate: float, epochs: int,
                   batch_size: int, margin: float, run_dir, name: str, seed: int = 0, repeats: int = 1, verbose=2):
    """Cosine triplet loss ``max(d(a,p) - d(a,n) + margin, 0)`` on fixed triplets.

    Triplets with an unreadable image are left out. ``top`` is trained in place.

    Parameters
    ----------
    top : keras.Model
        Features → unit-norm embeddings.
    bank : FeatureBank
        The features of every image of ``triplets``.
    triplets : DataFrame
        With ``anchor``, ``positive`` and ``negative`` URLs.
    learning_rate : float
        Adam learning rate (gradient norm clipped at 1).
    epochs : int
        Training epochs.
    batch_size : int
        Examples per step.
    margin : float
        In cosine-distance units (``d = 1 - cos`` in [0, 2]).
    run_dir : str or Path
        The run folder: checkpoints, logs and TensorBoard go under it
        (:func:`~nnutils.train.session.callbacks`).
    name : str
        The training run's name (folders and log file).
    seed : int, default 0
        Seed of the view choice.
    repeats : int, default 1
        Copies of the triplets per epoch, each with its own random views.
    verbose : int, default 2
        Keras ``fit`` verbosity.

    Returns
    -------
    keras.callbacks.History
        The ``fit`` history (``history.history["loss"]`` per epoch).
    """
    from nnutils.models.heads import build_triplet_model
    from nnutils.models.losses import TripletCosineLoss
    rng = np.random.default_rng(seed)
    t = _readable(bank, triplets, ["anchor", "positive", "negative"])
    t = pd.concat([t] * max(1, repeats), ignore_index=True)
    model = build_triplet_model(top)
    model.compile(optimizer=adam(learning_rate), loss=TripletCosineLoss(margin=margin))
    x = (bank.take(t.anchor, rng), bank.take(t.positive, rng), bank.take(t.negative, rng))
    return _fit(model, x, np.zeros(len(t), "float32"), epochs=epochs, batch_size=batch_size, run_dir=run_dir,
                name=name, verbose=verbose, learning_rate=learning_rate, margin=margin, seed=seed, loss="triplet")


def _pk_dataset(bank: FeatureBank, urls, labels, p, k, batches, seed, confusers=None):
    import keras


    class PK(keras.utils.PyDataset):
        def __init__(self):
            super().__init__()
            self.epoch = 0
            self._draw()

        def _draw(self):
            self.idx = pk_indices(labels, p, k, batches, seed=seed + self.epoch, confusers=confusers).reshape(batches, -1)
            self.rng = np.random.default_rng([seed, self.epoch])

        def __len__(self):
            return batches

        def __getitem__(self, i):
            rows = self.idx[i]
            return bank.take([urls[r] for r in rows], self.rng), labels[rows].astype("int32")

        def on_epoch_end(self):
            self.epoch += 1
            self._draw()

    return PK()


def train_online(top, bank: FeatureBank, urls: Sequence[str], groups: pd.Series, *, loss: str = "semihard",
                 learning_rate: float, epochs: int, p: int, k: int, batches_per_epoch: int, margin: float,
                 run_dir, name: str, seed: int = 0, verbose=2, confusers: dict | None = None):
    """Online triplet mining over batches of ``p`` groups × ``k`` images.

    Unreadable images are left out. ``top`` is compiled and trained in place.

    Parameters
    ----------
    top : keras.Model
        Features → unit-norm embeddings.
    bank : FeatureBank
        The features of every image of ``urls``.
    urls : sequence of str
        The training images.
    groups : Series of int
        URL → group id (the labels of the mining loss).
    loss : {"semihard", "batchhard"}, default "semihard"
        :class:`~nnutils.models.losses.SemiHardTripletLoss` or
        :class:`~nnutils.models.losses.BatchHardTripletLoss`.
    learning_rate : float
        Adam learning rate (gradient norm clipped at 1).
    epochs : int
        Training epochs.
    p, k : int
        Groups per batch and images per group (:func:`~nnutils.train.mining.pk_indices`).
    batches_per_epoch : int
        Steps per epoch (new batches are drawn every epoch).
    margin : float
        In cosine-distance units.
    run_dir : str or Path
        The run folder: checkpoints, logs and TensorBoard go under it
        (:func:`~nnutils.train.session.callbacks`).
    name : str
        The training run's name (folders and log file).
    seed : int, default 0
        Seed of the view choice.
    verbose : int, default 2
        Keras ``fit`` verbosity.
    confusers : dict, optional
        Group → confusable groups (:func:`~nnutils.train.mining.confusable_groups`); fills
        half of each batch with the groups the model mixes up, so the miner sees those
        negatives.

    Raises
    ------
    ValueError
        For an unknown ``loss``, or fewer than two groups with two or more readable images.

    Returns
    -------
    keras.callbacks.History
        The ``fit`` history (``history.history["loss"]`` per epoch).
    """
    from nnutils.models.losses import BatchHardTripletLoss, SemiHardTripletLoss
    urls = [u for u in urls if bank.ok[bank.index[u]]]
    labels = groups.reindex(urls).to_numpy()
    losses = {"semihard": SemiHardTripletLoss, "batchhard": BatchHardTripletLoss}
    if loss not in losses:
        raise ValueError(f"loss must be one of {sorted(losses)}, got {loss!r}")
    top.compile(optimizer=adam(learning_rate), loss=losses[loss](margin=margin))
    ds = _pk_dataset(bank, urls, labels, p, k, batches_per_epoch, seed, confusers)
    fp = fingerprint(top, loss=loss, learning_rate=learning_rate, epochs=epochs, p=p, k=k, margin=margin,
                     batches=batches_per_epoch, seed=seed, n=len(urls), confusers=len(confusers or {}))
    return top.fit(ds, epochs=epochs, callbacks=callbacks(run_dir, name, fingerprint=fp), verbose=verbose)
