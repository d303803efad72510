"""``ensemble.fit``: ``jnn.train.fit`` for K members — the same epoch program and the same
epoch loop (``jnn.train._epoch`` / ``_loop``), with the step vmapped over a member axis.

What the ensemble mode adds to the loop:

- **Member keys.** Member ``k`` uses ``keys[k]`` exactly as ``jnn.train.fit`` uses ``key``
  (``init_k, run_k = split(keys[k])``; epoch ``e``: ``fold_in(run_k, e)`` split into an order
  key and a step key). With ``shuffle="per_member"`` member ``k`` therefore equals
  ``jnn.train.fit(..., key=keys[k])``; with ``"shared"`` (default) every member uses member
  0's minibatch order; with ``bootstrap=True`` member ``k`` trains on its own bootstrap
  resample (drawn once from its key) in its own order.
- **One member's failure is not the ensemble's.** A member whose loss or new state is
  NaN/inf is frozen at its last finite state (the guarded epoch, vmapped) and marked with
  the step; the others go on; the ensemble's metrics exclude it. Only when every member has
  diverged does training stop (``stopped == "non_finite"``).
- **Snapshots** (Huang et al. 2017): with ``snapshots=S`` the params and model state at the
  end of each of ``S`` equal cycles of epochs are kept in the carry (pair with a cyclic
  cosine schedule); ``EnsembleFitResult.snapshot_state`` stacks them as members.
- **EMA**: ``ema=decay`` chains ``jnn.train.params_ema(decay)`` after each member's
  optimizer; ``EnsembleFitResult.ema_state`` holds the debiased averages, with BatchNorm
  statistics *recomputed* on training data for the averaged weights.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jnn import data as _data
from jnn import tensorboard as _tensorboard
from jnn._foreign import as_model
from jnn._keys import as_keys
from jnn.ensemble import _hparams, _streamed
from jnn.ensemble._resident import EnsembleCarry, _Ensemble, _Ingredients
from jnn.ensemble._state import init, member
from jnn.train import _averages, _feed, _loop, _sharding
from jnn.train._feed import resident
from jnn.train._fit import _normalized
from jnn.train._state import TrainState, cast_inputs

__all__ = ["EnsembleCarry", "EnsembleFitResult", "fit"]


class EnsembleFitResult(NamedTuple):
    """What :func:`fit` returns.

    Attributes:
      state: the stacked final ``TrainState`` (the best-validation one after early stopping).
      history: per-epoch records: the ensemble's keys (``train_loss``/``train_acc`` are the
        alive members' means, ``val_loss``/``val_acc`` the ensemble's NLL and accuracy) and
        ``"members"``, one record per member.
      stopped, message, timings: as for ``jnn.train.FitResult``.
      diverged: one entry per member: ``None``, or ``{"step": s, "hyperparams": {...}}``.
      snapshot_state: the snapshots stacked as ``S * K`` members (``None`` without them).
      ema_state: the EMA params (debiased) with recomputed BatchNorm statistics, as a stacked
        ``TrainState`` (``None`` without ``ema``).
    """

    state: TrainState
    history: list
    stopped: str | None
    message: str | None
    timings: dict
    diverged: list
    snapshot_state: Any = None
    ema_state: Any = None

    @property
    def alive(self) -> np.ndarray:
        """``(K,)`` bool: the members that did not diverge."""
        return np.array([d is None for d in self.diverged])


def _with_ema(optimizer, decay):
    """Chains ``params_ema(decay)`` after the optimizer (or after each factory product)."""
    if decay is None:
        return optimizer
    if _hparams.is_factory(optimizer):
        return _EmaFactory(optimizer, decay)
    return optax.chain(optimizer, _averages.params_ema(decay))


class _EmaFactory(NamedTuple):
    """``factory(**hp)`` chained with ``params_ema`` (hashable, so programs are reused)."""

    factory: Callable
    decay: float

    def __call__(self, **hp):
        return optax.chain(self.factory(**hp), _averages.params_ema(self.decay))


# ----------------------------------------------------------------------------- fit


def _initial_carry(model, optimizer, init_keys, shape, dtype, hp, snapshots, state, layout):
    """The starting carry: fresh members (or ``state``), nobody diverged, empty snapshots;
    placed on the mesh when there is one."""
    if state is None:
        state = init(model, optimizer, init_keys, shape, dtype, hyperparams=hp or None)
    bad = jnp.full((init_keys.shape[0],), -1, jnp.int32)
    if layout is not None:
        state, bad = layout.put((state, bad), layout.state((state, bad)))
    stack = None
    if snapshots:
        stack = jax.tree.map(
            lambda a: jnp.zeros((snapshots, *a.shape), a.dtype), (state.params, state.model_state)
        )
    return EnsembleCarry(state, bad, stack)


def _check_options(shuffle, bootstrap, snapshots, epochs) -> str:
    """The data order to use (bootstrap implies per-member); refuses bad values."""
    shuffle = "per_member" if bootstrap else shuffle
    if shuffle not in ("shared", "per_member"):
        raise ValueError(f"shuffle must be 'shared' or 'per_member', got {shuffle!r}")
    if snapshots < 0 or (snapshots and epochs % snapshots):
        raise ValueError(f"snapshots={snapshots} must divide epochs={epochs}")
    return shuffle


def _per_member(learning_rate, k, hp) -> list:
    """The history's learning rate rule per member: one for all, a list of ``K``, or (when
    ``None``) the members' ``learning_rate`` hyperparameters, if given."""
    if learning_rate is None and "learning_rate" in hp:
        return np.asarray(hp["learning_rate"], np.float64).reshape(-1).tolist()
    return list(learning_rate) if isinstance(learning_rate, (list, tuple)) else [learning_rate] * k


def _result(model, result, timings, hp, ema, x_train) -> EnsembleFitResult:
    final = result.carry
    snapshot_state, ema_state = _averaged_states(model, final, ema, x_train)
    return EnsembleFitResult(
        final.state,
        result.history,
        result.stopped,
        result.message,
        timings,
        _diverged(final.bad, hp),
        snapshot_state,
        ema_state,
    )


def _extra(hp, bootstrap, sample_keys, n):
    extra = {"hp": hp}
    if bootstrap:
        extra["samples"] = jax.vmap(lambda k: _data.bootstrap_sample(k, n))(sample_keys)
    return extra


def _diverged(bad, hp):
    return [
        None if b < 0 else {"step": int(b), "hyperparams": _hparams.member_values(hp, k)}
        for k, b in enumerate(_sharding.host(bad))
    ]


def _averaged_states(model, carry, ema, x_train):
    """``(snapshot_state, ema_state)`` of the final carry (``None`` where not requested)."""
    snapshot_state = None
    if carry.snapshots is not None:
        params, model_state = jax.tree.map(lambda a: a.reshape(-1, *a.shape[2:]), carry.snapshots)
        snapshot_state = TrainState(params, model_state, None, None)
    ema_state = None
    if ema is not None:
        state = carry.state

        @jax.jit
        def averaged(opt_state, params, model_state, x):
            avg = _averages.ema_params(opt_state, params, ema)
            return avg, _averages.recompute_batch_stats(model, avg, model_state, x)

        params, model_state = jax.vmap(averaged, in_axes=(0, 0, 0, None))(
            state.opt_state, state.params, state.model_state, cast_inputs(x_train, state.params)
        )
        ema_state = TrainState(params, model_state, None, state.step)
    return snapshot_state, ema_state


def fit(
    model,
    loss: Callable,
    optimizer,
    train_data,
    *,
    epochs: int,
    batch_size: int,
    keys,
    val_data=None,
    hyperparams: dict | None = None,
    state: TrainState | None = None,
    dtype=None,
    shuffle: str = "shared",
    bootstrap: bool = False,
    step_options: dict | None = None,
    learning_rate=None,
    ema: float | None = None,
    snapshots: int = 0,
    member_chunk: int | None = None,
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
) -> EnsembleFitResult:
    """Trains ``K`` members in one compiled program per epoch (see the module docstring).

    Args:
      model, loss: as for ``jnn.train.fit``.
      optimizer: a transformation, or a factory called per member with its optimizer
        hyperparameters (``jnn.optim.adam``, ``lambda learning_rate: ...``).
      train_data, val_data, epochs, batch_size, state, dtype, step_options, checkpoint_dir,
        checkpoint_every, checkpoint_seconds, resume, patience, progress, on_epoch,
        on_start: as for ``jnn.train.fit`` (early stopping follows the ensemble's
        validation accuracy; checkpoints hold every member).
      keys: ``K`` member keys, typed ``(K,)`` or raw ``(K, 2)``.
      hyperparams: per-member values ``{name: K values}`` (``learning_rate``, ``b1``,
        ``momentum``, ``weight_decay``, ``l1``, ``l2``, ``dropout``, ...); arrays in the
        compiled program, so a new sweep reuses it.
      shuffle: ``"shared"`` (member 0's minibatch order for all) or ``"per_member"``.
      bootstrap: each member trains on its own bootstrap resample (implies per-member order).
      learning_rate: for the history: one float/schedule for all, or a list of K. Default:
        each member's ``learning_rate`` hyperparameter (the value its factory was given), else
        an injected ``learning_rate`` read from the optimizer state, else ``None``.

      ema: keep a debiased EMA of each member's params with this decay.
      snapshots: keep the state at the end of each of this many equal cycles of epochs.
      member_chunk: train (and validate) this many members at a time.
      mesh: ``None`` (one device), an int ``N`` (a ``"data"`` mesh of the first ``N`` local
        devices of each process) or a ``jax.sharding.Mesh`` with axes ``"ensemble"`` and/or
        ``"data"`` (``jnn.train.make_mesh(n, ensemble=E)``): members split over
        ``"ensemble"``, every global batch over ``"data"``, as in ``jnn.train.fit``. ``K``
        must divide by the ensemble axis and ``batch_size`` by the data axis.
      fsdp: also split each member's params / optimizer state on the data axis.
      tensorboard_dir: TensorBoard event files as for ``jnn.train.fit``: the ensemble's
        series there, each member's series, histograms and hyperparameters in its
        sub-folder (``jnn.tensorboard.member_dir``).
      steps_per_epoch, memory_budget, chunk_steps: as for ``jnn.train.fit``: ``train_data``
        (and ``val_data``) may be memory-mapped or large arrays (streamed in chunks), an
        iterable of ``(x, y)`` batches or a Grain dataset (see ``jnn.ensemble._streamed``):
        every member sees the same batches of an iterable; ``per_member`` order and
        ``bootstrap`` need indexable arrays (memory-mapped ones included). With ``ema`` on
        streamed arrays, BatchNorm statistics are recomputed on 4096 evenly spaced rows.

    Returns:
      :class:`EnsembleFitResult`.
    """
    # One narrated sequence: keys and options, the layout, the initial carry, the data, the
    # compiled mode, then the epoch loop every training mode shares (one argument per line).
    member_keys = as_keys(keys)
    model = as_model(model)
    hp = _hparams.as_hyperparams(hyperparams, member_keys.shape[0])
    _hparams.check_model_hyperparams(model, hp)
    shuffle = _check_options(shuffle, bootstrap, snapshots, epochs)
    stream, shape, batch_size = _feed.open_train(
        train_data, batch_size, memory_budget, steps_per_epoch
    )
    _streamed.check_stream(stream, shuffle, bootstrap, ema)
    layout = _sharding.as_layout(
        mesh, fsdp=fsdp, members=True, per_member_batch=shuffle == "per_member"
    )
    if layout is not None:
        layout.check(batch_size, member_keys.shape[0])
    init_keys, run_keys = jax.vmap(lambda key: tuple(jax.random.split(key)))(member_keys)
    optimizer = _with_ema(optimizer, ema)
    carry = _initial_carry(model, optimizer, init_keys, shape, dtype, hp, snapshots, state, layout)
    _hparams.check_objective_hyperparams(carry.state.params, hp)
    stream, chunk_steps = _feed.per_step_stream(model, train_data, stream, shape, chunk_steps)
    data = _feed.checked_run_data(
        model, member(carry.state, 0), train_data, stream, val_data, batch_size, patience,
        memory_budget,
    )  # fmt: skip
    ingredients = _ingredients(
        model, loss, optimizer, step_options, data, batch_size, shuffle, member_chunk, layout
    )
    mode, data = _mode(
        ingredients,
        data,
        carry.state.params,
        run_keys,
        _extra(hp, bootstrap, init_keys, ingredients.num_examples),
        _per_member(learning_rate, member_keys.shape[0], hp),
        snapshots,
        epochs,
        shape,
        chunk_steps,
    )
    result = _logged_epochs(
        mode,
        carry,
        model,
        data,
        hp,
        tensorboard_dir,
        epochs=epochs,
        key=run_keys[0],
        checkpoint=_loop.CheckpointPolicy.of(
            checkpoint_dir, checkpoint_every, checkpoint_seconds, resume
        ),
        patience=patience,
        progress=progress,
        on_epoch=on_epoch,
        on_start=on_start,
    )
    x_ema = data.train[0] if data.train is not None else None
    if ema is not None and x_ema is None:
        x_ema = _streamed.ema_sample(data.stream)
    return _result(model, result, mode.timings, hp, ema, x_ema)


def _ingredients(model, loss, optimizer, step_options, data, batch_size, shuffle, chunk, layout):
    """What the compiled programs are made of (their cache key)."""
    n = data.stream.num_examples if data.stream is not None else len(data.train[0])
    options = _normalized(step_options)
    return _Ingredients(
        model, loss, optimizer, options, n, batch_size, shuffle, chunk, data.val is not None, layout
    )


def _mode(
    ingredients, data, params, run_keys, extra, learning_rates, snapshots, epochs, shape, chunks
):
    """The training mode: :class:`_Ensemble` on resident data, else the streamed mode (resident
    training data with a streamed validation set also runs in chunks of the epoch).

    Returns:
      ``(mode, data)``: ``data`` with the stream the mode reads.
    """
    put = lambda pair: resident(pair, params, ingredients.layout)
    args = (
        ingredients,
        put(data.train) if data.stream is None else None,
        put(data.val) if data.val is not None else None,
        run_keys,
        extra,
        learning_rates,
        snapshots,
        epochs,
    )
    if data.stream is None and data.val_stream is None:
        return _Ensemble(*args), data
    if data.stream is None:  # resident training data, streamed validation: chunks of the epoch
        data = data._replace(stream=_feed.ArrayStream(*data.train))
    return _streamed.streamed_mode(args, data, ingredients, shape, chunks), data


def _logged_epochs(mode, carry, model, data, hp, tensorboard_dir, **loop):
    """``_loop.run_epochs(mode, carry, **loop)`` writing TensorBoard event files to
    ``tensorboard_dir`` (the ensemble's series; each member's in its sub-folder)."""
    k = carry.bad.shape[0]
    epoch_log = _tensorboard.open_log(
        tensorboard_dir,
        model,
        _feed.input_sample(data),
        members=k,
        member_hparams=_member_hparams(hp, k),
    )
    try:
        return _loop.run_epochs(
            _tensorboard.watched(mode, epoch_log, lambda c: (c.state.params, c.state.model_state)),
            carry,
            **loop,
        )
    finally:
        if epoch_log is not None:
            epoch_log.close()


def _member_hparams(hp, k) -> list[dict]:
    """Each member's hyperparameters (its TensorBoard HParams)."""
    return [{"member": m, **_hparams.member_values(hp, m)} for m in range(k)]
