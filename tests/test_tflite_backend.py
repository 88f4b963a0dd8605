"""TFLite backend: every lowered op runs in the real LiteRT interpreter and matches the IR
interpreter; plus the flatbuffer's structure (version, buffers, op codes and versions,
signature, metadata), symbolic batch, determinism, fp16 weights and error reporting."""

from __future__ import annotations

import flatbuffers
import numpy as np
import pytest
from ai_edge_litert import schema_py_generated as fb
from ai_edge_litert.interpreter import Interpreter

from tensorforge.backends.tflite import lower_problems, write_tflite
from tensorforge.ir import ConversionError, DType, Graph, Module, TensorType
from tensorforge.ir.interpreter import run_graph
from tensorforge.ir.ops import OpDef, has_op, register_op

RTOL = ATOL = 1e-5


from op_helpers import (BOOLS, HALVES, I32, IMG, POS, UNARY_OPS, X,  # noqa: E402,F401
                        rand, small_cnn_graph, ttype)


def run_tflite(data: bytes, inputs) -> list[np.ndarray]:
    """Runs a model in LiteRT, resizing each input to the array given."""
    interp = Interpreter(model_content=data)
    for d, x in zip(interp.get_input_details(), inputs):
        interp.resize_tensor_input(d["index"], list(x.shape))
    interp.allocate_tensors()
    for d, x in zip(interp.get_input_details(), inputs):
        interp.set_tensor(d["index"], x)
    interp.invoke()
    return [interp.get_tensor(d["index"]) for d in interp.get_output_details()]


def check(g: Graph, inputs, rtol=RTOL, atol=ATOL, **write_kw) -> bytes:
    """Writes `g`, runs it in LiteRT and compares every output with the IR interpreter."""
    data = write_tflite(Module([g]), **write_kw)
    ref = run_graph(g, inputs)
    got = run_tflite(data, inputs)
    assert len(got) == len(ref)
    for r, o in zip(ref, got):
        assert o.dtype == r.dtype and o.shape == r.shape, (o.dtype, o.shape, r.dtype, r.shape)
        np.testing.assert_allclose(o, r, rtol=rtol, atol=atol)
    return data


def model_of(data: bytes) -> fb.ModelT:
    return fb.ModelT.InitFromPackedBuf(data, 0)


def opcodes(data: bytes) -> dict[str, int]:
    """{builtin name: version} of a model's operator codes."""
    names = {v: k for k, v in vars(fb.BuiltinOperator).items() if not k.startswith("_")}
    return {names[c.builtinCode]: c.version for c in model_of(data).operatorCodes}


def op_graph(op, *arrays, consts=(), **attrs):
    """A graph applying `op` to graph inputs `arrays` followed by constants `consts`."""
    g = Graph()
    ins = [g.add_input(ttype(a), f"x{i}") for i, a in enumerate(arrays)]
    ins += [g.constant(c, f"c{i}") for i, c in enumerate(consts)]
    node = g.add(op, ins, attrs)
    g.set_outputs(node.outputs)
    return g, list(arrays)


# -- every op against the IR interpreter --------------------------------------------------------


UNARY = UNARY_OPS

CASES = {
    **{f"unary-{op}": (op, [X * 3], {}) for op in UNARY},
    **{f"unary-{op}": (op, [POS], {}) for op in ("log", "sqrt", "rsqrt")},
    "round-half-even": ("round", [HALVES], {}),
    "leaky_relu": ("leaky_relu", [X], {"alpha": 0.1}),
    "elu": ("elu", [X * 3], {}),
    "elu-alpha": ("elu", [X * 3], {"alpha": 0.5}),
    "gelu-erf": ("gelu", [X * 2], {}),
    "gelu-tanh": ("gelu", [X * 2], {"approximate": True}),
    "softplus-wide": ("softplus", [np.linspace(-30, 30, 61, dtype=np.float32)], {}),
    "erf-wide": ("erf", [np.linspace(-6, 6, 97, dtype=np.float32)], {}),
    "neg-i32": ("neg", [I32], {}), "abs-i32": ("abs", [I32], {}), "sign-i32": ("sign", [I32], {}),
    "logical_not": ("logical_not", [BOOLS], {}),
    "cast-f32-i32": ("cast", [X * 5], {"to": DType.i32}),
    "cast-i32-f32": ("cast", [I32], {"to": DType.f32}),
    "cast-f32-bool": ("cast", [np.round(X)], {"to": DType.bool}),
    "cast-bool-f32": ("cast", [BOOLS], {"to": DType.f32}),
    "clip-relu6": ("clip", [X * 8], {"min": 0.0, "max": 6.0}),
    "clip-n1-1": ("clip", [X * 2], {"min": -1.0, "max": 1.0}),
    "clip-relu": ("clip", [X], {"min": 0.0, "max": float("inf")}),
    "clip-any": ("clip", [X], {"min": -0.5, "max": 0.7}),
    "clip-min-only": ("clip", [X], {"min": -0.5, "max": float("inf")}),
    "clip-i32": ("clip", [I32], {"min": -2.0, "max": 3.0}),
    **{f"binary-{op}": (op, [X, rand(4, seed=2)], {})
       for op in ("add", "sub", "mul", "maximum", "minimum", "equal", "not_equal", "less",
                  "less_equal", "greater", "greater_equal")},
    "div": ("div", [X, rand(1, 3, 1, seed=3) + 3], {}),
    "pow": ("pow", [POS, rand(3, 4, seed=4)], {}),
    "add-i32": ("add", [I32, I32[:1]], {}),
    "div-i32-trunc": ("div", [I32, np.array([2, -3, 4, 3], np.int32)], {}),
    "abs-i64": ("abs", [I32.astype(np.int64)], {}),
    "top_k": ("top_k", [X], {"k": 2}),
    "gather_nd": ("gather_nd", [X, np.array([[0, 1], [1, 2], [0, 0]], np.int32)], {}),
    "scatter_nd_update": ("scatter_nd_update", [X, np.array([[0, 1], [1, 2], [0, 0]], np.int32), rand(3, 4, seed=9)], {}),
    "sign-i64": ("sign", [I32.astype(np.int64)], {}),
    "floor_div-i32": ("floor_div", [I32, np.array([2, -3, 4, 3], np.int32)], {}),
    "floor_mod-i32": ("floor_mod", [I32, np.array([2, -3, 4, 3], np.int32)], {}),
    "floor_div-f32": ("floor_div", [X * 4, rand(1, 3, 1, seed=3) + 3], {}),
    "logical_and": ("logical_and", [BOOLS, BOOLS[::-1]], {}),
    "logical_or": ("logical_or", [BOOLS, BOOLS[::-1]], {}),
    "where": ("where", [X > 0, X, rand(3, 4, seed=5)], {}),
    "max_pool-same": ("max_pool2d", [IMG], {"ksize": (3, 3), "strides": (2, 2),
                                            "padding": "SAME"}),
    "avg_pool-same": ("avg_pool2d", [IMG], {"ksize": (3, 3), "strides": (2, 2),
                                            "padding": "SAME"}),
    "avg_pool-valid": ("avg_pool2d", [IMG], {"ksize": (2, 2), "strides": (1, 2)}),
    "softmax": ("softmax", [X * 3], {}),
    "softmax-axis1": ("softmax", [X * 3], {"axis": 1}),
    "log_softmax": ("log_softmax", [X * 3], {}),
    "log_softmax-axis0": ("log_softmax", [X], {"axis": 0}),
    "resize-bilinear": ("resize", [IMG], {"size": (13, 5)}),
    "resize-bilinear-align": ("resize", [IMG], {"size": (13, 5), "align_corners": True}),
    "resize-bilinear-half": ("resize", [IMG], {"size": (13, 5), "half_pixel_centers": True}),
    "resize-nearest": ("resize", [IMG], {"size": (14, 4), "method": "nearest"}),
    "resize-nearest-align": ("resize", [IMG], {"size": (14, 4), "method": "nearest",
                                               "align_corners": True}),
    "resize-nearest-half": ("resize", [IMG], {"size": (14, 4), "method": "nearest",
                                              "half_pixel_centers": True}),
    "reduce_sum": ("reduce_sum", [X], {"axes": (1,)}),
    "reduce_sum-keep": ("reduce_sum", [X], {"axes": (0, 2), "keepdims": True}),
    "reduce_sum-i32": ("reduce_sum", [I32], {"axes": (1,)}),
    "reduce_mean-all": ("reduce_mean", [X], {}),
    "reduce_max": ("reduce_max", [X], {"axes": (-1,)}),
    "reduce_min": ("reduce_min", [X], {"axes": (0,), "keepdims": True}),
    "reduce_prod": ("reduce_prod", [X], {"axes": (2,)}),
    "argmax": ("argmax", [X], {"axis": 1}),
    "cumsum": ("cumsum", [X], {"axis": 1}),
    "cumsum-exclusive-reverse": ("cumsum", [I32], {"axis": -1, "exclusive": True,
                                                   "reverse": True}),
    "argmin-i32": ("argmin", [X], {"axis": -1, "output_type": DType.i32}),
    "reshape": ("reshape", [X], {"shape": (4, -1)}),
    "reshape-scalar": ("reshape", [X[:1, :1, :1]], {"shape": ()}),
    "transpose": ("transpose", [X], {"perm": (2, 0, 1)}),
    "concat": ("concat", [X, X * 2, X[:, :1]], {"axis": 1}),
    "slice": ("slice", [X], {"begin": (0, 1, 1), "size": (-1, 2, 2)}),
    "strided_slice": ("strided_slice", [X], {"begin": (0, 2, 0), "end": (2, 0, 4),
                                             "strides": (1, -1, 2)}),
    "strided_slice-masks": ("strided_slice", [X], {"begin": (1, 0), "end": (2, 3),
                                                   "strides": (1, 2), "begin_mask": 0b10,
                                                   "shrink_axis_mask": 0b01}),
    "strided_slice-newaxis-ellipsis": ("strided_slice", [X], {
        "begin": (0, 0, 1), "end": (0, 0, 3), "strides": (1, 1, 1),
        "new_axis_mask": 0b001, "ellipsis_mask": 0b010}),
    "pad": ("pad", [X], {"pads": ((0, 1), (2, 0), (1, 1))}),
    "pad-value": ("pad", [X], {"pads": ((0, 1), (2, 0), (1, 1)), "value": 1.5}),
    "pad-reflect": ("pad", [X], {"pads": ((1, 1), (2, 1), (0, 3)), "mode": "reflect"}),
    "pad-symmetric": ("pad", [X], {"pads": ((1, 1), (2, 1), (0, 3)), "mode": "symmetric"}),
    "pad-i32": ("pad", [I32], {"pads": ((1, 0), (0, 2))}),
    "gather": ("gather", [X, np.array([[2, 0], [1, 1]], np.int32)], {"axis": 1}),
    "gather-batch": ("gather", [X, np.array([[2, 0], [1, 1]], np.int64)],
                     {"axis": 1, "batch_dims": 1}),
    "broadcast_to": ("broadcast_to", [X[:, :1]], {"shape": (5, 2, 3, 4)}),
    "squeeze": ("squeeze", [X[:, :1, :, None]], {"axes": (1, -1)}),
    "squeeze-all": ("squeeze", [X[:, :1]], {}),
    "expand_dims": ("expand_dims", [X], {"axis": -1}),
    "tile": ("tile", [X], {"multiples": (1, 2, 3)}),
    "tile-bool": ("tile", [BOOLS], {"multiples": (2, 1)}),
    "transpose-bool": ("transpose", [BOOLS], {"perm": (1, 0)}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_op_matches_interpreter(case):
    op, arrays, attrs = CASES[case]
    check(*op_graph(op, *arrays, **attrs))


def test_split():
    g = Graph()
    x = g.add_input(ttype(X), "x")
    g.set_outputs(g.add("split", [x], {"axis": -1, "sizes": (1, -1, 2)}).outputs)
    check(g, [X])


CONV_CASES = {
    "same": dict(padding="SAME"),
    "valid-stride2": dict(strides=(2, 2)),
    "dilated": dict(padding="SAME", dilations=(2, 2), activation="relu"),
    "explicit": dict(padding=((1, 0), (2, 1)), activation="relu6"),
    "explicit-as-same": dict(padding=((1, 1), (1, 1))),
    "tanh": dict(padding="SAME", activation="tanh"),
    "relu_n1_to_1": dict(activation="relu_n1_to_1"),
}


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("case", list(CONV_CASES))
def test_conv2d(case, bias):
    consts = [rand(3, 3, 4, 6, seed=2)] + ([rand(6, seed=3)] if bias else [])
    check(*op_graph("conv2d", IMG, consts=consts, **CONV_CASES[case]))


def test_conv2d_grouped_and_dynamic_filter():
    data = check(*op_graph("conv2d", IMG, consts=[rand(3, 3, 2, 6, seed=2)], groups=2,
                           padding="SAME"))
    assert opcodes(data)["CONV_2D"] == 6
    # A filter that is a graph input is re-laid out by a TRANSPOSE at run time.
    data = check(*op_graph("conv2d", IMG, rand(3, 3, 4, 5, seed=4), padding="SAME"))
    assert opcodes(data) == {"TRANSPOSE": 1, "CONV_2D": 1}


def test_conv2d_explicit_padding():
    w = [rand(2, 2, 4, 3, seed=2)]
    # Exactly what SAME computes (the odd pad goes after): no PAD op.
    data = check(*op_graph("conv2d", IMG, consts=w, padding=((0, 1), (0, 1))))
    assert opcodes(data) == {"CONV_2D": 1}
    # Anything else: PAD, then a VALID conv.
    data = check(*op_graph("conv2d", IMG, consts=w, padding=((1, 0), (1, 0))))
    assert opcodes(data) == {"PAD": 1, "CONV_2D": 1}


@pytest.mark.parametrize("attrs", [
    dict(padding="SAME"),
    dict(strides=(2, 2), activation="relu6"),
    dict(padding="SAME", dilations=(2, 2)),
    dict(padding=((0, 2), (1, 1))),
])
def test_depthwise(attrs):
    consts = [rand(3, 3, 4, 2, seed=5), rand(8, seed=6)]
    data = check(*op_graph("depthwise_conv2d", IMG, consts=consts, **attrs))
    want = 2 if attrs.get("dilations") else 1
    assert opcodes(data)["DEPTHWISE_CONV_2D"] == want


@pytest.mark.parametrize("attrs,bias,version", [
    (dict(padding="SAME", strides=(2, 2)), False, 1),
    (dict(padding="VALID", strides=(2, 2)), True, 3),
    (dict(padding="SAME", strides=(1, 2), activation="relu"), True, 4),
    (dict(padding="VALID", strides=(3, 3), activation="tanh"), False, 1),
])
def test_conv2d_transpose(attrs, bias, version):
    consts = [rand(3, 3, 5, 4, seed=7)] + ([rand(5, seed=8)] if bias else [])
    data = check(*op_graph("conv2d_transpose", IMG, consts=consts, **attrs))
    assert opcodes(data)["TRANSPOSE_CONV"] == version


@pytest.mark.parametrize("name,a,b,attrs,builtin,version", [
    ("fc", rand(3, 8), rand(8, 5, seed=1), {}, "FULLY_CONNECTED", 1),
    ("fc-bias-relu", rand(3, 8), rand(8, 5, seed=1), {"activation": "relu"},
     "FULLY_CONNECTED", 1),
    ("fc-rank3", rand(2, 3, 8), rand(8, 5, seed=1), {}, "FULLY_CONNECTED", 5),
    ("fc-transposed-b", rand(3, 8), rand(5, 8, seed=1), {"transpose_b": True},
     "FULLY_CONNECTED", 1),
    ("fc-tanh", rand(3, 8), rand(8, 5, seed=1), {"activation": "tanh"}, "FULLY_CONNECTED", 1),
    ("bmm-transpose-a", rand(8, 3), rand(8, 5, seed=1), {"transpose_a": True},
     "BATCH_MATMUL", 1),
    ("bmm-batched", rand(2, 3, 8), rand(2, 8, 5, seed=1), {"activation": "relu6"},
     "BATCH_MATMUL", 1),
])
@pytest.mark.parametrize("const_b", [True, False])
def test_matmul(name, a, b, attrs, builtin, version, const_b):
    n = b.shape[-2] if attrs.get("transpose_b") else b.shape[-1]
    consts = [b] if const_b else []
    arrays = [a] if const_b else [a, b]
    if "bias" in name or "bmm-batched" in name:
        consts.append(rand(n, seed=9))
    if not const_b and consts:  # bias must follow b: make it a graph input too
        arrays, consts = arrays + consts, []
    data = check(*op_graph("matmul", *arrays, consts=consts, **attrs))
    codes = opcodes(data)
    if const_b:
        assert codes[builtin] == version
    else:
        assert "BATCH_MATMUL" in codes and "FULLY_CONNECTED" not in codes


@pytest.mark.parametrize("const", [True, False])
@pytest.mark.parametrize("axis", [-1, 1])
def test_batch_norm(const, axis):
    x = IMG.transpose(0, 3, 1, 2).copy() if axis == 1 else IMG
    params = [rand(4, seed=11), np.abs(rand(4, seed=12)) + 0.5, rand(4, seed=13),
              rand(4, seed=14)]
    if const:
        g, ins = op_graph("batch_norm", x, consts=params, axis=axis, epsilon=1e-3)
    else:
        g, ins = op_graph("batch_norm", x, *params, axis=axis, epsilon=1e-3)
    data = check(g, ins)
    if const:  # folded into one MUL and one ADD
        assert opcodes(data) == {"MUL": 1, "ADD": 1}


@pytest.mark.parametrize("axes,affine,const", [
    ((-1,), 2, True), ((-1,), 0, True), ((1, 2), 2, True), ((1, 3), 1, True),
    ((-1,), 2, False), ((1, 2), 2, False),
])
def test_layer_norm(axes, affine, const):
    x = rand(2, 3, 5, 4, seed=15)
    shape = tuple(x.shape[a] for a in axes)
    params = [rand(*shape, seed=16), rand(*shape, seed=17)][:affine]
    g, ins = op_graph("layer_norm", x, *([] if const else params),
                      consts=params if const else (), axes=axes)
    check(g, ins)


# -- quantization ------------------------------------------------------------------------------

def test_quantize_dequantize_roundtrip():
    x = rand(2, 3, 4) * 2
    g = Graph()
    xv = g.add_input(ttype(x), "x")
    q8 = g.add("quantize", [xv], {"scale": (0.02,), "zero_point": (5,)}).output
    u8 = g.add("quantize", [xv], {"scale": (0.03,), "zero_point": (128,),
                                  "dtype": DType.u8}).output
    q16 = g.add("quantize", [xv], {"scale": (1e-4,), "zero_point": (0,),
                                   "dtype": DType.i16}).output
    pc = g.add("quantize", [xv], {"scale": (0.01, 0.02, 0.05, 0.1), "zero_point": (0, 1, -2, 3),
                                  "axis": -1, "narrow_range": True}).output
    deq = g.add("dequantize", [q8], {"scale": (0.02,), "zero_point": (5,)}).output
    fq = g.add("fake_quant", [xv], {"scale": (0.05,), "zero_point": (-3,),
                                    "narrow_range": True}).output
    g.set_outputs([q8, u8, q16, pc, deq, fq])
    data = check(g, [x], rtol=0, atol=1e-6)  # integer codes must match exactly
    codes = opcodes(data)
    assert codes["DEQUANTIZE"] == 2 and "QUANTIZE" in codes


def test_dequantize_int8_weights_per_channel():
    w = np.random.default_rng(0).integers(-127, 128, (8, 5)).astype(np.int8)
    g = Graph()
    x = g.add_input(TensorType(DType.f32, (3, 8)), "x")
    wq = g.constant(w, "w_q")
    wf = g.add("dequantize", [wq], {"scale": tuple(np.linspace(0.01, 0.05, 5)),
                                    "zero_point": (0,) * 5, "axis": 1}).output
    g.set_outputs([g.add("matmul", [x, wf]).output])
    data = check(g, [rand(3, 8)])
    assert opcodes(data)["DEQUANTIZE"] == 5  # per-channel int8


# -- outputs, aliases, symbolic shapes, signature ----------------------------------------------

def test_outputs_that_are_inputs_constants_or_repeated():
    g = Graph()
    x = g.add_input(TensorType(DType.f32, ("batch", 4)), "x")
    i = g.add("identity", [x]).output
    c = g.constant(np.arange(3, dtype=np.int32), "c")
    y = g.add("relu", [g.add("identity", [i]).output]).output
    g.set_outputs([i, c, y, y, x])
    check(g, [rand(2, 4)])


def _cnn(batch="batch") -> Graph:
    return small_cnn_graph(batch, max_pool=False)


def test_small_cnn_end_to_end_and_symbolic_batch():
    g = _cnn()
    data = write_tflite(Module([g]))
    sub = model_of(data).subgraphs[0]
    assert list(sub.tensors[sub.inputs[0]].shapeSignature) == [-1, 16, 16, 3]
    assert list(sub.tensors[sub.inputs[0]].shape) == [1, 16, 16, 3]
    assert list(sub.tensors[sub.outputs[0]].shapeSignature) == [-1, 10]
    for batch in (1, 3):
        x = rand(batch, 16, 16, 3, seed=batch)
        (got,) = run_tflite(data, [x])
        np.testing.assert_allclose(got, run_graph(g, [x])[0], rtol=RTOL, atol=ATOL)
    assert opcodes(data) == {"CONV_2D": 1, "DEPTHWISE_CONV_2D": 1, "AVERAGE_POOL_2D": 1,
                             "RESHAPE": 1, "FULLY_CONNECTED": 1, "SOFTMAX": 1}


def test_symbolic_batch_transpose_conv_and_squeeze():
    g = Graph()
    x = g.add_input(TensorType(DType.f32, ("n", 5, 5, 4)), "x")
    y = g.add("conv2d_transpose", [x, g.constant(rand(3, 3, 2, 4))],
              {"strides": (2, 2), "padding": "SAME"}).output
    y = g.add("reduce_mean", [y], {"axes": (1, 2), "keepdims": True}).output
    g.set_outputs([g.add("squeeze", [y], {"axes": (1, 2)}).output])
    data = write_tflite(Module([g]))
    for batch in (1, 3):
        x_in = rand(batch, 5, 5, 4, seed=batch)
        (got,) = run_tflite(data, [x_in])
        np.testing.assert_allclose(got, run_graph(g, [x_in])[0], rtol=RTOL, atol=ATOL)


def test_signature_runner_names():
    g = _cnn()
    runner = Interpreter(model_content=write_tflite(Module([g]))).get_signature_runner(
        "serving_default")
    assert list(runner.get_input_details()) == ["image"]
    assert list(runner.get_output_details()) == ["probs"]
    x = rand(2, 16, 16, 3)
    np.testing.assert_allclose(runner(image=x)["probs"], run_graph(g, [x])[0], rtol=RTOL,
                               atol=ATOL)
    named = Module([g], {"input_names": ["pixels"], "output_names": ["scores"]})
    interp = Interpreter(model_content=write_tflite(named))
    assert interp.get_signature_list() == {"serving_default": {"inputs": ["pixels"],
                                                               "outputs": ["scores"]}}


def test_flatbuffer_structure():
    g, ins = op_graph("gelu", X)
    node = g.add("broadcast_to", [g.outputs[0]], {"shape": (2, 2, 3, 4)})
    g.set_outputs(node.outputs)
    data = write_tflite(Module([g]))
    assert data[4:8] == b"TFL3"
    m = model_of(data)
    assert m.version == 3 and m.buffers[0].data is None
    assert [md.name for md in m.metadata] == [b"producer"]
    assert bytes(m.buffers[m.metadata[0].buffer].data).decode().startswith("tensorforge ")
    codes = {c.builtinCode: c for c in m.operatorCodes}
    gelu, bcast = codes[fb.BuiltinOperator.GELU], codes[fb.BuiltinOperator.BROADCAST_TO]
    assert (gelu.deprecatedBuiltinCode, gelu.version) == (127, 1)
    assert (bcast.deprecatedBuiltinCode, bcast.version) == (127, 2)
    names = [t.name.decode() for t in m.subgraphs[0].tensors]
    assert len(set(names)) == len(names)


def test_buffers_are_16_byte_aligned_and_deduplicated():
    g = Graph()
    x = g.add_input(TensorType(DType.f32, (1, 7)), "x")
    w = rand(7, 7)
    for i in range(3):  # odd sizes push later buffers off alignment if nothing pads them
        x = g.add("matmul", [x, g.constant(w if i < 2 else rand(7, 7, seed=i))]).output
        x = g.add("add", [x, g.constant(np.full((1, 1), i, np.float32))]).output
    g.set_outputs([x])
    data = check(g, [rand(1, 7)])
    root = fb.Model.GetRootAs(data, 0)
    positions = []
    for i in range(1, root.BuffersLength()):
        buf = root.Buffers(i)
        o = flatbuffers.number_types.UOffsetTFlags.py_type(buf._tab.Offset(4))
        if o:
            positions.append(buf._tab.Vector(o))
    assert positions and all(p % 16 == 0 for p in positions)
    datas = [bytes(b.data) for b in model_of(data).buffers[1:] if b.data is not None]
    assert len(datas) == len(set(datas))


def test_deterministic_bytes():
    first = write_tflite(Module([_cnn()]))
    assert write_tflite(Module([_cnn()])) == first           # rebuilt from scratch
    m = Module([_cnn()], {"input_names": ["image"]})
    assert write_tflite(m) == write_tflite(m.clone()) == write_tflite(m)


def test_fp16_weights():
    g = _cnn()
    f32, f16 = write_tflite(Module([g])), write_tflite(Module([g]), fp16=True)
    m = model_of(f16)
    tensors = m.subgraphs[0].tensors
    const_types = {tensors[i].type for i in range(len(tensors)) if tensors[i].buffer}
    assert fb.TensorType.FLOAT16 in const_types and fb.TensorType.FLOAT32 not in const_types
    assert opcodes(f16)["DEQUANTIZE"] == 3
    x = rand(2, 16, 16, 3)
    (got,) = run_tflite(f16, [x])
    np.testing.assert_allclose(got, run_graph(g, [x])[0], rtol=2e-2, atol=2e-3)
    # Weight-dominated: about half the bytes.
    g, ins = op_graph("matmul", rand(2, 256), consts=[rand(256, 256), rand(256, seed=1)])
    f32, f16 = write_tflite(Module([g])), check(g, ins, rtol=2e-2, atol=2e-2, fp16=True)
    assert 0.45 < len(f16) / len(f32) < 0.55


# -- errors ------------------------------------------------------------------------------------

if not has_op("test_unlowerable"):
    register_op(OpDef("test_unlowerable", ("x",), lambda t, a: [t[0]], lambda i, a: [i[0]],
                      doc="An op no backend lowers (tests only)."))


def test_unsupported_ops_are_all_listed():
    g = Graph()
    x = g.add_input(TensorType(DType.f32, (2, 3)), "x")
    a = g.add("test_unlowerable", [x], scope="block1/odd", loc="keras:Odd", names=["a"]).output
    b = g.add("relu", [a]).output
    c = g.add("test_unlowerable", [b], scope="block2/odd", names=["c"]).output
    d = g.add("conv2d_transpose", [g.add("reshape", [c], {"shape": (1, 1, 2, 3)}).output,
                                   g.constant(rand(2, 2, 4, 3))],
              {"dilations": (2, 2)}, scope="up").output
    g.set_outputs([d])
    problems = lower_problems(Module([g]))
    assert [(p.node, p.scope) for p in problems] == [
        ("%a = test_unlowerable", "block1/odd"), ("%c = test_unlowerable", "block2/odd"),
        ("%up/conv2d_transpose = conv2d_transpose", "up")]
    assert problems[0].loc == "keras:Odd" and "dilation" in problems[2].message
    with pytest.raises(ConversionError) as err:
        write_tflite(Module([g]))
    assert len(err.value.diagnostics) == 3
    assert "block1/odd" in str(err.value) and "block2/odd" in str(err.value)
    assert lower_problems(Module([_cnn()])) == []


def test_unsupported_dtype_is_reported():
    g, _ = op_graph("sub", np.zeros((2,), np.int16), np.zeros((2,), np.int16))
    (p,) = lower_problems(Module([g]))
    assert "i16" in p.message and p.node == "%? = sub"


def test_f64_is_computed_in_f32():
    """TFLite's arithmetic kernels have no f64: the writer computes f64 values in f32."""
    x = np.array([0.5, -1.25], np.float64)
    g, _ = op_graph("exp", x)
    assert lower_problems(Module([g])) == []
    (got,) = run_tflite(write_tflite(Module([g])), [x.astype(np.float32)])
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, np.exp(x), rtol=1e-6)


def test_one_weight_used_with_and_without_transpose_b():
    """A constant feeding both x @ W and x @ W^T (XLNet's relative attention) is re-laid out
    once per layout, not once for both."""
    g = Graph()
    x = g.add_input(TensorType(DType.f32, ("batch", 6)), "x")
    w = g.constant(rand(6, 6, seed=7))
    y1 = g.add("matmul", [x, w]).output
    y2 = g.add("matmul", [x, w], {"transpose_b": True}).output
    g.set_outputs([g.add("add", [y1, g.add("mul", [y2, g.constant(np.float32(2))]).output],
                         names=["y"]).output])
    feeds = [rand(3, 6, seed=8)]
    (got,) = run_tflite(write_tflite(Module([g])), feeds)
    np.testing.assert_allclose(got, run_graph(g, feeds)[0], rtol=RTOL, atol=ATOL)
