"""Dense linear-algebra solvers the frontends share: Cholesky, LU with partial pivoting,
triangular solves, and the determinant, log-determinant, inverse and linear solve built on
them, written once over a `decompose.Builder` so that a TF op (Cholesky, Lu, MatrixSolve, ...)
and the JAX primitive of the same function (cholesky, lu, triangular_solve, ...) lift to the
same IR.

No target has these as ops (TFLite builtins and TF.js have none), so each is unrolled into ops
every target runs: slice, concat, where, equal, argmax, reduce_sum / reduce_prod, matmul and
elementwise arithmetic. The algorithms are the textbook ones, vectorized over the whole
matrix and over the batch at every step and unrolled over the matrix size n:

* every step is a constant number of nodes over the full [..., n, n] (or [..., n, m]) tensor,
  so a factorization is O(n) nodes and a run-time batch size costs nothing extra;
* rows and columns are chosen with constant boolean masks (`where`) rather than scattered
  updates, so the entries a step does not touch keep their exact values;
* a row exchange picks the pivot row with `where` + `reduce_sum` over a one-hot mask (exact:
  one term is the row, the others are exact zeros) instead of a gather with batch dims.

Matrix dims must be known when the model is lifted (the unrolling depends on them) and at most
`MAX_N`; batch dims may be run-time sizes. Errors are `LinalgError`, which each frontend turns
into its own LiftError.
"""

from __future__ import annotations

import numpy as np

from ..ir.types import DType

MAX_N = 64
"""The largest matrix dim these decompositions unroll. A factorization is O(n) steps of
O(1) nodes each (about 20 for LU), so n = 64 is already a few thousand nodes; beyond that the
graph, its conversion time and the runtimes' per-node overhead grow out of proportion to what
a model embedding a solver needs."""


class LinalgError(ValueError):
    """A matrix these decompositions cannot lower (run-time or too large matrix dims, a
    combination of attributes they do not implement); the frontends re-raise it as their
    LiftError."""


# -- small helpers ----------------------------------------------------------------------------

def matrix_dims(b, x, what: str, max_n: int = MAX_N, unrolled_over: str = "max"
                ) -> tuple[int, int]:
    """The static (rows, cols) of the matrices in `x` ([..., rows, cols]); LinalgError when
    either is a run-time size, or when the dim the algorithm unrolls over (the larger one,
    `unrolled_over="max"`; the smaller, "min", for QR and the SVD) exceeds `max_n`."""
    shape = b.shape(x)
    if len(shape) < 2:
        raise LinalgError(f"{what}: needs a matrix (rank >= 2), got shape {_fmt(shape)}")
    rows, cols = shape[-2:]
    if not (isinstance(rows, (int, np.integer)) and isinstance(cols, (int, np.integer))):
        raise LinalgError(f"{what}: matrix dims {_fmt(shape[-2:])} must be known when the model "
                          f"is converted (the factorization is unrolled over them); only batch "
                          f"dims may be run-time sizes")
    rows, cols = int(rows), int(cols)
    size = max(rows, cols) if unrolled_over == "max" else min(rows, cols)
    if size > max_n:
        raise LinalgError(f"{what}: {rows} x {cols} matrices are larger than this "
                          f"decomposition unrolls ({unrolled_over}(rows, cols) <= {max_n}): it "
                          f"emits O(n) steps of whole-matrix ops, and the graph would grow "
                          f"too large")
    if min(rows, cols) == 0:
        raise LinalgError(f"{what}: empty matrices ({rows} x {cols}) are not supported")
    return rows, cols


def square_dim(b, x, what: str) -> int:
    """The static size n of the square matrices in `x` ([..., n, n])."""
    rows, cols = matrix_dims(b, x, what)
    if rows != cols:
        raise LinalgError(f"{what}: needs square matrices, got {rows} x {cols}")
    return rows


def _fmt(dims) -> str:
    return "[" + ", ".join(str(d) for d in dims) + "]"


def _rank(b, x) -> int:
    return len(b.shape(x))


def _block(b, x, row: int, col: int, rows: int, cols: int):
    """x[..., row:row+rows, col:col+cols]; -1 takes the rest of that dim (so a run-time
    trailing size, such as a right-hand side's column count, is allowed)."""
    r = _rank(b, x)
    return b.op("slice", [x], {"begin": [0] * (r - 2) + [row, col],
                               "size": [-1] * (r - 2) + [rows, cols]})


def _like(b, array, x):
    """An array constant in x's dtype (`scalar` converts whole arrays as well)."""
    return b.scalar(np.asarray(array), x)


def _mask(b, array):
    """A constant bool mask (which rows / columns a step touches)."""
    return b.const(np.asarray(array, dtype=bool))


def _transpose(b, x):
    """x with its last two dims swapped (the real adjoint)."""
    r = _rank(b, x)
    return b.op("transpose", [x], {"perm": list(range(r - 2)) + [r - 1, r - 2]})


def _diagonal(b, x, n: int):
    """The diagonal [..., n] of square matrices [..., n, n]: a where with the constant identity
    mask, then a sum over each row (one nonzero term, so exact)."""
    eye = _mask(b, np.eye(n, dtype=bool))
    return b.op("reduce_sum", [b.op("where", [eye, x, b.scalar(0, x)])], {"axes": [-1]})


def _swap_rows(b, x, k: int, is_p, rows: int):
    """x ([..., rows, w]) with row k and the row flagged by `is_p` ([..., rows, 1], one true
    entry per matrix) exchanged. The flagged row is read with where + reduce_sum (exact: the
    other terms are zeros), so it works with a run-time batch and any pivot per matrix."""
    row_k = _block(b, x, k, 0, 1, -1)
    row_p = b.op("reduce_sum", [b.op("where", [is_p, x, b.scalar(0, x)])],
                 {"axes": [-2], "keepdims": True})
    is_k = _mask(b, (np.arange(rows) == k).reshape(rows, 1))
    return b.op("where", [is_k, row_p, b.op("where", [is_p, row_k, x])])


def _one_hot_rows(b, index, rows: int):
    """[..., rows, 1] bool: row == index, for an i32 index of shape [..., 1]."""
    at = b.op("expand_dims", [index], {"axis": -1})
    return b.op("equal", [at, b.const(np.arange(rows, dtype=np.int32).reshape(rows, 1))])


def _permutation_matrix(b, perm, n: int, like):
    """P ([..., n, n], like's dtype) with P[i, j] = (perm[i] == j), so P @ A = A[perm]."""
    at = b.op("expand_dims", [perm], {"axis": -1})
    hit = b.op("equal", [at, b.const(np.arange(n, dtype=np.int32).reshape(1, n))])
    return b.op("where", [hit, b.scalar(1, like), b.scalar(0, like)])


# -- factorizations ---------------------------------------------------------------------------

def cholesky(b, a):
    """The lower Cholesky factor L of symmetric positive definite matrices a ([..., n, n]),
    a = L @ L^T, with zeros above the diagonal; only a's lower triangle is read (as TF's
    Cholesky and LAPACK potrf). Column algorithm: column j is
    (a[:, j] - L[:, :j] @ L[j, :j]^T) / L[j, j] below the diagonal and its square root on it.
    A matrix that is not positive definite gives NaN (sqrt of a negative pivot) where TF
    would raise at run time; JAX gives NaN as well."""
    n = square_dim(b, a, "cholesky")
    rows = np.arange(n).reshape(n, 1)
    factor = None                                      # L[..., :, :j], built column by column
    for j in range(n):
        c = _block(b, a, 0, j, n, 1)                   # [..., n, 1]
        if factor is not None:
            l_j = _block(b, factor, j, 0, 1, j)        # L[j, :j] as [..., 1, j]
            c = b.op("sub", [c, b.op("matmul", [factor, l_j], {"transpose_b": True})])
        d = b.op("sqrt", [_block(b, c, j, 0, 1, 1)])    # [..., 1, 1]
        below = b.op("where", [_mask(b, rows > j), b.op("div", [c, d]), b.scalar(0, a)])
        # The diagonal entry is the square root itself (c_j / sqrt(c_j) would round).
        col = b.op("where", [_mask(b, rows == j), d, below])
        factor = col if factor is None else b.op("concat", [factor, col], {"axis": -1})
    return factor


def lu(b, a):
    """LU factorization with partial pivoting of a ([..., m, n]), as LAPACK getrf, TF's Lu and
    JAX's lu: returns (lu, pivots, permutation) where lu packs the unit lower L (below the
    diagonal) and U (on and above it), pivots ([..., min(m, n)], i32) says row k was exchanged
    with row pivots[k] at step k, and permutation ([..., m], i32) is the resulting row order:
    a[..., permutation, :] = L @ U.

    The pivot at step k is the first row at or below k with the largest |a[:, k]| (argmax
    returns the first maximum, as LAPACK's i*amax). A column that is zero from row k down is
    left unscaled (its multipliers stay 0), so singular matrices factor without NaNs and their
    U has an exact zero on the diagonal."""
    m, n = matrix_dims(b, a, "lu")
    rows = np.arange(m).reshape(m, 1)
    cols = np.arange(n).reshape(1, n)
    # The row order, carried as a column of a's dtype (exact: m <= MAX_N) and exchanged
    # along with a's rows.
    order = _like(b, rows, a)
    pivots = []
    for k in range(min(m, n)):
        col = _block(b, a, 0, k, m, 1)                                  # [..., m, 1]
        # Rows above k are out of the running: -1 is below every |x|.
        cand = b.op("where", [_mask(b, rows >= k), b.op("abs", [col]), b.scalar(-1, a)])
        piv = b.op("argmax", [cand], {"axis": -2, "output_type": DType.i32})     # [..., 1]
        pivots.append(piv)
        if k == m - 1:
            break                                      # the last row: nothing to exchange
        is_p = _one_hot_rows(b, piv, m)
        a = _swap_rows(b, a, k, is_p, m)
        order = _swap_rows(b, order, k, is_p, m)
        pivot = _block(b, a, k, k, 1, 1)                                # [..., 1, 1]
        col = _block(b, a, 0, k, m, 1)
        # A zero pivot means the column is zero from k down: divide by 1 instead (LAPACK
        # skips the scaling), which keeps the multipliers 0 rather than NaN.
        zero = b.op("equal", [pivot, b.scalar(0, a)])
        mult = b.op("div", [col, b.op("where", [zero, b.scalar(1, a), pivot])])
        if k < n - 1:
            # Schur complement on the trailing block only; everything else keeps its bits.
            update = b.op("sub", [a, b.op("mul", [mult, _block(b, a, k, 0, 1, n)])])
            a = b.op("where", [_mask(b, (rows > k) & (cols > k)), update, a])
        a = b.op("where", [_mask(b, (rows > k) & (cols == k)), mult, a])
    pivots = pivots[0] if len(pivots) == 1 else b.op("concat", pivots, {"axis": -1})
    if m == 1:
        permutation = pivots                           # one row: [0] with the batch's shape
    else:
        permutation = b.op("cast", [b.op("squeeze", [order], {"axes": [-1]})],
                           {"to": DType.i32})
    return a, pivots, permutation


def pivots_to_permutation(b, pivots, size: int):
    """The row order ([..., size], i32) that the row exchanges `pivots` ([..., k], i32: row i
    exchanged with row pivots[i], in order) make of 0..size-1 (JAX's
    lu_pivots_to_permutation)."""
    shape = b.shape(pivots)
    k = shape[-1] if shape else None
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise LinalgError(f"lu_pivots_to_permutation: the pivot count {k} must be a static "
                          f"size of at least 1")
    if size > MAX_N or k > size:
        raise LinalgError(f"lu_pivots_to_permutation: {k} pivots over {size} rows (at most "
                          f"{MAX_N} rows, and no more pivots than rows)")
    r = len(shape)
    # Float32 rows so the exchange can sum the picked row (exact for indices <= MAX_N).
    order = b.const(np.arange(size, dtype=np.float32).reshape(size, 1))
    for i in range(int(k)):
        piv = b.op("slice", [pivots], {"begin": [0] * (r - 1) + [i], "size": [-1] * (r - 1) + [1]})
        order = _swap_rows(b, order, i, _one_hot_rows(b, piv, size), size)
    return b.op("cast", [b.op("squeeze", [order], {"axes": [-1]})], {"to": DType.i32})


def invert_permutation(b, perm, out_type: DType):
    """The inverse of permutations perm ([..., n], int): out[..., perm[i]] = i (TF's
    InvertPermutation), in `out_type` (i32 or i64). out[j] is the i whose perm[i] == j: the
    argmax over i of the one-hot table perm[i] == j."""
    shape = b.shape(perm)
    n = shape[-1] if shape else None
    if not isinstance(n, (int, np.integer)):
        raise LinalgError(f"invert_permutation: the permutation length {n} must be known when "
                          f"the model is converted")
    at = b.op("expand_dims", [perm], {"axis": -1})                       # [..., n(i), 1]
    hit = b.op("equal", [at, _like(b, np.arange(n).reshape(1, n), perm)])  # [..., n(i), n(j)]
    table = b.op("where", [hit, b.const(np.float32(1)), b.const(np.float32(0))])
    return b.op("argmax", [table], {"axis": -2, "output_type": out_type})


# -- solves -----------------------------------------------------------------------------------

def triangular_solve(b, a, rhs, *, lower: bool, adjoint: bool = False,
                     unit_diagonal: bool = False):
    """X with op(a) @ X = rhs, a ([..., n, n]) triangular, rhs ([..., n, k]); op(a) is a, or
    its transpose when `adjoint` (real matrices). Only the triangle named by `lower` is read
    (as TF's MatrixTriangularSolve and LAPACK trsm); with `unit_diagonal` the diagonal is
    taken as ones. Batch dims broadcast.

    Substitution row by row (forward for a lower op(a), backward for an upper one): row i is
    (rhs[i] - a[i, solved] @ X[solved]) / a[i, i], one small matmul per row over the rows
    already solved, so the rows are never multiplied by the unused triangle's entries."""
    n = square_dim(b, a, "triangular_solve")
    rhs_shape = b.shape(rhs)
    if len(rhs_shape) < 2 or (isinstance(rhs_shape[-2], (int, np.integer))
                              and rhs_shape[-2] != n):
        raise LinalgError(f"triangular_solve: the right-hand side {_fmt(rhs_shape)} does not "
                          f"have the matrix's {n} rows")
    a_batch, rhs_batch = b.shape(a)[:-2], rhs_shape[:-2]
    if unit_diagonal and (len(a_batch) > len(rhs_batch) or any(
            isinstance(p, (int, np.integer)) and isinstance(q, (int, np.integer)) and p != q
            for p, q in zip(a_batch[::-1], rhs_batch[::-1]))):
        # Without a division by a's diagonal the first row keeps rhs's batch shape while the
        # later rows take the broadcast one, and they could not be concatenated.
        raise LinalgError("triangular_solve: with a unit diagonal the matrix and the "
                          "right-hand side need the same batch dims")
    if adjoint:
        a, lower = _transpose(b, a), not lower
    solved = None                       # the rows solved so far, in row order
    for i in (range(n) if lower else range(n - 1, -1, -1)):
        x = _block(b, rhs, i, 0, 1, -1)                                 # [..., 1, k]
        if solved is not None:
            count = i if lower else n - 1 - i
            coeffs = _block(b, a, i, 0 if lower else i + 1, 1, count)  # [..., 1, count]
            x = b.op("sub", [x, b.op("matmul", [coeffs, solved])])
        if not unit_diagonal:
            x = b.op("div", [x, _block(b, a, i, i, 1, 1)])
        if solved is None:
            solved = x
        else:
            solved = b.op("concat", [solved, x] if lower else [x, solved], {"axis": -2})
    return solved


def _lu_solve(b, lu_, rhs):
    """X with L @ U @ X = rhs for a packed LU (L unit lower, U upper)."""
    y = triangular_solve(b, lu_, rhs, lower=True, unit_diagonal=True)
    return triangular_solve(b, lu_, y, lower=False)


def solve(b, a, rhs, *, adjoint: bool = False):
    """X with op(a) @ X = rhs (TF's MatrixSolve; op is the transpose when `adjoint`): LU with
    partial pivoting, the rows of rhs put in pivot order (a permutation-matrix matmul, exact),
    then the unit-lower and the upper triangular solves."""
    n = square_dim(b, a, "solve")
    if adjoint:
        a = _transpose(b, a)
    lu_, _, perm = lu(b, a)
    permuted = b.op("matmul", [_permutation_matrix(b, perm, n, a), rhs])
    return _lu_solve(b, lu_, permuted)


def inverse(b, a, *, adjoint: bool = False):
    """The inverse of square matrices a ([..., n, n]), or of their transposes when `adjoint`
    (TF's MatrixInverse): LU with partial pivoting, then L U X = P solved for X. A singular
    matrix gives inf / NaN entries where TF raises."""
    n = square_dim(b, a, "inverse")
    if adjoint:
        a = _transpose(b, a)
    lu_, _, perm = lu(b, a)
    return _lu_solve(b, lu_, _permutation_matrix(b, perm, n, a))


def _pivot_sign(b, pivots, like):
    """(-1) ** (the number of steps k whose pivot row is not k): the permutation's parity."""
    k = b.shape(pivots)[-1]
    moved = b.op("not_equal", [pivots, b.const(np.arange(k, dtype=np.int32))])
    flips = b.op("where", [moved, b.scalar(-1, like), b.scalar(1, like)])
    return b.op("reduce_prod", [flips], {"axes": [-1]})


def det(b, a):
    """The determinants ([...]) of square matrices a ([..., n, n]): the permutation's sign
    times the product of U's diagonal, from LU with partial pivoting (as TF and LAPACK)."""
    n = square_dim(b, a, "det")
    lu_, pivots, _ = lu(b, a)
    prod = b.op("reduce_prod", [_diagonal(b, lu_, n)], {"axes": [-1]})
    return b.op("mul", [_pivot_sign(b, pivots, a), prod])


def slogdet(b, a):
    """(sign, log|det|) of square matrices a ([..., n, n]) (TF's LogMatrixDeterminant, JAX's
    slogdet): from LU, the sign is the permutation's times those of U's diagonal and log|det|
    the sum of log|u_ii| (no overflow where the determinant itself would). A singular matrix
    gives sign 0 and -inf, as TF."""
    n = square_dim(b, a, "slogdet")
    lu_, pivots, _ = lu(b, a)
    diag = _diagonal(b, lu_, n)
    sign = b.op("mul", [_pivot_sign(b, pivots, a),
                        b.op("reduce_prod", [b.op("sign", [diag])], {"axes": [-1]})])
    logabs = b.op("reduce_sum", [b.op("log", [b.op("abs", [diag])])], {"axes": [-1]})
    return sign, logabs
