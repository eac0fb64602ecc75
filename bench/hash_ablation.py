"""Which perceptual hashes the fused decision needs, and whether monotone constraints help: out-of-fold errors on validation.

    python bench/hash_ablation.py                     # the cpu profile's run (runs/cpu)
    python bench/hash_ablation.py --profile smoke

Rebuilds notebook 10's validation features the way its cell "fused decision" does (07's
global model, the ORB check, hashes, sizes, identity: :func:`nnutils.decide.fusion.pair_features`),
then compares, with :func:`nnutils.decide.fusion.compare_feature_sets` (the notebook's own
folds, fusion kind and seed; nested out-of-fold thresholds), the feature set with every hash
of :data:`KINDS` (pHash, dHash, wHash; notebook 10 fits with
:data:`nnutils.decide.fusion.HASH_KINDS`, pHash alone since this bench said so) against the same
set without each one, with the first alone, and with none; and the full set fitted under the
monotone constraints of :func:`nnutils.decide.fusion.monotone_signs` (``Fusion(monotone=True)``).
Each hash costs time in the one pass
(``python bench/onepass_stages.py``: wavelet hash ~0.9 ms per image, pHash ~0.3, dHash ~0.1,
plus the shared thumbnail ~0.9); a hash whose removal costs no more than the noise of a few
validation pairs is not worth its time. Validation only: the shifted set is never read here.
No asserts.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pandas as pd  # noqa: E402

from nnutils import profiles  # noqa: E402
from nnutils.decide.compare import validation_set  # noqa: E402
from nnutils.decide.fusion import compare_feature_sets, local_columns, pair_features  # noqa: E402
from nnutils.local.verify import verify_pairs  # noqa: E402


#: the hashes compared (the first one is the one kept alone)
KINDS = ("phash", "dhash", "whash")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--seeds", type=int, default=5, help="fold splits (seeds cfg.seed, cfg.seed+1, ...)")
    args = ap.parse_args(argv)
    cfg = profiles.resolve("10_local_verification", args.profile, {})
    vs = validation_set(cfg)
    decision, val, p1, p2, y, s_val = vs.decision, vs.pairs, vs.paths1, vs.paths2, vs.y, vs.scores
    orb = verify_pairs(p1, p2, "orb", progress=True)
    X = pd.concat([pair_features(p1, p2, global_scores={"global": s_val}, hash_kinds=KINDS, progress=True),
                   local_columns(orb, "lf")], axis=1)
    hashes = [f"{k}_sim" for k in KINDS]
    sets = {"every hash (" + ", ".join(KINDS) + ")": X}
    for drop in [[h] for h in hashes] + [hashes[1:], hashes]:   # ... one less; the first alone; none
        sets["without " + ", ".join(d.removesuffix("_sim") for d in drop)] = X.drop(columns=drop)
    full = next(iter(sets))
    runs = []
    for seed in range(cfg.seed, cfg.seed + args.seeds):
        kw = dict(kind=cfg.fusion_kind, folds=cfg.folds, seed=seed, calibration=cfg.fusion_calibration)
        t = pd.concat([compare_feature_sets(sets, y, **kw),
                       compare_feature_sets({full + ", monotone": sets[full]}, y, monotone=True, **kw)]).astype(float)
        t["errors"] = t.fp + t.fn
        runs.append(t)
    both = pd.concat(runs, keys=range(len(runs)))
    g = both.groupby(level=1, sort=False)
    table = g[["f1", "roc_auc", "brier", "fp", "fn", "errors"]].mean()
    table["errors sd"] = g["errors"].std()
    table["errors per split"] = g["errors"].apply(lambda e: " ".join(str(int(v)) for v in e))
    print(f"\n{args.profile}: {decision.model} + ORB, {len(val)} validation pairs ({int(y.sum())} positives), "
          f"{cfg.fusion_kind} fusion, {cfg.folds} folds, out of fold, mean over {args.seeds} fold splits\n")
    print(table.round(4).to_markdown())


if __name__ == "__main__":
    main()
