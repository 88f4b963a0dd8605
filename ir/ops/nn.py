"""Neural-network ops: convolutions, matmul, pooling, softmax, normalization and resize.

Conventions follow TensorFlow: activations are NHWC, conv filters HWIO, depthwise filters
[H, W, C_in, multiplier], conv2d_transpose filters [H, W, C_out, C_in]. SAME padding splits the
total padding TF's way (the extra row/column goes after).

Shape inference accepts symbolic dims: the batch dim is passed through as is, a spatial dim
keeps its symbol only when the output provably has the same size (SAME with stride 1), and
becomes "?" wherever a size cannot be computed.

Kernels are the NumPy reference semantics. They accumulate in float64 and cast back to the
operand dtype, so the reference is at least as accurate as any runtime it is compared against.
`float_accumulation(np.float32)` makes the heavy ones (2-D convolutions: plain, grouped,
depthwise, transposed; matmul) accumulate in float32 instead (float64 operands stay
float64), about twice as fast: for a run that is checked against another reference
(verification against the source model), not for the reference itself.
Convolutions are one BLAS product each: the windows of the padded input (a strided view,
[N, oh, ow, kh, kw, C]) gathered into rows (im2col, in chunks of bounded size) times the
flattened filter; transposed convolutions one product then a scatter-add per tap; grouped and
depthwise convolutions and pooling loop over the (few) filter taps, never over pixels, each tap
one strided slice of the padded input and one elementwise op. Matmuls whose right operand has
no batch dims run as one 2-D product over all the rows of the left one.
"""

from __future__ import annotations

import contextlib
from contextvars import ContextVar

import numpy as np

from ..errors import InferenceError
from ..types import UNKNOWN, DType, TensorType
from .registry import Attr, OpDef, broadcast_shapes, check, normalize_axis, register_op

PURE = frozenset({"pure"})


# -- shared helpers ----------------------------------------------------------------------------

def _static(*dims) -> bool:
    return all(isinstance(d, int) for d in dims)


def _dims_clash(a, b) -> bool:
    """True only when two dims are both static and differ (a symbol may equal anything)."""
    return _static(a, b) and a != b


def _check_rank(t: TensorType, rank: int, op: str, what: str, layout: str = "") -> None:
    lay = f" ({layout})" if layout else ""
    check(t.rank == rank, f"{op}: {what} must have rank {rank}{lay}, got {t}")


def _check_float(t: TensorType, op: str, what: str) -> None:
    check(t.dtype.is_float, f"{op}: {what} must be a float tensor, got {t.dtype}")


def _check_same_dtype(a: TensorType, b: TensorType, op: str, what: str) -> None:
    check(a.dtype == b.dtype, f"{op}: {what} dtype {b.dtype} differs from input dtype {a.dtype}")


def _pair(attrs: dict, name: str, op: str) -> tuple[int, int]:
    """A 2-element positive int attribute (strides, dilations, ksize)."""
    v = attrs[name]
    ok = (isinstance(v, tuple) and len(v) == 2
          and all(isinstance(x, int) and not isinstance(x, bool) and x >= 1 for x in v))
    check(ok, f"{op}: {name} must be two positive ints (h, w), got {v!r}")
    return v


def _padding(value, op: str, allow_explicit: bool):
    """Validates a padding attribute: "SAME", "VALID" or (when allowed) explicit
    ((top, bottom), (left, right)). Returns the string or the nested tuple."""
    if value in ("SAME", "VALID"):
        return value
    if allow_explicit and isinstance(value, tuple) and len(value) == 2 and all(
            isinstance(p, tuple) and len(p) == 2
            and all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in p)
            for p in value):
        return value
    want = ('"SAME", "VALID" or ((top, bottom), (left, right)) of non-negative ints'
            if allow_explicit else '"SAME" or "VALID"')
    raise InferenceError(f"{op}: padding must be {want}, got {value!r}")


def _out_dim(size, k, stride: int, dilation: int, pad, op: str, axis: str):
    """Output size of a sliding window along one spatial axis.

    `pad` is "SAME", "VALID" or (before, after). Symbolic sizes give a symbol only when the
    output is provably the same size as the input, otherwise "?".
    """
    if not _static(size, k):
        if stride == 1 and pad == "SAME":
            return size  # SAME with stride 1 keeps the input size whatever the kernel
        if stride == 1 and isinstance(pad, tuple) and _static(k) and \
                pad[0] + pad[1] == (k - 1) * dilation:
            return size
        return UNKNOWN
    eff_k = (k - 1) * dilation + 1
    if pad == "SAME":
        return -(-size // stride)
    padded = size if pad == "VALID" else size + pad[0] + pad[1]
    check(padded >= eff_k,
          f"{op}: {axis} window {eff_k} (kernel {k}, dilation {dilation}) is larger than the "
          f"{'padded ' if pad != 'VALID' else ''}input size {padded}")
    return (padded - eff_k) // stride + 1


def _pads(size: int, out: int, k: int, stride: int, dilation: int, pad) -> tuple[int, int]:
    """(before, after) padding of one axis for concrete sizes; TF puts the odd one after."""
    if pad == "VALID":
        return (0, 0)
    if pad == "SAME":
        total = max((out - 1) * stride + (k - 1) * dilation + 1 - size, 0)
        return (total // 2, total - total // 2)
    return tuple(pad)


def _spatial(h, w, kh, kw, strides, dilations, pad, op):
    """Output (h, w) for an NHWC window op; `pad` is a validated padding attribute."""
    ph, pw = (pad, pad) if isinstance(pad, str) else pad
    return (_out_dim(h, kh, strides[0], dilations[0], ph, op, "height"),
            _out_dim(w, kw, strides[1], dilations[1], pw, op, "width"))


def _pad_nhwc(x: np.ndarray, oh: int, ow: int, kh: int, kw: int, strides, dilations, pad,
              value=0.0) -> np.ndarray:
    ph, pw = (pad, pad) if isinstance(pad, str) else pad
    pt, pb = _pads(x.shape[1], oh, kh, strides[0], dilations[0], ph)
    pl, pr = _pads(x.shape[2], ow, kw, strides[1], dilations[1], pw)
    return np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)), constant_values=value)


def _tap(xp: np.ndarray, i: int, j: int, oh: int, ow: int, strides, dilations) -> np.ndarray:
    """The [N, oh, ow, C] slice of padded input `xp` that filter tap (i, j) multiplies."""
    r0, c0 = i * dilations[0], j * dilations[1]
    return xp[:, r0:r0 + (oh - 1) * strides[0] + 1:strides[0],
              c0:c0 + (ow - 1) * strides[1] + 1:strides[1], :]


def _windows(xp: np.ndarray, oh: int, ow: int, kh: int, kw: int, strides, dilations
             ) -> np.ndarray:
    """The read-only [N, oh, ow, kh, kw, C] view of padded input `xp` whose [n, y, x] entry is
    the window output pixel (y, x) reads (strided and dilated), without copying."""
    if xp.shape[1] < (oh - 1) * strides[0] + (kh - 1) * dilations[0] + 1 or \
            xp.shape[2] < (ow - 1) * strides[1] + (kw - 1) * dilations[1] + 1:
        raise ValueError(f"padded input {xp.shape} is too small for {oh}x{ow} windows")
    sn, sh, sw, sc = xp.strides
    return np.lib.stride_tricks.as_strided(
        xp, (xp.shape[0], oh, ow, kh, kw, xp.shape[3]),
        (sn, sh * strides[0], sw * strides[1], sh * dilations[0], sw * dilations[1], sc),
        writeable=False)


# Products below this many multiply-adds (~50 ms on one core) run on one BLAS thread.
# OpenBLAS's threads spin while they wait for work: on a machine whose cores are busy (the
# runtimes verification runs beside it, Node.js among them, other processes) a float64
# product split over several threads ran 20-40x slower than on one (measured on 2 shared
# cores: a 72x1536x384 dgemm at 1.2 GFLOP/s vs 40), and the interpreter's products (batch 2)
# are rarely larger. Larger ones keep every thread.
_SMALL_GEMM = 1 << 30
_blas = None     # threadpoolctl's BLAS controllers, when threadpoolctl is installed


def _one_thread():
    global _blas
    if _blas is None:
        try:
            from threadpoolctl import ThreadpoolController

            _blas = ThreadpoolController().select(user_api="blas")
        except Exception:   # not installed (an optional speed-up): BLAS's own threading
            _blas = False
    return _blas.limit(limits=1) if _blas else contextlib.nullcontext()


def _gemm(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """np.matmul(a, b); on one BLAS thread when each product is small (_SMALL_GEMM)."""
    m, k = a.shape[-2:]
    if m * k * b.shape[-1] >= _SMALL_GEMM:
        return np.matmul(a, b)
    with _one_thread():
        return np.matmul(a, b)


# im2col rows are gathered this many values at a time (32 MiB of float64), so a large
# convolution never materializes all its patches at once.
_IM2COL_CHUNK = 1 << 22


def _im2col_matmul(win: np.ndarray, w: np.ndarray) -> np.ndarray:
    """[N, oh, ow, kh, kw, C] windows (a strided view) times the [kh*kw*C, O] flattened filter:
    [N, oh, ow, O], gathering the windows into contiguous rows a bounded chunk at a time
    (whole images when they are small, else bands of output rows of one image)."""
    n, oh, ow, kh, kw, c = win.shape
    k = kh * kw * c
    out = np.empty((n, oh, ow, w.shape[1]), np.result_type(win, w))
    if out.size == 0 or k == 0:
        out[...] = 0
        return out
    image = oh * ow * k
    if image <= _IM2COL_CHUNK:
        per = _IM2COL_CHUNK // image
        for b in range(0, n, per):
            piece = np.ascontiguousarray(win[b:b + per])
            out[b:b + per] = _gemm(piece.reshape(-1, k), w).reshape(piece.shape[0], oh, ow, -1)
        return out
    per = max(1, _IM2COL_CHUNK // (ow * k))
    for b in range(n):
        for y in range(0, oh, per):
            piece = np.ascontiguousarray(win[b, y:y + per])
            out[b, y:y + per] = _gemm(piece.reshape(-1, k), w).reshape(piece.shape[0], ow, -1)
    return out


def _check_bias(types, c_out, op):
    if len(types) < 3:
        return
    x, b = types[0], types[2]
    _check_same_dtype(x, b, op, "bias")
    check(b.rank == 1, f"{op}: bias must have rank 1 ([C_out]), got {b}")
    check(not _dims_clash(b.shape[0], c_out),
          f"{op}: bias has {b.shape[0]} elements but the output has {c_out} channels")


# Fused activations, as TFLite's `ActivationFunctionType` (minus SIGN_BIT): passes fuse a
# following activation node into conv/matmul so backends can emit it in one op.
ACTIVATIONS = {
    "none": lambda x: x,
    "relu": lambda x: np.maximum(x, 0),
    "relu6": lambda x: np.clip(x, 0, 6),
    "relu_n1_to_1": lambda x: np.clip(x, -1, 1),
    "tanh": np.tanh,
}
_ACTIVATION_ATTR = Attr("str", "none", choices=tuple(ACTIVATIONS),
                        doc="fused activation applied to the result")


def _finish(acc: np.ndarray, ins, dtype, attrs) -> list[np.ndarray]:
    """Adds the optional bias (third operand), applies the fused activation and casts back
    to the operand dtype."""
    if len(ins) > 2:
        acc = acc + ins[2].astype(acc.dtype)
    return [ACTIVATIONS[attrs["activation"]](acc).astype(dtype)]


_CONV_ATTRS = {
    "strides": Attr("ints", (1, 1), doc="(stride_h, stride_w)"),
    "dilations": Attr("ints", (1, 1), doc="(dilation_h, dilation_w)"),
    # "SAME" / "VALID" or explicit ((top, bottom), (left, right)); validated by infer.
    "padding": Attr("any", "VALID", doc='"SAME", "VALID" or ((top, bottom), (left, right))'),
    "activation": _ACTIVATION_ATTR,
}


# -- conv2d ------------------------------------------------------------------------------------

def _infer_conv2d(types, attrs):
    op = "conv2d"
    x, f = types[0], types[1]
    _check_rank(x, 4, op, "input", "NHWC")
    _check_rank(f, 4, op, "filter", "HWIO")
    _check_float(x, op, "input")
    _check_same_dtype(x, f, op, "filter")
    strides, dilations = _pair(attrs, "strides", op), _pair(attrs, "dilations", op)
    pad = _padding(attrs["padding"], op, allow_explicit=True)
    groups = attrs["groups"]
    check(isinstance(groups, int) and groups >= 1, f"{op}: groups must be >= 1, got {groups!r}")
    n, h, w, c = x.shape
    kh, kw, ci, co = f.shape
    if _static(c):
        check(c % groups == 0, f"{op}: input channels {c} are not divisible by groups={groups}")
        if _static(ci):
            check(ci * groups == c,
                  f"{op}: input has {c} channels but filter expects {ci}*groups={ci * groups} "
                  f"(filter is HWIO {f.shape})")
    if _static(co):
        check(co % groups == 0,
              f"{op}: output channels {co} are not divisible by groups={groups}")
    oh, ow = _spatial(h, w, kh, kw, strides, dilations, pad, op)
    _check_bias(types, co, op)
    return [TensorType(x.dtype, (n, oh, ow, co))]


# What the heavy float kernels accumulate in (see the module docstring); per thread/context.
_FLOAT_ACCUMULATION: ContextVar = ContextVar("float_accumulation", default=np.float64)


@contextlib.contextmanager
def float_accumulation(dtype):
    """Within the block (this thread or context), 2-D convolutions and matmuls on floats
    accumulate in `dtype` (np.float32 or np.float64, the default) and cast back as before."""
    if np.dtype(dtype) not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ValueError(f"float accumulation in {np.dtype(dtype)}: float32 or float64 only")
    token = _FLOAT_ACCUMULATION.set(np.dtype(dtype).type)
    try:
        yield
    finally:
        _FLOAT_ACCUMULATION.reset(token)


def _acc(*arrays) -> type:
    """The accumulation dtype for float operands `arrays`: the context's, but float64 for
    float64 operands (never narrowed)."""
    if any(a.dtype == np.float64 for a in arrays):
        return np.float64
    return _FLOAT_ACCUMULATION.get()


def _conv2d_kernel(ins, attrs):
    x, f = ins[0], ins[1]
    strides, dilations, pad = attrs["strides"], attrs["dilations"], attrs["padding"]
    groups = attrs["groups"]
    n, h, w, c = x.shape
    kh, kw, ci, co = f.shape
    oh, ow = _spatial(h, w, kh, kw, strides, dilations, pad, "conv2d")
    acc_t = _acc(x, f)
    xp = _pad_nhwc(x.astype(acc_t), oh, ow, kh, kw, strides, dilations, pad)
    f64 = f.astype(acc_t)
    if groups == 1:
        # im2col: every window as a row of kh*kw*C values (tap-major, as HWIO flattens).
        win = _windows(xp, oh, ow, kh, kw, strides, dilations)
        acc = _im2col_matmul(win, f64.reshape(kh * kw * ci, co))
        return _finish(acc, ins, x.dtype, attrs)
    # Group g reads input channels [g*ci, (g+1)*ci) and writes output channels
    # [g*co/G, (g+1)*co/G).
    m = co // groups
    acc = np.zeros((n, oh, ow, groups, m), acc_t)
    for i in range(kh):
        for j in range(kw):
            patch = _tap(xp, i, j, oh, ow, strides, dilations)
            if ci == 1:     # depthwise: one multiply-add per tap
                acc += patch[..., None] * f64[i, j, 0].reshape(groups, m)
            else:
                pg = patch.reshape(n * oh * ow, groups, ci).transpose(1, 0, 2)
                fg = f64[i, j].reshape(ci, groups, m).transpose(1, 0, 2)
                acc += _gemm(pg, fg).transpose(1, 0, 2).reshape(n, oh, ow, groups, m)
    return _finish(acc.reshape(n, oh, ow, co), ins, x.dtype, attrs)


register_op(OpDef(
    "conv2d", ("input", "filter", "bias?"), _infer_conv2d, _conv2d_kernel,
    attrs={**_CONV_ATTRS,
           "groups": Attr("int", 1, doc="grouped conv: filter's I dim is C_in/groups")},
    traits=PURE,
    doc="2-D convolution, NHWC input, HWIO filter, optional [C_out] bias.",
))


# -- conv3d ------------------------------------------------------------------------------------

def _triple(attrs: dict, name: str, op: str) -> tuple[int, int, int]:
    v = attrs[name]
    ok = (isinstance(v, tuple) and len(v) == 3
          and all(isinstance(x, int) and not isinstance(x, bool) and x >= 1 for x in v))
    check(ok, f"{op}: {name} must be three positive ints (d, h, w), got {v!r}")
    return v


def _infer_conv3d(types, attrs):
    op = "conv3d"
    x, f = types[0], types[1]
    _check_rank(x, 5, op, "input", "NDHWC")
    _check_rank(f, 5, op, "filter", "DHWIO")
    _check_float(x, op, "input")
    _check_same_dtype(x, f, op, "filter")
    strides, dilations = _triple(attrs, "strides", op), _triple(attrs, "dilations", op)
    pad = _padding(attrs["padding"], op, allow_explicit=False)
    n, *spatial, c = x.shape
    *kernel, ci, co = f.shape
    check(not _dims_clash(c, ci),
          f"{op}: input has {c} channels but filter expects {ci} (filter is DHWIO {f.shape})")
    out = [_out_dim(size, k, s, d, pad, op, axis) for size, k, s, d, axis in
           zip(spatial, kernel, strides, dilations, ("depth", "height", "width"))]
    _check_bias(types, co, op)
    return [TensorType(x.dtype, (n, *out, co))]


def _conv3d_kernel(ins, attrs):
    x, f = ins[0], ins[1]
    strides, dilations, pad = attrs["strides"], attrs["dilations"], attrs["padding"]
    n, *spatial, _ = x.shape
    *kernel, _, co = f.shape
    out = [_out_dim(size, k, s, d, pad, "conv3d", "") for size, k, s, d in
           zip(spatial, kernel, strides, dilations)]
    pads = [_pads(size, o, k, s, d, pad) for size, o, k, s, d in
            zip(spatial, out, kernel, strides, dilations)]
    xp = np.pad(x.astype(np.float64), ((0, 0), *pads, (0, 0)))
    f64 = f.astype(np.float64)
    acc = np.zeros((n, *out, co))
    for tap in np.ndindex(*kernel):
        starts = [t * d for t, d in zip(tap, dilations)]
        window = tuple(slice(b, b + (o - 1) * s + 1, s)
                       for b, o, s in zip(starts, out, strides))
        taps = xp[(slice(None), *window)]
        rows = int(np.prod(taps.shape[:-1], dtype=np.int64))
        acc += _gemm(taps.reshape(rows, taps.shape[-1]), f64[tap]).reshape(acc.shape)
    return _finish(acc, ins, x.dtype, attrs)


register_op(OpDef(
    "conv3d", ("input", "filter", "bias?"), _infer_conv3d, _conv3d_kernel,
    attrs={"strides": Attr("ints", (1, 1, 1), doc="(stride_d, stride_h, stride_w)"),
           "dilations": Attr("ints", (1, 1, 1), doc="(dilation_d, dilation_h, dilation_w)"),
           "padding": Attr("str", "VALID", choices=("SAME", "VALID")),
           "activation": _ACTIVATION_ATTR},
    traits=PURE,
    doc="3-D convolution, NDHWC input, DHWIO filter, optional [C_out] bias.",
))


def _infer_conv3d_transpose(types, attrs):
    op = "conv3d_transpose"
    x, f = types[0], types[1]
    _check_rank(x, 5, op, "input", "NDHWC")
    _check_rank(f, 5, op, "filter", "[D, H, W, C_out, C_in]")
    _check_float(x, op, "input")
    _check_same_dtype(x, f, op, "filter")
    strides = _triple(attrs, "strides", op)
    pad = _padding(attrs["padding"], op, allow_explicit=False)
    n, *spatial, c = x.shape
    *kernel, co, ci = f.shape
    check(not _dims_clash(c, ci), f"{op}: input has {c} channels but filter expects {ci}")
    given = attrs["output_shape"]
    check(isinstance(given, tuple) and len(given) == 5 and given[0] >= -1
          and min(given[1:]) >= 0, f"{op}: output_shape must be 5 ints NDHWC (batch may be "
                                   f"-1), got {given!r}")
    check(not _dims_clash(given[4], co),
          f"{op}: output_shape has {given[4]} channels but the filter produces {co}")
    out = [_transpose_out_dim(size, k, s, 1, pad, g, op, axis) for size, k, s, g, axis in
           zip(spatial, kernel, strides, given[1:4], ("depth", "height", "width"))]
    _check_bias(types, co, op)
    return [TensorType(x.dtype, (n if given[0] == -1 else given[0], *out, given[4]))]


def _conv3d_transpose_kernel(ins, attrs):
    x, f = ins[0], ins[1]
    strides, pad, given = attrs["strides"], attrs["padding"], attrs["output_shape"]
    n, *spatial, _ = x.shape
    *kernel, co, _ = f.shape
    out = list(given[1:4])
    # conv3d's input gradient: tap t of input position p lands on output p*s + t - pad.
    before = [_pads(o, size, k, s, 1, pad)[0] for o, size, k, s in
              zip(out, spatial, kernel, strides)]
    full = [max((size - 1) * s + k, b + o) for size, s, k, b, o in
            zip(spatial, strides, kernel, before, out)]
    buf = np.zeros((n, *full, co))
    x64, f64 = x.astype(np.float64), f.astype(np.float64)
    for tap in np.ndindex(*kernel):
        window = tuple(slice(t, t + (size - 1) * s + 1, s)
                       for t, size, s in zip(tap, spatial, strides))
        buf[(slice(None), *window)] += x64 @ f64[tap].T
    crop = tuple(slice(b, b + o) for b, o in zip(before, out))
    return _finish(buf[(slice(None), *crop)], ins, x.dtype, attrs)


register_op(OpDef(
    "conv3d_transpose", ("input", "filter", "bias?"), _infer_conv3d_transpose,
    _conv3d_transpose_kernel,
    attrs={"strides": Attr("ints", (1, 1, 1), doc="(stride_d, stride_h, stride_w)"),
           "padding": Attr("str", "VALID", choices=("SAME", "VALID")),
           "activation": _ACTIVATION_ATTR,
           "output_shape": Attr("ints", doc="full NDHWC output shape (batch may be -1)")},
    traits=PURE,
    doc="Transposed 3-D convolution (conv3d's input gradient), filter [D, H, W, C_out, C_in].",
))


# -- depthwise_conv2d --------------------------------------------------------------------------

def _infer_depthwise(types, attrs):
    op = "depthwise_conv2d"
    x, f = types[0], types[1]
    _check_rank(x, 4, op, "input", "NHWC")
    _check_rank(f, 4, op, "filter", "[H, W, C_in, multiplier]")
    _check_float(x, op, "input")
    _check_same_dtype(x, f, op, "filter")
    strides, dilations = _pair(attrs, "strides", op), _pair(attrs, "dilations", op)
    pad = _padding(attrs["padding"], op, allow_explicit=True)
    n, h, w, c = x.shape
    kh, kw, ci, m = f.shape
    check(not _dims_clash(c, ci),
          f"{op}: input has {c} channels but filter expects {ci} (filter is {f.shape})")
    cin = c if _static(c) else ci
    co = cin * m if _static(cin, m) else UNKNOWN
    oh, ow = _spatial(h, w, kh, kw, strides, dilations, pad, op)
    _check_bias(types, co, op)
    return [TensorType(x.dtype, (n, oh, ow, co))]


def _depthwise_kernel(ins, attrs):
    x, f = ins[0], ins[1]
    strides, dilations, pad = attrs["strides"], attrs["dilations"], attrs["padding"]
    n, h, w, c = x.shape
    kh, kw, _, m = f.shape
    oh, ow = _spatial(h, w, kh, kw, strides, dilations, pad, "depthwise_conv2d")
    acc_t = _acc(x, f)
    xp = _pad_nhwc(x.astype(acc_t), oh, ow, kh, kw, strides, dilations, pad)
    f64 = f.astype(acc_t)
    acc = np.zeros((n, oh, ow, c, m), acc_t)
    # Each tap's product goes through one reused buffer (a new temporary per tap made the
    # large early layers of MobileNets ~1.5x slower); multiplier 1 drops the broadcast axis.
    product = np.empty_like(acc)
    acc_v, product_v = (acc[..., 0], product[..., 0]) if m == 1 else (acc, product)
    for i in range(kh):
        for j in range(kw):
            tap = _tap(xp, i, j, oh, ow, strides, dilations)
            if m == 1:
                np.multiply(tap, f64[i, j, :, 0], out=product_v)
            else:
                np.multiply(tap[..., None], f64[i, j], out=product_v)
            acc_v += product_v
    # Output channel c*m + k, as TF orders them.
    return _finish(acc.reshape(n, oh, ow, c * m), ins, x.dtype, attrs)


register_op(OpDef(
    "depthwise_conv2d", ("input", "filter", "bias?"), _infer_depthwise, _depthwise_kernel,
    attrs=dict(_CONV_ATTRS), traits=PURE,
    doc="Depthwise 2-D convolution, filter [H, W, C_in, mult] -> C_in*mult channels.",
))


# -- conv2d_transpose --------------------------------------------------------------------------

def _transpose_out_dim(size, k, stride, dilation, pad, given, op, axis):
    """Output size of a transposed conv along one axis: `given` (validated against the forward
    conv it is the gradient of) or the smallest size that works."""
    if given is not None:
        if _static(size, k):
            # The forward conv over the output must give back the input size.
            ok = True
            try:
                fwd = _out_dim(given, k, stride, dilation, pad, op, axis)
            except InferenceError:
                ok = False
            check(ok and fwd == size,
                  f"{op}: output_shape {axis} {given} is inconsistent with input {axis} {size} "
                  f"(stride {stride}, kernel {k}, padding {pad})")
        return given
    if not _static(size, k):
        return size if (pad == "SAME" and stride == 1) else UNKNOWN
    if pad == "SAME":
        return size * stride
    return (size - 1) * stride + (k - 1) * dilation + 1


def _infer_conv2d_transpose(types, attrs):
    op = "conv2d_transpose"
    x, f = types[0], types[1]
    _check_rank(x, 4, op, "input", "NHWC")
    _check_rank(f, 4, op, "filter", "[H, W, C_out, C_in]")
    _check_float(x, op, "input")
    _check_same_dtype(x, f, op, "filter")
    strides, dilations = _pair(attrs, "strides", op), _pair(attrs, "dilations", op)
    pad = _padding(attrs["padding"], op, allow_explicit=False)
    n, h, w, c = x.shape
    kh, kw, co, ci = f.shape
    check(not _dims_clash(c, ci),
          f"{op}: input has {c} channels but filter expects {ci} (filter is [H, W, C_out, C_in] "
          f"{f.shape})")
    given = attrs.get("output_shape")
    gh = gw = None
    if given is not None:
        check(isinstance(given, tuple) and len(given) == 4
              and all(isinstance(d, int) and not isinstance(d, bool) for d in given)
              and given[0] >= -1 and min(given[1:]) >= 0,
              f"{op}: output_shape must be 4 ints NHWC (batch may be -1), got {given!r}")
        gn, gh, gw, gc = given
        if gn != -1:
            check(not _dims_clash(gn, n),
                  f"{op}: output_shape batch {gn} differs from input batch {n}")
            n = gn
        check(not _dims_clash(gc, co),
              f"{op}: output_shape has {gc} channels but the filter produces {co}")
        co = gc
    oh = _transpose_out_dim(h, kh, strides[0], dilations[0], pad, gh, op, "height")
    ow = _transpose_out_dim(w, kw, strides[1], dilations[1], pad, gw, op, "width")
    _check_bias(types, co, op)
    return [TensorType(x.dtype, (n, oh, ow, co))]


def _conv2d_transpose_kernel(ins, attrs):
    x, f = ins[0], ins[1]
    strides, dilations, pad = attrs["strides"], attrs["dilations"], attrs["padding"]
    n, h, w, ci = x.shape
    kh, kw, co, _ = f.shape
    given = attrs.get("output_shape")
    gh, gw = (None, None) if given is None else given[1:3]
    oh = _transpose_out_dim(h, kh, strides[0], dilations[0], pad, gh, "conv2d_transpose",
                            "height")
    ow = _transpose_out_dim(w, kw, strides[1], dilations[1], pad, gw, "conv2d_transpose",
                            "width")
    # This is the gradient of conv2d(output) w.r.t. its input: the forward conv reads output
    # row y*s + i*d - pad_top for input row y and tap i, so we scatter-add there instead.
    pt, _ = _pads(oh, h, kh, strides[0], dilations[0], pad)
    pl, _ = _pads(ow, w, kw, strides[1], dilations[1], pad)
    full_h = (h - 1) * strides[0] + (kh - 1) * dilations[0] + 1
    full_w = (w - 1) * strides[1] + (kw - 1) * dilations[1] + 1
    acc_t = _acc(x, f)
    buf = np.zeros((n, max(full_h, pt + oh), max(full_w, pl + ow), co), acc_t)
    x64, f64 = x.astype(acc_t), f.astype(acc_t)
    # Every tap's contribution in one product: [N*H*W, C_in] @ [C_in, kh*kw*C_out].
    taps = _gemm(x64.reshape(n * h * w, ci), f64.reshape(kh * kw * co, ci).T).reshape(
        n, h, w, kh, kw, co)
    for i in range(kh):
        for j in range(kw):
            contrib = taps[:, :, :, i, j]                    # [N, H, W, C_out]
            r0, c0 = i * dilations[0], j * dilations[1]
            buf[:, r0:r0 + (h - 1) * strides[0] + 1:strides[0],
                c0:c0 + (w - 1) * strides[1] + 1:strides[1], :] += contrib
    return _finish(buf[:, pt:pt + oh, pl:pl + ow, :], ins, x.dtype, attrs)


register_op(OpDef(
    "conv2d_transpose", ("input", "filter", "bias?"), _infer_conv2d_transpose,
    _conv2d_transpose_kernel,
    attrs={
        "strides": Attr("ints", (1, 1), doc="(stride_h, stride_w)"),
        "dilations": Attr("ints", (1, 1), doc="(dilation_h, dilation_w)"),
        "padding": Attr("str", "VALID", choices=("SAME", "VALID")),
        "activation": _ACTIVATION_ATTR,
        "output_shape": Attr("ints", None, optional=True,
                             doc="full NHWC output shape (batch may be -1); None infers it"),
    },
    traits=PURE,
    doc="Transposed 2-D convolution (conv2d's input gradient), filter [H, W, C_out, C_in].",
))


# -- matmul ------------------------------------------------------------------------------------

def _infer_matmul(types, attrs):
    op = "matmul"
    a, b = types[0], types[1]
    check(a.rank >= 2 and b.rank >= 2,
          f"{op}: both operands need rank >= 2 ([..., M, K] @ [..., K, N]), got {a} and {b}")
    check(a.dtype == b.dtype, f"{op}: operand dtypes differ ({a.dtype} vs {b.dtype})")
    check(a.dtype != DType.bool, f"{op}: bool operands are not supported")
    m, k = a.shape[-2:][::-1] if attrs["transpose_a"] else a.shape[-2:]
    k2, nn = b.shape[-2:][::-1] if attrs["transpose_b"] else b.shape[-2:]
    check(not _dims_clash(k, k2),
          f"{op}: contraction dims differ: a gives K={k}, b gives K={k2} ({a} @ {b}, "
          f"transpose_a={attrs['transpose_a']}, transpose_b={attrs['transpose_b']})")
    try:
        batch = broadcast_shapes(a.shape[:-2], b.shape[:-2])
    except InferenceError as e:
        raise InferenceError(f"{op}: batch dims of {a} and {b} do not broadcast: {e}") from None
    _check_bias(types, nn, op)
    check(a.dtype.is_float or attrs["activation"] == "none",
          f"{op}: a fused activation needs float operands, got {a.dtype}")
    return [TensorType(a.dtype, (*batch, m, nn))]


def _matmul_kernel(ins, attrs):
    a, b = ins[0], ins[1]
    dtype = a.dtype
    # Accumulate wide: float64 for every float type (bf16 included; `float_accumulation`
    # may say float32), int64 for integers (the cast back wraps around like a fixed-width
    # runtime would).
    wide = _acc(a, b) if DType.from_numpy(dtype).is_float else np.int64
    a, b = a.astype(wide), b.astype(wide)
    if attrs["transpose_a"]:
        a = np.swapaxes(a, -1, -2)
    if attrs["transpose_b"]:
        b = np.swapaxes(b, -1, -2)
    if b.ndim == 2 and a.ndim > 2:
        # [..., M, K] @ [K, N]: one 2-D product over all rows (np.matmul would loop over the
        # batch with one small product each).
        rows = int(np.prod(a.shape[:-1], dtype=np.int64))
        acc = _gemm(a.reshape(rows, a.shape[-1]), b).reshape(*a.shape[:-1], b.shape[-1])
    else:
        acc = _gemm(a, b)
    if wide is np.int64:
        if len(ins) > 2:
            acc = acc + ins[2].astype(np.int64)
        return [acc.astype(dtype)]
    return _finish(acc, ins, dtype, attrs)


register_op(OpDef(
    "matmul", ("a", "b", "bias?"), _infer_matmul, _matmul_kernel,
    attrs={"transpose_a": Attr("bool", False), "transpose_b": Attr("bool", False),
           "activation": _ACTIVATION_ATTR},
    traits=PURE,
    doc="Batched matrix product a @ b (batch dims broadcast), optional transposes, optional "
        "[N] bias and fused activation.",
))


# -- pooling -----------------------------------------------------------------------------------

_POOL_ATTRS = {
    "ksize": Attr("ints", doc="(window_h, window_w)"),
    "strides": Attr("ints", doc="(stride_h, stride_w)"),
    "padding": Attr("str", "VALID", choices=("SAME", "VALID")),
}


def _pool_infer(op, float_only):
    def infer(types, attrs):
        x = types[0]
        _check_rank(x, 4, op, "input", "NHWC")
        if float_only:
            _check_float(x, op, "input")
        else:
            check(x.dtype != DType.bool, f"{op}: bool input is not supported")
        kh, kw = _pair(attrs, "ksize", op)
        strides = _pair(attrs, "strides", op)
        pad = _padding(attrs["padding"], op, allow_explicit=False)
        n, h, w, c = x.shape
        oh, ow = _spatial(h, w, kh, kw, strides, (1, 1), pad, op)
        return [TensorType(x.dtype, (n, oh, ow, c))]
    return infer


def _max_pool_kernel(ins, attrs):
    x = ins[0]
    (kh, kw), strides, pad = attrs["ksize"], attrs["strides"], attrs["padding"]
    oh, ow = _spatial(x.shape[1], x.shape[2], kh, kw, strides, (1, 1), pad, "max_pool2d")
    # Padding never wins a max (TF ignores it); every SAME window holds a real element.
    low = -np.inf if x.dtype.kind == "f" else np.iinfo(x.dtype).min
    xp = _pad_nhwc(x, oh, ow, kh, kw, strides, (1, 1), pad, value=low)
    out = None
    for i in range(kh):
        for j in range(kw):
            t = _tap(xp, i, j, oh, ow, strides, (1, 1))
            out = t.copy() if out is None else np.maximum(out, t)
    return [out.astype(x.dtype)]


def _avg_pool_kernel(ins, attrs):
    x = ins[0]
    (kh, kw), strides, pad = attrs["ksize"], attrs["strides"], attrs["padding"]
    n, h, w, c = x.shape
    oh, ow = _spatial(h, w, kh, kw, strides, (1, 1), pad, "avg_pool2d")
    xp = _pad_nhwc(x.astype(np.float64), oh, ow, kh, kw, strides, (1, 1), pad)
    # Like TF, SAME windows average only their real (non-padding) elements: count them by
    # pooling a mask of ones padded with zeros.
    mask = _pad_nhwc(np.ones((1, h, w, 1)), oh, ow, kh, kw, strides, (1, 1), pad)
    total = np.zeros((n, oh, ow, c))
    count = np.zeros((1, oh, ow, 1))
    for i in range(kh):
        for j in range(kw):
            total += _tap(xp, i, j, oh, ow, strides, (1, 1))
            count += _tap(mask, i, j, oh, ow, strides, (1, 1))
    return [(total / count).astype(x.dtype)]


register_op(OpDef(
    "max_pool2d", ("input",), _pool_infer("max_pool2d", float_only=False), _max_pool_kernel,
    attrs=dict(_POOL_ATTRS), traits=PURE,
    doc="2-D max pooling over NHWC windows (padding never selected).",
))

register_op(OpDef(
    "avg_pool2d", ("input",), _pool_infer("avg_pool2d", float_only=True), _avg_pool_kernel,
    attrs=dict(_POOL_ATTRS), traits=PURE,
    doc="2-D average pooling over NHWC windows; SAME divides by the count of real elements.",
))


# -- softmax -----------------------------------------------------------------------------------

def _softmax_infer(op):
    def infer(types, attrs):
        x = types[0]
        _check_float(x, op, "input")
        normalize_axis(attrs["axis"], x.rank, f"{op}: axis")
        return [x]
    return infer


def _shifted(x, axis):
    # Subtracting the max keeps exp() from overflowing; the result is unchanged.
    x64 = x.astype(np.float64)
    return x64 - np.max(x64, axis=axis, keepdims=True)


def _softmax_kernel(ins, attrs):
    z = np.exp(_shifted(ins[0], attrs["axis"]))
    return [(z / np.sum(z, axis=attrs["axis"], keepdims=True)).astype(ins[0].dtype)]


def _log_softmax_kernel(ins, attrs):
    z = _shifted(ins[0], attrs["axis"])
    out = z - np.log(np.sum(np.exp(z), axis=attrs["axis"], keepdims=True))
    return [out.astype(ins[0].dtype)]


register_op(OpDef(
    "softmax", ("x",), _softmax_infer("softmax"), _softmax_kernel,
    attrs={"axis": Attr("int", -1)}, traits=PURE,
    doc="exp(x) / sum(exp(x)) along `axis` (numerically stable).",
))

register_op(OpDef(
    "log_softmax", ("x",), _softmax_infer("log_softmax"), _log_softmax_kernel,
    attrs={"axis": Attr("int", -1)}, traits=PURE,
    doc="x - log(sum(exp(x))) along `axis` (numerically stable).",
))


# -- normalization -----------------------------------------------------------------------------

_BN_PARAMS = ("mean", "variance", "scale", "offset")


def _infer_batch_norm(types, attrs):
    op = "batch_norm"
    x = types[0]
    _check_float(x, op, "input")
    check(x.rank >= 1, f"{op}: input must have rank >= 1, got {x}")
    axis = normalize_axis(attrs["axis"], x.rank, f"{op}: axis")
    c = x.shape[axis]
    for name, t in zip(_BN_PARAMS, types[1:]):
        _check_same_dtype(x, t, op, name)
        check(t.rank == 1, f"{op}: {name} must have rank 1 ([C]), got {t}")
        check(not _dims_clash(t.shape[0], c),
              f"{op}: {name} has {t.shape[0]} elements but input axis {axis} has size {c}")
    check(attrs["epsilon"] >= 0, f"{op}: epsilon must be >= 0, got {attrs['epsilon']}")
    return [x]


def _batch_norm_kernel(ins, attrs):
    x = ins[0]
    axis = attrs["axis"] % x.ndim
    shape = [1] * x.ndim
    shape[axis] = x.shape[axis]
    mean, var, scale, offset = (p.astype(np.float64).reshape(shape) for p in ins[1:])
    y = (x.astype(np.float64) - mean) / np.sqrt(var + attrs["epsilon"]) * scale + offset
    return [y.astype(x.dtype)]


register_op(OpDef(
    "batch_norm", ("x", "mean", "variance", "scale", "offset"), _infer_batch_norm,
    _batch_norm_kernel,
    attrs={"epsilon": Attr("float", 1e-3), "axis": Attr("int", -1, doc="the channel axis")},
    traits=PURE,
    doc="Inference batch norm: (x - mean) / sqrt(variance + eps) * scale + offset.",
))


def _ln_axes(attrs, rank, op):
    axes = attrs["axes"]
    check(isinstance(axes, tuple) and len(axes) > 0, f"{op}: axes must be a non-empty list")
    norm = sorted(normalize_axis(a, rank, f"{op}: axis") for a in axes)
    check(len(set(norm)) == len(norm), f"{op}: axes {axes} repeat an axis")
    return norm


def _infer_layer_norm(types, attrs):
    op = "layer_norm"
    x = types[0]
    _check_float(x, op, "input")
    axes = _ln_axes(attrs, x.rank, op)
    # scale/offset have the sizes of the normalized axes, in axis order (as Keras builds them).
    want = tuple(x.shape[a] for a in axes)
    for name, t in zip(("scale", "offset"), types[1:]):
        _check_same_dtype(x, t, op, name)
        check(t.rank == len(want) and not any(_dims_clash(p, q) for p, q in zip(t.shape, want)),
              f"{op}: {name} must have shape {list(want)} (input dims at axes {axes}), "
              f"got {list(t.shape)}")
    check(attrs["epsilon"] >= 0, f"{op}: epsilon must be >= 0, got {attrs['epsilon']}")
    return [x]


def _layer_norm_kernel(ins, attrs):
    x = ins[0]
    axes = tuple(_ln_axes(attrs, x.ndim, "layer_norm"))
    x64 = x.astype(np.float64)
    mean = x64.mean(axis=axes, keepdims=True)
    var = ((x64 - mean) ** 2).mean(axis=axes, keepdims=True)   # population variance
    y = (x64 - mean) / np.sqrt(var + attrs["epsilon"])
    bshape = [x.shape[a] if a in axes else 1 for a in range(x.ndim)]
    if len(ins) > 1:
        y = y * ins[1].astype(np.float64).reshape(bshape)
    if len(ins) > 2:
        y = y + ins[2].astype(np.float64).reshape(bshape)
    return [y.astype(x.dtype)]


register_op(OpDef(
    "layer_norm", ("x", "scale?", "offset?"), _infer_layer_norm, _layer_norm_kernel,
    attrs={"axes": Attr("ints", (-1,), doc="axes normalized over"),
           "epsilon": Attr("float", 1e-5)},
    traits=PURE,
    doc="Layer norm over `axes`: (x - mean) / sqrt(var + eps) * scale + offset.",
))


# -- resize ------------------------------------------------------------------------------------

def _infer_resize(types, attrs):
    op = "resize"
    x = types[0]
    _check_rank(x, 4, op, "input", "NHWC")
    size = attrs["size"]
    check(isinstance(size, tuple) and len(size) == 2
          and all(isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in size),
          f"{op}: size must be two positive ints (h, w), got {size!r}")
    check(attrs["method"] in ("nearest", "bilinear"),
          f"{op}: method must be 'nearest' or 'bilinear', got {attrs['method']!r}")
    check(not (attrs["align_corners"] and attrs["half_pixel_centers"]),
          f"{op}: align_corners and half_pixel_centers cannot both be true")
    if attrs["method"] == "bilinear":
        _check_float(x, op, "input (bilinear)")
    n, h, w, c = x.shape
    check(all(d != 0 for d in (h, w)), f"{op}: input spatial dims must be non-empty, got {x}")
    return [TensorType(x.dtype, (n, size[0], size[1], c))]


def _resize_scale(in_size, out_size, align_corners):
    # TF computes the scale and source coordinates in float32; we do the same so that
    # floor/round land on exactly the pixels TF picks.
    if align_corners and out_size > 1:
        return np.float32(in_size - 1) / np.float32(out_size - 1)
    return np.float32(in_size) / np.float32(out_size)


def _nearest_index(in_size, out_size, align_corners, half_pixel):
    """Source index per output index (TF ResizeNearestNeighbor)."""
    scale = _resize_scale(in_size, out_size, align_corners)
    o = np.arange(out_size, dtype=np.float32)
    if half_pixel:
        # TF's nearest half-pixel scaler is (o + 0.5) * scale, floored (no -0.5).
        src = np.floor((o + np.float32(0.5)) * scale)
    elif align_corners:
        # roundf: half away from zero (coordinates are >= 0 here); add 0.5 in float64 so the
        # addition itself cannot round up.
        src = np.floor((o * scale).astype(np.float64) + 0.5)
    else:
        src = np.floor(o * scale)
    return np.clip(src.astype(np.int64), 0, in_size - 1)


def _bilinear_weights(in_size, out_size, align_corners, half_pixel):
    """(lower index, upper index, lerp fraction) per output index (TF ResizeBilinear)."""
    scale = _resize_scale(in_size, out_size, align_corners)
    o = np.arange(out_size, dtype=np.float32)
    src = (o + np.float32(0.5)) * scale - np.float32(0.5) if half_pixel else o * scale
    lo = np.floor(src)
    # TF: lower = max(floor, 0), upper = min(ceil, in-1), lerp = src - floor (not clamped;
    # when src < 0 both indices are 0, so the lerp does not matter).
    lower = np.maximum(lo, 0).astype(np.int64)
    upper = np.minimum(np.ceil(src), in_size - 1).astype(np.int64)
    return lower, upper, (src - lo).astype(np.float64)


def _resize_kernel(ins, attrs):
    x = ins[0]
    _, h, w, _ = x.shape
    oh, ow = attrs["size"]
    ac, hp = attrs["align_corners"], attrs["half_pixel_centers"]
    if attrs["method"] == "nearest":
        return [x[:, _nearest_index(h, oh, ac, hp)][:, :, _nearest_index(w, ow, ac, hp)]]
    ylo, yhi, dy = _bilinear_weights(h, oh, ac, hp)
    xlo, xhi, dx = _bilinear_weights(w, ow, ac, hp)
    x64 = x.astype(np.float64)
    top, bottom = x64[:, ylo], x64[:, yhi]
    dx = dx[None, None, :, None]
    top = top[:, :, xlo] + (top[:, :, xhi] - top[:, :, xlo]) * dx
    bottom = bottom[:, :, xlo] + (bottom[:, :, xhi] - bottom[:, :, xlo]) * dx
    out = top + (bottom - top) * dy[None, :, None, None]
    return [out.astype(x.dtype)]


register_op(OpDef(
    "resize", ("x",), _infer_resize, _resize_kernel,
    attrs={
        "size": Attr("ints", doc="(out_h, out_w)"),
        "method": Attr("str", "bilinear", choices=("nearest", "bilinear")),
        "align_corners": Attr("bool", False),
        "half_pixel_centers": Attr("bool", False),
    },
    traits=PURE,
    doc="NHWC image resize with TF ResizeNearestNeighbor / ResizeBilinear semantics.",
))
