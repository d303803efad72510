"""Weight penalties (L2, L1) and the max-norm constraint.

By default only the weights are regularised: leaves named ``w`` (Dense/Conv/Maxout kernels),
``kernel`` (Flax) or ``weight`` (Equinox) — the one rule of ``jnn._tree.is_weight``.
Biases and normalisation ``scale``/``offset`` are left alone, as the notes advise ("don't
usually regularise the bias"). Params are nested dicts like
``{"dense_0": {"w": ..., "b": ...}, "batchnorm_1": {"scale": ..., "offset": ...}}``.

A ``mask`` argument is either a pytree of bools with the structure of ``params`` or a callable
``params -> such a pytree`` (the Optax convention); ``None`` means :func:`weight_mask`.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from jnn import _tree

__all__ = ["MaxNormState", "l1", "l2", "max_norm", "weight_mask"]


def weight_mask(params):
    """``True`` for weight leaves (``jnn._tree.is_weight``: named ``w``, ``kernel`` or
    ``weight``), ``False`` for everything else (``b``, ``bias``, ``scale``, ...).

    Args:
      params: a pytree of arrays with string keys.

    Returns:
      A pytree of Python bools with the structure of ``params`` (usable as an Optax mask).
    """
    return _tree.map_with_names(lambda name, leaf: _tree.is_weight(name, leaf), params)


def _resolve_mask(params, mask):
    if mask is None:
        return weight_mask(params)
    if callable(mask):
        return mask(params)
    return mask


def _masked_leaves(params, mask):
    mask = _resolve_mask(params, mask)
    leaves = jax.tree.leaves(params)
    flags = jax.tree.leaves(mask)
    if len(flags) != len(leaves):
        raise ValueError(
            f"mask must have one bool per parameter leaf: params have {len(leaves)} leaves, mask "
            f"has {len(flags)}."
        )
    return [leaf for leaf, flag in zip(leaves, flags, strict=True) if flag]


def _sum_over(leaves, fn):
    if not leaves:
        return jnp.zeros((), jnp.float32)
    dtype = max((jnp.asarray(x).dtype for x in leaves), key=lambda d: d.itemsize)
    return sum(jnp.sum(fn(jnp.asarray(x).astype(dtype))) for x in leaves)


def l2(params, mask=None, *, coefficient=1.0):
    """L2 penalty ``coefficient * 0.5 * sum_w w^2`` over the masked leaves.

    The 0.5 makes the gradient exactly ``coefficient * w`` (classic weight decay: each step
    shrinks weights towards small, diffuse values).

    Args:
      params: pytree of arrays.
      mask: which leaves to penalise (default: the weights, :func:`weight_mask`).
      coefficient: the regularisation strength ``lambda``.

    Returns:
      A scalar (in the widest dtype among the penalised leaves; float32 zero if none).
    """
    return coefficient * (0.5 * _sum_over(_masked_leaves(params, mask), jnp.square))


def l1(params, mask=None, *, coefficient=1.0):
    """L1 penalty ``coefficient * sum_w |w|`` over the masked leaves (drives weights to 0).

    Args:
      params: pytree of arrays.
      mask: which leaves to penalise (default: the weights, :func:`weight_mask`).
      coefficient: the regularisation strength ``lambda``.

    Returns:
      A scalar (in the widest dtype among the penalised leaves; float32 zero if none).
    """
    return coefficient * _sum_over(_masked_leaves(params, mask), jnp.abs)


class MaxNormState(NamedTuple):
    """``max_norm`` keeps no state."""


def _unit_norms(name, w):
    # A unit's incoming weights: everything but the output axis (Dense (in, out) columns,
    # Conv (*window, in, out) filters; rows of an Equinox (out, in, ...) ``weight``). A 1-D
    # leaf is one vector.
    out = _tree.output_axis(name, w.ndim)
    axes = tuple(a for a in range(w.ndim) if a != out) if w.ndim >= 2 else (0,)
    return jnp.sqrt(jnp.sum(jnp.square(w), axis=axes, keepdims=True))


def max_norm(c, mask=None) -> optax.GradientTransformation:
    """Max-norm constraint as an Optax transformation: put it **after** the optimiser.

    For each masked leaf it rewrites the update so that, after ``optax.apply_updates``,
    every unit's incoming weight vector of ``params + updates`` has L2 norm ``<= c``: a unit
    whose new norm ``n`` exceeds ``c`` is scaled by ``c / n``; other units' updates are passed
    through unchanged (bit for bit). Norms are over all axes but the output axis (a Dense
    ``(in, out)`` column, a Conv ``(*window, in, out)`` filter, a row of an Equinox
    ``weight``). Use as ``optax.chain(optax.sgd(lr), max_norm(3.0))``.

    Args:
      c: the maximum norm, > 0 (typical values 3 or 4).
      mask: which leaves to constrain (default: the weights, :func:`weight_mask`).

    Returns:
      An ``optax.GradientTransformation`` whose ``update`` requires ``params``.
    """
    if not c > 0:
        raise ValueError(f"max_norm: c must be > 0, got {c}.")

    def init_fn(params):
        del params
        return MaxNormState()

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError(
                "max_norm needs the current params: call update(updates, state, params) "
                "(the constraint applies to params + updates, which updates alone cannot tell)."
            )
        flags = _resolve_mask(params, mask)

        def constrain(name, flag, u, p):
            if not flag:
                return u
            new = p + u
            norms = _unit_norms(name, new)
            too_big = norms > c
            safe = jnp.where(too_big, norms, jnp.ones_like(norms))
            return jnp.where(too_big, new * (c / safe) - p, u)

        return _tree.map_with_names(constrain, flags, updates, params), state

    return optax.GradientTransformation(init_fn, update_fn)
