"""Graph-wide cleanups: dead-code elimination and common-subexpression elimination."""

from __future__ import annotations

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


class _TensorKey:
    """A constant payload as a CSE key: equal exactly when dtype, shape and bytes are equal.
    It hashes a fingerprint (dtype, shape and up to 256 sampled bytes) and compares the full
    bytes only when two fingerprints collide, so the common case, weights that all differ,
    reads a few bytes of each instead of hashing every weight on every CSE run."""

    __slots__ = ("raw", "dtype", "shape", "_hash")

    def __init__(self, v: np.ndarray):
        # The raw bytes as a uint8 view (ml_dtypes such as bf16 compare by bytes too).
        self.raw = np.ascontiguousarray(v).reshape(-1).view(np.uint8)
        self.dtype, self.shape = v.dtype.str, v.shape
        n = self.raw.size
        sample = self.raw if n <= 256 else self.raw[::n // 256 + 1]
        self._hash = hash((self.dtype, self.shape, n, sample.tobytes(),
                           self.raw[-8:].tobytes()))

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other) -> bool:
        return (isinstance(other, _TensorKey) and self._hash == other._hash
                and self.dtype == other.dtype and self.shape == other.shape
                and np.array_equal(self.raw, other.raw))


def _freeze(v):
    if isinstance(v, np.ndarray):
        return ("tensor", _TensorKey(v))
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
