"""Runs: what ``jnn train`` / ``jnn check`` do, as functions a Python user can call.

``RunConfig`` holds every option (defaults filled, checked, frozen); the builders make the
model, loss, optimizer, schedule and data from it; ``RunFolder`` writes the run folder;
``train_run`` / ``check_run`` are the whole jobs::

    from jnn import runs
    config = runs.RunConfig.from_options(dataset="mnist1d", model="cnn", out="runs/cnn")
    outcome = runs.train_run(config)        # trains, writes runs/cnn, returns the summary
    print(outcome.summary["test_accuracy"])

Importing this package does not import JAX (the command line's ``--help`` stays instant).
"""

from jnn.runs._builders import (
    build_loss,
    build_model,
    build_optimizer,
    build_schedule,
    build_tree,
    load_run_data,
)
from jnn.runs._check_job import check_run
from jnn.runs._config import RunConfig
from jnn.runs._console import format_epoch
from jnn.runs._folder import RunFolder, jsonable
from jnn.runs._job import RunOutcome, resume_config, train_run

__all__ = [
    "RunConfig",
    "RunFolder",
    "RunOutcome",
    "build_loss",
    "build_model",
    "build_optimizer",
    "build_schedule",
    "build_tree",
    "check_run",
    "format_epoch",
    "jsonable",
    "load_run_data",
    "resume_config",
    "train_run",
]
