"""Plan -> execution end to end: the Megatron plan of a 2-layer Keras encoder and of a
2-layer Flax encoder on mesh {batch: 2, model: 4}, executed with jax.jit + NamedSharding on 8
simulated devices and with TF DTensor on 8 logical CPU devices, equals the unsharded IR
interpreter; XLA compiles exactly the all-reduces the plan predicts (2 per layer of b*s*h
elements, Narayanan et al.); each device holds a quarter of the sharded weights; one sharded
optax training step equals the unsharded one.

8 simulated devices need XLA_FLAGS before jax is imported: the checks run this file as a
script in a subprocess that prints one JSON line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

LAYERS, D, HEADS, SEQ, VOCAB, BATCH = 2, 64, 4, 8, 64, 4


def _flax_measure() -> dict:
    """The Flax encoder: plan, JAX and DTensor outputs, XLA all-reduces."""
    import jax

    import tensorforge
    from tensorforge import sharding as ts
    from tensorforge.backends.dtensor import run_dtensor
    from tensorforge.backends.jax_sharding import compile_sharded, count_collectives
    from tensorforge.tools.bench.models import flax_encoder
    from tensorforge.tools.convert import optimize

    apply, variables, _ = flax_encoder(layers=LAYERS, d=D, heads=HEADS, seq_len=SEQ)
    spec = jax.ShapeDtypeStruct(jax.export.symbolic_shape(f"b, {SEQ}, {D}"), jax.numpy.float32)
    module = optimize(tensorforge.from_jax(apply, [spec], params=variables), None)
    mesh = ts.Mesh({"batch": 2, "model": 4})
    plan = ts.shard(module, ts.create_layout_map(module, mesh), batch=BATCH)
    x = np.random.default_rng(3).standard_normal((BATCH, SEQ, D)).astype(np.float32)
    (want,) = tensorforge.run_graph(module.main, [x])
    program = compile_sharded(plan, example_inputs=[x])
    (got,) = program(x)
    (dt,) = run_dtensor(plan, [x])
    rel = lambda a: float(np.max(np.abs(np.asarray(a) - want)) / np.max(np.abs(want)))  # noqa
    return {"flax_jax_rel": rel(got), "flax_dtensor_rel": rel(dt),
            "flax_plan": [[c.kind, c.axis] for c in plan.collectives],
            "flax_xla": {k: list(v) for k, v in count_collectives(program.hlo_text()).items()}}


def _measure() -> dict:
    from tensorforge.backends.dtensor import ensure_cpu_devices

    ensure_cpu_devices(8)   # before TensorFlow initialises its devices
    import tensorforge
    from tensorforge.backends.dtensor import run_dtensor
    from tensorforge import sharding as ts
    from tensorforge.backends.jax_sharding import compile_sharded, count_collectives
    from tensorforge.tools.bench.models import transformer_encoder
    from tensorforge.tools.convert import optimize

    module = optimize(tensorforge.from_keras(
        transformer_encoder(LAYERS, D, HEADS, seq_len=SEQ, vocab=VOCAB)), None)
    mesh = ts.Mesh({"batch": 2, "model": 4})
    plan = ts.shard(module, ts.create_layout_map(module, mesh, embedding="none"), batch=BATCH)
    tokens = np.random.default_rng(0).integers(0, VOCAB, (BATCH, SEQ)).astype(np.int32)
    program = compile_sharded(plan, example_inputs=[tokens])
    (got,) = program(tokens)
    (want,) = tensorforge.run_graph(module.main, [tokens])
    (dt,) = run_dtensor(plan, [tokens])
    counts = count_collectives(program.hlo_text())
    sharded = [v for v, _ in plan.parameters() if v.layout is not None
               and any(a is not None for a in v.layout.axes)]
    total = sum(np.asarray(v.const).nbytes for v in sharded)
    per_device = program.per_device_param_bytes()
    predicted = [c for c in plan.collectives]
    train = _train_step(module, program, tokens)
    return {
        **train,
        **_flax_measure(),
        "dtensor_rel": float(np.max(np.abs(np.asarray(dt) - want)) / np.max(np.abs(want))),
        "plan_train": [[c.kind, c.axis] for c in plan.training_collectives()],
        "rel_err": float(np.max(np.abs(np.asarray(got) - want)) / np.max(np.abs(want))),
        "xla": {k: list(v) for k, v in counts.items()},
        "plan": [[c.kind, c.axis, c.scope] for c in predicted],
        "plan_tensor_bytes": [plan.bytes_per_device(c.value) for c in predicted],
        "plan_elements": [float(np.prod([BATCH // 2, SEQ, D]))] * len(predicted),
        "sharded_total": total,
        "per_device_max": max(per_device.values()),
        "replicated_params": sum(np.asarray(v.const).nbytes for v, _ in plan.parameters())
        - total,
    }


def _train_step(module, program, tokens) -> dict:
    """One optax SGD step (loss = mean(output^2)) unsharded and under the plan's shardings."""
    import jax
    import jax.numpy as jnp
    import optax
    from jax.sharding import NamedSharding, PartitionSpec

    from tensorforge.backends.jax import to_jax
    from tensorforge.backends.jax_sharding import count_collectives

    opt = optax.sgd(0.1)

    def make_step(fn):
        def step(params, x):
            loss, grads = jax.value_and_grad(lambda p: jnp.mean(fn(p, x)[0] ** 2))(params)
            updates, _ = opt.update(grads, opt.init(params), params)
            return loss, optax.apply_updates(params, updates)
        return step

    fn, params = to_jax(module)
    ref_loss, ref_new = jax.jit(make_step(fn))(params, tokens)
    rep = NamedSharding(program.mesh, PartitionSpec())
    step = jax.jit(make_step(program.fn),
                   in_shardings=(program.param_shardings, program.input_shardings[0]),
                   out_shardings=(rep, program.param_shardings))
    x = program.place_inputs([tokens])[0]
    loss, new = step(program.params, x)
    flat = lambda t: np.concatenate([np.asarray(t[k], np.float64).ravel()  # noqa: E731
                                     for k in sorted(ref_new)])
    counts = count_collectives(step.lower(program.params, x).compile().as_text())
    return {"loss_rel": float(abs(loss - ref_loss) / abs(ref_loss)),
            "params_rel": float(np.max(np.abs(flat(new) - flat(ref_new)))
                                / np.max(np.abs(flat(ref_new)))),
            "xla_train": {k: list(v) for k, v in counts.items()}}


@pytest.fixture(scope="module")
def measured():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
               JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run([sys.executable, os.path.abspath(__file__)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_sharded_outputs_equal_the_interpreter(measured):
    assert measured["rel_err"] <= 1e-5
    assert measured["dtensor_rel"] <= 1e-5


def test_flax_encoder_plan_runs_on_jax_and_dtensor(measured):
    assert measured["flax_jax_rel"] <= 1e-5 and measured["flax_dtensor_rel"] <= 1e-5, measured
    assert measured["flax_plan"] == [["all_reduce", "model"]] * (2 * LAYERS)
    assert measured["flax_xla"]["all-reduce"][0] == 2 * LAYERS


def test_xla_compiles_the_collectives_the_plan_predicts(measured):
    plan = measured["plan"]
    assert [k for k, _, _ in plan] == ["all_reduce"] * (2 * LAYERS)
    assert all(axis == "model" for _, axis, _ in plan)
    count, nbytes = measured["xla"]["all-reduce"]
    assert count == 2 * LAYERS
    # each all-reduce carries one batch shard's activations: b/2 * s * h float32 elements,
    # exactly the per-device tensor bytes the plan predicts for its collectives
    assert nbytes == 2 * LAYERS * (BATCH // 2) * SEQ * D * 4
    assert nbytes == sum(measured["plan_tensor_bytes"])
    for kind in ("all-gather", "reduce-scatter", "all-to-all"):
        assert measured["xla"].get(kind, [0, 0])[0] == 0


def test_each_device_holds_a_quarter_of_the_sharded_weights(measured):
    quarter = measured["sharded_total"] / 4
    assert measured["per_device_max"] <= 1.05 * quarter + measured["replicated_params"]


if __name__ == "__main__":
    print(json.dumps(_measure()))


def test_sharded_training_step_matches_and_its_collectives_match_the_plan(measured):
    """One optax step through to_jax: loss and updated parameters equal the unsharded step;
    XLA's all-reduces per mesh axis equal the plan's training collectives (forward, Megatron's
    backward conjugates, one combined data-parallel gradient all-reduce)."""
    assert measured["loss_rel"] <= 1e-5 and measured["params_rel"] <= 1e-5, measured
    kinds = {k for k, _ in measured["plan_train"]}
    assert kinds == {"all_reduce"}
    predicted = len(measured["plan_train"])
    assert predicted == 2 * LAYERS + 2 * LAYERS + 1
    assert measured["xla_train"]["all-reduce"][0] == predicted, measured["xla_train"]
