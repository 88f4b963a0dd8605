"""Lifts TensorFlow graphs into the IR: a traced `tf.function` (ConcreteFunction) or a SavedModel
signature.

How (and why this way):

- The graph is read from `concrete_fn.graph.as_graph_def()` (a few ms), not frozen with
  `convert_variables_to_constants_v2` (~1.5 s for MobileNetV2, most of a Keras conversion):
  variables reach the graph as captured resource placeholders, and each `ReadVariableOp` of one
  is read eagerly when (and only when) a lifted node needs it. Nested function calls
  (`StatefulPartitionedCall`, e.g. Keras' jit-compiled grouped conv in ConvNeXt, or a SavedModel
  signature's body) are inlined from the graph's function library. `freeze=True` takes the
  classic path instead; both give the same IR.
- Only nodes the outputs depend on are lifted, in topological order; every TF op maps to IR
  ops through a table (`tf_ops.TABLE`, one small function per op type).
- Constants are folded at import through the IR's own reference kernels, so Keras'
  weight-only arithmetic (batch-norm's rsqrt(var + eps) * gamma, bias reshapes) becomes plain
  constants while activations stay as IR nodes.
- Shape arithmetic on a `None` batch (Shape -> StridedSlice -> Pack -> Reshape, ...) is
  evaluated symbolically (`tf_shapes.SymDim`); the batch dim is the IR symbol `batch`.
- Every IR node carries `scope` (the layer path, from the TF name scope) and
  `loc = "tf:{op}:{tf node name}"`. Every unsupported op is collected and reported at once.
- Lowerings can look ahead without leaving dead nodes: `Pending` entries complete multi-op
  patterns (SpaceToBatchND -> Conv2D -> BatchToSpaceND is one dilated conv) and `Lazy`
  entries are built only if used (Tensordot's 2-D reshapes around a matmul).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from ..ir.errors import ConversionError, Diagnostic, InferenceError
from ..ir.graph import Graph, Module, Value
from ..ir.ops import get_op
from ..ir.types import UNKNOWN, DType, TensorType
from .tf_shapes import SymbolicError, SymDim, is_symbolic

FOLD_LIMIT = 1 << 24  # elements: larger results of constant subgraphs stay IR nodes
BATCH = "batch"

# TF DataType enum -> IR dtype (tensorflow/core/framework/types.proto).
_TF_DTYPES = {1: DType.f32, 2: DType.f64, 3: DType.i32, 4: DType.u8, 5: DType.i16, 6: DType.i8,
              9: DType.i64, 10: DType.bool, 14: DType.bf16, 19: DType.f16}
_TF_DTYPE_NAMES = {7: "string", 8: "complex64", 18: "complex128", 20: "resource", 21: "variant",
                   17: "uint16", 22: "uint32", 23: "uint64"}
DT_RESOURCE = 20
_CALL_OPS = ("PartitionedCall", "StatefulPartitionedCall")


# -- importer values -------------------------------------------------------------------------
# What a TF tensor becomes while importing: an IR Value, or one of these.

class Const:
    """A constant known at import time, put into the graph only when a lifted node uses it.

    `full`, when set, makes it a *splat*: the constant stands for `array` broadcast to the
    shape `full`, some of whose dims are run-time sizes (where `array` has 1). Keras fills such
    tensors (`ones_like(scores)` in attention masks); since the IR has no run-time broadcast,
    a splat may only meet elementwise ops whose other operands carry those run-time dims.
    """

    __slots__ = ("array", "origin", "name", "value", "full")

    def __init__(self, array: np.ndarray, origin: "TFNode | None", name: str | None = None,
                 full: list | None = None):
        self.array = array
        self.origin = origin
        self.name = name
        self.value: Value | None = None
        self.full = full


class Sym:
    """An integer tensor (a shape or a piece of one) whose entries may be run-time sizes."""

    __slots__ = ("array", "dtype")

    def __init__(self, array: np.ndarray, dtype: np.dtype):
        self.array = array      # object array of ints and SymDims
        self.dtype = np.dtype(dtype)


class Resource:
    """A captured variable handle; `ReadVariableOp` turns it into a Const."""

    __slots__ = ("handle", "name")

    def __init__(self, handle, name: str | None):
        self.handle = handle
        self.name = name


class Dead:
    """A TF output with no IR meaning (e.g. batch-norm's training statistics). Using it is an
    error with `reason`; reason None marks the output of a node already reported."""

    __slots__ = ("reason",)

    def __init__(self, reason: str | None = None):
        self.reason = reason


class Pending:
    """A partial pattern a later TF op completes (e.g. SpaceToBatchND -> Conv2D ->
    BatchToSpaceND is one dilated conv). Any other use is an error with `reason`."""

    reason = "an intermediate of a multi-op pattern is used on its own"


class Lazy:
    """A tensor built only if some op needs it as a tensor: `build(lifter)` returns its Value.
    Lets a lowering look one op ahead (a 2-D flatten feeding a matmul) without emitting
    nodes that would end up dead."""

    __slots__ = ("build", "type", "dims", "scope", "loc", "value", "info")

    def __init__(self, build, type: TensorType, dims: list, scope: str, loc: str, info=None):
        self.build, self.type, self.dims, self.scope, self.loc = build, type, dims, scope, loc
        self.value: Value | None = None
        self.info = info


Entry = Any  # Value | Const | Sym | Resource | Dead | Pending | Lazy


class LiftError(Exception):
    """A TF node the importer cannot lower; the message becomes its diagnostic."""


class TFNode:
    """One TF op: name, type, data inputs as (producer name, output index), NodeDef attrs.

    `path` is the name the scope comes from: the name itself, except for nodes inlined from a
    function call, which sit in the call's name scope (`layer/convolution`, not
    `layer/StatefulPartitionedCall/convolution`); `name` stays unique.
    """

    __slots__ = ("name", "op", "inputs", "attr", "path")

    def __init__(self, name: str, op: str, inputs: list[tuple[str, int]], attr,
                 path: str | None = None):
        self.name, self.op, self.inputs, self.attr = name, op, inputs, attr
        self.path = path or name


def ir_dtype(tf_enum: int, what: str = "tensor") -> DType:
    """The IR dtype of a TF DataType enum; LiftError for types the IR has no name for."""
    try:
        return _TF_DTYPES[tf_enum]
    except KeyError:
        name = _TF_DTYPE_NAMES.get(tf_enum, f"DataType {tf_enum}")
        raise LiftError(f"{what} has dtype {name}, which the IR does not support") from None


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
        for nd in graph_def.node:
            inputs = [p for p in map(_parse_input, nd.input) if p is not None]
            self._add(nd.name, nd.op, inputs, nd.attr, nd.name)

    def _add(self, name, op, inputs, attr, path):
        fn = None
        if op in _CALL_OPS and "f" in attr:
            fn = self.library.get(attr["f"].func.name)
        elif op in self.library:          # a function called directly by name
            fn = self.library[op]
        if fn is None:
            self.nodes[name] = TFNode(name, op, inputs, attr, path)
        else:
            self._inline(name, path, inputs, fn)

    def _inline(self, call: str, call_path: str, call_inputs, fdef):
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
        for nd in fdef.node_def:
            inputs = [p for p in map(resolve, nd.input) if p is not None]
            self._add(f"{call}/{nd.name}", nd.op, inputs, nd.attr,
                      f"{scope}/{nd.name}" if scope else nd.name)
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


# -- scopes ----------------------------------------------------------------------------------

def default_scope_fn(strip: int = 0) -> Callable[[str], str]:
    """Scope = the TF name scope of a node minus its op name and `strip` leading components."""
    def scope(name: str) -> str:
        parts = name.split("/")[:-1]
        return "/".join(parts[strip:])
    return scope


# -- the lifter ------------------------------------------------------------------------------

class Lifter:
    """Lowers TFNodes one at a time into a Graph; the context handed to `tf_ops` functions."""

    def __init__(self, graph: Graph, scope_fn: Callable[[str], str]):
        self.graph = graph
        self._scope_fn = scope_fn
        self._scope_cache: dict[str, str] = {}
        self.env: dict[str, list[Entry] | None] = {}   # None: node failed (already reported)
        self.diagnostics: list[Diagnostic] = []
        self.unsupported = False
        self.node: TFNode | None = None
        self.scope = ""
        self.loc = ""
        self._sym_shapes: dict[int, list] = {}
        self._fresh = 0

    # -- locations ---------------------------------------------------------------------------
    def scope_of(self, node: TFNode) -> str:
        """The IR scope of a TF node (cached per name scope)."""
        prefix = node.path.rpartition("/")[0]
        s = self._scope_cache.get(prefix)
        if s is None:
            s = self._scope_cache[prefix] = self._scope_fn(node.path)
        return s

    def report(self, message: str, node: TFNode) -> None:
        """Records a diagnostic located at `node`."""
        self.diagnostics.append(Diagnostic(message, node=node.name, scope=self.scope_of(node),
                                           loc=f"tf:{node.op}:{node.name}"))

    # -- reading entries ---------------------------------------------------------------------
    def const(self, e: Entry) -> np.ndarray | None:
        """The value of an import-time constant, or None."""
        if isinstance(e, Const):
            return e.array
        if isinstance(e, Value):
            return e.const
        return None

    def static(self, e: Entry, what: str) -> np.ndarray:
        """The value of `e`, which must be an import-time constant (LiftError otherwise)."""
        c = self.const(e)
        if c is None:
            if isinstance(e, Sym):
                raise LiftError(f"{what} depends on the run-time size "
                                f"{_fmt_dims(e.array.ravel())}; it must be a constant")
            raise LiftError(f"{what} must be a constant, but it is computed at run time")
        return c

    def dims(self, e: Entry, what: str) -> list:
        """A 1-D shape-like operand as a list of ints and SymDims."""
        if isinstance(e, Sym):
            return list(e.array.ravel())
        return [int(d) for d in np.asarray(self.static(e, what)).ravel()]

    def type(self, e: Entry) -> TensorType:
        """The IR type `e` has (or will have once it is a Value)."""
        if isinstance(e, Value):
            return e.type
        if isinstance(e, Const):
            return TensorType(DType.from_numpy(e.array.dtype), e.array.shape)
        if isinstance(e, Sym):
            return TensorType(DType.from_numpy(e.dtype), e.array.shape)
        if isinstance(e, Lazy):
            return e.type
        raise LiftError("a resource handle is used as a tensor (only ReadVariableOp is supported)")

    def sym_shape(self, e: Entry) -> list:
        """The shape of `e` with run-time dims as SymDims (stable per value)."""
        if isinstance(e, Const) and e.full is not None:
            return list(e.full)
        if isinstance(e, Lazy):
            return list(e.dims)
        if not isinstance(e, Value):
            return list(self.type(e).shape)
        known = self._sym_shapes.get(id(e))
        if known is None:
            known = []
            for d in e.type.shape:
                if isinstance(d, int):
                    known.append(d)
                elif d == UNKNOWN:
                    self._fresh += 1
                    known.append(SymDim.of(f"?{self._fresh}"))
                else:
                    known.append(SymDim.of(d))
            self._sym_shapes[id(e)] = known
        return list(known)

    def set_sym_shape(self, v: Entry, dims: Sequence) -> None:
        """Records what a value's `?` dims are (e.g. `batch*8` after a reshape to [-1, 32])."""
        if isinstance(v, Value):
            self._sym_shapes[id(v)] = list(dims)

    def value(self, e: Entry, *, splat_ok: bool = False) -> Value:
        """`e` as an IR Value; constants are added to the graph on first use."""
        if isinstance(e, Value):
            return e
        if isinstance(e, Const):
            if e.full is not None and not splat_ok:
                raise LiftError(f"a tensor filled to the run-time shape {_fmt_dims(e.full)} "
                                f"is used where its full shape is needed; the IR has no "
                                f"run-time broadcast")
            if e.value is None:
                scope = self.scope_of(e.origin) if e.origin is not None else self.scope
                loc = f"tf:{e.origin.op}:{e.origin.name}" if e.origin is not None else self.loc
                e.value = self.graph.constant(e.array, name=e.name, scope=scope, loc=loc)
            return e.value
        if isinstance(e, Sym):
            raise LiftError(f"the run-time shape value {_fmt_dims(e.array.ravel())} is used as "
                            f"a tensor; the IR keeps shapes static (one -1 in a reshape)")
        if isinstance(e, Dead):
            raise LiftError(e.reason or "an input could not be lifted")
        if isinstance(e, Pending):
            raise LiftError(e.reason)
        if isinstance(e, Lazy):
            if e.value is None:
                saved = self.scope, self.loc
                self.scope, self.loc = e.scope, e.loc
                try:
                    e.value = e.build(self)
                finally:
                    self.scope, self.loc = saved
            return e.value
        raise LiftError("a resource handle is used as a tensor (only ReadVariableOp is supported)")

    # -- emitting ----------------------------------------------------------------------------
    def emit(self, op: str, inputs: Sequence[Entry], attrs: dict | None = None, *,
             types: Sequence[TensorType] | None = None) -> list[Entry]:
        """Adds IR op `op` (or folds it when every input is a constant, or evaluates it on
        symbolic shapes) and returns its results."""
        opdef = get_op(op)
        attrs = opdef.complete_attrs(attrs or {})
        if any(isinstance(e, Sym) for e in inputs):
            return self._emit_symbolic(opdef, inputs, attrs)
        consts = [self.const(e) for e in inputs]
        all_const = bool(inputs) and all(c is not None for c in consts)
        full = None
        if any(isinstance(e, Const) and e.full is not None for e in inputs):
            full = self._splat_result(opdef, inputs, check_covered=not all_const)
        if all_const:
            folded = self._fold(opdef, consts, attrs)
            if folded is not None:
                for c in folded:
                    c.full = full
                return folded
            if full is not None:
                raise LiftError(f"{opdef.name} of filled tensors is too large to fold")
        values = [self.value(e, splat_ok=True) for e in inputs]
        node = self.graph.add(op, values, attrs, types=types, scope=self.scope, loc=self.loc)
        return list(node.outputs)

    def _splat_result(self, opdef, inputs, check_covered: bool) -> list:
        """The full shape of an elementwise op on splats; LiftError unless the op is
        elementwise and (when it meets tensors) a tensor operand carries every run-time dim."""
        splat = next(e for e in inputs if isinstance(e, Const) and e.full is not None)
        if "elementwise" not in opdef.traits:
            raise LiftError(f"a tensor filled to the run-time shape {_fmt_dims(splat.full)} is "
                            f"used by {opdef.name}; the IR has no run-time broadcast, so only "
                            f"elementwise uses are supported")
        shapes = [self.sym_shape(e) for e in inputs]
        rank = max(len(s) for s in shapes)
        out = []
        for k in range(rank):
            dims = [s[len(s) - rank + k] for s in shapes if len(s) - rank + k >= 0]
            syms = {d for d in dims if isinstance(d, SymDim)}
            if len(syms) > 1:
                raise LiftError(f"run-time dims {sorted(map(str, syms))} meet in one "
                                f"{opdef.name}")
            if syms:
                (d,) = syms
                covered = any(isinstance(e, Value) and len(s) - rank + k >= 0
                              and s[len(s) - rank + k] == d for e, s in zip(inputs, shapes))
                if check_covered and not covered:
                    raise LiftError(f"{opdef.name} broadcasts a filled tensor to the run-time "
                                    f"dim {d}, which no tensor operand has")
                out.append(d)
            else:
                out.append(max(dims))
        return out

    def emit1(self, op: str, inputs: Sequence[Entry], attrs: dict | None = None, *,
              types: Sequence[TensorType] | None = None) -> Entry:
        """`emit` for single-result ops."""
        return self.emit(op, inputs, attrs, types=types)[0]

    def _fold(self, opdef, arrays, attrs) -> list[Const] | None:
        if "no_fold" in opdef.traits:
            return None
        try:
            types = opdef.infer([TensorType(DType.from_numpy(a.dtype), a.shape)
                                 for a in arrays], attrs)
        except InferenceError as e:
            raise LiftError(str(e)) from None
        biggest = max(a.size for a in arrays)
        for t in types:
            n = t.num_elements
            if n is None or (n > FOLD_LIMIT and n > biggest):
                return None
        with np.errstate(all="ignore"):
            results = opdef.kernel(arrays, attrs)
        return [Const(np.asarray(r), self.node) for r in results]

    def _emit_symbolic(self, opdef, inputs, attrs) -> list[Entry]:
        kernel = _SYMBOLIC_KERNELS.get(opdef.name)
        if kernel is None:
            raise LiftError(f"{opdef.name} of a run-time shape value cannot be evaluated at "
                            f"import time")
        arrays, types = [], []
        for i, e in enumerate(inputs):
            if isinstance(e, Sym):
                arrays.append(e.array)
            else:
                c = self.const(e)
                if c is None:
                    raise LiftError(f"{opdef.name} mixes a run-time shape value with a "
                                    f"computed tensor")
                keep_int = i in kernel[1]
                arrays.append(c if keep_int else np.asarray(c).astype(object))
            types.append(self.type(e))
        out_types = opdef.infer(types, attrs)
        try:
            results = kernel[0](opdef, arrays, attrs)
        except SymbolicError as e:
            raise LiftError(str(e)) from None
        out = []
        for r, t in zip(results, out_types):
            r = np.asarray(r)
            if is_symbolic(r):
                out.append(Sym(r, t.dtype.np))
            else:   # every run-time size cancelled out (e.g. sliced away): a plain constant
                plain = np.asarray(r.tolist(), dtype=t.dtype.np).reshape(r.shape)
                out.append(Const(plain, self.node))
        return out

    # -- driving -----------------------------------------------------------------------------
    def lift_node(self, node: TFNode, table: dict) -> None:
        """Lowers one TF node through `table` into `env`; failures become diagnostics."""
        self.node = node
        self.scope = self.scope_of(node)
        self.loc = f"tf:{node.op}:{node.name}"
        fn = table.get(node.op)
        if fn is None:
            self.unsupported = True
            self.report(f"op {node.op} has no IR lowering", node)
            self.env[node.name] = None
            return
        ins = []
        for name, idx in node.inputs:
            outs = self.env.get(name, ())
            if outs is None:
                self.env[node.name] = None     # an input failed: already reported there
                return
            if idx >= len(outs):
                self.report(f"input {name}:{idx} is not available", node)
                self.env[node.name] = None
                return
            ins.append(outs[idx])
        try:
            self.env[node.name] = list(fn(self, node, ins))
        except (LiftError, InferenceError, SymbolicError) as e:
            self.report(str(e), node)
            self.env[node.name] = None
        except Exception as e:  # a lowering bug must still come out as a diagnostic
            self.report(f"lowering failed: {type(e).__name__}: {e}", node)
            self.env[node.name] = None


def _fmt_dims(dims) -> str:
    return "[" + ", ".join(str(d) for d in dims) + "]"


# Kernels that may run on object arrays of ints and SymDims: (kernel, operand indices that
# keep their integer dtype, e.g. gather indices).
def _ir_kernel(opdef, arrays, attrs):
    return opdef.kernel(arrays, attrs)


def _reduce_obj(fn):
    def run(opdef, arrays, attrs):
        x = arrays[0]
        axes = tuple(a % x.ndim for a in attrs["axes"]) if attrs["axes"] else None
        return [np.asarray(fn(x, axis=axes, keepdims=attrs["keepdims"]), dtype=object)]
    return run


_SYMBOLIC_KERNELS = {
    "identity": (_ir_kernel, ()),
    "strided_slice": (_ir_kernel, ()),
    "slice": (_ir_kernel, ()),
    "concat": (_ir_kernel, ()),
    "reshape": (_ir_kernel, ()),
    "squeeze": (_ir_kernel, ()),
    "expand_dims": (_ir_kernel, ()),
    "transpose": (_ir_kernel, ()),
    "tile": (_ir_kernel, ()),
    "gather": (_ir_kernel, (1,)),
    "mul": (_ir_kernel, ()),
    "cast": (lambda opdef, arrays, attrs: [arrays[0]], ()),
    "reduce_prod": (_reduce_obj(np.prod), ()),
}


# -- public API ------------------------------------------------------------------------------

def _version() -> str:
    from .. import __version__

    return __version__


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


def _read_resource(res: Resource, dtype_enum: int) -> np.ndarray:
    import tensorflow as tf

    return np.asarray(tf.raw_ops.ReadVariableOp(resource=res.handle,
                                                dtype=tf.dtypes.as_dtype(dtype_enum)).numpy())


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
                           freeze: bool = False, metadata: dict | None = None) -> Module:
    """Lifts a traced `tf.function` (a ConcreteFunction) into a Module with graph `main`.

    input_names / output_names name the function's (non-captured) inputs and its flat outputs,
    in order. A `None` dim 0 becomes the symbol `batch`. Node scopes come from `scope_fn(tf
    node name)`, by default the TF name scope minus `scope_prefix_strip` leading components and
    the op name. `freeze=True` freezes variables with `convert_variables_to_constants_v2` first
    (slower; the default reads captured variables directly). Raises ConversionError listing
    every unsupported op (and every other node that cannot be lifted) at once.
    """
    from . import tf_ops

    captures = {}
    if freeze:
        from tensorflow.python.framework.convert_to_constants import (
            convert_variables_to_constants_v2)
        concrete_fn = convert_variables_to_constants_v2(concrete_fn)
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

    table = dict(tf_ops.TABLE)
    table["ReadVariableOp"] = _make_read_variable(captures)
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
        raise ConversionError(summary, lifter.diagnostics)

    for v, out_name in zip(results, output_names):
        if v.producer is not None and v.producer.op != "constant":
            v.name = out_name
    graph.set_outputs(results)
    meta = {"source": source, "producer": f"tensorforge {_version()}",
            "input_names": list(input_names), "output_names": list(output_names)}
    meta.update(metadata or {})
    return Module([graph], meta)


def _make_read_variable(captures):
    def read_variable(ctx: Lifter, node: TFNode, ins):
        (res,) = ins
        if not isinstance(res, Resource):
            raise LiftError("ReadVariableOp of a resource that is not a captured variable")
        array = _read_resource(res, node.attr["dtype"].type)
        # Name weights by layer path + variable name (`encoder_0/attention/query/kernel`).
        name = res.name.rpartition("/")[2] if res.name else None
        if name and ctx.scope:
            name = f"{ctx.scope}/{name}"
        return [Const(array, node, name or res.name)]
    return read_variable


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


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
