"""Convolution (:class:`Conv`) and its two lowerings: im2col + one matmul, or XLA's own.

XLA's CPU convolution is 30-40x slower inside a ``lax.scan``/``while`` body than outside it
(jax-ml/jax#12868); im2col + one matmul is not, so :func:`default_lowering` picks it on CPU.
"""

from __future__ import annotations

import dataclasses
import itertools

import jax
import jax.numpy as jnp
from jax import lax

from jnn.nn._base import (
    Initializer,
    _add_bias,
    _check_initializers,
    _check_last,
    _init_kernel_bias,
    _out_sizes,
    _positive_int,
    _positive_ints,
    _Windowed,
)

__all__ = ["Conv", "default_lowering"]

_LOWERINGS = ("auto", "im2col", "xla")


def default_lowering() -> str:
    """``"im2col"`` on CPU, ``"xla"`` (``lax.conv_general_dilated``) elsewhere.

    XLA's CPU convolution is 30-40x slower inside a ``lax.scan``/``while`` body than outside it
    (jax-ml/jax#12868); im2col + one matmul is not. GPUs/TPUs have fast native convolutions.
    Decided at trace time from ``jax.default_backend()``.

    Returns:
      ``"im2col"`` or ``"xla"``.
    """
    return "im2col" if jax.default_backend() == "cpu" else "xla"


def _resolve(lowering: str) -> str:
    if lowering not in _LOWERINGS:
        raise ValueError(f"lowering must be one of {_LOWERINGS}; got {lowering!r}.")
    return default_lowering() if lowering == "auto" else lowering


def _windows(x, window, strides, pads, pad_value):
    """Yields, for each window offset, the strided slice ``(batch, *out_spatial, channels)``."""
    out = _out_sizes(x.shape[1:-1], window, strides, pads)
    if any(lo or hi for lo, hi in pads):
        x = jnp.pad(x, [(0, 0), *pads, (0, 0)], constant_values=pad_value)
    for offsets in itertools.product(*(range(k) for k in window)):
        start = (0, *offsets, 0)
        limit = (
            x.shape[0],
            *(o + s * (n - 1) + 1 for o, s, n in zip(offsets, strides, out, strict=True)),
            x.shape[-1],
        )
        yield lax.slice(x, start, limit, (1, *strides, 1))


def _conv_im2col(x, w, strides, pads):
    """Convolution as patches times one matmul.

    ``patches[n, p, k, c] = x_pad[n, p * stride + k, c]`` (the window's strided slices stacked
    before the channel axis, offsets in ``w``'s order), contracted over ``(k, c)`` with ``w``
    reshaped to ``(window, in, out)``. One input channel contracts a 2-D ``(rows, window)``
    matrix instead. Picked by timing forward + backward inside ``lax.scan`` on XLA:CPU
    (``benchmarks/conv.py --layers``): the slices concatenated into one ``window * in`` axis
    and contracted by a 3-D dot (jnn's layout before) took 4.3-4.5x as long with one input
    channel; with 64 the two layouts are level (within 7% either way, run to run).
    """
    cin, cout = w.shape[-2:]
    patches = jnp.stack(list(_windows(x, w.shape[:-2], strides, pads, 0)), axis=-2)
    wmat = w.reshape(-1, cin, cout)
    if cin == 1:
        rows = patches.reshape(-1, wmat.shape[0])
        return (rows @ wmat[:, 0, :]).reshape(*patches.shape[:-2], cout)
    nd = patches.ndim
    return lax.dot_general(patches, wmat, (((nd - 2, nd - 1), (0, 1)), ((), ())))


_DIMS = {1: ("NWC", "WIO", "NWC"), 2: ("NHWC", "HWIO", "NHWC"), 3: ("NDHWC", "DHWIO", "NDHWC")}


def _conv_xla(x, w, strides, pads):
    return lax.conv_general_dilated(x, w, strides, pads, dimension_numbers=_DIMS[w.ndim - 2])


@dataclasses.dataclass(frozen=True)
class Conv(_Windowed):
    """Convolution (cross-correlation, like every framework), channels-last, 1-D/2-D/3-D.

    ``y[n, p, o] = sum_{k, c} x_pad[n, p * stride + k, c] * w[k, c, o] + b[o]``.

    Args:
      features: output channels (a positive int).
      kernel_size: a positive int (1-D) or a tuple whose length is the number of spatial dims.
      strides: positive int or tuple, one per spatial dim.
      padding: ``"SAME"`` (output size ``ceil(n / stride)``), ``"VALID"`` or ``(lo, hi)`` pairs.
        A kernel that does not fit its (padded) input, e.g. ``"VALID"`` with a kernel longer
        than the input, raises ``ValueError`` at ``init`` / ``apply``.
      w_init, b_init: as for :class:`Dense` (default LeCun normal, zeros); fans count the window.
      lowering: ``"im2col"`` (patches + one matmul; fast inside ``lax.scan`` on CPU), ``"xla"``
        (``lax.conv_general_dilated``) or ``"auto"`` (:func:`default_lowering`: im2col on CPU,
        xla on GPU/TPU). All give the same numbers.

    Params: ``w`` of shape ``(*kernel_size, in, features)``, ``b`` of shape ``(features,)``.
    Inputs: ``(batch, *spatial, in)``.
    """

    features: int
    kernel_size: int | tuple[int, ...]
    strides: int | tuple[int, ...] = 1
    padding: str | tuple = "SAME"
    w_init: Initializer | None = None
    b_init: Initializer | None = None
    lowering: str = "auto"

    def __post_init__(self):
        object.__setattr__(self, "features", _positive_int(self, "features", self.features))
        super().__post_init__()
        _check_initializers(self)
        _resolve(self.lowering)

    @property
    def window_tuple(self) -> tuple[int, ...]:
        """The kernel's spatial size; its length is the number of spatial dims."""
        return _positive_ints(self, "kernel_size", self.kernel_size)

    window = window_tuple

    @property
    def stride_tuple(self) -> tuple[int, ...]:
        return _positive_ints(self, "strides", self.strides, len(self.window_tuple))

    def init(self, key, input_shape, dtype=jnp.float32):
        shape = tuple(input_shape)
        self.check_input(shape)
        return _init_kernel_bias(self, key, (*self.window, shape[-1], self.features), dtype), {}

    def apply(self, params, state, x, *, key=None, train=False):
        pads = self.spatial_pads(x.shape)
        w = params["w"]
        _check_last(self, x.shape, w.shape[-2], "input channels")
        conv = _conv_im2col if _resolve(self.lowering) == "im2col" else _conv_xla
        return _add_bias(conv(x, w, self.stride_tuple, pads), params["b"]), state
