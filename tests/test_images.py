"""Tests for nnutils.data.images on a corpus of good and bad files written at test time."""

from __future__ import annotations

import io
import pickle
import struct
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageFile, PngImagePlugin

from nnutils.data.images import DEFAULT_MAX_PIXELS, REASONS, ImageInfo, UnreadableImageError, file_digest, inspect_image, inspect_images, open_image, pixel_digest, read_rgb, to_rgb, try_read_rgb
from tests.image_corpus import READABLE_CASES, UNREADABLE_CASES


def _assert_pixels(arr, exp):
    for (x, y), rgb in exp.pixels.items():
        got = arr[y, x].astype(int)
        diff = np.abs(got - np.array(rgb)).max()
        assert diff <= exp.tol, f"pixel ({x},{y}) = {tuple(got)}, expected {rgb} ±{exp.tol}"


# --------------------------------------------------------------------------- #
# The corpus, case by case
# --------------------------------------------------------------------------- #
def test_corpus_covers_every_case(bad_image_corpus):
    assert set(bad_image_corpus) == set(READABLE_CASES) | set(UNREADABLE_CASES)
    for _, exp in bad_image_corpus.values():
        assert exp.reason is None or exp.reason in REASONS


@pytest.mark.parametrize("case", READABLE_CASES)
def test_readable_case(bad_image_corpus, case):
    path, exp = bad_image_corpus[case]
    arr = read_rgb(path, **exp.read_kwargs)
    assert arr.dtype == np.uint8
    assert arr.shape == exp.shape
    assert arr.flags["C_CONTIGUOUS"] and arr.flags["WRITEABLE"]
    _assert_pixels(arr, exp)

    img = open_image(str(path))  # str paths work too
    assert img.mode == "RGB"
    assert img.size == (exp.shape[1], exp.shape[0])
    np.testing.assert_array_equal(np.asarray(img), arr)

    arr2, reason = try_read_rgb(path)
    assert reason is None
    np.testing.assert_array_equal(arr2, arr)


@pytest.mark.parametrize("case", UNREADABLE_CASES)
def test_unreadable_case(bad_image_corpus, case):
    path, exp = bad_image_corpus[case]
    with pytest.raises(UnreadableImageError) as info:
        open_image(path, **exp.read_kwargs)
    err = info.value
    assert err.reason == exp.reason
    assert err.path == str(path)
    assert str(path) in str(err) and exp.reason in str(err)

    with pytest.raises(UnreadableImageError) as info2:
        read_rgb(path, **exp.read_kwargs)
    assert info2.value.reason == exp.reason

    assert try_read_rgb(path, **exp.read_kwargs) == (None, exp.reason)


def test_rgba_transparent_region_is_white(bad_image_corpus):
    path, _ = bad_image_corpus["rgba_png"]
    arr = read_rgb(path)
    assert (arr[:, 20:] == 255).all()  # hidden blue under alpha=0 must not leak
    assert (arr[:, :20] == [255, 0, 0]).all()


def test_palette_transparency_is_white(bad_image_corpus):
    path, _ = bad_image_corpus["p_png_transparent"]
    arr = read_rgb(path)
    assert (arr[:, 20:] == 255).all()
    assert (arr[:, :10] == [255, 0, 0]).all()
    assert (arr[:, 10:20] == [0, 255, 0]).all()


def test_exif_orientation_6_rotates_content(bad_image_corpus):
    path, _ = bad_image_corpus["exif_rot6_jpeg"]
    with Image.open(path) as raw:
        assert raw.size == (64, 32)  # stored landscape
    arr = read_rgb(path).astype(int)
    assert arr.shape == (64, 32, 3)  # displayed portrait: width/height swapped
    top, bottom = arr[:28].mean(axis=(0, 1)), arr[36:].mean(axis=(0, 1))
    assert top[0] > 240 and top[2] < 15  # red left half ended up on top
    assert bottom[2] > 240 and bottom[0] < 15


def test_animated_gif_gives_first_frame(bad_image_corpus):
    path, _ = bad_image_corpus["animated_gif"]
    assert (read_rgb(path) == [255, 0, 0]).all()
    assert inspect_image(path).n_frames == 3


def test_i16_policy_is_shift_by_8(bad_image_corpus):
    path, _ = bad_image_corpus["i16_png"]
    arr = read_rgb(path)
    np.testing.assert_array_equal(arr[0, [0, 10, 20], 0], [255, 128, 0])
    assert (arr[..., 0] == arr[..., 1]).all() and (arr[..., 1] == arr[..., 2]).all()


# --------------------------------------------------------------------------- #
# Other failure modes
# --------------------------------------------------------------------------- #
def test_truncated_and_corrupt_png(tmp_path):
    # few distinct values: compressible, so IDAT holds a real deflate stream
    rng = np.random.default_rng(1)
    pixels = (rng.integers(0, 4, (128, 128, 3)) * 60).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG")
    data = buf.getvalue()
    trunc = tmp_path / "trunc.png"
    trunc.write_bytes(data[: int(len(data) * 0.6)])
    assert try_read_rgb(trunc) == (None, "truncated")

    bad = bytearray(data)
    mid = len(bad) // 2
    bad[mid : mid + 64] = rng.integers(0, 256, 64, dtype=np.uint8).tobytes()
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(bytes(bad))
    assert try_read_rgb(corrupt) == (None, "corrupt")
    # a decode error must not be hidden by a later metadata call that re-loads
    assert inspect_image(corrupt).reason == "corrupt"


@pytest.mark.parametrize("lossless", [False, True])
def test_truncated_and_corrupt_webp(tmp_path, lossless):
    """A WebP cut short is "truncated" (its RIFF header declares more bytes than it has),
    not "corrupt" as Pillow's "could not create decoder object" alone would suggest."""
    rng = np.random.default_rng(2)
    pixels = (rng.integers(0, 4, (96, 128, 3)) * 60).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "WEBP", quality=80, lossless=lossless)
    data = buf.getvalue()
    assert int.from_bytes(data[4:8], "little") + 8 == len(data)
    for frac in (0.3, 0.5, 0.9):
        trunc = tmp_path / f"trunc{frac}.webp"
        trunc.write_bytes(data[: int(len(data) * frac)])
        assert try_read_rgb(trunc) == (None, "truncated")
        assert inspect_image(trunc).reason == "truncated"

    # whole length, garbage payload: the header is honest, the decoder fails -> corrupt
    bad = bytearray(data)
    bad[20:] = bytes(len(bad) - 20)
    corrupt = tmp_path / "corrupt.webp"
    corrupt.write_bytes(bytes(bad))
    assert try_read_rgb(corrupt) == (None, "corrupt")


def test_missing_parent_directory_is_missing(tmp_path):
    f = tmp_path / "file.txt"
    f.write_text("x")
    assert try_read_rgb(f / "child.png") == (None, "missing")


def test_own_limit_does_not_depend_on_pil_global(bad_image_corpus, monkeypatch):
    path, exp = bad_image_corpus["bomb"]
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    assert try_read_rgb(path, **exp.read_kwargs) == (None, "too large")
    assert try_read_rgb(path)[1] is None


def test_pil_bomb_error_is_reported_as_too_large(bad_image_corpus, monkeypatch):
    path, _ = bad_image_corpus["bomb"]
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # PIL raises above 200
    with pytest.raises(UnreadableImageError) as info:
        open_image(path, max_pixels=None)
    assert info.value.reason == "too large"


def test_max_pixels_default():
    assert DEFAULT_MAX_PIXELS == 64_000_000


def test_pil_global_state_unchanged(bad_image_corpus):
    before = (ImageFile.LOAD_TRUNCATED_IMAGES, Image.MAX_IMAGE_PIXELS)
    for path, exp in bad_image_corpus.values():
        try_read_rgb(path, **exp.read_kwargs)
        inspect_image(path)
    read_rgb(bad_image_corpus["big_jpeg"][0], size=(50, 40))
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    assert (ImageFile.LOAD_TRUNCATED_IMAGES, Image.MAX_IMAGE_PIXELS) == before


def test_error_is_picklable():
    err = UnreadableImageError("/x/y.jpg", "truncated", "detail")
    back = pickle.loads(pickle.dumps(err))
    assert (back.path, back.reason, str(back)) == (err.path, err.reason, str(err))


def test_concurrent_reads_agree(bad_image_corpus):
    items = list(bad_image_corpus.values()) * 4
    serial = [try_read_rgb(p, **e.read_kwargs)[1] for p, e in items]
    with ThreadPoolExecutor(8) as pool:
        threaded = list(pool.map(lambda pe: try_read_rgb(pe[0], **pe[1].read_kwargs)[1], items))
    assert threaded == serial == [e.reason for _, e in items]


# --------------------------------------------------------------------------- #
# to_rgb on in-memory images
# --------------------------------------------------------------------------- #
def _px(img):
    return tuple(np.asarray(to_rgb(img))[0, 0].tolist())


def test_to_rgb_returns_rgb_for_rgb():
    img = Image.new("RGB", (3, 2), (1, 2, 3))
    assert to_rgb(img) is img


@pytest.mark.parametrize(
    "mode, value, expected",
    [
        ("1", 1, (255, 255, 255)),
        ("1", 0, (0, 0, 0)),
        ("L", 77, (77, 77, 77)),
        ("LA", (77, 0), (255, 255, 255)),
        ("LA", (77, 255), (77, 77, 77)),
        ("RGBA", (10, 20, 30, 0), (255, 255, 255)),
        ("RGBA", (10, 20, 30, 255), (10, 20, 30)),
        ("RGBA", (0, 0, 0, 128), (127, 127, 127)),
        ("RGBa", (0, 0, 0, 0), (255, 255, 255)),
        ("RGBa", (100, 50, 0, 255), (100, 50, 0)),
        ("La", (0, 0), (255, 255, 255)),
        ("La", (60, 255), (60, 60, 60)),
        ("PA", (0, 0), (255, 255, 255)),
        ("CMYK", (0, 0, 0, 0), (255, 255, 255)),
        ("CMYK", (0, 255, 255, 0), (255, 0, 0)),
        ("YCbCr", (255, 128, 128), (255, 255, 255)),
        ("I;16", 65535, (255, 255, 255)),
        ("I;16", 256, (1, 1, 1)),
        ("I;16B", 32768, (128, 128, 128)),
        ("I;16L", 512, (2, 2, 2)),
        ("I", 200, (200, 200, 200)),
        ("I", 65535, (255, 255, 255)),
        ("F", 1.0, (255, 255, 255)),
        ("F", 0.5, (128, 128, 128)),
        ("F", 200.0, (200, 200, 200)),
    ],
)
def test_to_rgb_modes(mode, value, expected):
    img = Image.new(mode, (2, 2), value)
    out = to_rgb(img)
    assert out.mode == "RGB" and out.size == (2, 2)
    got = np.asarray(out)[0, 0].astype(int)
    assert np.abs(got - np.array(expected)).max() <= 1, (mode, value, tuple(got))


def test_to_rgb_palette_with_transparency_and_background():
    img = Image.new("P", (2, 1), 0)
    img.putpalette([255, 0, 0, 0, 255, 0])
    img.putpixel((1, 0), 1)
    img.info["transparency"] = 1
    out = np.asarray(to_rgb(img, background=(0, 0, 0)))
    assert out[0, 0].tolist() == [255, 0, 0]
    assert out[0, 1].tolist() == [0, 0, 0]  # transparent -> custom background


def test_to_rgb_wide_range_int_and_float_are_stretched():
    a = np.array([[-1000, 0, 1000]], dtype=np.int32)
    out = np.asarray(to_rgb(Image.fromarray(a)))[..., 0]
    assert out.tolist() == [[0, 128, 255]]
    f = np.array([[-1.0, np.nan, 3.0]], dtype=np.float32)
    out = np.asarray(to_rgb(Image.fromarray(f)))[..., 0]
    assert out[0, 0] == 0 and out[0, 2] == 255 and out[0, 1] == 64  # NaN -> 0 -> (0+1)/4


def test_to_rgb_rejects_bad_background():
    with pytest.raises(ValueError):
        to_rgb(Image.new("RGBA", (1, 1)), background=(0, 0))


# --------------------------------------------------------------------------- #
# inspect_image / inspect_images
# --------------------------------------------------------------------------- #
def test_inspect_image_never_raises_and_reports(bad_image_corpus):
    for name, (path, exp) in bad_image_corpus.items():
        info = inspect_image(path, **exp.read_kwargs)
        assert isinstance(info, ImageInfo)
        assert info.path == str(path)
        assert info.readable is (exp.reason is None), name
        assert info.reason == exp.reason, name
        assert info.format == exp.format, name
        assert info.mode == exp.mode, name
        assert info.n_frames == exp.n_frames, name
        assert info.has_alpha == exp.has_alpha, name
        assert info.exif_orientation == exp.exif_orientation, name
        if exp.shape is not None:
            assert (info.height, info.width) == exp.shape[:2], name
        if path.is_file():
            assert info.file_bytes == path.stat().st_size, name
        else:
            assert info.file_bytes is None, name


def test_inspect_image_header_size_survives_decode_failure(bad_image_corpus):
    info = inspect_image(bad_image_corpus["truncated_jpeg"][0])
    assert not info.readable and (info.width, info.height) == (256, 192)


def test_inspect_image_odd_inputs_do_not_raise():
    for bad in ("", "\0nul", 12345):
        info = inspect_image(bad)
        assert info.readable is False and info.reason is not None


def test_inspect_images_dataframe(bad_image_corpus):
    paths = [p for p, _ in bad_image_corpus.values()]
    df = inspect_images(paths, progress=False)
    assert isinstance(df, pd.DataFrame)
    assert list(df.columns) == [
        "path", "readable", "reason", "format", "mode", "width", "height",
        "n_frames", "file_bytes", "exif_orientation", "has_alpha",
    ]
    assert df["path"].tolist() == [str(p) for p in paths]
    # the bomb is readable under the default limit
    assert int(df["readable"].sum()) == len(READABLE_CASES) + 1
    assert inspect_images([], progress=False).shape == (0, 11)


# --------------------------------------------------------------------------- #
# Digests
# --------------------------------------------------------------------------- #
def test_lossless_resave_keeps_pixel_digest(bad_image_corpus, tmp_path):
    src, _ = bad_image_corpus["rgba_png"]
    copy = tmp_path / "resaved.png"
    meta = PngImagePlugin.PngInfo()
    meta.add_text("comment", "re-saved")
    with Image.open(src) as im:
        im.save(copy, "PNG", compress_level=1, pnginfo=meta)
    assert file_digest(copy) != file_digest(src)
    assert pixel_digest(copy) == pixel_digest(src)
    assert pixel_digest(read_rgb(src)) == pixel_digest(src)
    assert pixel_digest(open_image(src)) == pixel_digest(src)


def test_digests_are_sha1_and_shape_aware(bad_image_corpus):
    path, _ = bad_image_corpus["webp"]
    assert len(file_digest(path)) == 40 and len(pixel_digest(path)) == 40
    assert file_digest(path) == file_digest(Path(str(path)))
    a = np.zeros((4, 6, 3), np.uint8)
    assert pixel_digest(a) != pixel_digest(a.reshape(6, 4, 3))
    assert pixel_digest(a[:, ::-1]) == pixel_digest(a)  # non-contiguous ok
    with pytest.raises(ValueError):
        pixel_digest(np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError):
        pixel_digest(np.zeros((4, 4, 3), np.float32))


def test_digest_errors(bad_image_corpus):
    with pytest.raises(UnreadableImageError) as info:
        file_digest(bad_image_corpus["missing"][0])
    assert info.value.reason == "missing"
    with pytest.raises(UnreadableImageError) as info:
        file_digest(bad_image_corpus["directory"][0])
    assert info.value.reason == "is a directory"
    with pytest.raises(UnreadableImageError) as info:
        pixel_digest(bad_image_corpus["truncated_jpeg"][0])
    assert info.value.reason == "truncated"


# --------------------------------------------------------------------------- #
# Draft decoding and resizing
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("want", [(100, 75), (150, 100), (90, 90), (800, 600), (1000, 1000)])
def test_draft_returns_at_least_requested_size(bad_image_corpus, want):
    path, _ = bad_image_corpus["big_jpeg"]
    img = open_image(path, draft_size=want)
    w, h = img.size
    assert img.mode == "RGB"
    assert (w >= want[0] and h >= want[1]) or (w, h) == (800, 600)
    if want[0] <= 400 and want[1] <= 300:
        assert (w, h) < (800, 600)  # the draft actually reduced the decode


def test_draft_uses_exact_dct_scales(bad_image_corpus):
    path, _ = bad_image_corpus["big_jpeg"]
    assert open_image(path, draft_size=(100, 75)).size == (100, 75)  # 1/8
    assert open_image(path, draft_size=(150, 100)).size == (200, 150)  # 1/4
    arr = np.asarray(open_image(path, draft_size=(100, 75))).astype(int)
    assert np.abs(arr[37, 10] - [255, 0, 0]).max() <= 12
    assert np.abs(arr[37, 90] - [0, 0, 255]).max() <= 12


def test_draft_size_is_in_displayed_coordinates(bad_image_corpus):
    path, _ = bad_image_corpus["exif_rot6_jpeg"]  # displayed 32 x 64
    img = open_image(path, draft_size=(16, 32))
    assert img.size == (16, 32)
    arr = np.asarray(img).astype(int)
    assert arr[4, 8, 0] > 240 and arr[28, 8, 2] > 240  # still red on top


def test_draft_ignored_for_non_jpeg(bad_image_corpus):
    path, exp = bad_image_corpus["webp"]
    assert open_image(path, draft_size=(2, 2)).size == (exp.shape[1], exp.shape[0])


def test_read_rgb_size(bad_image_corpus):
    path, _ = bad_image_corpus["big_jpeg"]
    arr = read_rgb(path, size=(64, 40))
    assert arr.shape == (40, 64, 3) and arr.dtype == np.uint8
    assert np.abs(arr[20, 5].astype(int) - [255, 0, 0]).max() <= 12
    assert np.abs(arr[20, 60].astype(int) - [0, 0, 255]).max() <= 12
    up = read_rgb(bad_image_corpus["webp"][0], size=(40, 24))
    assert up.shape == (24, 40, 3)
    with pytest.raises(ValueError):
        read_rgb(path, size=(0, 10))


def test_non_path_inputs_are_missing():
    for bad in (None, float("nan")):
        with pytest.raises(UnreadableImageError) as info:
            open_image(bad)
        assert info.value.reason == "missing"


# --------------------------------------------------------------------------- #
# Formats Pillow loads whose frame 0 is not where Pillow opens them
# --------------------------------------------------------------------------- #
def _psd_bytes(composite: np.ndarray, layers: list[tuple[tuple[int, int], np.ndarray]]) -> bytes:
    """A minimal Photoshop file, 8-bit, raw (uncompressed) channels.

    ``composite`` is the merged image, uint8 (H, W, 3) or (H, W, 4) (RGB or RGBA);
    each layer is ``((left, top), uint8 (h, w, 3) RGB pixels)``.  Layout per Adobe's
    file-format spec: header, colour-mode data, image resources, layer and mask
    information (layer records, then each layer's channel data), merged image data.
    """
    h, w, c = composite.shape
    out = b"8BPS" + struct.pack(">H6xHIIHH", 1, c, h, w, 8, 3)  # version 1, RGB mode
    out += struct.pack(">I", 0) + struct.pack(">I", 0)         # no colour data, no resources
    records, data = b"", b""
    for k, ((left, top), px) in enumerate(layers):
        lh, lw, _ = px.shape
        name = f"layer {k}".encode("latin-1")
        pascal = bytes([len(name)]) + name
        pascal += b"\0" * (-len(pascal) % 4)
        extra = struct.pack(">II", 0, 0) + pascal                 # no mask, no blending ranges
        records += struct.pack(">iiiiH", top, left, top + lh, left + lw, 3)
        records += b"".join(struct.pack(">hI", ch, 2 + lh * lw) for ch in range(3))
        records += b"8BIMnorm" + bytes([255, 0, 0, 0]) + struct.pack(">I", len(extra)) + extra
        data += b"".join(struct.pack(">H", 0) + px[..., ch].tobytes() for ch in range(3))
    layer_info = struct.pack(">h", len(layers)) + records + data
    layer_info += b"\0" * (len(layer_info) % 2)
    section = struct.pack(">I", len(layer_info)) + layer_info + struct.pack(">I", 0)
    out += struct.pack(">I", len(section)) + section
    out += struct.pack(">H", 0) + b"".join(composite[..., ch].tobytes() for ch in range(c))
    return out


def _psd_pixels():
    rng = np.random.default_rng(3)
    composite = rng.integers(0, 256, (12, 20, 3), dtype=np.uint8)
    layers = [((0, 0), np.full((12, 20, 3), (10, 200, 30), np.uint8)),
              ((4, 2), np.full((5, 6, 3), (250, 5, 120), np.uint8))]   # even sizes: Pillow pads odd ones
    return composite, layers


def test_layered_psd_gives_the_merged_composite(tmp_path):
    composite, layers = _psd_pixels()
    path = tmp_path / "layered.psd"
    path.write_bytes(_psd_bytes(composite, layers))
    with Image.open(path) as im:                      # Pillow really reads it: 2 layers (how it decodes a
        assert im.format == "PSD" and im.n_frames == 2 and im.size == (20, 12)   # layer's channels varies by version)
    np.testing.assert_array_equal(read_rgb(path), composite)
    info = inspect_image(path)
    assert info.readable and info.format == "PSD" and (info.width, info.height) == (20, 12)
    assert info.n_frames == 2


def test_flat_and_rgba_psd(tmp_path):
    composite, _ = _psd_pixels()
    flat = tmp_path / "flat.psd"
    flat.write_bytes(_psd_bytes(composite, []))
    np.testing.assert_array_equal(read_rgb(flat), composite)

    alpha = np.zeros((12, 20, 1), np.uint8)
    alpha[:, 10:] = 255                                # left half transparent
    rgba = tmp_path / "rgba.psd"
    rgba.write_bytes(_psd_bytes(np.concatenate([composite, alpha], axis=2), []))
    got = read_rgb(rgba)
    assert (got[:, :10] == 255).all()                  # composited on white
    np.testing.assert_array_equal(got[:, 10:], composite[:, 10:])


def test_spider_gives_its_grey_pixels(tmp_path):
    rng = np.random.default_rng(4)
    grey = rng.integers(0, 256, (9, 14), dtype=np.uint8)
    path = tmp_path / "image.spi"
    Image.fromarray(grey).convert("F").save(path, format="SPIDER")
    with Image.open(path) as im:
        assert im.format == "SPIDER" and im.mode == "F"
    got = read_rgb(path)
    assert got.shape == (9, 14, 3)
    np.testing.assert_array_equal(got, np.repeat(grey[..., None], 3, axis=2))
    assert inspect_image(path).readable


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # Pillow's IM format is deprecated
def test_every_format_pillow_writes_and_reads_gives_an_image(tmp_path):
    """Every format this Pillow can both save and load back is read, with Pillow's pixels."""
    Image.init()
    rgb = Image.fromarray((np.random.default_rng(5).integers(0, 4, (16, 24, 3)) * 80).astype(np.uint8))
    tried = []
    for fmt in sorted(Image.SAVE):
        ext = next((e for e, f in Image.EXTENSION.items() if f == fmt), ".bin")
        path = tmp_path / f"x{ext}"
        for img in (rgb, rgb.convert("P"), rgb.convert("L"), rgb.convert("1")):
            try:
                img.save(path, format=fmt)
                with Image.open(path) as im:
                    im.load()
                    want = to_rgb(im)
                break
            except Exception:  # this mode cannot be written, or Pillow cannot load it back
                continue
        else:
            continue
        got = read_rgb(path)
        np.testing.assert_array_equal(got, np.asarray(want), err_msg=fmt)
        tried.append(fmt)
    assert {"BMP", "GIF", "JPEG", "PNG", "SPIDER", "TIFF", "WEBP", "PCX", "TGA"} <= set(tried)
