"""Fusion passes (`fold-batchnorm`, `fuse-bias`, `fuse-activation`, and `canonicalize`, which
includes them): numerical equivalence through the interpreter on every affine op, the cases
that must not fuse, metadata (names, scopes, quantization, layouts), truthful change reports,
the interplay with CSE and constant folding, and a hypothesis property over random
conv -> mul -> add -> relu6 chains."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from tensorforge.ir import DType, Graph, Layout, Module, QuantParams, TensorType
from tensorforge.ir.interpreter import run_graph
from tensorforge.ir.text import print_module
from tensorforge.ir.verify import verify_module
from tensorforge.passes import PassContext, PassManager

RTOL, ATOL = 1e-5, 1e-5
BATCH = 2
AFFINE = ("conv2d", "depthwise_conv2d", "conv2d_transpose", "matmul")


def f32(*shape):
    return TensorType(DType.f32, shape)


def rand(rng, *shape, low=None):
    a = rng.standard_normal(shape)
    if low is not None:  # magnitudes in [low, low + 1], random signs (scales, variances)
        a = np.sign(a) * (low + rng.random(shape))
    return a.astype(np.float32)


# -- building affine ops -----------------------------------------------------------------------

def add_affine(g: Graph, op: str, x, rng, *, bias: bool, attrs=None, scope="layer", name="y"):
    """Adds `op` reading `x` with random constant weights (and bias); returns its node.
    conv inputs are [?, 5, 5, 3]; depthwise uses multiplier 2 (6 channels)."""
    attrs = dict(attrs or {})
    if op == "conv2d":
        w = rand(rng, 3, 3, 3, 4)
        attrs.setdefault("padding", "SAME")
    elif op == "depthwise_conv2d":
        w = rand(rng, 2, 2, 3, 2)
    elif op == "conv2d_transpose":
        w = rand(rng, 3, 3, 4, 3)       # [H, W, C_out, C_in]
        attrs.setdefault("strides", (2, 2))
    else:
        w = rand(rng, 5, 4) if not attrs.get("transpose_b") else rand(rng, 4, 5)
    wv = g.constant(w, "w", scope=scope)
    inputs = [x, wv]
    node = g.add(op, inputs, attrs, names=[name], scope=scope, loc="test:Layer")
    if bias:
        c = node.output.type.shape[-1]
        g.erase(node)
        inputs.append(g.constant(rand(rng, c), "b", scope=scope))
        node = g.add(op, inputs, attrs, names=[name], scope=scope, loc="test:Layer")
    return node


def graph_input(g: Graph, op: str):
    if op == "matmul":
        return g.add_input(f32("batch", 5), "x")
    return g.add_input(f32("batch", 5, 5, 3), "x")


def inputs_for(g: Graph, rng):
    out = []
    for v in g.inputs:
        shape = [BATCH if isinstance(d, str) else d for d in v.type.shape]
        out.append(rand(rng, *shape))
    return out


def run_pipeline(g: Graph, pipeline: str, rng=None, log=lambda text: None):
    """Runs `pipeline` on a copy of `g` (checking verification and truthful change reports,
    and that a second run finds nothing to do); returns the result graph after asserting it
    computes what `g` computes."""
    rng = rng or np.random.default_rng(1)
    m = Module([g])
    verify_module(m)
    c = m.clone()
    ctx = PassContext(verify_each=True, check_changes=True)
    PassManager.parse(pipeline).run(c, ctx)
    log("after:\n" + print_module(c))
    assert PassManager.parse(pipeline).run(c, ctx) is False
    args = inputs_for(g, rng)
    for want, got in zip(run_graph(g, args), run_graph(c.main, args)):
        assert want.dtype == got.dtype and want.shape == got.shape
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)
    return c.main


def ops(g: Graph) -> list[str]:
    return [n.op for n in g if n.op != "constant"]


def bn_params(g: Graph, rng, c: int, scope="bn"):
    return [g.constant(rand(rng, c), "mean", scope=scope),
            g.constant(np.abs(rand(rng, c, low=0.5)), "variance", scope=scope),
            g.constant(rand(rng, c, low=0.5), "gamma", scope=scope),
            g.constant(rand(rng, c), "beta", scope=scope)]


# -- numerical equivalence on every affine op ---------------------------------------------------

@pytest.mark.parametrize("bias", [False, True], ids=["nobias", "bias"])
@pytest.mark.parametrize("op", AFFINE)
def test_batch_norm_op_folds_into_affine(op, bias):
    rng = np.random.default_rng(0)
    g = Graph()
    x = graph_input(g, op)
    node = add_affine(g, op, x, rng, bias=bias)
    c = node.output.type.shape[-1]
    bn = g.add("batch_norm", [node.output, *bn_params(g, rng, c)], {"epsilon": 1e-3},
               names=["bn"], scope="bn")
    g.set_outputs([bn.output])
    h = run_pipeline(g, "fold-batchnorm")
    assert ops(h) == [op]
    fused = next(n for n in h if n.op == op)
    assert len(fused.inputs) == 3 and fused.inputs[2].const is not None
    assert fused.output.name == "bn" and fused.scope == "layer" and fused.loc == "test:Layer"


@pytest.mark.parametrize("bias", [False, True], ids=["nobias", "bias"])
@pytest.mark.parametrize("op", AFFINE)
def test_decomposed_batch_norm_folds_into_affine(op, bias):
    """mul by a [C] / [1,..,1,C] constant then add or sub of one, either operand order."""
    rng = np.random.default_rng(1)
    g = Graph()
    x = graph_input(g, op)
    node = add_affine(g, op, x, rng, bias=bias)
    out = node.output
    c, rank = out.type.shape[-1], out.type.rank
    s = g.constant(rand(rng, *([1] * (rank - 1)), c, low=0.5), "scale", scope="bn")
    t = g.constant(rand(rng, c), "shift", scope="bn")
    m = g.add("mul", [s, out], scope="bn").output
    a = g.add("sub", [m, t], names=["bn"], scope="bn").output
    g.set_outputs([a])
    h = run_pipeline(g, "fold-batchnorm")
    assert ops(h) == [op]


@pytest.mark.parametrize("op", AFFINE)
def test_fuse_bias_and_activation_on_every_op(op):
    rng = np.random.default_rng(2)
    g = Graph()
    x = graph_input(g, op)
    outs = []
    for i, (bias, act) in enumerate([(False, "relu"), (True, "relu6"), (True, "tanh")]):
        node = add_affine(g, op, x, rng, bias=bias, scope=f"l{i}", name=f"y{i}")
        c = node.output.type.shape[-1]
        t = g.constant(rand(rng, c), f"t{i}", scope=f"l{i}")
        a = g.add("add", [t, node.output] if i % 2 else [node.output, t], scope=f"l{i}").output
        outs.append(g.add(act, [a], names=[f"act{i}"], scope=f"act{i}").output)
    g.set_outputs(outs)
    h = run_pipeline(g, "fuse-bias,fuse-activation")
    assert ops(h) == [op] * 3
    assert [n.attrs["activation"] for n in h if n.op == op] == ["relu", "relu6", "tanh"]
    assert [v.name for v in h.outputs] == ["act0", "act1", "act2"]
    assert [v.producer.scope for v in h.outputs] == ["l0", "l1", "l2"]


@pytest.mark.parametrize("bounds, act", [((0.0, 6.0), "relu6"), ((-1.0, 1.0), "relu_n1_to_1")])
def test_clip_becomes_fused_activation(bounds, act):
    rng = np.random.default_rng(3)
    g = Graph()
    x = graph_input(g, "conv2d")
    node = add_affine(g, "conv2d", x, rng, bias=True)
    y = g.add("clip", [node.output], {"min": bounds[0], "max": bounds[1]}).output
    g.set_outputs([y])
    h = run_pipeline(g, "fuse-activation")
    assert ops(h) == ["conv2d"] and h.outputs[0].producer.attrs["activation"] == act


def test_depthwise_multiplier_channel_order():
    """Output channel c*M + m of a depthwise conv is filter[..., c, m]: scale one channel only
    and check exactly the right filter tap changed."""
    g = Graph()
    x = g.add_input(f32(1, 3, 3, 2), "x")
    w = np.arange(1, 1 + 2 * 2 * 2 * 3, dtype=np.float32).reshape(2, 2, 2, 3)
    d = g.add("depthwise_conv2d", [x, g.constant(w, "w")]).output     # 6 channels
    s = np.ones(6, np.float32)
    s[4] = 10.0                                                         # c=1, m=1
    y = g.add("mul", [d, g.constant(s)], names=["y"]).output
    g.set_outputs([y])
    h = run_pipeline(g, "fold-batchnorm")
    new_w = h.outputs[0].producer.inputs[1].const
    expect = w.copy()
    expect[:, :, 1, 1] *= 10
    np.testing.assert_array_equal(new_w, expect)


def test_matmul_transpose_b_and_batched_a():
    rng = np.random.default_rng(4)
    g = Graph()
    x = g.add_input(f32("batch", 3, 5), "x")
    node = add_affine(g, "matmul", x, rng, bias=True, attrs={"transpose_b": True})
    s = g.constant(rand(rng, 1, 1, 4, low=0.5))
    y = g.add("relu", [g.add("mul", [node.output, s]).output], names=["y"]).output
    g.set_outputs([y])
    h = run_pipeline(g, "canonicalize")
    assert ops(h) == ["matmul"] and h.outputs[0].producer.attrs["activation"] == "relu"


@pytest.mark.parametrize("op, x_shape, w_shape, attrs", [
    ("conv2d", (2, 5, 5, 4), (3, 3, 2, 6), {"groups": 2, "dilations": (2, 1)}),
    ("conv2d_transpose", (2, 3, 3, 2), (2, 2, 3, 2), {"strides": (2, 2), "padding": "SAME",
                                                    "output_shape": (2, 6, 6, 3)}),
    ("matmul", (4, 3, 5), (4, 5, 2), {}),                   # batched constant b
    ("matmul", (3, 5), (2, 3, 5), {"transpose_b": True}),   # b broadcasts a's batch
])
def test_batch_norm_folds_with_other_attributes(op, x_shape, w_shape, attrs):
    rng = np.random.default_rng(15)
    g = Graph()
    x = g.add_input(f32(*x_shape), "x")
    y = g.add(op, [x, g.constant(rand(rng, *w_shape), "w")], attrs, scope="layer").output
    c = y.type.shape[-1]
    bn = g.add("batch_norm", [y, *bn_params(g, rng, c)], names=["bn"])
    g.set_outputs([g.add("relu6", [bn.output], names=["out"]).output])
    h = run_pipeline(g, "canonicalize")
    assert ops(h) == [op]
    fused = h.outputs[0].producer
    assert fused.attrs == {**fused.attrs, **attrs, "activation": "relu6"}


def test_matmul_with_non_constant_b_takes_a_bias():
    rng = np.random.default_rng(5)
    g = Graph()
    a = g.add_input(f32("batch", 5), "a")
    b = g.add_input(f32(5, 4), "b")
    mm = g.add("matmul", [a, b]).output
    y = g.add("add", [mm, g.constant(rand(rng, 4))]).output
    g.set_outputs([g.add("mul", [y, g.constant(rand(rng, 4, low=0.5))]).output])
    h = run_pipeline(g, "canonicalize")
    # the bias fuses; the scale cannot (b is not a constant) and stays after the matmul
    assert ops(h) == ["matmul", "mul"]
    assert [len(n.inputs) for n in h if n.op == "matmul"] == [3]


# -- standalone batch norm ---------------------------------------------------------------------

@pytest.mark.parametrize("shape, axis", [(("batch", 3, 4), -1), (("batch", 3, 4), 1),
                                         ((3, 4), 0), (("batch", 2, 2, 3), 3)])
def test_standalone_batch_norm_becomes_mul_add(shape, axis):
    rng = np.random.default_rng(6)
    g = Graph()
    x = g.add_input(f32(*shape), "x")
    bn = g.add("batch_norm", [x, *bn_params(g, rng, shape[axis])], {"axis": axis},
               names=["bn"], scope="norm")
    g.set_outputs([bn.output])
    h = run_pipeline(g, "fold-batchnorm")
    assert ops(h) == ["mul", "add"]
    assert h.outputs[0].name == "bn" and all(n.scope == "norm" for n in h)


def test_batch_norm_over_a_symbolic_axis_is_left_alone():
    """mul by a [3, 1] constant would make the symbolic channel dim static: not decomposed."""
    rng = np.random.default_rng(6)
    g = Graph()
    x = g.add_input(f32("c", 4), "x")
    g.set_outputs([g.add("batch_norm", [x, *bn_params(g, rng, 3)], {"axis": 0}).output])
    assert PassManager.parse("fold-batchnorm").run(Module([g]),
                                                   PassContext(check_changes=True)) is False


def test_batch_norm_after_multi_use_conv_is_decomposed_not_folded():
    rng = np.random.default_rng(7)
    g = Graph()
    x = graph_input(g, "conv2d")
    conv = add_affine(g, "conv2d", x, rng, bias=False)
    bn = g.add("batch_norm", [conv.output, *bn_params(g, rng, 4)], names=["bn"])
    g.set_outputs([bn.output, conv.output])
    h = run_pipeline(g, "fold-batchnorm")
    assert ops(h) == ["conv2d", "mul", "add"]
    assert h.first.next.inputs[1].const is not None  # the conv2d kept its original filter
    np.testing.assert_array_equal(next(n for n in h if n.op == "conv2d").inputs[1].const,
                                  conv.inputs[1].const)


def test_batch_norm_with_zero_variance_and_epsilon_is_left_alone():
    g = Graph()
    x = g.add_input(f32(2, 3), "x")
    z = np.zeros(3, np.float32)
    ps = [g.constant(z), g.constant(z), g.constant(np.ones(3, np.float32)), g.constant(z)]
    bn = g.add("batch_norm", [x, *ps], {"epsilon": 0.0})
    g.set_outputs([bn.output])
    m = Module([g])
    assert PassManager.parse("fold-batchnorm").run(m, PassContext(check_changes=True)) is False


def test_batch_norm_with_dynamic_params_is_left_alone():
    g = Graph()
    x = g.add_input(f32(2, 3), "x")
    mean = g.add_input(f32(3), "mean")
    ps = [mean] + [g.constant(np.ones(3, np.float32)) for _ in range(3)]
    g.set_outputs([g.add("batch_norm", [x, *ps]).output])
    assert PassManager.parse("fold-batchnorm").run(Module([g]),
                                                   PassContext(check_changes=True)) is False


# -- what must not fuse ------------------------------------------------------------------------

def _conv_then(op_builder, *, conv_attrs=None, also_return_conv=False, quant=None):
    rng = np.random.default_rng(8)
    g = Graph()
    x = graph_input(g, "conv2d")
    conv = add_affine(g, "conv2d", x, rng, bias=True, attrs=conv_attrs)
    conv.output.quant = quant
    y = op_builder(g, conv.output, rng)
    g.set_outputs([y, conv.output] if also_return_conv else [y])
    return g


@pytest.mark.parametrize("pipeline", ["fold-batchnorm", "fuse-bias", "fuse-activation",
                                      "canonicalize"])
@pytest.mark.parametrize("case", ["spatial_mul", "spatial_add", "dynamic_add", "has_activation",
                                  "multi_use", "quantized_intermediate", "sigmoid",
                                  "broadcasting_mul"])
def test_not_fused(case, pipeline):
    after = {
        "spatial_mul": lambda g, v, r: g.add("mul", [v, g.constant(rand(r, 5, 1, 4))]).output,
        "spatial_add": lambda g, v, r: g.add("add", [v, g.constant(rand(r, 1, 5, 5, 4))]).output,
        "dynamic_add": lambda g, v, r: g.add("add", [v, g.add_input(f32(4), "t")]).output,
        "has_activation": lambda g, v, r: g.add("relu6", [
            g.add("add", [v, g.constant(rand(r, 4))]).output]).output,
        "multi_use": lambda g, v, r: g.add("relu", [
            g.add("mul", [v, g.constant(rand(r, 4))]).output]).output,
        "quantized_intermediate": lambda g, v, r: g.add("relu", [
            g.add("add", [v, g.constant(rand(r, 4))]).output]).output,
        "sigmoid": lambda g, v, r: g.add("sigmoid", [v]).output,
        # [1,1,1,1,4] broadcasts the result to rank 5: the conv cannot produce that
        "broadcasting_mul": lambda g, v, r: g.add("mul", [v, g.constant(
            rand(r, 1, 1, 1, 1, 4))]).output,
    }[case]
    kw = {}
    if case == "has_activation":
        kw["conv_attrs"] = {"activation": "relu"}
    if case == "multi_use":
        kw["also_return_conv"] = True
    if case == "quantized_intermediate":
        kw["quant"] = QuantParams((0.05,), (0,))
    g = _conv_then(after, **kw)
    before = ops(g)
    h = run_pipeline(g, pipeline)
    assert ops(h) == before


# -- metadata ----------------------------------------------------------------------------------

def test_fused_value_keeps_name_quant_layout_and_conv_scope():
    rng = np.random.default_rng(9)
    g = Graph()
    x = graph_input(g, "conv2d")
    conv = add_affine(g, "conv2d", x, rng, bias=False, scope="block/conv", name=None)
    conv.inputs[1].layout = Layout((None, None, None, "model"))
    y = g.add("add", [conv.output, g.constant(rand(rng, 4))], names=["pre"], scope="bn").output
    r = g.add("relu6", [y], names=["act"], scope="act").output
    r.quant = QuantParams((6 / 255,), (-128,))
    r.layout = Layout(("batch", None, None, None))
    g.set_outputs([r])
    h = run_pipeline(g, "fuse-bias,fuse-activation")
    fused = next(n for n in h if n.op == "conv2d")
    out = fused.output
    assert out.name == "act" and out.quant == r.quant and out.layout == r.layout
    assert fused.scope == "block/conv" and fused.loc == "test:Layer"
    assert fused.attrs["activation"] == "relu6" and fused.attrs["padding"] == "SAME"


def test_scaled_filter_keeps_its_name_scope_and_layout_and_shared_weights_are_untouched():
    rng = np.random.default_rng(10)
    g = Graph()
    x = graph_input(g, "conv2d")
    c1 = add_affine(g, "conv2d", x, rng, bias=False, scope="c1", name="c1")
    w = c1.inputs[1]
    w.layout = Layout((None, None, None, "model"))
    c2 = g.add("conv2d", [x, w], {"padding": "SAME"}, names=["c2"], scope="c2")
    y = g.add("mul", [c1.output, g.constant(rand(rng, 4, low=0.5))], names=["y"]).output
    g.set_outputs([y, c2.output])
    h = run_pipeline(g, "fold-batchnorm")
    convs = [n for n in h if n.op == "conv2d"]
    assert len(convs) == 2
    new_w = convs[0].inputs[1] if convs[0].output.name == "y" else convs[1].inputs[1]
    assert new_w.name == "w" and new_w.layout == w.layout
    assert new_w.producer.scope == "c1"
    other = next(n for n in convs if n.output.name == "c2")
    np.testing.assert_array_equal(other.inputs[1].const, w.const)


def test_anonymous_result_takes_the_conv_name():
    rng = np.random.default_rng(11)
    g = Graph()
    x = graph_input(g, "conv2d")
    conv = add_affine(g, "conv2d", x, rng, bias=False, name="conv1")
    y = g.add("relu", [conv.output]).output
    g.set_outputs([y])
    h = run_pipeline(g, "fuse-activation")
    assert h.outputs[0].name == "conv1"


# -- pass plumbing -----------------------------------------------------------------------------

def _bn_chain():
    rng = np.random.default_rng(12)
    g = Graph()
    x = graph_input(g, "conv2d")
    conv = add_affine(g, "conv2d", x, rng, bias=False)
    bn = g.add("batch_norm", [conv.output, *bn_params(g, rng, 4)])
    g.set_outputs([g.add("relu", [bn.output], names=["out"]).output])
    return g


def test_canonicalize_fuses_by_default_and_fuse_false_turns_it_off():
    h = run_pipeline(_bn_chain(), "canonicalize")
    assert ops(h) == ["conv2d"] and h.outputs[0].producer.attrs["activation"] == "relu"
    h = run_pipeline(_bn_chain(), "canonicalize{fuse=false}")
    assert ops(h) == ["conv2d", "batch_norm", "relu"]


def test_fusion_passes_report_truthfully_and_reach_a_fixed_point():
    for name in ("fold-batchnorm", "fuse-bias", "fuse-activation", "canonicalize"):
        m = Module([_bn_chain()])
        ctx = PassContext(check_changes=True, verify_each=True)
        PassManager.parse(name).run(m, ctx)
        assert PassManager.parse(name).run(m, ctx) is False


def test_pipeline_text_of_fuse_option():
    assert str(PassManager.parse("canonicalize{fuse=false},fold-batchnorm")) == \
        "canonicalize{fuse=false},fold-batchnorm"


def test_cse_merges_fused_twins_and_their_new_constants():
    """Two identical conv -> batch_norm -> relu chains in one scope: each folds into its own
    new filter/bias constants, which CSE then merges, and the two convs become one."""
    rng = np.random.default_rng(13)
    g = Graph()
    x = graph_input(g, "conv2d")
    w = g.constant(rand(rng, 3, 3, 3, 4), "w")
    params = bn_params(g, rng, 4)
    outs = []
    for i in range(2):
        c = g.add("conv2d", [x, w], {"padding": "SAME"}, scope="twin").output
        b = g.add("batch_norm", [c, *params], scope="twin").output
        outs.append(g.add("relu", [b], scope="twin").output)
    g.set_outputs([g.add("add", [outs[0], outs[1]], scope="sum").output])
    h = run_pipeline(g, "canonicalize")
    assert ops(h) == ["conv2d", "add"]
    assert [n.op for n in h].count("constant") == 2   # one filter, one bias


def test_fold_constants_evaluates_a_fused_conv_of_constants():
    rng = np.random.default_rng(14)
    g = Graph()
    x = g.constant(rand(rng, 1, 5, 5, 3), "x")
    conv = add_affine(g, "conv2d", x, rng, bias=False)
    y = g.add("relu6", [g.add("add", [conv.output, g.constant(rand(rng, 4))]).output],
              names=["y"]).output
    g.set_outputs([y])
    m = Module([g])
    want = run_graph(g, [])
    ctx = PassContext(check_changes=True, verify_each=True)
    PassManager.parse("fuse-bias,fuse-activation").run(m, ctx)
    assert ops(m.main) == ["conv2d"]
    assert PassManager.parse("fold-constants").run(m, ctx) is True
    assert ops(m.main) == [] and m.main.outputs[0].name == "y"
    np.testing.assert_allclose(run_graph(m.main, [])[0], want[0], rtol=RTOL, atol=ATOL)


# -- property: random affine chains canonicalize to one fused op -------------------------------

@st.composite
def affine_chains(draw):
    """conv-like op -> mul(per-channel constant) -> add(per-channel constant) -> relu6, with
    random op, attributes, existing bias, constant shapes and operand orders."""
    op = draw(st.sampled_from(AFFINE))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    g = Graph()
    attrs = {}
    if op == "matmul":
        k, n = draw(st.integers(1, 6)), draw(st.integers(1, 5))
        lead = draw(st.sampled_from([(), (3,)]))
        x = g.add_input(f32("batch", *lead, k), "x")
        tb = draw(st.booleans())
        attrs["transpose_b"] = tb
        w = rand(rng, n, k) if tb else rand(rng, k, n)
    else:
        h, wd, cin = draw(st.integers(3, 6)), draw(st.integers(3, 6)), draw(st.integers(1, 3))
        x = g.add_input(f32("batch", h, wd, cin), "x")
        kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
        attrs["strides"] = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
        attrs["padding"] = draw(st.sampled_from(["SAME", "VALID"]))
        if op == "conv2d":
            w = rand(rng, kh, kw, cin, draw(st.integers(1, 4)))
        elif op == "depthwise_conv2d":
            w = rand(rng, kh, kw, cin, draw(st.integers(1, 3)))
        else:
            w = rand(rng, kh, kw, draw(st.integers(1, 4)), cin)
    inputs = [x, g.constant(w, "w", scope="layer")]
    probe = g.add(op, inputs, attrs)
    out_t = probe.output.type
    g.erase(probe)
    c, rank = out_t.shape[-1], out_t.rank
    if draw(st.booleans()):
        inputs.append(g.constant(rand(rng, c), "b", scope="layer"))
    y = g.add(op, inputs, attrs, names=["conv"], scope="layer").output

    def channel_const(name, low=None):
        lead = draw(st.integers(0, rank - 1))
        size = draw(st.sampled_from([c, 1])) if c == 1 or draw(st.integers(0, 4)) else 1
        arr = rand(rng, *([1] * lead), size, low=low)
        return g.constant(arr, name, scope="bn")

    s = channel_const("scale", low=0.25)
    y = g.add("mul", [y, s] if draw(st.booleans()) else [s, y], scope="bn").output
    t = channel_const("shift")
    y = g.add("add", [y, t] if draw(st.booleans()) else [t, y], scope="bn").output
    y = g.add("relu6", [y], names=["out"], scope="act").output
    g.set_outputs([y])
    return g


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(g=affine_chains(), seed=st.integers(0, 2**32 - 1))
def test_random_affine_chains_canonicalize_to_one_fused_op(g, seed):
    note(print_module(Module([g])))
    op = next(n.op for n in g if n.op in AFFINE)
    h = run_pipeline(g, "canonicalize", np.random.default_rng(seed), log=note)
    assert ops(h) == [op]
    fused = h.outputs[0].producer
    assert fused.op == op and fused.attrs["activation"] == "relu6"
    assert fused.scope == "layer" and fused.output.name == "out"


@pytest.mark.parametrize("exponent, want", [(2.0, "mul"), (0.5, "sqrt"), (3.0, "pow")])
def test_square_and_square_root_by_cheaper_ops(exponent, want):
    """RMS norms square with pow(x, 2): canonicalize multiplies instead; other exponents,
    and an exponent that broadcasts the result, keep pow."""
    g = Graph()
    x = g.add_input(f32("batch", 8), "x")
    y = g.add("pow", [x, g.constant(np.float32(exponent))], names=["y"]).output
    wide = g.add("pow", [x, g.constant(np.full((3, 1, 8), 2.0, np.float32))],
                 names=["wide"]).output
    g.set_outputs([y, wide])
    out = run_pipeline(g, "canonicalize")        # also checks the results are unchanged
    assert ops(out).count("pow") == (2 if want == "pow" else 1), ops(out)
    assert want in ops(out)
