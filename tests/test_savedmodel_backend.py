"""SavedModel backend: lowered ops run through tf.saved_model.load and match the IR
interpreter; signature names and symbolic batch; no opaque ops; weights are variables;
saved_model_cli sees the signature; unsupported ops are all listed and nothing is written.

To keep the runtime low, many ops go into one graph (one input set and one output per case)
that is saved and loaded once."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tensorforge.backends import tfjs
from tensorforge.backends.savedmodel import write_savedmodel
from tensorforge.backends.tf_lowering import lower_to_tf, lowering_problems
from tensorforge.ir import ConversionError, DType, Graph, Module, TensorType
from tensorforge.ir.interpreter import run_graph
from tensorforge.ir.ops import OpDef, has_op, register_op

RTOL = ATOL = 1e-5


from op_helpers import BOOLS, HALVES, I32, IMG, POS, UNARY_OPS, X, rand, ttype  # noqa: E402,F401


QX = np.concatenate([HALVES * 0.1, X.ravel()]).reshape(2, 16).astype(np.float32)

UNARY = UNARY_OPS + ["identity"]

# name: (op, graph-input arrays, constant arrays, attrs)
CASES = {
    **{f"u_{op}": (op, [X * 3], [], {}) for op in UNARY},
    **{f"u_{op}": (op, [POS], [], {}) for op in ("log", "sqrt", "rsqrt")},
    "round": ("round", [HALVES], [], {}),
    "leaky_relu": ("leaky_relu", [X], [], {"alpha": 0.1}),
    "gelu_erf": ("gelu", [X * 2], [], {}),
    "gelu_tanh": ("gelu", [X * 2], [], {"approximate": True}),
    "elu": ("elu", [X], [], {}),
    "elu_alpha": ("elu", [X], [], {"alpha": 0.5}),
    "softplus_wide": ("softplus", [np.linspace(-30, 30, 61, dtype=np.float32)], [], {}),
    "neg_i32": ("neg", [I32], [], {}),
    "logical_not": ("logical_not", [BOOLS], [], {}),
    "cast_f32_i32": ("cast", [X * 5], [], {"to": DType.i32}),
    "cast_f32_bool": ("cast", [np.round(X)], [], {"to": DType.bool}),
    "clip": ("clip", [X], [], {"min": -0.5, "max": 0.7}),
    "clip_i32": ("clip", [I32], [], {"min": -2.0, "max": 3.0}),
    **{f"b_{op}": (op, [X, rand(4, seed=2)], [], {})
       for op in ("add", "sub", "mul", "maximum", "minimum", "equal", "not_equal", "less",
                  "less_equal", "greater", "greater_equal")},
    "div": ("div", [X, rand(1, 3, 1, seed=3) + 3], [], {}),
    "pow": ("pow", [POS, rand(3, 4, seed=4)], [], {}),
    "div_i32": ("div", [I32, np.array([2, -3, 4, 3], np.int32)], [], {}),
    "top_k": ("top_k", [X], [], {"k": 2}),
    "gather_nd": ("gather_nd", [X, np.array([[0, 1], [1, 2], [0, 0]], np.int32)], [], {}),
    "scatter_nd_update": ("scatter_nd_update", [X, np.array([[0, 1], [1, 2], [0, 0]], np.int32), rand(3, 4, seed=9)], [], {}),
    "floor_div_i32": ("floor_div", [I32, np.array([2, -3, 4, 3], np.int32)], [], {}),
    "floor_mod_i32": ("floor_mod", [I32, np.array([2, -3, 4, 3], np.int32)], [], {}),
    "logical_and": ("logical_and", [BOOLS, BOOLS[::-1]], [], {}),
    "logical_or": ("logical_or", [BOOLS, BOOLS[::-1]], [], {}),
    "where": ("where", [X > 0, X, rand(3, 4, seed=5)], [], {}),
    # nn
    "conv_same": ("conv2d", [IMG], [rand(3, 3, 4, 6, seed=2), rand(6, seed=3)],
                  {"padding": "SAME", "activation": "relu"}),
    "conv_stride": ("conv2d", [IMG], [rand(3, 3, 4, 6, seed=2)], {"strides": (2, 2)}),
    "conv_dilated": ("conv2d", [IMG], [rand(3, 3, 4, 6, seed=2)],
                     {"padding": "SAME", "dilations": (2, 2), "activation": "tanh"}),
    "conv_explicit": ("conv2d", [IMG], [rand(3, 3, 4, 6, seed=2), rand(6, seed=3)],
                      {"padding": ((1, 0), (2, 1)), "activation": "relu6"}),
    "conv_groups": ("conv2d", [IMG], [rand(3, 3, 2, 6, seed=2)],
                    {"padding": "SAME", "groups": 2, "activation": "relu_n1_to_1"}),
    "dw": ("depthwise_conv2d", [IMG], [rand(3, 3, 4, 2, seed=4), rand(8, seed=5)],
           {"padding": "SAME", "strides": (2, 2), "activation": "relu6"}),
    "dw_dilated": ("depthwise_conv2d", [IMG], [rand(3, 3, 4, 1, seed=4)],
                   {"padding": "SAME", "dilations": (2, 2)}),
    "convT_same": ("conv2d_transpose", [IMG], [rand(3, 3, 5, 4, seed=6), rand(5, seed=7)],
                   {"padding": "SAME", "strides": (2, 2), "activation": "relu"}),
    "convT_valid": ("conv2d_transpose", [IMG], [rand(2, 3, 5, 4, seed=6)],
                    {"strides": (2, 1)}),
    "convT_dilated": ("conv2d_transpose", [IMG], [rand(3, 3, 5, 4, seed=6)],
                      {"dilations": (2, 2)}),
    "matmul": ("matmul", [rand(3, 5)], [rand(5, 7, seed=8), rand(7, seed=9)],
               {"activation": "relu"}),
    "matmul_batched": ("matmul", [rand(2, 3, 5), rand(2, 4, 5, seed=1)], [],
                       {"transpose_b": True}),
    "max_pool": ("max_pool2d", [IMG], [], {"ksize": (3, 3), "strides": (2, 2),
                                           "padding": "SAME"}),
    "avg_pool": ("avg_pool2d", [IMG], [], {"ksize": (3, 3), "strides": (2, 2),
                                           "padding": "SAME"}),
    "softmax": ("softmax", [X * 3], [], {}),
    "softmax_axis1": ("softmax", [X * 3], [], {"axis": 1}),
    "log_softmax": ("log_softmax", [X * 3], [], {}),
    "batch_norm": ("batch_norm", [IMG], [rand(4, seed=1), POS[0, 0], rand(4, seed=2),
                                         rand(4, seed=3)], {"epsilon": 1e-3}),
    "batch_norm_dyn": ("batch_norm", [X, rand(3, seed=1), np.abs(rand(3)), rand(3, seed=2),
                                      rand(3, seed=3)], [], {"axis": 1}),
    "layer_norm": ("layer_norm", [X], [rand(4, seed=1), rand(4, seed=2)], {}),
    "layer_norm_axes": ("layer_norm", [X], [rand(2, 3, seed=1)], {"axes": (0, 1)}),
    "resize_bilinear": ("resize", [IMG], [], {"size": (13, 5)}),
    "resize_bilinear_align": ("resize", [IMG], [], {"size": (13, 5), "align_corners": True}),
    "resize_bilinear_half": ("resize", [IMG], [], {"size": (13, 5),
                                                   "half_pixel_centers": True}),
    "resize_nearest": ("resize", [IMG], [], {"size": (14, 4), "method": "nearest"}),
    "resize_nearest_align": ("resize", [IMG], [], {"size": (14, 4), "method": "nearest",
                                                   "align_corners": True}),
    "resize_nearest_half": ("resize", [IMG], [], {"size": (14, 4), "method": "nearest",
                                                  "half_pixel_centers": True}),
    # reductions
    "reduce_sum": ("reduce_sum", [X], [], {"axes": (1,)}),
    "reduce_sum_i32": ("reduce_sum", [I32], [], {"axes": (1,)}),
    "reduce_mean_all": ("reduce_mean", [X], [], {}),
    "reduce_mean_i32": ("reduce_mean", [I32], [], {"axes": (0,)}),
    "reduce_max": ("reduce_max", [X], [], {"axes": (-1,)}),
    "reduce_min": ("reduce_min", [X], [], {"axes": (0,), "keepdims": True}),
    "reduce_prod": ("reduce_prod", [X], [], {"axes": (2,)}),
    "argmax": ("argmax", [X], [], {"axis": 1}),
    "cumsum": ("cumsum", [X], [], {"axis": -1, "exclusive": True, "reverse": True}),
    "argmin_i32": ("argmin", [X], [], {"axis": -1, "output_type": DType.i32}),
    # quantization
    "quantize": ("quantize", [QX], [], {"scale": (0.05,), "zero_point": (3,)}),
    "quantize_ties": ("quantize", [HALVES], [], {"scale": (1.0,), "zero_point": (0,)}),
    "fake_quant_ties": ("fake_quant", [HALVES], [], {"scale": (0.5,), "zero_point": (1,),
                                                    "bits": 4}),
    "quantize_u8_axis": ("quantize", [QX], [], {"scale": (0.05, 0.02), "zero_point": (128, 100),
                                                "axis": 0, "dtype": DType.u8}),
    "dequantize": ("dequantize", [np.arange(-8, 8, dtype=np.int8).reshape(4, 4)], [],
                   {"scale": (0.1, 0.2, 0.3, 0.4), "zero_point": (0, 1, -1, 2), "axis": 1}),
    "fake_quant": ("fake_quant", [QX], [], {"scale": (0.05,), "zero_point": (0,),
                                            "narrow_range": True}),
    # shape
    "reshape": ("reshape", [X], [], {"shape": (4, -1)}),
    "transpose": ("transpose", [X], [], {"perm": (2, 0, 1)}),
    "concat": ("concat", [X, X * 2, X[:, :1]], [], {"axis": 1}),
    "slice": ("slice", [X], [], {"begin": (0, 1, 1), "size": (-1, 2, 2)}),
    "strided_slice": ("strided_slice", [X], [], {"begin": (0, 2, 0), "end": (2, 0, 4),
                                                 "strides": (1, -1, 2)}),
    "strided_slice_masks": ("strided_slice", [X], [], {
        "begin": (0, 0, 1), "end": (0, 0, 3), "strides": (1, 1, 1),
        "new_axis_mask": 0b001, "ellipsis_mask": 0b010}),
    "pad": ("pad", [X], [], {"pads": ((0, 1), (2, 0), (1, 1))}),
    "pad_value": ("pad", [X], [], {"pads": ((0, 1), (2, 0), (1, 1)), "value": 1.5}),
    "pad_reflect": ("pad", [X], [], {"pads": ((1, 1), (2, 1), (0, 3)), "mode": "reflect"}),
    "pad_symmetric": ("pad", [X], [], {"pads": ((1, 1), (2, 1), (0, 3)), "mode": "symmetric"}),
    "gather": ("gather", [X, np.array([[2, 0], [1, 1]], np.int32)], [], {"axis": 1}),
    "gather_batch": ("gather", [X, np.array([[2, 0], [1, 1]], np.int64)], [],
                     {"axis": 1, "batch_dims": 1}),
    "gather_const": ("gather", [np.array([3, 0, 1], np.int32)], [], {}),  # params below
    "broadcast_to": ("broadcast_to", [X[:, :1]], [], {"shape": (5, 2, 3, 4)}),
    "squeeze": ("squeeze", [X[:, :1, :, None]], [], {"axes": (1, -1)}),
    "squeeze_all": ("squeeze", [X[:, :1]], [], {}),
    "expand_dims": ("expand_dims", [X], [], {"axis": -1}),
    "tile": ("tile", [X], [], {"multiples": (1, 2, 3)}),
    "split": ("split", [X], [], {"axis": -1, "sizes": (1, -1, 2)}),
}
EMBED = rand(5, 8, seed=11)  # gather_const's params: a variable gathered by an input


@pytest.fixture(scope="module")
def sym(tmp_path_factory):
    """A symbolic-batch model with metadata signature names, saved; `saved_model_cli show`
    on it starts right away in the background (it spends seconds importing TensorFlow)."""
    g = Graph()
    x = g.add_input(TensorType(DType.f32, ("batch", 4, 4, 2)), "x")
    t = g.add_input(TensorType(DType.f32, ("batch", 3)), "t")
    y = g.add("conv2d", [x, g.constant(rand(3, 3, 2, 5), "conv1/kernel")],
              {"padding": "SAME"}, scope="conv1").output
    y = g.add("conv2d_transpose", [y, g.constant(rand(2, 2, 3, 5), "up/kernel")],
              {"strides": (2, 2), "padding": "SAME"}, scope="up").output
    flat = g.add("reshape", [y], {"shape": (-1, 8 * 8 * 3)}).output
    out = g.add("matmul", [flat, g.constant(rand(192, 3), "fc/kernel")], scope="fc").output
    out = g.add("add", [out, t]).output
    pooled = g.add("reduce_mean", [y], {"axes": (1, 2)}).output
    g.set_outputs([out, pooled])
    module = Module([g], {"input_names": ["images", "offset"],
                          "output_names": ["logits", "features"]})
    path = str(tmp_path_factory.mktemp("sym") / "model")
    write_savedmodel(module, path)
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    proc = subprocess.Popen([cli, "show", "--all", "--dir", path], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    yield g, path, proc
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def test_symbolic_batch_and_signature(sym):
    g, path, _ = sym
    fn = tf.saved_model.load(path).signatures["serving_default"]
    _, specs = fn.structured_input_signature
    assert set(specs) == {"images", "offset"}
    assert specs["images"].shape.as_list() == [None, 4, 4, 2]
    assert specs["offset"].shape.as_list() == [None, 3]
    assert set(fn.structured_outputs) == {"logits", "features"}
    for batch in (1, 3):
        xs, ts = rand(batch, 4, 4, 2, seed=batch), rand(batch, 3, seed=10 + batch)
        got = fn(images=tf.constant(xs), offset=tf.constant(ts))
        ref = run_graph(g, [xs, ts])
        _compare(ref[0], got["logits"].numpy())
        _compare(ref[1], got["features"].numpy())


def big_graph():
    """Every case in one graph: inputs `<case>_x<i>`, outputs `<case>_o<j>`."""
    g = Graph()
    feeds = {}
    for name, (op, arrays, consts, attrs) in CASES.items():
        ins = []
        for i, a in enumerate(arrays):
            ins.append(g.add_input(ttype(a), f"{name}_x{i}"))
            feeds[f"{name}_x{i}"] = a
        if name == "gather_const":
            ins.insert(0, g.constant(EMBED, "embedding/table"))
        ins += [g.constant(c, scope=name) for c in consts]
        node = g.add(op, ins, attrs, scope=name)
        for j, out in enumerate(node.outputs):
            out.name = f"{name}_o{j}"
    g.set_outputs([o for n in g for o in n.outputs if n.op != "constant"])
    return g, feeds


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    g, feeds = big_graph()
    path = str(tmp_path_factory.mktemp("sm") / "big")
    write_savedmodel(Module([g]), path)
    return g, feeds, path, tf.saved_model.load(path)


def _compare(ref, got):
    assert got.dtype == ref.dtype and got.shape == ref.shape, \
        (got.dtype, got.shape, ref.dtype, ref.shape)
    if ref.dtype.kind in "fc":
        np.testing.assert_allclose(got, ref, rtol=RTOL, atol=ATOL)
    else:
        np.testing.assert_array_equal(got, ref)


def test_every_op_matches_interpreter(big):
    g, feeds, _, loaded = big
    ref = dict(zip([v.name for v in g.outputs], run_graph(g, feeds)))
    out = loaded.signatures["serving_default"](**{k: tf.constant(v) for k, v in feeds.items()})
    assert sorted(out) == sorted(ref)
    failures = []
    for name, r in ref.items():
        try:
            _compare(r, out[name].numpy())
        except AssertionError as e:
            failures.append(f"{name}: {str(e)[:300]}")
    assert not failures, "\n".join(failures)


def _all_nodes(graph_def):
    nodes = list(graph_def.node)
    for fn in graph_def.library.function:
        nodes += list(fn.node_def)
    return nodes


def test_no_opaque_ops_and_weights_are_variables(big):
    _, _, path, loaded = big
    graph_def = loaded.signatures["serving_default"].graph.as_graph_def()
    ops = {n.op for n in _all_nodes(graph_def)}
    assert "XlaCallModule" not in ops and not any(o.startswith("Xla") for o in ops)
    assert {"Conv2D", "DepthwiseConv2dNative", "Conv2DBackpropInput", "MatMul", "Erf"} <= ops \
        or "StatefulPartitionedCall" in ops
    # The saved graph proper (function bodies included) holds no opaque op either.
    from tensorflow.core.protobuf import saved_model_pb2
    sm = saved_model_pb2.SavedModel()
    with open(os.path.join(path, "saved_model.pb"), "rb") as f:
        sm.ParseFromString(f.read())
    saved_ops = {n.op for mg in sm.meta_graphs for n in _all_nodes(mg.graph_def)}
    assert "XlaCallModule" not in saved_ops
    assert {"Conv2D", "DepthwiseConv2dNative", "Conv2DBackpropInput", "MatMul", "Erf",
            "ResizeBilinear", "MirrorPad", "GatherV2"} <= saved_ops
    # Weights: tf.Variables named after the value or its user's scope.
    variables = loaded.weights
    assert variables and all(isinstance(v, tf.Variable) for v in variables)
    names = {v.name.split(":")[0] for v in variables}
    assert "embedding/table" in names and "conv_same/filter" in names, names


# The ops the TF.js converter accepts (the backend's copy of tfjs-converter's op list), plus
# integer TruncateDiv, which only the integer `div` emits.
TFJS_OPS = set(tfjs.TFJS_OPS) | {"TruncateDiv"}


def test_frozen_graph_uses_tfjs_ops_only(big):
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2)
    frozen = convert_variables_to_constants_v2(big[3].signatures["serving_default"])
    ops = {n.op for n in frozen.graph.as_graph_def().node}
    assert ops <= TFJS_OPS, sorted(ops - TFJS_OPS)


def test_graph_is_clean():
    """One TF op per IR op for the common layers (what the TF.js converter sees)."""
    g = Graph()
    x = g.add_input(TensorType(DType.f32, ("batch", 8, 8, 3)), "image")
    y = g.add("conv2d", [x, g.constant(rand(3, 3, 3, 4), "conv1/kernel"),
                         g.constant(rand(4), "conv1/bias")],
              {"padding": "SAME", "activation": "relu6"}, scope="conv1").output
    y = g.add("reshape", [y], {"shape": (-1, 256)}).output
    y = g.add("matmul", [y, g.constant(rand(256, 10), "fc/kernel")], scope="fc").output
    y = g.add("gelu", [y]).output
    g.set_outputs([g.add("softmax", [y]).output])
    fn = lower_to_tf(Module([g], {"output_names": ["probs"]})).concrete_function()
    ops = [n.op for n in fn.graph.as_graph_def().node]
    allowed = {"Placeholder", "ReadVariableOp", "Const", "Conv2D", "BiasAdd", "Relu6",
               "Reshape", "MatMul", "Mul", "AddV2", "Erf", "Softmax", "Identity", "NoOp"}
    assert set(ops) <= allowed, sorted(set(ops) - allowed)
    assert ops.count("Conv2D") == ops.count("BiasAdd") == ops.count("MatMul") == 1
    assert list(fn.structured_outputs) == ["probs"]


if not has_op("test_tf_unlowerable"):
    register_op(OpDef("test_tf_unlowerable", ("x",), lambda t, a: [t[0]], lambda i, a: [i[0]],
                      doc="An op the TF lowering does not know (tests only)."))


def test_unsupported_ops_are_all_listed_and_nothing_written(tmp_path):
    g = Graph()
    x = g.add_input(TensorType(DType.f32, (1, 6, 6, 2)), "x")
    a = g.add("test_tf_unlowerable", [x], scope="block1/odd", loc="keras:Odd",
              names=["a"]).output
    b = g.add("relu", [a]).output
    c = g.add("test_tf_unlowerable", [b], scope="block2/odd", names=["c"]).output
    d = g.add("depthwise_conv2d", [c, g.constant(rand(3, 3, 2, 1))], {"strides": (1, 2)},
              scope="dw").output
    g.set_outputs([d])
    problems = lowering_problems(Module([g]))
    assert [(p.node, p.scope) for p in problems] == [
        ("%a = test_tf_unlowerable", "block1/odd"), ("%c = test_tf_unlowerable", "block2/odd"),
        ("%dw/depthwise_conv2d = depthwise_conv2d", "dw")]
    assert problems[0].loc == "keras:Odd" and "strides" in problems[2].message

    target = tmp_path / "model"
    with pytest.raises(ConversionError) as err:
        write_savedmodel(Module([g]), target)
    assert len(err.value.diagnostics) == 3
    assert "block1/odd" in str(err.value) and "block2/odd" in str(err.value)
    assert os.listdir(tmp_path) == []          # no partial or temporary directory

    # An existing artifact survives a failed write untouched.
    ok = Graph()
    v = ok.add_input(TensorType(DType.f32, (2,)), "v")
    ok.set_outputs([ok.add("neg", [v]).output])
    write_savedmodel(Module([ok]), target)
    before = sorted(os.listdir(target))
    with pytest.raises(ConversionError):
        write_savedmodel(Module([g]), target)
    assert sorted(os.listdir(target)) == before and sorted(os.listdir(tmp_path)) == ["model"]
    out = tf.saved_model.load(str(target)).signatures["serving_default"](v=tf.ones(2))
    np.testing.assert_array_equal(out["output_0"].numpy() if "output_0" in out
                                  else next(iter(out.values())).numpy(), -np.ones(2))


def test_overwrites_previous_savedmodel_but_not_other_files(tmp_path):
    g = Graph()
    v = g.add_input(TensorType(DType.f32, (2,)), "v")
    g.set_outputs([g.add("exp", [v], names=["y"]).output])
    target = tmp_path / "m"
    write_savedmodel(Module([g]), target)
    write_savedmodel(Module([g]), target)     # replaces the earlier SavedModel
    assert sorted(os.listdir(tmp_path)) == ["m"]
    stray = tmp_path / "notes"
    stray.mkdir()
    (stray / "keep.txt").write_text("mine")
    with pytest.raises(ConversionError):
        write_savedmodel(Module([g]), stray)
    assert (stray / "keep.txt").read_text() == "mine"


def test_saved_model_cli_lists_signature(sym):
    """Last in the file: the CLI started by the `sym` fixture has had time to finish."""
    _, _, proc = sym
    stdout, stderr = proc.communicate(timeout=180)
    assert proc.returncode == 0, stderr
    assert "signature_def['serving_default']" in stdout
    for name in ("images", "offset", "logits", "features"):
        assert f"['{name}']" in stdout, stdout
    assert "(-1, 4, 4, 2)" in stdout and "(-1, 3)" in stdout
