"""Affine quantization ops: quantize (float -> int codes), dequantize (codes -> float) and
fake_quant (the quantize-dequantize round trip used by quantization-aware training).

real = scale * (q - zero_point), per tensor (axis None, one scale) or per slice of `axis`.

Rounding follows TFLite's reference QUANTIZE kernel (reference_ops::AffineQuantize):
q = clamp(TfLiteRound(x / float(scale)) + zero_point, qmin, qmax), where TfLiteRound is
std::round, i.e. round half AWAY from zero (not NumPy's half-to-even), and the division is done
in float32. Dequantize follows reference_ops::Dequantize: float(double(scale) * (q - zp)).
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np

from ..types import DType, QuantParams
from .registry import Attr, OpDef, check, normalize_axis, register_op

PURE = frozenset({"pure"})
QUANT_DTYPES = (DType.i4, DType.i8, DType.u8, DType.i16, DType.i32)
FLOAT_DTYPES = (DType.f32, DType.f16, DType.bf16, DType.f64)


def _check_params(name, x, attrs, bits, signed, narrow_range):
    """QuantParams built from the attrs (axis normalized), or InferenceError listing every
    problem (scale/zero-point counts, scale > 0, zero point in range, per-axis slice count)."""
    axis = attrs["axis"]
    if axis is not None:
        axis = normalize_axis(axis, x.rank, f"{name} axis")
    qp = QuantParams(attrs["scale"], attrs["zero_point"], axis, bits, signed, narrow_range)
    problems = qp.problems(x)
    check(not problems, f"{name}: " + "; ".join(problems))
    return qp


def _bits_signed(dtype):
    return dtype.bits, dtype != DType.u8


def _param_shape(x, attrs):
    """Shape to which scale/zero_point reshape so they broadcast against x."""
    axis = attrs["axis"]
    if axis is None:
        return (1,) * x.ndim
    shape = [1] * x.ndim
    shape[axis % x.ndim] = -1
    return tuple(shape)


# Half-width of the band around a .5 tie that `round_half_away` rounds the other way (0:
# none); set only inside `near_ties_rounded_the_other_way`.
_TIE_BAND = [0.0]


@contextmanager
def near_ties_rounded_the_other_way(band: float):
    """Within this block every quantization rounding (the `quantize` kernel and quantized
    results, ir/quantized.py) whose real code lies within `band` of a .5 tie goes the other
    way: what an integer kernel with a different accumulator or requantization rounding does
    to a few codes. Verification runs a model once more inside it to measure how far such
    one-code differences move its outputs."""
    previous, _TIE_BAND[0] = _TIE_BAND[0], band
    try:
        yield
    finally:
        _TIE_BAND[0] = previous


def round_half_away(v: np.ndarray) -> np.ndarray:
    """Round half away from zero (std::round, TFLite's rounding), as float64; adding 0.5 is
    exact in f64 for f32 inputs."""
    rounded = np.trunc(v + np.copysign(0.5, v))
    if _TIE_BAND[0]:
        near = np.abs(np.abs(v - np.trunc(v)) - 0.5) < _TIE_BAND[0]
        # The other neighbour of v: one code towards zero if we rounded away, else away.
        other = np.where(np.abs(rounded) > np.abs(v), rounded - np.sign(v), rounded + np.sign(v))
        rounded = np.where(near, other, rounded)
    return rounded


def _codes(x, attrs, qmin, qmax):
    """The integer codes as float64 (exact for |q| < 2^53)."""
    shape = _param_shape(x, attrs)
    # Divide in float32 like TFLite (f64 operands keep f64).
    ftype = np.float64 if x.dtype == np.float64 else np.float32
    scale = np.asarray(attrs["scale"], ftype).reshape(shape)
    zp = np.asarray(attrs["zero_point"], np.float64).reshape(shape)
    v = (x.astype(ftype) / scale).astype(np.float64)
    return np.clip(round_half_away(v) + zp, qmin, qmax)


def _dequant(q, attrs, out_dtype):
    shape = _param_shape(q, attrs)
    scale = np.asarray(attrs["scale"], np.float64).reshape(shape)
    zp = np.asarray(attrs["zero_point"], np.float64).reshape(shape)
    return ((q.astype(np.float64) - zp) * scale).astype(out_dtype)


_PARAM_ATTRS = {
    "scale": Attr("floats", doc="one per tensor, or one per slice of axis"),
    "zero_point": Attr("ints"),
    "axis": Attr("int", None, optional=True, doc="per-axis dim; None = per-tensor"),
}


# -- quantize ----------------------------------------------------------------------------------

def _infer_quantize(types, attrs):
    (x,) = types
    check(x.dtype.is_float, f"quantize needs a float operand, got {x.dtype}")
    dtype = attrs["dtype"]
    check(dtype in QUANT_DTYPES,
          f"quantize: dtype must be one of {', '.join(map(str, QUANT_DTYPES))}, got {dtype}")
    _check_params("quantize", x, attrs, *_bits_signed(dtype), attrs["narrow_range"])
    return [x.with_dtype(dtype)]


def _quantize_kernel(ins, attrs):
    bits, signed = _bits_signed(attrs["dtype"])
    qp = QuantParams((1.0,), (0,), None, bits, signed, attrs["narrow_range"])
    q = _codes(ins[0], attrs, qp.qmin, qp.qmax)
    # Through int64: NumPy cannot cast float straight to ml_dtypes.int4.
    return [q.astype(np.int64).astype(attrs["dtype"].np)]


register_op(OpDef(
    "quantize", ("x",), _infer_quantize, _quantize_kernel,
    attrs={**_PARAM_ATTRS,
           "dtype": Attr("dtype", DType.i8, choices=QUANT_DTYPES),
           "narrow_range": Attr("bool", False, doc="drop the lowest code (e.g. [-127, 127])")},
    traits=PURE, doc="Float to integer codes: clamp(round(x/scale) + zero_point).",
))


# -- dequantize --------------------------------------------------------------------------------

def _infer_dequantize(types, attrs):
    (q,) = types
    check(q.dtype in QUANT_DTYPES, f"dequantize needs an integer operand of "
                                   f"{', '.join(map(str, QUANT_DTYPES))}, got {q.dtype}")
    check(attrs["dtype"].is_float, f"dequantize: dtype must be float, got {attrs['dtype']}")
    _check_params("dequantize", q, attrs, *_bits_signed(q.dtype), False)
    return [q.with_dtype(attrs["dtype"])]


register_op(OpDef(
    "dequantize", ("q",), _infer_dequantize,
    lambda ins, a: [_dequant(ins[0], a, a["dtype"].np)],
    attrs={**_PARAM_ATTRS, "dtype": Attr("dtype", DType.f32, choices=FLOAT_DTYPES)},
    # Never folded: dequantize(int8 constant) is how a quantized weight is stored.
    traits=PURE | {"no_fold"}, doc="Integer codes to float: (q - zero_point) * scale.",
))


# -- fake_quant --------------------------------------------------------------------------------
# Not TF's FakeQuantWithMinMaxVars (which nudges min/max to make zero exact and rounds half up):
# this is the affine QAT form, bit-identical to dequantize(quantize(x)) with the same params.

def _fake_quant_params(attrs):
    return QuantParams((1.0,), (0,), None, attrs["bits"], attrs["signed"], attrs["narrow_range"])


def _infer_fake_quant(types, attrs):
    (x,) = types
    check(x.dtype.is_float, f"fake_quant needs a float operand, got {x.dtype}")
    _check_params("fake_quant", x, attrs, attrs["bits"], attrs["signed"], attrs["narrow_range"])
    return [x]


def _fake_quant_kernel(ins, attrs):
    qp = _fake_quant_params(attrs)
    q = _codes(ins[0], attrs, qp.qmin, qp.qmax)
    return [_dequant(q, attrs, ins[0].dtype)]


register_op(OpDef(
    "fake_quant", ("x",), _infer_fake_quant, _fake_quant_kernel,
    attrs={**_PARAM_ATTRS,
           "bits": Attr("int", 8), "signed": Attr("bool", True),
           "narrow_range": Attr("bool", False)},
    traits=PURE, doc="Quantize then dequantize in one op (float in, float out).",
))
