"""TF.js backend: graph models written by `write_tfjs` run in Node.js with @tensorflow/tfjs
4.22.0 (pure-JS CPU backend, pinned in tests/js/package-lock.json) and match the IR
interpreter; plus symbolic batch, uint8/uint16/float16 weight compression, quantize globs,
byte-identical output, 4 MiB shard splitting, model.json structure, and error reporting with
atomic (all-or-nothing) writes.

Node work is batched: every model of a test is written first, then one `node run_model.js
--batch` process runs them all (Node + tfjs start-up is about a second).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from tensorforge.backends.tfjs import (SHARD_BYTES, TFJS_OPS, quantize_weight, tfjs_problems,
                                       write_tfjs,
                                       write_tfjs_function)
from tensorforge.ir import ConversionError, DType, Graph, Module, TensorType
from tensorforge.ir.interpreter import run_graph
from tensorforge.ir.ops import OpDef, has_op, register_op

from tensorforge.tools.node_runner import ensure_harness, run_jobs
RTOL, ATOL = 1e-4, 1e-5


# -- Node.js harness -----------------------------------------------------------------------------

@pytest.fixture(scope="session")
def node_runner():
    """Installs tests/js from its lockfile with `npm ci` when node_modules does not already
    match it (TENSORFORGE_NPM_CI=1 forces it). Returns a function running
    [(model dir, {input name: array})] jobs in one Node process."""
    missing = [tool for tool in ("node", "npm") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"{' and '.join(missing)} not on PATH: the TF.js backend is checked by "
                    f"running models in Node.js with @tensorflow/tfjs")
    ensure_harness(force=os.environ.get("TENSORFORGE_NPM_CI") == "1")

    def run(jobs, workdir: Path) -> list[dict[str, np.ndarray]]:
        return run_jobs(jobs, workdir)

    return run


def assert_matches(got, ref: list[np.ndarray], names: list[str], rtol=RTOL, atol=ATOL):
    assert not isinstance(got, str), f"TF.js failed:\n{got}"
    assert sorted(got) == sorted(names)
    for name, r in zip(names, ref):
        o = got[name]
        assert o.shape == r.shape, (name, o.shape, r.shape)
        if r.dtype == np.bool_ or r.dtype.kind in "iu":
            np.testing.assert_array_equal(o.astype(np.int64), r.astype(np.int64), err_msg=name)
        else:
            np.testing.assert_allclose(o, r, rtol=rtol, atol=atol, err_msg=name)


# -- graphs --------------------------------------------------------------------------------------

from op_helpers import (BOOLS, HALVES, I32, IMG, POS, UNARY_OPS, X,  # noqa: E402,F401
                        rand, small_cnn_graph, ttype)


def op_graph(op, *arrays, consts=(), **attrs):
    """A graph applying `op` to graph inputs `arrays` then constants `consts`; outputs y0.."""
    g = Graph()
    ins = [g.add_input(ttype(a), f"x{i}") for i, a in enumerate(arrays)]
    ins += [g.constant(c, f"c{i}") for i, c in enumerate(consts)]
    node = g.add(op, ins, attrs, scope="op")
    g.set_outputs(node.outputs)
    return g


W = lambda *s, seed: rand(*s, seed=seed) * 0.3  # noqa: E731

UNARY = UNARY_OPS + ["elu"]

CASES = {
    **{f"unary-{op}": (op, [X * 3], {}, {}) for op in UNARY},
    **{f"unary-{op}": (op, [POS], {}, {}) for op in ("log", "sqrt", "rsqrt")},
    "round": ("round", [np.array([-2.4, -1.6, 0.3, 0.7, 1.2, 2.8], np.float32)], {}, {}),
    "leaky_relu": ("leaky_relu", [X], {}, {"alpha": 0.1}),
    "gelu-erf": ("gelu", [X * 2], {}, {}),
    "gelu-tanh": ("gelu", [X * 2], {}, {"approximate": True}),
    "neg-i32": ("neg", [I32], {}, {}),
    "logical_not": ("logical_not", [BOOLS], {}, {}),
    "cast-f32-i32": ("cast", [X * 5], {}, {"to": DType.i32}),
    "cast-i32-f32": ("cast", [I32], {}, {"to": DType.f32}),
    "cast-bool-f32": ("cast", [BOOLS], {}, {"to": DType.f32}),
    "clip": ("clip", [X], {}, {"min": -0.5, "max": 0.7}),
    **{f"binary-{op}": (op, [X, rand(4, seed=2)], {}, {})
       for op in ("add", "sub", "mul", "maximum", "minimum", "equal", "not_equal", "less",
                  "less_equal", "greater", "greater_equal")},
    "add-const": ("add", [X], {"consts": [rand(3, 1, seed=9)]}, {}),
    "div": ("div", [X, rand(1, 3, 1, seed=3) + 3], {}, {}),
    "pow": ("pow", [POS, rand(3, 4, seed=4)], {}, {}),
    "add-i32": ("add", [I32, I32[:1]], {}, {}),
    "top_k": ("top_k", [X], {}, {"k": 2}),
    "gather_nd": ("gather_nd", [X, np.array([[0, 1], [1, 2], [0, 0]], np.int32)], {}, {}),
    "scatter_nd_update": ("scatter_nd_update", [X, np.array([[0, 1], [1, 2], [0, 0]], np.int32), rand(3, 4, seed=9)], {}, {}),
    # TF.js broadcasts wrongly over several batch dims unless told explicitly (Gemma 4).
    "matmul-bcast-rank5": ("matmul", [rand(2, 1, 2, 3, 4), rand(2, 1, 1, 4, 3, seed=1)], {}, {}),
    "floor_div-i32": ("floor_div", [I32, np.array([2, -3, 4, 3], np.int32)], {}, {}),
    "floor_mod-i32": ("floor_mod", [I32, np.array([2, -3, 4, 3], np.int32)], {}, {}),
    "logical_and": ("logical_and", [BOOLS, BOOLS[::-1]], {}, {}),
    "logical_or": ("logical_or", [BOOLS, BOOLS[::-1]], {}, {}),
    "where": ("where", [X > 0, X, rand(3, 4, seed=5)], {}, {}),
    "max_pool": ("max_pool2d", [IMG], {}, {"ksize": (3, 3), "strides": (2, 2),
                                           "padding": "SAME"}),
    "avg_pool": ("avg_pool2d", [IMG], {}, {"ksize": (2, 2), "strides": (1, 2)}),
    "conv2d": ("conv2d", [IMG], {"consts": [W(3, 3, 4, 5, seed=6), W(5, seed=7)]},
               {"strides": (2, 1), "padding": "SAME", "activation": "relu"}),
    "conv2d-dilated": ("conv2d", [IMG], {"consts": [W(2, 2, 4, 3, seed=8)]},
                       {"dilations": (2, 2)}),
    "depthwise": ("depthwise_conv2d", [IMG], {"consts": [W(3, 3, 4, 2, seed=9)]},
                  {"padding": "SAME"}),
    "conv2d_transpose": ("conv2d_transpose", [IMG], {"consts": [W(3, 3, 2, 4, seed=10)]},
                         {"strides": (2, 2), "padding": "SAME"}),
    "matmul": ("matmul", [rand(5, 4), rand(4, 3, seed=1)], {}, {}),
    "matmul-batched": ("matmul", [rand(2, 5, 4), rand(2, 3, 4, seed=1)], {},
                       {"transpose_b": True}),
    "softmax": ("softmax", [X * 3], {}, {}),
    "log_softmax": ("log_softmax", [X * 3], {}, {"axis": 1}),
    "batch_norm": ("batch_norm", [IMG], {"consts": [rand(4, seed=11), POS[0, 0],
                                                    rand(4, seed=13), rand(4, seed=12)]}, {}),
    "layer_norm": ("layer_norm", [X], {"consts": [rand(4, seed=14), rand(4, seed=15)]}, {}),
    "resize-bilinear": ("resize", [IMG], {}, {"size": (13, 5), "half_pixel_centers": True}),
    "resize-nearest": ("resize", [IMG], {}, {"size": (14, 4), "method": "nearest"}),
    "reduce_sum": ("reduce_sum", [X], {}, {"axes": (1,)}),
    "reduce_mean-keep": ("reduce_mean", [X], {}, {"axes": (0, 2), "keepdims": True}),
    "reduce_max": ("reduce_max", [X], {}, {"axes": (-1,)}),
    "reduce_min": ("reduce_min", [X], {}, {"axes": (0,)}),
    "reduce_prod": ("reduce_prod", [X], {}, {"axes": (2,)}),
    "argmax": ("argmax", [X], {}, {"axis": 1}),
    "cumsum": ("cumsum", [X], {}, {"axis": 1}),
    "cumsum-exclusive-reverse": ("cumsum", [X], {}, {"axis": -1, "exclusive": True,
                                                     "reverse": True}),
    "argmin-i32": ("argmin", [X], {}, {"axis": -1, "output_type": DType.i32}),
    "reshape": ("reshape", [X], {}, {"shape": (4, -1)}),
    "transpose": ("transpose", [X], {}, {"perm": (2, 0, 1)}),
    "concat": ("concat", [X, X * 2, X[:, :1]], {}, {"axis": 1}),
    "split": ("split", [X], {}, {"axis": 2, "sizes": (1, 3)}),
    "slice": ("slice", [X], {}, {"begin": (0, 1, 1), "size": (-1, 2, 2)}),
    "strided_slice": ("strided_slice", [X], {}, {"begin": (0, 2, 0), "end": (2, 0, 4),
                                                 "strides": (1, -1, 2)}),
    "pad": ("pad", [X], {}, {"pads": ((0, 1), (2, 0), (1, 1)), "value": 1.5}),
    "pad-reflect": ("pad", [X], {}, {"pads": ((1, 1), (2, 1), (0, 3)), "mode": "reflect"}),
    "gather-i64": ("gather", [X], {"consts": [np.array([[2, 0], [1, 1]], np.int64)]},
                   {"axis": 1}),
    "broadcast_to": ("broadcast_to", [X[:, :1]], {}, {"shape": (5, 2, 3, 4)}),
    "squeeze": ("squeeze", [X[:, :1, :, None]], {}, {"axes": (1, -1)}),
    "expand_dims": ("expand_dims", [X], {}, {"axis": -1}),
    "tile": ("tile", [X], {}, {"multiples": (1, 2, 3)}),
}


def _cnn(batch="batch") -> Graph:
    return small_cnn_graph(batch, max_pool=True)


def _files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def _model_json(directory: Path) -> dict:
    return json.loads((directory / "model.json").read_text())


def _decode(x: np.ndarray, quantize: str) -> np.ndarray:
    """What TF.js holds after loading `x` compressed (written independently of the backend):
    float16 round trip, or affine uint8/uint16 over [min, max] nudged so 0.0 is a code."""
    if quantize == "float16":
        return x.astype(np.float16).astype(np.float32)
    qmax = 255 if quantize == "uint8" else 65535
    lo, hi = float(x.min()), float(x.max())
    if lo == hi:
        return x.copy()
    scale = (hi - lo) / qmax
    if lo <= 0 <= hi:
        lo = -round(-lo / scale) * scale
        hi = lo + qmax * scale
    q = np.round((np.clip(x, lo, hi) - lo) / scale)
    return (q.astype(np.float32) * np.float32(scale) + np.float32(lo)).astype(np.float32)


def _dequantized(g: Graph, quantize: str) -> Graph:
    """A clone of `g` whose float32 constants hold what TF.js decodes from the compressed
    weights (per IR constant, as the lowering keeps one TF constant per IR constant)."""
    g2 = g.clone()
    for node in g2:
        arr = node.attrs.get("value") if node.op == "constant" else None
        if arr is None or arr.dtype != np.float32:
            continue
        deq = _decode(np.asarray(arr), quantize)
        deq.flags.writeable = False
        node.attrs["value"] = deq
    return g2


# -- every op against the IR interpreter ---------------------------------------------------------

@pytest.fixture(scope="module")
def op_results(node_runner, tmp_path_factory):
    root = tmp_path_factory.mktemp("tfjs_ops")
    jobs, refs, errors = [], {}, {}
    for case, (op, arrays, extra, attrs) in CASES.items():
        g = op_graph(op, *arrays, consts=extra.get("consts", ()), **attrs)
        try:
            write_tfjs(Module([g]), root / case)
        except ConversionError as err:
            errors[case] = str(err)
            continue
        refs[case] = (run_graph(g, arrays), [f"output_{i}" for i in range(len(g.outputs))])
        jobs.append((case, root / case, {f"x{i}": a for i, a in enumerate(arrays)}))
    got = node_runner([(d, ins) for _, d, ins in jobs], root / "io")
    return {case: (refs[case], r) for (case, _, _), r in zip(jobs, got)}, errors


@pytest.mark.parametrize("case", list(CASES))
def test_op_matches_interpreter(case, op_results):
    results, errors = op_results
    assert case not in errors, errors.get(case)
    (ref, names), got = results[case]
    assert_matches(got, ref, names)


# -- a small conv net, symbolic batch, compression -----------------------------------------------

@pytest.fixture(scope="module")
def cnn_runs(node_runner, tmp_path_factory):
    """The CNN written float32, uint8, uint16, float16, and uint8 restricted to fc weights; each
    run at batch sizes 1 and 3 in one Node process."""
    root = tmp_path_factory.mktemp("tfjs_cnn")
    g = _cnn()
    variants = {"float": {}, "uint8": {"quantize": "uint8"}, "uint16": {"quantize": "uint16"},
                "float16": {"quantize": "float16"},
                "uint8-fc": {"quantize": "uint8", "quantize_globs": ["fc/*"]}}
    xs = {b: rand(b, 16, 16, 3, seed=b) for b in (1, 3)}
    jobs = []
    for name, kw in variants.items():
        write_tfjs(Module([g]), root / name, **kw)
        jobs += [(root / name, {"image": xs[b]}) for b in xs]
    got = node_runner(jobs, root / "io")
    runs = {(name, b): got[2 * i + j] for i, name in enumerate(variants)
            for j, b in enumerate(xs)}
    return g, root, xs, runs


def _weight_bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.glob("group1-shard*.bin"))


def test_cnn_float_symbolic_batch(cnn_runs):
    g, root, xs, runs = cnn_runs
    for b, x in xs.items():
        assert_matches(runs["float", b], run_graph(g, [x]), ["probs"])
    sig = _model_json(root / "float")["signature"]
    assert list(sig["inputs"]) == ["image"] and list(sig["outputs"]) == ["probs"]
    dims = [int(d["size"]) for d in sig["inputs"]["image"]["tensorShape"]["dim"]]
    assert dims == [-1, 16, 16, 3]
    ops = {n["op"] for n in _model_json(root / "float")["modelTopology"]["node"]}
    assert {"Conv2D", "DepthwiseConv2dNative", "MaxPool", "AvgPool", "Reshape", "MatMul",
            "Softmax", "Relu6"} <= ops
    assert ops <= TFJS_OPS


@pytest.mark.parametrize("quantize, ratio", [("uint8", 0.25), ("uint16", 0.5),
                                             ("float16", 0.5)])
def test_cnn_compressed_weights(cnn_runs, quantize, ratio):
    g, root, xs, runs = cnn_runs
    size, float_size = _weight_bytes(root / quantize), _weight_bytes(root / "float")
    assert ratio * float_size <= size <= (ratio + 0.02) * float_size, (size, float_size)
    manifest = _model_json(root / quantize)["weightsManifest"][0]["weights"]
    floats = [w for w in manifest if w["dtype"] == "float32"]
    assert floats and all(w["quantization"]["dtype"] == quantize for w in floats)
    assert all(w["quantization"]["original_dtype"] == "float32" for w in floats)
    assert all("quantization" not in w for w in manifest if w["dtype"] != "float32")
    deq = _dequantized(g, quantize)
    for b, x in xs.items():
        # Exactly what the compressed weights imply: the IR with dequantized weights...
        assert_matches(runs[quantize, b], run_graph(deq, [x]), ["probs"])
        # ...and close to the float model (probabilities).
        err = np.abs(runs[quantize, b]["probs"] - run_graph(g, [x])[0]).max()
        assert err < {"uint8": 2e-2, "uint16": 1e-4, "float16": 1e-3}[quantize], err


def test_quantize_globs_restrict_compression(cnn_runs):
    g, root, xs, runs = cnn_runs
    manifest = _model_json(root / "uint8-fc")["weightsManifest"][0]["weights"]
    quantized = [w["name"] for w in manifest if "quantization" in w]
    assert quantized and all(n.startswith("fc/") for n in quantized)
    assert any(w["dtype"] == "float32" and "quantization" not in w for w in manifest)
    for b, x in xs.items():
        np.testing.assert_allclose(runs["uint8-fc", b]["probs"], run_graph(g, [x])[0],
                                   atol=2e-2)


def test_uint8_affine_quantization_nudges_zero():
    x = np.array([-1.0, -0.3, 0.0, 0.5, 2.0], np.float32)
    q, meta = quantize_weight(x, "uint8")
    assert q.dtype == np.uint8 and meta["dtype"] == "uint8"
    deq = q * meta["scale"] + meta["min"]
    assert deq[2] == 0.0                                      # 0 is exact
    assert np.abs(deq - x).max() <= meta["scale"] / 2 + 1e-7
    assert meta["scale"] == pytest.approx(3.0 / 255)
    q, meta = quantize_weight(np.full(4, 0.7, np.float32), "uint16")   # a single value
    assert (q == 0).all() and meta["scale"] == 1.0 and meta["min"] == pytest.approx(0.7)


# -- model.json, determinism, shards -------------------------------------------------------------

def test_model_json_structure(tmp_path):
    g = _cnn()
    m = Module([g], {"input_names": ["pixels"], "output_names": ["scores"],
                     "source": "test"})
    write_tfjs(m, tmp_path / "m")
    model = _model_json(tmp_path / "m")
    assert model["format"] == "graph-model"
    assert model["convertedBy"].startswith("tensorforge ")
    import tensorflow as tf
    assert model["generatedBy"] == tf.__version__
    assert list(model["signature"]["inputs"]) == ["pixels"]
    assert list(model["signature"]["outputs"]) == ["scores"]
    assert model["userDefinedMetadata"]["source"] == "test"
    nodes = model["modelTopology"]["node"]
    consts = [n for n in nodes if n["op"] == "Const"]
    manifest = model["weightsManifest"]
    assert len(manifest) == 1 and manifest[0]["paths"] == ["group1-shard1of1.bin"]
    names = [w["name"] for w in manifest[0]["weights"]]
    assert names == [n["name"] for n in consts]      # every Const value is a weight, in order
    for n in consts:
        assert "dtype" in n["attr"]
        tensor = n["attr"]["value"]["tensor"]
        assert set(tensor) <= {"dtype", "tensorShape"}   # the value lives in the weights
    sizes = {"float32": 4, "int32": 4, "bool": 1}
    total = sum(int(np.prod(w["shape"])) * sizes[w["dtype"]] for w in manifest[0]["weights"])
    assert total == _weight_bytes(tmp_path / "m")
    assert not [n for n in nodes if n["op"] in ("NoOp", "Identity") and n["name"] != "Identity"]
    assert [p.name for p in tmp_path.iterdir()] == ["m"]   # no temporary siblings left


def test_64_bit_weights_are_narrowed(tmp_path):
    g = op_graph("gather", X, consts=[np.array([[2, 0], [1, 1]], np.int64)], axis=1)
    write_tfjs(Module([g]), tmp_path / "m")
    dtypes = {w["dtype"] for w in _model_json(tmp_path / "m")["weightsManifest"][0]["weights"]}
    assert dtypes <= {"float32", "int32", "bool"}


def test_byte_identical_output(tmp_path):
    g = _cnn()
    write_tfjs(Module([g]), tmp_path / "a", quantize="uint8")
    write_tfjs(Module([g.clone()]), tmp_path / "b", quantize="uint8")
    write_tfjs(Module([g]), tmp_path / "a", quantize="uint8")       # rewriting in place
    assert _files(tmp_path / "a") == _files(tmp_path / "b")


def test_large_weight_is_split_into_4mib_shards(tmp_path, node_runner):
    g = Graph()
    x = g.add_input(TensorType(DType.f32, ("batch", 1100)), "x")
    w = g.constant(rand(1100, 1000, seed=3) * 0.05, "big")       # 4.4 MB
    g.set_outputs([g.add("matmul", [x, w], names=["y"]).output])
    write_tfjs(Module([g]), tmp_path / "m")
    files = _files(tmp_path / "m")
    assert sorted(files) == ["group1-shard1of2.bin", "group1-shard2of2.bin", "model.json"]
    assert len(files["group1-shard1of2.bin"]) == SHARD_BYTES
    paths = _model_json(tmp_path / "m")["weightsManifest"][0]["paths"]
    assert paths == ["group1-shard1of2.bin", "group1-shard2of2.bin"]
    xin = rand(2, 1100, seed=4)
    (got,) = node_runner([(tmp_path / "m", {"x": xin})], tmp_path / "io")
    assert_matches(got, run_graph(g, [xin]), ["y"])


# -- errors and atomic writes --------------------------------------------------------------------

if not has_op("test_unlowerable"):
    register_op(OpDef("test_unlowerable", ("x",), lambda t, a: [t[0]], lambda i, a: [i[0]],
                      doc="An op no backend lowers (tests only)."))


def test_unsupported_ir_ops_are_all_listed_and_nothing_written(tmp_path):
    g = Graph()
    x = g.add_input(TensorType(DType.f32, (2, 3)), "x")
    a = g.add("test_unlowerable", [x], scope="block1/odd", loc="keras:Odd", names=["a"]).output
    b = g.add("relu", [a]).output
    c = g.add("test_unlowerable", [b], scope="block2/odd", names=["c"]).output
    g.set_outputs([c])
    with pytest.raises(ConversionError) as err:
        write_tfjs(Module([g]), tmp_path / "m")
    assert [(d.node, d.scope) for d in err.value.diagnostics] == [
        ("%a = test_unlowerable", "block1/odd"), ("%c = test_unlowerable", "block2/odd")]
    assert "block1/odd" in str(err.value) and "block2/odd" in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_ops_outside_tfjs_allowlist_are_all_listed(tmp_path):
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec([None, 3, 3], tf.float32, name="x")])
    def f(x):
        with tf.name_scope("block1"):
            a = tf.math.lgamma(x)                       # Lgamma: not in TF.js
        with tf.name_scope("block2"):
            b = tf.linalg.det(a)                        # MatrixDeterminant: not in TF.js
        return {"y": tf.nn.relu(b)}

    # A previous artifact in the target survives the failed write untouched.
    write_tfjs(Module([_cnn()]), tmp_path / "m")
    before = _files(tmp_path / "m")
    with pytest.raises(ConversionError) as err:
        write_tfjs_function(f.get_concrete_function(), tmp_path / "m")
    found = {(d.node.split(" = ")[1], d.scope) for d in err.value.diagnostics}
    assert found == {("Lgamma", "block1"), ("MatrixDeterminant", "block2")}
    assert _files(tmp_path / "m") == before
    assert [p.name for p in tmp_path.iterdir()] == ["m"]


def test_refuses_to_replace_a_foreign_directory(tmp_path):
    target = tmp_path / "m"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    with pytest.raises(ConversionError, match="not a TF.js artifact"):
        write_tfjs(Module([_cnn()]), target)
    assert _files(target) == {"notes.txt": b"mine"}
    assert [p.name for p in tmp_path.iterdir()] == ["m"]


def test_bad_quantize_option(tmp_path):
    with pytest.raises(ConversionError, match="quantize"):
        write_tfjs(Module([_cnn()]), tmp_path / "m", quantize="int4")
    assert list(tmp_path.iterdir()) == []


def test_quantization_ops(tmp_path, node_runner):
    """quantize -> dequantize, fake_quant and int8 weights behind dequantize: the int8 codes
    travel as int32 weights (TF.js has no int8) and the float results still match."""
    x = rand(3, 8) * 2
    w = np.random.default_rng(0).integers(-127, 128, (8, 5)).astype(np.int8)
    g = Graph()
    xv = g.add_input(ttype(x), "x")
    q8 = g.add("quantize", [xv], {"scale": (0.02,), "zero_point": (5,)}).output
    deq = g.add("dequantize", [q8], {"scale": (0.02,), "zero_point": (5,)}, names=["deq"])
    fq = g.add("fake_quant", [xv], {"scale": (0.05,), "zero_point": (-3,),
                                    "narrow_range": True}, names=["fq"])
    wf = g.add("dequantize", [g.constant(w, "w_q")],
               {"scale": tuple(np.linspace(0.01, 0.05, 5)), "zero_point": (0,) * 5,
                "axis": 1}).output
    mm = g.add("matmul", [xv, wf], names=["mm"])
    g.set_outputs([deq.output, fq.output, mm.output])
    write_tfjs(Module([g]), tmp_path / "m")
    (got,) = node_runner([(tmp_path / "m", {"x": x})], tmp_path / "io")
    assert_matches(got, run_graph(g, [x]), ["deq", "fq", "mm"])


def test_tfjs_problems():
    assert tfjs_problems(Module([_cnn()])) == []
    g = Graph()
    x = g.add_input(TensorType(DType.f32, (2, 3)), "x")
    a = g.add("test_unlowerable", [x], scope="s1", names=["a"]).output
    g.set_outputs([g.add("test_unlowerable", [a], scope="s2", names=["b"]).output])
    assert [p.scope for p in tfjs_problems(Module([g]))] == ["s1", "s2"]


def test_outputs_that_are_inputs_constants_or_repeated(tmp_path, node_runner):
    g = Graph()
    x = g.add_input(TensorType(DType.f32, ("batch", 4)), "x")
    i = g.add("identity", [x]).output
    c = g.constant(np.arange(3, dtype=np.int32), "c")
    y = g.add("relu", [g.add("identity", [i]).output]).output
    g.set_outputs([i, c, y, y, x])
    names = ["ident", "const", "y", "y_again", "x_out"]
    write_tfjs(Module([g], {"output_names": names}), tmp_path / "m")
    xin = rand(2, 4)
    (got,) = node_runner([(tmp_path / "m", {"x": xin})], tmp_path / "io")
    assert_matches(got, run_graph(g, [xin]), names)
