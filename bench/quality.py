"""Quality and speed on the embedded test split, in one table: every model vs the pretrained backbone vs pHash.

    python bench/quality.py                       # runs/cpu models on data/lun-embedded
    python bench/quality.py --run-dir runs/smoke --data-dir data/lun-embedded-smoke
    python bench/quality.py --data-dir data/lun-shift     # the shifted benchmark (nnutils.shift)

Every row goes through ``nnutils.decide.predict.predict_pairs`` — the code path of notebook 08 and
the predict command — with an empty cache, so each distinct test image is decoded and
embedded once, end to end (TFLite runtime). Thresholds are never tuned on test: they are
the k-fold cross-validated thresholds of notebook 07 (``metrics/07_threshold_sweep.csv``).
Pairs with an unreadable image are predicted 0 (the documented policy) and count as
errors when they are duplicates. When the run's decision verifies (notebook 10 ran), one more row runs its global model with local verification and the fused decision
in the decision's verify range (``predict --verify on``: every candidate pair, or the uncertain band); F1 and errors are of the final decisions, the
ROC AUC of the global score. Prints one markdown table and the machine it ran on, then the
false-positive rate of each hard-negative kind and the recall of each distortion for every
row, each with its 95 % Wilson interval (``nnutils.decide.metrics.wilson_interval``).

``--data-dir`` may be any folder with ``test.csv``, ``test_labels.csv`` and ``metadata.csv``
(no ``train.csv`` needed): the shifted benchmark ``data/lun-shift`` (held-out photos,
albumentations re-posts; ``python -m nnutils.shift``) is read the same way. It is for
reporting only: the thresholds stay the run's own.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from nnutils.decide import metrics  # noqa: E402
from nnutils.data import pairs as P  # noqa: E402
from nnutils.models.saving import list_models  # noqa: E402
from nnutils.decide.decision import Decision  # noqa: E402
from nnutils.data.tables import is_hard_negative, test_kinds  # noqa: E402
from nnutils.decide.scoring import kind_rates_markdown, score_against_labels  # noqa: E402
from nnutils.models.embedders import load_embedder  # noqa: E402
from nnutils.decide.predict import predict_pairs  # noqa: E402

LABELS = {"phash": "pHash (imagehash 64-bit, Hamming)", "00_pretrained": "pretrained backbone, untrained"}


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run-dir", default=str(ROOT / "runs" / "cpu"))
    ap.add_argument("--data-dir", default=str(ROOT / "data" / "lun-embedded"))
    ap.add_argument("--runtime", default="tflite", choices=["tflite", "keras"])
    ap.add_argument("--no-verify", action="store_true", help="skip the row with notebook 10's verification + fusion")
    ap.add_argument("--two-decode", action="store_true",
                    help="one more row: the verified decision decoding the verified pairs' images again "
                         "(predict --no-one-pass; the default is one decode per image)")
    args = ap.parse_args(argv)
    run, data = Path(args.run_dir), Path(args.data_dir)
    sweep = pd.read_csv(run / "metrics" / "07_threshold_sweep.csv").set_index("model")
    decision = Decision.load(run)
    default = decision.model
    test = P.read_pairs(data / "test.csv", "test")     # train.csv is not needed (the shifted set has none)
    labels = P.read_pairs(data / "test_labels.csv", "labels")
    y = labels.set_index("ID").is_same.reindex(test.ID).to_numpy()
    kind_table = test_kinds(data, test.ID)
    kinds = kind_table.negative_kind.to_numpy()
    hard = np.asarray(is_hard_negative(kinds), bool)
    models = {"phash": "phash", **{k: str(v) for k, v in list_models(run).items()}}
    rows, per_kind = [], {}
    jobs = [(n, m, None, None) for n, m in models.items()]
    verified = Decision.load_verified(run)
    if verified is not None and not args.no_verify and verified.model in models:
        # the global model again, with 10's verification + fusion in its verify range
        source = run / ("decision.json" if decision.verifies else "decision_verified.json")
        jobs.append((verified.model, models[verified.model], source, None))   # predict's default
        if args.two_decode:
            jobs.append((verified.model, models[verified.model], source, False))
    for name, model, verify, one_pass in jobs:
        if name not in sweep.index:
            continue
        thr = float(sweep.loc[name, "threshold"])
        if model != "phash":
            load_embedder(model, runtime=args.runtime)  # convert once, outside the timing
        with tempfile.TemporaryDirectory() as cache:
            pred = predict_pairs(test, data / "images", model, threshold=thr, runtime=args.runtime,
                                 cache_dir=cache, progress=False, verify=verify, one_pass=one_pass)
        s = np.nan_to_num(pred.scores, nan=-1.0)
        d = pred.submission.is_same.to_numpy()           # the decisions (fused ones in the band)
        m = metrics.pair_metrics(y, s, thr)
        md = metrics.pair_metrics(y, d, 0.5)
        label = LABELS.get(name, name) + (" ← default (07's choice)" if name == default and verify is None else "")
        short = LABELS.get(name, name).split(" (")[0] + (" + verification" if verify else "") + \
            (" (two decodes)" if one_pass is False else "")
        per_kind[short] = score_against_labels(y, d, kinds=kind_table)["breakdown"]
        rows.append({
            "model": label + (f" + verification + fusion ({pred.report['share_verified']:.0%} of pairs verified)"
                              if verify else "") + (", two decodes" if one_pass is False else ""),
            "F1 class 1": md["f1"], "macro F1": md["macro_f1"], "ROC AUC (global score)": m["roc_auc"],
            "errors": md["fp"] + md["fn"],
            "FP on hard negatives": float((d[hard] == 1).mean()) if hard.any() else float("nan"),
            "threshold": thr, "img/s (decode+embed)": pred.report["images_per_s"],
            "ms/pair end to end": pred.report["ms_per_pair"],
            "ms/verified pair": pred.report.get("ms_per_verified_pair"),
        })
    print(f"test split of {data}: {len(test)} pairs ({int(y.sum())} duplicates, {int(hard.sum())} hard negatives), "
          f"{pred.report['images']} distinct images; runtime {args.runtime}")
    print(f"machine: {os.cpu_count()} cores, {cpu_name()}; run {run}")
    print(pd.DataFrame(rows).to_markdown(index=False, floatfmt=".4f"))
    print(kind_rates_markdown(per_kind))
    return 0


if __name__ == "__main__":
    sys.exit(main())
