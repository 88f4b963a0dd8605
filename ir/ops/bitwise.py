"""Bit-level ops on integer tensors: `bitcast` (the same bits read as another dtype of the same
width), `bitwise_and/or/xor`, `bitwise_not`, `left_shift` and `right_shift` (arithmetic for
signed types; shift amounts clamped to the width, as TF's kernels do).

Keras builds `ops.signbit`, and with it every float `ops.argmax`/`argmin`, from
`bitcast(x, int32) & INT_MIN < 0`; canonicalize rewrites that idiom into float comparisons
(passes/canonicalize/algebra.py), so it needs none of these ops at run time.
"""

from __future__ import annotations

import numpy as np

from ..types import DType
from .elementwise import _binary_infer
from .registry import Attr, OpDef, check, register_op

_TRAITS = frozenset({"pure", "elementwise"})


def _infer_bitcast(types, attrs):
    (x,) = types
    to = attrs["to"]
    check(np.dtype(x.dtype.np).itemsize == np.dtype(to.np).itemsize
          and DType.bool not in (x.dtype, to),
          f"bitcast: {x.dtype} and {to} differ in width (only same-width bitcasts)")
    return [x.with_dtype(to)]


register_op(OpDef(
    "bitcast", ("x",), _infer_bitcast, lambda ins, a: [ins[0].view(a["to"].np)],
    attrs={"to": Attr("dtype")}, traits=_TRAITS,
    doc="The same bits read as dtype `to` of the same width (tf.bitcast, "
        "lax.bitcast_convert_type).",
))


def _integer_binary(name, fn, doc):
    infer = _binary_infer(name, False)

    def checked(types, attrs):
        check(types[0].dtype.is_int or types[0].dtype == DType.bool,
              f"{name} needs integer or bool operands, got {types[0].dtype}")
        return infer(types, attrs)

    register_op(OpDef(name, ("lhs", "rhs"), checked,
                      lambda ins, a: [np.asarray(fn(*ins)).astype(ins[0].dtype, copy=False)],
                      traits=_TRAITS, doc=doc))


def _shift(op):
    def shift(a, b):
        # The shift amount is clamped to [0, width - 1], as TF's kernels do (C leaves a shift
        # by the width or more undefined); the result wraps around like a fixed-width integer.
        amount = np.clip(b.astype(np.int64), 0, a.dtype.itemsize * 8 - 1)
        return op(a.astype(np.int64), amount).astype(a.dtype)
    return shift


_integer_binary("bitwise_and", np.bitwise_and, "a & b (integers or bools)")
_integer_binary("bitwise_or", np.bitwise_or, "a | b (integers or bools)")
_integer_binary("bitwise_xor", np.bitwise_xor, "a ^ b (integers or bools)")
_integer_binary("left_shift", _shift(np.left_shift),
                "a << b (b clamped to [0, width - 1], as TF)")
_integer_binary("right_shift", _shift(np.right_shift),
                "a >> b, arithmetic for signed types (b clamped to [0, width - 1], as TF)")


def _infer_not(types, attrs):
    check(types[0].dtype.is_int, f"bitwise_not needs an integer operand, got {types[0].dtype}")
    return [types[0]]


register_op(OpDef("bitwise_not", ("x",), _infer_not, lambda ins, a: [np.invert(ins[0])],
                  traits=_TRAITS | {"involution"}, doc="~x (integers)"))
