"""Structural TF ops: constants, placeholders that are neither inputs nor captures, and the
pass-through ops (Identity, StopGradient, a function call's outputs, ...)."""

from __future__ import annotations

import numpy as np

from ..context import Const, LiftError, ir_dtype
from .complex import complex_constant


def _passthrough(ctx, node, ins):
    return ins


def _const(ctx, node, ins):
    from tensorflow.python.framework import tensor_util

    tensor = node.attr["value"].tensor
    array = np.asarray(tensor_util.MakeNdarray(tensor))
    # A fresh array nothing else holds: read-only, the IR constant takes it without a copy.
    array.flags.writeable = False
    pair = complex_constant(tensor.dtype, array, node)
    if pair is not None:
        return [pair]
    ir_dtype(tensor.dtype, "constant")
    return [Const(array, node)]


def _placeholder(ctx, node, ins):
    raise LiftError(f"placeholder '{node.name}' is neither an input nor a captured value")


TABLE = {
    "Const": _const, "Placeholder": _placeholder, "_CallOutputs": _passthrough,
    "Identity": _passthrough, "IdentityN": _passthrough, "StopGradient": _passthrough,
    "PreventGradient": _passthrough, "Snapshot": _passthrough, "EnsureShape": _passthrough,
    "CheckNumerics": _passthrough,
}
