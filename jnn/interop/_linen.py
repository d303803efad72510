"""Flax linen modules as jnn models: :func:`from_linen`."""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

import jax
import jax.numpy as jnp

from jnn.interop._names import cast_floating

__all__ = ["LinenModel", "from_linen"]

_NOT_STATE = ("params", "intermediates")


def _takes(module, kwarg) -> bool:
    """Whether ``module.__call__`` accepts the keyword ``kwarg`` (or any keyword)."""
    if kwarg is None:
        return False
    params = inspect.signature(type(module).__call__).parameters.values()
    return any(p.name == kwarg or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


@dataclasses.dataclass(frozen=True)
class LinenModel:
    """A Flax linen module as a jnn model (see :func:`from_linen`).

    Attributes:
      module: the ``flax.linen.Module``.
      train_kwarg: the keyword of ``module.__call__`` that switches training mode.
    """

    module: Any
    train_kwarg: str | None = "train"
    fixed_init = False  # every key gives a different initialisation
    activations_note = None  # linen shows every submodule's output (capture_intermediates)

    def _mode(self, train: bool) -> dict:
        return {self.train_kwarg: train} if _takes(self.module, self.train_kwarg) else {}

    def init(self, key, input_shape, dtype=None):
        """``(params, model_state)``: ``module.init({"params": key}, zeros)`` in eval mode;
        ``params`` is the ``"params"`` collection, ``model_state`` the others (e.g.
        ``{"batch_stats": ...}``); floating leaves cast to ``dtype`` when given."""
        x = jnp.zeros(tuple(input_shape), jnp.float32)  # linen's params are float32; cast after
        variables = dict(self.module.init({"params": key}, x, **self._mode(False)))
        params = variables.pop("params", {})
        state = {k: v for k, v in variables.items() if k not in _NOT_STATE}
        return cast_floating(params, dtype), cast_floating(state, dtype)

    def apply(self, params, state, x, *, key=None, train=False):
        """``module.apply({"params": params, **state}, x, train=train)``; in training the
        step's key is the ``"dropout"`` stream and every state collection is mutable.

        Returns:
          ``(y, new_model_state)``.
        """
        variables = {"params": params, **state}
        if not train:
            return self.module.apply(variables, x, **self._mode(False)), state
        rngs = {} if key is None else {"dropout": key}
        if not state:
            return self.module.apply(variables, x, rngs=rngs, **self._mode(True)), state
        y, updates = self.module.apply(
            variables, x, rngs=rngs, mutable=list(state), **self._mode(True)
        )
        # linen's BatchNorm computes its statistics in float32: keep the state's own dtypes
        kept = {
            k: jax.tree.map(lambda u, s: u.astype(s.dtype), updates[k], state[k]) for k in updates
        }
        return y, {**state, **kept}

    def activation_outputs(self, params, state, x, *, key=None, train=False) -> dict:
        """``{submodule path: (kind, output)}`` of one forward pass (linen's
        ``capture_intermediates``); ``kind`` is the submodule's class name in lower case."""
        rngs = {} if key is None or not train else {"dropout": key}
        mutable = ["intermediates", *(state if train else ())]
        _, variables = self.module.apply(
            {"params": params, **state},
            x,
            rngs=rngs,
            capture_intermediates=True,
            mutable=mutable,
            **self._mode(train),
        )
        bound = self.module.bind({"params": params, **state})
        return _intermediates(variables.get("intermediates", {}), bound)


def _intermediates(tree, bound, prefix=()) -> dict:
    out = {}
    for name, value in tree.items():
        if name == "__call__":
            if prefix:  # the whole model's output is not a layer's
                out["/".join(prefix)] = (_kind_at(bound, prefix), value[0])
            continue
        out.update(_intermediates(value, bound, (*prefix, name)))
    return out


def _kind_at(bound, path) -> str:
    """The lower-case class name of the submodule at ``path`` (its name stem if not found)."""
    module = bound
    for part in path:
        module = getattr(module, part, None) or _child(module, part)
        if module is None:
            return path[-1].rsplit("_", 1)[0].lower()
    return type(module).__name__.lower()


def _child(module, name):
    children = getattr(module, "_state", None)
    children = getattr(children, "children", {}) if children is not None else {}
    child = children.get(name)
    return child if child is not None and not isinstance(child, str) else None


def from_linen(module, *, train_kwarg: str | None = "train") -> LinenModel:
    """A Flax linen module as a jnn model.

    ``params`` are linen's ``"params"`` collection under its own names (``Conv_0/kernel``);
    ``model_state`` holds the other collections (``{"batch_stats": ...}``), so
    ``{"params": params, **model_state}`` are valid linen variables. In training the step's
    key is the ``"dropout"`` stream (``rngs={"dropout": key}``) and the state collections are
    ``mutable``; ``train_kwarg`` (``None``: none) is passed ``True`` / ``False`` when
    ``module.__call__`` takes it.

    Args:
      module: a ``flax.linen.Module``.
      train_kwarg: the keyword of ``module.__call__`` that switches training mode.

    Returns:
      A jnn model with ``init(key, input_shape)`` and ``apply(params, state, x, *, key,
      train)``.
    """
    from jnn._foreign import library_of

    if library_of(module) != "linen" or isinstance(module, type):
        raise TypeError(f"from_linen expects a flax.linen.Module instance; got {module!r}.")
    return LinenModel(module, train_kwarg)
