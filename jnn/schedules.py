"""Learning-rate schedules: ``count -> value`` functions with Optax's signatures and values.

"Anneal the learning rate" in the notes: step decay (:func:`piecewise_constant_schedule`,
:func:`exponential_decay` with ``staircase``), exponential, cosine, linear,
inverse square root and constant, plus a linear warm-up in front of any of them
(:func:`warmup_schedule`, :func:`warmup_cosine_decay_schedule`). Every schedule
accepts a Python int or a traced int32 step count under ``jit`` and works with
strict dtype promotion. Pass one as ``learning_rate`` to any ``jnn.optim`` (or
Optax) optimizer.
"""

from collections.abc import Callable, Sequence

import jax.numpy as jnp

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


def _float(count):
    """The step count as the default float dtype: what Optax's implicit promotion gives."""
    return jnp.asarray(count).astype(jnp.result_type(float))


def constant_schedule(value) -> Schedule:
    """``lr(t) = value``."""
    return lambda count: value


def polynomial_schedule(
    init_value, end_value, power, transition_steps: int, transition_begin: int = 0
) -> Schedule:
    """``lr(t) = (init - end) * (1 - s / T)**power + end`` with ``s = clip(t - begin, 0, T)``.

    Args:
      init_value: value up to ``transition_begin``.
      end_value: value from ``transition_begin + transition_steps`` on.
      power: curvature of the decay (1 is linear).
      transition_steps: ``T``; a non-positive ``T`` gives a constant ``init_value``.
      transition_begin: first step of the transition (negative means 0).
    """
    if transition_steps <= 0:
        return lambda count: init_value
    transition_begin = max(transition_begin, 0)

    def schedule(count):
        s = _float(jnp.clip(jnp.asarray(count) - transition_begin, 0, transition_steps))
        frac = 1 - s / transition_steps
        return (init_value - end_value) * (frac**power) + end_value

    return schedule


def linear_schedule(
    init_value, end_value, transition_steps: int, transition_begin: int = 0
) -> Schedule:
    """Linear annealing from ``init_value`` to ``end_value`` over ``transition_steps``.

    ``lr(t) = init + (end - init) * clip(t - begin, 0, T) / T``.
    """
    return polynomial_schedule(init_value, end_value, 1, transition_steps, transition_begin)


def piecewise_constant_schedule(init_value, boundaries_and_scales: dict | None = None) -> Schedule:
    """Step decay: ``lr(t) = init * prod(scale_b for every boundary b < t)``.

    Args:
      init_value: value before the first boundary.
      boundaries_and_scales: ``{step: factor}``; factors must be >= 0.
    """
    if boundaries_and_scales is not None:
        bad = {b: s for b, s in boundaries_and_scales.items() if not s >= 0.0}
        if bad:
            raise ValueError(
                f"piecewise_constant_schedule expects non-negative scale factors, got {bad}."
            )

    def schedule(count):
        v = init_value
        for threshold, factor in sorted((boundaries_and_scales or {}).items()):
            indicator = jnp.maximum(0.0, _float(jnp.sign(threshold - jnp.asarray(count))))
            v = v * indicator + (1 - indicator) * factor * v
        return v

    return schedule


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
    A non-positive ``T`` or a zero ``decay_rate`` gives a constant ``init_value``.
    """
    if transition_steps <= 0 or decay_rate == 0:
        return lambda count: init_value
    transition_begin = max(transition_begin, 0)
    bound = jnp.maximum if decay_rate < 1.0 else jnp.minimum

    def schedule(count):
        s = jnp.asarray(count) - transition_begin
        p = _float(s) / transition_steps
        if staircase:
            p = jnp.floor(p)
        value = jnp.where(s <= 0, init_value, init_value * jnp.power(decay_rate, p))
        return value if end_value is None else bound(value, end_value)

    return schedule


def cosine_decay_schedule(init_value, decay_steps: int, alpha=0.0, exponent=1.0) -> Schedule:
    """Cosine annealing: ``lr(t) = init * ((1 - alpha) * c**exponent + alpha)``,
    ``c = (1 + cos(pi * min(t, D) / D)) / 2``; ends at ``alpha * init``.

    Args:
      init_value: value at step 0.
      decay_steps: ``D`` > 0.
      alpha: final value as a fraction of ``init_value``.
      exponent: power applied to the cosine factor.
    """
    if not decay_steps > 0:
        raise ValueError(f"cosine_decay_schedule needs decay_steps > 0, got {decay_steps}.")

    def schedule(count):
        c = jnp.minimum(_float(count), float(decay_steps))
        cosine = 0.5 * (1 + jnp.cos(jnp.pi * c / float(decay_steps)))
        return init_value * ((1 - alpha) * cosine**exponent + alpha)

    return schedule


def join_schedules(schedules: Sequence[Schedule], boundaries: Sequence[int]) -> Schedule:
    """Runs ``schedules[i]`` from ``boundaries[i-1]`` on, each seeing steps since its start."""
    if len(boundaries) != len(schedules) - 1:
        raise ValueError(
            f"join_schedules needs len(boundaries) == len(schedules) - 1, got "
            f"{len(boundaries)} boundaries for {len(schedules)} schedules."
        )

    def schedule(count):
        count = jnp.asarray(count)
        out = schedules[0](count)
        for boundary, fn in zip(boundaries, schedules[1:], strict=True):
            out = jnp.where(count < boundary, out, fn(count - boundary))
        return out

    return schedule


def warmup_cosine_decay_schedule(
    init_value, peak_value, warmup_steps: int, decay_steps: int, end_value=0.0, exponent=1.0
) -> Schedule:
    """Linear warm-up from ``init_value`` to ``peak_value`` over ``warmup_steps``, then cosine
    decay to ``end_value`` at step ``decay_steps`` (which counts the warm-up)."""
    alpha = 0.0 if peak_value == 0.0 else end_value / peak_value
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
    """
    if not timescale > 0:
        raise ValueError(f"inverse_sqrt_schedule needs timescale > 0, got {timescale}.")

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
    """
    if warmup_steps < 0:
        raise ValueError(f"warmup_schedule needs warmup_steps >= 0, got {warmup_steps}.")
    if not callable(schedule):
        schedule = constant_schedule(schedule)
    if warmup_steps == 0:
        return schedule
    peak = schedule(0) if peak_value is None else peak_value
    return join_schedules(
        [linear_schedule(init_value, peak, warmup_steps), schedule], [warmup_steps]
    )
