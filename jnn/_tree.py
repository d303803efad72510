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


WEIGHT_LEAF = "w"


def is_weight(name: str) -> bool:
    """The one rule for "which leaves are weights": a leaf whose last path part is ``w``.

    Dense, Conv and Maxout kernels are named ``w``; biases (``b``) and normalisation
    ``scale`` / ``offset`` are not weights. Regularisers, monitors, plots and the layer depth
    count all use this rule.
    """
    return name.rsplit("/", 1)[-1] == WEIGHT_LEAF


def weight_leaves(tree) -> dict:
    """``{"dense_0/w": leaf, ...}``: the weight leaves of ``tree`` (see :func:`is_weight`)."""
    return {name: leaf for name, leaf in named_leaves(tree).items() if is_weight(name)}
