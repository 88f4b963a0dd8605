"""TF ops that are small compositions of IR ops: the softmax cross-entropies, Bucketize,
LowerBound / UpperBound, InTopKV2, Cross, XlaDynamicUpdateSlice, (Dense)Bincount and
LookupTableFindV2 on a table filled before conversion (Keras IntegerLookup)."""

from __future__ import annotations

import numpy as np

from ....ir.graph import Value
from ....ir.types import DType
from ..context import Const, LiftError, Resource, ir_dtype
from ..shapes import SymDim
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


def _bounds(ctx, e, depth: int = 0) -> tuple[float, float]:
    """[lo, hi] that the integer scalar `e` is known to lie in: constants, and minimum /
    maximum of known bounds (Keras clamps a bincount's size as min(maxlength, max(minlength,
    max(x) + 1)), which is the constant when minlength == maxlength)."""
    c = ctx.const(e)
    if c is not None and np.size(c) == 1:
        return float(np.ravel(c)[0]), float(np.ravel(c)[0])
    node = e.producer if isinstance(e, Value) else None
    if node is None or depth > 16:
        return -np.inf, np.inf
    if node.op in ("minimum", "maximum"):
        (a_lo, a_hi), (b_lo, b_hi) = (_bounds(ctx, v, depth + 1) for v in node.inputs)
        pick = min if node.op == "minimum" else max
        return pick(a_lo, b_lo), pick(a_hi, b_hi)
    if node.op in ("reshape", "identity"):
        return _bounds(ctx, node.inputs[0], depth + 1)
    return -np.inf, np.inf


def _bincount(ctx, node, ins):
    """Bincount / DenseBincount: out[..., i] counts the values equal to i (sums their weights;
    1 where any with binary_output) for i < size, per row for 2-D input; values outside
    [0, size) count nowhere, as in TF. Each value is compared against 0..size-1 on a new last
    axis, then reduced over the values: a constant range when size is known at conversion
    time, else the IR's run-time `range` (a size that depends on the data, as
    keras.ops.bincount's max(minlength, max(x) + 1))."""
    arr, size, weights = ins
    out = ir_dtype(node.attr["T"].type)
    binary = bool(node_attr(node, "binary_output", False))
    rank = ctx.type(arr).rank
    if rank not in (1, 2):
        raise LiftError(f"{node.op} of rank-{rank} input (TF takes 1-D or 2-D)")
    idx = ctx.type(arr).dtype
    lo, hi = _bounds(ctx, size)
    if lo == hi:
        positions = Const(np.arange(int(lo), dtype=idx.np), node, "bins")
    else:
        scalars = []
        for e in (Const(np.array(0, idx.np), node), size, Const(np.array(1, idx.np), node)):
            v = ctx.value(e)
            if v.type.rank:
                v = ctx.emit1("reshape", [v], {"shape": []})
            if v.type.dtype != idx:
                v = ctx.emit1("cast", [v], {"to": idx})
            scalars.append(v)
        positions = ctx.dynamic("range", scalars, [SymDim.of(ctx.fresh_symbol())])
    hit = ctx.emit1("cast", [ctx.emit1("equal", [
        ctx.emit1("expand_dims", [arr], {"axis": -1}), positions])], {"to": out})  # [.., n, bins]
    if binary:
        return ctx.emit("reduce_max", [hit], {"axes": [-2]})
    w_shape = ctx.type(weights).shape
    if not (len(w_shape) == 1 and w_shape[0] == 0):   # empty weights: plain counts
        hit = ctx.emit1("mul", [hit, ctx.emit1("expand_dims", [weights], {"axis": -1})])
    return ctx.emit("reduce_sum", [hit], {"axes": [-2]})


def _lookup_find(ctx, node, ins):
    """LookupTableFindV2 on a captured hash table (Keras IntegerLookup's vocabulary, filled
    eagerly when the layer is built): its contents are read at conversion time
    (LookupTableExportV2) and become constants. Each key k_i is compared with every input;
    the sum of (i + 1) over the matches (keys are unique, so at most one) gathers from
    [default, v_0, v_1, ...]: the value of the key found, else the default."""
    table, keys, default = ins
    if not isinstance(table, Resource):
        raise LiftError("LookupTableFindV2 of a table that is not captured from eager code")
    import tensorflow as tf

    try:
        k, v = tf.raw_ops.LookupTableExportV2(table_handle=table.handle,
                                              Tkeys=tf.dtypes.as_dtype(node.attr["Tin"].type),
                                              Tvalues=tf.dtypes.as_dtype(node.attr["Tout"].type))
    except Exception as err:  # a table kind without export (a dense or mutable hash table)
        raise LiftError(f"cannot read the lookup table's contents: {err}") from err
    k, v = k.numpy(), v.numpy()
    if k.ndim != 1 or v.ndim != 1 or k.dtype.kind not in "iub" or v.dtype.kind not in "iufb":
        raise LiftError("LookupTableFindV2 only on scalar integer keys and numeric values "
                        f"(got keys {k.dtype}{list(k.shape)}, values {v.dtype}{list(v.shape)})")
    if ctx.type(default).rank:
        raise LiftError("LookupTableFindV2 with a non-scalar default value")
    hit = ctx.emit1("equal", [ctx.emit1("expand_dims", [keys], {"axis": -1}),
                              Const(k.astype(ctx.type(keys).dtype.np), node, "table_keys")])
    slots = Const(np.arange(1, k.size + 1, dtype=np.int32), node)
    index = ctx.emit1("reduce_sum", [ctx.emit1("mul", [
        ctx.emit1("cast", [hit], {"to": DType.i32}), slots])], {"axes": [-1]})
    fallback = ctx.const(default)
    if fallback is not None:
        values = Const(np.concatenate([np.reshape(fallback, [1]), v]).astype(v.dtype), node,
                       "table_values")
    else:
        values = ctx.emit1("concat", [ctx.emit1("reshape", [default], {"shape": [1]}),
                                      Const(v, node, "table_values")], {"axis": 0})
    return ctx.emit("gather", [values, index], {"axis": 0})


TABLE = {
    "LookupTableFindV2": _lookup_find,
    "Bincount": _bincount, "DenseBincount": _bincount,
    "SoftmaxCrossEntropyWithLogits": _cross_entropy(sparse=False),
    "SparseSoftmaxCrossEntropyWithLogits": _cross_entropy(sparse=True),
    "Bucketize": _bucketize, "LowerBound": _bound(strict=True),
    "UpperBound": _bound(strict=False), "InTopKV2": _in_top_k, "Cross": _cross,
    "XlaDynamicUpdateSlice": _xla_dynamic_update_slice,
}
