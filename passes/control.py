"""Control-flow lowering: `lower-scan` rewrites every `scan` into a `while` over a counter.

No file format has a scan: TFLite, SavedModel and TF.js run a `while` whose state is the
counter, the carry, the scanned inputs (read a row per step with `gather`) and one buffer per
stacked output (written a row per step with `dynamic_update_slice`), which is what
jax2tf and TFLiteConverter emit for `lax.scan` too. The backends for those formats run this
pass on a copy of the module; the JAX backend keeps `scan` and calls `lax.scan`.
"""

from __future__ import annotations

import numpy as np

from ..ir.errors import ConversionError, Diagnostic
from ..ir.graph import Graph, Module, Node, Value
from .base import Pass, register_pass


class _At:
    """Adds nodes to `graph` before `anchor` (or at the end), with one scope and loc."""

    def __init__(self, graph: Graph, anchor: Node | None, scope: str, loc: str):
        self.graph, self.anchor, self.scope, self.loc = graph, anchor, scope, loc

    def __call__(self, op: str, inputs, attrs=None, **kw) -> Value:
        return self.graph.add(op, inputs, attrs, before=self.anchor, scope=self.scope,
                              loc=self.loc, **kw).outputs[0]

    def const(self, array) -> Value:
        return self.graph.constant(np.asarray(array), before=self.anchor, scope=self.scope,
                                   loc=self.loc)


def _dim_source(dim: str, values) -> tuple[Value, int] | None:
    for v in values:
        for axis, d in enumerate(v.type.shape):
            if d == dim:
                return v, axis
    return None


def _shape_vector(at: _At, dims, sources) -> Value:
    """An i32 vector of `dims`: static sizes as constants, a symbol read at run time from a
    value in `sources` that has it (ConversionError when none does)."""
    parts = []
    for d in dims:
        if isinstance(d, int):
            parts.append(at.const(np.asarray([d], np.int32)))
            continue
        found = _dim_source(d, sources) if d != "?" else None
        if found is None:
            raise ConversionError("cannot lower scan to while", [Diagnostic(
                f"the stacked output size {d} is not a dim of any operand")])
        v, axis = found
        parts.append(at("slice", [at("shape_of", [v])], {"begin": [axis], "size": [1]}))
    return parts[0] if len(parts) == 1 else at("concat", parts, {"axis": 0})


def _static_length(node: Node, xs: list[Value]) -> int | None:
    """The scan's trip count when static, else None (read from xs[0] at run time)."""
    if node.attrs["length"] is not None:
        return node.attrs["length"]
    d = xs[0].type.shape[0]
    return d if isinstance(d, int) else None


def lower_scan(node: Node) -> Node:
    """Replaces `node` (a `scan`) by an equivalent `while`; returns the while node."""
    graph, body = node.graph, node.regions[0]
    n, reverse = node.attrs["num_carry"], node.attrs["reverse"]
    carry, xs = list(node.inputs[:n]), list(node.inputs[n:])
    at = _At(graph, node, node.scope, node.loc)
    static_len = _static_length(node, xs)
    sources = list(node.inputs) + list(graph.inputs)

    buffers = []
    for y in body.outputs[n:]:
        dims = [static_len if static_len is not None else xs[0].type.shape[0], *y.type.shape]
        zero = at.const(np.zeros((), y.type.dtype.np))
        if all(isinstance(d, int) for d in dims):
            buffers.append(at("broadcast_to", [zero], {"shape": dims}))
        else:
            buffers.append(at("dynamic_broadcast_to", [zero, _shape_vector(at, dims, sources)],
                              {"dims": dims}))
    counter = at.const(np.asarray(0, np.int32))
    state = [counter, *carry, *xs, *buffers]
    types = [counter.type, *[v.type for v in body.inputs[:n]], *[v.type for v in xs],
             *[b.type for b in buffers]]
    k_xs, k_buf = 1 + n, 1 + n + len(xs)

    def trip_count(args, inner: _At) -> Value:
        if static_len is not None:
            return inner.const(np.asarray(static_len, np.int32))
        size = inner("slice", [inner("shape_of", [args[k_xs]])], {"begin": [0], "size": [1]})
        return inner("reshape", [size], {"shape": []})

    cond = Graph("cond")
    cargs = [cond.add_input(t) for t in types]
    cat = _At(cond, None, node.scope, node.loc)
    cond.set_outputs([cat("less", [cargs[0], trip_count(cargs, cat)])])

    loop = Graph("body")
    bargs = [loop.add_input(t) for t in types]
    bat = _At(loop, None, node.scope, node.loc)
    i = bargs[0]
    step = i
    if reverse:
        last = bat("sub", [trip_count(bargs, bat), bat.const(np.asarray(1, np.int32))])
        step = bat("sub", [last, i])
    rows = [bat("gather", [x, step], {"axis": 0}) for x in bargs[k_xs:k_buf]]
    outs = loop.inline(body, bargs[1:1 + n] + rows)
    new_buffers = []
    for buf, y in zip(bargs[k_buf:], outs[n:]):
        start = bat("concat", [bat("reshape", [step], {"shape": [1]}),
                               bat.const(np.zeros(y.type.rank, np.int32))], {"axis": 0}) \
            if y.type.rank else bat("reshape", [step], {"shape": [1]})
        row = bat("expand_dims", [y], {"axis": 0})
        new_buffers.append(bat("dynamic_update_slice", [buf, row, start]))
    nxt = bat("add", [i, bat.const(np.asarray(1, np.int32))])
    loop.set_outputs([nxt, *outs[:n], *bargs[k_xs:k_buf], *new_buffers])

    w = graph.add("while", state, regions=[cond, loop], before=node, scope=node.scope,
                  loc=node.loc)
    results = list(w.outputs[1:1 + n]) + list(w.outputs[k_buf:])
    graph.replace_node(node, results)
    return w


def lower_scans(module: Module) -> bool:
    """Lowers every `scan` of `module` (in regions too) to `while`; True if there was one."""
    changed = False
    for g in list(module.all_graphs()):
        for node in list(g):
            if node.op == "scan":
                lower_scan(node)
                changed = True
    # A scan nested in a scan's body was copied into the new while's body: lower again.
    if changed:
        lower_scans(module)
    return changed


def without_scans(module: Module) -> Module:
    """`module` itself when it has no scan, else a copy with every scan lowered to while."""
    if not any(n.op == "scan" for g in module.graphs.values() for n in g.walk()):
        return module
    copy = module.clone()
    lower_scans(copy)
    return copy


@register_pass("lower-scan")
class LowerScan(Pass):
    """Rewrites every scan into a while over a counter (rows read with gather, stacked outputs
    written with dynamic_update_slice), as file-format backends need."""

    def run(self, module, ctx):
        return lower_scans(module)
