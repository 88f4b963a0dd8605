"""Direct Keras lifting (frontends/keras/direct.py): Functional/Sequential models of standard
layers are lifted layer by layer without tracing TensorFlow; a layer without a rule is traced
on its own; anything else falls back to tracing the whole model. Each case is checked against
Keras itself and against the traced lift on the IR interpreter, and the two lifts must give
byte-identical TFLite artifacts."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
keras = pytest.importorskip("keras")
from hypothesis import given, settings, strategies as st  # noqa: E402
from keras import layers as L  # noqa: E402

from tensorforge.frontends.keras import from_keras  # noqa: E402
from tensorforge.frontends.keras.lift import DIRECT_ENV  # noqa: E402
from tensorforge.ir.interpreter import run_graph  # noqa: E402
from tensorforge.ir.verify import verify_module  # noqa: E402


def _traced(model, lift=None):
    old = os.environ.get(DIRECT_ENV)
    os.environ[DIRECT_ENV] = "0"
    try:
        return (lift or from_keras)(model)
    finally:
        if old is None:
            del os.environ[DIRECT_ENV]
        else:
            os.environ[DIRECT_ENV] = old


def _tflite(model) -> bytes:
    """The `.tflite` bytes `tensorforge.convert` writes for `model`."""
    import tempfile

    import tensorforge

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.tflite"
        tensorforge.convert(model, target="tflite", output=path, progress=False)
        return path.read_bytes()


def _sources(module) -> set[str]:
    return {n.loc.split(":")[0] for n in module.main if n.op != "constant"}


def _check(model, inputs, *, direct=True, atol=1e-5):
    """Lifts `model` both ways; both match Keras on `inputs`. Returns the default lift."""
    module = from_keras(model)
    verify_module(module)
    want = model(inputs if len(inputs) > 1 else inputs[0], training=False)
    want = [np.asarray(w) for w in (want if isinstance(want, (list, tuple)) else [want])]
    for m in (module, _traced(model)):
        got = run_graph(m.main, inputs)
        assert len(got) == len(want)
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, atol=atol, rtol=1e-5)
    assert ("keras" in _sources(module)) == direct, _sources(module)
    # The direct lift is the traced one: the same TFLite bytes.
    assert _tflite(model) == _traced(model, _tflite)
    return module


def _rand(*shape, seed=0):
    return np.random.RandomState(seed).standard_normal(shape).astype(np.float32)


def _randomize(model, seed=1):
    """Non-trivial batch-norm statistics (fresh ones are mean 0, variance 1)."""
    rng = np.random.RandomState(seed)
    for w in model.weights:
        if "moving_variance" in w.path:
            w.assign(rng.uniform(0.5, 2.0, w.shape).astype(np.float32))
        elif "moving_mean" in w.path or "beta" in w.path:
            w.assign(rng.normal(0, 0.5, w.shape).astype(np.float32))


class Scale(L.Layer):
    """A custom layer (no rule): traced on its own."""

    def build(self, shape):
        self.gamma = self.add_weight(shape=(shape[-1],), initializer="ones", name="gamma")

    def call(self, x):
        return x * (self.gamma + 0.5)


def test_standard_layers_lift_directly_and_match_keras_and_the_trace():
    x = keras.Input((12, 12, 4), name="image")
    y = L.Rescaling(1 / 127.5, offset=-1.0)(x)
    y = L.ZeroPadding2D(((1, 0), (0, 1)))(y)
    y = L.Conv2D(8, 3, strides=2, padding="valid", activation="relu", name="c1")(y)
    y = L.BatchNormalization(name="bn1")(y)
    y = L.Conv2D(8, 3, padding="same", groups=4, use_bias=False, name="grouped")(y)
    y = L.BatchNormalization(center=False, scale=False, epsilon=1e-2)(y)
    y = L.ReLU(6.0)(y)
    d = L.DepthwiseConv2D(3, padding="same", depth_multiplier=2, dilation_rate=2,
                          activation="swish")(y)
    s = L.SeparableConv2D(16, 3, padding="same", activation="gelu")(y)
    y = L.Add()([d, s])
    se = L.GlobalAveragePooling2D(keepdims=True)(y)
    se = L.Dense(16, activation="sigmoid")(se)
    y = L.Multiply()([y, se])                       # broadcast [b,h,w,c] * [b,1,1,c]
    y = Scale(name="custom_scale")(y)              # no rule: traced alone
    y = keras.ops.add(y, 3.0)                       # a Keras op in the graph
    y = L.LayerNormalization(epsilon=1e-5)(y)
    y = L.Dense(12, activation="tanh")(y)          # rank 4: a matmul over the last axis
    a = L.MaxPooling2D(2, padding="same")(y)
    b = L.AveragePooling2D(3, strides=2, padding="same")(y)
    y = L.Concatenate()([a, L.Maximum()([a, b]), L.Subtract()([a, b])])
    inner = keras.Sequential([L.Conv2D(6, 1, name="pw"), L.LayerNormalization(center=False),
                              L.Dropout(0.5)], name="inner")
    y = inner(y)
    flat = L.Flatten()(y)
    g = L.GlobalMaxPooling2D()(y)
    out = L.Dense(5)(L.Concatenate()([flat, g]))
    out = L.Softmax()(L.Reshape((1, 5))(out))
    model = keras.Model(x, out)
    _randomize(model)
    module = _check(model, [_rand(3, 12, 12, 4) * 100])
    sources = {n.loc.split(":")[1] for n in module.main if n.loc.startswith("keras:")}
    assert {"Conv2D", "BatchNormalization", "SeparableConv2D", "Add", "LayerNormalization",
            "Concatenate", "Softmax"} <= sources
    # The custom layer went through TF on its own, scoped to the layer.
    traced = [n for n in module.main if n.loc.startswith("tf:")]
    assert traced and {n.scope for n in traced} == {"custom_scale"}
    # Weights are named by layer path, as the traced path names them.
    names = {v.name for n in module.main for v in n.outputs if v.name}
    assert {"c1/kernel", "inner/pw/kernel"} <= names
    assert module.main.inputs[0].type.shape == ("batch", 12, 12, 4)


def test_lifting_is_deterministic():
    model = keras.applications.MobileNetV2(weights=None, input_shape=(32, 32, 3), alpha=0.35)
    from tensorforge.ir.text import print_module

    assert print_module(from_keras(model)) == print_module(from_keras(model))


@pytest.mark.parametrize("build", [
    # Embedding(mask_zero) makes a mask that later layers read: the whole model is traced.
    lambda: keras.Sequential([keras.Input((6,), dtype="int32"),
                              L.Embedding(10, 4, mask_zero=True), L.LSTM(3, name="masked_lstm")]),
    # A run-time sequence length.
    lambda: keras.Sequential([keras.Input((None, 4)), L.Dense(3)]),
    # Mixed precision.
    lambda: keras.Sequential([keras.Input((4,)), L.Dense(3, dtype="mixed_float16"),
                              L.Activation("linear", dtype="float32")]),
], ids=["mask", "runtime-dims", "mixed-precision"])
def test_models_outside_the_rules_are_traced(build):
    """Through TF: the whole model (a mask, run-time dims), or each layer alone (float16
    layers, whose input casts a rule does not make)."""
    model = build()
    dtype = model.inputs[0].dtype
    shape = [2] + [d or 5 for d in model.inputs[0].shape[1:]]
    x = (np.random.RandomState(0).randint(0, 10, shape).astype(np.int32) if "int" in str(dtype)
         else _rand(*shape))
    _check(model, [x], direct=False, atol=1e-2)


_ACTIVATIONS = ["linear", "relu", "relu6", "sigmoid", "tanh", "elu", "softplus", "swish",
                "gelu", "hard_sigmoid", "hard_swish", "leaky_relu", "softmax"]


@settings(max_examples=12, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["conv", "depthwise", "separable", "dense", "pool"]),
                          st.sampled_from([1, 2, 3]), st.sampled_from([1, 2]),
                          st.sampled_from(["same", "valid"]), st.sampled_from(_ACTIVATIONS),
                          st.booleans()), min_size=1, max_size=3))
def test_random_layer_stacks_match_keras(specs):
    """Random conv/dense stacks: the direct lift computes what Keras does."""
    x = keras.Input((9, 9, 3))
    y = x
    for kind, k, stride, padding, act, bias in specs:
        if y.shape[1] < k or y.shape[2] < k:
            padding = "same"
        if kind == "conv":
            y = L.Conv2D(4, k, strides=stride, padding=padding, activation=act, use_bias=bias)(y)
        elif kind == "depthwise":
            y = L.DepthwiseConv2D(k, strides=stride, padding=padding, activation=act,
                                  use_bias=bias)(y)
        elif kind == "separable":
            y = L.SeparableConv2D(4, k, strides=stride, padding=padding, activation=act,
                                  use_bias=bias)(y)
        elif kind == "dense":
            y = L.Dense(4, activation=act, use_bias=bias)(y)
        else:
            y = L.MaxPooling2D(k, strides=stride, padding=padding)(y)
    model = keras.Model(x, y)
    _check(model, [_rand(2, 9, 9, 3)], atol=1e-4)


def test_a_layer_configuration_without_a_rule_is_traced_alone():
    """Conv2D has a rule, but not for the mish activation: what the rule emitted is dropped
    and that one layer is traced; the rest stays direct."""
    x = keras.Input((8, 8, 3))
    y = L.Conv2D(4, 3, activation="relu", name="first")(x)
    y = L.Conv2D(4, 3, activation=keras.activations.mish, name="mish_conv")(y)
    y = L.Activation(lambda t: t * 2.0, name="doubled")(y)
    model = keras.Model(x, L.Dense(2, name="head")(y))
    module = _check(model, [_rand(2, 8, 8, 3)])
    traced = {n.scope for n in module.main if n.loc.startswith("tf:")}
    direct = {n.scope for n in module.main if n.loc.startswith("keras:")}
    assert traced == {"mish_conv", "doubled"} and {"first", "head"} <= direct
    assert len([n for n in module.main if n.op == "conv2d"]) == 2   # nothing left behind


@pytest.mark.parametrize("name", ["MobileNetV3Small", "EfficientNetB0", "Xception"])
def test_keras_applications_lift_directly_to_the_same_bytes(name):
    """Applications mixing layers, Keras ops (`x + 3.0`), squeeze-excite broadcasts and
    layers traced alone (Normalization): the same TFLite bytes either way."""
    image = keras.Input((72, 72, 3), name="image")
    kwargs = {"alpha": 0.75, "minimalistic": False} if name == "MobileNetV3Small" else {}
    model = getattr(keras.applications, name)(weights=None, input_tensor=image, **kwargs)
    _randomize(model)
    module = from_keras(model)
    assert "keras" in _sources(module)
    assert _tflite(model) == _traced(model, _tflite)
