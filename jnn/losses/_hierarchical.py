"""Hierarchical softmax: ``p(y)`` is a product of left/right decisions down a binary class tree.

Two forms. The node-logit form (:func:`hierarchical_softmax`, :func:`hierarchical_log_probs`)
takes the ``C - 1`` node logits of a ``Dense(C - 1)`` layer, so the network still pays
``O(d C)`` per example. The head form takes the hidden vector ``h`` ``(batch, d)`` and the head's
parameters ``w`` ``(C - 1, d)``, ``b`` ``(C - 1,)`` (the layer ``jnn.nn.HierarchicalSoftmax``)
and gathers only the ``D = depth`` rows on each label's path: ``O(D d)`` per example for the
loss and its gradient (:func:`hierarchical_softmax_loss`, :func:`hierarchical_path`).

Node ``n``'s logit is ``x_n = w[n] . h + b[n]``; going right has probability ``sigmoid(x_n)``,
left ``sigmoid(-x_n)``, so ``log p(y) = sum_d log sigmoid(s_{y,d} x_{n_{y,d}})`` and the
probabilities of all ``C`` leaves sum to 1.
"""

from collections.abc import Mapping
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jnn.losses._checks import check_labels, check_scores
from jnn.losses._trees import ClassTree, check_tree

__all__ = [
    "HierarchicalOutput",
    "HierarchicalPath",
    "hierarchical_log_probs",
    "hierarchical_path",
    "hierarchical_path_correct",
    "hierarchical_path_loss",
    "hierarchical_predict",
    "hierarchical_softmax",
    "hierarchical_softmax_loss",
]


class HierarchicalOutput(NamedTuple):
    """What ``jnn.nn.HierarchicalSoftmax`` returns: the hidden vectors and the head (a pytree).

    The head does not compute any class score in ``apply``: the loss gathers the rows it needs
    (:func:`hierarchical_softmax_loss`), :func:`jnn.losses.accuracy` descends greedily and
    :func:`jnn.losses.log_probabilities` computes all classes. ``shape`` is the shape of the
    class scores it stands for, ``(*batch, C)``.

    Attributes:
      h: ``(..., d)`` hidden vectors (the head's input).
      w: ``(C - 1, d)`` node weights, the head's ``params["w"]``.
      b: ``(C - 1,)`` node biases, the head's ``params["b"]``.
      tree: the :class:`ClassTree` over ``C`` classes.
    """

    h: jax.Array
    w: jax.Array
    b: jax.Array
    tree: ClassTree

    @property
    def shape(self) -> tuple:
        return (*self.h.shape[:-1], self.tree.nodes.shape[0])

    @property
    def num_classes(self) -> int:
        return self.tree.nodes.shape[0]


class HierarchicalPath(NamedTuple):
    """The head rows on each label's root-to-leaf path (:func:`hierarchical_path`).

    Attributes:
      nodes: ``(..., D)`` int32 row indices into ``w``/``b``; padding entries (past the leaf)
        and every entry of an invalid label hold ``C - 1``, one past the last row, so a scatter
        with ``mode="drop"`` skips them.
      signs: ``(..., D)`` ``+1`` right, ``-1`` left, ``0`` padding (and invalid labels).
      w: ``(..., D, d)`` the gathered rows ``w[nodes]``.
      b: ``(..., D)`` the gathered biases.
      valid: ``(...,)`` bool, the label lies in ``[0, C)``.
    """

    nodes: jax.Array
    signs: jax.Array
    w: jax.Array
    b: jax.Array
    valid: jax.Array


# ----------------------------------------------------------------------------- checks


def _check_node_logits(fn, node_logits, tree):
    node_logits = check_scores(fn, node_logits)
    tree = check_tree(fn, tree)
    if node_logits.shape[-1] != tree.num_nodes:
        raise ValueError(
            f"{fn}: node_logits must have shape (batch, {tree.num_nodes}) (one logit per "
            f"internal node of a {tree.num_classes}-class tree), got {node_logits.shape}."
        )
    return node_logits, tree


def _check_head(fn, w, b, tree, dim=None):
    """Floating ``w`` ``(C - 1, d)`` and ``b`` ``(C - 1,)`` for ``tree`` (``d = dim`` if given)."""
    tree = check_tree(fn, tree)
    w, b = check_scores(fn, w), check_scores(fn, b)
    dim = w.shape[-1] if dim is None else dim
    if w.shape != (tree.num_nodes, dim) or b.shape != (tree.num_nodes,):
        raise ValueError(
            f"{fn}: a {tree.num_classes}-class tree on {dim}-dimensional hidden vectors needs a "
            f"head with w of shape {(tree.num_nodes, dim)} and b {(tree.num_nodes,)}, got "
            f"{w.shape} and {b.shape}."
        )
    return w, b, tree


def _head_arrays(fn, head_params):
    if not (isinstance(head_params, Mapping) and {"w", "b"} <= set(head_params)):
        raise TypeError(
            f"{fn}: head_params must be the head's params {{'w': (C - 1, d), 'b': (C - 1,)}}, "
            f"got {type(head_params).__name__}."
        )
    return head_params["w"], head_params["b"]


def _as_output(fn, h, head_params=None, tree=None) -> HierarchicalOutput:
    """The head's output from ``(h, head_params, tree)`` or a :class:`HierarchicalOutput`."""
    if isinstance(h, HierarchicalOutput):
        if head_params is not None or tree is not None:
            raise TypeError(f"{fn}: pass either a HierarchicalOutput alone or (h, ..., tree).")
        h, w, b, tree = h
    else:
        if tree is None:
            raise TypeError(
                f"{fn}: with a hidden array h pass head_params and tree, or pass the head's "
                "HierarchicalOutput alone."
            )
        w, b = _head_arrays(fn, head_params)
    h = check_scores(fn, h)
    w, b, tree = _check_head(fn, w, b, tree, h.shape[-1])
    return HierarchicalOutput(h, w, b, tree)


def _class_shape(out):
    return jax.ShapeDtypeStruct(out.shape, jnp.float32)


# ----------------------------------------------------------------------------- numerics


def _path_log_sigmoids(x, signs):
    """``sum_d log sigmoid(s_d x_d)`` over the non-padding entries (``s_d != 0``)."""
    signs = signs.astype(x.dtype)
    terms = jax.nn.log_sigmoid(signs * x)
    return jnp.sum(jnp.where(signs != 0, terms, jnp.zeros_like(terms)), axis=-1)


def _gather_path(labels, w, b, tree) -> HierarchicalPath:
    num_classes = tree.nodes.shape[0]
    valid = (labels >= 0) & (labels < num_classes)
    nodes = jnp.take(tree.nodes, labels, axis=0, mode="clip").astype(jnp.int32)
    signs = jnp.take(tree.signs, labels, axis=0, mode="clip")
    on_path = (signs != 0) & valid[..., None]
    return HierarchicalPath(
        nodes=jnp.where(on_path, nodes, jnp.full_like(nodes, num_classes - 1)),
        signs=jnp.where(on_path, signs, jnp.zeros_like(signs)),
        w=jnp.take(w, nodes, axis=0, mode="clip"),
        b=jnp.take(b, nodes, axis=0, mode="clip"),
        valid=valid,
    )


def _path_logits(h, path):
    """``x_d = w_d . h + b_d`` for the ``D`` gathered rows: ``(..., D)``."""
    return jnp.einsum("...kd,...d->...k", path.w.astype(h.dtype), h) + path.b.astype(h.dtype)


def _path_nll(h, path):
    loss = -_path_log_sigmoids(_path_logits(h, path), path.signs)
    return jnp.where(path.valid, loss, jnp.full_like(loss, jnp.nan))


def _path_hits(h, path):
    """1.0 where the greedy descent reaches the label: every decision on the label's path goes
    the label's way (``x > 0`` exactly when the path goes right), else 0.0."""
    x = _path_logits(h, path)
    agree = ((x > 0) == (path.signs > 0)) | (path.signs == 0)
    return (jnp.all(agree, axis=-1) & path.valid).astype(jnp.float32)


@jax.jit
def _head_nll(out, labels):
    return _path_nll(out.h, _gather_path(labels, out.w, out.b, out.tree))


@jax.jit
def _node_logit_nll(node_logits, labels, tree):
    path_nodes = jnp.take(tree.nodes, labels, axis=0, mode="clip")
    path_signs = jnp.take(tree.signs, labels, axis=0, mode="clip")
    gathered = jnp.take_along_axis(node_logits, path_nodes.astype(jnp.int32), axis=-1)
    loss = -_path_log_sigmoids(gathered, path_signs)
    valid = (labels >= 0) & (labels < tree.nodes.shape[0])
    return jnp.where(valid, loss, jnp.full_like(loss, jnp.nan))


@jax.jit
def _all_log_probs(node_logits, tree):
    """``(..., C)`` log-probabilities, one depth at a time: ``O(C)`` memory per example."""
    log_right = jax.nn.log_sigmoid(node_logits)
    log_left = jax.nn.log_sigmoid(-node_logits)
    zero = jnp.zeros((), node_logits.dtype)

    def add_depth(d, acc):
        node = tree.nodes[:, d]
        sign = tree.signs[:, d]
        right = jnp.take(log_right, node, axis=-1, mode="clip")
        left = jnp.take(log_left, node, axis=-1, mode="clip")
        return acc + jnp.where(sign > 0, right, jnp.where(sign < 0, left, zero))

    acc = jnp.zeros((*node_logits.shape[:-1], tree.nodes.shape[0]), node_logits.dtype)
    return jax.lax.fori_loop(0, tree.nodes.shape[1], add_depth, acc)


def _node_logits(out):
    """``x = h @ w.T + b``, ``(..., C - 1)``: every node's logit (``O(C d)``)."""
    logits = jnp.einsum("...d,nd->...n", out.h, out.w.astype(out.h.dtype))
    b = out.b.astype(out.h.dtype)
    return logits + b.reshape((1,) * (logits.ndim - 1) + b.shape)


@jax.jit
def _head_hits(out, labels):
    return _path_hits(out.h, _gather_path(labels, out.w, out.b, out.tree))


@jax.jit
def _head_log_probs(out):
    return _all_log_probs(_node_logits(out), out.tree)


@jax.jit
def _greedy(out):
    """Descend from the root taking the more likely side (``x > 0``: right) at every node."""
    h, w, b, tree = out

    def down(_, cur):
        internal = cur >= 0
        node = jnp.where(internal, cur, jnp.zeros_like(cur))
        x = jnp.einsum("...d,...d->...", jnp.take(w, node, axis=0).astype(h.dtype), h)
        x = x + jnp.take(b, node).astype(h.dtype)
        child = tree.children[node, (x > 0).astype(jnp.int32)]
        return jnp.where(internal, child, cur)

    start = jnp.zeros(h.shape[:-1], jnp.int32)
    leaf = jax.lax.fori_loop(0, tree.nodes.shape[1], down, start)
    return (-1 - leaf).astype(jnp.int32)


# ----------------------------------------------------------------------------- node logits


def hierarchical_softmax(node_logits, labels, tree):
    """Hierarchical softmax loss from node logits: ``-log p(y)``, a product of binary decisions.

    ``L_i = -sum_d log sigmoid(s_{y,d} * x[n_{y,d}])`` over the label's root-to-leaf path
    (nodes ``n_{y,d}``, signs ``s_{y,d} = +-1``), computed with ``log_sigmoid``. Only the
    path's ``D`` logits are gathered, but a ``Dense(C - 1)`` layer producing ``node_logits``
    still costs ``O(d C)``: for the fast head see :func:`hierarchical_softmax_loss`. At zero
    logits ``L_i = depth(y) * log 2`` (``log C`` for a balanced tree with ``C`` a power of 2).

    Args:
      node_logits: ``(batch, C - 1)`` raw scores, one per internal node (``Dense(C - 1)``).
      labels: integer class indices, shape ``(batch,)``.
      tree: a :class:`ClassTree` over ``C`` classes (e.g. ``balanced_class_tree(C)``).

    Returns:
      ``(batch,)`` losses in the dtype of ``node_logits`` (NaN for an out-of-range label under
      ``jit``).
    """
    fn = "hierarchical_softmax"
    node_logits, tree = _check_node_logits(fn, node_logits, tree)
    class_shape = jax.ShapeDtypeStruct((*node_logits.shape[:-1], tree.num_classes), jnp.float32)
    labels = check_labels(fn, class_shape, labels)
    return _node_logit_nll(node_logits, labels, tree)


def hierarchical_log_probs(node_logits, tree):
    """Log-probabilities of all ``C`` classes from node logits.

    ``log p(c) = sum_d log sigmoid(s_{c,d} * x[n_{c,d}])``; each row sums to 1 in probability
    space. Cost ``O(C D)`` per example, computed one depth at a time (memory ``O(C)`` per
    example).

    Args:
      node_logits: ``(batch, C - 1)`` raw scores, one per internal node.
      tree: a :class:`ClassTree` over ``C`` classes.

    Returns:
      ``(batch, C)`` log-probabilities in the dtype of ``node_logits``.
    """
    node_logits, tree = _check_node_logits("hierarchical_log_probs", node_logits, tree)
    return _all_log_probs(node_logits, tree)


# ----------------------------------------------------------------------------- head


def hierarchical_softmax_loss(h, labels, head_params=None, tree=None):
    """Hierarchical softmax loss of the head: ``-log p(y)``, gathering only ``y``'s path.

    ``L_i = -sum_d log sigmoid(s_{y,d} (w[n_{y,d}] . h_i + b[n_{y,d}]))`` over the ``D`` nodes
    of the label's path: ``O(D d)`` per example for the loss and its gradient, against
    ``O(C d)`` for a softmax. Equals ``-log_probabilities(outputs)[i, y_i]`` and, with
    ``C = 2``, logistic regression. The gradient reaches ``w`` through a gather, so under
    ``jax.grad`` of the params it is a dense ``(C - 1, d)`` array that is zero off the paths;
    ``jnn.train.make_sparse_head_step`` updates only the touched rows instead.

    Two call forms:

    - ``hierarchical_softmax_loss(h, labels, head_params, tree)``: ``h`` ``(batch, d)``,
      ``head_params = {"w": (C - 1, d), "b": (C - 1,)}``.
    - ``hierarchical_softmax_loss(outputs, labels)``: ``outputs`` the
      :class:`HierarchicalOutput` of ``jnn.nn.HierarchicalSoftmax``, so this function is the
      ``loss(outputs, targets)`` of ``jnn.train.make_step`` / ``fit`` / ``evaluate``.

    Args:
      h: ``(batch, d)`` hidden vectors, or the head's :class:`HierarchicalOutput`.
      labels: integer class indices, shape ``(batch,)``.
      head_params: the head's params (omit with a :class:`HierarchicalOutput`).
      tree: the :class:`ClassTree` (omit with a :class:`HierarchicalOutput`).

    Returns:
      ``(batch,)`` losses in the dtype of ``h`` (NaN for an out-of-range label under ``jit``).
    """
    fn = "hierarchical_softmax_loss"
    out = _as_output(fn, h, head_params, tree)
    labels = check_labels(fn, _class_shape(out), labels)
    return _head_nll(out, labels)


def hierarchical_path(labels, head_params, tree) -> HierarchicalPath:
    """Gathers the head rows on each label's path: the sparse half of the loss.

    ``jax.grad`` of :func:`hierarchical_path_loss` with respect to the returned ``w`` and ``b``
    gives the gradient of the touched rows only, ``(batch, D, d)``; scatter it back with
    ``w.at[path.nodes].add(update, mode="drop")`` (duplicates summed; padding dropped).

    Args:
      labels: integer class indices, shape ``(batch,)``.
      head_params: ``{"w": (C - 1, d), "b": (C - 1,)}``.
      tree: the :class:`ClassTree` over ``C`` classes.

    Returns:
      A :class:`HierarchicalPath` ``(nodes, signs, w, b, valid)``.
    """
    fn = "hierarchical_path"
    w, b, tree = _check_head(fn, *_head_arrays(fn, head_params), tree)
    class_shape = jax.ShapeDtypeStruct((*jnp.shape(labels), tree.num_classes), jnp.float32)
    labels = check_labels(fn, class_shape, labels)
    return _gather_path(labels, w, b, tree)


def _check_path_fits(fn, h, path):
    h = check_scores(fn, h)
    if not isinstance(path, HierarchicalPath):
        raise TypeError(f"{fn}: path must be a HierarchicalPath, got {type(path).__name__}.")
    if path.w.shape[:-2] != h.shape[:-1] or path.w.shape[-1] != h.shape[-1]:
        raise ValueError(
            f"{fn}: path rows of shape {path.w.shape} do not fit h of shape {h.shape} "
            "(expected (*batch, D, d) with h (*batch, d))."
        )
    return h


def hierarchical_path_loss(h, path: HierarchicalPath):
    """``-log p(y)`` from the gathered path rows: ``-sum_d log sigmoid(s_d (w_d . h + b_d))``.

    Args:
      h: ``(batch, d)`` hidden vectors.
      path: the :class:`HierarchicalPath` of the labels (:func:`hierarchical_path`).

    Returns:
      ``(batch,)`` losses in the dtype of ``h``; NaN where ``path.valid`` is false.
    """
    h = _check_path_fits("hierarchical_path_loss", h, path)
    return _path_nll(h, path)


def hierarchical_path_correct(h, path: HierarchicalPath):
    """Whether the greedy descent (:func:`hierarchical_predict`) reaches each label.

    The descent reaches leaf ``y`` exactly when every decision on ``y``'s path goes ``y``'s
    way, ``(w_d . h + b_d > 0) == (s_d > 0)`` for all ``d`` (once it leaves the path it cannot
    come back), so the hit needs only the gathered path, ``O(D d)`` and no sequential descent.

    Args:
      h: ``(batch, d)`` hidden vectors.
      path: the :class:`HierarchicalPath` of the labels (:func:`hierarchical_path`).

    Returns:
      ``(batch,)`` float32, 1.0 for a hit and 0.0 otherwise (also for an invalid label).
    """
    _check_path_fits("hierarchical_path_correct", h, path)
    return _path_hits(h, path)


def hierarchical_predict(h, head_params=None, tree=None, *, method="greedy"):
    """Predicted classes of the head, by greedy descent or by the exact argmax.

    ``"greedy"``: start at the root and take the more likely side at every node (right when
    ``w[n] . h + b[n] > 0``), ``O(D d)`` per example. ``"exact"``: ``argmax_c log p(c)`` over
    all classes (ties to the first), ``O(C d)``. They agree whenever every decision on the
    greedy path is confident enough: if each has probability at least ``q`` with
    ``q^D > 1 - q``, the greedy leaf has probability ``>= q^D`` and every other leaf
    ``<= 1 - q``. They can differ when a decision near the root is close to 1/2, e.g.
    ``p(left) = 0.45`` for a single class but ``0.55 / 2`` for each of two classes on the right:
    greedy goes right, the exact argmax is the left class.

    Args:
      h: ``(batch, d)`` hidden vectors, or the head's :class:`HierarchicalOutput`.
      head_params, tree: as for :func:`hierarchical_softmax_loss` (omit with an output).
      method: ``"greedy"`` or ``"exact"``.

    Returns:
      ``(batch,)`` int32 class indices.
    """
    fn = "hierarchical_predict"
    if method not in ("greedy", "exact"):
        raise ValueError(f"{fn}: method must be 'greedy' or 'exact', got {method!r}.")
    out = _as_output(fn, h, head_params, tree)
    if method == "greedy":
        return _greedy(out)
    return jnp.argmax(_head_log_probs(out), axis=-1).astype(jnp.int32)


def head_log_probs(outputs):
    """``(..., C)`` log-probabilities of all classes from a :class:`HierarchicalOutput`."""
    return _head_log_probs(_as_output("log_probabilities", outputs))


def head_hits(outputs, labels):
    """``(batch,)`` greedy-descent hits of a :class:`HierarchicalOutput` (for ``accuracy``)."""
    return _head_hits(_as_output("top1_correct", outputs), labels)
