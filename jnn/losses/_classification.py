"""Classification losses on raw scores: softmax cross-entropy, the Weston-Watkins hinge and
the per-attribute logistic loss. Each returns one value per example, shape ``(batch,)``."""

import jax
import jax.numpy as jnp
import numpy as np

from jnn.losses._checks import check_labels, check_scores, host_values, label_scores, nan_if_invalid

__all__ = ["multiclass_hinge", "sigmoid_binary_cross_entropy", "softmax_cross_entropy"]


def softmax_cross_entropy(logits, labels):
    """Softmax cross-entropy with integer labels: ``-log softmax(logits)[y]``.

    ``L_i = log sum_j exp(s_j) - s_y``, with the log-sum-exp computed stably as
    ``m + log sum_j exp(s_j - m)``, ``m = max_j s_j``. At zero logits ``L_i = log C`` (the
    first-iteration sanity check). Same values as
    ``optax.softmax_cross_entropy_with_integer_labels``.

    Args:
      logits: ``(batch, C)`` raw scores (any leading shape ``(..., C)`` works).
      labels: integer class indices, shape ``(batch,)`` (``logits.shape[:-1]``).

    Returns:
      ``(batch,)`` losses in the dtype of ``logits``.
    """
    logits = check_scores("softmax_cross_entropy", logits)
    labels = check_labels("softmax_cross_entropy", logits, labels)
    return _softmax_ce(logits, labels)


# The numerics are jitted so an eager call compiles one fused kernel, not one per jnp op
# (under an outer jit they are simply inlined).
@jax.jit
def _softmax_ce(logits, labels):
    m = jax.lax.stop_gradient(jnp.max(logits, axis=-1, keepdims=True))
    m = jnp.where(jnp.isfinite(m), m, jnp.zeros_like(m))  # all -inf rows: avoid inf - inf
    lse = jnp.log(jnp.sum(jnp.exp(logits - m), axis=-1)) + m[..., 0]
    label_logit, _ = label_scores(logits, labels)
    return nan_if_invalid(lse - label_logit, labels, logits.shape[-1])


def multiclass_hinge(scores, labels, margin=1.0):
    """Weston–Watkins multiclass SVM loss (the notes' SVM loss).

    ``L_i = sum_{j != y} max(0, s_j - s_y + margin)``, so at zero scores
    ``L_i = (C - 1) * margin``. This is **not** ``optax.multiclass_hinge_loss``, which is the
    Crammer–Singer form ``max(0, max_{j != y} s_j + margin - s_y)`` (``margin`` at zero
    scores). The subgradient of ``max(0, .)`` at exactly 0 is taken as 0.

    Args:
      scores: ``(batch, C)`` raw scores.
      labels: integer class indices, shape ``(batch,)``.
      margin: the margin ``Delta`` (default 1).

    Returns:
      ``(batch,)`` losses in the dtype of ``scores``.
    """
    scores = check_scores("multiclass_hinge", scores)
    labels = check_labels("multiclass_hinge", scores, labels)
    return _hinge(scores, labels, margin)


@jax.jit
def _hinge(scores, labels, margin):
    correct, one_hot = label_scores(scores, labels)
    margins = scores - correct[..., None] + margin
    margins = jnp.where((margins > 0) & (one_hot == 0), margins, jnp.zeros_like(margins))
    return nan_if_invalid(jnp.sum(margins, axis=-1), labels, scores.shape[-1])


def sigmoid_binary_cross_entropy(logits, targets):
    """Attribute (multi-label) classification: one independent logistic loss per attribute,
    **summed** over attributes.

    ``L_i = sum_a [ -t_a log sigmoid(x_a) - (1 - t_a) log(1 - sigmoid(x_a)) ]``, computed as
    ``softplus(x) - t x`` (stable for large ``|x|``). At zero logits each attribute contributes
    ``log 2``, so ``L_i = A log 2`` for ``A`` attributes (divide by ``A`` for the per-attribute
    mean). Per attribute it equals ``optax.sigmoid_binary_cross_entropy``.

    Args:
      logits: ``(batch, A)`` raw scores, one per attribute.
      targets: ``(batch, A)`` in ``[0, 1]`` (bool, int or float; soft targets allowed), cast to
        the dtype of ``logits``.

    Returns:
      ``(batch,)`` losses in the dtype of ``logits``.
    """
    fn = "sigmoid_binary_cross_entropy"
    logits = check_scores(fn, logits)
    host = host_values(targets)
    targets_arr = jnp.asarray(targets)
    if targets_arr.shape != logits.shape:
        raise ValueError(
            f"{fn}: targets must have the shape of logits {logits.shape} (one 0/1 target per "
            f"attribute), got {targets_arr.shape}."
        )
    if host is not None and host.size:
        host = host.astype(np.float64)
        if host.min() < 0 or host.max() > 1:
            raise ValueError(
                f"{fn}: targets must lie in [0, 1], got values in [{host.min()}, {host.max()}]."
            )
    return _bce(logits, targets_arr)


@jax.jit
def _bce(logits, targets):
    per_attribute = jax.nn.softplus(logits) - targets.astype(logits.dtype) * logits
    return jnp.sum(per_attribute, axis=-1)
