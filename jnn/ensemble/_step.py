"""``ensemble.make_step``: the training step of ``jnn.train.make_step``, vmapped over members,
with per-member hyperparameters passed as arrays (a new set of values does not recompile)."""

from __future__ import annotations

import jax

from jnn import _memo
from jnn import train as _train
from jnn._foreign import as_model
from jnn._keys import as_key
from jnn.ensemble import _hparams
from jnn.ensemble._members import map_members, num_members_of
from jnn.train import _sharding

__all__ = ["make_step", "member_keys", "member_step"]


def member_keys(key, num_members: int):
    """The per-member keys a step uses: ``jax.random.split(key, K)``."""
    return jax.random.split(as_key(key), num_members)


def member_step(model, loss, optimizer, hp: dict, options: dict):
    """One member's plain step (``jit=False``) with its hyperparameters substituted."""
    objective_hp, _, _ = _hparams.split_hyperparams(hp)
    return _train.make_step(
        _hparams.member_model(model, hp),
        loss,
        _hparams.member_optimizer(optimizer, hp),
        jit=False,
        **{**options, **objective_hp},
    )


def _mapped(model, loss, optimizer, options, per_member_batch, member_chunk):
    """``(state, batch, keys, hp) -> (state, metrics)`` over members."""
    options = dict(options)
    return map_members(
        lambda s, b, k, hp: member_step(model, loss, optimizer, hp, options)(s, b, k),
        (0, 0 if per_member_batch else None, 0, 0),
        member_chunk,
    )


def _keyed(mapped):
    """``(state, batch, key, hp) -> (state, metrics)``: the member keys are split inside the
    (compiled) step, so a call dispatches one program and nothing else."""
    return lambda state, batch, key, hp: mapped(
        state, batch, member_keys(key, num_members_of(state)), hp
    )


@_memo.cached
def _core(model, loss, optimizer, options, per_member_batch, member_chunk, donate, layout=None):
    mapped = _keyed(_mapped(model, loss, optimizer, options, per_member_batch, member_chunk))

    if layout is not None:  # pinned outside the vmap, on the stacked arrays
        mapped = _sharding.constrained(mapped, layout)
    jitted = jax.jit(mapped, donate_argnums=0 if donate else ())
    return jitted if layout is None else _sharding.placed(jitted, layout)


def make_step(
    model,
    loss,
    optimizer,
    *,
    hyperparams=None,
    per_member_batch: bool = False,
    member_chunk: int | None = None,
    donate: bool = True,
    jit: bool = True,
    monitor: bool | int = False,
    mesh=None,
    fsdp: bool = False,
    **options,
):
    """The training step of :func:`jnn.train.make_step`, vmapped over ensemble members.

    Member ``k`` is given the key ``jax.random.split(key, K)[k]`` and its own hyperparameter
    values, so one ensemble step equals ``K`` separate ``jnn.train`` steps called with those
    keys and values.

    Args:
      model, loss: as for :func:`jnn.train.make_step`.
      optimizer: a transformation, or a factory of one (per-member optimizer values).
      hyperparams: ``{name: K values}`` per member: ``learning_rate``, ``b1``, ``momentum``,
        ``weight_decay``... (the optimizer's), ``l1``/``l2`` and ``dropout``. Passed to the
        compiled step as arrays, so other values reuse it.
      per_member_batch: ``False``: every member trains on the same ``batch = (x, y)``;
        ``True``: ``x`` and ``y`` carry a leading member axis (e.g. bootstrap samples).
      member_chunk: train this many members at a time (``lax.map``) instead of all at once.
      donate, jit: as for :func:`jnn.train.make_step`.
      monitor: per-layer metrics (default off: inside ``vmap`` a ``lax.cond`` would compute
        them every step anyway).
      mesh: ``None``, an int ``N`` or a ``jax.sharding.Mesh`` with axes ``"ensemble"``
        and/or ``"data"``: members split over ``"ensemble"`` (``K`` must divide by it), the
        batch over ``"data"``, as for :func:`jnn.train.make_step`.
      fsdp: also split each member's params / optimizer state on the data axis.
      **options: ``l1``, ``l2``, ``max_norm``, ``clip_norm`` shared by all members.

    Returns:
      ``step(ensemble_state, batch, key) -> (ensemble_state, metrics)``, metrics with a
      leading member axis.
    """
    model = as_model(model)
    hp = _hparams.as_hyperparams(hyperparams)
    _hparams.check_model_hyperparams(model, hp)
    opts = tuple(sorted({**options, "monitor": monitor}.items()))
    ingredients = (model, loss, optimizer, opts, per_member_batch, member_chunk)
    layout = _sharding.as_layout(mesh, fsdp=fsdp, members=True, per_member_batch=per_member_batch)
    placed = () if layout is None else (layout,)  # one device: the key it always had
    if jit:
        core = _core(*ingredients, donate, *placed)
    else:
        core = _keyed(_mapped(*ingredients))

        core = core if layout is None else _sharding.constrained(core, layout)

    def step(state, batch, key):
        k = num_members_of(state)
        if hp and _hparams.num_members(hp) != k:
            raise ValueError(f"hyperparams hold {_hparams.num_members(hp)} members, state {k}")
        return core(state, batch, key, hp)

    return step
