"""JPEG files decoded by libjpeg-turbo (``simplejpeg``) at a reduced DCT scale, as displayed.

The fast path of both readers: :func:`nnutils.data.decode.decode_square` (the global model's
square, any k/8 scale) and :func:`nnutils.data.images.read_any` (the local extractors' and
the one pass's decode, PIL ``draft``'s 1, 1/2, 1/4, 1/8 scales, so its pixels are the ones
PIL gives: identical on every image of the embedded and shifted sets). Only the marker
segments before the scan are parsed here (the EXIF orientation); anything this module is
unsure of returns None, and the caller decodes with PIL, which judges and reports
unreadable files. Imports nothing from the project.
"""
from __future__ import annotations

import os
import stat

import numpy as np

try:  # optional: the fast JPEG path
    import simplejpeg as _simplejpeg
except ImportError:  # pragma: no cover - simplejpeg is in the project's environment
    _simplejpeg = None


_XMP_HEADER = b"http://ns.adobe.com/xap/1.0/\x00"


_FALLBACK = -1  # jpeg_orientation: "let PIL decide"


def jpeg_orientation(data: bytes) -> int | None:
    """EXIF ``Orientation`` (1–8) of JPEG bytes, ``None`` if absent, or ``-1`` if unsure.

    Reads only the marker segments before the scan: the first ``Exif`` APP1 segment's
    IFD0 (as PIL does). ``-1`` means "this parser cannot tell as reliably as PIL" (an
    XMP packet that mentions ``tiff:Orientation``, which PIL also honours); callers then
    decode with PIL. A malformed EXIF block gives ``None`` like
    :func:`nnutils.data.images.open_image` (orientation ignored).

    Parameters
    ----------
    data : bytes
        The whole file, or at least its header segments (starting with the SOI marker).

    Returns
    -------
    int or None
        The orientation tag 1–8; None when there is no (readable) EXIF orientation; -1 when
        the caller should let PIL decide (an XMP orientation, or bytes that are not a
        well-formed marker sequence).
    """
    n = len(data)
    pos = 2
    orientation: int | None = None
    seen_exif = False
    while pos + 4 <= n:
        if data[pos] != 0xFF:
            return _FALLBACK  # not a marker where one must be: let PIL judge the file
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # standalone markers
            pos += 2
            continue
        if marker in (0xDA, 0xD9):  # start of scan / end of image: headers are over
            break
        length = int.from_bytes(data[pos + 2:pos + 4], "big")
        seg = data[pos + 4:pos + 2 + length]
        if marker == 0xE1:
            if seg[:6] == b"Exif\x00\x00" and not seen_exif:
                seen_exif = True
                orientation = _exif_ifd0_orientation(seg[6:])
            elif seg.startswith(_XMP_HEADER) and b"Orientation" in seg:
                return _FALLBACK
        pos += 2 + length
    return orientation


def _exif_ifd0_orientation(tiff: bytes) -> int | None:
    try:
        if tiff[:2] == b"II":
            order = "little"
        elif tiff[:2] == b"MM":
            order = "big"
        else:
            return None
        ifd = int.from_bytes(tiff[4:8], order)
        count = int.from_bytes(tiff[ifd:ifd + 2], order)
        for k in range(count):
            e = ifd + 2 + 12 * k
            if e + 12 > len(tiff):
                return None
            if int.from_bytes(tiff[e:e + 2], order) == 0x0112:
                typ = int.from_bytes(tiff[e + 2:e + 4], order)
                if typ == 3:  # SHORT
                    return int.from_bytes(tiff[e + 8:e + 10], order)
                if typ == 4:  # LONG
                    return int.from_bytes(tiff[e + 8:e + 12], order)
                return None
    except Exception:
        return None
    return None


def _apply_orientation(a: np.ndarray, orientation: int | None) -> np.ndarray:
    """(H, W, C) array as displayed, like ``PIL.ImageOps.exif_transpose``."""
    if orientation == 2:
        return a[:, ::-1]
    if orientation == 3:
        return a[::-1, ::-1]
    if orientation == 4:
        return a[::-1]
    if orientation == 5:
        return a.transpose(1, 0, 2)
    if orientation == 6:
        return np.rot90(a, -1)
    if orientation == 7:
        return a[::-1, ::-1].transpose(1, 0, 2)
    if orientation == 8:
        return np.rot90(a, 1)
    return a


def _pow2_scaled_size(w: int, h: int, size: int) -> tuple[int, int]:
    """The size PIL's ``draft`` decodes a w×h JPEG at for a (size, size) target."""
    scale = min(w // size, h // size)
    s = next(s for s in (8, 4, 2, 1) if scale >= s) if scale >= 1 else 1
    return -(-w // s), -(-h // s)


def decode_jpeg_bytes(data: bytes, size: int, max_pixels: int | None, pil_scale: bool,
                      colorspace: str = "RGBX") -> np.ndarray | None:
    """A JPEG's pixels as displayed, at a reduced DCT scale still ≥ ``size``; None to fall back to PIL.

    Parameters
    ----------
    data : bytes
        The whole file.
    size : int
        Both sides of the decode stay ≥ ``size`` pixels (or the original's, when smaller).
    max_pixels : int or None
        Decompression-bomb limit on the stored width × height (None: the caller's PIL decides).
    pil_scale : bool
        Only the scales 1, 1/2, 1/4, 1/8, chosen as PIL's ``draft`` chooses them (then the
        pixels are PIL's); False: any k/8 scale (fewer pixels when the image is 1–2× ``size``).
    colorspace : {"RGBX", "RGB"}
        RGBX (4 bytes a pixel) is PIL's internal layout for RGB: ``Image.frombuffer`` wraps
        it without a copy.

    Returns
    -------
    ndarray of uint8, shape (h, w, 4 or 3), or None
        Oriented (a view when the orientation flips or turns it); None for CMYK/YCCK, an
        XMP orientation, a size over ``max_pixels`` or anything libjpeg-turbo rejects in
        strict mode (truncated, corrupt).
    """
    h, w, stored, _ = _simplejpeg.decode_jpeg_header(data)
    if stored not in ("YCbCr", "Gray", "RGB"):  # CMYK / YCCK: PIL's conversion
        return None
    if w <= 0 or h <= 0 or (max_pixels is not None and w * h > max_pixels):
        return None
    orientation = jpeg_orientation(data)
    if orientation == _FALLBACK:
        return None
    if pil_scale:
        mw, mh = _pow2_scaled_size(w, h, size)
    else:
        mw = mh = size
    try:
        a = _simplejpeg.decode_jpeg(data, colorspace=colorspace, min_height=min(mh, h), min_width=min(mw, w),
                                    strict=True)
    except Exception:   # truncated, corrupt, ...: PIL decides and reports
        return None
    return _apply_orientation(a, orientation)


def read_jpeg_file(path, size: int, max_pixels: int | None, *, pil_scale: bool = True,
                   colorspace: str = "RGB") -> tuple[np.ndarray, tuple[int, int]] | None:
    """A JPEG file decoded by :func:`decode_jpeg_bytes`, with its displayed size; None: not handled here.

    Parameters
    ----------
    path : str or os.PathLike
    size, max_pixels, pil_scale, colorspace
        As in :func:`decode_jpeg_bytes`.

    Returns
    -------
    (pixels, (width, height)) or None
        ``pixels`` C-contiguous uint8 (h, w, C), as displayed; ``(width, height)`` the
        original's displayed size in pixels (before the reduced decode). None for anything
        but a regular, readable JPEG file this path decodes (the caller's PIL path then
        decodes it or reports why it cannot).
    """
    if _simplejpeg is None:
        return None
    try:
        p = os.fspath(path)
        st = os.stat(p)
        if not stat.S_ISREG(st.st_mode) or st.st_size <= 3:
            return None
        with open(p, "rb") as f:
            head = f.read(3)
            if head != b"\xff\xd8\xff":   # not a JPEG: PIL reads it (and only PIL reads all of it)
                return None
            data = head + f.read()
        h, w, _, _ = _simplejpeg.decode_jpeg_header(data)
        a = decode_jpeg_bytes(data, size, max_pixels, pil_scale, colorspace)
    except Exception:
        return None
    if a is None:
        return None
    if jpeg_orientation(data) in (5, 6, 7, 8):
        w, h = h, w
    return np.ascontiguousarray(a), (int(w), int(h))
