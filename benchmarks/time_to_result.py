"""Time to result: the whole-process wall time of ``jnn train`` (digits MLP; MNIST-1D CNN),
cold (empty jnn cache) and warm (second run), against a PyTorch eager script of the same
network, optimizer, schedule and data split, all in the same run.

    python benchmarks/time_to_result.py [--repeats 3] [--markdown FILE]

Each measurement is a fresh ``python`` process (imports included), timed from spawn to exit;
cold runs get an empty ``JNN_CACHE_DIR``, warm runs reuse the one a previous run filled. The
PyTorch scripts (below, eager mode, fused Adam) regenerate their data like a user's script
would (no download). Reported: medians over ``--repeats``, the accuracy each reached, and
jnn's own ``timings`` (imports, data, compile, train, evaluate, write) of a warm run.
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
import math, sys, time, numpy as np, torch
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
    for epoch in range(epochs):
        net.train()
        perm = torch.randperm(len(x))
        for i in range(len(x) // batch):
            idx = perm[i * batch:(i + 1) * batch]
            opt.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(net(x[idx]), y[idx]).backward()
            opt.step(); sched.step()
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
train(net, x, y, xt, yt, epochs=30, batch=128, lr=3e-3)
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
train(net, x, y, xt, yt, epochs=20, batch=64, lr=3e-3)
"""
)

# The PyTorch script replicates the 3 x 64-channel CNN of 20 epochs (the default before
# issue 21), so the jnn command pins that network: the comparison stays like for like.
_OLD_CNN = "--dataset mnist1d --model cnn --widths 64,64,64 --norm none --dropout 0.3 --epochs 20"
JNN = {"digits MLP": [], "MNIST-1D CNN": _OLD_CNN.split()}
TORCH = {"digits MLP": TORCH_DIGITS, "MNIST-1D CNN": TORCH_MNIST1D_CNN}


def _timed(cmd, env):
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[:4]} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    acc = [line for line in proc.stdout.splitlines() if "test accuracy" in line][-1]
    return wall, float(acc.split("test accuracy ")[1].split("%")[0])


def _jnn(args, cache, out):
    env = {**os.environ, "JNN_CACHE_DIR": cache}
    cmd = [
        sys.executable,
        "-m",
        "jnn.cli",
        "train",
        *args,
        "--no-progress",
        "--overwrite",
        "--out",
        out,
    ]
    wall, acc = _timed(cmd, env)
    with open(os.path.join(out, "summary.json")) as f:
        timings = json.load(f)["timings"]
    return wall, acc, timings


def measure(name, repeats):
    tmp = tempfile.mkdtemp()
    cold, warm, torch_runs, timings = [], [], [], None
    for r in range(repeats):  # interleaved, so load from elsewhere hits all three alike
        cache = os.path.join(tmp, f"cache{r}")
        cold.append(_jnn(JNN[name], cache, os.path.join(tmp, "run"))[:2])
        *w, timings = _jnn(JNN[name], cache, os.path.join(tmp, "run"))
        warm.append(tuple(w))
        torch_runs.append(_timed([sys.executable, "-c", TORCH[name]], dict(os.environ)))
        shutil.rmtree(cache, ignore_errors=True)
    med = lambda runs: (
        statistics.median(w for w, _ in runs),
        statistics.median(a for _, a in runs),
    )
    return med(cold), med(warm), med(torch_runs), timings


def main(repeats, markdown):
    from _machine import cpu_name, emit, load_average  # noqa: PLC0415 (benchmarks/ on the path)

    lines = [
        f"Machine: {cpu_name()}, {os.cpu_count()} cores; {load_average()}.",
        "",
        "| run | jnn cold | jnn warm | PyTorch eager | warm / PyTorch | cold / PyTorch |"
        " jnn warm timings (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in JNN:
        (cw, ca), (ww, wa), (tw, ta), t = measure(name, repeats)
        parts = ", ".join(f"{k} {v:.2f}" for k, v in t.items())
        lines.append(
            f"| {name} | {cw:.1f} s ({ca:.1f}%) | {ww:.1f} s ({wa:.1f}%) | {tw:.1f} s ({ta:.1f}%)"
            f" | {ww / tw:.2f}× | {cw / tw:.2f}× | {parts} |"
        )
        print(lines[-1], flush=True)
    emit(lines, markdown)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--markdown")
    args = parser.parse_args()
    main(args.repeats, args.markdown)
