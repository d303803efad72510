"""The whole ``jnn train`` job as library functions: a Python user calls :func:`train_run`
with a :class:`RunConfig` and gets the run folder and the outcome, exactly as the CLI does."""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from jnn.runs import _fingerprint, _lock
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
    source = config.dataset or Path(config.data).stem
    return f"runs/{source}-{config.model}-{time.strftime('%Y%m%d-%H%M%S')}"


def resume_config(out, explicit: dict) -> RunConfig:
    """The stored config of the run in ``out``, continued with ``explicit`` options.

    Raises:
      ValueError: no run in ``out``, or options that differ from the stored ones.
    """
    folder = RunFolder(out)
    path = folder.path / "config.json"
    if not path.exists():
        raise ValueError(f"--resume: no run to resume in {str(out)!r} (config.json missing)")
    try:
        stored = RunConfig.from_json(folder.load_config())
    except (ValueError, TypeError, AttributeError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ValueError(f"--resume: {path} is not a jnn run's config.json ({first})") from None
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


def _prepare_folder(config: RunConfig, resume: bool, overwrite: bool, allow_changed_data: bool):
    """Checks the folder (and takes its lock when it exists already); returns
    ``(folder, lock or None)``."""
    folder = RunFolder(config.out)
    folder.check_writable()
    lock = _lock.RunLock.acquire(folder.path) if folder.path.is_dir() and _primary() else None
    try:
        _check_folder(folder, config, resume, overwrite, allow_changed_data)
    except BaseException:
        if lock is not None:
            lock.release()
        raise
    return folder, lock


def _check_folder(folder, config, resume, overwrite, allow_changed_data) -> None:
    if resume:
        if not folder.has_checkpoint():
            raise ValueError(
                f"--resume: {str(folder.path)!r} has no checkpoint to resume (the run stopped "
                "before its first checkpoint was written); start it again with the command "
                "that created it, without --resume (the folder is reused)"
            )
        _fingerprint.check_unchanged(folder.path, config.data, allow_changed_data)
    elif folder.holds_run():
        if not overwrite:
            raise ValueError(
                f"{str(folder.path)!r} already holds a run; pass --resume to continue it, "
                "--overwrite to replace it, or choose another --out"
            )
        folder.clear()


def _claimer(config: RunConfig, folder: RunFolder, lock, resume: bool):
    """``claim()``, called once the checks passed: creates the folder, takes its lock, and
    tells the installed signal handler what an interrupt leaves there. Returns a list that
    receives the lock (so that :func:`train_run` releases it)."""
    from jnn import _signals
    from jnn.runs import _interrupts

    held = [lock] if lock is not None else []

    def claim(echo):
        created = not folder.path.exists()
        folder.create()
        if not held and _primary():
            held.append(_lock.RunLock.acquire(folder.path))
        note = held[0].note() if held else None
        if note:
            print(note, file=sys.stderr)
        if not resume:
            folder.save_fingerprint(config.data)
        gate = _signals.installed()
        if gate is not None:
            gate.describe = _interrupts.describe(folder, config.out, created and not resume)

    return claim, held


def _primary() -> bool:
    from jnn.runs._folder import _primary as primary

    return primary()


def train_run(
    config: RunConfig,
    *,
    resume: bool = False,
    overwrite: bool = False,
    allow_changed_data: bool = False,
    echo: Callable[[str], None] | None = None,
) -> RunOutcome:
    """Trains the configured model (or ensemble) and writes the run folder.

    Steps: check the folder (and lock it: one run per folder), load and check the data,
    build the model and optimizer, train with ``jnn.train.fit`` (or ``jnn.ensemble.fit`` for
    several members), evaluate on the test set, diagnose, and write ``config.json``,
    ``metrics.jsonl``, plots, ``summary.json`` and ``report.md``. Bad input raises
    ``ValueError`` before the folder is created.

    Args:
      config: the run's options (``RunConfig.from_options(...)``).
      resume: continue the run in ``config.out`` from its newest intact checkpoint.
      overwrite: replace a run already in ``config.out``.
      allow_changed_data: resume even though the ``--data`` file's contents changed.
      echo: prints a line (default: stdout).

    Returns:
      :class:`RunOutcome`.

    Raises:
      ValueError: bad options or data, a folder that holds a run or is in use by another
        run, nothing to resume, changed data on resume.
      jnn.train.Interrupted: Ctrl-C / SIGTERM (the last completed epoch was saved).
    """
    from jnn.runs import _train_job

    if config.out is None:
        config = dataclasses.replace(config, out=default_out(config))
    _train_job.join_processes(config)  # before the resume check opens Orbax (JAX)
    folder, lock = _prepare_folder(config, resume, overwrite, allow_changed_data)
    claim, held = _claimer(config, folder, lock, resume)
    try:
        return _train_job.run(config, folder, resume, echo or echo_line, _Clock(), claim)
    finally:
        for each in held:
            each.release()
