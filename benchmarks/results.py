"""Regenerates the results table of BENCHMARKS.md: `jnn train` test accuracy on the built-in
data sets, mean and spread over seeds, with wall time, against the published MNIST-1D table.

    python benchmarks/results.py                 # 3 seeds, prints a Markdown table
    python benchmarks/results.py --seeds 0 --out /tmp/results.md

Every run is the real command (`python -m jnn.cli train ...`, a fresh process), so the wall
time includes start-up, data generation and compilation; "train s" is the time inside
`jnn.train.fit` (first epoch's compilation included) as recorded in the run's summary.json;
"s/epoch" is the median time of the epochs after the first (no compilation).
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _machine import cpu_name, load_average

# (name, jnn train options, goal, published accuracy)
RUNS = [
    ("digits MLP (default `jnn train`)", [], 0.97, None),
    (
        "MNIST-1D MLP",
        ["--dataset", "mnist1d", "--widths", "512,512", "--dropout", "0.5", "--epochs", "60"],
        0.68,
        0.68,
    ),
    ("MNIST-1D CNN", ["--dataset", "mnist1d", "--model", "cnn"], 0.94, 0.94),
]
PUBLISHED = "logistic regression 32%, MLP 68%, CNN 94%, GRU 91%, human expert 96%"


def machine() -> str:
    cpu = cpu_name()
    import jax

    return (
        f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}, jax {jax.__version__} "
        f"({jax.default_backend()}); {load_average()}"
    )


def run_one(options, seed, folder) -> dict:
    out = Path(folder) / f"seed{seed}"
    cmd = [
        sys.executable,
        "-m",
        "jnn.cli",
        "train",
        *options,
        "--seed",
        str(seed),
        "--no-progress",
        "--no-plots",
        "--overwrite",
        "--out",
        str(out),
    ]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    summary = json.loads((out / "summary.json").read_text())
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    later = [r["seconds"] for r in records[1:]]  # the first epoch includes compilation
    return {
        "acc": summary["test_accuracy"],
        "train_s": summary["train_seconds"],
        "epoch_s": statistics.median(later) if later else float("nan"),
        "epochs": len(records),
        "wall_s": wall,
    }


def fmt_spread(values, scale=100.0, digits=1) -> str:
    mean = statistics.fmean(values) * scale
    if len(values) < 2:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {statistics.stdev(values) * scale:.{digits}f}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", help="also write the Markdown to this file")
    args = parser.parse_args(argv)

    header = machine()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, options, goal, published) in enumerate(RUNS):
            results = [run_one(options, s, Path(tmp) / str(i)) for s in args.seeds]
            accs = [r["acc"] for r in results]
            print(f"{name}: {[round(100 * a, 2) for a in accs]}", file=sys.stderr, flush=True)
            rows.append(
                "| {} | `jnn train {}` | {} | {:.1f}–{:.1f} | {} | {} | {} | {:.2f} | {} |".format(
                    name,
                    " ".join(options),
                    fmt_spread(accs),
                    100 * min(accs),
                    100 * max(accs),
                    "—" if published is None else f"{100 * published:.0f}",
                    f">= {100 * goal:.0f}: " + ("met" if min(accs) >= goal else "NOT met"),
                    fmt_spread([r["train_s"] for r in results], 1.0),
                    statistics.median(r["epoch_s"] for r in results),
                    fmt_spread([r["wall_s"] for r in results], 1.0),
                )
            )
    seeds = ", ".join(map(str, args.seeds))
    lines = [
        f"Test accuracy (%) over seeds {seeds} (mean ± sample std, min–max); times in seconds "
        "(mean ± std). MNIST-1D uses the original 4,000/1,000 split (validation carved from "
        f"the 4,000); published MNIST-1D test accuracy: {PUBLISHED}.",
        "",
        "| run | command | test acc % | min–max | published | goal | train s | s/epoch | wall s |",
        "|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        f"Machine: {header}.",
        "Command: `python benchmarks/results.py` (seeds " + seeds + ").",
    ]
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
