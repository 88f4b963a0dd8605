"""Constant folding through the ops' reference kernels."""

from __future__ import annotations

import numpy as np

from ...ir.graph import Node
from ...ir.interpreter import region_runner
from ...ir.ops import get_op
from ...ir.ops.registry import run_kernel
from ...ir.quantized import is_quantized
from ...ir.types import DType
from ..rewrite import RewritePattern, Rewriter

DEFAULT_FOLD_LIMIT = 1 << 22  # elements; larger results stay computed at run time


class FoldConstants(RewritePattern):
    """Evaluates a node whose operands are all constants and replaces it with constants.

    A result larger than `limit` elements that is also larger than every operand is not
    folded (folding `broadcast_to` of a scalar to a huge shape would bloat the artifact).
    A kernel that fails (e.g. integer division by zero) leaves the node alone: the error
    belongs to run time, not to the compiler.
    """

    root = None

    def __init__(self, limit: int = DEFAULT_FOLD_LIMIT):
        self.limit = limit

    def match_and_rewrite(self, node: Node, rw: Rewriter) -> bool:
        if node.op == "constant":
            return False
        arrays = []
        for v in node.inputs:
            p = v.producer
            if p is None or p.op != "constant":
                return False
            arrays.append(p.attrs["value"])
        opdef = get_op(node.op)
        if "no_fold" in opdef.traits:
            return False
        if node.op != "quantize" and any(is_quantized(v) for v in (*node.inputs, *node.outputs)):
            return False  # integer-form semantics are not the raw kernel's (ir/quantized.py)
        try:
            with np.errstate(all="ignore"):
                results = [np.asarray(r) for r in
                           run_kernel(opdef, arrays, node.attrs, region_runner(node))]
        except Exception:
            return False
        biggest_in = max((a.size for a in arrays), default=0)
        for r, out in zip(results, node.outputs):
            if r.size > self.limit and r.size > biggest_in:
                return False
            if r.dtype != out.type.dtype.np or not out.type.accepts(r.shape):
                return False  # a kernel/type disagreement is the verifier's to report
        new_values = []
        for r, out in zip(results, node.outputs):
            v = rw.constant(r, like=node, name=out.name)
            v.quant, v.layout = out.quant, out.layout
            new_values.append(v)
        rw.replace(node, new_values)
        return True


def splat_value(v) -> float | int | bool | None:
    """The single value of a constant whose elements are all equal, else None."""
    arr = v.const
    if arr is None or arr.size == 0:
        return None
    first = arr.flat[0]
    if arr.size > 1 and not np.all(arr == first):
        return None
    return first.item() if DType.from_numpy(arr.dtype) != DType.bf16 else float(first)
