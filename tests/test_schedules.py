"""jnn.schedules against Optax's schedules (values at counts 0..1000) and closed forms.

Optax's schedules trip the suite's strict dtype promotion on traced int32 counts
(``jnp.minimum(int32, float)``), so the Optax reference calls run under
``jax.numpy_dtype_promotion("standard")``; jnn's run under strict promotion.
"""

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
            "non-negative",
        ),
    ],
)
def test_bad_arguments(fn, kwargs, match):
    with pytest.raises(ValueError, match=match):
        fn(**kwargs)


def test_join_schedules_length_mismatch():
    with pytest.raises(ValueError, match="len\\(boundaries\\)"):
        js.join_schedules([js.constant_schedule(1.0)], [10])
