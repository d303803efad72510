"""Equinox modules as jnn models: :func:`from_equinox`."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jnn import _memo, _tree
from jnn.interop._names import cast_floating, lookup, nested

__all__ = ["EquinoxModel", "from_equinox"]


class _Template(NamedTuple):
    """The model's structure: its non-array part and where its arrays go."""

    static: Any  # the model with its floating arrays replaced by None
    treedef: Any  # the structure of the floating arrays
    names: tuple  # their path names (``layers/0/weight``), in flattening order
    stateful: bool  # whether the model has state (``eqx.nn.State``: BatchNorm statistics)


def _is_float(x) -> bool:
    return isinstance(x, (jax.Array, jax.ShapeDtypeStruct)) and jnp.issubdtype(x.dtype, jnp.inexact)


def _template_of(model, state) -> _Template:
    import equinox as eqx

    arrays, static = eqx.partition(model, _is_float)
    others = [
        x for x in jax.tree.leaves(static) if isinstance(x, (jax.Array, jax.ShapeDtypeStruct))
    ]
    if others:
        raise TypeError(
            "from_equinox: the model holds non-floating arrays (e.g. integer buffers), which a "
            "jnn model cannot carry outside params; keep them as Python values or floats."
        )
    names = tuple(_tree.named_leaves(arrays))
    return _Template(static, jax.tree.structure(arrays), names, bool(jax.tree.leaves(state)))


@_memo.cached
def _template(model) -> _Template:
    import equinox as eqx

    if model.model is not None:
        return _template_of(model.model, model.state)
    made = eqx.filter_eval_shape(eqx.nn.make_with_state(model.constructor), jax.random.key(0))
    return _template_of(*made)


def _dtype_of(params):
    """The dtype of the first floating parameter (``None`` if there is none)."""
    for leaf in jax.tree.leaves(params):
        if jnp.issubdtype(leaf.dtype, jnp.floating):
            return leaf.dtype
    return None


def _split_names(name: str) -> tuple[str, ...]:
    return tuple(name.split("/"))


class EquinoxModel:
    """An Equinox module (from a constructor or built) as a jnn model (see
    :func:`from_equinox`). Equal (and hashed) by the identity of its constructor or model."""

    activations_note = "Equinox models do not expose their submodules' outputs"

    def __init__(self, constructor=None, model=None, state=None):
        self.constructor, self.model, self.state = constructor, model, state

    @property
    def fixed_init(self) -> bool:
        """A built model gives the same initialisation for every key."""
        return self.model is not None

    def _identity(self):
        return (id(self.constructor), id(self.model))

    def __eq__(self, other):
        return type(other) is EquinoxModel and self._identity() == other._identity()

    def __hash__(self):
        return hash(("equinox", *self._identity()))

    def __repr__(self):
        what = self.constructor if self.model is None else type(self.model).__name__
        return f"from_equinox({what!r})"

    def init(self, key, input_shape, dtype=None):
        """``(params, model_state)``: ``eqx.nn.make_with_state(constructor)(key)`` (a built
        model: its own values); ``params`` are its floating arrays under their field paths
        (``layers/0/weight``), ``model_state`` its ``eqx.nn.State``."""
        import equinox as eqx

        del input_shape  # an Equinox module is built for its shapes
        if self.model is None:
            model, state = eqx.nn.make_with_state(self.constructor)(key)
        else:
            model, state = self.model, self.state
        arrays, _ = eqx.partition(model, _is_float)
        params = nested((_split_names(n), v) for n, v in _tree.named_leaves(arrays).items())
        return cast_floating(params, dtype), cast_floating(state, dtype)

    def _model(self, params, train: bool):
        import equinox as eqx

        template = _template(self)
        leaves = [lookup(params, _split_names(n)) for n in template.names]
        model = eqx.combine(jax.tree.unflatten(template.treedef, leaves), template.static)
        return eqx.nn.inference_mode(model, value=not train), template.stateful

    def apply(self, params, state, x, *, key=None, train=False):
        """The model mapped over the batch (``jax.vmap`` with ``axis_name="batch"``, what
        ``eqx.nn.BatchNorm`` needs), ``inference_mode`` unless ``train``; example ``i`` gets
        ``split(key, batch)[i]`` in training.

        Returns:
          ``(y, new_model_state)``.
        """
        model, stateful = self._model(params, train)
        state = cast_floating(state, _dtype_of(params))  # eqx.nn.State keeps its dtypes
        keys = jax.random.split(key, x.shape[0]) if (train and key is not None) else None

        def one(xi, st, ki):
            if stateful:
                return model(xi, st, key=ki)
            return model(xi, key=ki), st

        return jax.vmap(
            one,
            in_axes=(0, None, None if keys is None else 0),
            out_axes=(0, None),
            axis_name="batch",
        )(x, state, keys)


def from_equinox(constructor_or_model, state=None) -> EquinoxModel:
    """An Equinox module as a jnn model; it takes one example, so it is mapped over the batch.

    ``params`` are the model's floating arrays under their field paths (``layers/0/weight``,
    Equinox's ``(out, in)`` layout); ``model_state`` is its ``eqx.nn.State`` (BatchNorm's
    statistics). Training calls it with ``key=`` (one key per example) and
    ``inference_mode(False)``; evaluation with ``inference_mode(True)``.

    Args:
      constructor_or_model: ``f(key) -> eqx.Module`` (each key a new initialisation, as
        ensembles need), or a built model (its values are the initialisation).
      state: the ``eqx.nn.State`` of a built stateful model (from
        ``eqx.nn.make_with_state``); ``None``: built from the model.

    Returns:
      A jnn model.
    """
    import equinox as eqx

    obj = constructor_or_model
    if isinstance(obj, eqx.Module):
        if state is None:
            state = eqx.nn.State(obj)
            obj = eqx.nn.delete_init_state(obj)
        return EquinoxModel(model=obj, state=state)
    if callable(obj):
        return EquinoxModel(constructor=obj)
    raise TypeError(f"from_equinox expects f(key) -> eqx.Module or an eqx.Module; got {obj!r}.")
