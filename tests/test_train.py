"""jnn.train: the step against hand-computed NumPy, donation, vmap, fit (determinism, resume,
NaN guard, early stopping) and the digits end-to-end accuracy."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jnn import data, losses, nn, optim, train
from jnn import init as jnn_init

_MLP = nn.Serial(nn.Dense(64), nn.Relu(), nn.Dense(10))


def _sq_loss(out, target):
    return 0.5 * jnp.sum(jnp.square(out - target), axis=-1)


def _linear_problem(seed=0, batch=6, d_in=3, d_out=2):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(batch, d_in)).astype(np.float32)
    t = rng.normal(size=(batch, d_out)).astype(np.float32)
    w = rng.normal(size=(d_in, d_out)).astype(np.float32)
    b = rng.normal(size=(d_out,)).astype(np.float32)
    return x, t, w, b


def _state(w, b, optimizer):
    params = {"dense_0": {"w": jnp.asarray(w), "b": jnp.asarray(b)}}
    return train.TrainState(params, {"dense_0": {}}, optimizer.init(params), jnp.asarray(0))


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"l2": 0.3},
        {"l1": 0.2},
        {"clip_norm": 0.5},
        {"max_norm": 0.8},
        {"l2": 0.1, "clip_norm": 0.3, "max_norm": 1.0},
    ],
)
def test_one_sgd_step_matches_numpy(key, options):
    lr = 0.1
    x, t, w, b = _linear_problem()
    model = nn.Serial(nn.Dense(2))
    opt = optim.sgd(lr)
    step = train.make_step(model, _sq_loss, opt, **options)
    new, metrics = step(_state(w, b, opt), (jnp.asarray(x), jnp.asarray(t)), key)

    # Hand-computed: L = mean_i 0.5 ||x_i w + b - t_i||^2 + l1 |w|_1 + l2/2 ||w||^2.
    r = x @ w + b - t
    gw = x.T @ r / len(x) + options.get("l2", 0.0) * w + options.get("l1", 0.0) * np.sign(w)
    gb = r.mean(0)
    np.testing.assert_allclose(metrics["loss"], np.mean(0.5 * np.sum(r**2, -1)), rtol=1e-6)
    np.testing.assert_allclose(metrics["grad_norm"]["dense_0/w"], np.linalg.norm(gw), rtol=1e-5)
    np.testing.assert_allclose(metrics["grad_norm"]["dense_0/b"], np.linalg.norm(gb), rtol=1e-5)
    if "clip_norm" in options:
        g = np.sqrt(np.sum(gw**2) + np.sum(gb**2))
        factor = min(1.0, options["clip_norm"] / g)
        gw, gb = gw * factor, gb * factor
    w_new, b_new = w - lr * gw, b - lr * gb
    if "max_norm" in options:
        c = options["max_norm"]
        norms = np.linalg.norm(w_new, axis=0, keepdims=True)
        w_new = np.where(norms > c, w_new * c / norms, w_new)
    np.testing.assert_allclose(new.params["dense_0"]["w"], w_new, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(new.params["dense_0"]["b"], b_new, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        metrics["update_ratio"]["dense_0/w"],
        np.linalg.norm(w_new - w) / np.linalg.norm(w),
        rtol=1e-4,
    )
    assert set(metrics["update_ratio"]) == {"dense_0/w"}  # biases have no ratio
    assert int(new.step) == 1


def test_max_norm_bounds_every_unit(key):
    x, t, w, b = _linear_problem()
    opt = optim.sgd(10.0)  # a big step that would push columns past the bound
    step = train.make_step(nn.Serial(nn.Dense(2)), _sq_loss, opt, max_norm=0.5)
    new, _ = step(_state(w, b, opt), (jnp.asarray(x), jnp.asarray(t)), key)
    assert np.all(np.linalg.norm(np.asarray(new.params["dense_0"]["w"]), axis=0) <= 0.5 + 1e-5)


def test_step_against_optax_adam_and_accuracy(key):
    x, _, w, b = _linear_problem(d_out=3)
    y = jnp.asarray([0, 1, 2, 0, 1, 2])
    opt = optim.adam(1e-2)
    model = nn.Serial(nn.Dense(3))
    new, metrics = train.make_step(model, losses.softmax_cross_entropy, opt)(
        _state(w, b, opt), (jnp.asarray(x), y), key
    )
    # Reference: optax directly on the same objective.
    params = {"dense_0": {"w": jnp.asarray(w), "b": jnp.asarray(b)}}
    f = lambda p: jnp.mean(
        optax.softmax_cross_entropy_with_integer_labels(
            x @ p["dense_0"]["w"] + p["dense_0"]["b"][None], y
        )
    )
    g = jax.grad(f)(params)
    ref_opt = optax.adam(1e-2)
    with jax.numpy_dtype_promotion("standard"):  # optax's bias correction mixes int and float
        updates, _ = ref_opt.update(g, ref_opt.init(params), params)
    chex.assert_trees_all_close(new.params, optax.apply_updates(params, updates), rtol=1e-6)
    logits = x @ w + b
    np.testing.assert_allclose(metrics["accuracy"], np.mean(logits.argmax(-1) == np.asarray(y)))


def test_donation_deletes_inputs(key):
    x, t, w, b = _linear_problem()
    opt = optim.adam(1e-3)
    step = train.make_step(nn.Serial(nn.Dense(2)), _sq_loss, opt)
    state = _state(w, b, opt)
    new, _ = step(state, (jnp.asarray(x), jnp.asarray(t)), key)
    assert state.params["dense_0"]["w"].is_deleted()
    assert not new.params["dense_0"]["w"].is_deleted()
    kept = _state(w, b, opt)
    train.make_step(nn.Serial(nn.Dense(2)), _sq_loss, opt, donate=False)(
        kept, (jnp.asarray(x), jnp.asarray(t)), key
    )
    assert not kept.params["dense_0"]["w"].is_deleted()


# make_step(jit=False) under jax.vmap is tested in test_ensemble.py (ensemble == K runs).


def test_batchnorm_state_and_dropout_key_per_step(key):
    model = nn.Serial(nn.BatchNorm(momentum=0.9), nn.Dropout(0.5), nn.Dense(2))
    opt = optim.sgd(0.0)
    state = train.init(model, opt, key, (16, 3))
    x = jax.random.normal(jax.random.key(1), (16, 3)) + 2.0
    y = jnp.zeros((16,), jnp.int32)
    step = train.make_step(model, losses.softmax_cross_entropy, opt)
    state, m1 = step(state, (x, y), key)
    np.testing.assert_allclose(
        state.model_state["batchnorm_0"]["mean"], 0.1 * np.mean(x, 0), rtol=1e-5
    )
    np.testing.assert_allclose(
        state.model_state["batchnorm_0"]["var"], 0.9 + 0.1 * np.var(np.asarray(x), 0), rtol=1e-5
    )
    # Same key, same params (lr 0): only the fold_in of the step changes the dropout mask.
    _, m2 = step(state, (x, y), key)
    assert float(m1["loss"]) != float(m2["loss"])


def test_step_in_lax_scan_matches_python_loop(key):
    model = _MLP
    opt = optim.adam(1e-2)
    x = jax.random.normal(key, (4, 8, 64))
    y = jax.random.randint(key, (4, 8), 0, 10)
    step = train.make_step(model, losses.softmax_cross_entropy, opt, jit=False)
    s0 = train.init(model, opt, key, (8, 64))
    scanned, _ = jax.lax.scan(lambda s, b: step(s, b, key), s0, (x, y))
    s, step = s0, jax.jit(step)
    for i in range(4):
        s, _ = step(s, (x[i], y[i]), key)
    chex.assert_trees_all_close(scanned, s, rtol=1e-5)


def test_evaluate_matches_numpy_with_padding(key):
    x, _, w, b = _linear_problem(batch=7, d_out=3)
    y = np.asarray([0, 1, 2, 0, 1, 2, 2])
    params = {"dense_0": {"w": jnp.asarray(w), "b": jnp.asarray(b)}}
    got = train.evaluate(
        nn.Serial(nn.Dense(3)),
        params,
        {"dense_0": {}},
        x,
        y,
        losses.softmax_cross_entropy,
        batch_size=3,
    )
    logits = x @ w + b
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    np.testing.assert_allclose(got["loss"], -np.mean(logp[np.arange(7), y]), rtol=1e-5)
    np.testing.assert_allclose(got["accuracy"], np.mean(logits.argmax(-1) == y), rtol=1e-6)


# ----------------------------------------------------------------------------- fit


@pytest.fixture(scope="module")
def digits():
    return data.load_digits()


_ADAM = optim.adam(1e-3)  # one object, so fit reuses its compiled epoch across tests
_SGD = optim.sgd(0.05)


def _fit(ds, **kw):
    kw.setdefault("epochs", 3)
    kw.setdefault("key", jax.random.key(7))
    return train.fit(
        _MLP,
        losses.softmax_cross_entropy,
        _ADAM,
        (ds.x_train, ds.y_train),
        batch_size=64,
        val_data=(ds.x_val, ds.y_val),
        progress=False,
        **kw,
    )


def test_fit_is_deterministic_and_records_history(digits):
    a, b = _fit(digits), _fit(digits)
    chex.assert_trees_all_equal(a.state, b.state)
    assert len(a.history) == 3 and a.stopped is None
    rec = a.history[-1]
    assert rec["epoch"] == 3 and rec["step"] == 3 * (len(digits.x_train) // 64)
    assert set(rec["update_ratio"]) == {"dense_0/w", "dense_2/w"}
    assert set(rec["grad_norm"]) == {"dense_0/w", "dense_0/b", "dense_2/w", "dense_2/b"}
    assert a.history[0]["train_loss"] > rec["train_loss"]
    assert all(isinstance(v, float) for v in (rec["train_loss"], rec["val_acc"]))


def test_resume_is_bitwise_identical(digits, tmp_path):
    full = _fit(digits, epochs=4)
    first = _fit(digits, epochs=2, checkpoint_dir=tmp_path / "run")
    assert first.stopped is None
    resumed = _fit(digits, epochs=4, checkpoint_dir=tmp_path / "run", resume=True)
    chex.assert_trees_all_equal(resumed.state, full.state)
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3, 4]
    assert resumed.history[-1]["train_loss"] == full.history[-1]["train_loss"]


def test_existing_checkpoint_without_resume_is_refused(digits, tmp_path):
    _fit(digits, epochs=1, checkpoint_dir=tmp_path / "run")
    with pytest.raises(ValueError, match="already holds a run"):
        _fit(digits, epochs=2, checkpoint_dir=tmp_path / "run")


def test_checkpoint_every_and_resume_without_checkpoint(digits, tmp_path):
    # resume=True on an empty folder starts fresh; checkpoints land every 2 epochs and at the end.
    res = _fit(digits, epochs=3, checkpoint_dir=tmp_path / "c", checkpoint_every=2, resume=True)
    chex.assert_trees_all_equal(res.state, _fit(digits, epochs=3).state)
    saved = sorted(int(p.name) for p in (tmp_path / "c").iterdir() if p.name.isdigit())
    assert saved == [2, 3]


def test_nan_guard_names_the_step_and_keeps_last_finite_state(tmp_path):
    # A linear unit on all-ones inputs with loss -out: each SGD step adds lr to every
    # parameter, so out_k = 3k (2 weights + 1 bias). The loss turns NaN once out > 10: k = 4.
    def loss(out, target):
        del target
        return jnp.where(out[:, 0] > 10.0, jnp.nan, -out[:, 0])

    model = nn.Serial(nn.Dense(1, w_init=jnn_init.constant(0.0)))
    x, y = np.ones((8, 2), np.float32), np.zeros((8,), np.float32)
    res = train.fit(
        model,
        loss,
        optim.sgd(1.0),
        (x, y),
        epochs=10,
        batch_size=8,
        key=jax.random.key(0),
        checkpoint_dir=tmp_path / "ck",
        checkpoint_every=1,
        progress=False,
    )
    assert res.stopped == "non_finite" and "step 4" in res.message
    assert int(res.state.step) == 4 and len(res.history) == 4
    np.testing.assert_allclose(res.state.params["dense_0"]["w"], np.full((2, 1), 4.0))
    np.testing.assert_allclose(res.state.params["dense_0"]["b"], np.full((1,), 4.0))
    assert max(int(p.name) for p in (tmp_path / "ck").iterdir() if p.name.isdigit()) == 4


def test_early_stopping_restores_best(digits):
    res = train.fit(
        _MLP,
        losses.softmax_cross_entropy,
        _SGD,
        (digits.x_train, digits.y_train),
        epochs=40,
        batch_size=64,
        key=jax.random.key(3),
        val_data=(digits.x_val, digits.y_val),
        patience=2,
        progress=False,
    )
    assert res.stopped == "early_stopping"
    accs = [r["val_acc"] for r in res.history]
    best = int(np.argmax(accs)) + 1
    assert len(accs) == best + 2 and len(accs) < 40
    # The returned state is the best epoch's: the same seed trained for exactly `best` epochs.
    ref = train.fit(
        _MLP,
        losses.softmax_cross_entropy,
        _SGD,
        (digits.x_train, digits.y_train),
        epochs=best,
        batch_size=64,
        key=jax.random.key(3),
        progress=False,
    )
    chex.assert_trees_all_equal(res.state, ref.state)


@pytest.mark.parametrize(
    ("x", "y", "match"),
    [
        (np.ones((10, 3), np.float32), np.full((10,), 7), r"labels must be in \[0, 5\)"),
        (np.full((10, 3), np.nan, np.float32), np.zeros((10,), int), "NaN"),
        (np.ones((4, 3), np.float32), np.zeros((4,), int), "batch_size"),
    ],
)
def test_fit_rejects_bad_inputs_before_training(x, y, match):
    model = nn.Serial(nn.Dense(5))
    with pytest.raises(ValueError, match=match):
        train.fit(
            model,
            losses.softmax_cross_entropy,
            optim.sgd(0.1),
            (x, y),
            epochs=1,
            batch_size=8,
            key=jax.random.key(0),
            progress=False,
        )


def test_digits_mlp_reaches_97_percent(digits):
    model = nn.Serial(nn.Dense(256), nn.Relu(), nn.Dense(10))
    res = train.fit(
        model,
        losses.softmax_cross_entropy,
        optim.adam(1e-3),
        (digits.x_train, digits.y_train),
        epochs=20,
        batch_size=32,
        key=jax.random.key(0),
        val_data=(digits.x_val, digits.y_val),
        step_options={"l2": 1e-4},
        progress=False,
    )
    test = train.evaluate(
        model,
        res.state.params,
        res.state.model_state,
        digits.x_test,
        digits.y_test,
        losses.softmax_cross_entropy,
    )
    assert test["accuracy"] >= 0.97, test


def test_fit_equals_a_hand_written_loop_with_the_documented_keys(digits):
    """fit's key rule, from its docstring: init_key, run_key = split(key); epoch e uses
    split(fold_in(run_key, e)) = (order_key, step_key); the order is batch_indices(order_key)
    and make_step folds the step counter into step_key. Using one key for every epoch (the
    same shuffle and dropout masks each epoch) would fail this test."""
    model = nn.Serial(nn.Dense(32), nn.Relu(), nn.Dropout(0.3), nn.Dense(10))
    opt = optim.sgd(0.05)
    key = jax.random.key(11)
    res = train.fit(
        model,
        losses.softmax_cross_entropy,
        opt,
        (digits.x_train, digits.y_train),
        epochs=3,
        batch_size=128,
        key=key,
        progress=False,
    )
    init_key, run_key = jax.random.split(key)
    state = train.init(model, opt, init_key, (128, 64))
    step = train.make_step(model, losses.softmax_cross_entropy, opt, monitor=False)
    orders = []
    for epoch in range(3):
        order_key, step_key = jax.random.split(jax.random.fold_in(run_key, epoch))
        idx = np.asarray(data.batch_indices(order_key, len(digits.x_train), 128))
        orders.append(idx)
        for batch in idx:
            state, _ = step(state, (digits.x_train[batch], digits.y_train[batch]), step_key)
    chex.assert_trees_all_close(res.state.params, state.params, rtol=1e-5, atol=1e-6)
    assert not np.array_equal(orders[0], orders[1])  # a fresh permutation every epoch
    seen = np.unique(np.concatenate([o.ravel() for o in orders]))
    assert len(seen) == len(digits.x_train)  # dropping each epoch's remainder loses nothing


def test_recorded_learning_rate_is_the_schedule_at_the_last_update(digits):
    from jnn import schedules

    schedule = schedules.cosine_decay_schedule(0.1, 40)
    res = train.fit(
        _MLP,
        losses.softmax_cross_entropy,
        optim.sgd(schedule),
        (digits.x_train, digits.y_train),
        epochs=4,
        batch_size=128,
        key=jax.random.key(0),
        learning_rate=schedule,
        progress=False,
    )
    for record in res.history:
        assert record["learning_rate"] == pytest.approx(float(schedule(record["step"] - 1)))
    rates = [r["learning_rate"] for r in res.history]
    assert rates == sorted(rates, reverse=True) and rates[0] > 2 * rates[-1]


def test_fit_accepts_raw_keys_and_gives_the_typed_key_result(digits):
    a = _fit(digits, epochs=1)
    b = _fit(digits, epochs=1, key=jax.random.PRNGKey(7))
    chex.assert_trees_all_equal(a.state, b.state)

    state = train.init(_MLP, _ADAM, jax.random.PRNGKey(0), (8, 64))
    chex.assert_trees_all_equal(state, train.init(_MLP, _ADAM, jax.random.key(0), (8, 64)))
    step = train.make_step(_MLP, losses.softmax_cross_entropy, _ADAM, donate=False)
    batch = (jnp.asarray(digits.x_train[:8]), jnp.asarray(digits.y_train[:8]))
    chex.assert_trees_all_equal(
        step(state, batch, jax.random.PRNGKey(1))[0], step(state, batch, jax.random.key(1))[0]
    )


def test_monitor_every_n_steps(key):
    x, t, w, b = _linear_problem()
    opt = optim.sgd(0.1)
    step = train.make_step(nn.Serial(nn.Dense(2)), _sq_loss, opt, monitor=3, donate=False)
    state = _state(w, b, opt)
    seen = []
    for _ in range(7):
        state, metrics = step(state, (jnp.asarray(x), jnp.asarray(t)), key)
        seen.append(bool(np.isfinite(metrics["grad_norm"]["dense_0/w"])))
    assert seen == [True, False, False, True, False, False, True]  # steps 0, 3, 6
    off = train.make_step(nn.Serial(nn.Dense(2)), _sq_loss, opt, monitor=False)
    assert off(_state(w, b, opt), (jnp.asarray(x), jnp.asarray(t)), key)[1]["grad_norm"] == {}


def test_bfloat16_fit_with_batchnorm_and_evaluate(digits):
    model = nn.Serial(nn.Dense(32), nn.BatchNorm(), nn.Relu(), nn.Dense(10))
    res = train.fit(
        model,
        losses.softmax_cross_entropy,
        optim.adam(1e-2),
        (digits.x_train, digits.y_train),
        epochs=3,
        batch_size=64,
        key=jax.random.key(0),
        dtype=jnp.bfloat16,
        progress=False,
        val_data=(digits.x_val.astype(jnp.bfloat16), digits.y_val),
    )
    assert res.stopped is None
    assert res.state.params["dense_0"]["w"].dtype == jnp.bfloat16
    assert res.state.model_state["batchnorm_1"]["mean"].dtype == jnp.bfloat16
    got = train.evaluate(
        model,
        res.state.params,
        res.state.model_state,
        digits.x_test,
        digits.y_test,
        losses.softmax_cross_entropy,
    )
    assert got["accuracy"] > 0.8


def test_fit_on_one_example_per_class_names_only_what_the_user_gave():
    # fit never carves a validation split: one example per class trains as given ...
    model = nn.Serial(nn.Dense(5))
    x, y = np.eye(5, 3, dtype=np.float32), np.arange(5)
    args = (model, losses.softmax_cross_entropy, optim.sgd(0.1))
    options = dict(epochs=1, batch_size=5, key=jax.random.key(0), progress=False)
    res = train.fit(*args, (x, y), **options)
    assert len(res.history) == 1
    # ... and a bad val_data is named as such, never as the training arrays.
    bad_x = np.full((5, 3), np.nan, np.float32)
    with pytest.raises(ValueError, match="x_val contains NaN"):
        train.fit(*args, (x, y), val_data=(bad_x, y), **options)
    with pytest.raises(ValueError, match="got 7 in y_val"):
        train.fit(*args, (x, y), val_data=(x, np.full(5, 7)), **options)


def test_recorded_learning_rate_of_a_python_branching_schedule_and_of_an_optax_one():
    from jnn.train._fit import recorded_learning_rate

    steps = lambda count: 0.1 if count < 5 else 0.01  # cannot be traced: evaluated eagerly
    assert recorded_learning_rate(steps, None, 5) == 0.1
    assert recorded_learning_rate(steps, None, 7) == 0.01
    cosine = optax.warmup_cosine_decay_schedule(0.0, 3e-3, 10, 100)
    for step in (1, 11, 57, 100):
        want = float(np.float32(cosine(step - 1)))
        assert recorded_learning_rate(cosine, None, step) == pytest.approx(want, rel=1e-6)
