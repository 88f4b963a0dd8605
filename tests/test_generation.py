"""LLM generation artifacts (tools/generation.py): a KerasHub CausalLM written as one .tflite
with `prefill` and `decode` signatures (explicit key/value cache, weights stored once), and
`generate` driving them in LiteRT: 32 greedy tokens from a 7-token prompt, token-identical to
Keras's own `generate`; bad requests refused clearly."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import keras_hub  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import tensorforge  # noqa: E402
from tensorforge.ir.errors import ConversionError  # noqa: E402
from tensorforge.tools.generation import GenerationError  # noqa: E402

N = 48
PROMPT = np.array([5, 17, 3, 42, 8, 99, 1], np.int32)


def _gpt2():
    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=100, num_layers=2, num_heads=2, hidden_dim=16, intermediate_dim=32,
        max_sequence_length=64)
    return keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=None)


def _llama():
    backbone = keras_hub.models.LlamaBackbone(
        vocabulary_size=100, num_layers=2, num_query_heads=4, num_key_value_heads=2,
        hidden_dim=16, intermediate_dim=32)
    return keras_hub.models.LlamaCausalLM(backbone=backbone, preprocessor=None)


def _keras_greedy(lm, prompt, n):
    ids = np.zeros((1, n), np.int32)
    ids[0, :len(prompt)] = prompt
    mask = np.zeros((1, n), bool)
    mask[0, :len(prompt)] = True
    lm.compile(sampler="greedy")
    return lm.generate({"token_ids": ids, "padding_mask": mask}, stop_token_ids=None)[
        "token_ids"][0]


@pytest.mark.parametrize("make", [_gpt2, _llama], ids=["gpt2", "llama"])
def test_greedy_generation_matches_keras(tmp_path, make):
    keras.utils.set_random_seed(0)
    lm = make()
    artifact = tensorforge.convert_lm(lm, output=tmp_path / "lm.tflite", max_sequence_length=N)
    from ai_edge_litert.interpreter import Interpreter

    keys = Interpreter(model_path=str(artifact.path)).get_signature_list()
    assert set(keys) == {"prefill", "decode"}
    assert keys["decode"]["inputs"] == ["cache", "index", "token"]
    got = tensorforge.generate(artifact.path, PROMPT, 32)
    want = _keras_greedy(lm, PROMPT, N)[len(PROMPT):len(PROMPT) + 32]
    np.testing.assert_array_equal(got, want)
    # Sampling is seeded: the same seed, the same tokens.
    a = tensorforge.generate(artifact.path, PROMPT, 8, sampler="top_k", seed=3, top_k=5)
    b = tensorforge.generate(artifact.path, PROMPT, 8, sampler="top_k", seed=3, top_k=5)
    np.testing.assert_array_equal(a, b)


def test_weights_are_stored_once(tmp_path):
    keras.utils.set_random_seed(0)
    lm = _gpt2()
    artifact = tensorforge.convert_lm(lm, output=tmp_path / "lm.tflite", max_sequence_length=N)
    weight_bytes = sum(int(np.prod(w.shape)) * 4 for w in lm.weights)
    # Both signatures read the same buffers: the file is not twice the weights.
    assert artifact.path.stat().st_size < 1.5 * weight_bytes + 200_000


def test_bad_requests_are_refused(tmp_path):
    keras.utils.set_random_seed(0)
    lm = _gpt2()
    with pytest.raises(ConversionError, match="max_sequence_length 65"):
        tensorforge.convert_lm(lm, output=tmp_path / "big.tflite", max_sequence_length=65)
    assert not (tmp_path / "big.tflite").exists()
    artifact = tensorforge.convert_lm(lm, output=tmp_path / "lm.tflite", max_sequence_length=16)
    with pytest.raises(GenerationError, match="7 tokens plus 10 new ones does not fit"):
        tensorforge.generate(artifact.path, PROMPT, 10)
    x = keras.Input((4,), name="x")
    plain = tmp_path / "plain.tflite"
    tensorforge.convert(keras.Model(x, keras.layers.Dense(2)(x)), target="tflite",
                        output=plain, progress=False)
    with pytest.raises(GenerationError, match="not 'prefill' and 'decode'"):
        tensorforge.generate(plain, PROMPT, 4)
