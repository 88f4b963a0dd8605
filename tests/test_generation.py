"""LLM generation artifacts (tools/generation.py): a KerasHub CausalLM (GPT-2, Llama, OPT,
Gemma with a sliding window and soft caps, Mistral with a sliding window) written as one
.tflite with `prefill` and `decode` signatures (explicit key/value cache, weights stored
once), and `generate` driving them in LiteRT: 32 greedy tokens from a 7-token prompt,
token-identical to Keras's own `generate`. The same steps as one SavedModel (two signatures,
one set of variables) run by `generate` in TensorFlow, and as TF.js graph models run by
examples/tfjs_generate.js in Node, token-identical too; bad requests refused clearly."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

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


def _opt():
    backbone = keras_hub.models.OPTBackbone(
        vocabulary_size=100, num_layers=2, num_heads=2, hidden_dim=16, intermediate_dim=32,
        max_sequence_length=64)
    return keras_hub.models.OPTCausalLM(backbone=backbone, preprocessor=None)


def _gemma():
    # A 16-token sliding window (the 39 tokens generated cross it), Gemma 2's soft caps and
    # post-norms: the paths a plain Gemma config would not exercise.
    backbone = keras_hub.models.GemmaBackbone(
        vocabulary_size=100, num_layers=2, num_query_heads=4, num_key_value_heads=2,
        hidden_dim=16, intermediate_dim=32, head_dim=8, use_post_ffw_norm=True,
        use_post_attention_norm=True, attention_logit_soft_cap=50.0, final_logit_soft_cap=30.0,
        use_sliding_window_attention=True, sliding_window_size=16)
    return keras_hub.models.GemmaCausalLM(backbone=backbone, preprocessor=None)


def _mistral():
    backbone = keras_hub.models.MistralBackbone(
        vocabulary_size=100, num_layers=2, num_query_heads=4, num_key_value_heads=2,
        hidden_dim=16, intermediate_dim=32, sliding_window=16)
    return keras_hub.models.MistralCausalLM(backbone=backbone, preprocessor=None)


def _keras_greedy(lm, prompt, n):
    ids = np.zeros((1, n), np.int32)
    ids[0, :len(prompt)] = prompt
    mask = np.zeros((1, n), bool)
    mask[0, :len(prompt)] = True
    lm.compile(sampler="greedy")
    return lm.generate({"token_ids": ids, "padding_mask": mask}, stop_token_ids=None)[
        "token_ids"][0]


@pytest.mark.parametrize("make", [_gpt2, _llama, _opt, _gemma, _mistral],
                         ids=["gpt2", "llama", "opt", "gemma", "mistral"])
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


def _tfjs_generate(artifact: Path, prompt, count: int) -> np.ndarray:
    """examples/tfjs_generate.js on `artifact` in Node (skips without node / tests/js)."""
    from tensorforge.tools.node_runner import JS_DIR, ensure_harness

    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node / npm not on PATH: the TF.js artifact runs in Node.js")
    ensure_harness()
    script = Path(tensorforge.__file__).resolve().parent / "examples" / "tfjs_generate.js"
    proc = subprocess.run(
        ["node", str(script), str(artifact), ",".join(str(int(t)) for t in prompt), str(count)],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "NODE_PATH": str(JS_DIR / "node_modules")})
    assert proc.returncode == 0, proc.stderr[-2000:]
    return np.array(json.loads(proc.stdout), np.int32)


@pytest.mark.parametrize("make", [_gpt2, _llama, _opt, _gemma, _mistral],
                         ids=["gpt2", "llama", "opt", "gemma", "mistral"])
def test_savedmodel_and_tfjs_match_keras(tmp_path, make):
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    lm = make()
    artifacts = tensorforge.convert_lm(lm, output=tmp_path / "lm", max_sequence_length=N,
                                       target=["savedmodel", "tfjs"])
    want = _keras_greedy(lm, PROMPT, N)[len(PROMPT):len(PROMPT) + 32]

    saved = artifacts["savedmodel"].path
    assert saved == tmp_path / "lm" / "savedmodel"
    loaded = tf.saved_model.load(str(saved))
    assert set(loaded.signatures) == {"prefill", "decode"}
    decode = loaded.signatures["decode"]
    assert set(decode.structured_input_signature[1]) == {"token", "cache", "index"}
    assert set(decode.structured_outputs) == {"logits", "cache"}
    # Both signatures read one set of variables: every weight is in the checkpoint once (the
    # rest are constants one step folds, e.g. prefill's slice of the position table).
    reader = tf.train.load_checkpoint(str(saved / "variables" / "variables"))
    stored = [reader.get_tensor(k) for k in reader.get_variable_to_shape_map()
              if k.startswith("weights/")]
    digests = [(a.shape, a.tobytes()) for a in stored]
    assert len(set(digests)) == len(digests)
    table = np.asarray(lm.backbone.token_embedding.embeddings)
    assert sum(a.shape == table.shape and np.array_equal(a, table) for a in stored) == 1
    np.testing.assert_array_equal(tensorforge.generate(saved, PROMPT, 32), want)

    tfjs = artifacts["tfjs"].path
    for step, inputs in (("prefill", {"token_ids"}), ("decode", {"token", "cache", "index"})):
        signature = json.loads((tfjs / step / "model.json").read_text())["signature"]
        assert set(signature["inputs"]) == inputs
        assert set(signature["outputs"]) == {"logits", "cache"}
    np.testing.assert_array_equal(_tfjs_generate(tfjs, PROMPT, 32), want)


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
    with pytest.raises(ConversionError, match="target 'onnx'"):
        tensorforge.convert_lm(lm, output=tmp_path / "x", max_sequence_length=16,
                               target="onnx")
    with pytest.raises(ConversionError, match="not an earlier savedmodel generation artifact"):
        tensorforge.convert_lm(lm, output=plain, max_sequence_length=16, target="savedmodel")
    (tmp_path / "web").mkdir()
    (tmp_path / "web" / "decode").mkdir()
    (tmp_path / "web" / "prefill").mkdir()
    (tmp_path / "web" / "prefill" / "model.json").write_text("{}")
    with pytest.raises(GenerationError, match="TF.js generation artifact"):
        tensorforge.generate(tmp_path / "web", PROMPT, 4)
