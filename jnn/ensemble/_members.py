"""Mapping a per-member function over the member axis: ``jax.vmap``, or chunks of members
(``jax.lax.map(..., batch_size=chunk)``) when all of them do not fit in memory at once."""

from __future__ import annotations

import jax

__all__ = ["map_members", "num_members_of"]


def map_members(fn, in_axes, chunk: int | None = None):
    """``fn`` mapped over members: ``in_axes`` as for ``jax.vmap`` (0: member axis, None:
    shared). With ``chunk``, ``chunk`` members at a time (same results, less memory).

    Args:
      fn: a per-member function.
      in_axes: a tuple, one entry per positional argument (0 or None).
      chunk: members per chunk, or ``None`` for one ``vmap`` over all of them.

    Returns:
      The mapped function.
    """
    if chunk is None:
        return jax.vmap(fn, in_axes=in_axes)

    if not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"member_chunk must be a positive int or None, got {chunk!r}")

    def mapped(*args):
        mapped_args = tuple(a for a, ax in zip(args, in_axes, strict=True) if ax is not None)

        def one(member_args):
            it = iter(member_args)
            full = [next(it) if ax is not None else a for a, ax in zip(args, in_axes, strict=True)]
            return fn(*full)

        return jax.lax.map(one, mapped_args, batch_size=chunk)

    return mapped


def num_members_of(tree) -> int:
    """``K``: the leading axis of the first leaf of a stacked ensemble pytree."""
    leaves = jax.tree.leaves(tree)
    if not leaves or not getattr(leaves[0], "ndim", 0):
        raise ValueError("an ensemble state needs leaves with a leading member axis")
    return int(leaves[0].shape[0])
