"""Quantization TF ops. Fake-quantization (QAT): FakeQuantWithMinMaxVars, ...PerChannel and
...Args become IR quantize -> dequantize pairs with TF's nudged params. UniformDequantize of
constant codes (stored integer weights: a model Keras quantized, see
`frontends/keras/quantized.py`) becomes an integer constant with those exact codes and params
followed by a dequantize. A reshape of either constant form moves onto its integer codes
(`reshape_dequantized`)."""

from __future__ import annotations

import numpy as np

from ....ir.ops import get_op
from ....ir.types import DType, QuantParams, TensorType
from ....passes.quantize.fake_quant import STORAGE_DTYPES, signed_nudge
from ..context import Const, Lazy, LiftError, ir_dtype
from .common import node_attr


# TF's FakeQuant ops quantize to unsigned codes after nudging the range so that 0 is exactly
# representable; each becomes an IR quantize -> dequantize pair with the nudged params on
# signed codes (`passes/quantize/fake_quant.signed_nudge`, shared with the JAX frontend).

def _fake_quant(ctx, node, ins):
    x = ins[0]
    bits = int(node_attr(node, "num_bits", 8))
    narrow = bool(node_attr(node, "narrow_range", False))
    dtype = STORAGE_DTYPES.get(bits)
    if dtype is None:
        raise LiftError(f"{node.op} with num_bits={bits} is not supported (supported: "
                        f"{', '.join(map(str, STORAGE_DTYPES))})")
    if node.op == "FakeQuantWithMinMaxArgs":
        lo, hi = np.float32(node_attr(node, "min", -6.0)), np.float32(node_attr(node, "max", 6.0))
    else:
        lo, hi = ctx.const(ins[1]), ctx.const(ins[2])
        missing = [n for n, c in (("min", lo), ("max", hi)) if c is None]
        if missing:
            raise LiftError(f"{node.op}: {' and '.join(missing)} must be constant at "
                            f"conversion time (a variable or a constant), but "
                            f"{'they are' if len(missing) > 1 else 'it is'} computed at run "
                            f"time")
    lo, hi = np.asarray(lo, np.float32).ravel(), np.asarray(hi, np.float32).ravel()
    xt = ctx.type(x)
    axis = None
    if node.op == "FakeQuantWithMinMaxVarsPerChannel":
        axis = xt.rank - 1
        n = xt.shape[axis]
        if lo.size != hi.size or (isinstance(n, int) and lo.size != n):
            raise LiftError(f"{node.op}: {lo.size} min and {hi.size} max values for a last "
                            f"dim of {n}")
    elif lo.size != 1 or hi.size != 1:
        raise LiftError(f"{node.op}: min and max must be scalars, got {lo.size} and "
                        f"{hi.size} values")
    bad = [f"[{a}, {b}]" for a, b in zip(lo.tolist(), hi.tolist()) if not a < b]
    if bad:
        raise LiftError(f"{node.op}: empty quantization range {', '.join(bad[:4])} (min must "
                        f"be < max)")
    scale, zp = signed_nudge(lo, hi, bits=bits, narrow_range=narrow)
    params = {"scale": [float(s) for s in scale], "zero_point": [int(z) for z in zp],
              "axis": axis}
    qp = QuantParams(params["scale"], params["zero_point"], axis, bits, True, narrow)
    q_attrs = {**params, "dtype": dtype, "narrow_range": narrow}
    c = ctx.const(x)
    if c is None:
        q = ctx.graph.add("quantize", [ctx.value(x)], q_attrs, scope=ctx.scope,
                          loc=ctx.loc).outputs[0]
        q.quant = qp
        return [_dequantize(ctx, q, params, xt.dtype)]
    # A constant (a kernel): its codes are the weight itself, an integer constant, followed
    # by a dequantize built lazily so that a reshape of it can move onto the codes instead
    # (a depthwise kernel is fake-quantized as [H, W, 1, C*M] and reshaped back, see
    # `_reshape_dequantized`).
    opdef = get_op("quantize")
    codes = opdef.kernel([np.asarray(c)], opdef.complete_attrs(q_attrs))[0]
    base = x.name if isinstance(x, Const) and x.name else \
        (f"{ctx.scope}/weight" if ctx.scope else None)
    qc = Const(codes, node, f"{base}_quantized" if base else None)
    return [_lazy_dequantized(ctx, qc, qp, params, xt)]


def _dequantize(ctx, q, params, dtype):
    # Built directly, never folded: the QDQ pair is what the quantization passes consume.
    return ctx.graph.add("dequantize", [q], {**params, "dtype": dtype}, scope=ctx.scope,
                         loc=ctx.loc).outputs[0]


def _lazy_dequantized(ctx, qc, qp, params, xt):
    def build(c):
        q = c.value(qc)
        q.quant = qp
        return _dequantize(c, q, params, xt.dtype)
    return Lazy(build, xt, list(xt.shape), ctx.scope, ctx.loc,
                ("dequantized_const", qc, qp, params))


def reshape_dequantized(ctx, x, dims):
    """reshape(dequantize(codes)) as dequantize(reshape(codes)) when the quantized axis
    survives whole (same size, same number of elements before it); else None."""
    _, qc, qp, params = x.info
    src = list(qc.array.shape)
    if any(not isinstance(d, (int, np.integer)) for d in dims):
        return None
    dims = [int(d) for d in dims]
    if -1 in dims:
        known = int(np.prod([d for d in dims if d != -1]))
        if known == 0:
            return None
        dims[dims.index(-1)] = qc.array.size // known
    if int(np.prod(dims)) != qc.array.size:
        return None
    axis = qp.axis
    if axis is not None:
        before = int(np.prod(src[:axis]))
        hits = [j for j in range(len(dims))
                if dims[j] == src[axis] and int(np.prod(dims[:j])) == before]
        if not hits:
            return None
        axis = hits[0]
    codes = Const(qc.array.reshape(dims), qc.origin, qc.name)
    new_qp = QuantParams(qp.scale, qp.zero_point, axis, qp.bits, qp.signed, qp.narrow_range)
    new_params = {**params, "axis": axis}
    xt = TensorType(x.type.dtype, dims)
    return _lazy_dequantized(ctx, codes, new_qp, new_params, xt)


def _uniform_dequantize(ctx, node, ins):
    """UniformDequantize(codes, scales, zero_points): real = (codes - zp) * scale, per tensor
    (quantization_axis -1) or per axis. Constant codes only (stored weights): they become an
    integer constant (i4 when the attribute range fits 4 bits, else i8 / i16) carrying these
    params, followed by a dequantize; the codes are kept as they are, never re-quantized."""
    codes, scales, zps = (ctx.const(e) for e in ins[:3])
    if codes is None:
        raise LiftError("UniformDequantize of a run-time tensor is not supported (only "
                        "constant codes, such as stored integer weights)")
    if scales is None or zps is None:
        raise LiftError("UniformDequantize: scales and zero_points must be constant at "
                        "conversion time")
    lo = int(node_attr(node, "quantization_min_val"))
    hi = int(node_attr(node, "quantization_max_val"))
    axis = int(node_attr(node, "quantization_axis", -1))
    bits = next((b for b in (4, 8, 16) if lo >= -(1 << (b - 1)) and hi < (1 << (b - 1))), None)
    if bits is None or lo >= hi:
        raise LiftError(f"UniformDequantize: code range [{lo}, {hi}] does not fit signed 4, 8 "
                        f"or 16 bits")
    dtype = {4: DType.i4, 8: DType.i8, 16: DType.i16}[bits]
    codes = np.asarray(codes)
    if codes.size and (codes.min() < lo or codes.max() > hi):
        raise LiftError(f"UniformDequantize: codes outside the declared range [{lo}, {hi}]")
    scales = np.asarray(scales, np.float32).ravel()
    zps = np.asarray(zps).astype(np.int64).ravel()
    if axis < 0:
        if scales.size != 1 or zps.size != 1:
            raise LiftError("UniformDequantize per tensor takes one scale and zero point")
        axis = None
    elif axis >= codes.ndim or scales.size != codes.shape[axis] or zps.size != scales.size:
        raise LiftError(f"UniformDequantize: {scales.size} scales and {zps.size} zero points "
                        f"for axis {axis} of codes {list(codes.shape)}")
    out_dtype = ir_dtype(node.attr["Tout"].type, "UniformDequantize result")
    narrow = lo == -(1 << (bits - 1)) + 1
    params = {"scale": [float(s) for s in scales], "zero_point": [int(z) for z in zps],
              "axis": axis}
    qp = QuantParams(params["scale"], params["zero_point"], axis, bits, True, narrow)
    name = ins[0].name if isinstance(ins[0], Const) and ins[0].name else \
        "/".join(p for p in (ctx.scope, node.name.rpartition("/")[2]) if p)
    qc = Const(codes.astype(dtype.np), node, name)
    return [_lazy_dequantized(ctx, qc, qp, params, TensorType(out_dtype, list(codes.shape)))]


TABLE = {
    "UniformDequantize": _uniform_dequantize,
    "FakeQuantWithMinMaxVars": _fake_quant, "FakeQuantWithMinMaxVarsPerChannel": _fake_quant,
    "FakeQuantWithMinMaxArgs": _fake_quant,
}
