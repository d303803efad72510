"""Shape-preserving layers without params: the activation family and :class:`Flatten`.

Every activation layer is a subclass of one small base, ``_Elementwise`` (the idea of
``jax.example_libraries.stax.elementwise(fun)``): the subclass names its function with
``fn=`` and declares the function's hyper-parameters as fields, e.g.
``class LeakyRelu(_Elementwise, fn=activations.leaky_relu): alpha: float = 0.01``. It stays a
real frozen dataclass (hashable, equal by value, readable ``repr``, ``isinstance`` works) and
its ``forward(x)`` is ``fn(x, **fields)``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import ClassVar

import numpy as np

from jnn import activations as _act
from jnn.nn._base import Layer, _check_rank, _real

__all__ = ["Elu", "Flatten", "Gelu", "LeakyRelu", "Relu", "Selu", "Sigmoid", "Swish", "Tanh"]


def _checked(layer, field: dataclasses.Field):
    """A hyper-parameter as the type of its default (bool or float); ``TypeError`` otherwise."""
    value = getattr(layer, field.name)
    if not isinstance(field.default, bool):
        return _real(layer, field.name, value)
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(
            f"{type(layer).__name__}: {field.name} must be a bool; "
            f"got {value!r} ({type(value).__name__})."
        )
    return bool(value)


@dataclasses.dataclass(frozen=True)
class _Elementwise(Layer):
    """Base of the activation layers: ``forward(x) = fn(x, **hyper-parameters)``.

    A subclass passes ``fn=`` in its class statement and is made a frozen dataclass here.
    """

    fn: ClassVar[Callable]

    def __init_subclass__(cls, fn: Callable | None = None, **kwargs):
        super().__init_subclass__(**kwargs)
        if fn is not None:
            cls.fn = staticmethod(fn)
        dataclasses.dataclass(frozen=True)(cls)

    def __post_init__(self):
        for field in dataclasses.fields(self):
            object.__setattr__(self, field.name, _checked(self, field))

    def forward(self, x):
        return self.fn(x, **{f.name: getattr(self, f.name) for f in dataclasses.fields(self)})


class Relu(_Elementwise, fn=_act.relu):
    """``max(0, x)``, see :func:`jnn.activations.relu`."""


class LeakyRelu(_Elementwise, fn=_act.leaky_relu):
    """``x if x > 0 else alpha * x``, see :func:`jnn.activations.leaky_relu`."""

    alpha: float = 0.01


class Sigmoid(_Elementwise, fn=_act.sigmoid):
    """``1 / (1 + exp(-x))``, see :func:`jnn.activations.sigmoid`."""


class Tanh(_Elementwise, fn=_act.tanh):
    """``tanh(x)``, see :func:`jnn.activations.tanh`."""


class Elu(_Elementwise, fn=_act.elu):
    """``x if x > 0 else alpha (exp(x) - 1)``, see :func:`jnn.activations.elu`."""

    alpha: float = 1.0


class Selu(_Elementwise, fn=_act.selu):
    """Scaled ELU, see :func:`jnn.activations.selu`."""


class Gelu(_Elementwise, fn=_act.gelu):
    """``x Phi(x)`` (tanh form if ``approximate``), see :func:`jnn.activations.gelu`."""

    approximate: bool = False


class Swish(_Elementwise, fn=_act.swish):
    """``x sigmoid(x)``, see :func:`jnn.activations.swish`."""


@dataclasses.dataclass(frozen=True)
class Flatten(Layer):
    """``(batch, ...) -> (batch, prod(...))``."""

    def check_input(self, shape):
        _check_rank(self, shape, 1, "(batch, ...)")

    def forward(self, x):
        return x.reshape(x.shape[0], -1)
