"""Every wrong decision of a run's verifying decision on one data set, with what the check and the fusion saw.

    python bench/errors.py                              # runs/cpu on data/lun-embedded (test split)
    python bench/errors.py --data-dir data/lun-shift    # the shifted benchmark (reporting only)

Runs ``predict_pairs`` with ``--verify on`` (the default decision's path, empty cache) and its
per-pair verification rows (``details=True``, what ``predict --explain`` writes), then for
each wrong pair prints its kind (distortion or hard-negative kind, and the view type
of a shifted ``other_view``), the global score, the fused probability and the geometric
check's verdict (``reason``: empty when it passed), inliers, scale, rotation, coverage,
the perspective departure and the dense residual. It is for reading the errors: nothing
here chooses a setting. No asserts.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from nnutils.data import pairs as P  # noqa: E402
from nnutils.decide.decision import Decision  # noqa: E402
from nnutils.decide.predict import predict_pairs  # noqa: E402

CHECK = ["reason", "inliers", "inlier_ratio", "scale", "rotation_deg", "coverage1", "coverage2", "spread", "perspective",
         "dense_residual", "mirrored"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run-dir", default=str(ROOT / "runs" / "cpu"))
    ap.add_argument("--data-dir", default=str(ROOT / "data" / "lun-embedded"))
    args = ap.parse_args(argv)
    data, run = Path(args.data_dir), Path(args.run_dir)
    test = P.read_pairs(data / "test.csv", "test")
    y = P.read_pairs(data / "test_labels.csv", "labels").set_index("ID").is_same.reindex(test.ID).to_numpy()
    meta = pd.read_csv(data / "metadata.csv")
    meta = meta[meta.split == "test"].set_index("row").reindex(test.ID)
    with tempfile.TemporaryDirectory() as cache:
        pred = predict_pairs(test, data / "images", run, verify="on", cache_dir=cache, progress=False, details=True)
    wrong = np.flatnonzero(pred.submission.is_same.to_numpy() != y)
    dec = Decision.resolve(run, None)
    print(f"{dec}; {len(wrong)} wrong of {len(test)} pairs in {data}")
    if not len(wrong):
        return 0
    sub = test.iloc[wrong]
    why = pred.verification.set_index("ID").reindex(sub.ID)    # NaN: not a candidate (below the verify range)
    col = lambda c: meta[c].fillna("").to_numpy()[wrong] if c in meta else [""] * len(wrong)  # noqa: E731
    table = pd.DataFrame({"ID": sub.ID.to_numpy(), "is_same": y[wrong], "distortion": col("distortion"),
                          "negative_kind": col("negative_kind"), "view": col("view"),
                          "global": np.round(pred.scores[wrong], 3),
                          "fused p": np.round(why.fused_p.to_numpy(float), 3)})
    check = why[CHECK].reset_index(drop=True)
    check["reason"] = check.reason.where(why.fused_p.notna().to_numpy(), "(not verified: below the verify range)")
    table = pd.concat([table, check.round(4)], axis=1)
    with pd.option_context("display.width", 250, "display.max_columns", 30, "display.max_colwidth", 72):
        print(table.to_string(index=False))
    print(f"fusion threshold {dec.fusion.threshold:.4f}; candidates: global score >= {dec.verify_range[0]:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
