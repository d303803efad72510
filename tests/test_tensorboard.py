"""jnn.tensorboard: the event files of ``fit`` / ``ensemble.fit`` read back with TensorBoard's
own reader (one point per epoch for every series, histograms of the real weights and
activations, member runs with their hyperparameters), and training without tensorboardX."""

import logging
import sys

import chex
import jax
import numpy as np
import pytest
from sklearn.datasets import load_digits
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

import jnn.ensemble
import jnn.monitor
import jnn.nn as nn
import jnn.optim
import jnn.train
from jnn import tensorboard as tb
from jnn.losses import softmax_cross_entropy

MODEL = nn.Serial(nn.Dense(8), nn.Relu(), nn.Dense(10))
LAYERS = ("dense_0", "dense_2")


def read(logdir) -> EventAccumulator:
    acc = EventAccumulator(str(logdir), size_guidance={"scalars": 0, "histograms": 0, "images": 0})
    acc.Reload()
    return acc


def session_hparams(acc) -> dict:
    content = acc.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    info = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
    return {k: getattr(v, v.WhichOneof("kind")) for k, v in info.hparams.items()}


def series(acc, tag):
    return [(e.step, e.value) for e in acc.Scalars(tag)]


@pytest.fixture(scope="module")
def digits():
    x, y = load_digits(return_X_y=True)
    x, y = (x / 16.0).astype(np.float32), y.astype(np.int32)
    return (x[:256], y[:256]), (x[256:320], y[256:320])


def scalar_tags(record) -> dict:
    """The record's values under the tags the files must hold (the reference)."""
    pairs = {
        "loss/train": record["train_loss"],
        "loss/val": record["val_loss"],
        "accuracy/train": record["train_acc"],
        "accuracy/val": record["val_acc"],
        "learning_rate": record["learning_rate"],
    }
    for group in ("update_ratio", "grad_norm"):
        pairs.update({f"{group}/{name}": v for name, v in record[group].items()})
    return pairs


def assert_epochs_logged(acc, history):
    for tag in scalar_tags(history[0]):
        got = series(acc, tag)
        assert [s for s, _ in got] == [r["epoch"] for r in history], tag
        want = [scalar_tags(r)[tag] for r in history]
        np.testing.assert_allclose([v for _, v in got], want, rtol=1e-6, err_msg=tag)


def test_fit_writes_every_series_once_per_epoch_and_real_histograms(digits, tmp_path, key):
    train, val = digits
    jnn.monitor._intermediates_program.cache_clear()
    result = jnn.train.fit(
        MODEL, softmax_cross_entropy, jnn.optim.adam(1e-2), train, epochs=2, batch_size=64,
        key=key, val_data=val, progress=False, learning_rate=1e-2, tensorboard_dir=tmp_path,
    )  # fmt: skip
    acc = read(tmp_path)
    assert_epochs_logged(acc, result.history)
    assert {f"update_ratio/{n}/w" for n in LAYERS} <= set(acc.Tags()["scalars"])
    # Weight histograms: one per histogram epoch (here 1 and 2); the last describes the result.
    params = result.state.params
    for layer in LAYERS:
        for leaf in ("w", "b"):
            events = acc.Histograms(f"weights/{layer}/{leaf}")
            assert [e.step for e in events] == [1, 2]
            values, last = np.asarray(params[layer][leaf]), events[-1].histogram_value
            assert last.num == values.size
            assert last.min == pytest.approx(values.min()) and last.max == pytest.approx(
                values.max()
            )
            assert last.sum == pytest.approx(values.sum(), rel=1e-5, abs=1e-5)
    # Activation histograms: the first layer's outputs on the validation inputs (NumPy).
    hidden = val[0] @ np.asarray(params["dense_0"]["w"]) + np.asarray(params["dense_0"]["b"])
    for layer, values in (("dense_0", hidden), ("relu_1", np.maximum(hidden, 0))):
        events = acc.Histograms(f"activations/{layer}")
        assert [e.step for e in events] == [1, 2]
        last = events[-1].histogram_value
        assert last.num == values.size and last.max == pytest.approx(values.max(), rel=1e-5)
        assert last.sum == pytest.approx(values.sum(), rel=1e-4)
    # The run's activation statistics reuse the histograms' compiled program (one compile).
    assert jnn.monitor.intermediates_program(MODEL)._cache_size() == 1
    state = result.state
    on_host = jax.tree.map(np.asarray, (state.params, state.model_state))  # as runs pass them
    stats = jnn.monitor.activation_stats(MODEL, *on_host, val[0])
    assert stats["dense_0"]["mean"] == pytest.approx(hidden.mean(), rel=1e-4)
    assert jnn.monitor.intermediates_program(MODEL)._cache_size() == 1
    assert jnn.monitor._intermediates_program.cache_len() == 1  # one program, not one each


def test_ensemble_writes_its_series_and_one_run_per_member_with_its_hyperparameters(
    digits, tmp_path, key
):
    train, val = digits
    rates = [1e-3, 3e-2]
    result = jnn.ensemble.fit(
        MODEL, softmax_cross_entropy, jnn.optim.adam, train, epochs=4, batch_size=64,
        keys=jax_keys(key, 2), val_data=val, hyperparams={"learning_rate": rates},
        progress=False, tensorboard_dir=tmp_path,
    )  # fmt: skip
    assert_epochs_logged(read(tmp_path), result.history)
    for k in range(2):
        member = read(tb.member_dir(tmp_path, k, 2))
        rows = [{**r["members"][k], "epoch": r["epoch"]} for r in result.history]
        assert_epochs_logged(member, rows)
        # scalars every epoch (epoch 3 too), histograms at the histogram epochs 1, 2, 4
        assert [e.step for e in member.Histograms("weights/dense_0/w")] == [1, 2, 4]
        w = np.asarray(result.state.params["dense_0"]["w"][k])
        assert member.Histograms("weights/dense_0/w")[-1].histogram_value.sum == pytest.approx(
            w.sum(), rel=1e-5, abs=1e-5
        )
        assert [e.step for e in member.Histograms("activations/relu_1")] == [1, 2, 4]
        hp = session_hparams(member)
        assert hp["member"] == k and hp["learning_rate"] == pytest.approx(rates[k])
    # The two members' curves differ (their own series, not the ensemble's twice).
    a, b = (series(read(tb.member_dir(tmp_path, k, 2)), "loss/train") for k in range(2))
    assert a != b


def jax_keys(key, k):
    import jax

    return jax.random.split(key, k)


def test_member_folders_sort_in_member_order(tmp_path):
    assert tb.member_dir(tmp_path, 3, 4).name == "member_3"
    assert tb.member_dir(tmp_path, 3, 11).name == "member_03"
    assert tb.member_dir(tmp_path, 10, 11).name == "member_10"


def test_figures_are_embedded_as_png_images(tmp_path):
    from jnn import plots

    path = plots.loss_curve([{"epoch": 1, "train_loss": 1.0}], tmp_path / "loss.png")
    tb.write_figures(tmp_path, {"loss": path})
    (image,) = read(tmp_path).Images("figures/loss")
    assert image.encoded_image_string == path.read_bytes()
    assert (image.width, image.height) == (600, 400)  # 6x4 inches at 100 dpi
    with pytest.raises(ValueError, match="not a PNG"):
        tb._png_size(b"GIF89a" + bytes(30))


def test_fit_without_tensorboardx_still_trains_and_says_why(
    digits, tmp_path, key, monkeypatch, caplog
):
    monkeypatch.setitem(sys.modules, "tensorboardX", None)  # `import tensorboardX` now fails
    assert tb.unavailable() == (
        "no TensorBoard event files: tensorboardX is not installed (pip install tensorboardX)"
    )
    train, val = digits
    with caplog.at_level(logging.WARNING, logger="jnn"):
        result = jnn.train.fit(
            MODEL, softmax_cross_entropy, jnn.optim.adam(1e-2), train, epochs=1,
            batch_size=64, key=key, val_data=val, progress=False, tensorboard_dir=tmp_path,
        )  # fmt: skip
    assert len(result.history) == 1 and result.stopped is None
    assert [r.getMessage() for r in caplog.records] == [tb.unavailable()]
    assert not list(tmp_path.iterdir())
    chex.assert_tree_all_finite(result.state.params)


def test_histograms_on_a_log_and_decimal_schedule_scalars_every_epoch():
    from jnn.tensorboard import histogram_epoch

    assert [e for e in range(1, 41) if histogram_epoch(e)] == [1, 2, 4, 8, 10, 16, 20, 30, 32, 40]
    assert not histogram_epoch(0)


_IMPORT_WRITER_PROBE = """
import importlib.util, sys
from jnn import tensorboard
tensorboard.import_writer()
assert "tensorboardX" in sys.modules
assert "torch" not in sys.modules, "import_writer imported torch"
if importlib.util.find_spec("torch") is not None:
    import torch  # the blocker is lifted: a later import of torch still works
    torch.zeros(1)
print("ok")
"""


def test_import_writer_leaves_torch_unimported_and_importable_afterwards():
    import subprocess

    done = subprocess.run(
        [sys.executable, "-c", _IMPORT_WRITER_PROBE], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
