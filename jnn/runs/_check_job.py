"""``jnn check`` as a function: the notes' sanity checklist on the configured model."""

from __future__ import annotations

from jnn.runs import _builders
from jnn.runs._config import RunConfig

__all__ = ["check_run"]


def check_run(config: RunConfig, *, examples: int = 20, echo=print):
    """Runs ``jnn.sanity.run_all`` on the configured model and data and prints the report.

    The checks: the initial loss against log C, more regularisation giving a higher loss,
    overfitting ``examples`` training examples, and a ``jnn.gradcheck.check_grads`` gradient
    check of the training objective after a few training steps ("characteristic mode").

    Args:
      config: the run's options (the model, its optimizer and L2 strength are used).
      examples: size of the set to overfit.
      echo: prints a line.

    Returns:
      The ``jnn.sanity.SanityReport``.
    """
    import jax

    if config.cache:
        import jnn.cache

        jnn.cache.enable_compilation_cache()
    import jnn.sanity

    ds = _builders.load_run_data(config)
    tree = (
        _builders.build_tree(config, ds.y_train, ds.num_classes)
        if config.output == "hsoftmax"
        else None
    )
    model = _builders.build_model(config, ds.num_classes, ds.input_shape, tree=tree)
    constant = RunConfig.from_options(**{**config.to_json(), "schedule": "constant", "warmup": 0.0})
    optimizer, _ = _builders.build_optimizer(constant, 1)
    echo(
        f"jnn check: {config.model} {list(config.widths)} on {config.data or config.dataset}, "
        f"{config.optimizer} lr {config.lr[0]:g}"
    )
    l2 = config.l2[0]
    report = jnn.sanity.run_all(
        model,
        _builders.build_loss(config),
        optimizer,
        ds.x_train,
        ds.y_train,
        key=jax.random.key(config.seed),
        n=examples,
        step_options={"l2": l2} if l2 else None,
    )
    echo(str(report))
    echo("all checks passed" if report.ok else "some checks FAILED")
    return report
