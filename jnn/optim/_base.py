"""Helpers shared by the transformations: dtype rules, leaf mapping, step counts, checks."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jnn._dtypes import at_least_float32
from jnn.schedules import _check_flag, _check_number, _check_schedule

__all__ = [
    "GT",
    "apply_updates",
    "bias_correction_factor",
    "check_dtype",
    "check_flag",
    "check_number",
    "check_schedule",
    "compute_dtype",
    "full",
    "hp",
    "identity",
    "is_array",
    "safe_increment",
    "sq",
    "tree_map_n",
    "zero_count",
]

GT = optax.GradientTransformationExtraArgs

# One home for argument checks: jnn.schedules (the layer below). Only Python and
# NumPy values are checked; JAX arrays and tracers pass, so optimizers can be
# built inside jax.vmap with per-member hyperparameters.
check_number = _check_number
check_flag = _check_flag
check_schedule = _check_schedule


def check_dtype(fn: str, name: str, dtype):
    """The canonical dtype for ``dtype`` (None stays None); a clear error if it is none.

    Args:
      fn: the public function, for the message.
      name: the argument's name, for the message.
      dtype: anything ``jnp.dtype`` accepts, or None.

    Returns:
      ``jax.dtypes.canonicalize_dtype(dtype)``, or None.

    Raises:
      TypeError: ``dtype`` names no dtype.
    """
    if dtype is None:
        return None
    try:
        return jax.dtypes.canonicalize_dtype(dtype)
    except (TypeError, ValueError):
        raise TypeError(
            f"{fn} needs {name} to be a dtype or None, got {dtype!r} ({type(dtype).__name__})."
        ) from None


def identity() -> GT:
    """The transformation that leaves updates unchanged (``optax.identity``, extra args ok)."""
    return optax.with_extra_args_support(optax.identity())


def safe_increment(count):
    """``count + 1``, saturating at the dtype's maximum instead of wrapping.

    Args:
      count: an integer scalar (array).

    Returns:
      ``min(count + 1, iinfo(count.dtype).max)`` in ``count``'s dtype.
    """
    count = jnp.asarray(count)
    top = jnp.array(jnp.iinfo(count.dtype).max, count.dtype)
    return jnp.where(count < top, count + jnp.array(1, count.dtype), top)


def zero_count():
    """The int32 step count every state starts from."""
    return jnp.zeros([], jnp.int32)


def full(x, value, dtype=None):
    """``jnp.full_like`` that also accepts ``jax.ShapeDtypeStruct`` leaves."""
    dtype = x.dtype if dtype is None else dtype
    if isinstance(x, jax.Array):
        return jnp.full_like(x, value, dtype=dtype)
    return jnp.full(x.shape, value, dtype=dtype)


def compute_dtype(*dtypes):
    """The dtype leaf arithmetic runs in: the leaves' common dtype, at least float32."""
    return at_least_float32(*dtypes)


def is_array(value) -> bool:
    """A JAX / NumPy array or NumPy scalar (as opposed to a weakly typed Python number)."""
    return isinstance(value, (jax.Array, np.ndarray, np.generic))


def hp(value, dtype):
    """Casts an array hyperparameter to ``dtype``; Python numbers stay weakly typed.

    Keeping Python floats as Python floats reproduces Optax bit for bit
    (``1 - 0.9`` is rounded once, in float64, exactly as Optax does). A traced
    per-member value (``jax.vmap``) is an array and is cast like any other.
    """
    if is_array(value):
        return jnp.asarray(value).astype(jnp.finfo(dtype).dtype)
    return value


def bias_correction_factor(decay, count):
    """``1 - decay**count`` in float32 (float64 under x64), never in the leaf dtype."""
    if is_array(decay):
        dtype = compute_dtype(jnp.asarray(decay).dtype)
        decay = jnp.asarray(decay).astype(dtype)
    else:
        dtype = jnp.result_type(float)
    return 1 - decay ** jnp.asarray(count).astype(dtype)


def sq(g):
    """``|g|**2`` in ``g``'s dtype: ``g * g`` for real leaves, ``(conj(g) g).real`` for complex."""
    return g * g if jnp.isrealobj(g) else (g.conj() * g).real.astype(g.dtype)


def tree_map_n(fn, n_out, tree, *rest):
    """``jax.tree.map`` for a leaf function returning ``n_out`` values; returns ``n_out`` trees."""
    leaves, treedef = jax.tree.flatten(tree)
    rest_leaves = [treedef.flatten_up_to(r) for r in rest]
    outs = [fn(*xs) for xs in zip(leaves, *rest_leaves, strict=True)]
    return tuple(treedef.unflatten([o[i] for o in outs]) for i in range(n_out))


def apply_updates(params, updates):
    """``params + updates``, leaf by leaf, keeping each parameter's dtype.

    Args:
      params: a tree of parameters.
      updates: a tree of the same structure (e.g. from ``update``).

    Returns:
      The new parameters, each leaf in its old dtype.
    """
    return jax.tree.map(
        lambda p, u: jnp.asarray(p + u).astype(jnp.asarray(p).dtype), params, updates
    )
