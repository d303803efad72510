"""Work a run needs after training, started early so that it overlaps with work that must
happen anyway: the figure and event-file modules are imported while the data loads and the
program compiles, and the history's figures are drawn in a second process (on another core;
matplotlib would hold this process's GIL) while the test set is evaluated."""

from __future__ import annotations

import concurrent.futures
import contextlib
import importlib
import multiprocessing
import os
import subprocess
import sys
import threading

from jnn.runs._config import RunConfig

__all__ = ["FigureProcess", "HistoryPlots", "preload"]


def preload(config: RunConfig) -> FigureProcess | None:
    """Imports the modules the run's end will need: tensorboardX here (without PyTorch, see
    ``jnn.tensorboard.import_writer``); Orbax (the checkpoint manager) and matplotlib (through
    ``jnn.plots``) on a daemon thread while the data loads and the program compiles. An import
    that fails here fails again, with its own message, where it is used.

    Returns:
      The started :class:`FigureProcess` when the run draws figures (``close`` it), else None.
    """
    if config.tensorboard:
        from jnn import tensorboard

        with contextlib.suppress(ImportError):
            tensorboard.import_writer()
    names = ["orbax.checkpoint"] + (["jnn.plots"] if config.plots else [])

    def load():
        for name in names:
            try:
                importlib.import_module(name)
            except Exception:  # noqa: BLE001, S112 - reported where the module is used
                continue

    threading.Thread(target=load, name="jnn-preload", daemon=True).start()
    return FigureProcess.start() if config.plots and _primary() else None


def _primary() -> bool:
    from jnn.runs._folder import _primary as primary

    return primary()


class FigureProcess:
    """A second Python process (``jnn.runs._figure_worker``: a fresh interpreter, never a
    fork of a process running JAX) that calls ``jnn.plots`` functions for the run, one at a
    time. It imports matplotlib as it starts, while the run imports JAX, and ends with the
    run: ``close``, or the run's end of the connection closing."""

    def __init__(self, conn, process):
        self._conn, self._process = conn, process

    @classmethod
    def start(cls) -> FigureProcess | None:
        """The started process, or None where one cannot start (the run draws in-process)."""
        try:
            conn, child = multiprocessing.Pipe()
            command = [sys.executable, "-m", "jnn.runs._figure_worker", str(child.fileno())]
            path = os.pathsep.join(p for p in sys.path if p)  # where this process found jnn
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                pass_fds=[child.fileno()],
                env={**os.environ, "PYTHONPATH": path},
            )
        except (OSError, ValueError):
            return None
        child.close()
        return cls(conn, process)

    def call(self, name: str, *args):
        """Sends ``jnn.plots.<name>(*args)``; returns a function that waits for its result.

        Raises:
          OSError, EOFError: the process is gone (the caller draws in-process instead).
          RuntimeError: (from the returned function) the drawing itself failed.
        """
        self._conn.send((name, args))

        def result():
            ok, value = self._conn.recv()
            if not ok:
                raise RuntimeError(f"jnn.plots.{name} failed in the figure process: {value}")
            return value

        return result

    def close(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self._conn.send(None)
        self._conn.close()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()


class HistoryPlots:
    """The loss, accuracy and update-ratio figures, drawn from the moment training ends until
    the run needs them (``result``): in the run's :class:`FigureProcess` when it has one (the
    run draws the other figures meanwhile), on a thread otherwise, in-process again if the
    figure process is gone."""

    def __init__(self, config: RunConfig, folder, history, accuracy=True, figures=None):
        self._result = None
        self._draw_here = lambda: folder.write_history_plots(history, accuracy)
        if not config.plots:
            return
        if figures is not None:
            with contextlib.suppress(OSError, EOFError, ValueError):
                self._result = figures.call("history_curves", history, folder.path, accuracy)
                return
        pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="jnn-plots")
        self._result = pool.submit(self._draw_here).result
        pool.shutdown(wait=False)

    def result(self) -> dict | None:
        """``{name: path}`` once drawn (``None`` when the run draws no plots)."""
        if self._result is None:
            return None
        try:
            return self._result()
        except (OSError, EOFError):  # the figure process died: draw them here
            return self._draw_here()
