"""The whole ``jnn train`` job as library functions: a Python user calls :func:`train_run`
with a :class:`RunConfig` and gets the run folder and the outcome, exactly as the CLI does."""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from jnn.runs._config import RunConfig
from jnn.runs._folder import RunFolder

__all__ = ["RunOutcome", "default_out", "format_epoch", "resume_config", "train_run"]


class RunOutcome(NamedTuple):
    """What :func:`train_run` returns.

    Attributes:
      folder: the run folder.
      summary: the contents of ``summary.json``.
      exit_code: 0 (trained, possibly stopped early), 1 (stopped on a NaN/inf).
    """

    folder: Path
    summary: dict
    exit_code: int


def default_out(config: RunConfig) -> str:
    return f"runs/{config.dataset}-{config.model}-{time.strftime('%Y%m%d-%H%M%S')}"


def resume_config(out, explicit: dict) -> RunConfig:
    """The stored config of the run in ``out``, continued with ``explicit`` options.

    Raises:
      ValueError: no run in ``out``, or options that differ from the stored ones.
    """
    folder = RunFolder(out)
    if not (folder.path / "config.json").exists():
        raise ValueError(f"--resume: no run to resume in {str(out)!r} (config.json missing)")
    stored = RunConfig.from_json(folder.load_config())
    return stored.resumed({**explicit, "out": str(out)})


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


class _Clock:
    """Wall time per phase: imports, data, compile, train, evaluate, write."""

    def __init__(self):
        self.timings, self._t = {}, time.perf_counter()

    def lap(self, phase: str) -> None:
        now = time.perf_counter()
        self.timings[phase] = self.timings.get(phase, 0.0) + now - self._t
        self._t = now


def _holds_checkpoint(directory) -> bool:
    """Whether ``directory`` holds an epoch checkpoint or an in-epoch one (a run that
    stopped inside its first epoch resumes from the latter)."""
    from jnn.train._checkpoints import Checkpoints
    from jnn.train._within import held_steps

    if not directory.exists():
        return False
    ckpt = Checkpoints(directory)
    try:
        return bool(ckpt.epochs() or held_steps(directory))
    finally:
        ckpt.close()


def _prepare_folder(config: RunConfig, resume: bool, overwrite: bool) -> RunFolder:
    folder = RunFolder(config.out)
    folder.check_writable()
    if resume:
        if not _holds_checkpoint(folder.checkpoint_dir):
            raise ValueError(
                f"--resume: {str(folder.path)!r} has no checkpoint to resume (the run stopped "
                "before its first checkpoint was written); start it again with --overwrite"
            )
    elif folder.holds_run():
        if not overwrite:
            raise ValueError(
                f"{str(folder.path)!r} already holds a run; pass --resume to continue it, "
                "--overwrite to replace it, or choose another --out"
            )
        folder.clear()
    return folder


def train_run(
    config: RunConfig,
    *,
    resume: bool = False,
    overwrite: bool = False,
    echo: Callable[[str], None] | None = None,
) -> RunOutcome:
    """Trains the configured model (or ensemble) and writes the run folder.

    Steps: check the folder, load and check the data, build the model and optimizer, train
    with ``jnn.train.fit`` (or ``jnn.ensemble.fit`` for several members), evaluate on the
    test set, diagnose, and write ``config.json``, ``metrics.jsonl``, plots, ``summary.json``
    and ``report.md``. Bad input raises ``ValueError`` before the folder is created.

    Args:
      config: the run's options (``RunConfig.from_options(...)``).
      resume: continue the run in ``config.out`` from its newest intact checkpoint.
      overwrite: replace a run already in ``config.out``.
      echo: prints a line (default: stdout).

    Returns:
      :class:`RunOutcome`.

    Raises:
      ValueError: bad options or data, a folder that holds a run, nothing to resume.
      jnn.train.Interrupted: Ctrl-C / SIGTERM (the last completed epoch was saved).
    """
    from jnn.runs import _train_job

    if config.out is None:
        config = dataclasses.replace(config, out=default_out(config))
    _train_job.join_processes(config)  # before the resume check opens Orbax (JAX)
    folder = _prepare_folder(config, resume, overwrite)

    return _train_job.run(config, folder, resume, echo or echo_line, _Clock())
