"""Babysitting the learning process: update/weight ratios, gradient norms, activation
statistics and diagnostics in words.

The per-step functions (``update_ratios``, ``grad_norms``) are pure and jittable and
return flat ``{"dense_0/w": scalar}`` dicts so a training step can emit them as metrics.

:func:`diagnose` runs the rules of :data:`DIAGNOSES` in order, one small function per
diagnosis; their thresholds live in that table only (:data:`THRESHOLDS` collects them), and
the README's diagnostics table is :func:`diagnostics_table` (a test keeps them equal).
"""

import math
import re
from collections.abc import Callable, Mapping
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jnn import _memo, _tree
from jnn._compile import one_shot_jit
from jnn._dtypes import at_least_float32
from jnn._foreign import as_model

__all__ = [
    "DIAGNOSES",
    "RATIO_TARGET",
    "SIGMOID_SATURATION",
    "TANH_SATURATION",
    "THRESHOLDS",
    "Diagnosis",
    "InputScale",
    "Threshold",
    "activation_stats",
    "activations_note",
    "diagnose",
    "diagnostics_table",
    "grad_norms",
    "identical_units",
    "input_scale",
    "intermediates_program",
    "program_inputs",
    "ratio_medians",
    "update_ratios",
]

# What the statistics count (not diagnose options: they define the statistics themselves).
RATIO_TARGET = 1e-3  # the notes' rule of thumb for ||dw|| / ||w||
TANH_SATURATION = 0.99  # |tanh(x)| > 0.99 counts as saturated
SIGMOID_SATURATION = 0.01  # sigmoid(x) < 0.01 or > 0.99 counts as saturated
_EPS = 1e-12


def _norm(x):
    x = jnp.asarray(x)
    return jnp.sqrt(jnp.sum(jnp.square(x.astype(at_least_float32(x.dtype)))))


def update_ratios(params, updates) -> dict:
    """Update/weight ratio ``||dw|| / ||w||`` for every weight leaf (``jnn._tree.is_weight``).

    Args:
      params: the parameters *before* the update (a pytree of arrays).
      updates: the update added to them (same structure), e.g. Optax's output.

    Returns:
      ``{"dense_0/w": ratio, ...}`` (scalars); a healthy ratio is around 1e-3.
    """
    named_u = _tree.named_leaves(updates)
    return {
        name: _norm(named_u[name]) / (_norm(w) + _EPS)
        for name, w in _tree.weight_leaves(params).items()
    }


def grad_norms(grads) -> dict:
    """L2 norm of every gradient leaf: ``{"dense_0/w": ||g||, "dense_0/b": ..., ...}``."""
    return {name: _norm(g) for name, g in _tree.named_leaves(grads).items()}


# --------------------------------------------------------------------------- activations


def _layer_kind(layer) -> str:
    return type(layer).__name__.lower()


def _unit_fractions(kind: str, y) -> dict:
    """``dead`` for ReLU outputs, ``saturated`` for tanh / sigmoid outputs."""
    if kind == "relu":
        units = y.reshape(-1, y.shape[-1]) if y.ndim > 1 else y.reshape(-1, 1)
        return {"dead": float(np.mean(np.all(units <= 0.0, axis=0)))}
    if kind == "tanh":
        return {"saturated": float(np.mean(np.abs(y) > TANH_SATURATION))}
    if kind == "sigmoid":
        low, high = SIGMOID_SATURATION, 1.0 - SIGMOID_SATURATION
        return {"saturated": float(np.mean((y < low) | (y > high)))}
    return {}


def _layer_stats(y, kind: str, bins: int) -> dict:
    y = np.asarray(y, dtype=np.float64)
    finite = y[np.isfinite(y)]
    if finite.size:
        hist, edges = np.histogram(finite, bins=bins)
    else:
        hist, edges = np.zeros(bins), np.arange(bins + 1)
    return {
        "kind": kind,
        "shape": list(y.shape),
        "mean": float(finite.mean()) if finite.size else math.nan,
        "std": float(finite.std()) if finite.size else math.nan,
        "hist": hist.tolist(),
        "edges": edges.tolist(),
        **_unit_fractions(kind, y),
    }


def intermediates_program(model, train: bool = False):
    """``model``'s jitted ``(params, state, x, key) -> {layer name: output}`` (its
    ``apply_intermediates``), one per model and mode: :func:`activation_stats` and the
    TensorBoard histograms (``jnn.tensorboard``) share one compiled program."""
    return _intermediates_program(model, bool(train))


@_memo.cached
def _intermediates_program(model, train: bool):
    return one_shot_jit(
        lambda p, s, x, k: model.apply_intermediates(p, s, x, key=k, train=train)[2]
    )


def program_inputs(tree):
    """``tree``'s host (NumPy) leaves as device arrays, device arrays as they are: callers of
    :func:`intermediates_program` that pass host arrays (a run's final state, TensorBoard's
    copies) hit one compiled entry (jit keys its cache on committedness too)."""
    return jax.tree.map(lambda a: a if isinstance(a, jax.Array) else jnp.asarray(a), tree)


def activation_stats(model, params, state, x, *, key=None, train=False, bins=30) -> dict:
    """Statistics of every layer's output from one forward pass of a ``Serial`` model (or of
    every submodule of a Flax linen model; see ``jnn.interop``).

    A *unit* is one feature of the last axis (a channel for convolutional outputs).

    Args:
      model: a ``jnn.nn.Serial`` (anything with ``apply_intermediates``, ``layers`` and
        ``names``, the keys of its params and of the intermediate outputs), or a model with
        ``activation_outputs`` (``jnn.interop``'s linen adapter). A model that shows no
        intermediate outputs (an NNX or Equinox model) gives ``{}``: see
        :func:`activations_note`.
      params, state: its parameters and model state.
      x: a batch of inputs; more examples give steadier statistics.
      key, train: passed to the forward pass (defaults: deterministic inference mode).
      bins: number of histogram bins.

    Returns:
      ``{layer_name: {"kind", "mean", "std", "hist", "edges", ...}}`` in layer order (Python
      floats and lists), ``kind`` the layer's class name in lower case. ReLU layers add
      ``"dead"``: the fraction of units that output 0 for every example (and position) of the
      batch. Tanh layers add ``"saturated"``: the fraction of outputs with ``|y| > 0.99``;
      sigmoid layers the fraction with ``y < 0.01`` or ``y > 0.99``.
    """
    model = as_model(model)
    if hasattr(model, "apply_intermediates"):
        params, state = program_inputs((params, state))
        outputs = intermediates_program(model, train)(params, state, x, key)
        named = [
            (name, _layer_kind(layer), outputs[name])
            for name, layer in zip(model.names, model.layers, strict=True)
        ]
    elif callable(getattr(model, "activation_outputs", None)):
        # one eager forward pass (the kinds are Python strings, not traced values)
        outputs = model.activation_outputs(params, state, x, key=key, train=train)
        named = [(name, kind, y) for name, (kind, y) in outputs.items()]
    else:
        return {}
    return {
        name: _layer_stats(y, kind, bins)
        for name, kind, y in named
        if hasattr(y, "dtype")  # e.g. a hierarchical-softmax head's pytree
    }


def activations_note(model) -> str | None:
    """One line saying why :func:`activation_stats` has nothing for ``model`` (``None`` when
    it has statistics), e.g. "NNX models do not expose their submodules' outputs"."""
    model = as_model(model)
    if hasattr(model, "apply_intermediates") or callable(
        getattr(model, "activation_outputs", None)
    ):
        return None
    reason = getattr(model, "activations_note", None) or (
        f"{type(model).__name__} does not expose its layers' outputs"
    )
    return f"activation statistics not collected: {reason}."


# --------------------------------------------------------------------------- input scale


class InputScale(NamedTuple):
    """Overall mean and standard deviation of the training inputs (over every entry)."""

    mean: float
    std: float


def input_scale(inputs) -> InputScale:
    """The typical scale of the training inputs, to tell standardised data from raw data.

    Args:
      inputs: the training inputs (an array, e.g. raw ``uint8`` pixels), or precomputed
        per-feature statistics with ``mean`` and ``std`` fields
        (``jnn.preprocessing.fit_standardize(x)``, an :class:`InputScale`).

    Returns:
      :class:`InputScale` of every entry: for per-feature statistics (equal counts per
      feature) ``mean = mean_f m_f`` and ``std = sqrt(mean_f (s_f^2 + m_f^2) - mean^2)``.
    """
    if hasattr(inputs, "mean") and hasattr(inputs, "std") and not hasattr(inputs, "shape"):
        m = np.asarray(inputs.mean, np.float64).ravel()
        s = np.asarray(inputs.std, np.float64).ravel()
        mean = float(m.mean())
        return InputScale(mean, float(np.sqrt(max(np.mean(s**2 + m**2) - mean**2, 0.0))))
    x = np.asarray(inputs, np.float64)
    return InputScale(float(x.mean()), float(x.std()))


# --------------------------------------------------------------------------- the rules


def _median(values):
    values = sorted(v for v in values if v is not None and math.isfinite(v))
    if not values:
        return None
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else 0.5 * (values[mid - 1] + values[mid])


def ratio_medians(history) -> dict:
    """Median over the epochs of each layer's update/weight ratio: ``{name: float}``."""
    per_layer = {}
    for record in history:
        for name, value in (record.get("update_ratio") or {}).items():
            per_layer.setdefault(name, []).append(value)
    medians = {name: _median(values) for name, values in per_layer.items()}
    return {name: m for name, m in medians.items() if m is not None}


def _finite(value):
    return value is not None and math.isfinite(value)


class _Evidence(NamedTuple):
    """What the rules read: the history, the activation statistics, the input scale, the
    final parameters."""

    history: list
    activation_stats: dict
    inputs: InputScale | None
    params: object = None


class _Limits(NamedTuple):
    """The thresholds in force (the table's values, or diagnose's overrides)."""

    values: Mapping[str, float]

    def __getitem__(self, name):
        return self.values[name]

    def text(self, name: str) -> str:
        """The threshold as the table writes it (``25%``, ``1e-4``, ``10 points``)."""
        return _show(self.values[name], _UNITS[name])


def _inputs_unscaled(evidence: _Evidence, limits: _Limits) -> list[str]:
    if evidence.inputs is None:
        return []
    mean, std = evidence.inputs
    if abs(mean) > limits["input_mean"] or std > limits["input_std"]:
        return [
            f"inputs look unscaled (mean {round(mean, 1) + 0.0:.1f}, std {std:.1f}): "
            "standardise them (jnn.preprocessing.standardize)"
        ]
    return []


def _nan_loss(evidence: _Evidence, limits: _Limits) -> list[str]:
    bad = [r for r in evidence.history if not _finite(r.get("train_loss"))]
    if not bad:
        return []
    return [
        f"loss became NaN/inf at epoch {bad[0].get('epoch')}: the learning rate is probably "
        "far too high (or the inputs/loss are not numerically safe)"
    ]


def _loss_not_decreasing(evidence: _Evidence, limits: _Limits) -> list[str]:
    history = evidence.history
    if len(history) < 2 or not all(_finite(r.get("train_loss")) for r in history):
        return []
    first, last = history[0]["train_loss"], history[-1]["train_loss"]
    if last < limits["loss_decrease"] * first:
        return []
    return [
        f"training loss is not decreasing ({first:.4g} -> {last:.4g} over {len(history)} "
        f"epochs; the last >= {limits.text('loss_decrease')} of the first): check the learning "
        "rate (too low, or so high it bounces) and the data/labels"
    ]


def _overall_ratio(history):
    """The median over layers of each layer's median ratio, and those medians."""
    medians = ratio_medians(history)
    return _median(list(medians.values())), medians


def _ratio_too_low(evidence: _Evidence, limits: _Limits) -> list[str]:
    overall, medians = _overall_ratio(evidence.history)
    if overall is None or overall >= limits["ratio_low"]:
        return []
    slow = [n for n, m in medians.items() if m < limits["ratio_low"]]
    return [
        f"learning rate probably too low: median update/weight ratio {overall:.1e} < "
        f"{limits.text('ratio_low')} (target ~{_show(RATIO_TARGET, 'e')}; layers: "
        f"{', '.join(slow)})"
    ]


def _ratio_too_high(evidence: _Evidence, limits: _Limits) -> list[str]:
    overall, medians = _overall_ratio(evidence.history)
    if overall is None or overall <= limits["ratio_high"]:
        return []
    fast = [n for n, m in medians.items() if m > limits["ratio_high"]]
    return [
        f"learning rate probably too high: median update/weight ratio {overall:.1e} > "
        f"{limits.text('ratio_high')} (target ~{_show(RATIO_TARGET, 'e')}; layers: "
        f"{', '.join(fast)})"
    ]


def _val_loss_rose(evidence: _Evidence, limits: _Limits) -> list[str]:
    val_losses = [(r.get("val_loss"), r.get("epoch")) for r in evidence.history]
    val_losses = [(v, e) for v, e in val_losses if _finite(v)]
    if len(val_losses) < 3:
        return []
    best, best_epoch = min(val_losses)
    final = val_losses[-1][0]
    if best <= 0 or final <= (1.0 + limits["val_loss_rise"]) * best:
        return []
    return [
        f"validation loss rose to {final:.4g}, {final / best - 1:.0%} above its minimum "
        f"{best:.4g} at epoch {best_epoch} (> {limits.text('val_loss_rise')}): overfitting; "
        "stop earlier (--patience) or regularise more"
    ]


def _last_accuracies(history):
    """The last epoch's train and validation accuracy, or ``None`` if either is missing."""
    if not history:
        return None
    train_acc, val_acc = history[-1].get("train_acc"), history[-1].get("val_acc")
    return (train_acc, val_acc) if _finite(train_acc) and _finite(val_acc) else None


def _overfitting(evidence: _Evidence, limits: _Limits) -> list[str]:
    last = _last_accuracies(evidence.history)
    if last is None or last[0] - last[1] <= limits["overfit_gap"]:
        return []
    train_acc, val_acc = last
    return [
        f"overfitting: train accuracy {train_acc:.1%} is {train_acc - val_acc:.1%} above "
        f"validation accuracy {val_acc:.1%} (> {limits.text('overfit_gap')}): add "
        "regularisation (L2, dropout), more data, or stop earlier"
    ]


def _underfitting(evidence: _Evidence, limits: _Limits) -> list[str]:
    last = _last_accuracies(evidence.history)
    if last is None or max(last) >= limits["underfit_acc"]:
        return []
    train_acc, val_acc = last
    return [
        f"underfitting: train accuracy {train_acc:.1%} and validation accuracy {val_acc:.1%} "
        f"are both below {limits.text('underfit_acc')}: train longer, use a bigger model or "
        "tune the learning rate"
    ]


def _dying_relus(evidence: _Evidence, limits: _Limits) -> list[str]:
    return [
        f"dying ReLUs in {name}: {row['dead']:.0%} of units never activate on the batch "
        f"(> {limits.text('dead_warn')}): lower the learning rate, check the "
        "initialisation/biases, or try LeakyReLU"
        for name, row in evidence.activation_stats.items()
        if row.get("dead", 0.0) > limits["dead_warn"]
    ]


def _saturated_units(evidence: _Evidence, limits: _Limits) -> list[str]:
    return [
        f"saturated units in {name}: {row['saturated']:.0%} of {row['kind']} outputs are "
        f"saturated (> {limits.text('saturated_warn')}); their gradients vanish: use smaller "
        "initial weights, normalisation, or ReLU"
        for name, row in evidence.activation_stats.items()
        if row.get("saturated", 0.0) > limits["saturated_warn"]
    ]


def identical_units(params, tol: float = 1e-6) -> dict:
    """The layers whose units all have the same incoming weights: ``{layer: spread}``.

    A unit's weights are one column of the last axis of a weight leaf (``jnn._tree``'s rule:
    a Dense ``(in, out)`` column, a Conv ``(*window, in, out)`` filter). The spread is
    ``max |w[..., j] - w[..., 0]| / max(max |w|, 1e-30)``; a layer with at least two units and
    a spread ``<= tol`` is listed: its units compute the same function and get the same
    gradient, so training can never tell them apart (a constant initialisation's symmetry).

    Args:
      params: a pytree of parameters with string keys.
      tol: the largest relative spread counted as identical.

    Returns:
      ``{"dense_0": spread, ...}`` in tree order (layer name: the leaf's path without ``/w``).
    """
    found = {}
    for name, w in _tree.weight_leaves(params).items():
        w = np.asarray(w, np.float64)
        if w.ndim < 2 or w.shape[-1] < 2:
            continue
        scale = max(float(np.max(np.abs(w))), 1e-30)
        spread = float(np.max(np.abs(w - w[..., :1]))) / scale
        if spread <= tol:
            found[name.rsplit("/", 1)[0]] = spread
    return found


def _identical_units(evidence: _Evidence, limits: _Limits) -> list[str]:
    if evidence.params is None:
        return []
    return [
        f"identical units in {layer}: symmetry never broken (every unit has the same "
        f"weights, relative spread {spread:.0e} <= {limits.text('identical_tol')}): "
        "initialise the weights randomly (--init kaiming_normal), never with a constant"
        for layer, spread in identical_units(evidence.params, limits["identical_tol"]).items()
    ]


# --------------------------------------------------------------------------- the table


class Threshold(NamedTuple):
    """A threshold of :func:`diagnose`; ``name`` is also the keyword that overrides it."""

    name: str
    value: float
    unit: str = ""  # how it is written: "%" (25%), "points" (10 points), "e" (1e-4), "" (10)


class Diagnosis(NamedTuple):
    """One rule of :func:`diagnose`: a row of the README's diagnostics table.

    ``message`` is how its messages start (a code span such as `` `relu_k` `` stands for the
    layer's name); ``rule`` is the rule in words, ``{name}`` standing for a threshold or a
    statistic's constant; ``advice`` is what to try; ``check(evidence, limits)`` returns the
    messages.
    """

    message: str
    rule: str
    advice: str
    thresholds: tuple[Threshold, ...]
    check: Callable[[_Evidence, _Limits], list[str]]


DIAGNOSES: tuple[Diagnosis, ...] = (
    Diagnosis(
        "inputs look unscaled",
        "the training inputs' overall \\|mean\\| > {input_mean} or std > {input_std} (pass "
        "`inputs=` to `diagnose`)",
        "standardise them: `jnn.preprocessing.standardize`, fitted on the training set",
        (Threshold("input_mean", 10.0), Threshold("input_std", 10.0)),
        _inputs_unscaled,
    ),
    Diagnosis(
        "loss became NaN/inf",
        "any non-finite training loss; `fit` stops and keeps the last finite state (the CLI "
        "reports `training stopped`)",
        "much lower `--lr`, normalise inputs",
        (),
        _nan_loss,
    ),
    Diagnosis(
        "training loss is not decreasing",
        "last epoch's loss ≥ {loss_decrease} of the first's",
        "learning rate, labels, data",
        (Threshold("loss_decrease", 0.99, "%"),),
        _loss_not_decreasing,
    ),
    Diagnosis(
        "learning rate probably too low",
        "median over layers of each layer's median `‖Δw‖/‖w‖` < {ratio_low} (target "
        "~{ratio_target})",
        "raise `--lr`",
        (Threshold("ratio_low", 1e-4, "e"),),
        _ratio_too_low,
    ),
    Diagnosis(
        "learning rate probably too high",
        "that median > {ratio_high}",
        "lower `--lr`, add warm-up",
        (Threshold("ratio_high", 1e-2, "e"),),
        _ratio_too_high,
    ),
    Diagnosis(
        "validation loss rose",
        "last validation loss more than {val_loss_rise} above its minimum (3 or more epochs)",
        "`--patience`, `--l2`, `--dropout`",
        (Threshold("val_loss_rise", 0.20, "%"),),
        _val_loss_rose,
    ),
    Diagnosis(
        "overfitting",
        "train accuracy − validation accuracy > {overfit_gap}",
        "`--l2`, `--dropout`, `--patience`, more data",
        (Threshold("overfit_gap", 0.10, "points"),),
        _overfitting,
    ),
    Diagnosis(
        "underfitting",
        "train and validation accuracy both < {underfit_acc}",
        "bigger model, longer training, tune `--lr`",
        (Threshold("underfit_acc", 0.60, "%"),),
        _underfitting,
    ),
    Diagnosis(
        "dying ReLUs in `relu_k`",
        "> {dead_warn} of its units output 0 for every validation example",
        "lower `--lr`, check init/biases, LeakyReLU",
        (Threshold("dead_warn", 0.25, "%"),),
        _dying_relus,
    ),
    Diagnosis(
        "saturated units in `tanh_k` / `sigmoid_k`",
        "> {saturated_warn} of outputs with `\\|tanh\\| > {tanh_saturation}` / sigmoid "
        "`< {sigmoid_saturation}` or `> {sigmoid_high}`",
        "smaller init, normalisation, ReLU",
        (Threshold("saturated_warn", 0.25, "%"),),
        _saturated_units,
    ),
    Diagnosis(
        "identical units in `dense_k`: symmetry never broken",
        "every unit of the layer has the same weights after training (relative spread ≤ "
        "{identical_tol}; pass `params=` to `diagnose`)",
        "random initialisation (`--init kaiming_normal`), not `--init constant`",
        (Threshold("identical_tol", 1e-6, "e"),),
        _identical_units,
    ),
)

THRESHOLDS: dict[str, float] = {t.name: t.value for d in DIAGNOSES for t in d.thresholds}
_UNITS = {t.name: t.unit for d in DIAGNOSES for t in d.thresholds}
# The statistics' own constants, as the rule texts write them.
_CONSTANTS = {
    "ratio_target": (RATIO_TARGET, "e"),
    "tanh_saturation": (TANH_SATURATION, ""),
    "sigmoid_saturation": (SIGMOID_SATURATION, ""),
    "sigmoid_high": (1.0 - SIGMOID_SATURATION, ""),
}


def _show(value: float, unit: str) -> str:
    """A threshold as the table writes it: ``25%``, ``10 points``, ``1e-4``, ``10``."""
    if unit == "%":
        return f"{100 * value:g}%"
    if unit == "points":
        return f"{100 * value:g} points"
    if unit == "e":
        return re.sub(
            r"e([+-])0*(\d)", lambda m: "e" + m[1].replace("+", "") + m[2], f"{value:.0e}"
        )
    return f"{value:g}"


def diagnostics_table() -> str:
    """The README's diagnostics table (Markdown), rendered from :data:`DIAGNOSES`."""
    limits = _Limits(THRESHOLDS)
    words = {name: limits.text(name) for name in THRESHOLDS}
    words.update({name: _show(value, unit) for name, (value, unit) in _CONSTANTS.items()})
    lines = ["| message | rule (threshold) | what to try |", "|---|---|---|"]
    for d in DIAGNOSES:
        lines.append(f"| {d.message} | {d.rule.format(**words)} | {d.advice} |")
    return "\n".join(lines)


def _limits(overrides: Mapping[str, float]) -> _Limits:
    unknown = sorted(set(overrides) - set(THRESHOLDS))
    if unknown:
        raise TypeError(
            f"diagnose: unknown threshold(s) {unknown}; the thresholds are {sorted(THRESHOLDS)}."
        )
    return _Limits({**THRESHOLDS, **{k: float(v) for k, v in overrides.items()}})


def diagnose(
    history, activation_stats=None, *, inputs=None, params=None, **thresholds
) -> list[str]:
    """Reads a training history (and optionally activation statistics and the inputs) like
    the notes' babysitting checklist and explains what looks wrong, in words.

    Runs the rules of :data:`DIAGNOSES` in order (the README's table "What the diagnostics
    mean" lists each rule, its threshold and what to try): unscaled inputs, a NaN/inf loss,
    a training loss that does not fall, a learning rate too low / too high (the median over
    layers of each layer's median update/weight ratio against 1e-4 / 1e-2), a rising
    validation loss, overfitting, underfitting, dying ReLUs, saturated tanh/sigmoid units,
    layers whose units are all identical (:func:`identical_units`).

    Args:
      history: the per-epoch records of ``jnn.train.fit``.
      activation_stats: the output of :func:`activation_stats` (optional).
      inputs: the training inputs, or their statistics (see :func:`input_scale`; optional).
      params: the trained parameters (optional; for the identical-units rule).
      **thresholds: overrides of :data:`THRESHOLDS` by name (``ratio_low=1e-5``, ...).

    Returns:
      A list of messages; an empty list means nothing looks wrong.
    """
    limits = _limits(thresholds)
    evidence = _Evidence(
        history=list(history or []),
        activation_stats=dict(activation_stats or {}),
        inputs=None if inputs is None else input_scale(inputs),
        params=params,
    )
    return [message for d in DIAGNOSES for message in d.check(evidence, limits)]
