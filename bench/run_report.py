"""The numbers a pipeline run left in its run folder, as the README quotes them (no model is run).

    python bench/run_report.py                     # runs/cpu, after python -m nnutils.pipeline --profile cpu
    python bench/run_report.py --run-dir runs/smoke

Reads ``pipeline.json`` (seconds per step) and the notebooks' ``metrics/*.json``:
03 (the untrained baseline on validation), 04 (fixed triplets vs semi-hard mining:
validation hard-negative false-positive rate and training seconds), 09 (the collection,
the grouping chosen on train images and its test row-wise F1, retrieval mAP per pooling
and expansion) and 10 (the verify range, the share of pairs verified, the fused
decision's out-of-fold F1 per feature set, the test errors and ms per pair before/after).
A notebook that has not run is reported as missing. Prints markdown; well under a second.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def read_json(path: Path) -> dict | None:
    """The JSON object in ``path``, or None when the file does not exist.

    Parameters
    ----------
    path : pathlib.Path
        A ``metrics/*.json`` or ``pipeline.json`` file.

    Returns
    -------
    dict or None
    """
    return json.loads(path.read_text()) if path.exists() else None


def table(rows: list[dict]) -> str:
    """A markdown table of ``rows`` (floats with 4 digits).

    Parameters
    ----------
    rows : list of dict
        One dict per row, the same keys in each.

    Returns
    -------
    str
    """
    if not rows:
        return "(none)"
    keys = list(rows[0])
    fmt = lambda v: f"{v:.4f}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(fmt(r.get(k, "")) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


def report_pipeline(run: Path) -> list[str]:
    """Lines about ``pipeline.json``: when it ran, seconds per step, the total (minutes)."""
    p = read_json(run / "pipeline.json")
    if p is None:
        return ["pipeline.json: missing (python -m nnutils.pipeline)"]
    steps = p.get("steps", [])
    total = sum(s.get("seconds") or 0 for s in steps)
    data = sum(s.get("seconds") or 0 for s in steps if s.get("step") == "data")
    per = ", ".join(f"{s['step'][:2] if s['step'] != 'data' else 'data'} {s.get('seconds') or 0:.0f} s"
                    for s in steps)
    status = "all ok" if all(s.get("status") == "ok" for s in steps) else "NOT all ok"
    return [f"pipeline.json: profile {p.get('profile')}, started {p.get('started')}, {len(steps)} steps ({status}), "
            f"{(total - data) / 60:.1f} min of notebooks + {data:.0f} s data build", f"  {per}"]


def report_03(run: Path) -> list[str]:
    """Lines about notebook 03: the untrained baseline's validation F1 / ROC AUC / hard-negative FP rate."""
    m = read_json(run / "metrics" / "03_siamese_bce.json")
    if m is None:
        return ["03_siamese_bce: missing"]
    b, v = m["baseline_pretrained"], m["val"]
    s = m.get("settings", {})
    return [f"03 untrained baseline (pooling {s.get('pooling')}), validation: F1 {b['f1']:.4f}, ROC AUC "
            f"{b['roc_auc']:.4f}, hard-negative FP {b.get('hard_negative_fp_rate', float('nan')):.1%}; "
            f"BCE head ({s.get('embedding_dim')}-d): F1 {v['f1']:.4f}, ROC AUC {v['roc_auc']:.4f}"]


def report_04(run: Path) -> list[str]:
    """Lines about notebook 04: each triplet variant's validation metrics and training seconds."""
    m = read_json(run / "metrics" / "04_triplet.json")
    if m is None:
        return ["04_triplet: missing"]
    secs = m.get("seconds", {})
    rows = [{"04 variant": k, "val F1": v["f1"], "ROC AUC": v["roc_auc"],
             "hard-negative FP": f"{v.get('hard_negative_fp_rate', float('nan')):.1%}",
             "train s": f"{secs.get(k, float('nan')):.0f}"} for k, v in m["variants"].items()]
    return [table(rows)]


def report_09(run: Path) -> list[str]:
    """Lines about notebook 09: the collection, the chosen grouping, retrieval mAP."""
    m = read_json(run / "metrics" / "09_find_duplicates.json")
    if m is None:
        return ["09_find_duplicates: missing"]
    r, g = m["report"], m["grouping"]
    out = [f"09 collection: {r['images']:,} files, {r['unreadable']} unreadable; {r['groups']} groups, "
           f"{r['files_to_remove']} files to remove; model {r['model']}",
           f"09 grouping chosen on train images: threshold {g['threshold']:.2f}, {g['variant']}; row-wise F1 "
           f"train {g['train_rowwise_f1']:.4f}, test {g['test_rowwise_f1']:.4f}"]
    if m.get("retrieval"):
        out.append(table([{"09 retrieval embedding": x["embedding"], "setting": x["setting"], "mAP": x["mAP"],
                           "recall@1": x["recall@1"]} for x in m["retrieval"]]))
    return out


def report_10(run: Path) -> list[str]:
    """Lines about notebook 10: band, share verified, out-of-fold F1 per feature set, test before/after."""
    m = read_json(run / "metrics" / "10_local_verification.json")
    if m is None:
        return ["10_local_verification: missing"]
    lo, hi = m["band"]
    t = m.get("test_report", {})
    out = [f"10 verify range {lo:.2f} … {hi:.2f}: {m['share_verified_val']:.1%} of validation pairs, "
           f"{t.get('share_verified', float('nan')):.1%} of test pairs verified; fusion {t.get('fusion')}; "
           f"{t.get('ms_per_pair')} ms per pair end to end, {t.get('ms_per_verified_pair')} ms per verified pair",
           table([{"10 feature set (validation, out of fold)": x["features"], "F1": x["f1"], "ROC AUC": x["roc_auc"],
                   "FP": int(x["fp"]), "FN": int(x["fn"])} for x in m["cv_table"]])]
    if m.get("test"):
        out.append(table([{"10 test decision": x["decision"], "F1": x["F1"], "errors": int(x["errors"]),
                           "FP on hard negatives": int(x["FP on hard negatives"]), "ms per pair": x["ms per pair"]}
                          for x in m["test"]]))
    return out


def main(argv=None) -> int:
    """Print every section for ``--run-dir``; returns 2 when the folder does not exist, else 0."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--run-dir", default=str(ROOT / "runs" / "cpu"))
    args = ap.parse_args(argv)
    run = Path(args.run_dir).resolve()
    if not run.is_dir():
        print(f"error: {run} is not a run folder (python -m nnutils.pipeline --profile cpu)", file=sys.stderr)
        return 2
    print(f"run {run}")
    for section in (report_pipeline, report_03, report_04, report_09, report_10):
        print()
        print("\n".join(section(run)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
