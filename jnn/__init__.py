"""jnn — a JAX functional training toolkit.

Pure ``init`` / ``apply`` layers, Optax-exact optimizers and schedules, gradient
and sanity checks, babysitting monitors and vmapped ensembles. Everything is a
pure function over pytrees, so ``jax.jit``, ``jax.vmap`` and ``jax.grad`` compose
with it.

Submodules are imported lazily (``jnn.nn``, ``jnn.optim``, ...) so that
``import jnn`` and ``jnn --help`` do not pay for importing JAX.
"""

import importlib

__version__ = "0.1.0"

_SUBMODULES = (
    "activations",
    "cache",
    "cli",
    "data",
    "distributed",
    "ensemble",
    "gradcheck",
    "init",
    "interop",
    "losses",
    "metrics",
    "monitor",
    "nn",
    "optim",
    "plots",
    "preprocessing",
    "regularizers",
    "runs",
    "sanity",
    "schedules",
    "train",
)

__all__ = ["__version__", *_SUBMODULES]


def __getattr__(name):
    if name in _SUBMODULES:
        module = importlib.import_module(f"jnn.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module 'jnn' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
