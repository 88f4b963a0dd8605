"""JAX indexing primitives in general form: `gather` (any dimension numbers: jnp.take,
take_along_axis, x[i, j], batched gathers), `scatter` / `scatter-add` / `-sub` / `-mul` /
`-min` / `-max` (`x.at[...].set/add/mul/min/max` with traced indices), `dynamic_update_slice`.

Gathers and scatters whose indexed dims are fully indexed (size-1 windows there, full
windows elsewhere: every jnp indexing pattern) are brought into TF's gather_nd /
tensor_scatter_nd form by transposing the indexed dims to the front; batching dims become
extra index columns from an iota. `set` and `add` map to the IR's scatter ops (TFLite
SCATTER_ND); `mul`, `min` and `max` have no builtin on any target, so they are a one-hot
mask over the indexed rows reduced with the combiner (fine for the small updates they are
used for).
"""

from __future__ import annotations

import math

import numpy as np

from ...ir.types import DType
from .context import Const, LiftError, ir_dim
from .ops import _gather as _take_gather
from .ops import lowers


def _static(shape, what):
    dims = [ir_dim(d) for d in shape]
    if not all(isinstance(d, int) for d in dims):
        raise LiftError(f"{what} needs static sizes, got {dims}")
    return dims


def _with_batching(ctx, idx, operand_batching, indices_batching, index_map):
    """Index columns for batching dims (an iota along each batched indices dim) appended to
    `idx`; returns (indices, index map)."""
    if not operand_batching:
        return idx, list(index_map)
    ishape = _static(ctx.shape(idx), "gather/scatter with batching dims")
    batch_shape = ishape[:-1]
    cols = []
    for c in indices_batching:
        r = np.arange(batch_shape[c], dtype=np.int32).reshape(
            [-1 if i == c else 1 for i in range(len(batch_shape))])
        cols.append(np.broadcast_to(r, batch_shape)[..., None])
    iota = Const(np.concatenate(cols, axis=-1))
    idx = ctx.emit("concat", [ctx.cast(idx, DType.i32), iota], {"axis": len(ishape) - 1})
    return idx, list(index_map) + list(operand_batching)


def _clamped(ctx, idx, x_shape, index_map):
    """Indices clamped into range (JAX's clip mode; the same as fill mode for in-range ones)."""
    idx = ctx.cast(idx, DType.i32)
    bounds = [ir_dim(x_shape[d]) for d in index_map]
    if not all(isinstance(b, int) for b in bounds):
        return idx
    lo = Const(np.zeros(len(bounds), np.int32))
    hi = Const(np.asarray([b - 1 for b in bounds], np.int32))
    return ctx.emit("minimum", [ctx.emit("maximum", [idx, lo]), hi])


@lowers("gather")
def _gather(ctx, eqn, ins):
    x, idx = ins
    dn = eqn.params["dimension_numbers"]
    batching = tuple(getattr(dn, "operand_batching_dims", ()))
    if not batching and len(dn.start_index_map) == 1 and \
            tuple(dn.collapsed_slice_dims) == tuple(dn.start_index_map):
        return _take_gather(ctx, eqn, ins)  # one indexed axis: the IR's plain gather
    shape = ctx.shape(x)
    sizes = [ir_dim(s) for s in eqn.params["slice_sizes"]]
    idx, index_map = _with_batching(ctx, idx, batching,
                                    getattr(dn, "start_indices_batching_dims", ()),
                                    dn.start_index_map)
    collapsed = set(dn.collapsed_slice_dims) | set(batching)
    rest = [d for d in range(len(shape)) if d not in index_map]
    window = _window_gather(ctx, x, idx, dn, sizes, shape, batching)
    if window is not None:
        return window
    if collapsed != set(index_map) or any(sizes[d] != 1 for d in index_map) or \
            any(sizes[d] != shape[d] for d in rest):
        raise LiftError(f"gather with dimension numbers {dn} and slice sizes {sizes} is not "
                        f"supported (only whole-row gathers: size-1 windows on every indexed "
                        f"dim, full windows elsewhere)")
    idx = _clamped(ctx, idx, shape, index_map)
    y = ctx.emit("gather_nd", [ctx.transpose(x, index_map + rest), idx])
    # IR result: index batch dims, then `rest`; JAX puts `rest` at offset_dims.
    nb = len(ctx.shape(idx)) - 1
    offset = list(dn.offset_dims)
    perm, b = [], 0
    for pos in range(nb + len(rest)):
        if pos in offset:
            perm.append(nb + offset.index(pos))
        else:
            perm.append(b)
            b += 1
    return ctx.transpose(y, perm)


def _window_gather(ctx, x, idx, dn, sizes, shape, batching):
    """A gather of one window at constant starts (`x[..., :half]` with run-time dims is
    traced as one): a slice, with the collapsed dims squeezed and the (size-1) index batch
    dims put back. None when it is not that."""
    ci = ctx.const(idx)
    ishape = ctx.shape(idx)
    if batching or ci is None or any(d != 1 for d in ishape[:-1]):
        return None
    starts = dict(zip(dn.start_index_map, np.ravel(ci).tolist()))
    begin, size = [], []
    for d, (s, n) in enumerate(zip(sizes, shape)):
        b = int(starts.get(d, 0))
        if s == n and b == 0:
            begin.append(0)
            size.append(-1)
        elif isinstance(s, int) and isinstance(n, int):
            b = min(max(b, 0), n - s)  # JAX clamps a window into range
            begin.append(b)
            size.append(s)
        elif isinstance(s, int) and b == 0:
            begin.append(0)
            size.append(s)
        else:
            return None
    y = ctx.emit("slice", [x], {"begin": begin, "size": size})
    if dn.collapsed_slice_dims:
        y = ctx.emit("squeeze", [y], {"axes": sorted(dn.collapsed_slice_dims)})
    offset = list(dn.offset_dims)
    for pos in range(len(ishape) - 1 + len(offset)):
        if pos not in offset:
            y = ctx.emit("expand_dims", [y], {"axis": pos})
    return y


def _scatter(kind):
    def lower(ctx, eqn, ins):
        x, idx, updates = ins
        dn = eqn.params["dimension_numbers"]
        shape = ctx.shape(x)
        batching = tuple(getattr(dn, "operand_batching_dims", ()))
        idx, index_map = _with_batching(ctx, idx, batching,
                                        getattr(dn, "scatter_indices_batching_dims", ()),
                                        dn.scatter_dims_to_operand_dims)
        inserted = set(dn.inserted_window_dims) | set(batching)
        rest = [d for d in range(len(shape)) if d not in index_map]
        window = list(dn.update_window_dims)
        ushape = ctx.shape(updates)
        if inserted != set(index_map) or len(window) != len(rest) or \
                any(ushape[w] != shape[d] for w, d in zip(window, rest)):
            raise LiftError(f"scatter with dimension numbers {dn} is not supported (only "
                            f"whole-row updates: every indexed dim inserted, full windows "
                            f"elsewhere)")
        perm = index_map + rest
        xt = ctx.transpose(x, perm)
        scatter_dims = [d for d in range(len(ushape)) if d not in window]
        ut = ctx.transpose(updates, scatter_dims + window)
        idx = ctx.cast(idx, DType.i32)
        if len(ctx.shape(idx)) == 1:
            # One index tuple: give it a batch dim of 1 (TF's scatter kernels insist).
            idx = ctx.reshape(idx, [1, ctx.shape(idx)[0]])
            ut = ctx.reshape(ut, [1, *ctx.shape(ut)])
        how = kind
        if how == "sub":
            ut, how = ctx.emit("neg", [ut]), "add"
        if how in ("set", "add"):
            op = "scatter_nd_update" if how == "set" else "scatter_nd_add"
            out = ctx.emit(op, [xt, idx, ut])
        else:
            out = _scatter_combine(ctx, how, xt, idx, ut, len(index_map))
        inverse = [perm.index(i) for i in range(len(perm))]
        return ctx.transpose(out, inverse)
    return lower


def _scatter_combine(ctx, kind, x, idx, updates, k):
    """x with updates combined in by mul/min/max at index tuples (depth k), via a one-hot
    mask [rows updated, rows of x] reduced over the updates."""
    shape = _static(ctx.shape(x), f"scatter-{kind}")
    rows, row_shape = shape[:k], shape[k:]
    m, w = math.prod(rows), math.prod(row_shape)
    strides = np.asarray([math.prod(rows[j + 1:]) for j in range(k)], np.int32)
    flat = ctx.emit("reduce_sum", [ctx.emit("mul", [idx, Const(strides)])],
                    {"axes": [len(ctx.shape(idx)) - 1]})
    flat = ctx.reshape(flat, [-1, 1])
    n = _static(ctx.shape(flat), f"scatter-{kind} indices")[0]
    hot = ctx.emit("equal", [flat, Const(np.arange(m, dtype=np.int32)[None, :])])  # [n, m]
    u = ctx.reshape(updates, [n, 1, w])
    dt = ctx.dtype(x).np
    if kind == "mul":
        neutral, reduce_op, combine = 1, "reduce_prod", "mul"
    elif kind == "max":
        neutral = -np.inf if np.issubdtype(dt, np.floating) else np.iinfo(dt).min
        reduce_op, combine = "reduce_max", "maximum"
    else:
        neutral = np.inf if np.issubdtype(dt, np.floating) else np.iinfo(dt).max
        reduce_op, combine = "reduce_min", "minimum"
    cand = ctx.emit("where", [ctx.reshape(hot, [n, m, 1]), u, Const(np.asarray(neutral, dt))])
    folded = ctx.emit(reduce_op, [cand], {"axes": [0]})  # [m, w]
    out = ctx.emit(combine, [ctx.reshape(x, [m, w]), folded])
    return ctx.reshape(out, shape)


for _name, _kind in (("scatter", "set"), ("scatter-add", "add"), ("scatter_add", "add"),
                     ("scatter-sub", "sub"), ("scatter_sub", "sub"),
                     ("scatter-mul", "mul"), ("scatter_mul", "mul"),
                     ("scatter-min", "min"), ("scatter_min", "min"),
                     ("scatter-max", "max"), ("scatter_max", "max")):
    lowers(_name)(_scatter(_kind))


@lowers("dynamic_update_slice")
def _dynamic_update_slice(ctx, eqn, ins):
    """lax.dynamic_update_slice (a KV-cache write): starts as an i32 vector; the IR op
    clamps them as JAX does."""
    x, update, *starts = ins
    parts = [ctx.reshape(ctx.cast(s, DType.i32), [1]) for s in starts]
    if all(isinstance(p, Const) for p in parts):
        start = Const(np.concatenate([p.array for p in parts]).astype(np.int32))
    else:
        start = ctx.emit("concat", parts, {"axis": 0})
    return ctx.emit("dynamic_update_slice", [x, update, start])
