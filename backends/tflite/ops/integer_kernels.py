"""Which TFLite integer kernel (int8, int16x8) runs each IR op in the integer form and what it
requires of the params: `_check_quantized` raises `Unsupported` naming every requirement a
node misses, `_guarded` runs it before a lowering (the package wraps every entry of its table).
"""

from __future__ import annotations

import math

from ....ir.quantized import is_quantized
from ....ir.types import DType, QuantParams
from .common import QACT, Unsupported


# Which TFLite integer kernel (int8, int16x8) runs each IR op in the integer form, and what it
# requires of the params. The integer form means "dequantize, float kernel, requantize to the
# result's params" (ir/quantized.py); TFLite's kernels match that only where:
#   SAME:    the kernel moves, compares or averages raw codes (no rescaling), so every
#            quantized operand and result must share one set of params;
#   RESCALE: the kernel requantizes (own multiplier per operand/result), any params;
#   FIXED:   the kernel's output params are fixed (LUT/fixed-point ranges);
#   WEIGHTS: conv/depthwise/matmul, checked by `_weight_mode` (weights.py: integer or hybrid).
# Ops not listed have no integer lowering here.

SAME = frozenset({"identity", "reshape", "transpose", "concat", "split", "slice",
                  "strided_slice", "pad", "gather", "broadcast_to", "squeeze", "expand_dims",
                  "tile", "max_pool2d", "avg_pool2d", "resize", "reduce_max", "reduce_min",
                  "maximum", "minimum", "dynamic_reshape", "dynamic_broadcast_to",
                  "dynamic_tile", "dynamic_slice", "dynamic_strided_slice"})
RESCALE = frozenset({"add", "sub", "mul", "relu", "relu6", "hard_swish", "leaky_relu",
                     "reduce_mean", "reduce_sum"})
# (scale, zero point) of the result, per activation dtype (softmax/logistic: [0, 1) in
# 1/256 steps from -128; tanh: [-1, 1) in 1/128 steps; int16: Q0.15).
FIXED = {
    "softmax": {DType.i8: (1 / 256, -128), DType.i16: (1 / 32768, 0)},
    "sigmoid": {DType.i8: (1 / 256, -128), DType.i16: (1 / 32768, 0)},
    "tanh": {DType.i8: (1 / 128, 0), DType.i16: (1 / 32768, 0)},
}
WEIGHTS = frozenset({"conv2d", "depthwise_conv2d", "conv2d_transpose", "matmul"})
_SELF_QUANT = frozenset({"quantize", "dequantize", "fake_quant"})


def _describe(qp: QuantParams) -> str:
    if qp.axis is not None:
        return f"per-axis (axis {qp.axis})"
    return f"scale {qp.scale[0]:.6g} zp {qp.zero_point[0]}"


def _check_quantized(node) -> None:
    """Raises Unsupported (every problem at once) unless TFLite has an integer kernel for this
    node's quantized operands and results with the params they carry."""
    vals = list(node.inputs) + list(node.outputs)
    quantized = [v for v in vals if is_quantized(v)]
    if not quantized or node.op in _SELF_QUANT or node.op in WEIGHTS:
        return
    op = node.op
    if op not in SAME and op not in RESCALE and op not in FIXED:
        raise Unsupported(f"'{op}' has no TFLite integer (int8/int16) lowering here; keep it "
                          f"float (dequantize its operands, quantize its result)")
    problems = []
    dts = sorted({v.type.dtype.value for v in quantized})
    if len(dts) > 1 or quantized[0].type.dtype not in QACT:
        problems.append(f"TFLite integer kernels take int8 or int16 activations of one "
                        f"dtype, got {', '.join(dts)}")
    dt = quantized[0].type.dtype
    floats = [v for v in vals if v.type.dtype.is_float]
    if floats:
        problems.append(f"mixes float and quantized tensors ({floats[0].type}); only conv2d, "
                        f"depthwise_conv2d and matmul have hybrid TFLite kernels")
    for v in quantized:
        if v.quant.axis is not None and v.const is None:
            problems.append("activations must be quantized per tensor, not per axis")
            break
    if dt == DType.i16 and any(z for v in quantized for z in v.quant.zero_point):
        problems.append("int16 activations must be symmetric (zero point 0)")
    if op in SAME:
        params = {(v.quant.scale, v.quant.zero_point, v.quant.axis) for v in quantized}
        if len(params) > 1:
            got = ", ".join(sorted({_describe(v.quant) for v in quantized}))
            problems.append(f"TFLite's integer kernel for '{op}' works on raw codes: its "
                            f"quantized operands and result must have the same quantization "
                            f"params (got {got}); requantize with `quantize` first")
    elif op in FIXED:
        want = FIXED[op].get(dt)
        for v in node.outputs:
            qp = v.quant
            if want and qp is not None and (qp.zero_point[0] != want[1] or
                                            not math.isclose(qp.scale[0], want[0],
                                                             rel_tol=1e-6)):
                problems.append(f"TFLite's {dt} '{op}' kernel has fixed output params: scale "
                                f"{want[0]:.6g} zero point {want[1]} (got {_describe(qp)})")
    if problems:
        raise Unsupported("; ".join(problems))


def _guarded(lower):
    """`lower` preceded by `_check_quantized` (keeps its docstring)."""
    def run(e, node):
        _check_quantized(node)
        lower(e, node)
    run.__doc__ = lower.__doc__
    return run
