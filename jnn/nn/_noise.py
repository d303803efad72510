"""Gaussian input noise: :class:`GaussianNoise`."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from jnn._keys import as_key
from jnn.nn._base import Layer, _describe, _real

__all__ = ["GaussianNoise"]


@dataclasses.dataclass(frozen=True)
class GaussianNoise(Layer):
    """Additive Gaussian noise when training: ``y = x + stddev * e``, ``e ~ N(0, I)``.

    The notes' third cure for overfitting (after L2 and dropout): every pass sees a slightly
    different input, so ``E[(y - x)^2] = stddev^2`` per entry and ``E[y] = x``. Prediction
    (``train=False``) is the identity. ``train=True`` needs a ``key`` (typed or raw); without
    one it raises ``ValueError``. ``stddev`` is a number ``>= 0`` (0 adds nothing), or a JAX
    scalar (a traced per-member value inside an ensemble, see
    ``jnn.ensemble.with_model_hyperparams``), which is then not range-checked.
    """

    stddev: float = 0.1

    def __post_init__(self):
        if isinstance(self.stddev, jax.Array):  # a per-member (possibly traced) value
            return
        stddev = _real(self, "stddev", self.stddev)
        if not stddev >= 0.0 or stddev == float("inf"):
            raise ValueError(f"GaussianNoise stddev must be a finite number >= 0; got {stddev}.")
        object.__setattr__(self, "stddev", stddev)

    def apply(self, params, state, x, *, key=None, train=False):
        if not train or (isinstance(self.stddev, float) and self.stddev == 0.0):
            return x, state
        if key is None:
            raise ValueError(
                f"{_describe(self)} needs a PRNG key when train=True (apply(..., key=key))."
            )
        noise = jax.random.normal(as_key(key), x.shape, x.dtype)
        return x + jnp.asarray(self.stddev).astype(x.dtype) * noise, state
