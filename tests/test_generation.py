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
    # Each layer's keys and values are their own signature tensors (GQA: the key/value
    # heads), and the decode step copies no cache but the rows it writes.
    caches = [f"cache_{kv}_{i}" for i in range(2) for kv in "kv"]
    assert keys["decode"]["inputs"] == sorted([*caches, "index", "token"])
    assert keys["decode"]["outputs"] == sorted(["logits", *caches])
    assert set(artifact.cache_shapes) == set(caches)
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
    caches = {f"cache_{kv}_{i}" for i in range(2) for kv in "kv"}
    assert set(decode.structured_input_signature[1]) == {"token", "index", *caches}
    assert set(decode.structured_outputs) == {"logits", *caches}
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
    for step, inputs in (("prefill", {"token_ids"}), ("decode", {"token", "index", *caches})):
        signature = json.loads((tfjs / step / "model.json").read_text())["signature"]
        assert set(signature["inputs"]) == inputs
        assert set(signature["outputs"]) == {"logits", *caches}
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


def test_a_cache_from_another_artifact_is_refused(tmp_path):
    keras.utils.set_random_seed(0)
    lm = _gpt2()
    a = tensorforge.open_lm(tensorforge.convert_lm(lm, output=tmp_path / "a.tflite",
                                                   max_sequence_length=16).path)
    b_path = tensorforge.convert_lm(lm, output=tmp_path / "b.tflite", max_sequence_length=24).path
    b = tensorforge.open_lm(b_path)
    ids = np.zeros(16, np.int32)
    ids[:7] = PROMPT
    logits, cache = a.prefill(ids)
    assert logits.shape == (1, 16, 100)
    step_logits, cache = a.decode(int(PROMPT[-1]), cache, 7)
    assert step_logits.shape == (1, 1, 100)
    # Another artifact: named, and every tensor whose shape differs is listed.
    with pytest.raises(GenerationError, match=r"a\.tflite.*not by .*b\.tflite.*cache_k_0 is "
                                              r"float32\[1, 16, 2, 8\], the artifact takes "
                                              r"float32\[1, 24, 2, 8\]"):
        b.decode(1, cache, 7)
    # The same artifact loaded twice shares caches; a hand-made dict is refused.
    assert tensorforge.open_lm(tmp_path / "a.tflite").decode(1, cache, 8)[0].shape == (1, 1, 100)
    with pytest.raises(GenerationError, match="takes the LMCache"):
        a.decode(1, dict(cache), 8)
    with pytest.raises(GenerationError, match="index 16 is outside"):
        a.decode(1, cache, 16)


def _sqnr(got, want):
    want = want.astype(np.float64)
    return 10 * np.log10(np.sum(want ** 2) / np.sum((got - want) ** 2))


def test_quantized_language_models(tmp_path):
    """int4-weight: blockwise int4 matmuls read by LiteRT's int4 FULLY_CONNECTED itself (no
    float copy of any weight), the tied embedding table stored once for the lookup and the
    logits; dynamic-int8: int8 hybrid matmuls. Both generate, close to float."""
    from ai_edge_litert import schema_py_generated as fb

    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=128, num_layers=2, num_heads=2, hidden_dim=64, intermediate_dim=128,
        max_sequence_length=64)
    lm = keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=None)
    ids = np.zeros(N, np.int32)
    ids[:len(PROMPT)] = PROMPT
    paths = {q: tensorforge.convert_lm(lm, output=tmp_path / f"{q}.tflite", max_sequence_length=N,
                                       quantization=None if q == "float" else q).path
             for q in ("float", "dynamic-int8", "int4-weight")}
    logits = {q: tensorforge.open_lm(p).prefill(ids)[0][0, :len(PROMPT)] for q, p in paths.items()}
    assert _sqnr(logits["dynamic-int8"], logits["float"]) > 25
    assert _sqnr(logits["int4-weight"], logits["float"]) > 10
    assert len(tensorforge.generate(paths["int4-weight"], PROMPT, 8)) == 8

    model = fb.ModelT.InitFromPackedBuf(paths["int4-weight"].read_bytes(), 0)
    names = {v: k for k, v in vars(fb.BuiltinOperator).items() if not k.startswith("_")}
    decode = model.subgraphs[model.signatureDefs[[s.signatureKey for s in model.signatureDefs]
                                                 .index(b"decode")].subgraphIndex]
    kinds, fc_buffers, gather_buffers = [], set(), set()
    for op in decode.operators:
        name = names[model.operatorCodes[op.opcodeIndex].builtinCode]
        assert name != "DEQUANTIZE" or decode.tensors[op.inputs[0]].type != fb.TensorType.INT4 \
            or any(names[model.operatorCodes[o.opcodeIndex].builtinCode] == "GATHER"
                   and o.inputs[0] in op.outputs for o in decode.operators)
        if name == "FULLY_CONNECTED":
            w = decode.tensors[op.inputs[1]]
            assert w.type == fb.TensorType.INT4
            kinds.append(w.quantization.detailsType)
            fc_buffers.add(w.buffer)
        if name == "DEQUANTIZE":
            gather_buffers.add(decode.tensors[op.inputs[0]].buffer)
    blockwise = fb.QuantizationDetails.BlockwiseQuantization
    # 2 layers x 6 matmuls (q, k, v, output, 2 feedforward) blockwise; the logits per
    # channel, sharing the table's codes.
    assert kinds.count(blockwise) == 12 and kinds.count(fb.QuantizationDetails.NONE) == 1
    assert fc_buffers & gather_buffers
    # (A model this small is mostly graph and float position table; make bench reports the
    # ratio on a real-sized one.)
    assert paths["int4-weight"].stat().st_size < 0.45 * paths["float"].stat().st_size
