"""jnn.gradcheck: planted gradient bugs are caught and named; correct models pass."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.datasets import load_digits

from jnn import gradcheck, losses, nn

# ----------------------------------------------------------------------------- data


def _digits(n):
    data = load_digits()
    x = data.data[:n] / 16.0
    x = (x - x.mean(0)) / (x.std(0) + 0.1)
    return x.astype(np.float32), data.target[:n].astype(np.int32)


X, Y = _digits(16)

# ----------------------------------------------------------------------------- a planted-bug MLP
# dense_0 -> bn_0 -> relu -> dense_1 (square) -> relu -> dense_2 -> softmax CE + L2 on weights.
# Every backward pass is hand-written (jax.custom_vjp); `bug` (an int32 argument, so one
# compilation serves every variant) switches on one planted error.

NONE, BIAS, ELEMENT, TRANSPOSED, L2, BATCHNORM = range(6)
L2_STRENGTH = 1e-3


@jax.custom_vjp
def _dense(x, w, b, bug):
    return x @ w + b[None, :]


def _dense_fwd(x, w, b, bug):
    return _dense(x, w, b, bug), (x, w, bug)


def _dense_bwd(res, g):
    x, w, bug = res
    dw = x.T @ g
    db = jnp.sum(g, axis=0)
    db = jnp.where(bug == BIAS, db * 1.01, db)  # a 1% error in the bias gradient
    dw = jnp.where(bug == ELEMENT, dw.at[2, 3].add(0.1 * jnp.max(jnp.abs(dw))), dw)
    if dw.shape[0] == dw.shape[1]:
        dw = jnp.where(bug == TRANSPOSED, dw.T, dw)
    return g @ w.T, dw, db, None


_dense.defvjp(_dense_fwd, _dense_bwd)


def _bn_forward(x, scale, offset):
    mean = jnp.mean(x, axis=0)
    var = jnp.mean(jnp.square(x - mean[None, :]), axis=0)
    inv = 1.0 / jnp.sqrt(var + 1e-5)
    xhat = (x - mean[None, :]) * inv[None, :]
    return xhat * scale[None, :] + offset[None, :], (xhat, inv)


@jax.custom_vjp
def _batchnorm(x, scale, offset, bug):
    return _bn_forward(x, scale, offset)[0]


def _batchnorm_fwd(x, scale, offset, bug):
    y, (xhat, inv) = _bn_forward(x, scale, offset)
    return y, (xhat, inv, scale, bug)


def _batchnorm_bwd(res, g):
    xhat, inv, scale, bug = res
    n = g.shape[0]
    gx = g * scale[None, :]
    right = (
        inv[None, :]
        / n
        * (n * gx - jnp.sum(gx, axis=0)[None, :] - xhat * jnp.sum(gx * xhat, axis=0)[None, :])
    )
    wrong = gx * inv[None, :]  # batch mean and variance treated as constants
    dx = jnp.where(bug == BATCHNORM, wrong, right)
    return dx, jnp.sum(g * xhat, axis=0), jnp.sum(g, axis=0), None


_batchnorm.defvjp(_batchnorm_fwd, _batchnorm_bwd)


@jax.custom_vjp
def _half_sq_norm(w, bug):
    return 0.5 * jnp.sum(jnp.square(w))


def _half_sq_norm_fwd(w, bug):
    return _half_sq_norm(w, bug), (w, bug)


def _half_sq_norm_bwd(res, g):
    w, bug = res
    dw = jnp.where(bug == L2, 0.5 * w, w)  # the factor 2 of d(w^2)/dw forgotten
    return g * dw, None


_half_sq_norm.defvjp(_half_sq_norm_fwd, _half_sq_norm_bwd)


def buggy_loss(params, x, y, bug):
    none = jnp.zeros_like(bug)
    h = _dense(x, params["dense_0"]["w"], params["dense_0"]["b"], none)
    h = _batchnorm(h, params["bn_0"]["scale"], params["bn_0"]["offset"], bug)
    h = _dense(jax.nn.relu(h), params["dense_1"]["w"], params["dense_1"]["b"], bug)
    h = _dense(jax.nn.relu(h), params["dense_2"]["w"], params["dense_2"]["b"], none)
    data = jnp.mean(losses.softmax_cross_entropy(h, y))
    penalty = sum(_half_sq_norm(params[k]["w"], bug) for k in ("dense_0", "dense_1", "dense_2"))
    return data + L2_STRENGTH * penalty


def _mlp_params(key, dtype=jnp.float32):
    k0, k1, k2, k3 = jax.random.split(key, 4)
    normal = lambda k, shape: jax.random.normal(k, shape, dtype) / np.sqrt(shape[0]).astype(dtype)
    return {
        "dense_0": {"w": normal(k0, (64, 16)), "b": jnp.full((16,), 0.1, dtype)},
        "bn_0": {
            "scale": 1.0 + 0.1 * jax.random.normal(k3, (16,), dtype),
            "offset": jnp.zeros(16, dtype),
        },
        "dense_1": {"w": normal(k1, (16, 16)), "b": jnp.full((16,), 0.1, dtype)},
        "dense_2": {"w": normal(k2, (16, 10)), "b": jnp.zeros((10,), dtype)},
    }


def test_hand_written_backward_matches_autodiff(key):
    """The reference for the planted bugs: with bug=NONE the custom VJPs equal jax.grad."""

    def plain(params, x, y):
        h = x @ params["dense_0"]["w"] + params["dense_0"]["b"][None, :]
        h = _bn_forward(h, params["bn_0"]["scale"], params["bn_0"]["offset"])[0]
        h = jax.nn.relu(h) @ params["dense_1"]["w"] + params["dense_1"]["b"][None, :]
        h = jax.nn.relu(h) @ params["dense_2"]["w"] + params["dense_2"]["b"][None, :]
        data = jnp.mean(losses.softmax_cross_entropy(h, y))
        ws = [params[k]["w"] for k in ("dense_0", "dense_1", "dense_2")]
        return data + L2_STRENGTH * sum(0.5 * jnp.sum(jnp.square(w)) for w in ws)

    both = jax.jit(
        lambda p: (jax.grad(buggy_loss)(p, X, Y, jnp.int32(NONE)), jax.grad(plain)(p, X, Y))
    )
    got, expected = both(_mlp_params(key))
    chex.assert_trees_all_close(got, expected, rtol=1e-4, atol=1e-6)


def test_correct_mlp_passes_and_x64_setting_is_restored(key):
    assert not jax.config.jax_enable_x64
    report = gradcheck.check_grads(buggy_loss, _mlp_params(key), X, Y, jnp.int32(NONE))
    assert not jax.config.jax_enable_x64
    assert report.ok, str(report)
    assert report.failed == ()
    assert [row.name for row in report.rows] == [
        "bn_0/offset",
        "bn_0/scale",
        "dense_0/b",
        "dense_0/w",
        "dense_1/b",
        "dense_1/w",
        "dense_2/b",
        "dense_2/w",
    ]
    # 4 random directions + 4 coordinates per leaf; a bias feeding BatchNorm (true gradient 0)
    # passes thanks to the absolute floor.
    assert all(row.checked == 8 for row in report.rows)
    # Its error is float64 rounding noise over the floor, so it depends on XLA's summation
    # order (1e-7 .. 5e-6); every leaf with a real gradient is checked to 1e-6.
    assert report.leaf("dense_0/b").verdict in ("good", "acceptable")
    assert max(row.max_rel_error for row in report.rows if row.name != "dense_0/b") < 1e-6

    assert "passed" in str(report)


@pytest.mark.parametrize(
    ("bug", "expected"),
    [
        (BIAS, {"dense_1/b"}),
        (ELEMENT, {"dense_1/w"}),
        (TRANSPOSED, {"dense_1/w"}),
        (L2, {"dense_0/w", "dense_1/w", "dense_2/w"}),
        (BATCHNORM, {"dense_0/w", "dense_0/b"}),
    ],
    ids=["bias_1pct_float32", "one_element", "transposed", "l2_missing_factor", "batchnorm"],
)
def test_planted_bug_fails_naming_the_leaf(key, bug, expected):
    params = _mlp_params(key)  # a float32 model; the check runs in float64 regardless
    assert params["dense_1"]["b"].dtype == jnp.float32
    report = gradcheck.check_grads(buggy_loss, params, X, Y, jnp.int32(bug))
    assert not report.ok
    assert set(report.failed) == expected, str(report)
    for name in expected:
        row = report.leaf(name)
        assert row.verdict in ("suspect", "wrong") and not row.kink
        assert row.max_rel_error > 1e-4
    text = str(report)
    assert "FAILED" in text and all(name in text for name in expected)


def test_relu_exactly_at_zero_is_a_kink_not_a_failure():
    # Every pre-activation is exactly 0; jax takes relu'(0) = 0 while the centred difference
    # sees half the slope. Positive x and v make each kink convex along any direction.
    x = np.abs(_digits(6)[0][:, :5]) + 0.1
    v = np.linspace(0.5, 1.5, 4).astype(np.float32)
    f = lambda p, x, v: jnp.sum(jax.nn.relu(x @ p["w"]) @ v) + jnp.sum(jnp.square(p["b"]))
    params = {"w": jnp.zeros((5, 4), jnp.float32), "b": jnp.ones((3,), jnp.float32)}
    report = gradcheck.check_grads(f, params, x, v)
    assert report.ok, str(report)
    row = report.leaf("w")
    assert row.kink and row.verdict == "kink" and row.kinks == row.checked
    assert row.max_rel_error > 0.1  # the error is real; the kink explains it
    assert not report.leaf("b").kink and report.leaf("b").verdict == "good"
    assert "crossed a kink" in str(report)


def test_a_bug_is_not_excused_as_a_kink():
    # Smooth function, gradient 2x too large: the one-sided differences agree, so no kink.
    @jax.custom_vjp
    def square(w):
        return jnp.sum(jnp.square(w))

    square.defvjp(lambda w: (square(w), w), lambda w, g: (4.0 * g * w,))
    report = gradcheck.check_grads(lambda p: square(p["w"]), {"w": jnp.arange(1.0, 5.0)})
    assert not report.ok and report.failed == ("w",)
    assert report.leaf("w").verdict == "wrong" and not report.leaf("w").kink
    np.testing.assert_allclose(report.leaf("w").max_rel_error, 0.5, rtol=1e-6)


# ----------------------------------------------------------------------------- real jnn layers


def _layer_loss(model, loss_fn=losses.softmax_cross_entropy):
    def f(params, state, x, y, key):
        out, _ = model.apply(params, state, x, key=key, train=True)
        return jnp.mean(loss_fn(out, y))

    return f


def test_mlp_with_batchnorm_and_dropout_passes(key):
    model = nn.Serial(nn.Dense(16), nn.BatchNorm(), nn.Relu(), nn.Dropout(0.3), nn.Dense(10))
    params, state = model.init(key, X.shape)
    dropout_key = jax.random.key(1)  # fixed: every evaluation drops the same units
    report = gradcheck.check_grads(_layer_loss(model), params, state, X, Y, dropout_key)
    assert report.ok, str(report)
    assert {row.name for row in report.rows} == {
        "dense_0/w",
        "dense_0/b",
        "batchnorm_1/scale",
        "batchnorm_1/offset",
        "dense_4/w",
        "dense_4/b",
    }


def test_small_cnn_passes(key):
    model = nn.Serial(nn.Conv(4, (3, 3)), nn.Relu(), nn.MaxPool((2, 2)), nn.Flatten(), nn.Dense(10))
    x = X[:8].reshape(8, 8, 8, 1)
    params, state = model.init(key, x.shape)
    report = gradcheck.check_grads(_layer_loss(model), params, state, x, Y[:8], None)
    assert report.ok, str(report)
    assert report.leaf("conv_0/w").size == 3 * 3 * 1 * 4


def test_maxout_net_with_hinge_loss_passes(key):
    model = nn.Serial(nn.Maxout(8, pieces=3), nn.Dense(10))
    params, state = model.init(key, X.shape)
    f = _layer_loss(model, losses.multiclass_hinge)
    # Away from the hinge's kink: some margins are active, none sits exactly at 0.
    scores, _ = model.apply(params, state, X)
    margins = scores - jnp.take_along_axis(scores, Y[:, None], axis=1) + 1.0
    assert float(jnp.min(jnp.abs(margins))) > 1e-3
    report = gradcheck.check_grads(f, params, state, X, Y, None, h_sweep=(1e-4, 1e-5, 1e-6))
    assert report.ok, str(report)
    assert report.h == (1e-4, 1e-5, 1e-6)


# ----------------------------------------------------------------------------- helpers


def test_numerical_grad_matches_closed_form():
    # f(w, b) = sum(log(1 + exp(x @ w + b))) ; df/dw = x^T sigmoid(z), df/db = sum sigmoid(z).
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 3))
    w, b = rng.normal(size=(3,)).astype(np.float32), np.asarray(0.3)  # a float32 leaf
    f = lambda p, x: jnp.sum(jnp.logaddexp(0.0, x @ p["w"] + p["b"]))
    got = gradcheck.numerical_grad(f, {"w": w, "b": b}, args=(x,))
    w = w.astype(np.float64)
    s = 1.0 / (1.0 + np.exp(-(x @ w + b)))
    np.testing.assert_allclose(got["w"], x.T @ s, rtol=1e-8)
    np.testing.assert_allclose(got["b"], s.sum(), rtol=1e-8)
    assert got["w"].dtype == np.float64 and not jax.config.jax_enable_x64


def test_rel_error_formula_and_jit():
    a = np.array([1.0, 0.0, 1e-12, -2.0], np.float32)
    b = np.array([1.1, 0.0, 2e-12, 2.0], np.float32)
    expected = np.abs(a - b) / np.maximum(np.maximum(np.abs(a), np.abs(b)), 1e-6)
    expected[1] = 0.0
    got = jax.jit(gradcheck.rel_error, static_argnums=2)(a, b, 1e-6)
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    np.testing.assert_allclose(gradcheck.rel_error(a, b)[2], 0.5, rtol=1e-6)  # no floor
    tree = gradcheck.rel_error({"w": a}, {"w": b})
    chex.assert_shape(tree["w"], (4,))


def test_bad_input_is_rejected():
    with pytest.raises(ValueError, match="scalar"):
        gradcheck.check_grads(lambda p: p["w"] * 2.0, {"w": jnp.ones(3)})
    with pytest.raises(ValueError, match="positive"):
        gradcheck.check_grads(lambda p: jnp.sum(p["w"]), {"w": jnp.ones(3)}, h=0.0)
    with pytest.raises(ValueError, match="good <= acceptable"):
        gradcheck.check_grads(lambda p: jnp.sum(p["w"]), {"w": jnp.ones(3)}, good=1e-2)


def test_nothing_to_check_and_tuple_output_are_clear_errors():
    with pytest.raises(ValueError, match="nothing to check"):
        gradcheck.check_grads(lambda p: jnp.zeros(()), {})
    with pytest.raises(ValueError, match="nothing to check.*int32"):
        gradcheck.check_grads(lambda p: jnp.sum(p["steps"]) * 1.0, {"steps": jnp.arange(3)})
    with pytest.raises(TypeError, match="must return a scalar.*only the loss"):
        gradcheck.check_grads(lambda p: (jnp.sum(p["w"]), p), {"w": jnp.ones(3)})
    with pytest.raises(TypeError, match="must return a scalar"):
        gradcheck.numerical_grad(lambda p: [jnp.sum(p["w"])], {"w": jnp.ones(3)})


# A gradient bug in the single entry with the largest |gradient| (10% too large) and nowhere else.
@jax.custom_vjp
def _tanh_layer_sum(w, x):
    return jnp.sum(jnp.tanh(x @ w))


def _tanh_layer_sum_fwd(w, x):
    return _tanh_layer_sum(w, x), (w, x)


def _tanh_layer_sum_bwd(res, g):
    w, x = res
    dw = g * x.T @ (1.0 - jnp.square(jnp.tanh(x @ w)))
    largest = jnp.argmax(jnp.abs(dw))
    return dw.ravel().at[largest].multiply(1.1).reshape(dw.shape), None


_tanh_layer_sum.defvjp(_tanh_layer_sum_fwd, _tanh_layer_sum_bwd)


def test_a_bug_in_the_largest_gradient_entry_is_found_by_one_coordinate():
    # "one of them the largest gradient entry": with no random directions and one coordinate
    # per leaf, only the largest-|gradient| entry of w is probed, and that is where the bug is.
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 4))
    params = {"w": 0.3 * rng.normal(size=(4, 5)), "b": rng.normal(size=(3,))}
    f = lambda p, x: _tanh_layer_sum(p["w"], x) + jnp.sum(jnp.square(p["b"]))
    # the reference gradient (NumPy): the largest entry is not entry 0, which a probe of the
    # first coordinate would check instead (and pass)
    true = x.T @ (1.0 - np.tanh(x @ params["w"]) ** 2)
    assert np.argmax(np.abs(true)) != 0
    report = gradcheck.check_grads(f, params, x, directions=0, coordinates=1)
    assert not report.ok and report.failed == ("w",), str(report)
    assert report.leaf("w").checked == 1
    np.testing.assert_allclose(report.leaf("w").max_rel_error, 0.1 / 1.1, rtol=1e-6)
