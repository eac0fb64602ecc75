"""The shifted benchmark builder (nnutils.data.shift, issue 12 part 1) on a small build."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from nnutils import shift as cli
from nnutils.data import pairs as LP
from nnutils.data import photos as P
from nnutils.data import shift as S
from nnutils.data import synth
from nnutils.decide.metrics import wilson_interval

PAIRS = 150


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return S.build_shift(tmp_path_factory.mktemp("shift") / "a", config=S.ShiftConfig(pairs=PAIRS, seed=3))


@pytest.fixture(scope="module")
def meta(built):
    return pd.read_csv(built / "metadata.csv", keep_default_na=False)


def _digests(folder):
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_same_seed_gives_byte_identical_files(built, tmp_path):
    again = S.build_shift(tmp_path / "b", config=S.ShiftConfig(pairs=PAIRS, seed=3))
    first = _digests(built)
    assert len(first) > PAIRS and first == _digests(again)
    other = S.build_shift(tmp_path / "c", config=S.ShiftConfig(pairs=PAIRS, seed=4))
    assert _digests(other)["metadata.csv"] != first["metadata.csv"]


def test_lun_layout_and_counts(built, meta):
    test, labels = LP.read_pairs(built / "test.csv", "test"), LP.read_pairs(built / "test_labels.csv", "labels")
    assert not (built / "train.csv").exists()
    assert list(test.columns[:3]) == ["ID", "image_url1", "image_url2"] and len(test) == PAIRS
    assert labels.ID.tolist() == test.ID.tolist() and set(labels.is_same) == {0, 1}
    embedded_cols = [                                  # the columns of data/lun-embedded/metadata.csv
        "split", "row", "image_url1", "image_url2", "is_same", "distortion", "negative_kind",
        "photo1", "photo2", "base1", "base2", "broken1", "broken2"]
    assert meta.columns.tolist()[:13] == embedded_cols and set(meta.split) == {"test"}
    assert (meta.is_same == labels.is_same).all()
    images = pd.read_csv(built / "images.csv")
    files = set(meta.image_url1) | set(meta.image_url2)
    assert files == set(images.file) and all((built / "images" / f).is_file() for f in files)
    assert 1.3 <= len(files) / PAIRS <= 1.7                       # about 1.5 distinct images per pair
    neg = meta[meta.is_same == 0].negative_kind.value_counts()
    # 40 % positives, 20 % of each negative kind
    assert meta.is_same.sum() == round(PAIRS * 0.4)
    assert neg.to_dict() == {"other_crop": 30, "other_view": 30, "random": 30}
    info = json.loads((built / "build_info.json").read_text())
    assert info["counts"]["negative_kind"] == neg.to_dict() and info["distortions_by"] == "albumentations 2.0.8"
    assert info["photo_pool"]["pool"] == "shift" and info["photo_pool"]["photo_ids"]


def test_cpu_size_has_at_least_100_of_each_hard_kind():
    counts = S._plan_counts(S.ShiftConfig(pairs=800))
    assert counts["other_crop"] >= 100 and counts["other_view"] >= 100 and counts["random"] > 0


def test_every_distortion_kind_is_present(meta):
    pos = meta[meta.is_same == 1]
    assert set(pos.distortion) == set(S.DISTORTIONS)
    assert (meta[meta.is_same == 0].distortion == "").all()
    combos = pos[pos.distortion == "combo"].detail
    assert all(2 <= d.split("; saved")[0].count(" + ") + 1 <= 3 for d in combos)
    rot = pos[pos.distortion.isin(["rotate_black", "rotate_mirror"])].detail
    angles = [abs(float(d.split("rotate(")[1].split(" deg")[0])) for d in rot]
    assert all(5 <= a <= 30 for a in angles)
    q = [int(d.split("quality=")[1].split(")")[0]) for d in pos[pos.distortion == "jpeg"].detail]
    assert q and all(20 <= x <= 60 for x in q)


def test_hard_negative_geometry(meta):
    crops = meta[meta.negative_kind == "other_crop"]
    for r in crops.itertuples():
        g = json.loads(r.geometry)
        assert r.photo1 == r.photo2 and r.base1 != r.base2
        ov = S.box_overlap(g["image1"]["box"], g["image2"]["box"])
        assert ov <= S.MAX_CROP_SHARE and ov == pytest.approx(float(r.overlap), abs=1e-4)
    views = meta[meta.negative_kind == "other_view"]
    synthetic = views[views.view == "synthetic"]
    assert len(synthetic) >= 0.8 * len(views)
    for r in synthetic.itertuples():
        g = json.loads(r.geometry)
        quad = g["image1"] if "quad" in g["image1"] else g["image2"]
        share = S.quad_box_share(quad["quad"], quad["view_of"])
        assert share >= S.MIN_VIEW_SHARE and share == pytest.approx(float(r.overlap), abs=1e-3)
        corners = np.asarray(quad["quad"])          # a real perspective change, not an affine one
        d = (corners[1] - corners[0]) - (corners[2] - corners[3])
        assert np.abs(d).max() > 1.0
    shoot = views[views.view == "shoot"]            # the stereo pair of the held-out pool
    assert len(shoot) and (shoot.photo1 != shoot.photo2).all()
    assert set(shoot.photo1) | set(shoot.photo2) <= {"skimage/motorcycle_left", "skimage/motorcycle_right"}


def test_overlap_measures():
    assert S.box_overlap((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(0.5)
    assert S.box_overlap((0, 0, 10, 10), (2, 2, 4, 4)) == 1.0
    box = (0, 0, 10, 10)
    assert S.quad_box_share([[0, 0], [10, 0], [10, 10], [0, 10]], box) == pytest.approx(1.0)
    assert S.quad_box_share([[5, 0], [15, 0], [15, 10], [5, 10]], box) == pytest.approx(0.5)
    assert S.quad_box_share([[20, 20], [30, 20], [30, 30], [20, 30]], box) == 0.0


def test_photo_pools_are_disjoint_from_training(meta):
    everything, _ = P.scan_photos()
    training = set(P.training_photos(everything).photo_id)
    shift, _ = P.benchmark_photos("shift")
    sealed, _ = P.benchmark_photos("sealed")
    used = set(meta.photo1) | set(meta.photo2)
    assert used <= set(shift.photo_id) and not used & training
    assert not set(sealed.photo_id) & (training | set(shift.photo_id))
    assert not set(shift.shoot) & set(P.training_photos(everything).shoot)   # whole shoots held out
    assert len(shift) >= 25 and len(sealed) >= 10
    # the training builder records and drops the same list
    settings = synth.build_settings(synth.BuildConfig(pairs=40))
    assert set(settings["held_out"]["photo_ids"]) == set(everything.photo_id) - training
    assert synth.GENERATOR_VERSION >= 3


def test_builder_does_not_import_our_distortions():
    code = ("import sys, nnutils.data.shift, nnutils.shift; "
            "print([m for m in sys.modules if m.startswith('nnutils.data.distortions')])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    src = open(S.__file__).read()
    assert "distortions import" not in src and "import nnutils.data.distortions" not in src


def test_bad_arguments_give_clear_errors(tmp_path, built, capsys):
    with pytest.raises(ValueError, match="pairs must be an integer >= 20"):
        S.build_shift(tmp_path / "x", config=S.ShiftConfig(pairs=5))
    with pytest.raises(ValueError, match="pool must be one of"):
        S.build_shift(tmp_path / "x", config=S.ShiftConfig(pool="training"))
    with pytest.raises(ValueError, match="sum below 1"):
        S.ShiftConfig(positive_rate=0.5, other_crop_rate=0.3, other_view_rate=0.3).validate()
    with pytest.raises(FileExistsError, match="not empty"):
        S.build_shift(built, config=S.ShiftConfig(pairs=PAIRS, seed=3))
    assert cli.main(["--out", str(built), "--pairs", "40"]) == 2
    assert "not empty" in capsys.readouterr().err
    assert cli.main(["--out", str(tmp_path / "y"), "--pairs", "3"]) == 2
    assert "pairs must be an integer >= 20" in capsys.readouterr().err


def test_ensure_shift_reuses_a_matching_build(built):
    stamp = (built / "metadata.csv").stat().st_mtime_ns
    assert S.ensure_shift(built, S.ShiftConfig(pairs=PAIRS, seed=3), log=None) == built
    assert (built / "metadata.csv").stat().st_mtime_ns == stamp


def test_wilson_interval():
    lo, hi = wilson_interval(5, 100)
    assert lo == pytest.approx(0.02154, abs=1e-4) and hi == pytest.approx(0.11175, abs=1e-4)
    assert wilson_interval(0, 50)[0] == 0.0 and wilson_interval(50, 50)[1] == 1.0
    assert np.isnan(wilson_interval(0, 0)).all()
    with pytest.raises(ValueError):
        wilson_interval(3, 2)
