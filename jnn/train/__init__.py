"""Training: ``TrainState``, a pure jitted ``step``, ``evaluate`` and ``fit``.

The pieces compose by hand (``init`` + ``make_step`` + your own loop) or through ``fit``,
which runs each epoch as one ``jax.lax.scan`` over device-resident data::

    state = jnn.train.init(model, optax.adam(1e-3), key, (128, 64))
    step = jnn.train.make_step(model, jnn.losses.softmax_cross_entropy, optax.adam(1e-3))
    state, metrics = step(state, (x, y), key)   # donates ``state``'s buffers

Randomness: the step folds the state's step counter into the key it is given
(``fold_in(key, state.step)``), so a loop may pass the same key every step and still get a
fresh dropout mask each time; ``fit`` derives epoch ``e``'s key as ``fold_in(key, e)``, which
makes a resumed run bitwise identical to an uninterrupted one.
"""

from __future__ import annotations

import functools
import math
import os
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jnn import data as _data
from jnn import monitor as _monitor
from jnn import regularizers as _reg

__all__ = ["FitResult", "TrainState", "evaluate", "fit", "init", "make_step"]


class TrainState(NamedTuple):
    """Everything that changes during training (a pytree).

    Attributes:
      params: the model parameters.
      model_state: non-trained state, e.g. BatchNorm running statistics (``{}`` entries if none).
      opt_state: the optimizer's state (``optimizer.init(params)``).
      step: int32 scalar, the number of updates applied so far.
    """

    params: Any
    model_state: Any
    opt_state: Any
    step: jax.Array


class FitResult(NamedTuple):
    """What ``fit`` returns.

    Attributes:
      state: the final ``TrainState`` (the best-validation one after early stopping; the last
        finite one after a NaN/inf stop).
      history: a list of per-epoch records (dicts of JSON-serialisable values).
      stopped: ``None`` (ran all epochs), ``"early_stopping"`` or a message naming the step at
        which a NaN/inf appeared.
    """

    state: TrainState
    history: list
    stopped: str | None


def init(model, optimizer, key, input_shape, dtype=None) -> TrainState:
    """Initialises params, model state and optimizer state.

    Args:
      model: a layer (e.g. ``jnn.nn.Serial``) with ``init(key, input_shape)``.
      optimizer: an ``optax.GradientTransformation``.
      key: a PRNG key for the parameters.
      input_shape: the input shape including the batch dimension, e.g. ``(128, 64)``.
      dtype: optional parameter dtype passed to ``model.init`` (e.g. ``jnp.float64``).

    Returns:
      ``TrainState(params, model_state, opt_state, step=0)``.
    """
    kwargs = {} if dtype is None else {"dtype": dtype}
    input_shape = tuple(input_shape)

    # One compiled program instead of one small eager dispatch (and compile) per leaf.
    @jax.jit
    def build(key):
        params, model_state = model.init(key, input_shape, **kwargs)
        return TrainState(params, model_state, optimizer.init(params), jnp.zeros((), jnp.int32))

    return build(key)


def _accuracy(outputs, targets):
    """Top-1 accuracy for integer labels; NaN for anything else (regression, multi-label)."""
    if jnp.issubdtype(targets.dtype, jnp.integer) and outputs.ndim == targets.ndim + 1:
        return jnp.mean((jnp.argmax(outputs, axis=-1) == targets).astype(jnp.float32))
    return jnp.full((), jnp.nan, jnp.float32)


def make_step(
    model,
    loss: Callable,
    optimizer,
    *,
    l1: float = 0.0,
    l2: float = 0.0,
    max_norm: float | None = None,
    clip_norm: float | None = None,
    donate: bool = True,
    jit: bool = True,
    monitor: bool = True,
):
    """Builds a pure training step ``step(state, batch, key) -> (state, metrics)``.

    The objective is ``mean_i loss(f(x_i), y_i) + l1 * sum|w| + l2 * 0.5 * sum w^2`` (penalties
    over the leaves named ``w`` only, via ``jnn.regularizers``). The gradient's global norm is
    clipped to ``clip_norm`` (``g * min(1, clip_norm / ||g||)``) before the optimizer; the
    max-norm constraint (each unit's incoming weights ``||w_j|| <= max_norm``) is applied to the
    optimizer's update. The dropout key is ``fold_in(key, state.step)``.

    Args:
      model: a layer with ``apply(params, state, x, *, key, train)``.
      loss: per-example loss ``loss(outputs, targets) -> (batch,)``.
      optimizer: an ``optax.GradientTransformation`` (its state is ``state.opt_state``).
      l1, l2: penalty coefficients (0 disables).
      max_norm: the max-norm bound ``c`` or ``None``.
      clip_norm: the global gradient-norm bound or ``None``.
      donate: donate the input ``state``'s buffers to the output (jit only); the state passed
        in is then deleted, so always use the returned one.
      jit: return the jitted step; ``jit=False`` gives the plain function, vmappable over a
        leading member axis and usable inside ``lax.scan``.
      monitor: compute the per-layer ``grad_norm`` and ``update_ratio`` metrics
        (``jnn.monitor``); ``False`` returns empty dicts for them.

    Returns:
      ``step(state, (x, y), key) -> (state, metrics)``; ``metrics`` has ``"loss"`` (the mean
      data loss, without penalties), ``"accuracy"`` (NaN unless integer labels), and
      ``"grad_norm"`` / ``"update_ratio"`` dicts keyed by parameter path, e.g. ``"dense_0/w"``;
      gradient norms are taken before clipping.
    """
    if l1 < 0 or l2 < 0:
        raise ValueError(f"l1 and l2 must be >= 0, got l1={l1}, l2={l2}.")
    if clip_norm is not None and not clip_norm > 0:
        raise ValueError(f"clip_norm must be > 0 or None, got {clip_norm}.")
    constraint = _reg.max_norm(max_norm) if max_norm is not None else None

    def objective(params, model_state, x, y, key):
        outputs, new_model_state = model.apply(params, model_state, x, key=key, train=True)
        data_loss = jnp.mean(loss(outputs, y))
        total = data_loss
        if l1:
            total = total + _reg.l1(params, coefficient=l1).astype(total.dtype)
        if l2:
            total = total + _reg.l2(params, coefficient=l2).astype(total.dtype)
        return total, (data_loss, _accuracy(outputs, y), new_model_state)

    grad_fn = jax.value_and_grad(objective, has_aux=True)

    def step(state: TrainState, batch, key):
        x, y = batch
        key = jax.random.fold_in(key, state.step)
        (_, (data_loss, acc, model_state)), grads = grad_fn(
            state.params, state.model_state, x, y, key
        )
        grad_norms = _monitor.grad_norms(grads) if monitor else {}
        if clip_norm is not None:
            grads, _ = optax.clip_by_global_norm(clip_norm).update(grads, optax.EmptyState())
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        if constraint is not None:
            updates, _ = constraint.update(updates, constraint.init(state.params), state.params)
        ratios = _monitor.update_ratios(state.params, updates) if monitor else {}
        params = optax.apply_updates(state.params, updates)
        metrics = {
            "loss": data_loss,
            "accuracy": acc,
            "grad_norm": grad_norms,
            "update_ratio": ratios,
        }
        return TrainState(params, model_state, opt_state, state.step + 1), metrics

    if not jit:
        return step
    return jax.jit(step, donate_argnums=0 if donate else ())


# ----------------------------------------------------------------------------- evaluation


def _build_eval(model, loss, batch_size):
    def run(params, model_state, x, y):
        n = x.shape[0]
        chunks = -(-n // batch_size)
        pad = chunks * batch_size - n
        valid = jnp.arange(chunks * batch_size) < n
        xp = jnp.concatenate([x, jnp.zeros((pad, *x.shape[1:]), x.dtype)]) if pad else x
        yp = jnp.concatenate([y, jnp.zeros((pad, *y.shape[1:]), y.dtype)]) if pad else y
        xp = xp.reshape(chunks, batch_size, *x.shape[1:])
        yp = yp.reshape(chunks, batch_size, *y.shape[1:])

        def chunk(args):
            xc, yc = args
            outputs, _ = model.apply(params, model_state, xc, train=False)
            per = loss(outputs, yc)
            if jnp.issubdtype(yc.dtype, jnp.integer) and outputs.ndim == yc.ndim + 1:
                correct = (jnp.argmax(outputs, axis=-1) == yc).astype(jnp.float32)
            else:
                correct = jnp.full(per.shape, jnp.nan, jnp.float32)
            return per.astype(jnp.float32), correct

        per, correct = jax.lax.map(chunk, (xp, yp))
        mask = valid.reshape(chunks, batch_size)
        zero = jnp.zeros((), jnp.float32)
        return (
            jnp.sum(jnp.where(mask, per, zero)) / n,
            jnp.sum(jnp.where(mask, correct, zero)) / n,
        )

    return jax.jit(run)


@functools.lru_cache(maxsize=32)
def _cached_eval(model, loss, batch_size):
    return _build_eval(model, loss, batch_size)


def _eval_fn(model, loss, batch_size):
    try:
        return _cached_eval(model, loss, batch_size)
    except TypeError:  # an unhashable model or loss: build (and compile) afresh
        return _build_eval(model, loss, batch_size)


def evaluate(model, params, model_state, x, y, loss, batch_size: int = 1024) -> dict:
    """Mean loss and accuracy of the model in inference mode (``train=False``).

    Runs in chunks of ``batch_size`` examples (the last one padded and masked out).

    Args:
      model, params, model_state: the network.
      x, y: inputs and targets (arrays with the same leading size).
      loss: the per-example loss.
      batch_size: examples per chunk.

    Returns:
      ``{"loss": float, "accuracy": float}`` (accuracy is NaN unless ``y`` holds integer labels).
    """
    x, y = jnp.asarray(x), jnp.asarray(y)
    if x.shape[0] != y.shape[0] or x.shape[0] == 0:
        raise ValueError(
            f"evaluate: x and y need the same non-zero number of examples, got {x.shape[0]} "
            f"and {y.shape[0]}."
        )
    batch_size = int(min(batch_size, x.shape[0]))
    mean_loss, acc = _eval_fn(model, loss, batch_size)(params, model_state, x, y)
    return {"loss": float(mean_loss), "accuracy": float(acc)}


# ----------------------------------------------------------------------------- fit


def _all_finite(tree):
    leaves = [
        jnp.all(jnp.isfinite(x))
        for x in jax.tree.leaves(tree)
        if jnp.issubdtype(x.dtype, jnp.inexact)
    ]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


def _epoch_fn(plain_step, monitored_step, num_examples, batch_size, guard):
    """One epoch in one jitted call: shuffle, then ``lax.scan`` the step over the minibatches.

    The per-layer monitor metrics cost about as much as a quarter of an MLP's step on a CPU,
    so the scan runs ``plain_step`` and only the epoch's last minibatch goes through
    ``monitored_step`` (the update itself is the same). With ``guard`` each step keeps the
    last finite state and records the first step whose loss or new state is not finite
    (``-1`` if none); without it only the end state is checked (no per-step cost).
    """

    def guarded(step_fn, carry, ix, x, y, key):
        ts, bad = carry
        new, metrics = step_fn(ts, (jnp.take(x, ix, axis=0), jnp.take(y, ix, axis=0)), key)
        if guard:
            ok = (bad < 0) & jnp.isfinite(metrics["loss"]) & _all_finite(new[:2])
            bad = jnp.where((bad < 0) & ~ok, ts.step, bad)
            new = jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, ts)
        return (new, bad), metrics

    def run(state, x, y, key):
        perm_key, step_key = jax.random.split(key)
        idx = _data.batch_indices(perm_key, num_examples, batch_size)
        carry = (state, jnp.asarray(-1, jnp.int32))
        carry, metrics = jax.lax.scan(
            lambda c, ix: guarded(plain_step, c, ix, x, y, step_key), carry, idx[:-1]
        )
        (state, bad), last = guarded(monitored_step, carry, idx[-1], x, y, step_key)
        summary = {
            name: jnp.mean(jnp.concatenate([metrics[name], last[name][None]]))
            for name in ("loss", "accuracy")
        }
        summary["grad_norm"], summary["update_ratio"] = last["grad_norm"], last["update_ratio"]
        finite = jnp.isfinite(summary["loss"]) & _all_finite(state[:2])
        return state, summary, finite, bad

    return jax.jit(run)


def _build_epoch(model, loss, optimizer, options, num_examples, batch_size, guard):
    options = dict(options)
    monitored = make_step(model, loss, optimizer, jit=False, **options)
    plain = make_step(model, loss, optimizer, jit=False, **{**options, "monitor": False})
    return _epoch_fn(plain, monitored, num_examples, batch_size, guard)


@functools.lru_cache(maxsize=16)
def _cached_epoch(*args):
    return _build_epoch(*args)


def _compiled_epoch(model, loss, optimizer, options, num_examples, batch_size, guard):
    """The jitted epoch, reused across ``fit`` calls with the same (hashable) ingredients."""
    try:
        return _cached_epoch(model, loss, optimizer, options, num_examples, batch_size, guard)
    except TypeError:  # something unhashable: build afresh
        return _build_epoch(model, loss, optimizer, options, num_examples, batch_size, guard)


def _learning_rate(learning_rate, state):
    step = int(state.step)
    if learning_rate is None:
        try:
            lr = optax.tree_utils.tree_get(state.opt_state, "learning_rate")
        except (KeyError, ValueError, AttributeError):
            return None
        return None if lr is None else float(lr)
    if callable(learning_rate):
        return float(learning_rate(max(step - 1, 0)))
    return float(learning_rate)


def _floats(tree):
    """Device scalars -> Python floats; NaN/inf (e.g. accuracy of a regression) -> None."""

    def conv(v):
        v = float(np.asarray(v))
        return v if math.isfinite(v) else None

    return jax.tree.map(conv, jax.device_get(tree))


class _Checkpoints:
    """Orbax checkpoints of ``{state leaves, best-state leaves, JSON metadata}`` per epoch."""

    def __init__(self, directory):
        import orbax.checkpoint as ocp

        self._ocp = ocp
        self.manager = ocp.CheckpointManager(
            os.path.abspath(os.fspath(directory)),
            options=ocp.CheckpointManagerOptions(
                max_to_keep=2, create=True, enable_async_checkpointing=False
            ),
        )

    @staticmethod
    def _flat(tree):
        return {f"{i:05d}": leaf for i, leaf in enumerate(jax.tree.leaves(tree))}

    def save(self, epoch, state, best, meta):
        ocp = self._ocp
        self.manager.save(
            epoch,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(self._flat(state)),
                best=ocp.args.StandardSave(self._flat(best)),
                meta=ocp.args.JsonSave(meta),
            ),
            force=True,
        )
        self.manager.wait_until_finished()

    def restore(self, template):
        ocp = self._ocp
        epoch = self.manager.latest_step()
        if epoch is None:
            return None
        target = self._flat(template)
        got = self.manager.restore(
            epoch,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(target),
                best=ocp.args.StandardRestore(target),
                meta=ocp.args.JsonRestore(),
            ),
        )
        treedef = jax.tree.structure(template)
        unflat = lambda d: jax.tree.unflatten(treedef, [d[k] for k in sorted(d)])
        return unflat(got.state), unflat(got.best), got.meta

    def close(self):
        self.manager.close()


def _num_classes(model, params, model_state, x, y):
    if not np.issubdtype(np.asarray(y).dtype, np.integer):
        return None
    out = jax.eval_shape(
        lambda p, s, xx: model.apply(p, s, xx, train=False)[0],
        params,
        model_state,
        jax.ShapeDtypeStruct((1, *np.shape(x)[1:]), np.asarray(x).dtype),
    )
    return int(out.shape[-1]) if len(out.shape) == np.ndim(y) + 1 else None


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
    step_options: dict | None = None,
    learning_rate=None,
    checkpoint_dir=None,
    checkpoint_every: int | None = None,
    resume: bool = False,
    patience: int | None = None,
    progress: bool = True,
    on_epoch: Callable | None = None,
) -> FitResult:
    """Trains for ``epochs`` epochs of shuffled minibatches; validates after each epoch.

    The data are put on the device once; each epoch is one jitted ``lax.scan`` over
    ``N // batch_size`` minibatches gathered by a fresh permutation (the last partial batch is
    dropped; a new shuffle next epoch lets every example be seen). Metrics come back to the
    host once per epoch. ``key`` is split into an init key (used only when ``state`` is None)
    and a run key; epoch ``e`` uses ``fold_in(run_key, e)``, so the same seed gives the same
    result and a resumed run is bitwise identical to an uninterrupted one.

    Args:
      model, loss, optimizer: as for :func:`make_step`.
      train_data: ``(x, y)`` arrays.
      epochs: total number of epochs (a resumed run continues up to this number).
      batch_size: examples per step (``1 <= batch_size <= N``).
      key: a PRNG key.
      val_data: optional ``(x, y)`` evaluated every epoch (needed for ``patience``).
      state: a ``TrainState`` to start from (default: :func:`init` with the init key).
      step_options: keyword options for :func:`make_step` (``l1``, ``l2``, ``max_norm``,
        ``clip_norm``, ``monitor``).
      learning_rate: a float or schedule, used only to record the learning rate in the history
        (for a schedule: its value at the epoch's last update).
      checkpoint_dir: an orbax checkpoint folder (None: no checkpoints).
      checkpoint_every: also checkpoint every this many epochs (always at the end).
      resume: continue from the latest checkpoint in ``checkpoint_dir`` if there is one.
      patience: early stopping: stop once validation accuracy has not improved for this many
        epochs, and return the best state (restored in memory; the history keeps every epoch).
      progress: show a tqdm progress bar (per epoch, with loss and accuracies).
      on_epoch: called with each epoch's record.

    Returns:
      ``FitResult(state, history, stopped)``. A NaN/inf in the loss or the new state stops
      training: ``stopped`` names the step, ``state`` is the last finite state (its ``step``
      is that step), and no checkpoint of a non-finite state is written.
    """
    x, y = train_data
    if epochs < 0:
        raise ValueError(f"epochs must be >= 0, got {epochs}.")
    if patience is not None and (val_data is None or patience < 1):
        raise ValueError("patience needs val_data and a value >= 1.")
    if checkpoint_every is not None and checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be >= 1, got {checkpoint_every}.")
    init_key, run_key = jax.random.split(key)
    x_np, y_np = np.asarray(x), np.asarray(y)
    if state is None:
        state = init(model, optimizer, init_key, (batch_size, *x_np.shape[1:]))
    num_classes = _num_classes(model, state.params, state.model_state, x_np, y_np)
    _data.validate(x_np, y_np, num_classes, batch_size)
    if patience is not None and num_classes is None:
        raise ValueError(
            "patience (early stopping on validation accuracy) needs integer class labels and "
            "a model with one output per class."
        )
    if val_data is not None:
        _data.validate(np.asarray(val_data[0]), np.asarray(val_data[1]), num_classes, None)

    n = x_np.shape[0]
    options = tuple(sorted((step_options or {}).items()))
    run_epoch = _compiled_epoch(model, loss, optimizer, options, n, batch_size, False)
    xd, yd = jax.device_put(x_np), jax.device_put(y_np)
    if val_data is not None:
        xv, yv = jax.device_put(np.asarray(val_data[0])), jax.device_put(np.asarray(val_data[1]))

    history: list = []
    start = 0
    best = state
    best_acc, since_best, stopped = -math.inf, 0, None
    ckpt = _Checkpoints(checkpoint_dir) if checkpoint_dir is not None else None
    if ckpt is not None and not resume and ckpt.manager.latest_step() is not None:
        latest = ckpt.manager.latest_step()
        ckpt.close()
        raise ValueError(
            f"checkpoint_dir {os.fspath(checkpoint_dir)!r} already holds a run (epoch {latest}); "
            "pass resume=True to continue it, or use an empty folder."
        )

    def meta(epoch):
        return {
            "epoch": epoch,
            "history": history,
            "best_val_acc": best_acc if math.isfinite(best_acc) else None,
            "since_best": since_best,
            "stopped": stopped,
        }

    try:
        if ckpt is not None and resume:
            restored = ckpt.restore(state)
            if restored is not None:
                state, best, m = restored
                start, history, since_best = m["epoch"], list(m["history"]), m["since_best"]
                best_acc = -math.inf if m["best_val_acc"] is None else m["best_val_acc"]
                stopped = m["stopped"]
        bar = _progress(epochs, start, progress)
        last_saved = start
        epoch = start
        while epoch < epochs and stopped is None:
            t0 = time.perf_counter()
            epoch_key = jax.random.fold_in(run_key, epoch)
            new, summary, finite, _ = run_epoch(state, xd, yd, epoch_key)
            if not bool(finite):
                guarded = _compiled_epoch(model, loss, optimizer, options, n, batch_size, True)
                new, summary, _, bad = guarded(state, xd, yd, epoch_key)
                bad = int(bad)
                stopped = (
                    f"non-finite loss or parameters at step {bad} (epoch {epoch + 1}); "
                    f"stopped, keeping the last finite state (step {int(new.step)})"
                    + (f" and the checkpoint of epoch {last_saved}" if last_saved else "")
                )
                state = new
                bar.close()
                break
            state = new
            summary = _floats(summary)
            record = {
                "epoch": epoch + 1,
                "step": int(state.step),
                "train_loss": summary["loss"],
                "train_acc": summary["accuracy"],
                "val_loss": None,
                "val_acc": None,
                "learning_rate": _learning_rate(learning_rate, state),
                "update_ratio": summary["update_ratio"],
                "grad_norm": summary["grad_norm"],
            }
            if val_data is not None:
                ev = evaluate(model, state.params, state.model_state, xv, yv, loss)
                record["val_loss"], record["val_acc"] = ev["loss"], ev["accuracy"]
            record["seconds"] = time.perf_counter() - t0
            history.append(record)
            epoch += 1
            if patience is not None:
                if record["val_acc"] > best_acc:
                    best, best_acc, since_best = state, record["val_acc"], 0
                else:
                    since_best += 1
                    if since_best >= patience:
                        stopped = "early_stopping"
            bar.update(1)
            bar.set_postfix(_postfix(record))
            if on_epoch is not None:
                on_epoch(record)
            due = checkpoint_every is not None and epoch % checkpoint_every == 0
            if ckpt is not None and (due or epoch == epochs or stopped is not None):
                ckpt.save(epoch, state, best, meta(epoch))
                last_saved = epoch
        bar.close()
    finally:
        if ckpt is not None:
            ckpt.close()
    if stopped == "early_stopping":
        state = best
    return FitResult(state, history, stopped)


def _postfix(record):
    names = {"train_loss": "loss", "train_acc": "acc", "val_acc": "val_acc"}
    return {short: f"{record[k]:.4f}" for k, short in names.items() if record[k] is not None}


def _progress(epochs, start, enabled):
    from tqdm.auto import tqdm

    return tqdm(total=epochs, initial=start, disable=not enabled, unit="epoch", leave=True)
