"""Babysitting the learning process: update/weight ratios, gradient norms, activation
statistics and diagnostics in words.

The per-step functions (``update_ratios``, ``grad_norms``) are pure and jittable and
return flat ``{"dense_0/w": scalar}`` dicts so a training step can emit them as metrics.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np

from jnn import _tree

# Thresholds used by the statistics and by ``diagnose`` (documented in the README).
TANH_SATURATION = 0.99  # |tanh(x)| > 0.99 counts as saturated
SIGMOID_SATURATION = 0.01  # sigmoid(x) < 0.01 or > 0.99 counts as saturated
RATIO_TARGET = 1e-3  # the notes' rule of thumb for ||dw|| / ||w||
RATIO_TOO_LOW = 1e-4  # median ratio below this: learning rate probably too low
RATIO_TOO_HIGH = 1e-2  # median ratio above this: learning rate probably too high
DEAD_WARN = 0.25  # more than this fraction of dead ReLU units is reported
SATURATED_WARN = 0.25  # more than this fraction of saturated tanh/sigmoid outputs
OVERFIT_GAP = 0.10  # train accuracy minus val accuracy above this: overfitting
VAL_LOSS_RISE = 0.20  # final val loss this far (relative) above its minimum: overfitting
UNDERFIT_ACC = 0.60  # both train and val accuracy below this: underfitting
_EPS = 1e-12


def _norm(x):
    x = jnp.asarray(x)
    return jnp.sqrt(jnp.sum(jnp.square(x.astype(jnp.promote_types(x.dtype, jnp.float32)))))


def update_ratios(params, updates) -> dict:
    """Update/weight ratio ``||dw|| / ||w||`` for every leaf named ``w``.

    Args:
      params: the parameters *before* the update (a pytree of arrays).
      updates: the update added to them (same structure), e.g. Optax's output.

    Returns:
      ``{"dense_0/w": ratio, ...}`` (scalars); a healthy ratio is around 1e-3.
    """
    named_p = _tree.named_leaves(params)
    named_u = _tree.named_leaves(updates)
    return {
        name: _norm(named_u[name]) / (_norm(p) + _EPS)
        for name, p in named_p.items()
        if name.rsplit("/", 1)[-1] == "w"
    }


def grad_norms(grads) -> dict:
    """L2 norm of every gradient leaf: ``{"dense_0/w": ||g||, "dense_0/b": ..., ...}``."""
    return {name: _norm(g) for name, g in _tree.named_leaves(grads).items()}


# --------------------------------------------------------------------------- activations


def _layer_kind(layer) -> str:
    return type(layer).__name__.lower()


def activation_stats(model, params, state, x, *, key=None, train=False, bins=30) -> dict:
    """Statistics of every layer's output from one forward pass of a ``Serial`` model.

    A *unit* is one feature of the last axis (a channel for convolutional outputs).

    Args:
      model: a ``jnn.nn.Serial`` (anything with ``apply_intermediates`` and ``layers``).
      params, state: its parameters and model state.
      x: a batch of inputs; more examples give steadier statistics.
      key, train: passed to the forward pass (defaults: deterministic inference mode).
      bins: number of histogram bins.

    Returns:
      ``{layer_name: {"kind", "mean", "std", "hist", "edges", ...}}`` (Python floats and
      lists). ReLU layers add ``"dead"``: the fraction of units that output 0 for every
      example (and position) of the batch. Tanh layers add ``"saturated"``: the fraction
      of outputs with ``|y| > 0.99``; sigmoid layers the fraction with ``y < 0.01`` or
      ``y > 0.99``.
    """
    forward = jax.jit(lambda p, s, x, k: model.apply_intermediates(p, s, x, key=k, train=train))
    _, _, outputs = forward(params, state, x, key)
    kinds = {
        f"{_layer_kind(layer)}_{i}": _layer_kind(layer) for i, layer in enumerate(model.layers)
    }
    stats = {}
    order = [n for n in kinds if n in outputs] + [n for n in outputs if n not in kinds]
    for name in order:  # layer order (jit returns dicts sorted by key)
        y = np.asarray(outputs[name], dtype=np.float64)
        finite = y[np.isfinite(y)]
        kind = kinds.get(name, name.rsplit("_", 1)[0])
        hist, edges = (
            np.histogram(finite, bins=bins)
            if finite.size
            else (np.zeros(bins), np.arange(bins + 1))
        )
        row = {
            "kind": kind,
            "shape": list(y.shape),
            "mean": float(finite.mean()) if finite.size else math.nan,
            "std": float(finite.std()) if finite.size else math.nan,
            "hist": hist.tolist(),
            "edges": edges.tolist(),
        }
        if kind == "relu":
            units = y.reshape(-1, y.shape[-1]) if y.ndim > 1 else y.reshape(-1, 1)
            row["dead"] = float(np.mean(np.all(units <= 0.0, axis=0)))
        elif kind == "tanh":
            row["saturated"] = float(np.mean(np.abs(y) > TANH_SATURATION))
        elif kind == "sigmoid":
            row["saturated"] = float(
                np.mean((y < SIGMOID_SATURATION) | (y > 1.0 - SIGMOID_SATURATION))
            )
        stats[name] = row
    return stats


# --------------------------------------------------------------------------- diagnostics


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


def diagnose(
    history,
    activation_stats=None,
    *,
    ratio_low=RATIO_TOO_LOW,
    ratio_high=RATIO_TOO_HIGH,
    dead_warn=DEAD_WARN,
    saturated_warn=SATURATED_WARN,
    overfit_gap=OVERFIT_GAP,
    val_loss_rise=VAL_LOSS_RISE,
    underfit_acc=UNDERFIT_ACC,
) -> list[str]:
    """Reads a training history (and optionally activation statistics) like the notes'
    babysitting checklist and explains what looks wrong, in words.

    Checks, with their thresholds:
      * a NaN/inf loss;
      * training loss not decreasing (last epoch's loss >= 99% of the first's);
      * learning rate probably too low / too high: the median over layers of each
        layer's median update/weight ratio is below ``ratio_low`` (1e-4) / above
        ``ratio_high`` (1e-2); the target is about 1e-3;
      * dying ReLUs: a ReLU layer with more than ``dead_warn`` (25%) of its units never
        active over the batch;
      * saturated units: a tanh/sigmoid layer with more than ``saturated_warn`` (25%) of
        its outputs saturated;
      * overfitting: last train accuracy exceeds validation accuracy by more than
        ``overfit_gap`` (0.10), or the last validation loss is more than ``val_loss_rise``
        (20%) above its minimum (over at least 3 epochs);
      * underfitting: train and validation accuracy both below ``underfit_acc`` (0.60).

    Args:
      history: the per-epoch records of ``jnn.train.fit``.
      activation_stats: the output of ``activation_stats`` (optional).

    Returns:
      A list of messages; an empty list means nothing looks wrong.
    """
    messages = []
    history = list(history or [])
    if history:
        bad = [r for r in history if not _finite(r.get("train_loss"))]
        if bad:
            messages.append(
                f"loss became NaN/inf at epoch {bad[0].get('epoch')}: the learning rate is "
                "probably far too high (or the inputs/loss are not numerically safe)"
            )
        else:
            first, last = history[0]["train_loss"], history[-1]["train_loss"]
            if len(history) >= 2 and last >= 0.99 * first:
                messages.append(
                    f"training loss is not decreasing ({first:.4g} -> {last:.4g} over "
                    f"{len(history)} epochs): check the learning rate (too low, or so high "
                    "it bounces) and the data/labels"
                )

        medians = ratio_medians(history)
        overall = _median(list(medians.values()))
        if overall is not None:
            if overall < ratio_low:
                slow = [n for n, m in medians.items() if m < ratio_low]
                messages.append(
                    f"learning rate probably too low: median update/weight ratio {overall:.1e} "
                    f"< {ratio_low:.0e} (target ~1e-3; layers: {', '.join(slow)})"
                )
            elif overall > ratio_high:
                fast = [n for n, m in medians.items() if m > ratio_high]
                messages.append(
                    f"learning rate probably too high: median update/weight ratio "
                    f"{overall:.1e} > {ratio_high:.0e} (target ~1e-3; layers: {', '.join(fast)})"
                )

        val_losses = [(r.get("val_loss"), r.get("epoch")) for r in history]
        val_losses = [(v, e) for v, e in val_losses if _finite(v)]
        if len(val_losses) >= 3:
            best, best_epoch = min(val_losses)
            final = val_losses[-1][0]
            if final > (1.0 + val_loss_rise) * best and best > 0:
                messages.append(
                    f"validation loss rose to {final:.4g}, {final / best - 1:.0%} above its "
                    f"minimum {best:.4g} at epoch {best_epoch} (> {val_loss_rise:.0%}): "
                    "overfitting; stop earlier (--patience) or regularise more"
                )

        train_acc, val_acc = history[-1].get("train_acc"), history[-1].get("val_acc")
        if _finite(train_acc) and _finite(val_acc):
            if train_acc - val_acc > overfit_gap:
                messages.append(
                    f"overfitting: train accuracy {train_acc:.1%} is {train_acc - val_acc:.1%} "
                    f"above validation accuracy {val_acc:.1%} (> {overfit_gap:.0%}): add "
                    "regularisation (L2, dropout), more data, or stop earlier"
                )
            elif train_acc < underfit_acc and val_acc < underfit_acc:
                messages.append(
                    f"underfitting: train accuracy {train_acc:.1%} and validation accuracy "
                    f"{val_acc:.1%} are both below {underfit_acc:.0%}: train longer, use a "
                    "bigger model or tune the learning rate"
                )

    for name, row in (activation_stats or {}).items():
        if row.get("dead", 0.0) > dead_warn:
            messages.append(
                f"dying ReLUs in {name}: {row['dead']:.0%} of units never activate on the "
                f"batch (> {dead_warn:.0%}): lower the learning rate, check the "
                "initialisation/biases, or try LeakyReLU"
            )
        if row.get("saturated", 0.0) > saturated_warn:
            messages.append(
                f"saturated units in {name}: {row['saturated']:.0%} of {row['kind']} outputs "
                f"are saturated (> {saturated_warn:.0%}); their gradients vanish: use "
                "smaller initial weights, normalisation, or ReLU"
            )
    return messages
