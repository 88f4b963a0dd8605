"""Sharded execution on JAX/XLA (backends/jax_sharding.py): layout-annotated modules run under
NamedSharding on an 8-device CPU mesh must equal the unsharded interpreter, compile to the
collectives Megatron tensor parallelism predicts, hold 1/n of the sharded weights per device,
and train (one optax SGD step) exactly like the unsharded program.

8 simulated devices need XLA_FLAGS before jax is imported, so the real checks run this file as
a script in a subprocess (`python test_jax_sharding.py mlp|encoder` prints one JSON line);
in-process tests cover the HLO reader and the error paths, which need no devices.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

RTOL = 1e-5
_N_DEVICES = 8


def _rel(got, want) -> float:
    """max |got - want| / max |want| (relative to the tensor's scale: per-element relative
    error is meaningless where a value crosses zero)."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, (got.shape, want.shape)
    return float(np.max(np.abs(got - want)) / max(float(np.max(np.abs(want))), 1e-12))


# -- models (shared by the script and the in-process tests) ------------------------------------

def _mlp_module(hidden=64, ff=256, seed=0):
    """Megatron MLP: x [b, h] batch-sharded, W1 [h, ff] column-parallel (None, model), relu,
    W2 [ff, h] row-parallel (model, None); only the weights and the input carry layouts."""
    from tensorforge.ir.graph import Graph, Module
    from tensorforge.ir.types import DType, Layout, TensorType

    rng = np.random.default_rng(seed)
    g = Graph()
    x = g.add_input(TensorType(DType.f32, ("b", hidden)), "x", layout=Layout(("batch", None)))
    w1 = g.constant((rng.standard_normal((hidden, ff)) / 8).astype(np.float32), "W1",
                    scope="mlp/fc1")
    w2 = g.constant((rng.standard_normal((ff, hidden)) / 16).astype(np.float32), "W2",
                    scope="mlp/fc2")
    w1.layout, w2.layout = Layout((None, "model")), Layout(("model", None))
    h = g.add("matmul", [x, w1], scope="mlp/fc1").outputs[0]
    h.layout = Layout(("batch", "model"))       # an annotated intermediate (constrained)
    r = g.add("relu", [h], scope="mlp/fc1").outputs[0]
    y = g.add("matmul", [r, w2], scope="mlp/fc2").outputs[0]
    y.layout = Layout(("batch", None))
    g.set_outputs([y])
    return Module([g])


_COLUMN = ("encoder_0_mha/query/b", "encoder_0_mha/key/b", "encoder_0_mha/value/b",
           "encoder_0_ff1/kernel")
_ROW = ("encoder_0_mha/attention_output/b", "encoder_0_ff2/kernel")


def _encoder_module():
    """One Keras encoder layer (d=32, 2 heads) lifted with from_keras, Megatron layouts by hand:
    Q/K/V/ff1 kernels column-parallel (and their biases split with them), attention output and
    ff2 kernels row-parallel."""
    import tensorforge
    from tensorforge.backends.jax_sharding import param_values
    from tensorforge.ir.types import Layout
    from tensorforge.tools.bench.models import transformer_encoder

    module = tensorforge.from_keras(transformer_encoder(1, 32, 2, seq_len=8, vocab=50))
    values = param_values(module)
    for k in _COLUMN:
        values[k].layout = Layout((None, "model"))
    for k in _ROW:
        values[k].layout = Layout(("model", None))
    for k in ("encoder_0_mha/query/bias", "encoder_0_mha/key/bias", "encoder_0_mha/value/bias"):
        values[k].layout = Layout(("model", None))     # [heads, head_dim]: split the heads
    values["encoder_0_ff1/bias"].layout = Layout(("model",))
    tokens = module.main.inputs[0]
    tokens.layout = Layout(("batch", None))
    module.main.outputs[0].layout = Layout(("batch", None, None))
    return module


# -- the subprocess side -----------------------------------------------------------------------

def _sgd_step(fn, lr=0.5):
    """One optax SGD step on loss = mean(output**2): (params, x) -> (loss, new params)."""
    import jax
    import jax.numpy as jnp
    import optax

    opt = optax.sgd(lr)

    def step(params, x):
        loss, grads = jax.value_and_grad(lambda p: jnp.mean(fn(p, x)[0] ** 2))(params)
        updates, _ = opt.update(grads, opt.init(params), params)
        return loss, optax.apply_updates(params, updates)
    return step


def _check(module, mesh_axes, x, sharded_keys):
    """Runs `module` sharded and unsharded (forward and one training step); returns the
    numbers the tests assert on."""
    import jax
    from jax.sharding import NamedSharding, PartitionSpec

    import tensorforge
    from tensorforge.backends.jax import to_jax
    from tensorforge.backends.jax_sharding import compile_sharded, count_collectives

    compiled = compile_sharded(module, example_inputs=[x], mesh=mesh_axes)
    got = compiled(x)
    want = tensorforge.run_graph(module.main, [x])
    fwd = count_collectives(compiled.hlo_text())
    out_spec = got[0].sharding.spec

    per_dev = compiled.per_device_param_bytes(sharded_keys)
    total = sum(int(compiled.params[k].nbytes) for k in sharded_keys)

    # Training step: unsharded (device 0) against the same step under the shardings.
    fn, params = to_jax(module)
    ref_loss, ref_new = jax.jit(_sgd_step(fn))(params, x)
    rep = NamedSharding(compiled.mesh, PartitionSpec())
    sharded_step = jax.jit(_sgd_step(compiled.fn),
                           in_shardings=(compiled.param_shardings, compiled.input_shardings[0]),
                           out_shardings=(rep, compiled.param_shardings))
    xs = compiled.place_inputs([x])[0]
    loss, new = sharded_step(compiled.params, xs)
    train = count_collectives(sharded_step.lower(compiled.params, xs).compile().as_text())
    return {
        "devices": jax.device_count(),
        "forward_rel": max(_rel(g, w) for g, w in zip(got, want)),
        "out_spec": [a for a in out_spec],
        "forward_collectives": fwd,
        "param_bytes_per_device": per_dev,
        "param_bytes_total": total,
        "loss": float(loss), "loss_rel": _rel(loss, ref_loss),
        # Over all params at once: a zero-initialised param whose exact gradient is zero (the
        # key bias: softmax ignores a per-row shift) holds only rounding noise, whose relative
        # error alone is meaningless.
        "params_rel": _rel(_flat(new, ref_new), _flat(ref_new, ref_new)),
        "update_rel": _rel(_flat(new, ref_new) - _flat(params, ref_new),
                           _flat(ref_new, ref_new) - _flat(params, ref_new)),
        "train_collectives": train,
    }


def _flat(tree: dict, like: dict) -> np.ndarray:
    """The params of `tree` in `like`'s key order, as one float64 vector."""
    return np.concatenate([np.asarray(tree[k], np.float64).ravel() for k in like])


def _script(part: str) -> dict:
    if part == "mlp":
        x = np.random.default_rng(1).standard_normal((4, 64)).astype(np.float32)
        return _check(_mlp_module(), {"batch": 2, "model": 4}, x, ["W1", "W2"])
    if part == "encoder":
        x = np.random.default_rng(2).integers(0, 50, (8, 8)).astype(np.int32)
        return _check(_encoder_module(), {"batch": 4, "model": 2}, x, list(_COLUMN + _ROW))
    raise SystemExit(f"unknown part {part!r}")


def _run(part: str) -> dict:
    """This file as a script in a subprocess that sees 8 CPU devices; its last stdout line."""
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={_N_DEVICES}",
               JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), part], env=env,
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def mlp():
    return _run("mlp")


@pytest.fixture(scope="module")
def encoder():
    return _run("encoder")


# -- Megatron MLP on a (batch=2, model=4) mesh -------------------------------------------------

def test_mlp_sharded_forward_matches_interpreter(mlp):
    assert mlp["devices"] == _N_DEVICES
    assert mlp["forward_rel"] < RTOL, mlp
    assert mlp["out_spec"] == ["batch", None]


def test_mlp_compiles_to_exactly_one_all_reduce_of_the_partial_sum(mlp):
    # W2 is row-parallel: each device holds a [b/2, h] partial sum over its quarter of ff, summed
    # by one all-reduce over "model" (per device: b/2 * h float32 = 2 * 64 * 4 bytes).
    b, h = 4, 64
    c = mlp["forward_collectives"]
    assert c["all-reduce"] == [1, (b // 2) * h * 4], c
    assert all(c[k][0] == 0 for k in ("all-gather", "reduce-scatter", "all-to-all")), c


def test_mlp_weights_take_a_quarter_per_device(mlp):
    per_dev = mlp["param_bytes_per_device"]
    assert len(per_dev) == _N_DEVICES
    assert max(per_dev.values()) <= 1.05 * mlp["param_bytes_total"] / 4, mlp


def test_mlp_sharded_sgd_step_matches_unsharded(mlp):
    assert mlp["loss_rel"] < RTOL and mlp["params_rel"] < RTOL, mlp
    assert mlp["update_rel"] < 1e-4, mlp
    # Gradients of the batch-sharded step are partial over "batch": XLA must all-reduce them
    # (on top of the forward's all-reduce over "model").
    c = mlp["train_collectives"]
    print("MLP training-step collectives:", c)
    assert c["all-reduce"][0] >= 2, c


# -- Keras encoder layer on a (batch=4, model=2) mesh ------------------------------------------

def test_encoder_sharded_forward_matches_interpreter(encoder):
    assert encoder["forward_rel"] < RTOL, encoder
    assert encoder["out_spec"] == ["batch", None, None]


def test_encoder_has_two_all_reduces_per_layer(encoder):
    # Narayanan et al.: one all-reduce after the row-parallel attention output, one after ff2,
    # each of the per-batch-shard activation [b/4, s, d] (2 * 8 * 32 float32).
    c = encoder["forward_collectives"]
    assert c["all-reduce"] == [2, 2 * (2 * 8 * 32 * 4)], c
    assert all(c[k][0] == 0 for k in ("all-gather", "reduce-scatter", "all-to-all")), c


def test_encoder_kernels_take_half_per_device(encoder):
    per_dev = encoder["param_bytes_per_device"]
    assert max(per_dev.values()) <= 1.05 * encoder["param_bytes_total"] / 2, encoder


def test_encoder_sharded_sgd_step_matches_unsharded(encoder):
    assert encoder["loss_rel"] < RTOL and encoder["params_rel"] < RTOL, encoder
    assert encoder["update_rel"] < 1e-4, encoder
    print("encoder training-step collectives:", encoder["train_collectives"])
    assert encoder["train_collectives"]["all-reduce"][0] >= 4, encoder


# -- in-process: the HLO reader and the errors (no devices needed) -----------------------------

_HLO = """
HloModule jit_fn, entry_computation_layout={(f32[64,64]{1,0})->f32[2,64]{1,0}}

%add (x: f32[], y: f32[]) -> f32[] {
  ROOT %add.1 = f32[] add(f32[] %x, f32[] %y)
}

ENTRY %main (p: f32[64,64]) -> f32[2,64] {
  %ar = f32[2,64]{1,0} all-reduce(f32[2,64]{1,0} %d), channel_id=1, replica_groups={{0,1}}, to_apply=%add
  %ar2 = (f32[16]{0}, bf16[4,4]{1,0}) all-reduce(f32[16]{0} %a, bf16[4,4]{1,0} %b), to_apply=%add
  %ags = (f32[2,64]{1,0}, f32[4,64]{1,0}) all-gather-start(f32[2,64]{1,0} %ar), dimensions={0}
  %agd = f32[4,64]{1,0} all-gather-done((f32[2,64]{1,0}, f32[4,64]{1,0}) %ags)
  %rs = f32[1,64]{1,0} reduce-scatter(f32[4,64]{1,0} %agd), dimensions={0}, to_apply=%add
  ROOT %a2a = s32[8]{0} all-to-all(s32[8]{0} %i), dimensions={0}
}
"""


def test_count_collectives_reads_result_bytes_per_device():
    from tensorforge.backends.jax_sharding import count_collectives

    c = count_collectives(_HLO)
    assert c["all-reduce"] == (2, 2 * 64 * 4 + 16 * 4 + 4 * 4 * 2)
    assert c["all-gather"] == (1, 4 * 64 * 4)       # async pair counted once, from -done
    assert c["reduce-scatter"] == (1, 64 * 4)
    assert c["all-to-all"] == (1, 8 * 4)
    assert c["collective-permute"] == (0, 0)


def test_layout_errors_are_listed_together_before_compiling():
    from tensorforge.backends.jax_sharding import compile_sharded
    from tensorforge.ir.errors import ConversionError
    from tensorforge.ir.types import Layout

    module = _mlp_module(hidden=64, ff=250)        # 250 does not divide over model=4
    g = module.main
    g.inputs[0].layout = Layout(("rows", None))    # unknown mesh axis
    relu = [n for n in g if n.op == "relu"][0]
    relu.outputs[0].layout = Layout(("batch",))    # wrong rank
    x = np.zeros((4, 64), np.float32)
    with pytest.raises(ConversionError) as err:
        # 1024 devices: more than any test machine has (and than this process sees).
        compile_sharded(module, example_inputs=[x], mesh={"batch": 256, "model": 4})
    text = str(err.value)
    assert "needs 1024 devices" in text
    assert "'rows'" in text and "not in the mesh" in text
    assert "has 1 dims" in text
    # The non-divisible dim is named with the tensor, dim and both sizes.
    assert "param 'W1': dim 1 of size 250 is not divisible by mesh axis 'model' of size 4" \
        in text
    assert "param 'W2': dim 0 of size 250" in text
    assert "dim 0 of size 4 is not divisible by mesh axis 'batch' of size 256" in text


def test_symbolic_input_needs_example_inputs_and_param_layouts_match_to_jax():
    from tensorforge.backends.jax import to_jax
    from tensorforge.backends.jax_sharding import compile_sharded, param_layouts
    from tensorforge.ir.errors import ConversionError
    from tensorforge.ir.types import Layout

    module = _mlp_module()
    layouts = param_layouts(module)
    assert set(layouts) == set(to_jax(module)[1]) == {"W1", "W2"}
    assert layouts["W1"] == Layout((None, "model"))
    with pytest.raises(ConversionError, match="symbolic shape"):
        compile_sharded(module, mesh={"batch": 1, "model": 1})


def test_single_device_mesh_runs_in_process():
    import tensorforge
    from tensorforge.backends.jax_sharding import compile_sharded, count_collectives

    module = _mlp_module()
    x = np.random.default_rng(3).standard_normal((4, 64)).astype(np.float32)
    compiled = compile_sharded(module, example_inputs=[x], mesh={"batch": 1, "model": 1})
    assert _rel(compiled(x)[0], tensorforge.run_graph(module.main, [x])[0]) < RTOL
    assert count_collectives(compiled.hlo_text())["all-reduce"][0] == 0



def test_the_plan_carries_its_mesh():
    """compile_sharded / run_sharded take the plan alone (its mesh is the plan's); a module
    annotated by the shard-propagate pass carries its mesh in metadata; the old spelling that
    repeated the mesh is refused with the new one in the message."""
    import tensorforge
    from tensorforge import sharding as ts
    from tensorforge.backends.jax_sharding import compile_sharded, run_sharded
    from tensorforge.passes import PassManager

    module = _mlp_module()
    for v in [*module.main.inputs, *(o for n in module.main for o in n.outputs)]:
        v.layout = None
    mesh = ts.Mesh({"batch": 1, "model": 1})
    plan = ts.shard(module, ts.create_layout_map(module, mesh))
    x = np.random.default_rng(5).standard_normal((4, 64)).astype(np.float32)
    want = tensorforge.run_graph(module.main, [x])[0]
    assert compile_sharded(plan, example_inputs=[x]).mesh.shape == {"batch": 1, "model": 1}
    (got,) = run_sharded(plan, [x])
    assert isinstance(got, np.ndarray) and _rel(got, want) < RTOL

    annotated = module.clone()
    PassManager.parse('shard-propagate{mesh="batch=1,model=1"}').run(annotated)
    assert annotated.metadata["mesh"] == "batch=1,model=1"
    assert _rel(run_sharded(annotated, [x])[0], want) < RTOL

    with pytest.raises(ts.ShardingError, match=r"compile_sharded\(plan, example_inputs"):
        compile_sharded(plan.module, {"batch": 1, "model": 1}, example_inputs=[x])
    with pytest.raises(ts.ShardingError, match="carries no mesh"):
        compile_sharded(module, example_inputs=[x])
    with pytest.raises(ts.ShardingError, match="differs from the plan"):
        compile_sharded(plan, example_inputs=[x], mesh={"batch": 1})
    with pytest.raises(ts.ShardingError, match="no longer takes mesh_axes="):
        compile_sharded(plan.module, mesh_axes={"batch": 1, "model": 1}, example_inputs=[x])
    with pytest.raises(ts.ShardingError, match=r"call run_sharded\(plan, \[inputs"):
        run_sharded(plan.module, {"batch": 1, "model": 1}, [x])
    # NumPy integer sizes are sizes too
    (got,) = run_sharded(plan.module, [x], mesh={"batch": np.int64(1), "model": np.int32(1)})
    assert _rel(got, want) < RTOL

if __name__ == "__main__":
    print(json.dumps(_script(sys.argv[1])))
