"""The README is executable documentation: its quick start is what CI runs, and its Python
snippets run as written."""

import os
import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


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


def test_python_snippets_run(tmp_path):
    code = "\n\n".join(_blocks("python"))
    assert "jnn.train.fit" in code and "check_grads" in code
    script = tmp_path / "readme_snippets.py"
    script.write_text(code)
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "MPLBACKEND": "Agg", "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 0, done.stderr[-3000:]
