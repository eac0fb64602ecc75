"""Saving and loading the image → embedding models of a run folder (``<run_dir>/models``).

A run's model is ``trunk`` (the frozen part of a backbone) + ``top`` (the trainable rest);
:func:`save_model` writes the joined model as ``models/<name>.keras`` with the settings that
rebuild it, :func:`load_model` reads any saved model with nnutils' custom layers registered.
"""
from __future__ import annotations

import json
from pathlib import Path


def save_model(trunk, top, run_dir, name: str, settings: dict) -> Path:
    """Save the image → embedding model and the settings that rebuild its trunk.

    :func:`load_top` gets the trainable part back.

    Parameters
    ----------
    trunk : keras.Model
        Images → features (the frozen part).
    top : keras.Model
        Features → embeddings (the trained part).
    run_dir : str or Path
        The run folder; ``models/`` is created in it.
    name : str
        File stem.
    settings : dict
        JSON-serialisable settings (backbone, image size, trunk layer, …); other values are
        written with ``str``.

    Returns
    -------
    Path
        ``<run_dir>/models/<name>.keras`` (next to ``<name>.json``).
    """
    from nnutils.models.heads import build_embedder
    folder = Path(run_dir) / "models"
    folder.mkdir(parents=True, exist_ok=True)
    build_embedder(trunk, top).save(folder / f"{name}.keras")
    (folder / f"{name}.json").write_text(json.dumps(settings, indent=2, default=str))
    return folder / f"{name}.keras"


def load_model(path):
    """Load a saved ``.keras`` model with nnutils' custom layers registered.

    Parameters
    ----------
    path : str or Path
        A ``.keras`` file.

    Returns
    -------
    keras.Model
        Not compiled.
    """
    import keras

    from nnutils.models import backbones, heads, losses  # noqa: F401  (registers the serialisable classes)
    return keras.saving.load_model(path, compile=False)


def load_top(path):
    """The trainable top (cached features → embedding) of a model saved by :func:`save_model`.

    The embedder is ``image → trunk → top``; its last layer is the top, weights included.
    (A top holding fine-tuned backbone blocks cannot be saved on its own: it starts from an
    intermediate tensor of the backbone.)

    Parameters
    ----------
    path : str or Path
        A ``.keras`` file written by :func:`save_model`.

    Returns
    -------
    keras.Model
        (B, *feature_shape) → (B, D).
    """
    return load_model(path).layers[-1]


def list_models(run_dir) -> dict[str, Path]:
    """The image → embedding models saved in ``<run_dir>/models``.

    Parameters
    ----------
    run_dir : str or Path
        A run folder.

    Returns
    -------
    dict of str to Path
        ``{stem: path}`` of the ``.keras`` files, sorted by name (empty when there are none).
    """
    return {p.stem: p for p in sorted((Path(run_dir) / "models").glob("*.keras"))}
