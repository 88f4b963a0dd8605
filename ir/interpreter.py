"""The IR interpreter: runs a Graph on NumPy arrays with the ops' reference kernels.

It is the ground truth that frontends, passes and backends are checked against, so it is
strict: inputs must fit the graph's types, and (by default) every kernel result must match the
type its node declares, with symbolic dims bound consistently across the whole run.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from .errors import ConversionError, Diagnostic, TensorforgeError
from .graph import Graph, Module, Node, Value
from .ops import get_op
from .ops.registry import run_kernel
from .quantized import (BOUNDARY_OPS, dequantize_array, hybrid_input, is_hybrid,
                        is_quantized, quantize_array)


def _node_diag(node: Node, message: str) -> Diagnostic:
    return Diagnostic(message, node=node.describe(), scope=node.scope, loc=node.loc)


def _bind_inputs(graph: Graph, inputs) -> list[np.ndarray]:
    if isinstance(inputs, Mapping):
        names = [v.name for v in graph.inputs]
        unknown = sorted(set(inputs) - set(names))
        missing = [n for n in names if n not in inputs]
        if unknown or missing:
            raise ConversionError(f"inputs do not match graph @{graph.name} (expects "
                                  f"{', '.join(map(str, names))}); unknown: {unknown}, "
                                  f"missing: {missing}")
        inputs = [inputs[n] for n in names]
    inputs = list(inputs)
    if len(inputs) != len(graph.inputs):
        raise ConversionError(f"graph @{graph.name} takes {len(graph.inputs)} inputs, "
                              f"got {len(inputs)}")
    return inputs


def run_graph(graph: Graph, inputs: Sequence | Mapping, *, check_types: bool = True,
              capture: Sequence[Value] | None = None):
    """Runs `graph` on `inputs` (a list in graph-input order, or a dict by input name) and
    returns its outputs. Raises ConversionError for inputs that do not fit the signature.

    With `capture` (values of `graph`: inputs, constants or node results) it returns
    `(outputs, captured)`, `captured` holding the arrays of those values in order; calibration
    uses this to observe intermediates."""
    if capture is not None:
        defined = {id(v) for v in graph.inputs}
        defined.update(id(v) for node in graph for v in node.outputs)
        stray = [v for v in capture if id(v) not in defined]
        if stray:
            raise ConversionError(f"cannot capture values that are not in graph @{graph.name}",
                                  [Diagnostic(f"%{v.name or '?'}: {v.type}") for v in stray])
    arrays = _bind_inputs(graph, inputs)
    bindings: dict[str, int] = {}
    env: dict[int, np.ndarray] = {}
    problems = []
    for v, a in zip(graph.inputs, arrays):
        a = np.asarray(a)
        if a.dtype != v.type.dtype.np:
            problems.append(f"input {v.name or '?'}: dtype {a.dtype}, expected {v.type.dtype}")
        elif not v.type.accepts(a.shape, bindings):
            problems.append(f"input {v.name or '?'}: shape {a.shape} does not fit {v.type}")
        env[id(v)] = a
    if problems:
        raise ConversionError("inputs do not fit the graph signature",
                              [Diagnostic(p) for p in problems])

    # Free each intermediate after its last use so big models run in bounded memory.
    remaining: dict[int, int] = {}
    for node in graph:
        for v in node.inputs:
            remaining[id(v)] = remaining.get(id(v), 0) + 1
    keep = {id(v) for v in graph.outputs}
    keep.update(id(v) for v in capture or ())

    for node in graph:
        opdef = get_op(node.op)
        args = [env[id(v)] for v in node.inputs]
        # Integer form (ir/quantized.py): quantized operands are computed on as real values,
        # quantized results are rounded to their own params.
        quantized_op = node.op not in BOUNDARY_OPS
        if quantized_op or node.op == "quantize":
            args = [dequantize_array(a, v.quant) if is_quantized(v) else a
                    for a, v in zip(args, node.inputs)]
            if is_hybrid(node):
                args[0] = hybrid_input(node, args[0])
        try:
            results = run_kernel(opdef, args, node.attrs, region_runner(node, check_types))
            if quantized_op:
                results = [quantize_array(np.asarray(r), v.quant, v.type.dtype)
                           if is_quantized(v) else r for r, v in zip(results, node.outputs)]
        except TensorforgeError:
            raise
        except Exception as e:
            raise ConversionError("reference kernel failed", [_node_diag(
                node, f"{type(e).__name__}: {e}")]) from e
        if len(results) != len(node.outputs):
            raise TensorforgeError(f"kernel of {node.op} returned {len(results)} results, "
                                   f"expected {len(node.outputs)}")
        for out, res in zip(node.outputs, results):
            res = np.asarray(res)
            if check_types:
                if res.dtype != out.type.dtype.np or not out.type.accepts(res.shape, bindings):
                    raise TensorforgeError(
                        f"{node.describe()} (scope '{node.scope}'): kernel produced "
                        f"{res.dtype}{list(res.shape)}, node declares {out.type}")
            env[id(out)] = res
        for v in node.inputs:
            remaining[id(v)] -= 1
            if remaining[id(v)] == 0 and id(v) not in keep:
                env.pop(id(v), None)
    outputs = [env[id(v)] for v in graph.outputs]
    if capture is None:
        return outputs
    return outputs, [env[id(v)] for v in capture]


def region_runner(node: Node, check_types: bool = True):
    """`run(k, arrays)` for a region op's kernel: runs region k of `node` on `arrays`, or
    None for a node without regions."""
    if not node.regions:
        return None

    def run(k: int, arrays):
        return run_graph(node.regions[k], list(arrays), check_types=check_types)

    return run


def run_module(module: Module, inputs, *, check_types: bool = True) -> list[np.ndarray]:
    """Runs the module's entry graph."""
    return run_graph(module.main, inputs, check_types=check_types)
