"""Checkpoints inside an epoch, for streamed training modes (``_stream``).

Between two chunks of a streamed epoch the loop may save the carry with the position in the
epoch (``LoopMeta.position``: the step within the epoch, the running sums of the epoch's
metrics, a Grain iterator's state and the global step). They go to ``within_epoch/`` inside
the checkpoint folder (a second Orbax manager, the newest two kept, numbered by the global
step), by the same time rule as epoch checkpoints (``checkpoint_seconds``). On resume the
newest intact in-epoch checkpoint wins over the epoch checkpoint when it lies in the same or
a later epoch, and the epoch continues from its step.
"""

from __future__ import annotations

import logging
import os
import time

from jnn.train import _sharding
from jnn.train._checkpoints import Checkpoints

__all__ = ["WithinEpoch", "held_steps", "open_within", "resume_within"]

log = logging.getLogger("jnn")
SUBFOLDER = "within_epoch"


def open_within(directory) -> Checkpoints:
    """The in-epoch checkpoints of the checkpoint folder ``directory``."""
    return Checkpoints(os.path.join(os.fspath(directory), SUBFOLDER))


def held_steps(directory) -> list[int]:
    """The global steps of the in-epoch checkpoints in ``directory`` (newest first)."""
    if not os.path.isdir(os.path.join(os.fspath(directory), SUBFOLDER)):
        return []
    within = open_within(directory)
    try:
        return within.epochs()
    finally:
        within.close()


def resume_within(directory, carry, found, meta_type, epochs: int):
    """``(carry, best, meta)`` of the newest in-epoch checkpoint when it is at or after the
    epoch checkpoint ``found`` (``(carry, best, meta)`` or ``None``); else ``found``."""
    within = open_within(directory)
    try:
        restored = within.restore(carry)
    finally:
        within.close()
    if restored is None:
        return found
    meta = meta_type.from_json(restored.meta)
    if found is not None and meta.epoch < found[2].epoch:
        return found
    position = meta.position or {}
    log.warning(
        "resuming %s from step %d (epoch %d of %d)",
        directory,
        position.get("global_step", 0),
        meta.epoch + 1,
        epochs,
    )
    if position.get("rewind") is False:
        log.warning(
            "the training data are a plain iterable, which cannot be rewound: epoch %d "
            "restarts from its first batch and skips the %d batches already trained (exact "
            "only when it yields the same batches again)",
            meta.epoch + 1,
            position.get("step", 0),
        )
    return restored.carry, restored.best, meta


class WithinEpoch:
    """The ``between(carry, position)`` hook a streamed mode calls after each chunk: moves
    the progress bar by steps and saves an in-epoch checkpoint when one is due by time.

    Args:
      saver: the loop's ``_Saver`` (its clock, policy and last completed epoch).
      bar: the tqdm bar (counted in epochs; a chunk advances it by its share of the epoch).
      steps_per_epoch: the epoch's length when known (else the bar moves at epoch ends).
    """

    def __init__(self, saver, bar, steps_per_epoch):
        self.saver, self.bar, self.steps_per_epoch = saver, bar, steps_per_epoch
        self.manager = None
        self.latest = None  # (carry, best, meta) after the last chunk (what an interrupt saves)
        self.shown = 0.0
        self.saved = None

    def __call__(self, carry, position, force: bool = False) -> None:
        _, best, meta = self.saver.completed
        meta = meta._replace(position=position)
        self.latest = (carry, best, meta)
        if self.steps_per_epoch:
            share = min(1.0, position["step"] / self.steps_per_epoch) - self.shown
            self.bar.update(share)
            self.shown += share
        self.saver.gate.unsaved = self.saver.ckpt is not None  # a signal now saves this chunk
        if self._due() or (force and self.saver.ckpt is not None):
            with self.saver.gate.protected():
                self.save()

    def epoch_done(self) -> float:
        """The bar's remaining share of the finished epoch (then the next starts at 0)."""
        rest, self.shown, self.latest = 1.0 - self.shown, 0.0, None
        return rest

    def _due(self) -> bool:
        saver = self.saver
        if saver.ckpt is None or saver.policy.every is not None:
            return False
        return _sharding.agreed(time.monotonic() - saver.last_time >= saver.policy.seconds)

    def save(self) -> None:
        """Writes the latest in-epoch state (in the background)."""
        if self.latest is None or self.saver.ckpt is None:
            return
        carry, best, meta = self.latest
        if self.manager is None:
            self.manager = open_within(self.saver.ckpt.directory)
        step = meta.position["global_step"]
        if step != self.saved:
            self.manager.save(step, carry, best, meta.to_json())
            self.saved = step
        self.saver.last_time = time.monotonic()

    def wait(self) -> None:
        """Blocks until the in-epoch checkpoint being written is on disk."""
        if self.manager is not None:
            self.manager.wait()

    def close(self) -> None:
        if self.manager is not None:
            self.manager.close()
