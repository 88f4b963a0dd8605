"""The TFLite lowering table: IR op -> TFLite builtin(s), their options and op versions.

Each IR op maps to one small function `lower(e, node)` that reads the node and emits one or
more TFLite operators through the emitter `e` (see `writer.Emitter`):

    e.t(value)                 tensor index of an IR operand (constants are emitted on first use)
    e.out(value, quant=None)   tensor index of a node result
    e.tmp(dtype, shape, name)  a fresh intermediate tensor
    e.const(array, name, weight=False, quant=None)   a constant tensor with its own buffer
    e.derived(value, key, fn, quant=None)  a constant computed once from an IR constant (e.g. a
                               re-laid filter, with its quantization axis moved to TFLite's)
    e.op(code, inputs, outputs, options)             appends an operator (version from here)
    e.alias(value, index)      makes an IR value an alias of an existing tensor (identity)
    e.dtype(i), e.shape(i)     IR dtype and shape (with symbols) of tensor i

A lowering raises `Unsupported` (with the reason) for a node it cannot express; the writer
collects those per node so the user sees every offender at once.

The lowerings live by op family, like `ir/ops/`; each family module exports its own small
`LOWERINGS` dict, and this package merges them into one table:

    common.py           the shared vocabulary (Unsupported, TFL_TYPES, FUSED, ...) and emit helpers
    elementwise.py      unary/binary builtins, cast, clip, decomposed activations, erf
    conv.py             conv2d, depthwise_conv2d, conv2d_transpose, matmul
    weights.py          their weight operand: float/integer/hybrid form, TFLite layout, bias
    nn.py               pooling, softmax, batch/layer norm, resize
    reduce.py           reductions, argmax/argmin
    shape.py            data movement (reshape, transpose, concat, slice, pad, gather, ...)
    dynamic.py          run-time shapes (shape_of, dynamic reshape/broadcast/tile/slice, range)
    quant.py            quantize, dequantize, fake_quant
    control.py          while, if (regions as subgraphs), dynamic_update_slice
    recurrent.py        lstm, rnn as TFLite's fused sequence ops
    integer_kernels.py  which integer kernel runs each op and what it needs of the params
    versions.py         op versions (`op_version`)

Quantized IR (the integer form of ir/quantized.py) lowers to the same builtins on int8/int16
tensors carrying the values' params; `_check_quantized` (integer_kernels.py) says which ops
have an integer kernel and what it needs of the params, and guards every entry of the table;
`_weight_mode` (weights.py) splits conv/depthwise/matmul into float, integer and hybrid
(dynamic-range) forms.

Op versions follow tensorflow/lite/tools/versioning/op_version.cc: the lowest version whose
kernel supports the features (dtypes, ranks, options) the operator uses, see `op_version`.
"""

from __future__ import annotations

from . import control, conv, dynamic, elementwise, nn, quant, recurrent, reduce, shape
from .common import TFL_TYPES, Unsupported, copy_into
from .integer_kernels import _guarded
from .versions import op_version

_FAMILIES = (elementwise, conv, nn, reduce, shape, dynamic, quant, control, recurrent)


def _merge(families) -> dict:
    """One table from the families' own tables, each lowering guarded by the integer-kernel
    check; an op two families claim is a bug, reported at import."""
    table = {}
    for family in families:
        for op, fn in family.LOWERINGS.items():
            if op in table:
                raise RuntimeError(f"TFLite lowering of '{op}' defined twice "
                                   f"(again in {family.__name__})")
            table[op] = _guarded(fn)
    return table


LOWERINGS = _merge(_FAMILIES)

__all__ = ["LOWERINGS", "TFL_TYPES", "Unsupported", "copy_into", "op_version"]
