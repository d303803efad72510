"""Work a run needs after training, started early on a background thread so that it overlaps
with work that must happen anyway: the figure and event-file modules are imported while the
epochs run (XLA releases the GIL), and the history's figures are drawn while the test set is
evaluated."""

from __future__ import annotations

import concurrent.futures
import contextlib
import importlib
import threading

from jnn.runs._config import RunConfig

__all__ = ["HistoryPlots", "preload"]


def preload(config: RunConfig) -> threading.Thread:
    """Imports the modules the run's end will need: tensorboardX here (without PyTorch, see
    ``jnn.tensorboard.import_writer``); Orbax (the checkpoint manager) and matplotlib (through
    ``jnn.plots``) on a daemon thread while the data loads and the program compiles. An import
    that fails here fails again, with its own message, where it is used."""
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

    thread = threading.Thread(target=load, name="jnn-preload", daemon=True)
    thread.start()
    return thread


class HistoryPlots:
    """The loss, accuracy and update-ratio figures, drawn on a background thread from the
    moment training ends (``start``) until the run needs them (``result``)."""

    def __init__(self, config: RunConfig, folder, history, accuracy: bool = True):
        self._future = None
        if config.plots:
            pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="jnn-plots")
            self._future = pool.submit(folder.write_history_plots, history, accuracy)
            pool.shutdown(wait=False)

    def result(self) -> dict | None:
        """``{name: path}`` once drawn (``None`` when the run draws no plots)."""
        return None if self._future is None else self._future.result()
