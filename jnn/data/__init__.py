"""Built-in data sets (no download), minibatches and input validation.

``load_digits()`` (scikit-learn's bundled 8x8 digits) and ``load_mnist1d()`` (MNIST-1D
regenerated procedurally) return a :class:`Dataset` of float32 features and int32 labels with
train / validation / test splits. The validation part is carved out of the training split
with a seeded, stratified shuffle; standardisation (``jnn.preprocessing``) is fitted on the
training part only and applied to all three.

Minibatches: each epoch is a fresh permutation drawn from a key, cut into
``N // batch_size`` full batches. The last ``N % batch_size`` examples of the permutation
are **dropped** for that epoch; because the permutation changes every epoch, every example
is seen in expectation, and every step has the same shape (one compiled step).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = [
    "Dataset",
    "batch_indices",
    "iterate_batches",
    "load",
    "load_digits",
    "load_mnist1d",
    "to_images",
    "validate",
]


class Dataset(NamedTuple):
    """A classification data set split three ways (NumPy arrays on the host).

    Attributes:
      x_train, y_train, x_val, y_val, x_test, y_test: float32 features ``(N, *input_shape)``
        and int32 labels ``(N,)``.
      num_classes: the number of classes ``C`` (labels are in ``[0, C)``).
      input_shape: the shape of one example, e.g. ``(64,)`` for flat digits.
      image_shape: the channels-last shape for convolutional models, e.g. ``(8, 8, 1)`` for
        digits and ``(40, 1)`` for MNIST-1D; see :func:`to_images`.
      name: ``"digits"`` or ``"mnist1d"``.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    input_shape: tuple
    image_shape: tuple
    name: str


def to_images(ds: Dataset) -> Dataset:
    """The same data set with every ``x`` reshaped to ``(N, *ds.image_shape)`` (for CNNs)."""
    r = lambda x: x.reshape(x.shape[0], *ds.image_shape)
    return ds._replace(
        x_train=r(ds.x_train),
        x_val=r(ds.x_val),
        x_test=r(ds.x_test),
        input_shape=tuple(ds.image_shape),
    )


def _split_and_standardize(x, y, x_test, y_test, *, val_fraction, seed, standardize, **meta):
    from sklearn.model_selection import train_test_split

    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}.")
    x_tr, x_val, y_tr, y_val = train_test_split(
        x, y, test_size=val_fraction, random_state=seed, stratify=y
    )
    if standardize:
        from jnn import preprocessing

        stats = preprocessing.fit_standardize(np.asarray(x_tr, np.float32))
        x_tr, x_val, x_test = (
            np.asarray(preprocessing.standardize(stats, a)) for a in (x_tr, x_val, x_test)
        )
    f32 = lambda a: np.ascontiguousarray(a, dtype=np.float32)
    i32 = lambda a: np.ascontiguousarray(a, dtype=np.int32)
    return Dataset(f32(x_tr), i32(y_tr), f32(x_val), i32(y_val), f32(x_test), i32(y_test), **meta)


def load_digits(
    *, val_fraction: float = 0.1, test_fraction: float = 0.2, seed: int = 0, standardize=True
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

    Returns:
      A :class:`Dataset` (``image_shape=(8, 8, 1)``).
    """
    from sklearn.datasets import load_digits as _sk_digits
    from sklearn.model_selection import train_test_split

    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}.")
    raw = _sk_digits()
    x, y = raw.data.astype(np.float32), raw.target
    x, x_test, y, y_test = train_test_split(
        x, y, test_size=test_fraction, random_state=seed, stratify=y
    )
    return _split_and_standardize(
        x,
        y,
        x_test,
        y_test,
        val_fraction=val_fraction,
        seed=seed,
        standardize=standardize,
        num_classes=10,
        input_shape=(64,),
        image_shape=(8, 8, 1),
        name="digits",
    )


def load_mnist1d(*, val_fraction: float = 0.1, seed: int = 0, standardize=True) -> Dataset:
    """MNIST-1D, regenerated with ``make_dataset(get_dataset_args())``: 40 features, 10 classes.

    The original split (4,000 train + 1,000 test, identical to the published file) is kept;
    validation is ``val_fraction`` of the 4,000 training examples. Generation takes well under
    a second's worth of NumPy and never touches the network (``get_dataset`` would try a
    download with no time-out). NumPy's global random state is restored afterwards.

    Args:
      val_fraction: fraction of the training part used for validation.
      seed: the validation split's seed (the data themselves are always the published ones).
      standardize: apply ``jnn.preprocessing.standardize`` fitted on the training part.

    Returns:
      A :class:`Dataset` (``input_shape=(40,)``, ``image_shape=(40, 1)``).
    """
    from mnist1d.data import get_dataset_args, make_dataset

    saved = np.random.get_state()  # noqa: NPY002 (make_dataset seeds the global generator)
    try:
        raw = make_dataset(get_dataset_args())
    finally:
        np.random.set_state(saved)  # noqa: NPY002
    x, y = raw["x"].astype(np.float32), raw["y"]
    x_test, y_test = raw["x_test"].astype(np.float32), raw["y_test"]
    return _split_and_standardize(
        x,
        y,
        x_test,
        y_test,
        val_fraction=val_fraction,
        seed=seed,
        standardize=standardize,
        num_classes=10,
        input_shape=(40,),
        image_shape=(40, 1),
        name="mnist1d",
    )


_LOADERS = {"digits": load_digits, "mnist1d": load_mnist1d}


def load(name: str, **kwargs) -> Dataset:
    """``load("digits")`` or ``load("mnist1d")``; an unknown name raises ``ValueError``."""
    if name not in _LOADERS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {sorted(_LOADERS)}.")
    return _LOADERS[name](**kwargs)


def batch_indices(key, num_examples: int, batch_size: int):
    """One epoch's minibatch indices: a fresh permutation, cut into full batches.

    Args:
      key: a PRNG key (use a new one per epoch, e.g. ``fold_in(key, epoch)``).
      num_examples: ``N``.
      batch_size: ``B`` with ``1 <= B <= N``.

    Returns:
      An int32 array ``(N // B, B)``; the permutation's last ``N % B`` indices are dropped.
      Jittable (``num_examples`` and ``batch_size`` are static).
    """
    import jax

    if not 1 <= batch_size <= num_examples:
        raise ValueError(
            f"batch_size must be in [1, {num_examples}] (the number of examples), got {batch_size}."
        )
    steps = num_examples // batch_size
    perm = jax.random.permutation(key, num_examples)
    return perm[: steps * batch_size].reshape(steps, batch_size).astype("int32")


def iterate_batches(key, x, y, batch_size: int):
    """Yields ``(x[idx], y[idx])`` minibatches of one epoch (see :func:`batch_indices`)."""
    import jax.numpy as jnp

    x, y = jnp.asarray(x), jnp.asarray(y)
    for idx in batch_indices(key, x.shape[0], batch_size):
        yield jnp.take(x, idx, axis=0), jnp.take(y, idx, axis=0)


def validate(x, y, num_classes: int | None = None, batch_size: int | None = None) -> None:
    """Checks a training set before any training; raises ``ValueError`` naming the problem.

    Checks: ``x`` is a numeric array with a leading example axis and only finite values;
    ``y`` has one entry per example; integer labels lie in ``[0, num_classes)`` (when
    ``num_classes`` is given); ``1 <= batch_size <= N`` (when given).

    Args:
      x: inputs ``(N, ...)``.
      y: targets ``(N, ...)``: integer labels, or floats for regression / multi-label.
      num_classes: the number of classes, or None to skip the range check.
      batch_size: the minibatch size, or None to skip that check.
    """
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim < 2:
        raise ValueError(f"x must have shape (examples, features...), got shape {x.shape}.")
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise ValueError(f"x must be numeric, got dtype {x.dtype}.")
    n = x.shape[0]
    if n == 0:
        raise ValueError("x has no examples.")
    if y.ndim < 1 or y.shape[0] != n:
        raise ValueError(
            f"y must have one entry per example: x has {n} examples, y has shape {y.shape}."
        )
    if np.issubdtype(x.dtype, np.floating):
        bad = ~np.isfinite(x)
        if bad.any():
            rows = np.unique(np.nonzero(bad.reshape(n, -1))[0])
            raise ValueError(
                f"x contains NaN or inf in {rows.size} example(s) (first at index {rows[0]})."
            )
    if np.issubdtype(y.dtype, np.integer):
        if num_classes is not None:
            out = (y < 0) | (y >= num_classes)
            if out.any():
                i = int(np.argmax(out.reshape(-1)))
                raise ValueError(
                    f"labels must be in [0, {num_classes}); got {y.reshape(-1)[i]} "
                    f"(min {y.min()}, max {y.max()}, {int(out.sum())} out of range)."
                )
    elif np.issubdtype(y.dtype, np.floating):
        if not np.isfinite(y).all():
            raise ValueError("y contains NaN or inf.")
    else:
        raise ValueError(f"y must be integer labels or float targets, got dtype {y.dtype}.")
    if batch_size is not None and not 1 <= batch_size <= n:
        raise ValueError(
            f"batch_size must be in [1, {n}] (the number of training examples), got {batch_size}."
        )
