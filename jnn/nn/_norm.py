"""Normalisation layers: :class:`BatchNorm`, :class:`LayerNorm`, :class:`InstanceNorm`.

All three compute their statistics and the normalised ``(x - mean) / sqrt(var + eps)`` in at
least float32 (``_stat_dtype``: float32 for 16-bit inputs, the input dtype otherwise), then
apply ``scale`` and ``offset`` in the dtype of the inputs and params.
"""

from __future__ import annotations

import dataclasses
import math

import jax.numpy as jnp
from jax import lax

from jnn.nn._base import Layer, _bcast, _check_last, _check_rank, _describe, _fmt_shape, _real

__all__ = ["BatchNorm", "InstanceNorm", "LayerNorm"]


def _stat_dtype(dtype):
    """Float32 for 16-bit floats (and non-floats), else ``dtype``: statistics never below f32."""
    dtype = jnp.dtype(dtype)
    if jnp.issubdtype(dtype, jnp.floating) and dtype.itemsize >= 4:
        return dtype
    return jnp.dtype(jnp.float32)


def _moments(x, axes):
    """Mean and biased variance of ``x`` over ``axes`` (kept as size-1 axes), in the stat dtype."""
    xs = x.astype(_stat_dtype(x.dtype))
    mean = jnp.mean(xs, axis=axes, keepdims=True)
    return mean, jnp.mean(jnp.square(xs - mean), axis=axes, keepdims=True)


def _normalise(x, mean, var, eps, scale, offset):
    """``scale * (x - mean) / sqrt(var + eps) + offset``; ``mean``/``var`` broadcast to ``x``.

    The standardisation runs in the stat dtype and is cast back to ``x.dtype`` before the
    per-channel ``scale`` and ``offset``.
    """
    sd = _stat_dtype(x.dtype)
    z = (x.astype(sd) - mean.astype(sd)) * lax.rsqrt(var.astype(sd) + eps)
    return z.astype(x.dtype) * _bcast(scale, x.ndim) + _bcast(offset, x.ndim)


def _check_eps(layer) -> None:
    eps = _real(layer, "eps", layer.eps)
    if not eps > 0.0:
        raise ValueError(f"{type(layer).__name__}: eps must be > 0; got {eps}.")
    object.__setattr__(layer, "eps", eps)


def _norm_params(layer, input_shape, dtype):
    shape = tuple(input_shape)
    layer.check_input(shape)
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
    statistics and returns the state unchanged. ``train=True`` on a batch where each feature
    has a single value (batch 1 with no spatial positions to average over) raises
    ``ValueError``: the batch statistics of one example normalise every output to 0.

    Precision: the running statistics stay in the params dtype (the ``dtype`` given to
    ``init``, so a ``lax.scan`` carry keeps its dtype), batch statistics are accumulated in
    float32 for 16-bit inputs (bf16/f16) and cast back.

    Args:
      momentum: running-average decay in ``[0, 1]``.
      eps: added to the variance, ``> 0``.

    Params: ``scale`` (ones), ``offset`` (zeros). State: ``mean`` (zeros), ``var`` (ones).
    """

    momentum: float = 0.9
    eps: float = 1e-5

    def __post_init__(self):
        momentum = _real(self, "momentum", self.momentum)
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"BatchNorm: momentum must be in [0, 1]; got {momentum}.")
        object.__setattr__(self, "momentum", momentum)
        _check_eps(self)

    def check_input(self, shape):
        _check_rank(self, shape, 2, "(batch, ..., features)")

    def init(self, key, input_shape, dtype=jnp.float32):
        del key
        params = _norm_params(self, input_shape, dtype)
        c = input_shape[-1]
        return params, {"mean": jnp.zeros((c,), dtype), "var": jnp.ones((c,), dtype)}

    def apply(self, params, state, x, *, key=None, train=False):
        _check_channels(self, params, x)
        if train:
            mean, var = self._batch_moments(x)
            new_state = {
                "mean": self._update(state["mean"], mean),
                "var": self._update(state["var"], var),
            }
        else:
            mean, var = _bcast(state["mean"], x.ndim), _bcast(state["var"], x.ndim)
            new_state = state
        return _normalise(x, mean, var, self.eps, params["scale"], params["offset"]), new_state

    def _batch_moments(self, x):
        if math.prod(x.shape[:-1]) == 1:
            raise ValueError(
                f"{_describe(self)} with train=True got input shape {_fmt_shape(x.shape)}: each "
                "feature has a single value in the batch, and the batch statistics of one "
                "example normalise every output to 0 (y = offset). Use a larger batch, "
                "LayerNorm, or train=False."
            )
        return _moments(x, tuple(range(x.ndim - 1)))

    def _update(self, old, batch):
        """``momentum * old + (1 - momentum) * batch`` in the stat dtype, cast to old's dtype."""
        batch = lax.stop_gradient(batch).reshape(old.shape)
        m = self.momentum
        return (m * old.astype(batch.dtype) + (1.0 - m) * batch).astype(old.dtype)


@dataclasses.dataclass(frozen=True)
class LayerNorm(Layer):
    """Layer normalisation: each example normalised over its last (feature/channel) axis.

    ``y = scale * (x - mean_last) / sqrt(var_last + eps) + offset`` with per-feature ``scale``
    (ones) and ``offset`` (zeros); the notes' "axis=1" for ``(batch, features)``. On conv
    inputs it normalises each position over its channels (Flax ``LayerNorm()``'s default).
    Same in train and eval; no state. ``eps > 0``.
    """

    eps: float = 1e-5

    def __post_init__(self):
        _check_eps(self)

    def check_input(self, shape):
        _check_rank(self, shape, 2, "(batch, ..., features)")

    def init(self, key, input_shape, dtype=jnp.float32):
        return _norm_params(self, input_shape, dtype), {}

    def apply(self, params, state, x, *, key=None, train=False):
        _check_channels(self, params, x)
        mean, var = _moments(x, (x.ndim - 1,))
        return _normalise(x, mean, var, self.eps, params["scale"], params["offset"]), state


@dataclasses.dataclass(frozen=True)
class InstanceNorm(Layer):
    """Instance normalisation: each example and channel normalised over spatial positions.

    Inputs ``(batch, *spatial, channels)`` with at least one spatial axis;
    ``y = scale * (x - mean_spatial) / sqrt(var_spatial + eps) + offset`` with per-channel
    ``scale`` (ones) and ``offset`` (zeros). Same in train and eval; no state. ``eps > 0``.
    """

    eps: float = 1e-5

    def __post_init__(self):
        _check_eps(self)

    def check_input(self, shape):
        _check_rank(self, shape, 3, "(batch, *spatial, channels)")

    def init(self, key, input_shape, dtype=jnp.float32):
        return _norm_params(self, input_shape, dtype), {}

    def apply(self, params, state, x, *, key=None, train=False):
        _check_channels(self, params, x)
        mean, var = _moments(x, tuple(range(1, x.ndim - 1)))
        return _normalise(x, mean, var, self.eps, params["scale"], params["offset"]), state
