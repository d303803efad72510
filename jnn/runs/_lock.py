"""One run per folder: a running ``jnn train`` holds an exclusive lock on ``<out>/.lock``.

The lock is an ``fcntl.flock`` on the file, which also records the holder's process id. The
operating system releases it when the process ends, however it ends, so a lock left by a
dead process (a SIGKILL) is simply taken over; the next run notes whose it was. A second
run on a folder whose lock is held is refused at once, naming the holder's process id.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

__all__ = ["LOCK_NAME", "FolderBusy", "RunLock"]

LOCK_NAME = ".lock"


class FolderBusy(ValueError):
    """Another live process holds the run folder's lock."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunLock:
    """The lock of one run folder, held from :meth:`acquire` until :meth:`release` (or the
    process's end).

    Attributes:
      path: the lock file.
      previous: the process id a dead holder left in the file, or ``None``.
    """

    def __init__(self, path: Path, fd: int, previous: int | None):
        self.path, self._fd, self.previous = path, fd, previous

    @classmethod
    def acquire(cls, folder) -> RunLock:
        """Takes the lock of an existing ``folder``.

        Raises:
          FolderBusy: another process holds it (its process id is named).
        """
        path = Path(folder) / LOCK_NAME
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _recorded_pid(fd)
            os.close(fd)
            who = f"process {holder}" if holder else "another process"
            raise FolderBusy(
                f"{str(folder)!r} is in use by another jnn train run ({who}); wait for it to "
                "end or choose another --out"
            ) from None
        previous = _recorded_pid(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        stale = previous if previous not in (None, os.getpid()) else None
        return cls(path, fd, stale)

    def note(self) -> str | None:
        """One line about a lock taken over from a process that ended without releasing it."""
        if self.previous is None:
            return None
        state = "no longer running" if not _alive(self.previous) else "not holding it"
        return f"note: took over the lock {self.path} left by process {self.previous} ({state})"

    def release(self) -> None:
        """Empties the file (a clean end leaves no process id behind) and unlocks it."""
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, 0)
        os.close(self._fd)
        self._fd = None


def _recorded_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode(errors="replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
