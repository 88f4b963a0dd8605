"""Keras on the JAX backend (KerasHub's recommended one): `from_keras` lifts the model's
stateless call through the JAX frontend, with the same input/output names, Keras variable
paths as constant names and layer scopes as on the TensorFlow backend, dynamic batch and
sequence, and verification against Keras in every runtime. Keras fixes its backend per
process, so the check runs in a subprocess with KERAS_BACKEND=jax."""

import json
import os
import subprocess
import sys

import pytest

SCRIPT = r'''
import json, os, sys
os.environ["KERAS_BACKEND"] = "jax"
import keras, numpy as np
import tensorforge
from ai_edge_litert.interpreter import Interpreter

ids = keras.Input((None,), dtype="int32", name="token_ids")
mask = keras.Input((None,), dtype="int32", name="padding_mask")
x = keras.layers.Embedding(50, 16, name="embed")(ids)
x = keras.layers.Dense(16, activation="gelu", name="ff")(x)
x = keras.layers.LayerNormalization(name="ln")(x)
x = x * keras.ops.expand_dims(keras.ops.cast(mask, "float32"), -1)
model = keras.Model({"token_ids": ids, "padding_mask": mask},
                    {"logits": keras.layers.Dense(3, name="head")(x)})
module = tensorforge.from_keras(model)
out = sys.argv[1]
result = tensorforge.convert(model, target="all", output=out, verify=True)

# One artifact, another (batch, sequence) pair: LiteRT against Keras.
rng = np.random.default_rng(1)
feeds = {"token_ids": rng.integers(0, 50, (3, 5)).astype(np.int32),
         "padding_mask": np.ones((3, 5), np.int32)}
runner = Interpreter(model_path=os.path.join(out, "model.tflite")).get_signature_runner()
got = runner(**feeds)["logits"]
want = np.asarray(model(feeds)["logits"])
# A KerasHub decoder (rotary embeddings, grouped-query attention, a position-limited
# sequence): its symbolic trace needs the constraint `dim1 <= max length`.
hub = None
try:
    import keras_hub
except ImportError:
    pass
else:
    llama = keras_hub.models.LlamaBackbone(vocabulary_size=50, num_layers=2, num_query_heads=4,
                                           num_key_value_heads=2, hidden_dim=16,
                                           intermediate_dim=32)
    bert = keras_hub.models.BertBackbone(vocabulary_size=50, num_layers=1, num_heads=2,
                                         hidden_dim=16, intermediate_dim=32,
                                         max_sequence_length=32)
    # An encoder-decoder: two sequence lengths, and relative-bias variables sharing a path.
    t5 = keras_hub.models.T5Backbone(vocabulary_size=50, num_layers=1, num_heads=2,
                                     hidden_dim=16, intermediate_dim=32, key_value_dim=8)
    hub = {}
    for name, m in (("llama", llama), ("bert", bert), ("t5", t5)):
        r = tensorforge.convert(m, target="all", output=out + "_" + name, verify=True)
        hub[name] = {"ok": r.verification.ok, "table": r.verification.table(),
                     "sizes": sorted({row.sizes for row in r.verification.rows}),
                     "assumptions": list(r.module.metadata.get("assumptions", []))}

print(json.dumps({
    "backend": keras.backend.backend(),
    "source": module.metadata["source"],
    "inputs": [[v.name, str(v.type)] for v in module.main.inputs],
    "outputs": list(module.metadata["output_names"]),
    "scopes": sorted({n.scope for n in module.main} - {""}),
    "constants": sorted(n.outputs[0].name for n in module.main
                        if n.op == "constant" and n.outputs[0].name and "/" in n.outputs[0].name),
    "runtimes": sorted({r.runtime for r in result.verification.rows}),
    "ok": result.verification.ok, "table": result.verification.table(),
    "other_shape_rel": float(np.max(np.abs(got - want)) / np.max(np.abs(want))),
    "hub": hub,
}))
'''


@pytest.fixture(scope="module")
def jax_backend_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("keras_jax") / "out"
    env = {**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(out)], capture_output=True,
                          text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_keras_on_jax_lifts_with_names_scopes_and_dynamic_dims(jax_backend_run):
    r = jax_backend_run
    assert r["backend"] == "jax" and r["source"] == "keras"
    assert r["inputs"] == [["token_ids", "i32[batch,dim1]"], ["padding_mask", "i32[batch,dim1]"]]
    assert r["outputs"] == ["logits"]
    assert r["scopes"] == ["embed", "ff", "head", "ln"]
    assert r["constants"] == ["embed/embeddings", "ff/bias", "ff/kernel", "head/bias",
                              "head/kernel", "ln/beta", "ln/gamma"]


def test_keras_on_jax_verifies_in_every_runtime_at_two_shapes(jax_backend_run):
    r = jax_backend_run
    assert r["runtimes"] == ["ir", "savedmodel", "tfjs", "tflite"]
    assert r["ok"], r["table"]
    assert r["other_shape_rel"] < 1e-4      # the same .tflite at batch 1, sequence 5


def test_kerashub_models_on_jax_convert_and_verify(jax_backend_run):
    hub = jax_backend_run["hub"]
    if hub is None:
        pytest.skip("keras_hub is not installed")
    for name, r in hub.items():
        assert r["ok"], r["table"]
    for name in ("llama", "bert"):
        assert hub[name]["sizes"] == ["batch=1, dim1=5", "batch=2, dim1=2"], name
    # The encoder and the decoder run at lengths of their own.
    assert hub["t5"]["sizes"] == ["batch=1, encoder_dim1=6, decoder_dim1=5",
                                  "batch=2, encoder_dim1=3, decoder_dim1=2"]
    # BERT's position table bounds the sequence: the trace assumes it, and says so.
    assert hub["bert"]["assumptions"] == ["dim1 <= 32"]
