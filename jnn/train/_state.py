"""``TrainState``: everything that changes during training, and its initialisation."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jnn import _memo
from jnn._compile import one_shot_jit
from jnn._foreign import as_model
from jnn._keys import as_key

__all__ = ["TrainState", "cast_inputs", "init", "param_dtype"]


class TrainState(NamedTuple):
    """Everything that changes during training (a pytree).

    Attributes:
      params: the model parameters.
      model_state: non-trained state, e.g. BatchNorm running statistics (``{}`` entries if none).
      opt_state: the optimizer's state (``optimizer.init(params)``).
      step: int32 scalar, the number of updates applied so far.
    """

    params: Any
    model_state: Any
    opt_state: Any
    step: jax.Array


def fresh_state(model, optimizer, key, input_shape, dtype=None) -> TrainState:
    """The traceable body of :func:`init` (vmappable over ``key``; used by ensembles)."""
    kwargs = {} if dtype is None else {"dtype": dtype}
    params, model_state = model.init(key, tuple(input_shape), **kwargs)
    return TrainState(params, model_state, optimizer.init(params), jnp.zeros((), jnp.int32))


@_memo.cached
def _init_program(model, optimizer, input_shape, dtype):
    # One compiled program instead of one small eager dispatch (and compile) per leaf.
    return one_shot_jit(lambda key: fresh_state(model, optimizer, key, input_shape, dtype))


def init(model, optimizer, key, input_shape, dtype=None) -> TrainState:
    """Initialises params, model state and optimizer state.

    Args:
      model: a layer (e.g. ``jnn.nn.Serial``) with ``init(key, input_shape)``, or a Flax
        linen / NNX / Equinox model (wrapped by ``jnn.interop`` with its defaults).
      optimizer: an ``optax.GradientTransformation``.
      key: a PRNG key for the parameters (typed ``jax.random.key`` or raw ``PRNGKey``).
      input_shape: the input shape including the batch dimension, e.g. ``(128, 64)``.
      dtype: optional parameter dtype passed to ``model.init`` (e.g. ``jnp.bfloat16``).

    Returns:
      ``TrainState(params, model_state, opt_state, step=0)``.
    """
    key = as_key(key)
    model = as_model(model)
    dtype = None if dtype is None else jnp.dtype(dtype)
    return _init_program(model, optimizer, tuple(int(d) for d in input_shape), dtype)(key)


def param_dtype(params):
    """The floating dtype the network computes in: that of its first floating parameter
    (float32 when it has none)."""
    for leaf in jax.tree.leaves(params):
        if hasattr(leaf, "dtype") and jnp.issubdtype(leaf.dtype, jnp.floating):
            return jnp.dtype(leaf.dtype)
    return jnp.dtype(jnp.float32)


def cast_inputs(x, params):
    """Inputs cast to :func:`param_dtype`: a bf16 network gets bf16 inputs, and raw integer
    inputs (e.g. uint8 pixels) become floats of the network's dtype."""
    dtype = param_dtype(params)
    return x if x.dtype == dtype else x.astype(dtype)
