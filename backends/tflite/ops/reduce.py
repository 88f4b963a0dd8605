"""Lowerings of the reductions (SUM, MEAN, REDUCE_MAX/MIN/PROD/ALL/ANY), argmax / argmin,
cumsum (CUMSUM), cumprod / cummax / cummin (composed: TFLite has no kernel for them) and
top_k."""

from __future__ import annotations

import numpy as np
from ai_edge_litert import schema_py_generated as fb

from ....ir.types import DType

from ...common import log_scan
from .common import BOOL, F32, NUM, TFL_TYPES, Unsupported, _need, _param, copy_into, emit


def _reduce(code, allowed):
    def lower(e, node):
        x = node.inputs[0]
        _need(node, x, allowed, code)
        rank = x.type.rank
        # The IR's empty axes mean "all"; TFLite's mean "none".
        axes = sorted(a % rank for a in node.attrs["axes"]) or list(range(rank))
        emit(e, code, [e.t(x), _param(e, axes, "axes")], out=e.out(node.output),
             options=fb.ReducerOptionsT(keepDims=node.attrs["keepdims"]))
    return lower


def _arg(code, options_cls):
    def lower(e, node):
        x = node.inputs[0]
        _need(node, x, NUM, code)
        axis = node.attrs["axis"] % x.type.rank
        emit(e, code, [e.t(x), _param(e, [axis], "axis")], out=e.out(node.output),
             options=options_cls(outputType=TFL_TYPES[node.attrs["output_type"]]))
    return lower


def _lower_cumsum(e, node):
    x = node.inputs[0]
    _need(node, x, NUM, "CUMSUM")
    axis = e.const(np.asarray(node.attrs["axis"] % x.type.rank, np.int32), f"{e.prefix}/axis")
    emit(e, "CUMSUM", [e.t(x), axis], out=e.out(node.output),
         options=fb.CumsumOptionsT(exclusive=node.attrs["exclusive"],
                                   reverse=node.attrs["reverse"]))


def _cumulative(code, options=None):
    """cumprod / cummax / cummin as a log-depth scan (`common.log_scan`): ceil(log2 n) steps
    of SLICE, MUL / MAXIMUM / MINIMUM and CONCATENATION along an axis of static size n."""
    def lower(e, node):
        x = node.inputs[0]
        _need(node, x, NUM, node.op)
        rank, shape = x.type.rank, list(x.type.shape)
        axis = node.attrs["axis"] % rank
        n = shape[axis]
        if not isinstance(n, int):
            raise Unsupported(f"TFLite has no {node.op} kernel; the composed scan needs a "
                              f"static size along axis {axis}, got {x.type}")
        out = e.out(node.output)

        def along(size):
            return shape[:axis] + [size] + shape[axis + 1:]

        def take(t, begin, size):
            b, sz = [0] * rank, [-1] * rank
            b[axis], sz[axis] = begin, size
            return emit(e, "SLICE", [t, _param(e, b, "begin"), _param(e, sz, "size")],
                        shape=along(size), name="part")

        def combine(a, b):
            return emit(e, code, [a, b], options=options() if options else None)

        def join(parts, last):
            return emit(e, "CONCATENATION", parts, out=out if last else None, shape=shape,
                        options=fb.ConcatenationOptionsT(axis=axis))

        if log_scan(e.t(x), n, node.attrs["reverse"], take, combine, join) == e.t(x):
            copy_into(e, e.t(x), out)   # a single element along the axis
    return lower


def _lower_top_k(e, node):
    x = node.inputs[0]
    _need(node, x, NUM, "TOPK_V2")
    k, last = node.attrs["k"], x.type.shape[-1]
    if k == -1 and not isinstance(last, int):
        # All of a run-time last axis: k is read from the shape (TOPK_V2 takes a 0-D k).
        shape = emit(e, "SHAPE", [e.t(x)], dtype=DType.i32, shape=(x.type.rank,),
                     options=fb.ShapeOptionsT(outType=fb.TensorType.INT32), name="shape")
        k = emit(e, "STRIDED_SLICE", [shape, _param(e, [-1], "begin"), _param(e, [0], "end"),
                                      _param(e, [1], "strides")],
                 shape=(), options=fb.StridedSliceOptionsT(endMask=1, shrinkAxisMask=1),
                 name="k")
        e.op("TOPK_V2", [e.t(x), k], [e.out(v) for v in node.outputs])
        return
    k = e.const(np.asarray(last if k == -1 else k, np.int32), f"{e.prefix}/k")
    e.op("TOPK_V2", [e.t(x), k], [e.out(v) for v in node.outputs])


LOWERINGS = {
    "reduce_sum": _reduce("SUM", NUM), "reduce_mean": _reduce("MEAN", F32),
    "reduce_max": _reduce("REDUCE_MAX", NUM), "reduce_min": _reduce("REDUCE_MIN", NUM),
    "reduce_prod": _reduce("REDUCE_PROD", NUM),
    "reduce_all": _reduce("REDUCE_ALL", BOOL), "reduce_any": _reduce("REDUCE_ANY", BOOL),
    "argmax": _arg("ARG_MAX", fb.ArgMaxOptionsT), "argmin": _arg("ARG_MIN", fb.ArgMinOptionsT),
    "cumsum": _lower_cumsum, "top_k": _lower_top_k,
    "cumprod": _cumulative("MUL", fb.MulOptionsT), "cummax": _cumulative("MAXIMUM"),
    "cummin": _cumulative("MINIMUM"),
}
