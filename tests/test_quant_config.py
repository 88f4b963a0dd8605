"""Quantization configuration layer: schemes registry, QuantizationConfiguration validation,
QuantizationConfigurationMap keys (exact scope, regex, Keras layer, tensor), precedence,
float nodes, error messages, JSON round trip (also as a hypothesis property)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tensorforge.ir.errors import ConversionError, TensorforgeError
from tensorforge.ir.graph import Graph, Module
from tensorforge.ir.ops import all_ops
from tensorforge.ir.types import DType, TensorType
from tensorforge.passes.quantize import overrides as C
from tensorforge.passes.quantize import schemes
from tensorforge.passes.quantize.config import QuantizationConfigurationMap
from tensorforge.passes.quantize.configuration import (ConfigError, LayerConfiguration,
                                                       QuantizationConfiguration as QC)

W4 = QC(bits=4, symmetric=True, granularity="per_channel")
W4B = QC(bits=4, granularity="blockwise", block_size=8)
A16 = QC(bits=16, symmetric=True)
A8P = QC(bits=8, symmetric=False, calibration="percentile", percentile=99.9)


def _const(g, *shape, name=None, seed=0):
    return g.constant(np.random.default_rng(seed).standard_normal(shape).astype(np.float32),
                      name)


def build_module() -> Module:
    """A small graph touching every key kind: a conv block (`conv1`, `conv1/act`, and
    `conv10`, which `conv1` must not match), an embedding (int indices), two encoder layers
    with attention matmuls (constant and activation `b`), a layer_norm (not in int8), a concat
    and a `head` matmul + softmax."""
    g = Graph()
    x = g.add_input(TensorType(DType.f32, (1, 8, 8, 3)), "x")
    ids = g.add_input(TensorType(DType.i32, (4,)), "ids")
    h = g.add("conv2d", [x, _const(g, 3, 3, 3, 4, name="w1"), _const(g, 4, seed=1)],
              {"padding": "SAME"}, scope="conv1", names=["c1"]).output
    h = g.add("relu", [h], scope="conv1/act").output
    h = g.add("conv2d", [h, _const(g, 1, 1, 4, 4, seed=2)], scope="conv10").output
    h = g.add("reshape", [h], {"shape": (1, 256)}, scope="flatten").output
    p = g.add("matmul", [h, _const(g, 256, 16, seed=3)], scope="proj").output
    e = g.add("gather", [_const(g, 10, 16, name="table", seed=4), ids], scope="embed").output
    att = "encoder/0/attention"
    q = g.add("matmul", [e, _const(g, 16, 16, seed=5)], scope=f"{att}/query").output
    k = g.add("matmul", [e, _const(g, 16, 16, seed=6)], scope=f"{att}/key").output
    s = g.add("matmul", [q, k], {"transpose_b": True}, scope=f"{att}/scores").output
    s = g.add("softmax", [s], scope=f"{att}/scores", names=["scores"]).output
    n = g.add("layer_norm", [e, _const(g, 16, seed=7), _const(g, 16, seed=8)],
              scope="encoder/0/norm").output
    q1 = g.add("matmul", [n, _const(g, 16, 16, seed=9)],
               scope="encoder/1/attention/query").output
    m = g.add("concat", [q1, p], {"axis": 0}, scope="merge").output
    y = g.add("matmul", [m, _const(g, 16, 10, seed=10), _const(g, 10, seed=11)],
              scope="head").output
    y = g.add("softmax", [y], scope="head", names=["probs"]).output
    g.set_outputs([y, s])
    return Module([g])


@pytest.fixture(scope="module")
def module():
    return build_module()


def node(res, scope, op):
    """The single NodeResolution with this scope and op."""
    hits = [n for n in res.nodes if n.scope == scope and n.op == op]
    assert len(hits) == 1, (scope, op, hits)
    return hits[0]


# -- schemes -----------------------------------------------------------------------------------

def test_builtin_schemes():
    assert schemes.names() == sorted(schemes.names())
    assert {"int8", "int8-qat", "dynamic-int8", "int16x8", "fp16",
            "int4-weight"} <= set(schemes.names())
    ops = set(all_ops())
    for name in schemes.names():
        s = schemes.get(name)
        assert s.name == name and s.ops <= ops and s.doc
    int8 = schemes.get("int8")
    assert (int8.mode, int8.bias_bits, int8.io, int8.qat) == ("static", 32, "float", False)
    assert (int8.weight.bits, int8.weight.symmetric, int8.weight.granularity) == \
        (8, True, "per_channel")
    assert int8.weight.resolved_narrow_range("weight")
    assert (int8.activation.bits, int8.activation.symmetric,
            int8.activation.granularity) == (8, False, "per_tensor")
    assert {"conv2d", "matmul", "softmax", "hard_swish", "identity"} <= int8.ops
    assert "layer_norm" not in int8.ops
    assert schemes.get("int8-qat").qat and schemes.get("int8-qat").ops == int8.ops
    i16 = schemes.get("int16x8")
    assert (i16.bias_bits, i16.activation.bits, i16.activation.symmetric) == (64, 16, True)
    assert "conv2d_transpose" not in i16.ops and i16.ops < int8.ops
    dyn = schemes.get("dynamic-int8")
    assert dyn.activation is None and dyn.ops == {"conv2d", "depthwise_conv2d", "matmul"}
    fp16 = schemes.get("fp16")
    assert fp16.weight.dtype == "float16" and fp16.weight.bits == 16
    assert {"conv2d", "gather", "batch_norm", "layer_norm"} <= fp16.ops
    assert "quantize" not in fp16.ops
    i4 = schemes.get("int4-weight")
    assert (i4.mode, i4.weight.bits) == ("weight_only", 4)
    assert schemes.get(int8) is int8


def test_unknown_scheme_lists_names_and_closest():
    with pytest.raises(ConfigError) as e:
        schemes.get("int9")
    msg = str(e.value)
    assert "'int9'" in msg and "did you mean 'int8'" in msg
    for name in schemes.names():
        assert name in msg
    assert isinstance(e.value, TensorforgeError) and isinstance(e.value, ConversionError)
    with pytest.raises(ConfigError, match="fp16"):
        QuantizationConfigurationMap("fp61")


def test_register_user_scheme(module):
    s = dataclasses.replace(schemes.get("int8"), name="test-int8-io", io="int8",
                            ops=frozenset({"conv2d"}), doc="user")
    try:
        assert schemes.register(s) is s
        assert schemes.get("test-int8-io") is s and "test-int8-io" in schemes.names()
        with pytest.raises(ConfigError, match="already registered"):
            schemes.register(s)
        schemes.register(dataclasses.replace(s, doc="v2"), replace=True)
        assert schemes.get("test-int8-io").doc == "v2"
        res = QuantizationConfigurationMap("test-int8-io").resolve(module)
        assert not node(res, "conv1", "conv2d").is_float
        assert node(res, "head", "matmul").float_reason == \
            "op 'matmul' is not in scheme test-int8-io"
    finally:
        schemes.unregister("test-int8-io")
    assert "test-int8-io" not in schemes.names()
    with pytest.raises(ConfigError, match="built-in"):
        schemes.register(dataclasses.replace(s, name="int8"))


def test_scheme_validation_lists_every_problem():
    with pytest.raises(ConfigError) as e:
        schemes.Scheme("bad", "staticc", QC(), None, bias_bits=16, io="int7",
                       ops={"conv2d", "matmull"})
    msg = str(e.value)
    for part in ("mode 'staticc'", "bias_bits", "io 'int7'", "'matmull'", "did you mean matmul"):
        assert part in msg
    with pytest.raises(ConfigError, match="needs an activation config"):
        schemes.Scheme("bad", "static", QC(), None)
    with pytest.raises(ConfigError, match="float16"):
        schemes.Scheme("bad", "fp16", QC())


# -- QuantizationConfiguration -----------------------------------------------------------------

def test_configuration_validation():
    with pytest.raises(ConfigError) as e:
        QC(bits=7, granularity="per_row", calibration="max", percentile=0, dtype="int3")
    msg = str(e.value)
    assert "5 problems" in msg
    for part in ("bits", "'per_tensor', 'per_channel', 'blockwise'",
                 "'minmax', 'moving_average', 'percentile', 'mse'", "percentile", "'float16'"):
        assert part in msg
    with pytest.raises(ConfigError, match="only for granularity 'blockwise'"):
        QC(block_size=32)
    with pytest.raises(ConfigError, match="needs block_size"):
        QC(granularity="blockwise")
    with pytest.raises(ConfigError, match="positive"):
        QC(granularity="blockwise", block_size=0)
    assert QC(granularity="blockwise", block_size=32).block_size == 32
    assert QC(dtype="float16").bits == 16
    with pytest.raises(ConfigError, match="16 bits"):
        QC(dtype="float16", bits=4)
    with pytest.raises(ConfigError, match="bits must be one of 4, 8, 16"):
        LayerConfiguration(weight_config=QC(bits=32))
    with pytest.raises(ConfigError, match="LayerConfiguration"):
        LayerConfiguration(weight_config="int8")


def test_resolved_narrow_range():
    sym, asym = QC(symmetric=True), QC(symmetric=False)
    assert sym.resolved_narrow_range("weight") is True
    assert sym.resolved_narrow_range("activation") is False
    assert sym.resolved_narrow_range("bias") is False
    assert asym.resolved_narrow_range("weight") is False
    assert QC(narrow_range=False).resolved_narrow_range("weight") is False
    assert QC(narrow_range=True, symmetric=False).resolved_narrow_range("activation") is True
    with pytest.raises(ConfigError, match="'weight', 'bias'"):
        sym.resolved_narrow_range("weights")
    assert QC.from_dict(A8P.to_dict()) == A8P
    with pytest.raises(ConfigError, match="unknown field 'bitz'"):
        QC.from_dict({"bitz": 8})


# -- resolution: defaults and kinds ------------------------------------------------------------

def test_int8_defaults_and_kinds(module):
    res = QuantizationConfigurationMap("int8").resolve(module)
    assert len(res.nodes) == len([n for n in module.main if n.op != "constant"])
    conv = node(res, "conv1", "conv2d")
    assert [(t.name, t.kind) for t in conv.operands] == \
        [("input", "activation"), ("filter", "weight"), ("bias", "bias")]
    assert conv.operand("filter").config == schemes.get("int8").weight
    bias = conv.operand("bias").config
    assert (bias.bits, bias.symmetric, bias.granularity) == (32, True, "per_channel")
    assert conv.results[0] == ("return", "activation", schemes.get("int8").activation,
                               "scheme int8")
    gather = node(res, "embed", "gather")
    assert [(t.kind, t.config is None) for t in gather.operands] == \
        [("weight", False), ("other", True)]
    scores = node(res, "encoder/0/attention/scores", "matmul")
    assert [t.kind for t in scores.operands] == ["activation", "activation"]
    ln = node(res, "encoder/0/norm", "layer_norm")
    assert ln.float_reason == "op 'layer_norm' is not in scheme int8"
    assert all(t.config is None for t in ln.operands + ln.results)
    assert res.float_nodes() == [ln]
    merge = node(res, "merge", "concat")
    assert [t.name for t in merge.operands] == ["values:0", "values:1"]
    assert res.for_node(conv.node) is conv
    assert res.for_node(conv.node.inputs[1].producer) is None     # constants are skipped
    table = res.table()
    assert str(res) == table
    assert "float: op 'layer_norm' is not in scheme int8" in table
    assert table.splitlines()[0].split() == ["scope", "op", "operand", "kind", "bits", "sym",
                                             "granularity", "calibration", "source"]


def test_other_modes(module):
    dyn = QuantizationConfigurationMap("dynamic-int8").resolve(module)
    conv = node(dyn, "conv1", "conv2d")
    assert [t.config is None for t in conv.operands + conv.results] == [True, False, True, True]
    assert "not in scheme dynamic-int8" in node(dyn, "head", "softmax").float_reason
    # No constant weight: nothing for a dynamic scheme to quantize.
    assert "no constant float weight" in \
        node(dyn, "encoder/0/attention/scores", "matmul").float_reason
    fp16 = QuantizationConfigurationMap("fp16").resolve(module)
    ln = node(fp16, "encoder/0/norm", "layer_norm")
    assert [(t.kind, t.config and t.config.dtype) for t in ln.operands] == \
        [("activation", None), ("weight", "float16"), ("weight", "float16")]
    assert node(fp16, "conv1", "conv2d").operand("bias").config.dtype == "float16"
    i4 = QuantizationConfigurationMap("int4-weight")
    i4.set_config("head", LayerConfiguration(weight_config=W4B))
    res = i4.resolve(module)
    assert node(res, "head", "matmul").operand("b").config == W4B
    assert node(res, "head", "matmul").operand("bias").config is None
    assert node(res, "proj", "matmul").operand("b").config.bits == 4
    i16 = QuantizationConfigurationMap("int16x8").resolve(module)
    assert node(i16, "conv1", "conv2d").operand("bias").config.bits == 64


# -- keys ----------------------------------------------------------------------------------------

def test_exact_scope_matches_prefix_not_sibling(module):
    qmap = QuantizationConfigurationMap("int8")
    qmap.set_config("conv1", LayerConfiguration(weight_config=W4, activation_config=A16))
    res = qmap.resolve(module)
    conv = node(res, "conv1", "conv2d")
    assert conv.operand("filter") == ("filter", "weight", W4, "layer 'conv1'")
    assert conv.operand("input").config == A16
    assert node(res, "conv1/act", "relu").results[0].config == A16
    assert node(res, "conv10", "conv2d").operand("filter").source == "scheme int8"


def test_regex_matches_scope_prefixes(module):
    qmap = QuantizationConfigurationMap("int8")
    qmap.set_config("encoder/.*/attention", op_type="matmul",
                    config={"a": A16, "b": W4, "return": A16})
    res = qmap.resolve(module)
    for scope in ("encoder/0/attention/query", "encoder/0/attention/key",
                  "encoder/1/attention/query"):
        mm = node(res, scope, "matmul")
        assert [t.config for t in mm.operands + mm.results] == [A16, W4, A16]
        assert mm.operand("b").source == "op matmul in 'encoder/.*/attention'"
    scores = node(res, "encoder/0/attention/scores", "matmul")
    assert scores.operand("b") == ("b", "activation", W4, "op matmul in 'encoder/.*/attention'")
    assert node(res, "encoder/0/attention/scores", "softmax").results[0].source == "scheme int8"
    assert node(res, "head", "matmul").operand("b").source == "scheme int8"


class FakeLayer:
    """Stands in for a Keras layer: only `.path` / `.name` are read."""

    def __init__(self, name, path=None):
        self.name = name
        if path is not None:
            self.path = path


def test_keras_layer_keys(module):
    qmap = QuantizationConfigurationMap("int8")
    qmap.set_config(FakeLayer("conv1", path="functional/conv1"),
                    LayerConfiguration(weight_config=W4, activation_config=None))
    qmap.set_config(FakeLayer("head"), None)
    res = qmap.resolve(module)
    assert node(res, "conv1", "conv2d").operand("filter").source == "layer 'functional/conv1'"
    assert node(res, "conv1", "conv2d").operand("input").config is None
    assert node(res, "head", "softmax").is_float
    back = QuantizationConfigurationMap.from_json(qmap.to_json())
    assert back == qmap and back.resolve(module).table() == res.table()
    with pytest.raises(ConfigError, match="a layer"):
        QuantizationConfigurationMap("int8").set_config(FakeLayer("conv.*"), None) \
            .resolve(module)
    with pytest.raises(ConfigError, match="path or .name"):
        QuantizationConfigurationMap("int8").set_config(object(), None)


def test_tensor_keys(module):
    qmap = QuantizationConfigurationMap("int8")
    qmap.set_tensor_config("x", A16)                       # graph input by value name
    qmap.set_tensor_config("conv10/filter", W4)            # <scope>/<operand>
    qmap.set_tensor_config("head/return", A8P)             # <scope>/return
    qmap.set_tensor_config("table", None)                  # a named constant
    qmap.set_tensor_config("merge/values:1", A16)          # one operand of a variadic op
    qmap.set_tensor_config("encoder/.*/query/return", A16)  # a regex over tensor names
    res = qmap.resolve(module)
    assert node(res, "conv1", "conv2d").operand("input") == \
        ("input", "activation", A16, "tensor 'x'")
    assert node(res, "conv10", "conv2d").operand("filter").config == W4
    assert [t.config for t in node(res, "head", "matmul").results] == [A8P]
    assert [t.config for t in node(res, "head", "softmax").results] == [A8P]
    assert node(res, "embed", "gather").operand("params").config is None
    merge = node(res, "merge", "concat")
    assert [t.config for t in merge.operands] == [schemes.get("int8").activation, A16]
    assert node(res, "encoder/1/attention/query", "matmul").results[0].config == A16
    assert node(res, "encoder/0/attention/key", "matmul").results[0].source == "scheme int8"


# -- precedence -----------------------------------------------------------------------------------

def test_precedence_tensor_over_op_over_layer_over_scheme(module):
    qmap = QuantizationConfigurationMap("int8")
    res = qmap.resolve(module)
    assert node(res, "head", "matmul").operand("b").source == "scheme int8"
    # Set in reverse precedence order too: the level, not the call order, decides.
    qmap.set_tensor_config("head/b", QC(bits=16, granularity="per_channel"))
    qmap.set_config("head", op_type="matmul", config={"b": W4B})
    qmap.set_config("head", LayerConfiguration(weight_config=W4, activation_config=A16))
    res = qmap.resolve(module)
    mm = node(res, "head", "matmul")
    assert mm.operand("b").config.bits == 16 and mm.operand("b").source == "tensor 'head/b'"
    assert mm.operand("a").config == A16 and mm.operand("a").source == "layer 'head'"
    # The bias follows the resolved weight: int32, same granularity.
    assert mm.operand("bias").config.granularity == "per_channel"
    assert node(res, "head", "softmax").operand("x").source == "layer 'head'"
    qmap2 = QuantizationConfigurationMap("int8")
    qmap2.set_config("head", op_type="matmul", config={"b": W4B})
    qmap2.set_config("head", LayerConfiguration(weight_config=W4, activation_config=A16))
    mm2 = node(qmap2.resolve(module), "head", "matmul")
    assert mm2.operand("b").config == W4B and mm2.operand("a").config == A16
    # A blockwise weight gives a per-channel bias.
    assert mm2.operand("bias").config.granularity == "per_channel"


def test_exact_beats_regex_and_later_regex_wins(module):
    lc = lambda w: LayerConfiguration(weight_config=w, activation_config=A16)  # noqa: E731
    qmap = QuantizationConfigurationMap("int8")
    qmap.set_config("encoder/0/attention/query", lc(W4))
    qmap.set_config("encoder/.*", lc(QC(bits=8, granularity="per_channel")))
    qmap.set_config(".*/query", lc(QC(bits=16, granularity="per_channel")))
    res = qmap.resolve(module)
    assert node(res, "encoder/0/attention/query", "matmul").operand("b").config == W4
    q1 = node(res, "encoder/1/attention/query", "matmul").operand("b")
    assert (q1.config.bits, q1.source) == (16, "layer '.*/query'")
    assert node(res, "encoder/0/attention/key", "matmul").operand("b").config.bits == 8
    # The more specific exact scope beats the shorter one, whatever the order.
    qmap = QuantizationConfigurationMap("int8")
    qmap.set_config("encoder/0/attention", lc(W4))
    qmap.set_config("encoder", lc(QC(bits=16, granularity="per_channel")))
    res = qmap.resolve(module)
    assert node(res, "encoder/0/attention/key", "matmul").operand("b").config == W4
    assert node(res, "encoder/1/attention/query", "matmul").operand("b").config.bits == 16
    # Between two tensor regexes, the later one.
    qmap = QuantizationConfigurationMap("int8")
    qmap.set_tensor_config("head/.*", A16).set_tensor_config("he.*/b", W4)
    assert node(qmap.resolve(module), "head", "matmul").operand("b").config == W4


# -- float ---------------------------------------------------------------------------------------

def test_none_keeps_float(module):
    qmap = QuantizationConfigurationMap("int8")
    qmap.set_config("head", None)
    qmap.set_config("encoder", op_type="softmax", config=None)
    qmap.set_config("conv1", op_type="conv2d", config={"bias": None, "return": None})
    qmap.set_tensor_config("proj/a", None)
    res = qmap.resolve(module)
    for op in ("matmul", "softmax"):
        assert node(res, "head", op).float_reason == "kept float by set_config('head', None)"
    assert node(res, "encoder/0/attention/scores", "softmax").float_reason == \
        "kept float by set_config('encoder', None, op_type='softmax')"
    conv = node(res, "conv1", "conv2d")
    assert not conv.is_float
    assert [t.config is None for t in conv.operands + conv.results] == [False, False, True, True]
    proj = node(res, "proj", "matmul")
    assert proj.operand("a").config is None and proj.operand("b").config is not None
    # An op-type dict opts in an op the scheme does not list; missing operands use defaults.
    qmap.set_config("encoder/0/norm", op_type="layer_norm", config={"x": A16})
    ln = node(qmap.resolve(module), "encoder/0/norm", "layer_norm")
    assert not ln.is_float and ln.operand("x").config == A16
    assert ln.operand("scale").config == schemes.get("int8").activation
    # A node with nothing left to quantize is listed as float.
    qmap = QuantizationConfigurationMap("int8")
    qmap.set_config("flatten", LayerConfiguration())
    assert "kept float by the overrides" in node(qmap.resolve(module), "flatten",
                                                 "reshape").float_reason


# -- errors --------------------------------------------------------------------------------------

def test_unmatched_keys_listed_with_nearest_scopes(module):
    qmap = QuantizationConfigurationMap("int8")
    qmap.set_config("conv1", None)                        # fine
    qmap.set_config("encodr/0/attention", None)           # typo
    qmap.set_config("hed", None)                          # typo
    qmap.set_config("[unclosed", None)                    # not a scope, not a regex
    qmap.set_config("conv1", op_type="softmax", config=None)  # scope has no softmax
    qmap.set_tensor_config("conv1/filtr", None)           # typo in a tensor key
    with pytest.raises(ConfigError) as e:
        qmap.resolve(module)
    err = e.value
    assert len(err.diagnostics) == 5
    msg = str(err)
    assert "'encodr/0/attention'" in msg and "nearest scopes: 'encoder/0/attention'," in msg
    assert "'hed'" in msg and "'head'" in msg
    assert "not a valid regex" in msg
    assert "matches no softmax node" in msg
    assert "'conv1/filtr'" in msg and "'conv1/filter'" in msg


def test_op_type_validation():
    qmap = QuantizationConfigurationMap("int8")
    with pytest.raises(ConfigError) as e:
        qmap.set_config("conv1", op_type="conv2d", config={"weights": W4, "input": 3})
    msg = str(e.value)
    assert "'weights'" in msg and "input, filter, bias, return" in msg and "2 problems" in msg
    with pytest.raises(ConfigError, match="a, b, bias, return"):
        qmap.set_config("fc", op_type="matmul", config={"kernel": W4})
    with pytest.raises(ConfigError, match="did you mean matmul"):
        qmap.set_config("fc", op_type="matmull", config=None)
    with pytest.raises(ConfigError, match="needs op_type"):
        qmap.set_config("fc", {"b": W4})
    with pytest.raises(ConfigError, match="QuantizationConfiguration or None"):
        qmap.set_tensor_config("x", "int8")
    assert qmap.calls == []     # a rejected call records nothing


# -- serialization -------------------------------------------------------------------------------

def full_map() -> QuantizationConfigurationMap:
    qmap = QuantizationConfigurationMap("int16x8")
    qmap.set_config("conv1", LayerConfiguration(weight_config=W4, activation_config=None))
    qmap.set_config("encoder/.*/attention", op_type="matmul", config={"b": W4B, "return": None})
    qmap.set_config("head", None)
    qmap.set_config(FakeLayer("proj", path="model/proj"), op_type="matmul", config=None)
    qmap.set_tensor_config("x", A8P)
    qmap.set_tensor_config("merge/values:0", None)
    return qmap


def test_json_round_trip(module):
    qmap = full_map()
    text = qmap.to_json()
    back = QuantizationConfigurationMap.from_json(text)
    assert back == qmap and back.to_json() == text
    assert back.resolve(module).table() == qmap.resolve(module).table()
    assert QuantizationConfigurationMap.from_dict(qmap.to_dict()) == qmap
    assert json.loads(text)["scheme"] == "int16x8"
    # An unregistered scheme travels in full.
    custom = dataclasses.replace(schemes.get("int8"), name="unregistered", io="int8")
    qmap = QuantizationConfigurationMap(custom).set_config("head", None)
    data = qmap.to_dict()
    assert data["scheme"]["name"] == "unregistered"
    back = QuantizationConfigurationMap.from_dict(data)
    assert back.scheme == custom and back == qmap


def test_bad_json_lists_every_problem():
    with pytest.raises(ConfigError, match="invalid quantization config JSON"):
        QuantizationConfigurationMap.from_json("{not json")
    bad = {"scheme": "int7", "extra": 1, "calls": [
        {"method": "set_config", "key": "a", "config": {"weight_config": {"bits": 3}}},
        {"method": "set_layer", "key": "b", "config": None},
        {"method": "set_config", "key": "c", "op_type": "conv2d", "config": {"kernel": None}},
        {"method": "set_tensor_config", "key": "x", "config": {"bits": 8, "sym": True},
         "colour": "red"},
    ]}
    with pytest.raises(ConfigError) as e:
        QuantizationConfigurationMap.from_json(json.dumps(bad))
    msg = str(e.value)
    for part in ("'int7'", "unknown field 'extra'", "calls[0].config.weight_config: bits",
                 "calls[1].method", "calls[2].config: conv2d has no operand 'kernel'",
                 "calls[3]: unknown field 'colour'", "calls[3].config: unknown field 'sym'"):
        assert part in msg, part
    assert len(e.value.diagnostics) == 7


# -- property: any sequence of calls round-trips through JSON -------------------------------------

_QCS = st.builds(
    QC, bits=st.sampled_from([4, 8, 16]), symmetric=st.booleans(),
    granularity=st.sampled_from(["per_tensor", "per_channel"]),
    narrow_range=st.sampled_from([None, True, False]),
    calibration=st.sampled_from(["minmax", "moving_average", "percentile", "mse"]),
    percentile=st.sampled_from([99.0, 99.99])) | st.just(W4B)
_MAYBE_QC = st.none() | _QCS
_LAYER_KEYS = ["conv1", "conv10", "encoder", "encoder/0/attention", "encoder/.*/attention",
               "head", ".*", "enc.*/norm", "merge", FakeLayer("conv1", path="m/conv1")]
_OP_KEYS = [("encoder/.*/attention", "matmul"), ("head", "matmul"), ("head", "softmax"),
            ("encoder", "layer_norm"), ("conv.*", "conv2d"), ("embed", "gather"),
            (".*", "concat")]
_TENSOR_KEYS = ["x", "c1", "conv1/filter", "head/return", "encoder/.*/return", "table",
                "merge/values:1", "scores", ".*/bias"]


@st.composite
def _op_call(draw):
    key, op = draw(st.sampled_from(_OP_KEYS))
    if draw(st.booleans()):
        return ("set_config", key, None, op)
    roles = C._operand_names(op) + ["return"]
    chosen = draw(st.lists(st.sampled_from(roles), unique=True, max_size=len(roles)))
    return ("set_config", key, {r: draw(_MAYBE_QC) for r in chosen}, op)


_CALLS = st.lists(st.one_of(
    st.tuples(st.just("set_config"), st.sampled_from(_LAYER_KEYS),
              st.none() | st.builds(LayerConfiguration, _MAYBE_QC, _MAYBE_QC), st.none()),
    _op_call(),
    st.tuples(st.just("set_tensor_config"), st.sampled_from(_TENSOR_KEYS), _MAYBE_QC,
              st.none())), max_size=8)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scheme=st.sampled_from(["int8", "int16x8", "dynamic-int8", "fp16", "int4-weight"]),
       calls=_CALLS)
def test_property_json_round_trip_same_table(scheme, calls):
    module = _MODULE
    qmap = QuantizationConfigurationMap(scheme)
    for method, key, cfg, op in calls:
        if method == "set_config":
            qmap.set_config(key, cfg, op_type=op)
        else:
            qmap.set_tensor_config(key, cfg)
    back = QuantizationConfigurationMap.from_json(qmap.to_json())
    assert back == qmap
    table = qmap.resolve(module).table()
    assert back.resolve(module).table() == table
    assert "source" in table.splitlines()[0]


_MODULE = build_module()
