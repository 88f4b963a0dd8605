"""Helpers shared by the op-kernel tests."""

from __future__ import annotations

import numpy as np

from tensorforge.ir.ops import get_op
from tensorforge.ir.types import DType, TensorType


def ttype(x: np.ndarray) -> TensorType:
    return TensorType(DType.from_numpy(x.dtype), x.shape)


def run(name, inputs, **attrs):
    """Runs the kernel and checks each result against the inferred type (dtype and shape)."""
    op = get_op(name)
    a = op.complete_attrs(attrs)
    assert op.attr_problems(a) == []
    outs = op.kernel(inputs, a)
    types = op.infer([ttype(x) for x in inputs], a)
    assert len(outs) == len(types)
    for out, t in zip(outs, types):
        assert out.dtype == t.dtype.np, (out.dtype, t)
        assert out.shape == t.shape, (out.shape, t)
    return outs


def infer(name, types, **attrs):
    op = get_op(name)
    return op.infer(types, op.complete_attrs(attrs))


def f32(*shape):
    return TensorType(DType.f32, shape)
