"""The vocabulary every TFLite lowering shares: `Unsupported`, the dtype sets a kernel computes
on (F32, NUM, BOOL, QACT), the enums of the schema the lowerings write (TFL_TYPES, FUSED,
PADDING, ACTIVATION_OPS), and the emit helpers (`emit`, `copy_into`, `_need`, `_param`,
`_scalar`, `_static`) on top of the writer's emitter `e` (API in `__init__.py`).
"""

from __future__ import annotations

import numpy as np
from ai_edge_litert import schema_py_generated as fb

from ....ir.quantized import is_quantized
from ....ir.types import DType

UNKNOWN = "?"


class Unsupported(Exception):
    """A node this backend cannot lower; the message says why (and how to get around it)."""


F32 = frozenset({DType.f32})
NUM = frozenset({DType.f32, DType.i32, DType.i64})
BOOL = frozenset({DType.bool})
ANY = None  # no dtype restriction beyond what the tensor table can represent

# Fused activations TFLite kernels really apply. TANH is in the enum, but the float CONV_2D /
# FULLY_CONNECTED / ADD kernels only clamp (CalculateActivationRange), so a fused TANH would be
# silently ignored: tanh is always emitted as its own TANH op.
FUSED = {"none": fb.ActivationFunctionType.NONE, "relu": fb.ActivationFunctionType.RELU,
         "relu6": fb.ActivationFunctionType.RELU6,
         "relu_n1_to_1": fb.ActivationFunctionType.RELU_N1_TO_1}
ACTIVATION_OPS = {"relu": "RELU", "relu6": "RELU6", "relu_n1_to_1": "RELU_N1_TO_1", "tanh": "TANH"}
PADDING = {"SAME": fb.Padding.SAME, "VALID": fb.Padding.VALID}
TFL_TYPES = {DType.f32: fb.TensorType.FLOAT32, DType.f16: fb.TensorType.FLOAT16,
             DType.f64: fb.TensorType.FLOAT64, DType.i8: fb.TensorType.INT8,
             DType.u8: fb.TensorType.UINT8, DType.i16: fb.TensorType.INT16,
             DType.i32: fb.TensorType.INT32, DType.i64: fb.TensorType.INT64,
             DType.bool: fb.TensorType.BOOL, DType.i4: fb.TensorType.INT4}
# Activation dtypes of TFLite's integer kernels (int8, and int16x8: int16 activations).
QACT = frozenset({DType.i8, DType.i16})


def _need(node, value, allowed, what=None) -> None:
    """Raises Unsupported unless `value`'s dtype is one the TFLite kernel computes on. A
    quantized int8/int16 value passes: `_check_quantized` has already matched it against the
    op's integer kernel."""
    if is_quantized(value) and value.type.dtype in QACT:
        return
    if allowed is not None and value.type.dtype not in allowed:
        names = ", ".join(sorted(d.value for d in allowed))
        raise Unsupported(f"TFLite {what or node.op} does not compute on {value.type.dtype} "
                          f"(supported here: {names}); cast the operand first")


def _i32(values) -> np.ndarray:
    """An int32 parameter array (shape vectors, axes, paddings) for a TFLite operand."""
    arr = np.asarray(values, dtype=np.int64)
    if arr.size and (arr.min() < -2**31 or arr.max() >= 2**31):
        raise Unsupported(f"parameter {arr.tolist()} does not fit in int32")
    return arr.astype(np.int32)


def _param(e, values, name):
    return e.const(_i32(values), f"{e.prefix}/{name}")


def _scalar(e, x, dtype: DType, name):
    return e.const(np.asarray(x, dtype=dtype.np), f"{e.prefix}/{name}")


def _static(shape) -> bool:
    return all(isinstance(d, int) for d in shape)


def emit(e, code, inputs, *, out=None, dtype=None, shape=None, options=None, name=None,
         quant=None) -> int:
    """Emits one operator with one result and returns the result's tensor index. Without
    `out`, the result is a fresh intermediate shaped like the first input unless told, and
    carries `quant` (set before the op: its version may depend on it)."""
    if out is None:
        src = inputs[0]
        out = e.tmp(dtype or e.dtype(src), e.shape(src) if shape is None else shape,
                    name or code.lower())
        if quant is not None:
            e.set_quant(out, quant)
    e.op(code, inputs, [out], options)
    return out


def copy_into(e, src: int, dst: int | None = None, name="copy") -> int:
    """Copies tensor `src` into `dst` (or a fresh tensor) with a RESHAPE to its own shape.

    TFLite has no identity op, and a subgraph output must be produced by an operator (not be a
    graph input or a constant): RESHAPE works for every dtype. Static shapes use a constant
    shape operand; symbolic ones read it at run time with SHAPE."""
    shape = e.shape(src)
    if _static(shape):
        shp = _param(e, list(shape), f"{name}_shape")
    else:
        shp = emit(e, "SHAPE", [src], dtype=DType.i32, shape=(len(shape),),
                   options=fb.ShapeOptionsT(outType=fb.TensorType.INT32), name=f"{name}_shape")
    return emit(e, "RESHAPE", [src, shp], out=dst, name=name)
