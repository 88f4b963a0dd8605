"""Artifacts past 2 GB: the `.tflite` appended-buffer layout (weights after the flatbuffer, each
`Buffer` an offset and size) forced on small models and run in LiteRT, atomic streamed writes,
sharded SavedModel checkpoints; and (slow) a model with 2.2 GB of weights written, run in
LiteRT and TF, with its peak RSS while converting."""

from __future__ import annotations

import os

import numpy as np
import pytest
from ai_edge_litert import schema_py_generated as fb
from ai_edge_litert.interpreter import Interpreter

from tensorforge.backends.tflite import writer as W
from tensorforge.ir import ConversionError, DType, Graph, Module, TensorType
from tensorforge.ir.interpreter import run_graph

from op_helpers import rand, small_cnn_graph  # noqa: E402


def _cnn() -> Graph:
    return small_cnn_graph(batch="batch")


def _inputs(g: Graph, batch: int = 2) -> np.ndarray:
    shape = [batch if isinstance(d, str) else d for d in g.inputs[0].type.shape]
    return np.random.default_rng(0).standard_normal(shape).astype(np.float32)


def _run(interp: Interpreter, x: np.ndarray) -> np.ndarray:
    d = interp.get_input_details()[0]
    interp.resize_tensor_input(d["index"], list(x.shape))
    interp.allocate_tensors()
    interp.set_tensor(d["index"], x)
    interp.invoke()
    return interp.get_tensor(interp.get_output_details()[0]["index"])


def _layout(data: bytes):
    """(the model object tree, the flatbuffer's own size) of a `.tflite` byte string."""
    model = fb.ModelT.InitFromPackedBuf(data, 0)
    ends = [b.offset for b in model.buffers if b.offset > 1]
    return model, (min(ends) if ends else len(data))


def test_offset_layout_runs_in_litert_and_matches_inline(tmp_path):
    g = _cnn()
    x = _inputs(g)
    inline = W.write_tflite(Module([g]))
    data = W.write_tflite(Module([g]), buffer_offset=True)
    model, head = _layout(data)
    weights = [b for b in model.buffers[1:] if b.offset > 1]
    assert weights and all(b.data is None and b.size > 0 for b in weights)
    assert all(b.offset % W.BUFFER_ALIGNMENT == 0 and b.offset >= head for b in weights)
    assert max(b.offset + b.size for b in weights) == len(data)
    # Back to back, in buffer order, each at the next 16-byte boundary.
    offsets = [b.offset for b in weights]
    assert offsets == sorted(offsets)
    meta = {m.name.decode(): bytes(model.buffers[m.buffer].data) for m in model.metadata}
    assert meta["buffer_location"] == b"outside flatbuffers"
    assert meta["producer"].startswith(b"tensorforge ")
    assert b"buffer_location" not in inline             # small models: unchanged layout
    # The payloads are the inline model's, byte for byte.
    inline_payloads = [bytes(b.data) for b in fb.ModelT.InitFromPackedBuf(inline, 0).buffers
                       if b.data is not None and len(b.data)][:len(weights)]
    assert [data[b.offset:b.offset + b.size] for b in weights] == inline_payloads

    want = run_graph(g, [x])[0]
    np.testing.assert_allclose(_run(Interpreter(model_content=data), x), want,
                               rtol=1e-5, atol=1e-6)
    path = tmp_path / "m.tflite"
    assert W.save_tflite(Module([g]), path, buffer_offset=True) == len(data)
    assert path.read_bytes() == data
    np.testing.assert_allclose(_run(Interpreter(model_path=str(path)), x), want,
                               rtol=1e-5, atol=1e-6)


def test_save_matches_write_and_is_deterministic(tmp_path):
    for offset in (False, True):
        m = Module([_cnn()])
        data = W.write_tflite(m, buffer_offset=offset)
        assert W.write_tflite(Module([_cnn()]), buffer_offset=offset) == data
        W.save_tflite(m, tmp_path / "m.tflite", buffer_offset=offset)
        assert (tmp_path / "m.tflite").read_bytes() == data
    assert sorted(os.listdir(tmp_path)) == ["m.tflite"]


def test_env_var_and_threshold_pick_the_layout(monkeypatch):
    m = Module([_cnn()])
    inline = W.write_tflite(m)
    monkeypatch.setenv(W.BUFFER_OFFSET_ENV, "1")
    assert W.write_tflite(m) == W.write_tflite(m, buffer_offset=True) != inline
    assert W.write_tflite(m, buffer_offset=False) == inline     # the argument wins
    monkeypatch.setenv(W.BUFFER_OFFSET_ENV, "0")
    assert W.write_tflite(m) == inline
    monkeypatch.delenv(W.BUFFER_OFFSET_ENV)
    monkeypatch.setattr(W, "BUFFER_OFFSET_THRESHOLD", 1000)    # weights past it: appended
    assert W.write_tflite(m) == W.write_tflite(m, buffer_offset=True)


def test_shared_weights_and_signatures_in_offset_layout():
    """Equal weights are stored once (one appended buffer); several signatures share them."""
    w = rand(7, 7)
    graphs = []
    for _ in range(2):
        g = Graph()
        x = g.add_input(TensorType(DType.f32, (1, 7)), "x")
        y = g.add("matmul", [x, g.constant(w)]).output
        y = g.add("matmul", [y, g.constant(w.copy())]).output
        g.set_outputs([y])
        graphs.append(g)
    data = W.write_tflite_signatures({"a": Module([graphs[0]]), "b": Module([graphs[1]])},
                                     buffer_offset=True)
    model, _ = _layout(data)
    assert sum(b.offset > 1 for b in model.buffers) == 1
    interp = Interpreter(model_content=data)
    x = rand(1, 7, seed=3)
    for key in ("a", "b"):
        out = interp.get_signature_runner(key)(x=x)
        np.testing.assert_allclose(next(iter(out.values())), x @ w @ w, rtol=1e-5, atol=1e-5)


def test_failed_save_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "m.tflite"
    path.write_bytes(b"earlier")
    # A lowering problem (TFLite has no dilated transposed convolution): raised before
    # anything is written.
    g = Graph()
    x = g.add_input(TensorType(DType.f32, (1, 1, 2, 3)), "x")
    g.set_outputs(g.add("conv2d_transpose", [x, g.constant(rand(2, 2, 4, 3))],
                        {"dilations": (2, 2)}).outputs)
    with pytest.raises(ConversionError):
        W.save_tflite(Module([g]), path)
    # A failure in the middle of streaming the weights.
    chunks = W._chunks

    def broken(head, tail):
        it = chunks(head, tail)
        yield next(it)
        raise OSError("disk full")

    monkeypatch.setattr(W, "_chunks", broken)
    with pytest.raises(OSError, match="disk full"):
        W.save_tflite(Module([_cnn()]), path, buffer_offset=True)
    assert path.read_bytes() == b"earlier"
    assert sorted(os.listdir(tmp_path)) == ["m.tflite"]


def test_savedmodel_checkpoint_is_sharded_past_the_limit(tmp_path, monkeypatch):
    import tensorflow as tf

    from tensorforge.backends import savedmodel as S

    g = Graph()
    x = g.add_input(TensorType(DType.f32, (1, 64)), "x")
    ws = [rand(64, 64, seed=i) for i in range(4)]          # 16 KiB each
    y = x
    for w in ws:
        y = g.add("matmul", [y, g.constant(w)]).output
    g.set_outputs([y])
    monkeypatch.setattr(S, "SHARD_BYTES", 20 << 10)
    S.write_savedmodel(Module([g]), tmp_path / "sm")
    data = sorted(p.name for p in (tmp_path / "sm" / "variables").iterdir()
                  if ".data-" in p.name)
    assert len(data) >= 3, data
    assert all((tmp_path / "sm" / "variables" / n).stat().st_size <= 20 << 10 for n in data)
    # The graph holds no weight: every one is a checkpoint variable.
    assert (tmp_path / "sm" / "saved_model.pb").stat().st_size < sum(w.nbytes for w in ws)
    xv = rand(1, 64, seed=9)
    fn = tf.saved_model.load(str(tmp_path / "sm")).signatures["serving_default"]
    got = next(iter(fn(x=tf.constant(xv)).values())).numpy()
    np.testing.assert_allclose(got, run_graph(g, [xv])[0], rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_model_past_2gb_converts_runs_and_stays_bounded(tmp_path):
    """2.2 GB of float32 weights (three embedding tables): the `.tflite` (past 2^31 bytes,
    weights appended after the flatbuffer) runs in LiteRT from the file and the SavedModel
    (sharded checkpoint) in TF, both matching NumPy at ids that include the tables' last rows;
    writing the `.tflite` peaks at <= 1.5x the weights' bytes of RSS."""
    from tensorforge.tools.bench.large import bench_large

    tfl, sm = bench_large(2.2, targets=("tflite", "savedmodel"), directory=str(tmp_path))
    assert tfl["weights"] > 2.1e9 and tfl["bytes"] > 2**31
    assert tfl["appended"] == 3
    assert tfl["shape_ok"] and tfl["max_abs_err"] == 0.0
    assert tfl["ratio"] <= 1.5, tfl
    assert sm["shape_ok"] and sm["max_abs_err"] <= 1e-5, sm


@pytest.mark.parametrize("buffer_offset", [False, True])
def test_weights_relaid_while_writing_give_the_same_bytes(tmp_path, monkeypatch, buffer_offset):
    """Large float filters are re-laid out (HWIO -> OHWI, [K, N] -> [N, K]) block by block
    while the file is written (`RelaidWeight`): the file, `write_tflite`'s bytes and a model
    written with the relayout done up front are the same bytes, and LiteRT runs it. Two
    convs reading one filter read one tensor."""
    g = Graph()
    x = g.add_input(TensorType(DType.f32, ("batch", 8, 8, 64)), "x")
    f = g.constant(rand(3, 3, 64, 600, seed=1))                 # 1.3 MiB
    y = g.add("conv2d", [x, f], {"padding": "SAME"}).output
    z = g.add("conv2d", [x, f], {"padding": "SAME"}).output
    m = g.add("matmul", [g.add("reduce_mean", [g.add("add", [y, z]).output],
                                {"axes": (1, 2)}).output, g.constant(rand(600, 500, seed=2))])
    g.set_outputs(m.outputs)
    module = Module([g])
    path = tmp_path / "m.tflite"
    W.save_tflite(module, path, buffer_offset=buffer_offset)
    relaid = W.write_tflite(module, buffer_offset=buffer_offset)
    monkeypatch.setattr(W, "RELAID_MIN_BYTES", 1 << 62)
    upfront = W.write_tflite(module, buffer_offset=buffer_offset)
    assert path.read_bytes() == relaid == upfront
    model, _ = _layout(relaid)
    shared = [t.buffer for t in model.subgraphs[0].tensors if t.shape.tolist()[:1] == [600]
              and len(t.shape) == 4]
    assert len(shared) == 1
    interp = Interpreter(model_path=str(path))
    xs = _inputs(g)
    np.testing.assert_allclose(_run(interp, xs), run_graph(g, [xs])[0], rtol=1e-4, atol=1e-3)
