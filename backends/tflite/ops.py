"""The TFLite lowering table: IR op -> TFLite builtin(s), their options and op versions.

Each IR op maps to one small function `lower(e, node)` that reads the node and emits one or
more TFLite operators through the emitter `e` (see `writer.Emitter`):

    e.t(value)                 tensor index of an IR operand (constants are emitted on first use)
    e.out(value, quant=None)   tensor index of a node result
    e.tmp(dtype, shape, name)  a fresh intermediate tensor
    e.const(array, name, weight=False, quant=None)   a constant tensor with its own buffer
    e.derived(value, key, fn, quant=None)  a constant computed once from an IR constant (e.g. a
                               re-laid filter, with its quantization axis moved to TFLite's)
    e.op(code, inputs, outputs, options)             appends an operator (version from here)
    e.alias(value, index)      makes an IR value an alias of an existing tensor (identity)
    e.dtype(i), e.shape(i)     IR dtype and shape (with symbols) of tensor i

A lowering raises `Unsupported` (with the reason) for a node it cannot express; the writer
collects those per node so the user sees every offender at once.

Quantized IR (the integer form of ir/quantized.py) lowers to the same builtins on int8/int16
tensors carrying the values' params; `_check_quantized` says which ops have an integer kernel
and what it needs of the params, `_weight_mode` splits conv/depthwise/matmul into float,
integer and hybrid (dynamic-range) forms.

Op versions follow tensorflow/lite/tools/versioning/op_version.cc: the lowest version whose
kernel supports the features (dtypes, ranks, options) the operator uses, see `op_version`.
"""

from __future__ import annotations

import math

import numpy as np
from ai_edge_litert import schema_py_generated as fb

from ...ir.quantized import is_quantized, quantize_array
from ...ir.types import DType, QuantParams

UNKNOWN = "?"


class Unsupported(Exception):
    """A node this backend cannot lower; the message says why (and how to get around it)."""


# -- shared vocabulary -------------------------------------------------------------------------

F32 = frozenset({DType.f32})
NUM = frozenset({DType.f32, DType.i32, DType.i64})
BOOL = frozenset({DType.bool})
ANY = None  # no dtype restriction beyond what the tensor table can represent

# Fused activations TFLite kernels really apply. TANH is in the enum, but the float CONV_2D /
# FULLY_CONNECTED / ADD kernels only clamp (CalculateActivationRange), so a fused TANH would be
# silently ignored: tanh is always emitted as its own TANH op.
FUSED = {"none": fb.ActivationFunctionType.NONE, "relu": fb.ActivationFunctionType.RELU,
         "relu6": fb.ActivationFunctionType.RELU6,
         "relu_n1_to_1": fb.ActivationFunctionType.RELU_N1_TO_1}
ACTIVATION_OPS = {"relu": "RELU", "relu6": "RELU6", "relu_n1_to_1": "RELU_N1_TO_1", "tanh": "TANH"}
PADDING = {"SAME": fb.Padding.SAME, "VALID": fb.Padding.VALID}
TFL_TYPES = {DType.f32: fb.TensorType.FLOAT32, DType.f16: fb.TensorType.FLOAT16,
             DType.f64: fb.TensorType.FLOAT64, DType.i8: fb.TensorType.INT8,
             DType.u8: fb.TensorType.UINT8, DType.i16: fb.TensorType.INT16,
             DType.i32: fb.TensorType.INT32, DType.i64: fb.TensorType.INT64,
             DType.bool: fb.TensorType.BOOL, DType.i4: fb.TensorType.INT4}
# Activation dtypes of TFLite's integer kernels (int8, and int16x8: int16 activations).
QACT = frozenset({DType.i8, DType.i16})


def _need(node, value, allowed, what=None) -> None:
    """Raises Unsupported unless `value`'s dtype is one the TFLite kernel computes on. A
    quantized int8/int16 value passes: `_check_quantized` has already matched it against the
    op's integer kernel."""
    if is_quantized(value) and value.type.dtype in QACT:
        return
    if allowed is not None and value.type.dtype not in allowed:
        names = ", ".join(sorted(d.value for d in allowed))
        raise Unsupported(f"TFLite {what or node.op} does not compute on {value.type.dtype} "
                          f"(supported here: {names}); cast the operand first")


def _i32(values) -> np.ndarray:
    """An int32 parameter array (shape vectors, axes, paddings) for a TFLite operand."""
    arr = np.asarray(values, dtype=np.int64)
    if arr.size and (arr.min() < -2**31 or arr.max() >= 2**31):
        raise Unsupported(f"parameter {arr.tolist()} does not fit in int32")
    return arr.astype(np.int32)


def _param(e, values, name):
    return e.const(_i32(values), f"{e.prefix}/{name}")


def _scalar(e, x, dtype: DType, name):
    return e.const(np.asarray(x, dtype=dtype.np), f"{e.prefix}/{name}")


def _static(shape) -> bool:
    return all(isinstance(d, int) for d in shape)


def emit(e, code, inputs, *, out=None, dtype=None, shape=None, options=None, name=None,
         quant=None) -> int:
    """Emits one operator with one result and returns the result's tensor index. Without
    `out`, the result is a fresh intermediate shaped like the first input unless told, and
    carries `quant` (set before the op: its version may depend on it)."""
    if out is None:
        src = inputs[0]
        out = e.tmp(dtype or e.dtype(src), e.shape(src) if shape is None else shape,
                    name or code.lower())
        if quant is not None:
            e.set_quant(out, quant)
    e.op(code, inputs, [out], options)
    return out


def copy_into(e, src: int, dst: int | None = None, name="copy") -> int:
    """Copies tensor `src` into `dst` (or a fresh tensor) with a RESHAPE to its own shape.

    TFLite has no identity op, and a subgraph output must be produced by an operator (not be a
    graph input or a constant): RESHAPE works for every dtype. Static shapes use a constant
    shape operand; symbolic ones read it at run time with SHAPE."""
    shape = e.shape(src)
    if _static(shape):
        shp = _param(e, list(shape), f"{name}_shape")
    else:
        shp = emit(e, "SHAPE", [src], dtype=DType.i32, shape=(len(shape),),
                   options=fb.ShapeOptionsT(outType=fb.TensorType.INT32), name=f"{name}_shape")
    return emit(e, "RESHAPE", [src, shp], out=dst, name=name)


# -- elementwise -------------------------------------------------------------------------------

def _unary(code, allowed, options=None):
    def lower(e, node):
        x = node.inputs[0]
        _need(node, x, allowed, code)
        emit(e, code, [e.t(x)], out=e.out(node.output),
             options=options(node.attrs) if options else None)
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


def _lower_erf(e, node):
    x = node.inputs[0]
    _need(node, x, F32)
    f = DType.f32
    xc = emit(e, "MAXIMUM", [e.t(x), _scalar(e, -4.0, f, "lo")])
    xc = emit(e, "MINIMUM", [xc, _scalar(e, 4.0, f, "hi")])
    x2 = emit(e, "MUL", [xc, xc], options=fb.MulOptionsT())

    def horner(coeffs, name):
        acc = _scalar(e, coeffs[0], f, f"{name}0")
        for i, c in enumerate(coeffs[1:], 1):
            acc = emit(e, "MUL", [x2, acc], options=fb.MulOptionsT())
            acc = emit(e, "ADD", [acc, _scalar(e, c, f, f"{name}{i}")], options=fb.AddOptionsT())
        return acc

    p = emit(e, "MUL", [xc, horner(_ERF_ALPHA, "alpha")], options=fb.MulOptionsT())
    q = horner(_ERF_BETA, "beta")
    emit(e, "DIV", [p, q], out=e.out(node.output), options=fb.DivOptionsT())


UNARY = {
    "neg": _unary("NEG", NUM), "abs": _unary("ABS", {DType.f32, DType.i32}),
    "exp": _unary("EXP", F32), "log": _unary("LOG", F32), "sqrt": _unary("SQRT", F32),
    "rsqrt": _unary("RSQRT", F32), "tanh": _unary("TANH", F32),
    "sigmoid": _unary("LOGISTIC", F32), "relu": _unary("RELU", F32),
    "relu6": _unary("RELU6", F32), "hard_swish": _unary("HARD_SWISH", F32),
    "floor": _unary("FLOOR", F32), "ceil": _unary("CEIL", F32),
    "round": _unary("ROUND", F32),  # both round half to even
    "sign": _unary("SIGN", {DType.f32, DType.i32}),
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
    "maximum": _binary("MAXIMUM", NUM), "minimum": _binary("MINIMUM", NUM),
    "equal": _binary("EQUAL", NUM | BOOL), "not_equal": _binary("NOT_EQUAL", NUM | BOOL),
    "less": _binary("LESS", NUM), "less_equal": _binary("LESS_EQUAL", NUM),
    "greater": _binary("GREATER", NUM), "greater_equal": _binary("GREATER_EQUAL", NUM),
    "logical_and": _binary("LOGICAL_AND", BOOL), "logical_or": _binary("LOGICAL_OR", BOOL),
}


# -- convolutions and matmul -------------------------------------------------------------------

def _finish(e, node, main):
    """Emits the main op (`main(target, fused_code)`) and the node's activation: relu-family
    activations fuse into the op, tanh follows as its own TANH (see FUSED)."""
    act = node.attrs["activation"]
    out = e.out(node.output)
    if act == "tanh":
        if is_quantized(node.output):
            # The pre-activation intermediate would need quantization params of its own.
            raise Unsupported("a quantized op with a fused tanh activation: TFLite needs "
                              "params for the pre-tanh tensor; emit tanh as its own node")
        mid = e.tmp(node.output.type.dtype, node.output.type.shape, "pre_tanh")
        main(mid, FUSED["none"])
        emit(e, "TANH", [mid], out=out)
    else:
        main(out, FUSED[act])


# -- quantized weights ---------------------------------------------------------------------------
# The three forms of a conv/depthwise/matmul node (ir/quantized.py):
#   float:   float activations and weights.
#   integer: int8 (or int16) quantized activations, int8 per-tensor/per-channel symmetric
#            constant weights, int32 (int64 for int16) bias of scale s_in * s_w[c], zp 0.
#   hybrid:  float activations and result, int8 quantized constant weight, float bias
#            (TFLite's dynamic-range kernels quantize the input on the fly).
# TFLite's per-channel axis is the output channel of its own filter layout, so the IR axis
# (the output channel of the IR layout) moves with the re-layout (README table).

def _weight_mode(node, what: str, out_axis: int) -> str:
    """'float', 'integer' or 'hybrid' for a conv/depthwise/matmul node, or Unsupported naming
    every TFLite requirement the node's quantization misses. `out_axis` is the IR weight's
    output-channel axis, the only per-channel axis TFLite's kernels take."""
    x, w = node.inputs[:2]
    y = node.output
    bias = node.inputs[2] if len(node.inputs) > 2 else None
    if not is_quantized(w):
        if any(is_quantized(v) for v in (x, y, bias) if v is not None):
            raise Unsupported(f"TFLite {what} with quantized activations needs a quantized "
                              f"(int8) constant weight, got {w.type.dtype} without params")
        return "float"
    problems = []
    if w.const is None:
        problems.append("the quantized weight must be a constant (its params move with the "
                        "filter re-layout)")
    if w.type.dtype != DType.i8:
        problems.append(f"TFLite {what} takes int8 weights, not {w.type.dtype} (for int4 "
                        f"weight-only quantization, dequantize the weight first)")
    if any(z != 0 for z in w.quant.zero_point):
        problems.append("TFLite int8 weights must be symmetric (zero point 0)")
    if w.quant.axis is not None and w.quant.axis != out_axis:
        problems.append(f"per-channel weight params must be on the output-channel axis "
                        f"{out_axis} of the IR weight, got axis {w.quant.axis}")
    if is_quantized(x):
        dt = x.type.dtype
        if dt not in QACT:
            problems.append(f"TFLite integer {what} takes int8 or int16 activations, not {dt}")
        if not is_quantized(y) or y.type.dtype != dt:
            problems.append(f"the result must be quantized with the input's dtype {dt}, "
                            f"got {y.type.dtype}{'' if is_quantized(y) else ' without params'}")
        for name, v in (("input", x), ("result", y)):
            if v.quant is not None and v.quant.axis is not None:
                problems.append(f"the {name} must be quantized per tensor")
            if dt == DType.i16 and v.quant is not None and any(v.quant.zero_point):
                problems.append(f"int16 activations must be symmetric: {name} zero point "
                                f"{v.quant.zero_point[0]} must be 0")
        if bias is not None:
            problems += _bias_problems(x, w, bias)
        mode = "integer"
    elif x.type.dtype == DType.f32 and y.type.dtype == DType.f32 and not is_quantized(y):
        if bias is not None and (is_quantized(bias) or bias.type.dtype != DType.f32):
            problems.append("a hybrid (dynamic-range) op takes a float32 bias")
        mode = "hybrid"
    else:
        problems.append(f"quantized weights need either quantized activations (integer) or "
                        f"float32 input and result (hybrid), got {x.type.dtype} -> "
                        f"{y.type.dtype}")
        mode = None
    if problems:
        raise Unsupported(f"TFLite {what}: " + "; ".join(problems))
    return mode


def _bias_scales(x, w) -> np.ndarray:
    return np.float64(x.quant.scale[0]) * np.asarray(w.quant.scale, np.float64)


def _bias_problems(x, w, bias) -> list[str]:
    """TFLite adds the raw bias codes to the int32 accumulator: they must be int32 (int64 for
    int16 activations) with zp 0 and scale s_in * s_w[c]."""
    want = DType.i64 if x.type.dtype == DType.i16 else DType.i32
    if not is_quantized(bias) or bias.type.dtype != want:
        return [f"the bias must be quantized {want} (zp 0, scale input_scale * weight_scale), "
                f"got {bias.type.dtype}{'' if is_quantized(bias) else ' without params'}"]
    qp = bias.quant
    scales = _bias_scales(x, w)
    got = np.asarray(qp.scale, np.float64)
    n = bias.type.shape[0] if bias.type.rank == 1 else None
    got = np.broadcast_to(got, (n,)) if got.size == 1 and isinstance(n, int) else got
    if any(qp.zero_point) or (scales.size > 1 and got.size != scales.size) or \
            not np.allclose(got, scales, rtol=1e-5, atol=0):
        return ["the bias params must be zero point 0 and scale input_scale * weight_scale "
                "per output channel (TFLite adds the raw codes to the accumulator)"]
    return []


def _moved(qp: QuantParams | None, axis: int | None, repeat: int = 1) -> QuantParams | None:
    """`qp` with its per-channel axis moved to `axis` (each param repeated `repeat` times, for
    the depth multiplier of a depthwise filter)."""
    if qp is None or qp.axis is None:
        return qp
    return QuantParams(np.repeat(qp.scale, repeat), np.repeat(qp.zero_point, repeat), axis,
                       qp.bits, qp.signed, qp.narrow_range)


def _per_channel(qp: QuantParams, channels: int) -> QuantParams:
    """Per-tensor params written per channel on axis 3 (the depthwise hybrid kernel reads
    one scale per output channel)."""
    if qp.axis is not None:
        return qp
    return QuantParams(qp.scale * channels, qp.zero_point * channels, 3, qp.bits, qp.signed,
                       qp.narrow_range)


def _bias(e, node, channels: int | str, mode: str = "float"):
    """The bias operand: the IR's, or zeros (the CONV_2D kernels require a bias): float32,
    or for the integer form int32/int64 codes with scale s_in * s_w[c]."""
    if len(node.inputs) > 2:
        return e.t(node.inputs[2])
    if not isinstance(channels, int):
        raise Unsupported("a convolution without bias needs a static output channel count")
    if mode != "integer":
        return e.const(np.zeros(channels, np.float32), f"{e.prefix}/zero_bias")
    x, w = node.inputs[:2]
    dt = np.int64 if x.type.dtype == DType.i16 else np.int32
    scales = np.broadcast_to(_bias_scales(x, w), (channels,))
    qp = QuantParams(scales, (0,) * channels, 0)
    return e.const(np.zeros(channels, dt), f"{e.prefix}/zero_bias", quant=qp)


def _same_pads(size, k, stride, dilation):
    out = -(-size // stride)
    total = max((out - 1) * stride + (k - 1) * dilation + 1 - size, 0)
    return (total // 2, total - total // 2)


def _conv_input(e, node, kh, kw):
    """(input tensor, TFLite padding). Explicit padding becomes SAME when it is exactly what
    SAME computes, VALID when zero, otherwise a PAD op followed by a VALID conv."""
    x = node.inputs[0]
    pad = node.attrs["padding"]
    xt = e.t(x)
    if isinstance(pad, str):
        return xt, pad
    (t, b), (l, r) = pad
    if t == b == l == r == 0:
        return xt, "VALID"
    n, h, w, c = x.type.shape
    (sh, sw), (dh, dw) = node.attrs["strides"], node.attrs["dilations"]
    if _static((h, w)) and ((t, b), (l, r)) == (_same_pads(h, kh, sh, dh),
                                                _same_pads(w, kw, sw, dw)):
        return xt, "SAME"
    grow = lambda d, p: d + p if isinstance(d, int) else UNKNOWN  # noqa: E731
    # A quantized PAD fills with the zero point, i.e. real 0, like the float padding.
    padded = emit(e, "PAD", [xt, _param(e, [[0, 0], [t, b], [l, r], [0, 0]], "paddings")],
                  shape=(n, grow(h, t + b), grow(w, l + r), c), name="padded", quant=x.quant)
    return padded, "VALID"


def _stored_weight(e, v, key, relayout, move):
    """A weight stored compressed (weight-only schemes: `dequantize` of an int8/int4
    constant, or `cast` of a float16 one) in TFLite's layout: the stored constant is re-laid
    out at emit time (its params moved to TFLite's axis by `move`) and expanded by one
    DEQUANTIZE, which LiteRT evaluates once at prepare time, as TFLiteConverter's float16 and
    weight-only models do. None when `v` is not such a weight."""
    p = v.producer
    if p is None or p.op not in ("dequantize", "cast") or p.inputs[0].const is None:
        return None
    src = p.inputs[0]
    if p.op == "cast" and not (src.type.dtype == DType.f16 and p.attrs["to"] == DType.f32):
        return None
    if p.op == "dequantize" and (src.quant is None or p.attrs["dtype"] != DType.f32):
        return None
    codes = e.derived(src, key, relayout, quant=move(src.quant) if src.quant else None)
    return emit(e, "DEQUANTIZE", [codes], dtype=DType.f32, shape=e.shape(codes),
                name=f"{key}_expanded")


_WEIGHT_USERS = ("conv2d", "depthwise_conv2d", "conv2d_transpose", "matmul")


def _expanded_by_users(node) -> bool:
    """True when every use of a `dequantize`/`cast` of a constant is a conv/matmul weight
    operand that expands the stored constant itself (`_stored_weight`), so the node emits
    nothing of its own."""
    if node.inputs[0].const is None or not node.output.uses:
        return False
    for user, i in node.output.uses:
        if getattr(user, "op", None) not in _WEIGHT_USERS or i != 1:
            return False
        if any(is_quantized(v) for v in (user.inputs[0], *user.outputs)):
            return False
        if user.op == "matmul" and (node.output.type.rank != 2 or user.attrs["transpose_a"]):
            return False
    return True


def _filter(e, node, key, relayout, perm=None, new_shape=None, quant=None, move=None):
    """The filter operand in TFLite's layout: re-laid out at emit time when constant (with
    `quant`, the params on TFLite's axis) or stored compressed (`move` maps its params to
    TFLite's axis), else by a TRANSPOSE (`perm`) or RESHAPE (`new_shape`) operator."""
    f = node.inputs[1]
    if f.const is not None:
        return e.derived(f, key, relayout, quant=quant)
    stored = _stored_weight(e, f, key, relayout, move or (lambda q: q))
    if stored is not None:
        return stored
    ft = e.t(f)
    if perm is not None:
        return emit(e, "TRANSPOSE", [ft, _param(e, perm, "filter_perm")],
                    shape=tuple(f.type.shape[p] for p in perm), name="filter")
    if not _static(new_shape):
        raise Unsupported("a non-constant depthwise filter needs a static shape")
    return emit(e, "RESHAPE", [ft, _param(e, new_shape, "filter_shape")], shape=new_shape,
                name="filter")


def _lower_conv2d(e, node):
    x, f = node.inputs[:2]
    mode = _weight_mode(node, "CONV_2D", out_axis=3)
    _need(node, x, F32, "CONV_2D")
    kh, kw, _, co = f.type.shape
    a = node.attrs
    # IR HWIO -> TFLite OHWI (per-channel axis 3 -> 0). Grouped conv keeps I = C_in / groups:
    # CONV_2D infers the group count from the channel ratio (version 6).
    w = _filter(e, node, "ohwi", lambda arr: np.transpose(arr, (3, 0, 1, 2)), perm=(3, 0, 1, 2),
                quant=_moved(f.quant, 0), move=lambda q: _moved(q, 0))
    xt, padding = _conv_input(e, node, kh, kw)
    bias = _bias(e, node, co, mode)

    def main(out, act):
        e.op("CONV_2D", [xt, w, bias], [out], fb.Conv2DOptionsT(
            padding=PADDING[padding], strideH=a["strides"][0], strideW=a["strides"][1],
            dilationHFactor=a["dilations"][0], dilationWFactor=a["dilations"][1],
            fusedActivationFunction=act))
    _finish(e, node, main)


def _lower_depthwise(e, node):
    x, f = node.inputs[:2]
    mode = _weight_mode(node, "DEPTHWISE_CONV_2D", out_axis=2)
    _need(node, x, F32, "DEPTHWISE_CONV_2D")
    kh, kw, c, m = f.type.shape
    a = node.attrs
    if not isinstance(m, int):
        raise Unsupported("depthwise_conv2d needs a static depth multiplier")
    # IR [H, W, C, M] -> TFLite [1, H, W, C*M]: the same memory order (channel c*M + m); the
    # per-channel params of axis 2 (C) become C*M params on axis 3, each repeated M times.
    shape = (1, kh, kw, c * m if _static((c, m)) else UNKNOWN)
    qp = _moved(f.quant, 3, repeat=m)
    key = "1hwcm"
    if mode == "hybrid" and isinstance(shape[3], int):
        # The hybrid depthwise kernel reads one scale per output channel.
        qp, key = _per_channel(qp, shape[3]), "1hwcm/per_channel"
    w = _filter(e, node, key, lambda arr: arr.reshape(1, kh, kw, -1), new_shape=shape,
                quant=qp, move=lambda q: _moved(q, 3, repeat=m))
    xt, padding = _conv_input(e, node, kh, kw)
    bias = _bias(e, node, shape[3], mode)

    def main(out, act):
        e.op("DEPTHWISE_CONV_2D", [xt, w, bias], [out], fb.DepthwiseConv2DOptionsT(
            padding=PADDING[padding], strideH=a["strides"][0], strideW=a["strides"][1],
            depthMultiplier=m, dilationHFactor=a["dilations"][0],
            dilationWFactor=a["dilations"][1], fusedActivationFunction=act))
    _finish(e, node, main)


def _lower_conv2d_transpose(e, node):
    x, f = node.inputs[:2]
    _need(node, x, F32, "TRANSPOSE_CONV")
    a = node.attrs
    if tuple(a["dilations"]) != (1, 1):
        raise Unsupported("TRANSPOSE_CONV has no dilation; dilations must be (1, 1)")
    n, oh, ow, co = node.output.type.shape
    if not _static((oh, ow, co)):
        raise Unsupported(f"TRANSPOSE_CONV needs static output spatial dims and channels, "
                          f"got {node.output.type}")
    # IR [H, W, C_out, C_in] -> TFLite [C_out, H, W, C_in].
    w = _filter(e, node, "ohwi_t", lambda arr: np.transpose(arr, (2, 0, 1, 3)),
                perm=(2, 0, 1, 3), move=lambda q: _moved(q, 0))
    xt = e.t(x)
    if isinstance(n, int):
        out_shape = _param(e, [n, oh, ow, co], "output_shape")
    else:
        # Symbolic batch: the output_shape operand is read at run time from the input's shape.
        shp = emit(e, "SHAPE", [xt], dtype=DType.i32, shape=(4,),
                   options=fb.ShapeOptionsT(outType=fb.TensorType.INT32), name="input_shape")
        batch = emit(e, "STRIDED_SLICE", [shp, _param(e, [0], "b0"), _param(e, [1], "b1"),
                                          _param(e, [1], "b_stride")],
                     shape=(1,), options=fb.StridedSliceOptionsT(), name="batch")
        out_shape = emit(e, "CONCATENATION", [batch, _param(e, [oh, ow, co], "hwc")],
                         shape=(4,), options=fb.ConcatenationOptionsT(axis=0), name="out_shape")
    # The bias is the optional 4th input (version 3); absent, the op stays at version 1.
    ins = [out_shape, w, xt] + ([e.t(node.inputs[2])] if len(node.inputs) > 2 else [])

    def main(out, act):
        e.op("TRANSPOSE_CONV", ins, [out], fb.TransposeConvOptionsT(
            padding=PADDING[a["padding"]], strideH=a["strides"][0], strideW=a["strides"][1],
            fusedActivationFunction=act))
    _finish(e, node, main)


def _lower_quantized_batch_matmul(e, node):
    """Activation x activation (attention scores, attention-weighted values): BATCH_MATMUL's
    integer kernel on two quantized operands of one dtype, per-tensor params."""
    a, b = node.inputs[:2]
    y = node.output
    problems = []
    if not (is_quantized(a) and is_quantized(y)) or len({a.type.dtype, b.type.dtype,
                                                        y.type.dtype}) != 1:
        problems.append(f"operands and result must be quantized with one dtype, got "
                        f"{a.type.dtype}, {b.type.dtype} -> {y.type.dtype}")
    if any(v.quant is not None and v.quant.axis is not None for v in (a, b, y)):
        problems.append("operands and result must be quantized per tensor")
    if len(node.inputs) > 2 or node.attrs["activation"] != "none":
        problems.append("a quantized BATCH_MATMUL takes no bias or fused activation")
    if problems:
        raise Unsupported("TFLite integer BATCH_MATMUL: " + "; ".join(problems))
    emit(e, "BATCH_MATMUL", [e.t(a), e.t(b)], out=e.out(y),
         options=fb.BatchMatMulOptionsT(adjX=node.attrs["transpose_a"],
                                        adjY=node.attrs["transpose_b"]))


def _blockwise_weight(v) -> bool:
    """True when `v` is a blockwise-quantized weight (passes/quantize/insert.py,
    `_quantize_blockwise`): `reshape` of the `dequantize` of a per-axis quantized constant
    whose rows are the blocks."""
    p = v.producer
    if p is None or p.op != "reshape":
        return False
    d = p.inputs[0].producer
    return (d is not None and d.op == "dequantize" and d.inputs[0].const is not None
            and d.inputs[0].quant is not None)


def _lower_matmul(e, node):
    a, b = node.inputs[:2]
    ta, tb = node.attrs["transpose_a"], node.attrs["transpose_b"]
    if b.const is None and is_quantized(b):
        _lower_quantized_batch_matmul(e, node)
        return
    mode = _weight_mode(node, "FULLY_CONNECTED", out_axis=0 if tb else 1)
    _need(node, a, F32, "FULLY_CONNECTED / BATCH_MATMUL")
    has_bias = len(node.inputs) > 2
    if mode != "float" and not (b.const is not None and b.type.rank == 2 and not ta):
        raise Unsupported("a quantized matmul lowers to FULLY_CONNECTED only: it needs a "
                          "rank-2 constant weight and transpose_a=False")
    relayout = (lambda arr: arr) if tb else (lambda arr: arr.T)
    stored = None
    if b.const is None and b.type.rank == 2 and not ta and mode == "float":
        stored = _stored_weight(e, b, "fc_nk", relayout, lambda q: _moved(q, 0))
        if stored is None and tb and _blockwise_weight(b):
            # Already in FULLY_CONNECTED's [N, K] order: the RESHAPE of the DEQUANTIZE
            # that expands the blockwise codes feeds FC as a (prepare-time) weight.
            stored = e.t(b)
    if (b.const is not None or stored is not None) and b.type.rank == 2 and not ta:
        # FULLY_CONNECTED computes x @ W^T with W [N, K] (per-channel axis: N, 0). Inputs of
        # rank > 2 keep their leading dims with keep_num_dims (version 5) instead of a
        # reshape round trip. A weight stored compressed is expanded by one DEQUANTIZE.
        w = stored if stored is not None else e.derived(b, "fc_nk", relayout,
                                                        quant=_moved(b.quant, 0))
        ins = [e.t(a), w, e.t(node.inputs[2]) if has_bias else -1]

        def fc(out, act):
            # Hybrid: quantize the input per row with its own zero point (what
            # TFLiteConverter's dynamic-range quantization asks for; more accurate than the
            # symmetric scheme).
            e.op("FULLY_CONNECTED", ins, [out], fb.FullyConnectedOptionsT(
                fusedActivationFunction=act, keepNumDims=a.type.rank != 2,
                asymmetricQuantizeInputs=mode == "hybrid"))
        _finish(e, node, fc)
        return
    # BATCH_MATMUL has neither bias nor fused activation: ADD (with the relu-family fused)
    # and a TANH follow where needed.

    def bmm(out, act):
        opts = fb.BatchMatMulOptionsT(adjX=ta, adjY=tb)
        if not has_bias and act == FUSED["none"]:
            e.op("BATCH_MATMUL", [e.t(a), e.t(b)], [out], opts)
            return
        prod = emit(e, "BATCH_MATMUL", [e.t(a), e.t(b)], dtype=node.output.type.dtype,
                    shape=node.output.type.shape, options=opts, name="matmul")
        if has_bias:
            emit(e, "ADD", [prod, e.t(node.inputs[2])], out=out,
                 options=fb.AddOptionsT(fusedActivationFunction=act))
        else:
            act_name = next(k for k, v in FUSED.items() if v == act)
            emit(e, ACTIVATION_OPS[act_name], [prod], out=out)
    _finish(e, node, bmm)


# -- pooling, softmax, normalization, resize ---------------------------------------------------

def _pool(code):
    def lower(e, node):
        x = node.inputs[0]
        _need(node, x, F32, code)
        a = node.attrs
        emit(e, code, [e.t(x)], out=e.out(node.output), options=fb.Pool2DOptionsT(
            padding=PADDING[a["padding"]], strideH=a["strides"][0], strideW=a["strides"][1],
            filterHeight=a["ksize"][0], filterWidth=a["ksize"][1],
            fusedActivationFunction=FUSED["none"]))
    return lower


def _softmax(code, options):
    def lower(e, node):
        x = node.inputs[0]
        _need(node, x, F32, code)
        rank = x.type.rank
        axis = node.attrs["axis"] % rank
        out = e.out(node.output)
        if axis == rank - 1:
            emit(e, code, [e.t(x)], out=out, options=options())
            return
        # TFLite normalizes over the last axis only: move `axis` last and back.
        perm = [i for i in range(rank) if i != axis] + [axis]
        inv = list(np.argsort(perm))
        t = emit(e, "TRANSPOSE", [e.t(x), _param(e, perm, "perm")],
                 shape=tuple(x.type.shape[p] for p in perm), quant=x.quant)
        t = emit(e, code, [t], options=options(), quant=node.output.quant)
        emit(e, "TRANSPOSE", [t, _param(e, inv, "inv_perm")], out=out)
    return lower


def _lower_batch_norm(e, node):
    x, mean, var, scale, offset = node.inputs
    _need(node, x, F32)
    eps, rank = node.attrs["epsilon"], x.type.rank
    axis = node.attrs["axis"] % rank
    out = e.out(node.output)
    params = [p.const for p in (mean, var, scale, offset)]
    if all(p is not None for p in params):
        # Inference batch norm folds into one MUL and one ADD (computed in float64).
        m, v, s, o = (p.astype(np.float64) for p in params)
        mul = s / np.sqrt(v + eps)
        add = o - m * mul
        trailing = (1,) * (rank - 1 - axis)
        k = e.const(mul.astype(np.float32).reshape((-1,) + trailing), f"{e.prefix}/bn_scale",
                    weight=True)
        c = e.const(add.astype(np.float32).reshape((-1,) + trailing), f"{e.prefix}/bn_shift",
                    weight=True)
        t = emit(e, "MUL", [e.t(x), k], options=fb.MulOptionsT())
        emit(e, "ADD", [t, c], out=out, options=fb.AddOptionsT())
        return
    # Non-constant statistics: (x - mean) * (rsqrt(var + eps) * scale) + offset.
    f = DType.f32
    inv = emit(e, "ADD", [e.t(var), _scalar(e, eps, f, "eps")], options=fb.AddOptionsT())
    inv = emit(e, "RSQRT", [inv])
    inv = emit(e, "MUL", [inv, e.t(scale)], options=fb.MulOptionsT(), name="bn_scale")
    d = emit(e, "SUB", [e.t(x), _reshape_channel(e, e.t(mean), axis, rank)],
             options=fb.SubOptionsT())
    d = emit(e, "MUL", [d, _reshape_channel(e, inv, axis, rank)], options=fb.MulOptionsT())
    emit(e, "ADD", [d, _reshape_channel(e, e.t(offset), axis, rank)], out=out,
         options=fb.AddOptionsT())


def _reshape_channel(e, t, axis, rank):
    trailing = rank - 1 - axis
    if trailing == 0:
        return t
    return emit(e, "RESHAPE", [t, _param(e, [-1] + [1] * trailing, "channel_shape")],
                shape=(e.shape(t)[0],) + (1,) * trailing, name="channel")


def _lower_layer_norm(e, node):
    x = node.inputs[0]
    _need(node, x, F32)
    rank = x.type.rank
    axes = sorted(a % rank for a in node.attrs["axes"])
    f = DType.f32
    kept = tuple(1 if i in axes else d for i, d in enumerate(x.type.shape))
    red = _param(e, axes, "axes")
    xt = e.t(x)
    mean = emit(e, "MEAN", [xt, red], shape=kept, options=fb.ReducerOptionsT(keepDims=True))
    d = emit(e, "SUB", [xt, mean], shape=x.type.shape, options=fb.SubOptionsT())
    sq = emit(e, "MUL", [d, d], options=fb.MulOptionsT())
    var = emit(e, "MEAN", [sq, red], shape=kept, options=fb.ReducerOptionsT(keepDims=True))
    var = emit(e, "ADD", [var, _scalar(e, node.attrs["epsilon"], f, "eps")],
               options=fb.AddOptionsT())
    inv = emit(e, "RSQRT", [var])
    affine = node.inputs[1:]
    y = emit(e, "MUL", [d, inv], shape=x.type.shape, options=fb.MulOptionsT(),
             out=e.out(node.output) if not affine else None)
    # scale/offset hold the normalized dims in axis order; dims before the first normalized
    # axis broadcast, those between normalized axes need explicit 1s.
    first = axes[0]
    bshape = [x.type.shape[i] if i in axes else 1 for i in range(first, rank)]
    for i, (p, code) in enumerate(zip(affine, ("MUL", "ADD"))):
        if p.const is not None:
            pt = e.derived(p, f"ln/{bshape}", lambda v: v.reshape(bshape))
        elif list(p.type.shape) == bshape:
            pt = e.t(p)
        else:
            if sum(not isinstance(d, int) for d in bshape) > 1:
                raise Unsupported("layer_norm with non-constant scale/offset over several "
                                  "symbolic axes")
            pt = emit(e, "RESHAPE", [e.t(p), _param(
                e, [d if isinstance(d, int) else -1 for d in bshape], "affine_shape")],
                shape=tuple(bshape), name="affine")
        last = i == len(affine) - 1
        opts = fb.MulOptionsT() if code == "MUL" else fb.AddOptionsT()
        y = emit(e, code, [y, pt], shape=x.type.shape, options=opts,
                 out=e.out(node.output) if last else None)


def _lower_resize(e, node):
    x = node.inputs[0]
    _need(node, x, F32, "RESIZE")
    a = node.attrs
    code = "RESIZE_BILINEAR" if a["method"] == "bilinear" else "RESIZE_NEAREST_NEIGHBOR"
    opts_cls = fb.ResizeBilinearOptionsT if a["method"] == "bilinear" \
        else fb.ResizeNearestNeighborOptionsT
    emit(e, code, [e.t(x), _param(e, list(a["size"]), "size")], out=e.out(node.output),
         options=opts_cls(alignCorners=a["align_corners"],
                          halfPixelCenters=a["half_pixel_centers"]))


# -- reductions --------------------------------------------------------------------------------

def _reduce(code, allowed):
    def lower(e, node):
        x = node.inputs[0]
        _need(node, x, allowed, code)
        rank = x.type.rank
        # The IR's empty axes mean "all"; TFLite's mean "none".
        axes = sorted(a % rank for a in node.attrs["axes"]) or list(range(rank))
        emit(e, code, [e.t(x), _param(e, axes, "axes")], out=e.out(node.output),
             options=fb.ReducerOptionsT(keepDims=node.attrs["keepdims"]))
    return lower


def _arg(code, options_cls):
    def lower(e, node):
        x = node.inputs[0]
        _need(node, x, NUM, code)
        axis = node.attrs["axis"] % x.type.rank
        emit(e, code, [e.t(x), _param(e, [axis], "axis")], out=e.out(node.output),
             options=options_cls(outputType=TFL_TYPES[node.attrs["output_type"]]))
    return lower


# -- shape ops ---------------------------------------------------------------------------------

def _lower_reshape(e, node):
    # The IR shape attribute already uses -1 where a dim is inferred (e.g. symbolic batch).
    emit(e, "RESHAPE", [e.t(node.inputs[0]), _param(e, list(node.attrs["shape"]), "shape")],
         out=e.out(node.output))


def _lower_transpose(e, node):
    emit(e, "TRANSPOSE", [e.t(node.inputs[0]), _param(e, list(node.attrs["perm"]), "perm")],
         out=e.out(node.output))


def _lower_concat(e, node):
    rank = node.inputs[0].type.rank
    quants = {v.quant for v in node.inputs} | {node.output.quant}
    if len(quants) > 1:
        # TFLite's CONCATENATION rescales inputs whose params differ from the output's; the IR
        # concatenates raw codes.
        raise Unsupported("concat of tensors with different quantization params")
    emit(e, "CONCATENATION", [e.t(v) for v in node.inputs], out=e.out(node.output),
         options=fb.ConcatenationOptionsT(axis=node.attrs["axis"] % rank,
                                          fusedActivationFunction=FUSED["none"]))


def _lower_split(e, node):
    x = node.inputs[0]
    axis = node.attrs["axis"] % x.type.rank
    sizes = list(node.attrs["sizes"])
    e.op("SPLIT_V", [e.t(x), _param(e, sizes, "size_splits"), _param(e, axis, "axis")],
         [e.out(v) for v in node.outputs], fb.SplitVOptionsT(numSplits=len(sizes)))


def _lower_slice(e, node):
    a = node.attrs
    emit(e, "SLICE", [e.t(node.inputs[0]), _param(e, list(a["begin"]), "begin"),
                      _param(e, list(a["size"]), "size")], out=e.out(node.output))


def _lower_strided_slice(e, node):
    a = node.attrs
    emit(e, "STRIDED_SLICE", [e.t(node.inputs[0]), _param(e, list(a["begin"]), "begin"),
                              _param(e, list(a["end"]), "end"),
                              _param(e, list(a["strides"]), "strides")],
         out=e.out(node.output), options=fb.StridedSliceOptionsT(
             beginMask=a["begin_mask"], endMask=a["end_mask"], ellipsisMask=a["ellipsis_mask"],
             newAxisMask=a["new_axis_mask"], shrinkAxisMask=a["shrink_axis_mask"]))


def _lower_pad(e, node):
    x, a = node.inputs[0], node.attrs
    out = e.out(node.output)
    if x.type.rank == 0:
        copy_into(e, e.t(x), out)
        return
    pads = _param(e, [list(p) for p in a["pads"]], "paddings")
    if a["mode"] != "constant":
        mode = fb.MirrorPadMode.REFLECT if a["mode"] == "reflect" else fb.MirrorPadMode.SYMMETRIC
        emit(e, "MIRROR_PAD", [e.t(x), pads], out=out, options=fb.MirrorPadOptionsT(mode=mode))
        return
    dt = x.type.dtype
    if a["value"] == 0:
        # A quantized PAD fills with the zero point: real 0 (integer form, ir/quantized.py).
        emit(e, "PAD", [e.t(x), pads], out=out)
        return
    # PADV2 fills with its operand's code: for a quantized tensor, the code of the real
    # pad value under the tensor's params.
    if is_quantized(x):
        value = quantize_array(np.asarray(a["value"], np.float32), x.quant, dt)
    else:
        value = np.asarray(a["value"]).astype(dt.np)
    fill = e.const(value, f"{e.prefix}/pad_value", quant=x.quant)
    emit(e, "PADV2", [e.t(x), pads, fill], out=out)


def _lower_gather(e, node):
    params, indices = node.inputs
    _need(node, indices, {DType.i16, DType.i32, DType.i64}, "GATHER indices")
    bd = node.attrs["batch_dims"]
    bd = bd + indices.type.rank if bd < 0 else bd
    emit(e, "GATHER", [e.t(params), e.t(indices)], out=e.out(node.output),
         options=fb.GatherOptionsT(axis=node.attrs["axis"] % params.type.rank, batchDims=bd))


def _lower_broadcast_to(e, node):
    emit(e, "BROADCAST_TO", [e.t(node.inputs[0]), _param(e, list(node.attrs["shape"]), "shape")],
         out=e.out(node.output))


def _lower_squeeze(e, node):
    x = node.inputs[0]
    rank = x.type.rank
    # Explicit dims always: empty squeeze_dims would also drop a symbolic dim that is 1 in the
    # stored shape (e.g. batch).
    axes = sorted(a % rank for a in node.attrs["axes"]) or \
        [i for i, d in enumerate(x.type.shape) if d == 1]
    if not axes:
        copy_into(e, e.t(x), e.out(node.output))
        return
    emit(e, "SQUEEZE", [e.t(x)], out=e.out(node.output),
         options=fb.SqueezeOptionsT(squeezeDims=axes))


def _lower_expand_dims(e, node):
    x = node.inputs[0]
    axis = node.attrs["axis"] % (x.type.rank + 1)
    emit(e, "EXPAND_DIMS", [e.t(x), _param(e, axis, "axis")], out=e.out(node.output))


def _lower_tile(e, node):
    emit(e, "TILE", [e.t(node.inputs[0]), _param(e, list(node.attrs["multiples"]), "multiples")],
         out=e.out(node.output))


# -- quantization ------------------------------------------------------------------------------

_QUANT_OUT = {DType.i8, DType.u8, DType.i16}


def _params(value, attrs) -> QuantParams:
    axis = attrs["axis"]
    return QuantParams(attrs["scale"], attrs["zero_point"],
                       None if axis is None else axis % value.type.rank)


def _quantize(e, node, x_t, dtype, qp, narrow, out=None):
    """QUANTIZE (float -> codes), then a MAXIMUM with the lowest narrow-range code when
    `narrow` (TFLite's QUANTIZE clamps to the full type range)."""
    if dtype not in _QUANT_OUT:
        raise Unsupported(f"TFLite QUANTIZE produces int8, uint8 or int16, not {dtype}")
    # The result's params are set before the op so its version sees a per-axis quantization.
    q = e.tmp(dtype, e.shape(x_t), "quantized") if narrow or out is None else out
    e.set_quant(q, qp)
    emit(e, "QUANTIZE", [x_t], out=q)
    if narrow:
        lowest = QuantParams((1.0,), (0,), bits=dtype.bits, signed=dtype != DType.u8).qmin + 1
        floor = e.const(np.asarray(lowest, dtype.np), f"{e.prefix}/narrow_min",
                        quant=QuantParams(qp.scale[:1], qp.zero_point[:1]))
        narrowed = out if out is not None else e.tmp(dtype, e.shape(x_t), "narrowed")
        e.set_quant(narrowed, qp)
        emit(e, "MAXIMUM", [q, floor], out=narrowed)
        q = narrowed
    return q


def _dequantize(e, q_t, qp, out=None):
    """DEQUANTIZE of tensor `q_t` read with params `qp` (attached to it if it has none)."""
    have = e.quant(q_t)
    if have is None:
        e.set_quant(q_t, qp)
    elif (have.scale, have.zero_point, have.axis) != (qp.scale, qp.zero_point, qp.axis):
        raise Unsupported("dequantize params differ from the quantization its operand already "
                          "carries in TFLite (a tensor has one set of params)")
    return emit(e, "DEQUANTIZE", [q_t], out=out, dtype=DType.f32, name="dequantized")


def _lower_quantize(e, node):
    x = node.inputs[0]
    _need(node, x, F32, "QUANTIZE")
    a = node.attrs
    _quantize(e, node, e.t(x), a["dtype"], _params(x, a), a["narrow_range"],
              out=e.out(node.output))


def _lower_dequantize(e, node):
    q = node.inputs[0]
    if node.attrs["dtype"] == DType.f32 and q.quant is not None and _expanded_by_users(node):
        return  # a stored weight: its users re-lay and expand it (_stored_weight)
    # int4: constants stored packed two per byte (writer.pack_int4), DEQUANTIZE version 6.
    _need(node, q, {DType.i4, DType.i8, DType.u8, DType.i16}, "DEQUANTIZE")
    if node.attrs["dtype"] != DType.f32:
        raise Unsupported(f"TFLite DEQUANTIZE produces f32, not {node.attrs['dtype']}")
    _dequantize(e, e.t(q), _params(q, node.attrs), out=e.out(node.output))


def _lower_fake_quant(e, node):
    # fake_quant is exactly dequantize(quantize(x)) with the same params (see ir/ops/quant.py).
    x = node.inputs[0]
    _need(node, x, F32, "QUANTIZE")
    a = node.attrs
    dtype = {(8, True): DType.i8, (8, False): DType.u8, (16, True): DType.i16}.get(
        (a["bits"], a["signed"]))
    if dtype is None:
        raise Unsupported(f"fake_quant with {a['bits']} {'signed' if a['signed'] else 'unsigned'}"
                          f" bits has no TFLite integer type (int8, uint8, int16)")
    qp = _params(x, a)
    q = _quantize(e, node, e.t(x), dtype, qp, a["narrow_range"])
    _dequantize(e, q, qp, out=e.out(node.output))


# -- the table ---------------------------------------------------------------------------------

LOWERINGS = {
    **UNARY, **BINARY,
    "identity": _lower_identity, "where": _lower_where, "cast": _lower_cast,
    "clip": _lower_clip, "hard_sigmoid": _lower_hard_sigmoid, "softplus": _lower_softplus,
    "elu": _lower_elu,
    "erf": _lower_erf,
    "conv2d": _lower_conv2d, "depthwise_conv2d": _lower_depthwise,
    "conv2d_transpose": _lower_conv2d_transpose, "matmul": _lower_matmul,
    "max_pool2d": _pool("MAX_POOL_2D"), "avg_pool2d": _pool("AVERAGE_POOL_2D"),
    "softmax": _softmax("SOFTMAX", lambda: fb.SoftmaxOptionsT(beta=1.0)),
    "log_softmax": _softmax("LOG_SOFTMAX", fb.LogSoftmaxOptionsT),
    "batch_norm": _lower_batch_norm, "layer_norm": _lower_layer_norm, "resize": _lower_resize,
    "reduce_sum": _reduce("SUM", NUM), "reduce_mean": _reduce("MEAN", F32),
    "reduce_max": _reduce("REDUCE_MAX", NUM), "reduce_min": _reduce("REDUCE_MIN", NUM),
    "reduce_prod": _reduce("REDUCE_PROD", NUM),
    "argmax": _arg("ARG_MAX", fb.ArgMaxOptionsT), "argmin": _arg("ARG_MIN", fb.ArgMinOptionsT),
    "reshape": _lower_reshape, "transpose": _lower_transpose, "concat": _lower_concat,
    "split": _lower_split, "slice": _lower_slice, "strided_slice": _lower_strided_slice,
    "pad": _lower_pad, "gather": _lower_gather, "broadcast_to": _lower_broadcast_to,
    "squeeze": _lower_squeeze, "expand_dims": _lower_expand_dims, "tile": _lower_tile,
    "quantize": _lower_quantize, "dequantize": _lower_dequantize,
    "fake_quant": _lower_fake_quant,
}


# -- quantized operands -------------------------------------------------------------------------
# Which TFLite integer kernel (int8, int16x8) runs each IR op in the integer form, and what it
# requires of the params. The integer form means "dequantize, float kernel, requantize to the
# result's params" (ir/quantized.py); TFLite's kernels match that only where:
#   SAME:    the kernel moves, compares or averages raw codes (no rescaling), so every
#            quantized operand and result must share one set of params;
#   RESCALE: the kernel requantizes (own multiplier per operand/result), any params;
#   FIXED:   the kernel's output params are fixed (LUT/fixed-point ranges);
#   WEIGHTS: conv/depthwise/matmul, checked by `_weight_mode` (integer or hybrid).
# Ops not listed have no integer lowering here.

SAME = frozenset({"identity", "reshape", "transpose", "concat", "split", "slice",
                  "strided_slice", "pad", "gather", "broadcast_to", "squeeze", "expand_dims",
                  "tile", "max_pool2d", "avg_pool2d", "resize", "reduce_max", "reduce_min",
                  "maximum", "minimum"})
RESCALE = frozenset({"add", "sub", "mul", "relu", "relu6", "hard_swish", "leaky_relu",
                     "reduce_mean", "reduce_sum"})
# (scale, zero point) of the result, per activation dtype (softmax/logistic: [0, 1) in
# 1/256 steps from -128; tanh: [-1, 1) in 1/128 steps; int16: Q0.15).
FIXED = {
    "softmax": {DType.i8: (1 / 256, -128), DType.i16: (1 / 32768, 0)},
    "sigmoid": {DType.i8: (1 / 256, -128), DType.i16: (1 / 32768, 0)},
    "tanh": {DType.i8: (1 / 128, 0), DType.i16: (1 / 32768, 0)},
}
WEIGHTS = frozenset({"conv2d", "depthwise_conv2d", "matmul"})
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
    def run(e, node):
        _check_quantized(node)
        lower(e, node)
    run.__doc__ = lower.__doc__
    return run


LOWERINGS = {op: _guarded(fn) for op, fn in LOWERINGS.items()}


# -- op versions -------------------------------------------------------------------------------
# Each rule gets the operator's input signature [(dtype, shape, quant) or None for an omitted
# optional input], its output signature and its options object, and returns the version.
# Unlisted builtins are version 1 (HARD_SWISH, RESHAPE, SQUEEZE, ... have no int8 branch).
# Only the branches reachable from the lowerings above are spelled out, in op_version.cc's
# order (the first matching branch wins there too).

def _by_dtype(table, default=1):
    return lambda ins, outs, opts: table.get(ins[0][0], default)


def _bcast_rank(ins) -> tuple[bool, int]:
    """(inputs need broadcasting, highest input rank), as NeedBroadcastForBinaryInputs."""
    shapes = [sig[1] for sig in ins[:2]]
    return len(set(shapes)) > 1, max(len(s) for s in shapes)


def _quant_of(sig) -> QuantParams | None:
    return sig[2] if sig is not None and len(sig) > 2 else None


def _is_per_channel(sig) -> bool:
    """op_signature.cc's is_per_channel_quantized: more than one weight scale."""
    qp = _quant_of(sig)
    return qp is not None and len(qp.scale) > 1


def _kinds(ins, outs) -> tuple[DType, DType, DType]:
    """(input, weight, output) dtypes of a conv/FC signature."""
    return ins[0][0], ins[1][0], outs[0][0]


def _v_conv(ins, outs, opts):
    x, w, y = _kinds(ins, outs)
    grouped = isinstance(ins[0][1][3], int) and isinstance(ins[1][1][3], int) \
        and ins[0][1][3] != ins[1][1][3]
    if grouped:
        return 6
    # int16x8 (int16 activations, int8 weights, int64 bias). op_version.cc tests the *filter*
    # for int16 here (and outputs.at(1)), which no 16x8 model matches; version 4 is the
    # release that added the int16 kernel (runtime_version.cc: CONV_2D 4 -> 2.3.0), and
    # quantized_bias_type (version 8) is never set by this backend.
    if x == DType.i16 and w == DType.i8 and y == DType.i16:
        return 4
    if x == w == y == DType.i8:
        return 3
    if x == DType.i8 and w == DType.i4 and y == DType.i8:
        return 7
    if x == DType.f32 and w == DType.i8 and y == DType.f32:
        return 5 if _is_per_channel(ins[1]) else 2     # hybrid, per-channel hybrid
    return 1


def _v_depthwise(ins, outs, opts):
    x, w, y = _kinds(ins, outs)
    if x == DType.i16 and w == DType.i8 and y == DType.i16:
        return 5    # int16x8 (same filter-dtype slip in op_version.cc as CONV_2D)
    if x == DType.f32 and w == DType.i8 and y == DType.f32:
        return 6 if _is_per_channel(ins[1]) else 4     # hybrid
    if x == w == y == DType.i8:
        return 3
    if x == DType.i8 and w == DType.i4 and y == DType.i8:
        return 7
    return 2 if (opts.dilationHFactor, opts.dilationWFactor) != (1, 1) else 1


def _v_fully_connected(ins, outs, opts):
    x, w, y = _kinds(ins, outs)
    hybrid = x == DType.f32 and w == DType.i8 and y == DType.f32
    if hybrid and _is_per_channel(ins[1]):
        return 12
    # int16x8: op_version.cc's version-7 branch also reads an int16 filter (see CONV_2D);
    # 7 is the int16 kernel's version.
    if x == DType.i16 and w == DType.i8 and y == DType.i16:
        return 7
    # An omitted bias is passed as -1 (3 inputs), which stays below version 6.
    if opts.keepNumDims:
        return 5
    if x == w == y == DType.i8:
        return 4
    if x == DType.i8 and w == DType.i4 and y == DType.i8:
        return 10
    if hybrid:
        return 9 if opts.asymmetricQuantizeInputs else 3
    return 1


def _v_mul(ins, outs, opts):
    dt = ins[0][0]
    if dt == DType.i64:
        return 5
    if dt == DType.i16:
        return 4    # quantized int16 (7 is the unquantized int16 kernel)
    qs = [_quant_of(ins[0]), _quant_of(ins[1]), _quant_of(outs[0])]
    if all(q is not None for q in qs) and \
            qs[0].scale[0] * qs[1].scale[0] / qs[2].scale[0] >= 1.0:
        return 3    # rescale multiplier >= 1
    return 2 if dt == DType.i8 else 1


def _v_resize(align_matters):
    def rule(ins, outs, opts):
        if ins[0][0] == DType.i16:
            return 4
        if opts.halfPixelCenters or (align_matters and opts.alignCorners):
            return 3
        return 2 if ins[0][0] == DType.i8 else 1
    return rule


def _v_binary(high, table):
    """MAXIMUM/MINIMUM/SUB/DIV: broadcasting above rank 4 needs version `high`."""
    def rule(ins, outs, opts):
        if ins[0][0] in table:
            return table[ins[0][0]]
        bcast, rank = _bcast_rank(ins)
        return high if bcast and rank > 4 else 1
    return rule


def _v_transpose(ins, outs, opts):
    dt, rank = ins[0][0], len(ins[0][1])
    if rank > 5:
        return 6
    if dt == DType.i16:
        return 5
    if rank > 4:
        return 4
    return {DType.bool: 3, DType.i8: 2}.get(dt, 1)


def _v_strided_slice(ins, outs, opts):
    if opts.ellipsisMask or opts.newAxisMask:
        return 6
    if len(ins[0][1]) > 4:
        return 4
    return {DType.bool: 3, DType.i8: 2}.get(ins[0][0], 1)


def _v_dequantize(ins, outs, opts, quant=None):
    dt = ins[0][0]
    if dt == DType.i4:
        return 6
    if dt in (DType.i16, DType.f16):
        return 3
    if dt == DType.i8:
        return 5 if quant is not None and quant.axis is not None else 2
    return 1


def _v_cast(ins, outs, opts):
    dts = {ins[0][0], outs[0][0]}
    if dts & {DType.f64, DType.f16}:
        return 5
    return 3 if DType.i8 in dts else 1


def _v_gather(ins, outs, opts):
    if ins[1][0] == DType.i16:
        return 6
    if opts is not None and opts.batchDims != 0:
        return 5
    return {DType.i16: 4, DType.bool: 3, DType.i8: 2}.get(ins[0][0], 1)


_I8_2 = _by_dtype({DType.i8: 2})
_I8_2_I16_3 = _by_dtype({DType.i8: 2, DType.i16: 3})

VERSIONS = {
    "CONV_2D": _v_conv,
    "DEPTHWISE_CONV_2D": _v_depthwise,
    "TRANSPOSE_CONV": lambda i, o, p: 4 if p.fusedActivationFunction else
    (3 if len(i) == 4 and i[3] is not None else 1),
    "FULLY_CONNECTED": _v_fully_connected,
    "BATCH_MATMUL": _by_dtype({DType.i8: 2, DType.i16: 3}),
    # int16 ADD/SUB here are always quantized with general scales (pot_scale_int16 false).
    "ADD": _by_dtype({DType.i64: 4, DType.i16: 3, DType.i8: 2}),
    "SUB": _v_binary(3, {DType.i16: 5, DType.i64: 4, DType.i8: 2}),
    "MUL": _v_mul,
    "DIV": _v_binary(2, {}),
    "MAXIMUM": _v_binary(3, {DType.i16: 4, DType.i8: 2}),
    "MINIMUM": _v_binary(3, {DType.i16: 4, DType.i8: 2}),
    "ABS": _by_dtype({DType.i32: 5, DType.i16: 4, DType.i8: 2, DType.u8: 2}),
    "SIGN": _by_dtype({DType.i32: 2}),
    "RELU": _by_dtype({DType.i16: 3, DType.i8: 2, DType.u8: 2}),
    "LEAKY_RELU": _by_dtype({DType.i16: 2}),
    "TANH": _I8_2_I16_3, "LOGISTIC": _I8_2_I16_3,
    "SOFTMAX": _I8_2_I16_3, "MEAN": _I8_2_I16_3, "MIRROR_PAD": _I8_2_I16_3,
    "REDUCE_MAX": _I8_2_I16_3, "REDUCE_MIN": _I8_2_I16_3, "RELU6": _I8_2_I16_3,
    "RSQRT": _I8_2_I16_3, "LESS": _I8_2_I16_3, "GREATER_EQUAL": _I8_2_I16_3,
    "CONCATENATION": _I8_2_I16_3, "MAX_POOL_2D": _I8_2_I16_3, "AVERAGE_POOL_2D": _I8_2_I16_3,
    "SUM": _I8_2, "LOG_SOFTMAX": _I8_2, "GREATER": _I8_2, "LESS_EQUAL": _I8_2, "SPLIT_V": _I8_2,
    "EXP": _by_dtype({DType.i8: 2, DType.i16: 2}), "LOG": _by_dtype({DType.i8: 2, DType.i16: 2}),
    "REDUCE_PROD": _by_dtype({DType.i8: 2, DType.i16: 2}),
    "EQUAL": _by_dtype({DType.i16: 4, DType.i8: 2}), "NOT_EQUAL": _I8_2,
    "ARG_MAX": _by_dtype({DType.bool: 3, DType.i8: 2}),
    "ARG_MIN": _by_dtype({DType.bool: 3, DType.i8: 2}),
    "TRANSPOSE": _v_transpose,
    "STRIDED_SLICE": _v_strided_slice,
    "SLICE": lambda i, o, p: 5 if len(i[0][1]) > 4 else
    {DType.i16: 4, DType.i8: 2}.get(i[0][0], 1),
    "PAD": lambda i, o, p: 4 if len(i[0][1]) > 4 else {DType.i16: 3, DType.i8: 2}.get(i[0][0], 1),
    "PADV2": lambda i, o, p: 4 if len(i[0][1]) > 4 else
    {DType.i16: 3, DType.i8: 2}.get(i[0][0], 1),
    "TILE": _by_dtype({DType.i8: 3}),
    "GATHER": _v_gather,
    "RESIZE_BILINEAR": _v_resize(align_matters=False),
    "RESIZE_NEAREST_NEIGHBOR": _v_resize(align_matters=True),
    # Version 1 was rolled back when BROADCAST_TO moved past code 127.
    "BROADCAST_TO": _by_dtype({DType.i8: 3, DType.i16: 3}, default=2),
    "CAST": _v_cast,
    "QUANTIZE": lambda i, o, p, quant=None: 4 if DType.i4 in (i[0][0], o[0][0]) else
    (3 if quant is not None and quant.axis is not None else (2 if o[0][0] == DType.i16 else 1)),
    "DEQUANTIZE": _v_dequantize,
    "GELU": _by_dtype({DType.i8: 2, DType.u8: 2}),
}


def op_version(code: str, ins, outs, options, quant: QuantParams | None = None) -> int:
    """The lowest version of builtin `code` supporting this signature (op_version.cc).

    `ins`/`outs` are [(DType, shape)] (None for an omitted optional input); `quant` is the
    per-axis-relevant quantization of the QUANTIZE output / DEQUANTIZE input."""
    rule = VERSIONS.get(code)
    if rule is None:
        return 1
    if code in ("QUANTIZE", "DEQUANTIZE"):
        return rule(ins, outs, options, quant=quant)
    return rule(ins, outs, options)
