"""Complex tensors and FFTs: `tf.complex(re, im)` becomes a `Complex` pair of real entries,
FFT / FFT2D / IFFT / IFFT2D multiply the parts by DFT matrices (RFFT / IRFFT by the half
spectrum's), and Real / Imag / ComplexAbs read them back. That covers FNet's token mixing (`real(fft2(x))`) with no complex dtype in
the IR, on every target.

A DFT along an axis of length n is x @ (C - iS), C[k, m] = cos(2 pi km / n) and S the sine.
Static n gives constant matrices; a run-time n (a sequence length) builds them in the graph
from `range(n)`, with km reduced mod n in integers first, so the angle stays below 2 pi and
float32 keeps it accurate at any length.
"""

from __future__ import annotations

import numpy as np

from ..context import Complex, Const, LiftError

_TWO_PI = 2 * np.pi


def _complex(ctx, node, ins):
    re, im = ins
    if not ctx.type(re).dtype.is_float:
        raise LiftError(f"Complex of {ctx.type(re).dtype} parts is not supported")
    return [Complex(re, im)]


def to_complex(ctx, node, x) -> Complex:
    """Cast of a real tensor to complex64/128: (x, 0)."""
    zero = Const(np.zeros((), ctx.type(x).dtype.np), node)
    return Complex(x, ctx.emit1("mul", [x, zero]))


def _parts(ctx, e):
    if isinstance(e, Complex):
        return e.real, e.imag
    raise LiftError("an FFT of a real tensor (tf.complex it first) is not supported")


def _dft_matrices(ctx, node, n, dtype):
    """(C, S) [n, n] of the DFT of length n (int, or a SymDim known at run time)."""
    if isinstance(n, int):
        km = np.outer(np.arange(n), np.arange(n)) % max(n, 1)
        angle = _TWO_PI * km / max(n, 1)
        return (Const(np.cos(angle).astype(dtype.np), node),
                Const(np.sin(angle).astype(dtype.np), node))
    size = ctx.emit1("reshape", [ctx.shape_value([n])], {"shape": []})
    k = ctx.dynamic("range", [Const(np.asarray(0, np.int32), node), size,
                              Const(np.asarray(1, np.int32), node)], [n])
    km = ctx.emit1("mul", [ctx.emit1("reshape", [k], {"shape": [-1, 1]}),
                           ctx.emit1("reshape", [k], {"shape": [1, -1]})])
    km = ctx.emit1("floor_mod", [km, size])
    angle = ctx.emit1("div", [ctx.emit1("cast", [km], {"to": dtype}),
                              ctx.emit1("cast", [size], {"to": dtype})])
    angle = ctx.emit1("mul", [angle, Const(np.asarray(_TWO_PI, dtype.np), node)])
    return ctx.emit1("cos", [angle]), ctx.emit1("sin", [angle])


def _dft(ctx, node, z: Complex, axis: int, inverse: bool) -> Complex:
    """The DFT of z along `axis` (-1 or -2): (a + ib)(C -+ iS), / n when inverse."""
    a, b = z.real, z.imag
    dtype = ctx.type(a).dtype
    n = ctx.sym_shape(a)[axis]
    c, s = _dft_matrices(ctx, node, n, dtype)

    def along(x, m):
        # Last axis: x @ M (M is symmetric); second-to-last: M @ x.
        return ctx.emit1("matmul", [x, m] if axis == -1 else [m, x])

    # Forward: (a + ib)(C - iS) = (aC + bS) + i(bC - aS); inverse: C + iS.
    ac, bs, bc, as_ = along(a, c), along(b, s), along(b, c), along(a, s)
    re = ctx.emit1("sub", [ac, bs]) if inverse else ctx.emit1("add", [ac, bs])
    im = ctx.emit1("add", [bc, as_]) if inverse else ctx.emit1("sub", [bc, as_])
    if inverse:
        count = n if isinstance(n, int) else None
        if count is not None:
            scale = Const(np.asarray(1.0 / max(count, 1), dtype.np), node)
        else:
            size = ctx.emit1("reshape", [ctx.shape_value([n])], {"shape": []})
            scale = ctx.emit1("div", [Const(np.asarray(1.0, dtype.np), node),
                                      ctx.emit1("cast", [size], {"to": dtype})])
        re, im = ctx.emit1("mul", [re, scale]), ctx.emit1("mul", [im, scale])
    return Complex(re, im)


def _fft(axes, inverse=False):
    def lower(ctx, node, ins):
        z = Complex(*_parts(ctx, ins[0]))
        if ctx.type(z.real).rank < len(axes):
            raise LiftError(f"{node.op} needs rank >= {len(axes)}")
        for axis in axes:
            z = _dft(ctx, node, z, axis, inverse)
        return [z]
    return lower


def _fft_length(ctx, node, e) -> int:
    (n,) = np.asarray(ctx.static(e, f"{node.op} fft_length")).reshape(-1)
    if int(n) < 1:
        raise LiftError(f"{node.op} fft_length must be positive, got {n}")
    return int(n)


def _static_last(ctx, node, x) -> int:
    size = ctx.type(x).shape[-1]
    if not isinstance(size, int):
        raise LiftError(f"{node.op} needs a static innermost size, got {ctx.type(x)}")
    return size


def _rfft(ctx, node, ins):
    """RFFT of a real x of length L at fft_length n (x cropped or zero-padded to n): the
    n // 2 + 1 bins x @ (C - iS), with the rows past min(L, n) zero."""
    x, n = ins[0], _fft_length(ctx, node, ins[1])
    length, bins = _static_last(ctx, node, x), n // 2 + 1
    rows = np.arange(length)[:, None] % n
    angle = _TWO_PI * ((rows * np.arange(bins)[None, :]) % n) / n
    keep = (np.arange(length) < n)[:, None]
    dtype = ctx.type(x).dtype.np
    cos = Const((np.cos(angle) * keep).astype(dtype), node)
    sin = Const((-np.sin(angle) * keep).astype(dtype), node)
    return [Complex(ctx.emit1("matmul", [x, cos]), ctx.emit1("matmul", [x, sin]))]


def _irfft(ctx, node, ins):
    """IRFFT of the half spectrum X (cropped or zero-padded to n // 2 + 1 bins) to n real
    samples: (1/n) sum_k w_k (Re X_k cos - Im X_k sin), w_k = 2 except the bins at 0 and
    n / 2, which count once (their imaginary parts drop out, as in TF)."""
    re, im = _parts(ctx, ins[0])
    n = _fft_length(ctx, node, ins[1])
    given, bins = _static_last(ctx, node, re), n // 2 + 1
    k = np.arange(given)[:, None]
    weight = np.where((k == 0) | ((n % 2 == 0) & (k == n // 2)), 1.0, 2.0) * (k < bins) / n
    angle = _TWO_PI * ((k * np.arange(n)[None, :]) % n) / n
    dtype = ctx.type(re).dtype.np
    a = Const((weight * np.cos(angle)).astype(dtype), node)
    b = Const((-weight * np.sin(angle)).astype(dtype), node)
    return ctx.emit("add", [ctx.emit1("matmul", [re, a]), ctx.emit1("matmul", [im, b])])


def _real(ctx, node, ins):
    return [_parts(ctx, ins[0])[0]]


def _imag(ctx, node, ins):
    return [_parts(ctx, ins[0])[1]]


def _abs(ctx, node, ins):
    re, im = _parts(ctx, ins[0])
    sq = ctx.emit1("add", [ctx.emit1("mul", [re, re]), ctx.emit1("mul", [im, im])])
    return ctx.emit("sqrt", [sq])


TABLE = {
    "Complex": _complex, "Real": _real, "Imag": _imag, "ComplexAbs": _abs,
    "FFT": _fft([-1]), "FFT2D": _fft([-1, -2]),
    "IFFT": _fft([-1], inverse=True), "IFFT2D": _fft([-1, -2], inverse=True),
    "RFFT": _rfft, "IRFFT": _irfft,
}
