"""Steady training epoch: jnn.train.fit against Keras 3 (JAX backend) and PyTorch eager (CPU).

Two networks, as ``jnn train`` builds them, written once per framework:

- MNIST-1D CNN (``jnn train --dataset mnist1d --model cnn``): 3 x [Conv(64, kernel 5, SAME),
  ReLU, MaxPool(2)], Flatten, Dropout(0.3), Dense(10); batch 64 (56 steps of the 3,600
  training examples), 400 validation examples.
- digits MLP (``jnn train``): 64-256-256-10, ReLU, Dropout(0.2) after each hidden layer;
  batch 128 (10 steps of 1,293 examples), 144 validation examples.

Every contender: Adam(3e-3), softmax cross-entropy, a fresh shuffle each epoch, the last
partial batch dropped, training accuracy tracked, and a validation pass (loss + accuracy)
after every epoch. jnn: ``jnn.train.fit`` (each epoch one compiled program), its history's
per-epoch seconds (host work included, compilation excluded). Keras 3: ``model.fit`` with
``validation_data`` on the JAX backend (``KERAS_BACKEND=jax``), a callback's epoch times.
PyTorch: a plain eager loop, ``Adam(fused=True)``, ``torch.no_grad`` validation. The rounds
are interleaved (each round runs ``--epochs`` epochs of every contender in a rotated order);
the first epoch of each block is dropped (jnn: compilation; Keras: tracing), the rest pooled;
medians.

    python benchmarks/epoch.py [--rounds 3] [--epochs 6] [--markdown FILE]

Keras and PyTorch are optional (``pip install '.[bench]'``): without one its rows are skipped.
"""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "jax")  # before Keras is imported anywhere

import argparse
import contextlib
import statistics
import time

import jax
import numpy as np
from _machine import cpu_name, emit, load_average, matmul_rate

LR = 3e-3
PAUSE = 0.5  # seconds between blocks: PyTorch's worker threads spin for a while after its block


def _load(name):
    from jnn import data

    if name == "cnn":
        return data.to_images(data.load_mnist1d()), 64
    return data.load_digits(), 128


NETS = {"cnn": "MNIST-1D CNN", "mlp": "digits MLP"}


# ----------------------------------------------------------------------------- contenders
# Each builder takes (net, ds, batch) and returns run(epochs) -> list of epoch seconds.


def jnn_fit(net, ds, batch):
    from jnn import init, losses, nn, optim, train

    if net == "cnn":
        block = lambda: [
            nn.Conv(64, (5,), w_init=init.kaiming_normal()),
            nn.Relu(),
            nn.MaxPool((2,)),
        ]
        model = nn.Serial(*block(), *block(), *block(), nn.Flatten(), nn.Dropout(0.3), nn.Dense(10))
    else:
        block = lambda: [nn.Dense(256, w_init=init.kaiming_normal()), nn.Relu(), nn.Dropout(0.2)]
        model = nn.Serial(*block(), *block(), nn.Dense(10))
    box = [None]

    def run(epochs):
        res = train.fit(
            model,
            losses.softmax_cross_entropy,
            optim.adam(LR),
            (ds.x_train, ds.y_train),
            epochs=epochs,
            batch_size=batch,
            key=jax.random.key(0),
            val_data=(ds.x_val, ds.y_val),
            state=box[0],
            progress=False,
        )
        box[0] = res.state  # the next block trains on
        return [r["seconds"] for r in res.history]

    return run


def keras_fit(net, ds, batch):
    import keras
    from keras import layers

    if keras.backend.backend() != "jax":
        raise ImportError(f"Keras runs on {keras.backend.backend()!r}; set KERAS_BACKEND=jax")
    keras.utils.set_random_seed(0)
    if net == "cnn":
        block = lambda: [
            layers.Conv1D(64, 5, padding="same", activation="relu"),
            layers.MaxPooling1D(2),
        ]
        body = [*block(), *block(), *block(), layers.Flatten(), layers.Dropout(0.3)]
    else:
        block = lambda: [layers.Dense(256, activation="relu"), layers.Dropout(0.2)]
        body = [*block(), *block()]
    model = keras.Sequential([keras.Input(ds.x_train.shape[1:]), *body, layers.Dense(10)])
    model.compile(
        optimizer=keras.optimizers.Adam(LR),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    n = len(ds.x_train) // batch * batch  # jnn drops the last partial batch: so does this

    class Clock(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t0 = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.times.append(time.perf_counter() - self.t0)

    def run(epochs):
        clock = Clock()
        clock.times = []
        model.fit(
            ds.x_train[:n],
            ds.y_train[:n],
            batch_size=batch,
            epochs=epochs,
            shuffle=True,
            validation_data=(ds.x_val, ds.y_val),
            validation_batch_size=len(ds.x_val),
            callbacks=[clock],
            verbose=0,
        )
        return clock.times

    return run


def torch_eager(net, ds, batch):
    import torch
    from torch import nn

    torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(0)
    if net == "cnn":
        block = lambda c: [nn.Conv1d(c, 64, 5, padding=2), nn.ReLU(), nn.MaxPool1d(2)]
        model = nn.Sequential(
            *block(1), *block(64), *block(64), nn.Flatten(), nn.Dropout(0.3), nn.Linear(64 * 5, 10)
        )
        as_input = lambda x: torch.from_numpy(np.ascontiguousarray(x.transpose(0, 2, 1)))
    else:
        block = lambda a, b: [nn.Linear(a, b), nn.ReLU(), nn.Dropout(0.2)]
        model = nn.Sequential(*block(64, 256), *block(256, 256), nn.Linear(256, 10))
        as_input = torch.from_numpy
    opt = torch.optim.Adam(model.parameters(), lr=LR, fused=True)
    x, y = as_input(ds.x_train), torch.from_numpy(ds.y_train).long()
    xv, yv = as_input(ds.x_val), torch.from_numpy(ds.y_val).long()
    steps = len(x) // batch

    def epoch():
        model.train()
        order = torch.randperm(len(x))
        correct = torch.zeros(())
        for i in range(steps):
            idx = order[i * batch : (i + 1) * batch]
            opt.zero_grad(set_to_none=True)
            logits = model(x[idx])
            loss = nn.functional.cross_entropy(logits, y[idx])
            loss.backward()
            opt.step()
            correct += (logits.argmax(1) == y[idx]).sum()
        model.eval()
        with torch.no_grad():
            logits = model(xv)
            val = (nn.functional.cross_entropy(logits, yv).item(), (logits.argmax(1) == yv).sum())
        return correct.item(), val

    def run(epochs):
        times = []
        for _ in range(epochs):
            t0 = time.perf_counter()
            epoch()
            times.append(time.perf_counter() - t0)
        return times

    return run


CONTENDERS = {
    "jnn.train.fit (one compiled program per epoch)": jnn_fit,
    "Keras 3, JAX backend (model.fit)": keras_fit,
    "PyTorch eager, Adam(fused=True)": torch_eager,
}
JNN = "jnn.train.fit (one compiled program per epoch)"


def measure(net, rounds, epochs):
    """``{contender: [steady epoch seconds]}`` over interleaved rounds."""
    ds, batch = _load(net)
    runs, skipped = {}, []
    for name, build in CONTENDERS.items():
        try:
            runs[name] = build(net, ds, batch)
        except ImportError as e:
            skipped.append(f"{name}: skipped ({e})")
    for run in runs.values():
        run(2)  # warm-up: compile / trace
    times = {name: [] for name in runs}
    names = list(runs)
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            time.sleep(PAUSE)
            times[name] += runs[name](epochs)[1:]
    return times, len(ds.x_train) // batch, batch, skipped


def table(net, times, steps, batch, skipped):
    med = {name: statistics.median(t) for name, t in times.items()}
    lines = [
        f"**{NETS[net]}**, batch {batch}, {steps} steps + validation per epoch",
        "",
        "| contender | ms per epoch (median) | min..max | epochs timed | this / jnn |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, t in times.items():
        ratio = med[name] / med[JNN] if JNN in med else float("nan")
        lines.append(
            f"| {name} | {1e3 * med[name]:.1f} | {1e3 * min(t):.1f}..{1e3 * max(t):.1f} | "
            f"{len(t)} | {ratio:.2f}x |"
        )
    return lines + [f"- {s}" for s in skipped] + [""]


def machine() -> str:
    versions = [f"jax {jax.__version__}"]
    for module in ("keras", "torch"):
        with contextlib.suppress(ImportError):
            versions.append(f"{module} {__import__(module).__version__}")
    return (
        f"{cpu_name()}, {os.cpu_count()} cores, {', '.join(versions)}, backend "
        f"{jax.default_backend()}; {load_average()}"
    )


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nets", default="cnn,mlp", help="comma-separated: cnn, mlp")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=6, help="epochs per block (first dropped)")
    ap.add_argument("--markdown", default=None, help="also append the tables to this file")
    args = ap.parse_args(argv)
    lines = [
        f"Machine: {machine()}; matmul {matmul_rate():.0f} GFLOP/s (2048² float32 in JAX).",
        "",
        f"Adam({LR}), median of {args.rounds} interleaved rounds x {args.epochs - 1} steady "
        "epochs per contender.",
        "",
    ]
    for net in args.nets.split(","):
        lines += table(net, *measure(net, args.rounds, args.epochs))
    emit(lines, args.markdown)


if __name__ == "__main__":
    main()
