"""Lowerings of quantize, dequantize and fake_quant (QUANTIZE, DEQUANTIZE, and the MAXIMUM
that narrows TFLite's full-range QUANTIZE).
"""

from __future__ import annotations

import numpy as np

from ....ir.types import DType, QuantParams
from .common import F32, Unsupported, _need, emit
from .weights import _expanded_by_users, read_by_int4_fc

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
    if read_by_int4_fc(node):
        return  # blockwise int4 rows: FULLY_CONNECTED reads the codes (int4_fc_weight)
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


LOWERINGS = {
    "quantize": _lower_quantize, "dequantize": _lower_dequantize,
    "fake_quant": _lower_fake_quant,
}
