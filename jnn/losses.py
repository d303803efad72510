"""Per-example losses: every function returns one value per example, shape ``(batch,)``.

Average them yourself (``loss(...).mean()``) or hand them to :func:`jnn.train.make_step`.
Losses are applied to raw scores (the output layer has no activation). Outputs keep the
floating dtype of the scores (float64 in, float64 out).

Input checks. Dtype and shape checks always run (dtypes and shapes are static, so they also
work under ``jit``/``vmap``/``grad``). Value checks (labels within ``[0, C)``, targets within
``[0, 1]``) need concrete values: they run when the inputs are concrete arrays and are skipped
for tracers. Under ``jit``, an out-of-range integer label gives a **NaN** loss for that
example instead of an error (so a NaN monitor catches it; it never silently picks a class).
"""

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "accuracy",
    "l2_loss",
    "multiclass_hinge",
    "sigmoid_binary_cross_entropy",
    "softmax_cross_entropy",
]


def _host_values(x):
    """``x`` as a NumPy array when its values are known now, else ``None`` (a tracer)."""
    if isinstance(x, jax.core.Tracer):
        return None
    try:
        return np.asarray(x)
    except jax.errors.TracerArrayConversionError:
        return None


def _check_scores(fn, scores):
    scores = jnp.asarray(scores)
    if not jnp.issubdtype(scores.dtype, jnp.floating):
        raise TypeError(f"{fn}: expected floating-point scores/logits, got dtype {scores.dtype}.")
    if scores.ndim < 1:
        raise ValueError(f"{fn}: expected scores of shape (batch, classes), got shape ().")
    return scores


def _check_labels(fn, scores, labels):
    """Integer labels of shape ``scores.shape[:-1]``; range-checked when concrete."""
    host = _host_values(labels)
    labels_arr = jnp.asarray(labels)
    if not jnp.issubdtype(labels_arr.dtype, jnp.integer):
        raise TypeError(
            f"{fn}: expected integer class labels of shape {scores.shape[:-1]}, got dtype "
            f"{labels_arr.dtype} with shape {labels_arr.shape}. One-hot or float labels are not "
            "accepted: convert with labels.argmax(-1) or labels.astype(int)."
        )
    if labels_arr.shape != scores.shape[:-1]:
        raise ValueError(
            f"{fn}: labels must have shape {scores.shape[:-1]} (scores {scores.shape} without the "
            f"class axis), got {labels_arr.shape}."
        )
    num_classes = scores.shape[-1]
    if host is not None and host.size:
        low, high = int(host.min()), int(host.max())
        if low < 0 or high >= num_classes:
            raise ValueError(
                f"{fn}: labels must lie in [0, {num_classes}) for {num_classes} classes, got "
                f"values in [{low}, {high}]."
            )
    return labels_arr


def _nan_if_invalid(loss, labels, num_classes):
    valid = (labels >= 0) & (labels < num_classes)
    return jnp.where(valid, loss, jnp.full_like(loss, jnp.nan))


def _label_scores(scores, labels):
    # One-hot selection: an out-of-range label selects nothing; _nan_if_invalid then flags it.
    one_hot = jax.nn.one_hot(labels, scores.shape[-1], dtype=scores.dtype)
    return jnp.sum(scores * one_hot, axis=-1), one_hot


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
    logits = _check_scores("softmax_cross_entropy", logits)
    labels = _check_labels("softmax_cross_entropy", logits, labels)
    return _softmax_ce(logits, labels)


# The numerics are jitted so an eager call compiles one fused kernel, not one per jnp op
# (under an outer jit they are simply inlined).
@jax.jit
def _softmax_ce(logits, labels):
    m = jax.lax.stop_gradient(jnp.max(logits, axis=-1, keepdims=True))
    m = jnp.where(jnp.isfinite(m), m, jnp.zeros_like(m))  # all -inf rows: avoid inf - inf
    lse = jnp.log(jnp.sum(jnp.exp(logits - m), axis=-1)) + m[..., 0]
    label_logit, _ = _label_scores(logits, labels)
    return _nan_if_invalid(lse - label_logit, labels, logits.shape[-1])


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
    scores = _check_scores("multiclass_hinge", scores)
    labels = _check_labels("multiclass_hinge", scores, labels)
    return _hinge(scores, labels, margin)


@jax.jit
def _hinge(scores, labels, margin):
    correct, one_hot = _label_scores(scores, labels)
    margins = scores - correct[..., None] + margin
    margins = jnp.where((margins > 0) & (one_hot == 0), margins, jnp.zeros_like(margins))
    return _nan_if_invalid(jnp.sum(margins, axis=-1), labels, scores.shape[-1])


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
    logits = _check_scores(fn, logits)
    host = _host_values(targets)
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
    pred = _check_scores("l2_loss", pred)
    target = jnp.asarray(target)
    if target.shape != pred.shape:
        raise ValueError(f"l2_loss: target must have shape {pred.shape}, got {target.shape}.")
    return _l2(pred, target)


@jax.jit
def _l2(pred, target):
    diff = pred - target.astype(pred.dtype)
    return jnp.sum(jnp.square(diff), axis=tuple(range(1, pred.ndim)))


def accuracy(logits, labels):
    """Fraction of examples whose highest score is the label (ties: the first maximum).

    Args:
      logits: ``(batch, C)`` scores.
      labels: integer class indices, shape ``(batch,)``.

    Returns:
      A scalar in the dtype of ``logits``.
    """
    logits = _check_scores("accuracy", logits)
    labels = _check_labels("accuracy", logits, labels)
    return _accuracy(logits, labels)


@jax.jit
def _accuracy(logits, labels):
    predicted = jnp.argmax(logits, axis=-1).astype(labels.dtype)
    return jnp.mean((predicted == labels).astype(logits.dtype))
