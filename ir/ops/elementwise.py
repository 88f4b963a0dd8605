"""Elementwise ops: constants, unary math and activations, NumPy-broadcasting binaries, where.

Float kernels compute in the operand dtype (f32 stays f32) so the interpreter matches what a
runtime computes; results are cast back where NumPy would promote.
"""

from __future__ import annotations

import math

import numpy as np

from ..types import DType, TensorType
from .registry import Attr, OpDef, broadcast_shapes, check, register_op

FLOATS = (DType.f32, DType.f16, DType.bf16, DType.f64)


# -- constant / identity -----------------------------------------------------------------------

def _infer_constant(types, attrs):
    arr = attrs["value"]
    return [TensorType(DType.from_numpy(arr.dtype), arr.shape)]


register_op(OpDef(
    "constant", (), _infer_constant, lambda ins, a: [a["value"]],
    attrs={"value": Attr("tensor", doc="the payload (read-only array)")},
    traits=frozenset({"pure", "no_fold"}),
    doc="A constant tensor (weights, folded values).",
))

register_op(OpDef(
    "identity", ("x",), lambda t, a: [t[0]], lambda ins, a: [ins[0]],
    traits=frozenset({"pure", "elementwise", "idempotent"}),
    doc="Returns its operand unchanged.",
))


# -- unary -------------------------------------------------------------------------------------

def _same(types, attrs):
    return [types[0]]


def _float_only(name):
    def infer(types, attrs):
        check(types[0].dtype.is_float, f"{name} needs a float operand, got {types[0].dtype}")
        return [types[0]]
    return infer


def _typed(fn):
    """Wraps a NumPy function so the result keeps the operand's dtype."""
    def kernel(ins, attrs):
        x = ins[0]
        return [np.asarray(fn(x, attrs)).astype(x.dtype, copy=False)]
    return kernel


def unary(name, fn, *, float_only=True, traits=(), attrs=None, doc=""):
    """Registers an elementwise unary op computing `fn(x, attrs)`."""
    return register_op(OpDef(
        name, ("x",), _float_only(name) if float_only else _same, _typed(fn),
        attrs=attrs or {}, traits=frozenset({"pure", "elementwise", *traits}), doc=doc))


try:    # SciPy (a dependency of JAX, so always there) has erf/erfc as float64 ufuncs
    from scipy.special import erf as _erf_ufunc, erfc as _erfc_ufunc
except ImportError:     # pragma: no cover - math's, one element at a time (100x slower)
    _erf_ufunc = np.vectorize(math.erf, otypes=[np.float64])
    _erfc_ufunc = np.vectorize(math.erfc, otypes=[np.float64])


def _erf(x):
    # float64 erf, accurate to a few ulps like math.erf (a ufunc: GELU models run it over
    # every activation).
    x = x.astype(np.float64)
    return _erf_ufunc(x) if x.size else x


def _erf_inv(y):
    """erf^-1 in float64: Giles' approximation (below) refined by Halley steps on erf - |y|,
    computed as (1 - |y|) - erfc(x) for |y| >= 0.5, where 1 - |y| is exact and erf(x) - |y|
    would cancel; +-1 give +-inf, |y| > 1 and NaN give NaN."""
    y = y.astype(np.float64)
    a = np.abs(y)
    inside = a < 1
    ai = np.where(inside, a, 0.0)
    erfc = _erfc_ufunc
    with np.errstate(invalid="ignore", divide="ignore"):
        x = erf_inv_giles(ai, np)
        for _ in range(12):   # cubic convergence; far in the float64 tail Giles' start is poor
            if not x.size:
                break
            r = np.where(ai < 0.5, _erf(x) - ai, (1.0 - ai) - erfc(x))
            d = r / (2.0 / math.sqrt(math.pi) * np.exp(-x * x))   # Newton's step
            x = x - d / (1.0 + x * d)                              # Halley's (erf'' = -2x erf')
            if np.all(np.abs(d) <= 1e-17 * np.maximum(np.abs(x), 1e-300)):
                break
        return np.where(inside, np.copysign(x, y), erf_inv_giles(y, np))


# Giles, "Approximating the erfinv function" (GPU Computing Gems, 2011), single precision
# (XLA's float32 ErfInv): with w = -log((1 - y)(1 + y)), erfinv(y) = y * p(w - 2.5) for
# w < 5, else y * q(sqrt(w) - 3). Coefficients highest power first; relative error ~4e-7.
ERF_INV_CENTRAL = (2.81022636e-08, 3.43273939e-07, -3.5233877e-06, -4.39150654e-06,
                   0.00021858087, -0.00125372503, -0.00417768164, 0.246640727, 1.50140941)
ERF_INV_TAIL = (-0.000200214257, 0.000100950558, 0.00134934322, -0.00367342844,
                0.00573950773, -0.0076224613, 0.00943887047, 1.00167406, 2.83297682)


def erf_inv_giles(y, m):
    """Giles' erfinv(y) (+-inf at +-1, NaN beyond), written once against an array namespace
    `m` with `log`, `sqrt`, `abs`, `where` and operator arithmetic (NumPy here, TF in the TF
    lowering); both branches are computed and one selected, so it needs no control flow."""
    w = -m.log((1.0 - y) * (1.0 + y))
    central, tail = w - 2.5, m.sqrt(w) - 3.0
    p, q = ERF_INV_CENTRAL[0], ERF_INV_TAIL[0]
    for c, d in zip(ERF_INV_CENTRAL[1:], ERF_INV_TAIL[1:]):
        p, q = p * central + c, q * tail + d
    return m.where(m.abs(y) == 1.0, y * math.inf, m.where(w < 5.0, p, q) * y)


def _gelu(x, a):
    xf = x.astype(np.float64)
    if a["approximate"]:
        return 0.5 * xf * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (xf + 0.044715 * xf ** 3)))
    return 0.5 * xf * (1.0 + _erf(xf / math.sqrt(2.0)))


def _sigmoid(x):
    xf = x.astype(np.float64)
    return np.exp(-np.logaddexp(0.0, -xf))


unary("neg", lambda x, a: -x, float_only=False, traits=("involution",), doc="-x")
unary("abs", lambda x, a: np.abs(x), float_only=False, traits=("idempotent",), doc="|x|")
unary("exp", lambda x, a: np.exp(x), doc="e^x")
unary("log", lambda x, a: np.log(x), doc="natural log")
unary("sqrt", lambda x, a: np.sqrt(x), doc="square root")
unary("rsqrt", lambda x, a: 1.0 / np.sqrt(x.astype(np.float64)), doc="1/sqrt(x)")
unary("tanh", lambda x, a: np.tanh(x), doc="hyperbolic tangent")
unary("sin", lambda x, a: np.sin(x), doc="sine (radians)")
unary("cos", lambda x, a: np.cos(x), doc="cosine (radians)")
unary("sigmoid", lambda x, a: _sigmoid(x), doc="1/(1+e^-x)")
unary("erf", lambda x, a: _erf(x), doc="Gauss error function")
unary("erf_inv", lambda x, a: _erf_inv(x), doc="inverse of erf on (-1, 1); +-inf at +-1")
unary("relu", lambda x, a: np.maximum(x, 0), float_only=False, traits=("idempotent",),
      doc="max(x, 0)")
unary("relu6", lambda x, a: np.clip(x, 0, 6), float_only=False, traits=("idempotent",),
      doc="min(max(x, 0), 6)")
unary("leaky_relu", lambda x, a: np.where(x >= 0, x, x * np.asarray(a["alpha"], x.dtype)),
      attrs={"alpha": Attr("float", 0.2)}, doc="x if x >= 0 else alpha*x")
unary("gelu", _gelu, attrs={"approximate": Attr("bool", False, doc="tanh form if true")},
      doc="x*Phi(x) (erf form) or its tanh approximation")
unary("elu", lambda x, a: np.where(x > 0, x.astype(np.float64),
                                    a["alpha"] * np.expm1(np.minimum(x.astype(np.float64), 0))),
      attrs={"alpha": Attr("float", 1.0, doc="scale of the negative branch")},
      doc="x if x > 0 else alpha*(e^x - 1) (TF Elu is alpha=1)")
unary("hard_swish", lambda x, a: x * np.clip(x + 3, 0, 6) / 6, doc="x*relu6(x+3)/6")
unary("hard_sigmoid", lambda x, a: np.clip(x.astype(np.float64) / 6 + 0.5, 0, 1),
      doc="relu6(x+3)/6")
unary("softplus", lambda x, a: np.logaddexp(0.0, x.astype(np.float64)), doc="log(1+e^x)")
unary("sign", lambda x, a: np.sign(x), float_only=False, traits=("idempotent",), doc="sign")
unary("floor", lambda x, a: np.floor(x), traits=("idempotent",), doc="round down")
unary("ceil", lambda x, a: np.ceil(x), traits=("idempotent",), doc="round up")
unary("round", lambda x, a: np.round(x), traits=("idempotent",),
      doc="round half to even (TF/TFLite ROUND)")
unary("logical_not", lambda x, a: np.logical_not(x), float_only=False, traits=("involution",),
      doc="not x (bool)")


def _infer_is_finite(types, attrs):
    check(types[0].dtype.is_float, f"is_finite needs a float operand, got {types[0].dtype}")
    return [types[0].with_dtype(DType.bool)]


register_op(OpDef(
    "is_finite", ("x",), _infer_is_finite, lambda ins, a: [np.isfinite(ins[0])],
    traits=frozenset({"pure", "elementwise"}),
    doc="True where x is neither infinite nor NaN (jnp.isfinite, tf.math.is_finite).",
))


def _infer_clip(types, attrs):
    check(attrs["min"] <= attrs["max"], f"clip min {attrs['min']} > max {attrs['max']}")
    return [types[0]]


register_op(OpDef(
    "clip", ("x",), _infer_clip,
    _typed(lambda x, a: np.clip(x, a["min"], a["max"])),
    attrs={"min": Attr("float"), "max": Attr("float")},
    traits=frozenset({"pure", "elementwise", "idempotent"}),
    doc="min(max(x, min), max)",
))


def _cast_kernel(ins, attrs):
    x, to = ins[0], attrs["to"]
    if to == DType.bool:
        return [x != 0]
    if to.is_int and x.dtype.kind == "f":
        # TF Cast truncates toward zero; NaN/out-of-range are undefined there too.
        x = np.trunc(x)
    return [x.astype(to.np)]


register_op(OpDef(
    "cast", ("x",), lambda t, a: [t[0].with_dtype(a["to"])], _cast_kernel,
    attrs={"to": Attr("dtype")},
    traits=frozenset({"pure", "elementwise"}),
    doc="Converts to dtype `to` (float->int truncates toward zero).",
))


# -- binary ------------------------------------------------------------------------------------

def _binary_infer(name, result_bool, operands_bool=False):
    def infer(types, attrs):
        a, b = types
        check(a.dtype == b.dtype, f"{name}: operand dtypes differ ({a.dtype} vs {b.dtype})")
        if operands_bool:
            check(a.dtype == DType.bool, f"{name} needs bool operands, got {a.dtype}")
        shape = broadcast_shapes(a.shape, b.shape)
        return [TensorType(DType.bool if result_bool else a.dtype, shape)]
    return infer


def binary(name, fn, *, result_bool=False, operands_bool=False, traits=(), doc=""):
    """Registers a NumPy-broadcasting binary op computing `fn(a, b)`."""
    def kernel(ins, attrs):
        a, b = ins
        out = np.asarray(fn(a, b))
        return [out if result_bool else out.astype(a.dtype, copy=False)]
    return register_op(OpDef(
        name, ("lhs", "rhs"), _binary_infer(name, result_bool, operands_bool), kernel,
        traits=frozenset({"pure", "elementwise", *traits}), doc=doc))


def _div(a, b):
    if a.dtype.kind in "iu":
        # `div` on integers truncates like C (TF's FloorDiv would be a separate op), and
        # division by zero is an error, as in TF, not NumPy's silent garbage.
        if np.any(b == 0):
            raise ZeroDivisionError("integer division by zero")
        q = np.abs(a.astype(np.int64)) // np.abs(b.astype(np.int64))
        return (np.sign(a) * np.sign(b) * q).astype(a.dtype)
    return np.true_divide(a, b)


def _floor_div(a, b):
    if a.dtype.kind in "iu":
        if np.any(b == 0):
            raise ZeroDivisionError("integer division by zero")
        return np.floor_divide(a, b)
    return np.floor(np.true_divide(a, b))   # TF's float FloorDiv: floor(a / b)


def _floor_mod(a, b):
    if a.dtype.kind in "iu" and np.any(b == 0):
        raise ZeroDivisionError("integer modulo by zero")
    return np.mod(a, b)     # the sign of the divisor, like TF's FloorMod


binary("add", np.add, traits=("commutative",), doc="a + b")
binary("sub", np.subtract, doc="a - b")
binary("mul", np.multiply, traits=("commutative",), doc="a * b")
binary("div", _div, doc="a / b (integers truncate toward zero)")
binary("floor_div", _floor_div, doc="floor(a / b) (tf.math.floordiv, Python's //)")
binary("floor_mod", _floor_mod, doc="a - floor(a / b) * b: the divisor's sign (Python's %)")
binary("pow", lambda a, b: np.power(a.astype(np.float64), b) if a.dtype.kind == "f"
       else np.power(a, b), doc="a ** b")
binary("atan2", lambda a, b: np.arctan2(a, b).astype(np.result_type(a, b)),
       doc="the angle of (b, a) in radians, in (-pi, pi] (jnp.arctan2, tf.math.atan2)")
binary("maximum", np.maximum, traits=("commutative",), doc="max(a, b)")
binary("minimum", np.minimum, traits=("commutative",), doc="min(a, b)")
binary("equal", np.equal, result_bool=True, traits=("commutative",), doc="a == b")
binary("not_equal", np.not_equal, result_bool=True, traits=("commutative",), doc="a != b")
binary("less", np.less, result_bool=True, doc="a < b")
binary("less_equal", np.less_equal, result_bool=True, doc="a <= b")
binary("greater", np.greater, result_bool=True, doc="a > b")
binary("greater_equal", np.greater_equal, result_bool=True, doc="a >= b")
binary("logical_and", np.logical_and, result_bool=True, operands_bool=True,
       traits=("commutative",), doc="a and b")
binary("logical_or", np.logical_or, result_bool=True, operands_bool=True,
       traits=("commutative",), doc="a or b")


def _infer_where(types, attrs):
    c, a, b = types
    check(c.dtype == DType.bool, f"where: condition must be bool, got {c.dtype}")
    check(a.dtype == b.dtype, f"where: branch dtypes differ ({a.dtype} vs {b.dtype})")
    return [TensorType(a.dtype, broadcast_shapes(c.shape, a.shape, b.shape))]


register_op(OpDef(
    "where", ("cond", "then", "else"), _infer_where,
    lambda ins, a: [np.where(ins[0], ins[1], ins[2]).astype(ins[1].dtype, copy=False)],
    traits=frozenset({"pure", "elementwise"}),
    doc="cond ? then : else, with NumPy broadcasting.",
))
