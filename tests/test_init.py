"""jnn.init: fans, empirical variances, and the notes' deep-ReLU-net claim measured."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jnn import activations
from jnn import init as jinit

DENSE = (400, 300)  # fan_in 400, fan_out 300
CONV = (3, 3, 64, 128)  # fan_in 9*64 = 576, fan_out 9*128 = 1152


def test_fans():
    assert jinit.fans(DENSE) == (400, 300)
    assert jinit.fans(CONV) == (576, 1152)
    assert jinit.fans((5, 16, 32)) == (80, 160)  # 1-D conv
    assert jinit.fans((7,)) == (7, 7)
    with pytest.raises(ValueError, match="rank"):
        jinit.fans(())


# name -> (factory, expected variance given (fan_in, fan_out))
VARIANCES = {
    "lecun_normal": (jinit.lecun_normal, lambda i, o: 1 / i),
    "xavier_normal": (jinit.xavier_normal, lambda i, o: 2 / (i + o)),
    "xavier_uniform": (jinit.xavier_uniform, lambda i, o: 2 / (i + o)),
    "kaiming_normal": (jinit.kaiming_normal, lambda i, o: 2 / i),
    "kaiming_uniform": (jinit.kaiming_uniform, lambda i, o: 2 / i),
}


@pytest.mark.parametrize("shape,fan_in,fan_out", [(DENSE, 400, 300), (CONV, 576, 1152)])
@pytest.mark.parametrize("name", sorted(VARIANCES))
def test_empirical_variance(key, name, shape, fan_in, fan_out):
    factory, variance = VARIANCES[name]
    w = np.asarray(factory()(key, shape), dtype=np.float64)
    assert w.shape == shape
    assert abs(w.mean()) < 5 * math.sqrt(variance(fan_in, fan_out) / w.size)  # 5 sigma
    # >= 115k draws: the sample variance is within ~0.5% (1 sigma) of the true one.
    assert w.var() == pytest.approx(variance(fan_in, fan_out), rel=0.03)


@pytest.mark.parametrize("name,bound", [("kaiming_uniform", 6 / 576), ("xavier_uniform", 6 / 1728)])
def test_uniform_bounds(key, name, bound):
    w = np.asarray(getattr(jinit, name)()(key, CONV))
    a = math.sqrt(bound)
    assert np.abs(w).max() <= a
    assert np.abs(w).max() > 0.99 * a


def test_constant_and_normal(key):
    chex.assert_trees_all_equal(jinit.constant(0.1)(key, (3, 4)), np.full((3, 4), 0.1, np.float32))
    w = np.asarray(jinit.normal(0.5)(key, DENSE), dtype=np.float64)
    assert w.std() == pytest.approx(0.5, rel=0.02)
    assert np.asarray(jinit.normal()(key, DENSE)).std() == pytest.approx(1.0, rel=0.02)


def test_different_keys_differ_and_same_key_repeats(key):
    init = jinit.kaiming_normal()
    a, b = init(key, (8, 8)), init(jax.random.fold_in(key, 1), (8, 8))
    assert not np.allclose(a, b)
    chex.assert_trees_all_equal(a, init(key, (8, 8)))
    # legacy uint32 keys work too
    chex.assert_shape(init(jax.random.PRNGKey(0), (8, 8)), (8, 8))


ALL = {
    "constant": lambda: jinit.constant(0.0),
    "normal": jinit.normal,
    **{name: factory for name, (factory, _) in VARIANCES.items()},
}


def test_dtypes(key):
    for name, factory in ALL.items():
        init = factory()
        assert init(key, (4, 5)).dtype == jnp.float32, name
        assert init(key, (4, 5), jnp.bfloat16).dtype == jnp.bfloat16, name
        with pytest.raises(TypeError, match="floating"):
            init(key, (4, 5), jnp.int32)
    with jax.enable_x64(True):
        for name, factory in ALL.items():
            assert factory()(key, (4, 5), jnp.float64).dtype == jnp.float64, name


@pytest.mark.parametrize("name", ["kaiming_normal", "xavier_uniform"])
def test_jit_and_vmap_over_keys(key, name):
    init = ALL[name]()
    jitted = jax.jit(init, static_argnums=(1, 2))
    chex.assert_trees_all_close(jitted(key, (4, 5), jnp.float32), init(key, (4, 5)))
    keys = jax.random.split(key, 3)
    stacked = jax.vmap(lambda k: init(k, (4, 5)))(keys)  # an ensemble of initialisations
    chex.assert_trees_all_close(stacked[1], init(keys[1], (4, 5)))


def _relu_mlp_scale_ratios(w_init, key, depth=10, width=256, batch=512):
    """Mean square of each hidden ReLU layer's output over the input's (unit-variance) one.

    He et al.'s derivation keeps E[h^2] constant from layer to layer; for the zero-mean input
    E[x^2] is its variance. (The variance of a ReLU output is a fixed ~0.68 of its mean square,
    since ReLU outputs are not zero-centred.)
    """
    x = jax.random.normal(jax.random.fold_in(key, 999), (batch, width))
    h, ratios = x, []
    for i in range(depth):
        w = w_init(jax.random.fold_in(key, i), (width, width))
        h = activations.relu(h @ w)
        ratios.append(float(jnp.mean(jnp.square(h)) / jnp.mean(jnp.square(x))))
    return np.array(ratios)


@pytest.mark.parametrize("kaiming", [jinit.kaiming_normal, jinit.kaiming_uniform])
def test_kaiming_keeps_relu_activations_stable_while_naive_inits_fail(key, kaiming):
    stable = _relu_mlp_scale_ratios(kaiming(), key)
    big = _relu_mlp_scale_ratios(jinit.normal(1.0), key)
    small = _relu_mlp_scale_ratios(jinit.normal(0.01), key)
    # Kaiming: every one of the 10 layers within a factor of 2 of the input.
    assert np.all((stable > 0.5) & (stable < 2.0)), stable
    # N(0, 1) explodes (x width/2 = 128 per layer), N(0, 0.01^2) vanishes (x 0.0128 per layer).
    assert big[-1] > 1e3, big
    assert small[-1] < 1e-3, small
    assert np.all(np.diff(np.log(big)) > 0) and np.all(np.diff(np.log(small)) < 0)
    # LeCun's 1/sqrt(n) (right for tanh) halves the scale at every ReLU layer: 2^-10 at the end.
    lecun = _relu_mlp_scale_ratios(jinit.lecun_normal(), key)
    assert lecun[-1] < 0.5**10 * 2
