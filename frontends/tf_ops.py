"""TF op -> IR lowering table used by `tf_graph`: one small function per TF op type.

Each function takes the lifter (`ctx`, see `tf_graph.Lifter`), the TF node and its input
entries, and returns one entry per TF output. `ctx.emit` adds an IR node, folds it when all
inputs are constants, or evaluates it on symbolic shapes; so the same lowering serves weights,
shape arithmetic and activations. Ops lower to the most specific IR op (MatMul -> matmul,
FusedBatchNormV3 -> batch_norm); Keras' decomposed arithmetic (batch-norm as mul/add, gelu as
erfc math) stays decomposed for the canonicalize and fusion passes.
"""

from __future__ import annotations

import string

import numpy as np

from ..ir.graph import Value
from ..ir.ops import get_op
from ..ir.types import DType, QuantParams, TensorType
from .tf_graph import Const, Dead, Lazy, LiftError, Pending, Sym, TFNode, ir_dtype
from .tf_shapes import SymbolicError, SymDim, product, to_ir_dim

_REQUIRED = object()


# -- attribute helpers -----------------------------------------------------------------------

def _attr(node: TFNode, name: str, default=_REQUIRED):
    if name not in node.attr:
        if default is _REQUIRED:
            raise LiftError(f"{node.op} is missing attribute '{name}'")
        return default
    v = node.attr[name]
    kind = v.WhichOneof("value")
    if kind == "s":
        return v.s.decode()
    if kind == "list":
        return list(v.list.i) or [s.decode() for s in v.list.s] or list(v.list.f)
    return getattr(v, kind) if kind else default


def _hw(values, what: str, node: TFNode) -> tuple[int, int]:
    """(h, w) of an NHWC 4-vector attribute whose N and C entries must be 1."""
    if len(values) == 2:
        return tuple(values)
    if len(values) != 4 or values[0] != 1 or values[3] != 1:
        raise LiftError(f"{node.op} {what} {list(values)} is not of the form [1, h, w, 1]")
    return values[1], values[2]


def _require_nhwc(node: TFNode) -> None:
    fmt = _attr(node, "data_format", "NHWC")
    if fmt not in ("NHWC", "NWC"):
        raise LiftError(f"{node.op} with data_format {fmt} is not supported (only NHWC; the "
                        f"IR is NHWC)")


def _padding(node: TFNode):
    pad = _attr(node, "padding")
    if pad in ("SAME", "VALID"):
        return pad
    if pad == "EXPLICIT":
        p = list(node.attr["explicit_paddings"].list.i)
        if len(p) != 8 or any(p[i] for i in (0, 1, 6, 7)):
            raise LiftError(f"{node.op} explicit_paddings {p} pad the batch or channel dim")
        return ((p[2], p[3]), (p[4], p[5]))
    raise LiftError(f"{node.op} padding {pad!r} is not supported")


def _axis(ctx, e, what="axis") -> int:
    a = np.asarray(ctx.static(e, f"{what}")).ravel()
    if a.size != 1:
        raise LiftError(f"{what} must be a scalar, got {a.tolist()}")
    return int(a[0])


def _scalar_like(ctx, x, value):
    """A constant scalar of x's dtype (for decompositions such as 1 - erf(x))."""
    return Const(np.asarray(value, dtype=ctx.type(x).dtype.np), ctx.node)


# -- structural ------------------------------------------------------------------------------

def _passthrough(ctx, node, ins):
    return ins


def _const(ctx, node, ins):
    from tensorflow.python.framework import tensor_util

    tensor = node.attr["value"].tensor
    ir_dtype(tensor.dtype, "constant")
    return [Const(np.asarray(tensor_util.MakeNdarray(tensor)), node)]


def _placeholder(ctx, node, ins):
    raise LiftError(f"placeholder '{node.name}' is neither an input nor a captured value")


def _dead_outputs(node, n, reason):
    return [Dead(f"output {i} of {node.op} ({reason}) has no IR equivalent")
            for i in range(1, n + 1)]


# -- elementwise -----------------------------------------------------------------------------

def _unary(ir_op, **attrs):
    def lower(ctx, node, ins):
        return ctx.emit(ir_op, ins[:1], dict(attrs))
    return lower


def _binary(ir_op):
    def lower(ctx, node, ins):
        return ctx.emit(ir_op, ins[:2])
    return lower


def _leaky_relu(ctx, node, ins):
    return ctx.emit("leaky_relu", ins, {"alpha": float(_attr(node, "alpha", 0.2))})


def _selu(ctx, node, ins):
    # selu(x) = scale * elu_alpha(x) (Klambauer et al.), with TF's constants.
    y = ctx.emit1("elu", ins, {"alpha": 1.6732632423543772848170429916717})
    return ctx.emit("mul", [y, _scalar_like(ctx, y, 1.0507009873554804934193349852946)])


def _erfc(ctx, node, ins):
    (x,) = ins
    return ctx.emit("sub", [_scalar_like(ctx, x, 1.0), ctx.emit1("erf", [x])])


def _square(ctx, node, ins):
    return ctx.emit("mul", [ins[0], ins[0]])


def _reciprocal(ctx, node, ins):
    return ctx.emit("div", [_scalar_like(ctx, ins[0], 1.0), ins[0]])


def _squared_difference(ctx, node, ins):
    d = ctx.emit1("sub", ins)
    return ctx.emit("mul", [d, d])


def _softsign(ctx, node, ins):
    (x,) = ins
    denom = ctx.emit1("add", [_scalar_like(ctx, x, 1.0), ctx.emit1("abs", [x])])
    return ctx.emit("div", [x, denom])


def _floor_div(ctx, node, ins):
    if not ctx.type(ins[0]).dtype.is_float:
        a, b = (ctx.const(e) for e in ins)
        if a is None or b is None:
            raise LiftError("integer FloorDiv of run-time tensors is not supported")
        return [Const(np.floor_divide(a, b), node)]
    return ctx.emit("floor", [ctx.emit1("div", ins)])


def _add_n(ctx, node, ins):
    acc = ins[0]
    for x in ins[1:]:
        acc = ctx.emit1("add", [acc, x])
    return [acc]


def _select(ctx, node, ins):
    return ctx.emit("where", ins)


def _clip(ctx, node, ins):
    x, lo, hi = ins
    lo_c, hi_c = ctx.const(lo), ctx.const(hi)
    if lo_c is not None and hi_c is not None and lo_c.size == 1 and hi_c.size == 1:
        return ctx.emit("clip", [x], {"min": float(lo_c.ravel()[0]),
                                      "max": float(hi_c.ravel()[0])})
    return ctx.emit("minimum", [ctx.emit1("maximum", [x, lo]), hi])


def _cast(ctx, node, ins):
    to = ir_dtype(node.attr["DstT"].type, "Cast target")
    if ctx.type(ins[0]).dtype == to:
        return ins[:1]
    return ctx.emit("cast", ins[:1], {"to": to})


def _bias_add(ctx, node, ins):
    x, b = ins
    if _attr(node, "data_format", "NHWC") == "NCHW":
        rank = ctx.type(x).rank
        b = ctx.emit1("reshape", [b], {"shape": [-1] + [1] * (rank - 2)})
    return ctx.emit("add", [x, b])


# -- shapes ----------------------------------------------------------------------------------

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


def reshape_to(ctx, x, dims):
    """Reshapes x to `dims` (ints, at most one -1, SymDims). A single run-time dim becomes the
    IR reshape's -1; the result type keeps its symbol (`batch`) where it is known."""
    dims = list(dims)
    syms = [i for i, d in enumerate(dims) if isinstance(d, SymDim)]
    if -1 in dims and syms:
        # Solve the -1 from the element count: total / product(other dims), exactly.
        fill_at = dims.index(-1)
        known = product(d for i, d in enumerate(dims) if i != fill_at)
        try:
            dims[fill_at] = product(ctx.sym_shape(x)) // known
        except SymbolicError as e:
            raise LiftError(f"cannot infer the -1 of reshape {_fmt(dims)}: {e}") from None
        syms = [i for i, d in enumerate(dims) if isinstance(d, SymDim)]
    if not syms:
        return ctx.emit1("reshape", [x], {"shape": [int(d) for d in dims]})
    if len(syms) > 1:
        raise LiftError(f"reshape to {_fmt(dims)} has {len(syms)} run-time dims; the IR "
                        f"reshape allows one (as its -1)")
    shape = [-1 if i == syms[0] else int(d) for i, d in enumerate(dims)]
    out_type = TensorType(ctx.type(x).dtype, [to_ir_dim(d) for d in dims])
    v = ctx.emit1("reshape", [x], {"shape": shape}, types=[out_type])
    ctx.set_sym_shape(v, dims)
    return v


def _fmt(dims):
    return "[" + ", ".join(str(d) for d in dims) + "]"


def _reshape(ctx, node, ins):
    x, shape = ins
    dims = ctx.dims(shape, "Reshape's target shape")
    if isinstance(x, Lazy) and x.info is not None and x.info[0] == "dequantized_const":
        moved = _reshape_dequantized(ctx, x, dims)
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
    return Lazy(lambda c: reshape_to(c, x, flat), _flat_type(ctx, x, flat), flat,
                ctx.scope, ctx.loc, ("flatten", x))


def _flat_type(ctx, x, flat):
    return TensorType(ctx.type(x).dtype, [to_ir_dim(d) for d in flat])


def _squeeze(ctx, node, ins):
    axes = list(node.attr["squeeze_dims"].list.i) if "squeeze_dims" in node.attr else []
    return ctx.emit("squeeze", ins[:1], {"axes": axes})


def _expand_dims(ctx, node, ins):
    return ctx.emit("expand_dims", ins[:1], {"axis": _axis(ctx, ins[1], "ExpandDims axis")})


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
    return ctx.emit("concat", values, {"axis": _axis(ctx, axis, "concat axis")})


def _pack(ctx, node, ins):
    axis = int(_attr(node, "axis", 0))
    rank = ctx.type(ins[0]).rank
    axis = axis + rank + 1 if axis < 0 else axis
    parts = [ctx.emit1("expand_dims", [x], {"axis": axis}) for x in ins]
    return parts if len(parts) == 1 else ctx.emit("concat", parts, {"axis": axis})


def _unpack(ctx, node, ins):
    num = int(_attr(node, "num"))
    axis = int(_attr(node, "axis", 0))
    pieces = ctx.emit("split", ins[:1], {"axis": axis, "sizes": [1] * num})
    return [ctx.emit1("squeeze", [p], {"axes": [axis]}) for p in pieces]


def _split(ctx, node, ins):
    axis_e, x = ins
    num = int(_attr(node, "num_split"))
    axis = _axis(ctx, axis_e, "Split axis")
    dim = ctx.type(x).shape[axis]
    if not isinstance(dim, int):
        raise LiftError(f"Split of the run-time dim {dim} into {num} pieces is not supported")
    if dim % num:
        raise LiftError(f"Split of a dim of size {dim} into {num} equal pieces")
    return ctx.emit("split", [x], {"axis": axis, "sizes": [dim // num] * num})


def _split_v(ctx, node, ins):
    x, sizes, axis_e = ins
    sizes = [int(s) for s in ctx.static(sizes, "SplitV sizes").ravel()]
    return ctx.emit("split", [x], {"axis": _axis(ctx, axis_e, "SplitV axis"), "sizes": sizes})


def _slice(ctx, node, ins):
    x, begin, size = ins
    return ctx.emit("slice", [x], {
        "begin": [int(v) for v in ctx.static(begin, "Slice begin").ravel()],
        "size": [int(v) for v in ctx.static(size, "Slice size").ravel()]})


def _strided_slice(ctx, node, ins):
    x, begin, end, strides = ins
    attrs = {k: int(_attr(node, k, 0)) for k in
             ("begin_mask", "end_mask", "ellipsis_mask", "new_axis_mask", "shrink_axis_mask")}
    for name, e in (("begin", begin), ("end", end), ("strides", strides)):
        attrs[name] = [int(v) for v in ctx.static(e, f"StridedSlice {name}").ravel()]
    return ctx.emit("strided_slice", [x], attrs)


def _gather(ctx, node, ins):
    params, indices = ins[0], ins[1]
    axis = _axis(ctx, ins[2], "GatherV2 axis") if len(ins) > 2 else 0
    return ctx.emit("gather", [params, indices],
                    {"axis": axis, "batch_dims": int(_attr(node, "batch_dims", 0))})


def _tile(ctx, node, ins):
    mult = [int(m) for m in ctx.static(ins[1], "Tile multiples").ravel()]
    return ctx.emit("tile", ins[:1], {"multiples": mult})


def _broadcast_to(ctx, node, ins):
    dims = ctx.dims(ins[1], "BroadcastTo shape")
    if any(isinstance(d, SymDim) for d in dims):
        raise LiftError(f"BroadcastTo the run-time shape {_fmt(dims)} is not supported")
    return ctx.emit("broadcast_to", ins[:1], {"shape": dims})


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


def _matrix_band_part(ctx, node, ins):
    x, lo, hi = ins
    lo, hi = (_axis(ctx, e, "MatrixBandPart band") for e in (lo, hi))
    m, n = ctx.type(x).shape[-2:]
    if not (isinstance(m, int) and isinstance(n, int)):
        raise LiftError("MatrixBandPart needs static matrix dims")
    i, j = np.arange(m)[:, None], np.arange(n)[None, :]
    band = np.ones((m, n), dtype=bool)
    if lo >= 0:
        band &= (i - j) <= lo
    if hi >= 0:
        band &= (j - i) <= hi
    # A band is x where the mask holds, else 0: one elementwise where with a constant mask.
    zero = Const(np.zeros((), dtype=ctx.type(x).dtype.np), node)
    return ctx.emit("where", [Const(band, node), x, zero])


def _range(ctx, node, ins):
    start, limit, delta = (ctx.static(e, "Range operand") for e in ins)
    dt = ir_dtype(node.attr["Tidx"].type).np if "Tidx" in node.attr else start.dtype
    return [Const(np.arange(start, limit, delta).astype(dt), node)]


def _pad(ctx, node, ins):
    x, pads = ins[0], ctx.static(ins[1], "paddings")
    attrs = {"pads": [[int(a), int(b)] for a, b in np.asarray(pads).reshape(-1, 2)]}
    if node.op == "MirrorPad":
        attrs["mode"] = _attr(node, "mode").lower()
    elif len(ins) > 2:
        attrs["value"] = float(np.asarray(ctx.static(ins[2], "PadV2 value")).ravel()[0])
    return ctx.emit("pad", [x], attrs)


# -- reductions ------------------------------------------------------------------------------

def _reduce(ir_op):
    def lower(ctx, node, ins):
        axes = [int(a) for a in np.asarray(ctx.static(ins[1], "reduction axes")).ravel()]
        if not axes:
            return ins[:1]      # TF reduces nothing; the IR's empty list would mean "all"
        return ctx.emit(ir_op, ins[:1], {"axes": axes,
                                         "keepdims": bool(_attr(node, "keep_dims", False))})
    return lower


def _arg(ir_op):
    def lower(ctx, node, ins):
        out = ir_dtype(node.attr["output_type"].type) if "output_type" in node.attr \
            else DType.i64
        return ctx.emit(ir_op, ins[:1], {"axis": _axis(ctx, ins[1], f"{node.op} axis"),
                                         "output_type": out})
    return lower


# -- nn --------------------------------------------------------------------------------------

def _conv2d(ctx, node, ins):
    x, f = ins
    _require_nhwc(node)
    if isinstance(x, _SpaceToBatch):
        return [_AtrousConv(x, "conv2d", f, node)]
    xc, fi = ctx.type(x).shape[3], ctx.type(f).shape[2]
    # TF infers grouped convolution from the channel counts (Keras groups=, ConvNeXt-style).
    groups = xc // fi if isinstance(xc, int) and isinstance(fi, int) and fi and xc != fi else 1
    return ctx.emit("conv2d", [x, f], {
        "strides": _hw(_attr(node, "strides"), "strides", node),
        "dilations": _hw(_attr(node, "dilations", [1, 1, 1, 1]), "dilations", node),
        "padding": _padding(node), "groups": groups})


def _depthwise(ctx, node, ins):
    _require_nhwc(node)
    if isinstance(ins[0], _SpaceToBatch):
        return [_AtrousConv(ins[0], "depthwise_conv2d", ins[1], node)]
    return ctx.emit("depthwise_conv2d", ins[:2], {
        "strides": _hw(_attr(node, "strides"), "strides", node),
        "dilations": _hw(_attr(node, "dilations", [1, 1, 1, 1]), "dilations", node),
        "padding": _padding(node)})


# Dilated ("atrous") convolution: TF's CPU graph for a conv with dilation_rate d is
# SpaceToBatchND(x, [d, d], pads) -> Conv2D(VALID, stride 1) -> BatchToSpaceND(y, [d, d], crops).
# The three ops are one IR conv with dilations (d, d) and padding pads - crops.

class _SpaceToBatch(Pending):
    reason = "SpaceToBatchND is only supported as the start of a dilated convolution"

    def __init__(self, x, block, pads):
        self.x, self.block, self.pads = x, block, pads


class _AtrousConv(Pending):
    reason = "a convolution on SpaceToBatchND output must end in BatchToSpaceND"

    def __init__(self, s2b, op, f, node):
        self.s2b, self.op, self.f, self.node = s2b, op, f, node


def _space_to_batch(ctx, node, ins):
    x, block, pads = ins
    block = [int(b) for b in ctx.static(block, "SpaceToBatchND block_shape").ravel()]
    pads = np.asarray(ctx.static(pads, "SpaceToBatchND paddings")).reshape(-1, 2).tolist()
    if len(block) != 2 or ctx.type(x).rank != 4:
        raise LiftError("SpaceToBatchND is only supported on NHWC images with a 2-D block")
    return [_SpaceToBatch(x, block, pads)]


def _batch_to_space(ctx, node, ins):
    y, block, crops = ins
    if not isinstance(y, _AtrousConv):
        raise LiftError("BatchToSpaceND is only supported as the end of a dilated convolution")
    block = [int(b) for b in ctx.static(block, "BatchToSpaceND block_shape").ravel()]
    crops = np.asarray(ctx.static(crops, "BatchToSpaceND crops")).reshape(-1, 2).tolist()
    conv, s2b = y.node, y.s2b
    if block != s2b.block:
        raise LiftError(f"BatchToSpaceND block {block} differs from SpaceToBatchND's {s2b.block}")
    if _attr(conv, "padding") != "VALID" or \
            _hw(_attr(conv, "strides"), "strides", conv) != (1, 1):
        raise LiftError(f"{conv.op} between SpaceToBatchND and BatchToSpaceND must be VALID "
                        f"with stride 1")
    padding = tuple((p[0] - c[0], p[1] - c[1]) for p, c in zip(s2b.pads, crops))
    if min(min(p) for p in padding) < 0:
        raise LiftError(f"dilated convolution crops {crops} exceed its paddings {s2b.pads}")
    attrs = {"strides": (1, 1), "dilations": tuple(block), "padding": padding}
    if y.op == "conv2d":
        xc, fi = ctx.type(s2b.x).shape[3], ctx.type(y.f).shape[2]
        attrs["groups"] = xc // fi if isinstance(xc, int) and isinstance(fi, int) and \
            xc != fi else 1
    return ctx.emit(y.op, [s2b.x, y.f], attrs)


def _conv2d_transpose(ctx, node, ins):
    sizes, f, dy = ins
    _require_nhwc(node)
    pad = _padding(node)
    if not isinstance(pad, str):
        raise LiftError("Conv2DBackpropInput with EXPLICIT padding is not supported")
    dims = ctx.dims(sizes, "Conv2DBackpropInput input_sizes")
    if any(isinstance(d, SymDim) for d in dims[1:]):
        raise LiftError(f"Conv2DBackpropInput output size {_fmt(dims)} has a run-time "
                        f"spatial dim")
    out_shape = [-1 if isinstance(dims[0], SymDim) else int(dims[0])] + [int(d) for d in dims[1:]]
    return ctx.emit("conv2d_transpose", [dy, f], {
        "strides": _hw(_attr(node, "strides"), "strides", node),
        "dilations": _hw(_attr(node, "dilations", [1, 1, 1, 1]), "dilations", node),
        "padding": pad, "output_shape": out_shape})


def _pool(ir_op):
    def lower(ctx, node, ins):
        _require_nhwc(node)
        return ctx.emit(ir_op, ins[:1], {
            "ksize": _hw(_attr(node, "ksize"), "ksize", node),
            "strides": _hw(_attr(node, "strides"), "strides", node),
            "padding": _attr(node, "padding")})
    return lower


def _matmul(ctx, node, ins):
    a, b = ins[:2]
    attrs = {"transpose_a": bool(_attr(node, "transpose_a", False)),
             "transpose_b": bool(_attr(node, "transpose_b", False))}
    if isinstance(a, Lazy) and a.info and a.info[0] == "flatten" and not attrs["transpose_a"] \
            and ctx.type(b).rank == 2:
        full = ctx.emit1("matmul", [a.info[1], b], attrs)      # [..., K] @ [K, N]
        dims = ctx.sym_shape(full)
        flat = [product(dims[:-1]), dims[-1]]
        return [Lazy(lambda c: reshape_to(c, full, flat), _flat_type(ctx, full, flat), flat,
                     ctx.scope, ctx.loc, ("matmul_flat", full))]
    return ctx.emit("matmul", ins[:2], attrs)


def _batch_matmul(ctx, node, ins):
    # adj_x/adj_y conjugate-transpose; for the IR's real dtypes that is a transpose.
    return ctx.emit("matmul", ins[:2], {"transpose_a": bool(_attr(node, "adj_x", False)),
                                        "transpose_b": bool(_attr(node, "adj_y", False))})


def _fused_batch_norm(ctx, node, ins):
    x, scale, offset, mean, var = ins[:5]
    if _attr(node, "is_training", True):
        raise LiftError(f"{node.op} in training mode (is_training=true) normalizes with batch "
                        f"statistics; trace the model with training=False")
    fmt = _attr(node, "data_format", "NHWC")
    axis = 1 if fmt.startswith("NC") else -1
    y = ctx.emit1("batch_norm", [x, mean, var, scale, offset],
                  {"epsilon": float(_attr(node, "epsilon", 1e-3)), "axis": axis})
    return [y, *_dead_outputs(node, 5, "batch statistics")]


def _softmax(ir_op):
    def lower(ctx, node, ins):
        return ctx.emit(ir_op, ins[:1], {"axis": -1})
    return lower


def _resize(method):
    def lower(ctx, node, ins):
        size = [int(s) for s in ctx.static(ins[1], f"{node.op} size").ravel()]
        return ctx.emit("resize", ins[:1], {
            "size": size, "method": method,
            "align_corners": bool(_attr(node, "align_corners", False)),
            "half_pixel_centers": bool(_attr(node, "half_pixel_centers", False))})
    return lower


# -- einsum ----------------------------------------------------------------------------------

def _einsum(ctx, node, ins):
    eq = _attr(node, "equation").replace(" ", "")
    if "..." in eq:
        raise LiftError(f"Einsum with an ellipsis ({eq}) is not supported")
    lhs, _, out = eq.partition("->")
    specs = lhs.split(",")
    if len(specs) != len(ins) or len(specs) not in (1, 2):
        raise LiftError(f"Einsum {eq} with {len(ins)} operands is not supported")
    for s in specs + [out]:
        if len(set(s)) != len(s) or not set(s) <= set(string.ascii_letters):
            raise LiftError(f"Einsum {eq}: repeated labels (diagonals) are not supported")
    if len(specs) == 1:
        x, s = _sum_out(ctx, ins[0], specs[0], set(out))
        return [_permute(ctx, x, s, out)]
    a, sa = _sum_out(ctx, ins[0], specs[0], set(out) | set(specs[1]))
    b, sb = _sum_out(ctx, ins[1], specs[1], set(out) | set(sa))
    return [_einsum2(ctx, a, sa, b, sb, out)]


def _sum_out(ctx, x, spec, keep):
    """Sums away the labels of x that appear neither in `keep`."""
    gone = [i for i, c in enumerate(spec) if c not in keep]
    if not gone:
        return x, spec
    x = ctx.emit1("reduce_sum", [x], {"axes": gone, "keepdims": False})
    return x, "".join(c for c in spec if c in keep)


def _permute(ctx, x, spec, want):
    perm = [spec.index(c) for c in want]
    if perm == list(range(len(perm))):
        return x
    return ctx.emit1("transpose", [x], {"perm": perm})


def _operand(ctx, x, spec, batch, first, second):
    """Brings x to [batch, first..., second...] as a rank-(len(batch)+2) matmul operand; returns
    (operand, transposed) where transposed means it is laid out [batch, second, first]."""
    dims = dict(zip(spec, ctx.sym_shape(x)))
    straight, swapped = batch + first + second, batch + second + first
    if spec == "".join(straight) or spec == "".join(swapped):
        transposed = spec != "".join(straight)   # the matmul's flag, no transpose node
    else:
        # Keep x's innermost axis innermost: the cheaper transpose, and attention's q @ k^T
        # becomes matmul(q, k, transpose_b) on k with its two middle axes swapped.
        transposed = spec[-1] in first
        x = _permute(ctx, x, spec, "".join(swapped if transposed else straight))
    lead = [dims[c] for c in batch]
    a, b = (second, first) if transposed else (first, second)
    if len(a) != 1 or len(b) != 1:
        x = reshape_to(ctx, x, lead + [product(dims[c] for c in a), product(dims[c] for c in b)])
    return x, transposed, dims


def _einsum2(ctx, a, sa, b, sb, out):
    batch = [c for c in out if c in sa and c in sb]
    contract = [c for c in sa if c in sb and c not in out]
    afree = [c for c in sa if c not in sb]
    bfree = [c for c in sb if c not in sa]
    rest = [c for c in out if c not in batch]
    if rest == bfree + afree and rest != afree + bfree:
        # The output wants b's free labels first: compute b @ a instead of transposing after.
        a, sa, b, sb, afree, bfree = b, sb, a, sa, bfree, afree
    xa, ta, da = _operand(ctx, a, sa, batch, afree, contract)
    xb, tb, db = _operand(ctx, b, sb, batch, contract, bfree)
    y = ctx.emit1("matmul", [xa, xb], {"transpose_a": ta, "transpose_b": tb})
    if len(afree) != 1 or len(bfree) != 1:
        dims = {**db, **da}
        y = reshape_to(ctx, y, [dims[c] for c in batch + afree + bfree])
    return _permute(ctx, y, "".join(batch + afree + bfree), out)


# -- fake quantization (QAT) ----------------------------------------------------------------
# TF's FakeQuant ops quantize to unsigned codes [quant_min, 2^bits - 1] (quant_min = 1 with
# narrow_range) after "nudging" the range so that 0 is exactly representable
# (tensorflow/core/kernels/fake_quant_ops_functor.h, Nudge). Each becomes an IR quantize ->
# dequantize pair with the nudged params, shifted to signed codes (zp - 2^(bits-1)): TF's
# [0, 255] / narrow [1, 255] are int8's [-128, 127] / narrow [-127, 127].

_FAKE_QUANT_DTYPES = {8: DType.i8, 16: DType.i16}


def tf_fake_quant_params(lo, hi, num_bits: int, narrow_range: bool):
    """(scale, signed zero point) arrays of TF's Nudge() for ranges [lo, hi], computed in
    float32 like TF; the zero point is shifted from TF's unsigned codes to signed ones."""
    lo = np.asarray(lo, np.float32)
    hi = np.asarray(hi, np.float32)
    quant_min = np.float32(1 if narrow_range else 0)
    quant_max = np.float32((1 << num_bits) - 1)
    with np.errstate(all="ignore"):
        scale = (hi - lo) / (quant_max - quant_min)
        zp_from_min = quant_min - lo / scale
    # std::round (half away from zero; zp_from_min >= quant_min >= 0 once clamped).
    nudged = np.where(zp_from_min < quant_min, quant_min,
                      np.where(zp_from_min > quant_max, quant_max,
                               np.floor(zp_from_min.astype(np.float64) + 0.5)))
    zp = nudged.astype(np.int64) - (1 << (num_bits - 1))
    return scale.astype(np.float32), zp


def _fake_quant(ctx, node, ins):
    x = ins[0]
    bits = int(_attr(node, "num_bits", 8))
    narrow = bool(_attr(node, "narrow_range", False))
    dtype = _FAKE_QUANT_DTYPES.get(bits)
    if dtype is None:
        raise LiftError(f"{node.op} with num_bits={bits} is not supported (supported: "
                        f"{', '.join(map(str, _FAKE_QUANT_DTYPES))})")
    if node.op == "FakeQuantWithMinMaxArgs":
        lo, hi = np.float32(_attr(node, "min", -6.0)), np.float32(_attr(node, "max", 6.0))
    else:
        lo, hi = ctx.const(ins[1]), ctx.const(ins[2])
        missing = [n for n, c in (("min", lo), ("max", hi)) if c is None]
        if missing:
            raise LiftError(f"{node.op}: {' and '.join(missing)} must be constant at "
                            f"conversion time (a variable or a constant), but "
                            f"{'they are' if len(missing) > 1 else 'it is'} computed at run "
                            f"time")
    lo, hi = np.asarray(lo, np.float32).ravel(), np.asarray(hi, np.float32).ravel()
    xt = ctx.type(x)
    axis = None
    if node.op == "FakeQuantWithMinMaxVarsPerChannel":
        axis = xt.rank - 1
        n = xt.shape[axis]
        if lo.size != hi.size or (isinstance(n, int) and lo.size != n):
            raise LiftError(f"{node.op}: {lo.size} min and {hi.size} max values for a last "
                            f"dim of {n}")
    elif lo.size != 1 or hi.size != 1:
        raise LiftError(f"{node.op}: min and max must be scalars, got {lo.size} and "
                        f"{hi.size} values")
    bad = [f"[{a}, {b}]" for a, b in zip(lo.tolist(), hi.tolist()) if not a < b]
    if bad:
        raise LiftError(f"{node.op}: empty quantization range {', '.join(bad[:4])} (min must "
                        f"be < max)")
    scale, zp = tf_fake_quant_params(lo, hi, bits, narrow)
    params = {"scale": [float(s) for s in scale], "zero_point": [int(z) for z in zp],
              "axis": axis}
    qp = QuantParams(params["scale"], params["zero_point"], axis, bits, True, narrow)
    q_attrs = {**params, "dtype": dtype, "narrow_range": narrow}
    c = ctx.const(x)
    if c is None:
        q = ctx.graph.add("quantize", [ctx.value(x)], q_attrs, scope=ctx.scope,
                          loc=ctx.loc).outputs[0]
        q.quant = qp
        return [_dequantize(ctx, q, params, xt.dtype)]
    # A constant (a kernel): its codes are the weight itself, an integer constant, followed
    # by a dequantize built lazily so that a reshape of it can move onto the codes instead
    # (a depthwise kernel is fake-quantized as [H, W, 1, C*M] and reshaped back, see
    # `_reshape_dequantized`).
    opdef = get_op("quantize")
    codes = opdef.kernel([np.asarray(c)], opdef.complete_attrs(q_attrs))[0]
    base = x.name if isinstance(x, Const) and x.name else \
        (f"{ctx.scope}/weight" if ctx.scope else None)
    qc = Const(codes, node, f"{base}_quantized" if base else None)
    return [_lazy_dequantized(ctx, qc, qp, params, xt)]


def _dequantize(ctx, q, params, dtype):
    # Built directly, never folded: the QDQ pair is what the quantization passes consume.
    return ctx.graph.add("dequantize", [q], {**params, "dtype": dtype}, scope=ctx.scope,
                         loc=ctx.loc).outputs[0]


def _lazy_dequantized(ctx, qc, qp, params, xt):
    def build(c):
        q = c.value(qc)
        q.quant = qp
        return _dequantize(c, q, params, xt.dtype)
    return Lazy(build, xt, list(xt.shape), ctx.scope, ctx.loc,
                ("dequantized_const", qc, qp, params))


def _reshape_dequantized(ctx, x, dims):
    """reshape(dequantize(codes)) as dequantize(reshape(codes)) when the quantized axis
    survives whole (same size, same number of elements before it); else None."""
    _, qc, qp, params = x.info
    src = list(qc.array.shape)
    if any(not isinstance(d, (int, np.integer)) for d in dims):
        return None
    dims = [int(d) for d in dims]
    if -1 in dims:
        known = int(np.prod([d for d in dims if d != -1]))
        if known == 0:
            return None
        dims[dims.index(-1)] = qc.array.size // known
    if int(np.prod(dims)) != qc.array.size:
        return None
    axis = qp.axis
    if axis is not None:
        before = int(np.prod(src[:axis]))
        hits = [j for j in range(len(dims))
                if dims[j] == src[axis] and int(np.prod(dims[:j])) == before]
        if not hits:
            return None
        axis = hits[0]
    codes = Const(qc.array.reshape(dims), qc.origin, qc.name)
    new_qp = QuantParams(qp.scale, qp.zero_point, axis, qp.bits, qp.signed, qp.narrow_range)
    new_params = {**params, "axis": axis}
    xt = TensorType(x.type.dtype, dims)
    return _lazy_dequantized(ctx, codes, new_qp, new_params, xt)


# -- the table -------------------------------------------------------------------------------

TABLE = {
    "Const": _const, "Placeholder": _placeholder, "_CallOutputs": _passthrough,
    "Identity": _passthrough, "IdentityN": _passthrough, "StopGradient": _passthrough,
    "PreventGradient": _passthrough, "Snapshot": _passthrough, "EnsureShape": _passthrough,
    "CheckNumerics": _passthrough,
    # elementwise
    "Relu": _unary("relu"), "Relu6": _unary("relu6"), "Sigmoid": _unary("sigmoid"),
    "Tanh": _unary("tanh"), "Exp": _unary("exp"), "Log": _unary("log"), "Sqrt": _unary("sqrt"),
    "Rsqrt": _unary("rsqrt"), "Neg": _unary("neg"), "Abs": _unary("abs"), "Erf": _unary("erf"),
    "Floor": _unary("floor"), "Ceil": _unary("ceil"), "Round": _unary("round"),
    "Sign": _unary("sign"), "Softplus": _unary("softplus"), "LogicalNot": _unary("logical_not"),
    "Elu": _unary("elu"), "Selu": _selu, "LeakyRelu": _leaky_relu, "Erfc": _erfc,
    "Square": _square, "Reciprocal": _reciprocal, "Inv": _reciprocal, "Softsign": _softsign,
    "AddV2": _binary("add"), "Add": _binary("add"), "Sub": _binary("sub"),
    "Mul": _binary("mul"), "RealDiv": _binary("div"), "Div": _binary("div"),
    "Maximum": _binary("maximum"), "Minimum": _binary("minimum"), "Pow": _binary("pow"),
    "Less": _binary("less"), "LessEqual": _binary("less_equal"),
    "Greater": _binary("greater"), "GreaterEqual": _binary("greater_equal"),
    "Equal": _binary("equal"), "NotEqual": _binary("not_equal"),
    "LogicalAnd": _binary("logical_and"), "LogicalOr": _binary("logical_or"),
    "SquaredDifference": _squared_difference, "FloorDiv": _floor_div, "AddN": _add_n,
    "BiasAdd": _bias_add, "BiasAddV1": _bias_add, "Select": _select, "SelectV2": _select,
    "ClipByValue": _clip, "Cast": _cast,
    # shapes
    "Shape": _shape, "ShapeN": _shape, "Size": _size, "Rank": _rank, "Reshape": _reshape,
    "Squeeze": _squeeze, "ExpandDims": _expand_dims, "Transpose": _transpose,
    "ConcatV2": _concat, "Concat": _concat, "Pack": _pack, "Unpack": _unpack, "Split": _split,
    "SplitV": _split_v, "Slice": _slice, "StridedSlice": _strided_slice, "GatherV2": _gather,
    "Tile": _tile, "BroadcastTo": _broadcast_to, "Fill": _fill, "ZerosLike": _like(0),
    "OnesLike": _like(1), "Range": _range, "Pad": _pad, "PadV2": _pad, "MirrorPad": _pad,
    # reductions
    "Mean": _reduce("reduce_mean"), "Sum": _reduce("reduce_sum"), "Max": _reduce("reduce_max"),
    "Min": _reduce("reduce_min"), "Prod": _reduce("reduce_prod"),
    "ArgMax": _arg("argmax"), "ArgMin": _arg("argmin"),
    # nn
    "Conv2D": _conv2d, "DepthwiseConv2dNative": _depthwise,
    "Conv2DBackpropInput": _conv2d_transpose, "MaxPool": _pool("max_pool2d"),
    "AvgPool": _pool("avg_pool2d"), "MatMul": _matmul, "BatchMatMul": _batch_matmul,
    "BatchMatMulV2": _batch_matmul, "BatchMatMulV3": _batch_matmul,
    "FusedBatchNorm": _fused_batch_norm, "FusedBatchNormV2": _fused_batch_norm,
    "FusedBatchNormV3": _fused_batch_norm, "Softmax": _softmax("softmax"),
    "LogSoftmax": _softmax("log_softmax"), "ResizeBilinear": _resize("bilinear"),
    "ResizeNearestNeighbor": _resize("nearest"), "Einsum": _einsum,
    "SpaceToBatchND": _space_to_batch, "BatchToSpaceND": _batch_to_space,
    "MatrixBandPart": _matrix_band_part,
    # fake quantization (QAT)
    "FakeQuantWithMinMaxVars": _fake_quant, "FakeQuantWithMinMaxVarsPerChannel": _fake_quant,
    "FakeQuantWithMinMaxArgs": _fake_quant,
}
