"""Ensemble prediction and evaluation: the mean of the members' probabilities, and whether
the ensemble helps (per-member accuracy and NLL; the ensemble's accuracy, NLL, Brier score
and expected calibration error; member disagreement)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jnn import _memo
from jnn import losses as _losses
from jnn import metrics as _metrics
from jnn._compile import one_shot_jit
from jnn._foreign import as_model
from jnn.ensemble import _hparams
from jnn.ensemble._members import map_members, num_members_of
from jnn.train._state import cast_inputs
from jnn.train._step import at_least_float32

__all__ = ["evaluate", "member_log_probs", "mix", "predict"]


def member_outputs(model, params, model_state, x):
    """One member's inference-mode outputs (cast to at least float32)."""
    out, _ = model.apply(params, model_state, cast_inputs(x, params), train=False)
    return at_least_float32(out)


def member_log_probs(model, params, model_state, x, hp=None, chunk=None):
    """``(K, N, C)`` log-probabilities of every member (traceable).

    Args:
      model: the shared architecture; params / model_state stacked on a member axis.
      x: inputs ``(N, ...)`` shared by all members.
      hp: per-member hyperparameters (only the model's, e.g. dropout, matter; inert here).
      chunk: members per ``lax.map`` chunk (``None``: one vmap).
    """
    hp = hp or {}

    def one(p, s, h):
        return _losses.log_probabilities(member_outputs(_hparams.member_model(model, h), p, s, x))

    return map_members(one, (0, 0, 0), chunk)(params, model_state, hp)


def mix(log_probs, alive=None):
    """The ensemble's probabilities ``(1/|A|) sum_{k in A} p_k`` over the alive members
    ``A`` (all of them when ``alive`` is None): ``(N, C)``."""
    probs = jnp.exp(log_probs)
    if alive is None:
        return jnp.mean(probs, axis=0)
    weight = alive.astype(probs.dtype)
    return jnp.tensordot(weight, probs, axes=1) / jnp.maximum(jnp.sum(weight), 1.0)


def _alive_mask(members, k):
    if members is None:
        return None
    mask = np.zeros(k, bool)
    members = np.asarray(members)
    if members.dtype == bool:
        if members.shape != (k,):
            raise ValueError(f"members mask must have shape ({k},), got {members.shape}")
        mask = members
    else:
        mask[members.astype(int)] = True
    if not mask.any():
        raise ValueError("members selects no member")
    return jnp.asarray(mask)


@_memo.cached
def _predict_program(model, chunk):
    return one_shot_jit(
        lambda p, s, x, alive: mix(member_log_probs(model, p, s, x, None, chunk), alive)
    )


def predict(model, ensemble_state, x, *, members=None, member_chunk: int | None = None):
    """Mean of the members' class probabilities ``(1/K) sum_k p_k(x)``.

    Members run in inference mode (``train=False``); ``p_k`` is the softmax of a member's
    scores (or a hierarchical-softmax head's class probabilities).

    Args:
      model: the shared architecture.
      ensemble_state: a ``TrainState`` with a leading member axis (or any object with
        ``params`` and ``model_state`` so stacked).
      x: inputs ``(N, ...)``.
      members: the members to average (indices or a ``(K,)`` bool mask; default all), e.g.
        excluding diverged ones.
      member_chunk: members per chunk (less memory, same result).

    Returns:
      ``(N, C)`` probabilities; ``argmax(-1)`` is the ensemble's prediction.
    """
    model = as_model(model)
    k = num_members_of(ensemble_state.params)
    alive = _alive_mask(members, k)
    return _predict_program(model, member_chunk)(
        ensemble_state.params, ensemble_state.model_state, jnp.asarray(x), alive
    )


@_memo.cached
def _evaluate_program(model, chunk, bins):
    def run(params, model_state, x, y):
        probs = jnp.exp(member_log_probs(model, params, model_state, x, None, chunk))
        mixed = jnp.mean(probs, axis=0)
        return {
            "member_accuracy": jax.vmap(lambda p: _losses.accuracy(p, y))(probs),
            "member_nll": jax.vmap(lambda p: _metrics.negative_log_likelihood(p, y))(probs),
            "accuracy": _losses.accuracy(mixed, y),
            "nll": _metrics.negative_log_likelihood(mixed, y),
            "brier": _metrics.brier_score(mixed, y),
            "ece": _metrics.expected_calibration_error(mixed, y, bins=bins),
            "disagreement": _metrics.disagreement(probs),
        }

    return one_shot_jit(run)


def _select(tree, index):
    return jax.tree.map(lambda a: a[index], tree)


def evaluate(
    model, ensemble_state, x, y, *, members=None, bins: int = 15, member_chunk=None
) -> dict:
    """Whether the ensemble helps: per-member and ensemble metrics on ``(x, y)``.

    Args:
      model: the shared architecture.
      ensemble_state: stacked ``TrainState`` (``params``, ``model_state``).
      x, y: inputs and integer labels.
      members: members to include in the ensemble (indices or a bool mask; default all),
        e.g. the ones that did not diverge.
      bins: calibration bins of the expected calibration error (15).
      member_chunk: members per chunk (less memory, same result).

    Returns:
      ``{"members": [{"accuracy", "nll"}, ...] (every member), "accuracy", "nll", "brier",
      "ece", "disagreement", "member_mean_accuracy", "member_best_accuracy"}`` as floats;
      the ensemble's metrics and the member statistics cover the included members only.
    """
    model = as_model(model)
    k = num_members_of(ensemble_state.params)
    mask = _alive_mask(members, k)
    included = np.ones(k, bool) if mask is None else np.asarray(mask)
    program = _evaluate_program(model, member_chunk, bins)
    x, y = jnp.asarray(x), jnp.asarray(y)
    every = jax.device_get(program(ensemble_state.params, ensemble_state.model_state, x, y))
    chosen = every
    if not included.all():
        index = jnp.asarray(np.flatnonzero(included))
        chosen = jax.device_get(
            program(
                _select(ensemble_state.params, index),
                _select(ensemble_state.model_state, index),
                x,
                y,
            )
        )
    accs = np.asarray(every["member_accuracy"], np.float64)
    out = {
        name: float(chosen[name]) for name in ("accuracy", "nll", "brier", "ece", "disagreement")
    }
    out["members"] = [
        {"accuracy": float(a), "nll": float(n)}
        for a, n in zip(accs, np.asarray(every["member_nll"]), strict=True)
    ]
    out["member_mean_accuracy"] = float(accs[included].mean())
    out["member_best_accuracy"] = float(accs[included].max())
    return out
