"""The steps shared by the training notebooks (03–06), so each notebook only narrates, calls and plots.

A run's model is ``trunk`` (frozen part of a backbone; its outputs are cached in a
:class:`FeatureBank`) + ``top`` (the trainable rest: optional backbone blocks, pooling,
head). Training modes:

- :func:`train_pairs`   siamese BCE on pairs (notebook 03)
- :func:`train_triplets` cosine triplet loss on fixed (anchor, positive, negative) rows (04)
- :func:`train_online`  semi-hard or batch-hard mining over P×K batches of groups (04–06)

:func:`pair_scores` + :func:`evaluate` give validation metrics; :func:`save_model`
writes the joined image → embedding model that notebooks 07–08 load.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from . import metrics as M
from .distortions import DISTORTIONS, apply_distortion
from .features import compute_features, model_key

__all__ = ["RunData", "load_run_data", "build_parts", "FeatureBank", "train_pairs", "train_triplets",
           "train_online", "pair_scores", "evaluate", "mine_hard_negatives", "save_model", "load_model",
           "best_previous", "setup", "settings_of", "embed_bank", "confusable_groups", "load_top"]

HARD_KINDS = ("other_crop", "same_scene", "similar_colour")


# ----------------------------------------------------------------------------- data
@dataclass
class RunData:
    """What notebook 02 left in the run folder, ready to train on."""

    run_dir: Path
    train: pd.DataFrame
    val: pd.DataFrame
    balanced: pd.DataFrame
    triplets: pd.DataFrame
    groups: pd.Series
    path_of: dict
    urls: list = field(default_factory=list)

    @property
    def train_urls(self) -> list:
        return list(dict.fromkeys(pd.concat([self.train.image_url1, self.train.image_url2])))


def _kinds(data_dir: Path, pairs: pd.DataFrame) -> pd.DataFrame:
    """Attach the embedded data's ``distortion`` / ``negative_kind`` columns (empty for real data)."""
    meta_path = Path(data_dir) / "metadata.csv"
    if not meta_path.exists():
        return pairs.assign(distortion="", negative_kind="")
    meta = pd.read_csv(meta_path, keep_default_na=False)
    meta = meta[meta.split == "train"][["image_url1", "image_url2", "distortion", "negative_kind"]]
    out = pairs.drop(columns=[c for c in ("distortion", "negative_kind") if c in pairs]).merge(
        meta, on=["image_url1", "image_url2"], how="left")
    return out.fillna({"distortion": "", "negative_kind": ""})


def load_run_data(cfg) -> RunData:
    """Read notebook 02's outputs (``pairs_*.csv``, ``triplets_train.csv``, ``groups.csv``) and image paths.

    Raises ``FileNotFoundError`` naming the notebook to run first.
    """
    run_dir = Path(cfg.run_dir)
    need = ["pairs_train.csv", "pairs_val.csv", "pairs_train_balanced.csv", "triplets_train.csv", "groups.csv"]
    missing = [n for n in need if not (run_dir / n).exists()]
    if missing:
        raise FileNotFoundError(f"{run_dir}: missing {missing}; run 02_balancing first "
                                "(python -m nnutils.pipeline --only 01 02)")
    read = lambda n: pd.read_csv(run_dir / n, keep_default_na=False)  # noqa: E731
    groups = pd.read_csv(run_dir / "groups.csv", index_col="image_url").group
    train, val = read("pairs_train.csv"), read("pairs_val.csv")
    status_file = run_dir / "image_status.csv"
    if status_file.exists():
        st = pd.read_csv(status_file, index_col="image_url", keep_default_na=False)
        path_of = {u: (p or None) for u, p in st["path"].items()}
    else:
        from .pairs import resolve_images
        path_of = resolve_images(groups.index, cfg.images_dir, progress=False).to_dict()
    present = sum(1 for p in path_of.values() if p and Path(p).exists())
    if present < 0.5 * max(1, len(path_of)):
        raise FileNotFoundError(
            f"{run_dir}: only {present} of {len(path_of)} images listed by 01/02 exist; the run folder was "
            f"written for another build of the data. Rerun 01_eda and 02_balancing "
            f"(python -m nnutils.pipeline --only 01 02)")
    data = RunData(run_dir, _kinds(cfg.data_dir, train), _kinds(cfg.data_dir, val),
                   read("pairs_train_balanced.csv"), read("triplets_train.csv"), groups, path_of)
    data.urls = list(dict.fromkeys(pd.concat([train.image_url1, train.image_url2, val.image_url1,
                                              val.image_url2])))
    return data


# ----------------------------------------------------------------------------- model parts
def build_parts(backbone: str, image_size: int, trunk_layer: str | None = None, weights="imagenet",
                weights_dir=None):
    """Backbone cut into a frozen ``trunk`` and a trainable ``rest`` (None if ``trunk_layer`` is None).

    ``trunk_layer`` is None (the whole backbone is frozen), ``"last"`` (cut just before the
    backbone's last block(s), e.g. VGG16 ``block5_*``, Lite0 ``block6*``/``block7*``/``top_*``,
    which then train) or a layer name. BatchNorm layers of ``rest`` stay frozen (inference
    mode), as Keras recommends for fine-tuning.
    """
    import keras
    from .backbones import build_backbone, get_spec
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


def random_repost(img, rng):
    """One random re-posting distortion (for augmented feature views); same signature as the distortions."""
    kinds = [k for k in DISTORTIONS if k != "jpeg"]
    out, _, detail = apply_distortion(img, kinds[int(rng.integers(len(kinds)))], rng)
    return out, detail


class FeatureBank:
    """Trunk outputs for a fixed list of images, computed once (cached on disk by file content).

    ``views`` extra copies are computed from randomly re-posted versions of each image
    (:func:`random_repost`): feature-space augmentation for CPU training.
    """

    def __init__(self, trunk, urls: Sequence[str], path_of: dict, image_size: int, *, cache_dir=None,
                 key: str | None = None, views: int = 0, seed: int = 0, batch_size: int = 32,
                 progress: bool = True):
        self.urls = list(urls)
        self.index = {u: i for i, u in enumerate(self.urls)}
        self.key = key or model_key(trunk.name, image_size)
        paths = [path_of.get(u) for u in self.urls]
        common = dict(batch_size=batch_size, cache_dir=cache_dir, key=self.key, progress=progress)
        self.feats, self.ok = compute_features(trunk, paths, image_size, desc="trunk features", **common)
        self.views = [compute_features(trunk, paths, image_size, transform=random_repost, seed=seed + v,
                                       desc=f"augmented view {v + 1}", **common)[0] for v in range(views)]

    @property
    def shape(self) -> tuple:
        return tuple(self.feats.shape[1:])

    def rows(self, urls: Sequence[str]) -> np.ndarray:
        return np.array([self.index[u] for u in urls], dtype=int)

    def take(self, urls: Sequence[str], rng: np.random.Generator | None = None) -> np.ndarray:
        """Features of ``urls`` (float32); with ``rng`` and views, each row from a random view."""
        rows = self.rows(urls)
        if rng is None or not self.views:
            return self.feats[rows].astype("float32")
        stack = [self.feats] + self.views
        pick = rng.integers(len(stack), size=len(rows))
        return np.stack([stack[v][r] for v, r in zip(pick, rows)]).astype("float32")


# ----------------------------------------------------------------------------- training
def _fit(model, x, y, *, epochs, batch_size, run_dir, name, validation_data=None, verbose=2, shuffle=True, **settings):
    from .training import callbacks, fingerprint
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
    """Siamese BCE: ``top`` embeds both images' features; loss on (cos + 1) / 2 against ``is_same``."""
    from .losses import SiameseBCE
    from .models import build_pair_model
    from .training import adam
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
    """Cosine triplet loss ``max(d(a,p) - d(a,n) + margin, 0)`` on fixed triplets."""
    from .losses import TripletCosineLoss
    from .models import build_triplet_model
    from .training import adam
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
    from .training import pk_indices

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
    """Online triplet mining over batches of ``p`` groups × ``k`` images (``loss``: semihard | batchhard).

    ``confusers`` (group → confusable groups, see :func:`confusable_groups`) fills half of
    each batch with the groups the model mixes up, so the miner sees those negatives.
    """
    from .losses import BatchHardTripletLoss, SemiHardTripletLoss
    from .training import adam
    urls = [u for u in urls if bank.ok[bank.index[u]]]
    labels = groups.reindex(urls).to_numpy()
    losses = {"semihard": SemiHardTripletLoss, "batchhard": BatchHardTripletLoss}
    if loss not in losses:
        raise ValueError(f"loss must be one of {sorted(losses)}, got {loss!r}")
    top.compile(optimizer=adam(learning_rate), loss=losses[loss](margin=margin))
    ds = _pk_dataset(bank, urls, labels, p, k, batches_per_epoch, seed, confusers)
    from .training import callbacks, fingerprint
    fp = fingerprint(top, loss=loss, learning_rate=learning_rate, epochs=epochs, p=p, k=k, margin=margin,
                     batches=batches_per_epoch, seed=seed, n=len(urls), confusers=len(confusers or {}))
    return top.fit(ds, epochs=epochs, callbacks=callbacks(run_dir, name, fingerprint=fp), verbose=verbose)


# ----------------------------------------------------------------------------- evaluation
def embed_bank(top, bank: FeatureBank, batch_size: int = 256) -> np.ndarray:
    """Embeddings (N, D) of every image in the bank (rows of unreadable images are NaN)."""
    emb = np.asarray(top.predict(bank.feats.astype("float32"), batch_size=batch_size, verbose=0), "float32")
    emb[~bank.ok] = np.nan
    return emb


def pair_scores(emb: np.ndarray, bank: FeatureBank, pairs: pd.DataFrame) -> np.ndarray:
    """Cosine similarity per pair (N,); NaN where an image is unreadable."""
    from .inference import score_pairs
    return score_pairs(emb, bank.ok, bank.rows(pairs.image_url1), bank.rows(pairs.image_url2))


def evaluate(scores: np.ndarray, pairs: pd.DataFrame, threshold: float | None = None) -> dict:
    """Metrics of ``scores`` on readable ``pairs``; the threshold maximises F1 unless given.

    Adds ``hard_negative_fp_rate`` (false positives among other-crop / same-scene /
    similar-colour negatives) when the pairs carry ``negative_kind``.
    """
    ok = ~np.isnan(scores)
    y, s = pairs.is_same.to_numpy()[ok], scores[ok]
    thr = M.best_threshold(y, s)[0] if threshold is None else threshold
    out = M.pair_metrics(y, s, thr)
    if "negative_kind" in pairs:
        hard = pairs.negative_kind.to_numpy()[ok]
        mask = np.isin(hard, HARD_KINDS)
        if mask.any():
            out["hard_negative_fp_rate"] = float((s[mask] >= thr).mean())
            out["hard_negatives"] = int(mask.sum())
    return out


def mine_hard_negatives(emb: np.ndarray, bank: FeatureBank, urls: Sequence[str], groups: pd.Series,
                        per_anchor: int = 2, seed: int = 0) -> pd.DataFrame:
    """For each image with a group mate, its ``per_anchor`` nearest images from other groups.

    Returns triplets ``anchor, positive, negative, negative_kind="mined", similarity`` with
    the positive drawn from the anchor's group: the hardest mistakes the model can make.
    """
    rng = np.random.default_rng(seed)
    urls = [u for u in urls if bank.ok[bank.index[u]]]
    g = groups.reindex(urls).to_numpy()
    e = emb[bank.rows(urls)]
    sims = e @ e.T
    sims[g[:, None] == g[None, :]] = -np.inf
    rows = []
    for i, u in enumerate(urls):
        mates = np.flatnonzero(g == g[i])
        mates = mates[mates != i]
        if not len(mates):
            continue
        for j in np.argsort(-sims[i])[:per_anchor]:
            rows.append((u, urls[int(rng.choice(mates))], urls[int(j)], "mined", float(sims[i, j])))
    return pd.DataFrame(rows, columns=["anchor", "positive", "negative", "negative_kind", "similarity"])


def confusable_groups(mined: pd.DataFrame, groups: pd.Series) -> dict[int, list[int]]:
    """Group → the groups of its mined hard negatives (both directions), for :func:`train_online`."""
    out: dict[int, set] = {}
    for a, n in zip(mined.anchor.map(groups), mined.negative.map(groups)):
        out.setdefault(int(a), set()).add(int(n))
        out.setdefault(int(n), set()).add(int(a))
    return {g: sorted(v) for g, v in out.items()}


# ----------------------------------------------------------------------------- saving
def save_model(trunk, top, run_dir, name: str, settings: dict) -> Path:
    """Save the image → embedding model as ``models/<name>.keras`` and the settings that
    rebuild its trunk as ``models/<name>.json``; :func:`load_top` gets the trainable part back."""
    from .models import build_embedder
    folder = Path(run_dir) / "models"
    folder.mkdir(parents=True, exist_ok=True)
    build_embedder(trunk, top).save(folder / f"{name}.keras")
    (folder / f"{name}.json").write_text(json.dumps(settings, indent=2, default=str))
    return folder / f"{name}.keras"


def load_model(path):
    """Load a saved ``.keras`` model with nnutils' custom layers registered."""
    import keras
    from . import backbones, losses, models  # noqa: F401  (registers the serialisable classes)
    return keras.saving.load_model(path, compile=False)


def load_top(path):
    """The trainable top (cached features → embedding) of a model saved by :func:`save_model`.

    The embedder is ``image → trunk → top``; its last layer is the top, weights included.
    (A top holding fine-tuned backbone blocks cannot be saved on its own: it starts from an
    intermediate tensor of the backbone.)
    """
    return load_model(path).layers[-1]


def best_previous(run_dir, names: Sequence[str], key: str = "val.roc_auc") -> str | None:
    """The notebook among ``names`` whose metrics file has the highest ``key`` (e.g. val ROC AUC)."""
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
    """Everything a training notebook needs: ``(data, trunk, rest, bank)``.

    Seeds everything, reads notebook 02's outputs, builds the backbone cut at
    ``trunk_layer`` and computes (or loads from ``<run_dir>/features``) the trunk's
    outputs for every train/validation image, with ``cfg.views`` augmented views.
    """
    from .training import set_seed
    set_seed(cfg.seed)
    data = load_run_data(cfg)
    trunk, rest = build_parts(cfg.backbone, cfg.image_size, trunk_layer, cfg.weights, cfg.weights_dir)
    key = model_key(cfg.backbone, cfg.image_size, trunk_layer, cfg.weights, trunk.output.shape[1:])
    bank = FeatureBank(trunk, data.urls, data.path_of, cfg.image_size, cache_dir=data.run_dir / "features",
                       key=key, views=cfg.views, seed=cfg.seed, batch_size=cfg.batch_size, progress=cfg.progress)
    return data, trunk, rest, bank


def settings_of(cfg, **extra) -> dict:
    """The model-defining settings of a notebook (saved next to its model and in its metrics)."""
    keys = ("backbone", "weights", "image_size", "pooling", "embedding_dim", "hidden_dim", "margin", "views")
    return {**{k: cfg[k] for k in keys if k in cfg}, **extra}
