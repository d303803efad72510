"""jnn._compile.one_shot_jit: programs that run once (initialisation, evaluation) compile at
XLA's backend optimisation level 1 on CPU, and give the same numbers bit for bit as XLA's
default level (3). The suite itself runs at level 0 (conftest), so the references here are
compiled at level 3 explicitly."""

import chex
import equinox as eqx
import flax.linen as fnn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jnn import _compile, init, losses, nn, optim
from jnn._compile import ONE_SHOT_OPTIONS
from jnn._foreign import as_model
from jnn.train._evaluate import mean_loss_and_accuracy
from jnn.train._state import fresh_state

_SHAPES = [(5, 1, 64), (3, 3, 16, 32), (320, 10), (7,)]
_XLA_DEFAULT = {"xla_backend_optimization_level": 3}


def _same_bits(fun, *args):
    """``fun`` compiled with the one-shot options and at XLA's default level: equal bits."""
    one_shot = jax.jit(fun).lower(*args).compile(compiler_options=ONE_SHOT_OPTIONS)
    default = jax.jit(fun).lower(*args).compile(compiler_options=_XLA_DEFAULT)
    got, want = jax.device_get(one_shot(*args)), jax.device_get(default(*args))
    chex.assert_trees_all_equal(got, want)
    return got


def _initializers():
    return [
        getattr(init, name)(0.1) if name in ("constant", "normal") else getattr(init, name)()
        for name in init.__all__
        if name != "fans"
    ]


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_every_initializer_draws_the_same_bits_as_xla_default(dtype):
    with jax.enable_x64(dtype == jnp.float64):
        for initializer in _initializers():
            draws = _same_bits(
                lambda k, f=initializer: [f(k, s, dtype) for s in _SHAPES], jax.random.key(3)
            )
            assert draws[0].dtype == dtype


def test_the_one_shot_options_go_to_the_compiler_on_cpu_unless_xla_flags_set_a_level(
    monkeypatch,
):
    seen = []
    monkeypatch.setattr(jax, "jit", lambda fun, **kw: seen.append(kw) or fun)
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=1")
    _compile.one_shot_jit(abs, donate_argnums=0)
    monkeypatch.setenv("XLA_FLAGS", "--xla_backend_optimization_level=0")
    _compile.one_shot_jit(abs, donate_argnums=0)
    options = {"compiler_options": ONE_SHOT_OPTIONS} if jax.default_backend() == "cpu" else {}
    assert seen == [{"donate_argnums": 0, **options}, {"donate_argnums": 0}]


_CNN = nn.Serial(
    nn.Conv(8, 5, w_init=init.kaiming_normal()),
    nn.Relu(),
    nn.MaxPool(2),
    nn.Flatten(),
    nn.Dropout(0.3),
    nn.Dense(10),
)


class _Linen(fnn.Module):
    @fnn.compact
    def __call__(self, x):
        x = fnn.relu(fnn.Conv(8, (5,))(x)).reshape(x.shape[0], -1)
        return fnn.Dense(10, kernel_init=jax.nn.initializers.orthogonal())(x)


@pytest.mark.parametrize("model", [_CNN, _Linen()], ids=["jnn", "linen"])
def test_a_whole_train_state_initialises_to_the_same_bits(model):
    model, opt = as_model(model), optim.adam(1e-3)
    _same_bits(lambda k: fresh_state(model, opt, k, (4, 20, 1)), jax.random.key(0))


def test_equinox_initialises_to_the_same_bits():
    _same_bits(
        lambda k: eqx.filter(eqx.nn.MLP(6, 3, 16, 2, key=k), eqx.is_array), jax.random.key(1)
    )


def test_an_evaluation_gives_the_same_bits():
    params, state = _CNN.init(jax.random.key(2), (4, 20, 1))
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(50, 20, 1)).astype(np.float32))
    y = jnp.asarray(rng.integers(0, 10, size=50).astype(np.int32))
    loss = losses.softmax_cross_entropy
    _same_bits(lambda p, x, y: mean_loss_and_accuracy(_CNN, loss, p, state, x, y, 16), params, x, y)
