"""The single-model mode of ``jnn train``: one model trained by ``jnn.train.fit``, evaluated
on the test set, its activations and plots drawn."""

from __future__ import annotations

from jnn.runs import _builders, _events, _overlap
from jnn.runs._config import RunConfig
from jnn.runs._console import callbacks
from jnn.runs._folder import RunFolder
from jnn.runs._setup import ACTIVATION_SAMPLE, Setup, loop_options, on_host, step_options
from jnn.runs._summary import run_summary

__all__ = ["finish", "fit"]


def fit(config: RunConfig, setup: Setup, folder: RunFolder, resume, echo):
    """Trains the model (``jnn.train.fit``) with checkpoints in the run folder.

    Returns:
      ``(setup, FitResult)`` (the state on the host).
    """
    import jax
    import jax.numpy as jnp

    import jnn.train

    optimizer, schedule = _builders.build_optimizer(config, setup.steps_per_epoch)
    on_start, on_epoch = callbacks(config, folder, echo, setup.mesh)
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
        step_options=step_options(config, schedule),
        learning_rate=schedule,
        on_epoch=on_epoch,
        tensorboard_dir=_events.tensorboard_dir(config, folder),
        **loop_options(config, setup, folder, resume, on_start),
    )

    return setup, result._replace(state=on_host(result.state))


def finish(config, setup, folder, result, clock, figures=None):
    """Evaluates the model, writes the plots (the history's in ``figures``, a
    ``_overlap.FigureProcess``, when given); returns ``(summary, plots, tables)``."""
    import jnn.monitor
    import jnn.train

    drawing = _overlap.HistoryPlots(config, folder, result.history, setup.task.is_classes, figures)
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
            drawn=drawing.result,
        )
    return summary, plots, tables


def _task_result(config, setup, state) -> tuple[dict, list]:
    """The summary keys and report tables of a task other than plain classes (see
    ``_task_report``); ``({}, [])`` for classes."""
    from jnn.runs import _task_report

    if setup.task.kind == "classes":
        return {}, []
    return _task_report.result(config, setup, state)
