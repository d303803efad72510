"""jnn.runs: the library behind ``jnn train`` — RunConfig (defaults, checks, sweeps, resume
rules), the builders (model, schedule, optimizer, data), the run folder, and train_run from
Python."""

import dataclasses
import json
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jnn import runs
from jnn.runs import RunConfig


def test_defaults_are_filled_by_model_and_optimizer():
    mlp = RunConfig.from_options()
    assert mlp.widths == (256, 256) and mlp.epochs == 30 and mlp.batch_size == 128
    assert mlp.lr == (3e-3,) and mlp.dropout == (0.2,) and mlp.init == "kaiming_normal"
    assert mlp.momentum == (0.9,)  # adam's b1
    cnn = RunConfig.from_options(model="cnn", optimizer="sgd", activation="tanh")
    assert cnn.widths == (64, 64, 64) and cnn.epochs == 20 and cnn.batch_size == 64
    assert cnn.lr == (0.1,) and cnn.dropout == (0.3,) and cnn.momentum is None
    assert cnn.init == "xavier_normal"
    assert RunConfig.from_options(activation="selu").init == "lecun_normal"
    assert RunConfig.from_options(optimizer="adamw").weight_decay == (1e-4,)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"model": "rnn"}, "--model must be one of"),
        ({"widths": (8, 0)}, "--widths must be positive"),
        ({"lr": (0.0,)}, "--lr values must be in (0"),
        ({"dropout": (1.0,)}, "--dropout values must be in [0, 1)"),
        ({"epochs": 0}, "--epochs must be a positive integer"),
        ({"warmup": 30.0}, "--warmup 30.0 epochs must be in [0, --epochs 30)"),
        ({"momentum": (0.9,), "optimizer": "sgd"}, "--momentum does not apply"),
        ({"weight_decay": (0.1,)}, "--weight-decay applies to --optimizer adamw"),
        ({"snapshots": 4, "epochs": 30}, "--snapshots 4 must divide --epochs 30"),
        ({"ema": 1.0}, "--ema decay must be in (0, 1)"),
        ({"norm": "batch", "batch_size": 1}, "--norm batch needs --batch-size >= 2"),
        ({"colour": "red"}, "unknown run options"),
    ],
)
def test_bad_options_are_named(options, message):
    with pytest.raises(ValueError, match=None) as err:
        RunConfig.from_options(**options)
    assert message in str(err.value)


def test_members_are_the_grid_of_sweeps_times_seeds():
    config = RunConfig.from_options(lr=(1e-3, 1e-2), l2=(0.0, 1e-4), ensemble=2)
    assert config.sweep == {"lr": (1e-3, 1e-2), "l2": (0.0, 1e-4)}
    members = config.members()
    assert config.num_members == len(members) == 8
    assert [m["seed"] for m in members] == [0, 1] * 4
    assert {(m["lr"], m["l2"]) for m in members} == {
        (a, b) for a in (1e-3, 1e-2) for b in (0, 1e-4)
    }
    assert RunConfig.from_options().num_members == 1


def test_json_round_trip_and_resume_rules():
    stored = RunConfig.from_options(lr=(1e-2,), schedule="constant", epochs=5, out="x")
    assert RunConfig.from_json(json.loads(json.dumps(stored.to_json()))) == stored
    assert stored.resumed({}) == stored
    longer = stored.resumed({"epochs": 8, "progress": False})  # constant: may be extended
    assert longer.epochs == 8 and not longer.progress
    with pytest.raises(ValueError, match="only be raised"):
        stored.resumed({"epochs": 3})
    with pytest.raises(ValueError, match=r"--lr 0\.01 -> 0\.1"):
        stored.resumed({"lr": (0.1,)})
    cosine = dataclasses.replace(stored, schedule="cosine")
    with pytest.raises(ValueError, match="cannot be extended"):
        cosine.resumed({"epochs": 8})


def test_cnn_model_shapes():
    config = RunConfig.from_options(model="cnn")
    model = runs.build_model(config, 10, (40, 1))
    params, _ = jax.eval_shape(lambda k: model.init(k, (2, 40, 1)), jax.random.key(0))
    assert params["conv_0"]["w"].shape == (5, 1, 64)
    # 40 -> 20 -> 10 -> 5 after three poolings, 64 channels, 10 classes
    assert params[f"dense_{len(model.layers) - 1}"]["w"].shape == (5 * 64, 10)
    with pytest.raises(ValueError, match="impossible shape"):
        runs.build_model(RunConfig.from_options(model="cnn", widths=(4,) * 4), 10, (8, 8, 1))


def test_schedules_follow_their_closed_forms():
    spe, lr = 10, 0.1
    config = RunConfig.from_options(epochs=4, lr=(lr,), schedule="cosine")
    sched = runs.build_schedule(config, spe)
    for t in (0, 7, 20, 39):
        want = lr * (1 + math.cos(math.pi * t / 40)) / 2
        assert float(sched(t)) == pytest.approx(want, rel=1e-5, abs=1e-8)

    warm = runs.build_schedule(dataclasses.replace(config, warmup=1.0), spe)
    assert float(warm(5)) == pytest.approx(lr * 5 / 10)
    assert float(warm(25)) == pytest.approx(lr * 0.5 * (1 + math.cos(math.pi * 15 / 30)), 1e-5)
    step = runs.build_schedule(dataclasses.replace(config, schedule="step"), spe)
    assert [float(step(t)) for t in (19, 20, 30)] == pytest.approx([lr, lr * 0.1, lr * 0.01])
    snaps = runs.build_schedule(dataclasses.replace(config, snapshots=2), spe)
    assert float(snaps(19)) < 0.01 * lr and float(snaps(20)) == pytest.approx(lr)  # restart


@pytest.mark.parametrize(
    "name", ["sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamw", "nadam"]
)
def test_build_optimizer_matches_the_optax_optimizer(name):
    config = RunConfig.from_options(optimizer=name, lr=(0.01,), schedule="constant", epochs=2)
    opt, _ = runs.build_optimizer(config, 5)
    ref = {
        "sgd": lambda: optax.sgd(0.01),
        "momentum": lambda: optax.sgd(0.01, momentum=0.9),
        "nesterov": lambda: optax.sgd(0.01, momentum=0.9, nesterov=True),
        "adagrad": lambda: optax.adagrad(0.01),
        "rmsprop": lambda: optax.rmsprop(0.01),
        "adam": lambda: optax.adam(0.01),
        "adamw": lambda: optax.adamw(0.01, weight_decay=1e-4),
        "nadam": lambda: optax.nadam(0.01),
    }[name]()
    params = {"w": jnp.linspace(-1.0, 1.0, 6, dtype=jnp.float32)}
    grads = {"w": jnp.cos(params["w"])}
    with jax.numpy_dtype_promotion("standard"):
        got, _ = opt.update(grads, opt.init(params), params)
        want, _ = ref.update(grads, ref.init(params), params)
    np.testing.assert_allclose(got["w"], want["w"], rtol=1e-6)


def test_build_optimizer_takes_per_member_values_under_vmap():
    config = RunConfig.from_options(optimizer="momentum", schedule="cosine", epochs=2)
    params = {"w": jnp.ones(3)}

    def one(lr, momentum):
        opt, _ = runs.build_optimizer(config, 5, {"lr": lr, "momentum": momentum})
        return opt.update({"w": jnp.ones(3)}, opt.init(params), params)[0]["w"]

    got = jax.vmap(one)(jnp.asarray([0.1, 0.2]), jnp.asarray([0.5, 0.9]))
    np.testing.assert_allclose(got[:, 0], [-0.1, -0.2], rtol=1e-6)  # step 0: -lr * g


def test_run_folder_writes_and_rewrites(tmp_path):
    folder = runs.RunFolder(tmp_path / "a" / "b")
    folder.check_writable()
    assert not (tmp_path / "a").exists()  # checking creates nothing
    folder.create()
    for epoch in (1, 2, 3):
        folder.append_metrics({"epoch": epoch, "loss": float("nan")})
    assert [r["epoch"] for r in folder.read_metrics()] == [1, 2, 3]
    assert folder.read_metrics()[0]["loss"] is None  # NaN -> null
    folder.write_metrics([{"epoch": 1}, {"epoch": 2}])
    assert [r["epoch"] for r in folder.read_metrics()] == [1, 2]
    (tmp_path / "file").write_text("x")
    with pytest.raises(OSError, match="cannot write the output folder"):
        runs.RunFolder(tmp_path / "file" / "run").check_writable()


def test_cnn_first_layer_kernels_are_plotted(tmp_path, key):
    import matplotlib.image

    from jnn import monitor

    config = RunConfig.from_options(model="cnn", widths=(4, 4))
    for shape in ((8, 8, 1), (40, 1)):
        model = runs.build_model(config, 10, shape)
        params, state = model.init(key, (2, *shape))
        stats = monitor.activation_stats(model, params, state, jax.random.normal(key, (16, *shape)))
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
        folder = runs.RunFolder(tmp_path / str(len(shape)))
        folder.create()
        written = folder.write_plots(history, stats, params, shape)
        assert set(written) == {"loss", "accuracy", "update_ratio", "activations", "first_layer"}
        image = matplotlib.image.imread(folder.path / "first_layer.png")
        assert image.shape[0] > 100


def test_train_run_from_python(tmp_path):
    config = RunConfig.from_options(
        widths=(16,),
        epochs=2,
        batch_size=64,
        lr=(1e-2,),
        schedule="constant",
        out=str(tmp_path / "run"),
        progress=False,
        plots=False,
    )
    lines = []
    outcome = runs.train_run(config, echo=lines.append)
    assert outcome.exit_code == 0 and outcome.folder == tmp_path / "run"
    assert outcome.summary["test_accuracy"] > 0.5
    assert lines[-1].startswith("test accuracy")
    with pytest.raises(ValueError, match="already holds a run"):
        runs.train_run(config, echo=lines.append)


def test_sweep_members_near_chance_are_named_and_left_out_of_the_headline():
    from jnn.runs import RunConfig
    from jnn.runs._ensemble_job import member_verdicts, near_chance

    assert near_chance(0.1899, 10) and not near_chance(0.1901, 10)  # 1/C + 0.1 (1 - 1/C)
    config = RunConfig.from_options(lr=(1e-3, 3.0, 1e-2))
    rows = [
        {"member": 0, "lr": 1e-3, "test_accuracy": 0.95, "diverged": None},
        {"member": 1, "lr": 3.0, "test_accuracy": 0.17, "diverged": None},
        {"member": 2, "lr": 1e-2, "test_accuracy": 0.93, "diverged": None},
    ]
    healthy, lines = member_verdicts(config, rows, 10)
    assert [r["member"] for r in healthy] == [0, 2]
    assert lines and "member 1 (lr 3) at 17.0%" in lines[0]


def test_a_float16_stop_names_float16_underflow():
    from jnn.runs._summary import non_finite_cause

    assert "float16 underflow" in non_finite_cause("float16")
    assert "learning rate" in non_finite_cause("float32")


def test_a_data_file_run_records_its_source_not_a_builtin_dataset():
    config = RunConfig.from_options(data="my.npz")
    stored = config.to_json()
    assert stored["dataset"] is None and stored["data"] == str(Path("my.npz").resolve())
    assert RunConfig.from_json(config.to_json()) == config
    # a folder written before this rule stored the unused default
    assert RunConfig.from_json({**config.to_json(), "dataset": "digits"}) == config
    with pytest.raises(ValueError, match="name two data sources; give one"):
        RunConfig.from_options(data="my.npz", dataset="mnist1d")
    assert runs._job.default_out(config).startswith("runs/my-mlp-")
    assert RunConfig.from_options().dataset == "digits"


_HISTORY = [
    {"epoch": e, "step": 10 * e, "train_loss": 1.0 / e, "train_acc": 0.5, "val_loss": 1.1 / e}
    for e in (1, 2, 3)
]


def test_the_figure_process_draws_in_another_process_and_falls_back_when_gone(tmp_path):
    import os
    import signal

    from jnn.runs import _overlap

    figures = _overlap.FigureProcess.start()
    assert figures is not None
    try:
        drawn = figures.call("history_curves", _HISTORY, tmp_path / "a", False)()
        assert set(drawn) == {"loss", "update_ratio"}
        assert all(Path(p).stat().st_size > 0 for p in drawn.values())
        assert figures._process.pid != os.getpid()
        blocker = tmp_path / "blocker"
        blocker.write_text("a file where a folder should be")
        with pytest.raises(RuntimeError, match="history_curves failed in the figure process"):
            figures.call("history_curves", _HISTORY, blocker / "sub", False)()
        folder = runs.RunFolder(tmp_path / "run")
        folder.create()
        config = RunConfig.from_options()
        os.kill(figures._process.pid, signal.SIGSTOP)  # the job is sent, never answered
        plots = _overlap.HistoryPlots(config, folder, _HISTORY, accuracy=False, figures=figures)
        figures._process.kill()
        figures._process.wait(10)
        assert set(plots.result()) == {"loss", "update_ratio"}  # drawn here instead
        assert (tmp_path / "run" / "loss.png").stat().st_size > 0
        plots = _overlap.HistoryPlots(config, folder, _HISTORY, accuracy=True, figures=figures)
        assert set(plots.result()) == {"loss", "update_ratio", "accuracy"}  # gone before: here
        assert (tmp_path / "run" / "accuracy.png").stat().st_size > 0
    finally:
        figures.close()


def test_the_figure_process_ends_with_the_run_however_it_ends():
    import os
    import subprocess
    import sys
    import time

    probe = (
        "import os, sys\n"
        "from jnn.runs import _overlap\n"
        "figures = _overlap.FigureProcess.start()\n"
        "print(figures._process.pid, flush=True)\n"
        "os._exit(0)  # no close(), no atexit: as if killed\n"
    )
    # Popen, not run(): the figure process shares the probe's stdout, and must not be waited
    # for through it.
    probe = subprocess.Popen([sys.executable, "-c", probe], stdout=subprocess.PIPE, text=True)
    pid = int(probe.stdout.readline())
    assert probe.wait(timeout=120) == 0
    probe.stdout.close()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        with open(f"/proc/{pid}/stat") as f:  # a zombie (reaped by init later) has ended too
            if f.read().split()[2] == "Z":
                return
        time.sleep(0.2)
    raise AssertionError(f"the figure process {pid} outlived its run")


def test_a_script_without_a_main_guard_runs_once_and_gets_its_figures(tmp_path):
    import os
    import subprocess
    import sys

    script = tmp_path / "train.py"  # no `if __name__ == "__main__"`, as many scripts are
    script.write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(Path(runs.__file__).parents[2])!r})  # jnn, not via PYTHONPATH\n"
        "from jnn import runs\n"
        "config = runs.RunConfig.from_options(widths=(8,), epochs=2, batch_size=128,\n"
        f"    out={str(tmp_path / 'run')!r}, progress=False, tensorboard=False)\n"
        "runs.train_run(config)\n"
        "print('RAN', flush=True)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("RAN") == 1 and "Traceback" not in done.stderr, done.stderr
    for name in ("loss", "accuracy", "update_ratio", "activations", "first_layer"):
        assert (tmp_path / "run" / f"{name}.png").stat().st_size > 0
