"""Integer lowering: QDQ form -> integer form (`ir/quantized.py`).

A node whose float operands all come from `dequantize` (its bias may also be a float constant)
and whose every result goes only to `quantize` nodes that agree on params becomes the same op
on the quantized values: exactly what TFLite's integer kernels compute. Float biases of
conv/matmul turn into int32 (int64 for 16-bit activations) codes with
scale = input scale x weight scale and zero point 0, as the int8 spec requires.

Before that, data-movement ops (pooling, reshape, ...) between quantized tensors inherit their
input's params (their int8 kernels require equal params anyway), so QAT graphs that only
fake-quantize layer outputs still lower end to end. Afterwards `quantize(dequantize(q))`
becomes a requantization of q, or nothing when the params agree.

With `hybrid`, conv/matmul nodes with a float activation and a dequantized int8 constant
weight read the integer weight directly (TFLite's dynamic-range kernels). With `io="int8"`,
graph inputs and outputs become the quantized tensors themselves (TFLiteConverter's
inference_input_type / inference_output_type = tf.int8).
"""

from __future__ import annotations

import numpy as np

from ...ir.graph import Graph, Module, Node, Value
from ...ir.quantized import BOUNDARY_OPS, is_quantized, quantize_array
from ...ir.types import DType, QuantParams
from ..base import Option, Pass, register_pass
from ..canonicalize.cleanup import eliminate_dead_code
from .insert import SAME_PARAMS_OPS, attrs_params, params_attrs
from .params import FIXED_OUTPUT, bias_params, storage_dtype

# IR ops TFLite runs on int8 (and, for most, int16) tensors.
INTEGER_OPS = frozenset({
    "conv2d", "depthwise_conv2d", "conv2d_transpose", "matmul", "add", "sub", "mul",
    "max_pool2d", "avg_pool2d", "concat", "reshape", "transpose", "squeeze", "expand_dims",
    "slice", "strided_slice", "pad", "softmax", "sigmoid", "tanh", "relu", "relu6",
    "hard_swish", "leaky_relu", "reduce_mean", "resize", "split", "gather", "maximum",
    "minimum", "identity", "dynamic_reshape", "dynamic_broadcast_to", "dynamic_tile",
    "dynamic_slice", "dynamic_strided_slice",
})
HYBRID_OPS = frozenset({"conv2d", "depthwise_conv2d", "matmul"})
# Ops whose result lies within their input's range, so it can take the input's params with
# no loss: data movement (whose int8 kernels require equal params anyway), plus relu/relu6
# (a model may fake-quantize before its activation, as Flax code often does).
PROPAGATING_OPS = (SAME_PARAMS_OPS - {"concat"}) | {"relu", "relu6"}
BIAS_OPS = frozenset({"conv2d", "depthwise_conv2d", "conv2d_transpose", "matmul"})


def _q_params(node: Node) -> QuantParams:
    """Params of a quantize node's result (or a dequantize node's operand)."""
    if node.op == "quantize":
        return attrs_params(node.attrs, node.attrs["dtype"])
    return attrs_params(node.attrs, node.inputs[0].type.dtype)


def _normalize(graph: Graph) -> None:
    """Attach params to the integer values of QDQ boundaries (frontends may leave them off)
    and store quantized constants as codes (quantize of a constant is folded)."""
    for node in list(graph):
        if node.op == "quantize" and node.output.quant is None:
            node.output.quant = _q_params(node)
        elif node.op == "dequantize" and node.inputs[0].quant is None:
            node.inputs[0].quant = _q_params(node)
        if node.op == "quantize" and node.inputs[0].const is not None \
                and not is_quantized(node.inputs[0]):
            qp = node.output.quant
            codes = graph.constant(quantize_array(np.asarray(node.inputs[0].const), qp,
                                                  node.attrs["dtype"]),
                                   before=node, scope=node.scope, loc=node.loc)
            codes.quant = qp
            graph.replace_node(node, [codes])


def _dq_source(v: Value) -> Value | None:
    """The quantized value a float operand dequantizes, or None."""
    p = v.producer
    if p is not None and p.op == "dequantize" and is_quantized(p.inputs[0]):
        return p.inputs[0]
    return None


def _result_quantizes(out: Value) -> list[Node] | None:
    """The quantize nodes that are the only uses of `out`, when they all agree; else None."""
    users = []
    for user, _ in out.uses:
        if not isinstance(user, Node) or user.op != "quantize":
            return None
        users.append(user)
    if not users:
        return None
    first = users[0]
    key = lambda n: (n.attrs["dtype"], tuple(n.attrs["scale"]),  # noqa: E731
                     tuple(n.attrs["zero_point"]), n.attrs["axis"], n.attrs["narrow_range"])
    if any(key(u) != key(first) for u in users[1:]) or first.attrs["axis"] is not None:
        return None
    return users


def _propagate_data_movement(graph: Graph) -> None:
    """Gives a data-movement or relu node reading a quantized tensor a QDQ pair on its result
    with its input's params (pooling, reshape, ... keep the params in TFLite's int8 kernels;
    relu's result lies within its input's range)."""
    for node in list(graph):
        if node.op not in PROPAGATING_OPS or len(node.outputs) != 1:
            continue
        src = _dq_source(node.inputs[0])
        out = node.output
        if src is None or not out.type.dtype.is_float or _result_quantizes(out) is not None:
            continue
        if any(v.type.dtype.is_float and _dq_source(v) is None for v in node.inputs[1:]):
            continue
        qp = src.quant
        if qp.axis is not None:
            continue
        uses = list(out.uses)
        if not uses:
            continue
        anchor = node.next
        q = graph.add("quantize", [out], params_attrs(qp, src.type.dtype,
                                                      narrow=qp.narrow_range),
                      scope=node.scope, loc=node.loc, before=anchor)
        q.output.quant = qp
        dq = graph.add("dequantize", [q.output], params_attrs(qp) | {"dtype": out.type.dtype},
                       scope=node.scope, loc=node.loc, before=anchor)
        for user, i in uses:
            if isinstance(user, Node):
                user.set_input(i, dq.output)
            else:
                del out.uses[(user, i)]
                user.outputs[i] = dq.output
                dq.output.uses[(user, i)] = None


def _quantized_bias(graph: Graph, node: Node, inputs: list[Value]) -> Value | None:
    """int32/int64 codes for a float constant bias, or None when it cannot be quantized."""
    bias = node.inputs[2]
    x, w = inputs[0], inputs[1]
    if bias.const is None or not (is_quantized(x) and is_quantized(w)):
        return None
    bits = 64 if x.type.dtype == DType.i16 else 32
    channels = bias.type.shape[0]
    try:
        qp = bias_params(x.quant, w.quant, bits=bits, channels=channels)
    except ValueError:
        return None
    codes = graph.constant(quantize_array(np.asarray(bias.const, np.float32), qp,
                                          storage_dtype(bits)),
                           before=node, scope=node.scope, loc=node.loc)
    codes.quant = qp
    return codes


def _lower_node(graph: Graph, node: Node, ops: frozenset) -> bool:
    if node.op in BOUNDARY_OPS or node.op not in ops:
        return False
    quantizes = [_result_quantizes(out) for out in node.outputs]
    if not node.outputs or any(q is None for q in quantizes):
        return False
    inputs, has_quantized = [], False
    for i, v in enumerate(node.inputs):
        src = _dq_source(v) if v.type.dtype.is_float else None
        if src is not None:
            inputs.append(src)
            has_quantized = True
        elif v.type.dtype.is_float and not (node.op in BIAS_OPS and i == 2):
            return False
        else:
            inputs.append(v)
    if not has_quantized:
        return False
    if node.op in BIAS_OPS and len(node.inputs) > 2 and inputs[2].type.dtype.is_float:
        bias = _quantized_bias(graph, node, inputs)
        if bias is None:
            return False
        inputs[2] = bias
    types = [qs[0].output.type for qs in quantizes]
    # The integer node keeps the float node's value names: diagnostics and tensor names
    # still say which layer it is.
    new = graph.add(node.op, inputs, dict(node.attrs), types=types, scope=node.scope,
                    loc=node.loc, before=node, names=[o.name for o in node.outputs])
    for out, qs in zip(new.outputs, quantizes):
        want = qs[0].output.quant
        fixed = FIXED_OUTPUT.get(node.op, {}).get(want.bits)
        result = out
        if fixed is not None and (want.scale[0], want.zero_point[0]) != fixed:
            # The integer kernel has fixed output params (a QAT model learned others):
            # compute with those, then requantize to the learned ones.
            out.quant = QuantParams((fixed[0],), (fixed[1],), None, want.bits, True, False)
            req = graph.add("quantize", [out], params_attrs(want, out.type.dtype,
                                                             narrow=want.narrow_range),
                            scope=node.scope, loc=node.loc, before=node)
            req.output.quant = want
            result = req.output
        else:
            out.quant = want
        for q in qs:
            graph.replace_node(q, [result])
    graph.erase(node)  # its results were read only by the quantize nodes just replaced
    return True


def _lower_hybrid(graph: Graph, node: Node) -> bool:
    if node.op not in HYBRID_OPS or len(node.inputs) < 2:
        return False
    x, w = node.inputs[0], node.inputs[1]
    src = _dq_source(w)
    if (src is None or src.const is None or src.type.dtype != DType.i8
            or not x.type.dtype.is_float or _dq_source(x) is not None):
        return False
    node.set_input(1, src)
    return True


def _fold_requantize(graph: Graph) -> None:
    """quantize(dequantize(q)): q itself when the params agree, else a requantization."""
    for node in list(graph):
        if node.op != "quantize":
            continue
        src = _dq_source(node.inputs[0])
        if src is None:
            continue
        if src.type.dtype == node.attrs["dtype"] and src.quant == node.output.quant:
            graph.replace_node(node, [src])
        else:
            node.set_input(0, src)


def _int_io(module: Module) -> None:
    """Graph inputs read only by one set of quantize params become quantized inputs; outputs
    produced by dequantize become the quantized values."""
    graph = module.main
    for v in graph.inputs:
        users = [u for u, _ in v.uses]
        if not users or not all(isinstance(u, Node) and u.op == "quantize" for u in users):
            continue
        first = users[0]
        if any(u.output.quant != first.output.quant or u.attrs["dtype"] != first.attrs["dtype"]
               for u in users):
            continue
        v.type = v.type.with_dtype(first.attrs["dtype"])
        v.quant = first.output.quant
        for u in users:
            graph.replace_node(u, [v])
    outs = list(graph.outputs)
    for i, v in enumerate(outs):
        src = _dq_source(v)
        if src is not None:
            outs[i] = src
    graph.set_outputs(outs)


def lower_quantized(module: Module, *, hybrid: bool = False, io: str = "float",
                    ops: frozenset = INTEGER_OPS) -> int:
    """Rewrites module.main from QDQ form into integer form in place; returns the number of
    nodes that now compute on quantized tensors."""
    if io not in ("float", "int8"):
        raise ValueError(f"io must be 'float' or 'int8', got {io!r}")
    graph = module.main
    _normalize(graph)
    _propagate_data_movement(graph)
    count = 0
    for node in list(graph):
        if node.graph is None:
            continue
        if _lower_node(graph, node, ops) or (hybrid and _lower_hybrid(graph, node)):
            count += 1
    _fold_requantize(graph)
    eliminate_dead_code(graph)
    if io == "int8":
        _int_io(module)
        eliminate_dead_code(graph)
    return count


@register_pass("lower-quantized")
class LowerQuantized(Pass):
    """Rewrites quantize/dequantize (QDQ) form into integer ops on quantized tensors; `hybrid`
    lets conv/matmul read int8 constant weights with float activations (dynamic range);
    `io=int8` makes the model's inputs and outputs quantized tensors."""

    options = {
        "hybrid": Option(bool, False, "dynamic-range ops: int8 weights, float activations"),
        "io": Option(str, "float", "model input/output type: float or int8",
                     choices=("float", "int8")),
    }

    def run(self, module, ctx):
        return lower_quantized(module, hybrid=self.option("hybrid"), io=self.option("io")) > 0
