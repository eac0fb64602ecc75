"""The dedup on Apache Beam (DirectRunner, 2 worker processes) vs single-process ``nnutils.dedup``.

    python bench/beam.py                                   # the smoke and (if built) the full embedded collection
    python bench/beam.py --images data/lun-embedded-smoke/images --model runs/smoke --workers 2

For each collection it runs :func:`nnutils.scale.dedup.find_duplicates` (one process, the
TFLite interpreter on 2 threads, an empty embedding cache so every image is embedded) and
:func:`nnutils.scale.beam.beam_find_duplicates` (``DirectRunner`` pinned to multi-process
FnApi, ``--workers`` processes, 1 interpreter thread each), both with the exact (flat) index and
the run's grouping settings, and prints one markdown table:

- ``same groups``: the same partition of the images into groups, the same kept file in
  each, and the same unreadable files (yes/no);
- ``images/s``: images listed / wall seconds of the whole dedup (start-up, embedding,
  index, search, grouping, tables);
- ``embed images/s``: images / seconds of the embedding step alone (Beam: pipeline 1,
  start-up of the worker processes included);
- ``embed images/s per core``: the embedding rate divided by the cores it used
  (2 threads, or ``--workers`` × 1 thread): the number behind the cluster estimate.

It ends with the estimate for 100M photos: worker-core hours at the measured per-core rate of
the Beam embedding step (a cluster worker core is taken as fast as one core here), and the
wall hours on 100, 500 and 1,000 worker cores. No asserts; timings depend on the other load
on the machine.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pandas as pd  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from nnutils.scale.beam import beam_find_duplicates  # noqa: E402
from nnutils.scale.dedup import find_duplicates  # noqa: E402

PHOTOS = 100_000_000


def same_groups(a, b) -> bool:
    """Same partition, same kept file per group, same unreadable files."""
    def part(g):
        return {frozenset(d.path) for _, d in g.groupby("group")}
    return (part(a.groups) == part(b.groups)
            and set(a.groups[a.groups.representative].path) == set(b.groups[b.groups.representative].path)
            and sorted(a.unreadable.path) == sorted(b.unreadable.path))


def bench(images: str, model: str, workers: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench_beam_") as tmp:
        tmp = Path(tmp)
        # convert the model once, outside both timings
        from nnutils.decide.decision import Decision
        Decision.load(model).for_embeddings().embedder(runtime="tflite", cache_dir=tmp / "model")
        t0 = time.perf_counter()
        one = find_duplicates(images, model, index="flat", cache_dir=tmp / "model", progress=False)
        one_s = time.perf_counter() - t0
        # (Beam reads no embedding cache: both embed every image)
        t0 = time.perf_counter()
        bm = beam_find_duplicates(images, model, tmp / "beam", workers=workers, threads=1, index="flat",
                                  cache_dir=tmp / "model")
        beam_s = time.perf_counter() - t0
    n = one.report["images"]
    return {"collection": images, "images": n, "groups": one.report["groups"],
            "same groups": "yes" if same_groups(one, bm) else "no",
            "single images/s": n / one_s, "beam images/s": n / beam_s,
            "single embed images/s": n / one.report["embed_s"], "beam embed images/s": n / bm.report["embed_s"],
            "single embed images/s per core": n / one.report["embed_s"] / 2,
            "beam embed images/s per core": n / bm.report["embed_s"] / workers,
            "single s": one_s, "beam s": beam_s, "beam embed s": bm.report["embed_s"],
            "beam index s": bm.report["index_s"], "beam search s": bm.report["search_s"],
            "dim": int(one.embeddings.shape[1])}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--images", nargs="*", default=None,
                    help="collections (default: data/lun-embedded-smoke/images and data/lun-embedded/images)")
    ap.add_argument("--model", default="runs/smoke", help="run folder (default runs/smoke)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", default=None, help="also write the table as CSV")
    a = ap.parse_args(argv)
    images = a.images or [p for p in ("data/lun-embedded-smoke/images", "data/lun-embedded/images")
                          if Path(p).is_dir()]
    if not images:
        print("no collection: build one with python -m nnutils.pipeline --profile smoke", file=sys.stderr)
        return 2
    print(f"machine: {os.cpu_count()} cores; model {a.model}; DirectRunner workers {a.workers}", flush=True)
    rows = []
    for im in images:
        rows.append(bench(im, a.model, a.workers))
        print({k: (round(v, 2) if isinstance(v, float) else v) for k, v in rows[-1].items()}, flush=True)
    table = pd.DataFrame(rows)
    cols = ["collection", "images", "groups", "same groups", "single images/s", "beam images/s",
            "single embed images/s", "beam embed images/s", "single embed images/s per core",
            "beam embed images/s per core"]
    print()
    print(table[cols].to_markdown(index=False, floatfmt=".3g"))
    per_core = table.iloc[-1]["beam embed images/s per core"]
    how = f"Beam embedding of {table.iloc[-1]['collection']}, start-up included"
    if len(table) >= 2 and table.iloc[-1]["images"] > table.iloc[0]["images"]:
        # the marginal rate between the smallest and the largest collection: the fixed start-up cost cancels
        d_n = table.iloc[-1]["images"] - table.iloc[0]["images"]
        d_s = table.iloc[-1]["beam embed s"] - table.iloc[0]["beam embed s"]
        start = table.iloc[0]["beam embed s"] - table.iloc[0]["images"] * d_s / d_n
        per_core = d_n / d_s / a.workers
        how = f"marginal Beam embedding rate between the collections; fixed start-up ≈ {start:.1f} s per pipeline"
    core_h = PHOTOS / per_core / 3600
    print(f"\n100M photos at {per_core:.1f} images/s per core ({how}): {core_h:,.0f} worker-core hours; wall: " +
          ", ".join(f"{c:,} cores {core_h / c:.1f} h" for c in (100, 500, 1000)))
    if a.out:
        table.to_csv(a.out, index=False)
        print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
