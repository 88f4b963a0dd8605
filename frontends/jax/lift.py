"""The JAX / Flax frontend's driver: `from_jax` and `from_flax` trace a function with
`jax.make_jaxpr` and lift the jaxpr into an IR Module.

- `from_jax(fn, example_args, params=..., names=...)` traces `fn(*args)` or `fn(params, *args)`;
  parameter leaves become named constants (`Dense_0/kernel`, from their pytree paths).
- `from_flax(module, variables, example_args)` (linen) and `from_flax(nnx_module, example_args)`
  (NNX) wrap `from_jax`.
- Example args may be arrays or `jax.ShapeDtypeStruct`s with symbolic dims
  (`jax.export.symbolic_shape("b, 8")`); a symbol becomes the IR symbol of the same name.
- Each equation becomes IR nodes through one small function per primitive (`ops.TABLE`, walked
  by `context.Lifter`); equations whose inputs are all constants are folded at import with the
  IR reference kernels.
- Unsupported primitives are all collected first and raised together in one ConversionError.
"""

from __future__ import annotations

import inspect
from typing import Sequence

import numpy as np

from ...ir.errors import ConversionError, Diagnostic
from ...ir.graph import Graph, Module
from ...ir.types import TensorType
from ...version import package_version
from . import control, eigen, indexing, solvers  # noqa: F401  (register their lowerings)
from .context import Const, Lifter, LiftError, ir_dim, ir_dtype
from .ops import TABLE


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


# -- public API ------------------------------------------------------------------------------

def from_jax(fn, example_args: Sequence, *, params=None, names: Sequence[str] | None = None,
             output_names: Sequence[str] | None = None) -> Module:
    """Lifts `fn(*example_args)` (or `fn(params, *example_args)`) into a Module.

    `example_args` are arrays or `jax.ShapeDtypeStruct`s (symbolic dims allowed); pytree args
    are flattened (inputs named `name/path`). `params` leaves become named constants. Raises
    ConversionError listing every unsupported primitive (or every other lowering problem)."""
    import jax

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

    graph = Graph("main")
    ctx = Lifter(graph, TABLE)
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
        ctx.note_input_dims(args[-1])
    if problems:
        raise ConversionError("cannot lift the function's inputs", problems)

    outs = ctx.lift_jaxpr(jaxpr, closed.consts, args)
    if ctx.diagnostics:
        unsupported = all("has no IR lowering" in d.message for d in ctx.diagnostics)
        raise ConversionError("unsupported JAX primitives" if unsupported
                              else "cannot lift the JAX function", ctx.diagnostics)
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
    meta = {"source": "jax", "producer": f"tensorforge {package_version()}",
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
