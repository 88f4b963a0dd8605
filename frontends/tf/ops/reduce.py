"""Reduction TF ops: Mean, Sum, Max, Min, Prod over constant axes, ArgMax/ArgMin, Cumsum."""

from __future__ import annotations

import numpy as np

from ....ir.types import DType
from ..context import LiftError, ir_dtype
from .common import node_attr, static_axis


def _reduce(ir_op):
    def lower(ctx, node, ins):
        axes = [int(a) for a in np.asarray(ctx.static(ins[1], "reduction axes")).ravel()]
        if not axes:
            return ins[:1]      # TF reduces nothing; the IR's empty list would mean "all"
        return ctx.emit(ir_op, ins[:1], {"axes": axes,
                                         "keepdims": bool(node_attr(node, "keep_dims", False))})
    return lower


def _arg(ir_op):
    def lower(ctx, node, ins):
        out = ir_dtype(node.attr["output_type"].type) if "output_type" in node.attr \
            else DType.i64
        return ctx.emit(ir_op, ins[:1], {"axis": static_axis(ctx, ins[1], f"{node.op} axis"),
                                         "output_type": out})
    return lower


def _cumulative(ir_op):
    """Cumsum / Cumprod; the IR's cumulative product has no exclusive form."""
    def lower(ctx, node, ins):
        attrs = {"axis": static_axis(ctx, ins[1], f"{node.op} axis"),
                 "reverse": bool(node_attr(node, "reverse", False))}
        exclusive = bool(node_attr(node, "exclusive", False))
        if ir_op == "cumsum":
            attrs["exclusive"] = exclusive
        elif exclusive:
            raise LiftError(f"{node.op} with exclusive=True is not supported")
        return ctx.emit(ir_op, ins[:1], attrs)
    return lower


def _top_k(ctx, node, ins):
    k = _whole_axis(ctx, ins) if ctx.const(ins[1]) is None else None
    k = static_axis(ctx, ins[1], "TopKV2 k") if k is None else k
    values, indices = ctx.emit("top_k", ins[:1], {"k": k})
    out = ir_dtype(node.attr["index_type"].type) if "index_type" in node.attr else DType.i32
    return [values, indices if out == DType.i32 else ctx.emit1("cast", [indices], {"to": out})]


def _whole_axis(ctx, ins):
    """-1 (top_k's "the whole last axis") when a run-time k is the last dim itself, as in a
    sort of a run-time number of elements; else None."""
    last = ctx.sym_shape(ins[0])[-1]
    try:
        k = ctx.dims(ins[1], "TopKV2 k")
    except LiftError:
        return None
    return -1 if len(k) == 1 and k[0] == last else None


TABLE = {
    "Mean": _reduce("reduce_mean"), "Sum": _reduce("reduce_sum"), "Max": _reduce("reduce_max"),
    "Min": _reduce("reduce_min"), "Prod": _reduce("reduce_prod"),
    "All": _reduce("reduce_all"), "Any": _reduce("reduce_any"),
    "ArgMax": _arg("argmax"), "ArgMin": _arg("argmin"), "Cumsum": _cumulative("cumsum"), "Cumprod": _cumulative("cumprod"),
    "TopKV2": _top_k,
}
