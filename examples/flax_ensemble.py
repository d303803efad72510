"""A Flax linen CNN with BatchNorm and dropout, trained by jnn as one ensemble: a
learning-rate sweep with two seeds per rate, one vmapped program, each member its own
initialisation, minibatch order, dropout keys and BatchNorm statistics.

    python examples/flax_ensemble.py [--epochs 10]

The module is plain Flax; passing it to ``jnn.ensemble.fit`` wraps it with
``jnn.interop.from_linen`` (``params`` is linen's ``"params"`` collection, ``model_state``
its ``"batch_stats"``).
"""

import argparse

import flax.linen as linen
import jax

from jnn import data, ensemble, losses, optim


class CNN(linen.Module):
    """Conv(3x3, 16) -> BatchNorm -> relu -> Dropout -> Dense(10) on 8x8 digit images."""

    num_classes: int = 10
    rate: float = 0.1

    @linen.compact
    def __call__(self, x, train=False):
        x = x.reshape(x.shape[0], 8, 8, 1)
        x = linen.Conv(16, (3, 3), use_bias=False)(x)
        x = linen.BatchNorm(use_running_average=not train, momentum=0.9)(x)
        x = linen.relu(x)
        x = linen.Dropout(self.rate, deterministic=not train)(x)
        return linen.Dense(self.num_classes)(x.reshape(x.shape[0], -1))


def main(epochs: int = 10, rates=(1e-3, 3e-3, 1e-2), seeds_per_rate: int = 2):
    ds = data.load_digits()
    model = CNN(ds.num_classes)
    lrs = [r for r in rates for _ in range(seeds_per_rate)]
    result = ensemble.fit(
        model,
        losses.softmax_cross_entropy,
        optim.adam,  # a factory: member k gets optim.adam(learning_rate=lrs[k])
        (ds.x_train, ds.y_train),
        epochs=epochs,
        batch_size=64,
        keys=jax.random.split(jax.random.key(0), len(lrs)),
        val_data=(ds.x_val, ds.y_val),
        hyperparams={"learning_rate": lrs},
        shuffle="per_member",
        progress=False,
    )
    report = ensemble.evaluate(model, result.state, ds.x_test, ds.y_test, members=result.alive)
    print(f"{'member':>6}  {'lr':>7}  {'test acc':>8}  {'NLL':>7}")
    for k, (lr, m) in enumerate(zip(lrs, report["members"], strict=True)):
        print(f"{k:>6}  {lr:>7g}  {100 * m['accuracy']:7.2f}%  {m['nll']:7.4f}")
    print(
        f"linen CNN ensemble of {len(lrs)}: test accuracy {100 * report['accuracy']:.2f}% "
        f"(members: mean {100 * report['member_mean_accuracy']:.2f}%, best "
        f"{100 * report['member_best_accuracy']:.2f}%); NLL {report['nll']:.4f}, "
        f"ECE {report['ece']:.4f}"
    )
    return result, report


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    main(parser.parse_args().epochs)
