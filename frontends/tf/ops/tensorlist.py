"""TensorList TF ops (what `tf.TensorArray` becomes, and so what Keras RNN layers read their
inputs from and write their outputs into): a list of known length and element shape is the
plain tensor [length, *element] (`context.TensorList`), so

- TensorListFromTensor is the tensor itself, TensorListStack the tensor it holds;
- TensorListReserve is all zeros, built when first used (its element shape may be left open
  until an item is written);
- TensorListGetItem is a `gather` of one row at the (run-time) index;
- TensorListSetItem is a `dynamic_update_slice` of a one-row update at [index, 0, ...];
- TensorListLength and TensorListElementShape are sizes (symbolic where run-time).

Lists that grow (PushBack, a TensorArray with dynamic_size) have no fixed length and are
not supported."""

from __future__ import annotations

import numpy as np

from ....ir.types import DType
from ..context import Const, LiftError, Sym, TensorList, fmt_dims, ir_dtype
from ..shapes import SymDim
from .common import node_attr


def _list(e) -> TensorList:
    if not isinstance(e, TensorList):
        raise LiftError("a TensorList op reads a tensor that is not a TensorList")
    return e


def _fmt(dims) -> str:
    return "<unknown rank>" if dims is None else fmt_dims(["?" if d is None else d for d in dims])


def _element_dims(ctx, e) -> list | None:
    """An element_shape operand as dims, None for an unknown dim (-1); None for an unknown
    rank (a scalar -1)."""
    if isinstance(e, Sym):
        dims = list(e.array.ravel())
        return None if e.array.ndim == 0 else [None if d == -1 else d for d in dims]
    a = np.asarray(ctx.static(e, "a TensorList element shape"))
    if a.ndim == 0:
        return None
    return [None if int(d) == -1 else int(d) for d in a.ravel()]


def _length_dim(ctx, e):
    """A num_elements operand as a dim, None when only the run time knows it."""
    if isinstance(e, Sym) and e.array.size == 1:
        return e.array.ravel()[0]
    c = ctx.const(e)
    if c is None:
        return None
    n = int(np.asarray(c).ravel()[0])
    if n < 0:
        raise LiftError("a TensorList without a fixed length (num_elements -1) is not supported")
    return n


def merge_elem(have: list | None, got: list, what: str = "item") -> list:
    """The element shape `have` (None entries open) completed by an `got` of the list."""
    if have is None:
        return list(got)
    if len(have) != len(got):
        raise LiftError(f"a TensorList of element shape {_fmt(have)} gets an {what} of shape "
                        f"{fmt_dims(got)}")
    out = []
    for h, g in zip(have, got):
        if h is not None and isinstance(h, int) and isinstance(g, int) and h != g:
            raise LiftError(f"a TensorList of element shape {_fmt(have)} gets an {what} of "
                            f"shape {fmt_dims(got)}")
        out.append(g if h is None else h)
    return out


def zeros(ctx, dims: list, dtype: DType, length_entry=None):
    """Zeros of shape `dims` (ints and SymDims; dims[0] None: the run-time size held by the
    scalar `length_entry`)."""
    if dims and dims[0] is None:
        n = ctx.value(length_entry)
        if n.type.dtype != DType.i32:
            n = ctx.emit1("cast", [n], {"to": DType.i32})
        n = ctx.emit1("reshape", [n], {"shape": [1]})
        shape = ctx.emit1("concat", [n, ctx.shape_value(dims[1:])], {"axis": 0})
        out = [SymDim.of(ctx.fresh_symbol())] + list(dims[1:])
        return ctx.dynamic("dynamic_broadcast_to", [Const(np.zeros((), dtype.np), ctx.node),
                                                    shape], out)
    if not any(isinstance(d, SymDim) for d in dims):
        return Const(np.zeros([int(d) for d in dims], dtype.np), ctx.node)
    # A splat (see Const): built to its run-time shape where it is used as a tensor.
    return Const(np.zeros([1] * len(dims), dtype.np), ctx.node, full=list(dims))


def list_tensor(ctx, tl: TensorList):
    """The tensor [length, *element] a TensorList holds (zeros when no element is set)."""
    if tl.tensor is not None:
        return tl.tensor
    if tl.open:
        raise LiftError(f"a TensorList of element shape {_fmt(tl.elem)} is read before any "
                        f"item fixes its element shape")
    return zeros(ctx, [tl.length] + tl.elem, tl.dtype, tl.length_entry)


def _dtype(node, key="element_dtype"):
    return ir_dtype(node.attr[key].type, "a TensorList element") if key in node.attr else None


def _reserve(ctx, node, ins):
    shape, num = ins
    dtype = _dtype(node)
    if dtype is None:
        raise LiftError("TensorListReserve without element_dtype")
    length = _length_dim(ctx, num)
    return [TensorList(None, length, _element_dims(ctx, shape), dtype,
                       length_entry=num if length is None else None)]


def _from_tensor(ctx, node, ins):
    x = ins[0]
    dims = ctx.sym_shape(x)
    if not dims:
        raise LiftError("TensorListFromTensor of a scalar")
    return [TensorList(x, dims[0], dims[1:], ctx.type(x).dtype)]


def _get_item(ctx, node, ins):
    tl, index = _list(ins[0]), ins[1]
    if tl.tensor is None and not tl.open:       # never written: a zero element
        return [zeros(ctx, tl.elem, tl.dtype)]
    x = list_tensor(ctx, tl)
    out = ctx.emit1("gather", [x, index], {"axis": 0})
    if ctx.type(index).rank == 0:
        ctx.set_sym_shape(out, ctx.sym_shape(x)[1:])
    return [out]


def _set_item(ctx, node, ins):
    tl, index, item = _list(ins[0]), ins[1], ins[2]
    if node_attr(node, "resize_if_index_out_of_bounds", False):
        raise LiftError("TensorListSetItem that grows the list (a TensorArray with "
                        "dynamic_size=True) is not supported: the list needs a fixed length")
    item_dims = ctx.sym_shape(item)
    if tl.open:
        elem = merge_elem(tl.elem, item_dims)
        tl = TensorList(None, tl.length, elem, tl.dtype, tl.length_entry, tl.learn)
        if tl.learn is not None:
            # A loop body writing a list whose element shape was open: the loop lifts its
            # body again with the list as a tensor of the shape just learnt.
            tl.learn(elem)
            return [tl]
    x = list_tensor(ctx, tl)
    rank = ctx.type(x).rank
    if len(item_dims) != rank - 1:
        raise LiftError(f"TensorListSetItem of an item of shape {fmt_dims(item_dims)} into a "
                        f"list of shape {fmt_dims(ctx.sym_shape(x))}")
    i = index
    if ctx.type(i).dtype != DType.i32:
        i = ctx.emit1("cast", [i], {"to": DType.i32})
    if ctx.type(i).rank != 1:
        i = ctx.emit1("reshape", [i], {"shape": [1]})
    start = ctx.emit1("concat", [i, Const(np.zeros(rank - 1, np.int32), node)], {"axis": 0})
    update = ctx.emit1("expand_dims", [item], {"axis": 0})
    out = ctx.emit1("dynamic_update_slice", [x, update, start])
    dims = ctx.sym_shape(x)
    ctx.set_sym_shape(out, dims)
    return [TensorList(out, dims[0], dims[1:], tl.dtype)]


def _stack(ctx, node, ins):
    tl = _list(ins[0])
    if tl.open and len(ins) > 1:
        elem = merge_elem(tl.elem, _element_dims(ctx, ins[1]) or [], "element shape")
        tl = TensorList(None, tl.length, elem, tl.dtype, tl.length_entry)
    return [list_tensor(ctx, tl)]


def _sizes(dims, dtype, node):
    if all(isinstance(d, int) for d in dims):
        return Const(np.asarray(dims, dtype=dtype).reshape(np.shape(dims)), node)
    arr = np.empty(np.shape(dims), dtype=object)
    if arr.ndim:
        arr[:] = list(dims)
    else:
        arr[()] = dims
    return Sym(arr, dtype)


def _length(ctx, node, ins):
    tl = _list(ins[0])
    n = ctx.sym_shape(tl.tensor)[0] if tl.tensor is not None else tl.length
    if n is None:
        return [ctx.emit1("cast", [ctx.emit1("reshape", [tl.length_entry], {"shape": []})],
                          {"to": DType.i32})]
    return [_sizes(n, np.int32, node)]


def _element_shape(ctx, node, ins):
    tl = _list(ins[0])
    dt = ir_dtype(node.attr["shape_type"].type).np if "shape_type" in node.attr else np.int32
    elem = ctx.sym_shape(tl.tensor)[1:] if tl.tensor is not None else tl.elem
    if elem is None:
        return [Const(np.asarray(-1, dt), node)]
    return [_sizes([-1 if d is None else d for d in elem], dt, node)]


TABLE = {
    "TensorListReserve": _reserve, "TensorListFromTensor": _from_tensor,
    "TensorListGetItem": _get_item, "TensorListSetItem": _set_item,
    "TensorListStack": _stack, "TensorListLength": _length,
    "TensorListElementShape": _element_shape,
}
