"""examples/train_loop.py runs and learns (a short run of the hand-written loop)."""

import importlib.util
import pathlib

EXAMPLE = pathlib.Path(__file__).resolve().parents[1] / "examples" / "train_loop.py"


def test_train_loop_example_learns(capsys):
    spec = importlib.util.spec_from_file_location("train_loop_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    acc = module.main(epochs=2, batch_size=64)
    out = capsys.readouterr().out
    assert "epoch   2" in out and "test accuracy" in out
    assert acc >= 0.90, acc
