"""Model ensembles as ``jax.vmap``: K members trained by one compiled step.

An ensemble state is a :class:`jnn.train.TrainState` whose every leaf has a leading member
axis ``K``. Members differ by their init key (and dropout keys); by default they see the same
minibatches::

    keys = jax.random.split(key, 5)
    ens = jnn.ensemble.init(model, opt, keys, (128, 64))
    step = jnn.ensemble.make_step(model, loss, opt)
    ens, metrics = step(ens, (x, y), key)          # metrics have a leading K axis
    probs = jnn.ensemble.predict(model, ens, x_test)  # mean of the members' softmax
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jnn import train as _train

__all__ = ["init", "make_step", "member", "predict"]


def init(model, optimizer, keys, input_shape, dtype=None) -> _train.TrainState:
    """``jax.vmap`` of :func:`jnn.train.init` over ``keys`` (shape ``(K,)``).

    Returns:
      A ``TrainState`` whose leaves have a leading member axis of size ``K``.
    """
    keys = jnp.asarray(keys)
    if keys.ndim != 1:
        raise ValueError(f"keys must be a 1-D array of K PRNG keys, got shape {keys.shape}.")
    return jax.vmap(lambda k: _train.init(model, optimizer, k, input_shape, dtype))(keys)


def member_keys(key, num_members: int):
    """The per-member keys a step uses: ``jax.random.split(key, K)``."""
    return jax.random.split(key, num_members)


def make_step(
    model, loss, optimizer, *, per_member_batch: bool = False, donate=True, jit=True, **options
):
    """The training step of :func:`jnn.train.make_step`, vmapped over ensemble members.

    Member ``k`` is given the key ``jax.random.split(key, K)[k]``, so one ensemble step equals
    ``K`` separate ``jnn.train`` steps called with those keys.

    Args:
      model, loss, optimizer: as for :func:`jnn.train.make_step`.
      per_member_batch: ``False``: every member trains on the same ``batch = (x, y)``;
        ``True``: ``x`` and ``y`` carry a leading member axis (e.g. bootstrap samples).
      donate, jit: as for :func:`jnn.train.make_step` (the vmapped function is jitted).
      **options: ``l1``, ``l2``, ``max_norm``, ``clip_norm``, ``monitor``.

    Returns:
      ``step(ensemble_state, batch, key) -> (ensemble_state, metrics)``, metrics with a leading
      member axis.
    """
    inner = _train.make_step(model, loss, optimizer, jit=False, **options)
    batched = jax.vmap(inner, in_axes=(0, 0 if per_member_batch else None, 0))

    def step(state, batch, key):
        k = jax.tree.leaves(state)[0].shape[0]
        return batched(state, batch, member_keys(key, k))

    if not jit:
        return step
    return jax.jit(step, donate_argnums=0 if donate else ())


def member(state, k: int):
    """Member ``k`` of an ensemble state, as an ordinary ``TrainState``."""
    return jax.tree.map(lambda a: a[k], state)


def predict(model, ensemble_state, x):
    """Mean of the members' class probabilities ``(1/K) sum_k softmax(f_k(x))``.

    Members run in inference mode (``train=False``).

    Args:
      model: the shared architecture.
      ensemble_state: a ``TrainState`` with a leading member axis (or any object with
        ``params`` and ``model_state`` so stacked).
      x: inputs ``(N, ...)``.

    Returns:
      ``(N, C)`` probabilities; ``argmax(-1)`` is the ensemble's prediction.
    """
    return _predict(model, ensemble_state.params, ensemble_state.model_state, jnp.asarray(x))


def _predict_impl(model, params, model_state, x):
    def one(p, s):
        logits, _ = model.apply(p, s, x, train=False)
        return jax.nn.softmax(logits, axis=-1)

    return jnp.mean(jax.vmap(one)(params, model_state), axis=0)


def _predict(model, params, model_state, x):
    try:
        hash(model)
    except TypeError:  # an unhashable model cannot be a static argument: trace afresh
        return jax.jit(lambda p, s, xx: _predict_impl(model, p, s, xx))(params, model_state, x)
    return _jit_predict(model, params, model_state, x)


_jit_predict = jax.jit(_predict_impl, static_argnums=0)
