"""`ts.from_keras_layout_map`: a Keras `LayoutMap` (a KerasHub backbone's own
`get_layout_map`, or written by hand) becomes a tensorforge LayoutMap over the lifted module's
weights; the plan runs on 8 simulated JAX devices (and TF DTensor for the MLP and a
hand-mapped Llama) equal to the unsharded interpreter. Bad maps are refused with every problem at once. The export direction
(`to_keras_layout_map`) of a KerasHub OPT plan loads in `keras.distribution.ModelParallel`.

Simulated devices must be configured before JAX / TF initialise, so the runs happen in
subprocesses (one Keras-on-JAX, one Keras-on-TF) that print one JSON line."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

JAX_SCRIPT = r'''
import json, os
import numpy as np
import keras, keras_hub
import tensorforge
from tensorforge import sharding as ts
from tensorforge.backends.jax_sharding import compile_sharded, count_collectives
from tensorforge.backends.keras_layout_map import keras_layout_entries, to_keras_layout_map
from tensorforge.tools.convert import optimize

rng = np.random.default_rng(0)
res = {"backend": keras.backend.backend(), "devices": len(keras.distribution.list_devices())}
kmesh = keras.distribution.DeviceMesh((2, 4), ["batch", "model"],
                                      devices=keras.distribution.list_devices())

def randomize(model):
    # Keras' seeded initializers give a tiny model's key and value kernels equal values,
    # which canonicalize then merges into one constant.
    model.set_weights([rng.standard_normal(w.shape).astype(np.float32) * 0.3
                       for w in model.get_weights()])

def rel(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))

def run(module, layout_map, xs, batch):
    plan = ts.shard(module, layout_map, batch=batch)
    program = compile_sharded(plan, example_inputs=xs)
    got = program(*xs)[0]
    want = tensorforge.run_graph(module.main, xs)[0]
    kinds = {}
    for c in plan.collectives:
        kinds[f"{c.kind}/{c.axis}"] = kinds.get(f"{c.kind}/{c.axis}", 0) + 1
    return plan, {"err": float(np.max(np.abs(np.asarray(got) - want))), "rel": rel(got, want),
                  "plan": kinds, "plan_bytes": plan.total_collective_bytes(),
                  "xla": {k: list(v) for k, v in count_collectives(program.hlo_text()).items()},
                  "params_per_device": plan.parameter_bytes_per_device()}

# KerasHub Llama with its own layout map.
llama = keras_hub.models.LlamaBackbone(vocabulary_size=64, num_layers=2, num_query_heads=4,
                                       hidden_dim=16, intermediate_dim=32,
                                       num_key_value_heads=2)
randomize(llama)
shapes = {"token_ids": (4, 8), "padding_mask": (4, 8)}
module = optimize(tensorforge.from_keras(llama, input_shapes=shapes), None)
lm = ts.from_keras_layout_map(keras_hub.models.LlamaBackbone.get_layout_map(kmesh), module,
                              weights=llama)
tokens = rng.integers(0, 64, (4, 8)).astype(np.int32)
mask = np.ones((4, 8), np.int32)
plan, res["llama"] = run(module, lm, [tokens, mask], 4)
res["llama"]["map"] = {k: str(lm[k]) for k in lm}
res["llama"]["mesh"] = dict(lm.mesh.axes)
res["llama"]["inputs"] = {k: str(v) for k, v in lm.inputs.items()}
res["llama"]["keras_rel"] = rel(tensorforge.run_graph(module.main, [tokens, mask])[0],
                                llama({"token_ids": tokens, "padding_mask": mask}))

# The same Llama with a hand-written Megatron LayoutMap: 2 all-reduces per layer.
user = keras.distribution.LayoutMap(kmesh)
user[".*self_attention/query/kernel"] = (None, "model", None)
user[".*self_attention/attention_output/kernel"] = ("model", None, None)
user[".*feedforward_(gate|intermediate)_dense/kernel"] = (None, "model")
user[".*feedforward_output_dense/kernel"] = ("model", None)
_, res["llama_user"] = run(module, ts.from_keras_layout_map(user, module, weights=llama),
                           [tokens, mask], 4)

# A Keras MLP with a hand-written LayoutMap (Megatron column/row parallel).
inp = keras.Input((32,), name="x")
h = keras.layers.Dense(64, activation="relu", name="fc1")(inp)
mlp = keras.Model(inp, keras.layers.Dense(32, name="fc2")(h), name="mlp")
randomize(mlp)
user = keras.distribution.LayoutMap(kmesh)
user["fc1/kernel"] = (None, "model")
user["fc1/bias"] = ("model",)
user["fc2/kernel"] = ("model", None)
mod = optimize(tensorforge.from_keras(mlp), None)
lm = ts.from_keras_layout_map(user, mod)
x = rng.standard_normal((8, 32)).astype(np.float32)
_, res["mlp"] = run(mod, lm, [x], 8)
res["mlp"]["map"] = {k: str(lm[k]) for k in lm}

# Every problem at once: a key matching no weight, an indivisible dim, a wrong rank.
bad = keras.distribution.LayoutMap(kmesh)
bad["fc1/kernal"] = (None, "model")
bad["fc1/bias"] = ("batch", None)
bad["fc2/kernel"] = ("model", "batch")
try:
    ts.from_keras_layout_map(bad, mod, mesh={"batch": 2, "model": 3})
    res["errors"] = "no error"
except ts.ShardingError as e:
    res["errors"] = str(e)
bad = keras.distribution.LayoutMap(kmesh)
bad["token_embedding/reverse_embeddings"] = (None, "model")
try:
    ts.from_keras_layout_map(bad, module, weights=llama)
    res["unused"] = "no error"
except ts.ShardingError as e:
    res["unused"] = str(e)

# Export: a Megatron plan of a tiny KerasHub OPT (attention imported from a Keras map, the
# MLP and embedding from create_layout_map) back to a Keras LayoutMap that ModelParallel
# loads.
opt = keras_hub.models.OPTBackbone(vocabulary_size=64, num_layers=2, num_heads=4, hidden_dim=16,
                                   intermediate_dim=32, max_sequence_length=16)
randomize(opt)
omod = optimize(tensorforge.from_keras(opt, input_shapes=shapes), None)
mesh = ts.Mesh({"batch": 2, "model": 4})
attn = keras.distribution.LayoutMap(kmesh)
attn[".*self_attention/(query|key|value)/kernel"] = (None, "model", None)
attn[".*self_attention/attention_output/kernel"] = ("model", None, None)
olm = ts.from_keras_layout_map(attn, omod, weights=opt)
for key, layout in ts.create_layout_map(omod, mesh).items():
    olm[key] = layout
oplan = ts.shard(omod, olm, batch=4)
entries = keras_layout_entries(oplan.module, dict(mesh.axes), weights=opt)
res["opt_entries"] = {k: list(v) for k, v in entries.items()}
_, res["opt_run"] = run(omod, olm, [tokens, mask], 4)
layout_map = to_keras_layout_map(oplan, weights=opt)
dist = keras.distribution.ModelParallel(layout_map=layout_map, batch_dim_name="batch")
with dist.scope():
    sharded = keras_hub.models.OPTBackbone(vocabulary_size=64, num_layers=2, num_heads=4,
                                           hidden_dim=16, intermediate_dim=32,
                                           max_sequence_length=16)
sharded.set_weights(opt.get_weights())
res["opt_shards"] = {w.path: list(w.value.addressable_shards[0].data.shape)
                     for w in sharded.weights if w.path in entries}
res["opt_keras_rel"] = rel(sharded({"token_ids": tokens, "padding_mask": mask}),
                           opt({"token_ids": tokens, "padding_mask": mask}))
print(json.dumps(res))
'''

TF_SCRIPT = r'''
import json
from tensorforge.backends.dtensor import ensure_cpu_devices
assert ensure_cpu_devices(8) == 8
import numpy as np
import keras
import tensorforge
from tensorforge import sharding as ts
from tensorforge.backends.dtensor import DTensorProgram
from tensorforge.tools.convert import optimize

rng = np.random.default_rng(1)
inp = keras.Input((32,), name="x")
h = keras.layers.Dense(64, activation="relu", name="fc1")(inp)
mlp = keras.Model(inp, keras.layers.Dense(32, name="fc2")(h), name="mlp")
mlp.set_weights([rng.standard_normal(w.shape).astype(np.float32) * 0.3
                 for w in mlp.get_weights()])
# The TF backend lists one CPU device to Keras: name the 8 logical ones for the mesh.
kmesh = keras.distribution.DeviceMesh((2, 4), ["batch", "model"],
                                      devices=[f"cpu:{i}" for i in range(8)])
user = keras.distribution.LayoutMap(kmesh)
user["fc1/kernel"] = (None, "model")
user["fc1/bias"] = ("model",)
user["fc2/kernel"] = ("model", None)
mod = optimize(tensorforge.from_keras(mlp), None)
lm = ts.from_keras_layout_map(user, mod, weights=mlp)
plan = ts.shard(mod, lm, batch=8)
x = rng.standard_normal((8, 32)).astype(np.float32)
prog = DTensorProgram(plan)
got = prog(x)[0]
want = tensorforge.run_graph(mod.main, [x])[0]
res = {"err": float(np.max(np.abs(got - want))),
       "keras_err": float(np.max(np.abs(want - np.asarray(mlp(x))))),
       "map": {k: str(lm[k]) for k in lm},
       "plan": [[c.kind, c.axis] for c in plan.collectives],
       "shards": {n: [list(s) for s in prog.shard_shapes(n)]
                  for n in ["fc1/kernel", "fc2/kernel"]}}

# A KerasHub Llama with a hand-written Megatron LayoutMap (query heads and the gate /
# intermediate columns split over "model", the output projections' rows): 2 all-reduces
# per layer.
import keras_hub
llama = keras_hub.models.LlamaBackbone(vocabulary_size=64, num_layers=2, num_query_heads=4,
                                       hidden_dim=16, intermediate_dim=32,
                                       num_key_value_heads=2)
llama.set_weights([rng.standard_normal(w.shape).astype(np.float32) * 0.3
                   for w in llama.get_weights()])
module = optimize(tensorforge.from_keras(
    llama, input_shapes={"token_ids": (4, 8), "padding_mask": (4, 8)}), None)
user = keras.distribution.LayoutMap(kmesh)
user[".*self_attention/query/kernel"] = (None, "model", None)
user[".*self_attention/attention_output/kernel"] = ("model", None, None)
user[".*feedforward_(gate|intermediate)_dense/kernel"] = (None, "model")
user[".*feedforward_output_dense/kernel"] = ("model", None)
tokens = rng.integers(0, 64, (4, 8)).astype(np.int32)
mask = np.ones((4, 8), np.int32)
want = tensorforge.run_graph(module.main, [tokens, mask])[0]
# ... and with the backbone's own get_layout_map: weights split over both axes, so the plan
# all-gathers operands whose contraction dims are sharded differently (DTensor's expander
# refuses such a matmul unless the program relayouts them as planned).
for key, kmap in (("llama", user),
                  ("llama_own", keras_hub.models.LlamaBackbone.get_layout_map(kmesh))):
    lm = ts.from_keras_layout_map(kmap, module, weights=llama)
    plan = ts.shard(module, lm, batch=4)
    got = DTensorProgram(plan)(tokens, mask)[0]
    kinds = {}
    for c in plan.collectives:
        kinds[f"{c.kind}/{c.axis}"] = kinds.get(f"{c.kind}/{c.axis}", 0) + 1
    res[key] = {"err": float(np.max(np.abs(got - want))), "plan": kinds,
                "keras_err": float(np.max(np.abs(want - np.asarray(
                    llama({"token_ids": tokens, "padding_mask": mask})))))}
print(json.dumps(res))
'''


def _run(script: str, **env) -> dict:
    full = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "", **env}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=full, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def jax_run():
    return _run(JAX_SCRIPT, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu",
                XLA_FLAGS="--xla_force_host_platform_device_count=8")


def test_llama_get_layout_map_imports_and_runs_sharded(jax_run):
    res = jax_run["llama"]
    assert jax_run["backend"] == "jax" and jax_run["devices"] == 8
    assert res["mesh"] == {"batch": 2, "model": 4}
    assert res["inputs"] == {"token_ids": "batch,_", "padding_mask": "batch,_"}
    m = res["map"]
    # Keras (model, batch) on the [64,16] table; the [16,4,4] query kernel (model, batch,
    # None) is [16,16] in the module: its heads dim merges with the head dim and keeps batch.
    assert m["^token_embedding/embeddings$"] == "model,batch"
    assert m["^transformer_layer_0/self_attention/query/kernel$"] == "model,batch"
    assert m["^transformer_layer_1/self_attention/value/kernel$"] == "model,batch"
    assert m["^transformer_layer_0/self_attention/attention_output/kernel$"] == "model,batch"
    assert m["^transformer_layer_1/feedforward_gate_dense/kernel$"] == "batch,model"
    assert m["^transformer_layer_1/feedforward_output_dense/kernel$"] == "model,batch"
    assert len(m) == 1 + 2 * 7
    assert res["err"] <= 1e-5 and res["keras_rel"] <= 1e-5, res
    # Weights split over both axes (Gemma's FSDP-like layout): the plan's collectives and
    # XLA's are reported; both gather and reduce on both axes.
    assert sum(res["plan"].values()) > 0 and res["xla"]["all-reduce"][0] > 0
    assert set(res["plan"]) >= {"all_reduce/model", "all_reduce/batch", "all_gather/batch"}


def test_user_layout_map_on_llama(jax_run):
    res = jax_run["llama_user"]
    assert res["err"] <= 1e-5, res
    # The row-parallel MLP output is all-reduced in each layer; the query heads split over
    # "model" meet replicated key/value heads (2 of them cannot split 4 ways), which this
    # module's einsum form resolves by gathering the heads (DTensor's lift of the same map
    # all-reduces the attention output instead). XLA's program has the all-reduces.
    assert res["plan"]["all_reduce/model"] >= 2
    assert res["xla"]["all-reduce"][0] >= res["plan"]["all_reduce/model"]


def test_user_layout_map_on_a_keras_mlp(jax_run):
    res = jax_run["mlp"]
    assert res["map"] == {"^fc1/kernel$": "_,model", "^fc1/bias$": "model",
                          "^fc2/kernel$": "model,_"}
    assert res["err"] <= 1e-5, res
    # Megatron MLP: one all-reduce of the row-parallel result, and XLA compiles exactly it.
    assert res["plan"] == {"all_reduce/model": 1}
    assert res["xla"]["all-reduce"][0] == 1
    # of one batch shard's [4, 32] f32 result; the plan counts ring traffic, 2(n-1)/n of it
    assert res["xla"]["all-reduce"][1] == 4 * 32 * 4 and res["plan_bytes"] == 2 * 3 / 4 * 512
    for kind in ("all-gather", "all-to-all"):
        assert res["xla"].get(kind, [0, 0])[0] == 0


def test_bad_layout_maps_list_every_problem(jax_run):
    text = jax_run["errors"]
    assert "'fc1/kernal' matches no weight" in text and "nearest: fc1/kernel" in text
    assert "on fc1/bias [64]: layout ('batch', None) has 2 dims but the weight has rank 1" \
        in text
    assert "on fc2/kernel [64, 32]: dim 0 of size 64 does not divide mesh axis 'model' of " \
           "size 3" in text
    assert "(3 problems)" in text
    assert "token_embedding/reverse_embeddings" in jax_run["unused"]
    assert "unused by the traced call" in jax_run["unused"]


def test_opt_export_puts_layouts_on_the_weights_and_loads_in_model_parallel(jax_run):
    entries = jax_run["opt_entries"]
    # The imported [16,4,4] kernels come back in Keras' own shapes and axes.
    assert entries["transformer_layer_0/self_attention/query/kernel"] == [None, "model", None]
    assert entries["transformer_layer_1/self_attention/attention_output/kernel"] == \
        ["model", None, None]
    assert entries["transformer_layer_0/feedforward_intermediate_dense/kernel"] == \
        [None, "model"]
    assert all(p.endswith(("/kernel", "/embeddings", "/bias")) for p in entries)
    assert jax_run["opt_run"]["err"] <= 1e-5
    shards = jax_run["opt_shards"]
    assert shards["transformer_layer_0/self_attention/query/kernel"] == [16, 1, 4]
    assert shards["transformer_layer_0/feedforward_output_dense/kernel"] == [8, 16]
    assert jax_run["opt_keras_rel"] <= 1e-5


def test_dtensor_runs_an_imported_mlp_map():
    res = _run(TF_SCRIPT, KERAS_BACKEND="tensorflow")
    assert res["map"] == {"^fc1/kernel$": "_,model", "^fc1/bias$": "model",
                          "^fc2/kernel$": "model,_"}
    assert res["err"] <= 1e-5 and res["keras_err"] <= 1e-5, res
    assert res["plan"] == [["all_reduce", "model"]]
    assert res["shards"]["fc1/kernel"] == [[32, 16]] * 8
    assert res["shards"]["fc2/kernel"] == [[16, 32]] * 8
    # Llama on DTensor from a user-written map: equal to the unsharded IR and to Keras, with
    # a Megatron layer's 2 all-reduces per layer (the batch gathers bring the batch-sharded
    # activations to the replicated key/value heads).
    llama = res["llama"]
    assert llama["err"] <= 1e-5 and llama["keras_err"] <= 1e-5, llama
    assert llama["plan"]["all_reduce/model"] == 2 * 2
    own = res["llama_own"]
    assert own["err"] <= 1e-5, own
    assert own["plan"]["all_gather/batch"] > 0 and own["plan"]["all_reduce/batch"] > 0
