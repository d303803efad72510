"""jnn.regularizers: the weight mask, penalty values, and the max-norm constraint."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jnn import regularizers as R


def make_params(seed=0):
    rng = np.random.default_rng(seed)
    f = lambda *s: jnp.asarray(rng.normal(size=s).astype(np.float32))
    return {
        "dense_0": {"w": f(4, 3), "b": f(3)},
        "batchnorm_1": {"scale": f(3), "offset": f(3)},
        "relu_2": {},
        "conv_3": {"w": f(3, 3, 2, 5), "b": f(5)},
        "block_4": {"dense_0": {"w": f(5, 2), "b": f(2)}},
    }


def test_weight_mask():
    mask = R.weight_mask(make_params())
    assert mask == {
        "dense_0": {"w": True, "b": False},
        "batchnorm_1": {"scale": False, "offset": False},
        "relu_2": {},
        "conv_3": {"w": True, "b": False},
        "block_4": {"dense_0": {"w": True, "b": False}},
    }


def test_l2_and_l1_values_cover_weights_only():
    p = make_params()
    ws = [
        np.asarray(p["dense_0"]["w"]),
        np.asarray(p["conv_3"]["w"]),
        np.asarray(p["block_4"]["dense_0"]["w"]),
    ]
    want_l2 = 0.5 * sum(float((w.astype(np.float64) ** 2).sum()) for w in ws)
    want_l1 = sum(float(np.abs(w.astype(np.float64)).sum()) for w in ws)
    assert float(R.l2(p)) == pytest.approx(want_l2, rel=1e-5)
    assert float(R.l1(p)) == pytest.approx(want_l1, rel=1e-5)
    # Changing a bias or a normalisation parameter changes neither penalty.
    q = jax.tree.map(lambda x: x, p)
    q["dense_0"]["b"] = q["dense_0"]["b"] * 100
    q["batchnorm_1"]["scale"] = q["batchnorm_1"]["scale"] * 100
    assert float(R.l2(q)) == float(R.l2(p))
    assert float(R.l1(q)) == float(R.l1(p))


def test_custom_masks():
    p = make_params()
    everything = jax.tree.map(lambda _: True, p)
    want = 0.5 * sum(float((np.asarray(x, np.float64) ** 2).sum()) for x in jax.tree.leaves(p))
    assert float(R.l2(p, everything)) == pytest.approx(want, rel=1e-5)
    assert float(R.l2(p, lambda params: jax.tree.map(lambda _: True, params))) == pytest.approx(
        want, rel=1e-5
    )
    nothing = jax.tree.map(lambda _: False, p)
    assert float(R.l1(p, nothing)) == 0.0
    with pytest.raises(ValueError, match="one bool per parameter leaf"):
        R.l2(p, {"dense_0": {"w": True}})


def test_gradients_and_coefficient():
    p = make_params()
    g = jax.grad(lambda q: R.l2(q, coefficient=0.3))(p)
    chex.assert_trees_all_close(g["dense_0"]["w"], 0.3 * p["dense_0"]["w"], rtol=1e-6)
    chex.assert_trees_all_close(g["dense_0"]["b"], jnp.zeros(3))
    chex.assert_trees_all_close(g["batchnorm_1"]["scale"], jnp.zeros(3))
    g1 = jax.grad(lambda q: R.l1(q, coefficient=2.0))(p)
    chex.assert_trees_all_close(g1["conv_3"]["w"], 2.0 * jnp.sign(p["conv_3"]["w"]))
    # A larger coefficient gives a larger penalty (and a larger total loss).
    data_loss = 1.7
    totals = [data_loss + float(R.l2(p, coefficient=c)) for c in (0.0, 1e-3, 1e-1, 1.0)]
    assert np.all(np.diff(totals) > 0)
    totals = [data_loss + float(R.l1(p, coefficient=c)) for c in (0.0, 1e-3, 1e-1, 1.0)]
    assert np.all(np.diff(totals) > 0)
    assert float(jax.jit(R.l2)(p)) == pytest.approx(float(R.l2(p)), rel=1e-6)


def test_l2_gives_the_ridge_solution():
    """0.5||Xw - y||^2 + lam * l2(w) is minimised by (X^T X + lam I)^-1 X^T y."""
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(50, 4)), rng.normal(size=50)
    norms = []
    with jax.enable_x64(True):
        for lam in (0.1, 10.0, 1000.0):
            w_star = np.linalg.solve(x.T @ x + lam * np.eye(4), x.T @ y)
            objective = lambda p, lam=lam: (
                0.5 * jnp.sum((x @ p["w"] - y) ** 2) + R.l2(p, coefficient=lam)
            )
            grad = jax.grad(objective)({"w": jnp.asarray(w_star)})
            assert np.abs(np.asarray(grad["w"])).max() < 1e-9
            norms.append(np.linalg.norm(w_star))
    assert np.all(np.diff(norms) < 0)  # stronger L2, smaller weights


def test_dtype():
    with jax.enable_x64(True):
        p = {"dense_0": {"w": jnp.ones((2, 2), jnp.float64), "b": jnp.ones(2, jnp.float64)}}
        assert R.l2(p).dtype == jnp.float64
        assert R.l1(p).dtype == jnp.float64
    assert R.l2({"dense_0": {"b": jnp.ones(2)}}).dtype == jnp.float32  # nothing masked: zero


# ----- max-norm -----


def _column_norms(w):
    w = np.asarray(w, np.float64)
    return np.sqrt((w**2).reshape(-1, w.shape[-1]).sum(0))


def test_max_norm_caps_columns_and_leaves_others_untouched():
    c = 1.0
    p = {
        "dense_0": {"w": jnp.zeros((3, 4)), "b": jnp.zeros(4)},
        "conv_1": {"w": jnp.zeros((2, 2, 3, 2)), "b": jnp.zeros(2)},
    }
    dense_update = np.array(
        [[3.0, 0.1, 0.0, 0.5], [4.0, 0.2, 0.0, 0.5], [0.0, 0.3, 0.0, 0.5]], np.float32
    )  # column norms 5, ~0.37, 0, ~0.87
    conv_update = np.zeros((2, 2, 3, 2), np.float32)
    conv_update[..., 0] = 1.0  # filter norm sqrt(12) > c
    conv_update[..., 1] = 0.1  # filter norm ~0.35 < c
    u = {
        "dense_0": {"w": jnp.asarray(dense_update), "b": jnp.full(4, 10.0)},
        "conv_1": {"w": jnp.asarray(conv_update), "b": jnp.full(2, 10.0)},
    }
    tx = R.max_norm(c)
    new_u, _ = tx.update(u, tx.init(p), p)
    new_p = optax.apply_updates(p, new_u)
    dn, cn = _column_norms(new_p["dense_0"]["w"]), _column_norms(new_p["conv_1"]["w"])
    assert np.all(dn <= c + 1e-6) and np.all(cn <= c + 1e-6)
    assert dn[0] == pytest.approx(c, rel=1e-6) and cn[0] == pytest.approx(c, rel=1e-6)
    # The capped column keeps its direction (3, 4, 0) / 5.
    chex.assert_trees_all_close(
        new_p["dense_0"]["w"][:, 0], jnp.asarray([0.6, 0.8, 0.0]), atol=1e-6
    )
    # Columns below c and all biases: exactly the unconstrained result.
    chex.assert_trees_all_equal(new_p["dense_0"]["w"][:, 1:], jnp.asarray(dense_update[:, 1:]))
    chex.assert_trees_all_equal(new_p["conv_1"]["w"][..., 1], jnp.asarray(conv_update[..., 1]))
    chex.assert_trees_all_equal(new_u["dense_0"]["b"], u["dense_0"]["b"])
    chex.assert_trees_all_equal(new_u["conv_1"]["b"], u["conv_1"]["b"])


def test_max_norm_in_an_optax_chain_holds_every_step():
    rng = np.random.default_rng(0)
    c = 2.0
    params = {
        "dense_0": {
            "w": jnp.asarray(rng.normal(size=(6, 3)).astype(np.float32)) * 0.1,
            "b": jnp.zeros(3),
        }
    }
    x = jnp.asarray(rng.normal(size=(32, 6)).astype(np.float32))
    y = jnp.asarray(rng.normal(size=(32, 3)).astype(np.float32)) * 50  # pulls weights outward
    loss = lambda p: jnp.mean((x @ p["dense_0"]["w"] + p["dense_0"]["b"][None] - y) ** 2)
    tx = optax.chain(optax.sgd(0.05), R.max_norm(c))
    state = tx.init(params)

    @jax.jit
    def step(params, state):
        updates, state = tx.update(jax.grad(loss)(params), state, params)
        return optax.apply_updates(params, updates), state

    unconstrained = optax.sgd(0.05)
    free, free_state = params, unconstrained.init(params)
    for _ in range(20):
        params, state = step(params, state)
        assert np.all(_column_norms(params["dense_0"]["w"]) <= c + 1e-5)
        u, free_state = unconstrained.update(jax.grad(loss)(free), free_state, free)
        free = optax.apply_updates(free, u)
    assert np.any(_column_norms(free["dense_0"]["w"]) > c)  # the constraint was active


def test_max_norm_needs_params_and_positive_c():
    p = {"dense_0": {"w": jnp.ones((2, 2))}}
    tx = R.max_norm(1.0)
    with pytest.raises(ValueError, match="needs the current params"):
        tx.update(p, tx.init(p))
    with pytest.raises(ValueError, match="c must be > 0"):
        R.max_norm(0.0)


def test_max_norm_custom_mask():
    p = {"dense_0": {"w": jnp.zeros((2, 1)), "b": jnp.zeros(1)}}
    u = {"dense_0": {"w": jnp.full((2, 1), 3.0), "b": jnp.full(1, 3.0)}}
    tx = R.max_norm(1.0, mask={"dense_0": {"w": False, "b": True}})
    new_u, _ = tx.update(u, tx.init(p), p)
    chex.assert_trees_all_equal(new_u["dense_0"]["w"], u["dense_0"]["w"])
    chex.assert_trees_all_close(new_u["dense_0"]["b"], jnp.ones(1))
