"""What a run prints: the header, the line per epoch (with the mesh), the closing lines."""

from __future__ import annotations

import sys

from jnn.runs._config import RunConfig
from jnn.runs._user_model import is_user_model

__all__ = ["callbacks", "echo_end", "echo_line", "format_epoch", "header", "show_progress"]


def format_epoch(record: dict, epochs: int) -> str:
    """The per-epoch console line: loss, accuracies, learning rate, median update ratio."""

    def pct(v):
        return "   -  " if v is None else f"{100 * v:5.1f}%"

    ratios = sorted(v for v in (record.get("update_ratio") or {}).values() if v is not None)
    ratio = f"{ratios[len(ratios) // 2]:.1e}" if ratios else "-"
    val_loss, lr = record.get("val_loss"), record.get("learning_rate")
    return (
        f"epoch {record['epoch']:>3}/{epochs}  loss {record['train_loss']:.4f}"
        + (f"  val_loss {val_loss:.4f}" if val_loss is not None else "")
        + f"  train {pct(record.get('train_acc'))}  val {pct(record.get('val_acc'))}"
        + (f"  lr {lr:.2e}" if lr is not None else "")
        + f"  ratio {ratio}  {record.get('seconds', 0.0):.2f}s"
    )


def echo_line(message: str, above_bar: bool = False) -> None:
    """Prints a line (above tqdm's progress bar when one is showing)."""
    if above_bar:
        from tqdm.auto import tqdm

        tqdm.write(message, file=sys.stdout)
    else:
        print(message)
    sys.stdout.flush()


def silent(*_) -> None:
    """The console of processes other than 0 in a multi-process run."""


def show_progress(config: RunConfig) -> bool:
    """The progress bar only on a terminal: in a log (stderr redirected) its ``\\r`` frames
    would be noise, and the line per epoch says it all."""
    return config.progress and sys.stderr.isatty()


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


def header(config: RunConfig, setup, folder) -> str:
    """The run's first line: model, data, task, optimizer, epochs, members, folder."""
    ds = setup.ds
    members = f", {config.num_members} members" if config.num_members > 1 else ""
    lr = ",".join(f"{v:g}" for v in config.lr)
    return (
        f"jnn train: {_model_label(config)} on {config.data or config.dataset} "
        f"({len(ds.x_train)} train / {len(ds.x_val)} val / {len(ds.x_test)} test, "
        f"{setup.task.describe()}), {config.optimizer} lr {lr} {config.schedule}, "
        f"{config.epochs} epochs of {setup.steps_per_epoch} steps{members} -> {folder.path}"
    )


def callbacks(config, folder, echo, mesh=None):
    """``on_start`` (rewrite metrics.jsonl to the resumed history) and ``on_epoch`` (the
    epoch line ends with the mesh)."""
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
    if echo is echo_line:
        echo_line(line, above_bar=True)
    else:
        echo(line)


def echo_end(summary, folder, echo):
    """The closing lines: how it ended, the diagnostics, the test figures."""
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
