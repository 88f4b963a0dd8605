"""The JAX factorization primitives qr, geqrf, householder_product, eigh and svd (what
jnp.linalg.qr / eigh / svd / pinv / lstsq / matrix_rank and jax.lax.linalg build on).

No target has them as ops: each is the shared unrolled decomposition of `frontends/eigen.py`,
the same IR the TF ops Qr, SelfAdjointEigV2 and Svd lift to. Matrix dims must be static and
their smaller one at most `eigen.MAX_N`; batch dims may be run-time sizes. Every parameter is
honoured or refused: `pivoting` (refused), `subset_by_index` (a slice of the sorted result),
`lower`, `full_matrices`, `compute_uv`; `sort_eigenvalues`, `algorithm` and `use_magma` only
choose an implementation (JAX's CPU and GPU eigh sort whatever sort_eigenvalues says), so the
result is the same.
"""

from __future__ import annotations

from .. import eigen
from .context import LiftError
from .ops import builder, lowers


def _float_dtype(ctx, eqn, x):
    """The IR dtype of the real float matrices x; LiftError otherwise."""
    dtype = ctx.dtype(x)
    if not dtype.is_float:
        raise LiftError(f"{eqn.primitive.name} of {dtype} matrices is not supported "
                        f"(real float only)")
    return dtype


def _shared(fn):
    """`fn(ctx, eqn, ins, b, dtype)` as a lowering: the input dtype checked, the builder
    made, and the shared decomposition's EigenError re-raised as this frontend's LiftError."""
    def lower(ctx, eqn, ins):
        dtype = _float_dtype(ctx, eqn, ins[0])
        try:
            return fn(ctx, eqn, ins, builder(ctx), dtype)
        except eigen.EigenError as e:
            raise LiftError(f"{eqn.primitive.name}: {e}") from None
    lower.__doc__ = fn.__doc__
    return lower


def _slice_last(ctx, x, lo, hi):
    """x[..., lo:hi]."""
    rank = len(ctx.shape(x))
    return ctx.emit("slice", [x], {"begin": [0] * (rank - 1) + [lo],
                                   "size": [-1] * (rank - 1) + [hi - lo]})


def _subset(ctx, eqn, p: int):
    """The (lo, hi) of `subset_by_index` over p values, or None for all of them."""
    subset = eqn.params.get("subset_by_index")
    if subset is None or tuple(subset) == (0, p):
        return None
    lo, hi = (int(i) for i in subset)
    if not 0 <= lo < hi <= p:
        raise LiftError(f"{eqn.primitive.name}: subset_by_index {tuple(subset)} is outside "
                        f"[0, {p}]")
    return lo, hi


@lowers("qr")
@_shared
def _qr(ctx, eqn, ins, b, dtype):
    """qr(a; full_matrices, pivoting) -> (q, r), LAPACK's Householder signs."""
    if eqn.params.get("pivoting", False):
        raise LiftError("qr with pivoting=True (column-pivoted QR) is not supported")
    q, r = eigen.qr(b, ins[0], dtype, bool(eqn.params["full_matrices"]))
    return [q, r]


@lowers("geqrf")
@_shared
def _geqrf(ctx, eqn, ins, b, dtype):
    """geqrf(a) -> (packed Householder factor, taus), as LAPACK's."""
    packed, taus = eigen.geqrf(b, ins[0], dtype)
    return [packed, taus]


@lowers("householder_product")
@_shared
def _householder_product(ctx, eqn, ins, b, dtype):
    """householder_product(a, taus) -> q (LAPACK's orgqr)."""
    return eigen.householder_product(b, ins[0], ins[1], dtype)


@lowers("eigh")
@_shared
def _eigh(ctx, eqn, ins, b, dtype):
    """eigh(a; lower, subset_by_index) -> (v, w): eigenvalues ascending; eigenvectors with
    A v = w v but possibly of the other sign than LAPACK's."""
    w, v = eigen.eigh(b, ins[0], dtype, lower=bool(eqn.params.get("lower", True)))
    subset = _subset(ctx, eqn, ctx.shape(ins[0])[-1])
    if subset is not None:
        w, v = _slice_last(ctx, w, *subset), _slice_last(ctx, v, *subset)
    return [v, w]


@lowers("svd")
@_shared
def _svd(ctx, eqn, ins, b, dtype):
    """svd(a; full_matrices, compute_uv, subset_by_index) -> (s,) or (s, u, vt): singular
    values descending, a = u diag(s) vt."""
    full = bool(eqn.params["full_matrices"])
    compute_uv = bool(eqn.params["compute_uv"])
    m, n = ctx.shape(ins[0])[-2:]
    s, u, v = eigen.svd(b, ins[0], dtype, compute_uv=compute_uv, full_matrices=full)
    subset = _subset(ctx, eqn, min(m, n)) if isinstance(m, int) and isinstance(n, int) \
        else None
    if subset is not None:
        if full:
            raise LiftError("svd: full_matrices and subset_by_index cannot both be set")
        s = _slice_last(ctx, s, *subset)
        if compute_uv:
            u, v = _slice_last(ctx, u, *subset), _slice_last(ctx, v, *subset)
    if not compute_uv:
        return [s]
    rank = len(ctx.shape(v))
    vt = ctx.emit("transpose", [v], {"perm": list(range(rank - 2)) + [rank - 1, rank - 2]})
    return [s, u, vt]
