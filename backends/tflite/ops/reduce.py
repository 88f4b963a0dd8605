"""Lowerings of the reductions (SUM, MEAN, REDUCE_MAX/MIN/PROD/ALL/ANY), argmax / argmin,
cumsum and top_k."""

from __future__ import annotations

from ai_edge_litert import schema_py_generated as fb

import numpy as np

from .common import BOOL, F32, NUM, TFL_TYPES, _need, _param, emit


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


def _lower_top_k(e, node):
    x = node.inputs[0]
    _need(node, x, NUM, "TOPK_V2")
    k = e.const(np.asarray(node.attrs["k"], np.int32), f"{e.prefix}/k")
    e.op("TOPK_V2", [e.t(x), k], [e.out(v) for v in node.outputs])


LOWERINGS = {
    "reduce_sum": _reduce("SUM", NUM), "reduce_mean": _reduce("MEAN", F32),
    "reduce_max": _reduce("REDUCE_MAX", NUM), "reduce_min": _reduce("REDUCE_MIN", NUM),
    "reduce_prod": _reduce("REDUCE_PROD", NUM),
    "reduce_all": _reduce("REDUCE_ALL", BOOL), "reduce_any": _reduce("REDUCE_ANY", BOOL),
    "argmax": _arg("ARG_MAX", fb.ArgMaxOptionsT), "argmin": _arg("ARG_MIN", fb.ArgMinOptionsT),
    "cumsum": _lower_cumsum, "top_k": _lower_top_k,
}
