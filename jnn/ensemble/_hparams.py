"""Per-member hyperparameters: arrays with a member axis, never Python constants, so one
compiled step trains K members with K different values and a new set of values does not
recompile.

A hyperparameter goes where it acts:

- ``l1``, ``l2``: the objective's penalty coefficients (``jnn.train.Objective``);
- ``dropout``: the rate of every ``Dropout`` layer of the model (:func:`with_dropout`);
- ``input_noise``: the ``stddev`` of every ``GaussianNoise`` layer (:func:`with_input_noise`);
- anything else: the optimizer. Either ``optimizer`` is a *factory* (``jnn.optim.adam``,
  ``optax.sgd`` or your own ``lambda learning_rate, b1: ...``, e.g. a warm-up-cosine schedule
  with a per-member peak), built per member inside the vmapped step as
  ``optimizer(**values)``; or it is an ``inject_hyperparams`` transformation (jnn's or
  Optax's), whose ``state.hyperparams[name]`` is set per member at init and then carried in
  the optimizer state.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax

__all__ = [
    "MODEL_HYPERPARAMS",
    "OBJECTIVE_HYPERPARAMS",
    "as_hyperparams",
    "member_model",
    "member_optimizer",
    "set_injected",
    "with_dropout",
    "with_input_noise",
]

OBJECTIVE_HYPERPARAMS = ("l1", "l2")
MODEL_HYPERPARAMS = ("dropout", "input_noise")


def as_hyperparams(hyperparams, num_members: int | None = None) -> dict:
    """``{name: (K,) float32 array}`` from a dict of sequences/arrays, checked.

    Args:
      hyperparams: ``{"learning_rate": [1e-3, 1e-2], ...}`` or ``None``.
      num_members: the expected ``K`` (``None``: taken from the values).

    Returns:
      The dict (empty for ``None``).

    Raises:
      ValueError: values of different lengths, a length other than ``K``, non-finite values.
    """
    out = {}
    for name, values in (hyperparams or {}).items():
        array = np.asarray(values, dtype=np.float64)
        if array.ndim != 1 or array.size == 0:
            raise ValueError(
                f"hyperparameter {name!r} needs one value per member (a 1-D sequence), got "
                f"shape {array.shape}"
            )
        if not np.all(np.isfinite(array)):
            raise ValueError(f"hyperparameter {name!r} has non-finite values: {array.tolist()}")
        if num_members is None:
            num_members = array.size
        if array.size != num_members:
            raise ValueError(
                f"hyperparameter {name!r} has {array.size} values for {num_members} members"
            )
        out[name] = jnp.asarray(array, jnp.float32)
    return out


def split_hyperparams(hp: dict) -> tuple[dict, dict, dict]:
    """``(objective, model, optimizer)`` parts of one member's hyperparameters."""
    objective = {k: v for k, v in hp.items() if k in OBJECTIVE_HYPERPARAMS}
    model = {k: v for k, v in hp.items() if k in MODEL_HYPERPARAMS}
    rest = {k: v for k, v in hp.items() if k not in OBJECTIVE_HYPERPARAMS + MODEL_HYPERPARAMS}
    return objective, model, rest


def _with_field(model, layer_type, field: str, value):
    """``model`` with ``field`` of every ``layer_type`` layer (also inside nested ``Serial``)
    replaced by ``value``."""
    import jnn.nn as nn

    if isinstance(model, layer_type):
        return dataclasses.replace(model, **{field: value})
    if isinstance(model, nn.Serial):
        return nn.Serial(*(_with_field(layer, layer_type, field, value) for layer in model.layers))
    return model


def with_dropout(model, rate):
    """``model`` with the rate of every ``jnn.nn.Dropout`` (also inside nested ``Serial``)
    replaced by ``rate`` (a traced per-member value inside an ensemble)."""
    import jnn.nn as nn

    return _with_field(model, nn.Dropout, "rate", rate)


def with_input_noise(model, stddev):
    """``model`` with the ``stddev`` of every ``jnn.nn.GaussianNoise`` (also inside nested
    ``Serial``) replaced by ``stddev`` (a traced per-member value inside an ensemble)."""
    import jnn.nn as nn

    return _with_field(model, nn.GaussianNoise, "stddev", stddev)


_MODEL_SETTERS = {"dropout": with_dropout, "input_noise": with_input_noise}


def has_dropout(model) -> bool:
    """Whether ``model`` has a ``jnn.nn.Dropout`` layer (also inside nested ``Serial``)."""
    import jnn.nn as nn

    if isinstance(model, nn.Dropout):
        return True
    return isinstance(model, nn.Serial) and any(has_dropout(layer) for layer in model.layers)


def check_distinct_inits(model) -> None:
    """Refuses a model whose every key gives the same initialisation (a built NNX or
    Equinox module): an ensemble of it would be K copies.

    Raises:
      ValueError: naming the constructor to pass instead.
    """
    if getattr(model, "fixed_init", False):
        raise ValueError(
            f"an ensemble needs K different initialisations, but {model!r} is a built module "
            "(every key gives its one set of values): pass its constructor instead, "
            "f(rngs) -> nnx.Module for NNX (jnn.interop.from_nnx) or f(key) -> eqx.Module for "
            "Equinox (jnn.interop.from_equinox)."
        )


def check_model_hyperparams(model, hp: dict) -> None:
    """Refuses a swept ``dropout`` that the model would ignore (no ``jnn.nn.Dropout``
    layer: a foreign model's dropout rate is fixed in its own code).

    Raises:
      ValueError: the sweep and why it cannot act.
    """
    if "dropout" in hp and not has_dropout(model):
        raise ValueError(
            f"per-member hyperparameter 'dropout': {model!r} has no jnn.nn.Dropout layer whose "
            "rate could be set per member (a Flax/Equinox model's dropout rate is part of its "
            "code); the sweep would be ignored. Make the rate a constructor argument and train "
            "one ensemble per value, or drop the sweep."
        )


def check_objective_hyperparams(params, hp: dict) -> None:
    """Refuses a swept ``l1`` / ``l2`` on params without weight leaves (the penalty would
    be zero for every member; ``jnn._tree.is_weight`` names the weights).

    Raises:
      ValueError: the sweep and the leaves found.
    """
    from jnn import _tree

    swept = [name for name in OBJECTIVE_HYPERPARAMS if name in hp]
    if swept and not _tree.weight_leaves(params):
        names = list(_tree.named_leaves(params))
        raise ValueError(
            f"per-member hyperparameter {swept[0]!r}: the model has no weight leaves (leaves "
            f"named {' / '.join(_tree.WEIGHT_LEAVES)}; its leaves are {names[:8]}), so the "
            "penalty would be zero for every member and the sweep ignored."
        )


def member_model(model, hp: dict):
    """The model one member trains (its swept dropout rate and input noise substituted)."""
    _, model_hp, _ = split_hyperparams(hp)
    for name, value in model_hp.items():
        model = _MODEL_SETTERS[name](model, value)
    return model


def is_factory(optimizer) -> bool:
    """An optimizer factory (``jnn.optim.adam``, a lambda) rather than a transformation."""
    return callable(optimizer) and not isinstance(optimizer, optax.GradientTransformation)


def member_optimizer(optimizer, hp: dict):
    """The transformation one member uses: ``optimizer(**values)`` for a factory, else the
    transformation itself (``inject_hyperparams`` values are set by :func:`set_injected`)."""
    _, _, opt_hp = split_hyperparams(hp)
    if is_factory(optimizer):
        return optimizer(**opt_hp)
    return optimizer


def set_injected(optimizer, opt_state, hp: dict):
    """Writes per-member values into an ``inject_hyperparams`` state (no-op for a factory).

    Raises:
      ValueError: a hyperparameter the transformation does not expose.
    """
    _, _, opt_hp = split_hyperparams(hp)
    if not opt_hp or is_factory(optimizer):
        return opt_state
    for name, value in opt_hp.items():
        try:
            old = optax.tree_utils.tree_get(opt_state, name)
        except (KeyError, ValueError) as err:
            raise ValueError(
                f"per-member hyperparameter {name!r}: the optimizer is a fixed transformation "
                "without it; pass a factory (e.g. jnn.optim.adam) or wrap it in "
                "inject_hyperparams"
            ) from err
        if old is None:
            raise ValueError(f"per-member hyperparameter {name!r} is not in the optimizer state")
        opt_state = optax.tree_utils.tree_set(opt_state, **{name: jnp.asarray(value, old.dtype)})
    return opt_state


def num_members(hp: dict) -> int | None:
    for value in hp.values():
        return int(value.shape[0])
    return None


def member_values(hp: dict, k: int) -> dict:
    """Member ``k``'s hyperparameters as Python floats (for reports)."""
    return {name: float(jax.device_get(v[k])) for name, v in hp.items()}
