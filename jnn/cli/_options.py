"""Argument types and the option groups of ``jnn train`` / ``jnn check`` (no JAX import).

Every option defaults to "not given" (``argparse.SUPPRESS``) so the command knows which ones
the user typed: ``--resume`` reuses the stored run's options and refuses only those typed
with a different value.
"""

from __future__ import annotations

import argparse
import math

from jnn.runs._config import (
    ACTIVATIONS,
    DATASETS,
    DTYPES,
    INITS,
    LOSSES,
    NORMS,
    OPTIMIZERS,
    OUTPUTS,
    PREPROCESS,
    SCHEDULES,
    TASKS,
    TREES,
)

__all__ = ["add_check_options", "add_train_options"]

S = argparse.SUPPRESS


def positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def nonneg_int(text):
    if text.strip() == "0":
        return 0
    return positive_int(text)


def nonneg_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return value


def positive_float(text):
    value = nonneg_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def unit_interval(text):
    value = nonneg_float(text)
    if value >= 1:
        raise argparse.ArgumentTypeError(f"expected a value in [0, 1), got {text!r}")
    return value


def _comma_list(text, item, what, example=None):
    parts = [p.strip() for p in text.split(",")]
    if not text.strip() or any(not p for p in parts):
        like = f" (like {example})" if example else ""
        raise argparse.ArgumentTypeError(
            f"expected comma-separated {what} with no empty entry{like}, got {text!r}"
        )
    return tuple(item(p) for p in parts)


def widths(text):
    return _comma_list(text, positive_int, "positive integers", "256,256")


def list_of(item, what, example=None):
    """A comma list of ``item`` values: one value, or a sweep (one ensemble member each);
    ``example`` is a valid list shown in the error message."""
    return lambda text: _comma_list(text, item, what, example)


# the --lr and --l2 types of both `jnn train` and `jnn check`
_LR = list_of(positive_float, "learning rates", "1e-3,1e-2")
_L2 = list_of(nonneg_float, "L2 strengths", "0,1e-4")


def _adder(group):
    """``add(flag, help, **kwargs)``: ``group.add_argument`` defaulting to "not given" (``S``)."""

    def add(flag, help=None, **kwargs):
        group.add_argument(flag, help=help, **{"default": S, **kwargs})

    return add


def _data(p, examples):
    add = _adder(p.add_argument_group("data"))
    about = "built-in data set (digits); diabetes is scikit-learn's regression set"
    add("--dataset", about, choices=DATASETS)
    about = (
        "your own data instead of --dataset: arrays x_train, y_train, x_test, y_test (optional "
        "x_val with y_val, and num_classes; without x_val the last 10%% of the training arrays "
        "validate); integer labels in [0, num_classes). A folder DIR holds them as x_train.npy, "
        "y_train.npy, ... : memory-mapped and streamed (for data that do not fit in memory)"
    )
    add("--data", about, metavar="FILE.npz|DIR")
    add("--classes", "number of classes of --dataset many-classes (1000)", type=positive_int)
    about = (
        "classes (one label per example); attributes (several yes/no attributes, one sigmoid "
        "each; on digits: even, five or more, prime, closed loop); regression (L2 loss). Default: "
        "read off the data (float targets: regression; a 2-D 0/1 label array: attributes)"
    )
    add("--task", about, choices=TASKS)
    about = (
        "regression as classification over K quantile bins of the target (K >= 2); reports "
        "RMSE/MAE of the bins' median targets next to a plain regression's"
    )
    add("--bins", about, type=positive_int, metavar="K")
    about = "fitted on the training split only, stored in the run folder (none)"
    add("--preprocess", about, choices=PREPROCESS)
    about = "principal components kept by --preprocess pca/whiten (default: all)"
    add("--pca-dims", about, type=positive_int)
    if examples:
        add("--examples", "number of examples of --dataset many-classes (4096)", type=positive_int)


def _model(g):
    add = _adder(g)
    about = (
        "(mlp) or your own: FUNCTION(input_shape, num_classes) returning a Flax linen/NNX, "
        "Equinox or jnn.nn model (input_shape channels last, e.g. (40, 1))"
    )
    add("--model", about, metavar="{mlp,cnn,FILE.py:FUNCTION,package.module:FUNCTION}")
    about = (
        "hidden widths (MLP) or conv channels (CNN), comma-separated "
        "(default mlp 256,256, cnn 64,64,64; the mnist1d cnn 64,128,256)"
    )
    add("--widths", about, type=widths)
    add("--kernel-size", "CNN kernel size (5)", type=positive_int)
    add("--activation", "(relu)", choices=ACTIVATIONS)
    add("--pieces", "linear pieces per maxout unit (2)", type=positive_int)
    about = "normalisation after each layer (none; instance: CNN only; the mnist1d CNN: batch)"
    add("--norm", about, choices=NORMS)
    about = (
        "drop probability after each hidden layer (MLP, 0.2) or before the classifier (CNN, 0.3; "
        "the mnist1d CNN 0.4); a comma list is a sweep"
    )
    add("--dropout", about, type=list_of(unit_interval, "drop rates", "0.1,0.3"))
    about = (
        "Gaussian noise of std SIGMA added to the inputs in training only (0); a comma list is a "
        "sweep"
    )
    add("--input-noise", about, type=list_of(nonneg_float, "noise levels"), metavar="SIGMA")


def _init_and_output(g):
    add = _adder(g)
    about = (
        "weight initialiser (default: kaiming_normal for ReLU-like, xavier for tanh/sigmoid); "
        "constant (every weight 0.01) and normal (N(0, 0.01^2)) are the notes' pitfalls and "
        "apply to every layer"
    )
    add("--init", about, choices=INITS)
    about = "output layer: softmax (dense) or hsoftmax (hierarchical softmax)"
    add("--output", about, choices=OUTPUTS)
    about = "class tree of --output hsoftmax (balanced; huffman from frequencies)"
    add("--tree", about, choices=TREES)
    add("--dtype", "parameter dtype (float32)", choices=DTYPES)
    about = "seed of initialisation, shuffling and dropout (the data split is fixed)"
    add("--seed", about, type=int)
    add("--batch-size", "(default mlp 128, cnn 64)", type=positive_int)


def _data_and_model(p, examples=True):
    _data(p, examples)
    g = p.add_argument_group("model")
    _model(g)
    _init_and_output(g)


def _optimisation(p):
    g = p.add_argument_group(
        "optimisation (a comma list on --lr, --l2, --l1, --weight-decay, "
        "--dropout, --input-noise, --momentum is a sweep: one ensemble member per value)"
    )
    add = _adder(g)
    add("--optimizer", "(adam)", choices=OPTIMIZERS)
    about = "classification loss: softmax cross-entropy or the multiclass SVM (hinge) loss"
    add("--loss", about, choices=LOSSES)
    add("--lr", "peak learning rate (default 3e-3 adam-like, 0.1 sgd, 0.05 momentum)", type=_LR)
    about = "momentum (momentum, nesterov, rmsprop) or Adam's b1 (0.9)"
    add("--momentum", about, type=list_of(unit_interval, "momentums", "0.9,0.99"))
    about = "decoupled weight decay of adamw (1e-4)"
    add("--weight-decay", about, type=list_of(nonneg_float, "weight decays", "1e-4,1e-3"))
    add("--schedule", "learning-rate schedule over the whole run (cosine)", choices=SCHEDULES)
    add("--warmup", "warm-up length in epochs", type=nonneg_float)
    add("--epochs", "epochs (default mlp 30, cnn 20, the mnist1d cnn 80)", type=positive_int)
    add("--l2", "L2 strength (weights only)", type=_L2)
    add("--l1", "L1 strength (weights only)", type=list_of(nonneg_float, "L1 strengths"))
    about = "max-norm constraint: every unit's incoming weights ||w|| <= C after each update"
    add("--max-norm", about, type=positive_float, metavar="C")
    add("--patience", "early stopping on validation accuracy", type=positive_int)


def _ensembles(p):
    add = _adder(
        p.add_argument_group("ensembles (K members trained in parallel, one compiled program)")
    )
    add("--ensemble", "K seeds (per swept value); 1 trains one model", type=positive_int)
    about = (
        "each member its own minibatch order (per_member, the default: more diverse members) or "
        "all the same minibatches (shared)"
    )
    add("--shuffle", about, choices=("shared", "per_member"))
    about = "each member trains on its own bootstrap resample (bagging)"
    add("--bootstrap", about, action="store_true")
    about = "snapshot ensemble: N cosine cycles, one snapshot per cycle"
    add("--snapshots", about, type=nonneg_int)
    about = "keep an exponential moving average of the params (e.g. 0.999)"
    add("--ema", about, type=unit_interval, metavar="DECAY")


def _scale_out(p):
    add = _adder(p.add_argument_group("devices and hosts"))
    about = "data-parallel over N local devices (default: all; must divide the batch size)"
    add("--devices", about, type=positive_int)
    add("--coordinator", "multi-process run: the coordinator's address", metavar="HOST:PORT")
    add("--num-processes", type=positive_int)
    about = (
        "most time to wait for the coordinator and the other processes (60); a coordinator host "
        "name that does not resolve fails within 10 s"
    )
    add("--coordinator-timeout", about, type=positive_float, metavar="SECONDS")
    add("--process-id", type=int)


def _output(p):
    add = _adder(p.add_argument_group("output"))
    add("--out", "run folder (default runs/DATASET-MODEL-TIME)", metavar="DIR")
    about = "continue the run in --out with its stored options"
    add("--resume", about, action="store_true", default=False)
    add("--overwrite", "replace a run already in --out", action="store_true", default=False)
    about = "--resume even though the --data file changed since the run started"
    add("--allow-changed-data", about, action="store_true", default=False)
    about = "checkpoint every N epochs (default: every 60 s of training)"
    add("--checkpoint-every", about, type=positive_int)
    add("--checkpoint-seconds", "most training time between checkpoints (60)", type=nonneg_float)
    add("--no-progress", "no progress bar", dest="progress", action="store_false")
    add("--no-plots", "skip the PNG plots", dest="plots", action="store_false")
    about = (
        "draw the PNG plots (the default; with --resume, e.g. to draw a finished --no-plots run's "
        "figures: `jnn train --out DIR --resume --plots`)"
    )
    add("--plots", about, dest="plots", action="store_true")
    about = "write no TensorBoard event files"
    add("--no-tensorboard", about, dest="tensorboard", action="store_false")
    about = "no persistent compilation/data cache ($JNN_CACHE_DIR, ~/.cache/jnn)"
    add("--no-cache", about, dest="cache", action="store_false")
    about = "print where the wall time went (also in summary.json)"
    add("--profile", about, action="store_true", default=False)


def add_train_options(p) -> None:
    """Every option of ``jnn train``."""
    _data_and_model(p)
    _optimisation(p)
    _ensembles(p)
    _scale_out(p)
    _output(p)


def add_check_options(p) -> None:
    """The options of ``jnn check``: the model, its optimizer and the overfit set size."""
    _data_and_model(p, examples=False)
    add = _adder(p.add_argument_group("checks"))
    add("--optimizer", "optimizer for overfitting", choices=OPTIMIZERS)
    add("--lr", type=_LR)
    add("--l2", type=_L2)
    about = "size of the set to overfit (20)"
    add("--examples", about, type=positive_int, default=20, dest="check_examples")
    add("--no-cache", dest="cache", action="store_false")
