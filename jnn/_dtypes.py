"""One rule for the arithmetic dtype: at least float32.

16-bit floats (bfloat16, float16) are widened to float32 for reductions, norms, losses,
penalties and optimizer arithmetic; float32 and float64 stay as they are. The promotion is a
dtype computation, so it runs under standard promotion even when the caller has turned on
strict promotion (``jax_numpy_dtype_promotion="strict"``).
"""

import functools

import jax
import jax.numpy as jnp

__all__ = ["at_least_float32"]


def at_least_float32(*dtypes):
    """The common dtype of ``dtypes`` and float32 (``bfloat16 -> float32``, ``float64`` stays).

    Args:
      *dtypes: dtypes (or anything ``jnp.dtype`` accepts).

    Returns:
      A ``jnp.dtype``.
    """
    with jax.numpy_dtype_promotion("standard"):
        return functools.reduce(jnp.promote_types, dtypes, jnp.dtype(jnp.float32))
