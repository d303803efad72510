"""What a model's outputs predict: top-1 hits, accuracy and log-probabilities.

These are the single homes the training loop, the evaluator, ensembles and calibration call,
for both kinds of outputs: class scores ``(batch, C)`` (logits) and the hierarchical head's
:class:`jnn.losses.HierarchicalOutput`.
"""

import jax
import jax.numpy as jnp

from jnn.losses._checks import check_labels, check_scores
from jnn.losses._hierarchical import HierarchicalOutput, head_hits, head_log_probs

__all__ = ["accuracy", "log_probabilities", "top1_correct"]


def _per_class(outputs, labels) -> bool:
    """Integer labels and outputs with one more (class) axis: top-1 accuracy is defined."""
    return jnp.issubdtype(labels.dtype, jnp.integer) and len(outputs.shape) == labels.ndim + 1


def top1_correct(outputs, labels):
    """Per-example top-1 hit: ``1.0`` where the prediction is the label, else ``0.0``.

    The prediction is ``argmax_c outputs[i, c]`` (ties: the first maximum) for class scores,
    and the greedy descent of :func:`jnn.losses.hierarchical_predict` for a
    :class:`~jnn.losses.HierarchicalOutput`, scored without descending: the descent reaches
    the label exactly when every decision on the label's path goes its way
    (:func:`jnn.losses.hierarchical_path_correct`, ``O(D d)``, no class scores). For the
    exact argmax of the head use ``top1_correct(log_probabilities(outputs), labels)``. When
    top-1 accuracy is undefined (labels that are not integers, e.g. regression or multi-label
    targets, or outputs without a class axis) every entry is NaN.

    Args:
      outputs: ``(batch, C)`` scores or probabilities, or a ``HierarchicalOutput``.
      labels: integer class indices, shape ``(batch,)``.

    Returns:
      ``(batch,)`` float32 (NaN entries when accuracy is undefined). A concrete out-of-range
      label raises ``ValueError``; under ``jit`` it is simply never hit.
    """
    labels = jnp.asarray(labels)
    if not isinstance(outputs, HierarchicalOutput):
        outputs = jnp.asarray(outputs)
    if not _per_class(outputs, labels):
        return jnp.full(labels.shape[:1], jnp.nan, jnp.float32)
    labels = check_labels("top1_correct", jax.ShapeDtypeStruct(outputs.shape, jnp.float32), labels)
    if isinstance(outputs, HierarchicalOutput):
        return head_hits(outputs, labels)
    predicted = jnp.argmax(outputs, axis=-1).astype(labels.dtype)
    return (predicted == labels).astype(jnp.float32)


def accuracy(outputs, labels):
    """Top-1 accuracy: the mean of :func:`top1_correct` (the same prediction rule).

    Args:
      outputs: ``(batch, C)`` scores or probabilities, or a ``HierarchicalOutput`` (greedy
        descent; see :func:`top1_correct`).
      labels: integer class indices, shape ``(batch,)``.

    Returns:
      A float32 scalar; NaN when the labels are not integer class ids or the outputs have no
      class axis.
    """
    return jnp.mean(top1_correct(outputs, labels))


def log_probabilities(outputs):
    """``(batch, C)`` log-probabilities of every class, for ensembles and calibration.

    Class scores: ``log_softmax(outputs)``. A :class:`~jnn.losses.HierarchicalOutput`: the
    tree's ``log p(c) = sum_d log sigmoid(s_{c,d} (w[n_{c,d}] . h + b[n_{c,d}]))`` for all
    ``C`` classes, ``O(C d)`` per example (every node's logit); rows sum to 1 in
    probability. ``exp`` of either gives probabilities to average over ensemble members.

    Args:
      outputs: ``(batch, C)`` floating scores, or a ``HierarchicalOutput``.

    Returns:
      ``(batch, C)`` log-probabilities in the floating dtype of the outputs.
    """
    if isinstance(outputs, HierarchicalOutput):
        return head_log_probs(outputs)
    return jax.nn.log_softmax(check_scores("log_probabilities", outputs), axis=-1)
