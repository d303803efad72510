"""A foreign model wrapped with the defaults: :func:`wrap` (what ``jnn._foreign.as_model``
calls for models of Flax and Equinox)."""

from __future__ import annotations

import jax

from jnn._foreign import library_of
from jnn.interop._equinox import from_equinox
from jnn.interop._linen import from_linen
from jnn.interop._nnx import from_nnx

__all__ = ["wrap"]


def _built_by(constructor) -> str | None:
    """``"nnx"`` or ``"equinox"``: what ``constructor`` builds when called with ``nnx.Rngs``
    or with a key (traced abstractly, nothing allocated); ``None`` if neither."""
    from flax import nnx

    try:
        if isinstance(nnx.eval_shape(lambda: constructor(nnx.Rngs(0))), nnx.Module):
            return "nnx"
    except Exception:  # noqa: BLE001 - not an NNX constructor; try the next library
        pass
    try:
        import equinox as eqx
    except ImportError:
        return None
    try:
        if isinstance(eqx.filter_eval_shape(constructor, jax.random.key(0)), eqx.Module):
            return "equinox"
    except Exception:  # noqa: BLE001 - not an Equinox constructor either
        pass
    return None


def wrap(model):
    """A Flax linen module, a Flax NNX module or constructor, or an Equinox module or
    constructor as a jnn model, with the adapters' defaults (:func:`from_linen`,
    :func:`from_nnx`, :func:`from_equinox`).

    Raises:
      TypeError: ``model`` is none of these.
    """
    library = library_of(model)
    if library == "linen" and not isinstance(model, type):
        return from_linen(model)
    library = library if library in ("nnx", "equinox") else _built_by(model)
    if library == "nnx":
        return from_nnx(model)
    if library == "equinox":
        return from_equinox(model)
    raise TypeError(
        f"expected a model: a jnn.nn layer, a Flax linen module, an NNX module or constructor "
        f"f(rngs), or an Equinox module or constructor f(key); got {model!r}."
    )
