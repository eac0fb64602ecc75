"""Pooling layers against hand-computed values, heads, splitting a backbone, saving and loading."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import keras
import numpy as np
import pytest

from nnutils.models import heads


def fmap(values, channels=1):
    """(1, H, W, C) float32 feature map from a 2-D list (repeated over channels)."""
    a = np.asarray(values, "float32")[None, :, :, None]
    return np.repeat(a, channels, axis=-1)


def test_gem_matches_hand_computation_and_p1_is_average():
    x = fmap([[1, 2], [3, 4]])
    gem = heads.GeMPooling2D(p=3.0)
    assert np.allclose(gem(x), ((1 + 8 + 27 + 64) / 4) ** (1 / 3), atol=1e-5)
    assert np.allclose(heads.GeMPooling2D(p=1.0)(x), 2.5, atol=1e-5)


def test_grid_pooling_even_map_is_cell_averages():
    x = np.zeros((1, 4, 4, 2), "float32")
    x[0, :2, :2] = [1, 0]      # top-left cell points along channel 0
    x[0, :2, 2:] = [0, 3]      # top-right along channel 1
    x[0, 2:, :] = [2, 2]       # bottom cells diagonal
    out = np.asarray(heads.GridPooling2D((2,))(x))[0].reshape(4, 2)
    s = 1 / np.sqrt(2)
    assert np.allclose(out, [[1, 0], [0, 1], [s, s], [s, s]], atol=1e-5)  # each cell L2-normalised


def test_grid_pooling_odd_map_shares_the_middle_row_by_area():
    # 3x3 map, 2x2 grid: cell (0,0) covers rows/cols [0, 1.5): weights 1 and 0.5 -> 2/3, 1/3.
    v = np.arange(9, dtype="float32").reshape(3, 3)
    x = np.stack([v, np.ones_like(v)], axis=-1)[None]  # channel 1 = constant 1
    out = np.asarray(heads.GridPooling2D((2,))(x))[0].reshape(4, 2)
    w = np.array([2 / 3, 1 / 3])
    expected_c0 = w @ v[:2, :2] @ w  # weighted mean of the top-left 2x2 block
    cell = np.array([expected_c0, 1.0])
    assert np.allclose(out[0], cell / np.linalg.norm(cell), atol=1e-5)


def test_pyramid_shapes_and_unknown_pooling():
    x = np.random.default_rng(0).random((2, 6, 6, 8)).astype("float32")
    assert heads.make_pooling("pyramid")(x).shape == (2, 5 * 8)
    assert heads.make_pooling("grid3-gem")(x).shape == (2, 9 * 8)
    r = np.asarray(heads.RMACPooling2D()(x))
    assert r.shape == (2, 8) and np.allclose(np.linalg.norm(r, axis=1), 1, atol=1e-5)
    with pytest.raises(ValueError, match="pooling must be"):
        heads.make_pooling("avg")


@pytest.mark.parametrize("pooling", ["gem", "grid2", "rmac", "gap"])
def test_head_gives_unit_vectors_and_round_trips(tmp_path, pooling):
    head = heads.build_head((4, 4, 16), pooling=pooling, embedding_dim=8, hidden_dim=16)
    x = np.random.default_rng(1).random((3, 4, 4, 16)).astype("float32")
    y = np.asarray(head.predict(x, verbose=0))
    assert y.shape == (3, 8) and np.allclose(np.linalg.norm(y, axis=1), 1, atol=1e-5)
    head.save(tmp_path / "h.keras")
    again = keras.saving.load_model(tmp_path / "h.keras")
    assert np.allclose(again.predict(x, verbose=0), y, atol=1e-6)


def test_split_backbone_recomposes_exactly():
    from nnutils.models.efficientnet_lite import build_efficientnet_lite0
    bb = build_efficientnet_lite0((64, 64, 3), weights=None)
    trunk, rest = heads.split_backbone(bb, "block5c_add")
    x = np.random.default_rng(2).random((2, 64, 64, 3)).astype("float32") * 255
    assert np.allclose(rest(trunk(x)), bb(x), atol=1e-5)
    assert heads.split_backbone(bb, None) == (bb, None)


def test_pair_and_triplet_models_compute_cosines():
    head = heads.build_head((8,), embedding_dim=4, hidden_dim=8, dropout=0)
    a, b = (np.random.default_rng(s).random((5, 8)).astype("float32") for s in (3, 4))
    ea, eb = head.predict(a, verbose=0), head.predict(b, verbose=0)
    pair = heads.build_pair_model(head)
    assert np.allclose(pair.predict([a, b], verbose=0), np.sum(ea * eb, axis=1), atol=1e-5)
    trip = heads.build_triplet_model(head).predict([a, b, a], verbose=0)
    assert trip.shape == (5, 3, 4) and np.allclose(trip[:, 0], ea, atol=1e-5)
