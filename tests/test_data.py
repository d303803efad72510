"""jnn.data: splits, standardisation fitted on train only (vs scikit-learn), MNIST-1D's
original split, minibatch indices and input validation."""

import jax
import numpy as np
import pytest
from sklearn.datasets import load_digits as sk_digits
from sklearn.preprocessing import StandardScaler

from jnn import data


@pytest.fixture(scope="module")
def digits():
    return data.load_digits()


def test_digits_shapes_dtypes_and_split(digits):
    n = len(sk_digits().target)
    sizes = [len(digits.x_train), len(digits.x_val), len(digits.x_test)]
    assert sum(sizes) == n == 1797
    assert sizes[2] == 360  # 20% test, stratified
    assert digits.x_train.dtype == np.float32 and digits.y_train.dtype == np.int32
    assert digits.x_train.shape[1:] == digits.input_shape == (64,)
    assert digits.num_classes == 10 and digits.image_shape == (8, 8, 1)
    # stratified: every class in every split, in roughly equal proportions
    for y in (digits.y_train, digits.y_val, digits.y_test):
        counts = np.bincount(y, minlength=10)
        assert counts.min() > 0 and counts.max() <= 1.3 * counts.min() + 2


def test_digits_deterministic_and_seeded(digits):
    again = data.load_digits()
    for a, b in zip(digits[:6], again[:6], strict=True):
        np.testing.assert_array_equal(a, b)
    other = data.load_digits(seed=1)
    assert not np.array_equal(other.y_val, digits.y_val)


def test_standardisation_fitted_on_train_only(digits):
    raw = data.load_digits(standardize=False)
    scaler = StandardScaler().fit(raw.x_train)  # independent reference, train split only
    np.testing.assert_allclose(digits.x_train, scaler.transform(raw.x_train), atol=1e-4)
    np.testing.assert_allclose(digits.x_val, scaler.transform(raw.x_val), atol=1e-4)
    np.testing.assert_allclose(digits.x_test, scaler.transform(raw.x_test), atol=1e-4)
    # val/test were not standardised with their own statistics
    assert not np.allclose(digits.x_test.mean(0), 0.0, atol=1e-3)


def test_to_images(digits):
    img = data.to_images(digits)
    assert img.x_train.shape == (len(digits.x_train), 8, 8, 1)
    assert img.input_shape == (8, 8, 1)
    np.testing.assert_array_equal(img.x_test.reshape(len(img.x_test), -1), digits.x_test)


def test_mnist1d_original_split():
    from mnist1d.data import get_dataset_args, make_dataset

    state = np.random.get_state()  # noqa: NPY002
    ds = data.load(name="mnist1d", standardize=False)
    # the global NumPy generator is left as it was
    np.testing.assert_array_equal(np.random.get_state()[1], state[1])  # noqa: NPY002
    assert (len(ds.x_train), len(ds.x_val), len(ds.x_test)) == (3600, 400, 1000)
    assert ds.input_shape == (40,) and ds.image_shape == (40, 1) and ds.num_classes == 10
    ref = make_dataset(get_dataset_args())
    np.testing.assert_allclose(ds.x_test, ref["x_test"].astype(np.float32))
    np.testing.assert_array_equal(ds.y_test, ref["y_test"])
    # train + val is a permutation of the original 4,000 training examples
    both = np.concatenate([ds.x_train, ds.x_val])
    order = lambda a: a[np.lexsort(a.T[::-1])]
    np.testing.assert_allclose(order(both), order(ref["x"].astype(np.float32)))


def test_unknown_dataset():
    with pytest.raises(ValueError, match="unknown dataset 'cifar'"):
        data.load("cifar")


def test_batch_indices_cover_and_reshuffle():
    idx = np.asarray(data.batch_indices(jax.random.key(0), 10, 3))
    assert idx.shape == (3, 3) and idx.dtype == np.int32
    assert len(np.unique(idx)) == 9 and idx.min() >= 0 and idx.max() < 10  # 1 dropped
    other = np.asarray(data.batch_indices(jax.random.key(1), 10, 3))
    assert not np.array_equal(idx, other)
    seen = set()
    for e in range(20):
        seen |= set(np.asarray(data.batch_indices(jax.random.key(e), 10, 3)).ravel())
    assert seen == set(range(10))  # the dropped remainder differs between epochs
    jitted = jax.jit(data.batch_indices, static_argnums=(1, 2))(jax.random.key(0), 10, 3)
    np.testing.assert_array_equal(jitted, idx)


def test_iterate_batches():
    x = np.arange(20, dtype=np.float32).reshape(10, 2)
    y = np.arange(10)
    got = list(data.iterate_batches(jax.random.key(0), x, y, 4))
    assert len(got) == 2
    for xb, yb in got:
        np.testing.assert_array_equal(np.asarray(xb)[:, 0], 2 * np.asarray(yb))


@pytest.mark.parametrize(
    ("x", "y", "c", "b", "match"),
    [
        (np.zeros((5, 2)), np.array([0, 1, 2, 3, 4]), 3, None, r"labels must be in \[0, 3\)"),
        (np.zeros((5, 2)), np.array([0, -1, 0, 0, 0]), 3, None, r"got -1"),
        (np.array([[0.0], [np.nan]]), np.array([0, 1]), 2, None, "NaN or inf.*index 1"),
        (np.zeros((5, 2)), np.zeros(5, int), 2, 6, r"batch_size must be in \[1, 5\]"),
        (np.zeros((5, 2)), np.zeros(5, int), 2, 0, "batch_size"),
        (np.zeros((5, 2)), np.zeros(4, int), 2, None, "one entry per example"),
        (np.zeros(5), np.zeros(5, int), 2, None, r"shape \(examples, features"),
        (np.zeros((5, 2)), np.array(["a"] * 5), 2, None, "integer labels or float"),
    ],
)
def test_validate_errors(x, y, c, b, match):
    with pytest.raises(ValueError, match=match):
        data.validate(x, y, c, b)


def test_validate_accepts_good_data(digits):
    data.validate(digits.x_train, digits.y_train, 10, 32)
    data.validate(digits.x_train, digits.x_train[:, :2], None, 32)  # float targets
