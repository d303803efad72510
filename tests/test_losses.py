"""jnn.losses against NumPy, Optax and the first-iteration loss facts."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jnn import losses

B, C = 6, 5


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    logits = rng.normal(scale=3.0, size=(B, C)).astype(np.float32)
    labels = rng.integers(0, C, size=B).astype(np.int32)
    return logits, labels


def np_softmax_ce(logits, labels):
    z = logits.astype(np.float64)
    return np.log(np.exp(z).sum(-1)) - z[np.arange(len(labels)), labels]


def np_weston_watkins(scores, labels, margin=1.0):
    out = np.zeros(len(labels))
    for i, (s, y) in enumerate(zip(scores.astype(np.float64), labels, strict=True)):
        out[i] = sum(max(0.0, s[j] - s[y] + margin) for j in range(len(s)) if j != y)
    return out


def np_bce(logits, targets):
    p = 1 / (1 + np.exp(-logits.astype(np.float64)))
    return (-(targets * np.log(p) + (1 - targets) * np.log(1 - p))).sum(-1)


# ----- softmax cross-entropy -----


def test_softmax_ce_matches_numpy_and_optax(data):
    logits, labels = data
    got = losses.softmax_cross_entropy(logits, labels)
    chex.assert_shape(got, (B,))
    chex.assert_trees_all_close(np.asarray(got), np_softmax_ce(logits, labels), rtol=1e-5)
    chex.assert_trees_all_close(
        got, optax.softmax_cross_entropy_with_integer_labels(logits, labels), rtol=1e-6
    )


def test_softmax_ce_is_log_c_at_zero_logits():
    for c in (2, 10, 1000):
        got = losses.softmax_cross_entropy(jnp.zeros((3, c)), jnp.zeros(3, jnp.int32))
        chex.assert_trees_all_close(got, np.full(3, math.log(c), np.float32), rtol=1e-6)


def test_softmax_ce_is_stable_for_huge_logits():
    logits = jnp.asarray([[1000.0, 0.0, -1000.0], [-1e30, 1e30, 0.0]])
    got = losses.softmax_cross_entropy(logits, jnp.asarray([0, 0]))
    chex.assert_tree_all_finite(got)
    chex.assert_trees_all_close(got, np.array([0.0, 2e30], np.float32), rtol=1e-6)
    g = jax.grad(lambda z: losses.softmax_cross_entropy(z, jnp.asarray([0, 0])).sum())(logits)
    chex.assert_tree_all_finite(g)


def test_softmax_ce_grad_is_softmax_minus_onehot(data):
    logits, labels = data
    g = jax.grad(lambda z: losses.softmax_cross_entropy(z, labels).sum())(jnp.asarray(logits))
    z = logits.astype(np.float64)
    p = np.exp(z - z.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    p[np.arange(B), labels] -= 1
    chex.assert_trees_all_close(np.asarray(g), p, atol=1e-6)


# ----- Weston–Watkins hinge -----


def test_hinge_matches_numpy(data):
    scores, labels = data
    for margin in (1.0, 0.5):
        got = losses.multiclass_hinge(scores, labels, margin=margin)
        chex.assert_shape(got, (B,))
        chex.assert_trees_all_close(
            np.asarray(got), np_weston_watkins(scores, labels, margin), rtol=1e-5, atol=1e-6
        )


def test_hinge_is_c_minus_one_at_zero_scores_unlike_optax():
    labels = jnp.asarray([0, 3, 9])
    got = losses.multiclass_hinge(jnp.zeros((3, 10)), labels)
    chex.assert_trees_all_close(got, np.full(3, 9.0, np.float32))
    chex.assert_trees_all_close(
        losses.multiclass_hinge(jnp.zeros((3, 10)), labels, margin=2.0),
        np.full(3, 18.0, np.float32),
    )
    # Optax's multiclass hinge is Crammer–Singer: the margin (1) at zero scores.
    assert np.allclose(optax.losses.multiclass_hinge_loss(jnp.zeros((3, 10)), labels), 1.0)


def test_hinge_is_zero_when_margins_are_met():
    scores = jnp.asarray([[5.0, 1.0, 3.9], [0.0, 0.0, 0.0]])
    got = losses.multiclass_hinge(scores, jnp.asarray([0, 1]))
    chex.assert_trees_all_close(got, np.array([0.0, 2.0], np.float32))


def test_hinge_grad(data):
    scores, labels = data
    g = jax.grad(lambda s: losses.multiclass_hinge(s, labels).sum())(jnp.asarray(scores))
    s = scores.astype(np.float64)
    want = np.zeros_like(s)
    for i, y in enumerate(labels):
        active = (s[i] - s[i, y] + 1 > 0) & (np.arange(C) != y)
        want[i, active] = 1.0
        want[i, y] = -active.sum()
    chex.assert_trees_all_close(np.asarray(g), want)


# ----- sigmoid binary cross-entropy -----


def test_bce_matches_numpy_and_optax(data):
    logits, _ = data
    targets = (np.random.default_rng(1).random((B, C)) > 0.5).astype(np.float32)
    got = losses.sigmoid_binary_cross_entropy(logits, targets)
    chex.assert_shape(got, (B,))
    chex.assert_trees_all_close(np.asarray(got), np_bce(logits, targets), rtol=1e-5)
    want = optax.sigmoid_binary_cross_entropy(logits, targets).sum(-1)
    chex.assert_trees_all_close(got, want, rtol=1e-5)
    # bool and soft targets
    chex.assert_trees_all_close(
        losses.sigmoid_binary_cross_entropy(logits, targets.astype(bool)), got
    )
    soft = np.full((B, C), 0.3, np.float32)
    chex.assert_trees_all_close(
        np.asarray(losses.sigmoid_binary_cross_entropy(logits, soft)),
        np_bce(logits, soft),
        rtol=1e-5,
    )


def test_bce_is_log2_per_attribute_at_zero_logits():
    a = 7
    got = losses.sigmoid_binary_cross_entropy(jnp.zeros((4, a)), jnp.ones((4, a)))
    chex.assert_trees_all_close(got, np.full(4, a * math.log(2), np.float32), rtol=1e-6)


def test_bce_is_stable_for_huge_logits():
    got = losses.sigmoid_binary_cross_entropy(jnp.asarray([[100.0, -100.0]]), jnp.asarray([[0, 1]]))
    chex.assert_trees_all_close(got, np.array([200.0], np.float32), rtol=1e-6)


# ----- L2 regression loss -----


def test_l2_loss_is_sum_of_squares_per_example():
    rng = np.random.default_rng(2)
    pred = rng.normal(size=(B, 3, 2)).astype(np.float32)
    target = rng.normal(size=(B, 3, 2)).astype(np.float32)
    got = losses.l2_loss(pred, target)
    chex.assert_shape(got, (B,))
    want = ((pred.astype(np.float64) - target) ** 2).reshape(B, -1).sum(-1)
    chex.assert_trees_all_close(np.asarray(got), want, rtol=1e-5)
    chex.assert_trees_all_close(got, optax.squared_error(pred, target).sum((1, 2)), rtol=1e-6)
    # (batch,) targets: one squared error per example
    chex.assert_trees_all_close(
        losses.l2_loss(jnp.asarray([1.0, 2.0]), jnp.asarray([3.0, 2.0])),
        np.array([4.0, 0.0], np.float32),
    )
    g = jax.grad(lambda p: losses.l2_loss(p, target).sum())(jnp.asarray(pred))
    chex.assert_trees_all_close(np.asarray(g), 2 * (pred - target), rtol=1e-5, atol=1e-6)


# ----- accuracy -----


def test_accuracy(data):
    logits, labels = data
    want = np.mean(logits.argmax(-1) == labels)
    assert float(losses.accuracy(logits, labels)) == pytest.approx(want)
    assert float(losses.accuracy(jnp.eye(3), jnp.asarray([0, 1, 0]))) == pytest.approx(2 / 3)


# ----- all losses: jit, grad, vmap, dtype, input checks -----

LABELLED = [losses.softmax_cross_entropy, losses.multiclass_hinge]


def _targets_for(fn, logits, labels):
    if fn is losses.sigmoid_binary_cross_entropy:
        return (np.asarray(logits) > 0).astype(np.float32)
    if fn is losses.l2_loss:
        return np.ones_like(logits)
    return labels


ALL = LABELLED + [losses.sigmoid_binary_cross_entropy, losses.l2_loss]


@pytest.mark.parametrize("fn", ALL, ids=lambda f: f.__name__)
def test_jit_grad_vmap(fn, data):
    logits, labels = data
    targets = _targets_for(fn, logits, labels)
    eager = fn(logits, targets)
    chex.assert_trees_all_close(jax.jit(fn)(logits, targets), eager, rtol=1e-6)
    g = jax.jit(jax.grad(lambda z: fn(z, targets).mean()))(jnp.asarray(logits))
    chex.assert_shape(g, (B, C))
    chex.assert_tree_all_finite(g)
    # vmap over an ensemble axis of logits
    stacked = jnp.stack([jnp.asarray(logits), 2 * jnp.asarray(logits)])
    per_member = jax.vmap(fn, in_axes=(0, None))(stacked, targets)
    chex.assert_trees_all_close(per_member[0], eager, rtol=1e-6)


@pytest.mark.parametrize("fn", ALL, ids=lambda f: f.__name__)
def test_float64_in_float64_out(fn, data):
    logits, labels = data
    with jax.enable_x64(True):
        z = jnp.asarray(logits, jnp.float64)
        targets = _targets_for(fn, logits, labels)
        assert fn(z, targets).dtype == jnp.float64
        assert jax.jit(fn)(z, targets).dtype == jnp.float64
        assert fn(z, jnp.asarray(targets)).dtype == jnp.float64  # int64 labels under x64
    assert fn(jnp.asarray(logits, jnp.bfloat16), targets).dtype == jnp.bfloat16


@pytest.mark.parametrize("fn", LABELLED, ids=lambda f: f.__name__)
def test_label_errors(fn, data):
    logits, labels = data
    with pytest.raises(TypeError, match="integer class labels"):
        fn(logits, labels.astype(np.float32))
    with pytest.raises(TypeError, match="integer class labels"):
        fn(logits, np.eye(C, dtype=np.float32)[labels])  # one-hot
    with pytest.raises(TypeError, match="integer class labels"):  # dtype is static: also under jit
        jax.jit(fn)(logits, labels.astype(np.float32))
    bad = labels.copy()
    bad[2] = C
    with pytest.raises(ValueError, match=rf"\[0, {C}\)"):
        fn(logits, bad)
    bad[2] = -1
    with pytest.raises(ValueError, match=rf"\[0, {C}\)"):
        fn(logits, bad)
    with pytest.raises(ValueError, match="shape"):
        fn(logits, labels[:-1])
    with pytest.raises(TypeError, match="floating"):
        fn(logits.astype(np.int32), labels)


@pytest.mark.parametrize("fn", LABELLED, ids=lambda f: f.__name__)
def test_out_of_range_labels_under_jit_give_nan(fn, data):
    logits, labels = data
    bad = labels.copy()
    bad[1], bad[4] = C, -1
    got = np.asarray(jax.jit(fn)(logits, bad))
    assert np.isnan(got[1]) and np.isnan(got[4])
    ok = np.ones(B, bool)
    ok[[1, 4]] = False
    assert np.all(np.isfinite(got[ok]))
    chex.assert_trees_all_close(got[ok], np.asarray(fn(logits, labels))[ok])


def test_target_errors():
    z = jnp.zeros((2, 3))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        losses.sigmoid_binary_cross_entropy(z, jnp.full((2, 3), 2.0))
    with pytest.raises(ValueError, match="shape"):
        losses.sigmoid_binary_cross_entropy(z, jnp.zeros((2,)))
    with pytest.raises(ValueError, match="shape"):
        losses.l2_loss(z, jnp.zeros((2, 4)))
