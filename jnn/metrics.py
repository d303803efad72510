"""Evaluation metrics on class probabilities: likelihood, Brier score, calibration, disagreement.

For judging ensembles (Lakshminarayanan et al. 2017, "Simple and Scalable Predictive Uncertainty
Estimation using Deep Ensembles") and calibration (Guo et al. 2017, the expected calibration
error). Every function takes class probabilities ``probs`` of shape ``(N, C)`` (rows sum to 1,
e.g. ``jax.nn.softmax(logits)`` or the mean of an ensemble's members' probabilities) and integer
``labels`` of shape ``(N,)``, and is pure and jittable (``bins`` is static).

Top-1 accuracy is :func:`jnn.losses.accuracy` (re-exported here as ``accuracy``): the same rule
-- the highest probability is the prediction, ties to the first -- decides "correct" in the
calibration bins.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jnn.losses import accuracy

__all__ = [
    "CalibrationBins",
    "accuracy",
    "brier_score",
    "calibration_bins",
    "disagreement",
    "expected_calibration_error",
    "negative_log_likelihood",
]


class CalibrationBins(NamedTuple):
    """Per-bin statistics of :func:`calibration_bins` (each field has one entry per bin).

    Attributes:
      edges: ``(bins + 1,)`` bin edges ``0, 1/bins, ..., 1``; bin ``b`` is ``(edges[b],
        edges[b + 1]]``.
      count: ``(bins,)`` int32, examples whose confidence falls in the bin.
      confidence: ``(bins,)`` mean confidence (max probability) of those examples (0 if empty).
      accuracy: ``(bins,)`` fraction of them predicted correctly (0 if empty).
    """

    edges: jax.Array
    count: jax.Array
    confidence: jax.Array
    accuracy: jax.Array


def _check_probs(fn, probs, labels):
    probs, labels = jnp.asarray(probs), jnp.asarray(labels)
    if probs.ndim != 2 or not jnp.issubdtype(probs.dtype, jnp.floating):
        raise ValueError(
            f"{fn}: probs must be floating class probabilities of shape (N, C), got dtype "
            f"{probs.dtype} and shape {probs.shape}."
        )
    if labels.shape != probs.shape[:1] or not jnp.issubdtype(labels.dtype, jnp.integer):
        raise ValueError(
            f"{fn}: labels must be integer class indices of shape {probs.shape[:1]}, got dtype "
            f"{labels.dtype} and shape {labels.shape}."
        )
    return probs, labels


def negative_log_likelihood(probs, labels, eps: float = 1e-12):
    """Mean negative log-likelihood of the labels: ``mean_n -log max(p[n, y_n], eps)``.

    Args:
      probs: ``(N, C)`` class probabilities.
      labels: ``(N,)`` integer labels.
      eps: floor of the probability, so a confident wrong prediction costs ``-log eps``
        (27.6 for the default) instead of ``inf``.

    Returns:
      A scalar in the dtype of ``probs``.
    """
    probs, labels = _check_probs("negative_log_likelihood", probs, labels)
    p_label = jnp.take_along_axis(probs, labels[:, None], axis=1)[:, 0]
    return jnp.mean(-jnp.log(jnp.clip(p_label, eps, 1.0)))


def brier_score(probs, labels):
    """Brier score: ``mean_n sum_c (p[n, c] - onehot(y_n)[c])^2`` (0 perfect, 2 worst).

    Args:
      probs: ``(N, C)`` class probabilities.
      labels: ``(N,)`` integer labels.

    Returns:
      A scalar in the dtype of ``probs``.
    """
    probs, labels = _check_probs("brier_score", probs, labels)
    onehot = jax.nn.one_hot(labels, probs.shape[1], dtype=probs.dtype)
    return jnp.mean(jnp.sum(jnp.square(probs - onehot), axis=1))


def _correct(probs, labels):
    """1 where ``argmax_c p[n, c] == y_n``: :func:`jnn.losses.accuracy` of each example."""
    return jax.vmap(lambda p, y: accuracy(p[None, :], y[None]))(probs, labels)


def calibration_bins(probs, labels, bins: int = 15) -> CalibrationBins:
    """Reliability statistics over ``bins`` equal-width confidence bins.

    The confidence of an example is its highest probability, and it counts as correct when
    that class is the label. Bin ``b`` holds the confidences in ``(b / bins, (b + 1) / bins]``
    (the standard ECE binning; a confidence is never 0 since it is at least ``1 / C``).

    Args:
      probs: ``(N, C)`` class probabilities.
      labels: ``(N,)`` integer labels.
      bins: number of bins (static under ``jit``).

    Returns:
      :class:`CalibrationBins` ``(edges, count, confidence, accuracy)``.
    """
    probs, labels = _check_probs("calibration_bins", probs, labels)
    if not isinstance(bins, int) or bins < 1:
        raise ValueError(f"calibration_bins: bins must be a positive integer, got {bins!r}.")
    confidence = jnp.max(probs, axis=1)
    correct = _correct(probs, labels)
    edges = jnp.linspace(0.0, 1.0, bins + 1, dtype=probs.dtype)
    # index b such that edges[b] < confidence <= edges[b + 1]
    index = jnp.searchsorted(edges[1:-1], confidence, side="left")
    count = jax.ops.segment_sum(jnp.ones_like(index), index, num_segments=bins)
    conf_sum = jax.ops.segment_sum(confidence, index, num_segments=bins)
    correct_sum = jax.ops.segment_sum(correct, index, num_segments=bins)
    safe = jnp.maximum(count, 1).astype(probs.dtype)
    return CalibrationBins(
        edges=edges,
        count=count.astype(jnp.int32),
        confidence=conf_sum / safe,
        accuracy=correct_sum / safe,
    )


def expected_calibration_error(probs, labels, bins: int = 15):
    """Expected calibration error: ``sum_b (n_b / N) |accuracy_b - confidence_b|``.

    Over the bins of :func:`calibration_bins`; 0 for a calibrated model (in every bin the
    accuracy equals the mean confidence).

    Args:
      probs: ``(N, C)`` class probabilities.
      labels: ``(N,)`` integer labels.
      bins: number of equal-width confidence bins (static under ``jit``).

    Returns:
      A scalar in the dtype of ``probs``.
    """
    stats = calibration_bins(probs, labels, bins)
    weight = stats.count.astype(stats.confidence.dtype) / probs.shape[0]
    return jnp.sum(weight * jnp.abs(stats.accuracy - stats.confidence))


def disagreement(member_probs):
    """How often ensemble members disagree on the predicted class.

    The mean over examples of the fraction of member pairs ``(i, j)``, ``i < j``, whose
    predictions (argmax classes) differ::

        mean_n  2 / (K (K - 1))  sum_{i < j}  [argmax_c p_i[n, c] != argmax_c p_j[n, c]]

    0 when all members predict the same class for every example; 1 when every pair differs.

    Args:
      member_probs: ``(K, N, C)`` class probabilities of ``K >= 2`` members.

    Returns:
      A scalar in the dtype of ``member_probs``.
    """
    member_probs = jnp.asarray(member_probs)
    if member_probs.ndim != 3 or member_probs.shape[0] < 2:
        raise ValueError(
            "disagreement: member_probs must have shape (members >= 2, N, C), got shape "
            f"{member_probs.shape}."
        )
    members = member_probs.shape[0]
    predicted = jnp.argmax(member_probs, axis=2)  # (K, N)
    differ = predicted[:, None, :] != predicted[None, :, :]  # (K, K, N), symmetric, 0 diagonal
    pairs = members * (members - 1)  # ordered pairs: each unordered pair counted twice
    per_example = jnp.sum(differ, axis=(0, 1)).astype(member_probs.dtype) / pairs
    return jnp.mean(per_example)
