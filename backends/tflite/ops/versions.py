"""TFLite op versions: the lowest version of each builtin whose kernel supports what an
operator uses (dtypes, ranks, options, per-channel or hybrid weights), following
tensorflow/lite/tools/versioning/op_version.cc; `op_version` is what the writer asks.
"""

from __future__ import annotations

from ....ir.types import DType, QuantParams


# Each rule gets the operator's input signature [(dtype, shape, quant) or None for an omitted
# optional input], its output signature and its options object, and returns the version.
# Unlisted builtins are version 1 (HARD_SWISH, RESHAPE, SQUEEZE, ... have no int8 branch).
# Only the branches reachable from the lowerings (this package's family modules) are spelled
# out, in op_version.cc's order (the first matching branch wins there too).

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
    # op_version.cc: a fused activation 4, a bias 3, int16x8 3, int8 2.
    "TRANSPOSE_CONV": lambda i, o, p: 4 if p.fusedActivationFunction else
    3 if (len(i) == 4 and i[3] is not None) or i[2][0] == DType.i16 else
    2 if i[2][0] == DType.i8 else 1,
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
    "REVERSE_V2": _by_dtype({DType.i8: 3, DType.bool: 2}),
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
