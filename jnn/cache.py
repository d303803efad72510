"""jnn's cache folder: compiled XLA programs and generated data sets, reused across runs.

The folder is ``$JNN_CACHE_DIR`` when set, else ``$XDG_CACHE_HOME/jnn`` (``~/.cache/jnn``).
It holds ``xla/`` (JAX's persistent compilation cache) and ``data/`` (built-in data sets that
are generated rather than shipped, e.g. MNIST-1D). Deleting it is always safe: everything
in it is rebuilt on demand. A stale, damaged or unwritable cache never fails a run: a
damaged data file fails its checksum and is regenerated; an unusable compilation cache makes
JAX compile as if there were none.

The command line turns the compilation cache on (``jnn train --no-cache`` turns it off). From
Python::

    import jnn.cache
    jnn.cache.enable_compilation_cache()   # before the first jit; returns the folder used
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

__all__ = ["cache_dir", "cached_arrays", "enable_compilation_cache"]


def cache_dir() -> Path:
    """The cache folder: ``$JNN_CACHE_DIR``, else ``$XDG_CACHE_HOME/jnn`` or ``~/.cache/jnn``."""
    if os.environ.get("JNN_CACHE_DIR"):
        return Path(os.environ["JNN_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "jnn"


def _writable(folder: Path) -> bool:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder):
            pass
        return True
    except OSError:
        return False


def enable_compilation_cache(folder=None, *, min_compile_seconds: float = 0.0) -> Path | None:
    """Turns on JAX's persistent compilation cache in ``folder`` (default ``cache_dir()/xla``).

    Sets ``jax_compilation_cache_dir`` and lowers ``jax_persistent_cache_min_compile_time_secs``
    (JAX's default of 1 s would skip jnn's small programs) and the minimum entry size, so a
    second run of the same program loads it instead of compiling. Call it before the first
    ``jit``.

    Args:
      folder: the cache folder, or ``None`` for the default.
      min_compile_seconds: programs that compile faster than this are not cached.

    Returns:
      The folder in use, or ``None`` when it cannot be written (the cache stays off).
    """
    import jax

    folder = Path(folder) if folder is not None else cache_dir() / "xla"
    if not _writable(folder):
        return None
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_compile_seconds))
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return folder


def _checksum(arrays: dict) -> str:
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _load_verified(path: Path) -> dict | None:
    """The arrays of ``path`` if it exists, reads and matches its stored checksum."""
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
        stored = str(arrays.pop("__checksum__"))
    except Exception:  # noqa: BLE001 - a missing, truncated or foreign file is a miss
        return None
    return arrays if stored == _checksum(arrays) else None


def _store(path: Path, arrays: dict) -> None:
    """Writes atomically (temporary file + rename); an unwritable cache is skipped."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".npz", delete=False) as f:
            np.savez(f, __checksum__=np.asarray(_checksum(arrays)), **arrays)
        os.replace(f.name, path)
    except OSError:
        pass


def cached_arrays(name: str, key: dict, build: Callable[[], dict], folder=None) -> dict:
    """``build()``'s dict of NumPy arrays, generated once and then read from the cache.

    The file is ``folder/data/{name}-{hash of key}.npz`` (default folder :func:`cache_dir`),
    so a different ``key`` (generation arguments, library version) is a different file. A
    file that is damaged or fails its SHA-256 checksum is regenerated and rewritten.

    Args:
      name: a readable prefix, e.g. ``"mnist1d"``.
      key: JSON-able description of everything the arrays depend on.
      build: makes the arrays (called on a miss).
      folder: the cache folder (default :func:`cache_dir`).

    Returns:
      The arrays.
    """
    tag = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
    path = Path(folder or cache_dir()) / "data" / f"{name}-{tag}.npz"
    arrays = _load_verified(path)
    if arrays is None:
        arrays = {k: np.asarray(v) for k, v in build().items()}
        _store(path, arrays)
    return arrays
