"""The ``jnn`` command end to end: help without JAX, a small run and its folder, --resume
(stored options reused, bitwise continuation), bad inputs (exit 2, nothing created), the
NaN guard, early stopping, low precision, ``jnn check``."""

import contextlib
import io
import json
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest

from jnn import cli

SMALL = [
    "--epochs", "2", "--widths", "16", "--batch-size", "64", "--lr", "1e-2",
    "--schedule", "constant", "--no-progress",
]  # fmt: skip
RECORD_KEYS = {
    "epoch", "step", "train_loss", "train_acc", "val_loss", "val_acc", "learning_rate",
    "update_ratio", "grad_norm", "seconds",
}  # fmt: skip


def _run(*args, timeout=300):
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def _train(*argv):
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        rc = cli.main(["train", *argv])
    return rc, printed.getvalue()


def _records(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_help_answers_without_importing_jax():
    proc = _run("-m", "jnn.cli", "--help")
    assert proc.returncode == 0, proc.stderr
    assert "train" in proc.stdout and "check" in proc.stdout
    proc = _run(
        "-c",
        "import sys, jnn.cli; rc = jnn.cli.main(['train', '--help']); "
        "assert rc == 0 and 'jax' not in sys.modules, sorted(m for m in sys.modules if 'jax' in m)",
    )
    assert proc.returncode == 0, proc.stderr
    for flag in ("--optimizer", "--resume", "--ensemble", "--dtype", "--output", "--no-cache"):
        assert flag in proc.stdout


def test_the_jnn_process_tunes_the_collector_and_main_leaves_it_alone(monkeypatch):
    import gc

    from jnn import _process

    calls = []
    monkeypatch.setattr(gc, "set_threshold", lambda *t: calls.append(("threshold", t)))
    monkeypatch.setattr(gc, "freeze", lambda: calls.append(("freeze",)))
    monkeypatch.setattr(cli, "main", lambda argv=None: calls.append(("main",)) or 3)
    with pytest.raises(SystemExit) as exit_:
        cli.run()
    assert exit_.value.code == 3
    assert calls == [("threshold", _process.THRESHOLDS), ("main",), ("freeze",)]
    monkeypatch.undo()
    before = gc.get_threshold()
    assert cli.main(["--help"]) == 0
    assert gc.get_threshold() == before


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "digits"
    rc, text = _train(*SMALL, "--out", str(out))
    return rc, out, text


def test_train_end_to_end_writes_the_run_folder(small_run):
    rc, out, _ = small_run
    assert rc == 0
    config = json.loads((out / "config.json").read_text())
    assert config["widths"] == [16] and config["dataset"] == "digits" and config["epochs"] == 2
    assert config["dropout"] == [0.2] and config["lr"] == [1e-2]
    assert config["init"] == "kaiming_normal"
    records = _records(out)
    assert [r["epoch"] for r in records] == [1, 2]
    assert set(records[0]) >= RECORD_KEYS
    assert set(records[0]["update_ratio"]) == {"dense_0/w", "dense_3/w"}  # dense relu drop dense
    assert records[-1]["learning_rate"] == pytest.approx(1e-2)
    assert (out / "checkpoint").is_dir() and any((out / "checkpoint").iterdir())
    for png in ("loss", "accuracy", "update_ratio", "activations", "first_layer"):
        assert (out / f"{png}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (out / "report.md").read_text()
    assert "## Diagnostics" in report and "![loss](loss.png)" in report
    assert "![first_layer](first_layer.png)" in report
    summary = json.loads((out / "summary.json").read_text())
    assert summary["test_accuracy"] > 0.5  # two epochs of a 16-unit MLP beat chance (10%) by far
    assert f"{100 * summary['test_accuracy']:.2f}%" in report
    assert set(summary["timings"]) >= {"imports", "data", "compile", "train", "evaluate", "write"}
    # The headline's seconds of training are --profile's "train" (the epochs themselves);
    # the rest of the epoch loop is "loop".
    assert summary["timings"]["train"] == summary["train_seconds"] > 0
    assert summary["timings"]["loop"] >= 0
    assert f"{summary['train_seconds']:.1f} s of training" in summary["headline"]


def test_train_writes_tensorboard_event_files(small_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, out, _ = small_run
    acc = EventAccumulator(str(out), size_guidance={"scalars": 0, "images": 0, "histograms": 0})
    acc.Reload()
    records = _records(out)
    for tag, key in (("loss/train", "train_loss"), ("accuracy/val", "val_acc")):
        got = [(e.step, e.value) for e in acc.Scalars(tag)]
        assert got == [(r["epoch"], pytest.approx(r[key])) for r in records]
    assert [e.step for e in acc.Scalars("update_ratio/dense_0/w")] == [1, 2]
    assert [e.step for e in acc.Histograms("weights/dense_0/w")] == [1, 2]
    assert [e.step for e in acc.Histograms("activations/relu_1")] == [1, 2]
    summary = json.loads((out / "summary.json").read_text())
    assert acc.Scalars("test/accuracy")[-1].value == pytest.approx(summary["test_accuracy"])
    for png in ("loss", "accuracy", "update_ratio", "activations", "first_layer"):
        (image,) = acc.Images(f"figures/{png}")
        assert image.encoded_image_string == (out / f"{png}.png").read_bytes()
    assert "_hparams_/session_start_info" in acc.PluginTagToContent("hparams")


def test_no_tensorboard_and_a_missing_writer_write_no_events(tmp_path, monkeypatch):
    rc, text = _train(*SMALL, "--no-plots", "--no-tensorboard", "--out", str(tmp_path / "off"))
    assert rc == 0 and "TensorBoard" not in text
    assert not list((tmp_path / "off").glob("events.out.tfevents.*"))
    monkeypatch.setitem(sys.modules, "tensorboardX", None)  # not installed
    rc, text = _train(*SMALL, "--no-plots", "--out", str(tmp_path / "missing"))
    assert rc == 0 and "test accuracy" in text
    assert text.count("tensorboardX is not installed (pip install tensorboardX)") == 1
    assert not list((tmp_path / "missing").glob("events.out.tfevents.*"))


def test_a_finished_no_plots_run_gets_its_figures_with_resume_plots(tmp_path, capsys):
    out = tmp_path / "run"
    assert _train(*SMALL, "--no-plots", "--no-tensorboard", "--out", str(out))[0] == 0
    assert not list(out.glob("*.png")) and "\r" not in capsys.readouterr().err  # no bar in a log
    records = _records(out)
    rc, text = _train("--out", str(out), "--resume", "--plots", "--no-progress")
    assert rc == 0, text
    assert "resuming after epoch 2" in text and "epoch   2/2" not in text  # not trained again
    assert _records(out) == records
    for png in ("loss", "accuracy", "update_ratio", "activations", "first_layer"):
        assert (out / f"{png}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "![loss](loss.png)" in (out / "report.md").read_text()


def test_a_failed_start_is_retried_by_the_same_command(tmp_path, capsys):
    out = tmp_path / "run"
    argv = [*SMALL, "--no-plots", "--no-tensorboard", "--out", str(out)]
    # What a start that failed before its first checkpoint leaves: its config, no epoch.
    out.mkdir()
    (out / "config.json").write_text(json.dumps({"model": "mlp", "optimizer": "adam",
                                                 "widths": [16], "epochs": 2}))  # fmt: skip
    (out / "checkpoint").mkdir()
    assert cli.main(["train", "--out", str(out), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "has no checkpoint to resume" in err and "without --resume" in err
    assert "--overwrite" not in err
    rc, text = _train(*argv)
    assert rc == 0, text
    assert [r["epoch"] for r in _records(out)] == [1, 2]
    # A finished run is still protected.
    assert cli.main(["train", *argv]) == 2
    assert "already holds a run" in capsys.readouterr().err


def test_an_unknown_option_prints_the_usage_of_jnn_train(capsys):
    assert cli.main(["train", "--widths", "16", "--bogus", "3"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: jnn train ") and "--lr LR" in err
    assert err.strip().endswith("jnn train: error: unrecognized arguments: --bogus 3")
    assert cli.main(["--bogus"]) == 2
    assert capsys.readouterr().err.startswith("usage: jnn [-h]")


@pytest.mark.parametrize(
    ("option", "example"),
    [("--lr", "1e-3,1e-2"), ("--widths", "256,256"), ("--dropout", "0.1,0.3"),
     ("--l2", "0,1e-4"), ("--momentum", "0.9,0.99"), ("--weight-decay", "1e-4,1e-3")],
)  # fmt: skip
def test_a_bad_list_shows_an_example_of_its_own_kind(capsys, option, example):
    assert cli.main(["train", option, "1,,2"]) == 2
    assert f"with no empty entry (like {example}), got '1,,2'" in capsys.readouterr().err


def test_progress_bar_only_on_a_terminal(monkeypatch):
    from jnn.runs import RunConfig
    from jnn.runs._console import show_progress

    class Stream:
        def __init__(self, tty):
            self.tty = tty

        def isatty(self):
            return self.tty

    for tty in (True, False):
        monkeypatch.setattr(sys, "stderr", Stream(tty))
        assert show_progress(RunConfig.from_options()) is tty
        assert show_progress(RunConfig.from_options(progress=False)) is False


def test_train_prints_epoch_lines_diagnostics_and_test_accuracy(small_run):
    _, out, text = small_run
    assert "epoch   1/2" in text and "epoch   2/2" in text
    assert "diagnostics:" in text and "test accuracy" in text and str(out) in text


def test_resume_reuses_the_stored_options_and_matches_the_uninterrupted_run(small_run, tmp_path):
    _, full, _ = small_run
    out = tmp_path / "resumed"
    assert _train(*SMALL, "--epochs", "1", "--no-plots", "--out", str(out))[0] == 0
    # The README's line: only --out and --resume; every other option comes from config.json.
    # --epochs may be raised on a constant schedule.
    rc, text = _train("--out", str(out), "--resume", "--epochs", "2", "--no-progress")
    assert rc == 0, text
    assert "resuming after epoch 1" in text
    records = _records(out)
    assert [r["epoch"] for r in records] == [1, 2]
    for got, ref in zip(records, _records(full), strict=True):
        assert got["train_loss"] == ref["train_loss"] and got["val_acc"] == ref["val_acc"]
    a = json.loads((out / "summary.json").read_text())
    b = json.loads((full / "summary.json").read_text())
    assert a["test_loss"] == b["test_loss"]


def test_resume_refuses_different_options(small_run, tmp_path, capsys):
    _, out, _ = small_run
    assert cli.main(["train", "--widths", "32", "--resume", "--out", str(out)]) == 2
    assert "--widths 16 -> 32" in capsys.readouterr().err
    # a cosine schedule's length depends on --epochs: a longer run would not be a resume
    config = json.loads((out / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "schedule": "cosine"}))
    assert cli.main(["train", "--epochs", "3", "--resume", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--epochs 2 -> 3" in err and "cannot be extended" in err


def _npz(tmp_path, name="data.npz", **changes):
    rng = np.random.default_rng(0)
    arrays = {
        "x_train": rng.normal(size=(60, 5)).astype(np.float32),
        "y_train": np.arange(60) % 3,
        "x_test": rng.normal(size=(20, 5)).astype(np.float32),
        "y_test": np.arange(20) % 3,
    }
    arrays.update(changes)
    arrays = {k: v for k, v in arrays.items() if v is not None}
    path = tmp_path / name
    np.savez(path, **arrays)
    return str(path)


def _with_nan(tmp_path):
    x = np.random.default_rng(1).normal(size=(60, 5)).astype(np.float32)
    x[7, 2] = np.nan
    return ["--data", _npz(tmp_path, x_train=x)]


def _truncated(tmp_path):
    path = pathlib.Path(_npz(tmp_path))
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return ["--data", str(path)]


def _text_file(tmp_path):
    (tmp_path / "notes.npz").write_text("just some text\n")
    return ["--data", str(tmp_path / "notes.npz")]


BAD_INPUTS = [
    (lambda t: ["--dataset", "cifar10"], "invalid choice: 'cifar10'"),
    (lambda t: ["--model", "rnn"], "one of ('mlp', 'cnn') or FILE.py:FUNCTION"),
    (lambda t: ["--widths", "16,0"], "positive integer"),
    (lambda t: ["--widths", "-4"], "positive integer"),
    (lambda t: ["--widths", "a,b"], "positive integer"),
    (lambda t: ["--widths", "64,,128"], "no empty entry"),
    (lambda t: ["--model", "cnn", "--widths", "4,4,4,4"], "impossible shape"),
    (
        lambda t: ["--data", _npz(t), "--model", "cnn"],
        "no spatial layout for a CNN",
    ),
    (lambda t: ["--data", _npz(t, y_test=np.full(20, 3))], r"labels must be in [0, 3)"),
    (lambda t: ["--data", _npz(t, y_train=-np.ones(60, int))], "labels must be >= 0"),
    (
        lambda t: ["--data", _npz(t, y_train=np.where(np.arange(60) == 5, 7, np.arange(60) % 3))],
        "classes 3, 4, 5, 6 have no training example",
    ),
    (lambda t: ["--data", _npz(t, x_val=np.zeros((5, 5), np.float32))], "has x_val but no y_val"),
    (lambda t: ["--data", _npz(t, y_train=np.zeros(50, int))], "x_train has 60 examples but"),
    (_truncated, "cannot read"),
    (_text_file, "cannot read"),
    (_with_nan, "NaN or inf"),
    (lambda t: ["--batch-size", "5000"], "batch_size must be in [1, 1293]"),
    (lambda t: ["--data", _npz(t), "--batch-size", "100"], "batch_size must be in [1, 54]"),
    (lambda t: ["--norm", "batch", "--batch-size", "1"], "BatchNorm"),
    (lambda t: ["--out", str(t / "file.txt" / "run")], "cannot write the output folder"),
    (lambda t: ["--dropout", "1.5"], "value in [0, 1)"),
    (lambda t: ["--lr", "0"], "number > 0"),
    (lambda t: ["--epochs", "3", "--warmup", "3"], "--warmup 3.0 epochs must be in"),
    (lambda t: ["--resume"], "no run to resume"),
    (lambda t: ["--out", str(t)], "already holds a run"),
    (lambda t: ["--weight-decay", "0.1"], "--weight-decay applies to --optimizer adamw"),
    (
        lambda t: ["--data", _npz(t, y_train=(np.arange(60) % 3)[:, None])],
        "y_train has shape (60, 1): class labels must have shape (60,)",
    ),
    (
        lambda t: ["--data", _npz(t, y_train=np.eye(3)[np.arange(60) % 3])],
        "pass np.argmax(y_train, axis=1)",
    ),
    (
        lambda t: [
            "--data",
            _npz(t, y_train=np.where(np.arange(60) == 5, 2**40, np.arange(60) % 3)),
        ],
        "imply 1099511627777 classes",
    ),
    (
        lambda t: [
            "--data",
            _npz(
                t,
                y_train=np.where(np.arange(60) == 5, 2**40, np.arange(60) % 3),
                num_classes=2**40 + 1,
            ),
        ],
        "1,099,511,627,777 outputs",
    ),
    (lambda t: ["--seed", str(2**70)], "--seed must be a 64-bit integer"),
    (lambda t: ["--seed", str(2**63)], "--seed must be a 64-bit integer"),
    (
        lambda t: ["--model", "cnn", "--kernel-size", "9"],
        "--kernel-size 9 is larger than the input",
    ),
    (
        lambda t: ["--ensemble", "100000", "--widths", "4096,4096"],
        "100000 members x",
    ),
    (lambda t: ["--coordinator-timeout", "0"], "number > 0"),
    # No x_val in the file: the messages name the user's y_train, never a y_val it lacks.
    (
        lambda t: ["--data", _npz(t, x_train=np.eye(6, 5, dtype=np.float32), y_train=np.arange(6))],
        "y_train in '{t}/data.npz' has 1 example(s) of class 5, all in its last 1 example(s)",
    ),
    (
        lambda t: ["--data", _npz(t, y_train=np.r_[np.arange(54) % 2, np.full(6, 2)])],
        "has 6 example(s) of class 2, all in its last 6 example(s)",
    ),
    (
        lambda t: ["--data", _npz(t, y_train=np.r_[np.arange(59) % 3, 5], num_classes=3)],
        "labels must be in [0, 3); got 5 in y_train",
    ),
]


@pytest.mark.parametrize(("argv", "message"), BAD_INPUTS)
def test_bad_input_fails_before_training_and_creates_nothing(tmp_path, capsys, argv, message):
    (tmp_path / "file.txt").write_text("not a folder")
    (tmp_path / "config.json").write_text("{}")  # tmp_path itself looks like an old run
    args = argv(tmp_path)
    if "--data" in args and "--batch-size" not in args:
        args += ["--batch-size", "16"]
    if "--out" not in args:
        args += ["--out", str(tmp_path / "run")]
    rc = cli.main(["train", "--no-progress", "--epochs", "1", *args])
    assert rc == 2
    err = capsys.readouterr().err
    assert message.format(t=tmp_path) in err, err
    assert "Traceback" not in err
    out = args[args.index("--out") + 1]
    if out != str(tmp_path):
        assert not pathlib.Path(out).exists()  # no empty run folder left behind


def test_kernel_size_equal_to_the_input_is_accepted():
    from jnn import runs

    config = runs.RunConfig.from_options(model="cnn", widths=(4,), kernel_size=8)
    runs.build_model(config, 10, (8, 8, 1))  # just inside: 8 on 8x8 builds


def test_a_config_json_that_is_not_a_runs_is_named(tmp_path, capsys):
    (tmp_path / "config.json").write_text("[1, 2]")
    assert cli.main(["train", "--resume", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'config.json'} is not a jnn run's config.json" in err
    assert len(err.strip().splitlines()) == 1


def test_a_config_whose_shapes_no_longer_match_the_checkpoint(small_run, tmp_path, capsys):
    import shutil

    _, out, _ = small_run
    run = tmp_path / "run"
    shutil.copytree(out, run)
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "widths": [32]}))
    before = sorted(p.name for p in (run / "checkpoint").iterdir())
    assert cli.main(["train", "--resume", "--out", str(run)]) == 2
    err = capsys.readouterr().err
    assert "do not fit this model" in err and "(16,) float32 saved" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert sorted(p.name for p in (run / "checkpoint").iterdir()) == before  # left in place
    assert not (tmp_path / "run" / "checkpoint.damaged").exists()


def test_resume_refuses_changed_data_and_works_from_another_directory(
    tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    _npz(tmp_path)
    argv = ["train", "--no-progress", "--no-plots", "--epochs", "1", "--batch-size", "16"]
    assert cli.main([*argv, "--data", "data.npz", "--out", "run"]) == 0  # a relative path
    stored = json.loads((tmp_path / "run" / "config.json").read_text())
    assert stored["data"] == str(tmp_path / "data.npz")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert cli.main(["train", "--resume", "--out", str(tmp_path / "run")]) == 0
    rng = np.random.default_rng(5)  # same shapes, other contents
    _npz(tmp_path, x_train=rng.normal(size=(60, 5)).astype(np.float32))
    capsys.readouterr()
    assert cli.main(["train", "--resume", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "changed since the run started" in err and "--allow-changed-data" in err
    resume = ["train", "--resume", "--allow-changed-data", "--out", str(tmp_path / "run")]
    assert cli.main(resume) == 0


def test_no_command_prints_help(capsys):
    assert cli.main([]) == 2
    assert "train" in capsys.readouterr().out


def test_check_runs_sanity_and_gradient_checks(capsys):
    assert cli.main(["check", "--widths", "8", "--examples", "10"]) == 0
    text = capsys.readouterr().out
    for name in ("initial_loss", "regularization", "overfit", "gradients", "dense_0/w"):
        assert name in text
    assert "all checks passed" in text


def test_check_rejects_bad_input_too(capsys):
    assert cli.main(["check", "--batch-size", "100000"]) == 2
    assert "batch_size must be in" in capsys.readouterr().err


def test_nan_guard_stops_names_the_step_and_exits_nonzero(tmp_path, capsys):
    out = tmp_path / "nan"
    argv = ["train", *SMALL, "--optimizer", "sgd", "--lr", "1e3", "--no-plots", "--out", str(out)]
    assert cli.main(argv) == 1
    printed = capsys.readouterr().out
    assert "non-finite loss or parameters at step" in printed
    assert "non-finite loss or parameters at step" in (out / "report.md").read_text()
    assert (out / "config.json").exists() and (out / "metrics.jsonl").exists()


def test_early_stopping_is_announced_on_the_console_and_in_the_report(tmp_path):
    out = tmp_path / "early"
    rc, text = _train(
        "--widths", "16", "--epochs", "40", "--patience", "1", "--lr", "3e-2",
        "--schedule", "constant", "--no-progress", "--no-plots", "--out", str(out),
    )  # fmt: skip
    assert rc == 0
    records = _records(out)
    assert len(records) < 40
    assert "early stopping: no validation improvement for 1 epochs" in text
    assert "early stopping" in (out / "report.md").read_text()


@pytest.mark.parametrize(
    ("dtype", "optimizer"),
    [("bfloat16", "adam"), ("float16", "momentum"), ("float64", "adam"), ("float16", "adam")],
)
def test_low_precision_runs_end_to_end(tmp_path, dtype, optimizer):
    # a subprocess: float64 needs x64, which must not leak into this process
    out = tmp_path / dtype
    proc = _run(
        "-m", "jnn.cli", "train", "--dtype", dtype, "--optimizer", optimizer, "--norm", "batch",
        "--epochs", "6", "--schedule", "constant", "--widths", "32", "--no-progress",
        "--no-plots", "--out", str(out),
    )  # fmt: skip
    summary = json.loads((out / "summary.json").read_text())
    if (dtype, optimizer) == ("float16", "adam"):
        # Adam's second moment of small float16 gradients underflows to 0 and the next update
        # overflows: the run stops at that real step (not "step -1"), keeping the last finite
        # state, and says so.
        assert proc.returncode == 1
        assert "non-finite loss or parameters at step 1 " in proc.stdout
        return
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert summary["test_accuracy"] > 0.8, summary["test_accuracy"]  # chance is 0.1


def test_ensemble_one_is_an_ordinary_run(small_run, tmp_path):
    _, full, _ = small_run
    out = tmp_path / "one"
    assert _train(*SMALL, "--ensemble", "1", "--no-plots", "--out", str(out))[0] == 0
    a = json.loads((out / "summary.json").read_text())
    b = json.loads((full / "summary.json").read_text())
    assert a["test_loss"] == b["test_loss"] and "members" not in a


def test_ensemble_sweep_end_to_end(tmp_path):
    out = tmp_path / "sweep"
    rc, text = _train(
        "--widths", "16", "--epochs", "3", "--batch-size", "64", "--optimizer", "sgd",
        "--schedule", "constant", "--lr", "0.1,1e4", "--ensemble", "2", "--no-progress",
        "--out", str(out),
    )  # fmt: skip
    assert rc == 0, text
    final = text.strip().splitlines()[-1]
    match = re.fullmatch(
        r"ensemble test accuracy (\d+\.\d\d)% \(members: mean (\d+\.\d\d)%, best "
        r"(\d+\.\d\d)%\)",  # the mean is of the healthy members (the line above says so)
        final,
    )
    assert match, final
    ens, mean, best = map(float, match.groups())
    assert ens > 50 and best >= mean  # chance is 10%
    assert "2 member(s) diverged and are excluded from the ensemble" in text
    assert "left out (diverged or near chance): members 2, 3" in text.splitlines()[-2]
    summary = json.loads((out / "summary.json").read_text())
    rows = summary["members"]
    assert [r["lr"] for r in rows] == [0.1, 0.1, 1e4, 1e4] and [r["seed"] for r in rows] == [
        0,
        1,
    ] * 2
    assert [r["diverged"] is None for r in rows] == [True, True, False, False]
    assert summary["test_accuracy"] == pytest.approx(ens / 100, abs=1e-4)
    records = _records(out)
    assert len(records[-1]["members"]) == 4 and records[-1]["alive"] == 2
    report = (out / "report.md").read_text()
    assert "## Members" in report and "step " in report and "![reliability]" in report
    assert (out / "reliability.png").exists()
    # TensorBoard: the ensemble's series, and one run per member with its swept lr.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    for k, row in enumerate(rows):
        acc = EventAccumulator(str(out / f"member_{k}"))
        acc.Reload()
        if row["diverged"] is None:  # a diverged member's losses are NaN: no points
            assert [e.step for e in acc.Scalars("loss/train")] == [1, 2, 3]
        content = acc.PluginTagToContent("hparams")["_hparams_/session_start_info"]
        hp = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
        assert hp["lr"].number_value == pytest.approx(row["lr"])
        assert acc.Scalars("test/accuracy")[-1].value == pytest.approx(row["test_accuracy"])
