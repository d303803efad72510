"""Where the training data live: resident on the device, or streamed from the host.

``fit`` and ``ensemble.fit`` accept three forms of ``train_data`` (and ``val_data``):

- ``(x, y)`` arrays that fit: put on the device once (:func:`resident`); each epoch is one
  compiled program.
- ``(x, y)`` arrays that should not be copied: memory-mapped arrays (``np.memmap``,
  ``np.load(path, mmap_mode="r")``) or arrays whose bytes exceed the memory budget
  (``memory_budget``, default :data:`DEFAULT_MEMORY_BUDGET`): :class:`ArrayStream`. The
  permutation is drawn exactly as for resident data; each chunk of steps gathers its rows on
  the host (in the worker thread of ``_stream``).
- Any re-iterable of ``(x, y)`` batches (:class:`BatchStream`), and Grain ``MapDataset`` /
  ``IterDataset`` / ``DataLoader`` (:class:`BatchStream` with ``grain=True``: its iterator
  state goes into every checkpoint).

The streams produce *chunks* ``(xs, ys)`` shaped ``(S, B, ...)`` (``(S, K, B, ...)`` for
per-member batches): ``S`` consecutive steps, trained by one compiled scan.
"""

from __future__ import annotations

import base64
import itertools
import json
import sys
from collections.abc import Iterator
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jnn import data as _data
from jnn.train._state import cast_inputs

__all__ = [
    "CHUNK_BYTES",
    "convolves_in_xla",
    "per_step_stream",
    "input_sample",
    "DEFAULT_MEMORY_BUDGET",
    "ArrayStream",
    "BatchStream",
    "Chunk",
    "as_stream",
    "checked_data",
    "resident",
    "take",
]

DEFAULT_MEMORY_BUDGET = 1 << 30
"""Arrays (``x`` and ``y`` together) larger than this many bytes are streamed (1 GiB)."""

CHUNK_BYTES = 64 << 20
"""A chunk gathers about this many bytes of inputs (at least one step)."""


def take(data, idx):
    """``(x[idx], y[idx])`` on the device (the gather of a resident epoch)."""
    x, y = data
    return jnp.take(x, idx, axis=0), jnp.take(y, idx, axis=0)


def resident(pair, params, layout=None):
    """``(x, y)`` on the device(s) for the whole run: ``x`` cast to the params' dtype; with a
    mesh layout, replicated on every device of it."""
    x, y = pair
    placed = (jax.device_put(cast_inputs(jnp.asarray(x), params)), jax.device_put(y))
    return placed if layout is None else layout.resident(placed)


def _num_classes_of(model, state, x_shape, x_dtype, y_dtype, y_ndim):
    """The number of classes the model's outputs score, or ``None`` (regression, multi-label)."""
    if not np.issubdtype(y_dtype, np.integer):
        return None
    out = jax.eval_shape(
        lambda p, s, xx: model.apply(p, s, cast_inputs(xx, p), train=False)[0],
        state.params,
        state.model_state,
        jax.ShapeDtypeStruct((1, *x_shape[1:]), x_dtype),
    )
    if hasattr(out, "num_classes"):
        return int(out.num_classes)
    shape = getattr(out, "shape", None)
    return int(shape[-1]) if shape is not None and len(shape) == y_ndim + 1 else None


def num_classes_of(model, state, x_shape, x_dtype, y):
    """The number of classes the model's outputs score, or ``None`` (regression, multi-label)."""
    y = np.asarray(y)
    return _num_classes_of(model, state, x_shape, x_dtype, y.dtype, y.ndim)


# ----------------------------------------------------------------------------- the forms


def _is_pair(data) -> bool:
    return (
        isinstance(data, (tuple, list))
        and len(data) == 2
        and all(hasattr(a, "shape") and hasattr(a, "dtype") for a in data)
    )


def _is_grain(data) -> bool:
    grain = sys.modules.get("grain")
    kinds = tuple(getattr(grain, n) for n in ("MapDataset", "IterDataset", "DataLoader") if grain)
    return bool(kinds) and isinstance(data, kinds)


def _mapped(a) -> bool:
    return isinstance(a, np.memmap)


def as_stream(data, memory_budget: int | None, steps_per_epoch: int | None, name: str):
    """``None`` when ``data`` stay resident; else the stream that feeds them.

    Args:
      data: ``(x, y)`` arrays, a re-iterable of ``(x, y)`` batches, or a Grain dataset/loader.
      memory_budget: arrays over this many bytes are streamed (``None``: only mapped ones).
      steps_per_epoch: bounds an iterable's epoch (required for an endless one).
      name: ``"train"`` or ``"val"`` (messages).

    Raises:
      ValueError: ``steps_per_epoch`` with arrays, or data of no known form.
    """
    if _is_pair(data):
        if steps_per_epoch is not None and name == "train":
            raise ValueError(
                "steps_per_epoch bounds an iterable of batches; (x, y) arrays always run "
                "N // batch_size steps per epoch."
            )
        x, y = data
        over = memory_budget is not None and x.nbytes + y.nbytes > memory_budget
        return ArrayStream(x, y) if _mapped(x) or _mapped(y) or over else None
    if isinstance(data, (str, bytes, dict)) or not hasattr(data, "__iter__"):
        raise ValueError(
            f"{name}_data must be (x, y) arrays, an iterable of (x, y) batches or a Grain "
            f"dataset, got {type(data).__name__}."
        )
    if steps_per_epoch is not None and steps_per_epoch < 1:
        raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}.")
    return BatchStream(data, steps_per_epoch, _is_grain(data), name)


class Chunk(NamedTuple):
    """``S`` consecutive steps of batches on the host, and where the epoch stands after them.

    Attributes:
      xs, ys: ``(S, B, ...)`` (or ``(S, K, B, ...)``) host arrays, or device arrays once placed.
      end: the step of the epoch after this chunk.
      state: the source's state after this chunk (JSON-able), or ``None``.
    """

    xs: Any
    ys: Any
    end: int
    state: Any = None


def chunk_steps(batch_bytes: int, steps: int | None, requested: int | None) -> int:
    """Steps per chunk: ``requested``, else about :data:`CHUNK_BYTES` of inputs."""
    if requested is not None:
        if requested < 1:
            raise ValueError(f"chunk_steps must be >= 1, got {requested}.")
        return requested
    s = max(1, CHUNK_BYTES // max(1, batch_bytes))
    return s if steps is None else min(s, steps)


class ArrayStream:
    """Host arrays (memory-mapped or large) streamed in chunks of a drawn permutation.

    Rewindable: a position is just the step, so resume is exact.
    """

    rewindable = True
    indexable = True

    def __init__(self, x, y):
        self.x, self.y = x, y
        self.num_examples = len(x)

    def example(self):
        return self.x[:1], self.y[:1]

    def gather(self, idx):
        """Rows ``idx`` (any shape) of ``x`` and ``y``, shaped ``idx.shape + row shape``."""
        flat = np.asarray(idx).reshape(-1)
        order = np.argsort(flat, kind="stable")  # read the file forwards
        rows = np.empty_like(order)
        rows[order] = np.arange(flat.size)
        xs = np.asarray(self.x[flat[order]])[rows]
        ys = np.asarray(self.y[flat[order]])[rows]
        return xs.reshape(*idx.shape, *xs.shape[1:]), ys.reshape(*idx.shape, *ys.shape[1:])

    def chunks(self, idx, start: int, size: int, gather=None) -> Iterator[Chunk]:
        """The epoch's chunks from step ``start``: ``idx`` is the epoch's ``(steps, ...)``
        index array; ``gather(idx_chunk)`` makes the chunk (default: :meth:`gather`)."""
        gather = gather or self.gather
        for s0 in range(start, len(idx), size):
            s1 = min(s0 + size, len(idx))
            xs, ys = gather(idx[s0:s1])
            yield Chunk(xs, ys, s1)


def _encode_state(state):
    """A Grain iterator state as JSON (a ``DataLoader``'s is bytes)."""
    if isinstance(state, bytes):
        return {"bytes": base64.b64encode(state).decode()}
    return {"json": json.loads(json.dumps(state))}


def _decode_state(saved):
    return base64.b64decode(saved["bytes"]) if "bytes" in saved else saved["json"]


class BatchStream:
    """Batches from an iterable (or a Grain dataset / loader), ``S`` at a time.

    Each epoch iterates the data afresh (``iter(data)``); with ``steps_per_epoch`` an epoch
    is that many batches, and a one-shot iterator (``iter(it) is it``) continues across
    epochs. A Grain iterator's state after each chunk is saved with checkpoints, so resume
    continues from it; a plain iterable cannot be rewound: resume iterates it from its first
    batch and skips the batches already trained.
    """

    indexable = False

    def __init__(self, data, steps_per_epoch, grain: bool, name: str = "train"):
        self.data, self.steps, self.grain, self.name = data, steps_per_epoch, grain, name
        self.rewindable = grain
        self._iterator = None
        self._template = None
        self.num_examples = None

    def example(self):
        """The first batch, checked (it fixes the shape and dtype of every later batch). A
        one-shot iterator's first batch is put back in front of it."""
        if self._template is None:
            it = iter(self.data)
            try:
                first = next(it)
            except StopIteration:
                raise ValueError(f"{self.name}_data yields no batch.") from None
            if it is self.data:
                self.data = itertools.chain([first], it)
            x, y = self._checked(first, 0)
            self._template = (x.shape, x.dtype, y.shape, y.dtype)
            self._example = (x, y)
        return self._example

    def _checked(self, batch, index: int):
        if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
            raise ValueError(
                f"{self.name}_data batch {index} is a {type(batch).__name__}; every batch "
                "must be an (x, y) pair of arrays."
            )
        x, y = np.asarray(batch[0]), np.asarray(batch[1])
        if self._template is not None:
            shape = (x.shape, x.dtype, y.shape, y.dtype)
            if shape != self._template:
                raise ValueError(
                    f"{self.name}_data batch {index} has x {x.shape} {x.dtype}, y {y.shape} "
                    f"{y.dtype}; the first batch had x {self._template[0]} "
                    f"{self._template[1]}, y {self._template[2]} {self._template[3]}: every "
                    "batch must have the same size and dtype (drop or pad a short last batch)."
                )
        return x, y

    def _iterator_for(self, state):
        """The epoch's iterator: fresh (or the run's continuing one), set to ``state``."""
        if self.steps is not None and self._iterator is not None:
            return self._iterator
        it = iter(self.data)
        if (
            self.steps is not None
            and self._iterator is None
            and iter(it) is it
            and (it is self.data)
        ):
            self._iterator = it
        if state is not None and self.grain:
            it.set_state(_decode_state(state))
        return it

    def chunks(self, start: int, size: int, state=None, check=None) -> Iterator[Chunk]:
        """The epoch's chunks from step ``start``: a Grain iterator is set to ``state``; a
        plain one is iterated from its start and its first ``start`` batches skipped.
        ``check(x, y, index)`` validates each batch (labels, NaN/inf)."""
        base = it = self._iterator_for(state)
        if (state is None or not self.grain) and start:
            it = itertools.islice(it, start, None)
        step, batch_xs, batch_ys = start, [], []
        while self.steps is None or step < self.steps:
            try:
                batch = next(it)
            except StopIteration:
                break
            x, y = self._checked(batch, step)
            if check is not None:
                check(x, y, step)
            batch_xs.append(x)
            batch_ys.append(y)
            step += 1
            if len(batch_xs) == size:
                yield Chunk(np.stack(batch_xs), np.stack(batch_ys), step, self._state(base))
                batch_xs, batch_ys = [], []
        if batch_xs:
            yield Chunk(np.stack(batch_xs), np.stack(batch_ys), step, self._state(base))
        if step == start == 0:
            raise ValueError(
                f"{self.name}_data yielded no batch this epoch: a one-shot iterator (a "
                "generator) is exhausted after one pass; pass a re-iterable (a list, a Grain "
                "dataset, an object whose __iter__ starts over) or steps_per_epoch with an "
                "endless iterator."
            )

    def _state(self, it):
        if not self.grain:
            return None
        return _encode_state(it.get_state())


# ----------------------------------------------------------------------------- checks


def _checked_chunkwise(x, y, classes, name: str) -> None:
    """``jnn.data.validate`` slice by slice (a mapped array is read once, never copied)."""
    _data.validate_chunkwise(x, y, classes, name=name, chunk_bytes=CHUNK_BYTES)


def checked_data(model, state, train_data, val_data, batch_size, patience, budget=None):
    """Validates resident or streamed arrays against the model before any training.

    Resident arrays are checked at once and returned as host arrays; streamed arrays are
    checked slice by slice (one read of the file) and returned as they are.
    """
    x, y = train_data
    classes = _num_classes_of(model, state, x.shape, x.dtype, np.dtype(y.dtype), y.ndim)
    train_stream = as_stream(train_data, budget, None, "train")
    if train_stream is None:
        x, y = np.asarray(x), np.asarray(y)
        _data.validate(x, y, classes, batch_size)
    else:
        _checked_chunkwise(x, y, classes, "train")
        if not 1 <= batch_size <= len(x):
            raise ValueError(
                f"batch_size must be in [1, {len(x)}] (the number of train examples), got "
                f"{batch_size}."
            )
    check_patience(patience, classes)
    if val_data is not None:
        if as_stream(val_data, budget, None, "val") is None:
            val_data = tuple(np.asarray(a) for a in val_data)
            _data.validate(*val_data, classes, None, name="val")
        else:
            _checked_chunkwise(*val_data, classes, "val")
    return (x, y), val_data


def check_patience(patience, classes) -> None:
    if patience is not None and classes is None:
        raise ValueError(
            "patience (early stopping on validation accuracy) needs integer class labels and "
            "a model with one output per class."
        )


def batch_checker(model, state, x, y, name: str = "train"):
    """``check(x, y, index)`` for batches of an iterable: ``jnn.data.validate`` of each
    batch (labels in range, finite values), naming the batch in the message."""
    classes = _num_classes_of(model, state, x.shape, x.dtype, y.dtype, y.ndim)

    def check(bx, by, index):
        try:
            _data.validate(bx, by, classes, None, name=name)
        except ValueError as err:
            raise ValueError(f"{name}_data batch {index}: {err}") from None

    return check, classes


# ----------------------------------------------------------------------------- a run's data


class RunData(NamedTuple):
    """A run's data after the checks: resident host arrays or streams.

    Attributes:
      train: resident ``(x, y)`` host arrays, or ``None`` when streamed.
      stream: the training stream (``ArrayStream`` / ``BatchStream``), or ``None``.
      val: resident validation arrays, or ``None``.
      val_stream: a streamed validation set, or ``None``.
      check: ``check(x, y, index)`` for the batches of an iterable, or ``None``.
    """

    train: Any
    stream: Any
    val: Any
    val_stream: Any
    check: Any


def input_sample(data: RunData, rows: int = 512):
    """Up to ``rows`` inputs to show a model's activations on (TensorBoard histograms): the
    validation inputs, else the training inputs, else one batch of a stream; evenly spaced
    rows of memory-mapped arrays (never the whole file)."""
    streams = (data.val_stream, data.stream)
    arrays = [data.val, data.train, *((s.x, s.y) for s in streams if isinstance(s, ArrayStream))]
    for pair in arrays:
        if pair is not None:
            x = pair[0]
            return np.asarray(x[:: max(1, len(x) // rows)][:rows])
    stream = data.val_stream or data.stream
    return None if stream is None else np.asarray(stream.example()[0])[:rows]


def _holds(jaxpr, primitive: str) -> bool:
    """Whether ``jaxpr`` (or a jaxpr nested in one of its equations) uses ``primitive``."""
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == primitive:
            return True
        for value in eqn.params.values():
            for sub in value if isinstance(value, (tuple, list)) else (value,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns") and _holds(inner, primitive):
                    return True
    return False


def convolves_in_xla(model, input_shape, dtype=jnp.float32) -> bool:
    """Whether training ``model`` should run one compiled call per step: on CPU, a forward
    pass that holds an XLA convolution (Flax, Equinox, ``Conv(lowering="xla")``) runs it
    10-40x slower inside a compiled loop than outside one (jax#12868; measured 0.37 s
    against 0.033 s per step for 16 NNX CNN members). ``jnn.nn.Conv`` lowers to im2col on
    CPU and keeps its scanned epochs. Traced abstractly: nothing is allocated."""
    if jax.default_backend() != "cpu":
        return False
    params, state = jax.eval_shape(lambda k: model.init(k, input_shape), jax.random.key(0))
    x = jax.ShapeDtypeStruct(tuple(input_shape), dtype)
    jaxpr = jax.make_jaxpr(lambda p, s, x: model.apply(p, s, x, train=False))(params, state, x)
    return _holds(jaxpr.jaxpr, "conv_general_dilated")


def per_step_stream(model, train_data, stream, input_shape, chunk_steps):
    """``(stream, chunk_steps)``: with a model that :func:`convolves_in_xla`, resident
    ``(x, y)`` arrays are fed as a stream of one-step chunks (the same batches, so the same
    results) and a stream's chunks are one step; otherwise both as given."""
    if chunk_steps is not None or not convolves_in_xla(model, input_shape):
        return stream, chunk_steps
    if stream is None:
        stream = ArrayStream(*(np.asarray(a) for a in train_data))
    return stream, 1


def open_train(train_data, batch_size, budget, steps_per_epoch):
    """``(stream, batch_input_shape, batch_size)`` of the training data (the stream is
    ``None`` for resident arrays; an iterable's batch size is its first batch's)."""
    stream = as_stream(train_data, budget, steps_per_epoch, "train")
    if isinstance(stream, BatchStream):
        x, _ = stream.example()
        if x.ndim < 1 or (batch_size is not None and batch_size != len(x)):
            raise ValueError(
                f"batch_size={batch_size} but the first batch of train_data has x of shape "
                f"{x.shape}: pass batch_size=None (or its size) with an iterable of batches."
            )
        return stream, (len(x), *x.shape[1:]), len(x)
    if batch_size is None:
        raise ValueError("batch_size is required when train_data are (x, y) arrays.")
    return stream, (batch_size, *np.shape(train_data[0])[1:]), batch_size


def checked_run_data(model, state, train_data, stream, val_data, batch_size, patience, budget):
    """The checks of ``checked_data`` for every form of data; returns :class:`RunData`."""
    if isinstance(stream, BatchStream):
        check, classes = batch_checker(model, state, *stream.example())
        check_patience(patience, classes)
        train, val = None, None
        if val_data is not None and _is_pair(val_data):
            val_data = tuple(val_data)
            if as_stream(val_data, budget, None, "val") is None:
                val = tuple(np.asarray(a) for a in val_data)
                _data.validate(*val, classes, None, name="val")
            else:
                _checked_chunkwise(*val_data, classes, "val")
    else:
        check = None
        pair, val = checked_data(
            model,
            state,
            train_data,
            val_data if _is_pair(val_data) else None,
            batch_size,
            patience,
            budget,
        )
        train = pair if stream is None else None
    val_stream = None
    if val_data is not None:
        val_stream = as_stream(val_data, budget, None, "val")
        if val_stream is not None:
            val = None
    return RunData(train, stream, val, val_stream, check)
