"""Semantics of quantized values: the integer form that `lower-quantized` produces.

A value is *quantized* when its dtype is an integer storage type (i4, i8, u8, i16, i32, i64)
and it carries `QuantParams`; it stands for the real tensor scale * (q - zero_point). Like
MLIR's `!quant.uniform` element types, quantization lives on values, not on ops: every op
except the boundary ops (`constant`, `quantize`, `dequantize`) may take quantized operands
and produce quantized results, with the meaning

    quantize_out( float_kernel( dequantize(quantized operands), float operands ) )

i.e. the op computes on real values and each quantized result is rounded (half away from
zero, like TFLite) and clamped to its own params. That is exactly what an integer kernel with
int32 accumulation and a requantization multiplier approximates, so the interpreter can check
integer graphs against LiteRT to within one code. A float result of an op with quantized
operands is a hybrid op (TFLite's dynamic-range kernels: int8 weights, float activations).
`quantize` of a quantized operand is a requantization.

A hybrid conv2d / depthwise_conv2d / matmul (float activation, quantized constant weight,
float result) also quantizes its activation on the fly, as TFLite's dynamic-range kernels do:
int8, asymmetric, one scale and zero point per batch element (per row of the contraction for
matmul), so the interpreter models the error those kernels really make.

Type inference sees quantized operands as f32 (`real_type`); a quantized result must have the
inferred shape and an integer storage dtype.
"""

from __future__ import annotations

import numpy as np

from .ops.quant import near_ties_rounded_the_other_way, round_half_away  # noqa: F401
from .types import DType, QuantParams, TensorType

STORAGE_DTYPES = frozenset({DType.i4, DType.i8, DType.u8, DType.i16, DType.i32, DType.i64})
# Ops whose kernels handle quantization themselves: constants hold codes, quantize/dequantize
# take their params from attributes.
BOUNDARY_OPS = frozenset({"constant", "quantize", "dequantize"})


def is_quantized(value) -> bool:
    """True for a value holding integer codes with quantization params."""
    return value.quant is not None and value.type.dtype in STORAGE_DTYPES


def real_type(value) -> TensorType:
    """The type an op's inference rule sees: f32 for a quantized value, else its own type."""
    return value.type.with_dtype(DType.f32) if is_quantized(value) else value.type


def operand_types(op: str, inputs) -> list[TensorType]:
    """Operand types for inference of `op`: quantized operands read as f32, except for the
    boundary ops, whose kernels read the codes."""
    if op in ("dequantize", "constant"):
        return [v.type for v in inputs]
    return [real_type(v) for v in inputs]


def _param_shape(qp: QuantParams, ndim: int) -> tuple[int, ...]:
    if qp.axis is None:
        return (1,) * ndim
    shape = [1] * ndim
    shape[qp.axis] = -1
    return tuple(shape)


def dequantize_array(codes: np.ndarray, qp: QuantParams) -> np.ndarray:
    """The real values of `codes` under `qp`, as float32 (TFLite's Dequantize: double math)."""
    shape = _param_shape(qp, codes.ndim)
    scale = np.asarray(qp.scale, np.float64).reshape(shape)
    zp = np.asarray(qp.zero_point, np.float64).reshape(shape)
    return ((codes.astype(np.float64) - zp) * scale).astype(np.float32)


def quantize_array(x: np.ndarray, qp: QuantParams, dtype: DType) -> np.ndarray:
    """Codes of real values `x` under `qp`: clamp(round_half_away(x / scale) + zp) in `dtype`,
    dividing in float32 like TFLite's AffineQuantize."""
    shape = _param_shape(qp, x.ndim)
    scale = np.asarray(qp.scale, np.float32).reshape(shape)
    zp = np.asarray(qp.zero_point, np.float64).reshape(shape)
    v = (np.asarray(x, np.float32) / scale).astype(np.float64)
    codes = np.clip(round_half_away(v) + zp, qp.qmin, qp.qmax)
    return codes.astype(np.int64).astype(dtype.np)


HYBRID_OPS = frozenset({"conv2d", "depthwise_conv2d", "matmul"})


def is_hybrid(node) -> bool:
    """A dynamic-range node: float activation and result, quantized constant weight."""
    return (node.op in HYBRID_OPS and len(node.inputs) >= 2
            and node.inputs[0].type.dtype.is_float and is_quantized(node.inputs[1])
            and node.inputs[1].const is not None
            and not any(is_quantized(v) for v in node.outputs))


def dynamic_quantize(x: np.ndarray, row_size: int) -> np.ndarray:
    """Real values of `x` after asymmetric int8 quantization with its own params per run of
    `row_size` elements (TFLite's tensor_utils::AsymmetricQuantizeFloats)."""
    flat = np.asarray(x, np.float32).reshape(-1, row_size)
    lo = np.minimum(flat.min(axis=1, keepdims=True), 0).astype(np.float64)
    hi = np.maximum(flat.max(axis=1, keepdims=True), 0).astype(np.float64)
    span = hi - lo
    scale = np.where(span > 0, span / 255.0, 1.0)
    zp = np.clip(np.round(-128 - lo / scale), -128, 127)
    v = flat / scale
    codes = np.clip(round_half_away(v.astype(np.float64)) + zp, -128, 127)
    return ((codes - zp) * scale).astype(np.float32).reshape(x.shape)


def hybrid_input(node, x: np.ndarray) -> np.ndarray:
    """The activation a hybrid node really computes with (see dynamic_quantize)."""
    if node.op == "matmul":
        row = x.shape[-2] if node.attrs.get("transpose_a") else x.shape[-1]
        if node.attrs.get("transpose_a"):
            return np.swapaxes(dynamic_quantize(np.swapaxes(x, -1, -2), row), -1, -2)
        return dynamic_quantize(x, row)
    return dynamic_quantize(x, int(np.prod(x.shape[1:])))
