"""Combinators: :class:`Serial` (layers in order) and :func:`layer_names`."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import jax
import jax.numpy as jnp

from jnn._keys import as_key
from jnn.nn._base import Layer, _kind, _out_shape

__all__ = ["Serial", "layer_names"]


@dataclasses.dataclass(frozen=True, init=False, repr=False)
class Serial(Layer):
    """Layers applied in order: ``Serial(Dense(100), Relu(), Dense(10))``.

    Params and state are dicts keyed ``f"{type(layer).__name__.lower()}_{i}"`` (``i`` the
    position; see :attr:`names`), every child present (``{}`` when it has none). Child ``i``
    gets the key ``jax.random.fold_in(key, i)`` in both ``init`` and ``apply``; typed and raw
    keys from the same seed give identical results.
    """

    layers: tuple[Layer, ...] = dataclasses.field(repr=False)

    def __init__(self, *layers: Layer):
        for i, layer in enumerate(layers):
            if not (hasattr(layer, "init") and hasattr(layer, "apply")):
                raise TypeError(f"Serial item {i} is not a layer (needs init/apply): {layer!r}.")
        object.__setattr__(self, "layers", tuple(layers))

    def __repr__(self):
        return "Serial(" + ", ".join(repr(layer) for layer in self.layers) + ")"

    @property
    def names(self) -> tuple[str, ...]:
        """The children's param/state keys: ``("dense_0", "relu_1", ...)``. The one naming rule."""
        return tuple(f"{_kind(layer)}_{i}" for i, layer in enumerate(self.layers))

    def init(self, key, input_shape, dtype=jnp.float32):
        key = as_key(key)
        params, state = {}, {}
        shape = tuple(input_shape)
        for i, (name, layer) in enumerate(zip(self.names, self.layers, strict=True)):
            p, s = layer.init(jax.random.fold_in(key, i), shape, dtype)
            params[name], state[name] = p, s
            if i + 1 < len(self.layers):
                shape = _out_shape(layer, p, s, shape, dtype)
        return params, state

    def apply(self, params, state, x, *, key=None, train=False):
        y, new_state, _ = self.apply_intermediates(params, state, x, key=key, train=train)
        return y, new_state

    def apply_intermediates(self, params, state, x, *, key=None, train=False):
        """Like ``apply`` but also returns ``{name: output}`` for every child layer.

        Returns:
          ``(y, new_state, outputs)``.
        """
        for tree, what in ((params, "params"), (state, "state")):
            if not isinstance(tree, Mapping) or set(tree) != set(self.names):
                got = sorted(tree) if isinstance(tree, Mapping) else type(tree).__name__
                raise ValueError(
                    f"Serial expects {what} keyed {list(self.names)} (from its init); got {got}."
                )
        key = None if key is None else as_key(key)
        new_state, outputs = {}, {}
        for i, (name, layer) in enumerate(zip(self.names, self.layers, strict=True)):
            k = None if key is None else jax.random.fold_in(key, i)
            x, new_state[name] = layer.apply(params[name], state[name], x, key=k, train=train)
            outputs[name] = x
        return x, new_state, outputs


def layer_names(layer) -> tuple[str, ...]:
    """The param/state keys of a :class:`Serial` (``("dense_0", "relu_1", ...)``).

    Args:
      layer: a :class:`Serial`.

    Returns:
      ``layer.names``.
    """
    if not isinstance(layer, Serial):
        raise TypeError(f"layer_names needs a Serial; got {layer!r}.")
    return layer.names
