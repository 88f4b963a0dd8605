"""CTC greedy decoding (`tf.nn.ctc_greedy_decoder`, `keras.ops.ctc_decode` with the greedy
strategy, the decoding step of Keras's OCR models) as dense IR.

CTCGreedyDecoder returns a SparseTensor whose number of entries depends on the data; Keras
turns it straight into a dense [batch, time] label matrix padded with -1 (SparseToDense). So
the pair lifts as one dense computation and the sparse intermediate never exists:

- the best class per step: argmax over classes (first on ties, as TF);
- a step emits its class when it lies within the sequence length, is not the blank, and (with
  merge_repeated) differs from the previous step's best class;
- the emitted labels move left to consecutive slots: slot = how many steps emitted before this
  one (an exclusive cumsum), placed with a one-hot comparison against the slot numbers and a
  sum (exact on integers), and the default value where no label landed.

The log probability is -sum over the valid steps of the best score, as TF computes it.
"""

from __future__ import annotations

import numpy as np

from ....ir.types import DType
from ..context import Const, LiftError, Pending, ir_dtype
from .common import node_attr


class _GreedyDecoded(Pending):
    """One of CTCGreedyDecoder's sparse outputs (indices, values or dense shape): only
    SparseToDense reads them, through the dense labels computed here."""

    reason = ("a CTCGreedyDecoder result is used other than by SparseToDense "
              "(tf.sparse.to_dense); its number of entries depends on the data")

    def __init__(self, labels, filled, dims, part: int):
        self.labels, self.filled, self.dims, self.part = labels, filled, dims, part


def _i32(value, node):
    return Const(np.asarray(value, np.int32), node)


def _greedy_decoder(ctx, node, ins):
    logits, lengths = ins
    dims = ctx.sym_shape(logits)
    if len(dims) != 3 or not isinstance(dims[0], int) or not isinstance(dims[2], int):
        raise LiftError(f"CTCGreedyDecoder needs inputs [time, batch, classes] with a static "
                        f"number of steps and classes, got {dims}")
    steps, classes = dims[0], dims[2]
    blank = int(node_attr(node, "blank_index", -1))
    blank = blank + classes if blank < 0 else blank
    merge = bool(node_attr(node, "merge_repeated", True))

    best = ctx.emit1("argmax", [logits], {"axis": -1, "output_type": DType.i32})   # [T, B]
    lengths = ctx.emit1("cast", [lengths], {"to": DType.i32}) \
        if ctx.type(lengths).dtype != DType.i32 else lengths
    step = _i32(np.arange(steps).reshape(steps, 1), node)
    valid = ctx.emit1("less", [step, ctx.emit1("reshape", [lengths], {"shape": [1, -1]})])
    emit = ctx.emit1("logical_and", [valid, ctx.emit1("not_equal", [best, _i32(blank, node)])])
    if merge and steps > 1:
        head = ctx.emit1("slice", [best], {"begin": [0, 0], "size": [1, -1]})
        first = ctx.emit1("not_equal", [head, head])                   # no previous step
        rest = ctx.emit1("equal", [
            ctx.emit1("slice", [best], {"begin": [1, 0], "size": [-1, -1]}),
            ctx.emit1("slice", [best], {"begin": [0, 0], "size": [steps - 1, -1]})])
        repeat = ctx.emit1("concat", [first, rest], {"axis": 0})
        emit = ctx.emit1("logical_and", [emit, ctx.emit1("logical_not", [repeat])])

    slot = ctx.emit1("cumsum", [ctx.emit1("cast", [emit], {"to": DType.i32})],
                     {"axis": 0, "exclusive": True})                      # [T, B]
    slots = _i32(np.arange(steps).reshape(1, 1, steps), node)
    lands = ctx.emit1("logical_and", [
        ctx.emit1("equal", [ctx.emit1("reshape", [slot], {"shape": [steps, -1, 1]}), slots]),
        ctx.emit1("reshape", [emit], {"shape": [steps, -1, 1]})])         # [T, B, slot]
    placed = ctx.emit1("where", [lands, ctx.emit1("reshape", [best], {"shape": [steps, -1, 1]}),
                                 _i32(0, node)])
    labels = ctx.emit1("reduce_sum", [placed], {"axes": [0], "keepdims": False})    # [B, T]
    filled = ctx.emit1("reduce_any", [lands], {"axes": [0], "keepdims": False})

    top = ctx.emit1("reduce_max", [logits], {"axes": [-1], "keepdims": False})      # [T, B]
    zero = Const(np.zeros((), ctx.type(logits).dtype.np), node)
    total = ctx.emit1("reduce_sum", [ctx.emit1("where", [valid, top, zero])],
                      {"axes": [0], "keepdims": False})
    log_prob = ctx.emit1("reshape", [ctx.emit1("neg", [total])], {"shape": [-1, 1]})
    out_dims = [dims[1], steps]
    return [_GreedyDecoded(labels, filled, out_dims, k) for k in range(3)] + [log_prob]


def _sparse_to_dense(ctx, node, ins):
    indices, shape, values, default = ins[:4]
    if not (isinstance(indices, _GreedyDecoded) and isinstance(values, _GreedyDecoded)
            and indices.part == 0 and values.part == 1 and indices.labels is values.labels):
        raise LiftError("SparseToDense of a sparse tensor computed at run time is supported "
                        "only for CTCGreedyDecoder's result")
    dims = ctx.dims(shape, "SparseToDense output_shape")
    if len(dims) != 2 or dims[1] != indices.dims[1] or (
            isinstance(dims[0], int) and isinstance(indices.dims[0], int)
            and dims[0] != indices.dims[0]):
        raise LiftError(f"SparseToDense of a CTC decoding into shape {dims}: only its own "
                        f"[batch, time] = {indices.dims} is supported")
    dtype = ir_dtype(node.attr["T"].type, "SparseToDense values")
    labels = ctx.emit1("cast", [indices.labels], {"to": dtype}) if dtype != DType.i32 \
        else indices.labels
    fill = ctx.emit1("cast", [default], {"to": dtype}) \
        if ctx.type(default).dtype != dtype else default
    return ctx.emit("where", [indices.filled, labels, fill])


TABLE = {"CTCGreedyDecoder": _greedy_decoder, "SparseToDense": _sparse_to_dense}
