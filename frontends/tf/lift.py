"""Lifts TensorFlow graphs into the IR: a traced `tf.function` (ConcreteFunction) or a SavedModel
signature. This module reads the graph and drives the lifting; `ops.TABLE` lowers each TF op
and `context.Lifter` is the context it lowers in.

How (and why this way):

- The graph is read from `concrete_fn.graph.as_graph_def()` (a few ms), not frozen with
  `convert_variables_to_constants_v2` (~1.5 s for MobileNetV2, most of a Keras conversion):
  variables reach the graph as captured resource placeholders, and each `ReadVariableOp` of one
  is read eagerly when (and only when) a lifted node needs it. Nested function calls
  (`StatefulPartitionedCall`, e.g. Keras' jit-compiled grouped conv in ConvNeXt, or a SavedModel
  signature's body) are inlined from the graph's function library. `freeze=True` takes the
  classic path instead; both give the same IR.
- Only nodes the outputs depend on are lifted, in topological order; every TF op maps to IR
  ops through a table (`ops.TABLE`, one small function per op type, grouped by op family).
- Constants are folded at import through the IR's own reference kernels, so Keras'
  weight-only arithmetic (batch-norm's rsqrt(var + eps) * gamma, bias reshapes) becomes plain
  constants while activations stay as IR nodes.
- Shape arithmetic on a `None` batch (Shape -> StridedSlice -> Pack -> Reshape, ...) is
  evaluated symbolically (`shapes.SymDim`); the batch dim is the IR symbol `batch`.
- Every IR node carries `scope` (the layer path, from the TF name scope) and
  `loc = "tf:{op}:{tf node name}"`. Every unsupported op is collected and reported at once.
- Control flow: a functional While becomes an IR `while` and an If on a run-time condition an
  IR `if`, their bodies (FunctionDefs of the library) lifted into regions by child lifters
  (`ops/control.py`); TensorLists (TensorArrays, which Keras RNNs loop over) are plain tensors
  (`ops/tensorlist.py`).
- Lowerings can look ahead without leaving dead nodes: `Pending` entries complete multi-op
  patterns (SpaceToBatchND -> Conv2D -> BatchToSpaceND is one dilated conv) and `Lazy`
  entries are built only if used (Tensordot's 2-D reshapes around a matmul).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from ...ir.errors import ConversionError, Diagnostic
from ...ir.graph import Graph, Module
from ...ir.types import UNKNOWN, TensorType
from ...version import package_version
from . import ops
from .context import (DT_RESOURCE, Const, Entry, Lifter, LiftError, Resource, TFNode,
                      ir_dtype)
from .variables import VariableValues

BATCH = "batch"
_CALL_OPS = ("PartitionedCall", "StatefulPartitionedCall")
_IF_OPS = ("If", "StatelessIf")
_CASE_OPS = ("Case", "StatelessCase")


# -- reading the graph -----------------------------------------------------------------------

def _parse_input(text: str) -> tuple[str, int] | None:
    """GraphDef input 'node' / 'node:2' -> (node, index); control inputs '^node' -> None."""
    if text.startswith("^"):
        return None
    name, _, idx = text.partition(":")
    return name, int(idx) if idx else 0


def _output_arg_sizes(nd, op_def) -> list[tuple[str, int]]:
    """(output arg name, number of tensors) in order, for FunctionDef's 'node:arg:i' names."""
    out = []
    for arg in op_def.output_arg:
        if arg.number_attr:
            n = nd.attr[arg.number_attr].i
        elif arg.type_list_attr:
            n = len(nd.attr[arg.type_list_attr].list.type)
        else:
            n = 1
        out.append((arg.name, n))
    return out


class _GraphReader:
    """Turns a GraphDef into TFNodes, inlining function calls from its library."""

    def __init__(self, graph_def):
        self.library = {f.signature.name: f for f in graph_def.library.function}
        self.nodes: dict[str, TFNode] = {}
        self._calls: dict[str, tuple[str, list[str]]] = {}
        for nd in graph_def.node:
            inputs = [p for p in map(_parse_input, nd.input) if p is not None]
            self._add(nd.name, nd.op, inputs, nd.attr, nd.name)

    def _add(self, name, op, inputs, attr, path):
        fn = None
        if op in _IF_OPS and inputs:
            self._add_if(name, op, inputs, attr, path)
            return
        if op in _CASE_OPS and inputs:
            self._add_case(name, op, inputs, attr, path)
            return
        if op in _CALL_OPS and "f" in attr:
            fn = self.library.get(attr["f"].func.name)
        elif op in self.library:          # a function called directly by name
            fn = self.library[op]
        if fn is None:
            self.nodes[name] = TFNode(name, op, inputs, attr, path)
        else:
            self._inline(name, path, inputs, fn)

    def _add_if(self, name, op, inputs, attr, path):
        """If / StatelessIf: both branches are inlined (as `name/then`, `name/else`) but not
        wired in; the If node takes only the condition. Known at import time, it lifts
        the branch the condition selects; computed at run time, it lifts its arguments
        (`_args`) and both branch functions (`_fns`) into an IR `if` (`ops/control.py`)."""
        self._add_branches(name, op, inputs, attr, path, [
            (attr["then_branch"].func.name, "then"), (attr["else_branch"].func.name, "else")])

    def _add_case(self, name, op, inputs, attr, path):
        """Case / StatelessCase (`tf.switch_case`), like If: every branch inlined (as
        `name/branchK`) but not wired in, the node taking only the branch index."""
        self._add_branches(name, op, inputs, attr, path, [
            (func.name, f"branch{k}") for k, func in enumerate(attr["branches"].list.func)])

    def _add_branches(self, name, op, inputs, attr, path, branches_of):
        """The branch functions `branches_of` ((library function, call suffix) pairs) of a
        node whose first input selects one, inlined but not wired in (see `_add_if`)."""
        branches, fns = [], []
        for fname, suffix in branches_of:
            fdef = self.library.get(fname)
            if fdef is None:
                self.nodes[name] = TFNode(name, op, inputs, attr, path)
                return
            call = f"{name}/{suffix}"
            self._inline(call, path, inputs[1:], fdef)
            branches.append(call)
            fns.append(fname)
        self.nodes[name] = TFNode(name, op, inputs[:1], {
            "_branches": tuple(branches), "_fns": tuple(fns), "_args": tuple(inputs[1:])}, path)

    def function_call(self, call: str, path: str, fname: str) -> tuple[str, list[str]] | None:
        """Inlines library function `fname` (a loop body, an if branch) as `call`, for a
        region: its arguments are the names `call/_argK`, which the region's lifter binds.
        Returns (the name of the node holding its results, the argument names), or None when
        the library lacks it. The function's nodes keep the name scope they were traced in
        (`model/lstm/while/lstm_cell/MatMul`), placed under the scope of the control-flow
        node at `path`."""
        known = self._calls.get(call)
        if known is not None:
            return known
        fdef = self.library.get(fname)
        if fdef is None:
            return None
        args = [f"{call}/_arg{i}" for i in range(len(fdef.signature.input_arg))]
        self._inline(call, path, [(a, 0) for a in args], fdef, path_of=_traced_path(path))
        self._calls[call] = call, args
        return call, args

    def _inline(self, call: str, call_path: str, call_inputs, fdef, path_of=None):
        from tensorflow.python.framework import op_def_registry

        args = {a.name: call_inputs[i] for i, a in enumerate(fdef.signature.input_arg)
                if i < len(call_inputs)}
        inner = {nd.name: nd for nd in fdef.node_def}
        offsets: dict[str, dict[str, int]] = {}

        def offset(node_name: str, arg: str) -> int:
            table = offsets.get(node_name)
            if table is None:
                nd = inner[node_name]
                op_def = op_def_registry.get(nd.op)
                if op_def is None and nd.op in self.library:
                    op_def = self.library[nd.op].signature
                table, k = {}, 0
                for arg_name, n in _output_arg_sizes(nd, op_def) if op_def else []:
                    table[arg_name] = k
                    k += n
                offsets[node_name] = table
            return table.get(arg, 0)

        def resolve(text: str):
            if text.startswith("^"):
                return None
            parts = text.split(":")
            if len(parts) == 1:
                return args.get(parts[0], (f"{call}/{parts[0]}", 0))
            node_name, arg, idx = parts[0], parts[1], int(parts[2]) if len(parts) > 2 else 0
            return f"{call}/{node_name}", offset(node_name, arg) + idx

        scope = call_path.rpartition("/")[0]
        if path_of is None:
            def path_of(name):
                return f"{scope}/{name}" if scope else name
        for nd in fdef.node_def:
            inputs = [p for p in map(resolve, nd.input) if p is not None]
            self._add(f"{call}/{nd.name}", nd.op, inputs, nd.attr, path_of(nd.name))
        rets = [resolve(fdef.ret[a.name]) for a in fdef.signature.output_arg]
        self.nodes[call] = TFNode(call, "_CallOutputs", rets, {}, call_path)

    def topo_order(self, roots: Iterable[str]) -> list[TFNode]:
        """The nodes the roots depend on, producers first (iterative DFS: graphs are deep)."""
        order, seen = [], set()
        nodes = self.nodes

        def deps(name):
            node = nodes.get(name)
            return iter([] if node is None else [n for n, _ in node.inputs])

        for root in roots:
            if root in seen:
                continue
            seen.add(root)
            stack = [(root, deps(root))]
            while stack:
                name, it = stack[-1]
                for dep in it:
                    if dep not in seen:
                        seen.add(dep)
                        stack.append((dep, deps(dep)))
                        break
                else:
                    stack.pop()
                    if name in nodes:
                        order.append(nodes[name])
        return order


def _traced_path(control_path: str) -> Callable[[str], str]:
    """Where the nodes of a loop body or if branch sit: TF names them in the name scope they
    were traced in (`model/lstm/while/lstm_cell/MatMul` for the loop `model/lstm/while`); the
    part of that scope the loop's own path ends with is shared, the rest is appended."""
    parts = control_path.split("/")

    def path_of(name: str) -> str:
        inner = name.split("/")
        for k in range(min(len(parts), len(inner) - 1), 0, -1):
            if inner[:k] == parts[-k:]:
                return "/".join(parts[:-k] + inner)
        return f"{control_path}/{name}"
    return path_of


# -- scopes ----------------------------------------------------------------------------------

def default_scope_fn(strip: int = 0) -> Callable[[str], str]:
    """Scope = the TF name scope of a node minus its op name and `strip` leading components."""
    def scope(name: str) -> str:
        parts = name.split("/")[:-1]
        return "/".join(parts[strip:])
    return scope


# -- public API ------------------------------------------------------------------------------

def _capture_entries(concrete_fn) -> dict[str, Entry]:
    """Internal placeholder name -> Resource (variables) or Const (captured eager tensors)."""
    graph = concrete_fn.graph
    names = {}
    for v in getattr(graph, "variables", ()):
        try:
            names[id(v.handle)] = v.name.split(":")[0]
        except Exception:  # a variable without a plain handle: leave it unnamed
            pass
    out = {}
    for external, internal in graph.captures:
        key = internal.op.name
        if external.dtype.as_datatype_enum == DT_RESOURCE:
            out[key] = Resource(external, names.get(id(external)))
        else:
            out[key] = Const(np.asarray(external.numpy()), None)
    return out


def _bind_variables(reader: "_GraphReader", lifter: Lifter, variables) -> None:
    """Placeholders that stand for variables (`variables`: node name -> tf.Variable, from
    a trace that bound each variable read to a placeholder instead of capturing its handle)
    lift exactly as the ReadVariableOp they replace: a read of the variable's resource, one
    Resource (and so one array) per variable."""
    resources: dict[int, tuple[str, Resource]] = {}
    for name, var in variables.items():
        node = reader.nodes.get(name)
        if node is None or node.op != "Placeholder":
            continue
        key = id(var)
        if key not in resources:
            handle_name = f"{name}/_resource"
            resources[key] = handle_name, Resource(var.handle, var.name.split(":")[0])
            lifter.env[handle_name] = [resources[key][1]]
        reader.nodes[name] = TFNode(name, "ReadVariableOp", [(resources[key][0], 0)],
                                    node.attr, node.path)


def _input_type(placeholder, name: str) -> TensorType:
    dtype = ir_dtype(placeholder.dtype.as_datatype_enum, f"input '{name}'")
    shape = placeholder.shape
    if shape.rank is None:
        raise LiftError(f"input '{name}' has unknown rank; trace with a TensorSpec of known rank")
    dims = []
    for i, d in enumerate(shape.as_list()):
        dims.append(d if d is not None else (BATCH if i == 0 else UNKNOWN))
    return TensorType(dtype, dims)


def lift_concrete_function(concrete_fn, *, input_names: Sequence[str],
                           output_names: Sequence[str], scope_prefix_strip: int = 0,
                           scope_fn: Callable[[str], str] | None = None, source: str = "tf",
                           freeze: bool = False, metadata: dict | None = None,
                           variables=None, variable_values: VariableValues | None = None
                           ) -> Module:
    """Lifts a traced `tf.function` (a ConcreteFunction) into a Module with graph `main`.

    input_names / output_names name the function's (non-captured) inputs and its flat outputs,
    in order. A `None` dim 0 becomes the symbol `batch`. Node scopes come from `scope_fn(tf
    node name)`, by default the TF name scope minus `scope_prefix_strip` leading components and
    the op name. `freeze=True` freezes variables with `convert_variables_to_constants_v2` first
    (slower; the default reads captured variables directly). `variables` ({placeholder node
    name: tf.Variable}) names placeholders of the graph that stand for variable reads (the
    Keras frontend's trace binds them so; see frontends/keras/lift.py): each lifts as a read
    of its variable. `variable_values` holds values already read (one per variable across
    the lifts of one model; tf/variables.py). `concrete_fn` may also be any object with the ConcreteFunction's
    `graph`, `inputs` and `outputs`. Raises ConversionError listing every unsupported op (and
    every other node that cannot be lifted) at once.
    """
    captures = {}
    if freeze:
        from tensorflow.python.framework.convert_to_constants import (
            convert_variables_to_constants_v2)
        # Functional While / If stay as they are (the default lowers them to v1 control flow,
        # Switch / Merge / Enter / Exit, which has no IR meaning).
        concrete_fn = convert_variables_to_constants_v2(concrete_fn, lower_control_flow=False)
    else:
        captures = _capture_entries(concrete_fn)
    graph_def = concrete_fn.graph.as_graph_def()
    n_user = len(concrete_fn.inputs) - len(concrete_fn.graph.captures)
    placeholders = list(concrete_fn.inputs[:n_user])
    if len(input_names) != len(placeholders):
        raise ConversionError(f"the function takes {len(placeholders)} inputs but "
                              f"{len(input_names)} input names were given")
    outputs = list(concrete_fn.outputs)
    if len(output_names) != len(outputs):
        raise ConversionError(f"the function returns {len(outputs)} tensors but "
                              f"{len(output_names)} output names were given")

    reader = _GraphReader(graph_def)
    graph = Graph("main")
    lifter = Lifter(graph, scope_fn or default_scope_fn(scope_prefix_strip))
    problems = []
    for ph, name in zip(placeholders, input_names):
        try:
            lifter.env[ph.op.name] = [graph.add_input(_input_type(ph, name), name)]
        except LiftError as e:
            problems.append(Diagnostic(str(e), node=ph.op.name))
    if problems:
        raise ConversionError("cannot lift the function's inputs", problems)
    for key, entry in captures.items():
        lifter.env[key] = [entry]
    if variables:
        _bind_variables(reader, lifter, variables)

    values = variable_values if variable_values is not None else VariableValues()
    _prefetch_reads(reader, lifter, values)
    table = dict(ops.TABLE)
    table["ReadVariableOp"] = _make_read_variable(values)
    lifter.reader, lifter.table = reader, table
    out_refs = [(t.op.name, t.value_index) for t in outputs]
    for node in reader.topo_order(name for name, _ in out_refs):
        if node.name in lifter.env:
            continue
        lifter.lift_node(node, table)

    results = []
    if not lifter.diagnostics:
        for (name, idx), out_name in zip(out_refs, output_names):
            try:
                lifter.node = reader.nodes[name]
                lifter.scope, lifter.loc = lifter.scope_of(lifter.node), f"tf:output:{name}"
                results.append(lifter.value(lifter.env[name][idx]))
            except LiftError as e:
                lifter.report(f"output '{out_name}': {e}", reader.nodes[name])
    if lifter.diagnostics:
        summary = ("unsupported TensorFlow ops" if lifter.unsupported
                   else "cannot lift the TensorFlow graph")
        raise ConversionError(summary, lifter.diagnostics + _static_dims_hint(
            lifter.diagnostics, graph, input_names, source))

    for v, out_name in zip(results, output_names):
        if v.producer is not None and v.producer.op != "constant":
            v.name = out_name
    graph.set_outputs(results)
    meta = {"source": source, "producer": f"tensorforge {package_version()}",
            "input_names": list(input_names), "output_names": list(output_names)}
    meta.update(metadata or {})
    return Module([graph], meta)


def _make_read_variable(values: VariableValues):
    def read_variable(ctx: Lifter, node: TFNode, ins):
        (res,) = ins
        if not isinstance(res, Resource):
            raise LiftError("ReadVariableOp of a resource that is not a captured variable")
        # A loop body may be lifted more than once: `values` reads each variable once.
        array = values.get(res.handle, node.attr["dtype"].type)
        # Name weights by layer path + variable name (`encoder_0/attention/query/kernel`).
        name = res.name.rpartition("/")[2] if res.name else None
        if name and ctx.scope:
            name = f"{ctx.scope}/{name}"
        return [Const(array, node, name or res.name)]
    return read_variable


def _prefetch_reads(reader: "_GraphReader", lifter: Lifter, values: VariableValues) -> None:
    """Reads every variable the graph's ReadVariableOps read, in one op (tf/variables.py)."""
    reads = []
    for node in reader.nodes.values():
        if node.op != "ReadVariableOp" or not node.inputs:
            continue
        producer, port = node.inputs[0]
        entries = lifter.env.get(producer)
        if entries and port < len(entries) and isinstance(entries[port], Resource):
            reads.append((entries[port].handle, node.attr["dtype"].type))
    values.prefetch(reads)


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def _static_dims_hint(diagnostics, graph, input_names, source: str) -> list[Diagnostic]:
    """When an op needs a size the inputs leave to run time, one more diagnostic naming those
    inputs and how to fix their dims (a Keras model: `input_shapes=` / `--input-shape`)."""
    if not any("run-time" in d.message for d in diagnostics):
        return []
    dynamic = [(n, v.type.shape) for n, v in zip(input_names, graph.inputs)
               if not v.type.is_static]
    if not dynamic:
        return []
    listed = ", ".join(f"{n} [{', '.join(map(str, shape))}]" for n, shape in dynamic)
    name, shape = dynamic[0]
    example = [1 if d == BATCH else ("N" if isinstance(d, str) else d) for d in shape]
    if source == "keras":
        how = (f"fix them for a static artifact: input_shapes={{{name!r}: "
               f"({', '.join(map(str, example))})}} in Python, --input-shape "
               f"{name}:{','.join(map(str, example))} on the command line")
    else:
        how = "fix them in the tf.function's input signature and save the model again"
    return [Diagnostic(f"the ops above need sizes that the inputs leave to run time: {listed}; "
                       f"{how}")]


def from_saved_model(path, signature: str = "serving_default") -> Module:
    """Lifts one signature of a SavedModel directory. Inputs and outputs are named after the
    signature's keys (sorted, as TF flattens them). A missing, corrupt or signature-less
    SavedModel raises a one-line ConversionError."""
    p = Path(path)
    if not p.exists():
        raise ConversionError(f"no such SavedModel directory: {p}")
    if not p.is_dir() or not ((p / "saved_model.pb").exists()
                              or (p / "saved_model.pbtxt").exists()):
        raise ConversionError(f"{p} is not a SavedModel directory (no saved_model.pb)")
    import tensorflow as tf

    try:
        loaded = tf.saved_model.load(str(p))
    except Exception as e:
        raise ConversionError(f"cannot load SavedModel {p}: {_one_line(e)}") from None
    signatures = getattr(loaded, "signatures", {}) or {}
    if signature not in signatures:
        have = ", ".join(sorted(signatures)) or "none"
        raise ConversionError(f"SavedModel {p} has no signature '{signature}' (it has: {have})")
    fn = signatures[signature]
    args, kwargs = fn.structured_input_signature
    input_names = [f"input_{i}" for i in range(len(args))] + sorted(kwargs)
    outs = fn.structured_outputs
    if isinstance(outs, dict):
        output_names = sorted(outs)
    else:
        output_names = [f"output_{i}" for i in range(len(tf.nest.flatten(outs)))]
    module = lift_concrete_function(fn, input_names=input_names, output_names=output_names,
                                    source="savedmodel")
    module.metadata["signature"] = signature
    return module
