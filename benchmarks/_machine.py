"""What every benchmark prints about the machine it ran on, and how it writes its table."""

from __future__ import annotations

import os
import platform


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def load_average() -> str:
    """``"load average at start 1.2"``: the 1-minute load when the benchmark began."""
    return f"load average at start {os.getloadavg()[0]:.1f}"


def emit(lines, markdown=None) -> None:
    """Prints the table and, with ``markdown``, appends it to that file."""
    text = "\n".join(lines)
    print(text)
    if markdown:
        with open(markdown, "a") as f:
            f.write(text + "\n")


def matmul_rate(n: int = 2048) -> float:
    """GFLOP/s of one jitted ``n x n`` float32 matmul in JAX (median of 5 after a warm-up)."""
    import statistics
    import time

    import jax

    a = jax.random.normal(jax.random.key(0), (n, n))
    f = jax.jit(lambda a: a @ a)
    f(a).block_until_ready()
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        f(a).block_until_ready()
        times.append(time.perf_counter() - t0)
    return 2 * n**3 / statistics.median(times) / 1e9
