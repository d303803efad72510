"""jnn optimizers inside ordinary Optax pipelines: change one import, get the same numbers.

Shows ``jnn.optim.adam`` behind ``optax.clip_by_global_norm`` in ``optax.chain``,
``jnn.optim.sgd`` under ``optax.MultiSteps`` (gradient accumulation), a
``optax.multi_transform`` that gives weights Adam and biases SGD by tree path,
and ``flax.nnx.Optimizer``. Each is checked against the same pipeline built
from ``optax``'s own optimizers. Runs in a few seconds on a CPU:

    python examples/optax_pipeline.py
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import jnn.optim
import jnn.schedules

# A tiny regression problem and a two-layer MLP as a plain dict of params.
X = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (64, 2)), jnp.float32)
Y = jnp.sin(3 * X[:, :1]) * jnp.cos(2 * X[:, 1:])


def init_params():
    rng = np.random.default_rng(1)
    return {
        "dense_0": {"w": jnp.asarray(rng.normal(0, 0.7, (2, 16)), jnp.float32), "b": jnp.zeros(16)},
        "dense_1": {"w": jnp.asarray(rng.normal(0, 0.25, (16, 1)), jnp.float32), "b": jnp.zeros(1)},
    }


def loss(params):
    h = jnp.tanh(X @ params["dense_0"]["w"] + params["dense_0"]["b"][None, :])
    out = h @ params["dense_1"]["w"] + params["dense_1"]["b"][None, :]
    return jnp.mean((out - Y) ** 2)


def train(tx, steps=100):
    """``steps`` full-batch updates as one jitted ``lax.scan``; returns (params, final loss)."""

    def step(carry, _):
        params, state = carry
        grads = jax.grad(loss)(params)
        updates, state = tx.update(grads, state, params)
        return (optax.apply_updates(params, updates), state), None

    @jax.jit
    def run(params):
        (params, _), _ = jax.lax.scan(step, (params, tx.init(params)), None, steps)
        return params, loss(params)

    return run(init_params())


def pipelines(opt):
    """The same four pipelines, with optimizers taken from ``opt`` (jnn.optim or optax)."""
    lr = jnn.schedules.warmup_schedule(jnn.schedules.cosine_decay_schedule(3e-2, 90), 10)
    labels = jax.tree.map(lambda _: "sgd", init_params())
    labels["dense_0"]["w"] = labels["dense_1"]["w"] = "adam"  # weights: Adam; biases: SGD
    return {
        "chain(clip_by_global_norm, adam)": optax.chain(
            optax.clip_by_global_norm(1.0), opt.adam(lr)
        ),
        "MultiSteps(sgd + momentum, 4)": optax.MultiSteps(opt.sgd(0.2, momentum=0.9), 4),
        "multi_transform(adam | sgd)": optax.multi_transform(
            {"adam": opt.adamw(1e-2, weight_decay=1e-3), "sgd": opt.sgd(0.1)}, labels
        ),
    }


def train_nnx(tx, steps=20):
    """The same regression with a ``flax.nnx`` model and ``nnx.Optimizer``."""
    model = nnx.Sequential(
        nnx.Linear(2, 16, rngs=nnx.Rngs(0)), nnx.tanh, nnx.Linear(16, 1, rngs=nnx.Rngs(1))
    )
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer):
        value, grads = nnx.value_and_grad(lambda m: jnp.mean((m(X) - Y) ** 2))(model)
        optimizer.update(model, grads)
        return value

    for _ in range(steps):
        value = step(model, optimizer)
    return nnx.state(model, nnx.Param), value


def main():
    results = {}
    ours, ref = pipelines(jnn.optim), pipelines(optax)
    # Optax's MultiSteps mixes int32 and float32 internally; run with standard promotion
    # so the example also works where a test suite turns on strict promotion.
    with jax.numpy_dtype_promotion("standard"):
        for name in ours:
            (p, l0), (q, l1) = train(ours[name]), train(ref[name])
            gap = max(
                float(jnp.max(jnp.abs(a - b)))
                for a, b in zip(jax.tree.leaves(p), jax.tree.leaves(q), strict=True)
            )
            results[name] = (float(l0), float(l1), gap)
        (p, l0), (q, l1) = train_nnx(jnn.optim.adam(1e-2)), train_nnx(optax.adam(1e-2))
        gap = max(
            float(jnp.max(jnp.abs(a - b)))
            for a, b in zip(jax.tree.leaves(p), jax.tree.leaves(q), strict=True)
        )
        results["nnx.Optimizer(model, adam)"] = (float(l0), float(l1), gap)

    print(f"{'pipeline':36s} {'jnn loss':>10s} {'optax loss':>10s} {'max |dparam|':>13s}")
    for name, (l0, l1, gap) in results.items():
        print(f"{name:36s} {l0:10.5f} {l1:10.5f} {gap:13.2e}")
    return results


if __name__ == "__main__":
    main()
