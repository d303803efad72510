"""Streamed training data (``jnn.train._feed``): memory and throughput.

``--memory``: writes a memory-mapped training set of ``--gib`` GiB (default 3) as ``.npy``
files to a folder in /tmp, then, each in a fresh process, runs one epoch of ``jnn.train.fit``
over the mapped arrays and ``jnn train --data DIR``; a thread samples ``RssAnon`` (the
process's anonymous memory, ``/proc/self/status``: the mapped file's pages do not count) every
10 ms and the peak is printed. The files are deleted at the end.

Throughput (default): one epoch of the digits MLP and of the MNIST-1D CNN, resident on the
device vs streamed from memory-mapped ``.npy`` files (the same arrays) vs a Grain pipeline
(``MapDataset`` shuffled and batched): examples per second, the median of ``--repeats``
epochs after a warm-up epoch (each epoch's time ends when its metrics are on the host, which
waits for the device).

    python benchmarks/streaming.py [--repeats 5] [--markdown BENCHMARKS.md]
    python benchmarks/streaming.py --memory [--gib 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
FEATURES = 256  # columns of the memory test's inputs (float32)


# ----------------------------------------------------------------------------- memory


def rss_anon_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) / 1024
    raise OSError("no RssAnon in /proc/self/status")


class PeakAnon:
    """Samples ``RssAnon`` every 10 ms in a thread; ``peak`` is the largest seen (MiB)."""

    def __init__(self):
        self.peak, self._stop = rss_anon_mib(), threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self):
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, rss_anon_mib())

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *_):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_anon_mib())


def write_data(folder: str, gib: float, rows_per_write: int = 1 << 16) -> int:
    """``x_train.npy`` of ``gib`` GiB float32 (``FEATURES`` columns) and its labels, written
    slice by slice (never whole in memory), plus a small test set; returns the train rows."""
    from numpy.lib.format import open_memmap

    n = int(gib * 2**30) // (FEATURES * 4)
    rng = np.random.default_rng(0)
    w = rng.normal(size=(FEATURES, 10)).astype(np.float32)
    x = open_memmap(os.path.join(folder, "x_train.npy"), "w+", np.float32, (n, FEATURES))
    y = open_memmap(os.path.join(folder, "y_train.npy"), "w+", np.int32, (n,))
    for r0 in range(0, n, rows_per_write):
        r1 = min(n, r0 + rows_per_write)
        part = rng.standard_normal((r1 - r0, FEATURES), dtype=np.float32)
        x[r0:r1], y[r0:r1] = part, np.argmax(part @ w, 1)
        x.flush()
        y.flush()
    del x, y
    xt = rng.standard_normal((4096, FEATURES), dtype=np.float32)
    np.save(os.path.join(folder, "x_test.npy"), xt)
    np.save(os.path.join(folder, "y_test.npy"), np.argmax(xt @ w, 1).astype(np.int32))
    return n


def child(kind: str, folder: str) -> None:
    """One measured run in this process: ``fit`` over the mapped arrays, or the CLI."""
    with PeakAnon() as anon:
        t0 = time.perf_counter()
        if kind == "fit":
            import jax

            from jnn import losses, nn, optim, train

            x = np.load(os.path.join(folder, "x_train.npy"), mmap_mode="r")
            y = np.load(os.path.join(folder, "y_train.npy"), mmap_mode="r")
            model = nn.Serial(nn.Dense(64), nn.Relu(), nn.Dense(10))
            train.fit(
                model, losses.softmax_cross_entropy, optim.adam(1e-3), (x, y), epochs=1,
                batch_size=1024, key=jax.random.key(0), progress=False,
            )  # fmt: skip
        else:
            from jnn import cli

            out = os.path.join(folder, "run")
            argv = ["train", "--data", folder, "--out", out, "--epochs", "1", "--widths", "64",
                    "--batch-size", "1024", "--no-progress", "--no-plots"]  # fmt: skip
            assert cli.main(argv) == 0
        seconds = time.perf_counter() - t0
    print(f"RESULT {kind} peak RssAnon {anon.peak:.0f} MiB ({seconds:.1f} s)", flush=True)


def memory(gib: float) -> None:
    folder = tempfile.mkdtemp(prefix="jnn-stream-", dir="/tmp")
    try:
        t0 = time.perf_counter()
        n = write_data(folder, gib)
        print(f"wrote {n} x {FEATURES} float32 ({gib:g} GiB) in {time.perf_counter() - t0:.0f} s")
        for kind in ("fit", "cli"):
            done = subprocess.run(
                [sys.executable, __file__, "--child", kind, folder],
                capture_output=True, text=True, cwd=ROOT, check=False,
                env={**os.environ, "PYTHONPATH": ROOT},
            )  # fmt: skip
            lines = [ln for ln in done.stdout.splitlines() if ln.startswith(("RESULT", "checked"))]
            print("\n".join(lines) or done.stderr[-2000:])
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# ----------------------------------------------------------------------------- throughput


def _problems():
    from jnn import data, nn

    digits = data.load("digits", seed=0)
    mnist = data.to_images(data.load("mnist1d", seed=0))
    mlp = nn.Serial(nn.Dense(128), nn.Relu(), nn.Dense(128), nn.Relu(), nn.Dense(10))
    cnn = nn.Serial(
        nn.Conv(32, (5,)), nn.Relu(), nn.MaxPool((2,)),
        nn.Conv(32, (5,)), nn.Relu(), nn.MaxPool((2,)),
        nn.Flatten(), nn.Dense(10),
    )  # fmt: skip
    return {"digits MLP": (mlp, digits, 64), "MNIST-1D CNN": (cnn, mnist, 128)}


def _grain(x, y, batch_size):
    import grain

    return (
        grain.MapDataset.range(len(x))
        .shuffle(seed=0)
        .batch(batch_size, drop_remainder=True)
        .map(lambda i: (x[np.sort(i)], y[np.sort(i)]))
    )


def _epoch_rate(model, train_data, batch_size, repeats) -> float:
    """Examples per second: the median epoch after a warm-up one."""
    import jax

    from jnn import losses, optim, train

    res = train.fit(
        model, losses.softmax_cross_entropy, optim.adam(1e-3), train_data,
        epochs=repeats + 1, batch_size=batch_size, key=jax.random.key(0), progress=False,
    )  # fmt: skip
    steps = res.history[0]["step"]
    return steps * (batch_size or 0) / statistics.median(r["seconds"] for r in res.history[1:])


def throughput(repeats: int, markdown=None) -> None:
    import jax
    from _machine import cpu_name, emit, load_average, matmul_rate

    lines = [
        f"Machine: {cpu_name()}, {os.cpu_count()} cores, jax {jax.__version__}, "
        f"{jax.devices()[0].platform}; {load_average()}; matmul {matmul_rate():.0f} GFLOP/s "
        "(2048² float32).",
        "",
        "| model | resident ex/s | streamed (mmap) ex/s | streamed / resident | Grain ex/s |",
        "|---|---:|---:|---:|---:|",
    ]
    folder = tempfile.mkdtemp(prefix="jnn-stream-", dir="/tmp")
    try:
        for name, (model, ds, b) in _problems().items():
            np.save(os.path.join(folder, "x.npy"), ds.x_train)
            np.save(os.path.join(folder, "y.npy"), ds.y_train)
            files = (os.path.join(folder, f) for f in ("x.npy", "y.npy"))
            mapped = tuple(np.load(f, mmap_mode="r") for f in files)
            resident = _epoch_rate(model, (ds.x_train, ds.y_train), b, repeats)
            streamed = _epoch_rate(model, mapped, b, repeats)
            grained = _grain_rate(model, ds, b, repeats)
            lines.append(
                f"| {name} | {resident:,.0f} | {streamed:,.0f} | {streamed / resident:.2f}x | "
                f"{grained:,.0f} |"
            )
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    emit(lines, markdown)


def _grain_rate(model, ds, batch_size, repeats) -> float:
    import jax

    from jnn import losses, optim, train

    res = train.fit(
        model, losses.softmax_cross_entropy, optim.adam(1e-3),
        _grain(ds.x_train, ds.y_train, batch_size), epochs=repeats + 1, batch_size=None,
        key=jax.random.key(0), progress=False,
    )  # fmt: skip
    steps = res.history[0]["step"]
    return steps * batch_size / statistics.median(r["seconds"] for r in res.history[1:])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--memory", action="store_true", help="peak anonymous memory of one epoch")
    p.add_argument("--gib", type=float, default=3.0, help="size of the mapped training set")
    p.add_argument("--repeats", type=int, default=5, help="measured epochs (after a warm-up)")
    p.add_argument("--markdown", help="append the table to this file")
    p.add_argument("--child", nargs=2, metavar=("KIND", "DIR"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(*args.child)
    elif args.memory:
        memory(args.gib)
    else:
        throughput(args.repeats, args.markdown)


if __name__ == "__main__":
    sys.path[:0] = [HERE, ROOT]
    main()
