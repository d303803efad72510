"""Inspection: :func:`count_params` and :func:`summary`."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from jnn._tree import weight_leaves
from jnn.nn._base import _abstract_init, _fmt_shape, _kind, _out_shape
from jnn.nn._combinators import Serial

__all__ = ["count_params", "summary"]


def count_params(params) -> int:
    """Total number of scalars in a params pytree.

    Args:
      params: a pytree of arrays or ``jax.ShapeDtypeStruct``.

    Returns:
      ``sum(prod(leaf.shape))`` over the leaves, as an int.
    """
    return int(sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(params)))


def _weighted_layers(layer, params) -> int:
    """Layers with a weight leaf (``jnn._tree.is_weight``), counted through nested Serials."""
    if isinstance(layer, Serial):
        return sum(
            _weighted_layers(child, params[name])
            for name, child in zip(layer.names, layer.layers, strict=True)
        )
    return int(bool(weight_leaves(params)))


def _rows(layer, params, state, shape, dtype) -> list[tuple[str, tuple, int]]:
    """``(name, output shape, param count)`` per child of a Serial, or one row for a layer."""
    if not isinstance(layer, Serial):
        out = _out_shape(layer, params, state, shape, dtype)
        return [(_kind(layer), out, count_params(params))]
    rows = []
    for name, child in zip(layer.names, layer.layers, strict=True):
        shape = _out_shape(child, params[name], state[name], shape, dtype)
        rows.append((name, shape, count_params(params[name])))
    return rows


def _table(input_shape, rows, total: int, depth: int) -> str:
    table = [("layer", "output shape", "params"), ("input", _fmt_shape(input_shape), "")]
    table += [(n, _fmt_shape(s), f"{c:,}") for n, s, c in rows]
    widths = [max(len(r[i]) for r in table) for i in range(3)]
    lines = [
        f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:>{widths[2]}}".rstrip() for r in table
    ]
    rule = "-" * len(lines[0])
    lines.insert(1, rule)
    lines += [rule, f"total params: {total:,}"]
    if depth:
        lines.append(f"{depth}-layer network ({max(depth - 1, 0)} hidden + output)")
    else:
        lines.append("0-layer network (no layers with weights)")
    return "\n".join(lines)


def summary(layer, input_shape, dtype=jnp.float32) -> str:
    """A table of layer, output shape and parameter count, with the total and the depth.

    Shapes come from ``jax.eval_shape``: nothing is allocated, so it works for any size. The
    depth follows the notes: an N-layer network counts the layers with weights (Dense, Conv,
    Maxout: a leaf named ``w``, see ``jnn._tree.is_weight``), output layer included, input not.

    Args:
      layer: a layer (usually a :class:`Serial`, which gets one row per child).
      input_shape: input shape including the batch dimension.
      dtype: the dtype the parameters would have.

    Returns:
      The table as a string.
    """
    shape = tuple(int(d) for d in input_shape)
    params, state = _abstract_init(layer, shape, dtype)
    rows = _rows(layer, params, state, shape, dtype)
    return _table(shape, rows, count_params(params), _weighted_layers(layer, params))
