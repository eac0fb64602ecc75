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
from nnutils.decide.scoring import evaluate, kind_rates_markdown, negative_rates, score_against_labels
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
    a = load_square(pictures[2], 24)                   # 80×30 blue, squashed to 24×24
    assert a.shape == (24, 24, 3) and a.dtype == np.float32
    np.testing.assert_allclose(a, np.broadcast_to([0, 0, 250], a.shape), atol=1)
    seen = []

    def left_half_green(im, rng):                      # the transform runs on the PIL image before resizing
        seen.append((im.size, rng))
        out = im.copy()
        out.paste((0, 250, 0), (0, 0, im.width // 2, im.height))
        return out, "left half green"

    rng = np.random.default_rng(0)
    t = load_square(pictures[2], 24, transform=left_half_green, rng=rng)
    assert seen == [((80, 30), rng)]
    assert t.shape == (24, 24, 3)
    np.testing.assert_allclose(t[:, :10], np.broadcast_to([0, 250, 0], (24, 10, 3)), atol=1)
    np.testing.assert_allclose(t[:, 14:], np.broadcast_to([0, 0, 250], (24, 10, 3)), atol=1)
    assert load_square(pictures[3], 24) is None        # broken file
    assert load_square(pictures[3], 24, transform=left_half_green) is None and len(seen) == 1
    assert load_square(None, 24) is None


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


# Six test pairs: two positives (jpeg 0.9, crop 0.4), four negatives of which two hard
# (other_crop 0.8, night_shot 0.2: a kind no builder writes today) and two random (0.7, NaN).
Y6 = np.array([1, 1, 0, 0, 0, 0])
S6 = np.array([0.9, 0.4, 0.8, 0.7, 0.2, np.nan])
KINDS6 = pd.DataFrame({"distortion": ["jpeg", "crop", "", "", "", ""],
                       "negative_kind": ["", "", "other_crop", "random", "night_shot", "random"]})


def test_score_against_labels_scores_at_threshold_by_hand():
    m = score_against_labels(Y6, S6, threshold=0.5, kinds=KINDS6)
    # decided 1: 0.9 (tp), 0.8 and 0.7 (fp); 0.4 (fn); 0.2 and NaN (tn: an unreadable pair is 0)
    assert (m["tp"], m["fp"], m["fn"], m["tn"], m["errors"], m["n"], m["positives"]) == (1, 2, 1, 2, 3, 6, 2)
    assert m["precision"] == pytest.approx(1 / 3) and m["recall"] == 0.5 and m["accuracy"] == 0.5
    assert m["f1"] == pytest.approx(2 / (2 + 2 + 1))                       # 2tp / (2tp + fp + fn)
    assert m["macro_f1"] == pytest.approx((0.4 + 4 / 7) / 2)               # class 0: 2tn / (2tn + fn + fp) = 4/7
    # (pos, neg) orderings: 0.9 beats all four, 0.4 beats 0.2 and the NaN (ranked last): 6 of 8
    assert m["roc_auc"] == pytest.approx(6 / 8) and m["threshold"] == 0.5
    assert (m["hard_negatives"], m["hard_negative_fp"], m["hard_negative_fp_rate"]) == (2, 1, 0.5)
    assert m["fp_rate_other_crop"] == 1.0 and m["fp_rate_night_shot"] == 0.0 and m["fp_rate_random"] == 0.5
    dist, neg = m["breakdown"]["distortion"], m["breakdown"]["negative_kind"]
    assert dist.loc["jpeg", "correct"] == 1 and dist.loc["crop", "errors"] == 1 and set(dist.index) == {"jpeg", "crop"}
    assert neg.loc["random", "pairs"] == 2 and neg.loc["random", "errors"] == 1
    assert neg.loc["random", "mean_score"] == pytest.approx(0.7)          # the NaN score is left out of the mean
    assert list(neg.index)[0] == "other_crop"                              # worst kind first
    plain = {k: v for k, v in m.items() if k != "breakdown"}
    assert all(isinstance(v, (int, float)) for v in plain.values())        # JSON-ready


def test_score_against_labels_decisions_match_scores():
    pred = np.array([1, 0, 1, 1, 0, 0])        # the same decisions as S6 at 0.5
    d = score_against_labels(Y6, pred, kinds=KINDS6)
    s = score_against_labels(Y6, S6, threshold=0.5, kinds=KINDS6)
    assert "roc_auc" not in d and d["threshold"] is None
    for key in ("f1", "macro_f1", "precision", "recall", "tp", "fp", "fn", "tn", "errors", "hard_negative_fp_rate",
                "fp_rate_night_shot", "fp_rate_random"):
        assert d[key] == s[key], key
    assert d["breakdown"]["negative_kind"].loc["random", "mean_score"] == 0.5   # share decided 1
    bare = score_against_labels(Y6, pred.astype(bool))
    assert "hard_negatives" not in bare and "breakdown" not in bare and bare["f1"] == pytest.approx(0.4)
    # real data: no kinds known, no hard negatives
    empty = score_against_labels(Y6, pred, kinds=pd.DataFrame({"distortion": [""] * 6, "negative_kind": [""] * 6}))
    assert empty["hard_negatives"] == 0 and np.isnan(empty["hard_negative_fp_rate"])
    assert empty["breakdown"]["negative_kind"].empty and not any(k.startswith("fp_rate_") for k in empty)
    with pytest.raises(ValueError, match="0/1 decisions"):
        score_against_labels(Y6, S6)
    with pytest.raises(ValueError, match="one length"):
        score_against_labels(Y6, pred[:5])
    with pytest.raises(ValueError, match="6 labels"):
        score_against_labels(Y6, pred, kinds=KINDS6.iloc[:3])


def test_kind_rates_markdown_by_hand():
    pred = np.array([1, 0, 1, 1, 0, 0])        # S6 at 0.5
    text = kind_rates_markdown({"d": score_against_labels(Y6, pred, kinds=KINDS6)["breakdown"]})
    fp, recall = (" ".join(part.split()) for part in text.split("recall per distortion"))   # padding aside
    assert fp.startswith("false-positive rate per hard-negative kind (k/n, rate, 95 % Wilson interval)")
    # hard kinds only (random is not one): other_crop called the same once of once, night_shot never
    assert "| other_crop | 1/1 1.000 [0.207, 1.000] |" in fp and "| night_shot | 0/1 0.000 [0.000, 0.793] |" in fp
    assert "random" not in fp
    assert "| jpeg | 1/1 1.000 [0.207, 1.000] |" in recall and "| crop | 0/1 0.000 [0.000, 0.793] |" in recall
    assert kind_rates_markdown({}) == ""


def test_evaluate_hard_negatives_by_the_one_definition():
    pairs = KINDS6.assign(is_same=Y6).iloc[:5]        # evaluate leaves NaN scores out; drop it here
    ev = evaluate(S6[:5], pairs, threshold=0.5)
    assert ev["hard_negatives"] == 2 and ev["hard_negative_fp_rate"] == 0.5      # night_shot counts as hard
    assert ev["fp_rate_other_crop"] == 1.0 and ev["fp_rate_random"] == 1.0 and ev["fp_rate_night_shot"] == 0.0
    assert negative_rates([0, 0, 1], [1, 0, 1], ["random", "same_scene", "same_scene"]) == {
        "hard_negatives": 1, "hard_negative_fp": 0, "hard_negative_fp_rate": 0.0,
        "fp_rate_random": 1.0, "fp_rate_same_scene": 0.0}                      # a positive is never a negative
    no_hard = evaluate(np.array([0.9, 0.1]), pd.DataFrame({"is_same": [1, 0], "negative_kind": ["", "random"]}))
    assert "hard_negative_fp_rate" not in no_hard and no_hard["fp_rate_random"] == 0.0


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
