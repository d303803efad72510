"""jnn.interop: Flax linen, Flax NNX and Equinox models trained by jnn, each against an
independent reference (a hand-written Flax + Optax loop, single fits, Optax's own numbers)."""

import contextlib
import functools
import io
import json

import chex
import equinox as eqx
import flax.linen as linen
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import jnn
import jnn.cli
from jnn import _tree, interop

N, D, C, B = 48, 12, 3, 16
CE = jnn.losses.softmax_cross_entropy


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N, D, 1)).astype(np.float32)
    y = (x[:, :4, 0].sum(1) > 0).astype(np.int32) + (x[:, 4:8, 0].sum(1) > 1).astype(np.int32)
    return x, y


class LinenCNN(linen.Module):
    """Conv (no bias before BatchNorm) -> BatchNorm -> relu -> Dropout -> Dense."""

    rate: float = 0.0

    @linen.compact
    def __call__(self, x, train=False):
        x = linen.Conv(4, (3,), use_bias=False)(x)
        x = linen.BatchNorm(use_running_average=not train, momentum=0.9)(x)
        x = linen.relu(x)
        x = linen.Dropout(self.rate, deterministic=not train)(x)
        return linen.Dense(C)(x.reshape(x.shape[0], -1))


class NnxNet(nnx.Module):
    def __init__(self, rngs):
        self.linear1 = nnx.Linear(D, 8, use_bias=False, rngs=rngs)
        self.bn = nnx.BatchNorm(8, rngs=rngs)
        self.drop = nnx.Dropout(0.2, rngs=rngs)
        self.linear2 = nnx.Linear(8, C, rngs=rngs)

    def __call__(self, x):
        x = x.reshape(x.shape[0], -1)
        return self.linear2(self.drop(nnx.relu(self.bn(self.linear1(x)))))


def eqx_net(key):
    k1, k2 = jax.random.split(key)
    return eqx.nn.Sequential(
        [
            eqx.nn.Lambda(jnp.ravel),
            eqx.nn.Linear(D, 8, use_bias=False, key=k1),
            eqx.nn.BatchNorm(8, "batch", mode="batch"),
            eqx.nn.Lambda(jax.nn.relu),
            eqx.nn.Dropout(0.2),
            eqx.nn.Linear(8, C, key=k2),
        ]
    )


def reference_linen_fit(module, tx, x, y, key, epochs, batch_size):
    """The Flax + Optax loop of the Flax docs, with jnn's documented key rule:
    ``init_key, run_key = split(key)``; epoch ``e``: ``order, step = split(fold_in(run_key, e))``,
    the permutation from ``order``, step ``t``'s dropout key ``fold_in(step, t)``."""
    init_key, run_key = jax.random.split(key)
    variables = module.init({"params": init_key}, jnp.zeros((batch_size, *x.shape[1:])))
    params, stats = variables["params"], variables["batch_stats"]
    opt_state = tx.init(params)

    @jax.jit
    def train_step(params, stats, opt_state, xb, yb, dropout_key):
        def loss_fn(p):
            logits, updates = module.apply(
                {"params": p, "batch_stats": stats},
                xb,
                train=True,
                rngs={"dropout": dropout_key},
                mutable=["batch_stats"],
            )
            return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean(), updates

        (_, updates), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        upd, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, upd), updates["batch_stats"], opt_state

    t = 0
    for epoch in range(epochs):
        order_key, step_key = jax.random.split(jax.random.fold_in(run_key, epoch))
        perm = np.asarray(jax.random.permutation(order_key, len(x)))
        for i in range(len(x) // batch_size):
            idx = perm[i * batch_size : (i + 1) * batch_size]
            params, stats, opt_state = train_step(
                params, stats, opt_state, x[idx], y[idx], jax.random.fold_in(step_key, t)
            )
            t += 1
    return params, stats


def _fit(model, data, key, **kw):
    kw = {"epochs": 2, "batch_size": B, "progress": False, **kw}
    return jnn.train.fit(model, CE, jnn.optim.adam(1e-2), data, key=key, **kw)


def test_linen_fit_equals_flax_optax_loop(data):
    module = LinenCNN(rate=0.3)
    key = jax.random.key(3)
    result = _fit(module, data, key)  # the module itself: wrapped with the defaults
    with jax.numpy_dtype_promotion("standard"):  # Optax's adam needs it
        params, stats = reference_linen_fit(module, optax.adam(1e-2), *data, key, 2, B)
    chex.assert_trees_all_close(result.state.params, params, atol=2e-6, rtol=2e-5)
    chex.assert_trees_all_close(result.state.model_state["batch_stats"], stats, atol=2e-6)
    assert set(result.state.params) == {"Conv_0", "BatchNorm_0", "Dense_0"}
    ratios = result.history[0]["update_ratio"]
    assert set(ratios) == {"Conv_0/kernel", "Dense_0/kernel"}  # weights only, named as Flax
    assert all(r > 0 for r in ratios.values())
    stats_ = jnn.monitor.activation_stats(
        module, result.state.params, result.state.model_state, data[0]
    )
    assert list(stats_)[:2] == ["Conv_0", "BatchNorm_0"] and stats_["Conv_0"]["kind"] == "conv"
    assert jnn.monitor.activations_note(module) is None


@pytest.mark.parametrize("raw", [False, True])
def test_linen_ensemble_member_equals_single_fit(data, raw):
    module = LinenCNN(rate=0.5)
    keys = jax.random.split(jax.random.PRNGKey(5) if raw else jax.random.key(5), 2)
    ens = jnn.ensemble.fit(
        module,
        CE,
        jnn.optim.adam(1e-2),
        data,
        epochs=1,
        batch_size=B,
        keys=keys,
        shuffle="per_member",
        progress=False,
    )
    for k in range(2):
        single = _fit(module, data, keys[k], epochs=1)
        chex.assert_trees_all_close(
            jnn.ensemble.member(ens.state.params, k), single.state.params, atol=1e-5, rtol=1e-5
        )
    probs = jnn.ensemble.predict(module, ens.state, data[0])
    chex.assert_shape(probs, (N, C))


def test_weight_rule_and_mask_on_foreign_names():
    params = {
        "Conv_0": {"kernel": jnp.ones((3, 1, 4)), "bias": jnp.ones(4)},
        "BatchNorm_0": {"scale": jnp.ones(4), "bias": jnp.ones(4)},
        "layers": {"0": {"weight": 2 * jnp.ones((3, 5)), "bias": jnp.ones(3)}},
        "norm": {"weight": jnp.ones(5), "bias": jnp.ones(5)},
    }
    mask = jnn.regularizers.weight_mask(params)
    assert mask["Conv_0"]["kernel"] and mask["layers"]["0"]["weight"]
    assert not any([mask["Conv_0"]["bias"], mask["BatchNorm_0"]["scale"], mask["norm"]["weight"]])
    # l2 = 0.5 * (12 * 1 + 15 * 4), against the closed form
    np.testing.assert_allclose(float(jnn.regularizers.l2(params)), 0.5 * (12 + 60))
    assert _tree.layer_name("layers/0/weight") == "layers/0"
    # Equinox (out, in, *window) -> jnn's (*window, in, out) for the first-layer figure
    w = jnp.arange(2 * 3 * 5.0).reshape(2, 3, 5)
    np.testing.assert_array_equal(_tree.as_in_out("conv/weight", w), np.transpose(w, (2, 1, 0)))


def test_max_norm_uses_equinox_row_units():
    w = jnp.array([[3.0, 4.0], [0.3, 0.4]])  # (out, in): row 0 has norm 5
    params = {"l": {"weight": w}}
    updates, _ = jnn.regularizers.max_norm(1.0).update(
        jax.tree.map(jnp.zeros_like, params), None, params
    )
    new = np.asarray(params["l"]["weight"] + updates["l"]["weight"])
    np.testing.assert_allclose(np.linalg.norm(new, axis=1), [1.0, 0.5], rtol=1e-6)


def test_l2_acts_on_linen_kernels(data):
    module = LinenCNN()
    key = jax.random.key(0)
    off = _fit(module, data, key, epochs=1)
    on = _fit(module, data, key, epochs=1, step_options={"l2": 10.0})
    norm = lambda p: float(jnp.sum(p["Dense_0"]["kernel"] ** 2))
    assert norm(on.state.params) < 0.9 * norm(off.state.params)
    mask = jnn.regularizers.weight_mask(on.state.params)  # the penalty's mask: kernels only
    assert mask["Dense_0"] == {"kernel": True, "bias": False}


@pytest.mark.parametrize("make", ["nnx", "equinox"])
def test_constructor_train_ensemble_and_resume(data, make, tmp_path):
    model = interop.from_nnx(NnxNet) if make == "nnx" else interop.from_equinox(eqx_net)
    x = data[0]
    key = jax.random.key(1)
    full = _fit(model, data, key, epochs=2)
    assert all(np.isfinite(r["train_loss"]) for r in full.history)
    assert full.history[-1]["train_loss"] < full.history[0]["train_loss"] + 0.5
    names = set(_tree.weight_leaves(full.state.params))
    assert names == (
        {"linear1/kernel", "linear2/kernel"}
        if make == "nnx"
        else {"layers/1/weight", "layers/5/weight"}
    )
    assert set(full.history[0]["update_ratio"]) == names
    # checkpoint after one epoch, resume to two: bitwise the uninterrupted run
    ckpt = tmp_path / "ckpt"
    _fit(model, data, key, epochs=1, checkpoint_dir=ckpt, checkpoint_every=1)
    resumed = _fit(model, data, key, epochs=2, checkpoint_dir=ckpt, checkpoint_every=1, resume=True)
    chex.assert_trees_all_equal(resumed.state.params, full.state.params)
    # ensemble: member k equals the single fit with keys[k]
    keys = jax.random.split(jax.random.key(7), 2)
    ens = jnn.ensemble.fit(
        model,
        CE,
        jnn.optim.adam(1e-2),
        data,
        epochs=1,
        batch_size=B,
        keys=keys,
        shuffle="per_member",
        progress=False,
    )
    single = _fit(model, data, keys[1], epochs=1)
    chex.assert_trees_all_close(
        jnn.ensemble.member(ens.state.params, 1), single.state.params, atol=1e-5, rtol=1e-5
    )
    w = next(iter(_tree.weight_leaves(ens.state.params).values()))
    assert not np.allclose(w[0], w[1])  # K different initialisations
    ev = jnn.ensemble.evaluate(model, ens.state, x, data[1])
    assert 0.0 <= ev["accuracy"] <= 1.0
    assert (
        jnn.monitor.activation_stats(model, single.state.params, single.state.model_state, x) == {}
    )
    assert "not collected" in jnn.monitor.activations_note(model)


def test_built_modules_refused_by_ensembles(data):
    keys = jax.random.split(jax.random.key(0), 2)
    for built in (NnxNet(nnx.Rngs(0)), eqx_net(jax.random.key(0))):
        with pytest.raises(ValueError, match="constructor"):
            jnn.ensemble.init(built, jnn.optim.adam(1e-3), keys, (B, D, 1))
        state = jnn.train.init(built, jnn.optim.adam(1e-3), keys[0], (B, D, 1))  # one model: fine
        assert _tree.weight_leaves(state.params)


def test_sweeps_the_model_ignores_are_refused(data):
    keys = jax.random.split(jax.random.key(0), 2)
    fit = functools.partial(
        jnn.ensemble.fit,
        LinenCNN(rate=0.3),
        CE,
        train_data=data,
        epochs=1,
        batch_size=B,
        keys=keys,
        progress=False,
    )
    with pytest.raises(ValueError, match="no jnn.nn.Dropout"):
        fit(optimizer=jnn.optim.adam, hyperparams={"dropout": [0.0, 0.9]})
    no_weights = jnn.nn.Serial(jnn.nn.Flatten(), jnn.nn.LayerNorm())
    with pytest.raises(ValueError, match="no weight leaves"):
        jnn.ensemble.init(
            no_weights, optax.sgd(0.1), keys, (B, D, 1), hyperparams={"l2": [0.0, 1.0]}
        )
    # an l2 sweep on foreign weights acts: members differ
    ens = fit(
        optimizer=jnn.optim.sgd, hyperparams={"l2": [0.0, 100.0], "learning_rate": [5e-3] * 2}
    )
    w = ens.state.params["Dense_0"]["kernel"]
    assert float(jnp.sum(w[1] ** 2)) < 0.5 * float(jnp.sum(w[0] ** 2))


def test_sanity_and_gradient_check_on_foreign_params(data):
    x, y = data
    # Flax's BatchNorm mixes float64 and float32 under the float64 gradient check, which the
    # suite's strict promotion refuses; users run with JAX's standard promotion.
    with jax.numpy_dtype_promotion("standard"):
        report = jnn.sanity.run_all(
            LinenCNN(rate=0.2),
            CE,
            jnn.optim.adam(1e-2),
            x,
            y,
            key=jax.random.key(0),
            n=8,
            max_steps=150,
            strengths=(0.0, 1e-1),
            warmup_steps=2,
        )
    names = [c.name for c in report.checks]
    assert names[0] == "initial_loss" and "gradients" in names, str(report)
    grads = next(c for c in report.checks if c.name == "gradients")
    rows = {r.name for r in grads.details.rows}
    assert "Conv_0/kernel" in rows and grads.ok, str(grads.details)


def test_bad_inputs():
    with pytest.raises(TypeError, match="expected a model"):
        jnn.train.init(42, optax.sgd(0.1), jax.random.key(0), (2, 3))
    with pytest.raises(TypeError, match="expected a model"):
        jnn.train.init(lambda z: z + 1, optax.sgd(0.1), jax.random.key(0), (2, 3))
    with pytest.raises(TypeError, match="flax.linen.Module"):
        interop.from_linen(NnxNet)
    with pytest.raises(TypeError, match="from_nnx"):
        interop.from_nnx(3)
    with pytest.raises(TypeError, match="from_equinox"):
        interop.from_equinox("model")


@pytest.mark.parametrize("make", ["linen", "nnx", "equinox"])
def test_bfloat16_params_train_like_float32(data, make):
    model = {
        "linen": LinenCNN(rate=0.2),
        "nnx": interop.from_nnx(NnxNet),
        "equinox": interop.from_equinox(eqx_net),
    }[make]
    key = jax.random.key(2)
    ref = _fit(model, data, key)
    # Flax's own normalisation layers promote bfloat16 with float32 (standard promotion)
    with jax.numpy_dtype_promotion("standard"):
        low = _fit(model, data, key, dtype=jnp.bfloat16)
    floats = lambda t: {
        str(a.dtype) for a in jax.tree.leaves(t) if jnp.issubdtype(a.dtype, jnp.floating)
    }
    assert floats(low.state.params) == floats(low.state.model_state) == {"bfloat16"}
    losses = [r["train_loss"] for r in low.history]
    np.testing.assert_allclose(losses, [r["train_loss"] for r in ref.history], atol=2e-2)
    gap = jax.tree.map(
        lambda a, b: float(jnp.max(jnp.abs(a.astype(jnp.float32) - b))),
        low.state.params,
        ref.state.params,
    )
    assert max(jax.tree.leaves(gap)) < 5e-2  # bfloat16 rounding of the same run


# --------------------------------------------------------------------------- jnn train --model
USER_FILE = """
from flax import nnx


class Net(nnx.Module):
    def __init__(self, features, classes, rngs):
        self.linear1 = nnx.Linear(features, 8, use_bias=False, rngs=rngs)
        self.bn = nnx.BatchNorm(8, rngs=rngs)
        self.drop = nnx.Dropout(0.2, rngs=rngs)
        self.linear2 = nnx.Linear(8, classes, rngs=rngs)

    def __call__(self, x):
        return self.linear2(self.drop(nnx.relu(self.bn(self.linear1(x)))))


def make(input_shape, num_classes):
    return lambda rngs: Net(input_shape[0], num_classes, rngs)


def raises(input_shape, num_classes):
    raise RuntimeError("no GPU here")


def returns_a_number(input_shape, num_classes):
    return 42


def wrong_outputs(input_shape, num_classes):
    return lambda rngs: Net(input_shape[0], num_classes + 1, rngs)
"""


def _cli_train(*argv):
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        rc = jnn.cli.main(["train", *argv])
    return rc, printed.getvalue()


@pytest.fixture(scope="module")
def user_run(tmp_path_factory):
    """A user's NNX file and small data; ``run(out, *argv)`` trains it through ``jnn train``."""
    tmp = tmp_path_factory.mktemp("user")
    (tmp / "user_model.py").write_text(USER_FILE)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(80, 6)).astype(np.float32)
    xt = rng.normal(size=(20, 6)).astype(np.float32)
    np.savez(
        tmp / "data.npz",
        x_train=x,
        y_train=(x[:, 0] > 0).astype(np.int32) + (x[:, 1] > 0.5),
        x_test=xt,
        y_test=(xt[:, 0] > 0).astype(np.int32) + (xt[:, 1] > 0.5),
    )
    base = [
        "--model", f"{tmp / 'user_model.py'}:make", "--data", str(tmp / "data.npz"),
        "--batch-size", "16", "--schedule", "constant", "--no-progress", "--no-plots",
        "--no-tensorboard",
    ]  # fmt: skip
    return tmp, base


def test_cli_user_model_ensemble_and_resume(user_run):
    tmp, base = user_run
    full, part = tmp / "full", tmp / "part"
    rc, text = _cli_train(*base, "--ensemble", "2", "--epochs", "2", "--out", str(full))
    assert rc == 0, text
    spec = f"{tmp / 'user_model.py'}:make"
    assert text.splitlines()[0].startswith(f"jnn train: {spec} on ")  # the spec, not widths
    assert "ensemble test accuracy" in text
    config = json.loads((full / "config.json").read_text())
    assert config["model"] == spec
    # one epoch, then --resume (from another directory: the spec is absolute) to two
    assert _cli_train(*base, "--ensemble", "2", "--epochs", "1", "--out", str(part))[0] == 0
    rc, text = _cli_train("--out", str(part), "--resume", "--epochs", "2", "--no-progress")
    assert rc == 0, text
    assert "resuming after epoch 1" in text
    records = lambda out: [
        json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()
    ]
    got, want = records(part), records(full)
    assert [r["epoch"] for r in got] == [1, 2]
    for a, b in zip(got, want, strict=True):  # the NNX RNG streams were checkpointed
        assert a["members"] == b["members"] and a["train_loss"] == b["train_loss"]
    summary = lambda out: json.loads((out / "summary.json").read_text())
    assert summary(part)["test_loss"] == summary(full)["test_loss"]
    assert len(summary(full)["members"]) == 2
    # NNX shows no submodule outputs: one line in the report instead of an empty section
    note = "activation statistics not collected: NNX models do not expose"
    assert summary(full)["activations_note"].startswith(note)
    assert note in (full / "report.md").read_text()


@pytest.mark.parametrize(
    ("spec", "extra", "message"),
    [
        ("nowhere.py:make", [], "no file"),
        ("user_model.py:missing", [], "has no function missing"),
        ("user_model.py:raises", [], "raised RuntimeError: no GPU here"),
        ("user_model.py:returns_a_number", [], "returned int, not a model"),
        ("user_model.py:wrong_outputs", [], "expected (2, 3), one score per class"),
        ("broken.py:make", [], "importing"),
        ("user_model.py:make", ["--widths", "16"], "--widths shape the built-in"),
        ("user_model.py:make", ["--dropout", "0.5"], "--dropout shape the built-in"),
    ],
)
def test_cli_bad_user_model_exits_2_in_one_line(user_run, tmp_path, capsys, spec, extra, message):
    tmp, base = user_run
    (tmp / "broken.py").write_text("import not_a_module_anywhere\n")
    argv = [*base, "--epochs", "1", *extra, "--out", str(tmp_path / "run")]
    argv[argv.index("--model") + 1] = str(tmp / spec)
    rc = jnn.cli.main(["train", *argv])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert message in err and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "run").exists()
