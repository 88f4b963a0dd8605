"""Run-time shape ops: `shape_of` reads a tensor's shape as an integer tensor, and the
`dynamic_*` forms of reshape, broadcast_to, tile, slice, strided_slice and pad, plus `range`, take their sizes as
integer operands computed at run time instead of as attributes.

They exist for sizes the IR cannot name statically: a model's sequence length `seq` used as
`range(0, seq + 1)`, a reshape with two run-time dims, a position-embedding slice of `seq`
rows. Everything static stays in the attribute forms (`reshape`, `slice`, ...):
canonicalization turns a dynamic op whose size operands are constants back into the static
op, and `shape_of` of a static-shaped value into a constant.

Each dynamic op has an optional `dims` attribute: what the frontend knows about the result's
shape (ints, symbols such as `batch`, or `?`), the way MLIR ops carry a result type. Without
it the sizes that come from operands are `?`. The interpreter checks results against it like
any other declared type, so a wrong `dims` is caught on the first run.
"""

from __future__ import annotations

import numpy as np

from ..types import UNKNOWN, DType
from .registry import Attr, OpDef, check, register_op
from .shape import _strided_slice_plan, strided_slice_index

PURE = frozenset({"pure"})
_DIMS_DOC = "result shape as far as known at compile time (ints, symbols, ?); default all ?"
_SHAPE_DTYPES = (DType.i32, DType.i64)


def _size_operand(t, what: str, length: int | None = None) -> int:
    """The static length of a 1-D integer size operand (shape, begin, multiples, ...)."""
    check(t.dtype.is_int, f"{what} must be an integer tensor, got {t}")
    check(t.rank == 1, f"{what} must be 1-D, got {t}")
    n = t.shape[0]
    check(isinstance(n, int), f"{what} must have a static length (the result's rank), got {t}")
    if length is not None:
        check(n == length, f"{what} has {n} entries but the operand has rank {length}")
    return n


def _result_dims(attrs, default: list) -> list:
    """`dims` when given (its rank must match), else `default`."""
    dims = attrs["dims"]
    if dims is None:
        return default
    check(len(dims) == len(default),
          f"dims {list(dims)} has {len(dims)} entries but the result has rank {len(default)}")
    for i, (d, known) in enumerate(zip(dims, default)):
        check(not (isinstance(d, int) and isinstance(known, int) and d != known),
              f"dims[{i}] = {d} contradicts the static size {known}")
    # A static size the operands fix wins over a symbol in `dims`.
    return [k if isinstance(k, int) else d for d, k in zip(dims, default)]


def _dims_attr():
    return Attr("dims", None, optional=True, doc=_DIMS_DOC)


# -- shape_of ----------------------------------------------------------------------------------

def _infer_shape_of(types, attrs):
    (x,) = types
    check(attrs["dtype"] in _SHAPE_DTYPES, f"shape_of: dtype must be i32 or i64, "
                                          f"got {attrs['dtype']}")
    return [x.with_dtype(attrs["dtype"]).with_shape([x.rank])]


register_op(OpDef(
    "shape_of", ("x",), _infer_shape_of,
    lambda ins, a: [np.asarray(ins[0].shape, dtype=a["dtype"].np).reshape(ins[0].ndim)],
    attrs={"dtype": Attr("dtype", DType.i32, doc="i32 or i64")},
    traits=PURE, doc="The run-time shape of x as a 1-D integer tensor (tf.shape).",
))


# -- dynamic_reshape ---------------------------------------------------------------------------

def _infer_dynamic_reshape(types, attrs):
    x, shape = types
    n = _size_operand(shape, "dynamic_reshape shape")
    dims = _result_dims(attrs, [UNKNOWN] * n)
    if x.is_static and all(isinstance(d, int) for d in dims):
        check(int(np.prod(dims)) == x.num_elements,
              f"dynamic_reshape: {x} cannot become {dims}")
    return [x.with_shape(dims)]


register_op(OpDef(
    "dynamic_reshape", ("x", "shape"), _infer_dynamic_reshape,
    lambda ins, a: [np.reshape(ins[0], [int(d) for d in ins[1]])],
    attrs={"dims": _dims_attr()},
    traits=PURE, doc="reshape to a shape computed at run time (one -1 allowed).",
))


# -- dynamic_broadcast_to ----------------------------------------------------------------------

def _infer_dynamic_broadcast_to(types, attrs):
    x, shape = types
    n = _size_operand(shape, "dynamic_broadcast_to shape")
    check(x.rank <= n, f"dynamic_broadcast_to: cannot broadcast {x} to rank {n}")
    # A static size > 1 of x fixes the result dim (broadcasting only stretches 1s).
    default = [UNKNOWN] * (n - x.rank) + [d if isinstance(d, int) and d != 1 else UNKNOWN
                                          for d in x.shape]
    return [x.with_shape(_result_dims(attrs, default))]


register_op(OpDef(
    "dynamic_broadcast_to", ("x", "shape"), _infer_dynamic_broadcast_to,
    lambda ins, a: [np.array(np.broadcast_to(ins[0], [int(d) for d in ins[1]]))],
    attrs={"dims": _dims_attr()},
    traits=PURE, doc="broadcast_to a shape computed at run time (tf.broadcast_to, tf.fill).",
))


# -- dynamic_tile ------------------------------------------------------------------------------

def _infer_dynamic_tile(types, attrs):
    x, mult = types
    _size_operand(mult, "dynamic_tile multiples", x.rank)
    default = [0 if d == 0 else UNKNOWN for d in x.shape]
    return [x.with_shape(_result_dims(attrs, default))]


register_op(OpDef(
    "dynamic_tile", ("x", "multiples"), _infer_dynamic_tile,
    lambda ins, a: [np.tile(ins[0], [int(m) for m in ins[1]])],
    attrs={"dims": _dims_attr()},
    traits=PURE, doc="tile by multiples computed at run time.",
))


# -- dynamic_slice -----------------------------------------------------------------------------

def _infer_dynamic_slice(types, attrs):
    x, begin, size = types
    _size_operand(begin, "dynamic_slice begin", x.rank)
    _size_operand(size, "dynamic_slice size", x.rank)
    return [x.with_shape(_result_dims(attrs, [UNKNOWN] * x.rank))]


def _dynamic_slice_kernel(ins, attrs):
    x, begin, size = ins
    idx = []
    for d, (b, s) in enumerate(zip(begin.tolist(), size.tolist())):
        end = x.shape[d] if s == -1 else b + s
        if not (0 <= b <= end <= x.shape[d]):
            # TF's Slice rejects these; NumPy would clip silently.
            raise IndexError(f"dynamic_slice: [{b}, {end}) is outside dim {d} of size "
                             f"{x.shape[d]}")
        idx.append(slice(b, end))
    return [x[tuple(idx)].copy()]


register_op(OpDef(
    "dynamic_slice", ("x", "begin", "size"), _infer_dynamic_slice, _dynamic_slice_kernel,
    attrs={"dims": _dims_attr()},
    traits=PURE,
    doc="x[begin : begin+size] per dim with begin and size computed at run time "
        "(tf.slice; size -1 = to the end).",
))


# -- range -------------------------------------------------------------------------------------

def _infer_range(types, attrs):
    start, limit, delta = types
    for name, t in (("start", start), ("limit", limit), ("delta", delta)):
        check(t.rank == 0, f"range: {name} must be a scalar, got {t}")
    check(limit.dtype == start.dtype and delta.dtype == start.dtype,
          f"range: start, limit and delta differ in dtype ({start.dtype}, {limit.dtype}, "
          f"{delta.dtype})")
    check(start.dtype.is_int or start.dtype.is_float,
          f"range: dtype must be integer or float, got {start.dtype}")
    return [start.with_shape(_result_dims(attrs, [UNKNOWN]))]


def _range_kernel(ins, attrs):
    start, limit, delta = (a.item() for a in ins)
    if delta == 0:
        raise ValueError("range: delta is 0")
    return [np.arange(start, limit, delta).astype(ins[0].dtype)]


register_op(OpDef(
    "range", ("start", "limit", "delta"), _infer_range, _range_kernel,
    attrs={"dims": _dims_attr()},
    traits=PURE, doc="[start, start+delta, ...) below limit, from run-time scalars (tf.range).",
))


# -- nonzero ---------------------------------------------------------------------------------

def _infer_nonzero(types, attrs):
    (x,) = types
    check(x.rank >= 1, f"nonzero: the operand must have rank >= 1, got {x}")
    return [x.with_dtype(DType.i64).with_shape([UNKNOWN, x.rank])]


register_op(OpDef(
    "nonzero", ("x",), _infer_nonzero,
    lambda ins, a: [np.argwhere(ins[0]).astype(np.int64)],
    traits=PURE,
    doc="The indices of the nonzero (true) elements of x, one row of x.rank coordinates each, "
        "in row-major order: i64[?, rank], a size known only at run time (tf.where(x), "
        "np.argwhere).",
))


# -- dynamic_strided_slice ---------------------------------------------------------------------

_MASKS = ("begin_mask", "end_mask", "ellipsis_mask", "new_axis_mask", "shrink_axis_mask")


def _static_attrs(attrs, begin, end, strides) -> dict:
    return {"begin": tuple(begin), "end": tuple(end), "strides": tuple(strides),
            **{k: attrs[k] for k in _MASKS}}


def _infer_dynamic_strided_slice(types, attrs):
    x, begin, end, strides = types
    n = _size_operand(begin, "dynamic_strided_slice begin")
    _size_operand(end, "dynamic_strided_slice end", n)
    _size_operand(strides, "dynamic_strided_slice strides", n)
    # The result's rank and which of its dims are x's own (full ranges) follow from the
    # masks alone: plan with every dim and every index unknown.
    placeholder = [f"d{i}" for i in range(x.rank)]
    _, final = _strided_slice_plan(placeholder, _static_attrs(attrs, [0] * n, [0] * n,
                                                             [1] * n))
    default = [x.shape[placeholder.index(d)] if isinstance(d, str) and d in placeholder
               else d if isinstance(d, int) else UNKNOWN for d in final]
    return [x.with_shape(_result_dims(attrs, default))]


def _dynamic_strided_slice_kernel(ins, attrs):
    x, begin, end, strides = ins
    idx, final = strided_slice_index(x.shape, _static_attrs(
        attrs, [int(v) for v in begin], [int(v) for v in end], [int(v) for v in strides]))
    return [np.reshape(x[idx], final)]


_MASK_DOC = "bit i applies to spec entry i"
register_op(OpDef(
    "dynamic_strided_slice", ("x", "begin", "end", "strides"), _infer_dynamic_strided_slice,
    _dynamic_strided_slice_kernel,
    attrs={**{k: Attr("int", 0, doc=_MASK_DOC) for k in _MASKS}, "dims": _dims_attr()},
    traits=PURE,
    doc="strided_slice with begin, end and strides computed at run time (tf.strided_slice).",
))


# -- dynamic_pad -------------------------------------------------------------------------------

def _infer_dynamic_pad(types, attrs):
    x, pads = types
    check(pads.dtype.is_int, f"dynamic_pad paddings must be integers, got {pads}")
    check(pads.rank == 2 and pads.shape[0] == x.rank and pads.shape[1] == 2,
          f"dynamic_pad paddings must be [{x.rank}, 2] for {x}, got {pads}")
    return [x.with_shape(_result_dims(attrs, [UNKNOWN] * x.rank))]


def _dynamic_pad_kernel(ins, attrs):
    x, pads = ins
    pads = [[int(a), int(b)] for a, b in pads.tolist()]
    if min((min(p) for p in pads), default=0) < 0:
        raise ValueError(f"dynamic_pad: negative paddings {pads}")
    if x.ndim == 0:
        return [x.copy()]
    if attrs["mode"] == "constant":
        return [np.pad(x, pads, constant_values=np.asarray(attrs["value"]).astype(x.dtype))]
    return [np.pad(x, pads, mode=attrs["mode"])]


register_op(OpDef(
    "dynamic_pad", ("x", "paddings"), _infer_dynamic_pad, _dynamic_pad_kernel,
    attrs={"mode": Attr("str", "constant", choices=("constant", "reflect", "symmetric")),
           "value": Attr("float", 0.0, doc="fill value for constant mode"),
           "dims": _dims_attr()},
    traits=PURE, doc="pad with paddings ([rank, 2]: before, after) computed at run time.",
))


# -- dynamic_update_slice ----------------------------------------------------------------------

def _infer_dynamic_update_slice(types, attrs):
    x, update, start = types
    check(update.dtype == x.dtype, f"dynamic_update_slice: update {update} differs in dtype "
                                   f"from {x}")
    check(update.rank == x.rank, f"dynamic_update_slice: update {update} and operand {x} "
                                 f"differ in rank")
    _size_operand(start, "dynamic_update_slice start", x.rank)
    for i, (u, d) in enumerate(zip(update.shape, x.shape)):
        check(not (isinstance(u, int) and isinstance(d, int) and u > d),
              f"dynamic_update_slice: update dim {i} ({u}) is larger than the operand's ({d})")
    return [x]


def clamped_starts(start, x_shape, update_shape) -> list[int]:
    """Start indices clamped so the update fits (XLA's, JAX's and TFLite's rule)."""
    return [min(max(int(s), 0), d - u) for s, d, u in zip(start, x_shape, update_shape)]


def _dynamic_update_slice_kernel(ins, attrs):
    x, update, start = ins
    out = np.array(x, copy=True)
    begin = clamped_starts(start.tolist(), x.shape, update.shape)
    out[tuple(slice(b, b + u) for b, u in zip(begin, update.shape))] = update
    return [out]


register_op(OpDef(
    "dynamic_update_slice", ("x", "update", "start"), _infer_dynamic_update_slice,
    _dynamic_update_slice_kernel, traits=PURE,
    doc="x with update written at run-time start indices, clamped so it fits "
        "(lax.dynamic_update_slice, TFLite DYNAMIC_UPDATE_SLICE): a KV-cache write.",
))
