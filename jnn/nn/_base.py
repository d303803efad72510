"""The layer base class and the rules every layer family shares.

A layer family (a private file of :mod:`jnn.nn`) imports from here:

- :class:`Layer`, the frozen-dataclass base with pure ``init`` / ``apply``, and
  ``_Windowed``, the base of layers that slide a window over spatial axes (Conv, pools);
- ``_describe`` (a layer as error messages name it) and ``_kind`` (its lower-case type name,
  the stem of :class:`~jnn.nn.Serial`'s child names);
- construction checks ``_positive_int``, ``_positive_ints``, ``_check_initializers`` and
  ``_freeze``; shape checks ``_check_rank`` and ``_check_last``;
- ``_init_kernel_bias`` (the ``{"w", "b"}`` initialiser of Dense, Conv and Maxout),
  ``_bcast`` / ``_add_bias``;
- output shapes through ``jax.eval_shape``: :func:`output_shape` (public), ``_abstract_init``
  and ``_out_shape`` (given params/state).

Every shape check works on static shapes, so it also fires under ``jit``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jnn import init as _init
from jnn._keys import as_key

__all__ = ["Layer", "output_shape"]

Shape = tuple[int, ...]
Initializer = Callable[..., jax.Array]


# ----------------------------------------------------------------------------- naming


def _fmt_shape(shape) -> str:
    return "(" + ", ".join(str(int(d)) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def _kind(layer) -> str:
    """``"dense"`` for a ``Dense``: the lower-case type name (stem of Serial's child names)."""
    return type(layer).__name__.lower()


def _describe(layer) -> str:
    """``Dense(features=64)``: the class and the shown fields that differ from their defaults."""
    if not dataclasses.is_dataclass(layer):
        return type(layer).__name__
    args = [
        f"{f.name}={getattr(layer, f.name)!r}"
        for f in dataclasses.fields(layer)
        if f.repr and (f.default is dataclasses.MISSING or getattr(layer, f.name) != f.default)
    ]
    return f"{type(layer).__name__}({', '.join(args)})"


# ----------------------------------------------------------------------------- construction checks


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _real(layer, name: str, value) -> float:
    """``value`` as a Python float; ``TypeError`` naming the layer and argument if not a number.

    (A Python float is weakly typed, so hyper-parameter arithmetic keeps the arrays' dtype.)
    """
    real = isinstance(value, (int, float, np.integer, np.floating))
    if not real or isinstance(value, (bool, np.bool_)):
        raise TypeError(
            f"{type(layer).__name__}: {name} must be a real number; "
            f"got {value!r} ({type(value).__name__})."
        )
    return float(value)


def _positive_int(layer, name: str, value) -> int:
    """``value`` as an ``int >= 1``; ``TypeError`` / ``ValueError`` naming layer and argument."""
    if not _is_int(value):
        raise TypeError(
            f"{type(layer).__name__}: {name} must be a positive int; "
            f"got {value!r} ({type(value).__name__})."
        )
    if value < 1:
        raise ValueError(f"{type(layer).__name__}: {name} must be a positive int; got {value!r}.")
    return int(value)


def _positive_ints(layer, name: str, value, n: int | None = None) -> tuple[int, ...]:
    """An int (repeated ``n`` times; once if ``n`` is None) or a sequence of positive ints.

    Raises ``TypeError`` for non-ints and ``ValueError`` for values < 1 or a wrong length, the
    message naming the layer, the argument and the whole value.
    """
    cls = type(layer).__name__
    if _is_int(value):
        values = (value,) * (n or 1)
    else:
        try:
            values = None if isinstance(value, (str, bytes)) else tuple(value)
        except TypeError:
            values = None
        if values is None or not all(_is_int(v) for v in values):
            raise TypeError(f"{cls}: {name} must be an int or a sequence of ints; got {value!r}.")
        if not values or (n is not None and len(values) != n):
            need = f"{n} values (one per spatial dim)" if n is not None else "at least one value"
            raise ValueError(f"{cls}: {name} needs {need}; got {value!r}.")
    if min(values) < 1:
        raise ValueError(f"{cls}: {name} must be positive; got {value!r}.")
    return tuple(int(v) for v in values)


def _check_initializers(layer, *names: str) -> None:
    """``TypeError`` unless each named field is ``None`` or a callable ``init(key, shape, dtype)``.

    ``names`` defaults to ``("w_init", "b_init")``.
    """
    for name in names or ("w_init", "b_init"):
        value = getattr(layer, name)
        if value is not None and not callable(value):
            raise TypeError(
                f"{type(layer).__name__}: {name} must be None or a callable "
                f"init(key, shape, dtype) such as jnn.init.lecun_normal(); got {value!r}."
            )


def _freeze(obj, *names) -> None:
    """Turns list hyper-parameters into tuples so the frozen layer stays hashable.

    ``names`` defaults to every dataclass field of ``obj``.
    """
    for name in names or [f.name for f in dataclasses.fields(obj)]:
        value = getattr(obj, name)
        if isinstance(value, list):
            value = tuple(tuple(v) if isinstance(v, list) else v for v in value)
            object.__setattr__(obj, name, value)


# ----------------------------------------------------------------------------- shape checks


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


def _pads(layer, spatial: Sequence[int], window, strides, padding) -> list[tuple[int, int]]:
    """``(lo, hi)`` pads per spatial dim for ``"SAME"``, ``"VALID"`` or explicit pairs."""
    cls = type(layer).__name__
    if isinstance(padding, str):
        if padding.upper() not in ("SAME", "VALID"):
            raise ValueError(
                f"{cls}: padding must be 'SAME', 'VALID' or (lo, hi) pairs; got {padding!r}."
            )
        return [tuple(p) for p in lax.padtype_to_pads(spatial, window, strides, padding.upper())]
    try:
        pads = [tuple(int(v) for v in p) for p in padding]
    except TypeError:
        raise TypeError(
            f"{cls}: padding must be 'SAME', 'VALID' or (lo, hi) pairs; got {padding!r}."
        ) from None
    if len(pads) != len(window) or any(len(p) != 2 for p in pads):
        raise ValueError(f"{cls}: padding needs {len(window)} (lo, hi) pairs; got {padding!r}.")
    return pads


def _out_sizes(spatial, window, strides, pads) -> list[int]:
    """Output sizes ``(n + lo + hi - k) // s + 1`` of a strided window, per spatial dim."""
    return [
        (n + lo + hi - k) // s + 1
        for n, k, s, (lo, hi) in zip(spatial, window, strides, pads, strict=True)
    ]


_SPATIAL_LAYOUTS = {1: "(batch, length, channels)", 2: "(batch, height, width, channels)"}


@dataclasses.dataclass(frozen=True)
class Layer:
    """Base class: a stateless, parameter-free identity. Subclasses override what they need.

    A subclass holds hyper-parameters only (frozen dataclass fields). The simplest layer
    overrides ``forward(x)``; one with params or state overrides ``init`` and ``apply``;
    ``check_input(shape)`` raises ``ValueError`` for inputs it cannot take.
    """

    def init(self, key, input_shape, dtype=jnp.float32):
        """Params and state for inputs of ``input_shape``.

        Args:
          key: a typed (``jax.random.key``) or raw (``jax.random.PRNGKey``) key.
          input_shape: the input shape, batch dimension included.
          dtype: the dtype of the params and state.

        Returns:
          ``(params, state)``, dicts (``{}`` when there are none).
        """
        del key, dtype
        self.check_input(tuple(input_shape))
        return {}, {}

    def check_input(self, shape: Shape) -> None:
        """Raises ``ValueError`` naming the layer when ``shape`` does not fit."""

    def apply(self, params, state, x, *, key=None, train=False):
        """The forward pass.

        Args:
          params, state: from :meth:`init`.
          x: the input batch.
          key: a PRNG key (typed or raw) for stochastic layers; keyword-only.
          train: training mode (batch statistics, dropout on); keyword-only.

        Returns:
          ``(y, new_state)``.
        """
        del params, key, train
        self.check_input(x.shape)
        return self.forward(x), state

    def forward(self, x):
        """The stateless, parameter-free computation ``y = f(x)`` (identity here)."""
        return x


@dataclasses.dataclass(frozen=True)
class _Windowed(Layer):
    """Base of layers sliding a window over ``(batch, *spatial, channels)`` (Conv, the pools).

    Subclasses define ``window_tuple`` and ``stride_tuple`` (validated ints) and a ``padding``
    field. ``check_input`` (one rule for all of them) refuses a wrong rank and any output with a
    zero-size spatial dimension, such as a ``"VALID"`` window longer than its input.
    """

    def __post_init__(self):
        _freeze(self)
        window, strides = self.window_tuple, self.stride_tuple
        _pads(self, window, window, strides, self.padding)

    def check_input(self, shape):
        self.spatial_pads(shape)

    def spatial_pads(self, shape) -> list[tuple[int, int]]:
        """Checks ``shape`` (see the class docstring) and returns its ``(lo, hi)`` pads."""
        window, strides = self.window_tuple, self.stride_tuple
        d = len(window)
        layout = _SPATIAL_LAYOUTS.get(d, f"(batch, {d} spatial dims, channels)")
        _check_rank(self, shape, d + 2, layout, exact=True)
        spatial = tuple(shape[1:-1])
        pads = _pads(self, spatial, window, strides, self.padding)
        out = _out_sizes(spatial, window, strides, pads)
        if min(out) < 1:
            raise ValueError(
                f"{_describe(self)}: window {_fmt_shape(window)} does not fit input shape "
                f"{_fmt_shape(shape)} (spatial {_fmt_shape(spatial)}, padding "
                f"{self.padding!r}); the output would have spatial size "
                f"{_fmt_shape([max(o, 0) for o in out])}. Use a window no larger than the "
                "(padded) input or padding='SAME'."
            )
        return pads


# ----------------------------------------------------------------------------- params helpers


def _init_kernel_bias(layer, key, kernel_shape, dtype) -> dict:
    """``{"w": w_init(kernel_shape), "b": b_init((kernel_shape[-1],))}`` for Dense/Conv/Maxout.

    ``layer.w_init`` defaults to ``jnn.init.lecun_normal()``, ``layer.b_init`` to zeros; the two
    get the halves of ``jax.random.split(key)``.
    """
    kw, kb = jax.random.split(as_key(key))
    w_init = layer.w_init or _init.lecun_normal()
    b_init = layer.b_init or _init.constant(0.0)
    kernel_shape = tuple(kernel_shape)
    return {"w": w_init(kw, kernel_shape, dtype), "b": b_init(kb, kernel_shape[-1:], dtype)}


def _bcast(v, ndim: int):
    """A per-channel vector ``(C,)`` shaped to broadcast against a rank-``ndim`` input."""
    return v.reshape((1,) * (ndim - 1) + v.shape)


def _add_bias(y, b):
    return y + _bcast(b, y.ndim)


# ----------------------------------------------------------------------------- output shapes


def _abstract(tree):
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), tree)


def _abstract_init(layer, input_shape, dtype):
    """``layer.init``'s ``(params, state)`` as ``ShapeDtypeStruct`` trees (nothing allocated)."""
    return jax.eval_shape(lambda k: layer.init(k, tuple(input_shape), dtype), jax.random.key(0))


def _out_shape(layer, params, state, input_shape, dtype) -> Shape:
    """The output shape of ``layer.apply`` (eval mode) given params/state (arrays or abstract)."""
    out = jax.eval_shape(
        lambda p, s, x: layer.apply(p, s, x)[0],
        _abstract(params),
        _abstract(state),
        jax.ShapeDtypeStruct(tuple(input_shape), dtype),
    )
    return tuple(out.shape)


def output_shape(layer, input_shape, dtype=jnp.float32) -> Shape:
    """The shape of ``layer.apply(params, state, x)[0]`` for ``x`` of ``input_shape``.

    Computed with ``jax.eval_shape`` of ``init`` then ``apply`` (eval mode): nothing is
    allocated, and the layer's shape errors are raised as they would be on real inputs.

    Args:
      layer: any layer (a :class:`~jnn.nn.Serial` included).
      input_shape: the input shape, batch dimension included.
      dtype: the dtype of the inputs and parameters.

    Returns:
      The output shape as a tuple of ints.
    """
    shape = tuple(int(d) for d in input_shape)
    params, state = _abstract_init(layer, shape, dtype)
    return _out_shape(layer, params, state, shape, dtype)
