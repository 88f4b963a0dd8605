"""Lowerings of the elementwise IR ops: unary and binary builtins (ADD/SUB/MUL with a relu user
fused), identity, where, cast, clip, and the ops TFLite has no builtin for, decomposed
(hard_sigmoid, softplus, elu with alpha != 1, erf, erf_inv, is_finite).
"""

from __future__ import annotations

import math

import numpy as np
from ai_edge_litert import schema_py_generated as fb

from ....ir.ops.elementwise import ERF_INV_CENTRAL, ERF_INV_TAIL
from ....ir.quantized import is_quantized
from ....ir.types import DType
from .common import (BOOL, F32, FUSED, NUM, TFL_TYPES, Unsupported, _need, _param, _scalar,
                     _static, copy_into, emit)
from .weights import _expanded_by_users


def _unary(code, allowed, options=None):
    def lower(e, node):
        x = node.inputs[0]
        _need(node, x, allowed, code)
        emit(e, code, [e.t(x)], out=e.out(node.output),
             options=options(node.attrs) if options else None)
    return lower


def _lower_abs_sign(code):
    """ABS / SIGN; their kernels stop at int32, so int64 (DeBERTa's relative positions) is
    composed from comparisons: abs = x < 0 ? -x : x, sign = (x > 0) - (x < 0)."""
    plain = _unary(code, {DType.f32, DType.i32})

    def lower(e, node):
        x = node.inputs[0]
        if x.type.dtype != DType.i64:
            return plain(e, node)
        zero = _scalar(e, 0, DType.i64, "zero")
        neg = emit(e, "LESS", [e.t(x), zero], dtype=DType.bool)
        if code == "ABS":
            minus = emit(e, "NEG", [e.t(x)])
            emit(e, "SELECT_V2", [neg, minus, e.t(x)], out=e.out(node.output))
            return
        pos = emit(e, "GREATER", [e.t(x), zero], dtype=DType.bool)
        as_int = lambda b: emit(e, "CAST", [b], dtype=DType.i64, options=fb.CastOptionsT(  # noqa: E731
            inDataType=TFL_TYPES[DType.bool], outDataType=TFL_TYPES[DType.i64]))
        emit(e, "SUB", [as_int(pos), as_int(neg)], out=e.out(node.output),
             options=fb.SubOptionsT())
    return lower


def _binary(code, allowed, options=None):
    def lower(e, node):
        a, b = node.inputs
        _need(node, a, allowed, code)
        opts = options() if options else None
        if is_quantized(a) and a.type.dtype == DType.i16 and hasattr(opts, "potScaleInt16"):
            # The schema defaults to power-of-two int16 scales; ours are general (ADD v3,
            # SUB v5 in op_version.cc).
            opts.potScaleInt16 = False
        out = node.output
        act = _sole_relu_user(node) if hasattr(opts, "fusedActivationFunction") else None
        if act is not None:
            # ADD/SUB/MUL + relu: one operator with the activation fused (what
            # TFLiteConverter emits); for int8 the result is written straight with the relu's
            # params, one requantization instead of two (ResNet's residual adds).
            opts.fusedActivationFunction = FUSED[act.op]
            e.skip(act)
            out = act.output
        emit(e, code, [e.t(a), e.t(b)], out=e.out(out), options=opts)
    return lower


def _lower_atan2(e, node):
    """ATAN2 does not broadcast: an operand smaller than the result is broadcast to it first
    (to a static shape, or to the run-time shape of the operand that has the result's)."""
    out = node.output
    _need(node, node.inputs[0], F32, "ATAN2")
    shape = tuple(out.type.shape)
    ins = []
    for v, other in (node.inputs, node.inputs[::-1]):
        t = e.t(v)
        if tuple(v.type.shape) != shape:
            if _static(shape):
                target = _param(e, list(shape), "atan2_shape")
            elif tuple(other.type.shape) == shape:
                target = emit(e, "SHAPE", [e.t(other)], dtype=DType.i32, shape=(len(shape),),
                              options=fb.ShapeOptionsT(outType=fb.TensorType.INT32),
                              name="atan2_shape")
            else:
                raise Unsupported("ATAN2 does not broadcast, and neither operand has the "
                                  "result's run-time shape")
            t = emit(e, "BROADCAST_TO", [t, target], shape=shape, name="atan2_operand")
        ins.append(t)
    emit(e, "ATAN2", ins, out=e.out(out))


_BIT_TYPES = frozenset({DType.i8, DType.i16, DType.i32, DType.u8})


def _lower_bitcast(e, node):
    emit(e, "BITCAST", [e.t(node.inputs[0])], out=e.out(node.output))


def _lower_bitwise_not(e, node):
    """~x as x ^ -1 (TFLite has BITWISE_XOR but no NOT)."""
    x = node.inputs[0]
    _need(node, x, _BIT_TYPES, "BITWISE_XOR")
    ones = _scalar(e, -1, x.type.dtype, "all_ones")
    emit(e, "BITWISE_XOR", [e.t(x), ones], out=e.out(node.output))


def _sole_relu_user(node):
    """The relu/relu6 node that is the only use of `node`'s result, when their types let
    TFLite fuse it into `node`'s operator; else None."""
    out = node.output
    if len(out.uses) != 1:
        return None
    (user, _), = out.uses
    if getattr(user, "op", None) not in ("relu", "relu6"):
        return None
    if user.output.type.dtype != out.type.dtype or is_quantized(user.output) != is_quantized(out):
        return None
    return user


def _lower_identity(e, node):
    # No operator: the result is the operand's tensor. (A graph output that ends up aliasing a
    # graph input or a constant gets a real copy from the writer.)
    e.alias(node.output, e.t(node.inputs[0]))


def _lower_where(e, node):
    c, a, b = node.inputs
    _need(node, a, NUM | BOOL | {DType.i8, DType.u8, DType.i16}, "SELECT_V2")
    emit(e, "SELECT_V2", [e.t(c), e.t(a), e.t(b)], out=e.out(node.output))


def _lower_cast(e, node):
    x, to = node.inputs[0], node.attrs["to"]
    if x.type.dtype == DType.f16 and to == DType.f32 and _expanded_by_users(node):
        return  # a float16-stored weight: its users expand it (_stored_weight)
    opts = fb.CastOptionsT(inDataType=TFL_TYPES.get(x.type.dtype, 0),
                           outDataType=TFL_TYPES.get(to, 0))
    emit(e, "CAST", [e.t(x)], out=e.out(node.output), options=opts)


def _lower_clip(e, node):
    x = node.inputs[0]
    lo, hi = float(node.attrs["min"]), float(node.attrs["max"])
    dt = x.type.dtype
    _need(node, x, NUM)
    out = e.out(node.output)
    if dt == DType.f32:
        # Bounds TFLite has a dedicated (and delegate-friendly) activation op for.
        special = {(0.0, 6.0): "RELU6", (-1.0, 1.0): "RELU_N1_TO_1", (0.0, math.inf): "RELU"}
        if (lo, hi) in special:
            emit(e, special[(lo, hi)], [e.t(x)], out=out)
            return
    elif not all(math.isinf(v) or v == int(v) for v in (lo, hi)):
        raise Unsupported(f"clip of {dt} with fractional bounds ({lo}, {hi})")
    cur = e.t(x)
    steps = []
    if lo > -math.inf:
        steps.append(("MAXIMUM", lo))
    if hi < math.inf:
        steps.append(("MINIMUM", hi))
    if not steps:
        copy_into(e, cur, out)
        return
    for i, (code, bound) in enumerate(steps):
        last = i == len(steps) - 1
        cur = emit(e, code, [cur, _scalar(e, bound, dt, code.lower())], out=out if last else None)


def _lower_hard_sigmoid(e, node):
    # relu6(x + 3) / 6: one ADD with a fused RELU6, then one MUL.
    x = node.inputs[0]
    _need(node, x, F32)
    t = emit(e, "ADD", [e.t(x), _scalar(e, 3.0, DType.f32, "three")],
             options=fb.AddOptionsT(fusedActivationFunction=FUSED["relu6"]))
    emit(e, "MUL", [t, _scalar(e, 1.0 / 6.0, DType.f32, "sixth")], out=e.out(node.output),
         options=fb.MulOptionsT())


def _lower_softplus(e, node):
    # log(1 + e^x) = max(x, 0) + log(1 + e^-|x|): never overflows (TFLite has no LOG1P).
    x = node.inputs[0]
    _need(node, x, F32)
    xt = e.t(x)
    t = emit(e, "ABS", [xt])
    t = emit(e, "NEG", [t])
    t = emit(e, "EXP", [t])
    t = emit(e, "ADD", [t, _scalar(e, 1.0, DType.f32, "one")], options=fb.AddOptionsT())
    t = emit(e, "LOG", [t])
    r = emit(e, "RELU", [xt])
    emit(e, "ADD", [r, t], out=e.out(node.output), options=fb.AddOptionsT())


def _lower_elu(e, node):
    # ELU's builtin has alpha fixed at 1; other alphas: x > 0 ? x : alpha * (e^x - 1).
    x = node.inputs[0]
    _need(node, x, F32)
    alpha = float(node.attrs["alpha"])
    if alpha == 1.0:
        emit(e, "ELU", [e.t(x)], out=e.out(node.output))
        return
    xt = e.t(x)
    t = emit(e, "EXP", [xt])
    t = emit(e, "SUB", [t, _scalar(e, 1.0, DType.f32, "one")], options=fb.SubOptionsT())
    t = emit(e, "MUL", [t, _scalar(e, alpha, DType.f32, "alpha")], options=fb.MulOptionsT())
    pos = emit(e, "GREATER", [xt, _scalar(e, 0.0, DType.f32, "zero")], dtype=DType.bool)
    emit(e, "SELECT_V2", [pos, xt, t], out=e.out(node.output))


# Eigen's float erf (generic_fast_erf_float, the one TF's CPU kernel used): a 13/8-degree
# rational function of x clamped to [-4, 4], accurate to a few ulp. TFLite has no ERF builtin.
_ERF_ALPHA = (-2.72614225801306e-10, 2.77068142495902e-08, -2.10102402082508e-06,
              -5.69250639462346e-05, -7.34990630326855e-04, -2.95459980854025e-03,
              -1.60960333262415e-02)
_ERF_BETA = (-1.45660718464996e-05, -2.13374055278905e-04, -1.68282697438203e-03,
             -7.37332916720468e-03, -1.42647390514189e-02)


def _horner(e, t, coeffs, name):
    """The float32 polynomial with `coeffs` (highest power first) at tensor `t`."""
    f = DType.f32
    acc = _scalar(e, coeffs[0], f, f"{name}0")
    for i, c in enumerate(coeffs[1:], 1):
        acc = emit(e, "MUL", [t, acc], options=fb.MulOptionsT())
        acc = emit(e, "ADD", [acc, _scalar(e, c, f, f"{name}{i}")], options=fb.AddOptionsT())
    return acc


def _lower_erf(e, node):
    x = node.inputs[0]
    _need(node, x, F32)
    f = DType.f32
    xc = emit(e, "MAXIMUM", [e.t(x), _scalar(e, -4.0, f, "lo")])
    xc = emit(e, "MINIMUM", [xc, _scalar(e, 4.0, f, "hi")])
    x2 = emit(e, "MUL", [xc, xc], options=fb.MulOptionsT())
    p = emit(e, "MUL", [xc, _horner(e, x2, _ERF_ALPHA, "alpha")], options=fb.MulOptionsT())
    q = _horner(e, x2, _ERF_BETA, "beta")
    emit(e, "DIV", [p, q], out=e.out(node.output), options=fb.DivOptionsT())


def _lower_erf_inv(e, node):
    """Giles' float32 approximation (ir/ops/elementwise.py, XLA's ErfInv): both polynomial
    branches, the one for w = -log((1 - y)(1 + y)) selected, and +-inf at +-1. TFLite has no
    ERFINV builtin."""
    y = node.inputs[0]
    _need(node, y, F32)
    f, yt = DType.f32, e.t(y)
    one = _scalar(e, 1.0, f, "one")
    lo = emit(e, "SUB", [one, yt], shape=e.shape(yt), options=fb.SubOptionsT())
    hi = emit(e, "ADD", [yt, one], options=fb.AddOptionsT())
    w = emit(e, "LOG", [emit(e, "MUL", [lo, hi], options=fb.MulOptionsT())])
    w = emit(e, "NEG", [w])
    central = emit(e, "SUB", [w, _scalar(e, 2.5, f, "c")], options=fb.SubOptionsT())
    tail = emit(e, "SUB", [emit(e, "SQRT", [w]), _scalar(e, 3.0, f, "t")],
                options=fb.SubOptionsT())
    use_central = emit(e, "LESS", [w, _scalar(e, 5.0, f, "five")], dtype=DType.bool)
    poly = emit(e, "SELECT_V2", [use_central, _horner(e, central, ERF_INV_CENTRAL, "p"),
                                 _horner(e, tail, ERF_INV_TAIL, "q")],
                dtype=f, shape=e.shape(yt))
    poly = emit(e, "MUL", [poly, yt], options=fb.MulOptionsT())
    edge = emit(e, "EQUAL", [emit(e, "ABS", [yt]), one], dtype=DType.bool)
    inf = emit(e, "MUL", [yt, _scalar(e, math.inf, f, "inf")], options=fb.MulOptionsT())
    emit(e, "SELECT_V2", [edge, inf, poly], out=e.out(node.output))


def _lower_is_finite(e, node):
    """|x| <= FLT_MAX: false for +-inf and (every comparison with) NaN. TFLite has no
    IS_FINITE builtin."""
    x = node.inputs[0]
    _need(node, x, F32)
    big = _scalar(e, float(np.finfo(np.float32).max), DType.f32, "flt_max")
    emit(e, "LESS_EQUAL", [emit(e, "ABS", [e.t(x)]), big], out=e.out(node.output))


UNARY = {
    "neg": _unary("NEG", NUM), "abs": _lower_abs_sign("ABS"),
    "exp": _unary("EXP", F32), "log": _unary("LOG", F32), "sqrt": _unary("SQRT", F32),
    "rsqrt": _unary("RSQRT", F32), "tanh": _unary("TANH", F32),
    "sin": _unary("SIN", F32), "cos": _unary("COS", F32),
    "sigmoid": _unary("LOGISTIC", F32), "relu": _unary("RELU", F32),
    "relu6": _unary("RELU6", F32), "hard_swish": _unary("HARD_SWISH", F32),
    "floor": _unary("FLOOR", F32), "ceil": _unary("CEIL", F32),
    "round": _unary("ROUND", F32),  # both round half to even
    "sign": _lower_abs_sign("SIGN"),
    "logical_not": _unary("LOGICAL_NOT", BOOL),
    "leaky_relu": _unary("LEAKY_RELU", F32, lambda a: fb.LeakyReluOptionsT(alpha=a["alpha"])),
    "gelu": _unary("GELU", F32, lambda a: fb.GeluOptionsT(approximate=a["approximate"])),
}
BINARY = {
    "add": _binary("ADD", NUM, fb.AddOptionsT), "sub": _binary("SUB", NUM, fb.SubOptionsT),
    "mul": _binary("MUL", NUM, fb.MulOptionsT),
    # int32 DIV truncates toward zero and rejects a zero divisor, like the IR.
    "div": _binary("DIV", {DType.f32, DType.i32}, fb.DivOptionsT),
    "pow": _binary("POW", {DType.f32, DType.i32}),
    "atan2": _lower_atan2,
    "bitcast": _lower_bitcast, "bitwise_not": _lower_bitwise_not,
    "bitwise_xor": _binary("BITWISE_XOR", _BIT_TYPES),
    "right_shift": _binary("RIGHT_SHIFT", _BIT_TYPES),
    "floor_div": _binary("FLOOR_DIV", {DType.f32, DType.i32}),
    "floor_mod": _binary("FLOOR_MOD", NUM),
    "maximum": _binary("MAXIMUM", NUM), "minimum": _binary("MINIMUM", NUM),
    "equal": _binary("EQUAL", NUM | BOOL), "not_equal": _binary("NOT_EQUAL", NUM | BOOL),
    "less": _binary("LESS", NUM), "less_equal": _binary("LESS_EQUAL", NUM),
    "greater": _binary("GREATER", NUM), "greater_equal": _binary("GREATER_EQUAL", NUM),
    "logical_and": _binary("LOGICAL_AND", BOOL), "logical_or": _binary("LOGICAL_OR", BOOL),
}

LOWERINGS = {
    **UNARY, **BINARY,
    "identity": _lower_identity, "where": _lower_where, "cast": _lower_cast,
    "clip": _lower_clip, "hard_sigmoid": _lower_hard_sigmoid, "softplus": _lower_softplus,
    "elu": _lower_elu,
    "erf": _lower_erf, "erf_inv": _lower_erf_inv, "is_finite": _lower_is_finite,
}
