"""Quantization-aware training for Keras 3 (qat/keras.py) and the lifting of TF's
FakeQuant ops into IR quantize -> dequantize pairs (frontends/tf/ops/quant.py).

Real TF/Keras throughout: small models on sklearn's 8x8 digits, trained for an epoch or two.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

import tensorforge  # noqa: E402
from tensorforge.qat.keras import (FakeQuant, QATAdd, QATConcatenate,  # noqa: E402
                                    QATConv2D, QATDense, QATDepthwiseConv2D, QATEinsumDense,
                                    apply_quantization_on_model, scope)
from tensorforge.frontends.tf import lift_concrete_function  # noqa: E402
from tensorforge.passes.quantize.fake_quant import signed_nudge  # noqa: E402
from tensorforge.ir.errors import ConversionError  # noqa: E402
from tensorforge.ir.interpreter import run_module  # noqa: E402
from tensorforge.ir.types import DType  # noqa: E402
from tensorforge.ir.verify import verify_module  # noqa: E402
from tensorforge.passes import PassManager  # noqa: E402

pytestmark = pytest.mark.skipif(keras.config.backend() != "tensorflow",
                                reason="QAT needs the Keras TensorFlow backend")


# -- data and models ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[..., None]
    n = len(x) // 32 * 32      # whole batches of 32: fit traces one batch shape only
    return x[:n], d.target[:n].astype(np.int32)


def _compile(m):
    m.compile(optimizer=keras.optimizers.Adam(3e-3),
              loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return m


def _sequential():
    return keras.Sequential([
        keras.Input((8, 8, 1), name="input_layer"),
        keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv1"),
        keras.layers.DepthwiseConv2D(3, padding="same", activation="relu6", name="dw"),
        keras.layers.MaxPooling2D(name="pool"),
        keras.layers.Flatten(name="flatten"),
        keras.layers.Dense(10, name="fc"),
    ], name="seq_cnn")


def _functional():
    inp = keras.Input((8, 8, 1), name="image")
    a = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv_a")(inp)
    b = keras.layers.Conv2D(8, 3, padding="same", name="conv_b")(a)
    s = keras.layers.Add(name="add")([a, b])
    c = keras.layers.Concatenate(name="cat")([s, a])
    p = keras.layers.GlobalAveragePooling2D(name="gap")(c)
    out = keras.layers.EinsumDense("ab,bc->ac", output_shape=10, bias_axes="c",
                                   name="head")(p)
    return keras.Model(inp, out, name="func_add")


@pytest.fixture(scope="module")
def float_seq(digits):
    x, y = digits
    keras.utils.set_random_seed(0)
    m = _compile(_sequential())
    m.fit(x, y, epochs=2, batch_size=32, verbose=0)
    return m


@pytest.fixture(scope="module")
def float_func(digits):
    x, y = digits
    keras.utils.set_random_seed(1)
    m = _compile(_functional())
    m.fit(x, y, epochs=2, batch_size=32, verbose=0)
    return m


@pytest.fixture(scope="module")
def trained_seq(float_seq, digits):
    """The Sequential CNN after one QAT epoch, with its loss before and after."""
    x, y = digits
    keras.utils.set_random_seed(2)
    q = apply_quantization_on_model(float_seq)
    q.fit(x[:32], y[:32], epochs=1, batch_size=32, verbose=0)   # initialises the ranges
    before = _loss(q, x, y)
    q.fit(x, y, epochs=1, batch_size=32, verbose=0)
    return q, before, _loss(q, x, y)


# -- helpers -----------------------------------------------------------------------------------

def _out(model, x):
    """Inference output, eagerly (cheaper than tracing predict/evaluate functions)."""
    return np.asarray(model(x, training=False))


def _loss(model, x, y):
    logits = model(x, training=False)
    return float(keras.losses.SparseCategoricalCrossentropy(from_logits=True)(y, logits))


def _nodes(module, op=None, scope_=None):
    return [n for n in module.main if (op is None or n.op == op)
            and (scope_ is None or n.scope == scope_)]


def _producer_op(v):
    return v.producer.op if v.producer is not None else None


def _expected_params(lo, hi, bits=8, narrow=False):
    """TF's Nudge() written out: float32 math like TF's kernel (a range such as [-1, 1] puts
    the zero point at 127.49999 in float32, so TF picks 127, not 128)."""
    f = np.float32
    qmin, qmax = (1 if narrow else 0), (1 << bits) - 1
    scale = (f(hi) - f(lo)) / (f(qmax) - f(qmin))
    zp_from_min = f(qmin) - f(lo) / scale
    zp = int(np.clip(np.floor(np.float64(zp_from_min) + 0.5), qmin, qmax)) - (1 << (bits - 1))
    return float(scale), zp


def _assert_matches_keras(module, model, x, out_scale):
    ours = run_module(module, [x])[0]
    ref = _out(model, x)
    diff = np.abs(ours - ref)
    # Rounding ties: TF rounds half up, the IR half away from zero; at most one output step.
    assert diff.max() <= out_scale * 1.001 + 1e-6, diff.max()
    assert np.mean(diff <= 1e-5) > 0.99, np.mean(diff <= 1e-5)


# -- the Keras side ----------------------------------------------------------------------------

def test_layers_replaced_and_weights_copied(float_seq, digits):
    x, _ = digits
    q = apply_quantization_on_model(float_seq)
    assert q is not float_seq and isinstance(q, keras.Sequential)
    kinds = [type(layer) for layer in q.layers]
    assert kinds == [FakeQuant, QATConv2D, QATDepthwiseConv2D, keras.layers.MaxPooling2D,
                     keras.layers.Flatten, QATDense]
    assert [layer.name for layer in q.layers[1:]] == [layer.name for layer in float_seq.layers]
    for layer in float_seq.layers:
        for a, b in zip(layer.get_weights(), q.get_layer(layer.name).get_weights()):
            np.testing.assert_array_equal(a, b)
    # The original is untouched (still plain Keras layers).
    assert type(float_seq.get_layer("conv1")) is keras.layers.Conv2D
    # Ranges come from the first training batch; then QAT ~= float within quantization error.
    q(x[:256], training=True)
    fq = q.get_layer("conv1").output_quant
    assert float(fq.range_initialized.numpy()) == 1.0
    assert float(fq.range_min.numpy()) == 0.0 < float(fq.range_max.numpy())   # relu output
    ref, got = _out(float_seq, x[:256]), _out(q, x[:256])
    spread = ref.max() - ref.min()
    assert np.abs(got - ref).max() < 0.05 * spread, (np.abs(got - ref).max(), spread)


def test_fit_decreases_loss_and_updates_ranges(trained_seq):
    q, before, after = trained_seq
    assert np.isfinite(after) and after < before, (before, after)
    for name in ("input_layer_quant",):
        layer = q.get_layer(name)
        assert float(layer.range_min.numpy()) <= 0.0 <= float(layer.range_max.numpy())
    fc = q.get_layer("fc").output_quant
    assert float(fc.range_min.numpy()) < 0.0 < float(fc.range_max.numpy())   # logits


def test_save_load_roundtrip(trained_seq, digits, tmp_path):
    q, _, _ = trained_seq
    x, _ = digits
    path = tmp_path / "qat.keras"
    q.save(path)
    with scope():
        loaded = keras.models.load_model(path)
    assert [type(layer) for layer in loaded.layers] == [type(layer) for layer in q.layers]
    for a, b in zip(q.weights, loaded.weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_array_equal(_out(loaded, x[:128]),
                                  _out(q, x[:128]))
    cfg = loaded.get_layer("conv1").get_config()
    assert cfg["weight_quant"]["granularity"] == "per_channel"
    assert cfg["activation_quant"] == {"bits": 8, "symmetric": False,
                                       "granularity": "per_tensor", "narrow_range": False}


# -- lifting -----------------------------------------------------------------------------------

def test_from_keras_lifts_qdq_pairs(trained_seq, digits):
    q, _, _ = trained_seq
    x, _ = digits
    module = tensorforge.from_keras(q)
    verify_module(module)
    g = module.main
    # Model input: quantize -> dequantize on the graph input, with the learned range.
    inq = q.get_layer("input_layer_quant")
    (qn,) = _nodes(module, "quantize", "input_layer_quant")
    assert qn.inputs[0] is g.inputs[0] and qn.outputs[0].type.dtype == DType.i8
    scale, zp = _expected_params(inq.range_min.numpy(), inq.range_max.numpy())
    assert qn.attrs["scale"][0] == pytest.approx(scale, rel=1e-6)
    assert qn.attrs["zero_point"] == (zp,) and qn.attrs["axis"] is None
    assert not qn.attrs["narrow_range"] and qn.outputs[0].quant.zero_point == (zp,)
    # Each QAT layer: an int8 per-channel symmetric narrow-range weight constant -> dequantize
    # feeding the op, and quantize -> dequantize on its output.
    for name, op, axis, channels in (("conv1", "conv2d", 3, 8), ("dw", "depthwise_conv2d", 2, 8),
                                     ("fc", "matmul", 1, 10)):
        (node,) = _nodes(module, op, name)
        w = node.inputs[1]
        assert w.producer.op == "dequantize" and w.producer.attrs["axis"] == axis
        codes = w.producer.inputs[0]
        assert _producer_op(codes) == "constant" and codes.type.dtype == DType.i8
        assert codes.quant.narrow_range and codes.quant.axis == axis
        assert codes.quant.zero_point == (0,) * channels
        arr = codes.producer.attrs["value"]
        assert arr.min() >= -127 and np.all(np.abs(arr).max(axis=tuple(
            i for i in range(arr.ndim) if i != axis)) == 127)    # each channel spans its range
        # The weights are the float kernel's own range, per output channel.
        kernel = q.get_layer(name).kernel.numpy()
        if op == "depthwise_conv2d":
            kernel = kernel.reshape(kernel.shape[:2] + (1, -1))
            kernel = kernel.reshape(kernel.shape[:2] + (-1, 1))
        amax = np.abs(kernel).max(axis=tuple(i for i in range(kernel.ndim) if i != axis))
        np.testing.assert_allclose(w.producer.attrs["scale"], 2 * amax / 254, rtol=1e-6)
        out = [n for n in _nodes(module, "quantize", name)]
        assert len(out) == 1 and out[0].outputs[0].uses
        fq = q.get_layer(name).output_quant
        scale, zp = _expected_params(fq.range_min.numpy(), fq.range_max.numpy())
        assert out[0].attrs["scale"][0] == pytest.approx(scale, rel=1e-6)
        assert out[0].attrs["zero_point"] == (zp,)
        (dq,) = [n for n, _ in out[0].outputs[0].uses]
        assert dq.op == "dequantize" and dq.attrs["scale"] == out[0].attrs["scale"]
    # Pass-through layers get no quantization of their own.
    assert not _nodes(module, "quantize", "pool") and not _nodes(module, "quantize", "flatten")
    out_scale = _nodes(module, "quantize", "fc")[0].attrs["scale"][0]
    _assert_matches_keras(module, q, x, out_scale)


def test_canonicalize_keeps_int8_weights_and_qdq(trained_seq, digits):
    q, _, _ = trained_seq
    x, _ = digits
    module = tensorforge.from_keras(q)
    before = run_module(module, [x[:200]])[0]
    PassManager.parse("canonicalize").run(module)
    verify_module(module)
    for node in _nodes(module, "dequantize"):
        src = node.inputs[0].producer
        assert src.op in ("quantize", "constant")
        if src.op == "constant":
            assert node.inputs[0].type.dtype == DType.i8 and node.inputs[0].quant is not None
    # No quantize of a constant survives: weights are int8 constants.
    assert all(_producer_op(n.inputs[0]) != "constant" for n in _nodes(module, "quantize"))
    assert len(_nodes(module, "quantize")) == 4 and len(_nodes(module, "dequantize")) == 7
    (conv,) = _nodes(module, "conv2d")
    assert conv.attrs["activation"] == "relu" and len(conv.inputs) == 3   # bias+relu fused
    np.testing.assert_array_equal(run_module(module, [x[:200]])[0], before)


def test_functional_add_concat_einsum(float_func, digits):
    x, y = digits
    keras.utils.set_random_seed(3)
    q = apply_quantization_on_model(float_func)
    assert isinstance(q.get_layer("add"), QATAdd)
    assert isinstance(q.get_layer("cat"), QATConcatenate)
    assert isinstance(q.get_layer("head"), QATEinsumDense)
    assert isinstance(q.get_layer("image_quant"), FakeQuant)
    q.fit(x[:32], y[:32], epochs=1, batch_size=32, verbose=0)
    before = _loss(q, x, y)
    q.fit(x, y, epochs=1, batch_size=32, verbose=0)
    assert _loss(q, x, y) < before
    module = tensorforge.from_keras(q)
    verify_module(module)
    # The model input and each of conv_a, conv_b, add, cat, head has its own QDQ.
    scopes = sorted(n.scope for n in _nodes(module, "quantize"))
    assert scopes == ["add", "cat", "conv_a", "conv_b", "head", "image_quant"]
    (add,) = _nodes(module, "add", "add")
    assert all(_producer_op(v) == "dequantize" for v in add.inputs)
    (qa,) = _nodes(module, "quantize", "add")
    assert qa.inputs[0] is add.outputs[0]
    out_scale = _nodes(module, "quantize", "head")[0].attrs["scale"][0]
    _assert_matches_keras(module, q, x, out_scale)


# -- configuration -----------------------------------------------------------------------------

@dataclass
class _QC:
    bits: int = 8
    symmetric: bool = True
    granularity: str = "per_channel"
    narrow_range: bool | None = True


class StandInConfigMap:
    """The one method of passes/quantize/config.py's QuantizationConfigurationMap that QAT
    uses: float layers -> (None, None); per-tensor layers get a per-tensor weight config."""

    def __init__(self, float_layers=(), per_tensor=()):
        self.float_layers, self.per_tensor = set(float_layers), set(per_tensor)
        self.calls = []

    def layer_configuration(self, layer_path, op_type):
        self.calls.append((layer_path, op_type))
        if layer_path in self.float_layers:
            return None, None
        act = _QC(symmetric=False, granularity="per_tensor", narrow_range=False)
        if op_type in ("input", "add", "concat"):
            return None, act
        if layer_path in self.per_tensor:
            return _QC(granularity="per_tensor"), act
        return _QC(), act


def test_config_map_overrides(float_seq, digits):
    x, y = digits
    cfg = StandInConfigMap(float_layers={"fc"}, per_tensor={"conv1"})
    q = apply_quantization_on_model(float_seq, cfg)
    assert sorted(cfg.calls) == [("conv1", "conv2d"), ("dw", "depthwise_conv2d"),
                                 ("fc", "matmul"), ("input_layer", "input")]
    assert type(q.get_layer("fc")) is keras.layers.Dense
    q.fit(x[:256], y[:256], epochs=1, batch_size=32, verbose=0)
    module = tensorforge.from_keras(q)
    assert not _nodes(module, "quantize", "fc") and not _nodes(module, "dequantize", "fc")
    (mm,) = _nodes(module, "matmul", "fc")
    assert _producer_op(mm.inputs[1]) == "constant" and mm.inputs[1].type.dtype == DType.f32
    (conv,) = _nodes(module, "conv2d", "conv1")
    wdq = conv.inputs[1].producer
    assert wdq.op == "dequantize" and wdq.attrs["axis"] is None and len(wdq.attrs["scale"]) == 1
    amax = np.abs(q.get_layer("conv1").kernel.numpy()).max()
    assert wdq.attrs["scale"][0] == pytest.approx(2 * amax / 254, rel=1e-6)
    dw = _nodes(module, "depthwise_conv2d", "dw")[0].inputs[1].producer
    assert dw.attrs["axis"] == 2
    out_scale = _nodes(module, "quantize", "dw")[0].attrs["scale"][0]
    ours, ref = run_module(module, [x[:256]])[0], _out(q, x[:256])
    # The float head scales a one-step difference of dw's output by at most |W|_1 per unit.
    bound = out_scale * np.abs(q.get_layer("fc").kernel.numpy()).sum(axis=0).max()
    assert np.abs(ours - ref).max() <= bound and np.mean(np.abs(ours - ref) <= 1e-5) > 0.99


def test_bad_settings_are_reported_together(float_seq):
    class Bad:
        def layer_configuration(self, layer_path, op_type):
            if op_type == "input":
                return None, _QC(granularity="per_channel", symmetric=False)
            return _QC(bits=32), None

    with pytest.raises(ConversionError) as e:
        apply_quantization_on_model(float_seq, Bad())
    text = str(e.value)
    assert "per-channel activation" in text and text.count("bits=32") == 3
    assert "'conv1'" in text and "'fc'" in text

    class Sub(keras.Model):
        def call(self, x):
            return x

    # A subclassed model is quantized in place (tests/test_quant_qat_subclassed.py); one that
    # was never called has no input shapes to trace it with.
    with pytest.raises(ConversionError, match="has not been called"):
        apply_quantization_on_model(Sub())


# -- the TF FakeQuant lowerings, op by op ------------------------------------------------------

def _lift(fn, *specs):
    concrete = tf.function(fn).get_concrete_function(*specs)
    names = [f"in{i}" for i in range(len(specs))]
    return lift_concrete_function(concrete, input_names=names, output_names=["out"])


@pytest.mark.parametrize("lo,hi,bits,narrow", [
    (-1.0, 1.0, 8, False), (-0.3, 2.7, 8, False), (0.2, 3.0, 8, False),   # min > 0: nudged
    (-3.0, -0.5, 8, True), (-1.7, 1.3, 8, True), (-2.0, 5.0, 16, False)])
def test_fake_quant_vars_and_args_match_tf(lo, hi, bits, narrow):
    rng = np.random.default_rng(7)
    x = (rng.standard_normal((4, 257)) * 3).astype(np.float32)
    spec = tf.TensorSpec([None, 257], tf.float32)
    lo_v, hi_v = tf.Variable(lo), tf.Variable(hi)

    def vars_fn(t):
        return tf.quantization.fake_quant_with_min_max_vars(t, lo_v, hi_v, num_bits=bits,
                                                            narrow_range=narrow)

    def args_fn(t):
        return tf.quantization.fake_quant_with_min_max_args(t, lo, hi, num_bits=bits,
                                                            narrow_range=narrow)

    for fn in (vars_fn, args_fn):
        module = _lift(fn, spec)
        qn, dq = list(module.main)
        assert (qn.op, dq.op) == ("quantize", "dequantize")
        assert qn.attrs["dtype"] == (DType.i8 if bits == 8 else DType.i16)
        assert qn.attrs["narrow_range"] == narrow
        scale, zp = _expected_params(lo, hi, bits, narrow)
        assert qn.attrs["scale"][0] == pytest.approx(scale, rel=1e-6)
        assert qn.attrs["zero_point"] == (zp,)
        ours, ref = run_module(module, [x])[0], fn(x).numpy()
        diff = np.abs(ours - ref)
        assert diff.max() <= scale * 1.001 and np.mean(diff <= 1e-5) > 0.99


def test_fake_quant_per_channel_matches_tf():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((5, 6, 16)).astype(np.float32)
    lo = -np.abs(rng.standard_normal(16)).astype(np.float32) - 0.1
    hi = np.abs(rng.standard_normal(16)).astype(np.float32) + 0.1
    lo_v, hi_v = tf.Variable(lo), tf.Variable(hi)

    def fn(t):
        return tf.quantization.fake_quant_with_min_max_vars_per_channel(t, lo_v, hi_v)

    module = _lift(fn, tf.TensorSpec([None, 6, 16], tf.float32))
    (qn,) = _nodes(module, "quantize")
    assert qn.attrs["axis"] == 2 and len(qn.attrs["scale"]) == 16
    want = signed_nudge(lo, hi, bits=8, narrow_range=False)
    assert list(qn.attrs["zero_point"]) == want[1].tolist()
    ours, ref = run_module(module, [x])[0], fn(x).numpy()
    diff = np.abs(ours - ref)
    assert diff.max() <= max(qn.attrs["scale"]) * 1.001 and np.mean(diff <= 1e-5) > 0.99


def test_fake_quant_errors_name_the_node():
    spec = tf.TensorSpec([None, 8], tf.float32)

    def dynamic(t):   # range computed from the data at run time: not liftable
        return tf.quantization.fake_quant_with_min_max_vars(
            t, tf.reduce_min(t), tf.reduce_max(t))

    with pytest.raises(ConversionError) as e:
        _lift(dynamic, spec)
    assert "FakeQuantWithMinMaxVars" in str(e.value) and "constant" in str(e.value)

    def four_bits(t):
        return tf.quantization.fake_quant_with_min_max_args(t, -1.0, 1.0, num_bits=4)

    with pytest.raises(ConversionError, match=r"num_bits=4 .*supported: 8, 16"):
        _lift(four_bits, spec)


# -- batch-norm folding in rebuilt models ------------------------------------------------------

def _functional_bn():
    inp = keras.Input((8, 8, 1), name="image")
    h = keras.layers.Conv2D(16, 3, padding="same", name="conv")(inp)
    h = keras.layers.BatchNormalization(name="bn")(h)
    h = keras.layers.ReLU(name="relu")(h)
    h = keras.layers.Flatten(name="flatten")(h)
    out = keras.layers.Dense(10, name="fc")(h)
    return keras.Model(inp, out, name="func_bn")


def test_functional_bn_folded_into_conv(digits, tmp_path):
    """conv -> BN -> ReLU -> flatten -> dense: BN is folded into the rebuilt conv during QAT
    (moving statistics, as tfmot), so the int8 artifact has no batch-norm arithmetic and
    computes what was trained."""
    litert = pytest.importorskip("ai_edge_litert.interpreter")
    from op_helpers import tflite_ops
    from tensorforge import quantization as tq
    from tensorforge.qat.keras_inplace import QATFoldedBatchNormalization

    x, y = digits
    idx = np.random.default_rng(0).permutation(len(x))
    x, y = x[idx], y[idx]
    xtr, ytr, xte, yte = x[:1440], y[:1440], x[1440:], y[1440:]
    keras.utils.set_random_seed(0)
    m = _compile(_functional_bn())
    m.fit(xtr, ytr, epochs=3, batch_size=32, verbose=0)
    float_acc = float(np.mean(np.argmax(_out(m, xte), -1) == yte))
    cfg = tq.QuantizationConfigurationMap(tq.scheme_registry.get_scheme("pixel_8bit_qat"))

    # fold_batch_norm=False keeps the old behaviour: a separate float batch norm.
    unfolded = apply_quantization_on_model(m, cfg, fold_batch_norm=False)
    assert type(unfolded.get_layer("bn")) is keras.layers.BatchNormalization
    assert getattr(unfolded.get_layer("conv"), "_folded_bn", None) is None

    q = apply_quantization_on_model(m, cfg)
    conv, bn = q.get_layer("conv"), q.get_layer("bn")
    assert type(conv) is QATConv2D and type(bn) is QATFoldedBatchNormalization
    assert conv._folded_bn is bn and bn.output_quant is None
    for name in ("gamma", "beta", "moving_mean", "moving_variance"):     # copied
        np.testing.assert_array_equal(getattr(bn, name).numpy(),
                                      getattr(m.get_layer("bn"), name).numpy())
    var_before = bn.moving_variance.numpy().copy()
    q.fit(xtr, ytr, epochs=2, batch_size=32, verbose=0)
    assert not np.allclose(bn.moving_variance.numpy(), var_before)    # follows the batches
    ref = _out(q, xte)

    # A saved and reloaded model folds again (the link is remade when its graph is built).
    q.save(tmp_path / "qat_bn.keras")
    with scope():
        loaded = keras.models.load_model(tmp_path / "qat_bn.keras")
    assert loaded.get_layer("conv")._folded_bn is loaded.get_layer("bn")
    np.testing.assert_array_equal(_out(loaded, xte), ref)

    path = tmp_path / "qat_bn.tflite"
    tensorforge.convert(q, target="tflite", output=str(path), progress=False)
    ops = set(tflite_ops(path))
    assert not ops & {"MUL", "ADD", "SUB", "RSQRT", "BATCH_NORMALIZATION"}, ops
    assert ops <= {"QUANTIZE", "DEQUANTIZE", "CONV_2D", "RELU", "RESHAPE",
                   "FULLY_CONNECTED"}, ops
    it = litert.Interpreter(str(path))
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    it.resize_tensor_input(inp["index"], xte.shape)
    it.allocate_tensors()
    it.set_tensor(inp["index"], xte)
    it.invoke()
    got = it.get_tensor(out["index"])
    qat_acc = float(np.mean(np.argmax(ref, -1) == yte))
    int8_acc = float(np.mean(np.argmax(got, -1) == yte))
    print(f"float {float_acc:.4f}  qat {qat_acc:.4f}  int8 litert {int8_acc:.4f}")
    assert qat_acc > 0.9
    assert abs(int8_acc - qat_acc) <= 0.005


def test_sequential_bn_fold_pairs():
    """In a Sequential model the batch norm right after a conv/dense without activation is
    folded; one after a conv with its own activation is not."""
    from tensorforge.qat.keras_inplace import QATFoldedBatchNormalization

    m = keras.Sequential([
        keras.Input((8, 8, 1)),
        keras.layers.Conv2D(4, 3, name="c1"),
        keras.layers.BatchNormalization(name="bn1"),
        keras.layers.Conv2D(4, 3, activation="relu", name="c2"),
        keras.layers.BatchNormalization(name="bn2"),
        keras.layers.Flatten(name="flatten"),
        keras.layers.Dense(10, name="fc"),
        keras.layers.BatchNormalization(name="bn3"),
    ], name="seq_bn")
    q = apply_quantization_on_model(m)
    assert type(q.get_layer("bn1")) is QATFoldedBatchNormalization
    assert q.get_layer("c1")._folded_bn is q.get_layer("bn1")
    assert type(q.get_layer("bn2")) is keras.layers.BatchNormalization
    assert type(q.get_layer("bn3")) is QATFoldedBatchNormalization
    assert q.get_layer("fc")._folded_bn is q.get_layer("bn3")
    x = np.random.default_rng(0).random((4, 8, 8, 1)).astype(np.float32)
    assert _out(q, x).shape == (4, 10)
