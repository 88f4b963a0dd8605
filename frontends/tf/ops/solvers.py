"""Dense linear-algebra TF ops: Cholesky, MatrixTriangularSolve, MatrixInverse,
MatrixDeterminant, LogMatrixDeterminant, MatrixSolve, Lu and InvertPermutation (what keras.ops
cholesky, cholesky_inverse, det, slogdet, logdet, inv, solve, solve_triangular and lu_factor
build on the TensorFlow backend).

No target has them as ops: each is the shared unrolled decomposition of `frontends/linalg.py`
(the JAX primitives cholesky, lu, triangular_solve, ... lift to the same IR). Matrix dims must
be static and at most `linalg.MAX_N`; batch dims may be run-time sizes.
"""

from __future__ import annotations

from ....ir.types import DType
from ... import linalg
from ..context import Complex, LiftError, ir_dtype
from .common import node_attr
from .elementwise import builder


def _real_float(ctx, node, x, what: str):
    """LiftError unless x is a real float tensor (the complex variants of these ops are not
    lowered: the IR keeps complex values only around the FFTs)."""
    if isinstance(x, Complex):
        raise LiftError(f"{node.op} on complex {what} is not supported (real float only)")
    if not ctx.type(x).dtype.is_float:
        raise LiftError(f"{node.op} on {ctx.type(x).dtype} {what} is not supported "
                        f"(float only)")


def _lowering(fn):
    """`fn(ctx, node, ins, b)` as a table entry: the builder made, and the shared
    decomposition's LinalgError re-raised as this frontend's LiftError."""
    def lower(ctx, node, ins):
        try:
            return fn(ctx, node, ins, builder(ctx, node))
        except linalg.LinalgError as e:
            raise LiftError(str(e)) from None
    lower.__doc__ = fn.__doc__
    return lower


@_lowering
def _cholesky(ctx, node, ins, b):
    """Cholesky(input): the lower factor; only the lower triangle is read."""
    _real_float(ctx, node, ins[0], "matrices")
    return [linalg.cholesky(b, ins[0])]


@_lowering
def _matrix_triangular_solve(ctx, node, ins, b):
    """MatrixTriangularSolve(matrix, rhs; lower, adjoint): substitution with the triangle
    `lower` names, on the transposed matrix when `adjoint` (batch dims broadcast, as TF)."""
    matrix, rhs = ins
    _real_float(ctx, node, matrix, "matrices")
    return [linalg.triangular_solve(b, matrix, rhs, lower=bool(node_attr(node, "lower", True)),
                                    adjoint=bool(node_attr(node, "adjoint", False)))]


@_lowering
def _matrix_inverse(ctx, node, ins, b):
    """MatrixInverse(input; adjoint): inverse of the matrices (of their transposes when
    `adjoint`) via LU with partial pivoting."""
    _real_float(ctx, node, ins[0], "matrices")
    return [linalg.inverse(b, ins[0], adjoint=bool(node_attr(node, "adjoint", False)))]


@_lowering
def _matrix_solve(ctx, node, ins, b):
    """MatrixSolve(matrix, rhs; adjoint): matrix @ X = rhs (transposed matrix when
    `adjoint`) via LU with partial pivoting."""
    matrix, rhs = ins
    _real_float(ctx, node, matrix, "matrices")
    return [linalg.solve(b, matrix, rhs, adjoint=bool(node_attr(node, "adjoint", False)))]


@_lowering
def _matrix_determinant(ctx, node, ins, b):
    """MatrixDeterminant(input): the permutation's sign times the product of U's diagonal."""
    _real_float(ctx, node, ins[0], "matrices")
    return [linalg.det(b, ins[0])]


@_lowering
def _log_matrix_determinant(ctx, node, ins, b):
    """LogMatrixDeterminant(input) -> (sign, log_abs_determinant)."""
    _real_float(ctx, node, ins[0], "matrices")
    sign, logabs = linalg.slogdet(b, ins[0])
    return [sign, logabs]


@_lowering
def _lu(ctx, node, ins, b):
    """Lu(input; output_idx_type) -> (lu, p): the packed factors and the row order p with
    input[..., p, :] = L @ U, p in int32 or int64."""
    _real_float(ctx, node, ins[0], "matrices")
    linalg.square_dim(b, ins[0], "Lu")              # TF's Lu takes square matrices only
    lu, _, perm = linalg.lu(b, ins[0])
    idx_type = ir_dtype(node.attr["output_idx_type"].type, "Lu output_idx_type") \
        if "output_idx_type" in node.attr else None
    if idx_type is not None and idx_type != ctx.type(perm).dtype:
        perm = ctx.emit1("cast", [perm], {"to": idx_type})
    return [lu, perm]


@_lowering
def _invert_permutation(ctx, node, ins, b):
    """InvertPermutation(x): y[x[i]] = i, in x's int dtype."""
    (perm,) = ins
    dtype = ctx.type(perm).dtype
    if dtype not in (DType.i32, DType.i64):
        raise LiftError(f"InvertPermutation on {dtype} is not supported (int32 / int64)")
    return [linalg.invert_permutation(b, perm, dtype)]


TABLE = {
    "Cholesky": _cholesky,
    "MatrixTriangularSolve": _matrix_triangular_solve,
    "MatrixInverse": _matrix_inverse,
    "MatrixSolve": _matrix_solve,
    "MatrixDeterminant": _matrix_determinant,
    "LogMatrixDeterminant": _log_matrix_determinant,
    "Lu": _lu,
    "InvertPermutation": _invert_permutation,
}
