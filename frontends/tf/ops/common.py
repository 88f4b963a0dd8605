"""Helpers shared by the op families of `ops`: reading NodeDef attributes and scalar axes, and
reshaping to symbolic shapes (`reshape_to`)."""

from __future__ import annotations

import numpy as np

from ....ir.types import TensorType
from ..context import LiftError, TFNode
from ..shapes import SymbolicError, SymDim, product, to_ir_dim

_REQUIRED = object()


def node_attr(node: TFNode, name: str, default=_REQUIRED):
    """The value of NodeDef attribute `name` (strings decoded, lists as lists); `default`
    when it is absent, LiftError when it is absent and required."""
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


def static_axis(ctx, e, what="axis") -> int:
    """The int of a scalar (or one-element) constant operand such as a concat axis."""
    a = np.asarray(ctx.static(e, f"{what}")).ravel()
    if a.size != 1:
        raise LiftError(f"{what} must be a scalar, got {a.tolist()}")
    return int(a[0])


def reshape_to(ctx, x, dims):
    """Reshapes x to `dims` (ints, at most one -1, SymDims). A single run-time dim becomes the
    IR reshape's -1; the result type keeps its symbol (`batch`) where it is known. More
    run-time dims make a `dynamic_reshape` to a shape computed from `shape_of`."""
    dims = list(dims)
    syms = [i for i, d in enumerate(dims) if isinstance(d, SymDim)]
    if -1 in dims and syms:
        # Solve the -1 from the element count: total / product(other dims), exactly.
        fill_at = dims.index(-1)
        known = product(d for i, d in enumerate(dims) if i != fill_at)
        try:
            dims[fill_at] = product(ctx.sym_shape(x)) // known
        except SymbolicError:
            pass        # left to the run-time reshape below
        syms = [i for i, d in enumerate(dims) if isinstance(d, SymDim)]
    if not syms:
        return ctx.emit1("reshape", [x], {"shape": [int(d) for d in dims]})
    if len(syms) > 1 or -1 in dims:
        # Two run-time dims (or a -1 the import-time arithmetic cannot solve): the target
        # shape is computed at run time.
        out_dims = [d if d != -1 else SymDim.of(ctx.fresh_symbol()) for d in dims]
        return ctx.dynamic("dynamic_reshape", [x, ctx.shape_value(dims)], out_dims)
    shape = [-1 if i == syms[0] else int(d) for i, d in enumerate(dims)]
    out_type = TensorType(ctx.type(x).dtype, [to_ir_dim(d) for d in dims])
    v = ctx.emit1("reshape", [x], {"shape": shape}, types=[out_type])
    ctx.set_sym_shape(v, dims)
    return v


def flat_type(ctx, x, flat):
    """The IR type of x reshaped to the 2-D `flat` (dims may be SymDims)."""
    return TensorType(ctx.type(x).dtype, [to_ir_dim(d) for d in flat])
