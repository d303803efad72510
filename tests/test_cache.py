"""jnn.cache: the persistent compilation cache is used by a second run and survives damage;
generated data sets are cached, checksummed and regenerated when damaged."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from jnn import cache, data

RUN = ["--widths", "8", "--epochs", "2", "--batch-size", "128", "--no-progress", "--no-plots"]


def _train(cache_dir, out, *extra):
    env = {**os.environ, "JNN_CACHE_DIR": str(cache_dir)}
    proc = subprocess.run(
        [sys.executable, "-m", "jnn.cli", "train", *RUN, "--out", str(out), *extra],
        capture_output=True, text=True, timeout=300, env=env, check=False,
    )  # fmt: skip
    return proc


def _entries(folder):
    return sorted(p.name for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("JNN_CACHE_DIR", str(tmp_path / "c"))
    assert cache.cache_dir() == tmp_path / "c"
    monkeypatch.delenv("JNN_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache.cache_dir() == tmp_path / "xdg" / "jnn"


def test_second_run_loads_every_program_from_the_cache_and_damage_is_harmless(tmp_path):
    first = _train(tmp_path / "cache", tmp_path / "a")
    assert first.returncode == 0, first.stderr[-2000:]
    compiled = _entries(tmp_path / "cache" / "xla")
    assert len(compiled) >= 3  # init, the epoch (with validation), evaluation, ...
    second = _train(tmp_path / "cache", tmp_path / "b")
    assert second.returncode == 0, second.stderr[-2000:]
    assert _entries(tmp_path / "cache" / "xla") == compiled  # nothing new had to be compiled
    a = json.loads((tmp_path / "a" / "summary.json").read_text())
    b = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert a["test_loss"] == b["test_loss"]  # the cached programs compute the same thing
    for path in (tmp_path / "cache" / "xla").rglob("*"):
        if path.is_file():
            path.write_bytes(b"garbage" * 3)
    damaged = _train(tmp_path / "cache", tmp_path / "c")
    assert damaged.returncode == 0, damaged.stderr[-2000:]
    c = json.loads((tmp_path / "c" / "summary.json").read_text())
    assert c["test_loss"] == a["test_loss"]


def test_an_unwritable_cache_or_no_cache_never_fails_a_run(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    proc = _train(blocker / "cache", tmp_path / "a")
    assert proc.returncode == 0, proc.stderr[-2000:]
    proc = _train(tmp_path / "unused", tmp_path / "b", "--no-cache")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not (tmp_path / "unused" / "xla").exists()


def test_cached_arrays_are_checksummed_and_regenerated(tmp_path):
    calls = []

    def build():
        calls.append(1)
        return {"x": np.arange(12.0).reshape(3, 4), "y": np.array([0, 1, 2])}

    key = {"version": 1}
    first = cache.cached_arrays("demo", key, build, folder=tmp_path)
    again = cache.cached_arrays("demo", key, build, folder=tmp_path)
    assert len(calls) == 1
    np.testing.assert_array_equal(first["x"], again["x"])
    (path,) = (tmp_path / "data").glob("demo-*.npz")
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    repaired = cache.cached_arrays("demo", key, build, folder=tmp_path)
    assert len(calls) == 2
    np.testing.assert_array_equal(repaired["x"], first["x"])
    cache.cached_arrays("demo", {"version": 2}, build, folder=tmp_path)  # another key: a miss
    assert len(calls) == 3


@pytest.mark.parametrize("loader", [data.load_mnist1d, data.load_digits])
def test_cached_built_in_sets_equal_freshly_generated_ones(loader, monkeypatch, tmp_path):
    monkeypatch.setenv("JNN_CACHE_DIR", str(tmp_path))
    cached, cached_again = loader(), loader()
    fresh = loader(cache=False)
    for name, array in fresh.arrays().items():
        np.testing.assert_array_equal(cached.arrays()[name], array)
        np.testing.assert_array_equal(cached_again.arrays()[name], array)
    assert len(list((tmp_path / "data").glob("*.npz"))) == 1
