"""A streamed epoch: chunks of ``S`` steps gathered on the host, moved to the device while
the previous chunk trains (double buffering: a worker thread gathers and places chunk
``c + 1`` while chunk ``c`` runs), each chunk one compiled ``lax.scan``.

The keys and steps are those of the resident epoch (``_epoch.build_epoch``): the same
permutation from the same order key, the same step function with ``fold_in(step_key,
state.step)`` per step, the epoch's last step monitored. So a streamed epoch reaches the
parameters of a resident one (to float rounding: the epoch means are summed per chunk).
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jnn.train import _epoch, _feed
from jnn.train._state import cast_inputs

__all__ = [
    "Feed",
    "build_chunk",
    "epoch_summary",
    "evaluate_stream",
    "pipelined",
    "placed_chunks",
    "sums_of",
]


def _steps(body, carry, xs, ys):
    """``lax.scan(body, carry, (xs, ys))``, except that one step is a plain call and none is
    nothing (``{}``): a chunk of one step then compiles no loop, which matters on CPU, where
    XLA runs a convolution inside a loop many times slower than outside one (jax#12868)."""
    if xs.shape[0] == 0:
        return carry, {}
    if xs.shape[0] == 1:
        carry, metrics = body(carry, (xs[0], ys[0]))
        return carry, jax.tree.map(lambda m: m[None], metrics)
    return jax.lax.scan(body, carry, (xs, ys))


def build_chunk(steps_for: Callable, layout=None):
    """The jitted ``run(carry, xs, ys, step_key, extra, last) -> (carry, out)``.

    ``out`` holds ``loss_sum`` and ``accuracy_sum`` over the chunk's steps, ``steps`` and
    ``finite`` (every loss and the final state finite); with ``last`` (static: the epoch's
    last chunk) the final step is the monitored one and ``out`` adds its ``grad_norm`` and
    ``update_ratio``.
    """

    def run(carry, xs, ys, step_key, extra, last):
        steps = _epoch._sharded(steps_for(extra), layout)
        xs = cast_inputs(xs, carry[0].params)
        body = lambda c, b: steps.plain(c, b, step_key)
        if last:
            carry, metrics = _steps(body, carry, xs[:-1], ys[:-1])
            carry, final = steps.monitored(carry, (xs[-1], ys[-1]), step_key)
            before = lambda name: [metrics[name]] if metrics else []
            losses = jnp.concatenate([*before("loss"), final["loss"][None]])
            accs = jnp.concatenate([*before("accuracy"), final["accuracy"][None]])
        else:
            carry, metrics = _steps(body, carry, xs, ys)
            losses, accs = metrics["loss"], metrics["accuracy"]
        out = {
            "loss_sum": jnp.sum(losses, axis=0),
            "accuracy_sum": jnp.sum(accs, axis=0),
            "finite": jnp.all(jnp.isfinite(losses), axis=0) & steps.state_finite(carry[0]),
        }
        if last:
            out["grad_norm"], out["update_ratio"] = final["grad_norm"], final["update_ratio"]
        if layout is not None:
            out = layout.constrain(out, layout.replicated(out))
        return carry, out

    return jax.jit(run, static_argnames="last")


def sums_of(position, out, steps: int) -> dict:
    """The epoch's running sums (float64 lists, JSON-able) after a chunk's ``out``."""
    prev = (position or {}).get("sums") or {"loss": 0.0, "accuracy": 0.0, "steps": 0}
    add = lambda a, b: (np.asarray(a, np.float64) + np.asarray(b, np.float64)).tolist()
    return {
        "loss": add(prev["loss"], out["loss_sum"]),
        "accuracy": add(prev["accuracy"], out["accuracy_sum"]),
        "steps": prev["steps"] + steps,
    }


def epoch_summary(sums: dict, monitored: dict) -> dict:
    """The epoch's mean ``loss`` and ``accuracy`` from its running sums, with the monitored
    last step's ``grad_norm`` and ``update_ratio``."""
    return {
        "loss": np.asarray(sums["loss"]) / sums["steps"],
        "accuracy": np.asarray(sums["accuracy"]) / sums["steps"],
        "grad_norm": monitored["grad_norm"],
        "update_ratio": monitored["update_ratio"],
    }


class Feed:
    """Chunks of one stream for one run: which steps, gathered how, placed where.

    Args:
      stream: an ``_feed.ArrayStream`` or ``_feed.BatchStream``.
      draw: for arrays, the jitted ``(order_key, extra) -> (steps, ...)`` indices (the
        resident epoch's draw).
      chunk_size: steps per chunk.
      check: for batches, ``check(x, y, index)``.
      layout: the mesh layout, or ``None``.
    """

    def __init__(self, stream, draw, chunk_size, check=None, layout=None):
        self.stream, self.draw, self.size = stream, draw, chunk_size
        self.check, self.layout = check, layout

    def steps(self, order_key, extra):
        """The epoch's indices on the host (arrays), or ``None`` (batches)."""
        if self.draw is None:
            return None
        return np.asarray(jax.device_get(self.draw(order_key, extra)))

    def chunks(self, idx, position) -> Iterator[_feed.Chunk]:
        """Placed chunks of the epoch from ``position`` (``{"step", "source"}`` or None)."""
        start = (position or {}).get("step", 0)
        if idx is not None:
            gather = None if self.layout is None else (lambda ix: (ix, None))
            for c in self.stream.chunks(idx, start, self.size, gather):
                yield self._place_rows(c) if self.layout is not None else self._put(c)
        else:
            state = (position or {}).get("source")
            for c in self.stream.chunks(start, self.size, state, self.check):
                yield self._put(c)

    def _sharding(self, ndim_lead):
        spec = self.layout.batch(0).spec
        return NamedSharding(self.layout.mesh, P(None, *spec))

    def _put(self, c):
        if self.layout is None:
            return c._replace(xs=jax.device_put(c.xs), ys=jax.device_put(c.ys))
        sharding = self._sharding(None)
        count = jax.process_count()

        def put(a):  # each process holds its own rows of every global batch
            shape = (a.shape[0], a.shape[1] * count, *a.shape[2:])
            return jax.make_array_from_process_local_data(sharding, a, shape)

        return c._replace(xs=put(c.xs), ys=put(c.ys))

    def _place_rows(self, c):
        """Arrays on a mesh: each device's rows are read for it alone (so each process reads
        only its own rows of each global batch)."""
        idx = c.xs
        sharding = self._sharding(None)
        gather = self.stream.gather
        sample_x, sample_y = self.stream.example()

        def make(which, sample):
            shape = (*idx.shape, *sample.shape[1:])
            lead = idx.ndim
            return jax.make_array_from_callback(
                shape,
                sharding,
                lambda index: gather(idx[index[:lead]])[which][
                    (slice(None),) * lead + tuple(index[lead:])
                ],
            )

        return c._replace(xs=make(0, sample_x), ys=make(1, sample_y))


_END = object()


def pipelined(chunks, carry, dispatch: Callable, settle: Callable):
    """Runs an epoch's chunks with each one dispatched before the previous one is read back.

    The host's reading back and bookkeeping of chunk ``c`` (its finite check, running sums,
    in-epoch checkpoint hook) then overlaps the device's work on chunk ``c + 1``, which starts
    from chunk ``c``'s result before it is settled. When settling replaces that result (a
    chunk run again guarded), chunk ``c + 1`` is dispatched again from the replacement, so the
    results are those of running the chunks one after the other.

    Args:
      chunks: ``(chunk, last)`` pairs (:func:`placed_chunks`).
      carry: the carry before the first chunk.
      dispatch: ``(carry, chunk, last) -> (new, out)``, asynchronous (a jitted call).
      settle: ``(before, chunk, last, new, out) -> (carry_after, stop)``: reads ``out`` back;
        ``stop`` not ``None`` ends the epoch (it is returned).

    Returns:
      ``(carry, stop)``: the carry after the last settled chunk and ``stop`` (or ``None``).
      A ``ValueError`` from ``chunks`` is raised after the chunk in flight is settled (what
      was trained is kept).
    """
    pending = None
    try:
        for chunk, last in chunks:
            start = carry if pending is None else pending[3]
            new, out = dispatch(start, chunk, last)
            if pending is not None:
                previous, pending = pending, None  # an error in settle does not settle it again
                carry, stop = settle(*previous)
                if stop is not None:
                    return carry, stop
                if carry is not start:  # the previous chunk was replaced: so is this one
                    start = carry
                    new, out = dispatch(start, chunk, last)
            pending = (start, chunk, last, new, out)
    except ValueError:
        if pending is not None:
            settle(*pending)
        raise
    return (carry, None) if pending is None else settle(*pending)


def placed_chunks(chunks: Iterator, depth: int = 1) -> Iterator[tuple]:
    """``(chunk, last)`` pairs produced by a worker thread ``depth`` chunks ahead (the host
    gathers and places the next chunk while the device trains this one); an error in the
    worker is raised here. Closing the iterator stops the worker."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def work():
        try:
            for c in chunks:
                if stop.is_set():
                    return
                q.put(c)
            q.put(_END)
        except BaseException as err:  # noqa: BLE001 - handed to the consumer
            q.put(err)

    thread = threading.Thread(target=work, daemon=True, name="jnn-feed")
    thread.start()
    try:
        current = q.get()
        while current is not _END:
            if isinstance(current, BaseException):
                raise current
            nxt = q.get()
            if isinstance(nxt, BaseException):
                raise nxt
            yield current, nxt is _END
            current = nxt
    finally:
        stop.set()
        while thread.is_alive():
            with contextlib.suppress(queue.Empty):
                q.get(timeout=0.05)


def _pieces(data, rows: int):
    """Validation pieces: slices of ``rows`` examples of arrays, or an iterable's batches."""
    if isinstance(data, _feed.ArrayStream):
        for r0 in range(0, data.num_examples, rows):
            yield np.asarray(data.x[r0 : r0 + rows]), np.asarray(data.y[r0 : r0 + rows])
    else:
        for i, batch in enumerate(data.data):
            if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
                raise ValueError(f"val_data batch {i} must be an (x, y) pair of arrays.")
            yield np.asarray(batch[0]), np.asarray(batch[1])


def evaluate_stream(validate, val_stream, carry, extra, rows: int = 4096):
    """Validation metrics (means over examples) of a streamed validation set: ``validate``
    (jitted ``(carry, (x, y), extra) -> means``) over pieces, weighted by their sizes."""
    total, n = None, 0
    for x, y in _pieces(val_stream, rows):
        means = jax.device_get(validate(carry, (jnp.asarray(x), jnp.asarray(y)), extra))
        weighted = jax.tree.map(lambda m, k=len(x): np.asarray(m, np.float64) * k, means)
        total = weighted if total is None else jax.tree.map(np.add, total, weighted)
        n += len(x)
    if total is None:
        raise ValueError("val_data yields no batch.")
    return jax.tree.map(lambda t: t / n, total)
