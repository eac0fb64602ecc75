"""Two operating points of the default decision: with and without ORB's mirrored descriptors.

    python bench/operating_points.py                          # runs/cpu; the test split and data/lun-shift
    python bench/operating_points.py --data-dirs data/lun-shift

Issue 12 binds the cost target (≤ 12 ms per pair) to the default decision and asks for both
operating points when mirror handling costs more. Mirror handling is ORB's second set of
descriptors (computed on the mirrored image at the mirrored keypoints, ~2.3 ms of CPU per
image, ``python bench/onepass_stages.py``) and the second match and fit for each pair whose
direct check fails. This bench puts side by side

* **with mirror**: the run's verifying decision as notebook 10 saved it;
* **without mirror**: the same global model, threshold and candidate bound, ORB extracted
  with ``mirror=False`` (so the check has no mirrored try), and the fused decision refitted
  on validation exactly as notebook 10 fits it (:func:`nnutils.decide.compare.validation_set`,
  the notebook's fusion settings); its out-of-fold validation errors are printed beside the
  run's.

Each predicts every ``--data-dirs`` test set from a cold cache with one pass per image
(``predict``'s default path). Printed: F1, errors, false-positive rate per hard-negative
kind, recall per distortion (95 % Wilson intervals), ms per pair and per verified pair.
Nothing is chosen here, and the shifted set is read only for reporting. Timings drift by
~15 % on this machine; run it idle. No asserts.
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

from nnutils import profiles  # noqa: E402
from nnutils.data import pairs as P  # noqa: E402
from nnutils.data.tables import is_hard_negative, test_kinds  # noqa: E402
from nnutils.decide.compare import validation_set  # noqa: E402
from nnutils.decide.decision import Decision  # noqa: E402
from nnutils.decide.fusion import Fusion, local_columns, pair_features  # noqa: E402
from nnutils.decide.predict import predict_pairs  # noqa: E402
from nnutils.decide.scoring import kind_rates_markdown, score_against_labels  # noqa: E402
from nnutils.local.verify import verify_pairs  # noqa: E402


def without_mirror(decision: Decision, cfg, progress: bool = True) -> Decision:
    """``decision`` with ORB's mirrored descriptors off and its fusion refitted on validation (notebook 10's way)."""
    vs = validation_set(cfg, progress=progress)
    kw = {**decision.local_kw, "mirror": False}
    rows = verify_pairs(vs.paths1, vs.paths2, "orb", progress=progress, **kw)
    X = pd.concat([pair_features(vs.paths1, vs.paths2, global_scores={"global": vs.scores},
                                 hash_kinds=decision.fusion.hash_kinds, progress=progress),
                   local_columns(rows, "lf")], axis=1)
    fusion = Fusion(kind=cfg.fusion_kind, folds=cfg.folds, seed=cfg.seed, calibration=cfg.fusion_calibration,
                    monotone=cfg.fusion_monotone).fit(X, vs.y, importance_repeats=0)
    return decision.with_verification(fusion, decision.verify_range, "orb", local_kw=kw,
                                      global_model=vs.global_model)   # the scores it was fitted on


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="cpu", help="the profile whose run folder holds the decision")
    ap.add_argument("--data-dirs", nargs="+",
                    default=[str(ROOT / "data" / "lun-embedded"), str(ROOT / "data" / "lun-shift")])
    ap.add_argument("--runtime", default="tflite", choices=["tflite", "keras"])
    args = ap.parse_args(argv)
    cfg = profiles.resolve("10_local_verification", args.profile, {})
    run = Path(cfg.run_dir)
    decision = Decision.load(run)
    if not decision.verifies:
        decision = Decision.load_verified(run)
    if decision is None or not decision.verifies or decision.local_method != "orb":
        print(f"{run}: no verifying ORB decision (notebook 10 with local_method orb/auto); nothing to compare")
        return 1
    points = {"with mirror": decision, "without mirror": without_mirror(decision, cfg)}
    print(f"run {run}: {decision.model} at {decision.threshold:.4f}, candidates: global score >= "
          f"{decision.verify_range[0]:.4f}")
    for name, d in points.items():
        cv = d.fusion.cv
        print(f"- {name}: validation, out of fold (notebook 10's fold split): F1 {cv['f1']:.3f}, "
              f"{int(cv['fp'] + cv['fn'])} errors ({int(cv['fp'])} FP, {int(cv['fn'])} FN)")
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_points_") as tmp:
        tmp = Path(tmp)
        folders = {}
        for i, (name, d) in enumerate(points.items()):
            folders[name] = tmp / f"point{i}"
            d.save(folders[name])
        for data in map(Path, args.data_dirs):
            test = P.read_pairs(data / "test.csv", "test")
            labels = P.read_pairs(data / "test_labels.csv", "labels")
            y = labels.set_index("ID").is_same.reindex(test.ID).to_numpy()
            kinds = test_kinds(data, test.ID)
            hard = np.asarray(is_hard_negative(kinds.negative_kind.to_numpy()), bool)
            per_kind = {}
            for name, folder in folders.items():
                cache = tmp / f"cache_{data.name}_{folder.name}"
                pred = predict_pairs(test, data / "images", decision.model_path, threshold=decision.threshold,
                                     runtime=args.runtime, cache_dir=cache, progress=False, verify=folder,
                                     one_pass=True)
                d = pred.submission.is_same.to_numpy()
                r = score_against_labels(y, d, kinds=kinds)
                per_kind[name] = r["breakdown"]
                rows.append({"set": data.name, "operating point": name, "F1": r["f1"], "errors": r["errors"],
                             "FP": r["fp"], "FN": r["fn"],
                             "FP on hard negatives": float(d[hard].mean()) if hard.any() else float("nan"),
                             "ms/pair": pred.report["ms_per_pair"],
                             "ms/verified pair": pred.report.get("ms_per_verified_pair"),
                             "img/s (one pass)": pred.report["images_per_s"]})
            print(f"\n## {data.name}: {len(test)} pairs ({int(y.sum())} duplicates, {int(hard.sum())} hard negatives)")
            print(kind_rates_markdown(per_kind))
    print("\n## Both operating points (one pass, cold cache)\n")
    print(pd.DataFrame(rows).to_markdown(index=False, floatfmt=".4f"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
