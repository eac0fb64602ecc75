"""Pooling of the untrained pretrained backbone on the validation split: global (gap, GeM, R-MAC) vs a 2×2 grid.

    python bench/pooling.py                                   # runs/cpu (after notebooks 01-02), cpu profile
    python bench/pooling.py --run-dir runs/smoke --profile smoke
    python bench/pooling.py --poolings gap grid2 grid3 pyramid

Needs a run folder made by notebooks 01-02 (``python -m nnutils.pipeline --profile cpu
--only 01 02``): their validation pairs, groups and image paths. The backbone of notebook
03's settings (``profiles.resolve("03_siamese_bce", PROFILE)``: backbone, weights, image
size) runs once, frozen, on every train/validation image (:func:`nnutils.train.runs.setup`;
the last feature maps are cached in ``<run_dir>/features``, shared with notebook 03, so a
second run is seconds). Each pooling is then an untrained "head" on the same maps
(:func:`nnutils.models.heads.build_raw_top`: pooling → L2 normalisation, no weights
learned), scored by cosine similarity per validation pair and
:func:`nnutils.decide.scoring.evaluate` at the F1-optimal threshold on validation (the
threshold is chosen on the same pairs it is scored on: an upper bound, the same for every
pooling). Pairs with an unreadable image are left out. The false-positive rate of each
hard negative kind (``other_crop``: another crop of the same photo, ``same_scene``,
``similar_colour``) is the share of those validation pairs at or above that threshold.

Prints one markdown table; no asserts.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFAULT_POOLINGS = ("gap", "gem", "rmac", "grid2")
KINDS = ("other_crop", "same_scene", "similar_colour")


def kind_fp_rates(scores, pairs, threshold: float, kinds=KINDS) -> dict:
    """False-positive rate per negative kind at ``threshold``.

    Parameters
    ----------
    scores : numpy.ndarray
        Cosine similarity per pair, shape (N,); NaN where an image is unreadable (left out).
    pairs : pandas.DataFrame
        The N pairs, with columns ``is_same`` (0/1) and ``negative_kind`` (str, "" for
        positives and random negatives).
    threshold : float
        Decision threshold on the cosine similarity (a pair is "same" at or above it).
    kinds : sequence of str
        The negative kinds to report.

    Returns
    -------
    dict
        ``{kind: (fp_rate, n)}``: the share (0-1) of readable negatives of that kind scored
        at or above ``threshold``, and how many there are (``fp_rate`` NaN when n is 0).
    """
    import numpy as np

    ok = ~np.isnan(scores)
    out = {}
    for kind in kinds:
        mask = ok & (pairs.negative_kind.to_numpy() == kind) & (pairs.is_same.to_numpy() == 0)
        n = int(mask.sum())
        out[kind] = (float((scores[mask] >= threshold).mean()) if n else float("nan"), n)
    return out


def main(argv=None) -> int:
    """Parse the options, compute the features once, print one row per pooling; returns the exit code."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--run-dir", default=str(ROOT / "runs" / "cpu"),
                    help="run folder written by notebooks 01-02 (default runs/cpu)")
    ap.add_argument("--profile", default="cpu", help="profile whose notebook-03 settings give the backbone (default cpu)")
    ap.add_argument("--poolings", nargs="+", default=list(DEFAULT_POOLINGS),
                    help=f"nnutils.models.heads.make_pooling names (default {' '.join(DEFAULT_POOLINGS)})")
    args = ap.parse_args(argv)

    import numpy as np
    import pandas as pd

    from nnutils import profiles
    from nnutils.decide.scoring import evaluate
    from nnutils.models.heads import build_raw_top
    from nnutils.train.features import embed_bank, pair_scores
    from nnutils.train.runs import load_run_data, setup

    run_dir = Path(args.run_dir).resolve()
    # views=0: the untrained baseline needs only the un-augmented maps (notebook 03 adds its augmented view later)
    cfg = profiles.resolve("03_siamese_bce", args.profile, {"run_dir": str(run_dir), "views": 0, "progress": False})
    try:
        load_run_data(cfg)  # a missing or stale run folder fails here, before the backbone is built
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    data, _trunk, _rest, bank = setup(cfg)
    val = data.val.reset_index(drop=True)
    rows = []
    for pooling in args.poolings:
        top = build_raw_top(bank.shape, pooling)
        emb = embed_bank(top, bank)
        scores = pair_scores(emb, bank, val)
        m = evaluate(scores, val)
        fp = kind_fp_rates(scores, val, m["threshold"])
        rows.append({"pooling": pooling, "dim": int(emb.shape[1]), "val F1 class 1": m["f1"], "macro F1": m["macro_f1"],
                     "ROC AUC": m["roc_auc"], "threshold": m["threshold"], "FP": int(m["fp"]), "FN": int(m["fn"]),
                     "FP on hard negatives": m.get("hard_negative_fp_rate", np.nan),
                     **{f"FP {k}": fp[k][0] for k in KINDS}})
    ok = ~np.isnan(scores)
    counts = ", ".join(f"{fp[k][1]} {k}" for k in KINDS)
    print(f"validation split of {run_dir}: {int(ok.sum())} readable pairs ({int(val.is_same[ok].sum())} duplicates; "
          f"negatives: {counts}); backbone {cfg.backbone} ({cfg.weights}) at {cfg.image_size} px, untrained, "
          f"feature map {bank.shape}")
    print(f"machine: {os.cpu_count()} cores, {platform.machine()}; threshold: F1-optimal on these pairs; "
          f"FP rates are shares of each negative kind at or above it")
    table = pd.DataFrame(rows).set_index("pooling").astype({"dim": str, "FP": str, "FN": str})  # counts stay integers
    print(table.to_markdown(floatfmt=".4f"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
