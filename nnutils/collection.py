"""A collection that persists: add photos once, then ask whether a new photo is already there.

    python -m nnutils.collection add    --dir COLL --model runs/cpu photos/          # create or grow
    python -m nnutils.collection query  --dir COLL new.jpg more/ --out matches.csv   # its existing copies
    python -m nnutils.collection remove --dir COLL photos/old.jpg
    python -m nnutils.collection mark-different --dir COLL a.jpg b.jpg            # a false match, kept
    python -m nnutils.collection export-marks --dir COLL --out marks.csv          # labelled pairs
    python -m nnutils.collection groups --dir COLL --out groups.csv               # never joins a marked pair
    python -m nnutils.collection merge  --dir COLL                                # delta -> new base file
    python -m nnutils.collection stats  --dir COLL

``--model`` (a run folder, or a ``.keras`` / ``.tflite`` embedder with ``--threshold``) is
needed when the collection is created; afterwards the collection remembers it. Queries apply
the run's full decision (verification included when the run verifies; ``--no-verify`` for the
global threshold only). The storage (SQLite in WAL mode + a base faiss index + an exactly
searched delta, tombstones, atomic merges) is described in :mod:`nnutils.scale.collection`.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

from nnutils.scale.collection import Collection

COMMANDS = ("add", "query", "remove", "stats", "mark-different", "export-marks", "groups", "merge")


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m nnutils.collection", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=COMMANDS)
    ap.add_argument("items", nargs="*", help="images, folders or CSVs (add, query); paths or ids (remove); "
                                              "two photos (mark-different)")
    ap.add_argument("--dir", required=True, help="the collection folder")
    ap.add_argument("--model", default=None, help="run folder or .keras/.tflite embedder (needed to create)")
    ap.add_argument("--threshold", type=float, default=None, help="cosine threshold (default: the run's)")
    ap.add_argument("--runtime", default="tflite", choices=["tflite", "keras"])
    ap.add_argument("--cache", default=None, help="model conversion cache (default: <dir>/cache)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--k", type=int, default=10, help="candidates per query / neighbours per item (groups)")
    ap.add_argument("--no-verify", action="store_true", help="query: the global threshold only")
    ap.add_argument("--all", action="store_true", help="query: every candidate, not only the copies")
    ap.add_argument("--no-merge", action="store_true", help="add: never merge the delta into the base")
    ap.add_argument("--rebuild", action="store_true", help="merge: rebuild the base from the live vectors")
    ap.add_argument("--out", default=None, help="CSV to write (query, groups, export-marks)")
    ap.add_argument("--quiet", action="store_true")
    return ap


def _check_exist(items: list[str]) -> None:
    missing = [p for p in items if not Path(p).exists()]
    if missing:
        raise FileNotFoundError(f"not found: {', '.join(missing[:5])}")


def _run(a) -> int:
    create = a.command == "add"
    if a.command in ("add", "query"):
        if not a.items:
            raise ValueError(f"{a.command}: give images, folders or CSVs")
        _check_exist(a.items)
    coll = Collection.open(a.dir, a.model, threshold=a.threshold, runtime=a.runtime, cache_dir=a.cache,
                           create=create)
    with coll:
        if a.command == "add":
            images = a.items[0] if len(a.items) == 1 else a.items
            r = coll.add(images, batch_size=a.batch_size, merge=not a.no_merge, progress=not a.quiet)
            rep = r.report
            print(f"{rep['added']} added, {rep['known']} already known, {rep['unreadable']} unreadable; "
                  f"{rep['items']} items ({rep['seconds']} s)")
            for p, reason in r.unreadable.itertuples(index=False):
                print(f"  unreadable: {p} ({reason})")
        elif a.command == "query":
            images = a.items[0] if len(a.items) == 1 else a.items
            q = coll.query(images, k=a.k, verify=not a.no_verify, batch_size=a.batch_size)
            table = q.matches if a.all else q.copies
            if a.out:
                Path(a.out).parent.mkdir(parents=True, exist_ok=True)
                q.matches.to_csv(a.out, index=False)
            with pd.option_context("display.max_colwidth", 60, "display.width", 160):
                print(table[["query", "match", "score", "verified", "decision"]].to_string(index=False)
                      if len(table) else "no copies found")
            rep = q.report
            line = (f"{rep['queries']} queries: {rep['copies']} copies among {rep['candidates']} candidates; "
                    f"embed + search {rep['ms_per_query_embed_search']:.1f} ms per query")
            if "ms_per_verified_pair" in rep:
                line += f", verification {rep['ms_per_verified_pair']:.1f} ms per verified pair"
            print(line)
            for p, reason in q.unreadable.itertuples(index=False):
                print(f"  unreadable: {p} ({reason})")
        elif a.command == "remove":
            items = [int(x) if x.isdigit() and not Path(x).exists() else x for x in a.items]
            print(f"{coll.remove(items)} removed")
        elif a.command == "stats":
            print(json.dumps(coll.stats(), indent=2))
        elif a.command == "mark-different":
            if len(a.items) != 2:
                raise ValueError("mark-different: give exactly two photos (paths or ids)")
            x, y = (int(v) if v.isdigit() and not Path(v).exists() else v for v in a.items)
            new = coll.mark_different(x, y)
            print("marked: not the same" if new else "already marked")
        elif a.command == "export-marks":
            if not a.out:
                raise ValueError("export-marks: give --out CSV")
            print(coll.export_marks(a.out))
        elif a.command == "groups":
            g = coll.groups(k=a.k if a.k != 10 else None)
            if a.out:
                Path(a.out).parent.mkdir(parents=True, exist_ok=True)
                g.to_csv(a.out, index=False)
            print(f"{g.group.nunique() if len(g) else 0} groups holding {len(g)} items")
        elif a.command == "merge":
            m = coll.merge(rebuild=True if a.rebuild else None, progress=not a.quiet)
            print(json.dumps(m) if m else "nothing to merge")
    return 0


def main(argv: list[str] | None = None) -> int:
    """The command line (see the module docstring); returns the exit status (2 on a user error)."""
    a = _parser().parse_intermixed_args(argv)
    try:
        return _run(a)
    except (FileNotFoundError, ValueError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
