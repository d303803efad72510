"""examples/ensemble.py runs and shows what it claims: the ensemble is at least as accurate as
its mean member, and the too-large learning rate diverges and is excluded."""

import importlib.util
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_ensemble_example(capsys):
    spec = importlib.util.spec_from_file_location(
        "ensemble_example", ROOT / "examples" / "ensemble.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    seeds, sweep = module.main(epochs=2)
    text = capsys.readouterr().out
    assert "seed ensemble" in text and "learning-rate sweep" in text
    assert seeds["accuracy"] >= seeds["member_mean_accuracy"] - 1e-6 and seeds["accuracy"] > 0.9
    assert "lr 1000" in text and "diverged at step" in text and "excluded" in text
    assert sweep["accuracy"] > 0.8
