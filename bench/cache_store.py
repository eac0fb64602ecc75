"""What the feature cache's storage costs: a file per record against records appended to packs.

    python bench/cache_store.py                          # 600 records of data/lun-shift, 4 rounds
    python bench/cache_store.py --images 300 --rounds 6 --dir /tmp

The records are the one pass's own (:func:`nnutils.decide.onepass.embed_and_describe` of the
runs/cpu decision, no cache: ORB keypoints, their mirror on one side of each pair, the dense
check's thumbnail, the facts) and the embedding rows beside them. Each round writes them to
a fresh folder under ``--dir`` both ways, in turn (A B, B A, ...: this machine's speed drifts
between runs), and reads them back through a newly opened cache:

* ``a file per record`` — what the cache did until the tenth session:
  :func:`nnutils.local.features_cache.save_record` (a temporary file renamed) plus an
  ``.npy`` per embedding row;
* ``packs`` — :class:`nnutils.local.features_cache.FeatureCache` and
  :class:`nnutils.data.cache.ContentCache` over :class:`nnutils.data.cache.PackStore`.

Prints ms per image of wall time and of user and system CPU (``getrusage``), for writing and
for reading. No asserts; nothing is chosen here.
"""
from __future__ import annotations

import argparse
import io
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from nnutils.data.cache import ContentCache, atomic_write  # noqa: E402
from nnutils.data.images import file_digest  # noqa: E402
from nnutils.decide.decision import Decision  # noqa: E402
from nnutils.decide.onepass import embed_and_describe  # noqa: E402
from nnutils.local.features_cache import FeatureCache, LocalSpec, load_record, record_bytes, save_record  # noqa: E402


def _clock(fn) -> tuple[float, float, float]:
    """(wall, user, system) seconds of ``fn()``."""
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    fn()
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    return time.perf_counter() - t0, r1.ru_utime - r0.ru_utime, r1.ru_stime - r0.ru_stime


def _files(folder: Path, items: list):
    """Write and read back: a record file and an ``.npy`` file per image (the old layout)."""
    def write():
        for d, rec, row in items:
            save_record(folder / f"{d}.rec", rec)
            atomic_write(folder / f"{d}.npy", lambda f, row=row: np.save(f, row, allow_pickle=False))

    def read():
        for d, _, _ in items:
            load_record(folder / f"{d}.rec")
            np.load(folder / f"{d}.npy")
    return write, read


def _packs(folder: Path, items: list, key: str):
    """Write and read back through FeatureCache and ContentCache (packs)."""
    def write():
        fc, ec = FeatureCache(folder, key), ContentCache(folder / "emb", [], workers=1)
        for d, rec, row in items:
            fc.put(d, rec)
            buf = io.BytesIO()
            np.save(buf, row, allow_pickle=False)
            ec.packs.put(d, buf.getbuffer())

    def read():
        fc, ec = FeatureCache(folder, key), ContentCache(folder / "emb", [], workers=1)
        for d, _, _ in items:
            fc.get(d)
            np.load(io.BytesIO(ec.packs.get(d)))
    return write, read


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", default=str(ROOT / "runs" / "cpu"))
    ap.add_argument("--data-dir", default=str(ROOT / "data" / "lun-shift"))
    ap.add_argument("--images", type=int, default=600)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--dir", default=tempfile.gettempdir(), help="where the cache folders are made (its disk is measured)")
    a = ap.parse_args(argv)
    data = Path(a.data_dir)
    t = pd.read_csv(data / "test.csv")
    p1 = [str(data / "images" / u) for u in t.image_url1]
    p2 = [str(data / "images" / u) for u in t.image_url2]
    paths = list(dict.fromkeys(p1 + p2))[: a.images]
    dec = Decision.load(a.run)
    spec = LocalSpec.from_decision(dec.local_method, dec.local_kw, dec.local_model)
    emb, ok, records, _ = embed_and_describe(dec.pair_embedder(runtime="tflite"), dec.pair_model_path, "tflite",
                                             paths, spec, None, pairs=(p1, p2))
    items = [(file_digest(p), records[p], emb[i]) for i, p in enumerate(paths) if p in records]
    size = np.mean([len(record_bytes(r)) for _, r, _ in items]) / 1e3
    print(f"# Feature-cache storage: {len(items)} records of {data} (mean {size:.0f} KB), cache folders under {a.dir}\n")
    print("| round | storage | write ms/image (wall) | user | system | read ms/image (wall) | user | system |")
    print("|---|---|---|---|---|---|---|---|")
    arms = ["a file per record", "packs"]
    for r in range(a.rounds):
        for arm in (arms if r % 2 == 0 else arms[::-1]):
            folder = Path(tempfile.mkdtemp(prefix="bench_store_", dir=a.dir))
            write, read = _files(folder, items) if arm == arms[0] else _packs(folder, items, spec.key())
            w = _clock(write)
            os.sync()                                   # the read is of what reached the disk's cache
            rd = _clock(read)
            n = len(items)
            print(f"| {r + 1} | {arm} | " + " | ".join(f"{1e3 * x / n:.3f}" for x in (*w, *rd)) + " |", flush=True)
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
