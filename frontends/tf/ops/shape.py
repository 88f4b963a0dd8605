"""Shape TF ops: Shape/Size/Rank (symbolic on run-time dims), Reshape (with Tensordot's lazy
2-D flatten), Squeeze, ExpandDims, Transpose, Concat, Pack/Unpack, Split, Slice,
StridedSlice, Gather, Tile, BroadcastTo, Fill/ZerosLike/OnesLike (splats), Range, Pad and
ReverseV2."""

from __future__ import annotations

import numpy as np

from ....ir.graph import Value
from ....ir.types import DType
from ..context import Const, Lazy, LiftError, Sym, ir_dtype
from ..shapes import SymbolicError, SymDim, product
from .common import flat_type, node_attr, reshape_to, static_axis
from .quant import reshape_dequantized


def _sym_array(dims, dtype, node) -> Const | Sym:
    """A shape vector: a Const when every dim is static, else a Sym."""
    if all(isinstance(d, int) for d in dims):
        return Const(np.asarray(dims, dtype=dtype).reshape(len(dims)), node)
    arr = np.empty(len(dims), dtype=object)
    arr[:] = dims
    return Sym(arr, dtype)


def _out_type(node, default=DType.i32):
    return ir_dtype(node.attr["out_type"].type) if "out_type" in node.attr else default


def _shape(ctx, node, ins):
    dt = _out_type(node).np
    return [_sym_array(ctx.sym_shape(x), dt, node) for x in ins]


def _size(ctx, node, ins):
    n = product(ctx.sym_shape(ins[0]))
    dt = _out_type(node).np
    if isinstance(n, SymDim):
        arr = np.empty((), dtype=object)
        arr[()] = n
        return [Sym(arr, dt)]
    return [Const(np.asarray(n, dtype=dt), node)]


def _rank(ctx, node, ins):
    return [Const(np.asarray(ctx.type(ins[0]).rank, dtype=np.int32), node)]


def _reshape(ctx, node, ins):
    x, shape = ins
    if isinstance(shape, Value) and shape.const is None:
        # A target computed at run time beyond import-time arithmetic (`seq + 1`).
        dims = [SymDim.of(ctx.fresh_symbol()) for _ in _entries(ctx, shape)]
        return [ctx.dynamic("dynamic_reshape", [x, shape], dims)]
    dims = ctx.dims(shape, "Reshape's target shape")
    if isinstance(x, Lazy) and x.info is not None and x.info[0] == "dequantized_const":
        moved = reshape_dequantized(ctx, x, dims)
        if moved is not None:
            return [moved]
    src = ctx.sym_shape(x)
    if isinstance(x, Lazy) and x.info is not None and x.info[0] == "matmul_flat" \
            and _same_dims(dims, ctx.sym_shape(x.info[1])):
        return [x.info[1]]                     # un-flattening a folded Tensordot: done
    if isinstance(x, Value) and len(src) >= 3 and len(dims) == 2 and \
            _same_dims(dims[1:], src[-1:]) and \
            (dims[0] == -1 or _same_dims(dims[:1], [product(src[:-1])])):
        return [_lazy_flatten(ctx, x, src)]
    return [reshape_to(ctx, x, dims)]


def _same_dims(a, b) -> bool:
    return len(a) == len(b) and all(x == y for x, y in zip(a, b))


# Keras' Dense on a rank > 2 input is TF's Tensordot: Reshape to 2-D, MatMul, Reshape back.
# The IR matmul broadcasts over leading dims, so that is one matmul on the original tensor;
# the 2-D forms are only built (as reshapes) if something else uses them.

def _lazy_flatten(ctx, x, src):
    flat = [product(src[:-1]), src[-1]]
    return Lazy(lambda c: reshape_to(c, x, flat), flat_type(ctx, x, flat), flat,
                ctx.scope, ctx.loc, ("flatten", x))


def _squeeze(ctx, node, ins):
    axes = list(node.attr["squeeze_dims"].list.i) if "squeeze_dims" in node.attr else []
    return ctx.emit("squeeze", ins[:1], {"axes": axes})


def _expand_dims(ctx, node, ins):
    return ctx.emit("expand_dims", ins[:1], {"axis": static_axis(ctx, ins[1], "ExpandDims axis")})


def _transpose(ctx, node, ins):
    perm = [int(p) for p in ctx.static(ins[1], "Transpose perm").ravel()]
    if perm == list(range(len(perm))):
        return ins[:1]
    return ctx.emit("transpose", ins[:1], {"perm": perm})


def _concat(ctx, node, ins):
    if node.op == "Concat":                 # v1: axis first
        axis, values = ins[0], ins[1:]
    else:
        axis, values = ins[-1], ins[:-1]
    if len(values) == 1:
        return values
    return ctx.emit("concat", values, {"axis": static_axis(ctx, axis, "concat axis")})


def _pack(ctx, node, ins):
    axis = int(node_attr(node, "axis", 0))
    rank = ctx.type(ins[0]).rank
    axis = axis + rank + 1 if axis < 0 else axis
    parts = [ctx.emit1("expand_dims", [x], {"axis": axis}) for x in ins]
    return parts if len(parts) == 1 else ctx.emit("concat", parts, {"axis": axis})


def _unpack(ctx, node, ins):
    num = int(node_attr(node, "num"))
    axis = int(node_attr(node, "axis", 0))
    pieces = ctx.emit("split", ins[:1], {"axis": axis, "sizes": [1] * num})
    return [ctx.emit1("squeeze", [p], {"axes": [axis]}) for p in pieces]


def _split(ctx, node, ins):
    axis_e, x = ins
    num = int(node_attr(node, "num_split"))
    axis = static_axis(ctx, axis_e, "Split axis")
    dim = ctx.type(x).shape[axis]
    if not isinstance(dim, int):
        raise LiftError(f"Split of the run-time dim {dim} into {num} pieces is not supported")
    if dim % num:
        raise LiftError(f"Split of a dim of size {dim} into {num} equal pieces")
    return ctx.emit("split", [x], {"axis": axis, "sizes": [dim // num] * num})


def _split_v(ctx, node, ins):
    x, sizes, axis_e = ins
    sizes = [int(s) for s in ctx.static(sizes, "SplitV sizes").ravel()]
    return ctx.emit("split", [x], {"axis": static_axis(ctx, axis_e, "SplitV axis"), "sizes": sizes})


def _slice(ctx, node, ins):
    x, begin, size = ins
    b, n = ctx.const(begin), ctx.const(size)
    if b is not None and n is not None:
        return ctx.emit("slice", [x], {"begin": [int(v) for v in np.ravel(b)],
                                       "size": [int(v) for v in np.ravel(n)]})
    # Sizes known only at run time (a position-embedding slice of `seq` rows).
    out = []
    for d, b0, n0 in zip(ctx.sym_shape(x), _entries(ctx, begin), _entries(ctx, size)):
        if n0 is not None and n0 != -1:
            out.append(n0)
        elif n0 == -1 and b0 == 0:
            out.append(d)
        elif n0 == -1 and isinstance(d, int) and isinstance(b0, int):
            out.append(d - b0)
        else:
            out.append(SymDim.of(ctx.fresh_symbol()))
    return [ctx.dynamic("dynamic_slice", [x, ctx.value(begin), ctx.value(size)], out)]


def _entries(ctx, e) -> list:
    """The entries of a 1-D integer operand as ints and SymDims, None where only the run
    time knows them (a computed tensor)."""
    if isinstance(e, Sym):
        return list(e.array.ravel())
    c = ctx.const(e)
    if c is not None:
        return [int(v) for v in np.ravel(c)]
    n = ctx.type(e).shape[0] if ctx.type(e).rank == 1 else None
    if not isinstance(n, int):
        raise LiftError(f"a size operand of type {ctx.type(e)} must be 1-D with a static "
                        f"length")
    return [None] * n


def _strided_slice(ctx, node, ins):
    x, begin, end, strides = ins
    attrs = {k: int(node_attr(node, k, 0)) for k in
             ("begin_mask", "end_mask", "ellipsis_mask", "new_axis_mask", "shrink_axis_mask")}
    if all(ctx.const(e) is not None for e in (begin, end, strides)):
        for name, e in (("begin", begin), ("end", end), ("strides", strides)):
            attrs[name] = [int(v) for v in np.ravel(ctx.const(e))]
        return ctx.emit("strided_slice", [x], attrs)
    # Indices known only at run time (x[:, :seq - 1], x[-seq:]): the dims the masks keep
    # whole stay x's own, the rest are new run-time sizes.
    v = ctx.emit1("dynamic_strided_slice", [x, begin, end, strides], attrs)
    if isinstance(v, Value):
        src = ctx.sym_shape(x)
        names = {d: i for i, d in enumerate(ctx.type(x).shape) if isinstance(d, str)}
        dims = [src[names[d]] if isinstance(d, str) and d != "?" and d in names
                else d if isinstance(d, int) else SymDim.of(ctx.fresh_symbol())
                for d in v.type.shape]
        ctx.set_sym_shape(v, dims)
    return [v]


def _gather(ctx, node, ins):
    params, indices = ins[0], ins[1]
    axis = static_axis(ctx, ins[2], "GatherV2 axis") if len(ins) > 2 else 0
    return ctx.emit("gather", [params, indices],
                    {"axis": axis, "batch_dims": int(node_attr(node, "batch_dims", 0))})


def _gather_nd(ctx, node, ins):
    if int(node_attr(node, "batch_dims", 0)):
        raise LiftError("GatherNd with batch_dims is not supported")
    return ctx.emit("gather_nd", ins[:2])


def _tile(ctx, node, ins):
    mult = ctx.const(ins[1])
    if mult is not None:
        return ctx.emit("tile", ins[:1], {"multiples": [int(m) for m in np.ravel(mult)]})
    # Multiples known only at run time (ViT's class token tiled to the batch).
    out = [_times(ctx, d, m) for d, m in zip(ctx.sym_shape(ins[0]), _entries(ctx, ins[1]))]
    return [ctx.dynamic("dynamic_tile", [ins[0], ctx.value(ins[1])], out)]


def _times(ctx, d, m):
    """d * m for sizes that may be run-time; a fresh symbol where that is not a monomial."""
    if m is not None:
        if d == 1:
            return m
        if m == 1:
            return d
        try:
            return product([d, m])
        except SymbolicError:
            pass
    return SymDim.of(ctx.fresh_symbol())


def _broadcast_to(ctx, node, ins):
    dims = _entries(ctx, ins[1])
    if all(isinstance(d, int) for d in dims):
        return ctx.emit("broadcast_to", ins[:1], {"shape": dims})
    dims = [SymDim.of(ctx.fresh_symbol()) if d is None else d for d in dims]
    return [ctx.dynamic("dynamic_broadcast_to", [ins[0], ctx.value(ins[1])], dims)]


def _broadcast_args(ctx, node, ins):
    """The broadcast of two shapes: folded when both are known, else padded to one length
    with leading 1s and taken elementwise as the larger (for shapes that broadcast, each pair
    of sizes is equal or holds a 1; a 0-size dim against 1 is the exception)."""
    a, b = (ctx.const(e) for e in ins)
    if a is not None and b is not None:
        shape = np.broadcast_shapes(tuple(int(d) for d in a), tuple(int(d) for d in b))
        return [Const(np.asarray(shape, dtype=a.dtype), node)]
    lengths = [ctx.type(e).shape[0] for e in ins]
    if not all(isinstance(n, int) for n in lengths):
        raise LiftError("BroadcastArgs of shapes whose lengths are only known at run time")
    rank = max(lengths)
    padded = []
    for e, n in zip(ins, lengths):
        v = ctx.value(e)
        if n < rank:
            ones = Const(np.ones(rank - n, dtype=ctx.type(e).dtype.np), node)
            v = ctx.emit1("concat", [ones, v], {"axis": 0})
        padded.append(v)
    return ctx.emit("maximum", padded)


def _roll(ctx, node, ins):
    """Roll by constant shifts: per axis, the last `shift` elements moved to the front (a
    slice pair and a concat)."""
    x = ins[0]
    shifts = np.asarray(ctx.static(ins[1], "Roll shift")).reshape(-1)
    axes = np.asarray(ctx.static(ins[2], "Roll axis")).reshape(-1)
    if shifts.size != axes.size:
        shifts = np.broadcast_to(shifts, axes.shape)
    rank = ctx.type(x).rank
    for shift, axis in zip(shifts.tolist(), axes.tolist()):
        axis %= rank
        size = ctx.type(x).shape[axis]
        if not isinstance(size, int):
            raise LiftError(f"Roll along a run-time size ({ctx.type(x)}, axis {axis})")
        k = shift % size if size else 0
        if k == 0:
            continue
        begin, length = [0] * rank, [-1] * rank
        length[axis] = size - k
        head = ctx.emit1("slice", [x], {"begin": begin, "size": list(length)})
        begin[axis], length[axis] = size - k, k
        tail = ctx.emit1("slice", [x], {"begin": list(begin), "size": list(length)})
        x = ctx.emit1("concat", [tail, head], {"axis": axis})
    return [x]


def _space_depth(to_depth: bool):
    """SpaceToDepth / DepthToSpace (NHWC) as reshape, transpose, reshape."""
    def lower(ctx, node, ins):
        if node_attr(node, "data_format", "NHWC") != "NHWC":
            raise LiftError(f"{node.op} supports data_format NHWC only")
        b = int(node_attr(node, "block_size"))
        x = ins[0]
        _, h, w, c = ctx.type(x).shape
        if not all(isinstance(d, int) for d in (h, w, c)):
            raise LiftError(f"{node.op} needs static height, width and channels")
        if to_depth:
            x = ctx.emit1("reshape", [x], {"shape": [-1, h // b, b, w // b, b, c]})
            x = ctx.emit1("transpose", [x], {"perm": [0, 1, 3, 2, 4, 5]})
            return ctx.emit("reshape", [x], {"shape": [-1, h // b, w // b, c * b * b]})
        x = ctx.emit1("reshape", [x], {"shape": [-1, h, w, b, b, c // (b * b)]})
        x = ctx.emit1("transpose", [x], {"perm": [0, 1, 3, 2, 4, 5]})
        return ctx.emit("reshape", [x], {"shape": [-1, h * b, w * b, c // (b * b)]})
    return lower


def _matrix_dims(ctx, node, x, k_entry) -> tuple[int, int, int]:
    rows, cols = ctx.type(x).shape[-2:]
    if not (isinstance(rows, int) and isinstance(cols, int)):
        raise LiftError(f"{node.op} needs static matrix dims, got {ctx.type(x)}")
    k = np.asarray(ctx.static(k_entry, f"{node.op} k")).reshape(-1)
    if k.size != 1:
        raise LiftError(f"{node.op} with a band of diagonals (k = {k.tolist()}) is not supported")
    return rows, cols, int(k[0])


def _diag_len(rows: int, cols: int, k: int) -> int:
    return max(0, min(rows, cols - k) if k >= 0 else min(rows + k, cols))


def _matrix_diag_part(ctx, node, ins):
    """Diagonal k of the innermost matrices: on the flattened [..., R*C] matrix it starts at
    k (or -k*C) and steps by C + 1."""
    x = ins[0]
    rows, cols, k = _matrix_dims(ctx, node, x, ins[1])
    n = _diag_len(rows, cols, k)
    rank = ctx.type(x).rank
    lead = [d if isinstance(d, int) else -1 for d in ctx.type(x).shape[:-2]]
    if lead.count(-1) > 1:
        raise LiftError(f"{node.op} needs at most one run-time batch dim, got {ctx.type(x)}")
    flat = ctx.emit1("reshape", [x], {"shape": lead + [rows * cols]})
    start = k if k >= 0 else -k * cols
    lead = len(lead)
    return ctx.emit("strided_slice", [flat], {
        "begin": [0] * lead + [start], "end": [0] * lead + [start + (n - 1) * (cols + 1) + 1],
        "strides": [1] * lead + [cols + 1], "begin_mask": (1 << lead) - 1,
        "end_mask": (1 << lead) - 1})


def _matrix_set_diag(ctx, node, ins):
    """x with diagonal k replaced: x * (1 - E_k) + D, D the diagonal spread over the rows
    (k >= 0) or the columns (k < 0) of E_k = eye(R, C, k)."""
    x, diag = ins[0], ins[1]
    rows, cols, k = _matrix_dims(ctx, node, x, ins[2])
    n = _diag_len(rows, cols, k)
    dtype = ctx.type(x).dtype.np
    eye = np.eye(rows, cols, k, dtype=dtype)
    along_rows = k >= 0
    full = rows if along_rows else cols
    if n < full:
        rank = ctx.type(diag).rank
        diag = ctx.emit1("pad", [diag], {"pads": [[0, 0]] * (rank - 1) + [[0, full - n]]})
    spread = ctx.emit1("expand_dims", [diag], {"axis": -1 if along_rows else -2})
    keep = ctx.emit1("mul", [x, Const((1 - eye).astype(dtype), node)])
    return ctx.emit("add", [keep, ctx.emit1("mul", [spread, Const(eye, node)])])


def _scatter_nd(ctx, node, ins):
    """ScatterNd(indices, updates, shape): the updates summed into zeros of `shape`."""
    indices, updates, shape = ins
    dims = [int(d) for d in np.asarray(ctx.static(shape, "ScatterNd shape")).reshape(-1)]
    zeros = Const(np.zeros(dims, dtype=ctx.type(updates).dtype.np), node)
    return ctx.emit("scatter_nd_add", [zeros, indices, updates])


_SEGMENT = {"UnsortedSegmentSum": ("reduce_sum", lambda info: 0),
            "UnsortedSegmentProd": ("reduce_prod", lambda info: 1),
            "UnsortedSegmentMax": ("reduce_max", lambda info: info.min),
            "UnsortedSegmentMin": ("reduce_min", lambda info: info.max)}


def _unsorted_segment(ctx, node, ins):
    """Unsorted segment reductions with 1-D segment ids and a constant segment count, as a
    masked reduction over [N, S, ...] (memory N * S * features: fine for the sizes models
    use). An empty segment gets the reduction's identity, as in TF: 0, 1, the dtype's
    lowest or highest value; negative ids are dropped."""
    data, ids, count = ins
    if ctx.type(ids).rank != 1:
        raise LiftError(f"{node.op} with {ctx.type(ids).rank}-D segment ids is not supported")
    segments = int(np.asarray(ctx.static(count, f"{node.op} num_segments")).reshape(-1)[0])
    reduce_op, identity = _SEGMENT[node.op]
    dt = ctx.type(data).dtype.np
    info = np.finfo(dt) if np.dtype(dt).kind == "f" else np.iinfo(dt)
    rank = ctx.type(data).rank
    positions = Const(np.arange(segments, dtype=ctx.type(ids).dtype.np), node)
    hit = ctx.emit1("equal", [ctx.emit1("expand_dims", [ids], {"axis": 1}), positions])
    hit = ctx.emit1("reshape", [hit], {"shape": [-1, segments] + [1] * (rank - 1)})
    spread = ctx.emit1("expand_dims", [data], {"axis": 1})
    masked = ctx.emit1("where", [hit, spread, Const(np.asarray(identity(info), dt), node)])
    return ctx.emit(reduce_op, [masked], {"axes": [0], "keepdims": False})


def _filled(node, dims, value, dtype):
    """np.full over `dims`; run-time dims become 1 and the result a splat (see Const)."""
    shape = [1 if isinstance(d, SymDim) else int(d) for d in dims]
    full = list(dims) if any(isinstance(d, SymDim) for d in dims) else None
    return Const(np.full(shape, value, dtype=dtype), node, full=full)


def _fill(ctx, node, ins):
    dims = ctx.dims(ins[0], "Fill dims")
    value = np.asarray(ctx.static(ins[1], "Fill value"))
    return [_filled(node, dims, value, value.dtype)]


def _like(fill):
    def lower(ctx, node, ins):
        return [_filled(node, ctx.sym_shape(ins[0]), fill, ctx.type(ins[0]).dtype.np)]
    return lower


def _range(ctx, node, ins):
    consts = [ctx.const(e) for e in ins]
    dt = ir_dtype(node.attr["Tidx"].type).np if "Tidx" in node.attr else None
    if all(c is not None for c in consts):
        start, limit, delta = consts
        return [Const(np.arange(start, limit, delta).astype(dt or start.dtype), node)]
    # A run-time bound (`range(seq)` for positions): the IR's range op. Its length is the
    # bound itself when counting 0, 1, ... up to it.
    start, limit, delta = consts
    length = None
    if start is not None and delta is not None and int(start) == 0 and int(delta) == 1 \
            and isinstance(ins[1], Sym) and ins[1].array.size == 1:
        length = ins[1].array.ravel()[0]
    dtype = DType.from_numpy(dt) if dt is not None else ctx.type(ins[0]).dtype
    scalars = []
    for e in ins:
        v = ctx.value(e)
        if v.type.rank:
            v = ctx.emit1("reshape", [v], {"shape": []})
        if v.type.dtype != dtype:
            v = ctx.emit1("cast", [v], {"to": dtype})
        scalars.append(v)
    dims = [length if length is not None else SymDim.of(ctx.fresh_symbol())]
    return [ctx.dynamic("range", scalars, dims)]


def _pad(ctx, node, ins):
    x, pads = ins[0], ctx.const(ins[1])
    attrs = {}
    if node.op == "MirrorPad":
        attrs["mode"] = node_attr(node, "mode").lower()
    elif len(ins) > 2:
        attrs["value"] = float(np.asarray(ctx.static(ins[2], "PadV2 value")).ravel()[0])
    if pads is not None:
        attrs["pads"] = [[int(a), int(b)] for a, b in np.asarray(pads).reshape(-1, 2)]
        return ctx.emit("pad", [x], attrs)
    # Paddings computed at run time (a prefix padded up to a run-time length): a dim padded
    # by known zeros keeps its size.
    flat = _entries(ctx, ctx.emit1("reshape", [ins[1]], {"shape": [-1]}))
    dims = [d if flat[2 * i] == 0 and flat[2 * i + 1] == 0 else SymDim.of(ctx.fresh_symbol())
            for i, d in enumerate(ctx.sym_shape(x))]
    return [ctx.dynamic("dynamic_pad", [x, ins[1]], dims, attrs)]


def _reverse(ctx, node, ins):
    """ReverseV2: the IR's reverse (TFLite REVERSE_V2), run-time dims included."""
    x, axes = ins
    rank = ctx.type(x).rank
    axes = sorted({int(a) % rank for a in np.ravel(ctx.static(axes, "ReverseV2 axes"))})
    if not axes:
        return [x]
    dims = ctx.sym_shape(x)
    y = ctx.emit1("reverse", [x], {"axes": axes})
    ctx.set_sym_shape(y, dims)
    return [y]


def _where(ctx, node, ins):
    """tf.where(x) with one operand: the coordinates of x's nonzero elements, as many rows as
    the data has (a run-time size)."""
    return ctx.emit("nonzero", ins)


def _broadcast_gradient_args(ctx, node, ins):
    """The axes along which each of two broadcast operands' gradients is summed (what
    tf.GradientTape builds, e.g. for ops.jvp), computed at import time from the shapes: an
    axis where an operand has 1 (or nothing) and the other does not. A run-time size facing 1
    counts as not 1: if it is 1 at run time, the sum over that axis is of one element, the
    same result."""
    s0, s1 = (ctx.dims(e, "BroadcastGradientArgs shape") for e in ins)
    n = max(len(s0), len(s1))
    s0, s1 = [1] * (n - len(s0)) + s0, [1] * (n - len(s1)) + s1
    r0, r1 = [], []
    for axis, (a, b) in enumerate(zip(s0, s1)):
        if a == b:
            if isinstance(a, int) and a == 1:
                r0.append(axis)
                r1.append(axis)
        elif isinstance(a, int) and a == 1:
            r0.append(axis)
        elif isinstance(b, int) and b == 1:
            r1.append(axis)
        elif not (isinstance(a, int) and isinstance(b, int)):
            raise LiftError(f"BroadcastGradientArgs: sizes {a} and {b} of axis {axis} may or "
                            f"may not be equal at run time")
        else:
            raise LiftError(f"BroadcastGradientArgs: shapes {s0} and {s1} do not broadcast")
    dtype = ctx.type(ins[0]).dtype.np
    return [Const(np.asarray(r, dtype), node) for r in (r0, r1)]


TABLE = {
    "BroadcastGradientArgs": _broadcast_gradient_args,
    "Where": _where,
    "Shape": _shape, "ShapeN": _shape, "Size": _size, "Rank": _rank, "Reshape": _reshape,
    "Squeeze": _squeeze, "ExpandDims": _expand_dims, "Transpose": _transpose,
    "ConcatV2": _concat, "Concat": _concat, "Pack": _pack, "Unpack": _unpack, "Split": _split,
    "SplitV": _split_v, "Slice": _slice, "StridedSlice": _strided_slice, "GatherV2": _gather,
    "GatherNd": _gather_nd,
    "TensorScatterUpdate": lambda ctx, node, ins: ctx.emit("scatter_nd_update", ins[:3]),
    "TensorScatterAdd": lambda ctx, node, ins: ctx.emit("scatter_nd_add", ins[:3]),
    "ScatterNd": _scatter_nd, **{op: _unsorted_segment for op in _SEGMENT},
    "Tile": _tile, "BroadcastTo": _broadcast_to, "BroadcastArgs": _broadcast_args,
    "Roll": _roll, "MatrixDiagPartV3": _matrix_diag_part, "MatrixSetDiagV3": _matrix_set_diag, "SpaceToDepth": _space_depth(True), "DepthToSpace": _space_depth(False), "Fill": _fill, "ZerosLike": _like(0),
    "OnesLike": _like(1), "Range": _range, "Pad": _pad, "PadV2": _pad, "MirrorPad": _pad,
    "ReverseV2": _reverse,
}
