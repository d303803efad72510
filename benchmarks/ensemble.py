"""Ensembles: results (MNIST-1D CNNs, digits MLPs, a learning-rate sweep) and throughput
(member-steps/s of the 64-128-128-10 MLP at K = 1, 4, 16, 64) against a Python loop over K
jitted steps, a hand-written donated ``jit(vmap(step))`` with Optax, and PyTorch
``torch.func`` (``stack_module_state`` + ``functional_call`` + ``vmap``) with stacked fused
Adam, all in the same process; repeats interleaved round-robin, medians after warm-up,
``block_until_ready`` / ``.item()`` at the end of each timed block. Beside them, at each K,
the rate XLA:CPU runs the hidden layers' batched dots at alone (the ceiling of a vmapped
step) and the same flops as one matmul.

    python benchmarks/ensemble.py results   [--seeds 0,1,2] [--markdown FILE]
    python benchmarks/ensemble.py speed     [--repeats 5] [--markdown FILE]

PyTorch is optional (``pip install '.[bench]'``): without it its rows are skipped.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from _machine import cpu_name, emit, load_average, matmul_rate

SIZES = (64, 128, 128, 10)
BATCH = 128
LR = 1e-3
STEPS = 25  # fewest steps per timed block
PAUSE = 0.5  # seconds between timed blocks (see speed())


def machine() -> str:
    return f"{cpu_name()}, {os.cpu_count()} cores, jax {jax.__version__}; {load_average()}"


# ----------------------------------------------------------------------------- results


def _run(options: dict, out: str) -> dict:
    from jnn import runs

    config = runs.RunConfig.from_options(**options, out=out, progress=False, plots=False)
    t0 = time.perf_counter()
    outcome = runs.train_run(config, overwrite=True, echo=lambda line: None)
    outcome.summary["wall"] = time.perf_counter() - t0
    return outcome.summary


def results(seeds, markdown=None):
    """Accuracy of ensembles against their members, over several seeds."""
    import tempfile

    configs = {
        "MNIST-1D CNN, 8 members": dict(
            dataset="mnist1d", model="cnn", ensemble=8, shuffle="per_member"
        ),
        "digits MLP, 8 members": dict(ensemble=8, shuffle="per_member"),
    }
    rows, tmp = [], tempfile.mkdtemp()
    for name, options in configs.items():
        got = [_run({**options, "seed": 100 * s}, f"{tmp}/{name[:5]}-{s}") for s in seeds]
        ens = [g["test_accuracy"] for g in got]
        mean_member = [g["ensemble"]["member_mean_accuracy"] for g in got]
        best_member = [g["ensemble"]["member_best_accuracy"] for g in got]
        member_nll = [np.mean([m["test_nll"] for m in g["members"]]) for g in got]
        rows.append(
            (
                name,
                f"{100 * np.mean(ens):.2f} ± {100 * np.std(ens):.2f}% (min {100 * min(ens):.2f}%)",
                f"{100 * np.mean(mean_member):.2f}% / {100 * np.mean(best_member):.2f}%",
                f"{np.mean([g['test_loss'] for g in got]):.4f} vs {np.mean(member_nll):.4f}",
                f"{np.mean([g['ensemble']['ece'] for g in got]):.4f}",
                f"{np.mean([g['wall'] for g in got]):.0f} s",
            )
        )
        print(rows[-1], flush=True)
    sweep = _run(
        dict(
            dataset="mnist1d",
            model="mlp",
            widths=(256, 256),
            epochs=20,
            optimizer="sgd",
            schedule="constant",
            lr=(1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0, 1e4),
        ),
        f"{tmp}/sweep",
    )
    lines = [
        "| ensemble | ensemble test accuracy (mean ± std over seeds) | members mean / best | "
        "NLL ensemble vs member mean | ECE | wall |",
        "|---|---|---|---|---|---|",
        *("| " + " | ".join(r) + " |" for r in rows),
        "",
        "Learning-rate sweep, MNIST-1D MLP 256-256, SGD, 8 rates over four decades plus one far "
        "too large (`--lr 1e-3,...,1,1e4`), one compiled program:",
        "",
        "| lr | test accuracy | diverged |",
        "|---|---|---|",
        *(
            f"| {m['lr']:g} | {100 * m['test_accuracy']:.2f}% | {m['diverged'] or '-'} |"
            for m in sweep["members"]
        ),
        "",
        f"ensemble (diverged member excluded): {100 * sweep['test_accuracy']:.2f}%",
    ]
    emit(lines, markdown)


# ----------------------------------------------------------------------------- speed


def _batch(k=None):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(BATCH, SIZES[0])).astype(np.float32)
    y = rng.integers(0, SIZES[-1], size=(BATCH,)).astype(np.int32)
    return jax.device_put(x), jax.device_put(y)


def _mlp_params(key):
    keys = jax.random.split(key, len(SIZES) - 1)
    return [
        {"w": jax.random.normal(k, (a, b)) * jnp.sqrt(2.0 / a), "b": jnp.zeros(b)}
        for k, a, b in zip(keys, SIZES[:-1], SIZES[1:], strict=True)
    ]


def _mlp_loss(params, x, y):
    h = x
    for i, layer in enumerate(params):
        h = h @ layer["w"] + layer["b"]
        if i + 1 < len(params):
            h = jax.nn.relu(h)
    return optax.softmax_cross_entropy_with_integer_labels(h, y).mean()


def jnn_make_step(k):
    from jnn import ensemble, losses, nn, optim

    model = nn.Serial(nn.Dense(128), nn.Relu(), nn.Dense(128), nn.Relu(), nn.Dense(10))
    hp = {"learning_rate": [LR] * k}
    state = ensemble.init(
        model, optim.adam, jax.random.split(jax.random.key(0), k), (BATCH, 64), hyperparams=hp
    )
    step = ensemble.make_step(model, losses.softmax_cross_entropy, optim.adam, hyperparams=hp)
    batch, key = _batch(), jax.random.key(1)
    box = [state]

    def run(n):
        s = box[0]
        for _ in range(n):
            s, _ = step(s, batch, key)
        jax.block_until_ready(s)
        box[0] = s

    return run


def python_loop(k):
    from jnn import losses, nn, optim, train

    model = nn.Serial(nn.Dense(128), nn.Relu(), nn.Dense(128), nn.Relu(), nn.Dense(10))
    opt = optim.adam(LR)
    states = [train.init(model, opt, jax.random.key(i), (BATCH, 64)) for i in range(k)]
    step = train.make_step(model, losses.softmax_cross_entropy, opt, monitor=False)
    batch, key = _batch(), jax.random.key(1)

    def run(n):
        for _ in range(n):
            for i in range(k):
                states[i], _ = step(states[i], batch, key)
        jax.block_until_ready(states)

    return run


def hand_vmap(k):
    opt = optax.adam(LR)
    params = jax.vmap(_mlp_params)(jax.random.split(jax.random.key(0), k))
    opt_state = jax.vmap(opt.init)(params)

    def one(p, o, x, y):
        g = jax.grad(_mlp_loss)(p, x, y)
        u, o = opt.update(g, o, p)
        return optax.apply_updates(p, u), o

    step = jax.jit(jax.vmap(one, in_axes=(0, 0, None, None)), donate_argnums=(0, 1))
    x, y = _batch()
    box = [(params, opt_state)]

    def run(n):
        p, o = box[0]
        with jax.numpy_dtype_promotion("standard"):
            for _ in range(n):
                p, o = step(p, o, x, y)
        jax.block_until_ready(p)
        box[0] = (p, o)

    return run


def torch_func(k):
    import torch
    from torch.func import functional_call, stack_module_state

    torch.manual_seed(0)
    nets = [
        torch.nn.Sequential(
            torch.nn.Linear(64, 128),
            torch.nn.ReLU(),
            torch.nn.Linear(128, 128),
            torch.nn.ReLU(),
            torch.nn.Linear(128, 10),
        )
        for _ in range(k)
    ]
    params, buffers = stack_module_state(nets)
    base = nets[0].to("meta")
    opt = torch.optim.Adam(list(params.values()), lr=LR, fused=True)
    rng = np.random.default_rng(0)
    x = torch.tensor(rng.normal(size=(BATCH, 64)).astype(np.float32))
    y = torch.tensor(rng.integers(0, 10, size=(BATCH,)))

    def loss_one(p, b, xx, yy):
        return torch.nn.functional.cross_entropy(functional_call(base, (p, b), (xx,)), yy)

    batched = torch.vmap(loss_one, in_dims=(0, 0, None, None))

    def run(n):
        for _ in range(n):
            opt.zero_grad(set_to_none=True)
            batched(params, buffers, x, y).sum().backward()
            opt.step()
        float(next(iter(params.values())).sum().item())

    return run


def jnn_fit_epoch(k, sweep=False):
    """Steady-state epoch seconds, steps per epoch and compile seconds of ensemble.fit.

    Digits, batch 128 (11 steps per epoch). ``sweep``: the K members get K different
    learning rates (log-spaced over two decades) instead of K seeds of one rate.
    """
    from jnn import data, ensemble, losses, nn, optim

    ds = data.load_digits()
    model = nn.Serial(nn.Dense(128), nn.Relu(), nn.Dense(128), nn.Relu(), nn.Dense(10))
    keys = jax.random.split(jax.random.key(0), k)
    rates = np.geomspace(LR / 10, LR * 10, k) if sweep and k > 1 else [LR] * k
    hp = {"learning_rate": [float(r) for r in rates]}

    def run(n_epochs):
        res = ensemble.fit(
            model,
            losses.softmax_cross_entropy,
            optim.adam,
            (ds.x_train, ds.y_train),
            epochs=n_epochs + 1,
            batch_size=BATCH,
            keys=keys,
            hyperparams=hp,
            progress=False,
        )
        steady = [r["seconds"] for r in res.history[1:]]
        return statistics.median(steady), len(ds.x_train) // BATCH, res.timings["compile"]

    return run


def _steps(k):
    """Steps per timed block: at least ~0.2 s of work at every K."""
    return max(STEPS, 320 // k)


def _rate(run, k, repeats):
    run(3)  # warm-up (compile)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run(_steps(k))
        times.append(time.perf_counter() - t0)
    return k * _steps(k) / statistics.median(times)


def matmul_peak():
    return matmul_rate(2048)


def _median_call(fn, *args, calls=20, repeats=7):
    """Median seconds of one call of ``fn`` (blocks of ``calls`` after a warm-up)."""
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(calls):
            out = fn(*args)
        jax.block_until_ready(out)
        times.append((time.perf_counter() - t0) / calls)
    return statistics.median(times)


def dot_ceiling(k):
    """GFLOP/s of the matmuls K members of the MLP do, alone, as XLA:CPU runs them: each
    hidden layer's ``(K, B, in) @ (K, in, out)`` batched dot (per-member inputs, as after the
    first layer), against the same flops as one ``(K * B, in) @ (in, out)`` matmul."""
    rng = np.random.default_rng(0)
    flops = batched = single = 0.0
    for a, b in zip(SIZES[1:-1], SIZES[2:], strict=True):
        x = jnp.asarray(rng.normal(size=(k, BATCH, a)), jnp.float32)
        w = jnp.asarray(rng.normal(size=(k, a, b)), jnp.float32)
        flops += 2 * k * BATCH * a * b
        batched += _median_call(jax.jit(lambda x, w: jnp.einsum("kbi,kio->kbo", x, w)), x, w)
        single += _median_call(jax.jit(lambda x, w: x.reshape(-1, x.shape[-1]) @ w[0]), x, w)
    return flops / batched / 1e9, flops / single / 1e9


def speed(repeats, markdown=None):
    try:
        import torch  # noqa: F401

        contenders = {
            "jnn ensemble.make_step": jnn_make_step,
            "(a) Python loop of K steps": python_loop,
            "(b) hand-written jit(vmap) + Optax": hand_vmap,
            "(c) torch.func vmap + fused Adam": torch_func,
        }
    except ImportError:
        contenders = {
            "jnn ensemble.make_step": jnn_make_step,
            "(a) Python loop of K steps": python_loop,
            "(b) hand-written jit(vmap) + Optax": hand_vmap,
        }
    flops = 3 * 2 * BATCH * sum(a * b for a, b in zip(SIZES[:-1], SIZES[1:], strict=True))
    peak = matmul_peak()
    table, compiles, ceilings = {}, {}, {}
    for k in (1, 4, 16, 64):
        ceilings[k] = dot_ceiling(k)
        runs = {name: build(k) for name, build in contenders.items()}
        rates = {name: [] for name in runs}
        names = list(runs)
        for r in range(repeats):  # interleaved: load from elsewhere hits all alike
            # Rotated, with a pause: PyTorch's worker threads keep spinning for a while after
            # its block and would slow whichever contender always came next.
            for name in names[r % len(names) :] + names[: r % len(names)]:
                time.sleep(PAUSE)
                rates[name].append(_rate(runs[name], k, 1))
        table[k] = {name: statistics.median(r) for name, r in rates.items()}
        time.sleep(PAUSE)
        epochs = max(3, 40 // k)  # 11 steps each: enough epochs for a stable median

        epoch_seconds, steps, compiles[k] = jnn_fit_epoch(k)(epochs)
        table[k]["jnn ensemble.fit (scanned epoch)"] = k * steps / epoch_seconds
        epoch_seconds, steps, _ = jnn_fit_epoch(k, sweep=True)(epochs)

        table[k]["jnn ensemble.fit, K learning rates"] = k * steps / epoch_seconds

        print(k, {n: f"{v:,.0f}" for n, v in table[k].items()}, flush=True)
    names = list(table[1])
    lines = [
        f"Machine: {machine()}; matmul peak {peak:.0f} GFLOP/s (2048² float32 in JAX).",
        "",
        "| member-steps/s | " + " | ".join(f"K={k}" for k in table) + " |",
        "|---|" + "---|" * len(table),
    ]
    for name in names:
        lines.append(f"| {name} | " + " | ".join(f"{table[k][name]:,.0f}" for k in table) + " |")
    ref_b = "(b) hand-written jit(vmap) + Optax"
    for name in ("jnn ensemble.make_step", "jnn ensemble.fit (scanned epoch)"):
        lines.append(
            f"| {name} / (b) | "
            + " | ".join(f"{table[k][name] / table[k][ref_b]:.2f}×" for k in table)
            + " |"
        )
    fit, torch_name = "jnn ensemble.fit (scanned epoch)", "(c) torch.func vmap + fused Adam"
    loop = "(a) Python loop of K steps"
    lines.append(
        "| jnn fit / (a) | "
        + " | ".join(f"{table[k][fit] / table[k][loop]:.2f}×" for k in table)
        + " |"
    )
    lines.append(
        "| jnn fit, K rates / K seeds | "
        + " | ".join(
            f"{table[k]['jnn ensemble.fit, K learning rates'] / table[k][fit]:.2f}×" for k in table
        )
        + " |"
    )

    if torch_name in names:
        ratios = [table[k][fit] / table[k][torch_name] for k in table]
        lines.append(
            "| jnn fit / (c) torch.func | " + " | ".join(f"{r:.2f}×" for r in ratios) + " |"
        )

    lines.append(
        "| jnn fit GFLOP/s | "
        + " | ".join(
            f"{table[k]['jnn ensemble.fit (scanned epoch)'] * flops / 1e9:.0f}" for k in table
        )
        + " |"
    )
    lines.append(
        "| jnn fit, % of the 2048² matmul rate | "
        + " | ".join(
            f"{100 * table[k]['jnn ensemble.fit (scanned epoch)'] * flops / 1e9 / peak:.0f}%"
            for k in table
        )
        + " |"
    )
    lines.append(
        "| ceiling: the hidden layers' batched dots alone, GFLOP/s (% of 2048²) | "
        + " | ".join(f"{c[0]:.0f} ({100 * c[0] / peak:.0f}%)" for c in ceilings.values())
        + " |"
    )
    lines.append(
        "| the same flops as one (K·B, in) @ (in, out) matmul, GFLOP/s | "
        + " | ".join(f"{c[1]:.0f}" for c in ceilings.values())
        + " |"
    )
    lines.append(
        "| jnn fit compile seconds (epoch program) | "
        + " | ".join(f"{compiles[k]:.2f}" for k in table)
        + " |"
    )
    emit(lines, markdown)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("results", "speed"))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--markdown")
    args = parser.parse_args()
    if args.what == "results":
        results([int(s) for s in args.seeds.split(",")], args.markdown)
    else:
        speed(args.repeats, args.markdown)
