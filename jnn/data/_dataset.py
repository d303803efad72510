"""The ``Dataset`` record and the split every built-in data set shares."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["Dataset", "split_and_standardize", "to_images"]

_ARRAYS = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")


class Dataset(NamedTuple):
    """A classification data set split three ways (NumPy arrays on the host).

    Attributes:
      x_train, y_train, x_val, y_val, x_test, y_test: features ``(N, *input_shape)`` (float32
        for the built-in sets) and int32 labels ``(N,)``.
      num_classes: the number of classes ``C`` (labels are in ``[0, C)``).
      input_shape: the shape of one example, e.g. ``(64,)`` for flat digits.
      image_shape: the channels-last shape for convolutional models, e.g. ``(8, 8, 1)`` for
        digits and ``(40, 1)`` for MNIST-1D (see :func:`to_images`), or ``None``.
      name: ``"digits"``, ``"mnist1d"``, ``"many-classes"`` or the file a set came from.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    input_shape: tuple
    image_shape: tuple | None
    name: str

    def arrays(self) -> dict:
        """The six arrays by name (``x_train`` ... ``y_test``)."""
        return {k: getattr(self, k) for k in _ARRAYS}


def to_images(ds: Dataset) -> Dataset:
    """The same data set with every ``x`` reshaped to ``(N, *ds.image_shape)`` (for CNNs).

    Raises:
      ValueError: the set has no spatial layout (``image_shape`` is None) or it does not
        match the features.
    """
    shape = ds.image_shape
    if shape is None or int(np.prod(shape)) != int(np.prod(ds.x_train.shape[1:])):
        raise ValueError(
            f"{ds.name} has no spatial layout for a CNN (image_shape {shape}, features "
            f"{ds.x_train.shape[1:]}); give inputs shaped (length, channels) or "
            "(height, width, channels)."
        )
    r = lambda x: x.reshape(x.shape[0], *shape)
    return ds._replace(
        x_train=r(ds.x_train), x_val=r(ds.x_val), x_test=r(ds.x_test), input_shape=tuple(shape)
    )


def _standardized(x_train, *others) -> list[np.ndarray]:
    """``jnn.preprocessing.standardize`` fitted on ``x_train``, applied to it and ``others``
    in one jitted call on their concatenation (element by element the same operations, so
    the same numbers as one call each: one compile instead of a dozen eager ones, ~0.5 s of
    a first run)."""
    import jax

    from jnn import preprocessing

    stats = preprocessing.fit_standardize(np.asarray(x_train, np.float32))
    parts = [np.asarray(a, np.float32) for a in (x_train, *others)]
    together = np.asarray(jax.jit(preprocessing.standardize)(stats, np.concatenate(parts)))
    return np.split(together, np.cumsum([len(a) for a in parts])[:-1])


def split_and_standardize(
    x, y, x_test, y_test, *, val_fraction, seed, standardize, regression=False
) -> dict:
    """A seeded, stratified validation split of ``(x, y)``; standardisation fitted on the
    training part only and applied to all three parts. Returns the six arrays by name
    (``regression``: an unstratified split, float32 targets)."""
    from sklearn.model_selection import train_test_split

    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}.")
    x_tr, x_val, y_tr, y_val = train_test_split(
        x, y, test_size=val_fraction, random_state=seed, stratify=None if regression else y
    )
    if standardize:
        x_tr, x_val, x_test = _standardized(x_tr, x_val, x_test)
    f32 = lambda a: np.ascontiguousarray(a, dtype=np.float32)
    i32 = f32 if regression else lambda a: np.ascontiguousarray(a, dtype=np.int32)
    parts = (f32(x_tr), i32(y_tr), f32(x_val), i32(y_val), f32(x_test), i32(y_test))
    return dict(zip(_ARRAYS, parts, strict=True))
