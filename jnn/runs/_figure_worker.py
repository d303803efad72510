"""The figure process of a run (``python -m jnn.runs._figure_worker FD``): calls the
``jnn.plots`` functions it is sent over the connection ``FD``, in order, and sends back each
result (or the error's message), until it is told to stop or the run's end closes (the run
ended, however it ended). Started by ``_overlap.FigureProcess`` as a fresh interpreter, so
it never re-runs the caller's script (as ``multiprocessing``'s spawn would, through
``__main__``) and is never a fork of a process running JAX."""

from __future__ import annotations

import signal
import sys
from multiprocessing.connection import Connection

__all__ = ["serve"]


def serve(conn: Connection) -> None:
    """Draws what ``conn`` sends: ``(name, args)`` jobs; ``None`` (or the pipe closing) ends."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the run's to handle
    from jnn import plots

    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            return
        if job is None:
            return
        name, args = job
        try:
            conn.send((True, getattr(plots, name)(*args)))
        except Exception as err:  # noqa: BLE001 - sent back, raised in the run
            conn.send((False, f"{type(err).__name__}: {err}"))


if __name__ == "__main__":
    serve(Connection(int(sys.argv[1])))
