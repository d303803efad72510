"""Input checks shared by the losses (one home for "what a valid score / label array is")."""

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["check_labels", "check_scores", "host_values", "label_scores", "nan_if_invalid"]


def host_values(x):
    """``x`` as a NumPy array when its values are known now, else ``None`` (a tracer)."""
    if isinstance(x, jax.core.Tracer):
        return None
    try:
        return np.asarray(x)
    except jax.errors.TracerArrayConversionError:
        return None


def check_scores(fn, scores):
    """Floating scores of rank >= 1, as a JAX array; ``TypeError``/``ValueError`` naming ``fn``."""
    scores = jnp.asarray(scores)
    if not jnp.issubdtype(scores.dtype, jnp.floating):
        raise TypeError(f"{fn}: expected floating-point scores/logits, got dtype {scores.dtype}.")
    if scores.ndim < 1:
        raise ValueError(f"{fn}: expected scores of shape (batch, classes), got shape ().")
    return scores


def check_labels(fn, scores, labels):
    """Integer labels of shape ``scores.shape[:-1]``; range-checked when concrete.

    ``scores`` may be anything with ``shape`` (an array or a ``jax.ShapeDtypeStruct``); its
    last axis is the number of classes.
    """
    host = host_values(labels)
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


def nan_if_invalid(loss, labels, num_classes):
    """``loss`` with NaN where the label is outside ``[0, num_classes)`` (only under ``jit``)."""
    valid = (labels >= 0) & (labels < num_classes)
    return jnp.where(valid, loss, jnp.full_like(loss, jnp.nan))


def label_scores(scores, labels):
    """``(scores[..., y], one_hot(y))``; an out-of-range label selects nothing (0)."""
    one_hot = jax.nn.one_hot(labels, scores.shape[-1], dtype=scores.dtype)
    return jnp.sum(scores * one_hot, axis=-1), one_hot
