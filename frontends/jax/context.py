"""The lifting context of the JAX frontend: what every op lowering sees, and the jaxpr walk.

- `Lifter` (`ctx` in the op tables) holds the graph under construction, the environment
  (jaxpr var -> IR `Value` or import-time `Const`), the current scope/loc and the collected
  diagnostics; `ctx.emit` adds an IR node, or folds it with the IR reference kernel when every
  input is a constant; `reshape`/`transpose`/`cast`/`scalar` are shape helpers.
- `Lifter.lift_jaxpr` walks a jaxpr: each equation goes through the table the Lifter was built
  with (primitive name -> lowering); call-like primitives (pjit/jit, closed_call, custom_jvp/vjp
  calls, remat) are inlined, except jit calls recognized by function name (`_marker`). A
  lowering inlines a sub-jaxpr with `ctx.inline(eqn, ins)`, without importing the driver.
- Node scope = the equation's name stack (Flax module path, e.g. `MLP/fc1`), loc =
  `jax:{primitive}:{file}:{line}` of the user frame (`_frame`).
- A primitive the table cannot lower is evaluated by JAX when its inputs are all constants
  (`_fold_with_jax`), else reported; lifting goes on, so every problem is listed at once.

Imports the IR only (and JAX lazily): op tables import this module, never the reverse.
"""

from __future__ import annotations

import os
import re
from typing import Any, Sequence

import numpy as np

from ...ir.errors import Diagnostic, InferenceError
from ...ir.graph import Graph, Value
from ...ir.ops import get_op
from ...ir.types import DType, UNKNOWN

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class LiftError(Exception):
    """A primitive that cannot be lowered as used (the message says why)."""


class _Dead:
    """Marks the results of an equation that failed to lower (already reported)."""


DEAD = _Dead()


class Const:
    """A constant known at import time (literal, closed-over const, parameter, folded value)."""

    __slots__ = ("array", "name", "value")

    def __init__(self, array, name: str | None = None):
        self.array = np.asanyarray(array)  # (a PRNG key stays a _KeyArray)
        self.name = name
        self.value: Value | None = None  # the graph constant, once materialized


# -- dims ------------------------------------------------------------------------------------

def ir_dim(d) -> int | str:
    """A JAX dim (int or symbolic expression) as an IR dim: int, symbol name, or `?`."""
    if isinstance(d, (int, np.integer)):
        return int(d)
    try:
        return int(d)
    except Exception:  # symbolic: InconclusiveDimensionOperation and friends
        s = str(d).strip()
        return s if _IDENT.match(s) else UNKNOWN


def ir_dtype(dt) -> DType:
    """A JAX / NumPy dtype as an IR DType (LiftError if the IR has none)."""
    try:
        return DType.from_numpy(np.dtype(dt))
    except (ValueError, TypeError):
        raise LiftError(f"dtype {dt} has no IR dtype") from None


# -- run-time sizes --------------------------------------------------------------------------

class _RunTimeDim:
    """A size known at run time as an IR i32[1] entry. JAX evaluates a dim expression
    (`2*seq + 1`, `seq // 2`) with these in place of its variables; the arithmetic it does
    becomes IR nodes (sizes are non-negative, so truncating division is floor division)."""

    def __init__(self, ctx: "Lifter", value):
        self.ctx, self.value = ctx, value

    def _entry(self, other):
        if isinstance(other, _RunTimeDim):
            return other.value
        return Const(np.asarray([int(other)], np.int32))

    def _op(self, op, a, b) -> "_RunTimeDim":
        return _RunTimeDim(self.ctx, self.ctx.emit(op, [a, b]))

    def __add__(self, other):
        return self._op("add", self.value, self._entry(other))

    __radd__ = __add__

    def __mul__(self, other):
        return self._op("mul", self.value, self._entry(other))

    __rmul__ = __mul__

    def __divmod__(self, other):
        q = self._op("div", self.value, self._entry(other))
        return q, self._op("sub", self.value, (q * other).value)

    def __rdivmod__(self, other):
        q = self._op("div", self._entry(other), self.value)
        return q, _RunTimeDim(self.ctx, self._entry(other)) + (q * self) * -1


class _RunTimeEnv(dict):
    """JAX's dim-variable environment, filled on first use with run-time sizes."""

    def __init__(self, ctx: "Lifter"):
        super().__init__()
        self.ctx = ctx

    def __missing__(self, name):
        if name not in self.ctx._dim_origin:
            raise KeyError(name)
        v = self[name] = _RunTimeDim(self.ctx, self.ctx._var_value(name))
        return v


# -- the lifter ------------------------------------------------------------------------------

class Lifter:
    """The state of one lifting: the graph being built, the jaxpr environment, the lowering
    table, the current equation's scope/loc, and the diagnostics collected so far."""

    def __init__(self, graph: Graph, table: dict):
        self.graph = graph
        self.table = table
        self.env: dict[Any, Any] = {}
        self.diagnostics: list[Diagnostic] = []
        self.scope = ""
        self.loc = ""
        self.prim = ""
        self.fl: tuple | None = None  # (file, line) of the current equation's user frame
        self._names: set[str] = set()
        # Run-time sizes: dimension variable -> (graph input, axis) it can be read from, and
        # the i32[1] values read so far.
        self._dim_origin: dict[str, tuple[Value, int]] = {}
        self._dim_values: dict[str, Value] = {}
        self._shape_of: dict[int, Value] = {}

    # entries are Value | Const
    def shape(self, e) -> tuple:
        """The shape of an entry (IR dims)."""
        return e.array.shape if isinstance(e, Const) else e.type.shape

    def dtype(self, e) -> DType:
        """The IR dtype of an entry."""
        return ir_dtype(e.array.dtype) if isinstance(e, Const) else e.type.dtype

    def const(self, e) -> np.ndarray | None:
        """The array of a constant entry, None for a graph value."""
        return e.array if isinstance(e, Const) else None

    def value(self, e) -> Value:
        """The entry as a graph Value (a constant is materialized once, under a unique name)."""
        if isinstance(e, Value):
            return e
        if e.value is None:
            name = e.name
            if name is not None:
                base, i = name, 1
                while name in self._names:
                    name, i = f"{base}_{i}", i + 1
                self._names.add(name)
            e.value = self.graph.constant(e.array, name=name, scope=self.scope, loc=self.loc)
        return e.value

    def emit(self, op: str, inputs: Sequence, attrs: dict | None = None, n_out: int = 1):
        """Adds an IR node (or folds it when every input is a constant); returns its results
        (one entry, or a list when n_out != 1)."""
        opdef = get_op(op)
        attrs = opdef.complete_attrs(dict(attrs or {}))
        if all(isinstance(e, Const) for e in inputs):
            try:
                outs = opdef.kernel([e.array for e in inputs], attrs)
            except Exception as ex:
                raise LiftError(f"folding {op} failed: {ex}") from None
            named = [e.name for e in inputs if e.name]
            name = named[0] if len(named) == 1 and len(outs) == 1 else None
            res = [Const(np.asarray(o), name) for o in outs]
        else:
            scope = self.scope
            if not scope:  # no name stack (e.g. NNX): scope from the parameters used
                named = [e.name for e in inputs if isinstance(e, Const) and e.name
                         and "/" in e.name]
                scope = named[0].rpartition("/")[0] if named else ""
            try:
                node = self.graph.add(op, [self.value(e) for e in inputs], attrs,
                                      scope=scope, loc=self.loc)
            except InferenceError as ex:
                raise LiftError(str(ex)) from None
            res = list(node.outputs)
        return res[0] if n_out == 1 else res

    # -- run-time sizes
    def note_input_dims(self, value: Value) -> None:
        """Records where each dimension variable of a graph input's shape can be read."""
        for axis, d in enumerate(value.type.shape):
            if isinstance(d, str) and d != UNKNOWN:
                self._dim_origin.setdefault(d, (value, axis))

    def _var_value(self, name: str) -> Value:
        v = self._dim_values.get(name)
        if v is None:
            if name not in self._dim_origin:
                raise LiftError(f"the run-time size {name} is not a dim of any input")
            src, axis = self._dim_origin[name]
            shape = self._shape_of.get(id(src))
            if shape is None:
                shape = self._shape_of[id(src)] = self.emit("shape_of", [src])
            v = self._dim_values[name] = self.emit("slice", [shape], {"begin": [axis],
                                                                      "size": [1]})
        return v

    def dim_value(self, d) -> Any:
        """A dim as an i32[1] entry: a constant for a static size, else computed at run time
        from `shape_of` the inputs (a JAX dim expression such as `2*seq + 1` is evaluated on
        IR values; an IR symbol name is read directly)."""
        if isinstance(d, (int, np.integer)):
            return Const(np.asarray([int(d)], np.int32))
        if isinstance(d, str):
            return self._var_value(d)
        out = d._evaluate(_RunTimeEnv(self))
        return out.value if isinstance(out, _RunTimeDim) else Const(np.asarray([int(out)],
                                                                                np.int32))

    def shape_value(self, dims) -> Any:
        """A shape (ints, IR symbol names, JAX dim expressions; `?` as -1) as an i32 entry."""
        parts = [Const(np.asarray([-1], np.int32)) if isinstance(d, str) and d == UNKNOWN
                 else self.dim_value(d) for d in dims]
        if all(isinstance(p, Const) for p in parts):
            return Const(np.concatenate([p.array for p in parts]) if parts
                         else np.zeros(0, np.int32))
        return parts[0] if len(parts) == 1 else self.emit("concat", parts, {"axis": 0})

    # -- shape helpers used by the op table
    def reshape(self, e, dims):
        """`e` reshaped to `dims` (ints, IR symbol names, or JAX dim expressions), or `e` if
        already so. One run-time dim is the static reshape's -1; more make a
        `dynamic_reshape` whose target is computed from the inputs' shapes at run time."""
        ir_dims = [ir_dim(d) for d in dims]
        if tuple(ir_dims) == tuple(self.shape(e)):
            return e
        shape = [d if isinstance(d, int) else -1 for d in ir_dims]
        if shape.count(-1) <= 1:
            return self.emit("reshape", [e], {"shape": shape})
        if sum(isinstance(d, str) and d == UNKNOWN for d in dims) > 1:
            raise LiftError(f"reshape to {ir_dims}: more than one size that is not a named "
                            f"input dim")
        return self.emit("dynamic_reshape", [e, self.shape_value(dims)], {"dims": ir_dims})

    def transpose(self, e, perm):
        """`e` transposed by `perm`, or `e` for the identity permutation."""
        perm = [int(p) for p in perm]
        if perm == list(range(len(perm))):
            return e
        return self.emit("transpose", [e], {"perm": perm})

    def cast(self, e, dt: DType):
        """`e` cast to `dt`, or `e` if it already has that dtype."""
        if self.dtype(e) == dt:
            return e
        return self.emit("cast", [e], {"to": dt})

    def scalar(self, v, like) -> Const:
        """A scalar constant `v` in the dtype of `like`."""
        return Const(np.asarray(v, dtype=self.dtype(like).np))

    # -- the walk
    def lift_jaxpr(self, jaxpr, consts, args, outer_scope: str = "", outer_fl=None) -> list:
        """Lifts `jaxpr` with `consts` and the entries `args` bound to its vars; returns the
        entries of its outputs. Problems are collected in `diagnostics` (their results are
        DEAD), not raised."""
        for v, c in zip(jaxpr.constvars, consts):
            self.env[v] = Const(np.asarray(c))
        for v, a in zip(jaxpr.invars, args):
            self.env[v] = a
        for eqn in jaxpr.eqns:
            name = eqn.primitive.name
            scope, fl = _where(eqn, outer_scope, outer_fl)
            ins = [_read(self, a) for a in eqn.invars]
            lower = _marker(eqn, self.table) or self.table.get(name)
            if any(x is DEAD for x in ins):
                if lower is None and name not in _CALL_PRIMS:  # still worth reporting
                    self._no_lowering(eqn, scope, fl)
                outs = [DEAD] * len(eqn.outvars)
            elif lower is not None:
                self.scope, self.prim, self.fl = scope, name, fl
                self.loc = _loc(name, fl)
                try:
                    outs = lower(self, eqn, ins)
                    if not isinstance(outs, list):
                        outs = [outs]
                except LiftError as e:
                    if all(isinstance(x, Const) for x in ins):
                        # Constant inputs (a PRNG chain on uint32 key bits, a table in a
                        # dtype the IR lacks): JAX evaluates it at import time.
                        outs = self._fold_with_jax(eqn, ins)
                        for v, o in zip(eqn.outvars, outs):
                            self.env[v] = o
                        continue
                    self.diagnostics.append(Diagnostic(
                        str(e), node=f"{name} -> {', '.join(str(v.aval) for v in eqn.outvars)}",
                        scope=scope, loc=self.loc))
                    outs = [DEAD] * len(eqn.outvars)
            elif name not in _CALL_PRIMS:
                self.scope, self.prim, self.fl, self.loc = scope, name, fl, _loc(name, fl)
                outs = self._fold_with_jax(eqn, ins)
            else:
                sub = _sub_jaxpr(eqn)
                sub_consts = sub[1] if sub else []
                outs = self.lift_jaxpr(sub[0], sub_consts, ins, scope, fl)
            for v, o in zip(eqn.outvars, outs):
                self.env[v] = o
        return [_read(self, v) for v in jaxpr.outvars]

    def region(self, name: str, entries: Sequence, build) -> tuple[Graph, list] | None:
        """A region graph (for `while`, `if`, `scan`) named `name`.

        Regions are isolated from above: each Value entry of `entries` becomes a region input
        (the caller passes the same Values as the node's operands, in order); a Const entry is
        copied in as a constant of the region. `build(sub, args)` lifts the body with the
        sub-lifter `sub` and returns its output entries. Returns (graph, the Value entries in
        input order), or None when lifting the body failed (already reported)."""
        graph = Graph(name)
        sub = Lifter(graph, self.table)
        sub.diagnostics = self.diagnostics  # one list: every problem is reported at once
        sub.scope, sub.loc, sub.prim, sub.fl = self.scope, self.loc, self.prim, self.fl
        args, operands = [], []
        for e in entries:
            if isinstance(e, Const):
                args.append(Const(e.array, e.name))
            else:
                v = graph.add_input(e.type, e.name)
                sub.note_input_dims(v)
                args.append(v)
                operands.append(e)
        before = len(self.diagnostics)
        outs = build(sub, args)
        if len(self.diagnostics) > before or any(o is DEAD for o in outs):
            return None
        sub.scope, sub.loc = self.scope, self.loc
        graph.set_outputs([sub.value(o) for o in outs])
        return graph, operands

    def lift_closed(self, closed, args) -> list:
        """Lifts a ClosedJaxpr (a control-flow body) on `args` under the current scope."""
        return self.lift_jaxpr(closed.jaxpr, list(closed.consts), args, self.scope, self.fl)

    def _fold_with_jax(self, eqn, ins) -> list:
        """An equation the table cannot lower whose inputs are all import-time constants
        (a PRNG key split, a random dropout mask from a fixed key, a table built with a
        primitive we lack) is evaluated by JAX itself; otherwise it is reported."""
        if not all(isinstance(e, Const) for e in ins):
            self._no_lowering(eqn, self.scope, self.fl)
            return [DEAD] * len(eqn.outvars)
        try:
            outs = eqn.primitive.bind(*[_jax_operand(e.array) for e in ins], **eqn.params)
        except Exception as ex:
            self.diagnostics.append(Diagnostic(
                f"primitive {eqn.primitive.name} has no IR lowering, and evaluating it on its "
                f"constant inputs failed: {type(ex).__name__}: {ex}",
                node=_eqn_text(eqn), scope=self.scope, loc=self.loc))
            return [DEAD] * len(eqn.outvars)
        outs = outs if eqn.primitive.multiple_results else [outs]
        return [Const(_host_array(o)) for o in outs]

    def _no_lowering(self, eqn, scope, fl) -> None:
        name = eqn.primitive.name
        self.diagnostics.append(Diagnostic(f"primitive {name} has no IR lowering",
                                           node=_eqn_text(eqn), scope=scope, loc=_loc(name, fl)))

    def inline(self, eqn, ins) -> list:
        """Lifts the sub-jaxpr of the call-like equation being lowered (`eqn`, inputs `ins`)
        in place, under the equation's scope and user frame; returns its output entries."""
        jaxpr, consts = _sub_jaxpr(eqn)
        return self.lift_jaxpr(jaxpr, consts, ins, self.scope, self.fl)


# Frames in this directory are tensorforge's own (this frontend), not the
# user's line that `_frame` looks for.
_FRONTEND_DIR = os.path.dirname(os.path.abspath(__file__))


def _in_dir(path: str, directory: str) -> bool:
    return os.path.abspath(path).startswith(directory + os.sep)


def _frame(source_info):
    """(file, line) of the most useful user frame: the first outside site-packages and this
    frontend, else the first frame JAX considers user code (JAX itself leaves out the frames
    of registered libraries, `qat/jax.py` among them)."""
    from jax._src import source_info_util as siu
    tb = getattr(source_info, "traceback", None)
    if tb is None:
        return None
    try:
        frames = list(siu.user_frames(tb))
    except Exception:
        return None
    for f in frames:
        if "site-packages" not in f.file_name and not _in_dir(f.file_name, _FRONTEND_DIR):
            return f.file_name, f.start_line
    return (frames[0].file_name, frames[0].start_line) if frames else None


def _loc(name: str, fl) -> str:
    return f"jax:{name}:{fl[0]}:{fl[1]}" if fl else f"jax:{name}"


def _sub_jaxpr(eqn):
    """(jaxpr, consts) of a call-like equation, or None."""
    for key in ("jaxpr", "call_jaxpr", "fun_jaxpr"):
        j = eqn.params.get(key)
        if j is None:
            continue
        if hasattr(j, "jaxpr") and hasattr(j, "consts"):
            return j.jaxpr, list(j.consts)
        if hasattr(j, "eqns"):
            return j, []
    return None


_CALL_PRIMS = {"pjit", "jit", "closed_call", "core_call", "custom_jvp_call", "custom_vjp_call",
               "custom_vjp_call_jaxpr", "remat", "remat2", "checkpoint", "custom_lin"}


def _marker(eqn, table):
    """The lowering of a jit call recognized by its function name, or None to inline it.

    Table key `jit:PREFIX`, PREFIX = the name up to its first `__` (the rest may encode static
    settings, e.g. `tensorforge_fake_quant__bits8__narrow0__axisnone`); an entry with a
    `matches(eqn)` predicate only claims the equations it accepts."""
    if eqn.primitive.name not in ("jit", "pjit"):
        return None
    fn = table.get("jit:" + str(eqn.params.get("name", "")).split("__", 1)[0])
    if fn is None:
        return None
    matches = getattr(fn, "matches", None)
    return fn if matches is None or matches(eqn) else None


def _join(outer: str, inner: str) -> str:
    return f"{outer}/{inner}" if outer and inner else (outer or inner)


def _where(eqn, outer_scope, outer_fl):
    scope = _join(outer_scope, str(eqn.source_info.name_stack))
    fl = _frame(eqn.source_info) or outer_fl
    return scope, fl


def _eqn_text(eqn) -> str:
    return f"{eqn.primitive.name} -> {', '.join(str(v.aval) for v in eqn.outvars)}"


def _host_array(x) -> np.ndarray:
    """A JAX result as a NumPy array; a typed PRNG key array as its raw key data."""
    import jax

    if jax.dtypes.issubdtype(getattr(x, "dtype", np.float32), jax.dtypes.prng_key):
        return _KeyArray(x)
    return np.asarray(x)


class _KeyArray(np.ndarray):
    """A typed PRNG key held as an import-time constant: its key data, remembering the key
    array itself so that JAX can go on evaluating random primitives on it."""

    def __new__(cls, key):
        import jax

        obj = np.asarray(jax.random.key_data(key)).view(cls)
        obj.key = key
        return obj

    def __array_finalize__(self, obj):
        self.key = None  # arithmetic on key data is not a key


def _jax_operand(a: np.ndarray):
    key = getattr(a, "key", None)
    return key if key is not None else np.asarray(a)


def _read(ctx: Lifter, atom):
    from jax.extend import core as jcore
    if isinstance(atom, jcore.Literal):
        aval = atom.aval
        return Const(np.asarray(atom.val, dtype=getattr(aval, "dtype", None)))
    return ctx.env[atom]
