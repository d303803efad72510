"""Gradient checks on the 64-128-128-10 digits MLP: cost and which planted bugs are caught.

Three checkers, same run, same model, same 32 digits:
  * jnn.gradcheck.check_grads (float64, every leaf on its own, default options);
  * a full per-coordinate centred difference (jnn.gradcheck.numerical_grad, float64, vmapped
    in chunks) compared entry by entry with jax.grad (relative error, same floor and 1e-4
    threshold as jnn);
  * jax.test_util.check_grads(order=1, modes=["rev"]) at its defaults, in the model's float32
    and in float64.
Times are taken after compilation (the best of --repeats; the per-coordinate check once,
after a compiling run). Bugs are planted with jax.custom_vjp.

    python benchmarks/gradcheck.py [--repeats 3] [--markdown out.md]
"""

import argparse
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from _machine import cpu_name
from sklearn.datasets import load_digits

from jnn import gradcheck

NONE, BIAS, ELEMENT, TRANSPOSED, L2, BATCHNORM = range(6)
BUG_NAMES = {
    NONE: "correct model (must pass)",
    BIAS: "1% error in dense_1/b (float32 model)",
    ELEMENT: "one wrong element in dense_1/w",
    TRANSPOSED: "transposed dense_1/w gradient",
    L2: "L2 penalty gradient missing its factor 2",
    BATCHNORM: "BatchNorm backward ignores the batch statistics",
}
L2_STRENGTH = 1e-3


@jax.custom_vjp
def dense(x, w, b, bug):
    return x @ w + b[None, :]


def _dense_fwd(x, w, b, bug):
    return dense(x, w, b, bug), (x, w, bug)


def _dense_bwd(res, g):
    x, w, bug = res
    dw, db = x.T @ g, jnp.sum(g, axis=0)
    db = jnp.where(bug == BIAS, db * 1.01, db)
    dw = jnp.where(bug == ELEMENT, dw.at[5, 7].add(0.1 * jnp.max(jnp.abs(dw))), dw)
    if dw.shape[0] == dw.shape[1]:
        dw = jnp.where(bug == TRANSPOSED, dw.T, dw)
    return g @ w.T, dw, db, None


dense.defvjp(_dense_fwd, _dense_bwd)


def _bn(x):
    mean = jnp.mean(x, axis=0)
    inv = 1.0 / jnp.sqrt(jnp.mean(jnp.square(x - mean[None, :]), axis=0) + 1e-5)
    return (x - mean[None, :]) * inv[None, :], inv


@jax.custom_vjp
def batchnorm(x, bug):
    return _bn(x)[0]


def _bn_fwd(x, bug):
    xhat, inv = _bn(x)
    return xhat, (xhat, inv, bug)


def _bn_bwd(res, g):
    xhat, inv, bug = res
    n = g.shape[0]
    right = (
        inv[None, :] / n * (n * g - jnp.sum(g, 0)[None, :] - xhat * jnp.sum(g * xhat, 0)[None, :])
    )
    return jnp.where(bug == BATCHNORM, g * inv[None, :], right), None


batchnorm.defvjp(_bn_fwd, _bn_bwd)


@jax.custom_vjp
def half_sq_norm(w, bug):
    return 0.5 * jnp.sum(jnp.square(w))


half_sq_norm.defvjp(
    lambda w, bug: (half_sq_norm(w, bug), (w, bug)),
    lambda res, g: (g * jnp.where(res[1] == L2, 0.5 * res[0], res[0]), None),
)


def loss(params, x, y, bug):
    """64-128-128-10 ReLU MLP, softmax cross-entropy + L2; a BatchNorm (no params) after
    dense_0 when bug == BATCHNORM, so the same parameters serve every variant."""
    none = jnp.zeros_like(bug)
    h = dense(x, params["dense_0"]["w"], params["dense_0"]["b"], none)
    h = jnp.where(bug == BATCHNORM, batchnorm(h, bug), h)
    h = dense(jax.nn.relu(h), params["dense_1"]["w"], params["dense_1"]["b"], bug)
    h = dense(jax.nn.relu(h), params["dense_2"]["w"], params["dense_2"]["b"], none)
    logp = jax.nn.log_softmax(h)
    data = -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1))
    ws = [params[k]["w"] for k in ("dense_0", "dense_1", "dense_2")]
    return data + L2_STRENGTH * sum(half_sq_norm(w, bug) for w in ws)


def make_params(key):
    params = {}
    for i, (n_in, n_out) in enumerate([(64, 128), (128, 128), (128, 10)]):
        key, kw, kb = jax.random.split(key, 3)
        params[f"dense_{i}"] = {
            "w": jax.random.normal(kw, (n_in, n_out)) * np.float32(np.sqrt(2.0 / n_in)),
            "b": 0.1 * jax.random.normal(kb, (n_out,)),
        }
    return params


# ----------------------------------------------------------------------------- checkers


def jnn_check(params, x, y, bug):
    return gradcheck.check_grads(loss, params, x, y, jnp.int32(bug)).ok


def numeric_gradient(params, x, y, bug, h=1e-5):
    """The full per-coordinate centred difference (2 evaluations per parameter)."""
    return gradcheck.numerical_grad(loss, params, h, args=(x, y, jnp.int32(bug)))


def per_coordinate_check(params, x, y, bug, numeric, h=1e-5):
    """Every entry: centred difference vs jax.grad, relative error with jnn's floor."""
    with jax.enable_x64(True):
        p64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params)
        x64 = jnp.asarray(x, jnp.float64)
        f0, analytic = jax.jit(jax.value_and_grad(loss))(p64, x64, y, jnp.int32(bug))
        analytic = jax.tree.map(np.asarray, analytic)
    floor = 1e5 * np.finfo(np.float64).eps * max(abs(float(f0)), 1.0) / h
    rel = lambda a, b: np.max(np.asarray(gradcheck.rel_error(a, b, floor)))
    return max(jax.tree.leaves(jax.tree.map(rel, analytic, numeric))) <= 1e-4


def jax_check(params, x, y, bug, dtype):
    from jax.test_util import check_grads

    def run():
        p = jax.tree.map(lambda a: jnp.asarray(a, dtype), params)
        f = lambda p: loss(p, jnp.asarray(x, dtype), y, jnp.int32(bug))
        try:
            check_grads(f, (p,), order=1, modes=["rev"])
            return True
        except AssertionError:
            return False

    if dtype == jnp.float64:
        with jax.enable_x64(True):
            return run()
    return run()


def best_time(fn, repeats):
    fn()  # compile
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--examples", type=int, default=32)
    parser.add_argument("--markdown", default=None, help="also write the table to this file")
    args = parser.parse_args()

    data = load_digits()
    x = (data.data[: args.examples] / 16.0).astype(np.float32)
    y = data.target[: args.examples].astype(np.int32)
    params = make_params(jax.random.key(0))
    n_params = sum(a.size for a in jax.tree.leaves(params))

    say = lambda *a: print(*a, flush=True)
    t_jnn = best_time(lambda: jnn_check(params, x, y, NONE), args.repeats)
    say(f"jnn check_grads: {t_jnn:.3f} s")
    numeric_gradient(params, x, y, NONE)  # compile
    start = time.perf_counter()
    numeric = numeric_gradient(params, x, y, NONE)
    t_coord = time.perf_counter() - start
    say(f"per-coordinate: {t_coord:.2f} s")
    t_jax32 = best_time(lambda: jax_check(params, x, y, NONE, jnp.float32), args.repeats)
    t_jax64 = best_time(lambda: jax_check(params, x, y, NONE, jnp.float64), args.repeats)
    say(f"jax check_grads: {t_jax32:.3f} s (float32), {t_jax64:.3f} s (float64)")

    # The planted bugs live in backward passes, so the centred differences of every variant
    # but the BatchNorm one (which changes the forward pass too) equal those of the correct
    # model: compute them once per forward pass.
    numeric_bn = numeric_gradient(params, x, y, BATCHNORM)
    checkers = {
        "jnn check_grads": lambda bug: jnn_check(params, x, y, bug),
        "per-coordinate": lambda bug: per_coordinate_check(
            params, x, y, bug, numeric_bn if bug == BATCHNORM else numeric
        ),
        "jax check_grads f32": lambda bug: jax_check(params, x, y, bug, jnp.float32),
        "jax check_grads f64": lambda bug: jax_check(params, x, y, bug, jnp.float64),
    }
    verdicts = {}
    for bug in BUG_NAMES:
        for name, check in checkers.items():
            passed = check(bug)
            if bug == NONE:
                verdicts[bug, name] = "pass" if passed else "FALSE ALARM"
            else:
                verdicts[bug, name] = "missed" if passed else "caught"
        say(BUG_NAMES[bug], [verdicts[bug, n] for n in checkers])

    cpu = cpu_name()
    lines = [
        f"Model: 64-128-128-10 ReLU MLP, {n_params:,} parameters, {args.examples} digits, "
        "softmax cross-entropy + L2 1e-3 (BatchNorm after dense_0 in the BatchNorm row).",
        f"Machine: {os.cpu_count()} CPU cores ({cpu}), jax {jax.__version__} CPU, shared with "
        "other jobs (compare ratios, not absolute times).",
        "",
        "| checker | time after compilation | vs per-coordinate |",
        "|---|---:|---:|",
        f"| jnn check_grads (float64, 4 directions + 4 coordinates per leaf) | {t_jnn:.3f} s "
        f"| 1/{t_coord / t_jnn:.0f} |",
        f"| full per-coordinate centred difference (float64, vmapped) | {t_coord:.2f} s | 1 |",
        f"| jax.test_util.check_grads, float32 | {t_jax32:.3f} s | 1/{t_coord / t_jax32:.0f} |",
        f"| jax.test_util.check_grads, float64 | {t_jax64:.3f} s | 1/{t_coord / t_jax64:.0f} |",
        "",
        "| planted bug | " + " | ".join(checkers) + " |",
        "|---|" + "---|" * len(checkers),
    ]
    for bug, text in BUG_NAMES.items():
        lines.append(f"| {text} | " + " | ".join(verdicts[bug, n] for n in checkers) + " |")
    table = "\n".join(lines)
    print(table)
    if args.markdown:
        with open(args.markdown, "w") as fh:
            fh.write(table + "\n")


if __name__ == "__main__":
    main()
