"""A run folder as the training notebooks pass it on: notebook 02's tables, settings, metrics files.

:func:`load_run_data` reads what notebook 02 left (pairs, triplets, groups, image paths);
:func:`setup` is everything a training notebook needs (seeded, data, backbone parts, feature
bank); :func:`save_metrics` / :func:`read_metrics` write and read the machine-readable result
of a notebook (``metrics/<notebook>.json``); :func:`best_previous` picks among them.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from nnutils.data.cache import model_key
from nnutils.data.pairs import resolve_images
from nnutils.data.tables import image_column, pair_kinds
from nnutils.models.heads import build_parts
from nnutils.train.features import FeatureBank
from nnutils.train.session import set_seed


@dataclass
class RunData:
    """What notebook 02 left in the run folder, ready to train on.

    Parameters
    ----------
    run_dir : Path
        The run folder.
    train, val : DataFrame
        Pairs (``image_url1, image_url2, is_same``) with their negative kinds.
    balanced : DataFrame
        The class-balanced training pairs.
    triplets : DataFrame
        Training triplets (``anchor, positive, negative, negative_kind``).
    groups : Series of int
        URL → group id of the split: images joined by positive pairs and, on the embedded
        data, every image of one source photo (its other crops and views too), so that no
        photo is on both sides of the split.
    path_of : dict of str to str or None
        URL → local file.
    urls : list of str
        Every train and validation image, in first-seen order.
    copy_groups : Series of int or None
        URL → group of copies of one photograph (positive pairs only; other crops and views
        of a photo are other groups): the labels of online mining. None: same as ``groups``
        (a run folder written before this column existed).
    """

    run_dir: Path
    train: pd.DataFrame
    val: pd.DataFrame
    balanced: pd.DataFrame
    triplets: pd.DataFrame
    groups: pd.Series
    path_of: dict
    urls: list = field(default_factory=list)
    copy_groups: pd.Series | None = None

    def __post_init__(self):
        if self.copy_groups is None:
            self.copy_groups = self.groups

    @property
    def train_urls(self) -> list:
        """The distinct images of the training pairs, in first-seen order.

        Returns
        -------
        list of str
        """
        return list(dict.fromkeys(pd.concat([self.train.image_url1, self.train.image_url2])))


def load_run_data(cfg) -> RunData:
    """Read notebook 02's outputs (``pairs_*.csv``, ``triplets_train.csv``, ``groups.csv``) and image paths.

    Image paths come from ``image_status.csv`` when notebook 01 wrote it, else they are
    resolved again.

    Parameters
    ----------
    cfg : mapping
        The notebook's profile settings (attribute access: ``run_dir``, ``data_dir``,
        ``images_dir``, …; see :mod:`nnutils.profiles`).

    Returns
    -------
    RunData

    Raises
    ------
    FileNotFoundError
        Naming the notebook to run first when an output is missing, or when fewer than half
        of the listed images exist (the run folder belongs to another build of the data).
    """
    run_dir = Path(cfg.run_dir)
    need = ["pairs_train.csv", "pairs_val.csv", "pairs_train_balanced.csv", "triplets_train.csv", "groups.csv"]
    missing = [n for n in need if not (run_dir / n).exists()]
    if missing:
        raise FileNotFoundError(f"{run_dir}: missing {missing}; run 02_balancing first "
                                "(python -m nnutils.pipeline --only 01 02)")
    read = lambda n: pd.read_csv(run_dir / n, keep_default_na=False)  # noqa: E731
    group_table = pd.read_csv(run_dir / "groups.csv", index_col="image_url")
    groups = group_table.group
    copy_groups = None
    if "copy_group" in group_table:   # images only linked by photo (in no kept pair): a group each
        c = group_table.copy_group
        copy_groups = c.fillna(pd.Series(-1 - np.arange(len(c)), index=c.index)).astype(int)
    train, val = read("pairs_train.csv"), read("pairs_val.csv")
    status_file = run_dir / "image_status.csv"
    if status_file.exists():
        st = pd.read_csv(status_file, index_col="image_url", keep_default_na=False)
        path_of = {u: (p or None) for u, p in st["path"].items()}
    else:
        path_of = resolve_images(groups.index, cfg.images_dir, progress=False).to_dict()
    present = sum(1 for p in path_of.values() if p and Path(p).exists())
    if present < 0.5 * max(1, len(path_of)):
        raise FileNotFoundError(
            f"{run_dir}: only {present} of {len(path_of)} images listed by 01/02 exist; the run folder was "
            f"written for another build of the data. Rerun 01_eda and 02_balancing "
            f"(python -m nnutils.pipeline --only 01 02)")
    data = RunData(run_dir, pair_kinds(cfg.data_dir, train, "train"), pair_kinds(cfg.data_dir, val, "train"),
                   read("pairs_train_balanced.csv"), read("triplets_train.csv"), groups, path_of,
                   copy_groups=copy_groups)
    data.urls = list(dict.fromkeys(pd.concat([train.image_url1, train.image_url2, val.image_url1,
                                              val.image_url2])))
    return data


def best_previous(run_dir, names: Sequence[str], key: str = "val.roc_auc") -> str | None:
    """The notebook among ``names`` whose metrics file has the highest ``key`` (e.g. val ROC AUC).

    Parameters
    ----------
    run_dir : str or Path
        The run folder (reads ``metrics/<name>.json``).
    names : sequence of str
        Notebook names, e.g. ``["03_siamese_bce", "04_triplet"]``.
    key : str, default "val.roc_auc"
        Dotted path into the metrics JSON.

    Returns
    -------
    str or None
        The best name; None when no metrics file has a numeric ``key``.
    """
    best, best_v = None, -np.inf
    for n in names:
        p = Path(run_dir) / "metrics" / f"{n}.json"
        if not p.exists():
            continue
        v = json.loads(p.read_text())
        for part in key.split("."):
            v = v.get(part, {}) if isinstance(v, dict) else {}
        if isinstance(v, (int, float)) and v > best_v:
            best, best_v = n, v
    return best


def setup(cfg, trunk_layer: str | None = None):
    """Everything a training notebook needs.

    Seeds everything, reads notebook 02's outputs, builds the backbone cut at
    ``trunk_layer`` and computes (or loads from ``<run_dir>/features``) the trunk's
    outputs for every train/validation image, with ``cfg.views`` augmented views.

    Parameters
    ----------
    cfg : mapping
        The notebook's profile settings (attribute access: ``run_dir``, ``data_dir``,
        ``images_dir``, …; see :mod:`nnutils.profiles`).
    trunk_layer : str, optional
        Where to cut the backbone (:func:`~nnutils.models.heads.build_parts`); None freezes
        all of it.

    Returns
    -------
    data : RunData
    trunk : keras.Model
        The frozen part.
    rest : keras.Model or None
        The trainable part of the backbone.
    bank : FeatureBank
        The trunk's features of ``data.urls``.

    Raises
    ------
    FileNotFoundError
        As :func:`load_run_data`, or when pretrained weights are missing.
    """
    set_seed(cfg.seed)
    data = load_run_data(cfg)
    trunk, rest = build_parts(cfg.backbone, cfg.image_size, trunk_layer, cfg.weights, cfg.weights_dir)
    key = model_key(cfg.backbone, cfg.image_size, trunk_layer, cfg.weights, trunk.output.shape[1:])
    bank = FeatureBank(trunk, data.urls, data.path_of, cfg.image_size, cache_dir=data.run_dir / "features",
                       key=key, views=cfg.views, seed=cfg.seed, batch_size=cfg.batch_size, progress=cfg.progress)
    return data, trunk, rest, bank


def settings_of(cfg, **extra) -> dict:
    """The model-defining settings of a notebook (saved next to its model and in its metrics).

    Parameters
    ----------
    cfg : mapping
        The profile settings; ``backbone``, ``weights``, ``image_size``, ``pooling``,
        ``embedding_dim``, ``hidden_dim``, ``margin`` and ``views`` are taken when present.
    **extra
        Further settings (override ``cfg``'s).

    Returns
    -------
    dict
    """
    keys = ("backbone", "weights", "image_size", "pooling", "embedding_dim", "hidden_dim", "margin", "views")
    return {**{k: cfg[k] for k in keys if k in cfg}, **extra}


class Timer:
    """``with Timer() as t: ...``; ``t.seconds`` afterwards.

    Attributes
    ----------
    seconds : float
        Wall-clock duration of the ``with`` block, in seconds (set on exit).
    """

    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start


def save_metrics(run_dir: str | Path, notebook: str, **fields) -> Path:
    """Write ``<run_dir>/metrics/<notebook>.json`` (floats rounded to 5 digits) and return its path.

    Parameters
    ----------
    run_dir : str or Path
        The run folder (``metrics/`` is created).
    notebook : str
        The notebook's name (file stem; also stored as ``notebook``).
    **fields
        JSON-serialisable values; NumPy scalars are converted, nested dicts and lists too.

    Returns
    -------
    Path
    """
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
    """All ``metrics/*.json`` of a run as a DataFrame, one row per notebook.

    Parameters
    ----------
    run_dir : str or Path
        The run folder.

    Returns
    -------
    DataFrame
        Flattened with ``pandas.json_normalize`` (nested keys become ``val.roc_auc``, …),
        sorted by file name; empty when there is no metrics file.
    """
    import pandas as pd
    rows = [json.loads(p.read_text()) for p in sorted((Path(run_dir) / "metrics").glob("*.json"))]
    return pd.json_normalize(rows)


def selection_split(run_dir, data_dir, paths: Sequence[str]) -> np.ndarray:
    """Which images of a collection may choose settings, and which only report: ``"train"`` / ``"test"`` / ``""``.

    Settings fitted on a collection (notebook 09's grouping threshold and variant) must be
    chosen on images the models never trained on: the images of notebook 02's validation
    pairs (``<run_dir>/pairs_val.csv``) are ``"train"`` (the part
    :func:`nnutils.scale.grouping.choose_grouping` chooses on), the embedded data's test
    split is ``"test"`` (the part it reports on), and the images of the training pairs are
    ``""`` (in neither part). Choosing on the training images instead let a fine-tuned model
    pick a threshold that fits the images it was trained on (cpu run of 2026-12-01, model 05:
    train row-wise F1 0.988, test 0.687).

    Parameters
    ----------
    run_dir : path
        The run folder (notebook 02's ``pairs_val.csv``).
    data_dir : path
        The embedded dataset (its ``images.csv`` has each file's ``split``).
    paths : sequence of str, length N
        The collection's image files (matched to the tables by file name).

    Returns
    -------
    ndarray of str, shape (N,)

    Raises
    ------
    FileNotFoundError
        When the run folder has no ``pairs_val.csv`` (run 02 first).
    """
    val_csv = Path(run_dir) / "pairs_val.csv"
    if not val_csv.exists():
        raise FileNotFoundError(f"{val_csv} not found: run 02_balancing first (python -m nnutils.pipeline --only 02)")
    val = pd.read_csv(val_csv, keep_default_na=False)
    val_names = {Path(str(u)).name for u in pd.concat([val.image_url1, val.image_url2])}
    split = image_column(data_dir, paths, "split", default="train")
    names = np.array([Path(str(p)).name for p in paths], dtype=object)
    return np.where(split == "test", "test", np.where(np.isin(names, list(val_names)), "train", "")).astype(object)
