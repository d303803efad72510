"""The ensemble mode on resident data: K members' vmapped steps compiled into one program per
epoch (``jnn.train._epoch``), run and recorded epoch by epoch for the shared loop
(``jnn.train._loop``). ``jnn.ensemble._streamed`` runs the same members chunk by chunk;
``jnn.ensemble.fit`` chooses between them (see ``jnn.ensemble._fit``)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jnn import _memo
from jnn import data as _data
from jnn import losses as _losses
from jnn.ensemble import _evaluate, _hparams
from jnn.ensemble._members import map_members
from jnn.ensemble._step import member_step
from jnn.train import _epoch, _loop, _sharding
from jnn.train._feed import take as _take
from jnn.train._fit import injected_learning_rate, recorded_learning_rate
from jnn.train._state import TrainState

__all__ = ["EnsembleCarry"]


class EnsembleCarry(NamedTuple):
    """The ensemble loop's carry (a pytree; checkpointed whole).

    Attributes:
      state: the stacked ``TrainState``.
      bad: ``(K,)`` int32: ``-1`` for a healthy member, else the step it diverged at.
      snapshots: ``(params, model_state)`` stacked ``(S, K, ...)``, or ``None``.
    """

    state: TrainState
    bad: jax.Array
    snapshots: Any = None


# ----------------------------------------------------------------------------- the program


def _split_member_keys(keys):
    order, step = jax.vmap(lambda k: tuple(jax.random.split(k)))(keys)
    return order, step


def _draw(num_examples, batch_size, shuffle):
    def shared(order_keys, _extra):
        return _data.batch_indices(order_keys[0], num_examples, batch_size)

    def per_member(order_keys, extra):
        idx = jax.vmap(lambda k: _data.batch_indices(k, num_examples, batch_size))(order_keys)
        samples = extra.get("samples")
        if samples is not None:
            idx = jax.vmap(lambda s, i: s[i])(samples, idx)
        return jnp.swapaxes(idx, 0, 1)  # (steps, K, B)

    return shared if shuffle == "shared" else per_member


def _validate(model, loss, chunk):
    def run(carry, val, hp):
        state, bad = carry
        x, y = val

        def one(p, s, h):
            out = _evaluate.member_outputs(_hparams.member_model(model, h), p, s, x)
            return jnp.mean(loss(out, y)), _losses.log_probabilities(out)

        member_loss, logp = map_members(one, (0, 0, 0), chunk)(state.params, state.model_state, hp)
        mixed = _evaluate.mix(logp, bad < 0)
        return {
            "member_loss": member_loss,
            "member_acc": jax.vmap(lambda lp: _losses.accuracy(lp, y))(logp),
            "ensemble_nll": -jnp.mean(jnp.log(jnp.take_along_axis(mixed, y[:, None], 1) + 1e-30)),
            "ensemble_acc": _losses.accuracy(mixed, y),
        }

    return run


def _member_steps(model, loss, optimizer, options, shuffle, guard, chunk):
    """``steps_for(extra)``: the plain and monitored steps of the K members, vmapped (a
    shared batch, or one ``(K, B)`` batch per member), with ``extra["hp"]``."""
    options = dict(options)
    batch_axis = None if shuffle == "shared" else 0

    def lifted(monitor):
        def one(carry, batch, key, h):
            step = member_step(model, loss, optimizer, h, {**options, "monitor": monitor})
            return _epoch.carry_step(step, guard)(carry, batch, key)

        return map_members(one, (0, batch_axis, 0, 0), chunk)

    plain, monitored = lifted(False), lifted(True)
    finite = jax.vmap(lambda s: _epoch.all_finite((s.params, s.model_state)))

    def steps_for(extra):
        hp = extra["hp"]
        return _epoch.StepFns(
            lambda c, b, k: plain(c, b, k, hp), lambda c, b, k: monitored(c, b, k, hp), finite
        )

    return steps_for


@_memo.cached
def _program(
    model, loss, optimizer, options, n, batch_size, shuffle, guard, chunk, has_val, layout=None
):
    steps_for = _member_steps(model, loss, optimizer, options, shuffle, guard, chunk)
    return _epoch.build_epoch(
        steps_for,
        _draw(n, batch_size, shuffle),
        _take,
        (lambda c, v, extra: _validate(model, loss, chunk)(c, v, extra["hp"])) if has_val else None,
        split_key=_split_member_keys,
        layout=layout,
    )


# ----------------------------------------------------------------------------- the mode


class _Ingredients(NamedTuple):
    model: Any
    loss: Callable
    optimizer: Any
    options: tuple
    num_examples: int
    batch_size: int
    shuffle: str
    chunk: int | None
    has_val: bool
    layout: Any = None

    def program(self, guard: bool):
        return _program(*self[:7], guard, *self[7:])


def _lists(tree):
    """Device arrays -> lists of Python floats (NaN/inf -> None), one entry per member."""

    def convert(v):
        flat = np.asarray(v, np.float64).reshape(-1)
        return [float(x) if np.isfinite(x) else None for x in flat]

    return jax.tree.map(convert, jax.device_get(tree))


def _member_rows(summary, val, bad, lrs):
    rows = []
    for k in range(len(bad)):
        rows.append(
            {
                "member": k,
                "train_loss": summary["loss"][k],
                "train_acc": summary["accuracy"][k],
                "val_loss": None if val is None else val["member_loss"][k],
                "val_acc": None if val is None else val["member_acc"][k],
                "learning_rate": lrs[k],
                "update_ratio": {n: v[k] for n, v in summary["update_ratio"].items()},
                "grad_norm": {n: v[k] for n, v in summary["grad_norm"].items()},
                "diverged_at": None if bad[k] < 0 else int(bad[k]),
            }
        )
    return rows


def _alive_mean(values, alive):
    picked = [v for v, a in zip(values, alive, strict=True) if a and v is not None]
    return float(np.mean(picked)) if picked else None


def _layer_means(per_member: dict, alive) -> dict:
    """Per-layer metrics (``(K,)`` each) averaged over the alive members."""
    return {name: _alive_mean(list(v), alive) for name, v in per_member.items()}


@jax.jit
def _epoch_keys(run_keys, epoch):
    """Each member's key of epoch ``e``: ``fold_in(run_k, e)`` (one compiled call)."""
    return jax.vmap(jax.random.fold_in, in_axes=(0, None))(run_keys, epoch)


class _Ensemble:
    """The training mode of K vmapped members (see the module docstring)."""

    def __init__(
        self, ingredients, data, val_data, run_keys, extra, learning_rates, snapshots, epochs
    ):
        self.ing, self.data, self.val_data = ingredients, data, val_data
        self.run_keys, self.extra, self.learning_rates = run_keys, extra, learning_rates
        self.snapshot_epochs = [epochs // snapshots * (i + 1) for i in range(snapshots)]
        self.timings = {"compile": 0.0, "train": 0.0}
        self._compiled = {}

    def _run(self, guard, carry, keys):
        args = ((carry.state, carry.bad), self.data, self.val_data, keys, self.extra)
        if guard not in self._compiled:
            t0 = time.perf_counter()
            self._compiled[guard] = self.ing.program(guard).lower(*args).compile()
            self.timings["compile"] += time.perf_counter() - t0
        return self._compiled[guard](*args)

    def run_epoch(self, carry, epoch, _key):
        t0, compiling = time.perf_counter(), self.timings["compile"]
        keys = _epoch_keys(self.run_keys, epoch)

        guard = bool(jnp.any(carry.bad >= 0))
        (state, bad), summary, val = self._run(guard, carry, keys)
        if not guard and not bool(jnp.all(summary["finite"])):
            (state, bad), summary, val = self._run(True, carry, keys)
        carry = EnsembleCarry(state, bad, self._snapshot(carry.snapshots, state, epoch + 1))
        bad_host = _sharding.host(bad)
        if (bad_host >= 0).all():
            message = "every member diverged (non-finite loss or parameters): " + ", ".join(
                f"member {k} at step {s}" for k, s in enumerate(bad_host)
            )
            return _loop.EpochOutcome(carry, None, "non_finite", message)
        record = self.record(epoch, state, _lists(summary), _lists(val) if val else None, bad_host)
        record["seconds"] = time.perf_counter() - t0 - (self.timings["compile"] - compiling)
        self.timings["train"] += record["seconds"]
        return _loop.EpochOutcome(carry, record)

    def _snapshot(self, snapshots, state, epochs_done):
        if snapshots is None or epochs_done not in self.snapshot_epochs:
            return snapshots
        i = self.snapshot_epochs.index(epochs_done)
        return jax.tree.map(
            lambda s, v: s.at[i].set(v), snapshots, (state.params, state.model_state)
        )

    def record(self, epoch, state, summary, val, bad):
        step = int(_sharding.host(state.step)[0])
        alive = bad < 0
        lrs = self._recorded_rates(state.opt_state, step)

        rows = _member_rows(summary, val, bad, lrs)
        accs = [
            (r["val_acc"] if val else r["train_acc"], r["member"])
            for r in rows
            if r["diverged_at"] is None and (r["val_acc"] if val else r["train_acc"]) is not None
        ]
        return {
            "epoch": epoch + 1,
            "step": step,
            "train_loss": _alive_mean(summary["loss"], alive),
            "train_acc": _alive_mean(summary["accuracy"], alive),
            "val_loss": None if val is None else val["ensemble_nll"][0],
            "val_acc": None if val is None else val["ensemble_acc"][0],
            "learning_rate": _alive_mean(lrs, alive),
            "update_ratio": _layer_means(summary["update_ratio"], alive),
            "grad_norm": _layer_means(summary["grad_norm"], alive),
            "alive": int(alive.sum()),
            "best_member": max(accs)[1] if accs else None,
            "worst_member": min(accs)[1] if accs else None,
            "members": rows,
        }

    def _recorded_rates(self, opt_state, step) -> list:
        """Each member's learning rate of the last update; an injected ``learning_rate`` is
        read from the stacked optimizer state once (one transfer, not K slices)."""
        injected = [None] * len(self.learning_rates)
        if any(lr is None for lr in self.learning_rates):
            stacked = injected_learning_rate(opt_state)
            if stacked is not None:
                injected = np.asarray(_sharding.host(stacked), np.float64).reshape(-1).tolist()
        return [
            injected[k] if lr is None else recorded_learning_rate(lr, None, step)
            for k, lr in enumerate(self.learning_rates)
        ]

    @staticmethod
    def score(record):

        return record["val_acc"]
