"""One set of input checks for every entry point (``fit``, the command line, ``load_npz``).

Each check raises ``ValueError`` naming the array and the problem, before any training.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "check_class_labels",
    "check_dataset",
    "infer_num_classes",
    "validate",
    "validate_chunkwise",
]

CHUNK_BYTES = 64 << 20
"""A chunkwise check reads about this many bytes of inputs at a time."""


def _is_float(dtype) -> bool:
    """Floating, including the 16-bit ``bfloat16`` NumPy does not know as floating."""
    return np.issubdtype(dtype, np.floating) or dtype.name in ("bfloat16", "float8_e4m3fn")


def _check_inputs(x, name: str) -> None:
    if x.ndim < 2:
        raise ValueError(f"{name} must have shape (examples, features...), got shape {x.shape}.")
    if not (_is_float(x.dtype) or np.issubdtype(x.dtype, np.integer)):
        raise ValueError(f"{name} must be numeric, got dtype {x.dtype}.")
    if x.shape[0] == 0:
        raise ValueError(f"{name} has no examples.")
    if _is_float(x.dtype):
        bad = ~np.isfinite(x.astype(np.float32) if x.dtype.itemsize < 4 else x)
        if bad.any():
            rows = np.unique(np.nonzero(bad.reshape(x.shape[0], -1))[0])
            raise ValueError(
                f"{name} contains NaN or inf in {rows.size} example(s) (first at index "
                f"{rows[0]}); clean or impute them first."
            )


def _check_targets(y, n: int, num_classes, name: str) -> None:
    if y.ndim < 1 or y.shape[0] != n:
        raise ValueError(
            f"{name} must have one entry per example: the inputs have {n} examples, {name} has "
            f"shape {y.shape}."
        )
    if np.issubdtype(y.dtype, np.integer):
        if num_classes is not None:
            outside = (y < 0) | (y >= num_classes)
            if outside.any():
                i = int(np.argmax(outside.reshape(-1)))
                raise ValueError(
                    f"labels must be in [0, {num_classes}); got {y.reshape(-1)[i]} in {name} "
                    f"(min {y.min()}, max {y.max()}, {int(outside.sum())} out of range)."
                )
    elif _is_float(y.dtype):
        if not np.isfinite(y.astype(np.float32)).all():
            raise ValueError(f"{name} contains NaN or inf.")
    else:
        raise ValueError(f"{name} must be integer labels or float targets, got dtype {y.dtype}.")


def validate(
    x, y, num_classes: int | None = None, batch_size: int | None = None, *, name: str = "train"
) -> None:
    """Checks one split before any training; raises ``ValueError`` naming the problem.

    Checks: ``x`` is a numeric array (integer, float, bfloat16) with a leading example axis
    and only finite values; ``y`` has one entry per example; integer labels lie in
    ``[0, num_classes)`` (when ``num_classes`` is given); float targets are finite;
    ``1 <= batch_size <= N`` (when given).

    Args:
      x: inputs ``(N, ...)``.
      y: targets ``(N, ...)``: integer labels, or floats for regression / multi-label.
      num_classes: the number of classes, or None to skip the range check.
      batch_size: the minibatch size, or None to skip that check.
      name: the split's name in messages (``x_{name}``, ``y_{name}``).
    """
    x, y = np.asarray(x), np.asarray(y)
    _check_inputs(x, f"x_{name}")
    _check_targets(y, x.shape[0], num_classes, f"y_{name}")
    if batch_size is not None and not 1 <= batch_size <= x.shape[0]:
        raise ValueError(
            f"batch_size must be in [1, {x.shape[0]}] (the number of {name} examples), got "
            f"{batch_size}."
        )


def validate_chunkwise(
    x, y, num_classes: int | None = None, *, name: str = "train", chunk_bytes: int = CHUNK_BYTES
) -> None:
    """:func:`validate` over ``x`` in slices of about ``chunk_bytes`` (a memory-mapped array is
    read once, slice by slice, never copied whole); ``y`` (one label per example) at once.

    Raises:
      ValueError: as :func:`validate`, naming the rows of the slice where the problem is.
    """
    n = len(x)
    rows = max(1, chunk_bytes // max(1, x[:1].nbytes))
    labels = np.asarray(y)
    if labels.ndim < 1 or len(labels) != n:
        raise ValueError(
            f"y_{name} must have one entry per example: x_{name} has {n} examples, y_{name} has "
            f"shape {labels.shape}."
        )
    if n == 0:
        validate(np.asarray(x), labels, num_classes, name=name)
    for r0 in range(0, n, rows):
        r1 = min(n, r0 + rows)
        try:
            validate(np.asarray(x[r0:r1]), labels[r0:r1], num_classes, name=name)
        except ValueError as err:
            raise ValueError(f"{err} (in rows {r0}..{r1 - 1} of {n})") from None


def infer_num_classes(y_train, num_classes: int | None = None) -> int:
    """The number of classes: ``num_classes`` when given, else ``max(y_train) + 1``.

    Without ``num_classes``, every class in ``[0, max]`` must occur in the training labels:
    a stray label (one ``7`` in 3-class data) would otherwise silently make 8 classes, 4 of
    them never seen. With ``num_classes`` given, classes without examples are allowed.

    Raises:
      ValueError: fewer than 2 classes, negative labels, or empty classes (named).
    """
    y = np.asarray(y_train)
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"class labels must be integers, got dtype {y.dtype}.")
    if y.size and y.min() < 0:
        raise ValueError(f"labels must be >= 0, got {y.min()}.")
    if num_classes is None:
        num_classes = int(y.max()) + 1 if y.size else 0
        present = np.unique(y)  # never np.arange(num_classes): a label of 2**40 is 8 TiB
        if present.size < num_classes:
            empty = _missing(present, limit=10)
            shown = ", ".join(str(c) for c in empty) + (
                ", ..." if num_classes - present.size > len(empty) else ""
            )
            raise ValueError(
                f"the training labels imply {num_classes} classes (max label {num_classes - 1}) "
                f"but classes {shown} have no training example ({num_classes - present.size} "
                "empty): check for stray labels, or state num_classes explicitly."
            )
    if int(num_classes) < 2:
        raise ValueError(f"need at least 2 classes, got num_classes={num_classes}.")
    return int(num_classes)


def _missing(present, limit: int) -> list[int]:
    """The first ``limit`` integers in ``[0, max(present)]`` absent from sorted ``present``."""
    found, expected = [], 0
    for value in present.tolist():
        while expected < value and len(found) < limit:
            found.append(expected)
            expected += 1
        if len(found) >= limit:
            break
        expected = value + 1
    return found


def check_class_labels(y, name: str, *, attributes: bool = False) -> None:
    """Labels are one integer per example, shape ``(N,)``, or yes/no attributes ``(N, A)`` of
    0/1. A column ``(N, 1)`` and one-hot rows (2-D 0/1, exactly one 1 per row; taken as
    attributes when ``attributes``) are refused, saying what to pass instead."""
    y = np.asarray(y)
    if y.ndim == 1 or attributes and y.ndim == 2:
        return  # attribute values are checked by the task (jnn.data.check_attributes)
    if y.ndim == 2 and y.shape[1] == 1:
        raise ValueError(
            f"{name} has shape {y.shape}: class labels must have shape ({y.shape[0]},), one "
            f"integer per example; flatten them ({name}.reshape(-1))."
        )
    zero_one = y.ndim == 2 and np.isin(y, (0, 1)).all()
    if zero_one and (attributes or not (y.sum(axis=1) == 1).all()):
        return  # yes/no attributes (several or none per example)
    if zero_one:
        raise ValueError(
            f"{name} looks one-hot (shape {y.shape}): class labels must have shape "
            f"({y.shape[0]},), one integer per example; pass np.argmax({name}, axis=1) "
            "(or --task attributes if each column is a yes/no attribute)."
        )
    raise ValueError(
        f"{name} has shape {y.shape}: class labels must have shape ({y.shape[0]},), one "
        "integer per example (or (N, A) of 0/1 for yes/no attributes)."
    )


def check_dataset(ds, batch_size: int | None = None, *, attributes: bool = False) -> None:
    """Checks all three splits of a :class:`Dataset` and that they agree; memory-mapped
    inputs are checked slice by slice (:func:`validate_chunkwise`).

    Raises:
      ValueError: a bad split (see :func:`validate`), feature shapes that differ between the
        splits, or a batch larger than the training set.
    """
    for part in ("train", "val", "test"):
        x, y = getattr(ds, f"x_{part}"), getattr(ds, f"y_{part}")
        check_class_labels(y, f"y_{part}", attributes=attributes)
        if isinstance(x, np.memmap):  # checked slice by slice, never copied whole
            validate_chunkwise(x, y, ds.num_classes, name=part)
            x = x[:1]  # the batch-size check below needs only the count
            if batch_size is not None and part == "train" and not 1 <= batch_size <= len(y):
                raise ValueError(
                    f"batch_size must be in [1, {len(y)}] (the number of train examples), got "
                    f"{batch_size}."
                )
            continue
        validate(x, y, ds.num_classes, batch_size if part == "train" else None, name=part)
    shapes = [np.shape(getattr(ds, f"x_{p}"))[1:] for p in ("train", "val", "test")]
    if len(set(shapes)) != 1:
        raise ValueError(
            "train, validation and test inputs must have the same feature shape, got "
            + ", ".join(str(s) for s in shapes)
        )
