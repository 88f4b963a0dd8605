"""The fake-quant marker contract shared by JAX QAT (`qat/jax.py`) and the JAX frontend
(`frontends/jax/fake_quant.py`): the marker's name, and TF's Nudge as a NumPy reference.

**Marker.** `tensorforge.qat.jax.fake_quant` runs its forward inside `jax.jit` of a function
named `marker_name(bits, narrow_range, axis)` =
`tensorforge_fake_quant__bits{B}__narrow{0|1}__axis{A|none}` (axis normalized to >= 0), so the
traced jaxpr holds one `jit` equation whose `name` param carries every static setting and
whose operands are `(x, min, max)`. The JAX frontend recognizes the name (`parse_marker`) and
lifts the equation into IR `quantize` -> `dequantize` with the params of `nudge`.

**Nudge** (TF's FakeQuantWithMinMaxVars, tensorflow/core/kernels/fake_quant_ops_functor.h), in
float32, over TF's unsigned codes `[quant_min, quant_max]` = `[narrow_range ? 1 : 0, 2^bits - 1]`
(`ir.types.code_range(bits, signed=False, narrow_range=...)`):
`scale = (max - min) / (quant_max - quant_min)`,
`zp = clamp(round(quant_min - min / scale), quant_min, quant_max)` (half away from zero),
`nudged_min = (quant_min - zp) * scale`, `nudged_max = (quant_max - zp) * scale`.

NumPy and the IR only: both the QAT side (JAX) and the frontend side import it.
"""

from __future__ import annotations

import re

import numpy as np

from ...ir.types import DType, code_range

MARKER = "tensorforge_fake_quant"
# The IR storage dtype of a fake-quant's codes, by bit width (TF's FakeQuant ops and JAX's
# fake_quant take 2..16 bits; the IR stores 8 and 16).
STORAGE_DTYPES = {8: DType.i8, 16: DType.i16}
_MARKER_RE = re.compile(rf"^{MARKER}__bits(\d+)__narrow([01])__axis(none|\d+)$")


def marker_name(bits: int, narrow_range: bool, axis: int | None) -> str:
    """The jit function name that marks a fake-quant in a jaxpr (axis already >= 0)."""
    return f"{MARKER}__bits{bits}__narrow{int(bool(narrow_range))}__axis" \
           f"{'none' if axis is None else int(axis)}"


def parse_marker(name: str) -> tuple[int, bool, int | None] | None:
    """`(bits, narrow_range, axis)` encoded in a marker name, or None if it is not one."""
    m = _MARKER_RE.match(str(name))
    if m is None:
        return None
    return int(m.group(1)), m.group(2) == "1", None if m.group(3) == "none" else int(m.group(3))


def nudge(min_val, max_val, *, bits: int = 8, narrow_range: bool = False):
    """NumPy reference of TF's Nudge: `(scale, zero_point, nudged_min, nudged_max)` as float32
    arrays (zero point in `[quant_min, quant_max]`, TF's unsigned code range), elementwise over
    per-channel `min_val` / `max_val`. Same float32 arithmetic as `qat.jax.fake_quant`."""
    qmin, qmax = code_range(bits, signed=False, narrow_range=narrow_range)
    lo, hi = np.asarray(min_val, np.float32), np.asarray(max_val, np.float32)
    scale = (hi - lo) / np.float32(qmax - qmin)
    zp_from_min = (np.float32(qmin) - lo / scale).astype(np.float64)
    # Half away from zero like std::round; in f64, where adding 0.5 is exact for f32 values.
    zp = np.clip(np.trunc(zp_from_min + np.copysign(0.5, zp_from_min)), qmin, qmax)
    zp = zp.astype(np.float32)
    return scale, zp, (np.float32(qmin) - zp) * scale, (np.float32(qmax) - zp) * scale


def signed_nudge(min_val, max_val, *, bits: int = 8, narrow_range: bool = False):
    """`(scale, zero_point)` of the IR quantize -> dequantize pair a fake-quant lifts to:
    `nudge`'s scale (float32) and its zero point moved from TF's unsigned codes to signed
    storage, `zp - 2^(bits-1)` (int64): TF's [0, 255] / narrow [1, 255] are int8's
    [-128, 127] / narrow [-127, 127]. Both the TF frontend (FakeQuant* ops) and the JAX
    frontend (the `fake_quant` marker) use it."""
    with np.errstate(divide="ignore", invalid="ignore"):  # empty ranges are reported by callers
        scale, zp, _, _ = nudge(min_val, max_val, bits=bits, narrow_range=narrow_range)
    return scale, zp.astype(np.int64) - (1 << (bits - 1))
