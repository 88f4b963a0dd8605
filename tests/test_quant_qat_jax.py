"""JAX/Flax quantization-aware training (qat/jax.py): `fake_quant` against NumPy
references of TF's nudged FakeQuantWithMinMaxVars and against TF itself, its straight-through
gradients, a Flax MLP with `FakeQuant` layers trained on sklearn digits, and its lifting into IR
quantize/dequantize pairs checked with the IR interpreter."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

jax = pytest.importorskip("jax")
jnp = jax.numpy
nn = pytest.importorskip("flax.linen")

import tensorforge  # noqa: E402
from tensorforge.ir.errors import ConversionError  # noqa: E402
from tensorforge.ir.types import DType  # noqa: E402
from tensorforge.ir.verify import verify_module  # noqa: E402
from tensorforge.passes.quantize.fake_quant import marker_name, nudge, parse_marker  # noqa: E402
from tensorforge.qat.jax import FakeQuant, fake_quant  # noqa: E402

HYP = dict(deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
N = 257


@jax.jit
def _fq_all(x, lo, hi):
    """fake_quant for every (bits, narrow_range) the property tests draw, in one compile."""
    return {(b, n): fake_quant(x, lo, hi, bits=b, narrow_range=n)
            for b in (2, 4, 8, 16) for n in (False, True)}


_FQ_CACHE = {}


def _fq(x, lo, hi, bits, narrow):
    key = (np.asarray(x).tobytes(), float(lo), float(hi))
    if key not in _FQ_CACHE:
        _FQ_CACHE.clear()
        _FQ_CACHE[key] = _fq_all(x, np.float32(lo), np.float32(hi))
    return np.asarray(_FQ_CACHE[key][(bits, narrow)])


def _ref_ir_form(x, lo, hi, bits, narrow):
    """NumPy: clamp(round_half_away(x / scale) + zp) -> dequantize, with the nudged params."""
    qmin, qmax = (1 if narrow else 0), (1 << bits) - 1
    scale, zp, _, _ = nudge(lo, hi, bits=bits, narrow_range=narrow)
    v = (np.asarray(x, np.float32) / scale).astype(np.float64)
    q = np.clip(np.trunc(v + np.copysign(0.5, v)) + zp, qmin, qmax).astype(np.float32)
    return (q - zp) * scale


def _ref_tf_form(x, lo, hi, bits, narrow):
    """NumPy: TF's FakeQuantWithMinMaxVars functor literally (clamp, floor(v + 0.5))."""
    scale, _, nmin, nmax = nudge(lo, hi, bits=bits, narrow_range=narrow)
    c = np.clip(np.asarray(x, np.float32), nmin, nmax) - nmin
    return np.floor(c * (np.float32(1) / scale) + np.float32(0.5)) * scale + nmin


ranges = st.tuples(st.floats(-20.0, 1.0, width=32), st.floats(0.015625, 40.0, width=32))


def _x(seed, lo, hi):
    rng = np.random.default_rng(seed)
    span = hi - lo
    x = rng.uniform(lo - 0.5 * span, hi + 0.5 * span, N).astype(np.float32)
    x[:3] = [0.0, lo, hi]
    return x


# -- forward ---------------------------------------------------------------------------------

@settings(max_examples=60, **HYP)
@given(ranges, st.sampled_from([2, 4, 8, 16]), st.booleans(), st.integers(0, 2 ** 31))
def test_fake_quant_matches_nudged_reference(rng_, bits, narrow, seed):
    lo, width = rng_
    hi = np.float32(lo + width)
    x = _x(seed, lo, hi)
    y = _fq(x, lo, hi, bits, narrow)
    scale, zp, nmin, nmax = nudge(lo, hi, bits=bits, narrow_range=narrow)
    # Bit-identical to the IR form (what the model lifts to) ...
    np.testing.assert_array_equal(y, _ref_ir_form(x, lo, hi, bits, narrow))
    # ... and TF's literal formula up to one code at rounding ties, few of them.
    tf_y = _ref_tf_form(x, lo, hi, bits, narrow)
    diff = np.abs(y - tf_y)
    assert diff.max() <= scale * 1.001 + 1e-6
    assert (diff > 1e-5 * max(abs(nmin), abs(nmax), 1.0)).sum() <= 3
    # On the grid, inside the nudged range, zero exact, idempotent.
    # codes in f64; y itself is a rounded f32 product, so allow its ulp in code units.
    k = y.astype(np.float64) / np.float64(scale) + np.float64(zp)
    assert (np.abs(k - np.round(k)) <= 2 * np.spacing(np.abs(y)) / scale + 1e-6).all()
    assert y.min() >= nmin - 1e-6 * abs(nmin) and y.max() <= nmax + 1e-6 * abs(nmax)
    assert y[0] == 0.0
    np.testing.assert_array_equal(_fq_all(y, lo, hi)[(bits, narrow)], y)


def test_nudge_examples():
    # TF fake_quant_ops_test: [-0.1, 63.65] at 8 bits nudges to [0, 63.75], scale 0.25.
    s, zp, lo, hi = nudge(-0.1, 63.65, bits=8)
    assert (float(s), float(zp), float(lo), float(hi)) == (0.25, 0.0, 0.0, 63.75)
    # narrow range [1, 255]: [-63.5, 63.5] -> zp 128, symmetric int8 [-127, 127] codes.
    s, zp, lo, hi = nudge(-63.5, 63.5, bits=8, narrow_range=True)
    assert (float(s), float(zp), float(lo), float(hi)) == (0.5, 128.0, -63.5, 63.5)
    # a range above zero is shifted to start at 0.
    _, zp, lo, _ = nudge(1.0, 2.0, bits=8)
    assert float(zp) == 0.0 and float(lo) == 0.0


def test_per_channel_matches_per_tensor_slices():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 5, 3)).astype(np.float32) * 3
    lo = np.array([-1.0, -2.5, -0.1], np.float32)
    hi = np.array([1.0, 0.5, 4.0], np.float32)
    y = np.asarray(fake_quant(x, lo, hi, axis=-1, narrow_range=True))
    for c in range(3):
        np.testing.assert_array_equal(
            y[..., c], np.asarray(fake_quant(x[..., c], lo[c], hi[c], narrow_range=True)))
        np.testing.assert_array_equal(y[..., c],
                                      _ref_ir_form(x[..., c], lo[c], hi[c], 8, True))
    # [-1, 1] at 8 bits puts the zero point on a .5 tie (127.5 -> 128): per channel (vector
    # arithmetic, where XLA likes to turn divisions into reciprocal multiplies) must agree.
    y1 = np.asarray(jax.jit(lambda x: fake_quant(x, jnp.full(5, lo[0]), jnp.full(5, hi[0]),
                                                 axis=1))(x))
    np.testing.assert_array_equal(y1, np.asarray(fake_quant(x, lo[0], hi[0])))
    np.testing.assert_array_equal(y1, _ref_ir_form(x, lo[0], hi[0], 8, False))


@pytest.mark.parametrize("bits", [4, 8])
def test_zero_point_ties_agree_under_xla(bits):
    """Symmetric ranges put the zero point on a .5 tie ([-a, a]: 7.5 / 127.5); XLA's
    division rewrites must not flip it, whether min/max are arguments or baked-in constants."""
    rng = np.random.default_rng(5)
    a = rng.uniform(0.01, 10, 32).astype(np.float32)
    x = rng.uniform(-12, 12, (8, 32)).astype(np.float32)
    want = np.stack([_ref_ir_form(x[:, c], -a[c], a[c], bits, False) for c in range(32)], 1)
    got_const = jax.jit(lambda x: fake_quant(x, -a, a, bits=bits, axis=1))(x)
    got_args = jax.jit(lambda x, lo, hi: fake_quant(x, lo, hi, bits=bits, axis=1))(x, -a, a)
    np.testing.assert_array_equal(got_const, want)
    np.testing.assert_array_equal(got_args, want)


def test_bad_arguments():
    x = jnp.ones((2, 3))
    with pytest.raises(ValueError, match="bits"):
        fake_quant(x, -1.0, 1.0, bits=1)
    with pytest.raises(ValueError, match="3 entries"):
        fake_quant(x, jnp.zeros(2), jnp.ones(2), axis=1)
    with pytest.raises(ValueError, match="scalar"):
        fake_quant(x, jnp.zeros(3), jnp.ones(3))
    with pytest.raises(TypeError, match="floating"):
        fake_quant(jnp.ones(3, jnp.int32), -1.0, 1.0)
    assert parse_marker(marker_name(16, True, 2)) == (16, True, 2)
    assert parse_marker(marker_name(8, False, None)) == (8, False, None)
    assert parse_marker("tensorforge_fake_quant_other") is None


# -- gradients ---------------------------------------------------------------------------------

@pytest.mark.parametrize("axis", [None, 1])
def test_straight_through_gradients(axis):
    rng = np.random.default_rng(2)
    x = rng.uniform(-3, 3, (6, 4)).astype(np.float32)
    w = rng.standard_normal((6, 4)).astype(np.float32)
    if axis is None:
        lo, hi = np.float32(-1.3), np.float32(2.1)
    else:
        lo = np.array([-1.3, -0.2, -2.0, 0.0], np.float32)
        hi = np.array([2.1, 0.9, 2.0, 1.0], np.float32)

    def loss(x, lo, hi):
        return jnp.sum(fake_quant(x, lo, hi, bits=4, axis=axis) * w)

    dx, dlo, dhi = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(x, lo, hi)
    _, _, nmin, nmax = nudge(lo, hi, bits=4)
    below, above = x < nmin, x > nmax
    assert below.any() and above.any() and (~below & ~above).any()
    np.testing.assert_array_equal(dx, np.where(below | above, 0, w))
    red = None if axis is None else 0
    np.testing.assert_allclose(dlo, np.where(below, w, 0).sum(axis=red), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(dhi, np.where(above, w, 0).sum(axis=red), rtol=1e-6, atol=1e-6)
    assert np.shape(dlo) == np.shape(lo) and np.shape(dhi) == np.shape(hi)


def test_against_tensorflow_fake_quant_with_min_max_vars():
    """The real TF kernels: forward up to one code at ties, gradients exactly."""
    tf = pytest.importorskip("tensorflow")
    rng = np.random.default_rng(3)
    x = rng.uniform(-4, 7, (64, 3)).astype(np.float32)
    g = rng.standard_normal((64, 3)).astype(np.float32)
    for bits, narrow, lo, hi in [(8, False, -2.3, 5.1), (4, True, -1.0, 3.0),
                                 (16, False, 0.4, 6.0)]:
        lo, hi = np.float32(lo), np.float32(hi)
        want = tf.quantization.fake_quant_with_min_max_vars(
            x, lo, hi, num_bits=bits, narrow_range=narrow).numpy()
        got = np.asarray(fake_quant(x, lo, hi, bits=bits, narrow_range=narrow))
        scale = nudge(lo, hi, bits=bits, narrow_range=narrow)[0]
        diff = np.abs(got - want)
        assert diff.max() <= scale * 1.001 and (diff > 1e-5 * abs(hi)).sum() <= 2, bits
        tdx, tdlo, tdhi = tf.quantization.fake_quant_with_min_max_vars_gradient(
            g, x, lo, hi, num_bits=bits, narrow_range=narrow)
        dx, dlo, dhi = jax.grad(
            lambda x, a, b: jnp.sum(fake_quant(x, a, b, bits=bits, narrow_range=narrow) * g),
            argnums=(0, 1, 2))(x, lo, hi)
        np.testing.assert_array_equal(dx, tdx.numpy())
        np.testing.assert_allclose([dlo, dhi], [tdlo.numpy(), tdhi.numpy()], rtol=1e-5)


# -- Flax QAT model ----------------------------------------------------------------------------

class QatMLP(nn.Module):
    """Input, weights (per-channel symmetric) and activations fake-quantized."""

    @nn.compact
    def __call__(self, x):
        x = FakeQuant(name="fq_in")(x)
        for i, width in enumerate((32, 10)):
            x = nn.Dense(width, name=f"fc{i}")(x)
            x = FakeQuant(name=f"fq{i}")(x)
            if i == 0:
                x = nn.relu(x)
        return x


class QatWeights(nn.Module):
    """Dense with an explicitly fake-quantized kernel (per output channel, symmetric)."""

    @nn.compact
    def __call__(self, x):
        k = self.param("kernel", nn.initializers.lecun_normal(), (x.shape[-1], 6))
        kq = FakeQuant(symmetric=True, axis=1, name="wq")(k)
        return FakeQuant(bits=16, name="aq")(x @ kq)


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits
    d = load_digits()
    x = (d.data / 16.0).astype(np.float32)
    return x[:512], d.target[:512].astype(np.int32)


@pytest.fixture(scope="module")
def trained(digits):
    import optax
    x, y = digits
    model = QatMLP()
    variables = model.init(jax.random.key(0), x)
    opt = optax.adam(1e-2)
    state = opt.init(variables)

    def loss_fn(v):
        logits = model.apply(v, x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    @jax.jit
    def step(v, s):
        loss, grads = jax.value_and_grad(loss_fn)(v)
        upd, s = opt.update(grads, s, v)
        return optax.apply_updates(v, upd), s, loss, grads

    losses, grads0 = [], None
    v = variables
    for _ in range(40):
        v, state, loss, grads = step(v, state)
        grads0 = grads if grads0 is None else grads0
        losses.append(float(loss))
    return model, variables, v, losses, grads0


def test_qat_mlp_trains_on_digits(trained, digits):
    model, v0, v, losses, grads0 = trained
    assert losses[-1] < 0.5 * losses[0], losses
    # Ranges are initialized from the first batch (0 included) and learn through the STE.
    x, _ = digits
    p0 = v0["params"]
    assert float(p0["fq_in"]["min"]) == 0.0 and float(p0["fq_in"]["max"]) == float(x.max())
    g = grads0["params"]
    assert any(float(jnp.abs(g[k][e]).sum()) > 0 for k in ("fq0", "fq1") for e in ("min", "max"))
    moved = [abs(float(v["params"][k]["max"] - p0[k]["max"])) for k in ("fq0", "fq1")]
    assert max(moved) > 1e-3, moved


def _qdq_pairs(graph):
    nodes = list(graph)
    pairs = []
    for n in nodes:
        if n.op == "quantize":
            (use,) = [u for u in nodes if n.outputs[0] in u.inputs]
            assert use.op == "dequantize"
            pairs.append((n, use))
    return pairs


def test_lift_trained_mlp_to_qdq_ir(trained, digits):
    model, _, v, _, _ = trained
    x, _ = digits
    xb = x[:64]
    module = tensorforge.from_flax(model, v, xb)
    verify_module(module)
    g = module.main
    pairs = _qdq_pairs(g)
    assert [q.scope for q, _ in pairs] == ["QatMLP/fq_in", "QatMLP/fq0", "QatMLP/fq1"]
    assert [n.op for n in g if n.op != "constant"] == [
        "quantize", "dequantize", "matmul", "add", "quantize", "dequantize", "relu",
        "matmul", "add", "quantize", "dequantize"]
    for q, dq in pairs:
        name = q.scope.split("/")[-1]
        p = v["params"][name]
        scale, zp, _, _ = nudge(p["min"], p["max"], bits=8)
        assert q.attrs["dtype"] == DType.i8 and q.outputs[0].type.dtype == DType.i8
        assert q.attrs["scale"] == (float(scale),) == dq.attrs["scale"]
        assert q.attrs["zero_point"] == (int(zp) - 128,) == dq.attrs["zero_point"]
        assert q.attrs["axis"] is None and q.attrs["narrow_range"] is False
        assert q.outputs[0].quant.scale == (float(scale),)
    # The interpreter against JAX (eager, and jit with the params baked in as constants):
    # within 1e-5 except where matmul summation order flips a code at a rounding tie.
    (got,) = tensorforge.run_graph(g, [xb])
    for want in (model.apply(v, xb), jax.jit(lambda x: model.apply(v, x))(xb)):
        bad = np.abs(got - np.asarray(want)) > 1e-5
        assert bad.mean() < 0.01, (bad.sum(), np.abs(got - want).max())


def test_lift_fake_quantized_weights_and_int16():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((5, 7)).astype(np.float32)
    model = QatWeights()
    v = model.init(jax.random.key(1), x)
    module = tensorforge.from_flax(model, v, x)
    verify_module(module)
    g = module.main
    # The weight is stored as int8 codes (QDQ form), not folded back to float.
    (wdq,) = [n for n in g if n.op == "dequantize" and n.scope.endswith("wq")]
    codes = wdq.inputs[0]
    assert codes.producer.op == "constant" and codes.type.dtype == DType.i8
    k, wmax = v["params"]["kernel"], v["params"]["wq"]["max"]
    scale, zp, _, _ = nudge(-wmax, wmax, bits=8, narrow_range=True)
    assert codes.quant.axis == 1 and codes.quant.narrow_range
    assert wdq.attrs["scale"] == tuple(float(s) for s in scale) and wdq.attrs["axis"] == 1
    assert wdq.attrs["zero_point"] == (0,) * 6 and (zp == 128).all()
    arr = codes.producer.attrs["value"]
    assert arr.min() >= -127 and arr.max() <= 127 and np.abs(arr).max() == 127
    np.testing.assert_array_equal(
        arr * scale, np.asarray(fake_quant(k, -wmax, wmax, narrow_range=True, axis=1)))
    # 16-bit activations: i16 codes, zero point shifted by -32768.
    (aq,) = [n for n in g if n.op == "quantize"]
    a = v["params"]["aq"]
    s16, zp16, _, _ = nudge(a["min"], a["max"], bits=16)
    assert aq.attrs["dtype"] == DType.i16 and aq.attrs["scale"] == (float(s16),)
    assert aq.attrs["zero_point"] == (int(zp16) - 32768,)
    (got,) = tensorforge.run_graph(g, [x])
    want = np.asarray(model.apply(v, x))
    assert (np.abs(got - want) > 1e-5).mean() < 0.05
    np.testing.assert_allclose(got, want, atol=float(s16) * 1.01)


def test_lift_errors_name_equation_and_module():
    class Bad(nn.Module):
        @nn.compact
        def __call__(self, x):
            y = FakeQuant(bits=4, name="four_bit")(x)              # no IR storage type
            return y + fake_quant(x, jnp.min(x), jnp.max(x))      # range from the input

    x = np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4)
    model = Bad()
    v = model.init(jax.random.key(0), x)
    with pytest.raises(ConversionError) as e:
        tensorforge.from_flax(model, v, x)
    diags = e.value.diagnostics
    assert len(diags) == 2, str(e.value)
    assert "4-bit" in diags[0].message and diags[0].scope == "Bad/four_bit"
    assert "tensorforge_fake_quant" in diags[0].node or "jit" in diags[0].node
    assert "not a constant" in diags[1].message and diags[1].scope == "Bad"
    assert "jax:jit" in diags[1].loc
    assert all(__file__ in d.loc for d in diags), [d.loc for d in diags]   # the user's lines


def test_gradient_jaxpr_is_not_mistaken_for_the_marker():
    """jax.grad keeps the marker name on the transposed jit; it must be inlined, not lifted."""
    lo, hi = np.float32(-1.0), np.float32(2.0)

    def f(x):
        return jax.grad(lambda x: jnp.sum(fake_quant(x, lo, hi) * 3.0))(x)

    x = np.linspace(-3, 3, 13, dtype=np.float32)
    try:
        module = tensorforge.from_jax(f, [x])
    except ConversionError as e:  # an unsupported primitive is fine; a wrong lift is not
        assert "fake_quant" not in str(e) and "4-bit" not in str(e)
        return
    (got,) = tensorforge.run_graph(module.main, [x])
    np.testing.assert_array_equal(got, np.asarray(f(x)))


class QatDense(nn.Module):
    """A Dense layer trained with fake-quantized weights (per output channel, symmetric,
    narrow range) and output."""

    features: int

    @nn.compact
    def __call__(self, x):
        k = self.param("kernel", nn.initializers.lecun_normal(), (x.shape[-1], self.features))
        b = self.param("bias", nn.initializers.zeros, (self.features,))
        return FakeQuant(name="out")(x @ FakeQuant(symmetric=True, axis=1, name="w")(k) + b)


class QatIntMLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = FakeQuant(name="fq_in")(x)
        x = nn.relu(QatDense(32, name="fc0")(x))
        return QatDense(10, name="fc1")(x)


def test_flax_qat_model_converts_to_int8_tflite(tmp_path, digits):
    """A Flax model trained with tq.fake_quant converts like a Keras QAT model: integer
    FULLY_CONNECTED kernels in LiteRT, from the learned ranges, no calibration data."""
    import optax
    from ai_edge_litert import schema_py_generated as fb
    from ai_edge_litert.interpreter import Interpreter

    x, y = digits
    model = QatIntMLP()
    variables = model.init(jax.random.key(0), x)
    opt = optax.adam(1e-2)
    state = opt.init(variables)

    @jax.jit
    def step(v, s):
        loss, g = jax.value_and_grad(lambda v: optax.softmax_cross_entropy_with_integer_labels(
            model.apply(v, x), y).mean())(v)
        updates, s = opt.update(g, s)
        return optax.apply_updates(v, updates), s, loss

    for _ in range(20):
        variables, state, _ = step(variables, state)
    spec = jax.ShapeDtypeStruct(jax.export.symbolic_shape("b, 64"), jax.numpy.float32)
    result = tensorforge.convert(model.apply, target="tflite", output=tmp_path / "m.tflite",
                                 example_args=[spec], params=variables, progress=False)
    data = result.paths["tflite"].read_bytes()
    m = fb.ModelT.InitFromPackedBuf(data, 0)
    sg = m.subgraphs[0]
    fc = [op for op in sg.operators if m.operatorCodes[op.opcodeIndex].builtinCode
          == fb.BuiltinOperator.FULLY_CONNECTED]
    assert len(fc) == 2 and all(sg.tensors[op.inputs[0]].type == fb.TensorType.INT8
                                for op in fc)
    runner = Interpreter(model_content=data).get_signature_runner("serving_default")
    (name,) = runner.get_input_details()
    got = next(iter(runner(**{name: x[:64]}).values()))
    want = np.asarray(model.apply(variables, x[:64]))
    step_size = result.module.main.outputs[0].producer.attrs["scale"][0]
    assert np.max(np.abs(got - want)) <= 3 * step_size
    assert np.mean(np.argmax(got, -1) == np.argmax(want, -1)) >= 0.98
