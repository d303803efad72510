"""jnn.data: splits, standardisation fitted on train only (vs scikit-learn), MNIST-1D's
original split, minibatch indices and input validation."""

import re

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


def _npy_dir(tmp_path, **changes):
    """A --data folder of .npy files (3 classes, 5 features); ``None`` drops a file."""
    rng = np.random.default_rng(0)
    arrays = {
        "x_train": rng.normal(size=(60, 5)).astype(np.float32),
        "y_train": np.arange(60) % 3,
        "x_test": rng.normal(size=(20, 5)).astype(np.float32),
        "y_test": np.arange(20) % 3,
        **changes,
    }
    for name, a in arrays.items():
        if a is not None:
            np.save(tmp_path / f"{name}.npy", a)
    return tmp_path


def test_load_npy_dir_maps_the_files_and_matches_load_npz(tmp_path):
    folder = _npy_dir(tmp_path)
    ds = data.load_npy_dir(folder)
    assert isinstance(ds.x_train, np.memmap) and isinstance(ds.x_val, np.memmap)
    arrays = {k: np.load(folder / f"{k}.npy") for k in ("x_train", "y_train", "x_test", "y_test")}
    np.savez(tmp_path / "same.npz", **arrays)
    ref = data.load_npz(tmp_path / "same.npz")
    for name, a in ref.arrays().items():
        np.testing.assert_array_equal(np.asarray(getattr(ds, name)), a)
    assert (ds.num_classes, ds.input_shape) == (ref.num_classes, ref.input_shape)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"x_test": None}, "has no x_test.npy"),
        ({"x_val": np.zeros((4, 5), np.float32)}, "has x_val.npy but no y_val.npy"),
        ({"y_train": np.arange(50) % 3}, "x_train.npy has shape (60, 5) but y_train.npy"),
        ({"y_test": np.full(20, 3)}, "labels must be in [0, 3)"),
    ],
)
def test_load_npy_dir_names_the_problem(tmp_path, changes, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        data.load_npy_dir(_npy_dir(tmp_path, **changes))


def test_validate_chunkwise_names_a_bad_value_in_a_late_slice(tmp_path):
    x = np.zeros((1000, 4), np.float32)
    x[917, 1] = np.inf
    np.save(tmp_path / "x.npy", x)
    mapped = np.load(tmp_path / "x.npy", mmap_mode="r")
    y = np.zeros(1000, np.int32)
    with pytest.raises(ValueError, match=r"NaN or inf .* \(in rows 896..959 of 1000\)"):
        data.validate_chunkwise(mapped, y, 2, chunk_bytes=64 * 16)  # slices of 64 rows
    data.validate_chunkwise(mapped[:917], y[:917], 2, chunk_bytes=64 * 16)  # just before it


# MNIST-1D's fast generator (jnn.data._mnist1d) against the mnist1d package's make_dataset

_MNIST1D_ARRAYS = ("x", "y", "x_test", "y_test")


def _mnist1d_pair(**changes):
    """``[(result, global NumPy state after), ...]`` of the package's and jnn's ``make_dataset``
    on ``get_dataset_args()`` with ``changes``; the global NumPy state is restored after each."""
    from mnist1d.data import get_dataset_args
    from mnist1d.data import make_dataset as reference

    from jnn.data._mnist1d import make_dataset as fast

    args = get_dataset_args()
    for name, value in changes.items():
        setattr(args, name, value)
    saved = np.random.get_state()  # noqa: NPY002
    out = []
    for make in (reference, fast):
        try:
            out.append((make(args), np.random.get_state()))  # noqa: NPY002
        finally:
            np.random.set_state(saved)  # noqa: NPY002
    return out


def _assert_bit_identical(ref, got, keys=_MNIST1D_ARRAYS):
    for key in keys:
        a, b = np.asarray(ref[key]), np.asarray(got[key])
        assert (b.dtype, b.shape) == (a.dtype, a.shape), key
        assert np.array_equal(b, a), key
        assert b.tobytes() == a.tobytes(), key  # the sign of every zero too


def _assert_same_state(s, t):
    assert s[0] == t[0] and s[2:] == t[2:]
    np.testing.assert_array_equal(s[1], t[1])


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"seed": 7},
        {"shuffle_seq": True},
        {"padding": [10, 20]},
        {"final_seq_length": 97},
        {"padding": [5, 30], "max_translation": 100},  # k >= length: x[-k:] is the whole signal
        {"template_len": 20, "train_split": 0.5},
    ],
    ids=["default", "seed", "shuffle_seq", "padding", "final_len", "big_shift", "template_len"],
)
def test_mnist1d_fast_generator_is_bit_identical(changes):
    (ref, ref_state), (got, got_state) = _mnist1d_pair(num_samples=600, **changes)
    _assert_bit_identical(ref, got, _MNIST1D_ARRAYS + ("t",))
    _assert_same_state(ref_state, got_state)  # the same draws, no more, no fewer


def test_generate_mnist1d_equals_the_package_default():
    from mnist1d.data import get_dataset_args, make_dataset

    from jnn.data._builtin import _generate_mnist1d

    got = _generate_mnist1d()
    saved = np.random.get_state()  # noqa: NPY002
    try:
        ref = make_dataset(get_dataset_args())
    finally:
        np.random.set_state(saved)  # noqa: NPY002
    _assert_bit_identical(ref, got)
    assert [len(got[k]) for k in _MNIST1D_ARRAYS] == [4000, 4000, 1000, 1000]


def test_generate_mnist1d_leaves_the_global_random_states_alone():
    import random

    from jnn.data._builtin import _generate_mnist1d

    saved = np.random.get_state()  # noqa: NPY002
    try:
        np.random.seed(5)  # noqa: NPY002
        np.random.randn()  # noqa: NPY002 (a cached Gaussian in the state as well)
        before, python_before = np.random.get_state(), random.getstate()  # noqa: NPY002
        _generate_mnist1d()
        _assert_same_state(np.random.get_state(), before)  # noqa: NPY002
        assert random.getstate() == python_before
    finally:
        np.random.set_state(saved)  # noqa: NPY002


_CACHED_LOAD_PROBE = """
import sys
import jnn.data
ds = jnn.data.load_mnist1d()
assert ds.x_train.shape == (3600, 40), ds.x_train.shape
print(sorted(m for m in sys.modules if m == "mnist1d" or m.startswith("mnist1d.")))
"""


def test_mnist1d_loads_without_importing_the_mnist1d_package(tmp_path):
    import os
    import subprocess
    import sys

    env = {**os.environ, "JNN_CACHE_DIR": str(tmp_path)}
    run = lambda: subprocess.run(
        [sys.executable, "-c", _CACHED_LOAD_PROBE], env=env, capture_output=True, text=True
    )
    generated, cached = run(), run()  # the package costs ~2.7 s of imports, more than the data
    assert generated.returncode == 0 and cached.returncode == 0, generated.stderr + cached.stderr
    assert generated.stdout.strip() == "[]" and cached.stdout.strip() == "[]"
    assert len(list(tmp_path.rglob("*mnist1d*"))) > 0  # the second one read the cache


def test_mnist1d_constants_are_the_packages():
    from mnist1d.data import get_dataset_args, get_templates

    from jnn.data import _mnist1d

    ours, theirs = _mnist1d.get_templates(), get_templates()
    assert set(ours) == set(theirs)
    for k in theirs:
        assert ours[k].dtype == np.asarray(theirs[k]).dtype, k
        np.testing.assert_array_equal(ours[k], theirs[k])
    expected = {k: v for k, v in vars(get_dataset_args()).items() if k != "url"}
    assert vars(_mnist1d.default_args()) == expected


def test_split_standardisation_equals_one_standardize_call_per_part():
    from jnn import preprocessing
    from jnn.data._dataset import _standardized

    rng = np.random.default_rng(0)
    parts = [rng.normal(3.0, 2.0, (n, 7)).astype(np.float32) for n in (50, 9, 13)]
    parts[0][:, 2] = 1.5  # a constant feature: centred only
    stats = preprocessing.fit_standardize(parts[0])
    for got, part in zip(_standardized(*parts), parts, strict=True):
        want = np.asarray(preprocessing.standardize(stats, part))
        assert got.dtype == np.float32 and np.array_equal(got, want)
