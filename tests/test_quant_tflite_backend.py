"""TFLite backend, quantized IR (integer form, ir/quantized.py): static int8 and int16x8
graphs, hybrid (dynamic-range) conv/depthwise/FC, weight-only int8/int4 DEQUANTIZE and int8
model I/O, each written by write_tflite, run in LiteRT and compared with the IR interpreter;
plus the flatbuffer's quantization params, weight buffer sizes, op versions and the errors
for params an int8 kernel cannot honour."""

from __future__ import annotations

import numpy as np
import pytest
from ai_edge_litert import schema_py_generated as fb
from ai_edge_litert.interpreter import Interpreter, OpResolverType

from tensorforge.backends.tflite import write_tflite
from tensorforge.ir import ConversionError, DType, Graph, Module, TensorType
from tensorforge.ir.interpreter import run_graph
from tensorforge.ir.quantized import dequantize_array
from tensorforge.ir.types import QuantParams

I8, I16 = DType.i8, DType.i16
TYPE_NAMES = {v: k for k, v in vars(fb.TensorType).items() if not k.startswith("_")}
OP_NAMES = {v: k for k, v in vars(fb.BuiltinOperator).items() if not k.startswith("_")}


def rand(*shape, seed=0, scale=1.0):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


# -- building quantized graphs by hand ---------------------------------------------------------

def act_params(lo: float, hi: float, dtype: DType = I8) -> QuantParams:
    """Per-tensor activation params covering [lo, hi]: asymmetric int8, symmetric int16."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    if dtype == I16:
        return QuantParams((max(abs(lo), abs(hi), 1e-6) / 32767,), (0,), bits=16)
    scale = max(hi - lo, 1e-6) / 255
    return QuantParams((scale,), (int(np.clip(round(-128 - lo / scale), -128, 127)),))


def set_q(value, dtype: DType, qp: QuantParams):
    """Marks a node result quantized (integer form): storage dtype plus params."""
    value.type = value.type.with_dtype(dtype)
    value.quant = qp
    return value


def calibrated(g: Graph, value, feeds, dtype: DType = I8):
    """Quantizes `value` with params from its real range on `feeds` (a one-batch
    calibration: the graph so far is run with `value` as its output)."""
    g.set_outputs([value])
    r = run_graph(g, feeds)[0]
    return set_q(value, dtype, act_params(float(r.min()), float(r.max()), dtype))


def weight_const(g: Graph, w: np.ndarray, axis: int | None, name: str, bits: int = 8):
    """A constant of symmetric narrow-range codes (per-channel on `axis`) with its params."""
    qmax = (1 << (bits - 1)) - 1
    if axis is None:
        scale = np.array([np.abs(w).max() / qmax])
        shaped = scale.reshape((1,) * w.ndim)
    else:
        red = tuple(i for i in range(w.ndim) if i != axis)
        scale = np.abs(w).max(axis=red) / qmax
        shaped = np.expand_dims(scale, red)
    codes = np.clip(np.round(w / shaped), -qmax, qmax).astype(np.int64)
    dtype = {8: DType.i8, 4: DType.i4}[bits]
    v = g.constant(codes.astype(dtype.np), name)
    v.quant = QuantParams(tuple(scale), (0,) * scale.size, axis, bits=bits, narrow_range=True)
    return v


def bias_const(g: Graph, b: np.ndarray, x, w, name: str, dtype: DType = DType.i32):
    """int32 (int64 for int16x8) bias codes of scale s_in * s_w[c], zp 0."""
    scale = x.quant.scale[0] * np.asarray(w.quant.scale)
    scale = np.broadcast_to(scale, b.shape)
    v = g.constant(np.round(b / scale).astype(dtype.np), name)
    v.quant = QuantParams(tuple(scale), (0,) * b.size, 0, bits=dtype.bits)
    return v


# -- running and inspecting ---------------------------------------------------------------------

# Every model runs three ways: the default (XNNPACK delegate), TFLite's optimized builtin
# kernels without it, and the reference kernels; each must load and agree with the IR.
RESOLVERS = (OpResolverType.AUTO, OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
             OpResolverType.BUILTIN_REF)


def run_all(data: bytes, inputs) -> list[list[np.ndarray]]:
    """The outputs under each of RESOLVERS."""
    return [run_tflite(data, inputs, r) for r in RESOLVERS]


def run_tflite(data: bytes, inputs, resolver=OpResolverType.AUTO) -> list[np.ndarray]:
    interp = Interpreter(model_content=data, experimental_op_resolver_type=resolver)
    interp.allocate_tensors()
    for d, x in zip(interp.get_input_details(), inputs):
        interp.set_tensor(d["index"], x)
    interp.invoke()
    return [interp.get_tensor(d["index"]) for d in interp.get_output_details()]


def steps(got: np.ndarray, ref: np.ndarray, qp: QuantParams | None = None) -> float:
    """Largest difference in quantization steps (codes, or dequantized floats / scale)."""
    diff = np.abs(got.astype(np.float64) - ref.astype(np.float64))
    return float(diff.max() / (qp.scale[0] if qp is not None else 1.0)) if diff.size else 0.0


def compare(g: Graph, feeds, max_steps: float = 1.0) -> tuple[bytes, list[float]]:
    """Writes `g`, runs LiteRT and the IR interpreter; every quantized (or dequantized) output
    must agree within `max_steps` steps. Returns the model and the steps per output."""
    data = write_tflite(Module([g]))
    ref = run_graph(g, feeds)
    seen = [0.0] * len(ref)
    for resolver, got in zip(RESOLVERS, run_all(data, feeds)):
        for i, (out, r, o) in enumerate(zip(g.outputs, ref, got)):
            assert o.dtype == r.dtype and o.shape == r.shape, (o.dtype, o.shape, r.dtype,
                                                               r.shape)
            qp = out.quant
            if qp is None and out.producer is not None and out.producer.op == "dequantize":
                qp = out.producer.inputs[0].quant
            s = steps(o, r, None if out.quant is not None else qp)
            seen[i] = max(seen[i], s)
            assert s <= max_steps, f"{resolver.name}: {out}: {s} steps apart"
    return data, seen


def model_of(data: bytes) -> fb.ModelT:
    return fb.ModelT.InitFromPackedBuf(data, 0)


def opcodes(data: bytes) -> dict[str, int]:
    return {OP_NAMES[c.builtinCode]: c.version for c in model_of(data).operatorCodes}


def operators(data: bytes):
    """[(builtin name, [input TensorT], [output TensorT])] of subgraph 0."""
    m = model_of(data)
    sub = m.subgraphs[0]
    t = lambda i: sub.tensors[i] if i >= 0 else None  # noqa: E731
    return [(OP_NAMES[m.operatorCodes[op.opcodeIndex].builtinCode],
             [t(i) for i in op.inputs], [t(i) for i in op.outputs]) for op in sub.operators]


def the_op(data: bytes, name: str):
    found = [op for op in operators(data) if op[0] == name]
    assert len(found) == 1, (name, [op[0] for op in operators(data)])
    return found[0]


def buffer_size(data: bytes, tensor: fb.TensorT) -> int:
    return len(model_of(data).buffers[tensor.buffer].data)


def assert_quant(tensor: fb.TensorT, dtype: str, qp: QuantParams, axis: int = 0):
    assert TYPE_NAMES[tensor.type] == dtype, (tensor.name, TYPE_NAMES[tensor.type])
    q = tensor.quantization
    np.testing.assert_allclose(q.scale, qp.scale, rtol=1e-6)
    assert list(q.zeroPoint) == list(qp.zero_point)
    assert q.quantizedDimension == axis


# -- static int8 ---------------------------------------------------------------------------------

def int8_cnn(x: np.ndarray):
    """quantize -> conv2d(relu6) -> depthwise(relu) -> avg pool -> max pool -> reshape ->
    matmul -> softmax -> dequantize, with per-channel int8 weights and int32 biases."""
    g = Graph()
    feeds = [x]
    xi = g.add_input(TensorType(DType.f32, x.shape), "image")
    xq = set_q(g.add("quantize", [xi], {"scale": (4 / 255,), "zero_point": (1,)}).output,
               I8, QuantParams((4 / 255,), (1,)))
    w1 = weight_const(g, rand(3, 3, 3, 8, seed=1, scale=0.3), 3, "conv_w")
    b1 = bias_const(g, rand(8, seed=2, scale=0.2), xq, w1, "conv_b")
    h = g.add("conv2d", [xq, w1, b1], {"strides": (1, 1), "padding": "SAME",
                                       "activation": "relu6"}, scope="conv").output
    h = set_q(h, I8, QuantParams((6 / 255,), (-128,)))
    w2 = weight_const(g, rand(3, 3, 8, 1, seed=3, scale=0.4), 2, "dw_w")
    b2 = bias_const(g, rand(8, seed=4, scale=0.1), h, w2, "dw_b")
    h = calibrated(g, g.add("depthwise_conv2d", [h, w2, b2],
                            {"strides": (2, 2), "padding": "SAME", "activation": "relu"},
                            scope="dw").output, feeds)
    pool = {"ksize": (2, 2), "strides": (2, 2), "padding": "VALID"}
    h = set_q(g.add("avg_pool2d", [h], pool).output, I8, h.quant)
    h = set_q(g.add("max_pool2d", [h], {**pool, "ksize": (1, 1), "strides": (1, 1)}).output,
              I8, h.quant)
    h = set_q(g.add("reshape", [h], {"shape": (x.shape[0], -1)}).output, I8, h.quant)
    w3 = weight_const(g, rand(h.type.shape[1], 10, seed=5, scale=0.3), 1, "fc_w")
    b3 = bias_const(g, rand(10, seed=6, scale=0.1), h, w3, "fc_b")
    logits = calibrated(g, g.add("matmul", [h, w3, b3], scope="fc").output, feeds)
    probs = set_q(g.add("softmax", [logits]).output, I8, QuantParams((1 / 256,), (-128,)))
    out = g.add("dequantize", [probs], {"scale": (1 / 256,), "zero_point": (-128,)}).output
    return g, feeds, (w1, b1, w2, b2, w3, b3, logits, probs, out)


def test_int8_cnn_matches_ir_and_carries_params():
    x = rand(2, 8, 8, 3, seed=0)
    g, feeds, (w1, b1, w2, b2, w3, b3, logits, probs, out) = int8_cnn(x)
    conv_out = g.nodes[[n.op for n in g.nodes].index("conv2d")].output
    g.set_outputs([conv_out, logits, probs, out])
    data, seen = compare(g, feeds, max_steps=2.0)
    # The conv (first quantized op) is within one step; later ones may inherit the
    # difference of their inputs.
    assert seen[0] <= 1.0, seen

    _, (xin, w, b), (y,) = the_op(data, "CONV_2D")
    assert_quant(xin, "INT8", QuantParams((4 / 255,), (1,)))
    # HWIO axis 3 -> OHWI axis 0, re-laid codes with the same per-channel params.
    assert_quant(w, "INT8", w1.quant, axis=0)
    assert_quant(b, "INT32", b1.quant, axis=0)
    assert_quant(y, "INT8", QuantParams((6 / 255,), (-128,)))
    assert buffer_size(data, w) == w1.const.size   # one byte per code
    assert buffer_size(data, w) * 4 == w1.const.astype(np.float32).nbytes
    assert buffer_size(data, b) == b1.const.nbytes

    _, (_, wd, bd), _ = the_op(data, "DEPTHWISE_CONV_2D")
    assert list(wd.shape) == [1, 3, 3, 8]
    assert_quant(wd, "INT8", w2.quant, axis=3)    # IR axis 2 -> TFLite axis 3
    assert_quant(bd, "INT32", b2.quant)
    _, (_, wf, _), (yf,) = the_op(data, "FULLY_CONNECTED")
    assert list(wf.shape) == [10, w3.type.shape[0]]
    assert_quant(wf, "INT8", w3.quant, axis=0)    # [K,N] axis 1 -> [N,K] axis 0
    assert_quant(yf, "INT8", logits.quant)
    assert buffer_size(data, wf) * 4 == w3.const.astype(np.float32).nbytes
    _, _, (ys,) = the_op(data, "SOFTMAX")
    assert_quant(ys, "INT8", QuantParams((1 / 256,), (-128,)))

    # op_version.cc: int8 CONV_2D 3, DEPTHWISE 3, FULLY_CONNECTED 4, pools/softmax 2.
    assert opcodes(data) == {"QUANTIZE": 1, "CONV_2D": 3, "DEPTHWISE_CONV_2D": 3,
                             "AVERAGE_POOL_2D": 2, "MAX_POOL_2D": 2, "RESHAPE": 1,
                             "FULLY_CONNECTED": 4, "SOFTMAX": 2, "DEQUANTIZE": 2}


def test_int8_model_io_without_quantize_ops():
    """Graph input and output themselves int8 quantized (int8 model I/O)."""
    qin = QuantParams((0.05,), (-3,))
    g = Graph()
    x = g.add_input(TensorType(I8, (2, 6, 6, 4)), "x", quant=qin)
    w = weight_const(g, rand(3, 3, 4, 5, seed=7, scale=0.3), 3, "w")
    b = bias_const(g, rand(5, seed=8, scale=0.1), x, w, "b")
    codes = np.random.default_rng(9).integers(-128, 128, (2, 6, 6, 4)).astype(np.int8)
    y = calibrated(g, g.add("conv2d", [x, w, b], {"padding": ((1, 0), (0, 2)),
                                                  "activation": "none"}).output, [codes])
    g.set_outputs([y])
    data, seen = compare(g, [codes])
    sub = model_of(data).subgraphs[0]
    assert_quant(sub.tensors[sub.inputs[0]], "INT8", qin)
    assert_quant(sub.tensors[sub.outputs[0]], "INT8", y.quant)
    assert set(opcodes(data)) == {"PAD", "CONV_2D"}  # explicit padding: int8 PAD, VALID conv
    assert opcodes(data)["PAD"] == 2


def _one_op(op, arrays, attrs=None, *, out_q=None, consts=(), in_q=None):
    """`op` on int8 graph inputs (params from each array's range) and int8 constants; the
    result gets `out_q`, `"same"` (the first input's params) or calibrated ones."""
    g = Graph()
    codes, ins = [], []
    for i, a in enumerate(arrays):
        qp = in_q or act_params(float(a.min()), float(a.max()))
        c = np.clip(np.round(a / qp.scale[0]) + qp.zero_point[0], -128, 127).astype(np.int8)
        codes.append(c)
        ins.append(g.add_input(TensorType(I8, a.shape), f"x{i}", quant=qp))
    for i, a in enumerate(consts):
        qp = act_params(float(a.min()), float(a.max()))
        v = g.constant(np.clip(np.round(a / qp.scale[0]) + qp.zero_point[0], -128, 127)
                       .astype(np.int8), f"c{i}")
        v.quant = qp
        ins.append(v)
    y = g.add(op, ins, attrs or {}).output
    if out_q == "same":
        set_q(y, I8, ins[0].quant)
    elif out_q is not None:
        set_q(y, I8, out_q)
    else:
        calibrated(g, y, codes)
    g.set_outputs([y])
    return g, codes


A = rand(2, 5, 5, 6, seed=11)
B = rand(2, 5, 5, 6, seed=12) * 0.5
SAME_P = act_params(-3.0, 3.0)
INT8_OPS = {
    "add": ("add", [A, B], {}, None, (), None),
    "add-const": ("add", [A], {}, None, (rand(6, seed=13),), None),
    "mul": ("mul", [A, B], {}, None, (), None),
    "concat": ("concat", [A, B], {"axis": -1}, "same", (), SAME_P),
    "mean": ("reduce_mean", [A], {"axes": (1, 2), "keepdims": True}, None, (), None),
    "pad": ("pad", [A], {"pads": ((0, 0), (1, 2), (2, 1), (0, 0))}, "same", (), None),
    "pad-value": ("pad", [A], {"pads": ((0, 0), (1, 1), (0, 0), (0, 0)), "value": 0.5},
                  "same", (), None),
    "resize-bilinear": ("resize", [A], {"size": (9, 7), "method": "bilinear"}, "same", (),
                        None),
    "resize-nearest": ("resize", [A], {"size": (10, 10), "method": "nearest"}, "same", (),
                       None),
    "transpose": ("transpose", [A], {"perm": (0, 3, 1, 2)}, "same", (), None),
    "strided_slice": ("strided_slice", [A], {"begin": (0, 1, 0, 1), "end": (2, 5, 5, 6),
                                             "strides": (1, 2, 1, 2)}, "same", (), None),
    "relu": ("relu", [A], {}, None, (), None),
    "relu6": ("relu6", [A * 4], {}, None, (), None),
    "tanh": ("tanh", [A], {}, QuantParams((1 / 128,), (0,)), (), None),
    "sigmoid": ("sigmoid", [A * 3], {}, QuantParams((1 / 256,), (-128,)), (), None),
    "hard_swish": ("hard_swish", [A * 3], {}, None, (), None),
    "avg_pool": ("avg_pool2d", [A], {"ksize": (3, 3), "strides": (2, 2), "padding": "SAME"},
                 "same", (), None),
}
INT8_VERSIONS = {"ADD": 2, "MUL": 2, "CONCATENATION": 2, "MEAN": 2, "PAD": 2, "PADV2": 2,
                 "RESIZE_BILINEAR": 2, "RESIZE_NEAREST_NEIGHBOR": 2, "TRANSPOSE": 2,
                 "STRIDED_SLICE": 2, "RELU": 2, "RELU6": 2, "TANH": 2, "LOGISTIC": 2,
                 "HARD_SWISH": 1, "AVERAGE_POOL_2D": 2}


@pytest.mark.parametrize("case", sorted(INT8_OPS))
def test_int8_op_matches_ir_within_one_step(case):
    op, arrays, attrs, out_q, consts, in_q = INT8_OPS[case]
    g, codes = _one_op(op, arrays, attrs, out_q=out_q, consts=consts, in_q=in_q)
    data, seen = compare(g, codes, max_steps=1.0)
    ((name, ins, outs),) = operators(data)
    assert TYPE_NAMES[outs[0].type] == "INT8" and TYPE_NAMES[ins[0].type] == "INT8"
    assert opcodes(data) == {name: INT8_VERSIONS[name]}


@pytest.mark.parametrize("op,attrs,requirement", [
    ("max_pool2d", {"ksize": (2, 2), "strides": (2, 2)}, "same quantization params"),
    ("reshape", {"shape": (2, -1)}, "same quantization params"),
    ("tanh", {}, "fixed output params: scale 0.0078125 zero point 0"),
    ("softmax", {}, "fixed output params: scale 0.00390625 zero point -128"),
])
def test_int8_params_the_kernel_cannot_honour_run_in_float(op, attrs, requirement):
    """Params the integer kernel cannot honour: the op runs in float between DEQUANTIZE and
    QUANTIZE (the integer form's meaning), says why, and matches the IR."""
    g, codes = _one_op(op, [A], attrs, out_q=QuantParams((0.1,), (3,)))
    notes = []
    write_tflite(Module([g]), notes=notes)
    assert len(notes) == 1 and requirement in notes[0] and "runs in float" in notes[0]
    data, _ = compare(g, codes, max_steps=1.0)
    assert {"DEQUANTIZE", "QUANTIZE"} <= set(opcodes(data))


def test_scales_too_far_apart_for_the_kernel_run_in_float():
    """An add whose operands' scales differ by 1e12 (calibration of an unrolled solver):
    TFLite's ADD cannot rescale that far (its Prepare aborts the process), so the writer runs it
    in float, says why, and the artifact still matches the IR."""
    g, codes = _one_op("add", [A, B * 1e12], out_q=act_params(-5e11, 5e11))
    notes = []
    write_tflite(Module([g]), notes=notes)
    assert len(notes) == 1 and "scales span a factor of" in notes[0], notes
    data, _ = compare(g, codes, max_steps=1.0)
    assert {"DEQUANTIZE", "QUANTIZE", "ADD"} <= set(opcodes(data))


def test_quantized_forms_without_integer_kernels_run_in_float():
    g = Graph()
    x = g.add_input(TensorType(I8, (2, 4)), "x", quant=QuantParams((0.1,), (0,)))
    e = set_q(g.add("exp", [x], names=["e"]).output, I8, QuantParams((0.1,), (0,)))
    w = g.constant(np.ones((4, 3), np.float32), "w")
    m = g.add("matmul", [x, w], names=["m"]).output   # quantized activation, float weight
    g.set_outputs([e, m])
    notes = []
    write_tflite(Module([g]), notes=notes)
    text = "\n".join(notes)
    assert "%e = exp" in text and "'exp' has no TFLite integer" in text
    assert "%m = matmul" in text and "needs a quantized (int8)" in text
    compare(g, [np.arange(8, dtype=np.int8).reshape(2, 4)], max_steps=1.0)


# -- int16x8 ---------------------------------------------------------------------------------------

def test_int16x8_conv_fc_add():
    x = rand(1, 6, 6, 3, seed=20)
    g = Graph()
    feeds = [x]
    xi = g.add_input(TensorType(DType.f32, x.shape), "x")
    qx = act_params(-4.0, 4.0, I16)
    xq = set_q(g.add("quantize", [xi], {"scale": qx.scale, "zero_point": (0,),
                                        "dtype": I16}).output, I16, qx)
    w1 = weight_const(g, rand(3, 3, 3, 4, seed=21, scale=0.3), 3, "w1")
    b1 = bias_const(g, rand(4, seed=22, scale=0.2), xq, w1, "b1", DType.i64)
    h = calibrated(g, g.add("conv2d", [xq, w1, b1], {"padding": "SAME",
                                                     "activation": "relu"}).output, feeds, I16)
    h2 = set_q(g.add("add", [h, h]).output, I16, QuantParams((h.quant.scale[0] * 2,), (0,),
                                                           bits=16))
    r = set_q(g.add("reshape", [h2], {"shape": (1, -1)}).output, I16, h2.quant)
    w2 = weight_const(g, rand(144, 5, seed=23, scale=0.1), 1, "w2")
    b2 = bias_const(g, rand(5, seed=24, scale=0.1), r, w2, "b2", DType.i64)
    y = calibrated(g, g.add("matmul", [r, w2, b2]).output, feeds, I16)
    out = g.add("dequantize", [y], {"scale": y.quant.scale, "zero_point": (0,)}).output
    g.set_outputs([h, y, out])
    data, seen = compare(g, feeds, max_steps=2.0)
    assert seen[0] <= 1.0, seen
    _, (xin, w, b), (yc,) = the_op(data, "CONV_2D")
    assert_quant(xin, "INT16", qx)
    assert_quant(w, "INT8", w1.quant, axis=0)
    assert_quant(b, "INT64", b1.quant)
    assert_quant(yc, "INT16", h.quant)
    assert opcodes(data) == {"QUANTIZE": 2, "CONV_2D": 4, "ADD": 3, "RESHAPE": 1,
                             "FULLY_CONNECTED": 7, "DEQUANTIZE": 3}


# -- hybrid (dynamic range) ------------------------------------------------------------------------

def rel_err(got, ref) -> float:
    return float(np.abs(got - ref).max() / np.abs(ref).max())


@pytest.mark.parametrize("per_channel", [True, False])
def test_hybrid_conv_depthwise_fc(per_channel):
    x = rand(2, 8, 8, 4, seed=30)
    g = Graph()
    xi = g.add_input(TensorType(DType.f32, x.shape), "x")
    w1 = weight_const(g, rand(3, 3, 4, 6, seed=31, scale=0.3), 3 if per_channel else None, "w1")
    h = g.add("conv2d", [xi, w1, g.constant(rand(6, seed=32), "b1")],
              {"padding": "SAME", "activation": "relu"}).output
    w2 = weight_const(g, rand(3, 3, 6, 1, seed=33, scale=0.4), 2 if per_channel else None, "w2")
    h = g.add("depthwise_conv2d", [h, w2, g.constant(rand(6, seed=34), "b2")],
              {"padding": "VALID"}).output
    h = g.add("reshape", [h], {"shape": (2, -1)}).output
    w3 = weight_const(g, rand(216, 7, seed=35, scale=0.1), 1 if per_channel else None, "w3")
    y = g.add("matmul", [h, w3, g.constant(rand(7, seed=36), "b3")]).output
    g.set_outputs([y])
    data = write_tflite(Module([g]))
    (ref,) = run_graph(g, [x])
    for resolver, (got,) in zip(RESOLVERS, run_all(data, [x])):
        assert rel_err(got, ref) < 2e-2, (resolver.name, rel_err(got, ref))
    for name in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
        _, (xin, w, b), (yt,) = the_op(data, name)
        assert [TYPE_NAMES[t.type] for t in (xin, w, b, yt)] == \
            ["FLOAT32", "INT8", "FLOAT32", "FLOAT32"], name
    _, (_, w, _), _ = the_op(data, "CONV_2D")
    assert_quant(w, "INT8", w1.quant, axis=0)
    _, (_, wd, _), _ = the_op(data, "DEPTHWISE_CONV_2D")
    # The hybrid depthwise kernel reads one scale per channel: per-tensor params repeat.
    assert len(wd.quantization.scale) == 6 and wd.quantization.quantizedDimension == 3
    # op_version.cc: hybrid CONV_2D 2 (per-channel 5), DEPTHWISE 4 (per-channel 6, always
    # per channel here), FULLY_CONNECTED asymmetric-input hybrid 9 (per-channel 12).
    want = {"CONV_2D": 5 if per_channel else 2, "DEPTHWISE_CONV_2D": 6, "RESHAPE": 1,
            "FULLY_CONNECTED": 12 if per_channel else 9}
    assert opcodes(data) == want


# -- weight-only ---------------------------------------------------------------------------------

@pytest.mark.parametrize("bits", [8, 4])
def test_weight_only_dequantize_of_constant(bits):
    x = rand(3, 24, seed=40)
    wf = rand(24, 10, seed=41, scale=0.2)
    g = Graph()
    xi = g.add_input(TensorType(DType.f32, x.shape), "x")
    wq = weight_const(g, wf, 1, "w", bits=bits)
    deq = g.add("dequantize", [wq], {"scale": wq.quant.scale, "zero_point": wq.quant.zero_point,
                                     "axis": 1}).output
    g.set_outputs([g.add("matmul", [xi, deq]).output])
    data = write_tflite(Module([g]))
    (ref,) = run_graph(g, [x])
    if bits == 8:
        for (got,) in run_all(data, [x]):
            np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
        _, (w,), _ = the_op(data, "DEQUANTIZE")
        # The stored codes are re-laid out at compile time to FULLY_CONNECTED's [N, K]
        # (params on axis 0), and one DEQUANTIZE feeds the FC directly: no run-time
        # transpose.
        assert [op[0] for op in operators(data)] == ["DEQUANTIZE", "FULLY_CONNECTED"]
        assert opcodes(data)["DEQUANTIZE"] == 5
    else:
        # int4: FULLY_CONNECTED reads the packed codes itself (LiteRT's int4 kernel, which
        # quantizes the activations per row at run time: close to, not exactly, float).
        for (got,) in run_all(data, [x]):
            np.testing.assert_allclose(got, ref, rtol=0, atol=0.02 * np.abs(ref).max())
        _, ins, _ = the_op(data, "FULLY_CONNECTED")
        w = ins[1]
        assert [op[0] for op in operators(data)] == ["FULLY_CONNECTED"]
    assert_quant(w, {8: "INT8", 4: "INT4"}[bits], wq.quant, axis=0)
    assert list(w.shape) == [10, 24]
    # int8: a quarter of the float bytes; int4: packed two per byte, an eighth.
    assert buffer_size(data, w) * (32 // bits) == wf.nbytes


def test_int4_packing_order_roundtrips_through_litert():
    """Odd element count, every code: LiteRT's DEQUANTIZE reads what pack_int4 wrote."""
    codes = np.array([-8, -7, -1, 0, 1, 7, 3, -4, 5], np.int8)
    g = Graph()
    c = g.constant(codes.astype(DType.i4.np), "c")
    g.set_outputs([g.add("dequantize", [c], {"scale": (0.5,), "zero_point": (0,)}).output])
    data = write_tflite(Module([g]))
    for (got,) in run_all(data, []):
        np.testing.assert_array_equal(got, dequantize_array(codes, QuantParams((0.5,), (0,))))


@pytest.mark.parametrize("src,dst", [(I8, I8), (I16, I8), (I8, I16)])
def test_requantize_is_a_quantize_of_codes(src, dst):
    """`quantize` of a quantized value (lower-quantized's requantize) is a QUANTIZE of codes."""
    qin = act_params(-2.0, 3.0, src)
    qout = act_params(-1.5, 1.5, dst)
    g = Graph()
    x = g.add_input(TensorType(src, (3, 7)), "x", quant=qin)
    y = g.add("quantize", [x], {"scale": qout.scale, "zero_point": qout.zero_point,
                                "dtype": dst}).output
    set_q(y, dst, qout)
    g.set_outputs([y])
    info = np.iinfo(src.np)
    codes = np.random.default_rng(50).integers(info.min, info.max + 1, (3, 7)).astype(src.np)
    data, seen = compare(g, [codes], max_steps=1.0)
    assert opcodes(data) == {"QUANTIZE": 2 if dst == I16 else 1}
