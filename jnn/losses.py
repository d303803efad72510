"""Per-example losses: every function returns one value per example, shape ``(batch,)``.

Average them yourself (``loss(...).mean()``) or hand them to :func:`jnn.train.make_step`.
Losses are applied to raw scores (the output layer has no activation). Outputs keep the
floating dtype of the scores (float64 in, float64 out).

Input checks. Dtype and shape checks always run (dtypes and shapes are static, so they also
work under ``jit``/``vmap``/``grad``). Value checks (labels within ``[0, C)``, targets within
``[0, 1]``) need concrete values: they run when the inputs are concrete arrays and are skipped
for tracers. Under ``jit``, an out-of-range integer label gives a **NaN** loss for that
example instead of an error (so a NaN monitor catches it; it never silently picks a class).
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "ClassTree",
    "accuracy",
    "balanced_class_tree",
    "class_tree_from_codes",
    "hierarchical_log_probs",
    "hierarchical_softmax",
    "l2_loss",
    "multiclass_hinge",
    "sigmoid_binary_cross_entropy",
    "softmax_cross_entropy",
]


def _host_values(x):
    """``x`` as a NumPy array when its values are known now, else ``None`` (a tracer)."""
    if isinstance(x, jax.core.Tracer):
        return None
    try:
        return np.asarray(x)
    except jax.errors.TracerArrayConversionError:
        return None


def _check_scores(fn, scores):
    scores = jnp.asarray(scores)
    if not jnp.issubdtype(scores.dtype, jnp.floating):
        raise TypeError(f"{fn}: expected floating-point scores/logits, got dtype {scores.dtype}.")
    if scores.ndim < 1:
        raise ValueError(f"{fn}: expected scores of shape (batch, classes), got shape ().")
    return scores


def _check_labels(fn, scores, labels):
    """Integer labels of shape ``scores.shape[:-1]``; range-checked when concrete."""
    host = _host_values(labels)
    labels_arr = jnp.asarray(labels)
    if not jnp.issubdtype(labels_arr.dtype, jnp.integer):
        raise TypeError(
            f"{fn}: expected integer class labels of shape {scores.shape[:-1]}, got dtype "
            f"{labels_arr.dtype} with shape {labels_arr.shape}. One-hot or float labels are not "
            "accepted: convert with labels.argmax(-1) or labels.astype(int)."
        )
    if labels_arr.shape != scores.shape[:-1]:
        raise ValueError(
            f"{fn}: labels must have shape {scores.shape[:-1]} (scores {scores.shape} without the "
            f"class axis), got {labels_arr.shape}."
        )
    num_classes = scores.shape[-1]
    if host is not None and host.size:
        low, high = int(host.min()), int(host.max())
        if low < 0 or high >= num_classes:
            raise ValueError(
                f"{fn}: labels must lie in [0, {num_classes}) for {num_classes} classes, got "
                f"values in [{low}, {high}]."
            )
    return labels_arr


def _nan_if_invalid(loss, labels, num_classes):
    valid = (labels >= 0) & (labels < num_classes)
    return jnp.where(valid, loss, jnp.full_like(loss, jnp.nan))


def _label_scores(scores, labels):
    # One-hot selection: an out-of-range label selects nothing; _nan_if_invalid then flags it.
    one_hot = jax.nn.one_hot(labels, scores.shape[-1], dtype=scores.dtype)
    return jnp.sum(scores * one_hot, axis=-1), one_hot


def softmax_cross_entropy(logits, labels):
    """Softmax cross-entropy with integer labels: ``-log softmax(logits)[y]``.

    ``L_i = log sum_j exp(s_j) - s_y``, with the log-sum-exp computed stably as
    ``m + log sum_j exp(s_j - m)``, ``m = max_j s_j``. At zero logits ``L_i = log C`` (the
    first-iteration sanity check). Same values as
    ``optax.softmax_cross_entropy_with_integer_labels``.

    Args:
      logits: ``(batch, C)`` raw scores (any leading shape ``(..., C)`` works).
      labels: integer class indices, shape ``(batch,)`` (``logits.shape[:-1]``).

    Returns:
      ``(batch,)`` losses in the dtype of ``logits``.
    """
    logits = _check_scores("softmax_cross_entropy", logits)
    labels = _check_labels("softmax_cross_entropy", logits, labels)
    return _softmax_ce(logits, labels)


# The numerics are jitted so an eager call compiles one fused kernel, not one per jnp op
# (under an outer jit they are simply inlined).
@jax.jit
def _softmax_ce(logits, labels):
    m = jax.lax.stop_gradient(jnp.max(logits, axis=-1, keepdims=True))
    m = jnp.where(jnp.isfinite(m), m, jnp.zeros_like(m))  # all -inf rows: avoid inf - inf
    lse = jnp.log(jnp.sum(jnp.exp(logits - m), axis=-1)) + m[..., 0]
    label_logit, _ = _label_scores(logits, labels)
    return _nan_if_invalid(lse - label_logit, labels, logits.shape[-1])


def multiclass_hinge(scores, labels, margin=1.0):
    """Weston–Watkins multiclass SVM loss (the notes' SVM loss).

    ``L_i = sum_{j != y} max(0, s_j - s_y + margin)``, so at zero scores
    ``L_i = (C - 1) * margin``. This is **not** ``optax.multiclass_hinge_loss``, which is the
    Crammer–Singer form ``max(0, max_{j != y} s_j + margin - s_y)`` (``margin`` at zero
    scores). The subgradient of ``max(0, .)`` at exactly 0 is taken as 0.

    Args:
      scores: ``(batch, C)`` raw scores.
      labels: integer class indices, shape ``(batch,)``.
      margin: the margin ``Delta`` (default 1).

    Returns:
      ``(batch,)`` losses in the dtype of ``scores``.
    """
    scores = _check_scores("multiclass_hinge", scores)
    labels = _check_labels("multiclass_hinge", scores, labels)
    return _hinge(scores, labels, margin)


@jax.jit
def _hinge(scores, labels, margin):
    correct, one_hot = _label_scores(scores, labels)
    margins = scores - correct[..., None] + margin
    margins = jnp.where((margins > 0) & (one_hot == 0), margins, jnp.zeros_like(margins))
    return _nan_if_invalid(jnp.sum(margins, axis=-1), labels, scores.shape[-1])


def sigmoid_binary_cross_entropy(logits, targets):
    """Attribute (multi-label) classification: one independent logistic loss per attribute,
    **summed** over attributes.

    ``L_i = sum_a [ -t_a log sigmoid(x_a) - (1 - t_a) log(1 - sigmoid(x_a)) ]``, computed as
    ``softplus(x) - t x`` (stable for large ``|x|``). At zero logits each attribute contributes
    ``log 2``, so ``L_i = A log 2`` for ``A`` attributes (divide by ``A`` for the per-attribute
    mean). Per attribute it equals ``optax.sigmoid_binary_cross_entropy``.

    Args:
      logits: ``(batch, A)`` raw scores, one per attribute.
      targets: ``(batch, A)`` in ``[0, 1]`` (bool, int or float; soft targets allowed), cast to
        the dtype of ``logits``.

    Returns:
      ``(batch,)`` losses in the dtype of ``logits``.
    """
    fn = "sigmoid_binary_cross_entropy"
    logits = _check_scores(fn, logits)
    host = _host_values(targets)
    targets_arr = jnp.asarray(targets)
    if targets_arr.shape != logits.shape:
        raise ValueError(
            f"{fn}: targets must have the shape of logits {logits.shape} (one 0/1 target per "
            f"attribute), got {targets_arr.shape}."
        )
    if host is not None and host.size:
        host = host.astype(np.float64)
        if host.min() < 0 or host.max() > 1:
            raise ValueError(
                f"{fn}: targets must lie in [0, 1], got values in [{host.min()}, {host.max()}]."
            )
    return _bce(logits, targets_arr)


@jax.jit
def _bce(logits, targets):
    per_attribute = jax.nn.softplus(logits) - targets.astype(logits.dtype) * logits
    return jnp.sum(per_attribute, axis=-1)


def l2_loss(pred, target):
    """Regression loss: squared L2 norm of the error, ``L_i = ||pred_i - target_i||^2``.

    The sum of squares over all trailing (non-batch) axes, with **no** 0.5 factor (the notes'
    "L2 norm between predicted and actual", squared so it is smooth; ``optax.l2_loss`` is
    ``0.5 * (pred - target)^2`` elementwise, ``optax.squared_error`` matches this per
    element). The gradient grows with the error, which is what makes regression fragile: the
    notes advise discretising into classes where possible.

    Args:
      pred: ``(batch, ...)`` predictions (floating).
      target: same shape; cast to the dtype of ``pred``.

    Returns:
      ``(batch,)`` losses in the dtype of ``pred``.
    """
    pred = _check_scores("l2_loss", pred)
    target = jnp.asarray(target)
    if target.shape != pred.shape:
        raise ValueError(f"l2_loss: target must have shape {pred.shape}, got {target.shape}.")
    return _l2(pred, target)


@jax.jit
def _l2(pred, target):
    diff = pred - target.astype(pred.dtype)
    return jnp.sum(jnp.square(diff), axis=tuple(range(1, pred.ndim)))


def accuracy(logits, labels):
    """Fraction of examples whose highest score is the label (ties: the first maximum).

    Args:
      logits: ``(batch, C)`` scores.
      labels: integer class indices, shape ``(batch,)``.

    Returns:
      A scalar in the dtype of ``logits``.
    """
    logits = _check_scores("accuracy", logits)
    labels = _check_labels("accuracy", logits, labels)
    return _accuracy(logits, labels)


@jax.jit
def _accuracy(logits, labels):
    predicted = jnp.argmax(logits, axis=-1).astype(labels.dtype)
    return jnp.mean((predicted == labels).astype(logits.dtype))


# ----- hierarchical softmax over a binary class tree -----


class ClassTree(NamedTuple):
    """A binary tree over ``C`` classes, stored as each class's root-to-leaf path.

    The ``C - 1`` internal nodes are numbered ``0 .. C-2`` (root 0) and each has one logit
    (the output layer is ``Dense(C - 1)``). A pytree of two arrays: pass it through
    ``jit``/``vmap`` (``in_axes=None``) like any argument.

    Attributes:
      nodes: ``(C, D)`` int32, ``nodes[c, d]`` the internal node class ``c`` passes at depth
        ``d``; padding entries (past the leaf) are 0.
      signs: ``(C, D)`` float32, ``+1`` go right (``sigmoid(x)``), ``-1`` go left
        (``sigmoid(-x)``), ``0`` padding.
    """

    nodes: jax.Array
    signs: jax.Array

    @property
    def num_classes(self) -> int:
        return self.nodes.shape[0]

    @property
    def num_nodes(self) -> int:
        return self.nodes.shape[0] - 1

    @property
    def depth(self) -> int:
        return self.nodes.shape[1]


def class_tree_from_codes(codes):
    """A :class:`ClassTree` from one binary code per class (e.g. Huffman codes).

    ``codes[c]`` is a string of ``'0'`` (left) / ``'1'`` (right) giving class ``c``'s path from
    the root. The codes must form a full binary tree: non-empty, prefix-free and complete
    (``sum_c 2^-len(code_c) = 1``), so there are exactly ``C - 1`` internal nodes. Nodes are
    numbered in order of first use (pre-order when the codes are listed left to right).

    Args:
      codes: sequence of ``C >= 2`` strings of ``'0'``/``'1'``.

    Returns:
      A :class:`ClassTree` with depth ``max_c len(code_c)``.
    """
    codes = [str(code) for code in codes]
    if len(codes) < 2:
        raise ValueError(f"class_tree_from_codes: need at least 2 classes, got {len(codes)}.")
    for c, code in enumerate(codes):
        if not code or set(code) - {"0", "1"}:
            raise ValueError(
                f"class_tree_from_codes: code {c} must be a non-empty string of '0'/'1', "
                f"got {code!r}."
            )
    ordered = sorted(codes)  # a prefix sorts directly before a code it prefixes
    for a, b in zip(ordered, ordered[1:], strict=False):
        if b.startswith(a):
            raise ValueError(
                f"class_tree_from_codes: codes must be prefix-free, {a!r} is a prefix of {b!r}."
            )
    depth = max(len(code) for code in codes)
    if sum(2 ** (depth - len(code)) for code in codes) != 2**depth:
        raise ValueError(
            "class_tree_from_codes: codes must form a complete binary tree "
            "(sum of 2^-len(code) must be 1); some internal node has only one child."
        )
    index = {}  # code prefix -> internal node id
    nodes = np.zeros((len(codes), depth), np.int32)
    signs = np.zeros((len(codes), depth), np.float32)
    for c, code in enumerate(codes):
        for d, bit in enumerate(code):
            nodes[c, d] = index.setdefault(code[:d], len(index))
            signs[c, d] = 1.0 if bit == "1" else -1.0
    return ClassTree(jnp.asarray(nodes), jnp.asarray(signs))


def balanced_class_tree(num_classes):
    """A balanced :class:`ClassTree`: depth ``ceil(log2 C)``, leaf depths differ by at most 1.

    Classes ``[lo, hi)`` under a node split into a left half of ``ceil(n / 2)`` and a right half
    of ``floor(n / 2)``, so every subtree holds a contiguous range of class indices (order the
    classes so that similar ones are adjacent). Nodes are numbered in pre-order.

    Args:
      num_classes: ``C >= 2``.

    Returns:
      A :class:`ClassTree` with ``C - 1`` internal nodes.
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)):
        raise TypeError(f"balanced_class_tree: num_classes must be an int, got {num_classes!r}.")
    if num_classes < 2:
        raise ValueError(
            f"balanced_class_tree: need at least 2 classes (C - 1 >= 1 internal nodes), got "
            f"{num_classes}."
        )
    codes = [""] * int(num_classes)

    def split(lo, hi, prefix):
        if hi - lo == 1:
            codes[lo] = prefix
            return
        mid = lo + (hi - lo + 1) // 2
        split(lo, mid, prefix + "0")
        split(mid, hi, prefix + "1")

    split(0, int(num_classes), "")
    return class_tree_from_codes(codes)


def _check_tree(fn, node_logits, tree):
    if not isinstance(tree, ClassTree):
        raise TypeError(f"{fn}: expected a ClassTree (see balanced_class_tree), got {type(tree)}.")
    nodes, signs = jnp.asarray(tree.nodes), jnp.asarray(tree.signs)
    if not jnp.issubdtype(nodes.dtype, jnp.integer) or not jnp.issubdtype(
        signs.dtype, jnp.floating
    ):
        raise TypeError(
            f"{fn}: tree.nodes must be integer and tree.signs floating, got {nodes.dtype} and "
            f"{signs.dtype}."
        )
    if nodes.ndim != 2 or signs.shape != nodes.shape or nodes.shape[0] < 2:
        raise ValueError(
            f"{fn}: tree.nodes and tree.signs must both have shape (C, D) with C >= 2, got "
            f"{nodes.shape} and {signs.shape}."
        )
    num_classes = nodes.shape[0]
    if node_logits.shape[-1] != num_classes - 1:
        raise ValueError(
            f"{fn}: node_logits must have shape (batch, {num_classes - 1}) (one logit per "
            f"internal node of a {num_classes}-class tree), got {node_logits.shape}."
        )
    host = _host_values(nodes)
    if host is not None and host.size and (host.min() < 0 or host.max() >= num_classes - 1):
        raise ValueError(
            f"{fn}: tree.nodes must lie in [0, {num_classes - 1}), got values in "
            f"[{host.min()}, {host.max()}]."
        )
    return nodes, signs


def hierarchical_softmax(node_logits, labels, tree):
    """Hierarchical softmax loss: ``-log p(y)`` with ``p(y)`` a product of binary decisions.

    ``L_i = -sum_d log sigmoid(s_{y,d} * x[n_{y,d}])`` over the label's root-to-leaf path
    (nodes ``n_{y,d}``, signs ``s_{y,d} = +-1``), computed with ``log_sigmoid``. Only the
    path's ``D = O(log C)`` logits are gathered: cost ``O(log C)`` per example instead of
    ``O(C)``. At zero logits ``L_i = depth(y) * log 2`` (``log C`` for a balanced tree with
    ``C`` a power of 2).

    Args:
      node_logits: ``(batch, C - 1)`` raw scores, one per internal node (``Dense(C - 1)``).
      labels: integer class indices, shape ``(batch,)``.
      tree: a :class:`ClassTree` over ``C`` classes (e.g. ``balanced_class_tree(C)``).

    Returns:
      ``(batch,)`` losses in the dtype of ``node_logits``.
    """
    fn = "hierarchical_softmax"
    node_logits = _check_scores(fn, node_logits)
    nodes, signs = _check_tree(fn, node_logits, tree)
    class_shape = jax.ShapeDtypeStruct(node_logits.shape[:-1] + (nodes.shape[0],), jnp.float32)
    labels = _check_labels(fn, class_shape, labels)
    return _hsoftmax(node_logits, labels, nodes, signs)


def _path_log_sigmoids(gathered, signs):
    signs = signs.astype(gathered.dtype)
    terms = jax.nn.log_sigmoid(signs * gathered)
    return jnp.sum(jnp.where(signs != 0, terms, jnp.zeros_like(terms)), axis=-1)


@jax.jit
def _hsoftmax(node_logits, labels, nodes, signs):
    path_nodes = jnp.take(nodes, labels, axis=0, mode="clip")  # (..., D)
    path_signs = jnp.take(signs, labels, axis=0, mode="clip")
    gathered = jnp.take_along_axis(node_logits, path_nodes.astype(jnp.int32), axis=-1)
    loss = -_path_log_sigmoids(gathered, path_signs)
    return _nan_if_invalid(loss, labels, nodes.shape[0])


def hierarchical_log_probs(node_logits, tree):
    """Log-probabilities of all ``C`` classes under the hierarchical softmax.

    ``log p(c) = sum_d log sigmoid(s_{c,d} * x[n_{c,d}])``; each row sums to 1 in probability
    space. Cost ``O(C log C)`` per example: use it for prediction (``argmax``) and accuracy, and
    :func:`hierarchical_softmax` for training.

    Args:
      node_logits: ``(batch, C - 1)`` raw scores, one per internal node.
      tree: a :class:`ClassTree` over ``C`` classes.

    Returns:
      ``(batch, C)`` log-probabilities in the dtype of ``node_logits``.
    """
    fn = "hierarchical_log_probs"
    node_logits = _check_scores(fn, node_logits)
    nodes, signs = _check_tree(fn, node_logits, tree)
    return _hlog_probs(node_logits, nodes, signs)


@jax.jit
def _hlog_probs(node_logits, nodes, signs):
    gathered = jnp.take(node_logits, nodes, axis=-1)  # (..., C, D)
    return _path_log_sigmoids(gathered, jnp.broadcast_to(signs, gathered.shape))
