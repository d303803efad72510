"""Weight initialisers, in the ``jax.nn.initializers`` convention.

Each function here is a factory: ``jnn.init.kaiming_normal()`` returns
``init(key, shape, dtype=jnp.float32) -> array``.

Fans follow the kernel layouts of :mod:`jnn.nn`: a Dense kernel ``(in, out)`` has
``fan_in = in`` and ``fan_out = out``; a Conv kernel ``(*window, in, out)`` has
``fan_in = in * prod(window)`` and ``fan_out = out * prod(window)`` (each output unit sees
``in * prod(window)`` inputs). A 1-D shape ``(n,)`` uses ``fan_in = fan_out = n``.

Why it matters (the notes): with ``w ~ N(0, 1)`` the variance of ``w^T x`` grows with the
number of inputs ``n``, so activations explode layer after layer; with a tiny fixed std they
vanish. Scaling by ``1/sqrt(n)`` (LeCun) keeps the variance for linear / tanh units, and by
``sqrt(2/n)`` (Kaiming/He) for ReLU units, which zero half of their inputs. A constant
initialisation makes every unit of a layer compute and learn the same thing (no symmetry
breaking): use it only for biases.

The normal initialisers draw from an untruncated normal (as the notes and PyTorch do);
``jax.nn.initializers`` truncates by default.
"""

import math

import jax
import jax.numpy as jnp

__all__ = [
    "constant",
    "fans",
    "kaiming_normal",
    "kaiming_uniform",
    "lecun_normal",
    "normal",
    "xavier_normal",
    "xavier_uniform",
]


def fans(shape) -> tuple[int, int]:
    """``(fan_in, fan_out)`` of a kernel of ``shape``.

    Args:
      shape: ``(n,)``, Dense ``(in, out)`` or Conv ``(*window, in, out)``.

    Returns:
      ``(fan_in, fan_out)`` as Python ints; the window size multiplies both for Conv kernels.
    """
    shape = tuple(int(d) for d in shape)
    if len(shape) == 0:
        raise ValueError("fan-based initialisers need a kernel shape of rank >= 1, got shape ().")
    if len(shape) == 1:
        return shape[0], shape[0]
    receptive_field = math.prod(shape[:-2])
    return shape[-2] * receptive_field, shape[-1] * receptive_field


def _check_dtype(dtype):
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(
            f"initialisers produce floating-point arrays; got dtype {jnp.dtype(dtype)}."
        )


def constant(value):
    """All entries equal to ``value`` (biases; never weights: no symmetry breaking).

    Args:
      value: the fill value (e.g. ``0.01`` for a small positive ReLU bias).
    """

    def init(key, shape, dtype=jnp.float32):
        del key
        _check_dtype(dtype)
        return jnp.full(shape, value, dtype)

    return init


def normal(stddev=1.0):
    """``w ~ N(0, stddev^2)``, independent of the fans.

    Args:
      stddev: standard deviation. ``normal(1.0)`` explodes deep ReLU nets, ``normal(0.01)``
        makes their activations vanish; see :func:`kaiming_normal`.
    """

    def init(key, shape, dtype=jnp.float32):
        _check_dtype(dtype)
        return stddev * jax.random.normal(key, shape, dtype)

    return init


def _scaled_normal(variance_fn):
    def init(key, shape, dtype=jnp.float32):
        _check_dtype(dtype)
        fan_in, fan_out = fans(shape)
        std = math.sqrt(variance_fn(fan_in, fan_out))
        return std * jax.random.normal(key, shape, dtype)

    return init


def _scaled_uniform(variance_fn):
    def init(key, shape, dtype=jnp.float32):
        _check_dtype(dtype)
        fan_in, fan_out = fans(shape)
        # U(-a, a) has variance a^2 / 3.
        bound = math.sqrt(3.0 * variance_fn(fan_in, fan_out))
        return jax.random.uniform(key, shape, dtype, minval=-bound, maxval=bound)

    return init


def lecun_normal():
    """``w ~ N(0, 1 / fan_in)``: the notes' "multiply by 1/sqrt(n)"; for tanh / SELU units."""
    return _scaled_normal(lambda fan_in, fan_out: 1.0 / fan_in)


def xavier_normal():
    """Glorot/Xavier: ``w ~ N(0, 2 / (fan_in + fan_out))``; for tanh / sigmoid units."""
    return _scaled_normal(lambda fan_in, fan_out: 2.0 / (fan_in + fan_out))


def xavier_uniform():
    """Glorot/Xavier: ``w ~ U(-a, a)``, ``a = sqrt(6 / (fan_in + fan_out))`` (variance
    ``2 / (fan_in + fan_out)``)."""
    return _scaled_uniform(lambda fan_in, fan_out: 2.0 / (fan_in + fan_out))


def kaiming_normal():
    """Kaiming/He: ``w ~ N(0, 2 / fan_in)``, the notes' ``sqrt(2/n)`` for ReLU networks.

    Keeps the activation variance of a deep ReLU net roughly constant from layer to layer.
    """
    return _scaled_normal(lambda fan_in, fan_out: 2.0 / fan_in)


def kaiming_uniform():
    """Kaiming/He: ``w ~ U(-a, a)``, ``a = sqrt(6 / fan_in)`` (variance ``2 / fan_in``)."""
    return _scaled_uniform(lambda fan_in, fan_out: 2.0 / fan_in)
