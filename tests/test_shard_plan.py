"""The sharding planner (global view): Mesh, LayoutMap precedence and errors, propagation
rules on small graphs, and the Megatron plan of a Keras transformer encoder."""

from __future__ import annotations

import numpy as np
import pytest

from tensorforge.ir.errors import ConversionError
from tensorforge.ir.graph import Graph, Module
from tensorforge.ir.types import DType, TensorType
from tensorforge.passes.shard import (Layout, LayoutMap, Mesh, ShardingError, collective_bytes,
                                      create_layout_map, shard, tensor_name)

F32 = DType.f32
MESH = Mesh({"batch": 2, "model": 4})


def _mlp(hidden=16, ff=32, batch="batch"):
    """x[batch,8,hidden] @ w1 -> relu -> @ w2 -> softmax; w1/w2 named, biases unnamed."""
    g = Graph()
    x = g.add_input(TensorType(F32, (batch, 8, hidden)), "x")
    rng = np.random.default_rng(0)
    w1 = g.constant(rng.standard_normal((hidden, ff)).astype(np.float32), "fc1/kernel", scope="fc1")
    b1 = g.constant(np.zeros(ff, np.float32), scope="fc1")
    h = g.add("matmul", [x, w1], scope="fc1").output
    h = g.add("add", [h, b1], scope="fc1").output
    h = g.add("relu", [h], scope="fc1").output
    w2 = g.constant(rng.standard_normal((ff, hidden)).astype(np.float32), "fc2/kernel", scope="fc2")
    y = g.add("matmul", [h, w2], scope="fc2").output
    y = g.add("softmax", [y], scope="out").output
    g.set_outputs([y])
    return Module([g])


# -- mesh ------------------------------------------------------------------------------------

def test_mesh_validates_and_numbers_devices_row_major():
    assert MESH.size == 8 and MESH.shape == (2, 4) and MESH["model"] == 4
    assert MESH.coords(5) == {"batch": 1, "model": 1}
    assert MESH.device({"batch": 1, "model": 3}) == 7
    with pytest.raises(ShardingError) as e:
        Mesh({"batch": 0, "1bad": 2})
    assert len(e.value.diagnostics) == 2 and isinstance(e.value, ConversionError)
    assert collective_bytes("all_reduce", 4, 1000) == 1500
    assert collective_bytes("all_gather", 4, 1000) == 750
    assert collective_bytes("reduce_scatter", 4, 1000) == 750
    assert collective_bytes("all_gather", 1, 1000) == 0
    with pytest.raises(ShardingError):
        create_layout_map(Module([Graph()]), MESH, style="zero3")


# -- layout map ------------------------------------------------------------------------------

def test_tensor_names_use_scope_and_operand_role_for_unnamed_constants():
    m = _mlp()
    b1 = next(n.output for n in m.main if n.op == "constant" and n.output.name is None)
    assert tensor_name(b1) == "fc1/rhs"
    assert tensor_name(m.main.inputs[0]) == "x"


def test_layout_map_exact_key_beats_regex_and_no_match_is_replicated():
    lm = LayoutMap(MESH)
    lm[r"fc\d/kernel"] = Layout(("model", None))
    lm["fc1/kernel"] = Layout((None, "model"))
    assert lm.resolve("fc1/kernel") == Layout((None, "model"))
    assert lm.resolve("fc2/kernel") == Layout(("model", None))
    assert lm.resolve("fc3/bias") is None
    plan = shard(_mlp(), lm, inputs={"x": ("batch", None, None)})
    assert plan.layout_of("fc1/kernel") == Layout((None, "model"))
    assert plan.layout_of("fc2/kernel") == Layout(("model", None))
    assert plan.layout_of("fc1/rhs") == Layout((None,))


def test_two_regexes_on_one_tensor_is_an_error_naming_both():
    lm = LayoutMap(MESH)
    lm["fc1/.*"] = Layout((None, "model"))
    lm["kernel$"] = Layout((None, "model"))
    with pytest.raises(ShardingError) as e:
        shard(_mlp(), lm)
    msg = str(e.value)
    assert "fc1/kernel" in msg and "'fc1/.*'" in msg and "'kernel$'" in msg
    with pytest.raises(ShardingError):
        lm.resolve("fc1/kernel")


def test_every_problem_is_reported_at_once():
    lm = LayoutMap(MESH)
    lm["fc1/kernel"] = Layout(("model", "nope"))          # unknown axis
    lm["fc2/kernel"] = Layout(("model",))                 # rank 1 for a rank-2 tensor
    lm["fc1/rhs"] = Layout(("model",))                    # fine (32 / 4)
    m = _mlp(hidden=30)
    lm2 = LayoutMap(MESH)
    lm2["fc1/kernel"] = Layout((None, "model"))
    lm2["fc2/kernel"] = Layout((None, "model"))           # 30 not divisible by 4
    with pytest.raises(ShardingError) as e:
        shard(m, lm, inputs={"x": ("batch", None, "model"), "y": ("batch",)})
    msgs = [d.message for d in e.value.diagnostics]
    assert any("unknown mesh axis 'nope'" in s for s in msgs)
    assert any("rank 1 but the tensor is f32[32,30]" in s for s in msgs)
    assert any("no graph input named 'y'" in s for s in msgs)
    assert any(s == "input tensor 'x' dim 2 has size 30, not divisible by mesh axis 'model' of "
               "size 4" for s in msgs)
    assert len(msgs) == 4
    with pytest.raises(ShardingError) as e:
        shard(m, lm2)
    assert [d.message for d in e.value.diagnostics] == [
        "tensor 'fc2/kernel' dim 1 has size 30, not divisible by mesh axis 'model' of size 4"]


def test_invalid_regex_key_is_rejected():
    with pytest.raises(ShardingError):
        LayoutMap(MESH)["fc(1"] = Layout((None,))


# -- propagation rules ---------------------------------------------------------------------

def _kinds(plan):
    return [(c.kind, c.axis, c.scope) for c in plan.collectives]


def test_megatron_mlp_on_small_graph_and_clone_untouched():
    m = _mlp()
    lm = LayoutMap(MESH)
    lm["fc1/kernel"] = Layout((None, "model"))
    lm["fc1/rhs"] = Layout(("model",))
    lm["fc2/kernel"] = Layout(("model", None))
    plan = shard(m, lm, inputs={"x": ("batch", None, None)}, batch=4)
    assert _kinds(plan) == [("all_reduce", "model", "fc2")]
    c = plan.collectives[0]
    # per device: batch 4/2 * 8 * 16 f32 = 1024 B; ring all_reduce 2*(n-1)/n*S
    assert c.bytes_per_device == pytest.approx(2 * 3 / 4 * 1024)
    assert plan.partial_axes(c.value) == ("model",)
    relu = next(n for n in m.main if n.op == "relu")
    assert plan.layout_of(relu.output) == Layout(("batch", None, "model"))
    assert relu.output.layout is None                    # the input module is not modified
    assert all(v.layout is not None for n in plan.module.main for v in n.outputs)
    assert plan.parameter_bytes_per_device("fc") == pytest.approx((16 * 32 + 32 + 32 * 16) * 4 / 4)


def test_contraction_split_on_one_side_gathers_that_operand():
    lm = LayoutMap(MESH)
    lm["fc2/kernel"] = Layout(("model", None))
    plan = shard(_mlp(), lm, inputs={"x": ("batch", None, None)}, batch=2)
    (c,) = plan.collectives
    assert (c.kind, c.axis, c.dim, c.operand, c.scope) == ("all_gather", "model", 0, 1, "fc2")
    assert c.bytes_per_device == pytest.approx(3 / 4 * 32 * 16 * 4)
    node = c.node
    assert plan.operand_layout(node, 1) == Layout((None, None))


def test_softmax_over_a_sharded_last_dim_gathers_first():
    lm = LayoutMap(MESH)
    lm["fc2/kernel"] = Layout((None, "model"))
    plan = shard(_mlp(), lm, batch=1)
    assert _kinds(plan) == [("all_gather", "model", "out")]
    out = plan.module.main.outputs[0]
    assert plan.layout_of(out) == Layout((None, None, None))


def _small(op_builder, shapes, layouts, **kw):
    g = Graph()
    ins = [g.add_input(TensorType(F32, s), f"in{i}") for i, s in enumerate(shapes)]
    outs = op_builder(g, ins)
    g.set_outputs(outs)
    return shard(Module([g]), LayoutMap(MESH), inputs={f"in{i}": l for i, l in
                                                       enumerate(layouts)}, **kw)


def test_reduction_over_a_sharded_dim_is_an_all_reduce():
    plan = _small(lambda g, i: [g.add("reduce_max", [i[0]], {"axes": [1]}).output],
                  [(4, 8)], [("batch", "model")])
    (c,) = plan.collectives
    assert (c.kind, c.axis, c.reduce_op) == ("all_reduce", "model", "max")
    assert plan.layout_of(plan.module.main.outputs[0]) == Layout(("batch",))


def test_elementwise_conflict_prefers_user_layout_and_gathers_the_other():
    def build(g, i):
        t = g.add("transpose", [i[1]], {"perm": [1, 0]}).output     # derived: (model, batch)
        return [g.add("add", [i[0], t]).output]
    plan = _small(build, [(8, 8), (8, 8)], [("batch", None), ("batch", "model")])
    out = plan.module.main.outputs[0]
    # the user-given input wins dim 0; the derived operand's 'model' on dim 0 is gathered,
    # and its 'batch' on dim 1 conflicts with dim 0's axis, so it is gathered too
    assert plan.layout_of(out) == Layout(("batch", None))
    assert sorted((c.kind, c.axis, c.dim) for c in plan.collectives) == [
        ("all_gather", "batch", 1), ("all_gather", "model", 0)]


def test_reshape_split_keeps_axis_on_leading_factor_or_gathers():
    def split(heads):
        return lambda g, i: [g.add("reshape", [i[0]], {"shape": [2, 8, heads, 32 // heads]}).output]

    plan = _small(split(4), [(2, 8, 32)], [(None, None, "model")])
    assert plan.layout_of(plan.module.main.outputs[0]) == Layout((None, None, "model", None))
    assert plan.collectives == []
    plan = _small(split(2), [(2, 8, 32)], [(None, None, "model")])
    assert _kinds(plan) == [("all_gather", "model", "")]
    merge = lambda g, i: [g.add("reshape", [i[0]], {"shape": [2, 8, 32]}).output]  # noqa: E731
    plan = _small(merge, [(2, 8, 4, 8)], [("batch", None, "model", None)])
    assert plan.layout_of(plan.module.main.outputs[0]) == Layout(("batch", None, "model"))
    plan = _small(merge, [(2, 8, 4, 8)], [(None, None, None, "model")])
    assert _kinds(plan) == [("all_gather", "model", "")]


def test_gather_vocab_sharded_is_partial_and_hidden_sharded_passes_through():
    def build(layout):
        g = Graph()
        ids = g.add_input(TensorType(DType.i32, ("batch", 8)), "ids")
        table = g.constant(np.zeros((64, 16), np.float32), "emb/table", scope="emb")
        g.set_outputs([g.add("gather", [table, ids], scope="emb").output])
        lm = LayoutMap(MESH)
        lm["emb/table"] = layout
        return shard(Module([g]), lm, inputs={"ids": ("batch", None)}, batch=2)
    plan = build(Layout(("model", None)))
    assert _kinds(plan) == [("all_reduce", "model", "emb")]
    assert plan.layout_of(plan.module.main.outputs[0]) == Layout(("batch", None, None))
    plan = build(Layout((None, "model")))
    assert plan.collectives == []
    assert plan.layout_of(plan.module.main.outputs[0]) == Layout(("batch", None, "model"))


def test_conv2d_keeps_batch_and_output_channels():
    def build(g, i):
        f = g.constant(np.zeros((3, 3, 4, 8), np.float32), "conv/filter", scope="conv")
        return [g.add("conv2d", [i[0], f], {"padding": "SAME"}, scope="conv").output]
    g = Graph()
    x = g.add_input(TensorType(F32, ("batch", 8, 8, 4)), "x")
    g.set_outputs(build(g, [x]))
    lm = LayoutMap(MESH)
    lm["conv/filter"] = Layout((None, None, None, "model"))
    plan = shard(Module([g]), lm, inputs={"x": ("batch", None, None, None)})
    assert plan.collectives == []
    assert plan.layout_of(plan.module.main.outputs[0]) == Layout(("batch", None, None, "model"))


def test_pooling_keeps_batch_and_channels_and_ops_without_a_rule_replicate():
    def pool(g, i):
        return [g.add("max_pool2d", [i[0]], {"ksize": [2, 2], "strides": [2, 2]}).output]

    plan = _small(pool, [(2, 8, 8, 4)], [("batch", "model", None, None)])
    assert _kinds(plan) == [("all_gather", "model", "")]
    assert plan.layout_of(plan.module.main.outputs[0]) == Layout(("batch", None, None, None))
    ss = lambda g, i: [g.add("strided_slice", [i[0]], {"begin": [0, 0], "end": [4, 4],  # noqa: E731
                                                       "strides": [1, 1]}).output]
    plan = _small(ss, [(4, 8)], [("batch", "model")])
    assert sorted(_kinds(plan)) == [("all_gather", "batch", ""), ("all_gather", "model", "")]
    assert "strided_slice has no sharding rule" in plan.collectives[0].reason
    assert plan.layout_of(plan.module.main.outputs[0]) == Layout((None, None))


# -- the Keras encoder under the Megatron map ------------------------------------------------

@pytest.fixture(scope="module")
def encoder():
    import tensorforge
    from tensorforge.tools.bench.models import transformer_encoder

    return tensorforge.from_keras(transformer_encoder(2, 64, 4, seq_len=8, vocab=64))


@pytest.mark.parametrize("optimized", [False, True])
def test_megatron_encoder_plan(encoder, optimized):
    from tensorforge.tools.convert import optimize

    module = optimize(encoder.clone(), None) if optimized else encoder
    lm = create_layout_map(module, MESH, style="megatron")
    assert lm.inputs == {"tokens": Layout(("batch", None))}
    assert lm.resolve("encoder_0_ff1/kernel") == Layout((None, "model"))
    assert lm.resolve("encoder_0_ff2/kernel") == Layout(("model", None))
    assert lm.resolve("encoder_1_mha/query/b") == Layout((None, "model"))
    assert lm.resolve("encoder_1_mha/attention_output/b") == Layout(("model", None))
    assert lm.resolve("embed/embeddings") == Layout(("model", None))      # vocab-parallel
    assert lm.resolve("head/kernel") is None
    if not optimized:
        assert lm.resolve("encoder_0_mha/query/bias") == Layout(("model", None))
        assert lm.resolve("encoder_0_ff1/bias") == Layout(("model",))
        assert lm.resolve("encoder_0_ff2/bias") is None

    b, s, h = 4, 8, 64
    plan = shard(module, lm, batch=b)
    s_dev = b // 2 * s * h * 4                       # batch-split activations, f32
    for layer in ("encoder_0", "encoder_1"):
        cs = plan.collectives_in(layer)
        assert [(c.kind, c.axis, c.scope) for c in cs] == [
            ("all_reduce", "model", f"{layer}_mha/attention_output"),
            ("all_reduce", "model", f"{layer}_ff2")]
        for c in cs:
            assert c.value.type.shape == ("batch", s, h)
            assert c.bytes_per_device == pytest.approx(2 * 3 / 4 * s_dev)
    # outside the layers: the vocab-parallel embedding's masked lookup, nothing for the head
    others = [(c.kind, c.scope) for c in plan.collectives if not c.scope.startswith("encoder")]
    assert others == [("all_reduce", "embed")]
    assert plan.total_collective_bytes() == pytest.approx(5 * 2 * 3 / 4 * s_dev)

    sharded = [v for v, _ in plan.parameters() if any(v.layout.axes)]
    total = sum(v.type.num_elements * 4 for v in sharded)
    assert sum(plan.bytes_per_device(v) for v in sharded) <= 1.05 * total / 4
    # every parameter of the encoder layers, replicated norms and row-parallel biases included
    for layer in ("encoder_0", "encoder_1"):
        assert plan.parameter_bytes_per_device(layer) <= 1.05 * plan.parameter_bytes(layer) / 4

    report = plan.report()
    assert "mesh {batch: 2, model: 4} (8 devices)" in report
    assert "encoder_0_mha/attention_output" in report and "encoder_1_ff2" in report
    assert "all_reduce over 'model' (sum) of the matmul result f32[batch,8,64] (batch,_,_)" \
        in report
    assert "5 collectives" in report
    assert "encoder_0_mha " in plan.report(depth=1)


def test_megatron_heads_indivisible_by_the_model_axis(encoder):
    from tensorforge.tools.convert import optimize

    # 4 heads on an 8-way model axis: the [heads, dh] biases cannot be split -> an error...
    mesh = Mesh({"model": 8})
    with pytest.raises(ShardingError) as e:
        shard(encoder, create_layout_map(encoder, mesh))
    assert len(e.value.diagnostics) == 6
    assert "tensor 'encoder_0_mha/query/bias' dim 0 has size 4, not divisible by mesh axis " \
        "'model' of size 8" in str(e.value)
    # ...and without biases the [b,s,64] -> [b,s,4,16] split cannot keep the axis: gathered
    module = optimize(encoder.clone(), None)
    plan = shard(module, create_layout_map(module, mesh))
    kinds = {(c.kind, c.scope) for c in plan.collectives}
    assert ("all_gather", "encoder_0_mha/query") in kinds


def test_hidden_split_embedding_keeps_the_residual_stream_split(encoder):
    from tensorforge.tools.convert import optimize

    module = optimize(encoder.clone(), None)
    lm = create_layout_map(module, MESH, embedding="hidden")
    assert lm.resolve("embed/embeddings") == Layout((None, "model"))
    plan = shard(module, lm, batch=4)
    assert plan.collectives_in("embed") == []
    q = plan.collectives_in("encoder_0_mha/query")
    assert [(c.kind, c.dim) for c in q] == [("all_gather", 2)]
    # K and V reuse the gathered embedding output: gathered once
    assert plan.collectives_in("encoder_0_mha/key") == []
    assert {c.kind for c in plan.collectives_in("encoder_0_ln1")} == {"all_reduce"}
