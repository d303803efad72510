"""jnn.ensemble: K members in one vmapped step equal K separate jnn.train runs; predict is the
mean of the members' softmax; an ensemble on digits is accurate."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jnn import data, ensemble, losses, nn, optim, train

_MODEL = nn.Serial(nn.Dense(32), nn.Relu(), nn.Dropout(0.1), nn.Dense(10))
_OPT = optim.adam(3e-3)
# Built once so the tests share their compiled programs.
_ENS_STEP = ensemble.make_step(_MODEL, losses.softmax_cross_entropy, _OPT)
_SINGLE_STEP = train.make_step(_MODEL, losses.softmax_cross_entropy, _OPT)


@pytest.fixture(scope="module")
def digits():
    return data.load_digits()


def _batches(ds, steps, batch=64):
    return [
        (
            jnp.asarray(ds.x_train[i * batch : (i + 1) * batch]),
            jnp.asarray(ds.y_train[i * batch : (i + 1) * batch]),
        )
        for i in range(steps)
    ]


def test_ensemble_equals_separate_runs(key, digits):
    k = 2
    keys = jax.random.split(key, k)
    ens = ensemble.init(_MODEL, _OPT, keys, (64, 64))
    chex.assert_shape(ens.params["dense_0"]["w"], (k, 64, 32))
    step = _ENS_STEP
    batches = _batches(digits, 3)
    step_key = jax.random.key(11)
    for b in batches:
        ens, metrics = step(ens, b, step_key)
    chex.assert_shape(metrics["loss"], (k,))

    single = _SINGLE_STEP
    member_keys = jax.random.split(step_key, k)
    for i in range(k):
        s = train.init(_MODEL, _OPT, keys[i], (64, 64))
        for b in batches:
            s, _ = single(s, b, member_keys[i])
        chex.assert_trees_all_close(ensemble.member(ens, i), s, rtol=1e-5, atol=1e-6)


def test_per_member_batches(key, digits):
    # Both members given the same batch along the member axis == one shared batch.
    k = 2
    ens = ensemble.init(_MODEL, _OPT, jax.random.split(key, k), (64, 64))
    x, y = jnp.asarray(digits.x_train[:32]), jnp.asarray(digits.y_train[:32])
    step = ensemble.make_step(_MODEL, losses.softmax_cross_entropy, _OPT, per_member_batch=True)
    copy = jax.tree.map(jnp.copy, ens)
    got, m = step(ens, (jnp.stack([x, x]), jnp.stack([y, y])), key)
    ref, m_ref = _ENS_STEP(copy, (x, y), key)
    chex.assert_trees_all_close(got, ref, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(m["loss"], m_ref["loss"], rtol=1e-6)
    # and different batches give different members' losses than the shared one
    _, m2 = step(got, (jnp.stack([x, x[::-1] * 0.0]), jnp.stack([y, y])), key)
    assert float(m2["loss"][1]) != float(m2["loss"][0])


def test_predict_is_mean_of_member_softmax(key):
    k = 2
    ens = ensemble.init(_MODEL, _OPT, jax.random.split(key, k), (64, 64))
    x = np.asarray(jax.random.normal(key, (5, 64)))
    probs = np.asarray(ensemble.predict(_MODEL, ens, x))
    ref = []
    for i in range(k):
        p = ens.params
        h = np.maximum(x @ np.asarray(p["dense_0"]["w"][i]) + np.asarray(p["dense_0"]["b"][i]), 0)
        logits = h @ np.asarray(p["dense_3"]["w"][i]) + np.asarray(p["dense_3"]["b"][i])
        e = np.exp(logits - logits.max(-1, keepdims=True))
        ref.append(e / e.sum(-1, keepdims=True))
    np.testing.assert_allclose(probs, np.mean(ref, 0), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)


def test_init_rejects_a_single_key_and_zero_keys(key):
    with pytest.raises(ValueError, match="K >= 1 PRNG keys"):
        ensemble.init(_MODEL, _OPT, key, (5, 64))
    with pytest.raises(ValueError, match="K >= 1 PRNG keys"):
        ensemble.init(_MODEL, _OPT, jax.random.split(key, 0), (5, 64))


def test_raw_and_typed_keys_give_the_same_members():
    typed = ensemble.init(_MODEL, _OPT, jax.random.split(jax.random.key(4), 3), (8, 64))
    raw = ensemble.init(_MODEL, _OPT, jax.random.split(jax.random.PRNGKey(4), 3), (8, 64))
    chex.assert_trees_all_equal(typed, raw)
    chex.assert_shape(raw.params["dense_0"]["w"], (3, 64, 32))


def test_ensemble_on_digits(key, digits):
    # Epochs as one lax.scan of the un-jitted ensemble step (ensembles compose with scan).
    k = 3
    ens = ensemble.init(_MODEL, _OPT, jax.random.split(key, k), (64, 64))
    step = ensemble.make_step(_MODEL, losses.softmax_cross_entropy, _OPT, jit=False)
    x, y = jnp.asarray(digits.x_train), jnp.asarray(digits.y_train)

    @jax.jit
    def epoch(ens, epoch_key):
        idx = data.batch_indices(epoch_key, x.shape[0], 64)
        return jax.lax.scan(lambda e, ix: step(e, (x[ix], y[ix]), epoch_key), ens, idx)[0]

    for i in range(15):
        ens = epoch(ens, jax.random.fold_in(key, i))
    probs = ensemble.predict(_MODEL, ens, digits.x_test)
    ens_acc = float(np.mean(np.asarray(probs).argmax(-1) == digits.y_test))
    member_accs = [
        train.evaluate(
            _MODEL,
            ensemble.member(ens, i).params,
            ensemble.member(ens, i).model_state,
            digits.x_test,
            digits.y_test,
            losses.softmax_cross_entropy,
        )["accuracy"]
        for i in range(k)
    ]
    assert ens_acc >= 0.95, (ens_acc, member_accs)
    assert ens_acc >= np.mean(member_accs) - 1e-6, (ens_acc, member_accs)


# ----------------------------------------------------------------------------- per member

_LINEAR = nn.Serial(nn.Dense(10))


def _steps_alone(model, opt, key, step_key, batches, **options):
    step = train.make_step(model, losses.softmax_cross_entropy, opt, **options)
    state = train.init(model, opt, key, (64, 64))
    for b in batches:
        state, _ = step(state, b, step_key)
    return state


@pytest.mark.parametrize("raw", [False, True])
def test_a_learning_rate_sweep_gives_each_member_its_own_updates(digits, raw):
    lrs = [1e-3, 1e-2, 1e-1]
    root = jax.random.PRNGKey(1) if raw else jax.random.key(1)
    keys, step_key = jax.random.split(root, 3), jax.random.key(5)
    batches = _batches(digits, 3)
    ens = ensemble.init(_LINEAR, optim.adam, keys, (64, 64), hyperparams={"learning_rate": lrs})
    step = ensemble.make_step(
        _LINEAR, losses.softmax_cross_entropy, optim.adam, hyperparams={"learning_rate": lrs}
    )
    for b in batches:
        ens, _ = step(ens, b, step_key)
    member_keys = ensemble.member_keys(step_key, 3)
    moved = []
    for k, lr in enumerate(lrs):
        alone = _steps_alone(_LINEAR, optim.adam(lr), keys[k], member_keys[k], batches)
        chex.assert_trees_all_close(
            ensemble.member(ens, k).params, alone.params, rtol=1e-5, atol=1e-6
        )
        start = train.init(_LINEAR, optim.adam(lr), keys[k], (64, 64)).params["dense_0"]["w"]
        moved.append(float(jnp.abs(alone.params["dense_0"]["w"] - start).max()))
    assert moved[0] < moved[1] < moved[2]  # Adam's step ~ lr: ten times the rate, ten times


@pytest.mark.parametrize("inject", ["jnn", "optax"])
def test_inject_hyperparams_optimizers_take_per_member_values(digits, inject):
    import optax

    wrap = optim.inject_hyperparams if inject == "jnn" else optax.inject_hyperparams
    opt = wrap(optim.adam)(learning_rate=1e-3)
    lrs = [1e-3, 3e-2]
    keys, step_key = jax.random.split(jax.random.key(2)), jax.random.key(6)
    hp = {"learning_rate": lrs}
    with jax.numpy_dtype_promotion("standard"):
        ens = ensemble.init(_LINEAR, opt, keys, (64, 64), hyperparams=hp)
        step = ensemble.make_step(_LINEAR, losses.softmax_cross_entropy, opt, hyperparams=hp)
        np.testing.assert_allclose(ens.opt_state.hyperparams["learning_rate"], lrs, rtol=1e-7)
        for b in _batches(digits, 2):
            ens, _ = step(ens, b, step_key)
    for k, lr in enumerate(lrs):
        alone = _steps_alone(
            _LINEAR,
            optim.adam(lr),
            keys[k],
            ensemble.member_keys(step_key, 2)[k],
            _batches(digits, 2),
        )
        chex.assert_trees_all_close(
            ensemble.member(ens, k).params, alone.params, rtol=1e-5, atol=1e-6
        )


@pytest.mark.parametrize("kind", ["factory", "injected"])
def test_history_records_each_members_learning_rate(digits, kind):
    import optax

    lrs = [1e-3, 3e-2, 0.25]
    opt = optim.adam if kind == "factory" else optax.inject_hyperparams(optax.sgd)(0.1)
    with jax.numpy_dtype_promotion("standard"):
        result = _ens_fit(
            digits,
            epochs=1,
            optimizer=opt,
            keys=jax.random.split(jax.random.key(4), 3),
            hyperparams={"learning_rate": lrs},
        )
    got = [row["learning_rate"] for row in result.history[-1]["members"]]
    np.testing.assert_allclose(got, lrs, rtol=1e-6)
    assert result.history[-1]["learning_rate"] == pytest.approx(np.mean(lrs), rel=1e-6)


def test_per_member_l2_and_dropout_equal_single_runs(digits):

    model = nn.Serial(nn.Dense(32), nn.Relu(), nn.Dropout(0.5), nn.Dense(10))
    hp = {"l2": [0.0, 0.1], "dropout": [0.1, 0.6]}
    keys, step_key = jax.random.split(jax.random.key(3)), jax.random.key(7)
    opt = optim.sgd(0.1)
    ens = ensemble.init(model, opt, keys, (64, 64), hyperparams=hp)
    step = ensemble.make_step(model, losses.softmax_cross_entropy, opt, hyperparams=hp)
    batches = _batches(digits, 3)
    for b in batches:
        ens, _ = step(ens, b, step_key)
    for k in range(2):
        alone_model = nn.Serial(nn.Dense(32), nn.Relu(), nn.Dropout(hp["dropout"][k]), nn.Dense(10))
        alone = _steps_alone(
            alone_model, opt, keys[k], ensemble.member_keys(step_key, 2)[k], batches, l2=hp["l2"][k]
        )
        chex.assert_trees_all_close(
            ensemble.member(ens, k).params, alone.params, rtol=1e-5, atol=1e-6
        )


def test_per_member_input_noise_equals_single_runs(digits):
    model = nn.Serial(nn.GaussianNoise(0.0), nn.Dense(32), nn.Relu(), nn.Dense(10))
    hp = {"input_noise": [0.0, 0.5]}
    keys, step_key = jax.random.split(jax.random.key(3)), jax.random.key(7)
    opt = optim.sgd(0.1)
    ens = ensemble.init(model, opt, keys, (64, 64), hyperparams=hp)
    step = ensemble.make_step(model, losses.softmax_cross_entropy, opt, hyperparams=hp)
    batches = _batches(digits, 3)
    for b in batches:
        ens, _ = step(ens, b, step_key)
    for k in range(2):
        alone_model = ensemble.with_input_noise(model, hp["input_noise"][k])
        assert alone_model.layers[0] == nn.GaussianNoise(hp["input_noise"][k])
        alone = _steps_alone(
            alone_model, opt, keys[k], ensemble.member_keys(step_key, 2)[k], batches
        )
        chex.assert_trees_all_close(
            ensemble.member(ens, k).params, alone.params, rtol=1e-5, atol=1e-6
        )


def test_new_hyperparameter_values_reuse_the_compiled_step(digits):
    keys, step_key = jax.random.split(jax.random.key(0), 4), jax.random.key(1)
    b = _batches(digits, 1)[0]
    cores = []
    for lrs in ([1e-3, 2e-3, 3e-3, 4e-3], [1e-1, 1e-2, 1e-3, 1e-4]):
        hp = {"learning_rate": lrs}
        ens = ensemble.init(_LINEAR, optim.sgd, keys, (64, 64), hyperparams=hp)
        step = ensemble.make_step(_LINEAR, losses.softmax_cross_entropy, optim.sgd, hyperparams=hp)
        step(ens, b, step_key)
        cores.append(
            ensemble._step._core(
                _LINEAR,
                losses.softmax_cross_entropy,
                optim.sgd,
                (("monitor", False),),
                False,
                None,
                True,
            )
        )
    assert cores[0] is cores[1]
    assert cores[0]._cache_size() == 1  # one compiled program served both sweeps


# ----------------------------------------------------------------------------- fit

_FIT_MODEL = nn.Serial(nn.Dense(32), nn.Relu(), nn.Dense(10))


def _ens_fit(ds, **kw):
    kw.setdefault("epochs", 2)
    return ensemble.fit(
        _FIT_MODEL,
        losses.softmax_cross_entropy,
        kw.pop("optimizer", optim.adam if "hyperparams" in kw else _OPT),
        (ds.x_train, ds.y_train),
        batch_size=64,
        val_data=(ds.x_val, ds.y_val),
        progress=False,
        **kw,
    )


def _alone_fit(ds, opt, key, **kw):
    return train.fit(
        _FIT_MODEL,
        losses.softmax_cross_entropy,
        opt,
        (ds.x_train, ds.y_train),
        epochs=kw.pop("epochs", 2),
        batch_size=64,
        key=key,
        val_data=(ds.x_val, ds.y_val),
        progress=False,
        **kw,
    )


@pytest.mark.parametrize("raw", [False, True])
def test_fit_per_member_order_equals_train_fit_with_each_key(digits, raw):
    root = jax.random.PRNGKey(9) if raw else jax.random.key(9)
    keys = jax.random.split(root, 2)
    lrs = [3e-3, 1e-2]
    res = _ens_fit(digits, keys=keys, hyperparams={"learning_rate": lrs}, shuffle="per_member")
    assert res.stopped is None and res.alive.all()
    for k, lr in enumerate(lrs):
        alone = _alone_fit(digits, optim.adam(lr), keys[k])
        chex.assert_trees_all_close(
            ensemble.member(res.state, k).params, alone.state.params, rtol=1e-4, atol=1e-5
        )
        got = [r["members"][k]["val_acc"] for r in res.history]
        np.testing.assert_allclose(got, [r["val_acc"] for r in alone.history], atol=1e-6)


def test_one_diverging_member_is_frozen_and_excluded(digits):
    keys = jax.random.split(jax.random.key(4), 3)
    lrs = [0.05, 1e4, 0.1]  # the middle one diverges
    res = _ens_fit(
        digits,
        keys=keys,
        optimizer=optim.sgd,
        hyperparams={"learning_rate": lrs},
        shuffle="per_member",
    )
    assert res.stopped is None and list(res.alive) == [True, False, True]
    diverged = res.diverged[1]
    assert diverged["hyperparams"] == {"learning_rate": pytest.approx(1e4)}
    alone = _alone_fit(digits, optim.sgd(1e4), keys[1])
    assert alone.stopped == "non_finite" and f"at step {diverged['step']} " in alone.message
    # frozen at its last finite state (step by step chaotic at lr 1e4, so compare the step)
    frozen = ensemble.member(res.state, 1)
    assert int(frozen.step) == diverged["step"] == int(alone.state.step)
    assert all(np.isfinite(np.asarray(v)).all() for v in jax.tree.leaves(frozen.params))
    for k in (0, 2):  # the others trained on, exactly as alone
        ok = _alone_fit(digits, optim.sgd(lrs[k]), keys[k])
        np.testing.assert_allclose(
            res.history[-1]["members"][k]["train_loss"], ok.history[-1]["train_loss"], rtol=1e-5
        )
    last = res.history[-1]
    assert last["alive"] == 2 and last["members"][1]["diverged_at"] == diverged["step"]
    probs = ensemble.predict(_FIT_MODEL, res.state, digits.x_val, members=res.alive)
    want = np.mean(np.asarray(probs).argmax(-1) == digits.y_val)
    np.testing.assert_allclose(last["val_acc"], want, atol=1e-6)  # the ensemble excludes it


def test_every_member_diverging_stops_the_run(digits):
    res = _ens_fit(
        digits,
        keys=jax.random.split(jax.random.key(0), 2),
        optimizer=optim.sgd,
        hyperparams={"learning_rate": [1e4, 3e4]},
    )
    assert res.stopped == "non_finite" and "every member diverged" in res.message


def test_member_chunks_give_the_same_results(digits):
    keys = jax.random.split(jax.random.key(5), 4)
    hp = {"learning_rate": [1e-3, 2e-3, 3e-3, 4e-3]}
    whole = _ens_fit(digits, keys=keys, hyperparams=hp, epochs=2)
    chunked = _ens_fit(digits, keys=keys, hyperparams=hp, epochs=2, member_chunk=2)
    chex.assert_trees_all_close(whole.state.params, chunked.state.params, rtol=1e-5, atol=1e-6)
    a = ensemble.evaluate(_FIT_MODEL, whole.state, digits.x_test, digits.y_test)
    b = ensemble.evaluate(_FIT_MODEL, whole.state, digits.x_test, digits.y_test, member_chunk=3)
    for name in ("accuracy", "nll", "brier", "ece"):
        np.testing.assert_allclose(a[name], b[name], rtol=1e-5)


def test_ensemble_fit_resume_is_bitwise_exact(digits, tmp_path):
    keys = jax.random.split(jax.random.key(8), 2)
    kw = dict(keys=keys, hyperparams={"learning_rate": [1e-3, 1e-2]}, shuffle="per_member")
    full = _ens_fit(digits, epochs=4, **kw)
    _ens_fit(digits, epochs=2, checkpoint_dir=tmp_path / "ck", **kw)
    resumed = _ens_fit(digits, epochs=4, checkpoint_dir=tmp_path / "ck", resume=True, **kw)
    chex.assert_trees_all_equal(resumed.state, full.state)
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3, 4]


def test_evaluate_against_numpy(digits):
    res = _ens_fit(digits, keys=jax.random.split(jax.random.key(1), 3), epochs=2)
    got = ensemble.evaluate(_FIT_MODEL, res.state, digits.x_test, digits.y_test)
    member_probs = []
    for k in range(3):
        p = ensemble.member(res.state, k).params
        h = np.maximum(
            digits.x_test @ np.asarray(p["dense_0"]["w"]) + np.asarray(p["dense_0"]["b"]), 0
        )
        z = h @ np.asarray(p["dense_2"]["w"]) + np.asarray(p["dense_2"]["b"])
        e = np.exp(z - z.max(-1, keepdims=True))
        member_probs.append(e / e.sum(-1, keepdims=True))
    mixed, y = np.mean(member_probs, 0), digits.y_test
    onehot = np.eye(10)[y]
    np.testing.assert_allclose(got["accuracy"], np.mean(mixed.argmax(-1) == y), atol=1e-6)
    np.testing.assert_allclose(got["nll"], -np.mean(np.log(mixed[np.arange(len(y)), y])), rtol=1e-4)
    np.testing.assert_allclose(got["brier"], np.mean(np.sum((mixed - onehot) ** 2, -1)), rtol=1e-4)
    conf, hit = mixed.max(-1), mixed.argmax(-1) == y
    bins = np.minimum((conf * 15).astype(int) - (conf * 15 == (conf * 15).astype(int)), 14)
    ece = sum(
        abs(hit[bins == b].mean() - conf[bins == b].mean()) * np.mean(bins == b)
        for b in range(15)
        if np.any(bins == b)
    )
    np.testing.assert_allclose(got["ece"], ece, atol=1e-4)
    accs = [m["accuracy"] for m in got["members"]]
    for k in range(3):
        np.testing.assert_allclose(accs[k], np.mean(member_probs[k].argmax(-1) == y), atol=1e-6)
    assert got["accuracy"] >= np.mean(accs) - 1e-6


def test_snapshots_keep_the_end_of_each_cycle(digits):
    keys = jax.random.split(jax.random.key(2), 2)
    res = _ens_fit(digits, keys=keys, epochs=4, snapshots=2)
    chex.assert_shape(res.snapshot_state.params["dense_0"]["w"], (4, 64, 32))  # S * K members
    at_2 = _ens_fit(digits, keys=keys, epochs=2)
    chex.assert_trees_all_close(
        jax.tree.map(lambda a: a[:2], res.snapshot_state.params), at_2.state.params, rtol=1e-6
    )
    chex.assert_trees_all_close(
        jax.tree.map(lambda a: a[2:], res.snapshot_state.params), res.state.params, rtol=1e-6
    )


def test_bootstrap_members_train_on_different_resamples(digits):
    keys = jax.random.split(jax.random.key(3), 2)
    a = _ens_fit(digits, keys=keys, epochs=1, bootstrap=True)
    b = _ens_fit(digits, keys=keys, epochs=1, bootstrap=True)
    chex.assert_trees_all_equal(a.state, b.state)  # deterministic
    shared = _ens_fit(digits, keys=keys, epochs=1, shuffle="per_member")
    assert not np.allclose(a.state.params["dense_0"]["w"], shared.state.params["dense_0"]["w"])


def test_ema_is_the_debiased_average_of_the_params(digits):
    model = nn.Serial(nn.Dense(10))
    res = ensemble.fit(
        model,
        losses.softmax_cross_entropy,
        optim.sgd(0.05),
        (digits.x_train, digits.y_train),
        epochs=1,
        batch_size=256,
        keys=jax.random.split(jax.random.key(0), 2),
        ema=0.9,
        progress=False,
    )
    # member 0's steps by hand (fit's documented keys); average the params in NumPy
    alone_keys = jax.random.split(jax.random.key(0), 2)
    init_key, run_key = jax.random.split(alone_keys[0])
    state = train.init(model, optim.sgd(0.05), init_key, (256, 64))
    step = train.make_step(model, losses.softmax_cross_entropy, optim.sgd(0.05), monitor=False)
    order, step_key = jax.random.split(jax.random.fold_in(run_key, 0))
    ema, weight = 0.0, 0.0
    for idx in data.batch_indices(order, len(digits.x_train), 256):
        state, _ = step(
            state, (digits.x_train[np.asarray(idx)], digits.y_train[np.asarray(idx)]), step_key
        )
        ema = 0.9 * ema + 0.1 * np.asarray(state.params["dense_0"]["w"])
        weight = 0.9 * weight + 0.1
    np.testing.assert_allclose(
        res.ema_state.params["dense_0"]["w"][0], ema / weight, rtol=1e-5, atol=1e-6
    )


def test_recompute_batch_stats_estimates_the_data_statistics():
    x = np.random.default_rng(0).normal(3.0, 2.0, size=(2048, 4)).astype(np.float32)
    model = nn.Serial(nn.BatchNorm(), nn.Dense(2))
    params, state = model.init(jax.random.key(0), (8, 4))
    new = train.recompute_batch_stats(model, params, state, x, batch_size=256, passes=64)
    np.testing.assert_allclose(new["batchnorm_0"]["mean"], x.mean(0), atol=0.15)
    np.testing.assert_allclose(new["batchnorm_0"]["var"], x.var(0), rtol=0.1)
