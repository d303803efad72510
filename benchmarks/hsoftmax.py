"""Hierarchical softmax head against a full softmax and PyTorch's adaptive softmax (CPU).

Same run, same hidden vectors ``h`` ``(256, 256)`` and Zipf-distributed labels, for C = 1,000,
10,000 and 100,000 classes:

- loss + gradient: w.r.t. ``h`` and the head. Full softmax (a dense ``(d, C)`` layer +
  cross-entropy, in JAX, and in PyTorch as a check on that reference): the whole ``(d, C)``
  gradient. jnn head: only the ``B * D`` gathered path
  rows (``jnn.losses.hierarchical_path``); also shown with ``jax.grad`` w.r.t. the whole head
  (a dense ``(C - 1, d)`` gradient that is zero off the paths). PyTorch
  ``nn.AdaptiveLogSoftmaxWithLoss`` (its documented usage, cutoffs at 2% / 20% of C,
  ``div_value=4``): ``asm(h, y).loss.backward()``.
- a whole training step of the head: full softmax with Optax SGD / Adam, jitted and donated;
  ``jnn.train.make_sparse_head_step`` (model = the head alone) with ``"sgd"`` and
  ``"lazy_adam"``; PyTorch adaptive softmax with ``torch.optim.SGD`` / ``Adam``.

Reported: the median ms over interleaved repeats (each a block of calls after warm-up; every
JAX call ends in ``block_until_ready``; PyTorch's OpenMP threads wait passively, so they do
not spin on the cores the next contender is timed on), the speed-up against the full softmax
of the same kind, and memory: the peak RSS growth during one call, measured in a child process
(``/proc/self/clear_refs`` resets the high-water mark; ``MALLOC_MMAP_THRESHOLD_`` is fixed there
so that freed buffers leave the RSS, which would slow the timed process with page faults)
and, for JAX, XLA's compiled temporaries. Linux only for the RSS.

    python benchmarks/hsoftmax.py [--classes 1000,10000,100000] [--repeats 7] [--markdown FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

from _machine import cpu_name, load_average

D, BATCH, LR = 256, 256, 0.1
_ENV = "MALLOC_MMAP_THRESHOLD_"


# ----------------------------------------------------------------------------- memory


def _status(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1]) * 1024
    return 0


def peak_growth(run) -> float:
    """Peak RSS growth (MiB) during one ``run()``: reset the high-water mark, run, compare."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return float("nan")
    base = _status("VmRSS")
    run()
    return (_status("VmHWM") - base) / 2**20


def xla_temp_mb(jitted, *args) -> float:
    try:
        stats = jitted.lower(*args).compile().memory_analysis()
        return stats.temp_size_in_bytes / 2**20
    except Exception:  # noqa: BLE001 (not every backend reports it)
        return float("nan")


# ----------------------------------------------------------------------------- contenders
# Each builder returns (run() -> None, which blocks until done; XLA temp MiB or NaN).


def _data(num_classes):
    import numpy as np

    from jnn.data import zipf_frequencies

    rng = np.random.default_rng(0)
    h = rng.normal(size=(BATCH, D)).astype(np.float32)
    y = rng.choice(num_classes, size=BATCH, p=zipf_frequencies(num_classes)).astype(np.int32)
    return h, y


def full_softmax(num_classes, h, y, optimizer=None):
    import jax
    import jax.numpy as jnp
    import optax

    key = jax.random.key(1)
    params = {
        "w": jax.random.normal(key, (D, num_classes)) / D**0.5,
        "b": jnp.zeros((num_classes,)),
    }
    h, y = jnp.asarray(h), jnp.asarray(y)

    def loss(h, p):
        logits = h @ p["w"] + p["b"][None, :]
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))

    if optimizer is None:
        f = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
        return (lambda: jax.block_until_ready(f(h, params))), xla_temp_mb(f, h, params)

    def step(state):
        p, opt_state = state
        g = jax.grad(loss, argnums=1)(h, p)
        updates, opt_state = optimizer.update(g, opt_state, p)
        return optax.apply_updates(p, updates), opt_state

    f = jax.jit(step, donate_argnums=0)
    holder = [(params, optimizer.init(params))]
    temp = xla_temp_mb(f, holder[0])

    def run():
        holder[0] = f(holder[0])
        jax.block_until_ready(holder[0])

    return run, temp


def head_loss_grad(tree, h, y, dense_grad=False):
    import jax
    import jax.numpy as jnp

    from jnn import losses

    key = jax.random.key(2)
    head = {"w": jax.random.normal(key, (tree.num_nodes, D)) / D**0.5}
    head["b"] = jnp.zeros((tree.num_nodes,))
    h, y = jnp.asarray(h), jnp.asarray(y)

    def sparse(h, head):
        path = losses.hierarchical_path(y, head, tree)

        def loss(h, w, b):
            return jnp.mean(losses.hierarchical_path_loss(h, path._replace(w=w, b=b)))

        return jax.value_and_grad(loss, argnums=(0, 1, 2))(h, path.w, path.b)

    def dense(h, head):
        loss = lambda h, p: jnp.mean(losses.hierarchical_softmax_loss(h, y, p, tree))
        return jax.value_and_grad(loss, argnums=(0, 1))(h, head)

    f = jax.jit(dense if dense_grad else sparse)
    return (lambda: jax.block_until_ready(f(h, head))), xla_temp_mb(f, h, head)


def head_step(tree, h, y, head_update):
    import jax
    import optax

    from jnn import nn, train

    model = nn.Serial(nn.HierarchicalSoftmax(tree))
    key = jax.random.key(3)
    state = train.init_sparse_head(model, optax.sgd(LR), key, (BATCH, D), head_update=head_update)
    lr = LR if head_update == "sgd" else 1e-3
    step = train.make_sparse_head_step(
        model, optax.sgd(LR), head_update=head_update, learning_rate=lr
    )
    batch = (jax.numpy.asarray(h), jax.numpy.asarray(y))
    holder = [state]
    temp = xla_temp_mb(step, state, batch, key)

    def run():
        holder[0], metrics = step(holder[0], batch, key)
        jax.block_until_ready((holder[0], metrics))

    return run, temp


def torch_adaptive(num_classes, h, y, optimizer=None):
    import torch

    torch.manual_seed(0)
    cutoffs = [max(1, round(0.02 * num_classes)), max(2, round(0.2 * num_classes))]
    asm = torch.nn.AdaptiveLogSoftmaxWithLoss(D, num_classes, cutoffs=cutoffs, div_value=4.0)
    yt = torch.from_numpy(y.astype("int64"))
    if optimizer is None:
        ht = torch.from_numpy(h).requires_grad_(True)

        def run():
            asm.zero_grad(set_to_none=True)
            ht.grad = None
            asm(ht, yt).loss.backward()

        return run, float("nan")
    ht = torch.from_numpy(h)
    if optimizer == "sgd":
        opt = torch.optim.SGD(asm.parameters(), lr=LR)
    else:
        opt = torch.optim.Adam(asm.parameters(), lr=1e-3)

    def run():
        opt.zero_grad(set_to_none=True)
        asm(ht, yt).loss.backward()
        opt.step()

    return run, float("nan")


def torch_full_softmax(num_classes, h, y):
    """The full softmax in PyTorch (``nn.Linear`` + ``cross_entropy``): a check on the JAX one."""
    import torch

    torch.manual_seed(0)
    linear = torch.nn.Linear(D, num_classes)
    ht = torch.from_numpy(h).requires_grad_(True)
    yt = torch.from_numpy(y.astype("int64"))

    def run():
        linear.zero_grad(set_to_none=True)
        ht.grad = None
        torch.nn.functional.cross_entropy(linear(ht), yt).backward()

    return run, float("nan")


def contenders(num_classes):
    """``[(kind, name, builder)]``: ``kind`` groups a row with its full-softmax reference."""
    import optax

    from jnn import losses
    from jnn.data import zipf_frequencies

    h, y = _data(num_classes)
    sgd, adam = optax.sgd(LR), optax.adam(1e-3)
    trees = {
        "balanced": losses.balanced_class_tree(num_classes),
        "Huffman": losses.huffman_class_tree(zipf_frequencies(num_classes)),
    }
    c, balanced = num_classes, trees["balanced"]
    rows = [
        ("loss+grad", "full softmax (dense (d, C) layer), JAX", lambda: full_softmax(c, h, y)),
        (
            "loss+grad",
            "full softmax, PyTorch (Linear + cross_entropy)",
            lambda: torch_full_softmax(c, h, y),
        ),
    ]
    for name, tree in trees.items():
        label = f"jnn head, {name} tree (depth {tree.depth}), path rows"
        rows.append(("loss+grad", label, lambda t=tree: head_loss_grad(t, h, y)))
    rows += [
        (
            "loss+grad",
            "jnn head, balanced tree, jax.grad w.r.t. the whole head",
            lambda: head_loss_grad(balanced, h, y, dense_grad=True),
        ),
        ("loss+grad", "PyTorch AdaptiveLogSoftmaxWithLoss", lambda: torch_adaptive(c, h, y)),
        ("step", "full softmax, SGD step (jit, donated)", lambda: full_softmax(c, h, y, sgd)),
        ("step", "full softmax, Adam step (jit, donated)", lambda: full_softmax(c, h, y, adam)),
    ]
    for name, tree in trees.items():
        for update in ("sgd", "lazy_adam"):
            label = f"jnn make_sparse_head_step, {update}, {name} tree"
            rows.append(("step", label, lambda t=tree, u=update: head_step(t, h, y, u)))
    rows += [
        ("step", "PyTorch adaptive softmax, SGD step", lambda: torch_adaptive(c, h, y, "sgd")),
        ("step", "PyTorch adaptive softmax, Adam step", lambda: torch_adaptive(c, h, y, "adam")),
    ]
    return rows


# ----------------------------------------------------------------------------- timing


def _block_size(run, target_s=0.2):
    start = time.perf_counter()
    run()
    once = max(time.perf_counter() - start, 1e-6)
    return max(1, min(200, int(target_s / once)))


def measure(num_classes, repeats):
    built = []
    for kind, name, build in contenders(num_classes):
        run, temp = build()
        for _ in range(5):  # compile and warm up
            run()
        built.append({"kind": kind, "name": name, "run": run, "temp": temp, "times": []})
        built[-1]["n"] = _block_size(run)
    for _ in range(repeats):  # interleaved: load from other processes hits every row alike
        for row in built:
            time.sleep(0.05)  # let the previous contender's thread pool go idle
            start = time.perf_counter()
            for _ in range(row["n"]):
                row["run"]()
            row["times"].append((time.perf_counter() - start) / row["n"] * 1e3)
    return built


def memory(num_classes) -> list:
    """Peak RSS growth (MiB) of one call of each contender, after warm-up (run in a child)."""
    out = []
    for _, _, build in contenders(num_classes):
        run, _ = build()
        for _ in range(3):
            run()
        out.append(peak_growth(run))
    return out


def memory_in_child(num_classes) -> list:
    """:func:`memory` in a fresh process whose malloc unmaps every buffer over 128 KiB when it is
    freed (so the RSS high-water mark sees each call's buffers; it would slow the timings
    with page faults, hence a separate process)."""
    env = {**os.environ, _ENV: "131072", "OMP_WAIT_POLICY": "PASSIVE"}
    cmd = [sys.executable, os.path.abspath(__file__), "--memory-of", str(num_classes)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def table(num_classes, rows) -> str:
    lg_ref = next(r for r in rows if r["name"].startswith("full softmax (dense"))
    out = [
        f"**C = {num_classes:,}** (d = {D}, batch {BATCH})",
        "",
        "| kind | contender | ms (median) | min..max | speed-up vs full softmax | "
        "peak RSS growth MiB | XLA temp MiB |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    sgd_ref = next(r for r in rows if r["name"].startswith("full softmax, SGD"))
    for row in rows:
        med = statistics.median(row["times"])
        ref = lg_ref if row["kind"] == "loss+grad" else sgd_ref
        speed = statistics.median(ref["times"]) / med
        out.append(
            f"| {row['kind']} | {row['name']} | {med:.2f} | {min(row['times']):.2f}.."
            f"{max(row['times']):.2f} | {speed:.1f}x | {row['rss']:.1f} | {row['temp']:.1f} |"
        )
    return "\n".join(out)


def machine() -> str:
    import jax
    import optax
    import torch

    return (
        f"{cpu_name()}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, Python "
        f"{platform.python_version()}, jax {jax.__version__} ({jax.default_backend()}), optax "
        f"{optax.__version__}, torch {torch.__version__} ({torch.get_num_threads()} threads); "
        f"{load_average()}"
    )


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--classes", default="1000,10000,100000")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--markdown", default=None, help="also write the tables to this file")
    ap.add_argument("--memory-of", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.memory_of is not None:  # the child of memory_in_child
        print(json.dumps(memory(args.memory_of)))
        return
    if os.environ.get("OMP_WAIT_POLICY") != "PASSIVE":
        # PyTorch's idle OpenMP threads must not spin on the cores that the next (JAX)
        # contender is timed on.
        env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
        os.execve(sys.executable, [sys.executable, *sys.argv], env)
    parts = [f"Machine: {machine()}.", ""]
    parts.append(
        f"Median of {args.repeats} interleaved repeats after warm-up; the speed-up of a step is "
        "against the full-softmax SGD step; the step's learning rate is 0.1 (SGD) or 1e-3 (Adam)."
    )
    print("\n".join(parts), flush=True)
    for c in (int(v) for v in args.classes.split(",")):
        rows = measure(c, args.repeats)
        for row, mb in zip(rows, memory_in_child(c), strict=True):
            row["rss"] = mb
        text = table(c, rows)
        print("\n" + text, flush=True)
        parts += ["", text]
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write("\n".join(parts) + "\n")


if __name__ == "__main__":
    main()
