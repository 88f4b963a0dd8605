"""Dense linear-algebra JAX primitives: cholesky, triangular_solve, lu,
lu_pivots_to_permutation and custom_linear_solve (what jnp.linalg.cholesky / solve / inv /
det / slogdet and jax.scipy.linalg.solve_triangular / lu_factor / lu / cho_solve produce).

The factorizations are the shared unrolled decompositions of `frontends/linalg.py` (the TF
ops Cholesky, Lu, MatrixTriangularSolve, ... lift to the same IR); custom_linear_solve is
lifted as its `solve` jaxpr (the forward computation; the other jaxprs only serve
differentiation). Matrix dims must be static and at most `linalg.MAX_N`; batch dims may be
run-time sizes.
"""

from __future__ import annotations

import os

import numpy as np

from .. import linalg
from .context import LiftError
from .ops import builder, lowers


def _real_float(ctx, eqn, x):
    """LiftError unless x is a real float array (the IR has no complex dtype)."""
    if not ctx.dtype(x).is_float:
        raise LiftError(f"{eqn.primitive.name} on {ctx.dtype(x)} is not supported "
                        f"(real float only)")


def _shared(fn):
    """`fn(ctx, eqn, ins, b)` as a lowering: the builder made, and the shared decomposition's
    LinalgError re-raised as this frontend's LiftError."""
    def lower(ctx, eqn, ins):
        try:
            return fn(ctx, eqn, ins, builder(ctx))
        except linalg.LinalgError as e:
            raise LiftError(str(e)) from None
    lower.__doc__ = fn.__doc__
    return lower


@lowers("cholesky")
@_shared
def _cholesky(ctx, eqn, ins, b):
    """cholesky(a): the lower factor, zeros above the diagonal (jnp.linalg.cholesky masks
    them anyway); a's lower triangle is read, as LAPACK potrf."""
    (a,) = ins
    _real_float(ctx, eqn, a)
    if eqn.params.get("symmetrize_input", False):
        # Older JAX symmetrized inside the primitive: (a + a^T) / 2 first.
        a = ctx.emit("mul", [ctx.emit("add", [a, ctx.transpose(a, _swap_last(ctx, a))]),
                             ctx.scalar(0.5, a)])
    return linalg.cholesky(b, a)


def _swap_last(ctx, x):
    """The permutation that swaps the last two dims of x."""
    r = len(ctx.shape(x))
    return list(range(r - 2)) + [r - 1, r - 2]


@lowers("triangular_solve")
@_shared
def _triangular_solve(ctx, eqn, ins, b):
    """triangular_solve(a, b; left_side, lower, transpose_a, conjugate_a, unit_diagonal):
    op(a) @ X = b, or X @ op(a) = b when not left_side, solved as op(a)^T @ X^T = b^T."""
    a, rhs = ins
    _real_float(ctx, eqn, a)
    p = eqn.params
    lower, transpose = bool(p["lower"]), bool(p["transpose_a"])
    # conjugate_a is a no-op on real matrices (checked above).
    unit = bool(p["unit_diagonal"])
    if p["left_side"]:
        return linalg.triangular_solve(b, a, rhs, lower=lower, adjoint=transpose,
                                       unit_diagonal=unit)
    rhs_t = ctx.transpose(rhs, _swap_last(ctx, rhs))
    x_t = linalg.triangular_solve(b, a, rhs_t, lower=lower, adjoint=not transpose,
                                  unit_diagonal=unit)
    return ctx.transpose(x_t, _swap_last(ctx, x_t))


@lowers("lu")
@_shared
def _lu(ctx, eqn, ins, b):
    """lu(a) -> (lu, pivots, permutation): partial pivoting, as LAPACK getrf; rectangular
    matrices too."""
    (a,) = ins
    _real_float(ctx, eqn, a)
    return list(linalg.lu(b, a))


@lowers("lu_pivots_to_permutation")
@_shared
def _lu_pivots_to_permutation(ctx, eqn, ins, b):
    """lu_pivots_to_permutation(pivots; permutation_size): the row exchanges applied in order
    to 0..size-1."""
    return linalg.pivots_to_permutation(b, ins[0], int(eqn.params["permutation_size"]))


@lowers("custom_linear_solve")
def _custom_linear_solve(ctx, eqn, ins):
    """custom_linear_solve(consts..., b...): the `solve` jaxpr on its consts and b. The
    operands are the consts of matvec, vecmat, solve and transpose_solve in that order
    (`const_lengths` counts them), then b's leaves."""
    lengths = eqn.params["const_lengths"]
    jaxprs = eqn.params["jaxprs"]
    if jaxprs.solve is None:
        raise LiftError("custom_linear_solve without a solve function is not supported")
    start = lengths.matvec + lengths.vecmat
    solve_consts = ins[start:start + lengths.solve]
    rhs = ins[sum(lengths):]
    return ctx.lift_closed(jaxprs.solve, list(solve_consts) + list(rhs))


def _jnp_linalg_call(eqn) -> bool:
    """True for a jit call of jax.numpy.linalg's own function (not a user function that
    happens to share its name) on one real float matrix stack."""
    info = getattr(eqn.params["jaxpr"].jaxpr, "debug_info", None)
    src = (getattr(info, "func_src_info", None) or "").rpartition(" at ")[2].rpartition(":")[0]
    if not src.replace(os.sep, "/").endswith("jax/_src/numpy/linalg.py"):
        return False
    avals = [v.aval for v in eqn.invars]
    return len(avals) == 1 and len(avals[0].shape) >= 2 \
        and np.issubdtype(avals[0].dtype, np.floating)


# jnp.linalg.det and slogdet are lifted whole, from the shared LU: the jaxprs JAX builds for
# them count the row exchanges with an integer remainder, which TF lowers to TruncateDiv, an
# op TF.js does not have; and the direct decomposition is also far smaller.
@lowers("jit:det")
@_shared
def _jnp_det(ctx, eqn, ins, b):
    """jnp.linalg.det(a): the permutation's sign times the product of U's diagonal."""
    return linalg.det(b, ins[0])


@lowers("jit:slogdet")
@_shared
def _jnp_slogdet(ctx, eqn, ins, b):
    """jnp.linalg.slogdet(a) -> (sign, logabsdet), whatever its `method` (the values are the
    same)."""
    sign, logabs = linalg.slogdet(b, ins[0])
    return [sign, logabs]


_jnp_det.matches = _jnp_slogdet.matches = _jnp_linalg_call
