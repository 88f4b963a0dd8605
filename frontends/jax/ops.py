"""JAX primitive -> IR lowering table (`TABLE`) of the JAX frontend: one small function per
primitive.

Each function takes the lifter (`ctx`, `context.Lifter`), the jaxpr equation and its input
entries (IR Values or import-time `Const`s) and returns one entry (or a list, one per equation
output). `ctx.emit` folds when every input is a constant. Call-like primitives (pjit,
custom_jvp_call, ...) are not here: the lifter inlines them, except the few recognized by name
(relu; the QAT fake_quant jit marker, keyed `jit:tensorforge_fake_quant`, lowered in
`fake_quant.py`).
"""

from __future__ import annotations

import numpy as np

from ...ir.types import DType
from .. import decompose
from . import fake_quant
from .context import Const, LiftError, ir_dim, ir_dtype

TABLE: dict = {}


def lowers(*names):
    """Registers the decorated function as the lowering of the primitives `names`."""
    def deco(fn):
        for n in names:
            TABLE[n] = fn
        return fn
    return deco


def _static_ints(vals, what):
    out = []
    for v in vals:
        d = ir_dim(v)
        if not isinstance(d, int):
            raise LiftError(f"{what} {tuple(str(x) for x in vals)} has a symbolic entry")
        out.append(d)
    return out


# -- elementwise -----------------------------------------------------------------------------

_BINARY = {"add": "add", "sub": "sub", "mul": "mul", "div": "div", "max": "maximum",
           "min": "minimum", "pow": "pow", "eq": "equal", "ne": "not_equal", "lt": "less",
           "le": "less_equal", "gt": "greater", "ge": "greater_equal", "and": "logical_and",
           "or": "logical_or", "add_any": "add"}


def _binary(ir_op):
    def lower(ctx, eqn, ins):
        a, b = ins
        if ir_op in ("logical_and", "logical_or") and ctx.dtype(a) != DType.bool:
            # On integers: the bitwise op (passes/bitwise.py writes it for targets without).
            return ctx.emit("bitwise_" + ir_op.split("_")[1], [a, b])
        if ir_op == "pow" and ctx.dtype(b) != ctx.dtype(a):
            b = ctx.cast(b, ctx.dtype(a))
        return ctx.emit(ir_op, [a, b])
    return lower


for _n, _op in _BINARY.items():
    TABLE[_n] = _binary(_op)

_UNARY = {"neg": "neg", "abs": "abs", "sign": "sign", "exp": "exp", "log": "log",
          "tanh": "tanh", "sin": "sin", "cos": "cos", "logistic": "sigmoid", "erf": "erf",
          "sqrt": "sqrt", "rsqrt": "rsqrt", "floor": "floor", "ceil": "ceil",
          "is_finite": "is_finite", "erf_inv": "erf_inv"}


def _unary(ir_op):
    def lower(ctx, eqn, ins):
        return ctx.emit(ir_op, ins)
    return lower


for _n, _op in _UNARY.items():
    TABLE[_n] = _unary(_op)


@lowers("not")
def _not(ctx, eqn, ins):
    if ctx.dtype(ins[0]) != DType.bool:
        return ctx.emit("bitwise_not", ins)
    return ctx.emit("logical_not", ins)


@lowers("xor")
def _xor(ctx, eqn, ins):
    if ctx.dtype(ins[0]) == DType.bool:
        return ctx.emit("not_equal", ins)
    return ctx.emit("bitwise_xor", ins)


def _out_of_width(ctx, x, amount):
    """Where a shift amount lies outside [0, width): XLA shifts every bit out there, the IR's
    shifts (like TF's) clamp the amount instead."""
    width = np.dtype(ctx.dtype(x).np).itemsize * 8
    below = ctx.emit("less", [amount, ctx.scalar(0, amount)])
    above = ctx.emit("greater_equal", [amount, ctx.scalar(width, amount)])
    return ctx.emit("logical_or", [below, above])


@lowers("shift_left")
def _shift_left(ctx, eqn, ins):
    x, amount = ins
    return ctx.emit("where", [_out_of_width(ctx, x, amount), ctx.scalar(0, x),
                              ctx.emit("left_shift", [x, amount])])


@lowers("shift_right_arithmetic")
def _shift_right_arithmetic(ctx, eqn, ins):
    # An amount of the width or more leaves the sign in every bit: the clamped shift by
    # width - 1. (A negative amount is a huge unsigned one in XLA: the same.)
    x, amount = ins
    width = np.dtype(ctx.dtype(x).np).itemsize * 8
    wide = _out_of_width(ctx, x, amount)
    return ctx.emit("right_shift", [x, ctx.emit("where", [wide, ctx.scalar(width - 1, amount),
                                                          amount])])


@lowers("shift_right_logical")
def _shift_right_logical(ctx, eqn, ins):
    """x >> k with zeros shifted in: the arithmetic shift with the k top bits masked off
    (mask = INT_MAX >> (k - 1) for k >= 1, all ones for k = 0); 0 outside [0, width)."""
    x, amount = ins
    dtype = ctx.dtype(x)
    if not dtype.is_int or np.dtype(dtype.np).kind != "i":
        raise LiftError(f"shift_right_logical on {dtype} is not supported (signed integers)")
    top = np.iinfo(dtype.np).max
    k1 = ctx.emit("maximum", [ctx.emit("sub", [amount, ctx.scalar(1, amount)]),
                              ctx.scalar(0, amount)])
    mask = ctx.emit("where", [ctx.emit("equal", [amount, ctx.scalar(0, amount)]),
                              ctx.scalar(-1, x), ctx.emit("right_shift", [ctx.scalar(top, x),
                                                                          k1])])
    shifted = ctx.emit("bitwise_and", [ctx.emit("right_shift", [x, amount]), mask])
    return ctx.emit("where", [_out_of_width(ctx, x, amount), ctx.scalar(0, x), shifted])


@lowers("exp2")
def _exp2(ctx, eqn, ins):
    (x,) = ins
    return ctx.emit("pow", [ctx.scalar(2, x), x])


@lowers("erfc")
def _erfc(ctx, eqn, ins):
    (x,) = ins
    return ctx.emit("sub", [ctx.scalar(1, x), ctx.emit("erf", [x])])


@lowers("atan2")
def _atan2(ctx, eqn, ins):
    return ctx.emit("atan2", ins)


def builder(ctx) -> decompose.Builder:
    """The shared decompositions' (`frontends/decompose.py`) view of this lifter."""
    return decompose.Builder(ctx.emit, ctx.scalar, lambda array: Const(np.asarray(array)),
                             lambda e: list(ctx.shape(e)))


def _decomposed(fn):
    def lower(ctx, eqn, ins):
        return fn(builder(ctx), ins[0])
    return lower


# The inverse and hyperbolic functions, log1p and expm1 from the ops every target has.
for _name in ("atan", "asin", "acos", "tan", "sinh", "cosh", "asinh", "acosh", "atanh",
              "log1p", "expm1"):
    TABLE[_name] = _decomposed(decompose.UNARY[_name])

# The exponentially scaled Bessel functions I0e, I1e (jax.scipy.special.i0e/i1e; i0/i1 are
# exp(|x|) times them).
TABLE["bessel_i0e"] = _decomposed(decompose.bessel_i0e)
TABLE["bessel_i1e"] = _decomposed(decompose.bessel_i1e)


@lowers("cbrt")
def _cbrt(ctx, eqn, ins):
    (x,) = ins
    mag = ctx.emit("pow", [ctx.emit("abs", [x]), ctx.scalar(1.0 / 3.0, x)])
    return ctx.emit("mul", [ctx.emit("sign", [x]), mag])


@lowers("rem")
def _rem(ctx, eqn, ins):
    """C's fmod (lax.rem): x - y * trunc(x / y); integers too."""
    x, y = ins
    if ctx.dtype(x).is_int:
        return ctx.emit("sub", [x, ctx.emit("mul", [y, ctx.emit("div", [x, y])])])
    q = ctx.emit("div", [x, y])
    trunc = ctx.emit("mul", [ctx.emit("sign", [q]), ctx.emit("floor", [ctx.emit("abs", [q])])])
    return ctx.emit("sub", [x, ctx.emit("mul", [y, trunc])])


@lowers("tile")
def _tile_prim(ctx, eqn, ins):
    (x,) = ins
    reps = _static_ints(eqn.params["reps"], "tile reps")
    rank = max(len(reps), len(ctx.shape(x)))
    reps = [1] * (rank - len(reps)) + reps
    x = ctx.reshape(x, [1] * (rank - len(ctx.shape(x))) + list(ctx.shape(x)))
    return ctx.emit("tile", [x], {"multiples": reps})


@lowers("unstack")
def _unstack(ctx, eqn, ins):
    (x,) = ins
    axis = int(eqn.params["axis"]) % len(ctx.shape(x))
    n = ctx.shape(x)[axis]
    if not isinstance(n, int):
        raise LiftError(f"unstack along a run-time dim ({n})")
    parts = ctx.emit("split", [x], {"axis": axis, "sizes": [1] * n}, n_out=n) if n > 1 \
        else [x]
    return [ctx.emit("squeeze", [p], {"axes": [axis]}) for p in parts]


@lowers("square")
def _square(ctx, eqn, ins):
    (x,) = ins
    return ctx.emit("mul", [x, x])


@lowers("integer_pow")
def _integer_pow(ctx, eqn, ins):
    (x,) = ins
    y = int(eqn.params["y"])
    if y == 0:
        return ctx.emit("add", [ctx.emit("mul", [x, ctx.scalar(0, x)]), ctx.scalar(1, x)])
    acc, base, n = None, x, abs(y)
    while n:
        if n & 1:
            acc = base if acc is None else ctx.emit("mul", [acc, base])
        n >>= 1
        if n:
            base = ctx.emit("mul", [base, base])
    return ctx.emit("div", [ctx.scalar(1, x), acc]) if y < 0 else acc


@lowers("round")
def _round(ctx, eqn, ins):
    (x,) = ins
    method = eqn.params.get("rounding_method")
    if method is not None and int(method) == 1:  # TO_NEAREST_EVEN
        return ctx.emit("round", [x])
    # AWAY_FROM_ZERO: sign(x) * floor(|x| + 0.5)
    mag = ctx.emit("floor", [ctx.emit("add", [ctx.emit("abs", [x]), ctx.scalar(0.5, x)])])
    return ctx.emit("mul", [ctx.emit("sign", [x]), mag])


@lowers("convert_element_type")
def _convert(ctx, eqn, ins):
    (x,) = ins
    return ctx.cast(x, ir_dtype(eqn.params["new_dtype"]))


@lowers("select_n")
def _select_n(ctx, eqn, ins):
    pred, *cases = ins
    if len(cases) == 1:
        return cases[0]
    if ctx.dtype(pred) == DType.bool:
        return ctx.emit("where", [pred, cases[1], cases[0]])
    acc = cases[0]
    for i, c in enumerate(cases[1:], 1):
        cond = ctx.emit("equal", [pred, ctx.scalar(i, pred)])
        acc = ctx.emit("where", [cond, c, acc])
    return acc


@lowers("clamp")
def _clamp(ctx, eqn, ins):
    lo, x, hi = ins
    return ctx.emit("maximum", [ctx.emit("minimum", [x, hi]), lo])


# lgamma and digamma from ops every target has (no TFLite builtin computes them):
# Lanczos (g = 7, 9 terms) for lgamma, the asymptotic series after shifting the argument up
# by 6 for digamma, and the reflection formulas below 0.5 / at or below 0.
_LANCZOS = (0.99999999999980993, 676.5203681218851, -1259.1392167224028, 771.32342877765313,
            -176.61502916214059, 12.507343278686905, -0.13857109526572012,
            9.9843695780195716e-6, 1.5056327351493116e-7)


def _lanczos_lgamma(ctx, y):
    """lgamma(y) for y >= 0.5."""
    z = ctx.emit("sub", [y, ctx.scalar(1, y)])
    a = ctx.scalar(_LANCZOS[0], y)
    for i, p in enumerate(_LANCZOS[1:], start=1):
        term = ctx.emit("div", [ctx.scalar(p, y), ctx.emit("add", [z, ctx.scalar(i, y)])])
        a = ctx.emit("add", [a, term])
    t = ctx.emit("add", [z, ctx.scalar(7.5, y)])
    head = ctx.emit("mul", [ctx.emit("add", [z, ctx.scalar(0.5, y)]), ctx.emit("log", [t])])
    out = ctx.emit("add", [ctx.emit("sub", [head, t]), ctx.emit("log", [a])])
    return ctx.emit("add", [out, ctx.scalar(0.5 * np.log(2 * np.pi), y)])


def _reflected(ctx, x, below):
    """(x reflected to 1 - x where `below`, sin(pi x))."""
    y = ctx.emit("where", [below, ctx.emit("sub", [ctx.scalar(1, x), x]), x])
    return y, ctx.emit("sin", [ctx.emit("mul", [x, ctx.scalar(np.pi, x)])])


@lowers("lgamma")
def _lgamma(ctx, eqn, ins):
    (x,) = ins
    below = ctx.emit("less", [x, ctx.scalar(0.5, x)])
    y, sin = _reflected(ctx, x, below)
    direct = _lanczos_lgamma(ctx, y)
    # log(pi / |sin(pi x)|) - lgamma(1 - x)
    mirror = ctx.emit("sub", [ctx.emit("sub", [ctx.scalar(np.log(np.pi), x),
                                               ctx.emit("log", [ctx.emit("abs", [sin])])]),
                              direct])
    return ctx.emit("where", [below, mirror, direct])


@lowers("digamma")
def _digamma(ctx, eqn, ins):
    (x,) = ins
    below = ctx.emit("less_equal", [x, ctx.scalar(0, x)])
    y, sin = _reflected(ctx, x, below)
    shift = ctx.scalar(0, x)
    for k in range(6):
        shift = ctx.emit("add", [shift, ctx.emit("div", [ctx.scalar(1, x),
                                                         ctx.emit("add", [y, ctx.scalar(k, x)])])])
    w = ctx.emit("add", [y, ctx.scalar(6, x)])
    inv2 = ctx.emit("div", [ctx.scalar(1, x), ctx.emit("mul", [w, w])])
    # log w - 1/(2w) - sum_k B_2k / (2k w^2k), Horner in 1/w^2
    series = ctx.scalar(-5.0 / 660.0, x)
    for c in (1.0 / 240.0, -1.0 / 252.0, 1.0 / 120.0, -1.0 / 12.0):
        series = ctx.emit("add", [ctx.emit("mul", [series, inv2]), ctx.scalar(c, x)])
    series = ctx.emit("mul", [series, inv2])
    psi = ctx.emit("sub", [ctx.emit("log", [w]),
                           ctx.emit("div", [ctx.scalar(0.5, x), w])])
    direct = ctx.emit("sub", [ctx.emit("add", [psi, series]), shift])
    # psi(x) = psi(1 - x) - pi / tan(pi x)
    cos = ctx.emit("cos", [ctx.emit("mul", [x, ctx.scalar(np.pi, x)])])
    mirror = ctx.emit("sub", [direct, ctx.emit("mul", [ctx.scalar(np.pi, x),
                                                       ctx.emit("div", [cos, sin])])])
    return ctx.emit("where", [below, mirror, direct])


@lowers("dim_as_value")
def _dim_as_value(ctx, eqn, ins):
    """A run-time size as a scalar (`jnp.mean` over a run-time dim divides by it)."""
    size = ctx.reshape(ctx.dim_value(eqn.params["dim"]), [])
    return ctx.cast(size, ir_dtype(eqn.outvars[0].aval.dtype))


@lowers("reduce_precision")
def _reduce_precision(ctx, eqn, ins):
    """Rounds float32 to `mantissa_bits` (half to even, as XLA does), e.g. bf16 emulation:
    x = round(x / 2^(e - m)) * 2^(e - m) with e = floor(log2|x|). log2 may be one off only
    within float32's precision of a power of two, where both roundings agree. A narrower
    exponent range (overflow to inf, subnormals) is not emulated."""
    (x,) = ins
    m, ebits = int(eqn.params["mantissa_bits"]), int(eqn.params["exponent_bits"])
    if ctx.dtype(x) != DType.f32 or (m >= 23 and ebits >= 8):
        return x
    if ebits < 8:
        raise LiftError(f"reduce_precision to {ebits} exponent bits (a narrower exponent "
                        f"range than float32's) is not supported")
    ax = ctx.emit("abs", [x])
    normal = ctx.emit("logical_and", [ctx.emit("greater", [ax, ctx.scalar(0, x)]),
                                      ctx.emit("is_finite", [x])])
    safe = ctx.emit("where", [normal, ax, ctx.scalar(1, x)])
    e = ctx.emit("floor", [ctx.emit("mul", [ctx.emit("log", [safe]),
                                            ctx.scalar(1 / np.log(2), x)])])
    scale = ctx.emit("pow", [ctx.scalar(2, x), ctx.emit("sub", [e, ctx.scalar(m, x)])])
    rounded = ctx.emit("mul", [ctx.emit("round", [ctx.emit("div", [x, scale])]), scale])
    return ctx.emit("where", [normal, rounded, x])


@lowers("stop_gradient", "copy", "copy_p", "optimization_barrier", "sharding_constraint")
def _identity(ctx, eqn, ins):
    return list(ins) if len(ins) == len(eqn.outvars) else [ins[0]]


def _custom_name(eqn) -> str | None:
    name = eqn.params.get("name")
    if name is None:
        cj = eqn.params.get("call_jaxpr")
        info = getattr(getattr(cj, "jaxpr", cj), "debug_info", None)
        src = getattr(info, "func_src_info", None) or ""
        name = src.split(" ")[0] if src else None
    return name


@lowers("custom_jvp_call")
def _custom_jvp(ctx, eqn, ins):
    """relu is recognized by name; every other custom_jvp function is inlined."""
    if _custom_name(eqn) == "relu" and len(ins) == 1:
        return ctx.emit("relu", ins)
    return ctx.inline(eqn, ins)


TABLE[fake_quant.KEY] = fake_quant.lower_fake_quant  # QAT marker -> quantize/dequantize


# -- reductions ------------------------------------------------------------------------------

def _reduce(ir_op):
    def lower(ctx, eqn, ins):
        axes = [int(a) for a in eqn.params["axes"]]
        if not axes:
            return ins[0]
        return ctx.emit(ir_op, ins, {"axes": axes, "keepdims": False})
    return lower


for _n, _op in {"reduce_sum": "reduce_sum", "reduce_max": "reduce_max",
                "reduce_min": "reduce_min", "reduce_prod": "reduce_prod"}.items():
    TABLE[_n] = _reduce(_op)


def _logical_reduce(ir_op):
    plain = _reduce(ir_op)

    def lower(ctx, eqn, ins):
        if ctx.dtype(ins[0]) != DType.bool:
            raise LiftError(f"bitwise {eqn.primitive.name} on {ctx.dtype(ins[0])} is not "
                            f"supported (only bool)")
        return plain(ctx, eqn, ins)
    return lower


TABLE["reduce_and"] = _logical_reduce("reduce_all")
TABLE["reduce_or"] = _logical_reduce("reduce_any")


def _arg(ir_op):
    def lower(ctx, eqn, ins):
        (axis,) = eqn.params["axes"]
        return ctx.emit(ir_op, ins, {"axis": int(axis),
                                     "output_type": ir_dtype(eqn.params["index_dtype"])})
    return lower


@lowers("top_k")
def _top_k(ctx, eqn, ins):
    x = ins[0]
    rank = len(ctx.shape(x))
    axis = int(eqn.params.get("axis", -1)) % rank
    if axis != rank - 1:
        raise LiftError(f"top_k along axis {axis} (only the last axis is supported)")
    values, indices = ctx.emit("top_k", [x], {"k": int(eqn.params["k"])}, n_out=2)
    want = ir_dtype(eqn.outvars[1].aval.dtype)
    return [values, ctx.cast(indices, want)]


TABLE["argmax"] = _arg("argmax")
TABLE["argmin"] = _arg("argmin")


# -- shapes ----------------------------------------------------------------------------------

@lowers("reshape")
def _reshape(ctx, eqn, ins):
    x = ins[0]
    if eqn.params.get("dimensions") is not None:
        raise LiftError("reshape with `dimensions` (transposing reshape) is not supported")
    return ctx.reshape(x, [ir_dim(d) for d in eqn.params["new_sizes"]])


@lowers("broadcast_in_dim")
def _broadcast_in_dim(ctx, eqn, ins):
    x = ins[0]
    shape = [ir_dim(d) for d in eqn.params["shape"]]
    bdims = [int(d) for d in eqn.params["broadcast_dimensions"]]
    xs = list(ctx.shape(x))
    # 1. insert the new (size-1) dims
    cur = []
    src = iter(xs)
    for i in range(len(shape)):
        cur.append(next(src) if i in bdims else 1)
    if len(xs) != len(shape):
        if sum(not isinstance(d, int) for d in cur) <= 1:
            x = ctx.reshape(x, cur)
        else:
            for i in range(len(shape)):
                if i not in bdims:
                    x = ctx.emit("expand_dims", [x], {"axis": i})
    # 2. broadcast the size-1 dims that grow
    if all(isinstance(d, int) for d in shape):
        if list(cur) != shape:
            x = ctx.emit("broadcast_to", [x], {"shape": shape})
        return x
    mult = [d if (c == 1 and isinstance(d, int)) else 1 for c, d in zip(cur, shape)]
    if any(m != 1 for m in mult):
        if all(isinstance(d, int) for d in cur):
            # static operand: broadcast the static dims now, leave symbolic ones to consumers
            x = ctx.emit("broadcast_to", [x], {"shape": [c if not isinstance(d, int) else d
                                                       for c, d in zip(cur, shape)]})
        else:
            x = ctx.emit("tile", [x], {"multiples": mult})
    # A size-1 dim that grows to a symbolic size stays 1: IR elementwise ops broadcast it.
    return x


@lowers("transpose")
def _transpose(ctx, eqn, ins):
    return ctx.transpose(ins[0], eqn.params["permutation"])


@lowers("squeeze")
def _squeeze(ctx, eqn, ins):
    dims = [int(d) for d in eqn.params["dimensions"]]
    if not dims:
        return ins[0]
    return ctx.emit("squeeze", ins, {"axes": dims})


@lowers("expand_dims")
def _expand_dims(ctx, eqn, ins):
    x = ins[0]
    for d in sorted(int(d) for d in eqn.params["dimensions"]):
        x = ctx.emit("expand_dims", [x], {"axis": d})
    return x


@lowers("concatenate")
def _concat(ctx, eqn, ins):
    if len(ins) == 1:
        return ins[0]
    return ctx.emit("concat", ins, {"axis": int(eqn.params["dimension"])})


@lowers("stack")
def _stack(ctx, eqn, ins):
    """jnp.stack: each operand gains the new axis, then one concat."""
    axis = int(eqn.params["axis"])
    parts = [ctx.emit("expand_dims", [x], {"axis": axis}) for x in ins]
    return parts[0] if len(parts) == 1 else ctx.emit("concat", parts, {"axis": axis})


@lowers("split")
def _split(ctx, eqn, ins):
    sizes = _static_ints(eqn.params["sizes"], "split sizes")
    return ctx.emit("split", ins, {"axis": int(eqn.params["axis"]), "sizes": sizes},
                    n_out=len(sizes)) if len(sizes) != 1 else [ins[0]]


@lowers("pad")
def _pad(ctx, eqn, ins):
    x, pv = ins
    value = ctx.const(pv)
    if value is None:
        raise LiftError("pad with a non-constant padding value is not supported")
    cfg = [tuple(int(v) for v in c) for c in eqn.params["padding_config"]]
    return _lax_pad(ctx, x, cfg, float(np.asarray(value).item()))


def _lax_pad(ctx, x, cfg, value: float):
    """lax.pad on an entry: `cfg` is (low, high, interior) per dim. Interior padding (`value`
    between neighbours) comes first, then the edges; a negative edge slices elements off."""
    for axis, (_, _, interior) in enumerate(cfg):
        if interior < 0:
            raise LiftError(f"pad with negative interior padding {interior}")
        if interior:
            x = _interior_pad(ctx, x, axis, interior, value)
    pads = [(max(lo, 0), max(hi, 0)) for lo, hi, _ in cfg]
    if any(p != (0, 0) for p in pads):
        x = ctx.emit("pad", [x], {"pads": pads, "mode": "constant", "value": value})
    if any(lo < 0 or hi < 0 for lo, hi, _ in cfg):
        begin = [max(-lo, 0) for lo, _, _ in cfg]
        size = []
        for (lo, hi, _), d in zip(cfg, ctx.shape(x)):
            if hi >= 0:
                size.append(-1)
            elif isinstance(d, int):
                size.append(d - max(-lo, 0) + hi)
            else:
                raise LiftError("negative padding at the end of a symbolic dim is not supported")
        x = ctx.emit("slice", [x], {"begin": begin, "size": size})
    return x


def _interior_pad(ctx, x, axis: int, interior: int, value: float):
    """`interior` copies of `value` between neighbours along `axis` (static size n): each
    element gains a trailing run of them (expand_dims, pad), the runs are laid end to end
    (reshape to n * (1 + interior)) and the last run is sliced off."""
    shape = list(ctx.shape(x))
    n = shape[axis]
    if not isinstance(n, int):
        raise LiftError(f"interior padding of a run-time dim ({n}) is not supported")
    if n <= 1:
        return x
    y = ctx.emit("expand_dims", [x], {"axis": axis + 1})
    pads = [(0, 0)] * (len(shape) + 1)
    pads[axis + 1] = (0, interior)
    y = ctx.emit("pad", [y], {"pads": pads, "mode": "constant", "value": value})
    y = ctx.reshape(y, shape[:axis] + [n * (1 + interior)] + shape[axis + 1:])
    size = [-1] * len(shape)
    size[axis] = n + (n - 1) * interior
    return ctx.emit("slice", [y], {"begin": [0] * len(shape), "size": size})


@lowers("slice")
def _slice(ctx, eqn, ins):
    x = ins[0]
    shape = ctx.shape(x)
    start = _static_ints(eqn.params["start_indices"], "slice start")
    limit = [ir_dim(d) for d in eqn.params["limit_indices"]]
    strides = eqn.params.get("strides")
    if strides is None or all(int(s) == 1 for s in strides):
        size = []
        for b, e, d in zip(start, limit, shape):
            if isinstance(e, int):
                size.append(e - b)
            elif e == d:
                size.append(-1)
            else:
                raise LiftError(f"slice limit {e} is symbolic")
        if start == [0] * len(start) and all(s == -1 or s == d for s, d in zip(size, shape)):
            return x
        return ctx.emit("slice", [x], {"begin": start, "size": size})
    strides = [int(s) for s in strides]
    end_mask, end = 0, []
    for i, (e, d) in enumerate(zip(limit, shape)):
        if isinstance(e, int):
            end.append(e)
        elif e == d:
            end.append(0)
            end_mask |= 1 << i
        else:
            raise LiftError(f"slice limit {e} is symbolic")
    return ctx.emit("strided_slice", [x], {"begin": start, "end": end, "strides": strides,
                                           "end_mask": end_mask})


@lowers("dynamic_slice")
def _dynamic_slice(ctx, eqn, ins):
    """lax.dynamic_slice: JAX clamps each start into [0, dim - size]. Static starts and sizes
    give the IR's slice; a run-time size (a position table sliced to `seq` rows) or a start
    computed at run time gives dynamic_slice, with the clamp computed at run time."""
    x, *idx = ins
    sizes = list(eqn.params["slice_sizes"])
    dims = list(eqn.invars[0].aval.shape)
    begin = []
    for e, size, d in zip(idx, sizes, dims):
        c = ctx.const(e)
        if c is not None and int(c) == 0:
            begin.append(0)
        elif c is not None and isinstance(ir_dim(d), int) and isinstance(ir_dim(size), int):
            b, n, s_ = int(c), int(d), int(size)
            begin.append(min(max(b + n if b < 0 else b, 0), n - s_))
        else:
            if c is not None and int(c) < 0:
                raise LiftError("dynamic_slice with a negative start on a run-time dim")
            b = ctx.emit("reshape", [ctx.cast(e, DType.i32)], {"shape": [1]})
            b = ctx.emit("maximum", [b, Const(np.asarray([0], np.int32))])
            begin.append(ctx.emit("minimum", [b, ctx.dim_value(d - size)]))
    static_sizes = all(isinstance(ir_dim(n), int) for n in sizes)
    if static_sizes and all(isinstance(b, int) for b in begin):
        return ctx.emit("slice", [x], {"begin": begin, "size": [int(n) for n in sizes]})
    begin_v = ctx.shape_value(begin) if all(isinstance(b, int) for b in begin) else \
        ctx.emit("concat", [Const(np.asarray([b], np.int32)) if isinstance(b, int) else b
                            for b in begin], {"axis": 0})
    return ctx.emit("dynamic_slice", [x, begin_v, ctx.shape_value(sizes)],
                    {"dims": [ir_dim(n) for n in sizes]})


@lowers("iota")
def _iota(ctx, eqn, ins):
    p = eqn.params
    dim = int(p["dimension"])
    dt = np.dtype(p["dtype"])
    if not all(isinstance(ir_dim(d), int) for d in p["shape"]):
        return _run_time_iota(ctx, p["shape"], dim, dt)
    shape = _static_ints(p["shape"], "iota shape")
    r = np.arange(shape[dim], dtype=dt).reshape([-1 if i == dim else 1 for i in range(len(shape))])
    return Const(np.broadcast_to(r, shape).copy())


def _run_time_iota(ctx, shape, dim, dt):
    """iota over a run-time size (positions 0..seq): the IR's range, shaped and broadcast
    to `shape` at run time."""
    dims = [ir_dim(d) for d in shape]
    n = ctx.emit("reshape", [ctx.dim_value(shape[dim])], {"shape": []})
    zero, one = Const(np.asarray(0, np.int32)), Const(np.asarray(1, np.int32))
    r = ctx.cast(ctx.emit("range", [zero, n, one], {"dims": [dims[dim]]}), ir_dtype(dt))
    if len(shape) == 1:
        return r
    r = ctx.emit("reshape", [r], {"shape": [-1 if i == dim else 1 for i in range(len(shape))]})
    if all(d == 1 for i, d in enumerate(dims) if i != dim):
        return r
    return ctx.emit("dynamic_broadcast_to", [r, ctx.shape_value(list(shape))], {"dims": dims})


@lowers("cumsum", "cumprod", "cummax", "cummin")
def _cumulative(ctx, eqn, ins):
    """Running sum / product / maximum / minimum along an axis: the IR op of the same name."""
    return ctx.emit(eqn.primitive.name, ins, {"axis": int(eqn.params["axis"]),
                                              "reverse": bool(eqn.params.get("reverse", False))})


@lowers("rev")
def _rev(ctx, eqn, ins):
    dims = [int(d) for d in eqn.params["dimensions"]]
    return ctx.emit("reverse", ins, {"axes": dims}) if dims else ins[0]


@lowers("sort")
def _sort(ctx, eqn, ins):
    """lax.sort with one key (jnp.sort, jnp.argsort: the key and an iota): the IR's top_k
    with k = the axis size on an order-reversed key (-x for floats, -1 - x = ~x for integers,
    which cannot overflow), its indices gathering the other operands. top_k keeps the lower
    index first among equal values (-0.0 and 0.0 included, as in lax.sort), so the sort is
    stable, as JAX's is. NaN keys are not placed last as JAX places them: their position
    is the runtime's."""
    p = eqn.params
    if int(p.get("num_keys", 1)) != 1:
        raise LiftError(f"sort with num_keys={p['num_keys']} (lexicographic keys) is not "
                        f"supported (only one key)")
    rank = len(ctx.shape(ins[0]))
    dim = int(p["dimension"]) % rank
    perm = list(range(rank))
    perm[dim], perm[-1] = perm[-1], perm[dim]     # the sorted dim last (its own inverse)
    ops = [ctx.transpose(x, perm) for x in ins]
    n = ctx.shape(ops[0])[-1]
    if not isinstance(n, int):
        raise LiftError(f"sort along a run-time dim ({n}) is not supported (top_k needs k)")
    key, dt = ops[0], ctx.dtype(ops[0])
    if dt == DType.bool or (dt.is_int and dt.np.kind == "u"):
        if dt.np.itemsize >= 4:
            raise LiftError(f"sort of {dt} keys is not supported")
        key = ctx.cast(key, DType.i32)

    def order_reversed(v):
        if ctx.dtype(v).is_float:
            return ctx.emit("neg", [v])
        return ctx.emit("sub", [ctx.scalar(-1, v), v])

    values, idx = ctx.emit("top_k", [order_reversed(key)], {"k": n}, n_out=2)
    outs = [ctx.cast(order_reversed(values), dt)]
    iota = np.broadcast_to(np.arange(n), ctx.shape(ops[0])) if \
        all(isinstance(d, int) for d in ctx.shape(ops[0])) else None
    for x in ops[1:]:
        c = ctx.const(x)
        if c is not None and iota is not None and c.shape == iota.shape and \
                np.array_equal(c, iota):          # argsort: the permutation itself
            outs.append(ctx.cast(idx, ctx.dtype(x)))
        else:
            outs.append(ctx.emit("gather", [x, idx], {"axis": rank - 1,
                                                      "batch_dims": rank - 1}))
    return [ctx.transpose(o, perm) for o in outs]


# -- gather ----------------------------------------------------------------------------------

@lowers("gather")
def _gather(ctx, eqn, ins):
    """The jnp.take / x[idx] pattern: one indexed axis, full slices elsewhere."""
    x, idx = ins
    p = eqn.params
    dn = p["dimension_numbers"]
    shape = ctx.shape(x)
    sizes = [ir_dim(s) for s in p["slice_sizes"]]
    start_map = tuple(dn.start_index_map)
    collapsed = tuple(dn.collapsed_slice_dims)
    offset = tuple(dn.offset_dims)
    if getattr(dn, "operand_batching_dims", ()) or len(start_map) != 1 or \
            collapsed != start_map:
        raise LiftError(f"gather with dimension numbers {dn} is not supported (only the "
                        f"jnp.take / x[idx] pattern: one indexed axis)")
    axis = start_map[0]
    if sizes[axis] != 1 or any(s != d for i, (s, d) in enumerate(zip(sizes, shape))
                               if i != axis):
        raise LiftError(f"gather slice sizes {sizes} of operand {shape} are not full slices")
    ishape = ctx.shape(idx)
    if not ishape or ishape[-1] != 1:
        raise LiftError(f"gather indices of shape {ishape} do not end in a size-1 index dim")
    n = shape[axis]
    ci = ctx.const(idx)
    if ci is not None:
        ci = ci[..., 0]
        if isinstance(n, int):
            ci = np.clip(ci, 0, n - 1)  # JAX clamps (mode clip/fill with in-range indices)
        idx = Const(ci.astype(np.int32))
    else:
        idx = ctx.emit("squeeze", [idx], {"axes": [len(ishape) - 1]})
    y = ctx.emit("gather", [x, idx], {"axis": axis})
    # IR order: x[:axis], batch..., x[axis+1:]; JAX: offset dims at `offset`, batch elsewhere.
    nb = len(ishape) - 1
    rest = [i for i in range(len(shape)) if i != axis]  # operand dims in offset order
    out_rank = nb + len(rest)
    ir_pos = {}  # logical dim -> position in IR result
    for k, d in enumerate(rest):
        ir_pos[("o", k)] = d if d < axis else d - 1 + nb
    for b in range(nb):
        ir_pos[("b", b)] = axis + b
    perm, bi = [], 0
    for pos in range(out_rank):
        if pos in offset:
            perm.append(ir_pos[("o", offset.index(pos))])
        else:
            perm.append(ir_pos[("b", bi)])
            bi += 1
    return ctx.transpose(y, perm)


# -- dot_general -----------------------------------------------------------------------------

def _prod(dims):
    """The product of JAX dims (ints or dim expressions such as `2*seq`)."""
    out = 1
    for d in dims:
        out = out * d
    return out




@lowers("dot_general")
def _dot_general(ctx, eqn, ins):
    a, b = ins
    (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
    lc, rc, lb, rb = (list(map(int, t)) for t in (lc, rc, lb, rb))
    pet = eqn.params.get("preferred_element_type")
    out_dt = ir_dtype(pet) if pet is not None else ctx.dtype(a)
    if ctx.dtype(b) != ctx.dtype(a):
        b = ctx.cast(b, ctx.dtype(a))
    # JAX's own dims (expressions such as `2*seq` where the IR only has `?`), so reshapes
    # with several run-time dims can compute their target at run time.
    sa, sb = list(eqn.invars[0].aval.shape), list(eqn.invars[1].aval.shape)
    ra, rb_ = len(sa), len(sb)
    lf = [i for i in range(ra) if i not in lc and i not in lb]
    rf = [i for i in range(rb_) if i not in rc and i not in rb]

    # Fast path: [..., K] @ [K, N] (or [N, K]) with no batch dims -> one matmul.
    if not lb and len(lc) == 1 and lc[0] == ra - 1 and ra >= 2 and rb_ == 2 and len(rc) == 1:
        y = ctx.emit("matmul", [a, b], {"transpose_b": rc[0] == 1})
        return ctx.cast(y, out_dt)

    batch = [sa[i] for i in lb]
    # lhs -> [batch..., M, K]
    ta = False
    if len(lf) == 1 and len(lc) == 1 and lb + [lc[0], lf[0]] == list(range(ra)):
        ta = True
    else:
        a = ctx.transpose(a, lb + lf + lc)
        if len(lf) != 1 or len(lc) != 1:
            a = ctx.reshape(a, batch + [_prod([sa[i] for i in lf]), _prod([sa[i] for i in lc])])
    # rhs -> [batch..., K, N]
    tb = False
    if len(rf) == 1 and len(rc) == 1 and rb + [rf[0], rc[0]] == list(range(rb_)):
        tb = True
    else:
        b = ctx.transpose(b, rb + rc + rf)
        if len(rf) != 1 or len(rc) != 1:
            b = ctx.reshape(b, [sb[i] for i in rb] + [_prod([sb[i] for i in rc]),
                                                     _prod([sb[i] for i in rf])])
    y = ctx.emit("matmul", [a, b], {"transpose_a": ta, "transpose_b": tb})
    if len(lf) != 1 or len(rf) != 1:
        y = ctx.reshape(y, batch + [sa[i] for i in lf] + [sb[i] for i in rf])
    return ctx.cast(y, out_dt)


# -- convolution -----------------------------------------------------------------------------

@lowers("conv_general_dilated")
def _conv(ctx, eqn, ins):
    x, w = ins
    p = eqn.params
    dn = p["dimension_numbers"]
    lhs_spec, rhs_spec, out_spec = (tuple(int(i) for i in s) for s in
                                    (dn.lhs_spec, dn.rhs_spec, dn.out_spec))
    nsp = len(lhs_spec) - 2
    if nsp not in (1, 2):
        raise LiftError(f"{nsp}-D convolution is not supported (only 1-D and 2-D; the IR "
                        f"conv2d is NHWC/HWIO)")
    if int(p.get("batch_group_count", 1)) != 1:
        raise LiftError("convolution with batch_group_count != 1 is not supported")
    pads = [tuple(int(v) for v in pr) for pr in p["padding"]]
    lhs_dil = [int(d) for d in p["lhs_dilation"]]
    transposed = any(d != 1 for d in lhs_dil)
    if any(v < 0 for pr in pads for v in pr) and not transposed:
        raise LiftError(f"convolution with negative padding {pads} is not supported")
    strides = [int(s) for s in p["window_strides"]]
    dil = [int(d) for d in p["rhs_dilation"]]
    groups = int(p["feature_group_count"])
    if transposed and groups != 1:
        raise LiftError(f"transposed convolution (lhs_dilation {tuple(lhs_dil)}) with "
                        f"feature_group_count {groups} is not supported")
    if ctx.dtype(w) != ctx.dtype(x):
        w = ctx.cast(w, ctx.dtype(x))
    if nsp == 2:
        xn = ctx.transpose(x, (lhs_spec[0], lhs_spec[2], lhs_spec[3], lhs_spec[1]))
        wn = ctx.transpose(w, (rhs_spec[2], rhs_spec[3], rhs_spec[1], rhs_spec[0]))
    else:  # 1-D: NWC -> N1WC, WIO -> 1WIO
        pads, strides, dil, lhs_dil = [(0, 0)] + pads, [1] + strides, [1] + dil, [1] + lhs_dil
        xn = ctx.emit("expand_dims", [ctx.transpose(x, (lhs_spec[0], lhs_spec[2],
                                                         lhs_spec[1]))], {"axis": 1})
        wn = ctx.emit("expand_dims", [ctx.transpose(w, (rhs_spec[2], rhs_spec[1],
                                                         rhs_spec[0]))], {"axis": 0})
    padding = "VALID" if all(pr == (0, 0) for pr in pads) else tuple(pads)
    attrs = {"strides": strides, "dilations": dil, "padding": padding}
    c_in = ctx.shape(xn)[3]
    kh, kw, ci, co = ctx.shape(wn)
    if transposed:
        y = _conv_transpose(ctx, xn, wn, lhs_dil, pads, strides, dil)
    elif groups == 1:
        y = ctx.emit("conv2d", [xn, wn], attrs)
    elif groups == c_in and ci == 1 and isinstance(co, int):
        wd = ctx.reshape(wn, [kh, kw, groups, co // groups])
        y = ctx.emit("depthwise_conv2d", [xn, wd], attrs)
    else:
        y = ctx.emit("conv2d", [xn, wn], {**attrs, "groups": groups})
    if nsp == 2:
        pos = {out_spec[0]: 0, out_spec[1]: 3, out_spec[2]: 1, out_spec[3]: 2}
    else:
        y = ctx.emit("squeeze", [y], {"axes": [1]})
        pos = {out_spec[0]: 0, out_spec[1]: 2, out_spec[2]: 1}
    y = ctx.transpose(y, [pos[i] for i in range(nsp + 2)])
    pet = p.get("preferred_element_type")
    return ctx.cast(y, ir_dtype(pet)) if pet is not None else y


def _conv_transpose(ctx, x, w, lhs_dil, pads, strides, dil):
    """A convolution of the input dilated by `lhs_dil` (lax.conv_transpose, the input gradient
    of a strided conv) on NHWC `x` and HWIO `w`: the IR's conv2d_transpose (VALID, strides =
    lhs_dil) with the spatially flipped filter as [H, W, C_out, C_in], then cropped to JAX's
    window. Along each axis, with k the dilated kernel size, the full transposed output is
    output position p of JAX's convolution shifted by k - 1 - low, so the crop is lax.pad's
    (low - (k - 1), high - (k - 1)) (negative: slice off, positive: zeros); window strides
    then keep every stride-th row."""
    if any(d != 1 for d in dil):   # TFLite's TRANSPOSE_CONV has no dilation: dilate w itself
        w = _lax_pad(ctx, w, [(0, 0, dil[0] - 1), (0, 0, dil[1] - 1), (0, 0, 0), (0, 0, 0)],
                     0.0)
    kh, kw = ctx.shape(w)[:2]
    if not all(isinstance(k, int) for k in (kh, kw)):
        raise LiftError("transposed convolution with a run-time kernel size")
    f = ctx.transpose(ctx.emit("reverse", [w], {"axes": [0, 1]}), (0, 1, 3, 2))
    y = ctx.emit("conv2d_transpose", [x, f], {"strides": lhs_dil, "padding": "VALID"})
    crop = [(lo - (k - 1), hi - (k - 1), 0) for (lo, hi), k in zip(pads, (kh, kw))]
    y = _lax_pad(ctx, y, [(0, 0, 0)] + crop + [(0, 0, 0)], 0.0)
    if any(s != 1 for s in strides):
        y = ctx.emit("strided_slice", [y], {"begin": [0] * 4, "end": [0] * 4,
                                            "strides": [1, *strides, 1], "end_mask": 0b1111})
    return y


# -- pooling (reduce_window) -----------------------------------------------------------------

def _window(ctx, eqn, x, kind):
    p = eqn.params
    win = [int(v) for v in p["window_dimensions"]]
    strides = [int(v) for v in p["window_strides"]]
    pads = [tuple(int(v) for v in pr) for pr in p["padding"]]
    if any(int(v) != 1 for v in p.get("base_dilation", ())) or \
            any(int(v) != 1 for v in p.get("window_dilation", ())):
        raise LiftError("reduce_window with dilation is not supported")
    rank = len(win)
    if rank != 4 or win[0] != 1 or win[3] != 1 or strides[0] != 1 or strides[3] != 1 or \
            pads[0] != (0, 0) or pads[3] != (0, 0):
        raise LiftError(f"reduce_window {kind} with window {win}, strides {strides} is not a "
                        f"2-D NHWC pool (only windows over dims 1 and 2 of a rank-4 input)")
    if any(v < 0 for pr in pads for v in pr):
        raise LiftError("reduce_window with negative padding is not supported")
    if any(pr != (0, 0) for pr in pads):
        fill = 0.0 if kind == "sum" else (-np.inf if kind == "max" else np.inf)
        if not ctx.dtype(x).is_float and kind != "sum":
            info = np.iinfo(ctx.dtype(x).np)
            fill = float(info.min if kind == "max" else info.max)
        x = ctx.emit("pad", [x], {"pads": pads, "mode": "constant", "value": fill})
    attrs = {"ksize": win[1:3], "strides": strides[1:3], "padding": "VALID"}
    return x, attrs, win[1] * win[2]


@lowers("reduce_window_max")
def _max_pool(ctx, eqn, ins):
    x, attrs, _ = _window(ctx, eqn, ins[0], "max")
    return ctx.emit("max_pool2d", [x], attrs)


@lowers("reduce_window_min")
def _min_pool(ctx, eqn, ins):
    x = ctx.emit("neg", [ins[0]])
    x, attrs, _ = _window(ctx, eqn, x, "max")
    return ctx.emit("neg", [ctx.emit("max_pool2d", [x], attrs)])


@lowers("reduce_window_sum")
def _sum_pool(ctx, eqn, ins):
    x, attrs, area = _window(ctx, eqn, ins[0], "sum")
    if not ctx.dtype(x).is_float:
        raise LiftError(f"sum pooling of {ctx.dtype(x)} is not supported (float only)")
    y = ctx.emit("avg_pool2d", [x], attrs)
    return ctx.emit("mul", [y, ctx.scalar(area, y)])
