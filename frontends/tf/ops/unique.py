"""TF's Unique (`tf.unique`, `keras.ops.unique`) of a 1-D tensor of static length n, in dense
IR: its result has as many elements as the data has distinct values, a run-time size.

- x[i] repeats an earlier element when x[j] == x[i] for some j < i (an [n, n] comparison);
  the first occurrences, in order, are the unique values;
- each first occurrence's slot is the number of first occurrences before it (an exclusive
  cumsum); the unique values are gathered from the index of the occurrence in each slot,
  so they keep their exact bits (-0.0 and NaN included), then cut to the count;
- idx[i] is the slot of the first element equal to x[i]. NaN equals nothing, so every NaN is
  a value of its own, as in TF.
"""

from __future__ import annotations

import numpy as np

from ....ir.types import DType
from ..context import Const, LiftError, ir_dtype
from ..shapes import SymDim


def _i32(value, node):
    return Const(np.asarray(value, np.int32), node)


def _unique(ctx, node, ins):
    (x,) = ins
    dims = ctx.sym_shape(x)
    if len(dims) != 1 or not isinstance(dims[0], int):
        raise LiftError(f"Unique needs a 1-D tensor of static length, got {dims}")
    n = dims[0]
    out_idx = ir_dtype(node.attr["out_idx"].type, "Unique out_idx") \
        if "out_idx" in node.attr else DType.i32
    column = ctx.emit1("reshape", [x], {"shape": [n, 1]})
    row = ctx.emit1("reshape", [x], {"shape": [1, n]})
    same = ctx.emit1("equal", [column, row])                             # [i, j]: x_i == x_j
    before = Const(np.tril(np.ones((n, n), bool), -1), node)             # j < i
    repeats = ctx.emit1("reduce_any", [ctx.emit1("logical_and", [same, before])],
                        {"axes": [1], "keepdims": False})
    first = ctx.emit1("logical_not", [repeats])
    first_i = ctx.emit1("cast", [first], {"to": DType.i32})
    slot = ctx.emit1("cumsum", [first_i], {"axis": 0, "exclusive": True})
    count = ctx.emit1("reduce_sum", [first_i], {"axes": [0], "keepdims": True})

    # The index of the first occurrence that fills each slot k (0 for slots past the count).
    fills = ctx.emit1("logical_and", [
        ctx.emit1("equal", [ctx.emit1("reshape", [slot], {"shape": [n, 1]}),
                            _i32(np.arange(n).reshape(1, n), node)]),
        ctx.emit1("reshape", [first], {"shape": [n, 1]})])              # [i, k]
    source = ctx.emit1("reduce_sum", [ctx.emit1("where", [
        fills, _i32(np.arange(n).reshape(n, 1), node), _i32(0, node)])],
        {"axes": [0], "keepdims": False})
    values = ctx.emit1("gather", [x, source], {"axis": 0})
    y = ctx.dynamic("dynamic_slice", [values, _i32([0], node), count],
                    [SymDim.of(ctx.fresh_symbol())])

    # idx: the slot of the first j with x_j == x_i (j == i counts, so a NaN finds itself).
    self_or_same = ctx.emit1("logical_or", [same, Const(np.eye(n, dtype=bool), node)])
    first_equal = ctx.emit1("argmax", [ctx.emit1("cast", [self_or_same], {"to": DType.i32})],
                            {"axis": 1, "output_type": DType.i32})
    idx = ctx.emit1("gather", [slot, first_equal], {"axis": 0})
    if out_idx != DType.i32:
        idx = ctx.emit1("cast", [idx], {"to": out_idx})
    return [y, idx]


TABLE = {"Unique": _unique}
