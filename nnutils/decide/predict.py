"""Decide every pair of a LUN-format pairs table with a run's decision, end to end.

Each distinct image is decoded and embedded once, batched, with the TFLite runtime by
default; embeddings are cached on disk by image content, so a rerun or another CSV over the
same images costs almost nothing. Pairs with an unreadable image are predicted 0 and counted
(the unreadable-image policy). Notebook 08 and ``python -m nnutils.predict`` call
:func:`predict_pairs`.

With a decision that verifies, prediction is one pass per image by default
(:func:`nnutils.decide.onepass.embed_and_describe`): each distinct image is decoded once
and gives its embedding, its local features (the decision's local check) and the facts of
the fused decision, all cached by content; verifying a pair then matches two cached
feature sets and fits the geometric model, decoding nothing. Its embedding is resized from
the local extractor's decode, not from :func:`decode_square`'s, so global scores move
slightly (smoke: median 0.004, max 0.031) away from the validation scores the fusion was
fitted on. With every candidate verified (the verify range ``(bound, inf)``, the bound 0.05
below the lowest validation positive) that does not change a decision of the embedded test
split (cpu run of 2026-12-01: F1 0.9804 and the same 10 errors both ways, ``python
bench/quality.py --two-decode``). ``one_pass=False`` embeds with :func:`decode_square`, then
decodes and extracts the verified pairs' images again (the path the band was fitted for).
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from nnutils.data.pairs import read_pairs, resolve_images, unique_urls
from nnutils.decide.decision import Decision
from nnutils.decide.hashes import hash_images, hash_similarity
from nnutils.decide.submission import make_submission
from nnutils.decide.onepass import embed_and_describe
from nnutils.local.features_cache import LocalSpec
from nnutils.models.embedders import embed_cached, score_pairs


@dataclass
class Prediction:
    """What :func:`predict_pairs` returns for N pairs.

    Parameters
    ----------
    submission : DataFrame
        ``ID, is_same`` (int 0/1), N rows.
    scores : ndarray of float, shape (N,)
        Cosine similarity (or hash similarity); NaN if unreadable.
    unreadable : ndarray of bool, shape (N,)
        Pairs decided by the unreadable-image policy.
    report : dict
        Counts and timings (seconds).
    verification : DataFrame or None
        With ``predict_pairs(details=True)`` and a verifying decision: one row per verified
        pair, ``ID`` and why it was decided so (``global``, ``fused_p``,
        ``fused_threshold``, ``vetoed`` and the geometric check's ``reason``, ``inliers``,
        ``scale``, ``rotation_deg``, coverage, ``perspective``, ``dense_residual``,
        ``mirrored``, ...; :func:`nnutils.decide.fusion.verify_band`); else None.
    """
    submission: pd.DataFrame   # ID, is_same
    scores: np.ndarray         # (N,) cosine similarity (or hash similarity), NaN if unreadable
    unreadable: np.ndarray     # (N,) bool: pairs decided by the unreadable-image policy
    report: dict               # counts and timings
    verification: pd.DataFrame | None = None   # details=True: one row per verified pair


def resolve_verification(decision: Decision, verify, model) -> Decision:
    """``decision`` with the verification that ``verify`` asks for.

    Parameters
    ----------
    decision : Decision
        The global decision (:meth:`Decision.resolve` of ``model``).
    verify : None, bool, str or path
        None/False/"off": none; "auto": the run folder's verification when it has one that
        fits the model and threshold, else none (with a warning when it does not fit);
        "on" (or True): required; a path: the verification of that ``decision.json`` / run
        folder.
    model : str or Path
        What ``decision`` came from (a run folder for "auto"/"on").

    Returns
    -------
    Decision

    Raises
    ------
    ValueError, FileNotFoundError
        "on" without a run folder or without a verification; a verification fitted for
        another model or threshold (unless "auto").
    """
    if verify in (None, False, "off", "none"):
        return decision.without_verification()
    if verify in (True, "auto", "on"):
        if not Path(str(model)).is_dir():
            if verify == "auto":
                return decision.without_verification()
            raise ValueError("verify=on needs --model to be a run folder (its decision.json holds the verification); "
                             "or give the decision file to verify with")
        saved = Decision.load(model)
        if not saved.verifies:
            if verify == "auto":
                return decision.without_verification()
            raise FileNotFoundError(f"{Path(model) / 'decision.json'} has no verification: "
                                    "run 10_local_verification to train the fused decision")
        if verify == "auto":
            try:
                return decision.verified_like(saved, source=str(model))
            except ValueError as e:   # e.g. --threshold moved the global decision away from the fusion's
                warnings.warn(f"verify=auto: deciding by the global score alone: {e}", stacklevel=3)
                return decision.without_verification()
        return decision.verified_like(saved, source=str(model))
    return decision.verified_like(Decision.load(verify), source=str(verify))


def predict_pairs(pairs, images_dir, model, *, threshold: float | None = None, runtime: str = "tflite",
                  cache_dir=None, batch_size: int = 32, progress: bool = True, verify=None,
                  one_pass: bool | None = None, details: bool = False) -> Prediction:
    """Decide every pair of a LUN ``test``-format table or CSV path.

    Parameters
    ----------
    pairs : DataFrame or path of a ``test`` CSV (``ID,image_url1,image_url2``)
    images_dir : folder that relative image paths are relative to (None: paths as given)
    model : a run folder (its :class:`~nnutils.decide.decision.Decision`), a ``.keras`` /
        ``.tflite`` embedder or ``"phash"`` (the last two need ``threshold``)
    threshold : overrides the run folder's threshold
    runtime : "tflite" | "keras"; a verification fitted on an int8 model's scores
        (:attr:`~nnutils.decide.decision.Decision.global_model`) embeds with that ``.tflite``
        file whatever this says
    cache_dir : embedding and download cache (by file content)
    verify : local verification and the fused decision of notebook 10 for the pairs in the
        decision's verify range: None/"off" (global threshold only), "auto" (the run
        folder's verification when it has one), "on" (required), or a path of a
        ``decision.json`` / run folder whose verification to use (same model and threshold)
    one_pass : with a verifying decision, decode each image once for its embedding, local
        features and facts; None (default): one pass when the decision verifies every
        candidate (its verify range is unbounded above), the two-decode path for a band;
        False: always the two-decode path (see the module docstring)
    details : with a verifying decision, also return each verified pair's check and fused
        probability (:attr:`Prediction.verification`)

    Returns
    -------
    Prediction
        ``report`` holds ``pairs``, ``images``, ``images_embedded`` (embedded now, i.e. not
        found in the cache), ``unreadable_images``, ``pairs_unreadable`` (predicted 0),
        ``predicted_same``, ``seconds`` (wall, end to end: reading, decoding, embedding,
        scoring, verifying; the one-off model load/conversion is ``model_load_s``),
        ``ms_per_pair``, ``images_per_s``, ``runtime``, ``model``, ``global_model`` (the file
        embedded with: ``<model>.int8.tflite`` when the verification reads it), ``threshold``; with
        verification also ``pairs_verified``, ``share_verified``, ``verify_s``,
        ``ms_per_verified_pair`` and ``fusion``; with the one pass also ``one_pass`` (its
        report: ``decoded``, ``extracted``, ``cached``, ``ms_local_per_image``, ...) and
        ``images_decoded`` (decoded by the verification: 0 when the pass covered them).
    """
    t_load = time.perf_counter()
    decision = resolve_verification(Decision.resolve(model, threshold), verify, model)
    threshold, name = decision.threshold, decision.model
    embedder = None
    model_file = decision.pair_model_path   # the int8 model when the verification was fitted on its scores
    if decision.global_model is not None:
        runtime = "tflite"
    if decision.model_path is not None:  # loaded (and converted to TFLite, once) before the clock starts
        embedder = decision.pair_embedder(runtime=runtime, cache_dir=cache_dir)
    load_s = time.perf_counter() - t_load
    t0 = time.perf_counter()
    test = pairs if isinstance(pairs, pd.DataFrame) else read_pairs(pairs, "test")
    images_dir = Path(images_dir) if images_dir is not None else None
    urls = unique_urls(test)
    if images_dir is not None and not images_dir.is_dir() and any(not u.startswith(("http://", "https://", "/"))
                                                                   for u in urls):
        raise FileNotFoundError(f"images folder {images_dir} not found (the CSV has relative image paths)")
    cache_dir = Path(cache_dir) if cache_dir else None
    path_of = resolve_images(urls, images_dir, cache_dir=(cache_dir / "downloads") if cache_dir else None,
                             progress=progress).to_dict()
    paths = [path_of[u] for u in urls]
    t_embed = time.perf_counter()
    records = None
    if embedder is None:  # the perceptual hash
        hashes = hash_images([p for p in paths if p], progress=progress)
        ok = np.array([p is not None and hashes.get(p) is not None for p in paths])
        scores = hash_similarity(hashes, test.image_url1.map(path_of), test.image_url2.map(path_of))
        embedded = int(ok.sum())
    else:
        if one_pass is None:   # a band was fitted on decode_square's scores; the candidates range is not sensitive
            one_pass = bool(decision.verifies and np.isinf(decision.verify_range[1]))
        if decision.verifies and decision.local_method and one_pass:
            spec = LocalSpec.from_decision(decision.local_method, decision.local_kw, decision.local_model)
            pairs = (test.image_url1.map(path_of).tolist(), test.image_url2.map(path_of).tolist())  # who is mirrored
            emb, ok, records, pass_report = embed_and_describe(
                embedder, model_file, runtime, paths, spec, cache_dir, hash_kinds=decision.fusion.hash_kinds,
                batch_size=batch_size, pairs=pairs, progress=progress)
            embedded = pass_report["embedded"]
        else:
            emb, ok, embedded = embed_cached(embedder, model_file, runtime, paths, cache_dir, batch_size, progress)
        idx = {u: i for i, u in enumerate(urls)}
        scores = score_pairs(emb, ok, test.image_url1.map(idx), test.image_url2.map(idx))
    embed_s = time.perf_counter() - t_embed
    unreadable = np.isnan(scores)
    sub = make_submission(test, scores, threshold, unreadable)
    vreport = {}
    verification = None
    if decision.verifies:
        p1, p2 = list(test.image_url1.map(path_of)), list(test.image_url2.map(path_of))
        decisions, vreport = decision.decide(scores, p1, p2, features=records, details=details, progress=progress)
        if details:
            d = vreport.pop("details")
            verification = pd.concat([pd.DataFrame({"ID": test.ID.to_numpy()[d.pair.to_numpy(int)]}),
                                      d.drop(columns="pair").reset_index(drop=True)], axis=1)
        if records is not None:
            vreport["one_pass"] = pass_report
        sub = sub.assign(is_same=decisions)
    seconds = time.perf_counter() - t0
    report = dict(pairs=len(test), images=len(urls), images_embedded=int(embedded),
                  unreadable_images=int((~ok).sum()), pairs_unreadable=int(unreadable.sum()),
                  predicted_same=int(sub.is_same.sum()), seconds=round(seconds, 3),
                  ms_per_pair=round(1000 * seconds / max(1, len(test)), 3),
                  images_per_s=round(embedded / embed_s, 1) if embedded and embed_s > 0 else None,
                  model_load_s=round(load_s, 2),
                  runtime=runtime if embedder is not None else "imagehash", model=name, threshold=float(threshold),
                  global_model=model_file.name if model_file is not None else None, **vreport)
    return Prediction(sub, scores, unreadable, report, verification)
