"""Fully connected layers: :class:`Dense` and :class:`Maxout`."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
from jax import lax

from jnn.nn._base import (
    Initializer,
    Layer,
    _add_bias,
    _check_initializers,
    _check_last,
    _check_rank,
    _init_kernel_bias,
    _positive_int,
)

__all__ = ["Dense", "Maxout"]


def _check_dense_input(layer, shape) -> None:
    """The ``check_input`` of Dense and Maxout: rank >= 2, features on the last axis."""
    _check_rank(layer, shape, 2, "(batch, ..., features)")


def _affine(layer, params, x):
    """``x @ w + b`` on the last axis, after checking ``x`` against ``layer`` and ``w``."""
    layer.check_input(x.shape)
    w = params["w"]
    _check_last(layer, x.shape, w.shape[0])
    return _add_bias(lax.dot_general(x, w, (((x.ndim - 1,), (0,)), ((), ()))), params["b"])


@dataclasses.dataclass(frozen=True)
class Dense(Layer):
    """Fully connected layer ``y = x @ w + b`` on the last axis.

    Args:
      features: number of output units (a positive int).
      w_init: kernel initialiser ``init(key, shape, dtype)``; ``None`` means
        ``jnn.init.lecun_normal()`` (std ``1/sqrt(fan_in)``, safe for any activation and for
        the output layer). For deep ReLU nets pass ``jnn.init.kaiming_normal()``.
      b_init: bias initialiser; ``None`` means zeros. ``jnn.init.constant(0.01)`` gives the
        small positive ReLU bias the notes suggest against dying units.

    Params: ``w`` of shape ``(in, features)``, ``b`` of shape ``(features,)``.
    """

    features: int
    w_init: Initializer | None = None
    b_init: Initializer | None = None

    def __post_init__(self):
        object.__setattr__(self, "features", _positive_int(self, "features", self.features))
        _check_initializers(self)

    check_input = _check_dense_input

    def init(self, key, input_shape, dtype=jnp.float32):
        shape = tuple(input_shape)
        self.check_input(shape)
        return _init_kernel_bias(self, key, (shape[-1], self.features), dtype), {}

    def apply(self, params, state, x, *, key=None, train=False):
        return _affine(self, params, x), state


@dataclasses.dataclass(frozen=True)
class Maxout(Layer):
    """Maxout unit ``y_j = max_p (x @ w + b)[j * pieces + p]`` (Goodfellow et al., 2013).

    ``max(w_1^T x + b_1, w_2^T x + b_2)`` for ``pieces=2``; generalises ReLU and leaky ReLU at
    ``pieces`` times the weights. ``features`` and ``pieces`` are positive ints; ``w_init`` and
    ``b_init`` as for :class:`Dense`. Params: ``w`` ``(in, features * pieces)``, ``b``
    ``(features * pieces,)``; column ``j * pieces + p`` is piece ``p`` of unit ``j``.
    """

    features: int
    pieces: int = 2
    w_init: Initializer | None = None
    b_init: Initializer | None = None

    def __post_init__(self):
        object.__setattr__(self, "features", _positive_int(self, "features", self.features))
        object.__setattr__(self, "pieces", _positive_int(self, "pieces", self.pieces))
        _check_initializers(self)

    check_input = _check_dense_input

    def init(self, key, input_shape, dtype=jnp.float32):
        shape = tuple(input_shape)
        self.check_input(shape)
        return _init_kernel_bias(self, key, (shape[-1], self.features * self.pieces), dtype), {}

    def apply(self, params, state, x, *, key=None, train=False):
        z = _affine(self, params, x)
        return jnp.max(z.reshape(*z.shape[:-1], self.features, self.pieces), axis=-1), state
