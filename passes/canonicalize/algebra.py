"""Algebraic identities: x+0, x-0, x*1, x/1, x**1, f(f(x)) for involutions and idempotent ops,
identity and same-dtype cast removal, and x**2 / x**0.5 as a multiply / sqrt."""

from __future__ import annotations

import numpy as np

from ...ir.graph import Node, Value
from ...ir.types import DType
from ...ir.ops import all_ops
from ..rewrite import RewritePattern, Rewriter
from .fold import splat_value


def can_forward(src: Value, dst: Value) -> bool:
    """True if `dst` may be replaced by `src`: same type (so no implicit broadcast or dtype
    change is lost), same quantization, and no sharding layout dropped."""
    return (src.type == dst.type and src.quant == dst.quant
            and (dst.layout is None or src.layout == dst.layout))


def forward(node: Node, src: Value, rw: Rewriter) -> bool:
    """Replaces `node`'s single result with `src` when that keeps the types."""
    dst = node.outputs[0]
    if not can_forward(src, dst):
        return False
    if src.name is None and not src.is_graph_input:
        src.name = dst.name  # keep a meaningful name (e.g. `logits`) alive
    rw.replace(node, [src])
    return True


class RemoveIdentity(RewritePattern):
    """identity(x) -> x"""

    root = "identity"

    def match_and_rewrite(self, node, rw):
        return forward(node, node.inputs[0], rw)


class RemoveNoopCast(RewritePattern):
    """cast(x) to x's own dtype -> x"""

    root = "cast"

    def match_and_rewrite(self, node, rw):
        return forward(node, node.inputs[0], rw)


class BinaryIdentity(RewritePattern):
    """x+0, 0+x, x-0, x*1, 1*x, x/1, x**1 -> x (only where the neutral operand does not
    broadcast the result to a bigger shape)."""

    # op -> (neutral element, may the neutral be on the left?)
    NEUTRAL = {"add": (0, True), "sub": (0, False), "mul": (1, True), "div": (1, False),
               "pow": (1, False)}

    def __init__(self, op: str):
        self.root = op
        self.neutral, self.commutes = self.NEUTRAL[op]

    def match_and_rewrite(self, node, rw):
        lhs, rhs = node.inputs
        if splat_value(rhs) == self.neutral and forward(node, lhs, rw):
            return True
        return self.commutes and splat_value(lhs) == self.neutral and forward(node, rhs, rw)


class Involution(RewritePattern):
    """f(f(x)) -> x for an op with the `involution` trait (neg, logical_not)."""

    def __init__(self, op: str):
        self.root = op  # one instance per op: the driver dispatches by op, not every node

    def match_and_rewrite(self, node, rw):
        inner = node.inputs[0].producer
        if inner is None or inner.op != node.op:
            return False
        return forward(node, inner.inputs[0], rw)


class Idempotent(RewritePattern):
    """f(f(x)) -> f(x) for an op with the `idempotent` trait and equal attributes (relu, abs,
    floor, clip with the same bounds, ...)."""

    def __init__(self, op: str):
        self.root = op

    def match_and_rewrite(self, node, rw):
        inner = node.inputs[0].producer if len(node.inputs) == 1 else None
        if inner is None or inner.op != node.op or inner.attrs != node.attrs:
            return False
        return forward(node, inner.outputs[0], rw)


def _ops_with(trait: str) -> list[str]:
    return sorted(name for name, d in all_ops().items() if trait in d.traits)


class SquareByMultiply(RewritePattern):
    """x ** 2 -> x * x, x ** 0.5 -> sqrt(x) for floats (RMS norms square their input; a
    runtime's POW is a general power function, several times slower than MUL), when the
    exponent does not broadcast the result to a bigger shape."""

    root = "pow"

    def match_and_rewrite(self, node, rw):
        x, e = node.inputs
        out = node.outputs[0]
        if not x.type.dtype.is_float or x.type != out.type:
            return False
        exponent = splat_value(e)
        if exponent == 2:
            new = rw.create("mul", [x, x], like=node).outputs[0]
        elif exponent == 0.5:
            new = rw.create("sqrt", [x], like=node).outputs[0]
        else:
            return False
        new.name, new.quant, new.layout = out.name, out.quant, out.layout
        rw.replace(node, [new])
        return True


class SignBitTest(RewritePattern):
    """The sign-bit idioms of Keras's `ops.signbit` (and so of its float argmax/argmin):
    `(v & INT_MIN) < 0` -> `v < 0` for a signed integer v, and `bitcast(x, int) < 0` for a
    float x -> `x < 0 or (x == 0 and 1 / x < 0)` (true for -0.0; the one difference is a NaN
    with its sign bit set, which reads as not negative). No target needs bit ops then."""

    root = "less"

    def match_and_rewrite(self, node, rw):
        v, zero = node.inputs
        if splat_value(zero) != 0 or zero.type.shape != () or v.producer is None:
            return False
        src = v.producer
        if src.op == "bitwise_and" and np.dtype(v.type.dtype.np).kind == "i":
            lowest = int(np.iinfo(v.type.dtype.np).min)
            for a, b in (src.inputs, src.inputs[::-1]):
                if splat_value(b) == lowest and b.type.rank == 0 and a.type == v.type:
                    rw.replace(node, [rw.create("less", [a, zero], like=node).outputs[0]])
                    return True
            return False
        if src.op == "bitcast" and src.inputs[0].type.dtype == DType.f32:
            x = src.inputs[0]

            def op(name, *ins):
                return rw.create(name, list(ins), like=node).outputs[0]
            fzero = rw.constant(np.zeros((), np.float32), like=node)
            one = rw.constant(np.ones((), np.float32), like=node)
            negative_zero = op("logical_and", op("equal", x, fzero),
                               op("less", op("div", one, x), fzero))
            rw.replace(node, [op("logical_or", op("less", x, fzero), negative_zero)])
            return True
        return False


def algebra_patterns() -> list[RewritePattern]:
    return [RemoveIdentity(), RemoveNoopCast(), SquareByMultiply(), SignBitTest(),
            *(Involution(op) for op in _ops_with("involution")),
            *(Idempotent(op) for op in _ops_with("idempotent")),
            *(BinaryIdentity(op) for op in BinaryIdentity.NEUTRAL)]
