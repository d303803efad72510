"""Built-in data sets (no download): scikit-learn's digits and diabetes, and MNIST-1D, cached
once built."""

from __future__ import annotations

from importlib import metadata

import numpy as np

from jnn.data._dataset import Dataset, split_and_standardize

__all__ = ["load", "load_diabetes", "load_digits", "load_mnist1d"]


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:  # pragma: no cover
        return "unknown"


def _cached(name, key, build, cache):
    if not cache:
        return build()
    from jnn import cache as _cache

    return _cache.cached_arrays(name, key, build)


def _bundled(name, arrays_of, val_fraction, test_fraction, seed, standardize, cache, regression):
    """The six split arrays of a data set scikit-learn ships: ``arrays_of() -> (x, y)`` split
    seeded into test (stratified for classes) and the rest, then validation, standardised with
    training statistics (``split_and_standardize``), and cached by the split's options."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}.")

    def build():
        from sklearn.model_selection import train_test_split

        x, y = arrays_of()
        x, x_test, y, y_test = train_test_split(
            x, y, test_size=test_fraction, random_state=seed, stratify=None if regression else y
        )
        return split_and_standardize(
            x, y, x_test, y_test, val_fraction=val_fraction, seed=seed, standardize=standardize,
            regression=regression,
        )  # fmt: skip

    key = {
        "sklearn": _version("scikit-learn"),
        "val": val_fraction,
        "test": test_fraction,
        "seed": seed,
        "standardize": standardize,
    }
    return _cached(name, key, build, cache)


def load_digits(
    *,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
    standardize: bool = True,
    cache: bool = True,
) -> Dataset:
    """scikit-learn's 1,797 8x8 digit images, flat ``(N, 64)``, 10 classes.

    A stratified, seeded split: ``test_fraction`` of all examples for test, then
    ``val_fraction`` of the rest for validation. Pixel values 0..16 are standardised per
    pixel with training statistics (constant pixels are only centred).

    Args:
      val_fraction: fraction of the training part used for validation.
      test_fraction: fraction of the whole set used for test.
      seed: the split's seed.
      standardize: apply ``jnn.preprocessing.standardize`` fitted on the training part.
      cache: keep the split arrays in ``jnn.cache`` (the second load skips scikit-learn).

    Returns:
      A :class:`Dataset` (``image_shape=(8, 8, 1)``).
    """

    def arrays_of():
        from sklearn.datasets import load_digits as _sk_digits

        raw = _sk_digits()
        return raw.data.astype(np.float32), raw.target

    split = (val_fraction, test_fraction, seed, standardize, cache)
    arrays = _bundled("digits", arrays_of, *split, regression=False)
    return Dataset(
        **arrays, num_classes=10, input_shape=(64,), image_shape=(8, 8, 1), name="digits"
    )


def _generate_mnist1d():
    """MNIST-1D's published arrays, regenerated (NumPy's global random state restored)."""
    from mnist1d.data import get_dataset_args, make_dataset

    saved = np.random.get_state()  # noqa: NPY002 (make_dataset seeds the global generator)
    try:
        raw = make_dataset(get_dataset_args())
    finally:
        np.random.set_state(saved)  # noqa: NPY002
    return {k: np.asarray(raw[k]) for k in ("x", "y", "x_test", "y_test")}


def _mnist1d_args() -> dict:
    from mnist1d.data import get_dataset_args

    return {k: v for k, v in vars(get_dataset_args()).items() if k != "url"}


def load_mnist1d(
    *, val_fraction: float = 0.1, seed: int = 0, standardize: bool = True, cache: bool = True
) -> Dataset:
    """MNIST-1D, regenerated with ``make_dataset(get_dataset_args())``: 40 features, 10 classes.

    The original split (4,000 train + 1,000 test, identical to the published file) is kept;
    validation is ``val_fraction`` of the 4,000 training examples. Generation (~3 s) never
    touches the network (``get_dataset`` would try a download with no time-out); with
    ``cache`` the result is kept in ``jnn.cache`` keyed by the generation arguments and the
    mnist1d version, checksummed, and regenerated if the file is damaged.

    Args:
      val_fraction: fraction of the training part used for validation.
      seed: the validation split's seed (the data themselves are always the published ones).
      standardize: apply ``jnn.preprocessing.standardize`` fitted on the training part.
      cache: use the data cache.

    Returns:
      A :class:`Dataset` (``input_shape=(40,)``, ``image_shape=(40, 1)``).
    """

    def build():
        raw = _generate_mnist1d()
        return split_and_standardize(
            raw["x"].astype(np.float32),
            raw["y"],
            raw["x_test"].astype(np.float32),
            raw["y_test"],
            val_fraction=val_fraction,
            seed=seed,
            standardize=standardize,
        )

    key = {
        "mnist1d": _version("mnist1d"),
        "args": _mnist1d_args() if cache else None,
        "val": val_fraction,
        "seed": seed,
        "standardize": standardize,
    }
    arrays = _cached("mnist1d", key, build, cache)
    return Dataset(**arrays, num_classes=10, input_shape=(40,), image_shape=(40, 1), name="mnist1d")


def load_diabetes(
    *,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
    standardize: bool = True,
    cache: bool = True,
) -> Dataset:
    """scikit-learn's bundled diabetes regression set: 442 patients, 10 features, one float
    target (disease progression after a year, 25..346).

    A seeded random split (``test_fraction`` for test, then ``val_fraction`` of the rest for
    validation); features standardised with training statistics; targets kept as they are
    (float32, shape ``(N,)``). ``num_classes`` is 0: there are no classes.

    Returns:
      A :class:`Dataset` (``input_shape=(10,)``, no image layout).
    """

    def arrays_of():
        from sklearn.datasets import load_diabetes as _sk_diabetes

        x, y = _sk_diabetes(return_X_y=True, scaled=False)
        return x.astype(np.float32), y.astype(np.float32)

    split = (val_fraction, test_fraction, seed, standardize, cache)
    arrays = _bundled("diabetes", arrays_of, *split, regression=True)
    return Dataset(**arrays, num_classes=0, input_shape=(10,), image_shape=None, name="diabetes")


_LOADERS = {"digits": load_digits, "mnist1d": load_mnist1d, "diabetes": load_diabetes}


def load(name: str, **kwargs) -> Dataset:
    """A built-in data set by name (``"digits"``, ``"mnist1d"``, ``"diabetes"``).

    Raises:
      ValueError: an unknown name.
    """
    if name not in _LOADERS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {sorted(_LOADERS)}.")
    return _LOADERS[name](**kwargs)
