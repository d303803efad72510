"""Throughput on whatever JAX backend is present (a GPU when there is one), in one short run.

The figures of BENCHMARKS.md sections 2, 5/6 and 8, on the default device:

1. single training step (section 2): the 784-512-512-10 MLP, batch 128, Adam: ``jnn.train``'s
   fit-style scan and ``make_step`` against a hand-written JAX + Optax step (steps/s);
2. CNN epoch (sections 1/5): a ``jnn.train.fit`` epoch of the MNIST-1D CNN (3 x [Conv(64, 5),
   ReLU, MaxPool(2)], Dropout, Dense(10), batch 64, Adam) on random data of MNIST-1D's shape,
   with ``Conv(lowering="xla")`` (what ``"auto"`` picks off CPU) and ``lowering="im2col"``
   (what it picks on CPU), plus ``benchmarks/conv.py``'s scanned epoch against jitted steps;
3. hierarchical softmax (section 6): loss + gradient and a donated training step of the full
   softmax against ``jnn``'s head (path rows; ``make_sparse_head_step``), balanced tree;
4. ensembles (section 8): member-steps/s of ``jnn.ensemble.make_step`` and a hand-written
   ``jit(vmap)`` + Optax for the 64-128-128-10 MLP at K = 1..256, and the GFLOP/s of the
   model's matmuls against the device's matmul rate measured in the same run.

Every figure is the median of ``--repeats`` timed blocks after a warm-up, each ended by
``block_until_ready``; contenders of a table alternate round-robin. Prints the device and a
markdown table per part. ``--quick`` shrinks every size (a smoke run, e.g. on a CPU).

    python benchmarks/gpu.py [--quick] [--repeats 5] [--markdown FILE]

Reuses the builders of ``train.py``, ``conv.py``, ``hsoftmax.py`` and ``ensemble.py``. On a
full-size run expect ~5-8 minutes (mostly compilation).
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import numpy as np
from _machine import cpu_name, emit, load_average, matmul_rate

FULL = {
    "matmul": 8192,
    "cnn_examples": 3600,
    "cnn_epochs": 4,
    "conv_steps": 40,
    "classes": (1_000, 100_000),
    "members": (1, 4, 16, 64, 256),
    "block_s": 0.2,
}
QUICK = {
    "matmul": 512,
    "cnn_examples": 256,
    "cnn_epochs": 2,
    "conv_steps": 4,
    "classes": (1_000,),
    "members": (1, 4),
    "block_s": 0.02,
}


def device() -> str:
    d = jax.devices()[0]
    return (
        f"{jax.default_backend()} device {d.device_kind!r} (x{jax.device_count()}), host "
        f"{cpu_name()}, jax {jax.__version__}; {load_average()}"
    )


def _block(call, target_s):
    """Calls per timed block: about ``target_s`` seconds of work (at least one call)."""
    t0 = time.perf_counter()
    call(1)
    return max(1, int(target_s / max(time.perf_counter() - t0, 1e-6)))


def interleaved(calls: dict, repeats: int, target_s: float) -> dict:
    """``{name: median seconds per unit}`` for ``calls = {name: run(n) -> None}`` (``run``
    does ``n`` units and blocks), warmed up, timed round-robin."""
    for run in calls.values():
        run(2)
    sizes = {name: _block(run, target_s) for name, run in calls.items()}
    times = {name: [] for name in calls}
    for _ in range(repeats):
        for name, run in calls.items():
            t0 = time.perf_counter()
            run(sizes[name])
            times[name].append((time.perf_counter() - t0) / sizes[name])
    return {name: statistics.median(t) for name, t in times.items()}


# ----------------------------------------------------------------------------- 1. step


def single_step(cfg, repeats):
    import train as step_bench

    scan_run, _ = step_bench.jnn_scan()
    calls = {
        "jnn.train fit-style lax.scan of 16 steps": lambda n: scan_run(16 * n),
        "jnn.train make_step (monitor off)": step_bench.jnn_step(False)[0],
        "(a) JAX + Optax jitted step": step_bench.jax_optax()[0],
    }
    sec = interleaved(calls, repeats, cfg["block_s"])
    sec["jnn.train fit-style lax.scan of 16 steps"] /= 16
    ref = sec["(a) JAX + Optax jitted step"]
    lines = [
        "**1. Training step** (784-512-512-10 MLP, batch 128, Adam)",
        "",
        "| contender | steps/s | vs (a) |",
        "|---|---:|---:|",
    ]
    lines += [f"| {name} | {1 / s:,.0f} | {ref / s:.2f}x |" for name, s in sec.items()]
    return lines + [""]


# ----------------------------------------------------------------------------- 2. CNN epoch


def _cnn(lowering):
    from jnn import init, nn

    def block():
        return [
            nn.Conv(64, (5,), w_init=init.kaiming_normal(), lowering=lowering),
            nn.Relu(),
            nn.MaxPool((2,)),
        ]

    return nn.Serial(*block(), *block(), *block(), nn.Flatten(), nn.Dropout(0.3), nn.Dense(10))


def _fit_epoch_seconds(lowering, n, epochs):
    """Median steady epoch seconds of ``jnn.train.fit`` (validation included) and the
    compilation seconds."""
    from jnn import losses, optim, train

    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 40, 1)).astype(np.float32)
    y = rng.integers(0, 10, size=n).astype(np.int32)
    res = train.fit(
        _cnn(lowering),
        losses.softmax_cross_entropy,
        optim.adam(3e-3),
        (x, y),
        epochs=epochs + 1,
        batch_size=64,
        key=jax.random.key(0),
        val_data=(x[: n // 9], y[: n // 9]),
        progress=False,
    )
    return statistics.median(r["seconds"] for r in res.history[1:]), res.timings["compile"]


def cnn_epoch(cfg, repeats):
    import conv

    n = cfg["cnn_examples"]
    lines = [
        f"**2. CNN epoch** (MNIST-1D CNN, {n} random examples of 40 x 1, batch 64, Adam, "
        "validation included)",
        "",
        "| conv lowering | jnn.train.fit ms/epoch | compile s | plain-SGD scan epoch ms "
        "| jitted steps ms | scan / steps |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for lowering in ("xla", "im2col"):
        epoch_s, compile_s = _fit_epoch_seconds(lowering, n, cfg["cnn_epochs"])
        t_scan, t_steps = conv.bench(
            conv.mnist1d_cnn, (100, 40, 1), lowering, lowering, cfg["conv_steps"], repeats
        )
        lines.append(
            f"| {lowering} | {1e3 * epoch_s:.1f} | {compile_s:.1f} | {1e3 * t_scan:.1f} "
            f"| {1e3 * t_steps:.1f} | {t_scan / t_steps:.2f} |"
        )
    return lines + [f'(`lowering="auto"` picks {_auto()!r} on this backend.)', ""]


def _auto():
    from jnn import nn

    return nn.default_lowering()


# ----------------------------------------------------------------------------- 3. hsoftmax


def _repeated(once):
    def run(n):
        for _ in range(n):
            once()

    return run


def hsoftmax(cfg, repeats):
    import hsoftmax as hs
    import optax

    from jnn import losses

    lines = [
        "**3. Hierarchical softmax head** (h 256 x 256, Zipf labels, balanced tree)",
        "",
        "| classes | full softmax loss+grad ms | jnn head loss+grad ms | speed-up "
        "| full softmax SGD step ms | jnn sparse SGD step ms | jnn lazy-Adam step ms "
        "| SGD step speed-up |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in cfg["classes"]:
        h, y = hs._data(c)
        tree = losses.balanced_class_tree(c)
        calls = {
            "full": hs.full_softmax(c, h, y)[0],
            "head": hs.head_loss_grad(tree, h, y)[0],
            "full_sgd": hs.full_softmax(c, h, y, optax.sgd(hs.LR))[0],
            "sgd": hs.head_step(tree, h, y, "sgd")[0],
            "lazy_adam": hs.head_step(tree, h, y, "lazy_adam")[0],
        }
        ms = {
            k: 1e3 * v
            for k, v in interleaved(
                {k: _repeated(f) for k, f in calls.items()}, repeats, cfg["block_s"]
            ).items()
        }
        lines.append(
            f"| {c:,} | {ms['full']:.2f} | {ms['head']:.2f} | {ms['full'] / ms['head']:.0f}x "
            f"| {ms['full_sgd']:.2f} | {ms['sgd']:.2f} | {ms['lazy_adam']:.2f} "
            f"| {ms['full_sgd'] / ms['sgd']:.0f}x |"
        )
    return lines + [""]


# ----------------------------------------------------------------------------- 4. ensembles


def ensembles(cfg, repeats, peak):
    import ensemble as ens

    flops = (
        3 * 2 * ens.BATCH * sum(a * b for a, b in zip(ens.SIZES[:-1], ens.SIZES[1:], strict=True))
    )
    lines = [
        "**4. Ensembles** (64-128-128-10 MLP, batch 128 shared by the members, Adam)",
        "",
        "| K | jnn ensemble.make_step member-steps/s | (b) jit(vmap) + Optax | jnn / (b) "
        "| jnn GFLOP/s | of the matmul rate |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for k in cfg["members"]:
        calls = {"jnn": ens.jnn_make_step(k), "hand": ens.hand_vmap(k)}
        sec = interleaved(calls, repeats, cfg["block_s"])
        rate = {name: k / s for name, s in sec.items()}
        gflops = rate["jnn"] * flops / 1e9
        lines.append(
            f"| {k} | {rate['jnn']:,.0f} | {rate['hand']:,.0f} | {rate['jnn'] / rate['hand']:.2f}x "
            f"| {gflops:.1f} | {100 * gflops / peak:.0f}% |"
        )
    return lines + [""]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--parts", default="step,cnn,hsoftmax,ensemble")
    ap.add_argument("--markdown", default=None, help="also append the tables to this file")
    args = ap.parse_args(argv)
    cfg = QUICK if args.quick else FULL
    t0 = time.perf_counter()
    peak = matmul_rate(cfg["matmul"])
    lines = [
        f"Device: {device()}; matmul {peak:,.0f} GFLOP/s ({cfg['matmul']}² float32, default "
        f"precision){' [--quick sizes]' if args.quick else ''}.",
        "",
    ]
    parts = {
        "step": lambda: single_step(cfg, args.repeats),
        "cnn": lambda: cnn_epoch(cfg, args.repeats),
        "hsoftmax": lambda: hsoftmax(cfg, args.repeats),
        "ensemble": lambda: ensembles(cfg, args.repeats, peak),
    }
    for part in args.parts.split(","):
        lines += parts[part]()
        print(f"[{part} done at {time.perf_counter() - t0:.0f} s]", flush=True)
    emit([*lines, f"Total {time.perf_counter() - t0:.0f} s."], args.markdown)


if __name__ == "__main__":
    main()
