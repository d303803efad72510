"""The building blocks: each a factory of ``init`` / ``update`` closures over a NamedTuple state.

Every leaf is computed in at least float32 (:func:`jnn.optim._base.compute_dtype`) and
cast back to its own dtype; Python-number hyperparameters stay weakly typed so the
numbers are Optax's, and array or traced hyperparameters (per-member values under
``jax.vmap``) are cast to the compute dtype.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from optax import ScalarOrSchedule

from jnn.optim._base import (
    GT,
    bias_correction_factor,
    check_dtype,
    check_flag,
    check_number,
    check_schedule,
    compute_dtype,
    full,
    hp,
    identity,
    safe_increment,
    sq,
    tree_map_n,
    zero_count,
)

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
    "add_decayed_weights",
    "scale",
    "scale_by_adam",
    "scale_by_learning_rate",
    "scale_by_rms",
    "scale_by_rss",
    "scale_by_schedule",
    "scale_by_stddev",
    "trace",
]

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


def _trace(fn, decay, nesterov, accumulator_dtype) -> GT:
    """:func:`trace`, with ``fn`` (the function the user called) named in errors."""
    check_number(fn, "decay", decay)
    check_flag(fn, "nesterov", nesterov)
    accumulator_dtype = check_dtype(fn, "accumulator_dtype", accumulator_dtype)

    def init(params):
        return TraceState(trace=jax.tree.map(lambda p: full(p, 0, accumulator_dtype), params))

    def leaf(g, t):
        cd = compute_dtype(g.dtype, t.dtype)
        d = hp(decay, cd)
        gc = g.astype(cd)
        new = gc + d * t.astype(cd)
        out = gc + d * new if nesterov else new
        return out.astype(g.dtype), new.astype(t.dtype)

    def update(updates, state, params=None, **extra_args):
        del params, extra_args
        updates, new_trace = tree_map_n(leaf, 2, updates, state.trace)
        return updates, TraceState(trace=new_trace)

    return GT(init, update)


def trace(decay, nesterov: bool = False, accumulator_dtype=None) -> GT:
    """Momentum as a velocity: ``v <- g + decay * v``; the update is ``v``.

    With ``nesterov=True`` the update is the look-ahead ``g + decay * v`` (the
    notes' "gradient at the point momentum is about to carry us to").
    Same as ``optax.trace``.

    Args:
      decay: momentum coefficient ``mu``, usually in ``[0, 1)`` (a number or an array).
      nesterov: use Nesterov's look-ahead.
      accumulator_dtype: dtype of ``v`` (default: the params' dtype).

    Returns:
      An ``optax.GradientTransformationExtraArgs`` with state ``TraceState(trace)``.
    """
    return _trace("trace", decay, nesterov, accumulator_dtype)


def _scale_by_rss(fn, initial_accumulator_value, eps) -> GT:
    """:func:`scale_by_rss`, with ``fn`` named in errors."""
    check_number(fn, "initial_accumulator_value", initial_accumulator_value)
    check_number(fn, "eps", eps)

    def init(params):
        return ScaleByRssState(
            sum_of_squares=jax.tree.map(lambda p: full(p, initial_accumulator_value), params)
        )

    def leaf(g, t):
        cd = compute_dtype(g.dtype, t.dtype)
        gc = g.astype(cd)
        s = sq(gc) + t.astype(cd)
        inv = jnp.where(s > 0, jax.lax.rsqrt(s + hp(eps, cd)), 0.0)
        return (inv * gc).astype(g.dtype), s.astype(t.dtype)

    def update(updates, state, params=None, **extra_args):
        del params, extra_args
        updates, s = tree_map_n(leaf, 2, updates, state.sum_of_squares)
        return updates, ScaleByRssState(sum_of_squares=s)

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
    return _scale_by_rss("scale_by_rss", initial_accumulator_value, eps)


# ----------------------------------------------------------- RMSProp, plain and centred

_RMS_STATES = {  # (centered, bias_correction) -> state class
    (False, False): ScaleByRmsState,
    (False, True): ScaleByRmsWithCountState,
    (True, False): ScaleByRStdDevState,
    (True, True): ScaleByRStdDevWithCountState,
}


def _denominator(n, eps, eps_in_sqrt):
    return jax.lax.rsqrt(n + eps) if eps_in_sqrt else 1 / (jnp.sqrt(n) + eps)


def _rms_state(centered, bias_correction, count, mu, nu):
    fields = {"nu": nu}
    if centered:
        fields["mu"] = mu
    if bias_correction:
        fields["count"] = count
    return _RMS_STATES[centered, bias_correction](**fields)


def _rms_leaf(decay, eps, eps_in_sqrt, centered, bc):
    """The per-leaf RMSProp step; ``old`` is ``(nu,)`` or, centred, ``(mu, nu)``."""

    def leaf(g, *old):
        cd = compute_dtype(g.dtype, *(x.dtype for x in old))
        d, gc = hp(decay, cd), g.astype(cd)
        correct = (lambda x: x / bc.astype(cd)) if bc is not None else (lambda x: x)
        nu = (1 - d) * sq(gc) + d * old[-1].astype(cd)
        var = correct(nu)
        new = (nu,)
        if centered:
            mu = (1 - d) * gc + d * old[0].astype(cd)
            var = var - sq(correct(mu))
            new = (mu, nu)
        out = _denominator(var, hp(eps, cd), eps_in_sqrt) * gc
        return (out.astype(g.dtype), *(n.astype(o.dtype) for n, o in zip(new, old, strict=True)))

    return leaf


def _scale_by_rms(fn, decay, eps, initial_scale, eps_in_sqrt, bias_correction, centered) -> GT:
    """:func:`scale_by_rms` (``centered=False``) and :func:`scale_by_stddev` (``True``)."""
    for name, value in (("decay", decay), ("eps", eps), ("initial_scale", initial_scale)):
        check_number(fn, name, value)
    check_flag(fn, "eps_in_sqrt", eps_in_sqrt)
    check_flag(fn, "bias_correction", bias_correction)
    bias_correction = bool(bias_correction)

    def init(params):
        mu = jax.tree.map(lambda p: full(p, 0), params) if centered else None
        nu = jax.tree.map(lambda p: full(p, initial_scale), params)
        return _rms_state(centered, bias_correction, zero_count(), mu, nu)

    def update(updates, state, params=None, **extra_args):
        del params, extra_args
        count = safe_increment(state.count) if bias_correction else None
        bc = bias_correction_factor(decay, count) if bias_correction else None
        leaf = _rms_leaf(decay, eps, eps_in_sqrt, centered, bc)
        if centered:
            updates, mu, nu = tree_map_n(leaf, 3, updates, state.mu, state.nu)
        else:
            (updates, nu), mu = tree_map_n(leaf, 2, updates, state.nu), None
        return updates, _rms_state(centered, bias_correction, count, mu, nu)

    return GT(init, update)


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
    return _scale_by_rms(
        "scale_by_rms", decay, eps, initial_scale, eps_in_sqrt, bias_correction, centered=False
    )


def scale_by_stddev(
    decay=0.9, eps=1e-8, initial_scale=0.0, eps_in_sqrt: bool = True, bias_correction: bool = False
) -> GT:
    """Centred RMSProp: ``u = g / sqrt(v - m**2 + eps)`` with leaky averages ``m`` of ``g``
    and ``v`` of ``g**2`` (a running variance instead of a second moment).

    Same as ``optax.scale_by_stddev``.

    Args:
      decay: averaging rate of the gradients and squared gradients.
      eps: stabiliser in the denominator.
      initial_scale: starting value of ``v``.
      eps_in_sqrt: put ``eps`` inside (True) or outside the square root.
      bias_correction: divide ``m`` and ``v`` by ``1 - decay**t``.

    Returns:
      A transformation with state ``ScaleByRStdDevState(mu, nu)`` or
      ``ScaleByRStdDevWithCountState(count, mu, nu)``.
    """
    return _scale_by_rms(
        "scale_by_stddev", decay, eps, initial_scale, eps_in_sqrt, bias_correction, centered=True
    )


# ------------------------------------------------------------------------------- Adam


def _adam_leaf(b1, b2, eps, eps_root, nesterov, bc1, bc2, bc1_next):
    def leaf(g, m, v):
        cd = compute_dtype(g.dtype, m.dtype, v.dtype)
        a1, a2 = hp(b1, cd), hp(b2, cd)
        gc = g.astype(cd)
        mu = (1 - a1) * gc + a1 * m.astype(cd)
        nu = (1 - a2) * sq(gc) + a2 * v.astype(cd)
        if nesterov:
            mu_hat = a1 * (mu / bc1_next.astype(cd)) + (1 - a1) * (gc / bc1.astype(cd))
        else:
            mu_hat = mu / bc1.astype(cd)
        nu_hat = nu / bc2.astype(cd)
        out = mu_hat / (jnp.sqrt(nu_hat + hp(eps_root, cd)) + hp(eps, cd))
        return out.astype(g.dtype), mu.astype(m.dtype), nu.astype(v.dtype)

    return leaf


def _scale_by_adam(fn, b1, b2, eps, eps_root, mu_dtype, nesterov) -> GT:
    """:func:`scale_by_adam`, with ``fn`` named in errors."""
    for name, value in (("b1", b1), ("b2", b2), ("eps", eps), ("eps_root", eps_root)):
        check_number(fn, name, value)
    check_flag(fn, "nesterov", nesterov)
    mu_dtype = check_dtype(fn, "mu_dtype", mu_dtype)

    def init(params):
        mu = jax.tree.map(lambda p: full(p, 0, mu_dtype), params)
        nu = jax.tree.map(lambda p: full(p, 0), params)
        return ScaleByAdamState(count=zero_count(), mu=mu, nu=nu)

    def update(updates, state, params=None, **extra_args):
        del params, extra_args
        count = safe_increment(state.count)
        bc1, bc2 = bias_correction_factor(b1, count), bias_correction_factor(b2, count)
        bc1_next = bias_correction_factor(b1, safe_increment(count)) if nesterov else None
        leaf = _adam_leaf(b1, b2, eps, eps_root, nesterov, bc1, bc2, bc1_next)
        updates, mu, nu = tree_map_n(leaf, 3, updates, state.mu, state.nu)
        return updates, ScaleByAdamState(count=count, mu=mu, nu=nu)

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
    return _scale_by_adam("scale_by_adam", b1, b2, eps, eps_root, mu_dtype, nesterov)


# ------------------------------------------------------------- scaling and weight decay


def _scale_leaf(s, g):
    cd = compute_dtype(g.dtype)
    if isinstance(s, (int, float, complex)):
        return (s * g.astype(cd)).astype(g.dtype)
    return (jnp.asarray(s).astype(cd) * g.astype(cd)).astype(g.dtype)


def scale(step_size) -> GT:
    """Multiplies updates by a fixed ``step_size``: ``u = step_size * g``.

    Args:
      step_size: a number or an array (a traced per-member value is fine).

    Returns:
      A stateless transformation (same as ``optax.scale``).
    """
    check_number("scale", "step_size", step_size)

    def update(updates, state, params=None, **extra_args):
        del params, extra_args
        return jax.tree.map(lambda g: _scale_leaf(step_size, g), updates), state

    return GT(optax.init_empty_state, update)


def scale_by_schedule(step_size_fn: Callable) -> GT:
    """Multiplies updates by ``step_size_fn(count)``, ``count`` = updates so far.

    Args:
      step_size_fn: a schedule ``count -> step size``.

    Returns:
      A transformation with state ``ScaleByScheduleState(count)``.
    """
    check_schedule("scale_by_schedule", "step_size_fn", step_size_fn)

    def init(params):
        del params
        return ScaleByScheduleState(count=zero_count())

    def update(updates, state, params=None, **extra_args):
        del params, extra_args
        s = step_size_fn(state.count)
        updates = jax.tree.map(lambda g: _scale_leaf(s, g), updates)
        return updates, ScaleByScheduleState(count=safe_increment(state.count))

    return GT(init, update)


def scale_by_learning_rate(learning_rate: ScalarOrSchedule | None, *, flip_sign: bool = True) -> GT:
    """``u = -lr * g`` (``+lr`` with ``flip_sign=False``); ``lr`` a float or a schedule.

    Same as ``optax.scale_by_learning_rate``.

    Args:
      learning_rate: a number, an array, a schedule ``count -> lr``, or None (no scaling).
      flip_sign: descend (``-lr``) rather than ascend.

    Returns:
      :func:`scale`, :func:`scale_by_schedule` or the identity.
    """
    fn = "scale_by_learning_rate"
    check_number(fn, "learning_rate", learning_rate, schedule=True, optional=True)
    check_flag(fn, "flip_sign", flip_sign)
    if learning_rate is None:
        return identity()
    sign = -1 if flip_sign else 1
    if callable(learning_rate):
        return scale_by_schedule(lambda count: sign * learning_rate(count))
    return scale(sign * learning_rate)


def add_decayed_weights(weight_decay: ScalarOrSchedule = 0.0, mask=None) -> GT:
    """Decoupled weight decay: ``u = g + weight_decay * params``.

    Args:
      weight_decay: a number, an array or a schedule of the step count.
      mask: a tree of booleans (or a function of the params returning one):
        decay only where True, e.g. weights but not biases.

    Returns:
      A transformation (needs ``params`` in ``update``); same as ``optax.add_decayed_weights``.
    """
    check_number("add_decayed_weights", "weight_decay", weight_decay, schedule=True)
    scheduled = callable(weight_decay)

    def init(params):
        del params
        return AddDecayedWeightsState(count=zero_count()) if scheduled else optax.EmptyState()

    def update(updates, state, params=None, **extra_args):
        del extra_args
        if params is None:
            raise ValueError("add_decayed_weights needs `params` in update(); got params=None.")
        new_state = state
        if scheduled:
            new_state = AddDecayedWeightsState(count=safe_increment(state.count))
        if isinstance(weight_decay, (int, float)) and weight_decay == 0.0:
            return updates, new_state
        s = weight_decay(state.count) if scheduled else weight_decay

        def leaf(g, p):
            cd = compute_dtype(g.dtype, p.dtype)
            return (g.astype(cd) + hp(s, cd) * p.astype(cd)).astype(g.dtype)

        return jax.tree.map(leaf, updates, params), new_state

    tx = GT(init, update)
    return tx if mask is None else optax.masked(tx, mask)
