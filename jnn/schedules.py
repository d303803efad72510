"""Learning-rate schedules: ``count -> value`` functions with Optax's signatures and values.

"Anneal the learning rate" in the notes: step decay (:func:`piecewise_constant_schedule`,
:func:`exponential_decay` with ``staircase``), exponential, cosine, linear,
inverse square root and constant, plus a linear warm-up in front of any of them
(:func:`warmup_schedule`, :func:`warmup_cosine_decay_schedule`). Every schedule
accepts a Python int or a traced int32 step count under ``jit`` and works with
strict dtype promotion. Pass one as ``learning_rate`` to any ``jnn.optim`` (or
Optax) optimizer.

Arguments are checked when the schedule is built: a string, ``None``, a bool or
a non-finite number where a number belongs raises ``TypeError`` / ``ValueError``
naming the argument; step counts must be whole numbers. JAX arrays and tracers
are passed through unchecked, so a schedule can be built inside ``jax.vmap``
with a per-member value (``warmup_cosine_decay_schedule(0.0, peaks, 5, 50)``
with ``peaks`` a ``(K,)`` array mapped over).
"""

import logging
import math
import numbers
from collections.abc import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "constant_schedule",
    "cosine_decay_schedule",
    "exponential_decay",
    "inverse_sqrt_schedule",
    "join_schedules",
    "linear_schedule",
    "piecewise_constant_schedule",
    "polynomial_schedule",
    "warmup_cosine_decay_schedule",
    "warmup_schedule",
]

Schedule = Callable[..., jnp.ndarray]
_log = logging.getLogger("jnn")


# ------------------------------------------------------------------- argument checks
# The one home of jnn's hyperparameter checks (jnn.optim uses them too). They look
# only at Python and NumPy values: JAX arrays and tracers pass through untouched.


def _is_jax(value) -> bool:
    return isinstance(value, jax.Array) or hasattr(value, "__jax_array__")


def _is_elementwise(value) -> bool:
    """A JAX array or tracer, or a NumPy array with a shape: Python ``if`` cannot branch on it."""
    return _is_jax(value) or np.ndim(value) > 0


def _got(value) -> str:
    return f"got {value!r} ({type(value).__name__})"


def _check_range(fn, name, value, above=None, at_least=None):
    """``value > above`` / ``value >= at_least`` for a concrete (Python or NumPy) value."""
    if above is not None and not np.all(np.greater(value, above)):
        raise ValueError(f"{fn} needs {name} > {above}, {_got(value)}.")
    if at_least is not None and not np.all(np.greater_equal(value, at_least)):
        raise ValueError(f"{fn} needs {name} >= {at_least}, {_got(value)}.")


def _check_number(
    fn: str, name: str, value, *, schedule=False, optional=False, above=None, at_least=None
):
    """Refuses what cannot be a numeric hyperparameter; returns ``value`` unchanged.

    Accepted: a finite Python or NumPy number, a NumPy array of finite numbers,
    any JAX array or tracer (unchecked), a callable when ``schedule`` (a schedule
    ``count -> value``), ``None`` when ``optional``. ``above`` / ``at_least``
    bound concrete values.

    Args:
      fn: the public function, for the message.
      name: the argument's name, for the message.
      value: the argument.
      schedule: a callable is accepted as a schedule.
      optional: ``None`` is accepted.
      above: concrete values must be ``> above``.
      at_least: concrete values must be ``>= at_least``.

    Returns:
      ``value``.

    Raises:
      TypeError: ``value`` is not a number, an array (or a schedule / None when allowed).
      ValueError: ``value`` is not finite or out of range.
    """
    if _is_jax(value) or (optional and value is None) or (schedule and callable(value)):
        return value
    is_number = isinstance(value, numbers.Number) and not isinstance(value, bool)
    is_array = isinstance(value, np.ndarray) and value.dtype.kind in "iufc"
    if not (is_number or is_array):
        kinds = ["a number", "an array"] + ["a schedule (count -> value)"] * schedule
        kinds += ["None"] * optional
        kinds = ", ".join(kinds[:-1]) + " or " + kinds[-1]
        raise TypeError(f"{fn} needs {name} to be {kinds}, {_got(value)}.")
    if not np.all(np.isfinite(value)):
        raise ValueError(f"{fn} needs a finite {name}, {_got(value)}.")
    _check_range(fn, name, value, above, at_least)
    return value


def _check_steps(fn: str, name: str, value, *, above=None, at_least=None):
    """A whole number of steps (an int, or a float with an integral value); returns it.

    Args and Raises as in :func:`_check_number`; JAX arrays pass through.
    """
    if _is_jax(value):
        return value
    whole = isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))
    if isinstance(value, (float, np.floating)) and math.isfinite(value):
        whole = float(value).is_integer()
    if not whole:
        error = TypeError if not isinstance(value, (float, np.floating)) else ValueError
        raise error(f"{fn} needs {name} to be a whole number of steps, {_got(value)}.")
    _check_range(fn, name, value, above, at_least)
    return value


def _check_flag(fn: str, name: str, value):
    """A bool (or NumPy bool, or the ints 0 / 1); returns it."""
    if isinstance(value, (bool, np.bool_)) or (
        isinstance(value, numbers.Integral) and value in (0, 1)
    ):
        return value
    raise TypeError(f"{fn} needs {name} to be True or False, {_got(value)}.")


def _check_schedule(fn: str, name: str, value):
    """A callable ``count -> value``; returns it."""
    if not callable(value):
        raise TypeError(f"{fn} needs {name} to be a schedule (count -> value), {_got(value)}.")
    return value


# ------------------------------------------------------------------------- schedules


def _float(count):
    """The step count as the default float dtype: what Optax's implicit promotion gives."""
    return jnp.asarray(count).astype(jnp.result_type(float))


def constant_schedule(value) -> Schedule:
    """``lr(t) = value``.

    Args:
      value: the constant (a number or an array).

    Returns:
      A schedule ``count -> value``.
    """
    _check_number("constant_schedule", "value", value)
    return lambda count: value


def _polynomial(fn, init_value, end_value, power, transition_steps, transition_begin):
    """:func:`polynomial_schedule`, with ``fn`` (the function the user called) in errors."""
    for name, value in (("init_value", init_value), ("end_value", end_value), ("power", power)):
        _check_number(fn, name, value)
    _check_steps(fn, "transition_steps", transition_steps)
    _check_steps(fn, "transition_begin", transition_begin)
    if transition_steps <= 0:
        return lambda count: init_value
    transition_begin = max(transition_begin, 0)

    def schedule(count):
        s = _float(jnp.clip(jnp.asarray(count) - transition_begin, 0, transition_steps))
        frac = 1 - s / transition_steps
        return (init_value - end_value) * (frac**power) + end_value

    return schedule


def polynomial_schedule(
    init_value, end_value, power, transition_steps: int, transition_begin: int = 0
) -> Schedule:
    """``lr(t) = (init - end) * (1 - s / T)**power + end`` with ``s = clip(t - begin, 0, T)``.

    Args:
      init_value: value up to ``transition_begin``.
      end_value: value from ``transition_begin + transition_steps`` on.
      power: curvature of the decay (1 is linear).
      transition_steps: ``T``; a non-positive ``T`` gives a constant ``init_value`` (as Optax).
      transition_begin: first step of the transition (negative means 0, as Optax).

    Returns:
      A schedule ``count -> value``.
    """
    return _polynomial(
        "polynomial_schedule", init_value, end_value, power, transition_steps, transition_begin
    )


def linear_schedule(
    init_value, end_value, transition_steps: int, transition_begin: int = 0
) -> Schedule:
    """Linear annealing from ``init_value`` to ``end_value`` over ``transition_steps``.

    ``lr(t) = init + (end - init) * clip(t - begin, 0, T) / T``.

    Args:
      init_value: value up to ``transition_begin``.
      end_value: value from ``transition_begin + transition_steps`` on.
      transition_steps: ``T``; a non-positive ``T`` gives a constant ``init_value``.
      transition_begin: first step of the transition.

    Returns:
      A schedule ``count -> value``.
    """
    return _polynomial(
        "linear_schedule", init_value, end_value, 1, transition_steps, transition_begin
    )


def _check_boundaries_and_scales(boundaries_and_scales):
    fn = "piecewise_constant_schedule"
    if boundaries_and_scales is None:
        return
    if not isinstance(boundaries_and_scales, Mapping):
        raise TypeError(
            f"{fn} needs boundaries_and_scales to be a dict {{step: factor}} or None, "
            f"{_got(boundaries_and_scales)}."
        )
    for boundary, factor in boundaries_and_scales.items():
        _check_steps(fn, "a boundary (a key of boundaries_and_scales)", boundary)
        _check_number(fn, f"boundaries_and_scales[{boundary!r}]", factor, at_least=0)


def piecewise_constant_schedule(init_value, boundaries_and_scales: dict | None = None) -> Schedule:
    """Step decay: ``lr(t) = init * prod(scale_b for every boundary b < t)``.

    Args:
      init_value: value before the first boundary.
      boundaries_and_scales: ``{step: factor}``; factors must be finite and >= 0.

    Returns:
      A schedule ``count -> value``.
    """
    _check_number("piecewise_constant_schedule", "init_value", init_value)
    _check_boundaries_and_scales(boundaries_and_scales)

    def schedule(count):
        v = init_value
        for threshold, factor in sorted((boundaries_and_scales or {}).items()):
            indicator = jnp.maximum(0.0, _float(jnp.sign(threshold - jnp.asarray(count))))
            v = v * indicator + (1 - indicator) * factor * v
        return v

    return schedule


def _clip_to_end(value, end_value, decay_rate):
    """``end_value`` as a floor when decaying (``decay_rate < 1``), else as a ceiling."""
    if end_value is None:
        return value
    if _is_elementwise(decay_rate):
        return jnp.where(
            decay_rate < 1.0, jnp.maximum(value, end_value), jnp.minimum(value, end_value)
        )
    return (jnp.maximum if decay_rate < 1.0 else jnp.minimum)(value, end_value)


def exponential_decay(
    init_value,
    transition_steps: int,
    decay_rate: float,
    transition_begin: int = 0,
    staircase: bool = False,
    end_value=None,
) -> Schedule:
    """``lr(t) = init * decay_rate**(s / T)`` with ``s = t - begin`` (``init`` for ``s <= 0``).

    ``staircase=True`` floors ``s / T`` (step decay every ``T`` steps); ``end_value``
    bounds the result (a floor when decaying, a ceiling when ``decay_rate > 1``).
    A non-positive ``T`` gives a constant ``init_value``, as in Optax; so does
    ``decay_rate=0`` (Optax's reading, logged at INFO on the ``jnn`` logger as Optax logs
    it; ``decay_rate=1`` is the other constant schedule). A negative ``decay_rate`` is
    refused (``init * rate**p`` would be NaN for fractional ``p``).

    Args:
      init_value: value up to ``transition_begin``.
      transition_steps: ``T``, the steps over which the value is multiplied by ``decay_rate``.
      decay_rate: the factor per ``T`` steps, >= 0 (0: constant, as in Optax; an array may
        be traced, e.g. per member).
      transition_begin: first step of the decay (negative means 0).
      staircase: decay in whole steps of ``T``.
      end_value: bound on the value, or None.

    Returns:
      A schedule ``count -> value``.
    """
    fn = "exponential_decay"
    _check_number(fn, "init_value", init_value)
    _check_steps(fn, "transition_steps", transition_steps)
    _check_number(fn, "decay_rate", decay_rate, at_least=0)
    _check_steps(fn, "transition_begin", transition_begin)
    _check_flag(fn, "staircase", staircase)
    _check_number(fn, "end_value", end_value, optional=True)
    if transition_steps <= 0:
        return lambda count: init_value
    if not _is_elementwise(decay_rate) and decay_rate == 0:
        _log.info(
            "exponential_decay: decay_rate=0 gives a constant schedule with value init_value "
            "(as in Optax)."
        )
        return lambda count: init_value
    transition_begin = max(transition_begin, 0)

    def schedule(count):
        s = jnp.asarray(count) - transition_begin
        p = _float(s) / transition_steps
        if staircase:
            p = jnp.floor(p)
        value = jnp.where(s <= 0, init_value, init_value * jnp.power(decay_rate, p))
        return _clip_to_end(value, end_value, decay_rate)

    return schedule


def cosine_decay_schedule(init_value, decay_steps: int, alpha=0.0, exponent=1.0) -> Schedule:
    """Cosine annealing: ``lr(t) = init * ((1 - alpha) * c**exponent + alpha)``,
    ``c = (1 + cos(pi * min(t, D) / D)) / 2``; ends at ``alpha * init``.

    Args:
      init_value: value at step 0.
      decay_steps: ``D``, a whole number > 0.
      alpha: final value as a fraction of ``init_value``.
      exponent: power applied to the cosine factor.

    Returns:
      A schedule ``count -> value``.
    """
    fn = "cosine_decay_schedule"
    _check_number(fn, "init_value", init_value)
    _check_steps(fn, "decay_steps", decay_steps, above=0)
    _check_number(fn, "alpha", alpha)
    _check_number(fn, "exponent", exponent)

    def schedule(count):
        c = jnp.minimum(_float(count), float(decay_steps))
        cosine = 0.5 * (1 + jnp.cos(jnp.pi * c / float(decay_steps)))
        return init_value * ((1 - alpha) * cosine**exponent + alpha)

    return schedule


def _check_join(schedules, boundaries):
    fn = "join_schedules"
    for i, s in enumerate(schedules):
        _check_schedule(fn, f"schedules[{i}]", s)
    for i, b in enumerate(boundaries):
        _check_steps(fn, f"boundaries[{i}]", b)
    if len(boundaries) != len(schedules) - 1:
        raise ValueError(
            f"join_schedules needs len(boundaries) == len(schedules) - 1, got "
            f"{len(boundaries)} boundaries for {len(schedules)} schedules."
        )
    for i in range(1, len(boundaries)):
        if not _is_jax(boundaries[i]) and boundaries[i] < boundaries[i - 1]:
            raise ValueError(
                f"join_schedules needs non-decreasing boundaries, got boundaries[{i - 1}] = "
                f"{boundaries[i - 1]!r} > boundaries[{i}] = {boundaries[i]!r}."
            )


def join_schedules(schedules: Sequence[Schedule], boundaries: Sequence[int]) -> Schedule:
    """Runs ``schedules[i]`` from ``boundaries[i-1]`` on, each seeing steps since its start.

    Args:
      schedules: ``n`` schedules.
      boundaries: ``n - 1`` non-decreasing whole step numbers.

    Returns:
      A schedule ``count -> value``.
    """
    _check_join(schedules, boundaries)

    def schedule(count):
        count = jnp.asarray(count)
        out = schedules[0](count)
        for boundary, fn in zip(boundaries, schedules[1:], strict=True):
            out = jnp.where(count < boundary, out, fn(count - boundary))
        return out

    return schedule


def _end_fraction(end_value, peak_value):
    """``end / peak`` (0 when ``peak == 0``), elementwise when ``peak`` is an array or tracer."""
    if not _is_elementwise(peak_value):
        return 0.0 if peak_value == 0.0 else end_value / peak_value
    zero = peak_value == 0.0
    return jnp.where(zero, 0.0, end_value / jnp.where(zero, 1.0, peak_value))


def warmup_cosine_decay_schedule(
    init_value, peak_value, warmup_steps: int, decay_steps: int, end_value=0.0, exponent=1.0
) -> Schedule:
    """Linear warm-up from ``init_value`` to ``peak_value`` over ``warmup_steps``, then cosine
    decay to ``end_value`` at step ``decay_steps`` (which counts the warm-up).

    Args:
      init_value: value at step 0.
      peak_value: value at step ``warmup_steps`` (may be traced, e.g. per ensemble member).
      warmup_steps: ``W``, a whole number >= 0.
      decay_steps: total steps of warm-up and decay, > ``warmup_steps``.
      end_value: value from ``decay_steps`` on.
      exponent: power applied to the cosine factor.

    Returns:
      A schedule ``count -> value``.
    """
    fn = "warmup_cosine_decay_schedule"
    for name, value in (("init_value", init_value), ("peak_value", peak_value)):
        _check_number(fn, name, value)
    _check_steps(fn, "warmup_steps", warmup_steps, at_least=0)
    _check_steps(fn, "decay_steps", decay_steps)
    if not (_is_jax(decay_steps) or _is_jax(warmup_steps)) and decay_steps <= warmup_steps:
        raise ValueError(
            f"{fn} needs decay_steps > warmup_steps (decay_steps counts the warm-up), got "
            f"decay_steps={decay_steps!r}, warmup_steps={warmup_steps!r}."
        )
    _check_number(fn, "end_value", end_value)
    _check_number(fn, "exponent", exponent)
    alpha = _end_fraction(end_value, peak_value)
    return join_schedules(
        [
            linear_schedule(init_value, peak_value, warmup_steps),
            cosine_decay_schedule(peak_value, decay_steps - warmup_steps, alpha, exponent),
        ],
        [warmup_steps],
    )


def inverse_sqrt_schedule(
    init_value, timescale: float = 1.0, transition_begin: int = 0
) -> Schedule:
    """Inverse square-root decay: ``lr(t) = init / sqrt(1 + max(t - begin, 0) / timescale)``.

    Constant ``init_value`` up to ``transition_begin``; for ``t >> timescale`` it
    falls like ``init * sqrt(timescale / t)``, so it never reaches zero (unlike
    cosine or linear decay) and needs no total step count.

    Args:
      init_value: value at (and before) ``transition_begin``.
      timescale: steps after which the value has fallen by ``sqrt(2)``; > 0.
      transition_begin: first step of the decay.

    Returns:
      A schedule ``count -> value``.
    """
    fn = "inverse_sqrt_schedule"
    _check_number(fn, "init_value", init_value)
    _check_number(fn, "timescale", timescale, above=0)
    _check_steps(fn, "transition_begin", transition_begin)

    def schedule(count):
        s = jnp.maximum(_float(count) - transition_begin, 0.0)
        return init_value / jnp.sqrt(1.0 + s / timescale)

    return schedule


def warmup_schedule(
    schedule: Schedule | float, warmup_steps: int, init_value=0.0, peak_value=None
) -> Schedule:
    """Linear warm-up in front of any schedule.

    ``lr(t) = init + (peak - init) * t / W`` for ``t < W``, then ``schedule(t - W)``;
    ``peak`` defaults to ``schedule(0)`` so the two pieces meet. A too-large
    early learning rate can throw the weights into a bad region; the warm-up
    lets the adaptive statistics settle first.

    Args:
      schedule: the schedule (or constant) to run after the warm-up.
      warmup_steps: ``W`` >= 0; 0 returns ``schedule`` unchanged.
      init_value: value at step 0.
      peak_value: value reached at step ``W`` (default ``schedule(0)``).

    Returns:
      A schedule ``count -> value``.
    """
    fn = "warmup_schedule"
    _check_number(fn, "schedule", schedule, schedule=True)
    _check_steps(fn, "warmup_steps", warmup_steps, at_least=0)
    _check_number(fn, "init_value", init_value)
    _check_number(fn, "peak_value", peak_value, optional=True)
    if not callable(schedule):
        schedule = constant_schedule(schedule)
    if warmup_steps == 0:
        return schedule
    peak = schedule(0) if peak_value is None else peak_value
    return join_schedules(
        [linear_schedule(init_value, peak, warmup_steps), schedule], [warmup_steps]
    )
