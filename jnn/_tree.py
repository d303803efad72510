"""Readable names for pytree leaves: ``{"dense_0": {"w": ...}}`` -> ``"dense_0/w"``."""

import jax


def _key_str(entry) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(entry, attr):
            return str(getattr(entry, attr))
    return str(entry)


def path_str(path) -> str:
    """Joins a ``jax.tree_util`` key path into ``"a/b/c"``."""
    return "/".join(_key_str(entry) for entry in path)


def named_leaves(tree, is_leaf=None) -> dict:
    """Flattens ``tree`` into an ordered ``{"dense_0/w": leaf, ...}`` dict."""
    flat, _ = jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_leaf)
    return {path_str(path): leaf for path, leaf in flat}


def map_with_names(fn, tree, *rest, is_leaf=None):
    """``jax.tree.map`` where ``fn(name, leaf, *rest_leaves)`` also gets the leaf's path name."""
    return jax.tree_util.tree_map_with_path(
        lambda path, *leaves: fn(path_str(path), *leaves), tree, *rest, is_leaf=is_leaf
    )


WEIGHT_LEAVES = ("w", "kernel", "weight")
"""Leaf names of weights: ``w`` (jnn, Haiku), ``kernel`` (Flax), ``weight`` (Equinox, PyTorch)."""


def leaf_name(name: str) -> str:
    """The last part of a path name: ``"Conv_0/kernel"`` -> ``"kernel"``."""
    return name.rsplit("/", 1)[-1]


def layer_name(name: str) -> str:
    """A leaf's layer: its path without the leaf (``"layers/0/weight"`` -> ``"layers/0"``)."""
    return name.rsplit("/", 1)[0] if "/" in name else name


def is_weight(name: str, leaf=None) -> bool:
    """The one rule for "which leaves are weights": the last path part is in
    :data:`WEIGHT_LEAVES` (``w``, ``kernel`` or ``weight``), and a ``weight`` has rank >= 2.

    Dense, Conv and Maxout kernels of jnn are named ``w``, Flax's ``kernel``, Equinox's
    ``weight``; biases (``b``, ``bias``) and normalisation ``scale`` / ``offset`` are not
    weights, nor is the 1-D ``weight`` of an Equinox (or PyTorch) normalisation layer, its
    scale. Regularisers, monitors, plots and the layer depth count all use this rule.

    Args:
      name: the leaf's path name (``"Conv_0/kernel"``).
      leaf: the leaf (anything with ``ndim`` or ``shape``), to tell a ``weight`` matrix from
        a normalisation scale; ``None``: judged by the name alone.
    """
    last = leaf_name(name)
    if last == "weight" and leaf is not None:
        return len(getattr(leaf, "shape", ())) >= 2
    return last in WEIGHT_LEAVES


def weight_leaves(tree) -> dict:
    """``{"dense_0/w": leaf, ...}``: the weight leaves of ``tree`` (see :func:`is_weight`)."""
    return {name: leaf for name, leaf in named_leaves(tree).items() if is_weight(name, leaf)}


def output_axis(name: str, ndim: int) -> int:
    """The axis of a weight's output units: the last for ``w`` / ``kernel`` (jnn and Flax lay
    kernels out ``(*window, in, out)``), the first for ``weight`` (Equinox and PyTorch:
    ``(out, in, *window)``)."""
    return 0 if leaf_name(name) == "weight" and ndim >= 2 else ndim - 1


def as_in_out(name: str, w):
    """A weight in jnn's layout ``(*window, in, out)``: a ``weight`` leaf laid out
    ``(out, in, *window)`` is transposed; ``w`` and ``kernel`` leaves are returned as they are."""
    if leaf_name(name) != "weight" or w.ndim < 2:
        return w
    return w.transpose((*range(2, w.ndim), 1, 0))
