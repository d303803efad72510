"""Nothing lost: a killed or interrupted ``jnn train`` resumes exactly, a damaged checkpoint
falls back to the newest intact one, ``fit`` saves on KeyboardInterrupt and re-raises.

The signals are sent to the training process itself (not to a wrapper), once it has printed
the line of a given epoch.
"""

import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import chex
import jax
import numpy as np
import pytest

from jnn import data, losses, nn, optim, train

RUN = [
    "--widths", "16", "--batch-size", "64", "--lr", "1e-2", "--schedule", "constant",
    "--no-progress", "--no-plots",
]  # fmt: skip


def _default_sigint():
    """In the child: SIGINT back to its default, even when the test runs as a background job
    (where the shell makes the job ignore it and children would inherit that)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start(*argv):
    return subprocess.Popen(
        [sys.executable, "-u", "-m", "jnn.cli", "train", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_default_sigint,
    )


def _wait_for_line(proc, prefix, timeout=240):
    """Reads the child's stdout until a line starts with ``prefix``; returns what it read."""
    seen, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        if line.startswith(prefix):
            return "".join(seen)
    proc.kill()
    raise AssertionError(f"never saw {prefix!r}; output:\n{''.join(seen)}{proc.stderr.read()}")


def _finish(proc, timeout=240):
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, out, err


def _records(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _checkpoints(out):
    return sorted(int(p.name) for p in (out / "checkpoint").iterdir() if p.name.isdigit())


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted 6-epoch run every interrupted one must match."""
    out = tmp_path_factory.mktemp("ref") / "run"
    rc, _, err = _finish(_start(*RUN, "--epochs", "6", "--out", str(out)))
    assert rc == 0, err
    return _records(out)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupt_saves_prints_the_resume_command_and_resume_is_exact(tmp_path, reference, sig):
    out = tmp_path / "run"
    # default checkpointing (every 60 s): nothing would be saved by now without the handler
    proc = _start(*RUN, "--epochs", "6", "--out", str(out))
    _wait_for_line(proc, "epoch   2/6")
    proc.send_signal(sig)
    rc, _, err = _finish(proc)
    assert rc == (130 if sig == signal.SIGINT else 143), err
    assert f"resume with: jnn train --out {out} --resume" in err
    saved = _checkpoints(out)
    assert saved and 2 <= saved[-1] < 6
    assert "Traceback" not in err
    rc, stdout, err = _finish(_start("--out", str(out), "--resume"))
    assert rc == 0, err
    assert f"resuming after epoch {saved[-1]}" in stdout
    got = _records(out)
    assert [r["epoch"] for r in got] == [1, 2, 3, 4, 5, 6]  # no repeated epochs
    for a, b in zip(got, reference, strict=True):
        assert a["train_loss"] == b["train_loss"] and a["val_acc"] == b["val_acc"]


# Moments of a real 6-epoch run, each (line to wait for, seconds after it): start-up (no line
# yet), the header (imports done, the first epoch compiling), between epochs, and during the
# final checkpoint write (just after the last epoch's line).
MOMENTS = [
    (signal.SIGTERM, None, 0.5),
    (signal.SIGINT, None, 2.0),
    (signal.SIGINT, "jnn train:", 0.0),
    (signal.SIGTERM, "jnn train:", 0.3),
    (signal.SIGTERM, "epoch   4/6", 0.0),
    (signal.SIGINT, "epoch   6/6", 0.0),
    (signal.SIGTERM, "epoch   6/6", 0.01),
    (signal.SIGTERM, "epoch   6/6", 0.05),
]


@pytest.mark.parametrize(("sig", "line", "delay"), MOMENTS)
def test_a_signal_at_any_moment_exits_cleanly_and_loses_nothing(
    tmp_path, reference, sig, line, delay
):
    out = tmp_path / "run"
    proc = _start(*RUN, "--epochs", "6", "--out", str(out))
    if line is not None:
        _wait_for_line(proc, line)
    time.sleep(delay)
    sent = time.monotonic()
    proc.send_signal(sig)
    rc, _, err = _finish(proc, timeout=60)
    took = time.monotonic() - sent
    assert "Traceback" not in err and "Exception ignored" not in err, err
    assert took < 15, f"took {took:.1f} s to exit"
    if rc == 0:  # the run ended before the signal could land: it must be complete
        assert [r["epoch"] for r in _records(out)] == [1, 2, 3, 4, 5, 6]
        return
    assert rc == (130 if sig == signal.SIGINT else 143), err
    assert len(err.strip().splitlines()) <= 2, err
    if not out.exists() or not _checkpoints(out):
        assert "nothing to save" in err and not out.exists(), err  # nothing half-made left
        return
    saved = _checkpoints(out)[-1]
    assert f"epoch {saved} is saved" in err and f"resume with: jnn train --out {out}" in err
    assert not [p for p in (out / "checkpoint").iterdir() if "tmp" in p.name]
    rc, stdout, err = _finish(_start("--out", str(out), "--resume"))
    assert rc == 0, err
    got = _records(out)
    assert [r["epoch"] for r in got] == [1, 2, 3, 4, 5, 6]
    for a, b in zip(got, reference, strict=True):
        assert a["train_loss"] == b["train_loss"] and a["val_acc"] == b["val_acc"]


def test_a_second_run_on_the_same_folder_is_refused_while_the_first_runs(tmp_path, reference):
    from jnn import cli

    out = tmp_path / "run"
    proc = _start(*RUN, "--epochs", "6", "--checkpoint-every", "1", "--out", str(out))
    _wait_for_line(proc, "epoch   1/6")
    try:
        for extra in ([], ["--resume"], ["--overwrite"]):
            err = io.StringIO()
            with contextlib.redirect_stderr(err):
                assert cli.main(["train", *RUN, "--epochs", "6", "--out", str(out), *extra]) == 2
            assert f"in use by another jnn train run (process {proc.pid})" in err.getvalue()
    finally:
        rc, _, err = _finish(proc)
    assert rc == 0, err
    got = _records(out)  # the first run's, unmixed
    assert [r["train_loss"] for r in got] == [r["train_loss"] for r in reference]


def test_a_lock_left_by_a_dead_process_is_taken_over_with_a_note(tmp_path):
    from jnn.runs._lock import FolderBusy, RunLock

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / ".lock").write_text(f"{dead.pid}\n")
    lock = RunLock.acquire(tmp_path)
    assert lock.note() == (
        f"note: took over the lock {tmp_path / '.lock'} left by process {dead.pid} "
        "(no longer running)"
    )
    with pytest.raises(FolderBusy, match=f"process {os.getpid()}"):
        RunLock.acquire(tmp_path)  # a second open file description is refused too
    lock.release()
    again = RunLock.acquire(tmp_path)
    assert again.note() is None  # a clean release leaves no process id behind
    again.release()


def test_fit_refuses_a_checkpoint_dir_that_is_a_file_before_training(tmp_path):
    ds = data.load_digits()
    model = nn.Serial(nn.Dense(4), nn.Relu(), nn.Dense(10))
    (tmp_path / "file").write_text("not a folder")
    seen = []
    with pytest.raises(ValueError, match="is not a folder"):
        train.fit(
            model,
            losses.softmax_cross_entropy,
            optim.adam(1e-2),
            (ds.x_train, ds.y_train),
            epochs=2,
            batch_size=64,
            key=jax.random.key(0),
            progress=False,
            checkpoint_dir=tmp_path / "file",
            on_epoch=seen.append,
        )
    assert seen == []  # nothing trained


def test_sigkill_after_a_checkpoint_resumes_exactly(tmp_path, reference):
    out = tmp_path / "run"
    proc = _start(*RUN, "--epochs", "6", "--checkpoint-every", "1", "--out", str(out))
    _wait_for_line(proc, "epoch   3/6")
    os.kill(proc.pid, signal.SIGKILL)
    _finish(proc)
    rc, _, err = _finish(_start("--out", str(out), "--resume"))
    assert rc == 0, err
    got = _records(out)
    assert [r["epoch"] for r in got] == [1, 2, 3, 4, 5, 6]
    assert [r["train_loss"] for r in got] == [r["train_loss"] for r in reference]


def test_resume_without_any_checkpoint_says_so(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text(json.dumps({"widths": [16], "epochs": 3}))
    rc, _, err = _finish(_start("--out", str(out), "--resume"))
    assert rc == 2
    assert "has no checkpoint to resume" in err and "Traceback" not in err


# ----------------------------------------------------------------------------- damage


def _damage_truncate(step_dir):
    files = sorted(
        (p for p in step_dir.rglob("*") if p.is_file() and p.stat().st_size > 64),
        key=lambda p: -p.stat().st_size,
    )
    files[0].write_bytes(files[0].read_bytes()[: files[0].stat().st_size // 3])


def _damage_zero(step_dir):
    files = sorted(
        (p for p in step_dir.rglob("*") if p.is_file() and p.stat().st_size > 64),
        key=lambda p: -p.stat().st_size,
    )
    files[0].write_bytes(b"\0" * files[0].stat().st_size)


def _damage_manifest(step_dir):
    for p in step_dir.rglob("*"):
        if p.is_file() and ("manifest" in p.name or p.name.endswith(".ocdbt")):
            p.unlink()


def _damage_metadata(step_dir):
    for p in step_dir.rglob("*"):
        if p.is_file() and "metadata" in p.name:
            p.unlink()


def _damage_flip(step_dir):
    """Flips bytes of the largest array data file (decodes, but to different values)."""
    data_files = [p for p in step_dir.rglob("*") if p.is_file() and p.parent.name == "d"]
    target = max(
        data_files or [p for p in step_dir.rglob("*") if p.is_file()],
        key=lambda p: p.stat().st_size,
    )
    raw = bytearray(target.read_bytes())
    for i in range(len(raw) // 2, len(raw) // 2 + 8):
        raw[i] ^= 0xFF
    target.write_bytes(bytes(raw))


@pytest.fixture(scope="module")
def two_checkpoints(tmp_path_factory):
    """A finished 3-epoch run with checkpoints of epochs 2 and 3."""
    out = tmp_path_factory.mktemp("ck") / "run"
    rc, _, err = _finish(
        _start(*RUN, "--epochs", "3", "--checkpoint-every", "1", "--out", str(out))
    )
    assert rc == 0, err
    assert _checkpoints(out) == [2, 3]
    return out


@pytest.mark.parametrize(
    "damage", [_damage_truncate, _damage_zero, _damage_manifest, _damage_metadata, _damage_flip]
)
def test_a_damaged_newest_checkpoint_falls_back_to_the_intact_one(
    two_checkpoints, tmp_path, damage
):
    out = tmp_path / "run"
    shutil.copytree(two_checkpoints, out)
    damage(out / "checkpoint" / "3")
    # --epochs 4 on a constant schedule: the resume has one more epoch to train
    rc, stdout, err = _finish(_start("--out", str(out), "--resume", "--epochs", "4"))
    assert rc == 0, err[-3000:]
    assert "checkpoint of epoch 3 is damaged" in err
    assert len([line for line in err.splitlines() if "damaged" in line]) == 1
    assert "Traceback" not in err
    assert "resuming after epoch 2" in stdout
    assert [r["epoch"] for r in _records(out)] == [1, 2, 3, 4]


def test_every_checkpoint_damaged_fails_with_a_short_message(two_checkpoints, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(two_checkpoints, out)
    _damage_flip(out / "checkpoint" / "3")
    _damage_truncate(out / "checkpoint" / "2")
    rc, _, err = _finish(_start("--out", str(out), "--resume", "--epochs", "4"))
    assert rc == 2
    assert "no intact checkpoint" in err and "Traceback" not in err
    assert len(err) < 2000


# ----------------------------------------------------------------------------- fit itself


def test_fit_saves_on_keyboard_interrupt_and_reraises(tmp_path):
    ds = data.load_digits()
    model = nn.Serial(nn.Dense(16), nn.Relu(), nn.Dense(10))
    kwargs = dict(
        epochs=4,
        batch_size=64,
        key=jax.random.PRNGKey(3),
        progress=False,
        val_data=(ds.x_val, ds.y_val),
    )
    args = (model, losses.softmax_cross_entropy, optim.adam(1e-2), (ds.x_train, ds.y_train))

    def interrupt_at_2(record):
        if record["epoch"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt) as caught:
        train.fit(*args, checkpoint_dir=tmp_path / "ck", on_epoch=interrupt_at_2, **kwargs)
    assert isinstance(caught.value, train.Interrupted) and caught.value.epoch == 2
    assert sorted(int(p.name) for p in (tmp_path / "ck").iterdir() if p.name.isdigit()) == [2]
    resumed = train.fit(*args, checkpoint_dir=tmp_path / "ck", resume=True, **kwargs)
    full = train.fit(*args, **kwargs)
    chex.assert_trees_all_equal(resumed.state, full.state)
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3, 4]
    np.testing.assert_array_equal(
        [r["train_loss"] for r in resumed.history], [r["train_loss"] for r in full.history]
    )


def test_default_checkpointing_is_by_time(tmp_path):
    """With checkpoint_every=None a checkpoint is written once checkpoint_seconds passed."""
    ds = data.load_digits()
    model = nn.Serial(nn.Dense(8), nn.Relu(), nn.Dense(10))
    args = (model, losses.softmax_cross_entropy, optim.adam(1e-2), (ds.x_train, ds.y_train))
    kwargs = dict(epochs=4, batch_size=64, key=jax.random.key(0), progress=False)
    train.fit(*args, checkpoint_dir=tmp_path / "never", checkpoint_seconds=1e9, **kwargs)
    assert sorted(int(p.name) for p in (tmp_path / "never").iterdir() if p.name.isdigit()) == [4]
    train.fit(*args, checkpoint_dir=tmp_path / "always", checkpoint_seconds=0.0, **kwargs)
    saved = sorted(int(p.name) for p in (tmp_path / "always").iterdir() if p.name.isdigit())
    assert saved == [3, 4]  # every epoch written; the newest two kept


# A program whose XLA compilation takes minutes (500 unrolled matmul + reduction steps: about
# a second to lower, then well over 10 s to compile even on a fast machine), compiled under
# the command's hard-exit signal guard.
_LONG_COMPILATION = """
import jax, jax.numpy as jnp
from jnn import _signals

def f(x):
    body = lambda i, x: jnp.sin(x @ x) + jnp.cos(x).sum() * i
    return jax.lax.fori_loop(0, 500, body, x, unroll=500)

with _signals.guard(hard_exit=True):
    lowered = jax.jit(f).lower(jnp.ones((4, 4)))
    print("compiling", flush=True)
    lowered.compile()
    print("compiled", flush=True)
"""

# A main thread blocked in C with the GIL released, where no signal reaches Python: a second
# lock of a default glibc mutex never returns (futex waits restart after a signal), as a
# compiler or a native library's wait can be. Only the guard's watcher thread can end it.
_STUCK_IN_C = """
import ctypes
from jnn import _signals

libc = ctypes.CDLL(None)
mutex = ctypes.create_string_buffer(64)  # zeroed: PTHREAD_MUTEX_INITIALIZER
with _signals.guard(hard_exit=True):
    libc.pthread_mutex_lock(mutex)
    print("stuck", flush=True)
    libc.pthread_mutex_lock(mutex)  # ctypes releases the GIL; this never returns
    print("unstuck", flush=True)
"""


def _signal_while(script, ready, done, sig):
    """Runs ``script``, sends ``sig`` once it printed ``ready``; returns (rc, stderr) after
    checking that it ended before printing ``done``, without a traceback."""
    proc = subprocess.Popen(
        [sys.executable, "-u", "-c", script],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_default_sigint,
    )
    _wait_for_line(proc, ready, timeout=120)
    time.sleep(0.3)  # inside the long call
    proc.send_signal(sig)
    # The guard's grace with nothing to save is 2 s; a hang runs into this timeout instead.
    rc, out, err = _finish(proc, timeout=30)
    assert done not in out, out  # it ended during the call, not after
    assert "Traceback" not in err and "Exception ignored" not in err, err
    assert f"interrupted by {signal.Signals(sig).name}" in err, err
    return rc


def test_sigterm_during_a_long_compilation_ends_the_process_within_seconds():
    rc = _signal_while(_LONG_COMPILATION, "compiling", "compiled", signal.SIGTERM)
    assert rc == 143


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a glibc mutex")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_main_thread_stuck_in_c_is_ended_by_the_watcher(sig):
    assert _signal_while(_STUCK_IN_C, "stuck", "unstuck", sig) == 128 + sig
