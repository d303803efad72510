"""One place where a model from another library becomes a jnn model: :func:`as_model`.

Every entry point that takes a model (``train.init/fit/evaluate``, ``ensemble.*``,
``sanity.run_all``, ``monitor.activation_stats``) calls :func:`as_model`. A jnn model (anything
with ``init`` and ``apply`` that is not a Flax linen ``Module``) passes through untouched; a
Flax linen module, a Flax NNX module or constructor, or an Equinox module (or constructor) is
wrapped by :mod:`jnn.interop` with its defaults. Flax and Equinox are recognised by the
modules their classes come from, so this file imports neither (``import jnn.train`` stays
light) and :mod:`jnn.interop` is imported only when a foreign model arrives.
"""

from __future__ import annotations

import functools
import importlib

__all__ = ["as_model", "library_of"]

_LIBRARIES = (
    ("flax.linen", "linen"),
    ("flax.nnx", "nnx"),
    ("equinox", "equinox"),
)


def _library_of_class(cls) -> str | None:
    for klass in getattr(cls, "__mro__", ()):
        module = getattr(klass, "__module__", "") or ""
        for prefix, library in _LIBRARIES:
            if module == prefix or module.startswith(prefix + "."):
                return library
    return None


def library_of(obj) -> str | None:
    """``"linen"``, ``"nnx"`` or ``"equinox"`` for a module (or class / ``functools.partial``
    of a module class) of that library; ``None`` otherwise."""
    if isinstance(obj, functools.partial):
        return library_of(obj.func)
    return _library_of_class(obj if isinstance(obj, type) else type(obj))


def _is_jnn_model(obj) -> bool:
    return callable(getattr(obj, "init", None)) and callable(getattr(obj, "apply", None))


def as_model(model):
    """``model`` as a jnn model (``init(key, input_shape)`` / ``apply(params, state, x, *,
    key, train)``): a jnn model unchanged, a foreign one through ``jnn.interop.wrap``.

    Raises:
      TypeError: ``model`` is neither (the message says what is accepted).
    """
    library = library_of(model)
    if library is None and _is_jnn_model(model):
        return model
    if library is None and not callable(model):
        raise TypeError(
            f"expected a model: a jnn.nn layer, a Flax linen/NNX module, an Equinox module or "
            f"a constructor of one; got {type(model).__name__}."
        )
    return importlib.import_module("jnn.interop").wrap(model)
