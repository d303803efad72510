"""Training: ``TrainState``, a pure jitted ``step``, ``evaluate`` and ``fit``.

The pieces compose by hand (``init`` + ``make_step`` + your own loop) or through ``fit``,
which runs each epoch as one ``jax.lax.scan`` over device-resident data::

    state = jnn.train.init(model, optax.adam(1e-3), key, (128, 64))
    step = jnn.train.make_step(model, jnn.losses.softmax_cross_entropy, optax.adam(1e-3))
    state, metrics = step(state, (x, y), key)   # donates ``state``'s buffers

Randomness: the step folds the state's step counter into the key it is given
(``fold_in(key, state.step)``), so a loop may pass the same key every step and still get a
fresh dropout mask each time; ``fit`` derives epoch ``e``'s key as ``fold_in(key, e)``, which
makes a resumed run bitwise identical to an uninterrupted one.

Layout: ``_state`` (TrainState, init), ``_step`` (the objective and the step), ``_evaluate``,
``_epoch`` (one epoch as one program), ``_loop`` (the epoch loop every training mode shares:
checkpoints, resume, interrupts, early stopping), ``_checkpoints``, ``_fit``, ``_sharding``
(the mesh and the shardings of a run on many devices: ``fit(..., mesh=make_mesh(8))``).
"""

from jnn.train._averages import ema_params, params_ema, recompute_batch_stats
from jnn.train._checkpoints import CheckpointError
from jnn.train._evaluate import evaluate
from jnn.train._fit import FitResult, fit
from jnn.train._loop import Interrupted
from jnn.train._sharding import make_mesh
from jnn.train._sparse import (
    HEAD_UPDATES,
    LazyAdamState,
    SparseHeadOptState,
    init_sparse_head,
    make_sparse_head_step,
)
from jnn.train._state import TrainState, init
from jnn.train._step import Objective, make_step

__all__ = [
    "HEAD_UPDATES",
    "CheckpointError",
    "FitResult",
    "Interrupted",
    "LazyAdamState",
    "Objective",
    "SparseHeadOptState",
    "TrainState",
    "ema_params",
    "evaluate",
    "fit",
    "init",
    "init_sparse_head",
    "make_mesh",
    "make_sparse_head_step",
    "make_step",
    "params_ema",
    "recompute_batch_stats",
]
