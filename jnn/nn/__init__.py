"""Layers with pure ``init`` / ``apply``, and the ``Serial`` combinator.

Every layer is a frozen dataclass holding only hyper-parameters, with two pure methods::

    params, state = layer.init(key, input_shape, dtype=jnp.float32)  # input_shape has the batch dim
    y, state = layer.apply(params, state, x, *, key=None, train=False)

Data is channels-last: Dense maps the last axis (kernel ``(in, out)``, ``y = x @ w + b``); Conv
takes ``(batch, *spatial, channels)`` (kernel ``(*window, in, out)``). Layers compute in the dtype
of their inputs and params; ``init(..., dtype=jnp.float64)`` (under ``jax.enable_x64``) gives a
float64 network, ``dtype=jnp.bfloat16`` a bf16 one (normalisation statistics are accumulated in
float32). Keys may be typed (``jax.random.key``) or raw (``jax.random.PRNGKey``).

Bad hyper-parameters raise at construction (``Dense(0)``: ``ValueError`` naming the argument
and value; ``Dense(2.5)``: ``TypeError``). Shape errors, including a window that does not fit
its input, are raised from static shapes, so they also fire under ``jit``.

``Serial(*layers)`` keys params and state by ``f"{type(layer).__name__.lower()}_{i}"``, so tree
paths read ``dense_0/w``, ``batchnorm_1/scale``. :func:`output_shape` gives a layer's output
shape and :func:`summary` a per-layer table, both through ``jax.eval_shape`` (allocation-free).

One private file per layer family; a new family imports its base class and shape checks from
``jnn.nn._base``.
"""

from jnn.nn._base import Layer, output_shape
from jnn.nn._combinators import Serial, layer_names
from jnn.nn._conv import Conv, default_lowering
from jnn.nn._dense import Dense, Maxout
from jnn.nn._dropout import Dropout
from jnn.nn._elementwise import Elu, Flatten, Gelu, LeakyRelu, Relu, Selu, Sigmoid, Swish, Tanh
from jnn.nn._hsoftmax import HierarchicalSoftmax
from jnn.nn._noise import GaussianNoise
from jnn.nn._norm import BatchNorm, InstanceNorm, LayerNorm
from jnn.nn._pool import AvgPool, MaxPool
from jnn.nn._summary import count_params, summary

__all__ = [
    "AvgPool",
    "BatchNorm",
    "Conv",
    "Dense",
    "Dropout",
    "Elu",
    "Flatten",
    "GaussianNoise",
    "Gelu",
    "HierarchicalSoftmax",
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
    "output_shape",
    "summary",
]
