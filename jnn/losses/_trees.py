"""Binary class trees for the hierarchical softmax: balanced, Huffman, or from codes.

A tree over ``C`` classes has ``C - 1`` internal nodes, numbered in pre-order (root 0). Every
builder goes through one routine, :func:`_tree_from_children`, which turns a children table
into the per-class root-to-leaf paths that the losses gather.
"""

import heapq
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jnn.losses._checks import host_values

__all__ = [
    "ClassTree",
    "balanced_class_tree",
    "check_tree",
    "class_tree_from_codes",
    "huffman_class_tree",
]


class ClassTree(NamedTuple):
    """A binary tree over ``C`` classes, stored as each class's root-to-leaf path.

    The ``C - 1`` internal nodes are numbered ``0 .. C-2`` in pre-order (root 0); each has
    one logit, ``w[n] . h + b[n]`` (or one column of a ``Dense(C - 1)`` layer). A pytree of
    three arrays: pass it through ``jit``/``vmap`` (``in_axes=None``) like any argument. Build
    it with :func:`balanced_class_tree`, :func:`huffman_class_tree` or
    :func:`class_tree_from_codes`.

    Attributes:
      nodes: ``(C, D)`` int32, ``nodes[c, d]`` the internal node class ``c`` passes at depth
        ``d``; padding entries (past the leaf) are 0.
      signs: ``(C, D)`` float32, ``+1`` go right (``sigmoid(x)``), ``-1`` go left
        (``sigmoid(-x)``), ``0`` padding.
      children: ``(C - 1, 2)`` int32, ``children[n] = (left, right)``: an internal node id
        ``>= 0``, or ``-1 - c`` for the leaf of class ``c`` (used by the greedy descent).
    """

    nodes: jax.Array
    signs: jax.Array
    children: jax.Array

    @property
    def num_classes(self) -> int:
        return self.nodes.shape[0]

    @property
    def num_nodes(self) -> int:
        return self.nodes.shape[0] - 1

    @property
    def depth(self) -> int:
        return self.nodes.shape[1]

    def __repr__(self):
        return f"ClassTree(num_classes={self.num_classes}, depth={self.depth})"


def check_tree(fn, tree):
    """``tree`` if it is a well-formed :class:`ClassTree`, else ``TypeError``/``ValueError``."""
    if not isinstance(tree, ClassTree):
        raise TypeError(f"{fn}: expected a ClassTree (see balanced_class_tree), got {type(tree)}.")
    nodes, signs, children = tree
    if not (
        jnp.issubdtype(nodes.dtype, jnp.integer)
        and jnp.issubdtype(signs.dtype, jnp.floating)
        and jnp.issubdtype(children.dtype, jnp.integer)
    ):
        raise TypeError(
            f"{fn}: tree.nodes and tree.children must be integer and tree.signs floating, got "
            f"{nodes.dtype}, {children.dtype} and {signs.dtype}."
        )
    c = nodes.shape[0] if nodes.ndim == 2 else 0
    if c < 2 or signs.shape != nodes.shape or children.shape != (c - 1, 2):
        raise ValueError(
            f"{fn}: tree.nodes and tree.signs must have shape (C, D) with C >= 2 and "
            f"tree.children (C - 1, 2), got {nodes.shape}, {signs.shape} and {children.shape}."
        )
    host = host_values(nodes)
    if host is not None and host.size and (host.min() < 0 or host.max() >= c - 1):
        raise ValueError(
            f"{fn}: tree.nodes must lie in [0, {c - 1}), got values in [{host.min()}, "
            f"{host.max()}]."
        )
    return tree


def _preorder(children, root):
    """``children`` renumbered so that the nodes are in pre-order from ``root`` (root 0)."""
    order, stack = [], [int(root)]
    while stack:
        node = stack.pop()
        order.append(node)
        stack.extend(int(c) for c in children[node, ::-1] if c >= 0)  # left on top
    new_id = np.empty(len(children), np.int64)
    new_id[order] = np.arange(len(order))
    renumbered = children[order]
    return np.where(renumbered >= 0, new_id[np.maximum(renumbered, 0)], renumbered)


def _tree_from_children(children, root=0):
    """The one routine that turns a children table into a :class:`ClassTree`.

    Args:
      children: ``(C - 1, 2)`` ints, ``(left, right)`` per internal node; ``>= 0`` an internal
        node, ``-1 - c`` the leaf of class ``c``. Must describe a full binary tree.
      root: the root's row in ``children``.

    Returns:
      A :class:`ClassTree` with nodes renumbered in pre-order.
    """
    children = _preorder(np.asarray(children, np.int64), root)
    num_nodes = children.shape[0]
    num_classes = num_nodes + 1
    # items: internal node n is item n, the leaf of class c is item num_nodes + c
    items = np.where(children >= 0, children, num_nodes + (-1 - children))
    parent = np.zeros(num_nodes + num_classes, np.int64)
    side = np.zeros(num_nodes + num_classes, np.float32)
    parent[items.ravel()] = np.repeat(np.arange(num_nodes), 2)
    side[items.ravel()] = np.tile(np.array([-1.0, 1.0], np.float32), num_nodes)
    depth = np.zeros(num_nodes + num_classes, np.int64)
    for node in range(num_nodes):  # pre-order: a parent comes before its children
        depth[items[node]] = depth[node] + 1
    leaf_depth = depth[num_nodes:]
    nodes = np.zeros((num_classes, int(leaf_depth.max())), np.int32)
    signs = np.zeros(nodes.shape, np.float32)
    rows, cur, pos = np.arange(num_classes), num_nodes + np.arange(num_classes), leaf_depth - 1
    while rows.size:  # walk every leaf up to the root, filling its path from the end
        nodes[rows, pos] = parent[cur]
        signs[rows, pos] = side[cur]
        cur, pos = parent[cur], pos - 1
        keep = pos >= 0
        rows, cur, pos = rows[keep], cur[keep], pos[keep]
    return ClassTree(jnp.asarray(nodes), jnp.asarray(signs), jnp.asarray(children, jnp.int32))


def _check_codes(codes):
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


def class_tree_from_codes(codes):
    """A :class:`ClassTree` from one binary code per class (e.g. Huffman codes).

    ``codes[c]`` is a string of ``'0'`` (left) / ``'1'`` (right) giving class ``c``'s path from
    the root. The codes must form a full binary tree: non-empty, prefix-free and complete
    (``sum_c 2^-len(code_c) = 1``), so there are exactly ``C - 1`` internal nodes, numbered
    in pre-order (root 0, then the left subtree).

    Args:
      codes: sequence of ``C >= 2`` strings of ``'0'``/``'1'``.

    Returns:
      A :class:`ClassTree` with depth ``max_c len(code_c)``.
    """
    codes = [str(code) for code in codes]
    _check_codes(codes)
    index = {}  # code prefix -> internal node id
    for code in codes:
        for d in range(len(code)):
            index.setdefault(code[:d], len(index))
    children = np.zeros((len(index), 2), np.int64)
    for prefix, node in index.items():
        for bit in (0, 1):
            children[node, bit] = index.get(prefix + str(bit), 0)
    for c, code in enumerate(codes):
        children[index[code[:-1]], int(code[-1])] = -1 - c
    return _tree_from_children(children, root=index[""])


def _check_num_classes(fn, num_classes):
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)):
        raise TypeError(f"{fn}: num_classes must be an int, got {num_classes!r}.")
    if num_classes < 2:
        raise ValueError(
            f"{fn}: need at least 2 classes (C - 1 >= 1 internal nodes), got {num_classes}."
        )
    return int(num_classes)


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
    num_classes = _check_num_classes("balanced_class_tree", num_classes)
    children = np.zeros((num_classes - 1, 2), np.int64)
    next_id, stack = 0, [(0, num_classes, -1, 0)]  # (lo, hi, parent, side)
    while stack:
        lo, hi, parent, side = stack.pop()
        if hi - lo == 1:
            child = -1 - lo
        else:
            child, next_id = next_id, next_id + 1
            mid = lo + (hi - lo + 1) // 2
            stack += [(mid, hi, child, 1), (lo, mid, child, 0)]  # left popped first
        if parent >= 0:
            children[parent, side] = child
    return _tree_from_children(children)


def _check_frequencies(frequencies):
    freq = np.asarray(frequencies)
    if freq.ndim != 1 or freq.shape[0] < 2:
        raise ValueError(
            "huffman_class_tree: frequencies must be a 1-D array with one entry per class "
            f"(at least 2), got shape {freq.shape}."
        )
    if not (np.issubdtype(freq.dtype, np.integer) or np.issubdtype(freq.dtype, np.floating)):
        raise TypeError(f"huffman_class_tree: frequencies must be numeric, got {freq.dtype}.")
    freq = freq.astype(np.float64)
    if not np.all(np.isfinite(freq)) or freq.min() < 0 or freq.sum() <= 0:
        raise ValueError(
            "huffman_class_tree: frequencies must be finite, >= 0 and not all zero, got values "
            f"in [{freq.min()}, {freq.max()}] with sum {freq.sum()}."
        )
    return freq


def huffman_class_tree(frequencies):
    """A Huffman :class:`ClassTree` (fastText's output tree): frequent classes sit near the root.

    Huffman's algorithm merges the two lightest subtrees until one remains (the lighter one
    goes left; ties go to the one created first, so the tree is deterministic). Its expected
    path length ``L = sum_c p_c depth(c)``, ``p = frequencies / sum(frequencies)``, is the
    smallest of any binary tree and satisfies ``H(p) <= L < H(p) + 1`` (``H`` the entropy in
    bits), so training costs ``O(H(p) d)`` per example on average instead of ``O(log2(C) d)``.
    The arrays are padded to the deepest leaf, which for rare classes can be much deeper than
    ``log2 C`` (the gathered path costs ``O(depth d)`` per example).

    Args:
      frequencies: ``(C,)`` non-negative class counts or probabilities (e.g.
        ``np.bincount(y_train, minlength=C)``); zeros are allowed (those classes go deepest).

    Returns:
      A :class:`ClassTree` with ``C - 1`` internal nodes, numbered in pre-order.
    """
    freq = _check_frequencies(frequencies)
    num_classes = freq.shape[0]
    heap = [(w, c, -1 - c) for c, w in enumerate(freq.tolist())]  # (weight, tiebreak, item)
    heapq.heapify(heap)
    children = np.zeros((num_classes - 1, 2), np.int64)
    for node in range(num_classes - 1):
        w_left, _, left = heapq.heappop(heap)
        w_right, _, right = heapq.heappop(heap)
        children[node] = (left, right)
        heapq.heappush(heap, (w_left + w_right, num_classes + node, node))
    return _tree_from_children(children, root=num_classes - 2)
