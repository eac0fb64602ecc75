"""The decision a run passes on: which model, at which threshold."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd


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


def _resolve_model(model, threshold):
    if str(model) == "phash":
        if threshold is None:
            raise ValueError("--threshold is required with --model phash")
        return "phash", threshold, "phash"
    model = Path(model)
    if model.is_dir():
        from nnutils.decide.decision import read_decision
        d = read_decision(model)
        path = d["model_path"]
        return (Path(path) if path else "phash"), (d["threshold"] if threshold is None else threshold), d["model"]
    if not model.exists():
        raise FileNotFoundError(f"model {model} not found (give a run folder with decision.json or a .keras file)")
    if threshold is None:
        raise ValueError(f"--threshold is required with a model file ({model}); a run folder provides its own")
    return model, threshold, model.stem


def _resolve_fusion(verify, model, name: str):
    """The Fusion to apply, or None. ``verify``: None/False (off), "auto" (the run folder's
    ``fusion.joblib`` if present), True (the run folder's, required) or a path."""
    if verify in (None, False, "off", "none"):
        return None
    from nnutils.decide.fusion import Fusion
    if verify in (True, "auto", "on"):
        if not Path(str(model)).is_dir():
            if verify == "auto":
                return None
            raise ValueError("verify=True needs --model to be a run folder (it holds fusion.joblib); "
                             "or give the fusion file")
        path = Path(model) / "fusion.joblib"
        if verify == "auto" and not path.is_file():
            return None
    else:
        path = Path(verify)
    fz = Fusion.load(path)
    if fz.global_model is not None and fz.global_model != name:
        raise ValueError(f"{path} was trained on the scores of model {fz.global_model!r}, not {name!r}; "
                         "rerun 10_local_verification for this model")
    return fz
