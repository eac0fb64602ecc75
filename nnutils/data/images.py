"""Robust image reading: the one place where files become RGB pixels.

Every reader in the project should go through :func:`open_image` /
:func:`read_rgb` so that all images are decoded the same way:

* any PIL mode is converted to 8-bit RGB by :func:`to_rgb` (alpha is
  composited on a white background, 16/32-bit and float greyscale are
  scaled to 0..255, see "Scaling policy" below);
* the EXIF ``Orientation`` tag is applied, so width/height and pixels are
  what a photo viewer shows;
* animated images (GIF, APNG, WebP, MPO, multi-page TIFF) give their first
  frame, layered Photoshop files (PSD) their merged composite, i.e. the image
  Pillow's ``Image.open`` is positioned at (nothing is sought);
* a header-size check (``max_pixels``) rejects decompression bombs before any
  pixel is decoded;
* every failure is reported as :class:`UnreadableImageError` with a short
  machine-readable ``reason`` taken from a fixed vocabulary.

PIL global state is never modified (``ImageFile.LOAD_TRUNCATED_IMAGES``,
``Image.MAX_IMAGE_PIXELS`` and the ``warnings`` filters are left alone), so
the functions are safe to call from several threads at once.

Reason vocabulary
-----------------
``"missing"``          the path does not exist.
``"empty"``            the file has zero bytes.
``"is a directory"``   the path is a directory.
``"not an image"``     PIL cannot identify the format (text file, HTML error
                       page saved as .jpg, header unreadable, FIFO/device ...).
``"truncated"``        the file ends before the pixel data does (for WebP:
                       the RIFF header declares more bytes than the file has).
``"corrupt"``          the header is valid but the decoder failed.
``"too large"``        width * height exceeds ``max_pixels`` (or PIL's own
                       decompression-bomb guard fired).
``"unsupported mode"`` decoded, but the PIL mode cannot be converted to RGB.
``"io error"``         the operating system refused to read the file
                       (permission denied, I/O error).

Scaling policy for high bit-depth greyscale
-------------------------------------------
* ``I;16`` / ``I;16L`` / ``I;16B`` / ``I;16N`` (16-bit): ``value >> 8``, i.e.
  the full 16-bit range 0..65535 maps linearly onto 0..255.  We deliberately
  do *not* stretch by the image's own maximum: the mapping must be the same
  for every pixel of every image so that crops and re-encodings of one
  picture keep identical grey levels (important for duplicate matching).
  The price is that 10/12-bit data stored in a 16-bit container looks dark.
* ``I`` (32-bit signed int): values already in 0..255 are kept; values in
  0..65535 are treated as 16-bit (``>> 8``, old Pillow versions opened
  16-bit PNG/TIFF as ``I``); anything else (negative or > 65535) is
  min-max stretched to 0..255.
* ``F`` (32-bit float): values in [0, 1] are multiplied by 255; values in
  [0, 255] are kept; anything else is min-max stretched.  NaN/inf become 0.
  All results are rounded to the nearest integer.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Iterable, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from nnutils.data.jpeg import read_jpeg_file

__all__ = [
    "read_any",
    "DEFAULT_MAX_PIXELS",
    "REASON_MISSING",
    "REASON_EMPTY",
    "REASON_IS_DIRECTORY",
    "REASON_NOT_AN_IMAGE",
    "REASON_TRUNCATED",
    "REASON_CORRUPT",
    "REASON_TOO_LARGE",
    "REASON_UNSUPPORTED_MODE",
    "REASON_IO_ERROR",
    "REASONS",
    "UnreadableImageError",
    "to_rgb",
    "open_image",
    "read_rgb",
    "try_read_rgb",
    "ImageInfo",
    "inspect_image",
    "inspect_images",
    "file_digest",
    "file_digest_or_none",
    "pixel_digest",
]

PathLike = Union[str, "os.PathLike[str]"]

#: Default decompression-bomb limit (width * height of the stored image).
DEFAULT_MAX_PIXELS = 64_000_000

REASON_MISSING = "missing"
REASON_EMPTY = "empty"
REASON_IS_DIRECTORY = "is a directory"
REASON_NOT_AN_IMAGE = "not an image"
REASON_TRUNCATED = "truncated"
REASON_CORRUPT = "corrupt"
REASON_TOO_LARGE = "too large"
REASON_UNSUPPORTED_MODE = "unsupported mode"
REASON_IO_ERROR = "io error"

#: Every value ``UnreadableImageError.reason`` can take.
REASONS = (
    REASON_MISSING,
    REASON_EMPTY,
    REASON_IS_DIRECTORY,
    REASON_NOT_AN_IMAGE,
    REASON_TRUNCATED,
    REASON_CORRUPT,
    REASON_TOO_LARGE,
    REASON_UNSUPPORTED_MODE,
    REASON_IO_ERROR,
)

_EXIF_ORIENTATION_TAG = 0x0112
_ALPHA_MODES = {"LA", "PA", "RGBA"}
_PREMULTIPLIED_MODES = {"La", "RGBa"}
_UINT16_MODES = {"I;16", "I;16L", "I;16B", "I;16N"}


class UnreadableImageError(Exception):
    """An image file could not be turned into RGB pixels.

    Attributes
    ----------
    path : str
        The path that was being read.
    reason : str
        One of :data:`REASONS` (e.g. ``"truncated"``).
    detail : str or None
        The underlying error message, for humans; not part of the contract.
    """

    def __init__(self, path: PathLike, reason: str, detail: str | None = None):
        self.path = str(path)
        self.reason = reason
        self.detail = detail
        msg = f"{self.path}: {reason}"
        if detail:
            msg += f" ({detail})"
        super().__init__(msg)

    def __reduce__(self):  # keep picklable across process pools
        return (type(self), (self.path, self.reason, self.detail))


# --------------------------------------------------------------------------- #
# Mode conversion
# --------------------------------------------------------------------------- #
def _check_background(background) -> tuple[int, int, int]:
    bg = tuple(int(c) for c in background)
    if len(bg) != 3 or not all(0 <= c <= 255 for c in bg):
        raise ValueError(f"background must be 3 ints in 0..255, got {background!r}")
    return bg  # type: ignore[return-value]


def _scale_int32(a: np.ndarray) -> np.ndarray:
    a = a.astype(np.int64)
    lo, hi = (int(a.min()), int(a.max())) if a.size else (0, 0)
    if lo >= 0 and hi <= 255:
        return a.astype(np.uint8)
    if lo >= 0 and hi <= 65535:
        return (a >> 8).astype(np.uint8)
    return _stretch(a.astype(np.float64), lo, hi)


def _scale_float(a: np.ndarray) -> np.ndarray:
    a = a.astype(np.float64)
    finite = np.isfinite(a)
    a = np.where(finite, a, 0.0)
    lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
    if lo >= 0.0 and hi <= 1.0:
        out = a * 255.0
    elif lo >= 0.0 and hi <= 255.0:
        out = a
    else:
        return _stretch(a, lo, hi)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _stretch(a: np.ndarray, lo: float, hi: float) -> np.ndarray:
    if hi <= lo:
        return np.zeros(a.shape, dtype=np.uint8)
    out = (a - lo) * (255.0 / (hi - lo))
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _grey_to_rgb(grey: np.ndarray) -> Image.Image:
    return Image.fromarray(np.repeat(grey[:, :, None], 3, axis=2))


def to_rgb(img: Image.Image, background=(255, 255, 255)) -> Image.Image:
    """Convert a PIL image of any common mode to 8-bit ``"RGB"``.

    Parameters
    ----------
    img : PIL.Image.Image
        Image in mode 1, L, LA, La, P (with or without transparency), PA,
        RGB, RGBA, RGBa, RGBX, CMYK, YCbCr, LAB, HSV, I, I;16, I;16L, I;16B,
        I;16N or F.
    background : tuple of 3 int, default (255, 255, 255)
        Colour that transparent pixels are composited onto (white).

    Returns
    -------
    PIL.Image.Image
        Mode ``"RGB"``, same size.  An image that is already RGB without
        transparency is returned unchanged (same object).

    Raises
    ------
    ValueError
        If the mode cannot be converted (message starts with
        ``"unsupported mode"``) or ``background`` is invalid.

    Notes
    -----
    Alpha is composited, never dropped: a fully transparent pixel becomes
    exactly ``background``, an opaque one keeps its colour exactly.  High
    bit-depth greyscale follows the module's scaling policy (``I;16`` is
    ``value >> 8``).  CMYK/YCbCr/LAB use PIL's (non colour-managed)
    conversions; embedded ICC profiles are ignored.
    """
    bg = _check_background(background)
    mode = img.mode

    if mode in _UINT16_MODES:
        a = np.asarray(img).astype(np.uint16)
        return _grey_to_rgb((a >> 8).astype(np.uint8))
    if mode == "I":
        return _grey_to_rgb(_scale_int32(np.asarray(img)))
    if mode == "F":
        return _grey_to_rgb(_scale_float(np.asarray(img)))

    if mode in _PREMULTIPLIED_MODES:
        # colour is already multiplied by alpha: out = c' + bg * (1 - a)
        a = np.asarray(img).astype(np.float64)
        alpha = a[..., -1:]
        col = a[..., :-1]
        if col.shape[-1] == 1:
            col = np.repeat(col, 3, axis=-1)
        out = col + np.asarray(bg, dtype=np.float64) * (255.0 - alpha) / 255.0
        return Image.fromarray(np.clip(np.rint(out), 0, 255).astype(np.uint8))

    has_alpha = mode in _ALPHA_MODES or img.has_transparency_data
    if (
        not has_alpha
        and mode == "P"
        and img.palette is not None
        and img.palette.mode == "RGBA"
    ):
        has_alpha = True

    if has_alpha:
        try:
            rgba = img if mode == "RGBA" else img.convert("RGBA")
        except ValueError as exc:
            raise ValueError(f"unsupported mode {mode!r}: {exc}") from exc
        out = Image.new("RGB", rgba.size, bg)
        out.paste(rgba.convert("RGB"), (0, 0), mask=rgba.getchannel("A"))
        return out

    if mode == "RGB":
        return img
    try:
        return img.convert("RGB")
    except (ValueError, OSError) as exc:
        raise ValueError(f"unsupported mode {mode!r}: {exc}") from exc


# --------------------------------------------------------------------------- #
# Opening
# --------------------------------------------------------------------------- #
def _classify_decode_error(exc: BaseException) -> str:
    if isinstance(exc, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return REASON_TOO_LARGE
    if isinstance(exc, MemoryError):
        return REASON_TOO_LARGE
    if isinstance(exc, EOFError):
        return REASON_TRUNCATED
    msg = str(exc).lower()
    if "truncat" in msg or "not enough image data" in msg or "premature end" in msg:
        return REASON_TRUNCATED
    return REASON_CORRUPT


def _declares_more_than_it_has(path: Path, file_bytes: int) -> bool:
    """True when ``path`` is a RIFF container (WebP) whose header declares more bytes than the file has.

    Parameters
    ----------
    path : pathlib.Path
        The file, already known to be a regular, non-empty file.
    file_bytes : int
        Its size in bytes (from ``os.stat``).

    Returns
    -------
    bool
        True only for a file that starts ``RIFF<size>WEBP`` with ``size + 8 > file_bytes``:
        the file was cut short.  Pillow's WebP plugin reports such a file only as "could not
        create decoder object", which would otherwise be classified ``"corrupt"``.  Any read
        error gives False.
    """
    try:
        with open(path, "rb") as fh:
            head = fh.read(12)
    except OSError:
        return False
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WEBP":
        return False
    return int.from_bytes(head[4:8], "little") + 8 > file_bytes


def _decode_reason(exc: BaseException, path: Path, file_bytes: int) -> str:
    """:func:`_classify_decode_error`, except that a cut-short WebP is ``"truncated"``."""
    reason = _classify_decode_error(exc)
    if reason == REASON_CORRUPT and _declares_more_than_it_has(path, file_bytes):
        return REASON_TRUNCATED
    return reason


def _stat_file(path: Path, info: dict | None = None) -> os.stat_result:
    """Stat ``path`` or raise the matching UnreadableImageError."""
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError) as exc:
        raise UnreadableImageError(path, REASON_MISSING, exc.strerror) from None
    except OSError as exc:
        raise UnreadableImageError(path, REASON_IO_ERROR, str(exc)) from None
    except ValueError as exc:  # e.g. embedded NUL byte in the path
        raise UnreadableImageError(path, REASON_MISSING, str(exc)) from None
    if stat.S_ISDIR(st.st_mode):
        raise UnreadableImageError(path, REASON_IS_DIRECTORY)
    if info is not None:
        info["file_bytes"] = st.st_size
    if not stat.S_ISREG(st.st_mode):
        # FIFOs, sockets, devices: reading could block forever
        raise UnreadableImageError(path, REASON_NOT_AN_IMAGE, "not a regular file")
    if st.st_size == 0:
        raise UnreadableImageError(path, REASON_EMPTY)
    return st


def _exif_orientation(im: Image.Image) -> int | None:
    try:
        value = im.getexif().get(_EXIF_ORIENTATION_TAG)
    except Exception:  # malformed EXIF must not make the image unreadable
        return None
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _oriented_size(size: tuple[int, int], orientation: int | None) -> tuple[int, int]:
    w, h = size
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


def _open(
    path: PathLike,
    max_pixels: int | None,
    draft_size: tuple[int, int] | None,
    info: dict | None = None,
) -> Image.Image:
    """Shared implementation of open_image / inspect_image.

    Fills ``info`` (when given) with whatever metadata could be read before
    a failure, then raises UnreadableImageError or returns the RGB image.
    """
    try:
        p = Path(os.fspath(path))
    except TypeError:  # None, NaN from a DataFrame column, ...
        raise UnreadableImageError(str(path), REASON_MISSING, "not a path") from None
    file_bytes = _stat_file(p, info).st_size

    try:
        fh = open(p, "rb")
    except OSError as exc:
        raise UnreadableImageError(p, REASON_IO_ERROR, str(exc)) from None

    with fh:
        try:
            im = Image.open(fh)
        except UnidentifiedImageError as exc:
            raise UnreadableImageError(p, REASON_NOT_AN_IMAGE, str(exc)) from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise UnreadableImageError(p, REASON_TOO_LARGE, str(exc)) from None
        except OSError as exc:
            if exc.errno is not None:
                raise UnreadableImageError(p, REASON_IO_ERROR, str(exc)) from None
            raise UnreadableImageError(p, _decode_reason(exc, p, file_bytes), str(exc)) from None
        except Exception as exc:
            raise UnreadableImageError(p, _decode_reason(exc, p, file_bytes), str(exc)) from None

        with im:
            # Only JPEG/MPO are safe to ask for EXIF before decoding: PNG's
            # getexif() decodes the whole image and would swallow its errors.
            is_jpeg = im.format in ("JPEG", "MPO")
            orientation = _exif_orientation(im) if is_jpeg else None
            if info is not None:
                info["format"] = im.format
                info["mode"] = im.mode
                info["width"], info["height"] = _oriented_size(im.size, orientation)
                info["exif_orientation"] = orientation
                try:
                    info["has_alpha"] = bool(
                        im.mode in _ALPHA_MODES
                        or im.mode in _PREMULTIPLIED_MODES
                        or im.has_transparency_data
                        or (im.mode == "P" and im.palette is not None
                            and im.palette.mode == "RGBA")
                    )
                except Exception:
                    info["has_alpha"] = None

            try:
                w, h = im.size
                if w <= 0 or h <= 0:
                    raise UnreadableImageError(p, REASON_CORRUPT, f"invalid size {im.size}")
                if max_pixels is not None and w * h > max_pixels:
                    raise UnreadableImageError(
                        p, REASON_TOO_LARGE, f"{w}x{h} = {w * h} pixels > max_pixels={max_pixels}"
                    )

                if draft_size is not None and is_jpeg:
                    # draft_size is in displayed (EXIF-rotated) coordinates
                    dw, dh = _oriented_size(tuple(draft_size), orientation)
                    try:
                        im.draft("RGB", (max(1, int(dw)), max(1, int(dh))))
                    except Exception:
                        pass  # draft is only an optimisation

                try:
                    # No seek: Pillow opens every format at its first frame (animations),
                    # PSD at the merged composite (its layers are frames 1..n, so seek(0)
                    # raised), and a single SPIDER image refuses any seek at all.
                    im.load()
                except Exception as exc:
                    raise UnreadableImageError(p, _decode_reason(exc, p, file_bytes), str(exc)) from None

                if not is_jpeg:
                    orientation = _exif_orientation(im)  # safe once loaded
                if info is not None:
                    info["exif_orientation"] = orientation
                    info["width"], info["height"] = _oriented_size(
                        (w, h), orientation
                    )
                oriented = im
                if orientation in (2, 3, 4, 5, 6, 7, 8):
                    try:
                        oriented = ImageOps.exif_transpose(im)
                    except Exception:  # bad EXIF: keep stored orientation
                        oriented = im

                try:
                    rgb = to_rgb(oriented)
                except ValueError as exc:
                    raise UnreadableImageError(p, REASON_UNSUPPORTED_MODE, str(exc)) from None
                except Exception as exc:
                    raise UnreadableImageError(p, _classify_decode_error(exc), str(exc)) from None
                if rgb is im:  # never hand out the file-backed object
                    rgb = rgb.copy()
            finally:
                if info is not None:
                    try:
                        info["n_frames"] = int(getattr(im, "n_frames", 1))
                    except Exception:
                        info["n_frames"] = None
    return rgb


def open_image(
    path: PathLike,
    *,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    draft_size: tuple[int, int] | None = None,
) -> Image.Image:
    """Open an image file as a fully loaded RGB PIL image.

    Parameters
    ----------
    path : str or os.PathLike
        Image file.
    max_pixels : int or None, default DEFAULT_MAX_PIXELS (64 000 000)
        Reject images whose stored width * height exceeds this, checked on the
        header before any pixel is decoded.  ``None`` disables our check.
        This limit does not depend on ``PIL.Image.MAX_IMAGE_PIXELS``; note
        that if you set it *above* PIL's limit, PIL may still warn (and above
        twice PIL's limit refuse, which is reported as ``"too large"``).
    draft_size : (width, height) or None
        JPEG only: let libjpeg decode at a reduced DCT scale (1/2, 1/4, 1/8)
        that is still at least this size (in displayed, EXIF-rotated
        coordinates).  Much faster for thumbnails; pixels differ slightly
        from a full decode.  Ignored for other formats.

    Returns
    -------
    PIL.Image.Image
        Mode ``"RGB"``, EXIF orientation applied, first frame of animations
        (merged composite of a layered PSD), not tied to the open file.

    Raises
    ------
    UnreadableImageError
        For every failure (never any other exception type); see
        :data:`REASONS`.
    """
    return _open(path, max_pixels, draft_size)


def _check_size(size) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in size)
    except (TypeError, ValueError):
        raise ValueError(f"size must be (width, height), got {size!r}") from None
    if w <= 0 or h <= 0:
        raise ValueError(f"size must be positive, got {size!r}")
    return w, h


def read_rgb(path: PathLike, *, size: tuple[int, int] | None = None, **kw) -> np.ndarray:
    """Read an image file into a ``uint8`` array of shape ``(H, W, 3)``.

    Parameters
    ----------
    path : str or os.PathLike
        Image file.
    size : (width, height) or None
        If given, resize to exactly this size (aspect ratio is not kept) with
        a Lanczos filter; the result has shape ``(height, width, 3)``.  For
        JPEGs a DCT draft decode (see :func:`open_image`) is used first
        unless ``draft_size`` is passed explicitly.
    **kw
        ``max_pixels`` and ``draft_size``, forwarded to :func:`open_image`.

    Returns
    -------
    numpy.ndarray
        ``uint8``, shape ``(H, W, 3)``, C-contiguous, writable, RGB order.

    Raises
    ------
    UnreadableImageError
        For every unreadable file.
    ValueError
        If ``size`` is malformed.
    """
    if size is not None:
        size = _check_size(size)
        kw.setdefault("draft_size", size)
    img = open_image(path, **kw)
    if size is not None and img.size != size:
        img = img.resize(size, Image.Resampling.LANCZOS)
    return np.array(img, dtype=np.uint8)


def try_read_rgb(path: PathLike, **kw) -> tuple[np.ndarray | None, str | None]:
    """Like :func:`read_rgb` but returns ``(array, None)`` or ``(None, reason)``.

    Parameters
    ----------
    path : str or PathLike
        The image file.
    **kw
        Passed to :func:`read_rgb`.

    Returns
    -------
    array : ndarray of uint8, shape (H, W, 3), or None
        The RGB pixels, None when the file is unreadable.
    reason : str or None
        None on success, else one of :data:`REASONS`.

    Raises
    ------
    ValueError
        Argument errors (bad ``size``) still raise.
    """
    try:
        return read_rgb(path, **kw), None
    except UnreadableImageError as exc:
        return None, exc.reason


# --------------------------------------------------------------------------- #
# Inspection
# --------------------------------------------------------------------------- #
@dataclass
class ImageInfo:
    """What :func:`inspect_image` learned about one file.

    Attributes
    ----------
    path : str
    readable : bool
        True when :func:`open_image` (default arguments) succeeds.
    reason : str or None
        One of :data:`REASONS` when not readable.
    format : str or None
        PIL format name (``"JPEG"``, ``"PNG"``, ...), if the header was read.
    mode : str or None
        Original PIL mode, before conversion to RGB (``"P"``, ``"I;16"`` ...).
    width, height : int or None
        Displayed size in pixels, i.e. after EXIF orientation.
    n_frames : int or None
        Number of frames (1 for still images).
    file_bytes : int or None
        File size in bytes.
    exif_orientation : int or None
        Raw EXIF Orientation tag (1..8), None when absent.
    has_alpha : bool or None
        Alpha channel or transparency information present.
    """

    path: str
    readable: bool = False
    reason: str | None = None
    format: str | None = None
    mode: str | None = None
    width: int | None = None
    height: int | None = None
    n_frames: int | None = None
    file_bytes: int | None = None
    exif_orientation: int | None = None
    has_alpha: bool | None = None


def inspect_image(path: PathLike, *, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> ImageInfo:
    """Describe an image file; never raises.

    The file is fully decoded (so truncation and decoder errors are found),
    but metadata read before a failure is still reported.

    Parameters
    ----------
    path : str or PathLike
        The image file.
    max_pixels : int or None, default DEFAULT_MAX_PIXELS (64 000 000)
        Width × height above which the file is ``"too large"`` (checked from the header);
        None disables the check.

    Returns
    -------
    ImageInfo
        ``readable`` and ``reason`` as :func:`open_image` would decide, plus whatever the
        header gave (format, mode, displayed size in pixels, frames, bytes, orientation, alpha).
    """
    try:
        spath = str(os.fspath(path))
    except TypeError:
        spath = str(path)
    info: dict = {}
    try:
        _open(path, max_pixels, None, info)
        readable, reason = True, None
    except UnreadableImageError as exc:
        readable, reason = False, exc.reason
    except Exception:  # safety net: inspect_image must never raise
        readable, reason = False, REASON_CORRUPT
    known = {f.name for f in fields(ImageInfo)}
    return ImageInfo(
        path=spath,
        readable=readable,
        reason=reason,
        **{k: v for k, v in info.items() if k in known},
    )


def inspect_images(paths: Iterable[PathLike], progress: bool = True, **kw):
    """Run :func:`inspect_image` on many files.

    Parameters
    ----------
    paths : iterable of path
    progress : bool, default True
        Show a tqdm progress bar.
    **kw
        Forwarded to :func:`inspect_image` (``max_pixels``).

    Returns
    -------
    pandas.DataFrame
        One row per path, in input order, columns = the :class:`ImageInfo`
        fields.
    """
    import pandas as pd
    from tqdm.auto import tqdm

    paths = list(paths)
    rows = [
        asdict(inspect_image(p, **kw))
        for p in tqdm(paths, desc="inspect images", unit="img", disable=not progress)
    ]
    return pd.DataFrame(rows, columns=[f.name for f in fields(ImageInfo)])


# --------------------------------------------------------------------------- #
# Digests
# --------------------------------------------------------------------------- #
def file_digest(path: PathLike) -> str:
    """SHA-1 hex digest of the file's bytes (byte-identical duplicates).

    Parameters
    ----------
    path : str or PathLike
        The file; read in 1 MiB chunks.

    Returns
    -------
    str
        40 lowercase hex digits. Empty files are hashed normally.

    Raises
    ------
    UnreadableImageError
        ``"missing"``, ``"is a directory"`` or ``"io error"``.
    """
    p = Path(os.fspath(path))
    h = hashlib.sha1()
    try:
        with open(p, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    except (FileNotFoundError, NotADirectoryError) as exc:
        raise UnreadableImageError(p, REASON_MISSING, exc.strerror) from None
    except IsADirectoryError:
        raise UnreadableImageError(p, REASON_IS_DIRECTORY) from None
    except OSError as exc:
        raise UnreadableImageError(p, REASON_IO_ERROR, str(exc)) from None
    return h.hexdigest()


def file_digest_or_none(path) -> str | None:
    """:func:`file_digest`, or None where there is no readable file (None, not a path, missing, unreadable).

    Parameters
    ----------
    path : str, PathLike or anything else

    Returns
    -------
    str or None
    """
    if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
        return None
    try:
        return file_digest(path)
    except UnreadableImageError:
        return None


def pixel_digest(path_or_array, **kw) -> str:
    """SHA-1 hex digest of the RGB ``uint8`` pixels plus the array shape.

    Two files get the same digest iff :func:`read_rgb` returns identical
    arrays: a PNG re-saved losslessly, or a JPEG whose EXIF rotation was
    baked in losslessly, keep their pixel digest while their file digest
    changes.

    Parameters
    ----------
    path_or_array : path, PIL.Image.Image or numpy.ndarray
        A path is read with :func:`read_rgb` (``**kw`` forwarded).  An array
        must be ``uint8`` with shape ``(H, W, 3)``; a PIL image is converted
        with :func:`to_rgb`.

    Raises
    ------
    UnreadableImageError
        If a path cannot be read.
    ValueError
        If an array is not ``uint8`` ``(H, W, 3)``.
    """
    if isinstance(path_or_array, np.ndarray):
        arr = path_or_array
    elif isinstance(path_or_array, Image.Image):
        arr = np.asarray(to_rgb(path_or_array))
    else:
        arr = read_rgb(path_or_array, **kw)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"expected uint8 (H, W, 3), got {arr.dtype} {arr.shape}")
    h = hashlib.sha1()
    h.update(("%dx%dx%d;" % arr.shape).encode("ascii"))
    h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


def read_any(image, max_side: int | None = None) -> tuple[np.ndarray | None, tuple[int, int], str]:
    """Read an image for the local-feature extractors; never raises for a bad file.

    The one reader of the local-feature extractors (``local_features``, ``delf``).

    Parameters
    ----------
    image : str or PathLike or PIL.Image.Image or ndarray
        A path (read as :func:`read_rgb` does: EXIF orientation, any mode; a big JPEG is
        decoded at a reduced DCT scale still ≥ ``max_side``), a PIL image, an RGB ``(H, W, 3)``
        (or RGBA, alpha dropped) or grey ``(H, W)`` array (uint8, or float in [0, 255],
        clipped and rounded).
    max_side : int, optional
        Lets a JPEG be decoded at the smallest DCT scale whose sides are still ≥ this many
        pixels; None decodes at full size.

    Returns
    -------
    rgb : ndarray of uint8, shape (H, W, 3), or None
        The pixels; None for an unreadable file.
    size : tuple of int
        ``(width, height)`` of the original in pixels: the displayed size before any reduced
        decode (``(0, 0)`` when not even the header was read).
    reason : str
        ``""`` on success, else ``"unreadable (<reason>)"`` with one of :data:`REASONS`.

    Raises
    ------
    ValueError
        When an array is not ``(H, W)``, ``(H, W, 3)`` or ``(H, W, 4)``.
    """
    if isinstance(image, Image.Image):
        image = np.asarray(to_rgb(image))
    if isinstance(image, np.ndarray):
        a = image
        if a.ndim == 2:
            a = np.repeat(a[..., None], 3, axis=2)
        if a.ndim == 3 and a.shape[2] == 4:
            a = a[..., :3]
        if a.ndim != 3 or a.shape[2] != 3:
            raise ValueError(f"expected an (H, W, 3) RGB or (H, W) grey array, got shape {image.shape}")
        if a.dtype != np.uint8:
            a = np.clip(np.nan_to_num(np.asarray(a, np.float64)), 0, 255).round().astype(np.uint8)
        return np.ascontiguousarray(a), (int(a.shape[1]), int(a.shape[0])), ""
    if isinstance(image, (str, os.PathLike)):   # a JPEG: libjpeg-turbo directly, PIL's pixels, ~2x faster
        fast = read_jpeg_file(image, int(max_side) if max_side else 1 << 30, DEFAULT_MAX_PIXELS)
        if fast is not None:
            return fast[0], fast[1], ""
    info: dict = {}
    draft = (int(max_side), int(max_side)) if max_side else None
    try:
        img = _open(image, DEFAULT_MAX_PIXELS, draft, info)
    except UnreadableImageError as exc:
        return None, (int(info.get("width") or 0), int(info.get("height") or 0)), f"unreadable ({exc.reason})"
    size = (int(info.get("width") or img.width), int(info.get("height") or img.height))
    return np.asarray(img), size, ""
