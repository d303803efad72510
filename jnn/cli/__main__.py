"""``python -m jnn.cli``: the ``jnn`` command."""

from jnn.cli import main

raise SystemExit(main())
