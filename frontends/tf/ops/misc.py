"""TF ops that are small compositions of IR ops: the softmax cross-entropies, Bucketize,
LowerBound / UpperBound, InTopKV2, Cross and XlaDynamicUpdateSlice."""

from __future__ import annotations

import numpy as np

from ....ir.types import DType
from ..context import Const, LiftError, ir_dtype
from .common import node_attr


def _one_hot(ctx, node, labels, classes: int, dtype):
    positions = Const(np.arange(classes, dtype=ctx.type(labels).dtype.np), node)
    hit = ctx.emit1("equal", [ctx.emit1("expand_dims", [labels], {"axis": -1}), positions])
    return ctx.emit1("cast", [hit], {"to": dtype})


def _cross_entropy(sparse: bool):
    """(loss, backprop) of (Sparse)SoftmaxCrossEntropyWithLogits: -sum(labels *
    log_softmax(logits)) and softmax(logits) - labels, over the last axis."""
    def lower(ctx, node, ins):
        logits, labels = ins
        dtype = ctx.type(logits).dtype
        classes = ctx.type(logits).shape[-1]
        if sparse:
            if not isinstance(classes, int):
                raise LiftError(f"{node.op} needs a static class count")
            labels = _one_hot(ctx, node, labels, classes, dtype)
        logp = ctx.emit1("log_softmax", [logits], {"axis": -1})
        loss = ctx.emit1("neg", [ctx.emit1("reduce_sum", [ctx.emit1("mul", [labels, logp])],
                                           {"axes": [-1]})])
        backprop = ctx.emit1("sub", [ctx.emit1("softmax", [logits], {"axis": -1}), labels])
        return [loss, backprop]
    return lower


def _count_along(ctx, compare: str, values, edges, out_dtype):
    """For each value, how many edges `compare` it (edges on a new last axis)."""
    hit = ctx.emit1(compare, [ctx.emit1("expand_dims", [values], {"axis": -1}), edges])
    return ctx.emit("reduce_sum", [ctx.emit1("cast", [hit], {"to": out_dtype})],
                    {"axes": [-1]})


def _bucketize(ctx, node, ins):
    """The index i with boundaries[i-1] <= x < boundaries[i]: how many boundaries are <= x."""
    (x,) = ins
    bounds = np.asarray(node_attr(node, "boundaries"), dtype=ctx.type(x).dtype.np)
    return _count_along(ctx, "greater_equal", x, Const(bounds, node), DType.i32)


def _bound(strict: bool):
    """LowerBound / UpperBound of each value in each sorted row: how many row entries are
    < value (lower) or <= value (upper)."""
    def lower(ctx, node, ins):
        rows, values = ins           # [B, N] sorted, [B, K]
        out = ir_dtype(node.attr["out_type"].type) if "out_type" in node.attr else DType.i32
        spread = ctx.emit1("expand_dims", [rows], {"axis": 1})               # [B, 1, N]
        probe = ctx.emit1("expand_dims", [values], {"axis": -1})             # [B, K, 1]
        hit = ctx.emit1("less" if strict else "less_equal", [spread, probe])
        return ctx.emit("reduce_sum", [ctx.emit1("cast", [hit], {"to": out})], {"axes": [-1]})
    return lower


def _in_top_k(ctx, node, ins):
    """targets[i] is in the top k of predictions[i] when fewer than k classes score higher
    (ties at the boundary all count as in, as TF says)."""
    predictions, targets, k = ins
    classes = ctx.type(predictions).shape[-1]
    if not isinstance(classes, int):
        raise LiftError("InTopKV2 needs a static class count")
    dtype = ctx.type(predictions).dtype
    picked = ctx.emit1("reduce_sum", [ctx.emit1("mul", [
        predictions, _one_hot(ctx, node, targets, classes, dtype)])], {"axes": [-1],
                                                                       "keepdims": True})
    higher = ctx.emit1("reduce_sum", [ctx.emit1("cast", [
        ctx.emit1("greater", [predictions, picked])], {"to": ctx.type(k).dtype})], {"axes": [-1]})
    return ctx.emit("less", [higher, k])


def _cross(ctx, node, ins):
    a, b = ins
    if ctx.type(a).shape[-1] != 3:
        raise LiftError(f"Cross needs 3-vectors, got {ctx.type(a)}")
    rank = ctx.type(a).rank

    def part(x, i):
        begin, size = [0] * rank, [-1] * rank
        begin[-1], size[-1] = i, 1
        return ctx.emit1("slice", [x], {"begin": begin, "size": size})

    def term(i, j):
        return ctx.emit1("sub", [ctx.emit1("mul", [part(a, i), part(b, j)]),
                                 ctx.emit1("mul", [part(a, j), part(b, i)])])
    return ctx.emit("concat", [term(1, 2), term(2, 0), term(0, 1)], {"axis": -1})


def _xla_dynamic_update_slice(ctx, node, ins):
    x, update, start = ins
    return ctx.emit("dynamic_update_slice", [x, update, start])


TABLE = {
    "SoftmaxCrossEntropyWithLogits": _cross_entropy(sparse=False),
    "SparseSoftmaxCrossEntropyWithLogits": _cross_entropy(sparse=True),
    "Bucketize": _bucketize, "LowerBound": _bound(strict=True),
    "UpperBound": _bound(strict=False), "InTopKV2": _in_top_k, "Cross": _cross,
    "XlaDynamicUpdateSlice": _xla_dynamic_update_slice,
}
