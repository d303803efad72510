"""A training step for the hierarchical softmax head that updates only the touched rows.

With ``C`` classes the head holds ``(C - 1, d)`` weights, but one batch touches only the
``B * D`` rows on its labels' paths (``D`` the tree depth). ``jax.grad`` of the loss with
respect to the params would still write a dense ``(C - 1, d)`` gradient (zero off the paths)
and an optimizer would then rewrite every row: at ``C = 100,000``, ``d = 256`` that is more
work than the path computation itself. This step differentiates with respect to the
*gathered* rows instead (``jnn.losses.hierarchical_path``) and scatters the update back into
the donated head in place (``w.at[rows].add(...)``, duplicates summed). Everything below the
head (the "body") uses the ordinary Optax optimizer.

    model = jnn.nn.Serial(jnn.nn.Dense(256), jnn.nn.Relu(), jnn.nn.HierarchicalSoftmax(tree))
    state = jnn.train.init_sparse_head(model, optax.adam(1e-3), key, (256, 64),
                                       head_update="lazy_adam")
    step = jnn.train.make_sparse_head_step(model, optax.adam(1e-3), head_update="lazy_adam",
                                           learning_rate=1e-3)
    state, metrics = step(state, (x, y), key)

The state is a ``jnn.train.TrainState`` whose ``params`` / ``model_state`` are exactly
``model.init``'s, so ``jnn.train.evaluate(model, state.params, state.model_state, x, y,
jnn.losses.hierarchical_softmax_loss)`` and checkpoints work unchanged; only ``opt_state``
differs (a :class:`SparseHeadOptState`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jnn import losses as _losses
from jnn import monitor as _monitor
from jnn._keys import as_key
from jnn.nn import Serial
from jnn.nn._hsoftmax import HierarchicalSoftmax
from jnn.train._state import TrainState
from jnn.train._step import at_least_float32

__all__ = [
    "HEAD_UPDATES",
    "LazyAdamState",
    "SparseHeadOptState",
    "init_sparse_head",
    "make_sparse_head_step",
]

HEAD_UPDATES = ("sgd", "lazy_adam")


class SparseHeadOptState(NamedTuple):
    """The optimizer state of a sparse-head ``TrainState``.

    Attributes:
      body: the body optimizer's state (``optimizer.init`` of the params below the head).
      head: ``optax.EmptyState()`` for ``"sgd"``, a :class:`LazyAdamState` for
        ``"lazy_adam"``.
    """

    body: Any
    head: Any


class LazyAdamState(NamedTuple):
    """Lazy Adam moments of the head.

    Attributes:
      count: int32, the number of updates so far (the global step of the bias correction).
      mu: ``{"w": (C - 1, d), "b": (C - 1,)}`` first moments (rows change only when touched).
      nu: second moments, same shapes.
    """

    count: jax.Array
    mu: Any
    nu: Any


class _RowRule(NamedTuple):
    init: Callable  # head_params -> head opt state
    update: Callable  # (head_params, head_state, rows, grads, count) -> (head_params, head_state)


def _rate(learning_rate, count):
    return learning_rate(count) if callable(learning_rate) else learning_rate


def _sgd_rule(learning_rate) -> _RowRule:
    """``w[r] -= lr * g_r`` for every path entry ``r`` (duplicates summed by the scatter)."""

    def update(params, state, rows, grads, count):
        lr = _rate(learning_rate, count)
        new = {
            name: params[name]
            .at[rows]
            .add((-lr * grads[name]).astype(params[name].dtype), mode="drop")
            for name in ("w", "b")
        }
        return new, state

    return _RowRule(lambda params: optax.EmptyState(), update)


def _unique_rows(rows, grads, num_rows):
    """The distinct touched rows and their gradients summed over the duplicates.

    ``unique`` has ``n = B D`` slots: the distinct ids in increasing order, then the fill id
    ``num_rows`` (out of range, like the padding entries, so scatters with ``mode="drop"`` skip
    them). Cost ``O(B D d)``: no ``(C - 1, d)`` array is formed.
    """
    flat = rows.reshape(-1)
    unique, inverse = jnp.unique(flat, size=flat.size, fill_value=num_rows, return_inverse=True)
    inverse = inverse.reshape(-1)
    summed = {}
    for name, g in grads.items():
        g = g.reshape(flat.size, *g.shape[rows.ndim :])
        summed[name] = jnp.zeros_like(g).at[inverse].add(g)
    return unique, summed


def _lazy_adam_rule(learning_rate, b1, b2, eps) -> _RowRule:
    """Adam's formulas (Optax's numerics) applied to the distinct touched rows only."""

    def init(params):
        zeros = lambda: jax.tree.map(jnp.zeros_like, params)
        return LazyAdamState(jnp.zeros((), jnp.int32), zeros(), zeros())

    def update(params, state, rows, grads, count):
        lr = _rate(learning_rate, count)
        unique, g = _unique_rows(rows, grads, params["w"].shape[0])
        t = optax.safe_increment(state.count)
        t_float = t.astype(jnp.float32)
        take = lambda a: jnp.take(a, unique, axis=0, mode="clip")
        put = lambda a, v: a.at[unique].set(v.astype(a.dtype), mode="drop")
        new_p, new_mu, new_nu = {}, {}, {}
        for name, p in params.items():
            mu = (1 - b1) * g[name] + b1 * take(state.mu[name])
            nu = (1 - b2) * g[name] ** 2 + b2 * take(state.nu[name])
            mu_hat = mu / (1 - b1**t_float).astype(mu.dtype)
            nu_hat = nu / (1 - b2**t_float).astype(nu.dtype)
            step = (-lr * (mu_hat / (jnp.sqrt(nu_hat) + eps))).astype(p.dtype)
            new_p[name] = p.at[unique].add(step, mode="drop")  # distinct rows: p[r] + step
            new_mu[name], new_nu[name] = put(state.mu[name], mu), put(state.nu[name], nu)
        return new_p, LazyAdamState(t, new_mu, new_nu)

    return _RowRule(init, update)


def _check_rule_args(head_update, learning_rate, b1, b2, eps):
    if head_update not in HEAD_UPDATES:
        raise ValueError(f"head_update must be one of {HEAD_UPDATES}, got {head_update!r}.")
    if not callable(learning_rate) and not (
        isinstance(learning_rate, (int, float)) and learning_rate > 0
    ):
        raise ValueError(f"learning_rate must be > 0 or a schedule, got {learning_rate!r}.")
    for name, value in (("b1", b1), ("b2", b2)):
        if not 0 <= value < 1:
            raise ValueError(f"{name} must be in [0, 1), got {value!r}.")
    if not eps > 0:
        raise ValueError(f"eps must be > 0, got {eps!r}.")


def _rule(head_update, learning_rate=1.0, b1=0.9, b2=0.999, eps=1e-8) -> _RowRule:
    _check_rule_args(head_update, learning_rate, b1, b2, eps)
    if head_update == "sgd":
        return _sgd_rule(learning_rate)
    return _lazy_adam_rule(learning_rate, b1, b2, eps)


def _split(model):
    """``(body, head, body_names, head_name)`` of a Serial ending in the head."""
    layers = getattr(model, "layers", ())
    if (
        not isinstance(model, Serial)
        or not layers
        or not isinstance(layers[-1], HierarchicalSoftmax)
    ):
        raise TypeError(
            "the sparse head step needs a jnn.nn.Serial whose last layer is a "
            f"jnn.nn.HierarchicalSoftmax, got {model!r}."
        )
    return Serial(*layers[:-1]), layers[-1], model.names[:-1], model.names[-1]


def init_sparse_head(
    model, optimizer, key, input_shape, *, head_update: str = "sgd", dtype=None
) -> TrainState:
    """Initialises a ``TrainState`` for :func:`make_sparse_head_step`.

    Args:
      model: a ``jnn.nn.Serial`` whose last layer is ``jnn.nn.HierarchicalSoftmax``.
      optimizer: the body's ``optax.GradientTransformation`` (all layers but the head).
      key: a PRNG key (typed or raw).
      input_shape: the input shape including the batch dimension.
      head_update: ``"sgd"`` or ``"lazy_adam"`` (as for the step).
      dtype: optional parameter dtype passed to ``model.init``.

    Returns:
      ``TrainState(params, model_state, SparseHeadOptState(body, head), step=0)`` with the
      params and model state of ``model.init``.
    """
    _, _, body_names, head_name = _split(model)
    rule = _rule(head_update)
    kwargs = {} if dtype is None else {"dtype": dtype}
    shape = tuple(int(d) for d in input_shape)

    @jax.jit
    def build(key):
        params, model_state = model.init(key, shape, **kwargs)
        body = {name: params[name] for name in body_names}
        opt_state = SparseHeadOptState(optimizer.init(body), rule.init(params[head_name]))
        return TrainState(params, model_state, opt_state, jnp.zeros((), jnp.int32))

    return build(as_key(key))


def _check_state(state, head_update):
    opt_state = getattr(state, "opt_state", None)
    head = getattr(opt_state, "head", None)
    if not isinstance(opt_state, SparseHeadOptState) or (
        isinstance(head, LazyAdamState) != (head_update == "lazy_adam")
    ):
        raise TypeError(
            f"make_sparse_head_step(head_update={head_update!r}) needs the state of "
            f"init_sparse_head(..., head_update={head_update!r}); got opt_state "
            f"{type(opt_state).__name__} with head state {type(head).__name__}."
        )


def _body_objective(body, path):
    """``objective(body_params, rows, body_state, x, key)``: the mean path loss as a function
    of the body's params and of the gathered head rows (not of the whole head)."""

    def objective(body_params, rows, body_state, x, key):
        h, new_state = body.apply(body_params, body_state, x, key=key, train=True)
        h = at_least_float32(h)
        path_rows = path._replace(w=rows["w"], b=rows["b"])
        per = _losses.hierarchical_path_loss(h, path_rows)
        hits = _losses.hierarchical_path_correct(jax.lax.stop_gradient(h), path_rows)
        return jnp.mean(per), (jnp.mean(hits), new_state)

    return objective


def _build_step(model, optimizer, rule, head_update, monitor):
    """The plain sparse-head step of :func:`make_sparse_head_step`."""
    body, head, body_names, head_name = _split(model)
    tree_arrays = head.tree

    def step(state: TrainState, batch, key):
        _check_state(state, head_update)
        x, y = batch
        key = jax.random.fold_in(as_key(key), state.step)
        tree = _losses.ClassTree(*(jnp.asarray(a) for a in tree_arrays))
        body_params = {name: state.params[name] for name in body_names}
        body_state = {name: state.model_state[name] for name in body_names}
        head_params = state.params[head_name]
        path = _losses.hierarchical_path(y, head_params, tree)
        grad_fn = jax.value_and_grad(_body_objective(body, path), argnums=(0, 1), has_aux=True)
        rows = {"w": path.w, "b": path.b}
        (loss, (acc, body_state)), (g_body, g_rows) = grad_fn(body_params, rows, body_state, x, key)
        updates, body_opt = optimizer.update(g_body, state.opt_state.body, body_params)
        new_head, head_opt = rule.update(
            head_params, state.opt_state.head, path.nodes, g_rows, state.step
        )
        norms, ratios = {}, {}
        if monitor:
            norms = _monitor.grad_norms(g_body)
            ratios = _monitor.update_ratios(body_params, updates)
        params = {**optax.apply_updates(body_params, updates), head_name: new_head}
        model_state = {**body_state, head_name: state.model_state[head_name]}
        metrics = {"loss": loss, "accuracy": acc, "grad_norm": norms, "update_ratio": ratios}
        opt_state = SparseHeadOptState(body_opt, head_opt)
        return TrainState(params, model_state, opt_state, state.step + 1), metrics

    return step


def make_sparse_head_step(
    model,
    optimizer,
    *,
    head_update: str = "sgd",
    learning_rate: float | Callable = 0.1,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    donate: bool = True,
    jit: bool = True,
    monitor: bool = False,
):
    """A training step that updates only the head rows on the batch's paths, in place.

    The objective is ``mean_i hierarchical_softmax_loss(f(x_i), y_i)`` (no penalties: a dense
    penalty on the head would touch every row; decay the body through its optimizer). The
    gradient is taken with respect to the body's params and the ``B * D`` gathered head rows,
    ``O(B D d)``; the body takes ``optimizer``'s update and the head one of:

    - ``"sgd"``: ``w[r] -= lr * g_r`` for each path entry (``.at[rows].add``, duplicates
      summed). The update of dense SGD (``optax.sgd(lr)`` on the full gradient,
      which is zero off the paths) up to float rounding, without writing the zeros.
    - ``"lazy_adam"``: Adam on the touched rows only, like TensorFlow's ``LazyAdamOptimizer``
      and PyTorch's ``SparseAdam``. The batch's distinct rows get their summed gradient ``g``
      and ``m = b1 m + (1 - b1) g``, ``v = b2 v + (1 - b2) g^2``, ``w -= lr m_hat /
      (sqrt(v_hat) + eps)`` with the bias corrections of the global step ``t``. It differs from
      dense Adam (``optax.adam``) in the rows a batch does not touch: dense Adam decays their
      ``m`` and ``v`` and keeps moving them by ``m_hat / (sqrt(v_hat) + eps)``, lazy Adam leaves
      weights and moments unchanged. When every row is touched every step they are equal.

    The dropout key is ``fold_in(key, state.step)`` and the body's child keys are those of
    ``model`` (as in ``jnn.train.make_step``). Inputs are donated, so under ``jit`` the head
    and its moments are updated in place.

    Args:
      model: a ``jnn.nn.Serial`` whose last layer is ``jnn.nn.HierarchicalSoftmax``.
      optimizer: the body's ``optax.GradientTransformation``.
      head_update: ``"sgd"`` or ``"lazy_adam"`` (the state must come from
        :func:`init_sparse_head` with the same value).
      learning_rate: the head's learning rate, a float or a schedule ``count -> rate``.
      b1, b2, eps: lazy Adam's decay rates and epsilon (Optax's defaults).
      donate: donate the state's buffers (jit only); always use the returned state.
      jit: return the jitted step; ``jit=False`` gives the plain function (vmappable, usable
        inside ``lax.scan``).
      monitor: compute the body's per-layer ``grad_norm`` / ``update_ratio`` (the head's are
        not formed: that would need its dense gradient).

    Returns:
      ``step(state, (x, y), key) -> (state, metrics)``; ``metrics`` has ``"loss"`` (the mean
      loss before the update), ``"accuracy"`` (``jnn.losses.accuracy``'s greedy hits, read
      off the gathered path: no other read of the head, so the in-place update needs no copy),
      ``"grad_norm"`` and ``"update_ratio"`` (``{}`` unless ``monitor``).
    """
    rule = _rule(head_update, learning_rate, b1, b2, eps)
    step = _build_step(model, optimizer, rule, head_update, monitor)
    if not jit:
        return step
    return jax.jit(step, donate_argnums=0 if donate else ())
