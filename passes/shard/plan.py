"""`ShardingPlan`: the result of `shard` — a clone of the module whose every value carries a
global-view `Layout`, the collectives the program needs, and per-device memory and
communication accounting.

Byte counts are per device. S is the per-device size of a tensor (its full size divided by
the sizes of the mesh axes it is split over) and n the size of the mesh axis communicated
over. Ring algorithms:

- all_reduce      2 * (n - 1) / n * S   (S: the reduced tensor on each device)
- all_gather          (n - 1) / n * S_full   (S_full: the per-device size after gathering)
- reduce_scatter      (n - 1) / n * S   (S: the per-device input, before scattering)
- all_to_all          (n - 1) / n * S

Symbolic dims are evaluated at `batch` (or at `dims[name]` when given), so with the default
batch=1 a batch-sharded tensor counts a fractional 1/n of a row.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from ...ir.errors import Diagnostic
from ...ir.graph import Module, Node, Value
from ...ir.types import Layout, TensorType
from .mesh import Mesh, ShardingError, parse_mesh


@dataclass(frozen=True, eq=False)
class Collective:
    """One collective the sharded program needs.

    kind:    all_reduce | all_gather | reduce_scatter | all_to_all
    axis:    the mesh axis it communicates over
    value:   the tensor communicated (a value of `plan.module`)
    node:    for an all_reduce, the node whose local result is partial (reduce right after
             it, before any bias/activation the node fuses); otherwise the consumer that
             needs `value` gathered (operand `operand`)
    operand: consumer operand index, None for an all_reduce of the node's result
    dim:     the tensor dim gathered (all_gather), None otherwise
    reduce_op: sum | max | min | prod (all_reduce)
    """

    kind: str
    axis: str
    value: Value
    node: Node
    bytes_per_device: float
    scope: str
    operand: int | None = None
    dim: int | None = None
    reduce_op: str = "sum"
    reason: str = ""

    def __str__(self) -> str:
        what = f"{self.kind} over '{self.axis}'"
        if self.kind == "all_reduce":
            what += f" ({self.reduce_op})"
        if self.dim is not None:
            what += f" dim {self.dim}"
        v = self.value
        if v.name:
            name = f"%{v.name}"
        elif v.producer is not None:
            name = f"the {v.producer.op} result"
        else:
            name = "an input"
        layout = f" ({v.layout})" if v.layout is not None else ""
        return (f"{what} of {name} {v.type}{layout}: {format_bytes(self.bytes_per_device)}"
                f"/device{' — ' + self.reason if self.reason else ''}")


def format_bytes(n: float) -> str:
    """`1.5 KiB`-style sizes (fractions kept for symbolic dims evaluated at small sizes)."""
    if abs(n) < 1024:
        return f"{n:.6g} B"
    for unit in ("KiB", "MiB", "GiB"):
        n /= 1024
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}"
    return f"{n:.1f} GiB"


def dim_size(d, dims: dict[str, int], batch: int) -> int:
    return d if isinstance(d, int) else dims.get(d, batch)


def full_bytes(t: TensorType, dims: dict[str, int], batch: int) -> float:
    n = 1
    for d in t.shape:
        n *= dim_size(d, dims, batch)
    return n * t.dtype.bits / 8


def shard_factor(layout: Layout | None, mesh: Mesh) -> int:
    """How many pieces a layout splits a tensor into."""
    f = 1
    for a in (layout.axes if layout is not None else ()):
        if a is not None:
            f *= mesh[a]
    return f


def collective_bytes(kind: str, n: int, s: float) -> float:
    """Per-device bytes sent by a ring collective over n devices (see the module doc)."""
    if n <= 1:
        return 0.0
    if kind == "all_reduce":
        return 2 * (n - 1) / n * s
    return (n - 1) / n * s


@dataclass
class ShardingPlan:
    """What `shard` produced. `module` is a clone of the input with `value.layout` set on
    every value; `collectives` are in program order."""

    module: Module
    mesh: Mesh
    collectives: list[Collective]
    batch: int = 1
    dims: dict[str, int] = field(default_factory=dict)
    # id(node) -> the layout each operand is consumed in (after the gathers recorded for it;
    # a sharded target dim of a replicated operand is a free local slice).
    operand_layouts: dict[int, tuple[Layout, ...]] = field(default_factory=dict)
    # id(value of the original module) -> the value of `module`
    value_map: dict[int, Value] = field(default_factory=dict)

    # -- lookups ---------------------------------------------------------------------------
    def value(self, value: Value | str) -> Value:
        """The value of `plan.module` for a value of either module or a value/tensor name."""
        if isinstance(value, Value):
            if id(value) in self.value_map:
                return self.value_map[id(value)]
            return value
        from .layout_map import node_order, tensor_name

        g = self.module.main
        order = node_order(g)
        for v in self._values():
            if v.name == value or tensor_name(v, order) == value:
                return v
        raise KeyError(f"no value named {value!r} in the plan's module")

    def layout_of(self, value: Value | str) -> Layout:
        """The global-view layout of a value (of the original or the planned module, or by
        name)."""
        v = self.value(value)
        return v.layout if v.layout is not None else Layout((None,) * v.type.rank)

    def operand_layout(self, node: Node, index: int) -> Layout:
        """The layout operand `index` of `node` (a node of `plan.module`) is consumed in."""
        return self.operand_layouts[id(node)][index]

    def partial_axes(self, value: Value) -> tuple[str, ...]:
        """Mesh axes over which the local result of `value`'s producer is a partial sum (or
        max/min/prod); the plan all_reduces it right after that node."""
        v = self.value(value)
        return tuple(c.axis for c in self.collectives
                     if c.kind == "all_reduce" and c.value is v)

    def _values(self):
        g = self.module.main
        yield from g.inputs
        for n in g:
            yield from n.outputs

    # -- accounting ------------------------------------------------------------------------
    def bytes_per_device(self, value: Value) -> float:
        """Per-device bytes of a value under its layout."""
        v = self.value(value)
        return full_bytes(v.type, self.dims, self.batch) / shard_factor(v.layout, self.mesh)

    def parameters(self) -> list[tuple[Value, str]]:
        """(constant value, its layer scope): the producer's scope, else its first user's."""
        out = []
        for n in self.module.main:
            if n.op != "constant":
                continue
            v = n.output
            scope = n.scope or next((u.scope for u in v.users if u.scope), "")
            out.append((v, scope))
        return out

    def parameter_bytes_per_device(self, scope: str | None = None) -> float:
        """Bytes of constants each device holds (all, or those of layers whose scope starts
        with `scope`)."""
        return sum(self.bytes_per_device(v) for v, s in self.parameters()
                   if scope is None or s.startswith(scope))

    def parameter_bytes(self, scope: str | None = None) -> float:
        """Unsharded bytes of the same constants."""
        return sum(full_bytes(v.type, self.dims, self.batch) for v, s in self.parameters()
                   if scope is None or s.startswith(scope))

    def total_collective_bytes(self) -> float:
        """Per-device bytes communicated by one forward pass."""
        return sum(c.bytes_per_device for c in self.collectives)

    def backward_collectives(self) -> list[Collective]:
        """The collectives the backward pass of a training step adds (all sums):

        - Megatron's conjugate of each forward all_reduce: an activation replicated over a
          mesh axis that feeds column-parallel matmuls (weight split on that axis along its
          output dim) gets a gradient that is partial over the axis: one all_reduce of its
          gradient per such activation (Q, K and V share theirs; XLA combines them).
        - data parallelism: parameter gradients are partial over every mesh axis that
          splits a graph input's batch dim and along which the parameter is replicated: one
          all_reduce over that axis carrying all of them (XLA combines them into one).
        Forward all_reduces need nothing backward (their gradient is already replicated)."""
        out: list[Collective] = []
        seen: set[tuple[int, str]] = set()
        for node in self.module.main:
            if node.op != "matmul" or len(node.inputs) < 2 or node.inputs[1].const is None:
                continue
            a, w = node.inputs[:2]
            wl = self.layout_of(w).axes
            out_dim = w.type.rank - (2 if node.attrs.get("transpose_b") else 1)
            axis = wl[out_dim] if wl else None
            if axis is None or axis in self.operand_layout(node, 0).axes:
                continue
            if (id(a), axis) in seen:
                continue
            seen.add((id(a), axis))
            out.append(Collective("all_reduce", axis, a, node, collective_bytes(
                "all_reduce", self.mesh[axis], self.bytes_per_device(a)), node.scope,
                reason="gradient of a column-parallel matmul's input (Megatron's f operator)"))
        batch_axes = {layout.axes[0] for v in self.module.main.inputs
                      for layout in [self.layout_of(v)] if layout.axes and layout.axes[0]}
        params = [v for v, _ in self.parameters() if v.type.dtype.is_float]
        for axis in sorted(batch_axes):
            grads = [v for v in params if axis not in self.layout_of(v).axes]
            if grads:
                size = sum(self.bytes_per_device(v) for v in grads)
                out.append(Collective("all_reduce", axis, grads[0], grads[0].producer,
                                      collective_bytes("all_reduce", self.mesh[axis], size),
                                      "", reason=f"data-parallel gradients of {len(grads)} "
                                                 f"parameters, combined"))
        return out

    def training_collectives(self) -> list[Collective]:
        """Forward plus backward collectives of one training step."""
        return [*self.collectives, *self.backward_collectives()]

    def collectives_in(self, scope: str) -> list[Collective]:
        """Collectives of layers whose scope starts with `scope`."""
        return [c for c in self.collectives if c.scope.startswith(scope)]

    # -- report ----------------------------------------------------------------------------
    def report(self, depth: int | None = None) -> str:
        """A per-layer table: per-device / total parameter bytes, then each collective (kind,
        mesh axis, bytes per device). `depth` groups scopes by their first `depth` path
        components (`depth=1`: `encoder_0_mha/query` counts under `encoder_0_mha`)."""
        def group(scope: str) -> str:
            if not scope:
                return "(no scope)"
            return "/".join(scope.split("/")[:depth]) if depth else scope

        order: list[str] = []
        params: dict[str, list[float]] = {}
        colls: dict[str, list[Collective]] = {}

        def touch(key):
            if key not in params:
                order.append(key)
                params[key] = [0.0, 0.0]
                colls[key] = []

        for n in self.module.main:
            touch(group(n.scope))
        for v, s in self.parameters():
            key = group(s)
            touch(key)
            params[key][0] += self.bytes_per_device(v)
            params[key][1] += full_bytes(v.type, self.dims, self.batch)
        for c in self.collectives:
            key = group(c.scope)
            touch(key)
            colls[key].append(c)
        axes = ", ".join(f"{k}: {s}" for k, s in self.mesh.axes.items())
        sym = f"batch={self.batch}" + "".join(f", {k}={v}" for k, v in self.dims.items())
        lines = [f"sharding plan on mesh {{{axes}}} ({self.mesh.size} devices), symbolic dims "
                 f"at {sym}",
                 f"{'layer':<40} {'params/device':>14} {'params total':>14} {'comm/device':>14}"]
        for key in order:
            p_dev, p_all = params[key]
            cs = colls[key]
            if not p_all and not cs:
                continue
            comm = sum(c.bytes_per_device for c in cs)
            lines.append(f"{key:<40} {format_bytes(p_dev):>14} {format_bytes(p_all):>14} "
                         f"{format_bytes(comm):>14}")
            for c in cs:
                lines.append(f"    {c}")
        total_p = self.parameter_bytes_per_device()
        all_p = self.parameter_bytes()
        lines.append(f"total: parameters {format_bytes(total_p)}/device of {format_bytes(all_p)}"
                     f" ({100 * total_p / all_p if all_p else 0:.1f}%), {len(self.collectives)} "
                     f"collectives, {format_bytes(self.total_collective_bytes())}/device "
                     "communicated per forward pass")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.report()


def module_and_mesh(source: "ShardingPlan | Module", mesh: "Mesh | Mapping[str, int] | None" = None,
                    *, caller: str) -> tuple[Module, Mesh]:
    """The layout-annotated module and the mesh it runs on, for the execution entry points
    (`compile_sharded`, `run_sharded`, `run_dtensor`, `DTensorProgram`).

    A `ShardingPlan` carries both. A bare Module is accepted when it carries its mesh in its
    metadata (`mesh = "batch=2,model=4"`, written by the `shard-propagate` pass) or when
    `mesh=` is given (a module annotated by hand or by other tools). `mesh=` given with a plan
    must agree with the plan's mesh."""
    if isinstance(mesh, Mapping):
        mesh = Mesh(mesh)
    if isinstance(source, ShardingPlan):
        if mesh is not None and mesh != source.mesh:
            raise ShardingError(f"{caller}: mesh {mesh} differs from the plan's", [Diagnostic(
                f"the plan was made for {source.mesh}; leave mesh= out, the plan carries it")])
        return source.module, source.mesh
    if not isinstance(source, Module):
        raise ShardingError(f"{caller} takes a ShardingPlan (or a layout-annotated Module)",
                            [Diagnostic(f"got {type(source).__name__}")])
    if mesh is None:
        text = source.metadata.get("mesh")
        if not isinstance(text, str) or not text:
            raise ShardingError(f"{caller}: the module carries no mesh", [Diagnostic(
                f"pass the plan itself, {caller}(plan, ...) (it carries its mesh), or give "
                f"mesh=Mesh({{...}}) for a module annotated by other means")])
        mesh = parse_mesh(text)
    return source, mesh


def positional_after_plan(caller: str, args: tuple, keyword, name: str | None,
                          new_spelling: str, *, mesh_axes=None):
    """The one argument an execution entry point takes after the plan (`example_inputs` or
    `inputs`; `name=None` for an entry point that takes the plan alone), given positionally
    (`args`) or by keyword. The old spelling, which repeated the mesh there
    (`caller(plan.module, {"batch": 2, ...}, ...)`), gets a clear error pointing to
    `new_spelling`; so does the old keyword `mesh_axes=`."""
    if mesh_axes is not None:
        raise ShardingError(f"{caller} no longer takes mesh_axes=", [Diagnostic(
            f"the plan carries its mesh: call {new_spelling} (for a module annotated by other "
            f"means, pass mesh=...)")])
    if args and isinstance(args[0], (Mapping, Mesh)):
        raise ShardingError(f"{caller} no longer takes the mesh as its second argument",
                            [Diagnostic(f"the plan carries its mesh: call {new_spelling} "
                                        f"(for a module annotated by other means, pass "
                                        f"mesh=... as a keyword)")])
    if name is None and args:
        raise TypeError(f"{caller} takes one positional argument (the plan), got "
                        f"{1 + len(args)}")
    if len(args) > 1 or (args and keyword is not None):
        raise TypeError(f"{caller} takes the plan and {name}; got {1 + len(args)} positional "
                        f"arguments{' and ' + name + '=' if keyword is not None else ''}")
    return args[0] if args else keyword
