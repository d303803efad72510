"""The epoch loop shared by every training mode: history, validation records, early stopping,
progress, checkpoints, resume and interrupts.

A *mode* (one model in ``jnn.train.fit``, K vmapped members in ``jnn.ensemble.fit``) knows how
to run and record one epoch; this loop knows everything around it, so each guarantee below
holds for every mode:

- **Checkpoints** (:class:`CheckpointPolicy`): after an epoch when ``every`` epochs have
  passed, or (by default) when ``seconds`` (60) of training have passed since the last one;
  always at the end, at an early stop, before a non-finite stop (the last completed epoch)
  and on an interrupt. Saves run in the background (see ``_checkpoints``).
- **Interrupts**: ``KeyboardInterrupt`` (Ctrl-C) or ``SIGTERM`` while the loop runs saves the
  last completed epoch and raises :class:`Interrupted` (a ``KeyboardInterrupt``) naming it.
  One handler (``jnn._signals``) covers both; a signal that lands while a checkpoint is
  written waits for the write to complete, so the newest checkpoint is never lost to it.
- **Resume**: continues from the newest intact checkpoint with its history, best state and
  early-stopping counters, bitwise identically to a run that was never interrupted.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax

from jnn import _signals
from jnn.train import _sharding, _within
from jnn.train._checkpoints import Checkpoints

__all__ = [
    "CheckpointPolicy",
    "EpochOutcome",
    "Interrupted",
    "LoopMeta",
    "LoopResult",
    "run_epochs",
]

log = logging.getLogger("jnn")
STOP_REASONS = (None, "early_stopping", "non_finite")


class Interrupted(KeyboardInterrupt):
    """Training was interrupted (Ctrl-C or SIGTERM) after the last completed epoch was saved.

    Attributes:
      epoch: the last completed epoch (the one in the checkpoint, when there is one).
      checkpoint_dir: where it was saved, or ``None`` when the run has no checkpoints.
      signal_name: ``"SIGINT"`` or ``"SIGTERM"``.
      step: with a stream, the global step of the in-epoch checkpoint saved (``None`` when
        none was).
    """

    def __init__(self, epoch: int, checkpoint_dir, signal_name: str, step: int | None = None):
        where = f"; saved epoch {epoch} to {checkpoint_dir}" if checkpoint_dir else ""
        if step is not None and checkpoint_dir:
            where = f"; saved step {step} (inside epoch {epoch + 1}) to {checkpoint_dir}"
        super().__init__(f"training interrupted by {signal_name} after epoch {epoch}{where}")
        self.epoch, self.checkpoint_dir, self.signal_name = epoch, checkpoint_dir, signal_name
        self.step = step


class EpochOutcome(NamedTuple):
    """What a mode's ``run_epoch`` returns.

    Attributes:
      carry: the training carry after the epoch (for ``"non_finite"``: the last finite one).
      record: the epoch's JSON-able record (``epoch``, ``step``, losses, accuracies, ...).
      halt: ``None`` to go on, or ``"non_finite"`` to stop (the record is then not kept).
      message: the reason in words, when halting.
      position: a streamed mode's position after the epoch (a continuing source's state),
        kept in ``LoopMeta.position`` for the next epoch; ``None`` for resident modes.
    """

    carry: Any
    record: dict | None
    halt: str | None = None
    message: str | None = None
    position: dict | None = None


class LoopMeta(NamedTuple):
    """The loop's own state, saved as JSON with every checkpoint."""

    epoch: int = 0
    history: tuple = ()
    best_score: float | None = None
    since_best: int = 0
    stopped: str | None = None
    message: str | None = None
    position: dict | None = None  # inside an epoch of a streamed mode (see ``_within``)

    def to_json(self) -> dict:
        return {**self._asdict(), "history": list(self.history)}

    @classmethod
    def from_json(cls, meta: dict) -> LoopMeta:
        fields = {k: meta[k] for k in cls._fields if k in meta}
        fields["history"] = tuple(fields.get("history", ()))
        return cls(**fields)


class LoopResult(NamedTuple):
    """What :func:`run_epochs` returns: final and best carries, the history, why it stopped."""

    carry: Any
    best: Any
    history: list
    stopped: str | None
    message: str | None


class CheckpointPolicy(NamedTuple):
    """Where and when the loop checkpoints.

    Attributes:
      directory: the checkpoint folder.
      every: checkpoint every this many epochs (``None``: by time, see ``seconds``).
      seconds: with ``every=None``, checkpoint once this much time has passed since the
        last checkpoint (so at most about this much training is lost to a crash).
      resume: continue from the newest intact checkpoint when there is one.
    """

    directory: Any
    every: int | None = None
    seconds: float = 60.0
    resume: bool = False

    @classmethod
    def of(cls, directory, every=None, seconds=60.0, resume=False) -> CheckpointPolicy | None:
        """The policy, or ``None`` when there is no ``directory`` (no checkpoints)."""
        return None if directory is None else cls(directory, every, seconds, resume)


def _open(policy: CheckpointPolicy | None, gate) -> Checkpoints | None:
    if policy is None:
        return None
    with gate.protected():
        ckpt = Checkpoints(policy.directory)
    present = ckpt.epochs() or _within.held_steps(policy.directory)
    if present and not policy.resume:
        ckpt.close()
        raise ValueError(
            f"checkpoint_dir {str(policy.directory)!r} already holds a run (epoch {present[0]}); "
            "pass resume=True to continue it, or use an empty folder."
        )
    return ckpt


def _resume(ckpt, carry):
    """``(carry, best, meta)`` from the newest intact checkpoint, or ``None``."""
    restored = ckpt.restore(carry)
    if restored is None:
        return None
    for epoch, why in restored.skipped:
        log.warning(
            "checkpoint of epoch %d is damaged (%s); using the one of epoch %d",
            epoch,
            why,
            restored.epoch,
        )
    return restored.carry, restored.best, LoopMeta.from_json(restored.meta)


def _early_stopping(meta: LoopMeta, score, patience, carry, best):
    """Updates the best score and patience counter after an epoch's record."""
    if patience is None:
        return meta, best
    previous = -math.inf if meta.best_score is None else meta.best_score
    if score is not None and score > previous:
        return meta._replace(best_score=score, since_best=0), carry
    since = meta.since_best + 1
    if since >= patience:
        message = f"no validation improvement for {since} epochs; kept the best epoch's state"
        return meta._replace(since_best=since, stopped="early_stopping", message=message), best
    return meta._replace(since_best=since), best


class _Saver:
    """Decides when to checkpoint; remembers what was saved last and the last completed
    epoch (what an interrupt saves)."""

    def __init__(self, ckpt, policy, carry, best, meta, gate):
        self.ckpt, self.policy, self.gate = ckpt, policy, gate
        self.last_epoch, self.last_time = meta.epoch, time.monotonic()
        self.completed = (carry, best, meta)

    def due(self, epoch: int, final: bool) -> bool:
        if self.ckpt is None or epoch == self.last_epoch:
            return False
        if final:
            return True
        if self.policy.every is not None:
            return epoch % self.policy.every == 0
        return _sharding.agreed(time.monotonic() - self.last_time >= self.policy.seconds)

    def save(self, carry, best, meta: LoopMeta) -> None:
        with self.gate.protected():  # a signal landing now acts once this is recorded
            self.ckpt.save(meta.epoch, carry, best, meta.to_json())
            self.last_epoch, self.last_time = meta.epoch, time.monotonic()

    def interrupted(self, err: KeyboardInterrupt, directory) -> Interrupted:
        """Saves the last completed epoch (if not saved yet), waits until it is on disk, and
        describes the interrupt."""
        self.gate.acknowledge()
        carry, best, meta = self.completed
        if self.ckpt is not None:
            with self.gate.protected():
                if self.due(meta.epoch, final=True):
                    self.ckpt.save(meta.epoch, carry, best, meta.to_json())
                self.ckpt.wait()
        name = getattr(err, "signal_name", "SIGINT")
        return Interrupted(meta.epoch, directory if self.ckpt is not None else None, name)


def _progress(epochs, start, enabled):
    from tqdm.auto import tqdm

    enabled = enabled and jax.process_index() == 0  # one bar for a multi-process run
    return tqdm(total=epochs, initial=start, disable=not enabled, unit="epoch", leave=True)


def _postfix(record):
    names = {"train_loss": "loss", "train_acc": "acc", "val_acc": "val_acc"}
    return {short: f"{record[k]:.4f}" for k, short in names.items() if record.get(k) is not None}


def _run_epoch(mode, carry, meta, key, within):
    """``mode.run_epoch``; a streamed mode also gets its position and the in-epoch hook."""
    epoch_key = jax.random.fold_in(key, meta.epoch)
    if within is None:
        return mode.run_epoch(carry, meta.epoch, epoch_key)
    return mode.run_epoch(carry, meta.epoch, epoch_key, position=meta.position, between=within)


def _epochs(mode, saver, epochs, key, patience, bar, on_epoch, within=None):
    """The loop proper, from ``saver.completed``; returns ``(carry, best, meta)``."""
    carry, best, meta = saver.completed
    while meta.epoch < epochs and meta.stopped is None:
        outcome = _run_epoch(mode, carry, meta, key, within)
        if outcome.halt is not None:
            if saver.due(meta.epoch, final=True):
                saver.save(carry, best, meta)
            return outcome.carry, best, meta._replace(stopped=outcome.halt, message=outcome.message)
        carry, record = outcome.carry, outcome.record
        meta = meta._replace(
            epoch=meta.epoch + 1, history=(*meta.history, record), position=outcome.position
        )
        meta, best = _early_stopping(meta, mode.score(record), patience, carry, best)
        saver.completed = (carry, best, meta)
        saver.gate.unsaved = saver.ckpt is not None  # on disk only once the files are closed
        bar.update(1 if within is None else within.epoch_done())
        bar.set_postfix(_postfix(record))
        if on_epoch is not None:
            on_epoch(record)
        if saver.due(meta.epoch, final=meta.epoch == epochs or meta.stopped is not None):
            saver.save(carry, best, meta)
        saver.gate.poll()
    return carry, best, meta


def _interrupted(saver, within, err, checkpoint) -> Interrupted:
    """Saves what an interrupt would lose (the last completed chunk of a streamed epoch, or
    the last completed epoch) and describes it."""
    if within is not None and within.latest is not None:
        with saver.gate.protected():
            within.save()  # the last completed chunk: nothing of the epoch is lost
            within.wait()
    stopped = saver.interrupted(err, checkpoint and checkpoint.directory)
    if within is not None and within.saved is not None and within.latest is not None:
        stopped = Interrupted(
            stopped.epoch, stopped.checkpoint_dir, stopped.signal_name, within.saved
        )
    return stopped


def run_epochs(
    mode,
    carry,
    *,
    epochs: int,
    key,
    checkpoint: CheckpointPolicy | None = None,
    patience: int | None = None,
    progress: bool = True,
    on_epoch: Callable | None = None,
    on_start: Callable | None = None,
) -> LoopResult:
    """Runs ``mode.run_epoch`` for epochs ``0 .. epochs-1`` (epoch ``e`` gets
    ``fold_in(key, e)``) with checkpoints, resume, early stopping and interrupt handling.

    Args:
      mode: has ``run_epoch(carry, epoch, key) -> EpochOutcome`` and ``score(record)`` (the
        early-stopping score, higher is better, or ``None``).
      carry: the starting carry (also the template a checkpoint is restored into).
      epochs: the total number of epochs (a resumed run continues up to it).
      key: the run key.
      checkpoint: where/when to checkpoint, or ``None``.
      patience: stop after this many epochs without a better score; the best carry is kept.
      progress: show a tqdm bar.
      on_epoch: called with each new epoch's record.
      on_start: called once before training with the history so far (a resumed run's).

    Returns:
      :class:`LoopResult`; after early stopping ``carry`` is the best epoch's.

    Raises:
      Interrupted: on Ctrl-C / SIGTERM, after saving the last completed epoch.
    """
    with _signals.guard() as gate:
        ckpt = _open(checkpoint, gate)
        try:
            best, meta = carry, LoopMeta()
            streams = getattr(mode, "streams", False)
            if ckpt is not None and checkpoint.resume:
                with gate.protected():
                    found = _resume(ckpt, carry)
                    if streams:
                        found = _within.resume_within(
                            checkpoint.directory, carry, found, LoopMeta, epochs
                        )
                carry, best, meta = found or (carry, best, meta)
            saver = _Saver(ckpt, checkpoint, carry, best, meta, gate)
            if on_start is not None:
                on_start(list(meta.history))
            bar = _progress(epochs, min(meta.epoch, epochs), progress)
            within = _within.WithinEpoch(saver, bar, mode.steps_per_epoch) if streams else None
            try:
                carry, best, meta = _epochs(
                    mode, saver, epochs, key, patience, bar, on_epoch, within
                )
            except KeyboardInterrupt as err:
                raise _interrupted(saver, within, err, checkpoint) from None
            finally:
                bar.close()
                if within is not None:
                    with gate.protected():
                        within.close()
        finally:
            if ckpt is not None:
                with gate.protected():
                    ckpt.close()
                    gate.unsaved = False
    final = best if meta.stopped == "early_stopping" else carry
    return LoopResult(final, best, list(meta.history), meta.stopped, meta.message)
