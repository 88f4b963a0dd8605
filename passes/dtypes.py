"""`widen-floats`: computes bfloat16 and float16 in float32, for targets without them (and
float64 in float32 for TFLite and TF.js).

TFLite kernels compute float32 (float16 only as stored weights behind DEQUANTIZE), TF.js has
no 16-bit floats at all, and TF's CPU kernels cover bfloat16 for few ops. So a bf16 or f16
program (a JAX model in mixed precision) is written with those values widened to f32: every
value, constant, cast target and graph input/output of a narrow float dtype becomes f32. The
artifact is then at least as accurate as the source (it rounds less); its signature takes and
returns f32 where the source had bf16/f16, which the conversion report states. The JAX
backend keeps the narrow dtypes.

float64 is the other way round but the same rewrite: TFLite's arithmetic kernels have no f64
(SUB, MUL, ...) and TF.js has no float64 at all (its converter stores doubles as float32), so
f64 values (Keras computes quantile positions in f64) run in f32 there; SavedModel and JAX
keep f64.
"""

from __future__ import annotations

import numpy as np

from ..ir.graph import Module
from ..ir.types import DType
from .base import Option, Pass, register_pass

NARROW_FLOATS = (DType.bf16, DType.f16)
# What TFLite and TF.js compute in f32: the narrow floats and f64.
NON_F32_FLOATS = NARROW_FLOATS + (DType.f64,)


def narrow_float_values(module: Module, dtypes=NARROW_FLOATS) -> list[str]:
    """Names of the entry graph's inputs and outputs in `dtypes` (what widening changes at
    the boundary), or `["(internal)"]` when only inner values are narrow; [] for none."""
    g = module.main
    boundary = [f"{v.name or '?'}: {v.type.dtype}" for v in [*g.inputs, *g.outputs]
                if v.type.dtype in dtypes]
    if boundary:
        return boundary
    for graph in module.all_graphs():
        for n in graph:
            if not _stored_weight(n) and any(o.type.dtype in dtypes for o in n.outputs):
                return ["(internal)"]
    return []


def _stored_weight(node) -> bool:
    """A float16 constant read only through casts to f32: a weight stored in half precision
    (the fp16 scheme), which every backend already expands itself."""
    out = node.outputs[0]
    return (node.op == "constant" and out.type.dtype == DType.f16 and bool(out.uses)
            and all(u.op == "cast" and u.attrs["to"] == DType.f32 for u in out.users))


def widen_floats_in_place(module: Module, dtypes=NARROW_FLOATS) -> bool:
    """Retypes every value of `dtypes` to f32 in every graph (regions too); True if any.
    Half-precision stored weights (f16 constants only cast to f32) stay as they are."""
    changed = False
    for graph in list(module.all_graphs()):
        for v in graph.inputs:
            if v.type.dtype in dtypes:
                v.type, changed = v.type.with_dtype(DType.f32), True
        for node in graph:
            if _stored_weight(node):
                continue
            if node.op == "constant" and node.outputs[0].type.dtype in dtypes:
                node.attrs["value"] = np.asarray(node.attrs["value"], np.float32)
            if node.op == "cast" and node.attrs["to"] in dtypes:
                node.attrs["to"] = DType.f32
            for o in node.outputs:
                if o.type.dtype in dtypes:
                    o.type, changed = o.type.with_dtype(DType.f32), True
    return changed


def widened(module: Module, dtypes=NARROW_FLOATS) -> Module:
    """`module` itself when nothing is of `dtypes`, else a widened copy."""
    if not narrow_float_values(module, dtypes):
        return module
    copy = module.clone()
    widen_floats_in_place(copy, dtypes)
    return copy


def _narrow_dtypes(text: str) -> tuple[DType, ...]:
    """`"bf16,f16"` -> its dtypes; ValueError naming the ones that are not float dtypes."""
    names = [d.strip() for d in text.split(",") if d.strip()]
    bad = [n for n in names if n not in {d.value for d in DType if d.is_float}]
    if bad:
        valid = ", ".join(d.value for d in DType if d.is_float)
        raise ValueError(f"not float dtypes: {', '.join(map(repr, bad))} (valid: {valid})")
    return tuple(DType(n) for n in names)


@register_pass("widen-floats")
class WidenFloats(Pass):
    """Computes bf16 and f16 values in f32 (values, constants, casts, inputs and outputs), for
    targets whose kernels lack them."""

    options = {"dtypes": Option(str, "bf16,f16", "comma-separated narrow float dtypes",
                                check=lambda text: _narrow_dtypes(text))}

    def run(self, module, ctx):
        dtypes = _narrow_dtypes(self.option("dtypes"))
        return widen_floats_in_place(module, dtypes)
