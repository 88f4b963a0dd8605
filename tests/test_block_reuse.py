"""Repeated transformer blocks are traced once and imported again (frontends/keras/
block_reuse.py): the artifacts are byte for byte those of a full trace, the copies read
their own weights, and blocks that differ are traced each."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

import tensorforge
from tensorforge.frontends.keras import block_reuse

keras_hub = pytest.importorskip("keras_hub")


@pytest.fixture(autouse=True)
def _traced(monkeypatch):
    """Block reuse is a tracing device: these models are traced whole (with static shapes
    they would be lifted layer by layer, frontends/keras/block_rules.py)."""
    from tensorforge.frontends.keras.lift import DIRECT_ENV

    monkeypatch.setenv(DIRECT_ENV, "0")


def _seeded(model):
    rng = np.random.default_rng(0)
    model.set_weights([rng.normal(0, 0.2, w.shape).astype(w.dtype) for w in model.get_weights()])
    return model


def _backbone(name):
    from tensorforge.tools.sweeps.kerashub_configs import CONFIGS

    config = dict(CONFIGS[name])
    config["num_layers"] = 3
    return _seeded(getattr(keras_hub.models, name)(**config))


def _convert(model, tmp_path, tag, monkeypatch, reuse: bool, **kwargs):
    monkeypatch.setenv(block_reuse.ENV, "1" if reuse else "0")
    result = tensorforge.convert(model, target="tflite", output=tmp_path / f"{tag}.tflite",
                                 progress=False, **kwargs)
    return hashlib.sha256(result.artifacts["tflite"]).hexdigest()


def _count_imports(monkeypatch) -> list:
    imported = []
    real = block_reuse._import_copy

    def spy(graph, recorded, layer, *rest):
        out = real(graph, recorded, layer, *rest)
        imported.append((layer.name, out is not None))
        return out
    monkeypatch.setattr(block_reuse, "_import_copy", spy)
    return imported


@pytest.mark.parametrize("name", ["BertBackbone", "RobertaBackbone", "DistilBertBackbone",
                                  "GPT2Backbone"])
def test_backbones_are_byte_identical_with_their_blocks_imported(name, tmp_path, monkeypatch):
    model = _backbone(name)
    imported = _count_imports(monkeypatch)
    for static in (False, True):
        shapes = {t.name: (1, 16) for t in model.inputs} if static else None
        full = _convert(model, tmp_path, f"full{static}", monkeypatch, False,
                        input_shapes=shapes)
        assert imported == []
        reused = _convert(model, tmp_path, f"reused{static}", monkeypatch, True,
                          input_shapes=shapes)
        assert reused == full, (name, static)
        # The second and third blocks were imported, not traced.
        assert [ok for _, ok in imported] == [True, True], imported
        imported.clear()


def test_copies_compute_with_their_own_weights_and_different_blocks_are_traced(tmp_path,
                                                                              monkeypatch):
    import keras

    TransformerEncoder = keras_hub.layers.TransformerEncoder
    x = keras.Input((8, 16), name="x")
    h = TransformerEncoder(32, 2, name="same_a")(x)
    h = TransformerEncoder(32, 2, name="same_b")(h)
    h = TransformerEncoder(48, 2, name="wider")(h)          # another configuration
    model = _seeded(keras.Model(x, h))
    imported = _count_imports(monkeypatch)
    monkeypatch.setenv(block_reuse.ENV, "1")
    result = tensorforge.convert(model, target="tflite", output=tmp_path / "m.tflite",
                                 verify=True, progress=False)
    assert result.verification.ok, result.verification.table()
    assert imported == [("same_b", True)]
    reused = hashlib.sha256(result.artifacts["tflite"]).hexdigest()
    assert reused == _convert(model, tmp_path, "full", monkeypatch, False)


def test_blocks_quantized_by_keras_are_traced_each(tmp_path, monkeypatch):
    """A Keras-quantized block traces its own dequantized weights as constants: a copy would
    carry the first block's, so such blocks are not reused."""
    import keras

    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.GPT2Backbone(vocabulary_size=100, num_layers=2, num_heads=2,
                                             hidden_dim=16, intermediate_dim=32,
                                             max_sequence_length=64)
    backbone.quantize("int8")
    imported = _count_imports(monkeypatch)
    monkeypatch.setenv(block_reuse.ENV, "1")
    tensorforge.convert(backbone, target="tflite", output=tmp_path / "q.tflite",
                        progress=False)
    assert imported == []
