"""The verifier: checks every invariant of a Graph and reports all violations at once.

SSA (one producer per value, each value defined once), topological order (operands defined
before use), use-lists in sync with operands, registered ops with the right arity and
well-typed attributes, result types that agree with the op's inference rule, consistent
quantization parameters and layouts.
"""

from __future__ import annotations

from .errors import Diagnostic, InferenceError, VerificationError
from .graph import Graph, Module, Node, Value
from .ops import get_op, has_op
from .ops.registry import infer_types
from .quantized import BOUNDARY_OPS, is_quantized, operand_types
from .types import TensorType


def dims_compatible(a, b) -> bool:
    """Two dims agree if equal or if either is the anonymous unknown `?`."""
    return a == b or a == "?" or b == "?"


def types_compatible(declared: TensorType, inferred: TensorType) -> bool:
    return (declared.dtype == inferred.dtype and declared.rank == inferred.rank
            and all(dims_compatible(a, b) for a, b in zip(declared.shape, inferred.shape)))


class _Reporter:
    def __init__(self, graph: Graph, prefix: str = ""):
        self.graph = graph
        self.prefix = prefix  # the enclosing graphs of a region, e.g. `@main/%3 = while/`
        self.diags: list[Diagnostic] = []
        self._namer = None

    def name(self, v: Value) -> str:
        if self._namer is None:
            from .text import _Namer

            self._namer = _Namer(self.graph)
        return self._namer(v)

    def at(self, node: Node, message: str) -> None:
        head = (f"{self.name(node.outputs[0])} = {node.op}" if node.outputs else node.op)
        self.diags.append(Diagnostic(f"{self.where}: {message}", node=head,
                                     scope=node.scope, loc=node.loc))

    @property
    def where(self) -> str:
        return f"{self.prefix}@{self.graph.name}"

    def graph_level(self, message: str) -> None:
        self.diags.append(Diagnostic(f"{self.where}: {message}"))


def graph_problems(graph: Graph, prefix: str = "") -> list[Diagnostic]:
    """Every invariant violation in `graph` and the regions nested in it (empty list when it
    is valid). `prefix` names the enclosing graphs of a region in messages."""
    r = _Reporter(graph, prefix)
    defined: set[int] = set()
    for i, v in enumerate(graph.inputs):
        if id(v) in defined:
            r.graph_level(f"graph input {i} appears twice")
        if v.producer is not None:
            r.graph_level(f"graph input {r.name(v)} has a producer node")
        defined.add(id(v))
        _check_value_extras(r, v, None)

    count, prev = 0, None
    for node in graph:
        count += 1
        if node.graph is not graph or node.prev is not prev:
            r.at(node, "node list links are broken")
        prev = node
        _check_node(r, node, defined)
    if count != len(graph):
        r.graph_level(f"graph counts {len(graph)} nodes but links {count}")

    for i, v in enumerate(graph.outputs):
        if id(v) not in defined:
            r.graph_level(f"result {i} ({r.name(v)}) is not defined in this graph")
        elif (graph, i) not in v.uses:
            r.graph_level(f"result {i} ({r.name(v)}) is missing from its value's use-list")
    return r.diags


def _check_node(r: _Reporter, node: Node, defined: set[int]) -> None:
    for i, v in enumerate(node.inputs):
        if id(v) not in defined:
            where = ("is produced later (the graph is not in topological order or has a cycle)"
                     if v.producer is not None and v.producer.graph is node.graph
                     else "is not defined in this graph")
            r.at(node, f"operand {i} ({r.name(v)}) {where}")
        if (node, i) not in v.uses:
            r.at(node, f"operand {i} ({r.name(v)}) is missing from its use-list")
    for j, out in enumerate(node.outputs):
        if out.producer is not node or out.index != j:
            r.at(node, f"result {j} records a different producer")
        if id(out) in defined:
            r.at(node, f"result {j} ({r.name(out)}) is defined twice")
        defined.add(id(out))
        for user, k in out.uses:
            operands = user.inputs if isinstance(user, Node) else user.outputs
            if k >= len(operands) or operands[k] is not out:
                r.at(node, f"result {j} has a stale use entry")
                break
        _check_value_extras(r, out, node)

    for what in ("scope", "loc"):
        bad = _unicode_problem(getattr(node, what))
        if bad:
            r.at(node, f"the {what} is not valid Unicode ({bad})")
    if not has_op(node.op):
        try:
            get_op(node.op)
        except KeyError as e:
            r.at(node, e.args[0])
        return
    opdef = get_op(node.op)
    problems = []
    arity = opdef.arity_problem(len(node.inputs))
    if arity:
        problems.append(arity)
    problems += opdef.attr_problems(node.attrs)
    regions = opdef.region_count_problem(len(node.regions))
    if regions:
        problems.append(regions)
    for region in node.regions:
        if region.owner is not node:
            problems.append(f"region @{region.name} records a different owner")
        # Each region is a graph of its own (isolated from above): its problems are listed
        # with the path of graphs that leads to it.
        owner = r.name(node.outputs[0]) if node.outputs else node.op
        r.diags += graph_problems(region, f"{r.where} {owner} ")
    for p in problems:
        r.at(node, p)
    if problems:
        return
    try:
        inferred = infer_types(opdef, operand_types(node.op, node.inputs), node.attrs,
                               node.regions)
    except InferenceError as e:
        r.at(node, str(e))
        return
    except Exception as e:  # an inference rule must not crash the verifier
        r.at(node, f"type inference failed: {type(e).__name__}: {e}")
        return
    if len(inferred) != len(node.outputs):
        r.at(node, f"{node.op} produces {len(inferred)} results, node has {len(node.outputs)}")
        return
    for j, (out, want) in enumerate(zip(node.outputs, inferred)):
        if node.op not in BOUNDARY_OPS and is_quantized(out):
            # A quantized result stores the inferred real tensor as integer codes.
            want = want.with_dtype(out.type.dtype)
        if not types_compatible(out.type, want):
            r.at(node, f"result {j} is declared {out.type} but {node.op} infers {want}")


def _unicode_problem(text) -> str | None:
    if not isinstance(text, str):
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        return f"a lone surrogate U+{ord(text[e.start]):04X} at index {e.start}"
    return None


def _check_value_extras(r: _Reporter, v: Value, node: Node | None) -> None:
    problems = []
    bad = _unicode_problem(v.name)
    if bad:     # no artifact format (or file encoding) can hold it
        problems.append(f"the name {v.name!r} of {r.name(v)} is not valid Unicode ({bad})")
    if v.quant is not None:
        problems += [f"quant params of {r.name(v)}: {p}" for p in v.quant.problems(v.type)]
    if v.layout is not None and len(v.layout.axes) != v.type.rank:
        problems.append(f"layout of {r.name(v)} has {len(v.layout.axes)} axes for rank "
                        f"{v.type.rank}")
    for p in problems:
        if node is None:
            r.graph_level(p)
        else:
            r.at(node, p)


def verify_graph(graph: Graph) -> None:
    """Raises VerificationError listing every problem, or returns None."""
    diags = graph_problems(graph)
    if diags:
        raise VerificationError(f"graph @{graph.name} is invalid", diags)


def verify_module(module: Module) -> None:
    """Verifies every graph of `module`; raises VerificationError listing all problems."""
    diags = [d for g in module.graphs.values() for d in graph_problems(g)]
    if diags:
        raise VerificationError("invalid IR", diags)
