"""The test result of attribute and regression runs: summary keys, the final line, the
report's tables, and (``--bins``) the plain regression trained alongside for comparison."""

from __future__ import annotations

from jnn.runs import _builders, _tasks
from jnn.runs._config import RunConfig
from jnn.runs._setup import step_options

__all__ = ["result"]

_NO_ACCURACY = {
    "attributes": "no accuracy curve: per-epoch accuracy counts one class per example; the "
    "test accuracy of each attribute is in the table above",
    "regression": "no accuracy curve: a regression has no accuracy (the loss curve shows the "
    "squared error of the standardised target)",
}


def _attribute_table(metrics: dict) -> str:
    rows = [f"| {name} | {100 * acc:.2f}% |" for name, acc in metrics["attribute_accuracy"].items()]
    return "\n".join(
        ["## Attributes (test set)", "", "| attribute | accuracy |", "|---|---|", *rows]
    )


def _side_by_side(binned: dict, plain: dict, k: int) -> str:
    return "\n".join(
        [
            "## Regression against bins (test set)",
            "",
            "| model | test RMSE | test MAE |",
            "|---|---|---|",
            f"| classifier over {k} quantile bins (this run) | {binned['rmse']:.4g} | "
            f"{binned['mae']:.4g} |",
            f"| regression, L2 loss (same network and options) | {plain['rmse']:.4g} | "
            f"{plain['mae']:.4g} |",
        ]
    )


def plain_regression(config: RunConfig, setup) -> dict:
    """Trains the same network as a plain regression (L2 loss, one output) on the same data
    and options, without checkpoints; returns its test RMSE and MAE."""
    import jax
    import jax.numpy as jnp

    import jnn.losses
    import jnn.train

    ds, task = setup.task.regression
    model = _builders.build_model(config, task.outputs, ds.input_shape)
    optimizer, schedule = _builders.build_optimizer(config, setup.steps_per_epoch)
    fitted = jnn.train.fit(
        model,
        jnn.losses.l2_loss,
        optimizer,
        (ds.x_train, ds.y_train),
        epochs=config.epochs,
        batch_size=config.batch_size,
        key=jax.random.key(config.seed),
        val_data=(ds.x_val, ds.y_val),
        dtype=jnp.dtype(config.dtype),
        step_options=step_options(config, schedule),
        progress=False,
    )
    state = fitted.state
    return _tasks.test_metrics(task, model, state.params, state.model_state, ds)


def result(config: RunConfig, setup, state) -> tuple[dict, list]:
    """``(summary keys, report tables)`` of an attribute, regression or bins run."""
    task = setup.task
    metrics = _tasks.test_metrics(task, setup.model, state.params, state.model_state, setup.ds)
    line = _tasks.final_line(task, metrics)
    summary = {"final_line": line, "headline": f"**{line[0].upper()}{line[1:]}**"}
    if task.kind == "attributes":
        summary.update(test_accuracy=metrics["accuracy"], attributes=metrics)
        tables = [_attribute_table(metrics)]
    else:
        summary.update(test_accuracy=None, test_rmse=metrics["rmse"], test_mae=metrics["mae"])
        tables = []
    if task.kind == "bins":
        plain = plain_regression(config, setup)
        summary.update(test_accuracy=metrics["bin_accuracy"], regression=plain)
        tables = [_side_by_side(metrics, plain, task.outputs)]
        summary["console_tail"] = [
            f"bins: test accuracy over {task.outputs} bins {100 * metrics['bin_accuracy']:.2f}%",
            f"plain regression (same network, L2 loss): test RMSE {plain['rmse']:.4g} "
            f"(MAE {plain['mae']:.4g})",
        ]
    if task.kind in _NO_ACCURACY:
        summary["absent_plots"] = [_NO_ACCURACY[task.kind]]
    return summary, tables
