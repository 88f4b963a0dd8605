"""Lowering of an IR module to a pure JAX function (for sharded execution and training).

    fn, params = to_jax(module)          # ConversionError listing every unsupported node
    outputs = fn(params, *inputs)        # list of jnp arrays, one per graph output
    jax.jit(fn)(params, x)               # jit-able; jax.grad w.r.t. params works
    problems = jax_lowering_problems(module)   # [] when it lowers

Every IR op maps to one small function `lower(cx, node) -> [jnp array, ...]` in `LOWERINGS`
(see `_Ctx` for what `cx` offers), mirroring `backends/tf_lowering.py`. Lowerings use only
`jax.numpy` / `jax.lax`, NHWC activations and HWIO filters, and follow the NumPy reference
kernels in `ir/ops` (padding splits, rounding, axis attributes). Shape-dependent work (SAME
padding, split sizes, strided-slice plans, transposed-conv output sizes) is computed from the
concrete shapes JAX traces with, so one `fn` serves every size of a symbolic dim such as
"batch" (jit retraces per shape).

Float constants with more than `PARAM_MIN_ELEMENTS` elements that a lowering reads as a tensor
become entries of `params` (keyed by the value's name, else `<scope of its user>/<operand
role>` like `common.constant_name`; repeats get `_1`, `_2` suffixes), so gradients flow to
them. Smaller and integer constants are inlined.

Numerics: matmuls and convolutions use `lax.Precision.HIGHEST` (no TF32/bf16 passes on
accelerators) so results match the float64-accumulating IR reference to float32 accuracy.
`quantize` / `dequantize` / `fake_quant` are float32 arithmetic like the IR (division in
float32, rounding half away from zero); `fake_quant` has a straight-through gradient (identity
inside the representable range, zero outside) so quantization-aware training works. Without
`jax_enable_x64`, int64 values are computed as int32, and float64 is refused (it would silently
lose precision).
"""

from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ..ir.errors import ConversionError, Diagnostic
from ..ir.graph import Graph, Module, Node, Value
from ..ir.ops import get_op
from ..ir.ops.nn import _bilinear_weights, _nearest_index, _pads, _transpose_out_dim
from ..ir.ops.shape import _split_sizes, strided_slice_index
from ..ir.types import DType, code_range
from .common import constant_name

PARAM_MIN_ELEMENTS = 16   # float constants with more elements than this become params
_HI = lax.Precision.HIGHEST


class Unsupported(Exception):
    """A node this backend cannot lower; the message says why."""


def _x64() -> bool:
    return bool(jax.config.jax_enable_x64)


def _jnp_dtype(dtype: DType):
    """The JAX dtype holding values of `dtype` (int4 codes travel as int8: few XLA ops take
    int4; int64 is int32 unless x64 is enabled)."""
    if dtype == DType.f64 and not _x64():
        raise Unsupported("float64 needs jax.config.update('jax_enable_x64', True)")
    table = {DType.f32: jnp.float32, DType.f16: jnp.float16, DType.bf16: jnp.bfloat16,
             DType.f64: jnp.float64, DType.i4: jnp.int8, DType.i8: jnp.int8,
             DType.u8: jnp.uint8, DType.i16: jnp.int16, DType.i32: jnp.int32,
             DType.i64: jnp.int64 if _x64() else jnp.int32, DType.bool: jnp.bool_}
    try:
        return table[dtype]
    except KeyError:
        raise Unsupported(f"JAX has no usable dtype for {dtype}") from None


def _storage(arr, dtype: DType) -> np.ndarray:
    """A constant's payload in the NumPy dtype of its JAX dtype (int4 widened to int8, int64
    narrowed to int32 without x64)."""
    return np.asarray(np.asarray(arr).astype(np.int64) if dtype == DType.i4 else arr).astype(
        np.dtype(_jnp_dtype(dtype)), copy=False)


# -- lowering context --------------------------------------------------------------------------

class _Ctx:
    """What a lowering sees.

    cx.x(value)   the jnp array of an IR operand (constants: params entry or inlined array)
    cx.np(value)  the NumPy payload of a constant operand, else None
    """

    def __init__(self, params: dict | None, param_keys: dict[int, str], record: set | None):
        self.env: dict[int, jax.Array] = {}
        self.params = params            # name -> array (None in the dry run)
        self.param_keys = param_keys    # id(const value) -> params key
        self.record = record            # ids of constants read as tensors (dry run)

    def x(self, value: Value):
        key = id(value)
        if key not in self.env:
            arr = value.const
            if arr is None:
                raise KeyError(f"value %{value.name} is not defined")
            if self.record is not None:
                self.record.add(key)
            if self.params is not None and key in self.param_keys:
                self.env[key] = self.params[self.param_keys[key]]
            else:
                self.env[key] = jnp.asarray(_storage(arr, value.type.dtype))
        return self.env[key]

    @staticmethod
    def np(value: Value) -> np.ndarray | None:
        return value.const


# -- helpers -----------------------------------------------------------------------------------

def _activation(y, act: str):
    if act == "none":
        return y
    if act == "relu":
        return jnp.maximum(y, 0)
    if act == "relu6":
        return jnp.clip(y, 0, 6)
    if act == "relu_n1_to_1":
        return jnp.clip(y, -1, 1)
    if act == "tanh":
        return jnp.tanh(y)
    raise Unsupported(f"unknown fused activation {act!r}")


def _bias_act(cx, node: Node, y):
    if len(node.inputs) > 2:
        y = y + cx.x(node.inputs[2])
    return _activation(y, node.attrs["activation"])


def _is_float(x) -> bool:
    return jnp.issubdtype(x.dtype, jnp.floating)


def _spatial_pads(x_shape, k, strides, dilations, pad):
    """((top, bottom), (left, right)) for an NHWC window op at the traced (concrete) size,
    TF's split: the odd row/column goes after."""
    if not isinstance(pad, str):
        return tuple(tuple(p) for p in pad)
    out = []
    for size, kk, s, d in zip(x_shape[1:3], k, strides, dilations):
        eff = (kk - 1) * d + 1
        o = -(-size // s) if pad == "SAME" else (size - eff) // s + 1
        out.append(_pads(size, o, kk, s, d, pad))
    return tuple(out)


# -- elementwise -------------------------------------------------------------------------------

def _unary(fn: Callable) -> Callable:
    return lambda cx, node: [fn(cx.x(node.inputs[0]))]


def _binary(fn: Callable) -> Callable:
    return lambda cx, node: [fn(cx.x(node.inputs[0]), cx.x(node.inputs[1]))]


def _div(a, b):
    # Integers truncate toward zero like the IR (C division); lax.div does exactly that.
    return a / b if _is_float(a) else lax.div(a, b)


def _pow(a, b):
    return jnp.power(a, b)


def _gelu(cx, node):
    x = cx.x(node.inputs[0])
    if node.attrs["approximate"]:
        t = jnp.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x * x * x))
    else:
        t = lax.erf(x * (1.0 / math.sqrt(2.0)))
    return [0.5 * x * (1.0 + t)]


def _elu(cx, node):
    x = cx.x(node.inputs[0])
    return [jnp.where(x > 0, x, node.attrs["alpha"] * jnp.expm1(jnp.minimum(x, 0)))]


def _leaky_relu(cx, node):
    x = cx.x(node.inputs[0])
    return [jnp.where(x >= 0, x, x * jnp.asarray(node.attrs["alpha"], x.dtype))]


def _clip(cx, node):
    x = cx.x(node.inputs[0])
    lo, hi = node.attrs["min"], node.attrs["max"]
    if not _is_float(x):
        # The IR clips with float bounds and casts back (truncation): ceil/floor the bounds.
        lo, hi = math.ceil(lo), math.floor(hi)
    return [jnp.clip(x, jnp.asarray(lo, x.dtype), jnp.asarray(hi, x.dtype))]


def _shift_amount(a, b):
    """Shift amounts clamped to [0, width - 1], as the IR (and TF) define them."""
    return jnp.clip(b, 0, a.dtype.itemsize * 8 - 1).astype(a.dtype)


def _cast(cx, node):
    x = cx.x(node.inputs[0])
    to = node.attrs["to"]
    if to == DType.bool:
        return [x != 0]
    if to.is_int and _is_float(x):
        x = jnp.trunc(x)   # float -> int truncates toward zero, as the IR and TF do
    return [x.astype(_jnp_dtype(to))]


def _where(cx, node):
    c, a, b = (cx.x(v) for v in node.inputs)
    return [jnp.where(c, a, b)]


# -- nn ----------------------------------------------------------------------------------------

_DN = ("NHWC", "HWIO", "NHWC")


def _conv2d(cx, node):
    a = node.attrs
    x, f = cx.x(node.inputs[0]), cx.x(node.inputs[1])
    pads = _spatial_pads(x.shape, f.shape[:2], a["strides"], a["dilations"], a["padding"])
    y = lax.conv_general_dilated(x, f, tuple(a["strides"]), pads,
                                 rhs_dilation=tuple(a["dilations"]), dimension_numbers=_DN,
                                 feature_group_count=a["groups"], precision=_HI)
    return [_bias_act(cx, node, y)]


def _conv3d(cx, node):
    a = node.attrs
    x, f = cx.x(node.inputs[0]), cx.x(node.inputs[1])
    y = lax.conv_general_dilated(x, f, tuple(a["strides"]), a["padding"],
                                 rhs_dilation=tuple(a["dilations"]),
                                 dimension_numbers=("NDHWC", "DHWIO", "NDHWC"), precision=_HI)
    return [_bias_act(cx, node, y)]


def _conv3d_transpose(cx, node):
    """As _conv2d_transpose, in three dims (no dilation)."""
    a = node.attrs
    x, f = cx.x(node.inputs[0]), cx.x(node.inputs[1])
    out = a["output_shape"][1:4]
    pads = []
    for size, k, s, o in zip(x.shape[1:4], f.shape[:3], a["strides"], out):
        before = _pads(o, size, k, s, 1, a["padding"])[0]
        lo = k - 1 - before
        pads.append((lo, o - (size - 1) * s - 1 - lo + k - 1))
    ft = jnp.transpose(f[::-1, ::-1, ::-1], (0, 1, 2, 4, 3))
    y = lax.conv_general_dilated(x, ft, (1, 1, 1), pads, lhs_dilation=tuple(a["strides"]),
                                 dimension_numbers=("NDHWC", "DHWIO", "NDHWC"), precision=_HI)
    return [_bias_act(cx, node, y)]


def _depthwise(cx, node):
    a = node.attrs
    x, f = cx.x(node.inputs[0]), cx.x(node.inputs[1])
    kh, kw, c, m = f.shape
    # [H, W, C, M] -> HWIO [H, W, 1, C*M]: output channel c*M + k, as the IR orders them.
    f = jnp.reshape(f, (kh, kw, 1, c * m))
    pads = _spatial_pads(x.shape, (kh, kw), a["strides"], a["dilations"], a["padding"])
    y = lax.conv_general_dilated(x, f, tuple(a["strides"]), pads,
                                 rhs_dilation=tuple(a["dilations"]), dimension_numbers=_DN,
                                 feature_group_count=c, precision=_HI)
    return [_bias_act(cx, node, y)]


def _conv2d_transpose(cx, node):
    a = node.attrs
    x, f = cx.x(node.inputs[0]), cx.x(node.inputs[1])
    _, h, w, _ = x.shape
    kh, kw, _, _ = f.shape
    (sh, sw), (dh, dw), pad = a["strides"], a["dilations"], a["padding"]
    given = a.get("output_shape")
    gh, gw = (None, None) if given is None else given[1:3]
    oh = _transpose_out_dim(h, kh, sh, dh, pad, gh, "conv2d_transpose", "height")
    ow = _transpose_out_dim(w, kw, sw, dw, pad, gw, "conv2d_transpose", "width")
    # The input gradient of the forward conv: a stride-1 conv over the stride-dilated input
    # with the spatially flipped, in/out-swapped filter. Output row o reads forward row
    # o + pad_top, which fixes the leading padding at (k-1)*d - pad_top.
    pt, _ = _pads(oh, h, kh, sh, dh, pad)
    pl, _ = _pads(ow, w, kw, sw, dw, pad)
    top, left = (kh - 1) * dh - pt, (kw - 1) * dw - pl
    bottom = oh - (h - 1) * sh - 1 - top + (kh - 1) * dh
    right = ow - (w - 1) * sw - 1 - left + (kw - 1) * dw
    ft = jnp.transpose(f[::-1, ::-1], (0, 1, 3, 2))
    y = lax.conv_general_dilated(x, ft, (1, 1), ((top, bottom), (left, right)),
                                 lhs_dilation=(sh, sw), rhs_dilation=(dh, dw),
                                 dimension_numbers=_DN, precision=_HI)
    return [_bias_act(cx, node, y)]


def _matmul(cx, node):
    at = node.attrs
    a, b = cx.x(node.inputs[0]), cx.x(node.inputs[1])
    if at["transpose_a"]:
        a = jnp.swapaxes(a, -1, -2)
    if at["transpose_b"]:
        b = jnp.swapaxes(b, -1, -2)
    if _is_float(a):
        return [_bias_act(cx, node, jnp.matmul(a, b, precision=_HI))]
    # Integers accumulate wide and wrap on the cast back, like the IR.
    wide = jnp.int64 if _x64() else jnp.int32
    y = jnp.matmul(a.astype(wide), b.astype(wide))
    if len(node.inputs) > 2:
        y = y + cx.x(node.inputs[2]).astype(wide)
    return [y.astype(a.dtype)]


def _window(x, a):
    pads = _spatial_pads(x.shape, a["ksize"], a["strides"], (1, 1), a["padding"])
    return (1, *a["ksize"], 1), (1, *a["strides"], 1), ((0, 0), *pads, (0, 0))


def _max_pool(cx, node):
    x = cx.x(node.inputs[0])
    dims, strides, pads = _window(x, node.attrs)
    # Padding never wins a max: pad with the lowest value of the dtype.
    low = -jnp.inf if _is_float(x) else jnp.iinfo(x.dtype).min
    # NumPy (concrete) init values let JAX pick its differentiable monoid reducers.
    return [lax.reduce_window(x, np.asarray(low, x.dtype), lax.max, dims, strides, pads)]


def _avg_pool(cx, node):
    x = cx.x(node.inputs[0])
    dims, strides, pads = _window(x, node.attrs)
    zero = np.zeros((), x.dtype)
    total = lax.reduce_window(x, zero, lax.add, dims, strides, pads)
    # SAME windows average only their real elements: count them by pooling ones (a constant
    # XLA folds).
    ones = jnp.ones((1, x.shape[1], x.shape[2], 1), x.dtype)
    count = lax.reduce_window(ones, zero, lax.add, dims, strides, pads)
    return [total / count]


def _softmax(fn):
    return lambda cx, node: [fn(cx.x(node.inputs[0]), axis=node.attrs["axis"])]


def _bshape(rank, axes, sizes):
    shape = [1] * rank
    for ax, s in zip(axes, sizes):
        shape[ax] = s
    return shape


def _batch_norm(cx, node):
    x = cx.x(node.inputs[0])
    rank = x.ndim
    axis = node.attrs["axis"] % rank
    mean, var, scale, offset = (jnp.reshape(cx.x(v), _bshape(rank, [axis], [-1]))
                                for v in node.inputs[1:])
    return [(x - mean) / jnp.sqrt(var + node.attrs["epsilon"]) * scale + offset]


def _layer_norm(cx, node):
    x = cx.x(node.inputs[0])
    rank = x.ndim
    axes = sorted(ax % rank for ax in node.attrs["axes"])
    mean = jnp.mean(x, axis=axes, keepdims=True)
    d = x - mean
    var = jnp.mean(d * d, axis=axes, keepdims=True)   # population variance, like the IR
    y = d / jnp.sqrt(var + node.attrs["epsilon"])
    bshape = _bshape(rank, axes, [x.shape[ax] for ax in axes])
    if len(node.inputs) > 1:
        y = y * jnp.reshape(cx.x(node.inputs[1]), bshape)
    if len(node.inputs) > 2:
        y = y + jnp.reshape(cx.x(node.inputs[2]), bshape)
    return [y]


def _resize(cx, node):
    a = node.attrs
    x = cx.x(node.inputs[0])
    _, h, w, _ = x.shape
    oh, ow = a["size"]
    ac, hp = a["align_corners"], a["half_pixel_centers"]
    # Source indices and weights from the IR's own (TF-exact, float32) index computation.
    if a["method"] == "nearest":
        return [x[:, _nearest_index(h, oh, ac, hp)][:, :, _nearest_index(w, ow, ac, hp)]]
    ylo, yhi, dy = _bilinear_weights(h, oh, ac, hp)
    xlo, xhi, dx = _bilinear_weights(w, ow, ac, hp)
    dx = jnp.asarray(dx[None, None, :, None], x.dtype)
    dy = jnp.asarray(dy[None, :, None, None], x.dtype)
    top, bottom = x[:, ylo], x[:, yhi]
    top = top[:, :, xlo] + (top[:, :, xhi] - top[:, :, xlo]) * dx
    bottom = bottom[:, :, xlo] + (bottom[:, :, xhi] - bottom[:, :, xlo]) * dx
    return [top + (bottom - top) * dy]


# -- reductions --------------------------------------------------------------------------------

def _axes(node, x):
    axes = node.attrs["axes"]
    return tuple(range(x.ndim)) if not axes else tuple(a % x.ndim for a in axes)


def _reduce(fn):
    def lower(cx, node):
        x = cx.x(node.inputs[0])
        return [fn(x, axis=_axes(node, x), keepdims=node.attrs["keepdims"]).astype(x.dtype)]
    return lower


def _reduce_mean(cx, node):
    x = cx.x(node.inputs[0])
    axes, keep = _axes(node, x), node.attrs["keepdims"]
    if _is_float(x):
        return [jnp.mean(x, axis=axes, keepdims=keep)]
    # Integer mean truncates toward zero, like TF's MeanReducer and the IR.
    s = jnp.sum(x, axis=axes, keepdims=keep)
    n = max(math.prod(x.shape[i] for i in axes), 1)
    return [(jnp.sign(s) * (jnp.abs(s) // n)).astype(x.dtype)]


def _arg(fn):
    def lower(cx, node):
        x = cx.x(node.inputs[0])
        return [fn(x, axis=node.attrs["axis"]).astype(_jnp_dtype(node.attrs["output_type"]))]
    return lower


def _cumsum(cx, node):
    x, a = cx.x(node.inputs[0]), node.attrs
    axis = a["axis"] % x.ndim
    y = lax.cumsum(x, axis, reverse=a["reverse"])
    if a["exclusive"]:   # shift by one along axis, a zero coming in
        n = x.shape[axis]
        zero = jnp.zeros_like(lax.slice_in_dim(y, 0, 1, axis=axis))
        y = jnp.concatenate([lax.slice_in_dim(y, 1, n, axis=axis), zero] if a["reverse"] else
                            [zero, lax.slice_in_dim(y, 0, n - 1, axis=axis)], axis=axis)
    return [y]


def _top_k(cx, node):
    """lax.top_k on a key with -0.0 made 0.0: XLA's TopK orders -0.0 below 0.0, the IR (like
    TF, TFLite and lax.sort) holds them equal and keeps the lower index first. (x + 0.0 would
    not do: XLA folds it away.) The values are read from x itself."""
    x = cx.x(node.inputs[0])
    key = jnp.where(x == 0, jnp.zeros_like(x), x) if _is_float(x) else x
    k = node.attrs["k"]
    _, idx = lax.top_k(key, x.shape[-1] if k == -1 else k)
    return [jnp.take_along_axis(x, idx, axis=-1), idx.astype(jnp.int32)]


def _cumulative(fn):
    """lax.cumprod / cummax / cummin along the node's axis."""
    def lower(cx, node):
        x = cx.x(node.inputs[0])
        return [fn(x, node.attrs["axis"] % x.ndim, reverse=node.attrs["reverse"])]
    return lower


# -- quantization (float arithmetic) -----------------------------------------------------------

def _param(node: Node, key: str, rank: int, dtype):
    vals = np.asarray(node.attrs[key], np.float64)
    axis = node.attrs["axis"]
    if axis is None:
        return jnp.asarray(vals[0], dtype)
    return jnp.asarray(vals.reshape(_bshape(rank, [axis % rank], [-1])), dtype)


def _codes(node: Node, x, qmin: int, qmax: int):
    """clamp(round_half_away(x / scale) + zero_point, qmin, qmax) as floats (like the IR:
    division in float32, or float64 for float64 operands)."""
    ftype = jnp.float64 if x.dtype == jnp.float64 else jnp.float32
    x = x.astype(ftype)
    v = x / _param(node, "scale", x.ndim, ftype)
    # Round half away from zero exactly: |v| - floor(|v|) is exact in binary floating point.
    av = jnp.abs(v)
    fl = jnp.floor(av)
    r = jnp.sign(v) * (fl + (av - fl >= 0.5).astype(ftype))
    if np.any(np.asarray(node.attrs["zero_point"]) != 0):
        r = r + _param(node, "zero_point", x.ndim, ftype)
    return jnp.clip(r, qmin, qmax)


def _dequant(node: Node, q, out_dtype):
    zp = np.asarray(node.attrs["zero_point"])
    if np.any(zp != 0):
        q = q - _param(node, "zero_point", q.ndim, q.dtype)
    y = q * _param(node, "scale", q.ndim, q.dtype)
    return y.astype(out_dtype)


def _quantize(cx, node):
    dt = node.attrs["dtype"]
    if dt == DType.i32:
        raise Unsupported("quantize to i32 is not exact in float32 arithmetic")
    qmin, qmax = code_range(dt.bits, dt != DType.u8, node.attrs["narrow_range"])
    return [_codes(node, cx.x(node.inputs[0]), qmin, qmax).astype(_jnp_dtype(dt))]


def _dequantize(cx, node):
    qv = node.inputs[0]
    out = _jnp_dtype(node.attrs["dtype"])
    if qv.type.dtype.bits > 16:
        # 32/64-bit codes (biases) exceed float32's exact integers: the IR multiplies in
        # float64. Fold a constant with the IR kernel itself; refuse a computed one.
        arr = cx.np(qv)
        if arr is not None:
            folded = get_op("dequantize").kernel([np.asarray(arr)], node.attrs)[0]
            return [jnp.asarray(folded, out)]
        if not _x64():
            raise Unsupported(f"dequantize of computed {qv.type.dtype} codes needs float64 "
                              f"(jax_enable_x64)")
        return [_dequant(node, cx.x(qv).astype(jnp.float64), out)]
    ftype = jnp.float64 if out == jnp.float64 else jnp.float32
    return [_dequant(node, cx.x(qv).astype(ftype), out)]


def _fake_quant(cx, node):
    a = node.attrs
    if a["bits"] > 24:
        raise Unsupported(f"fake_quant with {a['bits']} bits is not exact in float32")
    qmin, qmax = code_range(a["bits"], a["signed"], a["narrow_range"])

    @jax.custom_jvp
    def fq(x):
        return _dequant(node, _codes(node, x, qmin, qmax), x.dtype)

    @fq.defjvp
    def fq_jvp(primals, tangents):
        # Straight-through estimator: identity where x maps inside [qmin, qmax], else zero.
        (x,), (t,) = primals, tangents
        lo = _dequant(node, jnp.full(x.shape, qmin, jnp.float32), x.dtype)
        hi = _dequant(node, jnp.full(x.shape, qmax, jnp.float32), x.dtype)
        inside = (x >= lo) & (x <= hi)
        return fq(x), jnp.where(inside, t, jnp.zeros_like(t))

    return [fq(cx.x(node.inputs[0]))]


# -- shape -------------------------------------------------------------------------------------

def _split(cx, node):
    x = cx.x(node.inputs[0])
    axis = node.attrs["axis"] % x.ndim
    sizes = _split_sizes(x.shape[axis], node.attrs["sizes"])
    return list(jnp.split(x, np.cumsum(sizes)[:-1].tolist(), axis=axis))


def _slice(cx, node):
    x = cx.x(node.inputs[0])
    a = node.attrs
    idx = tuple(slice(b, None if s == -1 else b + s) for b, s in zip(a["begin"], a["size"]))
    return [x[idx]]


def _strided_slice(cx, node):
    x = cx.x(node.inputs[0])
    # The IR's own index (TF's mask semantics) at the traced shape.
    idx, final = strided_slice_index(x.shape, node.attrs)
    return [jnp.reshape(x[idx], final)]


def _pad(cx, node):
    a = node.attrs
    x = cx.x(node.inputs[0])
    if x.ndim == 0:
        return [x]
    pads = [tuple(p) for p in a["pads"]]
    if a["mode"] == "constant":
        value = np.asarray(a["value"]).astype(np.dtype(x.dtype)).item()
        return [jnp.pad(x, pads, mode="constant", constant_values=value)]
    return [jnp.pad(x, pads, mode=a["mode"])]


def _gather(cx, node):
    params, indices = cx.x(node.inputs[0]), cx.x(node.inputs[1])
    bd = node.attrs["batch_dims"]
    bd = bd + indices.ndim if bd < 0 else bd
    axis = node.attrs["axis"] % params.ndim

    def take(p, i, depth):
        if depth == 0:
            # In-range indices are the IR's contract; "clip" keeps the gather differentiable
            # and avoids JAX's NaN fill.
            return jnp.take(p, i, axis=axis - bd, mode="clip")
        return jax.vmap(lambda pp, ii: take(pp, ii, depth - 1))(p, i)
    return [take(params, indices, bd)]


def _squeeze(cx, node):
    x = cx.x(node.inputs[0])
    axes = node.attrs["axes"]
    if not axes:
        axes = [i for i, d in enumerate(node.inputs[0].type.shape) if d == 1]
    return [jnp.squeeze(x, axis=tuple(a % x.ndim for a in axes))]


def _dynamic_slice(cx, node):
    x = cx.x(node.inputs[0])
    begin, size = _sizes(cx, node.inputs[1]), _sizes(cx, node.inputs[2])
    size = [d - b if n == -1 else n for d, b, n in zip(x.shape, begin, size)]
    return [lax.slice(x, begin, [b + n for b, n in zip(begin, size)])]


def _dynamic_strided_slice(cx, node):
    x = cx.x(node.inputs[0])
    attrs = {k: v for k, v in node.attrs.items() if k != "dims"}
    for key, v in zip(("begin", "end", "strides"), node.inputs[1:]):
        attrs[key] = _sizes(cx, v)
    idx, final = strided_slice_index(x.shape, attrs)
    return [jnp.reshape(x[idx], final)]


def _dynamic_pad(cx, node):
    x, a = cx.x(node.inputs[0]), node.attrs
    flat = _sizes(cx, node.inputs[1])
    pads = [(flat[2 * i], flat[2 * i + 1]) for i in range(len(flat) // 2)]
    if a["mode"] != "constant":
        return [jnp.pad(x, pads, mode=a["mode"])]
    return [jnp.pad(x, pads, constant_values=np.asarray(a["value"]).astype(np.dtype(x.dtype)))]


def _nd_index(cx, node):
    """(the indexed operand, its advanced-indexing tuple) of gather_nd / scatter_nd_update."""
    x, idx = cx.x(node.inputs[0]), cx.x(node.inputs[1])
    return x, tuple(idx[..., j] for j in range(node.inputs[1].type.shape[-1]))


def _range(cx, node):
    start, limit, delta = (_host(cx, v, "a range bound").item() for v in node.inputs)
    return [jnp.arange(start, limit, delta, dtype=_jnp_dtype(node.output.type.dtype))]


def _nonzero(cx, node):
    # A result sized by the data: JAX arrays need sizes known when tracing.
    x = _host(cx, node.inputs[0], "nonzero (a result sized by the data)")
    return [np.argwhere(x).astype(np.int64)]


def _region_fn(cx: "_Ctx", region: Graph):
    """A JAX function running `region` (a loop body, a branch) on traced arrays."""
    def fn(*args):
        sub = _Ctx(cx.params, cx.param_keys, cx.record)
        outs = _emit(region, sub, list(args), None)
        # Region results must be arrays of the declared dtype (a host-computed size is NumPy).
        return [jnp.asarray(o, _jnp_dtype(v.type.dtype)) for o, v in zip(outs, region.outputs)]
    return fn


def _while(cx, node):
    cond, body = (_region_fn(cx, r) for r in node.regions)
    init = [jnp.asarray(cx.x(v), _jnp_dtype(v.type.dtype)) for v in node.inputs]
    return list(jax.lax.while_loop(lambda s: cond(*s)[0], lambda s: body(*s), init))


def _if(cx, node):
    then, else_ = (_region_fn(cx, r) for r in node.regions)
    args = [jnp.asarray(cx.x(v), _jnp_dtype(v.type.dtype)) for v in node.inputs[1:]]
    return list(jax.lax.cond(cx.x(node.inputs[0]), then, else_, *args))


def _scan(cx, node):
    body = _region_fn(cx, node.regions[0])
    n, a = node.attrs["num_carry"], node.attrs
    ins = [jnp.asarray(cx.x(v), _jnp_dtype(v.type.dtype)) for v in node.inputs]

    def step(carry, xs):
        outs = body(*carry, *xs)
        return outs[:n], outs[n:]

    carry, ys = jax.lax.scan(step, ins[:n], ins[n:], length=a["length"], reverse=a["reverse"])
    return list(carry) + list(ys)


def _recurrent(cx, node):
    """`lstm` / `rnn` (ir/ops/recurrent.py) as one lax.scan over time."""
    x, kernel, recurrent, bias, *states = (cx.x(v) for v in node.inputs)
    xs = x if node.attrs["time_major"] else jnp.swapaxes(x, 0, 1)

    def step(carry, x_t):
        z = x_t @ kernel + carry[0] @ recurrent + bias
        if node.op == "rnn":
            return (jnp.tanh(z),), jnp.tanh(z)
        i, f, g, o = jnp.split(z, 4, axis=-1)
        c = jax.nn.sigmoid(f) * carry[1] + jax.nn.sigmoid(i) * jnp.tanh(g)
        h = jax.nn.sigmoid(o) * jnp.tanh(c)
        return (h, c), h

    final, ys = jax.lax.scan(step, tuple(states), xs)
    return [ys if node.attrs["time_major"] else jnp.swapaxes(ys, 0, 1), *final]


def _dynamic_update_slice(cx, node):
    x, update, start = (cx.x(v) for v in node.inputs)
    return [jax.lax.dynamic_update_slice(x, update, [start[i] for i in range(x.ndim)])]


LOWERINGS: dict[str, Callable] = {
    # control flow, in-place updates
    "while": _while, "if": _if, "scan": _scan, "dynamic_update_slice": _dynamic_update_slice,
    "lstm": _recurrent, "rnn": _recurrent,
    # elementwise
    "identity": _unary(lambda x: x),
    "neg": _unary(jnp.negative), "abs": _unary(jnp.abs), "exp": _unary(jnp.exp),
    "log": _unary(jnp.log), "sqrt": _unary(jnp.sqrt), "rsqrt": _unary(lax.rsqrt),
    "tanh": _unary(jnp.tanh), "sigmoid": _unary(jax.nn.sigmoid), "erf": _unary(lax.erf),
    "sin": _unary(jnp.sin), "cos": _unary(jnp.cos),
    "relu": _unary(lambda x: jnp.maximum(x, 0)), "relu6": _unary(lambda x: jnp.clip(x, 0, 6)),
    "leaky_relu": _leaky_relu, "gelu": _gelu, "elu": _elu,
    "hard_swish": _unary(lambda x: x * jnp.clip(x + 3, 0, 6) / 6),
    "hard_sigmoid": _unary(lambda x: jnp.clip(x / 6 + 0.5, 0, 1)),
    "softplus": _unary(lambda x: jnp.logaddexp(jnp.zeros_like(x), x)),
    "sign": _unary(jnp.sign), "floor": _unary(jnp.floor), "ceil": _unary(jnp.ceil),
    "round": _unary(jnp.round),   # half to even, like the IR
    "logical_not": _unary(jnp.logical_not), "clip": _clip, "cast": _cast,
    "conv3d": _conv3d, "conv3d_transpose": _conv3d_transpose,
    "bitcast": lambda cx, node: [jax.lax.bitcast_convert_type(
        cx.x(node.inputs[0]), _jnp_dtype(node.attrs["to"]))],
    "bitwise_and": _binary(jnp.bitwise_and), "bitwise_or": _binary(jnp.bitwise_or),
    "bitwise_xor": _binary(jnp.bitwise_xor), "bitwise_not": _unary(jnp.invert),
    "left_shift": _binary(lambda a, b: jnp.left_shift(a, _shift_amount(a, b))),
    "right_shift": _binary(lambda a, b: jnp.right_shift(a, _shift_amount(a, b))),
    "is_finite": _unary(jnp.isfinite), "erf_inv": _unary(lax.erf_inv),
    "add": _binary(jnp.add), "sub": _binary(jnp.subtract), "mul": _binary(jnp.multiply),
    "div": _binary(_div), "pow": _binary(_pow),
    "floor_div": _binary(lambda a, b: jnp.floor(a / b).astype(a.dtype) if _is_float(a)
                         else jnp.floor_divide(a, b)),
    "floor_mod": _binary(jnp.mod),
    "maximum": _binary(jnp.maximum), "minimum": _binary(jnp.minimum),
    "atan2": _binary(jnp.arctan2),
    "equal": _binary(jnp.equal), "not_equal": _binary(jnp.not_equal),
    "less": _binary(jnp.less), "less_equal": _binary(jnp.less_equal),
    "greater": _binary(jnp.greater), "greater_equal": _binary(jnp.greater_equal),
    "logical_and": _binary(jnp.logical_and), "logical_or": _binary(jnp.logical_or),
    "where": _where,
    # nn
    "conv2d": _conv2d, "depthwise_conv2d": _depthwise, "conv2d_transpose": _conv2d_transpose,
    "matmul": _matmul, "max_pool2d": _max_pool, "avg_pool2d": _avg_pool,
    "softmax": _softmax(jax.nn.softmax), "log_softmax": _softmax(jax.nn.log_softmax),
    "batch_norm": _batch_norm, "layer_norm": _layer_norm, "resize": _resize,
    # reductions
    "reduce_sum": _reduce(jnp.sum), "reduce_mean": _reduce_mean,
    "reduce_max": _reduce(jnp.max), "reduce_min": _reduce(jnp.min),
    "reduce_prod": _reduce(jnp.prod),
    "reduce_all": _reduce(jnp.all), "reduce_any": _reduce(jnp.any),
    "top_k": _top_k,
    # run-time shapes (sizes computed on the host, see _on_host)
    "dynamic_reshape": lambda cx, n: [jnp.reshape(cx.x(n.inputs[0]), _sizes(cx, n.inputs[1]))],
    "dynamic_broadcast_to": lambda cx, n: [jnp.broadcast_to(cx.x(n.inputs[0]),
                                                            _sizes(cx, n.inputs[1]))],
    "dynamic_tile": lambda cx, n: [jnp.tile(cx.x(n.inputs[0]), _sizes(cx, n.inputs[1]))],
    "dynamic_slice": _dynamic_slice, "range": _range, "nonzero": _nonzero,
    "dynamic_strided_slice": _dynamic_strided_slice, "dynamic_pad": _dynamic_pad,
    "gather_nd": lambda cx, n: [(lambda x, idx: x[idx])(*_nd_index(cx, n))],
    "scatter_nd_add": lambda cx, n: [cx.x(n.inputs[0]).at[_nd_index(cx, n)[1]].add(
        cx.x(n.inputs[2]))],
    "scatter_nd_update": lambda cx, n: [cx.x(n.inputs[0]).at[_nd_index(cx, n)[1]].set(
        cx.x(n.inputs[2]))],
    "shape_of": lambda cx, n: [jnp.asarray(cx.x(n.inputs[0]).shape,
                                           _jnp_dtype(n.attrs["dtype"]))],
    "argmax": _arg(jnp.argmax), "argmin": _arg(jnp.argmin), "cumsum": _cumsum,
    "cumprod": _cumulative(lax.cumprod), "cummax": _cumulative(lax.cummax),
    "cummin": _cumulative(lax.cummin),
    # quantization
    "quantize": _quantize, "dequantize": _dequantize, "fake_quant": _fake_quant,
    # shape
    "reshape": lambda cx, n: [jnp.reshape(cx.x(n.inputs[0]), tuple(n.attrs["shape"]))],
    "transpose": lambda cx, n: [jnp.transpose(cx.x(n.inputs[0]), tuple(n.attrs["perm"]))],
    "concat": lambda cx, n: [jnp.concatenate([cx.x(v) for v in n.inputs],
                                             axis=n.attrs["axis"])],
    "split": _split, "slice": _slice, "strided_slice": _strided_slice, "pad": _pad,
    "gather": _gather,
    "broadcast_to": lambda cx, n: [jnp.broadcast_to(cx.x(n.inputs[0]), tuple(n.attrs["shape"]))],
    "squeeze": _squeeze,
    "expand_dims": lambda cx, n: [jnp.expand_dims(cx.x(n.inputs[0]), n.attrs["axis"])],
    "tile": lambda cx, n: [jnp.tile(cx.x(n.inputs[0]), tuple(n.attrs["multiples"]))],
    "reverse": lambda cx, n: [jnp.flip(cx.x(n.inputs[0]), tuple(n.attrs["axes"]))],
}


# -- whole-graph emission ----------------------------------------------------------------------

def _diag(node: Node, message: str) -> Diagnostic:
    return Diagnostic(message, node=node.describe(), scope=node.scope, loc=node.loc)


def _stand_in(v: Value, size: int = 2):
    """A zero array of `v`'s type (symbols and unknown dims as `size`): what a failed node's
    results look like in the dry run, so later nodes are still checked."""
    try:
        dtype = _jnp_dtype(v.type.dtype)
    except Unsupported:
        dtype = jnp.float32
    return jnp.zeros([d if isinstance(d, int) else size for d in v.type.shape], dtype)


# Shapes are concrete while JAX traces, so shape arithmetic (`shape_of`, then integer ops on
# its result) runs in NumPy with the IR's own kernels: the dynamic_* ops then see Python ints,
# as jnp.reshape & co. need, and one traced function still serves every size.
_HOST_CONST_MAX = 64    # constants up to this many elements may join host arithmetic


def _on_host(cx: "_Ctx", node: Node) -> list | None:
    """The results of `node` computed in NumPy when its operands are all known at trace time
    (shapes, and small constants), else None (lowered to JAX as usual)."""
    if node.op == "shape_of":
        x = cx.x(node.inputs[0])
        return [np.asarray(x.shape, node.attrs["dtype"].np).reshape(len(x.shape))]
    if not node.inputs or node.regions:
        return None
    args = []
    for v in node.inputs:
        a = cx.env.get(id(v))
        if isinstance(a, np.ndarray):
            args.append(a)
        elif a is None and v.const is not None and v.const.size <= _HOST_CONST_MAX:
            args.append(np.asarray(v.const))
        else:
            return None
    if not any(isinstance(cx.env.get(id(v)), np.ndarray) for v in node.inputs):
        return None     # constants only: canonicalization folds those, leave them to JAX
    with np.errstate(all="ignore"):
        return [np.asarray(r) for r in get_op(node.op).kernel(args, node.attrs)]


def _host(cx: "_Ctx", value: Value, what: str) -> np.ndarray:
    """The NumPy array of an operand known at trace time (see _on_host)."""
    a = cx.env.get(id(value))
    if a is None and value.const is not None:
        a = value.const
    if not isinstance(a, np.ndarray):
        raise Unsupported(f"{what} computed from tensor data (not from shapes) needs static "
                          f"shapes in JAX")
    return a


def _sizes(cx: "_Ctx", value: Value) -> list[int]:
    """The Python ints of a size operand of a dynamic_* op."""
    return [int(d) for d in np.ravel(_host(cx, value, "a size"))]


def _emit(graph: Graph, cx: _Ctx, inputs, problems: list[Diagnostic] | None) -> list:
    """Lowers `graph` node by node; returns the output arrays. With `problems` given, a node
    that fails is recorded and replaced by a stand-in so the rest is still checked (dry run);
    otherwise the first failure raises ConversionError."""
    for v, t in zip(graph.inputs, inputs):
        cx.env[id(v)] = t
    for node in graph:
        if node.op == "constant":
            continue  # emitted where used
        lower = LOWERINGS.get(node.op)
        try:
            if lower is None:
                raise Unsupported(f"op '{node.op}' has no JAX lowering")
            for v in [*node.inputs, *node.outputs]:
                _jnp_dtype(v.type.dtype)
            results = _on_host(cx, node)
            if results is None:
                results = lower(cx, node)
            if len(results) != len(node.outputs):
                raise Unsupported(f"lowering gave {len(results)} results for "
                                  f"{len(node.outputs)} outputs")
        except Unsupported as err:
            if problems is None:
                raise ConversionError("cannot lower to JAX", [_diag(node, str(err))]) from None
            problems.append(_diag(node, str(err)))
            results = [_stand_in(v) for v in node.outputs]
        except (ConversionError, KeyError):
            raise
        except Exception as err:  # a JAX-side error must still name the node
            msg = f"JAX rejected the lowering: {type(err).__name__}: " \
                  f"{(str(err).splitlines() or [''])[0][:300]}"
            if problems is None:
                raise ConversionError("cannot lower to JAX", [_diag(node, msg)]) from err
            problems.append(_diag(node, msg))
            results = [_stand_in(v) for v in node.outputs]
        for v, t in zip(node.outputs, results):
            cx.env[id(v)] = t
    return [cx.x(v) for v in graph.outputs]


def _dry_run(module: Module) -> tuple[list[Diagnostic], set]:
    """Traces the graph abstractly (jax.eval_shape, symbolic dims as 2): (every problem, ids
    of constants read as tensors)."""
    graph = module.main
    problems: list[Diagnostic] = []
    used: set = set()
    specs = []
    for v in graph.inputs:
        try:
            dtype = _jnp_dtype(v.type.dtype)
        except Unsupported as err:
            problems.append(Diagnostic(f"graph input %{v.name or '?'}: {err}"))
            dtype = jnp.float32
        specs.append(jax.ShapeDtypeStruct(
            tuple(d if isinstance(d, int) else 2 for d in v.type.shape), dtype))

    def trace(*xs):
        cx = _Ctx(None, {}, used)
        try:
            return _emit(graph, cx, list(xs), problems)
        except Unsupported as err:  # a constant graph output of an unusable dtype
            problems.append(Diagnostic(f"graph output: {err}"))
            return []
    jax.eval_shape(trace, *specs)
    return problems, used


def jax_lowering_problems(module: Module) -> list[Diagnostic]:
    """Every reason `module` cannot be lowered to JAX (empty when it can): each unsupported
    node with its node, scope and loc."""
    return _dry_run(module)[0]


def _make_params(module: Module, used: set) -> tuple[dict[int, str], dict[str, jax.Array]]:
    """(id(constant value) -> key, key -> jnp array) for every float constant above
    PARAM_MIN_ELEMENTS that a lowering reads as a tensor, in graph order."""
    keys: dict[int, str] = {}
    params: dict[str, jax.Array] = {}
    taken: dict[str, int] = {}
    for node in module.main:
        if node.op != "constant":
            continue
        v = node.outputs[0]
        arr = np.asarray(v.const)
        if id(v) not in used or not v.type.dtype.is_float or arr.size <= PARAM_MIN_ELEMENTS:
            continue
        base = constant_name(v)
        n = taken.get(base, 0)
        taken[base] = n + 1
        key = base if n == 0 else f"{base}_{n}"
        keys[id(v)] = key
        params[key] = jnp.asarray(_storage(arr, v.type.dtype))
    return keys, params


def to_jax(module: Module) -> tuple[Callable, dict[str, jax.Array]]:
    """Lowers `module.main` to `(fn, params)`: `fn(params, *inputs)` is a pure JAX function
    returning the list of graph outputs (jit-able, differentiable w.r.t. `params`); `params`
    maps names to the module's weight-like float constants. Raises ConversionError listing
    every node that cannot be lowered."""
    problems, used = _dry_run(module)
    if problems:
        raise ConversionError("cannot lower to JAX", problems)
    keys, params = _make_params(module, used)
    graph = module.main
    n_in = len(graph.inputs)
    in_names = ", ".join(v.name or f"input_{i}" for i, v in enumerate(graph.inputs))

    def fn(params, *inputs):
        if len(inputs) != n_in:
            raise TypeError(f"expected {n_in} inputs ({in_names}), got {len(inputs)}")
        xs = [jnp.asarray(x) for x in inputs]
        return _emit(graph, _Ctx(params, keys, None), xs, None)

    fn.__doc__ = f"The JAX lowering of graph @{graph.name}: fn(params, {in_names}) -> [outputs]."
    return fn, params
