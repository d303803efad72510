"""The hierarchical softmax head: layer, functional loss, predictions, sparse steps, data.

References are independent of the code under test: probabilities come from a NumPy walk down
the tree's children table (the code sums log-sigmoids along the per-class path arrays),
greedy predictions from a NumPy descent, optimizer updates from Optax or NumPy.
"""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jnn import data, gradcheck, losses, nn, optim, train
from jnn.nn import HierarchicalSoftmax

B, D_IN, H = 12, 5, 6


def _trees():
    rng = np.random.default_rng(0)
    return {
        "balanced2": losses.balanced_class_tree(2),
        "balanced7": losses.balanced_class_tree(7),
        "balanced16": losses.balanced_class_tree(16),
        "huffman11": losses.huffman_class_tree(rng.gamma(0.5, size=11) + 1e-3),
        "huffman_zipf30": losses.huffman_class_tree(data.zipf_frequencies(30)),
        "codes": losses.class_tree_from_codes(["10", "0", "110", "111"]),
    }


TREES = _trees()


def _head(tree, seed=0, scale=1.0, dim=H, dtype=np.float32):
    rng = np.random.default_rng(seed)
    c = tree.num_classes
    h = rng.normal(size=(B, dim)).astype(dtype)
    params = {
        "w": (scale * rng.normal(size=(c - 1, dim))).astype(dtype),
        "b": (scale * rng.normal(size=(c - 1,))).astype(dtype),
    }
    labels = rng.integers(0, c, size=B).astype(np.int32)
    return h, params, labels


def np_probs(h, params, tree):
    """``(batch, C)`` probabilities by walking the children table from the root."""
    h = np.asarray(h, np.float64)
    w, b = (np.asarray(params[k], np.float64) for k in ("w", "b"))
    children = np.asarray(tree.children)
    probs = np.zeros((h.shape[0], tree.num_classes))
    stack = [(0, np.ones(h.shape[0]))]
    while stack:
        node, p = stack.pop()
        right = 1.0 / (1.0 + np.exp(-(h @ w[node] + b[node])))
        for child, q in ((children[node, 0], p * (1 - right)), (children[node, 1], p * right)):
            if child < 0:
                probs[:, -1 - child] = q
            else:
                stack.append((child, q))
    return probs


def np_greedy(h, params, tree):
    h = np.asarray(h, np.float64)
    w, b = (np.asarray(params[k], np.float64) for k in ("w", "b"))
    children = np.asarray(tree.children)
    out = []
    for hi in h:
        node = 0
        while node >= 0:
            node = children[node, int(hi @ w[node] + b[node] > 0)]
        out.append(-1 - node)
    return np.array(out)


def np_path_nodes(tree, labels):
    """The set of internal nodes on the labels' paths (from the children table)."""
    children = np.asarray(tree.children)
    parent = {}
    for node, kids in enumerate(children):
        for kid in kids:
            parent[int(kid)] = node
    touched = set()
    for y in labels:
        item = -1 - int(y)
        while item in parent:
            item = parent[item]
            touched.add(item)
    return touched


def _output(h, params, tree):
    return losses.HierarchicalOutput(jnp.asarray(h), params["w"], params["b"], tree)


# ----------------------------------------------------------------------------- layer


def test_layer_params_start_where_dense_would(key):
    tree = TREES["huffman11"]
    layer = HierarchicalSoftmax(tree)
    params, state = layer.init(key, (B, H))
    assert state == {}
    chex.assert_shape(params["w"], (10, H))
    chex.assert_shape(params["b"], (10,))
    dense, _ = nn.Dense(10).init(key, (B, H))
    np.testing.assert_array_equal(np.asarray(params["w"]), np.asarray(dense["w"]).T)
    np.testing.assert_array_equal(np.asarray(params["b"]), 0)
    raw, _ = layer.init(jax.random.PRNGKey(0), (B, H))
    chex.assert_trees_all_equal(raw, params)
    with jax.enable_x64(True):
        p64, _ = layer.init(key, (B, H), jnp.float64)
        assert p64["w"].dtype == jnp.float64


def test_layer_output_is_the_head_and_its_shape(key):
    tree = TREES["balanced7"]
    model = nn.Serial(nn.Dense(H), nn.Relu(), HierarchicalSoftmax(tree))
    params, state = model.init(key, (B, D_IN))
    x = jax.random.normal(key, (B, D_IN))
    out, _ = jax.jit(model.apply)(params, state, x)
    assert isinstance(out, losses.HierarchicalOutput)
    assert out.shape == (B, 7) and out.num_classes == 7
    chex.assert_trees_all_equal(out.w, params["hierarchicalsoftmax_2"]["w"])
    np.testing.assert_array_equal(np.asarray(out.tree.nodes), np.asarray(tree.nodes))
    assert nn.output_shape(model, (B, D_IN)) == (B, 7)
    assert "(12, 7)" in nn.summary(model, (B, D_IN))


def test_layer_is_hashable_and_compares_by_tree():
    a = HierarchicalSoftmax(losses.balanced_class_tree(9))
    b = HierarchicalSoftmax(losses.balanced_class_tree(9))
    c = HierarchicalSoftmax(losses.huffman_class_tree(np.arange(1, 10)))
    assert a == b and hash(a) == hash(b) and a != c
    assert len({a, b, c}) == 2
    assert nn.Serial(nn.Dense(3), a) == nn.Serial(nn.Dense(3), b)
    assert "num_classes=9" in repr(a)


def test_layer_errors(key):
    tree = TREES["balanced7"]
    with pytest.raises(TypeError, match="ClassTree"):
        HierarchicalSoftmax((tree.nodes, tree.signs))
    with pytest.raises(TypeError, match="w_init"):
        HierarchicalSoftmax(tree, w_init=3)
    layer = HierarchicalSoftmax(tree)
    with pytest.raises(ValueError, match="rank >= 2"):
        layer.init(key, (H,))
    params, state = layer.init(key, (B, H))
    with pytest.raises(ValueError, match=f"built for {H} features"):
        layer.apply(params, state, jnp.zeros((B, H + 1)))


# ----------------------------------------------------------------------------- loss and probs


@pytest.mark.parametrize("name", sorted(TREES))
def test_probabilities_sum_to_one_and_loss_is_minus_their_log(name):
    tree = TREES[name]
    h, params, labels = _head(tree, scale=2.0)
    want = np_probs(h, params, tree)
    np.testing.assert_allclose(want.sum(-1), 1.0, rtol=1e-12)
    out = _output(h, params, tree)
    logp = losses.log_probabilities(out)
    chex.assert_shape(logp, (B, tree.num_classes))
    prob = np.exp(np.asarray(logp, np.float64))
    np.testing.assert_allclose(prob.sum(-1), 1.0, rtol=1e-5)
    chex.assert_trees_all_close(prob, want, rtol=1e-4, atol=1e-7)
    loss = losses.hierarchical_softmax_loss(h, labels, params, tree)
    chex.assert_shape(loss, (B,))
    assert loss.dtype == jnp.float32
    chex.assert_trees_all_close(np.asarray(loss), -np.log(want[np.arange(B), labels]), rtol=1e-5)
    # the head's output form: loss(outputs, targets)
    chex.assert_trees_all_equal(losses.hierarchical_softmax_loss(out, labels), loss)


def test_two_classes_is_logistic_regression():
    tree = TREES["balanced2"]  # class 0 left (sigmoid(-x)), class 1 right (sigmoid(x))
    h, params, labels = _head(tree, scale=3.0)
    x = h.astype(np.float64) @ params["w"][0] + params["b"][0]
    got = np.asarray(losses.hierarchical_softmax_loss(h, labels, params, tree))
    want = np.log1p(np.exp(-np.where(labels == 1, x, -x)))
    np.testing.assert_allclose(got, want, rtol=1e-5)
    x32 = jnp.asarray(x, jnp.float32)
    chex.assert_trees_all_close(got, optax.sigmoid_binary_cross_entropy(x32, labels), rtol=1e-5)


@pytest.mark.parametrize("name", ["balanced16", "huffman11"])
def test_gathered_path_loss_equals_dense_node_logit_loss(name):
    tree = TREES[name]
    h, params, labels = _head(tree, scale=1.5)

    def head_loss(h, p):
        return jnp.mean(losses.hierarchical_softmax_loss(h, labels, p, tree))

    def dense_loss(h, p):  # every node's logit, as a Dense(C - 1) layer computes it
        node_logits = h @ p["w"].T + p["b"][None, :]
        return jnp.mean(losses.hierarchical_softmax(node_logits, labels, tree))

    h = jnp.asarray(h)
    chex.assert_trees_all_close(head_loss(h, params), dense_loss(h, params), rtol=1e-6)
    got = jax.grad(head_loss, argnums=(0, 1))(h, params)
    want = jax.grad(dense_loss, argnums=(0, 1))(h, params)
    chex.assert_trees_all_close(got, want, rtol=1e-5, atol=1e-7)
    # the two halves: gathered rows, then the loss of those rows
    path = losses.hierarchical_path(labels, params, tree)
    on = np.asarray(path.signs) != 0
    np.testing.assert_array_equal(np.asarray(path.nodes)[~on], tree.num_nodes)  # dropped
    np.testing.assert_array_equal(
        np.asarray(path.w)[on], params["w"][np.asarray(tree.nodes)[labels]][on]
    )
    chex.assert_trees_all_close(
        losses.hierarchical_path_loss(h, path),
        losses.hierarchical_softmax_loss(h, labels, params, tree),
    )


def test_gradcheck_passes_on_the_head(key):
    tree = TREES["huffman11"]
    model = nn.Serial(nn.Dense(H), nn.Tanh(), HierarchicalSoftmax(tree))
    x = jax.random.normal(key, (B, D_IN))
    labels = jnp.asarray(np.arange(B) % tree.num_classes, jnp.int32)
    params, state = model.init(key, (B, D_IN))

    def f(p, x):
        out, _ = model.apply(p, state, x)
        return jnp.mean(losses.hierarchical_softmax_loss(out, labels))

    report = gradcheck.check_grads(f, params, x)
    assert report.ok, str(report)


def test_jit_vmap_and_float64():
    tree = TREES["huffman_zipf30"]
    h, params, labels = _head(tree)
    eager = losses.hierarchical_softmax_loss(h, labels, params, tree)
    jitted = jax.jit(losses.hierarchical_softmax_loss)(h, labels, params, tree)  # tree: a pytree
    chex.assert_trees_all_close(jitted, eager)
    members = jax.tree.map(lambda a: jnp.stack([a, 2 * a]), params)
    per_member = jax.vmap(losses.hierarchical_softmax_loss, in_axes=(None, None, 0, None))(
        h, labels, members, tree
    )
    chex.assert_trees_all_close(per_member[0], eager, rtol=1e-6)
    one = lambda hi, yi: losses.hierarchical_softmax_loss(hi[None], yi[None], params, tree)[0]
    chex.assert_trees_all_close(jax.vmap(one)(h, labels), eager, rtol=1e-6)
    with jax.enable_x64(True):
        h64, p64, _ = _head(tree, dtype=np.float64)
        got = losses.hierarchical_softmax_loss(h64, labels, p64, tree)
        assert got.dtype == jnp.float64
        np.testing.assert_allclose(
            np.asarray(got), -np.log(np_probs(h64, p64, tree)[np.arange(B), labels]), rtol=1e-12
        )
        assert losses.log_probabilities(_output(h64, p64, tree)).dtype == jnp.float64


def test_invalid_labels_and_call_forms():
    tree = TREES["balanced7"]
    h, params, labels = _head(tree)
    bad = labels.copy()
    bad[1], bad[3] = 7, -1
    with pytest.raises(ValueError, match=r"\[0, 7\)"):
        losses.hierarchical_softmax_loss(h, bad, params, tree)
    got = np.asarray(jax.jit(losses.hierarchical_softmax_loss)(h, bad, params, tree))
    assert np.isnan(got[[1, 3]]).all() and np.isfinite(np.delete(got, [1, 3])).all()
    with pytest.raises(TypeError, match="integer class labels"):
        losses.hierarchical_softmax_loss(h, labels.astype(np.float32), params, tree)
    out = _output(h, params, tree)
    with pytest.raises(TypeError, match="alone"):
        losses.hierarchical_softmax_loss(out, labels, params, tree)
    with pytest.raises(TypeError, match="tree"):
        losses.hierarchical_softmax_loss(h, labels, params)
    with pytest.raises(TypeError, match="head_params"):
        losses.hierarchical_softmax_loss(h, labels, params["w"], tree)
    narrow = {"w": params["w"][:, :3], "b": params["b"]}
    with pytest.raises(ValueError, match=r"\(6, 6\)"):
        losses.hierarchical_softmax_loss(h, labels, narrow, tree)


# ----------------------------------------------------------------------------- predictions


@pytest.mark.parametrize("name", sorted(TREES))
def test_greedy_descent_and_accuracy(name):
    tree = TREES[name]
    h, params, labels = _head(tree, scale=2.0)
    out = _output(h, params, tree)
    greedy = losses.hierarchical_predict(h, params, tree)
    assert greedy.dtype == jnp.int32
    np.testing.assert_array_equal(np.asarray(greedy), np_greedy(h, params, tree))
    np.testing.assert_array_equal(np.asarray(losses.hierarchical_predict(out)), np.asarray(greedy))
    exact = losses.hierarchical_predict(out, method="exact")
    np.testing.assert_array_equal(np.asarray(exact), np_probs(h, params, tree).argmax(-1))
    # accuracy on the head's output: the greedy rule, read off the label's path
    labels = np.where(np.arange(B) % 2 == 0, np.asarray(greedy), labels).astype(np.int32)
    hits = (np_greedy(h, params, tree) == labels).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(losses.top1_correct(out, labels)), hits)
    acc = losses.accuracy(out, labels)
    assert acc.dtype == jnp.float32 and float(acc) == pytest.approx(hits.mean())
    assert float(jax.jit(losses.accuracy)(out, labels)) == pytest.approx(hits.mean())
    path = losses.hierarchical_path(labels, params, tree)
    np.testing.assert_array_equal(np.asarray(losses.hierarchical_path_correct(h, path)), hits)
    assert np.isnan(float(losses.accuracy(out, labels.astype(np.float32))))


def test_greedy_equals_exact_when_decisions_are_confident():
    tree = TREES["huffman_zipf30"]
    h, params, _ = _head(tree, scale=6.0)
    x = np.asarray(h, np.float64) @ params["w"].T.astype(np.float64) + params["b"]
    greedy, exact = np_greedy(h, params, tree), np_probs(h, params, tree).argmax(-1)
    confident = []
    for i, y in enumerate(greedy):  # the documented sufficient condition on the greedy path
        q = min(1 / (1 + math.exp(-abs(x[i, n]))) for n, s in _path(tree, y))
        confident.append(q**tree.depth > 1 - q)
    confident = np.array(confident)
    assert confident.sum() >= B // 2
    got = np.asarray(losses.hierarchical_predict(h, params, tree))
    np.testing.assert_array_equal(got[confident], exact[confident])
    np.testing.assert_array_equal(got, greedy)


def _path(tree, y):
    n = int(np.count_nonzero(np.asarray(tree.signs)[y]))
    return list(zip(np.asarray(tree.nodes)[y, :n], np.asarray(tree.signs)[y, :n], strict=True))


@pytest.mark.parametrize(
    ("root", "exact_class"), [(math.log(2) - 1e-2, 0), (math.log(2) + 1e-2, 1)]
)
def test_greedy_differs_from_exact_just_below_the_threshold(root, exact_class):
    # codes: class 0 = "0", class 1 = "10", class 2 = "11"; the second node is undecided (0),
    # so p = (sigmoid(-r), sigmoid(r) / 2, sigmoid(r) / 2): class 0 wins while r < log 2.
    tree = losses.class_tree_from_codes(["0", "10", "11"])
    h = np.ones((1, 1), np.float32)
    params = {"w": np.array([[root], [0.0]], np.float32), "b": np.zeros(2, np.float32)}
    assert int(losses.hierarchical_predict(h, params, tree)[0]) == 1  # right, then left
    assert int(losses.hierarchical_predict(h, params, tree, method="exact")[0]) == exact_class


def test_predict_errors():
    tree = TREES["balanced7"]
    h, params, _ = _head(tree)
    with pytest.raises(ValueError, match="method"):
        losses.hierarchical_predict(h, params, tree, method="beam")


# ----------------------------------------------------------------------------- sparse steps


def _model(tree, dropout=0.0):
    layers = [nn.Dense(H), nn.Relu()]
    if dropout:
        layers.append(nn.Dropout(dropout))
    return nn.Serial(*layers, HierarchicalSoftmax(tree))


def _batches(tree, n, seed=0):
    rng = np.random.default_rng(seed)
    for _ in range(n):
        x = rng.normal(size=(B, D_IN)).astype(np.float32)
        y = rng.integers(0, min(tree.num_classes, 4), size=B).astype(np.int32)  # duplicates
        yield jnp.asarray(x), jnp.asarray(y)


def test_sparse_sgd_step_equals_dense_sgd_step(key):
    tree = TREES["huffman11"]
    model = _model(tree, dropout=0.3)
    lr = 0.3
    sparse = train.init_sparse_head(model, optim.sgd(lr), key, (B, D_IN))
    dense = train.init(model, optim.sgd(lr), key, (B, D_IN))
    chex.assert_trees_all_equal(sparse.params, dense.params)
    sparse_step = train.make_sparse_head_step(model, optim.sgd(lr), learning_rate=lr)
    dense_step = train.make_step(model, losses.hierarchical_softmax_loss, optim.sgd(lr), monitor=0)
    for batch in _batches(tree, 3):
        sparse, sm = sparse_step(sparse, batch, key)
        dense, dm = dense_step(dense, batch, key)
        chex.assert_trees_all_close(sm["loss"], dm["loss"], rtol=1e-6)
        out, _ = model.apply(dense.params, dense.model_state, batch[0])
    chex.assert_trees_all_close(sparse.params, dense.params, rtol=1e-5, atol=1e-6)
    assert int(sparse.step) == 3
    # the metrics' accuracy is jnn.losses.accuracy of the step's forward pass
    assert 0.0 <= float(sm["accuracy"]) <= 1.0


def test_lazy_adam_equals_adam_when_every_row_is_touched(key):
    tree = TREES["balanced2"]  # one node: every batch touches it
    model = nn.Serial(HierarchicalSoftmax(tree))  # no body
    lr = 0.05
    sparse = train.init_sparse_head(model, optim.adam(lr), key, (B, H), head_update="lazy_adam")
    dense = train.init(model, optim.adam(lr), key, (B, H))
    sparse_step = train.make_sparse_head_step(
        model, optim.adam(lr), head_update="lazy_adam", learning_rate=lr
    )
    dense_step = train.make_step(model, losses.hierarchical_softmax_loss, optim.adam(lr), monitor=0)
    rng = np.random.default_rng(1)
    for _ in range(4):
        x = jnp.asarray(rng.normal(size=(B, H)), jnp.float32)
        batch = (x, jnp.asarray(rng.integers(0, 2, B), jnp.int32))
        sparse, _ = sparse_step(sparse, batch, key)
        dense, _ = dense_step(dense, batch, key)
    chex.assert_trees_all_close(sparse.params, dense.params, rtol=1e-5, atol=1e-7)


def _np_lazy_adam(tree, batches, params, lr, b1=0.9, b2=0.999, eps=1e-8):
    """NumPy lazy Adam on the head alone (h = x): dense grads from jax.grad, touched rows only."""
    p = {k: np.asarray(v, np.float64) for k, v in params.items()}
    m = {k: np.zeros_like(v) for k, v in p.items()}
    v = {k: np.zeros_like(a) for k, a in p.items()}

    def mean_loss(q, x, y):
        return jnp.mean(losses.hierarchical_softmax_loss(x, y, q, tree))

    for t, (x, y) in enumerate(batches, start=1):
        g = jax.grad(mean_loss)(jax.tree.map(jnp.float32, p), x, y)
        g = {k: np.asarray(a, np.float64) for k, a in g.items()}
        rows = sorted(np_path_nodes(tree, np.asarray(y)))
        for k in p:
            m[k][rows] = b1 * m[k][rows] + (1 - b1) * g[k][rows]
            v[k][rows] = b2 * v[k][rows] + (1 - b2) * g[k][rows] ** 2
            m_hat, v_hat = m[k][rows] / (1 - b1**t), v[k][rows] / (1 - b2**t)
            p[k][rows] -= lr * m_hat / (np.sqrt(v_hat) + eps)
    return p, m, v


def test_lazy_adam_touches_only_the_paths_unlike_adam(key):
    tree = TREES["balanced16"]
    model = nn.Serial(HierarchicalSoftmax(tree))
    lr = 0.1
    state = train.init_sparse_head(model, optim.sgd(lr), key, (B, H), head_update="lazy_adam")
    init_params = state.params["hierarchicalsoftmax_0"]
    step = train.make_sparse_head_step(
        model, optim.sgd(lr), head_update="lazy_adam", learning_rate=lr
    )
    rng = np.random.default_rng(2)
    batches = []
    for lo in (0, 0, 8):  # the last batch touches only the right half of the tree
        y = rng.integers(lo, lo + 8, B).astype(np.int32)
        batches.append((jnp.asarray(rng.normal(size=(B, H)), jnp.float32), jnp.asarray(y)))
    want_p, want_m, want_v = _np_lazy_adam(tree, batches, init_params, lr)
    dense = train.init(model, optim.adam(lr), key, (B, H))
    dense_step = train.make_step(model, losses.hierarchical_softmax_loss, optim.adam(lr), monitor=0)
    for batch in batches:
        before = state.params["hierarchicalsoftmax_0"]["w"]
        before = np.array(before)
        state, _ = step(state, batch, key)
        dense, _ = dense_step(dense, batch, key)
    head, moments = state.params["hierarchicalsoftmax_0"], state.opt_state.head
    chex.assert_trees_all_close(jax.tree.map(np.asarray, head), want_p, rtol=1e-4, atol=1e-6)
    chex.assert_trees_all_close(jax.tree.map(np.asarray, moments.mu), want_m, rtol=1e-4, atol=1e-7)
    chex.assert_trees_all_close(jax.tree.map(np.asarray, moments.nu), want_v, rtol=1e-4, atol=1e-9)
    assert int(moments.count) == 3
    untouched = sorted(set(range(15)) - np_path_nodes(tree, np.asarray(batches[-1][1])))
    assert untouched  # the left subtree's nodes: lazy Adam leaves them alone on the last step
    np.testing.assert_array_equal(np.asarray(head["w"])[untouched], before[untouched])
    dense_w = np.asarray(dense.params["hierarchicalsoftmax_0"]["w"])
    assert np.abs(dense_w[untouched] - before[untouched]).max() > 1e-3  # Adam's momentum moves them


def _jaxpr_shapes(jaxpr, out=None):
    """``(primitive name, output shape)`` of every equation, sub-jaxprs included."""
    out = [] if out is None else out
    for eqn in jaxpr.eqns:
        out += [(eqn.primitive.name, tuple(v.aval.shape)) for v in eqn.outvars]
        for param in eqn.params.values():
            for sub in param if isinstance(param, (list, tuple)) else (param,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    _jaxpr_shapes(inner, out)
    return out


@pytest.mark.parametrize("head_update", ["sgd", "lazy_adam"])
def test_sparse_step_forms_no_dense_head_array(key, head_update):
    tree = losses.balanced_class_tree(300)  # C - 1 = 299 rows, far more than B * D touched
    model = _model(tree)
    state = train.init_sparse_head(model, optim.adam(1e-3), key, (B, D_IN), head_update=head_update)
    step = train.make_sparse_head_step(model, optim.adam(1e-3), head_update=head_update, jit=False)
    batch = next(_batches(tree, 1))
    shapes = _jaxpr_shapes(jax.make_jaxpr(step)(state, batch, key).jaxpr)
    full = [name for name, shape in shapes if shape in ((299, H), (299,))]
    # only the in-place scatters write head-sized arrays (w, b; and m, v for lazy Adam)
    assert set(full) <= {"scatter-add", "scatter"}, full
    assert len(full) == (2 if head_update == "sgd" else 6)
    dense = train.make_step(model, losses.hierarchical_softmax_loss, optim.sgd(0.1), jit=False)
    dense_state = train.init(model, optim.sgd(0.1), key, (B, D_IN))
    dense_shapes = _jaxpr_shapes(jax.make_jaxpr(dense)(dense_state, batch, key).jaxpr)
    assert len([s for _, s in dense_shapes if s == (299, H)]) > 2  # the dense gradient


@pytest.mark.parametrize("head_update", ["sgd", "lazy_adam"])
def test_donated_sparse_step_updates_in_place(key, head_update):
    tree = losses.balanced_class_tree(3000)
    model = nn.Serial(HierarchicalSoftmax(tree))
    state = train.init_sparse_head(model, optim.sgd(0.1), key, (B, H), head_update=head_update)
    step = train.make_sparse_head_step(model, optim.sgd(0.1), head_update=head_update)
    batch = (jnp.ones((B, H)), jnp.arange(B, dtype=jnp.int32))
    hlo = step.lower(state, batch, key).compile().as_text()
    copies = [line for line in hlo.splitlines() if " copy(" in line and "2999" in line]
    assert not copies, copies  # a copy of the head would cost O(C d) per step
    new, _ = step(state, batch, key)
    assert state.params["hierarchicalsoftmax_0"]["w"].is_deleted()  # donated
    assert not new.params["hierarchicalsoftmax_0"]["w"].is_deleted()


def test_sparse_step_keys_vmap_and_evaluate(key):
    tree = TREES["huffman_zipf30"]
    model = _model(tree, dropout=0.2)
    opt = optim.adam(1e-2)
    batch = next(_batches(tree, 1))
    typed = train.init_sparse_head(model, opt, key, (B, D_IN), head_update="lazy_adam")
    raw_key = jax.random.PRNGKey(0)
    raw = train.init_sparse_head(model, opt, raw_key, (B, D_IN), head_update="lazy_adam")
    chex.assert_trees_all_equal(typed, raw)
    step = train.make_sparse_head_step(model, opt, head_update="lazy_adam", donate=False)
    a, ma = step(typed, batch, key)
    b, mb = step(raw, batch, jax.random.PRNGKey(0))
    chex.assert_trees_all_equal((a, ma), (b, mb))
    # vmap over two members (stacked states, one batch)
    plain = train.make_sparse_head_step(model, opt, head_update="lazy_adam", jit=False)
    members = jax.tree.map(lambda u: jnp.stack([u, u]), typed)
    stacked, _ = jax.jit(jax.vmap(plain, in_axes=(0, None, None)))(members, batch, key)
    chex.assert_trees_all_close(jax.tree.map(lambda u: u[1], stacked), a, rtol=1e-5, atol=1e-7)
    # the state's params are the model's: evaluate works on them
    loss = losses.hierarchical_softmax_loss
    metrics = train.evaluate(model, a.params, a.model_state, *batch, loss)
    assert np.isfinite(metrics["loss"]) and 0 <= metrics["accuracy"] <= 1


def test_sparse_step_errors(key):
    tree = TREES["balanced7"]
    with pytest.raises(TypeError, match="last layer"):
        train.make_sparse_head_step(nn.Serial(nn.Dense(6)), optim.sgd(0.1))
    with pytest.raises(TypeError, match="last layer"):
        train.make_sparse_head_step(HierarchicalSoftmax(tree), optim.sgd(0.1))
    model = _model(tree)
    with pytest.raises(ValueError, match="head_update"):
        train.make_sparse_head_step(model, optim.sgd(0.1), head_update="adam")
    with pytest.raises(ValueError, match="learning_rate"):
        train.make_sparse_head_step(model, optim.sgd(0.1), learning_rate=0.0)
    with pytest.raises(ValueError, match="b2"):
        train.make_sparse_head_step(model, optim.sgd(0.1), head_update="lazy_adam", b2=1.0)
    state = train.init_sparse_head(model, optim.sgd(0.1), key, (B, D_IN), head_update="sgd")
    step = train.make_sparse_head_step(model, optim.sgd(0.1), head_update="lazy_adam")
    with pytest.raises(TypeError, match="init_sparse_head"):
        step(state, next(_batches(tree, 1)), key)


# ----------------------------------------------------------------------------- data


def test_zipf_frequencies():
    p = data.zipf_frequencies(5, 1.0)
    want = 1 / np.arange(1, 6)
    np.testing.assert_allclose(p, want / want.sum(), rtol=1e-15)
    np.testing.assert_allclose(data.zipf_frequencies(4, 0.0), 0.25)
    with pytest.raises(ValueError, match="zipf"):
        data.zipf_frequencies(5, -0.5)


def test_make_many_classes():
    ds = data.make_many_classes(50, 8, 4000, zipf=1.0, seed=3, standardize=False)
    assert ds.name == "many-classes" and ds.num_classes == 50 and ds.input_shape == (8,)
    n = len(ds.y_train) + len(ds.y_val) + len(ds.y_test)
    assert n == 4000 and len(ds.y_test) == 800 and len(ds.y_val) == 320
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int32
    again = data.make_many_classes(50, 8, 4000, zipf=1.0, seed=3, standardize=False)
    np.testing.assert_array_equal(again.x_test, ds.x_test)
    y = np.concatenate([ds.y_train, ds.y_val, ds.y_test])
    p = data.zipf_frequencies(50, 1.0)
    freq = np.bincount(y, minlength=50) / 4000
    assert np.all(np.abs(freq - p) < 5 * np.sqrt(p * (1 - p) / 4000))
    # clusters of clusters (7 levels for 50 classes): siblings (2k, 2k + 1) differ in level 0
    # only, classes (k, k + 32) in levels 0..5, so the centres' distances differ by sqrt(6);
    # independent centres would give a ratio near 1
    x = np.concatenate([ds.x_train, ds.x_val, ds.x_test])
    means = np.stack([x[y == c].mean(0) for c in range(50)])
    near = np.mean([np.linalg.norm(means[2 * k] - means[2 * k + 1]) for k in range(9)])
    far = np.mean([np.linalg.norm(means[k] - means[k + 32]) for k in range(18)])
    assert near < 0.6 * far, (near, far)
    std = data.make_many_classes(50, 8, 4000, seed=3)
    np.testing.assert_allclose(std.x_train.mean(0), 0, atol=1e-5)


def test_make_many_classes_errors():
    for kwargs, err, match in (
        ({"num_classes": 1}, ValueError, "num_classes"),
        ({"dim": 0}, ValueError, "dim"),
        ({"num_examples": 2}, ValueError, "num_examples"),
        ({"zipf": -1.0}, ValueError, "zipf"),
        ({"noise": 0.0}, ValueError, "noise"),
        ({"num_classes": 3.0}, TypeError, "num_classes"),
        ({"test_fraction": 1.0}, ValueError, "test_fraction"),
    ):
        args = {"num_classes": 10, "dim": 2, "num_examples": 100, **kwargs}
        with pytest.raises(err, match=match):
            data.make_many_classes(**args)


# ----------------------------------------------------------------------------- training


def _fit(model, state, step, x, y, epochs, batch_size=128):
    for epoch in range(epochs):
        idx = data.batch_indices(jax.random.key(epoch), x.shape[0], batch_size)
        for i in idx:
            state, _ = step(state, (x[i], y[i]), jax.random.key(0))
    return state


def test_head_trains_close_to_softmax_on_many_classes(key):
    c, dim = 3000, 32
    ds = data.make_many_classes(c, dim, 4000, seed=0)
    x, y, xt, yt = (jnp.asarray(a) for a in (ds.x_train, ds.y_train, ds.x_test, ds.y_test))
    body = [nn.Dense(64), nn.Relu()]
    opt = optim.adam(1e-2)
    softmax = nn.Serial(*body, nn.Dense(c))
    step = train.make_step(softmax, losses.softmax_cross_entropy, opt, monitor=0)
    state = _fit(softmax, train.init(softmax, opt, key, (128, dim)), step, x, y, 8)
    out, _ = softmax.apply(state.params, state.model_state, xt)
    softmax_acc = float(losses.accuracy(out, yt))
    results = {}
    counts = np.bincount(ds.y_train, minlength=c)
    trees = {
        "balanced": losses.balanced_class_tree(c),
        "huffman": losses.huffman_class_tree(counts),
    }
    for name, tree in trees.items():
        model = nn.Serial(*body, HierarchicalSoftmax(tree))
        state = train.init_sparse_head(model, opt, key, (128, dim), head_update="lazy_adam")
        step = train.make_sparse_head_step(model, opt, head_update="lazy_adam", learning_rate=1e-2)
        state = _fit(model, state, step, x, y, 8)
        out, _ = model.apply(state.params, state.model_state, xt)
        results[name] = float(losses.accuracy(out, yt))
    chance = float(np.mean(ds.y_test == np.argmax(counts)))  # always the most frequent class
    assert chance < 0.15 and softmax_acc > 0.6
    assert results["balanced"] > softmax_acc - 0.05, (results, softmax_acc)
    assert results["huffman"] > 4 * chance, (results, softmax_acc)


@pytest.mark.parametrize("tree_kind", ["balanced", "huffman"])
def test_head_reaches_95_percent_on_digits(key, tree_kind):
    ds = data.load_digits()
    tree = (
        losses.balanced_class_tree(10)
        if tree_kind == "balanced"
        else losses.huffman_class_tree(np.bincount(ds.y_train, minlength=10))
    )
    model = nn.Serial(nn.Dense(128), nn.Relu(), HierarchicalSoftmax(tree))
    opt = optim.adam(3e-3)
    step = train.make_step(model, losses.hierarchical_softmax_loss, opt, monitor=0)
    x, y = jnp.asarray(ds.x_train), jnp.asarray(ds.y_train)
    state = _fit(model, train.init(model, opt, key, (64, 64)), step, x, y, 30, batch_size=64)
    out, _ = model.apply(state.params, state.model_state, jnp.asarray(ds.x_test))
    assert float(losses.accuracy(out, ds.y_test)) >= 0.95
    exact = losses.accuracy(losses.log_probabilities(out), ds.y_test)
    assert float(exact) >= 0.95


def test_fit_with_the_sparse_head_step_equals_the_dense_step_when_every_row_is_touched():
    # 10 classes, batch 64: every node of the balanced tree is on some path in every batch, so
    # lazy Adam equals dense Adam and fit's sparse path must reach the dense path's params
    ds = data.load_digits()
    model = nn.Serial(
        nn.Dense(32), nn.Relu(), nn.HierarchicalSoftmax(losses.balanced_class_tree(10))
    )
    kwargs = dict(epochs=2, batch_size=64, key=jax.random.key(0), progress=False)
    args = (model, losses.hierarchical_softmax_loss, optim.adam(3e-3), (ds.x_train, ds.y_train))
    dense = train.fit(*args, **kwargs)
    sparse = train.fit(
        *args,
        step_options={"sparse_head": {"head_update": "lazy_adam", "learning_rate": 3e-3}},
        **kwargs,
    )
    assert isinstance(sparse.state.opt_state, train.SparseHeadOptState)
    chex.assert_trees_all_close(sparse.state.params, dense.state.params, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="sparse_head takes no other option"):
        train.fit(*args, step_options={"sparse_head": {"head_update": "sgd"}, "l2": 1e-4}, **kwargs)
