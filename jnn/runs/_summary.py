"""The summary keys every run has, whatever its mode: test figures, how it ended, diagnostics."""

from __future__ import annotations

__all__ = ["run_summary"]


def _ended(stopped, message) -> str | None:
    if stopped == "early_stopping":
        return f"early stopping: {message}"
    if stopped == "non_finite":
        return f"stopped on a NaN/inf: {message}"
    return None


def _diagnostics(setup, history, stats, stopped, message, params=None):
    import jnn.monitor

    diagnostics = jnn.monitor.diagnose(
        history, stats, inputs=_scale_sample(setup.ds.x_train), params=params
    )
    if stopped == "non_finite":
        diagnostics.insert(0, f"training stopped: {message}; {non_finite_cause(setup.dtype)}")
    return diagnostics


def non_finite_cause(dtype: str) -> str:
    """The likely cause of a NaN/inf stop, in the run's own terms."""
    if dtype == "float16":
        return (
            "with --dtype float16 the usual cause is float16 underflow (Adam's second moment "
            "of small gradients rounds to 0 and the next update overflows): use --dtype "
            "bfloat16 or float32, or SGD/momentum"
        )
    return (
        "a NaN/inf usually means the learning rate is far too high (or the inputs are not "
        "normalised)"
    )


def _scale_sample(x, rows: int = 8192):
    """The training inputs, or evenly spaced rows of memory-mapped ones (the input-scale
    diagnosis then reads ``rows`` examples, not the whole file)."""
    import numpy as np

    if not isinstance(x, np.memmap) or len(x) <= rows:
        return x
    return np.asarray(x[:: len(x) // rows])


def run_summary(setup, result, stats, test_accuracy, test_loss, params=None) -> dict:
    """The summary keys every run has: test figures, epochs, how it ended, diagnostics, and
    ``activations_note`` (one line) when the model cannot show its layers' outputs."""
    import jnn.monitor

    note = None if stats else jnn.monitor.activations_note(setup.model)
    return {
        "test_accuracy": test_accuracy,
        "test_loss": test_loss,
        "epochs_run": len(result.history),
        "stopped": result.stopped,
        "message": result.message,
        "ended": _ended(result.stopped, result.message),
        "diagnostics": _diagnostics(
            setup, result.history, stats, result.stopped, result.message, params
        ),
        **({"activations_note": note} if note else {}),
    }
