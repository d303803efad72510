"""K members trained on a stream (``jnn.train._feed``): chunk by chunk, as ``jnn.train.fit``
trains one model on a stream (``jnn.train._stream``).

Every member sees the same batches of an iterable or a Grain dataset (each chunk is
``(S, B, ...)``, broadcast over the members). Memory-mapped or large arrays are streamed in
chunks of the resident ensemble's draw: member 0's order (``shuffle="shared"``), or each
member's own order / bootstrap resample (``(S, K, B)`` indices, gathered on the host). So
member ``k`` reaches what a streamed ``jnn.train.fit(..., key=keys[k])`` reaches, exactly as
on resident data.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from jnn import _memo
from jnn.ensemble import _resident
from jnn.train import _feed, _loop, _sharding, _stream
from jnn.train._fit import _next_epoch, _position

__all__ = ["StreamedEnsemble", "check_stream", "streamed_mode"]


def check_stream(stream, shuffle: str, bootstrap: bool, ema) -> None:
    """Refuses what a stream cannot give: per-member order or bootstrap resamples of an
    iterable (they need indexable arrays; memory-mapped ones are)."""
    if stream is None or stream.indexable:
        return
    if shuffle != "shared" or bootstrap:
        what = "bootstrap=True" if bootstrap else f"shuffle={shuffle!r}"
        raise ValueError(
            f"ensemble.fit: {what} needs indexable (x, y) arrays (memory-mapped ones "
            "included); an iterable of batches or a Grain dataset gives every member the same "
            "batches: use shuffle='shared'."
        )
    if ema is not None:
        raise ValueError(
            "ensemble.fit: ema recomputes BatchNorm statistics on the training arrays; with an "
            "iterable of batches or a Grain dataset pass (x, y) arrays instead."
        )


@_memo.cached
def _chunk_program(model, loss, optimizer, options, shuffle, guard, chunk, layout=None):
    """The jitted chunk of the K members (``_stream.build_chunk`` of their vmapped steps)."""
    steps_for = _resident._member_steps(model, loss, optimizer, options, shuffle, guard, chunk)
    return _stream.build_chunk(steps_for, layout)


@_memo.cached
def _validation_program(model, loss, chunk):
    """The jitted ``(carry, (x, y), extra) -> metrics`` of the members and their mixture."""
    run = _resident._validate(model, loss, chunk)
    return jax.jit(lambda c, v, extra: run(c, v, extra["hp"]))


class StreamedEnsemble(_resident._Ensemble):
    """The ensemble mode on a stream: each epoch runs chunk by chunk; a chunk in which a
    member becomes non-finite is run again guarded (that member frozen at its last finite
    state, the others go on), and every later chunk is guarded."""

    streams = True

    def __init__(self, *args, feed, val_stream, steps):
        super().__init__(*args)
        self.feed, self.val_stream, self.steps_per_epoch = feed, val_stream, steps

    def _chunk(self, guard, carry, chunk, step_keys, last):
        ing = self.ing
        program = _chunk_program(
            ing.model, ing.loss, ing.optimizer, ing.options, ing.shuffle, guard, ing.chunk,
            ing.layout,
        )  # fmt: skip
        return program(carry, chunk.xs, chunk.ys, step_keys, self.extra, last=last)

    def _validation(self, state, bad):
        if self.val_data is None and self.val_stream is None:
            return None
        program = _validation_program(self.ing.model, self.ing.loss, self.ing.chunk)
        if self.val_stream is not None:
            return _stream.evaluate_stream(program, self.val_stream, (state, bad), self.extra)
        return program((state, bad), self.val_data, self.extra)

    def run_epoch(self, carry, epoch, _key, position=None, between=None):
        t0 = time.perf_counter()
        order_keys, step_keys = _resident._split_member_keys(
            _resident._epoch_keys(self.run_keys, epoch)
        )
        idx = self.feed.steps(order_keys, self.extra)
        run = {"guard": bool(jnp.any(carry.bad >= 0)), "position": dict(position or {})}

        def dispatch(pair, chunk, last):
            return self._chunk(run["guard"], pair, chunk, step_keys, last)

        def settle(before, chunk, last, new, out):
            if not run["guard"] and not bool(np.all(_sharding.host(out["finite"]))):
                run["guard"] = True  # from here on, a diverged member stays frozen
                new, out = self._chunk(True, before, chunk, step_keys, last)
            run["summary"] = summary = _sharding.host(out)
            step = int(_sharding.host(new[0].step)[0])
            run["position"] = _position(run["position"], chunk, summary, step, self.feed)
            if between is not None and not last:
                between(_resident.EnsembleCarry(*new, carry.snapshots), run["position"])
            return new, None

        chunks = _stream.placed_chunks(self.feed.chunks(idx, run["position"]))
        pair, _ = _stream.pipelined(chunks, (carry.state, carry.bad), dispatch, settle)
        position, summary = run["position"], run.get("summary")
        state, bad = pair
        done = _resident.EnsembleCarry(
            state, bad, self._snapshot(carry.snapshots, state, epoch + 1)
        )
        bad_host = _sharding.host(bad)
        if (bad_host >= 0).all():
            message = "every member diverged (non-finite loss or parameters): " + ", ".join(
                f"member {k} at step {s}" for k, s in enumerate(bad_host)
            )
            return _loop.EpochOutcome(done, None, "non_finite", message)
        means = _stream.epoch_summary(position["sums"], summary)
        val = self._validation(state, bad)
        lists = _resident._lists
        record = self.record(epoch, state, lists(means), lists(val) if val else None, bad_host)
        record["seconds"] = time.perf_counter() - t0
        self.timings["train"] += record["seconds"]
        return _loop.EpochOutcome(done, record, position=_next_epoch(position, self.feed))


def _draw(stream, batch_size, shuffle):
    """The jitted ``(order_keys, extra) -> indices`` of streamed arrays (the resident draw)."""
    if not stream.indexable:
        return None
    return jax.jit(_resident._draw(stream.num_examples, batch_size, shuffle))


def streamed_mode(args, data, ingredients, input_shape, chunk_steps):
    """The :class:`StreamedEnsemble` of ``data`` (``_feed.RunData`` with a stream)."""
    stream = data.stream
    steps = getattr(stream, "steps", None)
    if stream.indexable:
        steps = stream.num_examples // ingredients.batch_size
    x, _ = stream.example()
    batch_bytes = int(np.prod(input_shape)) * np.dtype(x.dtype).itemsize
    feed = _stream.Feed(
        stream,
        _draw(stream, ingredients.batch_size, ingredients.shuffle),
        _feed.chunk_steps(batch_bytes, steps, chunk_steps),
        data.check,
        ingredients.layout,
    )
    return StreamedEnsemble(*args, feed=feed, val_stream=data.val_stream, steps=steps)


def ema_sample(stream, rows: int = 4096):
    """Training rows for the EMA state's BatchNorm statistics: evenly spaced ``rows`` of
    streamed arrays (the whole set when it has fewer)."""
    n = stream.num_examples
    return np.asarray(stream.x[:: max(1, n // rows)][:rows])
