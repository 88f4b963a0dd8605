"""SavedModels whose function is a GraphDef written straight from the IR
(`backends/savedmodel_direct.py`): every op case of the SavedModel backend test and the common
Keras layers (grouped convs as depthwise included) go that way and give the same outputs as the
op-by-op `tf_lowering` path (<= 1e-6), the artifact keeps its layout (serving_default, weights
as variables in the checkpoint, symbolic batch), and what the path does not cover (control
flow) takes the `tf_lowering` path with a note; the trainable form always takes it."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tensorforge.backends.savedmodel import write_savedmodel
from tensorforge.ir import ConversionError, DType, Graph, Module, TensorType

from op_helpers import rand, small_cnn_graph
from test_savedmodel_backend import big_graph

ATOL = 1e-6


def _load(path):
    return tf.saved_model.load(str(path))


def _outputs(path, feeds: dict) -> dict:
    fn = _load(path).signatures["serving_default"]
    return {k: v.numpy() for k, v in fn(**{k: tf.constant(v) for k, v in feeds.items()}
                                         ).items()}


def _assert_same(a: dict, b: dict, atol=ATOL):
    assert sorted(a) == sorted(b)
    bad = []
    for k in a:
        if a[k].dtype != b[k].dtype or a[k].shape != b[k].shape:
            bad.append(f"{k}: {a[k].dtype}{a[k].shape} vs {b[k].dtype}{b[k].shape}")
        elif a[k].dtype.kind == "f":
            err = float(np.max(np.abs(a[k] - b[k]), initial=0))
            scale = max(1.0, float(np.max(np.abs(b[k]), initial=0)))
            if not err <= atol * scale:
                bad.append(f"{k}: max abs diff {err:.2e}")
        elif not np.array_equal(a[k], b[k]):
            bad.append(f"{k}: differs")
    assert not bad, "\n".join(bad)


def _both(module: Module, tmp_path, name="m"):
    notes: list[str] = []
    write_savedmodel(module, tmp_path / f"{name}_direct", via="direct", notes=notes)
    write_savedmodel(module, tmp_path / f"{name}_tf", via="tf")
    assert not notes
    return tmp_path / f"{name}_direct", tmp_path / f"{name}_tf"


def test_every_backend_op_case_goes_direct_and_matches_the_tf_path(tmp_path):
    g, feeds = big_graph()     # quantize / dequantize / fake_quant cases included
    direct, via_tf = _both(Module([g]), tmp_path)
    _assert_same(_outputs(direct, feeds), _outputs(via_tf, feeds))
    loaded = _load(direct)
    names = {v.name.split(":")[0] for v in loaded.weights}
    assert "embedding/table" in names and "conv_same/filter" in names, names
    assert all(isinstance(v, tf.Variable) for v in loaded.weights)


def test_symbolic_batch_and_signature_names(tmp_path):
    module = Module([small_cnn_graph("batch", max_pool=True)],
                    {"input_names": ["pixels"], "output_names": ["scores"]})
    direct, via_tf = _both(module, tmp_path)
    fn = _load(direct).signatures["serving_default"]
    _, specs = fn.structured_input_signature
    assert list(specs) == ["pixels"] and specs["pixels"].shape[0] is None
    assert list(fn.structured_outputs) == ["scores"]
    shape = [d for d in specs["pixels"].shape[1:]]
    for batch in (1, 3):
        x = rand(batch, *shape, seed=batch)
        _assert_same(_outputs(direct, {"pixels": x}), _outputs(via_tf, {"pixels": x}))


def _keras_model():
    import keras

    L = keras.layers
    x = L.Input((16, 16, 8), name="image")
    y = L.Conv2D(8, 3, padding="same", groups=8, name="dw_as_grouped")(x)     # depthwise
    y = L.Conv2D(16, 3, padding="same", groups=4, name="grouped")(y)          # split + concat
    y = L.DepthwiseConv2D(3, strides=2, padding="same", name="dw")(y)
    y = L.BatchNormalization(name="bn")(y)
    y = L.LayerNormalization(name="ln")(y)
    y = L.Activation("gelu")(y)
    y = L.Conv2D(12, 3, dilation_rate=2, padding="same", name="dilated")(y)
    y = L.Conv2DTranspose(6, 3, strides=2, padding="same", name="up")(y)
    y = L.GlobalAveragePooling2D()(y)
    y = L.Dense(10, activation="softmax", name="head")(y)
    model = keras.Model(x, y)
    rng = np.random.default_rng(0)
    model.set_weights([rng.normal(0, 0.3, w.shape).astype(w.dtype)
                       for w in model.get_weights()])
    return model


def test_keras_model_goes_direct_and_matches_the_tf_path(tmp_path):
    import tensorforge

    model = _keras_model()
    direct = tensorforge.convert(model, target="savedmodel", output=tmp_path / "d",
                                 progress=False, verify=True)
    assert not [n for n in direct.notes if n.startswith("savedmodel:")], direct.notes
    assert direct.verification.ok
    x = rand(2, 16, 16, 8, seed=3)
    want = np.asarray(model(x, training=False))
    got = next(iter(_outputs(direct.paths["savedmodel"], {"image": x}).values()))
    np.testing.assert_allclose(got, want, atol=1e-5)


def _while_module():
    """x + 1.5 three times, as a while loop."""
    g = Graph()
    x = g.add_input(TensorType(DType.f32, (2, 3)), "x")
    i0 = g.constant(np.int32(0))
    cond, body = Graph("cond"), Graph("body")
    ci, _ = cond.add_input(i0.type), cond.add_input(x.type)
    cond.set_outputs([cond.add("less", [ci, cond.constant(np.int32(3))]).output])
    bi, bx = body.add_input(i0.type, "i"), body.add_input(x.type, "s")
    body.set_outputs([body.add("add", [bi, body.constant(np.int32(1))]).output,
                      body.add("add", [bx, body.constant(np.float32(1.5))]).output])
    node = g.add("while", [i0, x], regions=[cond, body])
    g.set_outputs([node.outputs[1]])
    return Module([g])


def test_control_flow_falls_back_with_a_note(tmp_path):
    module = _while_module()
    notes: list[str] = []
    write_savedmodel(module, tmp_path / "w", notes=notes)
    assert len(notes) == 1 and notes[0].startswith("savedmodel:") and "while" in notes[0]
    out = _outputs(tmp_path / "w", {"x": np.zeros((2, 3), np.float32)})
    np.testing.assert_allclose(next(iter(out.values())), np.full((2, 3), 4.5))
    with pytest.raises(ConversionError, match="directly"):
        write_savedmodel(module, tmp_path / "w2", via="direct")


def test_quantized_module_keeps_integer_codes(tmp_path):
    g = Graph()
    x = g.add_input(TensorType(DType.f32, (2, 8)), "x")
    attrs = {"scale": (0.05,), "zero_point": (3,)}
    q = g.add("quantize", [x], {**attrs, "dtype": DType.i8}, names=["codes"]).output
    g.set_outputs([q, g.add("dequantize", [q], attrs, names=["y"]).output])
    direct, via_tf = _both(Module([g]), tmp_path)
    x = np.linspace(-7, 7, 16, dtype=np.float32).reshape(2, 8)
    got = _outputs(direct, {"x": x})
    assert got["codes"].dtype == np.int8
    _assert_same(got, _outputs(via_tf, {"x": x}))


def test_trainable_takes_the_tf_lowering(tmp_path):
    g = Graph()
    x = g.add_input(TensorType(DType.f32, (2, 4)), "x")
    w = g.constant(rand(4, 3, seed=1), "dense/kernel")
    g.set_outputs([g.add("matmul", [x, w]).output])
    notes: list[str] = []
    write_savedmodel(Module([g]), tmp_path / "t", trainable=True, notes=notes)
    assert not notes    # the trainable form is always op by op: nothing to note
    loaded = _load(tmp_path / "t")
    assert [v.name.split(":")[0] for v in loaded.trainable_variables] == ["dense/kernel"]
