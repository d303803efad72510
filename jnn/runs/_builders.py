"""The model, optimizer, schedule, loss and data of a run, from its :class:`RunConfig`."""

from __future__ import annotations

import math
import os

from jnn.runs._config import RunConfig
from jnn.runs._user_model import build_user_model, is_user_model

__all__ = [
    "build_loss",
    "build_model",
    "build_optimizer",
    "build_schedule",
    "check_memory",
    "load_run_data",
]

ACTIVATION_LAYERS = {
    "relu": "Relu",
    "leaky_relu": "LeakyRelu",
    "tanh": "Tanh",
    "sigmoid": "Sigmoid",
    "elu": "Elu",
    "selu": "Selu",
    "gelu": "Gelu",
    "swish": "Swish",
}


def load_run_data(config: RunConfig):
    """The run's :class:`jnn.data.Dataset`, checked, shaped for its model (flat for the MLP,
    ``image_shape`` for the CNN). ``--data`` names an ``.npz`` file or a folder of ``.npy``
    files (``jnn.data.load_npy_dir``: memory-mapped, checked slice by slice, and reshaped
    as views of the files, so nothing is read whole).

    Raises:
      ValueError: unreadable or inconsistent data, or a shape the model cannot take.
    """
    import numpy as np

    import jnn.data as data

    if config.data and os.path.isdir(config.data):  # .npy files, memory-mapped and streamed
        ds = data.load_npy_dir(config.data, check=False)
    elif config.data:
        ds = data.load_npz(config.data, attributes=config.task == "attributes")
    elif config.dataset == "many-classes":
        ds = data.make_many_classes(config.classes, num_examples=config.examples, seed=0)
    else:  # The split is fixed (seed 0) so that --seed changes only the training randomness.
        ds = data.load(config.dataset, seed=0, cache=config.cache)
    data.check_dataset(ds, config.batch_size, attributes=config.task == "attributes")
    if config.model == "cnn":
        return data.to_images(ds)
    if is_user_model(config.model):  # channels last where the data have a layout, else as given
        return ds if ds.image_shape is None else data.to_images(ds)
    flat = lambda x: np.reshape(x, (len(x), -1))
    shape = (math.prod(ds.input_shape),)
    return ds._replace(
        x_train=flat(ds.x_train),
        x_val=flat(ds.x_val),
        x_test=flat(ds.x_test),
        input_shape=shape,
    )


# --init constant / normal: the notes' pitfalls, applied to every layer (the head too, or
# its random weights would break the symmetry a constant initialisation keeps).
PITFALL_INITS = {"constant": ("constant", 0.01), "normal": ("normal", 0.01)}


def weight_init(config):
    """The weight initialiser of ``--init``: ``constant`` fills every weight with 0.01,
    ``normal`` draws ``N(0, 0.01^2)``; the others are ``jnn.init``'s fan-scaled ones."""
    import jnn.init

    name, arg = PITFALL_INITS.get(config.init, (config.init, None))
    return getattr(jnn.init, name)(*(() if arg is None else (arg,)))


def _hidden_unit(config, nn, width, input_shape, w_init):
    """One hidden layer's weights: Dense, Maxout (``--activation maxout``) or Conv."""
    if config.activation == "maxout":
        return nn.Maxout(width, config.pieces, w_init=w_init)
    if config.model == "mlp":
        return nn.Dense(width, w_init=w_init)
    _check_kernel(config, input_shape)
    return nn.Conv(width, (config.kernel_size,) * (len(input_shape) - 1), w_init=w_init)


def _hidden_layers(config, input_shape, dropout, input_noise=0.0):
    import jnn.nn as nn

    act = (
        None if config.activation == "maxout" else getattr(nn, ACTIVATION_LAYERS[config.activation])
    )
    w_init = weight_init(config)
    norm = {
        "none": None,
        "batch": nn.BatchNorm,
        "layer": nn.LayerNorm,
        "instance": nn.InstanceNorm,
    }[config.norm]
    layers, spatial = [], list(input_shape[:-1])
    if _active(input_noise):
        layers.append(nn.GaussianNoise(input_noise))
    for i, width in enumerate(config.widths):
        layers.append(_hidden_unit(config, nn, width, input_shape, w_init))
        layers += [norm()] if norm is not None else []
        layers += [act()] if act is not None else []
        if config.model == "cnn":
            spatial = [s // 2 for s in spatial]
            if min(spatial) < 1:
                widths = ",".join(str(w) for w in config.widths)
                raise ValueError(
                    f"impossible shape: --widths {widths} makes {len(config.widths)} conv "
                    f"layers, and layer {i + 1} would pool an input of spatial shape "
                    f"{tuple(input_shape[:-1])} down to {tuple(spatial)}; give --widths at "
                    f"most {int(math.log2(min(input_shape[:-1])))} entries for this data"
                )
            layers.append(nn.MaxPool((2,) * len(spatial)))
        elif _active(dropout):
            layers.append(nn.Dropout(dropout))
    if config.model == "cnn":
        layers.append(nn.Flatten())
        if _active(dropout):
            layers.append(nn.Dropout(dropout))
    return layers


def _check_kernel(config, input_shape) -> None:
    """A kernel larger than the data itself only multiplies zero padding (and compiles a
    huge program): refused, naming the option. (Deeper layers see pooled inputs; a kernel
    wider than those is SAME-padded, as in the default CNN on 8x8 digits.)"""
    spatial = tuple(input_shape[:-1])
    if config.kernel_size > min(spatial):
        raise ValueError(
            f"--kernel-size {config.kernel_size} is larger than the input (spatial shape "
            f"{spatial}); use --kernel-size <= {min(spatial)}"
        )


def check_memory(config: RunConfig, model, input_shape, *, budget=None) -> None:
    """Refuses a run whose estimated memory exceeds the machine's, before anything is made.

    Estimate = members x (4 x parameter bytes (params, gradients, two optimizer slots) +
    3 x activation bytes of one batch (forward values, their gradients, the step's copies)),
    from ``jax.eval_shape`` (nothing allocated). The budget is the devices' memory limit when
    they report one, else the machine's physical memory.

    Raises:
      ValueError: the estimate and the budget, naming ``--ensemble`` / the sweep when the
        members make it too large.
    """
    import jax
    import numpy as np

    import jnn.nn as nn

    itemsize = np.dtype(config.dtype if config.dtype != "bfloat16" else "float16").itemsize
    shapes = jax.eval_shape(lambda k: model.init(k, (1, *input_shape)), jax.random.key(0))
    params = sum(math.prod(a.shape) for a in jax.tree.leaves(shapes))
    out = nn.output_shape(model, (config.batch_size, *input_shape))
    widths = sum(config.widths) * config.batch_size + math.prod(out)
    per_member = itemsize * (4 * params + 3 * widths * max(1, math.prod(input_shape[:-1])))
    members = config.num_members
    need = members * per_member
    budget = _memory_budget() if budget is None else budget
    if need > budget:
        who = f"{members} members x {_gib(per_member)} " if members > 1 else ""
        hint = (
            "fewer --ensemble members or swept values"
            if members > 1
            else "smaller --widths or --batch-size"
        )
        raise ValueError(
            f"the run needs about {_gib(need)} ({who}for {params:,} parameters, "
            f"{out[-1]:,} outputs, and their activations) but this machine has "
            f"{_gib(budget)}; use {hint}"
        )


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**28 else f"{n / 2**20:.0f} MiB"


def _memory_budget() -> float:
    """The first device's memory limit, or the machine's physical memory."""
    import os

    import jax

    stats = jax.local_devices()[0].memory_stats() or {}
    if stats.get("bytes_limit"):
        return float(stats["bytes_limit"])
    return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def _active(rate) -> bool:
    """A Python rate of 0 adds no layer; an array (per-member rates) always does."""
    return not (isinstance(rate, (int, float)) and rate == 0)


def build_model(
    config: RunConfig,
    num_classes: int,
    input_shape,
    *,
    dropout=None,
    tree=None,
    input_noise=None,
):
    """The configured ``jnn.nn.Serial``.

    MLP: ``[Dense(w), norm, act, Dropout] * len(widths) + head``. CNN: ``[Conv(c, k, SAME),
    norm, act, MaxPool(2)] * len(widths) + Flatten + Dropout + head``; each pool halves the
    length (or height and width). ``--input-noise`` puts ``GaussianNoise`` in front;
    ``--activation maxout`` (MLP) replaces ``Dense + act`` by ``Maxout(w, pieces)``. The
    head is ``Dense(num_classes)`` (``--output softmax``; one output per class, attribute or
    regression target) or ``HierarchicalSoftmax(tree)`` (``--output hsoftmax``).

    Args:
      config: the run's options.
      num_classes: ``C``, the head's width.
      input_shape: one example's shape (no batch axis).
      dropout: the drop rate (default: the config's first value; an array for ensembles).
      tree: the class tree of a hierarchical-softmax head (required for ``hsoftmax``).
      input_noise: the input noise's std (default: the config's first; an array for
        ensembles).

    Raises:
      ValueError: a shape the model cannot take (too many conv layers for the input).
    """
    import jnn.nn as nn

    if is_user_model(config.model):
        return build_user_model(config.model, input_shape, num_classes)
    dropout = config.dropout[0] if dropout is None else dropout
    input_noise = config.input_noise[0] if input_noise is None else input_noise
    layers = _hidden_layers(config, tuple(input_shape), dropout, input_noise)
    if config.output == "hsoftmax":
        if tree is None:
            raise ValueError("build_model: --output hsoftmax needs the class tree")
        layers.append(nn.HierarchicalSoftmax(tree))
    else:
        pitfall = config.init in PITFALL_INITS
        layers.append(nn.Dense(num_classes, w_init=weight_init(config) if pitfall else None))
    model = nn.Serial(*layers)
    nn.output_shape(model, (2, *input_shape))  # fails early, naming the layer, if impossible
    return model


def build_tree(config: RunConfig, y_train, num_classes: int):
    """The class tree of a hierarchical-softmax head: balanced, or Huffman from the training
    label frequencies."""
    import numpy as np

    import jnn.losses as losses

    if config.tree == "huffman":
        counts = np.bincount(np.asarray(y_train), minlength=num_classes)
        return losses.huffman_class_tree(counts + 1)  # +1: a class seen 0 times still has a leaf
    return losses.balanced_class_tree(num_classes)


def build_loss(config: RunConfig, task: str = "classes"):
    """The per-example loss: softmax cross-entropy (``--loss svm``: the multiclass hinge), or
    the hierarchical softmax's; one sigmoid per attribute (``task="attributes"``); the squared
    error (``"regression"``)."""
    import jnn.losses as losses

    if task == "attributes":
        return losses.sigmoid_binary_cross_entropy
    if task == "regression":
        return losses.l2_loss
    if config.output == "hsoftmax":
        return losses.hierarchical_softmax_loss
    if config.loss == "svm":
        return losses.multiclass_hinge
    return losses.softmax_cross_entropy


def build_schedule(config: RunConfig, steps_per_epoch: int, lr=None):
    """The learning-rate schedule over the whole run.

    ``total`` = epochs x steps per epoch, ``warmup`` = ``--warmup`` epochs in steps, a
    linear ramp from 0 in front of the schedule: ``constant``; ``cosine`` (to 0 at the end);
    ``warmup-cosine`` (warm-up 5% of training unless ``--warmup`` is given); ``step`` (x0.1 at
    50% and 75% of training); ``exponential`` (to 1% at the end); ``linear`` (to 0 at the
    end); ``inverse-sqrt`` (``lr / sqrt(1 + step / steps_per_epoch)``). With ``--snapshots
    N`` the cosine restarts ``N`` times (one cycle per snapshot, Huang et al. 2017).

    Args:
      config: the run's options.
      steps_per_epoch: updates per epoch.
      lr: the peak learning rate (default the config's first; an array for ensembles).
    """
    import jnn.schedules as sch

    lr = config.lr[0] if lr is None else lr
    total = max(1, config.epochs * steps_per_epoch)
    warmup = int(round(config.warmup * steps_per_epoch))
    if config.schedule == "warmup-cosine" and not warmup:
        warmup = max(1, total // 20)
    rest = total - warmup
    if config.snapshots > 1 and config.schedule in ("cosine", "warmup-cosine"):
        cycle = total // config.snapshots
        cycles = [sch.cosine_decay_schedule(lr, cycle) for _ in range(config.snapshots)]
        return sch.join_schedules(cycles, [cycle * (i + 1) for i in range(config.snapshots - 1)])
    make = {
        "constant": lambda: sch.constant_schedule(lr),
        "cosine": lambda: sch.cosine_decay_schedule(lr, rest),
        "warmup-cosine": lambda: sch.cosine_decay_schedule(lr, rest),
        "step": lambda: sch.piecewise_constant_schedule(
            lr, {max(1, rest // 2): 0.1, max(2, (3 * rest) // 4): 0.1}
        ),
        "exponential": lambda: sch.exponential_decay(lr, transition_steps=rest, decay_rate=0.01),
        "inverse-sqrt": lambda: sch.inverse_sqrt_schedule(lr, timescale=steps_per_epoch),
        "linear": lambda: sch.linear_schedule(lr, 0.0, rest),
    }
    schedule = make[config.schedule]()
    return sch.warmup_schedule(schedule, warmup) if warmup else schedule


def build_optimizer(config: RunConfig, steps_per_epoch: int, hyperparams: dict | None = None):
    """The configured ``jnn.optim`` optimizer and its learning-rate schedule.

    Args:
      config: the run's options.
      steps_per_epoch: updates per epoch (for the schedule).
      hyperparams: ``{"lr", "momentum", "weight_decay"}`` values overriding the config's
        first values (scalars, or traced per-member values inside an ensemble).

    Returns:
      ``(optimizer, schedule)``.
    """
    import jnn.optim as optim

    hp = {k: (getattr(config, k) or (None,))[0] for k in ("lr", "momentum", "weight_decay")}
    hp.update(hyperparams or {})
    schedule = build_schedule(config, steps_per_epoch, hp["lr"])
    name = config.optimizer
    if name == "sgd":
        return optim.sgd(schedule), schedule
    if name in ("momentum", "nesterov"):
        return optim.sgd(schedule, momentum=hp["momentum"], nesterov=name == "nesterov"), schedule
    if name == "rmsprop":
        return optim.rmsprop(schedule, momentum=hp["momentum"]), schedule
    if name == "adagrad":
        return optim.adagrad(schedule), schedule
    kwargs = {"b1": hp["momentum"]}
    if name == "adamw":
        kwargs["weight_decay"] = hp["weight_decay"]
    return getattr(optim, name)(schedule, **kwargs), schedule
