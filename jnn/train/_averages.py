"""Averages of one run: an exponential moving average (Polyak average) of the parameters,
kept in the optimizer state, and BatchNorm statistics re-estimated for averaged weights.

``params_ema(decay)`` is an Optax transformation placed last in a chain; it passes the
updates through unchanged and keeps ``ema_t = decay * ema_{t-1} + (1 - decay) * params_t``
of the *new* params (``params + updates``), debiased like Adam's moments
(``ema_t / (1 - decay^t)``, so early steps are not pulled towards zero or the initial
weights). Because it lives in ``opt_state`` it is checkpointed, resumed, vmapped over
ensemble members and frozen with a diverged member, like every other part of the state.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jnn._dtypes import at_least_float32

__all__ = ["ParamsEmaState", "ema_params", "params_ema", "recompute_batch_stats"]


class ParamsEmaState(NamedTuple):
    """State of :func:`params_ema`: the step count and the (biased) running average."""

    count: jax.Array
    ema: Any


def params_ema(decay: float) -> optax.GradientTransformation:
    """Tracks ``ema = decay * ema + (1 - decay) * (params + updates)``; updates unchanged.

    Args:
      decay: in ``(0, 1)``, e.g. 0.999 (an average over roughly the last ``1/(1-decay)``
        steps); an array for per-member values.

    Returns:
      An ``optax.GradientTransformation`` whose ``update`` needs ``params``.
    """
    if isinstance(decay, (int, float)) and not 0.0 < decay < 1.0:
        raise ValueError(f"params_ema: decay must be in (0, 1), got {decay}.")

    def init(params):
        zeros = jax.tree.map(lambda p: jnp.zeros(jnp.shape(p), at_least_float32(p.dtype)), params)
        return ParamsEmaState(jnp.zeros((), jnp.int32), zeros)

    def update(updates, state, params=None):
        if params is None:
            raise ValueError("params_ema needs params: call update(updates, state, params).")
        d = jnp.asarray(decay, jnp.float32)
        new = optax.apply_updates(params, updates)
        ema = jax.tree.map(
            lambda e, p: d.astype(e.dtype) * e + (1 - d).astype(e.dtype) * p.astype(e.dtype),
            state.ema,
            new,
        )
        return updates, ParamsEmaState(state.count + 1, ema)

    return optax.GradientTransformation(init, update)


def _find_ema(opt_state):
    found = [
        s
        for s in jax.tree.leaves(opt_state, is_leaf=lambda x: isinstance(x, ParamsEmaState))
        if isinstance(s, ParamsEmaState)
    ]
    if not found:
        raise ValueError("no params_ema state in this optimizer state (chain params_ema(decay)).")
    return found[0]


def ema_params(opt_state, params, decay: float):
    """The debiased average ``ema / (1 - decay^t)`` in the dtypes of ``params``.

    Args:
      opt_state: an optimizer state containing a :class:`ParamsEmaState`.
      params: the current params (dtypes and, at step 0, the value returned).
      decay: the same decay given to :func:`params_ema`.

    Returns:
      A params pytree.
    """
    state = _find_ema(opt_state)
    d = jnp.asarray(decay, jnp.float32)
    correction = 1 - d ** state.count.astype(jnp.float32)
    safe = jnp.where(state.count > 0, correction, 1.0)
    return jax.tree.map(
        lambda e, p: jnp.where(state.count > 0, e / safe.astype(e.dtype), p.astype(e.dtype)).astype(
            p.dtype
        ),
        state.ema,
        params,
    )


def recompute_batch_stats(model, params, model_state, x, *, batch_size: int = 256, passes=64):
    """Re-estimates running statistics (BatchNorm ``mean``/``var``) for ``params``.

    Averaged weights never produced the running statistics stored beside them, so they are
    recomputed: ``passes`` forward passes in training mode over consecutive minibatches of
    ``x`` (cycling), each moving the statistics by BatchNorm's momentum rule; with momentum
    0.9 the old statistics keep a weight of ``0.9^passes`` (1e-3 after 64 passes).

    Args:
      model: the network.
      params, model_state: the (averaged) params and any model state of the right structure.
      x: training inputs.
      batch_size: examples per pass.
      passes: number of forward passes.

    Returns:
      The new model state (unchanged for a model without running statistics).
    """
    if not jax.tree.leaves(model_state):
        return model_state
    x = jnp.asarray(x)
    b = min(batch_size, x.shape[0])
    chunks = max(1, x.shape[0] // b)
    batches = x[: chunks * b].reshape(chunks, b, *x.shape[1:])

    def body(state, i):
        _, state = model.apply(
            params, state, batches[i % chunks], train=True, key=jax.random.key(0)
        )
        return state, None

    state, _ = jax.lax.scan(body, model_state, jnp.arange(passes))
    return state
