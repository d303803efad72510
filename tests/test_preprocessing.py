"""jnn.preprocessing against scikit-learn; statistics fitted on the training split only."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.decomposition import PCA
from sklearn.preprocessing import StandardScaler

from jnn import preprocessing as P

D = 6


@pytest.fixture(scope="module")
def split():
    """Correlated, shifted, anisotropic data; the test split comes from a shifted distribution."""
    rng = np.random.default_rng(0)
    mix = rng.normal(size=(D, D)) * np.array([5.0, 3.0, 1.0, 0.5, 0.2, 0.1])[:, None]
    train = (rng.normal(size=(300, D)) @ mix + 4.0).astype(np.float32)
    test = (rng.normal(size=(100, D)) @ mix + 6.0).astype(np.float32)
    return train, test


def _cov(z):
    return np.cov(np.asarray(z, np.float64), rowvar=False)


def test_standardize_train_statistics(split):
    train, _ = split
    z = np.asarray(P.standardize(P.fit_standardize(train), train), np.float64)
    np.testing.assert_allclose(z.mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(z.var(0), 1.0, rtol=1e-4)


def test_standardize_matches_sklearn_and_uses_train_stats_on_test(split):
    train, test = split
    stats = P.fit_standardize(train)
    scaler = StandardScaler().fit(train.astype(np.float64))
    chex.assert_trees_all_close(np.asarray(stats.mean), scaler.mean_, rtol=1e-5)
    chex.assert_trees_all_close(np.asarray(stats.std), scaler.scale_, rtol=1e-5)
    z_test = np.asarray(P.standardize(stats, test), np.float64)
    chex.assert_trees_all_close(z_test, scaler.transform(test.astype(np.float64)), atol=1e-4)
    # The test split is standardised with the training statistics, not its own: its mean
    # stays visibly away from 0 (the test distribution is shifted by +2).
    assert np.abs(z_test.mean(0)).max() > 0.1
    own = (test - test.mean(0)) / test.std(0)
    assert not np.allclose(z_test, own, atol=1e-2)


def test_standardize_constant_feature_and_shapes(split):
    train, _ = split
    x = train.copy()
    x[:, 2] = 7.0
    z = np.asarray(P.standardize(P.fit_standardize(x), x))
    assert np.all(np.isfinite(z))
    np.testing.assert_allclose(z[:, 2], 0.0, atol=1e-6)
    chex.assert_trees_all_close(z, StandardScaler().fit_transform(x.astype(np.float64)), atol=1e-4)
    # images: per-pixel statistics over the batch
    imgs = np.random.default_rng(1).normal(2.0, 3.0, size=(50, 4, 4, 3)).astype(np.float32)
    zi = np.asarray(P.standardize(P.fit_standardize(imgs), imgs))
    np.testing.assert_allclose(zi.mean(0), 0.0, atol=1e-5)
    with pytest.raises(ValueError, match="shape"):
        P.standardize(P.fit_standardize(train), train[:, :3])


def test_pca_matches_sklearn_signs_included(split):
    train, test = split
    k = 3
    stats = P.fit_pca(train, k)
    sk = PCA(n_components=k).fit(train.astype(np.float64))
    chex.assert_shape(stats.components, (k, D))
    chex.assert_trees_all_close(
        np.asarray(stats.explained_variance), sk.explained_variance_, rtol=1e-4
    )
    chex.assert_trees_all_close(
        np.asarray(stats.explained_variance_ratio), sk.explained_variance_ratio_, rtol=1e-4
    )
    # ordered by variance, orthonormal components
    assert np.all(np.diff(np.asarray(stats.explained_variance)) < 0)
    chex.assert_trees_all_close(
        np.asarray(stats.components @ stats.components.T), np.eye(k), atol=1e-5
    )
    # the README: component signs follow scikit-learn (largest-magnitude entry positive), so
    # components and projections equal scikit-learn's as they are, no sign flips
    comps = np.asarray(stats.components, np.float64)
    chex.assert_trees_all_close(comps, sk.components_, atol=1e-4)
    biggest = np.abs(comps).argmax(1)
    assert np.all(comps[np.arange(k), biggest] > 0)
    projected = np.asarray(P.pca(stats, test), np.float64)
    chex.assert_trees_all_close(projected, sk.transform(test.astype(np.float64)), atol=1e-3)


def test_pca_whiten_matches_sklearn_and_whitens_train(split):
    train, test = split
    stats = P.fit_pca(train)
    sk = PCA(whiten=True).fit(train.astype(np.float64))
    w_train = np.asarray(P.pca_whiten(stats, train, eps=0.0), np.float64)
    chex.assert_trees_all_close(_cov(w_train), np.eye(D), atol=1e-3)
    np.testing.assert_allclose(w_train.mean(0), 0.0, atol=1e-4)
    w_test = np.asarray(P.pca_whiten(stats, test, eps=0.0), np.float64)
    chex.assert_trees_all_close(w_test, sk.transform(test.astype(np.float64)), atol=1e-3, rtol=1e-3)
    # eps shrinks low-variance directions (never amplifies them beyond 1/sqrt(eps))
    damped = np.asarray(P.pca_whiten(stats, train, eps=1.0), np.float64)
    assert damped.var(0, ddof=1)[-1] < 0.5


def test_zca_whiten(split):
    train, test = split
    stats = P.fit_pca(train)
    z = np.asarray(P.zca_whiten(stats, train, eps=0.0), np.float64)
    chex.assert_shape(z, train.shape)
    chex.assert_trees_all_close(_cov(z), np.eye(D), atol=1e-3)
    # Independent reference: ZCA = C^{-1/2} (x - mean) with C the training covariance.
    x = train.astype(np.float64)
    evals, evecs = np.linalg.eigh(np.cov(x, rowvar=False))
    inv_sqrt = evecs @ np.diag(evals**-0.5) @ evecs.T
    ref_test = (test.astype(np.float64) - x.mean(0)) @ inv_sqrt
    chex.assert_trees_all_close(
        np.asarray(P.zca_whiten(stats, test, eps=0.0)), ref_test, atol=2e-3, rtol=1e-3
    )
    # The test split is not re-centred with its own mean.
    assert np.abs(ref_test.mean(0)).max() > 0.1


def test_transforms_are_jittable_and_keep_dtype(split):
    train, test = split
    stats = P.fit_pca(train, 4)
    for fn in (P.pca, P.pca_whiten, P.zca_whiten):
        chex.assert_trees_all_close(jax.jit(fn)(stats, test), fn(stats, test), atol=1e-5)
    sstats = P.fit_standardize(train)
    chex.assert_trees_all_close(jax.jit(P.standardize)(sstats, test), P.standardize(sstats, test))
    # vmap over examples one at a time agrees with the batch
    one = jax.vmap(lambda row: P.pca(stats, row[None])[0])(jnp.asarray(test))
    chex.assert_trees_all_close(one, P.pca(stats, test), atol=1e-5)
    with jax.enable_x64(True):
        s64 = P.fit_standardize(train.astype(np.float64))
        assert P.standardize(s64, train.astype(np.float64)).dtype == jnp.float64
        p64 = P.fit_pca(train.astype(np.float64), 2)
        assert P.pca_whiten(p64, train.astype(np.float64)).dtype == jnp.float64


def test_bad_inputs(split):
    train, _ = split
    with pytest.raises(ValueError, match="k must be in"):
        P.fit_pca(train, D + 1)
    with pytest.raises(ValueError, match="shape"):
        P.fit_pca(train[:, :, None])
    with pytest.raises(ValueError, match="at least 2 examples"):
        P.fit_standardize(train[:1])
