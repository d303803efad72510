"""The child processes of ``tests/test_distributed.py`` (run as a script, never collected).

python tests/_distributed_worker.py devices OUT.json WORKDIR
    8 forced CPU devices (the caller sets XLA_FLAGS before JAX starts): 1 device vs a
    data mesh (fit and make_step, FSDP), a 2 x 4 ensemble x data mesh, the shardings
    seen inside the compiled step, the divisibility errors, Flax linen / NNX / Equinox
    models (fit and an NNX ensemble), and `jnn train --devices 8` vs `--devices 1`.
python tests/_distributed_worker.py process PORT PID WORKDIR
    one of two processes joined by jnn.distributed.initialize on 127.0.0.1:PORT: fit with
    Orbax checkpoints and a make_step loop fed per process; writes WORKDIR/params{PID}.npz.
python tests/_distributed_worker.py join TIMEOUT [HOST:PORT NUM PID]
    only jnn.distributed.initialize (settings from JNN_* when not given): the failures.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys

import numpy as np


def problem(n=64, d=5, classes=3, seed=0):
    """A small classification problem (also the parent's reference)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    y = rng.integers(0, classes, n).astype(np.int32)
    return x, y


def mlp():
    """The dropout MLP every check trains (one object, so compiled programs are reused)."""
    return _MODELS["mlp"]


def bn_mlp():
    """The BatchNorm MLP of the ``make_step`` checks."""
    return _MODELS["bn_mlp"]


def _models() -> dict:
    from jnn import nn

    return {
        "mlp": nn.Serial(nn.Dense(16), nn.Relu(), nn.Dropout(0.1), nn.Dense(3)),
        "bn_mlp": nn.Serial(
            nn.Dense(8), nn.BatchNorm(), nn.Relu(), nn.Dense(16), nn.Relu(), nn.Dense(3)
        ),
    }


_MODELS = _models()
FIT = {"epochs": 2, "batch_size": 16, "progress": False}
STEPS = 3


def recording_loss(seen: dict):
    """Softmax cross-entropy that records the shardings of its inputs inside the compiled
    program (``jax.debug.inspect_array_sharding``): what each device really computes."""
    import jax

    from jnn import losses

    def loss(outputs, targets):
        jax.debug.inspect_array_sharding(outputs, callback=lambda s: seen.setdefault("out", s))
        jax.debug.inspect_array_sharding(targets, callback=lambda s: seen.setdefault("y", s))
        return losses.softmax_cross_entropy(outputs, targets)

    return loss


def fit_single(mesh=None, loss=None, val=True, **options):
    import jax

    from jnn import losses, optim, train

    x, y = problem()
    return train.fit(
        mlp(),
        loss or losses.softmax_cross_entropy,
        optim.adam(1e-2),
        (x, y),
        key=jax.random.key(0),
        val_data=(x[:24], y[:24]) if val else None,
        mesh=mesh,
        **{**FIT, **options},
    )


def step_loop(mesh=None, feed=None, loss=None, **options):
    """``STEPS`` make_step calls of the BatchNorm MLP on the first 16 examples."""
    import jax

    from jnn import losses, optim, train

    x, y = problem()
    opt = optim.sgd(0.1, momentum=0.9)
    state = train.init(bn_mlp(), opt, jax.random.PRNGKey(1), (16, 5))
    loss = loss or losses.softmax_cross_entropy
    step = train.make_step(bn_mlp(), loss, opt, mesh=mesh, **options)
    batch = (x[:16], y[:16]) if feed is None else feed((x[:16], y[:16]))
    for _ in range(STEPS):
        state, _ = step(state, batch, jax.random.PRNGKey(2))  # a raw key (fit: typed)
    return state


def _diff(a, b) -> float:
    import jax

    gaps = jax.tree.map(lambda u, v: float(np.max(np.abs(np.asarray(u) - np.asarray(v)))), a, b)
    return max(jax.tree.leaves(gaps), default=0.0)


def _specs(tree) -> list:
    """``[(path, shape, spec)]`` with the spec as a list padded to the leaf's rank."""
    import jax

    rows = []
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        spec = list(leaf.sharding.spec) + [None] * (leaf.ndim - len(leaf.sharding.spec))
        rows.append((jax.tree_util.keystr(path), list(leaf.shape), spec))
    return rows


def _error(fn) -> str | None:
    try:
        fn()
    except ValueError as err:
        return str(err)
    return None


def single_checks(out: dict) -> None:
    from jnn import train

    seen_fit, seen_step = {}, {}
    one = fit_single(val=False)
    many = fit_single(mesh=8, loss=recording_loss(seen_fit), val=False)
    out["fit_gap"] = _diff(one.state.params, many.state.params)
    streamed = fit_single(mesh=8, val=False, memory_budget=0, chunk_steps=3)  # rows per device
    out["streamed_gap"] = _diff(one.state.params, streamed.state.params)
    out["fit_specs"] = _specs((many.state.params, many.state.opt_state))
    out["epoch_batch_specs"] = {k: list(s.spec) for k, s in seen_fit.items()}
    stepped = step_loop()
    out["step_gap"] = _diff(stepped, step_loop(mesh=8, loss=recording_loss(seen_step)))
    out["step_batch_specs"] = {k: list(s.spec) for k, s in seen_step.items()}
    fsdp = step_loop(mesh=train.make_mesh(8), fsdp=True)
    out["fsdp_gap"] = _diff(stepped, fsdp)
    out["fsdp_specs"] = _specs((fsdp.params, fsdp.opt_state))
    out["fit_batch_error"] = _error(lambda: fit_single(mesh=8, batch_size=12))
    cut = lambda b: (b[0][:12], b[1][:12])  # noqa: E731
    out["step_batch_error"] = _error(lambda: step_loop(mesh=8, feed=cut))


def ensemble_fit(mesh=None, **options):
    import jax

    from jnn import ensemble, losses, optim

    x, y = problem()
    return ensemble.fit(
        mlp(),
        losses.softmax_cross_entropy,
        optim.adam(1e-2),
        (x, y),
        keys=jax.random.split(jax.random.key(3), 4),
        mesh=mesh,
        **{**FIT, **options},
    )


def ensemble_checks(out: dict) -> None:
    from jnn import train

    grid = train.make_mesh(8, ensemble=2)
    out["ensemble_mesh"] = dict(grid.shape)
    one, many = ensemble_fit(), ensemble_fit(mesh=grid)
    out["ensemble_gap"] = _diff(one.state.params, many.state.params)
    out["ensemble_specs"] = _specs((many.state.params, many.state.opt_state))
    out["members_error"] = _error(lambda: ensemble_fit(mesh=train.make_mesh(8, ensemble=8)))
    out["ensemble_step_gap"] = _diff(ensemble_steps(), ensemble_steps(grid))


def ensemble_steps(mesh=None):
    """``STEPS`` ensemble ``make_step`` calls (4 members, per-member learning rates)."""
    import jax

    from jnn import ensemble, losses, optim

    x, y = problem()
    keys, hp = jax.random.split(jax.random.key(4), 4), {"learning_rate": [0.1, 0.2, 0.3, 0.4]}
    state = ensemble.init(mlp(), optim.sgd, keys, (16, 5), hyperparams=hp)
    step = ensemble.make_step(
        mlp(), losses.softmax_cross_entropy, optim.sgd, hyperparams=hp, mesh=mesh
    )
    for _ in range(STEPS):
        state, _ = step(state, (x[:16], y[:16]), jax.random.key(5))
    return state.params


def cli_checks(out: dict, workdir: str) -> None:
    from jnn import cli

    base = ["train", "--epochs", "1", "--widths", "8", "--batch-size", "64", "--lr", "1e-2"]
    base += ["--schedule", "constant", "--no-progress", "--no-plots", "--seed", "3"]
    for n in (8, 1):
        folder = os.path.join(workdir, f"cli{n}")
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            rc = cli.main([*base, "--devices", str(n), "--out", folder])
        with open(os.path.join(folder, "summary.json")) as f:
            summary = json.load(f)
        out[f"cli{n}"] = {"rc": rc, "text": printed.getvalue(), "acc": summary["test_accuracy"]}
    printed = io.StringIO()
    with contextlib.redirect_stderr(printed):
        rc = cli.main([*base, "--devices", "8", "--batch-size", "60", "--out", workdir + "/bad"])
    out["cli_bad"] = {
        "rc": rc,
        "text": printed.getvalue(),
        "made": os.path.exists(workdir + "/bad"),
    }


def _foreign_models() -> dict:
    """A linen MLP with BatchNorm and dropout, an NNX constructor and an Equinox constructor
    with BatchNorm (its "batch" axis under the mesh)."""
    import equinox as eqx
    import flax.linen as linen
    import jax
    from flax import nnx

    class Linen(linen.Module):
        @linen.compact
        def __call__(self, x, train=False):
            x = linen.Dense(8, use_bias=False)(x)  # a bias before BatchNorm: adam amplifies
            x = linen.BatchNorm(use_running_average=not train)(x)  # its ~0 gradient's rounding
            x = linen.Dropout(0.1, deterministic=not train)(linen.relu(x))
            return linen.Dense(3)(x)

    class Nnx(nnx.Module):
        def __init__(self, rngs):
            self.a, self.b = nnx.Linear(5, 8, rngs=rngs), nnx.Linear(8, 3, rngs=rngs)
            self.drop = nnx.Dropout(0.1, rngs=rngs)

        def __call__(self, x):
            return self.b(self.drop(nnx.relu(self.a(x))))

    def equinox(key):
        k1, k2 = jax.random.split(key)
        return eqx.nn.Sequential(
            [
                eqx.nn.Linear(5, 8, use_bias=False, key=k1),
                eqx.nn.BatchNorm(8, "batch", mode="batch"),
                eqx.nn.Lambda(jax.nn.relu),
                eqx.nn.Linear(8, 3, key=k2),
            ]
        )

    return {"linen": Linen(), "nnx": Nnx, "equinox": equinox}


def _arrays(state):
    """Params and model state with typed keys (NNX's RNG streams) as their key data."""
    import jax

    raw = lambda a: (
        jax.random.key_data(a) if jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key) else a
    )  # noqa: E731
    return state.params, jax.tree.map(raw, state.model_state)


def foreign_checks(out: dict) -> None:
    """Flax linen / NNX / Equinox models: fit on 8 devices vs 1, an NNX ensemble on 2 x 4."""
    import jax

    from jnn import ensemble, losses, optim, train

    x, y = problem()
    for name, model in _foreign_models().items():
        fit = lambda mesh, m=model: train.fit(  # noqa: E731
            m, losses.softmax_cross_entropy, optim.adam(1e-2), (x, y),
            key=jax.random.key(0), mesh=mesh, **FIT,
        )  # fmt: skip
        out[f"{name}_gap"] = _diff(*(_arrays(fit(mesh).state) for mesh in (None, 8)))
    members = lambda mesh: ensemble.fit(  # noqa: E731
        _foreign_models()["nnx"], losses.softmax_cross_entropy, optim.adam(1e-2), (x, y),
        keys=jax.random.split(jax.random.key(3), 4), mesh=mesh, **FIT,
    )  # fmt: skip
    out["nnx_ensemble_gap"] = _diff(
        members(None).state.params, members(train.make_mesh(8, ensemble=2)).state.params
    )


def devices(path: str, workdir: str) -> None:
    import jax

    out = {"devices": jax.device_count()}
    single_checks(out)
    ensemble_checks(out)
    foreign_checks(out)
    cli_checks(out, workdir)
    with open(path, "w") as f:
        json.dump(out, f)


def process(port: str, pid: int, workdir: str) -> None:
    import jax

    import jnn.distributed
    from jnn import train
    from jnn.runs._folder import RunFolder

    info = jnn.distributed.initialize(f"127.0.0.1:{port}", 2, pid, timeout=60)
    mesh = train.make_mesh()
    ckpt = os.path.join(workdir, "ckpt")
    fit_single(mesh=mesh, checkpoint_dir=ckpt, checkpoint_every=1)
    result = fit_single(mesh=mesh, checkpoint_dir=ckpt, epochs=FIT["epochs"] + 1, resume=True)
    feed = lambda batch: jnn.distributed.global_batch(  # noqa: E731
        jnn.distributed.local_rows(batch, mesh), mesh
    )
    state = step_loop(mesh=mesh, feed=feed)
    rows = jnn.distributed.local_rows(problem()[0][:16], mesh)
    folder = RunFolder(os.path.join(workdir, f"folder{pid}"))
    folder.create()
    folder.write_summary({"process": pid})
    fitted = train._sharding.host(result.state.params)
    stepped = train._sharding.host(state.params)
    flat = {f"fit{i}": a for i, a in enumerate(jax.tree.leaves(fitted))}
    flat.update({f"step{i}": a for i, a in enumerate(jax.tree.leaves(stepped))})
    np.savez(os.path.join(workdir, f"params{pid}.npz"), rows=rows, **flat)
    with open(os.path.join(workdir, f"info{pid}.json"), "w") as f:
        json.dump({**info._asdict(), "history": result.history, "mesh": dict(mesh.shape)}, f)


def join(timeout: float, *settings) -> None:
    """``initialize`` with ``(address, num_processes, process_id)``, or with all three from
    ``JNN_*`` when ``settings`` is empty."""
    import jnn.distributed

    address, num, pid = settings if settings else (None, None, None)
    num, pid = (None, None) if not settings else (int(num), int(pid))
    jnn.distributed.initialize(address, num, pid, timeout=timeout)
    print("joined")


if __name__ == "__main__":
    import jax

    import jnn.cache

    jax.config.update("jax_numpy_dtype_promotion", "strict")  # the suite's settings
    jax.config.update("jax_numpy_rank_promotion", "raise")
    jnn.cache.enable_compilation_cache()  # in the test session's JNN_CACHE_DIR
    mode, *args = sys.argv[1:]
    if mode == "devices":
        devices(*args)
    elif mode == "process":
        process(args[0], int(args[1]), args[2])
    else:
        join(float(args[0]), *args[1:])
