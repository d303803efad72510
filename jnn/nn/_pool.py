"""Pooling over spatial windows: :class:`MaxPool` and :class:`AvgPool`."""

from __future__ import annotations

import dataclasses
import math

import jax.numpy as jnp
import numpy as np
from jax import lax

from jnn.nn._base import _positive_ints, _Windowed
from jnn.nn._conv import _resolve, _windows, default_lowering

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

    auto_lowering = staticmethod(lambda: "xla")

    def _pool(self, x, init_value, op):
        pads = self.spatial_pads(x.shape)
        window, strides = self.window_tuple, self.stride_tuple
        lowering = self.auto_lowering() if self.lowering == "auto" else self.lowering
        if lowering == "im2col":
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
        slices) or ``"auto"`` (:func:`jnn.nn.default_lowering`: ``"im2col"`` on CPU, where the
        backward pass of ``reduce_window``'s max (``select_and_scatter``) ran 7-22x slower
        inside ``lax.scan`` than the sliced one; ``"xla"`` elsewhere). The same outputs, and
        the same gradients except at ties within a window, where ``"xla"`` gives the whole
        gradient to the first maximum and ``"im2col"`` shares it equally (as ``jnp.max``).
    """

    auto_lowering = staticmethod(default_lowering)

    def forward(self, x):
        return self._pool(x, -jnp.inf, lax.max)


@dataclasses.dataclass(frozen=True)
class AvgPool(_Pool):
    """Mean over windows of the spatial axes, per channel (arguments as :class:`MaxPool`).

    With ``"SAME"`` padding the zeros count in the mean (divides by the window size, like Flax's
    ``avg_pool`` default ``count_include_pad=True``). ``lowering="auto"`` is ``"xla"`` on every
    backend (a sum's ``reduce_window`` has a cheap backward pass).
    """

    def forward(self, x):
        total = self._pool(x, 0.0, lax.add)
        return total / jnp.asarray(math.prod(self.window_tuple), total.dtype)
