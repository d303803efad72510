"""Tests for jnn.nn: numerics against NumPy / Flax, jit, vmap, grad, state, errors, summary."""

import dataclasses
import itertools
import math

import chex
import flax.linen as fnn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jnn import activations as A
from jnn import init as jinit
from jnn import nn
from jnn._tree import map_with_names, named_leaves


def _flax():
    """Flax internals broadcast implicitly; relax the suite's strict settings around them."""
    return _Both(jax.numpy_dtype_promotion("standard"), jax.numpy_rank_promotion("allow"))


class _Both:
    def __init__(self, *cms):
        self.cms = cms

    def __enter__(self):
        for cm in self.cms:
            cm.__enter__()

    def __exit__(self, *exc):
        for cm in reversed(self.cms):
            cm.__exit__(*exc)


def _rand(seed, shape, dtype=np.float32):
    return np.random.default_rng(seed).normal(size=shape).astype(dtype)


def _fake_init(layer, shape, dtype=jnp.float32, seed=0):
    """Random params/state with the shapes ``layer.init`` gives, without compiling an init.

    (Compiling ``jax.random.normal`` once per kernel shape dominates the suite's run time on a
    small CPU; ``jax.eval_shape`` gives the shapes for free.)
    """
    p_shapes, s_shapes = jax.eval_shape(lambda k: layer.init(k, shape, dtype), jax.random.key(0))
    rng = np.random.default_rng(seed)

    def fill(name, leaf):
        leaf_name = name.split("/")[-1]
        if leaf_name == "var":
            return jnp.asarray(rng.uniform(0.5, 2.0, leaf.shape), leaf.dtype)
        if leaf_name == "scale":
            return jnp.asarray(1 + 0.2 * rng.normal(size=leaf.shape), leaf.dtype)
        return jnp.asarray(0.5 * rng.normal(size=leaf.shape), leaf.dtype)

    return map_with_names(fill, p_shapes), map_with_names(fill, s_shapes)


# ----------------------------------------------------------------------------- core / Serial


def _np_batchnorm(x, scale, offset, eps=1e-5):
    axes = tuple(range(x.ndim - 1))
    mean, var = x.mean(axis=axes), x.var(axis=axes)
    return (x - mean) / np.sqrt(var + eps) * scale + offset, mean, var


def test_serial_smoke_and_param_paths(key):
    net = nn.Serial(nn.Dense(16), nn.Relu(), nn.Dropout(0.5), nn.BatchNorm(), nn.Dense(3))
    params, state = net.init(key, (4, 8))
    assert nn.layer_names(net) == ("dense_0", "relu_1", "dropout_2", "batchnorm_3", "dense_4")
    assert list(named_leaves(params)) == [
        "batchnorm_3/offset",
        "batchnorm_3/scale",
        "dense_0/b",
        "dense_0/w",
        "dense_4/b",
        "dense_4/w",
    ]
    assert set(params) == set(state) == set(nn.layer_names(net))
    assert list(named_leaves(state)) == ["batchnorm_3/mean", "batchnorm_3/var"]
    chex.assert_shape(params["dense_0"]["w"], (8, 16))
    chex.assert_shape(params["dense_4"]["w"], (16, 3))
    # Numerics on random params/state (non-trivial BatchNorm scale, offset and statistics).
    params, state = _fake_init(net, (4, 8))
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    s = jax.tree.map(lambda a: np.asarray(a, np.float64), state)
    x = _rand(0, (4, 8))
    y, new_state, inter = net.apply_intermediates(
        params, state, jnp.asarray(x), key=key, train=True
    )
    chex.assert_shape(y, (4, 3))
    assert list(inter) == list(nn.layer_names(net))
    # Reference: an independent NumPy forward pass. The dropout mask is drawn as documented:
    # child 2 gets fold_in(key, 2) and keeps each unit with probability 1 - rate.
    keep = np.asarray(jax.random.bernoulli(jax.random.fold_in(key, 2), 0.5, (4, 16)))
    h = np.maximum(x @ p["dense_0"]["w"] + p["dense_0"]["b"], 0) * keep / 0.5
    bn = p["batchnorm_3"]
    h, mean, var = _np_batchnorm(h, bn["scale"], bn["offset"])
    ref = h @ p["dense_4"]["w"] + p["dense_4"]["b"]
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4)
    old = s["batchnorm_3"]
    np.testing.assert_allclose(
        new_state["batchnorm_3"]["mean"], 0.9 * old["mean"] + 0.1 * mean, rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(
        new_state["batchnorm_3"]["var"], 0.9 * old["var"] + 0.1 * var, rtol=1e-5, atol=1e-6
    )
    # Eval: no dropout, running statistics, state unchanged.
    y_eval, eval_state = net.apply(params, state, jnp.asarray(x))
    chex.assert_trees_all_equal(eval_state, state)
    h = np.maximum(x @ p["dense_0"]["w"] + p["dense_0"]["b"], 0)
    h = (h - old["mean"]) / np.sqrt(old["var"] + 1e-5) * bn["scale"] + bn["offset"]
    ref_eval = h @ p["dense_4"]["w"] + p["dense_4"]["b"]
    np.testing.assert_allclose(y_eval, ref_eval, rtol=1e-4, atol=1e-4)


def test_serial_per_layer_keys_are_folded(key):
    net = nn.Serial(nn.Dropout(0.5), nn.Dropout(0.5))
    x = jnp.ones((1, 1000))
    params, state = _fake_init(net, x.shape)
    _, _, inter = net.apply_intermediates(params, state, x, key=key, train=True)
    ref0, _ = nn.Dropout(0.5).apply({}, {}, x, key=jax.random.fold_in(key, 0), train=True)
    chex.assert_trees_all_equal(inter["dropout_0"], ref0)
    ref1, _ = nn.Dropout(0.5).apply({}, {}, ref0, key=jax.random.fold_in(key, 1), train=True)
    chex.assert_trees_all_equal(inter["dropout_1"], ref1)


def test_layers_are_hashable_and_frozen():
    net = nn.Serial(nn.Dense(3), nn.Relu())
    assert hash(net) == hash(nn.Serial(nn.Dense(3), nn.Relu()))
    assert net == nn.Serial(nn.Dense(3), nn.Relu())
    with pytest.raises(AttributeError):
        net.layers = ()
    with pytest.raises(AttributeError):
        nn.Dense(3).features = 4


# ----------------------------------------------------------------------------- Dense, Maxout


def test_dense_matches_numpy_and_inits(key):
    layer = nn.Dense(5)
    params, state = _fake_init(layer, (3, 4))
    x = _rand(1, (3, 4))
    y, _ = layer.apply(params, state, jnp.asarray(x))
    ref = x @ np.asarray(params["w"]) + np.asarray(params["b"])
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-6)
    # Default w_init is LeCun normal: std 1/sqrt(fan_in).
    big, state = nn.Dense(400).init(key, (1, 400))
    assert state == {}
    assert abs(float(jnp.std(big["w"])) - 1 / 20) < 0.05 / 20
    np.testing.assert_array_equal(big["b"], np.zeros(400, np.float32))
    custom, _ = nn.Dense(400, w_init=jinit.normal(0.01), b_init=jinit.constant(0.1)).init(
        key, (1, 400)
    )
    assert abs(float(jnp.std(custom["w"])) - 0.01) < 0.0005
    np.testing.assert_allclose(custom["b"], np.full(400, 0.1, np.float32))


def test_maxout_matches_numpy(key):
    layer = nn.Maxout(4, pieces=3)
    params, _ = _fake_init(layer, (2, 5))
    chex.assert_shape(params["w"], (5, 12))
    x = _rand(2, (2, 5))
    y, _ = layer.apply(params, {}, jnp.asarray(x))
    z = x @ np.asarray(params["w"]) + np.asarray(params["b"])
    ref = np.stack([z[:, j * 3 : (j + 1) * 3].max(axis=1) for j in range(4)], axis=1)
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- Conv


def _conv_cases():
    return [((5,), 1, "SAME"), ((4,), 3, "VALID"), ((3, 3), 1, "VALID"), ((3, 2), (2, 1), "SAME")]


@pytest.mark.parametrize("channels", [1, 3])  # one channel: im2col's 2-D matmul
@pytest.mark.parametrize(("kernel", "strides", "padding"), _conv_cases())
def test_conv_lowerings_match_flax(key, kernel, strides, padding, channels):
    spatial = (11,) if len(kernel) == 1 else (9, 8)
    shape = (2, *spatial, channels)
    x = jnp.asarray(_rand(3, shape))
    params, _ = _fake_init(nn.Conv(4, kernel, strides, padding), shape)
    ref_layer = fnn.Conv(4, kernel_size=kernel, strides=strides, padding=padding)
    with _flax():
        ref = ref_layer.apply({"params": {"kernel": params["w"], "bias": params["b"]}}, x)
    for lowering in ("im2col", "xla"):
        layer = nn.Conv(4, kernel, strides, padding, lowering=lowering)
        y = jax.jit(lambda p, x, layer=layer: layer.apply(p, {}, x)[0])(params, x)
        np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5, err_msg=lowering)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize(("kernel", "strides", "padding"), _conv_cases())
def test_conv_lowering_gradients_match_flax(kernel, strides, padding, channels):
    spatial = (11,) if len(kernel) == 1 else (9, 8)
    shape = (2, *spatial, channels)
    x = jnp.asarray(_rand(5, shape))
    params, _ = _fake_init(nn.Conv(4, kernel, strides, padding), shape)
    ref_layer = fnn.Conv(4, kernel_size=kernel, strides=strides, padding=padding)

    def ref_loss(p, x):
        with _flax():
            out = ref_layer.apply({"params": {"kernel": p["w"], "bias": p["b"]}}, x)
        return jnp.sum(jnp.sin(out))

    want = jax.grad(ref_loss, argnums=(0, 1))(params, x)
    for lowering in ("im2col", "xla"):
        layer = nn.Conv(4, kernel, strides, padding, lowering=lowering)
        loss = lambda p, x, layer=layer: jnp.sum(jnp.sin(layer.apply(p, {}, x)[0]))
        got = jax.jit(jax.grad(loss, argnums=(0, 1)))(params, x)
        chex.assert_trees_all_close(got, want, rtol=1e-5, atol=1e-5)


def test_conv_lowerings_agree_float64(key):
    with jax.enable_x64(True):
        for kernel, strides, padding in [((3,), 2, "SAME"), ((2, 3), (1, 2), "VALID")]:
            spatial = (10,) if len(kernel) == 1 else (7, 9)
            shape = (2, *spatial, 2)
            x = jnp.asarray(_rand(4, shape, np.float64))
            params, _ = _fake_init(nn.Conv(3, kernel, strides, padding), shape, jnp.float64)
            assert params["w"].dtype == jnp.float64
            ys = [
                jax.jit(nn.Conv(3, kernel, strides, padding, lowering=lw).apply)(params, {}, x)[0]
                for lw in ("im2col", "xla")
            ]
            assert ys[0].dtype == ys[1].dtype == jnp.float64
            np.testing.assert_allclose(ys[0], ys[1], rtol=1e-12, atol=1e-12)


def test_conv_default_lowering_by_backend():
    assert nn.default_lowering() == ("im2col" if jax.default_backend() == "cpu" else "xla")
    with pytest.raises(ValueError, match="lowering"):
        nn.Conv(3, 3, lowering="fft")


# ----------------------------------------------------------------------------- pooling


def _np_pool(x, window, strides, padding, op):
    d = len(window)
    spatial = x.shape[1:-1]
    if padding == "SAME":
        pads = []
        for n, k, s in zip(spatial, window, strides, strict=True):
            out = -(-n // s)
            total = max((out - 1) * s + k - n, 0)
            pads.append((total // 2, total - total // 2))
        fill = -np.inf if op == "max" else 0.0
        x = np.pad(x, [(0, 0), *pads, (0, 0)], constant_values=fill)
    out_sizes = [(n - k) // s + 1 for n, k, s in zip(x.shape[1:-1], window, strides, strict=True)]
    y = np.zeros((x.shape[0], *out_sizes, x.shape[-1]), x.dtype)
    for idx in itertools.product(*(range(o) for o in out_sizes)):
        sl = tuple(slice(i * s, i * s + k) for i, s, k in zip(idx, strides, window, strict=True))
        patch = x[(slice(None), *sl, slice(None))]
        axes = tuple(range(1, d + 1))
        val = patch.max(axis=axes) if op == "max" else patch.sum(axis=axes) / math.prod(window)
        y[(slice(None), *idx, slice(None))] = val
    return y


@pytest.mark.parametrize(
    ("window", "strides", "padding"),
    [(2, None, "VALID"), (3, 2, "SAME"), ((2, 2), None, "VALID"), ((3, 2), (2, 1), "SAME")],
)
@pytest.mark.parametrize("kind", ["max", "avg"])
def test_pools_match_numpy(window, strides, padding, kind):
    win = (window,) if isinstance(window, int) else window
    x = _rand(5, (2, 7, 3) if len(win) == 1 else (2, 7, 6, 3))
    st = (
        win if strides is None else ((strides,) * len(win) if isinstance(strides, int) else strides)
    )
    ref = _np_pool(x, win, st, padding, kind)
    cls = nn.MaxPool if kind == "max" else nn.AvgPool
    for lowering in ("im2col", "xla"):
        layer = cls(window, strides, padding, lowering=lowering)
        y, _ = jax.jit(lambda x, layer=layer: layer.apply({}, {}, x))(jnp.asarray(x))
        np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-6, err_msg=lowering)


def _np_max_pool_grad(x, window, strides, cot):
    """d sum(max_pool(x) * cot) / dx for "VALID" windows: each window's cotangent goes to its
    maximum (the inputs are drawn without ties)."""
    grad = np.zeros_like(x)
    for idx in itertools.product(*(range(o) for o in cot.shape[1:-1])):
        starts = [i * s for i, s in zip(idx, strides, strict=True)]
        sl = tuple(slice(a, a + k) for a, k in zip(starts, window, strict=True))
        patch = x[(slice(None), *sl, slice(None))]
        flat = patch.reshape(len(x), -1, x.shape[-1])
        arg = np.unravel_index(flat.argmax(axis=1), window)  # per (batch, channel)
        for n in range(len(x)):
            for c in range(x.shape[-1]):
                at = tuple(a + o[n, c] for a, o in zip(starts, arg, strict=True))
                grad[(n, *at, c)] += cot[(n, *idx, c)]
    return grad


@pytest.mark.parametrize(("window", "strides"), [((2,), (2,)), ((3,), (2,)), ((2, 2), (2, 2))])
def test_max_pool_gradients_match_numpy_in_both_lowerings(window, strides):
    x = _rand(7, (2, 9, 3) if len(window) == 1 else (2, 6, 4, 3))
    for lowering in ("auto", "im2col", "xla"):
        layer = nn.MaxPool(window, strides, lowering=lowering)
        y, vjp = jax.vjp(lambda x, layer=layer: layer.forward(x), jnp.asarray(x))
        cot = _rand(8, y.shape)
        (grad,) = jax.jit(vjp)(jnp.asarray(cot))
        ref = _np_max_pool_grad(x, window, strides, cot)
        np.testing.assert_allclose(grad, ref, rtol=1e-6, atol=1e-6, err_msg=lowering)


def test_pool_auto_lowerings():
    """MaxPool follows default_lowering (im2col on CPU: select_and_scatter is slow in a scan);
    AvgPool's sum keeps reduce_window everywhere."""
    x = jnp.ones((1, 4, 1))
    max_jaxpr = str(jax.make_jaxpr(nn.MaxPool(2).forward)(x))
    avg_jaxpr = str(jax.make_jaxpr(nn.AvgPool(2).forward)(x))
    assert ("reduce_window_max" in max_jaxpr) == (nn.default_lowering() == "xla")
    assert "reduce_window_sum" in avg_jaxpr


# ----------------------------------------------------------------------------- Dropout


def test_dropout_scaling_and_eval_identity(key):
    layer = nn.Dropout(0.3)
    x = jnp.asarray(np.abs(_rand(6, (200, 100))) + 0.1)
    y, _ = layer.apply({}, {}, x, key=key, train=True)
    kept = np.asarray(y) != 0
    np.testing.assert_allclose(np.asarray(y)[kept], np.asarray(x)[kept] / 0.7, rtol=1e-6)
    assert abs(kept.mean() - 0.7) < 0.01  # 20,000 draws: std of the mean ~ 0.003
    assert abs(float(y.mean()) / float(x.mean()) - 1) < 0.02  # inverted scaling keeps E[y] = x
    chex.assert_trees_all_equal(layer.apply({}, {}, x)[0], x)
    chex.assert_trees_all_equal(layer.apply({}, {}, x, key=key)[0], x)
    with pytest.raises(ValueError, match="key"):
        layer.apply({}, {}, x, train=True)
    with pytest.raises(ValueError, match="drop probability"):
        nn.Dropout(1.0)


# ----------------------------------------------------------------------------- GaussianNoise


@pytest.mark.parametrize("make_key", [jax.random.key, jax.random.PRNGKey])
def test_gaussian_noise_variance_and_eval_identity(make_key):
    sigma, x = 0.3, jnp.asarray(_rand(6, (200, 100)))
    layer = nn.GaussianNoise(sigma)
    y, _ = layer.apply({}, {}, x, key=make_key(1), train=True)
    noise = np.asarray(y, np.float64) - np.asarray(x, np.float64)
    # 20,000 draws: E[(y - x)^2] = sigma^2 with relative sd sqrt(2 / 20000) = 1%.
    assert abs(np.mean(noise**2) / sigma**2 - 1) < 0.04
    assert abs(np.mean(noise)) < 4 * sigma / math.sqrt(noise.size)
    chex.assert_trees_all_equal(layer.apply({}, {}, x)[0], x)
    chex.assert_trees_all_equal(layer.apply({}, {}, x, key=make_key(1))[0], x)
    chex.assert_trees_all_equal(nn.GaussianNoise(0.0).apply({}, {}, x, train=True)[0], x)
    with pytest.raises(ValueError, match="key"):
        layer.apply({}, {}, x, train=True)
    for bad in (-0.1, math.inf):
        with pytest.raises(ValueError, match="stddev must be a finite number >= 0"):
            nn.GaussianNoise(bad)
    # A traced per-member stddev (an ensemble's sweep): vmapped over two values.
    sigmas = jnp.asarray([0.1, 1.0])
    ys = jax.vmap(lambda s: nn.GaussianNoise(s).apply({}, {}, x, key=make_key(1), train=True)[0])(
        sigmas
    )
    for s, y_s in zip((0.1, 1.0), ys, strict=True):
        assert abs(np.mean((np.asarray(y_s) - np.asarray(x)) ** 2) / s**2 - 1) < 0.04


# ----------------------------------------------------------------------------- normalisation


@pytest.mark.parametrize("shape", [(8, 5), (4, 6, 5, 3)])
def test_batchnorm_matches_flax_train_and_eval(key, shape):
    layer = nn.BatchNorm(momentum=0.8, eps=1e-3)
    params, state = layer.init(key, shape)
    params = {"scale": jnp.linspace(0.5, 1.5, shape[-1]), "offset": jnp.linspace(-1, 1, shape[-1])}
    x = jnp.asarray(_rand(7, shape) * 3 + 2)
    ref = fnn.BatchNorm(momentum=0.8, epsilon=1e-3)
    variables = {
        "params": {"scale": params["scale"], "bias": params["offset"]},
        "batch_stats": {"mean": state["mean"], "var": state["var"]},
    }
    y, new_state = layer.apply(params, state, x, train=True)
    with _flax():
        y_ref, upd = ref.apply(variables, x, use_running_average=False, mutable=["batch_stats"])
    np.testing.assert_allclose(y, y_ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(new_state["mean"], upd["batch_stats"]["mean"], rtol=1e-5)
    np.testing.assert_allclose(new_state["var"], upd["batch_stats"]["var"], rtol=1e-4)
    # NumPy: the running mean moves 20% of the way to the per-channel batch mean.
    axes = tuple(range(len(shape) - 1))
    np.testing.assert_allclose(new_state["mean"], 0.2 * np.asarray(x).mean(axis=axes), rtol=1e-5)
    # Eval: running statistics, state returned unchanged.
    y_eval, same = layer.apply(params, new_state, x, train=False)
    chex.assert_trees_all_equal(same, new_state)
    variables["batch_stats"] = upd["batch_stats"]
    with _flax():
        y_eval_ref = ref.apply(variables, x, use_running_average=True)
    np.testing.assert_allclose(y_eval, y_eval_ref, rtol=1e-4, atol=1e-4)


def test_batchnorm_normalises_per_channel(key):
    x = jnp.asarray(_rand(8, (16, 4, 4, 3)) * 5 - 3)
    params, state = nn.BatchNorm().init(key, x.shape)  # scale 1, offset 0
    y, _ = nn.BatchNorm().apply(params, state, x, train=True)
    np.testing.assert_allclose(np.asarray(y).mean(axis=(0, 1, 2)), np.zeros(3), atol=1e-5)
    np.testing.assert_allclose(np.asarray(y).var(axis=(0, 1, 2)), np.ones(3), rtol=1e-3)


@pytest.mark.parametrize("shape", [(4, 6), (2, 3, 4, 5)])
def test_layernorm_matches_flax(key, shape):
    layer = nn.LayerNorm()
    params, _ = layer.init(key, shape)
    params = {"scale": jnp.linspace(0.5, 1.5, shape[-1]), "offset": jnp.linspace(-1, 1, shape[-1])}
    x = jnp.asarray(_rand(9, shape) * 2 + 1)
    y, _ = layer.apply(params, {}, x)
    with _flax():
        ref = fnn.LayerNorm(epsilon=1e-5).apply(
            {"params": {"scale": params["scale"], "bias": params["offset"]}}, x
        )
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-5)


def test_instancenorm_matches_numpy(key):
    shape = (3, 5, 4, 2)
    layer = nn.InstanceNorm()
    params = {"scale": jnp.asarray([0.5, 2.0]), "offset": jnp.asarray([1.0, -1.0])}
    x = _rand(10, shape) * 3 + 1
    y, _ = layer.apply(params, {}, jnp.asarray(x))
    mean = x.mean(axis=(1, 2), keepdims=True)
    var = x.var(axis=(1, 2), keepdims=True)
    ref = (x - mean) / np.sqrt(var + 1e-5) * np.array([0.5, 2.0]) + np.array([1.0, -1.0])
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-5)
    p0, s0 = layer.init(key, shape)
    np.testing.assert_array_equal(p0["scale"], np.ones(2, np.float32))
    assert s0 == {}


# ----------------------------------------------------------------------------- jit / vmap / grad


def _nets():
    """Networks that between them contain every layer type (and both lowerings)."""
    acts = [nn.Relu(), nn.LeakyRelu(0.1), nn.Sigmoid(), nn.Tanh(), nn.Elu(), nn.Selu()]
    acts += [nn.Gelu(), nn.Gelu(approximate=True), nn.Swish()]
    dense = nn.Serial(
        nn.Dense(6),
        nn.BatchNorm(),
        *[nn.Serial(a, nn.Dense(6)) for a in acts],
        nn.Dropout(0.3),
        nn.Maxout(4),
        nn.LayerNorm(),
        nn.Dense(3),
    )
    conv1d = nn.Serial(
        nn.Conv(4, 3),
        nn.BatchNorm(),
        nn.Relu(),
        nn.InstanceNorm(),
        nn.MaxPool(2),
        nn.Conv(4, 2, strides=2, padding="VALID"),
        nn.AvgPool(2, 1, "SAME"),
        nn.Flatten(),
        nn.Dense(2),
    )
    conv2d = nn.Serial(
        nn.Conv(3, (2, 2), lowering="xla"),
        nn.MaxPool((2, 2), lowering="xla"),
        nn.Conv(3, (3, 2), strides=(2, 1), lowering="im2col"),
        nn.AvgPool((2, 2), padding="SAME", lowering="xla"),
        nn.Flatten(),
        nn.Dense(2),
    )
    return [(dense, (5, 4)), (conv1d, (3, 12, 2)), (conv2d, (2, 6, 5, 2))]


@pytest.mark.parametrize(("net", "shape"), _nets(), ids=["dense", "conv1d", "conv2d"])
def test_grad_through_every_layer_matches_finite_differences(net, shape):
    """Directional derivative of sum(y * r) (train mode, dropout on) vs a central difference."""
    with jax.enable_x64(True):
        params, state = _fake_init(net, shape, jnp.float64)
        x = jnp.asarray(_rand(11, shape, np.float64))
        out = jax.eval_shape(lambda p, x: net.apply(p, state, x)[0], params, x)
        r = jnp.asarray(_rand(12, out.shape, np.float64))

        def f(p, x):
            y, _ = net.apply(p, state, x, key=jax.random.key(2), train=True)
            return jnp.sum(y * r)

        # One compiled function serves both the gradient and the finite differences.
        value_and_grad = jax.jit(jax.value_and_grad(f, argnums=(0, 1)))
        _, (gp, gx) = value_and_grad(params, x)
        assert gx.dtype == jnp.float64
        # Every weighted layer gets a gradient.
        for name, g in named_leaves(gp).items():
            assert float(jnp.abs(g).max()) > 0, name
        rng = np.random.default_rng(13)
        vp = jax.tree.map(lambda a: jnp.asarray(rng.normal(size=a.shape)), params)
        vx = jnp.asarray(rng.normal(size=x.shape))
        eps = 1e-6
        plus, _ = value_and_grad(jax.tree.map(lambda a, v: a + eps * v, params, vp), x + eps * vx)
        minus, _ = value_and_grad(jax.tree.map(lambda a, v: a - eps * v, params, vp), x - eps * vx)
        numeric = (plus - minus) / (2 * eps)
        grads, dirs = jax.tree.leaves((gp, gx)), jax.tree.leaves((vp, vx))
        analytic = sum(jnp.vdot(g, v) for g, v in zip(grads, dirs, strict=True))
        np.testing.assert_allclose(analytic, numeric, rtol=1e-6)


def test_vmap_ensemble_of_layers():
    """vmap init over keys and apply over stacked params == each member on its own."""
    net = nn.Serial(
        nn.Conv(4, 3),
        nn.BatchNorm(),
        nn.Relu(),
        nn.MaxPool(2),
        nn.Flatten(),
        nn.Dropout(0.5),
        nn.Dense(2),
    )
    shape = (3, 8, 2)
    keys = jax.random.split(jax.random.key(3), 3)
    params, state = jax.jit(jax.vmap(lambda k: net.init(k, shape)))(keys)
    chex.assert_shape(params["conv_0"]["w"], (3, 3, 2, 4))
    assert float(jnp.abs(params["dense_6"]["w"][0] - params["dense_6"]["w"][1]).max()) > 0
    x = jnp.asarray(_rand(14, shape))
    dkey = jax.random.key(4)
    apply = jax.jit(jax.vmap(lambda p, s: net.apply(p, s, x, key=dkey, train=True)))
    ys, new_states = apply(params, state)
    single = jax.jit(lambda p, s: net.apply(p, s, x, key=dkey, train=True))
    for i in range(3):
        member = jax.tree.map(lambda a, i=i: a[i], (params, state))
        y_i, st_i = single(*member)
        np.testing.assert_allclose(ys[i], y_i, rtol=1e-4, atol=1e-5)
        chex.assert_trees_all_close(jax.tree.map(lambda a, i=i: a[i], new_states), st_i, rtol=1e-5)
    assert float(jnp.abs(ys[0] - ys[1]).max()) > 1e-3  # members differ


def test_float64_network_stays_float64(key):
    net = nn.Serial(nn.Conv(4, 3), nn.BatchNorm(), nn.Relu(), nn.MaxPool(2), nn.Flatten())
    net = nn.Serial(*net.layers, nn.Maxout(3), nn.LayerNorm(), nn.Dense(3))
    with jax.enable_x64(True):
        shapes = jax.eval_shape(lambda k: net.init(k, (2, 8, 1), jnp.float64), key)
        assert {a.dtype for a in jax.tree.leaves(shapes)} == {jnp.dtype(jnp.float64)}
        params, state = _fake_init(net, (2, 8, 1), jnp.float64)
        apply = jax.jit(lambda p, s, x: net.apply(p, s, x, train=True))
        y, new_state = apply(params, state, jnp.ones((2, 8, 1), jnp.float64))
        assert y.dtype == jnp.float64
        assert {a.dtype for a in jax.tree.leaves(new_state)} == {jnp.dtype(jnp.float64)}


# ----------------------------------------------------------------------------- count / summary


def test_count_params(key):
    net = nn.Serial(nn.Conv(8, (3, 3)), nn.BatchNorm(), nn.Flatten(), nn.Maxout(5, 3), nn.Dense(2))
    params, _ = jax.eval_shape(lambda k: net.init(k, (1, 4, 4, 2)), key)
    expected = (3 * 3 * 2 * 8 + 8) + (2 * 8) + (128 * 15 + 15) + (5 * 2 + 2)
    assert nn.count_params(params) == expected


def test_summary_single_layer_and_list_hyperparameters():
    text = nn.summary(nn.Conv(4, [3, 3], strides=[1, 2]), (2, 8, 8, 3))
    assert "conv" in text and "(2, 8, 4, 4)" in text and f"{3 * 3 * 3 * 4 + 4:,}" in text
    assert "1-layer network (0 hidden + output)" in text
    hash(nn.Conv(4, [3, 3], strides=[1, 2]))
    hash(nn.MaxPool([2, 2]))


def test_summary_depth_and_no_allocation():
    net = nn.Serial(nn.Dense(100), nn.Relu(), nn.Dense(100), nn.Relu(), nn.Dense(10))
    text = nn.summary(net, (32, 784))
    assert "3-layer network (2 hidden + output)" in text
    assert f"{784 * 100 + 100 + 100 * 100 + 100 + 100 * 10 + 10:,}" in text
    assert "dense_4" in text and "(32, 10)" in text
    # 10^10 float32 parameters (40 GB): only possible without allocating.
    huge = nn.Serial(nn.Dense(100_000), nn.Relu(), nn.Dense(1))
    text = nn.summary(huge, (1, 100_000))
    assert "10,000,100,000" in text
    assert "2-layer network (1 hidden + output)" in text


# ----------------------------------------------------------------------------- errors


def test_dense_wrong_features_error_names_layer_and_shapes(key):
    layer = nn.Dense(10)
    params, _ = _fake_init(layer, (1, 64))
    x = jnp.ones((2, 63))
    for fn in (layer.apply, jax.jit(layer.apply)):
        with pytest.raises(ValueError, match=r"Dense\(features=10\).*64.*63"):
            fn(params, {}, x)


def test_conv_rank_error_names_layer_and_shapes(key):
    layer = nn.Conv(8, (3, 3))
    with pytest.raises(
        ValueError, match=r"Conv\(features=8, kernel_size=\(3, 3\)\).*rank 4.*\(2, 63\)"
    ):
        layer.init(key, (2, 63))
    params, _ = _fake_init(layer, (2, 5, 5, 3))
    with pytest.raises(ValueError, match=r"Conv.*rank 4.*rank 2"):
        jax.jit(layer.apply)(params, {}, jnp.ones((2, 63)))
    with pytest.raises(ValueError, match=r"Conv.*3 input channels.*got 4"):
        layer.apply(params, {}, jnp.ones((2, 5, 5, 4)))
    with pytest.raises(TypeError, match=r"Serial item 1 .*init/apply"):
        nn.Serial(nn.Dense(3), "relu")
    with pytest.raises(ValueError, match=r"Dense\(features=3\).*rank >= 2"):
        nn.Serial(nn.Relu(), nn.Dense(3)).init(key, (5,))


# ----------------------------------------------------------------------------- construction errors


@pytest.mark.parametrize(
    ("make", "exc", "match"),
    [
        (lambda: nn.Dense(0), ValueError, r"Dense: features must be a positive int; got 0"),
        (lambda: nn.Dense(-1), ValueError, r"Dense: features .*got -1"),
        (lambda: nn.Dense(2.5), TypeError, r"Dense: features .*got 2.5 \(float\)"),
        (lambda: nn.Dense(True), TypeError, r"Dense: features .*got True"),
        (lambda: nn.Dense(4, w_init="lecun"), TypeError, r"Dense: w_init .*'lecun'"),
        (lambda: nn.Maxout(0), ValueError, r"Maxout: features .*got 0"),
        (lambda: nn.Maxout(4, pieces=0), ValueError, r"Maxout: pieces .*got 0"),
        (lambda: nn.Conv(0, 3), ValueError, r"Conv: features .*got 0"),
        (lambda: nn.Conv(8, 0), ValueError, r"Conv: kernel_size must be positive; got 0"),
        (lambda: nn.Conv(8, (3, 0)), ValueError, r"Conv: kernel_size .*got \(3, 0\)"),
        (lambda: nn.Conv(8, 2.5), TypeError, r"Conv: kernel_size .*got 2.5"),
        (lambda: nn.Conv(8, 3, strides=0), ValueError, r"Conv: strides must be positive; got 0"),
        (lambda: nn.Conv(8, (3, 3), strides=(1,)), ValueError, r"Conv: strides needs 2 values"),
        (lambda: nn.Conv(8, 3, padding="FULL"), ValueError, r"Conv: padding .*'FULL'"),
        (lambda: nn.Conv(8, 3, padding=((1, 1), (1, 1))), ValueError, r"Conv: padding needs 1"),
        (lambda: nn.MaxPool(0), ValueError, r"MaxPool: window must be positive; got 0"),
        (lambda: nn.AvgPool((2, 0)), ValueError, r"AvgPool: window .*got \(2, 0\)"),
        (lambda: nn.MaxPool(2, strides=0), ValueError, r"MaxPool: strides .*got 0"),
        (lambda: nn.AvgPool((2, 2), (1, -1)), ValueError, r"AvgPool: strides .*\(1, -1\)"),
        (lambda: nn.Dropout("0.5"), TypeError, r"Dropout: rate must be a real number; got '0.5'"),
        (lambda: nn.BatchNorm(momentum=1.5), ValueError, r"BatchNorm: momentum .*got 1.5"),
        (lambda: nn.LayerNorm(eps=0.0), ValueError, r"LayerNorm: eps must be > 0; got 0.0"),
        (lambda: nn.LeakyRelu("a"), TypeError, r"LeakyRelu: alpha must be a real number; got 'a'"),
        (lambda: nn.Gelu(approximate="yes"), TypeError, r"Gelu: approximate must be a bool"),
    ],
)
def test_bad_hyperparameters_raise_at_construction(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


def test_smallest_valid_hyperparameters_construct():
    """Just inside each construction rule."""
    assert nn.Dense(1).features == 1
    assert nn.Dense(np.int64(3)) == nn.Dense(3)
    assert nn.Maxout(1, pieces=1).pieces == 1
    assert nn.Conv(1, 1, strides=1).window == (1,)
    assert nn.Conv(1, [1, 1], strides=[1, 1]).stride_tuple == (1, 1)
    assert nn.MaxPool(1).stride_tuple == (1,)
    assert nn.AvgPool((1, 1), strides=(1, 1)).window_tuple == (1, 1)
    assert nn.Dropout(0.0).rate == 0.0
    assert nn.BatchNorm(momentum=0.0).momentum == 0.0
    assert nn.BatchNorm(momentum=1.0).momentum == 1.0
    assert nn.LayerNorm(eps=1e-12).eps == 1e-12


# ------------------------------------------------------------------------ windows that do not fit


def test_valid_conv_kernel_longer_than_input_raises(key):
    layer = nn.Conv(2, 7, padding="VALID")
    match = r"Conv\(features=2, kernel_size=7, padding='VALID'\): window \(7,\) .*\(2, 5, 1\)"
    with pytest.raises(ValueError, match=match):
        layer.init(key, (2, 5, 1))
    with pytest.raises(ValueError, match=match):
        nn.Serial(nn.Dense(1), layer).init(key, (2, 5, 1))
    params, _ = _fake_init(layer, (2, 7, 1))
    for fn in (layer.apply, jax.jit(layer.apply)):
        with pytest.raises(ValueError, match=match):
            fn(params, {}, jnp.ones((2, 5, 1)))
    # Just inside: kernel == input length gives one output position, the full dot product.
    x = _rand(20, (2, 7, 1))
    y, _ = layer.apply(params, {}, jnp.asarray(x))
    ref = np.einsum("nkc,kco->no", x, np.asarray(params["w"])) + np.asarray(params["b"])
    np.testing.assert_allclose(y, ref[:, None, :], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("lowering", ["xla", "im2col"])
def test_valid_pool_window_larger_than_input_raises(lowering):
    layer = nn.MaxPool(20, lowering=lowering)
    x = jnp.asarray(_rand(21, (2, 10, 3)))
    match = r"MaxPool\(window=20.*window \(20,\) does not fit input shape \(2, 10, 3\)"
    for fn in (layer.apply, jax.jit(layer.apply)):
        with pytest.raises(ValueError, match=match):
            fn({}, {}, x)
    with pytest.raises(ValueError, match=r"AvgPool.*window \(2, 3\).*\(1, 4, 2, 1\)"):
        nn.AvgPool((2, 3), lowering=lowering).apply({}, {}, jnp.ones((1, 4, 2, 1)))
    # Just inside: window == length pools everything into one position.
    y, _ = nn.MaxPool(10, lowering=lowering).apply({}, {}, x)
    np.testing.assert_allclose(y, np.asarray(x).max(axis=1, keepdims=True))
    y, _ = nn.AvgPool(10, lowering=lowering).apply({}, {}, x)
    np.testing.assert_allclose(y, np.asarray(x).mean(axis=1, keepdims=True), rtol=1e-5, atol=1e-6)


def test_explicit_padding_counts_towards_the_window():
    layer = nn.Conv(1, 3, padding=((0, 0),))
    params = {"w": jnp.ones((3, 1, 1)), "b": jnp.zeros((1,))}
    with pytest.raises(ValueError, match=r"Conv.*window \(3,\).*\(1, 2, 1\)"):
        layer.apply(params, {}, jnp.ones((1, 2, 1)))
    y, _ = nn.Conv(1, 3, padding=((1, 0),)).apply(params, {}, jnp.asarray([[[2.0], [3.0]]]))
    np.testing.assert_allclose(y, [[[5.0]]])  # 0 + 2 + 3: one position, padded
    assert nn.output_shape(nn.MaxPool(20, padding="SAME"), (2, 10, 3)) == (2, 1, 3)


def test_conv_and_pools_share_one_input_check():
    assert nn.Conv.check_input is nn.MaxPool.check_input is nn.AvgPool.check_input


# --------------------------------------------------------------------------- BatchNorm batch of one


@pytest.mark.parametrize("shape", [(1, 5), (1, 1, 1, 3)])
def test_batchnorm_train_on_one_value_per_feature_raises(key, shape):
    layer = nn.BatchNorm()
    params, state = layer.init(key, shape)
    x = jnp.asarray(_rand(22, shape))
    for fn in (layer.apply, jax.jit(layer.apply, static_argnames="train")):
        with pytest.raises(
            ValueError, match=r"BatchNorm\(\).*one.*example.*LayerNorm.*train=False"
        ):
            fn(params, state, x, train=True)
    # train=False with one example stays fine: it uses the running statistics (0, 1).
    y, same = layer.apply(params, state, x)
    np.testing.assert_allclose(y, np.asarray(x) / np.sqrt(1 + 1e-5), rtol=1e-6)
    assert same is state


@pytest.mark.parametrize("shape", [(2, 5), (1, 2, 1, 3)])
def test_batchnorm_train_on_two_values_per_feature_works(key, shape):
    x = _rand(23, shape)
    params, state = nn.BatchNorm().init(key, shape)
    y, _ = nn.BatchNorm().apply(params, state, jnp.asarray(x), train=True)
    ref, _, _ = _np_batchnorm(x.astype(np.float64), 1.0, 0.0)
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------- output_shape


@pytest.mark.parametrize(
    ("layer", "shape", "expected"),
    [
        (nn.Dense(4), (3, 5), (3, 4)),
        (nn.Dense(4), (3, 6, 5), (3, 6, 4)),
        (nn.Maxout(4, pieces=3), (3, 5), (3, 4)),
        (nn.Conv(4, 3, strides=2), (2, 11, 3), (2, -(-11 // 2), 4)),  # SAME: ceil(n / s)
        (nn.Conv(4, 4, padding="VALID"), (2, 11, 3), (2, 11 - 4 + 1, 4)),
        (nn.Conv(4, (3, 2), (2, 1), "VALID"), (2, 9, 8, 3), (2, (9 - 3) // 2 + 1, 8 - 2 + 1, 4)),
        (nn.MaxPool(2), (2, 7, 3), (2, 7 // 2, 3)),
        (nn.AvgPool(3, 2, "SAME"), (2, 7, 3), (2, -(-7 // 2), 3)),
        (nn.Flatten(), (2, 3, 4), (2, 12)),
        (nn.BatchNorm(), (2, 3, 4), (2, 3, 4)),
        (nn.Serial(nn.Conv(4, 3), nn.MaxPool(2), nn.Flatten(), nn.Dense(10)), (8, 12, 1), (8, 10)),
    ],
)
def test_output_shape_matches_closed_form(layer, shape, expected):
    assert nn.output_shape(layer, shape) == expected
    x = np.zeros(shape, np.float32)  # and the real forward pass agrees
    params, state = _fake_init(layer, shape)
    assert layer.apply(params, state, jnp.asarray(x))[0].shape == expected


def test_output_shape_allocates_nothing_and_keeps_dtype():
    # 10^10 float32 parameters (40 GB): only possible without allocating.
    huge = nn.Serial(nn.Dense(100_000), nn.Relu(), nn.Dense(1))
    assert nn.output_shape(huge, (7, 100_000)) == (7, 1)
    assert nn.output_shape(nn.Dense(3), (2, 4), jnp.bfloat16) == (2, 3)
    with pytest.raises(ValueError, match=r"Dense\(features=3\).*rank >= 2"):
        nn.output_shape(nn.Dense(3), (4,))


# ----------------------------------------------------------------------------- activation family


ACTIVATIONS = [
    (nn.Relu(), A.relu, {}),
    (nn.LeakyRelu(0.2), A.leaky_relu, {"alpha": 0.2}),
    (nn.Sigmoid(), A.sigmoid, {}),
    (nn.Tanh(), A.tanh, {}),
    (nn.Elu(0.5), A.elu, {"alpha": 0.5}),
    (nn.Selu(), A.selu, {}),
    (nn.Gelu(approximate=True), A.gelu, {"approximate": True}),
    (nn.Gelu(), A.gelu, {"approximate": False}),
    (nn.Swish(), A.swish, {}),
]


@pytest.mark.parametrize(("layer", "fn", "kwargs"), ACTIVATIONS, ids=lambda v: repr(v)[:20])
def test_activation_layers_apply_their_function(layer, fn, kwargs):
    x = jnp.asarray(_rand(24, (3, 7)) * 3)
    y, state = layer.apply({}, {}, x)
    chex.assert_trees_all_close(y, fn(x, **kwargs))
    assert state == {} and layer.init(jax.random.key(0), x.shape) == ({}, {})
    assert y.dtype == x.dtype
    y16, _ = layer.apply({}, {}, x.astype(jnp.bfloat16))
    assert y16.dtype == jnp.bfloat16


def test_activation_layers_are_frozen_hashable_value_classes():
    assert repr(nn.Relu()) == "Relu()"
    assert repr(nn.LeakyRelu(0.2)) == "LeakyRelu(alpha=0.2)"
    assert repr(nn.Gelu(approximate=True)) == "Gelu(approximate=True)"
    assert nn.Elu() == nn.Elu(1.0) == nn.Elu(alpha=1) and hash(nn.Elu()) == hash(nn.Elu(1.0))
    assert nn.LeakyRelu(0.1) != nn.LeakyRelu(0.2)
    assert nn.Relu() != nn.Tanh() and nn.Swish() == nn.Swish()
    assert len({nn.Relu(), nn.Relu(), nn.Tanh(), nn.LeakyRelu(0.1), nn.LeakyRelu(0.1)}) == 3
    for layer, _, _ in ACTIVATIONS:
        assert isinstance(layer, nn.Layer) and isinstance(layer, type(layer))
        assert dataclasses.is_dataclass(layer)
    assert isinstance(nn.Relu(), nn.Relu) and not isinstance(nn.Relu(), nn.Tanh)
    with pytest.raises(dataclasses.FrozenInstanceError):
        nn.LeakyRelu(0.1).alpha = 0.3
    with pytest.raises(TypeError):
        nn.Relu(0.1)
    net = nn.Serial(nn.Dense(2), nn.Relu(), nn.LeakyRelu(), nn.Gelu(), nn.Swish())
    assert net.names == ("dense_0", "relu_1", "leakyrelu_2", "gelu_3", "swish_4")


# ----------------------------------------------------------------------------- low precision


def _bn_scan(model, params, state, xs, train=True):
    """Steps ``model`` over ``xs`` in a ``lax.scan``, the state as carry."""

    def body(s, x):
        y, s = model.apply(params, s, x, train=train)
        return s, y

    return jax.lax.scan(body, state, xs)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_low_precision_batchnorm_in_scan_keeps_state_dtype(key, dtype):
    model = nn.Serial(nn.Dense(4), nn.BatchNorm(), nn.Relu(), nn.Dense(2))
    params, state = model.init(key, (8, 3), dtype)
    assert {a.dtype for a in jax.tree.leaves((params, state))} == {jnp.dtype(dtype)}
    xs = jnp.asarray(_rand(25, (3, 8, 3)), dtype)
    final, ys = jax.jit(_bn_scan, static_argnums=0)(model, params, state, xs)
    assert ys.dtype == dtype
    assert {a.dtype for a in jax.tree.leaves(final)} == {jnp.dtype(dtype)}
    # Reference: three running-mean updates from NumPy batch means of the dense outputs.
    w, b = (np.asarray(params["dense_0"][k], np.float64) for k in ("w", "b"))
    mean = np.zeros(4)
    for x in np.asarray(xs, np.float64):
        mean = 0.9 * mean + 0.1 * (x @ w + b).mean(axis=0)
    np.testing.assert_allclose(
        np.asarray(final["batchnorm_1"]["mean"], np.float64), mean, atol=0.03
    )


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_low_precision_batchnorm_state_survives_float32_inputs(key, dtype):
    """The reported crash: bf16 state, float32 inputs (standard promotion), scan carry."""
    layer = nn.BatchNorm()
    params, state = layer.init(key, (8, 3), dtype)
    xs = jnp.asarray(_rand(26, (3, 8, 3)) + 2.0)
    with jax.numpy_dtype_promotion("standard"):
        final, _ = _bn_scan(layer, params, state, xs)
    assert {a.dtype for a in jax.tree.leaves(final)} == {jnp.dtype(dtype)}
    ref = sum(0.1 * 0.9 ** (2 - i) * np.asarray(xs[i]).mean(axis=0) for i in range(3))
    np.testing.assert_allclose(np.asarray(final["mean"], np.float64), ref, rtol=0.02)


def test_float16_batch_statistics_accumulate_in_float32(key):
    # Squares of deviations ~400 overflow float16 (max 65504); float32 accumulation does not.
    x = np.linspace(-400.0, 400.0, 16).reshape(16, 1).repeat(2, axis=1)
    params, state = nn.BatchNorm().init(key, x.shape, jnp.float16)
    y, new_state = nn.BatchNorm().apply(params, state, jnp.asarray(x, jnp.float16), train=True)
    assert y.dtype == jnp.float16 and new_state["var"].dtype == jnp.float16
    ref, _, var = _np_batchnorm(x, 1.0, 0.0)
    np.testing.assert_allclose(np.asarray(y, np.float64), ref, atol=2e-3)
    np.testing.assert_allclose(np.asarray(new_state["var"], np.float64), 0.9 + 0.1 * var, rtol=1e-3)


def test_float64_batchnorm_in_scan(key):
    with jax.enable_x64(True):
        layer = nn.BatchNorm(momentum=0.5)
        params, state = layer.init(key, (8, 3), jnp.float64)
        xs = jnp.asarray(_rand(27, (3, 8, 3), np.float64) + 1.0)
        final, ys = _bn_scan(layer, params, state, xs)
        assert ys.dtype == jnp.float64
        assert {a.dtype for a in jax.tree.leaves(final)} == {jnp.dtype(jnp.float64)}
        ref = sum(0.5 * 0.5 ** (2 - i) * np.asarray(xs[i]).mean(axis=0) for i in range(3))
        np.testing.assert_allclose(final["mean"], ref, rtol=1e-12)
        np.testing.assert_allclose(ys[2], _np_batchnorm(np.asarray(xs[2]), 1.0, 0.0)[0], rtol=1e-10)


# ----------------------------------------------------------------------------- keys


def test_raw_and_typed_keys_give_identical_results():
    raw, typed = jax.random.PRNGKey(0), jax.random.key(0)
    x = jnp.asarray(np.abs(_rand(28, (4, 50))) + 0.1)
    drop = nn.Dropout(0.5)
    y_raw, _ = drop.apply({}, {}, x, key=raw, train=True)
    y_typed, _ = drop.apply({}, {}, x, key=typed, train=True)
    chex.assert_trees_all_equal(y_raw, y_typed)
    assert 0 < int((np.asarray(y_raw) == 0).sum()) < x.size
    net = nn.Serial(nn.Dense(5), nn.Relu(), nn.Dropout(0.3), nn.Dense(3))
    p_raw, s_raw = net.init(raw, (4, 50))
    p_typed, s_typed = net.init(typed, (4, 50))
    chex.assert_trees_all_equal(p_raw, p_typed)
    out_raw = net.apply(p_raw, s_raw, x, key=raw, train=True)
    out_typed = net.apply(p_typed, s_typed, x, key=typed, train=True)
    chex.assert_trees_all_equal(out_raw, out_typed)
    stacked = jax.vmap(lambda k: net.init(k, (4, 50)))(jax.random.split(raw, 2))
    chex.assert_shape(stacked[0]["dense_0"]["w"], (2, 50, 5))
    with pytest.raises(TypeError, match="key"):
        nn.Dense(3).init(0, (2, 4))
