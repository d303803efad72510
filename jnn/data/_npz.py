"""Your own arrays from a ``.npz`` file, checked and split like the built-in sets."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from jnn.data._dataset import Dataset
from jnn.data._validate import check_class_labels, check_dataset, infer_num_classes, validate

__all__ = ["load_npz"]

REQUIRED = ("x_train", "y_train", "x_test", "y_test")


def _read(path: Path) -> dict:
    try:
        with np.load(path, allow_pickle=False) as f:
            if not hasattr(f, "files"):
                raise ValueError("it holds a single array, not named arrays")
            return {k: f[k] for k in f.files}
    except FileNotFoundError:
        raise ValueError(f"cannot read {str(path)!r}: no such file") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        why = str(err).splitlines()[0] if str(err) else type(err).__name__
        if "pickle" in why or "Object arrays" in why:
            why = "it is not an .npz of numeric arrays (object arrays / pickles are refused)"
        raise ValueError(f"cannot read {str(path)!r} as .npz: {why}") from None


def _labels(y, name: str):
    """Integer labels; integral floats become labels, other finite floats stay regression
    targets (float32)."""
    y = np.asarray(y)
    if np.issubdtype(y.dtype, np.floating) and np.all(np.isfinite(y)) and np.all(y == np.round(y)):
        return y.astype(np.int64)
    if np.issubdtype(y.dtype, np.floating):
        return y.astype(np.float32)
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(
            f"{name} must hold integer class labels or float targets, got dtype {y.dtype}."
        )
    return y


def _num_classes(raw: dict) -> int:
    """The number of classes; 0 for float (regression) targets."""
    if np.issubdtype(raw["y_train"].dtype, np.floating):
        return 0
    given = int(raw["num_classes"]) if "num_classes" in raw else None
    return infer_num_classes(raw["y_train"], given)


def _check_pairs(raw: dict, path: Path) -> None:
    missing = [k for k in REQUIRED if k not in raw]
    if missing:
        raise ValueError(
            f"{str(path)!r} lacks arrays {missing}; expected x_train, y_train, x_test, y_test "
            f"(optional x_val with y_val, num_classes), found {sorted(raw)}."
        )
    if ("x_val" in raw) != ("y_val" in raw):
        have, lack = ("x_val", "y_val") if "x_val" in raw else ("y_val", "x_val")
        raise ValueError(f"{str(path)!r} has {have} but no {lack}: give both or neither.")
    for part in ("train", "val", "test"):
        x, y = raw.get(f"x_{part}"), raw.get(f"y_{part}")
        if x is not None and np.ndim(x) >= 1 and np.ndim(y) >= 1 and len(x) != len(y):
            raise ValueError(
                f"x_{part} has {len(x)} examples but y_{part} has {len(y)} labels in {str(path)!r}."
            )


def _carve_validation(raw: dict, path: Path, val_fraction: float, classes: bool) -> None:
    """Moves the last ``val_fraction`` of ``x_train``/``y_train`` to ``x_val``/``y_val``
    (``classes``: refuse a split that takes every example of a class).

    Raises:
      ValueError: too few examples, or a class whose every example the split would take
        (named, with its count in the file's ``y_train``).
    """
    x, y = raw["x_train"], raw["y_train"]
    n_val = max(1, int(round(len(x) * val_fraction)))
    if n_val >= len(x):
        raise ValueError(
            f"x_train in {str(path)!r} has {len(x)} example(s): too few to split off a "
            "validation set; add x_val and y_val to the file."
        )
    kept = np.unique(y[:-n_val]) if classes else np.zeros(0)
    lost = np.setdiff1d(np.unique(y[-n_val:]), kept) if classes else np.zeros(0)
    if lost.size:
        c = int(lost[0])
        count = int(np.sum(y == c))
        others = f" (and {lost.size - 1} more class(es))" if lost.size > 1 else ""
        raise ValueError(
            f"y_train in {str(path)!r} has {count} example(s) of class {c}{others}, all in its "
            f"last {n_val} example(s), which become the validation split (the file has no "
            f"x_val/y_val): no class-{c} example is left to train on. Give each class at least "
            "2 examples, not all at the end of y_train, or add x_val and y_val to the file."
        )
    raw["x_val"], raw["y_val"] = x[-n_val:], y[-n_val:]
    raw["x_train"], raw["y_train"] = x[:-n_val], y[:-n_val]


def load_npz(path, *, val_fraction: float = 0.1, attributes: bool = False) -> Dataset:
    """A :class:`Dataset` from a ``.npz`` of ``x_train, y_train, x_test, y_test`` (optional
    ``x_val``/``y_val`` and ``num_classes``).

    Without ``x_val`` the last ``val_fraction`` of the training arrays validate. Labels are
    integers (integral floats are converted; other floats are regression targets, with
    ``num_classes`` 0; a 2-D 0/1 array is attribute labels); ``num_classes`` defaults to
    ``max + 1`` with every class present in the training labels (see
    :func:`infer_num_classes`). Inputs keep their dtype (no standardisation:
    ``jnn.monitor.diagnose`` says when they look unscaled).
    Inputs of shape ``(N, L, C)`` or ``(N, H, W, C)`` keep their spatial layout for CNNs.

    Args:
      path: the file.
      val_fraction: the validation share when the file has no ``x_val``.
      attributes: the labels are yes/no attributes (``--task attributes``): 2-D 0/1 rows
        with exactly one 1 are taken as they are, not refused as one-hot class labels.

    Returns:
      A checked :class:`Dataset`.

    Raises:
      ValueError: an unreadable file, missing or mismatched arrays, bad labels or values,
        naming the problem.
    """
    path = Path(path)
    raw = _read(path)
    _check_pairs(raw, path)
    for name in ("y_train", "y_val", "y_test"):
        if name in raw:
            check_class_labels(raw[name], name, attributes=attributes)
            raw[name] = _labels(raw[name], name)
    given = int(raw["num_classes"]) if "num_classes" in raw else None
    if "x_val" not in raw:
        y = raw["y_train"]
        classes = y.ndim == 1 and np.issubdtype(y.dtype, np.integer)
        if classes:
            # Checked on the user's own y_train before the split, so no message names a y_val
            # the file does not hold.
            validate(raw["x_train"], y, infer_num_classes(y, given))
        _carve_validation(raw, path, val_fraction, classes)
    shape = tuple(np.shape(raw["x_train"])[1:])
    ds = Dataset(
        **{k: raw[k] for k in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")},
        num_classes=_num_classes(raw),
        input_shape=shape,
        image_shape=shape if len(shape) >= 2 else None,
        name=path.name,
    )
    check_dataset(ds, attributes=attributes)
    return ds
