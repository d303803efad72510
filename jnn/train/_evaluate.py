"""Evaluation in inference mode, in fixed-size chunks (one compiled program per shape)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jnn import _memo
from jnn import losses as _losses
from jnn._compile import one_shot_jit
from jnn._foreign import as_model
from jnn.train._state import cast_inputs
from jnn.train._step import at_least_float32

__all__ = ["evaluate", "evaluation_program"]

EVAL_CHUNK = 1024


def _per_example(model, loss, params, model_state, x, y):
    """Per-example loss and top-1 hit (``jnn.losses.top1_correct``; NaN where undefined)."""
    outputs, _ = model.apply(params, model_state, cast_inputs(x, params), train=False)
    outputs = at_least_float32(outputs)
    per = loss(outputs, y).astype(jnp.float32)
    correct = _losses.top1_correct(outputs, y)
    return per, correct


def _chunked(x, chunk):
    """``x`` padded to whole chunks and reshaped ``(chunks, chunk, ...)``."""
    n = x.shape[0]
    chunks = -(-n // chunk)
    pad = chunks * chunk - n
    if pad:
        x = jnp.concatenate([x, jnp.zeros((pad, *x.shape[1:]), x.dtype)])
    return x.reshape(chunks, chunk, *x.shape[1:])


def mean_loss_and_accuracy(model, loss, params, model_state, x, y, chunk):
    """Traceable: ``(mean loss, accuracy)`` over ``x, y`` in chunks of ``chunk`` (padding
    masked out). Used by :func:`evaluate` and fused into ``fit``'s epoch program."""
    n = x.shape[0]
    per, correct = jax.lax.map(
        lambda c: _per_example(model, loss, params, model_state, *c),
        (_chunked(x, chunk), _chunked(y, chunk)),
    )
    valid = (jnp.arange(per.size) < n).reshape(per.shape)
    zero = jnp.zeros((), jnp.float32)
    return jnp.sum(jnp.where(valid, per, zero)) / n, jnp.sum(jnp.where(valid, correct, zero)) / n


@_memo.cached
def evaluation_program(model, loss, chunk):
    """The jitted ``(params, model_state, x, y) -> (mean loss, accuracy)``."""
    return one_shot_jit(lambda p, s, x, y: mean_loss_and_accuracy(model, loss, p, s, x, y, chunk))


def eval_chunk(num_examples: int, batch_size: int = EVAL_CHUNK) -> int:
    return int(max(1, min(batch_size, num_examples)))


def evaluate(model, params, model_state, x, y, loss, batch_size: int = EVAL_CHUNK) -> dict:
    """Mean loss and accuracy of the model in inference mode (``train=False``).

    Runs in chunks of ``batch_size`` examples (the last one padded and masked out).

    Args:
      model, params, model_state: the network.
      x, y: inputs and targets (arrays with the same leading size).
      loss: the per-example loss.
      batch_size: examples per chunk.

    Returns:
      ``{"loss": float, "accuracy": float}`` (accuracy is NaN unless ``y`` holds integer labels).
    """
    model = as_model(model)
    x, y = jnp.asarray(x), jnp.asarray(y)
    if x.ndim < 1 or y.ndim < 1 or x.shape[0] != y.shape[0] or x.shape[0] == 0:
        raise ValueError(
            "evaluate: x and y need the same non-zero number of examples, got shapes "
            f"{x.shape} and {y.shape}."
        )
    if not batch_size >= 1:
        raise ValueError(f"evaluate: batch_size must be >= 1, got {batch_size}.")
    program = evaluation_program(model, loss, eval_chunk(x.shape[0], batch_size))
    mean_loss, acc = program(params, model_state, x, y)
    return {"loss": float(mean_loss), "accuracy": float(acc)}
