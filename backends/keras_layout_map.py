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
           "weight_shapes", "weight_variables", "from_keras_layout_map"]

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
    held = ({id(v): (path, shape, rel) for v, path, shape, rel in
             weight_variables(module, weights)} if weights is not None else {})
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
        if id(v) in held:
            # the variable whose data this constant holds (by name or scope, checked by
            # value when `weights` is a model): a transposed kernel maps back by its perm
            path, shape, perm = held[id(v)]
            kaxes, why = _translate(axes, ir_shape, tuple(shape[p] for p in perm), mesh_axes)
            if kaxes is not None:
                back: list = [None] * len(shape)
                for i, p in enumerate(perm):
                    back[p] = kaxes[i]
                kaxes = tuple(back)
        elif shapes is None:
            path, shape = cands[0], ir_shape
            kaxes, why = _translate(axes, ir_shape, shape, mesh_axes)
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


# -- import: a Keras LayoutMap -> tensorforge LayoutMap ----------------------------------------

def _variable_values(weights: Any) -> dict[str, Any] | None:
    """{variable path: NumPy value} of a Keras model / layer; None for a {path: shape}
    mapping (shapes only: reshapes are assumed, transposes cannot be told apart)."""
    if weights is None or isinstance(weights, Mapping):
        return None
    import numpy as np

    return {w.path: np.asarray(w.numpy() if hasattr(w, "numpy") else w.value)
            for w in weights.weights}


def _same_values(a, b) -> bool:
    """`a` and `b` hold the same numbers (a cast to bf16/f16 by the frontend is tolerated)."""
    import numpy as np

    if a.size != b.size:
        return False
    a = np.asarray(a, np.float64).ravel()
    b = np.asarray(b, np.float64).ravel()
    return bool(np.allclose(a, b, rtol=1e-2, atol=1e-3))


def _relation(const, ir_shape, shape, value) -> tuple[int, ...] | None:
    """How constant `const` (IR shape `ir_shape`) holds a variable of `shape` (value `value`,
    or None when only shapes are known): the permutation `perm` such that the constant is
    `transpose(variable, perm)` reshaped to `ir_shape` (identity for a plain reshape); None
    when it does not hold it. The frontends fold casts, transposes and reshapes of a
    variable into the constant that holds it (the JAX lift keeps a Llama attention output
    kernel [heads, dh, d] as [dh*heads, d] for its dot_general), so only the data tells
    which dims went where."""
    import itertools

    import numpy as np

    ir_shape, shape = tuple(ir_shape), tuple(shape)
    identity = tuple(range(len(shape)))
    if math.prod(ir_shape) != math.prod(shape):
        return None
    if value is None:
        return identity
    data = np.asarray(const).reshape(-1)
    value = np.asarray(value)
    perms = itertools.permutations(identity) if len(shape) <= 4 else [identity]
    for perm in perms:      # identity first
        if _same_values(data, np.transpose(value, perm).reshape(-1)):
            return tuple(perm)
    return None


def _scope_candidates(v: Value, paths) -> list[str]:
    """Variable paths directly under the scopes of `v`'s users and producer (`<scope>/kernel`,
    `<scope>/bias`, ...): where an unnamed constant (the TF lift names none of the MHA
    projections' weights) may come from."""
    scopes = [u.scope for u, _ in v.uses if isinstance(u, Node) and u.scope]
    if v.producer is not None and v.producer.scope:
        scopes.append(v.producer.scope)
    out = []
    for s in dict.fromkeys(scopes):
        # JAX names an einsum's scope after its equation (`.../query/abc,cde->abde`)
        for scope in (s, s.rsplit("/", 1)[0]) if "," in s.rsplit("/", 1)[-1] else (s,):
            out += [p for p in paths if p.rsplit("/", 1)[0] == scope]
    return list(dict.fromkeys(out))


def weight_variables(module: Module, weights: Any = None) -> list[tuple[Value, str, tuple, tuple]]:
    """[(constant, Keras variable path, variable shape, perm)] for the constants of
    `module.main` that hold a Keras variable (perm: see `_relation`). With `weights`
    (the Keras model, or {path: shape}) a constant is matched to a real variable of the
    same size: its own name (the JAX lift names constants by variable path), else a
    variable directly under its users' scope whose data it holds (the TF lift leaves the
    MHA weights unnamed). Without `weights` the named floating-point constants are taken at
    their own names and shapes."""
    shapes = weight_shapes(weights) if weights is not None else None
    values = _variable_values(weights)
    out = []
    for node in module.main:
        if node.op != "constant":
            continue
        v = node.outputs[0]
        if v.type.rank == 0 or not v.type.dtype.is_float:
            continue
        ir_shape = tuple(v.type.shape)
        if shapes is None:
            if v.name:
                out.append((v, v.name.split(":")[0], ir_shape, tuple(range(len(ir_shape)))))
            continue
        named = [v.name, v.name.split(":")[0]] if v.name else []
        for path in dict.fromkeys(named + _scope_candidates(v, shapes)):
            if path not in shapes:
                continue
            rel = _relation(v.const, ir_shape, shapes[path],
                            values.get(path) if values is not None else None)
            if rel is not None:
                out.append((v, path, shapes[path], rel))
                break
    return out


def _to_ir_axes(axes: Axes, shape, ir_shape, perm, mesh_axes) -> tuple[Axes | None, str]:
    """The variable layout `axes` (over `shape`) as axes over the IR constant (`ir_shape`)
    that holds `transpose(variable, perm)` reshaped; (None, reason) when it cannot be
    expressed. The transpose permutes the axes. Through the reshape each sharded dim's axis
    goes to the outermost IR dim of its reshape group that the axis size divides: the same
    split as Keras's when the sharded dim is the outermost of its group ([d, heads, dh] ->
    [d, heads*dh] with heads split), otherwise a different contiguous split of the same
    weight (numerically the same results)."""
    axes = tuple(axes[p] for p in perm)
    shape = tuple(shape[p] for p in perm)
    if tuple(shape) == tuple(ir_shape):
        return axes, ""
    out: list = [None] * len(ir_shape)
    for gv, gi in _reshape_groups(list(shape), list(ir_shape)):
        sharded = [axes[d] for d in gv if axes[d] is not None]
        if not sharded:
            continue
        if len(sharded) > 1:
            return None, (f"variable dims of sizes {[shape[d] for d in gv]} are sharded over "
                          f"{sharded} but the module holds them as one dim of "
                          f"{[ir_shape[k] for k in gi]}: one dim takes one mesh axis")
        n = mesh_axes.get(sharded[0], 1)
        fit = [k for k in gi if ir_shape[k] % n == 0]
        if not fit:
            return None, (f"no dim of the module's constant among {gi} (sizes "
                          f"{[ir_shape[k] for k in gi]}) divides mesh axis {sharded[0]!r} "
                          f"of size {n}")
        out[fit[0]] = sharded[0]
    return tuple(out), ""


def from_keras_layout_map(layout_map, module: Module, mesh: "Mesh | Mapping[str, int] | None" = None,
                          *, weights: Any = None, batch_dim_name: str | None = "batch"):
    """A tensorforge `LayoutMap` over `module`'s weights from a `keras.distribution.LayoutMap`
    (a user's, or a KerasHub `Backbone.get_layout_map(device_mesh)`), for the module lifted
    from that Keras model.

    Each weight constant is matched to its Keras variable path (see `weight_variables`;
    `weights=` the Keras model verifies paths and is needed when the frontend folded a
    reshape or transpose into the constant: the MHA kernels), the path is looked up in
    `layout_map` exactly as Keras does, and the variable's `TensorLayout.axes` are translated
    to the constant's shape (`_to_ir_axes`). The result has one anchored key per sharded
    weight (`^<tensor name>$`) and, when the mesh has `batch_dim_name`, every graph input
    split on it along dim 0 (what `ModelParallel(batch_dim_name=...)` does to the data).

    `mesh`: the tensorforge mesh; default the layout map's `DeviceMesh` (shape and axis
    names). Raises ShardingError listing every problem: a key that matches no weight (with
    the nearest weight paths), a layout of the wrong rank, an unknown mesh axis, a mesh axis
    that does not divide the dim it shards, two keys matching one path, a layout that
    cannot be expressed on the constant's shape."""
    import difflib
    import re

    from ..passes.shard.layout_map import LayoutMap, layout_problems, node_order, tensor_name
    from ..passes.shard.mesh import ShardingError
    from ..ir.types import Layout

    device_mesh = getattr(layout_map, "device_mesh", None)
    if mesh is None:
        if device_mesh is None:
            raise ShardingError("no mesh", [Diagnostic(
                "the Keras LayoutMap has no device_mesh: pass mesh=ts.Mesh({...})")])
        mesh = Mesh(dict(zip(device_mesh.axis_names, (int(s) for s in device_mesh.shape))))
    elif not isinstance(mesh, Mesh):
        mesh = Mesh(mesh)
    mesh_axes = dict(mesh.axes)
    keras_layouts = {k: tuple(getattr(lay, "axes", lay)) for k, lay in layout_map.items()}
    # Keras looks a path up by exact key, then by regex (fullmatch in Keras 3; search in
    # older versions): asking the map itself keeps its semantics, and the returned layout
    # object says which key matched.
    by_id = {id(lay): k for k, lay in layout_map.items()}

    problems: list[Diagnostic] = []
    order = node_order(module.main)
    out = LayoutMap(mesh)
    used: set[str] = set()
    held = weight_variables(module, weights)
    for v, path, shape, perm in held:
        try:
            found = layout_map[path]
        except ValueError as e:          # Keras: the path matches several keys
            problems.append(Diagnostic(f"variable {path}: {e}"))
            continue
        if found is None:
            continue
        key = by_id.get(id(found), path)
        used.add(key)
        axes = keras_layouts[key]
        where = f"key {key!r} on {path} {list(shape)}"
        if len(axes) != len(shape):
            problems.append(Diagnostic(f"{where}: layout {axes} has {len(axes)} dims but the "
                                       f"weight has rank {len(shape)}"))
            continue
        bad = layout_problems(Layout(axes), mesh)
        if bad:
            problems += [Diagnostic(f"{where}: {p}") for p in bad]
            continue
        indivisible = [f"{where}: dim {d} of size {shape[d]} does not divide mesh axis "
                       f"{a!r} of size {mesh_axes[a]}" for d, a in enumerate(axes)
                       if a is not None and shape[d] % mesh_axes[a]]
        if indivisible:
            problems += [Diagnostic(p) for p in indivisible]
            continue
        if all(a is None for a in axes):
            continue
        ir_axes, why = _to_ir_axes(axes, shape, v.type.shape, perm, mesh_axes)
        if ir_axes is None:
            problems.append(Diagnostic(f"{where}: {why}"))
            continue
        name = tensor_name(v, order)
        out[f"^{re.escape(name)}$"] = Layout(ir_axes)
    paths = sorted({p for _, p, _, _ in held})
    known = set(weight_shapes(weights)) if weights is not None else set(paths)
    for key in keras_layouts:
        if key in used:
            continue
        absent = sorted(p for p in known - set(paths) if p == key or _keras_match(key, p))
        if absent:
            problems.append(Diagnostic(
                f"layout map key {key!r} matches Keras variables that the module has no "
                f"constant for (unused by the traced call): {', '.join(absent[:3])}"))
            continue
        near = difflib.get_close_matches(key, paths, n=3, cutoff=0.3)
        problems.append(Diagnostic(f"layout map key {key!r} matches no weight of the module"
                                   + (f"; nearest: {', '.join(near)}" if near else "")))
    if problems:
        raise ShardingError("cannot import the Keras layout map", problems)
    if batch_dim_name is not None and batch_dim_name in mesh:
        for x in module.main.inputs:
            if x.name and x.type.rank >= 1:
                out.inputs[x.name] = Layout((batch_dim_name,) + (None,) * (x.type.rank - 1))
    return out


def _keras_match(key: str, path: str) -> bool:
    """A key applies to a path the way Keras 3's LayoutMap matches regex keys."""
    import re

    try:
        return re.fullmatch(key, path) is not None
    except re.error:
        return False
