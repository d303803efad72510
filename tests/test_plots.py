"""jnn.plots: every figure is written as a valid, non-trivial PNG."""

import matplotlib.image
import numpy as np
import pytest

from jnn import plots

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
