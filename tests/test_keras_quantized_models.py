"""Models quantized by Keras itself (`model.quantize("int8")` / `"int4"`,
frontends/keras/quantized.py): the lifted IR holds Keras' integer codes and scales as
dequantize(integer constant), TFLite gets them byte for byte (hybrid int8 FULLY_CONNECTED,
int4 weights), and the artifacts stay close to the Keras-quantized model's own outputs."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from ai_edge_litert import schema_py_generated as fb
from ai_edge_litert.interpreter import Interpreter

import tensorforge
from tensorforge.frontends.keras import from_keras
from tensorforge.tools.quantize import sqnr_db

pytestmark = pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                                reason="Keras on the TensorFlow backend")

OP_NAMES = {v: k for k, v in vars(fb.BuiltinOperator).items() if not k.startswith("_")}
TYPE_NAMES = {v: k for k, v in vars(fb.TensorType).items() if not k.startswith("_")}


def _mlp(k=16, hidden=32, seed=0):
    keras.utils.set_random_seed(seed)
    inp = keras.Input((k,), name="x")
    h = keras.layers.Dense(hidden, activation="relu", name="fc1")(inp)
    return keras.Model(inp, keras.layers.Dense(5, name="fc2")(h))


def _fc_weights(path):
    """[(op name, weight dtype name, weight codes as ints)] of every FULLY_CONNECTED."""
    model = fb.ModelT.InitFromPackedBuf(open(path, "rb").read(), 0)
    sg = model.subgraphs[0]
    out = []
    for op in sg.operators:
        name = OP_NAMES[model.operatorCodes[op.opcodeIndex].builtinCode]
        if name != "FULLY_CONNECTED":
            continue
        w = sg.tensors[op.inputs[1]]
        buf = model.buffers[w.buffer].data
        shape = tuple(int(d) for d in w.shape)
        codes = None
        if buf is not None and len(buf):
            raw = np.asarray(buf, np.uint8)
            if w.type == fb.TensorType.INT4:       # two per byte, low nibble first
                nib = np.stack([raw & 0xF, raw >> 4], axis=1).reshape(-1).astype(np.int8)
                codes = np.where(nib > 7, nib - 16, nib)[:int(np.prod(shape))].reshape(shape)
            else:
                codes = raw.view(np.int8).reshape(shape)
        scale = None if w.quantization is None or w.quantization.scale is None else \
            np.asarray(w.quantization.scale, np.float32)
        out.append((TYPE_NAMES[w.type], codes, scale))
    return out


def _op_names(path):
    model = fb.ModelT.InitFromPackedBuf(open(path, "rb").read(), 0)
    return [OP_NAMES[model.operatorCodes[op.opcodeIndex].builtinCode]
            for sg in model.subgraphs for op in sg.operators]


def _run_tflite(path, feeds: dict):
    interp = Interpreter(str(path))
    details = interp.get_input_details()
    for d in details:
        interp.resize_tensor_input(d["index"], feeds[_key(d["name"], feeds)].shape)
    interp.allocate_tensors()
    for d in details:
        interp.set_tensor(d["index"], feeds[_key(d["name"], feeds)])
    interp.invoke()
    return interp.get_tensor(interp.get_output_details()[0]["index"])


def _key(name, feeds):
    return next(k for k in feeds if k in name)


def _unpack(layer):
    from keras import quantizers
    return np.asarray(quantizers.unpack_int4(layer._kernel, layer._orig_output_dim, axis=-1))


def test_int8_dense_lifts_keras_codes_as_dequantize():
    model = _mlp()
    model.quantize("int8")
    module = from_keras(model)
    assert module.metadata["keras_quantization"] == "int8"
    dqs = [n for n in module.main if n.op == "dequantize"]
    assert len(dqs) == 2 and not any(n.op == "cast" for n in module.main)
    for dq, name in zip(dqs, ("fc1", "fc2")):
        layer = model.get_layer(name)
        codes = dq.inputs[0]
        np.testing.assert_array_equal(codes.const, np.asarray(layer._kernel))
        assert codes.quant.axis == 1 and codes.quant.bits == 8
        np.testing.assert_allclose(codes.quant.scale, 1 / np.asarray(layer.kernel_scale),
                                   rtol=1e-6)
        assert [u.op for u, _ in dq.output.uses] == ["matmul"]


def test_int8_mlp_tflite_is_hybrid_on_keras_codes(tmp_path):
    model = _mlp()
    x = np.random.RandomState(0).randn(8, 16).astype(np.float32)
    y_float = np.asarray(model(x))
    model.quantize("int8")
    y_keras = np.asarray(model(x))
    result = tensorforge.convert(model, target=["tflite", "savedmodel"],
                                 output=str(tmp_path / "m"), verify=True)
    assert result.verification.ok
    assert result.quantization.scheme.name == "dynamic-int8"
    fcs = _fc_weights(result.paths["tflite"])
    assert [t for t, _, _ in fcs] == ["INT8", "INT8"]
    for (_, codes, scale), name in zip(fcs, ("fc1", "fc2")):
        layer = model.get_layer(name)
        np.testing.assert_array_equal(codes, np.asarray(layer._kernel).T)   # Keras' bytes
        np.testing.assert_allclose(scale, 1 / np.asarray(layer.kernel_scale), rtol=1e-6)
    y = _run_tflite(result.paths["tflite"], {"x": x})
    assert sqnr_db(y_keras, y) > 35
    assert sqnr_db(y_float, y) > 30


@pytest.mark.parametrize("block_size,k", [(-1, 16), (None, 16), (None, 256)],
                         ids=["per-channel", "grouped-one-block", "grouped-blockwise"])
def test_int4_dense_tflite_holds_keras_codes(tmp_path, block_size, k):
    from keras.quantizers import Int4QuantizationConfig

    model = _mlp(k=k)
    x = np.random.RandomState(1).randn(4, k).astype(np.float32)
    if block_size is None:
        model.quantize("int4")                       # Keras' default: blocks of 128, zp
    else:
        model.quantize("int4", config=Int4QuantizationConfig(block_size=block_size))
    y_keras = np.asarray(model(x))
    want = {name: _unpack(model.get_layer(name)) for name in ("fc1", "fc2")}
    result = tensorforge.convert(model, target="tflite", output=str(tmp_path / "m.tflite"))
    assert result.quantization.scheme.name == "int4-weight"
    ops = _op_names(result.paths["tflite"])
    assert "CAST" not in ops and "RIGHT_SHIFT" not in ops
    model_fb = fb.ModelT.InitFromPackedBuf(open(result.paths["tflite"], "rb").read(), 0)
    sg = model_fb.subgraphs[0]
    int4 = [t for t in sg.tensors if t.type == fb.TensorType.INT4]
    assert len(int4) == 2
    # The int4 buffers hold exactly Keras' codes, in whichever layout the kernel reads.
    stored = []
    for t in int4:
        raw = np.asarray(model_fb.buffers[t.buffer].data, np.uint8)
        nib = np.stack([raw & 0xF, raw >> 4], axis=1).reshape(-1).astype(np.int8)
        stored.append(np.sort(np.where(nib > 7, nib - 16, nib)[:int(np.prod(t.shape))]))
    for name, codes in want.items():
        assert any(s.size == codes.size and np.array_equal(s, np.sort(codes.ravel()))
                   for s in stored), name
    y = _run_tflite(result.paths["tflite"], {"x": x})
    # Keras' int4 layers compute in float; TFLite's per-channel int4 FULLY_CONNECTED
    # quantizes its input per row, the dequantize form (zero points) is exact.
    assert sqnr_db(y_keras, y) > (35 if block_size == -1 else 90)


def test_int8_embedding_gathers_dequantized_table(tmp_path):
    keras.utils.set_random_seed(0)
    inp = keras.Input((6,), dtype="int32", name="ids")
    emb = keras.layers.Embedding(50, 8, name="emb")(inp)
    model = keras.Model(inp, keras.layers.Dense(3, name="head")(emb))
    model.quantize("int8")
    ids = np.random.RandomState(0).randint(0, 50, (2, 6)).astype(np.int32)
    y_keras = np.asarray(model(ids))
    module = from_keras(model)
    gather = next(n for n in module.main if n.op == "gather")
    table = gather.inputs[0].producer.inputs[0]
    np.testing.assert_array_equal(table.const, np.asarray(model.get_layer("emb")._embeddings))
    assert table.quant.axis == 0
    result = tensorforge.convert(model, target="tflite", output=str(tmp_path / "e.tflite"))
    y = _run_tflite(result.paths["tflite"], {"ids": ids})
    assert sqnr_db(y_keras, y) > 35


@pytest.mark.parametrize("mode", ["int8", "int4"])
def test_tiny_gpt2_quantized_by_keras(tmp_path, mode):
    keras_hub = pytest.importorskip("keras_hub")
    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=100, num_layers=2, num_heads=2, hidden_dim=16, intermediate_dim=32,
        max_sequence_length=64)
    lm = keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=None)
    ids = np.random.RandomState(0).randint(0, 100, (2, 12)).astype(np.int32)
    feeds = {"token_ids": ids, "padding_mask": np.ones_like(ids)}
    y_float = np.asarray(lm(feeds))
    lm.quantize(mode)
    y_keras = np.asarray(lm(feeds))
    result = tensorforge.convert(lm, target="tflite", output=str(tmp_path / "lm.tflite"),
                                 verify_inputs=feeds)
    assert result.verification.ok
    fcs = _fc_weights(result.paths["tflite"])
    y = _run_tflite(result.paths["tflite"], feeds)
    if mode == "int8":
        # q, k, v, o, two feedforward per layer and the tied LM head: all hybrid.
        assert [t for t, _, _ in fcs] == ["INT8"] * 13
        head = fcs[-1][1]
        np.testing.assert_array_equal(
            head, np.asarray(lm.backbone.get_layer("token_embedding")._embeddings))
        assert sqnr_db(y_keras, y) > 30
    else:
        assert _op_names(result.paths["tflite"]).count("DEQUANTIZE") == 14
        assert sqnr_db(y_keras, y) > 90     # weight-only: Keras' own arithmetic
    assert sqnr_db(y_float, y) > 15


def test_float_model_is_not_marked():
    module = from_keras(_mlp())
    assert "keras_quantization" not in module.metadata
    assert not any(n.op == "dequantize" for n in module.main)


# -- GPTQ (`model.quantize("gptq", config=GPTQConfig(...))`) -----------------------------------

@pytest.fixture
def gptq_shims(monkeypatch):
    """Two test-only shims around Keras 3.15's GPTQ (not of what it computes, of how fast and
    whether calibration data reaches it): its per-column `slice_update` runs through XLA
    (one compilation per call, ~40 ms) and becomes a NumPy assignment; and its Hessian hook
    patches `layer.call`, which a layer in "gptq" mode never runs (Layer.__call__ dispatches
    to `quantized_call`), so without the shim every Hessian is zero and GPTQ degenerates to
    round-to-nearest with an identity act-order."""
    import contextlib

    import keras.src.backend.tensorflow.core as tf_core
    import tensorflow as tf
    from keras.src.quantizers import gptq_core

    original = tf_core.slice_update

    def slice_update(inputs, start_indices, updates):
        if not tf.executing_eagerly():
            return original(inputs, start_indices, updates)
        a, u = np.array(inputs), np.asarray(updates)
        a[tuple(slice(int(s), int(s) + d) for s, d in zip(start_indices, u.shape))] = u
        return tf.convert_to_tensor(a)

    @contextlib.contextmanager
    def stream_hessians(layers_map, gptq_objects):
        def hook(name, fn):
            def call(*args, **kwargs):
                x = args[0] if args else kwargs["inputs"]
                gptq_objects[name].update_hessian_with_batch(
                    keras.ops.reshape(x, (-1, gptq_objects[name].rows)))
                return fn(*args, **kwargs)
            return call
        try:
            for name, layer in layers_map.items():
                layer.quantized_call = hook(name, layer.quantized_call)
            yield
        finally:
            for layer in layers_map.values():
                vars(layer).pop("quantized_call", None)

    monkeypatch.setattr(tf_core, "slice_update", slice_update)
    monkeypatch.setattr(gptq_core, "stream_hessians", stream_hessians)


def _gptq_model(bits, group_size, act_order=False, symmetric=False):
    """Embedding -> block [Dense, EinsumDense, Dense] -> Dense head; GPTQ quantizes the
    block (the head is outside it: Keras leaves it uncalibrated, float)."""
    from keras.quantizers import GPTQConfig

    keras.utils.set_random_seed(0)
    emb = keras.layers.Embedding(50, 48, name="emb")
    block = keras.Sequential([
        keras.layers.Dense(32, activation="relu", name="fc1"),
        keras.layers.EinsumDense("btk,khd->bthd", output_shape=(None, 4, 8), bias_axes="hd",
                                 name="qkv"),
        keras.layers.Reshape((-1, 32)),
        keras.layers.Dense(16, name="fc2"),
    ], name="block")
    inp = keras.Input((None,), dtype="int32", name="ids")
    model = keras.Model(inp, keras.layers.Dense(5, name="head")(block(emb(inp))))
    ids = np.random.RandomState(0).randint(0, 50, (2, 12)).astype(np.int32)
    y_float = np.asarray(model(ids))
    data = np.random.RandomState(1).randint(0, 50, (64, 8))
    model.quantize("gptq", config=GPTQConfig(
        dataset=data, tokenizer=object(), weight_bits=bits, num_samples=4, sequence_length=8,
        group_size=group_size, activation_order=act_order, symmetric=symmetric,
        quantization_layer_structure={"pre_block_layers": [emb], "sequential_blocks": [block]}))
    return model, block, ids, y_float


def _gptq_codes(layer, bits):
    from keras import quantizers

    cols = int(getattr(layer, "gptq_unpacked_column_size", None) or layer.units)
    q = layer.quantized_kernel
    if bits == 4:
        q = quantizers.unpack_int4(q, orig_len=cols, axis=0, dtype="uint8")
    return np.asarray(q).astype(np.int32) - (1 << (bits - 1))      # [N, K], signed


@pytest.mark.parametrize("bits,group_size,act_order", [(4, 16, False), (4, 16, True),
                                                       (8, -1, False)],
                         ids=["int4-g16", "int4-g16-act-order", "int8-per-channel"])
def test_gptq_lifts_codes_and_tflite_matches_keras(tmp_path, gptq_shims, bits, group_size,
                                                  act_order):
    model, block, ids, y_float = _gptq_model(bits, group_size, act_order)
    y_keras = np.asarray(model(ids))
    fc1 = block.get_layer("fc1")
    g_idx = np.asarray(fc1.g_idx).astype(int)
    assert act_order == (not np.array_equal(g_idx, np.arange(48) // (group_size if group_size > 0 else 48)))
    module = from_keras(model)
    assert module.metadata["keras_quantization"] == "gptq"
    assert len([n for n in module.main if n.op == "dequantize"]) == 3   # head stays float
    result = tensorforge.convert(model, target=["tflite", "savedmodel"],
                                 output=str(tmp_path / "m"), verify=True,
                                 verify_inputs={"ids": ids})
    assert result.verification.ok
    assert result.quantization.scheme.name == "int4-weight"
    fb_model = fb.ModelT.InitFromPackedBuf(open(result.paths["tflite"], "rb").read(), 0)
    sg = fb_model.subgraphs[0]
    want_type = fb.TensorType.INT4 if bits == 4 else fb.TensorType.INT8
    stored = {}
    for t in sg.tensors:
        if t.type != want_type or t.buffer == 0 or not len(fb_model.buffers[t.buffer].data):
            continue
        raw = np.asarray(fb_model.buffers[t.buffer].data, np.uint8)
        if bits == 4:
            nib = np.stack([raw & 0xF, raw >> 4], axis=1).reshape(-1).astype(np.int8)
            vals = np.where(nib > 7, nib - 16, nib)[:int(np.prod(t.shape))]
        else:
            vals = raw.view(np.int8)
        stored[t.name.decode()] = np.sort(vals.astype(np.int32))
    # Keras' GPTQ codes (shifted to signed), byte for byte, in whichever layout.
    for name in ("fc1", "qkv", "fc2"):
        codes = np.sort(_gptq_codes(block.get_layer(name), bits).ravel())
        assert any(s.size == codes.size and np.array_equal(s, codes) for s in stored.values())
    y = _run_tflite(result.paths["tflite"], {"ids": ids})
    assert sqnr_db(y_keras, y) > 90          # weight-only, zero points: Keras' arithmetic
    assert sqnr_db(y_float, y) > (15 if bits == 4 else 35)


def test_uncalibrated_gptq_layer_is_traced_unchanged(gptq_shims):
    from tensorforge.frontends.keras.quantized import dequantized_tracing

    model, _, _, _ = _gptq_model(4, 16)
    with dequantized_tracing(model) as found:
        pass
    assert set(found.layers.values()) == {"gptq"} and len(found.layers) == 3
    assert "not calibrated" in found.skipped["head"]
