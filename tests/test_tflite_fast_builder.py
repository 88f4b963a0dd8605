"""backends/tflite/fast_builder.py: FastBuilder lays out every byte as the stock
flatbuffers.Builder does. Real models (tensorforge's own artifacts with weights, control flow
and int8 quantization, and TFLiteConverter's int8 output with its metadata) and random
tensors and operators are packed both ways and compared."""

from __future__ import annotations

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as fb
from hypothesis import given, settings
from hypothesis import strategies as st

from tensorforge.backends.tflite.fast_builder import FastBuilder


def _packed(obj, builder) -> bytes:
    builder.Finish(obj.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _same_both_ways(obj) -> bytes:
    stock = _packed(obj, flatbuffers.Builder(0))
    assert _packed(obj, FastBuilder(0)) == stock
    return stock


def _keras_model():
    import keras

    x = keras.Input((12, 12, 3))
    y = keras.layers.Conv2D(4, 3, activation="relu")(x)
    y = keras.layers.BatchNormalization()(y)
    y = keras.layers.DepthwiseConv2D(3, padding="same")(y)
    y = keras.layers.GlobalAveragePooling2D()(y)
    return keras.Model(x, keras.layers.Dense(3, activation="softmax")(y))


def test_tensorforge_artifacts_pack_identically(tmp_path):
    import keras

    from tensorforge import convert

    models = [_keras_model()]
    x = keras.Input((5, 4))
    models.append(keras.Model(x, keras.layers.LSTM(6)(x)))     # a loop: several subgraphs
    for k, model in enumerate(models):
        data = convert(model, target="tflite", output=tmp_path / f"m{k}.tflite",
                       progress=False).artifacts["tflite"]
        _same_both_ways(fb.ModelT.InitFromPackedBuf(data, 0))


def test_quantized_artifacts_pack_identically(tmp_path):
    import tensorflow as tf

    from tensorforge import convert

    model = _keras_model()
    rng = np.random.default_rng(0)
    samples = [rng.standard_normal((1, 12, 12, 3)).astype(np.float32) for _ in range(4)]
    ours = convert(model, target="tflite", output=tmp_path / "q.tflite", quantization="int8",
                   calibration_data=samples, progress=False).artifacts["tflite"]
    _same_both_ways(fb.ModelT.InitFromPackedBuf(ours, 0))

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([s] for s in samples)
    theirs = converter.convert()
    model_t = fb.ModelT.InitFromPackedBuf(theirs, 0)
    assert any(t.quantization is not None and t.quantization.scale is not None
               for g in model_t.subgraphs for t in g.tensors)
    _same_both_ways(model_t)


_names = st.one_of(st.none(), st.text(max_size=12))
_ints = st.lists(st.integers(-2**31, 2**31 - 1), max_size=6)


@st.composite
def _tensor(draw):
    t = fb.TensorT()
    t.shape = draw(st.one_of(st.none(), _ints))
    t.shapeSignature = draw(st.one_of(st.none(), _ints))
    t.type = draw(st.integers(0, 17))
    t.buffer = draw(st.integers(0, 2**32 - 1))
    t.name = draw(_names)
    t.isVariable = draw(st.booleans())
    t.hasRank = draw(st.booleans())
    if draw(st.booleans()):
        q = fb.QuantizationParametersT()
        n = draw(st.integers(1, 4))
        q.scale = draw(st.lists(st.floats(1e-6, 1e3), min_size=n, max_size=n))
        q.zeroPoint = draw(st.lists(st.integers(-128, 127), min_size=n, max_size=n))
        q.quantizedDimension = draw(st.integers(0, 3))
        if draw(st.booleans()):
            q.scale, q.zeroPoint = np.asarray(q.scale, np.float32), np.asarray(q.zeroPoint)
        t.quantization = q
    return t


@st.composite
def _operator(draw, tensors: int):
    op = fb.OperatorT()
    op.opcodeIndex = draw(st.integers(0, 2**32 - 1))
    op.inputs = draw(st.lists(st.integers(-1, max(tensors - 1, 0)), max_size=4))
    op.outputs = draw(st.lists(st.integers(0, max(tensors - 1, 0)), max_size=3))
    if draw(st.booleans()):
        op.builtinOptionsType = fb.BuiltinOptions.Conv2DOptions
        options = fb.Conv2DOptionsT()
        options.padding = draw(st.integers(0, 1))
        options.strideW, options.strideH = draw(st.integers(1, 4)), draw(st.integers(1, 4))
        options.fusedActivationFunction = draw(st.integers(0, 5))
        op.builtinOptions = options
    if draw(st.booleans()):
        op.customOptions = draw(st.lists(st.integers(0, 255), max_size=9))
    return op


@st.composite
def _models(draw):
    model = fb.ModelT()
    model.version = 3
    model.description = draw(_names)
    graph = fb.SubGraphT()
    graph.tensors = draw(st.lists(_tensor(), max_size=6))
    graph.operators = draw(st.lists(_operator(len(graph.tensors)), max_size=5))
    graph.inputs, graph.outputs = draw(_ints), draw(_ints)
    graph.name = draw(_names)
    model.subgraphs = [graph]
    code = fb.OperatorCodeT()
    code.builtinCode = draw(st.integers(0, 200))
    code.version = draw(st.integers(1, 9))
    model.operatorCodes = [code]
    model.buffers = [fb.BufferT()]
    for data in draw(st.lists(st.binary(max_size=40), max_size=3)):
        buffer = fb.BufferT()
        buffer.data = list(data)
        model.buffers.append(buffer)
    return model


@settings(max_examples=150, deadline=None)
@given(_models())
def test_random_models_pack_identically(model):
    data = _same_both_ways(model)
    assert fb.Model.ModelBufferHasIdentifier(data, 0)
