"""Shape canonicalizations: reshape chains, transpose chains, no-op shape ops, folding of
explicit broadcasts into ops that broadcast implicitly, run-time shape values that are
static after all (`shape_of` of static dims, dynamic ops with constant sizes), and slices
that read one operand of a concat or only drop unit dims."""

from __future__ import annotations

import numpy as np

from ...ir.errors import InferenceError
from ...ir.ops import get_op
from ...ir.ops.shape import strided_slice_index
from ...ir.types import UNKNOWN
from ..rewrite import RewritePattern, Rewriter
from .algebra import forward

RESHAPE_LIKE = ("reshape", "squeeze", "expand_dims")


def replace_with_new(node, op: str, src, attrs, rw: Rewriter) -> bool:
    """Replaces `node` by a new `op(src)` computing the same value, if its inferred type is
    exactly `node`'s (else a symbolic dim would be lost; the chain stays). The new value
    takes over the old one's name, quantization and layout."""
    out = node.outputs[0]
    try:
        [new_type] = get_op(op).infer([src.type], attrs)
    except InferenceError:
        return False
    if new_type != out.type:
        return False
    new = rw.create(op, [src], attrs, like=node).outputs[0]
    new.name, new.quant, new.layout = out.name, out.quant, out.layout
    rw.replace(node, [new])
    return True


class ReshapeChain(RewritePattern):
    """reshape(reshape|squeeze|expand_dims(x)) -> reshape(x), or x when the shapes cancel."""

    root = "reshape"

    def match_and_rewrite(self, node, rw):
        inner = node.inputs[0].producer
        if inner is None or inner.op not in RESHAPE_LIKE:
            return False
        src = inner.inputs[0]
        if forward(node, src, rw):
            return True
        return replace_with_new(node, "reshape", src, node.attrs, rw)


class TransposeChain(RewritePattern):
    """transpose(transpose(x, p1), p2) -> transpose(x, p1∘p2), or x when they cancel."""

    root = "transpose"

    def match_and_rewrite(self, node, rw):
        inner = node.inputs[0].producer
        if inner is None or inner.op != "transpose":
            return False
        p1, p2 = inner.attrs["perm"], node.attrs["perm"]
        perm = tuple(p1[i] for i in p2)
        src = inner.inputs[0]
        if perm == tuple(range(len(perm))):
            return forward(node, src, rw)
        return replace_with_new(node, "transpose", src, {"perm": perm}, rw)


class NoopShapeOp(RewritePattern):
    """Shape ops that provably do nothing -> their operand: identity transpose, reshape/
    squeeze/expand_dims/broadcast_to to the same type, full slices, zero pads, unit tiles,
    single-operand concat."""

    def __init__(self, op: str):
        self.root = op

    def is_noop(self, node) -> bool:
        a = node.attrs
        rank = node.inputs[0].type.rank
        if node.op == "transpose":
            return a["perm"] == tuple(range(rank))
        if node.op == "slice":
            return all(b == 0 for b in a["begin"]) and all(
                s == -1 or s == d for s, d in zip(a["size"], node.inputs[0].type.shape))
        if node.op == "pad":
            return all(b == 0 and e == 0 for b, e in a["pads"])
        if node.op == "tile":
            return all(m == 1 for m in a["multiples"])
        if node.op == "concat":
            return len(node.inputs) == 1
        return node.op in RESHAPE_LIKE or node.op == "broadcast_to"

    def match_and_rewrite(self, node, rw):
        if not node.inputs or not self.is_noop(node):
            return False
        return forward(node, node.inputs[0], rw)


# Ops that broadcast their operands NumPy-style, so an explicit broadcast_to feeding them is
# redundant whenever the result type stays the same without it.
IMPLICIT_BROADCAST = ("add", "sub", "mul", "div", "pow", "maximum", "minimum", "equal",
                      "not_equal", "less", "less_equal", "greater", "greater_equal",
                      "logical_and", "logical_or", "where")


class FoldBroadcast(RewritePattern):
    """op(broadcast_to(y), z) -> op(y, z) for implicitly broadcasting ops (also with a
    run-time dynamic_broadcast_to), when the result type is unchanged."""

    def __init__(self, op: str):
        self.root = op

    def match_and_rewrite(self, node, rw):
        opdef = get_op(node.op)
        for i, v in enumerate(node.inputs):
            p = v.producer
            if p is None or p.op not in ("broadcast_to", "dynamic_broadcast_to"):
                continue
            if p.op == "dynamic_broadcast_to" and UNKNOWN in node.outputs[0].type.shape:
                # `?` may hide a 1 in the other operand that only the broadcast stretches;
                # named symbols and static sizes are exact.
                continue
            types = [x.type for x in node.inputs]
            types[i] = p.inputs[0].type
            try:
                inferred = opdef.infer(types, node.attrs)
            except InferenceError:
                continue
            if inferred[0] == node.outputs[0].type:
                rw.set_input(node, i, p.inputs[0])
                return True
        return False


class StaticShapeOf(RewritePattern):
    """shape_of(x) -> a constant when x's shape is static; slice(shape_of(x)) -> a constant
    when the dims it reads are (a model's fixed hidden size next to a run-time batch)."""

    def __init__(self, op: str):
        self.root = op

    def match_and_rewrite(self, node, rw):
        if node.op == "shape_of":
            x = node.inputs[0]
            if not x.type.is_static:
                return False
            dims = list(x.type.shape)
        else:
            inner = node.inputs[0].producer
            if inner is None or inner.op != "shape_of":
                return False
            shape = inner.inputs[0].type.shape
            (b,), (n,) = node.attrs["begin"], node.attrs["size"]
            dims = list(shape[b:] if n == -1 else shape[b:b + n])
            if not all(isinstance(d, int) for d in dims):
                return False
        dtype = node.outputs[0].type.dtype.np
        rw.replace(node, [rw.constant(np.asarray(dims, dtype).reshape(len(dims)), like=node)])
        return True


# dynamic op -> (static op, its size attributes in operand order)
_STATIC_FORM = {"dynamic_reshape": ("reshape", ("shape",)),
                "dynamic_broadcast_to": ("broadcast_to", ("shape",)),
                "dynamic_tile": ("tile", ("multiples",)),
                "dynamic_slice": ("slice", ("begin", "size")),
                "dynamic_strided_slice": ("strided_slice", ("begin", "end", "strides"))}


class StaticSizes(RewritePattern):
    """dynamic_reshape / broadcast_to / tile / slice / strided_slice whose size operands
    are constants -> the static op, when its type agrees with the declared one
    (it may be more precise: `?` becomes the size)."""

    def __init__(self, op: str):
        self.root = op

    def match_and_rewrite(self, node, rw):
        consts = [v.const for v in node.inputs[1:]]
        if any(c is None for c in consts):
            return False
        op, keys = _STATIC_FORM[node.op]
        attrs = {k: v for k, v in node.attrs.items() if k != "dims"}    # strided masks
        attrs.update({k: [int(d) for d in np.ravel(c)] for k, c in zip(keys, consts)})
        src, out = node.inputs[0], node.outputs[0]
        try:
            [new_type] = get_op(op).infer([src.type], get_op(op).complete_attrs(attrs))
        except InferenceError:
            return False
        if new_type.dtype != out.type.dtype or new_type.rank != out.type.rank or not all(
                o == n or o == UNKNOWN for o, n in zip(out.type.shape, new_type.shape)):
            return False
        new = rw.create(op, [src], attrs, like=node).outputs[0]
        new.name, new.quant, new.layout = out.name, out.quant, out.layout
        rw.replace(node, [new])
        return True



# -- slices of packed tensors ------------------------------------------------------------------
# A function that packs tensors together and unpacks them again (a language model's per-layer
# key/value caches stacked into the model's own cache layout and split back out) would copy
# every tensor twice at run time; after these rewrites the pack/unpack pair vanishes
# (`ReshapeChain` then removes the leftover expand_dims/reshape pairs).


def unit_stride_plan(node) -> list[tuple[int, int, bool]] | None:
    """Per input dim (begin, size, shrink) of a `slice` or `strided_slice` node on a static
    shape whose strides are all 1 and that adds no axes; None for any other slice."""
    shape = node.inputs[0].type.shape
    if any(not isinstance(d, int) for d in shape):
        return None
    if node.op == "slice":
        return [(b, d - b if s == -1 else s, False)
                for b, s, d in zip(node.attrs["begin"], node.attrs["size"], shape)]
    if node.attrs["new_axis_mask"]:
        return None
    try:
        index, _ = strided_slice_index(shape, node.attrs)
    except InferenceError:
        return None
    plan = []
    for entry in index:
        if isinstance(entry, int):
            plan.append((entry, 1, True))
        elif entry.step not in (None, 1):
            return None
        else:
            plan.append((entry.start, entry.stop - entry.start, False))
    return plan


def _slice_as(node, src, plan, rw: Rewriter) -> bool:
    """Replaces `node` by the slice `plan` of `src` (or by `src` itself when the plan takes
    all of it)."""
    shape = src.type.shape
    if all(b == 0 and size == d and not shrink for (b, size, shrink), d in zip(plan, shape)):
        return forward(node, src, rw)
    attrs = {"begin": tuple(b for b, _, _ in plan),
             "end": tuple(b + size for b, size, _ in plan),
             "strides": (1,) * len(plan),
             "begin_mask": 0, "end_mask": 0, "new_axis_mask": 0, "ellipsis_mask": 0,
             "shrink_axis_mask": sum(1 << i for i, (_, _, s) in enumerate(plan) if s)}
    return replace_with_new(node, "strided_slice", src, attrs, rw)


class SliceOfConcat(RewritePattern):
    """slice(concat(a, b, ...)) -> slice(a) when the slice's range on the concat axis lies
    inside one operand."""

    def __init__(self, op: str):
        self.root = op

    def match_and_rewrite(self, node, rw):
        cat = node.inputs[0].producer
        if cat is None or cat.op != "concat":
            return False
        plan = unit_stride_plan(node)
        if plan is None:
            return False
        axis = cat.attrs["axis"] % len(plan)
        begin, size, shrink = plan[axis]
        offset = 0
        for operand in cat.inputs:
            dim = operand.type.shape[axis]
            if not isinstance(dim, int):
                return False
            if offset <= begin and begin + size <= offset + dim and dim > 0:
                plan[axis] = (begin - offset, size, shrink)
                return _slice_as(node, operand, plan, rw)
            offset += dim
        return False


class SliceOfExpandDims(RewritePattern):
    """slice(expand_dims(x)) that drops the added unit dim -> slice(x)."""

    def __init__(self, op: str):
        self.root = op

    def match_and_rewrite(self, node, rw):
        inner = node.inputs[0].producer
        if inner is None or inner.op != "expand_dims" or not isinstance(
                inner.attrs["axis"], int):
            return False
        plan = unit_stride_plan(node)
        if plan is None:
            return False
        axis = inner.attrs["axis"] % len(plan)
        if plan[axis] != (0, 1, True):
            return False
        return _slice_as(node, inner.inputs[0], plan[:axis] + plan[axis + 1:], rw)


class StridedSliceAsReshape(RewritePattern):
    """strided_slice that keeps every dim whole except unit dims it drops -> reshape (or
    nothing, when it drops none)."""

    root = "strided_slice"

    def match_and_rewrite(self, node, rw):
        plan = unit_stride_plan(node)
        if plan is None:
            return False
        src = node.inputs[0]
        for (b, size, shrink), d in zip(plan, src.type.shape):
            if b != 0 or size != d:
                return False
        if not any(s for _, _, s in plan):
            return forward(node, src, rw)
        return replace_with_new(node, "reshape", src,
                                {"shape": tuple(node.outputs[0].type.shape)}, rw)


# -- empty tensors -----------------------------------------------------------------------------
# A value with a static zero-size shape holds nothing: it is a constant, and a concat gains
# nothing from it. (LiteRT's XNNPACK delegate fails to prepare some graphs that move empty
# tensors around: a model's unused cache slot sliced to zero length and concatenated.)

def _is_empty(v) -> bool:
    shape = v.type.shape
    return all(isinstance(d, int) for d in shape) and 0 in shape


class EmptyAsConstant(RewritePattern):
    """A pure single-result node whose result is statically empty -> an empty constant."""

    def match_and_rewrite(self, node, rw):
        if node.op == "constant" or len(node.outputs) != 1 or not _is_empty(node.outputs[0]):
            return False
        if "pure" not in get_op(node.op).traits or node.regions:
            return False
        out = node.outputs[0]
        value = rw.constant(np.zeros(out.type.shape, out.type.dtype.np), like=node,
                            name=out.name)
        value.quant, value.layout = out.quant, out.layout
        rw.replace(node, [value])
        return True


class ConcatDropEmpty(RewritePattern):
    """concat(a, empty, b) -> concat(a, b) (an operand empty on the concat axis)."""

    root = "concat"

    def match_and_rewrite(self, node, rw):
        if len(node.inputs) < 2 or _is_empty(node.outputs[0]):
            return False
        rank = node.outputs[0].type.rank
        axis = node.attrs["axis"] % rank
        keep = [v for v in node.inputs if v.type.shape[axis] != 0]
        if len(keep) == len(node.inputs) or not keep:
            return False
        if len(keep) == 1:
            return forward(node, keep[0], rw)
        new = rw.create("concat", keep, node.attrs, like=node).outputs[0]
        out = node.outputs[0]
        new.name, new.quant, new.layout = out.name, out.quant, out.layout
        rw.replace(node, [new])
        return True


def shape_patterns() -> list[RewritePattern]:
    return [ReshapeChain(), TransposeChain(), StaticShapeOf("shape_of"), StaticShapeOf("slice"),
            *(StaticSizes(op) for op in _STATIC_FORM),
            *(NoopShapeOp(op) for op in ("transpose", "reshape", "squeeze", "expand_dims",
                                         "broadcast_to", "slice", "pad", "tile", "concat")),
            *(FoldBroadcast(op) for op in IMPLICIT_BROADCAST),
            SliceOfConcat("slice"), SliceOfConcat("strided_slice"),
            SliceOfExpandDims("strided_slice"), StridedSliceAsReshape(), EmptyAsConstant(),
            ConcatDropEmpty()]
