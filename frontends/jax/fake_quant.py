"""Lowering of the QAT fake-quant marker (`tensorforge.quantization.fake_quant`) to IR
`quantize` -> `dequantize`: the op-table entry `jit:tensorforge_fake_quant`.

The marker is the jit equation named by `passes.quantize.fake_quant.marker_name` (its contract);
under `jax.grad` the transposed copy keeps the name but not the `(x, min, max) -> y` signature,
so `matches_marker` rejects it and the lifter inlines it.
"""

from __future__ import annotations

import numpy as np

from ...ir.types import DType, QuantParams
from ...passes.quantize.fake_quant import MARKER, STORAGE_DTYPES, parse_marker, signed_nudge
from .context import Const, LiftError

KEY = f"jit:{MARKER}"  # the op-table key (`context._marker`)

def matches_marker(eqn) -> bool:
    """True for the forward marker equation itself: `(x, min, max) -> y` with a marker name
    (transposed / linearized copies of the jit, made by JAX transformations, keep the name
    but not this signature)."""
    if parse_marker(eqn.params.get("name", "")) is None:
        return False
    if len(eqn.invars) != 3 or len(eqn.outvars) != 1:
        return False
    return tuple(eqn.invars[0].aval.shape) == tuple(eqn.outvars[0].aval.shape)


def lower_fake_quant(ctx, eqn, ins):
    """Lifts a marker equation to IR `quantize` (i8 / i16 codes) -> `dequantize` with the nudged
    params: scale = nudged scale, zero_point = nudged zp - 2^(bits-1) (TF's unsigned codes
    shifted to signed storage), narrow_range as given (int8 codes [-127, 127]). min/max must
    be constants at conversion time; a constant x (a weight) becomes integer codes + dequantize.
    """
    bits, narrow, axis = parse_marker(eqn.params["name"])
    x, lo, hi = ins
    problems = []
    if bits not in STORAGE_DTYPES:
        problems.append(f"{bits}-bit fake_quant has no IR storage type (supported: 8 -> i8, "
                        f"16 -> i16)")
    for what, v in (("min", lo), ("max", hi)):
        if not isinstance(v, Const):
            problems.append(f"fake_quant {what} is not a constant at conversion time (it must "
                            f"come from params/literals, not from the inputs)")
    if not ctx.dtype(x).is_float:
        problems.append(f"fake_quant of {ctx.dtype(x)} (needs a float tensor)")
    if problems:
        raise LiftError("; ".join(problems))
    scale, zp = signed_nudge(lo.array, hi.array, bits=bits, narrow_range=narrow)
    scale, zp = np.ravel(scale), np.ravel(zp)
    bad = ~(np.isfinite(scale) & (scale > 0))
    if bad.any():
        raise LiftError(f"fake_quant range is empty or invalid (min must be < max): min="
                        f"{np.ravel(lo.array)[bad].tolist()}, max="
                        f"{np.ravel(hi.array)[bad].tolist()}")
    dtype = STORAGE_DTYPES[bits]
    params = {"scale": [float(s) for s in scale], "zero_point": [int(z) for z in zp],
              "axis": axis}
    qp = QuantParams(params["scale"], params["zero_point"], axis, bits, True, narrow)
    q = ctx.emit("quantize", [x], {**params, "dtype": dtype, "narrow_range": narrow})
    if isinstance(q, Const):
        # A constant (weight): keep QDQ form, integer codes + a dequantize node, not a fold.
        q = ctx.value(q)
    q.quant = qp
    return ctx.emit("dequantize", [q], {**params, "dtype": ctx.dtype(x)})


lower_fake_quant.matches = matches_marker
