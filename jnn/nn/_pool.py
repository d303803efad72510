"""Pooling over spatial windows: :class:`MaxPool` and :class:`AvgPool`."""

from __future__ import annotations

import dataclasses
import math

import jax.numpy as jnp
import numpy as np
from jax import lax

from jnn.nn._base import _positive_ints, _Windowed
from jnn.nn._conv import _resolve, _windows

__all__ = ["AvgPool", "MaxPool"]


@dataclasses.dataclass(frozen=True)
class _Pool(_Windowed):
    window: int | tuple[int, ...]
    strides: int | tuple[int, ...] | None = None
    padding: str | tuple = "VALID"
    lowering: str = "auto"

    def __post_init__(self):
        super().__post_init__()
        _resolve(self.lowering)

    @property
    def window_tuple(self) -> tuple[int, ...]:
        """The window's spatial size; its length is the number of spatial dims."""
        return _positive_ints(self, "window", self.window)

    @property
    def stride_tuple(self) -> tuple[int, ...]:
        """The strides; ``strides=None`` means the window (non-overlapping windows)."""
        if self.strides is None:
            return self.window_tuple
        return _positive_ints(self, "strides", self.strides, len(self.window_tuple))

    def _pool(self, x, init_value, op):
        pads = self.spatial_pads(x.shape)
        window, strides = self.window_tuple, self.stride_tuple
        # reduce_window does not slow down inside lax.scan (unlike XLA's CPU conv) and its
        # backward pass beats the sliced one: "auto" is "xla" on every backend.
        if self.lowering == "im2col":
            slices = _windows(x, window, strides, pads, init_value)
            out = next(slices)
            for s in slices:
                out = op(out, s)
            return out
        # A concrete NumPy scalar lets JAX pick the differentiable reduce_window_max/sum.
        init = np.asarray(init_value, x.dtype)
        dims, steps = (1, *window, 1), (1, *strides, 1)
        return lax.reduce_window(x, init, op, dims, steps, [(0, 0), *pads, (0, 0)])


@dataclasses.dataclass(frozen=True)
class MaxPool(_Pool):
    """Max over windows of the spatial axes, per channel; ``(batch, *spatial, channels)`` in.

    Args:
      window: positive int (1-D) or tuple (its length is the number of spatial dims).
      strides: positive int or tuple; ``None`` (default) means ``window`` (non-overlapping).
      padding: ``"VALID"`` (default), ``"SAME"`` (pads with ``-inf``) or ``(lo, hi)`` pairs.
        A window that does not fit its (padded) input (``"VALID"`` with a window larger than
        the input) raises ``ValueError`` at ``init`` / ``apply`` instead of an empty output.
      lowering: ``"xla"`` (``lax.reduce_window``), ``"im2col"`` (elementwise max of strided
        slices) or ``"auto"`` (= ``"xla"`` on every backend: unlike the convolution,
        ``reduce_window`` is not slow inside ``lax.scan`` on CPU; see ``benchmarks/conv.py``).
        Same numbers.
    """

    def forward(self, x):
        return self._pool(x, -jnp.inf, lax.max)


@dataclasses.dataclass(frozen=True)
class AvgPool(_Pool):
    """Mean over windows of the spatial axes, per channel (arguments as :class:`MaxPool`).

    With ``"SAME"`` padding the zeros count in the mean (divides by the window size, like Flax's
    ``avg_pool`` default ``count_include_pad=True``).
    """

    def forward(self, x):
        total = self._pool(x, 0.0, lax.add)
        return total / jnp.asarray(math.prod(self.window_tuple), total.dtype)
