"""Collective ops of local (SPMD) programs: all_reduce, all_gather, reduce_scatter, all_to_all.

A local program is what one device runs: operand and result types are per-device shard shapes.
Every collective names the mesh axis it communicates over (`axis`) and that axis' size
(`axis_size`, so that type inference needs no mesh). The devices that take part in one instance
of a collective are a *group*: the devices that differ only in their coordinate along `axis`,
ordered by that coordinate (`ir/spmd.py` computes the groups from the mesh).

Two kinds of semantics live here:
- the OpDef `kernel` is the single-device reference the ordinary interpreter calls. A
  collective over more than one device cannot be computed from one device's operand, so it
  raises (pointing at `ir.spmd.run_spmd`); over an axis of size 1 every collective is the
  identity, and the kernel says so.
- `CROSS_DEVICE[op](per_device_inputs, attrs, groups) -> per_device_outputs` computes the op
  for every device at once, group by group; `ir/spmd.py` uses it.

Reductions accumulate in float64 (floats) or int64 (integers) and cast back, like the
reduce_* kernels, so the reference does not depend on summation order in low precision.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from ..types import UNKNOWN, DType
from .registry import Attr, OpDef, check, normalize_axis, register_op

# `no_fold`: constant-folding a collective on one device would need the other devices' operands.
# `collective`: lets passes and ir/spmd.py find them without listing op names.
TRAITS = frozenset({"pure", "collective", "no_fold"})

REDUCE_KINDS = ("sum", "max", "min", "mean")

_AXIS_ATTRS = {
    "axis": Attr("str", doc="mesh axis the collective communicates over"),
    "axis_size": Attr("int", doc="number of devices along `axis` (the group size)"),
}


# -- type inference ----------------------------------------------------------------------------

def _common_checks(op: str, x, attrs) -> int:
    """Checks shared by every collective; returns the group size."""
    n = attrs["axis_size"]
    check(attrs["axis"] != "", f"{op}: attribute 'axis' must name a mesh axis, got ''")
    check(n >= 1, f"{op}: axis_size must be >= 1, got {n} (mesh axis '{attrs['axis']}')")
    check(x.dtype != DType.bool, f"{op} does not take bool operands (cast first)")
    return n


def _times(d, n: int):
    """d * n for a dim that may be a symbol (a symbol times n > 1 has no name: unknown)."""
    if isinstance(d, int):
        return d * n
    return d if n == 1 else UNKNOWN


def _divided(op: str, x, dim: int, n: int, attrs, what: str):
    """x.shape[dim] / n; InferenceError when a static size does not divide."""
    d = x.shape[dim]
    if isinstance(d, int):
        check(d % n == 0, f"{op}: {what} {dim} of {x} has size {d}, which is not divisible by "
                          f"axis_size {n} (mesh axis '{attrs['axis']}')")
        return d // n
    return d if n == 1 else UNKNOWN


def _infer_all_reduce(types, attrs):
    (x,) = types
    _common_checks("all_reduce", x, attrs)
    return [x]


def _infer_all_gather(types, attrs):
    (x,) = types
    n = _common_checks("all_gather", x, attrs)
    check(x.rank >= 1, f"all_gather needs an operand of rank >= 1, got {x}")
    dim = normalize_axis(attrs["dim"], x.rank, "all_gather dim")
    shape = list(x.shape)
    shape[dim] = _times(shape[dim], n)
    return [x.with_shape(shape)]


def _infer_reduce_scatter(types, attrs):
    (x,) = types
    n = _common_checks("reduce_scatter", x, attrs)
    check(x.rank >= 1, f"reduce_scatter needs an operand of rank >= 1, got {x}")
    dim = normalize_axis(attrs["dim"], x.rank, "reduce_scatter dim")
    shape = list(x.shape)
    shape[dim] = _divided("reduce_scatter", x, dim, n, attrs, "dim")
    return [x.with_shape(shape)]


def _infer_all_to_all(types, attrs):
    (x,) = types
    n = _common_checks("all_to_all", x, attrs)
    check(x.rank >= 1, f"all_to_all needs an operand of rank >= 1, got {x}")
    split = normalize_axis(attrs["split_dim"], x.rank, "all_to_all split_dim")
    concat = normalize_axis(attrs["concat_dim"], x.rank, "all_to_all concat_dim")
    shape = list(x.shape)
    shape[split] = _divided("all_to_all", x, split, n, attrs, "split_dim")
    shape[concat] = _times(shape[concat], n)
    return [x.with_shape(shape)]


# -- cross-device semantics --------------------------------------------------------------------

Groups = Sequence[Sequence[int]]
CrossDeviceFn = Callable[[Sequence[np.ndarray], dict, Groups], list[np.ndarray]]


def _reduce(arrays: Sequence[np.ndarray], kind: str) -> np.ndarray:
    """Elementwise reduction of equally shaped arrays, in the operands' dtype."""
    dtype = arrays[0].dtype
    if kind in ("max", "min"):
        fn = np.maximum if kind == "max" else np.minimum
        out = arrays[0]
        for a in arrays[1:]:
            out = fn(out, a)
        return np.asarray(out).astype(dtype)
    is_int = DType.from_numpy(dtype).is_int
    total = np.sum(np.stack([a.astype(np.int64 if is_int else np.float64) for a in arrays]),
                   axis=0)
    if kind == "mean":
        n = len(arrays)
        # Integer mean truncates toward zero, like reduce_mean (TF's MeanReducer).
        total = np.sign(total) * (np.abs(total) // n) if is_int else total / n
    return np.asarray(total).astype(dtype)


def _check_groups(op: str, xs: Sequence[np.ndarray], attrs, groups: Groups) -> None:
    """Every device in exactly one group of `axis_size` devices, all with one operand shape."""
    n = attrs["axis_size"]
    seen = sorted(d for g in groups for d in g)
    if seen != list(range(len(xs))):
        raise ValueError(f"{op}: groups {list(map(list, groups))} do not cover devices "
                         f"0..{len(xs) - 1} exactly once")
    for g in groups:
        if len(g) != n:
            raise ValueError(f"{op}: group {list(g)} has {len(g)} devices but axis_size is {n} "
                             f"(mesh axis '{attrs['axis']}')")
        shapes = {xs[d].shape for d in g}
        if len(shapes) != 1:
            raise ValueError(f"{op}: devices {list(g)} hold operands of different shapes "
                             f"{sorted(shapes)}")


def _per_group(op: str, fn: Callable[[list[np.ndarray], dict], list[np.ndarray]]
               ) -> CrossDeviceFn:
    """Lifts `fn` (the group's operands in group order -> its results in group order) to the
    whole device list."""
    def run(xs, attrs, groups):
        _check_groups(op, xs, attrs, groups)
        out: list[np.ndarray | None] = [None] * len(xs)
        for g in groups:
            for d, r in zip(g, fn([np.asarray(xs[d]) for d in g], attrs)):
                out[d] = r
        return out
    return run


def _all_reduce(xs, attrs):
    r = _reduce(xs, attrs["reduce"])
    # Each device gets its own copy: later per-device kernels must not alias one another.
    return [r.copy() for _ in xs]


def _all_gather(xs, attrs):
    r = np.concatenate(xs, axis=attrs["dim"] % xs[0].ndim)
    return [r.copy() for _ in xs]


def _reduce_scatter(xs, attrs):
    r = _reduce(xs, attrs["reduce"])
    return [c.copy() for c in np.split(r, len(xs), axis=attrs["dim"] % r.ndim)]


def _all_to_all(xs, attrs):
    n = len(xs)
    split = attrs["split_dim"] % xs[0].ndim
    concat = attrs["concat_dim"] % xs[0].ndim
    chunks = [np.split(x, n, axis=split) for x in xs]   # chunks[src][dst]
    return [np.concatenate([chunks[src][dst] for src in range(n)], axis=concat)
            for dst in range(n)]


CROSS_DEVICE: dict[str, CrossDeviceFn] = {
    "all_reduce": _per_group("all_reduce", _all_reduce),
    "all_gather": _per_group("all_gather", _all_gather),
    "reduce_scatter": _per_group("reduce_scatter", _reduce_scatter),
    "all_to_all": _per_group("all_to_all", _all_to_all),
}


# -- single-device reference kernels -----------------------------------------------------------

def _single_device_kernel(op: str):
    """Identity over an axis of size 1; otherwise an error, since the result depends on the
    other devices' operands."""
    def kernel(ins, attrs):
        if attrs["axis_size"] == 1:
            return CROSS_DEVICE[op]([ins[0]], attrs, [[0]])
        raise ValueError(
            f"{op} over mesh axis '{attrs['axis']}' ({attrs['axis_size']} devices) is a "
            f"cross-device collective; run the local program with "
            f"tensorforge.ir.spmd.run_spmd, not the single-device interpreter")
    return kernel


register_op(OpDef(
    "all_reduce", ("x",), _infer_all_reduce, _single_device_kernel("all_reduce"),
    attrs={**_AXIS_ATTRS,
           "reduce": Attr("str", "sum", choices=REDUCE_KINDS, doc="elementwise reduction")},
    traits=TRAITS,
    doc="Elementwise reduction of x over the devices of a mesh axis; every device gets the "
        "result (same shape)."))

register_op(OpDef(
    "all_gather", ("x",), _infer_all_gather, _single_device_kernel("all_gather"),
    attrs={**_AXIS_ATTRS, "dim": Attr("int", doc="dim the shards are concatenated along")},
    traits=TRAITS,
    doc="Concatenates the shards of the devices of a mesh axis along `dim`, in device order "
        "(result dim = dim * axis_size)."))

register_op(OpDef(
    "reduce_scatter", ("x",), _infer_reduce_scatter, _single_device_kernel("reduce_scatter"),
    attrs={**_AXIS_ATTRS, "dim": Attr("int", doc="dim the reduced result is split along"),
           "reduce": Attr("str", "sum", choices=REDUCE_KINDS, doc="elementwise reduction")},
    traits=TRAITS,
    doc="all_reduce, then device i of the axis keeps slice i of axis_size equal slices of "
        "`dim` (which must divide)."))

register_op(OpDef(
    "all_to_all", ("x",), _infer_all_to_all, _single_device_kernel("all_to_all"),
    attrs={**_AXIS_ATTRS,
           "split_dim": Attr("int", doc="dim split into axis_size chunks, chunk i to device i"),
           "concat_dim": Attr("int", doc="dim the received chunks are concatenated along")},
    traits=TRAITS,
    doc="Splits `split_dim` into axis_size chunks, sends chunk i to device i of the axis, and "
        "concatenates the received chunks along `concat_dim` in source-device order."))
