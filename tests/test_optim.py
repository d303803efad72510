"""jnn.optim against Optax: step-by-step equality, Optax's own alias conformance checks,
Optax pipelines (chain, MultiSteps, multi_transform, masked, nnx.Optimizer) and the
Optax defects jnn fixes.

Optax's transformations compute ``decay ** count`` on a traced int32 count, which the
suite's strict dtype promotion rejects, so every Optax reference runs (is traced)
inside ``jax.numpy_dtype_promotion("standard")``. jnn runs under strict promotion.
"""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jnn.optim as jo
import jnn.schedules as js

standard = functools.partial(jax.numpy_dtype_promotion, "standard")

SHAPES = {"dense_0": {"w": (3, 4), "b": ()}, "conv_1": {"w": (2, 2, 1, 3)}}


def _random_tree(seed, dtype, shapes=SHAPES, lead=()):
    """A nested dict of standard-normal leaves, made with NumPy (no PRNG kernels to compile)."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(
        lambda s: jnp.asarray(rng.standard_normal((*lead, *s)), dtype),
        shapes,
        is_leaf=lambda s: isinstance(s, tuple),
    )


def _noise(dtype, steps=100, seed=0):
    """A tree of ``(steps, *shape)`` gradient noise."""
    return _random_tree(seed + 100, dtype, lead=(steps,))


def _scan(opt, params, noise):
    """Updates with gradients ``0.5 * params + noise``; every 7th gradient is all zero."""

    def body(carry, xs):
        (p, s), (i, n) = carry, xs
        on = (i % 7 != 3).astype(n["dense_0"]["b"].dtype)
        g = jax.tree.map(lambda x, e: on * (0.5 * x + e), p, n)
        u, s = opt.update(g, s, p)
        return (optax.apply_updates(p, u), s), None

    steps = jax.tree.leaves(noise)[0].shape[0]
    return jax.lax.scan(body, (params, opt.init(params)), (jnp.arange(steps), noise))[0]


def _both(name, kwargs, params, noise):
    """jnn and Optax, constant and scheduled learning rate: four 100-step runs, one compile."""

    @jax.jit
    def run(params, noise):
        ours = [_scan(_make(jo, name, kwargs, s), params, noise) for s in (False, True)]
        with standard():
            ref = [_scan(_make(optax, name, kwargs, s), params, noise) for s in (False, True)]
        return ours, ref

    return run(params, noise)


CONFIGS = [
    ("sgd", {}),
    ("sgd", {"momentum": 0.9}),
    ("sgd", {"momentum": 0.9, "nesterov": True}),
    ("adagrad", {}),
    ("adagrad", {"initial_accumulator_value": 0.0, "eps": 1e-3}),
    ("rmsprop", {}),
    ("rmsprop", {"eps_in_sqrt": False, "bias_correction": True, "initial_scale": 0.5}),
    ("rmsprop", {"momentum": 0.9, "decay": 0.8}),
    ("rmsprop", {"momentum": 0.9, "nesterov": True, "bias_correction": True}),
    ("rmsprop", {"centered": True, "initial_scale": 1.0}),
    ("rmsprop", {"centered": True, "eps_in_sqrt": False, "bias_correction": True, "eps": 1e-2}),
    ("rmsprop", {"centered": True, "momentum": 0.5, "nesterov": True, "initial_scale": 1.0}),
    ("adam", {}),
    ("adam", {"b1": 0.5, "b2": 0.9, "eps": 1e-3, "eps_root": 1e-8}),
    ("adam", {"nesterov": True}),
    ("adamw", {}),
    (
        "adamw",
        {"weight_decay": 0.1, "mask": {"dense_0": {"w": True, "b": False}, "conv_1": {"w": True}}},
    ),
    ("adamw", {"weight_decay": "schedule", "nesterov": True}),
    ("nadam", {}),
    ("nadamw", {"weight_decay": 0.05}),
]


def _make(lib, name, kwargs, scheduled):
    """``lib.name(lr, **kwargs)``. Both libraries get the same (jnn, strict-promotion-safe)
    schedules, so the comparison is of the optimizers; schedules are tested on their own."""
    kwargs = dict(kwargs)
    if kwargs.get("weight_decay") == "schedule":
        kwargs["weight_decay"] = js.exponential_decay(0.1, 10, 0.5)
    lr = js.linear_schedule(0.1, 0.01, 60) if scheduled else 0.02
    return getattr(lib, name)(lr, **kwargs)


CONFIG_IDS = [f"{n}-{i}" for i, (n, _) in enumerate(CONFIGS)]


@pytest.mark.parametrize(("name", "kwargs"), CONFIGS, ids=CONFIG_IDS)
def test_100_steps_equal_optax_float32(name, kwargs):
    params = _random_tree(1, jnp.float32)
    ours, ref = _both(name, kwargs, params, _noise(jnp.float32))
    for o, r in zip(ours, ref, strict=True):
        assert jax.tree.structure(o[0]) == jax.tree.structure(r[0])
        chex.assert_trees_all_close(jax.tree.leaves(o), jax.tree.leaves(r), rtol=2e-6, atol=1e-7)
        chex.assert_trees_all_equal_dtypes(jax.tree.leaves(o), jax.tree.leaves(r))


@pytest.mark.parametrize(("name", "kwargs"), CONFIGS, ids=CONFIG_IDS)
def test_100_steps_equal_optax_float64(name, kwargs):
    with jax.enable_x64(True):
        params = _random_tree(3, jnp.float64)
        ours, ref = _both(name, kwargs, params, _noise(jnp.float64, seed=1))
        for o, r in zip(ours, ref, strict=True):
            assert jax.tree.leaves(o[0])[0].dtype == jnp.float64
            chex.assert_trees_all_close(
                jax.tree.leaves(o), jax.tree.leaves(r), rtol=1e-12, atol=1e-14
            )
            chex.assert_trees_all_equal_dtypes(jax.tree.leaves(o), jax.tree.leaves(r))


def _names(path):
    """A key path without NamedTuple class names: ``(0, "mu")``."""
    return tuple(getattr(k, "name", getattr(k, "idx", getattr(k, "key", None))) for k in path)


def test_state_field_names_match_optax():
    params = _random_tree(0, jnp.float32)
    for name, kwargs in CONFIGS:
        ours = _make(jo, name, kwargs, False).init(params)
        with standard():
            ref = _make(optax, name, kwargs, False).init(params)
        for field in ("count", "mu", "nu", "trace", "sum_of_squares"):
            got, want = (
                optax.tree.get_all_with_path(ours, field),
                optax.tree.get_all_with_path(ref, field),
            )
            assert len(got) == len(want), (name, kwargs, field)
            for (path, leaf), (ref_path, ref_leaf) in zip(got, want, strict=True):
                assert _names(path) == _names(ref_path), (name, field)
                assert jax.tree.map(jnp.shape, leaf) == jax.tree.map(jnp.shape, ref_leaf)


# ------------------------------------------------------------------------------ conformance

UNDER_TEST = [
    ("sgd", {"learning_rate": 1e-3, "momentum": 0.9}),
    ("adagrad", {"learning_rate": 1.0}),
    ("adam", {"learning_rate": 1e-1}),
    ("adamw", {"learning_rate": 1e-1}),
    ("nadam", {"learning_rate": 1e-2}),
    ("nadamw", {"learning_rate": 1e-2}),
    ("rmsprop", {"learning_rate": 5e-3}),
    ("rmsprop", {"learning_rate": 5e-3, "momentum": 0.9}),
]
IDS = [f"{n}-{i}" for i, (n, _) in enumerate(UNDER_TEST)]


def _parabola(dtype):
    final = jnp.array([1.0, -1.0, 1.0], dtype=dtype)
    if jnp.issubdtype(dtype, jnp.complexfloating):
        final = final * jnp.asarray(1 + 1j, dtype)
    return (
        jnp.array([-1.0, 10.0, 1.0], dtype=dtype),
        final,
        lambda p: jnp.sum(((p - final).conj() * (p - final)).real),
    )


def _rosenbrock(dtype):
    a = jnp.asarray(1 + 1j if jnp.issubdtype(dtype, jnp.complexfloating) else 1.0, dtype)
    sq = lambda x: (x.conj() * x).real
    objective = lambda p: sq(a - p[0]) + 100.0 * sq(p[1] - p[0] ** 2)
    return jnp.zeros(2, dtype), jnp.stack([a, a * a]), objective


# Each check below runs every optimizer in UNDER_TEST inside one jitted function:
# compiling once instead of eight times keeps the suite fast on a shared CPU.


def _jnn_opts():
    return [getattr(jo, name)(**kwargs) for name, kwargs in UNDER_TEST]


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.complex64])
def test_parabola_and_rosenbrock_converge(dtype):
    def solve(opt, target):
        init, final, objective = target(dtype)

        def body(_, carry):
            p, s = carry
            g = jax.tree.map(jnp.conj, jax.grad(objective)(p))  # complex: descend along conj
            u, s = opt.update(g, s, p)
            return optax.apply_updates(p, u), s

        return jax.lax.fori_loop(0, 10_000, body, (init, opt.init(init)))[0], final

    results = jax.jit(
        lambda: [solve(o, t) for o in _jnn_opts() for t in (_parabola, _rosenbrock)]
    )()
    for i, (p, final) in enumerate(results):
        assert jnp.allclose(p, final, rtol=3e-2, atol=3e-2), (UNDER_TEST[i // 2], p, final)


def test_extra_args_and_no_recompilation():
    opts = _jnn_opts()
    init, _, objective = _rosenbrock(jnp.float32)

    @jax.jit
    def step(ps, ss):
        out = []
        for opt, p, s in zip(opts, ps, ss, strict=True):
            u, s = opt.update(jax.grad(objective)(p), s, p, unexpected_extra_arg=1, value=2.0)
            out.append((optax.apply_updates(p, u), s))
        return tuple(zip(*out, strict=True))

    ps, ss = step([init] * len(opts), [o.init(init) for o in opts])
    ps, ss = step(list(ps), list(ss))
    assert step._cache_size() == 1
    assert all(jnp.all(jnp.isfinite(p)) for p in ps)


@pytest.mark.parametrize(
    "wrap", [jo.inject_hyperparams, optax.inject_hyperparams], ids=["jnn_inject", "optax_inject"]
)
def test_inject_hyperparams_equals_plain_optax(wrap):
    params = [-jnp.ones((2, 3)), jnp.ones((2, 5, 2))]
    grads = [jnp.ones((2, 3)), -jnp.ones((2, 5, 2))]

    def run(opts):
        return jax.jit(lambda: [o.update(grads, o.init(params), params) for o in opts])()

    with standard():
        refs = run([getattr(optax, name)(**kwargs) for name, kwargs in UNDER_TEST])
    ours = run([wrap(getattr(jo, name))(**kwargs) for name, kwargs in UNDER_TEST])
    for (u, s), (ref_u, ref_s) in zip(ours, refs, strict=True):
        assert isinstance(s, optax.InjectStatefulHyperparamsState)
        chex.assert_trees_all_close(u, ref_u, rtol=1e-5)
        # Optax's own check uses rtol=1e-4 for states: float32 ``1 - b2`` vs Python's.
        chex.assert_trees_all_close(
            jax.tree.leaves(s.inner_state), jax.tree.leaves(ref_s), rtol=1e-4
        )


def test_inject_hyperparams_schedule_and_manual_override():
    params = {"w": jnp.ones(3)}
    grads = {"w": jnp.array([0.5, -1.0, 2.0])}
    lr = optax.linear_schedule(0.1, 0.0, 10)
    opt = jo.inject_hyperparams(jo.adam)(learning_rate=lr, b1=0.8)
    s = opt.init(params)
    s.hyperparams["b2"] = jnp.asarray(0.95)  # a manual change takes effect
    with standard():
        ref = optax.adam(lr, b1=0.8, b2=0.95)
        rs = ref.init(params)
        for _ in range(3):
            ru, rs = ref.update(grads, rs, params)
    for _ in range(3):
        u, s = jax.jit(opt.update)(grads, s, params)
    chex.assert_trees_all_close(u, ru, rtol=1e-6)
    assert s.hyperparams["b2"].dtype == jnp.float32
    np.testing.assert_allclose(s.hyperparams["learning_rate"], 0.08, rtol=1e-6)


def test_inject_hyperparams_bad_static_args():
    with pytest.raises(ValueError, match="static_args"):
        jo.inject_hyperparams(jo.adam, static_args="nope")


@pytest.mark.parametrize("params_dtype", ["bfloat16", "float32", "complex64", None])
@pytest.mark.parametrize("state_dtype", ["bfloat16", "float32", "complex64", None])
def test_explicit_state_dtype(params_dtype, state_dtype):
    params = jnp.array([0.0, 0.0], dtype=params_dtype)
    cases = [
        (
            "trace",
            jo.sgd(0.1, momentum=0.9, accumulator_dtype=state_dtype),
            optax.sgd(0.1, momentum=0.9, accumulator_dtype=state_dtype),
        ),
        ("mu", jo.adam(0.1, mu_dtype=state_dtype), optax.adam(0.1, mu_dtype=state_dtype)),
        ("mu", jo.adamw(0.1, mu_dtype=state_dtype), optax.adamw(0.1, mu_dtype=state_dtype)),
    ]
    for field, ours, ref in cases:
        got = optax.tree.get(ours.init(params), field)
        assert got.dtype == optax.tree.get(ref.init(params), field).dtype
        expected = params.dtype if state_dtype is None else jnp.dtype(state_dtype)
        assert got.dtype == expected


def test_explicit_state_dtype_is_kept_by_update():
    params = jnp.linspace(-1.0, 1.0, 5)
    for opt in (
        jo.sgd(0.1, momentum=0.9, accumulator_dtype=jnp.bfloat16),
        jo.adam(0.1, mu_dtype=jnp.bfloat16),
    ):
        s = opt.init(params)
        u, s2 = jax.jit(opt.update)(params, s, params)
        assert u.dtype == jnp.float32
        chex.assert_trees_all_equal_shapes_and_dtypes(s, s2)


STABILITY_DTYPES = [
    jnp.float16,
    jnp.bfloat16,
    jnp.float32,
    jnp.float64,
    jnp.complex64,
    jnp.complex128,
]


@pytest.mark.parametrize("dtype", STABILITY_DTYPES, ids=lambda d: jnp.dtype(d).name)
def test_state_shape_dtype_stable_through_cond_and_updates_keep_dtype(dtype):
    with jax.enable_x64(dtype in (jnp.float64, jnp.complex128)):
        opts = _jnn_opts()
        init, _, objective = _parabola(dtype)

        @jax.jit
        def step(ps, ss, flag):  # a traced flag: XLA cannot fold the cond away
            out = []
            for opt, p, s in zip(opts, ps, ss, strict=True):
                g = jax.tree.map(jnp.conj, jax.grad(objective)(p))
                u, s = jax.lax.cond(
                    flag, functools.partial(opt.update, g, s, p), lambda p=p, s=s: (p, s)
                )
                out.append((optax.apply_updates(p, u), s, opt.update(g, s, p)[0]))
            return tuple(zip(*out, strict=True))

        ps, ss = [init] * len(opts), [o.init(init) for o in opts]
        for flag in (True, False):
            ps, new_ss, us = step(list(ps), ss, jnp.asarray(flag))
            for (name, _), p, u, s, new_s in zip(UNDER_TEST, ps, us, ss, new_ss, strict=True):
                assert p.dtype == dtype and u.dtype == dtype, name
                chex.assert_trees_all_equal_shapes_and_dtypes(s, new_s)
            ss = list(new_ss)


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_gradient_accumulation_with_multisteps(dtype):
    opts = [optax.MultiSteps(o, every_k_schedule=4) for o in _jnn_opts()]
    params = jnp.array([1.0, 2.0], dtype=dtype)
    grads = jax.grad(lambda x: jnp.sum(x**2))(params)
    with standard():  # MultiSteps' own bookkeeping mixes int32 and float32
        updates = jax.jit(lambda: [o.update(grads, o.init(params), params)[0] for o in opts])()
    for u in updates:
        chex.assert_trees_all_equal(u, jnp.zeros_like(grads))


# ------------------------------------------------------------------------ init edge cases


@pytest.mark.parametrize(("name", "kwargs"), UNDER_TEST, ids=IDS)
def test_init_on_masked_node_leafless_and_shape_dtype_struct(name, kwargs):
    opt = getattr(jo, name)(**kwargs)
    with standard():
        ref = getattr(optax, name)(**kwargs)
    # MaskedNode subtrees (what optax.masked feeds its inner transformation)
    tree = {"a": jnp.ones(3), "b": optax.MaskedNode()}
    s = opt.init(tree)
    u, s2 = opt.update({"a": jnp.ones(3), "b": optax.MaskedNode()}, s, tree)
    assert isinstance(u["b"], optax.MaskedNode)
    chex.assert_trees_all_equal_shapes_and_dtypes(s, s2)
    # leafless trees
    assert jax.tree.leaves(opt.init({})) == jax.tree.leaves(ref.init({}))
    u, _ = opt.update({}, opt.init({}), {})
    assert u == {}
    # abstract params
    abstract = {"w": jax.ShapeDtypeStruct((2, 3), jnp.bfloat16)}
    got = opt.init(abstract)
    want = ref.init({"w": jnp.zeros((2, 3), jnp.bfloat16)})
    chex.assert_trees_all_equal_shapes_and_dtypes(jax.tree.leaves(got), jax.tree.leaves(want))
    chex.assert_trees_all_equal_shapes_and_dtypes(
        jax.eval_shape(opt.init, abstract), jax.eval_shape(ref.init, abstract)
    )


def test_count_is_int32_and_saturates():
    opt = jo.adam(1e-3)
    s = opt.init(jnp.ones(2))
    assert s[0].count.dtype == jnp.int32
    top = jnp.iinfo(jnp.int32).max
    s = (s[0]._replace(count=jnp.asarray(top, jnp.int32)), s[1])
    u, s = jax.jit(opt.update)(jnp.ones(2), s)
    assert int(s[0].count) == top
    assert jnp.all(jnp.isfinite(u))
    np.testing.assert_array_equal(jo.safe_increment(jnp.int32(5)), 6)


def test_adamw_needs_params():
    opt = jo.adamw(1e-3, weight_decay=0.1)
    with pytest.raises(ValueError, match="params"):
        opt.update(jnp.ones(2), opt.init(jnp.ones(2)))


# --------------------------------------------------------------------- Optax's defects


def test_inject_hyperparams_bfloat16_keeps_b2_and_gives_finite_updates():
    params = jnp.linspace(-1.0, 1.0, 8).astype(jnp.bfloat16)
    grads = (params * 0.5 + 0.1).astype(jnp.bfloat16)
    opt = jo.inject_hyperparams(jo.adam)(learning_rate=1e-2)
    s = opt.init(params)
    assert s.hyperparams["b2"].dtype == jnp.float32
    assert float(s.hyperparams["b2"]) == pytest.approx(0.999)
    with standard():
        ref = optax.adam(1e-2)
        p32, rs = params.astype(jnp.float32), ref.init(params.astype(jnp.float32))
    p = params
    for _ in range(5):
        u, s = jax.jit(opt.update)(grads, s, p)
        assert u.dtype == jnp.bfloat16
        p = optax.apply_updates(p, u)
        with standard():
            ru, rs = ref.update(grads.astype(jnp.float32), rs, p32)
            p32 = optax.apply_updates(p32, ru)
    assert jnp.all(jnp.isfinite(p))
    chex.assert_trees_all_close(p.astype(jnp.float32), p32, atol=2e-2)


def test_inject_hyperparams_dtype_override():
    opt = jo.inject_hyperparams(jo.sgd, hyperparam_dtype=jnp.bfloat16)(learning_rate=0.1)
    assert opt.init(jnp.ones(2)).hyperparams["learning_rate"].dtype == jnp.bfloat16
    with jax.enable_x64(True):
        opt = jo.inject_hyperparams(jo.sgd)(learning_rate=0.1)
        assert opt.init(jnp.ones(2, jnp.float64)).hyperparams["learning_rate"].dtype == jnp.float64


@pytest.mark.parametrize("name", ["adam", "adamw", "nadam", "rmsprop", "adagrad"])
def test_all_zero_float16_gradient_gives_zero_not_nan(name):
    opt = getattr(jo, name)(1e-3)
    params = jnp.ones(4, jnp.float16)
    s = opt.init(params)
    for _ in range(3):
        u, s = jax.jit(opt.update)(jnp.zeros(4, jnp.float16), s, params)
        assert u.dtype == jnp.float16
        assert jnp.all(jnp.isfinite(u))
    if name != "adamw":  # adamw's decoupled decay moves the weights even at g = 0
        chex.assert_trees_all_equal(u, jnp.zeros(4, jnp.float16))


@pytest.mark.parametrize(("dtype", "atol"), [(jnp.float16, 1e-2), (jnp.bfloat16, 6e-2)])
def test_low_precision_adam_tracks_float32_optax(dtype, atol):
    # Bias correction and moments in float32 keep low-precision Adam on the float32 path.
    params32 = jnp.linspace(-2.0, 2.0, 16)
    target = jnp.linspace(1.0, -1.0, 16)
    grad = lambda p: p - target
    opt = jo.adam(5e-2)
    p, s = params32.astype(dtype), opt.init(params32.astype(dtype))
    with standard():
        ref = optax.adam(5e-2)
        rp, rs = params32, ref.init(params32)
        for _ in range(30):
            ru, rs = ref.update(grad(rp), rs, rp)
            rp = optax.apply_updates(rp, ru)
    step = jax.jit(lambda p, s: opt.update(grad(p.astype(jnp.float32)).astype(dtype), s, p))
    for _ in range(30):
        u, s = step(p, s)
        p = optax.apply_updates(p, u)
    # The tolerance is the rounding of 30 updates into low-precision parameters.
    chex.assert_trees_all_close(p.astype(jnp.float32), rp, atol=atol)


# ------------------------------------------------------------------------ Optax pipelines


def _pipeline_params():
    return {
        "dense_0": {"w": jnp.linspace(-1.0, 1.0, 6).reshape(2, 3), "b": jnp.zeros(3)},
        "dense_1": {"w": jnp.linspace(0.5, -0.5, 3).reshape(3, 1), "b": jnp.ones(1)},
    }


def _loss(p):
    x = jnp.linspace(-1.0, 1.0, 8).reshape(4, 2)
    h = jnp.tanh(x @ p["dense_0"]["w"] + p["dense_0"]["b"][None, :])
    y = h @ p["dense_1"]["w"] + p["dense_1"]["b"][None, :]
    return jnp.mean((y[:, 0] - jnp.array([0.0, 1.0, -1.0, 0.5])) ** 2)


def _train(opt, steps=12):
    def body(carry, _):
        p, s = carry
        u, s = opt.update(jax.grad(_loss)(p), s, p)
        return (optax.apply_updates(p, u), s), None

    p = _pipeline_params()
    return jax.lax.scan(body, (p, opt.init(p)), None, steps)[0]


LABELS = {"dense_0": {"w": "adam", "b": "sgd"}, "dense_1": {"w": "adam", "b": "sgd"}}
WEIGHTS = {"dense_0": {"w": True, "b": False}, "dense_1": {"w": True, "b": False}}


# (build, strict): MultiSteps' and apply_if_finite's own bookkeeping mixes int32 and float32,
# so those pipelines run under standard promotion for jnn too.
PIPELINES = {
    "chain_clip_adam": (lambda m: optax.chain(optax.clip_by_global_norm(1.0), m.adam(0.05)), True),
    "multisteps_sgd": (lambda m: optax.MultiSteps(m.sgd(0.1, momentum=0.9), 4), False),
    "multi_transform": (
        lambda m: optax.multi_transform({"adam": m.adam(0.05), "sgd": m.sgd(0.1)}, LABELS),
        True,
    ),
    "masked": (lambda m: optax.masked(m.adam(0.05), WEIGHTS), True),
    "adamw_mask_clip": (
        lambda m: optax.chain(m.adamw(0.05, weight_decay=0.1, mask=WEIGHTS), optax.clip(0.01)),
        True,
    ),
    "apply_if_finite": (lambda m: optax.apply_if_finite(m.rmsprop(0.01, momentum=0.9), 3), False),
}


@pytest.mark.parametrize("pipeline", list(PIPELINES))
def test_inside_optax_pipelines(pipeline):
    build, strict = PIPELINES[pipeline]

    @jax.jit
    def both():
        with jax.numpy_dtype_promotion("strict" if strict else "standard"):
            ours = _train(build(jo))
        with standard():
            ref = _train(build(optax))
        return ours, ref

    ours, ref = both()
    chex.assert_trees_all_close(jax.tree.leaves(ours), jax.tree.leaves(ref), rtol=1e-6, atol=1e-7)


def test_nnx_optimizer_reaches_optax_params():
    from flax import nnx

    def train(tx):
        model = nnx.Sequential(
            nnx.Linear(2, 8, rngs=nnx.Rngs(0)), nnx.tanh, nnx.Linear(8, 1, rngs=nnx.Rngs(1))
        )
        optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
        x = jnp.linspace(-1.0, 1.0, 16).reshape(8, 2)
        y = jnp.sin(3 * x[:, :1])

        @nnx.jit
        def step(model, optimizer):
            grads = nnx.grad(lambda m: jnp.mean((m(x) - y) ** 2))(model)
            optimizer.update(model, grads)

        for _ in range(20):
            step(model, optimizer)
        return nnx.state(model, nnx.Param)

    ours = train(jo.adam(1e-2))
    with standard():
        ref = train(optax.adam(1e-2))
    chex.assert_trees_all_close(jax.tree.leaves(ours), jax.tree.leaves(ref), rtol=1e-6)


# ----------------------------------------------------------------- vmap / grad through


def test_vmap_over_members_matches_optax():
    params = _random_tree(5, jnp.float32, lead=(3,))
    grads = jax.tree.map(lambda x: 0.3 * x - 1.0, params)
    opt = jo.adamw(1e-2, weight_decay=0.1)
    u, _ = jax.jit(jax.vmap(lambda g, p: opt.update(g, opt.init(p), p)))(grads, params)
    with standard():
        ref = optax.adamw(1e-2, weight_decay=0.1)
        ru, _ = jax.jit(jax.vmap(lambda g, p: ref.update(g, ref.init(p), p)))(grads, params)
    chex.assert_trees_all_close(u, ru, rtol=1e-6)


def test_grad_through_update_matches_optax():
    # A meta-gradient: d(loss after one Adam step)/d(params); eps_root keeps sqrt smooth at 0.
    def after_step(lib, p):
        opt = lib.adam(0.1, eps_root=1e-8)
        u, _ = opt.update(jax.grad(_loss)(p), opt.init(p), p)
        return _loss(optax.apply_updates(p, u))

    ours = jax.jit(jax.grad(functools.partial(after_step, jo)))(_pipeline_params())
    with standard():
        ref = jax.jit(jax.grad(functools.partial(after_step, optax)))(_pipeline_params())
    chex.assert_trees_all_close(ours, ref, rtol=1e-5, atol=1e-7)


def test_building_blocks_compose_like_optax():
    params = _random_tree(6, jnp.float32)
    grads = jax.tree.map(lambda x: x - 0.5, params)
    pairs = [
        (
            jo.chain(jo.scale_by_adam(), jo.scale(-0.1)),
            optax.chain(optax.scale_by_adam(), optax.scale(-0.1)),
        ),
        (jo.trace(0.9, nesterov=True), optax.trace(0.9, nesterov=True)),
        (jo.scale_by_rss(), optax.scale_by_rss()),
        (jo.scale_by_rms(bias_correction=True), optax.scale_by_rms(bias_correction=True)),
        (jo.scale_by_stddev(), optax.scale_by_stddev()),
        (jo.add_decayed_weights(0.1), optax.add_decayed_weights(0.1)),
        (
            jo.scale_by_learning_rate(0.3, flip_sign=False),
            optax.scale_by_learning_rate(0.3, flip_sign=False),
        ),
        (jo.scale_by_learning_rate(None), optax.scale_by_learning_rate(None)),
        (
            jo.scale_by_schedule(lambda c: 0.5 ** jnp.asarray(c).astype(jnp.float32)),
            optax.scale_by_schedule(lambda c: 0.5 ** jnp.asarray(c).astype(jnp.float32)),
        ),
    ]

    def run(txs):
        out = []
        for tx in txs:
            s = tx.init(params)
            for _ in range(3):
                u, s = tx.update(grads, s, params)
            out.append((u, s))
        return out

    ours = jax.jit(lambda: run([o for o, _ in pairs]))()
    with standard():
        refs = jax.jit(lambda: run([r for _, r in pairs]))()
    for (u, s), (ru, rs) in zip(ours, refs, strict=True):
        chex.assert_trees_all_close(u, ru, rtol=1e-6)
        chex.assert_trees_all_close(jax.tree.leaves(s), jax.tree.leaves(rs), rtol=1e-6)
    chex.assert_trees_all_close(jo.apply_updates(params, grads), optax.apply_updates(params, grads))
