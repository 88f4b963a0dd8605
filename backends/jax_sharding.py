"""Sharded execution of a layout-annotated IR module on JAX/XLA, and the collectives XLA chose.

    compiled = compile_sharded(plan, example_inputs=[x])   # plan = tensorforge.sharding.shard(...)
    outs = compiled(x)                      # jax.jit with NamedSharding in/out shardings
    run_sharded(plan, [x])                  # compile, run once, NumPy outputs
    compiled.params                         # params placed with their NamedShardings
    compiled.per_device_param_bytes()       # device id -> bytes of the params it holds
    count_collectives(compiled.hlo_text())  # {"all-reduce": (count, bytes), ...}

Layouts come from `value.layout` (`ir.types.Layout`: per dim a mesh axis or None); this module
does not plan them (that is `passes/shard`), it executes whatever the values carry:

- each param's sharding is its constant value's layout, each input's the graph input's layout
  and each output's the graph output's layout (no layout = replicated);
- inside the jitted function every other annotated value (node results, small inlined
  constants) gets `jax.lax.with_sharding_constraint`, so XLA's partitioner (Shardy) starts from
  the same global view as the planner instead of inventing its own.

The mesh is `jax.sharding.Mesh` over the first prod(sizes) devices of `jax.devices()`, row-major
over the plan's mesh axes in order (the numbering of `passes/shard/mesh.py`).

Every layout problem is reported before anything is compiled, all at once (ConversionError): a
mesh larger than `jax.device_count()`, a layout naming an unknown mesh axis or the same axis
twice, a layout whose rank differs from the tensor's, and a dim that its mesh axis does not
divide. The last one matters: JAX would silently keep such a dim replicated
(jax-ml/jax#26946), so the program would run but not be sharded as annotated.

The lowering itself is `backends/jax.py`'s (`_emit` node by node); the constraints are applied
by handing `_emit` a lowering context whose value environment constrains each annotated value
as it is stored, so `backends/jax.py` needs no sharding hook.
"""

from __future__ import annotations

import math
import re
from typing import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ..ir.errors import ConversionError, Diagnostic
from ..ir.graph import Module, Value
from ..ir.types import Layout
from ..passes.shard.mesh import Mesh as ShardMesh
from ..passes.shard.plan import ShardingPlan, module_and_mesh, positional_after_plan
from .jax import _Ctx, _dry_run, _emit, _make_params

__all__ = ["compile_sharded", "run_sharded", "count_collectives", "param_layouts", "param_values",
           "ShardedProgram", "COLLECTIVES"]

COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute")


# -- layouts -----------------------------------------------------------------------------------

def _value_label(v: Value, param_key: str | None = None) -> str:
    if param_key is not None:
        return f"param '{param_key}'"
    if v.name:
        return f"%{v.name}"
    p = v.producer
    if p is None:
        return "graph input"
    where = f" (scope {p.scope})" if p.scope else ""
    return f"result {v.index} of {p.op}{where}"


def _layout_problems(axes: tuple, shape: Sequence, mesh_axes: Mapping[str, int],
                     label: str, node=None) -> list[Diagnostic]:
    """Every way `axes` does not fit a tensor of `shape` on the mesh (int dims are checked for
    divisibility; symbolic ones are skipped)."""
    def diag(msg):
        if node is not None:
            return Diagnostic(msg, node=node.describe(), scope=node.scope, loc=node.loc)
        return Diagnostic(msg)

    out = []
    if len(axes) != len(shape):
        out.append(diag(f"{label}: layout ({', '.join(map(str, axes))}) has {len(axes)} dims "
                        f"but the tensor has shape {list(shape)} (rank {len(shape)})"))
        return out
    seen: dict[str, int] = {}
    for dim, (a, size) in enumerate(zip(axes, shape)):
        if a is None:
            continue
        if a not in mesh_axes:
            out.append(diag(f"{label}: layout names mesh axis {a!r} on dim {dim}, which is not "
                            f"in the mesh (axes: {', '.join(mesh_axes) or 'none'})"))
            continue
        if a in seen:
            out.append(diag(f"{label}: layout splits dims {seen[a]} and {dim} over the same "
                            f"mesh axis {a!r}"))
        seen[a] = dim
        n = mesh_axes[a]
        if isinstance(size, int) and size % n != 0:
            out.append(diag(f"{label}: dim {dim} of size {size} is not divisible by mesh axis "
                            f"{a!r} of size {n} (shape {list(shape)}); JAX would silently keep "
                            f"it replicated"))
    return out


def _spec(layout: Layout | None) -> PartitionSpec:
    return PartitionSpec() if layout is None else PartitionSpec(*layout.axes)


def _param_keys(module: Module) -> tuple[dict[int, str], dict[str, jax.Array], dict[int, Value]]:
    """(id(const) -> params key, params, id(const) -> const value), the naming of `to_jax`.
    Raises ConversionError when the module does not lower to JAX."""
    problems, used = _dry_run(module)
    if problems:
        raise ConversionError("cannot lower to JAX", problems)
    keys, params = _make_params(module, used)
    consts = {id(n.outputs[0]): n.outputs[0] for n in module.main if n.op == "constant"}
    return keys, params, consts


def param_values(module: Module) -> dict[str, Value]:
    """The constant value behind every entry of `to_jax(module)`'s params, by params key: set
    `.layout` on these to shard the params."""
    keys, _, consts = _param_keys(module)
    return {key: consts[cid] for cid, key in keys.items()}


def param_layouts(module: Module) -> dict[str, Layout | None]:
    """The layout of every entry of `to_jax(module)`'s params (same keys: the value's name, else
    `<scope>/<operand role>`), taken from the constant value's `.layout` (None = replicated)."""
    keys, _, consts = _param_keys(module)
    return {key: consts[cid].layout for cid, key in keys.items()}


# -- the constrained lowering ------------------------------------------------------------------

class _ConstrainingEnv(dict):
    """`_Ctx.env` that applies the value's sharding constraint to every array stored for an
    annotated value (node results as they are emitted, constants and inputs as they are first
    read), and optionally records every stored shape (the validation trace)."""

    def __init__(self, shardings: Mapping[int, NamedSharding], shapes: dict | None = None):
        super().__init__()
        self._shardings = shardings
        self._shapes = shapes

    def __setitem__(self, key, arr):
        if self._shapes is not None:
            self._shapes[key] = tuple(arr.shape)
        s = self._shardings.get(key)
        if s is not None:
            arr = jax.lax.with_sharding_constraint(arr, s)
        super().__setitem__(key, arr)


def _constrained_fn(module: Module, keys: dict[int, str], shardings: Mapping[int, NamedSharding],
                    shapes: dict | None = None) -> Callable:
    graph = module.main
    n_in = len(graph.inputs)

    def fn(params, *inputs):
        if len(inputs) != n_in:
            raise TypeError(f"expected {n_in} inputs, got {len(inputs)}")
        cx = _Ctx(params, keys, None)
        cx.env = _ConstrainingEnv(shardings, shapes)
        return _emit(graph, cx, [jnp.asarray(x) for x in inputs], None)

    fn.__doc__ = (f"The sharded JAX lowering of graph @{graph.name}: fn(params, *inputs) -> "
                  f"[outputs], with sharding constraints on every annotated value.")
    return fn


# -- the compiled program ----------------------------------------------------------------------

class ShardedProgram:
    """A module lowered to JAX and jitted under NamedShardings on a device mesh.

    Attributes: `mesh` (jax.sharding.Mesh), `fn` (the constrained, un-jitted
    `fn(params, *inputs) -> [outputs]`, for building e.g. a training step), `params` (placed with
    their shardings), `param_shardings` (key -> NamedSharding), `input_shardings` /
    `output_shardings` (lists), `jitted` (the `jax.jit` of `fn`), `example_inputs`.
    """

    def __init__(self, mesh, fn, params, param_shardings, input_shardings, output_shardings,
                 example_inputs):
        self.mesh = mesh
        self.fn = fn
        self.param_shardings = param_shardings
        self.input_shardings = input_shardings
        self.output_shardings = output_shardings
        self.params = {k: jax.device_put(v, param_shardings[k]) for k, v in params.items()}
        self.jitted = jax.jit(fn, in_shardings=(param_shardings, *input_shardings),
                              out_shardings=list(output_shardings))
        self.example_inputs = list(example_inputs) if example_inputs is not None else None
        self._hlo: dict = {}

    def place_inputs(self, inputs: Sequence) -> list[jax.Array]:
        """`inputs` put on the mesh with the graph inputs' shardings."""
        return [jax.device_put(np.asarray(x) if not isinstance(x, jax.Array) else x, s)
                for x, s in zip(inputs, self.input_shardings)]

    def __call__(self, *inputs) -> list[jax.Array]:
        """Runs the sharded program; returns the outputs (global jax.Arrays, laid out as the
        graph outputs' layouts say)."""
        return self.jitted(self.params, *self.place_inputs(inputs))

    def hlo_text(self, *inputs) -> str:
        """The optimized, SPMD-partitioned HLO XLA compiled for `inputs` (default: the example
        inputs): per-device shapes and explicit collectives."""
        inputs = inputs or tuple(self.example_inputs or ())
        sig = tuple((tuple(np.shape(x)), str(np.asarray(x).dtype) if not isinstance(x, jax.Array)
                     else str(x.dtype)) for x in inputs)
        if sig not in self._hlo:
            placed = self.place_inputs(inputs)
            self._hlo[sig] = self.jitted.lower(self.params, *placed).compile().as_text()
        return self._hlo[sig]

    def per_device_param_bytes(self, keys: Sequence[str] | None = None) -> dict[int, int]:
        """Device id -> bytes of params (all, or those in `keys`) that device holds, summed over
        the placed arrays' addressable shards (a replicated param counts on every device)."""
        out = {d.id: 0 for d in self.mesh.devices.flat}
        for k, arr in self.params.items():
            if keys is not None and k not in keys:
                continue
            for shard in arr.addressable_shards:
                out[shard.device.id] = out.get(shard.device.id, 0) + int(shard.data.nbytes)
        return out


def _make_mesh(mesh_axes: Mapping[str, int]) -> Mesh:
    sizes = tuple(int(n) for n in mesh_axes.values())
    devices = np.asarray(jax.devices()[:math.prod(sizes)]).reshape(sizes)
    return Mesh(devices, tuple(mesh_axes))


def compile_sharded(plan: "ShardingPlan | Module", *args, example_inputs: Sequence | None = None,
                    mesh: "ShardMesh | Mapping[str, int] | None" = None,
                    mesh_axes=None) -> ShardedProgram:
    """Lowers the plan's module to JAX with every value's `.layout` turned into a NamedSharding
    on the plan's mesh and returns the jitted `ShardedProgram`.

    `plan` is a `ShardingPlan` (it carries its mesh), or a layout-annotated Module that carries
    its mesh in metadata (the `shard-propagate` pass writes it) or is given `mesh=`.
    `example_inputs` give the concrete input shapes the layouts are checked against (needed
    when a graph input has a symbolic dim; otherwise zeros of the declared shapes are used).
    Raises ConversionError, before anything is compiled and listing every problem: a mesh
    needing more devices than `jax.device_count()`, an unknown or repeated mesh axis, a layout
    of the wrong rank, or a dim its mesh axis does not divide. (`*args` and `mesh_axes` only
    catch the old spelling, which repeated the mesh, with an error naming this one.)"""
    example_inputs = positional_after_plan("compile_sharded", args, example_inputs,
                                           "example_inputs",
                                           "compile_sharded(plan, example_inputs=[...])",
                                           mesh_axes=mesh_axes)
    return _compile(plan, example_inputs, mesh, "compile_sharded")


def _compile(plan, example_inputs, mesh, caller: str) -> ShardedProgram:
    module, shard_mesh = module_and_mesh(plan, mesh, caller=caller)
    graph = module.main
    mesh_axes = dict(shard_mesh.axes)
    problems: list[Diagnostic] = []
    need = shard_mesh.size
    if need > jax.device_count():
        problems.append(Diagnostic(
            f"mesh {mesh_axes} needs {need} devices but JAX sees {jax.device_count()} "
            f"({jax.default_backend()}); on CPU set XLA_FLAGS="
            f"--xla_force_host_platform_device_count={need} before importing jax"))

    keys, params, consts = _param_keys(module)
    key_of = keys

    # Concrete shapes of every value: trace the lowering abstractly with the example inputs.
    if example_inputs is None:
        symbolic = [v for v in graph.inputs if not v.type.is_static]
        if symbolic:
            raise ConversionError("compile_sharded needs example_inputs", [Diagnostic(
                f"graph input %{v.name or i} has symbolic shape {v.type}; pass example_inputs "
                f"to fix its size") for i, v in enumerate(symbolic)])
        example_inputs = [np.zeros(v.type.shape, v.type.dtype.np) for v in graph.inputs]
    if len(example_inputs) != len(graph.inputs):
        raise ConversionError("compile_sharded: wrong number of example inputs", [Diagnostic(
            f"graph @{graph.name} has {len(graph.inputs)} inputs, got {len(example_inputs)} "
            f"example inputs")])
    shapes: dict[int, tuple] = {}
    specs = [jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype) for x in example_inputs]
    pspecs = {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in params.items()}
    jax.eval_shape(_constrained_fn(module, keys, {}, shapes), pspecs, *specs)

    annotated: list[tuple[Value, object]] = []   # (value, producer node or None)
    seen: set[int] = set()
    for v in graph.inputs:
        seen.add(id(v))
        if v.layout is not None:
            annotated.append((v, None))
    for node in graph:
        for v in node.outputs:
            if id(v) not in seen and v.layout is not None:
                seen.add(id(v))
                annotated.append((v, node))
    for v, node in annotated:
        shape = shapes.get(id(v), v.type.shape)   # unused constants were never traced
        problems += _layout_problems(tuple(v.layout.axes), shape, mesh_axes,
                                     _value_label(v, key_of.get(id(v))), node)
    if problems:
        raise ConversionError(f"cannot shard module on mesh {mesh_axes}", problems)

    mesh = _make_mesh(mesh_axes)

    def sharding(layout):
        return NamedSharding(mesh, _spec(layout))

    value_shardings = {id(v): sharding(v.layout) for v, _ in annotated}
    param_shardings = {key: sharding(consts[cid].layout) for cid, key in keys.items()}
    input_shardings = [sharding(v.layout) for v in graph.inputs]
    output_shardings = [sharding(v.layout) for v in graph.outputs]
    fn = _constrained_fn(module, keys, value_shardings)
    return ShardedProgram(mesh, fn, params, param_shardings, input_shardings, output_shardings,
                          example_inputs)


def run_sharded(plan: "ShardingPlan | Module", *args, inputs: Sequence | None = None,
                mesh: "ShardMesh | Mapping[str, int] | None" = None,
                mesh_axes=None) -> list[np.ndarray]:
    """Compiles the plan (`compile_sharded`) for `inputs`, runs it once on the plan's mesh and
    returns the outputs as NumPy arrays (gathered from their shards): `run_sharded(plan, [x])`.
    """
    inputs = positional_after_plan("run_sharded", args, inputs, "inputs",
                                   "run_sharded(plan, [inputs...])", mesh_axes=mesh_axes)
    if inputs is None:
        raise TypeError("run_sharded(plan, inputs): the inputs are missing")
    program = _compile(plan, list(inputs), mesh, "run_sharded")
    return [np.asarray(o) for o in program(*inputs)]


# -- reading the compiled collectives ----------------------------------------------------------

_ITEM_BYTES = {"pred": 1, "s4": 0.5, "u4": 0.5, "s8": 1, "u8": 1, "s16": 2, "u16": 2,
               "f16": 2, "bf16": 2, "s32": 4, "u32": 4, "f32": 4, "s64": 8, "u64": 8, "f64": 8,
               "c64": 8, "c128": 16, "f8e4m3fn": 1, "f8e5m2": 1}
_INSTR_RE = re.compile(
    r"^\s*(?:ROOT\s+)?%?[\w.\-]+\s*=\s*(?P<shape>.+?)\s+"
    r"(?P<op>all-reduce|all-gather|reduce-scatter|all-to-all|collective-permute)"
    r"(?P<phase>-start|-done)?\(")
_SHAPE_RE = re.compile(r"\b([a-z]+[0-9a-z]*)\[([0-9,]*)\]")


def _shape_bytes(text: str) -> int:
    total = 0.0
    for dtype, dims in _SHAPE_RE.findall(text):
        n = math.prod(int(d) for d in dims.split(",") if d) if dims else 1
        total += n * _ITEM_BYTES.get(dtype, 4)
    return int(total)


def count_collectives(hlo_text: str) -> dict[str, tuple[int, int]]:
    """{op: (count, bytes)} for all-reduce, all-gather, reduce-scatter, all-to-all and
    collective-permute in compiled (SPMD-partitioned) HLO text.

    Bytes convention: the size of each collective's *result* on one device (the partitioned
    HLO's shapes are per-device), summed over the instructions; a tuple result (combined
    collectives) counts every element. So an all-reduce of a [2, 64] f32 partial sum is 512
    bytes, an all-gather counts the gathered (full) size, a reduce-scatter the scattered piece.
    Async pairs (GPU: `all-reduce-start` / `all-reduce-done`) count once, from the `-done`
    instruction, whose result is the collective's output. Instructions are counted once each
    in the text (a collective inside a loop body counts once, not per iteration)."""
    out = {op: [0, 0] for op in COLLECTIVES}
    for line in hlo_text.splitlines():
        m = _INSTR_RE.match(line)
        if m is None or m.group("phase") == "-start":
            continue
        entry = out[m.group("op")]
        entry[0] += 1
        entry[1] += _shape_bytes(m.group("shape"))
    return {op: (c, b) for op, (c, b) in out.items()}
