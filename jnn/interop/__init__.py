"""Your own model: Flax linen, Flax NNX and Equinox models as jnn models.

Each adapter returns a model with jnn's pure ``init(key, input_shape)`` / ``apply(params,
state, x, *, key=None, train=False)``, so ``train.fit``, ensembles, checkpoints, sanity
checks, monitors and ``jnn train --model`` work for it::

    model = jnn.interop.from_linen(MyLinenCNN())          # or from_nnx(lambda rngs: Net(rngs=rngs))
    result = jnn.train.fit(model, jnn.losses.softmax_cross_entropy, optax.adam(1e-3),
                           (x, y), epochs=5, batch_size=64, key=jax.random.key(0))

``params`` are the trainable arrays under the library's own names (linen ``Conv_0/kernel``,
NNX ``linear1/kernel``, Equinox ``layers/0/weight``); ``model_state`` is the rest. A module
passed straight to the training functions is wrapped with the defaults (:func:`wrap`).

Layout: ``_linen``, ``_nnx``, ``_equinox`` (one adapter each), ``_names`` (nested dicts from
the libraries' paths), ``_wrap`` (the defaults). Flax and Equinox are imported when an
adapter is used, not by ``import jnn.interop``.
"""

from jnn._foreign import as_model
from jnn.interop._equinox import EquinoxModel, from_equinox
from jnn.interop._linen import LinenModel, from_linen
from jnn.interop._nnx import NnxModel, from_nnx
from jnn.interop._wrap import wrap

__all__ = [
    "EquinoxModel",
    "LinenModel",
    "NnxModel",
    "as_model",
    "from_equinox",
    "from_linen",
    "from_nnx",
    "wrap",
]
