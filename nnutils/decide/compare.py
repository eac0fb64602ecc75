"""Scores of every saved model (and the perceptual hash) on a pairs table, and their ranking.

Used by notebook 07 on validation pairs. Embeddings are cached under ``cache_dir`` by image
content and model file, so a rerun embeds nothing twice.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from nnutils.data.cache import model_key
from nnutils.decide import hashes as baselines
from nnutils.decide.decision import Decision
from nnutils.decide.metrics import breakdown, pair_metrics
from nnutils.decide.thresholds import cv_threshold
from nnutils.data.decode import decode_square
from nnutils.models.embedders import TFLiteEmbedder, embed_cached, score_pairs
from nnutils.models.runtime import conversion_is_current, convert_to_tflite, tflite_path_for
from nnutils.models.saving import list_models, load_model
from nnutils.train.features import embed_images
from nnutils.train.runs import load_run_data


def model_scores(model_path, pairs: pd.DataFrame, path_of: dict, *, cache_dir=None, batch_size: int = 32,
                 progress: bool = True) -> np.ndarray:
    """Cosine similarity per pair with a saved embedder; NaN where an image is unreadable.

    Parameters
    ----------
    model_path : str or Path
        A saved ``.keras`` image → embedding model.
    pairs : DataFrame, N rows
        With ``image_url1`` and ``image_url2``.
    path_of : dict of str to str or None
        URL → local file.
    cache_dir : str or Path, optional
        Embedding cache root (keyed by the model's stem and modification time); None caches
        nothing.
    batch_size : int, default 32
        Images per batch.
    progress : bool, default True
        Show a progress bar.

    Returns
    -------
    ndarray of float32, shape (N,)
        Cosine in [-1, 1]; NaN where either image is unreadable.
    """
    model_path = Path(model_path)
    model = load_model(model_path)
    size = int(model.input.shape[1])
    key = model_key(model_path.stem, model_path.stat().st_mtime_ns)
    return _pair_scores(pairs, path_of, lambda paths: embed_images(
        model, paths, size, cache_dir=cache_dir, key=key, batch_size=batch_size, progress=progress,
        desc=model_path.stem))


def _pair_scores(pairs: pd.DataFrame, path_of: dict, embed) -> np.ndarray:
    """(N,) cosine per pair: each distinct URL's file embedded once by ``embed(paths) -> (emb, ok)``."""
    urls = list(dict.fromkeys(pd.concat([pairs.image_url1, pairs.image_url2])))
    emb, ok = embed([path_of.get(u) for u in urls])
    idx = {u: i for i, u in enumerate(urls)}
    return score_pairs(emb, ok, pairs.image_url1.map(idx), pairs.image_url2.map(idx))


@dataclass
class ValidationSet:
    """Notebook 10's validation inputs (see :func:`validation_set`).

    Attributes
    ----------
    decision : nnutils.decide.decision.Decision
        07's decision with its embedding model, without verification.
    pairs : DataFrame, P rows
        notebook 02's validation pairs, index 0 … P − 1.
    paths1, paths2 : list of str or None, length P
        Each pair's image files.
    y : ndarray of int, shape (P,)
        0/1 labels.
    scores : ndarray of float32, shape (P,)
        The global model's cosine per pair (NaN where an image is unreadable), of the
        model the fused decision reads: :attr:`global_model` when set, else the ``.keras``
        model.
    data : nnutils.train.runs.RunData
        The run's splits, files and photo groups (what DELF's attention trains on).
    global_model : Path or None
        The int8 ``.tflite`` file of 07's model (:func:`int8_global_model`) whose scores
        :attr:`scores` are, when the profile's ``global_quantize`` is ``"int8"``.
    float_scores : ndarray of float32, shape (P,), or None
        The ``.keras`` model's scores when :attr:`scores` are the int8 model's (07's
        threshold was fitted on these).
    """

    decision: Decision
    pairs: pd.DataFrame
    paths1: list
    paths2: list
    y: np.ndarray
    scores: np.ndarray
    data: object = None
    global_model: Path | None = None
    float_scores: np.ndarray | None = None


def int8_global_model(model_path, calibration_paths, *, images: int = 128, seed: int = 0) -> Path:
    """The global model quantised to int8 (:func:`~nnutils.models.runtime.convert_to_tflite`), once.

    Parameters
    ----------
    model_path : path
        The ``.keras`` embedder.
    calibration_paths : sequence of str or None
        Candidate calibration images (notebook 10 passes the TRAIN split's: validation only
        scores); ``images`` of them are drawn with ``seed`` and decoded as the model reads
        them (:func:`~nnutils.data.decode.decode_square`), unreadable ones skipped.
    images : int, default 128
    seed : int, default 0

    Returns
    -------
    Path
        ``<stem>.int8.tflite`` next to the model (:func:`~nnutils.models.runtime.tflite_path_for`),
        reused while it is at least as new as the ``.keras`` file.

    Raises
    ------
    ValueError
        When none of the calibration images is readable.
    """
    model_path = Path(model_path)
    out = tflite_path_for(model_path, None, "int8")
    if conversion_is_current(model_path, out):
        return out
    size = int(load_model(model_path).input.shape[1])
    cands = [p for p in dict.fromkeys(calibration_paths) if p]
    order = np.random.default_rng(seed).permutation(len(cands))
    squares = []
    for i in order:
        x = decode_square(cands[i], size)
        if x is not None:
            squares.append(x)
        if len(squares) >= images:
            break
    if not squares:
        raise ValueError(f"int8 calibration of {model_path.name}: none of {len(cands)} images is readable")
    return convert_to_tflite(model_path, out, quantize="int8", calibration=squares)


def validation_set(cfg, *, progress: bool = True) -> ValidationSet:
    """The validation pairs, files, labels and global scores notebook 10 fits its fusion on.

    Parameters
    ----------
    cfg : mapping
        Notebook 10's profile settings (:func:`nnutils.profiles.resolve`; ``run_dir``,
        ``seed``, ...). With ``global_quantize: int8`` the scores are those of 07's model
        quantised to int8 (:func:`int8_global_model`, calibrated on training images), which
        the one pass of ``predict`` runs (~3 ms per image cheaper than the float model); the
        float model's are kept in :attr:`ValidationSet.float_scores`. Both models' embeddings
        are cached by image content under ``<run_dir>/features`` (a second call embeds nothing).
    progress : bool, default True

    Returns
    -------
    ValidationSet

    Raises
    ------
    FileNotFoundError
        When the run folder lacks notebook 02's or 07's outputs (naming the step to run).
    ValueError
        An unknown ``global_quantize``.
    """
    quantize = cfg.get("global_quantize", "none") or "none"
    if quantize not in ("none", "int8"):
        raise ValueError(f"global_quantize must be 'none' or 'int8', got {quantize!r}")
    run_dir = Path(cfg.run_dir)
    decision = Decision.load(run_dir, verification=False).for_embeddings()
    data = load_run_data(cfg)
    val = data.val.reset_index(drop=True)
    scores = model_scores(decision.model_path, val, data.path_of, cache_dir=run_dir / "features", progress=progress)
    p1, p2 = list(val.image_url1.map(data.path_of)), list(val.image_url2.map(data.path_of))
    if quantize == "none":
        return ValidationSet(decision, val, p1, p2, val.is_same.to_numpy(), scores, data)
    gm = int8_global_model(decision.model_path, [data.path_of.get(u) for u in data.train_urls], seed=cfg.seed)
    q = _pair_scores(val, data.path_of, lambda paths: embed_cached(
        TFLiteEmbedder(gm), gm, "tflite", paths, run_dir / "features", progress=progress)[:2])
    return ValidationSet(decision, val, p1, p2, val.is_same.to_numpy(), q, data, global_model=gm, float_scores=scores)


def phash_scores(pairs: pd.DataFrame, path_of: dict, progress: bool = True) -> np.ndarray:
    """``1 - Hamming / 64`` of 64-bit pHashes per pair; NaN where an image is unreadable.

    Parameters
    ----------
    pairs : DataFrame, N rows
        With ``image_url1`` and ``image_url2``.
    path_of : dict of str to str or None
        URL → local file.
    progress : bool, default True
        Show a progress bar.

    Returns
    -------
    ndarray of float, shape (N,)
        Similarity in [0, 1]; NaN where either image is unreadable.
    """
    paths = [p for p in (path_of.get(u) for u in pd.concat([pairs.image_url1, pairs.image_url2])) if p]
    hashes = baselines.hash_images(paths, progress=progress)
    return baselines.hash_similarity(hashes, pairs.image_url1.map(path_of), pairs.image_url2.map(path_of))


def collect_scores(run_dir, pairs: pd.DataFrame, path_of: dict, progress: bool = True) -> pd.DataFrame:
    """One column of scores per saved model plus ``phash``; rows align with ``pairs``.

    Parameters
    ----------
    run_dir : str or Path
        The run folder; its ``models/*.keras`` are scored, embeddings cached under
        ``features/``.
    pairs : DataFrame, N rows
        With ``image_url1`` and ``image_url2``.
    path_of : dict of str to str or None
        URL → local file.
    progress : bool, default True
        Show progress bars.

    Returns
    -------
    DataFrame, N rows
        Indexed like ``pairs``: ``phash`` (in [0, 1]) and one cosine column per model (in
        [-1, 1]); NaN where an image is unreadable.
    """
    cols = {"phash": phash_scores(pairs, path_of, progress)}
    for name, path in list_models(run_dir).items():
        cols[name] = model_scores(path, pairs, path_of, cache_dir=Path(run_dir) / "features", progress=progress)
    return pd.DataFrame(cols, index=pairs.index)


def decide(scores: pd.DataFrame, y, k: int = 5, seed: int = 0) -> pd.DataFrame:
    """Per model: ROC AUC, the k-fold CV threshold and its spread, held-out F1 — sorted best first.

    Pairs with an unreadable image are left out here (the policy decides them anyway).

    Parameters
    ----------
    scores : DataFrame, N rows
        One column of scores per model (:func:`collect_scores`).
    y : array-like of 0/1, shape (N,)
        Labels.
    k : int, default 5
        Cross-validation folds (:func:`nnutils.decide.thresholds.cv_threshold`).
    seed : int, default 0
        Seed of the folds.

    Returns
    -------
    DataFrame
        One row per model: ``model``, ``roc_auc``, ``cv_f1``, ``cv_f1_std``, ``threshold``,
        ``threshold_std`` and ``fold_thresholds``; sorted by ``cv_f1`` then ``roc_auc``,
        descending.
    """
    from sklearn.metrics import roc_auc_score
    rows = []
    y = np.asarray(y).astype(int)
    for name in scores:
        s = scores[name].to_numpy()
        ok = ~np.isnan(s)
        cv = cv_threshold(y[ok], s[ok], k=k, seed=seed)
        rows.append(dict(model=name, roc_auc=roc_auc_score(y[ok], s[ok]), cv_f1=cv["cv_f1"],
                         cv_f1_std=cv["cv_f1_std"], threshold=cv["threshold"], threshold_std=cv["threshold_std"],
                         fold_thresholds=cv["fold_thresholds"]))
    return pd.DataFrame(rows).sort_values(["cv_f1", "roc_auc"], ascending=False, ignore_index=True)


def hardest_errors(pairs: pd.DataFrame, scores, threshold: float, n: int = 6) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The ``n`` most confident false positives (highest scores) and false negatives (lowest).

    Parameters
    ----------
    pairs : DataFrame, N rows
        With ``is_same``.
    scores : array-like of float, shape (N,)
        Scores of the pairs; NaN rows are left out.
    threshold : float
        Decide ``score >= threshold``.
    n : int, default 6
        Rows per table.

    Returns
    -------
    fp : DataFrame
        Negatives decided 1, highest score first, with a ``score`` column.
    fn : DataFrame
        Positives decided 0, lowest score first, with a ``score`` column.
    """
    s = np.asarray(scores, float)
    df = pairs.assign(score=s)
    df = df[~np.isnan(s)]
    fp = df[(df.is_same == 0) & (df.score >= threshold)].sort_values("score", ascending=False).head(n)
    fn = df[(df.is_same == 1) & (df.score < threshold)].sort_values("score").head(n)
    return fp, fn


def check_by_kind(pairs: pd.DataFrame, checks: dict) -> pd.DataFrame:
    """Per kind of pair, the share that each local check decides correctly by its own verdict.

    Parameters
    ----------
    pairs : DataFrame, P rows
        With ``is_same``, ``distortion`` and ``negative_kind``.
    checks : ``{name: DataFrame}``
        :func:`nnutils.local.verify.verify_pairs` rows (P each; column ``passed``).

    Returns
    -------
    DataFrame
        Indexed by kind (distortions of positives, then kinds of negatives): ``pairs`` and,
        per check, ``correct`` (for positive kinds the share that passed, for negative kinds
        the share that did not); columns are a MultiIndex ``(name, "pairs"|"correct")``.
    """
    def per_kind(rows):
        passed = rows.passed.astype(float).to_numpy()
        return pd.concat([breakdown(pairs, passed, 0.5, "distortion"), breakdown(pairs, passed, 0.5, "negative_kind")])

    tables = {name: per_kind(rows) for name, rows in checks.items()}
    first = next(iter(tables))
    return pd.concat({name: t[["pairs", "correct"]] if name == first else t[["correct"]]
                      for name, t in tables.items()}, axis=1)


def local_check_table(checks: dict, y, global_scores, threshold: float) -> pd.DataFrame:
    """How well each local check separates the validation pairs on its own, and what it costs.

    Parameters
    ----------
    checks : ``{name: DataFrame}``
        :func:`nnutils.local.verify.verify_pairs` rows (P each; ``inliers``, ``passed``, ``ms``).
    y : (P,) 0/1 labels
    global_scores : (P,) the global model's cosine similarities (NaN = unreadable)
    threshold : the global threshold, for the reference row

    Returns
    -------
    DataFrame
        One row per check plus ``"global cosine (for reference)"``: ``inliers ROC AUC``
        (inlier count as a score; NaN counts 0), ``passed F1`` (the check's verdict) and
        ``ms per pair`` (mean milliseconds, extraction shared between pairs).
    """
    y = np.asarray(y, int)

    def auc(x):
        return pair_metrics(y, np.nan_to_num(np.asarray(x, float), nan=0.0), 0.5)["roc_auc"]

    rows = {name: {"inliers ROC AUC": auc(r.inliers), "passed F1": pair_metrics(y, r.passed.astype(int), 0.5)["f1"],
                   "ms per pair": float(r.ms.mean())} for name, r in checks.items()}
    s = np.asarray(global_scores, float)
    rows["global cosine (for reference)"] = {"inliers ROC AUC": auc(s),
                                             "passed F1": pair_metrics(y, np.nan_to_num(s, nan=-1), threshold)["f1"],
                                             "ms per pair": np.nan}
    return pd.DataFrame(rows).T
