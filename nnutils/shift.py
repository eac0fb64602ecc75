"""Build the shifted benchmark: held-out photos, re-posts made by albumentations (issue 12).

    python -m nnutils.shift --out data/lun-shift --pairs 800 --seed 1
    python -m nnutils.shift --out data/lun-shift-smoke --pairs 120 --seed 1
    python -m nnutils.shift --sealed       # data/lun-shift-sealed: seed 20260, the "sealed" photos

``data/lun-shift`` (and its smoke copy) is for reporting beside the embedded test split,
never for choosing thresholds. The sealed copy is built only by hand, from other held-out
photos and another seed, and is looked at once, when issue 12 closes: it tells whether the
first copy was tuned to. See :mod:`nnutils.data.shift`.
"""
from __future__ import annotations

import argparse
import json
import sys

from nnutils.data.shift import SEALED_SEED, ShiftConfig, build_shift


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m nnutils.shift", description=__doc__.split("\n\n")[0],
                                 epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=None, help="output folder (default: data/lun-shift, "
                                                "or data/lun-shift-sealed with --sealed)")
    ap.add_argument("--pairs", type=int, default=800, help="labelled pairs (default: %(default)s)")
    ap.add_argument("--seed", type=int, default=None, help=f"default 1, or {SEALED_SEED} with --sealed")
    ap.add_argument("--sealed", action="store_true", help="the sealed copy: the 'sealed' photo pool")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing build")
    args = ap.parse_args(argv)
    out = args.out or ("data/lun-shift-sealed" if args.sealed else "data/lun-shift")
    seed = args.seed if args.seed is not None else (SEALED_SEED if args.sealed else 1)
    cfg = ShiftConfig(pairs=args.pairs, seed=seed, pool="sealed" if args.sealed else "shift")
    try:
        built = build_shift(out, config=cfg, overwrite=args.overwrite)
    except (FileExistsError, ValueError, ModuleNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    info = json.loads((built / "build_info.json").read_text())
    print(f"built {built}: {json.dumps(info['counts'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
