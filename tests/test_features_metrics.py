"""Feature caching by content, unreadable images, metrics against hand counts, hashes, mining."""
import os
import shutil

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import keras
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from nnutils.decide import hashes as baselines
from nnutils.decide.scoring import evaluate
from nnutils.train.features import pair_scores
from nnutils.train.mining import mine_hard_negatives
from nnutils.decide import metrics
from nnutils.train.features import compute_features, load_square


def mean_colour_model(size, scale=1.0):
    inp = keras.Input((size, size, 3))
    return keras.Model(inp, keras.layers.GlobalAveragePooling2D()(inp) * scale)


@pytest.fixture
def pictures(tmp_path):
    paths = []
    for i, c in enumerate([(250, 0, 0), (0, 250, 0), (0, 0, 250)]):
        p = tmp_path / f"img{i}.png"
        Image.new("RGB", (40 + 20 * i, 30), c).save(p)
        paths.append(str(p))
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    return paths + [str(tmp_path / "broken.jpg"), None]


def test_features_shape_values_and_unreadable(pictures):
    f, ok = compute_features(mean_colour_model(16), pictures, 16, progress=False)
    assert f.shape == (5, 3) and ok.tolist() == [True, True, True, False, False]
    assert np.allclose(f[0], [250, 0, 0], atol=1) and np.allclose(f[3], 0)


def test_cache_is_keyed_by_file_content(pictures, tmp_path):
    cache = tmp_path / "cache"
    compute_features(mean_colour_model(16), pictures[:3], 16, cache_dir=cache, key="m", progress=False)
    copy = tmp_path / "renamed_copy.png"
    shutil.copy(pictures[1], copy)
    # another model under the same key: values must come from the cache, not from this model
    f, ok = compute_features(mean_colour_model(16, scale=0.0), [str(copy), pictures[0]], 16, cache_dir=cache,
                             key="m", progress=False)
    assert ok.all() and np.allclose(f[0], [0, 250, 0], atol=1) and np.allclose(f[1], [250, 0, 0], atol=1)
    g, _ = compute_features(mean_colour_model(16, scale=0.0), [pictures[0]], 16, cache_dir=cache, key="other",
                            progress=False)
    assert np.allclose(g, 0)  # another key: recomputed


def test_load_square_squashes_and_transforms(pictures):
    a = load_square(pictures[2], 24)
    assert a.shape == (24, 24, 3) and a.dtype == np.float32
    flip = load_square(pictures[2], 24, transform=lambda im, rng: (im.rotate(180), ""))
    assert flip.shape == (24, 24, 3)
    assert load_square(pictures[3], 24) is None


def test_best_threshold_and_pair_metrics_by_hand():
    y = np.array([1, 1, 1, 0, 0, 0, 0])
    s = np.array([0.9, 0.8, 0.4, 0.7, 0.3, 0.2, 0.1])
    t, f1 = metrics.best_threshold(y, s)
    # best cut keeps 0.9, 0.8 (tp=2, fp=0, fn=1): F1 = 0.8, vs including 0.7/0.4 (tp=3, fp=1): F1 = 6/7
    assert f1 == pytest.approx(6 / 7) and 0.3 < t < 0.4
    m = metrics.pair_metrics(y, s, 0.75)
    assert (m["tp"], m["fp"], m["fn"], m["tn"]) == (2, 0, 1, 4)
    assert m["f1"] == pytest.approx(0.8) and m["precision"] == 1.0 and m["recall"] == pytest.approx(2 / 3)
    assert m["macro_f1"] == pytest.approx((0.8 + 2 * 4 / (2 * 4 + 1)) / 2)
    assert m["roc_auc"] == pytest.approx(11 / 12)  # one (pos, neg) pair mis-ordered: 0.4 < 0.7
    with pytest.raises(ValueError):
        metrics.best_threshold([1, 1], [0.2, 0.3])


def test_breakdown_by_kind():
    pairs = pd.DataFrame({"is_same": [1, 1, 0, 0], "distortion": ["crop", "crop", "", ""],
                          "negative_kind": ["", "", "other_crop", "random"]})
    b = metrics.breakdown(pairs, [0.9, 0.2, 0.8, 0.1], 0.5, "distortion")
    assert b.loc["crop", "pairs"] == 2 and b.loc["crop", "correct"] == 0.5 and b.loc["crop", "errors"] == 1
    n = metrics.breakdown(pairs, [0.9, 0.2, 0.8, 0.1], 0.5, "negative_kind")
    assert n.loc["other_crop", "correct"] == 0 and n.loc["random", "correct"] == 1


def test_perceptual_hash_similarity(pictures, tmp_path):
    big = Image.open(pictures[0]).resize((200, 150))
    big.save(tmp_path / "resized.jpg", quality=90)
    h = baselines.hash_images(pictures[:4] + [str(tmp_path / "resized.jpg")], progress=False)
    assert h[pictures[3]] is None
    s = baselines.hash_similarity(h, [pictures[0], pictures[0], pictures[3]],
                                  [str(tmp_path / "resized.jpg"), pictures[0], pictures[1]])
    assert s[1] == 1.0 and s[0] > 0.9 and np.isnan(s[2])
    with pytest.raises(ValueError):
        baselines.hash_images([], kind="md5")


class FakeBank:
    """The part of FeatureBank that mining and scoring use."""

    def __init__(self, urls):
        self.urls = urls
        self.index = {u: i for i, u in enumerate(urls)}
        self.ok = np.ones(len(urls), bool)

    def rows(self, urls):
        return np.array([self.index[u] for u in urls])


def test_mining_picks_nearest_other_group_and_scores():
    urls = ["a1", "a2", "b1", "b2", "c1"]
    groups = pd.Series([0, 0, 1, 1, 2], index=urls)
    e = np.array([[1, 0], [0.96, 0.28], [0.8, 0.6], [0, 1], [-1, 0]], "float32")
    bank = FakeBank(urls)
    mined = mine_hard_negatives(e, bank, urls, groups, per_anchor=1)
    row = mined.set_index("anchor").loc["a1"]
    assert row.positive == "a2" and row.negative == "b1" and row.similarity == pytest.approx(0.8)
    assert "c1" not in set(mined.anchor)  # no group mate: not an anchor
    pairs = pd.DataFrame({"image_url1": ["a1", "a1"], "image_url2": ["a2", "c1"], "is_same": [1, 0],
                          "negative_kind": ["", "other_crop"]})
    s = pair_scores(e, bank, pairs)
    assert s == pytest.approx([0.96, -1.0])
    ev = evaluate(s, pairs)
    assert ev["f1"] == 1.0 and ev["hard_negative_fp_rate"] == 0.0
