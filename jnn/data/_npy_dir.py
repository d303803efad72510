"""Your own arrays from a folder of ``.npy`` files, opened memory-mapped (never read whole)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from jnn.data._dataset import Dataset
from jnn.data._npz import _labels
from jnn.data._validate import check_dataset, infer_num_classes

__all__ = ["FILES", "load_npy_dir", "mapped_bytes"]

FILES = ("x_train", "y_train", "x_test", "y_test")
"""The arrays a data folder must hold (as ``NAME.npy``); ``x_val`` / ``y_val`` are optional."""

LAYOUT = (
    "a data folder holds x_train.npy, y_train.npy, x_test.npy, y_test.npy (optional x_val.npy "
    "with y_val.npy)"
)


def _open(path: Path):
    """The array in ``path``, memory-mapped (read-only)."""
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        why = str(err).splitlines()[0] if str(err) else type(err).__name__
        if "pickle" in why or "Object arrays" in why:
            why = "object arrays / pickles are refused"
        raise ValueError(f"cannot read {str(path)!r} as .npy: {why}") from None


def _arrays(folder: Path) -> dict:
    """The folder's arrays by name; a missing file is named."""
    missing = [f"{k}.npy" for k in FILES if not (folder / f"{k}.npy").is_file()]
    if missing:
        raise ValueError(f"{str(folder)!r} has no {', '.join(missing)} ({LAYOUT}).")
    val = [(folder / f"{k}.npy").is_file() for k in ("x_val", "y_val")]
    if val[0] != val[1]:
        have, lack = ("x_val", "y_val") if val[0] else ("y_val", "x_val")
        raise ValueError(f"{str(folder)!r} has {have}.npy but no {lack}.npy: give both or neither.")
    names = FILES + (("x_val", "y_val") if all(val) else ())
    raw = {k: _open(folder / f"{k}.npy") for k in names}
    for part in ("train", "val", "test"):
        x, y = raw.get(f"x_{part}"), raw.get(f"y_{part}")
        if x is not None and (x.ndim < 1 or y.ndim < 1 or len(x) != len(y)):
            raise ValueError(
                f"x_{part}.npy has shape {x.shape} but y_{part}.npy has shape {y.shape} in "
                f"{str(folder)!r}: one label per example."
            )
    return raw


def _label_array(y, name: str):
    """Integer labels as they are (still mapped); integral floats converted (in memory)."""
    return y if np.issubdtype(y.dtype, np.integer) else _labels(y, name)


def load_npy_dir(path, *, val_fraction: float = 0.1, check: bool = True) -> Dataset:
    """A :class:`Dataset` of memory-mapped arrays from a folder of ``.npy`` files.

    The folder holds ``x_train.npy``, ``y_train.npy``, ``x_test.npy``, ``y_test.npy`` and
    optionally ``x_val.npy`` with ``y_val.npy``. Each is opened with
    ``np.load(..., mmap_mode="r")``: the inputs stay in the file (``jnn.train.fit`` streams
    them); only the labels are read. Without ``x_val`` the last ``val_fraction`` of the
    training rows validate (a view of the same file). The checks are those of ``load_npz``
    (labels, NaN/inf, shapes; :func:`check_dataset`), done slice by slice.

    Args:
      path: the folder.
      val_fraction: the validation share when the folder has no ``x_val.npy``.
      check: run :func:`check_dataset` (one read of every file).

    Raises:
      ValueError: a missing or unreadable file (named), mismatched shapes, bad labels or
        values.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise ValueError(f"{str(folder)!r} is not a folder ({LAYOUT}).")
    raw = _arrays(folder)
    for name in ("y_train", "y_val", "y_test"):
        if name in raw:
            raw[name] = _label_array(raw[name], name)
    if "x_val" not in raw:
        n_val = max(1, int(round(len(raw["x_train"]) * val_fraction)))
        if n_val >= len(raw["x_train"]):
            raise ValueError(f"x_train has {len(raw['x_train'])} examples: too few to validate.")
        raw["x_val"], raw["y_val"] = raw["x_train"][-n_val:], raw["y_train"][-n_val:]
        raw["x_train"], raw["y_train"] = raw["x_train"][:-n_val], raw["y_train"][:-n_val]
    shape = tuple(raw["x_train"].shape[1:])
    ds = Dataset(
        **{k: raw[k] for k in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")},
        num_classes=infer_num_classes(raw["y_train"]),
        input_shape=shape,
        image_shape=shape if len(shape) >= 2 else None,
        name=folder.name,
    )
    if check:
        check_dataset(ds)
    return ds


def mapped_bytes(ds: Dataset) -> int:
    """The bytes of a data set's memory-mapped arrays (what a chunkwise check reads)."""
    return sum(a.nbytes for a in ds.arrays().values() if isinstance(a, np.memmap))
