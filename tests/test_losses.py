"""nnutils.models.losses: cosine-similarity losses, checked against values computed by hand.

Expected values come from explicit arithmetic (unit vectors at known angles, NumPy loops
that re-implement each definition from scratch), never from the function under test.
Needs the ``tf`` extra (keras + tensorflow; TensorFlow only for GradientTape in tests); a missing
one fails the import, it is never skipped.
"""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from nnutils.models import losses as L

EPS = 1e-7  # default BCE clip


def unit(deg):
    """2-D unit vector at ``deg`` degrees."""
    r = math.radians(deg)
    return [math.cos(r), math.sin(r)]


def units(*degs):
    return np.array([unit(d) for d in degs], dtype=np.float32)


def cosd(deg):
    """Cosine distance between two unit vectors ``deg`` degrees apart."""
    return 1.0 - math.cos(math.radians(deg))


def np_(x):
    return keras.ops.convert_to_numpy(x)


# ----------------------------------------------------------------- brute-force references


def ref_dist(emb):
    emb = np.asarray(emb, dtype=np.float64)
    n = len(emb)
    d = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            ni, nj = np.linalg.norm(emb[i]), np.linalg.norm(emb[j])
            d[i, j] = 1.0 - float(emb[i] @ emb[j]) / (ni * nj)
    return d


def ref_batch_hard(labels, emb, margin):
    d = ref_dist(emb)
    terms = []
    for a in range(len(labels)):
        pos = [d[a, p] for p in range(len(labels)) if p != a and labels[p] == labels[a]]
        neg = [d[a, n] for n in range(len(labels)) if labels[n] != labels[a]]
        if pos and neg:
            terms.append(max(max(pos) - min(neg) + margin, 0.0))
    return sum(terms) / len(terms) if terms else 0.0


def ref_semi_hard(labels, emb, margin, return_choices=False):
    d = ref_dist(emb)
    n_ = len(labels)
    terms, choices = [], {}
    for a in range(n_):
        negs = [n for n in range(n_) if labels[n] != labels[a]]
        if not negs:
            continue
        for p in range(n_):
            if p == a or labels[p] != labels[a]:
                continue
            semi = [n for n in negs if d[a, n] > d[a, p]]
            if semi:
                n = min(semi, key=lambda k: d[a, k])
            else:
                n = max(negs, key=lambda k: d[a, k])
            choices[(a, p)] = n
            terms.append(max(d[a, p] - d[a, n] + margin, 0.0))
    loss = sum(terms) / len(terms) if terms else 0.0
    return (loss, choices) if return_choices else loss


def ref_fraction(labels, emb, margin):
    d = ref_dist(emb)
    n_ = len(labels)
    total = hits = 0
    for a in range(n_):
        for p in range(n_):
            for n in range(n_):
                if p != a and labels[p] == labels[a] and labels[n] != labels[a]:
                    total += 1
                    hits += (d[a, p] - d[a, n] + margin) > 0
    return hits / total if total else 0.0


# ----------------------------------------------------------------- similarity


def test_cosine_similarity_known_angles():
    a = units(0, 0, 0, 0, 30)
    b = units(0, 90, 180, 60, 30)
    s = np_(L.cosine_similarity(a, b))
    assert s.shape == (5,)
    np.testing.assert_allclose(s, [1.0, 0.0, -1.0, 0.5, 1.0], atol=1e-6)


def test_cosine_similarity_unnormalised_and_zero_vector():
    a = np.array([[3.0, 0.0], [0.0, 0.5], [2.0, 2.0], [0.0, 0.0]], dtype=np.float32)
    b = np.array([[10.0, 0.0], [-7.0, 0.0], [0.0, 4.0], [1.0, 1.0]], dtype=np.float32)
    s = np_(L.cosine_similarity(a, b))
    np.testing.assert_allclose(s, [1.0, 0.0, math.cos(math.radians(45)), 0.0], atol=1e-6)
    # integer input is accepted too
    np.testing.assert_allclose(np_(L.cosine_similarity([[1, 0]], [[0, 2]])), [0.0], atol=1e-7)


def test_pairwise_cosine_similarity():
    x = units(0, 90, 180, 60) * np.array([[1.0], [2.0], [0.3], [5.0]], dtype=np.float32)
    expected = np.array([[math.cos(math.radians(i - j)) for j in (0, 90, 180, 60)]
                         for i in (0, 90, 180, 60)])
    s = np_(L.pairwise_cosine_similarity(x))
    assert s.shape == (4, 4)
    np.testing.assert_allclose(s, expected, atol=1e-6)
    np.testing.assert_allclose(np_(L.pairwise_cosine_distance(x)), 1.0 - expected, atol=1e-6)


def test_similarity_to_probability():
    np.testing.assert_allclose(np_(L.similarity_to_probability([-1.0, 0.0, 0.5, 1.0])),
                               [0.0, 0.5, 0.75, 1.0])


# ----------------------------------------------------------------- siamese BCE


@pytest.mark.parametrize("s, y, expected", [
    (0.0, 1, math.log(2)),
    (0.0, 0, math.log(2)),
    (1.0, 1, -math.log(1 - EPS)),   # ~1e-7: confident and right
    (1.0, 0, -math.log(EPS)),       # 16.118: confident and wrong, clipped
    (-1.0, 0, -math.log(1 - EPS)),
    (-1.0, 1, -math.log(EPS)),
    (0.5, 1, -math.log(0.75)),
    (0.5, 0, -math.log(0.25)),
])
def test_siamese_bce_values(s, y, expected):
    got = float(np_(L.siamese_bce(np.array([y]), np.array([s], dtype=np.float32))))
    assert got == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_siamese_bce_batch_mean_and_class():
    y = np.array([1, 0, 1, 0], dtype=np.float32)
    s = np.array([0.0, 0.0, 0.5, -0.5], dtype=np.float32)
    # p = 0.5, 0.5, 0.75, 0.25 -> losses log2, log2, -log .75, -log .75
    expected = (2 * math.log(2) + 2 * -math.log(0.75)) / 4
    assert float(np_(L.siamese_bce(y, s))) == pytest.approx(expected, rel=1e-6)
    # class: (B, 1) prediction, per-pair losses, sample weights
    loss = L.SiameseBCE()
    assert float(np_(loss(y, s[:, None]))) == pytest.approx(expected, rel=1e-6)
    w = np.array([1.0, 0.0, 0.0, 0.0], dtype=np.float32)
    assert float(np_(loss(y, s, sample_weight=w))) == pytest.approx(math.log(2) / 4, rel=1e-6)


# ----------------------------------------------------------------- offline triplet


def test_triplet_cosine_zero_when_negative_far():
    a, p, n = units(0), units(10), units(90)
    # d_ap = 0.0152, d_an = 1: 0.0152 - 1 + 0.2 < 0
    assert float(np_(L.triplet_cosine(a, p, n, margin=0.2))) == pytest.approx(0.0, abs=1e-7)


def test_triplet_cosine_exact_value():
    a = units(0, 0, 0)
    p = units(60, 30, 0)
    n = units(45, 90, 180)
    margin = 0.2
    terms = [
        max(cosd(60) - cosd(45) + margin, 0.0),   # 0.5 - 0.2929 + 0.2 = 0.4071
        max(cosd(30) - cosd(90) + margin, 0.0),   # 0.134 - 1 + 0.2 < 0 -> 0
        max(cosd(0) - cosd(180) + margin, 0.0),   # 0 - 2 + 0.2 -> 0
    ]
    assert terms[0] == pytest.approx(0.5 - (1 - math.sqrt(0.5)) + 0.2)
    got = float(np_(L.triplet_cosine(a, p, n, margin=margin)))
    assert got == pytest.approx(sum(terms) / 3, abs=1e-6)
    # negative closer than positive: loss exceeds the margin
    got1 = float(np_(L.triplet_cosine(units(0), units(90), units(20), margin=0.2)))
    assert got1 == pytest.approx(1.0 - cosd(20) + 0.2, abs=1e-6)


def test_triplet_cosine_is_not_the_original_sum_form():
    # max(pos + neg + alpha, 0) would be 1 + 1 + 0.2 here; the standard form gives 0.2
    a, p, n = units(0), units(90), units(90)
    assert float(np_(L.triplet_cosine(a, p, n, margin=0.2))) == pytest.approx(0.2, abs=1e-6)


def test_triplet_cosine_loss_class_stacked_convention():
    a, p, n = units(0, 0), units(60, 30), units(45, 90)
    y_pred = np.stack([a, p, n], axis=1)  # (B, 3, D)
    expected = (max(cosd(60) - cosd(45) + 0.3, 0) + max(cosd(30) - cosd(90) + 0.3, 0)) / 2
    got = float(np_(L.TripletCosineLoss(margin=0.3)(np.zeros(2), y_pred)))
    assert got == pytest.approx(expected, abs=1e-6)


# ----------------------------------------------------------------- batch-hard


# 6 points, 3 groups; group 2 is a singleton (no positive)
BH_DEGS = (0, 40, 100, 20, 70, 170)
BH_LABELS = [0, 0, 0, 1, 1, 2]


def test_batch_hard_picks_hardest_pair():
    emb = units(*BH_DEGS)
    margin = 0.2
    # anchor 0 (0 deg): hardest positive 100 deg, hardest negative 20 deg
    # anchor 3 (20 deg): only positive 70 deg (50 apart), hardest negative 0 or 40 deg (20 apart)
    # anchor 5: no positive -> excluded
    by_hand = {
        0: cosd(100) - cosd(20) + margin,
        1: cosd(60) - cosd(20) + margin,    # 40 deg: positives 0, 100 -> 60 apart; negs 20, 70 -> 20
        2: cosd(100) - cosd(30) + margin,   # 100 deg: positives 0, 40; negs 70 (30 apart)
        3: cosd(50) - cosd(20) + margin,
        4: cosd(50) - cosd(30) + margin,    # 70 deg: neg 40 or 100 -> 30 apart
    }
    expected = sum(max(v, 0.0) for v in by_hand.values()) / len(by_hand)
    assert expected == pytest.approx(ref_batch_hard(BH_LABELS, emb, margin))
    got = float(np_(L.batch_hard_triplet_loss(np.array(BH_LABELS), emb, margin)))
    assert got == pytest.approx(expected, abs=1e-6)
    # counting the singleton anchor as 0 would have given a smaller value
    assert got > expected * 5 / 6 + 1e-3


def test_batch_hard_excludes_anchors_without_positive():
    emb = units(*BH_DEGS)
    labels = np.array(BH_LABELS)
    with_singleton = float(np_(L.batch_hard_triplet_loss(labels, emb)))
    without = float(np_(L.batch_hard_triplet_loss(labels[:5], emb[:5])))
    # dropping the singleton (170 deg) changes no anchor's hardest negative here, so same mean
    assert with_singleton == pytest.approx(without, abs=1e-6)


def test_batch_hard_random_matches_bruteforce():
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(6, 3)).astype(np.float32)
    labels = np.array([0, 1, 0, 2, 1, 3])
    for margin in (0.0, 0.2, 1.0):
        got = float(np_(L.batch_hard_triplet_loss(labels, emb, margin)))
        assert got == pytest.approx(ref_batch_hard(labels, emb, margin), abs=1e-6)


# ----------------------------------------------------------------- semi-hard


def test_semi_hard_picks_semi_hard_negative():
    # group 0: 0 and 30 deg (d_ap = cosd(30) = 0.134); negatives at 10, 50, 70, 170 deg
    emb = units(0, 30, 10, 50, 70, 170)
    labels = np.array([0, 0, 1, 1, 2, 2])
    margin = 0.3
    # anchor 0: negatives at d = cosd(10)=.015 (hard, skipped), cosd(50)=.357 <- semi-hard,
    #           cosd(70), cosd(170)
    # anchor 1 (30 deg): negatives 20, 20, 40, 140 deg apart; only 40 deg is further than 30
    #           -> 50-deg point is 20 apart (hard), 70-deg point is 40 apart <- semi-hard
    # (pairs anchored at 10/50 (group 1) and 70/170 (group 2) also count)
    loss_ref, choices = ref_semi_hard(labels, emb, margin, return_choices=True)
    assert choices[(0, 1)] == 3 and choices[(1, 0)] == 4
    t01 = max(cosd(30) - cosd(50) + margin, 0.0)
    t10 = max(cosd(30) - cosd(40) + margin, 0.0)
    # group 1 (10, 50 deg, 40 apart): from 10: negs at 0 (10), 30 (20), 70 (60), 170 (160)
    #   -> semi-hard 70 deg; from 50: negs 0 (50), 30 (20), 70 (20), 170 (120) -> 0 deg
    t23 = max(cosd(40) - cosd(60) + margin, 0.0)
    t32 = max(cosd(40) - cosd(50) + margin, 0.0)
    # group 2 (70, 170 deg, 100 apart): from 70: negs 0 (70), 30 (40), 10 (60), 50 (20): none
    #   further than 100 -> fallback largest, 0 deg (70); from 170: negs 170, 140, 160, 120 apart
    #   -> semi-hard 120 (50 deg)
    t45 = max(cosd(100) - cosd(70) + margin, 0.0)
    t54 = max(cosd(100) - cosd(120) + margin, 0.0)
    expected = (t01 + t10 + t23 + t32 + t45 + t54) / 6
    assert expected == pytest.approx(loss_ref)
    got = float(np_(L.batch_semi_hard_triplet_loss(labels, emb, margin)))
    assert got == pytest.approx(expected, abs=1e-6)
    # batch-hard would take the hard negative at 10 deg instead
    assert got != pytest.approx(float(np_(L.batch_hard_triplet_loss(labels, emb, margin))), abs=1e-3)


def test_semi_hard_falls_back_to_largest_negative():
    # positive 90 deg away, every negative closer than that -> no semi-hard negative
    emb = units(0, 90, 30, 60)
    labels = np.array([0, 0, 1, 2])
    # anchor 0: negs at 30 (d .134) and 60 (d .5) deg: fallback = largest = 0.5
    # anchor 1 (90 deg): negs 60 deg (0.5) and 30 deg (0.134) apart: fallback 0.5
    # anchors 2, 3: no positive -> excluded
    expected = max(1.0 - 0.5 + 0.2, 0.0)  # = 0.7 for both pairs
    got = float(np_(L.batch_semi_hard_triplet_loss(labels, emb, 0.2)))
    assert got == pytest.approx(expected, abs=1e-6)
    assert got == pytest.approx(ref_semi_hard(labels, emb, 0.2), abs=1e-6)
    # batch-hard uses the *closest* negative (30 deg from anchor): 1 - 0.134 + 0.2
    bh = float(np_(L.batch_hard_triplet_loss(labels, emb, 0.2)))
    assert bh == pytest.approx(1.0 - cosd(30) + 0.2, abs=1e-6)


def test_semi_hard_random_matches_bruteforce():
    rng = np.random.default_rng(1)
    emb = rng.normal(size=(6, 3)).astype(np.float32)
    labels = np.array([0, 1, 0, 1, 0, 2])
    for margin in (0.0, 0.2, 1.0):
        got = float(np_(L.batch_semi_hard_triplet_loss(labels, emb, margin)))
        assert got == pytest.approx(ref_semi_hard(labels, emb, margin), abs=1e-6)


# ----------------------------------------------------------------- degenerate batches, fraction


MINING = [L.batch_hard_triplet_loss, L.batch_semi_hard_triplet_loss, L.triplet_fraction_positive]


@pytest.mark.parametrize("fn", MINING)
@pytest.mark.parametrize("labels", [[3, 3, 3, 3], [0, 1, 2, 3]], ids=["all_same", "all_distinct"])
def test_no_valid_triplet_gives_zero_not_nan(fn, labels):
    emb = units(0, 10, 20, 200)
    got = float(np_(fn(np.array(labels), emb, 0.2)))
    assert got == 0.0


@pytest.mark.parametrize("fn", MINING)
def test_unnormalised_equals_normalised(fn):
    emb = units(*BH_DEGS)
    scales = np.array([[0.01], [3.0], [1.0], [250.0], [0.5], [7.0]], dtype=np.float32)
    a = float(np_(fn(np.array(BH_LABELS), emb, 0.2)))
    b = float(np_(fn(np.array(BH_LABELS), emb * scales, 0.2)))
    assert a == pytest.approx(b, abs=1e-6)


def test_triplet_fraction_positive():
    emb = units(0, 90, 30, 120)
    labels = np.array([0, 0, 1, 1])
    # valid triplets: a in {0,1} x p (1) x n in {2,3}, and the same for group 1: 8 in all
    # anchor 0 deg, p 90: n 30 (1-.134+.2 > 0), n 120 (1-1.5+.2 < 0)
    # anchor 90, p 0: n 30 (60 apart: 1-.5+.2 > 0), n 120 (30 apart: > 0)
    # anchor 30, p 120 (90 apart, d 1): n 0 (d .134) > 0, n 90 (d .5) > 0
    # anchor 120, p 30 (d 1): n 0 (120 apart, d 1.5): 1-1.5+.2 < 0; n 90 (d .134) > 0
    assert ref_fraction(labels, emb, 0.2) == pytest.approx(6 / 8)
    assert float(np_(L.triplet_fraction_positive(labels, emb, 0.2))) == pytest.approx(6 / 8)
    rng = np.random.default_rng(2)
    emb = rng.normal(size=(7, 4)).astype(np.float32)
    labels = np.array([0, 1, 1, 0, 2, 2, 0])
    got = float(np_(L.triplet_fraction_positive(labels, emb, 0.3)))
    assert got == pytest.approx(ref_fraction(labels, emb, 0.3), abs=1e-6)


# ----------------------------------------------------------------- gradients


@pytest.mark.parametrize("fn", [L.batch_hard_triplet_loss, L.batch_semi_hard_triplet_loss])
@pytest.mark.parametrize("case", ["normal", "all_same", "all_distinct", "duplicates_and_zero"])
def test_mining_gradients_finite(fn, case):
    emb = units(*BH_DEGS)
    labels = np.array(BH_LABELS)
    if case == "all_same":
        labels = np.zeros(6, dtype=int)
    elif case == "all_distinct":
        labels = np.arange(6)
    elif case == "duplicates_and_zero":
        emb = emb.copy()
        emb[1] = emb[0]          # identical positive (d = 0)
        emb[3] = emb[0] * 2.0    # negative identical in direction (d = 0)
        emb[5] = 0.0             # all-zero embedding
    var = tf.Variable(emb)
    with tf.GradientTape() as tape:
        loss = fn(tf.constant(labels), var, 0.2)
    grad = tape.gradient(loss, var)
    assert np.isfinite(float(loss))
    assert grad is not None and np.all(np.isfinite(grad.numpy()))
    if case in ("all_same", "all_distinct"):
        assert float(loss) == 0.0 and np.all(grad.numpy() == 0.0)
    if case == "normal":
        assert np.any(grad.numpy() != 0.0)


def test_bce_and_triplet_gradients_finite():
    a = tf.Variable(units(0, 90, 180))
    b = tf.Variable(units(0, 90, 180) * 0.0)  # zero vectors
    with tf.GradientTape() as tape:
        loss = L.siamese_bce(tf.constant([1.0, 0.0, 1.0]), L.cosine_similarity(a, b)) + \
            L.triplet_cosine(a, b, a)
    grads = tape.gradient(loss, [a, b])
    assert all(np.all(np.isfinite(g.numpy())) for g in grads)


# ----------------------------------------------------------------- Keras integration


def _tower(dim_in=4, dim_out=3):
    return keras.layers.Dense(dim_out, name="embed")


def _pair_model():
    x1, x2 = keras.Input((4,)), keras.Input((4,))
    tower = _tower()
    s = keras.layers.Lambda(lambda t: L.cosine_similarity(t[0], t[1]))([tower(x1), tower(x2)])
    return keras.Model([x1, x2], s)


def _triplet_model():
    xs = [keras.Input((4,)) for _ in range(3)]
    tower = _tower()
    y = keras.layers.Lambda(lambda t: keras.ops.stack(t, axis=1))([tower(x) for x in xs])
    return keras.Model(xs, y)


def _embed_model():
    x = keras.Input((4,))
    return keras.Model(x, _tower()(x))


@pytest.mark.parametrize("loss_cls", [L.SiameseBCE, L.TripletCosineLoss,
                                      L.BatchHardTripletLoss, L.SemiHardTripletLoss])
def test_keras_train_step_and_serialisation(loss_cls):
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    b = 8
    if loss_cls is L.SiameseBCE:
        model, loss = _pair_model(), loss_cls(epsilon=1e-6)
        x = [rng.normal(size=(b, 4)).astype("float32") for _ in range(2)]
        y = np.array([1, 0] * (b // 2), dtype="float32")
    elif loss_cls is L.TripletCosineLoss:
        model, loss = _triplet_model(), loss_cls(margin=0.5)
        x = [rng.normal(size=(b, 4)).astype("float32") for _ in range(3)]
        y = np.zeros(b, dtype="float32")
    else:
        model, loss = _embed_model(), loss_cls(margin=0.5)
        x = rng.normal(size=(b, 4)).astype("float32")
        y = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=loss)
    before = model.get_layer("embed").get_weights()[0].copy()
    out = model.train_on_batch(x, y)
    assert np.isfinite(out)
    assert not np.allclose(model.get_layer("embed").get_weights()[0], before)

    config = keras.saving.serialize_keras_object(loss)
    assert config["registered_name"] == f"nnutils>{loss_cls.__name__}"
    clone = keras.saving.deserialize_keras_object(config)
    assert type(clone) is loss_cls
    assert clone.get_config() == loss.get_config()
    y_pred = model.predict(x, verbose=0)
    assert float(np_(clone(y, y_pred))) == pytest.approx(float(np_(loss(y, y_pred))), rel=1e-6)
    # registered name also resolves through keras.losses.get
    assert type(keras.losses.get(config)) is loss_cls


def test_saved_model_restores_loss(tmp_path):
    model = _embed_model()
    model.compile(optimizer="sgd", loss=L.SemiHardTripletLoss(margin=0.35))
    path = tmp_path / "m.keras"
    model.save(path)
    restored = keras.saving.load_model(path)  # no custom_objects needed
    assert isinstance(restored.loss, L.SemiHardTripletLoss)
    assert restored.loss.margin == pytest.approx(0.35)
