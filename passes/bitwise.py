"""Bit-level ops (ir/ops/bitwise.py) as exact integer arithmetic, for targets without kernels
for them: TFLite has BITWISE_XOR and RIGHT_SHIFT but no AND, OR or LEFT_SHIFT builtin, and
TF.js has no bitwise op at all (nor Bitcast/Invert in the tfjs-converter op list).

Every rewrite computes in int32 (int8, int16 and uint8 operands are cast up and the result
cast back, exactly) and never overflows int32, so it does not depend on how a runtime wraps:

- `bitwise_not`: ~x = -1 - x (255 - x for uint8);
- `bitwise_and/or/xor`: the low bits are extracted on a new last axis, (x // 2^k) % 2 for
  k < 31, from a non-negative copy of x (the sign bit taken off first: x - INT_MIN when x < 0);
  the bit results a*b, a+b-a*b, a+b-2*a*b are summed back with their weights 2^k, and the
  sign bit (and/or/xor of x < 0) adds INT_MIN;
- `left_shift` by k (clamped to [0, width - 1]): the bits of x that survive are kept as
  lo % 2^(w-1-k) and multiplied by 2^k (below 2^31), and bit w-1-k of x becomes the sign bit;
- `right_shift` by k (arithmetic): x // 2^k (floor division is the arithmetic shift), and for
  k = width - 1, whose power 2^31 int32 cannot hold, x < 0 ? -1 : 0.

bool operands of and/or/xor become logical_and/logical_or/not_equal. int64 (and int4)
operands and `bitcast` are left as they are: the backend then reports them.
"""

from __future__ import annotations

import numpy as np

from ..ir.graph import Graph, Module, Node, Value
from ..ir.quantized import is_quantized
from ..ir.types import DType

BITWISE_OPS = frozenset({"bitwise_and", "bitwise_or", "bitwise_xor", "bitwise_not",
                         "left_shift", "right_shift"})
# What each target lacks (backends/tflite/ops/elementwise.py lowers XOR, NOT as XOR with -1
# and RIGHT_SHIFT; the TF.js op allowlist in backends/tfjs.py has none of them).
TFLITE_MISSING = frozenset({"bitwise_and", "bitwise_or", "left_shift"})
TFJS_MISSING = BITWISE_OPS

_WIDTHS = {DType.i8: 8, DType.u8: 8, DType.i16: 16, DType.i32: 32}
_LOGICAL = {"bitwise_and": "logical_and", "bitwise_or": "logical_or",
            "bitwise_xor": "not_equal"}


class _Builder:
    """Adds nodes just before `node`, in its scope and at its location."""

    def __init__(self, graph: Graph, node: Node):
        self.graph, self.node = graph, node

    def __call__(self, op: str, *inputs: Value, **attrs) -> Value:
        return self.graph.add(op, list(inputs), attrs or None, before=self.node,
                              scope=self.node.scope, loc=self.node.loc).outputs[0]

    def const(self, value, name: str) -> Value:
        return self.graph.constant(np.asarray(value, np.int32), name, scope=self.node.scope,
                                   loc=self.node.loc, before=self.node)

    def i32(self, v: Value) -> Value:
        return v if v.type.dtype == DType.i32 else self("cast", v, to=DType.i32)


def _split_sign(b: _Builder, x: Value, width: int, signed: bool):
    """(lo, neg, n): lo >= 0 holds the n bits of x below its sign bit (all of them for
    unsigned x), neg is x < 0 (None for unsigned)."""
    if not signed:
        return x, None, width
    neg = b("less", x, b.const(0, "zero"))
    # x - INT_MIN only where x < 0, where it cannot overflow: x + 2^(w-1) in [0, 2^(w-1)).
    lo = b("sub", x, b("where", neg, b.const(-(1 << (width - 1)), "int_min"), b.const(0, "zero")))
    return lo, neg, width - 1


def _bits(b: _Builder, lo: Value, n: int) -> Value:
    """The n low bits of lo >= 0 as 0/1 int32 on a new last axis (bit k at index k)."""
    powers = b.const([1 << k for k in range(n)], "bit_weights")
    shifted = b("floor_div", b("expand_dims", lo, axis=lo.type.rank), powers)
    return b("floor_mod", shifted, b.const(2, "two"))


def _with_sign(b: _Builder, magnitude: Value, sign: Value | None, width: int) -> Value:
    """magnitude (in [0, 2^(w-1))) plus INT_MIN of the width where `sign` holds."""
    if sign is None:
        return magnitude
    top = b("where", sign, b.const(-(1 << (width - 1)), "int_min"), b.const(0, "zero"))
    return b("add", magnitude, top)


def _logic(b: _Builder, op: str, x: Value, y: Value, width: int, signed: bool) -> Value:
    lo_x, neg_x, n = _split_sign(b, x, width, signed)
    lo_y, neg_y, _ = _split_sign(b, y, width, signed)
    bx, by = _bits(b, lo_x, n), _bits(b, lo_y, n)
    both = b("mul", bx, by)
    if op == "bitwise_and":
        bits = both
    elif op == "bitwise_or":
        bits = b("sub", b("add", bx, by), both)
    else:
        bits = b("sub", b("add", bx, by), b("mul", both, b.const(2, "two")))
    weights = b.const([1 << k for k in range(n)], "bit_weights")
    magnitude = b("reduce_sum", b("mul", bits, weights), axes=[-1], keepdims=False)
    sign = None if neg_x is None else b(_LOGICAL[op], neg_x, neg_y)
    return _with_sign(b, magnitude, sign, width)


def _clamped(b: _Builder, y: Value, width: int) -> Value:
    """The shift amount clamped to [0, width - 1], as the IR kernels (and TF) do."""
    return b("minimum", b("maximum", y, b.const(0, "zero")), b.const(width - 1, "max_shift"))


def _left_shift(b: _Builder, x: Value, y: Value, width: int, signed: bool) -> Value:
    k = _clamped(b, y, width)
    pow_k = b("gather", b.const([1 << j for j in range(width)] if width < 32 else
                                [1 << j for j in range(31)] + [1], "powers"), k, axis=0)
    if not signed:
        # uint8: x * 2^k < 2^15, then the wrap is a floor_mod by 2^8.
        return b("floor_mod", b("mul", x, pow_k), b.const(1 << width, "modulus"))
    lo, neg, n = _split_sign(b, x, width, signed)
    # For k >= 1 the surviving bits 0..w-2-k of x are lo % 2^(w-1-k), shifted below 2^(w-1);
    # bit w-1-k (in lo, as k >= 1) becomes the sign bit. k = 0 is x itself (the divisor
    # table's entry 0 is a placeholder: 2^(w-1) does not fit int32 for w = 32).
    divisor = b("gather", b.const([1] + [1 << (n - j) for j in range(1, width)], "divisors"),
                k, axis=0)
    kept = b("floor_mod", lo, divisor)
    top = b("floor_mod", b("floor_div", lo, divisor), b.const(2, "two"))
    shifted = _with_sign(b, b("mul", kept, pow_k), b("equal", top, b.const(1, "one")), width)
    return b("where", b("equal", k, b.const(0, "zero")), x, shifted)


def _right_shift(b: _Builder, x: Value, y: Value, width: int, signed: bool) -> Value:
    k = _clamped(b, y, width)
    if not signed:
        return b("floor_div", x, b("gather", b.const([1 << j for j in range(width)], "powers"),
                                   k, axis=0))
    # Floor division by 2^k is the arithmetic shift; the shift by w-1 is the sign alone
    # (its divisor 2^(w-1) does not fit int32 for w = 32, so entry w-1 is a placeholder).
    powers = b.const([1 << j for j in range(width - 1)] + [1], "powers")
    quotient = b("floor_div", x, b("gather", powers, k, axis=0))
    sign = b("where", b("less", x, b.const(0, "zero")), b.const(-1, "minus_one"),
             b.const(0, "zero"))
    return b("where", b("equal", k, b.const(width - 1, "max_shift")), sign, quotient)


def _expansion(graph: Graph, node: Node) -> Value | None:
    """The value computing `node` without bitwise ops, or None to leave it (int64, int4,
    quantized operands)."""
    dtype = node.inputs[0].type.dtype
    if any(is_quantized(v) for v in node.inputs):
        return None
    b = _Builder(graph, node)
    if dtype == DType.bool:
        return b(_LOGICAL[node.op], *node.inputs) if node.op in _LOGICAL else None
    width = _WIDTHS.get(dtype)
    if width is None:
        return None
    signed = dtype != DType.u8
    ins = [b.i32(v) for v in node.inputs]
    if node.op == "bitwise_not":
        out = b("sub", b.const(-1 if signed else (1 << width) - 1, "all_ones"), ins[0])
    elif node.op == "left_shift":
        out = _left_shift(b, *ins, width, signed)
    elif node.op == "right_shift":
        out = _right_shift(b, *ins, width, signed)
    else:
        out = _logic(b, node.op, *ins, width, signed)
    return out if dtype == DType.i32 else b("cast", out, to=dtype)


def expand_bitwise(module: Module, ops=BITWISE_OPS) -> int:
    """Rewrites every node of `module` (regions too) whose op is in `ops` (a subset of
    BITWISE_OPS) into exact int32 arithmetic; returns how many. Nodes of other dtypes than
    bool, int8, uint8, int16 and int32 stay."""
    count = 0
    for graph in list(module.all_graphs()):
        for node in [n for n in graph if n.op in ops and n.op in BITWISE_OPS]:
            out = _expansion(graph, node)
            if out is None:
                continue
            out.name = node.output.name
            graph.replace_node(node, [out])
            count += 1
    return count


def with_bitwise_expanded(module: Module, ops=BITWISE_OPS) -> Module:
    """`module` itself when it has no op of `ops` that `expand_bitwise` rewrites, else a copy
    with each of them expanded (what the TFLite writer and the TF.js lowering write)."""
    if not any(n.op in ops and n.op in BITWISE_OPS and _expandable(n)
               for g in module.graphs.values() for n in g.walk()):
        return module
    copy = module.clone()
    expand_bitwise(copy, ops)
    return copy


def _expandable(node: Node) -> bool:
    dtype = node.inputs[0].type.dtype
    if dtype == DType.bool:
        return node.op in _LOGICAL
    return dtype in _WIDTHS and not any(is_quantized(v) for v in node.inputs)
