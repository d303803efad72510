"""Flax NNX modules as jnn models: :func:`from_nnx`."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax

from jnn import _memo
from jnn.interop._names import cast_floating, lookup, nested, str_path

__all__ = ["NnxModel", "from_nnx"]


class _Template(NamedTuple):
    """What every call needs: the graph and, per variable, its path and role."""

    graphdef: Any
    paths: tuple  # the variables' paths as NNX writes them (ints for list items)
    is_param: tuple  # per path: an ``nnx.Param``
    is_rng: tuple  # per path: an RNG stream's key or count (``nnx.RngState``)
    rng_tags: tuple  # the tags of the RNG streams (``"dropout"``, ``"default"``, ...)


def _template_of(module) -> _Template:
    from flax import nnx

    graphdef, state = nnx.split(module)
    flat = nnx.to_flat_state(state)
    tags = sorted({v.tag for _, v in flat if isinstance(v, nnx.RngKey)})
    return _Template(
        graphdef,
        tuple(tuple(p) for p, _ in flat),
        tuple(isinstance(v, nnx.Param) for _, v in flat),
        tuple(isinstance(v, nnx.RngState) for _, v in flat),
        tuple(tags),
    )


@_memo.cached
def _template(model) -> _Template:
    from flax import nnx

    if model.module is not None:
        return _template_of(model.module)
    return _template_of(nnx.eval_shape(lambda: model.constructor(nnx.Rngs(0))))


class NnxModel:
    """A Flax NNX module (from a constructor or built) as a jnn model (see :func:`from_nnx`).

    Equal (and hashed) by the identity of its constructor or module, so programs compiled
    for it are reused.
    """

    activations_note = "NNX models do not expose their submodules' outputs"

    def __init__(self, constructor=None, module=None):
        self.constructor, self.module = constructor, module

    @property
    def fixed_init(self) -> bool:
        """A built module gives the same initialisation for every key."""
        return self.module is not None

    def _identity(self):
        return (id(self.constructor), id(self.module))

    def __eq__(self, other):
        return type(other) is NnxModel and self._identity() == other._identity()

    def __hash__(self):
        return hash(("nnx", *self._identity()))

    def __repr__(self):
        what = self.constructor if self.module is None else type(self.module).__name__
        return f"from_nnx({what!r})"

    def _split(self, pure, template, rngs=None) -> tuple[dict, dict]:
        """``(params, state)`` of NNX's pure dict; the RNG entries from ``rngs`` if given."""
        pairs = [
            (p, lookup(pure, p) if rngs is None or not r else lookup(rngs, str_path(p)))
            for p, r in zip(template.paths, template.is_rng, strict=True)
        ]
        params = [
            (str_path(p), v) for (p, v), is_p in zip(pairs, template.is_param, strict=True) if is_p
        ]
        rest = [
            (str_path(p), v)
            for (p, v), is_p in zip(pairs, template.is_param, strict=True)
            if not is_p
        ]
        return nested(params), nested(rest)

    def init(self, key, input_shape, dtype=None):
        """``(params, model_state)``: the constructor called with ``nnx.Rngs(key)`` (a built
        module: its own values, whatever the key); ``params`` are the ``nnx.Param``
        variables, ``model_state`` the others (batch statistics, RNG streams); floating
        leaves of both cast to ``dtype`` when given."""
        from flax import nnx

        del input_shape  # an NNX module is built for its shapes
        template = _template(self)
        module = self.module if self.module is not None else self.constructor(nnx.Rngs(key))
        params, state = self._split(nnx.to_pure_dict(nnx.split(module)[1]), template)
        return cast_floating(params, dtype), cast_floating(state, dtype)

    def _module(self, params, state, template):
        from flax import nnx

        both = [
            (p, lookup(params if is_p else state, str_path(p)))
            for p, is_p in zip(template.paths, template.is_param, strict=True)
        ]
        return nnx.merge(template.graphdef, nested(both))  # keys as NNX has them

    def apply(self, params, state, x, *, key=None, train=False):
        """The module merged from ``params`` and ``state`` (a copy: nothing outside this
        call changes), in ``train()`` / ``eval()`` mode, its RNG streams reseeded from
        ``key`` (the ``"dropout"`` and ``"default"`` streams get ``key`` itself, others
        ``fold_in(key, i)``), called on ``x``.

        Returns:
          ``(y, new_model_state)``; the RNG streams in the state are returned unchanged
          (the step's key, not the state, is the source of randomness).
        """
        from flax import nnx

        template = _template(self)
        module = self._module(params, state, template)
        module.train() if train else module.eval()
        if key is not None and template.rng_tags:
            nnx.reseed(module, **_stream_keys(key, template.rng_tags))
        y = module(x)
        _, new_state = self._split(nnx.to_pure_dict(nnx.split(module)[1]), template, state)
        return y, new_state


def _stream_keys(key, tags) -> dict:
    return {
        tag: key if tag in ("dropout", "default") else jax.random.fold_in(key, i + 1)
        for i, tag in enumerate(tags)
    }


def from_nnx(constructor_or_module) -> NnxModel:
    """A Flax NNX module as a jnn model.

    ``params`` are the ``nnx.Param`` variables under their attribute paths
    (``linear1/kernel``, ``layers/0/kernel``); ``model_state`` holds the other variables
    (``nnx.BatchStat`` statistics, the RNG streams' keys and counts). ``train=True`` puts the
    module in ``train()`` mode and reseeds its RNG streams from the step's key; ``False`` in
    ``eval()`` mode.

    Args:
      constructor_or_module: ``f(rngs) -> nnx.Module`` (each key gives a new
        initialisation, as ensembles need), or a built ``nnx.Module`` (its values are the
        initialisation, whatever the key).

    Returns:
      A jnn model.
    """
    from flax import nnx

    obj = constructor_or_module
    if isinstance(obj, nnx.Module):
        return NnxModel(module=obj)
    if callable(obj):
        return NnxModel(constructor=obj)
    raise TypeError(f"from_nnx expects f(rngs) -> nnx.Module or an nnx.Module; got {obj!r}.")
