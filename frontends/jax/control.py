"""JAX control flow -> IR region ops: `while` (lax.while_loop, fori_loop), `cond` (lax.cond,
lax.switch) and `scan` (lax.scan, Flax nn.scan / nn.RNN).

A condition or switch index known at import time lifts only the branch taken. Region
bodies are lifted by a sub-lifter into graphs of their own (`Lifter.region`): values the body
closes over are carried into the region as extra operands (constants are copied in instead),
so every region is isolated from above, as TFLite subgraphs and TF functions are.
"""

from __future__ import annotations

import numpy as np

from ...ir.types import DType
from .context import Const, LiftError, ir_dim
from .ops import lowers


def _split(seq, *counts):
    out, i = [], 0
    for n in counts:
        out.append(list(seq[i:i + n]))
        i += n
    out.append(list(seq[i:]))
    return out


def _carried(ctx, entries, avals):
    """Loop state must be graph values (it changes from one iteration to the next) of the
    full shape: a splat the lifter kept small (`jnp.zeros((batch, 4))` as a [1, 4]
    constant, broadcast implicitly where used) is broadcast out first."""
    out = []
    for e, aval in zip(entries, avals):
        dims = tuple(ir_dim(d) for d in aval.shape)
        if tuple(ctx.shape(e)) != dims:
            if all(isinstance(d, int) for d in dims):
                e = ctx.emit("broadcast_to", [e], {"shape": list(dims)})
            else:
                e = ctx.emit("dynamic_broadcast_to", [e, ctx.shape_value(list(aval.shape))],
                             {"dims": list(dims)})
        out.append(ctx.value(e))
    return out


def _closure(entries):
    """The entries a body closes over that must be carried (non-constant ones)."""
    return [e for e in entries if not isinstance(e, Const)]


# -- while -------------------------------------------------------------------------------------

@lowers("while")
def _while(ctx, eqn, ins):
    p = eqn.params
    cond_consts, body_consts, init = _split(ins, p["cond_nconsts"], p["body_nconsts"])
    init = _carried(ctx, init, [v.aval for v in eqn.invars[len(ins) - len(init):]])
    cc, bc = _closure(cond_consts), _closure(body_consts)
    n_cc, n_bc = len(cc), len(bc)
    # State: [values cond closes over, values body closes over, the loop carry].
    state = cc + bc + init

    def region_args(args, consts, own_first):
        """The jaxpr arguments of one region: its consts (region inputs where carried,
        constants otherwise) then the carry."""
        carried = iter(args[own_first:own_first + len(_closure(consts))])
        return [c if isinstance(c, Const) else next(carried) for c in consts]

    def build_cond(sub, args):
        (ok,) = sub.lift_closed(p["cond_jaxpr"], region_args(args, cond_consts, 0)
                                + args[n_cc + n_bc:])
        return [ok]

    def build_body(sub, args):
        outs = sub.lift_closed(p["body_jaxpr"], region_args(args, body_consts, n_cc)
                               + args[n_cc + n_bc:])
        return args[:n_cc + n_bc] + outs  # closed-over values ride along unchanged

    cond = ctx.region("cond", state, build_cond)
    body = ctx.region("body", state, build_body)
    if cond is None or body is None:
        raise LiftError("the loop's body could not be lifted (see the problems above)")
    node = ctx.graph.add("while", cond[1], regions=[cond[0], body[0]], scope=ctx.scope,
                         loc=ctx.loc)
    return list(node.outputs[n_cc + n_bc:])


# -- cond / switch -----------------------------------------------------------------------------

@lowers("cond")
def _cond(ctx, eqn, ins):
    index, *ops = ins
    branches = list(eqn.params["branches"])
    k = ctx.const(index)
    if k is not None:  # known at import time: only the branch taken
        k = int(np.clip(int(k), 0, len(branches) - 1))
        return ctx.lift_closed(branches[k], ops)
    return _switch(ctx, index, branches, ops, first=0)


def _switch(ctx, index, branches, ops, first):
    """`branches[first:]` chosen by `index` (clamped into range, as lax.switch does) as
    nested ifs: if index <= first then branches[first] else (the rest)."""
    if len(branches) - first == 1:
        return ctx.lift_closed(branches[first], ops)
    bound = Const(np.asarray(first, ctx.dtype(index).np))
    if ctx.dtype(index) == DType.bool:
        pred = ctx.emit("logical_not", [index])  # lax.cond: branches = (false, true)
    else:
        pred = ctx.emit("less_equal", [index, bound])
    args = [index] + ops

    def build_then(sub, a):
        return sub.lift_closed(branches[first], a[1:])

    def build_else(sub, a):
        return _switch(sub, a[0], branches, a[1:], first + 1)

    then = ctx.region("then", args, build_then)
    else_ = ctx.region("else", args, build_else)
    if then is None or else_ is None:
        raise LiftError("a branch could not be lifted (see the problems above)")
    # Both regions take the same entries, so their Value operands agree.
    node = ctx.graph.add("if", [ctx.value(pred)] + then[1], regions=[then[0], else_[0]],
                         scope=ctx.scope, loc=ctx.loc)
    return list(node.outputs)


# -- scan --------------------------------------------------------------------------------------

@lowers("scan")
def _scan(ctx, eqn, ins):
    p = eqn.params
    consts, init, xs = _split(ins, p["num_consts"], p["num_carry"])
    first = p["num_consts"]
    init = _carried(ctx, init, [v.aval for v in eqn.invars[first:first + len(init)]])
    xs = _carried(ctx, xs, [v.aval for v in eqn.invars[first + len(init):]])
    closed = _closure(consts)
    n_c = len(closed)

    def build(sub, args):
        carried = iter(args[:n_c])
        body_consts = [c if isinstance(c, Const) else next(carried) for c in consts]
        outs = sub.lift_closed(p["jaxpr"], body_consts + args[n_c:])
        return args[:n_c] + outs

    # The body sees one row of each xs: region inputs are typed as such.
    row_entries = [_Row(x) for x in xs]
    body = ctx.region("body", closed + init + row_entries, build)
    if body is None:
        raise LiftError("the scan body could not be lifted (see the problems above)")
    attrs = {"num_carry": n_c + len(init), "reverse": bool(p["reverse"])}
    if not xs:
        attrs["length"] = int(p["length"])
    node = ctx.graph.add("scan", closed + init + xs, attrs, regions=[body[0]],
                         scope=ctx.scope, loc=ctx.loc)
    return list(node.outputs[n_c:])


class _Row:
    """Stands for one row of a scanned value when typing the scan body's inputs."""

    def __init__(self, value):
        self.type = value.type.with_shape(value.type.shape[1:])
        self.name = None
