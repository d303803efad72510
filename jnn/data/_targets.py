"""Targets beyond one class per example: attributes read off digit labels, and a regression
target discretised into quantile bins (the notes' "discretise before you regress")."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = [
    "DIGIT_ATTRIBUTES",
    "QuantileBins",
    "check_attributes",
    "digit_attributes",
    "fit_quantile_bins",
    "from_bins",
    "to_bins",
]

# name -> the digits that have the attribute.
DIGIT_ATTRIBUTES = {
    "even": (0, 2, 4, 6, 8),
    "five_or_more": (5, 6, 7, 8, 9),
    "prime": (2, 3, 5, 7),
    "closed_loop": (0, 4, 6, 8, 9),
}


def digit_attributes(labels) -> np.ndarray:
    """Four yes/no attributes of each digit: even, five or more, prime, has a closed loop.

    Args:
      labels: ``(N,)`` integer digits in ``[0, 10)``.

    Returns:
      ``(N, 4)`` int32 0/1, columns in the order of :data:`DIGIT_ATTRIBUTES`.

    Raises:
      ValueError: labels outside ``[0, 10)`` or not integers.
    """
    y = np.asarray(labels)
    if (
        y.ndim != 1
        or not np.issubdtype(y.dtype, np.integer)
        or (y.size and not (y.min() >= 0 and y.max() <= 9))
    ):
        raise ValueError(
            f"digit_attributes needs (N,) integer digits in [0, 10), got dtype {y.dtype}, "
            f"shape {y.shape}" + (f", values in [{y.min()}, {y.max()}]" if y.size else "")
        )
    columns = [np.isin(y, digits) for digits in DIGIT_ATTRIBUTES.values()]
    return np.stack(columns, axis=1).astype(np.int32)


def check_attributes(y, name: str = "labels") -> np.ndarray:
    """``y`` as ``(N, A)`` int32 0/1 attribute labels (a 1-D 0/1 array is one attribute).

    Raises:
      ValueError: values other than 0 and 1 (named with the first offender).
    """
    y = np.asarray(y)
    if y.ndim == 1:
        y = y[:, None]
    values = np.unique(y)
    if y.ndim != 2 or not np.isin(values, (0, 1)).all():
        bad = values[~np.isin(values, (0, 1))]
        raise ValueError(
            f"--task attributes needs 0/1 labels of shape (examples, attributes); {name} has "
            f"shape {y.shape} and values like {bad[:5].tolist()} that are not 0/1"
        )
    return y.astype(np.int32)


class QuantileBins(NamedTuple):
    """``K`` bins of a scalar target with (about) equally many training examples each.

    Attributes:
      edges: ``(K - 1,)`` inner edges, the ``k/K`` quantiles of the training targets.
      values: ``(K,)`` what a bin predicts: the median training target in it.
    """

    edges: np.ndarray
    values: np.ndarray


def fit_quantile_bins(y_train, k: int) -> QuantileBins:
    """Quantile bins of the training targets (``k >= 2``): bin ``b`` holds targets in
    ``[edges[b - 1], edges[b])``; each predicts its training median.

    Raises:
      ValueError: ``k < 2``, or more bins than distinct training targets.
    """
    y = np.asarray(y_train, np.float64).reshape(-1)
    if not isinstance(k, (int, np.integer)) or k < 2:
        raise ValueError(f"quantile bins need k >= 2, got {k!r} (one bin predicts a constant)")
    edges = np.quantile(y, np.arange(1, k) / k)
    if np.unique(edges).size < k - 1 or np.unique(y).size < k:
        raise ValueError(f"{k} quantile bins need {k} distinct targets with distinct quantiles")
    labels = np.searchsorted(edges, y, side="right")
    values = np.array([np.median(y[labels == b]) for b in range(k)])
    return QuantileBins(edges, values)


def to_bins(bins: QuantileBins, y) -> np.ndarray:
    """The bin of each target: ``(N,)`` int32 in ``[0, K)``."""
    flat = np.asarray(y, np.float64).reshape(len(y), -1)[:, 0]
    return np.searchsorted(bins.edges, flat, side="right").astype(np.int32)


def from_bins(bins: QuantileBins, labels) -> np.ndarray:
    """The target each predicted bin stands for (its training median): ``(N,)`` float."""
    return np.asarray(bins.values)[np.asarray(labels)]
