"""jnn.schedules against Optax's schedules (values at counts 0..1000) and closed forms.

Optax's schedules trip the suite's strict dtype promotion on traced int32 counts
(``jnp.minimum(int32, float)``), so the Optax reference calls run under
``jax.numpy_dtype_promotion("standard")``; jnn's run under strict promotion.
"""

import logging
import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jnn.schedules as js

COUNTS = np.arange(1001, dtype=np.int32)

CASES = [
    ("constant_schedule", (0.3,), {}),
    ("linear_schedule", (0.1, 0.001, 300), {}),
    ("linear_schedule", (0.1, 0.001, 300), {"transition_begin": 50}),
    ("linear_schedule", (0.0, 1.0, 0), {}),
    ("polynomial_schedule", (1.0, 0.1, 2, 400), {"transition_begin": 10}),
    ("cosine_decay_schedule", (0.1, 700), {}),
    ("cosine_decay_schedule", (0.1, 700), {"alpha": 0.1, "exponent": 2.0}),
    ("cosine_decay_schedule", (1e-3, 1), {}),
    ("exponential_decay", (0.1, 100, 0.5), {}),
    ("exponential_decay", (0.1, 100, 0.5), {"staircase": True, "transition_begin": 20}),
    ("exponential_decay", (0.1, 100, 0.5), {"end_value": 0.01}),
    ("exponential_decay", (0.1, 50, 1.5), {"end_value": 1.0}),
    ("exponential_decay", (0.1, 0, 0.5), {}),
    ("piecewise_constant_schedule", (0.1, {100: 0.5, 300: 0.1, 200: 2.0}), {}),
    ("piecewise_constant_schedule", (0.1, None), {}),
    ("warmup_cosine_decay_schedule", (0.0, 0.1, 100, 900), {}),
    ("warmup_cosine_decay_schedule", (1e-4, 0.1, 10, 500), {"end_value": 1e-3, "exponent": 1.5}),
]


def _values(schedule, counts):
    out = jax.jit(jax.vmap(schedule))(jnp.asarray(counts))
    return np.broadcast_to(np.asarray(out), counts.shape)


@pytest.mark.parametrize(("name", "args", "kwargs"), CASES)
def test_matches_optax(name, args, kwargs):
    ours = _values(getattr(js, name)(*args, **kwargs), COUNTS)
    with jax.numpy_dtype_promotion("standard"):
        ref = _values(getattr(optax, name)(*args, **kwargs), COUNTS)
    chex.assert_trees_all_close(ours, ref, rtol=1e-6, atol=1e-9)


def test_join_schedules_matches_optax():
    parts = [
        js.constant_schedule(0.5),
        js.linear_schedule(0.5, 0.0, 100),
        js.constant_schedule(0.0),
    ]
    ours = _values(js.join_schedules(parts, [10, 110]), COUNTS)
    with jax.numpy_dtype_promotion("standard"):
        ref_parts = [
            optax.constant_schedule(0.5),
            optax.linear_schedule(0.5, 0.0, 100),
            optax.constant_schedule(0.0),
        ]
        ref = _values(optax.join_schedules(ref_parts, [10, 110]), COUNTS)
    chex.assert_trees_all_close(ours, ref, rtol=1e-6)


def test_python_int_count_matches_traced():
    sched = js.warmup_cosine_decay_schedule(0.0, 1.0, 10, 100, end_value=0.1)
    counts = np.array([0, 1, 5, 9, 10, 11, 50, 99, 100, 119], np.int32)
    traced = _values(sched, counts)
    eager = np.array([float(sched(int(c))) for c in counts])
    chex.assert_trees_all_close(eager, traced, rtol=1e-6)


def test_float64_under_x64():
    with jax.enable_x64(True):
        ours = _values(js.cosine_decay_schedule(0.1, 700, alpha=0.1), COUNTS)
        assert ours.dtype == np.float64
        ref = 0.1 * (0.9 * 0.5 * (1 + np.cos(np.pi * np.minimum(COUNTS, 700) / 700)) + 0.1)
        np.testing.assert_allclose(ours, ref, rtol=1e-14)


@pytest.mark.parametrize(("timescale", "begin"), [(1.0, 0), (100.0, 0), (50.0, 200)])
def test_inverse_sqrt_closed_form(timescale, begin):
    ours = _values(js.inverse_sqrt_schedule(0.2, timescale, begin), COUNTS)
    ref = 0.2 / np.sqrt(1.0 + np.maximum(COUNTS - begin, 0) / timescale)
    chex.assert_trees_all_close(ours, ref.astype(np.float32), rtol=1e-6)
    assert np.all(np.diff(ours) <= 0) and ours[-1] > 0


def test_warmup_schedule_closed_form():
    sched = js.warmup_schedule(js.exponential_decay(0.1, 100, 0.5), 50, init_value=0.01)
    ours = _values(sched, COUNTS)
    c = COUNTS.astype(np.float64)
    ref = np.where(c < 50, 0.01 + (0.1 - 0.01) * c / 50, 0.1 * 0.5 ** (np.maximum(c - 50, 0) / 100))
    chex.assert_trees_all_close(ours, ref.astype(np.float32), rtol=1e-6)


def test_warmup_schedule_of_cosine_equals_optax_warmup_cosine():
    warm, total = 100, 900
    sched = js.warmup_schedule(js.cosine_decay_schedule(0.1, total - warm, alpha=0.01), warm)
    with jax.numpy_dtype_promotion("standard"):
        ref = _values(optax.warmup_cosine_decay_schedule(0.0, 0.1, warm, total, 1e-3), COUNTS)
    chex.assert_trees_all_close(_values(sched, COUNTS), ref, rtol=1e-6, atol=1e-9)


def test_warmup_schedule_constant_and_zero_warmup():
    np.testing.assert_allclose(
        _values(js.warmup_schedule(0.5, 10), COUNTS[:12])[[0, 5, 10, 11]], [0.0, 0.25, 0.5, 0.5]
    )
    inner = js.linear_schedule(1.0, 0.0, 10)
    assert js.warmup_schedule(inner, 0) is inner


def test_grad_through_schedule_value():
    # d lr / d init_value at step t is the decay factor itself.
    g = jax.grad(lambda v: js.cosine_decay_schedule(v, 100)(jnp.int32(50)))(1.0)
    np.testing.assert_allclose(g, 0.5, rtol=1e-6)


@pytest.mark.parametrize(
    ("fn", "kwargs", "match"),
    [
        (js.cosine_decay_schedule, {"init_value": 0.1, "decay_steps": 0}, "decay_steps > 0"),
        (js.inverse_sqrt_schedule, {"init_value": 0.1, "timescale": 0.0}, "timescale > 0"),
        (js.warmup_schedule, {"schedule": 0.1, "warmup_steps": -1}, "warmup_steps >= 0"),
        (
            js.piecewise_constant_schedule,
            {"init_value": 0.1, "boundaries_and_scales": {5: -1.0}},
            r"boundaries_and_scales\[5\] >= 0",
        ),
    ],
)
def test_bad_arguments(fn, kwargs, match):
    with pytest.raises(ValueError, match=match):
        fn(**kwargs)


# ------------------------------------------------------------------- argument checks

# (schedule, the arguments it is built from); each test below swaps one argument.
GOOD = {
    "constant_schedule": {"value": 0.3},
    "polynomial_schedule": {
        "init_value": 1.0,
        "end_value": 0.1,
        "power": 2,
        "transition_steps": 100,
        "transition_begin": 0,
    },
    "linear_schedule": {"init_value": 1.0, "end_value": 0.1, "transition_steps": 100},
    "piecewise_constant_schedule": {"init_value": 0.1, "boundaries_and_scales": {10: 0.5}},
    "exponential_decay": {
        "init_value": 0.1,
        "transition_steps": 100,
        "decay_rate": 0.5,
        "transition_begin": 0,
        "end_value": 0.01,
    },
    "cosine_decay_schedule": {"init_value": 0.1, "decay_steps": 100, "alpha": 0.0, "exponent": 1.0},
    "warmup_cosine_decay_schedule": {
        "init_value": 0.0,
        "peak_value": 0.1,
        "warmup_steps": 10,
        "decay_steps": 100,
        "end_value": 0.0,
        "exponent": 1.0,
    },
    "inverse_sqrt_schedule": {"init_value": 0.1, "timescale": 10.0, "transition_begin": 0},
    "warmup_schedule": {"schedule": 0.1, "warmup_steps": 10, "init_value": 0.0},
}
STEP_ARGS = {"transition_steps", "transition_begin", "decay_steps", "warmup_steps"}
NUMBER_ARGS = [(f, a) for f, args in GOOD.items() for a in args if a not in STEP_ARGS]
NUMBER_ARGS.remove(("piecewise_constant_schedule", "boundaries_and_scales"))
STEP_CASES = [(f, a) for f, args in GOOD.items() for a in args if a in STEP_ARGS]
NOT_A_NUMBER = [("0.1", TypeError), (True, TypeError), ([0.1], TypeError), (None, TypeError)]
NOT_FINITE = [float("nan"), float("inf"), -float("inf"), np.array([0.1, np.nan])]


def _build(fn, **changes):
    return getattr(js, fn)(**{**GOOD[fn], **changes})


@pytest.mark.parametrize(("fn", "arg"), NUMBER_ARGS)
def test_numeric_arguments_are_checked_at_construction(fn, arg):
    optional = (fn, arg) in {("exponential_decay", "end_value")}
    for value, error in NOT_A_NUMBER + [(v, ValueError) for v in NOT_FINITE]:
        if value is None and optional:
            _build(fn, **{arg: None})
            continue
        with pytest.raises(error, match=rf"^{fn} needs .*{arg}.*got {re.escape(repr(value))}"):
            _build(fn, **{arg: value})
    # Just inside: a huge finite float, NumPy scalars and arrays, JAX arrays.
    for value in (1e300, np.float32(0.5), np.array([0.5, 1.0]), jnp.ones(2)):
        _build(fn, **{arg: value})


@pytest.mark.parametrize(("fn", "arg"), STEP_CASES)
def test_step_counts_must_be_whole_numbers(fn, arg):
    for value, error in [("10", TypeError), (None, TypeError), (True, TypeError)]:
        with pytest.raises(error, match=rf"^{fn} needs {arg} to be a whole number"):
            _build(fn, **{arg: value})
    with pytest.raises(ValueError, match=rf"{arg} to be a whole number.*got 10.5"):
        _build(fn, **{arg: 10.5})
    _build(fn, **{arg: np.int64(GOOD[fn][arg])})
    _build(fn, **{arg: float(GOOD[fn][arg])})  # an integral float is a whole number


def test_exponential_decay_refuses_negative_decay_rate():
    # decay_rate = -1 gave NaN learning rates (Optax too); 0 is Optax's constant schedule.
    for bad in (-1.0, -1e-30, np.array([0.5, -0.1])):
        with pytest.raises(ValueError, match=r"exponential_decay needs decay_rate >= 0, got"):
            js.exponential_decay(0.1, 10, bad)
    sched = js.exponential_decay(0.1, 10, 1e-30)  # just inside
    np.testing.assert_allclose(sched(5), 0.1 * 1e-15, rtol=1e-5)


@pytest.mark.parametrize("kwargs", [{}, {"staircase": True, "end_value": 0.05}])
def test_exponential_decay_zero_rate_is_optax_constant(kwargs, caplog):
    # Optax 0.2.8: decay_rate == 0 returns `lambda count: init_value` and logs at INFO.
    ours = js.exponential_decay(0.1, 10, 0, **kwargs)
    theirs = optax.exponential_decay(0.1, 10, 0.0, **kwargs)
    for t in (0, 1, 5, 10, 1000):
        np.testing.assert_allclose(ours(t), theirs(t))
        np.testing.assert_allclose(ours(t), 0.1)
    with caplog.at_level(logging.INFO, logger="jnn"):
        js.exponential_decay(0.1, 10, 0.0)
    assert "decay_rate=0 gives a constant schedule" in caplog.text


@pytest.mark.parametrize(
    ("fn", "good", "bad", "match"),
    [
        ("cosine_decay_schedule", {"decay_steps": 1}, {"decay_steps": 0}, "decay_steps > 0"),
        ("cosine_decay_schedule", {"decay_steps": 1}, {"decay_steps": -3}, "decay_steps > 0"),
        ("warmup_schedule", {"warmup_steps": 0}, {"warmup_steps": -1}, "warmup_steps >= 0"),
        (
            "warmup_cosine_decay_schedule",
            {"warmup_steps": 0},
            {"warmup_steps": -1},
            "warmup_steps >= 0",
        ),
        (
            "warmup_cosine_decay_schedule",
            {"warmup_steps": 10, "decay_steps": 11},
            {"warmup_steps": 10, "decay_steps": 10},
            "decay_steps > warmup_steps",
        ),
        ("inverse_sqrt_schedule", {"timescale": 1e-300}, {"timescale": 0.0}, "timescale > 0"),
        ("inverse_sqrt_schedule", {"timescale": 1e-300}, {"timescale": -1.0}, "timescale > 0"),
        (
            "piecewise_constant_schedule",
            {"boundaries_and_scales": {5: 0.0}},
            {"boundaries_and_scales": {5: -1e-300}},
            "non-negative|>= 0",
        ),
        (
            "piecewise_constant_schedule",
            {"boundaries_and_scales": None},
            {"boundaries_and_scales": [(5, 0.5)]},
            "dict",
        ),
        (
            "piecewise_constant_schedule",
            {"boundaries_and_scales": {5: 0.5}},
            {"boundaries_and_scales": {"5": 0.5}},
            "whole number",
        ),
    ],
)
def test_thresholds_just_inside_and_outside(fn, good, bad, match):
    _build(fn, **good)
    with pytest.raises((ValueError, TypeError), match=match):
        _build(fn, **bad)


def test_join_schedules_checks_schedules_and_boundaries():
    c = js.constant_schedule(1.0)
    js.join_schedules([c, c, c], [10, 10])  # equal boundaries: a zero-length piece, allowed
    match = r"non-decreasing.*boundaries\[0\] = 10 > boundaries\[1\] = 9"
    with pytest.raises(ValueError, match=match):
        js.join_schedules([c, c, c], [10, 9])
    with pytest.raises(TypeError, match=r"schedules\[1\] to be a schedule.*got 0.5"):
        js.join_schedules([c, 0.5], [10])
    with pytest.raises(TypeError, match=r"boundaries\[0\] to be a whole number"):
        js.join_schedules([c, c], ["10"])


def test_staircase_is_a_flag():
    js.exponential_decay(0.1, 10, 0.5, staircase=np.bool_(True))
    with pytest.raises(TypeError, match="staircase to be True or False, got 'yes'"):
        js.exponential_decay(0.1, 10, 0.5, staircase="yes")


# ------------------------------------------------------- per-member (traced) values

PEAKS = np.array([0.01, 0.1, 1.0])


def _per_member(build, values, dtype):
    """``build(v)(count)`` for each member's traced ``v`` (vmapped) at counts 0..60."""
    counts = jnp.arange(61)
    run = jax.jit(jax.vmap(lambda v: jax.vmap(build(v))(counts)))
    return np.asarray(run(jnp.asarray(values, dtype)))


def _optax_per_member(build, values):
    counts = jnp.arange(61)
    with jax.numpy_dtype_promotion("standard"):
        return np.stack([np.asarray(jax.vmap(build(float(v)))(counts)) for v in values])


WARMUP_CASES = {
    "warmup_cosine_decay": (
        lambda lib, peak: lib.warmup_cosine_decay_schedule(0.0, peak, 5, 50, end_value=1e-3),
        lambda peak: optax.warmup_cosine_decay_schedule(0.0, peak, 5, 50, end_value=1e-3),
    ),
    "warmup_of_cosine": (
        lambda lib, peak: js.warmup_schedule(js.cosine_decay_schedule(peak, 40), 5),
        lambda peak: optax.join_schedules(
            [optax.linear_schedule(0.0, peak, 5), optax.cosine_decay_schedule(peak, 40)], [5]
        ),
    ),
}


@pytest.mark.parametrize("case", list(WARMUP_CASES))
@pytest.mark.parametrize("x64", [False, True], ids=["float32", "float64"])
def test_traced_peak_per_member_equals_optax_per_value(case, x64):
    ours_fn, ref_fn = WARMUP_CASES[case]
    with jax.enable_x64(x64):
        dtype = jnp.float64 if x64 else jnp.float32
        ours = _per_member(lambda peak: ours_fn(js, peak), PEAKS, dtype)
        ref = _optax_per_member(ref_fn, PEAKS)
    assert ours.dtype == dtype
    # float32: the traced end / peak ratio is rounded to float32 (Optax's stays a Python
    # float), so values near the end of the decay differ by an ulp of the peak.
    tol = {"rtol": 1e-12, "atol": 1e-15} if x64 else {"rtol": 1e-6, "atol": 1e-7 * PEAKS.max()}
    np.testing.assert_allclose(ours, ref, **tol)


def test_traced_zero_peak_gives_zero_not_nan():
    # end_value / peak_value at a zero peak: Optax's Python branch, elementwise.
    ours = _per_member(
        lambda peak: js.warmup_cosine_decay_schedule(0.0, peak, 5, 50, end_value=1e-3),
        np.array([0.0, 0.1]),
        jnp.float32,
    )
    np.testing.assert_array_equal(ours[0], 0.0)
    grad = jax.grad(lambda p: js.warmup_cosine_decay_schedule(0.0, p, 5, 50, 1e-3)(20))
    assert np.isfinite(grad(jnp.float32(0.0)))


def test_traced_decay_rate_per_member_equals_optax_per_value():
    # Both end_value bounds: a floor for decay_rate < 1, a ceiling for decay_rate > 1.
    rates = np.array([0.5, 0.9, 1.5])
    build = lambda lib: lambda r: lib.exponential_decay(0.1, 10, r, end_value=0.05)
    ours = _per_member(build(js), rates, jnp.float32)
    ref = _optax_per_member(build(optax), rates)
    np.testing.assert_allclose(ours, ref, rtol=1e-6)
    assert ours[0].min() == pytest.approx(0.05) and ours[2].max() == pytest.approx(0.05)


def test_join_schedules_length_mismatch():
    with pytest.raises(ValueError, match="len\\(boundaries\\)"):
        js.join_schedules([js.constant_schedule(1.0)], [10])
