"""``jnn train``: options -> ``RunConfig`` -> ``jnn.runs.train_run``."""

from __future__ import annotations

import shlex

__all__ = ["cmd_train", "explicit_options", "interrupted_message"]

_ACTIONS = ("command", "func", "resume", "overwrite", "profile", "check_examples")


def explicit_options(args) -> dict:
    """The ``RunConfig`` fields the user typed (every option defaults to "not given")."""
    return {k: v for k, v in vars(args).items() if k not in _ACTIONS}


def _config(args):
    from jnn import runs

    explicit = explicit_options(args)
    if not args.resume:
        return runs.RunConfig.from_options(**explicit)
    if "out" not in explicit:
        raise ValueError("--resume needs --out DIR (the folder of the run to continue)")
    return runs.resume_config(explicit.pop("out"), explicit)


def resume_command(out) -> str:
    return f"jnn train --out {shlex.quote(str(out))} --resume"


def interrupted_message(err, args) -> str:
    """What the console says after Ctrl-C / SIGTERM: what was saved, how to resume."""
    epoch = getattr(err, "epoch", None)
    saved = getattr(err, "checkpoint_dir", None)
    name = getattr(err, "signal_name", "SIGINT")
    if epoch is None:
        return "interrupted"
    step = getattr(err, "step", None)
    if saved is not None and step is not None:
        out = getattr(args, "out", None) or str(saved).rsplit("/checkpoint", 1)[0]
        return (
            f"interrupted by {name} inside epoch {epoch + 1}: saved step {step} to {saved}\n"
            f"resume with: {resume_command(out)}"
        )
    if saved is None or epoch == 0:
        return f"interrupted by {name} after epoch {epoch}; nothing to save yet"
    out = getattr(args, "out", None) or str(saved).rsplit("/checkpoint", 1)[0]
    return (
        f"interrupted by {name}: saved epoch {epoch} to {saved}\nresume with: {resume_command(out)}"
    )


def _print_profile(summary) -> None:
    timings = summary.get("timings", {})
    total = sum(timings.values())
    print("where the wall time went:")
    for phase, seconds in timings.items():
        print(f"  {phase:<9} {seconds:7.2f} s  {100 * seconds / max(total, 1e-9):5.1f}%")
    print(f"  {'total':<9} {total:7.2f} s")


def cmd_train(args) -> int:
    """Validates everything, trains, and writes the run folder (see ``jnn.runs.train_run``)."""
    from jnn import runs
    from jnn.cli import UsageError

    try:
        config = _config(args)
        outcome = runs.train_run(config, resume=args.resume, overwrite=args.overwrite)
    except (ValueError, TypeError, OSError) as err:
        raise UsageError(str(err)) from None
    if args.profile:
        _print_profile(outcome.summary)
    return outcome.exit_code
