"""The README is executable documentation: its quick start is what CI runs, its Python
snippets run as written, and the results they print are the ones the README states."""

import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()

# (what the README says next to the print, regex on the snippets' output, check of the match)
CLAIMS = [
    (
        "4-layer network (3 hidden + output)",
        r"(\d+)-layer network \((\d+) hidden",
        lambda m: m.groups() == ("4", "3"),
    ),
    (
        "# log 10 = 2.303 each",
        r"\[(2\.30\d*) (2\.30\d*)",
        lambda m: abs(float(m[1]) - 2.3026) < 1e-3,
    ),
    ("# Weston-Watkins SVM: 9.0 each", r"\[9\. 9\. 9\. 9\.\]", lambda m: True),
    ("# 0.5 * sum w^2 = 3.0, sum |w| = 6.0", r"^3\.0 6\.0$", lambda m: True),
    ("# ~0.72", r"hsoftmax: test accuracy (0\.\d+)", lambda m: float(m[1]) >= 0.6),
    (
        "nodes per example",
        r"nodes per example: Huffman (\d+\.\d), balanced (\d+\.\d)",
        lambda m: float(m[1]) < float(m[2]),
    ),
    ("# ~0.94", r"from python: test accuracy (0\.\d+)", lambda m: float(m[1]) >= 0.9),
    ("# ~0.97", r"fit: test accuracy (0\.\d+)", lambda m: float(m[1]) >= 0.95),
    (
        "# ~0.98",
        r"ensemble: accuracy (0\.\d+), member mean (0\.\d+)",
        lambda m: float(m[1]) >= 0.95 and float(m[1]) >= float(m[2]) - 1e-6,
    ),
    ("the last one is far too large", r"\[None, None, None, \{'step': \d+", lambda m: True),
    (
        "# ['Dense_0/kernel', 'Dense_1/kernel']",
        r"^\['Dense_0/kernel', 'Dense_1/kernel'\]$",
        lambda m: True,
    ),
    ("# linen ~0.96", r"linen: test accuracy (0\.\d+)", lambda m: float(m[1]) >= 0.9),
    (
        "# nnx ~0.96",
        r"nnx sweep: accuracy (0\.\d+), member mean (0\.\d+)",
        lambda m: float(m[1]) >= 0.9 and float(m[1]) >= float(m[2]) - 1e-6,
    ),
    ("# ['bias', 'weight']", r"^\['bias', 'weight'\]$", lambda m: True),
    ("# equinox ~0.95", r"equinox: test accuracy (0\.\d+)", lambda m: float(m[1]) >= 0.9),
]


def _blocks(lang):
    return re.findall(rf"^```{lang}\n(.*?)^```", README, flags=re.S | re.M)


def test_quick_start_is_exactly_two_commands_and_ci_runs_the_second():
    first = re.search(r"^```\w*\n(.*?)^```", README, flags=re.S | re.M).group(1)
    commands = [ln for ln in first.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    assert len(commands) == 2
    assert commands[0].endswith("jnn train")
    assert "pytest" in commands[1]
    ci = (ROOT / ".ci" / "run").read_text()
    assert "README.md" in ci and "sed -n 2p" in ci


@pytest.fixture(scope="module")
def snippets_output(tmp_path_factory):
    code = "\n\n".join(_blocks("python"))
    assert "jnn.train.fit" in code or "train.fit" in code
    assert "check_grads" in code and "ensemble.fit" in code
    tmp = tmp_path_factory.mktemp("readme")
    script = tmp / "readme_snippets.py"
    script.write_text(code)
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp,
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "MPLBACKEND": "Agg", "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.mark.parametrize(("said", "pattern", "check"), CLAIMS, ids=[c[0][:30] for c in CLAIMS])
def test_snippets_print_what_the_readme_says(snippets_output, said, pattern, check):
    assert said in README, f"the README no longer says {said!r}: update this test's claims"
    match = re.search(pattern, snippets_output, flags=re.M)
    assert match, f"no output matching {pattern!r}:\n{snippets_output[-3000:]}"
    assert check(match), (said, match.group(0))


def test_every_documented_module_is_importable_and_has_all():
    import importlib

    import jnn

    for name in jnn.__all__:
        if name == "__version__":
            continue
        module = importlib.import_module(f"jnn.{name}")
        assert getattr(module, "__all__", None), f"jnn.{name} has no __all__"
        for public in module.__all__:
            assert hasattr(module, public), f"jnn.{name}.{public} is in __all__ but missing"
