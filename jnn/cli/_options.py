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


def _data_and_model(p, examples=True):
    g = p.add_argument_group("data")

    g.add_argument(
        "--dataset",
        choices=DATASETS,
        default=S,
        help="built-in data set (digits); diabetes is scikit-learn's regression set",
    )
    g.add_argument(
        "--data",
        metavar="FILE.npz|DIR",
        default=S,
        help="your own data instead of --dataset: arrays x_train, y_train, x_test, y_test "
        "(optional x_val with y_val, and num_classes; without x_val the last 10%% of the "
        "training arrays validate); integer labels in [0, num_classes). A folder DIR holds "
        "them as x_train.npy, y_train.npy, ... : memory-mapped and streamed (for data that "
        "do not fit in memory)",
    )
    g.add_argument(
        "--classes",
        type=positive_int,
        default=S,
        help="number of classes of --dataset many-classes (1000)",
    )
    g.add_argument(
        "--task",
        choices=TASKS,
        default=S,
        help="classes (one label per example); attributes (several yes/no attributes, one "
        "sigmoid each; on digits: even, five or more, prime, closed loop); regression (L2 "
        "loss). Default: read off the data (float targets: regression; a 2-D 0/1 label "
        "array: attributes)",
    )
    g.add_argument(
        "--bins",
        type=positive_int,
        default=S,
        metavar="K",
        help="regression as classification over K quantile bins of the target (K >= 2); "
        "reports RMSE/MAE of the bins' median targets next to a plain regression's",
    )
    g.add_argument(
        "--preprocess",
        choices=PREPROCESS,
        default=S,
        help="fitted on the training split only, stored in the run folder (none)",
    )
    g.add_argument(
        "--pca-dims",
        type=positive_int,
        default=S,
        help="principal components kept by --preprocess pca/whiten (default: all)",
    )
    if examples:
        g.add_argument(
            "--examples",
            type=positive_int,
            default=S,
            help="number of examples of --dataset many-classes (4096)",
        )
    _model(p)


def _model(p):
    g = p.add_argument_group("model")
    g.add_argument(
        "--model",
        default=S,
        metavar="{mlp,cnn,FILE.py:FUNCTION,package.module:FUNCTION}",
        help="(mlp) or your own: FUNCTION(input_shape, num_classes) returning a Flax linen/NNX, "
        "Equinox or jnn.nn model (input_shape channels last, e.g. (40, 1))",
    )

    g.add_argument(
        "--widths",
        type=widths,
        default=S,
        help="hidden widths (MLP) or conv channels (CNN), comma-separated "
        "(default mlp 256,256, cnn 64,64,64; the mnist1d cnn 64,128,256)",
    )
    g.add_argument("--kernel-size", type=positive_int, default=S, help="CNN kernel size (5)")
    g.add_argument("--activation", choices=ACTIVATIONS, default=S, help="(relu)")
    g.add_argument(
        "--pieces", type=positive_int, default=S, help="linear pieces per maxout unit (2)"
    )
    g.add_argument(
        "--norm",
        choices=NORMS,
        default=S,
        help="normalisation after each layer (none; instance: CNN only; the mnist1d CNN: batch)",
    )
    g.add_argument(
        "--dropout",
        type=list_of(unit_interval, "drop rates", "0.1,0.3"),
        default=S,
        help="drop probability after each hidden layer (MLP, 0.2) or before the "
        "classifier (CNN, 0.3; the mnist1d CNN 0.4); a comma list is a sweep",
    )
    g.add_argument(
        "--input-noise",
        type=list_of(nonneg_float, "noise levels"),
        default=S,
        metavar="SIGMA",
        help="Gaussian noise of std SIGMA added to the inputs in training only (0); a comma "
        "list is a sweep",
    )
    g.add_argument(
        "--init",
        choices=INITS,
        default=S,
        help="weight initialiser (default: kaiming_normal for ReLU-like, xavier for "
        "tanh/sigmoid); constant (every weight 0.01) and normal (N(0, 0.01^2)) are the "
        "notes' pitfalls and apply to every layer",
    )
    g.add_argument(
        "--output",
        choices=OUTPUTS,
        default=S,
        help="output layer: softmax (dense) or hsoftmax (hierarchical softmax)",
    )
    g.add_argument(
        "--tree",
        choices=TREES,
        default=S,
        help="class tree of --output hsoftmax (balanced; huffman from frequencies)",
    )
    g.add_argument("--dtype", choices=DTYPES, default=S, help="parameter dtype (float32)")
    g.add_argument(
        "--seed",
        type=int,
        default=S,
        help="seed of initialisation, shuffling and dropout (the data split is fixed)",
    )
    g.add_argument("--batch-size", type=positive_int, default=S, help="(default mlp 128, cnn 64)")


def _optimisation(p):
    g = p.add_argument_group(
        "optimisation (a comma list on --lr, --l2, --l1, --weight-decay, "
        "--dropout, --input-noise, --momentum is a sweep: one ensemble member per value)"
    )
    g.add_argument("--optimizer", choices=OPTIMIZERS, default=S, help="(adam)")
    g.add_argument(
        "--loss",
        choices=LOSSES,
        default=S,
        help="classification loss: softmax cross-entropy or the multiclass SVM (hinge) loss",
    )
    g.add_argument(
        "--lr",
        type=list_of(positive_float, "learning rates", "1e-3,1e-2"),
        default=S,
        help="peak learning rate (default 3e-3 adam-like, 0.1 sgd, 0.05 momentum)",
    )
    g.add_argument(
        "--momentum",
        type=list_of(unit_interval, "momentums", "0.9,0.99"),
        default=S,
        help="momentum (momentum, nesterov, rmsprop) or Adam's b1 (0.9)",
    )
    g.add_argument(
        "--weight-decay",
        type=list_of(nonneg_float, "weight decays", "1e-4,1e-3"),
        default=S,
        help="decoupled weight decay of adamw (1e-4)",
    )
    g.add_argument(
        "--schedule",
        choices=SCHEDULES,
        default=S,
        help="learning-rate schedule over the whole run (cosine)",
    )
    g.add_argument("--warmup", type=nonneg_float, default=S, help="warm-up length in epochs")
    g.add_argument(
        "--epochs",
        type=positive_int,
        default=S,
        help="epochs (default mlp 30, cnn 20, the mnist1d cnn 80)",
    )
    g.add_argument(
        "--l2",
        type=list_of(nonneg_float, "L2 strengths", "0,1e-4"),
        default=S,
        help="L2 strength (weights only)",
    )
    g.add_argument(
        "--l1",
        type=list_of(nonneg_float, "L1 strengths"),
        default=S,
        help="L1 strength (weights only)",
    )
    g.add_argument(
        "--max-norm",
        type=positive_float,
        default=S,
        metavar="C",
        help="max-norm constraint: every unit's incoming weights ||w|| <= C after each update",
    )
    g.add_argument(
        "--patience", type=positive_int, default=S, help="early stopping on validation accuracy"
    )


def _ensembles(p):
    g = p.add_argument_group("ensembles (K members trained in parallel, one compiled program)")
    g.add_argument(
        "--ensemble",
        type=positive_int,
        default=S,
        help="K seeds (per swept value); 1 trains one model",
    )
    g.add_argument(
        "--shuffle",
        choices=("shared", "per_member"),
        default=S,
        help="each member its own minibatch order (per_member, the default: more diverse "
        "members) or all the same minibatches (shared)",
    )
    g.add_argument(
        "--bootstrap",
        action="store_true",
        default=S,
        help="each member trains on its own bootstrap resample (bagging)",
    )
    g.add_argument(
        "--snapshots",
        type=nonneg_int,
        default=S,
        help="snapshot ensemble: N cosine cycles, one snapshot per cycle",
    )
    g.add_argument(
        "--ema",
        type=unit_interval,
        default=S,
        metavar="DECAY",
        help="keep an exponential moving average of the params (e.g. 0.999)",
    )


def _scale_out(p):
    g = p.add_argument_group("devices and hosts")
    g.add_argument(
        "--devices",
        type=positive_int,
        default=S,
        help="data-parallel over N local devices (default: all; must divide the batch size)",
    )
    g.add_argument(
        "--coordinator",
        metavar="HOST:PORT",
        default=S,
        help="multi-process run: the coordinator's address",
    )
    g.add_argument("--num-processes", type=positive_int, default=S)
    g.add_argument(
        "--coordinator-timeout",
        type=positive_float,
        default=S,
        metavar="SECONDS",
        help="most time to wait for the coordinator and the other processes (60); a "
        "coordinator host name that does not resolve fails within 10 s",
    )
    g.add_argument("--process-id", type=int, default=S)


def _output(p):
    o = p.add_argument_group("output")
    o.add_argument(
        "--out", metavar="DIR", default=S, help="run folder (default runs/DATASET-MODEL-TIME)"
    )
    o.add_argument(
        "--resume", action="store_true", help="continue the run in --out with its stored options"
    )
    o.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    o.add_argument(
        "--allow-changed-data",
        action="store_true",
        help="--resume even though the --data file changed since the run started",
    )
    o.add_argument(
        "--checkpoint-every",
        type=positive_int,
        default=S,
        help="checkpoint every N epochs (default: every 60 s of training)",
    )
    o.add_argument(
        "--checkpoint-seconds",
        type=nonneg_float,
        default=S,
        help="most training time between checkpoints (60)",
    )
    o.add_argument(
        "--no-progress", dest="progress", action="store_false", default=S, help="no progress bar"
    )
    o.add_argument(
        "--no-plots", dest="plots", action="store_false", default=S, help="skip the PNG plots"
    )
    o.add_argument(
        "--plots",
        dest="plots",
        action="store_true",
        default=S,
        help="draw the PNG plots (the default; with --resume, e.g. to draw a finished "
        "--no-plots run's figures: `jnn train --out DIR --resume --plots`)",
    )
    o.add_argument(
        "--no-tensorboard",
        dest="tensorboard",
        action="store_false",
        default=S,
        help="write no TensorBoard event files",
    )
    o.add_argument(
        "--no-cache",
        dest="cache",
        action="store_false",
        default=S,
        help="no persistent compilation/data cache ($JNN_CACHE_DIR, ~/.cache/jnn)",
    )
    o.add_argument(
        "--profile",
        action="store_true",
        help="print where the wall time went (also in summary.json)",
    )


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
    g = p.add_argument_group("checks")
    g.add_argument("--optimizer", choices=OPTIMIZERS, default=S, help="optimizer for overfitting")
    g.add_argument("--lr", type=list_of(positive_float, "learning rates", "1e-3,1e-2"), default=S)
    g.add_argument("--l2", type=list_of(nonneg_float, "L2 strengths", "0,1e-4"), default=S)
    g.add_argument(
        "--examples",
        type=positive_int,
        default=20,
        dest="check_examples",
        help="size of the set to overfit (20)",
    )
    g.add_argument("--no-cache", dest="cache", action="store_false", default=S)
