"""Runs examples/optax_pipeline.py: jnn optimizers inside Optax pipelines match Optax's."""

import pathlib
import runpy

import jax.numpy as jnp

EXAMPLE = pathlib.Path(__file__).resolve().parents[1] / "examples" / "optax_pipeline.py"


def test_example_runs_and_matches_optax(capsys):
    module = runpy.run_path(str(EXAMPLE), run_name="example")
    results = module["main"]()
    assert set(results) == {
        "chain(clip_by_global_norm, adam)",
        "MultiSteps(sgd + momentum, 4)",
        "multi_transform(adam | sgd)",
        "nnx.Optimizer(model, adam)",
    }
    start = float(module["loss"](module["init_params"]()))
    for name, (ours, ref, gap) in results.items():
        assert gap < 1e-5, name  # same parameters as the all-Optax pipeline
        assert abs(ours - ref) <= 1e-5 * max(1.0, abs(ref)), name
        assert jnp.isfinite(ours)
    for name in list(results)[:3]:
        assert results[name][0] < 0.5 * start, name  # and it actually trains
    assert "max |dparam|" in capsys.readouterr().out
