"""``ensemble.init``: ``jax.vmap`` of ``jnn.train.init`` over member keys and hyperparameters."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jnn import _memo
from jnn._compile import one_shot_jit
from jnn._foreign import as_model
from jnn._keys import as_keys
from jnn.ensemble import _hparams
from jnn.train._state import TrainState, fresh_state

__all__ = ["init", "member"]


def member_init(model, optimizer, key, hp, input_shape, dtype):
    """One member's fresh ``TrainState`` (traceable; vmapped by :func:`init`)."""
    opt = _hparams.member_optimizer(optimizer, hp)
    state = fresh_state(_hparams.member_model(model, hp), opt, key, input_shape, dtype)
    return state._replace(opt_state=_hparams.set_injected(optimizer, state.opt_state, hp))


@_memo.cached
def _init_program(model, optimizer, input_shape, dtype):
    return one_shot_jit(
        jax.vmap(lambda k, hp: member_init(model, optimizer, k, hp, input_shape, dtype))
    )


def init(model, optimizer, keys, input_shape, dtype=None, *, hyperparams=None) -> TrainState:
    """``jax.vmap`` of :func:`jnn.train.init` over ``keys``: member ``k`` is
    ``jnn.train.init(model, optimizer_k, keys[k], input_shape)``.

    Args:
      model: the shared architecture (a jnn model, a Flax linen module, or an NNX /
        Equinox constructor: a *built* NNX / Equinox module gives every member the same
        initialisation and is refused).
      optimizer: an ``optax.GradientTransformation``, or a factory called per member with
        its optimizer hyperparameters (see ``jnn.ensemble._hparams``).
      keys: ``K`` PRNG keys: typed ``(K,)`` (``jax.random.split(jax.random.key(0), K)``) or
        raw ``(K, 2)`` (``jax.random.split(jax.random.PRNGKey(0), K)``).
      input_shape: the input shape including the batch dimension.
      dtype: optional parameter dtype.
      hyperparams: optional per-member values ``{name: K values}``.

    Returns:
      A ``TrainState`` whose leaves have a leading member axis of size ``K``.
    """
    keys = as_keys(keys)
    model = as_model(model)
    _hparams.check_distinct_inits(model)
    hp = _hparams.as_hyperparams(hyperparams, keys.shape[0])
    _hparams.check_model_hyperparams(model, hp)
    dtype = None if dtype is None else jnp.dtype(dtype)
    shape = tuple(int(d) for d in input_shape)
    state = _init_program(model, optimizer, shape, dtype)(keys, hp)
    _hparams.check_objective_hyperparams(state.params, hp)
    return state


def member(state, k: int):
    """Member ``k`` of an ensemble state (any stacked pytree), as an ordinary one."""
    return jax.tree.map(lambda a: a[k], state)
