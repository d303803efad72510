"""The training objective and the pure training step ``step(state, batch, key)``."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from jnn import losses as _losses
from jnn import monitor as _monitor
from jnn import regularizers as _reg
from jnn._dtypes import at_least_float32 as _widen
from jnn._foreign import as_model
from jnn._keys import as_key
from jnn.train import _sharding
from jnn.train._state import TrainState

__all__ = ["Objective", "make_step"]


def _is_off(coefficient) -> bool:
    """A penalty coefficient that is the Python number 0 (arrays and tracers count as on)."""
    return isinstance(coefficient, (int, float)) and coefficient == 0


def _check_coefficient(name, value) -> None:
    if isinstance(value, (int, float)) and not value >= 0:
        raise ValueError(f"{name} must be >= 0, got {name}={value}.")


def at_least_float32(tree):
    """Casts 16-bit floating leaves to float32 (losses are computed in at least float32)."""

    def cast(leaf):
        if hasattr(leaf, "dtype") and jnp.issubdtype(leaf.dtype, jnp.floating):
            return leaf.astype(_widen(leaf.dtype))
        return leaf

    return jax.tree.map(cast, tree)


@dataclasses.dataclass(frozen=True)
class Objective:
    """The training objective ``mean_i loss(f(x_i), y_i) + l1 sum|w| + l2/2 sum w^2``.

    Penalties cover the weight leaves only (``jnn.regularizers``). The model runs with
    ``train=True`` and the given dropout key; outputs are cast to at least float32 before the
    loss, so 16-bit networks get a float32 loss. Hashable when its fields are, so jitted
    users (``jnn.sanity.check_gradients``) compile once.

    Attributes:
      model: a layer with ``apply(params, state, x, *, key, train)``.
      loss: per-example loss ``loss(outputs, targets) -> (batch,)``.
      l1, l2: penalty coefficients (Python numbers, or arrays for per-member values).
    """

    model: Any
    loss: Callable
    l1: Any = 0.0
    l2: Any = 0.0

    def penalty(self, params):
        """``l1 sum|w| + l2/2 sum w^2`` over the weights (at least float32; float64 stays)."""
        terms = []
        if not _is_off(self.l1):
            terms.append(_reg.l1(params, coefficient=self.l1))
        if not _is_off(self.l2):
            terms.append(_reg.l2(params, coefficient=self.l2))
        if not terms:
            return jnp.zeros((), jnp.float32)
        dtype = _widen(*(t.dtype for t in terms))
        return sum(t.astype(dtype) for t in terms)

    def with_aux(self, params, model_state, x, y, key):
        """``(total, (data_loss, accuracy, new_model_state))`` for ``jax.value_and_grad``."""
        outputs, new_model_state = self.model.apply(params, model_state, x, key=key, train=True)
        outputs = at_least_float32(outputs)
        data_loss = jnp.mean(self.loss(outputs, y))
        total = data_loss
        if not (_is_off(self.l1) and _is_off(self.l2)):
            total = total + self.penalty(params).astype(data_loss.dtype)
        accuracy = _losses.accuracy(outputs, y)
        return total, (data_loss, accuracy, new_model_state)

    def __call__(self, params, model_state, x, y, key):
        """The scalar objective (what ``jnn.gradcheck.check_grads`` checks)."""
        return self.with_aux(params, model_state, x, y, key)[0]


def _monitor_flag(monitor) -> int:
    """``monitor`` as "every N steps": True -> 1, False -> 0 (never), N -> N."""
    if isinstance(monitor, bool):
        return int(monitor)
    if not isinstance(monitor, int) or monitor < 0:
        raise ValueError(f"monitor must be a bool or an int >= 0 (every N steps), got {monitor!r}.")
    return monitor


def _layer_metrics(params, grads, updates):
    return _monitor.grad_norms(grads), _monitor.update_ratios(params, updates)


def _sometimes(every, step, params, grads, updates):
    """The per-layer metrics on steps with ``step % every == 0``, NaN on the others."""
    shapes = jax.eval_shape(_layer_metrics, params, grads, updates)
    return jax.lax.cond(
        step % every == 0,
        lambda: _layer_metrics(params, grads, updates),
        lambda: jax.tree.map(lambda s: jnp.full(s.shape, jnp.nan, s.dtype), shapes),
    )


def _update(optimizer, constraint, clip_norm, state, grads):
    if clip_norm is not None:
        grads, _ = optax.clip_by_global_norm(clip_norm).update(grads, optax.EmptyState())
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    if constraint is not None:
        updates, _ = constraint.update(updates, constraint.init(state.params), state.params)
    return updates, opt_state


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
    monitor: bool | int = 100,
    mesh=None,
    fsdp: bool = False,
):
    """Builds a pure training step ``step(state, batch, key) -> (state, metrics)``.

    The objective is :class:`Objective`: ``mean_i loss(f(x_i), y_i) + l1 * sum|w| +
    l2 * 0.5 * sum w^2``. The gradient's global norm is clipped to ``clip_norm``
    (``g * min(1, clip_norm / ||g||)``) before the optimizer; the max-norm constraint (each
    unit's incoming weights ``||w_j|| <= max_norm``) is applied to the optimizer's update.
    The dropout key is ``fold_in(key, state.step)``.

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
      monitor: the per-layer ``grad_norm`` / ``update_ratio`` metrics (``jnn.monitor``) cost
        about a quarter of a small MLP's step, so by default (``100``) they are computed
        inside the step only when ``state.step % 100 == 0`` (``lax.cond``; NaN on the other
        steps); ``True`` computes them every step, ``False`` never (empty dicts), an int
        ``N`` every ``N`` steps.
      mesh: ``None`` (one device), a ``jax.sharding.Mesh`` with a ``"data"`` axis or an int
        ``N`` (``jnn.train.make_mesh(N)``): data-parallel. The batch is split on ``"data"``
        (its size must divide by the axis), the state replicated (or FSDP-split), and XLA
        reduces the gradients; the jitted step puts ``state`` and ``batch`` in those
        shardings first (see ``jnn.train._sharding``). In a multi-process run, pass the
        global batch as ``jnn.distributed.global_batch(local_rows, mesh)``.
      fsdp: with a mesh, split params and optimizer state on the data axis.

    Returns:
      ``step(state, (x, y), key) -> (state, metrics)``; ``metrics`` has ``"loss"`` (the mean
      data loss, without penalties), ``"accuracy"`` (NaN unless integer labels), and
      ``"grad_norm"`` / ``"update_ratio"`` dicts keyed by parameter path, e.g. ``"dense_0/w"``;
      gradient norms are taken before clipping.
    """
    # Long only by its docstring; the body picks the step variant and wraps it.
    _check_coefficient("l1", l1)
    _check_coefficient("l2", l2)
    model = as_model(model)
    if clip_norm is not None and not clip_norm > 0:
        raise ValueError(f"clip_norm must be > 0 or None, got {clip_norm}.")
    every = _monitor_flag(monitor)
    layout = _sharding.as_layout(mesh, fsdp=fsdp)
    constraint = _reg.max_norm(max_norm) if max_norm is not None else None
    grad_fn = jax.value_and_grad(Objective(model, loss, l1, l2).with_aux, has_aux=True)

    def step(state: TrainState, batch, key):
        x, y = batch
        key = jax.random.fold_in(as_key(key), state.step)
        (_, (data_loss, acc, model_state)), grads = grad_fn(
            state.params, state.model_state, x, y, key
        )
        updates, opt_state = _update(optimizer, constraint, clip_norm, state, grads)
        if every == 1:
            norms, ratios = _layer_metrics(state.params, grads, updates)
        elif every > 1:
            norms, ratios = _sometimes(every, state.step, state.params, grads, updates)
        else:
            norms, ratios = {}, {}
        params = optax.apply_updates(state.params, updates)
        metrics = {"loss": data_loss, "accuracy": acc, "grad_norm": norms, "update_ratio": ratios}
        return TrainState(params, model_state, opt_state, state.step + 1), metrics

    if layout is not None:
        step = _sharding.constrained(step, layout)
    if not jit:
        return step
    jitted = jax.jit(step, donate_argnums=0 if donate else ())
    return jitted if layout is None else _sharding.placed(jitted, layout)
