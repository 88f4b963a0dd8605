"""Canonicalization of control flow (ops with regions, ir/ops/control.py).

- `InlineKnownBranch`: an `if` whose predicate is a constant becomes the branch taken.
- `UnrollShortScan`: a `scan` of a static length up to `limit` (a `fori_loop` over a few
  layers, a short RNN) is unrolled: the body is copied once per step, rows read with `slice`
  and the stacked outputs built with `concat`. Straight-line code is what every backend runs
  fastest (no WHILE subgraph calls in TFLite), and it lets the other patterns see across
  iterations.
- `HoistInvariants` (loop-invariant code motion): a node of a `while` or `scan` body that
  only reads constants and loop-invariant state (state the body returns unchanged) is
  computed once before the loop and carried in as new invariant state.
- `DropUnusedState`: invariant loop state that nothing reads any more is removed.

Regions are canonicalized themselves too: the canonicalize pass walks every graph, nested
ones included (`Module.all_graphs`).
"""

from __future__ import annotations

from ...ir.graph import Graph, Node, Value
from ..rewrite import RewritePattern, Rewriter

DEFAULT_UNROLL_LIMIT = 8    # scan steps
UNROLL_NODE_BUDGET = 512    # copied body nodes in all


class InlineKnownBranch(RewritePattern):
    root = "if"

    def match_and_rewrite(self, node: Node, rw: Rewriter) -> bool:
        pred = node.inputs[0].const
        if pred is None:
            return False
        region = node.regions[0 if bool(pred) else 1]
        rw.replace(node, rw.inline(region, node.inputs[1:], like=node))
        return True


class UnrollShortScan(RewritePattern):
    root = "scan"

    def __init__(self, limit: int = DEFAULT_UNROLL_LIMIT):
        self.limit = limit

    def match_and_rewrite(self, node: Node, rw: Rewriter) -> bool:
        n, body = node.attrs["num_carry"], node.regions[0]
        xs = node.inputs[n:]
        length = node.attrs["length"] if node.attrs["length"] is not None else \
            xs[0].type.shape[0]
        if not isinstance(length, int) or not 0 < length <= self.limit or \
                length * sum(1 for _ in body.walk()) > UNROLL_NODE_BUDGET:
            return False
        carry = list(node.inputs[:n])
        ys: list[list[Value]] = [[] for _ in body.outputs[n:]]
        steps = range(length - 1, -1, -1) if node.attrs["reverse"] else range(length)
        for t in steps:
            rows = []
            for x in xs:
                begin = [t] + [0] * (x.type.rank - 1)
                size = [1] + [-1] * (x.type.rank - 1)
                row = rw.create("slice", [x], {"begin": begin, "size": size}, like=node).output
                rows.append(rw.create("squeeze", [row], {"axes": [0]}, like=node).output)
            outs = rw.inline(body, carry + rows, like=node)
            carry = outs[:n]
            for k, y in enumerate(outs[n:]):
                ys[k].append(rw.create("expand_dims", [y], {"axis": 0}, like=node).output)
        if node.attrs["reverse"]:
            ys = [list(reversed(rows)) for rows in ys]
        stacked = [rw.create("concat", rows, {"axis": 0}, like=node).output for rows in ys]
        # The carry keeps the loop's declared type (a body may refine a `?` dim).
        rw.replace(node, carry + stacked)
        return True


def _invariant_inputs(node: Node) -> set[int]:
    """Positions of the state a loop body returns unchanged (its own input)."""
    body = node.regions[-1]
    n = len(body.inputs) if node.op == "while" else node.attrs["num_carry"]
    return {k for k in range(n) if body.outputs[k] is body.inputs[k]}


def _hoistable(body: Graph, invariant: set[int]) -> Node | None:
    """The first non-constant node of `body` computed only from constants and invariant
    inputs (and owning no regions), or None."""
    fixed = {id(body.inputs[k]) for k in invariant}
    for n in body:
        if n.op == "constant":
            fixed.add(id(n.outputs[0]))
            continue
        if not n.regions and n.inputs and all(id(v) in fixed for v in n.inputs):
            return n
    return None


class HoistInvariants(RewritePattern):
    """Loop-invariant code motion for `while` and `scan` (one node per match)."""

    def match_and_rewrite(self, node: Node, rw: Rewriter) -> bool:
        if node.op not in ("while", "scan"):
            return False
        body = node.regions[-1]
        invariant = _invariant_inputs(node)
        if not invariant:
            return False
        inner = _hoistable(body, invariant)
        if inner is None:
            return False
        # Rebuild `inner` outside: its inputs are the loop's operands / copied constants.
        outside = []
        for v in inner.inputs:
            if v.producer is None:
                outside.append(node.inputs[body.inputs.index(v)])
            else:
                outside.append(rw.constant(v.const, like=node))
        copy = rw.create(inner.op, outside, dict(inner.attrs), like=inner,
                         types=[o.type for o in inner.outputs])
        _carry_in(node, inner, copy)
        rw.changed = True
        return True


def _carry_in(loop: Node, inner: Node, copy: Node) -> None:
    """Makes `copy`'s results new invariant state of `loop` (after the existing state) and
    points the body's uses of `inner`'s results at them; `inner` is erased."""
    body = loop.regions[-1]
    n_state = len(body.inputs) if loop.op == "while" else loop.attrs["num_carry"]
    for out, new in zip(inner.outputs, copy.outputs):
        # State positions: while = all inputs; scan = the carry (before the rows).
        arg = _insert_input(body, n_state, out.type)
        if loop.op == "while":
            _insert_input(loop.regions[0], n_state, out.type)
        out.replace_all_uses_with(arg)
        outs = list(body.outputs)
        outs.insert(n_state, arg)
        body.set_outputs(outs)
        loop.inputs.insert(n_state, new)
        _relink_operands(loop)
        if loop.op == "scan":
            loop.attrs["num_carry"] += 1
        _new_result(loop, n_state, out.type)
        n_state += 1
    body.erase(inner)
    for v in inner.inputs:  # constants only the hoisted node read
        if v.producer is not None and v.producer.graph is body and not v.uses:
            body.erase(v.producer)


def _insert_input(graph: Graph, at: int, type) -> Value:
    v = Value(type)
    graph.inputs.insert(at, v)
    return v


def _relink_operands(node: Node) -> None:
    """Rebuilds the use entries of `node`'s operands after an insertion shifted them."""
    for v in node.inputs:
        for key in [k for k in v.uses if k[0] is node]:
            del v.uses[key]
    for i, v in enumerate(node.inputs):
        v.uses[(node, i)] = None


def _new_result(node: Node, at: int, type) -> Value:
    """A new (unused) result of `node` at position `at`; later results shift."""
    v = Value(type, producer=node)
    node.outputs.insert(at, v)
    for i, out in enumerate(node.outputs):
        out.index = i
    return v


class DropUnusedState(RewritePattern):
    """Removes loop state nobody reads: invariant (returned unchanged by the body), unused in
    the body and the condition, and its final value unused after the loop (what hoisting and
    closed-over values the loop never needed leave behind)."""

    def match_and_rewrite(self, node: Node, rw: Rewriter) -> bool:
        if node.op not in ("while", "scan"):
            return False
        body = node.regions[-1]
        cond = node.regions[0] if node.op == "while" else None
        for k in sorted(_invariant_inputs(node), reverse=True):
            arg = body.inputs[k]
            if len(arg.uses) != 1 or node.outputs[k].uses or \
                    (cond is not None and cond.inputs[k].uses):
                continue
            _drop_state(node, k)
            rw.changed = True
            rw.worklist.push(node)
            return True
        return False


def _drop_state(loop: Node, k: int) -> None:
    body = loop.regions[-1]
    outs = list(body.outputs)
    del outs[k]
    body.set_outputs(outs)
    del body.inputs[k]
    if loop.op == "while":
        del loop.regions[0].inputs[k]
    else:
        loop.attrs["num_carry"] -= 1
    old = loop.inputs[k]
    for key in [u for u in old.uses if u[0] is loop]:
        del old.uses[key]
    del loop.inputs[k]
    _relink_operands(loop)
    del loop.outputs[k]
    for i, out in enumerate(loop.outputs):
        out.index = i


def control_patterns(unroll_limit: int = DEFAULT_UNROLL_LIMIT) -> list[RewritePattern]:
    """The control-flow canonicalization patterns."""
    return [InlineKnownBranch(), UnrollShortScan(unroll_limit), HoistInvariants(),
            DropUnusedState()]
