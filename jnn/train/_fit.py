"""``fit``: one model trained by the shared epoch loop (``_loop``) on device-resident data."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jnn import _memo
from jnn import data as _data
from jnn import tensorboard as _tensorboard
from jnn._foreign import as_model
from jnn._keys import as_key
from jnn.train import _epoch, _evaluate, _feed, _loop, _sharding, _sparse, _stream
from jnn.train._feed import resident
from jnn.train._feed import take as _take
from jnn.train._state import TrainState, init
from jnn.train._step import make_step

__all__ = ["FitResult", "fit"]


class FitResult(NamedTuple):
    """What ``fit`` returns.

    Attributes:
      state: the final ``TrainState`` (the best-validation one after early stopping; the last
        finite one after a NaN/inf stop).
      history: a list of per-epoch records (dicts of JSON-serialisable values).
      stopped: why training ended early: ``None`` (ran every epoch), ``"early_stopping"`` or
        ``"non_finite"``.
      message: the reason in words (e.g. which step became non-finite), or ``None``.
      timings: seconds spent compiling the epoch program, training, and validating.
    """

    state: TrainState
    history: list
    stopped: str | None
    message: str | None = None
    timings: dict | None = None


def floats(tree):
    """Device scalars -> Python floats; NaN/inf (e.g. accuracy of a regression) -> None."""

    def convert(v):
        v = float(np.asarray(v))
        return v if math.isfinite(v) else None

    return jax.tree.map(convert, jax.device_get(tree))


def injected_learning_rate(opt_state):
    """The ``learning_rate`` hyperparameter of an ``inject_hyperparams`` state (an array;
    stacked for an ensemble), or ``None`` if the state has none."""
    try:
        return optax.tree_utils.tree_get(opt_state, "learning_rate")
    except (KeyError, ValueError, AttributeError):
        return None


@_memo.cached
def _schedule_value(schedule):
    """``count -> schedule(count)``: jitted (one compiled call per epoch's record instead of a
    handful of eager operations, ~10 ms a record for a warm-up + cosine schedule), or called
    with a Python int as before for a schedule that cannot be traced with an int32 step (one
    that branches in Python on it, or mixes it with floats under strict dtype promotion)."""
    jitted = jax.jit(schedule)
    try:
        jitted(np.asarray(0, np.int32))
    except Exception:  # noqa: BLE001 - any tracing failure: the eager path, which worked before
        return lambda count: schedule(int(count))
    return jitted


def recorded_learning_rate(learning_rate, opt_state, step: int):
    """The learning rate of the last update: ``schedule(step - 1)``, a constant, or the
    ``learning_rate`` hyperparameter of an ``inject_hyperparams`` state; ``None`` if unknown."""
    if learning_rate is None:
        lr = injected_learning_rate(opt_state)
        return None if lr is None else float(np.asarray(lr))

    if callable(learning_rate):
        count = np.asarray(max(step - 1, 0), np.int32)
        return float(_schedule_value(learning_rate)(count))
    return float(learning_rate)


def _draw_shared(num_examples, batch_size):
    return lambda key, _extra: _data.batch_indices(key, num_examples, batch_size)


def _normalized(step_options) -> tuple:
    """``step_options`` as a hashable, sorted tuple (a ``sparse_head`` dict included)."""
    items = dict(step_options or {})
    if isinstance(items.get("sparse_head"), dict):
        items["sparse_head"] = tuple(sorted(items["sparse_head"].items()))
    return tuple(sorted(items.items()))


def _plain_step(model, loss, optimizer, options: tuple, monitor: bool):
    """``make_step``'s plain step, or ``make_sparse_head_step``'s when the options name a
    ``sparse_head`` (a hierarchical-softmax head updated on the touched rows only)."""
    options = dict(options)
    sparse = options.pop("sparse_head", None)
    if sparse is None:
        return make_step(model, loss, optimizer, jit=False, **{**options, "monitor": monitor})
    if options:
        raise ValueError(f"step_options: sparse_head takes no other option, got {sorted(options)}")
    return _sparse.make_sparse_head_step(
        model, optimizer, jit=False, monitor=monitor, **dict(sparse)
    )


def _initial_state(model, optimizer, key, input_shape, dtype, options: tuple):
    sparse = dict(options).get("sparse_head")
    if sparse is None:
        return init(model, optimizer, key, input_shape, dtype)
    head_update = dict(sparse).get("head_update", "sgd")
    return _sparse.init_sparse_head(
        model, optimizer, key, input_shape, head_update=head_update, dtype=dtype
    )


def _step_fns(model, loss, optimizer, options, guard) -> _epoch.StepFns:
    """The plain and monitored steps of one model, lifted to the epoch's carry."""
    plain = _plain_step(model, loss, optimizer, options, monitor=False)
    monitored = _plain_step(model, loss, optimizer, options, monitor=True)
    return _epoch.StepFns(
        _epoch.carry_step(plain, guard),
        _epoch.carry_step(monitored, guard),
        lambda s: _epoch.all_finite((s.params, s.model_state)),
    )


@_memo.cached
def _chunk_program(model, loss, optimizer, options, guard, layout=None):
    """The jitted chunk of a streamed epoch of one model (see ``_stream.build_chunk``)."""
    steps = _step_fns(model, loss, optimizer, options, guard)
    return _stream.build_chunk(lambda _: steps, layout)


@_memo.cached
def _validation_program(model, loss):
    """The jitted ``(carry, (x, y), extra) -> (mean loss, accuracy)`` of a streamed
    validation set's pieces."""
    return jax.jit(
        lambda c, v, _: _evaluate.mean_loss_and_accuracy(
            model, loss, c[0].params, c[0].model_state, *v, _evaluate.eval_chunk(len(v[0]))
        )
    )


@_memo.cached
def _epoch_program(
    model, loss, optimizer, options, num_examples, batch_size, guard, chunk, layout=None
):
    """The jitted epoch of one model (see ``_epoch.build_epoch``), reused across ``fit`` calls
    with the same ingredients (the mesh layout included)."""
    steps = _step_fns(model, loss, optimizer, options, guard)
    validate = None
    if chunk:
        validate = lambda carry, val, _: _evaluate.mean_loss_and_accuracy(
            model, loss, carry[0].params, carry[0].model_state, *val, chunk
        )
    return _epoch.build_epoch(
        lambda _: steps, _draw_shared(num_examples, batch_size), _take, validate, layout=layout
    )


class _SingleModel:
    """The training mode of one model: runs an epoch, pins a NaN to its step, records it."""

    def __init__(self, ingredients, data, val_data, learning_rate):
        self.ingredients, self.data, self.val_data = ingredients, data, val_data
        self.learning_rate = learning_rate
        self.timings = {"compile": 0.0, "train": 0.0}
        self._fast = None

    def _run(self, guard, state, key):
        args = ((state, jnp.asarray(-1, jnp.int32)), self.data, self.val_data, key, ())
        if guard:
            return _epoch_program(*self.ingredients[:6], True, *self.ingredients[7:])(*args)
        if self._fast is None:
            t0 = time.perf_counter()
            program = _epoch_program(*self.ingredients)
            self._fast = program.lower(*args).compile()
            self.timings["compile"] += time.perf_counter() - t0
        return self._fast(*args)

    val_stream = None

    def validated(self, state, val):
        """``val``, or the metrics of a streamed validation set (computed after the epoch)."""
        if self.val_stream is None:
            return val
        program = _validation_program(*self.ingredients[:2])
        return _stream.evaluate_stream(program, self.val_stream, (state,), ())

    def run_epoch(self, state, epoch, key):
        t0, compiling = time.perf_counter(), self.timings["compile"]
        (new, _), summary, val = self._run(False, state, key)
        val = self.validated(new, val)
        if not bool(summary["finite"]):
            (last_finite, bad), _, _ = self._run(True, state, key)
            return _loop.EpochOutcome(
                last_finite,
                None,
                "non_finite",
                _nan_message(int(bad), epoch, int(last_finite.step)),
            )
        record = self.record(epoch, new, floats(summary), val)
        record["seconds"] = time.perf_counter() - t0 - (self.timings["compile"] - compiling)
        self.timings["train"] += record["seconds"]
        return _loop.EpochOutcome(new, record)

    def record(self, epoch, state, summary, val):
        step = int(state.step)
        val_loss, val_acc = floats(val) if val is not None else (None, None)
        return {
            "epoch": epoch + 1,
            "step": step,
            "train_loss": summary["loss"],
            "train_acc": summary["accuracy"],
            "val_loss": val_loss,
            "val_acc": val_acc,
            "learning_rate": recorded_learning_rate(self.learning_rate, state.opt_state, step),
            "update_ratio": summary["update_ratio"],
            "grad_norm": summary["grad_norm"],
        }

    @staticmethod
    def score(record):
        return record["val_acc"]


class _StreamedModel(_SingleModel):
    """One model trained on a stream: each epoch runs chunk by chunk (``_stream``)."""

    streams = True

    def __init__(self, ingredients, feed, val_data, val_stream, learning_rate, steps):
        super().__init__(ingredients, None, val_data, learning_rate)
        self.feed, self.val_stream, self.steps_per_epoch = feed, val_stream, steps

    def _chunk(self, guard, carry, chunk, step_key, last):
        model, loss, optimizer, options = self.ingredients[:4]
        program = _chunk_program(model, loss, optimizer, options, guard, self.ingredients[8])
        return program(carry, chunk.xs, chunk.ys, step_key, (), last=last)

    def run_epoch(self, state, epoch, key, position=None, between=None):
        t0 = time.perf_counter()
        order_key, step_key = jax.random.split(key)
        idx = self.feed.steps(order_key, ())
        done = {"carry": (state, jnp.asarray(-1, jnp.int32)), "position": dict(position or {})}

        def dispatch(carry, chunk, last):
            return self._chunk(False, carry, chunk, step_key, last)

        def settle(before, chunk, last, new, out):
            out = _sharding.host(out)
            if not bool(out["finite"]):
                (kept, bad), _ = self._chunk(True, before, chunk, step_key, last)
                message = _nan_message(int(bad), epoch, int(kept.step))
                return before, _loop.EpochOutcome(kept, None, "non_finite", message)
            step = int(new[0].step)
            done.update(carry=new, summary=out)
            done["position"] = _position(done["position"], chunk, out, step, self.feed)
            if between is not None and not last:
                between(new[0], done["position"])
            return new, None

        chunks = _stream.placed_chunks(self.feed.chunks(idx, done["position"]))
        try:
            carry, stop = _stream.pipelined(chunks, done["carry"], dispatch, settle)
        except ValueError:
            if between is not None and done["position"].get("step"):
                between(done["carry"][0], done["position"], force=True)  # what was trained is kept
            raise
        if stop is not None:
            return stop
        position, summary = done["position"], done["summary"]
        summary = _stream.epoch_summary(position["sums"], summary)
        val = None
        if self.val_data is not None:
            val = _evaluate.evaluation_program(
                self.ingredients[0], self.ingredients[1], self.ingredients[7]
            )(carry[0].params, carry[0].model_state, *self.val_data)
        record = self.record(epoch, carry[0], floats(summary), self.validated(carry[0], val))
        record["seconds"] = time.perf_counter() - t0
        self.timings["train"] += record["seconds"]
        return _loop.EpochOutcome(carry[0], record, position=_next_epoch(position, self.feed))


def _position(before: dict, chunk, out, global_step: int, feed) -> dict:
    """Where the epoch stands after ``chunk``: its step, the running sums of its metrics, the
    source's state and the global step (JSON-able, saved with in-epoch checkpoints)."""
    return {
        "step": chunk.end,
        "sums": _stream.sums_of(before if before.get("step") else None, out, len(chunk.ys)),
        "source": chunk.state,
        "global_step": global_step,
        "rewind": feed.stream.rewindable,
    }


def _next_epoch(position: dict, feed) -> dict | None:
    """The position at the next epoch's start: a continuing source's state, else none."""
    if feed.stream.indexable or feed.stream.steps is None or not feed.stream.grain:
        return None
    return {"step": 0, "source": position.get("source")}


def _mode(model, loss, optimizer, options, batch_size, layout, data, state, learning_rate):
    """The resident mode (data on the device) or the streamed one (``feed`` set after)."""
    put = lambda pair: resident(pair, state.params, layout)
    val = put(data.val) if data.val is not None else None
    chunk = _evaluate.eval_chunk(len(data.val[0])) if data.val is not None else 0
    if data.stream is None:
        n = len(data.train[0])
        ingredients = (model, loss, optimizer, options, n, batch_size, False, chunk, layout)
        mode = _SingleModel(ingredients, put(data.train), val, learning_rate)
        mode.val_stream = data.val_stream
        return mode
    steps = getattr(data.stream, "steps", None)
    if data.stream.indexable:
        steps = data.stream.num_examples // batch_size
    ingredients = (model, loss, optimizer, options, None, batch_size, False, chunk, layout)
    return _StreamedModel(ingredients, None, val, data.val_stream, learning_rate, steps)


def _arrays_draw(stream, batch_size):
    """The jitted permutation of a streamed array epoch (the resident epoch's draw)."""
    if not stream.indexable:
        return None
    return jax.jit(_draw_shared(stream.num_examples, batch_size))


def _batch_bytes(input_shape, stream) -> int:
    x, _ = stream.example()
    return int(np.prod(input_shape)) * np.dtype(x.dtype).itemsize


def _nan_message(bad: int, epoch: int, kept_step: int) -> str:
    where = f"at step {bad}" if bad >= 0 else "in the epoch's summary (no single step)"
    return (
        f"non-finite loss or parameters {where} (epoch {epoch + 1}); stopped, keeping the "
        f"last finite state (step {kept_step})"
    )


def _check_fit_options(epochs, patience, val_data, checkpoint_every, checkpoint_seconds):
    if not isinstance(epochs, int) or epochs < 0:
        raise ValueError(f"epochs must be an int >= 0, got {epochs!r}.")
    if patience is not None and (val_data is None or patience < 1):
        raise ValueError("patience needs val_data and a value >= 1.")
    if checkpoint_every is not None and checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be >= 1, got {checkpoint_every}.")
    if not checkpoint_seconds >= 0:
        raise ValueError(f"checkpoint_seconds must be >= 0, got {checkpoint_seconds}.")


def fit(
    model,
    loss: Callable,
    optimizer,
    train_data,
    *,
    epochs: int,
    batch_size: int,
    key,
    val_data=None,
    state: TrainState | None = None,
    dtype=None,
    step_options: dict | None = None,
    learning_rate=None,
    checkpoint_dir=None,
    checkpoint_every: int | None = None,
    checkpoint_seconds: float = 60.0,
    resume: bool = False,
    patience: int | None = None,
    progress: bool = True,
    on_epoch: Callable | None = None,
    on_start: Callable | None = None,
    mesh=None,
    fsdp: bool = False,
    tensorboard_dir=None,
    steps_per_epoch: int | None = None,
    memory_budget: int | None = _feed.DEFAULT_MEMORY_BUDGET,
    chunk_steps: int | None = None,
) -> FitResult:
    """Trains for ``epochs`` epochs of shuffled minibatches; validates after each epoch.

    The data are put on the device once; each epoch is one jitted ``lax.scan`` over
    ``N // batch_size`` minibatches gathered by a fresh permutation (the last partial batch is
    dropped; a new shuffle next epoch lets every example be seen), followed by the validation
    pass, in one compiled program. Metrics come back to the host once per epoch.

    Keys: ``init_key, run_key = split(key)``; ``init_key`` initialises (when ``state`` is
    None); epoch ``e`` uses ``k = fold_in(run_key, e)``, ``order_key, step_key = split(k)``:
    ``order_key`` draws the permutation (``jnn.data.batch_indices``) and every step ``t`` gets
    the dropout key ``fold_in(step_key, t)`` (``make_step``'s rule). So the same seed gives the
    same result and a resumed run is bitwise identical to an uninterrupted one.

    Many devices and hosts: with ``mesh`` the same program runs data-parallel (see
    ``jnn.train._sharding`` for the shardings): each global batch of ``batch_size`` is split
    on the mesh's ``"data"`` axis, params and optimizer state are replicated (or split, with
    ``fsdp``), the training data stay resident, replicated on every device, and XLA reduces
    the gradients; the same seed reaches the same parameters as on one device (to float
    rounding). In a multi-process run (``jnn.distributed.initialize``) every process calls
    ``fit`` with the same arguments and runs the same epochs.

    Nothing is lost (see ``jnn.train._loop``): with ``checkpoint_dir`` a checkpoint is written
    every ``checkpoint_every`` epochs or, by default, once ``checkpoint_seconds`` (60) have
    passed since the last one, at the end, and when Ctrl-C / SIGTERM interrupts training
    (then :class:`Interrupted`, a ``KeyboardInterrupt``, is raised after saving).

    Args:
      model, loss, optimizer: as for :func:`make_step`.
      train_data: ``(x, y)`` arrays.
      epochs: total number of epochs (a resumed run continues up to this number).
      batch_size: examples per step (``1 <= batch_size <= N``).
      key: a PRNG key (typed or raw).
      val_data: optional ``(x, y)`` evaluated every epoch (needed for ``patience``).
      state: a ``TrainState`` to start from (default: :func:`init` with the init key).
      dtype: parameter dtype for that initialisation (``jnp.bfloat16``, ``jnp.float16``,
        ``jnp.float64``); inputs are cast to the parameters' dtype.
      step_options: keyword options for :func:`make_step` (``l1``, ``l2``, ``max_norm``,
        ``clip_norm``), or ``{"sparse_head": {"head_update": "sgd" | "lazy_adam",
        "learning_rate": ...}}`` for a model ending in ``jnn.nn.HierarchicalSoftmax``: the
        epoch then runs ``make_sparse_head_step`` (only the rows on each batch's paths are
        updated; the layers below use ``optimizer``) and the state is ``init_sparse_head``'s.
      learning_rate: a float or schedule, used only to record the learning rate in the history
        (for a schedule: ``schedule(step - 1)``, its value at the epoch's last update).
      checkpoint_dir: an orbax checkpoint folder (None: no checkpoints).
      checkpoint_every: checkpoint every this many epochs instead of by time.
      checkpoint_seconds: with ``checkpoint_every=None``, the most training time between two
        checkpoints.
      resume: continue from the newest intact checkpoint in ``checkpoint_dir`` if there is
        one (a damaged newer one is reported and skipped).
      patience: early stopping: stop once validation accuracy has not improved for this many
        epochs, and return the best state (the history keeps every epoch).
      progress: show a tqdm progress bar (per epoch, with loss and accuracies).
      on_epoch: called with each epoch's record.
      on_start: called once before training with the history so far (``[]``, or a resumed
        run's records).
      mesh: ``None`` (one device), a ``jax.sharding.Mesh`` with a ``"data"`` axis
        (``jnn.train.make_mesh``), or an int ``N`` (the first ``N`` local devices of each
        process). ``batch_size`` must divide by the data axis.
      fsdp: with a mesh, split each param / optimizer-state leaf on the data axis (its
        largest axis the axis divides) instead of replicating it.
      tensorboard_dir: write TensorBoard event files there (see ``jnn.tensorboard``): per
        epoch the losses, accuracies, learning rate, update ratio and gradient norm per
        layer, and histograms of the weights and of the activations on ``val_data``.

    Returns:
      ``FitResult(state, history, stopped, message, timings)``. A NaN/inf in the loss or the
      new state stops training: ``stopped == "non_finite"``, ``message`` names the step,
      ``state`` is the last finite state (its ``step`` is that step), and no checkpoint of a
      non-finite state is written.
    """
    # Long only by its docstring (the key rule and every option); the body is named steps.
    _check_fit_options(epochs, patience, val_data, checkpoint_every, checkpoint_seconds)
    model = as_model(model)
    layout = _sharding.as_layout(mesh, fsdp=fsdp)
    init_key, run_key = jax.random.split(as_key(key))
    stream, input_shape, batch_size = _feed.open_train(
        train_data, batch_size, memory_budget, steps_per_epoch
    )
    if layout is not None:
        layout.check(batch_size)
    options = _normalized(step_options)
    if state is None:
        state = _initial_state(model, optimizer, init_key, input_shape, dtype, options)
    stream, chunk_steps = _feed.per_step_stream(model, train_data, stream, input_shape, chunk_steps)
    data = _feed.checked_run_data(
        model, state, train_data, stream, val_data, batch_size, patience, memory_budget
    )
    if layout is not None:
        state = layout.put(state, layout.state(state))
    mode = _mode(model, loss, optimizer, options, batch_size, layout, data, state, learning_rate)
    if stream is not None:
        mode.feed = _stream.Feed(
            stream,
            _arrays_draw(stream, batch_size),
            _feed.chunk_steps(_batch_bytes(input_shape, stream), mode.steps_per_epoch, chunk_steps),
            data.check,
            layout,
        )
    policy = _loop.CheckpointPolicy.of(checkpoint_dir, checkpoint_every, checkpoint_seconds, resume)
    epoch_log = _tensorboard.open_log(tensorboard_dir, model, _feed.input_sample(data))
    try:
        result = _loop.run_epochs(
            _tensorboard.watched(mode, epoch_log, lambda s: (s.params, s.model_state)),
            state,
            epochs=epochs,
            key=run_key,
            checkpoint=policy,
            patience=patience,
            progress=progress,
            on_epoch=on_epoch,
            on_start=on_start,
        )
    finally:
        if epoch_log is not None:
            epoch_log.close()
    return FitResult(result.carry, result.history, result.stopped, result.message, mode.timings)
