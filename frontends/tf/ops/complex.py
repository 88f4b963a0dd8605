"""Complex tensors beyond the FFTs: complex constants, arithmetic and the ops that only move
elements, all on `Complex` pairs of real entries (the IR has no complex dtype; see
`ops/spectral.py`). So `view_as_complex(x) * (1 + 2j)`, `conj`, `angle` and `isreal` lift to
real IR on every target.

`complex_aware(table)` wraps the op table: an op whose inputs include a Complex runs either
part-wise (ops linear in their data, such as reshapes, slices, add and sum: the op applied to
the real parts and to the imaginary parts) or by its complex formula (mul, div, square, exp,
abs, equal). Any other op sees a Complex as before and reports that it cannot use one.
"""

from __future__ import annotations

import numpy as np

from ..context import Complex, Const, LiftError

_COMPLEX_DTYPES = (8, 18)      # TF's complex64, complex128
_REAL_OF = {8: np.float32, 18: np.float64}


def complex_constant(tensor_dtype: int, array: np.ndarray, node) -> Complex | None:
    """A complex constant as a Complex of two real constants; None for other dtypes."""
    if tensor_dtype not in _COMPLEX_DTYPES:
        return None
    real = _REAL_OF[tensor_dtype]
    return Complex(Const(np.real(array).astype(real), node), Const(np.imag(array).astype(real),
                                                                    node))


# Ops that act on each part alone (linear in their complex operands, or only moving
# elements): op(a + ib) = op(a) + i op(b). Their other operands (shapes, axes, indices) are the
# same for both calls.
PARTWISE = frozenset({
    "Identity", "IdentityN", "StopGradient", "Snapshot", "EnsureShape",
    "Reshape", "ExpandDims", "Squeeze", "Transpose", "StridedSlice", "Slice", "ConcatV2",
    "Pack", "Unpack", "Tile", "GatherV2", "GatherNd", "BroadcastTo", "ReverseV2", "Split",
    "SplitV", "Pad", "PadV2", "MirrorPad", "Neg", "AddV2", "Add", "Sub", "Sum", "Cumsum",
    "ZerosLike", "SelectV2", "Select", "MatrixBandPart", "MatrixDiagPartV3",
})
# Ops that read only their input's shape: the real part has the same one.
SHAPE_ONLY = frozenset({"Shape", "ShapeN", "Size", "Rank", "OnesLike"})


def _with_parts(ctx, node, fn, ins):
    """`fn` applied to the real parts and to the imaginary parts; its complex outputs paired."""
    if node.op == "Add" or node.op == "AddV2" or node.op == "Sub":
        ins = [_as_complex(ctx, node, e) for e in ins]
    re = list(fn(ctx, node, [e.real if isinstance(e, Complex) else e for e in ins]))
    im = list(fn(ctx, node, [e.imag if isinstance(e, Complex) else e for e in ins]))
    return [Complex(r, i) for r, i in zip(re, im)]


def _as_complex(ctx, node, e) -> Complex:
    if isinstance(e, Complex):
        return e
    zero = Const(np.zeros((), ctx.type(e).dtype.np), node)
    return Complex(e, ctx.emit1("mul", [e, zero]))


def _mul(ctx, a: Complex, b: Complex) -> Complex:
    """(a + ib)(c + id) = (ac - bd) + i(ad + bc)."""
    m = lambda x, y: ctx.emit1("mul", [x, y])                       # noqa: E731
    return Complex(ctx.emit1("sub", [m(a.real, b.real), m(a.imag, b.imag)]),
                   ctx.emit1("add", [m(a.real, b.imag), m(a.imag, b.real)]))


def _norm2(ctx, z: Complex):
    return ctx.emit1("add", [ctx.emit1("mul", [z.real, z.real]),
                             ctx.emit1("mul", [z.imag, z.imag])])


def _div(ctx, a: Complex, b: Complex) -> Complex:
    """a / b = a * conj(b) / |b|^2."""
    num = _mul(ctx, a, _conj(ctx, b))
    den = _norm2(ctx, b)
    return Complex(ctx.emit1("div", [num.real, den]), ctx.emit1("div", [num.imag, den]))


def _conj(ctx, z: Complex) -> Complex:
    return Complex(z.real, ctx.emit1("neg", [z.imag]))


def _exp(ctx, z: Complex) -> Complex:
    """e^(a + ib) = e^a (cos b + i sin b)."""
    scale = ctx.emit1("exp", [z.real])
    return Complex(ctx.emit1("mul", [scale, ctx.emit1("cos", [z.imag])]),
                   ctx.emit1("mul", [scale, ctx.emit1("sin", [z.imag])]))


def _equal(ctx, a: Complex, b: Complex, negate: bool):
    same = ctx.emit1("logical_and", [ctx.emit1("equal", [a.real, b.real]),
                                     ctx.emit1("equal", [a.imag, b.imag])])
    return ctx.emit1("logical_not", [same]) if negate else same


def _formula(ctx, node, ins):
    """The complex formula of an arithmetic op (its inputs as Complex)."""
    zs = [_as_complex(ctx, node, e) for e in ins]
    op = node.op
    if op == "Mul":
        return [_mul(ctx, *zs)]
    if op in ("RealDiv", "Div", "DivNoNan"):
        if op == "DivNoNan":
            raise LiftError("DivNoNan of complex tensors is not supported")
        return [_div(ctx, *zs)]
    if op == "Square":
        return [_mul(ctx, zs[0], zs[0])]
    if op == "Exp":
        return [_exp(ctx, zs[0])]
    if op == "ComplexAbs" or op == "Abs":
        return [ctx.emit1("sqrt", [_norm2(ctx, zs[0])])]
    if op in ("Equal", "NotEqual"):
        return [_equal(ctx, zs[0], zs[1], negate=op == "NotEqual")]
    raise AssertionError(op)


_FORMULA_OPS = frozenset({"Mul", "RealDiv", "Div", "DivNoNan", "Square", "Exp", "Abs",
                          "Equal", "NotEqual"})


def _cast(fn):
    """Cast of a Complex: to a complex dtype, itself; to a real dtype, its real part (as TF,
    which drops the imaginary part)."""
    def lower(ctx, node, ins):
        if not isinstance(ins[0], Complex):
            return fn(ctx, node, ins)
        if node.attr["DstT"].type in _COMPLEX_DTYPES:
            return ins[:1]
        return fn(ctx, node, [ins[0].real])
    return lower


def _conj_op(ctx, node, ins):
    (z,) = ins
    return [_conj(ctx, z) if isinstance(z, Complex) else z]


def _angle(ctx, node, ins):
    """atan2(imag, real); a real input's angle is atan2(0, x): 0 or pi."""
    z = _as_complex(ctx, node, ins[0])
    return ctx.emit("atan2", [z.imag, z.real])


def complex_aware(table: dict) -> dict:
    """`table` with the part-wise ops, the complex formulas and Cast accepting Complex
    inputs, plus Conj and Angle."""
    out = dict(table)
    for op, fn in table.items():
        if op in PARTWISE:
            out[op] = _dispatch(fn, _with_parts_of(fn))
        elif op in SHAPE_ONLY:
            out[op] = _dispatch(fn, lambda ctx, node, ins, fn=fn: fn(
                ctx, node, [e.real if isinstance(e, Complex) else e for e in ins]))
        elif op in _FORMULA_OPS:
            out[op] = _dispatch(fn, _formula)
    out["Cast"] = _cast(table["Cast"])
    out["Conj"] = _conj_op
    out["Angle"] = _angle
    return out


def _with_parts_of(fn):
    return lambda ctx, node, ins: _with_parts(ctx, node, fn, ins)


def _dispatch(real_fn, complex_fn):
    """`complex_fn` when an input is a Complex, else `real_fn`."""
    def lower(ctx, node, ins):
        if any(isinstance(e, Complex) for e in ins):
            return complex_fn(ctx, node, ins)
        return real_fn(ctx, node, ins)
    lower.__name__ = getattr(real_fn, "__name__", "lower")
    return lower

