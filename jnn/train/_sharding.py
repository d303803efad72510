"""Where the arrays of a training run live on a ``jax.sharding.Mesh``.

jnn scales out on JAX's own engine: a :class:`Layout` names a ``NamedSharding`` for every
array of a run and the jitted step or epoch pins them with ``with_sharding_constraint``;
XLA's SPMD partitioner then splits the work and inserts the collectives (the gradient's
all-reduce, FSDP's all-gathers and reduce-scatters). No ``shard_map``, so no hand-written
collectives and none of ``vmap``-over-``shard_map``'s replication-check traps
(jax-ml/jax#34249): an ensemble's ``vmap`` composes with the shardings unchanged.

The documented shardings, on a mesh with axes ``"data"`` (size ``D``) and optionally
``"ensemble"`` (size ``E``):

============================  ======================================================
array                         ``PartitionSpec``
============================  ======================================================
batch ``(B, ...)``            ``P("data")``: device ``d`` computes rows
                              ``d*B/D .. (d+1)*B/D`` of every global batch
per-member batch              ``P("ensemble", "data")``
``(K, B, ...)``
params, model state,          ``P()`` (replicated); with ``fsdp=True`` each leaf's
optimizer state, step         largest axis that ``D`` divides is split on ``"data"``
                              (``P(..., "data", ...)``), the others replicated
ensemble state ``(K, ...)``   ``P("ensemble", ...)``: members split over the
                              ``"ensemble"`` axis (replicated without one), the rest
                              as above
resident training data        ``P()``: replicated on every device
============================  ======================================================

Why the training data are *replicated*: each epoch draws one global permutation and
gathers every global batch from it, exactly as on one device, so ``D`` devices reach the
same parameters as one. With the data on every device, each device gathers its own
``B/D`` rows locally: no communication per step for the inputs. The price is memory (the
whole training set on every device), which suits jnn's in-memory data sets; a data set
that does not fit on one device needs a streaming input pipeline instead.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

__all__ = [
    "DATA",
    "ENSEMBLE",
    "Layout",
    "agreed",
    "as_layout",
    "constrained",
    "host",
    "make_mesh",
    "placed",
]

DATA, ENSEMBLE = "data", "ensemble"


def _local_devices_per_process(count: int) -> list:
    """The first ``count`` local devices of every process, process by process."""
    local = jax.local_device_count()
    if not 1 <= count <= local:
        raise ValueError(
            f"devices={count}: each process has {local} local device(s); on CPU set "
            f"XLA_FLAGS=--xla_force_host_platform_device_count={count} before JAX starts"
        )
    by_process: dict = {}
    for device in jax.devices():
        by_process.setdefault(device.process_index, []).append(device)
    firsts = [sorted(by_process[p], key=lambda d: d.id)[:count] for p in sorted(by_process)]
    return [d for group in firsts for d in group]


def make_mesh(devices=None, *, ensemble: int = 1) -> Mesh:
    """A mesh with a ``"data"`` axis (and an ``"ensemble"`` axis when ``ensemble > 1``).

    Args:
      devices: ``None`` (every device of every process), an int ``N`` (the first ``N`` local
        devices of each process, so ``N * process_count`` in all), or a list of devices.
      ensemble: the size of the ``"ensemble"`` axis; the devices are laid out as
        ``(ensemble, n // ensemble)``, so each row of data-parallel devices is contiguous
        (on one host when the devices of a host are a multiple of a row).

    Returns:
      ``Mesh(devices, ("data",))`` or ``Mesh(devices.reshape(E, D), ("ensemble", "data"))``.
    """
    if devices is None:
        chosen = jax.devices()
    elif isinstance(devices, int) and not isinstance(devices, bool):
        chosen = _local_devices_per_process(devices)
    else:
        chosen = list(devices)
    if not isinstance(ensemble, int) or ensemble < 1 or len(chosen) % ensemble:
        raise ValueError(
            f"ensemble={ensemble!r} must be a positive int dividing the {len(chosen)} devices"
        )
    grid = np.array(chosen, dtype=object)
    if ensemble == 1:
        return Mesh(grid, (DATA,))
    return Mesh(grid.reshape(ensemble, len(chosen) // ensemble), (ENSEMBLE, DATA))


def _is_key(leaf) -> bool:
    return hasattr(leaf, "dtype") and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key)


def _fsdp_axis(shape, first: int, size: int):
    """The largest axis (from ``first`` on) that ``size`` divides, or ``None``."""
    axes = [a for a in range(first, len(shape)) if shape[a] >= size and shape[a] % size == 0]
    return max(axes, key=lambda a: shape[a]) if axes and size > 1 else None


class Layout(NamedTuple):
    """The shardings of one run's arrays on ``mesh`` (hashable: a compiled program's key).

    Attributes:
      mesh: axes named ``"data"`` and/or ``"ensemble"``.
      fsdp: split params and optimizer state on ``"data"`` (FSDP) instead of replicating.
      members: state leaves carry a leading member axis (an ensemble).
      per_member_batch: batches are ``(K, B, ...)`` (bootstrap / per-member order).
    """

    mesh: Mesh
    fsdp: bool = False
    members: bool = False
    per_member_batch: bool = False

    def size(self, axis: str) -> int:
        """The mesh's size along ``axis`` (1 when it has no such axis)."""
        return int(self.mesh.shape.get(axis, 1))

    def describe(self) -> str:
        """``"data=8"``, ``"ensemble=2 data=4"`` (plus ``" fsdp"``), for the console."""
        names = [n for n in (ENSEMBLE, DATA) if n in self.mesh.shape]
        text = " ".join(f"{n}={self.size(n)}" for n in names)
        return text + (" fsdp" if self.fsdp else "")

    def check(self, batch_size: int, num_members: int | None = None) -> None:
        """Raises ``ValueError`` unless the data axis divides the global batch (and the
        ensemble axis the members)."""
        data = self.size(DATA)
        if batch_size % data:
            raise ValueError(
                f"batch_size={batch_size} (the global batch) must divide by the mesh's "
                f"'data' axis of {data} devices; use a batch size that is a multiple of {data} "
                "or fewer devices"
            )
        ens = self.size(ENSEMBLE)
        if num_members is not None and num_members % ens:
            raise ValueError(
                f"{num_members} ensemble members must divide by the mesh's 'ensemble' axis "
                f"of {ens} devices"
            )

    def _spec(self, shape) -> P:
        spec = [None] * len(shape)
        first = 0
        if self.members and shape:
            first = 1
            if ENSEMBLE in self.mesh.shape and shape[0] % self.size(ENSEMBLE) == 0:
                spec[0] = ENSEMBLE
        if self.fsdp:
            axis = _fsdp_axis(shape, first, self.size(DATA))
            if axis is not None:
                spec[axis] = DATA
        return P(*spec)

    def state(self, tree):
        """The ``NamedSharding`` of every leaf of a state (params, optimizer state, step,
        any carry): replicated, FSDP-split and/or member-split as documented above."""
        return jax.tree.map(lambda a: NamedSharding(self.mesh, self._spec(np.shape(a))), tree)

    def batch(self, tree):
        """The ``NamedSharding`` of every leaf of a batch: ``P("data")`` on its batch axis
        (``P("ensemble", "data")`` for per-member batches)."""
        lead = (ENSEMBLE, DATA) if self.per_member_batch else (DATA,)
        lead = tuple(n if n in self.mesh.shape else None for n in lead)
        return jax.tree.map(lambda _: NamedSharding(self.mesh, P(*lead)), tree)

    def replicated(self, tree):
        """``P()`` for every leaf (the resident data, validation data, epoch summaries)."""
        return jax.tree.map(lambda _: NamedSharding(self.mesh, P()), tree)

    def resident(self, tree):
        """``tree`` placed replicated on every device (``put`` with :meth:`replicated`)."""
        return self.put(tree, self.replicated(tree))

    def constrain(self, tree, shardings):
        """``with_sharding_constraint`` of ``tree`` to ``shardings`` (inside ``jit``)."""
        return jax.lax.with_sharding_constraint(tree, shardings)

    def put(self, tree, shardings):
        """``tree`` placed with ``shardings`` (a no-op for leaves already placed so).

        Works in a multi-process run too: host values (NumPy, or a process's local copy of
        the same value) are put on this process's devices of the global array, so every
        process must pass the same values (the replicated state, the resident data).
        """
        return jax.tree.map(_put_leaf, tree, shardings)


def _put_leaf(leaf, sharding):
    if isinstance(leaf, jax.Array) and leaf.sharding.is_equivalent_to(sharding, leaf.ndim):
        return leaf
    if _is_key(leaf):
        impl = jax.random.key_impl(leaf)
        return jax.random.wrap_key_data(_put_leaf(jax.random.key_data(leaf), sharding), impl=impl)
    if jax.process_count() > 1:
        leaf = host(leaf)  # device_put of a jax.Array to other processes' devices is refused
    return jax.device_put(leaf, sharding)


def as_layout(mesh, *, fsdp: bool = False, members: bool = False, per_member_batch=False):
    """``None`` for ``mesh=None`` (one device, today's behaviour), else a :class:`Layout`.

    Args:
      mesh: ``None``, a ``jax.sharding.Mesh`` with axes ``"data"`` / ``"ensemble"``, or an
        int ``N`` (:func:`make_mesh` ``(N)``: the first ``N`` local devices of each process).
      fsdp, members, per_member_batch: as for :class:`Layout`.
    """
    if mesh is None:
        if fsdp:
            raise ValueError("fsdp=True needs a mesh (mesh=N devices or a jax.sharding.Mesh)")
        return None
    if isinstance(mesh, int) and not isinstance(mesh, bool):
        mesh = make_mesh(mesh)
    if not isinstance(mesh, Mesh):
        raise TypeError(f"mesh must be a jax.sharding.Mesh, an int or None, got {mesh!r}")
    extra = set(mesh.axis_names) - {DATA, ENSEMBLE}
    if extra:
        raise ValueError(f"mesh axes must be named 'data' and/or 'ensemble', got {mesh.axis_names}")
    return Layout(mesh, bool(fsdp), members, bool(per_member_batch))


def constrained(step, layout: Layout):
    """``step(state, batch, *rest) -> (state, metrics)`` with the layout pinned inside
    ``jit``: the batch split on the data axis (each device computes its slice of the global
    batch) and the new state kept in the state sharding (XLA reduces the gradients)."""

    def run(state, batch, *rest):
        batch = layout.constrain(batch, layout.batch(batch))
        new, metrics = step(state, batch, *rest)
        return layout.constrain(new, layout.state(new)), metrics

    return run


def placed(step, layout: Layout):
    """A jitted ``step(state, batch, *rest)`` that first checks the batch against the mesh
    and puts ``state`` and ``batch`` in their shardings (a no-op once they are there, so a
    loop pays it on the first call only)."""

    def run(state, batch, *rest):
        leaves = jax.tree.leaves(batch)
        members = jax.tree.leaves(state)[0].shape[0] if layout.members else None
        layout.check(int(np.shape(leaves[0])[1 if layout.per_member_batch else 0]), members)
        state = layout.put(state, layout.state(state))
        return step(state, layout.put(batch, layout.batch(batch)), *rest)

    return run


def host(tree):
    """Every leaf as a NumPy array of its global value, in any process.

    A leaf held by this process alone is copied; a replicated one is read from a local
    copy; one split over several processes is all-gathered (a collective: every process
    must call this with the same tree, as jnn's loops do). A typed PRNG key (an NNX RNG
    stream's, in a model state), which NumPy cannot hold, comes back as a key of the same
    implementation around its gathered key data.
    """

    def one(leaf):
        if isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            data = one(jax.random.key_data(leaf))
            return jax.random.wrap_key_data(data, impl=jax.random.key_impl(leaf))
        if not isinstance(leaf, jax.Array) or leaf.is_fully_addressable:
            return np.asarray(jax.device_get(leaf))
        if leaf.is_fully_replicated:
            return np.asarray(leaf.addressable_data(0))
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(leaf, tiled=True))

    return jax.tree.map(one, tree)


def agreed(flag: bool) -> bool:
    """Process 0's decision in every process of a multi-process run (a save is collective:
    every process must take part, so a clock-based choice must be one choice)."""
    if jax.process_count() == 1:
        return flag
    from jax.experimental import multihost_utils

    return bool(multihost_utils.broadcast_one_to_all(np.asarray(flag)))
