"""jnn.activations against NumPy formulas and closed-form derivatives."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import erf as np_erf

from jnn import activations as A

X = np.linspace(-6.0, 6.0, 49).astype(np.float32)
SELU_ALPHA, SELU_SCALE = 1.6732632423543772, 1.0507009873554805
C = math.sqrt(2.0 / math.pi)


def np_sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


# (function, NumPy value, NumPy derivative) in float64.
CASES = {
    "sigmoid": (A.sigmoid, np_sigmoid, lambda x: np_sigmoid(x) * (1 - np_sigmoid(x))),
    "tanh": (A.tanh, np.tanh, lambda x: 1 - np.tanh(x) ** 2),
    "relu": (A.relu, lambda x: np.maximum(x, 0), lambda x: (x > 0).astype(float)),
    "leaky_relu": (
        A.leaky_relu,
        lambda x: np.where(x > 0, x, 0.01 * x),
        lambda x: np.where(x > 0, 1.0, 0.01),
    ),
    "leaky_relu_0.2": (
        lambda x: A.leaky_relu(x, alpha=0.2),
        lambda x: np.where(x > 0, x, 0.2 * x),
        lambda x: np.where(x > 0, 1.0, 0.2),
    ),
    "elu": (
        A.elu,
        lambda x: np.where(x > 0, x, np.exp(x) - 1),
        lambda x: np.where(x > 0, 1.0, np.exp(x)),
    ),
    "selu": (
        A.selu,
        lambda x: SELU_SCALE * np.where(x > 0, x, SELU_ALPHA * (np.exp(x) - 1)),
        lambda x: SELU_SCALE * np.where(x > 0, 1.0, SELU_ALPHA * np.exp(x)),
    ),
    "gelu": (
        A.gelu,
        lambda x: 0.5 * x * (1 + np_erf(x / np.sqrt(2))),
        lambda x: 0.5 * (1 + np_erf(x / np.sqrt(2))) + x * np.exp(-(x**2) / 2) / np.sqrt(2 * np.pi),
    ),
    "gelu_tanh": (
        lambda x: A.gelu(x, approximate=True),
        lambda x: 0.5 * x * (1 + np.tanh(C * (x + 0.044715 * x**3))),
        lambda x: (
            0.5 * (1 + np.tanh(C * (x + 0.044715 * x**3)))
            + 0.5
            * x
            * (1 - np.tanh(C * (x + 0.044715 * x**3)) ** 2)
            * C
            * (1 + 3 * 0.044715 * x**2)
        ),
    ),
    "swish": (
        A.swish,
        lambda x: x * np_sigmoid(x),
        lambda x: np_sigmoid(x) + x * np_sigmoid(x) * (1 - np_sigmoid(x)),
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_values_match_numpy(name):
    fn, ref, _ = CASES[name]
    y = fn(jnp.asarray(X))
    assert y.dtype == jnp.float32
    chex.assert_trees_all_close(np.asarray(y), ref(X.astype(np.float64)), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", sorted(CASES))
def test_grads_match_closed_form(name):
    fn, _, dref = CASES[name]
    # Away from 0 so the kink convention does not matter here (tested separately).
    x = X[np.abs(X) > 1e-3]
    g = jax.vmap(jax.grad(fn))(jnp.asarray(x))
    chex.assert_trees_all_close(np.asarray(g), dref(x.astype(np.float64)), rtol=1e-5, atol=1e-6)


def test_behaviour_at_zero():
    grad = lambda f: float(jax.grad(f)(0.0))
    # ReLU's kink: the value is 0 and the (sub)gradient is defined as 0, like jax.nn.relu.
    assert float(A.relu(0.0)) == 0.0
    assert grad(A.relu) == 0.0
    assert grad(A.relu) == float(jax.grad(jax.nn.relu)(0.0))
    assert grad(A.leaky_relu) == pytest.approx(0.01)
    assert grad(A.elu) == pytest.approx(1.0)
    assert grad(A.selu) == pytest.approx(SELU_SCALE * SELU_ALPHA)
    assert grad(A.sigmoid) == pytest.approx(0.25)
    assert grad(A.tanh) == pytest.approx(1.0)
    assert grad(A.gelu) == pytest.approx(0.5)
    assert grad(lambda x: A.gelu(x, approximate=True)) == pytest.approx(0.5)
    assert grad(A.swish) == pytest.approx(0.5)


def test_matches_jax_nn():
    x = jnp.asarray(X)
    pairs = [
        (A.relu, jax.nn.relu),
        (A.elu, jax.nn.elu),
        (A.selu, jax.nn.selu),
        (A.swish, jax.nn.swish),
        (lambda v: A.gelu(v, approximate=True), lambda v: jax.nn.gelu(v, approximate=True)),
        (A.gelu, lambda v: jax.nn.gelu(v, approximate=False)),
    ]
    for ours, theirs in pairs:
        chex.assert_trees_all_close(ours(x), theirs(x), rtol=1e-5, atol=1e-6)


def test_saturation_and_centring():
    big = jnp.asarray([-30.0, 30.0])
    # sigmoid and tanh saturate: vanishing gradients at both ends.
    assert np.all(np.asarray(jax.vmap(jax.grad(A.sigmoid))(big)) < 1e-10)
    assert np.all(np.asarray(jax.vmap(jax.grad(A.tanh))(big)) < 1e-10)
    # ELU's gradient stays finite for very negative inputs (no inf from exp in the unused branch).
    g = jax.vmap(jax.grad(A.elu))(jnp.asarray([-1e4, 1e4]))
    chex.assert_tree_all_finite(g)
    # tanh is zero-centred on symmetric input, sigmoid is not.
    assert abs(float(A.tanh(jnp.asarray(X)).mean())) < 1e-6
    assert float(A.sigmoid(jnp.asarray(X)).mean()) == pytest.approx(0.5, abs=1e-6)


@pytest.mark.parametrize("name", sorted(CASES))
def test_dtype_preserved_and_jit(name):
    fn = CASES[name][0]
    with jax.enable_x64(True):
        x = jnp.linspace(-2.0, 2.0, 5, dtype=jnp.float64)
        assert jax.jit(fn)(x).dtype == jnp.float64
    x16 = jnp.linspace(-2.0, 2.0, 5, dtype=jnp.bfloat16)
    assert fn(x16).dtype == jnp.bfloat16
