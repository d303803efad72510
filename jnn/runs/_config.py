"""``RunConfig``: every option of a ``jnn train`` run, defaults filled and checked, frozen.

Built once (from the command line or from Python), written to ``config.json``, compared on
``--resume``. Hyperparameters that an ensemble may sweep (``lr``, ``l2``, ``weight_decay``,
``dropout``, ``momentum``) are tuples: one value trains one model, several values train one
ensemble member per combination (times ``ensemble`` seeds each).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
from pathlib import Path

__all__ = ["RUN_DEFINING", "RunConfig", "SWEEPABLE"]

from jnn.runs._user_model import (
    absolute_spec,
    check_user_options,
    is_user_model,
    resolve,
    stored_options,
)

DATASETS = ("digits", "mnist1d", "many-classes", "diabetes")
MODELS = ("mlp", "cnn")
ACTIVATIONS = ("relu", "leaky_relu", "tanh", "sigmoid", "elu", "selu", "gelu", "swish", "maxout")
NORMS = ("none", "batch", "layer", "instance")
INITS = (
    "default",
    "lecun_normal",
    "xavier_normal",
    "xavier_uniform",
    "kaiming_normal",
    "kaiming_uniform",
    "constant",
    "normal",
)
OPTIMIZERS = ("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamw", "nadam")
SCHEDULES = (
    "constant",
    "cosine",
    "warmup-cosine",
    "step",
    "exponential",
    "inverse-sqrt",
    "linear",
)
LOSSES = ("cross-entropy", "svm")
TASKS = ("classes", "attributes", "regression")
PREPROCESS = ("none", "standardize", "pca", "whiten")
OUTPUTS = ("softmax", "hsoftmax")
TREES = ("balanced", "huffman")
DTYPES = ("float32", "bfloat16", "float16", "float64")
# The task a built-in data set poses (--data: read off its labels when loaded).
_DATASET_TASKS = {"digits": "classes", "mnist1d": "classes", "many-classes": "classes"}
_DATASET_TASKS["diabetes"] = "regression"
SWEEPABLE = ("lr", "l2", "l1", "weight_decay", "dropout", "input_noise", "momentum")
# Schedules whose shape does not depend on the total number of steps: only these runs may
# be extended with a larger --epochs on --resume (a cosine run would change its curve).
OPEN_ENDED_SCHEDULES = ("constant", "inverse-sqrt")

_DEFAULT_WIDTHS = {"mlp": (256, 256), "cnn": (64, 64, 64)}
_DEFAULT_LR = {"sgd": 0.1, "momentum": 0.05, "nesterov": 0.05, "adagrad": 0.05, "rmsprop": 1e-3}
_DEFAULT_DROPOUT = {"mlp": 0.2, "cnn": 0.3}
# momentum / nesterov SGD: the momentum; the Adam family: b1.
_DEFAULT_MOMENTUM = {k: (0.9,) for k in ("momentum", "nesterov", "adam", "adamw", "nadam")}
_DEFAULT_WEIGHT_DECAY = {"adamw": (1e-4,)}
_DEFAULT_EPOCHS = {"mlp": 30, "cnn": 20}
_DEFAULT_BATCH = {"mlp": 128, "cnn": 64}
# The built-in MNIST-1D CNN follows the notes: a larger model, regularised (batch norm,
# dropout), trained longer (BENCHMARKS.md section 1: input noise did not help here).
_MNIST1D_CNN = {
    "widths": (64, 128, 256),
    "norm": "batch",
    "dropout": (0.4,),
    "epochs": 80,
}
_CHOICES = {
    "dataset": DATASETS,
    "model": MODELS,
    "activation": ACTIVATIONS,
    "norm": NORMS,
    "init": INITS,
    "optimizer": OPTIMIZERS,
    "schedule": SCHEDULES,
    "output": OUTPUTS,
    "tree": TREES,
    "dtype": DTYPES,
    "loss": LOSSES,
    "task": TASKS,
    "preprocess": PREPROCESS,
}


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """The options of one run (see ``jnn train --help`` for each).

    ``None`` means "the default for this model/optimizer"; :meth:`filled` resolves those.
    """

    # data (``dataset`` is ``None`` when ``data`` names a file)
    dataset: str | None = "digits"
    data: str | None = None
    classes: int = 1000
    examples: int = 4096
    task: str | None = None
    bins: int | None = None
    preprocess: str = "none"
    pca_dims: int | None = None
    # model
    model: str = "mlp"
    widths: tuple | None = None
    kernel_size: int = 5
    activation: str = "relu"
    pieces: int = 2
    norm: str | None = None
    dropout: tuple | None = None
    input_noise: tuple | None = None
    init: str = "default"
    output: str = "softmax"
    tree: str = "balanced"
    dtype: str = "float32"
    # optimisation
    optimizer: str = "adam"
    lr: tuple | None = None
    momentum: tuple | None = None
    weight_decay: tuple | None = None
    schedule: str = "cosine"
    warmup: float = 0.0
    epochs: int | None = None
    batch_size: int | None = None
    l2: tuple = (0.0,)
    l1: tuple = (0.0,)
    max_norm: float | None = None
    loss: str = "cross-entropy"
    patience: int | None = None
    seed: int = 0
    # ensembles
    ensemble: int = 1
    shuffle: str = "per_member"
    bootstrap: bool = False
    snapshots: int = 0
    ema: float | None = None
    # devices and hosts
    devices: int | None = None
    coordinator: str | None = None
    num_processes: int | None = None
    process_id: int | None = None
    coordinator_timeout: float = 60.0
    # output
    out: str | None = None
    checkpoint_every: int | None = None
    checkpoint_seconds: float = 60.0
    progress: bool = True
    plots: bool = True
    cache: bool = True
    tensorboard: bool = True

    # ------------------------------------------------------------------ building

    @classmethod
    def from_options(cls, **options) -> RunConfig:
        """A config from keyword options (unknown names refused), defaults filled, checked."""
        unknown = sorted(set(options) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"unknown run options {unknown}")
        options = {
            k: _as_tuple(v) if k in SWEEPABLE or k == "widths" else v for k, v in options.items()
        }
        if is_user_model(options.get("model")):
            check_user_options(options)
            options["model"] = absolute_spec(options["model"])
        return cls(**_data_source(options)).filled()

    def filled(self) -> RunConfig:
        """Resolves the model- and optimizer-dependent defaults (and makes ``data`` an
        absolute path, so a run resumes from any directory), then checks everything."""
        init = self.init
        if init == "default":
            init = "xavier_normal" if self.activation in ("tanh", "sigmoid") else "kaiming_normal"
        if self.activation == "selu" and init == "kaiming_normal":
            init = "lecun_normal"
        tuned = self._tuned_defaults()
        done = dataclasses.replace(
            self,
            widths=_default(
                self.widths, tuned.get("widths", _DEFAULT_WIDTHS.get(self.model, (1,)))
            ),  # (1,): unused by a user model
            lr=_default(self.lr, (_DEFAULT_LR.get(self.optimizer, 3e-3),)),
            dropout=self.dropout
            if self.dropout is not None or is_user_model(self.model)  # a user's: in its code
            else tuned.get("dropout", (_DEFAULT_DROPOUT.get(self.model, 0.0),)),
            norm=_default(self.norm, tuned.get("norm", "none")),
            input_noise=_default(self.input_noise, tuned.get("input_noise", (0.0,))),
            task=_default(self.task, _DATASET_TASKS.get(self.dataset) if not self.data else None),
            momentum=_default(self.momentum, _DEFAULT_MOMENTUM.get(self.optimizer)),
            weight_decay=_default(self.weight_decay, _DEFAULT_WEIGHT_DECAY.get(self.optimizer)),
            epochs=_default(self.epochs, tuned.get("epochs", _DEFAULT_EPOCHS.get(self.model, 30))),
            batch_size=_default(self.batch_size, _DEFAULT_BATCH.get(self.model, 128)),
            init=init,
            data=os.path.abspath(self.data) if isinstance(self.data, str) else self.data,
        )
        done.check()
        return done

    def _tuned_defaults(self) -> dict:
        """The defaults of the built-in MNIST-1D CNN (``{}`` for every other run)."""
        if self.model == "cnn" and self.dataset == "mnist1d" and not self.data:
            return _MNIST1D_CNN
        return {}

    # ------------------------------------------------------------------ checks

    def check(self) -> None:
        """Raises ``ValueError`` naming the first option that is out of range."""
        for name, choices in _CHOICES.items():
            if name == "dataset" and self.data is not None:
                continue  # a --data run has no built-in data set (recorded as null)
            if name == "model" and is_user_model(self.model):
                resolve(self.model)  # a spec that names nothing fails here, before any folder
                continue
            if name == "task" and self.task is None:  # --data: read off the labels
                continue
            if getattr(self, name) not in choices:
                own = " or FILE.py:FUNCTION / package.module:FUNCTION" if name == "model" else ""
                raise ValueError(
                    f"--{_flag(name)} must be one of {choices}{own}, got {getattr(self, name)!r}"
                )
        _positive_ints(
            self, ("classes", "examples", "kernel_size", "epochs", "batch_size", "ensemble")
        )
        _positive_ints(
            self, ("patience", "checkpoint_every", "devices", "num_processes"), optional=True
        )
        if not isinstance(self.seed, int) or not -(2**63) <= self.seed < 2**63:
            raise ValueError(
                f"--seed must be a 64-bit integer, in [-2**63, 2**63), got {self.seed!r}"
            )
        if not self.widths or any(not isinstance(w, int) or w <= 0 for w in self.widths):
            raise ValueError(f"--widths must be positive integers, got {self.widths}")
        _in_range("lr", self.lr, 0.0, math.inf, low_open=True)
        _in_range("l2", self.l2, 0.0, math.inf)
        _in_range("dropout", self.dropout, 0.0, 1.0, high_open=True)
        _in_range("momentum", self.momentum, 0.0, 1.0, high_open=True)
        _in_range("weight_decay", self.weight_decay, 0.0, math.inf)
        _in_range("l1", self.l1, 0.0, math.inf)
        _in_range("input_noise", self.input_noise, 0.0, math.inf)
        _positive_ints(self, ("pieces",))
        _positive_ints(self, ("pca_dims", "bins"), optional=True)
        if self.max_norm is not None:
            _in_range("max_norm", (self.max_norm,), 0.0, math.inf, low_open=True)
        self._check_combinations()
        self._check_model_options()
        self._check_task()

    def _check_combinations(self) -> None:
        if self.momentum is not None and self.optimizer in ("sgd", "adagrad"):
            raise ValueError(
                f"--momentum does not apply to --optimizer {self.optimizer} (use momentum, "
                "nesterov, rmsprop or the adam family, where it is Adam's b1)"
            )
        if self.weight_decay is not None and self.optimizer != "adamw":
            raise ValueError("--weight-decay applies to --optimizer adamw (use --l2 otherwise)")
        if not (0.0 <= self.warmup < self.epochs):
            raise ValueError(
                f"--warmup {self.warmup} epochs must be in [0, --epochs {self.epochs})"
            )
        if self.shuffle not in ("shared", "per_member"):
            raise ValueError(f"shuffle must be 'shared' or 'per_member', got {self.shuffle!r}")
        if self.snapshots < 0 or (self.snapshots and self.epochs % self.snapshots):
            raise ValueError(
                f"--snapshots {self.snapshots} must divide --epochs {self.epochs} (one cosine "
                "cycle per snapshot)"
            )
        if self.ema is not None and not 0.0 < self.ema < 1.0:
            raise ValueError(f"--ema decay must be in (0, 1), got {self.ema}")
        if not self.coordinator_timeout > 0:
            raise ValueError(
                f"--coordinator-timeout must be > 0 seconds, got {self.coordinator_timeout}"
            )
        if self.checkpoint_seconds < 0:
            raise ValueError(f"--checkpoint-seconds must be >= 0, got {self.checkpoint_seconds}")
        if self.norm == "batch" and self.batch_size == 1:
            raise ValueError(
                "--norm batch needs --batch-size >= 2: BatchNorm over one example normalises "
                "every output to 0 (use --norm layer, or a larger batch)"
            )
        if self.output == "hsoftmax" and self.model not in MODELS:
            raise ValueError("--output hsoftmax needs --model mlp or cnn")

    def _check_model_options(self) -> None:
        if self.activation == "maxout" and self.model != "mlp":
            raise ValueError("--activation maxout needs --model mlp (Maxout replaces Dense+act)")
        if self.norm == "instance" and self.model != "cnn":
            raise ValueError(
                "--norm instance needs --model cnn: it normalises each channel over the "
                "spatial positions, which flat MLP features do not have"
            )
        if self.preprocess in ("pca", "whiten") and self.model != "mlp":
            raise ValueError(f"--preprocess {self.preprocess} gives flat features: use --model mlp")
        if self.pca_dims is not None and self.preprocess not in ("pca", "whiten"):
            raise ValueError("--pca-dims applies to --preprocess pca or whiten")

    def _check_task(self) -> None:
        if self.bins is not None and self.bins < 2:
            raise ValueError(f"--bins must be >= 2, got {self.bins} (one bin predicts a constant)")
        if self.task in ("classes", "attributes") and self.bins is not None:
            raise ValueError(f"--bins discretises a regression target; the task is {self.task}")
        classes = self.task == "classes" or self.bins is not None
        if self.task is not None and not classes:
            if self.loss != "cross-entropy":
                raise ValueError(f"--loss {self.loss} needs class labels (the task is {self.task})")
            if self.output != "softmax":
                raise ValueError(f"--output {self.output} needs class labels (task {self.task})")
            if self.patience is not None:
                raise ValueError(
                    "--patience stops on validation accuracy, which needs class labels "
                    f"(the task is {self.task})"
                )
        if (
            self.num_members > 1
            and self.task not in (None, "classes")
            or self.bins
            and (self.num_members > 1)
        ):
            what = f"--bins {self.bins}" if self.bins else f"the task is {self.task}"
            raise ValueError(f"--ensemble and sweeps train class labels only ({what})")
        if self.loss == "svm" and self.output != "softmax":
            raise ValueError("--loss svm scores every class: use --output softmax")

    # ------------------------------------------------------------------ ensembles

    @property
    def sweep(self) -> dict:
        """The swept hyperparameters: ``{name: values}`` for every option with 2+ values."""
        return {k: getattr(self, k) for k in SWEEPABLE if len(getattr(self, k) or ()) > 1}

    def members(self) -> list[dict]:
        """One dict per ensemble member: its seed index and hyperparameter values
        (the grid of every swept option, times ``ensemble`` seeds)."""
        names = [k for k in SWEEPABLE if getattr(self, k) is not None]
        grid = itertools.product(*(getattr(self, k) for k in names))
        combos = [dict(zip(names, values, strict=True)) for values in grid]
        return [{"seed": s, **c} for c in combos for s in range(self.ensemble)]

    @property
    def num_members(self) -> int:
        return len(self.members())

    # ------------------------------------------------------------------ persistence

    def to_json(self) -> dict:
        return {
            k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()
        }

    @classmethod
    def from_json(cls, stored: dict) -> RunConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        stored = {k: v for k, v in stored.items() if k in known}
        if stored.get("data") is not None:  # older folders stored the unused default dataset
            stored["dataset"] = None
        return cls.from_options(**stored_options(stored))

    def save(self, path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=2) + "\n")

    def resumed(self, explicit: dict) -> RunConfig:
        """This (stored) config continued with the options given again on ``--resume``.

        Every explicitly given option must equal the stored one, except ``epochs``, which may
        be raised to train longer when the schedule does not depend on the total
        (``constant``, ``inverse-sqrt``); output-only options (``out``, ``progress``,
        ``plots``, ``cache``, ``checkpoint_*``) may change freely.

        Raises:
          ValueError: listing every option that differs.
        """
        candidate = RunConfig.from_options(**{**self._given(), **explicit})
        diff = [k for k in RUN_DEFINING if getattr(candidate, k) != getattr(self, k)]
        if "epochs" in diff and self._may_extend(candidate):
            diff.remove("epochs")
        if diff:
            raise ValueError(
                "--resume with different options than the stored run: "
                + ", ".join(
                    f"--{_flag(k)} {_show(getattr(self, k))} -> {_show(getattr(candidate, k))}"
                    for k in diff
                )
                + _epochs_hint(self, candidate, diff)
            )
        return candidate

    def _given(self) -> dict:
        return stored_options(dataclasses.asdict(self))

    def _may_extend(self, candidate) -> bool:
        return candidate.epochs > self.epochs and self.schedule in OPEN_ENDED_SCHEDULES


RUN_DEFINING = tuple(
    f.name
    for f in dataclasses.fields(RunConfig)
    if f.name
    not in (
        "out",
        "checkpoint_every",
        "checkpoint_seconds",
        "progress",
        "plots",
        "cache",
        "tensorboard",
        "devices",
        "coordinator",
        "num_processes",
        "process_id",
        "coordinator_timeout",
    )
)


def _data_source(options: dict) -> dict:
    """A ``data`` file replaces the built-in data set: ``dataset`` is recorded as ``None``
    (``"dataset": null`` in ``config.json``), and naming both is refused."""
    if options.get("data") is None:
        return options
    if options.get("dataset") is not None:
        raise ValueError(
            f"--data {options['data']} and --dataset {options['dataset']} name two data "
            "sources; give one"
        )
    return {**options, "dataset": None}


def _epochs_hint(stored, candidate, diff) -> str:
    if "epochs" not in diff:
        return ""
    if candidate.epochs > stored.epochs:
        return (
            f" (a --schedule {stored.schedule} run cannot be extended: its curve depends on the "
            "total number of epochs; only constant and inverse-sqrt runs can)"
        )
    return " (--epochs can only be raised)"


def _default(value, default):
    """``value`` unless it was not given (``None``)."""
    return default if value is None else value


def _flag(name: str) -> str:
    return name.replace("_", "-")


def _show(value) -> str:
    if isinstance(value, tuple):
        return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
    return str(value)


def _as_tuple(value):
    if value is None or isinstance(value, tuple):
        return value
    if isinstance(value, (list, range)):
        return tuple(value)
    return (value,)


def _positive_ints(config, names, optional=False) -> None:
    for name in names:
        value = getattr(config, name)
        if optional and value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"--{_flag(name)} must be a positive integer, got {value!r}")


def _in_range(name, values, low, high, low_open=False, high_open=False) -> None:
    for v in values or ():
        ok = isinstance(v, (int, float)) and math.isfinite(v) if high == math.inf else True
        ok = ok and (v > low if low_open else v >= low) and (v < high if high_open else v <= high)
        if not ok:
            lo, hi = "(" if low_open else "[", ")" if high_open else "]"
            raise ValueError(
                f"--{_flag(name)} values must be in {lo}{low:g}, {high:g}{hi}, got {v!r}"
            )
