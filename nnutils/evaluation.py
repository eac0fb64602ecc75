"""Scores of every saved model (and the baselines) on a pairs table, and the decision that 08 applies.

Used by notebook 07 on validation pairs, by notebook 08 and ``nnutils.predict`` on test
pairs. Embeddings are cached under ``cache_dir`` by image content and model file, so a
rerun embeds nothing twice.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from . import baselines
from .features import embed_images, model_key
from .inference import score_pairs
from .thresholds import cv_threshold

__all__ = ["list_models", "model_scores", "phash_scores", "collect_scores", "decide", "hardest_errors",
           "write_decision", "read_decision", "embedding_decision", "test_kinds"]


def list_models(run_dir) -> dict[str, Path]:
    """``{name: path}`` of the image → embedding models saved in ``<run_dir>/models``."""
    return {p.stem: p for p in sorted((Path(run_dir) / "models").glob("*.keras"))}


def model_scores(model_path, pairs: pd.DataFrame, path_of: dict, *, cache_dir=None, batch_size: int = 32,
                 progress: bool = True) -> np.ndarray:
    """Cosine similarity per pair (N,) with a saved embedder; NaN where an image is unreadable."""
    from .experiments import load_model
    model_path = Path(model_path)
    model = load_model(model_path)
    size = int(model.input.shape[1])
    urls = list(dict.fromkeys(pd.concat([pairs.image_url1, pairs.image_url2])))
    key = model_key(model_path.stem, model_path.stat().st_mtime_ns)
    emb, ok = embed_images(model, [path_of.get(u) for u in urls], size, cache_dir=cache_dir, key=key,
                           batch_size=batch_size, progress=progress, desc=model_path.stem)
    idx = {u: i for i, u in enumerate(urls)}
    return score_pairs(emb, ok, pairs.image_url1.map(idx), pairs.image_url2.map(idx))


def phash_scores(pairs: pd.DataFrame, path_of: dict, progress: bool = True) -> np.ndarray:
    """``1 - Hamming / 64`` of 64-bit pHashes per pair; NaN where an image is unreadable."""
    paths = [p for p in (path_of.get(u) for u in pd.concat([pairs.image_url1, pairs.image_url2])) if p]
    hashes = baselines.hash_images(paths, progress=progress)
    return baselines.hash_similarity(hashes, pairs.image_url1.map(path_of), pairs.image_url2.map(path_of))


def collect_scores(run_dir, pairs: pd.DataFrame, path_of: dict, progress: bool = True) -> pd.DataFrame:
    """One column of scores per saved model plus ``phash``; rows align with ``pairs``."""
    cols = {"phash": phash_scores(pairs, path_of, progress)}
    for name, path in list_models(run_dir).items():
        cols[name] = model_scores(path, pairs, path_of, cache_dir=Path(run_dir) / "features", progress=progress)
    return pd.DataFrame(cols, index=pairs.index)


def decide(scores: pd.DataFrame, y, k: int = 5, seed: int = 0) -> pd.DataFrame:
    """Per model: ROC AUC, the k-fold CV threshold and its spread, held-out F1 — sorted best first.

    Pairs with an unreadable image are left out here (the policy decides them anyway).
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


def test_kinds(data_dir, ids) -> pd.DataFrame:
    """``distortion`` and ``negative_kind`` of test pairs by ``ID`` from the embedded data's
    ``metadata.csv`` (rows aligned with ``ids``; empty strings where unknown or for real data)."""
    path = Path(data_dir) / "metadata.csv"
    cols = ["distortion", "negative_kind"]
    if not path.exists():
        return pd.DataFrame({c: [""] * len(ids) for c in cols})
    meta = pd.read_csv(path, keep_default_na=False)
    out = meta[meta.split == "test"].set_index("row")[cols].reindex(list(ids))
    return out.fillna("").reset_index(drop=True)


def hardest_errors(pairs: pd.DataFrame, scores, threshold: float, n: int = 6) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The ``n`` most confident false positives (highest scores) and false negatives (lowest)."""
    s = np.asarray(scores, float)
    df = pairs.assign(score=s)
    df = df[~np.isnan(s)]
    fp = df[(df.is_same == 0) & (df.score >= threshold)].sort_values("score", ascending=False).head(n)
    fn = df[(df.is_same == 1) & (df.score < threshold)].sort_values("score").head(n)
    return fp, fn


def write_decision(run_dir, model: str, threshold: float, **extra) -> Path:
    """``<run_dir>/decision.json``: the model and threshold that notebook 08 and ``predict`` apply."""
    path = Path(run_dir) / "decision.json"
    model_path = Path(run_dir) / "models" / f"{model}.keras" if model != "phash" else None
    path.write_text(json.dumps(dict(model=model, model_path=str(model_path) if model_path else None,
                                    threshold=float(threshold), **extra), indent=2, default=float))
    return path


def read_decision(run_dir) -> dict:
    """The decision written by notebook 07; ``FileNotFoundError`` naming the notebook if absent."""
    path = Path(run_dir) / "decision.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run 07_threshold_sweep first "
                                "(python -m nnutils.pipeline --only 07)")
    return json.loads(path.read_text())


def embedding_decision(run_dir) -> dict:
    """Like :func:`read_decision`, but always an embedding model (collections need vectors to index).

    When 07 chose ``phash`` for pairs, this is the best embedding model of 07's sweep
    (``metrics/07_threshold_sweep.csv``, by cross-validated F1) with its threshold, marked
    ``"fallback_from": "phash"``.
    """
    d = read_decision(run_dir)
    if d.get("model_path"):
        return d
    sweep_csv = Path(run_dir) / "metrics" / "07_threshold_sweep.csv"
    if not sweep_csv.exists():
        raise FileNotFoundError(f"{sweep_csv} not found: rerun 07_threshold_sweep")
    sw = pd.read_csv(sweep_csv)
    sw = sw[sw.model != "phash"].sort_values("cv_f1", ascending=False)
    if sw.empty:
        raise ValueError(f"{sweep_csv}: no embedding model was evaluated")
    best = sw.iloc[0]
    return dict(model=best.model, model_path=str(Path(run_dir) / "models" / f"{best.model}.keras"),
                threshold=float(best.threshold), cv_f1=float(best.cv_f1), fallback_from=d["model"])
