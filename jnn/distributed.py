"""Many hosts: a thin layer over ``jax.distributed`` (no launcher, no communication layer).

Every process runs the same program: ``initialize`` joins it to the others, then
``jnn.train.fit(..., mesh=jnn.train.make_mesh())`` (or ``jnn.ensemble.fit``) trains one
model over every device of every process; XLA's collectives (gloo on CPU) reduce the
gradients. The user's code does not change beyond the mesh::

    # on each host i of P (or: JNN_COORDINATOR=10.0.0.1:1234 JNN_NUM_PROCESSES=P
    # JNN_PROCESS_ID=i python train.py)
    jnn.distributed.initialize("10.0.0.1:1234", num_processes=P, process_id=i)
    result = jnn.train.fit(..., mesh=jnn.train.make_mesh())

Rules a multi-process run follows (jnn's loops keep them):

- every process calls the same jnn functions with the same arguments and runs the same
  number of steps: early stopping, a NaN stop and time-based checkpoints are decided on
  values every process shares, so no process leaves while the others wait in a collective;
- in ``fit`` each process holds the whole training set (replicated, see
  ``jnn.train._sharding``) and its devices gather their own rows of every global batch;
  with ``make_step`` each process feeds its own rows (:func:`global_batch`);
- only process 0 writes the ``jnn train`` run folder; checkpoints follow Orbax's
  multi-process rules (every process takes part in each save and restore, process 0 writes
  the metadata; the folder must be one all processes see, e.g. a shared file system).
"""

from __future__ import annotations

import math
import os
import socket
import sys
import threading
import time
from typing import NamedTuple

__all__ = [
    "ProcessInfo",
    "global_batch",
    "initialize",
    "is_primary",
    "local_rows",
    "process_info",
    "shutdown",
]

ENV = {"coordinator": "JNN_COORDINATOR", "num": "JNN_NUM_PROCESSES", "id": "JNN_PROCESS_ID"}
_GRACE = 1.0  # seconds past the time-out before a process stuck in initialize is ended
RESOLVE_SECONDS = 10.0  # a coordinator host name that does not resolve for this long fails


class ProcessInfo(NamedTuple):
    """Where this process stands.

    Attributes:
      process_index: this process's id (0 for a single-process run).
      process_count: the number of processes.
      local_devices: this process's devices.
      devices: every process's devices (the devices a mesh may span).
    """

    process_index: int
    process_count: int
    local_devices: int
    devices: int


def _env_int(name: str, value):
    if value is not None:
        return value
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from None


def _resolved(coordinator_address, num_processes, process_id):
    """The three settings from the arguments or ``JNN_*``, checked."""
    address = coordinator_address or os.environ.get(ENV["coordinator"]) or None
    num = _env_int(ENV["num"], num_processes)
    pid = _env_int(ENV["id"], process_id)
    missing = [
        f"{arg} (or {env})"
        for arg, env, v in (
            ("coordinator_address", ENV["coordinator"], address),
            ("num_processes", ENV["num"], num),
            ("process_id", ENV["id"], pid),
        )
        if v is None
    ]
    if missing:
        raise ValueError("jnn.distributed.initialize needs " + ", ".join(missing))
    host, _, port = str(address).rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"coordinator_address must be HOST:PORT, got {address!r}")
    if not isinstance(num, int) or num < 1:
        raise ValueError(f"num_processes must be an int >= 1, got {num!r}")
    if not isinstance(pid, int) or not 0 <= pid < num:
        raise ValueError(f"process_id must be an int in [0, {num}), got {pid!r}")
    return str(address), host.strip("[]"), int(port), num, pid


def _reach(host: str, port: int, deadline: float, address: str, pid: int, num: int) -> None:
    """Waits until the coordinator accepts a TCP connection; ``TimeoutError`` at the deadline
    (JAX itself would abort the process with a gRPC trace some seconds later)."""
    unresolved_until = time.monotonic() + RESOLVE_SECONDS
    while True:
        left = deadline - time.monotonic()
        try:
            with socket.create_connection((host, port), timeout=max(0.05, min(1.0, left))):
                return
        except socket.gaierror as err:
            if time.monotonic() + 0.2 >= min(deadline, unresolved_until):
                raise TimeoutError(
                    f"jnn.distributed: process {pid} of {num}: the coordinator host {host!r} "
                    f"(of {address}) does not resolve ({err.strerror or err}); check the name"
                ) from None
            time.sleep(0.2)
        except OSError as err:
            if time.monotonic() + 0.2 >= deadline:
                raise TimeoutError(
                    f"jnn.distributed: process {pid} of {num} could not reach the coordinator "
                    f"at {address} within its time-out ({err.strerror or err}); is process 0 "
                    "running, with the same coordinator address and a reachable port?"
                ) from None
            time.sleep(0.2)


def _watchdog(done: threading.Event, seconds: float, what: str) -> None:
    """Ends the process with a clear message if ``initialize`` has not returned in time.

    JAX's own answer to a peer that never arrives is to abort the process with a C++ stack
    trace a few seconds past the time-out; this says what happened first, then exits (1).
    """

    def watch():
        if not done.wait(seconds):
            sys.stderr.write(f"jnn.distributed: {what}\n")
            sys.stderr.flush()
            os._exit(1)

    threading.Thread(target=watch, name="jnn-distributed-watchdog", daemon=True).start()


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    timeout: float = 300,
    cpu_collectives: str | None = "gloo",
) -> ProcessInfo:
    """Joins this process to a multi-process run (``jax.distributed.initialize``).

    Call it first, before anything touches JAX's devices. Each argument left ``None`` is read
    from the environment: ``JNN_COORDINATOR`` (``HOST:PORT`` of process 0, which starts the
    coordinator there), ``JNN_NUM_PROCESSES``, ``JNN_PROCESS_ID``. A second call in the same
    process is a no-op.

    Failing clearly instead of hanging: a process other than 0 first waits (at most
    ``timeout`` seconds) for the coordinator's port and raises ``TimeoutError`` naming it
    if it never answers; a process still waiting for its peers after ``timeout`` seconds
    prints what it was waiting for and exits with status 1.

    Args:
      coordinator_address: ``"HOST:PORT"`` of process 0 (e.g. ``"10.0.0.1:1234"``).
      num_processes: the number of processes ``P``.
      process_id: this process's id in ``[0, P)``.
      timeout: seconds to wait for the coordinator and the other processes
        (``initialization_timeout``).
      cpu_collectives: the CPU collectives implementation (``"gloo"``; ``None`` leaves JAX's
        setting), needed for cross-process reductions between CPU devices.

    Returns:
      :func:`process_info` after joining.

    Raises:
      ValueError: a missing or malformed setting (named).
      TimeoutError: the coordinator could not be reached within ``timeout``.
      RuntimeError: JAX was already initialised (its devices used) in this process.
    """
    import jax

    if jax.distributed.is_initialized():
        return process_info()
    address, host, port, num, pid = _resolved(coordinator_address, num_processes, process_id)
    if not timeout > 0:
        raise ValueError(f"timeout must be > 0 seconds, got {timeout!r}")
    deadline = time.monotonic() + timeout
    if cpu_collectives is not None:
        jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)
    if pid != 0:
        _reach(host, port, deadline, address, pid, num)
    left = max(1, math.ceil(deadline - time.monotonic()))
    done = threading.Event()
    waiting = "the other processes" if pid == 0 else "the coordinator to admit it"
    _watchdog(
        done,
        deadline - time.monotonic() + _GRACE,
        f"process {pid} of {num} gave up after {timeout:g} s waiting for {waiting} at "
        f"{address} (are all {num} processes started, with the same coordinator address and "
        "num_processes, and distinct process ids?)",
    )
    try:
        jax.distributed.initialize(address, num, pid, initialization_timeout=left)
    except RuntimeError as err:
        if "before" not in str(err):
            raise
        raise RuntimeError(
            f"jnn.distributed.initialize must run before anything uses JAX's devices: {err}"
        ) from None
    finally:
        done.set()
    return process_info()


def shutdown() -> None:
    """Leaves the multi-process run (``jax.distributed.shutdown``; a no-op without one)."""
    import jax

    jax.distributed.shutdown()


def process_info() -> ProcessInfo:
    """This process's index, the number of processes and their devices."""
    import jax

    return ProcessInfo(
        jax.process_index(), jax.process_count(), jax.local_device_count(), jax.device_count()
    )


def is_primary() -> bool:
    """``True`` in process 0 (the one that writes files and prints), and without a
    multi-process run. Does not start JAX's backend before ``initialize``."""
    import jax

    return not jax.distributed.is_initialized() or jax.process_index() == 0


def _batch_sharding(mesh, per_member: bool):
    from jnn.train import _sharding

    return _sharding.as_layout(mesh, members=per_member, per_member_batch=per_member)


def local_rows(batch, mesh, *, per_member: bool = False):
    """This process's rows of a global batch held whole on the host: the slice that
    :func:`global_batch` expects from it (the rows its devices compute).

    Args:
      batch: a pytree of host arrays with the global batch on axis 0 (axis 1 with
        ``per_member``).
      mesh: the training mesh.
      per_member: batches ``(K, B, ...)``.

    Returns:
      The same pytree cut to this process's rows.
    """
    layout = _batch_sharding(mesh, per_member)
    shardings = layout.batch(batch)

    def cut(a, sharding):
        index = sharding.addressable_devices_indices_map(a.shape).values()
        axes = []
        for axis in range(min(2, a.ndim)):
            lo = min(ix[axis].start or 0 for ix in index)
            hi = max(a.shape[axis] if ix[axis].stop is None else ix[axis].stop for ix in index)
            axes.append(slice(lo, hi))
        return a[tuple(axes)]

    return _map(cut, batch, shardings)


def global_batch(local, mesh, *, per_member: bool = False):
    """The global batch as one ``jax.Array`` split on the mesh's data axis, from each
    process's own rows (``jax.make_array_from_process_local_data``): what a multi-process
    ``make_step`` loop passes to its step. Every process calls it with its rows of the same
    global batch (e.g. :func:`local_rows`); a single process passes the whole batch.

    Args:
      local: this process's rows, a pytree of host arrays.
      mesh: the training mesh.
      per_member: batches ``(K, B, ...)`` split on ``("ensemble", "data")``.

    Returns:
      The pytree of global arrays.
    """
    import jax

    layout = _batch_sharding(mesh, per_member)
    shardings = layout.batch(local)
    return _map(lambda a, s: jax.make_array_from_process_local_data(s, a), local, shardings)


def _map(fn, tree, shardings):
    import jax
    import numpy as np

    return jax.tree.map(lambda a, s: fn(np.asarray(a), s), tree, shardings)
