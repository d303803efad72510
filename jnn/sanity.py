"""Sanity checks before a long training run (the notes' "Sanity Checks" and "Gradient Checks").

- :func:`check_initial_loss`: with random weights the loss should sit at chance level, the
  loss at zero outputs: ``log C`` for softmax cross-entropy, ``(C - 1) * margin`` for the
  Weston-Watkins hinge, ``log 2`` per attribute for binary cross-entropy.
- :func:`check_regularization`: a larger regularisation strength gives a larger loss.
- :func:`check_overfit`: a tiny training set (20 examples) is memorised: 100% training
  accuracy for a classification, a loss near zero (against predicting the mean) for a regression.
- :func:`check_gradients`: :func:`jnn.gradcheck.check_grads` on the training objective,
  optionally after a few training steps ("characteristic mode of operation").

Each returns a :class:`CheckResult`; :func:`run_all` runs them all into a :class:`SanityReport`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jnn import gradcheck as _gradcheck
from jnn import losses as _losses
from jnn import regularizers as _reg
from jnn import train as _train
from jnn._foreign import as_model

__all__ = [
    "CheckResult",
    "SanityReport",
    "check_gradients",
    "check_initial_loss",
    "check_overfit",
    "check_regularization",
    "expected_initial_loss",
    "run_all",
]


class CheckResult(NamedTuple):
    """One sanity check: its ``name``, whether it passed, what was measured and expected."""

    name: str
    ok: bool
    measured: Any
    expected: Any
    message: str
    details: Any = None  # e.g. the GradCheckReport, or the loss curve


@dataclasses.dataclass(frozen=True)
class SanityReport:
    """The results of :func:`run_all`; ``ok`` when every check passed."""

    checks: tuple[CheckResult, ...]

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def __getitem__(self, name: str) -> CheckResult:
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(f"no check named {name!r}; checks: {[c.name for c in self.checks]}")

    def __str__(self) -> str:
        passed = sum(c.ok for c in self.checks)
        lines = [f"sanity checks: {passed}/{len(self.checks)} passed"]
        for c in self.checks:
            lines.append(f"[{'ok' if c.ok else 'FAIL'}] {c.name}: {c.message}")
        return "\n".join(lines)


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _floor_percent(fraction: float) -> str:
    """``fraction`` as a percentage floored to one decimal: 0.999 -> "99.9%", and anything
    below 1 never reads "100.0%"."""
    # 1 + 1e-6: a float32 accuracy such as 29/100 = 0.28999999 still reads 29.0%
    tenths = math.floor(fraction * 1000 * (1 + 1e-6))
    if fraction < 1.0:
        tenths = min(tenths, 999)
    return f"{tenths / 10:.1f}%"


def _fresh(model, key, shape):
    return model.init(key, tuple(shape))


def _outputs(model, params, model_state, x):
    """Inference-mode outputs (op by op: tiny batches, and the op cache is shared)."""
    return model.apply(params, model_state, jnp.asarray(x), train=False)[0]


def _init(model, key, x, params, model_state):
    if params is None:
        params, init_state = _fresh(model, key, x.shape)
        model_state = init_state if model_state is None else model_state
    elif model_state is None:
        raise ValueError("pass model_state along with params (use {} for a stateless model).")
    return params, model_state


def _formula(loss, outputs, margin_hint=""):
    c = outputs.shape[-1]
    if loss is _losses.softmax_cross_entropy:
        return f"log C = log {c}"
    if loss is _losses.multiclass_hinge:
        return f"(C - 1) * margin = {c - 1} * margin{margin_hint}"
    if loss is _losses.sigmoid_binary_cross_entropy:
        return f"log 2 per attribute = {c} * log 2"
    return "the loss at zero outputs"


def expected_initial_loss(loss, outputs, y) -> float:
    """Chance-level loss: the mean of ``loss`` at zero outputs.

    Small random weights give outputs near zero, so the first loss should be close to this:
    ``log C`` (softmax cross-entropy), ``(C - 1) * margin`` (multiclass hinge), ``A * log 2``
    (binary cross-entropy summed over ``A`` attributes).

    Args:
      loss: per-example loss ``loss(outputs, y) -> (batch,)``.
      outputs: model outputs (only the shape and dtype are used).
      y: targets.

    Returns:
      A Python float.
    """
    return float(jnp.mean(loss(jnp.zeros_like(outputs), y)))


# ----------------------------------------------------------------------------- initial loss


def check_initial_loss(
    model, loss, x, y, *, key, params=None, model_state=None, rtol: float = 0.5
) -> CheckResult:
    """The loss of the freshly initialised model should be the chance-level loss.

    Passes when ``|measured - expected| <= rtol * expected`` with ``expected`` from
    :func:`expected_initial_loss` (inference mode, ``train=False``).

    Args:
      model: a layer with ``init`` / ``apply``.
      loss: per-example loss.
      x, y: a batch of inputs and targets.
      key: PRNG key for ``model.init`` (unused when ``params`` is given).
      params, model_state: check these instead of a fresh initialisation.
      rtol: allowed relative deviation.

    Returns:
      ``CheckResult("initial_loss", ok, measured, expected, message)``.
    """
    model = as_model(model)
    params, model_state = _init(model, key, x, params, model_state)
    outputs = _outputs(model, params, model_state, x)
    measured = float(jnp.mean(loss(outputs, y)))
    expected = expected_initial_loss(loss, outputs, y)
    what = f"initial loss {measured:.4g}, expected {expected:.4g} ({_formula(loss, outputs)})"
    if not math.isfinite(measured):
        return CheckResult(
            "initial_loss",
            False,
            measured,
            expected,
            f"{what}: not finite. Check the inputs for NaN/inf and the initialisation scale.",
        )
    if measured > expected * (1 + rtol):
        message = (
            f"{what}: {measured / expected:.1f}x too large. The outputs at initialisation are "
            "too large: initialise the final layer smaller (scale its weights down, e.g. "
            "10-100x, or start them at zero) and check that the inputs are normalised."
        )
        return CheckResult("initial_loss", False, measured, expected, message)
    if measured < expected * (1 - rtol):
        message = (
            f"{what}: below chance level before any training. Check that the loss is given "
            "raw scores (not probabilities), that the labels match the outputs, and that the "
            "inputs do not leak the labels."
        )
        return CheckResult("initial_loss", False, measured, expected, message)
    return CheckResult(
        "initial_loss", True, measured, expected, f"{what}: within {rtol:.0%}, as it should be."
    )


# ----------------------------------------------------------------------------- regularisation


def check_regularization(
    model,
    loss,
    x,
    y,
    *,
    key,
    params=None,
    model_state=None,
    penalty: Callable | None = None,
    strengths: Sequence[float] = (0.0, 1e-3, 1e-2, 1e-1),
) -> CheckResult:
    """Increasing the regularisation strength should increase the loss.

    Evaluates ``mean loss + s * penalty(params)`` at each strength ``s`` (same params, same
    batch) and passes when the values strictly increase.

    Args:
      model, loss, x, y, key, params, model_state: as :func:`check_initial_loss`.
      penalty: ``penalty(params) -> scalar`` (default ``jnn.regularizers.l2``: ``0.5 sum w^2``
        over the leaves named ``w``).
      strengths: increasing regularisation strengths.

    Returns:
      ``CheckResult("regularization", ok, measured=[loss per strength], expected, message)``.
    """
    model = as_model(model)
    strengths = [float(s) for s in strengths]
    if len(strengths) < 2 or any(b <= a for a, b in zip(strengths, strengths[1:], strict=False)):
        raise ValueError(f"strengths must be at least two increasing values, got {strengths}.")
    penalty = _reg.l2 if penalty is None else penalty
    params, model_state = _init(model, key, x, params, model_state)
    outputs = _outputs(model, params, model_state, x)
    data = float(jnp.mean(loss(outputs, y)))
    pen = float(penalty(params))
    measured = [data + s * pen for s in strengths]
    expected = "strictly increasing"
    table = ", ".join(f"{s:g}: {v:.4g}" for s, v in zip(strengths, measured, strict=True))
    ok = all(b > a for a, b in zip(measured, measured[1:], strict=False))
    if ok:
        return CheckResult(
            "regularization", True, measured, expected, f"loss by strength {table}: increases."
        )
    hint = (
        "the penalty is 0: nothing is regularised (no leaves named `w` under the mask?)"
        if pen == 0
        else "the penalty is negative: check its sign"
        if pen < 0
        else "the penalty is too small to show at these strengths"
    )
    return CheckResult(
        "regularization",
        False,
        measured,
        expected,
        f"loss by strength {table}: does not increase; {hint}.",
    )


# ----------------------------------------------------------------------------- overfit


def _memorised(model, params, model_state, x, y):
    """Fraction of examples fitted: ``jnn.losses.accuracy`` for integer labels, every output's
    sign for 0/1 targets."""
    outputs, _ = model.apply(params, model_state, x, train=False)
    if jnp.issubdtype(y.dtype, jnp.integer):
        return _losses.accuracy(outputs, y).astype(jnp.float32)
    hit = (outputs > 0) == (y > 0.5)
    return jnp.mean(jnp.all(hit.reshape(hit.shape[0], -1), axis=-1).astype(jnp.float32))


def _is_regression(loss, y) -> bool:
    """A regression: floating targets with any loss but the 0/1 binary cross-entropy."""
    return not jnp.issubdtype(y.dtype, jnp.integer) and loss is not (
        _losses.sigmoid_binary_cross_entropy
    )


def _constant_loss(loss, y) -> float:
    """The regression baseline ``mean_i loss(mean_j y_j, y_i)``: the loss of predicting the mean
    target for every example (for ``l2_loss`` the targets' total variance)."""
    y = jnp.asarray(y)
    return float(jnp.mean(loss(jnp.broadcast_to(jnp.mean(y, axis=0), y.shape), y)))


def check_overfit(
    model,
    loss,
    optimizer,
    x,
    y,
    *,
    key,
    n: int = 20,
    max_steps: int = 500,
    eval_every: int = 10,
    step_options: dict | None = None,
    regression_tol: float = 1e-2,
) -> CheckResult:
    """Trains on the first ``n`` examples until they are memorised.

    Full-batch steps of ``jnn.train.make_step(model, loss, optimizer, **step_options)``,
    ``eval_every`` at a time inside one jitted ``lax.scan``, measured in inference mode.
    A classification (integer labels, or ``sigmoid_binary_cross_entropy`` on 0/1 targets) is
    memorised at 100% training accuracy (argmax; every output's sign for multi-label targets).
    A regression (floating targets with any other loss, e.g. ``l2_loss``) is judged by its
    loss: memorised when ``mean loss <= regression_tol * baseline``, the baseline being the
    loss of predicting the mean target for every example (``1 - R^2 <= regression_tol`` for
    ``l2_loss``). If a network cannot memorise 20 examples, training the full set is not
    worth starting.

    Args:
      model, loss: the network and its per-example loss.
      optimizer: an ``optax.GradientTransformation``.
      x, y: data; the first ``n`` examples are used.
      key: PRNG key (initialisation and dropout).
      n: number of examples.
      max_steps: the step budget.
      eval_every: steps between measurements.
      step_options: keyword arguments of ``make_step`` (``l2``, ``clip_norm``, ...).
      regression_tol: a regression's loss, as a fraction of the baseline, that counts as
        memorised.

    Returns:
      ``CheckResult("overfit", ok, measured, expected, message)`` with the loss curve in
      ``details``; ``measured`` is the steps taken when it passed, else the best training
      accuracy (classification) or the lowest loss / baseline ratio (regression).
    """
    model = as_model(model)
    x, y = jnp.asarray(x)[:n], jnp.asarray(y)[:n]
    regression = _is_regression(loss, y)
    options = {"jit": False, "monitor": False, **(step_options or {})}
    step = _train.make_step(model, loss, optimizer, **options)
    init_key, step_key = jax.random.split(key)
    state = _train.init(model, optimizer, init_key, x.shape)

    def fitted(params, model_state):
        """Higher is better: training accuracy, or minus the inference-mode loss."""
        if not regression:
            return _memorised(model, params, model_state, x, y)
        return -jnp.mean(loss(model.apply(params, model_state, x, train=False)[0], y))

    @jax.jit
    def run(state):
        def body(s, _):
            s, metrics = step(s, (x, y), step_key)
            return s, metrics["loss"]

        state, curve = jax.lax.scan(body, state, None, length=eval_every)
        return state, curve, fitted(state.params, state.model_state)

    # A classification passes at accuracy 1; a regression at -loss >= -tol * baseline.
    target = -regression_tol * _constant_loss(loss, y) if regression else 1.0
    curve, best, steps = [], -math.inf, 0
    while steps < max_steps:
        state, chunk, score = run(state)
        steps += eval_every
        curve.extend(np.asarray(chunk, np.float64).tolist())
        best = max(best, float(score))
        if best >= target:
            break
    if regression:
        return _regression_result(curve, best, steps, x.shape[0], max_steps, target, regression_tol)
    return _classification_result(curve, best, steps, x.shape[0], max_steps)


def _classification_result(curve, best, steps, n, max_steps) -> CheckResult:
    expected = f"100% training accuracy on {n} examples within {max_steps} steps"
    if best >= 1.0:
        message = f"reached 100% training accuracy on {n} examples in {steps} steps."
        return CheckResult("overfit", True, steps, expected, message, details=curve)
    message = (
        f"best training accuracy {_floor_percent(best)} after {steps} steps on {n} "
        f"examples; {_curve_summary(curve)}; {_overfit_hint(curve)}."
    )
    return CheckResult("overfit", False, best, expected, message, details=curve)


def _regression_result(curve, best, steps, n, max_steps, target, tol) -> CheckResult:
    baseline = target / -tol
    expected = (
        f"training loss <= {tol:g} x {baseline:.4g} (the loss of predicting the mean target) "
        f"on {n} examples within {max_steps} steps"
    )
    if best >= target:
        message = (
            f"training loss {-best:.4g} <= {tol:g} x {baseline:.4g} (the loss of predicting the "
            f"mean target) on {n} examples in {steps} steps: memorised."
        )
        return CheckResult("overfit", True, steps, expected, message, details=curve)
    ratio = -best / baseline if baseline > 0 else math.inf
    message = (
        f"lowest training loss {-best:.4g} after {steps} steps on {n} examples is "
        f"{ratio:.4g} x the loss of predicting the mean target ({baseline:.4g}); memorised "
        f"needs <= {tol:g} x; {_curve_summary(curve)}; {_overfit_hint(curve)}."
    )
    return CheckResult("overfit", False, ratio, expected, message, details=curve)


def _curve_summary(curve) -> str:
    last = ", ".join(f"{v:.4g}" for v in curve[-5:])
    first = curve[0] if curve else float("nan")
    return f"last losses {last} (first {first:.4g})"


def _overfit_hint(curve) -> str:
    """Why a tiny set was not memorised, read from the loss curve."""
    first = curve[0] if curve else float("nan")
    if curve and abs(curve[-1] - first) <= 1e-6 * max(1.0, abs(first)):
        return (
            "the loss did not move: the learning rate is 0 or far too small, or the "
            "gradients do not reach the parameters"
        )
    if curve and not math.isfinite(curve[-1]):
        return "the loss diverged: lower the learning rate"
    return (
        "the loss moves but the model cannot memorise the examples: check that the labels "
        "(targets) match the inputs (shuffled separately?), the learning rate, and the "
        "model's capacity"
    )


# ----------------------------------------------------------------------------- gradients


def check_gradients(
    model,
    loss,
    x,
    y,
    *,
    key,
    params=None,
    model_state=None,
    optimizer=None,
    warmup_steps: int = 0,
    n: int = 8,
    l1: float = 0.0,
    l2: float = 0.0,
    **check_options,
) -> CheckResult:
    """Gradient check of the training objective, optionally in "characteristic mode".

    The objective is ``make_step``'s: ``mean loss(model(x, train=True)) + l1 * sum|w| +
    l2 * 0.5 * sum w^2`` on the first ``n`` examples (few examples cross few kinks), with a
    fixed dropout key. With ``warmup_steps > 0`` (needs ``optimizer``) the model first trains
    that many full-batch steps, since the initial weights may be unrepresentative.

    Args:
      model, loss, x, y, key, params, model_state: as :func:`check_initial_loss`.
      optimizer: used for the warm-up steps.
      warmup_steps: training steps taken before checking.
      n: examples in the checked batch.
      l1, l2: penalty coefficients included in the objective.
      **check_options: passed to :func:`jnn.gradcheck.check_grads` (``h``, ``directions``...).

    Returns:
      ``CheckResult("gradients", ok, measured=max relative error, expected, message)`` with
      the :class:`jnn.gradcheck.GradCheckReport` in ``details``.
    """
    model = as_model(model)
    # Long only by its docstring and keywords; the body is warm-up, then jnn.gradcheck.
    x, y = batch = (jnp.asarray(x)[:n], jnp.asarray(y)[:n])
    init_key, drop_key, step_key = jax.random.split(key, 3)
    if warmup_steps > 0:
        if optimizer is None:
            raise ValueError("check_gradients: warmup_steps > 0 needs an optimizer.")
        state = _train.init(model, optimizer, init_key, x.shape)
        if params is not None:
            state = state._replace(
                params=params,
                model_state=model_state,
                opt_state=optimizer.init(params),
            )
        step = _train.make_step(model, loss, optimizer, l1=l1, l2=l2, monitor=False, donate=False)
        for _ in range(warmup_steps):
            state, _ = step(state, batch, step_key)
        params, model_state = state.params, state.model_state
    else:
        params, model_state = _init(model, init_key, x, params, model_state)

    objective = _train.Objective(model, loss, float(l1), float(l2))
    report = _gradcheck.check_grads(objective, params, model_state, x, y, drop_key, **check_options)
    worst = max((r.max_rel_error for r in report.rows), default=0.0)
    mode = f" after {warmup_steps} training steps" if warmup_steps > 0 else " at initialisation"
    summary = (
        f"max relative error {worst:.2e}{mode}"
        + ("" if report.ok else f"; wrong gradient in {', '.join(report.failed)}")
        + "\n"
        + str(report)
    )
    return CheckResult(
        "gradients",
        report.ok,
        worst,
        f"< {report.thresholds[1]:g} (or a kink)",
        summary,
        details=report,
    )


# ----------------------------------------------------------------------------- all


def run_all(
    model,
    loss,
    optimizer,
    x,
    y,
    *,
    key,
    n: int = 20,
    max_steps: int = 500,
    rtol: float = 0.5,
    strengths: Sequence[float] = (0.0, 1e-3, 1e-2, 1e-1),
    gradients: bool = True,
    warmup_steps: int = 5,
    step_options: dict | None = None,
    check_options: dict | None = None,
    regression_tol: float = 1e-2,
) -> SanityReport:
    """Runs every sanity check on one model and returns a :class:`SanityReport`.

    Initial loss and regularisation use a fresh initialisation on ``x[:n]``; the overfit
    check trains on ``x[:n]``; the gradient check runs after ``warmup_steps`` steps.

    Args:
      model, loss, optimizer: what will be trained.
      x, y: data (the first ``n`` examples are used).
      key: PRNG key.
      n: examples for the tiny-set checks.
      max_steps: step budget of the overfit check.
      rtol: tolerance of the initial-loss check.
      strengths: regularisation strengths to compare.
      gradients: run the gradient check.
      warmup_steps: training steps before the gradient check (characteristic mode).
      step_options: ``make_step`` options (``l1``, ``l2``, ``clip_norm``...).
      check_options: ``jnn.gradcheck.check_grads`` options.
      regression_tol: how close to zero a regression's training loss must come, as a fraction
        of the loss of predicting the mean target (see :func:`check_overfit`).

    Returns:
      A :class:`SanityReport` (``.ok``, ``.checks``, ``str(report)``).
    """
    model = as_model(model)
    # One narrated sequence: the four checks in order, each call spelling its keywords.
    k_init, k_overfit, k_grad = jax.random.split(key, 3)
    xs, ys = jnp.asarray(x)[:n], jnp.asarray(y)[:n]
    params, model_state = _fresh(model, k_init, xs.shape)
    checks = [
        check_initial_loss(
            model, loss, xs, ys, key=k_init, params=params, model_state=model_state, rtol=rtol
        ),
        check_regularization(
            model,
            loss,
            xs,
            ys,
            key=k_init,
            params=params,
            model_state=model_state,
            strengths=strengths,
        ),
        check_overfit(
            model,
            loss,
            optimizer,
            xs,
            ys,
            key=k_overfit,
            n=n,
            max_steps=max_steps,
            step_options=step_options,
            regression_tol=regression_tol,
        ),
    ]
    if gradients:
        penalties = {k: v for k, v in (step_options or {}).items() if k in ("l1", "l2")}
        checks.append(
            check_gradients(
                model,
                loss,
                xs,
                ys,
                key=k_grad,
                optimizer=optimizer,
                warmup_steps=warmup_steps,
                **penalties,
                **(check_options or {}),
            )
        )
    return SanityReport(tuple(checks))
