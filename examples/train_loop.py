"""Train an MLP on the bundled digits with a hand-written loop: init, make_step, evaluate.

    python examples/train_loop.py [--epochs 20]

Everything here is what ``jnn.train.fit`` does for you, spelled out: the state is a pytree,
the step is a pure jitted function that donates the old state, and the loop decides what to
log and when (here: once per epoch, so there is no host synchronisation per step).
"""

import argparse

import jax
import jax.numpy as jnp

from jnn import data, losses, nn, optim, train


def main(epochs: int = 20, batch_size: int = 32, seed: int = 0) -> float:
    ds = data.load_digits(seed=seed)
    model = nn.Serial(nn.Dense(256), nn.Relu(), nn.Dense(ds.num_classes))
    optimizer = optim.adam(1e-3)
    key = jax.random.key(seed)
    init_key, run_key = jax.random.split(key)

    state = train.init(model, optimizer, init_key, (batch_size, *ds.input_shape))
    step = train.make_step(model, losses.softmax_cross_entropy, optimizer, l2=1e-4)

    x, y = jnp.asarray(ds.x_train), jnp.asarray(ds.y_train)  # resident on the device
    for epoch in range(epochs):
        epoch_key = jax.random.fold_in(run_key, epoch)
        losses_this_epoch = []
        for xb, yb in data.iterate_batches(epoch_key, x, y, batch_size):
            state, metrics = step(state, (xb, yb), run_key)  # old state is donated
            losses_this_epoch.append(metrics["loss"])
        val = train.evaluate(
            model, state.params, state.model_state, ds.x_val, ds.y_val, losses.softmax_cross_entropy
        )
        ratio = max(float(v) for v in metrics["update_ratio"].values())
        print(
            f"epoch {epoch + 1:3d}  train loss {float(jnp.mean(jnp.stack(losses_this_epoch))):.4f}"
            f"  val acc {val['accuracy']:.3f}  max update/weight {ratio:.1e}"
        )

    test = train.evaluate(
        model, state.params, state.model_state, ds.x_test, ds.y_test, losses.softmax_cross_entropy
    )
    print(f"test accuracy {test['accuracy']:.4f}")
    return test["accuracy"]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    main(args.epochs, args.batch_size, args.seed)
