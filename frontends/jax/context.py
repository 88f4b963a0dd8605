"""JAX / Flax frontend: lifts a traced jaxpr (`jax.make_jaxpr`) into the IR.

- `from_jax(fn, example_args, params=..., names=...)` traces `fn(*args)` or `fn(params, *args)`;
  parameter leaves become named constants (`Dense_0/kernel`, from their pytree paths).
- `from_flax(module, variables, example_args)` (linen) and `from_flax(nnx_module, example_args)`
  (NNX) wrap `from_jax`.
- Example args may be arrays or `jax.ShapeDtypeStruct`s with symbolic dims
  (`jax.export.symbolic_shape("b, 8")`); a symbol becomes the IR symbol of the same name.
- Each equation becomes IR nodes through one small function per primitive (`jax_ops.TABLE`);
  call-like primitives (pjit/jit, closed_call, custom_jvp/vjp calls, remat) are inlined,
  except jit calls recognized by function name (`_marker`: the QAT `fake_quant` marker).
  Node scope = the equation's name stack (Flax module path, e.g. `MLP/fc1`), loc =
  `jax:{primitive}:{file}:{line}` of the user frame.
- Equations whose inputs are all constants are folded at import with the IR reference kernels.
- Unsupported primitives are all collected first and raised together in one ConversionError.
"""

from __future__ import annotations

import inspect
import os
import re
from typing import Any, Sequence

import numpy as np

from ..ir.errors import ConversionError, Diagnostic, InferenceError
from ..ir.graph import Graph, Module, Value
from ..ir.ops import get_op
from ..ir.types import DType, TensorType, UNKNOWN

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
        self.array = np.asarray(array)
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
    try:
        return DType.from_numpy(np.dtype(dt))
    except (ValueError, TypeError):
        raise LiftError(f"dtype {dt} has no IR dtype") from None


# -- the lifter ------------------------------------------------------------------------------

class Lifter:
    def __init__(self, graph: Graph):
        self.graph = graph
        self.env: dict[Any, Any] = {}
        self.diagnostics: list[Diagnostic] = []
        self.scope = ""
        self.loc = ""
        self.prim = ""
        self._names: set[str] = set()

    # entries are Value | Const
    def shape(self, e) -> tuple:
        return e.array.shape if isinstance(e, Const) else e.type.shape

    def dtype(self, e) -> DType:
        return ir_dtype(e.array.dtype) if isinstance(e, Const) else e.type.dtype

    def const(self, e) -> np.ndarray | None:
        return e.array if isinstance(e, Const) else None

    def value(self, e) -> Value:
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

    # -- shape helpers used by the op table
    def reshape(self, e, dims):
        dims = list(dims)
        if tuple(dims) == tuple(self.shape(e)):
            return e
        shape = [d if isinstance(d, int) else -1 for d in dims]
        if shape.count(-1) > 1:
            raise LiftError(f"reshape to {dims}: more than one symbolic dim")
        return self.emit("reshape", [e], {"shape": shape})

    def transpose(self, e, perm):
        perm = [int(p) for p in perm]
        if perm == list(range(len(perm))):
            return e
        return self.emit("transpose", [e], {"perm": perm})

    def cast(self, e, dt: DType):
        if self.dtype(e) == dt:
            return e
        return self.emit("cast", [e], {"to": dt})

    def scalar(self, v, like) -> Const:
        return Const(np.asarray(v, dtype=self.dtype(like).np))


def _frame(source_info):
    """(file, line) of the most useful user frame: the first outside site-packages, else the
    first frame JAX considers user code."""
    from jax._src import source_info_util as siu
    tb = getattr(source_info, "traceback", None)
    if tb is None:
        return None
    try:
        frames = list(siu.user_frames(tb))
    except Exception:
        return None
    for f in frames:
        if "site-packages" not in f.file_name and f"{os.sep}frontends{os.sep}jax" not in \
                f.file_name:
            return f.file_name, f.start_line
    return (frames[0].file_name, frames[0].start_line) if frames else None


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


def _collect_unsupported(jaxpr, table, out, outer_scope="", outer_fl=None):
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        scope, fl = _where(eqn, outer_scope, outer_fl)
        if _marker(eqn, table) is not None:
            continue
        sub = _sub_jaxpr(eqn) if name in _CALL_PRIMS else None
        if sub is not None:
            _collect_unsupported(sub[0], table, out, scope, fl)
            continue
        if name in table:
            continue
        loc = f"jax:{name}:{fl[0]}:{fl[1]}" if fl else f"jax:{name}"
        out.append(Diagnostic(f"primitive {name} has no IR lowering",
                              node=f"{name} -> {', '.join(str(v.aval) for v in eqn.outvars)}",
                              scope=scope, loc=loc))


def _read(ctx: Lifter, atom):
    from jax.extend import core as jcore
    if isinstance(atom, jcore.Literal):
        aval = atom.aval
        return Const(np.asarray(atom.val, dtype=getattr(aval, "dtype", None)))
    return ctx.env[atom]


def _lift_jaxpr(ctx: Lifter, jaxpr, consts, args, table, outer_scope="", outer_fl=None):
    for v, c in zip(jaxpr.constvars, consts):
        ctx.env[v] = Const(np.asarray(c))
    for v, a in zip(jaxpr.invars, args):
        ctx.env[v] = a
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        scope, fl = _where(eqn, outer_scope, outer_fl)
        ins = [_read(ctx, a) for a in eqn.invars]
        lower = _marker(eqn, table) or table.get(name)
        if any(x is DEAD for x in ins):
            outs = [DEAD] * len(eqn.outvars)
        elif lower is not None:
            ctx.scope, ctx.prim = scope, name
            ctx.loc = f"jax:{name}:{fl[0]}:{fl[1]}" if fl else f"jax:{name}"
            try:
                outs = lower(ctx, eqn, ins)
                if not isinstance(outs, list):
                    outs = [outs]
            except LiftError as e:
                ctx.diagnostics.append(Diagnostic(
                    str(e), node=f"{name} -> {', '.join(str(v.aval) for v in eqn.outvars)}",
                    scope=scope, loc=ctx.loc))
                outs = [DEAD] * len(eqn.outvars)
        else:
            sub = _sub_jaxpr(eqn)
            sub_consts = sub[1] if sub else []
            outs = _lift_jaxpr(ctx, sub[0], sub_consts, ins, table, scope, fl)
        for v, o in zip(eqn.outvars, outs):
            ctx.env[v] = o
    return [_read(ctx, v) for v in jaxpr.outvars]


# -- naming ----------------------------------------------------------------------------------

def _key_str(k) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(k, attr):
            return str(getattr(k, attr))
    return str(k)


def _path_name(path, strip_params=True) -> str:
    parts = [_key_str(k) for k in path]
    if strip_params and len(parts) > 1 and parts[0] == "params":
        parts = parts[1:]
    if len(parts) > 1 and parts[-1] == "value":  # nnx.Variable / VariableState payload
        parts = parts[:-1]
    return "/".join(parts) or "param"


def _default_arg_names(fn, n: int, skip: int) -> list[str]:
    try:
        ps = list(inspect.signature(fn).parameters.values())[skip:]
    except (TypeError, ValueError):
        ps = []
    names = [p.name for p in ps if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(names) >= n and len(set(names[:n])) == n:
        return names[:n]
    return [f"x{i}" for i in range(n)]


def _version() -> str:
    try:
        from importlib.metadata import version
        return version("tensorforge")
    except Exception:
        return "dev"


# -- public API ------------------------------------------------------------------------------

def from_jax(fn, example_args: Sequence, *, params=None, names: Sequence[str] | None = None,
             output_names: Sequence[str] | None = None) -> Module:
    """Lifts `fn(*example_args)` (or `fn(params, *example_args)`) into a Module.

    `example_args` are arrays or `jax.ShapeDtypeStruct`s (symbolic dims allowed); pytree args
    are flattened (inputs named `name/path`). `params` leaves become named constants. Raises
    ConversionError listing every unsupported primitive (or every other lowering problem)."""
    import jax

    from . import jax_ops

    example_args = list(example_args) if isinstance(example_args, (list, tuple)) \
        else [example_args]
    try:
        if params is None:
            closed = jax.make_jaxpr(fn)(*example_args)
        else:
            closed = jax.make_jaxpr(fn)(params, *example_args)
    except Exception as e:
        raise ConversionError(f"cannot trace the JAX function: {type(e).__name__}: "
                              f"{str(e).strip().splitlines()[0] if str(e).strip() else ''}") from e
    jaxpr = closed.jaxpr

    # Input leaves and names.
    arg_names = list(names) if names is not None else \
        _default_arg_names(fn, len(example_args), 1 if params is not None else 0)
    if len(arg_names) != len(example_args):
        raise ConversionError(f"{len(arg_names)} input names given for {len(example_args)} "
                              f"example args")
    leaf_names = []
    for an, a in zip(arg_names, example_args):
        leaves = jax.tree_util.tree_flatten_with_path(a)[0]
        if len(leaves) == 1 and not leaves[0][0]:
            leaf_names.append(an)
        else:
            leaf_names += [f"{an}/{_path_name(p, False)}" for p, _ in leaves]
    param_leaves = jax.tree_util.tree_flatten_with_path(params)[0] if params is not None else []
    n_params = len(param_leaves)
    if len(jaxpr.invars) != n_params + len(leaf_names):
        raise ConversionError(f"traced function takes {len(jaxpr.invars)} leaves, expected "
                              f"{n_params} parameters + {len(leaf_names)} inputs")

    table = jax_ops.TABLE
    unsupported: list[Diagnostic] = []
    _collect_unsupported(jaxpr, table, unsupported)
    if unsupported:
        raise ConversionError("unsupported JAX primitives", unsupported)

    graph = Graph("main")
    ctx = Lifter(graph)
    args, problems = [], []
    for (path, leaf) in param_leaves:
        args.append(Const(np.asarray(leaf), _path_name(path)))
    for var, nm in zip(jaxpr.invars[n_params:], leaf_names):
        aval = var.aval
        try:
            t = TensorType(ir_dtype(aval.dtype), tuple(ir_dim(d) for d in aval.shape))
        except LiftError as e:
            problems.append(Diagnostic(str(e), node=nm))
            continue
        args.append(graph.add_input(t, nm))
    if problems:
        raise ConversionError("cannot lift the function's inputs", problems)

    outs = _lift_jaxpr(ctx, jaxpr, closed.consts, args, table)
    if ctx.diagnostics:
        raise ConversionError("cannot lift the JAX function", ctx.diagnostics)
    out_names = list(output_names) if output_names is not None else \
        [f"output_{i}" for i in range(len(outs))]
    ctx.scope, ctx.loc = "", "jax:output"
    results = []
    for o, on in zip(outs, out_names):
        v = ctx.value(o)
        if v.producer is not None and v.producer.op != "constant" and v.name is None:
            v.name = on
        results.append(v)
    graph.set_outputs(results)
    meta = {"source": "jax", "producer": f"tensorforge {_version()}",
            "input_names": [v.name for v in graph.inputs], "output_names": out_names}
    return Module([graph], meta)


def from_flax(module, *args, names: Sequence[str] | None = None) -> Module:
    """`from_flax(linen_module, variables, example_args)` or `from_flax(nnx_module,
    example_args)`."""
    try:
        from flax import nnx
    except Exception:  # pragma: no cover - flax without nnx
        nnx = None
    if nnx is not None and isinstance(module, nnx.Module):
        if len(args) != 1:
            raise ConversionError("from_flax(nnx_module, example_args) takes example_args only")
        (example_args,) = args
        graphdef, state = nnx.split(module)

        def fn(state, *xs):
            return nnx.merge(graphdef, state)(*xs)
        if names is None:
            names = _default_arg_names(type(module).__call__, len(_as_list(example_args)), 1)
        return from_jax(fn, _as_list(example_args), params=state, names=names)
    if len(args) != 2:
        raise ConversionError("from_flax(linen_module, variables, example_args) needs the "
                              "variables and the example args")
    variables, example_args = args

    def fn(v, *xs):
        return module.apply(v, *xs)
    if names is None:
        names = _default_arg_names(type(module).__call__, len(_as_list(example_args)), 1)
    return from_jax(fn, _as_list(example_args), params=variables, names=names)


def _as_list(x):
    return list(x) if isinstance(x, (list, tuple)) else [x]
