"""Conv lowerings inside ``lax.scan``: an epoch as one scan vs separate jitted steps.

XLA's CPU convolution is 30-40x slower inside a loop body than outside it (jax-ml/jax#12868).
``jnn.nn.Conv(lowering="im2col")`` (patches + one matmul) avoids that. This script times one
epoch of plain SGD (``--steps`` minibatches) for two small conv nets and each lowering:

* ``scan``: the whole epoch as one jitted ``lax.scan`` over the minibatches;
* ``steps``: the same epoch as ``--steps`` calls of one jitted step.

Then ``--layers``: one layer's forward + backward inside a 20-step ``lax.scan`` (the layers of
the MNIST-1D CNN and a 2-D pool), for the layouts ``jnn.nn`` chose between: im2col as one
concatenated ``(window * in)`` axis contracted by a 3-D dot (the layout before 2026-12-06), the
current one (``jnn.nn.Conv(lowering="im2col")``: window and channel axes stacked, a 2-D matmul
for one input channel) and XLA's conv; ``MaxPool`` / ``AvgPool`` as ``reduce_window`` or strided
slices.

Medians of ``--repeats`` runs after a warm-up, each ended by ``block_until_ready``.

    python benchmarks/conv.py [--repeats 5] [--steps 40] [--layers]
"""

import argparse
import os
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jnn import nn
from jnn.nn._conv import _windows


def conv2d_net(lowering, pool_lowering):
    return nn.Serial(
        nn.Conv(16, (3, 3), lowering=lowering),
        nn.Relu(),
        nn.MaxPool((2, 2), lowering=pool_lowering),
        nn.Conv(32, (3, 3), lowering=lowering),
        nn.Relu(),
        nn.MaxPool((2, 2), lowering=pool_lowering),
        nn.Flatten(),
        nn.Dense(10),
    )


def mnist1d_cnn(lowering, pool_lowering):
    del pool_lowering
    return nn.Serial(
        nn.Conv(64, 5, lowering=lowering),
        nn.Relu(),
        nn.Conv(64, 5, lowering=lowering),
        nn.Relu(),
        nn.Conv(64, 5, lowering=lowering),
        nn.Relu(),
        nn.Flatten(),
        nn.Dense(10),
    )


MODELS = {
    "2-D conv net, 2 conv layers, batch 32 of 16x16x1": (conv2d_net, (32, 16, 16, 1)),
    "MNIST-1D CNN, 3 conv layers x 64 ch, batch 100 of 40x1": (mnist1d_cnn, (100, 40, 1)),
}


def make_step(model, state, lr=0.01):
    def loss_fn(params, x, y):
        logits, _ = model.apply(params, state, x)
        logp = jax.nn.log_softmax(logits)
        return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1))

    def step(params, batch):
        x, y = batch
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
        return jax.tree.map(lambda p, g: p - lr * g, params, grads), loss

    return step


def median_seconds(fn, repeats):
    jax.block_until_ready(fn())  # warm-up / compile
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench(build, shape, lowering, pool_lowering, steps, repeats):
    model = build(lowering, pool_lowering)
    params, state = model.init(jax.random.key(0), shape)
    rng = np.random.default_rng(0)
    xs = jnp.asarray(rng.normal(size=(steps, *shape)).astype(np.float32))
    ys = jnp.asarray(rng.integers(0, 10, size=(steps, shape[0])).astype(np.int32))
    step = make_step(model, state)
    scan_epoch = jax.jit(lambda p, xs, ys: jax.lax.scan(step, p, (xs, ys)))
    jit_step = jax.jit(step)

    batches = [(xs[i], ys[i]) for i in range(steps)]  # slice outside the timed loop

    def stepped():
        p = params
        for b in batches:
            p, _ = jit_step(p, b)
        return p

    t_scan = median_seconds(lambda: scan_epoch(params, xs, ys), repeats)
    t_steps = median_seconds(stepped, repeats)
    return t_scan, t_steps


def _concatenated_im2col(x, w, strides, pads):
    """im2col as jnn lowered it before 2026-12-06: slices concatenated on the channel axis,
    ``(batch, *out, window * in)``, contracted with ``w.reshape(-1, out)`` by a 3-D dot."""
    patches = jnp.concatenate(list(_windows(x, w.shape[:-2], strides, pads, 0)), axis=-1)
    wmat = w.reshape(-1, w.shape[-1])
    return lax.dot_general(patches, wmat, (((patches.ndim - 1,), (0,)), ((), ())))


def _in_scan(fn, *args, length=20):
    """Microseconds per step of ``fn``'s forward + backward (gradients of every argument, as
    in training: the input's and the weights') inside a ``lax.scan``; the arguments are the
    program's inputs, not constants XLA could fold."""

    def steps(*args):
        def body(c, _):
            y, vjp = jax.vjp(fn, args[0] + c, *args[1:])
            return c + 1e-9 * sum(jnp.sum(g) for g in vjp(y)), None

        return lax.scan(body, jnp.zeros((), args[0].dtype), None, length=length)[0]

    run = jax.jit(steps)
    return 1e6 * median_seconds(lambda: run(*args), 9) / length


def layer_table(repeats):
    """Per-layer forward + backward in a scan: conv layouts and pool lowerings."""
    rng = np.random.default_rng(0)
    rand = lambda *shape: jnp.asarray(rng.normal(size=shape), jnp.float32)
    conv = lambda layer: lambda x, w: layer.apply({"w": w, "b": jnp.zeros(w.shape[-1])}, {}, x)[0]
    print("\n| layer | layout | µs per step in a scan (fwd + bwd), median of rounds |")
    print("|---|---|---:|")
    for length, cin in ((40, 1), (20, 64), (10, 64)):
        x, w = rand(64, length, cin), rand(5, cin, 64)
        name = f"Conv 5 x {cin} -> 64 on (64, {length}, {cin})"
        forms = {
            "im2col, concatenated (before)": lambda x, w: _concatenated_im2col(
                x, w, (1,), ((2, 2),)
            ),
            "im2col, stacked (now)": conv(nn.Conv(64, 5, lowering="im2col")),
            "XLA conv": conv(nn.Conv(64, 5, lowering="xla")),
        }
        times = {form: [] for form in forms}
        for _ in range(repeats):  # interleaved rounds, medians
            for form, fn in forms.items():
                times[form].append(_in_scan(fn, x, w))
        for form, t in times.items():
            print(f"| {name} | {form} | {statistics.median(t):.0f} |", flush=True)
    for shape, window in (((64, 40, 64), (2,)), ((32, 16, 16, 32), (2, 2))):
        x = rand(*shape)
        for cls in (nn.MaxPool, nn.AvgPool):
            for lowering in ("xla", "im2col"):
                layer = cls(window, lowering=lowering)
                fn = lambda x, layer=layer: layer.forward(x)
                print(
                    f"| {cls.__name__}{window} on {shape} | {lowering} | {_in_scan(fn, x):.0f} |",
                    flush=True,
                )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--layers", action="store_true", help="also time single layers")
    args = parser.parse_args()
    configs = [("im2col", "im2col"), ("xla", "xla"), ("im2col", "xla")]
    print(
        f"machine: {platform.platform()}, {os.cpu_count()} CPUs, "
        f"jax {jax.__version__}, backend {jax.default_backend()}, "
        f"default lowering {nn.default_lowering()!r}"
    )
    print(f"one epoch = {args.steps} SGD steps; median of {args.repeats} after warm-up\n")
    header = ["model", "conv lowering", "pool lowering", "scan epoch (ms)", "jitted steps (ms)"]
    print("| " + " | ".join([*header, "scan / steps"]) + " |")
    print("|---|---|---|---:|---:|---:|")
    for name, (build, shape) in MODELS.items():
        for conv_lw, pool_lw in configs:
            if build is mnist1d_cnn and conv_lw != pool_lw:
                continue  # no pooling in this net
            t_scan, t_steps = bench(build, shape, conv_lw, pool_lw, args.steps, args.repeats)
            pool = pool_lw if build is conv2d_net else "-"
            print(
                f"| {name} | {conv_lw} | {pool} | {1e3 * t_scan:.1f} | {1e3 * t_steps:.1f} "
                f"| {t_scan / t_steps:.2f} |",
                flush=True,
            )
    if args.layers:
        layer_table(args.repeats)


if __name__ == "__main__":
    main()
