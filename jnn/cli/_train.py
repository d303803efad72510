"""``jnn train``: options -> ``RunConfig`` -> ``jnn.runs.train_run``."""

from __future__ import annotations

__all__ = ["cmd_train", "explicit_options"]

_ACTIONS = (
    "command",
    "func",
    "resume",
    "overwrite",
    "profile",
    "check_examples",
    "allow_changed_data",
)


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


def _print_profile(summary) -> None:
    timings = summary.get("timings", {})
    total = sum(timings.values())
    print("where the wall time went:")
    for phase, seconds in timings.items():
        print(f"  {phase:<9} {seconds:7.2f} s  {100 * seconds / max(total, 1e-9):5.1f}%")
    print(f"  {'total':<9} {total:7.2f} s")
    print(
        "  (train: the epochs themselves, as in the headline; loop: the rest of the epoch "
        "loop: initialisation, data to the device, checkpoints, per-epoch records)"
    )


def cmd_train(args) -> int:
    """Validates everything, trains, and writes the run folder (see ``jnn.runs.train_run``)."""
    from jnn import runs
    from jnn.cli import UsageError

    try:
        config = _config(args)
        outcome = runs.train_run(
            config,
            resume=args.resume,
            overwrite=args.overwrite,
            allow_changed_data=args.allow_changed_data,
        )
    except (ValueError, TypeError, OSError) as err:
        raise UsageError(str(err)) from None
    if args.profile:
        _print_profile(outcome.summary)
    return outcome.exit_code
