"""The SPMD partitioner: the local program of a sharding plan, run device by device with
ir.spmd.run_spmd, must reproduce the unsharded interpreter and contain exactly the
collectives the plan lists."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

import tensorforge
from tensorforge.ir.graph import Graph, Module
from tensorforge.ir.types import DType, TensorType
from tensorforge.passes.shard import Layout, LayoutMap, Mesh, create_layout_map, shard
from tensorforge.passes.shard.partition import (count_collectives, partition,
                                                run_partitioned)

F32 = DType.f32
MESH = Mesh({"batch": 2, "model": 4})


def _close(got, want, rtol=1e-5):
    scale = max(float(np.max(np.abs(want))), 1e-30)
    err = float(np.max(np.abs(got.astype(np.float64) - want.astype(np.float64))))
    assert err <= rtol * scale, f"max |diff| {err:.3g} vs max |value| {scale:.3g}"


def _plan_counts(plan):
    return dict(Counter((c.kind, c.axis) for c in plan.collectives))


def _megatron_mlp(fused_bias=False):
    """x[batch,8,16] -> column-parallel fc1 (+bias, gelu) -> row-parallel fc2 (+bias) ->
    softmax; plus a reduce_mean over the hidden dim of the partial result's input."""
    g = Graph()
    x = g.add_input(TensorType(F32, ("batch", 8, 16)), "x")
    rng = np.random.default_rng(0)
    w1 = g.constant(rng.standard_normal((16, 32)).astype(np.float32), "fc1/kernel", scope="fc1")
    b1 = g.constant(rng.standard_normal(32).astype(np.float32), scope="fc1")
    h = g.add("matmul", [x, w1], scope="fc1").output
    h = g.add("add", [h, b1], scope="fc1").output
    h = g.add("gelu", [h], scope="fc1").output
    m = g.add("reduce_mean", [h], {"axes": [-1], "keepdims": True}, scope="stat").output
    w2 = g.constant(rng.standard_normal((32, 16)).astype(np.float32), "fc2/kernel", scope="fc2")
    b2 = g.constant(rng.standard_normal(16).astype(np.float32), "fc2/bias", scope="fc2")
    if fused_bias:
        y = g.add("matmul", [h, w2, b2], {"activation": "relu"}, scope="fc2").output
    else:
        y = g.add("matmul", [h, w2], scope="fc2").output
        y = g.add("add", [y, b2], scope="fc2").output
    y = g.add("sub", [y, m], scope="fc2").output
    y = g.add("softmax", [y], scope="out").output
    g.set_outputs([y, m])
    lm = LayoutMap(MESH)
    lm["fc1/kernel"] = Layout((None, "model"))
    lm["fc1/rhs"] = Layout(("model",))
    lm["fc2/kernel"] = Layout(("model", None))
    return Module([g]), lm


@pytest.mark.parametrize("fused_bias", [False, True])
def test_megatron_mlp_matches_the_unsharded_interpreter(fused_bias):
    module, lm = _megatron_mlp(fused_bias)
    plan = shard(module, lm, inputs={"x": ("batch", None, None)}, batch=4)
    local, info = partition(plan)
    g = local.main
    # local shapes: the batch stays symbolic, the model-split dims are divided
    assert str(g.inputs[0].type) == "f32[batch,8,16]"
    params = [li for li in info.inputs if li.kind == "constant"]
    assert [str(g.inputs[info.inputs.index(li)].type) for li in params] == \
        ["f32[16,8]", "f32[8]", "f32[8,16]"]
    assert count_collectives(g) == _plan_counts(plan) == {("all_reduce", "model"): 2}
    x = np.random.default_rng(1).standard_normal((4, 8, 16)).astype(np.float32)
    want = tensorforge.run_graph(module.main, [x])
    got = run_partitioned(plan, [x], (local, info))
    assert len(got) == 2
    for a, b in zip(got, want):
        assert a.shape == b.shape
        _close(a, b)


def test_gathers_and_local_slices_follow_the_plan():
    # fc2's kernel split on its output dim: the softmax needs the whole row (all_gather);
    # a replicated operand added to a model-split value is sliced locally (no collective)
    g = Graph()
    x = g.add_input(TensorType(F32, (4, 8)), "x")
    w = g.constant(np.arange(64, dtype=np.float32).reshape(8, 8) / 64, "fc2/kernel")
    r = g.constant(np.linspace(-1, 1, 8, dtype=np.float32), "res")
    y = g.add("matmul", [x, w]).output
    y = g.add("add", [y, r]).output
    y = g.add("reshape", [y], {"shape": [4, 2, 4]}).output
    g.set_outputs([g.add("softmax", [y]).output])
    lm = LayoutMap(MESH)
    lm["fc2/kernel"] = Layout((None, "model"))
    module = Module([g])
    plan = shard(module, lm, inputs={"x": ("batch", None)})
    local, info = partition(plan)
    assert count_collectives(local.main) == _plan_counts(plan)
    assert ("all_gather", "model") in _plan_counts(plan)
    xv = np.random.default_rng(2).standard_normal((4, 8)).astype(np.float32)
    (got,) = run_partitioned(plan, {"x": xv}, (local, info))
    _close(got, tensorforge.run_graph(module.main, [xv])[0])


def test_vocab_parallel_embedding_masks_out_of_range_ids():
    g = Graph()
    ids = g.add_input(TensorType(DType.i32, ("batch", 6)), "ids")
    table = g.constant(np.random.default_rng(3).standard_normal((16, 4)).astype(np.float32),
                       "emb/table", scope="emb")
    g.set_outputs([g.add("gather", [table, ids], scope="emb").output])
    lm = LayoutMap(MESH)
    lm["emb/table"] = Layout(("model", None))
    module = Module([g])
    plan = shard(module, lm, inputs={"ids": ("batch", None)})
    local, info = partition(plan)
    assert [li.kind for li in info.inputs] == ["input", "constant", "coord"]
    assert count_collectives(local.main) == {("all_reduce", "model"): 1}
    idv = np.array([[0, 3, 4, 15, 8, 7], [12, 1, 1, 9, 0, 5]], np.int32)
    (got,) = run_partitioned(plan, [idv], (local, info))
    np.testing.assert_array_equal(got, tensorforge.run_graph(module.main, [idv])[0])


@pytest.fixture(scope="module")
def encoder():
    from tensorforge.tools.bench.models import transformer_encoder

    return tensorforge.from_keras(transformer_encoder(2, 64, 4, seq_len=8, vocab=64))


@pytest.mark.parametrize("optimized", [False, True])
def test_megatron_encoder_matches_the_unsharded_interpreter(encoder, optimized):
    from tensorforge.tools.convert import optimize

    module = optimize(encoder.clone(), None) if optimized else encoder
    lm = create_layout_map(module, MESH, style="megatron")     # vocab-parallel embedding
    plan = shard(module, lm, batch=4)
    local, info = partition(plan)
    counts = count_collectives(local.main)
    assert counts == _plan_counts(plan)
    assert counts[("all_reduce", "model")] == 5                 # 2 per layer + embedding
    # the [b,s,64] -> [b,s,heads,dh] reshapes now split a 16-wide local hidden dim
    reshapes = {n.attrs["shape"] for n in local.main if n.op == "reshape"}
    assert (-1, 8, 1, 16) in reshapes and (-1, 8, 16) in reshapes
    _check_encoder(module, plan, local, info)


def _check_encoder(module, plan, local, info):
    rng = np.random.default_rng(4)
    tokens = rng.integers(-64, 64, size=(4, 8)).astype(np.int32)   # negative ids wrap
    want = tensorforge.run_graph(module.main, [tokens])
    got = run_partitioned(plan, [tokens], (local, info))
    for a, b in zip(got, want):
        assert a.shape == b.shape
        _close(a, b)


def test_unsupported_fused_activation_after_a_partial_matmul_is_reported():
    from tensorforge.passes.shard import ShardingError

    g = Graph()
    x = g.add_input(TensorType(F32, (2, 8)), "x")
    w = g.constant(np.ones((8, 4), np.float32), "fc/kernel", scope="fc")
    g.set_outputs([g.add("matmul", [x, w], {"activation": "relu_n1_to_1"}, scope="fc").output])
    lm = LayoutMap(MESH)
    lm["fc/kernel"] = Layout(("model", None))
    plan = shard(Module([g]), lm, inputs={"x": (None, "model")})
    with pytest.raises(ShardingError) as e:
        partition(plan)
    assert "fused activation 'relu_n1_to_1' after a partial matmul" in str(e.value)


def test_hidden_split_encoder_reduces_layer_norm_statistics(encoder):
    from tensorforge.tools.convert import optimize

    # the residual stream stays hidden-split: layer-norm means are partial (all_reduce mean)
    # and every layer gathers its input before the column-parallel projections
    module = optimize(encoder.clone(), None)
    plan = shard(module, create_layout_map(module, MESH, embedding="hidden"), batch=4)
    local, info = partition(plan)
    counts = count_collectives(local.main)
    assert counts == _plan_counts(plan) and ("all_gather", "model") in counts
    means = [n for n in local.main if n.op == "all_reduce" and n.attrs["reduce"] == "mean"]
    assert means and all("_ln" in n.scope for n in means)
    _check_encoder(module, plan, local, info)
