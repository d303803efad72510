"""jnn.monitor: update/weight ratios, gradient norms, activation statistics, diagnostics."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jnn import monitor, nn


def _params():
    rng = np.random.default_rng(0)
    return {
        "dense_0": {"w": rng.normal(size=(5, 4)), "b": rng.normal(size=(4,))},
        "relu_1": {},
        "batchnorm_2": {"scale": rng.normal(size=(4,)), "offset": rng.normal(size=(4,))},
        "dense_3": {"w": rng.normal(size=(4, 3)), "b": rng.normal(size=(3,))},
    }


def _as_jnp(tree):
    return jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), tree)


def test_update_ratios_match_numpy_and_cover_only_weights():
    p = _params()
    u = jax.tree.map(lambda a: 1e-3 * np.sin(a) + 1e-4, p)
    got = jax.jit(monitor.update_ratios)(_as_jnp(p), _as_jnp(u))
    assert set(got) == {"dense_0/w", "dense_3/w"}
    for layer in ("dense_0", "dense_3"):
        want = np.linalg.norm(u[layer]["w"]) / np.linalg.norm(p[layer]["w"])
        np.testing.assert_allclose(got[f"{layer}/w"], want, rtol=1e-5)
        chex.assert_shape(got[f"{layer}/w"], ())


def test_grad_norms_match_numpy_for_every_leaf():
    g = _params()
    got = jax.jit(monitor.grad_norms)(_as_jnp(g))
    assert set(got) == {
        "dense_0/w",
        "dense_0/b",
        "batchnorm_2/scale",
        "batchnorm_2/offset",
        "dense_3/w",
        "dense_3/b",
    }
    for name, value in got.items():
        layer, leaf = name.split("/")
        np.testing.assert_allclose(value, np.linalg.norm(g[layer][leaf]), rtol=1e-5)


def test_ratios_vmap_over_members_and_zero_weights_are_finite():
    p = _as_jnp({"dense_0": {"w": np.ones((2, 3, 3)), "b": np.zeros((2, 3))}})
    u = jax.tree.map(lambda a: 0.5 * a, p)
    got = jax.vmap(monitor.update_ratios)(p, u)
    np.testing.assert_allclose(got["dense_0/w"], [0.5, 0.5], rtol=1e-6)
    zero = monitor.update_ratios({"w": jnp.zeros(3)}, {"w": jnp.zeros(3)})
    assert math.isfinite(float(zero["w"]))


def test_grad_norms_differentiable():
    g = jax.grad(lambda p: monitor.grad_norms(p)["dense_0/w"])(_as_jnp(_params()))
    w = _params()["dense_0"]["w"]
    np.testing.assert_allclose(g["dense_0"]["w"], w / np.linalg.norm(w), rtol=1e-5)


# --------------------------------------------------------------------------- activations


def _net(act, key, bias=0.0, scale=1.0, width=32):
    model = nn.Serial(nn.Dense(width), act, nn.Dense(3))
    params, state = model.init(key, (1, 6))
    params["dense_0"]["w"] = params["dense_0"]["w"] * scale
    params["dense_0"]["b"] = params["dense_0"]["b"] + bias
    x = jax.random.normal(jax.random.key(1), (200, 6))
    return model, params, state, x


def _pre(params, x):
    return np.asarray(x) @ np.asarray(params["dense_0"]["w"]) + np.asarray(params["dense_0"]["b"])


def test_relu_stats_against_numpy(key):
    model, params, state, x = _net(nn.Relu(), key, bias=-1.0)
    stats = monitor.activation_stats(model, params, state, x, bins=10)
    assert list(stats) == ["dense_0", "relu_1", "dense_2"]
    y = np.maximum(_pre(params, x), 0.0)
    row = stats["relu_1"]
    assert row["kind"] == "relu"
    np.testing.assert_allclose(row["mean"], y.mean(), rtol=1e-5)
    np.testing.assert_allclose(row["std"], y.std(), rtol=1e-4)
    np.testing.assert_allclose(row["dead"], np.mean(np.all(y <= 0, axis=0)))
    hist, edges = np.histogram(y, bins=10)
    np.testing.assert_array_equal(row["hist"], hist)
    np.testing.assert_allclose(row["edges"], edges, rtol=1e-5)
    assert "dead" not in stats["dense_0"] and "saturated" not in stats["dense_0"]


def test_planted_dead_relus_are_detected(key):
    model, params, state, x = _net(nn.Relu(), key, bias=-100.0)
    stats = monitor.activation_stats(model, params, state, x)
    assert stats["relu_1"]["dead"] == 1.0
    messages = monitor.diagnose([], stats)
    assert any("dying ReLUs in relu_1" in m for m in messages)
    healthy = monitor.activation_stats(*_net(nn.Relu(), key))
    assert healthy["relu_1"]["dead"] < 0.1
    assert not monitor.diagnose([], healthy)


def test_planted_saturated_tanh_and_sigmoid(key):
    model, params, state, x = _net(nn.Tanh(), key, scale=100.0)
    stats = monitor.activation_stats(model, params, state, x)
    want = np.mean(np.abs(np.tanh(_pre(params, x))) > 0.99)
    np.testing.assert_allclose(stats["tanh_1"]["saturated"], want, rtol=1e-6)
    assert stats["tanh_1"]["saturated"] > 0.9
    assert any("saturated units in tanh_1" in m for m in monitor.diagnose([], stats))

    model, params, state, x = _net(nn.Sigmoid(), key, scale=100.0)
    stats = monitor.activation_stats(model, params, state, x)
    s = 1 / (1 + np.exp(-np.clip(_pre(params, x), -50, 50)))
    np.testing.assert_allclose(
        stats["sigmoid_1"]["saturated"], np.mean((s < 0.01) | (s > 0.99)), rtol=1e-6
    )
    assert any("saturated units in sigmoid_1" in m for m in monitor.diagnose([], stats))

    healthy = monitor.activation_stats(*_net(nn.Tanh(), key, scale=0.3))
    assert healthy["tanh_1"]["saturated"] < 0.05
    assert not monitor.diagnose([], healthy)


def test_conv_dead_units_are_channels(key):
    model = nn.Serial(nn.Conv(4, 3), nn.Relu())
    params, state = model.init(key, (1, 10, 2))
    # channel 0 killed by a huge negative bias, the others alive
    params["conv_0"]["b"] = params["conv_0"]["b"].at[0].set(-1e3)
    x = jax.random.normal(jax.random.key(2), (16, 10, 2))
    stats = monitor.activation_stats(model, params, state, x)
    assert stats["relu_1"]["dead"] == 0.25


# --------------------------------------------------------------------------- diagnose


def _history(n=5, ratio=1e-3, train_acc=0.95, val_acc=0.93, losses=None):
    losses = losses or [2.0 * 0.5**i for i in range(n)]
    return [
        {
            "epoch": i + 1,
            "step": 10 * (i + 1),
            "train_loss": losses[i],
            "train_acc": train_acc,
            "val_loss": losses[i],
            "val_acc": val_acc,
            "learning_rate": 1e-3,
            "update_ratio": {"dense_0/w": ratio, "dense_2/w": 2 * ratio},
            "grad_norm": {"dense_0/w": 1.0},
            "seconds": 0.1,
        }
        for i in range(n)
    ]


def _val_rising():
    history = _history()
    for record, val in zip(history, [2.0, 1.0, 1.1, 1.3, 1.5], strict=True):
        record["val_loss"] = val
    return history


def test_healthy_history_has_no_messages():
    assert monitor.diagnose(_history()) == []


@pytest.mark.parametrize(
    ("history", "phrase"),
    [
        (_history(ratio=1e-6), "learning rate probably too low"),
        (_history(ratio=0.1), "learning rate probably too high"),
        (_history(train_acc=1.0, val_acc=0.7), "overfitting"),
        (_history(train_acc=0.3, val_acc=0.28), "underfitting"),
        (_val_rising(), "validation loss rose to 1.5, 50% above its minimum 1 at epoch 2"),
        (_history(losses=[2.0, 2.1, 2.0, 2.05, 2.0]), "not decreasing"),
        (_history(losses=[2.0, 1.0, float("nan"), 1.0, 1.0]), "NaN/inf at epoch 3"),
    ],
)
def test_planted_history_problems(history, phrase):
    messages = monitor.diagnose(history)
    assert any(phrase in m for m in messages), messages


def test_ratio_median_uses_the_whole_history():
    # one spike does not make the learning rate "too high"
    history = _history()
    history[0]["update_ratio"] = {"dense_0/w": 1.0, "dense_2/w": 1.0}
    assert monitor.diagnose(history) == []
    assert monitor.ratio_medians(history) == {"dense_0/w": 1e-3, "dense_2/w": 2e-3}


def test_thresholds_are_options():
    assert monitor.diagnose(_history(ratio=1e-3), ratio_low=1e-2)
    assert not monitor.diagnose(_history(train_acc=1.0, val_acc=0.7), overfit_gap=0.5)
