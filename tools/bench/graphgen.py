"""Deterministic synthetic graphs for benchmarks: a long computation over one input with the
things canonicalization removes sprinkled through it (constant subtrees, x+0 and x*1, double
negation, reshape and transpose round trips, duplicated subexpressions, dead branches)."""

from __future__ import annotations

import numpy as np

from ...ir.graph import Graph, Module
from ...ir.types import DType, TensorType


def synthetic_module(num_nodes: int, seed: int = 0) -> Module:
    """A module of about `num_nodes` nodes (excluding nothing: constants count)."""
    rng = np.random.default_rng(seed)
    g = Graph()
    x = g.add_input(TensorType(DType.f32, ("batch", 8, 16)), "x")
    zero = g.constant(np.float32(0.0), "zero")
    one = g.constant(np.ones(16, np.float32), "one")
    cur = x
    live = [x]
    while len(g) < num_nodes:
        kind = rng.integers(0, 8)
        if kind == 0:    # constant subtree folded away
            c = g.constant(rng.standard_normal(16).astype(np.float32))
            d = g.add("mul", [c, c]).output
            e = g.add("tanh", [d]).output
            cur = g.add("add", [cur, e]).output
        elif kind == 1:  # neutral elements
            cur = g.add("add", [cur, zero]).output
            cur = g.add("mul", [cur, one]).output
        elif kind == 2:  # involution and idempotence
            cur = g.add("neg", [g.add("neg", [cur]).output]).output
            cur = g.add("relu", [g.add("relu", [cur]).output]).output
        elif kind == 3:  # reshape / transpose round trips
            r = g.add("reshape", [cur], {"shape": (-1, 128)}).output
            cur = g.add("reshape", [r], {"shape": (-1, 8, 16)}).output
            t = g.add("transpose", [cur], {"perm": (0, 2, 1)}).output
            cur = g.add("transpose", [t], {"perm": (0, 2, 1)}).output
        elif kind == 4:  # common subexpressions
            a = g.add("sigmoid", [cur]).output
            b = g.add("sigmoid", [cur]).output
            cur = g.add("add", [a, b]).output
        elif kind == 5:  # dead branch
            g.add("exp", [g.add("neg", [cur]).output])
        elif kind == 6:  # real work that stays
            other = live[rng.integers(0, len(live))]
            cur = g.add("maximum", [cur, other]).output
        else:
            cur = g.add("tanh", [cur]).output
        live.append(cur)
        if len(live) > 64:
            live = live[-64:]
    g.set_outputs([cur])
    return Module([g])
