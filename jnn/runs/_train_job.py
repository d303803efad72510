"""The body of :func:`jnn.runs.train_run`: train, evaluate, diagnose, write the folder."""

from __future__ import annotations

from typing import Any, NamedTuple

from jnn.runs import _builders, _events, _overlap, _preprocess, _tasks
from jnn.runs._config import RunConfig
from jnn.runs._folder import RunFolder
from jnn.runs._user_model import is_user_model

__all__ = ["run"]

ACTIVATION_SAMPLE = 512  # validation examples used for the activation statistics


class Setup(NamedTuple):
    """What a run trains: data, model, loss and the steps per epoch."""

    ds: Any
    model: Any
    loss: Any
    steps_per_epoch: int
    tree: Any = None
    mesh: Any = None
    task: Any = None  # a jnn.runs._tasks.Task (None: classes)
    preprocess: Any = None  # the fitted --preprocess statistics
    dtype: str = "float32"
    note: str | None = None


def join_processes(config: RunConfig) -> None:
    """Joins a multi-process run (``--coordinator``/``--num-processes``/``--process-id`` or
    ``JNN_*``) before anything else touches JAX; nothing to do for a single process, and
    nothing the second time."""
    import os

    import jnn.distributed as dist

    options = (config.coordinator, config.num_processes, config.process_id)
    if any(v is not None for v in options) or os.environ.get(dist.ENV["coordinator"]):
        dist.initialize(*options, timeout=config.coordinator_timeout)


def _imports(config: RunConfig, clock) -> None:
    """Joins a multi-process run if asked, then imports JAX (with the compilation cache on
    unless ``--no-cache``) and jnn's modules."""

    join_processes(config)
    if config.cache:
        import jnn.cache

        jnn.cache.enable_compilation_cache()
    import jnn.monitor  # noqa: F401
    import jnn.train  # noqa: F401

    clock.lap("imports")


def _data_note(ds, seconds: float) -> str | None:
    """``checked 3.0 GiB of mapped data in 4.1 s ...`` for a ``--data DIR`` run, else None."""
    from jnn.data._npy_dir import mapped_bytes

    size = mapped_bytes(ds)
    if not size:
        return None
    return (
        f"checked {size / 2**30:.2f} GiB of memory-mapped data in {seconds:.1f} s (labels, "
        "NaN/inf, shapes; slice by slice); training streams it from the files"
    )


def _setup(config: RunConfig, clock, folder=None, resume=False) -> Setup:
    import time

    t0 = time.perf_counter()
    ds = _builders.load_run_data(config)
    note = _data_note(ds, time.perf_counter() - t0)
    ds, stats = _preprocess.prepare(config, ds, folder, resume)
    ds, task = _tasks.prepare(config, ds)
    tree = None
    if config.output == "hsoftmax":
        tree = _builders.build_tree(config, ds.y_train, ds.num_classes)
    model = _builders.build_model(config, ds.num_classes, ds.input_shape, tree=tree)
    _builders.check_memory(config, model, ds.input_shape)
    mesh = _mesh(config)
    clock.lap("data")
    loss = _builders.build_loss(config, "classes" if task.is_classes else task.kind)
    steps = len(ds.x_train) // config.batch_size
    return Setup(ds, model, loss, steps, tree, mesh, task, stats, config.dtype, note)


def _mesh(config: RunConfig):
    """The data-parallel mesh of ``--devices N`` (the first N local devices of each process;
    default all), checked against the batch size before any folder is written."""
    import jnn.train
    from jnn.train import _sharding

    mesh = jnn.train.make_mesh(config.devices)
    _sharding.as_layout(mesh).check(config.batch_size)
    return mesh


def mesh_label(mesh) -> str:
    """``"mesh data=8"`` (and the number of processes when there are several)."""
    import jax

    from jnn.train import _sharding

    label = f"mesh {_sharding.as_layout(mesh).describe()}"
    return label + (f" ({jax.process_count()} processes)" if jax.process_count() > 1 else "")


def _model_label(config: RunConfig) -> str:
    """``mlp [128, 64]`` for a built-in model; a user model's spec (``FILE.py:FUNCTION``)."""
    if is_user_model(config.model):
        return config.model
    return f"{config.model} {list(config.widths)}"


def _header(config: RunConfig, setup: Setup, folder: RunFolder) -> str:
    ds = setup.ds
    members = f", {config.num_members} members" if config.num_members > 1 else ""
    lr = ",".join(f"{v:g}" for v in config.lr)
    return (
        f"jnn train: {_model_label(config)} on {config.data or config.dataset} "
        f"({len(ds.x_train)} train / {len(ds.x_val)} val / {len(ds.x_test)} test, "
        f"{setup.task.describe()}), {config.optimizer} lr {lr} {config.schedule}, "
        f"{config.epochs} epochs of {setup.steps_per_epoch} steps{members} -> {folder.path}"
    )


def _callbacks(config, folder, echo, mesh=None):
    """``on_start`` (rewrite metrics.jsonl to the resumed history) and ``on_epoch`` (the
    epoch line ends with the mesh)."""
    from jnn.runs._job import format_epoch

    above_bar = show_progress(config)

    def on_start(history):
        folder.write_metrics(history)
        if history:
            echo(f"resuming after epoch {history[-1]['epoch']} (from the checkpoint)")

    def on_epoch(record, line=None):
        folder.append_metrics(record)
        line = line or format_epoch(record, config.epochs)
        line = line if mesh is None else f"{line}  {mesh_label(mesh)}"
        echo(line) if not above_bar else _above_bar(echo, line)

    return on_start, on_epoch


def _above_bar(echo, line):
    from jnn.runs._job import echo_line

    if echo is echo_line:
        echo_line(line, above_bar=True)
    else:
        echo(line)


def show_progress(config: RunConfig) -> bool:
    """The progress bar only on a terminal: in a log (stderr redirected) its ``\\r`` frames
    would be noise, and the line per epoch says it all."""
    import sys

    return config.progress and sys.stderr.isatty()


def loop_options(config: RunConfig, setup: Setup, folder: RunFolder, resume, on_start) -> dict:
    """The epoch loop's keywords every run passes to ``fit``: checkpoints in the run folder,
    resume, early stopping, progress, the mesh."""
    return dict(
        checkpoint_dir=folder.checkpoint_dir,
        checkpoint_every=config.checkpoint_every,
        checkpoint_seconds=config.checkpoint_seconds,
        resume=resume,
        patience=config.patience,
        progress=show_progress(config),
        on_start=on_start,
        mesh=setup.mesh,
    )


def _fit_single(config: RunConfig, setup: Setup, folder: RunFolder, resume, echo):

    import jax
    import jax.numpy as jnp

    import jnn.train

    optimizer, schedule = _builders.build_optimizer(config, setup.steps_per_epoch)
    on_start, on_epoch = _callbacks(config, folder, echo, setup.mesh)
    result = jnn.train.fit(
        setup.model,
        setup.loss,
        optimizer,
        (setup.ds.x_train, setup.ds.y_train),
        epochs=config.epochs,
        batch_size=config.batch_size,
        key=jax.random.key(config.seed),
        val_data=(setup.ds.x_val, setup.ds.y_val),
        dtype=jnp.dtype(config.dtype),
        step_options=_step_options(config, schedule),
        learning_rate=schedule,
        on_epoch=on_epoch,
        tensorboard_dir=_events.tensorboard_dir(config, folder),
        **loop_options(config, setup, folder, resume, on_start),
    )

    return result._replace(state=on_host(result.state))


def _step_options(config: RunConfig, schedule):
    """``fit``'s step options: the L2 strength; for ``--output hsoftmax`` without L2 the
    sparse head step (lazy Adam for the Adam family, with its b1; SGD otherwise)."""
    l2 = config.l2[0]
    penalties = {"l2": l2, "l1": config.l1[0], "max_norm": config.max_norm}
    penalties = {k: v for k, v in penalties.items() if v}
    if config.output == "hsoftmax" and not penalties:
        if config.optimizer in ("adam", "adamw", "nadam"):
            head = {"head_update": "lazy_adam", "learning_rate": schedule, "b1": config.momentum[0]}
        else:
            head = {"head_update": "sgd", "learning_rate": schedule}
        return {"sparse_head": head}
    return penalties or None


def on_host(tree):
    """A trained state as host arrays, so that evaluation, statistics and plots run on one
    device in each process (and never as a collective only process 0 would enter)."""
    from jnn.train import _sharding

    return None if tree is None else _sharding.host(tree)


def _ended(stopped, message) -> str | None:
    if stopped == "early_stopping":
        return f"early stopping: {message}"
    if stopped == "non_finite":
        return f"stopped on a NaN/inf: {message}"
    return None


def _diagnostics(setup, history, stats, stopped, message, params=None):
    import jnn.monitor

    diagnostics = jnn.monitor.diagnose(
        history, stats, inputs=_scale_sample(setup.ds.x_train), params=params
    )
    if stopped == "non_finite":
        diagnostics.insert(0, f"training stopped: {message}; {_non_finite_cause(setup.dtype)}")
    return diagnostics


def _non_finite_cause(dtype: str) -> str:
    """The likely cause of a NaN/inf stop, in the run's own terms."""
    if dtype == "float16":
        return (
            "with --dtype float16 the usual cause is float16 underflow (Adam's second moment "
            "of small gradients rounds to 0 and the next update overflows): use --dtype "
            "bfloat16 or float32, or SGD/momentum"
        )
    return (
        "a NaN/inf usually means the learning rate is far too high (or the inputs are not "
        "normalised)"
    )


def _scale_sample(x, rows: int = 8192):
    """The training inputs, or evenly spaced rows of memory-mapped ones (the input-scale
    diagnosis then reads ``rows`` examples, not the whole file)."""
    import numpy as np

    if not isinstance(x, np.memmap) or len(x) <= rows:
        return x
    return np.asarray(x[:: len(x) // rows])


def run_summary(setup, result, stats, test_accuracy, test_loss, params=None) -> dict:
    """The summary keys every run has: test figures, epochs, how it ended, diagnostics, and
    ``activations_note`` (one line) when the model cannot show its layers' outputs."""
    import jnn.monitor

    note = None if stats else jnn.monitor.activations_note(setup.model)
    return {
        "test_accuracy": test_accuracy,
        "test_loss": test_loss,
        "epochs_run": len(result.history),
        "stopped": result.stopped,
        "message": result.message,
        "ended": _ended(result.stopped, result.message),
        "diagnostics": _diagnostics(
            setup, result.history, stats, result.stopped, result.message, params
        ),
        **({"activations_note": note} if note else {}),
    }


def _finish_single(config, setup, folder, result, clock):

    import jnn.monitor
    import jnn.train

    drawing = _overlap.HistoryPlots(config, folder, result.history, setup.task.is_classes)
    state = result.state
    test = jnn.train.evaluate(
        setup.model, state.params, state.model_state, setup.ds.x_test, setup.ds.y_test, setup.loss
    )
    x_stats = setup.ds.x_val[:ACTIVATION_SAMPLE]
    stats = jnn.monitor.activation_stats(setup.model, state.params, state.model_state, x_stats)
    task_summary, tables = _task_result(config, setup, state)
    clock.lap("evaluate")
    history = result.history
    accuracy = task_summary.get("test_accuracy", test["accuracy"])
    summary = {
        **run_summary(setup, result, stats, accuracy, test["loss"], state.params),
        "activation_stats": {
            name: {k: v for k, v in row.items() if k not in ("hist", "edges")}
            for name, row in stats.items()
        },
        **task_summary,
    }
    plots = {}
    if config.plots:
        plots = folder.write_plots(
            history,
            stats,
            state.params,
            setup.ds.image_shape,
            accuracy=setup.task.is_classes,
            drawn=drawing.result(),
        )
    return summary, plots, tables


def _task_result(config, setup, state) -> tuple[dict, list]:
    """The summary keys and report tables of a task other than plain classes (see
    ``_task_report``); ``({}, [])`` for classes."""
    from jnn.runs import _task_report

    if setup.task.kind == "classes":
        return {}, []
    return _task_report.result(config, setup, state)


def _split_fit(timings: dict, compile_seconds: float, train_seconds: float) -> None:
    """``fit``'s wall time as ``compile``, ``train`` (the epochs themselves: the headline's
    "s of training") and ``loop`` (the rest: parameters initialised, data put on the device,
    checkpoints saved and waited for, per-epoch records and logs)."""
    fit = timings.get("fit", 0.0)
    parts = {
        "compile": compile_seconds,
        "train": train_seconds,
        "loop": max(fit - compile_seconds - train_seconds, 0.0),
    }
    ordered = {}
    for phase, seconds in timings.items():  # in the order of the phases
        ordered.update(parts if phase == "fit" else {phase: seconds})
    timings.clear()
    timings.update(ordered)


def _write_out(config, folder, summary, plots, tables, result, clock):
    history = result.history
    train_seconds = sum(r.get("seconds", 0.0) for r in history)
    _split_fit(clock.timings, (result.timings or {}).get("compile", 0.0), train_seconds)
    summary["train_seconds"] = train_seconds
    summary["headline"] = summary.get("headline") or (
        f"**Test accuracy: {100 * summary['test_accuracy']:.2f}%** (test loss "
        f"{summary['test_loss']:.4f}) after {summary['epochs_run']} epochs, "
        f"{train_seconds:.1f} s of training."
    )
    if history:
        last = history[-1]
        pct = lambda v: "-" if v is None else f"{100 * v:.2f}%"
        summary["last_epoch"] = (
            f"Last epoch: train loss {last['train_loss']:.4f}, train accuracy "
            f"{pct(last.get('train_acc'))}, validation accuracy {pct(last.get('val_acc'))}."
        )
    folder.write_report(config, summary, plots, tables)
    _events.write_final(config, folder, summary, plots)
    clock.lap("write")
    summary["timings"] = dict(clock.timings)
    folder.write_summary(summary)


def run(config: RunConfig, folder: RunFolder, resume: bool, echo, clock, claim=None):
    """Trains and writes the run folder (see :func:`jnn.runs.train_run`); a float64 run
    runs inside ``jax.enable_x64`` (the process's setting is left as it was)."""
    import contextlib

    _imports(config, clock)
    import jax

    import jnn.distributed

    if not jnn.distributed.is_primary():  # process 0 speaks for a multi-process run
        echo = _silent

    x64 = jax.enable_x64(True) if config.dtype == "float64" else contextlib.nullcontext()
    with x64:
        return _run(config, folder, resume, echo, clock, claim)


def _silent(*_) -> None:
    """The console of processes other than 0 in a multi-process run."""


def _run(config: RunConfig, folder: RunFolder, resume: bool, echo, clock, claim=None):
    from jnn.runs._job import RunOutcome

    _overlap.preload(config)
    setup = _setup(config, clock, folder, resume)
    if claim is not None:
        claim(echo)
    else:
        folder.create()
    folder.save_config(config)
    if setup.preprocess is not None:
        folder.save_preprocess(setup.preprocess)
    echo(_header(config, setup, folder))
    _events.announce(config, echo)
    if setup.note:
        echo(setup.note)
    if config.num_members > 1:
        from jnn.runs import _ensemble_job

        setup, result = _ensemble_job.fit(config, setup, folder, resume, echo, _callbacks)
        clock.lap("fit")
        summary, plots, tables = _ensemble_job.finish(config, setup, folder, result, clock)
    else:
        result = _fit_single(config, setup, folder, resume, echo)
        clock.lap("fit")
        summary, plots, tables = _finish_single(config, setup, folder, result, clock)
    _write_out(config, folder, summary, plots, tables, result, clock)
    _echo_end(summary, folder, echo)
    return RunOutcome(folder.path, summary, 1 if result.stopped == "non_finite" else 0)


def _echo_end(summary, folder, echo):
    if summary.get("ended"):
        echo(summary["ended"])
    echo("diagnostics:")
    for line in summary["diagnostics"] or ["no problems found"]:
        echo(f"  - {line}")
    for line in summary.get("console_tail", []):
        echo(line)
    if summary.get("final_line"):
        echo(summary["final_line"])
        return
    echo(
        f"test accuracy {100 * summary['test_accuracy']:.2f}% (loss "
        f"{summary['test_loss']:.4f}) after {summary['epochs_run']} epochs, "
        f"{summary['train_seconds']:.1f}s of training; run folder {folder.path}"
    )
