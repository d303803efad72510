"""jnn.monitor: update/weight ratios, gradient norms, activation statistics, diagnostics."""

import math
import pathlib
import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jnn import monitor, nn, preprocessing


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


def _history(n=5, ratio=1e-3, train_acc=0.95, val_acc=0.93, losses=None, ratios=None):
    losses = losses or [2.0 * 0.5**i for i in range(n)]
    ratios = ratios or {"dense_0/w": ratio, "dense_2/w": 2 * ratio}
    return [
        {
            "epoch": i + 1,
            "step": 10 * (i + 1),
            "train_loss": losses[i],
            "train_acc": train_acc,
            "val_loss": losses[i],
            "val_acc": val_acc,
            "learning_rate": 1e-3,
            "update_ratio": dict(ratios),
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


def test_unknown_threshold_is_rejected():
    with pytest.raises(TypeError, match="unknown threshold.*ratio_lo"):
        monitor.diagnose(_history(), ratio_lo=1e-3)


# --------------------------------------------------------------------------- activation names


def test_activation_stats_takes_layer_names_from_the_model(key):
    # A Serial whose naming differs from f"{kind}_{i}": the statistics follow model.names.
    class Named(nn.Serial):
        @property
        def names(self):
            return ("hidden", "act", "logits")

    model = Named(nn.Dense(8), nn.Relu(), nn.Dense(3))
    params, state = model.init(key, (1, 6))
    params["hidden"]["b"] = params["hidden"]["b"] - 100.0
    x = jax.random.normal(jax.random.key(1), (50, 6))
    stats = monitor.activation_stats(model, params, state, x)
    assert list(stats) == ["hidden", "act", "logits"]
    assert stats["act"]["kind"] == "relu" and stats["act"]["dead"] == 1.0
    assert stats["hidden"]["kind"] == "dense"


# --------------------------------------------------------------------------- thresholds


def _three_layers(median):
    """Per-layer ratios whose median over layers is ``median``; min and max are 3x away."""
    return {"dense_0/w": median / 3, "dense_2/w": median, "dense_4/w": 3 * median}


def _messages_with(phrase, messages):
    return [m for m in messages if phrase in m]


@pytest.mark.parametrize(
    ("median", "fires"), [(0.99e-4, True), (1.01e-4, False)], ids=["below", "above"]
)
def test_ratio_too_low_threshold_uses_the_median_over_layers(median, fires):
    # min over layers (3.4e-5) is below 1e-4 in both cases, max (3e-4) above: only the median
    # decides
    history = _history(ratios=_three_layers(median))
    history[0]["update_ratio"] = _three_layers(1.0)  # one spike: the median over epochs
    found = _messages_with("learning rate probably too low", monitor.diagnose(history))
    assert bool(found) == fires, found
    if fires:
        assert "layers: dense_0/w, dense_2/w" in found[0] and "< 1e-4" in found[0]


@pytest.mark.parametrize(
    ("median", "fires"), [(1.01e-2, True), (0.99e-2, False)], ids=["above", "below"]
)
def test_ratio_too_high_threshold_uses_the_median_over_layers(median, fires):
    history = _history(ratios=_three_layers(median))
    history[0]["update_ratio"] = _three_layers(1e-9)
    found = _messages_with("learning rate probably too high", monitor.diagnose(history))
    assert bool(found) == fires, found
    if fires:
        assert "layers: dense_2/w, dense_4/w" in found[0] and "> 1e-2" in found[0]


def _layers(kind, fraction, field):
    return {
        f"{kind}_1": {"kind": kind, field: 0.0},
        f"{kind}_3": {"kind": kind, field: fraction},
        f"{kind}_5": {"kind": kind, field: 0.1},
    }


@pytest.mark.parametrize(("fraction", "fires"), [(0.26, True), (0.25, False), (0.24, False)])
def test_dead_relu_threshold(fraction, fires):
    messages = monitor.diagnose([], _layers("relu", fraction, "dead"))
    assert bool(messages) == fires, messages
    if fires:
        assert messages == [m for m in messages if m.startswith("dying ReLUs in relu_3:")]
        assert len(messages) == 1 and "(> 25%)" in messages[0]


@pytest.mark.parametrize("kind", ["tanh", "sigmoid"])
@pytest.mark.parametrize(("fraction", "fires"), [(0.26, True), (0.25, False), (0.24, False)])
def test_saturated_threshold(kind, fraction, fires):
    messages = monitor.diagnose([], _layers(kind, fraction, "saturated"))
    assert bool(messages) == fires, messages
    if fires:
        assert len(messages) == 1 and messages[0].startswith(f"saturated units in {kind}_3:")


@pytest.mark.parametrize(("val_acc", "fires"), [(0.849, True), (0.851, False)])
def test_overfit_gap_threshold(val_acc, fires):
    found = _messages_with(
        "overfitting:", monitor.diagnose(_history(train_acc=0.95, val_acc=val_acc))
    )
    assert bool(found) == fires, found


@pytest.mark.parametrize(
    ("train_acc", "val_acc", "fires"),
    [(0.59, 0.59, True), (0.61, 0.59, False), (0.59, 0.61, False)],
)
def test_underfit_threshold(train_acc, val_acc, fires):
    messages = monitor.diagnose(_history(train_acc=train_acc, val_acc=val_acc))
    assert bool(_messages_with("underfitting", messages)) == fires, messages


@pytest.mark.parametrize(("last", "fires"), [(1.99, True), (1.97, False)])
def test_loss_not_decreasing_threshold(last, fires):
    # 1.99 / 2.0 = 99.5% of the first loss (>= 99%), 1.97 / 2.0 = 98.5%
    history = _history(losses=[2.0, 1.5, 1.2, 1.1, last])
    assert bool(_messages_with("not decreasing", monitor.diagnose(history))) == fires


@pytest.mark.parametrize(("final", "fires"), [(1.21, True), (1.19, False)])
def test_val_loss_rise_threshold(final, fires):
    history = _history()
    for record, val in zip(history, [2.0, 1.0, 1.05, 1.1, final], strict=True):
        record["val_loss"] = val
    found = _messages_with("validation loss rose", monitor.diagnose(history))
    assert bool(found) == fires, found


# --------------------------------------------------------------------------- unscaled inputs


def _inputs(mean, std, shape=(400, 5)):
    z = np.random.default_rng(0).normal(size=shape)
    return (z - z.mean()) / z.std() * std + mean


@pytest.mark.parametrize(
    ("mean", "std", "fires"),
    [
        (0.0, 10.1, True),
        (0.0, 9.9, False),
        (10.1, 1.0, True),
        (-10.1, 1.0, True),
        (9.9, 9.9, False),
    ],
)
def test_unscaled_inputs_threshold(mean, std, fires):
    found = _messages_with("inputs look unscaled", monitor.diagnose([], inputs=_inputs(mean, std)))
    assert bool(found) == fires, found
    if fires:
        assert f"(mean {mean:.1f}, std {std:.1f})" in found[0]
        assert "jnn.preprocessing.standardize" in found[0]


def test_input_scale_from_precomputed_statistics_matches_the_array():
    # per-feature means far apart: the overall std includes their spread
    x = _inputs(0.0, 1.0) * np.array([1.0, 2.0, 3.0, 4.0, 5.0]) + np.array([0, 10, 20, 30, 40])
    from_stats = monitor.input_scale(preprocessing.fit_standardize(x.astype(np.float32)))
    np.testing.assert_allclose(from_stats, (x.mean(), x.std()), rtol=1e-5)
    np.testing.assert_allclose(monitor.input_scale(x), (x.mean(), x.std()), rtol=1e-12)


def test_raw_uint8_inputs_are_reported_before_underfitting():
    # the issue: raw pixels train unstandardised (loss 41) and the diagnosis said "underfitting"
    pixels = np.random.default_rng(0).integers(0, 256, size=(100, 64)).astype(np.uint8)
    history = _history(train_acc=0.3, val_acc=0.28, losses=[41.0, 30.0, 25.0, 22.0, 20.0])
    messages = monitor.diagnose(history, inputs=pixels)
    unscaled = [i for i, m in enumerate(messages) if m.startswith("inputs look unscaled")]
    underfit = [i for i, m in enumerate(messages) if m.startswith("underfitting")]
    assert unscaled and underfit and unscaled[0] < underfit[0], messages
    assert monitor.diagnose(history, inputs=pixels / 255.0 - 0.5)[0].startswith("underfitting")


# --------------------------------------------------------------------------- the table


def test_threshold_values_are_the_documented_ones():
    assert monitor.THRESHOLDS == {
        "input_mean": 10.0,
        "input_std": 10.0,
        "loss_decrease": 0.99,
        "ratio_low": 1e-4,
        "ratio_high": 1e-2,
        "val_loss_rise": 0.20,
        "overfit_gap": 0.10,
        "underfit_acc": 0.60,
        "dead_warn": 0.25,
        "saturated_warn": 0.25,
        "identical_tol": 1e-6,
    }


def _readme_table():
    readme = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("### What the diagnostics mean (`jnn.monitor.diagnose`)", 1)[1]
    lines = []
    for line in section.strip().splitlines():
        if not line.startswith("|"):
            break
        lines.append(line)
    cells = [[c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]] for line in lines]
    assert cells[0] == ["message", "rule (threshold)", "what to try"]
    return cells[2:]


def test_readme_diagnostics_table_matches_the_rules():
    rows = _readme_table()
    code = [
        [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        for line in monitor.diagnostics_table().splitlines()[2:]
    ]
    readme_messages = [r[0] for r in rows]
    code_messages = [d.message for d in monitor.DIAGNOSES]
    assert [m for m in code_messages if m not in readme_messages] == [], "missing in README"
    assert [m for m in readme_messages if m not in code_messages] == [], "missing in the code"
    assert rows == code  # the same rule text, threshold and advice, in the order diagnose runs
    for row, d in zip(rows, monitor.DIAGNOSES, strict=True):
        for threshold in d.thresholds:  # every threshold's value is written in its row
            assert monitor._show(threshold.value, threshold.unit) in row[1], (row, threshold)


def _planted_evidence():
    """Histories and statistics that trigger each row of the table, by its message."""
    return {
        "inputs look unscaled": ([], None, _inputs(50.0, 80.0)),
        "loss became NaN/inf": (_history(losses=[2.0, 1.0, math.inf, 1.0, 1.0]), None, None),
        "training loss is not decreasing": (_history(losses=[2.0, 2.1, 2.0, 2.1, 2.0]), None, None),
        "learning rate probably too low": (_history(ratio=1e-6), None, None),
        "learning rate probably too high": (_history(ratio=0.1), None, None),
        "validation loss rose": (_val_rising(), None, None),
        "overfitting": (_history(train_acc=1.0, val_acc=0.7), None, None),
        "underfitting": (_history(train_acc=0.3, val_acc=0.28), None, None),
        "dying ReLUs in `relu_k`": ([], _layers("relu", 0.5, "dead"), None),
        "saturated units in `tanh_k` / `sigmoid_k`": ([], _layers("tanh", 0.5, "saturated"), None),
        "identical units in `dense_k`: symmetry never broken": (
            [],
            None,
            None,
            {"dense_0": {"w": np.full((3, 4), 0.01), "b": np.zeros(4)}},
        ),
    }


def test_every_rule_says_what_its_table_row_says():
    planted = _planted_evidence()
    assert list(planted) == [d.message for d in monitor.DIAGNOSES]
    for message, (history, stats, inputs, *params) in planted.items():
        prefix = message.split("`", 1)[0]
        got = monitor.diagnose(history, stats, inputs=inputs, params=(params or [None])[0])
        assert any(m.startswith(prefix) for m in got), (message, got)
