"""Orbax checkpoints that can be trusted: a digest of every array, the newest intact one wins.

Each checkpoint holds the training carry (e.g. a ``TrainState``), the best carry so far (early
stopping) and the loop's JSON metadata, which records a BLAKE2 digest of both carries'
bytes. On restore the newest checkpoint is read and verified; one that cannot be read (a
truncated or deleted file, a missing manifest) or fails its digest (flipped bytes) is
reported in one line and the next older one is tried (the damaged one is moved aside to
``<directory>.damaged/``). Only when none is intact does restore fail, with
:class:`CheckpointError` (a short message, never a tensorstore traceback).

In a multi-process run every process takes part in each save and restore (Orbax's rules:
process 0 writes the metadata and finalises, each process writes the shards it holds, and
Orbax puts barriers around both); the folder must be one every process sees.

Saves are asynchronous (Orbax writes in the background while training continues; a
checkpoint becomes visible only once complete, so a killed process never leaves a
half-written newest checkpoint) and only the newest ``max_to_keep`` (2) are kept.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import hashlib
import logging
import os
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np

from jnn.train import _sharding

__all__ = ["CheckpointError", "Checkpoints", "Restored", "ShapeMismatch", "digest", "signature"]


class CheckpointError(ValueError):
    """No intact checkpoint could be restored (the message says which failed and why)."""


class Restored(NamedTuple):
    """What :meth:`Checkpoints.restore` found.

    Attributes:
      epoch: the checkpoint's epoch.
      carry, best: the restored training carry and best carry.
      meta: the JSON metadata saved with them.
      skipped: ``[(epoch, reason)]`` for newer checkpoints that were damaged.
    """

    epoch: int
    carry: Any
    best: Any
    meta: dict
    skipped: list


def _is_key(leaf) -> bool:
    return hasattr(leaf, "dtype") and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key)


def _storable(leaf):
    """A typed PRNG key (e.g. an NNX RNG stream's key in a model state) as its raw
    ``uint32`` key data, which arrays on disk can hold; other leaves unchanged."""
    return jax.random.key_data(leaf) if _is_key(leaf) else leaf


def _restored(stored, like):
    """``stored`` back as ``like``'s kind: key data wrapped into a typed key of ``like``'s
    implementation."""
    if _is_key(like):
        return jax.random.wrap_key_data(stored, impl=jax.random.key_impl(like))
    return stored


def digest(tree) -> str:
    """A BLAKE2b digest of a pytree's leaves (dtype, shape and bytes of each, in order; a
    leaf split over processes is gathered first, so every process computes the same; a typed
    key counts as its key data)."""
    h = hashlib.blake2b(digest_size=16)
    for leaf in _sharding.host([_storable(x) for x in jax.tree.leaves(tree)]):
        a = np.ascontiguousarray(np.asarray(leaf))
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def signature(tree) -> list[str]:
    """``"path shape dtype"`` of every leaf: what a checkpoint must match to be restored."""
    return [
        f"{jax.tree_util.keystr(path)} {tuple(np.shape(leaf))} {_dtype_name(leaf)}"
        for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]
    ]


def _dtype_name(leaf) -> str:
    """``float32``, ..., or a typed key's ``key<fry>`` (which NumPy cannot name)."""
    return str(leaf.dtype) if _is_key(leaf) else np.dtype(leaf.dtype).name


class ShapeMismatch(CheckpointError):
    """The checkpoints hold arrays of other shapes than the model being resumed."""


def _flat(tree) -> dict:
    return {f"{i:05d}": _storable(leaf) for i, leaf in enumerate(jax.tree.leaves(tree))}


def _unflat(template, flat: dict):
    likes = jax.tree.leaves(template)
    leaves = [_restored(flat[k], like) for k, like in zip(sorted(flat), likes, strict=True)]
    return jax.tree.unflatten(jax.tree.structure(template), leaves)


def _first_line(err: BaseException) -> str:
    """The gist of a (tensorstore) error: its first line, without the store's spec dump."""
    text = str(err).strip().splitlines()
    line = text[0].split(" See full TensorStore details")[0] if text else ""
    return f"{type(err).__name__}: {line[:160]}".rstrip(": ")


@contextlib.contextmanager
def _quiet_abandoned_reads(settle_seconds: float = 0.5):
    """Orbax reads arrays concurrently; after the first failure the other reads are
    abandoned, finish in tensorstore's threads, and print tracebacks (an exception never
    retrieved, an event loop already closed) when they end or are collected. On a failure,
    give them ``settle_seconds`` to end and collect them, with Python's hooks for such
    reports silenced; a successful read changes nothing."""
    hooks = (sys.unraisablehook, sys.excepthook, threading.excepthook)
    sys.unraisablehook = sys.excepthook = threading.excepthook = lambda *args: None
    try:
        yield
    except Exception:
        time.sleep(settle_seconds)
        gc.collect()
        # Reads still pending are destroyed when the interpreter exits: silence those reports
        # too (only in a process that met a damaged checkpoint, and only at exit).
        atexit.register(_silence_unraisable)
        raise

    finally:
        sys.unraisablehook, sys.excepthook, threading.excepthook = hooks


def _silence_unraisable():
    sys.unraisablehook = lambda unraisable: None


def _quiet_absl():
    """Orbax logs through absl at INFO/WARNING level; keep those off the user's console."""
    try:
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.ERROR)
    except ImportError:  # pragma: no cover - absl comes with orbax
        pass
    logging.getLogger("absl").setLevel(logging.ERROR)


def _check_folder(directory: str) -> None:
    """Raises ``ValueError`` (before anything is trained or created) unless ``directory`` is a
    folder, or can be made one, that this process may write."""
    probe = Path(directory)
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir():
        raise ValueError(f"checkpoint_dir {directory!r} is not a folder ({str(probe)!r} is a file)")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ValueError(f"checkpoint_dir {directory!r}: {str(probe)!r} is not writable")


class Checkpoints:
    """A folder of checkpoints ``{carry, best, meta}`` per epoch (the newest ``max_to_keep``).

    Args:
      directory: the folder (created if missing).
      max_to_keep: how many checkpoints to keep.
      asynchronous: write in the background (``wait`` blocks until written).
    """

    def __init__(self, directory, *, max_to_keep: int = 2, asynchronous: bool = True):
        _quiet_absl()
        import orbax.checkpoint as ocp

        self._ocp = ocp
        self.directory = os.path.abspath(os.fspath(directory))
        _check_folder(self.directory)
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=max_to_keep, create=True, enable_async_checkpointing=asynchronous
            ),
        )

    def epochs(self) -> list[int]:
        """The epochs of the checkpoints present, newest first."""
        return sorted(self._manager.all_steps(read=True), reverse=True)

    def save(self, epoch: int, carry, best, meta: dict) -> None:
        """Writes checkpoint ``epoch`` (in the background); ``meta`` gets the digests."""
        ocp = self._ocp
        meta = {
            **meta,
            "digest": {"carry": digest(carry), "best": digest(best)},
            "shapes": signature(carry),
        }
        self._manager.save(
            epoch,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(_flat(carry)),
                best=ocp.args.StandardSave(_flat(best)),
                meta=ocp.args.JsonSave(meta),
            ),
            force=True,
        )

    def wait(self) -> None:
        """Blocks until every save started so far is on disk."""
        self._manager.wait_until_finished()

    def _read(self, epoch: int, template) -> Restored:
        ocp = self._ocp
        target = _flat(template)
        got = self._manager.restore(
            epoch,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(target),
                best=ocp.args.StandardRestore(target),
                meta=ocp.args.JsonRestore(),
            ),
        )
        carry, best, meta = _unflat(template, got.state), _unflat(template, got.best), got.meta
        expected = (meta or {}).get("digest") or {}
        if expected.get("carry") != digest(carry) or expected.get("best") != digest(best):
            raise CheckpointError("its arrays do not match the digest saved with them")
        return Restored(epoch, carry, best, meta, [])

    def restore(self, template) -> Restored | None:
        """The newest intact checkpoint, or ``None`` when the folder holds none.

        Args:
          template: a carry with the right structure, shapes and dtypes.

        Returns:
          :class:`Restored` (``skipped`` lists the damaged newer ones), or ``None``.

        Raises:
          CheckpointError: checkpoints exist but none is intact.
        """
        self.wait()
        skipped = []
        epochs = self.epochs()
        if epochs:
            self._check_shapes(epochs[0], template)
        for epoch in epochs:
            try:
                with _quiet_abandoned_reads():
                    found = self._read(epoch, template)
            except Exception as err:  # noqa: BLE001 - any failure to read means "damaged"
                skipped.append((epoch, _first_line(err)))
                continue
            self._quarantine([e for e, _ in skipped])
            return found._replace(skipped=skipped)
        if skipped:
            detail = "; ".join(f"epoch {e}: {why}" for e, why in skipped)
            raise CheckpointError(f"no intact checkpoint in {self.directory} ({detail})")
        return None

    def _check_shapes(self, epoch: int, template) -> None:
        """Raises :class:`ShapeMismatch` (checkpoints left where they are) when checkpoint
        ``epoch`` records leaves of other shapes or dtypes than ``template``'s."""
        ocp = self._ocp
        try:
            with _quiet_abandoned_reads():
                meta = self._manager.restore(
                    epoch, args=ocp.args.Composite(meta=ocp.args.JsonRestore())
                ).meta
        except Exception:  # noqa: BLE001 - an unreadable one is judged by restore itself
            return
        stored, now = (meta or {}).get("shapes"), signature(template)
        if stored is None or stored == now:
            return
        diff = next(
            (f"{a} saved, {b} now" for a, b in zip(stored, now, strict=False) if a != b),
            f"{len(stored)} arrays saved, {len(now)} now",
        )
        raise ShapeMismatch(
            f"the checkpoints in {self.directory} do not fit this model (first difference: "
            f"{diff}); were the run's options (config.json) changed? The checkpoints are left "
            "as they are"
        )

    def _quarantine(self, epochs) -> None:
        """Moves damaged checkpoints to ``<directory>.damaged/`` (kept for inspection, out of
        the way of the epochs that will be trained and saved again)."""
        if not epochs:
            return
        if jax.process_index() == 0:  # one process moves; the others wait for it
            aside = Path(self.directory + ".damaged")
            aside.mkdir(parents=True, exist_ok=True)
            for epoch in epochs:
                source = Path(self.directory) / str(epoch)
                if source.exists():
                    stamp = time.strftime("%Y%m%d-%H%M%S")
                    shutil.move(str(source), str(aside / f"{epoch}-{stamp}"))
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices("jnn-checkpoint-quarantine")
        self._manager.reload()

    def close(self) -> None:
        """Waits for pending writes and releases the manager."""
        try:
            self._manager.wait_until_finished()
        finally:
            self._manager.close()
