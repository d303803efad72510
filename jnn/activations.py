"""Elementwise activation functions.

All functions are pure, keep the input's dtype and work under ``jit``/``vmap``/``grad``.
Advice from the notes, in short: use ReLU; if units die, try leaky ReLU or maxout; tanh as a
last resort; never sigmoid in hidden layers; GELU for transformers. The output layer takes no
activation (losses are applied to raw scores).
"""

import math

import jax
import jax.numpy as jnp

__all__ = ["elu", "gelu", "leaky_relu", "relu", "selu", "sigmoid", "swish", "tanh"]

# Klambauer et al. (2017), "Self-Normalizing Neural Networks".
SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946


def sigmoid(x):
    """Logistic sigmoid ``1 / (1 + exp(-x))``, in ``(0, 1)``.

    Not zero-centred (outputs are always positive, so the next layer's weight gradients all
    share one sign: zig-zag updates) and saturates at both ends (gradient ``s (1 - s)`` -> 0),
    which kills gradients in backprop. The notes: never use it in hidden layers.
    """
    return jax.nn.sigmoid(x)


def tanh(x):
    """Hyperbolic tangent ``(e^x - e^-x) / (e^x + e^-x) = 2 sigmoid(2x) - 1``, in ``(-1, 1)``.

    A zero-centred sigmoid, so always preferred to it; still saturates (gradient
    ``1 - tanh(x)^2`` -> 0 for large ``|x|``).
    """
    return jnp.tanh(x)


def relu(x):
    """Rectified linear unit ``max(0, x)``.

    No saturation for ``x > 0``, cheap, converges fast; not zero-centred. Units whose input is
    always negative get zero gradient forever ("dying ReLU"); a small positive bias at
    initialisation helps. At the kink ``x = 0`` the gradient is taken to be **0** (the
    subgradient used by ``jax.nn.relu``, PyTorch and TensorFlow), not 0.5 as
    ``jnp.maximum`` would give.
    """
    return jnp.where(x > 0, x, jnp.zeros_like(x))


def leaky_relu(x, alpha=0.01):
    """Leaky ReLU ``x`` if ``x > 0`` else ``alpha * x``.

    A small slope ``alpha`` for negative inputs keeps gradients alive (fixes dying ReLU) with
    the other benefits of ReLU. At ``x = 0`` the value is 0 and the gradient is ``alpha``.
    """
    return jnp.where(x > 0, x, alpha * x)


def elu(x, alpha=1.0):
    """Exponential linear unit ``x`` if ``x > 0`` else ``alpha * (exp(x) - 1)``.

    ReLU with outputs closer to zero mean (saturates smoothly to ``-alpha`` for negative
    inputs); costs an ``exp``. Continuous gradient at 0 when ``alpha = 1`` (the gradient at 0
    is ``alpha``, the left-hand limit).
    """
    # Clamp before expm1 so the unused branch cannot overflow to inf and poison the gradient.
    negative = alpha * jnp.expm1(jnp.where(x > 0, jnp.zeros_like(x), x))
    return jnp.where(x > 0, x, negative)


def selu(x):
    """Scaled ELU ``scale * elu(x, alpha)`` with ``alpha ~ 1.6733``, ``scale ~ 1.0507``.

    The constants make a unit-variance, zero-mean input keep zero mean and unit variance through
    a dense layer with LeCun-normal weights ("self-normalising"). Gradient at 0 is
    ``scale * alpha`` (left-hand limit).
    """
    return SELU_SCALE * elu(x, SELU_ALPHA)


def gelu(x, approximate=False):
    """Gaussian error linear unit ``x * Phi(x)``, ``Phi`` the standard normal CDF.

    Exact: ``0.5 x (1 + erf(x / sqrt(2)))``. With ``approximate=True`` the tanh form
    ``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))``. It is the expected value of
    multiplying ``x`` by a 0/1 gate that opens with probability ``Phi(x)``; the notes' choice
    for transformers. Smooth everywhere; gradient at 0 is 0.5.
    """
    if approximate:
        inner = math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)
        # 0.5 (1 + tanh(z)) == sigmoid(2 z), which keeps precision where tanh(z) ~ -1.
        return x * jax.nn.sigmoid(2.0 * inner)
    return 0.5 * x * (1.0 + jax.lax.erf(x / math.sqrt(2.0)))


def swish(x):
    """Swish / SiLU ``x * sigmoid(x)``.

    Smooth, non-monotonic, unbounded above; outperformed others on CIFAR-10 in the notes'
    account. Gradient at 0 is 0.5.
    """
    return x * jax.nn.sigmoid(x)
