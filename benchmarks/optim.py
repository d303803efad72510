"""jnn.optim vs Optax: one jitted, donated ``update`` + ``apply_updates`` per optimizer.

Both libraries run in the same process, interleaved sample by sample, on
(a) one 10M-element float32 leaf and (b) 100 leaves of 100k elements. Each time
is compared with the memory-bandwidth bound measured in the same run by a
donated triad ``a = b + s * c`` (12 bytes per element): an optimizer that must
read and write ``k`` bytes per parameter cannot beat ``k / 12`` triad times
(sgd 12: read g, p, write p; momentum 20; adam 28: read g, p, m, v, write p, m, v).
The table also gives the number of XLA fusions in the compiled step and how many
of them are full-size loops over the parameters.

    python benchmarks/optim.py                 # the BENCHMARKS.md table
    python benchmarks/optim.py --repeats 5 --size 1000000   # quick look
"""

import argparse
import re
import statistics
import time

import jax
import jax.numpy as jnp
import optax
from _machine import cpu_name

import jnn.optim as jo

# (name, factory kwargs, bytes moved per parameter at the bound)
OPTIMIZERS = [
    ("sgd", "sgd", {"learning_rate": 1e-3}, 12),
    ("momentum", "sgd", {"learning_rate": 1e-3, "momentum": 0.9}, 20),
    ("nesterov", "sgd", {"learning_rate": 1e-3, "momentum": 0.9, "nesterov": True}, 20),
    ("adagrad", "adagrad", {"learning_rate": 1e-3}, 20),
    ("rmsprop", "rmsprop", {"learning_rate": 1e-3}, 20),
    ("adam", "adam", {"learning_rate": 1e-3}, 28),
    ("adamw", "adamw", {"learning_rate": 1e-3}, 28),
]


def _layouts(size):
    return {
        f"1 x {size / 1e6:g}M": [(size,)],
        f"100 x {size // 100 / 1e3:g}k": [(size // 100,)] * 100,
    }


def _tree(shapes, value):
    return {f"p{i:03d}": jnp.full(s, value, jnp.float32) for i, s in enumerate(shapes)}


def _fusions(compiled, n_leaf):
    """(all fusions, fusions whose output is a full parameter-sized array) in the entry."""
    entry = compiled.as_text().split("ENTRY", 1)[1]
    lines = [ln for ln in entry.splitlines() if re.search(r"\bfusion\(", ln)]
    big = [
        ln
        for ln in lines
        if re.search(rf"f32\[{n_leaf}\]", ln.split("=", 1)[1].split("fusion(")[0])
    ]
    return len(lines), len(big)


def _make_step(tx, donate=True):
    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    return jax.jit(step, donate_argnums=(0, 1) if donate else ())


class _Runner:
    """A compiled step with its own (donated, so ever-replaced) buffers."""

    def __init__(self, tx, shapes, donate=True):
        self.params = _tree(shapes, 0.5)
        self.grads = _tree(shapes, 1e-3)
        self.state = tx.init(self.params)
        jitted = _make_step(tx, donate)
        self.compiled = jitted.lower(self.params, self.state, self.grads).compile()
        self.step = jitted
        self.once()

    def once(self):
        t0 = time.perf_counter()
        self.params, self.state = self.step(self.params, self.state, self.grads)
        jax.block_until_ready((self.params, self.state))
        return time.perf_counter() - t0


class _Triad:
    """``a = b + s * c`` with ``b`` donated: reads b and c, writes a (12 bytes per element)."""

    def __init__(self, shapes):
        self.b, self.c = _tree(shapes, 0.5), _tree(shapes, 1.0)
        self.step = jax.jit(
            lambda b, c: jax.tree.map(lambda x, y: x + 1e-7 * y, b, c), donate_argnums=(0,)
        )
        self.once()

    def once(self):
        t0 = time.perf_counter()
        self.b = jax.block_until_ready(self.step(self.b, self.c))
        return time.perf_counter() - t0


def _interleaved(runners, repeats):
    """Median seconds per runner, sampling them round-robin so load drifts hit all alike."""
    samples = [[] for _ in runners]
    for _ in range(repeats):
        for i, r in enumerate(runners):
            samples[i].append(r.once())
    return [statistics.median(s) for s in samples]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=10_000_000, help="parameters per layout")
    parser.add_argument("--repeats", type=int, default=21, help="timed samples per row")
    parser.add_argument("--only", nargs="*", help="optimizer rows to run (default: all)")
    args = parser.parse_args(argv)

    cpu = cpu_name()
    print(
        f"jax {jax.__version__}, optax {optax.__version__}, {cpu}, "
        f"{jax.devices()[0].device_kind}, {jax.local_device_count()} device(s)\n"
    )
    print(
        "| layout | optimizer | bytes/param | jnn ms | optax ms | jnn/optax | jnn/bound "
        "| optax/bound | fusions jnn (full-size) | fusions optax (full-size) |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    rows = [r for r in OPTIMIZERS if not args.only or r[0] in args.only]
    for layout, shapes in _layouts(args.size).items():
        for label, name, kwargs, nbytes in rows:
            ours = _Runner(getattr(jo, name)(**kwargs), shapes)
            ref = _Runner(getattr(optax, name)(**kwargs), shapes)
            triad = _Triad(shapes)
            t_ours, t_ref, t_triad = _interleaved([ours, ref, triad], args.repeats)
            bound = t_triad * nbytes / 12
            f_ours = _fusions(ours.compiled, shapes[0][0])
            f_ref = _fusions(ref.compiled, shapes[0][0])
            print(
                f"| {layout} | {label} | {nbytes} | {t_ours * 1e3:.2f} | {t_ref * 1e3:.2f} | "
                f"{t_ours / t_ref:.2f} | {t_ours / bound:.2f} | {t_ref / bound:.2f} | "
                f"{f_ours[0]} ({f_ours[1]}) | {f_ref[0]} ({f_ref[1]}) |",
                flush=True,
            )
            del ours, ref, triad

    # What donation is worth: Adam on the single leaf, donated vs not, both libraries' way.
    shapes = next(iter(_layouts(args.size).values()))
    donated = _Runner(jo.adam(1e-3), shapes)
    undonated = _Runner(jo.adam(1e-3), shapes, donate=False)
    triad = _Triad(shapes)
    t_d, t_u, t_triad = _interleaved([donated, undonated, triad], max(5, args.repeats // 3))
    bound = t_triad * 28 / 12
    print(
        f"\nAdam, {args.size:,} params: donated {t_d * 1e3:.2f} ms ({t_d / bound:.2f}x bound), "
        f"not donated {t_u * 1e3:.2f} ms ({t_u / bound:.2f}x bound): donation is worth "
        f"{t_u / t_d:.1f}x. Triad {t_triad * 1e3:.2f} ms = "
        f"{12 * args.size / t_triad / 1e9:.1f} GB/s."
    )


if __name__ == "__main__":
    main()
