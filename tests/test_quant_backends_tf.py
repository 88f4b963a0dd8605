"""Quantized (QDQ) IR through the SavedModel and TF.js backends.

The QDQ form (docs/design/quantization.md, stage 3) is built by hand: integer weight constants
(int8 per-channel / per-tensor, int4) behind `dequantize`, int32 (int64 when the IR allows it)
biases behind `dequantize`, `quantize`->`dequantize` pairs on activations (int8 and int16),
and a float16 weight behind `cast`. Each graph is saved as a SavedModel (loaded and run in TF)
and written as a TF.js graph model (run in Node with @tensorflow/tfjs, all models in one
process), and compared with the IR interpreter. Also checked: integer weights stay integer in
the SavedModel (int8 variables) and take 1 byte per element in the TF.js shards (< 0.35x the
float model), exact rounding at ties (half away from zero, which TF.js's Round is not).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from tensorforge.backends.savedmodel import write_savedmodel
from tensorforge.backends.tfjs import TFJS_OPS, write_tfjs
from tensorforge.ir import DType, Graph, Module, TensorType
from tensorforge.ir.interpreter import run_graph
from tensorforge.ir.ops.quant import QUANT_DTYPES
from tensorforge.ir.types import QuantParams
from tensorforge.tools.node_runner import ensure_harness, run_jobs

from op_helpers import rand  # noqa: E402

# int16 activations take int64 biases when the IR's dequantize accepts them.
BIAS16 = DType.i64 if DType.i64 in QUANT_DTYPES else DType.i32


# -- QDQ building blocks -------------------------------------------------------------------------

def _f32(values) -> tuple[float, ...]:
    """Scales as float32-representable numbers (what TFLite stores)."""
    return tuple(float(np.float32(v)) for v in np.ravel(values))


def qweight(g: Graph, w: np.ndarray, axis: int | None, dtype=DType.i8, name=None):
    """Symmetric (narrow-range) quantized constant of `w` -> dequantize; returns (float value,
    scales)."""
    qmax = (1 << (dtype.bits - 1)) - 1
    if axis is None:
        scale = np.array([np.abs(w).max() / qmax])
        bshape = (1,) * w.ndim
    else:
        other = tuple(i for i in range(w.ndim) if i != axis)
        scale = np.abs(w).max(axis=other) / qmax
        bshape = [1] * w.ndim
        bshape[axis] = -1
    scale = np.asarray(_f32(scale))
    q = np.clip(np.round(w / scale.reshape(bshape)), -qmax, qmax).astype(np.int64)
    v = g.constant(q.astype(dtype.np), name)
    v.quant = QuantParams(tuple(scale), (0,) * len(scale), axis, dtype.bits, True, True)
    out = g.add("dequantize", [v], {"scale": tuple(scale), "zero_point": (0,) * len(scale),
                                    "axis": axis}).output
    return out, scale


def qbias(g: Graph, b: np.ndarray, in_scale: float, w_scale: np.ndarray, dtype=DType.i32):
    """Bias codes with scale = input scale x weight scale, zero point 0 -> dequantize."""
    scale = np.asarray(_f32(in_scale * w_scale))
    q = np.round(b / scale).astype(dtype.np)
    v = g.constant(q)
    axis = 0 if len(scale) > 1 else None
    v.quant = QuantParams(tuple(scale), (0,) * len(scale), axis, dtype.bits)
    return g.add("dequantize", [v], {"scale": tuple(scale), "zero_point": (0,) * len(scale),
                                     "axis": axis}).output


def qdq(g: Graph, x, scale: float, zp: int, dtype=DType.i8, names=None):
    """An activation quantize -> dequantize pair (per tensor)."""
    attrs = {"scale": _f32([scale]), "zero_point": (zp,)}
    q = g.add("quantize", [x], {**attrs, "dtype": dtype}).output
    return g.add("dequantize", [q], attrs, names=names).output


# -- the graphs ----------------------------------------------------------------------------------

# Activation scales (int8). S_POOL is deliberately not a simple ratio of S2: the mean of four
# S2-grid values re-quantized with S2 itself lands on exact ties (k + 1/2) all the time, where
# float32 (TF) and float64-then-float32 (IR) accumulation legitimately round apart.
S_IN, S1, S2, S_POOL, S3 = 0.02, 0.025, 0.02, 0.0213, 0.06


def cnn(quantized: bool) -> Graph:
    """small_cnn_graph's net (conv + depthwise per-channel int8, per-tensor int8 matmul with
    bias, int8 activations), or the same net with the float weights (`quantized=False`)."""
    g = Graph()
    x = g.add_input(TensorType(DType.f32, ("batch", 16, 16, 3)), "image")
    w1, b1 = rand(3, 3, 3, 8, seed=1) * 0.3, rand(8, seed=2) * 0.3
    w2, b2 = rand(3, 3, 8, 1, seed=3) * 0.3, rand(8, seed=4) * 0.3
    w3, b3 = rand(128, 10, seed=5) * 0.3, rand(10, seed=6) * 0.3
    conv = {"strides": (2, 2), "padding": "SAME", "activation": "relu6"}
    dw = {"padding": "SAME", "activation": "relu6"}
    if not quantized:
        h = g.add("conv2d", [x, g.constant(w1), g.constant(b1)], conv, scope="conv1").output
        h = g.add("depthwise_conv2d", [h, g.constant(w2), g.constant(b2)], dw,
                  scope="dw").output
    else:
        h = qdq(g, x, S_IN, 3)
        fw, ws = qweight(g, w1, axis=3, name="conv1/kernel")
        h = g.add("conv2d", [h, fw, qbias(g, b1, S_IN, ws)], conv, scope="conv1").output
        h = qdq(g, h, S1, -128)
        fw, ws = qweight(g, w2, axis=2, name="dw/kernel")
        h = g.add("depthwise_conv2d", [h, fw, qbias(g, b2, S1, ws)], dw, scope="dw").output
        h = qdq(g, h, S2, -128)
    h = g.add("avg_pool2d", [h], {"ksize": (2, 2), "strides": (2, 2)}, scope="pool").output
    h = g.add("reshape", [h], {"shape": (-1, 128)}, scope="flatten").output
    if not quantized:
        h = g.add("matmul", [h, g.constant(w3), g.constant(b3)], scope="fc",
                  names=["logits"]).output
    else:
        h = qdq(g, h, S_POOL, -128)
        fw, ws = qweight(g, w3, axis=None, name="fc/kernel")
        h = g.add("matmul", [h, fw, qbias(g, b3, S_POOL, ws)], scope="fc").output
        h = qdq(g, h, S3, 5, names=["logits"])
    g.set_outputs([g.add("softmax", [h], scope="fc", names=["probs"]).output, h])
    return g


def mlp(quantized: bool, n: int = 256) -> Graph:
    """Two dense layers (per-channel int8 weights): the weight-bytes comparison."""
    g = Graph()
    x = g.add_input(TensorType(DType.f32, ("batch", n)), "x")
    h = x
    for i, (k, m) in enumerate(((n, n), (n, 16))):
        w, b = rand(k, m, seed=10 + i) * 0.1, rand(m, seed=20 + i) * 0.1
        if quantized:
            h = qdq(g, h, 0.05, 0)
            fw, ws = qweight(g, w, axis=1, name=f"fc{i}/kernel")
            h = g.add("matmul", [h, fw, qbias(g, b, 0.05, ws)], scope=f"fc{i}").output
        else:
            h = g.add("matmul", [h, g.constant(w, f"fc{i}/kernel"), g.constant(b)],
                      scope=f"fc{i}").output
    g.set_outputs([g.add("identity", [h], names=["y"]).output])
    return g


def mlp_i16() -> Graph:
    """int16 activations (int16x8): per-channel int8 weights, int64 (or int32) bias."""
    g = Graph()
    x = g.add_input(TensorType(DType.f32, ("batch", 24)), "x")
    h = qdq(g, x, 1e-4, 0, DType.i16)
    fw, ws = qweight(g, rand(24, 12, seed=30) * 0.2, axis=1, name="fc/kernel")
    h = g.add("matmul", [h, fw, qbias(g, rand(12, seed=31) * 0.2, 1e-4, ws, BIAS16)],
              {"activation": "relu"}, scope="fc").output
    g.set_outputs([qdq(g, h, 2e-4, 0, DType.i16, names=["y"])])
    return g


def mlp_i4() -> Graph:
    """int4 per-channel weights on a transposed matmul (axis 0 of [N, K]) plus a per-tensor
    int4 weight, int8 activations."""
    g = Graph()
    x = g.add_input(TensorType(DType.f32, ("batch", 32)), "x")
    h = qdq(g, x, 0.03, -4)
    fw, ws = qweight(g, rand(20, 32, seed=40) * 0.2, axis=0, dtype=DType.i4, name="fc1/kernel")
    h = g.add("matmul", [h, fw, qbias(g, rand(20, seed=41) * 0.1, 0.03, ws)],
              {"transpose_b": True, "activation": "relu"}, scope="fc1").output
    h = qdq(g, h, 0.04, -128)
    fw, ws = qweight(g, rand(20, 6, seed=42) * 0.2, axis=None, dtype=DType.i4, name="fc2/kernel")
    h = g.add("matmul", [h, fw], scope="fc2").output
    g.set_outputs([qdq(g, h, 0.05, 0, names=["y"])])
    return g


def fp16() -> Graph:
    """A float16 weight behind `cast` to float32 (fp16 weight storage)."""
    g = Graph()
    x = g.add_input(TensorType(DType.f32, ("batch", 40)), "x")
    w = g.constant((rand(40, 30, seed=50) * 0.2).astype(np.float16), "fc/kernel")
    wf = g.add("cast", [w], {"to": DType.f32}).output
    g.set_outputs([g.add("matmul", [x, wf], scope="fc", names=["y"]).output])
    return g


TIE_SCALE = 0.25   # a power of two: x / scale is exact, so x = (k + 1/2) * scale is a true tie


def ties() -> Graph:
    """Exact ties for quantize (int8 and int16, with zero points) and fake_quant."""
    g = Graph()
    x = g.add_input(TensorType(DType.f32, (16,)), "x")
    a = qdq(g, x, TIE_SCALE, 3, names=["i8"])
    b = qdq(g, x, TIE_SCALE, -7, DType.i16, names=["i16"])
    c = g.add("quantize", [x], {"scale": (TIE_SCALE,), "zero_point": (1,)},
              names=["codes"]).output
    g.set_outputs([a, b, c])
    return g


def _inputs(name: str, batch: int) -> dict[str, np.ndarray]:
    if name.startswith("cnn"):
        return {"image": rand(batch, 16, 16, 3, seed=batch)}
    if name.startswith("mlp-"):
        return {"x": rand(batch, 256, seed=batch) * 2}
    if name == "ties":
        k = np.arange(-8, 8, dtype=np.float32)
        return {"x": ((k + 0.5) * TIE_SCALE).astype(np.float32)}
    n = {"i16": 24, "i4": 32, "fp16": 40}[name]
    return {"x": rand(batch, n, seed=batch)}


GRAPHS = {"cnn-q": lambda: cnn(True), "cnn-f": lambda: cnn(False),
          "mlp-q": lambda: mlp(True), "mlp-f": lambda: mlp(False),
          "i16": mlp_i16, "i4": mlp_i4, "fp16": fp16, "ties": ties}
BATCHES = (1, 3)


# -- comparison ----------------------------------------------------------------------------------

def _steps(graph: Graph) -> dict[str, float]:
    """Output name -> its quantization step (outputs behind a dequantize), else 0."""
    out = {}
    for v in graph.outputs:
        p = v.producer
        out[v.name] = p.attrs["scale"][0] if p is not None and p.op == "dequantize" else 0.0
    return out


def assert_close(graph: Graph, got: dict, ref: list[np.ndarray], what: str):
    """Float outputs within 1e-5 relative; a dequantized output may differ by one quantization
    step where float accumulation order moved a value across a rounding boundary (rare: at
    most 1% of the elements), and a float output computed from it (softmax) by half a step."""
    assert not isinstance(got, str), f"{what} failed:\n{got}"
    steps = _steps(graph)
    flips = max((steps[v.name] for v, r in zip(graph.outputs, ref)
                 if steps[v.name] and not np.allclose(got[v.name], r, rtol=1e-5, atol=1e-7)),
                default=0.0)
    for v, r in zip(graph.outputs, ref):
        o = np.asarray(got[v.name])
        assert o.shape == r.shape, (what, v.name, o.shape, r.shape)
        if r.dtype.kind in "iu":
            np.testing.assert_array_equal(o.astype(np.int64), r.astype(np.int64),
                                          err_msg=f"{what} {v.name}")
            continue
        r = r.astype(np.float64)
        diff = np.abs(o - r)
        # 1e-5 relative to the output's magnitude: float32 accumulation (TF) vs float64 (IR)
        # of hundreds of terms that partly cancel.
        close = diff <= 1e-5 * (np.abs(r) + np.abs(r).max()) + 1e-7
        step = steps[v.name]
        if step == 0:
            assert (diff <= flips / 2 if flips else close).all(), (what, v.name, diff.max())
        else:
            assert (diff <= step * 1.0001 + 1e-7).all(), (what, v.name, diff.max(), step)
            assert (~close).mean() <= 0.01, (what, v.name, int((~close).sum()))


# -- fixtures ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Every graph written as a SavedModel: name -> (graph, directory)."""
    root = tmp_path_factory.mktemp("qsm")
    out = {}
    for name, make in GRAPHS.items():
        g = make()
        write_savedmodel(Module([g]), root / name)
        out[name] = (g, root / name)
    return out


@pytest.fixture(scope="module")
def tfjs(tmp_path_factory):
    """Every graph written as TF.js and run at batch 1 and 3 in one Node process: name ->
    (graph, directory, {batch: (inputs, outputs)})."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node/npm not on PATH: TF.js models are checked by running them in Node")
    ensure_harness(force=os.environ.get("TENSORFORGE_NPM_CI") == "1")
    root = tmp_path_factory.mktemp("qtfjs")
    graphs, jobs, keys = {}, [], []
    for name, make in GRAPHS.items():
        g = make()
        write_tfjs(Module([g]), root / name)
        graphs[name] = g
        for b in (BATCHES if name != "ties" else (1,)):
            ins = _inputs(name, b)
            jobs.append((root / name, ins))
            keys.append((name, b, ins))
    got = run_jobs(jobs, root / "io")
    runs: dict = {}
    for (name, b, ins), r in zip(keys, got):
        runs.setdefault(name, {})[b] = (ins, r)
    return {name: (graphs[name], root / name, runs[name]) for name in graphs}


# -- SavedModel ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(GRAPHS))
def test_savedmodel_matches_interpreter(saved, name):
    g, path = saved[name]
    fn = tf.saved_model.load(str(path)).signatures["serving_default"]
    for b in (BATCHES if name != "ties" else (1,)):
        ins = _inputs(name, b)
        got = {k: v.numpy() for k, v in fn(**{k: tf.constant(a) for k, a in ins.items()}).items()}
        assert_close(g, got, run_graph(g, list(ins.values())), f"savedmodel {name} b={b}")


def _variable_dtypes(path: Path) -> dict[str, str]:
    """Variable name -> dtype name, as the saved checkpoint holds them."""
    loaded = tf.saved_model.load(str(path))
    reader = tf.train.load_checkpoint(str(path / "variables" / "variables"))
    stored = {k: tf.as_dtype(d).name for k, d in reader.get_variable_to_dtype_map().items()
              if "OBJECT_GRAPH" not in k}
    # The tf.Module keeps its variables in `weights`, saved as weights/<i>/.ATTRIBUTES/...
    out = {}
    for i, v in enumerate(loaded.weights):
        out[v.name.split(":")[0]] = stored[f"weights/{i}/.ATTRIBUTES/VARIABLE_VALUE"]
    assert len(out) == len(stored)
    return out


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def test_savedmodel_integer_weights(saved, capsys):
    """int8 (and int4, stored as int8) weights are int8 variables; biases int32/int64; the
    float16 weight stays float16; the variables shrink about 4x."""
    def by_kind(name):
        return {d for k, d in _variable_dtypes(saved[name][1]).items() if "kernel" in k}
    assert by_kind("cnn-q") == {"int8"}
    assert by_kind("mlp-q") == {"int8"}
    assert by_kind("i4") == {"int8"}
    assert by_kind("fp16") == {"float16"}
    biases = {d for k, d in _variable_dtypes(saved["mlp-q"][1]).items() if "kernel" not in k}
    assert biases == {"int32"}, biases
    sizes = {}
    for q, f in (("mlp-q", "mlp-f"), ("cnn-q", "cnn-f")):
        qb, fb = _dir_bytes(saved[q][1] / "variables"), _dir_bytes(saved[f][1] / "variables")
        sizes[q] = (qb, fb, round(qb / fb, 3))
    with capsys.disabled():
        print(f"\nSavedModel variables/ bytes (quantized, float, ratio): {sizes}")
    assert sizes["mlp-q"][2] < 0.3, sizes   # 256x256 + 256x16 int8 kernels, int32 biases


# -- TF.js ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(GRAPHS))
def test_tfjs_matches_interpreter(tfjs, name):
    g, _, runs = tfjs[name]
    for b, (ins, got) in runs.items():
        assert_close(g, got, run_graph(g, list(ins.values())), f"tfjs {name} b={b}")


def test_ties_round_half_away_from_zero(tfjs, saved):
    """Exact ties: codes k + 1/2 round away from zero in both backends (TF.js's Round would give
    half-to-even)."""
    g, _, runs = tfjs["ties"]
    x = _inputs("ties", 1)["x"]
    want = np.trunc(x / TIE_SCALE + np.copysign(0.5, x))
    ref = run_graph(g, [x])
    np.testing.assert_array_equal(ref[2], np.clip(want + 1, -128, 127))
    got = runs[1][1]
    np.testing.assert_array_equal(got["codes"], ref[2])
    np.testing.assert_array_equal(got["i8"], ref[0])
    np.testing.assert_array_equal(got["i16"], ref[1])
    fn = tf.saved_model.load(str(saved["ties"][1])).signatures["serving_default"]
    out = fn(x=tf.constant(x))
    assert out["codes"].dtype == tf.int8
    np.testing.assert_array_equal(out["codes"].numpy(), ref[2])


def _model(path: Path) -> dict:
    return json.loads((path / "model.json").read_text())


def _shard_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.glob("group1-shard*.bin"))


def test_tfjs_graph_and_manifest(tfjs):
    """Only TF.js ops, no Round (half-to-even) and no Cast left on the weight codes; int8/int4
    kernels stored as uint8 codes (min = -128, scale 1) decoded to float32."""
    for name in ("cnn-q", "mlp-q", "i16", "i4"):
        _, path, _ = tfjs[name]
        model = _model(path)
        nodes = model["modelTopology"]["node"]
        ops = {n["op"] for n in nodes}
        assert ops <= TFJS_OPS and "Round" not in ops, (name, ops)
        weights = {w["name"]: w for w in model["weightsManifest"][0]["weights"]}
        kernels = [w for k, w in weights.items() if "kernel" in k]
        assert kernels, (name, sorted(weights))
        for w in kernels:
            assert w["dtype"] == "float32"
            assert w["quantization"] == {"dtype": "uint8", "min": -128.0, "scale": 1.0,
                                         "original_dtype": "float32"}, (name, w)
        consts = {n["name"] for n in nodes if n["op"] == "Const"}
        casts_of_consts = [n for n in nodes if n["op"] == "Cast"
                           and n["input"][0].split(":")[0] in consts]
        assert not casts_of_consts, (name, casts_of_consts)
    fp16 = _model(tfjs["fp16"][1])["weightsManifest"][0]["weights"]
    assert [w["quantization"]["dtype"] for w in fp16] == ["float16"]


def test_tfjs_int8_weight_bytes(tfjs, capsys):
    """int8-weight models' shards are about 1/4 of the float model's."""
    ratios = {}
    for q, f in (("mlp-q", "mlp-f"), ("cnn-q", "cnn-f")):
        qb, fb = _shard_bytes(tfjs[q][1]), _shard_bytes(tfjs[f][1])
        ratios[q] = (qb, fb, qb / fb)
    with capsys.disabled():
        print(f"\nTF.js weight bytes (quantized, float, ratio): {ratios}")
    for q, (qb, fb, r) in ratios.items():
        assert r < 0.35, (q, qb, fb)
