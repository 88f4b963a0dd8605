"""The Keras lifting fast path (variables bound while tracing, no tf.function machinery;
constants read once; CSE comparing constants by fingerprint) writes the very bytes the
classic path wrote: the TFLite artifacts of a few models with seeded weights hash to what
they hashed to before (recorded with the earlier code). A different hash means the artifact
changed: if that is intended, record the new hash and say why in the change."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

import tensorforge

keras = pytest.importorskip("keras")

ROOT = Path(__file__).resolve().parents[1]


def _seeded(model, seed=0):
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(0, 0.1, w.shape).astype(w.dtype)
                       if w.dtype.kind == "f" else w for w in model.get_weights()])
    return model


def _digits():
    return keras.saving.load_model(str(ROOT / "examples" / "digits_cnn.keras"))


def _resnetish():
    L = keras.layers
    x = inputs = keras.Input((32, 32, 3), name="image")
    x = L.Conv2D(16, 3, padding="same", use_bias=False, name="stem")(x)
    x = L.BatchNormalization(name="stem_bn")(x)
    x = L.ReLU(name="stem_relu")(x)
    for i in range(2):
        y = L.Conv2D(16, 3, padding="same", name=f"b{i}_conv1")(x)
        y = L.BatchNormalization(name=f"b{i}_bn1")(y)
        y = L.Activation("relu", name=f"b{i}_relu")(y)
        y = L.DepthwiseConv2D(3, padding="same", name=f"b{i}_dw")(y)
        y = L.BatchNormalization(name=f"b{i}_bn2")(y)
        x = L.Add(name=f"b{i}_add")([x, y])
    x = L.MaxPooling2D(name="pool")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    out = L.Dense(10, activation="softmax", name="head")(x)
    return _seeded(keras.Model(inputs, out, name="resnetish"))


def _mobilenet():
    # A named input: Keras numbers unnamed ones per process, and the name is in the file.
    image = keras.Input((96, 96, 3), name="image")
    return _seeded(keras.applications.MobileNetV2(weights=None, input_tensor=image,
                                                  alpha=0.35))


def _encoder():
    from tensorforge.tools.bench.models import transformer_encoder

    return _seeded(transformer_encoder(2, 32, 4, seq_len=16, vocab=100))


def _lstm():
    from tensorforge.tools.bench.models import keras_recurrent

    return keras_recurrent("lstm", seq_len=8, features=4, units=8)


class _Subclassed(keras.Model):
    def __init__(self):
        super().__init__(name="subclassed")
        self.dense = keras.layers.Dense(8, name="dense")
        self.norm = keras.layers.LayerNormalization(name="norm")

    def call(self, x):
        return self.norm(self.dense(x) + self.dense(x))     # one weight read twice


def _subclassed():
    model = _Subclassed()
    model(np.zeros((1, 4), np.float32))
    return _seeded(model)


def _bert():
    keras_hub = pytest.importorskip("keras_hub")
    model = keras_hub.models.BertBackbone(num_heads=2, max_sequence_length=32,
                                          vocabulary_size=50, num_layers=2, hidden_dim=16,
                                          intermediate_dim=32)
    return _seeded(model)


MODELS = {"digits": _digits, "resnetish": _resnetish, "mobilenetv2-0.35": _mobilenet,
          "encoder": _encoder, "lstm": _lstm, "subclassed": _subclassed, "bert": _bert}

HASHES = {
    "digits": "1b9f5173e1ab03909bb480a05e9878373c4bb92e4a3c3f967e8faeaad80aeabc",
    "resnetish": "784c370494fe75179d8c6c0835bff9e6d7a8b4d78491b7b5881fab7656155c62",
    "mobilenetv2-0.35": "8010cc5d03d1cd353f2d46c44ed9606338b79e893c4c0e1070daad9cc1ca5865",
    "encoder": "b41650faa12dfda5a0982b572be123643227ad01f1e7bbf78369165e0d523f94",
    "lstm": "f3ea23a7b16bb5cca685db5c732bdc3f17e010b8f45f9eadb7abca762f8cef4a",
    "subclassed": "19a8143dff25ad759714913f235642f2fe2eef5faf22495b4d79f62f9fb128d6",
    "bert": "2872cf40bf557127a8441974c471d9c35c6255d8bcfc93d059c7669da2ba1840",
}


@pytest.mark.parametrize("name", list(MODELS))
def test_tflite_bytes_are_unchanged(name, tmp_path):
    keras.backend.clear_session()       # Keras numbers auto-named layers per session
    model = MODELS[name]()
    kwargs = {"input_signature": None}
    if name == "subclassed":
        import tensorflow as tf

        kwargs["input_signature"] = [tf.TensorSpec([None, 4], tf.float32)]
    data = tensorforge.convert(model, target="tflite", output=tmp_path / "m.tflite",
                               progress=False, **kwargs).artifacts["tflite"]
    again = tensorforge.convert(model, target="tflite", output=tmp_path / "n.tflite",
                                progress=False, **kwargs).artifacts["tflite"]
    assert data == again                                 # deterministic
    digest = hashlib.sha256(data).hexdigest()
    print(f"HASH {name} {digest}")
    assert digest == HASHES[name]
