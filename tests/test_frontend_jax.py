"""JAX / Flax frontend: each model is lifted with `from_jax` / `from_flax`, verified, and run
through the IR interpreter against JAX on the same random inputs (float32, 1e-4 relative)."""

from __future__ import annotations

import numpy as np
import pytest

jax = pytest.importorskip("jax")
jnp = jax.numpy
nn = pytest.importorskip("flax.linen")

from tensorforge.frontends.jax import from_flax, from_jax  # noqa: E402
from tensorforge.ir.errors import ConversionError  # noqa: E402
from tensorforge.ir.interpreter import run_graph  # noqa: E402
from tensorforge.ir.verify import verify_module  # noqa: E402

RNG = np.random.default_rng(0)


def _rand(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def _close(got, want, rtol=1e-4):
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape and got.dtype == want.dtype, (got.shape, want.shape,
                                                                  got.dtype, want.dtype)
    scale = max(float(np.abs(want).max()), 1.0) if want.size else 1.0
    err = float(np.abs(got.astype(np.float64) - want.astype(np.float64)).max()) if want.size \
        else 0.0
    assert err <= rtol * scale, f"max abs err {err} vs scale {scale}"


def _check(module, fn, inputs):
    verify_module(module)
    got = run_graph(module.main, inputs)
    want = jax.tree_util.tree_leaves(fn(*inputs))
    assert len(got) == len(want)
    for g, w in zip(got, want):
        _close(g, w)


# -- (1) plain jax.numpy ---------------------------------------------------------------------

def test_jnp_function_broadcasting_and_reductions():
    def f(x, y):
        z = jnp.tanh(x[:, None, :] * y[None]) + jnp.exp(-x.mean(0))
        a = jnp.max(z, axis=1) - jnp.sum(z ** 2, axis=1) / 3.0
        b = jax.nn.softmax(x, axis=-1) + jnp.sqrt(jnp.abs(x)) * jnp.sign(x)
        c = jnp.where(x > 0, jnp.log1p(jnp.abs(x)), jnp.expm1(x))
        d = jnp.cumsum(x, axis=1) + jnp.take(x, jnp.array([4, 0, 1, 2, 3]), axis=1)
        e = jnp.concatenate([x[1:3], jax.lax.pad(x, 0.0, [(0, 0, 0), (1, -1, 0)])[::2]], axis=0)
        return a, b, c, d, e, jnp.argmax(x, axis=1), jax.nn.sigmoid(x).prod(axis=0)

    x, y = _rand(4, 5), _rand(3, 5)
    m = from_jax(f, [x, y])
    assert [v.name for v in m.main.inputs] == ["x", "y"]
    assert m.metadata["source"] == "jax"
    assert list(m.metadata["output_names"]) == [f"output_{i}" for i in range(7)]
    _check(m, f, [x, y])


def test_sin_cos_rotary_embedding():
    def rope(x):
        t = jnp.arange(x.shape[-1], dtype=jnp.float32)[None] * 0.25 + x   # angles from x
        return jnp.concatenate([x * jnp.cos(t), x * jnp.sin(t)], axis=-1)

    x = _rand(3, 8)
    m = from_jax(rope, [x])
    assert {"sin", "cos"} <= {n.op for n in m.main}
    _check(m, rope, [x])


def test_jit_and_custom_jvp_are_inlined():
    @jax.jit
    def inner(x):
        return jax.nn.relu(x) * 2.0 + jax.nn.gelu(x, approximate=False)

    @jax.checkpoint
    def g(x):
        return inner(x) - jax.lax.stop_gradient(x)

    x = _rand(2, 6)
    m = from_jax(g, [x])
    ops = {n.op for n in m.main}
    assert "relu" in ops
    _check(m, g, [x])


# -- (2) Flax linen CNN ----------------------------------------------------------------------

class CNN(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.Conv(8, (3, 3), padding="SAME")(x)
        x = nn.BatchNorm(use_running_average=True)(x)
        x = nn.relu(x)
        x = nn.avg_pool(x, (2, 2), strides=(2, 2))
        x = nn.Conv(8, (3, 3), strides=(1, 1), padding=((1, 1), (0, 2)),
                    feature_group_count=8)(x)
        x = nn.max_pool(x, (2, 2), strides=(1, 1), padding="SAME")
        x = x.reshape((x.shape[0], -1))
        return nn.Dense(10)(x)


def test_flax_linen_cnn():
    model = CNN()
    x = _rand(2, 8, 8, 3)
    variables = model.init(jax.random.PRNGKey(0), x)
    # non-trivial batch statistics
    variables = jax.tree_util.tree_map(lambda a: a, variables)
    bs = variables["batch_stats"]["BatchNorm_0"]
    variables["batch_stats"]["BatchNorm_0"] = {"mean": jnp.asarray(_rand(8) * 0.1),
                                                "var": jnp.asarray(np.abs(_rand(8)) + 0.5)}
    assert set(bs) == {"mean", "var"}
    m = from_flax(model, variables, [x])
    ops = {n.op for n in m.main}
    assert {"conv2d", "depthwise_conv2d", "max_pool2d", "avg_pool2d", "matmul"} <= ops
    consts = {n.outputs[0].name for n in m.main if n.op == "constant"}
    assert "Dense_0/kernel" in consts
    _check(m, lambda x: model.apply(variables, x), [x])


# -- (3) Flax transformer encoder block ------------------------------------------------------

class Encoder(nn.Module):
    d: int = 16
    heads: int = 4

    @nn.compact
    def __call__(self, x):
        h = nn.LayerNorm()(x)
        h = nn.MultiHeadDotProductAttention(num_heads=self.heads)(h, h)
        x = x + h
        h = nn.LayerNorm()(x)
        h = nn.Dense(4 * self.d, name="fc1")(h)
        h = nn.gelu(h)
        h = nn.Dense(self.d, name="fc2")(h)
        return x + h


def test_flax_transformer_block_and_scopes():
    model = Encoder()
    x = _rand(2, 5, 16)
    variables = model.init(jax.random.PRNGKey(1), x)
    m = from_flax(model, variables, [x])
    _check(m, lambda x: model.apply(variables, x), [x])
    scopes = {n.scope for n in m.main}
    # (6) Flax module paths become node scopes
    assert any(s.endswith("fc1") for s in scopes), scopes
    assert any("MultiHeadDotProductAttention_0" in s for s in scopes), scopes
    assert any("LayerNorm_0" in s for s in scopes), scopes
    locs = [n.loc for n in m.main if n.op == "matmul"]
    assert locs and all(loc.startswith("jax:dot_general:") for loc in locs)


# -- (4) NNX MLP -----------------------------------------------------------------------------

def test_nnx_mlp():
    nnx = pytest.importorskip("flax.nnx")

    class MLP(nnx.Module):
        def __init__(self, rngs):
            self.fc1 = nnx.Linear(6, 12, rngs=rngs)
            self.fc2 = nnx.Linear(12, 3, rngs=rngs)

        def __call__(self, x):
            return self.fc2(nnx.relu(self.fc1(x)))

    model = MLP(nnx.Rngs(0))
    x = _rand(4, 6)
    m = from_flax(model, [x])
    _check(m, lambda x: model(x), [x])
    consts = {n.outputs[0].name for n in m.main if n.op == "constant"}
    assert any(c and c.startswith("fc1/kernel") for c in consts), consts
    assert any("fc1" in n.scope for n in m.main if n.op == "matmul")


# -- (5) symbolic batch ----------------------------------------------------------------------

class Small(nn.Module):
    @nn.compact
    def __call__(self, x):
        h = nn.Dense(8, name="fc1")(x)
        h = nn.LayerNorm()(nn.relu(h))
        h = h.reshape((h.shape[0], 2, 4)).sum(-1)
        return nn.Dense(3)(h) + jnp.ones((1, 3))


def test_symbolic_batch():
    model = Small()
    variables = model.init(jax.random.PRNGKey(2), jnp.ones((1, 16)))
    spec = jax.ShapeDtypeStruct(jax.export.symbolic_shape("b, 16"), jnp.float32)
    m = from_flax(model, variables, [spec])
    verify_module(m)
    assert m.main.inputs[0].type.shape == ("b", 16)
    assert m.main.outputs[0].type.shape[0] == "b"
    for batch in (1, 3):
        x = _rand(batch, 16)
        (got,) = run_graph(m.main, [x])
        _close(got, model.apply(variables, x))


def test_cumsum_along_a_symbolic_dim():
    """Positions from a padding mask along a run-time sequence length: one IR cumsum."""
    def positions(mask, x):
        return x * (jnp.cumsum(mask, axis=1) - 1.0)[..., None] + \
            jax.lax.cumsum(x, axis=1, reverse=True)

    b, s = jax.export.symbolic_shape("b, s")      # one scope: both inputs share b and s
    specs = [jax.ShapeDtypeStruct((b, s), jnp.float32),
             jax.ShapeDtypeStruct((b, s, 4), jnp.float32)]
    m = from_jax(positions, specs)
    verify_module(m)
    assert [n.op for n in m.main].count("cumsum") == 2
    for b, s in ((1, 5), (3, 2)):
        mask = (np.arange(s) < s - 1).astype(np.float32)[None].repeat(b, 0)
        x = _rand(b, s, 4)
        _close(run_graph(m.main, [mask, x])[0], positions(mask, x))


# -- (7) unsupported primitives --------------------------------------------------------------

def test_unsupported_primitives_listed_at_once():
    def f(x):
        y = jax.lax.igamma(x, x)
        z = jax.lax.cumlogsumexp(x, axis=1)
        return jax.lax.zeta(y, y) + z

    x = _rand(2, 4)
    with pytest.raises(ConversionError) as info:
        from_jax(f, [x])
    err = info.value
    assert err.summary == "unsupported JAX primitives"
    names = {d.message.split()[1] for d in err.diagnostics}
    assert names == {"igamma", "cumlogsumexp", "zeta"}, names
    for d in err.diagnostics:
        assert "has no IR lowering" in d.message
        assert __file__ in d.loc and d.loc.startswith("jax:"), d.loc
    text = str(err)
    assert "igamma" in text and "cumlogsumexp" in text and "test_frontend_jax.py" in text


def test_unsupported_scope_is_module_path():
    class Bad(nn.Module):
        @nn.compact
        def __call__(self, x):
            h = nn.Dense(3, name="proj")(x)
            return jax.lax.igamma(h, h)

    model = Bad()
    x = _rand(1, 2)
    variables = model.init(jax.random.PRNGKey(0), x)
    with pytest.raises(ConversionError) as info:
        from_flax(model, variables, [x])
    (d,) = info.value.diagnostics
    assert d.scope == "Bad" and "primitive igamma" in d.message


def test_lowering_errors_are_clear():
    def f(x):
        return jax.lax.pad(x, x[0, 0], [(0, 0, 1), (0, 0, 0)])

    with pytest.raises(ConversionError, match="non-constant padding value"):
        from_jax(f, [_rand(3, 2)])


# -- end to end: JAX -> IR -> TFLite / SavedModel / TF.js ------------------------------------

def _e2e(module, fn, x, tmp_path):
    from tensorforge.tools.convert import convert
    litert = pytest.importorskip("ai_edge_litert.interpreter")
    result = convert(module, target=["tflite", "savedmodel", "tfjs"], output=tmp_path / "out",
                     verify=True)
    v = result.verification
    assert v.ok, v.table()
    assert {"tflite", "savedmodel", "tfjs"} <= {r.runtime for r in v.rows}
    runner = litert.Interpreter(model_path=str(result.paths["tflite"])).get_signature_runner()
    (got,) = runner(**{module.main.inputs[0].name: x}).values()
    _close(got, np.asarray(fn(x)))


def test_e2e_flax_cnn_all_targets(tmp_path):
    model = CNN()
    x = _rand(2, 8, 8, 3)
    variables = model.init(jax.random.PRNGKey(0), x)
    _e2e(from_flax(model, variables, [x]), lambda x: model.apply(variables, x), x, tmp_path)


def test_e2e_flax_transformer_all_targets(tmp_path):
    model = Encoder()
    x = _rand(2, 5, 16)
    variables = model.init(jax.random.PRNGKey(1), x)
    _e2e(from_flax(model, variables, [x]), lambda x: model.apply(variables, x), x, tmp_path)


def test_lax_conv_layouts_1d_and_dot_general_batch_dims():
    def f(x, w, x1, w1, a, b):
        y = jax.lax.conv_general_dilated(x, w, (2, 1), ((1, 2), (0, 1)), rhs_dilation=(1, 2),
                                         dimension_numbers=("NCHW", "OIHW", "NCHW"))
        y1 = jax.lax.conv_general_dilated(x1, w1, (1,), "SAME",
                                          dimension_numbers=("NWC", "WIO", "NCW"))
        z = jnp.einsum("bqhd,bkhd->bhqk", a, b)
        u = jnp.einsum("ij,kj->ik", a[0, :, 0], b[1, :, 1])
        return y, y1, z, u, jnp.einsum("bqhd,d->bqh", a, b[0, 0, 0])

    args = [_rand(2, 3, 7, 6), _rand(4, 3, 3, 2), _rand(2, 9, 3), _rand(3, 3, 5),
            _rand(2, 4, 3, 8), _rand(2, 6, 3, 8)]
    m = from_jax(f, args)
    _check(m, f, args)
