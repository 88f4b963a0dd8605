"""TF DTensor execution and Keras LayoutMap export of layout-annotated IR (Megatron-style
column/row-parallel layouts set by hand), each checked against the unsharded interpreter /
Keras model. Simulated devices must be configured before TF / JAX initialise, so the runs
happen in subprocesses: one TF process (DTensor on 8 logical CPUs, and the lifted encoder's
layout entries + weights written for the second), one Keras-on-JAX process (8 host devices)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tensorforge.backends.keras_layout_map import keras_layout_entries
from tensorforge.ir.errors import ConversionError
from tensorforge.ir.graph import Graph, Module
from tensorforge.ir.types import DType, Layout, TensorType

MESH = {"batch": 2, "model": 4}

TF_SCRIPT = r'''
import json, os, sys
os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
from tensorforge.backends.dtensor import DTensorProgram, ensure_cpu_devices
assert ensure_cpu_devices(8) == 8
import numpy as np
import tensorforge
from tensorforge.ir.graph import Graph, Module
from tensorforge.ir.types import DType, Layout, TensorType

rng = np.random.default_rng(0)
res = {}

def rel(a, b):
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))

# Megatron MLP: column-parallel W1, row-parallel W2.
g = Graph()
x = g.add_input(TensorType(DType.f32, (4, 64)), "x")
x.layout = Layout(("batch", None))
w1 = g.constant(rng.standard_normal((64, 256)).astype(np.float32) * 0.1, "mlp/w1")
w1.layout = Layout((None, "model"))
w2 = g.constant(rng.standard_normal((256, 64)).astype(np.float32) * 0.1, "mlp/w2")
w2.layout = Layout(("model", None))
h = g.add("matmul", [x, w1], scope="mlp/fc1").output
h.layout = Layout(("batch", "model"))
h = g.add("gelu", [h], scope="mlp/fc1").output
y = g.add("matmul", [h, w2], scope="mlp/fc2", names=["y"]).output
g.set_outputs([y])
mod = Module([g])
xv = rng.standard_normal((4, 64)).astype(np.float32)
prog = DTensorProgram(mod, mesh={"batch": 2, "model": 4})
out = prog(xv)[0]
ref = tensorforge.run_graph(g, [xv])[0]
res["mlp"] = {"rel": rel(out, ref), "shape": list(out.shape),
              "w1_shards": [list(s) for s in prog.shard_shapes("mlp/w1")],
              "w2_shards": [list(s) for s in prog.shard_shapes("mlp/w2")],
              "w1_layout": prog.variable("mlp/w1").layout.sharding_specs}

# Keras encoder layer, lifted and canonicalized, Megatron layouts set by hand.
from tensorforge.tools.bench.models import transformer_encoder
from tensorforge.tools.convert import optimize
from tensorforge.backends.common import constant_name as _const_name
model = transformer_encoder(1, 32, 2, seq_len=8, vocab=50)
model.set_weights([rng.standard_normal(w.shape).astype(np.float32) * 0.2
                   for w in model.get_weights()])
enc = optimize(tensorforge.from_keras(model), None)
COL, ROW = Layout((None, "model")), Layout(("model", None))
want = {"encoder_0_mha/query/b": COL, "encoder_0_mha/key/b": COL, "encoder_0_mha/value/b": COL,
        "encoder_0_ff1/kernel": COL, "encoder_0_ff1/bias": Layout(("model",)),
        "encoder_0_mha/attention_output/b": ROW, "encoder_0_ff2/kernel": ROW}
for node in enc.main:
    if node.op == "constant" and _const_name(node.outputs[0]) in want:
        node.outputs[0].layout = want.pop(_const_name(node.outputs[0]))
assert not want, want
enc.main.inputs[0].layout = Layout(("batch", None))
tokens = rng.integers(0, 50, (2, 8)).astype(np.int32)
prog = DTensorProgram(enc, mesh={"batch": 2, "model": 4})
out = prog(tokens)[0]
ref = tensorforge.run_graph(enc.main, [tokens])[0]
keras_ref = np.asarray(model(tokens))
res["encoder"] = {"rel": rel(out, ref), "rel_keras": rel(out, keras_ref),
                  "shards": {n: [list(s) for s in prog.shard_shapes(n)]
                             for n in ["encoder_0_mha/query/b", "encoder_0_ff2/kernel",
                                       "encoder_0_ff1/bias", "embed/embeddings"]}}

from tensorforge.backends.keras_layout_map import keras_layout_entries
entries = keras_layout_entries(enc, {"batch": 2, "model": 4}, weights=model)
out_dir = sys.argv[1]
np.savez(os.path.join(out_dir, "weights.npz"), *model.get_weights(), tokens=tokens)
with open(os.path.join(out_dir, "entries.json"), "w") as f:
    json.dump(entries, f)
with open(os.path.join(out_dir, "encoder.tfir"), "w") as f:
    f.write(tensorforge.print_module(enc))
try:
    prog(tokens[:1])          # batch 1 does not divide the "batch" axis
    res["bad_batch"] = "no error"
except tensorforge.ConversionError as err:
    res["bad_batch"] = str(err)
res["entries"] = entries
print(json.dumps(res))
'''

KERAS_SCRIPT = r'''
import json, os, sys
import numpy as np
import keras
import tensorforge
from tensorforge.backends.keras_layout_map import keras_layout_entries, to_keras_layout_map
from tensorforge.tools.bench.models import transformer_encoder

out_dir = sys.argv[1]
entries = json.load(open(os.path.join(out_dir, "entries.json")))
data = np.load(os.path.join(out_dir, "weights.npz"))
tokens = data["tokens"]
weights = [data[f"arr_{i}"] for i in range(len(data.files) - 1)]
ref_model = transformer_encoder(1, 32, 2, seq_len=8, vocab=50)
ref_model.set_weights(weights)
ref = np.asarray(ref_model(tokens))
# The annotated IR, lifted in the TF process, round-trips through the text format; the map
# is built here against the real Keras variable paths.
module = tensorforge.parse_module(open(os.path.join(out_dir, "encoder.tfir")).read())
mesh = {"batch": 2, "model": 4}
same = keras_layout_entries(module, mesh, weights=ref_model) == \
    {k: tuple(v) for k, v in entries.items()}
layout_map = to_keras_layout_map(module, mesh=mesh, weights=ref_model)
keras.distribution.set_distribution(
    keras.distribution.ModelParallel(layout_map=layout_map, batch_dim_name="batch"))
model = transformer_encoder(1, 32, 2, seq_len=8, vocab=50)
model.set_weights(weights)
out = np.asarray(model(tokens))
shards = {w.path: [list(w.value.shape), list(w.value.addressable_shards[0].data.shape),
                   len(w.value.sharding.device_set)] for w in model.weights}
print(json.dumps({"backend": keras.backend.backend(), "same": same,
                  "devices": len(keras.distribution.list_devices()),
                  "rel": float(np.max(np.abs(out - ref)) / np.max(np.abs(ref))),
                  "shards": shards}))
'''


def _run(script: str, arg: str, **env) -> dict:
    full = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **env}
    proc = subprocess.run([sys.executable, "-c", script, arg], capture_output=True, text=True,
                          env=full, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def tf_run(tmp_path_factory):
    """The DTensor results; also leaves entries.json and weights.npz in its directory."""
    d = tmp_path_factory.mktemp("dtensor")
    return d, _run(TF_SCRIPT, str(d), KERAS_BACKEND="tensorflow")


def test_dtensor_megatron_mlp(tf_run):
    res = tf_run[1]["mlp"]
    assert res["rel"] < 1e-5 and res["shape"] == [4, 64]
    assert res["w1_layout"] == ["unsharded", "model"]
    # Column-parallel W1 [64,256] and row-parallel W2 [256,64]: a quarter per device.
    assert res["w1_shards"] == [[64, 64]] * 8 and res["w2_shards"] == [[64, 64]] * 8


def test_dtensor_keras_encoder(tf_run):
    res = tf_run[1]["encoder"]
    assert res["rel"] < 1e-5 and res["rel_keras"] < 1e-5
    assert "dim 0 of size 1 does not divide mesh axis 'batch'" in tf_run[1]["bad_batch"]
    shards = res["shards"]
    assert shards["encoder_0_mha/query/b"] == [[32, 8]] * 8      # [32,32] column-parallel
    assert shards["encoder_0_ff2/kernel"] == [[32, 32]] * 8      # [128,32] row-parallel
    assert shards["encoder_0_ff1/bias"] == [[32]] * 8            # [128]
    assert shards["embed/embeddings"] == [[50, 32]] * 8          # unannotated: replicated


def test_keras_layout_entries_of_lifted_encoder(tf_run):
    # The MHA kernels are [32,32] in the IR but [32,2,16] / [2,16,32] in Keras: the model
    # axis lands on the per-head dim (2 heads do not divide 4 devices).
    assert tf_run[1]["entries"] == {
        "encoder_0_mha/query/kernel": [None, None, "model"],
        "encoder_0_mha/key/kernel": [None, None, "model"],
        "encoder_0_mha/value/kernel": [None, None, "model"],
        "encoder_0_mha/attention_output/kernel": [None, "model", None],
        "encoder_0_ff1/kernel": [None, "model"], "encoder_0_ff1/bias": ["model"],
        "encoder_0_ff2/kernel": ["model", None]}


def test_keras_model_parallel_on_jax(tf_run):
    d, _ = tf_run
    res = _run(KERAS_SCRIPT, str(d), KERAS_BACKEND="jax",
               XLA_FLAGS="--xla_force_host_platform_device_count=8")
    assert res["backend"] == "jax" and res["devices"] == 8 and res["same"]
    assert res["rel"] < 1e-5
    ndev = [v[2] for v in res["shards"].values()]
    shards = {k: v[1] for k, v in res["shards"].items()}
    assert shards["encoder_0_mha/query/kernel"] == [32, 2, 4]
    assert shards["encoder_0_mha/attention_output/kernel"] == [2, 4, 32]
    assert shards["encoder_0_ff1/kernel"] == [32, 32] and shards["encoder_0_ff2/kernel"] == [32, 32]
    assert shards["head/kernel"] == [32, 32] and set(ndev) == {8}


def _mlp(x_layout, w1_layout, w2_layout, w1_name="mlp/w1", hidden=30):
    g = Graph()
    x = g.add_input(TensorType(DType.f32, (6, 64)), "x")
    x.layout = x_layout
    w1 = g.constant(np.zeros((64, hidden), np.float32), w1_name)
    w1.layout = w1_layout
    w2 = g.constant(np.zeros((hidden, 64), np.float32), "mlp/w2")
    w2.layout = w2_layout
    h = g.add("matmul", [x, w1], scope="mlp/fc1").output
    g.set_outputs([g.add("matmul", [h, w2], scope="mlp/fc2").output])
    return Module([g])


def test_dtensor_reports_every_problem_at_once():
    from tensorforge.backends.dtensor import DTensorProgram

    mod = _mlp(Layout(("batch", None)), Layout((None, "tensor")), Layout(("model", None)))
    with pytest.raises(ConversionError) as err:
        DTensorProgram(mod, mesh={"batch": 4, "model": 4, "pipe": 64})
    text = str(err.value)
    assert "needs 1024 CPU devices" in text                   # mesh larger than devices
    assert "unknown mesh axis 'tensor'" in text
    assert "dim 0 of size 6 does not divide mesh axis 'batch' of size 4" in text
    assert "dim 0 of size 30 does not divide mesh axis 'model' of size 4" in text


def test_keras_entries_errors_and_translation():
    mod = _mlp(None, Layout((None, "model")), Layout(("model", "nope")), w1_name="gone/kernel")
    with pytest.raises(ConversionError) as err:
        keras_layout_entries(mod, MESH, weights={"mlp/w2": (30, 64)})
    text = str(err.value)
    assert "no Keras variable" in text and "gone/kernel" in text
    assert "unknown mesh axes ['nope']" in text
    # Without weights: paths are the IR names, shapes unchanged.
    mod = _mlp(None, Layout((None, "model")), None, w1_name="dense/kernel", hidden=32)
    assert keras_layout_entries(mod, MESH) == {"dense/kernel": (None, "model")}
    # A kernel Keras keeps as [64,2,16]: the axis moves to the divisible per-head dim.
    assert keras_layout_entries(mod, MESH, weights={"dense/kernel": (64, 2, 16)}) == \
        {"dense/kernel": (None, None, "model")}
    mod = _mlp(None, Layout((None, "model")), None, w1_name="dense/kernel", hidden=12)
    with pytest.raises(ConversionError, match=r"no variable dim among \[1, 2\]"):
        keras_layout_entries(mod, MESH, weights={"dense/kernel": (64, 6, 2)})


def test_megatron_plan_of_a_keras_encoder_maps_to_its_variables():
    """A whole Megatron plan of a lifted Keras encoder maps onto the model's own variables:
    every sharded constant finds its Keras variable; replicated constants (layer-norm
    epsilons, the scalars inside attention and gelu) are Keras' default and are left out."""
    import tensorforge
    from tensorforge import sharding as ts
    from tensorforge.tools.bench.models import transformer_encoder
    from tensorforge.tools.convert import optimize

    model = transformer_encoder(1, 64, 4, seq_len=16, vocab=100)
    module = optimize(tensorforge.from_keras(model), None)
    mesh = ts.Mesh(MESH)
    plan = ts.shard(module, ts.create_layout_map(module, mesh))
    entries = keras_layout_entries(plan.module, MESH, weights=model)
    assert entries == {
        "embed/embeddings": ("model", None),
        "encoder_0_mha/query/kernel": (None, "model", None),
        "encoder_0_mha/key/kernel": (None, "model", None),
        "encoder_0_mha/value/kernel": (None, "model", None),
        "encoder_0_mha/attention_output/kernel": ("model", None, None),
        "encoder_0_ff1/kernel": (None, "model"),
        "encoder_0_ff2/kernel": ("model", None),
    }


def test_old_spelling_that_repeated_the_mesh_is_refused():
    """DTensorProgram, run_dtensor and to_keras_layout_map take the plan (which carries its
    mesh); the old second positional mesh names the new spelling."""
    from tensorforge import sharding as ts
    from tensorforge.backends.dtensor import DTensorProgram, run_dtensor
    from tensorforge.backends.keras_layout_map import to_keras_layout_map

    mod = _mlp(None, Layout((None, "model")), Layout(("model", None)))
    with pytest.raises(ts.ShardingError, match=r"call DTensorProgram\(plan\)"):
        DTensorProgram(mod, MESH)
    with pytest.raises(ts.ShardingError, match=r"call run_dtensor\(plan, \[inputs"):
        run_dtensor(mod, MESH, [np.zeros((6, 64), np.float32)])
    with pytest.raises(ts.ShardingError, match=r"call to_keras_layout_map\(plan, weights"):
        to_keras_layout_map(mod, MESH)
    with pytest.raises(ts.ShardingError, match="carries no mesh"):
        to_keras_layout_map(mod)
