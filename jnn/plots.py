"""Babysitting figures as PNG files (matplotlib, Agg; no display needed).

Every function draws one figure from a ``jnn.train.fit`` history (or from
``jnn.monitor.activation_stats`` / a weight matrix), writes it to ``path`` and
returns the path. Figures are built with ``matplotlib.figure.Figure`` directly, so
no global pyplot state or interactive backend is touched.
"""

import math
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

RATIO_TARGET = 1e-3


def _save(fig, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=100)
    return path


def _legend(ax, **kwargs):
    if ax.get_legend_handles_labels()[0]:
        ax.legend(**kwargs)


def _series(history, key):
    epochs, values = [], []
    for record in history:
        value = record.get(key)
        if value is not None and math.isfinite(value):
            epochs.append(record["epoch"])
            values.append(value)
    return epochs, values


def loss_curve(history, path) -> Path:
    """Train (and validation) loss per epoch on a log scale; the loss should fall,
    ideally exponentially (a straight line here)."""
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    for key, label in (("train_loss", "train"), ("val_loss", "validation")):
        epochs, values = _series(history, key)
        if values:
            ax.plot(epochs, values, marker="o", markersize=3, label=label)
    if any(v > 0 for v in _series(history, "train_loss")[1]):
        ax.set_yscale("log")
    ax.set(xlabel="epoch", ylabel="loss", title="Loss")
    ax.grid(True, which="both", alpha=0.3)
    _legend(ax)
    return _save(fig, path)


def accuracy_curve(history, path) -> Path:
    """Train vs validation accuracy per epoch; the gap measures overfitting."""
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    for key, label in (("train_acc", "train"), ("val_acc", "validation")):
        epochs, values = _series(history, key)
        if values:
            ax.plot(epochs, values, marker="o", markersize=3, label=label)
    ax.set(xlabel="epoch", ylabel="accuracy", title="Accuracy")
    ax.grid(True, alpha=0.3)
    _legend(ax)
    return _save(fig, path)


def update_ratio_curve(history, path, target=RATIO_TARGET) -> Path:
    """Update/weight ratio ``||dw|| / ||w||`` per layer over the epochs (log scale),
    with the notes' target line at ``target`` (1e-3)."""
    names = []
    for record in history:
        for name in record.get("update_ratio") or {}:
            if name not in names:
                names.append(name)
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    for name in names:
        points = [
            (r["epoch"], r["update_ratio"][name])
            for r in history
            if name in (r.get("update_ratio") or {})
            and math.isfinite(r["update_ratio"][name])
            and r["update_ratio"][name] > 0
        ]
        if points:
            ax.plot(*zip(*points, strict=True), marker="o", markersize=3, label=name)
    ax.axhline(target, color="black", linestyle="--", label=f"target {target:g}")
    ax.set_yscale("log")
    ax.set(xlabel="epoch", ylabel="||dw|| / ||w||", title="Update/weight ratio per layer")
    ax.grid(True, which="both", alpha=0.3)
    _legend(ax, fontsize="small")
    return _save(fig, path)


def activation_histograms(stats, path) -> Path:
    """One histogram per layer from ``jnn.monitor.activation_stats`` (titles show the
    mean, std and the dead/saturated fraction where it applies)."""
    names = list(stats)
    cols = min(3, max(1, len(names)))
    rows = max(1, math.ceil(len(names) / cols))
    fig = Figure(figsize=(4 * cols, 2.8 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, name in zip(axes, names, strict=False):
        row = stats[name]
        edges = np.asarray(row["edges"])
        ax.stairs(np.asarray(row["hist"]), edges, fill=True)
        title = f"{name}\nmean {row['mean']:.2g}, std {row['std']:.2g}"
        if "dead" in row:
            title += f", dead {row['dead']:.0%}"
        if "saturated" in row:
            title += f", saturated {row['saturated']:.0%}"
        ax.set_title(title, fontsize="small")
        ax.tick_params(labelsize="small")
    for ax in axes[len(names) :]:
        ax.set_axis_off()
    fig.suptitle("Activations per layer")
    return _save(fig, path)


def first_layer_weights(w, path, image_shape=(8, 8), max_units=64) -> Path:
    """First-layer weights as an image grid: column ``j`` of ``w`` (shape ``(in, out)``,
    ``in = prod(image_shape)``) is drawn as one image. Smooth, structured filters are a
    good sign; noise means too little training or too little regularisation."""
    w = np.asarray(w, dtype=np.float64)
    if w.ndim != 2 or w.shape[0] != math.prod(image_shape):
        raise ValueError(
            f"first_layer_weights expects w of shape ({math.prod(image_shape)}, units) for "
            f"{image_shape} images, got {w.shape}"
        )
    units = min(w.shape[1], max_units)
    cols = math.ceil(math.sqrt(units))
    rows = math.ceil(units / cols)
    fig = Figure(figsize=(1.2 * cols, 1.2 * rows + 0.4))
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for j, ax in enumerate(axes):
        ax.set_axis_off()
        if j < units:
            img = w[:, j].reshape(image_shape)
            scale = np.abs(img).max() or 1.0
            ax.imshow(img, cmap="RdBu_r", vmin=-scale, vmax=scale, interpolation="nearest")
    fig.suptitle("First-layer weights")
    return _save(fig, path)
