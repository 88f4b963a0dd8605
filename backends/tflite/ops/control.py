"""Control flow and in-place updates: `while` -> WHILE, `if` -> IF (their regions become
subgraphs of the model), `dynamic_update_slice` -> DYNAMIC_UPDATE_SLICE.

`scan` never reaches here: the writer lowers it to `while` first (passes/control.py).
"""

from __future__ import annotations

from ai_edge_litert import schema_py_generated as fb

from ....ir.types import DType
from .common import Unsupported, _need, emit


def _outputs(e, node) -> list[int]:
    return [e.out(v) for v in node.outputs]


def _lower_while(e, node):
    cond = e.subgraph(node.regions[0], f"{e.prefix}/cond")
    body = e.subgraph(node.regions[1], f"{e.prefix}/body")
    e.op("WHILE", [e.t(v) for v in node.inputs], _outputs(e, node),
         fb.WhileOptionsT(condSubgraphIndex=cond, bodySubgraphIndex=body))


def _lower_if(e, node):
    then = e.subgraph(node.regions[0], f"{e.prefix}/then")
    else_ = e.subgraph(node.regions[1], f"{e.prefix}/else")
    e.op("IF", [e.t(v) for v in node.inputs], _outputs(e, node),
         fb.IfOptionsT(thenSubgraphIndex=then, elseSubgraphIndex=else_))


_DUS_TYPES = frozenset({DType.f32, DType.i8, DType.i32, DType.i64, DType.bool, DType.f16})


def _lower_dynamic_update_slice(e, node):
    x, update, start = node.inputs
    _need(node, x, _DUS_TYPES, "DYNAMIC_UPDATE_SLICE")
    _need(node, start, {DType.i32, DType.i64}, "DYNAMIC_UPDATE_SLICE start")
    if x.type.rank == 0:
        raise Unsupported("DYNAMIC_UPDATE_SLICE of a scalar")
    emit(e, "DYNAMIC_UPDATE_SLICE", [e.t(x), e.t(update), e.t(start)], out=e.out(node.output))


LOWERINGS = {"while": _lower_while, "if": _lower_if,
             "dynamic_update_slice": _lower_dynamic_update_slice}

