"""Lowerings of the data-movement ops: reshape, transpose, concat, split, slice, strided_slice,
pad (constant, reflect, symmetric), gather, broadcast_to, squeeze, expand_dims, tile and
reverse.
"""

from __future__ import annotations

import numpy as np
from ai_edge_litert import schema_py_generated as fb

from ....ir.quantized import is_quantized, quantize_array
from ....ir.types import DType
from .common import FUSED, Unsupported, _need, _param, copy_into, emit
from .weights import read_by_int4_fc


def _lower_reshape(e, node):
    if read_by_int4_fc(node):
        return  # blockwise int4 weight: FULLY_CONNECTED reads the codes (int4_fc_weight)
    # The IR shape attribute already uses -1 where a dim is inferred (e.g. symbolic batch).
    emit(e, "RESHAPE", [e.t(node.inputs[0]), _param(e, list(node.attrs["shape"]), "shape")],
         out=e.out(node.output))


def _lower_transpose(e, node):
    emit(e, "TRANSPOSE", [e.t(node.inputs[0]), _param(e, list(node.attrs["perm"]), "perm")],
         out=e.out(node.output))


def _lower_concat(e, node):
    rank = node.inputs[0].type.rank
    quants = {v.quant for v in node.inputs} | {node.output.quant}
    if len(quants) > 1:
        # TFLite's CONCATENATION rescales inputs whose params differ from the output's; the IR
        # concatenates raw codes.
        raise Unsupported("concat of tensors with different quantization params")
    emit(e, "CONCATENATION", [e.t(v) for v in node.inputs], out=e.out(node.output),
         options=fb.ConcatenationOptionsT(axis=node.attrs["axis"] % rank,
                                          fusedActivationFunction=FUSED["none"]))


def _lower_split(e, node):
    x = node.inputs[0]
    axis = node.attrs["axis"] % x.type.rank
    sizes = list(node.attrs["sizes"])
    e.op("SPLIT_V", [e.t(x), _param(e, sizes, "size_splits"), _param(e, axis, "axis")],
         [e.out(v) for v in node.outputs], fb.SplitVOptionsT(numSplits=len(sizes)))


def _lower_slice(e, node):
    a = node.attrs
    emit(e, "SLICE", [e.t(node.inputs[0]), _param(e, list(a["begin"]), "begin"),
                      _param(e, list(a["size"]), "size")], out=e.out(node.output))


def _lower_strided_slice(e, node):
    a = node.attrs
    emit(e, "STRIDED_SLICE", [e.t(node.inputs[0]), _param(e, list(a["begin"]), "begin"),
                              _param(e, list(a["end"]), "end"),
                              _param(e, list(a["strides"]), "strides")],
         out=e.out(node.output), options=fb.StridedSliceOptionsT(
             beginMask=a["begin_mask"], endMask=a["end_mask"], ellipsisMask=a["ellipsis_mask"],
             newAxisMask=a["new_axis_mask"], shrinkAxisMask=a["shrink_axis_mask"]))


def _lower_pad(e, node):
    x, a = node.inputs[0], node.attrs
    out = e.out(node.output)
    if x.type.rank == 0:
        copy_into(e, e.t(x), out)
        return
    pads = _param(e, [list(p) for p in a["pads"]], "paddings")
    if a["mode"] != "constant":
        mode = fb.MirrorPadMode.REFLECT if a["mode"] == "reflect" else fb.MirrorPadMode.SYMMETRIC
        emit(e, "MIRROR_PAD", [e.t(x), pads], out=out, options=fb.MirrorPadOptionsT(mode=mode))
        return
    dt = x.type.dtype
    if a["value"] == 0:
        # A quantized PAD fills with the zero point: real 0 (integer form, ir/quantized.py).
        emit(e, "PAD", [e.t(x), pads], out=out)
        return
    # PADV2 fills with its operand's code: for a quantized tensor, the code of the real
    # pad value under the tensor's params.
    if is_quantized(x):
        value = quantize_array(np.asarray(a["value"], np.float32), x.quant, dt)
    else:
        value = np.asarray(a["value"]).astype(dt.np)
    fill = e.const(value, f"{e.prefix}/pad_value", quant=x.quant)
    emit(e, "PADV2", [e.t(x), pads, fill], out=out)


def _lower_gather(e, node):
    params, indices = node.inputs
    _need(node, indices, {DType.i16, DType.i32, DType.i64}, "GATHER indices")
    bd = node.attrs["batch_dims"]
    bd = bd + indices.type.rank if bd < 0 else bd
    emit(e, "GATHER", [e.t(params), e.t(indices)], out=e.out(node.output),
         options=fb.GatherOptionsT(axis=node.attrs["axis"] % params.type.rank, batchDims=bd))


def _lower_broadcast_to(e, node):
    emit(e, "BROADCAST_TO", [e.t(node.inputs[0]), _param(e, list(node.attrs["shape"]), "shape")],
         out=e.out(node.output))


def _lower_squeeze(e, node):
    x = node.inputs[0]
    rank = x.type.rank
    # Explicit dims always: empty squeeze_dims would also drop a symbolic dim that is 1 in the
    # stored shape (e.g. batch).
    axes = sorted(a % rank for a in node.attrs["axes"]) or \
        [i for i, d in enumerate(x.type.shape) if d == 1]
    if not axes:
        copy_into(e, e.t(x), e.out(node.output))
        return
    emit(e, "SQUEEZE", [e.t(x)], out=e.out(node.output),
         options=fb.SqueezeOptionsT(squeezeDims=axes))


def _lower_expand_dims(e, node):
    x = node.inputs[0]
    axis = node.attrs["axis"] % (x.type.rank + 1)
    emit(e, "EXPAND_DIMS", [e.t(x), _param(e, axis, "axis")], out=e.out(node.output))


def _lower_tile(e, node):
    emit(e, "TILE", [e.t(node.inputs[0]), _param(e, list(node.attrs["multiples"]), "multiples")],
         out=e.out(node.output))


def _lower_gather_nd(e, node):
    params, indices = node.inputs
    _need(node, indices, {DType.i32, DType.i64}, "GATHER_ND indices")
    emit(e, "GATHER_ND", [e.t(params), e.t(indices)], out=e.out(node.output))


def _lower_scatter_nd_add(e, node):
    """x + SCATTER_ND(indices, updates) (TFLite's SCATTER_ND sums repeated indices)."""
    x, indices, updates = node.inputs
    _need(node, x, {DType.f32, DType.i32, DType.i64}, "SCATTER_ND")
    _need(node, indices, {DType.i32, DType.i64}, "SCATTER_ND indices")
    scattered = emit(e, "SCATTER_ND", [_indices_for_scatter(e, indices), e.t(updates),
                                       _shape_tensor(e, x)],
                     dtype=x.type.dtype, shape=list(x.type.shape), name="scattered")
    emit(e, "ADD", [e.t(x), scattered], out=e.out(node.output), options=fb.AddOptionsT())


def _indices_for_scatter(e, indices) -> int:
    """SCATTER_ND wants its indices in its shape operand's type (int32 here)."""
    if indices.type.dtype == DType.i32:
        return e.t(indices)
    return emit(e, "CAST", [e.t(indices)], dtype=DType.i32, name="indices_i32")


def _shape_tensor(e, x) -> int:
    """x's shape as an int32 tensor: a constant when static, else read with SHAPE."""
    if x.type.is_static:
        return _param(e, list(x.type.shape), "shape")
    return emit(e, "SHAPE", [e.t(x)], dtype=DType.i32, shape=(x.type.rank,),
                options=fb.ShapeOptionsT(outType=fb.TensorType.INT32), name="shape")


def _lower_scatter_nd_update(e, node):
    """TFLite's SCATTER_ND writes into zeros, so the update is x * (1 - hit) + scattered,
    hit being 1 where an index lands (min(count, 1))."""
    x, indices, updates = node.inputs
    _need(node, x, {DType.f32, DType.i32, DType.i64}, "SCATTER_ND")
    _need(node, indices, {DType.i32, DType.i64}, "SCATTER_ND indices")
    dt = x.type.dtype
    shape = _shape_tensor(e, x)
    one = e.const(np.ones((), dt.np), f"{e.prefix}/one")
    if updates.type.is_static:
        ones = e.const(np.ones(updates.type.shape, dt.np), f"{e.prefix}/ones")
    else:
        ushape = emit(e, "SHAPE", [e.t(updates)], dtype=DType.i32, shape=(updates.type.rank,),
                      options=fb.ShapeOptionsT(outType=fb.TensorType.INT32), name="ushape")
        ones = emit(e, "FILL", [ushape, one], dtype=dt, shape=updates.type.shape, name="ones")
    out_shape = list(x.type.shape)
    at = _indices_for_scatter(e, indices)
    scattered = emit(e, "SCATTER_ND", [at, e.t(updates), shape], dtype=dt, shape=out_shape,
                     name="scattered")
    hit = emit(e, "SCATTER_ND", [at, ones, shape], dtype=dt, shape=out_shape, name="hit")
    hit = emit(e, "MINIMUM", [hit, one], name="hit1")
    keep = emit(e, "SUB", [one, hit], options=fb.SubOptionsT(), name="keep")
    kept = emit(e, "MUL", [e.t(x), keep], options=fb.MulOptionsT(), name="kept")
    emit(e, "ADD", [kept, scattered], out=e.out(node.output), options=fb.AddOptionsT())


def _lower_reverse(e, node):
    """One REVERSE_V2 per axis (its kernels before version 3 take a single axis)."""
    x = node.inputs[0]
    _need(node, x, {DType.f32, DType.i32, DType.i64, DType.i8, DType.u8, DType.i16,
                    DType.bool}, "REVERSE_V2")
    axes = sorted({a % x.type.rank for a in node.attrs["axes"]})
    cur, out = e.t(x), e.out(node.output)
    if not axes:
        copy_into(e, cur, out)
    for i, axis in enumerate(axes):
        cur = emit(e, "REVERSE_V2", [cur, _param(e, [axis], f"axis{axis}")],
                   out=out if i == len(axes) - 1 else None, quant=x.quant)


LOWERINGS = {
    "reshape": _lower_reshape, "transpose": _lower_transpose, "concat": _lower_concat,
    "split": _lower_split, "slice": _lower_slice, "strided_slice": _lower_strided_slice,
    "pad": _lower_pad, "gather": _lower_gather, "broadcast_to": _lower_broadcast_to,
    "squeeze": _lower_squeeze, "expand_dims": _lower_expand_dims, "tile": _lower_tile,
    "gather_nd": _lower_gather_nd, "scatter_nd_update": _lower_scatter_nd_update,
    "scatter_nd_add": _lower_scatter_nd_add, "reverse": _lower_reverse,
}
