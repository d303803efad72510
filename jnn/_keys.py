"""One rule for PRNG keys: every jnn function accepts typed keys (``jax.random.key``) and raw
``uint32`` keys (``jax.random.PRNGKey``), singly or stacked.

Internally jnn works with typed keys; :func:`as_key` / :func:`as_keys` convert at the public
boundary, so raw and typed keys made from the same seed give bitwise-identical results
(``wrap_key_data(PRNGKey(s)) == key(s)``).
"""

import jax
import jax.numpy as jnp

__all__ = ["as_key", "as_keys", "is_typed"]


def is_typed(key) -> bool:
    """Whether ``key`` is a typed key array (``jax.random.key``)."""
    return hasattr(key, "dtype") and jnp.issubdtype(key.dtype, jax.dtypes.prng_key)


def _wrap(key, what: str):
    key = jnp.asarray(key)
    if key.dtype != jnp.uint32 or key.ndim < 1 or key.shape[-1] != 2:
        raise TypeError(
            f"{what} must be a typed PRNG key (jax.random.key) or a raw uint32 key "
            f"(jax.random.PRNGKey, shape (..., 2)); got dtype {key.dtype} and shape {key.shape}."
        )
    return jax.random.wrap_key_data(key)


def as_key(key, what: str = "key"):
    """One PRNG key as a typed scalar key; a raw ``(2,)`` uint32 key is wrapped.

    Args:
      key: ``jax.random.key(s)`` or ``jax.random.PRNGKey(s)``.
      what: the argument's name, for the error message.

    Returns:
      A typed key of shape ``()``.
    """
    key = key if is_typed(key) else _wrap(key, what)
    if key.shape != ():
        raise ValueError(f"{what} must be a single PRNG key; got {key.shape} keys.")
    return key


def as_keys(keys, what: str = "keys"):
    """``K`` PRNG keys as a typed ``(K,)`` key array (raw ``(K, 2)`` keys are wrapped).

    Args:
      keys: ``jax.random.split(key, K)`` of typed or raw keys.
      what: the argument's name, for the error message.

    Returns:
      A typed key array of shape ``(K,)`` with ``K >= 1``.
    """
    keys = keys if is_typed(keys) else _wrap(keys, what)
    if keys.ndim != 1 or keys.shape[0] < 1:
        raise ValueError(
            f"{what} must hold K >= 1 PRNG keys (typed shape (K,) or raw shape (K, 2)); "
            f"got {keys.shape[0] if keys.ndim else 0} keys of shape {keys.shape}."
        )
    return keys
