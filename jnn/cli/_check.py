"""``jnn check``: options -> ``RunConfig`` -> ``jnn.runs.check_run``."""

from __future__ import annotations

__all__ = ["cmd_check"]


def cmd_check(args) -> int:
    """``jnn.sanity.run_all`` on the configured model and data: the initial loss against
    log C, more regularisation giving a higher loss, overfitting a tiny set, and a gradient
    check after a few training steps. Exit code 0 when every check passes."""
    from jnn import runs
    from jnn.cli import UsageError
    from jnn.cli._train import explicit_options

    try:
        config = runs.RunConfig.from_options(**{**explicit_options(args), "epochs": 1})
        report = runs.check_run(config, examples=args.check_examples)
    except (ValueError, TypeError, OSError) as err:
        raise UsageError(str(err)) from None
    return 0 if report.ok else 1
