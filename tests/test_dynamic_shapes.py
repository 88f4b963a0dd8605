"""Run-time shapes: the IR's shape_of / dynamic_* / range ops, their canonicalization back to
static ops, every backend running one artifact at several sizes, and Keras models whose
shape arithmetic (positions, slices, tiles, reshapes into heads) depends on the run-time
batch and sequence length."""

from __future__ import annotations

import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter

import tensorforge
from tensorforge.ir import DType, Graph, Module, TensorType
from tensorforge.ir.errors import InferenceError
from tensorforge.ir.interpreter import run_graph
from tensorforge.ir.text import parse_module, print_module
from tensorforge.ir.verify import verify_module
from tensorforge.passes import PassManager

from op_helpers import infer, rand, run  # noqa: E402

I32 = DType.i32


def _i32(*values):
    return np.asarray(values, np.int32)


# -- the ops -----------------------------------------------------------------------------------

def test_shape_of_and_dynamic_op_kernels_match_their_types():
    x = rand(2, 3, 4)
    assert run("shape_of", [x])[0].tolist() == [2, 3, 4]
    assert run("shape_of", [x], dtype=DType.i64)[0].dtype == np.int64
    assert run("dynamic_reshape", [x, _i32(2, -1)], dims=[2, 12])[0].shape == (2, 12)
    assert run("dynamic_broadcast_to", [rand(3, 1), _i32(2, 3, 4)],
               dims=[2, 3, 4])[0].shape == (2, 3, 4)
    np.testing.assert_array_equal(run("dynamic_tile", [x, _i32(1, 2, 1)], dims=[2, 6, 4])[0],
                                  np.tile(x, (1, 2, 1)))
    np.testing.assert_array_equal(
        run("dynamic_slice", [x, _i32(0, 1, 0), _i32(-1, 2, 3)], dims=[2, 2, 3])[0],
        x[:, 1:3, 0:3])
    got = run("range", [np.asarray(1.0, np.float32), np.asarray(2.0, np.float32),
                        np.asarray(0.25, np.float32)], dims=[4])[0]
    np.testing.assert_array_equal(got, [1.0, 1.25, 1.5, 1.75])
    np.testing.assert_array_equal(
        run("dynamic_strided_slice", [x, _i32(0, -2), _i32(0, 0), _i32(1, -1)], end_mask=1,
            dims=[2, 1, 4])[0], x[:, 1:0:-1])
    b = np.array([[True, False], [True, True]])
    assert run("reduce_all", [b], axes=[1])[0].tolist() == [False, True]
    assert run("reduce_any", [b], axes=[0])[0].tolist() == [True, True]


def test_dynamic_op_inference():
    seq = TensorType(DType.f32, ("batch", "seq", 8))
    shape3 = TensorType(I32, (3,))
    # Without dims every operand-given size is unknown; with them the frontend's knowledge.
    assert infer("dynamic_reshape", [seq, shape3])[0].shape == ("?", "?", "?")
    assert infer("dynamic_reshape", [seq, shape3], dims=["batch", "seq", 8])[0] == seq
    # A static size > 1 of the operand fixes the broadcast result's dim.
    t = TensorType(DType.f32, (1, 8))
    assert infer("dynamic_broadcast_to", [t, shape3])[0].shape == ("?", "?", 8)
    assert infer("range", [TensorType(I32, ())] * 3, dims=["seq"])[0].shape == ("seq",)
    with pytest.raises(InferenceError, match="must be 1-D"):
        infer("dynamic_reshape", [seq, TensorType(I32, (3, 1))])
    with pytest.raises(InferenceError, match="static length"):
        infer("dynamic_reshape", [seq, TensorType(I32, ("n",))])
    with pytest.raises(InferenceError, match="contradicts the static size 8"):
        infer("dynamic_broadcast_to", [t, shape3], dims=["batch", "seq", 4])
    with pytest.raises(InferenceError, match="rank 3"):
        infer("dynamic_tile", [seq, TensorType(I32, (2,))])
    with pytest.raises(InferenceError, match="differ in dtype"):
        infer("range", [TensorType(I32, ()), TensorType(DType.f32, ()), TensorType(I32, ())])
    with pytest.raises(InferenceError, match="takes bool operands"):
        infer("reduce_all", [seq])


def test_dynamic_slice_out_of_range_is_an_error_not_a_clip():
    with pytest.raises(IndexError, match="outside dim 1"):
        run("dynamic_slice", [rand(2, 3), _i32(0, 2), _i32(1, 2)], dims=[1, 2])


# -- one graph, every backend, several sizes ---------------------------------------------------

def dynamic_graph() -> Module:
    """Shape arithmetic on a [batch, seq, 4] input: positions 0..seq, a flatten and an
    unflatten with two run-time dims, a tile and a broadcast to the input's shape, a slice of
    seq - 1 rows, a logical reduction, and a pad by seq rows."""
    g = Graph()
    x = g.add_input(TensorType(DType.f32, ("batch", "seq", 4)), "x")
    c = lambda *v: g.constant(_i32(*v))  # noqa: E731
    s = g.add("shape_of", [x]).output
    b = g.add("slice", [s], {"begin": [0], "size": [1]}).output
    n = g.add("slice", [s], {"begin": [1], "size": [1]}).output
    n1 = g.add("add", [n, c(1)]).output
    lim = g.add("reshape", [n1], {"shape": []}).output
    zero, one = g.constant(np.asarray(0, np.int32)), g.constant(np.asarray(1, np.int32))
    positions = g.add("range", [zero, lim, one]).output                       # [seq + 1]
    posf = g.add("cast", [positions], {"to": DType.f32}).output
    flat = g.add("dynamic_reshape", [x, g.add("concat", [b, c(-1)], {"axis": 0}).output],
                 {"dims": ["batch", "?"]}).output
    back = g.add("dynamic_reshape", [flat, s], {"dims": ["batch", "seq", 4]}).output
    mult = g.add("concat", [b, n, c(1)], {"axis": 0}).output
    tiled = g.add("dynamic_tile", [g.constant(rand(1, 1, 4, seed=3)), mult],
                  {"dims": ["batch", "seq", 4]}).output
    row = g.add("reshape", [g.add("slice", [posf], {"begin": [0], "size": [-1]}).output],
                {"shape": [-1, 1]}).output
    wide = g.add("dynamic_slice", [row, c(1, 0), g.add("concat", [n, c(1)], {"axis": 0}).output],
                 {"dims": ["seq", 1]}).output
    bcast = g.add("dynamic_broadcast_to", [wide, s], {"dims": ["batch", "seq", 4]}).output
    y = g.add("add", [g.add("add", [back, tiled]).output, bcast], names=["y"]).output
    size = g.add("concat", [c(-1), g.add("sub", [n, c(1)]).output, c(-1)], {"axis": 0}).output
    tail = g.add("dynamic_slice", [x, c(0, 1, 0), size], names=["tail"],
                 attrs={"dims": ["batch", "?", 4]}).output
    anyp = g.add("reduce_any", [g.add("greater", [x, g.constant(np.float32(1.0))]).output],
                 {"axes": [2]}).output
    flags = g.add("cast", [anyp], {"to": DType.f32}, names=["flags"]).output
    pos_out = g.add("identity", [posf], names=["positions"]).output
    pads = g.add("reshape", [g.add("concat", [c(0, 0, 0), n, c(0, 0)], {"axis": 0}).output],
                 {"shape": [3, 2]}).output
    padded = g.add("dynamic_pad", [x, pads], {"value": 1.5, "dims": ["batch", "?", 4]},
                   names=["padded"]).output                              # [batch, 2 seq, 4]
    g.set_outputs([y, tail, flags, pos_out, padded])
    return Module([g])


SIZES = [(1, 2), (3, 7)]


def _feed(batch, seq, seed=0):
    return {"x": rand(batch, seq, 4, seed=seed)}


def test_dynamic_graph_text_round_trip_and_interpreter():
    m = dynamic_graph()
    verify_module(m)
    again = parse_module(print_module(m))
    assert again == m
    for batch, seq in SIZES:
        y, tail, flags, pos, padded = run_graph(m.main, _feed(batch, seq))
        x = _feed(batch, seq)["x"]
        assert pos.tolist() == list(range(seq + 1))
        assert tail.shape == (batch, seq - 1, 4) and np.array_equal(tail, x[:, 1:])
        np.testing.assert_allclose(y, x + rand(1, 1, 4, seed=3) + pos[1:, None], rtol=1e-6)
        assert flags.shape == (batch, seq)
        assert padded.shape == (batch, 2 * seq, 4) and np.all(padded[:, seq:] == 1.5)


def test_every_target_runs_one_artifact_at_several_sizes(tmp_path):
    m = dynamic_graph()
    result = tensorforge.convert(m, target="all", output=tmp_path / "dyn", verify=True,
                                 passes="canonicalize")
    v = result.verification
    assert v.ok, v.table()
    assert len({r.sizes for r in v.rows}) == 2     # verified at two sizes from one artifact
    # A third size straight through LiteRT's signature runner.
    runner = Interpreter(model_path=str(result.paths["tflite"])).get_signature_runner()
    want = run_graph(m.main, _feed(4, 9, seed=5))
    got = runner(**_feed(4, 9, seed=5))
    for name, w in zip(["y", "tail", "flags", "positions", "padded"], want):
        np.testing.assert_allclose(got[name], w, rtol=1e-5, atol=1e-6)


def test_jax_backend_computes_shapes_on_the_host():
    import jax

    from tensorforge.backends.jax import to_jax

    m = dynamic_graph()
    fn, params = to_jax(m)
    jitted = jax.jit(fn)
    for batch, seq in SIZES:
        want = run_graph(m.main, _feed(batch, seq))
        got = jitted(params, _feed(batch, seq)["x"])
        for g, w in zip(got, want):
            np.testing.assert_allclose(np.asarray(g), w, rtol=1e-5, atol=1e-6)


# -- canonicalization --------------------------------------------------------------------------

def test_static_shapes_fold_back_to_static_ops():
    g = Graph()
    x = g.add_input(TensorType(DType.f32, ("batch", 6)), "x")
    s = g.add("shape_of", [x]).output
    width = g.add("slice", [s], {"begin": [1], "size": [1]}).output      # 6: a constant
    shape = g.add("concat", [g.constant(_i32(-1, 2)), g.add("div", [width, g.constant(
        _i32(2))]).output], {"axis": 0}).output
    y = g.add("dynamic_reshape", [x, shape], {"dims": ["?", 2, "?"]}).output
    # A broadcast to x's own shape feeding an add with x: the add broadcasts by itself.
    full = g.add("dynamic_broadcast_to", [g.constant(rand(1, 6)), s],
                 {"dims": ["batch", 6]}).output
    z = g.add("add", [x, full]).output
    g.set_outputs([y, z])
    m = Module([g])
    want = run_graph(m.main, {"x": rand(5, 6)})
    PassManager.parse("canonicalize").run(m)
    ops = [n.op for n in m.main]
    assert ops.count("reshape") == 1 and "add" in ops, ops
    assert not {"dynamic_reshape", "dynamic_broadcast_to", "shape_of", "slice"} & set(ops), ops
    assert m.main.outputs[0].type.shape == ("batch", 2, 3)       # more precise than declared
    for got, w in zip(run_graph(m.main, {"x": rand(5, 6)}), want):
        np.testing.assert_allclose(got, w, rtol=1e-6)


def test_a_broadcast_to_an_unknown_size_is_kept():
    """add(y, dynamic_broadcast_to(c, shape)) with `?` dims: y may be 1 where the broadcast
    stretches, so the broadcast stays."""
    g = Graph()
    x = g.add_input(TensorType(DType.f32, ("?", 3)), "x")
    y = g.add_input(TensorType(DType.f32, ("?", 3)), "y")
    full = g.add("dynamic_broadcast_to", [y, g.add("shape_of", [x]).output]).output
    g.set_outputs([g.add("add", [y, full]).output])
    m = Module([g])
    PassManager.parse("canonicalize").run(m)
    assert "dynamic_broadcast_to" in [n.op for n in m.main]
    got = run_graph(m.main, {"x": rand(4, 3), "y": rand(1, 3)})[0]
    assert got.shape == (4, 3)


# -- Keras models computing with run-time sizes ------------------------------------------------

def _keras_shape_model():
    import keras
    from keras import ops

    class PositionalTokens(keras.layers.Layer):
        """Token embeddings + learned positions sliced to the run-time length, a class token
        tiled to the batch, and a causal mask broadcast to [batch, seq, seq]."""

        def build(self, shape):
            self.table = self.add_weight(shape=(20, 8), name="table")
            self.pos = self.add_weight(shape=(32, 8), name="pos")
            self.cls = self.add_weight(shape=(1, 1, 8), name="cls")

        def call(self, ids):
            b, n = ops.shape(ids)[0], ops.shape(ids)[1]
            h = ops.take(self.table, ids, axis=0) + ops.slice(self.pos, (0, 0), (n, 8))
            cls = ops.tile(self.cls, (b, 1, 1))
            h = ops.concatenate([cls, h], axis=1)                     # [batch, seq + 1, 8]
            heads = ops.reshape(h, (b, n + 1, 2, 4))                  # two run-time dims
            i = ops.arange(n + 1)
            causal = ops.cast(i[:, None] >= i[None, :], "float32")
            mask = ops.broadcast_to(causal, (b, n + 1, n + 1))
            scores = ops.einsum("bqhd,bkhd->bhqk", heads, heads) * mask[:, None]
            return ops.sum(scores, axis=1)[:, 1:, :n]         # run-time slice bounds

    ids = keras.Input((None,), dtype="int32", name="token_ids")
    return keras.Model(ids, PositionalTokens(name="embed")(ids))


def test_keras_run_time_shape_arithmetic_converts_dynamic(tmp_path):
    model = _keras_shape_model()
    result = tensorforge.convert(model, target="all", output=tmp_path / "k", verify=True)
    v = result.verification
    assert v.ok, v.table()
    assert {r.sizes for r in v.rows} == {"batch=2, dim=2", "batch=1, dim=5"}
    (inp,) = result.module.main.inputs
    assert inp.type.shape == ("batch", "?")
    ops = {n.op for n in result.module.main}
    assert {"shape_of", "range"} <= ops      # computed at run time, not frozen
    # Checked at batch 1 first, the second size is batch 2.
    again = tensorforge.convert(model, target="tflite", output=tmp_path / "b1.tflite",
                                verify=True, batch=1)
    assert {r.sizes for r in again.verification.rows} == {"batch=1, dim=1", "batch=2, dim=4"}
    ids = np.random.default_rng(1).integers(0, 20, (4, 11)).astype(np.int32)
    runner = Interpreter(model_path=str(result.paths["tflite"])).get_signature_runner()
    (got,) = runner(token_ids=ids).values()
    np.testing.assert_allclose(got, np.asarray(model(ids)), rtol=1e-5, atol=1e-5)


def _cond_on_shape_model():
    import keras
    from keras import ops

    class MaybeMasks(keras.layers.Layer):
        """SAM's prompt encoder pattern: a branch on how many masks were given."""

        def call(self, x, masks):
            return ops.cond(ops.equal(ops.shape(masks)[1], 0), lambda: x * 2.0,
                            lambda: x + ops.sum(masks, axis=1))

    x = keras.Input((4,), name="x")
    masks = keras.Input((None, 4), name="masks")
    return keras.Model([x, masks], MaybeMasks(name="maybe")(x, masks))


def test_a_branch_on_a_shape_is_decided_once_the_shape_is_fixed(tmp_path):
    model = _cond_on_shape_model()
    # With the number of masks a run-time dim, the branch is an `if` in every artifact, and
    # verification runs it at two sizes.
    result = tensorforge.convert(model, target="all", output=tmp_path / "dynamic", verify=True)
    assert result.verification.ok, result.verification.table()
    [branch] = [n for n in result.module.main if n.op == "if"]
    assert branch.scope == "maybe"
    for n_masks in (0, 2):
        result = tensorforge.convert(model, target="all", output=tmp_path / f"m{n_masks}",
                                     input_shapes={"masks": (-1, n_masks, 4)}, verify=True)
        assert result.verification.ok, result.verification.table()
        ops = {node.op for node in result.module.main}
        assert ("reduce_sum" in ops) == (n_masks > 0)        # only the taken branch


def test_fft_token_mixing_over_a_run_time_sequence(tmp_path):
    """FNet's mixing, real(fft2(x)), plus a 1-D FFT and an inverse: complex values as pairs
    of real tensors, DFT matrices built for the run-time sequence length."""
    import keras
    from keras import ops

    class Mix(keras.layers.Layer):
        def call(self, x):
            re, im = ops.fft2((x, ops.zeros_like(x)))
            f_re, f_im = ops.fft((x, x * 0.5))
            back, _ = ops.ifft2((re, im))          # the round trip gives x back
            return re + f_re - f_im + back

    x = keras.Input((None, 6), name="x")
    model = keras.Model(x, Mix(name="mix")(x))
    result = tensorforge.convert(model, target="all", output=tmp_path / "fft", verify=True)
    assert result.verification.ok, result.verification.table()
    assert result.module.main.inputs[0].type.shape == ("batch", "?", 6)
