"""The run folder: ``config.json``, ``metrics.jsonl``, ``checkpoint/``, plots, ``summary.json``
and ``report.md``. Only process 0 of a multi-process run writes it."""

from __future__ import annotations

import functools
import json
import math
import os
import shutil
import sys
from pathlib import Path

__all__ = ["RunFolder", "jsonable"]

PLOT_TITLES = {
    "loss": "Loss per epoch",
    "accuracy": "Train vs validation accuracy",
    "update_ratio": "Update/weight ratio per layer (target 1e-3)",
    "activations": "Activations per layer",
    "first_layer": "First-layer weights",
    "reliability": "Reliability diagram (ensemble, test set)",
}


def jsonable(value):
    """Python floats/ints/lists/dicts for JSON: arrays and NumPy scalars converted, NaN ->
    ``None``, infinities clipped to +-1e308."""
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if hasattr(value, "tolist"):
        return jsonable(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else (1e308 if value > 0 else -1e308)
    return value


def _is_run_config(path: Path) -> bool:
    """Whether ``path`` is a ``config.json`` that jnn wrote (not a file of the user's)."""
    try:
        stored = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(stored, dict) and {"model", "optimizer", "widths", "epochs"} <= set(stored)


def _primary() -> bool:
    """Process 0 of a multi-process run, or the only process (JAX is not consulted before
    ``jax.distributed`` is initialised, so this never starts JAX's backend early)."""
    jax = sys.modules.get("jax")
    if jax is None or not jax.distributed.is_initialized():
        return True
    return jax.process_index() == 0


def _primary_only(method=None, *, otherwise=None):
    """Runs ``method`` in process 0 only; the other processes of a run write nothing and get
    ``otherwise()`` (``None`` by default)."""
    if method is None:
        return functools.partial(_primary_only, otherwise=otherwise)

    @functools.wraps(method)
    def run(self, *args, **kwargs):
        if _primary():
            return method(self, *args, **kwargs)
        return otherwise() if otherwise is not None else None

    return run


class RunFolder:
    """Reads and writes one run folder.

    Args:
      path: the folder (created by :meth:`create` only once a run really starts).
    """

    def __init__(self, path):
        self.path = Path(path)

    @property
    def checkpoint_dir(self) -> Path:
        return (self.path / "checkpoint").absolute()

    def holds_run(self) -> bool:
        """Whether a run worth protecting lives here: a finished run (``summary.json``), one
        with a checkpoint of a completed epoch, or a ``config.json`` that is not jnn's. A
        folder left by a start that failed before its first checkpoint is not one: the same
        command starts again in it."""
        if (self.path / "summary.json").exists() or self.has_checkpoint():
            return True
        config = self.path / "config.json"
        return config.exists() and not _is_run_config(config)

    def has_checkpoint(self) -> bool:
        """Whether ``checkpoint/`` holds a checkpoint of a completed epoch, or one taken inside
        an epoch (a run that stopped inside its first epoch resumes from it)."""
        from jnn.runs._interrupts import newest_checkpoint, newest_within_step

        found = newest_checkpoint(self.checkpoint_dir), newest_within_step(self.checkpoint_dir)
        return found != (None, None)

    def check_writable(self) -> None:
        """Raises ``OSError`` unless the folder (or its nearest existing parent) is writable;
        creates nothing."""
        probe = self.path
        while not probe.exists():
            if probe.parent == probe:
                break
            probe = probe.parent
        if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
            raise OSError(
                f"cannot write the output folder {str(self.path)!r} ({probe} is not a "
                "writable folder)"
            )

    @_primary_only
    def create(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)

    @_primary_only
    def clear(self) -> None:
        """Removes a previous run's files (``--overwrite``)."""
        shutil.rmtree(self.checkpoint_dir, ignore_errors=True)
        for name in (
            "config.json",
            "metrics.jsonl",
            "summary.json",
            "report.md",
            "data.json",
            "preprocess.npz",
        ):
            (self.path / name).unlink(missing_ok=True)
        for events in [*self.path.glob("events.out.tfevents.*"), *self.path.glob("member_*")]:
            shutil.rmtree(events) if events.is_dir() else events.unlink(missing_ok=True)

    @_primary_only
    def save_fingerprint(self, data) -> None:
        """``data.json``: the fingerprint of the ``--data`` file (see ``_fingerprint``)."""
        from jnn.runs._fingerprint import record

        record(self.path, data)

    def load_config(self) -> dict:
        return json.loads((self.path / "config.json").read_text())

    @_primary_only
    def save_config(self, config) -> None:
        config.save(self.path / "config.json")

    @_primary_only
    def save_preprocess(self, stats) -> None:
        """``preprocess.npz``: the ``--preprocess`` statistics fitted on the training split."""
        from jnn.runs import _preprocess

        _preprocess.save(self.path, stats)

    @_primary_only
    def append_metrics(self, record: dict) -> None:
        with (self.path / "metrics.jsonl").open("a") as f:
            f.write(json.dumps(jsonable(record)) + "\n")

    @_primary_only
    def write_metrics(self, history) -> None:
        """Rewrites ``metrics.jsonl`` to exactly ``history`` (e.g. a resumed checkpoint's)."""
        lines = "".join(json.dumps(jsonable(r)) + "\n" for r in history)
        (self.path / "metrics.jsonl").write_text(lines)

    def read_metrics(self) -> list:
        path = self.path / "metrics.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    @_primary_only
    def write_summary(self, summary: dict) -> None:
        (self.path / "summary.json").write_text(json.dumps(jsonable(summary), indent=2) + "\n")

    @_primary_only(otherwise=dict)
    def write_history_plots(self, history, accuracy=True) -> dict:
        """The figures drawn from the history alone (loss, accuracy, update ratio); returns
        ``{name: path}``. A run draws them while it evaluates (see ``_overlap``)."""
        import jnn.plots as plots

        return plots.history_curves(history, self.path, accuracy)

    @_primary_only(otherwise=dict)
    def write_plots(
        self, history, stats, params, image_shape, reliability=None, drawn=None, accuracy=True
    ) -> dict:
        """Writes the babysitting figures; returns ``{name: file name}``.

        Args:
          history: the per-epoch records.
          stats: ``jnn.monitor.activation_stats`` of the final model.
          params: the final params (the first layer's weights are drawn).
          image_shape: the inputs' spatial layout, or ``None``.
          reliability: optional ``(probs, labels)`` for the reliability diagram.
          drawn: a function returning :meth:`write_history_plots`' result, drawn elsewhere
            meanwhile (called once the figures drawn here are done).
        """
        import jnn.plots as plots

        more = {}
        if stats:  # none: the model does not show its layers' outputs (the report says so)
            more["activations"] = plots.activation_histograms(stats, self.path / "activations.png")
        first = plots.first_layer(params, self.path / "first_layer.png", image_shape=image_shape)
        if first is not None:
            more["first_layer"] = first
        if reliability is not None:
            more["reliability"] = plots.reliability_diagram(
                *reliability, self.path / "reliability.png"
            )
        history_plots = drawn() if drawn is not None else None
        if history_plots is None:
            history_plots = self.write_history_plots(history, accuracy)
        written = {**history_plots, **more}
        return {k: Path(v).name for k, v in written.items()}

    @_primary_only
    def write_report(self, config, summary: dict, plots: dict, tables: list[str] = ()) -> None:
        """``report.md``: result, how training ended, diagnostics, extra tables (the ensemble's
        member table), the configuration and the plots."""
        source = config.data or config.dataset
        lines = [f"# jnn run: {config.model} on {source}", "", summary["headline"], ""]
        if summary.get("ended"):
            lines += [f"**How training ended:** {summary['ended']}", ""]
        if summary.get("last_epoch"):
            lines += [summary["last_epoch"], ""]
        lines += ["## Diagnostics", ""]
        lines += [f"- {d}" for d in summary["diagnostics"]] or ["- no problems found"]
        lines += [f"- {why}" for why in summary.get("absent_plots", [])]
        for table in tables:
            lines += ["", table]
        config_json = json.dumps(config.to_json(), indent=2)
        lines += ["", "## Configuration", "", "```json", config_json, "```", ""]
        if plots:
            lines += ["## Plots", ""]
            for key, name in plots.items():
                lines += [f"### {PLOT_TITLES.get(key, key)}", "", f"![{key}]({name})", ""]
        if summary.get("activations_note"):  # one line instead of an empty figure
            level = "###" if plots else "##"
            lines += [f"{level} {PLOT_TITLES['activations']}", "", summary["activations_note"], ""]
        lines += [
            "## Files",
            "",
            "- `config.json`: the options of this run",
            "- `metrics.jsonl`: one JSON record per epoch",
            "- `summary.json`: test accuracy, diagnostics, activation statistics, timings",
            f"- `checkpoint/`: the orbax checkpoint (`jnn train --out {self.path} --resume`)",
            "- `events.out.tfevents.*` (and `member_*/` of an ensemble): TensorBoard event "
            f"files (`tensorboard --logdir {self.path.parent}`)",
            "",
        ]
        (self.path / "report.md").write_text("\n".join(lines))
