"""jnn.losses against NumPy, Optax and the first-iteration loss facts."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jnn import losses
from jnn import nn as jnn_nn
from jnn import optim as jnn_optim

B, C = 6, 5


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    logits = rng.normal(scale=3.0, size=(B, C)).astype(np.float32)
    labels = rng.integers(0, C, size=B).astype(np.int32)
    return logits, labels


def np_softmax_ce(logits, labels):
    z = logits.astype(np.float64)
    return np.log(np.exp(z).sum(-1)) - z[np.arange(len(labels)), labels]


def np_weston_watkins(scores, labels, margin=1.0):
    out = np.zeros(len(labels))
    for i, (s, y) in enumerate(zip(scores.astype(np.float64), labels, strict=True)):
        out[i] = sum(max(0.0, s[j] - s[y] + margin) for j in range(len(s)) if j != y)
    return out


def np_bce(logits, targets):
    p = 1 / (1 + np.exp(-logits.astype(np.float64)))
    return (-(targets * np.log(p) + (1 - targets) * np.log(1 - p))).sum(-1)


# ----- softmax cross-entropy -----


def test_softmax_ce_matches_numpy_and_optax(data):
    logits, labels = data
    got = losses.softmax_cross_entropy(logits, labels)
    chex.assert_shape(got, (B,))
    chex.assert_trees_all_close(np.asarray(got), np_softmax_ce(logits, labels), rtol=1e-5)
    chex.assert_trees_all_close(
        got, optax.softmax_cross_entropy_with_integer_labels(logits, labels), rtol=1e-6
    )


def test_softmax_ce_is_log_c_at_zero_logits():
    for c in (2, 10, 1000):
        got = losses.softmax_cross_entropy(jnp.zeros((3, c)), jnp.zeros(3, jnp.int32))
        chex.assert_trees_all_close(got, np.full(3, math.log(c), np.float32), rtol=1e-6)


def test_softmax_ce_is_stable_for_huge_logits():
    logits = jnp.asarray([[1000.0, 0.0, -1000.0], [-1e30, 1e30, 0.0]])
    got = losses.softmax_cross_entropy(logits, jnp.asarray([0, 0]))
    chex.assert_tree_all_finite(got)
    chex.assert_trees_all_close(got, np.array([0.0, 2e30], np.float32), rtol=1e-6)
    g = jax.grad(lambda z: losses.softmax_cross_entropy(z, jnp.asarray([0, 0])).sum())(logits)
    chex.assert_tree_all_finite(g)


def test_softmax_ce_grad_is_softmax_minus_onehot(data):
    logits, labels = data
    g = jax.grad(lambda z: losses.softmax_cross_entropy(z, labels).sum())(jnp.asarray(logits))
    z = logits.astype(np.float64)
    p = np.exp(z - z.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    p[np.arange(B), labels] -= 1
    chex.assert_trees_all_close(np.asarray(g), p, atol=1e-6)


# ----- Weston–Watkins hinge -----


def test_hinge_matches_numpy(data):
    scores, labels = data
    for margin in (1.0, 0.5):
        got = losses.multiclass_hinge(scores, labels, margin=margin)
        chex.assert_shape(got, (B,))
        chex.assert_trees_all_close(
            np.asarray(got), np_weston_watkins(scores, labels, margin), rtol=1e-5, atol=1e-6
        )


def test_hinge_is_c_minus_one_at_zero_scores_unlike_optax():
    labels = jnp.asarray([0, 3, 9])
    got = losses.multiclass_hinge(jnp.zeros((3, 10)), labels)
    chex.assert_trees_all_close(got, np.full(3, 9.0, np.float32))
    chex.assert_trees_all_close(
        losses.multiclass_hinge(jnp.zeros((3, 10)), labels, margin=2.0),
        np.full(3, 18.0, np.float32),
    )
    # Optax's multiclass hinge is Crammer–Singer: the margin (1) at zero scores.
    assert np.allclose(optax.losses.multiclass_hinge_loss(jnp.zeros((3, 10)), labels), 1.0)


def test_hinge_is_zero_when_margins_are_met():
    scores = jnp.asarray([[5.0, 1.0, 3.9], [0.0, 0.0, 0.0]])
    got = losses.multiclass_hinge(scores, jnp.asarray([0, 1]))
    chex.assert_trees_all_close(got, np.array([0.0, 2.0], np.float32))


def test_hinge_grad(data):
    scores, labels = data
    g = jax.grad(lambda s: losses.multiclass_hinge(s, labels).sum())(jnp.asarray(scores))
    s = scores.astype(np.float64)
    want = np.zeros_like(s)
    for i, y in enumerate(labels):
        active = (s[i] - s[i, y] + 1 > 0) & (np.arange(C) != y)
        want[i, active] = 1.0
        want[i, y] = -active.sum()
    chex.assert_trees_all_close(np.asarray(g), want)


# ----- sigmoid binary cross-entropy -----


def test_bce_matches_numpy_and_optax(data):
    logits, _ = data
    targets = (np.random.default_rng(1).random((B, C)) > 0.5).astype(np.float32)
    got = losses.sigmoid_binary_cross_entropy(logits, targets)
    chex.assert_shape(got, (B,))
    chex.assert_trees_all_close(np.asarray(got), np_bce(logits, targets), rtol=1e-5)
    want = optax.sigmoid_binary_cross_entropy(logits, targets).sum(-1)
    chex.assert_trees_all_close(got, want, rtol=1e-5)
    # bool and soft targets
    chex.assert_trees_all_close(
        losses.sigmoid_binary_cross_entropy(logits, targets.astype(bool)), got
    )
    soft = np.full((B, C), 0.3, np.float32)
    chex.assert_trees_all_close(
        np.asarray(losses.sigmoid_binary_cross_entropy(logits, soft)),
        np_bce(logits, soft),
        rtol=1e-5,
    )


def test_bce_is_log2_per_attribute_at_zero_logits():
    a = 7
    got = losses.sigmoid_binary_cross_entropy(jnp.zeros((4, a)), jnp.ones((4, a)))
    chex.assert_trees_all_close(got, np.full(4, a * math.log(2), np.float32), rtol=1e-6)


def test_bce_is_stable_for_huge_logits():
    got = losses.sigmoid_binary_cross_entropy(jnp.asarray([[100.0, -100.0]]), jnp.asarray([[0, 1]]))
    chex.assert_trees_all_close(got, np.array([200.0], np.float32), rtol=1e-6)


# ----- L2 regression loss -----


def test_l2_loss_is_sum_of_squares_per_example():
    rng = np.random.default_rng(2)
    pred = rng.normal(size=(B, 3, 2)).astype(np.float32)
    target = rng.normal(size=(B, 3, 2)).astype(np.float32)
    got = losses.l2_loss(pred, target)
    chex.assert_shape(got, (B,))
    want = ((pred.astype(np.float64) - target) ** 2).reshape(B, -1).sum(-1)
    chex.assert_trees_all_close(np.asarray(got), want, rtol=1e-5)
    chex.assert_trees_all_close(got, optax.squared_error(pred, target).sum((1, 2)), rtol=1e-6)
    # (batch,) targets: one squared error per example
    chex.assert_trees_all_close(
        losses.l2_loss(jnp.asarray([1.0, 2.0]), jnp.asarray([3.0, 2.0])),
        np.array([4.0, 0.0], np.float32),
    )
    g = jax.grad(lambda p: losses.l2_loss(p, target).sum())(jnp.asarray(pred))
    chex.assert_trees_all_close(np.asarray(g), 2 * (pred - target), rtol=1e-5, atol=1e-6)


# ----- accuracy -----


def test_accuracy(data):
    logits, labels = data
    want = np.mean(logits.argmax(-1) == labels)
    assert float(losses.accuracy(logits, labels)) == pytest.approx(want)
    assert float(losses.accuracy(jnp.eye(3), jnp.asarray([0, 1, 0]))) == pytest.approx(2 / 3)


# ----- all losses: jit, grad, vmap, dtype, input checks -----

LABELLED = [losses.softmax_cross_entropy, losses.multiclass_hinge]


def _targets_for(fn, logits, labels):
    if fn is losses.sigmoid_binary_cross_entropy:
        return (np.asarray(logits) > 0).astype(np.float32)
    if fn is losses.l2_loss:
        return np.ones_like(logits)
    return labels


ALL = LABELLED + [losses.sigmoid_binary_cross_entropy, losses.l2_loss]


@pytest.mark.parametrize("fn", ALL, ids=lambda f: f.__name__)
def test_jit_grad_vmap(fn, data):
    logits, labels = data
    targets = _targets_for(fn, logits, labels)
    eager = fn(logits, targets)
    chex.assert_trees_all_close(jax.jit(fn)(logits, targets), eager, rtol=1e-6)
    g = jax.jit(jax.grad(lambda z: fn(z, targets).mean()))(jnp.asarray(logits))
    chex.assert_shape(g, (B, C))
    chex.assert_tree_all_finite(g)
    # vmap over an ensemble axis of logits
    stacked = jnp.stack([jnp.asarray(logits), 2 * jnp.asarray(logits)])
    per_member = jax.vmap(fn, in_axes=(0, None))(stacked, targets)
    chex.assert_trees_all_close(per_member[0], eager, rtol=1e-6)


@pytest.mark.parametrize("fn", ALL, ids=lambda f: f.__name__)
def test_float64_in_float64_out(fn, data):
    logits, labels = data
    with jax.enable_x64(True):
        z = jnp.asarray(logits, jnp.float64)
        targets = _targets_for(fn, logits, labels)
        assert fn(z, targets).dtype == jnp.float64
        assert jax.jit(fn)(z, targets).dtype == jnp.float64
        assert fn(z, jnp.asarray(targets)).dtype == jnp.float64  # int64 labels under x64
    assert fn(jnp.asarray(logits, jnp.bfloat16), targets).dtype == jnp.bfloat16


@pytest.mark.parametrize("fn", LABELLED, ids=lambda f: f.__name__)
def test_label_errors(fn, data):
    logits, labels = data
    with pytest.raises(TypeError, match="integer class labels"):
        fn(logits, labels.astype(np.float32))
    with pytest.raises(TypeError, match="integer class labels"):
        fn(logits, np.eye(C, dtype=np.float32)[labels])  # one-hot
    with pytest.raises(TypeError, match="integer class labels"):  # dtype is static: also under jit
        jax.jit(fn)(logits, labels.astype(np.float32))
    bad = labels.copy()
    bad[2] = C
    with pytest.raises(ValueError, match=rf"\[0, {C}\)"):
        fn(logits, bad)
    bad[2] = -1
    with pytest.raises(ValueError, match=rf"\[0, {C}\)"):
        fn(logits, bad)
    with pytest.raises(ValueError, match="shape"):
        fn(logits, labels[:-1])
    with pytest.raises(TypeError, match="floating"):
        fn(logits.astype(np.int32), labels)


@pytest.mark.parametrize("fn", LABELLED, ids=lambda f: f.__name__)
def test_out_of_range_labels_under_jit_give_nan(fn, data):
    logits, labels = data
    bad = labels.copy()
    bad[1], bad[4] = C, -1
    got = np.asarray(jax.jit(fn)(logits, bad))
    assert np.isnan(got[1]) and np.isnan(got[4])
    ok = np.ones(B, bool)
    ok[[1, 4]] = False
    assert np.all(np.isfinite(got[ok]))
    chex.assert_trees_all_close(got[ok], np.asarray(fn(logits, labels))[ok])


def test_target_errors():
    z = jnp.zeros((2, 3))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        losses.sigmoid_binary_cross_entropy(z, jnp.full((2, 3), 2.0))
    with pytest.raises(ValueError, match="shape"):
        losses.sigmoid_binary_cross_entropy(z, jnp.zeros((2,)))
    with pytest.raises(ValueError, match="shape"):
        losses.l2_loss(z, jnp.zeros((2, 4)))


# ----- hierarchical softmax -----

TREE_SIZES = (2, 3, 7, 10, 16)


def np_balanced_paths(num_classes):
    """Reference tree built independently: an explicit node list, walked to each leaf.

    A node covers classes [lo, hi); its left child covers the first ceil(n/2). Internal nodes
    are numbered in pre-order. Returns, per class, the list of (node, went_right).
    """
    counter = [0]
    paths = {}

    def build(lo, hi, path):
        if hi - lo == 1:
            paths[lo] = path
            return
        node = counter[0]
        counter[0] += 1
        mid = lo + math.ceil((hi - lo) / 2)
        build(lo, mid, path + [(node, False)])
        build(mid, hi, path + [(node, True)])

    build(0, num_classes, [])
    assert counter[0] == num_classes - 1
    return [paths[c] for c in range(num_classes)]


def np_tree_probs(node_logits, paths):
    z = node_logits.astype(np.float64)
    sig = 1.0 / (1.0 + np.exp(-z))
    probs = np.ones((z.shape[0], len(paths)))
    for c, path in enumerate(paths):
        for node, right in path:
            probs[:, c] *= sig[:, node] if right else 1.0 - sig[:, node]
    return probs


@pytest.mark.parametrize("c", TREE_SIZES)
def test_balanced_class_tree_structure(c):
    tree = losses.balanced_class_tree(c)
    assert tree.nodes.dtype == jnp.int32 and tree.signs.dtype == jnp.float32
    assert (tree.num_classes, tree.num_nodes, tree.depth) == (c, c - 1, math.ceil(math.log2(c)))
    lengths = np.count_nonzero(np.asarray(tree.signs), axis=1)
    assert lengths.max() - lengths.min() <= 1
    want = np_balanced_paths(c)
    for k in range(c):
        n = len(want[k])
        assert lengths[k] == n
        np.testing.assert_array_equal(np.asarray(tree.nodes[k, :n]), [p[0] for p in want[k]])
        np.testing.assert_array_equal(
            np.asarray(tree.signs[k, :n]), [1.0 if p[1] else -1.0 for p in want[k]]
        )


@pytest.mark.parametrize("c", TREE_SIZES)
def test_hierarchical_log_probs_match_product_of_sigmoids(c):
    rng = np.random.default_rng(c)
    z = rng.normal(scale=2.0, size=(B, c - 1)).astype(np.float32)
    tree = losses.balanced_class_tree(c)
    logp = losses.hierarchical_log_probs(z, tree)
    chex.assert_shape(logp, (B, c))
    assert logp.dtype == jnp.float32
    want = np_tree_probs(z, np_balanced_paths(c))
    np.testing.assert_allclose(want.sum(-1), 1.0, rtol=1e-12)
    chex.assert_trees_all_close(np.exp(np.asarray(logp, np.float64)), want, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(np.exp(np.asarray(logp, np.float64)).sum(-1), 1.0, rtol=1e-5)
    labels = rng.integers(0, c, size=B).astype(np.int32)
    loss = losses.hierarchical_softmax(z, labels, tree)
    chex.assert_shape(loss, (B,))
    chex.assert_trees_all_close(loss, -np.asarray(logp)[np.arange(B), labels], rtol=1e-6)
    chex.assert_trees_all_close(
        np.asarray(loss), -np.log(want[np.arange(B), labels]), rtol=1e-5, atol=1e-6
    )


def test_hierarchical_softmax_with_two_classes_is_logistic():
    z = np.array([[-3.0], [0.0], [0.5], [40.0]], np.float32)
    tree = losses.balanced_class_tree(2)
    for y, sign in ((0, -1.0), (1, 1.0)):
        labels = np.full(4, y, np.int32)
        got = losses.hierarchical_softmax(z, labels, tree)
        want = np.log1p(np.exp(-sign * z[:, 0].astype(np.float64)))  # softmax CE of (0, z)
        chex.assert_trees_all_close(np.asarray(got), want, rtol=1e-6, atol=1e-7)
        pair = np.concatenate([np.zeros_like(z), z], axis=1)
        chex.assert_trees_all_close(
            got, losses.softmax_cross_entropy(pair, labels), rtol=1e-5, atol=1e-7
        )


@pytest.mark.parametrize("c", TREE_SIZES)
def test_hierarchical_softmax_at_zero_logits_is_depth_log2(c):
    tree = losses.balanced_class_tree(c)
    labels = np.arange(c, dtype=np.int32)
    got = losses.hierarchical_softmax(jnp.zeros((c, c - 1)), labels, tree)
    depths = np.array([len(p) for p in np_balanced_paths(c)])
    chex.assert_trees_all_close(np.asarray(got), depths * math.log(2), rtol=1e-6)
    if c & (c - 1) == 0:  # power of 2: the softmax sanity-check value log C
        chex.assert_trees_all_close(np.asarray(got), np.full(c, math.log(c)), rtol=1e-6)


def test_hierarchical_softmax_is_stable_for_huge_logits():
    tree = losses.balanced_class_tree(4)  # class 0: left, left; class 3: right, right
    z = jnp.asarray([[1e4, -1e4, 0.0], [-1e30, 1.0, 1e30]])
    got = losses.hierarchical_softmax(z, jnp.asarray([0, 0]), tree)
    chex.assert_trees_all_close(got, np.array([1e4, math.log1p(math.e)]), rtol=1e-6)
    g = jax.grad(lambda x: losses.hierarchical_softmax(x, jnp.asarray([0, 3]), tree).sum())(z)
    chex.assert_tree_all_finite(g)
    chex.assert_tree_all_finite(losses.hierarchical_log_probs(z, tree))


def test_class_tree_from_codes():
    codes = ["0", "10", "110", "111"]  # a Huffman-style unbalanced tree
    tree = losses.class_tree_from_codes(codes)
    assert (tree.num_classes, tree.num_nodes, tree.depth) == (4, 3, 3)
    z = np.random.default_rng(3).normal(size=(B, 3)).astype(np.float32)
    paths = [[(0, False)], [(0, True), (1, False)], [(0, True), (1, True), (2, False)]]
    paths.append([(0, True), (1, True), (2, True)])
    chex.assert_trees_all_close(
        np.exp(np.asarray(losses.hierarchical_log_probs(z, tree), np.float64)),
        np_tree_probs(z, paths),
        rtol=1e-5,
    )
    for bad, match in (
        (["0"], "at least 2"),
        (["0", "1", ""], "non-empty"),
        (["0", "12"], "non-empty"),
        (["0", "01", "1"], "prefix-free"),
        (["0", "10"], "complete"),
    ):
        with pytest.raises(ValueError, match=match):
            losses.class_tree_from_codes(bad)


def test_hierarchical_jit_vmap_grad():
    c = 10
    tree = losses.balanced_class_tree(c)
    rng = np.random.default_rng(4)
    z = rng.normal(size=(B, c - 1)).astype(np.float32)
    labels = rng.integers(0, c, size=B).astype(np.int32)
    eager = losses.hierarchical_softmax(z, labels, tree)
    chex.assert_trees_all_close(jax.jit(losses.hierarchical_softmax)(z, labels, tree), eager)
    chex.assert_trees_all_close(
        jax.jit(losses.hierarchical_log_probs)(z, tree), losses.hierarchical_log_probs(z, tree)
    )
    stacked = jnp.stack([jnp.asarray(z), 2 * jnp.asarray(z)])
    per_member = jax.vmap(losses.hierarchical_softmax, in_axes=(0, None, None))(
        stacked, labels, tree
    )
    chex.assert_trees_all_close(per_member[0], eager, rtol=1e-6)
    per_example = jax.vmap(lambda x, y: losses.hierarchical_softmax(x[None], y[None], tree)[0])(
        z, labels
    )
    chex.assert_trees_all_close(per_example, eager, rtol=1e-6)
    g = jax.jit(jax.grad(lambda x: losses.hierarchical_softmax(x, labels, tree).mean()))(z)
    chex.assert_shape(g, (B, c - 1))
    # Nodes off the label's path get exactly zero gradient (only the path is gathered).
    on_path = np.zeros((B, c - 1), bool)
    for i, y in enumerate(labels):
        on_path[i, [n for n, _ in np_balanced_paths(c)[y]]] = True
    assert np.all(np.asarray(g)[~on_path] == 0) and np.all(np.asarray(g)[on_path] != 0)


def test_hierarchical_grad_matches_finite_differences_float64():
    c = 7
    with jax.enable_x64(True):
        tree = losses.balanced_class_tree(c)
        rng = np.random.default_rng(5)
        z = jnp.asarray(rng.normal(size=(B, c - 1)), jnp.float64)
        labels = jnp.asarray(rng.integers(0, c, size=B))  # int64 under x64

        def f(x):
            return jnp.sum(losses.hierarchical_softmax(x, labels, tree))

        assert losses.hierarchical_softmax(z, labels, tree).dtype == jnp.float64
        assert jax.jit(losses.hierarchical_log_probs)(z, tree).dtype == jnp.float64
        g = np.asarray(jax.grad(f)(z))
        h = 1e-6
        num = np.zeros_like(g)
        for idx in np.ndindex(*g.shape):
            e = np.zeros(g.shape)
            e[idx] = h
            num[idx] = (float(f(z + e)) - float(f(z - e))) / (2 * h)
        np.testing.assert_allclose(g, num, rtol=1e-6, atol=1e-8)
    bf = losses.hierarchical_softmax(jnp.zeros((2, c - 1), jnp.bfloat16), np.array([0, 1]), tree)
    assert bf.dtype == jnp.bfloat16


def test_hierarchical_softmax_trains_digits():
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = jnp.asarray(digits.data / 16.0, jnp.float32)
    y = jnp.asarray(digits.target, jnp.int32)
    c = 10
    tree = losses.balanced_class_tree(c)
    # A linear model plateaus near 91% (the balanced tree forces linear splits such as
    # {0..4} vs {5..9}); one small hidden layer gives a safe margin.
    model = jnn_nn.Serial(jnn_nn.Dense(32), jnn_nn.Relu(), jnn_nn.Dense(c - 1))
    params, state = model.init(jax.random.key(0), x.shape)
    opt = jnn_optim.adam(0.01)  # Optax-exact; optax.adam trips strict dtype promotion

    def objective(p):
        out, _ = model.apply(p, state, x)
        return jnp.mean(losses.hierarchical_softmax(out, y, tree))

    @jax.jit
    def train(p):
        def step(carry, _):
            p, s = carry
            loss, g = jax.value_and_grad(objective)(p)
            updates, s = opt.update(g, s, p)
            return (jnn_optim.apply_updates(p, updates), s), loss

        (p, _), curve = jax.lax.scan(step, (p, opt.init(p)), None, length=300)
        return p, curve

    initial = float(objective(params))
    params, curve = train(params)
    out, _ = model.apply(params, state, x)
    pred = jnp.argmax(losses.hierarchical_log_probs(out, tree), axis=-1)
    acc = float(jnp.mean((pred == y).astype(jnp.float32)))
    assert float(curve[-1]) < 0.3 * initial
    assert acc > 0.95, acc


def test_hierarchical_input_errors():
    tree = losses.balanced_class_tree(5)
    z = np.zeros((B, 4), np.float32)
    labels = np.arange(B, dtype=np.int32) % 5
    for c in (1, 0, -3):
        with pytest.raises(ValueError, match="at least 2"):
            losses.balanced_class_tree(c)
    with pytest.raises(TypeError, match="int"):
        losses.balanced_class_tree(4.0)
    with pytest.raises(TypeError, match="integer class labels"):
        losses.hierarchical_softmax(z, labels.astype(np.float32), tree)
    with pytest.raises(TypeError, match="integer class labels"):
        jax.jit(losses.hierarchical_softmax)(z, labels.astype(np.float32), tree)
    bad = labels.copy()
    bad[2] = 5
    with pytest.raises(ValueError, match=r"\[0, 5\)"):
        losses.hierarchical_softmax(z, bad, tree)
    bad[2] = -1
    with pytest.raises(ValueError, match=r"\[0, 5\)"):
        losses.hierarchical_softmax(z, bad, tree)
    with pytest.raises(ValueError, match="shape"):
        losses.hierarchical_softmax(z, labels[:-1], tree)
    with pytest.raises(ValueError, match=r"\(batch, 4\)"):
        losses.hierarchical_softmax(np.zeros((B, 5), np.float32), labels, tree)
    with pytest.raises(ValueError, match=r"\(batch, 4\)"):
        losses.hierarchical_log_probs(np.zeros((B, 3), np.float32), tree)
    with pytest.raises(TypeError, match="floating"):
        losses.hierarchical_softmax(z.astype(np.int32), labels, tree)
    with pytest.raises(TypeError, match="ClassTree"):
        losses.hierarchical_softmax(z, labels, (tree.nodes, tree.signs))


def test_hierarchical_out_of_range_labels_under_jit_give_nan():
    tree = losses.balanced_class_tree(5)
    z = np.random.default_rng(6).normal(size=(B, 4)).astype(np.float32)
    labels = np.arange(B, dtype=np.int32) % 5
    bad = labels.copy()
    bad[1], bad[4] = 5, -1
    got = np.asarray(jax.jit(losses.hierarchical_softmax)(z, bad, tree))
    ok = np.ones(B, bool)
    ok[[1, 4]] = False
    assert np.isnan(got[1]) and np.isnan(got[4])
    chex.assert_trees_all_close(
        got[ok], np.asarray(losses.hierarchical_softmax(z, labels, tree))[ok]
    )


# ----- the package: every public name of the old module, and the new ones -----

OLD_NAMES = {
    "softmax_cross_entropy",
    "multiclass_hinge",
    "sigmoid_binary_cross_entropy",
    "l2_loss",
    "accuracy",
    "ClassTree",
    "balanced_class_tree",
    "class_tree_from_codes",
    "hierarchical_softmax",
    "hierarchical_log_probs",
}
NEW_NAMES = {
    "huffman_class_tree",
    "hierarchical_softmax_loss",
    "hierarchical_predict",
    "hierarchical_path",
    "hierarchical_path_loss",
    "hierarchical_path_correct",
    "HierarchicalOutput",
    "HierarchicalPath",
    "log_probabilities",
    "top1_correct",
}


def test_package_exports_old_and_new_names():
    assert hasattr(losses, "__path__")  # a package now
    assert set(losses.__all__) >= OLD_NAMES | NEW_NAMES
    for name in losses.__all__:
        assert getattr(losses, name).__doc__, name


# ----- accuracy / top1_correct / log_probabilities on class scores -----


def test_accuracy_rule_on_scores(data):
    logits, labels = data
    want = (logits.argmax(-1) == labels).astype(np.float32)
    got = losses.top1_correct(logits, labels)
    chex.assert_shape(got, (B,))
    assert got.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(got), want)
    acc = losses.accuracy(jnp.asarray(logits, jnp.bfloat16), labels)
    assert acc.dtype == jnp.float32 and acc.shape == ()
    assert float(losses.accuracy(logits, labels)) == pytest.approx(want.mean())
    # ties go to the first maximum
    assert float(losses.accuracy(jnp.zeros((2, 3)), jnp.asarray([0, 1]))) == 0.5
    # jittable and vmappable (one example at a time, as an evaluator does)
    per = jax.vmap(lambda o, t: losses.accuracy(o[None], t[None]))(logits, labels)
    np.testing.assert_array_equal(np.asarray(per), want)
    assert float(jax.jit(losses.accuracy)(logits, labels)) == pytest.approx(want.mean())


def test_accuracy_is_nan_when_undefined(data):
    logits, labels = data
    # float targets (regression), multi-label targets, outputs without a class axis
    assert np.isnan(float(losses.accuracy(logits, labels.astype(np.float32))))
    assert np.isnan(float(losses.accuracy(logits, (logits > 0).astype(np.int32))))
    assert np.isnan(float(losses.accuracy(logits[:, 0], labels)))
    assert np.all(np.isnan(np.asarray(losses.top1_correct(logits, np.ones((B, C), np.float32)))))
    bad = labels.copy()
    bad[0] = C
    with pytest.raises(ValueError, match=rf"\[0, {C}\)"):
        losses.accuracy(logits, bad)
    # under jit an out-of-range label is never hit
    got = np.asarray(jax.jit(losses.top1_correct)(logits, bad))
    assert got[0] == 0 and np.array_equal(
        got[1:], np.asarray(losses.top1_correct(logits, labels))[1:]
    )
    with pytest.raises(ValueError, match="shape"):
        losses.accuracy(logits, labels[:-1])


def test_log_probabilities_of_logits_is_log_softmax(data):
    logits, _ = data
    got = losses.log_probabilities(logits)
    z = logits.astype(np.float64)
    want = z - np.log(np.exp(z).sum(-1, keepdims=True))
    chex.assert_trees_all_close(np.asarray(got, np.float64), want, rtol=1e-5, atol=1e-6)
    with pytest.raises(TypeError, match="floating"):
        losses.log_probabilities(np.zeros((2, 3), np.int32))


# ----- trees: children tables, pre-order numbering, Huffman -----


def np_walk(children, c):
    """The (node, went_right) path to leaf ``c`` found by searching the children table."""
    stack = [(0, [])]
    while stack:
        node, path = stack.pop()
        for right, child in enumerate(children[node]):
            step = path + [(node, bool(right))]
            if child == -1 - c:
                return step
            if child >= 0:
                stack.append((int(child), step))
    raise AssertionError(f"leaf {c} not in the tree")


def assert_tree_consistent(tree):
    """nodes/signs describe the same tree as children; every node is used; pre-order."""
    nodes, signs, children = (np.asarray(a) for a in tree)
    c = nodes.shape[0]
    assert children.shape == (c - 1, 2) and children.dtype == np.int32
    for k in range(c):
        path = np_walk(children, k)
        n = len(path)
        np.testing.assert_array_equal(nodes[k, :n], [p[0] for p in path])
        np.testing.assert_array_equal(signs[k, :n], [1.0 if p[1] else -1.0 for p in path])
        assert np.all(signs[k, n:] == 0) and np.all(nodes[k, n:] == 0)
    for node in range(c - 1):  # pre-order: internal children have larger ids
        kids = children[node][children[node] >= 0]
        assert np.all(kids > node)
    leaves = sorted(-1 - children[children < 0])
    assert leaves == list(range(c))


@pytest.mark.parametrize("c", TREE_SIZES)
def test_balanced_tree_children(c):
    assert_tree_consistent(losses.balanced_class_tree(c))


def test_codes_tree_is_numbered_in_preorder_whatever_the_code_order():
    tree = losses.class_tree_from_codes(["11", "0", "10"])
    assert_tree_consistent(tree)
    # root 0; the node at prefix "1" is 1; class 1 ("0") goes left at the root
    np.testing.assert_array_equal(np.asarray(tree.nodes), [[0, 1], [0, 0], [0, 1]])
    np.testing.assert_array_equal(np.asarray(tree.signs), [[1, 1], [-1, 0], [1, -1]])
    np.testing.assert_array_equal(np.asarray(tree.children), [[-2, 1], [-3, -1]])


def np_huffman_cost(p):
    """Optimal expected code length, independently: the sum of all merged weights."""
    import heapq

    heap = list(p)
    heapq.heapify(heap)
    cost = 0.0
    while len(heap) > 1:
        a, b = heapq.heappop(heap), heapq.heappop(heap)
        cost += a + b
        heapq.heappush(heap, a + b)
    return cost


def _depths(tree):
    return np.count_nonzero(np.asarray(tree.signs), axis=1)


@pytest.mark.parametrize("seed", range(4))
def test_huffman_expected_length_is_optimal_and_within_one_bit_of_entropy(seed):
    rng = np.random.default_rng(seed)
    c = int(rng.integers(2, 60))
    freq = rng.gamma(0.5, size=c) + 1e-3 if seed % 2 else 1.0 / np.arange(1, c + 1)
    tree = losses.huffman_class_tree(freq)
    assert_tree_consistent(tree)
    p = freq / freq.sum()
    depth = _depths(tree)
    expected = float(np.sum(p * depth))
    entropy = float(-np.sum(p * np.log2(p)))
    assert entropy - 1e-9 <= expected < entropy + 1
    assert expected == pytest.approx(np_huffman_cost(p), rel=1e-12)
    more = p[:, None] > p[None, :]  # more frequent -> never deeper
    assert np.all((depth[:, None] <= depth[None, :])[more])


def test_huffman_known_tree_and_special_cases():
    tree = losses.huffman_class_tree([5, 1, 1, 3, 10, 2])  # depths worked out by hand
    np.testing.assert_array_equal(_depths(tree), [2, 5, 5, 3, 1, 4])
    np.testing.assert_array_equal(_depths(losses.huffman_class_tree(np.ones(16))), np.full(16, 4))
    np.testing.assert_array_equal(_depths(losses.huffman_class_tree([0.3, 0.7])), [1, 1])
    zeros = losses.huffman_class_tree([10, 0, 0, 5, 0])  # unseen classes allowed, deepest
    assert_tree_consistent(zeros)
    assert _depths(zeros)[0] == 1 and _depths(zeros)[[1, 2, 4]].min() >= _depths(zeros)[3]


def test_huffman_errors():
    for bad, err, match in (
        ([1.0], ValueError, "at least 2"),
        (np.ones((2, 2)), ValueError, "1-D"),
        ([1.0, -1.0], ValueError, ">= 0"),
        ([1.0, np.nan], ValueError, "finite"),
        ([0, 0, 0], ValueError, "not all zero"),
        (["a", "b"], TypeError, "numeric"),
    ):
        with pytest.raises(err, match=match):
            losses.huffman_class_tree(bad)
