"""TF control flow -> IR region ops: the functional While / StatelessWhile (what
`tf.while_loop` and Keras RNN layers trace to) -> `while`, If / StatelessIf (`tf.cond`)
-> `if` when the condition is computed at run time (one known at import time lifts only the
branch taken), and Case / StatelessCase (`tf.switch_case`) -> a chain of `if`s. These lowerings need the graph reader, which the driver hands the lifter
(`ctx.reader`: `function_call` inlines a library function, `topo_order` orders its nodes).

A loop body, a loop condition and an if branch are FunctionDefs of the graph's library. Each
is lifted by a child lifter (`Lifter.child`) into a region graph of its own, through the same
op table. Regions are isolated from above:

- a tensor argument becomes a region input (the node's operand), its shape seeded with the
  outer lifter's symbolic dims, so sizes the body computes (`Shape` of the hidden state) stay
  in terms of the same symbols;
- a captured variable (a resource argument, Keras' RNN weights) is handed to the body as is:
  its ReadVariableOp there becomes a constant of the region; so is an import-time constant
  that the loop never changes (a fixed number of time steps);
- a TensorList is carried as its tensor [length, *element] (`tensorlist.py`).

A loop-carried value whose shape changes from one iteration to the next (a shape invariant
with `None` dims) is carried with `?` in those dims: the dims `output_shapes` leaves open
start as `?`, and the body is lifted again with `?` wherever its results differ from its
arguments, until they agree. A TensorList reserved with an open element shape (Keras' outputs,
[None, units]) learns it from the body's first TensorListSetItem, and the body is lifted
again with the list as a tensor of that shape. The `T` and `output_shapes` attributes are read
as above; `parallel_iterations` only tunes TF's executor and is ignored.
"""

from __future__ import annotations

import numpy as np

from ....ir.graph import Graph, Value
from ....ir.types import DType, TensorType
from ..context import (DT_RESOURCE, DT_VARIANT, Complex, Const, Dead, Lifter, LiftError,
                       Pending, Resource, TensorList, TFNode, fmt_dims)
from ..shapes import SymDim, to_ir_dim
from .tensorlist import list_tensor

_MAX_PASSES = 16


def _func_name(node: TFNode, key: str) -> str:
    if key not in node.attr:
        raise LiftError(f"{node.op} is missing attribute '{key}'")
    return node.attr[key].func.name


def _reader(ctx: Lifter):
    if ctx.reader is None or ctx.table is None:
        raise LiftError("control flow needs the graph's function library, which this lifter "
                        "was not given")
    return ctx.reader, ctx.table


# -- regions -----------------------------------------------------------------------------------

class _Region:
    """One region graph being built: its inputs, the child lifter, and the TF function lifted
    into it."""

    def __init__(self, ctx: Lifter, name: str):
        self.ctx = ctx
        self.graph = Graph(name)
        self.sub = ctx.child(self.graph)
        self._seeded: list[tuple[Value, list]] = []

    def add_input(self, dtype: DType, dims: list) -> Value:
        v = self.graph.add_input(TensorType(dtype, [to_ir_dim(d) for d in dims]))
        self._seeded.append((v, list(dims)))
        return v

    def _seed(self) -> None:
        """Records the region inputs' symbolic dims in the child lifter: the simple symbols
        first (each is then read off the first input that has it), then products of them
        where every factor is known there (`batch*8`); anything else is a fresh size."""
        sub = self.sub
        for v, dims in self._seeded:
            sub.set_sym_shape(v, dims)
        for v, dims in self._seeded:
            fixed = [d if sub.can_compute(d) else SymDim.of(sub.fresh_symbol()) for d in dims]
            if fixed != dims:
                sub.set_sym_shape(v, fixed)

    def lift(self, reader, table: dict, call: str, path: str, fname: str, args: list):
        """Lifts TF function `fname` on the argument entries `args`; returns its result
        entries, or None when some node could not be lifted (then `diagnostics` says why)."""
        self._seed()
        found = reader.function_call(call, path, fname)
        if found is None:
            raise LiftError(f"function {fname} is not in the graph's function library")
        out_name, arg_names = found
        if len(arg_names) != len(args):
            raise LiftError(f"function {fname} takes {len(arg_names)} arguments, "
                            f"{len(args)} given")
        sub = self.sub
        for name, entry in zip(arg_names, args):
            sub.env[name] = [entry]
        for inner in reader.topo_order([out_name]):
            if inner.name not in sub.env:
                sub.lift_node(inner, table)
        sub.node, sub.scope, sub.loc = self.ctx.node, self.ctx.scope, self.ctx.loc
        return sub.env.get(out_name)

    @property
    def diagnostics(self):
        return self.sub.diagnostics

    def finish(self, entries: list) -> None:
        """Sets the region's outputs (a TensorList gives its tensor)."""
        sub = self.sub
        sub.node, sub.scope, sub.loc = self.ctx.node, self.ctx.scope, self.ctx.loc
        self.graph.set_outputs([sub.value(list_tensor(sub, e) if isinstance(e, TensorList)
                                          else e) for e in entries])

    def report_to(self, ctx: Lifter) -> None:
        ctx.diagnostics.extend(self.sub.diagnostics)
        ctx.unsupported |= self.sub.unsupported


def _tensor_dims(ctx: Lifter, e) -> list:
    """The symbolic shape of a tensor or TensorList entry (None for an unknown length)."""
    if isinstance(e, TensorList):
        if e.tensor is not None:
            return ctx.sym_shape(e.tensor)
        return [e.length] + list(e.elem)
    return ctx.sym_shape(e)


def _dtype(ctx: Lifter, e) -> DType:
    return e.dtype if isinstance(e, TensorList) else ctx.type(e).dtype


def _copy_const(e: Const) -> Const:
    """A Const for a region: the outer one caches its Value of the outer graph."""
    return Const(e.array, e.origin, e.name)


def _is_plain_const(e) -> bool:
    return isinstance(e, Const) and e.full is None


def _outer_dims(ctx: Lifter, a: list, b: list) -> list:
    """Dims of an if's result in the outer lifter: a dim both branches agree on and the outer
    graph can compute stays; any other is a fresh run-time size."""
    return [d if k < len(b) and b[k] == d and d is not None and ctx.can_compute(d)
            else SymDim.of(ctx.fresh_symbol()) for k, d in enumerate(a)]


# -- While -------------------------------------------------------------------------------------

class _Loop:
    """One functional While being lifted: the plan of how each loop variable enters the
    regions, refined pass by pass until the body's results agree with its arguments."""

    def __init__(self, ctx: Lifter, node: TFNode, ins: list):
        self.reader, self.table = _reader(ctx)
        self.ctx, self.node = ctx, node
        self.cond_fn, self.body_fn = _func_name(node, "cond"), _func_name(node, "body")
        self.init = list(ins)
        n = len(self.init)
        self.consts: set[int] = set()       # import-time constants the loop never changes
        self.same: set[int] = set()         # region inputs the body returns unchanged
        self.varying: list[set[int]] = [set() for _ in range(n)]   # dims carried as `?`
        self.learnt: dict[int, list] = {}
        self.dims: list = [None] * n
        types = list(node.attr["T"].list.type) if "T" in node.attr else []
        for i, (e, t) in enumerate(zip(self.init, types)):
            if t == DT_VARIANT and not isinstance(e, TensorList):
                raise LiftError(f"loop variable {i} is a TF variant other than a TensorList of "
                                f"fixed length, which the IR cannot carry")
            if t == DT_RESOURCE and not isinstance(e, Resource):
                raise LiftError(f"loop variable {i} is a resource other than a captured "
                                f"variable")
        for i, e in enumerate(self.init):
            if isinstance(e, Resource):
                continue
            if not isinstance(e, TensorList):
                ctx.value(e) if isinstance(e, (Dead, Pending, Complex)) else ctx.type(e)
            if not (isinstance(e, TensorList) and e.open):
                self.dims[i] = _tensor_dims(ctx, e)
        self._shape_invariants()

    def _shape_invariants(self) -> None:
        """Dims `output_shapes` leaves open (tf.while_loop's shape_invariants) where the
        initial value has a static size start as `?`."""
        if "output_shapes" not in self.node.attr:
            return
        shapes = self.node.attr["output_shapes"].list.shape
        for i, shape in enumerate(shapes):
            dims = self.dims[i] if i < len(self.dims) else None
            if dims is None or shape.unknown_rank or len(shape.dim) != len(dims) \
                    or isinstance(self.init[i], TensorList):
                continue
            for k, d in enumerate(shape.dim):
                if d.size == -1 and isinstance(dims[k], int):
                    self.varying[i].add(k)

    # -- one pass ----------------------------------------------------------------------------
    def _args(self, region: _Region) -> tuple[list, list[int]]:
        """The argument entries of the TF function and the loop variables that are region
        inputs (in order, the same for cond and body)."""
        args, inputs = [], []
        for i, e in enumerate(self.init):
            if isinstance(e, Resource):
                args.append(e)
            elif i in self.consts:
                args.append(_copy_const(e))
            elif isinstance(e, TensorList) and e.open:
                args.append(TensorList(None, e.length, e.elem, e.dtype, e.length_entry,
                                       learn=self._learner(i)))
            else:
                dims = [SymDim.of(self.ctx.fresh_symbol()) if k in self.varying[i] or d is None
                        else d for k, d in enumerate(self.dims[i])]
                v = region.add_input(_dtype(self.ctx, e), dims)
                args.append(TensorList(v, dims[0], dims[1:], e.dtype)
                            if isinstance(e, TensorList) else v)
                inputs.append(i)
        return args, inputs

    def _learner(self, i: int):
        def learn(elem):
            if i not in self.learnt:
                self.learnt[i] = elem
        return learn

    def _apply_learnt(self) -> None:
        for i, elem in self.learnt.items():
            e = self.init[i]
            bad = [d for d in elem if not self.ctx.can_compute(d)]
            if bad:
                raise LiftError(f"the loop writes items of shape {fmt_dims(elem)} into a "
                                f"TensorList whose element shape is left open, and "
                                f"{', '.join(map(str, bad))} is a size computed in the loop; "
                                f"give the TensorArray an element_shape")
            self.init[i] = TensorList(None, e.length, elem, e.dtype, e.length_entry)
            self.dims[i] = _tensor_dims(self.ctx, self.init[i])
        self.learnt.clear()

    def _lift(self, name: str, fname: str):
        region = _Region(self.ctx, name)
        args, inputs = self._args(region)
        outs = region.lift(self.reader, self.table, f"{self.node.name}/{name}", self.node.path,
                           fname, args)
        return region, args, inputs, outs

    def _check_body(self, args: list, outs: list, sub: Lifter) -> bool:
        """Compares the body's results with its arguments; True when the plan changed."""
        changed = False
        if len(outs) != len(self.init):
            raise LiftError(f"the loop body returns {len(outs)} values for "
                            f"{len(self.init)} loop variables")
        for i, (e, a, o) in enumerate(zip(self.init, args, outs)):
            if isinstance(e, Resource):
                if o is not a:
                    raise LiftError(f"loop variable {i} is a resource the body replaces")
                continue
            if i in self.consts or (isinstance(e, TensorList) and e.open):
                continue
            if o is a:
                self.same.add(i)
                if _is_plain_const(e):
                    self.consts.add(i)      # known and never changed: a constant inside
                    changed = True
                continue
            self.same.discard(i)
            if isinstance(e, TensorList) != isinstance(o, TensorList):
                raise LiftError(f"loop variable {i} is "
                                f"{'a TensorList' if isinstance(e, TensorList) else 'a tensor'}"
                                f" but the body returns "
                                f"{'a TensorList' if isinstance(o, TensorList) else 'a tensor'}")
            if _dtype(sub, o) != _dtype(self.ctx, e):
                raise LiftError(f"loop variable {i} is {_dtype(self.ctx, e)} but the body "
                                f"returns {_dtype(sub, o)}")
            got, arg_dims = _tensor_dims(sub, o), _tensor_dims(sub, a)
            if len(got) != len(arg_dims):
                raise LiftError(f"loop variable {i} has shape {fmt_dims(arg_dims)} but the body "
                                f"returns shape {fmt_dims(got)}")
            for k, (g, d) in enumerate(zip(got, arg_dims)):
                if k not in self.varying[i] and g != d:
                    self.varying[i].add(k)      # changes from one iteration to the next
                    changed = True
        return changed

    def lower(self) -> list:
        ctx = self.ctx
        for _ in range(_MAX_PASSES):
            body, args, inputs, outs = self._lift("body", self.body_fn)
            lifted = outs is not None and not body.diagnostics
            changed = lifted and self._check_body(args, outs, body.sub)
            if self.learnt:         # an open TensorList's element shape: lift again with it
                self._apply_learnt()
                continue
            if not lifted:
                body.report_to(ctx)
                raise LiftError("the loop body could not be lifted (see the problems above)")
            if not changed:
                break
        else:
            raise LiftError("the loop variables' shapes do not settle")
        for i, e in enumerate(self.init):
            if isinstance(e, TensorList) and e.open:
                raise LiftError(f"loop variable {i} is a TensorList the body never writes, "
                                f"of open element shape {fmt_dims(e.elem or [])}")
        body.finish([outs[i] for i in inputs])

        cond, _, cond_inputs, cond_outs = self._lift("cond", self.cond_fn)
        if cond_outs is None or cond.diagnostics:
            cond.report_to(ctx)
            raise LiftError("the loop condition could not be lifted (see the problems above)")
        if len(cond_outs) != 1:
            raise LiftError(f"the loop condition returns {len(cond_outs)} values")
        cond.finish([_predicate(cond.sub, cond_outs[0])])

        operands = [ctx.value(list_tensor(ctx, self.init[i]) if isinstance(
            self.init[i], TensorList) else self.init[i]) for i in inputs]
        loop = ctx.graph.add("while", operands, regions=[cond.graph, body.graph],
                             scope=ctx.scope, loc=ctx.loc)
        results = list(self.init)      # resources and unchanged variables: the initial entry
        for i, v in zip(inputs, loop.outputs):
            if i in self.same:
                continue
            dims = [SymDim.of(ctx.fresh_symbol()) if k in self.varying[i] or d is None else d
                    for k, d in enumerate(self.dims[i])]
            ctx.set_sym_shape(v, dims)
            e = self.init[i]
            results[i] = TensorList(v, dims[0], dims[1:], e.dtype) if isinstance(
                e, TensorList) else v
        return results


def _predicate(ctx: Lifter, e):
    """A TF condition as the bool[] scalar the IR wants (non-zero is true)."""
    t = ctx.type(e)
    if t.dtype != DType.bool:
        e = ctx.emit1("not_equal", [e, Const(np.zeros((), t.dtype.np), ctx.node)])
    if t.rank:
        if t.num_elements != 1:
            raise LiftError(f"a condition must be a single value, got {t}")
        e = ctx.emit1("reshape", [e], {"shape": []})
    return e


def _while(ctx, node, ins):
    """While / StatelessWhile (see the module doc)."""
    return _Loop(ctx, node, ins).lower()


# -- If ----------------------------------------------------------------------------------------

def _if(ctx, node, ins):
    """If / StatelessIf, as the reader leaves it (`_add_if`: the condition its only input,
    both branches inlined but not wired in). A condition known at import time (a shape test
    such as `masks.shape[1] == 0` once the shapes are fixed) selects one branch, which is
    lifted then and there; a condition computed at run time makes an IR `if` whose regions
    are both branches."""
    if "_branches" not in node.attr:
        raise LiftError("the branch functions of this If are not in the graph's function "
                        "library")
    reader, table = _reader(ctx)
    cond = ctx.const(ins[0])
    if cond is not None and np.asarray(cond).size == 1:
        return _lift_taken(ctx, reader, table, node, bool(np.asarray(cond).ravel()[0]))
    return _runtime_if(ctx, reader, table, node, ins[0])


def _lift_on_demand(ctx, reader, table, names) -> None:
    saved = ctx.node, ctx.scope, ctx.loc
    try:
        for inner in reader.topo_order(names):
            if inner.name not in ctx.env:
                ctx.lift_node(inner, table)
    finally:
        ctx.node, ctx.scope, ctx.loc = saved


def _lift_taken(ctx, reader, table, node, taken: bool):
    branch = node.attr["_branches"][0 if taken else 1]
    _lift_on_demand(ctx, reader, table, [branch])
    outs = ctx.env.get(branch)
    if outs is None:
        raise LiftError("the branch this If takes could not be lifted (see above)")
    return outs


def _runtime_if(ctx, reader, table, node, pred):
    entries = _arguments(ctx, reader, table, node)
    fns = node.attr["_fns"]

    def branch(key, fname):
        return lambda region, args: region.lift(reader, table, f"{node.name}/region_{key}",
                                                node.path, fname, args)
    return _region_if(ctx, pred, entries, [branch("then", fns[0]), branch("else", fns[1])],
                      "If")


def _arguments(ctx, reader, table, node) -> list:
    """The entries of an If's or Case's arguments (`_args`), lifted on demand."""
    refs = node.attr["_args"]
    _lift_on_demand(ctx, reader, table, [name for name, _ in refs])
    entries = []
    for name, idx in refs:
        outs = ctx.env.get(name)
        if outs is None or idx >= len(outs):
            raise LiftError(f"an argument of this {node.op} could not be lifted (see above)")
        entries.append(outs[idx])
    return entries


def _region_if(ctx, pred, entries, arms, what):
    """An IR `if` on `pred` (a TF condition) whose two regions take `entries`: each arm is a
    function (region, region arguments) -> its result entries (None when it could not be
    lifted) that fills one region."""
    pred = ctx.value(_predicate(ctx, pred))
    regions, results = [], []
    for key, arm in zip(("then", "else"), arms):
        region = _Region(ctx, key)
        args, inputs = [], []
        for i, e in enumerate(entries):
            if isinstance(e, Resource):
                args.append(e)
            elif _is_plain_const(e):
                args.append(_copy_const(e))
            else:
                if isinstance(e, TensorList):
                    e = entries[i] = TensorList(list_tensor(ctx, e), e.length, e.elem, e.dtype)
                elif isinstance(e, (Dead, Pending, Complex)):
                    ctx.value(e)        # raises why it cannot be used
                dims = [SymDim.of(ctx.fresh_symbol()) if d is None else d
                        for d in _tensor_dims(ctx, e)]
                v = region.add_input(_dtype(ctx, e), dims)
                args.append(TensorList(v, dims[0], dims[1:], e.dtype)
                            if isinstance(e, TensorList) else v)
                inputs.append(i)
        outs = arm(region, args)
        if outs is None or region.diagnostics:
            region.report_to(ctx)
            raise LiftError(f"the {key} branch of this {what} could not be lifted (see the "
                            f"problems above)")
        regions.append(region)
        results.append(outs)
    then_outs, else_outs = results
    if len(then_outs) != len(else_outs):
        raise LiftError(f"the branches return {len(then_outs)} and {len(else_outs)} values")

    kept, passed = [], {}
    for j, (a, b) in enumerate(zip(then_outs, else_outs)):
        if isinstance(a, Resource) or isinstance(b, Resource):
            if a is not b:
                raise LiftError(f"result {j} is a resource that differs between the branches")
            passed[j] = a
        elif isinstance(a, TensorList) != isinstance(b, TensorList):
            raise LiftError(f"result {j} is a TensorList in one branch only")
        else:
            kept.append(j)
    for region, outs in zip(regions, results):
        region.finish([outs[j] for j in kept])
    operands = [pred] + [ctx.value(list_tensor(ctx, entries[i]) if isinstance(
        entries[i], TensorList) else entries[i]) for i in inputs]
    branch = ctx.graph.add("if", operands, regions=[r.graph for r in regions],
                           scope=ctx.scope, loc=ctx.loc)
    out = [passed.get(j) for j in range(len(then_outs))]
    for j, v in zip(kept, branch.outputs):
        a, b = then_outs[j], else_outs[j]
        dims = _outer_dims(ctx, _tensor_dims(regions[0].sub, a), _tensor_dims(regions[1].sub, b))
        ctx.set_sym_shape(v, dims)
        out[j] = TensorList(v, dims[0], dims[1:], a.dtype) if isinstance(a, TensorList) else v
    return out


# -- Case --------------------------------------------------------------------------------------

def _case(ctx, node, ins):
    """Case / StatelessCase (`tf.switch_case`, `ops.switch`), as the reader leaves it (like
    If). An index known at import time lifts the branch it selects; one computed at run time
    becomes a chain of IR `if`s: index == 0 ? branch 0 : (index == 1 ? branch 1 : ...). As in
    TF, an index out of range runs the last branch."""
    if "_branches" not in node.attr:
        raise LiftError("the branch functions of this Case are not in the graph's function "
                        "library")
    reader, table = _reader(ctx)
    n = len(node.attr["_fns"])
    index = ctx.const(ins[0])
    if n == 1 or (index is not None and np.asarray(index).size == 1):
        k = int(np.asarray(index).ravel()[0]) if n > 1 else 0
        branch = node.attr["_branches"][k if 0 <= k < n else n - 1]
        _lift_on_demand(ctx, reader, table, [branch])
        outs = ctx.env.get(branch)
        if outs is None:
            raise LiftError("the branch this Case takes could not be lifted (see above)")
        return outs
    entries = _arguments(ctx, reader, table, node)
    return _case_from(ctx, reader, table, node, ins[0], entries, 0)


def _case_from(ctx, reader, table, node, index, entries, k):
    """The if chain of a Case from branch k on: index == k ? branch k : the rest."""
    fns, n = node.attr["_fns"], len(node.attr["_fns"])
    pred = ctx.emit1("equal", [index, Const(np.asarray(k, ctx.type(index).dtype.np), node)])

    def branch(j):
        return lambda region, args: region.lift(reader, table, f"{node.name}/case{k}_{j}",
                                                node.path, fns[j], args[1:])

    def rest(region, args):
        region._seed()
        sub = region.sub
        sub.node, sub.scope, sub.loc = ctx.node, ctx.scope, ctx.loc
        return _case_from(sub, reader, table, node, args[0], args[1:], k + 1)

    arms = [branch(k), branch(n - 1) if k + 1 == n - 1 else rest]
    return _region_if(ctx, pred, [index] + list(entries), arms, "Case")


TABLE = {"While": _while, "StatelessWhile": _while, "If": _if, "StatelessIf": _if,
         "Case": _case, "StatelessCase": _case}
