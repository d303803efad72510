"""Streamed training data (jnn.train._feed / _stream / _within): memory-mapped arrays, iterables
of batches and Grain datasets, against the resident path and a hand-written make_step loop;
exact resume from a checkpoint taken inside an epoch; clear errors that lose nothing."""

import os
import re

import chex
import grain
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jnn import ensemble, init, losses, nn, optim, train
from jnn.train import _stream

_MODEL = nn.Serial(nn.Dense(16), nn.Relu(), nn.Dense(4))
_LOSS = losses.softmax_cross_entropy
_B = 8


def _problem(n=96, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6)).astype(np.float32)
    y = (np.argmax(x[:, :4], 1)).astype(np.int32)
    return x, y


def _params_equal(a, b):
    chex.assert_trees_all_equal(jax.device_get(a), jax.device_get(b))


def _batches(x, y):
    return [(x[i : i + _B], y[i : i + _B]) for i in range(0, len(x) - _B + 1, _B)]


@pytest.fixture(scope="module")
def mapped(tmp_path_factory):
    x, y = _problem()
    d = tmp_path_factory.mktemp("mapped")
    np.save(d / "x.npy", x)
    np.save(d / "y.npy", y)
    return np.load(d / "x.npy", mmap_mode="r"), np.load(d / "y.npy", mmap_mode="r")


def _fit(data, **kw):
    options = dict(epochs=2, batch_size=_B, key=jax.random.key(3), progress=False)
    return train.fit(_MODEL, _LOSS, optim.adam(1e-2), data, **{**options, **kw})


def test_memory_mapped_arrays_reach_the_parameters_of_the_same_arrays_in_memory(mapped):
    x, y = _problem()
    resident = _fit((x, y), val_data=(x[:20], y[:20]))
    streamed = _fit(mapped, chunk_steps=5, val_data=mapped)  # chunks across the epoch's end
    _params_equal(resident.state.params, streamed.state.params)
    for a, b in zip(resident.history, streamed.history, strict=True):
        np.testing.assert_allclose(a["train_loss"], b["train_loss"], rtol=1e-6)
    assert streamed.history[-1]["step"] == 2 * (96 // _B)


def test_arrays_over_the_memory_budget_stream(mapped):
    x, y = _problem()
    over = _fit((x, y), memory_budget=x.nbytes + y.nbytes - 1, chunk_steps=4)
    _params_equal(_fit((x, y)).state.params, over.state.params)


def _by_hand(batch_list, epochs, key):
    """The reference: train.init + make_step, epoch e's step key = split(fold_in(run, e))[1]."""
    init_key, run_key = jax.random.split(key)
    state = train.init(_MODEL, optim.adam(1e-2), init_key, (_B, 6))
    step = train.make_step(_MODEL, _LOSS, optim.adam(1e-2))
    for e in range(epochs):
        _, step_key = jax.random.split(jax.random.fold_in(run_key, e))
        for b in batch_list:
            state, _ = step(state, b, step_key)
    return state


def test_an_iterable_of_batches_trains_like_a_hand_written_loop():
    x, y = _problem()
    batch_list = _batches(x, y)
    got = _fit(batch_list, batch_size=None, chunk_steps=5)
    want = _by_hand(batch_list, 2, jax.random.key(3))
    chex.assert_trees_all_close(got.state.params, want.params, rtol=1e-6, atol=1e-7)


def test_steps_per_epoch_bounds_an_endless_iterator():
    x, y = _problem()
    batch_list = _batches(x, y)

    def endless():
        while True:
            yield from batch_list

    got = _fit(endless(), batch_size=None, steps_per_epoch=4, chunk_steps=3)
    assert [r["step"] for r in got.history] == [4, 8]
    want = _by_hand(batch_list[:4], 1, jax.random.key(3))  # epoch 2 continues the iterator
    init_key, run_key = jax.random.split(jax.random.key(3))
    step = train.make_step(_MODEL, _LOSS, optim.adam(1e-2))
    _, k1 = jax.random.split(jax.random.fold_in(run_key, 1))
    for b in batch_list[4:8]:
        want, _ = step(want, b, k1)
    chex.assert_trees_all_close(got.state.params, want.params, rtol=1e-6, atol=1e-7)


def _grain(x, y, fail_at=None):
    """A Grain pipeline of batches; ``fail_at`` raises KeyboardInterrupt once at that batch."""
    seen = {"n": 0}

    def batch(i):
        seen["n"] += 1
        if fail_at is not None and seen["n"] == fail_at:
            raise KeyboardInterrupt
        sl = slice(i * _B, (i + 1) * _B)
        return x[sl], y[sl]

    return grain.MapDataset.range(len(x) // _B).map(batch)


def test_a_grain_dataset_trains_like_a_hand_written_loop():
    x, y = _problem()
    got = _fit(_grain(x, y), batch_size=None, chunk_steps=4)
    want = _by_hand(_batches(x, y), 2, jax.random.key(3))
    chex.assert_trees_all_close(got.state.params, want.params, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("form", ["grain", "mapped"])
def test_an_interrupt_inside_an_epoch_resumes_from_that_step_bitwise(tmp_path, mapped, form):
    x, y = _problem()
    data = {"grain": lambda f=None: _grain(x, y, f), "mapped": lambda f=None: mapped}[form]
    kw = dict(epochs=3, chunk_steps=2, checkpoint_seconds=0.0)
    if form == "grain":
        kw["batch_size"] = None
    whole = _fit(data(), **kw)
    if form == "grain":
        interrupted = data(12 + 7)  # (12 batches an epoch) inside epoch 2
        with pytest.raises(train.Interrupted):
            _fit(interrupted, checkpoint_dir=tmp_path, **kw)
    else:

        def stop(record):  # after epoch 1, then (below) inside epoch 2 by time
            raise KeyboardInterrupt

        with pytest.raises(train.Interrupted):
            _fit(data(), checkpoint_dir=tmp_path, on_epoch=stop, **kw)
    held = sorted(int(p) for p in os.listdir(tmp_path / "within_epoch") if p.isdigit())
    assert held, "an in-epoch checkpoint was written"
    resumed = _fit(data(), checkpoint_dir=tmp_path, resume=True, **kw)
    _params_equal(whole.state.params, resumed.state.params)
    _params_equal(whole.state.opt_state, resumed.state.opt_state)
    assert [r["step"] for r in resumed.history] == [12, 24, 36]


def test_batches_of_changing_size_are_refused_by_name():
    x, y = _problem()
    batch_list = _batches(x, y)
    batch_list[5] = (x[:3], y[:3])
    with pytest.raises(ValueError, match="batch 5 has x \\(3, 6\\).*same size"):
        _fit(batch_list, batch_size=None)


def test_labels_out_of_range_in_a_late_batch_stop_with_one_message_and_lose_nothing(tmp_path):
    x, y = _problem()
    batch_list = _batches(x, y)
    bad = batch_list[9][1].copy()
    bad[2] = 7
    batch_list[9] = (batch_list[9][0], bad)
    with pytest.raises(ValueError, match=r"batch 9: labels must be in \[0, 4\); got 7"):
        _fit(batch_list, batch_size=None, chunk_steps=2, checkpoint_dir=tmp_path)
    assert os.listdir(tmp_path / "within_epoch"), "the steps trained before it were saved"


def test_a_one_shot_generator_without_steps_per_epoch_is_refused():
    x, y = _problem()
    with pytest.raises(ValueError, match="one-shot iterator"):
        _fit(iter(_batches(x, y)), batch_size=None)


# ----------------------------------------------------------------------------- jnn train --data DIR

_CLI = ["--epochs", "2", "--widths", "16", "--batch-size", "16", "--lr", "1e-2", "--no-progress",
        "--no-plots", "--schedule", "constant"]  # fmt: skip


def _data_dir(folder, n=400):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n + 100, 6)).astype(np.float32)
    y = np.argmax(x[:, :3], 1).astype(np.int64)
    arrays = {"x_train": x[:n], "y_train": y[:n], "x_test": x[n:], "y_test": y[n:]}
    folder.mkdir()
    for name, a in arrays.items():
        np.save(folder / f"{name}.npy", a)
    np.savez(folder.parent / "same.npz", **arrays)
    return folder


def _cli(*argv):
    import contextlib
    import io

    from jnn import cli

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        rc = cli.main(["train", *argv])
    return rc, printed.getvalue()


def test_jnn_train_data_dir_streams_the_files_like_the_same_arrays_in_an_npz(tmp_path):
    import json

    folder = _data_dir(tmp_path / "data")
    rc, printed = _cli("--data", str(folder), "--out", str(tmp_path / "dir"), *_CLI)
    assert rc == 0, printed
    assert re.search(r"checked 0\.00 GiB of memory-mapped data in \d+\.\d s", printed), printed
    rc, _ = _cli("--data", str(tmp_path / "same.npz"), "--out", str(tmp_path / "npz"), *_CLI)
    assert rc == 0
    read = lambda run, f: (tmp_path / run / f).read_text()
    streamed, resident = (json.loads(read(r, "summary.json")) for r in ("dir", "npz"))
    assert streamed["test_loss"] == resident["test_loss"]  # the same parameters
    for a, b in zip(*(read(r, "metrics.jsonl").splitlines() for r in ("dir", "npz")), strict=True):
        np.testing.assert_allclose(json.loads(a)["train_loss"], json.loads(b)["train_loss"], 1e-6)


def test_jnn_train_data_dir_with_a_missing_file_exits_2_in_one_line_and_creates_nothing(
    tmp_path, capsys
):
    folder = _data_dir(tmp_path / "data")
    (folder / "y_test.npy").unlink()
    rc, _ = _cli("--data", str(folder), "--out", str(tmp_path / "run"), *_CLI)
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "has no y_test.npy" in err, err
    assert not (tmp_path / "run").exists()


# ----------------------------------------------------------------------------- ensembles


def _ensemble_fit(data, **kw):
    from jnn import ensemble

    keys = jax.random.split(jax.random.key(5), 2)
    options = dict(epochs=2, batch_size=None, keys=keys, progress=False, chunk_steps=5)
    return keys, ensemble.fit(_MODEL, _LOSS, optim.adam(1e-2), data, **{**options, **kw})


@pytest.mark.parametrize("form", ["iterable", "grain"])
def test_an_ensemble_over_a_stream_gives_every_member_the_same_batches(form):
    from jnn import ensemble

    x, y = _problem()
    data = {"iterable": lambda: _batches(x, y), "grain": lambda: _grain(x, y)}[form]
    keys, res = _ensemble_fit(data(), val_data=(x[:24], y[:24]))
    for k in range(2):
        alone = _fit(data(), batch_size=None, key=keys[k], chunk_steps=5)
        chex.assert_trees_all_close(
            ensemble.member(res.state, k).params, alone.state.params, rtol=1e-5, atol=1e-6
        )
    assert [r["step"] for r in res.history] == [12, 24]
    assert res.history[-1]["val_acc"] is not None


def test_an_ensemble_over_memory_mapped_arrays_keeps_per_member_order_and_bootstrap(mapped):
    from jnn import ensemble

    x, y = _problem()
    kw = dict(batch_size=_B, shuffle="per_member", bootstrap=True)
    keys, streamed = _ensemble_fit(mapped, **kw)
    _, resident = _ensemble_fit((x, y), **kw)
    for k in range(2):
        chex.assert_trees_all_close(
            ensemble.member(streamed.state, k).params,
            ensemble.member(resident.state, k).params,
            rtol=1e-5,
            atol=1e-6,
        )


@pytest.mark.parametrize("option", [{"shuffle": "per_member"}, {"bootstrap": True}])
def test_an_ensemble_over_an_iterable_refuses_per_member_order(option):
    x, y = _problem()
    with pytest.raises(ValueError, match="needs indexable \\(x, y\\) arrays"):
        _ensemble_fit(_batches(x, y), **option)


# ----------------------------------------------------------------------------- a real kill

_SMALL_CHUNKS = 3 * _B * 6 * 4  # CHUNK_BYTES for 3 steps of (8, 6) float32 batches


def test_a_run_killed_inside_its_first_epoch_resumes_from_that_step_and_ends_equal(
    tmp_path, monkeypatch
):
    """SIGTERM to the training process itself (``jnn train --data DIR``, 1 epoch of 90 steps
    in chunks of 3, a checkpoint after every chunk) once an in-epoch checkpoint exists; then
    ``--resume`` and compare with the same run left alone."""
    import json
    import signal
    import subprocess
    import sys
    import time

    folder = _data_dir(tmp_path / "data", n=800)  # 720 train rows: 90 steps
    argv = ["--data", str(folder), *_CLI, "--epochs", "1", "--batch-size", str(_B)]
    out = tmp_path / "killed"
    script = (
        f"import sys, jnn.train._feed as f; f.CHUNK_BYTES = {_SMALL_CHUNKS}; import jnn.cli; "
        "sys.exit(jnn.cli.main(['train', *sys.argv[1:]]))"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script, *argv, "--checkpoint-seconds", "0", "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    within = out / "checkpoint" / "within_epoch"
    deadline = time.monotonic() + 120
    while not (within.is_dir() and any(p.isdigit() for p in os.listdir(within))):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    saved = int(re.search(r"inside an epoch: saved step (\d+)", err).group(1))
    assert 0 < saved < 90, err

    monkeypatch.setattr("jnn.train._feed.CHUNK_BYTES", _SMALL_CHUNKS)
    rc, printed = _cli("--out", str(out), "--resume", "--checkpoint-seconds", "60")
    assert rc == 0, printed
    rc, _ = _cli(*argv, "--out", str(tmp_path / "whole"))
    assert rc == 0
    read = lambda run: json.loads((tmp_path / run / "summary.json").read_text())
    assert read("killed")["test_loss"] == read("whole")["test_loss"]
    steps = [json.loads(r)["step"] for r in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [90]


def test_models_with_xla_convolutions_train_one_call_per_step_on_cpu():
    """jax#12868: on CPU an XLA convolution inside a compiled loop runs many times slower, so
    fit feeds such models one-step chunks (same batches); jnn's im2col Conv keeps its scan."""
    import flax.linen as linen

    from jnn import interop
    from jnn.train import _feed

    class LinenConv(linen.Module):
        @linen.compact
        def __call__(self, x, train=False):
            return linen.Dense(3)(linen.Conv(4, (3,))(x).reshape(x.shape[0], -1))

    shape = (8, 12, 1)
    foreign = interop.from_linen(LinenConv())
    im2col = nn.Serial(nn.Conv(4, 3), nn.Flatten(), nn.Dense(3))
    xla = nn.Serial(nn.Conv(4, 3, lowering="xla"), nn.Flatten(), nn.Dense(3))
    assert _feed.convolves_in_xla(foreign, shape) and _feed.convolves_in_xla(xla, shape)
    assert not _feed.convolves_in_xla(im2col, shape)
    assert not _feed.convolves_in_xla(nn.Serial(nn.Flatten(), nn.Dense(3)), shape)
    x, y = np.zeros((16, 12, 1), np.float32), np.zeros(16, np.int32)
    stream, steps = _feed.per_step_stream(foreign, (x, y), None, shape, None)
    assert isinstance(stream, _feed.ArrayStream) and steps == 1
    assert _feed.per_step_stream(im2col, (x, y), None, shape, None) == (None, None)
    assert _feed.per_step_stream(foreign, (x, y), None, shape, 4) == (None, 4)  # the user's


def _ones_until(limit):
    """A linear unit on all-ones inputs, SGD(1), loss -out: out after step k is 3k (2 weights +
    1 bias), and the loss turns NaN once out > limit (limit 3k - 1: the last finite state is
    step k's)."""

    def loss(out, target):
        del target
        return jnp.where(out[:, 0] > limit, jnp.nan, -out[:, 0])

    return nn.Serial(nn.Dense(1, w_init=init.constant(0.0))), loss


@pytest.mark.parametrize("chunk_steps", [1, 2, 3])
def test_a_streamed_epoch_stops_at_the_first_non_finite_step_wherever_it_falls(chunk_steps):
    """Chunk c + 1 is dispatched before chunk c is read back: a NaN in any chunk (first, middle,
    last of an epoch, or across epochs) still stops at its step with the last finite state."""
    x, y = np.ones((32, 2), np.float32), np.zeros((32,), np.float32)  # 4 steps per epoch
    for bad_step in range(1, 10):
        model, loss = _ones_until(3.0 * bad_step - 1.0)
        kw = dict(epochs=4, batch_size=8, key=jax.random.key(0), progress=False)
        res = train.fit(
            model, loss, optim.sgd(1.0), (x, y), memory_budget=0, chunk_steps=chunk_steps, **kw
        )
        assert res.stopped == "non_finite" and f"step {bad_step}" in res.message, bad_step
        assert int(res.state.step) == bad_step and len(res.history) == bad_step // 4
        np.testing.assert_array_equal(res.state.params["dense_0"]["w"], float(bad_step))


@pytest.mark.parametrize("chunk_steps", [1, 2])
def test_a_streamed_ensemble_freezes_a_diverging_member_as_the_resident_one(chunk_steps):
    """The guarded rerun of the chunk where a member diverges also reruns the chunk already
    dispatched after it: every member ends as in the resident ensemble."""
    x, y = _problem(n=64)
    keys = jax.random.split(jax.random.key(2), 3)
    kw = dict(epochs=3, batch_size=_B, keys=keys, shuffle="shared", progress=False)
    hp = {"learning_rate": [0.05, 1e6, 0.1]}
    fit = lambda **extra: ensemble.fit(
        _MODEL, _LOSS, optim.sgd, (x, y), hyperparams=hp, **kw, **extra
    )
    resident, streamed = fit(), fit(memory_budget=0, chunk_steps=chunk_steps)
    assert list(streamed.alive) == list(resident.alive) == [True, False, True]
    assert streamed.diverged[1]["step"] == resident.diverged[1]["step"]
    chex.assert_trees_all_close(streamed.state.params, resident.state.params, rtol=1e-6)


def _fake_epoch(n, replace_at=None, fail_chunks_at=None, fail_settle_at=None):
    """``pipelined`` over ``n`` chunks whose carry counts them; a log of every call."""
    log = []

    def chunks():
        for c in range(n):
            if c == fail_chunks_at:
                raise ValueError("bad batch")
            yield c, c == n - 1

    def dispatch(carry, chunk, last):
        log.append(("dispatch", chunk, carry))
        return carry + [chunk], None

    def settle(before, chunk, last, new, out):
        log.append(("settle", chunk))
        if chunk == fail_settle_at:
            raise ValueError("settle failed")
        if chunk == replace_at:
            return before + [f"{chunk}*"], None
        return new, None

    return log, lambda: _stream.pipelined(chunks(), [], dispatch, settle)


def test_pipelined_dispatches_ahead_and_reruns_after_a_replaced_chunk():
    log, run = _fake_epoch(3)
    assert run() == ([0, 1, 2], None)
    assert log == [("dispatch", 0, []), ("dispatch", 1, [0]), ("settle", 0),
                   ("dispatch", 2, [0, 1]), ("settle", 1), ("settle", 2)]  # fmt: skip
    log, run = _fake_epoch(3, replace_at=1)
    assert run() == ([0, "1*", 2], None)
    assert ("dispatch", 2, [0, "1*"]) in log  # chunk 2 again, from the replacement


def test_pipelined_settles_the_chunk_in_flight_once_before_an_error_leaves():
    log, run = _fake_epoch(4, fail_chunks_at=2)
    with pytest.raises(ValueError, match="bad batch"):
        run()
    assert [e for e in log if e[0] == "settle"] == [("settle", 0), ("settle", 1)]
    log, run = _fake_epoch(4, fail_settle_at=1)
    with pytest.raises(ValueError, match="settle failed"):
        run()
    assert [e for e in log if e[0] == "settle"] == [("settle", 0), ("settle", 1)]
