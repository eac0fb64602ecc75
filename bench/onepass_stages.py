"""Where one image's one-pass time goes, stage by stage, and which thread counts run it fastest.

    python bench/onepass_stages.py                                 # runs/cpu decision on data/lun-shift
    python bench/onepass_stages.py --data-dir data/lun-embedded --images 200

The one pass (:func:`nnutils.decide.onepass.embed_and_describe`) decodes each image once and
derives the global model's input, the local features and the facts of the fused decision.
Part 1 times each stage of that work on one thread, per image (ms, mean over ``--images``
distinct test images, page cache warm): the DCT-scaled decode at the local extractor's
side, the model's square, the local features (ORB with and without the mirrored
descriptors), the facts (file and pixel digests, each perceptual hash of ORB's thumbnail) and
the feature-cache write, and the model alone (ms of wall time per image at batch 32, 1 and 2
interpreter threads). Part 2 runs the whole pass from a cold cache for each combination of
1 or 2 interpreter threads and 1 or 2 decoding threads (img/s). Part 3 (``--mirror-ab N``)
runs the pass over the images of the set's pairs with ORB's mirrored descriptors on every
image and on one side of each pair (``embed_and_describe(pairs=)``,
:func:`nnutils.local.verify.mirror_side`), N rounds interleaved in one process (A B, B A, ...), cache off: ms
of wall and of CPU per image — how a ~1 ms change is seen on a machine whose speed drifts
by 15 % between runs. Part 4 (``--model-ab N``) runs the pass with the float global model
and with the decision's int8 one (:attr:`nnutils.decide.decision.Decision.global_model`), N
rounds interleaved, the same way. For reporting the cost split; nothing is chosen here. No
asserts.

    python bench/onepass_stages.py --mirror-ab 3                    # + the one-sided mirror A/B
    python bench/onepass_stages.py --model-ab 4                     # + the float / int8 model A/B
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from PIL import Image  # noqa: E402

from nnutils.data.images import file_digest, pixel_digest, read_any  # noqa: E402
from nnutils.decide.decision import Decision  # noqa: E402
from nnutils.decide.fusion import HASH_KINDS, hash_bits, hash_thumbnail, image_facts_of  # noqa: E402
from nnutils.decide.hashes import HASHES  # noqa: E402
from nnutils.decide.onepass import embed_and_describe  # noqa: E402
from nnutils.local.features_cache import FeatureCache, ImageRecord, LocalSpec  # noqa: E402
from nnutils.models.embedders import square_from_rgb  # noqa: E402


def test_images(data: Path, n: int) -> list[str]:
    """The first ``n`` distinct images of ``data``'s test.csv, in pair order (paths)."""
    t = pd.read_csv(data / "test.csv")
    urls = list(dict.fromkeys(t.image_url1.tolist() + t.image_url2.tolist()))[:n]
    return [str(data / "images" / u) for u in urls]


def stage_times(paths: list[str], spec: LocalSpec, size: int) -> dict:
    """Mean ms per image of each stage, one thread (see the module docstring)."""
    ms: dict = defaultdict(float)
    cache = FeatureCache(tempfile.mkdtemp(prefix="bench_stages_"), spec.key(HASH_KINDS))

    def clock(name, fn):
        t = time.perf_counter()
        out = fn()
        ms[name] += 1e3 * (time.perf_counter() - t)
        return out

    plain = LocalSpec("orb", {**spec.extract_kw, "mirror": False}) if spec.method == "orb" else None
    n = 0
    for p in paths:
        rgb, orig, _ = clock("decode (DCT-scaled, local side)", lambda: read_any(p, spec.decode_side))
        if rgb is None:
            continue
        n += 1
        clock(f"model square ({size} px)", lambda: square_from_rgb(rgb, size))
        kp = clock(f"{spec.method} + mirrored descriptors", lambda: spec.extract(rgb, orig))
        if plain is not None:
            clock("orb without the mirror", lambda: plain.extract(rgb, orig))
        digest = clock("facts: file digest", lambda: file_digest(p))
        clock("facts: pixel digest", lambda: pixel_digest(rgb))
        if kp.thumb is not None:        # ORB's thumbnail: the one pass hashes it and makes none of its own
            im = Image.fromarray(kp.thumb)
        else:
            im = clock("facts: hash thumbnail (no ORB thumbnail)", lambda: hash_thumbnail(rgb))
        for k in HASHES:   # every hash the project knows
            clock(f"facts: {k}{'' if k in HASH_KINDS else ' (not in HASH_KINDS)'}", lambda k=k: hash_bits(im, k))
        facts = image_facts_of(p, rgb, HASH_KINDS, size=orig, digest=digest, thumb=kp.thumb)   # untimed: the record
        clock("feature-cache write", lambda: cache.put(digest, ImageRecord(kp, facts)))
    return {k: v / max(1, n) for k, v in ms.items()}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run-dir", default=str(ROOT / "runs" / "cpu"))
    ap.add_argument("--data-dir", default=str(ROOT / "data" / "lun-shift"))
    ap.add_argument("--images", type=int, default=300)
    ap.add_argument("--mirror-ab", type=int, default=0, metavar="N",
                    help="rounds of the one-sided mirror A/B over all the set's pairs (0: skip)")
    ap.add_argument("--model-ab", type=int, default=0, metavar="N",
                    help="rounds of the float against the int8 global model A/B over all the set's pairs (0: skip)")
    args = ap.parse_args(argv)
    dec = Decision.load(args.run_dir)
    if not dec.verifies:
        dec = Decision.load_verified(args.run_dir)
    if dec is None or not dec.verifies:
        sys.exit(f"{args.run_dir}: no verifying decision (run notebook 10 first)")
    spec = LocalSpec.from_decision(dec.local_method, dec.local_kw, dec.local_model)
    paths = test_images(Path(args.data_dir), args.images)
    cache = tempfile.mkdtemp(prefix="bench_stages_tflite_")
    emb = {th: dec.pair_embedder(runtime="tflite", cache_dir=cache, threads=th) for th in (1, 2)}
    float_emb = {th: dec.embedder(runtime="tflite", cache_dir=cache, threads=th) for th in (1, 2)}
    size = emb[2].size
    model_name = dec.pair_model_path.name
    print(f"# One-pass stages: {dec.model} + {dec.local_method}, {len(paths)} images of {args.data_dir}\n")
    print(f"- load average at the start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}\n")
    rows = stage_times(paths, spec, size)
    batch = np.random.default_rng(0).uniform(0, 255, (32, size, size, 3)).astype(np.float32)
    models = {model_name: emb}
    if dec.global_model is not None:
        models[f"{dec.model_path.name}, float (not the decision's)"] = float_emb
    for name, ems in models.items():
        for th, e in ems.items():
            e._embed_batch(batch)
            t = []
            for _ in range(5):
                t0 = time.perf_counter()
                e._embed_batch(batch)
                t.append(time.perf_counter() - t0)
            rows[f"model alone ({name}), {th} interpreter thread(s) (wall)"] = 1e3 * float(np.median(t)) / len(batch)
    print("| stage (one thread unless said) | ms per image |\n|---|---|")
    for k, v in rows.items():
        print(f"| {k} | {v:.2f} |")
    print("\n| interpreter threads | decoding threads | one pass img/s (cold cache) | local ms per image |\n|---|---|---|---|")
    for th in (2, 1):
        for dw in (2, 1):
            t0 = time.perf_counter()
            _, ok, _, rep = embed_and_describe(emb[th], dec.pair_model_path, "tflite", paths, spec, None,
                                               decode_workers=dw)
            secs = time.perf_counter() - t0
            print(f"| {th} | {dw} | {int(ok.sum()) / secs:.1f} | {rep['ms_local_per_image']} |")
    if args.mirror_ab:
        mirror_ab(emb[2], dec, spec, Path(args.data_dir), args.mirror_ab)
    if args.model_ab:
        if dec.global_model is None:
            print("\n- --model-ab: the decision reads the float model (no global_model): nothing to compare")
        else:
            model_ab({"float": (float_emb[2], dec.model_path), "int8": (emb[2], dec.global_model)}, spec,
                     Path(args.data_dir), args.model_ab)
    print(f"\n- load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


def _set_pairs(data: Path) -> tuple[list, list, list]:
    """(paths1, paths2, distinct paths) of the set's test.csv (the A/B runs need the pairs)."""
    t = pd.read_csv(data / "test.csv")
    p1 = [str(data / "images" / u) for u in t.image_url1]
    p2 = [str(data / "images" / u) for u in t.image_url2]
    return p1, p2, list(dict.fromkeys(p1 + p2))


def _timed_pass(embedder, model_path, spec: LocalSpec, paths: list, pairs) -> tuple[float, float, dict]:
    """One cold one pass over ``paths`` (no cache): (ms per readable image of wall time, of CPU time, its report)."""
    c0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    _, ok, _, rep = embed_and_describe(embedder, model_path, "tflite", paths, spec, None, pairs=pairs)
    wall, c1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF)
    cpu = (c1.ru_utime - c0.ru_utime) + (c1.ru_stime - c0.ru_stime)
    n = max(1, int(ok.sum()))
    return 1e3 * wall / n, 1e3 * cpu / n, rep


def _rounds(arms: list, rounds: int):
    """``(round number, arm)`` for ``rounds`` interleaved rounds: A B, B A, ... (no arm always first)."""
    for r in range(rounds):
        for arm in (arms if r % 2 == 0 else arms[::-1]):
            yield r + 1, arm


def model_ab(arms: dict, spec: LocalSpec, data: Path, rounds: int) -> None:
    """Part 4: the pass with the float global model and with the int8 one, ``rounds`` times interleaved."""
    p1, p2, paths = _set_pairs(data)
    print("\n| round | global model | ms per image (wall) | ms of CPU per image |\n|---|---|---|---|")
    for r, name in _rounds(list(arms), rounds):
        embedder, path = arms[name]
        wall, cpu, _ = _timed_pass(embedder, path, spec, paths, (p1, p2))
        print(f"| {r} | {name} ({Path(path).name}) | {wall:.2f} | {cpu:.2f} |")


def mirror_ab(embedder, dec, spec: LocalSpec, data: Path, rounds: int) -> None:
    """Part 3: the pass with the mirror on every image, then on one side of each pair, ``rounds`` times."""
    p1, p2, paths = _set_pairs(data)
    print(f"\n| round | mirrored descriptors on | images mirrored | ms per image (wall) | ms of CPU per image |"
          f"\n|---|---|---|---|---|")
    for r, (label, pairs) in _rounds([("every image", None), ("one side of each pair", (p1, p2))], rounds):
        wall, cpu, rep = _timed_pass(embedder, dec.pair_model_path, spec, paths, pairs)
        print(f"| {r} | {label} | {rep['mirrored']} of {len(paths)} | {wall:.2f} | {cpu:.2f} |")


if __name__ == "__main__":
    main()
