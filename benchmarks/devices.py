"""Data-parallel training steps on 1, 2, 4, 8 devices: `jnn.train.make_step(..., mesh=N)`.

Two models: the MNIST-1D CNN of `jnn train --dataset mnist1d --model cnn` (batch 64) and a
784-512-512-10 ReLU MLP (batch 128, random inputs), Adam, softmax cross-entropy. Each
device count runs in its own process with `XLA_FLAGS=--xla_force_host_platform_device_count=N`
(the count must be set before JAX starts, jax-ml/jax#17188). In each process: build, put the
batches on the mesh, warm up (compile + 3 steps), then `--repeats` timed blocks of `--steps`
steps, each ended by `block_until_ready`; reported: the median steps/s with the min-max
over the blocks, and the ratio to 1 device.

Forced CPU devices share the machine's cores, so on CPU the figure measures the overhead of
splitting a step (per-device kernels too small to use the cores well, the all-reduce of the
gradients), not a speed-up. On a machine with real accelerators pass `--real` (use the
first N of the devices JAX finds, no forcing).

    python benchmarks/devices.py [--counts 1,2,4,8] [--repeats 5] [--steps 20] [--fsdp]
                                 [--models mnist1d-cnn,mlp-784-512-512-10] [--markdown FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from _machine import cpu_name, load_average

MODELS = ("mnist1d-cnn", "mlp-784-512-512-10")


def _cnn():
    """The default `jnn train --dataset mnist1d --model cnn` model and 64 real examples."""
    from jnn.runs import RunConfig, _builders

    config = RunConfig.from_options(dataset="mnist1d", model="cnn")
    ds = _builders.load_run_data(config)
    model = _builders.build_model(config, ds.num_classes, ds.input_shape)
    return model, ds.x_train[: config.batch_size], ds.y_train[: config.batch_size]


def _mlp():
    import numpy as np

    from jnn import nn

    rng = np.random.default_rng(0)
    x = rng.normal(size=(128, 784)).astype(np.float32)
    y = rng.integers(0, 10, 128).astype(np.int32)
    model = nn.Serial(nn.Dense(512), nn.Relu(), nn.Dense(512), nn.Relu(), nn.Dense(10))
    return model, x, y


def child(name: str, count: int, repeats: int, steps: int, fsdp: bool = False) -> dict:
    """Times ``make_step`` on a data mesh of ``count`` devices (runs in a fresh process)."""
    import jax

    from jnn import losses, optim, train

    model, x, y = _cnn() if name == "mnist1d-cnn" else _mlp()
    mesh = train.make_mesh(count)
    opt = optim.adam(1e-3)
    state = train.init(model, opt, jax.random.key(0), x.shape)
    loss = losses.softmax_cross_entropy
    step = train.make_step(model, loss, opt, mesh=mesh, monitor=False, fsdp=fsdp)
    from jnn.train import _sharding

    layout = _sharding.as_layout(mesh, fsdp=fsdp)
    batch = layout.put((x, y), layout.batch((x, y)))
    key = jax.random.key(1)
    t0 = time.perf_counter()
    for _ in range(4):
        state, metrics = step(state, batch, key)
    jax.block_until_ready(metrics["loss"])
    warm = time.perf_counter() - t0
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(steps):
            state, metrics = step(state, batch, key)
        jax.block_until_ready((state.params, metrics["loss"]))
        rates.append(steps / (time.perf_counter() - t0))
    return {
        "model": name + (" (fsdp)" if fsdp else ""),
        "devices": count,
        "backend": jax.default_backend(),
        "batch": int(x.shape[0]),
        "rates": rates,
        "warmup_s": warm,
    }


def _run_child(name, count, args) -> dict:
    env = dict(os.environ)
    if not args.real:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={count}"
    cmd = [sys.executable, __file__, "--child", name, str(count)]
    cmd += ["--repeats", str(args.repeats), "--steps", str(args.steps)]
    cmd += ["--fsdp"] if args.fsdp else []
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def machine() -> str:
    """The CPU, the cores, and the load when the benchmark started."""
    return f"{cpu_name()}, {os.cpu_count()} CPU(s); {load_average()}"


def table(rows) -> str:
    lines = [
        "| model | batch | devices | steps/s (median) | min-max | vs 1 device |",
        "|---|---|---|---|---|---|",
    ]
    base = {}
    for r in rows:
        med = statistics.median(r["rates"])
        base.setdefault(r["model"], med)
        lines.append(
            f"| {r['model']} | {r['batch']} | {r['devices']} | {med:.1f} | "
            f"{min(r['rates']):.1f}-{max(r['rates']):.1f} | {med / base[r['model']]:.2f}x |"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--counts", default="1,2,4,8")
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--real", action="store_true", help="real devices: no forced CPU count")
    p.add_argument("--fsdp", action="store_true", help="split params and Adam state (FSDP)")
    p.add_argument("--markdown", default=None)
    p.add_argument("--child", nargs=2, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        name, count = args.child[0], int(args.child[1])
        print(json.dumps(child(name, count, args.repeats, args.steps, args.fsdp)))
        return
    header = machine()
    rows = []
    for name in args.models.split(","):
        for count in (int(c) for c in args.counts.split(",")):
            rows.append(_run_child(name, count, args))
            rate = statistics.median(rows[-1]["rates"])
            print(f"{name} on {count} device(s): {rate:.1f} steps/s", file=sys.stderr)
    text = f"Machine: {header}; backend {rows[0]['backend']}.\n\n{table(rows)}\n"
    print(text)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
