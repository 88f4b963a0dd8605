"""Control flow: ops that own regions (nested graphs), MLIR-style.

- `while(init...)` with regions `cond(state...) -> (bool[])` and `body(state...) ->
  (state...)`: runs body while cond holds; its results are the final state.
- `if(pred, args...)` with regions `then(args...) -> (r...)` and `else(args...) -> (r...)`.
- `scan(carry..., xs...) {num_carry, reverse}` with region `body(carry..., x...) ->
  (carry..., y...)`: `lax.scan` over the leading axis of each xs; results are the final carry
  and the ys stacked along a new leading axis. The `lower-scan` pass rewrites it into a
  `while` for targets without a scan (every file format), the JAX backend runs it as is.

Regions are isolated from above: they read only their own inputs and constants defined in
them. A loop-invariant value is carried through the loop unchanged (as TFLite's WHILE and
TF's While do), which keeps every region a self-contained graph a backend can emit as a
subgraph or function.
"""

from __future__ import annotations

import numpy as np

from ..types import UNKNOWN, DType, TensorType
from .registry import Attr, OpDef, check, register_op

_TRAITS = frozenset({"pure"})


def _fits(actual: TensorType, declared: TensorType) -> bool:
    """True when `actual` can flow into a slot declared `declared` (same dtype and rank,
    each dim equal or `?` on either side)."""
    return (actual.dtype == declared.dtype and actual.rank == declared.rank
            and all(a == d or UNKNOWN in (a, d) for a, d in zip(actual.shape, declared.shape)))


def _check_signature(what: str, actual, declared) -> None:
    actual, declared = list(actual), list(declared)
    check(len(actual) == len(declared),
          f"{what}: {len(actual)} values for {len(declared)} slots")
    for i, (a, d) in enumerate(zip(actual, declared)):
        check(_fits(a, d), f"{what} {i}: {a} does not fit {d}")


def _types(values) -> list[TensorType]:
    return [v.type for v in values]


def _join(a: TensorType, b: TensorType) -> TensorType:
    """The type covering both: dims that differ become `?`."""
    return a.with_shape([x if x == y else UNKNOWN for x, y in zip(a.shape, b.shape)])


# -- while -------------------------------------------------------------------------------------

def _infer_while(types, attrs, regions):
    cond, body = regions
    state = _types(body.inputs)
    _check_signature("while: initial value", types, state)
    _check_signature("while: cond argument", state, _types(cond.inputs))
    outs = _types(cond.outputs)
    check(len(outs) == 1 and outs[0].dtype == DType.bool and outs[0].rank == 0,
          f"while: cond must return one bool[] scalar, returns {', '.join(map(str, outs))}")
    # A carried value keeps its type from one iteration to the next (dims may be `?`).
    _check_signature("while: body result", _types(body.outputs), state)
    return state


def _while_kernel(ins, attrs, run):
    state = list(ins)
    while bool(run(0, state)[0]):
        state = run(1, state)
    return state


register_op(OpDef(
    "while", ("init*",), _infer_while, _while_kernel, regions=("cond", "body"),
    # Not folded even on constant operands: the compiler must not hang on a loop that never
    # ends (a bounded `scan` or an `if` folds).
    traits=_TRAITS | {"no_fold"},
    doc="Runs body(state) while cond(state) holds, starting from init; returns the final state "
        "(lax.while_loop, tf.while_loop, TFLite WHILE).",
))


# -- if ----------------------------------------------------------------------------------------

def _infer_if(types, attrs, regions):
    check(len(types) >= 1, "if: needs a predicate operand")
    pred, args = types[0], types[1:]
    check(pred.dtype == DType.bool and pred.rank == 0, f"if: predicate must be bool[], got {pred}")
    then, else_ = regions
    _check_signature("if: then argument", args, _types(then.inputs))
    _check_signature("if: else argument", args, _types(else_.inputs))
    a, b = _types(then.outputs), _types(else_.outputs)
    check(len(a) == len(b), f"if: then returns {len(a)} values, else {len(b)}")
    for i, (x, y) in enumerate(zip(a, b)):
        check(x.dtype == y.dtype and x.rank == y.rank,
              f"if: result {i} is {x} in then but {y} in else")
    return [_join(x, y) for x, y in zip(a, b)]


register_op(OpDef(
    "if", ("pred", "args*"), _infer_if,
    lambda ins, a, run: run(0 if bool(ins[0]) else 1, list(ins[1:])),
    regions=("then", "else"), traits=_TRAITS,
    doc="then(args) if pred else else(args) (lax.cond, tf.cond, TFLite IF).",
))


# -- scan --------------------------------------------------------------------------------------

def _scan_parts(types, attrs):
    n = attrs["num_carry"]
    check(0 <= n <= len(types), f"scan: num_carry {n} out of range for {len(types)} operands")
    return list(types[:n]), list(types[n:])


def _scan_length(xs, attrs):
    if attrs["length"] is not None:
        length = attrs["length"]
        check(length >= 0, f"scan: length must be >= 0, got {length}")
        for i, x in enumerate(xs):
            check(x.rank >= 1 and (x.shape[0] == length or isinstance(x.shape[0], str)),
                  f"scan: xs {i} ({x}) does not have {length} rows")
        return length
    check(bool(xs), "scan: without xs the length attribute is required")
    for i, x in enumerate(xs):
        check(x.rank >= 1, f"scan: xs {i} must have a leading axis, got {x}")
    return xs[0].shape[0]


def _infer_scan(types, attrs, regions):
    (body,) = regions
    carry, xs = _scan_parts(types, attrs)
    length = _scan_length(xs, attrs)
    n = len(carry)
    _check_signature("scan: carry", carry, _types(body.inputs[:n]))
    _check_signature("scan: x slice", [x.with_shape(x.shape[1:]) for x in xs],
                     _types(body.inputs[n:]))
    outs = _types(body.outputs)
    check(len(outs) >= n, f"scan: body returns {len(outs)} values, fewer than the {n} carried")
    _check_signature("scan: body carry result", outs[:n], _types(body.inputs[:n]))
    return _types(body.inputs[:n]) + [y.with_shape((length, *y.shape)) for y in outs[n:]]


def _scan_kernel(ins, attrs, run):
    n = attrs["num_carry"]
    carry, xs = list(ins[:n]), list(ins[n:])
    length = attrs["length"] if attrs["length"] is not None else xs[0].shape[0]
    steps = range(length - 1, -1, -1) if attrs["reverse"] else range(length)
    slots: dict[int, list] = {}
    for t in steps:
        outs = run(0, carry + [x[t] for x in xs])
        carry, ys_t = list(outs[:n]), outs[n:]
        slots[t] = ys_t
    if length == 0:
        raise ValueError("scan: a zero-length scan has no ys to infer shapes from; "
                         "the interpreter does not run it")
    ys = [np.stack([slots[t][k] for t in range(length)]) for k in range(len(slots[0]))]
    return carry + ys


register_op(OpDef(
    "scan", ("init*",), _infer_scan, _scan_kernel, regions=("body",),
    attrs={"num_carry": Attr("int", doc="how many leading operands are carried state"),
           "length": Attr("int", None, optional=True,
                          doc="iterations when there are no xs (else xs' leading dim)"),
           "reverse": Attr("bool", False, doc="iterate from the last row to the first")},
    traits=_TRAITS,
    doc="lax.scan: body(carry, x_t) -> (carry, y_t) over the leading axis of xs; returns the "
        "final carry and the stacked ys.",
))
