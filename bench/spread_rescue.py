"""Rule 4b of the geometric check on the embedded train split: which pairs failing on spread the dense residual rescues.

    python bench/spread_rescue.py                        # data/lun-embedded, train split, ORB
    python bench/spread_rescue.py --bounds 0.4,0.6,1.0

Runs :func:`nnutils.local.verify.verify` (ORB, the one-sided mirror of
:func:`nnutils.local.verify.mirror_side`, as the decision runs it) with rule 4b off on every
pair of one split, and for each pair that fails on spread alone ("low spread") measures the
dense residual of the fitted map (:func:`nnutils.local.dense.dense_residual`, reference-
thumbnail pixels; NaN: too few textured cells). Prints those pairs (label, kind, spread,
inliers, residual) and, for each bound of ``--bounds``, how many positives (rightly) and
negatives (wrongly) it would rescue. The train split is where the bound may be chosen
(:data:`nnutils.local.verify.SPREAD_RESCUE`); the shifted benchmark is never read here.
No asserts.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pandas as pd  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from nnutils.data.images import file_digest_or_none  # noqa: E402
from nnutils.local import verify as V  # noqa: E402
from nnutils.local.dense import dense_residual  # noqa: E402
from nnutils.local.keypoints import extract  # noqa: E402


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=str(ROOT / "data" / "lun-embedded"))
    ap.add_argument("--split", default="train")
    ap.add_argument("--bounds", default="0.4,0.5,0.6,0.8,1.0", help="comma-separated bounds, thumbnail pixels")
    args = ap.parse_args(argv)
    data = Path(args.data_dir)
    meta = pd.read_csv(data / "metadata.csv")
    meta = meta[meta.split == args.split]
    kp: dict = {}

    def features(name):
        if name not in kp:
            p = data / "images" / name
            kp[name] = (extract(p, "orb"), file_digest_or_none(p)) if p.exists() else (None, None)
        return kp[name]

    rows = []
    for r in tqdm(meta.itertuples(), total=len(meta), desc="verifying", unit="pair"):
        (a, da), (b, db) = features(r.image_url1), features(r.image_url2)
        if a is None or b is None:
            continue
        a, b = V._one_mirror(a, b, V.mirror_side(da, db))
        v = V.verify(a, b, spread_rescue=None)
        if v.reason != "low spread":
            continue
        # the map image 1 -> image 2 itself (composed with the mirror for a mirrored try: fine for the measure)
        d = dense_residual(a.thumb, a.image_size, b.thumb, b.image_size, v.matrix) \
            if v.matrix is not None and a.thumb is not None and b.thumb is not None else float("nan")
        rows.append(dict(ID=r.ID if hasattr(r, "ID") else r.Index, is_same=r.is_same,
                         kind=r.distortion if r.is_same else r.negative_kind, spread=round(v.spread, 3),
                         inliers=v.inliers, mirrored=v.mirrored, dense=d))
    df = pd.DataFrame(rows)
    n_pos, n_neg = int(meta.is_same.sum()), int((meta.is_same == 0).sum())
    print(f"\n{data} {args.split} split: {len(meta)} pairs ({n_pos} positives); {len(df)} fail on spread alone "
          f"({int(df.is_same.sum()) if len(df) else 0} positives)\n")
    if not len(df):
        return
    print(df.sort_values(["is_same", "dense"]).round(3).to_markdown(index=False))
    print("\n| bound (px) | positives rescued | negatives rescued |\n|---|---|---|")
    for bound in (float(b) for b in args.bounds.split(",")):
        ok = df.dense <= bound
        print(f"| {bound:g}{' (SPREAD_RESCUE)' if bound == V.SPREAD_RESCUE else ''} | "
              f"{int((ok & (df.is_same == 1)).sum())} of {int(df.is_same.sum())} | "
              f"{int((ok & (df.is_same == 0)).sum())} of {int((df.is_same == 0).sum())} |")


if __name__ == "__main__":
    main()
