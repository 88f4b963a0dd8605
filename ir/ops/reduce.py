"""Reductions: reduce_sum/mean/max/min/prod over a set of axes, argmax/argmin, the
cumulative sum, product, maximum and minimum along an axis, and top_k.

Kernels accumulate in float64 (floats) or int64 (integers) and cast back to the operand dtype,
so low-precision floats do not lose accuracy in the reference; integer sums wrap on the cast
like a runtime's fixed-width accumulator would.
"""

from __future__ import annotations

import math
import warnings

import ml_dtypes
import numpy as np

from ..types import DType
from .registry import Attr, OpDef, check, normalize_axis, register_op

PURE = frozenset({"pure"})


def _reduced_axes(x, axes, name):
    """Normalized axes (all axes when empty); InferenceError if out of range or repeated."""
    if not axes:
        return list(range(x.rank))
    norm = [normalize_axis(a, x.rank, f"{name} axis") for a in axes]
    check(len(set(norm)) == len(norm), f"{name}: axes {axes} repeat an axis")
    return norm


def _reduce_infer(name, logical=False):
    def infer(types, attrs):
        (x,) = types
        if logical:
            check(x.dtype == DType.bool, f"{name} takes bool operands, got {x.dtype}")
        else:
            check(x.dtype != DType.bool, f"{name} does not take bool operands (cast first)")
        axes = _reduced_axes(x, attrs["axes"], name)
        if attrs["keepdims"]:
            shape = [1 if i in axes else d for i, d in enumerate(x.shape)]
        else:
            shape = [d for i, d in enumerate(x.shape) if i not in axes]
        return [x.with_shape(shape)]
    return infer


def _widen(x):
    """x in float64 (float dtypes, incl. bf16) or int64 (integer dtypes, incl. int4)."""
    return x.astype(np.int64) if DType.from_numpy(x.dtype).is_int else x.astype(np.float64)


def _sum(x, axis, keepdims, dtype):
    return np.sum(x, axis=axis, keepdims=keepdims)


def _prod(x, axis, keepdims, dtype):
    return np.prod(x, axis=axis, keepdims=keepdims)


def _mean(x, axis, keepdims, dtype):
    if x.dtype.kind == "f":
        # An empty mean is NaN, like TF; NumPy's "Mean of empty slice" is a Python warning,
        # not a floating-point error, so errstate alone does not silence it.
        with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.mean(x, axis=axis, keepdims=keepdims)
    # Integer mean divides the integer sum, truncating toward zero like TF's MeanReducer.
    s = np.sum(x, axis=axis, keepdims=keepdims)
    n = max(math.prod(x.shape[a] for a in axis), 1)  # an empty reduction gives 0, not a crash
    return np.sign(s) * (np.abs(s) // n)


def _extreme(fn, lowest):
    """max/min whose empty reductions give the identity (-inf/+inf or the integer limits),
    as TF does, instead of NumPy's error."""
    def run(x, axis, keepdims, dtype):
        # `x` is already widened; the identity comes from the operand's own dtype.
        if x.dtype.kind == "f":
            init = -np.inf if lowest else np.inf
        else:
            init = ml_dtypes.iinfo(dtype).min if lowest else ml_dtypes.iinfo(dtype).max
        return fn(x, axis=axis, keepdims=keepdims, initial=init)
    return run


def _reduce_kernel(fn, logical=False):
    def kernel(ins, attrs):
        x = ins[0]
        axes = tuple(range(x.ndim)) if not attrs["axes"] else \
            tuple(a % x.ndim for a in attrs["axes"])
        out = fn(x if logical else _widen(x), axes, attrs["keepdims"], x.dtype)
        return [np.asarray(out).astype(x.dtype)]
    return kernel


def reduction(name, fn, doc, logical=False):
    return register_op(OpDef(
        name, ("x",), _reduce_infer(name, logical), _reduce_kernel(fn, logical),
        attrs={"axes": Attr("ints", (), doc="axes to reduce; empty = all"),
               "keepdims": Attr("bool", False, doc="keep reduced dims as size 1")},
        traits=PURE, doc=doc))


reduction("reduce_sum", _sum, "Sum over axes.")
reduction("reduce_mean", _mean, "Mean over axes (integer operands truncate toward zero).")
reduction("reduce_max", _extreme(np.max, lowest=True), "Maximum over axes.")
reduction("reduce_min", _extreme(np.min, lowest=False), "Minimum over axes.")
reduction("reduce_prod", _prod, "Product over axes.")
reduction("reduce_all", lambda x, axis, keepdims, dtype: np.all(x, axis=axis, keepdims=keepdims),
          "Logical and over axes (bool; an empty reduction is true).", logical=True)
reduction("reduce_any", lambda x, axis, keepdims, dtype: np.any(x, axis=axis, keepdims=keepdims),
          "Logical or over axes (bool; an empty reduction is false).", logical=True)


# -- argmax / argmin ---------------------------------------------------------------------------

def _along_axis(x, attrs, name) -> int:
    """The normalized `axis` attribute of an op working along one axis of a non-bool operand
    of rank >= 1 (argmax/argmin, the cumulative ops); InferenceError otherwise."""
    check(x.dtype != DType.bool, f"{name} does not take bool operands (cast first)")
    check(x.rank >= 1, f"{name} needs an operand of rank >= 1, got {x}")
    return normalize_axis(attrs["axis"], x.rank, f"{name} axis")


def _arg_infer(name):
    def infer(types, attrs):
        (x,) = types
        axis = _along_axis(x, attrs, name)
        check(x.shape[axis] != 0, f"{name}: axis {axis} of {x} is empty")
        shape = [d for i, d in enumerate(x.shape) if i != axis]
        return [x.with_shape(shape).with_dtype(attrs["output_type"])]
    return infer


def arg_reduction(name, fn, doc):
    # np.argmax/argmin return the first index on ties, as TF does.
    return register_op(OpDef(
        name, ("x",), _arg_infer(name),
        lambda ins, a: [np.asarray(fn(_widen(ins[0]), axis=a["axis"]))
                        .astype(a["output_type"].np)],
        attrs={"axis": Attr("int", 0),
               "output_type": Attr("dtype", DType.i64, choices=(DType.i32, DType.i64))},
        traits=PURE, doc=doc))


arg_reduction("argmax", np.argmax, "Index of the largest value along axis (first on ties).")
arg_reduction("argmin", np.argmin, "Index of the smallest value along axis (first on ties).")


# -- cumulative sum, product, maximum, minimum -------------------------------------------------

def _cumulative_infer(name):
    def infer(types, attrs):
        _along_axis(types[0], attrs, name)
        return [types[0]]
    return infer


def _cumulative(ufunc):
    """Running `ufunc` (add, multiply, maximum, minimum) along `axis`, from the end with
    `reverse`; with `exclusive` (cumsum only, as TF's Cumsum) each result leaves out its own
    element, so the first is 0. NaN propagates through maximum and minimum."""
    def kernel(ins, attrs):
        x = ins[0]
        axis = attrs["axis"] % x.ndim
        w = _widen(x)
        if attrs["reverse"]:
            w = np.flip(w, axis)
        with np.errstate(invalid="ignore", over="ignore"):   # inf * 0, overflow: as IEEE
            y = ufunc.accumulate(w, axis=axis)
        if attrs.get("exclusive"):
            y = np.concatenate([np.zeros_like(np.take(y, [0], axis=axis)),
                                np.take(y, range(y.shape[axis] - 1), axis=axis)], axis=axis)
        if attrs["reverse"]:
            y = np.flip(y, axis)
        return [y.astype(x.dtype)]
    return kernel


register_op(OpDef(
    "cumsum", ("x",), _cumulative_infer("cumsum"), _cumulative(np.add),
    attrs={"axis": Attr("int", 0, doc="the axis summed along (negative counts from the end)"),
           "exclusive": Attr("bool", False, doc="each sum leaves out its own element"),
           "reverse": Attr("bool", False, doc="sum from the last element backwards")},
    traits=PURE, doc="Cumulative sum along axis (TF Cumsum, TFLite CUMSUM, jnp.cumsum)."))


for _name, _ufunc, _what in (("cumprod", np.multiply, "product (lax.cumprod, jnp.cumprod)"),
                             ("cummax", np.maximum, "maximum (lax.cummax)"),
                             ("cummin", np.minimum, "minimum (lax.cummin)")):
    register_op(OpDef(
        _name, ("x",), _cumulative_infer(_name), _cumulative(_ufunc),
        attrs={"axis": Attr("int", 0, doc="the axis scanned (negative counts from the end)"),
               "reverse": Attr("bool", False, doc="scan from the last element backwards")},
        traits=PURE, doc=f"Cumulative {_what} along axis.",
    ))


# -- top_k -------------------------------------------------------------------------------------

def _top_k_infer(types, attrs):
    (x,) = types
    k = attrs["k"]
    check(x.rank >= 1, f"top_k needs an operand of rank >= 1, got {x}")
    check(x.dtype != DType.bool, "top_k does not take bool operands")
    check(k >= -1, f"top_k: k must be >= 0, or -1 for the whole last axis, got {k}")
    last = x.shape[-1]
    check(not isinstance(last, int) or k <= last,
          f"top_k: k = {k} is more than the last dim of {x}")
    shape = list(x.shape[:-1]) + [last if k == -1 else k]
    return [x.with_shape(shape), x.with_shape(shape).with_dtype(DType.i32)]


def _top_k(ins, attrs):
    """The k largest along the last axis, largest first; ties keep the lower index first
    (tf.math.top_k with sorted=True)."""
    x, k = ins[0], attrs["k"]
    k = x.shape[-1] if k == -1 else k
    if k > x.shape[-1]:
        raise ValueError(f"top_k: k = {k} is more than the last dim {x.shape[-1]}")
    # A stable sort of the negated values keeps equal values in index order.
    order = np.argsort(-_widen(x), axis=-1, kind="stable")[..., :k]
    return [np.take_along_axis(x, order, axis=-1), order.astype(np.int32)]


register_op(OpDef(
    "top_k", ("x",), _top_k_infer, _top_k,
    attrs={"k": Attr("int", doc="how many of the largest values along the last axis; -1: "
                                "all of them (a descending sort of a run-time size)")},
    traits=PURE, doc="The k largest values along the last axis and their indices "
                     "(tf.math.top_k, sorted).",
))
