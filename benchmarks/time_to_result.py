"""Time to result: the whole-process wall time of ``jnn train`` (digits MLP; MNIST-1D CNN),
cold (empty jnn cache) and warm (second run), against a PyTorch eager script and a Keras 3
script (``KERAS_BACKEND=jax``) of the same network, optimizer, schedule and data split, all
in the same run.

    python benchmarks/time_to_result.py [--repeats 3] [--markdown FILE]

Each measurement is a fresh ``python`` process (imports included), timed from spawn to exit;
cold runs get an empty ``JNN_CACHE_DIR``, warm runs reuse the one a previous run filled. The
PyTorch scripts (below, eager mode, fused Adam) and the Keras scripts (``model.fit``, its
default jit-compiled train step) regenerate their data like a user's script would (no
download). Reported: medians over ``--repeats``, the accuracy each reached, the steady epoch
(median of the epochs after the first: jnn's from ``metrics.jsonl``, the scripts' own clock)
and jnn's own ``timings`` (imports, data, compile, train, loop, evaluate, write) of a warm
run. ``--epochs N`` shortens every run alike (a smoke run: ``--repeats 1 --epochs 2``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

TORCH_COMMON = r"""
import math, os, sys, time, numpy as np, torch
EPOCHS = int(os.environ.get("BENCH_EPOCHS", 0))
torch.manual_seed(0)
torch.set_num_threads(max(1, torch.get_num_threads()))

def standardize(tr, *rest):
    mean, std = tr.mean(0), tr.std(0)
    std = np.where(std > 0, std, 1.0)
    return [(a - mean) / std for a in (tr, *rest)]

def train(net, x, y, xt, yt, epochs, batch, lr):
    opt = torch.optim.Adam(net.parameters(), lr=lr, fused=True)
    steps = epochs * (len(x) // batch)
    cosine = lambda t: 0.5 * (1 + math.cos(math.pi * min(t, steps) / steps))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, cosine)
    x, y = torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.long)
    seconds = []
    for epoch in range(epochs):
        t0 = time.perf_counter()
        net.train()
        perm = torch.randperm(len(x))
        for i in range(len(x) // batch):
            idx = perm[i * batch:(i + 1) * batch]
            opt.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(net(x[idx]), y[idx]).backward()
            opt.step(); sched.step()
        seconds.append(time.perf_counter() - t0)
    print(f"steady epoch {float(np.median(seconds[1:] or seconds)):.4f} s")
    net.eval()
    with torch.no_grad():
        pred = net(torch.tensor(xt, dtype=torch.float32)).argmax(-1).numpy()
    print(f"test accuracy {100 * np.mean(pred == yt):.2f}%")
"""

TORCH_DIGITS = (
    TORCH_COMMON
    + r"""
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
d = load_digits()
x, xt, y, yt = train_test_split(
    d.data.astype(np.float32), d.target, test_size=0.2, random_state=0, stratify=d.target
)
x, xv, y, yv = train_test_split(x, y, test_size=0.1, random_state=0, stratify=y)
x, xt = standardize(x, xt)
layers = []
for a, b in ((64, 256), (256, 256)):
    lin = torch.nn.Linear(a, b)
    torch.nn.init.kaiming_normal_(lin.weight)
    torch.nn.init.zeros_(lin.bias)
    layers += [lin, torch.nn.ReLU(), torch.nn.Dropout(0.2)]
net = torch.nn.Sequential(*layers, torch.nn.Linear(256, 10))
train(net, x, y, xt, yt, epochs=EPOCHS or 30, batch=128, lr=3e-3)
"""
)

TORCH_MNIST1D_CNN = (
    TORCH_COMMON
    + r"""
from mnist1d.data import get_dataset_args, make_dataset
from sklearn.model_selection import train_test_split
raw = make_dataset(get_dataset_args())
x, y = raw["x"].astype(np.float32), raw["y"]
xt, yt = raw["x_test"].astype(np.float32), raw["y_test"]
x, xv, y, yv = train_test_split(x, y, test_size=0.1, random_state=0, stratify=y)
x, xt = standardize(x, xt)
x, xt = x[:, None, :], xt[:, None, :]
layers, c = [], 1
for width in (64, 64, 64):
    conv = torch.nn.Conv1d(c, width, 5, padding=2); torch.nn.init.kaiming_normal_(conv.weight)
    torch.nn.init.zeros_(conv.bias)
    layers += [conv, torch.nn.ReLU(), torch.nn.MaxPool1d(2)]; c = width
head = [torch.nn.Flatten(), torch.nn.Dropout(0.3), torch.nn.Linear(5 * 64, 10)]
net = torch.nn.Sequential(*layers, *head)
train(net, x, y, xt, yt, epochs=EPOCHS or 20, batch=64, lr=3e-3)
"""
)

KERAS_COMMON = r"""
import os, time, numpy as np
os.environ.setdefault("KERAS_BACKEND", "jax")
import keras
keras.utils.set_random_seed(0)
EPOCHS = int(os.environ.get("BENCH_EPOCHS", 0))

def standardize(tr, *rest):
    mean, std = tr.mean(0), tr.std(0)
    std = np.where(std > 0, std, 1.0)
    return [(a - mean) / std for a in (tr, *rest)]

class EpochClock(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.seconds = []
    def on_epoch_begin(self, epoch, logs=None):
        self.t0 = time.perf_counter()
    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self.t0)

def train(net, x, y, xt, yt, epochs, batch, lr):
    steps = epochs * (len(x) // batch)
    schedule = keras.optimizers.schedules.CosineDecay(lr, steps)
    net.compile(
        optimizer=keras.optimizers.Adam(schedule),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    clock = EpochClock()
    net.fit(x, y, batch_size=batch, epochs=epochs, shuffle=True, verbose=0, callbacks=[clock])
    print(f"steady epoch {float(np.median(clock.seconds[1:] or clock.seconds)):.4f} s")
    pred = np.argmax(net.predict(xt, batch_size=1024, verbose=0), -1)
    print(f"test accuracy {100 * np.mean(pred == yt):.2f}%")
"""

KERAS_DIGITS = (
    KERAS_COMMON
    + r"""
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
d = load_digits()
x, xt, y, yt = train_test_split(
    d.data.astype(np.float32), d.target, test_size=0.2, random_state=0, stratify=d.target
)
x, xv, y, yv = train_test_split(x, y, test_size=0.1, random_state=0, stratify=y)
x, xt = standardize(x, xt)
layers = [keras.Input((64,))]
for width in (256, 256):
    layers += [keras.layers.Dense(width, "relu", kernel_initializer="he_normal"),
               keras.layers.Dropout(0.2)]
net = keras.Sequential([*layers, keras.layers.Dense(10)])
train(net, x, y, xt, yt, epochs=EPOCHS or 30, batch=128, lr=3e-3)
"""
)

KERAS_MNIST1D_CNN = (
    KERAS_COMMON
    + r"""
from mnist1d.data import get_dataset_args, make_dataset
from sklearn.model_selection import train_test_split
raw = make_dataset(get_dataset_args())
x, y = raw["x"].astype(np.float32), raw["y"]
xt, yt = raw["x_test"].astype(np.float32), raw["y_test"]
x, xv, y, yv = train_test_split(x, y, test_size=0.1, random_state=0, stratify=y)
x, xt = standardize(x, xt)
x, xt = x[..., None], xt[..., None]
layers = [keras.Input((40, 1))]
for width in (64, 64, 64):
    layers += [keras.layers.Conv1D(width, 5, padding="same", activation="relu",
                                   kernel_initializer="he_normal"),
               keras.layers.MaxPooling1D(2)]
head = [keras.layers.Flatten(), keras.layers.Dropout(0.3), keras.layers.Dense(10)]
net = keras.Sequential([*layers, *head])
train(net, x, y, xt, yt, epochs=EPOCHS or 20, batch=64, lr=3e-3)
"""
)

# The PyTorch script replicates the 3 x 64-channel CNN of 20 epochs (the default before
# issue 21), so the jnn command pins that network: the comparison stays like for like.
_OLD_CNN = "--dataset mnist1d --model cnn --widths 64,64,64 --norm none --dropout 0.3 --epochs 20"
JNN = {"digits MLP": [], "MNIST-1D CNN": _OLD_CNN.split()}
TORCH = {"digits MLP": TORCH_DIGITS, "MNIST-1D CNN": TORCH_MNIST1D_CNN}
KERAS = {"digits MLP": KERAS_DIGITS, "MNIST-1D CNN": KERAS_MNIST1D_CNN}


def _timed(cmd, env):
    """``(wall seconds, test accuracy %, steady epoch seconds or None)`` of one process."""
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[:4]} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    acc = [line for line in proc.stdout.splitlines() if "test accuracy" in line][-1]
    epoch = [line for line in proc.stdout.splitlines() if line.startswith("steady epoch")]
    steady = float(epoch[-1].split()[2]) if epoch else None
    return wall, float(acc.split("test accuracy ")[1].split("%")[0]), steady


def _jnn(args, cache, out, epochs):
    env = {**os.environ, "JNN_CACHE_DIR": cache}
    cmd = [sys.executable, "-m", "jnn.cli", "train", *args, "--no-progress", "--overwrite"]
    cmd += ["--out", out] + (["--epochs", str(epochs)] if epochs else [])
    wall, acc, _ = _timed(cmd, env)
    with open(os.path.join(out, "summary.json")) as f:
        timings = json.load(f)["timings"]
    with open(os.path.join(out, "metrics.jsonl")) as f:
        seconds = [json.loads(line)["seconds"] for line in f if line.strip()]
    return (wall, acc, statistics.median(seconds[1:] or seconds)), timings


def _script(source, epochs):
    env = {**os.environ, "KERAS_BACKEND": "jax", "BENCH_EPOCHS": str(epochs or 0)}
    return _timed([sys.executable, "-c", source], env)


def measure(name, repeats, epochs=None):
    """Medians of ``(wall, accuracy, steady epoch)`` for jnn cold, jnn warm, PyTorch and
    Keras, interleaved so that load from elsewhere hits all four alike."""
    tmp = tempfile.mkdtemp()
    runs = {"cold": [], "warm": [], "torch": [], "keras": []}
    timings = None
    for r in range(repeats):
        cache = os.path.join(tmp, f"cache{r}")
        runs["cold"].append(_jnn(JNN[name], cache, os.path.join(tmp, "run"), epochs)[0])
        warm, timings = _jnn(JNN[name], cache, os.path.join(tmp, "run"), epochs)
        runs["warm"].append(warm)
        runs["torch"].append(_script(TORCH[name], epochs))
        runs["keras"].append(_script(KERAS[name], epochs))
        shutil.rmtree(cache, ignore_errors=True)
    med = lambda rows: tuple(statistics.median(column) for column in zip(*rows, strict=True))
    return {k: med(v) for k, v in runs.items()}, timings


def main(repeats, markdown, epochs=None):
    from _machine import (  # noqa: PLC0415 (benchmarks/ on the path)
        cpu_name,
        emit,
        load_average,
        matmul_rate,
    )

    lines = [
        f"Machine: {cpu_name()}, {os.cpu_count()} cores; {load_average()}; float32 matmul "
        f"2048² at {matmul_rate():.0f} GFLOP/s.",
        "",
        "| run | jnn cold | jnn warm | PyTorch eager | Keras 3 (JAX) | cold / PyTorch |"
        " cold / Keras | warm / PyTorch | steady epoch jnn / PyTorch / Keras |"
        " jnn warm timings (s) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in JNN:
        m, t = measure(name, repeats, epochs)
        cell = lambda k, m=m: f"{m[k][0]:.1f} s ({m[k][1]:.1f}%)"
        steady = " / ".join(f"{1000 * m[k][2]:.0f}" for k in ("warm", "torch", "keras"))
        parts = ", ".join(f"{k} {v:.2f}" for k, v in t.items())
        lines.append(
            f"| {name} | {cell('cold')} | {cell('warm')} | {cell('torch')} | {cell('keras')}"
            f" | {m['cold'][0] / m['torch'][0]:.2f}× | {m['cold'][0] / m['keras'][0]:.2f}×"
            f" | {m['warm'][0] / m['torch'][0]:.2f}× | {steady} ms | {parts} |"
        )
        print(lines[-1], flush=True)
    emit(lines, markdown)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--epochs", type=int, help="shorter runs (smoke test); default: each run's own"
    )
    parser.add_argument("--markdown")
    args = parser.parse_args()
    main(args.repeats, args.markdown, args.epochs)
