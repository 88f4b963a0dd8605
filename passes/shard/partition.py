"""`partition`: the per-device (SPMD) program of a `ShardingPlan`, and `run_partitioned`,
which runs it device by device with `ir.spmd.run_spmd` and reassembles the outputs.

The local program is built node by node from the plan's global view:

- types: every value gets its local shard type (a dim split over mesh axis `a` is divided by
  the axis size; symbolic dims stay symbolic, the program is run with the local batch);
- graph inputs: the global inputs (in order, at their local shapes), then one input per
  sharded constant (constants differ per device, so the caller feeds each device its shard),
  then, only where needed, one int32 scalar per mesh axis holding the device's coordinate
  along it (masked vocab-parallel lookups and local slices of replicated operands need their
  offset). `PartitionInfo.inputs` says what each local input is;
- operands: each operand is brought from its value's layout to the layout the plan says its
  consumer reads (`plan.operand_layout`): an `all_gather` per dim whose axis differs (shared
  between consumers, like the plan's record), then a local slice where the consumer reads
  a split the value does not have (free: no communication);
- partial results: an `all_reduce` right after the node the plan names, before any bias or
  activation a matmul fuses (those are split off and applied after the reduction); a
  reduce_mean over a split dim reduces with `mean` (equal shards make the mean of local
  means the global mean);
- attrs that encode global sizes are rewritten for local shapes (reshape / broadcast_to
  target shapes, slice sizes), and every node's inferred local type is checked against the
  type its layout implies, so an op whose attrs were not adapted fails loudly;
- a gather from a table split on the gathered dim becomes a masked lookup: local ids =
  ids - offset, ids outside this device's rows read row 0 and are zeroed, and the plan's
  all_reduce sums the rows over the axis.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from ...ir.errors import Diagnostic
from ...ir.graph import Graph, Module, Node, Value
from ...ir.ops import get_op
from ...ir.spmd import run_spmd, shard_array, unshard
from ...ir.types import DType, Layout, TensorType
from .mesh import Mesh, ShardingError
from .plan import Collective, ShardingPlan

# Fused matmul/conv activations the partitioner can re-emit as separate ops after an
# all_reduce (the registry has a unary op of each name).
_SPLITTABLE_ACTIVATIONS = {"relu", "relu6", "tanh"}


@dataclass(frozen=True)
class LocalInput:
    """One graph input of the local program.

    kind:   "input" (a global graph input, sharded by `layout`), "constant" (a sharded
            constant of the plan's module: feed `shard_array(value.const, layout)`), or
            "coord" (int32 scalar: the device's coordinate along mesh axis `axis`)
    value:  the value of `plan.module` it stands for (None for "coord")
    """

    kind: str
    value: Value | None
    layout: Layout | None
    axis: str | None = None


@dataclass
class PartitionInfo:
    """What `partition` produced besides the local module: the mesh, what every local graph
    input is (in local-input order), and each global output's layout."""

    mesh: Mesh
    inputs: list[LocalInput] = field(default_factory=list)
    output_layouts: list[Layout] = field(default_factory=list)

    def device_inputs(self, inputs: Sequence[np.ndarray]) -> list[list[np.ndarray]]:
        """Every device's local-program inputs from the global inputs (in global graph-input
        order): inputs and constants sharded per layout, coordinates filled in."""
        axes = self.mesh.axes
        n_dev = self.mesh.size
        per_dev: list[list[np.ndarray]] = [[] for _ in range(n_dev)]
        k = 0
        for li in self.inputs:
            if li.kind == "coord":
                for d in range(n_dev):
                    per_dev[d].append(np.asarray(self.mesh.coords(d)[li.axis], np.int32))
                continue
            if li.kind == "input":
                arr = np.asarray(inputs[k])
                k += 1
            else:
                arr = np.asarray(li.value.const)
            for d, s in enumerate(shard_array(arr, li.layout, axes)):
                per_dev[d].append(s)
        return per_dev


def local_shape(shape, layout: Layout | None, mesh: Mesh) -> tuple:
    """The per-device shape of a global shape under `layout` (symbolic dims stay)."""
    axes = layout.axes if layout is not None else (None,) * len(shape)
    return tuple(d // mesh[a] if a is not None and isinstance(d, int) else d
                 for d, a in zip(shape, axes))


def local_type(t: TensorType, layout: Layout | None, mesh: Mesh) -> TensorType:
    """The per-device type of a global type under `layout`."""
    return t.with_shape(local_shape(t.shape, layout, mesh))


def _axes(v: Value) -> tuple:
    return v.layout.axes if v.layout is not None else (None,) * v.type.rank


def _fits(inferred: TensorType, expected: TensorType) -> bool:
    """Static dims equal; a symbolic/unknown inferred dim accepts any expected dim."""
    if inferred.dtype != expected.dtype or inferred.rank != expected.rank:
        return False
    return all(a == b or isinstance(a, str) or isinstance(b, str)
               for a, b in zip(inferred.shape, expected.shape))


class _Partitioner:
    def __init__(self, plan: ShardingPlan):
        self.plan = plan
        self.mesh = plan.mesh
        self.src = plan.module.main
        self.g = Graph(self.src.name)
        self.info = PartitionInfo(plan.mesh)
        # (id(global value), layout axes) -> local value holding it in that layout
        self.local: dict[tuple, Value] = {}
        self.coords: dict[str, Value] = {}
        self.problems: list[Diagnostic] = []
        self.reduces: dict[int, list[Collective]] = {}
        for c in plan.collectives:
            if c.kind == "all_reduce":
                self.reduces.setdefault(id(c.node), []).append(c)
            elif c.kind != "all_gather":
                self.problems.append(Diagnostic(
                    f"the plan lists a {c.kind}, which partition does not implement",
                    node=c.node.describe(), scope=c.scope))

    # -- helpers -------------------------------------------------------------------------
    def add(self, op: str, inputs, attrs=None, scope: str = "", loc: str = "") -> Value:
        return self.g.add(op, inputs, attrs or {}, scope=scope, loc=loc).output

    def const(self, array, scope: str = "") -> Value:
        return self.g.constant(np.asarray(array), scope=scope)

    def coord(self, axis: str) -> Value:
        """The device's coordinate along `axis` (an extra int32 scalar input)."""
        if axis not in self.coords:
            v = self.g.add_input(TensorType(DType.i32, ()), f"__coord_{axis}")
            self.coords[axis] = v
            self.info.inputs.append(LocalInput("coord", None, None, axis))
        return self.coords[axis]

    def offset(self, axis: str, block: int, scope: str) -> Value:
        """coord(axis) * block: the first global index this device holds along a dim split
        into blocks of `block` over `axis`."""
        return self.add("mul", [self.coord(axis), self.const(np.int32(block), scope)],
                        scope=scope)

    def collective(self, op: str, x: Value, attrs: dict, scope: str) -> Value:
        axis = attrs["axis"]
        return self.add(op, [x], {**attrs, "axis_size": self.mesh[axis]}, scope=scope)

    # -- operands ------------------------------------------------------------------------
    def operand(self, node: Node, i: int) -> Value:
        """Operand i of `node` (global) as a local value in the layout the node reads it in:
        all_gathers where the value's split differs (mirroring the plan's record: one per
        dim, shared between consumers), then local slices where the consumer reads a split
        the value does not have."""
        v = node.inputs[i]
        cur = list(_axes(v))
        layouts = self.plan.operand_layouts.get(id(node))
        target = list(layouts[i].axes) if layouts and layouts[i] is not None else list(cur)
        x = self.local[(id(v), tuple(cur))]
        for d, (c, t) in enumerate(zip(list(cur), target)):
            if c is None or c == t:
                continue
            cur[d] = None
            key = (id(v), tuple(cur))
            if key not in self.local:
                self.local[key] = self.collective("all_gather", x, {"axis": c, "dim": d},
                                                  node.scope)
                self.local[key].layout = Layout(tuple(cur))
            x = self.local[key]
        for d, (c, t) in enumerate(zip(list(cur), target)):
            if c == t:
                continue
            cur[d] = t
            key = (id(v), tuple(cur))
            if key not in self.local:
                self.local[key] = self.local_slice(x, d, t, v.type.shape[d], node.scope)
                self.local[key].layout = Layout(tuple(cur))
            x = self.local[key]
        return x

    def local_slice(self, x: Value, dim: int, axis: str, size, scope: str) -> Value:
        """This device's block of dim `dim` of a replicated local value (no communication):
        a gather of indices coord * block + arange(block)."""
        if not isinstance(size, int):
            raise ShardingError("cannot partition", [Diagnostic(
                f"a local slice of symbolic dim {size!r} over mesh axis '{axis}' (the shard "
                "size is only known at run time)", scope=scope)])
        block = size // self.mesh[axis]
        idx = self.add("add", [self.const(np.arange(block, dtype=np.int32), scope),
                               self.offset(axis, block, scope)], scope=scope)
        return self.add("gather", [x, idx], {"axis": dim}, scope=scope)

    # -- nodes ---------------------------------------------------------------------------
    def run(self) -> tuple[Module, PartitionInfo]:
        for v in self.src.inputs:
            lv = self.g.add_input(local_type(v.type, v.layout, self.mesh), v.name, v.quant,
                                  v.layout)
            self.local[(id(v), _axes(v))] = lv
            self.info.inputs.append(LocalInput("input", v, Layout(_axes(v))))
        for node in self.src:
            try:
                self.node(node)
            except ShardingError as e:
                self.problems.extend(e.diagnostics)
                if len(self.problems) > 50:
                    break
        if self.problems:
            raise ShardingError("cannot partition the module on mesh "
                                f"{self.mesh.axes}", self.problems)
        outs = []
        for v in self.src.outputs:
            outs.append(self.local[(id(v), _axes(v))])
            self.info.output_layouts.append(Layout(_axes(v)))
        self.g.set_outputs(outs)
        return Module([self.g], dict(getattr(self.plan.module, "metadata", {}) or {})), self.info

    def node(self, node: Node) -> None:
        out = node.outputs[0] if node.outputs else None
        if node.op == "constant":
            if any(a is not None for a in _axes(out)):
                lv = self.g.add_input(local_type(out.type, out.layout, self.mesh),
                                      out.name or f"__param_{len(self.info.inputs)}")
                self.info.inputs.append(LocalInput("constant", out, Layout(_axes(out))))
            else:
                lv = self.g.constant(out.const, out.name, scope=node.scope, loc=node.loc)
            self.local[(id(out), _axes(out))] = lv
            return
        ins = [self.operand(node, i) for i in range(len(node.inputs))]
        reduces = self.reduces.get(id(node), [])
        attrs = dict(node.attrs)
        if node.op == "gather" and self.gather_split(node):
            results = [self.masked_gather(node, ins)]
        else:
            post = []   # (op, extra operand) applied after the all_reduces
            if reduces and node.op in ("matmul", "conv2d", "depthwise_conv2d"):
                if len(ins) > 2:
                    post.append(("add", ins[2]))
                    ins = ins[:2]
                act = attrs.get("activation", "none")
                if act != "none":
                    if act not in _SPLITTABLE_ACTIVATIONS:
                        raise ShardingError("cannot partition", [Diagnostic(
                            f"fused activation {act!r} after a partial {node.op}",
                            node=node.describe(), scope=node.scope)])
                    post.append((act, None))
                    attrs["activation"] = "none"
            attrs = self.local_attrs(node, attrs)
            try:
                new = self.g.add(node.op, ins, attrs, scope=node.scope, loc=node.loc,
                                 names=[o.name for o in node.outputs])
            except Exception as e:  # inference errors: report them with the node
                raise ShardingError("cannot partition", [Diagnostic(
                    f"local {node.op} does not type-check: {e}", node=node.describe(),
                    scope=node.scope)]) from e
            results = list(new.outputs)
            if reduces:
                (r,) = results
                for c in reduces:
                    kind = "mean" if node.op == "reduce_mean" else c.reduce_op
                    if kind not in ("sum", "max", "min", "mean"):
                        raise ShardingError("cannot partition", [Diagnostic(
                            f"all_reduce '{kind}' has no collective op", node=node.describe(),
                            scope=node.scope)])
                    r = self.collective("all_reduce", r, {"axis": c.axis, "reduce": kind},
                                        node.scope)
                for op, extra in post:
                    r = self.add(op, [r] + ([extra] if extra is not None else []),
                                 scope=node.scope)
                results = [r]
        if node.op == "gather" and self.gather_split(node) and reduces:
            r = results[0]
            for c in reduces:
                r = self.collective("all_reduce", r, {"axis": c.axis, "reduce": "sum"},
                                    node.scope)
            results = [r]
        for o, r in zip(node.outputs, results):
            want = local_type(o.type, o.layout, self.mesh)
            if not _fits(r.type, want):
                raise ShardingError("cannot partition", [Diagnostic(
                    f"local result is {r.type}, expected {want} (global {o.type} laid out "
                    f"({o.layout})): an attribute encodes a global size", node=node.describe(),
                    scope=node.scope)])
            r.type = want
            r.layout = o.layout
            self.local[(id(o), _axes(o))] = r

    def local_attrs(self, node: Node, attrs: dict) -> dict:
        """Attrs naming global sizes, rewritten for the local shapes."""
        out = node.outputs[0] if node.outputs else None
        if node.op in ("reshape", "broadcast_to"):
            shape = list(local_shape(out.type.shape, out.layout, self.mesh))
            if node.op == "reshape":
                syms = [d for d in shape if not isinstance(d, int)]
                if len(syms) > 1:
                    raise ShardingError("cannot partition", [Diagnostic(
                        f"reshape to {out.type} has several symbolic dims",
                        node=node.describe(), scope=node.scope)])
                attrs["shape"] = tuple(-1 if not isinstance(d, int) else d for d in shape)
            elif all(isinstance(d, int) for d in shape):
                attrs["shape"] = tuple(shape)
        elif node.op == "slice":
            lx = self.plan.operand_layout(node, 0).axes
            attrs["size"] = tuple(
                s if s == -1 or a is None else s // self.mesh[a]
                for s, a in zip(attrs["size"], lx))
        return attrs

    def gather_split(self, node: Node) -> str | None:
        """The axis the table of a gather is split over on its gathered dim, if any."""
        params = node.inputs[0]
        ax = node.attrs.get("axis", 0) % params.type.rank
        return self.plan.operand_layout(node, 0).axes[ax]

    def masked_gather(self, node: Node, ins: list[Value]) -> Value:
        """Vocab-parallel lookup: each device holds rows [off, off + block) of the table;
        ids outside them read local row 0 and are zeroed, so the all_reduce that follows
        sums exactly one real row per id."""
        table, ids = ins
        params = node.inputs[0]
        ax = node.attrs.get("axis", 0) % params.type.rank
        axis = self.gather_split(node)
        block = params.type.shape[ax] // self.mesh[axis]
        s = node.scope
        it = ids.type.dtype
        off = self.offset(axis, block, s)
        if it != DType.i32:
            off = self.add("cast", [off], {"to": it}, scope=s)
        local_ids = self.add("sub", [ids, off], scope=s)
        inside = self.add("logical_and", [
            self.add("greater_equal", [local_ids, self.const(np.zeros((), it.np), s)], scope=s),
            self.add("less", [local_ids, self.const(np.asarray(block, it.np), s)], scope=s)],
            scope=s)
        safe = self.add("where", [inside, local_ids, self.const(np.zeros((), it.np), s)],
                        scope=s)
        rows = self.g.add("gather", [table, safe], dict(node.attrs), scope=s, loc=node.loc,
                          names=[node.outputs[0].name]).output
        # the mask has the ids' dims; give it size-1 dims where the table's other dims sit
        mask = inside
        for d in range(ax):
            mask = self.add("expand_dims", [mask], {"axis": d}, scope=s)
        for _ in range(params.type.rank - ax - 1):
            mask = self.add("expand_dims", [mask], {"axis": -1}, scope=s)
        zero = self.const(np.zeros((), rows.type.dtype.np), s)
        return self.add("where", [mask, rows, zero], scope=s)


def partition(plan: ShardingPlan) -> tuple[Module, PartitionInfo]:
    """The per-device SPMD program of `plan` (its module's main graph) and a `PartitionInfo`
    saying what each local graph input is. See the module doc for the rewrite. Raises
    ShardingError listing every node that cannot be partitioned."""
    return _Partitioner(plan).run()


def count_collectives(graph: Graph) -> dict[tuple[str, str], int]:
    """(op, mesh axis) -> number of collective ops in a (local) graph."""
    out: dict[tuple[str, str], int] = {}
    for n in graph:
        if "collective" in get_op(n.op).traits:
            key = (n.op, n.attrs["axis"])
            out[key] = out.get(key, 0) + 1
    return out


def run_partitioned(plan: ShardingPlan, inputs: Sequence | Mapping,
                    partitioned: tuple[Module, PartitionInfo] | None = None
                    ) -> list[np.ndarray]:
    """Runs `plan`'s module as its SPMD program: shards `inputs` (global arrays, a list in
    graph-input order or a dict by name) and the sharded constants per the plan, runs every
    device with `ir.spmd.run_spmd`, and reassembles each output from its shards (replicas
    must agree). `partitioned` reuses an earlier `partition(plan)`."""
    local, info = partitioned if partitioned is not None else partition(plan)
    if isinstance(inputs, Mapping):
        inputs = [inputs[v.name] for v in plan.module.main.inputs]
    per_dev = info.device_inputs(list(inputs))
    outs = run_spmd(local.main, plan.mesh.axes, per_dev)
    return [unshard([o[i] for o in outs], layout, plan.mesh.axes)
            for i, layout in enumerate(info.output_layouts)]
