"""What a cheaper ORB would cost in decisions: working side and keypoint count, out-of-fold errors on validation.

    python bench/orb_settings.py                       # the cpu profile's run (runs/cpu), 10 fold splits
    python bench/orb_settings.py --grid 640x1000,384x1000 --seeds 5
    python bench/orb_settings.py --grid 640x1000,640x1000s4,640x1000s8     # keypoints spread over a grid
    python bench/orb_settings.py --grid 640x1000,640x1000c25               # a crowded cell capped at 25 %
    python bench/orb_settings.py --grid 640x1000 --pyramid 4x1.4           # ORB's pyramid: 4 levels, x1.4 apart
    python bench/orb_settings.py --grid 640x1000 --spread-rescue none,0.6  # the check's rule 4b off / at 0.6 px

ORB is the largest share of the one pass (``python bench/onepass_stages.py``: ~4.9 ms of
~17 ms of CPU per image, ~7.2 with the mirrored descriptors) and its keypoint count sets the
cost of matching a verified pair. This bench rebuilds notebook 10's validation features (07's
global model, pHash, sizes, identity: :func:`nnutils.decide.fusion.pair_features`) with the
ORB check run at each ``side x keypoints`` of ``--grid`` (the working copy's longer side in
pixels, at most this many keypoints, and with ``sN`` spread over an N x N grid:
:func:`nnutils.local.keypoints.spread_keypoints`; the decision's default is 640 x 1000), each image decoded
once as the one pass decodes it (:func:`nnutils.data.images.read_any` at the largest side),
and compares the fused decisions with :func:`nnutils.decide.fusion.compare_feature_sets`
(the notebook's folds, fusion kind and seed; nested out-of-fold thresholds; mean over
``--seeds`` fold splits). Beside each: the extraction's CPU time per image and the matching and
fitting time per pair, one thread each (this machine; timings drift by ~15 %). ``--spread-rescue``
runs the check of each setting with each bound of its rule 4b (``verify(spread_rescue=)``:
dense evidence instead of spread; ``none``: off). For reporting
and for the record of what was tried; the decision's settings are not changed here.
Validation only: the shifted set is never read. No asserts.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pandas as pd  # noqa: E402

from nnutils import profiles  # noqa: E402
from nnutils.data.images import read_any  # noqa: E402
from nnutils.decide.compare import validation_set  # noqa: E402
from nnutils.decide.fusion import HASH_KINDS, compare_feature_sets, local_columns, pair_features  # noqa: E402
from nnutils.local.features_cache import to_original_pixels  # noqa: E402
from nnutils.local.keypoints import extract  # noqa: E402
from nnutils.local.verify import verify_pairs  # noqa: E402

GRID = "640x1000,512x1000,480x1000,384x1000,384x500,320x500,256x500"


def parse_grid(text: str) -> list[tuple[int, int, int, float]]:
    """``"640x1000,384x500s4,640x1000c25"`` → ``[(640, 1000, 0, 0.0), (384, 500, 4, 0.0), (640, 1000, 0, 0.25)]``.

    Side in pixels, keypoints, spread cells (``sN``), and the share per cell of a crowded
    image's keypoints in percent (``cNN``: ``extract(cell_cap=NN / 100)``).
    """
    out = []
    for item in text.split(","):
        side, _, rest = item.strip().partition("x")
        k, spread, cap = rest, "", ""
        if "s" in k:
            k, _, spread = k.partition("s")
        elif "c" in k:
            k, _, cap = k.partition("c")
        if not side.isdigit() or not k.isdigit() or not (spread == "" or spread.isdigit()) \
                or not (cap == "" or cap.isdigit() and 0 < int(cap) <= 100):
            raise SystemExit(f"--grid: expected SIDExKEYPOINTS[sCELLS|cPERCENT] items such as 640x1000, "
                             f"640x1000s8 or 640x1000c25, got {item!r}")
        out.append((int(side), int(k), int(spread or 0), int(cap or 0) / 100))
    return out


def use_pyramid(text: str) -> None:
    """Make :func:`nnutils.local.keypoints.extract` build ORB with another pyramid, in this process only.

    ``"4x1.4"``: 4 levels, each 1.4 times smaller than the one above (OpenCV's default, which
    the decision uses, is 8 x 1.2: :data:`nnutils.local.keypoints.ORB_PYRAMID`). Both images of
    a pair are described at the same working side, so their scales differ only by a crop's
    zoom; fewer levels detect ~25 % faster.
    """
    import nnutils.local.keypoints as kp
    levels, _, factor = text.partition("x")
    try:
        kp.ORB_PYRAMID = (int(levels), float(factor))
    except ValueError:
        raise SystemExit(f"--pyramid: expected LEVELSxFACTOR such as 4x1.4, got {text!r}") from None


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--seeds", type=int, default=10, help="fold splits (seeds cfg.seed, cfg.seed+1, ...)")
    ap.add_argument("--grid", default=GRID, help=f"SIDExKEYPOINTS, comma-separated (default {GRID})")
    ap.add_argument("--pyramid", default="", metavar="LEVELSxFACTOR",
                    help="ORB's pyramid for this run, e.g. 4x1.4 (default: the decision's, OpenCV's 8 levels x1.2)")
    ap.add_argument("--spread-rescue", default="", metavar="BOUNDS",
                    help="comma-separated bounds of the check's rule 4b in thumbnail pixels, 'none' for off "
                         "(default: the decision's setting only)")
    args = ap.parse_args(argv)
    grid = parse_grid(args.grid)
    rescues = [None if b.strip().lower() == "none" else float(b) for b in args.spread_rescue.split(",")] \
        if args.spread_rescue else ["default"]
    if args.pyramid:
        use_pyramid(args.pyramid)
    cfg = profiles.resolve("10_local_verification", args.profile, {})
    vs = validation_set(cfg)
    decision, val, p1, p2, y, s_val = vs.decision, vs.pairs, vs.paths1, vs.paths2, vs.y, vs.scores
    G = pair_features(p1, p2, global_scores={"global": s_val}, hash_kinds=HASH_KINDS, progress=True)
    decoded = {p: read_any(p, max(g[0] for g in grid))[:2] for p in dict.fromkeys(p1 + p2)}
    sets, cost = {}, []
    for side, k, spread, cap in grid:
        t = time.perf_counter()
        kp = {p: to_original_pixels(extract(rgb, "orb", max_side=side, max_keypoints=k, spread=spread,
                                            cell_cap=cap), size)
              for p, (rgb, size) in decoded.items()}
        ms_img = 1e3 * (time.perf_counter() - t) / len(decoded)
        for rescue in rescues:
            vkw = {} if rescue == "default" else {"spread_rescue": rescue}
            t = time.perf_counter()
            rows = verify_pairs(p1, p2, "orb", progress=False, extractor=kp.__getitem__, workers=1, verify_workers=1,
                                **vkw)
            ms_pair = 1e3 * (time.perf_counter() - t) / len(p1)
            name = f"{side} px, {k} keypoints" + (f", spread over {spread}x{spread} cells" if spread else "") \
                + (f", at most {cap:.0%} per cell of a crowded image" if cap else "") \
                + ("" if rescue == "default" else f", rule 4b {'off' if rescue is None else f'at {rescue:g} px'}")
            sets[name] = pd.concat([G, local_columns(rows, "lf")], axis=1)
            cost.append({"setting": name, "ORB ms/image": ms_img, "match+fit ms/pair": ms_pair})
    runs = []
    for seed in range(cfg.seed, cfg.seed + args.seeds):
        t = compare_feature_sets(sets, y, kind=cfg.fusion_kind, folds=cfg.folds, seed=seed,
                                 calibration=cfg.fusion_calibration).astype(float)
        t["errors"] = t.fp + t.fn
        runs.append(t)
    g = pd.concat(runs, keys=range(len(runs))).groupby(level=1, sort=False)
    table = g[["f1", "fp", "fn", "errors"]].mean()
    table["errors sd"] = g["errors"].std()
    table["errors per split"] = g["errors"].apply(lambda e: " ".join(str(int(v)) for v in e))
    table = table.join(pd.DataFrame(cost).set_index("setting"))
    print(f"\n{args.profile}: {decision.model} + ORB (mirrored descriptors included), {len(val)} validation pairs "
          f"({int(y.sum())} positives), {cfg.fusion_kind} fusion, {cfg.folds} folds, out of fold, mean over "
          f"{args.seeds} fold splits\n")
    print(table.round(3).to_markdown())


if __name__ == "__main__":
    main()
