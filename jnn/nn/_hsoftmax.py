"""The hierarchical softmax head :class:`HierarchicalSoftmax`, a fast output layer."""

from __future__ import annotations

import dataclasses
import hashlib

import jax
import jax.numpy as jnp
import numpy as np

from jnn.losses import ClassTree, HierarchicalOutput
from jnn.losses._trees import check_tree
from jnn.nn._base import (
    Initializer,
    Layer,
    _check_initializers,
    _check_last,
    _check_rank,
    _init_kernel_bias,
)

__all__ = ["HierarchicalSoftmax"]


def _host_tree(tree) -> ClassTree:
    """The tree as read-only NumPy arrays (the layer is a hashable, immutable description)."""
    check_tree("HierarchicalSoftmax", tree)
    if any(isinstance(a, jax.core.Tracer) for a in tree):
        raise TypeError(
            "HierarchicalSoftmax: tree must be concrete (build it outside jit, e.g. with "
            "jnn.losses.balanced_class_tree), got traced arrays."
        )
    arrays = []
    for a in tree:
        a = np.array(a)
        a.flags.writeable = False
        arrays.append(a)
    return ClassTree(*arrays)


def _digest(tree: ClassTree) -> str:
    sha = hashlib.sha1()
    for a in tree:
        sha.update(str((a.shape, a.dtype)).encode())
        sha.update(np.ascontiguousarray(a).tobytes())
    return sha.hexdigest()


@dataclasses.dataclass(frozen=True, eq=False)
class HierarchicalSoftmax(Layer):
    """Hierarchical softmax output layer over a binary class tree (fastText's output layer).

    ``apply`` computes no class score: it returns ``jnn.losses.HierarchicalOutput(h, w, b,
    tree)``, the hidden vectors with the head, and the loss gathers the ``D = depth`` rows on
    each label's path, ``O(D d)`` per example (a softmax or ``Dense(C - 1)`` is ``O(C d)``):

    - loss: ``jnn.losses.hierarchical_softmax_loss(outputs, labels)`` (the ``loss`` of
      ``jnn.train.make_step`` / ``fit`` / ``evaluate``);
    - predictions: ``jnn.losses.accuracy`` / ``hierarchical_predict`` (greedy, ``O(D d)``; or
      ``method="exact"``), all-class ``jnn.losses.log_probabilities(outputs)`` (``O(C d)``);
    - sparse training (only the touched rows updated in place):
      ``jnn.train.make_sparse_head_step``.

    Node ``n``'s logit is ``w[n] . h + b[n]``; ``p(class) = prod_d sigmoid(s_d x_{n_d})`` down
    the class's path (see :class:`jnn.losses.ClassTree`).

    Args:
      tree: a concrete :class:`jnn.losses.ClassTree` over ``C`` classes
        (``balanced_class_tree``, ``huffman_class_tree``, ``class_tree_from_codes``); it is
        stored as NumPy arrays and enters compiled programs as constants.
      w_init: initialiser called with the Dense layout ``(d, C - 1)`` (so fan-based
        initialisers see ``fan_in = d``) and transposed; ``None`` means
        ``jnn.init.lecun_normal()``, so the head starts where ``Dense(C - 1)`` would (its
        kernel transposed). ``jnn.init.constant(0.0)`` gives word2vec's zero start.
      b_init: bias initialiser; ``None`` means zeros.

    Params: ``w`` of shape ``(C - 1, d)`` (one row per internal node, so a path is a row
    gather), ``b`` of shape ``(C - 1,)``. Inputs: ``(batch, ..., d)``.
    """

    tree: ClassTree
    w_init: Initializer | None = None
    b_init: Initializer | None = None
    _digest: str = dataclasses.field(init=False, repr=False, compare=False, default="")

    def __post_init__(self):
        tree = _host_tree(self.tree)
        object.__setattr__(self, "tree", tree)
        object.__setattr__(self, "_digest", _digest(tree))
        _check_initializers(self)

    def __hash__(self):
        return hash((HierarchicalSoftmax, self._digest, self.w_init, self.b_init))

    def __eq__(self, other):
        return (
            type(other) is HierarchicalSoftmax
            and (self._digest, self.w_init, self.b_init)
            == (other._digest, other.w_init, other.b_init)
            and all(np.array_equal(a, b) for a, b in zip(self.tree, other.tree, strict=True))
        )

    @property
    def num_classes(self) -> int:
        return self.tree.num_classes

    def check_input(self, shape):
        _check_rank(self, shape, 2, "(batch, ..., features)")

    def init(self, key, input_shape, dtype=jnp.float32):
        shape = tuple(input_shape)
        self.check_input(shape)
        params = _init_kernel_bias(self, key, (shape[-1], self.tree.num_nodes), dtype)
        return {"w": params["w"].T, "b": params["b"]}, {}

    def apply(self, params, state, x, *, key=None, train=False):
        self.check_input(x.shape)
        _check_last(self, x.shape, params["w"].shape[-1])
        tree = ClassTree(*(jnp.asarray(a) for a in self.tree))
        return HierarchicalOutput(x, params["w"], params["b"], tree), state
