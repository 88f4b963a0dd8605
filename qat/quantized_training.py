"""Quantized training for JAX / Flax: every matmul and convolution of the model runs on int8
operands, in the forward pass AND in both gradient products of the backward pass.

Public as `tensorforge.quantization.quantized_training` (with a Keras model as argument it
dispatches to `qat/quantized_training_keras.py`). The technique is Google's AQT (Accurate
Quantized Training) and Qwix: a quantized `dot_general` / `conv_general_dilated` injected into
Flax's `nn.Dense(dot_general=...)` / `nn.Conv(conv_general_dilated=...)`.

**Forward** (`QuantizedTraining.dot_general`): both operands are quantized symmetrically to
`bits` with scales from their current values, one scale per slice that is not contracted (per
row of the activations, per output channel of the weights), rounding to nearest; the product
runs as `lax.dot_general(int8, int8, preferred_element_type=int32)` and is rescaled by the
outer product of the two scale vectors (computed as a `dot_general` of the scales themselves,
whose contracting dims have size 1, so any dimension numbers work).

**Backward** (a `jax.custom_vjp`): with g the incoming gradient, `dL/dlhs = g . rhs^T` and
`dL/drhs = lhs^T . g` each run as one int8 x int8 -> int32 `dot_general`. g is quantized twice
(per row for the first product, per column for the second: again one scale per slice that is
not contracted) with **stochastic rounding** (`rounding="stochastic"`, the default): the
expected value of the rounded gradient is the gradient, so small gradient components survive
on average instead of being rounded to zero. The noise is a deterministic hash of the
gradient's bits, its element index and `seed` (murmur3's finalizer), so no PRNG key has to be
threaded through the model and a step is reproducible. The saved operands are re-quantized
along the axes their product contracts. The quantization itself passes gradients straight
through (the symmetric absmax scales never clip).

Convolutions work the same way: forward scales per batch element (input) and per output
feature (filter); the two backward convolutions (jax's own transpose rules, called with int8
operands and an int32 accumulator) take the gradient per batch element and per output
feature.

**Ranges and export.** `ActivationRange` records an exponential moving average of the range
of the tensors the int8 artifact will quantize (model inputs, each layer's output) in the
Flax collection `quant_stats` while training. `QuantizedTraining.for_export()` gives the same
configuration in export mode: the layers then compute the float graph with `fake_quant` at
the recorded ranges (activations) and at the weights' own per-channel absmax (weights), which
`tensorforge.convert` lifts into quantize/dequantize pairs and lowers to a full int8 TFLite
model, with no calibration data (the QAT route, `qat/jax.py`).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from jax import lax

from .jax import fake_quant

ROUNDINGS = ("stochastic", "nearest")
_MIN_RANGE = 1e-6


# -- quantizers --------------------------------------------------------------------------------

def _qmax(bits: int) -> int:
    return (1 << (bits - 1)) - 1


def _storage(bits: int):
    return jnp.int8 if bits <= 8 else jnp.int16


def hash_uniform(x, salt: int):
    """Deterministic uniforms in [0, 1), one per element of `x`: murmur3's 32-bit finalizer
    over the element's float32 bits, its flat index and `salt`. Used as stochastic-rounding
    noise (fresh every step, since the gradient changes)."""
    u = lax.bitcast_convert_type(x.astype(jnp.float32), jnp.uint32)
    idx = lax.iota(jnp.uint32, int(np.prod(x.shape, dtype=np.int64))).reshape(x.shape)
    h = u ^ (idx * jnp.uint32(0x9E3779B9)) ^ jnp.uint32(salt & 0xFFFFFFFF)
    h = h ^ (h >> 16)
    h = h * jnp.uint32(0x85EBCA6B)
    h = h ^ (h >> 13)
    h = h * jnp.uint32(0xC2B2AE35)
    h = h ^ (h >> 16)
    return (h >> 8).astype(jnp.float32) * jnp.float32(2.0 ** -24)


def quantize(x, reduce_axes, bits: int, noise=None):
    """Symmetric quantization of `x` to `bits`-bit codes with one scale per slice over
    `reduce_axes` (kept as size-1 dims): `(codes, scale)` with `x ~ codes * scale`, codes in
    [-(2^(bits-1) - 1), 2^(bits-1) - 1]. Rounds to nearest, or stochastically with `noise`
    (uniforms in [0, 1) of x's shape): `floor(x / scale + noise)`."""
    qmax = _qmax(bits)
    x = x.astype(jnp.float32)
    amax = jnp.max(jnp.abs(x), axis=tuple(reduce_axes), keepdims=True)
    scale = jnp.where(amax > 0, amax / qmax, 1.0).astype(jnp.float32)
    v = x / scale
    r = jnp.round(v) if noise is None else jnp.floor(v + noise)
    return jnp.clip(r, -qmax, qmax).astype(_storage(bits)), scale


def _int_dot(a, b, dn):
    return lax.dot_general(a, b, dn, preferred_element_type=jnp.int32)


def _quantized_dot(a, b, dn, bits, a_noise=None, b_noise=None):
    """`dot_general(a, b, dn)` with both operands quantized along their contracting dims
    (one scale per non-contracted slice), as an int32 product rescaled to float32."""
    (ca, cb), _ = dn
    qa, sa = quantize(a, ca, bits, a_noise)
    qb, sb = quantize(b, cb, bits, b_noise)
    # The scales' contracting dims have size 1: this is their outer product in the layout of
    # the output, whatever the dimension numbers.
    s = lax.dot_general(sa, sb, dn)
    return _int_dot(qa, qb, dn).astype(jnp.float32) * s


def _free(ndim, contract, batch):
    return [d for d in range(ndim) if d not in contract and d not in batch]


@functools.lru_cache(maxsize=None)
def _dot_vjp(dn, bits: int, grad_bits: int, stochastic: bool, seed: int):
    """The custom-VJP int8 dot_general for one static configuration (cached: stable jit keys)."""
    (lc, rc), (lb, rb) = dn

    def noise(g, salt):
        return hash_uniform(g, seed * 7919 + salt) if stochastic else None

    @jax.custom_vjp
    def qdot(lhs, rhs):
        return _quantized_dot(lhs, rhs, dn, bits)

    def fwd(lhs, rhs):
        return qdot(lhs, rhs), (lhs, rhs)

    def bwd(res, g):
        lhs, rhs = res
        nb = len(lb)
        lf, rf = _free(lhs.ndim, lc, lb), _free(rhs.ndim, rc, rb)
        g_batch = tuple(range(nb))
        g_lf = tuple(range(nb, nb + len(lf)))
        g_rf = tuple(range(nb + len(lf), g.ndim))
        g = g.astype(jnp.float32)
        # dL/dlhs = g . rhs^T: contract g's rhs-free dims with rhs's free dims.
        dn_l = ((g_rf, tuple(rf)), (g_batch, tuple(rb)))
        dl = _quantized_dot(g, rhs, dn_l, grad_bits, a_noise=noise(g, 1))
        # result dims: batch, lhs free (ascending), then rhs's contracting dims (ascending),
        # i.e. the lhs contracting dims they pair with.
        src = list(lb) + sorted(lf) + [lc[rc.index(r)] for r in sorted(rc)]
        dl = jnp.transpose(dl, np.argsort(src))
        # dL/drhs = lhs^T . g, computed as g . lhs (g first): contract g's lhs-free dims.
        dn_r = ((g_lf, tuple(lf)), (g_batch, tuple(lb)))
        dr = _quantized_dot(g, lhs, dn_r, grad_bits, a_noise=noise(g, 2))
        src = list(rb) + sorted(rf) + [rc[lc.index(d)] for d in sorted(lc)]
        dr = jnp.transpose(dr, np.argsort(src))
        return dl.astype(lhs.dtype), dr.astype(rhs.dtype)

    qdot.defvjp(fwd, bwd)
    return qdot


def _normalize_dn(dn):
    (lc, rc), (lb, rb) = dn
    return ((tuple(int(d) for d in lc), tuple(int(d) for d in rc)),
            (tuple(int(d) for d in lb), tuple(int(d) for d in rb)))


# -- convolution -------------------------------------------------------------------------------

class _Aval:
    """Stands in for an undefined primal in jax's conv transpose rules (they read `.aval`)."""

    def __init__(self, aval):
        self.aval = aval


def _conv_transpose_rules():
    try:
        from jax._src.lax import convolution as conv
        return conv._conv_general_dilated_transpose_lhs, conv._conv_general_dilated_transpose_rhs
    except (ImportError, AttributeError):  # pragma: no cover - other jax versions
        return None


def _along(vec, ndim: int, axis: int):
    shape = [1] * ndim
    shape[axis] = -1
    return jnp.reshape(vec, shape)


def _all_but(ndim: int, keep: int) -> tuple[int, ...]:
    return tuple(d for d in range(ndim) if d != keep)


@functools.lru_cache(maxsize=None)
def _conv_vjp(window_strides, padding, lhs_dilation, rhs_dilation, dn, groups: int, bits: int,
              grad_bits: int, stochastic: bool, seed: int):
    """The custom-VJP int8 conv_general_dilated for one static configuration."""
    lhs_spec, rhs_spec, out_spec = dn
    kw = dict(window_strides=window_strides, padding=padding, lhs_dilation=lhs_dilation,
              rhs_dilation=rhs_dilation, dimension_numbers=dn, feature_group_count=groups)

    def int_conv(ql, qr):
        return lax.conv_general_dilated(ql, qr, preferred_element_type=jnp.int32, **kw)

    @jax.custom_vjp
    def qconv(lhs, rhs):
        ql, sl = quantize(lhs, _all_but(lhs.ndim, lhs_spec[0]), bits)      # per batch element
        qr, sr = quantize(rhs, _all_but(rhs.ndim, rhs_spec[0]), bits)      # per output feature
        out = int_conv(ql, qr).astype(jnp.float32)
        nd = out.ndim
        return (out * _along(sl.reshape(-1), nd, out_spec[0])
                * _along(sr.reshape(-1), nd, out_spec[1]))

    def fwd(lhs, rhs):
        return qconv(lhs, rhs), (lhs, rhs)

    def bwd(res, g):
        lhs, rhs = res
        g = g.astype(jnp.float32)
        nd = g.ndim
        salt = seed * 7919
        # dL/dlhs: g per batch element; filter per input feature (per tensor when grouped).
        qg, sg = quantize(g, _all_but(nd, out_spec[0]), grad_bits,
                          hash_uniform(g, salt + 1) if stochastic else None)
        r_axes = _all_but(rhs.ndim, rhs_spec[1]) if groups == 1 else tuple(range(rhs.ndim))
        qr, sr = quantize(rhs, r_axes, grad_bits)
        # dL/drhs: g per output feature; input per input feature (per tensor when grouped).
        qg2, sg2 = quantize(g, _all_but(nd, out_spec[1]), grad_bits,
                            hash_uniform(g, salt + 2) if stochastic else None)
        l_axes = _all_but(lhs.ndim, lhs_spec[1]) if groups == 1 else tuple(range(lhs.ndim))
        ql, sl = quantize(lhs, l_axes, grad_bits)
        rules = _conv_transpose_rules()
        args = dict(precision=None, **kw, batch_group_count=1)
        try:
            t_lhs, t_rhs = rules
            dl = t_lhs(qg, _Aval(jax.typeof(ql).update(dtype=jnp.int32)), qr,
                       preferred_element_type=jnp.int32, out_sharding=None, **args)
            dr = t_rhs(qg2, ql, _Aval(jax.typeof(qr).update(dtype=jnp.int32)),
                       preferred_element_type=jnp.int32, out_sharding=None, **args)
        except TypeError:  # pragma: no cover - other jax versions: same values, float kernels
            f = functools.partial(lax.conv_general_dilated, **kw)
            _, vjp_l = jax.vjp(lambda a: f(a, qr.astype(jnp.float32)), ql.astype(jnp.float32))
            _, vjp_r = jax.vjp(lambda b: f(ql.astype(jnp.float32), b), qr.astype(jnp.float32))
            (dl,), (dr,) = vjp_l(qg.astype(jnp.float32)), vjp_r(qg2.astype(jnp.float32))
        dl = dl.astype(jnp.float32) * _along(sg.reshape(-1), lhs.ndim, lhs_spec[0])
        if groups == 1:
            dl = dl * _along(sr.reshape(-1), lhs.ndim, lhs_spec[1])
        else:
            dl = dl * sr.reshape(())
        dr = dr.astype(jnp.float32) * _along(sg2.reshape(-1), rhs.ndim, rhs_spec[0])
        if groups == 1:
            dr = dr * _along(sl.reshape(-1), rhs.ndim, rhs_spec[1])
        else:
            dr = dr * sl.reshape(())
        return dl.astype(lhs.dtype), dr.astype(rhs.dtype)

    qconv.defvjp(fwd, bwd)
    return qconv


def _explicit_padding(lhs_shape, rhs_shape, dn, window_strides, padding, lhs_dilation,
                      rhs_dilation):
    if not isinstance(padding, str):
        return tuple((int(lo), int(hi)) for lo, hi in padding)
    if any(d != 1 for d in lhs_dilation):
        raise ValueError("quantized_training: string padding with lhs_dilation; pass explicit "
                         "padding (as lax.conv_general_dilated requires)")
    lhs_spec, rhs_spec, _ = dn
    in_shape = np.take(lhs_shape, lhs_spec)[2:]
    k = np.take(rhs_shape, rhs_spec)[2:]
    eff = [(int(s) - 1) * int(r) + 1 for s, r in zip(k, rhs_dilation)]
    return tuple(tuple(int(v) for v in p)
                 for p in lax.padtype_to_pads(in_shape, eff, window_strides, padding))


# -- the configuration -------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class QuantizedTraining:
    """A quantized-training configuration: int8 (`bits`) forward products, `grad_bits` backward
    products, the rounding of the gradient, and the EMA decay of the recorded activation ranges.

    Use its `dot_general` / `conv_general_dilated` in Flax layers
    (`nn.Dense(..., dot_general=qt.dot_general)`), or its layers `qt.Dense(...)`,
    `qt.Conv(...)` and `qt.ActivationRange()`, which also record the ranges the int8 artifact
    needs. `for_export()` switches those layers to the fake-quant graph that converts to int8.
    """

    bits: int = 8
    grad_bits: int = 8
    rounding: str = "stochastic"
    seed: int = 0
    ema_decay: float = 0.99
    export: bool = False

    def __post_init__(self):
        problems = []
        for name in ("bits", "grad_bits"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or not 2 <= int(v) <= 8:
                problems.append(f"{name} must be an int in [2, 8] (int8 storage, int32 "
                                f"accumulation), got {v!r}")
        if self.rounding not in ROUNDINGS:
            problems.append(f"rounding must be one of {ROUNDINGS}, got {self.rounding!r}")
        if not 0.0 <= float(self.ema_decay) < 1.0:
            problems.append(f"ema_decay must be in [0, 1), got {self.ema_decay!r}")
        if problems:
            raise ValueError("quantized_training: " + "; ".join(problems))

    # -- injected kernels ----------------------------------------------------------------------

    def dot_general(self, lhs, rhs, dimension_numbers, precision=None,
                    preferred_element_type=None, **kwargs):
        """`lax.dot_general` with int8 operands forward and backward (see module doc); in
        export mode, the float product with a per-channel fake-quantized `rhs` (the weight)."""
        del precision, kwargs
        lhs, rhs = jnp.asarray(lhs), jnp.asarray(rhs)
        if not (jnp.issubdtype(lhs.dtype, jnp.floating)
                and jnp.issubdtype(rhs.dtype, jnp.floating)):
            return lax.dot_general(lhs, rhs, dimension_numbers,
                                   preferred_element_type=preferred_element_type)
        dn = _normalize_dn(dimension_numbers)
        out_dtype = preferred_element_type or jnp.result_type(lhs.dtype, rhs.dtype)
        if self.export:
            (_, rc), (_, rb) = dn
            return lax.dot_general(lhs, self._weight_fake_quant(rhs, rc + rb), dn,
                                   preferred_element_type=preferred_element_type)
        fn = _dot_vjp(dn, int(self.bits), int(self.grad_bits), self.rounding == "stochastic",
                      int(self.seed))
        return fn(lhs, rhs).astype(out_dtype)

    def conv_general_dilated(self, lhs, rhs, window_strides, padding, lhs_dilation=None,
                             rhs_dilation=None, dimension_numbers=None, feature_group_count=1,
                             batch_group_count=1, precision=None, preferred_element_type=None,
                             **kwargs):
        """`lax.conv_general_dilated` with int8 operands forward and backward; in export mode,
        the float convolution with a per-output-feature fake-quantized filter."""
        del precision, kwargs
        lhs, rhs = jnp.asarray(lhs), jnp.asarray(rhs)
        dn = lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
        nsp = lhs.ndim - 2
        strides = tuple(int(s) for s in window_strides)
        lhs_dilation = tuple(int(d) for d in (lhs_dilation or (1,) * nsp))
        rhs_dilation = tuple(int(d) for d in (rhs_dilation or (1,) * nsp))
        floating = (jnp.issubdtype(lhs.dtype, jnp.floating)
                    and jnp.issubdtype(rhs.dtype, jnp.floating))
        if self.export or not floating or batch_group_count != 1:
            if self.export and floating:
                rhs = self._weight_fake_quant(rhs, _all_but(rhs.ndim, dn.rhs_spec[0]))
            return lax.conv_general_dilated(
                lhs, rhs, strides, padding, lhs_dilation, rhs_dilation, dn,
                feature_group_count, batch_group_count,
                preferred_element_type=preferred_element_type)
        pad = _explicit_padding(lhs.shape, rhs.shape, dn, strides, padding, lhs_dilation,
                                rhs_dilation)
        fn = _conv_vjp(strides, pad, lhs_dilation, rhs_dilation, dn, int(feature_group_count),
                       int(self.bits), int(self.grad_bits), self.rounding == "stochastic",
                       int(self.seed))
        out_dtype = preferred_element_type or jnp.result_type(lhs.dtype, rhs.dtype)
        return fn(lhs, rhs).astype(out_dtype)

    def _weight_fake_quant(self, w, reduce_axes):
        """The weight fake-quantized like the artifact stores it: symmetric, narrow range,
        per channel on its single non-reduced axis (per tensor otherwise)."""
        reduce_axes = tuple(sorted(set(int(a) for a in reduce_axes)))
        kept = [d for d in range(w.ndim) if d not in reduce_axes]
        if len(kept) == 1:
            m = jnp.maximum(jnp.max(jnp.abs(w), axis=reduce_axes), _MIN_RANGE)
            return fake_quant(w, -m, m, bits=self.bits, narrow_range=True, axis=kept[0])
        m = jnp.maximum(jnp.max(jnp.abs(w)), _MIN_RANGE)
        return fake_quant(w, -m, m, bits=self.bits, narrow_range=True)

    # -- export and Flax layers ----------------------------------------------------------------

    def for_export(self) -> "QuantizedTraining":
        """This configuration in export mode (see the class doc)."""
        return dataclasses.replace(self, export=True)

    def Dense(self, features: int, **kwargs) -> "QuantizedDense":  # noqa: N802 (a layer)
        """A `QuantizedDense` with this configuration."""
        return QuantizedDense(features=features, qt=self, **kwargs)

    def Conv(self, features: int, kernel_size, **kwargs) -> "QuantizedConv":  # noqa: N802
        """A `QuantizedConv` with this configuration."""
        return QuantizedConv(features=features, kernel_size=tuple(kernel_size), qt=self,
                             **kwargs)

    def ActivationRange(self, **kwargs) -> "ActivationRange":  # noqa: N802 (a layer)
        """An `ActivationRange` with this configuration."""
        return ActivationRange(qt=self, **kwargs)


def quantized_training(model=None, *, bits: int = 8, grad_bits: int = 8,
                       rounding: str = "stochastic", seed: int = 0, ema_decay: float = 0.99):
    """Quantized training: int8 operands in every matmul / convolution, forward and backward.

    Without `model`: a `QuantizedTraining` for JAX / Flax (its `dot_general` and
    `conv_general_dilated` go into `nn.Dense` / `nn.Conv`; its `Dense`, `Conv` and
    `ActivationRange` layers also record the activation ranges for a calibration-free int8
    export). With a Keras model: a new Keras model whose Dense / Conv2D layers train with int8
    forward and backward products (`qat/quantized_training_keras.py`).

    `bits`: forward operand bits; `grad_bits`: backward operand bits (both 2..8, int8 storage
    and int32 accumulation); `rounding`: of the gradient, `"stochastic"` (default) or
    `"nearest"`; `seed`: salt of the stochastic rounding; `ema_decay`: of the recorded
    activation ranges."""
    if _is_keras_model(model):
        from .quantized_training_keras import quantized_training_keras
        return quantized_training_keras(model, bits=bits, grad_bits=grad_bits,
                                        rounding=rounding, seed=seed, ema_decay=ema_decay)
    if model is not None:
        raise TypeError(f"quantized_training: model must be None (JAX / Flax) or a keras.Model, "
                        f"got {type(model).__name__}")
    return QuantizedTraining(bits=bits, grad_bits=grad_bits, rounding=rounding, seed=seed,
                             ema_decay=ema_decay)


def _is_keras_model(obj) -> bool:
    if obj is None:
        return False
    try:
        import keras
    except ImportError:  # pragma: no cover
        return False
    return isinstance(obj, keras.Model)


# -- Flax layers -------------------------------------------------------------------------------

class ActivationRange(nn.Module):
    """Records the range of a tensor the int8 artifact quantizes: an EMA of the batch min / max
    (widened to include 0), initialised by the first training batch, in the `quant_stats`
    collection (`min`, `max`, `initialized`). Updated when called with `train=True` and
    `quant_stats` mutable. Identity, except in export mode: `fake_quant` at the recorded range
    (asymmetric, per tensor), which the converter turns into the int8 tensor's params."""

    qt: QuantizedTraining | None = None

    @nn.compact
    def __call__(self, x, train: bool = False):
        """x, recording its range in training; fake-quantized at the range in export mode."""
        if self.qt is None:
            return x
        lo = self.variable("quant_stats", "min", lambda: jnp.zeros((), jnp.float32))
        hi = self.variable("quant_stats", "max", lambda: jnp.ones((), jnp.float32))
        seen = self.variable("quant_stats", "initialized", lambda: jnp.zeros((), jnp.float32))
        if train and self.is_mutable_collection("quant_stats"):
            xs = lax.stop_gradient(x).astype(jnp.float32)
            blo, bhi = jnp.minimum(jnp.min(xs), 0.0), jnp.maximum(jnp.max(xs), 0.0)
            d = jnp.float32(self.qt.ema_decay)
            first = seen.value == 0
            lo.value = jnp.where(first, blo, d * lo.value + (1 - d) * blo)
            hi.value = jnp.where(first, bhi, d * hi.value + (1 - d) * bhi)
            seen.value = jnp.ones((), jnp.float32)
        if self.qt.export:
            return fake_quant(x, lo.value, jnp.maximum(hi.value, lo.value + _MIN_RANGE),
                              bits=self.qt.bits)
        return x


class QuantizedDense(nn.Module):
    """`nn.Dense` (sub-module `dense`) with the quantized-training `dot_general`, an optional
    activation, then an `ActivationRange` of its output (`output_range`); `quantize_input`
    adds one for its input (`input_range`: use it on the layer that reads a model input).
    `qt=None` gives the plain float layer (a float baseline with the same parameters)."""

    features: int
    qt: QuantizedTraining | None = None
    activation: Callable | None = None
    use_bias: bool = True
    quantize_input: bool = False
    kernel_init: Any = nn.linear.default_kernel_init
    bias_init: Any = nn.initializers.zeros_init()

    @nn.compact
    def __call__(self, x, train: bool = False):
        """The layer; `train=True` records the ranges (make `quant_stats` mutable)."""
        if self.quantize_input:
            x = ActivationRange(self.qt, name="input_range")(x, train)
        dg = None if self.qt is None else self.qt.dot_general
        y = nn.Dense(self.features, use_bias=self.use_bias, dot_general=dg,
                     kernel_init=self.kernel_init, bias_init=self.bias_init, name="dense")(x)
        if self.activation is not None:
            y = self.activation(y)
        return ActivationRange(self.qt, name="output_range")(y, train)


class QuantizedConv(nn.Module):
    """`nn.Conv` (sub-module `conv`) with the quantized-training `conv_general_dilated`, an
    optional activation and the ranges, as `QuantizedDense`."""

    features: int
    kernel_size: tuple
    qt: QuantizedTraining | None = None
    strides: Any = 1
    padding: Any = "SAME"
    feature_group_count: int = 1
    activation: Callable | None = None
    use_bias: bool = True
    quantize_input: bool = False

    @nn.compact
    def __call__(self, x, train: bool = False):
        """The layer; `train=True` records the ranges (make `quant_stats` mutable)."""
        if self.quantize_input:
            x = ActivationRange(self.qt, name="input_range")(x, train)
        conv = None if self.qt is None else self.qt.conv_general_dilated
        y = nn.Conv(self.features, self.kernel_size, strides=self.strides, padding=self.padding,
                    feature_group_count=self.feature_group_count, use_bias=self.use_bias,
                    conv_general_dilated=conv, name="conv")(x)
        if self.activation is not None:
            y = self.activation(y)
        return ActivationRange(self.qt, name="output_range")(y, train)
