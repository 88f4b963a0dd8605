"""Pattern rewriting: small match-and-rewrite patterns applied by a greedy worklist driver to a
fixed point, in the manner of MLIR's greedy pattern rewriter.

A pattern names the op it is rooted at (or None for any op) and implements
`match_and_rewrite(node, rw) -> bool`. It must either leave the IR untouched and return False,
or rewrite through the `Rewriter` (which keeps the worklist and the change flag right) and
return True. The driver also erases dead nodes as it goes, so rewrites that orphan a chain of
producers clean it up without a separate pass.
"""

from __future__ import annotations

import abc
from typing import Any, Iterable, Sequence

import numpy as np

from ..ir.errors import TensorforgeError
from ..ir.graph import Graph, Node, Value
from ..ir.types import TensorType


class RewritePattern(abc.ABC):
    """Base class: set `root` to an op name (or leave None to see every node)."""

    root: str | None = None

    @abc.abstractmethod
    def match_and_rewrite(self, node: Node, rw: "Rewriter") -> bool:
        """Rewrites through `rw` and returns True, or returns False leaving the IR alone."""


class Rewriter:
    """The mutation API given to patterns: it records changes and feeds the worklist."""

    def __init__(self, graph: Graph, worklist: "_Worklist"):
        self.graph = graph
        self.worklist = worklist
        self.changed = False
        self.anchor: Node | None = None  # new nodes go before the node being rewritten

    def create(self, op: str, inputs: Sequence[Value], attrs: dict[str, Any] | None = None, *,
               like: Node, types: Sequence[TensorType] | None = None) -> Node:
        """Inserts a new node before the node being rewritten, with `like`'s scope and loc."""
        node = self.graph.add(op, inputs, attrs, types=types, scope=like.scope, loc=like.loc,
                              before=self.anchor)
        self.changed = True
        self.worklist.push(node)
        return node

    def constant(self, array: np.ndarray, *, like: Node, name: str | None = None) -> Value:
        v = self.graph.constant(array, name, scope=like.scope, loc=like.loc, before=self.anchor)
        self.changed = True
        return v

    def inline(self, region: Graph, args: Sequence[Value], *, like: Node) -> list[Value]:
        """Copies `region`'s nodes before the node being rewritten (its inputs bound to
        `args`, empty scopes taking `like`'s); returns the copies of its outputs."""
        before = self.anchor.prev if self.anchor is not None else self.graph.last
        outs = self.graph.inline(region, args, before=self.anchor, scope=like.scope)
        node = before.next if before is not None else self.graph.first
        while node is not None and node is not self.anchor:
            self.worklist.push(node)
            node = node.next
        self.changed = True
        return outs

    def replace(self, node: Node, new_values: Sequence[Value]) -> None:
        """Replaces every use of `node`'s results with `new_values` and erases `node`."""
        for old, new in zip(node.outputs, new_values, strict=True):
            for user, _ in old.uses:
                if isinstance(user, Node):
                    self.worklist.push(user)
            if new.producer is not None:
                self.worklist.push(new.producer)
            old.replace_all_uses_with(new)
        self.erase(node)

    def erase(self, node: Node) -> None:
        operands = list(node.inputs)
        self.graph.erase(node)
        for v in operands:
            if v.producer is not None:
                self.worklist.push(v.producer)  # it may have become dead
            # An operand left with a single use may let that user match a single-use pattern
            # (fusion) now. Only then: re-queueing every user of a widely shared value (a
            # common constant) on each erase would make the driver quadratic.
            if len(v.uses) == 1:
                [(user, _)] = v.uses
                if isinstance(user, Node):
                    self.worklist.push(user)
        self.changed = True

    def set_input(self, node: Node, i: int, value: Value) -> None:
        old = node.inputs[i]
        node.set_input(i, value)
        if old.producer is not None:
            self.worklist.push(old.producer)
        self.worklist.push(node)
        self.changed = True


class _Worklist:
    """A LIFO of nodes without duplicates."""

    def __init__(self, nodes: Iterable[Node]):
        self.stack = list(nodes)
        self.stack.reverse()  # pop() then yields the graph order: producers first
        self.members = {id(n) for n in self.stack}

    def push(self, node: Node) -> None:
        if id(node) not in self.members:
            self.members.add(id(node))
            self.stack.append(node)

    def pop(self) -> Node | None:
        if not self.stack:
            return None
        node = self.stack.pop()
        self.members.discard(id(node))
        return node


def is_dead(node: Node) -> bool:
    for out in node.outputs:
        if out.uses:
            return False
    return True


def apply_patterns_greedily(graph: Graph, patterns: Sequence[RewritePattern], *,
                            max_rewrites: int | None = None, stats: dict | None = None) -> bool:
    """Applies `patterns` (and dead-node erasure) until nothing matches. Returns True if the
    graph changed. Raises if the rewrite budget (default 10 per node + 1000) runs out, which
    means two patterns undo each other."""
    by_op: dict[str, list[RewritePattern]] = {}
    generic: list[RewritePattern] = []
    for p in patterns:
        (generic if p.root is None else by_op.setdefault(p.root, [])).append(p)

    candidates: dict[str, list[RewritePattern]] = {}
    worklist = _Worklist(graph)
    rw = Rewriter(graph, worklist)
    budget = max_rewrites if max_rewrites is not None else 10 * len(graph) + 1000
    rewrites = 0
    while True:
        node = worklist.pop()
        if node is None:
            break
        if node.graph is not graph:
            continue  # erased since it was queued
        if is_dead(node):
            rw.erase(node)
            continue
        rw.anchor = node
        todo = candidates.get(node.op)
        if todo is None:
            todo = candidates[node.op] = by_op.get(node.op, []) + generic
        for p in todo:
            if p.match_and_rewrite(node, rw):
                rewrites += 1
                if stats is not None:
                    key = type(p).__name__
                    stats[key] = stats.get(key, 0) + 1
                if rewrites > budget:
                    raise TensorforgeError(
                        f"pattern rewriting did not converge after {budget} rewrites "
                        f"(last: {type(p).__name__} on {node.describe()})")
                break
    return rw.changed
