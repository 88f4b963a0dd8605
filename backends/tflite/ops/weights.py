"""The weight operand of conv2d, depthwise_conv2d, conv2d_transpose and matmul in TFLite's
layout: which form the node takes (float, integer or hybrid) and what TFLite requires of its
quantized weight and bias, the params moved to TFLite's per-channel axis, the zero bias the
CONV_2D kernels need, and weights stored compressed (weight-only schemes, float16) that one
DEQUANTIZE expands.
"""

from __future__ import annotations

import numpy as np

from ....ir.quantized import is_quantized
from ....ir.types import DType, QuantParams
from .common import QACT, Unsupported, _param, _static, emit, fb


# The three forms of a conv/depthwise/matmul node (ir/quantized.py):
#   float:   float activations and weights.
#   integer: int8 (or int16) quantized activations, int8 per-tensor/per-channel symmetric
#            constant weights, int32 (int64 for int16) bias of scale s_in * s_w[c], zp 0.
#   hybrid:  float activations and result, int8 quantized constant weight, float bias
#            (TFLite's dynamic-range kernels quantize the input on the fly).
# TFLite's per-channel axis is the output channel of its own filter layout, so the IR axis
# (the output channel of the IR layout) moves with the re-layout (the table in
# docs/design/quantization.md).

_BLOCK_ROWS = 128


def last_axis_first(arr: np.ndarray) -> np.ndarray:
    """`arr` with its last axis moved to the front, contiguous (HWIO -> OHWI; a matrix's
    transpose). Large arrays are copied 128 rows at a time: numpy's one strided copy of a
    wide power-of-two transpose misses the cache on nearly every element (a [4608, 512]
    ResNet filter: 11 ms against 5.5 ms in blocks)."""
    arr = np.asarray(arr)
    if arr.ndim < 2:
        return np.ascontiguousarray(arr)
    rows = arr.reshape(-1, arr.shape[-1]) if arr.flags.c_contiguous else None
    if rows is None or arr.nbytes < (1 << 20):
        return np.ascontiguousarray(np.moveaxis(arr, -1, 0))
    m, n = rows.shape
    out = np.empty((n, m), arr.dtype)
    for start in range(0, m, _BLOCK_ROWS):
        out[:, start:start + _BLOCK_ROWS] = rows[start:start + _BLOCK_ROWS].T
    return out.reshape((arr.shape[-1], *arr.shape[:-1]))


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
    if w.quant.axis is None:
        # Per-tensor weights take a per-tensor bias (XNNPACK refuses a per-channel one).
        qp = QuantParams(tuple(_bias_scales(x, w)[:1]), (0,), None)
    else:
        scales = np.broadcast_to(_bias_scales(x, w), (channels,))
        qp = QuantParams(scales, (0,) * channels, 0)
    return e.const(np.zeros(channels, dt), f"{e.prefix}/zero_bias", quant=qp)


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


def int4_fc_weight(e, b, key: str, relayout, transpose_b: bool):
    """FULLY_CONNECTED's int4 weight tensor for a weight-only int4 matmul operand `b`, or
    None when `b` is not one. LiteRT has no float kernel for int4 weights (only a DEQUANTIZE
    that expands the whole table into float memory at prepare time); its int4 FULLY_CONNECTED
    kernels (XNNPACK's, with a reference fallback) read the packed codes directly and
    quantize the activations per row at run time, as ai-edge-quantizer's int4 models do:

    - per channel: `dequantize` of an int4 constant with symmetric params on the output
      channel axis; the codes re-laid out to [N, K] keep their per-channel params;
    - blockwise (`_blockwise_weight`, 4-bit): the rows [N*K/B, B] reshaped to [N, K], with
      BlockwiseQuantization details pointing at a float16 [N, K/B] scale tensor (XNNPACK
      takes float16 scales only; the quantize pass rounded them to float16 values)."""
    p = b.producer
    if p is not None and p.op == "dequantize" and p.inputs[0].const is not None:
        src = p.inputs[0]
        qp = src.quant
        out_axis = 0 if transpose_b else 1
        if (src.type.dtype != DType.i4 or qp is None or qp.axis != out_axis
                or any(qp.zero_point) or p.attrs["dtype"] != DType.f32):
            return None
        return e.derived(src, f"{key}_int4", relayout, quant=_moved(qp, 0))
    if not (transpose_b and _blockwise_weight(b)):
        return None
    dq = p.inputs[0].producer
    rows = dq.inputs[0]
    qp = rows.quant
    if rows.type.dtype != DType.i4 or any(qp.zero_point) or dq.attrs["dtype"] != DType.f32:
        return None
    n, k = (int(d) for d in b.type.shape)
    block = int(rows.type.shape[1])
    scales = np.asarray(qp.scale, np.float32).reshape(n, k // block).astype(np.float16)
    scale_tensor = e.const(scales, f"{e.value_name(rows)}/block_scales")
    codes = e.derived(rows, "fc_blockwise", lambda arr: arr.reshape(n, k))
    e.tensors[codes].quantization = fb.QuantizationParametersT(
        detailsType=fb.QuantizationDetails.BlockwiseQuantization,
        details=fb.BlockwiseQuantizationT(scales=scale_tensor, zeroPoints=-1,
                                          blockSize=block))
    return codes


def _int4_blockwise_rows(reshape) -> bool:
    """True when `reshape` is a 4-bit blockwise weight (`_blockwise_weight`) with symmetric
    params dequantized to float32: the form `int4_fc_weight` writes as FC's own weight."""
    if reshape is None or reshape.op != "reshape" or not _blockwise_weight(reshape.output):
        return False
    dq = reshape.inputs[0].producer
    rows = dq.inputs[0]
    return (rows.type.dtype == DType.i4 and not any(rows.quant.zero_point)
            and dq.attrs["dtype"] == DType.f32 and reshape.output.type.rank == 2)


def read_by_int4_fc(node) -> bool:
    """True when `node` (the `reshape` of a blockwise int4 weight, or the `dequantize` of its
    rows) is read only by float matmuls that take the codes themselves (`int4_fc_weight`),
    so it emits nothing of its own."""
    reshape = node if node.op == "reshape" else None
    if node.op == "dequantize":
        users = list(node.output.uses)
        if len(users) != 1 or getattr(users[0][0], "op", None) != "reshape":
            return False
        reshape = users[0][0]
    if not _int4_blockwise_rows(reshape) or not reshape.output.uses:
        return False
    for user, i in reshape.output.uses:
        if getattr(user, "op", None) != "matmul" or i != 1:
            return False
        if not user.attrs["transpose_b"] or user.attrs["transpose_a"]:
            return False
        if any(is_quantized(v) for v in (user.inputs[0], *user.outputs)):
            return False
    return True
