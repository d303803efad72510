"""Layers with pure ``init`` / ``apply``, and the ``Serial`` combinator.

Every layer is a frozen dataclass holding only hyper-parameters, with two pure methods::

    params, state = layer.init(key, input_shape, dtype=jnp.float32)  # input_shape has the batch dim
    y, state = layer.apply(params, state, x, *, key=None, train=False)

Data is channels-last: Dense maps the last axis (kernel ``(in, out)``, ``y = x @ w + b``); Conv
takes ``(batch, *spatial, channels)`` (kernel ``(*window, in, out)``). Layers compute in the dtype
of their inputs and params; ``init(..., dtype=jnp.float64)`` (under ``jax.enable_x64``) gives a
float64 network. Shape errors are raised from static shapes, so they also fire under ``jit``.

``Serial(*layers)`` keys params and state by ``f"{type(layer).__name__.lower()}_{i}"``, so tree
paths read ``dense_0/w``, ``batchnorm_1/scale``.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jnn import activations as _act
from jnn import init as _init
from jnn._tree import named_leaves

__all__ = [
    "AvgPool",
    "BatchNorm",
    "Conv",
    "Dense",
    "Dropout",
    "Elu",
    "Flatten",
    "Gelu",
    "InstanceNorm",
    "Layer",
    "LayerNorm",
    "LeakyRelu",
    "MaxPool",
    "Maxout",
    "Relu",
    "Selu",
    "Serial",
    "Sigmoid",
    "Swish",
    "Tanh",
    "count_params",
    "default_lowering",
    "layer_names",
    "summary",
]

Shape = tuple[int, ...]
Initializer = Callable[..., jax.Array]
_LOWERINGS = ("auto", "im2col", "xla")


def _fmt_shape(shape) -> str:
    return "(" + ", ".join(str(int(d)) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def _describe(layer) -> str:
    """``Dense(features=64)``: the class and the fields that differ from their defaults."""
    if not dataclasses.is_dataclass(layer) or isinstance(layer, Serial):
        return type(layer).__name__
    args = [
        f"{f.name}={getattr(layer, f.name)!r}"
        for f in dataclasses.fields(layer)
        if f.default is dataclasses.MISSING or getattr(layer, f.name) != f.default
    ]
    return f"{type(layer).__name__}({', '.join(args)})"


def _check_rank(layer, shape, min_rank: int, what: str, exact: bool = False) -> None:
    ok = len(shape) == min_rank if exact else len(shape) >= min_rank
    if not ok:
        rank = f"rank {min_rank}" if exact else f"rank >= {min_rank}"
        raise ValueError(
            f"{_describe(layer)} expects inputs of {rank} {what}; "
            f"got rank {len(shape)} with shape {_fmt_shape(shape)}."
        )


def _check_last(layer, shape, expected: int, what: str = "features") -> None:
    if shape[-1] != expected:
        raise ValueError(
            f"{_describe(layer)} was built for {expected} {what} on the last axis; "
            f"got {shape[-1]} (input shape {_fmt_shape(shape)})."
        )


def _tuple(value, n: int, name: str) -> tuple[int, ...]:
    if isinstance(value, int):
        return (value,) * n
    value = tuple(int(v) for v in value)
    if len(value) != n:
        raise ValueError(f"{name} must be an int or a sequence of {n} ints; got {value}.")
    return value


def _freeze(obj, *names) -> None:
    """Turns list hyper-parameters into tuples so the frozen layer stays hashable."""
    for name in names:
        value = getattr(obj, name)
        if isinstance(value, list):
            value = tuple(tuple(v) if isinstance(v, list) else v for v in value)
            object.__setattr__(obj, name, value)


def _window(value) -> tuple[int, ...]:
    """An int means a 1-D window; a tuple's length gives the number of spatial dimensions."""
    return (int(value),) if isinstance(value, int) else tuple(int(v) for v in value)


def _pads(spatial: Sequence[int], window, strides, padding) -> list[tuple[int, int]]:
    if isinstance(padding, str):
        if padding.upper() not in ("SAME", "VALID"):
            raise ValueError(f"padding must be 'SAME', 'VALID' or (lo, hi) pairs; got {padding!r}.")
        return [tuple(p) for p in lax.padtype_to_pads(spatial, window, strides, padding.upper())]
    pads = [tuple(int(v) for v in p) for p in padding]
    if len(pads) != len(window):
        raise ValueError(f"padding needs {len(window)} (lo, hi) pairs; got {padding!r}.")
    return pads


def default_lowering() -> str:
    """``"im2col"`` on CPU, ``"xla"`` (``lax.conv_general_dilated``) elsewhere.

    XLA's CPU convolution is 30-40x slower inside a ``lax.scan``/``while`` body than outside it
    (jax-ml/jax#12868); im2col + one matmul is not. GPUs/TPUs have fast native convolutions.
    Decided at trace time from ``jax.default_backend()``.
    """
    return "im2col" if jax.default_backend() == "cpu" else "xla"


def _resolve(lowering: str) -> str:
    if lowering not in _LOWERINGS:
        raise ValueError(f"lowering must be one of {_LOWERINGS}; got {lowering!r}.")
    return default_lowering() if lowering == "auto" else lowering


def _windows(x, window, strides, pads, pad_value):
    """Yields, for each window offset, the strided slice ``(batch, *out_spatial, channels)``."""
    if any(lo or hi for lo, hi in pads):
        x = jnp.pad(x, [(0, 0), *pads, (0, 0)], constant_values=pad_value)
    spatial = x.shape[1:-1]
    out = [(n - k) // s + 1 for n, k, s in zip(spatial, window, strides, strict=True)]
    for offsets in itertools.product(*(range(k) for k in window)):
        start = (0, *offsets, 0)
        limit = (
            x.shape[0],
            *(o + s * (n - 1) + 1 for o, s, n in zip(offsets, strides, out, strict=True)),
            x.shape[-1],
        )
        yield lax.slice(x, start, limit, (1, *strides, 1))


def _conv_im2col(x, w, strides, pads):
    """Convolution as patches (slices concatenated on the channel axis) times one matmul.

    Patch features are ordered (window offset, in-channel), matching ``w.reshape(-1, out)``.
    """
    window = w.shape[:-2]
    patches = jnp.concatenate(list(_windows(x, window, strides, pads, 0)), axis=-1)
    wmat = w.reshape(-1, w.shape[-1])
    return lax.dot_general(patches, wmat, (((patches.ndim - 1,), (0,)), ((), ())))


_DIMS = {1: ("NWC", "WIO", "NWC"), 2: ("NHWC", "HWIO", "NHWC"), 3: ("NDHWC", "DHWIO", "NDHWC")}


def _conv_xla(x, w, strides, pads):
    return lax.conv_general_dilated(x, w, strides, pads, dimension_numbers=_DIMS[w.ndim - 2])


# ----------------------------------------------------------------------------- base


@dataclasses.dataclass(frozen=True)
class Layer:
    """Base class: a stateless, parameter-free identity. Subclasses override what they need."""

    def init(self, key, input_shape, dtype=jnp.float32):
        """Returns ``(params, state)`` for inputs of ``input_shape`` (batch dim included)."""
        del key, dtype
        self.check_input(tuple(input_shape))
        return {}, {}

    def check_input(self, shape: Shape) -> None:
        """Raises ``ValueError`` naming the layer when ``shape`` does not fit."""

    def apply(self, params, state, x, *, key=None, train=False):
        del params, key, train
        self.check_input(x.shape)
        return self.forward(x), state

    def forward(self, x):
        return x


# ----------------------------------------------------------------------------- dense / conv


@dataclasses.dataclass(frozen=True)
class Dense(Layer):
    """Fully connected layer ``y = x @ w + b`` on the last axis.

    Args:
      features: number of output units.
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

    def check_input(self, shape):
        _check_rank(self, shape, 2, "(batch, ..., features)")

    def init(self, key, input_shape, dtype=jnp.float32):
        shape = tuple(input_shape)
        self.check_input(shape)
        kw, kb = jax.random.split(key)
        w_init = self.w_init or _init.lecun_normal()
        b_init = self.b_init or _init.constant(0.0)
        return {
            "w": w_init(kw, (shape[-1], self.features), dtype),
            "b": b_init(kb, (self.features,), dtype),
        }, {}

    def apply(self, params, state, x, *, key=None, train=False):
        self.check_input(x.shape)
        _check_last(self, x.shape, params["w"].shape[0])
        return _affine(x, params["w"], params["b"]), state


def _affine(x, w, b):
    y = lax.dot_general(x, w, (((x.ndim - 1,), (0,)), ((), ())))
    return y + b.reshape((1,) * (y.ndim - 1) + b.shape)


@dataclasses.dataclass(frozen=True)
class Conv(Layer):
    """Convolution (cross-correlation, like every framework), channels-last, 1-D/2-D/3-D.

    ``y[n, p, o] = sum_{k, c} x_pad[n, p * stride + k, c] * w[k, c, o] + b[o]``.

    Args:
      features: output channels.
      kernel_size: an int (1-D) or a tuple whose length is the number of spatial dims.
      strides: int or tuple, one per spatial dim.
      padding: ``"SAME"`` (output size ``ceil(n / stride)``), ``"VALID"`` or ``(lo, hi)`` pairs.
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
        _freeze(self, "kernel_size", "strides", "padding")
        _resolve(self.lowering)
        _pads([8] * len(self.window), self.window, self.stride_tuple, self.padding)

    @property
    def window(self) -> tuple[int, ...]:
        return _window(self.kernel_size)

    @property
    def stride_tuple(self) -> tuple[int, ...]:
        return _tuple(self.strides, len(self.window), "strides")

    def check_input(self, shape):
        d = len(self.window)
        names = {1: "(batch, length, channels)", 2: "(batch, height, width, channels)"}
        _check_rank(self, shape, d + 2, names.get(d, f"(batch, {d} spatial dims, channels)"), True)

    def init(self, key, input_shape, dtype=jnp.float32):
        shape = tuple(input_shape)
        self.check_input(shape)
        kw, kb = jax.random.split(key)
        w_init = self.w_init or _init.lecun_normal()
        b_init = self.b_init or _init.constant(0.0)
        return {
            "w": w_init(kw, (*self.window, shape[-1], self.features), dtype),
            "b": b_init(kb, (self.features,), dtype),
        }, {}

    def apply(self, params, state, x, *, key=None, train=False):
        self.check_input(x.shape)
        w, b = params["w"], params["b"]
        _check_last(self, x.shape, w.shape[-2], "input channels")
        pads = _pads(x.shape[1:-1], self.window, self.stride_tuple, self.padding)
        conv = _conv_im2col if _resolve(self.lowering) == "im2col" else _conv_xla
        y = conv(x, w, self.stride_tuple, pads)
        return y + b.reshape((1,) * (y.ndim - 1) + b.shape), state


@dataclasses.dataclass(frozen=True)
class Maxout(Layer):
    """Maxout unit ``y_j = max_p (x @ w + b)[j * pieces + p]`` (Goodfellow et al., 2013).

    ``max(w_1^T x + b_1, w_2^T x + b_2)`` for ``pieces=2``; generalises ReLU and leaky ReLU at
    ``pieces`` times the weights. Params: ``w`` ``(in, features * pieces)``, ``b``
    ``(features * pieces,)``; column ``j * pieces + p`` is piece ``p`` of unit ``j``.
    """

    features: int
    pieces: int = 2
    w_init: Initializer | None = None
    b_init: Initializer | None = None

    def check_input(self, shape):
        _check_rank(self, shape, 2, "(batch, ..., features)")

    def init(self, key, input_shape, dtype=jnp.float32):
        dense = Dense(self.features * self.pieces, self.w_init, self.b_init)
        self.check_input(tuple(input_shape))
        return dense.init(key, input_shape, dtype)

    def apply(self, params, state, x, *, key=None, train=False):
        self.check_input(x.shape)
        _check_last(self, x.shape, params["w"].shape[0])
        z = _affine(x, params["w"], params["b"])
        return jnp.max(z.reshape(*z.shape[:-1], self.features, self.pieces), axis=-1), state


# ----------------------------------------------------------------------------- pooling


@dataclasses.dataclass(frozen=True)
class _Pool(Layer):
    window: int | tuple[int, ...]
    strides: int | tuple[int, ...] | None = None
    padding: str | tuple = "VALID"
    lowering: str = "auto"

    def __post_init__(self):
        _freeze(self, "window", "strides", "padding")
        _resolve(self.lowering)

    @property
    def window_tuple(self):
        return _window(self.window)

    @property
    def stride_tuple(self):
        if self.strides is None:
            return self.window_tuple
        return _tuple(self.strides, len(self.window_tuple), "strides")

    def check_input(self, shape):
        d = len(self.window_tuple)
        names = {1: "(batch, length, channels)", 2: "(batch, height, width, channels)"}
        _check_rank(self, shape, d + 2, names.get(d, f"(batch, {d} spatial dims, channels)"), True)

    def _pool(self, x, init_value, op):
        window, strides = self.window_tuple, self.stride_tuple
        pads = _pads(x.shape[1:-1], window, strides, self.padding)
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
      window: int (1-D) or tuple (its length is the number of spatial dims).
      strides: defaults to ``window`` (non-overlapping windows).
      padding: ``"VALID"`` (default), ``"SAME"`` (pads with ``-inf``) or ``(lo, hi)`` pairs.
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


# ----------------------------------------------------------------------------- simple layers


@dataclasses.dataclass(frozen=True)
class Flatten(Layer):
    """``(batch, ...) -> (batch, prod(...))``."""

    def check_input(self, shape):
        _check_rank(self, shape, 1, "(batch, ...)")

    def forward(self, x):
        return x.reshape(x.shape[0], -1)


@dataclasses.dataclass(frozen=True)
class Relu(Layer):
    """``max(0, x)``, see :func:`jnn.activations.relu`."""

    def forward(self, x):
        return _act.relu(x)


@dataclasses.dataclass(frozen=True)
class LeakyRelu(Layer):
    """``x if x > 0 else alpha * x``, see :func:`jnn.activations.leaky_relu`."""

    alpha: float = 0.01

    def forward(self, x):
        return _act.leaky_relu(x, self.alpha)


@dataclasses.dataclass(frozen=True)
class Sigmoid(Layer):
    """``1 / (1 + exp(-x))``, see :func:`jnn.activations.sigmoid`."""

    def forward(self, x):
        return _act.sigmoid(x)


@dataclasses.dataclass(frozen=True)
class Tanh(Layer):
    """``tanh(x)``, see :func:`jnn.activations.tanh`."""

    def forward(self, x):
        return _act.tanh(x)


@dataclasses.dataclass(frozen=True)
class Elu(Layer):
    """``x if x > 0 else alpha (exp(x) - 1)``, see :func:`jnn.activations.elu`."""

    alpha: float = 1.0

    def forward(self, x):
        return _act.elu(x, self.alpha)


@dataclasses.dataclass(frozen=True)
class Selu(Layer):
    """Scaled ELU, see :func:`jnn.activations.selu`."""

    def forward(self, x):
        return _act.selu(x)


@dataclasses.dataclass(frozen=True)
class Gelu(Layer):
    """``x Phi(x)`` (tanh form if ``approximate``), see :func:`jnn.activations.gelu`."""

    approximate: bool = False

    def forward(self, x):
        return _act.gelu(x, self.approximate)


@dataclasses.dataclass(frozen=True)
class Swish(Layer):
    """``x sigmoid(x)``, see :func:`jnn.activations.swish`."""

    def forward(self, x):
        return _act.swish(x)


@dataclasses.dataclass(frozen=True)
class Dropout(Layer):
    """Inverted dropout: ``y = x * m / (1 - rate)``, ``m ~ Bernoulli(1 - rate)``, when training.

    ``rate`` is the **drop** probability (each unit is kept with probability ``1 - rate``).
    Scaling at train time keeps ``E[y] = x`` so prediction (``train=False``) is the identity.
    ``train=True`` needs a ``key``; without one it raises ``ValueError``.
    """

    rate: float = 0.5

    def __post_init__(self):
        if not 0.0 <= self.rate < 1.0:
            raise ValueError(f"Dropout rate is the drop probability in [0, 1); got {self.rate}.")

    def apply(self, params, state, x, *, key=None, train=False):
        if not train or self.rate == 0.0:
            return x, state
        if key is None:
            raise ValueError(
                f"{_describe(self)} needs a PRNG key when train=True (apply(..., key=key))."
            )
        keep = 1.0 - self.rate
        mask = jax.random.bernoulli(key, keep, x.shape)
        return jnp.where(mask, x / jnp.asarray(keep, x.dtype), jnp.zeros_like(x)), state


# ----------------------------------------------------------------------------- normalisation


def _bcast(v, ndim):
    """A per-channel vector ``(C,)`` shaped to broadcast against a rank-``ndim`` input."""
    return v.reshape((1,) * (ndim - 1) + v.shape)


def _scale_offset(x, mean, var, eps, scale, offset):
    inv = lax.rsqrt(var + jnp.asarray(eps, var.dtype))
    return (x - mean) * inv * _bcast(scale, x.ndim) + _bcast(offset, x.ndim)


def _norm_params(layer, key, input_shape, dtype):
    shape = tuple(input_shape)
    layer.check_input(shape)
    del key
    c = shape[-1]
    return {"scale": jnp.ones((c,), dtype), "offset": jnp.zeros((c,), dtype)}


def _check_channels(layer, params, x):
    layer.check_input(x.shape)
    _check_last(layer, x.shape, params["scale"].shape[0])


@dataclasses.dataclass(frozen=True)
class BatchNorm(Layer):
    """Batch normalisation ``y = scale * (x - mu) / sqrt(var + eps) + offset``.

    Statistics are per feature (last axis) over every other axis: over the batch for Dense
    inputs ``(batch, features)``; over batch and spatial positions for conv inputs
    ``(batch, *spatial, channels)``. ``var`` is the biased batch variance.

    ``train=True``: normalises with the batch statistics and updates the running statistics
    ``new = momentum * old + (1 - momentum) * batch`` (the Flax/Keras convention; PyTorch's
    ``momentum=0.1`` is ``momentum=0.9`` here). ``train=False``: normalises with the running
    statistics and returns the state unchanged.

    Params: ``scale`` (ones), ``offset`` (zeros). State: ``mean`` (zeros), ``var`` (ones).
    """

    momentum: float = 0.9
    eps: float = 1e-5

    def check_input(self, shape):
        _check_rank(self, shape, 2, "(batch, ..., features)")

    def init(self, key, input_shape, dtype=jnp.float32):
        params = _norm_params(self, key, input_shape, dtype)
        c = input_shape[-1]
        return params, {"mean": jnp.zeros((c,), dtype), "var": jnp.ones((c,), dtype)}

    def apply(self, params, state, x, *, key=None, train=False):
        _check_channels(self, params, x)
        if train:
            axes = tuple(range(x.ndim - 1))
            mean = jnp.mean(x, axis=axes)
            var = jnp.mean(jnp.square(x - _bcast(mean, x.ndim)), axis=axes)
            m = self.momentum
            new_state = {
                "mean": m * state["mean"] + (1.0 - m) * lax.stop_gradient(mean),
                "var": m * state["var"] + (1.0 - m) * lax.stop_gradient(var),
            }
        else:
            mean, var, new_state = state["mean"], state["var"], state
        scale, offset = params["scale"], params["offset"]
        y = _scale_offset(x, _bcast(mean, x.ndim), _bcast(var, x.ndim), self.eps, scale, offset)
        return y, new_state


@dataclasses.dataclass(frozen=True)
class LayerNorm(Layer):
    """Layer normalisation: each example normalised over its last (feature/channel) axis.

    ``y = scale * (x - mean_last) / sqrt(var_last + eps) + offset`` with per-feature ``scale``
    (ones) and ``offset`` (zeros); the notes' "axis=1" for ``(batch, features)``. On conv
    inputs it normalises each position over its channels (Flax ``LayerNorm()``'s default).
    Same in train and eval; no state.
    """

    eps: float = 1e-5

    def check_input(self, shape):
        _check_rank(self, shape, 2, "(batch, ..., features)")

    def init(self, key, input_shape, dtype=jnp.float32):
        return _norm_params(self, key, input_shape, dtype), {}

    def apply(self, params, state, x, *, key=None, train=False):
        _check_channels(self, params, x)
        mean = jnp.mean(x, axis=-1, keepdims=True)
        var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
        return _scale_offset(x, mean, var, self.eps, params["scale"], params["offset"]), state


@dataclasses.dataclass(frozen=True)
class InstanceNorm(Layer):
    """Instance normalisation: each example and channel normalised over spatial positions.

    Inputs ``(batch, *spatial, channels)`` with at least one spatial axis;
    ``y = scale * (x - mean_spatial) / sqrt(var_spatial + eps) + offset`` with per-channel
    ``scale`` (ones) and ``offset`` (zeros). Same in train and eval; no state.
    """

    eps: float = 1e-5

    def check_input(self, shape):
        _check_rank(self, shape, 3, "(batch, *spatial, channels)")

    def init(self, key, input_shape, dtype=jnp.float32):
        return _norm_params(self, key, input_shape, dtype), {}

    def apply(self, params, state, x, *, key=None, train=False):
        _check_channels(self, params, x)
        axes = tuple(range(1, x.ndim - 1))
        mean = jnp.mean(x, axis=axes, keepdims=True)
        var = jnp.mean(jnp.square(x - mean), axis=axes, keepdims=True)
        return _scale_offset(x, mean, var, self.eps, params["scale"], params["offset"]), state


# ----------------------------------------------------------------------------- Serial


def _abstract(tree):
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), tree)


def _out_shape(layer, params, state, shape, dtype) -> Shape:
    out = jax.eval_shape(
        lambda p, s, x: layer.apply(p, s, x)[0],
        _abstract(params),
        _abstract(state),
        jax.ShapeDtypeStruct(tuple(shape), dtype),
    )
    return tuple(out.shape)


class Serial(Layer):
    """Layers applied in order: ``Serial(Dense(100), Relu(), Dense(10))``.

    Params and state are dicts keyed ``f"{type(layer).__name__.lower()}_{i}"`` (``i`` the
    position), every child present (``{}`` when it has none). Child ``i`` gets the key
    ``jax.random.fold_in(key, i)`` in both ``init`` and ``apply``.
    """

    layers: tuple[Layer, ...]

    def __init__(self, *layers: Layer):
        for i, layer in enumerate(layers):
            if not (hasattr(layer, "init") and hasattr(layer, "apply")):
                raise TypeError(f"Serial item {i} is not a layer (needs init/apply): {layer!r}.")
        object.__setattr__(self, "layers", tuple(layers))

    def __repr__(self):
        return "Serial(" + ", ".join(repr(layer) for layer in self.layers) + ")"

    def __eq__(self, other):
        return type(other) is Serial and self.layers == other.layers

    def __hash__(self):
        return hash((Serial, self.layers))

    def __setattr__(self, name, value):
        raise dataclasses.FrozenInstanceError(f"cannot assign to field {name!r}")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f"{type(layer).__name__.lower()}_{i}" for i, layer in enumerate(self.layers))

    def init(self, key, input_shape, dtype=jnp.float32):
        params, state = {}, {}
        shape = tuple(input_shape)
        for i, (name, layer) in enumerate(zip(self.names, self.layers, strict=True)):
            p, s = layer.init(jax.random.fold_in(key, i), shape, dtype)
            params[name], state[name] = p, s
            if i + 1 < len(self.layers):
                shape = _out_shape(layer, p, s, shape, dtype)
        return params, state

    def apply(self, params, state, x, *, key=None, train=False):
        y, new_state, _ = self.apply_intermediates(params, state, x, key=key, train=train)
        return y, new_state

    def apply_intermediates(self, params, state, x, *, key=None, train=False):
        """Like ``apply`` but also returns ``{name: output}`` for every child layer."""
        for tree, what in ((params, "params"), (state, "state")):
            if not isinstance(tree, Mapping) or set(tree) != set(self.names):
                got = sorted(tree) if isinstance(tree, Mapping) else type(tree).__name__
                raise ValueError(
                    f"Serial expects {what} keyed {list(self.names)} (from its init); got {got}."
                )
        new_state, outputs = {}, {}
        for i, (name, layer) in enumerate(zip(self.names, self.layers, strict=True)):
            k = None if key is None else jax.random.fold_in(key, i)
            x, new_state[name] = layer.apply(params[name], state[name], x, key=k, train=train)
            outputs[name] = x
        return x, new_state, outputs


def layer_names(layer) -> tuple[str, ...]:
    """The param/state keys of a :class:`Serial` (``("dense_0", "relu_1", ...)``)."""
    if not isinstance(layer, Serial):
        raise TypeError(f"layer_names needs a Serial; got {layer!r}.")
    return layer.names


# ----------------------------------------------------------------------------- inspection


def count_params(params) -> int:
    """Total number of scalars in a params pytree (works on arrays and ``ShapeDtypeStruct``)."""
    return int(sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(params)))


def _has_weights(params) -> bool:
    return any(name.split("/")[-1] == "w" for name in named_leaves(params))


def _weighted_layers(layer, params) -> int:
    if isinstance(layer, Serial):
        return sum(
            _weighted_layers(child, params[name])
            for name, child in zip(layer.names, layer.layers, strict=True)
        )
    return int(_has_weights(params))


def summary(layer, input_shape, dtype=jnp.float32) -> str:
    """A table of layer, output shape and parameter count, with the total and the depth.

    Shapes come from ``jax.eval_shape``: nothing is allocated, so it works for any size. The
    depth follows the notes: an N-layer network counts the layers with weights (Dense, Conv,
    Maxout), output layer included, input not.

    Args:
      layer: a layer (usually a :class:`Serial`).
      input_shape: input shape including the batch dimension.
      dtype: the dtype the parameters would have.

    Returns:
      The table as a string.
    """
    key = jax.random.key(0)
    params, state = jax.eval_shape(lambda k: layer.init(k, tuple(input_shape), dtype), key)
    x = jax.ShapeDtypeStruct(tuple(input_shape), dtype)
    if isinstance(layer, Serial):
        _, _, outs = jax.eval_shape(
            lambda p, s, x: layer.apply_intermediates(p, s, x), params, state, x
        )
        rows = [(name, outs[name].shape, count_params(params[name])) for name in layer.names]
    else:
        out, _ = jax.eval_shape(lambda p, s, x: layer.apply(p, s, x), params, state, x)
        rows = [(type(layer).__name__.lower(), out.shape, count_params(params))]
    table = [("layer", "output shape", "params"), ("input", _fmt_shape(input_shape), "")]
    table += [(n, _fmt_shape(s), f"{c:,}") for n, s, c in rows]
    widths = [max(len(r[i]) for r in table) for i in range(3)]
    lines = [
        f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:>{widths[2]}}".rstrip() for r in table
    ]
    lines.insert(1, "-" * len(lines[0]))
    depth = _weighted_layers(layer, params)
    total = count_params(params)
    hidden = max(depth - 1, 0)
    lines.append("-" * len(lines[0]))
    lines.append(f"total params: {total:,}")
    lines.append(
        f"{depth}-layer network ({hidden} hidden + output)"
        if depth
        else "0-layer network (no layers with weights)"
    )
    return "\n".join(lines)
