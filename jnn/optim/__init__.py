"""Optimizers as Optax-exact gradient transformations.

Every factory returns an ``optax.GradientTransformationExtraArgs`` with the same
argument names, defaults, state field names and (in float32 / float64) the same
numbers as the Optax function of the same name, so ``import jnn.optim as optax``
style swaps work. They are built from the small transformations below
(``trace``, ``scale_by_rss``, ``scale_by_rms``, ``scale_by_stddev``,
``scale_by_adam``, ``add_decayed_weights``, ``scale_by_learning_rate``) glued
with ``optax.chain``.

Where Optax is fragile, jnn is not:

- Low-precision leaves (bfloat16, float16) are computed in float32 and cast back,
  so Adam on an all-zero float16 gradient gives 0, not NaN (``eps=1e-8``
  underflows to 0 in float16).
- Bias corrections ``1 - b**t`` are computed in float32 (float64 under x64)
  whatever the parameter dtype.
- :func:`inject_hyperparams` keeps floating hyperparameters in float32 by
  default, so ``b2=0.999`` is not rounded to ``1.0`` on bfloat16 params.
- Arguments are checked when the transformation is built: ``adam("0.1")``,
  ``sgd(None)``, ``adam(0.1, b1=float("nan"))`` or ``sgd(0.1, True)`` (a bool
  momentum) raise ``TypeError`` / ``ValueError`` naming the function, the argument
  and the value, instead of failing (or silently misbehaving) in ``update``.
  Only types and finiteness are checked, not ranges: Optax accepts a negative
  learning rate (gradient ascent), ``b1=0`` and the like, and so does jnn.
  Optax's ``learning_rate=None`` is accepted by ``scale_by_learning_rate`` only:
  in an alias it would silently turn descent into ascent. A callable is a schedule
  where a schedule is allowed (``learning_rate``, ``weight_decay``).
- JAX arrays and tracers are never checked, so optimizers can be built inside
  ``jax.vmap`` from per-member hyperparameters (a ``(K,)`` array of learning
  rates, momentums, ``b1``, weight decays): each member gets the numbers of an
  Optax run with its own Python values.

Step counts are int32 and saturate at ``2**31 - 1`` instead of overflowing.
"""

from jnn.optim._aliases import adagrad, adam, adamw, chain, nadam, nadamw, rmsprop, sgd
from jnn.optim._base import apply_updates, safe_increment
from jnn.optim._inject import inject_hyperparams
from jnn.optim._transforms import (
    AddDecayedWeightsState,
    ScaleByAdamState,
    ScaleByRmsState,
    ScaleByRmsWithCountState,
    ScaleByRssState,
    ScaleByRStdDevState,
    ScaleByRStdDevWithCountState,
    ScaleByScheduleState,
    TraceState,
    add_decayed_weights,
    scale,
    scale_by_adam,
    scale_by_learning_rate,
    scale_by_rms,
    scale_by_rss,
    scale_by_schedule,
    scale_by_stddev,
    trace,
)

__all__ = [
    "AddDecayedWeightsState",
    "ScaleByAdamState",
    "ScaleByRStdDevState",
    "ScaleByRStdDevWithCountState",
    "ScaleByRmsState",
    "ScaleByRmsWithCountState",
    "ScaleByRssState",
    "ScaleByScheduleState",
    "TraceState",
    "adagrad",
    "adam",
    "adamw",
    "add_decayed_weights",
    "apply_updates",
    "chain",
    "inject_hyperparams",
    "nadam",
    "nadamw",
    "rmsprop",
    "safe_increment",
    "scale",
    "scale_by_adam",
    "scale_by_learning_rate",
    "scale_by_rms",
    "scale_by_rss",
    "scale_by_schedule",
    "scale_by_stddev",
    "sgd",
    "trace",
]
