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


def test_init_rejects_a_single_key(key):
    with pytest.raises(ValueError, match="1-D array of K PRNG keys"):
        ensemble.init(_MODEL, _OPT, key, (5, 64))


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
