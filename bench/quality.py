"""Quality on the embedded data's held-out test split: every saved model vs the pretrained backbone vs pHash.

    python bench/quality.py                       # runs/cpu models on data/lun-embedded
    python bench/quality.py --run-dir runs/smoke --data-dir data/lun-embedded-smoke

Thresholds are never tuned on test: each model uses the threshold chosen on validation by
its notebook (metrics/<name>.json), pHash the one maximising F1 on the validation pairs.
Pairs with an unreadable image are predicted 0 (the documented policy) and count as
errors when they are duplicates. Prints one markdown table.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from nnutils import baselines, metrics, pairs as P  # noqa: E402
from nnutils.experiments import HARD_KINDS, load_model  # noqa: E402
from nnutils.features import embed_images  # noqa: E402


def score_table(name, y, s, thr, kinds, seconds=None):
    s = np.where(np.isnan(s), -1.0, s)  # unreadable: below any threshold → predicted 0
    m = metrics.pair_metrics(y, s, thr)
    hard = np.isin(kinds, HARD_KINDS)
    return dict(model=name, f1=m["f1"], macro_f1=m["macro_f1"], roc_auc=m["roc_auc"], precision=m["precision"],
                recall=m["recall"], hard_neg_fp=float((s[hard] >= thr).mean()) if hard.any() else float("nan"),
                threshold=thr, seconds=seconds)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run-dir", default=str(ROOT / "runs" / "cpu"))
    ap.add_argument("--data-dir", default=str(ROOT / "data" / "lun-embedded"))
    args = ap.parse_args(argv)
    run, data = Path(args.run_dir), Path(args.data_dir)
    lun = P.load_lun_folder(data)
    test = lun["test"].merge(lun["test_labels"], on="ID")
    meta = lun["metadata"]
    test["negative_kind"] = meta[meta.split == "test"].set_index("row").negative_kind.reindex(test.ID).to_numpy()
    urls = P.unique_urls(test)
    path_of = P.resolve_images(urls, data / "images", progress=False).to_dict()
    y, kinds = test.is_same.to_numpy(), test.negative_kind.fillna("").to_numpy()
    rows = []

    # pHash: threshold from validation pairs
    val = pd.read_csv(run / "pairs_val.csv")
    val_paths = P.resolve_images(P.unique_urls(val), data / "images", progress=False).to_dict()
    hv = baselines.hash_images([p for p in val_paths.values() if p], progress=False)
    sv = baselines.hash_similarity(hv, val.image_url1.map(val_paths), val.image_url2.map(val_paths))
    ok = ~np.isnan(sv)
    thr_hash = metrics.best_threshold(val.is_same[ok], sv[ok])[0]
    t0 = time.perf_counter()
    ht = baselines.hash_images([p for p in path_of.values() if p], progress=False)
    st = baselines.hash_similarity(ht, test.image_url1.map(path_of), test.image_url2.map(path_of))
    rows.append(score_table("pHash (imagehash, 64 bits)", y, st, thr_hash, kinds, time.perf_counter() - t0))

    # every saved embedding model
    for model_path in sorted((run / "models").glob("*.keras")):
        if model_path.name.endswith(".top.keras"):
            continue
        name = model_path.stem
        mfile = run / "metrics" / f"{name}.json"
        if name == "00_pretrained":
            mfile = run / "metrics" / "03_siamese_bce.json"
        if not mfile.exists():
            continue
        m = json.loads(mfile.read_text())
        thr = (m["baseline_pretrained"] if name == "00_pretrained" else m["val"])["threshold"]
        model = load_model(model_path)
        size = int(model.input.shape[1])
        t0 = time.perf_counter()
        emb, okm = embed_images(model, [path_of[u] for u in urls], size, progress=False)
        seconds = time.perf_counter() - t0
        emb[~okm] = np.nan
        idx = {u: i for i, u in enumerate(urls)}
        s = np.sum(emb[test.image_url1.map(idx)] * emb[test.image_url2.map(idx)], axis=1)
        label = "pretrained backbone, untrained" if name == "00_pretrained" else name
        rows.append(score_table(f"{label} ({m['settings']['backbone']} {size}px)", y, s, thr, kinds, seconds))

    df = pd.DataFrame(rows)
    print(f"test split: {len(test)} pairs ({int(y.sum())} duplicates, {int(np.isin(kinds, HARD_KINDS).sum())} hard "
          f"negatives), {len(urls)} images; run {run}")
    print(df.to_markdown(index=False, floatfmt=".4f"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
