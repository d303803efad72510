"""jnn.plots: every figure is written as a valid PNG, and each builder's figure shows the data."""

import inspect

import matplotlib.image
import numpy as np
import pytest
from matplotlib.figure import Figure
from matplotlib.layout_engine import ConstrainedLayoutEngine

from jnn import monitor, plots

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _history(n=6):
    return [
        {
            "epoch": i + 1,
            "step": 10 * (i + 1),
            "train_loss": 2.0 * 0.6**i,
            "train_acc": 1 - 0.5 * 0.6**i,
            "val_loss": 2.1 * 0.65**i,
            "val_acc": 1 - 0.55 * 0.65**i,
            "learning_rate": 1e-3,
            "update_ratio": {"dense_0/w": 1e-3 * 0.9**i, "dense_2/w": 3e-3 * 0.8**i},
            "grad_norm": {"dense_0/w": 1.0},
            "seconds": 0.1,
        }
        for i in range(n)
    ]


def _stats():
    rng = np.random.default_rng(0)
    out = {}
    for name, kind in (("dense_0", "dense"), ("relu_1", "relu"), ("tanh_2", "tanh")):
        y = rng.normal(size=1000)
        hist, edges = np.histogram(y, bins=20)
        out[name] = {
            "kind": kind,
            "mean": 0.0,
            "std": 1.0,
            "hist": hist.tolist(),
            "edges": edges.tolist(),
        }
    out["relu_1"]["dead"] = 0.1
    out["tanh_2"]["saturated"] = 0.2
    return out


def _assert_png(path, min_bytes=5000):
    assert path.exists()
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert len(data) > min_bytes
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    # not a blank canvas: some pixels differ from the background
    assert np.ptp(image[..., :3]) > 0.5
    return image


@pytest.mark.parametrize(
    ("fn", "arg"),
    [
        (plots.loss_curve, _history()),
        (plots.accuracy_curve, _history()),
        (plots.update_ratio_curve, _history()),
        (plots.activation_histograms, _stats()),
    ],
)
def test_figures_are_valid_pngs(tmp_path, fn, arg):
    path = fn(arg, tmp_path / "sub" / "figure.png")
    assert path == tmp_path / "sub" / "figure.png"
    _assert_png(path)


def test_plots_tolerate_nan_and_missing_validation(tmp_path):
    history = _history()
    history[-1]["train_loss"] = float("nan")
    for record in history:
        record["val_loss"] = record["val_acc"] = None
    _assert_png(plots.loss_curve(history, tmp_path / "loss.png"))
    _assert_png(plots.accuracy_curve(history, tmp_path / "acc.png"))


def test_first_layer_weights_grid(tmp_path):
    rng = np.random.default_rng(0)
    w = rng.normal(size=(64, 20))
    image = _assert_png(plots.first_layer_weights(w, tmp_path / "w.png"))
    assert image.shape[0] > 100
    with pytest.raises(ValueError, match=r"\(64, units\)"):
        plots.first_layer_weights(rng.normal(size=(40, 5)), tmp_path / "bad.png")


def test_update_ratio_plot_draws_the_target_line(tmp_path):
    # a history whose ratios sit far from 1e-3 still shows the 1e-3 line: the image differs
    # from the same plot with the target line moved
    a = _assert_png(plots.update_ratio_curve(_history(), tmp_path / "a.png"))
    b = _assert_png(plots.update_ratio_curve(_history(), tmp_path / "b.png", target=1e-1))
    assert a.shape == b.shape and not np.array_equal(a, b)


# ----------------------------------------------------------------------------- figure objects


def _line(ax, gid):
    lines = [line for line in ax.get_lines() if line.get_gid() == gid]
    assert len(lines) == 1, [line.get_gid() for line in ax.get_lines()]
    return lines[0]


def _assert_line(ax, gid, xs, ys):
    line = _line(ax, gid)
    np.testing.assert_allclose(line.get_xdata(), xs)
    np.testing.assert_allclose(line.get_ydata(), ys)


def _assert_integer_epochs(fig, ax):
    assert isinstance(fig.get_layout_engine(), ConstrainedLayoutEngine)
    ticks = ax.xaxis.get_major_locator().tick_values(1, 3)  # AutoLocator: 1, 1.25, 1.5, ...
    assert len(ticks) >= 2 and np.all(ticks == np.round(ticks)), ticks


def test_loss_figure_data_scale_and_ticks():
    history = _history()
    fig = plots.loss_figure(history)
    assert isinstance(fig, Figure)
    (ax,) = fig.axes
    assert ax.get_yscale() == "log"
    epochs = [r["epoch"] for r in history]
    _assert_line(ax, "train", epochs, [r["train_loss"] for r in history])
    _assert_line(ax, "validation", epochs, [r["val_loss"] for r in history])
    _assert_integer_epochs(fig, ax)


def test_accuracy_figure_data_and_ticks():
    history = _history()
    fig = plots.accuracy_figure(history)
    (ax,) = fig.axes
    epochs = [r["epoch"] for r in history]
    _assert_line(ax, "train", epochs, [r["train_acc"] for r in history])
    _assert_line(ax, "validation", epochs, [r["val_acc"] for r in history])
    _assert_integer_epochs(fig, ax)


def test_update_ratio_figure_lines_and_a_non_default_target():
    history = _history()
    fig = plots.update_ratio_figure(history, target=0.05)
    (ax,) = fig.axes
    assert ax.get_yscale() == "log"
    epochs = [r["epoch"] for r in history]
    for name in ("dense_0/w", "dense_2/w"):
        _assert_line(ax, name, epochs, [r["update_ratio"][name] for r in history])
    np.testing.assert_allclose(_line(ax, "target").get_ydata(), [0.05, 0.05])
    _assert_integer_epochs(fig, ax)
    # the default target is the monitor's (one home)
    default = plots.update_ratio_figure(history)
    np.testing.assert_allclose(_line(default.axes[0], "target").get_ydata(), monitor.RATIO_TARGET)
    assert "RATIO_TARGET =" not in inspect.getsource(plots)


def _ensemble_history(members=3, n=4):
    rng = np.random.default_rng(0)
    history = _history(n)
    for record in history:
        record["members"] = [
            {
                "train_loss": record["train_loss"] * (1 + 0.1 * rng.random()),
                "val_loss": record["val_loss"] * (1 + 0.1 * rng.random()),
                "train_acc": record["train_acc"] * (1 - 0.05 * rng.random()),
                "val_acc": record["val_acc"] * (1 - 0.05 * rng.random()),
            }
            for _ in range(members)
        ]
    return history


@pytest.mark.parametrize(
    ("figure", "keys"),
    [
        (plots.loss_figure, ("train_loss", "val_loss")),
        (plots.accuracy_figure, ("train_acc", "val_acc")),
    ],
)
def test_ensemble_members_are_thin_lines_beside_the_ensemble(figure, keys):
    history = _ensemble_history()
    (ax,) = figure(history).axes
    epochs = [r["epoch"] for r in history]
    train_key, val_key = keys
    _assert_line(ax, "train", epochs, [r[train_key] for r in history])
    labels = [line.get_label() for line in ax.get_lines()]
    for k in range(3):
        assert labels.count(f"member {k}") == 1
        train = _line(ax, f"member {k}/train")
        assert train.get_label() == f"member {k}"
        assert train.get_linewidth() < _line(ax, "train").get_linewidth()
        np.testing.assert_allclose(train.get_ydata(), [r["members"][k][train_key] for r in history])
        _assert_line(
            ax, f"member {k}/validation", epochs, [r["members"][k][val_key] for r in history]
        )


def test_activation_figure_draws_each_layers_histogram():
    stats = _stats()
    fig = plots.activation_figure(stats)
    drawn = [ax for ax in fig.axes if ax.patches]
    assert [ax.get_title().split("\n")[0] for ax in drawn] == list(stats)
    for ax, row in zip(drawn, stats.values(), strict=True):
        values, edges, _ = ax.patches[0].get_data()
        np.testing.assert_array_equal(values, row["hist"])
        np.testing.assert_allclose(edges, row["edges"])
    assert "dead 10%" in drawn[1].get_title() and "saturated 20%" in drawn[2].get_title()
    assert isinstance(fig.get_layout_engine(), ConstrainedLayoutEngine)


# ----------------------------------------------------------------------------- first layer


def _images(fig):
    return [np.asarray(image.get_array()) for ax in fig.axes for image in ax.images]


def _weight_lines(fig):
    lines = [line for ax in fig.axes for line in ax.get_lines()]
    return [line.get_ydata() for line in lines if line.get_gid() == "weights"]


def test_first_layer_dense_columns_as_images_or_lines():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(64, 5))
    params = {"dense_0": {"w": w, "b": np.zeros(5)}, "dense_2": {"w": rng.normal(size=(5, 3))}}
    images = _images(plots.first_layer_figure(params, image_shape=(8, 8)))
    assert len(images) == 5
    for j, image in enumerate(images):
        np.testing.assert_allclose(image, w[:, j].reshape(8, 8))
    lines = _weight_lines(plots.first_layer_figure(params))  # no image shape: one line per unit
    np.testing.assert_allclose(np.stack(lines, axis=1), w)
    assert len(_images(plots.first_layer_figure(params, (8, 8), max_units=3))) == 3
    second = _weight_lines(plots.first_layer_figure(params, leaf="dense_2/w"))
    assert len(second) == 3
    with pytest.raises(ValueError, match=r"\(49, units\)"):
        plots.first_layer_figure(params, image_shape=(7, 7))
    # a data set's channels-last layout: (8, 8, 1) images, (40, 1) signals drawn as lines
    channels = _images(plots.first_layer_figure(params, image_shape=(8, 8, 1)))
    np.testing.assert_allclose(channels[1], w[:, 1].reshape(8, 8))
    signal = rng.normal(size=(40, 4))
    lines = _weight_lines(plots.first_layer_figure({"dense_0": {"w": signal}}, (40, 1)))
    np.testing.assert_allclose(np.stack(lines, axis=1), signal)


def test_first_layer_conv_kernels():
    rng = np.random.default_rng(1)
    conv2d = rng.normal(size=(3, 3, 2, 4))
    params = {"conv_0": {"w": conv2d, "b": np.zeros(4)}, "dense_3": {"w": np.ones((8, 2))}}
    fig = plots.first_layer_figure(params)
    images = _images(fig)
    assert len(images) == 4 and "conv_0/w" in fig.get_suptitle()
    for j, image in enumerate(images):
        np.testing.assert_allclose(image, conv2d[:, :, 0, j])  # first input channel
    # the MNIST-1D CNN: 1-D kernels (k, in, out) as lines of k taps
    conv1d = rng.normal(size=(5, 1, 6))
    lines = _weight_lines(plots.first_layer_figure({"conv_0": {"w": conv1d}}))
    np.testing.assert_allclose(np.stack(lines, axis=1), conv1d[:, 0, :])
    with pytest.raises(ValueError, match="no weight leaf"):
        plots.first_layer_figure({"batchnorm_0": {"scale": np.ones(3)}})


def test_first_layer_writer(tmp_path):
    params = {"conv_0": {"w": np.random.default_rng(2).normal(size=(5, 1, 8))}}
    _assert_png(plots.first_layer(params, tmp_path / "first.png"), min_bytes=2000)
    # nothing to draw: no file, None
    assert plots.first_layer({"batchnorm_0": {"scale": np.ones(3)}}, tmp_path / "no.png") is None
    assert not (tmp_path / "no.png").exists()


# ----------------------------------------------------------------------------- reliability


def _np_bins(probs, labels, bins):
    """NumPy reference: per bin (b/bins, (b+1)/bins] the count, mean confidence, accuracy."""
    conf, correct = probs.max(1), probs.argmax(1) == labels
    edges = np.linspace(0, 1, bins + 1)
    inside = [(conf > a) & (conf <= b) for a, b in zip(edges[:-1], edges[1:], strict=True)]
    count = np.array([m.sum() for m in inside])
    mean_conf = np.array([conf[m].mean() if m.any() else 0.0 for m in inside])
    acc = np.array([correct[m].mean() if m.any() else 0.0 for m in inside])
    return edges, count, mean_conf, acc


def test_reliability_figure_bars_are_the_bins(tmp_path):
    rng = np.random.default_rng(3)
    logits = 2.0 * rng.normal(size=(300, 4))
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    labels = rng.integers(0, 4, 300).astype(np.int32)
    edges, count, mean_conf, acc = _np_bins(probs, labels, 10)
    fig = plots.reliability_figure(probs.astype(np.float32), labels, bins=10)
    top, bottom = fig.axes
    np.testing.assert_allclose([b.get_height() for b in top.containers[0]], acc, atol=1e-6)
    np.testing.assert_array_equal([b.get_height() for b in bottom.containers[0]], count)
    centres = [b.get_x() + b.get_width() / 2 for b in top.containers[0]]
    np.testing.assert_allclose(centres, (edges[:-1] + edges[1:]) / 2, atol=1e-6)
    diagonal = _line(top, "diagonal")
    np.testing.assert_allclose(diagonal.get_xdata(), [0, 1])
    np.testing.assert_allclose(diagonal.get_ydata(), [0, 1])
    ece = np.sum(count / len(labels) * np.abs(acc - mean_conf))
    assert f"ECE {ece:.3f}" in top.get_title()
    assert isinstance(fig.get_layout_engine(), ConstrainedLayoutEngine)
    _assert_png(plots.reliability_diagram(probs, labels, tmp_path / "rel.png", bins=10))
