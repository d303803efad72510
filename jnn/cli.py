"""The ``jnn`` command: ``jnn train`` (train on a built-in data set, write a run folder)
and ``jnn check`` (sanity checks and a gradient check on the configured model).

JAX and the other jnn modules are imported inside the command functions, so that
``jnn --help`` answers without paying for them.
"""

import argparse
import json
import math
import sys
import time
from pathlib import Path

DATASETS = ("digits", "mnist1d")
MODELS = ("mlp", "cnn")
ACTIVATIONS = {
    "relu": "Relu",
    "leaky_relu": "LeakyRelu",
    "tanh": "Tanh",
    "sigmoid": "Sigmoid",
    "elu": "Elu",
    "selu": "Selu",
    "gelu": "Gelu",
    "swish": "Swish",
}
NORMS = ("none", "batch", "layer")
INITS = (
    "default",
    "lecun_normal",
    "xavier_normal",
    "xavier_uniform",
    "kaiming_normal",
    "kaiming_uniform",
)
OPTIMIZERS = ("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamw", "nadam")
SCHEDULES = ("constant", "cosine", "warmup-cosine", "step", "exponential", "inverse-sqrt")
DEFAULT_WIDTHS = {"mlp": "256,256", "cnn": "64,64,64"}
DEFAULT_LR = {"sgd": 0.1, "momentum": 0.05, "nesterov": 0.05, "adagrad": 0.05, "rmsprop": 1e-3}
DEFAULT_DROPOUT = {"mlp": 0.2, "cnn": 0.3}
DEFAULT_EPOCHS = {"mlp": 30, "cnn": 20}
DEFAULT_BATCH = {"mlp": 128, "cnn": 64}

# Options that define the run; a --resume must agree with the stored config on these.
_RUN_KEYS = (
    "dataset",
    "data",
    "model",
    "widths",
    "kernel_size",
    "activation",
    "norm",
    "dropout",
    "init",
    "optimizer",
    "lr",
    "schedule",
    "warmup",
    "batch_size",
    "l2",
    "seed",
)


class UsageError(Exception):
    """Bad input found before training; printed as ``jnn: error: ...`` with exit code 2."""


# --------------------------------------------------------------------------- parsing


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _nonneg_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return value


def _positive_float(text):
    value = _nonneg_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def _rate(text):
    value = _nonneg_float(text)
    if value >= 1:
        raise argparse.ArgumentTypeError(f"expected a drop probability in [0, 1), got {text!r}")
    return value


def _widths(text):
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated widths like 256,256, got {text!r}"
        )
    widths = []
    for part in parts:
        try:
            width = int(part)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected comma-separated positive integers like 256,256, got {text!r}"
            ) from None
        if width <= 0:
            raise argparse.ArgumentTypeError(
                f"widths must be positive integers, got {width} in {text!r}"
            )
        widths.append(width)
    return tuple(widths)


def _add_model_options(p):
    g = p.add_argument_group("data and model")
    g.add_argument("--dataset", choices=DATASETS, default="digits", help="built-in data set")
    g.add_argument(
        "--data",
        metavar="FILE.npz",
        help="your own data instead of --dataset: arrays x_train, y_train, x_test, y_test "
        "(optional x_val, y_val, num_classes; without x_val the last 10%% of the training "
        "arrays validate); integer labels in [0, num_classes)",
    )
    g.add_argument("--model", choices=MODELS, default="mlp")
    g.add_argument(
        "--widths",
        type=_widths,
        help="hidden widths (MLP) or conv channels (CNN), comma-separated "
        f"(default mlp {DEFAULT_WIDTHS['mlp']}, cnn {DEFAULT_WIDTHS['cnn']})",
    )
    g.add_argument("--kernel-size", type=_positive_int, default=5, help="CNN kernel size (5)")
    g.add_argument("--activation", choices=tuple(ACTIVATIONS), default="relu", help="(relu)")
    g.add_argument("--norm", choices=NORMS, default="none", help="normalisation after each layer")
    g.add_argument(
        "--dropout",
        type=_rate,
        help="drop probability: after each hidden layer (MLP, default 0.2) or before the "
        "classifier (CNN, default 0.3)",
    )
    g.add_argument(
        "--init",
        choices=INITS,
        default="default",
        help="weight initialiser (default: kaiming_normal for ReLU-like, xavier for tanh/sigmoid)",
    )
    g.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of initialisation, shuffling and dropout (the data split is fixed)",
    )
    g.add_argument("--batch-size", type=_positive_int, help="(default mlp 128, cnn 64)")


def build_parser() -> argparse.ArgumentParser:
    """The ``jnn`` argument parser (no JAX import)."""
    parser = argparse.ArgumentParser(
        prog="jnn",
        description="jnn: a JAX functional training toolkit. "
        "`jnn train` trains on a built-in data set and writes a run folder; "
        "`jnn check` runs sanity and gradient checks.",
    )
    sub = parser.add_subparsers(dest="command", metavar="{train,check}")

    train = sub.add_parser(
        "train",
        help="train a model and write a run folder",
        description="Train a network on a built-in data set (no download). Writes config.json, "
        "metrics.jsonl, a checkpoint, PNG plots and report.md to --out.",
    )
    _add_model_options(train)
    g = train.add_argument_group("optimisation")
    g.add_argument("--optimizer", choices=OPTIMIZERS, default="adam", help="(adam)")
    g.add_argument(
        "--lr",
        type=_positive_float,
        help="peak learning rate (default 3e-3 for adam-like, 0.1 sgd, 0.05 momentum)",
    )
    g.add_argument(
        "--schedule",
        choices=SCHEDULES,
        default="cosine",
        help="learning-rate schedule over the whole run (cosine)",
    )
    g.add_argument("--warmup", type=_nonneg_float, default=0.0, help="warm-up length in epochs")
    g.add_argument("--epochs", type=_positive_int, help="epochs (default mlp 30, cnn 20)")
    g.add_argument("--l2", type=_nonneg_float, default=0.0, help="L2 strength (weights only)")
    g.add_argument("--patience", type=_positive_int, help="early stopping on val accuracy")
    o = train.add_argument_group("output")
    o.add_argument("--out", metavar="DIR", help="run folder (default runs/DATASET-MODEL-TIME)")
    o.add_argument("--resume", action="store_true", help="continue the run in --out")
    o.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    o.add_argument("--checkpoint-every", type=_positive_int, help="epochs between checkpoints")
    o.add_argument("--no-progress", action="store_true", help="no progress bar")
    o.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    train.set_defaults(func=cmd_train)

    check = sub.add_parser(
        "check",
        help="sanity checks and gradient check on the configured model",
        description="Run jnn.sanity (initial loss, regularisation, overfit a tiny set) and "
        "jnn.gradcheck on the model configured by the same options as `jnn train`.",
    )
    _add_model_options(check)
    check.add_argument(
        "--optimizer", choices=OPTIMIZERS, default="adam", help="optimizer for overfitting"
    )
    check.add_argument("--lr", type=_positive_float)
    check.add_argument("--l2", type=_nonneg_float, default=0.0, help="L2 strength")
    check.add_argument(
        "--examples", type=_positive_int, default=20, help="size of the set to overfit"
    )
    check.set_defaults(func=cmd_check)
    return parser


def main(argv=None) -> int:
    """Entry point of the ``jnn`` command; returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, or a usage error argparse already printed
        return exit_.code if isinstance(exit_.code, int) else 0 if exit_.code is None else 2
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except UsageError as err:
        print(f"jnn {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


# --------------------------------------------------------------------------- configuration


def _finish_config(args) -> dict:
    """Fills defaults that depend on other options and returns a JSON-able config."""
    config = {k: v for k, v in vars(args).items() if k != "func"}
    if config.get("widths") is None:
        config["widths"] = _widths(DEFAULT_WIDTHS[config["model"]])
    config["widths"] = list(config["widths"])
    if config.get("lr") is None:
        config["lr"] = DEFAULT_LR.get(config.get("optimizer", "adam"), 3e-3)
    if config.get("dropout") is None:
        config["dropout"] = DEFAULT_DROPOUT[config["model"]]
    if config.get("batch_size") is None:
        config["batch_size"] = DEFAULT_BATCH[config["model"]]
    if "epochs" in config and config["epochs"] is None:
        config["epochs"] = DEFAULT_EPOCHS[config["model"]]
    if config.get("init") == "default":
        config["init"] = (
            "xavier_normal" if config["activation"] in ("tanh", "sigmoid") else "kaiming_normal"
        )
    if config["activation"] == "selu" and config["init"] == "kaiming_normal":
        config["init"] = "lecun_normal"
    return config


def _check_output_dir(out) -> Path:
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".jnn-write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        raise UsageError(f"cannot write the output folder {str(out)!r}: {err}") from None
    return out


# --------------------------------------------------------------------------- data


def load_data(config) -> dict:
    """Loads the configured data as float32/int32 NumPy arrays and validates them.

    Returns ``{"x_train", "y_train", "x_val", "y_val", "x_test", "y_test",
    "num_classes", "image_shape"}``; ``image_shape`` is the spatial layout a CNN uses
    (``(8, 8, 1)`` for digits, ``(40, 1)`` for MNIST-1D) or ``None``.
    """
    import numpy as np

    if config.get("data"):
        path = Path(config["data"])
        try:
            raw = dict(np.load(path, allow_pickle=False))
        except (OSError, ValueError) as err:
            raise UsageError(f"cannot read --data {str(path)!r}: {err}") from None
        missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in raw]
        if missing:
            raise UsageError(
                f"--data {str(path)!r} lacks arrays {missing}; expected x_train, y_train, "
                f"x_test, y_test (optional x_val, y_val, num_classes), found {sorted(raw)}"
            )
        if "x_val" not in raw:
            n_val = max(1, len(raw["x_train"]) // 10)
            raw["x_val"], raw["y_val"] = raw["x_train"][-n_val:], raw["y_train"][-n_val:]
            raw["x_train"], raw["y_train"] = raw["x_train"][:-n_val], raw["y_train"][:-n_val]
        shape = raw["x_train"].shape[1:]
        splits = {k: raw[k] for k in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")}
        splits["num_classes"] = int(raw["num_classes"]) if "num_classes" in raw else None
        splits["image_shape"] = tuple(shape) if len(shape) >= 2 else None
    else:
        splits = _builtin(config["dataset"])
    return validate_data(splits, config)


def _builtin(name) -> dict:
    import jnn.data

    # The split is fixed (seed 0) so that --seed changes only the training randomness.
    ds = jnn.data.load(name, seed=0)
    out = {k: getattr(ds, k) for k in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")}
    out["num_classes"], out["image_shape"] = ds.num_classes, tuple(ds.image_shape)
    return out


def validate_data(splits, config) -> dict:
    """Checks shapes, labels and values; raises ``UsageError`` naming the problem."""
    import numpy as np

    out = dict(splits)
    for part in ("train", "val", "test"):
        x, y = np.asarray(out[f"x_{part}"]), np.asarray(out[f"y_{part}"])
        if x.ndim < 2 or len(x) == 0:
            raise UsageError(f"x_{part} must have shape (examples, features...), got {x.shape}")
        if y.shape != (len(x),):
            raise UsageError(
                f"y_{part} must hold one integer label per example, shape ({len(x)},), "
                f"got {y.shape}"
            )
        if not np.issubdtype(x.dtype, np.number):
            raise UsageError(f"x_{part} must be numeric, got dtype {x.dtype}")
        bad = ~np.isfinite(x.astype(np.float64))
        if bad.any():
            raise UsageError(
                f"x_{part} contains {int(bad.sum())} NaN/inf values "
                f"(first at example {int(np.argwhere(bad)[0][0])}); clean or impute them first"
            )
        if not np.issubdtype(y.dtype, np.integer):
            if (
                np.issubdtype(y.dtype, np.floating)
                and np.all(np.isfinite(y))
                and np.all(y == np.round(y))
            ):
                y = y.astype(np.int64)
            else:
                raise UsageError(f"y_{part} must hold integer class labels, got dtype {y.dtype}")
        out[f"x_{part}"], out[f"y_{part}"] = x.astype(np.float32), y.astype(np.int32)
    if out["x_train"].shape[1:] != out["x_val"].shape[1:] or (
        out["x_train"].shape[1:] != out["x_test"].shape[1:]
    ):
        raise UsageError(
            "train, validation and test inputs must have the same feature shape, got "
            f"{out['x_train'].shape[1:]}, {out['x_val'].shape[1:]}, {out['x_test'].shape[1:]}"
        )
    num_classes = out.get("num_classes")
    if num_classes is None:
        num_classes = int(out["y_train"].max()) + 1
    out["num_classes"] = num_classes = int(num_classes)
    if num_classes < 2:
        raise UsageError(f"need at least 2 classes, got num_classes={num_classes}")
    for part in ("train", "val", "test"):
        y = out[f"y_{part}"]
        outside = (y < 0) | (y >= num_classes)
        if outside.any():
            raise UsageError(
                f"y_{part} has {int(outside.sum())} labels outside [0, {num_classes}) "
                f"(e.g. {int(y[outside][0])}); labels must be integers 0..{num_classes - 1}"
            )
    n_train = len(out["x_train"])
    if config["batch_size"] > n_train:
        raise UsageError(
            f"--batch-size {config['batch_size']} is larger than the training set "
            f"({n_train} examples)"
        )
    return out


def model_input(splits, config):
    """Reshapes the inputs for the model: flat for the MLP, spatial for the CNN."""
    x_shape = splits["x_train"].shape[1:]
    if config["model"] == "mlp":
        shape = (math.prod(x_shape),)
    else:
        shape = splits.get("image_shape") or (x_shape if len(x_shape) >= 2 else None)
        if shape is None or math.prod(shape) != math.prod(x_shape) or len(shape) not in (2, 3):
            raise UsageError(
                f"--model cnn needs inputs with a spatial layout (length, channels) or "
                f"(height, width, channels); got features of shape {x_shape}"
            )
    out = dict(splits)
    for part in ("train", "val", "test"):
        x = splits[f"x_{part}"]
        out[f"x_{part}"] = x.reshape((len(x), *shape))
    out["input_shape"] = tuple(shape)
    return out


# --------------------------------------------------------------------------- model


def build_model(config, num_classes, input_shape):
    """The configured ``jnn.nn.Serial`` and a check that it works on ``input_shape``.

    MLP: ``[Dense(w), norm, act, Dropout] * len(widths) + Dense(C)``.
    CNN: ``[Conv(c, k, SAME), norm, act, MaxPool(2)] * len(widths) + Flatten + Dropout +
    Dense(C)``; each pool halves the length (or height and width), so too many layers for
    the input is an impossible shape.
    """
    import jax

    import jnn.init
    import jnn.nn as nn

    act = getattr(nn, ACTIVATIONS[config["activation"]])
    w_init = getattr(jnn.init, config["init"])()
    norm = {"none": None, "batch": nn.BatchNorm, "layer": nn.LayerNorm}[config["norm"]]
    layers = []
    spatial = list(input_shape[:-1])
    for i, width in enumerate(config["widths"]):
        if config["model"] == "mlp":
            layers.append(nn.Dense(width, w_init=w_init))
        else:
            window = (config["kernel_size"],) * len(spatial)
            layers.append(nn.Conv(width, window, w_init=w_init))
        if norm is not None:
            layers.append(norm())
        layers.append(act())
        if config["model"] == "cnn":
            spatial = [s // 2 for s in spatial]
            if min(spatial) < 1:
                raise UsageError(
                    f"impossible shape: CNN layer {i + 1} of {len(config['widths'])} would "
                    f"pool an input of spatial shape {tuple(input_shape[:-1])} down to "
                    f"{tuple(spatial)}; use at most "
                    f"{int(math.log2(min(input_shape[:-1])))} conv layers for this data"
                )
            layers.append(nn.MaxPool((2,) * len(spatial)))
        if config["dropout"] > 0 and config["model"] == "mlp":
            layers.append(nn.Dropout(config["dropout"]))
    if config["model"] == "cnn":
        layers.append(nn.Flatten())
        if config["dropout"] > 0:
            layers.append(nn.Dropout(config["dropout"]))
    layers.append(nn.Dense(num_classes))
    model = nn.Serial(*layers)
    try:
        shapes = jax.eval_shape(lambda k: model.init(k, (2, *input_shape)), jax.random.key(0))
        params, state = shapes
        y = jax.eval_shape(
            lambda p, s, x: model.apply(p, s, x)[0],
            params,
            state,
            jax.ShapeDtypeStruct((2, *input_shape), "float32"),
        )
    except (TypeError, ValueError) as err:
        raise UsageError(
            f"impossible shape for this model on inputs {input_shape}: {err}"
        ) from None
    if y.shape != (2, num_classes):
        raise UsageError(f"model output shape {y.shape[1:]} != ({num_classes},) classes")
    return model


def build_optimizer(config, steps_per_epoch):
    """The configured optimizer (``jnn.optim``) and its learning-rate schedule.

    Schedules (``total`` = epochs x steps per epoch, ``warmup`` = --warmup epochs in steps,
    a linear ramp from 0 in front of the schedule): ``constant``; ``cosine`` (to 0 at the
    end); ``warmup-cosine`` (warm-up 5% of training unless --warmup is given); ``step``
    (x0.1 at 50% and 75% of training); ``exponential`` (to 1% at the end);
    ``inverse-sqrt`` (``lr / sqrt(1 + step / steps_per_epoch)``).
    """
    import jnn.optim as optim
    import jnn.schedules as sch

    lr, epochs = config["lr"], config.get("epochs", 1)
    total = max(1, epochs * steps_per_epoch)
    warmup = int(round(config.get("warmup", 0.0) * steps_per_epoch))
    if warmup >= total:
        raise UsageError(
            f"--warmup {config['warmup']} epochs must be shorter than --epochs {epochs}"
        )
    name = config.get("schedule", "constant")
    if name == "warmup-cosine" and not warmup:
        warmup = max(1, total // 20)
    rest = total - warmup
    if name == "constant":
        schedule = sch.constant_schedule(lr)
    elif name in ("cosine", "warmup-cosine"):
        schedule = sch.cosine_decay_schedule(lr, rest)
    elif name == "step":
        schedule = sch.piecewise_constant_schedule(
            lr, {max(1, rest // 2): 0.1, max(2, (3 * rest) // 4): 0.1}
        )
    elif name == "exponential":
        schedule = sch.exponential_decay(lr, transition_steps=rest, decay_rate=0.01)
    else:  # inverse-sqrt
        schedule = sch.inverse_sqrt_schedule(lr, timescale=steps_per_epoch)
    if warmup:
        schedule = sch.warmup_schedule(schedule, warmup)
    opt = config["optimizer"]
    if opt == "sgd":
        return optim.sgd(schedule), schedule
    if opt in ("momentum", "nesterov"):
        return optim.sgd(schedule, momentum=0.9, nesterov=opt == "nesterov"), schedule
    return getattr(optim, opt)(schedule), schedule


# --------------------------------------------------------------------------- train


def _fmt_epoch(record, epochs) -> str:
    def pct(v):
        return "   -  " if v is None else f"{100 * v:5.1f}%"

    ratios = list((record.get("update_ratio") or {}).values())
    ratio = f"{sorted(ratios)[len(ratios) // 2]:.1e}" if ratios else "-"
    val_loss = record.get("val_loss")
    return (
        f"epoch {record['epoch']:>3}/{epochs}  loss {record['train_loss']:.4f}"
        + (f"  val_loss {val_loss:.4f}" if val_loss is not None else "")
        + f"  train {pct(record.get('train_acc'))}  val {pct(record.get('val_acc'))}"
        + f"  lr {record.get('learning_rate') or float('nan'):.2e}  ratio {ratio}"
        + f"  {record.get('seconds', 0.0):.2f}s"
    )


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else (1e308 if value > 0 else -1e308)
    return value


def _echo(message):
    print(message, flush=True)


def _echo_above_bar(message):
    """Prints a line without breaking fit's progress bar (tqdm writes it above the bar)."""
    from tqdm.auto import tqdm

    tqdm.write(message, file=sys.stdout)
    sys.stdout.flush()


def cmd_train(args) -> int:
    """``jnn train``: validate everything, train, and write the run folder."""
    config = _finish_config(args)
    out = Path(
        config["out"]
        or f"runs/{config['dataset']}-{config['model']}-{time.strftime('%Y%m%d-%H%M%S')}"
    )
    config["out"] = str(out)
    if config["resume"]:
        stored = out / "config.json"
        if not stored.exists():
            raise UsageError(f"--resume: no run to resume in {str(out)!r} (config.json missing)")
        previous = json.loads(stored.read_text())
        keys = _RUN_KEYS
        if config["schedule"] not in ("constant", "inverse-sqrt"):
            keys += ("epochs",)  # the schedule's length depends on the total
        diff = [k for k in keys if previous.get(k) != config.get(k)]
        if diff:
            raise UsageError(
                "--resume with different options than the stored run: "
                + ", ".join(
                    f"--{k.replace('_', '-')} {previous.get(k)} -> {config.get(k)}" for k in diff
                )
            )
    elif (out / "config.json").exists() or (out / "checkpoint").exists():
        if not config["overwrite"]:
            raise UsageError(
                f"{str(out)!r} already holds a run; pass --resume to continue it, --overwrite "
                "to replace it, or choose another --out"
            )
        import shutil

        shutil.rmtree(out / "checkpoint", ignore_errors=True)
    out = _check_output_dir(out)
    splits = model_input(load_data(config), config)
    n_train = len(splits["x_train"])
    steps_per_epoch = max(1, n_train // config["batch_size"])
    model = build_model(config, splits["num_classes"], splits["input_shape"])
    optimizer, schedule = build_optimizer(config, steps_per_epoch)

    import jax

    import jnn.losses
    import jnn.monitor
    import jnn.train

    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    _echo(
        f"jnn train: {config['model']} {config['widths']} on {config['data'] or config['dataset']} "
        f"({n_train} train / {len(splits['x_val'])} val / {len(splits['x_test'])} test, "
        f"{splits['num_classes']} classes), {config['optimizer']} lr {config['lr']:g} "
        f"{config['schedule']}, {config['epochs']} epochs of {steps_per_epoch} steps -> {out}"
    )
    metrics_path = out / "metrics.jsonl"

    def on_epoch(record):
        record = _jsonable(record)
        with metrics_path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        (_echo if config["no_progress"] else _echo_above_bar)(_fmt_epoch(record, config["epochs"]))

    if not config["resume"] and metrics_path.exists():
        metrics_path.unlink()
    key = jax.random.key(config["seed"])
    step_options = {"l2": config["l2"]} if config["l2"] else None
    start = time.perf_counter()
    result = jnn.train.fit(
        model,
        jnn.losses.softmax_cross_entropy,
        optimizer,
        (splits["x_train"], splits["y_train"]),
        epochs=config["epochs"],
        batch_size=config["batch_size"],
        key=key,
        val_data=(splits["x_val"], splits["y_val"]),
        step_options=step_options,
        learning_rate=schedule,
        checkpoint_dir=str((out / "checkpoint").absolute()),
        checkpoint_every=config.get("checkpoint_every"),
        resume=config["resume"],
        patience=config.get("patience"),
        progress=not config["no_progress"],
        on_epoch=on_epoch,
    )
    seconds = time.perf_counter() - start
    history = [_jsonable(r) for r in result.history]
    # The full history (including epochs before a --resume) is the source of truth.
    metrics_path.write_text("".join(json.dumps(r) + "\n" for r in history))

    state = result.state
    test = jnn.train.evaluate(
        model,
        state.params,
        state.model_state,
        splits["x_test"],
        splits["y_test"],
        jnn.losses.softmax_cross_entropy,
    )
    n_stats = min(512, len(splits["x_val"]))
    stats = jnn.monitor.activation_stats(
        model, state.params, state.model_state, splits["x_val"][:n_stats]
    )
    diagnostics = jnn.monitor.diagnose(history, stats)
    if result.stopped and result.stopped != "early_stopping":
        diagnostics.insert(
            0,
            f"training stopped: {result.stopped}; a NaN/inf usually means the learning rate "
            "is far too high (or the inputs are not normalised)",
        )

    plots = (
        {}
        if config["no_plots"]
        else _write_plots(out, history, stats, state.params, splits, config)
    )
    summary = {
        "test_accuracy": float(test["accuracy"]),
        "test_loss": float(test["loss"]),
        "epochs_run": len(history),
        "stopped": result.stopped,
        "train_seconds": seconds,
        "diagnostics": diagnostics,
        "activation_stats": {
            name: {k: v for k, v in row.items() if k not in ("hist", "edges")}
            for name, row in stats.items()
        },
    }
    (out / "summary.json").write_text(json.dumps(_jsonable(summary), indent=2) + "\n")
    _write_report(out, config, history, summary, plots)

    _echo("diagnostics:")
    for line in diagnostics or ["no problems found"]:
        _echo(f"  - {line}")
    _echo(
        f"test accuracy {100 * summary['test_accuracy']:.2f}% (loss {summary['test_loss']:.4f}) "
        f"after {len(history)} epochs, {seconds:.1f}s of training; run folder {out}"
    )
    return 0 if result.stopped in (None, "early_stopping") else 1


def _write_plots(out, history, stats, params, splits, config) -> dict:
    import jnn.plots as plots
    from jnn import _tree

    written = {
        "loss": plots.loss_curve(history, out / "loss.png"),
        "accuracy": plots.accuracy_curve(history, out / "accuracy.png"),
        "update_ratio": plots.update_ratio_curve(history, out / "update_ratio.png"),
        "activations": plots.activation_histograms(stats, out / "activations.png"),
    }
    weights = [w for n, w in _tree.named_leaves(params).items() if n.endswith("/w")]
    image = splits.get("image_shape")
    if weights and image is not None and len(image) == 3:
        import numpy as np

        w = np.asarray(weights[0])
        if config["model"] == "cnn":  # (kh, kw, in, out) -> (kh*kw*in, out), first channel
            image_shape = w.shape[:2]
            w = w[:, :, 0, :].reshape(-1, w.shape[-1])
        else:
            image_shape = image[:2] if image[2] == 1 else None
        if image_shape is not None and w.shape[0] == math.prod(image_shape):
            written["first_layer"] = plots.first_layer_weights(
                w, out / "first_layer.png", image_shape=tuple(image_shape)
            )
    return {k: Path(v).name for k, v in written.items()}


def _write_report(out, config, history, summary, plots):
    last = history[-1] if history else {}
    lines = [
        f"# jnn run: {config['model']} on {config['data'] or config['dataset']}",
        "",
        f"**Test accuracy: {100 * summary['test_accuracy']:.2f}%** "
        f"(test loss {summary['test_loss']:.4f}) after {summary['epochs_run']} epochs, "
        f"{summary['train_seconds']:.1f} s of training.",
        "",
    ]
    if last:
        lines.append(
            "Last epoch: train loss {:.4f}, train accuracy {}, validation accuracy {}.".format(
                last.get("train_loss") or float("nan"),
                "-" if last.get("train_acc") is None else f"{100 * last['train_acc']:.2f}%",
                "-" if last.get("val_acc") is None else f"{100 * last['val_acc']:.2f}%",
            )
        )
        lines.append("")
    lines += ["## Diagnostics", ""]
    lines += [f"- {d}" for d in summary["diagnostics"]] or ["- no problems found"]
    lines += ["", "## Configuration", "", "```json", json.dumps(config, indent=2), "```", ""]
    titles = {
        "loss": "Loss per epoch",
        "accuracy": "Train vs validation accuracy",
        "update_ratio": "Update/weight ratio per layer (target 1e-3)",
        "activations": "Activations per layer",
        "first_layer": "First-layer weights",
    }
    if plots:
        lines += ["## Plots", ""]
        for key, name in plots.items():
            lines += [f"### {titles.get(key, key)}", "", f"![{key}]({name})", ""]
    lines += [
        "## Files",
        "",
        "- `config.json`: the options of this run",
        "- `metrics.jsonl`: one JSON record per epoch",
        "- `summary.json`: test accuracy, diagnostics, activation statistics",
        "- `checkpoint/`: the orbax checkpoint (`jnn train --resume --out DIR`)",
        "",
    ]
    (out / "report.md").write_text("\n".join(lines))


# --------------------------------------------------------------------------- check


def cmd_check(args) -> int:
    """``jnn check``: ``jnn.sanity.run_all`` on the configured model and data.

    That is the notes' sanity checklist: the initial loss against log C, more
    regularisation giving a higher loss, overfitting 20 training examples, and a
    ``jnn.gradcheck.check_grads`` gradient check of the training objective after a few
    training steps ("characteristic mode"). Exit code 0 when every check passes.
    """
    config = _finish_config(args)
    config["epochs"] = 1
    splits = model_input(load_data(config), config)
    model = build_model(config, splits["num_classes"], splits["input_shape"])
    optimizer, _ = build_optimizer({**config, "schedule": "constant", "warmup": 0.0}, 1)

    import jax

    import jnn.losses
    import jnn.sanity

    _echo(
        f"jnn check: {config['model']} {config['widths']} on "
        f"{config['data'] or config['dataset']}, {config['optimizer']} lr {config['lr']:g}"
    )
    report = jnn.sanity.run_all(
        model,
        jnn.losses.softmax_cross_entropy,
        optimizer,
        splits["x_train"],
        splits["y_train"],
        key=jax.random.key(config["seed"]),
        n=config["examples"],
        step_options={"l2": config["l2"]} if config["l2"] else None,
    )
    _echo(str(report))
    _echo("all checks passed" if report.ok else "some checks FAILED")
    return 0 if report.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
