"""Quantization-aware training for JAX / Flax: `fake_quant` and the `FakeQuant` linen module.

Public as `tensorforge.quantization.fake_quant` / `tensorforge.quantization.FakeQuant`. Pure JAX
(no TensorFlow): jit-, grad- and vmap-able.

Semantics are TF's FakeQuantWithMinMaxVars (tensorflow/core/kernels/fake_quant_ops_functor.h):

- codes `[quant_min, quant_max]` = `[narrow_range ? 1 : 0, 2^bits - 1]`;
- Nudge, in float32: `scale = (max - min) / (quant_max - quant_min)`,
  `zp = clamp(round(quant_min - min / scale), quant_min, quant_max)`,
  `nudged_min = (quant_min - zp) * scale`, `nudged_max = (quant_max - zp) * scale`, so 0 is
  exactly representable;
- forward: `q = clamp(round(x / scale) + zp, quant_min, quant_max)`, `y = (q - zp) * scale`.
  That equals TF's `clamp -> round((x - nudged_min) / scale) -> dequantize` except at rounding
  ties and the last float ulp; we pick this form because it is bit-identical to the IR's
  `dequantize(quantize(x))` (ir/ops/quant.py), which is what the model lifts to. Rounding is
  half AWAY from zero (std::round, as TFLite's kernels and the IR), not TF's half-up;
- straight-through gradients (TF's FakeQuantWithMinMaxVarsGradient): `dx = g` where
  `nudged_min <= x <= nudged_max` else 0; `dmin` = sum of `g` where `x < nudged_min`; `dmax` =
  sum of `g` where `x > nudged_max` (summed per channel with `axis`).

**Marker.** The forward runs inside `jax.jit` of a function named
`passes.quantize.fake_quant.marker_name(bits, narrow_range, axis)`
(`tensorforge_fake_quant__bits{B}__narrow{0|1}__axis{A|none}`, axis normalized to >= 0), so the
traced jaxpr holds one `jit` equation whose `name` param carries every static setting; its
operands are `(x, min, max)`. The JAX frontend recognizes that name (op-table key
`jit:tensorforge_fake_quant`, `frontends/jax/fake_quant.py`) and lifts the equation into IR
`quantize` -> `dequantize`, instead of inlining it. Under `jax.grad` the transposed equation
keeps the name but has other operands; it is not matched and is simply inlined. The NumPy
reference of the nudge is `passes.quantize.fake_quant.nudge`.
"""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from jax._src import source_info_util

from ..ir.types import code_range
from ..passes.quantize.fake_quant import marker_name

# This file's frames are library frames: JAX leaves them out of user frames (tracebacks and
# source locations), so a lifted fake_quant's loc is the user's line, not a line of ours.
source_info_util.register_exclusion(os.path.dirname(__file__))

_MAX_BITS = 16  # TF's FakeQuant ops accept 2..16 bits


# -- nudging -----------------------------------------------------------------------------------

def _opaque(*xs):
    """`xs` behind an optimization barrier, so that XLA's algebraic simplifier cannot rewrite
    the divisions that use them.

    XLA turns `a / constant` and `a / broadcast(b)` into `a * (1 / b)` and `a / (b / c)` into
    `(a * c) / b`: one more rounding than TF's (NumPy's, the IR's) float32 division, enough to
    flip a nudged zero point sitting on a .5 tie (e.g. [-1, 1] at 8 bits: 127.5). Every
    divisor below is a full-shape, non-constant value behind a barrier; a barrier around a
    lone constant is folded away, hence constants travel with a traced value."""
    out = jax.lax.optimization_barrier(tuple(xs))
    return out if len(xs) > 1 else out[0]


def _nudge(lo, hi, qmin: int, qmax: int):
    """(scale, zero_point, nudged_min, nudged_max) in JAX, in the dtype of lo/hi (TF: f32),
    with true IEEE divisions (see `_opaque`)."""
    dt = lo.dtype
    qmin_f, qmax_f = jnp.asarray(qmin, dt), jnp.asarray(qmax, dt)
    lo, hi, den = _opaque(lo, hi, jnp.full(lo.shape, qmax - qmin, dt))
    scale = _opaque((hi - lo) / den)
    zp_from_min = qmin_f - lo / scale
    zp = jnp.clip(jax.lax.round(zp_from_min, jax.lax.RoundingMethod.AWAY_FROM_ZERO),
                  qmin_f, qmax_f)
    return scale, zp, (qmin_f - zp) * scale, (qmax_f - zp) * scale


# -- fake_quant --------------------------------------------------------------------------------

def _param_shape(ndim: int, axis: int | None) -> tuple[int, ...]:
    if axis is None:
        return ()
    shape = [1] * ndim
    shape[axis] = -1
    return tuple(shape)


@functools.lru_cache(maxsize=None)
def _marker_fn(bits: int, narrow_range: bool, axis: int | None):
    """The jitted, named custom-VJP fake-quant for one static configuration (cached so that
    jit's cache is reused across calls)."""
    qmin, qmax = code_range(bits, signed=False, narrow_range=narrow_range)

    def ranges(x, lo, hi):
        shape = _param_shape(x.ndim, axis)
        lo = jnp.reshape(lo, shape).astype(x.dtype)
        hi = jnp.reshape(hi, shape).astype(x.dtype)
        return _nudge(lo, hi, qmin, qmax)

    @jax.custom_vjp
    def fq(x, lo, hi):
        scale, zp, _, _ = ranges(x, lo, hi)
        x_, scale_ = _opaque(x, jnp.broadcast_to(scale, x.shape))
        r = jax.lax.round(x_ / scale_, jax.lax.RoundingMethod.AWAY_FROM_ZERO)
        q = jnp.clip(r + zp, jnp.asarray(qmin, x.dtype), jnp.asarray(qmax, x.dtype))
        return (q - zp) * scale

    def fwd(x, lo, hi):
        return fq(x, lo, hi), (x, lo, hi)

    def bwd(res, g):
        x, lo, hi = res
        _, _, nmin, nmax = ranges(x, lo, hi)
        below, above = x < nmin, x > nmax
        zero = jnp.zeros_like(g)
        dx = jnp.where(below | above, zero, g)
        red = tuple(i for i in range(x.ndim) if i != axis)
        dlo = jnp.sum(jnp.where(below, g, zero), axis=red).reshape(lo.shape).astype(lo.dtype)
        dhi = jnp.sum(jnp.where(above, g, zero), axis=red).reshape(hi.shape).astype(hi.dtype)
        return dx, dlo, dhi

    fq.defvjp(fwd, bwd)

    def marked(x, lo, hi):
        return fq(x, lo, hi)
    # jit names its equation after the function: the frontend's marker (see module doc).
    marked.__name__ = marked.__qualname__ = marker_name(bits, narrow_range, axis)
    return jax.jit(marked)


def fake_quant(x, min_val, max_val, *, bits: int = 8, narrow_range: bool = False,
               axis: int | None = None):
    """Fake-quantizes `x` to `bits` bits over the nudged range of `[min_val, max_val]`, with
    TF FakeQuantWithMinMaxVars semantics and straight-through gradients (see module doc).

    `min_val` / `max_val` are scalars (per tensor) or, with `axis`, vectors of
    `x.shape[axis]` entries (per channel). Requires `min_val < max_val`. Pure JAX; jit/grad-able.
    The tensorforge JAX frontend lifts it to IR `quantize` -> `dequantize` when min/max are
    constants at conversion time (e.g. Flax params)."""
    if not isinstance(bits, (int, np.integer)) or not 2 <= int(bits) <= _MAX_BITS:
        raise ValueError(f"fake_quant: bits must be an int in [2, {_MAX_BITS}], got {bits!r}")
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"fake_quant needs a floating-point x, got {x.dtype}")
    lo, hi = jnp.asarray(min_val), jnp.asarray(max_val)
    if not jnp.issubdtype(lo.dtype, jnp.floating):
        lo = lo.astype(x.dtype)
    if not jnp.issubdtype(hi.dtype, jnp.floating):
        hi = hi.astype(x.dtype)
    if axis is not None:
        if not -x.ndim <= axis < x.ndim:
            raise ValueError(f"fake_quant: axis {axis} out of range for rank {x.ndim}")
        axis = int(axis) % x.ndim
        n = x.shape[axis]
        for what, v in (("min_val", lo), ("max_val", hi)):
            if v.size != n:
                raise ValueError(f"fake_quant: per-channel {what} needs {n} entries "
                                 f"(x.shape[{axis}]), got shape {v.shape}")
    else:
        for what, v in (("min_val", lo), ("max_val", hi)):
            if v.size != 1:
                raise ValueError(f"fake_quant: per-tensor {what} must be a scalar, got shape "
                                 f"{v.shape} (pass axis= for per-channel ranges)")
    return _marker_fn(int(bits), bool(narrow_range), axis)(x, lo, hi)


# -- Flax module -------------------------------------------------------------------------------

class FakeQuant(nn.Module):
    """Fake-quantization with a learned range (QAT), for Flax linen.

    Params: `min` and `max` (asymmetric), or only `max` (`symmetric=True`, range
    `[-max, max]`). Shapes: scalar, or `[x.shape[axis]]` with `axis` (per channel). They are
    initialized from the first batch seen by `init`: `min = min(x.min(), 0)`,
    `max = max(x.max(), 0)` (symmetric: `max = max|x|`), widened to at least 1e-6 so the
    range is never empty, then trained by the straight-through gradients of `fake_quant`.
    `narrow_range` defaults to `symmetric` (codes [-127, 127] for int8 weights)."""

    bits: int = 8
    symmetric: bool = False
    axis: int | None = None
    narrow_range: bool | None = None

    @nn.compact
    def __call__(self, x):
        """Returns `fake_quant(x, min, max, ...)` with this module's params."""
        x = jnp.asarray(x)
        axis = None if self.axis is None else int(self.axis) % x.ndim
        red = tuple(i for i in range(x.ndim) if i != axis)
        eps = 1e-6

        if self.symmetric:
            hi = self.param("max", lambda _: jnp.maximum(
                jax.lax.stop_gradient(jnp.max(jnp.abs(x), axis=red)), eps).astype(jnp.float32))
            lo = -hi
        else:
            def init_lo(_):
                return jnp.minimum(jax.lax.stop_gradient(jnp.min(x, axis=red)), 0.0) \
                    .astype(jnp.float32)

            def init_hi(_):
                lo0 = init_lo(None)
                hi0 = jnp.maximum(jax.lax.stop_gradient(jnp.max(x, axis=red)), 0.0)
                return jnp.maximum(hi0, lo0 + eps).astype(jnp.float32)
            lo = self.param("min", init_lo)
            hi = self.param("max", init_hi)
        narrow = self.symmetric if self.narrow_range is None else self.narrow_range
        return fake_quant(x, lo, hi, bits=self.bits, narrow_range=narrow, axis=axis)
