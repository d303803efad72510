"""Regression loss: the squared L2 error per example."""

import jax
import jax.numpy as jnp

from jnn.losses._checks import check_scores

__all__ = ["l2_loss"]


def l2_loss(pred, target):
    """Regression loss: squared L2 norm of the error, ``L_i = ||pred_i - target_i||^2``.

    The sum of squares over all trailing (non-batch) axes, with **no** 0.5 factor (the notes'
    "L2 norm between predicted and actual", squared so it is smooth; ``optax.l2_loss`` is
    ``0.5 * (pred - target)^2`` elementwise, ``optax.squared_error`` matches this per
    element). The gradient grows with the error, which is what makes regression fragile: the
    notes advise discretising into classes where possible.

    Args:
      pred: ``(batch, ...)`` predictions (floating).
      target: same shape; cast to the dtype of ``pred``.

    Returns:
      ``(batch,)`` losses in the dtype of ``pred``.
    """
    pred = check_scores("l2_loss", pred)
    target = jnp.asarray(target)
    if target.shape != pred.shape:
        raise ValueError(f"l2_loss: target must have shape {pred.shape}, got {target.shape}.")
    return _l2(pred, target)


@jax.jit
def _l2(pred, target):
    diff = pred - target.astype(pred.dtype)
    return jnp.sum(jnp.square(diff), axis=tuple(range(1, pred.ndim)))
