"""Many devices and hosts: the same ``fit`` / ``make_step`` on a mesh of 8 forced CPU devices
matches one device (single models, FSDP, a 2 x 4 ensemble x data mesh, ``jnn train
--devices``), with the documented shardings; two processes joined by
``jnn.distributed.initialize`` train like one; bad settings and unreachable peers fail clearly.

The forced device count must be set before JAX starts (jax-ml/jax#17188), so the 8-device
checks run in a child process (``tests/_distributed_worker.py``) with ``XLA_FLAGS``; every
child has a time-out and is killed in a ``finally``.
"""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import _distributed_worker as worker
import chex
import jax
import numpy as np
import pytest
from jax.sharding import Mesh

from jnn import distributed, losses, optim, train
from jnn.runs._console import mesh_label

WORKER = Path(__file__).with_name("_distributed_worker.py")
EIGHT = "--xla_force_host_platform_device_count=8"
TOL = 1e-6  # float32 rounding: the mesh reduces the same sums in another order


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XLA_FLAGS", "JNN_"))}
    env["JNN_CACHE_DIR"] = os.environ["JNN_CACHE_DIR"]
    # the checkout's jnn even where it is not installed (the workers run from a temp folder)
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    env.update(extra)
    # keep the suite's compile-time setting (tests/conftest.py) next to a forced device count
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn(*args, env):
    return subprocess.Popen(
        [sys.executable, str(WORKER), *map(str, args)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(procs, timeout):
    """Waits for every process (one deadline for all); kills any still running."""
    deadline = time.monotonic() + timeout
    outputs = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
            outputs.append((proc.returncode, out, err))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    return outputs


# ----------------------------------------------------------------------------- 8 devices


@pytest.fixture(scope="module")
def eight(tmp_path_factory):
    """The 8-device child's findings (see ``_distributed_worker.devices``)."""
    workdir = tmp_path_factory.mktemp("eight")
    out = workdir / "out.json"
    [(rc, _, err)] = _finish(
        [_spawn("devices", out, workdir, env=_env(XLA_FLAGS=EIGHT))], timeout=480
    )
    assert rc == 0, err[-3000:]
    return json.loads(out.read_text())


def test_data_parallel_fit_and_step_match_one_device(eight):
    assert eight["devices"] == 8
    assert eight["fit_gap"] < TOL  # fit over 8 devices vs 1: same seed, same global batch
    assert eight["streamed_gap"] < TOL  # streamed arrays, each device's rows read for it
    assert eight["step_gap"] < TOL  # 3 make_step calls of a BatchNorm MLP
    assert eight["fsdp_gap"] < TOL  # the same with params and momentum split on "data"


def _fsdp_rule(shape, size=8):
    """The documented FSDP spec, written out again: the largest axis 8 divides."""
    axes = [a for a, n in enumerate(shape) if n % size == 0]
    best = max(axes, key=lambda a: shape[a]) if axes else None
    return ["data" if a == best else None for a in range(len(shape))]


def test_shardings_are_the_documented_ones(eight):
    # Inside the compiled epoch and step each device holds its slice of the global batch.
    assert eight["epoch_batch_specs"] == {"out": ["data"], "y": ["data"]}
    assert eight["step_batch_specs"] == {"out": ["data"], "y": ["data"]}
    # Params and optimizer state replicated ...
    for path, shape, spec in eight["fit_specs"]:
        assert spec == [None] * len(shape), path
    # ... or, with fsdp, split on their largest axis the data axis divides.
    for path, shape, spec in eight["fsdp_specs"]:
        assert spec == _fsdp_rule(shape), path
    assert ["data", None] in [spec for _, _, spec in eight["fsdp_specs"]]
    # An ensemble's members on the "ensemble" axis.
    for path, shape, spec in eight["ensemble_specs"]:
        assert spec == ["ensemble"] + [None] * (len(shape) - 1), path


def test_ensemble_on_a_2x4_mesh_matches_one_device(eight):
    assert eight["ensemble_mesh"] == {"ensemble": 2, "data": 4}
    assert eight["ensemble_gap"] < TOL  # ensemble.fit
    assert eight["ensemble_step_gap"] < TOL  # ensemble.make_step, per-member learning rates


def test_foreign_models_on_8_devices_match_one_device(eight):
    # a Flax linen model with BatchNorm and dropout, an NNX model (its RNG streams in the
    # state) and an Equinox model with BatchNorm: params and model state, same seed
    for name in ("linen", "nnx", "equinox"):
        assert eight[f"{name}_gap"] < TOL, name
    assert eight["nnx_ensemble_gap"] < TOL  # 4 NNX members on a 2 x 4 mesh


def test_batches_and_members_that_do_not_divide_the_mesh_are_clear_errors(eight):
    # Just inside: batch_size 16 on 8 devices trained above; just outside: 12.
    for key in ("fit_batch_error", "step_batch_error"):
        assert "batch_size=12" in eight[key] and "'data' axis of 8 devices" in eight[key]
    members = eight["members_error"]
    assert "4 ensemble members" in members and "'ensemble' axis of 8 devices" in members
    bad = eight["cli_bad"]
    assert bad["rc"] == 2 and "batch_size=60" in bad["text"] and not bad["made"]


def test_cli_devices_8_and_1_reach_the_same_test_accuracy(eight):
    one, many = eight["cli1"], eight["cli8"]
    assert one["rc"] == many["rc"] == 0
    assert many["acc"] == pytest.approx(one["acc"], abs=1e-9)
    assert "epoch   1/1" in many["text"] and "mesh data=8" in many["text"]
    assert "mesh data=1" in one["text"]


# ----------------------------------------------------------------------------- two processes


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    """Two processes on 127.0.0.1 training one model; returns their folder and outputs."""
    workdir = tmp_path_factory.mktemp("two")
    port, env = _free_port(), _env()
    procs = [_spawn("process", port, pid, workdir, env=env) for pid in (0, 1)]
    outputs = _finish(procs, timeout=300)
    for pid, (rc, _, err) in enumerate(outputs):
        assert rc == 0, f"process {pid}: {err[-3000:]}"
    return workdir


def _load(path):
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


@pytest.fixture(scope="module")
def one_process():
    """The two-process run's global batches in one process, on one device (mesh=None)."""
    return worker.fit_single(epochs=worker.FIT["epochs"] + 1), worker.step_loop()


def test_two_processes_train_like_one(two_processes, one_process):
    p0, p1 = (_load(two_processes / f"params{pid}.npz") for pid in (0, 1))
    for name in p0:
        if name != "rows":
            np.testing.assert_array_equal(p0[name], p1[name])  # one model, two processes
    fitted, stepped = one_process
    for i, leaf in enumerate(jax.tree.leaves(fitted.state.params)):
        np.testing.assert_allclose(p0[f"fit{i}"], leaf, atol=TOL, rtol=0)
    for i, leaf in enumerate(jax.tree.leaves(stepped.params)):
        np.testing.assert_allclose(p0[f"step{i}"], leaf, atol=TOL, rtol=0)
    # Each process fed its own half of every global batch of 16.
    x16 = worker.problem()[0][:16]
    np.testing.assert_array_equal(p0["rows"], x16[:8])
    np.testing.assert_array_equal(p1["rows"], x16[8:])


def test_two_processes_share_the_mesh_checkpoints_and_epochs(two_processes):
    infos = [json.loads((two_processes / f"info{pid}.json").read_text()) for pid in (0, 1)]
    assert [i["process_index"] for i in infos] == [0, 1]
    assert all(i["process_count"] == 2 and i["mesh"] == {"data": 2} for i in infos)
    epochs = worker.FIT["epochs"] + 1
    # The resumed run continued from the checkpoint both wrote, and ran the same epochs.
    assert [r["epoch"] for r in infos[0]["history"]] == list(range(1, epochs + 1))
    timeless = lambda info: [{**r, "seconds": None} for r in info["history"]]  # noqa: E731
    assert timeless(infos[0]) == timeless(infos[1])
    saved = sorted(int(p.name) for p in (two_processes / "ckpt").iterdir() if p.name.isdigit())
    assert saved == [epochs - 1, epochs]


def test_only_process_0_writes_the_run_folder(two_processes):
    assert json.loads((two_processes / "folder0" / "summary.json").read_text()) == {"process": 0}
    assert not (two_processes / "folder1").exists()


# ----------------------------------------------------------------------------- failures


def test_a_process_that_cannot_reach_the_coordinator_fails_clearly():
    port = _free_port()  # nobody listens there
    env = _env(JNN_COORDINATOR=f"127.0.0.1:{port}", JNN_NUM_PROCESSES="2", JNN_PROCESS_ID="1")
    [(rc, out, err)] = _finish([_spawn("join", 2, env=env)], timeout=90)
    assert rc != 0 and "joined" not in out
    assert "TimeoutError" in err and f"could not reach the coordinator at 127.0.0.1:{port}" in err


def test_a_coordinator_whose_peers_never_come_exits_with_a_message():
    port = _free_port()
    coordinator = _spawn("join", 2, f"127.0.0.1:{port}", 2, 0, env=_env())
    [(rc, out, err)] = _finish([coordinator], timeout=90)
    assert rc == 1 and "joined" not in out
    assert "process 0 of 2 gave up after 2 s waiting for the other processes" in err


def _settings(address, num, pid):
    return {"JNN_COORDINATOR": address, "JNN_NUM_PROCESSES": num, "JNN_PROCESS_ID": pid}


@pytest.mark.parametrize(
    "settings, env, message",
    [
        ((), {}, r"needs coordinator_address \(or JNN_COORDINATOR\), num_processes"),
        (("10.0.0.1:1234", 2), {}, r"needs process_id \(or JNN_PROCESS_ID\)"),
        ((), _settings("nohost", "2", "0"), "must be HOST:PORT, got 'nohost'"),
        ((), _settings("h:1", "two", "0"), "JNN_NUM_PROCESSES must be an integer, got 'two'"),
        ((None, None, 5), _settings("h:1", "2", "0"), r"in \[0, 2\), got 5"),  # argument wins
        (("h:1", 2, 2), {}, r"process_id must be an int in \[0, 2\), got 2"),
        (("h:1", 0, 0), {}, "num_processes must be an int >= 1, got 0"),
    ],
)  # fmt: skip
def test_initialize_names_missing_and_malformed_settings(monkeypatch, settings, env, message):
    for name in ("JNN_COORDINATOR", "JNN_NUM_PROCESSES", "JNN_PROCESS_ID"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=message):
        distributed.initialize(*settings)
    with pytest.raises(ValueError, match="timeout must be > 0"):
        distributed.initialize("h:1", 2, 1, timeout=0)
    assert not jax.distributed.is_initialized()


# ----------------------------------------------------------------------------- one device


def test_mesh_errors_name_the_problem():
    with pytest.raises(ValueError, match="xla_force_host_platform_device_count=2"):
        train.make_mesh(jax.local_device_count() + 1)
    n = jax.device_count()
    with pytest.raises(ValueError, match=f"ensemble={n + 1} must be a positive int dividing"):
        train.make_mesh(ensemble=n + 1)
    odd = Mesh(np.array(jax.devices()[:1]), ("model",))
    model, loss, opt = worker.mlp(), losses.softmax_cross_entropy, optim.sgd(0.1)
    with pytest.raises(ValueError, match="mesh axes must be named 'data' and/or 'ensemble'"):
        train.make_step(model, loss, opt, mesh=odd)
    with pytest.raises(TypeError, match="mesh must be a jax.sharding.Mesh"):
        train.make_step(model, loss, opt, mesh="data")
    with pytest.raises(ValueError, match="fsdp=True needs a mesh"):
        train.make_step(model, loss, opt, fsdp=True)


def test_a_one_device_mesh_trains_bit_for_bit_like_no_mesh(one_process):
    # What `jnn train` runs on a 1-device machine (it always passes a mesh).
    mesh = train.make_mesh(1)
    plain = one_process[0]
    meshed = worker.fit_single(mesh=mesh, epochs=worker.FIT["epochs"] + 1)
    chex.assert_trees_all_equal(plain.state.params, meshed.state.params)
    timeless = lambda history: [{**r, "seconds": None} for r in history]  # noqa: E731
    assert timeless(plain.history) == timeless(meshed.history)
    assert mesh_label(mesh) == "mesh data=1"


def test_global_batch_and_local_rows_in_one_process():
    mesh = train.make_mesh()
    x = worker.problem()[0][:8]
    np.testing.assert_array_equal(distributed.local_rows(x, mesh), x)
    batch = distributed.global_batch(x, mesh)
    assert batch.sharding.spec == jax.sharding.PartitionSpec("data")
    np.testing.assert_array_equal(np.asarray(batch), x)
    info = distributed.process_info()
    assert (info.process_index, info.process_count) == (0, 1) and distributed.is_primary()
