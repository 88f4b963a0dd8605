"""Lowerings of the run-time shape ops (ir/ops/dynamic.py): shape_of -> SHAPE, and the
dynamic reshape / broadcast_to / tile / slice / range -> RESHAPE / BROADCAST_TO / TILE / SLICE
/ RANGE with their sizes as tensors, and nonzero -> WHERE. TFLite marks such results dynamic and sizes them when
the interpreter runs (after `resize_tensor_input` or through a signature runner), which is
what keeps one `.tflite` usable at every batch and sequence length."""

from __future__ import annotations

import numpy as np
from ai_edge_litert import schema_py_generated as fb

from ....ir.types import DType
from .common import TFL_TYPES, _need, emit

_SIZES = frozenset({DType.i32, DType.i64})


def _lower_shape_of(e, node):
    emit(e, "SHAPE", [e.t(node.inputs[0])], out=e.out(node.output),
         options=fb.ShapeOptionsT(outType=TFL_TYPES[node.attrs["dtype"]]))


def _lower_dynamic_reshape(e, node):
    x, shape = node.inputs
    # RESHAPE reads the shape tensor only when it is not constant; int32 is what its kernel
    # takes (GetOutputShape), so wider shapes are cast first.
    s = e.t(shape)
    if shape.type.dtype != DType.i32:
        s = emit(e, "CAST", [s], dtype=DType.i32, shape=list(shape.type.shape),
                 options=fb.CastOptionsT(inDataType=TFL_TYPES[shape.type.dtype],
                                         outDataType=TFL_TYPES[DType.i32]))
    emit(e, "RESHAPE", [e.t(x), s], out=e.out(node.output))


def _sized(code):
    """An op whose first operand is the data and whose others are integer size tensors."""
    def lower(e, node):
        for v in node.inputs[1:]:
            _need(node, v, _SIZES, f"{code} sizes")
        emit(e, code, [e.t(v) for v in node.inputs], out=e.out(node.output))
    return lower


def _lower_range(e, node):
    _need(node, node.inputs[0], frozenset({DType.i32, DType.i64, DType.f32}), "RANGE")
    emit(e, "RANGE", [e.t(v) for v in node.inputs], out=e.out(node.output))


def _lower_dynamic_strided_slice(e, node):
    for v in node.inputs[1:]:
        _need(node, v, _SIZES, "STRIDED_SLICE indices")
    a = node.attrs
    emit(e, "STRIDED_SLICE", [e.t(v) for v in node.inputs], out=e.out(node.output),
         options=fb.StridedSliceOptionsT(
             beginMask=a["begin_mask"], endMask=a["end_mask"], ellipsisMask=a["ellipsis_mask"],
             newAxisMask=a["new_axis_mask"], shrinkAxisMask=a["shrink_axis_mask"]))


def _lower_dynamic_pad(e, node):
    x, pads = node.inputs
    _need(node, pads, _SIZES, "PAD paddings")
    a = node.attrs
    out = e.out(node.output)
    if a["mode"] != "constant":
        mode = fb.MirrorPadMode.REFLECT if a["mode"] == "reflect" else fb.MirrorPadMode.SYMMETRIC
        emit(e, "MIRROR_PAD", [e.t(x), e.t(pads)], out=out,
             options=fb.MirrorPadOptionsT(mode=mode))
    elif a["value"] == 0:
        emit(e, "PAD", [e.t(x), e.t(pads)], out=out)
    else:
        fill = e.const(np.asarray(a["value"]).astype(x.type.dtype.np), f"{e.prefix}/pad_value")
        emit(e, "PADV2", [e.t(x), e.t(pads), fill], out=out)


def _lower_nonzero(e, node):
    # WHERE's kernel reads a bool condition; other dtypes compare with zero first.
    (x,) = node.inputs
    cond = e.t(x)
    if x.type.dtype != DType.bool:
        zero = e.const(np.zeros((), x.type.dtype.np), f"{e.prefix}/zero")
        cond = emit(e, "NOT_EQUAL", [cond, zero], dtype=DType.bool)
    emit(e, "WHERE", [cond], out=e.out(node.output))


LOWERINGS = {
    "shape_of": _lower_shape_of,
    "dynamic_reshape": _lower_dynamic_reshape,
    "dynamic_broadcast_to": _sized("BROADCAST_TO"),
    "dynamic_tile": _sized("TILE"),
    "dynamic_slice": _sized("SLICE"),
    "dynamic_strided_slice": _lower_dynamic_strided_slice,
    "dynamic_pad": _lower_dynamic_pad,
    "range": _lower_range,
    "nonzero": _lower_nonzero,
}
