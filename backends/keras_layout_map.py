"""Keras 3 `LayoutMap` from a layout-annotated IR module (lifted from that Keras model).

    layout_map = to_keras_layout_map(plan, weights=model)   # plan = tensorforge.sharding.shard(...)
    keras.distribution.set_distribution(
        keras.distribution.ModelParallel(layout_map=layout_map, batch_dim_name="batch"))
    model = build_model()                    # variables are created sharded

Two layers, so the map can be computed in one process (TF backend, where `from_keras` works)
and rebuilt in another (e.g. the JAX backend with simulated devices):

- `keras_layout_entries(module, mesh_axes, weights)` -> {variable path: axes tuple}: pure
  Python, no Keras import; JSON-serialisable;
- `layout_map_from_entries(entries, mesh_axes)` -> `keras.distribution.LayoutMap` on a
  `DeviceMesh(shape, axis_names)` over `keras.distribution.list_devices()`.

Mapping a constant to its Keras variable path: a named constant (`encoder_0_ff1/kernel`) is the
path itself; an unnamed one (the frontend folded a reshape into it, e.g. the MHA projections:
scope `encoder_0_mha/query`, operand role `b`) is `<scope>/kernel`, else `<scope>/<role>`.
With `weights` (a Keras model, or {path: shape}) every candidate is checked against the real
variable paths, and an annotated constant that matches none is an error. When the IR shape
is a reshape of the variable's (the MHA kernel is [d, heads*dh] in the IR, [d, heads, dh] in
Keras) each sharded IR dim's axis goes to the outermost variable dim of its reshape group that
the axis size divides: the same split when that is the outermost dim, otherwise a different
but valid distribution of the same weight (numerically identical results).
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

from ..ir.errors import ConversionError, Diagnostic
from ..ir.graph import Module, Node, Value
from ..passes.shard.mesh import Mesh
from ..passes.shard.plan import ShardingPlan, module_and_mesh, positional_after_plan
from .common import constant_name

__all__ = ["keras_layout_entries", "layout_map_from_entries", "to_keras_layout_map",
           "weight_shapes"]

Axes = tuple  # tuple[str | None, ...]


def weight_shapes(weights: Any) -> dict[str, tuple[int, ...]]:
    """{variable path: shape} of a Keras model / layer (anything with `.weights` whose items
    have `.path` and `.shape`), or of a mapping already in that form."""
    if isinstance(weights, Mapping):
        return {str(k): tuple(int(d) for d in v) for k, v in weights.items()}
    return {w.path: tuple(int(d) for d in w.shape) for w in weights.weights}


def _candidates(v: Value) -> list[str]:
    """Keras variable paths a constant may come from, most likely first."""
    if v.name:
        return [v.name, v.name.split(":")[0]]
    out = []
    scopes = [u.scope for u, _ in v.uses if isinstance(u, Node) and u.scope]
    if v.producer is not None and v.producer.scope:
        scopes.append(v.producer.scope)
    for s in dict.fromkeys(scopes):
        out.append(f"{s}/kernel")
    out.append(constant_name(v))
    return list(dict.fromkeys(out))


def _reshape_groups(a: Sequence[int], b: Sequence[int]) -> list[tuple[list[int], list[int]]]:
    """Minimal aligned groups of dims of two shapes with equal element counts (row-major):
    [(dims of a, dims of b), ...]; size-1 dims join the group before them."""
    groups, i, j = [], 0, 0
    while i < len(a) or j < len(b):
        ga, gb, pa, pb = [], [], 1, 1
        if i < len(a):
            ga, pa, i = [i], a[i], i + 1
        if j < len(b):
            gb, pb, j = [j], b[j], j + 1
        while pa != pb:
            if pa < pb and i < len(a):
                ga.append(i)
                pa, i = pa * a[i], i + 1
            elif j < len(b):
                gb.append(j)
                pb, j = pb * b[j], j + 1
            else:
                break
        groups.append((ga, gb))
    return groups


def _translate(axes: Axes, ir_shape, shape, mesh_axes) -> tuple[Axes | None, str]:
    """The IR layout `axes` (over `ir_shape`) as axes over the variable's `shape`; (None,
    reason) when it cannot be expressed."""
    if tuple(ir_shape) == tuple(shape):
        return tuple(axes), ""
    if math.prod(ir_shape) != math.prod(shape):
        return None, f"IR shape {tuple(ir_shape)} is not a reshape of the variable's {shape}"
    out: list = [None] * len(shape)
    for ga, gb in _reshape_groups(list(ir_shape), list(shape)):
        sharded = [axes[d] for d in ga if axes[d] is not None]
        if not sharded:
            continue
        if len(sharded) > 1:
            return None, (f"IR dims {ga} are sharded over {sharded} but form one dim group "
                          f"of the variable")
        n = mesh_axes.get(sharded[0], 1)
        fit = [k for k in gb if shape[k] % n == 0]
        if not fit:
            return None, (f"no variable dim among {gb} (sizes {[shape[k] for k in gb]}) "
                          f"divides mesh axis {sharded[0]!r} of size {n}")
        out[fit[0]] = sharded[0]
    return tuple(out), ""


def keras_layout_entries(module: Module, mesh_axes: Mapping[str, int],
                         weights: Any = None) -> dict[str, tuple]:
    """{Keras variable path: axes} for every constant of `module.main` whose `layout` shards
    it (axes: per variable dim a mesh axis name or None; replicated constants are Keras'
    default and are left out). `weights`: the Keras model or
    {path: shape}; with it every path is verified and reshaped kernels are translated.
    Raises ConversionError listing every constant that cannot be mapped and every layout
    problem (unknown axis, indivisible dim, two constants of one variable disagreeing)."""
    shapes = weight_shapes(weights) if weights is not None else None
    entries: dict[str, tuple] = {}
    owner: dict[str, str] = {}
    problems: list[Diagnostic] = []
    for node in module.main:
        if node.op != "constant" or node.outputs[0].layout is None:
            continue
        v = node.outputs[0]
        if all(a is None for a in v.layout.axes):
            # Replicated is Keras' default: nothing to say, and most such constants (a layer
            # norm's epsilon, the scalars inside attention and gelu) are no Keras variable.
            continue
        where = dict(node=node.describe(), scope=node.scope, loc=node.loc)
        label = f"%{v.name}" if v.name else constant_name(v)
        axes = tuple(v.layout.axes)
        ir_shape = tuple(v.type.shape)
        if len(axes) != len(ir_shape):
            problems.append(Diagnostic(f"{label}: layout {v.layout} has {len(axes)} dims but "
                                       f"the constant has rank {len(ir_shape)}", **where))
            continue
        bad = [a for a in axes if a is not None and a not in mesh_axes]
        if bad:
            problems.append(Diagnostic(f"{label}: unknown mesh axes {bad} (mesh axes: "
                                       f"{', '.join(mesh_axes)})", **where))
            continue
        cands = _candidates(v)
        if shapes is None:
            path, shape = cands[0], ir_shape
        else:
            path = next((c for c in cands if c in shapes), None)
            if path is None:
                problems.append(Diagnostic(f"{label}: no Keras variable for this constant "
                                           f"(tried {', '.join(cands)})", **where))
                continue
            shape = shapes[path]
        kaxes, why = _translate(axes, ir_shape, shape, mesh_axes)
        if kaxes is None:
            problems.append(Diagnostic(f"{label} -> {path}: {why}", **where))
            continue
        for d, a in enumerate(kaxes):
            if a is not None and shape[d] % mesh_axes[a]:
                problems.append(Diagnostic(f"{label} -> {path}: dim {d} of size {shape[d]} "
                                           f"does not divide mesh axis {a!r} of size "
                                           f"{mesh_axes[a]}", **where))
        if path in entries and entries[path] != kaxes:
            problems.append(Diagnostic(f"{label} -> {path}: layout {kaxes} conflicts with "
                                       f"{entries[path]} from {owner[path]}", **where))
            continue
        entries[path], owner[path] = kaxes, label
    if problems:
        raise ConversionError("cannot map the module's layouts to Keras variables", problems)
    return entries


def layout_map_from_entries(entries: Mapping[str, Sequence], mesh_axes: Mapping[str, int],
                            devices: Sequence | None = None):
    """A `keras.distribution.LayoutMap` holding `TensorLayout(axes)` for each path, on a
    `DeviceMesh(shape=sizes, axis_names=names)` over `devices` (default: all of
    `keras.distribution.list_devices()`, which must be exactly the mesh size)."""
    import keras

    names, sizes = list(mesh_axes), tuple(mesh_axes.values())
    if devices is None:
        devices = keras.distribution.list_devices()
    if len(devices) != math.prod(sizes):
        raise ConversionError("wrong device count for the mesh", [Diagnostic(
            f"mesh {dict(mesh_axes)} needs {math.prod(sizes)} devices, Keras sees "
            f"{len(devices)}")])
    mesh = keras.distribution.DeviceMesh(shape=sizes, axis_names=names, devices=devices)
    layout_map = keras.distribution.LayoutMap(mesh)
    for path, axes in entries.items():
        layout_map[path] = keras.distribution.TensorLayout(tuple(axes))
    return layout_map


def to_keras_layout_map(plan: "ShardingPlan | Module", *args,
                        mesh: "Mesh | Mapping[str, int] | None" = None, weights: Any = None,
                        devices: Sequence | None = None, mesh_axes=None):
    """`keras.distribution.LayoutMap` for the layouts on the plan's constants, on the plan's
    mesh (see `keras_layout_entries`; `weights` = the Keras model the module was lifted from,
    to verify and translate paths). `plan` may also be a layout-annotated Module carrying its
    mesh in metadata (the `shard-propagate` pass writes it), or given `mesh=`."""
    positional_after_plan("to_keras_layout_map", args, None, None,
                          "to_keras_layout_map(plan, weights=...)", mesh_axes=mesh_axes)
    module, shard_mesh = module_and_mesh(plan, mesh, caller="to_keras_layout_map")
    mesh_axes = dict(shard_mesh.axes)
    return layout_map_from_entries(keras_layout_entries(module, mesh_axes, weights),
                                   mesh_axes, devices)
