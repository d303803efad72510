"""Your own model: what jnn costs and gains for Flax / Equinox models, in the same process.

(a) ``jnn.train.fit`` of a Flax linen MLP against the same network in ``jnn.nn``: seconds per
    epoch (goal: no more than 5% slower).
(b) K = 16 MNIST-1D CNN members written in Flax NNX: ``jnn.ensemble.fit`` against the way
    Flax documents an ensemble (``nnx.split_rngs`` + ``nnx.vmap`` to create, an
    ``nnx.Optimizer`` per member, one ``nnx.jit`` step per batch over ``nnx.vmap``):
    member-steps/s (goal: >= 1.3x).
(c) the same members in Equinox: ``jnn.ensemble.fit`` against ``eqx.filter_vmap`` +
    ``eqx.filter_jit``, one jitted step per batch with Optax.

Medians over repeats after a warm-up (the first epoch: compilation), ``block_until_ready`` at
the end of each timed block; the repeats of the contenders interleave.

    python benchmarks/interop.py [--repeats 5] [--epochs 3] [--members 16] [--markdown FILE]
    python benchmarks/interop.py --tiny          # a smoke run: small sizes, no figures
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import equinox as eqx
import flax.linen as linen
import jax
import jax.numpy as jnp
import numpy as np
import optax
from _machine import cpu_name, emit, load_average, matmul_rate
from flax import nnx

from jnn import data, ensemble, losses, nn, optim, train

LR = 1e-3
BATCH = 128
WIDTH = 16  # CNN channels


# ----------------------------------------------------------------------------- models


class LinenMLP(linen.Module):
    widths: tuple = (128, 128)
    classes: int = 10

    @linen.compact
    def __call__(self, x, train=False):
        for w in self.widths:
            x = linen.relu(linen.Dense(w)(x))
        return linen.Dense(self.classes)(x)


def jnn_mlp(widths=(128, 128), classes=10):
    layers = [layer for w in widths for layer in (nn.Dense(w), nn.Relu())]
    return nn.Serial(*layers, nn.Dense(classes))


class NnxCNN(nnx.Module):
    """Conv(5, 16) -> relu -> Conv(5, 16) -> relu -> Linear(10) on (40, 1) inputs."""

    def __init__(self, rngs):
        self.c1 = nnx.Conv(1, WIDTH, (5,), rngs=rngs)
        self.c2 = nnx.Conv(WIDTH, WIDTH, (5,), rngs=rngs)
        self.out = nnx.Linear(40 * WIDTH, 10, rngs=rngs)

    def __call__(self, x):
        x = nnx.relu(self.c2(nnx.relu(self.c1(x))))
        return self.out(x.reshape(x.shape[0], -1))


def eqx_cnn(key):
    """The same CNN for one example ``(40, 1)`` (Equinox convolutions are channels first)."""
    k1, k2, k3 = jax.random.split(key, 3)
    return eqx.nn.Sequential(
        [
            eqx.nn.Lambda(jnp.transpose),
            eqx.nn.Conv1d(1, WIDTH, 5, padding=2, key=k1),
            eqx.nn.Lambda(jax.nn.relu),
            eqx.nn.Conv1d(WIDTH, WIDTH, 5, padding=2, key=k2),
            eqx.nn.Lambda(jax.nn.relu),
            eqx.nn.Lambda(jnp.ravel),
            eqx.nn.Linear(40 * WIDTH, 10, key=k3),
        ]
    )


# ----------------------------------------------------------------------------- timing


def _epoch_seconds(result) -> float:
    """The median seconds of the epochs after the first (compilation is in the first)."""
    return statistics.median(r["seconds"] for r in result.history[1:])


def jnn_fit(model, x, y, epochs):
    return train.fit(
        model, losses.softmax_cross_entropy, optim.adam(LR), (x, y), epochs=epochs,
        batch_size=BATCH, key=jax.random.key(0), progress=False,
    )  # fmt: skip


def jnn_ensemble(model, x, y, members, epochs):
    result = ensemble.fit(
        model, losses.softmax_cross_entropy, optim.adam(LR), (x, y), epochs=epochs,
        batch_size=BATCH, keys=jax.random.split(jax.random.key(0), members),
        shuffle="shared", progress=False,  # as the references: one batch for all
    )  # fmt: skip
    return members * (len(x) // BATCH) / _epoch_seconds(result)


def _batches(x, y, epoch):
    order = np.random.default_rng(epoch).permutation(len(x))
    for i in range(len(x) // BATCH):
        idx = order[i * BATCH : (i + 1) * BATCH]
        yield x[idx], y[idx]


def _timed_epochs(step, carry, x, y, epochs):
    """Member steps run per epoch by a per-batch Python loop; medians after the first."""
    times = []
    for epoch in range(epochs):
        t0 = time.perf_counter()
        for xb, yb in _batches(x, y, epoch):
            carry, loss = step(carry, xb, yb)
        jax.block_until_ready(loss)
        times.append(time.perf_counter() - t0)
    return statistics.median(times[1:])


def nnx_documented(x, y, members, epochs):
    """Flax's ensemble recipe: vmapped creation with split RNGs, one jitted vmapped step."""

    @nnx.split_rngs(splits=members)
    @nnx.vmap(in_axes=(0,), out_axes=0)
    def create(rngs):
        return NnxCNN(rngs)

    models = create(nnx.Rngs(0))
    optimizers = nnx.vmap(lambda m: nnx.Optimizer(m, optax.adam(LR), wrt=nnx.Param))(models)

    def loss_fn(model, xb, yb):
        return optax.softmax_cross_entropy_with_integer_labels(model(xb), yb).mean()

    @nnx.jit
    def step(model, optimizer, xb, yb):
        @nnx.vmap(in_axes=(0, 0, None, None))
        def one(model, optimizer, xb, yb):
            loss, grads = nnx.value_and_grad(loss_fn)(model, xb, yb)
            optimizer.update(model, grads)
            return loss

        return one(model, optimizer, xb, yb)

    def run(carry, xb, yb):
        return carry, step(*carry, xb, yb)

    seconds = _timed_epochs(run, (models, optimizers), x, y, epochs)
    return members * (len(x) // BATCH) / seconds


def eqx_documented(x, y, members, epochs):
    """Equinox's ensemble recipe: ``filter_vmap`` to create and to step, ``filter_jit``."""
    models = eqx.filter_vmap(eqx_cnn)(jax.random.split(jax.random.key(0), members))
    tx = optax.adam(LR)
    opt_state = eqx.filter_vmap(lambda m: tx.init(eqx.filter(m, eqx.is_array)))(models)

    def loss_fn(model, xb, yb):
        logits = jax.vmap(model)(xb)
        return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

    @eqx.filter_jit
    def step(carry, xb, yb):
        @eqx.filter_vmap(in_axes=(eqx.if_array(0), eqx.if_array(0), None, None))
        def one(model, state, xb, yb):
            loss, grads = eqx.filter_value_and_grad(loss_fn)(model, xb, yb)
            updates, state = tx.update(grads, state, eqx.filter(model, eqx.is_array))
            return eqx.apply_updates(model, updates), state, loss

        model, state, loss = one(*carry, xb, yb)
        return (model, state), loss

    seconds = _timed_epochs(step, (models, opt_state), x, y, epochs)
    return members * (len(x) // BATCH) / seconds


# ----------------------------------------------------------------------------- tables


def _rounds(contenders: dict, repeats: int) -> dict:
    """``{name: median}`` of interleaved repeats."""
    seen = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, fn in contenders.items():
            seen[name].append(fn())
    return {name: statistics.median(v) for name, v in seen.items()}


def main(repeats, epochs, members, tiny, markdown=None):
    ds = data.load_mnist1d()
    x, y = ds.x_train, ds.y_train
    if tiny:
        x, y = x[: 4 * BATCH], y[: 4 * BATCH]
    images = x.reshape(len(x), 40, 1)
    mlp = _rounds(
        {
            "linen": lambda: _epoch_seconds(jnn_fit(LinenMLP(), x, y, epochs)),
            "jnn.nn": lambda: _epoch_seconds(jnn_fit(jnn_mlp(), x, y, epochs)),
        },
        repeats,
    )
    nnx_rates = _rounds(
        {
            "jnn": lambda: jnn_ensemble(NnxCNN, images, y, members, epochs),
            "flax": lambda: nnx_documented(images, y, members, epochs),
        },
        repeats,
    )
    eqx_rates = _rounds(
        {
            "jnn": lambda: jnn_ensemble(eqx_cnn, images, y, members, epochs),
            "equinox": lambda: eqx_documented(images, y, members, epochs),
        },
        repeats,
    )
    lines = [
        f"Machine: {cpu_name()}, {os.cpu_count()} cores, jax {jax.__version__}; "
        f"{load_average()}; matmul {matmul_rate():.0f} GFLOP/s (2048² float32).",
        f"MNIST-1D, {len(x)} training examples, batch {BATCH}, adam; medians of {repeats} "
        f"repeats of {epochs} epochs (the first epoch, compilation, left out).",
        "",
        "| comparison | jnn | reference | ratio | goal |",
        "|---|---|---|---|---|",
        f"| (a) linen MLP 128-128 s/epoch: train.fit(linen) vs train.fit(jnn.nn) | "
        f"{mlp['linen']:.4f} | {mlp['jnn.nn']:.4f} | {mlp['linen'] / mlp['jnn.nn']:.3f} | "
        "<= 1.05 |",
        f"| (b) NNX CNN, K={members}, member-steps/s: ensemble.fit vs nnx.vmap + nnx.jit | "
        f"{nnx_rates['jnn']:.0f} | {nnx_rates['flax']:.0f} | "
        f"{nnx_rates['jnn'] / nnx_rates['flax']:.2f}x | >= 1.3x |",
        f"| (c) Equinox CNN, K={members}, member-steps/s: ensemble.fit vs filter_vmap + "
        f"filter_jit | {eqx_rates['jnn']:.0f} | {eqx_rates['equinox']:.0f} | "
        f"{eqx_rates['jnn'] / eqx_rates['equinox']:.2f}x | >= 1.3x |",
    ]
    emit(lines, markdown)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--members", type=int, default=16)
    parser.add_argument("--tiny", action="store_true", help="smoke run: small sizes")
    parser.add_argument("--markdown")
    args = parser.parse_args()
    if args.tiny:
        args.repeats, args.epochs, args.members = 1, 2, 2
    main(args.repeats, args.epochs, args.members, args.tiny, args.markdown)
