"""A corpus of good and bad image files, written at test time.

Nothing binary is committed: :func:`make_bad_image_corpus` draws every file
with PIL/numpy into a directory and returns, for each case name, the path
and an :class:`Expected` record saying what a correct reader must return.

Usage (other test modules may reuse it)::

    from tests.image_corpus import make_bad_image_corpus

    corpus = make_bad_image_corpus(tmp_path)
    path, exp = corpus["rgba_png"]
    if exp.reason is None:
        arr = read_rgb(path, **exp.read_kwargs)
        assert arr.shape == exp.shape
        for (x, y), rgb in exp.pixels.items():
            assert abs(arr[y, x] - rgb).max() <= exp.tol
    else:
        ...  # expect UnreadableImageError(reason=exp.reason)

or the session fixture ``bad_image_corpus`` from ``tests/conftest.py``.
The reasons are the literal strings of the documented vocabulary in
``nnutils.data.images`` (kept literal on purpose, so the corpus also checks it).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

RED = (255, 0, 0)
GREEN = (0, 255, 0)
BLUE = (0, 0, 255)
WHITE = (255, 255, 255)
BLACK = (0, 0, 0)


@dataclass(frozen=True)
class Expected:
    """What reading one corpus file must give.

    reason : str or None
        None for readable files; otherwise the ``UnreadableImageError.reason``.
    shape : (H, W, 3) of ``read_rgb`` (after EXIF orientation), readable only.
    pixels : {(x, y): (r, g, b)} spot checks on the RGB result.
    tol : max absolute per-channel error allowed for ``pixels`` (JPEG is lossy).
    format, mode : PIL format and *original* mode, as ``inspect_image`` reports.
    n_frames, has_alpha, exif_orientation : as ``inspect_image`` reports.
    read_kwargs : extra keyword arguments to pass to the reader (the "bomb"
        case needs ``max_pixels``).
    """

    reason: str | None = None
    shape: tuple[int, int, int] | None = None
    pixels: dict = field(default_factory=dict)
    tol: int = 0
    format: str | None = None
    mode: str | None = None
    n_frames: int | None = 1
    has_alpha: bool | None = False
    exif_orientation: int | None = None
    read_kwargs: dict = field(default_factory=dict)


def _halves(size, left, right, mode="RGB") -> Image.Image:
    """Image whose left half is ``left`` and right half ``right``."""
    w, h = size
    im = Image.new(mode, size, right)
    im.paste(left, (0, 0, w // 2, h))
    return im


def _noise_jpeg_bytes(size=(256, 192), seed=0, quality=90) -> bytes:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def _jpeg_header_end(data: bytes) -> int:
    """Offset just after the SOS segment header (start of entropy-coded data)."""
    sos = data.index(b"\xff\xda")
    length = int.from_bytes(data[sos + 2 : sos + 4], "big")
    return sos + 2 + length


def make_bad_image_corpus(dirpath) -> dict[str, tuple[Path, Expected]]:
    """Write the corpus into ``dirpath`` (created if needed).

    Returns
    -------
    dict
        ``name -> (path, Expected)``.  Readable cases: rgb_jpeg, l_jpeg,
        la_png, p_png_transparent, rgba_png, cmyk_jpeg, i16_png,
        exif_rot6_jpeg, animated_gif, webp, big_jpeg.  Unreadable cases:
        missing, empty, truncated_jpeg, corrupt_jpeg, text_as_jpg, directory,
        bomb.
    """
    d = Path(dirpath)
    d.mkdir(parents=True, exist_ok=True)
    c: dict[str, tuple[Path, Expected]] = {}

    # --- readable -------------------------------------------------------
    p = d / "rgb.jpg"
    _halves((64, 48), RED, BLUE).save(p, "JPEG", quality=95)
    c["rgb_jpeg"] = (p, Expected(
        shape=(48, 64, 3), pixels={(8, 24): RED, (56, 24): BLUE}, tol=12,
        format="JPEG", mode="RGB"))

    p = d / "grey.jpg"
    Image.new("L", (40, 30), 128).save(p, "JPEG", quality=95)
    c["l_jpeg"] = (p, Expected(
        shape=(30, 40, 3), pixels={(20, 15): (128, 128, 128)}, tol=3,
        format="JPEG", mode="L"))

    # LA: black everywhere; left half transparent -> white, right half opaque
    p = d / "grey_alpha.png"
    la = Image.new("LA", (32, 16), (0, 255))
    la.paste((0, 0), (0, 0, 16, 16))
    la.save(p, "PNG")
    c["la_png"] = (p, Expected(
        shape=(16, 32, 3), pixels={(4, 8): WHITE, (28, 8): BLACK},
        format="PNG", mode="LA", has_alpha=True))

    # P with a transparent palette index: index 0 red, 1 green, 2 transparent
    p = d / "palette_transparent.png"
    pal = Image.new("P", (30, 10), 0)
    pal.putpalette([*RED, *GREEN, *BLUE])
    pal.paste(1, (10, 0, 20, 10))
    pal.paste(2, (20, 0, 30, 10))
    pal.save(p, "PNG", transparency=2)
    c["p_png_transparent"] = (p, Expected(
        shape=(10, 30, 3), pixels={(5, 5): RED, (15, 5): GREEN, (25, 5): WHITE},
        format="PNG", mode="P", has_alpha=True))

    # RGBA: left half opaque red, right half fully transparent *blue* -> white
    p = d / "rgba.png"
    _halves((40, 20), (255, 0, 0, 255), (0, 0, 255, 0), mode="RGBA").save(p, "PNG")
    c["rgba_png"] = (p, Expected(
        shape=(20, 40, 3), pixels={(5, 10): RED, (35, 10): WHITE},
        format="PNG", mode="RGBA", has_alpha=True))

    p = d / "cmyk.jpg"
    Image.new("CMYK", (32, 32), (0, 255, 255, 0)).save(p, "JPEG", quality=95)
    c["cmyk_jpeg"] = (p, Expected(
        shape=(32, 32, 3), pixels={(16, 16): RED}, tol=12,
        format="JPEG", mode="CMYK"))

    # 16-bit greyscale: columns 0..9 = 65535, 10..19 = 32768, 20..29 = 0
    # policy: value >> 8  ->  255, 128, 0
    p = d / "grey16.png"
    a16 = np.zeros((10, 30), dtype=np.uint16)
    a16[:, :10] = 65535
    a16[:, 10:20] = 32768
    Image.fromarray(a16).save(p, "PNG")
    c["i16_png"] = (p, Expected(
        shape=(10, 30, 3),
        pixels={(5, 5): (255, 255, 255), (15, 5): (128, 128, 128), (25, 5): BLACK},
        format="PNG", mode="I;16"))

    # EXIF Orientation=6 ("rotate 90 deg clockwise to display"): stored 64x32
    # with a red left half; displayed 32x64 with red on top, blue at bottom.
    p = d / "exif_rot6.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6
    _halves((64, 32), RED, BLUE).save(p, "JPEG", quality=95, exif=exif.tobytes())
    c["exif_rot6_jpeg"] = (p, Expected(
        shape=(64, 32, 3), pixels={(16, 8): RED, (16, 56): BLUE}, tol=12,
        format="JPEG", mode="RGB", exif_orientation=6))

    p = d / "animated.gif"
    frames = [Image.new("RGB", (16, 16), col) for col in (RED, GREEN, BLUE)]
    frames[0].save(p, "GIF", save_all=True, append_images=frames[1:],
                   duration=100, loop=0)
    c["animated_gif"] = (p, Expected(
        shape=(16, 16, 3), pixels={(8, 8): RED}, format="GIF", mode="P",
        n_frames=3))

    p = d / "image.webp"
    _halves((20, 12), GREEN, BLUE).save(p, "WEBP", lossless=True)
    c["webp"] = (p, Expected(
        shape=(12, 20, 3), pixels={(3, 6): GREEN, (17, 6): BLUE},
        format="WEBP", mode="RGB"))

    # a larger JPEG for draft-decoding tests (big enough for 1/4 DCT scaling)
    p = d / "big.jpg"
    _halves((800, 600), RED, BLUE).save(p, "JPEG", quality=90)
    c["big_jpeg"] = (p, Expected(
        shape=(600, 800, 3), pixels={(100, 300): RED, (700, 300): BLUE}, tol=12,
        format="JPEG", mode="RGB"))

    # --- unreadable -----------------------------------------------------
    c["missing"] = (d / "does_not_exist.jpg", Expected(
        reason="missing", format=None, n_frames=None, has_alpha=None))

    p = d / "empty.jpg"
    p.write_bytes(b"")
    c["empty"] = (p, Expected(reason="empty", n_frames=None, has_alpha=None))

    jpeg = _noise_jpeg_bytes()
    p = d / "truncated.jpg"
    p.write_bytes(jpeg[: int(len(jpeg) * 0.6)])
    c["truncated_jpeg"] = (p, Expected(
        reason="truncated", format="JPEG", mode="RGB"))

    # valid JPEG header up to the start of scan, then garbage (random bytes
    # and a duplicate SOI marker, which libjpeg always rejects), then EOI
    rng = np.random.default_rng(0)
    garbage = rng.integers(0, 256, 2000, dtype=np.uint8).tobytes() + b"\xff\xd8" * 16
    p = d / "corrupt.jpg"
    p.write_bytes(jpeg[: _jpeg_header_end(jpeg)] + garbage + b"\xff\xd9")
    c["corrupt_jpeg"] = (p, Expected(
        reason="corrupt", format="JPEG", mode="RGB"))

    p = d / "not_really.jpg"
    p.write_text("<html><body>404 Not Found</body></html>\n", encoding="utf-8")
    c["text_as_jpg"] = (p, Expected(reason="not an image", n_frames=None, has_alpha=None))

    p = d / "a_directory.jpg"
    p.mkdir(exist_ok=True)
    c["directory"] = (p, Expected(reason="is a directory", n_frames=None, has_alpha=None))

    # a small, valid image that is "too large" for the limit we pass
    p = d / "bomb.png"
    Image.new("RGB", (100, 80), GREEN).save(p, "PNG")
    c["bomb"] = (p, Expected(
        reason="too large", format="PNG", mode="RGB",
        read_kwargs={"max_pixels": 100 * 80 - 1}))

    return c


#: Names of the cases that must be readable / unreadable.
READABLE_CASES = (
    "rgb_jpeg", "l_jpeg", "la_png", "p_png_transparent", "rgba_png", "cmyk_jpeg",
    "i16_png", "exif_rot6_jpeg", "animated_gif", "webp", "big_jpeg",
)
UNREADABLE_CASES = (
    "missing", "empty", "truncated_jpeg", "corrupt_jpeg", "text_as_jpg",
    "directory", "bomb",
)
