"""Gradient checks: compare ``jax.grad`` with centred finite differences, leaf by leaf.

Every parameter leaf is probed on its own, along a few random unit directions ``d`` within the
leaf and a few single coordinates (one of them the entry with the largest ``|gradient|``)::

    analytic  a = <grad f(x), d>
    numerical n = (f(x + h d) - f(x - h d)) / 2h
    relative error = |a - n| / max(|a|, |n|, floor)

so a small bias cannot hide behind a large weight matrix, and one wrong element of a weight
gradient still moves every random directional derivative. Everything runs in float64 (inside
``jax.enable_x64(True)``, whatever the caller's setting and the model's dtype). The shifted
evaluations of ``f`` run vmapped in fixed-size batches through one compiled function (compiled
once per function and shapes; a second check of the same ``f`` reuses it).

**Kinks** (ReLU, max, hinge): where the analytic value disagrees with the centred difference
but lies between the one-sided differences ``(f(x+h)-f(x))/h`` and ``(f(x)-f(x-h))/h``, and
those disagree by at least the error, the step crossed a non-differentiable point; the entry
is reported as a kink, not as a failure.

Thresholds (the notes): relative error ``< 1e-7`` good, ``< 1e-4`` acceptable, ``> 1e-2``
wrong. In float64 a correct smooth model lands far below ``1e-4``, so anything above
``acceptable`` that no kink explains fails the check.
"""

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jnn._tree import named_leaves

__all__ = ["GradCheckReport", "LeafCheck", "check_grads", "numerical_grad", "rel_error"]

_EPS64 = float(np.finfo(np.float64).eps)
_ORDER = ("good", "acceptable", "kink", "suspect", "wrong")
_PASSING = ("good", "acceptable", "kink", "skipped")


# ----------------------------------------------------------------------------- public helpers


def rel_error(a, b, floor=0.0):
    """Elementwise relative error ``|a - b| / max(|a|, |b|, floor)`` (``0`` where both are 0).

    Args:
      a, b: arrays or pytrees of arrays with the same structure, shapes and dtypes.
      floor: absolute floor of the denominator, so two near-zero values compare as close.

    Returns:
      A pytree like ``a`` of relative errors.
    """

    def one(x, y):
        x, y = jnp.asarray(x), jnp.asarray(y)
        denom = jnp.maximum(jnp.maximum(jnp.abs(x), jnp.abs(y)), floor)
        safe = jnp.where(denom > 0, denom, jnp.ones_like(denom))
        return jnp.where(denom > 0, jnp.abs(x - y) / safe, jnp.zeros_like(denom))

    return jax.tree.map(one, a, b)


class LeafCheck(NamedTuple):
    """One row of a :class:`GradCheckReport`: the checks made on one parameter leaf."""

    name: str  # tree path, e.g. "dense_0/w"
    size: int  # entries in the leaf
    checked: int  # directional derivatives compared (random directions + coordinates)
    max_rel_error: float
    max_abs_error: float
    kink: bool  # some error above `acceptable` is explained by a kink
    kinks: int  # how many of the `checked` entries crossed a kink
    verdict: str  # good / acceptable / kink / suspect / wrong / skipped
    h: float  # the step of the worst entry

    @property
    def ok(self) -> bool:
        return self.verdict in _PASSING


class GradCheckReport(NamedTuple):
    """Result of :func:`check_grads`: ``ok``, a :class:`LeafCheck` per leaf, and notes."""

    ok: bool
    rows: tuple[LeafCheck, ...]
    h: tuple[float, ...]
    thresholds: tuple[float, float, float]  # good, acceptable, wrong
    notes: tuple[str, ...] = ()

    @property
    def failed(self) -> tuple[str, ...]:
        """Names of the leaves whose check failed."""
        return tuple(row.name for row in self.rows if not row.ok)

    def leaf(self, name: str) -> LeafCheck:
        """The row for the leaf ``name`` (e.g. ``"dense_0/w"``)."""
        for row in self.rows:
            if row.name == name:
                return row
        raise KeyError(f"no leaf named {name!r}; leaves: {[row.name for row in self.rows]}")

    def __str__(self) -> str:
        good, acceptable, wrong = self.thresholds
        status = "passed" if self.ok else f"FAILED ({', '.join(self.failed)})"
        steps = ", ".join(f"{h:g}" for h in self.h)
        width = max([len("leaf")] + [len(row.name) for row in self.rows])
        lines = [
            f"gradient check {status}: float64, h = {steps}",
            f"{'leaf':<{width}}  {'size':>8}  {'checked':>7}  {'max rel err':>11}  "
            f"{'max abs err':>11}  {'kink':>4}  verdict",
        ]
        for r in self.rows:
            lines.append(
                f"{r.name:<{width}}  {r.size:>8}  {r.checked:>7}  {r.max_rel_error:>11.2e}  "
                f"{r.max_abs_error:>11.2e}  {'yes' if r.kink else '-':>4}  {r.verdict}"
            )
        for r in self.rows:
            if r.kink:
                lines.append(
                    f"{r.name}: {r.kinks} of {r.checked} checks crossed a kink (the one-sided "
                    "differences disagree and the analytic value lies between them); not "
                    "counted as a failure."
                )
        lines.extend(self.notes)
        lines.append(
            f"relative error < {good:g} good, < {acceptable:g} acceptable, > {wrong:g} wrong; "
            f"above {acceptable:g} fails unless a kink explains it."
        )
        return "\n".join(lines)


# ----------------------------------------------------------------------------- machinery


class _Layout(NamedTuple):
    """Static description of the params: which leaves are probed and where they sit."""

    treedef: Any
    shapes: tuple[tuple[int, ...], ...]
    floating: tuple[bool, ...]
    longest: int  # size of the largest floating leaf (the width of a direction)


class _StaticArgs(NamedTuple):
    treedef: Any
    static: tuple  # (position, value) of the non-array leaves of `args`


class _Problem(NamedTuple):
    """``f`` at the checked point: the static parts (``f``, layouts) and the arrays."""

    f: Any
    layout: _Layout
    static_args: _StaticArgs
    flat: Any  # float64 vector of every floating param entry, leaf after leaf
    fixed_leaves: tuple  # the non-floating param leaves (never shifted)
    dynamic_args: tuple  # the array leaves of `args` (floating ones in float64)

    @property
    def size(self) -> int:
        return int(self.flat.shape[0])


def _is_floating(x) -> bool:
    return hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.floating)


def _is_array(x) -> bool:
    return isinstance(x, jax.Array | np.ndarray | np.generic | bool | int | float | complex)


def _as_float64(x):
    """Floating arrays and Python floats to float64 arrays; everything else unchanged."""
    if isinstance(x, float):
        return jnp.asarray(x, jnp.float64)
    if _is_floating(x):
        return jnp.asarray(x, jnp.float64)
    return x


def _split_params(params):
    """The params' layout, their floating entries as one float64 vector, the other leaves."""
    leaves, treedef = jax.tree.flatten(params)
    leaves = [_as_float64(leaf) for leaf in leaves]
    floating = tuple(_is_floating(leaf) for leaf in leaves)
    shapes = tuple(tuple(np.shape(leaf)) for leaf in leaves)
    sizes = [math.prod(s) for s, fl in zip(shapes, floating, strict=True) if fl]
    layout = _Layout(treedef, shapes, floating, max(sizes, default=0))
    flat = jnp.concatenate(
        [jnp.ravel(x) for x, fl in zip(leaves, floating, strict=True) if fl]
        or [jnp.zeros((0,), jnp.float64)]
    )
    fixed_leaves = tuple(x for x, fl in zip(leaves, floating, strict=True) if not fl)
    return layout, flat, fixed_leaves


def _split_args(args):
    """The array leaves of ``args`` (traced) and the others (static, so hashable)."""
    arg_leaves, arg_def = jax.tree.flatten(args)
    dynamic, static = [], []
    for i, leaf in enumerate(arg_leaves):
        if _is_array(leaf):
            dynamic.append(_as_float64(leaf))
        else:
            static.append((i, leaf))
    static_args = _StaticArgs(arg_def, tuple(static))
    try:
        hash(static_args)
    except TypeError as err:
        raise TypeError(
            "check_grads: every non-array argument of f must be hashable (it is treated as "
            f"static); got {[type(v).__name__ for _, v in static]}. Close over it in f instead."
        ) from err
    return static_args, tuple(dynamic)


def _prepare(f, params, args) -> _Problem:
    layout, flat, fixed_leaves = _split_params(params)
    static_args, dynamic_args = _split_args(args)
    return _Problem(f, layout, static_args, flat, fixed_leaves, dynamic_args)


def _rebuild(layout: _Layout, flat, fixed_leaves):
    leaves, offset, j = [], 0, 0
    for shape, fl in zip(layout.shapes, layout.floating, strict=True):
        if fl:
            size = math.prod(shape)
            leaves.append(flat[offset : offset + size].reshape(shape))
            offset += size
        else:
            leaves.append(fixed_leaves[j])
            j += 1
    return jax.tree.unflatten(layout.treedef, leaves)


def _call(f, layout, static_args, flat, fixed_leaves, dynamic_args):
    leaves = list(dynamic_args)
    for i, value in static_args.static:
        leaves.insert(i, value)
    args = jax.tree.unflatten(static_args.treedef, leaves)
    return f(_rebuild(layout, flat, fixed_leaves), *args)


def _value_and_grad(f, layout, static_args, flat, fixed_leaves, dynamic_args):
    value = lambda p: _call(f, layout, static_args, p, fixed_leaves, dynamic_args)
    return jax.value_and_grad(value)(flat)


def _shifted_values(f, layout, static_args, flat, fixed_leaves, dynamic_args, shifts):
    """``f(x + shift)`` for every row of ``shifts`` (one vmapped batch)."""
    value = lambda shift: _call(f, layout, static_args, flat + shift, fixed_leaves, dynamic_args)
    return jax.vmap(value)(shifts)


def _coordinate_values(f, layout, static_args, flat, fixed_leaves, dynamic_args, index, steps):
    """``f(x + steps[k] e_{index[k]})`` for every ``k`` (one vmapped batch)."""

    def value(i, step):
        return _call(f, layout, static_args, flat.at[i].add(step), fixed_leaves, dynamic_args)

    return jax.vmap(value)(index, steps)


# f, the layout and the static arguments are static: a second check of the same function on
# arrays of the same shapes reuses the compiled code.
_value_and_grad_jit = jax.jit(_value_and_grad, static_argnums=(0, 1, 2))
_shifted_values_jit = jax.jit(_shifted_values, static_argnums=(0, 1, 2))
_coordinate_values_jit = jax.jit(_coordinate_values, static_argnums=(0, 1, 2))


def _batch_size(n_params: int, chunk_size, most: int) -> int:
    """Evaluations per vmapped call: ``chunk_size``, or at most ~4M float64 of shifted copies."""
    if chunk_size is not None:
        if int(chunk_size) < 1:
            raise ValueError(f"chunk_size must be a positive integer, got {chunk_size}.")
        return int(chunk_size)
    return int(max(1, min(most, 4_000_000 // max(1, n_params))))


def _check_output(fn: str, problem: _Problem):
    """The dtype of ``f``'s output; raises unless it is one floating scalar."""
    out = jax.eval_shape(
        lambda flat, fixed, dynamic: _call(
            problem.f, problem.layout, problem.static_args, flat, fixed, dynamic
        ),
        problem.flat,
        problem.fixed_leaves,
        problem.dynamic_args,
    )
    if not isinstance(out, jax.ShapeDtypeStruct):
        raise TypeError(
            f"{fn}: f must return a scalar (e.g. the mean loss), got a "
            f"{type(out).__name__} of {len(jax.tree.leaves(out))} arrays. If f returns "
            "(loss, aux) as for jax.grad(..., has_aux=True), check a function that returns only "
            "the loss: lambda *a: f(*a)[0]."
        )
    if out.shape != () or not jnp.issubdtype(out.dtype, jnp.floating):
        raise ValueError(
            f"{fn}: f must return a floating scalar (e.g. the mean loss); got shape "
            f"{out.shape} and dtype {out.dtype}."
        )
    return out.dtype


def _leaf_ranges(layout):
    """``(index, offset, size)`` of each floating leaf in the flat vector."""
    out, offset = [], 0
    for i, (shape, fl) in enumerate(zip(layout.shapes, layout.floating, strict=True)):
        if fl:
            size = math.prod(shape)
            out.append((i, offset, size))
            offset += size
    return out


# ----------------------------------------------------------------------------- numerical_grad


def _coordinate_evaluations(problem: _Problem, h: float, chunk_size):
    """``f(x + h e_i)`` and ``f(x - h e_i)`` for every coordinate ``i``: ``(2n,)`` interleaved."""
    n = problem.size
    batch = 2 * (_batch_size(n, chunk_size, 256) // 2 or 1)
    index = np.repeat(np.arange(n), 2)
    steps = np.tile([h, -h], n)
    pad = -len(index) % batch  # whole batches: one compiled shape
    index, steps = np.pad(index, (0, pad)), np.pad(steps, (0, pad))
    chunks = [
        _coordinate_values_jit(
            *problem,
            jnp.asarray(index[k : k + batch]),
            jnp.asarray(steps[k : k + batch]),
        )
        for k in range(0, len(index), batch)
    ]
    return np.concatenate([np.asarray(chunk) for chunk in chunks])[: 2 * n]


def numerical_grad(f, params, h=1e-5, *, args=(), chunk_size=None):
    """Full centred-difference gradient, one coordinate at a time (for small problems).

    ``g_i = (f(x + h e_i) - f(x - h e_i)) / 2h`` for every entry of every floating leaf,
    computed in float64 (``2 * size`` evaluations of ``f``, vmapped in chunks).

    Args:
      f: scalar function ``f(params, *args)``.
      params: pytree of arrays.
      h: step.
      args: extra positional arguments of ``f`` (data, model state, a fixed key).
      chunk_size: evaluations per vmapped chunk (default: from the parameter count).

    Returns:
      A pytree like ``params`` of float64 NumPy arrays (non-floating leaves unchanged).
    """
    if not h > 0:
        raise ValueError(f"numerical_grad: h must be positive, got {h}.")
    with jax.enable_x64(True):
        problem = _prepare(f, params, tuple(args))
        _check_output("numerical_grad", problem)
        values = _coordinate_evaluations(problem, h, chunk_size)
        centred = (values[0::2] - values[1::2]) / (2 * h)
    leaves = list(jax.tree.leaves(params))
    for i, offset, size in _leaf_ranges(problem.layout):
        leaves[i] = centred[offset : offset + size].reshape(problem.layout.shapes[i])
    return jax.tree.unflatten(problem.layout.treedef, leaves)


# ----------------------------------------------------------------------------- check_grads


class _Probe(NamedTuple):
    """One directional derivative to compare: a unit ``direction`` within one leaf."""

    offset: int  # where the leaf starts in the flat vector
    size: int  # entries in the leaf
    direction: np.ndarray  # (size,) unit vector


class _Errors(NamedTuple):
    """Per probe, at the step that gave it the smallest relative error."""

    relative: np.ndarray
    absolute: np.ndarray
    kink: np.ndarray  # bool: the error is explained by a kink
    step: np.ndarray  # the step h used


def _check_options(h, h_sweep, directions, coordinates, good, acceptable, wrong):
    """The steps to try, after checking every option."""
    steps = tuple(float(x) for x in (h_sweep if h_sweep is not None else (h,)))
    if not steps or any(not x > 0 for x in steps):
        raise ValueError(f"check_grads: steps must be positive, got {steps}.")
    if directions < 0 or coordinates < 0 or directions + coordinates < 1:
        raise ValueError(
            "check_grads: need directions >= 0, coordinates >= 0 and at least one check per "
            f"leaf; got directions={directions}, coordinates={coordinates}."
        )
    if not 0 < good <= acceptable <= wrong:
        raise ValueError(
            f"check_grads: need 0 < good <= acceptable <= wrong, got {good}, {acceptable}, {wrong}."
        )
    return steps


def _probed_coordinates(leaf_grad, coordinates, rng) -> list[int]:
    """The entries probed on their own: every entry of a small leaf, else the largest
    ``|gradient|`` entry and ``coordinates - 1`` random others."""
    size = len(leaf_grad)
    if size <= coordinates:
        return list(range(size))
    if coordinates == 0:
        return []
    largest = int(np.argmax(np.abs(leaf_grad)))
    rest = np.delete(np.arange(size), largest)
    return [largest, *(int(c) for c in rng.choice(rest, size=coordinates - 1, replace=False))]


def _probe_rows(layout, grad, directions, coordinates, rng):
    """Probe rows (random unit directions, then single coordinates) of every floating leaf,
    built on the host, and ``{leaf index: (first row, end row)}``."""
    probes, spans = [], {}
    for i, offset, size in _leaf_ranges(layout):
        start = len(probes)
        if size > 1:
            for _ in range(directions):
                d = rng.standard_normal(size)
                probes.append(_Probe(offset, size, d / np.linalg.norm(d)))
        leaf_grad = grad[offset : offset + size]
        for c in _probed_coordinates(leaf_grad, coordinates, rng):
            probes.append(_Probe(offset, size, np.eye(1, size, c)[0]))
        spans[i] = (start, len(probes))
    return probes, spans


def _analytic(probes, grad) -> np.ndarray:
    """``<grad f(x), d>`` for every probe."""
    return np.array([p.direction @ grad[p.offset : p.offset + p.size] for p in probes])


def _shifted_evaluations(problem: _Problem, probes, steps, chunk_size) -> np.ndarray:
    """``f(x + h d)``, ``f(x - h d)`` for every probe and step, vmapped in fixed-size batches:
    ``(probes, 2 * len(steps))``, columns ``+h0, -h0, +h1, -h1, ...``."""
    signed = np.array([s for h in steps for s in (h, -h)])
    per_probe = len(signed)
    batch_probes = max(1, _batch_size(problem.size, chunk_size, 32) // per_probe)
    values = []
    for k in range(0, len(probes), batch_probes):
        shifts = np.zeros((batch_probes * per_probe, problem.size))
        for r, p in enumerate(probes[k : k + batch_probes]):
            rows = slice(r * per_probe, (r + 1) * per_probe)
            shifts[rows, p.offset : p.offset + p.size] = signed[:, None] * p.direction
        out = _shifted_values_jit(*problem, jnp.asarray(shifts))
        values.append(np.asarray(out).reshape(batch_probes, per_probe))
    return np.concatenate(values)[: len(probes)] if probes else np.zeros((0, per_probe))


def _errors_and_kinks(values, analytic, f_at_x, steps, atol, acceptable) -> _Errors:
    """Relative and absolute errors of the centred differences, kinks, and the best step."""
    h = np.asarray(steps)
    f_plus, f_minus = values[:, 0::2], values[:, 1::2]  # (probes, steps)
    a = analytic[:, None]
    centred = (f_plus - f_minus) / (2 * h)
    forward, backward = (f_plus - f_at_x) / h, (f_at_x - f_minus) / h
    floor = atol if atol is not None else 1e5 * _EPS64 * max(abs(f_at_x), 1.0) / h
    absolute = np.abs(a - centred)
    scale = np.maximum(np.maximum(np.abs(a), np.abs(centred)), floor)
    relative = absolute / scale
    # a kink: the analytic value lies between the one-sided differences, which disagree by at
    # least the error
    lo, hi = np.minimum(forward, backward), np.maximum(forward, backward)
    slack = acceptable * scale
    kink = (relative > acceptable) & (a >= lo - slack) & (a <= hi + slack) & (hi - lo >= absolute)
    best = np.argmin(relative, axis=1) if len(relative) else np.zeros((0,), int)
    pick = lambda m: np.take_along_axis(m, best[:, None], axis=1)[:, 0]
    return _Errors(pick(relative), pick(absolute), pick(kink), h[best])


def _verdict(err, kink, good, acceptable, wrong):
    if err < good:
        return "good"
    if err <= acceptable:
        return "acceptable"
    if kink:
        return "kink"
    return "suspect" if err <= wrong else "wrong"


def _leaf_row(name, size, span, errors: _Errors, thresholds) -> LeafCheck:
    """The :class:`LeafCheck` of one probed leaf from its probes' errors."""
    start, stop = span
    relative = errors.relative[start:stop]
    kink = errors.kink[start:stop]
    verdicts = [_verdict(r, k, *thresholds) for r, k in zip(relative, kink, strict=True)]
    return LeafCheck(
        name=name,
        size=size,
        checked=stop - start,
        max_rel_error=float(relative.max()),
        max_abs_error=float(errors.absolute[start:stop].max()),
        kink=bool(kink.any()),
        kinks=int(kink.sum()),
        verdict=max(verdicts, key=_ORDER.index),
        h=float(errors.step[start + int(np.argmax(relative))]),
    )


def _leaf_rows(params, layout, spans, errors: _Errors, steps, thresholds):
    """A :class:`LeafCheck` per leaf of ``params`` (``skipped``: not floating, or empty)."""
    rows = []
    names = list(named_leaves(params).keys())
    for i, (name, shape) in enumerate(zip(names, layout.shapes, strict=True)):
        size = math.prod(shape)
        if i not in spans or size == 0:
            rows.append(LeafCheck(name, size, 0, 0.0, 0.0, False, 0, "skipped", steps[0]))
        else:
            rows.append(_leaf_row(name, size, spans[i], errors, thresholds))
    return tuple(rows)


def _notes(out_dtype, values) -> tuple[str, ...]:
    notes = []
    if out_dtype != jnp.float64:
        notes.append(
            f"note: f returned {out_dtype} for float64 inputs (it casts internally), so the "
            "differences carry that precision's rounding error."
        )
    if not np.all(np.isfinite(values)):
        notes.append("note: f returned NaN or inf at some shifted points.")
    return tuple(notes)


def _nothing_to_check(params) -> ValueError:
    dtypes = {
        name: str(getattr(leaf, "dtype", type(leaf).__name__))
        for name, leaf in named_leaves(params).items()
    }
    return ValueError(
        "check_grads: nothing to check: params have no floating-point entries (leaves: "
        f"{dtypes or 'none'}). Pass the parameters to differentiate as floating arrays."
    )


def check_grads(
    f,
    params,
    *args,
    h: float = 1e-5,
    h_sweep: Sequence[float] | None = None,
    directions: int = 4,
    coordinates: int = 4,
    good: float = 1e-7,
    acceptable: float = 1e-4,
    wrong: float = 1e-2,
    atol: float | None = None,
    seed: int = 0,
    chunk_size: int | None = None,
) -> GradCheckReport:
    """Checks ``jax.grad(f)`` against centred differences, every parameter leaf on its own.

    For each floating leaf: ``directions`` random unit directions within the leaf plus
    ``coordinates`` single entries (the largest ``|gradient|`` and random others; all entries
    of a smaller leaf). Each gives ``a = <grad, d>`` and ``n = (f(x+hd) - f(x-hd)) / 2h``, and
    the relative error ``|a - n| / max(|a|, |n|, floor)``. Computed in float64 whatever the
    dtypes of ``params`` and ``args`` (floating leaves are cast); the caller's x64 setting is
    restored afterwards.

    Args:
      f: scalar function ``f(params, *args)``, e.g. the mean loss. Turn randomness off or pass
        a fixed key in ``args`` (dropout), so every evaluation sees the same function.
      params: pytree of arrays (``{"dense_0": {"w": ..., "b": ...}, ...}``).
      *args: data, model state, a fixed PRNG key... (floating arrays cast to float64;
        non-array arguments must be hashable).
      h: finite-difference step along a unit direction.
      h_sweep: several steps to try (overrides ``h``); each entry keeps the step with the
        smallest error, which guards against a step too large (curvature) or too small
        (rounding).
      directions: random directions per leaf.
      coordinates: sampled single coordinates per leaf.
      good, acceptable, wrong: relative-error thresholds (the notes: 1e-7, 1e-4, 1e-2). An
        error above ``acceptable`` fails unless a kink explains it; ``wrong`` only names it.
      atol: absolute floor of the relative error's denominator; default
        ``1e5 * eps64 * max(|f(x)|, 1) / h``, about the rounding noise of the difference
        quotient divided by ``acceptable``, so two near-zero gradients (a bias feeding a
        BatchNorm) compare as equal.
      seed: seed of the random directions and sampled coordinates.
      chunk_size: shifted evaluations per vmapped chunk (default: from the parameter count).

    Returns:
      A :class:`GradCheckReport`: ``ok``, ``rows`` (one :class:`LeafCheck` per leaf),
      ``failed`` and a readable ``str(report)``.
    """
    steps = _check_options(h, h_sweep, directions, coordinates, good, acceptable, wrong)
    thresholds = (good, acceptable, wrong)
    rng = np.random.default_rng(seed)
    with jax.enable_x64(True):
        problem = _prepare(f, params, args)
        if problem.size == 0:
            raise _nothing_to_check(params)
        out_dtype = _check_output("check_grads", problem)
        f_at_x, grad = _value_and_grad_jit(*problem)
        f_at_x, grad = float(f_at_x), np.asarray(grad)
        probes, spans = _probe_rows(problem.layout, grad, directions, coordinates, rng)
        analytic = _analytic(probes, grad)
        values = _shifted_evaluations(problem, probes, steps, chunk_size)
    errors = _errors_and_kinks(values, analytic, f_at_x, steps, atol, acceptable)
    rows = _leaf_rows(params, problem.layout, spans, errors, steps, thresholds)
    ok = all(row.ok for row in rows) and bool(np.all(np.isfinite(errors.relative)))
    return GradCheckReport(
        ok=ok, rows=rows, h=steps, thresholds=thresholds, notes=_notes(out_dtype, values)
    )
