"""Matrix TF ops: MatMul (folding Tensordot's 2-D reshapes into one broadcasting matmul),
BatchMatMul*, Einsum (as transposes, reshapes and one matmul) and MatrixBandPart."""

from __future__ import annotations

import string

import numpy as np

from ....ir.types import DType
from ..context import Const, Lazy, LiftError
from ..shapes import product
from .common import flat_type, node_attr, reshape_to, static_axis


def _matrix_band_part(ctx, node, ins):
    x, lo_e, hi_e = ins
    m, n = ctx.sym_shape(x)[-2:]
    zero = Const(np.zeros((), dtype=ctx.type(x).dtype.np), node)
    if ctx.const(lo_e) is None or ctx.const(hi_e) is None:
        return _run_time_band(ctx, node, x, m, n, lo_e, hi_e, zero)
    lo, hi = (static_axis(ctx, e, "MatrixBandPart band") for e in (lo_e, hi_e))
    if isinstance(m, int) and isinstance(n, int):
        i, j = np.arange(m)[:, None], np.arange(n)[None, :]
        band = np.ones((m, n), dtype=bool)
        if lo >= 0:
            band &= (i - j) <= lo
        if hi >= 0:
            band &= (j - i) <= hi
        # A band is x where the mask holds, else 0: one elementwise where with a constant
        # mask.
        return ctx.emit("where", [Const(band, node), x, zero])
    # Run-time matrix dims (a causal mask over the sequence): the same mask from row and
    # column indices computed at run time.
    i = ctx.emit1("reshape", [_positions(ctx, m)], {"shape": [-1, 1]})
    j = ctx.emit1("reshape", [_positions(ctx, n)], {"shape": [1, -1]})
    band = None
    for d, limit in ((ctx.emit1("sub", [i, j]), lo), (ctx.emit1("sub", [j, i]), hi)):
        if limit >= 0:
            ok = ctx.emit1("less_equal", [d, Const(np.asarray(limit, np.int32), node)])
            band = ok if band is None else ctx.emit1("logical_and", [band, ok])
    if band is None:
        return [x]
    return ctx.emit("where", [band, x, zero])


def _run_time_band(ctx, node, x, m, n, lo, hi, zero):
    """A band whose widths are computed at run time (Gemma's sliding window): a negative
    width keeps that whole side, as in TF."""
    i = ctx.emit1("reshape", [_positions(ctx, m)], {"shape": [-1, 1]})
    j = ctx.emit1("reshape", [_positions(ctx, n)], {"shape": [1, -1]})
    band = None
    for d, limit in ((ctx.emit1("sub", [i, j]), lo), (ctx.emit1("sub", [j, i]), hi)):
        limit = ctx.emit1("cast", [limit], {"to": DType.i32}) \
            if ctx.type(limit).dtype != DType.i32 else limit
        whole = ctx.emit1("less", [limit, Const(np.asarray(0, np.int32), node)])
        ok = ctx.emit1("logical_or", [whole, ctx.emit1("less_equal", [d, limit])])
        band = ok if band is None else ctx.emit1("logical_and", [band, ok])
    return ctx.emit("where", [band, x, zero])


def _positions(ctx, size):
    """0, 1, ..., size - 1 for a size that may be known only at run time."""
    if isinstance(size, int):
        return Const(np.arange(size, dtype=np.int32), ctx.node)
    n = ctx.emit1("reshape", [ctx.shape_value([size])], {"shape": []})
    return ctx.dynamic("range", [Const(np.asarray(0, np.int32), ctx.node), n,
                                 Const(np.asarray(1, np.int32), ctx.node)], [size])


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
    lhs, _, out = eq.partition("->")
    specs = lhs.split(",")
    if len(specs) != len(ins) or len(specs) not in (1, 2):
        raise LiftError(f"Einsum {eq} with {len(ins)} operands is not supported")
    if "..." in eq:
        specs, out = _expand_ellipsis(eq, specs, out, [ctx.type(x).rank for x in ins])
    for s in specs + [out]:
        if len(set(s)) != len(s) or not set(s) <= set(string.ascii_letters):
            raise LiftError(f"Einsum {eq}: repeated labels (diagonals) are not supported")
    if len(specs) == 1:
        x, s = _sum_out(ctx, ins[0], specs[0], set(out))
        return [_permute(ctx, x, s, out)]
    a, sa = _sum_out(ctx, ins[0], specs[0], set(out) | set(specs[1]))
    b, sb = _sum_out(ctx, ins[1], specs[1], set(out) | set(sa))
    return [_einsum2(ctx, a, sa, b, sb, out)]


def _expand_ellipsis(eq, specs, out, ranks):
    """Names the dims an ellipsis stands for with unused labels, right-aligned across the
    operands as NumPy broadcasting aligns them (`...a,b->...ab` on rank 3 is `xya,b->xyab`)."""
    spare = [c for c in string.ascii_letters if c not in eq]
    counts = [rank - (len(spec) - 3) if "..." in spec else 0
              for spec, rank in zip(specs, ranks)]
    if any(c < 0 for c in counts):
        raise LiftError(f"Einsum {eq}: an operand has fewer dims than its labels")
    n = max(counts, default=0)
    if n > len(spare):
        raise LiftError(f"Einsum {eq}: too many dims under the ellipsis")
    letters = "".join(spare[:n])
    specs = [spec.replace("...", letters[n - c:]) for spec, c in zip(specs, counts)]
    return specs, out.replace("...", letters)


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


def _matrix_diag(ctx, node, ins):
    """MatrixDiag[V2/V3] of the main diagonal into a square matrix (ops.eye, ops.diag):
    x[..., n] -> x[..., n, 1] * eye(n), for a static n."""
    x = ins[0]
    if len(ins) > 1:
        k = np.asarray(ctx.static(ins[1], f"{node.op} k")).ravel()
        rows, cols = (int(np.asarray(ctx.static(e, f"{node.op} size")).ravel()[0])
                      for e in ins[2:4])
        pad = np.asarray(ctx.static(ins[4], f"{node.op} padding_value")).ravel()[0]
        if k.tolist() not in ([0], [0, 0]) or pad != 0:
            raise LiftError(f"{node.op} off the main diagonal (k={k.tolist()}) or with a "
                            f"non-zero padding value is not supported")
        n_static = ctx.type(x).shape[-1]
        if (rows, cols) not in ((-1, -1), (n_static, n_static)):
            raise LiftError(f"{node.op} to a {rows}x{cols} (non-square) matrix is not "
                            f"supported")
    n = ctx.type(x).shape[-1]
    if not isinstance(n, int):
        raise LiftError(f"{node.op} of a run-time size {n} is not supported")
    eye = Const(np.eye(n, dtype=ctx.type(x).dtype.np), node)
    return ctx.emit("mul", [ctx.emit1("expand_dims", [x], {"axis": -1}), eye])


TABLE = {
    "MatMul": _matmul, "BatchMatMul": _batch_matmul, "BatchMatMulV2": _batch_matmul,
    "BatchMatMulV3": _batch_matmul, "Einsum": _einsum, "MatrixBandPart": _matrix_band_part,
    "MatrixDiag": _matrix_diag, "MatrixDiagV2": _matrix_diag, "MatrixDiagV3": _matrix_diag,
}
