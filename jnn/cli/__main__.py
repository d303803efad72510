"""``python -m jnn.cli``: the ``jnn`` command."""

from jnn.cli import run

if __name__ == "__main__":  # not when a spawned helper process imports this module
    run()
