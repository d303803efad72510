"""The model, optimizer, schedule, loss and data of a run, from its :class:`RunConfig`."""

from __future__ import annotations

import math
import os

from jnn.runs._config import RunConfig

__all__ = ["build_loss", "build_model", "build_optimizer", "build_schedule", "load_run_data"]

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
        ds = data.load_npz(config.data)
    elif config.dataset == "many-classes":
        ds = data.make_many_classes(config.classes, num_examples=config.examples, seed=0)
    else:  # The split is fixed (seed 0) so that --seed changes only the training randomness.
        ds = data.load(config.dataset, seed=0, cache=config.cache)
    data.check_dataset(ds, config.batch_size)
    if config.model == "cnn":
        return data.to_images(ds)
    flat = lambda x: np.reshape(x, (len(x), -1))
    shape = (math.prod(ds.input_shape),)
    return ds._replace(
        x_train=flat(ds.x_train),
        x_val=flat(ds.x_val),
        x_test=flat(ds.x_test),
        input_shape=shape,
    )


def _hidden_layers(config, input_shape, dropout):
    import jnn.init
    import jnn.nn as nn

    act = getattr(nn, ACTIVATION_LAYERS[config.activation])
    w_init = getattr(jnn.init, config.init)()
    norm = {"none": None, "batch": nn.BatchNorm, "layer": nn.LayerNorm}[config.norm]
    layers, spatial = [], list(input_shape[:-1])
    for i, width in enumerate(config.widths):
        if config.model == "mlp":
            layers.append(nn.Dense(width, w_init=w_init))
        else:
            layers.append(nn.Conv(width, (config.kernel_size,) * len(spatial), w_init=w_init))
        layers += [norm()] if norm is not None else []
        layers.append(act())
        if config.model == "cnn":
            spatial = [s // 2 for s in spatial]
            if min(spatial) < 1:
                raise ValueError(
                    f"impossible shape: CNN layer {i + 1} of {len(config.widths)} would pool "
                    f"an input of spatial shape {tuple(input_shape[:-1])} down to "
                    f"{tuple(spatial)}; use at most {int(math.log2(min(input_shape[:-1])))} "
                    "conv layers for this data"
                )
            layers.append(nn.MaxPool((2,) * len(spatial)))
        elif _active(dropout):
            layers.append(nn.Dropout(dropout))
    if config.model == "cnn":
        layers.append(nn.Flatten())
        if _active(dropout):
            layers.append(nn.Dropout(dropout))
    return layers


def _active(rate) -> bool:
    """A Python rate of 0 adds no layer; an array (per-member rates) always does."""
    return not (isinstance(rate, (int, float)) and rate == 0)


def build_model(config: RunConfig, num_classes: int, input_shape, *, dropout=None, tree=None):
    """The configured ``jnn.nn.Serial``.

    MLP: ``[Dense(w), norm, act, Dropout] * len(widths) + head``. CNN: ``[Conv(c, k, SAME),
    norm, act, MaxPool(2)] * len(widths) + Flatten + Dropout + head``; each pool halves the
    length (or height and width). The head is ``Dense(num_classes)`` (``--output softmax``)
    or ``HierarchicalSoftmax(tree)`` (``--output hsoftmax``).

    Args:
      config: the run's options.
      num_classes: ``C``.
      input_shape: one example's shape (no batch axis).
      dropout: the drop rate (default: the config's first value; an array for ensembles).
      tree: the class tree of a hierarchical-softmax head (required for ``hsoftmax``).

    Raises:
      ValueError: a shape the model cannot take (too many conv layers for the input).
    """
    import jnn.nn as nn

    dropout = config.dropout[0] if dropout is None else dropout
    layers = _hidden_layers(config, tuple(input_shape), dropout)
    if config.output == "hsoftmax":
        if tree is None:
            raise ValueError("build_model: --output hsoftmax needs the class tree")
        layers.append(nn.HierarchicalSoftmax(tree))
    else:
        layers.append(nn.Dense(num_classes))
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


def build_loss(config: RunConfig):
    """The per-example loss: softmax cross-entropy, or the hierarchical softmax's."""
    import jnn.losses as losses

    if config.output == "hsoftmax":
        return losses.hierarchical_softmax_loss
    return losses.softmax_cross_entropy


def build_schedule(config: RunConfig, steps_per_epoch: int, lr=None):
    """The learning-rate schedule over the whole run.

    ``total`` = epochs x steps per epoch, ``warmup`` = ``--warmup`` epochs in steps, a
    linear ramp from 0 in front of the schedule: ``constant``; ``cosine`` (to 0 at the end);
    ``warmup-cosine`` (warm-up 5% of training unless ``--warmup`` is given); ``step`` (x0.1 at
    50% and 75% of training); ``exponential`` (to 1% at the end); ``inverse-sqrt``
    (``lr / sqrt(1 + step / steps_per_epoch)``). With ``--snapshots N`` the cosine restarts
    ``N`` times (one cycle per snapshot, Huang et al. 2017).

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
