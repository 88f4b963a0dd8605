"""TF.js graph models written straight from the IR (`backends/tfjs_direct.py`): which ops go
that way, that the common models (MobileNetV2, ResNet50, ConvNeXtTiny, EfficientNetB0, a
transformer encoder) do, that they and the direct-only rewrites (grouped conv as depthwise) match
the IR interpreter in Node tfjs, that the direct and the TensorFlow path give the same numbers,
that the direct path never imports TensorFlow, and the fallback (with its note) for what it
does not cover."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tensorforge.backends.tfjs import TFJS_OPS, write_tfjs
from tensorforge.backends.tfjs_direct import DIRECT_OPS, FALLBACK_OPS, direct_problems
from tensorforge.ir import ConversionError, DType, Graph, Module, TensorType
from tensorforge.ir.interpreter import run_graph

from op_helpers import rand, small_cnn_graph
from test_tfjs_backend import CASES, assert_matches, node_runner, op_graph  # noqa: F401

REPO = Path(__file__).resolve().parent.parent


def _ops(directory: Path) -> list[str]:
    model = json.loads((directory / "model.json").read_text())
    return [n["op"] for n in model["modelTopology"]["node"]]


# -- coverage ------------------------------------------------------------------------------------

def test_direct_and_fallback_ops_partition_the_tf_lowerings():
    from tensorforge.backends.tf_lowering import LOWERINGS

    assert not DIRECT_OPS & FALLBACK_OPS
    assert set(LOWERINGS) <= DIRECT_OPS | FALLBACK_OPS, set(LOWERINGS) - DIRECT_OPS - FALLBACK_OPS
    assert DIRECT_OPS <= set(LOWERINGS)      # nothing the TF path would refuse


@pytest.mark.parametrize("case", list(CASES))
def test_every_backend_op_case_goes_direct(case):
    op, arrays, extra, attrs = CASES[case]
    g = op_graph(op, *arrays, consts=extra.get("consts", ()), **attrs)
    assert direct_problems(Module([g])) == []


def test_direct_path_does_not_import_tensorflow(tmp_path):
    code = f"""
import sys
sys.path.insert(0, {str(REPO / 'tests')!r})
from op_helpers import small_cnn_graph
from tensorforge.ir import Module
from tensorforge.backends.tfjs import write_tfjs
write_tfjs(Module([small_cnn_graph("batch", max_pool=True)]), {str(tmp_path / 'm')!r},
           via="direct", quantize="uint8")
print("tensorflow" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300, check=True).stdout
    assert out.strip().splitlines()[-1] == "False"


# -- fallback ------------------------------------------------------------------------------------

def _loop_graph() -> Graph:
    """x doubled while its sum is below 100: an IR `while`, which goes the TF way."""
    g = Graph()
    x = g.add_input(TensorType(DType.f32, (3,)), "x")
    cond = Graph("cond")
    cv = cond.add_input(TensorType(DType.f32, (3,)), "c")
    s = cond.add("reduce_sum", [cv], {"axes": (0,)}).output
    cond.set_outputs([cond.add("less", [s, cond.constant(np.float32(100), "lim")]).output])
    body = Graph("body")
    bv = body.add_input(TensorType(DType.f32, (3,)), "b")
    body.set_outputs([body.add("mul", [bv, body.constant(np.float32(2), "two")]).output])
    node = g.add("while", [x], regions=[cond, body], scope="loop")
    g.set_outputs([g.add("relu", [node.outputs[0]], names=["y"]).output])
    return g


def test_unmapped_op_falls_back_to_tf_with_a_note(tmp_path, node_runner):  # noqa: F811
    g = _loop_graph()
    assert "while" in FALLBACK_OPS
    problems = direct_problems(Module([g]))
    assert len(problems) == 1 and "while" in problems[0].message
    with pytest.raises(ConversionError, match="while"):
        write_tfjs(Module([g]), tmp_path / "d", via="direct")
    assert not (tmp_path / "d").exists()
    notes: list[str] = []
    write_tfjs(Module([g]), tmp_path / "m", notes=notes)
    assert len(notes) == 1 and "through TensorFlow" in notes[0] and "while" in notes[0]
    x = np.array([1.0, 2.0, 3.0], np.float32)
    (got,) = node_runner([(tmp_path / "m", {"x": x})], tmp_path / "io")
    assert_matches(got, run_graph(g, [x]), ["y"])


# -- the direct path in Node: against the IR and against the TF path ---------------------------

def _grouped(groups: int, cin: int, cout: int, strides=(1, 1), dilations=(1, 1)) -> Graph:
    g = Graph()
    x = g.add_input(TensorType(DType.f32, ("batch", 9, 9, cin)), "x")
    f = g.constant(rand(3, 3, cin // groups, cout, seed=groups) * 0.3, "w")
    b = g.constant(rand(cout, seed=7), "bias")
    g.set_outputs([g.add("conv2d", [x, f, b], {"groups": groups, "strides": strides,
                                             "dilations": dilations, "padding": "SAME",
                                             "activation": "relu6"}, names=["y"]).output])
    return g


def _quant_graph() -> Graph:
    g = Graph()
    xv = g.add_input(TensorType(DType.f32, (3, 8)), "x")
    q8 = g.add("quantize", [xv], {"scale": (0.02,), "zero_point": (5,)}).output
    deq = g.add("dequantize", [q8], {"scale": (0.02,), "zero_point": (5,)}, names=["deq"])
    w = np.random.default_rng(0).integers(-127, 128, (8, 5)).astype(np.int8)
    wf = g.add("dequantize", [g.constant(w, "w_q")],
               {"scale": tuple(np.linspace(0.01, 0.05, 5)), "zero_point": (0,) * 5,
                "axis": 1}).output
    mm = g.add("matmul", [xv, wf], names=["mm"])
    g.set_outputs([deq.output, mm.output, q8])
    return g


def _update_slice(dtype=DType.f32) -> Graph:
    g = Graph()
    x = g.add_input(TensorType(dtype, ("rows", 5)), "x")
    u = g.add_input(TensorType(dtype, (2, 3)), "u")
    start = g.add_input(TensorType(DType.i32, (2,)), "start")
    g.set_outputs([g.add("dynamic_update_slice", [x, u, start], names=["y"]).output])
    return g


GRAPHS = {
    "cnn": (lambda: small_cnn_graph("batch", max_pool=True), {"image": rand(2, 16, 16, 3)}),
    "grouped-depthwise": (lambda: _grouped(4, 4, 8), {"x": rand(2, 9, 9, 4, seed=1)}),
    "grouped-depthwise-strided": (lambda: _grouped(4, 4, 4, strides=(2, 2)),
                                  {"x": rand(1, 9, 9, 4, seed=2)}),
    "grouped-split": (lambda: _grouped(2, 4, 6), {"x": rand(1, 9, 9, 4, seed=3)}),
    "grouped-dilated": (lambda: _grouped(4, 4, 4, dilations=(2, 2)),
                        {"x": rand(1, 9, 9, 4, seed=4)}),
    "quant": (_quant_graph, {"x": rand(3, 8, seed=5) * 2}),
    "update-slice": (_update_slice, {"x": rand(4, 5, seed=6), "u": rand(2, 3, seed=7),
                                     "start": np.array([3, -1], np.int32)}),
    "update-slice-bool": (lambda: _update_slice(DType.bool),
                          {"x": rand(4, 5, seed=8) > 0, "u": rand(2, 3, seed=9) > 0,
                           "start": np.array([1, 1], np.int32)}),
    **{case: (lambda c=CASES[case]: op_graph(c[0], *c[1], consts=c[2].get("consts", ()),
                                              **c[3]),
              {f"x{i}": a for i, a in enumerate(CASES[case][1])})
       for case in ("gelu-erf", "gelu-tanh", "layer_norm", "batch_norm", "conv2d_transpose",
                    "matmul-bcast-rank5", "scatter_nd_update", "top_k", "pad-reflect",
                    "strided_slice", "resize-bilinear", "cumsum-exclusive-reverse",
                    "log_softmax", "split", "argmin-i32")},
}


@pytest.fixture(scope="module")
def both_paths(node_runner, tmp_path_factory):  # noqa: F811
    root = tmp_path_factory.mktemp("tfjs_direct")
    jobs, graphs = [], {}
    for name, (build, inputs) in GRAPHS.items():
        g = build()
        graphs[name] = g
        for via in ("direct", "tf"):
            write_tfjs(Module([g]), root / via / name, via=via)
            jobs.append((root / via / name, inputs))
    got = node_runner(jobs, root / "io")
    out = {}
    for i, name in enumerate(GRAPHS):
        out[name] = (graphs[name], got[2 * i], got[2 * i + 1])
    return root, out


@pytest.mark.parametrize("name", list(GRAPHS))
def test_direct_matches_ir_and_tf_path(both_paths, name):
    root, results = both_paths
    g, direct, via_tf = results[name]
    inputs = GRAPHS[name][1]
    assert not isinstance(direct, str), direct
    assert not isinstance(via_tf, str), via_tf
    keys = [v.name or f"output_{i}" for i, v in enumerate(g.outputs)]
    assert_matches(direct, run_graph(g, [inputs[v.name] for v in g.inputs]), keys)
    for k in keys:   # the TF path computes the same numbers (same kernels, same constants)
        np.testing.assert_allclose(direct[k], via_tf[k], rtol=1e-6, atol=1e-6, err_msg=k)
    ops = _ops(root / "direct" / name)
    assert set(ops) <= TFJS_OPS
    if name.startswith("grouped-depthwise"):
        assert "DepthwiseConv2dNative" in ops and "Conv2D" not in ops
    if name == "grouped-split":
        assert ops.count("Conv2D") == 2 and "ConcatV2" in ops
    if name == "quant":   # int8 weight codes: a float32 Const stored at 1 byte per element
        weights = json.loads((root / "direct" / name / "model.json").read_text())[
            "weightsManifest"][0]["weights"]
        (w,) = [w for w in weights if w["name"] == "w_q"]
        assert w["dtype"] == "float32" and w["quantization"]["dtype"] == "uint8"


def test_direct_output_is_byte_identical_and_matches_tf_layout(tmp_path):
    g = small_cnn_graph("batch", max_pool=True)
    for via in ("direct", "tf"):
        write_tfjs(Module([g]), tmp_path / via, via=via, quantize="uint8",
                   quantize_globs=["fc/*"])
    write_tfjs(Module([g.clone()]), tmp_path / "again", via="direct", quantize="uint8",
               quantize_globs=["fc/*"])
    files = lambda d: {p.name: p.read_bytes() for p in sorted(d.iterdir())}  # noqa: E731
    assert files(tmp_path / "direct") == files(tmp_path / "again")
    d, t = (json.loads((tmp_path / v / "model.json").read_text()) for v in ("direct", "tf"))
    assert d["signature"] == t["signature"]
    assert sorted(_ops(tmp_path / "direct")) == sorted(_ops(tmp_path / "tf"))
    wd, wt = (sorted((w["name"], w["shape"], w["dtype"], "quantization" in w)
                     for w in m["weightsManifest"][0]["weights"]) for m in (d, t))
    assert wd == wt


# -- Keras models --------------------------------------------------------------------------------

def _encoder():
    import keras

    inp = keras.Input((16, 32), name="tokens")
    x = keras.layers.MultiHeadAttention(4, 8)(inp, inp)
    x = keras.layers.LayerNormalization()(x + inp)
    y = keras.layers.Dense(64, activation="gelu")(x)
    x = keras.layers.LayerNormalization()(x + keras.layers.Dense(32)(y))
    out = keras.layers.Dense(3, activation="softmax")(keras.layers.GlobalAveragePooling1D()(x))
    return keras.Model(inp, out)


def _app(name, shape, **kw):
    def build():
        import keras

        return getattr(keras.applications, name)(weights=None, input_shape=shape, **kw)
    return build


KERAS = {
    "MobileNetV2": _app("MobileNetV2", (96, 96, 3), alpha=0.35),
    "ResNet50": _app("ResNet50", (32, 32, 3)),
    "ConvNeXtTiny": _app("ConvNeXtTiny", (32, 32, 3)),
    "EfficientNetB0": _app("EfficientNetB0", (64, 64, 3)),
    "encoder": _encoder,
}


@pytest.mark.parametrize("name", ["MobileNetV2", "encoder"])
def test_keras_models_convert_directly_and_verify(name, tmp_path, node_runner):  # noqa: F811
    import tensorforge

    result = tensorforge.convert(KERAS[name](), target="tfjs", output=tmp_path / "m",
                                 verify=True, progress=False)
    assert not [n for n in result.notes if n.startswith("tfjs:")], result.notes
    rows = result.verification.rows
    assert {r.runtime for r in rows} == {"ir", "tfjs"} and all(r.ok for r in rows), \
        result.verification.table()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ResNet50", "ConvNeXtTiny", "EfficientNetB0"])
def test_big_keras_models_go_direct(name):
    from tensorforge.tools.convert import optimize
    from tensorforge.tools.sources import load_source

    module = optimize(load_source(KERAS[name]()).module, None)
    assert direct_problems(module) == []
