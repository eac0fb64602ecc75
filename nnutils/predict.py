"""Score a LUN-format pairs CSV with a trained model and write a validated Kaggle submission.

    python -m nnutils.predict --pairs data/lun-embedded/test.csv --images data/lun-embedded/images \
        --model runs/cpu --out submissions/cpu.csv

``--model`` is a run folder (its ``decision.json`` from notebook 07 names the model and
threshold), a ``.keras`` embedder, or ``phash`` (the perceptual-hash baseline); the last
two need ``--threshold``. Each distinct image
is decoded and embedded once, batched, with the TFLite runtime by default; embeddings are
cached on disk by image content, so a rerun or another CSV over the same images costs
almost nothing. Pairs with an unreadable image are predicted 0 and counted (the
unreadable-image policy). Notebook 08 calls :func:`predict_pairs`, the same code path.
``--explain why.csv`` (with a verifying decision) writes why each verified pair was decided
so: its global score, the fused probability and threshold, and the geometric check's verdict
(``reason``, empty when it passed) with its inliers, scale, rotation, coverage, perspective
departure and dense residual.
"""
from __future__ import annotations

import argparse
import json
import sys

from nnutils.data.pairs import PairsCSVError, read_pairs
from nnutils.decide.scoring import score_against_labels
from nnutils.decide.predict import predict_pairs
from nnutils.decide.submission import write_submission


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m nnutils.predict", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", required=True, help="test CSV: ID,image_url1,image_url2")
    ap.add_argument("--images", default=None, help="folder that relative image paths are relative to")
    ap.add_argument("--model", required=True, help="run folder (with decision.json) or a .keras embedder")
    ap.add_argument("--out", required=True, help="submission CSV to write (ID,is_same)")
    ap.add_argument("--threshold", type=float, default=None, help="override the run's threshold")
    ap.add_argument("--runtime", choices=["tflite", "keras"], default="tflite")
    ap.add_argument("--cache-dir", default="cache", help="embedding/download cache (default: %(default)s)")
    ap.add_argument("--scores", action="store_true", help="also write <out>_scores.csv")
    ap.add_argument("--labels", default=None, help="ID,is_same labels to score the submission against")
    ap.add_argument("--verify", default="auto", metavar="off|auto|on|FILE",
                    help="local verification + fused decision in the decision's verify range (notebook 10): "
                         "auto (default: when the run folder's decision verifies), off (the global score alone), "
                         "on (required), or a decision.json / run folder whose verification to use")
    ap.add_argument("--one-pass", action=argparse.BooleanOptionalAction, default=None,
                    help="with verification: decode each image once for its embedding and local features "
                         "(default when the decision verifies every candidate; --no-one-pass decodes the "
                         "verified pairs' images again, see nnutils.decide.predict)")
    ap.add_argument("--explain", default=None, metavar="CSV",
                    help="with verification: write one row per verified pair: its ID, global score, fused "
                         "probability and the geometric check's verdict and measurements")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    args = ap.parse_args(argv)
    try:
        pred = predict_pairs(args.pairs, args.images, args.model, threshold=args.threshold, runtime=args.runtime,
                             cache_dir=args.cache_dir, progress=not args.quiet, verify=args.verify,
                             one_pass=args.one_pass, details=bool(args.explain))
        if args.explain and pred.verification is None:
            raise ValueError("--explain needs a verifying decision (notebook 10's; see --verify)")
        test_ids = pred.submission.ID
        out = write_submission(pred.submission, args.out, test_ids, pred.scores if args.scores else None)
        if args.explain:
            pred.verification.to_csv(args.explain, index=False)
            print(f"wrote {args.explain} ({len(pred.verification)} verified pairs)", file=sys.stderr)
        if args.labels:
            lab = read_pairs(args.labels, "labels").set_index("ID").is_same.reindex(test_ids)
            if lab.isna().any():
                missing = list(test_ids[lab.isna().to_numpy()][:5])
                raise ValueError(f"{args.labels}: no label for {int(lab.isna().sum())} test IDs, e.g. {missing}")
            m = score_against_labels(lab.to_numpy(int), pred.submission.is_same.to_numpy())
            pred.report.update(f1=round(m["f1"], 5), macro_f1=round(m["macro_f1"], 5), errors=m["errors"])
    except (FileNotFoundError, PairsCSVError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(pred.report, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
