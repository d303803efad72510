"""The body of :func:`jnn.runs.train_run`: train, evaluate, diagnose, write the folder."""

from __future__ import annotations

from typing import Any, NamedTuple

from jnn.runs import _builders
from jnn.runs._config import RunConfig
from jnn.runs._folder import RunFolder

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
    note: str | None = None


def join_processes(config: RunConfig) -> None:
    """Joins a multi-process run (``--coordinator``/``--num-processes``/``--process-id`` or
    ``JNN_*``) before anything else touches JAX; nothing to do for a single process, and
    nothing the second time."""
    import os

    import jnn.distributed as dist

    options = (config.coordinator, config.num_processes, config.process_id)
    if any(v is not None for v in options) or os.environ.get(dist.ENV["coordinator"]):
        dist.initialize(*options)


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


def _setup(config: RunConfig, clock) -> Setup:
    import time

    t0 = time.perf_counter()
    ds = _builders.load_run_data(config)
    note = _data_note(ds, time.perf_counter() - t0)
    tree = None
    if config.output == "hsoftmax":
        tree = _builders.build_tree(config, ds.y_train, ds.num_classes)
    model = _builders.build_model(config, ds.num_classes, ds.input_shape, tree=tree)
    mesh = _mesh(config)
    clock.lap("data")
    steps = len(ds.x_train) // config.batch_size
    return Setup(ds, model, _builders.build_loss(config), steps, tree, mesh, note)


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


def _header(config: RunConfig, setup: Setup, folder: RunFolder) -> str:
    ds = setup.ds
    members = f", {config.num_members} members" if config.num_members > 1 else ""
    lr = ",".join(f"{v:g}" for v in config.lr)
    return (
        f"jnn train: {config.model} {list(config.widths)} on {config.data or config.dataset} "
        f"({len(ds.x_train)} train / {len(ds.x_val)} val / {len(ds.x_test)} test, "
        f"{ds.num_classes} classes), {config.optimizer} lr {lr} {config.schedule}, "
        f"{config.epochs} epochs of {setup.steps_per_epoch} steps{members} -> {folder.path}"
    )


def _callbacks(config, folder, echo, mesh=None):
    """``on_start`` (rewrite metrics.jsonl to the resumed history) and ``on_epoch`` (the
    epoch line ends with the mesh)."""
    from jnn.runs._job import format_epoch

    above_bar = config.progress

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


def loop_options(config: RunConfig, setup: Setup, folder: RunFolder, resume, on_start) -> dict:
    """The epoch loop's keywords every run passes to ``fit``: checkpoints in the run folder,
    resume, early stopping, progress, the mesh."""
    return dict(
        checkpoint_dir=folder.checkpoint_dir,
        checkpoint_every=config.checkpoint_every,
        checkpoint_seconds=config.checkpoint_seconds,
        resume=resume,
        patience=config.patience,
        progress=config.progress,
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
        **loop_options(config, setup, folder, resume, on_start),
    )

    return result._replace(state=on_host(result.state))


def _step_options(config: RunConfig, schedule):
    """``fit``'s step options: the L2 strength; for ``--output hsoftmax`` without L2 the
    sparse head step (lazy Adam for the Adam family, with its b1; SGD otherwise)."""
    l2 = config.l2[0]
    if config.output == "hsoftmax" and not l2:
        if config.optimizer in ("adam", "adamw", "nadam"):
            head = {"head_update": "lazy_adam", "learning_rate": schedule, "b1": config.momentum[0]}
        else:
            head = {"head_update": "sgd", "learning_rate": schedule}
        return {"sparse_head": head}
    return {"l2": l2} if l2 else None


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


def _diagnostics(setup, history, stats, stopped, message):
    import jnn.monitor

    diagnostics = jnn.monitor.diagnose(history, stats, inputs=_scale_sample(setup.ds.x_train))
    if stopped == "non_finite":
        diagnostics.insert(
            0,
            f"training stopped: {message}; a NaN/inf usually means the learning rate is far "
            "too high (or the inputs are not normalised)",
        )
    return diagnostics


def _scale_sample(x, rows: int = 8192):
    """The training inputs, or evenly spaced rows of memory-mapped ones (the input-scale
    diagnosis then reads ``rows`` examples, not the whole file)."""
    import numpy as np

    if not isinstance(x, np.memmap) or len(x) <= rows:
        return x
    return np.asarray(x[:: len(x) // rows])


def run_summary(setup, result, stats, test_accuracy, test_loss) -> dict:
    """The summary keys every run has: test figures, epochs, how it ended, diagnostics."""
    return {
        "test_accuracy": test_accuracy,
        "test_loss": test_loss,
        "epochs_run": len(result.history),
        "stopped": result.stopped,
        "message": result.message,
        "ended": _ended(result.stopped, result.message),
        "diagnostics": _diagnostics(setup, result.history, stats, result.stopped, result.message),
    }


def _finish_single(config, setup, folder, result, clock):

    import jnn.monitor
    import jnn.train

    state = result.state
    test = jnn.train.evaluate(
        setup.model, state.params, state.model_state, setup.ds.x_test, setup.ds.y_test, setup.loss
    )
    x_stats = setup.ds.x_val[:ACTIVATION_SAMPLE]
    stats = jnn.monitor.activation_stats(setup.model, state.params, state.model_state, x_stats)
    clock.lap("evaluate")
    history = result.history
    summary = {
        **run_summary(setup, result, stats, test["accuracy"], test["loss"]),
        "activation_stats": {
            name: {k: v for k, v in row.items() if k not in ("hist", "edges")}
            for name, row in stats.items()
        },
    }
    plots = {}
    if config.plots:
        plots = folder.write_plots(history, stats, state.params, setup.ds.image_shape)
    return summary, plots, []


def _write_out(config, folder, summary, plots, tables, result, clock):
    fit_timings = result.timings or {}
    clock.timings["compile"] = fit_timings.get("compile", 0.0)
    clock.timings["train"] = clock.timings.pop("fit", 0.0) - clock.timings["compile"]
    history = result.history
    train_seconds = sum(r.get("seconds", 0.0) for r in history)
    summary["train_seconds"] = train_seconds
    summary["headline"] = (
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
    clock.lap("write")
    summary["timings"] = dict(clock.timings)
    folder.write_summary(summary)


def run(config: RunConfig, folder: RunFolder, resume: bool, echo, clock):
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
        return _run(config, folder, resume, echo, clock)


def _silent(*_) -> None:
    """The console of processes other than 0 in a multi-process run."""


def _run(config: RunConfig, folder: RunFolder, resume: bool, echo, clock):
    from jnn.runs._job import RunOutcome

    setup = _setup(config, clock)
    folder.create()
    folder.save_config(config)
    echo(_header(config, setup, folder))
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
    default = (
        f"test accuracy {100 * summary['test_accuracy']:.2f}% (loss "
        f"{summary['test_loss']:.4f}) after {summary['epochs_run']} epochs, "
        f"{summary['train_seconds']:.1f}s of training; run folder {folder.path}"
    )
    echo(summary.get("final_line") or default)
