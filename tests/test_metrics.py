"""jnn.metrics against NumPy references written here, under jit."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jnn import losses, metrics

N, C, K = 200, 5, 4


def _probs(seed=0, n=N, c=C, sharp=3.0):
    rng = np.random.default_rng(seed)
    logits = sharp * rng.normal(size=(n, c))
    p = np.exp(logits - logits.max(1, keepdims=True))
    return (p / p.sum(1, keepdims=True)).astype(np.float32), rng.integers(0, c, n).astype(np.int32)


def _jit(fn, **static):
    return jax.jit(functools.partial(fn, **static))


# ----------------------------------------------------------------------------- NumPy references


def _np_bins(p, y, bins):
    p = np.asarray(p, np.float64)
    conf, correct = p.max(1), p.argmax(1) == y
    edges = np.linspace(0.0, 1.0, bins + 1)
    count, mean_conf, acc = np.zeros(bins), np.zeros(bins), np.zeros(bins)
    for b in range(bins):
        inside = (conf > edges[b]) & (conf <= edges[b + 1])
        count[b] = inside.sum()
        if count[b]:
            mean_conf[b], acc[b] = conf[inside].mean(), correct[inside].mean()
    return count, mean_conf, acc


def _np_ece(p, y, bins):
    count, conf, acc = _np_bins(p, y, bins)
    return float(np.sum(count / len(y) * np.abs(acc - conf)))


# ----------------------------------------------------------------------------- tests


def test_negative_log_likelihood_matches_numpy_and_is_clipped():
    p, y = _probs()
    want = -np.mean(np.log(p.astype(np.float64)[np.arange(N), y]))
    got = _jit(metrics.negative_log_likelihood)(p, y)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    assert got.dtype == jnp.float32
    # a zero probability on the label costs -log(eps), not inf
    zero = np.array([[1.0, 0.0], [0.5, 0.5]], np.float32)
    got = metrics.negative_log_likelihood(zero, np.array([1, 0], np.int32), eps=1e-6)
    np.testing.assert_allclose(got, 0.5 * (-np.log(1e-6) - np.log(0.5)), rtol=1e-5)


def test_brier_score_matches_numpy():
    p, y = _probs(1)
    onehot = np.eye(C)[y]
    want = np.mean(np.sum((p.astype(np.float64) - onehot) ** 2, axis=1))
    np.testing.assert_allclose(_jit(metrics.brier_score)(p, y), want, rtol=1e-5)
    perfect = np.eye(3, dtype=np.float32)
    assert float(metrics.brier_score(perfect, np.arange(3, dtype=np.int32))) == 0.0
    np.testing.assert_allclose(
        metrics.brier_score(perfect, np.array([1, 2, 0], np.int32)), 2.0, rtol=1e-6
    )


@pytest.mark.parametrize("bins", [15, 7])
def test_calibration_bins_match_numpy(bins):
    p, y = _probs(2, sharp=1.5)
    got = _jit(metrics.calibration_bins, bins=bins)(p, y)
    count, conf, acc = _np_bins(p, y, bins)
    chex.assert_shape((got.count, got.confidence, got.accuracy), (bins,))
    np.testing.assert_array_equal(got.count, count)
    np.testing.assert_allclose(got.confidence, conf, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(got.accuracy, acc, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(got.edges, np.linspace(0, 1, bins + 1), atol=1e-7)
    assert got.count.dtype == jnp.int32 and int(got.count.sum()) == N
    # "correct" is jnn.losses.accuracy's rule: the bins' accuracies average to it
    overall = np.sum(np.asarray(got.count) * np.asarray(got.accuracy)) / N
    np.testing.assert_allclose(overall, losses.accuracy(p, y), rtol=1e-6)


def test_bin_edges_are_closed_on_the_right():
    # edges 0, .25, .5, .75, 1 are exact in float32: a confidence on an edge is in the lower bin
    p = np.array([[0.5, 0.5], [0.75, 0.25], [1.0, 0.0], [0.6, 0.4]], np.float32)
    got = metrics.calibration_bins(p, np.zeros(4, np.int32), bins=4)
    np.testing.assert_array_equal(got.count, [0, 1, 2, 1])


def test_expected_calibration_error_hand_computed_three_bins():
    # bins (0, 1/3], (1/3, 2/3], (2/3, 1]
    p = np.array(
        [
            [0.30, 0.25, 0.25, 0.20],  # conf .3, correct   -> bin 0
            [0.20, 0.30, 0.25, 0.25],  # conf .3, wrong     -> bin 0: acc .5, conf .3
            [0.60, 0.20, 0.10, 0.10],  # conf .6, correct   -> bin 1: acc 1, conf .6
            [0.90, 0.05, 0.03, 0.02],  # conf .9, wrong     -> bin 2
            [0.10, 0.80, 0.05, 0.05],  # conf .8, correct   -> bin 2: acc .5, conf .85
        ],
        np.float32,
    )
    y = np.array([0, 0, 0, 1, 1], np.int32)
    want = 2 / 5 * 0.2 + 1 / 5 * 0.4 + 2 / 5 * 0.35  # = 0.30
    got = _jit(metrics.expected_calibration_error, bins=3)(p, y)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    np.testing.assert_allclose(got, _np_ece(p, y, 3), rtol=1e-5)


def test_expected_calibration_error_matches_numpy():
    p, y = _probs(3, sharp=2.0)
    got = _jit(metrics.expected_calibration_error)(p, y)
    np.testing.assert_allclose(got, _np_ece(p, y, 15), rtol=1e-4)
    # a model whose confidence always equals its accuracy in every bin has ECE 0
    calibrated = np.array([[0.5, 0.5]] * 4, np.float32)  # right half of the time
    labels = np.array([0, 1, 0, 1], np.int32)
    assert float(metrics.expected_calibration_error(calibrated, labels)) < 1e-7


def test_disagreement_matches_pairwise_numpy():
    rng = np.random.default_rng(4)
    member_probs = rng.dirichlet(np.ones(C), size=(K, N)).astype(np.float32)
    pred = member_probs.argmax(2)
    pairs = [(i, j) for i in range(K) for j in range(i + 1, K)]
    want = np.mean([np.mean(pred[i] != pred[j]) for i, j in pairs])
    np.testing.assert_allclose(_jit(metrics.disagreement)(member_probs), want, rtol=1e-5)
    same = np.broadcast_to(member_probs[:1], member_probs.shape)
    assert float(metrics.disagreement(same)) == 0.0
    # three members, three different classes: every pair differs
    distinct = np.eye(3, dtype=np.float32)[:, None, :]
    np.testing.assert_allclose(metrics.disagreement(distinct), 1.0)


def test_accuracy_is_the_losses_function():
    assert metrics.accuracy is losses.accuracy


def test_bad_input_is_rejected():
    p, y = _probs()
    with pytest.raises(ValueError, match="labels must be integer"):
        metrics.brier_score(p, y.astype(np.float32))
    with pytest.raises(ValueError, match=r"shape \(N, C\)"):
        metrics.negative_log_likelihood(p[0], y[:1])
    with pytest.raises(ValueError, match="bins must be a positive integer"):
        metrics.calibration_bins(p, y, bins=0)
    with pytest.raises(ValueError, match="members >= 2"):
        metrics.disagreement(p[None])
