"""Nested dicts with string keys from a foreign library's paths, and back."""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["cast_floating", "lookup", "nested", "str_path"]


def str_path(path) -> tuple[str, ...]:
    """A path of keys / indices as strings: ``("layers", 0, "kernel")`` ->
    ``("layers", "0", "kernel")``."""
    return tuple(str(part) for part in path)


def nested(pairs) -> dict:
    """``{"a": {"b": v}}`` from ``[(("a", "b"), v), ...]`` (the path parts as given)."""
    out: dict = {}
    for path, value in pairs:
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    return out


def lookup(tree, path):
    """``tree[path[0]][path[1]]...``."""
    for part in path:
        tree = tree[part]
    return tree


def cast_floating(tree, dtype):
    """Every floating leaf of ``tree`` cast to ``dtype`` (``None``: unchanged)."""
    if dtype is None:
        return tree
    return jax.tree.map(
        lambda a: a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a, tree
    )
