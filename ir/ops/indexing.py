"""N-d indexing ops: gather_nd reads slices of a tensor at index tuples, scatter_nd_update
writes slices at index tuples (tf.gather_nd, tf.tensor_scatter_nd_update).

Out-of-range indices are an error in the reference kernels, as in TF's CPU kernels (NumPy
would wrap negative ones silently).
"""

from __future__ import annotations

import numpy as np

from .registry import OpDef, check, register_op

PURE = frozenset({"pure"})


def _index_depth(params, indices, what: str) -> int:
    """K, the length of each index tuple (the last dim of indices)."""
    check(indices.dtype.is_int, f"{what}: indices must be integers, got {indices.dtype}")
    check(indices.rank >= 1, f"{what}: indices must have rank >= 1, got {indices}")
    k = indices.shape[-1]
    check(isinstance(k, int), f"{what}: the last dim of indices (the index depth) must be "
                              f"static, got {indices}")
    check(k <= params.rank, f"{what}: index depth {k} is more than the rank of {params}")
    return k


def _tuples(indices: np.ndarray, shape: tuple, what: str) -> tuple:
    """NumPy advanced-indexing tuple for [..., K] indices, bounds-checked."""
    k = indices.shape[-1]
    for j in range(k):
        col = indices[..., j]
        if col.size and (col.min() < 0 or col.max() >= shape[j]):
            raise IndexError(f"{what}: index {j} outside [0, {shape[j]})")
    return tuple(indices[..., j] for j in range(k))


# -- gather_nd ---------------------------------------------------------------------------------

def _infer_gather_nd(types, attrs):
    params, indices = types
    k = _index_depth(params, indices, "gather_nd")
    return [params.with_shape(list(indices.shape[:-1]) + list(params.shape[k:]))]


def _gather_nd(ins, attrs):
    params, indices = ins
    return [np.asarray(params[_tuples(indices, params.shape, "gather_nd")]).copy()]


register_op(OpDef(
    "gather_nd", ("params", "indices"), _infer_gather_nd, _gather_nd,
    traits=PURE,
    doc="params[indices[..., 0], ..., indices[..., K-1]]: slices at index tuples "
        "(tf.gather_nd, batch_dims 0).",
))


# -- scatter_nd_update -------------------------------------------------------------------------

def _scatter_infer(name):
    def infer(types, attrs):
        x, indices, updates = types
        k = _index_depth(x, indices, name)
        check(updates.dtype == x.dtype, f"{name}: updates are {updates.dtype}, the "
                                        f"tensor is {x.dtype}")
        want = list(indices.shape[:-1]) + list(x.shape[k:])
        check(updates.rank == len(want), f"{name}: updates {updates} should have "
                                         f"shape {want}")
        return [x]
    return infer


_infer_scatter_nd_update = _scatter_infer("scatter_nd_update")


def _scatter_nd_update(ins, attrs):
    x, indices, updates = ins
    out = x.copy()
    out[_tuples(indices, x.shape, "scatter_nd_update")] = updates
    return [out]


register_op(OpDef(
    "scatter_nd_update", ("x", "indices", "updates"), _infer_scatter_nd_update,
    _scatter_nd_update, traits=PURE,
    doc="x with the slices at index tuples replaced by updates (tf.tensor_scatter_nd_update; "
        "a repeated index keeps one of its updates).",
))


# -- scatter_nd_add ----------------------------------------------------------------------------

def _scatter_nd_add(ins, attrs):
    x, indices, updates = ins
    out = x.copy()
    np.add.at(out, _tuples(indices, x.shape, "scatter_nd_add"), updates)
    return [out]


register_op(OpDef(
    "scatter_nd_add", ("x", "indices", "updates"), _scatter_infer("scatter_nd_add"),
    _scatter_nd_add, traits=PURE,
    doc="x with updates added at index tuples, repeated indices summing "
        "(tf.tensor_scatter_nd_add, x.at[i].add).",
))
