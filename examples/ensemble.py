"""Ensembles with jnn: a seed ensemble and a learning-rate sweep, each trained as ONE vmapped
program, then evaluated member by member and as an ensemble.

    python examples/ensemble.py [--epochs 15]

The sweep spans three decades with one rate far too large on purpose: that member diverges,
is frozen at its last finite state, and is left out of the ensemble while the others train.
"""

import argparse

import jax

from jnn import data, ensemble, losses, nn, optim


def table(title, rows):
    print(f"\n{title}")
    print(f"{'member':>6}  {'setting':>22}  {'test acc':>8}  {'NLL':>7}  status")
    for row in rows:
        print(
            f"{row['member']:>6}  {row['setting']:>22}  {100 * row['accuracy']:7.2f}%  "
            f"{row['nll']:7.4f}  {row['status']}"
        )


def train_and_report(title, ds, model, optimizer, keys, hyperparams, settings, epochs):
    result = ensemble.fit(
        model,
        losses.softmax_cross_entropy,
        optimizer,
        (ds.x_train, ds.y_train),
        epochs=epochs,
        batch_size=64,
        keys=keys,
        val_data=(ds.x_val, ds.y_val),
        hyperparams=hyperparams,
        shuffle="per_member",
        progress=False,
    )
    report = ensemble.evaluate(model, result.state, ds.x_test, ds.y_test, members=result.alive)
    rows = [
        {
            "member": k,
            "setting": settings[k],
            **report["members"][k],
            "status": "ok" if d is None else f"diverged at step {d['step']}, excluded",
        }
        for k, d in enumerate(result.diverged)
    ]
    table(title, rows)
    print(
        f"ensemble test accuracy {100 * report['accuracy']:.2f}% (members: mean "
        f"{100 * report['member_mean_accuracy']:.2f}%, best "
        f"{100 * report['member_best_accuracy']:.2f}%); NLL {report['nll']:.4f}, "
        f"ECE {report['ece']:.4f}, Brier {report['brier']:.4f}"
    )
    return report


def main(epochs: int = 15):
    ds = data.load_digits()
    model = nn.Serial(nn.Dense(128), nn.Relu(), nn.Dropout(0.1), nn.Dense(ds.num_classes))

    seeds = jax.random.split(jax.random.key(0), 6)
    seed_report = train_and_report(
        "seed ensemble: 6 seeds of adam(3e-3)", ds, model, optim.adam(3e-3), seeds, None,
        [f"seed {k}" for k in range(6)], epochs,
    )  # fmt: skip

    rates = [1e-3, 1e-2, 1e-1, 1e3]  # three decades, and one far too large on purpose
    sweep_report = train_and_report(
        "learning-rate sweep: sgd, one member per rate", ds, model, optim.sgd,
        jax.random.split(jax.random.key(1), len(rates)), {"learning_rate": rates},
        [f"lr {r:g}" for r in rates], epochs,
    )  # fmt: skip
    return seed_report, sweep_report


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=15)
    main(parser.parse_args().epochs)
