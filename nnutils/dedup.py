"""Find the groups of duplicates in a whole collection, without an N×N matrix.

    python -m nnutils.dedup --images photos/ --model runs/cpu --out runs/cpu/dedup
    python -m nnutils.dedup --csv listing.csv --model runs/cpu --threshold 0.6 --min2 --out dedup/
    python -m nnutils.dedup --images photos/ --model runs/cpu --out dedup/ --runner DirectRunner --workers 2
    python -m nnutils.dedup --images gs://bucket/photos --model gs://bucket/model.tflite --threshold 0.6 \
        --out gs://bucket/dedup --runner DataflowRunner --project P --region europe-west1 \
        --temp_location gs://bucket/tmp --requirements_file requirements.txt

Without ``--runner`` everything runs in this process (the steps below). With ``--runner`` the
same dedup runs as Apache Beam pipelines (:mod:`nnutils.scale.beam`): ``DirectRunner`` is this
machine with ``--workers`` processes; ``FlinkRunner``, ``SparkRunner``, ``DataflowRunner``, … take
their own Beam options, given after the others and passed to Beam unchanged.

The steps, each a function here:

1. :func:`list_images` / :func:`read_image_list` — a folder (recursive) or a CSV of paths/URLs.
2. embed every image once (batched, cached on disk by content, progress bar): the same
   embedder and cache as ``nnutils.predict``.
3. :func:`nnutils.scale.index.knn` — a faiss index (exact below a size, approximate above) and the
   ``k`` nearest neighbours of every image: memory O(N·k), not O(N²).
4. :func:`neighbour_edges` — keep neighbour pairs at or above the threshold, with the Kaggle
   Shopee refinements as options: ``min2`` (every image keeps its nearest neighbour when it
   is at least ``min2_threshold`` similar, so a duplicate just under the threshold still
   finds its pair) and ``mutual`` (keep i–j only when each is among the other's ``k``
   neighbours, which removes "hub" images that are everyone's neighbour).
5. :func:`connected_groups` — groups are the connected components of the kept edges
   (transitive: a~b and b~c put a, b, c in one group even when a and c are not similar;
   :func:`group_table` reports each member's similarity to its group's representative, so
   a loose chain shows up as a low value).
6. :func:`group_table` and :func:`files_to_remove` — a CSV of groups (group id, path,
   similarity to the representative) and the list of files to remove, keeping one per
   group (by default the largest image: the best copy of a re-posted photo).

Unreadable images are never grouped; they are listed in the result's ``unreadable`` table
with the reason (the same policy as the pairs task). :func:`rowwise_f1` is the Kaggle Shopee
metric for grouping quality (mean over images of the F1 between the predicted and the true
group).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nnutils.scale.beam import beam_find_duplicates
from nnutils.scale.dedup import find_duplicates


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m nnutils.dedup", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", help="a folder of images (searched recursively)")
    src.add_argument("--csv", help="a CSV with a path/image_url/url/file column")
    ap.add_argument("--model", required=True, help="run folder with decision.json, or a .keras/.tflite embedder")
    ap.add_argument("--threshold", type=float, default=None, help="cosine threshold (default: the run's)")
    ap.add_argument("--k", type=int, default=None, help="neighbours per image (default: the run's, else 10)")
    ap.add_argument("--index", default="auto", choices=["auto", "flat", "ivf", "hnsw"])
    ap.add_argument("--min2", action=argparse.BooleanOptionalAction, default=None,
                    help="keep each image's nearest neighbour if close enough (default: the run's choice)")
    ap.add_argument("--min2-threshold", type=float, default=None)
    ap.add_argument("--mutual", action=argparse.BooleanOptionalAction, default=None,
                    help="keep only mutual neighbours (default: the run's choice)")
    ap.add_argument("--keep", default="largest", choices=["largest", "medoid", "first"])
    ap.add_argument("--runtime", default="tflite", choices=["tflite", "keras"])
    ap.add_argument("--cache", default=None, help="embedding cache folder (default: <out>/cache)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--out", required=True, help="output folder: groups.csv, to_remove.csv, unreadable.csv, report.json")
    ap.add_argument("--verify", default="auto", metavar="off|auto|on|FILE",
                    help="check every link with the run's local verification + fused decision (notebook 10) "
                         "before grouping: auto (default: when the run folder's decision verifies), off, on, "
                         "or a decision.json / run folder (not with --runner: the Beam pipeline links by the "
                         "threshold alone)")
    ap.add_argument("--quiet", action="store_true")
    beam = ap.add_argument_group("Apache Beam (nnutils.scale.beam); other --options after these go to Beam unchanged")
    beam.add_argument("--runner", default=None,
                      help="run on Beam: DirectRunner (this machine, --workers processes), FlinkRunner, "
                           "SparkRunner, DataflowRunner, ... (default: one process, no Beam)")
    beam.add_argument("--workers", type=int, default=2, help="DirectRunner worker processes (default 2)")
    beam.add_argument("--threads", type=int, default=1, help="TFLite/faiss threads per Beam worker (default 1)")
    a, extra = ap.parse_known_args(argv)
    if extra and a.runner is None:
        ap.error(f"unrecognized arguments: {' '.join(extra)} (Beam options need --runner)")
    if a.runner is not None and a.runtime != "tflite":
        ap.error("--runner embeds with the TFLite runtime only (drop --runtime keras)")
    try:
        if a.runner is None:
            res = find_duplicates(a.images or a.csv, a.model, threshold=a.threshold, k=a.k, index=a.index,
                                  min2=a.min2, min2_threshold=a.min2_threshold, mutual=a.mutual, keep=a.keep,
                                  runtime=a.runtime, cache_dir=a.cache or Path(a.out) / "cache",
                                  batch_size=a.batch_size, progress=not a.quiet, verify=a.verify)
            files = res.save(a.out)
        else:
            if a.verify not in ("off", "auto"):
                ap.error("--verify with --runner: the Beam pipeline links by the threshold alone (use --verify off)")
            res = beam_find_duplicates(a.images or a.csv, a.model, a.out, runner=a.runner, workers=a.workers,
                                       pipeline_args=extra, threshold=a.threshold, k=a.k, index=a.index,
                                       min2=a.min2, min2_threshold=a.min2_threshold, mutual=a.mutual, keep=a.keep,
                                       cache_dir=a.cache, batch_size=a.batch_size, threads=a.threads)
            files = {n: f"{a.out.rstrip('/')}/{n}.{'json' if n == 'report' else 'csv'}"
                     for n in ("groups", "to_remove", "unreadable", "report")}
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    r = res.report
    print(f"{r['images']} images: {r['groups']} groups holding {r['images_in_groups']} images; "
          f"{r['files_to_remove']} files to remove; {r['unreadable']} unreadable ({r['seconds']} s)")
    if r.get("verification"):
        v = r["verification"]
        print(f"  verification ({v['verified_with']}): {v['links_rejected']} of {v['links']} links rejected")
    for k_, p in files.items():
        print(f"  {k_}: {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
