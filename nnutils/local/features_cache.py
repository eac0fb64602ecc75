"""Local features of one decoded image, and their on-disk cache by file content.

The one pass of prediction (:func:`nnutils.decide.onepass.embed_and_describe`) decodes each
image once and derives from that one array the global model's input, the local features
and the per-image facts of the fused decision. This module holds the local part:

* :class:`LocalSpec` — which extractor (``orb``, ``sift`` or ``delf``) with which
  settings, how large the one decode must be for it (:attr:`LocalSpec.decode_side`: the
  side the extractor itself would decode a file at, so the pixels are the ones the
  fusion's features were fitted on), and the cache key of its results;
* :meth:`LocalSpec.extract` — the keypoints of a decoded array, in the ORIGINAL image's
  pixels even when the decode was DCT-reduced: identical (to float rounding) to what the
  extractor gives for the file itself;
* :class:`FeatureCache` — ``<cache_dir>/local/<key>/`` beside the embedding cache
  (``<cache_dir>/embeddings/<key>/``), one record per file content (its SHA-1) appended to
  the folder's pack files (:class:`nnutils.data.cache.PackStore`), with the keypoints (``xy``, ``scale``, ``score``, ``desc``, ``angle``, ``size``, ``kind``,
  ``reason``, the greyscale thumbnail of the dense check, and ORB's mirrored descriptors
  when present) and the facts (width, height,
  file and pixel digests, perceptual hashes). Readable images only: an unreadable file is
  decided by policy and recomputed (cheaply: it fails fast) on the next run. A record is
  one buffer of named arrays (:func:`pack_arrays`: a JSON header, then the raw bytes), not
  an ``.npz``: NumPy's zip writes and reads each of a record's ~22 arrays as a zip member,
  ~1.0–1.3 ms to write and ~1.0 to read a 130 KB record on this machine against ~0.4 and
  ~0.1 (ninth session, 200 records of a shifted-set photo, three runs, a file each); since
  the tenth session records are appended to packs, not written as a file each (creating a
  file costs this machine's disk ~0.7–1.2 ms of kernel time: ``python bench/cache_store.py``).
  :func:`save_record` / :func:`load_record` still write and read one record as a file.

Importing this module imports neither TensorFlow nor OpenCV.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nnutils.data.cache import PackStore, atomic_write, model_key
from nnutils.local.keypoints import EXTRACT_KEYS, Keypoints, extract

__all__ = ["LocalSpec", "FeatureCache", "ImageRecord", "save_record", "load_record", "record_bytes",
           "record_from_bytes", "pack_arrays", "unpack_arrays", "write_arrays", "read_arrays", "to_original_pixels", "CACHE_VERSION"]

#: Bumped when the stored format or the extraction changes meaning (part of the cache key).
CACHE_VERSION = 7   # 2: ORB keypoints at their pyramid level's exact pixel centres; 3: + the thumbnail; 4: equalised;
#                     5: the facts' hashes read the grey 256-px thumbnail (ORB's in the one pass);
#                     6: records written by write_arrays (.rec) instead of np.savez (.npz);
#                     7: records appended to a PackStore instead of a file each

#: First bytes of a record file (:func:`write_arrays`).
MAGIC = b"NNREC1\n"
_ALIGN = 16


def to_original_pixels(kp: Keypoints, size: tuple[int, int]) -> Keypoints:
    """``kp`` found on a decoded copy, mapped to the ORIGINAL image of ``size`` = (width, height) pixels.

    Parameters
    ----------
    kp : Keypoints
        Coordinates in the decoded array's pixels (``kp.image_size`` = its (width, height)).
    size : tuple of int
        The original (width, height) in pixels (e.g. before a DCT-reduced JPEG decode).

    Returns
    -------
    Keypoints
        ``xy`` per axis ``(x + 0.5) * w0 / w - 0.5`` (pixel centres, as the extractors map
        their working copies), ``scale`` times ``sqrt(sx * sy)``, ``image_size = size``;
        the mirrored keypoints (``kp.mirror``) mapped alike. ``kp`` itself when the sizes agree.
    """
    w, h = kp.image_size
    w0, h0 = int(size[0]), int(size[1])
    if (w, h) == (w0, h0) or not w or not h:
        return kp
    sx, sy = w0 / w, h0 / h

    def one(k: Keypoints) -> Keypoints:
        xy = k.xy.astype(np.float64)
        xy = np.stack([(xy[:, 0] + 0.5) * sx - 0.5, (xy[:, 1] + 0.5) * sy - 0.5], axis=1).astype(np.float32)
        out = Keypoints(xy, (k.scale * np.float32(math.sqrt(sx * sy))).astype(np.float32), k.score, k.desc,
                        (w0, h0), k.kind, k.reason, k.angle, thumb=k.thumb)
        return out

    out = one(kp)
    mirror = getattr(kp, "mirror", None)
    if mirror is not None:
        out.mirror = one(mirror)
    return out


@dataclass
class LocalSpec:
    """One local extractor and its settings, as the fused decision was fitted with.

    Parameters
    ----------
    method : {"orb", "sift", "delf"}
    extract_kw : dict
        Options of :func:`nnutils.local.keypoints.extract` (the :data:`EXTRACT_KEYS` of a
        decision's ``local_kw``; other keys are ignored). Not used for ``delf``.
    delf : DelfExtractor, optional
        The loaded extractor, for ``delf``.
    delf_dir : path, optional
        Its saved folder (part of the cache key: folder and modification time).

    Attributes
    ----------
    decode_side : int or None
        The side a file is decoded at for this extractor (``max_side`` for ORB/SIFT, default
        640; the longest network input of the pyramid for DELF), in pixels: a JPEG is
        decoded at the smallest DCT scale still at least this large in both dimensions, as
        the extractor would read the file itself. None: full size.
    """

    method: str
    extract_kw: dict = field(default_factory=dict)
    delf: object = None
    delf_dir: str | os.PathLike | None = None

    def __post_init__(self):
        self.method = str(self.method).lower()
        if self.method not in ("orb", "sift", "delf"):
            raise ValueError(f"method must be 'orb', 'sift' or 'delf', got {self.method!r}")
        if self.method == "delf" and self.delf is None:
            raise ValueError("method 'delf' needs the loaded extractor (delf=)")
        self.extract_kw = {k: v for k, v in dict(self.extract_kw or {}).items() if k in EXTRACT_KEYS}

    @classmethod
    def from_decision(cls, local_method: str, local_kw: dict | None = None, local_model=None) -> "LocalSpec":
        """The spec of a decision's local check (loads the DELF extractor from ``local_model``)."""
        delf = None
        if local_method == "delf":
            from nnutils.local.delf import DelfExtractor
            delf = DelfExtractor.load(local_model)
        return cls(local_method, dict(local_kw or {}), delf=delf, delf_dir=local_model)

    @property
    def decode_side(self) -> int | None:
        if self.method == "delf":
            from nnutils.local.delf import DEFAULT_SCALES
            return int(self.delf._decode_side(DEFAULT_SCALES))
        side = self.extract_kw.get("max_side", 640)
        return None if side is None else int(side)

    def key(self, hash_kinds=()) -> str:
        """Cache folder name: the method, its settings, the DELF model's folder and mtime, the format version."""
        parts = ["local", self.method, json.dumps(self.extract_kw, sort_keys=True, default=str),
                 f"side{self.decode_side}", ",".join(hash_kinds), f"v{CACHE_VERSION}"]
        if self.method == "delf":
            d = Path(self.delf_dir) if self.delf_dir else None
            stamp = max((f.stat().st_mtime_ns for f in d.iterdir()), default=0) if d and d.is_dir() else 0
            parts += [str(d.resolve()) if d else repr(self.delf), stamp, self.delf.image_size,
                      self.delf.score_threshold]
        return model_key(*parts)

    @property
    def mirrors(self) -> bool:
        """Whether :meth:`extract` computes ORB's mirrored descriptors by default."""
        return self.method == "orb" and bool(self.extract_kw.get("mirror", True))

    def extract(self, rgb: np.ndarray, size: tuple[int, int], *, mirror: bool | None = None) -> Keypoints:
        """Keypoints of a decoded image, in the ORIGINAL image's pixels; never raises for a bad image.

        Parameters
        ----------
        rgb : ndarray of uint8, shape (H, W, 3)
            The one decode (possibly DCT-reduced, at :attr:`decode_side`).
        size : tuple of int
            The original (width, height) in pixels.
        mirror : bool, optional
            ORB: compute the mirrored descriptors (None: the spec's setting, default True);
            the one pass skips them for images no pair mirrors
            (:func:`nnutils.local.verify.mirror_side`).

        Returns
        -------
        Keypoints
            As the extractor gives for the file itself (same pixels, same settings), mapped
            from the decoded array's pixels to the original's (:func:`to_original_pixels`).
        """
        if self.method == "delf":
            kp = self.delf.extract(rgb)
        else:
            kw = self.extract_kw if mirror is None or self.method != "orb" else {**self.extract_kw, "mirror": mirror}
            kp = extract(rgb, self.method, **kw)
        return to_original_pixels(kp, size)

    def empty(self, reason: str, size=(0, 0)) -> Keypoints:
        """Empty keypoints of this method's descriptor type with ``reason``."""
        if self.method == "delf":
            return Keypoints.empty("delf", size, reason=reason, dim=self.delf.dim)
        orb = self.method == "orb"
        return Keypoints.empty(self.method, size, reason=reason, dim=32 if orb else 128, binary=orb)


@dataclass
class ImageRecord:
    """What the one pass keeps of one image besides its embedding.

    Parameters
    ----------
    keypoints : Keypoints
        Local features in original pixels (empty with a ``reason`` when there are none).
    facts : dict
        ``width``, ``height`` (original pixels; NaN when unreadable), ``file_digest``,
        ``pixel_digest`` (str or None) and one 64-bit hash per kind (bool (64,) arrays) —
        the per-image inputs of :func:`nnutils.decide.fusion.pair_features`.
    """

    keypoints: Keypoints
    facts: dict


_KP = ("xy", "scale", "score", "desc")


def _kp_arrays(kp: Keypoints, prefix: str) -> dict:
    out = {f"{prefix}{n}": getattr(kp, n) for n in _KP}
    out[f"{prefix}size"] = np.asarray(kp.image_size, np.int64)
    out[f"{prefix}kind"] = np.asarray(kp.kind)
    out[f"{prefix}reason"] = np.asarray(kp.reason)
    if kp.angle is not None:
        out[f"{prefix}angle"] = kp.angle
    if kp.thumb is not None and prefix == "kp_":   # the mirror's is this one flipped
        out[f"{prefix}thumb"] = kp.thumb
    return out


def _kp_from(z, prefix: str) -> Keypoints:
    angle = z[f"{prefix}angle"] if f"{prefix}angle" in z else None
    thumb = z[f"{prefix}thumb"] if f"{prefix}thumb" in z else None
    return Keypoints(*(z[f"{prefix}{n}"] for n in _KP), tuple(int(v) for v in z[f"{prefix}size"]),
                     str(z[f"{prefix}kind"]), str(z[f"{prefix}reason"]), angle, thumb=thumb)


def pack_arrays(arrays: dict) -> bytes:
    """Named arrays as one buffer: :data:`MAGIC`, a JSON header, the raw bytes (16-byte aligned).

    Parameters
    ----------
    arrays : dict of str to array-like
        Numeric, boolean or fixed-width string arrays (no objects: nothing is pickled).

    Returns
    -------
    bytes

    Raises
    ------
    ValueError
        For an object array.
    """
    head, chunks, offset = {}, [], 0
    for name, value in arrays.items():
        a = np.asarray(value)                 # tobytes() is C order; 0-d arrays stay 0-d
        if a.dtype.hasobject:
            raise ValueError(f"{name}: object arrays cannot be stored")
        b = a.tobytes()
        head[name] = [a.dtype.str, list(a.shape), offset]
        pad = -len(b) % _ALIGN
        chunks.append(b + bytes(pad))
        offset += len(b) + pad
    header = json.dumps(head).encode()
    lead = MAGIC + len(header).to_bytes(4, "little") + header
    return b"".join([lead, bytes(-len(lead) % _ALIGN), *chunks])


def unpack_arrays(data, source: str = "record") -> dict:
    """The arrays of a :func:`pack_arrays` buffer: writable views into one copy of it.

    Parameters
    ----------
    data : bytes-like
    source : str
        Named in the error (a file or cache key).

    Raises
    ------
    ValueError
        A buffer that is not a record, or truncated.
    """
    data = bytearray(data)
    m = len(MAGIC)
    if data[:m] != MAGIC or len(data) < m + 4:
        raise ValueError(f"{source}: not a feature record")
    n = int.from_bytes(data[m:m + 4], "little")
    try:
        head = json.loads(bytes(data[m + 4:m + 4 + n]))
    except ValueError:
        raise ValueError(f"{source}: truncated header") from None
    base = m + 4 + n
    base += -base % _ALIGN
    out = {}
    for name, (dtype, shape, offset) in head.items():
        dt = np.dtype(dtype)
        count = math.prod(shape)
        if base + offset + count * dt.itemsize > len(data):
            raise ValueError(f"{source}: truncated at {name!r}")
        out[name] = np.frombuffer(data, dt, count, base + offset).reshape(shape)
    return out


def write_arrays(path: str | os.PathLike, arrays: dict) -> None:
    """Write named arrays as one file (:func:`pack_arrays`), atomically.

    Parameters
    ----------
    path : path
        The target file (its folder must exist).
    arrays : dict of str to array-like

    Raises
    ------
    ValueError
        For an object array.
    """
    data = pack_arrays(arrays)
    atomic_write(path, lambda f: f.write(data))


def read_arrays(path: str | os.PathLike) -> dict:
    """The arrays :func:`write_arrays` wrote: writable views into one buffer, the file read once.

    Raises
    ------
    ValueError
        A file that is not a record, or truncated.
    """
    return unpack_arrays(Path(path).read_bytes(), str(path))


def record_bytes(rec: ImageRecord) -> bytes:
    """``rec`` as one buffer of named arrays (:func:`pack_arrays`; no pickle)."""
    arrays = _kp_arrays(rec.keypoints, "kp_")
    mirror = getattr(rec.keypoints, "mirror", None)
    if mirror is not None:
        arrays.update(_kp_arrays(mirror, "mirror_"))
    for k, v in rec.facts.items():
        arrays[f"fact_{k}"] = np.asarray("" if v is None else v)
    return pack_arrays(arrays)


def record_from_bytes(data, source: str = "record") -> ImageRecord:
    """The :class:`ImageRecord` of a :func:`record_bytes` buffer.

    Returns
    -------
    ImageRecord
        Arrays as saved (float32 coordinates, uint8 or float32 descriptors); the ORB mirror
        as ``keypoints.mirror`` when it was saved.

    Raises
    ------
    ValueError
        Not a record, or truncated.
    """
    z = unpack_arrays(data, source)
    kp = _kp_from(z, "kp_")
    if "mirror_xy" in z:
        kp.mirror = _kp_from(z, "mirror_")   # its thumbnail: Keypoints.mirrored() flips kp's
    facts = {}
    for k, v in z.items():
        if k.startswith("fact_"):
            name = k[5:]
            if name in _STR_FACTS:
                facts[name] = str(v) or None
            elif v.ndim == 0:
                facts[name] = float(v)
            else:
                facts[name] = v
    return ImageRecord(kp, facts)


_STR_FACTS = ("file_digest", "pixel_digest")


def save_record(path: str | os.PathLike, rec: ImageRecord) -> None:
    """Write ``rec`` as one record file (:func:`record_bytes`, written atomically).

    Parameters
    ----------
    path : path
        The target file (its folder must exist).
    rec : ImageRecord
    """
    data = record_bytes(rec)
    atomic_write(path, lambda f: f.write(data))


def load_record(path: str | os.PathLike) -> ImageRecord:
    """Read what :func:`save_record` wrote (see :func:`record_from_bytes`)."""
    return record_from_bytes(Path(path).read_bytes(), str(path))


class FeatureCache:
    """``<cache_dir>/local/<key>/``: one :class:`ImageRecord` per file content, in a :class:`PackStore`.

    Parameters
    ----------
    cache_dir : path or None
        The cache root (the same as the embeddings'); None caches nothing.
    key : str
        :meth:`LocalSpec.key`.

    Attributes
    ----------
    folder : Path or None
    packs : PackStore or None
    """

    def __init__(self, cache_dir, key: str):
        self.folder = Path(cache_dir) / "local" / key if cache_dir else None
        self.packs = PackStore(self.folder) if self.folder is not None else None

    def __len__(self) -> int:
        return len(self.packs) if self.packs is not None else 0

    def get(self, digest: str | None) -> ImageRecord | None:
        """The cached record, or None (not cached, or a damaged value, which is then recomputed)."""
        data = self.packs.get(digest) if self.packs is not None and digest else None
        if data is None:
            return None
        try:
            return record_from_bytes(data, digest)
        except Exception:  # a foreign / damaged value: recompute
            return None

    def put(self, digest: str | None, rec: ImageRecord) -> None:
        """Store ``rec`` (nothing when caching is off or there is no digest)."""
        if self.packs is not None and digest:
            self.packs.put(digest, record_bytes(rec))
