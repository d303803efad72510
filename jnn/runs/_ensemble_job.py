"""The ensemble part of ``jnn train`` (``--ensemble K`` and/or comma-list sweeps): K members
trained by ``jnn.ensemble.fit``, evaluated alone and together, tabulated."""

from __future__ import annotations

from typing import NamedTuple

from jnn.runs import _builders, _events, _overlap
from jnn.runs._config import SWEEPABLE, RunConfig
from jnn.runs._console import callbacks, format_epoch
from jnn.runs._setup import ACTIVATION_SAMPLE, loop_options, on_host
from jnn.runs._summary import run_summary

__all__ = ["finish", "fit", "member_table"]

# RunConfig option -> hyperparameter name inside the ensemble step.
_OPTIMIZER_HP = {"lr": "lr", "momentum": "momentum", "weight_decay": "weight_decay"}


class OptimizerFactory(NamedTuple):
    """``factory(lr=..., momentum=..., weight_decay=...)`` -> the run's optimizer for one
    member (hashable, so the compiled epoch is reused)."""

    config: RunConfig
    steps_per_epoch: int

    def __call__(self, **hp):
        return _builders.build_optimizer(self.config, self.steps_per_epoch, hp)[0]


def member_hyperparams(config: RunConfig) -> dict:
    """``{name: K values}``: every member's values of the sweepable options that apply."""
    members = config.members()
    return {
        name: [m[name] for m in members]
        for name in SWEEPABLE
        if getattr(config, name) is not None
        and name in members[0]
        and not (name in _ZERO_IS_OFF and not any(m[name] for m in members))
    }


# Options whose all-zero values add nothing to the step (no penalty term, no noise layer).
_ZERO_IS_OFF = ("l1", "input_noise")


def _keys(config: RunConfig):
    import jax
    import jax.numpy as jnp

    return jnp.stack([jax.random.key(config.seed + m["seed"]) for m in config.members()])


def _epoch_line(record, epochs):
    line = format_epoch(record, epochs)
    rows = {r["member"]: r for r in record.get("members", [])}
    best, worst = record.get("best_member"), record.get("worst_member")
    if best is not None:
        metric = "val_acc" if rows[best]["val_acc"] is not None else "train_acc"
        pct = lambda k: f"{100 * rows[k][metric]:.1f}%"
        line += f"  best m{best} {pct(best)}  worst m{worst} {pct(worst)}"
    line += f"  alive {record.get('alive')}/{len(rows)}"
    return line


def fit(config: RunConfig, setup, folder, resume: bool, echo):
    """Trains the members (``jnn.ensemble.fit``) with checkpoints in the run folder.

    Returns:
      ``(setup with the ensemble's model, EnsembleFitResult)``.
    """
    import jax.numpy as jnp

    import jnn.ensemble

    hp = member_hyperparams(config)

    dropout = max(config.dropout) if "dropout" in config.sweep else None
    noise = max(config.input_noise) if "input_noise" in config.sweep else None
    model = _builders.build_model(
        config,
        setup.ds.num_classes,
        setup.ds.input_shape,
        dropout=dropout,
        tree=setup.tree,
        input_noise=noise,
    )
    on_start, on_epoch = callbacks(config, folder, echo, setup.mesh)
    schedules = [_builders.build_schedule(config, setup.steps_per_epoch, lr) for lr in hp["lr"]]
    result = jnn.ensemble.fit(
        model,
        setup.loss,
        OptimizerFactory(config, setup.steps_per_epoch),
        (setup.ds.x_train, setup.ds.y_train),
        epochs=config.epochs,
        batch_size=config.batch_size,
        keys=_keys(config),
        val_data=(setup.ds.x_val, setup.ds.y_val),
        hyperparams=hp,
        dtype=jnp.dtype(config.dtype),
        shuffle=config.shuffle,
        bootstrap=config.bootstrap,
        learning_rate=schedules,
        ema=config.ema,
        snapshots=config.snapshots,
        step_options={"max_norm": config.max_norm} if config.max_norm else None,
        on_epoch=lambda r: on_epoch(r, _epoch_line(r, config.epochs)),
        tensorboard_dir=_events.tensorboard_dir(config, folder),
        **loop_options(config, setup, folder, resume, on_start),
    )

    states = {k: on_host(getattr(result, k)) for k in ("state", "snapshot_state", "ema_state")}
    return setup._replace(model=model), result._replace(**states)


def member_table(config: RunConfig, evaluation: dict, diverged: list) -> list[dict]:
    """One row per member: seed, swept hyperparameters, test accuracy and NLL, diverged."""
    rows = []
    for k, (member, metrics) in enumerate(
        zip(config.members(), evaluation["members"], strict=True)
    ):
        d = diverged[k]
        rows.append(
            {
                "member": k,
                "seed": config.seed + member["seed"],
                **{name: member[name] for name in config.sweep},
                "test_accuracy": metrics["accuracy"],
                "test_nll": metrics["nll"],
                "diverged": None if d is None else f"step {d['step']}",
            }
        )
    return rows


def near_chance(accuracy: float, num_classes: int) -> bool:
    """A member no better than guessing: test accuracy below chance + 10% of the way from
    chance to perfect, ``1/C + 0.1 (1 - 1/C)`` (19% for 10 classes)."""
    chance = 1.0 / num_classes
    return accuracy < chance + 0.1 * (1.0 - chance)


def _member_name(config, row) -> str:
    return f"member {row['member']}" + "".join(f" ({n} {row[n]:g})" for n in config.sweep)


def _left_out(rows, healthy) -> list[str]:
    """The line that says which members the headline's mean and best leave out."""
    if not healthy or len(healthy) == len(rows):
        return []
    kept = {r["member"] for r in healthy}
    out = [str(r["member"]) for r in rows if r["member"] not in kept]
    return [
        f"members' mean and best below are of the {len(healthy)} healthy members; left out "
        f"(diverged or near chance): member{'s' if len(out) > 1 else ''} {', '.join(out)}"
    ]


def member_verdicts(config, rows, num_classes: int):
    """``(healthy rows, diagnostics naming the members that are stuck near chance)``."""
    alive = [r for r in rows if not r["diverged"]]
    stuck = [r for r in alive if near_chance(r["test_accuracy"], num_classes)]
    healthy = [r for r in alive if r not in stuck]
    lines = []
    if stuck:
        lines.append(
            f"{len(stuck)} of {len(rows)} members are stuck near chance "
            f"({100 / num_classes:.0f}% for {num_classes} classes): "
            + ", ".join(
                f"{_member_name(config, r)} at {100 * r['test_accuracy']:.1f}%" for r in stuck
            )
            + "; the members' mean and best below leave them out"
        )
    return healthy, lines


def _cell(name: str, value) -> str:
    if value is None:
        return "-"
    if name == "test_accuracy":
        return f"{100 * value:.2f}%"
    if name == "test_nll":
        return f"{value:.4f}"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _markdown(rows: list[dict]) -> str:
    """The member table as Markdown (also printed on the console)."""
    names = list(rows[0])
    lines = ["| " + " | ".join(names) + " |", "|" + "---|" * len(names)]
    lines += ["| " + " | ".join(_cell(n, row[n]) for n in names) + " |" for row in rows]
    return "\n".join(lines)


def _evaluations(model, result, ds):
    import jnn.ensemble

    alive = result.alive
    main = jnn.ensemble.evaluate(model, result.state, ds.x_test, ds.y_test, members=alive)
    extra = {}
    if result.snapshot_state is not None:
        extra["snapshots"] = jnn.ensemble.evaluate(
            model, result.snapshot_state, ds.x_test, ds.y_test
        )
    if result.ema_state is not None:
        extra["ema"] = jnn.ensemble.evaluate(
            model, result.ema_state, ds.x_test, ds.y_test, members=alive
        )
    return main, extra


def _lines(config, main, extra, rows):
    lines = ["members:", *("  " + line for line in _markdown(rows).splitlines())]
    dead = [r for r in rows if r["diverged"]]
    if dead:
        lines.append(
            f"{len(dead)} member(s) diverged and are excluded from the ensemble: "
            + ", ".join(
                f"member {r['member']} ({r['diverged']}"
                + "".join(f", {n} {r[n]:g}" for n in config.sweep)
                + ")"
                for r in dead
            )
        )
    alive = [r for r in rows if not r["diverged"]]
    best = max(alive, key=lambda r: r["test_accuracy"]) if alive else rows[0]
    lines.append(
        f"ensemble NLL {main['nll']:.4f}, ECE {main['ece']:.4f}, Brier {main['brier']:.4f}, "
        f"disagreement {main['disagreement']:.3f}; most accurate member (m{best['member']}) "
        f"NLL {best['test_nll']:.4f}"
    )

    for name, ev in extra.items():
        lines.append(
            f"{name} ensemble test accuracy {100 * ev['accuracy']:.2f}% "
            f"(NLL {ev['nll']:.4f}, ECE {ev['ece']:.4f})"
        )
    return lines


def finish(config, setup, folder, result, clock, figures=None):
    """Evaluates members and ensemble, writes the plots (the history's in ``figures`` when
    given); returns ``(summary, plots, tables)``."""
    import jnn.ensemble
    import jnn.monitor

    model, ds = setup.model, setup.ds
    drawing = _overlap.HistoryPlots(config, folder, result.history, figures=figures)
    main, extra = _evaluations(model, result, ds)
    rows = member_table(config, main, result.diverged)
    first = int(next(k for k, a in enumerate(result.alive) if a)) if result.alive.any() else 0
    state = jnn.ensemble.member(result.state, first)
    stats = jnn.monitor.activation_stats(
        model, state.params, state.model_state, ds.x_val[:ACTIVATION_SAMPLE]
    )
    clock.lap("evaluate")
    history = result.history
    healthy, verdicts = member_verdicts(config, rows, ds.num_classes)
    pool = healthy or [r for r in rows if not r["diverged"]] or rows
    accuracies = [r["test_accuracy"] for r in pool]
    base = run_summary(setup, result, stats, main["accuracy"], main["nll"])
    base["diagnostics"] = verdicts + base["diagnostics"]
    summary = {
        **base,
        "ensemble": {k: v for k, v in main.items() if k != "members"},
        "members": rows,
        **{
            f"{name}_ensemble": {k: v for k, v in ev.items() if k != "members"}
            for name, ev in extra.items()
        },
        "console_tail": _lines(config, main, extra, rows) + _left_out(rows, healthy),
        "final_line": (
            f"ensemble test accuracy {100 * main['accuracy']:.2f}% (members: mean "
            f"{100 * sum(accuracies) / len(accuracies):.2f}%, best "
            f"{100 * max(accuracies):.2f}%)"
        ),
    }
    plots = {}
    if config.plots:
        probs = jnn.ensemble.predict(model, result.state, ds.x_test, members=result.alive)
        plots = folder.write_plots(
            history,
            stats,
            state.params,
            ds.image_shape,
            reliability=(probs, ds.y_test),
            drawn=drawing.result,
        )
    table = (
        "## Members\n\n"
        + _markdown(rows)
        + "\n\n"
        + "\n".join(f"- {line}" for line in summary["console_tail"][1 + len(rows) + 2 :])
        + "\n\n"
        + summary["final_line"]
    )
    return summary, plots, [table]
