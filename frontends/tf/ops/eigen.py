"""Matrix factorization TF ops: Qr, SelfAdjointEigV2 and Svd (what keras.ops qr, eigh, svd,
pinv, lstsq and matrix_rank build on the TensorFlow backend).

No target has them as ops: each is the shared unrolled decomposition of `frontends/eigen.py`
(Householder QR, Jacobi eigh, one-sided Jacobi SVD; the JAX primitives qr, eigh and svd lift
to the same IR). Matrix dims must be static and their smaller one at most `eigen.MAX_N`; batch
dims may be run-time sizes. Every attribute is honoured: full_matrices, compute_v, compute_uv,
and T (float32 and float64 natively, half and bfloat16 computed in float32; complex inputs are
refused).
"""

from __future__ import annotations

import numpy as np

from ... import eigen
from ..context import Complex, Const, LiftError
from .common import node_attr
from .elementwise import builder


def _matrices(ctx, node, x):
    """The IR dtype of the real float matrices x; LiftError for complex or non-float x (the
    IR keeps complex values only around the FFTs)."""
    if isinstance(x, Complex):
        raise LiftError(f"{node.op} of complex matrices is not supported (real float only)")
    dtype = ctx.type(x).dtype
    if not dtype.is_float:
        raise LiftError(f"{node.op} of {dtype} matrices is not supported (float only)")
    return dtype


def _unused(ctx, node, x):
    """The output TF leaves empty when it is not computed (u, v without compute_uv; v without
    compute_v): TF's shape function gives it shape [0]."""
    return Const(np.zeros((0,), ctx.type(x).dtype.np), node)


def _lowering(fn):
    """`fn(ctx, node, ins, b, dtype)` as a table entry: the input checked, the builder made,
    and the shared decomposition's EigenError re-raised as this frontend's LiftError."""
    def lower(ctx, node, ins):
        dtype = _matrices(ctx, node, ins[0])
        try:
            return fn(ctx, node, ins, builder(ctx, node), dtype)
        except eigen.EigenError as e:
            raise LiftError(f"{node.op}: {e}") from None
    lower.__doc__ = fn.__doc__
    return lower


@_lowering
def _qr(ctx, node, ins, b, dtype):
    """Qr(input; full_matrices) -> (q, r), TF's (Eigen's) Householder signs."""
    q, r = eigen.qr(b, ins[0], dtype, bool(node_attr(node, "full_matrices", False)))
    return [q, r]


@_lowering
def _self_adjoint_eig_v2(ctx, node, ins, b, dtype):
    """SelfAdjointEigV2(input; compute_v) -> (e, v): eigenvalues ascending, eigenvectors
    valid (A v = e v) but possibly of the other sign than TF's; the lower triangle is read,
    as TF's Eigen solver does."""
    compute_v = bool(node_attr(node, "compute_v", True))
    w, v = eigen.eigh(b, ins[0], dtype, lower=True, compute_v=compute_v)
    return [w, v if compute_v else _unused(ctx, node, ins[0])]


@_lowering
def _svd(ctx, node, ins, b, dtype):
    """Svd(input; compute_uv, full_matrices) -> (s, u, v): singular values descending,
    input = u diag(s) v^T (v, not its transpose, as TF returns it)."""
    compute_uv = bool(node_attr(node, "compute_uv", True))
    s, u, v = eigen.svd(b, ins[0], dtype, compute_uv=compute_uv,
                        full_matrices=bool(node_attr(node, "full_matrices", False)))
    if not compute_uv:
        u = v = _unused(ctx, node, ins[0])
    return [s, u, v]


TABLE = {
    "Qr": _qr,
    "SelfAdjointEigV2": _self_adjoint_eig_v2,
    "Svd": _svd,
}
