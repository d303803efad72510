"""``python -m jnn.cli``: the ``jnn`` command."""

from jnn.cli import run

run()
