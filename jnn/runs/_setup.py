"""What a run builds once, whatever its mode: data, model, loss, mesh and the options every
``fit`` of the run takes."""

from __future__ import annotations

from typing import Any, NamedTuple

from jnn.runs import _builders, _preprocess, _tasks
from jnn.runs._config import RunConfig
from jnn.runs._console import show_progress
from jnn.runs._folder import RunFolder

__all__ = ["ACTIVATION_SAMPLE", "Setup", "build_setup", "loop_options", "on_host", "step_options"]

ACTIVATION_SAMPLE = 512  # validation examples used for the activation statistics


class Setup(NamedTuple):
    """What a run trains: data, model, loss and the steps per epoch."""

    ds: Any
    model: Any
    loss: Any
    steps_per_epoch: int
    tree: Any = None
    mesh: Any = None
    task: Any = None  # a jnn.runs._tasks.Task (None: classes)
    preprocess: Any = None  # the fitted --preprocess statistics
    dtype: str = "float32"
    note: str | None = None


def join_processes(config: RunConfig) -> None:
    """Joins a multi-process run (``--coordinator``/``--num-processes``/``--process-id`` or
    ``JNN_*``) before anything else touches JAX; nothing to do for a single process, and
    nothing the second time."""
    import os

    import jnn.distributed as dist

    options = (config.coordinator, config.num_processes, config.process_id)
    if any(v is not None for v in options) or os.environ.get(dist.ENV["coordinator"]):
        dist.initialize(*options, timeout=config.coordinator_timeout)


def imports(config: RunConfig, clock) -> None:
    """Joins a multi-process run if asked, then imports JAX (with the compilation cache on
    unless ``--no-cache``) and jnn's modules."""

    join_processes(config)
    if config.cache:
        import jnn.cache

        jnn.cache.enable_compilation_cache()
    import jnn.monitor  # noqa: F401
    import jnn.train  # noqa: F401

    clock.lap("imports")


def _data_note(ds, seconds: float) -> str | None:
    """``checked 3.0 GiB of mapped data in 4.1 s ...`` for a ``--data DIR`` run, else None."""
    from jnn.data._npy_dir import mapped_bytes

    size = mapped_bytes(ds)
    if not size:
        return None
    return (
        f"checked {size / 2**30:.2f} GiB of memory-mapped data in {seconds:.1f} s (labels, "
        "NaN/inf, shapes; slice by slice); training streams it from the files"
    )


def build_setup(config: RunConfig, clock, folder=None, resume=False) -> Setup:
    """Loads, preprocesses and checks the data, builds the model, mesh and loss (once)."""
    import time

    t0 = time.perf_counter()
    ds = _builders.load_run_data(config)
    note = _data_note(ds, time.perf_counter() - t0)
    ds, stats = _preprocess.prepare(config, ds, folder, resume)
    ds, task = _tasks.prepare(config, ds)
    tree = None
    if config.output == "hsoftmax":
        tree = _builders.build_tree(config, ds.y_train, ds.num_classes)
    model = _builders.build_model(config, ds.num_classes, ds.input_shape, tree=tree)
    _builders.check_memory(config, model, ds.input_shape)
    mesh = _mesh(config)
    clock.lap("data")
    loss = _builders.build_loss(config, "classes" if task.is_classes else task.kind)
    steps = len(ds.x_train) // config.batch_size
    return Setup(ds, model, loss, steps, tree, mesh, task, stats, config.dtype, note)


def _mesh(config: RunConfig):
    """The data-parallel mesh of ``--devices N`` (the first N local devices of each process;
    default all), checked against the batch size before any folder is written."""
    import jnn.train
    from jnn.train import _sharding

    mesh = jnn.train.make_mesh(config.devices)
    _sharding.as_layout(mesh).check(config.batch_size)
    return mesh


def loop_options(config: RunConfig, setup: Setup, folder: RunFolder, resume, on_start) -> dict:
    """The epoch loop's keywords every run passes to ``fit``: checkpoints in the run folder,
    resume, early stopping, progress, the mesh."""
    return dict(
        checkpoint_dir=folder.checkpoint_dir,
        checkpoint_every=config.checkpoint_every,
        checkpoint_seconds=config.checkpoint_seconds,
        resume=resume,
        patience=config.patience,
        progress=show_progress(config),
        on_start=on_start,
        mesh=setup.mesh,
    )


def step_options(config: RunConfig, schedule):
    """``fit``'s step options: the L2 strength; for ``--output hsoftmax`` without L2 the
    sparse head step (lazy Adam for the Adam family, with its b1; SGD otherwise)."""
    l2 = config.l2[0]
    penalties = {"l2": l2, "l1": config.l1[0], "max_norm": config.max_norm}
    penalties = {k: v for k, v in penalties.items() if v}
    if config.output == "hsoftmax" and not penalties:
        if config.optimizer in ("adam", "adamw", "nadam"):
            head = {"head_update": "lazy_adam", "learning_rate": schedule, "b1": config.momentum[0]}
        else:
            head = {"head_update": "sgd", "learning_rate": schedule}
        return {"sparse_head": head}
    return penalties or None


def on_host(tree):
    """A trained state as host arrays, so that evaluation, statistics and plots run on one
    device in each process (and never as a collective only process 0 would enter)."""
    from jnn.train import _sharding

    return None if tree is None else _sharding.host(tree)
