"""Optimizers as Optax-exact gradient transformations.

Every factory returns an ``optax.GradientTransformationExtraArgs`` with the same
argument names, defaults, state field names and (in float32 / float64) the same
numbers as the Optax function of the same name, so ``import jnn.optim as optax``
style swaps work. They are built from the small transformations below
(``trace``, ``scale_by_rss``, ``scale_by_rms``, ``scale_by_stddev``,
``scale_by_adam``, ``add_decayed_weights``, ``scale_by_learning_rate``) glued
with ``optax.chain``.

Where Optax is fragile, jnn is not:

- Low-precision leaves (bfloat16, float16) are computed in float32 and cast back,
  so Adam on an all-zero float16 gradient gives 0, not NaN (``eps=1e-8``
  underflows to 0 in float16).
- Bias corrections ``1 - b**t`` are computed in float32 (float64 under x64)
  whatever the parameter dtype.
- :func:`inject_hyperparams` keeps floating hyperparameters in float32 by
  default, so ``b2=0.999`` is not rounded to ``1.0`` on bfloat16 params.

Step counts are int32 and saturate at ``2**31 - 1`` instead of overflowing.
"""

import functools
import inspect
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from optax import ScalarOrSchedule

__all__ = [
    "AddDecayedWeightsState",
    "ScaleByAdamState",
    "ScaleByRStdDevState",
    "ScaleByRStdDevWithCountState",
    "ScaleByRmsState",
    "ScaleByRmsWithCountState",
    "ScaleByRssState",
    "ScaleByScheduleState",
    "TraceState",
    "adagrad",
    "adam",
    "adamw",
    "add_decayed_weights",
    "apply_updates",
    "chain",
    "inject_hyperparams",
    "nadam",
    "nadamw",
    "rmsprop",
    "safe_increment",
    "scale",
    "scale_by_adam",
    "scale_by_learning_rate",
    "scale_by_rms",
    "scale_by_rss",
    "scale_by_schedule",
    "scale_by_stddev",
    "sgd",
    "trace",
]

GT = optax.GradientTransformationExtraArgs
chain = optax.chain


# ----------------------------------------------------------------------------- helpers


def safe_increment(count):
    """``count + 1``, saturating at the dtype's maximum instead of wrapping."""
    count = jnp.asarray(count)
    top = jnp.array(jnp.iinfo(count.dtype).max, count.dtype)
    return jnp.where(count < top, count + jnp.array(1, count.dtype), top)


def _zero_count():
    return jnp.zeros([], jnp.int32)


def _full(x, value, dtype=None):
    """``jnp.full_like`` that also accepts ``jax.ShapeDtypeStruct`` leaves."""
    dtype = x.dtype if dtype is None else dtype
    if isinstance(x, jax.Array):
        return jnp.full_like(x, value, dtype=dtype)
    return jnp.full(x.shape, value, dtype=dtype)


def _canonical(dtype):
    return None if dtype is None else jax.dtypes.canonicalize_dtype(dtype)


def _compute_dtype(*dtypes):
    """The dtype leaf arithmetic runs in: the leaves' common dtype, at least float32."""
    with jax.numpy_dtype_promotion("standard"):  # a dtype computation, not an implicit cast
        return functools.reduce(jnp.promote_types, dtypes, jnp.dtype(jnp.float32))


def _hp(value, dtype):
    """Casts an array hyperparameter to ``dtype``; Python numbers stay weakly typed.

    Keeping Python floats as Python floats reproduces Optax bit for bit
    (``1 - 0.9`` is rounded once, in float64, exactly as Optax does).
    """
    if isinstance(value, (jax.Array, np.ndarray, np.generic)):
        return jnp.asarray(value).astype(jnp.finfo(dtype).dtype)
    return value


def _bias_correction(decay, count):
    """``1 - decay**count`` in float32 (float64 under x64), never in the leaf dtype."""
    if isinstance(decay, (jax.Array, np.ndarray, np.generic)):
        dtype = _compute_dtype(jnp.asarray(decay).dtype)
        decay = jnp.asarray(decay).astype(dtype)
    else:
        dtype = jnp.result_type(float)
    return 1 - decay ** jnp.asarray(count).astype(dtype)


def _sq(g):
    """``|g|**2`` in ``g``'s dtype: ``g * g`` for real leaves, ``(conj(g) g).real`` for complex."""
    return g * g if jnp.isrealobj(g) else (g.conj() * g).real.astype(g.dtype)


def _map(fn, n_out, tree, *rest):
    """``jax.tree.map`` for a leaf function returning ``n_out`` values; returns ``n_out`` trees."""
    leaves, treedef = jax.tree.flatten(tree)
    rest_leaves = [treedef.flatten_up_to(r) for r in rest]
    outs = [fn(*xs) for xs in zip(leaves, *rest_leaves, strict=True)]
    return tuple(treedef.unflatten([o[i] for o in outs]) for i in range(n_out))


def apply_updates(params, updates):
    """``params + updates``, leaf by leaf, keeping each parameter's dtype."""
    return jax.tree.map(
        lambda p, u: jnp.asarray(p + u).astype(jnp.asarray(p).dtype), params, updates
    )


# ---------------------------------------------------------------------- building blocks

# Optax's own state containers where Optax makes them public, so that jnn and
# Optax states have identical tree structures (checkpoints interchange).
TraceState = optax.TraceState
ScaleByRssState = optax.ScaleByRssState
ScaleByRmsState = optax.ScaleByRmsState
ScaleByRStdDevState = optax.ScaleByRStdDevState
ScaleByAdamState = optax.ScaleByAdamState
ScaleByScheduleState = optax.ScaleByScheduleState


class ScaleByRmsWithCountState(NamedTuple):
    """RMSProp state with a step count for bias correction."""

    count: jax.Array
    nu: Any


class ScaleByRStdDevWithCountState(NamedTuple):
    """Centred RMSProp state with a step count for bias correction."""

    count: jax.Array
    mu: Any
    nu: Any


class AddDecayedWeightsState(NamedTuple):
    """Step count that feeds a weight-decay schedule."""

    count: jax.Array


def trace(decay, nesterov: bool = False, accumulator_dtype=None) -> GT:
    """Momentum as a velocity: ``v <- g + decay * v``; the update is ``v``.

    With ``nesterov=True`` the update is the look-ahead ``g + decay * v`` (the
    notes' "gradient at the point momentum is about to carry us to").
    Same as ``optax.trace``.

    Args:
      decay: momentum coefficient ``mu`` in ``[0, 1)``.
      nesterov: use Nesterov's look-ahead.
      accumulator_dtype: dtype of ``v`` (default: the params' dtype).

    Returns:
      An ``optax.GradientTransformationExtraArgs`` with state ``TraceState(trace)``.
    """
    accumulator_dtype = _canonical(accumulator_dtype)

    def init(params):
        return TraceState(trace=jax.tree.map(lambda p: _full(p, 0, accumulator_dtype), params))

    def leaf(g, t):
        cd = _compute_dtype(g.dtype, t.dtype)
        d = _hp(decay, cd)
        gc = g.astype(cd)
        new = gc + d * t.astype(cd)
        out = gc + d * new if nesterov else new
        return out.astype(g.dtype), new.astype(t.dtype)

    def update(updates, state, params=None, **extra_args):
        del params, extra_args
        updates, new_trace = _map(leaf, 2, updates, state.trace)
        return updates, TraceState(trace=new_trace)

    return GT(init, update)


def scale_by_rss(initial_accumulator_value=0.1, eps=1e-7) -> GT:
    """Adagrad scaling: ``G <- G + g**2``, ``u = g / sqrt(G + eps)`` (0 where ``G = 0``).

    ``G`` only grows, so each parameter's effective step ``lr / sqrt(G)`` keeps
    shrinking — parameters with large past gradients slow down first, and
    eventually every parameter stops learning (the problem RMSProp fixes).

    Args:
      initial_accumulator_value: starting value of ``G`` (>= 0).
      eps: added inside the square root.

    Returns:
      A transformation with state ``ScaleByRssState(sum_of_squares)``.
    """

    def init(params):
        return ScaleByRssState(
            sum_of_squares=jax.tree.map(lambda p: _full(p, initial_accumulator_value), params)
        )

    def leaf(g, t):
        cd = _compute_dtype(g.dtype, t.dtype)
        gc = g.astype(cd)
        s = _sq(gc) + t.astype(cd)
        inv = jnp.where(s > 0, jax.lax.rsqrt(s + _hp(eps, cd)), 0.0)
        return (inv * gc).astype(g.dtype), s.astype(t.dtype)

    def update(updates, state, params=None, **extra_args):
        del params, extra_args
        updates, s = _map(leaf, 2, updates, state.sum_of_squares)
        return updates, ScaleByRssState(sum_of_squares=s)

    return GT(init, update)


def _denominator(n, eps, eps_in_sqrt):
    return jax.lax.rsqrt(n + eps) if eps_in_sqrt else 1 / (jnp.sqrt(n) + eps)


def scale_by_rms(
    decay=0.9, eps=1e-8, initial_scale=0.0, eps_in_sqrt: bool = True, bias_correction: bool = False
) -> GT:
    """RMSProp scaling: ``v <- decay v + (1 - decay) g**2``, ``u = g / sqrt(v + eps)``.

    ``v`` is a leaky average, so old gradients are forgotten and the step does
    not shrink to zero as Adagrad's does. ``eps_in_sqrt=False`` gives
    ``g / (sqrt(v) + eps)``; ``bias_correction=True`` divides ``v`` by
    ``1 - decay**t``. Same as ``optax.scale_by_rms``.

    Args:
      decay: averaging rate of the squared gradients.
      eps: stabiliser in the denominator.
      initial_scale: starting value of ``v``.
      eps_in_sqrt: put ``eps`` inside (True) or outside the square root.
      bias_correction: divide ``v`` by ``1 - decay**t``.

    Returns:
      A transformation with state ``ScaleByRmsState(nu)`` or, with bias
      correction, ``ScaleByRmsWithCountState(count, nu)``.
    """

    def init(params):
        nu = jax.tree.map(lambda p: _full(p, initial_scale), params)
        if bias_correction:
            return ScaleByRmsWithCountState(count=_zero_count(), nu=nu)
        return ScaleByRmsState(nu=nu)

    def update(updates, state, params=None, **extra_args):
        del params, extra_args
        count = safe_increment(state.count) if bias_correction else None
        bc = _bias_correction(decay, count) if bias_correction else None

        def leaf(g, v):
            cd = _compute_dtype(g.dtype, v.dtype)
            d = _hp(decay, cd)
            gc = g.astype(cd)
            nu = (1 - d) * _sq(gc) + d * v.astype(cd)
            nu_hat = nu / bc.astype(cd) if bias_correction else nu
            out = _denominator(nu_hat, _hp(eps, cd), eps_in_sqrt) * gc
            return out.astype(g.dtype), nu.astype(v.dtype)

        updates, nu = _map(leaf, 2, updates, state.nu)
        if bias_correction:
            return updates, ScaleByRmsWithCountState(count=count, nu=nu)
        return updates, ScaleByRmsState(nu=nu)

    return GT(init, update)


def scale_by_stddev(
    decay=0.9, eps=1e-8, initial_scale=0.0, eps_in_sqrt: bool = True, bias_correction: bool = False
) -> GT:
    """Centred RMSProp: ``u = g / sqrt(v - m**2 + eps)`` with leaky averages ``m`` of ``g``
    and ``v`` of ``g**2`` (a running variance instead of a second moment).

    Args and bias correction as in :func:`scale_by_rms`; same as ``optax.scale_by_stddev``.

    Returns:
      A transformation with state ``ScaleByRStdDevState(mu, nu)`` or
      ``ScaleByRStdDevWithCountState(count, mu, nu)``.
    """

    def init(params):
        mu = jax.tree.map(lambda p: _full(p, 0), params)
        nu = jax.tree.map(lambda p: _full(p, initial_scale), params)
        if bias_correction:
            return ScaleByRStdDevWithCountState(count=_zero_count(), mu=mu, nu=nu)
        return ScaleByRStdDevState(mu=mu, nu=nu)

    def update(updates, state, params=None, **extra_args):
        del params, extra_args
        count = safe_increment(state.count) if bias_correction else None
        bc = _bias_correction(decay, count) if bias_correction else None

        def leaf(g, m, v):
            cd = _compute_dtype(g.dtype, m.dtype, v.dtype)
            d = _hp(decay, cd)
            gc = g.astype(cd)
            mu = (1 - d) * gc + d * m.astype(cd)
            nu = (1 - d) * _sq(gc) + d * v.astype(cd)
            if bias_correction:
                mu_hat, nu_hat = mu / bc.astype(cd), nu / bc.astype(cd)
            else:
                mu_hat, nu_hat = mu, nu
            out = _denominator(nu_hat - _sq(mu_hat), _hp(eps, cd), eps_in_sqrt) * gc
            return out.astype(g.dtype), mu.astype(m.dtype), nu.astype(v.dtype)

        updates, mu, nu = _map(leaf, 3, updates, state.mu, state.nu)
        if bias_correction:
            return updates, ScaleByRStdDevWithCountState(count=count, mu=mu, nu=nu)
        return updates, ScaleByRStdDevState(mu=mu, nu=nu)

    return GT(init, update)


def scale_by_adam(
    b1=0.9, b2=0.999, eps=1e-8, eps_root=0.0, mu_dtype=None, *, nesterov: bool = False
) -> GT:
    """Adam scaling = RMSProp + momentum, both bias-corrected.

    ``m <- b1 m + (1 - b1) g`` (momentum as a leaky average),
    ``v <- b2 v + (1 - b2) g**2`` (RMSProp), ``m_hat = m / (1 - b1**t)``,
    ``v_hat = v / (1 - b2**t)`` (the averages start at 0, so early steps are
    scaled up), ``u = m_hat / (sqrt(v_hat + eps_root) + eps)``. With
    ``nesterov=True`` (NAdam), ``m_hat = b1 m / (1 - b1**(t+1)) + (1 - b1) g / (1 - b1**t)``.
    Same as ``optax.scale_by_adam``.

    Args:
      b1: averaging rate of the gradients.
      b2: averaging rate of the squared gradients.
      eps: added to the denominator outside the square root.
      eps_root: added inside the square root.
      mu_dtype: dtype of ``m`` (default: the params' dtype).
      nesterov: use Nesterov's look-ahead on the first moment.

    Returns:
      A transformation with state ``ScaleByAdamState(count, mu, nu)``.
    """
    mu_dtype = _canonical(mu_dtype)

    def init(params):
        mu = jax.tree.map(lambda p: _full(p, 0, mu_dtype), params)
        nu = jax.tree.map(lambda p: _full(p, 0), params)
        return ScaleByAdamState(count=_zero_count(), mu=mu, nu=nu)

    def update(updates, state, params=None, **extra_args):
        del params, extra_args
        count = safe_increment(state.count)
        bc1, bc2 = _bias_correction(b1, count), _bias_correction(b2, count)
        bc1_next = _bias_correction(b1, safe_increment(count)) if nesterov else None

        def leaf(g, m, v):
            cd = _compute_dtype(g.dtype, m.dtype, v.dtype)
            a1, a2 = _hp(b1, cd), _hp(b2, cd)
            gc = g.astype(cd)
            mu = (1 - a1) * gc + a1 * m.astype(cd)
            nu = (1 - a2) * _sq(gc) + a2 * v.astype(cd)
            if nesterov:
                mu_hat = a1 * (mu / bc1_next.astype(cd)) + (1 - a1) * (gc / bc1.astype(cd))
            else:
                mu_hat = mu / bc1.astype(cd)
            nu_hat = nu / bc2.astype(cd)
            out = mu_hat / (jnp.sqrt(nu_hat + _hp(eps_root, cd)) + _hp(eps, cd))
            return out.astype(g.dtype), mu.astype(m.dtype), nu.astype(v.dtype)

        updates, mu, nu = _map(leaf, 3, updates, state.mu, state.nu)
        return updates, ScaleByAdamState(count=count, mu=mu, nu=nu)

    return GT(init, update)


def _scale_leaf(s, g):
    cd = _compute_dtype(g.dtype)
    if isinstance(s, (int, float, complex)):
        return (s * g.astype(cd)).astype(g.dtype)
    return (jnp.asarray(s).astype(cd) * g.astype(cd)).astype(g.dtype)


def scale(step_size) -> GT:
    """Multiplies updates by a fixed ``step_size``: ``u = step_size * g``."""

    def update(updates, state, params=None, **extra_args):
        del params, extra_args
        return jax.tree.map(lambda g: _scale_leaf(step_size, g), updates), state

    return GT(optax.init_empty_state, update)


def scale_by_schedule(step_size_fn: Callable) -> GT:
    """Multiplies updates by ``step_size_fn(count)``, ``count`` = updates so far."""

    def init(params):
        del params
        return ScaleByScheduleState(count=_zero_count())

    def update(updates, state, params=None, **extra_args):
        del params, extra_args
        s = step_size_fn(state.count)
        updates = jax.tree.map(lambda g: _scale_leaf(s, g), updates)
        return updates, ScaleByScheduleState(count=safe_increment(state.count))

    return GT(init, update)


def scale_by_learning_rate(learning_rate: ScalarOrSchedule | None, *, flip_sign: bool = True) -> GT:
    """``u = -lr * g`` (``+lr`` with ``flip_sign=False``); ``lr`` a float or a schedule.

    ``None`` means no scaling. Same as ``optax.scale_by_learning_rate``.
    """
    if learning_rate is None:
        return optax.with_extra_args_support(optax.identity())
    sign = -1 if flip_sign else 1
    if callable(learning_rate):
        return scale_by_schedule(lambda count: sign * learning_rate(count))
    return scale(sign * learning_rate)


def add_decayed_weights(weight_decay: ScalarOrSchedule = 0.0, mask=None) -> GT:
    """Decoupled weight decay: ``u = g + weight_decay * params``.

    Args:
      weight_decay: a float or a schedule of the step count.
      mask: a tree of booleans (or a function of the params returning one):
        decay only where True, e.g. weights but not biases.

    Returns:
      A transformation (needs ``params`` in ``update``); same as ``optax.add_decayed_weights``.
    """

    def init(params):
        del params
        if callable(weight_decay):
            return AddDecayedWeightsState(count=_zero_count())
        return optax.EmptyState()

    def update(updates, state, params=None, **extra_args):
        del extra_args
        if params is None:
            raise ValueError("add_decayed_weights needs `params` in update(); got params=None.")
        new_state = (
            AddDecayedWeightsState(count=safe_increment(state.count))
            if callable(weight_decay)
            else state
        )
        if isinstance(weight_decay, (int, float)) and weight_decay == 0.0:
            return updates, new_state
        s = weight_decay(state.count) if callable(weight_decay) else weight_decay

        def leaf(g, p):
            cd = _compute_dtype(g.dtype, p.dtype)
            out = g.astype(cd) + _hp(s, cd) * p.astype(cd)
            return out.astype(g.dtype)

        return jax.tree.map(leaf, updates, params), new_state

    tx = GT(init, update)
    return tx if mask is None else optax.masked(tx, mask)


# -------------------------------------------------------------------------- optimizers


def _momentum(momentum, nesterov, accumulator_dtype=None):
    if momentum is None:
        return optax.with_extra_args_support(optax.identity())
    return trace(decay=momentum, nesterov=nesterov, accumulator_dtype=accumulator_dtype)


def sgd(
    learning_rate: ScalarOrSchedule,
    momentum=None,
    nesterov: bool = False,
    accumulator_dtype=None,
) -> GT:
    """Stochastic gradient descent, with optional (Nesterov) momentum.

    Vanilla: ``W <- W - lr * dW``. With momentum ``mu`` the notes' velocity form
    ``v <- mu v - lr dW; W <- W + v`` is written as ``m <- dW + mu m``,
    ``W <- W - lr m`` (identical for a constant ``lr``). Nesterov evaluates the
    step at the look-ahead: ``W <- W - lr (dW + mu m)``. Same as ``optax.sgd``.

    Args:
      learning_rate: a float or a schedule (``count -> lr``).
      momentum: ``mu``, or None for plain SGD.
      nesterov: use Nesterov momentum.
      accumulator_dtype: dtype of the momentum buffer.

    Returns:
      An ``optax.GradientTransformationExtraArgs``.
    """
    return chain(
        _momentum(momentum, nesterov, accumulator_dtype), scale_by_learning_rate(learning_rate)
    )


def adagrad(learning_rate: ScalarOrSchedule, initial_accumulator_value=0.1, eps=1e-7) -> GT:
    """Adagrad: ``G <- G + dW**2``, ``W <- W - lr dW / sqrt(G + eps)``.

    Each parameter gets its own step size ``lr / sqrt(G)``; because ``G`` only
    grows, the steps shrink monotonically and learning eventually stops.
    Same as ``optax.adagrad``.
    """
    return chain(
        scale_by_rss(initial_accumulator_value=initial_accumulator_value, eps=eps),
        scale_by_learning_rate(learning_rate),
    )


def rmsprop(
    learning_rate: ScalarOrSchedule,
    decay=0.9,
    eps=1e-8,
    initial_scale=0.0,
    eps_in_sqrt: bool = True,
    centered: bool = False,
    momentum=None,
    nesterov: bool = False,
    bias_correction: bool = False,
) -> GT:
    """RMSProp: ``v <- decay v + (1 - decay) dW**2``, ``W <- W - lr dW / sqrt(v + eps)``.

    Adagrad with a leaky sum: old gradients decay away, so the per-parameter
    step adapts without shrinking to zero. ``centered`` divides by a running
    standard deviation instead; ``momentum`` adds a (Nesterov) velocity on top
    of the scaled step. Same as ``optax.rmsprop``.
    """
    scaler = scale_by_stddev if centered else scale_by_rms
    return chain(
        scaler(
            decay=decay,
            eps=eps,
            initial_scale=initial_scale,
            eps_in_sqrt=eps_in_sqrt,
            bias_correction=bias_correction,
        ),
        scale_by_learning_rate(learning_rate),
        _momentum(momentum, nesterov),
    )


def adam(
    learning_rate: ScalarOrSchedule,
    b1=0.9,
    b2=0.999,
    eps=1e-8,
    eps_root=0.0,
    mu_dtype=None,
    *,
    nesterov: bool = False,
) -> GT:
    """Adam = RMSProp + momentum, with bias correction.

    ``m <- b1 m + (1 - b1) dW``, ``v <- b2 v + (1 - b2) dW**2``,
    ``W <- W - lr * (m / (1 - b1**t)) / (sqrt(v / (1 - b2**t) + eps_root) + eps)``.
    Same as ``optax.adam``; see :func:`scale_by_adam`.
    """
    return chain(
        scale_by_adam(
            b1=b1, b2=b2, eps=eps, eps_root=eps_root, mu_dtype=mu_dtype, nesterov=nesterov
        ),
        scale_by_learning_rate(learning_rate),
    )


def adamw(
    learning_rate: ScalarOrSchedule,
    b1=0.9,
    b2=0.999,
    eps=1e-8,
    eps_root=0.0,
    mu_dtype=None,
    weight_decay: ScalarOrSchedule = 1e-4,
    mask=None,
    *,
    nesterov: bool = False,
) -> GT:
    """Adam with decoupled weight decay: ``W <- W - lr (adam_step + weight_decay W)``.

    ``mask`` (tree of booleans or a function of the params) picks the leaves
    that decay. Same as ``optax.adamw``.
    """
    return chain(
        scale_by_adam(
            b1=b1, b2=b2, eps=eps, eps_root=eps_root, mu_dtype=mu_dtype, nesterov=nesterov
        ),
        add_decayed_weights(weight_decay, mask),
        scale_by_learning_rate(learning_rate),
    )


def nadam(
    learning_rate: ScalarOrSchedule,
    b1=0.9,
    b2=0.999,
    eps=1e-8,
    eps_root=0.0,
    mu_dtype=None,
    *,
    nesterov: bool = True,
) -> GT:
    """NAdam: :func:`adam` with Nesterov momentum (``optax.nadam``)."""
    return adam(learning_rate, b1, b2, eps, eps_root, mu_dtype, nesterov=nesterov)


def nadamw(
    learning_rate: ScalarOrSchedule,
    b1=0.9,
    b2=0.999,
    eps=1e-8,
    eps_root=0.0,
    mu_dtype=None,
    weight_decay: ScalarOrSchedule = 1e-4,
    mask=None,
    *,
    nesterov: bool = True,
) -> GT:
    """NAdamW: :func:`adamw` with Nesterov momentum (``optax.nadamw``)."""
    return adamw(
        learning_rate, b1, b2, eps, eps_root, mu_dtype, weight_decay, mask, nesterov=nesterov
    )


# ------------------------------------------------------------------ inject_hyperparams


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
            dtype = _compute_dtype(dtype, jnp.finfo(leaf.dtype).dtype)
    return dtype


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
    ``state.hyperparams["learning_rate"] = ...``.

    Args:
      inner_factory: e.g. ``jnn.optim.adam``.
      static_args: names of arguments that are callables but not schedules.
      hyperparam_dtype: dtype for floating hyperparameters.

    Returns:
      A factory with ``inner_factory``'s signature whose numeric arguments may
      also be schedules.
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
        sched, numeric, other = {}, {}, {}
        for name, value in bound.arguments.items():
            if name in static_args or isinstance(value, bool):
                other[name] = value
            elif isinstance(value, optax.schedules.StatefulSchedule):
                sched[name] = value
            elif callable(value):
                sched[name] = optax.schedules.WrappedSchedule(value)
            elif isinstance(value, (int, float, jax.Array, np.ndarray, np.generic)):
                numeric[name] = value
            else:
                other[name] = value

        def init(params):
            dtype = _hyperparam_dtype(params) if hyperparam_dtype is None else hyperparam_dtype
            hparams = {k: _to_dtype(v, dtype) for k, v in numeric.items()}
            sched_states = {k: f.init() for k, f in sched.items()}
            hparams.update({k: _to_dtype(f(sched_states[k]), dtype) for k, f in sched.items()})
            return optax.InjectStatefulHyperparamsState(
                count=_zero_count(),
                hyperparams=hparams,
                hyperparams_states=sched_states,
                inner_state=inner_factory(**other, **hparams).init(params),
            )

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

        return GT(init, update)

    return wrapped
