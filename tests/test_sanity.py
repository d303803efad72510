"""jnn.sanity: each check passes on a correct setup and catches its broken one."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.decomposition import PCA

from jnn import init, losses, nn, optim, sanity


def _digits():
    data = load_digits()
    x = data.data / 16.0
    x = (x - x.mean(0)) / (x.std(0) + 0.1)
    return x.astype(np.float32), data.target.astype(np.int32)


X, Y = _digits()
MLP = nn.Serial(nn.Dense(32), nn.Relu(), nn.Dense(10))
CE = losses.softmax_cross_entropy


def _scaled_lecun(factor):
    base = init.lecun_normal()
    return lambda key, shape, dtype: factor * base(key, shape, dtype)


def test_run_all_passes_on_a_correct_setup(key):
    report = sanity.run_all(MLP, CE, optim.adam(1e-2), X, Y, key=key)
    assert report.ok, str(report)
    assert [c.name for c in report.checks] == [
        "initial_loss",
        "regularization",
        "overfit",
        "gradients",
    ]
    np.testing.assert_allclose(report["initial_loss"].expected, np.log(10.0), rtol=1e-6)
    assert report["overfit"].measured <= 500
    assert "after 5 training steps" in report["gradients"].message
    text = str(report)
    assert "4/4 passed" in text and "dense_0/w" in text


@pytest.mark.parametrize(
    ("loss", "expected"),
    [
        (losses.softmax_cross_entropy, np.log(10.0)),
        (losses.multiclass_hinge, 9.0),  # Weston-Watkins: (C - 1) * margin
    ],
)
def test_initial_loss_catches_a_final_layer_100x_too_large(key, loss, expected):
    good = sanity.check_initial_loss(MLP, loss, X[:20], Y[:20], key=key)
    assert good.ok, good.message
    np.testing.assert_allclose(good.expected, expected, rtol=1e-6)
    big = nn.Serial(nn.Dense(32), nn.Relu(), nn.Dense(10, w_init=_scaled_lecun(100.0)))
    bad = sanity.check_initial_loss(big, loss, X[:20], Y[:20], key=key)
    assert not bad.ok
    assert bad.measured > 5 * expected
    assert "final layer" in bad.message


def test_initial_loss_of_binary_cross_entropy_is_log2_per_attribute(key):
    attrs = (X[:20, :5] > 0).astype(np.float32)
    model = nn.Serial(nn.Dense(16), nn.Tanh(), nn.Dense(5))
    result = sanity.check_initial_loss(
        model, losses.sigmoid_binary_cross_entropy, X[:20], attrs, key=key
    )
    np.testing.assert_allclose(result.expected, 5 * np.log(2.0), rtol=1e-6)
    assert result.ok, result.message


def test_regularization_check(key):
    good = sanity.check_regularization(MLP, CE, X[:20], Y[:20], key=key)
    assert good.ok and np.all(np.diff(good.measured) > 0)
    # The L2 penalty by hand: 0.5 * sum of squared weights (biases excluded).
    params, _ = MLP.init(key, (20, 64))
    by_hand = 0.5 * sum(float(np.sum(np.square(params[k]["w"]))) for k in ("dense_0", "dense_2"))
    np.testing.assert_allclose(good.measured[1] - good.measured[0], 1e-3 * by_hand, rtol=1e-4)
    for broken, words in [
        (lambda p: jnp.zeros(()), "penalty is 0"),
        (lambda p: -jnp.sum(jnp.square(p["dense_0"]["w"])), "sign"),
    ]:
        bad = sanity.check_regularization(MLP, CE, X[:20], Y[:20], key=key, penalty=broken)
        assert not bad.ok and words in bad.message


def _two_digit_plane():
    """Digits 0 and 1 projected on two principal components: a linearly separable set."""
    keep = np.isin(Y, [0, 1])
    z = PCA(2, random_state=0).fit_transform(X[keep])
    return (z / z.std(0)).astype(np.float32)[:20], (Y[keep] == 1).astype(np.int32)[:20]


def test_overfit_catches_labels_shuffled_against_inputs(key):
    # A linear model on 2 features: the true labels are separable, 20 shuffled ones are not.
    z, labels = _two_digit_plane()
    linear = nn.Serial(nn.Dense(2))
    good = sanity.check_overfit(linear, CE, optim.adam(0.1), z, labels, key=key, max_steps=200)
    assert good.ok, good.message
    shuffled = np.random.default_rng(0).permutation(labels)
    bad = sanity.check_overfit(linear, CE, optim.adam(0.1), z, shuffled, key=key, max_steps=200)
    assert not bad.ok
    assert bad.measured < 1.0 and "labels" in bad.message and "last losses" in bad.message


def test_overfit_catches_learning_rate_zero(key):
    # (test_run_all_passes_on_a_correct_setup shows the same MLP overfitting with Adam.)
    bad = sanity.check_overfit(MLP, CE, optim.sgd(0.0), X, Y, key=key, max_steps=50)
    assert not bad.ok
    assert "learning rate" in bad.message
    assert len(bad.details) == 50 and len(set(bad.details)) == 1  # the loss never moved


@jax.custom_vjp
def _tanh_wrong_backward(x):
    return jnp.tanh(x)


def _tanh_fwd(x):
    y = jnp.tanh(x)
    return y, y


_tanh_wrong_backward.defvjp(_tanh_fwd, lambda y, g: (1.5 * g * (1.0 - y * y),))


@dataclasses.dataclass(frozen=True)
class BuggyTanh(nn.Layer):
    def forward(self, x):
        return _tanh_wrong_backward(x)


def test_characteristic_mode_finds_a_bug_hidden_at_initialisation(key):
    # With the output layer initialised at 0 no gradient reaches dense_0, so the check at
    # initialisation passes; after a few training steps the wrong tanh backward shows.
    model = nn.Serial(nn.Dense(8), BuggyTanh(), nn.Dense(10, w_init=init.constant(0.0)))
    at_init = sanity.check_gradients(model, CE, X, Y, key=key)
    assert at_init.ok, at_init.message
    trained = sanity.check_gradients(
        model, CE, X, Y, key=key, optimizer=optim.sgd(0.5), warmup_steps=3
    )
    assert not trained.ok
    assert set(trained.details.failed) == {"dense_0/w", "dense_0/b"}
    assert "after 3 training steps" in trained.message
    with pytest.raises(ValueError, match="optimizer"):
        sanity.check_gradients(model, CE, X, Y, key=key, warmup_steps=3)


# ----------------------------------------------------------------------------- initial loss bounds

C = 10
LINEAR = nn.Serial(nn.Dense(C))


def _initial_loss_with_ratio(ratio, key):
    """Outputs ``t * (1 - onehot(y))``: the softmax CE is ``log(1 + (C - 1) e^t)``, which is
    ``ratio * log C`` for ``e^t = (C^ratio - 1) / (C - 1)``."""
    t = np.log((C**ratio - 1.0) / (C - 1.0))
    y = np.arange(20, dtype=np.int32) % C
    x = (1.0 - np.eye(C)[y]).astype(np.float32)
    params = {"dense_0": {"w": (t * np.eye(C)).astype(np.float32), "b": np.zeros(C, np.float32)}}
    result = sanity.check_initial_loss(
        LINEAR, CE, x, y, key=key, params=params, model_state={"dense_0": {}}
    )
    np.testing.assert_allclose(result.measured, ratio * np.log(C), rtol=1e-5)
    return result


@pytest.mark.parametrize(
    ("ratio", "ok"), [(1.49, True), (1.51, False), (0.51, True), (0.49, False)]
)
def test_initial_loss_passes_just_inside_rtol_and_fails_just_outside(key, ratio, ok):
    result = _initial_loss_with_ratio(ratio, key)  # default rtol 0.5
    assert result.ok == ok, result.message
    np.testing.assert_allclose(result.expected, np.log(C), rtol=1e-6)


def test_initial_loss_twice_too_large_gives_the_too_large_advice(key):
    result = _initial_loss_with_ratio(2.0, key)
    assert not result.ok
    assert "2.0x too large" in result.message and "initialise the final layer smaller" in (
        result.message
    )


def test_initial_loss_below_chance_gives_the_leak_advice(key):
    # inputs that leak the label: the label's score is 5, the others 0
    y = np.arange(20, dtype=np.int32) % C
    x = (5.0 * np.eye(C)[y]).astype(np.float32)
    params = {"dense_0": {"w": np.eye(C, dtype=np.float32), "b": np.zeros(C, np.float32)}}
    result = sanity.check_initial_loss(
        LINEAR, CE, x, y, key=key, params=params, model_state={"dense_0": {}}
    )
    np.testing.assert_allclose(result.measured, np.log(np.exp(5.0) + C - 1) - 5.0, rtol=1e-5)
    assert not result.ok
    assert "below chance level" in result.message and "leak the labels" in result.message
    assert "too large" not in result.message


# ----------------------------------------------------------------------------- percentages


@pytest.mark.parametrize(
    ("fraction", "text"),
    [
        (0.999, "99.9%"),
        (0.9999, "99.9%"),
        (1.0 - 1e-12, "99.9%"),
        (1.0, "100.0%"),
        (float(np.float32(0.29)), "29.0%"),  # a float32 accuracy just below 0.29
        (0.85, "85.0%"),
        (0.0, "0.0%"),
    ],
)
def test_percentages_below_one_never_read_100(fraction, text):
    assert sanity._floor_percent(fraction) == text


def test_overfit_message_floors_the_best_accuracy(key):
    z, labels = _two_digit_plane()
    shuffled = np.random.default_rng(0).permutation(labels)
    bad = sanity.check_overfit(
        nn.Serial(nn.Dense(2)), CE, optim.adam(0.1), z, shuffled, key=key, max_steps=50
    )
    assert not bad.ok and bad.measured < 1.0
    want = f"{np.floor(round(bad.measured * 1000, 3)) / 10:.1f}%"
    assert f"best training accuracy {want} after" in bad.message


# ----------------------------------------------------------------------------- regression

# Twenty float targets unrelated to the inputs: only a model with enough capacity memorises them.
T = np.random.default_rng(7).normal(size=(20, 1)).astype(np.float32)


def test_a_regression_that_memorises_is_judged_by_its_loss_not_accuracy(key):
    # A linear model on 64 features interpolates 20 arbitrary targets exactly.
    linear = nn.Serial(nn.Dense(1))
    report = sanity.run_all(linear, losses.l2_loss, optim.adam(0.1), X, T, key=key, gradients=False)
    fit = report["overfit"]
    assert fit.ok, fit.message
    assert "accuracy" not in fit.message and "memorised" in fit.message
    # Independent reference: the loss of predicting the mean target is the targets' variance.
    baseline = float(np.mean(np.sum((T - T.mean(0)) ** 2, axis=1)))
    assert f"{baseline:.4g}" in fit.message
    assert min(fit.details) < 0.01 * baseline


def test_a_regression_that_cannot_memorise_fails_on_its_loss(key):
    # One input feature cannot carry 20 arbitrary targets.
    one_feature = X[:20, 20:21]
    linear = nn.Serial(nn.Dense(1))
    bad = sanity.check_overfit(
        linear, losses.l2_loss, optim.adam(0.1), one_feature, T, key=key, max_steps=100
    )
    assert not bad.ok
    assert "accuracy" not in bad.message and "predicting the mean target" in bad.message
    assert 0.5 < bad.measured <= 1.0  # a line explains little of random targets


@pytest.mark.parametrize(("factor", "ok"), [(1.0001, True), (0.9999, False)])
def test_regression_threshold_just_inside_and_just_outside(key, factor, ok):
    # A frozen model (lr 0) that predicts the constant c: its loss / baseline ratio is, by
    # hand, mean (c - y)^2 / mean (y - mean y)^2; a tolerance just above it passes.
    c = 0.25
    frozen = nn.Serial(nn.Dense(1, w_init=init.constant(0.0), b_init=init.constant(c)))
    ratio = float(np.mean((c - T) ** 2) / np.mean((T - T.mean()) ** 2))
    result = sanity.check_overfit(
        frozen,
        losses.l2_loss,
        optim.sgd(0.0),
        X,
        T,
        key=key,
        max_steps=10,
        regression_tol=ratio * factor,
    )
    assert result.ok is ok, result.message
    if not ok:
        np.testing.assert_allclose(result.measured, ratio, rtol=1e-5)
        assert "did not move" in result.message
