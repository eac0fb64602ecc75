"""Local features and the geometric check: is one image the other one, mapped?

(Skeleton: the shared :class:`Keypoints` container. Extraction, matching and
verification are added in this module; ``nnutils.delf`` produces the same container.)
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["Keypoints"]


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
    """

    xy: np.ndarray
    scale: np.ndarray
    score: np.ndarray
    desc: np.ndarray
    image_size: tuple[int, int]
    kind: str
    reason: str = ""
    angle: np.ndarray | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return int(self.xy.shape[0])

    @property
    def binary(self) -> bool:
        return self.desc.dtype == np.uint8

    @classmethod
    def empty(cls, kind: str, image_size=(0, 0), reason: str = "", dim: int = 128, binary: bool = False):
        return cls(np.zeros((0, 2), np.float32), np.zeros(0, np.float32), np.zeros(0, np.float32),
                   np.zeros((0, dim), np.uint8 if binary else np.float32), tuple(image_size), kind, reason)
