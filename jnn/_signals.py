"""One handler for SIGINT and SIGTERM, whenever the signal lands.

A :class:`Gate` is what the process does with an interrupt:

- **while a checkpoint is written** (:meth:`Gate.protected`) the signal waits: the write
  completes, then the signal is acted on (a second signal abandons the write: the previous
  checkpoint stays intact, Orbax makes a checkpoint visible only once complete);
- **while there is trained work not yet on disk** (:attr:`Gate.unsaved`) the handler raises
  :class:`Stop` (a ``KeyboardInterrupt``) in the main thread, and the epoch loop saves the
  last completed epoch before it ends;
- **otherwise** (start-up, compilation of the first epoch, evaluation after the last
  checkpoint) there is nothing to save: a gate made with ``hard_exit=True`` (the ``jnn``
  command) prints one line and ends the process at once (exit 128 + signal number); a
  library gate raises :class:`Stop`.

Python runs signal handlers only between bytecodes of the main thread, so a main thread
inside a long C++ call (an XLA compilation) cannot react. A hard-exit gate therefore also
watches from a thread woken by the C-level handler (``signal.set_wakeup_fd``): when the
main thread has not acted within ``grace`` seconds (``unsaved_grace`` with work to save,
``write_grace`` while a write is in progress), or on a second signal, the watcher prints the
same line and ends the process itself.

The installed gate is found through ``signal.getsignal`` (the operating system's handler
table is the one record of it), so the epoch loop uses the command's gate when there is one.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import sys
import threading
import time
from collections.abc import Callable

__all__ = ["Gate", "Stop", "exit_code", "guard", "installed"]

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Stop(KeyboardInterrupt):
    """SIGINT or SIGTERM, raised in the main thread.

    Attributes:
      signal_name: ``"SIGINT"`` or ``"SIGTERM"``.
    """

    def __init__(self, signal_name: str):
        super().__init__(f"interrupted by {signal_name}")
        self.signal_name = signal_name


def exit_code(signal_name: str) -> int:
    """The shell's convention: 128 + the signal number (130 for SIGINT, 143 for SIGTERM)."""
    return 128 + int(getattr(signal, signal_name))


class Gate:
    """What an interrupt does now (see the module docstring).

    Args:
      hard_exit: end the process (``os._exit``) when there is nothing to save, and watch
        from a thread for a main thread that cannot react; for the ``jnn`` command.
      grace: seconds the watcher gives the main thread when there is nothing to save.
      unsaved_grace: seconds it gives the main thread to start saving trained work.
      write_grace: seconds it gives a checkpoint write in progress to complete.
    """

    def __init__(self, *, hard_exit=False, grace=2.0, unsaved_grace=20.0, write_grace=120.0):
        self.hard_exit = hard_exit
        self.graces = (grace, unsaved_grace, write_grace)
        self.received: list[str] = []
        self.pending = False  # a signal not yet taken up by the loop (acknowledge)
        self.unsaved = False
        self.writing = 0
        self.describe: Callable[[str], str] = lambda name: f"interrupted by {name}"
        self._exit_lock = threading.Lock()
        self._since = None
        self._heard = None  # the first signal the watcher heard of

    # ------------------------------------------------------------------ the handler

    def handle(self, signum, frame) -> None:
        """The Python-level handler of SIGINT and SIGTERM (main thread)."""
        name = signal.Signals(signum).name
        self.received.append(name)
        self._since = self._since or time.monotonic()
        if len(self.received) > 1 and self.hard_exit:
            self.exit_now(abandoned=self.writing > 0)
        self.pending = True
        if not self.writing:
            self.deliver()

    def deliver(self) -> None:
        """Acts on a pending signal: exit at once when nothing is left to save (hard-exit
        gate), else raise :class:`Stop` in the main thread."""
        name = self.received[-1]
        if self.hard_exit and not self.unsaved:
            self.exit_now()
        raise Stop(name)

    def poll(self) -> None:
        """Acts on a signal that arrived but was not taken up (e.g. a ``KeyboardInterrupt``
        raised inside a garbage-collector callback, where Python drops it)."""
        if self.pending and not self.writing:
            self.deliver()

    def acknowledge(self) -> None:
        """The loop has taken up the signal and is saving; nothing more to deliver."""
        self.pending = False

    @contextlib.contextmanager
    def protected(self):
        """A checkpoint write no first signal interrupts; a signal that arrived during it is
        acted on once it is complete."""
        self.writing += 1
        try:
            yield
        finally:
            self.writing -= 1
        self.poll()

    def exit_now(self, abandoned: bool = False) -> None:
        """Prints what was kept and how to resume, then ends the process (no unwinding, so
        no library's exit hooks can hang it)."""
        with self._exit_lock:
            name = self.received[-1] if self.received else "SIGTERM"
            try:
                message = self.describe(name)
            except Exception as err:  # noqa: BLE001 - the exit must happen regardless
                message = f"interrupted by {name} ({type(err).__name__}: {err})"
            if abandoned:
                message = f"second {name}: abandoned the checkpoint write in progress\n{message}"
            with contextlib.suppress(Exception):
                sys.stdout.flush()
            with contextlib.suppress(Exception):
                sys.stderr.write(message.rstrip("\n") + "\n")
                sys.stderr.flush()
            os._exit(exit_code(name))

    # ------------------------------------------------------------------ the watcher

    def _deadline(self) -> float:
        grace, unsaved_grace, write_grace = self.graces
        if self.writing or not self.pending and self.unsaved:  # saving (acknowledged)
            return self._since + write_grace
        return self._since + (unsaved_grace if self.unsaved else grace)

    def watch(self, read_fd: int) -> None:
        """The watcher thread: woken by the C-level handler through ``read_fd``."""
        count = 0
        while True:
            timeout = None if self._since is None else max(0.0, self._deadline() - time.monotonic())
            ready, _, _ = select.select([read_fd], [], [], timeout)
            if ready:
                numbers = os.read(read_fd, 64)
                count += len(numbers)
                self._heard = self._heard or signal.Signals(numbers[0]).name
                self._since = self._since or time.monotonic()
                if count > 1:
                    self.exit_now(abandoned=self.writing > 0)
                continue
            if self._since is not None and time.monotonic() >= self._deadline():
                if not self.received:  # the Python handler never ran: the main thread is stuck
                    self.received.append(self._heard)
                self.exit_now(abandoned=self.writing > 0)


def installed() -> Gate | None:
    """The gate whose handler is installed (for SIGTERM or SIGINT), if any."""
    for s in SIGNALS:
        owner = getattr(signal.getsignal(s), "__self__", None)
        if isinstance(owner, Gate):
            return owner
    return None


def _install(gate: Gate):
    # A signal the parent ignores stays ignored (SIGINT in a background job, ``nohup``).
    ignored = {s for s in SIGNALS if signal.getsignal(s) is signal.SIG_IGN}
    previous = {s: signal.signal(s, gate.handle) for s in SIGNALS if s not in ignored}
    if not gate.hard_exit:
        return previous, None
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    old_fd = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    threading.Thread(target=gate.watch, args=(read_fd,), name="jnn-signals", daemon=True).start()
    return previous, old_fd


@contextlib.contextmanager
def guard(**options):
    """The gate in force: the one already installed (the command's), else a new one
    installed for the duration (main thread only; elsewhere a gate that is never signalled).

    Args:
      options: :class:`Gate`'s options for a new gate.
    """
    current = installed()
    if current is not None:
        yield current
        return
    gate = Gate(**options)
    if threading.current_thread() is not threading.main_thread():
        yield gate
        return
    previous, old_fd = _install(gate)
    try:
        yield gate
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if old_fd is not None:
            signal.set_wakeup_fd(old_fd)
