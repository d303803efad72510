"""The ``jnn`` command: ``jnn train`` (train on a built-in data set, write a run folder) and
``jnn check`` (sanity checks and a gradient check of the configured model).

A thin face over the library: options become a :class:`jnn.runs.RunConfig`, and
:func:`jnn.runs.train_run` / :func:`jnn.runs.check_run` do the work a Python user can do
too. The library's ``ValueError`` / ``TypeError`` for bad input become ``jnn train: error:
...`` with exit code 2. JAX is imported only by the commands, so ``jnn --help`` answers at
once.
"""

from __future__ import annotations

import argparse
import sys
import threading

from jnn.cli._options import add_check_options, add_train_options

__all__ = ["UsageError", "build_parser", "main", "run"]


class UsageError(Exception):
    """Bad input found before training; printed as ``jnn: error: ...`` with exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    """The ``jnn`` argument parser (no JAX import)."""
    from jnn.cli import _check, _train

    parser = argparse.ArgumentParser(
        prog="jnn",
        description="jnn: a JAX functional training toolkit. `jnn train` trains on a built-in "
        "data set and writes a run folder; `jnn check` runs sanity and gradient checks.",
    )
    sub = parser.add_subparsers(dest="command", metavar="{train,check}")
    train = sub.add_parser(
        "train",
        help="train a model (or an ensemble) and write a run folder",
        description="Train a network on a built-in data set (no download). Writes "
        "config.json, metrics.jsonl, a checkpoint, PNG plots and report.md to --out.",
    )
    add_train_options(train)
    train.set_defaults(func=_train.cmd_train)
    check = sub.add_parser(
        "check",
        help="sanity checks and gradient check on the configured model",
        description="Run jnn.sanity (initial loss, regularisation, overfit a tiny set) and "
        "jnn.gradcheck on the model configured by the same options as `jnn train`.",
    )
    add_check_options(check)
    check.set_defaults(func=_check.cmd_check)
    return parser


def _parse(parser: argparse.ArgumentParser, argv):
    """Parses ``argv``; an unknown option is reported with the usage of its command (``jnn
    train``'s), not the top-level one."""
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        command = commands.choices.get(args.command, parser)
        command.error(f"unrecognized arguments: {' '.join(unknown)}")
    return args


def main(argv=None) -> int:
    """Entry point of the ``jnn`` command; returns the exit code.

    From its first line to its exit, SIGINT and SIGTERM have one handler (``jnn._signals``,
    installed here): a signal never kills the process in the middle of a checkpoint write,
    and ends it within seconds with one line saying what is saved and how to resume.
    """
    from jnn import _signals

    if threading.current_thread() is not threading.main_thread():
        return _main(argv)
    with _signals.guard(hard_exit=True) as gate:
        from jnn.runs._interrupts import startup  # no JAX import

        gate.describe = startup
        return _main(argv, gate)


def run() -> None:
    """The ``jnn`` process (console script, ``python -m jnn.cli``): :func:`main` under
    ``jnn._process.owned_collector``, then ``SystemExit`` with its code (:func:`main` leaves
    the garbage collector alone)."""
    from jnn import _process

    with _process.owned_collector():
        code = main()
    raise SystemExit(code)


def _main(argv, gate=None) -> int:
    parser = build_parser()
    try:
        args = _parse(parser, argv)
    except SystemExit as exit_:  # --help, or a usage error argparse already printed
        return exit_.code if isinstance(exit_.code, int) else 0 if exit_.code is None else 2
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except UsageError as err:
        print(f"jnn {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:
        name = getattr(err, "signal_name", "SIGINT")
        if gate is not None and gate.received:  # a real signal: say what is saved, end now
            gate.exit_now()
        print(f"interrupted ({name})", file=sys.stderr)
        from jnn._signals import exit_code

        return exit_code(name)
