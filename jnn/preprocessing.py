"""Data preprocessing, fitted on the training set only and applied to train/val/test.

The notes: compute the statistics (mean, std, principal components) on the *training* data,
then apply the same transform to validation and test data; never fit on them. Each
preprocessing step is a ``fit_*`` function returning a NamedTuple of statistics (a pytree)
and a pure, jittable transform ``f(stats, x)``::

    stats = fit_standardize(x_train)
    x_train, x_test = standardize(stats, x_train), standardize(stats, x_test)

Examples are along axis 0. Transforms cast ``x`` to the dtype of the statistics.
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

__all__ = [
    "PCAStats",
    "StandardizeStats",
    "fit_pca",
    "fit_standardize",
    "pca",
    "pca_whiten",
    "standardize",
    "zca_whiten",
]


class StandardizeStats(NamedTuple):
    """Per-feature mean and (population, ``ddof=0``) standard deviation of the training set."""

    mean: jnp.ndarray
    std: jnp.ndarray


class PCAStats(NamedTuple):
    """Principal components of the training set.

    Attributes:
      mean: ``(D,)`` training mean.
      components: ``(k, D)`` orthonormal rows, ordered by decreasing variance.
      explained_variance: ``(k,)`` variance along each component (``ddof=1``, as scikit-learn).
      explained_variance_ratio: ``(k,)`` fraction of the total variance (all ``D`` directions).
    """

    mean: jnp.ndarray
    components: jnp.ndarray
    explained_variance: jnp.ndarray
    explained_variance_ratio: jnp.ndarray


def _as_float(x):
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.float32)
    return x


def _check_examples(fn, x, min_ndim=1):
    if x.ndim < min_ndim or x.shape[0] < 2:
        raise ValueError(
            f"{fn}: expected training data of shape (examples, features) with at least 2 "
            f"examples, got shape {x.shape}."
        )


def _check_features(fn, x, mean):
    if x.shape[1:] != mean.shape:
        raise ValueError(
            f"{fn}: expected x of shape (examples, *{mean.shape}) like the training data, got "
            f"{x.shape}."
        )


def fit_standardize(x) -> StandardizeStats:
    """Per-feature statistics for zero-mean, unit-variance data.

    Args:
      x: ``(N, ...)`` training data; statistics are over axis 0 (one per feature).

    Returns:
      ``StandardizeStats(mean, std)`` with ``std`` the population standard deviation
      (``ddof=0``, as ``sklearn.preprocessing.StandardScaler``).
    """
    x = _as_float(x)
    _check_examples("fit_standardize", x, min_ndim=2)
    return StandardizeStats(mean=jnp.mean(x, axis=0), std=jnp.std(x, axis=0))


def standardize(stats: StandardizeStats, x, eps=1e-8):
    """``(x - mean) / std`` with the training statistics.

    Features whose training std is below ``eps`` (constant features) are only centred (divided
    by 1, as scikit-learn does), instead of blowing up.

    Args:
      stats: from :func:`fit_standardize` on the training data.
      x: ``(M, ...)`` data of the same feature shape (train, validation or test).
      eps: threshold below which a std counts as zero.

    Returns:
      The standardised ``x``; on the training data each feature has mean 0 and variance 1.
    """
    x = jnp.asarray(x).astype(stats.mean.dtype)
    _check_features("standardize", x, stats.mean)
    std = jnp.where(stats.std < eps, jnp.ones_like(stats.std), stats.std)
    return (x - stats.mean[None]) / std[None]


def fit_pca(x, k=None) -> PCAStats:
    """Principal components of the centred training data (via SVD).

    Signs are fixed so that each component's largest-magnitude entry is positive
    (scikit-learn's ``svd_flip`` convention with ``u_based_decision=False``): ``components``
    equals ``sklearn.decomposition.PCA(k).fit(x).components_``, signs included.

    Args:
      x: ``(N, D)`` training data.
      k: number of components to keep (``1 <= k <= min(N, D)``; ``None`` keeps ``min(N, D)``).
        Static: the output shapes depend on it.

    Returns:
      :class:`PCAStats`.
    """
    x = _as_float(x)
    _check_examples("fit_pca", x, min_ndim=2)
    if x.ndim != 2:
        raise ValueError(f"fit_pca: expected x of shape (examples, features), got {x.shape}.")
    max_k = min(x.shape)
    if k is None:
        k = max_k
    if not 1 <= k <= max_k:
        raise ValueError(
            f"fit_pca: k must be in [1, {max_k}] for data of shape {x.shape}, got {k}."
        )
    return _fit_pca(x, k)


# Jitted (k static) so fitting compiles once instead of once per jnp op.
@functools.partial(jax.jit, static_argnums=1)
def _fit_pca(x, k):
    n = x.shape[0]
    mean = jnp.mean(x, axis=0)
    centred = x - mean[None]
    _, s, vt = jnp.linalg.svd(centred, full_matrices=False)
    biggest = jnp.argmax(jnp.abs(vt), axis=1)
    signs = jnp.sign(vt[jnp.arange(vt.shape[0]), biggest])
    vt = vt * signs[:, None]
    variance = jnp.square(s) / (n - 1)
    total = jnp.sum(jnp.var(centred, axis=0, ddof=1))
    return PCAStats(
        mean=mean,
        components=vt[:k],
        explained_variance=variance[:k],
        explained_variance_ratio=variance[:k] / total,
    )


def pca(stats: PCAStats, x):
    """Projects ``x`` onto the ``k`` training components: ``(x - mean) @ components.T``.

    Args:
      stats: from :func:`fit_pca`.
      x: ``(M, D)``.

    Returns:
      ``(M, k)``; column ``i`` has the training variance ``explained_variance[i]``.
    """
    x = jnp.asarray(x).astype(stats.mean.dtype)
    _check_features("pca", x, stats.mean)
    return (x - stats.mean[None]) @ stats.components.T


def pca_whiten(stats: PCAStats, x, eps=1e-5):
    """PCA whitening: project, then divide each coordinate by ``sqrt(variance + eps)``.

    On the training data the result is decorrelated with (near) unit variance per coordinate
    (covariance ~ I, ``ddof=1``); ``eps`` keeps near-zero-variance directions (mostly noise)
    from being blown up.

    Args:
      stats: from :func:`fit_pca`.
      x: ``(M, D)``.
      eps: added to each component's variance.

    Returns:
      ``(M, k)``.
    """
    return pca(stats, x) / jnp.sqrt(stats.explained_variance + eps)[None]


def zca_whiten(stats: PCAStats, x, eps=1e-5):
    """ZCA whitening: PCA-whiten, then rotate back, ``pca_whiten(x) @ components``.

    Covariance ~ I like PCA whitening, but the result stays in the input coordinates (for images
    it still looks like an image). With ``k < D`` components it whitens within the top-``k``
    subspace and drops the rest.

    Args:
      stats: from :func:`fit_pca` (use ``k=None`` for a full ZCA transform).
      x: ``(M, D)``.
      eps: added to each component's variance.

    Returns:
      ``(M, D)``.
    """
    return pca_whiten(stats, x, eps) @ stats.components
