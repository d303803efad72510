"""Gradient-check a real model: a digits MLP with BatchNorm and dropout, after a few steps.

The notes' recipe: check in float64 (automatic), on a few examples, with dropout's key fixed,
after some training ("characteristic mode"), every parameter leaf on its own.

    python examples/gradcheck.py [--steps 20] [--examples 16] [--hidden 128]
"""

import argparse

import jax
import jax.numpy as jnp
import numpy as np
from sklearn.datasets import load_digits

import jnn


def main(argv=None):
    parser = argparse.ArgumentParser(description="Gradient check of a digits MLP.")
    parser.add_argument("--steps", type=int, default=20, help="training steps before checking")
    parser.add_argument("--examples", type=int, default=16, help="examples in the checked batch")
    parser.add_argument("--hidden", type=int, default=128, help="units per hidden layer")
    args = parser.parse_args(argv)

    digits = load_digits()
    x = digits.data.astype(np.float32) / 16.0
    x = (x - x.mean(0)) / (x.std(0) + 0.1)
    y = digits.target.astype(np.int32)

    model = jnn.nn.Serial(
        jnn.nn.Dense(args.hidden),
        jnn.nn.BatchNorm(),
        jnn.nn.Relu(),
        jnn.nn.Dropout(0.2),
        jnn.nn.Dense(args.hidden),
        jnn.nn.Relu(),
        jnn.nn.Dense(10),
    )
    loss = jnn.losses.softmax_cross_entropy
    optimizer = jnn.optim.adam(1e-3)
    key = jax.random.key(0)

    # A few training steps first: the initial weights may not be representative.
    state = jnn.train.init(model, optimizer, key, (128, 64))
    step = jnn.train.make_step(model, loss, optimizer, monitor=False)
    for i in range(args.steps):
        batch = (x[i * 128 % 1536 :][:128], y[i * 128 % 1536 :][:128])
        state, metrics = step(state, batch, key)
    print(f"after {args.steps} steps: loss {float(metrics['loss']):.3f}")

    def objective(params, model_state, x, y, dropout_key):
        outputs, _ = model.apply(params, model_state, x, key=dropout_key, train=True)
        return jnp.mean(loss(outputs, y))

    n = args.examples
    report = jnn.gradcheck.check_grads(
        objective, state.params, state.model_state, x[:n], y[:n], jax.random.key(1)
    )
    print(report)
    return report


if __name__ == "__main__":
    main()
