"""The optimizers: Optax's aliases (``sgd`` ... ``nadamw``) chained from the building blocks.

Each checks its arguments when it is built and names itself in the error; JAX
arrays and tracers pass unchecked, so an optimizer can be built inside
``jax.vmap`` from per-member hyperparameters.
"""

import optax
from optax import ScalarOrSchedule

from jnn.optim._base import GT, check_flag, check_number, identity
from jnn.optim._transforms import (
    _scale_by_adam,
    _scale_by_rms,
    _scale_by_rss,
    _trace,
    add_decayed_weights,
    scale_by_learning_rate,
)

__all__ = ["adagrad", "adam", "adamw", "chain", "nadam", "nadamw", "rmsprop", "sgd"]

chain = optax.chain


def _learning_rate(fn, learning_rate):
    """``-learning_rate * u``; ``learning_rate`` is required (a number, array or schedule)."""
    check_number(fn, "learning_rate", learning_rate, schedule=True)
    return scale_by_learning_rate(learning_rate)


def _momentum(fn, momentum, nesterov, accumulator_dtype=None):
    """A (Nesterov) velocity with coefficient ``momentum``, or the identity for None."""
    check_number(fn, "momentum", momentum, optional=True)
    check_flag(fn, "nesterov", nesterov)
    if momentum is None:
        return identity()
    return _trace(fn, momentum, nesterov, accumulator_dtype)


def _weight_decay(fn, weight_decay, mask):
    check_number(fn, "weight_decay", weight_decay, schedule=True)
    return add_decayed_weights(weight_decay, mask)


def sgd(
    learning_rate: ScalarOrSchedule,
    momentum=None,
    nesterov: bool = False,
    accumulator_dtype=None,
) -> GT:
    """Stochastic gradient descent, with optional (Nesterov) momentum.

    Vanilla: ``W <- W - lr * dW``. With momentum ``mu`` the notes' velocity form
    ``v <- mu v - lr dW; W <- W + v`` is written as ``m <- dW + mu m``,
    ``W <- W - lr m`` (identical for a constant ``lr``). Nesterov evaluates the
    step at the look-ahead: ``W <- W - lr (dW + mu m)``. Same as ``optax.sgd``.

    Args:
      learning_rate: a number, an array or a schedule (``count -> lr``). A
        negative value ascends, as in Optax.
      momentum: ``mu``, or None for plain SGD.
      nesterov: use Nesterov momentum.
      accumulator_dtype: dtype of the momentum buffer.

    Returns:
      An ``optax.GradientTransformationExtraArgs``.
    """
    return chain(
        _momentum("sgd", momentum, nesterov, accumulator_dtype),
        _learning_rate("sgd", learning_rate),
    )


def adagrad(learning_rate: ScalarOrSchedule, initial_accumulator_value=0.1, eps=1e-7) -> GT:
    """Adagrad: ``G <- G + dW**2``, ``W <- W - lr dW / sqrt(G + eps)``.

    Each parameter gets its own step size ``lr / sqrt(G)``; because ``G`` only
    grows, the steps shrink monotonically and learning eventually stops.
    Same as ``optax.adagrad``.

    Args:
      learning_rate: a number, an array or a schedule.
      initial_accumulator_value: starting value of ``G``.
      eps: added inside the square root.

    Returns:
      An ``optax.GradientTransformationExtraArgs``.
    """
    return chain(
        _scale_by_rss("adagrad", initial_accumulator_value, eps),
        _learning_rate("adagrad", learning_rate),
    )


def rmsprop(
    learning_rate: ScalarOrSchedule,
    decay=0.9,
    eps=1e-8,
    initial_scale=0.0,
    eps_in_sqrt: bool = True,
    centered: bool = False,
    momentum=None,
    nesterov: bool = False,
    bias_correction: bool = False,
) -> GT:
    """RMSProp: ``v <- decay v + (1 - decay) dW**2``, ``W <- W - lr dW / sqrt(v + eps)``.

    Adagrad with a leaky sum: old gradients decay away, so the per-parameter
    step adapts without shrinking to zero. ``centered`` divides by a running
    standard deviation instead; ``momentum`` adds a (Nesterov) velocity on top
    of the scaled step. Same as ``optax.rmsprop``.

    Args:
      learning_rate: a number, an array or a schedule.
      decay: averaging rate of the squared gradients.
      eps: stabiliser in the denominator.
      initial_scale: starting value of ``v``.
      eps_in_sqrt: put ``eps`` inside (True) or outside the square root.
      centered: divide by the running standard deviation (``v - m**2``).
      momentum: velocity coefficient applied after scaling, or None.
      nesterov: use Nesterov momentum.
      bias_correction: divide the running averages by ``1 - decay**t``.

    Returns:
      An ``optax.GradientTransformationExtraArgs``.
    """
    check_flag("rmsprop", "centered", centered)
    return chain(
        _scale_by_rms(
            "rmsprop", decay, eps, initial_scale, eps_in_sqrt, bias_correction, bool(centered)
        ),
        _learning_rate("rmsprop", learning_rate),
        _momentum("rmsprop", momentum, nesterov),
    )


def _adam(fn, learning_rate, b1, b2, eps, eps_root, mu_dtype, nesterov, decay=None) -> GT:
    """Adam (``decay=None``) or AdamW (``decay=(weight_decay, mask)``) named ``fn``.

    The chain has Optax's links exactly (no identity in Adam's), so states interchange.
    """
    links = [_scale_by_adam(fn, b1, b2, eps, eps_root, mu_dtype, nesterov)]
    if decay is not None:
        links.append(_weight_decay(fn, *decay))
    return chain(*links, _learning_rate(fn, learning_rate))


def adam(
    learning_rate: ScalarOrSchedule,
    b1=0.9,
    b2=0.999,
    eps=1e-8,
    eps_root=0.0,
    mu_dtype=None,
    *,
    nesterov: bool = False,
) -> GT:
    """Adam = RMSProp + momentum, with bias correction.

    ``m <- b1 m + (1 - b1) dW``, ``v <- b2 v + (1 - b2) dW**2``,
    ``W <- W - lr * (m / (1 - b1**t)) / (sqrt(v / (1 - b2**t) + eps_root) + eps)``.
    Same as ``optax.adam``; see :func:`scale_by_adam`.

    Args:
      learning_rate: a number, an array or a schedule.
      b1: averaging rate of the gradients.
      b2: averaging rate of the squared gradients.
      eps: added to the denominator outside the square root.
      eps_root: added inside the square root.
      mu_dtype: dtype of ``m`` (default: the params' dtype).
      nesterov: use Nesterov's look-ahead (NAdam).

    Returns:
      An ``optax.GradientTransformationExtraArgs``.
    """
    return _adam("adam", learning_rate, b1, b2, eps, eps_root, mu_dtype, nesterov)


def adamw(
    learning_rate: ScalarOrSchedule,
    b1=0.9,
    b2=0.999,
    eps=1e-8,
    eps_root=0.0,
    mu_dtype=None,
    weight_decay: ScalarOrSchedule = 1e-4,
    mask=None,
    *,
    nesterov: bool = False,
) -> GT:
    """Adam with decoupled weight decay: ``W <- W - lr (adam_step + weight_decay W)``.

    Same as ``optax.adamw``.

    Args:
      learning_rate: a number, an array or a schedule.
      b1: averaging rate of the gradients.
      b2: averaging rate of the squared gradients.
      eps: added to the denominator outside the square root.
      eps_root: added inside the square root.
      mu_dtype: dtype of ``m`` (default: the params' dtype).
      weight_decay: a number, an array or a schedule.
      mask: tree of booleans (or a function of the params returning one) picking
        the leaves that decay.
      nesterov: use Nesterov's look-ahead (NAdamW).

    Returns:
      An ``optax.GradientTransformationExtraArgs``.
    """
    decay = (weight_decay, mask)
    return _adam("adamw", learning_rate, b1, b2, eps, eps_root, mu_dtype, nesterov, decay)


def nadam(
    learning_rate: ScalarOrSchedule,
    b1=0.9,
    b2=0.999,
    eps=1e-8,
    eps_root=0.0,
    mu_dtype=None,
    *,
    nesterov: bool = True,
) -> GT:
    """NAdam: :func:`adam` with Nesterov momentum (``optax.nadam``).

    Args:
      learning_rate, b1, b2, eps, eps_root, mu_dtype: as in :func:`adam`.
      nesterov: use Nesterov's look-ahead (default True).

    Returns:
      An ``optax.GradientTransformationExtraArgs``.
    """
    return _adam("nadam", learning_rate, b1, b2, eps, eps_root, mu_dtype, nesterov)


def nadamw(
    learning_rate: ScalarOrSchedule,
    b1=0.9,
    b2=0.999,
    eps=1e-8,
    eps_root=0.0,
    mu_dtype=None,
    weight_decay: ScalarOrSchedule = 1e-4,
    mask=None,
    *,
    nesterov: bool = True,
) -> GT:
    """NAdamW: :func:`adamw` with Nesterov momentum (``optax.nadamw``).

    Args:
      learning_rate, b1, b2, eps, eps_root, mu_dtype, weight_decay, mask: as in :func:`adamw`.
      nesterov: use Nesterov's look-ahead (default True).

    Returns:
      An ``optax.GradientTransformationExtraArgs``.
    """
    decay = (weight_decay, mask)
    return _adam("nadamw", learning_rate, b1, b2, eps, eps_root, mu_dtype, nesterov, decay)
