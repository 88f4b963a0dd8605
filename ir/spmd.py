"""Device-by-device SPMD interpreter for local programs, plus sharding helpers.

A local program (passes/shard/partition.py produces one) is what every device of a mesh runs on
its own shards, with explicit collective ops (ir/ops/collective.py) where devices exchange data.
`run_spmd` runs it for all devices in lock step, node by node: ordinary ops through their
registry kernel on each device, collectives through `CROSS_DEVICE` over the device groups of
their mesh axis. It is the reference a partitioned program is checked against (together with
`shard_array`/`unshard` and the ordinary interpreter on the global program).

Devices are numbered row-major over the mesh axes in their dict order: device d has coordinate
`np.unravel_index(d, sizes)`, the same numbering as passes/shard/mesh.py's Mesh.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np

from .errors import ConversionError, Diagnostic, TensorforgeError
from .graph import Graph
from .interpreter import _node_diag
from .ops import get_op
from .ops.collective import CROSS_DEVICE
from .quantized import is_quantized

REPLICA_RTOL = 1e-6


# -- mesh helpers ------------------------------------------------------------------------------

def _check_mesh(mesh_axes: Mapping[str, int]) -> list[int]:
    """The axis sizes; ConversionError listing every bad axis."""
    problems = [f"mesh axis {name!r}: size must be a positive int, got {size!r}"
                for name, size in mesh_axes.items()
                if not isinstance(name, str) or isinstance(size, bool)
                or not isinstance(size, int) or size < 1]
    if problems:
        raise ConversionError(f"invalid mesh {dict(mesh_axes)}", [Diagnostic(p) for p in problems])
    return list(mesh_axes.values())


def num_devices(mesh_axes: Mapping[str, int]) -> int:
    """Number of devices of the mesh (the product of its axis sizes)."""
    return math.prod(_check_mesh(mesh_axes))


def device_coords(device: int, mesh_axes: Mapping[str, int]) -> dict[str, int]:
    """Coordinate of `device` along every mesh axis (row-major numbering, axes in dict order)."""
    sizes = _check_mesh(mesh_axes)
    coords = np.unravel_index(device, sizes) if sizes else ()
    return {name: int(c) for name, c in zip(mesh_axes, coords)}


def mesh_groups(mesh_axes: Mapping[str, int], axis: str) -> list[list[int]]:
    """The device groups of a collective over `axis`: devices that differ only in their `axis`
    coordinate, each group ordered by that coordinate. Groups are listed in order of their
    first device."""
    sizes = _check_mesh(mesh_axes)
    if axis not in mesh_axes:
        raise ConversionError(f"mesh axis '{axis}' is not in the mesh "
                              f"({', '.join(mesh_axes) or 'no axes'})")
    k = list(mesh_axes).index(axis)
    ids = np.arange(math.prod(sizes)).reshape(sizes)
    # Moving `axis` last makes each row one group, ordered by its coordinate.
    return np.moveaxis(ids, k, -1).reshape(-1, sizes[k]).tolist()


# -- the SPMD interpreter ----------------------------------------------------------------------

def _collective_problems(graph: Graph, mesh_axes: Mapping[str, int]) -> list[Diagnostic]:
    """Collectives whose axis is not in the mesh or whose axis_size disagrees with it."""
    out = []
    for node in graph:
        if "collective" not in get_op(node.op).traits:
            continue
        axis, size = node.attrs.get("axis"), node.attrs.get("axis_size")
        if axis not in mesh_axes:
            out.append(_node_diag(node, f"collective over mesh axis {axis!r}, which is not in "
                                        f"the mesh ({', '.join(mesh_axes) or 'no axes'})"))
        elif mesh_axes[axis] != size:
            out.append(_node_diag(node, f"axis_size {size} but mesh axis '{axis}' has "
                                        f"{mesh_axes[axis]} devices"))
    return out


def run_spmd(graph: Graph, mesh_axes: Mapping[str, int],
             per_device_inputs: Sequence[Sequence[np.ndarray]], *,
             check_types: bool = True) -> list[list[np.ndarray]]:
    """Runs the local program `graph` on every device of the mesh in lock step and returns
    `outputs[device][i]`.

    `mesh_axes`: ordered axis name -> size; devices are numbered row-major over it.
    `per_device_inputs[device]`: that device's graph inputs, in graph-input order (its shards).
    Every node runs for every device before the next node: ordinary ops through the registry
    kernel, collectives through `CROSS_DEVICE` over the groups of their mesh axis. Results are
    checked against the node's declared (per-device) type, like `run_graph`. Float programs
    only: quantized values are rejected. Raises ConversionError listing every problem with the
    inputs, the mesh or the collectives before running anything."""
    n_dev = num_devices(mesh_axes)
    if len(per_device_inputs) != n_dev:
        raise ConversionError(f"mesh {dict(mesh_axes)} has {n_dev} devices, got inputs for "
                              f"{len(per_device_inputs)}")
    problems: list[Diagnostic] = _collective_problems(graph, mesh_axes)
    quantized = [v for v in graph.inputs if is_quantized(v)]
    quantized += [v for node in graph for v in node.outputs if is_quantized(v)]
    if quantized:
        problems.append(Diagnostic(f"quantized values are not supported by run_spmd: "
                                   f"{', '.join('%' + (v.name or '?') for v in quantized)}"))

    bindings: list[dict[str, int]] = [{} for _ in range(n_dev)]
    env: list[dict[int, np.ndarray]] = [{} for _ in range(n_dev)]
    for d, inputs in enumerate(per_device_inputs):
        inputs = list(inputs)
        if len(inputs) != len(graph.inputs):
            problems.append(Diagnostic(f"device {d}: graph @{graph.name} takes "
                                       f"{len(graph.inputs)} inputs, got {len(inputs)}"))
            continue
        for v, a in zip(graph.inputs, inputs):
            a = np.asarray(a)
            if a.dtype != v.type.dtype.np:
                problems.append(Diagnostic(f"device {d}: input {v.name or '?'}: dtype "
                                           f"{a.dtype}, expected {v.type.dtype}"))
            elif not v.type.accepts(a.shape, bindings[d]):
                problems.append(Diagnostic(f"device {d}: input {v.name or '?'}: shape "
                                           f"{a.shape} does not fit {v.type}"))
            env[d][id(v)] = a
    if problems:
        raise ConversionError(f"cannot run graph @{graph.name} on mesh {dict(mesh_axes)}",
                              problems)

    groups_of = {axis: mesh_groups(mesh_axes, axis) for axis in mesh_axes}
    for node in graph:
        opdef = get_op(node.op)
        args = [[env[d][id(v)] for v in node.inputs] for d in range(n_dev)]
        try:
            if "collective" in opdef.traits:
                # Collectives take one operand and give one result per device.
                outs = CROSS_DEVICE[node.op]([a[0] for a in args], node.attrs,
                                             groups_of[node.attrs["axis"]])
                results = [[o] for o in outs]
            else:
                results = [opdef.kernel(a, node.attrs) for a in args]
        except TensorforgeError:
            raise
        except Exception as e:
            raise ConversionError("reference kernel failed under run_spmd", [_node_diag(
                node, f"{type(e).__name__}: {e}")]) from e
        for d in range(n_dev):
            if len(results[d]) != len(node.outputs):
                raise TensorforgeError(f"kernel of {node.op} returned {len(results[d])} "
                                       f"results, expected {len(node.outputs)}")
            for out, res in zip(node.outputs, results[d]):
                res = np.asarray(res)
                if check_types and (res.dtype != out.type.dtype.np
                                    or not out.type.accepts(res.shape, bindings[d])):
                    raise TensorforgeError(
                        f"{node.describe()} (scope '{node.scope}'), device {d}: kernel "
                        f"produced {res.dtype}{list(res.shape)}, node declares {out.type}")
                env[d][id(out)] = res
    return [[env[d][id(v)] for v in graph.outputs] for d in range(n_dev)]


# -- sharding helpers --------------------------------------------------------------------------

def _layout_axes(layout_axes) -> tuple:
    """Accepts a Layout or its axes tuple."""
    return tuple(getattr(layout_axes, "axes", layout_axes))


def _layout_problems(axes: tuple, rank: int, mesh_axes: Mapping[str, int]) -> list[str]:
    out = []
    if len(axes) != rank:
        out.append(f"layout ({', '.join(map(str, axes))}) has {len(axes)} dims, the tensor "
                   f"has rank {rank}")
    for a in axes:
        if a is not None and a not in mesh_axes:
            out.append(f"layout names mesh axis {a!r}, which is not in the mesh "
                       f"({', '.join(mesh_axes) or 'no axes'})")
    named = [a for a in axes if a is not None]
    for a in sorted({a for a in named if named.count(a) > 1}):
        out.append(f"layout splits two dims over mesh axis '{a}'")
    return out


def _shard_index(coords: Mapping[str, int], axes: tuple, local_shape) -> tuple:
    """The slices of the global array that a device with `coords` holds."""
    return tuple(slice(None) if a is None else
                 slice(coords[a] * size, (coords[a] + 1) * size)
                 for a, size in zip(axes, local_shape))


def shard_array(x: np.ndarray, layout_axes, mesh_axes: Mapping[str, int]) -> list[np.ndarray]:
    """Every device's shard of the global array `x` under a Layout (or its axes tuple): dim i is
    split evenly over mesh axis `layout_axes[i]`, or copied whole when it is None; mesh axes the
    layout does not name replicate the array. ConversionError on a layout that does not fit
    (wrong rank, unknown or repeated axis, indivisible dim), listing every problem."""
    x = np.asarray(x)
    axes = _layout_axes(layout_axes)
    n_dev = num_devices(mesh_axes)
    problems = _layout_problems(axes, x.ndim, mesh_axes)
    if not problems:
        for i, (a, size) in enumerate(zip(axes, x.shape)):
            if a is not None and size % mesh_axes[a]:
                problems.append(f"dim {i} of shape {list(x.shape)} has size {size}, not "
                                f"divisible by mesh axis '{a}' of size {mesh_axes[a]}")
    if problems:
        raise ConversionError(f"cannot shard a {list(x.shape)} array over mesh "
                              f"{dict(mesh_axes)}", [Diagnostic(p) for p in problems])
    local = tuple(s if a is None else s // mesh_axes[a] for a, s in zip(axes, x.shape))
    return [np.ascontiguousarray(x[_shard_index(device_coords(d, mesh_axes), axes, local)])
            for d in range(n_dev)]


def unshard(per_device: Sequence[np.ndarray], layout_axes,
            mesh_axes: Mapping[str, int]) -> np.ndarray:
    """The global array from every device's shard (the inverse of `shard_array`). Devices that
    hold the same shard (replicas) must agree within REPLICA_RTOL relative to the shard's
    largest magnitude; ConversionError naming every mismatching device pair otherwise."""
    axes = _layout_axes(layout_axes)
    n_dev = num_devices(mesh_axes)
    if len(per_device) != n_dev:
        raise ConversionError(f"mesh {dict(mesh_axes)} has {n_dev} devices, got "
                              f"{len(per_device)} shards")
    shards = [np.asarray(s) for s in per_device]
    problems = _layout_problems(axes, shards[0].ndim, mesh_axes)
    shapes = sorted({(s.shape, str(s.dtype)) for s in shards})
    if len(shapes) > 1:
        problems.append(f"shards differ in shape or dtype: {shapes}")
    if problems:
        raise ConversionError("cannot unshard", [Diagnostic(p) for p in problems])
    local = shards[0].shape
    glob = tuple(s if a is None else s * mesh_axes[a] for a, s in zip(axes, local))
    out = np.empty(glob, shards[0].dtype)
    owner: dict[tuple, int] = {}   # shard slot -> first device holding it
    mismatches = []
    for d, s in enumerate(shards):
        coords = device_coords(d, mesh_axes)
        slot = tuple(coords[a] for a in axes if a is not None)
        if slot not in owner:
            owner[slot] = d
            out[_shard_index(coords, axes, local)] = s
            continue
        ref, a = shards[owner[slot]].astype(np.float64), s.astype(np.float64)
        # Equal entries (incl. matching infs and NaN in both replicas) count as agreement; a
        # NaN on one side only is an infinite difference.
        same = (a == ref) | (np.isnan(a) & np.isnan(ref))
        gap = np.where(same, 0.0, np.nan_to_num(np.abs(a - ref), nan=np.inf))
        diff = float(np.max(gap, initial=0.0))
        scale = float(np.max(np.abs(ref[np.isfinite(ref)]), initial=0.0))
        if diff > REPLICA_RTOL * scale:
            mismatches.append(f"device {d} {coords} disagrees with device {owner[slot]} "
                              f"{device_coords(owner[slot], mesh_axes)} on replicated shard "
                              f"{slot}: max |diff| {diff:.3g} (max |value| {scale:.3g}, "
                              f"rtol {REPLICA_RTOL:g})")
    if mismatches:
        raise ConversionError("replicas of a sharded tensor disagree",
                              [Diagnostic(m) for m in mismatches])
    return out
