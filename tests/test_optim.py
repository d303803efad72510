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


def _scan(opt, params, noise, state=None):
    """Updates with gradients ``0.5 * params + noise``; every 7th gradient is all zero.

    Starts from ``opt.init(params)`` unless ``state`` is given; returns ``(params, state)``.
    """

    def body(carry, xs):
        (p, s), (i, n) = carry, xs
        on = (i % 7 != 3).astype(n["dense_0"]["b"].dtype)
        g = jax.tree.map(lambda x, e: on * (0.5 * x + e), p, n)
        u, s = opt.update(g, s, p)
        return (optax.apply_updates(p, u), s), None

    steps = jax.tree.leaves(noise)[0].shape[0]
    state = opt.init(params) if state is None else state
    return jax.lax.scan(body, (params, state), (jnp.arange(steps), noise))[0]


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


def test_inject_hyperparams_keeps_numpy_bool_flags_static():
    # A NumPy bool is a flag, not a hyperparameter to inject (it would be traced in update).
    opt = jo.inject_hyperparams(jo.adam)(learning_rate=0.1, nesterov=np.bool_(True))
    s = opt.init({"w": jnp.ones(3)})
    assert "nesterov" not in s.hyperparams
    u, _ = jax.jit(opt.update)({"w": jnp.ones(3)}, s)
    with standard():  # the float32 values the injected state holds
        ref = optax.nadam(*(float(np.float32(x)) for x in (0.1, 0.9, 0.999, 1e-8)))
        ru, _ = ref.update({"w": jnp.ones(3)}, ref.init({"w": jnp.ones(3)}))
    chex.assert_trees_all_close(u, ru, rtol=1e-6)


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


# ------------------------------------------------------------------- argument checks

# Every numeric hyperparameter of every alias and building block, with the arguments
# it needs besides (``None`` ok: the argument is optional).
NUMERIC_ARGS = [
    *[("sgd", a, {"learning_rate": 0.1}) for a in ("learning_rate", "momentum")],
    *[
        ("adagrad", a, {"learning_rate": 0.1})
        for a in ("learning_rate", "initial_accumulator_value", "eps")
    ],
    *[
        ("rmsprop", a, {"learning_rate": 0.1})
        for a in ("learning_rate", "decay", "eps", "initial_scale", "momentum")
    ],
    *[
        (n, a, {"learning_rate": 0.1})
        for n in ("adam", "nadam", "adamw", "nadamw")
        for a in ("learning_rate", "b1", "b2", "eps", "eps_root")
    ],
    *[(n, "weight_decay", {"learning_rate": 0.1}) for n in ("adamw", "nadamw")],
    ("trace", "decay", {"decay": 0.9}),
    *[("scale_by_rss", a, {}) for a in ("initial_accumulator_value", "eps")],
    *[
        (n, a, {})
        for n in ("scale_by_rms", "scale_by_stddev")
        for a in ("decay", "eps", "initial_scale")
    ],
    *[("scale_by_adam", a, {}) for a in ("b1", "b2", "eps", "eps_root")],
    ("scale", "step_size", {"step_size": 0.1}),
    ("scale_by_learning_rate", "learning_rate", {"learning_rate": 0.1}),
    ("add_decayed_weights", "weight_decay", {}),
]
OPTIONAL = {
    ("sgd", "momentum"),
    ("rmsprop", "momentum"),
    ("scale_by_learning_rate", "learning_rate"),
}
SCHEDULABLE = {"learning_rate", "weight_decay"}
BAD_TYPES = ["0.1", b"0.1", None, True, np.bool_(False), [0.1], {"lr": 0.1}, np.array(["0.1"])]
NOT_FINITE = [float("nan"), float("inf"), -float("inf"), np.float32("nan"), np.array([0.1, np.inf])]


def _ids(x):
    return x if isinstance(x, str) else ""


@pytest.mark.parametrize(("fn", "arg", "base"), NUMERIC_ARGS, ids=_ids)
def test_numeric_hyperparameters_checked_at_construction(fn, arg, base):
    build = lambda value: getattr(jo, fn)(**{**base, arg: value})
    for value in BAD_TYPES:
        if value is None and (fn, arg) in OPTIONAL:
            continue
        with pytest.raises(TypeError, match=rf"^{fn} needs {arg} to be a number.*got "):
            build(value)
    for value in NOT_FINITE:
        with pytest.raises(ValueError, match=rf"^{fn} needs a finite {arg}, got "):
            build(value)
    if arg not in SCHEDULABLE:  # a callable is a schedule only where schedules are allowed
        match = rf"{arg} to be a number(, an array or None| or an array), got <function"
        with pytest.raises(TypeError, match=match):
            build(lambda count: 0.9)
    # Just inside: huge and negative finite values (Optax accepts a negative learning rate:
    # gradient ascent), NumPy scalars and arrays, concrete JAX arrays, and schedules.
    for value in (1e300, -0.5, 0, np.float32(0.5), np.array([0.5, 0.9]), jnp.asarray(0.5)):
        build(value)
    if arg in SCHEDULABLE:
        build(js.constant_schedule(0.1))


def test_error_names_argument_and_value():
    with pytest.raises(TypeError, match=r"^adam needs learning_rate to be .* got '0.1' \(str\)"):
        jo.adam("0.1")
    with pytest.raises(TypeError, match=r"^sgd needs learning_rate to be .* got None"):
        jo.sgd(None)  # Optax's None would silently ascend (no sign flip): refused in aliases
    with pytest.raises(TypeError, match=r"^sgd needs momentum to be .* got True \(bool\)"):
        jo.sgd(0.1, True)  # a bool in momentum's place (nesterov meant?)
    with pytest.raises(ValueError, match=r"^nadamw needs a finite b1, got nan"):
        jo.nadamw(0.1, b1=float("nan"))


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda v: jo.sgd(0.1, 0.9, nesterov=v), "sgd needs nesterov"),
        (lambda v: jo.rmsprop(0.1, centered=v), "rmsprop needs centered"),
        (lambda v: jo.rmsprop(0.1, eps_in_sqrt=v), "rmsprop needs eps_in_sqrt"),
        (lambda v: jo.rmsprop(0.1, bias_correction=v), "rmsprop needs bias_correction"),
        (lambda v: jo.adam(0.1, nesterov=v), "adam needs nesterov"),
        (lambda v: jo.scale_by_stddev(bias_correction=v), "scale_by_stddev needs bias_correction"),
        (lambda v: jo.trace(0.9, nesterov=v), "trace needs nesterov"),
        (lambda v: jo.scale_by_learning_rate(0.1, flip_sign=v), "needs flip_sign"),
    ],
)
def test_flags_are_bools(build, match):
    for value in (True, False, np.bool_(True), 0, 1):
        build(value)
    for value in ("False", None, 2, 0.5):
        with pytest.raises(TypeError, match=rf"{match} to be True or False, got "):
            build(value)


def test_dtypes_and_schedules_are_checked():
    for build, name in [
        (lambda d: jo.adam(0.1, mu_dtype=d), "adam needs mu_dtype"),
        (lambda d: jo.sgd(0.1, 0.9, accumulator_dtype=d), "sgd needs accumulator_dtype"),
        (lambda d: jo.trace(0.9, accumulator_dtype=d), "trace needs accumulator_dtype"),
    ]:
        for good in (None, "bfloat16", jnp.float32, np.dtype("float16")):
            build(good)
        with pytest.raises(TypeError, match=rf"{name} to be a dtype or None, got 'floot32'"):
            build("floot32")
    with pytest.raises(TypeError, match="scale_by_schedule needs step_size_fn to be a schedule"):
        jo.scale_by_schedule(0.1)


def test_negative_learning_rate_ascends_like_optax():
    params, grads = jnp.array([1.0, -2.0]), jnp.array([0.5, 0.25])
    u, _ = jo.sgd(-0.1, momentum=0.9).update(grads, jo.sgd(-0.1, momentum=0.9).init(params))
    with standard():
        ref = optax.sgd(-0.1, momentum=0.9)
        ru, _ = ref.update(grads, ref.init(params))
    chex.assert_trees_all_close(u, ru)
    chex.assert_trees_all_close(u, 0.1 * grads)


# ---------------------------------------------------- per-member (traced) hyperparameters

MEMBER_SHAPES = {"dense_0": {"w": (3, 2), "b": ()}}  # ``_scan`` gates on dense_0/b
MEMBER_VALUES = {
    "learning_rate": [0.01, 0.03, 0.1],
    "momentum": [0.0, 0.5, 0.9],
    "b1": [0.5, 0.8, 0.9],
    "b2": [0.9, 0.99, 0.999],
    "decay": [0.8, 0.9, 0.95],
    "weight_decay": [0.0, 0.01, 0.1],
    "peak": [0.01, 0.05, 0.2],
}


def _warmup_of_cosine(lib, peak):
    if lib is jo:
        return js.warmup_schedule(js.cosine_decay_schedule(peak, 40), 5)
    return optax.join_schedules(  # an independent Optax reference (Optax has no warmup_schedule)
        [optax.linear_schedule(0.0, peak, 5), optax.cosine_decay_schedule(peak, 40)], [5]
    )


LR_SCHEDULES = {  # "peak" -> learning_rate
    "warmup_cosine": lambda lib, peak: (js if lib is jo else optax).warmup_cosine_decay_schedule(
        0.0, peak, 5, 50
    ),
    "warmup_of_cosine": _warmup_of_cosine,
}

# (alias, hyperparameters given per member, fixed arguments)
PER_MEMBER = [
    ("sgd", ("learning_rate", "momentum"), {}),
    ("sgd", ("learning_rate", "momentum"), {"nesterov": True}),
    ("adagrad", ("learning_rate",), {}),
    ("rmsprop", ("learning_rate", "decay", "momentum"), {}),
    (
        "rmsprop",
        ("learning_rate", "decay", "momentum"),
        {"nesterov": True, "bias_correction": True},
    ),
    ("rmsprop", ("learning_rate", "decay"), {"centered": True, "initial_scale": 1.0}),
    ("adam", ("learning_rate", "b1", "b2"), {}),
    ("adamw", ("learning_rate", "b1", "weight_decay"), {}),
    ("nadam", ("learning_rate", "b1"), {}),
    ("nadamw", ("learning_rate", "b1", "weight_decay"), {}),
    ("adam", ("peak", "b1"), {"schedule": "warmup_cosine"}),
    ("sgd", ("peak", "momentum"), {"schedule": "warmup_of_cosine", "nesterov": True}),
]
PER_MEMBER_IDS = [f"{n}-{'-'.join(h)}-{i}" for i, (n, h, _) in enumerate(PER_MEMBER)]


def _member_opt(lib, name, hparams, fixed):
    """``lib.name(**hparams, **fixed)``, ``peak`` going into ``fixed["schedule"]``."""
    kwargs, hparams = dict(fixed), dict(hparams)
    if "schedule" in kwargs:
        sched = LR_SCHEDULES[kwargs.pop("schedule")](lib, hparams.pop("peak"))
        # Optax's linear_schedule divides the int32 count in float32 even under x64; an
        # int64 count (x64) gives the reference in float64 (a no-op without x64).
        kwargs["learning_rate"] = lambda count: sched(jnp.asarray(count, jnp.result_type(int)))
    return getattr(lib, name)(**hparams, **kwargs)


def _stack(trees):
    return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def _per_member_vs_optax(name, names, fixed, dtype):
    """K vmapped jnn members (traced hyperparameters) and K Optax runs with Python values.

    The Python values are the members' own, i.e. rounded to ``dtype``: float32(0.999) is
    not 0.999, and ``1 - b2`` differs by 1e-5 between the two.
    """
    params = _random_tree(7, dtype, MEMBER_SHAPES)
    noise = _random_tree(2, dtype, MEMBER_SHAPES, lead=(10,))
    values = {n: np.asarray(MEMBER_VALUES[n], dtype) for n in names}
    python = [{n: float(v[k]) for n, v in values.items()} for k in range(3)]

    @jax.jit
    def run(params, noise, values):
        ours = jax.vmap(lambda hp: _scan(_member_opt(jo, name, hp, fixed), params, noise))(values)
        with standard():
            refs = [_scan(_member_opt(optax, name, hp, fixed), params, noise) for hp in python]
        return ours, _stack(refs)

    return run(params, noise, values)


@pytest.mark.parametrize(("name", "names", "fixed"), PER_MEMBER, ids=PER_MEMBER_IDS)
@pytest.mark.parametrize("x64", [False, True], ids=["float32", "float64"])
def test_vmap_per_member_hyperparameters_equal_optax_runs(name, names, fixed, x64):
    with jax.enable_x64(x64):
        dtype = jnp.float64 if x64 else jnp.float32
        ours, ref = _per_member_vs_optax(name, names, fixed, dtype)
        assert jax.tree.structure(ours[0]) == jax.tree.structure(ref[0])
        assert jax.tree.leaves(ours[0])[0].shape[0] == 3  # K members
        assert all(jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(ours))
        tol = {"rtol": 1e-12, "atol": 1e-14} if x64 else {"rtol": 2e-6, "atol": 1e-7}
        chex.assert_trees_all_close(jax.tree.leaves(ours), jax.tree.leaves(ref), **tol)
        chex.assert_trees_all_equal_dtypes(jax.tree.leaves(ours), jax.tree.leaves(ref))


INJECTS = {
    "jnn_inject_jnn_adam": (lambda: jo.inject_hyperparams(jo.adam), "strict"),
    "optax_inject_jnn_adam": (lambda: optax.inject_hyperparams(jo.adam), "strict"),
    "optax_inject_optax_adam": (lambda: optax.inject_hyperparams(optax.adam), "standard"),
}


@pytest.mark.parametrize("inject", list(INJECTS))
def test_vmap_per_member_injected_learning_rate_equals_optax_runs(inject):
    make, promotion = INJECTS[inject]
    params = _random_tree(8, jnp.float32, MEMBER_SHAPES)
    noise = _random_tree(3, jnp.float32, MEMBER_SHAPES, lead=(10,))
    lrs = MEMBER_VALUES["learning_rate"]

    @jax.jit
    def run(params, noise, lrs_array):
        with jax.numpy_dtype_promotion(promotion):
            opt = make()(learning_rate=0.1)

            def member(lr):
                state = opt.init(params)
                state.hyperparams["learning_rate"] = lr  # this member's value
                return _scan(opt, params, noise, state)

            ours = jax.vmap(member)(lrs_array)
        with standard():  # Python values: the float32 hyperparameters the state holds
            f32 = lambda x: float(np.float32(x))
            refs = [
                _scan(optax.adam(f32(lr), f32(0.9), f32(0.999), f32(1e-8)), params, noise)
                for lr in lrs
            ]
        return ours, _stack(refs)

    (p, s), (ref_p, ref_s) = run(params, noise, jnp.asarray(lrs, jnp.float32))
    np.testing.assert_allclose(s.hyperparams["learning_rate"], lrs, rtol=1e-7)
    chex.assert_trees_all_close(p, ref_p, rtol=2e-6, atol=1e-7)
    chex.assert_trees_all_close(
        jax.tree.leaves(s.inner_state), jax.tree.leaves(ref_s), rtol=2e-6, atol=1e-7
    )
