"""What a TF op lowering works with: the entries a TF tensor becomes while lifting (`Const`,
`Sym`, `Resource`, `TensorList`, `Dead`, `Pending`, `Lazy`, or an IR `Value`), `TFNode`,
`LiftError`, the TF dtype tables, and the `Lifter`: the `ctx` every function of `ops.TABLE` is
handed, which reads entries, emits IR nodes, folds constants and evaluates symbolic shape
arithmetic. A control-flow body is lifted by a child lifter (`Lifter.child`) into a region
(`ops/control.py`).

The driver (`lift.py`) reads the TF graph and feeds its nodes to `Lifter.lift_node`.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from ...ir.errors import Diagnostic, InferenceError
from ...ir.graph import Graph, Value
from ...ir.ops import get_op
from ...ir.types import UNKNOWN, DType, TensorType
from .shapes import SymbolicError, SymDim, is_symbolic, to_ir_dim

FOLD_LIMIT = 1 << 24  # elements: larger results of constant subgraphs stay IR nodes

# TF DataType enum -> IR dtype (tensorflow/core/framework/types.proto).
_TF_DTYPES = {1: DType.f32, 2: DType.f64, 3: DType.i32, 4: DType.u8, 5: DType.i16, 6: DType.i8,
              9: DType.i64, 10: DType.bool, 14: DType.bf16, 19: DType.f16}
_TF_DTYPE_NAMES = {7: "string", 8: "complex64", 18: "complex128", 20: "resource", 21: "variant",
                   17: "uint16", 22: "uint32", 23: "uint64"}
DT_RESOURCE = 20
DT_VARIANT = 21     # a TensorList, among others


# -- importer values -------------------------------------------------------------------------
# What a TF tensor becomes while importing: an IR Value, or one of these.

class Const:
    """A constant known at import time, put into the graph only when a lifted node uses it.

    `full`, when set, makes it a *splat*: the constant stands for `array` broadcast to the
    shape `full`, some of whose dims are run-time sizes (where `array` has 1). Keras fills such
    tensors (`ones_like(scores)` in attention masks). Elementwise ops whose other operands
    carry those run-time dims use the small array and broadcast it; any other use builds the
    full tensor with `dynamic_broadcast_to` (`Lifter.value`).
    """

    __slots__ = ("array", "origin", "name", "value", "full", "broadcast")

    def __init__(self, array: np.ndarray, origin: "TFNode | None", name: str | None = None,
                 full: list | None = None):
        self.array = array
        self.origin = origin
        self.name = name
        self.value: Value | None = None
        self.full = full
        self.broadcast: Value | None = None   # a splat built to its full run-time shape


class Sym:
    """An integer tensor (a shape or a piece of one) whose entries may be run-time sizes.

    Import-time arithmetic on it stays symbolic while it can (products, exact quotients,
    slicing, concatenation); where a TF op needs it as a tensor, or computes something a
    monomial cannot hold (`seq + 1`), it is built in the IR from `shape_of` the tensors its
    symbols come from (`Lifter.value`), and `value` caches that."""

    __slots__ = ("array", "dtype", "value")

    def __init__(self, array: np.ndarray, dtype: np.dtype):
        self.array = array      # object array of ints and SymDims
        self.dtype = np.dtype(dtype)
        self.value: Value | None = None


class Complex:
    """A complex tensor as its real and imaginary parts (entries of a float dtype). The IR has
    no complex dtype: complex values exist only between tf.complex and real/imag, through
    the FFTs (`ops/spectral.py`), which compute on the parts."""

    __slots__ = ("real", "imag")

    def __init__(self, real, imag):
        self.real, self.imag = real, imag


class Resource:
    """A captured variable handle; `ReadVariableOp` turns it into a Const."""

    __slots__ = ("handle", "name")

    def __init__(self, handle, name: str | None):
        self.handle = handle
        self.name = name


class TensorList:
    """A TF TensorList (a TensorArray: Keras RNNs read their inputs from one and write their
    outputs into one) of known length and element shape, held as the plain tensor
    [length, *element] it stacks to.

    `tensor` is that tensor, or None while no element is set (every element is zeros then;
    it is built on first use). `length` is the number of elements (int or SymDim), None when
    it is computed at run time (`length_entry` then holds that scalar). `elem` is the element
    shape (ints and SymDims), with None for a dim not known yet, or None altogether for an
    unknown rank: TensorListReserve may leave it open (Keras reserves its outputs as
    [None, units]) until a TensorListSetItem writes an item. `learn`, when set, is called
    with the element shape that first SetItem writes: a loop body filling a list whose element
    shape is still open tells the loop (`ops/control.py`) that way."""

    __slots__ = ("tensor", "length", "elem", "dtype", "length_entry", "learn")

    def __init__(self, tensor, length, elem: list | None, dtype: DType, length_entry=None,
                 learn=None):
        self.tensor = tensor
        self.length = length
        self.elem = None if elem is None else list(elem)
        self.dtype = dtype
        self.length_entry = length_entry
        self.learn = learn

    @property
    def open(self) -> bool:
        """True while no element is set and the element shape is not fully known."""
        return self.tensor is None and (self.elem is None or None in self.elem)


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


Entry = Any  # Value | Const | Sym | Complex | Resource | TensorList | Dead | Pending | Lazy


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


# -- the lifter ------------------------------------------------------------------------------

class Lifter:
    """Lowers TFNodes one at a time into a Graph; the `ctx` handed to `ops.TABLE` functions."""

    def __init__(self, graph: Graph, scope_fn: Callable[[str], str]):
        self.graph = graph
        self._scope_fn = scope_fn
        self._scope_cache: dict[str, str] = {}
        self._counter = [0]     # fresh symbols, shared with child lifters: names stay unique
        # Set by the driver for control flow (`ops/control.py`): the graph reader, which
        # inlines the library's functions (`function_call`) and orders nodes (`topo_order`),
        # and the whole op table (this table plus the driver's own entries).
        self.reader = None
        self.table: dict | None = None
        self.env: dict[str, list[Entry] | None] = {}   # None: node failed (already reported)
        self.diagnostics: list[Diagnostic] = []
        self.unsupported = False
        self.node: TFNode | None = None
        self.scope = ""
        self.loc = ""
        self._sym_shapes: dict[int, list] = {}
        # Where each run-time size can be read: symbol -> (value, axis), and the cached
        # shape_of / per-dim values built from them.
        self._sym_origin: dict[str, tuple[Value, int]] = {}
        self._shape_values: dict[int, Value] = {}
        self._dim_values: dict[str, Value] = {}

    def child(self, graph: Graph) -> "Lifter":
        """A lifter for a region graph (a loop body, an if branch) nested in this one's: the
        same scopes and location, fresh symbols that never clash with this lifter's, its own
        entries and its own diagnostics (the caller decides whether they are reported)."""
        sub = Lifter(graph, self._scope_fn)
        sub._scope_cache = self._scope_cache
        sub._counter = self._counter
        sub.reader, sub.table = self.reader, self.table
        sub.node, sub.scope, sub.loc = self.node, self.scope, self.loc
        return sub

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
                                f"{fmt_dims(e.array.ravel())}; it must be a constant")
            raise LiftError(f"{what} must be a constant, but it is computed at run time")
        return c

    def dims(self, e: Entry, what: str) -> list:
        """A 1-D shape-like operand as a list of ints and SymDims."""
        if isinstance(e, Sym):
            return list(e.array.ravel())
        return [int(d) for d in np.asarray(self.static(e, what)).ravel()]

    def type(self, e: Entry) -> TensorType:
        """The IR type `e` has (or will have once it is a Value); a Complex has the type of
        its parts."""
        if isinstance(e, Complex):
            return self.type(e.real)
        if isinstance(e, Value):
            return e.type
        if isinstance(e, Const):
            # A splat has its full (run-time) shape, not the shape of the array it repeats.
            shape = e.array.shape if e.full is None else [to_ir_dim(d) for d in e.full]
            return TensorType(DType.from_numpy(e.array.dtype), shape)
        if isinstance(e, Sym):
            return TensorType(DType.from_numpy(e.dtype), e.array.shape)
        if isinstance(e, Lazy):
            return e.type
        if isinstance(e, TensorList):
            raise LiftError(_LIST_AS_TENSOR)
        if isinstance(e, (Pending, Dead)):
            return self.value(e).type        # raises why it cannot be used
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
            for axis, d in enumerate(e.type.shape):
                if isinstance(d, int):
                    known.append(d)
                    continue
                if d == UNKNOWN:
                    d = self.fresh_symbol()
                self._sym_origin.setdefault(d, (e, axis))
                known.append(SymDim.of(d))
            self._sym_shapes[id(e)] = known
        return list(known)

    def fresh_symbol(self) -> str:
        """A new name for a run-time size nothing else is known to equal (`?7`)."""
        self._counter[0] += 1
        return f"?{self._counter[0]}"

    def set_sym_shape(self, v: Entry, dims: Sequence) -> None:
        """Records what a value's `?` dims are (e.g. `batch*8` after a reshape to [-1, 32])."""
        if isinstance(v, Value):
            self._sym_shapes[id(v)] = list(dims)
            for axis, d in enumerate(dims):
                if isinstance(d, SymDim) and d.coef == 1 and len(d.syms) == 1:
                    self._sym_origin.setdefault(d.syms[0], (v, axis))

    def can_compute(self, d) -> bool:
        """True when the size `d` (int or SymDim) can be built in this lifter's graph: every
        symbol in it is a dim of a value the lifter has seen."""
        return not isinstance(d, SymDim) or all(s in self._sym_origin for s in d.syms)

    # -- run-time shape values ---------------------------------------------------------------
    def _dim_value(self, name: str) -> Value:
        """The run-time size `name` as an i32[1] tensor: a slice of `shape_of` the first
        value seen with that dim."""
        v = self._dim_values.get(name)
        if v is None:
            src, axis = self._sym_origin[name]
            shape = self._shape_values.get(id(src))
            if shape is None:
                shape = self._shape_values[id(src)] = self.graph.add(
                    "shape_of", [src], {"dtype": DType.i32}, scope=self.scope,
                    loc=self.loc).output
            v = self._dim_values[name] = self.graph.add(
                "slice", [shape], {"begin": [axis], "size": [1]}, scope=self.scope,
                loc=self.loc).output
        return v

    def _entry_value(self, d) -> Value:
        """One entry of a Sym (int or SymDim monomial) as an i32[1] tensor."""
        if not isinstance(d, SymDim):
            return self.graph.constant(np.asarray([int(d)], np.int32), scope=self.scope,
                                       loc=self.loc)
        out = None
        for name in d.syms:
            dv = self._dim_value(name)
            out = dv if out is None else self.graph.add(
                "mul", [out, dv], scope=self.scope, loc=self.loc).output
        if d.coef != 1:
            coef = self.graph.constant(np.asarray([d.coef], np.int32), scope=self.scope,
                                       loc=self.loc)
            out = self.graph.add("mul", [out, coef], scope=self.scope, loc=self.loc).output
        return out

    def materialize(self, sym: Sym) -> Value:
        """A Sym as an IR integer tensor computed at run time from `shape_of`."""
        if sym.value is not None:
            return sym.value
        flat = [self._entry_value(d) for d in sym.array.ravel()]
        if not flat:
            v = self.graph.constant(np.zeros(sym.array.shape, sym.dtype), scope=self.scope,
                                    loc=self.loc)
        else:
            v = flat[0] if len(flat) == 1 else self.graph.add(
                "concat", flat, {"axis": 0}, scope=self.scope, loc=self.loc).output
            if sym.array.shape != (len(flat),):
                v = self.graph.add("reshape", [v], {"shape": list(sym.array.shape)},
                                   scope=self.scope, loc=self.loc).output
            if sym.dtype != np.int32:
                v = self.graph.add("cast", [v], {"to": DType.from_numpy(sym.dtype)},
                                   scope=self.scope, loc=self.loc).output
        sym.value = v
        return v

    def shape_value(self, dims: Sequence, dtype=np.int32) -> Value:
        """A shape (ints and SymDims) as an IR integer tensor, constant when all static."""
        arr = np.empty(len(dims), dtype=object)
        arr[:] = list(dims)
        if not any(isinstance(d, SymDim) for d in dims):
            return self.graph.constant(np.asarray([int(d) for d in dims], dtype).reshape(
                len(dims)), scope=self.scope, loc=self.loc)
        return self.materialize(Sym(arr, dtype))

    def dynamic(self, op: str, inputs: Sequence[Entry], dims: Sequence, attrs=None) -> Value:
        """Emits dynamic shape op `op` whose result has the shape `dims` (ints and SymDims):
        the IR type names what it can (`dims` attribute), the lifter keeps the rest."""
        attrs = dict(attrs or {}, dims=[to_ir_dim(d) for d in dims])
        v = self.emit1(op, inputs, attrs)
        if isinstance(v, Value):
            self.set_sym_shape(v, dims)
        return v

    def _broadcast_splat(self, e: Const) -> Value:
        """A splat built to its full run-time shape."""
        if e.broadcast is None:
            small = self.value(e, splat_ok=True)
            shape = self.shape_value(e.full)
            e.broadcast = self.dynamic("dynamic_broadcast_to", [small, shape], e.full)
        return e.broadcast

    def value(self, e: Entry, *, splat_ok: bool = False) -> Value:
        """`e` as an IR Value; constants are added to the graph on first use."""
        if isinstance(e, Value):
            return e
        if isinstance(e, Const):
            if e.full is not None and not splat_ok:
                return self._broadcast_splat(e)
            if e.value is None:
                scope = self.scope_of(e.origin) if e.origin is not None else self.scope
                loc = f"tf:{e.origin.op}:{e.origin.name}" if e.origin is not None else self.loc
                e.value = self.graph.constant(e.array, name=e.name, scope=scope, loc=loc)
            return e.value
        if isinstance(e, Sym):
            return self.materialize(e)
        if isinstance(e, Complex):
            raise LiftError("a complex tensor is used by an op that has no complex form here "
                            "(the IR has no complex dtype: complex values are pairs of real "
                            "tensors, which arithmetic, element moves, FFTs and real/imag "
                            "take; see frontends/tf/ops/complex.py)")
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
        if isinstance(e, TensorList):
            raise LiftError(_LIST_AS_TENSOR)
        raise LiftError("a resource handle is used as a tensor (only ReadVariableOp is supported)")

    # -- emitting ----------------------------------------------------------------------------
    def emit(self, op: str, inputs: Sequence[Entry], attrs: dict | None = None, *,
             types: Sequence[TensorType] | None = None) -> list[Entry]:
        """Adds IR op `op` (or folds it when every input is a constant, or evaluates it on
        symbolic shapes) and returns its results."""
        opdef = get_op(op)
        attrs = opdef.complete_attrs(attrs or {})
        if any(isinstance(e, Sym) for e in inputs):
            done = self._emit_symbolic(opdef, inputs, attrs)
            if done is not None:
                return done     # else: computed at run time from shape_of (value())
        consts = [self.const(e) for e in inputs]
        all_const = bool(inputs) and all(c is not None for c in consts)
        full = None
        if any(isinstance(e, Const) and e.full is not None for e in inputs):
            try:
                full = self._splat_result(opdef, inputs, check_covered=not all_const)
            except LiftError:
                # Not a broadcasting elementwise use: build the filled tensors in full.
                inputs = [self._broadcast_splat(e) if isinstance(e, Const) and e.full
                          is not None else e for e in inputs]
                consts = [self.const(e) for e in inputs]
                all_const = all(c is not None for c in consts)
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
            raise LiftError(f"a tensor filled to the run-time shape {fmt_dims(splat.full)} is "
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

    def _emit_symbolic(self, opdef, inputs, attrs) -> list[Entry] | None:
        """Evaluates `opdef` on Sym operands at import time, or returns None when it cannot
        (no symbolic kernel, a computed operand, arithmetic a monomial cannot hold): the
        caller then builds the op in the IR on run-time shape values."""
        kernel = _SYMBOLIC_KERNELS.get(opdef.name)
        if kernel is None:
            return None
        arrays, types = [], []
        for i, e in enumerate(inputs):
            if isinstance(e, Sym):
                arrays.append(e.array)
            else:
                c = self.const(e)
                if c is None:
                    return None
                keep_int = i in kernel[1]
                arrays.append(c if keep_int else np.asarray(c).astype(object))
            types.append(self.type(e))
        out_types = opdef.infer(types, attrs)
        try:
            results = kernel[0](opdef, arrays, attrs)
        except (SymbolicError, TypeError):   # TypeError: a size times a float, and the like
            return None
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


_LIST_AS_TENSOR = ("a TensorList is used as a tensor by an op other than the TensorList ops "
                   "(TensorListStack reads it as one)")


def fmt_dims(dims) -> str:
    """`[batch, 7, 7]`: a shape of ints and SymDims, for messages."""
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


def _cast_sizes(array, attrs):
    """Sizes stay sizes under an integer cast; a float cast (ifft2's 1 / (h * w)) is
    computed at run time."""
    if not attrs["to"].is_int:
        raise SymbolicError(f"a run-time size cast to {attrs['to']}")
    return array


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
    "add": (_ir_kernel, ()),          # x + 0 and the like; `seq + 1` falls back to run time
    "sub": (_ir_kernel, ()),
    # exact quotients stay symbolic (SymDim // int); others fall back to run time
    "floor_div": (lambda opdef, arrays, attrs: [np.floor_divide(arrays[0], arrays[1])], ()),
    "cast": (lambda opdef, arrays, attrs: [_cast_sizes(arrays[0], attrs)], ()),
    "reduce_prod": (_reduce_obj(np.prod), ()),
}
