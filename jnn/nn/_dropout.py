"""Inverted dropout: :class:`Dropout`."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from jnn._keys import as_key
from jnn.nn._base import Layer, _describe, _real

__all__ = ["Dropout"]


@dataclasses.dataclass(frozen=True)
class Dropout(Layer):
    """Inverted dropout: ``y = x * m / (1 - rate)``, ``m ~ Bernoulli(1 - rate)``, when training.

    ``rate`` is the **drop** probability (each unit is kept with probability ``1 - rate``),
    a number in ``[0, 1)``. Scaling at train time keeps ``E[y] = x`` so prediction
    (``train=False``) is the identity. ``train=True`` needs a ``key`` (typed or raw); without
    one it raises ``ValueError``. ``rate`` may also be a JAX scalar (a traced per-member rate
    inside an ensemble, see ``jnn.ensemble.with_dropout``); it is then not range-checked.
    """

    rate: float = 0.5

    def __post_init__(self):
        if isinstance(self.rate, jax.Array):  # a per-member (possibly traced) rate
            return
        rate = _real(self, "rate", self.rate)
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"Dropout rate is the drop probability in [0, 1); got {rate}.")
        object.__setattr__(self, "rate", rate)

    def apply(self, params, state, x, *, key=None, train=False):
        if not train or (isinstance(self.rate, float) and self.rate == 0.0):
            return x, state
        if key is None:
            raise ValueError(
                f"{_describe(self)} needs a PRNG key when train=True (apply(..., key=key))."
            )
        keep = 1.0 - jnp.asarray(self.rate, jnp.float32)
        mask = jax.random.bernoulli(as_key(key), keep, x.shape)
        return jnp.where(mask, x / keep.astype(x.dtype), jnp.zeros_like(x)), state
