"""Quantization parameters from ranges: the arithmetic every quantizer shares.

Follows the TFLite int8 spec (REFERENCES.md): activations asymmetric per tensor with the range
widened to include 0 so that 0 is exactly representable (zero padding must stay exact);
weights symmetric with zero point 0, narrow range [-127, 127] for int8; int16 activations
symmetric with zero point 0.
"""

from __future__ import annotations

import numpy as np

from ...ir.types import DType, QuantParams

# Fixed output params TFLite's integer kernels require (quantization_spec; int16 from the
# int16x8 kernels): op -> bits -> (scale, zero_point).
FIXED_OUTPUT = {
    "softmax": {8: (1.0 / 256, -128), 16: (1.0 / 32768, 0)},
    "sigmoid": {8: (1.0 / 256, -128), 16: (1.0 / 32768, 0)},
    "tanh": {8: (1.0 / 128, 0), 16: (1.0 / 32768, 0)},
}


# Smallest activation scale: TFLite quantizes fused-activation bounds (relu6's 6.0) with the
# output scale into int32 (kernel_util.cc, no_integer_overflow_from_quantization), so a
# near-constant tensor (untrained nets collapse activations to ~1e-5) must not get a scale
# below 6 / 2^31.
MIN_ACTIVATION_SCALE = 1e-8


def storage_dtype(bits: int, signed: bool = True) -> DType:
    """The IR dtype that stores codes of `bits` bits."""
    table = {(4, True): DType.i4, (8, True): DType.i8, (8, False): DType.u8,
             (16, True): DType.i16, (32, True): DType.i32, (64, True): DType.i64}
    try:
        return table[(bits, signed)]
    except KeyError:
        raise ValueError(f"no storage type for {bits}-bit {'signed' if signed else 'unsigned'} "
                         f"codes") from None


def activation_params(lo: float, hi: float, *, bits: int, symmetric: bool,
                      narrow_range: bool = False) -> QuantParams:
    """Per-tensor params covering [lo, hi] (widened to contain 0)."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    probe = QuantParams((1.0,), (0,), None, bits, True, narrow_range)
    qmin, qmax = probe.qmin, probe.qmax
    if symmetric:
        bound = max(-lo, hi)
        scale = max(bound / qmax, MIN_ACTIVATION_SCALE) if bound > 0 else 1.0
        return QuantParams((scale,), (0,), None, bits, True, narrow_range)
    if hi - lo <= 0:
        return QuantParams((1.0,), (0,), None, bits, True, narrow_range)
    scale = max((hi - lo) / (qmax - qmin), MIN_ACTIVATION_SCALE)
    # Nudge the zero point to an integer (TFLite's ChooseQuantizationParams): pick the one
    # whose implied range loses least, then clamp into the code range.
    zp_from_min = qmin - lo / scale
    zp = int(np.clip(np.round(zp_from_min), qmin, qmax))
    return QuantParams((scale,), (zp,), None, bits, True, narrow_range)


def weight_params(array: np.ndarray, *, bits: int, axis: int | None,
                  narrow_range: bool = True) -> QuantParams:
    """Symmetric params (zero point 0) for a weight, per slice of `axis` or per tensor."""
    probe = QuantParams((1.0,), (0,), None, bits, True, narrow_range)
    arr = np.abs(np.asarray(array, np.float64))
    if axis is None:
        bounds = np.asarray([arr.max() if arr.size else 0.0])
    else:
        other = tuple(i for i in range(arr.ndim) if i != axis)
        bounds = arr.max(axis=other) if arr.size else np.zeros(arr.shape[axis])
    scales = np.where(bounds > 0, bounds / probe.qmax, 1.0)
    return QuantParams(tuple(scales.tolist()), (0,) * len(scales), axis, bits, True,
                       narrow_range)


def bias_params(input_params: QuantParams, weight_params_: QuantParams, *, bits: int,
                channels: int) -> QuantParams:
    """Bias params: zero point 0, scale = input scale x weight scale (per output channel when
    the weight is per-channel), so the bias adds straight into the int32 accumulator."""
    s_in = input_params.scale[0]
    if weight_params_.axis is None:
        return QuantParams((s_in * weight_params_.scale[0],), (0,), None, bits, True)
    scales = tuple(s_in * s for s in weight_params_.scale)
    if len(scales) != channels:
        raise ValueError(f"{len(scales)} weight scales for a bias of {channels} channels")
    return QuantParams(scales, (0,) * channels, 0, bits, True)
