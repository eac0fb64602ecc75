"""Dense alignment of a pair that passed the geometric check: is the affine map right everywhere?

A re-post is its photograph mapped by an affine transform, up to resampling: once image 2
is warped back onto image 1 by the check's map, every textured patch of the overlap lines
up to a fraction of a pixel. Another view of the scene (a camera that moved, a stereo
pair) is explained by an affine map only near its matched keypoints; elsewhere the
patches are displaced by pixels, smoothly (perspective, parallax). The keypoint rules
(:func:`nnutils.local.verify.verify`'s perspective rule) see this only where keypoints
matched, and with 15–60 inliers their F-test has little power. The dense check measures
the displacement everywhere:

1. Both images are kept as small greyscale thumbnails (:func:`thumbnail`, longer side
   :data:`SIDE` = 256 px, made from the extractor's own working image and cached with the
   keypoints).
2. The image whose thumbnail shows the overlap at the lower resolution is the reference;
   the other is shrunk to about its scale and warped onto it by the check's map.
3. The overlap is cut into :data:`CELL` × :data:`CELL` cells (a grid, ~48 in a 256 × 192
   frame); for each
   textured cell (standard deviation ≥ 4 grey levels in both images) phase correlation
   (:func:`cv2.phaseCorrelate`, Hann window) gives its residual shift; cells with a
   correlation peak below :data:`MIN_RESPONSE` (an overlay, a text box, a flat wall) are
   left out.
4. An affine map is fitted to the cells' shifts by least squares (a slightly wrong keypoint
   map is not held against a copy), refitted without the :data:`TRIM` share of the cells
   farthest from it (a cell locked onto an overlay in one image only, shifted by ~10 px,
   would otherwise pull the map by a pixel everywhere), and the residual is the 90th
   percentile of all the cells' distances to it, in reference-thumbnail pixels
   (:func:`dense_residual`).

Re-posts stay well below a pixel: on the embedded train split, of the 950 positives with
dense evidence that reach the rule, the median is 0.22 px, the 99th percentile 0.58 px and
1 lies above 2 px (``python bench/perspective_rule.py`` prints the table; with one plain
least-squares fit, ``--dense-trim 0``, as before the ninth session: 0.20, 1.41 and 3, the
three heavy overlays — text and double distortions — whose one overlay cell pulled the fit). :func:`nnutils.local.verify.verify` rejects a
pair above ``max_dense_residual`` (:data:`nnutils.local.verify.DENSE_RESIDUAL` = 2 px,
chosen there with a margin over that 99th percentile; the embedded views seldom reach the
rule, and the shifted benchmark is never read for it). Another view of a scene that
passed the keypoint rules is displaced by 2–6 px where it is not nearly affine; views
within ~1 px of an affine map stay out of reach. Cost: ~1.7 ms per checked pair on
this 2-core machine (two warps and one batched FFT, scipy's: numpy's made it 2.2–2.3 ms), paid
only by pairs that passed every other rule or whose low spread rule 4b looks at.
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["SIDE", "CELL", "MIN_RESPONSE", "MIN_CELLS", "thumbnail", "dense_residual"]

#: longer side of the greyscale thumbnail kept per image, pixels
SIDE = 256
#: side of a cell whose shift phase correlation measures, thumbnail pixels
CELL = 32
#: least phase-correlation peak (0…1) for a cell's shift to count
MIN_RESPONSE = 0.15
#: fewer usable cells than this: no dense evidence (NaN)
MIN_CELLS = 6
#: share of the cells (the farthest from the first fit) left out of the refit of the affine map
TRIM = 0.25
_MIN_STD = 4.0


def thumbnail(grey: np.ndarray, side: int = SIDE) -> np.ndarray:
    """A greyscale image resized so its longer side is ``side`` pixels.

    Small images are enlarged (bilinear) and large ones shrunk (area interpolation), so
    that :func:`dense_residual` measures every pair in one unit, 1/``side`` of the
    reference image's longer side, and its cells cover the same share of any image.

    Parameters
    ----------
    grey : ndarray of uint8, shape (H, W)
    side : int

    Returns
    -------
    ndarray of uint8, shape (h, w), C-contiguous, ``max(h, w) == side``
    """
    import cv2

    grey = np.asarray(grey)
    if grey.ndim != 2 or min(grey.shape) < 1:
        raise ValueError(f"thumbnail needs a non-empty 2-d greyscale image, got shape {grey.shape}")
    h, w = grey.shape
    if max(h, w) == side:
        return np.ascontiguousarray(grey, np.uint8)
    s = side / max(h, w)
    size = (max(1, round(w * s)), max(1, round(h * s)))
    return cv2.resize(grey, size, interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)


def _resize_map(sx: float, sy: float) -> np.ndarray:
    """3×3 map of a resize by (sx, sy), from the old image's pixels to the new one's (pixel centres kept)."""
    return np.array([[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5], [0, 0, 1.0]])


def _to_thumb(size, thumb) -> np.ndarray:
    """3×3 map from original pixels to thumbnail pixels."""
    return _resize_map(thumb.shape[1] / size[0], thumb.shape[0] / size[1])


def dense_residual(thumb1: np.ndarray, size1, thumb2: np.ndarray, size2, matrix, *, trim: float | None = None) -> float:
    """The 90th-percentile displacement left after an affine fit of per-cell shifts, thumbnail pixels.

    Parameters
    ----------
    thumb1, thumb2 : ndarray of uint8, shape (h, w)
        :func:`thumbnail` of image 1 and image 2.
    size1, size2 : (width, height)
        The original images' sizes, pixels (the frame of ``matrix``).
    matrix : array, (2, 3) or (3, 3)
        The map image 1 → image 2 in original pixels (:attr:`Verification.matrix`; a
        negative determinant for a mirrored copy is fine).
    trim : float, optional
        The share of the cells farthest from a first least-squares fit that the affine map
        is refitted without (default :data:`TRIM`; 0: one plain least-squares fit). The
        residual is then measured on every cell. One cell that locks onto an overlay (a
        text or a logo in one image only: a shift of 10 px) pulls a plain fit by a pixel
        everywhere; the refit keeps it out.

    Returns
    -------
    float
        Pixels of the reference thumbnail (the one showing the overlap at the lower
        resolution); NaN when fewer than :data:`MIN_CELLS` cells are textured, overlapping
        and correlated (no dense evidence either way).
    """
    import cv2

    H = np.asarray(matrix, np.float64)
    if H.shape == (2, 3):
        H = np.vstack([H, [0, 0, 1]])
    if H.shape != (3, 3) or not np.all(np.isfinite(H)) or abs(np.linalg.det(H[:2, :2])) < 1e-9:
        return float("nan")
    # T: thumbnail 1 → thumbnail 2; the reference is the image covering the overlap with fewer pixels
    T = _to_thumb(size2, thumb2) @ H @ np.linalg.inv(_to_thumb(size1, thumb1))
    ref, mov = np.asarray(thumb1, np.float32), np.asarray(thumb2, np.float32)
    if abs(np.linalg.det(T[:2, :2])) < 1.0:   # image 2's thumbnail is the coarser view of the overlap
        ref, mov, T = mov, ref, np.linalg.inv(T)
    scale = math.sqrt(abs(np.linalg.det(T[:2, :2])))    # moving pixels per reference pixel (≥ 1 here)
    if scale > 1.5:   # shrink the moving image to about the reference's scale first (no aliasing)
        mh, mw = mov.shape
        mov = cv2.resize(mov, (max(8, round(mw / scale)), max(8, round(mh / scale))), interpolation=cv2.INTER_AREA)
        T = _resize_map(mov.shape[1] / mw, mov.shape[0] / mh) @ T
    h, w = ref.shape
    A = T[:2]
    warped = cv2.warpAffine(mov, A, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderValue=0)
    valid = cv2.warpAffine(np.ones(mov.shape, np.uint8), A, (w, h), flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP,
                           borderValue=0)
    centres, shifts = _cell_shifts(ref, warped, valid)
    if len(centres) < MIN_CELLS:
        return float("nan")
    X = np.hstack([centres, np.ones((len(centres), 1))])
    coef, *_ = np.linalg.lstsq(X, shifts, rcond=None)
    r = np.linalg.norm(X @ coef - shifts, axis=1)
    trim = TRIM if trim is None else float(trim)
    if trim > 0:
        keep = r <= np.quantile(r, 1.0 - trim)
        if keep.sum() >= 3:
            coef, *_ = np.linalg.lstsq(X[keep], shifts[keep], rcond=None)
            r = np.linalg.norm(X @ coef - shifts, axis=1)
    return float(np.percentile(r, 90))


def _cell_shifts(ref: np.ndarray, warped: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centres (n, 2) and shifts (n, 2) of the textured, covered, correlated cells, pixels.

    Phase correlation as :func:`cv2.phaseCorrelate` computes it (Hann window, normalised
    cross-power spectrum, weighted centroid of the 5×5 neighbourhood of the peak, the
    response being that neighbourhood's share of the correlation; shifts agree with it to
    ~0.02 px), batched over all cells in one FFT call instead of one ``phaseCorrelate``
    call (~15 µs) per cell.
    """
    import cv2
    from scipy import fft   # numpy's pocketfft, ~3x faster on a batch of small float32 cells

    c = CELL

    def grid(img):   # (rows, cols, c, c): the non-overlapping cells
        return np.lib.stride_tricks.sliding_window_view(img, (c, c))[::c, ::c]
    w1, w2 = grid(ref), grid(warped)
    covered = grid(valid).min(axis=(2, 3)) > 0
    iy, ix = np.nonzero(covered)          # the texture is measured on the covered cells only
    c1, c2 = w1[iy, ix], w2[iy, ix]       # (k, c, c) copies
    textured = (c1.std(axis=(1, 2)) >= _MIN_STD) & (c2.std(axis=(1, 2)) >= _MIN_STD)
    iy, ix = iy[textured], ix[textured]
    if len(iy) < MIN_CELLS:
        return np.zeros((0, 2)), np.zeros((0, 2))
    win = cv2.createHanningWindow((c, c), cv2.CV_32F)
    f1 = fft.rfft2(c1[textured] * win)
    f2 = fft.rfft2(c2[textured] * win)
    cross = f2 * np.conj(f1)
    cross /= np.maximum(np.abs(cross), 1e-12)
    corr = fft.irfft2(cross, s=(c, c))                          # (n, c, c), a pure shift peaks at 1
    n = len(corr)
    peak = corr.reshape(n, -1).argmax(axis=1)
    py, px = np.divmod(peak, c)
    d = np.arange(-2, 3)
    rows = (py[:, None] + d[None, :]) % c                       # (n, 5), wrapping like the FFT
    cols = (px[:, None] + d[None, :]) % c
    nb = corr[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]   # (n, 5, 5)
    response = nb.sum(axis=(1, 2))
    safe = np.where(np.abs(response) > 1e-12, response, 1.0)
    sy = py + (nb.sum(axis=2) * d).sum(axis=1) / safe
    sx = px + (nb.sum(axis=1) * d).sum(axis=1) / safe
    sy = np.where(sy > c / 2, sy - c, sy)                       # circular → signed shifts
    sx = np.where(sx > c / 2, sx - c, sx)
    ok = response >= MIN_RESPONSE
    centres = np.stack([ix * c + c / 2, iy * c + c / 2], axis=1)[ok]
    return centres.astype(np.float64), np.stack([sx, sy], axis=1)[ok]
