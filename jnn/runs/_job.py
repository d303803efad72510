"""The whole ``jnn train`` job as library functions: a Python user calls :func:`train_run`
with a :class:`RunConfig` and gets the run folder and the outcome, exactly as the CLI does."""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from jnn.runs import _ensemble_job, _events, _fingerprint, _lock, _overlap, _single_job
from jnn.runs._config import RunConfig
from jnn.runs._console import echo_end, echo_line, header, silent
from jnn.runs._folder import RunFolder
from jnn.runs._setup import build_setup, imports, join_processes

__all__ = ["RunOutcome", "default_out", "resume_config", "train_run"]


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
    if config.out is None:
        config = dataclasses.replace(config, out=default_out(config))
    join_processes(config)  # before the resume check opens Orbax (JAX)
    folder, lock = _prepare_folder(config, resume, overwrite, allow_changed_data)
    claim, held = _claimer(config, folder, lock, resume)
    try:
        return _run(config, folder, resume, echo or echo_line, _Clock(), claim)
    finally:
        for each in held:
            each.release()


def _run(config: RunConfig, folder: RunFolder, resume: bool, echo, clock, claim) -> RunOutcome:
    """Imports JAX, then runs :func:`_one_pass` (process 0 speaks for a multi-process run; a
    float64 run runs inside ``jax.enable_x64``, the process's setting is left as it was)."""
    imports(config, clock)
    import jax

    import jnn.distributed

    if not jnn.distributed.is_primary():
        echo = silent
    x64 = jax.enable_x64(True) if config.dtype == "float64" else contextlib.nullcontext()
    with x64:
        return _one_pass(config, folder, resume, echo, clock, claim)


def _one_pass(config: RunConfig, folder: RunFolder, resume: bool, echo, clock, claim):
    """The run as one straight line: build data, model and loss once; claim the folder; train
    in one mode (one model, or an ensemble); evaluate; write."""
    figures = _overlap.preload(config)
    try:
        setup = build_setup(config, clock, folder, resume)
        claim(echo)
        folder.save_config(config)
        if setup.preprocess is not None:
            folder.save_preprocess(setup.preprocess)
        echo(header(config, setup, folder))
        _events.announce(config, echo)
        if setup.note:
            echo(setup.note)
        mode = _ensemble_job if config.num_members > 1 else _single_job
        setup, result = mode.fit(config, setup, folder, resume, echo)
        clock.lap("fit")
        summary, plots, tables = mode.finish(config, setup, folder, result, clock, figures)
    finally:
        if figures is not None:
            figures.close()
    _write_out(config, folder, summary, plots, tables, result, clock)
    echo_end(summary, folder, echo)
    return RunOutcome(folder.path, summary, 1 if result.stopped == "non_finite" else 0)


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
    """Completes the summary (headline, last epoch, timings) and writes the report, the
    event files' final figures and ``summary.json``."""
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
