"""The ``jnn`` command: help without JAX, a small end-to-end run, --resume, bad inputs."""

import contextlib
import io
import json
import subprocess
import sys

import matplotlib.image
import numpy as np
import pytest

from jnn import cli

SMALL = [
    "--epochs",
    "2",
    "--widths",
    "16",
    "--batch-size",
    "64",
    "--lr",
    "1e-2",
    "--schedule",
    "constant",
    "--no-progress",
]
RECORD_KEYS = {
    "epoch",
    "step",
    "train_loss",
    "train_acc",
    "val_loss",
    "val_acc",
    "learning_rate",
    "update_ratio",
    "grad_norm",
    "seconds",
}


def _run(*args):
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_help_answers_without_importing_jax():
    proc = _run("-m", "jnn.cli", "--help")
    assert proc.returncode == 0, proc.stderr
    assert "train" in proc.stdout and "check" in proc.stdout
    proc = _run("-c", "import jnn.cli, sys; assert 'jax' not in sys.modules, 'jax imported'")
    assert proc.returncode == 0, proc.stderr
    proc = _run(
        "-c",
        "import sys, jnn.cli; rc = jnn.cli.main(['train', '--help']); "
        "assert rc == 0 and 'jax' not in sys.modules",
    )
    assert proc.returncode == 0, proc.stderr
    assert "--optimizer" in proc.stdout and "--resume" in proc.stdout


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "digits"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        rc = cli.main(["train", *SMALL, "--out", str(out)])
    return rc, out, printed.getvalue()


def test_train_end_to_end_writes_the_run_folder(small_run):
    rc, out, _ = small_run
    assert rc == 0
    config = json.loads((out / "config.json").read_text())
    assert config["widths"] == [16] and config["dataset"] == "digits" and config["epochs"] == 2
    assert config["dropout"] == 0.2 and config["lr"] == 1e-2 and config["init"] == "kaiming_normal"
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    assert set(records[0]) >= RECORD_KEYS
    assert set(records[0]["update_ratio"]) == {
        "dense_0/w",
        "dense_3/w",
    }  # dense, relu, dropout, dense
    assert (out / "checkpoint").is_dir() and any((out / "checkpoint").iterdir())
    for png in ("loss", "accuracy", "update_ratio", "activations", "first_layer"):
        data = (out / f"{png}.png").read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    report = (out / "report.md").read_text()
    assert "## Diagnostics" in report and "![loss](loss.png)" in report
    assert "![first_layer](first_layer.png)" in report
    summary = json.loads((out / "summary.json").read_text())
    # two epochs of a 16-unit MLP on digits already beat chance (10%) by far
    assert summary["test_accuracy"] > 0.5
    assert f"{100 * summary['test_accuracy']:.2f}%" in report


def test_train_prints_epoch_lines_diagnostics_and_test_accuracy(small_run):
    _, out, text = small_run
    assert "epoch   1/2" in text and "epoch   2/2" in text
    assert "diagnostics:" in text and "test accuracy" in text and str(out) in text


def test_resume_matches_the_uninterrupted_run(small_run, tmp_path):
    _, full, _ = small_run
    out = tmp_path / "resumed"
    assert cli.main(["train", *SMALL, "--epochs", "1", "--no-plots", "--out", str(out)]) == 0
    assert cli.main(["train", *SMALL, "--no-plots", "--resume", "--out", str(out)]) == 0
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    want = [json.loads(line) for line in (full / "metrics.jsonl").read_text().splitlines()]
    for got, ref in zip(records, want, strict=True):
        assert got["train_loss"] == ref["train_loss"] and got["val_acc"] == ref["val_acc"]
    a = json.loads((out / "summary.json").read_text())
    b = json.loads((full / "summary.json").read_text())
    assert a["test_loss"] == b["test_loss"]


def test_resume_refuses_a_different_configuration(small_run, tmp_path, capsys):
    _, out, _ = small_run
    rc = cli.main(["train", *SMALL, "--widths", "32", "--resume", "--out", str(out)])
    assert rc == 2
    assert "--widths [16] -> [32]" in capsys.readouterr().err
    # a cosine schedule's length depends on --epochs: a longer run would not be a resume
    config = json.loads((out / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "schedule": "cosine"}))
    argv = ["train", *SMALL, "--schedule", "cosine", "--epochs", "3", "--resume"]
    assert cli.main([*argv, "--out", str(tmp_path)]) == 2
    assert "--epochs 2 -> 3" in capsys.readouterr().err


def _npz(tmp_path, **changes):
    rng = np.random.default_rng(0)
    arrays = {
        "x_train": rng.normal(size=(60, 5)).astype(np.float32),
        "y_train": rng.integers(0, 3, 60),
        "x_test": rng.normal(size=(20, 5)).astype(np.float32),
        "y_test": rng.integers(0, 3, 20),
        "num_classes": np.asarray(3),
    }
    arrays.update(changes)
    path = tmp_path / "data.npz"
    np.savez(path, **arrays)
    return str(path)


def _with_nan(tmp_path):
    x = np.random.default_rng(1).normal(size=(60, 5)).astype(np.float32)
    x[7, 2] = np.nan
    return ["--data", _npz(tmp_path, x_train=x)]


BAD_INPUTS = [
    (lambda t: ["--dataset", "cifar10"], "invalid choice: 'cifar10'"),
    (lambda t: ["--model", "rnn"], "invalid choice: 'rnn'"),
    (lambda t: ["--widths", "16,0"], "widths must be positive"),
    (lambda t: ["--widths", "-4"], "widths must be positive"),
    (lambda t: ["--widths", "a,b"], "positive integers"),
    (lambda t: ["--model", "cnn", "--widths", "4,4,4,4"], "impossible shape"),
    (
        lambda t: ["--data", _npz(t, x_train=np.zeros((60, 5), np.float32)), "--model", "cnn"],
        "needs inputs with a spatial layout",
    ),
    (lambda t: ["--data", _npz(t, y_test=np.full(20, 3))], "labels outside [0, 3)"),
    (lambda t: ["--data", _npz(t, y_train=-np.ones(60, int))], "labels outside [0, 3)"),
    (_with_nan, "NaN/inf"),
    (lambda t: ["--batch-size", "5000"], "larger than the training set"),
    (lambda t: ["--data", _npz(t), "--batch-size", "100"], "larger than the training set"),
    (lambda t: ["--out", str(t / "file.txt" / "run")], "cannot write the output folder"),
    (lambda t: ["--dropout", "1.5"], "drop probability"),
    (lambda t: ["--lr", "0"], "number > 0"),
    (lambda t: ["--epochs", "3", "--warmup", "3"], "must be shorter than --epochs"),
    (lambda t: ["--resume"], "no run to resume"),
    (lambda t: ["--out", str(t)], "already holds a run"),
]


@pytest.mark.parametrize(("argv", "message"), BAD_INPUTS)
def test_bad_input_fails_before_training(tmp_path, capsys, argv, message):
    (tmp_path / "file.txt").write_text("not a folder")
    (tmp_path / "config.json").write_text("{}")  # tmp_path itself looks like an old run
    args = argv(tmp_path)
    if "--data" in args and "--batch-size" not in args:
        args += ["--batch-size", "16"]
    if "--out" not in args:
        args += ["--out", str(tmp_path / "run")]
    rc = cli.main(["train", "--no-progress", *args])
    assert rc == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run" / "metrics.jsonl").exists()
    assert not (tmp_path / "run" / "checkpoint").exists()


def test_no_command_prints_help(capsys):
    assert cli.main([]) == 2
    assert "train" in capsys.readouterr().out


def test_cnn_model_shapes():
    config = cli._finish_config(cli.build_parser().parse_args(["train", "--model", "cnn"]))
    model = cli.build_model(config, 10, (40, 1))
    import jax

    params, _ = jax.eval_shape(lambda k: model.init(k, (2, 40, 1)), jax.random.key(0))
    assert params["conv_0"]["w"].shape == (5, 1, 64)
    # 40 -> 20 -> 10 -> 5 after three poolings, 64 channels, 10 classes
    assert params[f"dense_{len(model.layers) - 1}"]["w"].shape == (5 * 64, 10)


def test_cnn_first_layer_kernels_are_plotted(tmp_path, key):
    # the CNN path of the run folder's plots, without paying for a training run
    import jax

    config = cli._finish_config(
        cli.build_parser().parse_args(["train", "--model", "cnn", "--widths", "4,4"])
    )
    model = cli.build_model(config, 10, (8, 8, 1))
    params, state = model.init(key, (2, 8, 8, 1))
    x = jax.random.normal(key, (16, 8, 8, 1))
    from jnn import monitor

    stats = monitor.activation_stats(model, params, state, x)
    history = [
        {
            "epoch": 1,
            "train_loss": 2.0,
            "train_acc": 0.2,
            "val_loss": 2.1,
            "val_acc": 0.2,
            "update_ratio": {"conv_0/w": 1e-3},
        }
    ]
    splits = {"image_shape": (8, 8, 1)}
    written = cli._write_plots(tmp_path, history, stats, params, splits, config)
    assert written["first_layer"] == "first_layer.png"
    image = matplotlib.image.imread(tmp_path / "first_layer.png")
    assert image.shape[0] > 100
    assert set(written) == {"loss", "accuracy", "update_ratio", "activations", "first_layer"}


def test_check_runs_sanity_and_gradient_checks(capsys):
    assert cli.main(["check", "--widths", "8", "--examples", "10"]) == 0
    text = capsys.readouterr().out
    for name in ("initial_loss", "regularization", "overfit", "gradients", "dense_0/w"):
        assert name in text
    assert "all checks passed" in text


def test_check_rejects_bad_input_too(capsys):
    assert cli.main(["check", "--batch-size", "100000"]) == 2
    assert "larger than the training set" in capsys.readouterr().err


def test_nan_guard_stops_names_the_step_and_exits_nonzero(tmp_path, capsys):
    out = tmp_path / "nan"
    argv = ["train", *SMALL, "--optimizer", "sgd", "--lr", "1e3", "--no-plots", "--out", str(out)]
    assert cli.main(argv) == 1
    printed = capsys.readouterr().out
    assert "non-finite loss or parameters at step" in printed
    assert "non-finite loss or parameters at step" in (out / "report.md").read_text()
    assert (out / "config.json").exists() and (out / "metrics.jsonl").exists()
