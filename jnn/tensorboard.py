"""TensorBoard event files of a training run (written with tensorboardX; no TensorFlow).

``jnn.train.fit(..., tensorboard_dir=DIR)`` and ``jnn.ensemble.fit(..., tensorboard_dir=DIR)``
write, once per epoch (TensorBoard's step = the epoch number):

- scalars ``loss/train``, ``loss/val``, ``accuracy/train``, ``accuracy/val``,
  ``learning_rate``, ``update_ratio/LAYER`` and ``grad_norm/LAYER``;
- histograms ``weights/LAYER/LEAF`` of every parameter and ``activations/LAYER`` of every
  layer's output on up to 512 validation examples (host-side, at the epoch's end).

An ensemble's folder holds the ensemble's series (``loss/val`` is the ensemble's NLL) and one
sub-folder per member (``member_0``, ...) with that member's series and histograms and its
hyperparameters, so TensorBoard draws the members side by side. ``jnn train`` adds the run's
figures (:func:`write_figures`) and its configuration as hyperparameters
(:func:`write_hparams`). Open them with ``tensorboard --logdir runs``.

The epoch's work on the training thread is one host copy of the parameters; histograms,
the activations' forward pass and the writing happen on one background thread, and
tensorboardX writes the files asynchronously. Without tensorboardX installed nothing is
written and :func:`unavailable` says why (training is unaffected).
"""

from __future__ import annotations

import concurrent.futures
import importlib.util
import logging
import os
import struct
import sys
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

__all__ = [
    "EpochLog",
    "histogram_epoch",
    "import_writer",
    "Observed",
    "member_dir",
    "open_log",
    "unavailable",
    "watched",
    "write_figures",
    "write_hparams",
    "write_scalars",
]

log = logging.getLogger("jnn")
SAMPLE = 512  # examples whose activations are histogrammed each epoch


def unavailable() -> str | None:
    """Why no event files can be written (tensorboardX missing), or ``None`` if they can."""
    try:
        found = importlib.util.find_spec("tensorboardX") is not None
    except (ImportError, ValueError):  # a module set to None in sys.modules, a broken install
        found = False
    if not found:
        return (
            "no TensorBoard event files: tensorboardX is not installed (pip install tensorboardX)"
        )
    return None


def import_writer():
    """Imports tensorboardX (call it on the main thread), without PyTorch: tensorboardX imports
    ``torch`` when it is installed (~1 s, measured 1.07 of 1.25 s) only to accept torch tensors,
    which jnn never passes. A ``torch`` imported before, or after, is left as it is.

    Returns:
      The ``tensorboardX`` module.
    """
    if "tensorboardX" in sys.modules or "torch" in sys.modules:
        import tensorboardX

        return tensorboardX
    sys.modules["torch"] = None  # `import torch` raises ImportError while this is set
    try:
        import tensorboardX
    finally:
        del sys.modules["torch"]
    return tensorboardX


def _writer(logdir, purpose: str, purge_step=None):
    """A ``SummaryWriter``; ``purpose`` and the process id end the file name, so that writers
    opened in the same second write separate files (the name holds whole seconds only)."""
    SummaryWriter = import_writer().SummaryWriter

    suffix = f".{purpose}.{os.getpid()}"
    return SummaryWriter(str(logdir), purge_step=purge_step, flush_secs=10, filename_suffix=suffix)


def member_dir(logdir, k: int, count: int) -> Path:
    """Member ``k``'s sub-folder of an ensemble's ``logdir`` (``member_07`` of 10)."""
    return Path(logdir) / f"member_{k:0{len(str(count - 1))}d}"


# ----------------------------------------------------------------------------- scalars

_SCALARS = {
    "train_loss": "loss/train",
    "val_loss": "loss/val",
    "train_acc": "accuracy/train",
    "val_acc": "accuracy/val",
    "learning_rate": "learning_rate",
}


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value)


def record_scalars(record: dict) -> dict:
    """``{tag: value}`` of one epoch record (the finite values only)."""
    out = {tag: record.get(key) for key, tag in _SCALARS.items()}
    for group in ("update_ratio", "grad_norm"):
        out.update({f"{group}/{name}": v for name, v in (record.get(group) or {}).items()})
    return {tag: float(v) for tag, v in out.items() if _finite(v)}


HISTOGRAM_VALUES = 1 << 15  # values per histogram at most (an even stride through the rest)


def _sampled(values) -> np.ndarray:
    """``values`` flattened, thinned by an even stride to at most ``HISTOGRAM_VALUES`` (the
    histogram's shape is kept; its count and sum are then those of the sample)."""
    flat = np.asarray(values).ravel()
    stride = -(-flat.size // HISTOGRAM_VALUES)
    return np.asarray(flat[::stride], np.float64)


def _histograms(writer, step, params, activations) -> None:
    from jnn import _tree

    groups = (("weights", _tree.named_leaves(params)), ("activations", activations or {}))
    for group, named in groups:
        for name, leaf in named.items():
            values = _sampled(leaf)
            if values.size and np.isfinite(values).all():
                writer.add_histogram(f"{group}/{name}", values, step)


# ----------------------------------------------------------------------------- hparams


def _hparam_value(value):
    if isinstance(value, (bool, int, float, str)):
        return value
    if value is None:
        return "none"
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


def write_hparams(logdir, hparams: dict) -> None:
    """Writes ``hparams`` to the HParams tab of ``logdir``'s run; no-op without tensorboardX.

    The tab lists the epoch series ``accuracy/val``, ``loss/val`` (their last values) and the
    final ``test/accuracy``, ``test/loss`` (:func:`write_scalars`), so that runs and members
    compare in one table.
    """
    if unavailable():
        return
    from tensorboardX.summary import hparams as hparams_summary

    clean = {k: _hparam_value(v) for k, v in hparams.items()}
    shown = dict.fromkeys(("accuracy/val", "loss/val", "test/accuracy", "test/loss"), 0.0)
    writer = _writer(logdir, "hparams")
    try:
        file_writer = writer._get_file_writer()
        for summary in hparams_summary(clean, shown):
            file_writer.add_summary(summary)
    finally:
        writer.close()


def write_scalars(logdir, scalars: dict, step: int) -> None:
    """Adds ``{tag: value}`` at ``step`` to ``logdir``'s run (e.g. the final test accuracy);
    no-op without tensorboardX."""
    if unavailable():
        return
    writer = _writer(logdir, "scalars")
    try:
        for tag, value in scalars.items():
            if _finite(value):
                writer.add_scalar(tag, float(value), step)
    finally:
        writer.close()


# ----------------------------------------------------------------------------- images


def _png_size(data: bytes) -> tuple[int, int]:
    """``(width, height)`` from a PNG's IHDR chunk."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG file")
    return struct.unpack(">II", data[16:24])


def write_figures(logdir, figures: dict) -> None:
    """Adds PNG files ``{tag: path}`` (the run's figures) as images at step 0; no-op
    without tensorboardX. The PNG bytes are embedded as they are (no decoding)."""
    if unavailable() or not figures:
        return
    from tensorboardX.proto.summary_pb2 import Summary

    writer = _writer(logdir, "figures")
    try:
        file_writer = writer._get_file_writer()
        for tag, path in figures.items():
            data = Path(path).read_bytes()
            width, height = _png_size(data)
            image = Summary.Image(
                height=height, width=width, colorspace=4, encoded_image_string=data
            )
            file_writer.add_summary(
                Summary(value=[Summary.Value(tag=f"figures/{tag}", image=image)]), 0
            )
    finally:
        writer.close()


# ----------------------------------------------------------------------------- per epoch


def _activations_fn(model, sample):
    """``(single, stacked)``: ``params, state -> {layer: outputs}`` on ``sample``, for one
    model (through ``jnn.monitor.intermediates_program``, the program the run's activation
    statistics use) and vmapped over an ensemble's members; ``None`` for a model without
    ``apply_intermediates``."""
    if sample is None or not hasattr(model, "apply_intermediates"):
        return None
    import jax
    import jax.numpy as jnp

    from jnn import monitor

    def cast(params):
        leaves = jax.tree.leaves(params)
        x = np.asarray(sample)
        if leaves and np.issubdtype(x.dtype, np.floating):
            x = x.astype(leaves[0].dtype)
        return x

    def arrays(outputs):
        return {k: v for k, v in outputs.items() if hasattr(v, "dtype")}

    def single(params, state):  # host copies: the entry a run's final (host) state uses
        params, state = monitor.program_inputs(jax.tree.map(np.asarray, (params, state)))
        return arrays(monitor.intermediates_program(model)(params, state, cast(params), None))

    def one(params, state):
        x = jnp.asarray(cast(params))
        return arrays(model.apply_intermediates(params, state, x, train=False)[2])

    return single, jax.jit(jax.vmap(one))


def histogram_epoch(epoch: int) -> bool:
    """Whether epoch ``epoch`` (1-based) gets weight and activation histograms: powers of two
    and multiples of ten (1, 2, 4, 8, 10, 16, 20, 30, 32, ...), dense early when weights move
    most, ~log2(E) + E/10 points in all (each costs a forward pass, a copy and a sort per
    layer). Scalars are written every epoch."""
    return epoch >= 1 and (epoch & (epoch - 1) == 0 or epoch % 10 == 0)


class EpochLog:
    """The event files of one ``fit`` (one writer; an ensemble's: one more per member).

    Holds file handles, never arrays; :meth:`epoch` hands the host copy of the parameters to
    a background thread and returns.

    Args:
      logdir: the folder (created on the first epoch).
      model: the model (for the activation histograms; any model with
        ``apply_intermediates``, else weights only).
      sample: inputs whose layer outputs are histogrammed (``None``: none).
      members: ``K`` for an ensemble (stacked parameters), ``None`` for one model.
      member_hparams: per member ``{name: value}`` written to its HParams tab.
    """

    def __init__(self, logdir, model=None, sample=None, members=None, member_hparams=None):
        self.logdir, self.members, self.member_hparams = Path(logdir), members, member_hparams
        self._forward = _activations_fn(model, None if sample is None else sample[:SAMPLE])
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="jnn-tb")
        self._writers, self._failed, self._futures = None, False, []

    def _open(self, first_epoch: int) -> None:
        # purge_step: a resumed run hides the epochs logged after its checkpoint.
        self._writers = [_writer(self.logdir, "epochs", purge_step=first_epoch)]
        if self.members:
            self._writers += [
                _writer(member_dir(self.logdir, k, self.members), "epochs", first_epoch)
                for k in range(self.members)
            ]
            for k, values in enumerate(self.member_hparams or ()):
                write_hparams(member_dir(self.logdir, k, self.members), values)

    def epoch(self, record: dict, params, model_state) -> None:
        """Logs one epoch's record and histograms (asynchronously)."""
        import jax

        leaves = jax.tree.leaves((params, model_state))
        if not histogram_epoch(record["epoch"]):
            host = (None, None)  # scalars only: nothing to copy, no forward pass
        elif all(getattr(a, "is_fully_addressable", True) for a in leaves):
            host = jax.device_get((params, model_state))  # before the next epoch donates them
        else:  # another process holds part of them: scalars only
            host = (None, None)
        self._futures = [f for f in self._futures if not f.done()]
        self._futures.append(self._pool.submit(self._write, record, *host))

    def _write(self, record, params, model_state) -> None:
        if self._failed:
            return
        try:
            if self._writers is None:
                self._open(record["epoch"])
            self._write_all(record, params, model_state)
        except Exception as err:  # noqa: BLE001 - logging never stops training
            self._failed = True
            log.warning("TensorBoard logging stopped: %s", err)

    def _write_all(self, record, params, model_state) -> None:
        step = record["epoch"]
        root, *member_writers = self._writers
        for tag, value in record_scalars(record).items():
            root.add_scalar(tag, value, step)
        if not self.members:
            if params is not None:
                _histograms(root, step, params, self._activations(params, model_state, False))
            return
        rows = {r["member"]: r for r in record.get("members", ())}
        for k, writer in enumerate(member_writers):
            for tag, value in record_scalars(rows.get(k, {})).items():
                writer.add_scalar(tag, value, step)
        if params is None:
            return
        acts = self._activations(params, model_state, True)
        for k, writer in enumerate(member_writers):
            pick = lambda tree, k=k: None if tree is None else {n: a[k] for n, a in tree.items()}
            member_params = _index(params, k)
            _histograms(writer, step, member_params, pick(acts))

    def _activations(self, params, model_state, stacked: bool):
        if self._forward is None or params is None:
            return None
        try:
            return _to_host(self._forward[int(stacked)](params, model_state))
        except Exception as err:  # noqa: BLE001 - e.g. a model whose intermediates differ
            log.info("no activation histograms: %s", err)
            self._forward = None
            return None

    def close(self) -> None:
        """Waits for the pending epochs and closes the files."""
        self._pool.shutdown(wait=True)
        for writer in self._writers or ():
            writer.close()


def _index(tree, k):
    import jax

    return jax.tree.map(lambda a: a[k], tree)


def _to_host(tree):
    import jax

    return {k: np.asarray(v) for k, v in jax.device_get(tree).items()}


def open_log(logdir, model=None, sample=None, members=None, member_hparams=None):
    """An :class:`EpochLog` for ``logdir``, or ``None`` (no ``logdir``, or tensorboardX is not
    installed: a one-line warning says so)."""
    if logdir is None:
        return None
    reason = unavailable()
    if reason:
        log.warning(reason)
        return None
    import_writer()  # here, not on the writing thread: see import_writer
    return EpochLog(logdir, model, sample, members, member_hparams)


class Observed(NamedTuple):
    """A training mode whose every kept epoch is also handed to ``observe(record, carry)``
    (the epoch loop's mode protocol: ``run_epoch`` and ``score``)."""

    mode: Any
    observe: Any

    def __getattr__(self, name):  # the rest of the mode protocol (a streamed mode's too)
        if name in ("mode", "observe") or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.mode, name)

    def run_epoch(self, carry, epoch, key, **position):
        outcome = self.mode.run_epoch(carry, epoch, key, **position)
        if outcome.record is not None:
            self.observe(outcome.record, outcome.carry)
        return outcome

    def score(self, record):
        return self.mode.score(record)


def watched(mode, epoch_log: EpochLog | None, state_of):
    """``mode``, its epochs also logged to ``epoch_log`` when there is one; ``state_of(carry)``
    gives ``(params, model_state)``."""
    if epoch_log is None:
        return mode
    return Observed(mode, lambda record, carry: epoch_log.epoch(record, *state_of(carry)))
