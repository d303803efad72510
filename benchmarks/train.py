"""Training-step throughput: jnn.train against plain JAX + Optax, Flax NNX and PyTorch (CPU).

A 784-512-512-10 ReLU MLP, batch 128, Adam(1e-3), softmax cross-entropy on random data
(16 distinct batches resident in memory, cycled). Every contender runs in the same process;
the repeats are interleaved round-robin so that load from other processes hits all of them
alike. Reported: the median steady-state steps/s over the repeats (after warm-up, with
``block_until_ready`` / a synchronising ``.item()`` at the end of each timed block), the
ratio of jnn's fit-style path to each baseline, the process CPU time per step (less
sensitive to other processes than wall time, though spinning thread pools inflate it), the
time to the first step (init + compile + one step), and XLA's own count of the work per step.

    python benchmarks/train.py [--repeats 7] [--steps 64] [--markdown FILE]

PyTorch is optional: without it that row is skipped.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from _machine import cpu_name

SIZES = (784, 512, 512, 10)
BATCH = 128
NBATCH = 16
LR = 1e-3


def _data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(NBATCH, BATCH, SIZES[0])).astype(np.float32)
    y = rng.integers(0, SIZES[-1], size=(NBATCH, BATCH)).astype(np.int32)
    return x, y


# ----------------------------------------------------------------------------- contenders
# Each builder returns (run(n_steps) -> None, which blocks until done; time_to_first_step).


def jnn_step(monitor: bool):
    from jnn import losses, nn, optim, train

    x, y = _data()
    xs, ys = jax.device_put(x), jax.device_put(y)
    t0 = time.perf_counter()
    model = nn.Serial(nn.Dense(512), nn.Relu(), nn.Dense(512), nn.Relu(), nn.Dense(10))
    opt = optim.adam(LR)
    state = train.init(model, opt, jax.random.key(0), (BATCH, SIZES[0]))
    step = train.make_step(model, losses.softmax_cross_entropy, opt, monitor=monitor)
    key = jax.random.key(1)
    box = [state]
    box[0], m = step(box[0], (xs[0], ys[0]), key)
    jax.block_until_ready(m["loss"])
    first = time.perf_counter() - t0
    batches = [(xs[i], ys[i]) for i in range(NBATCH)]
    COSTS[f"jnn.train make_step (monitor {'on' if monitor else 'off'})"] = (
        step,
        (box[0], batches[0], key),
        1,
    )

    def run(n):
        s = box[0]
        for i in range(n):
            s, m = step(s, batches[i % NBATCH], key)
        jax.block_until_ready(s)
        box[0] = s

    return run, first


def jnn_scan(monitor: bool = False):
    """fit's inner loop: one jitted lax.scan over NBATCH steps, state donated."""
    from jnn import losses, nn, optim, train

    x, y = _data()
    xs, ys = jax.device_put(x), jax.device_put(y)
    t0 = time.perf_counter()
    model = nn.Serial(nn.Dense(512), nn.Relu(), nn.Dense(512), nn.Relu(), nn.Dense(10))
    opt = optim.adam(LR)
    state = train.init(model, opt, jax.random.key(0), (BATCH, SIZES[0]))
    step = train.make_step(model, losses.softmax_cross_entropy, opt, jit=False, monitor=monitor)
    key = jax.random.key(1)

    def _scan(s, xs, ys):
        s, m = jax.lax.scan(lambda c, b: step(c, b, key), s, (xs, ys))
        return s, jax.tree.map(lambda v: jnp.mean(v, 0), m)

    scan = jax.jit(_scan, donate_argnums=0)
    box = [state]
    box[0], m = scan(box[0], xs, ys)
    jax.block_until_ready(m["loss"])
    first = time.perf_counter() - t0
    # XLA's cost analysis counts a while loop's body once, i.e. one step.
    COSTS["jnn.train fit-style scan (loop body = one step)"] = (scan, (box[0], xs, ys), 1)

    def run(n):
        s = box[0]
        for _ in range(n // NBATCH):
            s, m = scan(s, xs, ys)
        jax.block_until_ready(s)
        box[0] = s

    return run, first


def jax_optax():
    """(a) hand-written JAX MLP + optax.adam, jitted step with the params/opt state donated."""
    x, y = _data()
    xs, ys = jax.device_put(x), jax.device_put(y)
    t0 = time.perf_counter()
    keys = jax.random.split(jax.random.key(0), len(SIZES) - 1)
    params = [
        (jax.random.normal(k, (a, b)) / np.sqrt(a), jnp.zeros((b,)))
        for k, a, b in zip(keys, SIZES[:-1], SIZES[1:], strict=True)
    ]
    tx = optax.adam(LR)
    opt_state = tx.init(params)

    def loss_fn(p, xb, yb):
        h = xb
        for i, (w, b) in enumerate(p):
            h = h @ w + b
            if i < len(p) - 1:
                h = jax.nn.relu(h)
        return optax.softmax_cross_entropy_with_integer_labels(h, yb).mean()

    def _step(p, o, xb, yb):
        loss, g = jax.value_and_grad(loss_fn)(p, xb, yb)
        u, o = tx.update(g, o, p)
        return optax.apply_updates(p, u), o, loss

    step = jax.jit(_step, donate_argnums=(0, 1))
    box = list(step(params, opt_state, xs[0], ys[0]))
    jax.block_until_ready(box[2])
    first = time.perf_counter() - t0
    batches = [(xs[i], ys[i]) for i in range(NBATCH)]
    COSTS["(a) JAX + Optax step"] = (step, (box[0], box[1], *batches[0]), 1)

    def run(n):
        p, o = box[0], box[1]
        for i in range(n):
            p, o, loss = step(p, o, *batches[i % NBATCH])
        jax.block_until_ready((p, o))
        box[0], box[1] = p, o

    return run, first


def flax_nnx():
    """(b) Flax NNX: nnx.Linear layers, nnx.Optimizer(optax.adam), nnx.jit."""
    from flax import nnx

    x, y = _data()
    xs, ys = jax.device_put(x), jax.device_put(y)
    t0 = time.perf_counter()

    class MLP(nnx.Module):
        def __init__(self, rngs):
            self.l1 = nnx.Linear(SIZES[0], SIZES[1], rngs=rngs)
            self.l2 = nnx.Linear(SIZES[1], SIZES[2], rngs=rngs)
            self.l3 = nnx.Linear(SIZES[2], SIZES[3], rngs=rngs)

        def __call__(self, x):
            return self.l3(nnx.relu(self.l2(nnx.relu(self.l1(x)))))

    model = MLP(nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, optax.adam(LR), wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer, xb, yb):
        def loss_fn(model):
            return optax.softmax_cross_entropy_with_integer_labels(model(xb), yb).mean()

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss

    jax.block_until_ready(step(model, optimizer, xs[0], ys[0]))
    first = time.perf_counter() - t0
    batches = [(xs[i], ys[i]) for i in range(NBATCH)]

    def run(n):
        for i in range(n):
            loss = step(model, optimizer, *batches[i % NBATCH])
        jax.block_until_ready(loss)

    return run, first


def torch_eager():
    """(c) PyTorch CPU eager, torch.optim.Adam(fused=True)."""
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    x, y = _data()
    xs, ys = torch.from_numpy(x), torch.from_numpy(y).long()
    t0 = time.perf_counter()
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(SIZES[0], SIZES[1]),
        torch.nn.ReLU(),
        torch.nn.Linear(SIZES[1], SIZES[2]),
        torch.nn.ReLU(),
        torch.nn.Linear(SIZES[2], SIZES[3]),
    )
    opt = torch.optim.Adam(model.parameters(), lr=LR, fused=True)

    def step(xb, yb):
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(xb), yb)
        loss.backward()
        opt.step()
        return loss

    step(xs[0], ys[0]).item()
    first = time.perf_counter() - t0

    def run(n):
        for i in range(n):
            loss = step(xs[i % NBATCH], ys[i % NBATCH])
        loss.item()

    return run, first


COSTS: dict = {}  # name -> (jitted fn, example args, steps per call), for XLA's cost analysis


def xla_costs() -> list[str]:
    """Deterministic work per step from XLA's cost analysis (immune to machine load)."""
    lines = ["| compiled program | GFLOP per step | MB accessed per step |", "|---|---:|---:|"]
    for name, (fn, args, per) in COSTS.items():
        cost = fn.lower(*args).compile().cost_analysis()
        cost = cost[0] if isinstance(cost, list) else cost
        lines.append(
            f"| {name} | {cost['flops'] / per / 1e9:.3f} | "
            f"{cost['bytes accessed'] / per / 1e6:.1f} |"
        )
    return lines


CONTENDERS = {
    "jnn.train fit-style lax.scan of 16 steps (donated)": jnn_scan,
    "jnn.train make_step, jitted + donated (monitor off)": lambda: jnn_step(False),
    "jnn.train make_step, jitted + donated (per-layer monitor on)": lambda: jnn_step(True),
    "(a) JAX + Optax, jitted + donated step": jax_optax,
    "(b) Flax NNX, nnx.jit + nnx.Optimizer": flax_nnx,
    "(c) PyTorch CPU eager, Adam(fused=True)": torch_eager,
}
REFERENCE = "jnn.train fit-style lax.scan of 16 steps (donated)"


def machine() -> str:
    cpu = cpu_name()
    versions = f"jax {jax.__version__}, optax {optax.__version__}"
    try:
        import flax

        versions += f", flax {flax.__version__}"
    except ImportError:
        pass
    try:
        import torch

        versions += f", torch {torch.__version__}"
    except ImportError:
        pass
    return (
        f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}, {versions}, backend {jax.default_backend()}"
    )


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--steps", type=int, default=64, help="steps per timed block (x16)")
    ap.add_argument("--warmup", type=int, default=32)
    ap.add_argument("--markdown", default=None, help="also write the table to this file")
    args = ap.parse_args(argv)
    steps = max(NBATCH, args.steps // NBATCH * NBATCH)

    runs, firsts, skipped = {}, {}, []
    for name, build in CONTENDERS.items():
        try:
            runs[name], firsts[name] = build()
        except ImportError as e:
            skipped.append(f"{name}: skipped ({e})")
            continue
        runs[name](args.warmup)
    rates = {name: [] for name in runs}
    cpu_ms = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, run in runs.items():  # round-robin: load noise hits everyone alike
            t, c = time.perf_counter(), time.process_time()
            run(steps)
            rates[name].append(steps / (time.perf_counter() - t))
            cpu_ms[name].append((time.process_time() - c) / steps * 1e3)
    med = {name: statistics.median(r) for name, r in rates.items()}
    ref = med[REFERENCE]
    lines = [
        f"Machine: {machine()}.",
        "",
        f"784-512-512-10 ReLU MLP, batch {BATCH}, Adam({LR}), random data; median of "
        f"{args.repeats} interleaved repeats of {steps} steps after {args.warmup} warm-up steps.",
        "",
        "| contender | steps/s (median) | min..max | jnn fit-style / this "
        "| CPU ms per step (median) | first step (s) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, r in rates.items():
        lines.append(
            f"| {name} | {med[name]:.0f} | {min(r):.0f}..{max(r):.0f} | "
            f"{ref / med[name]:.2f}x | {statistics.median(cpu_ms[name]):.2f} | "
            f"{firsts[name]:.2f} |"
        )
    lines += [f"- {s}" for s in skipped]
    lines += ["", "Work per step as XLA counts it (independent of the machine's load):", ""]
    lines += xla_costs()
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text + "\n")
    return med


if __name__ == "__main__":
    main()
