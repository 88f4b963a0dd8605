"""Blockwise int4 weight-only quantization (granularity="blockwise"): one symmetric scale per
(output channel, block of block_size input elements), stored in the IR as int4 codes
[N*K/B, B] read through dequantize -> reshape [N, K], and in TFLite as FULLY_CONNECTED's own
int4 [N, K] weight with BlockwiseQuantization details (float16 scales), LiteRT's blockwise
kernel. Checked end to end in LiteRT against
the IR interpreter, against per-channel int4 on weights with outliers, for its weight bytes,
in SavedModel (TF), and for the errors of a K that is not a multiple of B and of unsupported
ops / schemes."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from ai_edge_litert import schema_py_generated as fb
from ai_edge_litert.interpreter import Interpreter

import tensorforge
from tensorforge.ir import ConversionError, DType, Graph, Module, TensorType
from tensorforge.quantization import (LayerConfiguration, QuantizationConfiguration,
                                      QuantizationConfigurationMap)

OP_NAMES = {v: k for k, v in vars(fb.BuiltinOperator).items() if not k.startswith("_")}


def blockwise_cfg(block_size=32, scheme="int4-weight", granularity="blockwise"):
    """The int4-weight scheme with every weight overridden to `granularity`."""
    cfg = QuantizationConfigurationMap(scheme)
    qc = QuantizationConfiguration(bits=4, symmetric=True, granularity=granularity,
                                   block_size=block_size if granularity == "blockwise" else None)
    cfg.set_config(".*", LayerConfiguration(weight_config=qc))
    return cfg


def outlier_weight(k, n, seed=0):
    """A [K, N] weight whose every output channel has one large outlier: per-channel int4
    spends its 7 levels on the outlier and rounds the other K-1 weights to 0, blockwise only
    the B-1 of the outlier's block (an SQNR gap of about 10*log10((K-1)/(B-1)) dB)."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((k, n)).astype(np.float32) * 0.05
    w[rng.integers(0, k, n), np.arange(n)] = 2.0
    return w


def matmul_module(w, transpose_b=False):
    """y = x @ w (or x @ w^T) with x [2, K]."""
    g = Graph()
    k = w.shape[1] if transpose_b else w.shape[0]
    x = g.add_input(TensorType(DType.f32, (2, k)), "x")
    y = g.add("matmul", [x, g.constant(w)], {"transpose_b": transpose_b}, scope="dense")
    g.set_outputs([y.output])
    return Module([g])


def dense_stack(k=256, hidden=256, out=32):
    """Keras Sequential of two Dense layers (encoder FFN style) with outlier weights."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8, k)), keras.layers.Dense(hidden, activation="relu"),
                              keras.layers.Dense(out)])
    for i, layer in enumerate(model.layers):
        kernel, bias = layer.get_weights()
        layer.set_weights([outlier_weight(*kernel.shape, seed=i), bias])
    return model


def run_litert(path, x):
    runner = Interpreter(model_path=str(path)).get_signature_runner("serving_default")
    (name,) = runner.get_input_details()
    return next(iter(runner(**{name: x}).values()))


def ops_and_weight_bytes(path):
    """(op names, bytes of the constants feeding FULLY_CONNECTED weights, following RESHAPE
    and DEQUANTIZE back to the stored constant)."""
    model = fb.ModelT.InitFromPackedBuf(open(path, "rb").read(), 0)
    sg = model.subgraphs[0]
    code = lambda op: OP_NAMES[model.operatorCodes[op.opcodeIndex].builtinCode]  # noqa: E731
    producers = {o: op for op in sg.operators for o in op.outputs}
    total = 0
    for op in sg.operators:
        if code(op) != "FULLY_CONNECTED":
            continue
        t = op.inputs[1]
        while t in producers and code(producers[t]) in ("RESHAPE", "DEQUANTIZE", "TRANSPOSE"):
            t = producers[t].inputs[0]
        data = model.buffers[sg.tensors[t].buffer].data
        total += 0 if data is None else len(data)
    return [code(op) for op in sg.operators], total


def sqnr(want, got):
    return 10 * np.log10(np.sum(want ** 2) / np.sum((got - want) ** 2))


@pytest.mark.parametrize("transpose_b", [False, True])
def test_matmul_blockwise_in_litert(tmp_path, transpose_b):
    w = outlier_weight(256, 48)
    wb = w.T.copy() if transpose_b else w
    x = np.random.default_rng(1).standard_normal((2, 256)).astype(np.float32)
    want = x @ w
    results = {}
    for gran in ("blockwise", "per_channel"):
        res = tensorforge.convert(matmul_module(wb, transpose_b), "tflite",
                                  tmp_path / f"{gran}.tflite", progress=False, verify=True,
                                  quantization=blockwise_cfg(32, granularity=gran))
        assert res.verification.ok, res.verification.table()
        results[gran] = res
    path = results["blockwise"].paths["tflite"]
    ops, nbytes = ops_and_weight_bytes(path)
    # The transpose is folded into the stored order: no TRANSPOSE, no BATCH_MATMUL, and
    # FULLY_CONNECTED reads the int4 blocks itself (no DEQUANTIZE into float memory).
    assert ops == ["FULLY_CONNECTED"], ops
    assert nbytes == 256 * 48 // 2          # int4 codes, two per byte
    model = fb.ModelT.InitFromPackedBuf(open(path, "rb").read(), 0)
    sg = model.subgraphs[0]
    weight = sg.tensors[sg.operators[0].inputs[1]]
    assert weight.type == fb.TensorType.INT4 and list(weight.shape) == [48, 256]
    details = weight.quantization.details
    assert weight.quantization.detailsType == fb.QuantizationDetails.BlockwiseQuantization
    assert details.blockSize == 32
    scales = sg.tensors[details.scales]
    assert scales.type == fb.TensorType.FLOAT16 and list(scales.shape) == [48, 256 // 32]
    got = {g: run_litert(r.paths["tflite"], x) for g, r in results.items()}
    s_block, s_chan = sqnr(want, got["blockwise"]), sqnr(want, got["per_channel"])
    print(f"matmul transpose_b={transpose_b}: SQNR blockwise {s_block:.1f} dB, "
          f"per-channel {s_chan:.1f} dB")
    assert s_block > s_chan + 5


def test_blockwise_params_layout():
    from tensorforge.passes.quantize.config import QuantizationConfigurationMap as QMap
    from tensorforge.passes.quantize.insert import QuantizationPlan

    w = outlier_weight(64, 8)
    module = matmul_module(w)
    cfg = blockwise_cfg(16)
    assert isinstance(cfg, QMap)
    plan = QuantizationPlan(module, cfg.resolve(module), cfg.scheme)
    report = plan.apply({})
    (qp,) = report.weights.values()
    assert qp.axis == 0 and len(qp.scale) == 8 * 64 // 16 and set(qp.zero_point) == {0}
    # Row r is output channel r // 4, input block r % 4.
    want = np.abs(w.T.reshape(8, 4, 16)).max(axis=2).reshape(-1) / 7
    # Each 4-bit scale is the float16 value at or just above max|w| / 7 (LiteRT's blockwise
    # kernel takes float16 scales).
    scale = np.asarray(qp.scale)
    np.testing.assert_array_equal(scale.astype(np.float16).astype(np.float32), scale)
    assert np.all(scale >= want.astype(np.float32)) and np.all(scale <= want * (1 + 2 ** -10))
    # (The float weight is left dead for the pipeline's DCE.)
    ops = [n.op for n in module.main if n.op != "constant"]
    assert ops == ["dequantize", "reshape", "matmul"], ops
    assert module.main.nodes[-1].attrs["transpose_b"] is True


def test_dense_stack_blockwise(tmp_path):
    model = dense_stack()
    x = np.random.default_rng(2).uniform(-1, 1, (4, 8, 256)).astype(np.float32)
    want = model.predict(x, verbose=0)
    float_path = tensorforge.convert(model, "tflite", tmp_path / "float.tflite",
                                     progress=False).paths["tflite"]
    got, sizes = {}, {}
    for gran in ("blockwise", "per_channel"):
        res = tensorforge.convert(model, ["tflite", "savedmodel"], tmp_path / gran,
                                  quantization=blockwise_cfg(32, granularity=gran),
                                  progress=False, verify=True)
        assert res.verification.ok, res.verification.table()
        got[gran] = np.concatenate([run_litert(res.paths["tflite"], x[i:i + 1])
                                    for i in range(len(x))])
        sizes[gran] = ops_and_weight_bytes(res.paths["tflite"])
        if gran == "blockwise":
            import tensorflow as tf

            sm = tf.saved_model.load(str(res.paths["savedmodel"]))
            fn = sm.signatures["serving_default"]
            out = next(iter(fn(**{next(iter(fn.structured_input_signature[1])):
                                  tf.constant(x)}).values())).numpy()
            # TF computes with float activations; LiteRT's int4 kernel quantizes them per
            # row at run time: the same weights, activation rounding apart.
            assert sqnr(out, got[gran]) > 35
    ops, nbytes = sizes["blockwise"]
    assert ops.count("FULLY_CONNECTED") == 2 and "BATCH_MATMUL" not in ops, ops
    _, float_bytes = ops_and_weight_bytes(float_path)
    ratio = nbytes / float_bytes
    print(f"dense stack: SQNR blockwise {sqnr(want, got['blockwise']):.1f} dB, per-channel "
          f"{sqnr(want, got['per_channel']):.1f} dB, weight bytes ratio {ratio:.4f}")
    assert ratio == pytest.approx(1 / 8, rel=0.01)
    assert sqnr(want, got["blockwise"]) > sqnr(want, got["per_channel"]) + 5


def test_non_divisible_k_is_an_error(tmp_path):
    with pytest.raises(ConversionError) as err:
        tensorforge.convert(matmul_module(outlier_weight(40, 8)), "tflite",
                            tmp_path / "m.tflite", progress=False,
                            quantization=blockwise_cfg(32))
    msg = str(err.value)
    for part in ("K=40", "block_size B=32", "scope 'dense'", "matmul"):
        assert part in msg, msg


def test_blockwise_refused_for_conv_and_static(tmp_path):
    g = Graph()
    x = g.add_input(TensorType(DType.f32, (1, 8, 8, 32)), "x")
    f = np.random.default_rng(0).standard_normal((3, 3, 32, 8)).astype(np.float32)
    y = g.add("conv2d", [x, g.constant(f)], {"padding": "SAME"}, scope="conv")
    g.set_outputs([y.output])
    with pytest.raises(ConversionError, match="supported only for the weight of matmul"):
        tensorforge.convert(Module([g]), "tflite", tmp_path / "c.tflite", progress=False,
                            quantization=blockwise_cfg(32))
