"""Decompositions the frontends share: functions with no IR op of their own, written with the
ops every target runs (TFLite, SavedModel, TF.js, JAX), so that a JAX primitive and the TF op
of the same function lift to the same IR.

Each takes a builder `b` with `b.op(name, inputs, attrs=None) -> value` and
`b.scalar(value, like) -> value` (a constant in `like`'s dtype), over the frontend's own
entries. The approximations keep float32 accuracy over the whole domain
where the plain formula would not (asinh on |x| with the sign put back).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np


@dataclass
class Builder:
    """A frontend's way to add nodes: `op(name, inputs, attrs=None)` and `scalar(value,
    like)`."""

    op: Callable[..., Any]
    scalar: Callable[[Any, Any], Any]


def atan(b, x):
    """atan(x) = atan2(x, 1)."""
    return b.op("atan2", [x, b.scalar(1, x)])


def _sqrt_one_minus_square(b, x):
    return b.op("sqrt", [b.op("sub", [b.scalar(1, x), b.op("mul", [x, x])])])


def asin(b, x):
    """asin(x) = atan2(x, sqrt(1 - x^2))."""
    return b.op("atan2", [x, _sqrt_one_minus_square(b, x)])


def acos(b, x):
    """acos(x) = atan2(sqrt(1 - x^2), x)."""
    return b.op("atan2", [_sqrt_one_minus_square(b, x), x])


def tan(b, x):
    return b.op("div", [b.op("sin", [x]), b.op("cos", [x])])


def _exp_pair(b, x):
    return b.op("exp", [x]), b.op("exp", [b.op("neg", [x])])


def sinh(b, x):
    e, inv = _exp_pair(b, x)
    return b.op("mul", [b.op("sub", [e, inv]), b.scalar(0.5, x)])


def cosh(b, x):
    e, inv = _exp_pair(b, x)
    return b.op("mul", [b.op("add", [e, inv]), b.scalar(0.5, x)])


def asinh(b, x):
    """sign(x) * log(|x| + sqrt(x^2 + 1)): on |x|, so large negative x stays accurate."""
    ax = b.op("abs", [x])
    root = b.op("sqrt", [b.op("add", [b.op("mul", [ax, ax]), b.scalar(1, x)])])
    return b.op("mul", [b.op("sign", [x]), b.op("log", [b.op("add", [ax, root])])])


def acosh(b, x):
    root = b.op("sqrt", [b.op("sub", [b.op("mul", [x, x]), b.scalar(1, x)])])
    return b.op("log", [b.op("add", [x, root])])


def atanh(b, x):
    one = b.scalar(1, x)
    ratio = b.op("div", [b.op("add", [one, x]), b.op("sub", [one, x])])
    return b.op("mul", [b.op("log", [ratio]), b.scalar(0.5, x)])


def log1p(b, x):
    return b.op("log", [b.op("add", [x, b.scalar(1, x)])])


def expm1(b, x):
    return b.op("sub", [b.op("exp", [x]), b.scalar(1, x)])


def isnan(b, x):
    """NaN is the only value not equal to itself."""
    return b.op("not_equal", [x, x])


def isinf(b, x):
    return b.op("equal", [b.op("abs", [x]), b.scalar(np.inf, x)])


def isfinite(b, x):
    return b.op("is_finite", [x])


UNARY = {"atan": atan, "asin": asin, "acos": acos, "tan": tan, "sinh": sinh, "cosh": cosh,
         "asinh": asinh, "acosh": acosh, "atanh": atanh, "log1p": log1p, "expm1": expm1,
         "isnan": isnan, "isinf": isinf, "isfinite": isfinite}
