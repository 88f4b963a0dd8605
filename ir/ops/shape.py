"""Shape ops: reshape, transpose, concat, split, slice, strided_slice, pad, gather,
broadcast_to, squeeze, expand_dims, tile, reverse.

Every shape-like operand is a static attribute. Inference works on symbolic dims: a symbol is
carried through when the result dim provably equals it, and becomes "?" when the size depends on
the symbol's run-time value in a way a single symbol cannot name (e.g. `batch * 2`).
"""

from __future__ import annotations

import math

import numpy as np

from ..types import UNKNOWN
from .registry import Attr, OpDef, check, normalize_axis, register_op

PURE = frozenset({"pure"})


def _unify(a, b, what: str):
    """Two dims that must be equal at run time: the most informative one. Static sizes win over
    symbols; two different symbols stay unknown. Two different static sizes are an error."""
    if a == b:
        return a
    if isinstance(a, int) and isinstance(b, int):
        check(False, f"{what}: dims {a} and {b} differ")
    if isinstance(a, int):
        return a
    if isinstance(b, int):
        return b
    if a == UNKNOWN:
        return b
    if b == UNKNOWN:
        return a
    return UNKNOWN


def _check_axes_unique(axes, rank, what):
    """Normalizes a list of axes; InferenceError on out-of-range or repeated axes."""
    norm = [normalize_axis(a, rank, what) for a in axes]
    check(len(set(norm)) == len(norm), f"{what} {tuple(axes)} repeats an axis")
    return norm


# -- reshape -----------------------------------------------------------------------------------

def _infer_reshape(types, attrs):
    (x,), shape = types, attrs["shape"]
    check(all(d >= -1 for d in shape), f"reshape: shape {shape} has a dim < -1")
    check(shape.count(-1) <= 1, f"reshape: shape {shape} has more than one -1")
    known = math.prod(d for d in shape if d != -1)
    static_in = math.prod(d for d in x.shape if isinstance(d, int))
    symbols = [d for d in x.shape if isinstance(d, str)]

    if not symbols:
        if -1 not in shape:
            check(known == static_in, f"reshape: cannot reshape {x} ({static_in} elements) "
                                      f"to {shape} ({known} elements)")
            return [x.with_shape(shape)]
        check(known != 0, f"reshape: cannot infer the -1 in {shape} when the other dims "
                          f"multiply to 0")
        check(static_in % known == 0, f"reshape: cannot reshape {x} ({static_in} elements) "
                                      f"to {shape}: {static_in} is not a multiple of {known}")
        return [x.with_shape(static_in // known if d == -1 else d for d in shape)]

    # Symbolic input: the element count is static_in * (product of symbols).
    if -1 not in shape:
        # The symbols must make up the rest, so the static part has to divide the target
        # (a static 0 makes the input empty whatever the symbols are).
        check(known == 0 if static_in == 0 else known % static_in == 0,
              f"reshape: cannot reshape {x} to {shape}: {known} elements is not a multiple "
              f"of the static part {static_in}")
        return [x.with_shape(shape)]
    # -1 is exactly the one symbol when the static parts agree; otherwise a product we cannot
    # name (batch*2) or a quotient (batch/2).
    fill = symbols[0] if len(symbols) == 1 and known == static_in else UNKNOWN
    return [x.with_shape(fill if d == -1 else d for d in shape)]


register_op(OpDef(
    "reshape", ("x",), _infer_reshape,
    lambda ins, a: [np.reshape(ins[0], a["shape"])],
    attrs={"shape": Attr("ints", doc="target shape; one -1 is inferred")},
    traits=PURE, doc="Same elements in row-major order, new shape (one -1 allowed).",
))


# -- transpose ---------------------------------------------------------------------------------

def _infer_transpose(types, attrs):
    (x,), perm = types, attrs["perm"]
    check(sorted(perm) == list(range(x.rank)),
          f"transpose: perm {perm} is not a permutation of 0..{x.rank - 1} for {x}")
    return [x.with_shape(x.shape[p] for p in perm)]


register_op(OpDef(
    "transpose", ("x",), _infer_transpose,
    lambda ins, a: [np.transpose(ins[0], a["perm"])],
    attrs={"perm": Attr("ints", doc="output dim i is input dim perm[i]")},
    traits=PURE, doc="Permutes dims: out.shape[i] = x.shape[perm[i]].",
))


# -- concat / split ----------------------------------------------------------------------------

def _infer_concat(types, attrs):
    check(len(types) >= 1, "concat needs at least one operand")
    first = types[0]
    check(first.rank >= 1, f"concat: operands must have rank >= 1, got {first}")
    axis = normalize_axis(attrs["axis"], first.rank, "concat axis")
    out = list(first.shape)
    for i, t in enumerate(types[1:], 1):
        check(t.dtype == first.dtype, f"concat: operand {i} has dtype {t.dtype}, "
                                      f"operand 0 has {first.dtype}")
        check(t.rank == first.rank, f"concat: operand {i} is {t} (rank {t.rank}) but "
                                    f"operand 0 is {first} (rank {first.rank})")
        for d in range(first.rank):
            if d != axis:
                out[d] = _unify(out[d], t.shape[d], f"concat: operand {i} dim {d}")
    sizes = [t.shape[axis] for t in types]
    static = sum(s for s in sizes if isinstance(s, int))
    syms = [s for s in sizes if isinstance(s, str)]
    if not syms:
        out[axis] = static
    elif len(syms) == 1 and static == 0:
        out[axis] = syms[0]  # the other operands are empty along the axis
    else:
        out[axis] = UNKNOWN
    return [first.with_shape(out)]


register_op(OpDef(
    "concat", ("values*",), _infer_concat,
    lambda ins, a: [np.concatenate(ins, axis=a["axis"])],
    attrs={"axis": Attr("int")},
    traits=PURE, doc="Joins operands along `axis`; other dims must match.",
))


def _split_sizes(dim, sizes):
    """The concrete sizes of a split of `dim` (int or symbol) into `sizes` (one -1 allowed)."""
    check(len(sizes) >= 1, "split: sizes is empty")
    check(all(s >= -1 for s in sizes), f"split: sizes {sizes} has a size < -1")
    check(sizes.count(-1) <= 1, f"split: sizes {sizes} has more than one -1")
    rest = sum(s for s in sizes if s != -1)
    if isinstance(dim, str):
        # The -1 piece is the whole symbol only when every other piece is empty.
        fill = dim if rest == 0 else UNKNOWN
        return [fill if s == -1 else s for s in sizes]
    if -1 in sizes:
        check(rest <= dim, f"split: sizes {sizes} need more than the {dim} available")
        return [dim - rest if s == -1 else s for s in sizes]
    check(rest == dim, f"split: sizes {sizes} sum to {rest}, but the dim has size {dim}")
    return list(sizes)


def _infer_split(types, attrs):
    (x,) = types
    check(x.rank >= 1, f"split: operand must have rank >= 1, got {x}")
    axis = normalize_axis(attrs["axis"], x.rank, "split axis")
    out = []
    for s in _split_sizes(x.shape[axis], attrs["sizes"]):
        shape = list(x.shape)
        shape[axis] = s
        out.append(x.with_shape(shape))
    return out


def _split_kernel(ins, attrs):
    x = ins[0]
    axis = attrs["axis"] % x.ndim
    sizes = _split_sizes(x.shape[axis], attrs["sizes"])
    return np.split(x, np.cumsum(sizes)[:-1], axis=axis)


register_op(OpDef(
    "split", ("x",), _infer_split, _split_kernel,
    attrs={"axis": Attr("int", 0), "sizes": Attr("ints", doc="piece sizes; one -1 allowed")},
    traits=PURE, doc="Splits along `axis` into len(sizes) pieces of the given sizes.",
))


# -- slice -------------------------------------------------------------------------------------

def _infer_slice(types, attrs):
    (x,), begin, size = types, attrs["begin"], attrs["size"]
    check(len(begin) == x.rank and len(size) == x.rank,
          f"slice: begin {begin} and size {size} need one entry per dim of {x}")
    out = []
    for i, (d, b, s) in enumerate(zip(x.shape, begin, size)):
        check(b >= 0, f"slice: begin[{i}] = {b} must be >= 0")
        check(s >= -1, f"slice: size[{i}] = {s} must be >= -1 (-1 = to the end)")
        if isinstance(d, int):
            end = d if s == -1 else b + s
            check(b <= d and end <= d,
                  f"slice: dim {i} of size {d} cannot hold [{b}, {end})")
            out.append(end - b)
        elif s == -1:
            out.append(d if b == 0 else UNKNOWN)
        else:
            out.append(s)
    return [x.with_shape(out)]


def _slice_kernel(ins, attrs):
    idx = tuple(slice(b, None if s == -1 else b + s) for b, s in zip(attrs["begin"], attrs["size"]))
    return [ins[0][idx].copy()]


register_op(OpDef(
    "slice", ("x",), _infer_slice, _slice_kernel,
    attrs={"begin": Attr("ints"), "size": Attr("ints", doc="-1 = to the end")},
    traits=PURE, doc="x[begin : begin+size] per dim (tf.slice).",
))


# -- strided_slice -----------------------------------------------------------------------------
# Follows tensorflow/core/util/strided_slice_op.cc: the sparse spec (one entry per begin/end/
# strides element, with ellipsis and new axes) is expanded to a dense spec (one entry per input
# dim), each dense dim is canonicalized, and the final shape re-inserts new axes and drops
# shrunk ones.

_NEW_AXIS, _SHRINK = -1, -2


def _strided_slice_plan(shape, attrs):
    """Returns (per input dim: (begin, end, stride, shrink, size), or None for a symbolic dim;
    the final shape). Raises InferenceError where TF's ValidateStridedSliceOp fails."""
    begin, end, strides = attrs["begin"], attrs["end"], attrs["strides"]
    bm, em = attrs["begin_mask"], attrs["end_mask"]
    sm, nm, elm = attrs["shrink_axis_mask"], attrs["new_axis_mask"], attrs["ellipsis_mask"]
    n = len(begin)
    check(len(end) == n and len(strides) == n,
          f"strided_slice: begin, end and strides differ in length "
          f"({n}, {len(end)}, {len(strides)})")
    check(min(bm, em, sm, nm, elm) >= 0, "strided_slice: masks must be >= 0")
    check(bin(elm & ((1 << n) - 1)).count("1") <= 1,
          f"strided_slice: ellipsis_mask {elm:#b} sets more than one ellipsis")
    for i, s in enumerate(strides):
        check(s != 0, f"strided_slice: strides[{i}] is 0")

    # Sparse -> dense. Without an explicit ellipsis TF appends one (remaining dims kept whole).
    ellipsis_seen, add_after_ellipsis = False, 0
    for i in range(n):
        if ellipsis_seen and nm >> i & 1:
            add_after_ellipsis += 1
        if elm >> i & 1:
            ellipsis_seen = True
    sparse_dims = n
    if not ellipsis_seen:
        elm |= 1 << n
        sparse_dims += 1

    rank = len(shape)
    dense = []  # per input dim: (begin, end, stride, begin_masked, end_masked, shrink)
    gather = []  # final shape: input dim index, _NEW_AXIS or _SHRINK
    for i in range(sparse_dims):
        if elm >> i & 1:
            stop = min(rank - (sparse_dims - i) + 1 + add_after_ellipsis, rank)
            while len(dense) < stop:
                gather.append(len(dense))
                dense.append((0, 0, 1, True, True, False))
        elif nm >> i & 1:
            gather.append(_NEW_AXIS)
        else:
            check(len(dense) < rank, f"strided_slice: index {i} is out of range: the input "
                                     f"has only {rank} dims")
            shrink = bool(sm >> i & 1)
            gather.append(_SHRINK if shrink else len(dense))
            dense.append((begin[i], end[i], strides[i], bool(bm >> i & 1), bool(em >> i & 1),
                          shrink))
    check(len(dense) == rank, f"strided_slice: spec covers {len(dense)} of {rank} dims")

    plan, sizes = [], []
    for i, (dim, (b, e, s, b_masked, e_masked, shrink)) in enumerate(zip(shape, dense)):
        if shrink:
            check(s > 0, f"strided_slice: dim {i} is shrunk (indexed) so its stride must be "
                         f"positive, got {s}")
        if isinstance(dim, str):
            # Only the full range with unit stride is provably the symbol itself.
            full = b_masked or (s > 0 and b == 0)
            sizes.append(1 if shrink else dim if (full and e_masked and abs(s) == 1)
                         else UNKNOWN)
            plan.append(None)
            continue
        if shrink:
            # x[-1]: the index is begin alone (end may be anything, incl. masked).
            at = b + dim if b < 0 else b
            check(0 <= at < dim, f"strided_slice: index {b} is out of bounds for dim {i} "
                                 f"of size {dim}")
            plan.append((at, at + 1, 1, True, 1))
            sizes.append(1)
            continue
        # Canonical begin/end: masked ends take the extreme for the stride's direction;
        # others wrap negatives once and clamp to [0, dim] (stride > 0) or [-1, dim-1] (< 0).
        lo, hi = (0, dim) if s > 0 else (-1, dim - 1)

        def canon(x, masked, is_begin):
            if masked:
                return (lo if is_begin else hi) if s > 0 else (hi if is_begin else lo)
            x = x + dim if x < 0 else x
            return min(max(x, lo), hi)

        cb, ce = canon(b, b_masked, True), canon(e, e_masked, False)
        length = ce - cb
        size = 0 if length == 0 or (length < 0) != (s < 0) else -(-abs(length) // abs(s))
        plan.append((cb, ce, s, False, size))
        sizes.append(size)

    final = [1 if g == _NEW_AXIS else sizes[g] for g in gather if g != _SHRINK]
    return plan, final


def _infer_strided_slice(types, attrs):
    (x,) = types
    _, final = _strided_slice_plan(x.shape, attrs)
    return [x.with_shape(final)]


def strided_slice_index(shape, attrs) -> tuple[tuple, tuple]:
    """(NumPy-style index, final shape) of a strided_slice on `shape` (TF's mask
    semantics); backends that index arrays the NumPy way (JAX) reuse it."""
    plan, final = _strided_slice_plan(shape, attrs)
    idx = []
    for b, e, s, shrink, size in plan:
        if shrink:
            idx.append(b)
        elif size == 0:
            idx.append(slice(0, 0))
        else:
            # Build the stop from the size: a canonical end of -1 (before index 0 when going
            # backwards) would mean "last element" to Python.
            stop = b + s * size
            idx.append(slice(b, stop if stop >= 0 else None, s))
    return tuple(idx), final


def _strided_slice_kernel(ins, attrs):
    x = ins[0]
    idx, final = strided_slice_index(x.shape, attrs)
    return [np.reshape(x[idx], final)]


_MASK = "bit i applies to spec entry i"
register_op(OpDef(
    "strided_slice", ("x",), _infer_strided_slice, _strided_slice_kernel,
    attrs={
        "begin": Attr("ints"), "end": Attr("ints"), "strides": Attr("ints"),
        "begin_mask": Attr("int", 0, doc=_MASK), "end_mask": Attr("int", 0, doc=_MASK),
        "shrink_axis_mask": Attr("int", 0, doc=_MASK), "new_axis_mask": Attr("int", 0, doc=_MASK),
        "ellipsis_mask": Attr("int", 0, doc=_MASK),
    },
    traits=PURE, doc="NumPy-style strided indexing with TF's mask semantics (tf.strided_slice).",
))


# -- pad ---------------------------------------------------------------------------------------

def _infer_pad(types, attrs):
    (x,), pads, mode = types, attrs["pads"], attrs["mode"]
    check(len(pads) == x.rank, f"pad: pads has {len(pads)} entries but {x} has rank {x.rank}")
    out = []
    for i, (d, p) in enumerate(zip(x.shape, pads)):
        check(len(p) == 2 and min(p) >= 0,
              f"pad: pads[{i}] = {p} must be (before, after) with both >= 0")
        if isinstance(d, int):
            # MirrorPad limits: reflect excludes the edge so at most d-1, symmetric at most d.
            limit = d - 1 if mode == "reflect" else d
            check(mode == "constant" or max(p) <= limit,
                  f"pad: {mode} padding {p} of dim {i} exceeds {limit} for size {d}")
            out.append(d + p[0] + p[1])
        else:
            out.append(d if p == (0, 0) else UNKNOWN)
    return [x.with_shape(out)]


def _pad_kernel(ins, attrs):
    x, mode = ins[0], attrs["mode"]
    if x.ndim == 0:
        return [x.copy()]  # nothing to pad (np.pad rejects an empty pad list)
    if mode == "constant":
        fill = np.asarray(attrs["value"]).astype(x.dtype)
        return [np.pad(x, attrs["pads"], mode="constant", constant_values=fill)]
    return [np.pad(x, attrs["pads"], mode=mode)]  # NumPy's reflect/symmetric match TF's


register_op(OpDef(
    "pad", ("x",), _infer_pad, _pad_kernel,
    attrs={"pads": Attr("intss", doc="((before, after), ...) per dim"),
           "mode": Attr("str", "constant", choices=("constant", "reflect", "symmetric")),
           "value": Attr("float", 0.0, doc="fill value for constant mode")},
    traits=PURE, doc="Pads each dim with a constant or a mirror of the edge (tf.pad).",
))


# -- gather ------------------------------------------------------------------------------------

def _gather_axes(params_rank, indices_rank, attrs):
    bd = attrs["batch_dims"]
    bd = bd + indices_rank if bd < 0 else bd
    check(0 <= bd <= indices_rank, f"gather: batch_dims {attrs['batch_dims']} out of range "
                                   f"for indices of rank {indices_rank}")
    check(params_rank >= 1, "gather: params must have rank >= 1")
    axis = normalize_axis(attrs["axis"], params_rank, "gather axis")
    check(axis >= bd, f"gather: axis {axis} must be >= batch_dims {bd} (set axis, it defaults "
                      f"to 0 unlike tf.gather's batch_dims default)")
    return axis, bd


def _infer_gather(types, attrs):
    params, indices = types
    check(indices.dtype.is_int, f"gather: indices must be integers, got {indices.dtype}")
    axis, bd = _gather_axes(params.rank, indices.rank, attrs)
    batch = [_unify(params.shape[i], indices.shape[i], f"gather: batch dim {i}")
             for i in range(bd)]
    shape = batch + list(params.shape[bd:axis]) + list(indices.shape[bd:]) \
        + list(params.shape[axis + 1:])
    return [params.with_shape(shape)]


def _gather_kernel(ins, attrs):
    params, indices = ins
    axis, bd = _gather_axes(params.ndim, indices.ndim, attrs)
    n = params.shape[axis]
    if indices.size and (indices.min() < 0 or indices.max() >= n):
        # TF's CPU kernel rejects these; NumPy would wrap negatives silently.
        raise IndexError(f"gather: indices outside [0, {n}) on axis {axis}")
    batch_shape = params.shape[:bd]
    out_shape = batch_shape + params.shape[bd:axis] + indices.shape[bd:] + params.shape[axis + 1:]
    # Flatten the batch dims and gather batch element by batch element.
    b = math.prod(batch_shape)
    p = params.reshape((b,) + params.shape[bd:])
    idx = indices.reshape((b,) + indices.shape[bd:])
    pieces = [np.take(p[i], idx[i], axis=axis - bd) for i in range(b)]
    out = np.stack(pieces) if pieces else np.empty(0, params.dtype)
    return [out.reshape(out_shape)]


register_op(OpDef(
    "gather", ("params", "indices"), _infer_gather, _gather_kernel,
    attrs={"axis": Attr("int", 0), "batch_dims": Attr("int", 0)},
    traits=PURE, doc="Selects slices of params along `axis` by indices (tf.gather).",
))


# -- broadcast_to / squeeze / expand_dims / tile -----------------------------------------------

def _infer_broadcast_to(types, attrs):
    (x,), shape = types, attrs["shape"]
    check(all(d >= 0 for d in shape), f"broadcast_to: shape {shape} has a negative dim")
    check(x.rank <= len(shape), f"broadcast_to: cannot broadcast {x} to lower rank {shape}")
    for i, d in enumerate(x.shape):
        want = shape[len(shape) - x.rank + i]
        # A symbolic dim must be 1 or the target at run time; nothing to check statically.
        check(not isinstance(d, int) or d in (1, want),
              f"broadcast_to: dim {i} of {x} (size {d}) cannot broadcast to {want} in {shape}")
    return [x.with_shape(shape)]


register_op(OpDef(
    "broadcast_to", ("x",), _infer_broadcast_to,
    lambda ins, a: [np.array(np.broadcast_to(ins[0], a["shape"]))],  # copy: no read-only view
    attrs={"shape": Attr("ints")},
    traits=PURE, doc="Broadcasts x to a static shape with NumPy rules.",
))


def _infer_squeeze(types, attrs):
    (x,), axes = types, attrs["axes"]
    if not axes:
        # A symbol could be 1 at run time, which the kernel would then squeeze: refuse rather
        # than guess a rank.
        check(x.is_static, f"squeeze: with no axes, {x} has symbolic dims whose size-1-ness is "
                           f"unknown; give the axes explicitly")
        return [x.with_shape(d for d in x.shape if d != 1)]
    norm = _check_axes_unique(axes, x.rank, "squeeze axis")
    for a in norm:
        check(x.shape[a] == 1 or isinstance(x.shape[a], str),
              f"squeeze: dim {a} of {x} has size {x.shape[a]}, not 1")
    return [x.with_shape(d for i, d in enumerate(x.shape) if i not in norm)]


def _squeeze_kernel(ins, attrs):
    x, axes = ins[0], attrs["axes"]
    return [np.squeeze(x, axis=tuple(a % x.ndim for a in axes) if axes else None)]


register_op(OpDef(
    "squeeze", ("x",), _infer_squeeze, _squeeze_kernel,
    attrs={"axes": Attr("ints", (), doc="dims to drop; empty = every size-1 dim")},
    traits=PURE, doc="Drops size-1 dims.",
))


def _infer_expand_dims(types, attrs):
    (x,) = types
    axis = normalize_axis(attrs["axis"], x.rank + 1, "expand_dims axis")
    shape = list(x.shape)
    shape.insert(axis, 1)
    return [x.with_shape(shape)]


register_op(OpDef(
    "expand_dims", ("x",), _infer_expand_dims,
    lambda ins, a: [np.expand_dims(ins[0], a["axis"])],
    attrs={"axis": Attr("int", doc="position of the new dim in the result")},
    traits=PURE, doc="Inserts a size-1 dim at `axis`.",
))


def _infer_tile(types, attrs):
    (x,), mult = types, attrs["multiples"]
    check(len(mult) == x.rank, f"tile: multiples {mult} need one entry per dim of {x}")
    check(all(m >= 0 for m in mult), f"tile: multiples {mult} has a negative entry")
    out = []
    for d, m in zip(x.shape, mult):
        if isinstance(d, int):
            out.append(d * m)
        else:
            out.append(d if m == 1 else 0 if m == 0 else UNKNOWN)
    return [x.with_shape(out)]


register_op(OpDef(
    "tile", ("x",), _infer_tile,
    lambda ins, a: [np.tile(ins[0], a["multiples"])],
    attrs={"multiples": Attr("ints")},
    traits=PURE, doc="Repeats x multiples[i] times along dim i.",
))


# -- reverse -----------------------------------------------------------------------------------

def _infer_reverse(types, attrs):
    (x,) = types
    _check_axes_unique(attrs["axes"], x.rank, "reverse axis")
    return [x]


register_op(OpDef(
    "reverse", ("x",), _infer_reverse,
    lambda ins, a: [np.flip(ins[0], tuple(ax % ins[0].ndim for ax in a["axes"])).copy()
                    if a["axes"] else ins[0]],
    attrs={"axes": Attr("ints", doc="dims to reverse (negative counts from the end)")},
    traits=PURE, doc="Reverses the order of the elements along `axes` (jnp.flip, lax.rev, "
                     "tf.reverse).",
))
