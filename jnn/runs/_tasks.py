"""What a run predicts: one class per example, several yes/no attributes, or a regression
target (optionally discretised into quantile bins), and how its test result is measured.

:func:`prepare` turns the loaded data into what the network trains on (attribute labels,
standardised targets, bin labels) and returns a :class:`Task`; :func:`test_metrics` and
:func:`final_line` measure and word the test result of each kind.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import numpy as np

from jnn.runs._config import RunConfig

__all__ = ["Task", "final_line", "prepare", "test_metrics"]

_SPLITS = ("train", "val", "test")


class Task(NamedTuple):
    """What the network's outputs mean.

    Attributes:
      kind: ``"classes"``, ``"attributes"``, ``"regression"`` or ``"bins"`` (a regression
        trained as a classification over quantile bins).
      outputs: the head's width (classes, attributes, targets or bins).
      names: the attributes' names (``"attributes"``; ``a0, a1, ...`` for your own data).
      target_mean, target_std: the training targets' standardisation (``"regression"``).
      bins: the :class:`jnn.data.QuantileBins` (``"bins"``).
      y_test: the test targets as given (``"regression"`` and ``"bins"``).
      regression: the data as a plain regression (``"bins"``: for the side-by-side run).
    """

    kind: str
    outputs: int
    names: tuple = ()
    target_mean: Any = 0.0
    target_std: Any = 1.0
    bins: Any = None
    y_test: Any = None
    regression: Any = None

    @property
    def is_classes(self) -> bool:
        """Class labels with one output per class (accuracy curves, ensembles, patience)."""
        return self.kind in ("classes", "bins")

    def describe(self) -> str:
        """``"10 classes"``, ``"4 attributes"``, ``"regression"``, ``"8 bins of the target"``."""
        return {
            "classes": f"{self.outputs} classes",
            "attributes": f"{self.outputs} attributes",
            "regression": "regression",
            "bins": f"regression as {self.outputs} quantile bins",
        }[self.kind]


def task_kind(config: RunConfig, ds) -> str:
    """The task: ``--task`` when given, else read off the labels (floats: regression; a 2-D
    integer array: attributes); ``--bins`` turns a regression into ``"bins"``."""
    kind = config.task
    if kind is None:
        y = np.asarray(ds.y_train)
        if np.issubdtype(y.dtype, np.floating):
            kind = "regression"
        else:
            kind = "attributes" if y.ndim == 2 else "classes"
    dataclasses.replace(config, task=kind)._check_task()  # the combinations, now it is known
    if kind == "regression" and config.bins is not None:
        return "bins"
    return kind


def _with_targets(ds, targets: dict, outputs: int):
    return ds._replace(**{f"y_{p}": targets[p] for p in _SPLITS}, num_classes=outputs)


def _attributes(config: RunConfig, ds):
    import jnn.data as data

    if config.data is None:
        if config.dataset not in ("digits", "mnist1d"):
            raise ValueError(
                f"--task attributes on --dataset {config.dataset}: attributes are read off "
                "digit labels (digits, mnist1d), or given as a 2-D 0/1 array in --data"
            )
        targets = {p: data.digit_attributes(getattr(ds, f"y_{p}")) for p in _SPLITS}
        names = tuple(data.DIGIT_ATTRIBUTES)
    else:
        targets = {p: data.check_attributes(getattr(ds, f"y_{p}"), f"y_{p}") for p in _SPLITS}
        names = tuple(f"a{i}" for i in range(targets["train"].shape[1]))
    return _with_targets(ds, targets, len(names)), Task("attributes", len(names), names)


def _regression(ds):
    """Targets ``(N, T)`` standardised with the training mean and std (the L2 loss then
    starts near 1 whatever the targets' units); predictions are mapped back."""
    raw = {p: np.asarray(getattr(ds, f"y_{p}"), np.float32) for p in _SPLITS}
    raw = {p: y.reshape(len(y), -1) for p, y in raw.items()}
    mean, std = raw["train"].mean(axis=0), raw["train"].std(axis=0)
    std = np.where(std > 0, std, 1.0).astype(np.float32)
    targets = {p: ((y - mean) / std).astype(np.float32) for p, y in raw.items()}
    outputs = raw["train"].shape[1]
    task = Task("regression", outputs, target_mean=mean, target_std=std, y_test=raw["test"])
    return _with_targets(ds, targets, outputs), task


def _binned(config: RunConfig, ds):
    import jnn.data as data

    regression_ds, regression = _regression(ds)
    if regression.outputs != 1:
        raise ValueError(f"--bins needs one target per example, got {regression.outputs}")
    bins = data.fit_quantile_bins(ds.y_train, config.bins)
    targets = {p: data.to_bins(bins, getattr(ds, f"y_{p}")) for p in _SPLITS}
    task = Task(
        "bins",
        config.bins,
        bins=bins,
        y_test=regression.y_test,
        regression=(regression_ds, regression),
    )
    return _with_targets(ds, targets, config.bins), task


def prepare(config: RunConfig, ds):
    """The data as the network trains on them, and the :class:`Task`.

    Raises:
      ValueError: a task the data cannot pose (attributes on labels that are not 0/1,
        ``--bins`` on class labels, options that need class labels).
    """
    kind = task_kind(config, ds)
    if kind == "classes":
        if ds.num_classes < 2:
            raise ValueError("--task classes needs integer class labels (these are floats)")
        return ds, Task("classes", ds.num_classes)
    if kind == "attributes":
        return _attributes(config, ds)
    if kind == "bins":
        return _binned(config, ds)
    return _regression(ds)


# --------------------------------------------------------------------------- the test result


def predict(model, params, model_state, x):
    """The model's raw outputs on ``x`` in inference mode (host NumPy, float64)."""
    from jnn._compile import one_shot_jit

    forward = one_shot_jit(lambda p, s, x: model.apply(p, s, x, train=False))
    outputs, _ = forward(params, model_state, x)
    return np.asarray(outputs, np.float64)


def regression_errors(y_true, y_pred) -> dict:
    """``{"rmse": sqrt(mean (y - y_hat)^2), "mae": mean |y - y_hat|}`` over every entry."""
    err = np.asarray(y_pred, np.float64).reshape(-1) - np.asarray(y_true, np.float64).reshape(-1)
    return {"rmse": float(np.sqrt(np.mean(err**2))), "mae": float(np.mean(np.abs(err)))}


def attribute_hits(y_true, logits) -> dict:
    """Per-attribute accuracy (``logit > 0`` predicts yes), their mean, and the fraction of
    examples with every attribute right."""
    hits = (np.asarray(logits) > 0) == (np.asarray(y_true) == 1)
    per = hits.mean(axis=0)
    return {
        "attribute_accuracy": per.tolist(),
        "accuracy": float(per.mean()),
        "all_attributes_right": float(hits.all(axis=1).mean()),
    }


def test_metrics(task: Task, model, params, model_state, ds) -> dict:
    """The test result of a task other than ``"classes"``: attribute accuracies, or RMSE and
    MAE in the target's own units."""
    import jnn.data as data

    outputs = predict(model, params, model_state, ds.x_test)
    if task.kind == "attributes":
        hits = attribute_hits(ds.y_test, outputs)
        hits["attribute_accuracy"] = dict(zip(task.names, hits["attribute_accuracy"], strict=True))
        return hits
    if task.kind == "bins":
        labels = outputs.argmax(axis=-1)
        errors = regression_errors(task.y_test, data.from_bins(task.bins, labels))
        return {**errors, "bin_accuracy": float(np.mean(labels == ds.y_test))}
    predictions = outputs * task.target_std + task.target_mean
    return regression_errors(task.y_test, predictions)


def final_line(task: Task, metrics: dict) -> str:
    """The console's last line for the task (the class accuracy line is the run's own)."""
    if task.kind == "attributes":
        return (
            f"test accuracy {100 * metrics['accuracy']:.2f}% (mean over {task.outputs} "
            f"attributes; all attributes right {100 * metrics['all_attributes_right']:.2f}%)"
        )
    return f"test RMSE {metrics['rmse']:.4g} (MAE {metrics['mae']:.4g})"
