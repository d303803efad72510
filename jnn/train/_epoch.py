"""One epoch as one jitted program: shuffle, ``lax.scan`` the step over the minibatches,
validate. Shared by ``jnn.train.fit`` (one model) and ``jnn.ensemble.fit`` (the same step
vmapped over a member axis).

The scan carries ``(state, bad)``: ``bad`` is ``-1`` while training is healthy and otherwise
the step at which the loss or the new state first became non-finite. Two variants:

- *fast* (``guard=False``): no per-step check; the epoch reports whether every step's loss
  and the final state were finite. This is the path every healthy epoch takes.
- *guarded* (``guard=True``): each step keeps the last finite state and records the first
  bad step. ``fit`` re-runs an epoch this way only after the fast run saw a non-finite value,
  so the failure is pinned to a step at no cost to healthy runs. Vmapped over members, the
  same guard freezes each diverged member at its last finite state while the others train.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jnn.train import _sharding

__all__ = ["StepFns", "all_finite", "build_epoch", "carry_step"]


def all_finite(tree):
    """``True`` when every floating leaf of ``tree`` is finite (a bool scalar)."""
    checks = [
        jnp.all(jnp.isfinite(x))
        for x in jax.tree.leaves(tree)
        if jnp.issubdtype(x.dtype, jnp.inexact)
    ]
    return jnp.all(jnp.stack(checks)) if checks else jnp.asarray(True)


def carry_step(step: Callable, guard: bool) -> Callable:
    """Lifts ``step(state, batch, key)`` to the scan carry ``(state, bad)``.

    With ``guard``: ``ok = bad < 0 and loss finite and new params/model state finite``; the
    new state is kept only when ``ok`` and ``bad`` becomes the failing step's index.
    """

    def fast(carry, batch, key):
        state, bad = carry
        new, metrics = step(state, batch, key)
        return (new, bad), metrics

    def guarded(carry, batch, key):
        state, bad = carry
        new, metrics = step(state, batch, key)
        healthy = bad < 0
        ok = healthy & jnp.isfinite(metrics["loss"]) & all_finite((new.params, new.model_state))
        bad = jnp.where(healthy & ~ok, state.step, bad)
        new = jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, state)
        return (new, bad), metrics

    return guarded if guard else fast


class StepFns(NamedTuple):
    """The steps an epoch program scans, already lifted to the carry (and to members).

    Attributes:
      plain: ``(carry, batch, key) -> (carry, metrics)`` without per-layer metrics.
      monitored: the same with per-layer metrics (the epoch's last step).
      state_finite: ``state -> bool`` (a ``(K,)`` bool for an ensemble).
    """

    plain: Callable
    monitored: Callable
    state_finite: Callable


def _summary(metrics, last):
    """Epoch means of loss and accuracy (over the step axis), the last step's per-layer
    metrics, and whether every step's loss was finite."""
    joined = {k: jnp.concatenate([metrics[k], last[k][None]]) for k in ("loss", "accuracy")}
    return {
        "loss": jnp.mean(joined["loss"], axis=0),
        "accuracy": jnp.mean(joined["accuracy"], axis=0),
        "losses_finite": jnp.all(jnp.isfinite(joined["loss"]), axis=0),
        "grad_norm": last["grad_norm"],
        "update_ratio": last["update_ratio"],
    }


def _sharded(steps: StepFns, layout) -> StepFns:
    """``steps`` with the layout pinned (``_sharding.constrained``): each gathered batch split
    on the data axis, the carry kept in the state's sharding after every step."""
    if layout is None:
        return steps
    return steps._replace(
        plain=_sharding.constrained(steps.plain, layout),
        monitored=_sharding.constrained(steps.monitored, layout),
    )


def build_epoch(
    steps_for: Callable, draw: Callable, take: Callable, validate=None, split_key=None, layout=None
):
    """The jitted epoch ``run(carry, data, val_data, key, extra) -> (carry, summary, val)``.

    Args:
      steps_for: ``extra -> StepFns`` (called while tracing; ``extra`` holds per-run arrays
        such as per-member hyperparameters, so new values do not recompile).
      draw: ``(order_key, extra) -> indices`` with the step axis first (``(steps, B)``, or
        ``(steps, K, B)`` for per-member batches).
      take: ``(data, indices) -> batch``.
      validate: optional ``(carry, val_data, extra) -> metrics`` run after the last step.
      split_key: ``key -> (order_key, step_key)`` (default ``jax.random.split``; an ensemble
        splits each member's key).
      layout: an optional ``jnn.train._sharding.Layout``: batches split on its data axis,
        the carry kept in its state sharding, the summary and validation metrics replicated
        (readable by every process). ``None``: one device, no constraints.

    Returns:
      The jitted function. ``summary`` holds the epoch means (see :func:`_summary`) and
      ``"finite"``: every step's loss and the final state finite (per member for ensembles).
    """

    split_key = split_key or (lambda key: tuple(jax.random.split(key)))

    def run(carry, data, val_data, key, extra):
        order_key, step_key = split_key(key)
        steps = _sharded(steps_for(extra), layout)
        idx = draw(order_key, extra)
        carry, metrics = jax.lax.scan(
            lambda c, ix: steps.plain(c, take(data, ix), step_key), carry, idx[:-1]
        )
        carry, last = steps.monitored(carry, take(data, idx[-1]), step_key)
        summary = _summary(metrics, last)
        summary["finite"] = summary.pop("losses_finite") & steps.state_finite(carry[0])
        val = validate(carry, val_data, extra) if validate is not None else None
        if layout is not None:
            summary, val = layout.constrain((summary, val), layout.replicated((summary, val)))
        return carry, summary, val

    return jax.jit(run)
