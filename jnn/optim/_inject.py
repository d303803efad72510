"""``inject_hyperparams``: Optax's, with floating hyperparameters kept in float32 (or wider).

Three named steps: :func:`_classify` sorts the factory's arguments into schedules,
numbers and the rest; :func:`_init` and :func:`_update` build the two halves of the
transformation around them.
"""

import functools
import inspect
from collections.abc import Callable, Iterable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jnn.optim._base import GT, compute_dtype, safe_increment, zero_count

__all__ = ["inject_hyperparams"]


def _is_float(x) -> bool:
    dtype = x.dtype if hasattr(x, "dtype") else type(x)
    return jnp.issubdtype(dtype, jnp.floating)


def _to_dtype(x, dtype):
    return jnp.asarray(x, dtype=dtype) if _is_float(x) else jnp.asarray(x)


def _hyperparam_dtype(params):
    """float32, or float64 when some parameter is float64 / complex128."""
    dtype = jnp.dtype(jnp.float32)
    for leaf in jax.tree.leaves(params):
        if hasattr(leaf, "dtype") and jnp.issubdtype(leaf.dtype, jnp.inexact):
            dtype = compute_dtype(dtype, jnp.finfo(leaf.dtype).dtype)
    return dtype


def _classify(arguments: dict, static_args: set):
    """Splits bound arguments into ``(schedules, numbers, other)`` as Optax does.

    Static names and bools (Python or NumPy) are passed through as they are;
    callables become (stateful) schedules; numbers and arrays are injected.
    """
    sched, numeric, other = {}, {}, {}
    for name, value in arguments.items():
        if name in static_args or isinstance(value, (bool, np.bool_)):
            other[name] = value
        elif isinstance(value, optax.schedules.StatefulSchedule):
            sched[name] = value
        elif callable(value):
            sched[name] = optax.schedules.WrappedSchedule(value)
        elif isinstance(value, (int, float, jax.Array, np.ndarray, np.generic)):
            numeric[name] = value
        else:
            other[name] = value
    return sched, numeric, other


def _init(inner_factory, sched, numeric, other, hyperparam_dtype):
    """``init``: hyperparameters in their dtype, schedules at their first value."""

    def init(params):
        dtype = _hyperparam_dtype(params) if hyperparam_dtype is None else hyperparam_dtype
        hparams = {k: _to_dtype(v, dtype) for k, v in numeric.items()}
        sched_states = {k: f.init() for k, f in sched.items()}
        hparams.update({k: _to_dtype(f(sched_states[k]), dtype) for k, f in sched.items()})
        return optax.InjectStatefulHyperparamsState(
            count=zero_count(),
            hyperparams=hparams,
            hyperparams_states=sched_states,
            inner_state=inner_factory(**other, **hparams).init(params),
        )

    return init


def _update(inner_factory, sched, other):
    """``update``: rebuilds the inner transformation from the state's hyperparameters."""

    def update(updates, state, params=None, **extra_args):
        # Keep every hyperparameter in the dtype chosen at init: the state is stable.
        def like(k, v):
            old = state.hyperparams[k]
            return jnp.asarray(v, dtype=old.dtype) if _is_float(old) else jnp.asarray(v)

        hparams = {k: like(k, v) for k, v in state.hyperparams.items()}
        hparams.update(
            {k: like(k, f(state.hyperparams_states[k], **extra_args)) for k, f in sched.items()}
        )
        sched_states = {
            k: f.update(state.hyperparams_states[k], **extra_args) for k, f in sched.items()
        }
        inner = optax.with_extra_args_support(inner_factory(**other, **hparams))
        updates, inner_state = inner.update(updates, state.inner_state, params, **extra_args)
        return updates, optax.InjectStatefulHyperparamsState(
            count=safe_increment(state.count),
            hyperparams=hparams,
            hyperparams_states=sched_states,
            inner_state=inner_state,
        )

    return update


def inject_hyperparams(
    inner_factory: Callable[..., optax.GradientTransformation],
    static_args: str | Iterable[str] = (),
    hyperparam_dtype=None,
) -> Callable[..., GT]:
    """Like ``optax.inject_hyperparams``, but floating hyperparameters stay in float32.

    Optax casts them to the params' dtype, so on bfloat16 params ``b2=0.999``
    becomes exactly ``1.0`` and Adam divides by ``1 - 1**t = 0``. Here they are
    stored in float32 (float64 if some parameter is float64) unless
    ``hyperparam_dtype`` says otherwise, and kept in that dtype across updates.
    The state is ``optax.InjectStatefulHyperparamsState``; change a value with
    ``state.hyperparams["learning_rate"] = ...`` (also per ensemble member,
    under ``jax.vmap``).

    Args:
      inner_factory: e.g. ``jnn.optim.adam``.
      static_args: names of arguments that are callables but not schedules.
      hyperparam_dtype: dtype for floating hyperparameters.

    Returns:
      A factory with ``inner_factory``'s signature whose numeric arguments may
      also be schedules. The inner factory (and so its argument checks) runs at
      ``init`` and at every ``update``.
    """
    static_args = {static_args} if isinstance(static_args, str) else set(static_args)
    signature = inspect.signature(inner_factory)
    if not static_args.issubset(signature.parameters):
        raise ValueError(
            f"static_args must name parameters of {inner_factory!r}: expected a subset of "
            f"{sorted(signature.parameters)}, got {sorted(static_args)}."
        )

    @functools.wraps(inner_factory)
    def wrapped(*args, **kwargs) -> GT:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        sched, numeric, other = _classify(bound.arguments, static_args)
        return GT(
            _init(inner_factory, sched, numeric, other, hyperparam_dtype),
            _update(inner_factory, sched, other),
        )

    return wrapped
