"""Elementwise TF ops: activations, unary math, binary arithmetic and comparisons, casts and
BiasAdd. Ops the IR has no name for are decomposed (Selu, Erfc, Softsign, ...)."""

from __future__ import annotations

import numpy as np

from ... import decompose
from ..context import Const, LiftError, ir_dtype
from . import spectral
from .common import node_attr


def _scalar_like(ctx, x, value):
    """A constant scalar of x's dtype (for decompositions such as 1 - erf(x))."""
    return Const(np.asarray(value, dtype=ctx.type(x).dtype.np), ctx.node)


def _unary(ir_op, **attrs):
    def lower(ctx, node, ins):
        return ctx.emit(ir_op, ins[:1], dict(attrs))
    return lower


def _binary(ir_op):
    def lower(ctx, node, ins):
        return ctx.emit(ir_op, ins[:2])
    return lower


def _leaky_relu(ctx, node, ins):
    return ctx.emit("leaky_relu", ins, {"alpha": float(node_attr(node, "alpha", 0.2))})


def _selu(ctx, node, ins):
    # selu(x) = scale * elu_alpha(x) (Klambauer et al.), with TF's constants.
    y = ctx.emit1("elu", ins, {"alpha": 1.6732632423543772848170429916717})
    return ctx.emit("mul", [y, _scalar_like(ctx, y, 1.0507009873554804934193349852946)])


def _erfc(ctx, node, ins):
    (x,) = ins
    return ctx.emit("sub", [_scalar_like(ctx, x, 1.0), ctx.emit1("erf", [x])])


def _square(ctx, node, ins):
    return ctx.emit("mul", [ins[0], ins[0]])


def _reciprocal(ctx, node, ins):
    return ctx.emit("div", [_scalar_like(ctx, ins[0], 1.0), ins[0]])


def _squared_difference(ctx, node, ins):
    d = ctx.emit1("sub", ins)
    return ctx.emit("mul", [d, d])


def _softsign(ctx, node, ins):
    (x,) = ins
    denom = ctx.emit1("add", [_scalar_like(ctx, x, 1.0), ctx.emit1("abs", [x])])
    return ctx.emit("div", [x, denom])


def _floor_div(ctx, node, ins):
    if not ctx.type(ins[0]).dtype.is_float:
        return ctx.emit("floor_div", ins)
    return ctx.emit("floor", [ctx.emit1("div", ins)])


def _add_n(ctx, node, ins):
    acc = ins[0]
    for x in ins[1:]:
        acc = ctx.emit1("add", [acc, x])
    return [acc]


def _one_hot(ctx, node, ins):
    """OneHot(indices, depth, on, off): indices == position along the new axis, then a
    where between on and off (MoE routers one-hot their top-k experts)."""
    indices, depth_e, on, off = ins
    depth = int(np.asarray(ctx.static(depth_e, "OneHot depth")).ravel()[0])
    rank = ctx.type(indices).rank
    axis = int(node_attr(node, "axis", -1))
    axis = rank if axis == -1 else axis
    dt = ctx.type(indices).dtype.np
    positions = Const(np.arange(depth, dtype=dt).reshape([depth] + [1] * (rank - axis)), node)
    hit = ctx.emit1("equal", [ctx.emit1("expand_dims", [indices], {"axis": axis}), positions])
    return ctx.emit("where", [hit, on, off])


def _select(ctx, node, ins):
    return ctx.emit("where", ins)


def _clip(ctx, node, ins):
    x, lo, hi = ins
    lo_c, hi_c = ctx.const(lo), ctx.const(hi)
    if lo_c is not None and hi_c is not None and lo_c.size == 1 and hi_c.size == 1:
        return ctx.emit("clip", [x], {"min": float(lo_c.ravel()[0]),
                                      "max": float(hi_c.ravel()[0])})
    return ctx.emit("minimum", [ctx.emit1("maximum", [x, lo]), hi])


_COMPLEX_DTYPES = (8, 18)      # TF's complex64, complex128


def _cast(ctx, node, ins):
    if node.attr["DstT"].type in _COMPLEX_DTYPES:
        return [spectral.to_complex(ctx, node, ins[0])]
    to = ir_dtype(node.attr["DstT"].type, "Cast target")
    if ctx.type(ins[0]).dtype == to:
        return ins[:1]
    return ctx.emit("cast", ins[:1], {"to": to})


def _bias_add(ctx, node, ins):
    x, b = ins
    if node_attr(node, "data_format", "NHWC") == "NCHW":
        rank = ctx.type(x).rank
        b = ctx.emit1("reshape", [b], {"shape": [-1] + [1] * (rank - 2)})
    return ctx.emit("add", [x, b])


def builder(ctx, node) -> decompose.Builder:
    """The shared decompositions' (`frontends/decompose.py`) view of this lifter."""
    return decompose.Builder(ctx.emit1, lambda value, like: _scalar_like(ctx, like, value),
                             lambda array: Const(np.asarray(array), node), ctx.sym_shape)


def _decomposed(name):
    def lower(ctx, node, ins):
        return [decompose.UNARY[name](builder(ctx, node), ins[0])]
    return lower


def _div_no_nan(ctx, node, ins):
    """x / y, and 0 where y is 0 (NaN and inf included)."""
    x, y = ins
    zero = _scalar_like(ctx, y, 0.0)
    return ctx.emit("where", [ctx.emit1("equal", [y, zero]), _scalar_like(ctx, x, 0.0),
                              ctx.emit1("div", [x, y])])


# TF's quantized dtypes (qint8, quint8, qint32, qint16, quint16) -> the NumPy dtype of codes.
_QUANTIZED_TF_DTYPES = {11: np.int8, 12: np.uint8, 13: np.int32, 15: np.int16, 16: np.uint16}


def _bitcast(ctx, node, ins):
    qtype = _QUANTIZED_TF_DTYPES.get(node.attr["type"].type)
    if qtype is not None:
        # Integer codes viewed as a quantized dtype, only to feed UniformDequantize (which
        # takes qint8/qint32): the codes stay the same constant (see `quant.py`).
        c = ctx.const(ins[0])
        if c is None or np.asarray(c).dtype.itemsize != np.dtype(qtype).itemsize:
            raise LiftError("Bitcast to a quantized dtype is supported only for constant "
                            "integer codes of the same width (weights for UniformDequantize)")
        return [Const(np.asarray(c).view(qtype), node,
                      ins[0].name if isinstance(ins[0], Const) else None)]
    to = ir_dtype(node.attr["type"].type, "Bitcast target")
    if np.dtype(ctx.type(ins[0]).dtype.np).itemsize != np.dtype(to.np).itemsize:
        raise LiftError("Bitcast between types of different widths (it changes the shape)")
    return ctx.emit("bitcast", ins[:1], {"to": to})


TABLE = {
    "Atan": _decomposed("atan"), "Asin": _decomposed("asin"), "Acos": _decomposed("acos"),
    "Tan": _decomposed("tan"), "Sinh": _decomposed("sinh"), "Cosh": _decomposed("cosh"),
    "Asinh": _decomposed("asinh"), "Acosh": _decomposed("acosh"),
    "Atanh": _decomposed("atanh"), "Log1p": _decomposed("log1p"),
    "Expm1": _decomposed("expm1"), "IsNan": _decomposed("isnan"),
    "IsInf": _decomposed("isinf"), "IsFinite": _decomposed("isfinite"),
    "BesselI0": _decomposed("bessel_i0"), "BesselI0e": _decomposed("bessel_i0e"),
    "BesselI1": _decomposed("bessel_i1"), "BesselI1e": _decomposed("bessel_i1e"),
    "Atan2": _binary("atan2"),
    "Erfinv": _unary("erf_inv"), "DivNoNan": _div_no_nan, "Bitcast": _bitcast,
    "BitwiseAnd": _binary("bitwise_and"), "BitwiseOr": _binary("bitwise_or"),
    "BitwiseXor": _binary("bitwise_xor"), "Invert": _unary("bitwise_not"),
    "LeftShift": _binary("left_shift"), "RightShift": _binary("right_shift"),
    "Relu": _unary("relu"), "Relu6": _unary("relu6"), "Sigmoid": _unary("sigmoid"),
    "Tanh": _unary("tanh"), "Sin": _unary("sin"), "Cos": _unary("cos"),
    "Exp": _unary("exp"), "Log": _unary("log"), "Sqrt": _unary("sqrt"),
    "Rsqrt": _unary("rsqrt"), "Neg": _unary("neg"), "Abs": _unary("abs"), "Erf": _unary("erf"),
    "Floor": _unary("floor"), "Ceil": _unary("ceil"), "Round": _unary("round"),
    "Sign": _unary("sign"), "Softplus": _unary("softplus"), "LogicalNot": _unary("logical_not"),
    "Elu": _unary("elu"), "Selu": _selu, "LeakyRelu": _leaky_relu, "Erfc": _erfc,
    "Square": _square, "Reciprocal": _reciprocal, "Inv": _reciprocal, "Softsign": _softsign,
    "AddV2": _binary("add"), "Add": _binary("add"), "Sub": _binary("sub"),
    "Mul": _binary("mul"), "RealDiv": _binary("div"), "Div": _binary("div"),
    "Maximum": _binary("maximum"), "Minimum": _binary("minimum"), "Pow": _binary("pow"),
    "Less": _binary("less"), "LessEqual": _binary("less_equal"),
    "Greater": _binary("greater"), "GreaterEqual": _binary("greater_equal"),
    "Equal": _binary("equal"), "NotEqual": _binary("not_equal"),
    "LogicalAnd": _binary("logical_and"), "LogicalOr": _binary("logical_or"),
    "SquaredDifference": _squared_difference, "FloorDiv": _floor_div, "AddN": _add_n,
    "FloorMod": lambda ctx, node, ins: ctx.emit("floor_mod", ins),
    "OneHot": _one_hot,
    "BiasAdd": _bias_add, "BiasAddV1": _bias_add, "Select": _select, "SelectV2": _select,
    "ClipByValue": _clip, "Cast": _cast,
}
