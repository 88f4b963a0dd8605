"""Matrix TF ops: MatMul (folding Tensordot's 2-D reshapes into one broadcasting matmul),
BatchMatMul*, Einsum (as transposes, reshapes and one matmul) and MatrixBandPart."""

from __future__ import annotations

import string

import numpy as np

from ..context import Const, Lazy, LiftError
from ..shapes import product
from .common import flat_type, node_attr, reshape_to, static_axis


def _matrix_band_part(ctx, node, ins):
    x, lo, hi = ins
    lo, hi = (static_axis(ctx, e, "MatrixBandPart band") for e in (lo, hi))
    m, n = ctx.type(x).shape[-2:]
    if not (isinstance(m, int) and isinstance(n, int)):
        raise LiftError("MatrixBandPart needs static matrix dims")
    i, j = np.arange(m)[:, None], np.arange(n)[None, :]
    band = np.ones((m, n), dtype=bool)
    if lo >= 0:
        band &= (i - j) <= lo
    if hi >= 0:
        band &= (j - i) <= hi
    # A band is x where the mask holds, else 0: one elementwise where with a constant mask.
    zero = Const(np.zeros((), dtype=ctx.type(x).dtype.np), node)
    return ctx.emit("where", [Const(band, node), x, zero])


def _matmul(ctx, node, ins):
    a, b = ins[:2]
    attrs = {"transpose_a": bool(node_attr(node, "transpose_a", False)),
             "transpose_b": bool(node_attr(node, "transpose_b", False))}
    if isinstance(a, Lazy) and a.info and a.info[0] == "flatten" and not attrs["transpose_a"] \
            and ctx.type(b).rank == 2:
        full = ctx.emit1("matmul", [a.info[1], b], attrs)      # [..., K] @ [K, N]
        dims = ctx.sym_shape(full)
        flat = [product(dims[:-1]), dims[-1]]
        return [Lazy(lambda c: reshape_to(c, full, flat), flat_type(ctx, full, flat), flat,
                     ctx.scope, ctx.loc, ("matmul_flat", full))]
    return ctx.emit("matmul", ins[:2], attrs)


def _batch_matmul(ctx, node, ins):
    # adj_x/adj_y conjugate-transpose; for the IR's real dtypes that is a transpose.
    return ctx.emit("matmul", ins[:2], {"transpose_a": bool(node_attr(node, "adj_x", False)),
                                        "transpose_b": bool(node_attr(node, "adj_y", False))})


# -- einsum ----------------------------------------------------------------------------------

def _einsum(ctx, node, ins):
    eq = node_attr(node, "equation").replace(" ", "")
    if "..." in eq:
        raise LiftError(f"Einsum with an ellipsis ({eq}) is not supported")
    lhs, _, out = eq.partition("->")
    specs = lhs.split(",")
    if len(specs) != len(ins) or len(specs) not in (1, 2):
        raise LiftError(f"Einsum {eq} with {len(ins)} operands is not supported")
    for s in specs + [out]:
        if len(set(s)) != len(s) or not set(s) <= set(string.ascii_letters):
            raise LiftError(f"Einsum {eq}: repeated labels (diagonals) are not supported")
    if len(specs) == 1:
        x, s = _sum_out(ctx, ins[0], specs[0], set(out))
        return [_permute(ctx, x, s, out)]
    a, sa = _sum_out(ctx, ins[0], specs[0], set(out) | set(specs[1]))
    b, sb = _sum_out(ctx, ins[1], specs[1], set(out) | set(sa))
    return [_einsum2(ctx, a, sa, b, sb, out)]


def _sum_out(ctx, x, spec, keep):
    """Sums away the labels of x that appear neither in `keep`."""
    gone = [i for i, c in enumerate(spec) if c not in keep]
    if not gone:
        return x, spec
    x = ctx.emit1("reduce_sum", [x], {"axes": gone, "keepdims": False})
    return x, "".join(c for c in spec if c in keep)


def _permute(ctx, x, spec, want):
    perm = [spec.index(c) for c in want]
    if perm == list(range(len(perm))):
        return x
    return ctx.emit1("transpose", [x], {"perm": perm})


def _operand(ctx, x, spec, batch, first, second):
    """Brings x to [batch, first..., second...] as a rank-(len(batch)+2) matmul operand; returns
    (operand, transposed) where transposed means it is laid out [batch, second, first]."""
    dims = dict(zip(spec, ctx.sym_shape(x)))
    straight, swapped = batch + first + second, batch + second + first
    if spec == "".join(straight) or spec == "".join(swapped):
        transposed = spec != "".join(straight)   # the matmul's flag, no transpose node
    else:
        # Keep x's innermost axis innermost: the cheaper transpose, and attention's q @ k^T
        # becomes matmul(q, k, transpose_b) on k with its two middle axes swapped.
        transposed = spec[-1] in first
        x = _permute(ctx, x, spec, "".join(swapped if transposed else straight))
    lead = [dims[c] for c in batch]
    a, b = (second, first) if transposed else (first, second)
    if len(a) != 1 or len(b) != 1:
        x = reshape_to(ctx, x, lead + [product(dims[c] for c in a), product(dims[c] for c in b)])
    return x, transposed, dims


def _einsum2(ctx, a, sa, b, sb, out):
    batch = [c for c in out if c in sa and c in sb]
    contract = [c for c in sa if c in sb and c not in out]
    afree = [c for c in sa if c not in sb]
    bfree = [c for c in sb if c not in sa]
    rest = [c for c in out if c not in batch]
    if rest == bfree + afree and rest != afree + bfree:
        # The output wants b's free labels first: compute b @ a instead of transposing after.
        a, sa, b, sb, afree, bfree = b, sb, a, sa, bfree, afree
    xa, ta, da = _operand(ctx, a, sa, batch, afree, contract)
    xb, tb, db = _operand(ctx, b, sb, batch, contract, bfree)
    y = ctx.emit1("matmul", [xa, xb], {"transpose_a": ta, "transpose_b": tb})
    if len(afree) != 1 or len(bfree) != 1:
        dims = {**db, **da}
        y = reshape_to(ctx, y, [dims[c] for c in batch + afree + bfree])
    return _permute(ctx, y, "".join(batch + afree + bfree), out)


TABLE = {
    "MatMul": _matmul, "BatchMatMul": _batch_matmul, "BatchMatMulV2": _batch_matmul,
    "BatchMatMulV3": _batch_matmul, "Einsum": _einsum, "MatrixBandPart": _matrix_band_part,
}
