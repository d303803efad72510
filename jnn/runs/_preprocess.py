"""``--preprocess``: the inputs' transform, fitted on the training split only and stored in
the run folder (``preprocess.npz``) so that ``--resume`` and evaluation apply the very same
one. The transforms are :mod:`jnn.preprocessing`'s."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from jnn.runs._config import RunConfig

__all__ = ["FILE", "apply", "fit", "load", "prepare", "save"]

FILE = "preprocess.npz"


def fit(config: RunConfig, x_train):
    """The statistics of ``--preprocess`` on the training inputs (``None`` for ``none``).

    Raises:
      ValueError: ``--pca-dims`` larger than the features (or the training examples).
    """
    import jnn.preprocessing as pre

    x = np.asarray(x_train, np.float32)
    if config.preprocess == "standardize":
        return pre.fit_standardize(x)
    if config.preprocess in ("pca", "whiten"):
        most = min(x.shape[0], x.shape[1])
        if config.pca_dims is not None and config.pca_dims > most:
            raise ValueError(
                f"--pca-dims {config.pca_dims} is larger than the {x.shape[1]} features "
                f"({x.shape[0]} training examples): at most {most}"
            )
        return pre.fit_pca(x, config.pca_dims)
    return None


def apply(config: RunConfig, stats, x) -> np.ndarray:
    """``x`` transformed by the fitted statistics (float32 host array)."""
    import jnn.preprocessing as pre

    transform = {
        "standardize": pre.standardize,
        "pca": pre.pca,
        "whiten": pre.pca_whiten,
    }[config.preprocess]
    return np.asarray(transform(stats, np.asarray(x, np.float32)), np.float32)


def save(folder, stats) -> None:
    """Writes the statistics to ``folder/preprocess.npz``."""
    arrays = {k: np.asarray(v) for k, v in stats._asdict().items()}
    np.savez(Path(folder) / FILE, kind=type(stats).__name__, **arrays)


def load(folder):
    """The statistics stored by :func:`save`.

    Raises:
      ValueError: the run folder has none (it was not trained with ``--preprocess``).
    """
    import jax.numpy as jnp

    import jnn.preprocessing as pre

    path = Path(folder) / FILE
    if not path.exists():
        raise ValueError(f"--resume: {str(path)!r} is missing (the fitted --preprocess)")
    with np.load(path) as f:
        cls = getattr(pre, str(f["kind"]))
        return cls(**{k: jnp.asarray(f[k]) for k in cls._fields})


def prepare(config: RunConfig, ds, folder, resume: bool):
    """``(ds transformed, stats)``: fitted on the training split, or the stored ones on
    ``--resume``; ``(ds, None)`` without ``--preprocess``."""
    if config.preprocess == "none":
        return ds, None
    stats = load(folder.path) if resume else fit(config, ds.x_train)
    x = {p: apply(config, stats, getattr(ds, f"x_{p}")) for p in ("train", "val", "test")}
    shape = x["train"].shape[1:]
    image_shape = ds.image_shape if shape == tuple(ds.input_shape) else None  # PCA: flat
    return ds._replace(
        x_train=x["train"],
        x_val=x["val"],
        x_test=x["test"],
        input_shape=shape,
        image_shape=image_shape,
    ), stats
