"""examples/flax_ensemble.py runs and shows what it claims: a linen CNN ensemble with a
per-member learning-rate sweep learns, each member with its own BatchNorm statistics, and the
ensemble is at least as accurate as its mean member."""

import importlib.util
import pathlib

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_flax_ensemble_example(capsys):
    spec = importlib.util.spec_from_file_location(
        "flax_ensemble_example", ROOT / "examples" / "flax_ensemble.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result, report = module.main(epochs=2, rates=(3e-3, 1e-2), seeds_per_rate=1)
    text = capsys.readouterr().out
    assert "linen CNN ensemble of 2" in text
    assert report["accuracy"] >= report["member_mean_accuracy"] - 1e-6
    assert report["accuracy"] > 0.85, report
    stats = result.state.model_state["batch_stats"]["BatchNorm_0"]["mean"]
    assert stats.shape[0] == 2 and not np.allclose(stats[0], stats[1])  # per member
    kernels = result.state.params["Conv_0"]["kernel"]
    assert not np.allclose(kernels[0], kernels[1])
