"""The decision a run passes on, built, saved, loaded, validated and applied by one object.

A :class:`Decision` says how two images are judged: the global model (an embedding model
saved in the run folder, or the perceptual hash ``phash``) and its threshold, chosen by
notebook 07; optionally the verification of notebook 10: which pairs are verified (the
global scores in ``verify_range``, inclusive; ``(lo, inf)`` verifies every candidate at or
above a lower bound), with which local check (``sift``, ``orb``, ``delf`` or none) and its
options, and the :class:`~nnutils.decide.fusion.Fusion` that decides them. Pairs outside the
range keep the global decision; pairs with an unreadable image are 0 (the unreadable-image
policy).

On disk it is ``<run_dir>/decision.json``, a versioned format (``"format":
"nnutils.decision"``, ``"version": 1``) holding every setting as plain JSON; the fitted
scikit-learn estimator of the fusion, the only object that is not plain data, is
``<run_dir>/decision_fusion.joblib`` (a pickle of scikit-learn classes only, so moving or
renaming nnutils' own classes never breaks a saved run). Paths inside the run folder are
stored relative to it, so a run folder can be moved or copied (e.g. into a Kaggle kernel).
A ``decision.json`` written before the format existed (model, model_path, threshold) is
read as version 0.

``predict``, ``dedup``, notebooks 07–10 and ``bench/quality.py`` use this object only.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

import joblib
import numpy as np
import pandas as pd

from nnutils.decide.fusion import Fusion, apply_fusion, in_band, verify_band
from nnutils.models.embedders import embed_cached, load_embedder, score_pairs

__all__ = ["Decision", "FORMAT", "VERSION", "LOCAL_METHODS"]

FORMAT = "nnutils.decision"
VERSION = 1
#: The local checks a decision can verify with (None: the fusion reads no local features).
LOCAL_METHODS = ("sift", "orb", "delf")
_FUSION_FILE = "decision_fusion.joblib"


def _rel(path, run_dir) -> str | None:
    """``path`` relative to ``run_dir`` when it lies inside it, else absolute (None stays None)."""
    if path is None:
        return None
    p = Path(path).resolve()
    try:
        return str(p.relative_to(Path(run_dir).resolve()))
    except ValueError:
        return str(p)


def _abs(path, run_dir) -> Path | None:
    if path is None:
        return None
    p = Path(path)
    return p if p.is_absolute() else Path(run_dir) / p


@dataclass
class Decision:
    """How pairs are decided: a global model and threshold, optionally verified and fused.

    Parameters
    ----------
    model : str
        Name of the global model (``models/<model>.keras`` of the run) or ``"phash"``.
    threshold : float
        Global score (cosine similarity, or ``1 - Hamming/64`` for ``phash``) at or above
        which a pair is a duplicate.
    model_path : Path or None
        The ``.keras`` embedder; None for ``phash``.
    info : dict
        How the model and threshold were chosen (e.g. ``cv_f1``, ``cv_f1_std``,
        ``threshold_std``, ``roc_auc``, ``folds``; ``fallback_from``).
    fusion : Fusion or None
        The fitted fused decision for the verified pairs.
    verify_range : (float, float) or None
        Global scores verified, inclusive; ``hi`` may be ``inf``.
    local_method : {"sift", "orb", "delf"} or None
        The local check whose features the fusion reads.
    local_model : Path or None
        For ``delf``: the saved extractor folder.
    local_kw : dict
        Options of :func:`nnutils.local.verify.verify` the fusion's features were made with.
    global_model : Path or None
        The global model the verification's range and fusion were fitted on when it is not
        ``model_path``: a ``.tflite`` file, 07's model quantised to int8 by notebook 10
        (``global_quantize``; :func:`nnutils.decide.compare.int8_global_model`). Pair
        prediction with this decision embeds with it (:meth:`pair_embedder`); the global
        threshold alone (:meth:`without_verification`), collections and the dedup command's
        grouping use ``model_path``.
    run_dir : Path or None
        The run folder it was loaded from or saved to.
    """

    model: str
    threshold: float
    model_path: Path | None = None
    info: dict = field(default_factory=dict)
    fusion: Fusion | None = None
    verify_range: tuple[float, float] | None = None
    local_method: str | None = None
    local_model: Path | None = None
    local_kw: dict = field(default_factory=dict)
    global_model: Path | None = None
    run_dir: Path | None = None

    # ------------------------------------------------------------------ building
    @classmethod
    def chosen(cls, run_dir, model: str, threshold: float, **info) -> "Decision":
        """The decision of notebook 07: ``model`` of ``run_dir/models`` (or ``phash``) at ``threshold``."""
        path = None if model == "phash" else Path(run_dir) / "models" / f"{model}.keras"
        d = cls(model=str(model), threshold=float(threshold), model_path=path, info=dict(info), run_dir=Path(run_dir))
        d.validate()
        return d

    @classmethod
    def for_model(cls, model, threshold: float) -> "Decision":
        """A decision for a ``.keras`` file (or ``"phash"``) and a given threshold, outside any run folder."""
        if str(model) == "phash":
            if threshold is None:
                raise ValueError("--threshold is required with --model phash")
            return cls(model="phash", threshold=float(threshold))
        path = Path(model)
        if not path.is_file():
            raise FileNotFoundError(f"model {path} not found (give a run folder with decision.json or a .keras file)")
        if threshold is None:
            raise ValueError(f"--threshold is required with a model file ({model}); a run folder provides its own")
        return cls(model=path.stem, threshold=float(threshold), model_path=path)

    @classmethod
    def resolve(cls, model, threshold: float | None = None) -> "Decision":
        """What ``--model`` names: a run folder (its saved decision), a ``.keras`` file or ``phash``.

        ``threshold`` overrides the run folder's threshold; a verification fitted at another
        threshold is then dropped by :meth:`at_threshold`.
        """
        if str(model) != "phash" and Path(model).is_dir():
            d = cls.load(model)
            return d if threshold is None else d.at_threshold(threshold)
        return cls.for_model(model, threshold)

    def with_verification(self, fusion: Fusion, verify_range: tuple[float, float], local_method: str | None,
                          *, local_model=None, local_kw: dict | None = None, global_model=None) -> "Decision":
        """A copy that verifies the pairs in ``verify_range`` and decides them with ``fusion`` (notebook 10).

        Raises ``ValueError`` when the parts do not fit together (see :meth:`validate`).
        """
        d = replace(self, fusion=fusion, verify_range=(float(verify_range[0]), float(verify_range[1])),
                    local_method=local_method, local_model=Path(local_model) if local_model else None,
                    local_kw=dict(local_kw or {}), global_model=Path(global_model) if global_model else None)
        d.validate()
        return d

    def verified_like(self, other: "Decision", source="") -> "Decision":
        """A copy with ``other``'s verification; ``ValueError`` if it was fitted for another model or threshold."""
        if not other.verifies:
            raise ValueError(f"{source or other.run_dir}: this decision has no verification: run 10_local_verification")
        if other.model != self.model:
            raise ValueError(f"{source or other.run_dir}: the verification was trained on the scores of model "
                             f"{other.model!r}, not {self.model!r}; rerun 10_local_verification for this model")
        if not math.isclose(other.threshold, self.threshold, abs_tol=1e-9):
            raise ValueError(f"the fusion was fitted at global threshold {other.threshold:.4f}, not {self.threshold:.4f}: "
                             "drop --threshold or rerun 10_local_verification")
        return self.with_verification(other.fusion, other.verify_range, other.local_method,
                                      local_model=other.local_model, local_kw=other.local_kw,
                                      global_model=other.global_model)

    def adopt_verification(self, other: "Decision | None") -> "Decision":
        """``other``'s verification when it fits this model and threshold (e.g. 07 rerun after 10), else self."""
        if other is None or not other.verifies or other.model != self.model or \
                not math.isclose(other.threshold, self.threshold, abs_tol=1e-9):
            return self
        return self.verified_like(other)

    @classmethod
    def load_if_exists(cls, run_dir) -> "Decision | None":
        """:meth:`load`, or None when the run folder has no ``decision.json`` yet."""
        return cls.load(run_dir) if (Path(run_dir) / "decision.json").exists() else None

    @classmethod
    def load_verified(cls, run_dir) -> "Decision | None":
        """The run's verified decision: ``decision.json`` if it verifies, else ``decision_verified.json``, else None."""
        d = cls.load_if_exists(run_dir)
        if d is not None and d.verifies:
            return d
        other = Path(run_dir) / "decision_verified.json"
        return cls.load(other) if other.exists() else None

    def without_verification(self) -> "Decision":
        """A copy that applies the global threshold alone."""
        return replace(self, fusion=None, verify_range=None, local_method=None, local_model=None, local_kw={},
                       global_model=None)

    def at_threshold(self, threshold: float) -> "Decision":
        """A copy at another global threshold (verification is dropped: it was fitted at this one)."""
        if math.isclose(float(threshold), self.threshold, abs_tol=1e-12):
            return self
        return replace(self.without_verification(), threshold=float(threshold))

    def for_embeddings(self) -> "Decision":
        """This decision if its model is an embedding model; else the best embedding model of 07's sweep.

        Collections need vectors to index. When 07 chose ``phash``, this is the embedding
        model with the best cross-validated F1 in ``metrics/07_threshold_sweep.csv``, at its
        threshold, with ``info["fallback_from"] = "phash"``.
        """
        if self.model_path is not None:
            return self
        if self.run_dir is None:
            raise ValueError("the perceptual hash has no embeddings; give an embedding model")
        sweep_csv = Path(self.run_dir) / "metrics" / "07_threshold_sweep.csv"
        if not sweep_csv.exists():
            raise FileNotFoundError(f"{sweep_csv} not found: rerun 07_threshold_sweep")
        sw = pd.read_csv(sweep_csv)
        sw = sw[sw.model != "phash"].sort_values("cv_f1", ascending=False)
        if sw.empty:
            raise ValueError(f"{sweep_csv}: no embedding model was evaluated")
        best = sw.iloc[0]
        return Decision.chosen(self.run_dir, best.model, float(best.threshold), cv_f1=float(best.cv_f1),
                               fallback_from=self.model)

    # ------------------------------------------------------------------ checking
    @property
    def verifies(self) -> bool:
        """Whether pairs in :attr:`verify_range` are verified and fused."""
        return self.fusion is not None

    @property
    def label(self) -> str:
        """A short name: the model, plus ``+<fusion kind>+<local method>`` when it verifies."""
        if not self.verifies:
            return self.model
        return f"{self.model}+{self.fusion.kind}+{self.local_method or 'no local'}"

    def validate(self) -> None:
        """Raise ``ValueError`` naming what does not fit: a half-built decision is never used."""
        if not math.isfinite(self.threshold):
            raise ValueError(f"decision threshold must be finite, got {self.threshold}")
        if (self.model == "phash") != (self.model_path is None):
            raise ValueError(f"model {self.model!r} with model_path {self.model_path}: an embedding model needs "
                             "its .keras file, phash has none")
        if self.fusion is None:
            if self.verify_range is not None or self.local_method is not None or self.global_model is not None:
                raise ValueError("a verify range, local method or global model without a fusion to decide the "
                                 "verified pairs")
            return
        if self.model == "phash":
            raise ValueError("verification is fitted on an embedding model's scores, not phash")
        if self.fusion.model is None:
            raise ValueError("the fusion is not fitted")
        if self.verify_range is None:
            raise ValueError("a fusion needs a verify range (the global scores it decides)")
        lo, hi = self.verify_range
        if not (lo <= self.threshold <= hi):
            raise ValueError(f"verify range {lo:.4f}…{hi:.4f} must contain the global threshold {self.threshold:.4f}")
        if self.local_method not in (None, *LOCAL_METHODS):
            raise ValueError(f"local_method must be one of {LOCAL_METHODS} or None, got {self.local_method!r}")
        if self.local_method == "delf" and self.local_model is None:
            raise ValueError("local_method 'delf' needs local_model (the saved DELF extractor folder)")
        if self.global_model is not None and Path(self.global_model).suffix != ".tflite":
            raise ValueError(f"global_model must be a .tflite file, got {self.global_model}")
        reads_local = any(f.startswith("lf_") for f in self.fusion.features)
        if reads_local != (self.local_method is not None):
            raise ValueError(f"the fusion {'reads' if reads_local else 'does not read'} local-check features "
                             f"but local_method is {self.local_method!r}")

    # ------------------------------------------------------------------ saving
    def to_dict(self, run_dir) -> dict:
        """The JSON form (paths relative to ``run_dir``); the fusion's estimator is saved apart."""
        out = {"format": FORMAT, "version": VERSION, "model": self.model,
               "model_path": _rel(self.model_path, run_dir), "threshold": float(self.threshold),
               "info": self.info, "verification": None}
        if self.verifies:
            out["verification"] = {
                "range": [float(self.verify_range[0]), float(self.verify_range[1])],
                "local_method": self.local_method, "local_model": _rel(self.local_model, run_dir),
                "local_kw": self.local_kw, "global_model": _rel(self.global_model, run_dir),
                "fusion": self.fusion.to_dict(), "estimator": _FUSION_FILE}
        return out

    def save(self, run_dir=None, filename: str = "decision.json") -> Path:
        """Write ``<run_dir>/<filename>`` (and the fusion's estimator beside it); returns the JSON path.

        ``filename`` is ``decision.json`` (the run's decision) or ``decision_verified.json``
        (notebook 10's verified decision when 07 chose another model, e.g. the hash).
        """
        self.validate()
        run_dir = Path(run_dir or self.run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        stem = Path(filename).stem
        est = run_dir / (_FUSION_FILE if stem == "decision" else f"{stem}_fusion.joblib")
        d = self.to_dict(run_dir)
        if d["verification"]:
            d["verification"]["estimator"] = est.name
        if self.verifies:
            joblib.dump(self.fusion.model, est)
        elif est.exists():
            est.unlink()
        path = run_dir / filename
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(d, indent=2, default=float, allow_nan=True))
        tmp.replace(path)
        self.run_dir = run_dir
        return path

    @classmethod
    def load(cls, run_dir, *, verification: bool = True) -> "Decision":
        """Read ``<run_dir>/decision.json`` (a run folder or the file itself); validated.

        Raises ``FileNotFoundError`` naming the notebook to run when it is absent, and
        ``ValueError`` for another format or a newer version.
        """
        run_dir = Path(run_dir)
        path = run_dir if run_dir.suffix == ".json" else run_dir / "decision.json"
        run_dir = path.parent
        if not path.exists():
            raise FileNotFoundError(f"{path} not found: run 07_threshold_sweep first "
                                    "(python -m nnutils.pipeline --only 07)")
        d = json.loads(path.read_text())
        fmt, version = d.get("format", FORMAT), int(d.get("version", 0))
        if fmt != FORMAT:
            raise ValueError(f"{path}: not a decision file (format {fmt!r})")
        if version > VERSION:
            raise ValueError(f"{path}: decision format version {version} is newer than this nnutils ({VERSION})")
        info = d.get("info", {k: v for k, v in d.items() if k not in ("model", "model_path", "threshold")})
        dec = cls(model=d["model"], threshold=float(d["threshold"]), model_path=_abs(d.get("model_path"), run_dir),
                  info=info, run_dir=run_dir)
        v = d.get("verification") if verification else None   # False: 07's part only (notebook 10 refits the rest)
        if v:
            est = run_dir / v["estimator"]
            if not est.is_file():
                raise FileNotFoundError(f"{est} not found: the decision's fusion estimator is missing; "
                                        "rerun 10_local_verification")
            dec.fusion = Fusion.from_dict(v["fusion"], joblib.load(est))
            dec.verify_range = (float(v["range"][0]), float(v["range"][1]))
            dec.local_method = v.get("local_method")
            dec.local_model = _abs(v.get("local_model"), run_dir)
            dec.local_kw = dict(v.get("local_kw") or {})
            dec.global_model = _abs(v.get("global_model"), run_dir)
            if dec.global_model is not None and not dec.global_model.is_file():
                raise FileNotFoundError(f"{dec.global_model} not found: the verification's (int8) global model is "
                                        "missing; rerun 10_local_verification")
        dec.validate()
        return dec

    # ------------------------------------------------------------------ applying
    def embedder(self, runtime: str = "tflite", cache_dir=None, threads: int = 2):
        """The embedder of the global model (:func:`nnutils.models.embedders.load_embedder`)."""
        if self.model_path is None:
            raise ValueError("the perceptual hash has no embedder")
        return load_embedder(self.model_path, runtime=runtime, cache_dir=cache_dir, threads=threads)

    @property
    def pair_model_path(self) -> Path | None:
        """The file pair prediction embeds with: :attr:`global_model` when set, else :attr:`model_path`."""
        return self.global_model if self.global_model is not None else self.model_path

    def pair_embedder(self, runtime: str = "tflite", cache_dir=None, threads: int = 2):
        """The embedder whose scores this decision's thresholds, range and fusion were fitted on.

        :attr:`global_model` (a ``.tflite`` file: TFLite whatever ``runtime`` says) when the
        verification has one, else :meth:`embedder`.
        """
        if self.global_model is not None:
            return load_embedder(self.global_model, runtime="tflite", threads=threads)
        return self.embedder(runtime=runtime, cache_dir=cache_dir, threads=threads)

    def fusion_scores(self, scores, paths1: Sequence, paths2: Sequence, *, cache_dir=None, batch_size: int = 32,
                      progress: bool = False) -> np.ndarray:
        """The global scores this decision's verify range and fusion read, for pairs scored by :attr:`model_path`.

        A collection or a dedup run finds its candidate pairs with the float model (its
        grouping thresholds were fitted on it); a verification fitted on the int8 model's
        scores (:attr:`global_model`) must read that model's cosine, not the float one's
        (median 0.008 apart on validation, up to 0.08). With :attr:`global_model` set, each
        distinct file of the pairs is embedded by it once (cached by content under
        ``cache_dir``, :func:`nnutils.models.embedders.embed_cached`) and the pairs rescored;
        otherwise ``scores`` come back as given.

        Parameters
        ----------
        scores : array-like, shape (P,)
            Cosine per pair from :attr:`model_path` (NaN: unreadable).
        paths1, paths2 : sequences of str, length P
            The pairs' image files.
        cache_dir : path, optional
        batch_size : int, default 32
        progress : bool, default False

        Returns
        -------
        ndarray of float32, shape (P,)
            NaN where an image is unreadable by either model.
        """
        scores = np.asarray(scores, np.float32)
        if self.global_model is None or not len(scores):
            return scores
        files = list(dict.fromkeys(list(paths1) + list(paths2)))
        row = {f: i for i, f in enumerate(files)}
        emb, ok, _ = embed_cached(self.pair_embedder(), self.global_model, "tflite", files, cache_dir, batch_size,
                                  progress)
        q = score_pairs(emb, ok, [row[f] for f in paths1], [row[f] for f in paths2])
        return np.where(np.isfinite(scores), q, np.nan).astype(np.float32)

    def global_decisions(self, scores) -> np.ndarray:
        """(P,) int 0/1: ``score >= threshold``; NaN scores (unreadable images) are 0."""
        s = np.asarray(scores, float)
        return np.where(np.isfinite(s) & (s >= self.threshold), 1, 0).astype(int)

    def to_verify(self, scores) -> np.ndarray:
        """(P,) bool: the pairs whose global score is in :attr:`verify_range` (none without verification)."""
        if not self.verifies:
            return np.zeros(len(np.asarray(scores)), bool)
        return in_band(scores, self.verify_range)

    def decide(self, scores, paths1: Sequence | None = None, paths2: Sequence | None = None, *,
               features: dict | None = None, details: bool = False,
               progress: bool = False) -> tuple[np.ndarray, dict]:
        """Final (P,) 0/1 decisions for pairs with global ``scores`` (NaN = unreadable image).

        Without verification: the global threshold. With it, the pairs in
        :attr:`verify_range` are verified (``paths1``/``paths2``: the image files, needed
        then) and decided by the fusion; ``features`` (``{path: cached record}`` from
        :func:`nnutils.decide.onepass.embed_and_describe`) lets verification decode nothing. Returns ``(decisions, report)``; the report holds
        ``pairs_verified``, ``share_verified``, ``verify_s``, ``ms_per_verified_pair`` and
        ``fusion`` when it verifies, and is empty otherwise; ``details=True`` adds
        ``details``, one row per verified pair (:func:`nnutils.decide.fusion.verify_band`).
        """
        if not self.verifies:
            return self.global_decisions(scores), {}
        if paths1 is None or paths2 is None:
            raise ValueError("this decision verifies pairs: give the image paths of both sides")
        decisions, report = verify_band(self.fusion, list(paths1), list(paths2), scores,
                                        global_threshold=self.threshold, band=self.verify_range,
                                        local_method=self.local_method, local_model=self.local_model,
                                        local_kw=self.local_kw, features=features, details=details,
                                        progress=progress)
        report["fusion"] = f"{self.fusion.kind}+{self.local_method or 'no local'}"
        return decisions, report

    def decide_oof(self, scores) -> np.ndarray:
        """(P,) 0/1 on the fusion's own training pairs: its nested out-of-fold decisions in the verify range."""
        if not self.verifies or self.fusion.oof is None:
            raise ValueError("no out-of-fold fused decisions: the decision does not verify")
        if len(self.fusion.oof) != len(scores):
            raise ValueError(f"the fusion was fitted on {len(self.fusion.oof)} pairs, got {len(scores)}")
        fz = self.fusion
        fused = fz.oof_pred if fz.oof_pred is not None else (fz.oof >= fz.threshold).astype(int)
        return apply_fusion(scores, self.threshold, self.verify_range, fused)

    def __repr__(self) -> str:
        v = ""
        if self.verifies:
            v = f", verify {self.verify_range[0]:.4f}…{self.verify_range[1]:.4f} with {self.label.split('+', 1)[1]}"
        return f"Decision({self.model!r} at {self.threshold:.4f}{v})"

