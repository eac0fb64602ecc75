"""LUN-style re-posting distortions: what happens to a flat photo when another site re-posts it.

Every distortion is a function ``f(img, rng) -> (img, detail)`` taking and returning an RGB
PIL image, with ``rng`` a :class:`numpy.random.Generator` (so a build is deterministic for
a seed) and ``detail`` a short human-readable string of the parameters drawn, recorded in
the dataset's metadata. :data:`DISTORTIONS` maps each kind to its function;
:func:`apply_distortion` also handles ``"combo"`` (2–3 kinds chained).

Kinds (the ``distortion`` column of the embedded dataset's metadata):

=================  =====================================================================
``watermark_text``  site name / phone / agency text, 4–12 % of the height, opacity 0.45–0.9,
                    a corner, the centre, or tiled diagonally across the photo
``watermark_logo``  a logo (perception's logoipsum or a drawn badge), 10–30 % of the width
``border``          a frame of one colour, 1–8 % of the size per side, optionally uneven
``padding``         letter-/pillar-boxing to another aspect ratio (4:3, 1:1, 16:9, 3:2)
``resize``          scale 0.45–1.4 with an aspect-ratio change of up to ±25 %
``crop``            up to ~20 % of the area cut away, unevenly from the sides
``color``           brightness, contrast, saturation and gamma shifts
``grayscale``       converted to grey (saved as a one-channel file by the builder)
``jpeg``            recompressed at quality 30–60 (the builder saves at this quality)
``rotate``          a tilt of 1–30 degrees (median ~12°): re-cropped to remove the corners, or
                    with the uncovered corners black or mirrored
``mirror``          mirrored left-right
``rotate90``        turned by 90°, 180° or 270° (a lost EXIF orientation)
``combo``           two or three of the above chained (at most one of the turns)
=================  =====================================================================
"""
from __future__ import annotations

from functools import lru_cache
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFont, ImageOps

from nnutils.data.photos import font_paths, logo_paths

__all__ = ["DISTORTIONS", "KINDS", "apply_distortion", "resize_to"]

Distortion = Callable[[Image.Image, np.random.Generator], tuple[Image.Image, str]]

WATERMARK_TEXTS = (
    "lun.ua", "DOM.RIA.com", "OLX", "flatfy.ua", "rieltor.ua", "ПРОДАЖ", "ОРЕНДА",
    "Агенція нерухомості", "ЕКСКЛЮЗИВ", "без комісії", "www.domik.ua", "© Home Photo",
    "M2 Realty", "Київ • Квартири", "Продаж від власника", "realty.ua",
)
FRAME_COLOURS = ((255, 255, 255), (0, 0, 0), (128, 128, 128), (240, 240, 235),
                 (30, 60, 140), (200, 30, 40), (250, 200, 0), (20, 120, 70))


def _phone(rng: np.random.Generator) -> str:
    d = rng.integers(0, 10, size=7)
    return f"+380 {rng.choice([50, 63, 66, 67, 68, 73, 93, 95, 97, 98])} " \
           f"{''.join(map(str, d[:3]))} {''.join(map(str, d[3:5]))} {''.join(map(str, d[5:]))}"


@lru_cache(maxsize=64)
def _font(index: int, size: int) -> ImageFont.ImageFont:
    fonts = font_paths()
    if fonts:
        return ImageFont.truetype(str(fonts[index % len(fonts)]), size)
    return ImageFont.load_default(size)


def resize_to(img: Image.Image, long_side: int) -> Image.Image:
    """Resize keeping the aspect ratio so the longer side is ``long_side`` pixels.

    Parameters
    ----------
    img : PIL.Image.Image
        The image (not modified).
    long_side : int
        Target length of the longer side, in pixels.

    Returns
    -------
    PIL.Image.Image
        ``img`` itself when it already has that size, else a Lanczos-resampled copy (each side
        at least 1 pixel).
    """
    s = long_side / max(img.size)
    size = (max(1, round(img.width * s)), max(1, round(img.height * s)))
    return img if size == img.size else img.resize(size, Image.Resampling.LANCZOS)


def _rand_colour(rng):
    return tuple(int(c) for c in FRAME_COLOURS[rng.integers(len(FRAME_COLOURS))])


def _luma(colour) -> float:
    r, g, b = colour[:3]
    return 0.299 * r + 0.587 * g + 0.114 * b


def _composite_at(canvas: Image.Image, layer: Image.Image, x: int, y: int) -> None:
    """Alpha-composite RGBA ``layer`` onto RGBA ``canvas`` at (x, y), clipping at the edges."""
    left, top = max(0, -x), max(0, -y)
    right, bottom = min(layer.width, canvas.width - x), min(layer.height, canvas.height - y)
    if right > left and bottom > top:
        canvas.alpha_composite(layer.crop((left, top, right, bottom)), (x + left, y + top))


def watermark_text(img, rng):
    """Overlay semi-transparent text: a corner, the centre, or tiled diagonally.

    The text colour is drawn from white, black and brand colours, then flipped to black or
    white if it would not contrast with the pixels under it (re-posting sites want their
    mark seen), and outlined in the opposite tone.

    Parameters
    ----------
    img : PIL.Image.Image
        The RGB photo (not modified).
    rng : numpy.random.Generator
        Source of every random choice, so a build is deterministic for a seed.

    Returns
    -------
    image : PIL.Image.Image
        The distorted RGB image, same size.
    detail : str
        The parameters drawn, e.g. ``text='OLX' size=40px opacity=0.62 colour=(255, 255, 255) layout=corner``.
    """
    text = _phone(rng) if rng.random() < 0.2 else str(rng.choice(WATERMARK_TEXTS))
    size = max(12, int(img.height * rng.uniform(0.04, 0.12)))
    font = _font(int(rng.integers(6)), size)
    opacity = rng.uniform(0.45, 0.9)
    colour = (255, 255, 255) if rng.random() < 0.6 else (0, 0, 0) if rng.random() < 0.5 else _rand_colour(rng)
    layout = str(rng.choice(["corner", "centre", "tiled"], p=[0.45, 0.3, 0.25]))
    base = img.convert("RGBA")
    overlay = Image.new("RGBA", base.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    stroke_w = max(1, size // 16)
    x0, y0, x1, y1 = draw.textbbox((0, 0), text, font=font, stroke_width=stroke_w)
    tw, th = x1 - x0, y1 - y0
    m = int(size * 0.6)
    if layout == "centre":
        x, y = (base.width - tw) // 2, (base.height - th) // 2
    else:
        corner = int(rng.integers(4))
        x = m if corner in (0, 2) else base.width - tw - m
        y = m if corner in (0, 1) else base.height - th - m
    region = img if layout == "tiled" else img.crop((max(0, x), max(0, y), min(img.width, x + tw),
                                                     min(img.height, y + th)))
    under = float(np.asarray(region.convert("L"), dtype=np.float32).mean()) if region.width * region.height else 128.0
    if abs(_luma(colour) - under) < 90:
        colour = (0, 0, 0) if under > 128 else (255, 255, 255)
    fill = colour + (int(255 * opacity),)
    stroke = ((0, 0, 0) if _luma(colour) > 128 else (255, 255, 255)) + (int(200 * opacity),)
    if layout == "tiled":
        tile = Image.new("RGBA", (tw + size * 2, th + size * 2), (0, 0, 0, 0))
        ImageDraw.Draw(tile).text((size - x0, size - y0), text, font=font, fill=fill,
                                  stroke_width=stroke_w, stroke_fill=stroke)
        tile = tile.rotate(float(rng.uniform(20, 40)), expand=True)
        step_x, step_y = int(tile.width * rng.uniform(1.0, 1.6)), int(tile.height * rng.uniform(1.0, 1.6))
        for yy in range(-tile.height // 2, base.height, max(8, step_y)):
            shift = (yy // max(8, step_y)) % 2 * step_x // 2
            for xx in range(-tile.width // 2 - shift, base.width, max(8, step_x)):
                _composite_at(overlay, tile, xx, yy)
    else:
        draw.text((x - x0, y - y0), text, font=font, fill=fill, stroke_width=stroke_w, stroke_fill=stroke)
    out = Image.alpha_composite(base, overlay).convert("RGB")
    return out, f"text={text!r} size={size}px opacity={opacity:.2f} colour={colour} layout={layout}"


def _drawn_logo(rng, width: int) -> Image.Image:
    """A simple agency badge: a rounded rectangle with a circle and initials."""
    h = max(12, width // 3)
    logo = Image.new("RGBA", (width, h), (0, 0, 0, 0))
    d = ImageDraw.Draw(logo)
    colour = _rand_colour(rng)
    d.rounded_rectangle((0, 0, width - 1, h - 1), radius=h // 4, fill=colour + (230,))
    d.ellipse((h // 6, h // 6, h - h // 6, h - h // 6), fill=(255, 255, 255, 240))
    text = "".join(rng.choice(list("ABCDKLMNPRSTUV"), size=2)) + " realty"
    room = width - h - h // 3
    font = _font(1, max(6, min(int(h * 0.55), int(room / (0.62 * len(text))))))
    d.text((h + h // 6, h // 2), text, font=font, fill=(255, 255, 255, 255), anchor="lm")
    return logo


def watermark_logo(img, rng):
    """Paste a logo at 10–30 % of the image width, with opacity 0.5–1.

    The logo is perception's logoipsum file when present (half the time), else a drawn badge;
    it goes to a corner or the centre.

    Parameters
    ----------
    img : PIL.Image.Image
        The RGB photo (not modified).
    rng : numpy.random.Generator
        Source of every random choice, so a build is deterministic for a seed.

    Returns
    -------
    image : PIL.Image.Image
        The distorted RGB image, same size.
    detail : str
        ``logo=<logoipsum|badge> width=<px>px opacity=<0.5–1> pos=<tl|tr|bl|br|centre>``.
    """
    width = max(16, int(img.width * rng.uniform(0.10, 0.30)))
    logos = logo_paths()
    if logos and rng.random() < 0.5:
        with Image.open(logos[0]) as lg:
            logo = lg.convert("RGBA")
        logo = logo.resize((width, max(1, round(logo.height * width / logo.width))), Image.Resampling.LANCZOS)
        source = "logoipsum"
    else:
        logo = _drawn_logo(rng, width)
        source = "badge"
    opacity = rng.uniform(0.5, 1.0)
    alpha = logo.getchannel("A").point(lambda a: int(a * opacity))
    logo.putalpha(alpha)
    m = int(min(img.size) * 0.03)
    pos = str(rng.choice(["tl", "tr", "bl", "br", "centre"]))
    x = {"tl": m, "bl": m, "tr": img.width - logo.width - m, "br": img.width - logo.width - m}.get(
        pos, (img.width - logo.width) // 2)
    y = {"tl": m, "tr": m, "bl": img.height - logo.height - m, "br": img.height - logo.height - m}.get(
        pos, (img.height - logo.height) // 2)
    base = img.convert("RGBA")
    base.alpha_composite(logo, (max(0, x), max(0, y)))
    return base.convert("RGB"), f"logo={source} width={width}px opacity={opacity:.2f} pos={pos}"


def border(img, rng):
    """Add a solid frame, 1–8 % of the size on each side (sometimes uneven).

    Parameters
    ----------
    img : PIL.Image.Image
        The RGB photo (not modified).
    rng : numpy.random.Generator
        Source of every random choice, so a build is deterministic for a seed.

    Returns
    -------
    image : PIL.Image.Image
        The distorted RGB image, larger by the frame (each side at least 2 pixels).
    detail : str
        ``colour=(r, g, b) sides(l,t,r,b)=(...)`` with the side widths in pixels.
    """
    colour = _rand_colour(rng)
    base = rng.uniform(0.01, 0.08)
    sides = [int(round(min(img.size) * base * (rng.uniform(0.5, 1.5) if rng.random() < 0.3 else 1)))
             for _ in range(4)]
    sides = [max(2, s) for s in sides]
    out = ImageOps.expand(img, border=tuple(sides), fill=colour)
    return out, f"colour={colour} sides(l,t,r,b)={tuple(sides)}"


def padding(img, rng):
    """Letter-/pillar-box the photo onto a canvas of another aspect ratio.

    The target ratio is one of 4:3, 1:1, 16:9, 3:2, 3:4; one within 8 % of the photo's own
    is pushed 30 % away so the pad is visible. The photo is centred on a solid colour.

    Parameters
    ----------
    img : PIL.Image.Image
        The RGB photo (not modified).
    rng : numpy.random.Generator
        Source of every random choice, so a build is deterministic for a seed.

    Returns
    -------
    image : PIL.Image.Image
        The distorted RGB image (the photo unscaled, centred on the padded canvas).
    detail : str
        ``aspect=<width/height> colour=(r, g, b)``.
    """
    target = float(rng.choice([4 / 3, 1.0, 16 / 9, 3 / 2, 3 / 4]))
    ratio = img.width / img.height
    if abs(np.log(target / ratio)) < 0.08:  # too close: force a visible pad
        target = ratio * 1.3 if rng.random() < 0.5 else ratio / 1.3
    w, h = (round(img.height * target), img.height) if target > ratio else (img.width, round(img.width / target))
    colour = _rand_colour(rng)
    canvas = Image.new("RGB", (w, h), colour)
    canvas.paste(img, ((w - img.width) // 2, (h - img.height) // 2))
    return canvas, f"aspect={target:.2f} colour={colour}"


def resize(img, rng):
    """Rescale by 0.45–1.4 and change the aspect ratio by up to ±25 %.

    Parameters
    ----------
    img : PIL.Image.Image
        The RGB photo (not modified).
    rng : numpy.random.Generator
        Source of every random choice, so a build is deterministic for a seed.

    Returns
    -------
    image : PIL.Image.Image
        The distorted RGB image (bicubic; each side at least 16 pixels).
    detail : str
        ``scale=<s> aspect_change=<factor> size=<W>x<H>`` (pixels).
    """
    s = rng.uniform(0.45, 1.4)
    aspect = float(np.exp(rng.uniform(-0.25, 0.25)))
    w = max(16, round(img.width * s * np.sqrt(aspect)))
    h = max(16, round(img.height * s / np.sqrt(aspect)))
    return img.resize((w, h), Image.Resampling.BICUBIC), f"scale={s:.2f} aspect_change={aspect:.2f} size={w}x{h}"


def crop(img, rng):
    """Cut away 5–20 % of the area, unevenly from the four sides.

    Four times in ten the crop takes mostly one dimension.

    Parameters
    ----------
    img : PIL.Image.Image
        The RGB photo (not modified).
    rng : numpy.random.Generator
        Source of every random choice, so a build is deterministic for a seed.

    Returns
    -------
    image : PIL.Image.Image
        The distorted RGB image (smaller).
    detail : str
        ``kept_area=<share> box=(x0,y0,x1,y1)`` in pixels of ``img``.
    """
    keep_area = rng.uniform(0.80, 0.95)
    kw = kh = np.sqrt(keep_area)
    if rng.random() < 0.4:  # crop mostly one dimension
        kw, kh = (keep_area, 1.0) if rng.random() < 0.5 else (1.0, keep_area)
    w, h = round(img.width * kw), round(img.height * kh)
    x = int(rng.integers(0, img.width - w + 1))
    y = int(rng.integers(0, img.height - h + 1))
    return img.crop((x, y, x + w, y + h)), f"kept_area={w * h / (img.width * img.height):.2f} box=({x},{y},{x + w},{y + h})"


def color(img, rng):
    """Shift brightness, contrast, saturation and gamma.

    Factors: brightness 0.7–1.3, contrast 0.7–1.35, saturation 0.5–1.5, gamma exp(±0.35).

    Parameters
    ----------
    img : PIL.Image.Image
        The RGB photo (not modified).
    rng : numpy.random.Generator
        Source of every random choice, so a build is deterministic for a seed.

    Returns
    -------
    image : PIL.Image.Image
        The distorted RGB image, same size.
    detail : str
        ``brightness=<f> contrast=<f> saturation=<f> gamma=<g>``.
    """
    b, c, s = rng.uniform(0.7, 1.3), rng.uniform(0.7, 1.35), rng.uniform(0.5, 1.5)
    g = float(np.exp(rng.uniform(-0.35, 0.35)))
    out = ImageEnhance.Brightness(img).enhance(b)
    out = ImageEnhance.Contrast(out).enhance(c)
    out = ImageEnhance.Color(out).enhance(s)
    lut = [min(255, int(round(255 * (i / 255) ** g))) for i in range(256)] * 3
    return out.point(lut), f"brightness={b:.2f} contrast={c:.2f} saturation={s:.2f} gamma={g:.2f}"


def grayscale(img, rng):
    """Convert to grey (kept as 3 equal channels here; the builder saves it as mode L).

    Parameters
    ----------
    img : PIL.Image.Image
        The RGB photo (not modified).
    rng : numpy.random.Generator
        Source of every random choice, so a build is deterministic for a seed.

    Returns
    -------
    image : PIL.Image.Image
        The distorted RGB image, same size, R = G = B.
    detail : str
        Always ``"grey"``.
    """
    return ImageOps.grayscale(img).convert("RGB"), "grey"


def jpeg(img, rng):
    """Mark for heavy recompression; the builder saves the file at the quality drawn here.

    Parameters
    ----------
    img : PIL.Image.Image
        The RGB photo (not modified).
    rng : numpy.random.Generator
        Source of every random choice, so a build is deterministic for a seed.

    Returns
    -------
    image : PIL.Image.Image
        The distorted RGB image: ``img`` itself, unchanged.
    detail : str
        ``quality=<30–60>``, the JPEG quality the builder saves with.
    """
    return img, f"quality={int(rng.integers(30, 61))}"


def rotate(img, rng):
    """Tilt by 1–30 degrees either way: re-cropped, or with black or mirrored corners.

    Re-posts are straightened or tilted by a few degrees (most often) up to ~30°. Four
    times in ten the rotated frame is re-cropped to the largest upright rectangle of the
    same aspect ratio (no blank corners); otherwise the frame keeps its size and the corners
    the rotation uncovers are filled black (three in ten) or with the photo mirrored at its
    edge (three in ten, as "reflect" padding does).

    Parameters
    ----------
    img : PIL.Image.Image
        The RGB photo (not modified).
    rng : numpy.random.Generator
        Source of every random choice, so a build is deterministic for a seed.

    Returns
    -------
    image : PIL.Image.Image
        The distorted RGB image (same size, or smaller and of the same aspect ratio when
        re-cropped).
    detail : str
        ``angle=<±a>deg corners=<crop|black|mirror>``.
    """
    import cv2

    angle = float((1.0 + 29.0 * rng.random() ** 1.5) * rng.choice([-1, 1]))   # median ~ 12°
    r = rng.random()
    corners = "crop" if r < 0.4 else "black" if r < 0.7 else "mirror"
    w, h = img.size
    if corners == "crop":
        out = img.rotate(angle, resample=Image.Resampling.BICUBIC, expand=False)
        a = np.deg2rad(abs(angle))
        # largest axis-aligned rectangle inside the rotated frame (same aspect ratio)
        k = 1.0 / (np.cos(a) + np.sin(a) * max(w / h, h / w))
        cw, ch = int(w * k), int(h * k)
        x, y = (w - cw) // 2, (h - ch) // 2
        out = out.crop((x, y, x + cw, y + ch))
    else:
        M = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), angle, 1.0)
        border = cv2.BORDER_CONSTANT if corners == "black" else cv2.BORDER_REFLECT_101
        out = Image.fromarray(cv2.warpAffine(np.asarray(img), M, (w, h), flags=cv2.INTER_CUBIC,
                                             borderMode=border, borderValue=(0, 0, 0)))
    return out, f"angle={angle:+.1f}deg corners={corners}"


def mirror(img, rng):
    """Mirror left-right: a common way to slip past a site's duplicate filter.

    Parameters
    ----------
    img : PIL.Image.Image
        The RGB photo (not modified).
    rng : numpy.random.Generator
        Unused (same signature as the other distortions).

    Returns
    -------
    image : PIL.Image.Image
        The mirrored RGB image (same size).
    detail : str
        ``left-right``.
    """
    return ImageOps.mirror(img), "left-right"


def rotate90(img, rng):
    """Turn by 90°, 180° or 270°: an EXIF orientation lost (or applied twice) on the way.

    Parameters
    ----------
    img : PIL.Image.Image
        The RGB photo (not modified).
    rng : numpy.random.Generator
        Draws the turn.

    Returns
    -------
    image : PIL.Image.Image
        The turned RGB image (width and height swapped for 90° and 270°).
    detail : str
        ``turn=<90|180|270>deg`` (counter-clockwise).
    """
    turn = int(rng.choice([90, 180, 270]))
    op = {90: Image.Transpose.ROTATE_90, 180: Image.Transpose.ROTATE_180, 270: Image.Transpose.ROTATE_270}[turn]
    return img.transpose(op), f"turn={turn}deg"


DISTORTIONS: dict[str, Distortion] = {
    "watermark_text": watermark_text,
    "watermark_logo": watermark_logo,
    "border": border,
    "padding": padding,
    "resize": resize,
    "crop": crop,
    "color": color,
    "grayscale": grayscale,
    "jpeg": jpeg,
    "rotate": rotate,
    "mirror": mirror,
    "rotate90": rotate90,
}
KINDS: tuple[str, ...] = tuple(DISTORTIONS) + ("combo",)


def apply_distortion(img: Image.Image, kind: str, rng: np.random.Generator) -> tuple[Image.Image, list[str], str]:
    """Apply one distortion kind (or ``"combo"``) to an RGB image.

    A combo draws 2–3 kinds other than ``jpeg``, ``grayscale`` and ``rotate90``, applies them in the order
    a re-posting site would (geometric steps first, overlays last) and, half the time, ends
    with ``jpeg``.

    Parameters
    ----------
    img : PIL.Image.Image
        The RGB photo (not modified).
    kind : str
        One of :data:`KINDS`.
    rng : numpy.random.Generator
        Source of every random choice.

    Returns
    -------
    image : PIL.Image.Image
        The distorted RGB image.
    steps : list of str
        The elementary kinds applied, in order (one for a plain kind, a combo's 2–4 parts).
    detail : str
        Each step's ``kind(parameters)`` joined with ``"; "``.

    Raises
    ------
    ValueError
        When ``kind`` is not one of :data:`KINDS`.
    """
    if kind == "combo":
        pool = [k for k in DISTORTIONS if k not in ("jpeg", "grayscale", "rotate90")]
        steps = list(rng.choice(pool, size=int(rng.integers(2, 4)), replace=False))
        # geometric steps first, overlays last: the order a re-posting site applies them
        order = ["crop", "mirror", "rotate", "resize", "color", "padding", "border", "watermark_logo",
                 "watermark_text"]
        steps = sorted(steps, key=order.index)
        if rng.random() < 0.5:
            steps.append("jpeg")
    elif kind in DISTORTIONS:
        steps = [kind]
    else:
        raise ValueError(f"unknown distortion kind {kind!r}; expected one of {KINDS}")
    details = []
    for step in steps:
        img, d = DISTORTIONS[step](img, rng)
        details.append(f"{step}({d})")
    return img, steps, "; ".join(details)
