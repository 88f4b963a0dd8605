"""Fusion patterns: fold inference batch-norm and per-channel affine arithmetic into the
weights and bias of the preceding conv / matmul, and fuse a following activation into its
`activation` attribute, so backends can emit one op (TFLite's fused conv + bias + activation).

Targets ("affine ops") are conv2d, depthwise_conv2d, conv2d_transpose and matmul. Each of them
computes `act(linear(x, W) + bias)` with the output channel on the last axis; the filter axis
that holds the output channel depends on the op:

    conv2d            HWIO [H, W, C_in/groups, C_out]      -> axis 3
    depthwise_conv2d  [H, W, C_in, M], channel c*M + m     -> axes (2, 3) together
    conv2d_transpose  [H, W, C_out, C_in]                  -> axis 2
    matmul            b [..., K, N] (or [..., N, K] with transpose_b) -> the N axis

Families (each a list of patterns; passes and `canonicalize` assemble them):

- `batchnorm_patterns()`: batch_norm(conv(x, W, b)) -> conv(x, W*a, b*a + t) with
  a = scale / sqrt(var + eps), t = offset - mean * a; mul(conv, s) -> conv(x, W*s, b*s);
  add/sub(conv, t) -> conv(x, W, b +/- t); a batch_norm that cannot be folded becomes
  mul + add of folded constants (so backends never need batch_norm).
- `bias_patterns()`: add(conv, t) / add(t, conv) / sub(conv, t) -> bias.
- `activation_patterns()`: relu / relu6 / tanh / clip(0, 6) / clip(-1, 1) after an affine op
  -> its `activation` attribute.

Every rewrite only fires when the affine op's result has exactly one use (the node being
folded), its activation is still "none" (a fused activation must stay after the affine
arithmetic), its dtype is a float, and that intermediate result carries no quantization
parameters (removing a quantized tensor would change quantized numerics). Weights and biases
that are rescaled must be constants without quantization parameters; new constants are
created (shared weights are never modified) and keep the old constant's name, scope and
layout. The fused node keeps the affine op's scope and loc; its result takes over the name,
quantization and layout of the value it replaces (the affine op's own name when that value
is anonymous). All arithmetic on weights is done in float64 and rounded once, so a rewrite is
exact up to float rounding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ...ir.errors import InferenceError
from ...ir.graph import Node, Value
from ...ir.ops import get_op
from ...ir.types import DType, TensorType
from ...ir.verify import types_compatible
from ..rewrite import RewritePattern, Rewriter
from .algebra import forward

AFFINE_OPS = ("conv2d", "depthwise_conv2d", "conv2d_transpose", "matmul")

# activation op -> the `activation` attribute it becomes
ACTIVATION_OPS = {"relu": "relu", "relu6": "relu6", "tanh": "tanh"}
# clip bounds -> the `activation` attribute
CLIP_ACTIVATIONS = {(0.0, 6.0): "relu6", (-1.0, 1.0): "relu_n1_to_1"}
# the closed range each fused activation's results lie in
ACTIVATION_RANGES = {"relu": (0.0, np.inf), "relu6": (0.0, 6.0), "relu_n1_to_1": (-1.0, 1.0),
                     "tanh": (-1.0, 1.0)}


# -- matching helpers --------------------------------------------------------------------------

def fusable_producer(v: Value) -> Node | None:
    """The affine op producing `v` when `v` may be folded into it: `v` is its only result and
    has exactly one use, the op has no fused activation yet, the result is a float tensor with
    a static channel count and no quantization parameters."""
    p = v.producer
    if p is None or p.op not in AFFINE_OPS or len(p.outputs) != 1:
        return None
    if len(v.uses) != 1 or v.quant is not None:
        return None
    if p.attrs.get("activation", "none") != "none":
        return None
    if not v.type.dtype.is_float or v.type.rank == 0 or not isinstance(v.type.shape[-1], int):
        return None
    return p


def _plain_const(v: Value) -> np.ndarray | None:
    """The payload of a constant without quantization parameters, else None."""
    if v.quant is not None:
        return None
    return v.const


def channel_vector(v: Value, c: int) -> np.ndarray | None:
    """A constant that broadcasts only along the last (channel) axis of a result with `c`
    channels (shape [], [1], [C] or [1, ..., 1, C]) as a float64 [C] vector, else None.
    (The caller also checks that the binary op's result type is the affine op's.)"""
    arr = _plain_const(v)
    if arr is None or arr.size == 0:
        return None
    if any(d != 1 for d in arr.shape[:-1]):
        return None
    if arr.ndim and arr.shape[-1] not in (1, c):
        return None
    return np.broadcast_to(arr.reshape(-1).astype(np.float64), (c,))


def existing_bias(node: Node) -> tuple[np.ndarray | None, Value | None] | None:
    """(bias as float64 [C] or None if absent, its value) for an affine op; None when the bias
    is not a plain constant (it cannot be rewritten then)."""
    if len(node.inputs) < 3:
        return None, None
    b = node.inputs[2]
    arr = _plain_const(b)
    if arr is None:
        return None
    return arr.astype(np.float64).reshape(-1), b


def scale_filter(node: Node, s: np.ndarray) -> np.ndarray | None:
    """The affine op's constant filter scaled by `s` (float64 [C]) per output channel, in the
    filter's dtype; None when the filter is not a plain constant or its layout does not fit."""
    f = _plain_const(node.inputs[1])
    if f is None or f.ndim < 2:
        return None
    c = s.shape[0]
    if node.op == "conv2d":
        if f.ndim != 4 or f.shape[3] != c:
            return None
        factor = s
    elif node.op == "depthwise_conv2d":
        if f.ndim != 4 or f.shape[2] * f.shape[3] != c:
            return None
        factor = s.reshape(f.shape[2], f.shape[3])   # output channel ci*M + m
    elif node.op == "conv2d_transpose":
        if f.ndim != 4 or f.shape[2] != c:
            return None
        factor = s[:, None]
    elif node.op == "matmul":
        if node.attrs.get("transpose_b", False):
            if f.shape[-2] != c:
                return None
            factor = s[:, None]
        else:
            if f.shape[-1] != c:
                return None
            factor = s
    else:
        return None
    # Each product in float64, rounded once to the filter's dtype; the ufunc casts in small
    # buffers, so no float64 copy of the whole filter is made (those copies were most of
    # folding ResNet50's batch norms).
    # Into a C-ordered array, as the copy the constant made of it before was.
    return _frozen(np.multiply(f, factor, out=np.empty(f.shape, f.dtype), dtype=np.float64,
                               casting="unsafe"))


def _frozen(fresh: np.ndarray) -> np.ndarray:
    """`fresh` (an array nothing else holds) made read-only, so that the constant made of it
    takes it as it is (`normalize_attr` copies writable arrays: one more copy of every folded
    filter, 0.07 s on ResNet50)."""
    fresh.flags.writeable = False
    return fresh


# -- building the fused node -------------------------------------------------------------------

@dataclass
class NewConst:
    """A constant to create once the rewrite is known to apply."""

    array: np.ndarray
    like: Node          # scope / loc source
    name: str | None = None
    layout: object = None


def _spec_type(x) -> TensorType:
    if isinstance(x, NewConst):
        return TensorType(DType.from_numpy(x.array.dtype), x.array.shape)
    return x.type


def rebuild(root: Node, affine: Node, inputs: Sequence, attrs: dict, rw: Rewriter) -> bool:
    """Replaces `root` (whose single result equals, in type, `affine`'s result) by a new
    `affine.op(*inputs)` with `attrs`, created in `affine`'s scope. Entries of `inputs` are
    Values or NewConst (materialized only once the new node is known to type-check)."""
    out = root.outputs[0]
    mid = affine.outputs[0]
    if out.type != mid.type:
        return False  # the binary op broadcast the result to a bigger shape / other type
    opdef = get_op(affine.op)
    attrs = opdef.complete_attrs(attrs)
    try:
        [inferred] = opdef.infer([_spec_type(x) for x in inputs], attrs)
    except (InferenceError, ValueError):
        return False
    if not types_compatible(out.type, inferred):
        return False
    values = []
    for x in inputs:
        if isinstance(x, NewConst):
            v = rw.constant(x.array, like=x.like, name=x.name)
            v.layout = x.layout
            x = v
        values.append(x)
    new = rw.create(affine.op, values, attrs, like=affine, types=[out.type]).outputs[0]
    new.name = out.name if out.name is not None else mid.name
    new.quant, new.layout = out.quant, out.layout
    rw.replace(root, [new])
    return True


def _new_filter(affine: Node, array: np.ndarray) -> NewConst:
    old = affine.inputs[1]
    like = old.producer
    return NewConst(array, like, old.name, old.layout if old.layout is not None
                    and len(old.layout.axes) == array.ndim else None)


def _new_bias(affine: Node, array64: np.ndarray, old: Value | None,
              name_from: Value | None) -> NewConst:
    dtype = affine.outputs[0].type.dtype.np
    arr = _frozen(array64.astype(dtype))
    if old is not None:
        return NewConst(arr, old.producer, old.name, old.layout)
    return NewConst(arr, affine, name_from.name if name_from is not None else None)


def fold_affine(root: Node, affine: Node, scale: np.ndarray | None, shift: np.ndarray | None,
                shift_src: Value | None, rw: Rewriter) -> bool:
    """root(affine(x)) == affine(x) * scale + shift per output channel (float64 [C] vectors,
    either may be None): rewrites it as one affine op with a scaled filter and a new bias."""
    bias = existing_bias(affine)
    if bias is None:
        return False
    b, b_val = bias
    inputs: list = list(affine.inputs[:2])
    if scale is not None:
        if not np.all(np.isfinite(scale)):
            return False  # 0 * inf in the filter would not be what the graph computes
        f = scale_filter(affine, scale)
        if f is None:
            return False
        inputs[1] = _new_filter(affine, f)
        if b is not None:
            b = b * scale
    if shift is not None:
        b = shift if b is None else b + shift
    if b is not None:
        if not np.all(np.isfinite(b)):
            return False
        if (b_val is None and scale is None and shift_src is not None
                and shift_src.type == TensorType(affine.outputs[0].type.dtype, (b.shape[0],))
                and shift_src.layout is None
                and np.array_equal(shift_src.const.astype(np.float64).reshape(-1), b)):
            inputs.append(shift_src)  # the added constant already is the bias: reuse it
        else:
            inputs.append(_new_bias(affine, b, b_val, shift_src))
    return rebuild(root, affine, inputs, dict(affine.attrs), rw)


# -- batch norm --------------------------------------------------------------------------------

def batch_norm_affine(node: Node) -> tuple[np.ndarray, np.ndarray] | None:
    """(a, t) float64 [C] with batch_norm(x) == x * a + t along its axis, when every parameter
    is a plain constant and the result is finite; else None."""
    params = [_plain_const(v) for v in node.inputs[1:5]]
    if any(p is None for p in params):
        return None
    mean, var, scale, offset = (p.astype(np.float64).reshape(-1) for p in params)
    with np.errstate(all="ignore"):
        a = scale / np.sqrt(var + float(node.attrs["epsilon"]))
        t = offset - mean * a
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(t))):
        return None
    return a, t


class FoldBatchNormIntoAffine(RewritePattern):
    """batch_norm(conv(x, W, b)) over the channel axis -> conv(x, W*a, b*a + t)."""

    root = "batch_norm"

    def match_and_rewrite(self, node, rw):
        x = node.inputs[0]
        affine = fusable_producer(x)
        if affine is None or node.attrs["axis"] % x.type.rank != x.type.rank - 1:
            return False
        at = batch_norm_affine(node)
        if at is None or at[0].shape[0] != x.type.shape[-1]:
            return False
        return fold_affine(node, affine, at[0], at[1], node.inputs[4], rw)


class DecomposeBatchNorm(RewritePattern):
    """batch_norm(x) with constant parameters -> add(mul(x, a), t) with folded constants a, t
    shaped to broadcast along the batch-norm axis."""

    root = "batch_norm"

    def match_and_rewrite(self, node, rw):
        x, out = node.inputs[0], node.outputs[0]
        at = batch_norm_affine(node)
        if at is None:
            return False
        a, t = at
        axis = node.attrs["axis"] % x.type.rank
        shape = (a.shape[0],) + (1,) * (x.type.rank - 1 - axis)
        dt = out.type.dtype.np
        a_arr, t_arr = a.astype(dt).reshape(shape), t.astype(dt).reshape(shape)
        # The broadcast must give exactly the batch norm's type (a symbolic channel dim would
        # become static): check before creating anything.
        ctype = TensorType(out.type.dtype, shape)
        binop = get_op("mul")
        try:
            [mt] = binop.infer([x.type, ctype], {})
        except InferenceError:
            return False
        if mt != out.type or x.type != out.type:
            return False
        a_val = rw.constant(a_arr, like=node, name=out.name and f"{out.name}/scale")
        t_val = rw.constant(t_arr, like=node, name=out.name and f"{out.name}/shift")
        m = rw.create("mul", [x, a_val], like=node, types=[out.type]).outputs[0]
        new = rw.create("add", [m, t_val], like=node, types=[out.type]).outputs[0]
        new.name, new.quant, new.layout = out.name, out.quant, out.layout
        rw.replace(node, [new])
        return True


# -- per-channel mul / add / sub ---------------------------------------------------------------

class FoldScale(RewritePattern):
    """mul(conv(x, W, b), s) or mul(s, conv(...)) with s a constant along the channel axis
    only -> conv(x, W*s, b*s)."""

    root = "mul"

    def match_and_rewrite(self, node, rw):
        for i in (0, 1):
            affine = fusable_producer(node.inputs[i])
            if affine is None:
                continue
            s = channel_vector(node.inputs[1 - i], node.inputs[i].type.shape[-1])
            if s is not None and fold_affine(node, affine, s, None, None, rw):
                return True
        return False


class FoldShift(RewritePattern):
    """add(conv(x, W, b), t), add(t, conv(...)) or sub(conv(...), t) with t a constant along
    the channel axis only -> conv(x, W, b + t) (b - t for sub)."""

    def __init__(self, op: str):
        assert op in ("add", "sub")
        self.root = op

    def match_and_rewrite(self, node, rw):
        for i in ((0, 1) if self.root == "add" else (0,)):
            affine = fusable_producer(node.inputs[i])
            if affine is None:
                continue
            src = node.inputs[1 - i]
            t = channel_vector(src, node.inputs[i].type.shape[-1])
            if t is None:
                continue
            if self.root == "sub":
                t = -t
            if fold_affine(node, affine, None, t, src, rw):
                return True
        return False


# -- activations -------------------------------------------------------------------------------

def activation_of(node: Node) -> str | None:
    """The fused `activation` attribute equivalent to this node, or None."""
    if node.op in ACTIVATION_OPS:
        return ACTIVATION_OPS[node.op]
    if node.op == "clip":
        return CLIP_ACTIVATIONS.get((float(node.attrs["min"]), float(node.attrs["max"])))
    return None


class FuseActivation(RewritePattern):
    """relu / relu6 / tanh / clip(0, 6) / clip(-1, 1) of an affine op without an activation
    -> that op with `activation` set."""

    def __init__(self, op: str):
        self.root = op

    def match_and_rewrite(self, node, rw):
        act = activation_of(node)
        if act is None or len(node.inputs) != 1:
            return False
        affine = fusable_producer(node.inputs[0])
        if affine is None:
            return False
        attrs = dict(affine.attrs)
        attrs["activation"] = act
        return rebuild(node, affine, list(affine.inputs), attrs, rw)


def clip_bounds(node: Node) -> tuple[float, float] | None:
    """(lo, hi) when `node` is min(max(x, lo), hi) (relu, relu6, clip), else None."""
    if node.op == "relu":
        return 0.0, np.inf
    if node.op == "relu6":
        return 0.0, 6.0
    if node.op == "clip":
        return float(node.attrs["min"]), float(node.attrs["max"])
    return None


class AbsorbActivation(RewritePattern):
    """relu / relu6 / clip after an affine op whose fused activation already keeps every
    result inside the clip bounds (relu after relu6, clip(-1, 1) after tanh, ...) -> the affine
    op's result. Nothing is fused: the node computes the identity there, so the affine op may
    have other users."""

    def __init__(self, op: str):
        self.root = op

    def match_and_rewrite(self, node, rw):
        bounds = clip_bounds(node)
        p = node.inputs[0].producer if len(node.inputs) == 1 else None
        if bounds is None or p is None or p.op not in AFFINE_OPS:
            return False
        rng = ACTIVATION_RANGES.get(p.attrs.get("activation", "none"))
        if rng is None or not node.inputs[0].type.dtype.is_float:
            return False
        if not (bounds[0] <= rng[0] and rng[1] <= bounds[1]):
            return False
        return forward(node, node.inputs[0], rw)


# -- pattern families --------------------------------------------------------------------------

def bias_patterns() -> list[RewritePattern]:
    return [FoldShift("add"), FoldShift("sub")]


def batchnorm_patterns() -> list[RewritePattern]:
    # Folding into the conv is tried before decomposing a batch_norm into mul + add.
    return [FoldBatchNormIntoAffine(), DecomposeBatchNorm(), FoldScale(), *bias_patterns()]


def activation_patterns() -> list[RewritePattern]:
    return [*(AbsorbActivation(op) for op in ("relu", "relu6", "clip")),
            *(FuseActivation(op) for op in (*ACTIVATION_OPS, "clip"))]


def fusion_patterns() -> list[RewritePattern]:
    return [*batchnorm_patterns(), *activation_patterns()]
