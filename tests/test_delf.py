"""DELF-style local features: shapes, geometry in original pixels, 0.5× correspondence,
save/load, TFLite = Keras, bad images → empty with a reason. Tiny settings (one epoch, 128 px)."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import cv2
import numpy as np
import pytest
import skimage.data
from PIL import Image

from nnutils.local.delf import DEFAULT_SCALES, DelfExtractor, _input_shape, plot_attention, train_delf
from nnutils.local.keypoints import Keypoints
from nnutils.models.runtime import TFLiteRunner

SIZE = 128
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field")


def _photo(name):
    return getattr(skimage.data, name)()


@pytest.fixture(scope="module")
def extractor(tmp_path_factory):
    """Trained on 6 photos × (original, a crop): label = photo. keras runtime (no conversion)."""
    folder = tmp_path_factory.mktemp("delf_train")
    paths, labels = [], []
    for name in PHOTOS:
        a = _photo(name)
        h, w = a.shape[:2]
        for k, img in enumerate((a, a[h // 8:, w // 10: w - w // 10])):
            p = folder / f"{name}_{k}.jpg"
            Image.fromarray(np.ascontiguousarray(img)).save(p, quality=90)
            paths.append(str(p))
            labels.append(name)
    paths.append(str(folder / "missing.jpg"))  # unreadable training images are skipped
    labels.append("missing")
    return train_delf(paths, labels, image_size=SIZE, epochs=1, batch_size=8, hidden=64, pca_dims=16,
                      runtime="keras", progress=False, cache_dir=folder / "cache")


def _mutual_nn(a: Keypoints, b: Keypoints):
    s = np.einsum("nd,md->nm", a.desc, b.desc)
    ab, ba = s.argmax(1), s.argmax(0)
    i = np.nonzero(ba[ab] == np.arange(len(a)))[0]
    return a.xy[i], b.xy[ab[i]]


def test_training_summary(extractor):
    assert extractor.settings["n_images"] == 12 and extractor.settings["n_unreadable"] == 1
    assert extractor.settings["n_classes"] == 6 and extractor.settings["map_shape"] == [SIZE // 16, SIZE // 16, 112]
    assert len(extractor.history["loss"]) == 1 and np.isfinite(extractor.history["loss"][0])
    assert extractor.dim == 16 and extractor.channels == 112 and extractor.score_threshold > 0


def test_keypoints_shapes_and_bounds_on_a_non_square_image(extractor):
    a = _photo("rocket")  # 640 × 427
    kp = extractor.extract(a, max_keypoints=100)
    assert kp.kind == "delf" and kp.reason == "" and kp.image_size == (640, 427)
    assert 0 < len(kp) <= 100
    assert kp.xy.shape == (len(kp), 2) and kp.xy.dtype == np.float32
    assert kp.desc.shape == (len(kp), 16) and kp.desc.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(kp.desc, axis=1), 1.0, atol=1e-4)
    assert (kp.xy[:, 0] >= 0).all() and (kp.xy[:, 0] <= 639).all()
    assert (kp.xy[:, 1] >= 0).all() and (kp.xy[:, 1] <= 426).all()
    # keypoints spread over the image, not one corner
    assert np.ptp(kp.xy[:, 0]) > 200 and np.ptp(kp.xy[:, 1]) > 150
    assert (np.diff(kp.score) <= 0).all() and (kp.score >= extractor.score_threshold).all()
    # receptive field / image scale: coarser pyramid levels give larger keypoints
    expected = [extractor.receptive_field / np.sqrt(hw[1] / 640 * hw[0] / 427)
                for hw in (_input_shape(640, 427, SIZE, s) for s in (0.7071, 1.0, 1.4142))]
    assert np.abs(kp.scale[:, None] - np.array(expected, np.float32)).min(axis=1).max() < 0.01
    assert len(np.unique(kp.scale)) >= 2
    # more keypoints allowed → at least as many; nms thins them
    assert len(extractor.extract(a, max_keypoints=300)) >= len(kp)
    thin = extractor.extract(a, max_keypoints=300, nms_radius=60)
    d = np.linalg.norm(thin.xy[:, None] - thin.xy[None], axis=-1) + 1e9 * np.eye(len(thin))
    assert d.min() >= 60


def test_half_size_copy_gives_corresponding_keypoints(extractor):
    a = _photo("coffee")  # 600 × 400
    half = cv2.resize(a, (300, 200), interpolation=cv2.INTER_AREA)
    # every location (one epoch of training leaves few above the learned threshold)
    k1, k2 = extractor.extract(a, score_threshold=0.0), extractor.extract(half, score_threshold=0.0)
    assert k2.image_size == (300, 200)
    p1, p2 = _mutual_nn(k1, k2)
    assert len(p1) >= 30, len(p1)
    m, inl = cv2.estimateAffinePartial2D(p1, p2, method=cv2.RANSAC, ransacReprojThreshold=8.0)
    assert m is not None and inl.sum() >= 20
    scale = np.sqrt(abs(np.linalg.det(m[:, :2])))
    assert 0.425 <= scale <= 0.575, scale
    assert np.abs(m[:, 2]).max() < 20  # no shift beyond a fraction of a stride-16 cell


def test_a_different_photo_matches_worse_than_the_same_photo(extractor):
    a, b = _photo("chelsea"), _photo("astronaut")
    crop = a[20:, 30:]
    ka, kc, kb = (extractor.extract(x, score_threshold=0.0) for x in (a, crop, b))

    def inliers(x, y):
        p1, p2 = _mutual_nn(x, y)
        if len(p1) < 3:
            return 0
        m, inl = cv2.estimateAffinePartial2D(p1, p2, method=cv2.RANSAC, ransacReprojThreshold=10.0)
        return 0 if m is None else int(inl.sum())

    same, other = inliers(ka, kc), inliers(ka, kb)
    assert same >= 15 and same > 3 * max(1, other), (same, other)


def test_attention_map_and_plot(extractor, tmp_path):
    import matplotlib
    matplotlib.use("Agg")
    a = _photo("chelsea")  # 451 × 300
    att = extractor.attention_map(a)
    h, w = _input_shape(451, 300, SIZE, 1.0)
    assert att.shape == (h // 16, w // 16) and att.dtype == np.float32 and (att >= 0).all()
    assert extractor.attention_map(str(tmp_path / "nope.jpg")).shape == (0, 0)
    ax = plot_attention(a, att, keypoints=extractor.extract(a, max_keypoints=20), title="chelsea")
    assert ax.get_xlim() == (0.0, 451.0)
    ax2 = plot_attention(str(tmp_path / "nope.jpg"), None)
    assert ax2.texts and "unreadable" in ax2.texts[0].get_text()


def test_bad_images_give_empty_keypoints_with_a_reason(extractor, tmp_path):
    flat = np.full((200, 300, 3), 77, np.uint8)
    tiny = _photo("astronaut")[:10, :12]
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"\xff\xd8\xff\xe0 not a jpeg at all")
    cases = {
        "too flat": flat,
        "too small": tiny,
        "unreadable (missing)": str(tmp_path / "missing.png"),
    }
    for reason, image in cases.items():
        kp = extractor.extract(image)
        assert len(kp) == 0 and kp.reason == reason and kp.kind == "delf"
        assert kp.desc.shape == (0, extractor.dim) and kp.desc.dtype == np.float32
    assert extractor.extract(flat).image_size == (300, 200)
    assert extractor.extract(str(junk)).reason.startswith("unreadable (")
    assert extractor.extract(None).reason.startswith("unreadable (")
    # attention below the threshold everywhere
    kp = extractor.extract(_photo("coffee"), score_threshold=1e12)
    assert len(kp) == 0 and kp.reason == "too flat" and kp.image_size == (600, 400)


def test_inputs_path_pil_grey_array_agree(extractor, tmp_path):
    a = _photo("coffee")
    p = tmp_path / "coffee.png"
    Image.fromarray(a).save(p)
    k_arr, k_path, k_pil = extractor.extract(a), extractor.extract(str(p)), extractor.extract(Image.open(p))
    np.testing.assert_array_equal(k_arr.xy, k_path.xy)
    np.testing.assert_array_equal(k_arr.desc, k_pil.desc)
    grey = extractor.extract(skimage.data.coins())
    assert len(grey) > 0 and grey.image_size == (384, 303)


def test_save_load_round_trip_and_tflite(extractor, tmp_path):
    a = _photo("rocket")
    before = extractor.extract(a)
    extractor.save(tmp_path / "keras")
    assert {f.name for f in (tmp_path / "keras").iterdir()} == {"head.keras", "delf.npz", "delf.json"}
    loaded = DelfExtractor.load(tmp_path / "keras", runtime="keras")
    assert loaded.score_threshold == extractor.score_threshold and loaded.settings == extractor.settings
    after = loaded.extract(a)
    np.testing.assert_array_equal(before.xy, after.xy)
    np.testing.assert_array_equal(before.score, after.score)
    np.testing.assert_array_equal(before.desc, after.desc)

    # TFLite runtime: the same keypoints up to float rounding; saved flatbuffer → identical after load
    lite = DelfExtractor(extractor.backbone, extractor.head, extractor.pca, image_size=extractor.image_size,
                         score_threshold=extractor.score_threshold, runtime="tflite",
                         backbone_model=extractor._backbone_model)
    k_lite = lite.extract(a)
    # one shared runtime: one interpreter, resized to each pyramid level (the last: the smallest)
    runner = lite._runner.runner
    assert isinstance(runner, TFLiteRunner) and runner.input_signature == (1, -1, -1, 3)
    assert len(runner.output_names) == 1 and runner.output_signatures[runner.output_names[0]][-1] == 112 + 1
    assert runner.input_shape == (1, *_input_shape(640, 427, SIZE, min(DEFAULT_SCALES)), 3)
    key = lambda k: {(*np.round(k.xy[i], 1), round(float(k.scale[i]), 1)): i for i in range(len(k))}  # noqa: E731
    kk, kl = key(before), key(k_lite)
    common = sorted(set(kk) & set(kl))
    assert len(common) >= 0.9 * len(before)
    i, j = [kk[c] for c in common], [kl[c] for c in common]
    np.testing.assert_allclose(k_lite.score[j], before.score[i], rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(np.einsum("nd,nd->n", k_lite.desc[j], before.desc[i]), 1, atol=1e-3)
    lite.save(tmp_path / "lite")
    assert (tmp_path / "lite" / "delf.tflite").stat().st_size > 100_000
    again = DelfExtractor.load(tmp_path / "lite", runtime="tflite").extract(a)
    np.testing.assert_array_equal(k_lite.xy, again.xy)
    np.testing.assert_array_equal(k_lite.desc, again.desc)


def test_fused_decision_with_delf_keypoints(extractor, tmp_path):
    """fusion.verify_band loads a saved DELF extractor and verifies the band's pairs with it."""
    import pandas as pd

    from nnutils.decide.fusion import Fusion, pair_features, verify_band
    from nnutils.local.verify import verify_pairs
    folder = tmp_path / "imgs"
    folder.mkdir()
    paths = {}
    for name in ("astronaut", "coffee"):
        a = _photo(name)
        for k, img in enumerate((a, a[::2, ::2])):
            paths[f"{name}{k}"] = str(folder / f"{name}{k}.jpg")
            Image.fromarray(np.ascontiguousarray(img)).save(paths[f"{name}{k}"], quality=90)
    p1 = [paths["astronaut0"], paths["coffee0"], paths["astronaut0"]]
    p2 = [paths["astronaut1"], paths["coffee1"], paths["coffee1"]]
    y = [1, 1, 0]
    kw = {"reproj_threshold": 0.03, "min_inlier_ratio": 0.3, "min_spread": 0.3}
    local = verify_pairs(p1, p2, "delf", extractor=lambda p: extractor.extract(p, score_threshold=0.0), workers=1,
                         progress=False, **kw)
    assert local.verifiable.all() and local.inliers[0] > local.inliers[2]
    X = pd.concat([pair_features(p1, p2, global_scores={"global": [0.5, 0.5, 0.5]}, local=local)] * 6, ignore_index=True)
    fz = Fusion(kind="logistic", folds=2).fit(X, np.tile(y, 6), importance_repeats=0)
    saved = extractor.save(tmp_path / "delf")
    decisions, report = verify_band(fz, p1, p2, [0.5, 0.5, 0.5], global_threshold=0.9, band=(0.0, 1.0),
                                    local_method="delf", local_model=saved, local_kw=kw)
    assert report["pairs_verified"] == 3 and decisions.shape == (3,)


def test_one_decode_gives_the_same_delf_keypoints_as_the_file(extractor, tmp_path):
    """The one pass decodes at the pyramid's side and maps keypoints to ORIGINAL pixels: the
    same keypoints as ``extract(path)``, also for a JPEG that is DCT-reduced; records round-trip."""
    from nnutils.data.images import read_any
    from nnutils.local.features_cache import ImageRecord, LocalSpec, load_record, save_record
    spec = LocalSpec("delf", delf=extractor, delf_dir=None)
    assert spec.decode_side == extractor._decode_side(DEFAULT_SCALES)
    big = tmp_path / "big.jpg"
    Image.fromarray(_photo("astronaut")).resize((1400, 1000)).save(big, quality=90)   # decoded at 1/2
    for p in (big, tmp_path / "small.png"):
        if p.suffix == ".png":
            Image.fromarray(_photo("coffee")).save(p)
        rgb, size, _ = read_any(p, spec.decode_side)
        got, ref = spec.extract(rgb, size), extractor.extract(p)
        assert got.image_size == ref.image_size == size and len(got) == len(ref) > 0
        np.testing.assert_allclose(got.xy, ref.xy, atol=1e-3)
        np.testing.assert_allclose(got.scale, ref.scale, rtol=1e-5)
        np.testing.assert_allclose(got.desc, ref.desc, atol=1e-6)
        save_record(tmp_path / "r.rec", ImageRecord(got, {"width": size[0]}))
        back = load_record(tmp_path / "r.rec").keypoints
        np.testing.assert_array_equal(back.desc, got.desc)
        assert back.kind == "delf"
    assert read_any(big, spec.decode_side)[0].shape[1] < 1400
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xffnot a jpeg")
    assert read_any(bad, spec.decode_side)[0] is None and spec.empty("unreadable (corrupt)").desc.shape[1] == extractor.dim
