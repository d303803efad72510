"""Babysitting figures (matplotlib, Agg; no display needed).

Every figure has a builder returning a ``matplotlib.figure.Figure`` (``loss_figure(history)``,
...) and a writer that builds it, saves it as a PNG at ``path`` and returns the path
(``loss_curve(history, path)``, ...). Figures are built with ``matplotlib.figure.Figure``
directly, so no global pyplot state or interactive backend is touched; every figure uses a
constrained layout (nothing clipped) and per-epoch figures have integer epoch ticks.

Histories are ``jnn.train.fit``'s per-epoch records. An ensemble's record may carry
``"members": [record, ...]`` beside the ensemble-level keys: the loss and accuracy figures
then draw one thin line per member (``member k``) under the ensemble's.
"""

import math
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from matplotlib.transforms import Affine2D

from jnn import _tree, metrics
from jnn.monitor import RATIO_TARGET

__all__ = [
    "accuracy_curve",
    "accuracy_figure",
    "activation_figure",
    "activation_histograms",
    "first_layer",
    "first_layer_figure",
    "first_layer_weights",
    "history_curves",
    "loss_curve",
    "loss_figure",
    "reliability_diagram",
    "reliability_figure",
    "update_ratio_curve",
    "update_ratio_figure",
]


def _save(fig, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=100)
    return path


def _figure(width=6.0, height=4.0) -> Figure:
    return Figure(figsize=(width, height), layout="constrained")


def _legend(ax, **kwargs):
    handles = ax.get_legend_handles_labels()[0]
    if handles:
        ax.legend(ncols=1 + len(handles) // 12, **kwargs)


def _epoch_axis(ax):
    """Whole epochs only on the x axis (no 2.5 epoch ticks)."""
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")


def _series(history, key):
    epochs, values = [], []
    for record in history:
        value = record.get(key)
        if value is not None and math.isfinite(value):
            epochs.append(record["epoch"])
            values.append(value)
    return epochs, values


def _member_histories(history) -> list[list[dict]]:
    """Per member ``k``, its records (with the ensemble record's ``epoch``)."""
    count = max((len(r.get("members") or ()) for r in history), default=0)
    return [
        [
            {**r["members"][k], "epoch": r["epoch"]}
            for r in history
            if len(r.get("members") or ()) > k
        ]
        for k in range(count)
    ]


def _curves(ax, history, series):
    """The ensemble-level (or single-model) lines of ``series`` ``((key, label), ...)`` and one
    thin line per member; the first series is solid, the others dashed."""
    for k, member in enumerate(_member_histories(history)):
        color = f"C{(k + 2) % 10}"
        named = False
        for i, (key, label) in enumerate(series):
            epochs, values = _series(member, key)
            if values:
                ax.plot(
                    epochs,
                    values,
                    color=color,
                    linewidth=0.8,
                    alpha=0.6,
                    linestyle="-" if i == 0 else "--",
                    label="_" if named else f"member {k}",
                    gid=f"member {k}/{label}",
                )
                named = True
    for i, (key, label) in enumerate(series):
        epochs, values = _series(history, key)
        if values:
            ax.plot(epochs, values, color=f"C{i}", marker="o", markersize=3, label=label, gid=label)


_TRAIN_VAL_LOSS = (("train_loss", "train"), ("val_loss", "validation"))
_TRAIN_VAL_ACC = (("train_acc", "train"), ("val_acc", "validation"))


def loss_figure(history) -> Figure:
    """Train (and validation) loss per epoch on a log scale; the loss should fall, ideally
    exponentially (a straight line here). Ensemble members are thin lines."""
    fig = _figure()
    ax = fig.add_subplot()
    _curves(ax, history, _TRAIN_VAL_LOSS)
    if any(v > 0 for v in _series(history, "train_loss")[1]):
        ax.set_yscale("log")
    ax.set(ylabel="loss", title="Loss")
    _epoch_axis(ax)
    ax.grid(True, which="both", alpha=0.3)
    _legend(ax, fontsize="small")
    return fig


def accuracy_figure(history) -> Figure:
    """Train vs validation accuracy per epoch; the gap measures overfitting. Ensemble members
    are thin lines."""
    fig = _figure()
    ax = fig.add_subplot()
    _curves(ax, history, _TRAIN_VAL_ACC)
    ax.set(ylabel="accuracy", title="Accuracy")
    _epoch_axis(ax)
    ax.grid(True, alpha=0.3)
    _legend(ax, fontsize="small")
    return fig


def update_ratio_figure(history, target=RATIO_TARGET) -> Figure:
    """Update/weight ratio ``||dw|| / ||w||`` per layer over the epochs (log scale), with the
    notes' target line at ``target`` (``jnn.monitor.RATIO_TARGET``, 1e-3)."""
    names = []
    for record in history:
        for name in record.get("update_ratio") or {}:
            if name not in names:
                names.append(name)
    fig = _figure()
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
            ax.plot(*zip(*points, strict=True), marker="o", markersize=3, label=name, gid=name)
    ax.axhline(target, color="black", linestyle="--", label=f"target {target:g}", gid="target")
    ax.set_yscale("log")
    ax.set(ylabel="||dw|| / ||w||", title="Update/weight ratio per layer")
    _epoch_axis(ax)
    ax.grid(True, which="both", alpha=0.3)
    _legend(ax, fontsize="small")
    return fig


def activation_figure(stats) -> Figure:
    """One histogram per layer from ``jnn.monitor.activation_stats`` (titles show the mean,
    std and the dead/saturated fraction where it applies)."""
    names = list(stats)
    cols = min(3, max(1, len(names)))
    rows = max(1, math.ceil(len(names) / cols))
    fig = _figure(4 * cols, 2.8 * rows)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, name in zip(axes, names, strict=False):
        row = stats[name]
        ax.stairs(np.asarray(row["hist"]), np.asarray(row["edges"]), fill=True)
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
    return fig


# --------------------------------------------------------------------------- first layer


def _first_weight(params, leaf=None):
    """``(name, array)`` of the first layer's weights: ``leaf``, or the first weight leaf in
    ``jnn._tree.weight_leaves`` order, in jnn's ``(*window, in, out)`` layout
    (``jnn._tree.as_in_out``: an Equinox ``(out, in, *window)`` weight is transposed)."""
    weights = _tree.weight_leaves(params)
    if leaf is not None:
        if leaf not in weights:
            raise ValueError(f"no weight leaf named {leaf!r}; weight leaves: {list(weights)}")
        return leaf, _tree.as_in_out(leaf, weights[leaf])
    if not weights:
        raise ValueError(
            f"params have no weight leaf (a leaf named {' / '.join(_tree.WEIGHT_LEAVES)}) to draw."
        )
    name = next(iter(weights))
    return name, _tree.as_in_out(name, weights[name])


def _dense_tiles(w, image_shape):
    """Dense ``(in, out)`` columns: images of ``image_shape`` (a trailing single channel
    dropped; the first channel of a colour image), lines for 1-D inputs or no shape."""
    if image_shape is None:
        return [w[:, j] for j in range(w.shape[1])], False
    shape = tuple(int(d) for d in image_shape)
    if w.shape[0] != math.prod(shape):
        raise ValueError(
            f"first-layer weights: expected w of shape ({math.prod(shape)}, units) for "
            f"{shape} images, got {w.shape}"
        )
    if len(shape) > 1 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) > 3:
        raise ValueError(f"first-layer weights: cannot draw inputs of shape {shape}")
    columns = [w[:, j].reshape(shape) for j in range(w.shape[1])]
    if len(shape) == 3:
        columns = [c[..., 0] for c in columns]
    return columns, len(shape) > 1


def _tiles(w, image_shape):
    """One tile per output unit and whether tiles are images: Dense ``(in, out)`` columns
    (see :func:`_dense_tiles`), 2-D conv ``(kh, kw, in, out)`` kernels of the first input
    channel (images), 1-D conv ``(k, in, out)`` kernels of the first channel (lines)."""
    if w.ndim == 2:
        return _dense_tiles(w, image_shape)
    if w.ndim == 4:
        return [w[:, :, 0, j] for j in range(w.shape[-1])], True
    if w.ndim == 3:
        return [w[:, 0, j] for j in range(w.shape[-1])], False
    raise ValueError(
        "first-layer weights: expected a Dense (in, out), 1-D conv (k, in, out) or 2-D conv "
        f"(kh, kw, in, out) kernel, got shape {w.shape}"
    )


def _draw_tile(ax, tile, as_image, col, row):
    """Draws ``tile`` into the unit cell ``[col, col+1] x [row, row+1]`` of one shared axes
    (one axes for every tile: 64 axes would cost ~1 s to lay out). An image keeps its pixels
    (an ``AxesImage`` with an extent); a line keeps its data (a ``Line2D`` whose transform
    places it in the cell)."""
    scale = float(np.abs(tile).max()) or 1.0
    x0, y0 = col + 0.05, row + 0.05
    if as_image:
        ax.imshow(
            tile,
            cmap="RdBu_r",
            vmin=-scale,
            vmax=scale,
            interpolation="nearest",
            extent=(x0, x0 + 0.9, y0 + 0.9, y0),
            aspect="auto",
        )
        return
    width = max(len(tile) - 1, 1)
    place = Affine2D().scale(0.9 / width, -0.42 / scale).translate(x0, row + 0.5) + ax.transData
    ax.plot([0, width], [0.0, 0.0], color="0.7", linewidth=0.5, transform=place)
    ax.plot(
        np.arange(len(tile)),
        tile,
        linewidth=1.0,
        marker="o",
        markersize=2,
        color="C0",
        gid="weights",
        transform=place,
    )


def first_layer_figure(params, image_shape=None, max_units=64, leaf=None) -> Figure:
    """The first layer's weights, one small tile per output unit (at most ``max_units``).

    The layer is the first weight leaf of ``params`` in ``jnn._tree.weight_leaves`` order
    (the params' flattening order: ``conv_0/w`` or ``dense_0/w`` of a ``Serial``), or
    ``leaf``. Dense ``(in, out)``: column ``j`` as an ``image_shape`` image (``in =
    prod(image_shape)``; channels-last, e.g. ``(8, 8, 1)`` or ``(8, 8)``; a colour image shows
    its first channel), or as a line over the inputs for 1-D inputs (``(40, 1)``) or without
    ``image_shape``; 2-D conv
    ``(kh, kw, in, out)``: each kernel of the first input channel as a ``kh x kw`` image; 1-D
    conv ``(k, in, out)`` (e.g. the MNIST-1D CNN): each kernel of the first channel as a line
    of ``k`` taps. Smooth, structured filters are a good sign; noise means too little
    training or too little regularisation.

    Args:
      params: a params pytree, or one weight array.
      image_shape: the inputs' layout (``jnn.data.Dataset.image_shape``); used for Dense.
      max_units: most panels drawn.
      leaf: the name of the weight leaf to draw (default: the first).

    Returns:
      The ``Figure``.
    """
    if hasattr(params, "shape"):
        name, w = "w", params
    else:
        name, w = _first_weight(params, leaf)
    tiles, as_image = _tiles(np.asarray(w, dtype=np.float64), image_shape)
    tiles = tiles[:max_units]
    cols = max(1, math.ceil(math.sqrt(len(tiles))))
    rows = max(1, math.ceil(len(tiles) / cols))
    fig = _figure(1.2 * cols, 1.2 * rows + 0.4)
    ax = fig.add_subplot()
    for i, tile in enumerate(tiles):
        _draw_tile(ax, tile, as_image, i % cols, i // cols)
    ax.set(xlim=(0, cols), ylim=(rows, 0))
    ax.set_axis_off()
    fig.suptitle(f"First-layer weights ({name})")
    return fig


# --------------------------------------------------------------------------- calibration


def reliability_figure(probs, labels, bins=15) -> Figure:
    """Reliability diagram: accuracy against confidence per bin, with the diagonal of a
    calibrated model, and below it the number of examples per bin.

    Bins and ECE are :func:`jnn.metrics.calibration_bins` and
    :func:`jnn.metrics.expected_calibration_error` (equal-width bins ``(b/bins, (b+1)/bins]``).

    Args:
      probs: ``(N, C)`` class probabilities.
      labels: ``(N,)`` integer labels.
      bins: number of confidence bins.

    Returns:
      The ``Figure`` (top axes: accuracy bars and the diagonal; bottom axes: count bars).
    """
    stats = metrics.calibration_bins(probs, labels, bins)
    ece = float(metrics.expected_calibration_error(probs, labels, bins))
    edges = np.asarray(stats.edges, np.float64)
    centres, width = 0.5 * (edges[:-1] + edges[1:]), np.diff(edges)
    fig = _figure(5.0, 6.0)
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=(3, 1))
    top.bar(centres, np.asarray(stats.accuracy), width=width, edgecolor="black", label="accuracy")
    top.plot([0.0, 1.0], [0.0, 1.0], color="C1", linestyle="--", label="calibrated", gid="diagonal")
    top.set(xlim=(0.0, 1.0), ylim=(0.0, 1.0), ylabel="accuracy")
    top.set_title(f"Reliability diagram (ECE {ece:.3f}, {bins} bins)")
    top.grid(True, alpha=0.3)
    _legend(top, loc="upper left")
    bottom.bar(centres, np.asarray(stats.count), width=width, color="0.5", edgecolor="black")
    bottom.set(xlabel="confidence (max probability)", ylabel="examples")
    return fig


# --------------------------------------------------------------------------- writers


def loss_curve(history, path) -> Path:
    """Writes :func:`loss_figure` to ``path`` (PNG); returns the path."""
    return _save(loss_figure(history), path)


def accuracy_curve(history, path) -> Path:
    """Writes :func:`accuracy_figure` to ``path`` (PNG); returns the path."""
    return _save(accuracy_figure(history), path)


def update_ratio_curve(history, path, target=RATIO_TARGET) -> Path:
    """Writes :func:`update_ratio_figure` to ``path`` (PNG); returns the path."""
    return _save(update_ratio_figure(history, target), path)


def history_curves(history, directory, accuracy=True) -> dict[str, Path]:
    """Writes the figures drawn from the history alone to ``directory``: ``loss.png``,
    ``update_ratio.png`` and (with ``accuracy``) ``accuracy.png``.

    Returns:
      ``{"loss": path, "update_ratio": path, "accuracy": path}`` (no ``accuracy`` without it).
    """
    directory = Path(directory)
    written = {
        "loss": loss_curve(history, directory / "loss.png"),
        "update_ratio": update_ratio_curve(history, directory / "update_ratio.png"),
    }
    if accuracy:
        written["accuracy"] = accuracy_curve(history, directory / "accuracy.png")
    return written


def activation_histograms(stats, path) -> Path:
    """Writes :func:`activation_figure` to ``path`` (PNG); returns the path."""
    return _save(activation_figure(stats), path)


def first_layer(params, path, image_shape=None, max_units=64, leaf=None) -> Path | None:
    """Writes :func:`first_layer_figure` of a params pytree to ``path`` (PNG); returns the
    path, or ``None`` (nothing written) when ``params`` have no weight leaf."""
    if leaf is None and not _tree.weight_leaves(params):
        return None
    return _save(first_layer_figure(params, image_shape, max_units, leaf), path)


def first_layer_weights(w, path, image_shape=(8, 8), max_units=64) -> Path:
    """First-layer Dense weights ``w`` of shape ``(in, out)``, ``in = prod(image_shape)``, as
    an image grid (column ``j`` is one image); see :func:`first_layer_figure`."""
    w = np.asarray(w)
    if w.ndim != 2:
        raise ValueError(
            f"first_layer_weights expects w of shape ({math.prod(image_shape)}, units) for "
            f"{image_shape} images, got {w.shape}"
        )
    return _save(first_layer_figure(w, image_shape, max_units), path)


def reliability_diagram(probs, labels, path, bins=15) -> Path:
    """Writes :func:`reliability_figure` to ``path`` (PNG); returns the path."""
    return _save(reliability_figure(probs, labels, bins), path)
