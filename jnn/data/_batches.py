"""Minibatches: one fresh permutation per epoch, cut into full batches."""

from __future__ import annotations

__all__ = ["batch_indices", "bootstrap_sample", "iterate_batches"]


def _check(num_examples: int, batch_size: int) -> None:
    if not 1 <= batch_size <= num_examples:
        raise ValueError(
            f"batch_size must be in [1, {num_examples}] (the number of examples), got {batch_size}."
        )


def batch_indices(key, num_examples: int, batch_size: int):
    """One epoch's minibatch indices: a fresh permutation, cut into full batches.

    Args:
      key: a PRNG key (use a new one per epoch, e.g. ``fold_in(key, epoch)``).
      num_examples: ``N``.
      batch_size: ``B`` with ``1 <= B <= N``.

    Returns:
      An int32 array ``(N // B, B)``; the permutation's last ``N % B`` indices are dropped.
      Jittable (``num_examples`` and ``batch_size`` are static).
    """
    import jax

    from jnn._keys import as_key

    _check(num_examples, batch_size)
    steps = num_examples // batch_size
    perm = jax.random.permutation(as_key(key), num_examples)
    return perm[: steps * batch_size].reshape(steps, batch_size).astype("int32")


def bootstrap_sample(key, num_examples: int):
    """A bootstrap resample: ``N`` indices drawn uniformly *with* replacement (each example
    appears ~Poisson(1) times, ~63% of them at least once). Bagging draws one per member and
    keeps it for the whole run; each epoch then shuffles it (``sample[batch_indices(...)]``).

    Args:
      key: a PRNG key (one per member).
      num_examples: ``N``.

    Returns:
      An int32 array ``(N,)``.
    """
    import jax

    from jnn._keys import as_key

    if num_examples < 1:
        raise ValueError(f"num_examples must be >= 1, got {num_examples}.")
    return jax.random.randint(as_key(key), (num_examples,), 0, num_examples).astype("int32")


def iterate_batches(key, x, y, batch_size: int):
    """Yields ``(x[idx], y[idx])`` minibatches of one epoch (see :func:`batch_indices`)."""
    import jax.numpy as jnp

    x, y = jnp.asarray(x), jnp.asarray(y)
    for idx in batch_indices(key, x.shape[0], batch_size):
        yield jnp.take(x, idx, axis=0), jnp.take(y, idx, axis=0)
