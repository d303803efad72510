"""The run folder's TensorBoard event files (``jnn.tensorboard``): the epoch series written by
``fit`` during training, then the run's figures, its configuration as hyperparameters and the
test figures (per member for an ensemble). ``--no-tensorboard`` writes none."""

from __future__ import annotations

from jnn.runs._config import RUN_DEFINING, RunConfig

__all__ = ["announce", "tensorboard_dir", "write_final"]


def _wanted(config: RunConfig) -> bool:
    from jnn.runs._folder import _primary

    return config.tensorboard and _primary()


def announce(config: RunConfig, echo) -> None:
    """Says in one line why the run writes no event files (tensorboardX not installed)."""
    import jnn.tensorboard

    reason = jnn.tensorboard.unavailable()
    if _wanted(config) and reason:
        echo(reason)


def tensorboard_dir(config: RunConfig, folder):
    """``fit``'s ``tensorboard_dir``: the run folder, or ``None`` (off, not process 0, or no
    writer installed)."""
    import jnn.tensorboard

    if not _wanted(config) or jnn.tensorboard.unavailable():
        return None
    return folder.path


def write_final(config: RunConfig, folder, summary: dict, plots: dict) -> None:
    """The figures as images, the run-defining options as hyperparameters, ``test/accuracy``
    and ``test/loss`` (an ensemble's members: theirs in their sub-folders)."""
    logdir = tensorboard_dir(config, folder)
    if logdir is None:
        return
    try:
        _write_final(logdir, config, folder, summary, plots)
    except Exception as err:  # noqa: BLE001 - the run's results are written already
        import logging

        logging.getLogger("jnn").warning("TensorBoard: the final figures were not written: %s", err)


def _write_final(logdir, config, folder, summary, plots) -> None:
    import jnn.tensorboard as tb

    step = summary.get("epochs_run", 0)
    tb.write_figures(logdir, {name: folder.path / file for name, file in plots.items()})
    options = config.to_json()
    tb.write_hparams(logdir, {k: options[k] for k in RUN_DEFINING})
    tb.write_scalars(
        logdir, {"test/accuracy": summary["test_accuracy"], "test/loss": summary["test_loss"]}, step
    )
    rows = summary.get("members") or []
    for row in rows:
        tb.write_scalars(
            tb.member_dir(logdir, row["member"], len(rows)),
            {"test/accuracy": row["test_accuracy"], "test/loss": row["test_nll"]},
            step,
        )
