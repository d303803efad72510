"""What ``jnn train`` says (and leaves on disk) when SIGINT or SIGTERM ends it.

The truth is read from the disk, not from the loop's memory: the newest checkpoint is the
newest ``checkpoint/<epoch>`` folder (Orbax renames a checkpoint to its epoch only once it
is complete). A run folder this run created and that holds no checkpoint yet is removed
(nothing was trained that could be kept); a folder that existed before is left as it was.
"""

from __future__ import annotations

import shlex
import shutil
from pathlib import Path

__all__ = ["describe", "newest_checkpoint", "resume_command", "startup"]


def resume_command(out) -> str:
    return f"jnn train --out {shlex.quote(str(out))} --resume"


def newest_checkpoint(checkpoint_dir) -> int | None:
    """The newest complete checkpoint's epoch in ``checkpoint_dir``, or ``None``."""
    path = Path(checkpoint_dir)
    if not path.is_dir():
        return None
    epochs = [int(p.name) for p in path.iterdir() if p.name.isdigit() and p.is_dir()]
    return max(epochs, default=None)


def newest_within_step(checkpoint_dir) -> int | None:
    """The newest in-epoch checkpoint's global step (``checkpoint/within_epoch/<step>``, see
    ``jnn.train._within``), or ``None``."""
    path = Path(checkpoint_dir) / "within_epoch"
    if not path.is_dir():
        return None
    steps = [int(p.name) for p in path.iterdir() if p.name.isdigit() and p.is_dir()]
    return max(steps, default=None)


def _newer_within(checkpoint_dir, epoch, step) -> bool:
    """Whether the in-epoch checkpoint ``step`` was written after the epoch one."""
    if step is None:
        return False
    if epoch is None:
        return True
    path = Path(checkpoint_dir)
    return (path / "within_epoch" / str(step)).stat().st_mtime > (path / str(epoch)).stat().st_mtime


def startup(signal_name: str) -> str:
    return f"interrupted by {signal_name} during start-up; nothing to save"


def describe(folder, out, created: bool):
    """``describe(signal_name) -> message`` for the run in ``folder`` (``out`` as the user
    typed it); removes ``folder`` when this run ``created`` it and it holds no checkpoint."""

    def message(signal_name: str) -> str:
        epoch = newest_checkpoint(folder.checkpoint_dir)
        step = newest_within_step(folder.checkpoint_dir)
        if _newer_within(folder.checkpoint_dir, epoch, step):
            return (
                f"interrupted by {signal_name} inside an epoch: saved step {step} to "
                f"{folder.checkpoint_dir}\nresume with: {resume_command(out)}"
            )
        if epoch is not None:
            return (
                f"interrupted by {signal_name}; epoch {epoch} is saved in {folder.checkpoint_dir}"
                f"\nresume with: {resume_command(out)}"
            )
        if created:
            shutil.rmtree(folder.path, ignore_errors=True)
            return (
                f"interrupted by {signal_name} before the first epoch was saved; nothing to "
                f"save (removed the new run folder {out})"
            )
        return (
            f"interrupted by {signal_name} before the first epoch was saved; nothing to save "
            f"in {out}"
        )

    return message
