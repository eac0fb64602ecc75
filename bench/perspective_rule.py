"""The geometric check's perspective rule on the embedded train split: what each setting rejects.

    python bench/perspective_rule.py                          # data/lun-embedded, train split, ORB
    python bench/perspective_rule.py --data-dir data/lun-embedded-smoke --method sift

The perspective rule (:func:`nnutils.local.verify._nonaffine`, the last rule of
:func:`nnutils.local.verify.verify`) calls a pair another view when a homography fits its
matches significantly better than an affine map. This script runs the check at its defaults
on every positive and every ``other_view`` / ``same_scene`` pair of one split, records for
each pair that reaches the rule the statistics the rule reads — the F-test's log10 p-value,
the RMS-residual ratio (affine over homography) and the departure ``d`` (share of image 2's
side) — and prints how many positives (wrongly) and views (rightly) each setting of
``(nonaffine_p, max_nonaffine, nonaffine_gain)`` would reject, the defaults and the setting
before 2026-12-02 (p < 1e-3, d > 0.002, gain 1.1) marked. The train split is where such a
rule may be chosen; the shifted benchmark is never read here. No asserts.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy.special import fdtr  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from nnutils.local import verify as V  # noqa: E402
from nnutils.local.dense import SIDE  # noqa: E402
from nnutils.local.keypoints import extract  # noqa: E402

DEFAULT = (1e-5, 0.001, 1.0)
BEFORE = (1e-3, 0.002, 1.1)


def rule_stats(p1, p2, side2: float, robust: str, thresh: float, max_iters: int, confidence: float) -> dict:
    """The statistics :func:`nnutils.local.verify._nonaffine` decides on, for one pair's matches."""
    st = V.nonaffine_stats(p1, p2, side2, robust, thresh, max_iters, confidence)
    if st is None:
        return dict(n=0)
    return dict(n=st["n"], d=st["d"], ratio=math.sqrt(max(st["rss_a"], 1e-12) / st["rss_h"]),
                log10p=float(np.log10(max(1e-300, 1.0 - fdtr(2, 2 * st["n"] - 8, st["f"])))))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=str(ROOT / "data" / "lun-embedded"))
    ap.add_argument("--split", default="train")
    ap.add_argument("--dense-trim", type=float, default=None,
                    help="the dense rule's trimmed refit share (default nnutils.local.dense.TRIM; 0: plain fit)")
    ap.add_argument("--method", default="orb", choices=["orb", "sift"])
    args = ap.parse_args(argv)
    if args.dense_trim is not None:
        import nnutils.local.dense as dense
        dense.TRIM = args.dense_trim
    data = Path(args.data_dir)
    meta = pd.read_csv(data / "metadata.csv")
    meta = meta[(meta.split == args.split) & ((meta.is_same == 1) | meta.negative_kind.isin(["other_view", "same_scene"]))]
    kp: dict = {}

    def features(name):
        if name not in kp:
            kp[name] = extract(data / "images" / name, args.method)
        return kp[name]

    seen: list[dict] = []
    real = V._nonaffine

    def recording(p1, p2, side2, robust, thresh, max_iters, confidence, max_nonaffine, gain, p_value=1e-3):
        seen.append(rule_stats(p1, p2, side2, robust, thresh, max_iters, confidence))
        return real(p1, p2, side2, robust, thresh, max_iters, confidence, max_nonaffine, gain, p_value)

    V._nonaffine = recording
    rows = []
    try:
        for r in tqdm(meta.itertuples(), total=len(meta), desc="verifying", unit="pair"):
            seen.clear()
            # the dense rule measured (math.inf: never applied) for the pairs the perspective rule passes
            v = V.verify(features(r.image_url1), features(r.image_url2), max_dense_residual=math.inf)
            if seen:
                rows.append(dict(positive=bool(r.is_same), passed=v.passed, dense=v.dense_residual, **seen[-1]))
    finally:
        V._nonaffine = real
    df = pd.DataFrame(rows).dropna(subset=["d"])
    pos, views = df[df.positive], df[~df.positive]
    print(f"{data.name}, {args.split} split, {args.method}: {len(meta)} pairs; reaching the rule: "
          f"{len(pos)} positives, {len(views)} other views / same-scene pairs\n")
    print("| p < | d > (share of side) | RMS gain ≥ | positives rejected | views rejected | |")
    print("|---|---|---|---|---|---|")
    for p in (1e-3, 1e-4, 1e-5, 1e-6):
        for dmin in (0.0005, 0.001, 0.002):
            for gain in (1.0, 1.1):
                def rejects(t):
                    return (t.log10p < math.log10(p)) & (t.d > dmin) & (t.ratio >= gain)
                mark = "default" if (p, dmin, gain) == DEFAULT else "before" if (p, dmin, gain) == BEFORE else ""
                print(f"| {p:g} | {dmin:g} | {gain:g} | {int(rejects(pos).sum())} | "
                      f"{int(rejects(views).sum())} of {len(views)} | {mark} |")
    print("\npositives closest to the rule (most significant F-test):")
    print(pos.sort_values("log10p").head(5).round(4).to_string(index=False))

    # the dense rule (nnutils.local.dense), after the perspective rule: the pairs it passes
    dpos, dviews = pos.dense.dropna(), views.dense.dropna()
    print(f"\ndense rule (90th-percentile residual of the cells' shifts, px of a {SIDE}-px frame), on the "
          f"{len(dpos)} positives and {len(dviews)} views the perspective rule passes with dense evidence:")
    q = [0.5, 0.9, 0.99, 1.0]
    print("positives: " + ", ".join(f"q{int(100 * k)} {dpos.quantile(k):.2f}" for k in q) if len(dpos) else "positives: none")
    print("views:     " + ", ".join(f"q{int(100 * k)} {dviews.quantile(k):.2f}" for k in q) if len(dviews) else "views: none")
    print("\n| residual > (px) | positives rejected | views rejected | |\n|---|---|---|---|")
    for t in (1.0, 1.25, 1.5, 2.0, 3.0):
        mark = "default" if t == V.DENSE_RESIDUAL else ""
        print(f"| {t:g} | {int((dpos > t).sum())} of {len(dpos)} | {int((dviews > t).sum())} of {len(dviews)} | {mark} |")


if __name__ == "__main__":
    main()
