"""QR, the symmetric eigendecomposition and the SVD, written once over a `decompose.Builder` so
that a TF op (Qr, SelfAdjointEigV2, Svd) and the JAX primitive of the same function (qr,
geqrf, householder_product, eigh, svd) lift to the same IR.

No target has these as ops (TFLite builtins and TF.js have none), so each is unrolled into ops
every target runs: slice, concat, pad, where, comparisons, reduce_sum, matmul and elementwise
arithmetic. Every step works on the whole [..., m, n] tensor with constant masks and constant
selection matrices, so the batch dims may be run-time sizes and cost nothing extra; the
unrolling is over the matrix size, which must therefore be static:

* QR: Householder reflections, one per column (O(min(m, n)) steps of ~15 nodes), with
  LAPACK's and Eigen's conventions, so Q and R are TF's and JAX's, signs included.
* eigh: cyclic Jacobi in the parallel (round-robin) ordering: a round rotates n/2 disjoint
  pairs at once as one orthogonal matrix J (A <- J^T A J), n - 1 rounds make a sweep in which
  every pair is rotated once, and a fixed number of sweeps (`jacobi_sweeps`) converges to
  float32 accuracy. About 40 nodes a round.
* SVD: one-sided (Hestenes) Jacobi on the columns, the same rounds, then the left singular
  vectors from a Householder QR of the orthogonalized columns (which also completes them to an
  orthonormal basis for full_matrices and rank-deficient inputs).

Matrix dims must be known when the model is lifted and at most `MAX_N`. Errors are
`EigenError`, which each frontend re-raises as its own LiftError.
"""

from __future__ import annotations

import math

import numpy as np

from ..ir.types import DType
from . import linalg

MAX_N = 32
"""The largest matrix dim (the smaller of the two, for QR and the SVD) these decompositions
unroll. A Jacobi eigen- or singular value decomposition is `jacobi_sweeps(n)` * (n - 1) rounds
of ~40 nodes: an eigh is about 800 nodes at n = 3, 13,000 at n = 32. Beyond that the graph,
its conversion time and the runtimes' per-node overhead grow out of proportion to what a model
embedding a small decomposition needs."""


# The shared solvers' error: the frontends re-raise either module's as their LiftError.
EigenError = linalg.LinalgError


# -- plumbing ---------------------------------------------------------------------------------

class _Ops:
    """The builder plus the working dtype, with the few shapes of node every algorithm here
    uses. Matrices are [..., rows, cols] with `rank` dims in all; row vectors [..., 1, k] and
    column vectors [..., k, 1] keep the matrix rank so they broadcast against matrices."""

    def __init__(self, b, dtype: DType, rank: int):
        self.b, self.dtype, self.rank = b, dtype, rank

    def op(self, name, inputs, attrs=None):
        return self.b.op(name, inputs, attrs)

    def const(self, array):
        """A constant in the working dtype (bool arrays stay bool)."""
        array = np.asarray(array)
        if array.dtype != np.bool_:
            array = array.astype(self.dtype.np)
        return self.b.const(array)

    def mask(self, array):
        """A bool array as a 0 / 1 constant in the working dtype (for products)."""
        return self.const(np.asarray(array, dtype=np.float64))

    def scalar(self, v, like):
        return self.b.scalar(v, like)

    def add(self, x, y):
        return self.op("add", [x, y])

    def sub(self, x, y):
        return self.op("sub", [x, y])

    def mul(self, x, y):
        return self.op("mul", [x, y])

    def div(self, x, y):
        return self.op("div", [x, y])

    def where(self, c, x, y):
        return self.op("where", [c, x, y])

    def matmul(self, x, y, ta=False, tb=False):
        return self.op("matmul", [x, y], {"transpose_a": ta, "transpose_b": tb})

    def sum(self, x, axis):
        """Sum over one axis, kept as a size-1 dim."""
        return self.op("reduce_sum", [x], {"axes": [axis], "keepdims": True})

    def block(self, x, r0, nr, c0, nc):
        """x[..., r0:r0+nr, c0:c0+nc] (every batch element)."""
        lead = self.rank - 2
        return self.op("slice", [x], {"begin": [0] * lead + [r0, c0],
                                      "size": [-1] * lead + [nr, nc]})

    def swap(self, x):
        """The matrix transpose of x (the last two dims)."""
        perm = list(range(self.rank - 2)) + [self.rank - 1, self.rank - 2]
        return self.op("transpose", [x], {"perm": perm})

    def squeeze_row(self, x):
        """[..., 1, k] -> [..., k]."""
        return self.op("squeeze", [x], {"axes": [self.rank - 2]})

    def indicator(self, cond):
        """A bool tensor as 0 / 1 in the working dtype."""
        return self.op("cast", [cond], {"to": self.dtype})

    def sign_plus(self, x):
        """+1 where x >= 0, -1 elsewhere (sign() would give 0 at 0)."""
        return self.where(self.op("greater_equal", [x, self.scalar(0, x)]),
                          self.scalar(1, x), self.scalar(-1, x))


def _fmt(dims) -> str:
    return "[" + ", ".join(str(d) for d in dims) + "]"


def matrix_dims(b, x, what: str) -> tuple[int, int, int]:
    """(rank, rows, cols) of `x` ([..., rows, cols]); EigenError unless rows and cols are
    static and the smaller one (the one the factorizations unroll over) is at most MAX_N."""
    rows, cols = linalg.matrix_dims(b, x, what, MAX_N, unrolled_over="min")
    return len(b.shape(x)), rows, cols


def _working(b, x, dtype: DType, what: str):
    """(x in the dtype the algorithm runs in, that dtype). float32 and float64 run as they
    are; float16 and bfloat16 run in float32 (Jacobi and Householder need more than their 8
    to 11 bits to converge) and the results are cast back by `_back`."""
    if not dtype.is_float:
        raise EigenError(f"{what} of {dtype} matrices is not supported (float only)")
    if dtype in (DType.f32, DType.f64):
        return x, dtype
    return b.op("cast", [x], {"to": DType.f32}), DType.f32


def _back(b, outs, dtype: DType, work: DType):
    """The outputs cast back to the input dtype when the algorithm ran wider."""
    if dtype == work:
        return outs
    return [None if o is None else b.op("cast", [o], {"to": dtype}) for o in outs]


# -- Householder QR ---------------------------------------------------------------------------

def _householder(o: _Ops, a, m: int, n: int):
    """Householder triangularization of a [..., m, n]: returns (the reflected matrix, whose
    upper triangle is R; the reflectors [(k, v, tau)]; their diagonals) where
    H_k = I - tau v v^T, v [..., m, 1] zero above row k and 1 at row k.

    As Eigen's makeHouseholder and LAPACK's dlarfg: for x = a[k:, k] with head c0, beta =
    -sign(c0) |x| (sign(0) = +), tau = (beta - c0) / beta, v = x / (c0 - beta); when the tail
    below c0 is zero (|tail|^2 <= the smallest normal float), H = I (tau = 0) and R's diagonal
    is c0 itself. These are the conventions TF's (Eigen) and JAX's (LAPACK) Qr use, so Q and R
    come out with their signs. The last row of a wide or square matrix has no tail: no step.
    """
    rows = np.arange(m)[:, None]
    tiny = np.finfo(o.dtype.np).tiny
    reflectors, diagonals = [], []
    for k in range(min(m, n)):
        c0 = o.block(a, k, 1, k, 1)                                   # [..., 1, 1]
        if k == m - 1:
            diagonals.append(c0)
            break
        col = o.block(a, 0, m, k, 1)                                  # [..., m, 1]
        tail = o.mul(col, o.mask(rows > k))                          # rows below k
        tail_sq = o.sum(o.mul(tail, tail), -2)                        # [..., 1, 1]
        norm = o.op("sqrt", [o.add(o.mul(c0, c0), tail_sq)])
        beta = o.where(o.op("greater_equal", [c0, o.scalar(0, c0)]), o.op("neg", [norm]), norm)
        degenerate = o.op("less_equal", [tail_sq, o.scalar(tiny, tail_sq)])
        one = o.scalar(1, c0)
        # Safe denominators: off the degenerate case |c0 - beta| = |c0| + |x| > 0, beta != 0.
        denom = o.where(degenerate, one, o.sub(c0, beta))
        essential = o.where(degenerate, o.scalar(0, tail), o.div(tail, denom))
        v = o.add(essential, o.mask(rows == k))
        tau = o.where(degenerate, o.scalar(0, c0),
                      o.div(o.sub(beta, c0), o.where(degenerate, one, beta)))
        # a <- H a = a - tau v (v^T a), over every column: those left of k hold only rounding
        # noise below the diagonal, which the final upper-triangle mask drops.
        w = o.matmul(v, a, ta=True)                                   # [..., 1, n]
        a = o.sub(a, o.mul(o.mul(v, tau), w))
        reflectors.append((k, v, tau))
        diagonals.append(o.where(degenerate, c0, beta))
    return a, reflectors, diagonals


def _filled(o: _Ops, like, value):
    """`value` in the shape of `like` (its batch dims included, run-time ones too): a `where`
    on a condition computed from `like`, so no arithmetic on its values (NaN stays out)."""
    cond = o.op("equal", [like, like])
    return o.where(cond, o.scalar(value, like), o.scalar(value, like))


def _apply_reflectors(o: _Ops, reflectors, like, m: int, cols: int):
    """H_0 H_1 ... H_{p-1} I[:, :cols] ([..., m, cols]): the first `cols` columns of Q,
    accumulated backwards as LAPACK's orgqr does (each step one rank-1 update, on `cols`
    columns only). `like` ([..., 1, 1]) gives the batch dims when there is no reflector."""
    q = o.const(np.eye(m, cols))
    for _, v, tau in reversed(reflectors):
        q = o.sub(q, o.mul(o.mul(v, tau), o.matmul(v, q, ta=True)))
    if not reflectors:
        # A single row (no reflection): Q = [[1]] for every matrix of the batch.
        q = o.mul(_filled(o, like, 1), q)
    return q


def _upper(o: _Ops, a, rows: int, cols: int):
    """The upper triangle (trapezoid) of a [..., rows, cols], zeros below."""
    i, j = np.arange(rows)[:, None], np.arange(cols)[None, :]
    return o.where(o.const(i <= j), a, o.scalar(0, a))


def _concat_last(o: _Ops, parts):
    return parts[0] if len(parts) == 1 else o.op("concat", parts, {"axis": -1})


def qr(b, x, dtype: DType, full_matrices: bool):
    """(Q, R) of the matrices x [..., m, n] by Householder reflections, as tf.linalg.qr and
    jnp.linalg.qr return them (LAPACK's and Eigen's sign conventions: R's diagonal is
    -sign(x_kk) |x_k| per step, so Q and R equal TF's, not just up to sign).

    full_matrices: Q [..., m, m] and R [..., m, n]; else Q [..., m, p] and R [..., p, n] with
    p = min(m, n). EigenError for run-time matrix dims or min(m, n) > MAX_N."""
    rank, m, n = matrix_dims(b, x, "QR")
    x, work = _working(b, x, dtype, "QR")
    o = _Ops(b, work, rank)
    p = min(m, n)
    a, reflectors, _ = _householder(o, x, m, n)
    q_cols, r_rows = (m, m) if full_matrices else (p, p)
    q = _apply_reflectors(o, reflectors, o.block(x, 0, 1, 0, 1), m, q_cols)
    r = _upper(o, a, m, n)
    if r_rows < m:
        r = o.block(r, 0, r_rows, 0, n)
    return tuple(_back(b, [q, r], dtype, work))


def geqrf(b, x, dtype: DType):
    """LAPACK's geqrf (jax.lax.linalg.geqrf) of x [..., m, n]: (the packed factor
    [..., m, n]: R on and above the diagonal, the Householder vectors' essential parts below
    it; tau [..., min(m, n)]), the reflectors `qr` computes."""
    rank, m, n = matrix_dims(b, x, "geqrf")
    x, work = _working(b, x, dtype, "geqrf")
    o = _Ops(b, work, rank)
    a, reflectors, _ = _householder(o, x, m, n)
    by_k = {k: (v, tau) for k, v, tau in reflectors}
    zero = _filled(o, o.block(x, 0, 1, 0, 1), 0)                      # [..., 1, 1]
    vs, taus = [], []
    for k in range(min(m, n)):
        # The step of the last row (no tail) reflects nothing: tau 0, nothing below it.
        v, tau = by_k.get(k, (o.mul(zero, o.const(np.zeros((m, 1)))), zero))
        vs.append(v)
        taus.append(tau)
    vmat = _concat_last(o, vs)                                         # [..., m, p]
    if len(vs) < n:
        vmat = o.op("pad", [vmat], {"pads": [(0, 0)] * (rank - 1) + [(0, n - len(vs))]})
    below = np.arange(m)[:, None] > np.arange(n)[None, :]
    packed = o.where(o.const(below), vmat, a)
    return tuple(_back(b, [packed, o.squeeze_row(_concat_last(o, taus))], dtype, work))


def householder_product(b, a, taus, dtype: DType):
    """LAPACK's orgqr (jax.lax.linalg.householder_product): Q [..., m, n] = H_0 ... H_{k-1}
    I[:, :n] from the reflectors packed below the diagonal of a [..., m, n] (unit diagonal
    implied) and tau [..., k], k <= n <= m."""
    rank, m, n = matrix_dims(b, a, "householder_product")
    tshape = b.shape(taus)
    k = tshape[-1] if tshape else None
    if not isinstance(k, (int, np.integer)) or not k <= n <= m:
        raise EigenError(f"householder_product: needs k <= n <= m for a [..., {m}, {n}] and "
                         f"taus {_fmt(tshape)} (k static)")
    a, work = _working(b, a, dtype, "householder_product")
    if work != dtype:
        taus = b.op("cast", [taus], {"to": work})
    o = _Ops(b, work, rank)
    rows = np.arange(m)[:, None]
    taus = o.op("expand_dims", [taus], {"axis": rank - 2})            # [..., 1, k]
    reflectors = []
    for i in range(int(k)):
        v = o.add(o.mul(o.block(a, 0, m, i, 1), o.mask(rows > i)), o.mask(rows == i))
        reflectors.append((i, v, o.block(taus, 0, 1, i, 1)))
    q = _apply_reflectors(o, reflectors, o.block(a, 0, 1, 0, 1), m, n)
    return _back(b, [q], dtype, work)[0]


# -- Jacobi rotations -------------------------------------------------------------------------

def jacobi_sweeps(n: int) -> int:
    """The number of Jacobi sweeps run for n x n matrices: max(ceil(log2 n) + 4,
    2 ceil(log2 n)), so 5 for n = 2, 6 for n = 3..4, 7 for n = 5..8, 8 for n = 9..16 and 10
    for n = 17..32.

    Cyclic Jacobi (the parallel orderings too) converges quadratically once the off-diagonal
    mass is below the gaps between eigenvalues; the sweeps before that shrink it by a roughly
    constant factor each, and their number grows like log n. Measured in float32 (this
    module's algorithm in NumPy) on random, graded (6 decades), clustered and exactly repeated
    spectra, the worst of 30 to 200 matrices each, the residual |A v - w v| / |A| reaches its
    rounding floor after 3 to 4 sweeps for n <= 4, 5 for n = 6, 6 for n = 8, 8 for n = 16 and
    9 to 10 for n = 32 (clustered spectra are the slowest): the count above is that plus a
    sweep of margin for small n. At the floor a rotation is the identity to rounding, so extra
    sweeps cost nodes, not accuracy. The one-sided (SVD) sweeps are Jacobi on A^T A and
    converge no slower (at most 7 sweeps at n = 32, same measurement); they use the same
    count."""
    if n < 2:
        return 0
    log = math.ceil(math.log2(n))
    return max(log + 4, 2 * log)


def _rounds(n: int, dtype) -> list:
    """The rounds of one sweep of the parallel (round-robin tournament) ordering of n indices:
    every pair meets once in n - 1 rounds (n rounds, one index idle each, for odd n), a round's
    pairs being disjoint. Each round is (P, Q, L, R): P, Q [n, h] select the pairs' first and
    second indices (a zero column for the idle index's missing partner), and
    J = (L * [c, c, s, -s]) @ R, L = [P | Q | P | Q] [n, 4h], R = [P^T; Q^T; Q^T; P^T], is the
    round's rotation: J[p, p] = J[q, q] = c, J[p, q] = s, J[q, p] = -s; the idle index gets
    c = 1 (its pair's a_pq is 0) and so J[k, k] = 1."""
    size = n + n % 2                       # a dummy player for odd n: its partner sits out
    h = size // 2
    players = list(range(size))
    out = []
    for _ in range(size - 1):
        p_sel, q_sel = np.zeros((n, h)), np.zeros((n, h))
        for i in range(h):
            p, q = players[i], players[size - 1 - i]
            if p >= n:                      # the idle index goes first (P), the dummy in Q
                p, q = q, p
            p_sel[p, i] = 1
            if q < n:
                q_sel[q, i] = 1
        left = np.concatenate([p_sel, q_sel, p_sel, q_sel], axis=1)
        right = np.concatenate([p_sel.T, q_sel.T, q_sel.T, p_sel.T], axis=0)
        out.append(tuple(a.astype(dtype) for a in (p_sel, q_sel, left, right)))
        players = [players[0], players[-1]] + players[1:-1]     # the circle method
    return out


def _round_consts(o: _Ops, n: int) -> list:
    """`_rounds(n)` as constant entries, made once and shared by every sweep (the frontends
    then hold each matrix once, not once per sweep)."""
    return [tuple(o.const(a) for a in r) for r in _rounds(n, o.dtype.np)]


def _rotation(o: _Ops, app, aqq, apq):
    """(c, s) of the Jacobi rotations that zero a_pq of the symmetric 2 x 2 blocks
    [[a_pp, a_pq], [a_pq, a_qq]] (Golub & Van Loan's sym.schur2, the smaller angle):
    theta = (a_qq - a_pp) / (2 a_pq), t = sign(theta) / (|theta| + sqrt(theta^2 + 1)),
    c = 1 / sqrt(1 + t^2), s = t c. Written on the ratio theta it is scale-free: a_pq tiny
    against the diagonal makes t tiny, the rotation to rounding. a_pq == 0 (already diagonal,
    or the idle index) is t = 0 exactly."""
    zero = o.op("equal", [apq, o.scalar(0, apq)])
    safe = o.where(zero, o.scalar(1, apq), apq)
    theta = o.div(o.sub(aqq, app), o.mul(safe, o.scalar(2, apq)))
    # |theta| > 1e18 makes t < 5e-19, the identity to rounding: the clip keeps theta^2 finite
    # (no inf arithmetic on any target) without changing the result.
    theta = o.op("clip", [theta], {"min": -1e18, "max": 1e18})
    root = o.op("sqrt", [o.add(o.mul(theta, theta), o.scalar(1, theta))])
    t = o.div(o.sign_plus(theta), o.add(o.op("abs", [theta]), root))
    t = o.where(zero, o.scalar(0, t), t)
    c = o.op("rsqrt", [o.add(o.mul(t, t), o.scalar(1, t))])
    return c, o.mul(t, c)


def _rotation_matrix(o: _Ops, c, s, left, right):
    """The round's orthogonal J [..., n, n] from its rotations' c, s [..., 1, h] and its
    constant selection matrices (see `_rounds`). Every entry is one product with 1, so J holds
    c and s exactly."""
    coef = o.op("concat", [c, c, s, o.op("neg", [s])], {"axis": -1})
    return o.matmul(o.mul(left, coef), right)


def _sort_permutation(o: _Ops, row, n: int, descending: bool):
    """The permutation matrix M [..., n, n] that sorts the row vectors `row` [..., 1, n]
    (row @ M is sorted; V @ M sorts V's columns alike). Stable: the rank of entry i is the
    number of entries that go before it (smaller, or larger when descending) plus the equal
    ones at lower indices, and M[i, r] = (rank_i == r). Only comparisons and a sum, so no
    sort op (and no gather with batch dims) is needed on any target."""
    col = o.swap(row)                                                 # [..., n, 1]
    before = o.op("greater" if descending else "less", [row, col])    # [i, j]: j before i
    i, j = np.arange(n)[:, None], np.arange(n)[None, :]
    tie = o.op("logical_and", [o.op("equal", [row, col]), o.const(j < i)])
    rank = o.sum(o.indicator(o.op("logical_or", [before, tie])), -1)  # [..., n, 1]
    return o.indicator(o.op("equal", [rank, o.const(np.arange(n)[None, :])]))


def eigh(b, x, dtype: DType, lower: bool = True, compute_v: bool = True):
    """(eigenvalues [..., n], eigenvectors [..., n, n] or None) of the symmetric matrices
    x [..., n, n], read from their lower (or upper) triangle as tf.linalg.eigh and LAPACK's
    syevd do, by cyclic Jacobi rotations (`jacobi_sweeps`, `_rounds`).

    The eigenvalues are ascending, as TF and LAPACK return them. Column k of the eigenvectors
    is a unit vector with A v = w_k v and the columns are orthonormal, but a vector's sign (and
    the basis of a repeated eigenvalue's space) may differ from LAPACK's: eigenvectors are
    only defined up to those. EigenError for run-time or non-square matrix dims, n > MAX_N."""
    rank, m, n = matrix_dims(b, x, "eigh")
    if m != n:
        raise EigenError(f"eigh needs square matrices, got {m} x {n}")
    x, work = _working(b, x, dtype, "eigh")
    o = _Ops(b, work, rank)
    i, j = np.arange(n)[:, None], np.arange(n)[None, :]
    # The symmetric matrix of the triangle read; the other one is ignored, as in LAPACK.
    a = o.where(o.const(i >= j if lower else i <= j), x, o.swap(x))
    eye = o.const(np.eye(n))
    rounds = _round_consts(o, n)
    v = None
    for _ in range(jacobi_sweeps(n)):
        for p_sel, q_sel, left, right in rounds:
            d = o.sum(o.mul(a, eye), -2)                              # diag, [..., 1, n]
            app, aqq = o.matmul(d, p_sel), o.matmul(d, q_sel)
            apq = o.sum(o.mul(o.matmul(a, q_sel), p_sel), -2)
            c, s = _rotation(o, app, aqq, apq)
            rot = _rotation_matrix(o, c, s, left, right)
            a = o.matmul(rot, o.matmul(a, rot), ta=True)              # J^T A J
            if compute_v:
                v = rot if v is None else o.matmul(v, rot)
    d = o.sum(o.mul(a, eye), -2)
    if n == 1:
        w, vectors = d, _filled(o, x, 1)
    else:
        perm = _sort_permutation(o, d, n, descending=False)
        w = o.matmul(d, perm)
        vectors = o.matmul(v, perm) if compute_v else None
    return tuple(_back(b, [o.squeeze_row(w), vectors], dtype, work))


def svd(b, x, dtype: DType, compute_uv: bool = True, full_matrices: bool = False):
    """(s [..., p], u, v) of x [..., m, n] = u diag(s) v^T, p = min(m, n): the singular values
    descending (as TF and LAPACK return them), u [..., m, m] and v [..., n, n] with
    full_matrices, else u [..., m, p] and v [..., n, p]; u and v are None without compute_uv.
    Singular vectors have orthonormal columns, but their signs (and the basis of a repeated
    singular value's spaces) may differ from LAPACK's.

    One-sided (Hestenes) Jacobi on the columns of x (of x^T when m < n): rotations J
    orthogonalize the columns, x V = W, with V the product of the J; then s_k = |W_k| and
    u_k = W_k / s_k. It never forms x^T x, whose float32 rounding would swamp singular values
    below ~1e-4 s_max (squaring the condition number); each rotation is computed from the
    current columns' dot products, which keeps the small singular values to float32's
    relative accuracy. u comes from a Householder QR of W: W has orthogonal columns, so
    W = Q R with R diagonal to rounding, |R_kk| = s_k and u = Q diag(sign R_kk). Q is
    orthonormal whatever W is, which completes u for full_matrices and for rank-deficient x
    (zero columns of W), where W / s would divide by 0: no NaN, and pinv / lstsq /
    matrix_rank zero those singular values out anyway. The input is scaled by its largest
    |entry| first so the squared column norms neither overflow nor underflow.
    EigenError for run-time matrix dims or min(m, n) > MAX_N."""
    rank, m, n = matrix_dims(b, x, "SVD")
    x, work = _working(b, x, dtype, "SVD")
    o = _Ops(b, work, rank)
    a = o.swap(x) if m < n else x
    rows, cols = max(m, n), min(m, n)
    scale = o.op("reduce_max", [o.op("abs", [a])], {"axes": [-2, -1], "keepdims": True})
    scale = o.where(o.op("greater", [scale, o.scalar(0, scale)]), scale, o.scalar(1, scale))
    a = o.div(a, scale)
    rounds = _round_consts(o, cols)
    v = None
    for _ in range(jacobi_sweeps(cols)):
        for p_sel, q_sel, left, right in rounds:
            alpha = o.sum(o.mul(a, a), -2)                            # |column|^2
            app, aqq = o.matmul(alpha, p_sel), o.matmul(alpha, q_sel)
            apq = o.sum(o.mul(o.matmul(a, p_sel), o.matmul(a, q_sel)), -2)
            c, s = _rotation(o, app, aqq, apq)
            rot = _rotation_matrix(o, c, s, left, right)
            a = o.matmul(a, rot)
            if compute_uv:
                v = rot if v is None else o.matmul(v, rot)
    sigma = o.op("sqrt", [o.sum(o.mul(a, a), -2)])                     # [..., 1, cols]
    perm = _sort_permutation(o, sigma, cols, descending=True) if cols > 1 else None
    if perm is not None:
        sigma = o.matmul(sigma, perm)
    s = o.squeeze_row(o.mul(sigma, scale))
    if not compute_uv:
        return _back(b, [s], dtype, work)[0], None, None
    corner = o.block(a, 0, 1, 0, 1)
    if perm is None:
        v = _filled(o, corner, 1)
    else:
        a, v = o.matmul(a, perm), o.matmul(v, perm)
    _, reflectors, diagonals = _householder(o, a, rows, cols)
    u_cols = rows if full_matrices else cols
    u = _apply_reflectors(o, reflectors, corner, rows, u_cols)
    sign = o.sign_plus(_concat_last(o, diagonals))                    # [..., 1, cols]
    if u_cols > cols:
        # The completing columns (full_matrices) span the orthogonal complement; any sign.
        sign = o.op("pad", [sign], {"pads": [(0, 0)] * (rank - 1) + [(0, u_cols - cols)],
                                    "value": 1.0})
    u = o.mul(u, sign)
    if m < n:
        u, v = v, u
    return tuple(_back(b, [s, u, v], dtype, work))
