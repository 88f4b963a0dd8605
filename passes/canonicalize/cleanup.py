"""Graph-wide cleanups: dead-code elimination and common-subexpression elimination."""

from __future__ import annotations

import hashlib

import numpy as np

from ...ir.graph import Graph, Node
from ..rewrite import is_dead


def eliminate_dead_code(graph: Graph) -> bool:
    """Erases nodes none of whose results is used (every op is pure). One reverse sweep:
    erasing a node can only make earlier nodes dead."""
    changed = False
    node = graph.last
    while node is not None:
        prev = node.prev
        if is_dead(node):
            graph.erase(node)
            changed = True
        node = prev
    return changed


def _freeze(v):
    if isinstance(v, np.ndarray):
        # Hash the raw bytes (a uint8 view: the buffer protocol rejects ml_dtypes like bf16).
        raw = np.ascontiguousarray(v).reshape(-1).view(np.uint8)
        return ("tensor", v.dtype.str, v.shape, hashlib.blake2b(raw).digest())
    if isinstance(v, float) and v != v:
        return ("nan",)  # NaN != NaN would make equal attrs look different
    return (type(v).__name__, v)


def _cse_key(node: Node):
    attrs = tuple([(k, _freeze(v)) for k, v in sorted(node.attrs.items())]) if node.attrs else ()
    outs = tuple((o.type, o.quant, o.layout) for o in node.outputs)
    # Constants merge across layers (shared weights are harmless); computations only within
    # one scope, so per-layer configuration (quantization, layouts) still sees every layer.
    scope = None if node.op == "constant" else node.scope
    if node.regions:
        # Two loops with equal operands may still differ in their bodies: never merged.
        return (node.op, id(node))
    return (node.op, tuple(id(v) for v in node.inputs), attrs, outs, scope)


def eliminate_common_subexpressions(graph: Graph) -> bool:
    """Replaces a node by an earlier identical one (same op, operands, attributes, result
    types). Walking in topological order, the earlier node always dominates the later."""
    seen: dict[tuple, Node] = {}
    changed = False
    for node in graph:
        key = _cse_key(node)
        first = seen.get(key)
        if first is None:
            seen[key] = node
            continue
        graph.replace_node(node, first.outputs)
        changed = True
    return changed
