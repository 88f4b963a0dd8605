"""Execution of a layout-annotated IR module with TensorFlow DTensor.

    ensure_cpu_devices(8)                   # before TF initialises its devices (fresh process)
    prog = DTensorProgram(plan)             # plan = tensorforge.sharding.shard(...): its mesh
    outs = prog(x)                          # list of NumPy arrays (gathered, replicated)
    run_dtensor(plan, [x])                  # the same in one call

Every value may carry `value.layout` (per dim a mesh axis name or None, see
`tensorforge.ir.types.Layout`). The program:

- builds a DTensor mesh over the first `mesh.size` logical devices (CPU unless a
  `device_type` is given), axes in the plan's mesh order;
- turns each constant that is big (more than `tf_lowering.VARIABLE_MIN_ELEMENTS` elements) or
  annotated with a layout into a `dtensor.DVariable` with that layout (None -> unsharded);
  smaller unannotated constants stay inline `tf.constant`s (replicated);
- copies each input onto the mesh and relayouts it to the graph input's layout;
- emits the ops with the TF lowering (`tf_lowering.LOWERINGS`, one TF op per IR op) inside one
  `tf.function`; an intermediate value with a layout gets a `dtensor.relayout` to it (the
  DTensor analogue of `with_sharding_constraint`), so the planner's layouts are what runs;
- relayouts every output to replicated and returns it as NumPy.

DTensor's SPMD expander inserts the collectives. Problems (mesh larger than the devices, a
layout naming an unknown axis or the same axis twice, a layout of the wrong rank, a dimension
that does not divide its axis, an op TF cannot lower) are reported together in one
ConversionError before anything runs.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import tensorflow as tf
from tensorflow.experimental import dtensor

from ..ir.errors import ConversionError, Diagnostic
from ..ir.graph import Module, Node, Value
from ..ir.types import Layout
from . import tf_lowering as tfl
from ..passes.shard.mesh import Mesh as ShardMesh
from ..passes.shard.plan import ShardingPlan, module_and_mesh, positional_after_plan
from .common import constant_name

__all__ = ["DTensorProgram", "run_dtensor", "ensure_cpu_devices", "layout_problems",
           "dtensor_layout"]


def ensure_cpu_devices(n: int = 8) -> int:
    """Splits the host CPU into `n` logical devices if TF has not initialised its devices yet;
    returns how many logical CPU devices there are. Must run before any TF op in the process
    (afterwards TF refuses to reconfigure, and the existing count is returned)."""
    cpus = tf.config.list_physical_devices("CPU")
    try:
        tf.config.set_logical_device_configuration(
            cpus[0], [tf.config.LogicalDeviceConfiguration()] * n)
    except RuntimeError:
        pass  # devices already initialised: keep what exists
    return len(tf.config.list_logical_devices("CPU"))


def _value_label(v: Value) -> str:
    return f"%{v.name}" if v.name else constant_name(v)


def _check_layout(v: Value, layout: Layout, mesh_axes: Mapping[str, int],
                  shape=None) -> list[Diagnostic]:
    """Problems of one value's layout against the mesh (rank, unknown/repeated axes, dims
    that do not divide their axis). `shape` overrides the static type shape (actual inputs)."""
    out: list[Diagnostic] = []
    node = v.producer if isinstance(v.producer, Node) else None
    where = dict(node=node.describe(), scope=node.scope, loc=node.loc) if node else {}
    label = _value_label(v)
    shape = list(v.type.shape) if shape is None else list(shape)
    if len(layout.axes) != len(shape):
        out.append(Diagnostic(f"{label}: layout {layout} has {len(layout.axes)} dims but the "
                              f"value has rank {len(shape)}", **where))
        return out
    seen: set[str] = set()
    for d, (axis, size) in enumerate(zip(layout.axes, shape)):
        if axis is None:
            continue
        if axis not in mesh_axes:
            out.append(Diagnostic(f"{label}: dim {d} is sharded over unknown mesh axis "
                                  f"{axis!r} (mesh axes: {', '.join(mesh_axes)})", **where))
            continue
        if axis in seen:
            out.append(Diagnostic(f"{label}: mesh axis {axis!r} shards more than one dim",
                                  **where))
        seen.add(axis)
        if isinstance(size, int) and size % mesh_axes[axis]:
            out.append(Diagnostic(f"{label}: dim {d} of size {size} does not divide mesh axis "
                                  f"{axis!r} of size {mesh_axes[axis]}", **where))
    return out


def layout_problems(module: Module, mesh_axes: Mapping[str, int],
                    input_shapes: Sequence | None = None) -> list[Diagnostic]:
    """Every layout problem of `module.main` against `mesh_axes` (empty when all is well).
    `input_shapes` (actual input shapes) also checks symbolic input dims."""
    graph = module.main
    out: list[Diagnostic] = []
    for a, size in mesh_axes.items():
        if not isinstance(size, int) or size < 1:
            out.append(Diagnostic(f"mesh axis {a!r} has invalid size {size!r}"))
    for i, v in enumerate(graph.inputs):
        if v.layout is not None:
            shape = input_shapes[i] if input_shapes is not None else None
            out += _check_layout(v, v.layout, mesh_axes, shape)
    for node in graph:
        for v in node.outputs:
            if v.layout is not None:
                out += _check_layout(v, v.layout, mesh_axes)
    return out


def dtensor_layout(layout: Layout | None, rank: int, mesh) -> "dtensor.Layout":
    """The dtensor.Layout of an IR layout (None, or a None dim -> unsharded)."""
    if layout is None:
        return dtensor.Layout.replicated(mesh, rank)
    return dtensor.Layout([dtensor.UNSHARDED if a is None else a for a in layout.axes], mesh)


class DTensorProgram:
    """The plan's module compiled for a DTensor mesh (the plan's); call it with NumPy inputs
    (positional, in graph-input order) to get the outputs as NumPy arrays. `plan` may also be
    a layout-annotated Module carrying its mesh in metadata, or given `mesh=`. Raises
    ConversionError listing every problem (devices, layouts, lowering) at construction."""

    def __init__(self, plan: "ShardingPlan | Module", *args,
                 mesh: "ShardMesh | Mapping[str, int] | None" = None, device_type: str = "CPU",
                 mesh_axes=None):
        positional_after_plan("DTensorProgram", args, None, None, "DTensorProgram(plan)",
                              mesh_axes=mesh_axes)
        module, shard_mesh = module_and_mesh(plan, mesh, caller="DTensorProgram")
        self.module = module
        # The plan's all-gathers of an operand, per (consumer, operand index): DTensor's
        # expander does not gather on its own where both operands of a contraction are
        # sharded over different axes (a weight split over "model" and "batch" meeting
        # batch-sharded activations), so the program relayouts the operand as planned.
        self.gathers: dict[tuple[int, int], set[int]] = {}
        for c in getattr(plan, "collectives", ()):
            if c.kind == "all_gather" and c.operand is not None and c.dim is not None:
                self.gathers.setdefault((id(c.node), c.operand), set()).add(c.dim)
        self.mesh_axes = dict(shard_mesh.axes)
        graph = module.main
        problems = layout_problems(module, self.mesh_axes)
        ndev = shard_mesh.size
        have = len(tf.config.list_logical_devices(device_type))
        if ndev > have:
            problems.insert(0, Diagnostic(
                f"mesh {self.mesh_axes} needs {ndev} {device_type} devices but TensorFlow has "
                f"{have} (call ensure_cpu_devices({ndev}) before TensorFlow initialises)"))
        lower_problems, used = tfl._dry_run(module)
        problems += lower_problems
        # DTensor's layout propagation crashes the process on functional While/If (TF 2.20):
        # refuse them here, with the way around.
        problems += [Diagnostic(f"{n.op} (control flow) cannot run under DTensor; run the plan "
                                f"with the JAX executor (compile_sharded) instead",
                                node=n.describe(), scope=n.scope, loc=n.loc)
                     for n in graph if n.regions]
        if problems:
            raise ConversionError("cannot run the module with DTensor", problems)
        self.mesh = dtensor.create_mesh(list(self.mesh_axes.items()), device_type=device_type)
        self.variables = self._make_variables(used)
        self.input_layouts = [dtensor_layout(v.layout, len(v.type.shape), self.mesh)
                              for v in graph.inputs]
        self._fn = tf.function(self._call, autograph=False)

    def _make_variables(self, used: set) -> dict[int, "dtensor.DVariable"]:
        """id(constant) -> DVariable with the constant's layout, for each big or annotated
        constant a lowering reads as a tensor (names as in the SavedModel backend)."""
        out: dict[int, dtensor.DVariable] = {}
        self.variable_names: dict[str, int] = {}
        taken: dict[str, int] = {}
        for node in self.module.main:
            if node.op != "constant":
                continue
            v = node.outputs[0]
            arr = np.asarray(v.const)
            if id(v) not in used or (arr.size <= tfl.VARIABLE_MIN_ELEMENTS and v.layout is None):
                continue
            base = tfl.sanitize(constant_name(v))
            n = taken.get(base, 0)
            taken[base] = n + 1
            vname = base if n == 0 else f"{base}_{n}"
            layout = dtensor_layout(v.layout, arr.ndim, self.mesh)
            init = tf.constant(tfl._storage_array(arr, v.type.dtype),
                               dtype=tfl._tf_dtype(v.type.dtype))
            init = dtensor.relayout(
                dtensor.copy_to_mesh(init, dtensor.Layout.replicated(self.mesh, arr.ndim)),
                layout)
            out[id(v)] = dtensor.DVariable(init, trainable=False, name=vname)
            self.variable_names[vname] = id(v)
        return out

    def variable(self, name: str) -> "dtensor.DVariable":
        """The DVariable of the constant named `name` (tf_lowering naming, e.g.
        `encoder_0_ff1/kernel`, `encoder_0_mha/query/b`)."""
        return self.variables[self.variable_names[name]]

    def shard_shapes(self, name: str) -> list[tuple[int, ...]]:
        """The per-device shapes of variable `name`'s shards, in mesh device order."""
        return [tuple(t.shape) for t in dtensor.unpack(self.variable(name).read_value())]

    def _call(self, *args):
        cx = tfl._Ctx(self.variables, None)
        graph = self.module.main
        for v, t in zip(graph.inputs, args):
            cx.env[id(v)] = t
        out_ids = {id(v) for v in graph.outputs}
        with dtensor.default_mesh(self.mesh):
            for node in graph:
                if node.op == "constant":
                    continue  # read (variable or inline constant) where used
                saved = self._gather_operands(cx, node)
                with tf.name_scope(tfl.sanitize(node.scope)) if node.scope else tfl._null():
                    results = tfl.LOWERINGS[node.op](cx, node)
                for key, t in saved.items():   # other consumers see the value as it was
                    if t is None:
                        cx.env.pop(key, None)
                    else:
                        cx.env[key] = t
                for v, t in zip(node.outputs, results):
                    # The planner's layout for an intermediate pins DTensor's choice.
                    if v.layout is not None and id(v) not in out_ids:
                        t = dtensor.relayout(t, dtensor_layout(v.layout, t.shape.rank,
                                                               self.mesh))
                    cx.env[id(v)] = t
            outs = [cx.x(v) for v in graph.outputs]
            return [dtensor.relayout(t, dtensor.Layout.replicated(self.mesh, t.shape.rank))
                    for t in outs]

    def _gather_operands(self, cx, node: Node) -> dict:
        """Relayouts the operands of `node` that the plan all-gathers (`self.gathers`) into
        `cx.env` for this node's lowering; returns what to restore afterwards."""
        saved = {}
        for i, v in enumerate(node.inputs):
            dims = self.gathers.get((id(node), i))
            if not dims or v.layout is None:
                continue
            t = cx.x(v)
            saved[id(v)] = cx.env.get(id(v))
            axes = [None if d in dims else a for d, a in enumerate(v.layout.axes)]
            cx.env[id(v)] = dtensor.relayout(t, dtensor_layout(Layout(tuple(axes)),
                                                               t.shape.rank, self.mesh))
        return saved

    def place_inputs(self, inputs: Sequence) -> list[tf.Tensor]:
        """The inputs as DTensors on the mesh with the graph inputs' layouts."""
        graph = self.module.main
        if len(inputs) != len(graph.inputs):
            raise ConversionError("wrong number of inputs", [Diagnostic(
                f"the graph has {len(graph.inputs)} inputs, got {len(inputs)}")])
        arrays = [np.asarray(x) for x in inputs]
        problems = []
        for i, (v, a) in enumerate(zip(graph.inputs, arrays)):
            if v.layout is not None:
                problems += _check_layout(v, v.layout, self.mesh_axes, a.shape)
        if problems:
            raise ConversionError("inputs do not fit their layouts", problems)
        out = []
        for v, a, layout in zip(graph.inputs, arrays, self.input_layouts):
            t = tf.constant(a, dtype=tfl._tf_dtype(v.type.dtype))
            t = dtensor.copy_to_mesh(t, dtensor.Layout.replicated(self.mesh, a.ndim))
            out.append(dtensor.relayout(t, layout))
        return out

    def __call__(self, *inputs) -> list[np.ndarray]:
        """Runs the program; returns every graph output as a (gathered) NumPy array."""
        outs = self._fn(*self.place_inputs(inputs))
        # Replicated: every device holds the whole tensor, the first component is it.
        return [dtensor.unpack(t)[0].numpy() for t in outs]


def run_dtensor(plan: "ShardingPlan | Module", *args, inputs: Sequence | None = None,
                mesh: "ShardMesh | Mapping[str, int] | None" = None,
                device_type: str = "CPU", mesh_axes=None) -> list[np.ndarray]:
    """Runs the plan's module on a DTensor mesh (the plan's) with weights and inputs laid out
    per their `value.layout`; returns the outputs as NumPy arrays. `plan` may also be a
    layout-annotated Module carrying its mesh in metadata, or given `mesh=`. On CPU, call
    `ensure_cpu_devices(n)` first (before TensorFlow initialises), e.g. in a fresh process."""
    inputs = positional_after_plan("run_dtensor", args, inputs, "inputs",
                                   "run_dtensor(plan, [inputs...])", mesh_axes=mesh_axes)
    return DTensorProgram(plan, mesh=mesh, device_type=device_type)(*(inputs or ()))
