"""Local features of one image, and matching them between two images.

:func:`extract` finds keypoints and descriptors with OpenCV (SIFT/RootSIFT or ORB) on a
downscaled working copy, with coordinates in the original image's pixels; :func:`match`
pairs descriptors (ratio test or mutual nearest neighbours; Hamming for binary, L2 for float
descriptors). :class:`Keypoints` holds either kind, e.g. also the DELF-style ones of
:mod:`nnutils.local.delf`. :mod:`nnutils.local.verify` decides whether the matches show one
photo mapped onto the other.

Mirrored copies. SIFT and ORB descriptors are not mirror-invariant: a copy mirrored left-right
matches its original hardly at all. :meth:`Keypoints.mirrored` gives the keypoints *of the
mirrored image* (x → width − 1 − x), which match a mirrored copy as well as the image itself
matches an unmirrored one:

* SIFT (and RootSIFT): free, by permuting the 128 bins — mirroring the patch about the
  keypoint's orientation axis reverses the 4 rows of the 4 × 4 spatial grid and reflects
  the 8 orientation bins (o → −o mod 8); identical (to float precision) to describing the
  mirrored image (measured on a room photo: median relative difference 0.0 over 955
  keypoints);
* ORB: the learned BRIEF pattern is not symmetric, so :func:`extract` (``mirror=True``, the
  default) also computes descriptors on the mirrored image at the mirrored keypoints (no
  second detection; Hamming distance 0 to a full extraction on the mirrored image for the
  keypoints both find) — about +35 % of the ORB extraction time (1.7 ms on 5.2 ms at
  640 × 412, one core);
* other kinds (DELF): none, unless the producer sets :attr:`Keypoints.mirror`.
"""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field

import numpy as np

from nnutils.data.images import read_any
from nnutils.local.dense import thumbnail

#: Keyword arguments of :func:`extract` (routed there by :func:`verify_pair` / :func:`verify_pairs`).
EXTRACT_KEYS = ("max_keypoints", "max_side", "root", "min_side", "min_keypoints", "mirror", "equalize", "spread",
                "cell_cap")

# SIFT descriptor layout (OpenCV): index = (row * 4 + col) * 8 + orientation bin, rows and columns of
# the 4 × 4 grid in the keypoint's rotated frame. Mirroring the image reverses the rows and
# reflects the orientation bins; the permutation is its own inverse.
_r, _c, _o = np.meshgrid(np.arange(4), np.arange(4), np.arange(8), indexing="ij")
_SIFT_MIRROR = (((3 - _r) * 4 + _c) * 8 + (-_o) % 8).ravel()
del _r, _c, _o


@dataclass
class Keypoints:
    """Keypoints of one image, in the ORIGINAL image's pixel coordinates.

    xy : (n, 2) float32, x then y, pixels of the original (not resized) image
    scale : (n,) float32, keypoint size in original pixels (receptive field for DELF)
    score : (n,) float32, detector response or attention score (higher = stronger)
    desc : (n, d) descriptors: uint8 for ORB (binary, Hamming), float32 L2-normalised otherwise
    image_size : (width, height) of the original image, pixels
    kind : "sift" | "orb" | "delf"
    reason : why there are no keypoints ("" when there are some): "unreadable",
        "too small", "too flat", ...
    angle : (n,) float32 keypoint orientation in degrees (OpenCV's convention), or None
    mirror : the keypoints of the image mirrored left-right (in ITS pixels), when the producer
        computed them (:func:`extract` does for ORB); use :meth:`mirrored`
    thumb : uint8 (h, w) greyscale thumbnail of the image (longer side
        :data:`nnutils.local.dense.SIDE`), made by :func:`extract` from its working image, for
        the dense alignment check (:mod:`nnutils.local.dense`); None when the producer made
        none (DELF): the check is then skipped
    """

    xy: np.ndarray
    scale: np.ndarray
    score: np.ndarray
    desc: np.ndarray
    image_size: tuple[int, int]
    kind: str
    reason: str = ""
    angle: np.ndarray | None = field(default=None, repr=False)
    mirror: "Keypoints | None" = field(default=None, repr=False)
    thumb: np.ndarray | None = field(default=None, repr=False)

    def mirrored(self) -> "Keypoints | None":
        """The keypoints of this image mirrored left-right, or None when they are not known.

        Returns
        -------
        Keypoints or None
            ``xy`` in the mirrored image's pixels (x → width − 1 − x, y unchanged), the same
            ``image_size``, ``scale`` and ``score``; ``angle`` → (180° − angle) mod 360°.
            SIFT: descriptors permuted (computed here, cheap: a copy of ``desc``); otherwise
            :attr:`mirror` (set by :func:`extract` for ORB with ``mirror=True``; its
            :attr:`thumb` is this image's flipped, set here on first use), else None.
            Empty keypoints mirror to themselves.
        """
        if self.mirror is not None:
            if self.mirror.thumb is None and self.thumb is not None:   # derived here, stored nowhere else
                self.mirror.thumb = mirror_thumb(self.thumb)
            return self.mirror
        if len(self) == 0:
            return self
        if self.kind != "sift" or self.binary or self.desc.shape[1] != 128:
            return None
        xy = self.xy.copy()
        xy[:, 0] = (self.image_size[0] - 1) - xy[:, 0]
        angle = None if self.angle is None else ((180.0 - self.angle) % 360.0).astype(np.float32)
        return Keypoints(xy, self.scale, self.score, np.ascontiguousarray(self.desc[:, _SIFT_MIRROR]),
                         self.image_size, self.kind, self.reason, angle, thumb=mirror_thumb(self.thumb))

    def __len__(self) -> int:
        return int(self.xy.shape[0])

    @property
    def binary(self) -> bool:
        return self.desc.dtype == np.uint8

    @classmethod
    def empty(cls, kind: str, image_size=(0, 0), reason: str = "", dim: int = 128, binary: bool = False):
        return cls(np.zeros((0, 2), np.float32), np.zeros(0, np.float32), np.zeros(0, np.float32),
                   np.zeros((0, dim), np.uint8 if binary else np.float32), tuple(image_size), kind, reason)


def mirror_thumb(thumb: np.ndarray | None) -> np.ndarray | None:
    """The thumbnail of the image mirrored left-right (None stays None)."""
    return None if thumb is None else np.ascontiguousarray(thumb[:, ::-1])


_local = threading.local()


#: ORB's image pyramid: (levels, scale factor between levels), OpenCV's defaults. Part of the
#: detector's cache key, so ``bench/orb_settings.py --pyramid`` can try another in one process;
#: coarser pyramids were measured there and not taken (the README's cost notes).
ORB_PYRAMID = (8, 1.2)


def _detector(method: str, max_keypoints: int):
    import cv2
    cache = getattr(_local, "detectors", None)
    if cache is None:
        cache = _local.detectors = {}
    levels, factor = ORB_PYRAMID
    key = (method, int(max_keypoints), levels, factor)
    det = cache.get(key)
    if det is None:
        if method == "sift":
            det = cv2.SIFT_create(nfeatures=int(max_keypoints))
        else:
            # a lower FAST threshold than the default 20 keeps smooth interiors (walls, sky) verifiable
            det = cv2.ORB_create(nfeatures=int(max_keypoints), fastThreshold=10, nlevels=levels, scaleFactor=factor)
        cache[key] = det
    return det


def _read_grey(image, max_side: int | None) -> tuple[np.ndarray | None, tuple[int, int], str]:
    """(grey uint8 working image or None, original (width, height), reason)."""
    import cv2

    rgb, size, reason = read_any(image, max_side)
    if rgb is None:
        return None, size, reason
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), size, ""


def extract(image, method: str = "sift", *, max_keypoints: int = 1000, max_side: int | None = 640,
            root: bool = True, min_side: int = 32, min_keypoints: int = 8, mirror: bool = True,
            equalize: bool = True, spread: int = 0, cell_cap: float = 0.0) -> Keypoints:
    """Detect keypoints and compute descriptors of one image; never raises for a bad image.

    Parameters
    ----------
    image : str, os.PathLike, numpy.ndarray or PIL.Image.Image
        A file (read with :mod:`nnutils.data.images`: EXIF orientation applied, any mode; a big
        JPEG is decoded at a reduced DCT scale that is still ≥ ``max_side``), an RGB
        ``uint8`` array ``(H, W, 3)``, a grey ``(H, W)`` array or a PIL image.
    method : {"sift", "orb"}
        SIFT (128-d float32 descriptors, L2 matching) or ORB (32-byte binary, Hamming).
    max_keypoints : int
        At most this many keypoints, the strongest (OpenCV's ``nfeatures``).
    max_side : int or None
        Detect on a copy whose longer side is at most this many pixels (INTER_AREA
        downscale; never upscaled) — for speed. Coordinates and sizes are returned in the
        ORIGINAL image's pixels. None: full resolution.
    root : bool
        SIFT only: RootSIFT (Arandjelović & Zisserman 2012) — L1-normalise, square-root;
        the result has unit L2 norm and L2 distance between RootSIFT vectors is the
        Hellinger kernel on the SIFT histograms (better matching). False: plain SIFT, L2
        normalised.
    min_side : int
        Images whose shorter side (original pixels) is below this are not described
        (``reason="too small"``).
    min_keypoints : int
        Fewer keypoints than this (a constant or almost flat image) → ``reason="too flat"``.
    mirror : bool
        ORB only: also describe the image mirrored left-right at the mirrored keypoints
        (:attr:`Keypoints.mirror`, used by :func:`nnutils.local.verify.verify` to accept a
        mirrored copy); about +35 % of the ORB time. SIFT needs nothing (its mirror is a
        permutation, see :meth:`Keypoints.mirrored`).
    equalize : bool
        Equalise the grey histogram before detecting (default True; ``cv2.equalizeHist``).
        The detectors' thresholds are absolute grey differences, so a low-contrast photo (a
        white room, std ~6 grey levels) gives FAST no corners at all, while a copy whose
        contrast or gamma changed gets other keypoints than its original. Equalising maps
        every image through its own monotone lookup table: a global contrast, brightness or
        gamma change nearly vanishes, and binary tests and gradient orientations keep their
        meaning. The thumbnail (:attr:`Keypoints.thumb`) is made before it (equalised, a flat
        wall's JPEG noise becomes texture that the dense check would read as displacement:
        train positives' 99th percentile 2.6 px instead of 1.3).
    spread : int, default 0
        ORB only: spread the keypoints over a ``spread`` × ``spread`` grid of the working
        image (:func:`spread_keypoints`): up to 3 × ``max_keypoints`` candidates are
        detected, and kept cell by cell in rounds (every cell's strongest, then every
        cell's second, ...). 0: OpenCV's choice, the strongest over the whole image, which
        a high-contrast text overlay on a smooth wall can fill on its own (its copy without
        the text then shares no keypoint with it). Measured and left off: on validation
        (``python bench/orb_settings.py --grid 640x1000,640x1000s4,640x1000s8``, notebook
        10's fusion, out of fold, 10 fold splits) 14.7 (4 × 4) and 14.0 (8 × 8) errors
        against 10.2 without, for +2.4 ms per image; it rescues the test split's watermarked
        chair but spends places on flat cells whose equalised noise matches at random.
    cell_cap : float, default 0
        ORB only: when one cell of a :data:`CAP_CELLS` × :data:`CAP_CELLS` grid holds more
        than this share of the keypoints (a text overlay on a flat photo takes 995 of 1,000),
        detect 3 × ``max_keypoints`` candidates and keep the strongest with at most
        ``cell_cap`` × ``max_keypoints`` per cell (:func:`cap_keypoints`). Images without
        such a cell keep OpenCV's choice unchanged. 0: off. Measured and left off (ninth
        session): on validation (``python bench/orb_settings.py --grid
        640x1000,640x1000c25,640x1000c15,640x1000c10``, 10 fold splits, out of fold) 9.6 ±
        1.9, 11.2 ± 3.5 and 13.8 ± 2.9 errors against 10.0 ± 3.1 without: noise at 25 %,
        worse below. It rescues the matches of the test split's watermarked chair (100+
        inliers at 15 %, still "low spread"), but a cell holds > 25 % of the keypoints in
        31–49 % of the photos (each then pays a 3,000-candidate detection, ~+2.4 ms), and
        the overlay's keypoints are no more concentrated (90 % in 4 of 16 cells) than the
        5th percentile of ordinary photos, so no cheap trigger isolates it.

    Returns
    -------
    Keypoints
        ``xy`` (n, 2) float32 original pixels (pixel centres at integer coordinates),
        ``scale`` (n,) float32 keypoint diameter in original pixels, ``score`` (n,) detector
        response, ``desc`` (n, 128) float32 unit-norm for SIFT or (n, 32) uint8 for ORB,
        ``angle`` (n,) degrees, ``mirror`` (ORB with ``mirror=True``). Empty with a ``reason`` ("unreadable (<why>)", "too small",
        "too flat") when the image cannot be described.

    Raises
    ------
    ValueError
        Unknown ``method`` or an array of an unsupported shape (programming errors).
    """
    import cv2

    method = str(method).lower()
    if method not in ("sift", "orb"):
        raise ValueError(f"method must be 'sift' or 'orb', got {method!r}")
    binary = method == "orb"
    dim = 32 if binary else 128

    def empty(size, reason):
        return Keypoints.empty(method, size, reason=reason, dim=dim, binary=binary)

    grey, size, reason = _read_grey(image, max_side)
    if grey is None:
        return empty(size, reason)
    w0, h0 = size
    if min(w0, h0) < min_side or min(grey.shape) < 8:
        return empty(size, "too small")
    h, w = grey.shape
    s = 1.0
    if max_side and max(h, w) > max_side:
        s = max_side / max(h, w)
        grey = cv2.resize(grey, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    if int(grey.max()) - int(grey.min()) < 2:  # constant: skip the detector
        return empty(size, "too flat")
    thumb = thumbnail(grey)   # before equalising: it would turn a flat wall's JPEG noise into texture
    if equalize:
        grey = cv2.equalizeHist(grey)
    if binary and spread:
        det = _detector(method, 3 * max_keypoints)          # the candidates
        kps = spread_keypoints(det.detect(grey, None), grey.shape, spread, max_keypoints)
        kps, desc = det.compute(grey, kps) if kps else ((), None)
    else:
        det = _detector(method, max_keypoints)
        kps, desc = det.detectAndCompute(grey, None)
        if binary and cell_cap and kps and _crowded(kps, grey.shape, cell_cap * max_keypoints):
            cand = _detector(method, 3 * max_keypoints).detect(grey, None)
            kps = cap_keypoints(cand, grey.shape, CAP_CELLS, int(math.ceil(cell_cap * max_keypoints)), max_keypoints)
            kps, desc = det.compute(grey, kps) if kps else ((), None)
    if desc is None or len(kps) < min_keypoints:
        return empty(size, "too flat")
    if len(kps) > max_keypoints:  # SIFT keeps ties at the cut: keep exactly the strongest
        keep = np.argsort([-k.response for k in kps], kind="stable")[:max_keypoints]
        kps, desc = [kps[i] for i in keep], desc[keep]
    # working pixels → original pixels (per axis: a draft decode / rounding may differ slightly)
    sx, sy = w0 / grey.shape[1], h0 / grey.shape[0]
    pts = _orb_exact_points(det, kps, grey.shape) if binary else np.array([k.pt for k in kps], np.float64)
    xy = np.empty_like(pts)
    xy[:, 0] = (pts[:, 0] + 0.5) * sx - 0.5
    xy[:, 1] = (pts[:, 1] + 0.5) * sy - 0.5
    scale = np.array([k.size for k in kps], np.float32) * np.float32(math.sqrt(sx * sy))
    score = np.array([k.response for k in kps], np.float32)
    angle = np.array([k.angle for k in kps], np.float32)
    mirrored = None
    if binary:
        desc = np.ascontiguousarray(desc, np.uint8)
        if mirror:
            mirrored = _mirror_orb(det, grey, kps, (int(w0), int(h0)), (sx, sy))   # its thumb: see mirrored()
    else:
        desc = desc.astype(np.float32)
        if root:
            desc /= desc.sum(axis=1, keepdims=True) + 1e-7
            np.sqrt(desc, out=desc)
        else:
            desc /= np.linalg.norm(desc, axis=1, keepdims=True) + 1e-7
    return Keypoints(xy.astype(np.float32), scale, score, desc, (int(w0), int(h0)), method, "", angle, mirrored,
                     thumb)


#: Cells per side of the grid of ``extract(cell_cap=...)``.
CAP_CELLS = 4


def _cells(kps, shape: tuple[int, int], cells: int) -> np.ndarray:
    """(n,) the grid cell (row-major, ``cells`` × ``cells``) of each keypoint of an image of ``shape``."""
    h, w = shape
    pts = np.array([k.pt for k in kps], np.float64).reshape(-1, 2)
    cx = np.clip((pts[:, 0] * cells / max(w, 1)).astype(int), 0, cells - 1)
    cy = np.clip((pts[:, 1] * cells / max(h, 1)).astype(int), 0, cells - 1)
    return cy * cells + cx


def _crowded(kps, shape: tuple[int, int], most: float) -> bool:
    """Whether a cell of the :data:`CAP_CELLS` grid holds more than ``most`` of ``kps``."""
    return int(np.bincount(_cells(kps, shape, CAP_CELLS)).max()) > most


def cap_keypoints(kps, shape: tuple[int, int], cells: int, per_cell: int, n: int) -> list:
    """The ``n`` strongest of ``kps`` with at most ``per_cell`` in any cell of a ``cells`` × ``cells`` grid.

    Parameters
    ----------
    kps : sequence of cv2.KeyPoint
        ``pt`` in the image's pixels.
    shape : tuple of int
        The image's (height, width) in pixels.
    cells : int
        Cells per side (≥ 1).
    per_cell : int
        The most keypoints kept in one cell.
    n : int
        How many to keep at most.

    Returns
    -------
    list of cv2.KeyPoint
        Strongest first (ties in the input's order).
    """
    kps = list(kps)
    if not kps:
        return []
    cell = _cells(kps, shape, cells)
    order = np.argsort(-np.array([k.response for k in kps], np.float64), kind="stable")
    seen = np.zeros(cells * cells, int)
    keep = []
    for i in order:
        if seen[cell[i]] < per_cell:
            seen[cell[i]] += 1
            keep.append(kps[i])
            if len(keep) == n:
                break
    return keep


def spread_keypoints(kps, shape: tuple[int, int], cells: int, n: int) -> list:
    """At most ``n`` of ``kps``, spread over a ``cells`` × ``cells`` grid of an image of ``shape``.

    Each keypoint's rank among the keypoints of its cell (by detector response, strongest
    first) orders the selection: all rank-0 keypoints, then all rank-1, ... (ties by
    response), so a cell crowded with strong corners (an overlaid text) cannot take the
    places of the other cells' weaker ones.

    Parameters
    ----------
    kps : sequence of cv2.KeyPoint
        ``pt`` in the image's pixels.
    shape : tuple of int
        The image's (height, width) in pixels.
    cells : int
        Cells per side (≥ 1).
    n : int
        How many to keep.

    Returns
    -------
    list of cv2.KeyPoint
        The kept keypoints, strongest first; all of them when there are at most ``n``.
    """
    kps = list(kps)
    if not kps:
        return []
    resp = np.array([k.response for k in kps], np.float64)
    cell = _cells(kps, shape, cells)
    order = np.lexsort((-resp, cell))                       # by cell, strongest first within it
    first = np.r_[True, np.diff(cell[order]) != 0]
    starts = np.flatnonzero(first)
    rank = np.empty(len(kps), int)
    rank[order] = np.arange(len(order)) - np.repeat(starts, np.diff(np.r_[starts, len(order)]))
    keep = np.lexsort((-resp, rank))[:n]
    return [kps[i] for i in keep[np.argsort(-resp[keep], kind="stable")]]


def _orb_exact_points(det, kps, shape: tuple[int, int]) -> np.ndarray:
    """Where ORB's keypoints lie in the working image, in its pixels (n, 2), pixel centres at integers.

    ORB detects on a pyramid whose level ``k`` is the image resized to ``round(W / s)`` ×
    ``round(H / s)`` (``s = scaleFactor ** k``) and reports a level's pixel ``x_k`` as
    ``x_k · s``; the pixel's centre lies at ``(x_k + 0.5) · W / round(W / s) - 0.5``. The
    difference, up to 3 px at level 7 of a 640 px image, is the same in two copies at the
    same orientation and cancels; under a mirror or a quarter turn it changes sign along one
    axis and adds a systematic, level-dependent error to every match — as large as the
    inlier threshold at the coarse levels, and a false perspective signal.
    """
    import cv2

    h, w = shape
    if not kps:
        return np.zeros((0, 2), np.float64)
    pts = cv2.KeyPoint_convert(kps).astype(np.float64).reshape(-1, 2)
    s = _orb_level_scales(det, kps)
    out = np.empty_like(pts)
    out[:, 0] = (pts[:, 0] / s + 0.5) * w / _orb_level_size(w, s) - 0.5
    out[:, 1] = (pts[:, 1] / s + 0.5) * h / _orb_level_size(h, s) - 0.5
    return out


def _orb_level_scales(det, kps) -> np.ndarray:
    """(n,) the scale ``s = scaleFactor ** octave`` of each keypoint's pyramid level."""
    return float(det.getScaleFactor()) ** np.array([k.octave for k in kps], np.float64)


def _orb_level_size(side: int, s: np.ndarray) -> np.ndarray:
    """(n,) a side of ``side`` pixels at pyramid scales ``s``: ``round(side / s)``, at least 1."""
    return np.maximum(1, np.round(side / s))


def _mirror_orb(det, grey: np.ndarray, kps, size: tuple[int, int], s: tuple[float, float]) -> Keypoints:
    """ORB descriptors of ``grey`` mirrored left-right at the mirrored keypoints ``kps`` (working pixels).

    Each keypoint is mirrored in its own pyramid level (``x_k → round(W / s) - 1 - x_k``), so
    the descriptor is computed where the mirrored image's level holds that pixel
    (:func:`_orb_exact_points`).

    Returns
    -------
    Keypoints
        In the mirrored image's ORIGINAL pixels (``s`` = original / working pixel size per
        axis); keypoints ORB drops (too close to the border) are left out.
    """
    import cv2

    sc = _orb_level_scales(det, kps)
    x = sc * (_orb_level_size(grey.shape[1], sc) - 1 - cv2.KeyPoint_convert(kps)[:, 0] / sc)
    mk = [cv2.KeyPoint(float(xi), k.pt[1], k.size, (180.0 - k.angle) % 360.0, k.response, k.octave, i)
          for i, (xi, k) in enumerate(zip(x.tolist(), kps))]
    mk, md = det.compute(cv2.flip(grey, 1), mk)                  # the mirrored copy (a numpy [:, ::-1] copy: 10x slower)
    if md is None or not mk:
        return Keypoints.empty("orb", size, reason="too flat", dim=32, binary=True)
    pts = _orb_exact_points(det, mk, grey.shape)
    xy = np.stack([(pts[:, 0] + 0.5) * s[0] - 0.5, (pts[:, 1] + 0.5) * s[1] - 0.5], 1).astype(np.float32)
    return Keypoints(xy, np.array([k.size for k in mk], np.float32) * np.float32(math.sqrt(s[0] * s[1])),
                     np.array([k.response for k in mk], np.float32), np.ascontiguousarray(md, np.uint8), size, "orb",
                     "", np.array([k.angle for k in mk], np.float32))


def _two_nn_float(da: np.ndarray, db: np.ndarray):
    """For each row of da: index of the nearest row of db, its L2 distance, the 2nd distance."""
    da = np.asarray(da, np.float32)
    db = np.asarray(db, np.float32)
    d2 = (da * da).sum(1)[:, None] + (db * db).sum(1)[None, :] - 2.0 * (da @ db.T)
    np.maximum(d2, 0, out=d2)
    rows = np.arange(len(da))
    j = np.argmin(d2, axis=1)
    d1 = d2[rows, j].copy()
    if db.shape[0] > 1:
        d2[rows, j] = np.inf
        dsec = d2.min(axis=1)
    else:
        dsec = np.full(len(da), np.inf, np.float32)
    return j, np.sqrt(d1), np.sqrt(dsec)


def _two_nn_binary(da: np.ndarray, db: np.ndarray):
    """For each row of da: index of the nearest row of db, its Hamming distance, the 2nd distance.

    Brute force with faiss' binary index (``IndexBinaryFlat``: 64-bit popcounts) on one
    thread: for two sets of 1,000 ORB descriptors ~6x faster than OpenCV's
    ``BFMatcher.knnMatch`` with the same neighbours and distances, and a pair is too small
    to share between threads (the callers run pairs in parallel instead).
    """
    import faiss

    da = np.ascontiguousarray(da, np.uint8)
    db = np.ascontiguousarray(db, np.uint8)
    index = faiss.IndexBinaryFlat(8 * db.shape[1])
    index.add(db)
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        dist, idx = index.search(da, min(2, len(db)))
    finally:
        faiss.omp_set_num_threads(threads)
    j = idx[:, 0].astype(np.int64)
    d1 = dist[:, 0].astype(np.float32)
    if dist.shape[1] > 1:
        d2 = np.where(idx[:, 1] < 0, np.inf, dist[:, 1]).astype(np.float32)
    else:
        d2 = np.full(len(da), np.inf, np.float32)
    return j, d1, d2


def _nn(da, db, binary):
    return _two_nn_binary(da, db) if binary else _two_nn_float(da, db)


def match(a: Keypoints, b: Keypoints, *, method: str = "ratio", ratio: float = 0.8) -> np.ndarray:
    """Match descriptors of ``a`` to those of ``b``.

    Parameters
    ----------
    a, b : Keypoints
        Same descriptor type: binary (``uint8``, Hamming distance) or float (any
        dimension, L2 distance — SIFT/RootSIFT, DELF-style, ...).
    method : {"ratio", "mutual"}
        ``"ratio"``: Lowe's ratio test — keep a's nearest neighbour in b when its distance
        is below ``ratio`` × the second-nearest distance. ``"mutual"``: keep pairs that are
        each other's nearest neighbour (cross-check), and that also pass the ratio test
        when ``ratio < 1`` (pass ``ratio=1`` for pure mutual nearest neighbours).
    ratio : float
        Ratio-test threshold (0.8 as in Lowe 2004).

    Returns
    -------
    numpy.ndarray
        ``int64`` (m, 2): rows ``(index in a, index in b)``, ordered by index in a;
        shape (0, 2) when either set is empty.

    Raises
    ------
    ValueError
        Unknown method, or descriptors of different types/dimensions.
    """
    if method not in ("ratio", "mutual"):
        raise ValueError(f"method must be 'ratio' or 'mutual', got {method!r}")
    if len(a) == 0 or len(b) == 0:
        return np.zeros((0, 2), np.int64)
    if a.binary != b.binary or a.desc.shape[1] != b.desc.shape[1]:
        raise ValueError(f"incompatible descriptors: {a.kind} {a.desc.dtype}{a.desc.shape[1:]} vs "
                         f"{b.kind} {b.desc.dtype}{b.desc.shape[1:]}")
    j, d1, d2 = _nn(a.desc, b.desc, a.binary)
    keep = np.ones(len(a), bool) if ratio >= 1 else d1 < ratio * d2
    if method == "mutual":
        jb, _, _ = _nn(b.desc, a.desc, a.binary)
        keep &= jb[j] == np.arange(len(a))
    idx = np.nonzero(keep)[0]
    if len(idx) > 1:  # one match per keypoint of b: the closest (many-to-one matches fit degenerate maps)
        order = idx[np.lexsort((d1[idx], j[idx]))]
        first = np.r_[True, j[order][1:] != j[order][:-1]]
        idx = np.sort(order[first])
    return np.stack([idx, j[idx]], axis=1).astype(np.int64).reshape(-1, 2)
