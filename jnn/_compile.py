"""One home for "compile a program that runs once faster": :func:`one_shot_jit`.

The initialisation, the test-set evaluation and the activation forward run once or a few
times per run, so their XLA compile time is most of their cost on a cold start. On CPU they
are compiled with XLA's backend (LLVM) at optimisation level 1 instead of its default 3:
measured 2.5-3x faster for the initialisers' threefry hashes (1.1 s -> 0.4 s for a 4-layer
CNN) and ~1.8x for a CNN's evaluation, with the same results bit for bit (tested for every
``jnn.init`` initialiser in float32 and float64, Flax and Equinox initialisers and an
evaluation: ``tests/test_compile.py``; level 0 would change the last bit of ~4% of the
weights) and the same run time for these programs. Training programs (steps, epochs) keep
XLA's default, where run time matters. A level given in ``XLA_FLAGS`` is the user's choice and
is left alone.
"""

from __future__ import annotations

import os

import jax

__all__ = ["ONE_SHOT_OPTIONS", "one_shot_jit"]

ONE_SHOT_OPTIONS = {"xla_backend_optimization_level": 1}


def one_shot_jit(fun, **jit_kwargs):
    """``jax.jit(fun, **jit_kwargs)`` compiled with :data:`ONE_SHOT_OPTIONS` on CPU (XLA's
    defaults on other backends, or when ``XLA_FLAGS`` sets the level), for programs that run
    once or a few times.

    Args:
      fun: the function to compile.
      **jit_kwargs: passed to ``jax.jit``.

    Returns:
      The jitted function.
    """
    chosen = "xla_backend_optimization_level" in os.environ.get("XLA_FLAGS", "")
    if jax.default_backend() == "cpu" and not chosen:
        jit_kwargs = {"compiler_options": ONE_SHOT_OPTIONS, **jit_kwargs}
    return jax.jit(fun, **jit_kwargs)
