"""The IR's data structures: Module, Graph, Node, Value.

A Graph is an SSA dataflow graph: every Value is produced once (by a Node or as a graph input),
nodes sit in a doubly linked list kept in topological order (so insert/erase are O(1), the way
MLIR keeps operations in a block), and every Value keeps its use-list so that rewrites
(`replace_all_uses_with`, dead-code checks) are O(uses) rather than O(graph).

Constants are ordinary nodes of op `constant` whose `value` attribute holds a read-only NumPy
array; `Value.const` returns that array.
"""

from __future__ import annotations

from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from .attrs import attr_equal, normalize_attr
from .ops import get_op, has_op
from .ops.registry import infer_types
from .quantized import operand_types
from .types import DType, Layout, QuantParams, TensorType


class Value:
    """An SSA value: a tensor produced by one node (or a graph input) and used by many."""

    __slots__ = ("name", "type", "producer", "index", "uses", "quant", "layout", "__weakref__")

    def __init__(self, type: TensorType, name: str | None = None, producer: "Node | None" = None,
                 index: int = 0, quant: QuantParams | None = None, layout: Layout | None = None):
        self.name = name
        self.type = type
        self.producer = producer
        self.index = index
        # Keys are (user, operand index): user is a Node, or the Graph itself for a graph
        # output. A dict (ordered, O(1) removal) because hot values such as a shared zero
        # constant can have thousands of uses.
        self.uses: dict[tuple[Node | Graph, int], None] = {}
        self.quant = quant
        self.layout = layout

    @property
    def const(self) -> np.ndarray | None:
        """The payload when this value is produced by a `constant` node, else None."""
        p = self.producer
        if p is not None and p.op == "constant":
            return p.attrs["value"]
        return None

    @property
    def is_graph_input(self) -> bool:
        """True for a graph input (a value no node produces)."""
        return self.producer is None

    @property
    def users(self) -> list["Node"]:
        """Nodes that use this value (each once, in use order)."""
        seen, out = set(), []
        for user, _ in self.uses:
            if isinstance(user, Node) and id(user) not in seen:
                seen.add(id(user))
                out.append(user)
        return out

    def replace_all_uses_with(self, other: "Value") -> None:
        """Points every use of this value (node operands and graph outputs) at `other`."""
        if other is self:
            return
        for user, i in self.uses:
            if isinstance(user, Node):
                user.inputs[i] = other
            else:
                user.outputs[i] = other
            other.uses[(user, i)] = None
        self.uses = {}

    def __repr__(self) -> str:
        return f"Value(%{self.name or '?'}: {self.type})"


class Node:
    """One operation: `op` applied to `inputs` with `attrs`, producing `outputs`.

    `scope` is the source layer / module path (what per-layer configs match); `loc` is the
    frontend's location (framework op name, user source line) used in diagnostics.
    """

    __slots__ = ("op", "inputs", "outputs", "attrs", "scope", "loc", "graph", "prev", "next",
                 "regions")

    def __init__(self, op: str, inputs: Sequence[Value], outputs: Sequence[Value],
                 attrs: dict[str, Any] | None = None, scope: str = "", loc: str = "",
                 regions: Sequence["Graph"] = ()):
        self.op = op
        self.inputs = list(inputs)
        self.outputs = list(outputs)
        self.attrs = {k: normalize_attr(v) for k, v in (attrs or {}).items()}
        self.scope = scope
        self.loc = loc
        self.graph: Graph | None = None
        self.prev: Node | None = None
        self.next: Node | None = None
        for i, out in enumerate(self.outputs):
            out.producer = self
            out.index = i
        # Regions (`while` cond/body, `if` branches, `scan` body): graphs this node owns.
        # They are isolated from above, as TFLite subgraphs and TF functions are: a region
        # reads only its own inputs (block arguments) and the constants inside it, so every
        # pass that rewrites the enclosing graph stays correct without looking inside.
        self.regions: list[Graph] = list(regions)
        for r in self.regions:
            r.owner = self

    @property
    def output(self) -> Value:
        """The single result (raises if the node has several)."""
        if len(self.outputs) != 1:
            raise ValueError(f"{self.op} has {len(self.outputs)} outputs")
        return self.outputs[0]

    def set_input(self, i: int, value: Value) -> None:
        """Replaces operand `i`, keeping both use-lists right."""
        old = self.inputs[i]
        del old.uses[(self, i)]
        self.inputs[i] = value
        value.uses[(self, i)] = None

    def describe(self) -> str:
        """Short name for diagnostics: `%name = op`. An unnamed result is called `scope/op`,
        the name its tensor gets in the artifacts (`?` when the node has no scope either)."""
        name = self.outputs[0].name if self.outputs and self.outputs[0].name else \
            f"{self.scope}/{self.op}" if self.scope else "?"
        return f"%{name} = {self.op}"

    def __repr__(self) -> str:
        return f"Node({self.describe()})"


class Graph:
    """Ordered inputs, ordered outputs, and nodes kept in topological order."""

    def __init__(self, name: str = "main"):
        self.name = name
        self.owner: Node | None = None  # the node owning this graph as a region, if any
        self.inputs: list[Value] = []
        self.outputs: list[Value] = []
        self._first: Node | None = None
        self._last: Node | None = None
        self._count = 0

    # -- reading -----------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Node]:
        """Nodes in order. Safe against erasing the current node while iterating."""
        node = self._first
        while node is not None:
            nxt = node.next
            yield node
            node = nxt

    def walk(self) -> Iterator[Node]:
        """Every node, the nodes of regions included (each region right after the node that
        owns it, so operands are seen before uses within each graph)."""
        for node in self:
            yield node
            for region in node.regions:
                yield from region.walk()

    def region_graphs(self) -> Iterator["Graph"]:
        """The regions of this graph's nodes, nested ones included (outermost first)."""
        for node in self:
            for region in node.regions:
                yield region
                yield from region.region_graphs()

    @property
    def nodes(self) -> list[Node]:
        """The nodes in order, as a list (a snapshot; iterate the graph to walk it)."""
        return list(self)

    def __len__(self) -> int:
        return self._count

    @property
    def first(self) -> Node | None:
        """The first node, or None for an empty graph."""
        return self._first

    @property
    def last(self) -> Node | None:
        """The last node, or None for an empty graph."""
        return self._last

    # -- building ----------------------------------------------------------------------------
    def add_input(self, type: TensorType, name: str | None = None, quant: QuantParams | None = None,
                  layout: Layout | None = None) -> Value:
        """Appends a graph input of `type` (optionally named, quantized, laid out); returns it."""
        v = Value(type, name, quant=quant, layout=layout)
        self.inputs.append(v)
        return v

    def set_outputs(self, values: Iterable[Value]) -> None:
        """Makes `values` the graph outputs (in order), keeping use-lists right."""
        for i, old in enumerate(self.outputs):
            del old.uses[(self, i)]
        self.outputs = list(values)
        for i, v in enumerate(self.outputs):
            v.uses[(self, i)] = None

    def add(self, op: str, inputs: Sequence[Value] = (), attrs: dict[str, Any] | None = None, *,
            types: Sequence[TensorType] | None = None, names: Sequence[str | None] | None = None,
            scope: str = "", loc: str = "", before: Node | None = None,
            regions: Sequence["Graph"] = ()) -> Node:
        """Creates a node (result types inferred from the op registry unless given) and inserts it
        at the end of the graph, or just before `before`. `regions` are the graphs a control
        flow op owns (see `ir/ops/control.py`). Returns the node."""
        opdef = get_op(op)
        attrs = opdef.complete_attrs(attrs or {})
        if types is None:
            # Quantized operands read as f32 (ir/quantized.py); results come out float and a
            # pass that quantizes them sets their type and params afterwards.
            types = infer_types(opdef, operand_types(op, inputs), attrs, regions)
        names = list(names) if names is not None else [None] * len(types)
        outputs = [Value(t, n) for t, n in zip(types, names)]
        node = Node(op, inputs, outputs, attrs, scope=scope, loc=loc, regions=regions)
        if before is None:
            self.append(node)
        else:
            self.insert_before(node, before)
        return node

    def constant(self, array, name: str | None = None, *, scope: str = "", loc: str = "",
                 dtype: DType | None = None, before: Node | None = None) -> Value:
        """Adds a `constant` node holding `array` and returns its value."""
        arr = np.asarray(array) if dtype is None else np.asarray(array, dtype=dtype.np)
        dt = DType.from_numpy(arr.dtype)
        node = self.add("constant", (), {"value": arr}, types=[TensorType(dt, arr.shape)],
                        names=[name], scope=scope, loc=loc, before=before)
        return node.outputs[0]

    # -- linked-list mutation ----------------------------------------------------------------
    def _link_uses(self, node: Node) -> None:
        if node.graph is not None:
            raise ValueError(f"{node!r} is already in a graph")
        node.graph = self
        for i, v in enumerate(node.inputs):
            v.uses[(node, i)] = None
        self._count += 1

    def append(self, node: Node) -> Node:
        """Inserts `node` at the end of the graph and returns it."""
        self._link_uses(node)
        node.prev, node.next = self._last, None
        if self._last is None:
            self._first = node
        else:
            self._last.next = node
        self._last = node
        return node

    def insert_before(self, node: Node, anchor: Node) -> Node:
        """Inserts `node` just before `anchor` (its operands must already be defined there)."""
        if anchor.graph is not self:
            raise ValueError("anchor is not in this graph")
        self._link_uses(node)
        node.prev, node.next = anchor.prev, anchor
        if anchor.prev is None:
            self._first = node
        else:
            anchor.prev.next = node
        anchor.prev = node
        return node

    def insert_after(self, node: Node, anchor: Node) -> Node:
        """Inserts `node` just after `anchor` and returns it."""
        if anchor.next is None:
            if anchor.graph is not self:
                raise ValueError("anchor is not in this graph")
            return self.append(node)
        return self.insert_before(node, anchor.next)

    def erase(self, node: Node) -> None:
        """Removes a node whose outputs have no uses left."""
        if node.graph is not self:
            raise ValueError(f"{node!r} is not in this graph")
        for out in node.outputs:
            if out.uses:
                raise ValueError(f"cannot erase {node.describe()}: its result is still used")
        for i, v in enumerate(node.inputs):
            del v.uses[(node, i)]
        if node.prev is None:
            self._first = node.next
        else:
            node.prev.next = node.next
        if node.next is None:
            self._last = node.prev
        else:
            node.next.prev = node.prev
        node.prev = node.next = node.graph = None
        self._count -= 1

    def reorder(self, nodes: Sequence[Node]) -> None:
        """Relinks this graph's nodes in the order `nodes` (every node of the graph once, each
        after the producers of its operands)."""
        if len(nodes) != self._count or any(n.graph is not self for n in nodes) or \
                len({id(n) for n in nodes}) != len(nodes):
            raise ValueError("reorder needs every node of the graph exactly once")
        seen: set[int] = set()
        for n in nodes:
            if any(v.producer is not None and v.producer.graph is self
                   and id(v.producer) not in seen for v in n.inputs):
                raise ValueError(f"reorder puts {n.describe()} before an operand's producer")
            seen.add(id(n))
        prev = None
        for n in nodes:
            n.prev = prev
            if prev is not None:
                prev.next = n
            prev = n
        if prev is not None:
            prev.next = None
        self._first = nodes[0] if nodes else None
        self._last = prev

    def replace_node(self, node: Node, new_values: Sequence[Value]) -> None:
        """Replaces every use of `node`'s outputs with `new_values`, then erases it."""
        for old, new in zip(node.outputs, new_values, strict=True):
            old.replace_all_uses_with(new)
        self.erase(node)

    # -- whole-graph utilities ---------------------------------------------------------------
    def clone(self) -> "Graph":
        """A deep copy (constant arrays are shared: they are read-only)."""
        g = Graph(self.name)
        vmap: dict[int, Value] = {}
        for v in self.inputs:
            vmap[id(v)] = g.add_input(v.type, v.name, v.quant, v.layout)
        for n in self:
            outs = [Value(o.type, o.name, quant=o.quant, layout=o.layout) for o in n.outputs]
            for o, new in zip(n.outputs, outs):
                vmap[id(o)] = new
            g.append(Node(n.op, [vmap[id(v)] for v in n.inputs], outs, dict(n.attrs),
                          scope=n.scope, loc=n.loc, regions=[r.clone() for r in n.regions]))
        g.set_outputs([vmap[id(v)] for v in self.outputs])
        return g

    def inline(self, region: "Graph", args: Sequence[Value], *, before: Node | None = None,
               scope: str | None = None) -> list[Value]:
        """Copies the nodes of `region` into this graph (at the end, or before `before`), its
        inputs bound to `args`; returns the copies of its outputs. `scope` given replaces
        the copies' empty scopes (a loop body unrolled into a layer)."""
        vmap: dict[int, Value] = {id(v): a for v, a in zip(region.inputs, args, strict=True)}
        for n in region:
            outs = [Value(o.type, o.name, quant=o.quant, layout=o.layout) for o in n.outputs]
            for o, new in zip(n.outputs, outs):
                vmap[id(o)] = new
            copy = Node(n.op, [vmap[id(v)] for v in n.inputs], outs, dict(n.attrs),
                        scope=n.scope or (scope or ""), loc=n.loc,
                        regions=[r.clone() for r in n.regions])
            if before is None:
                self.append(copy)
            else:
                self.insert_before(copy, before)
        return [vmap[id(v)] for v in region.outputs]

    def to_networkx(self):
        """A `networkx.MultiDiGraph` view for analyses: nodes are `Node` objects plus one node
        per graph input (the Value) and a `"return"` sink; edges carry the `value` and `index`."""
        import networkx as nx

        G = nx.MultiDiGraph()
        for v in self.inputs:
            G.add_node(v, kind="input")
        for n in self:
            G.add_node(n, kind="node", op=n.op)
        G.add_node("return", kind="return")
        for n in self:
            for i, v in enumerate(n.inputs):
                src = v.producer if v.producer is not None else v
                G.add_edge(src, n, value=v, index=i)
        for i, v in enumerate(self.outputs):
            src = v.producer if v.producer is not None else v
            G.add_edge(src, "return", value=v, index=i)
        return G


class Module:
    """One or more graphs (entry `main`) plus metadata (source framework, signature names,
    producer). Metadata values are attribute values (str, int, float, bool, lists)."""

    def __init__(self, graphs: Iterable[Graph] = (), metadata: dict[str, Any] | None = None):
        self.graphs: dict[str, Graph] = {}
        for g in graphs:
            self.add_graph(g)
        self.metadata: dict[str, Any] = {k: normalize_attr(v) for k, v in (metadata or {}).items()}

    def add_graph(self, graph: Graph) -> Graph:
        """Adds `graph` under its name (which must be new) and returns it."""
        if graph.name in self.graphs:
            raise ValueError(f"module already has a graph @{graph.name}")
        self.graphs[graph.name] = graph
        return graph

    def all_graphs(self) -> Iterator[Graph]:
        """Every graph: the module's own and, after each, the regions nested in it. Passes
        that rewrite graph by graph (canonicalization, CSE, DCE) walk these."""
        for g in self.graphs.values():
            yield g
            yield from g.region_graphs()

    @property
    def main(self) -> Graph:
        """The entry graph: `@main`, else the first graph."""
        if "main" in self.graphs:
            return self.graphs["main"]
        return next(iter(self.graphs.values()))

    def clone(self) -> "Module":
        """A deep copy of every graph (constant arrays are shared: they are read-only)."""
        return Module([g.clone() for g in self.graphs.values()], dict(self.metadata))

    def __eq__(self, other: object) -> bool:
        """Structural equality: the same metadata and graphs, where graphs are equal when their
        printed forms would be (`graphs_equal`); printing itself is `ir.text`'s job."""
        if not isinstance(other, Module):
            return NotImplemented
        return (list(self.graphs) == list(other.graphs)
                and self.metadata.keys() == other.metadata.keys()
                and all(attr_equal(v, other.metadata[k]) for k, v in self.metadata.items())
                and all(graphs_equal(g, other.graphs[n]) for n, g in self.graphs.items()))

    __hash__ = None  # mutable

    def __repr__(self) -> str:
        graphs = ", ".join(f"@{n}: {len(g)} nodes" for n, g in self.graphs.items())
        source = self.metadata.get("source")
        return f"Module({graphs}{', source=' + repr(source) if source else ''})"


def display_names(graph: Graph) -> dict[int, str | None]:
    """The name each value of `graph` is shown under, keyed by `id(value)`: its own name, made
    unique with a `_k` suffix, or None for an anonymous value (no name, or an all-digit one),
    which the text format numbers in definition order."""
    values = list(graph.inputs) + [o for n in graph for o in n.outputs]
    taken = {v.name for v in values if v.name and not v.name.isdigit()}
    names: dict[int, str | None] = {}
    used: set[str] = set()
    for v in values:
        if v.name and not v.name.isdigit():
            name = v.name
            if name in used:
                k = 1
                while f"{v.name}_{k}" in used or f"{v.name}_{k}" in taken:
                    k += 1
                name = f"{v.name}_{k}"
            used.add(name)
            names[id(v)] = name
        else:
            names[id(v)] = None
    return names


def shown_attrs(node: Node) -> dict[str, Any]:
    """The attributes that differ from the op's declared defaults, declared ones first in
    declaration order, then unknown ones sorted: what the text format prints, and what
    structural equality compares."""
    decls = get_op(node.op).attrs if has_op(node.op) else {}
    attrs = node.attrs
    keys = [k for k in decls if k in attrs] + sorted(k for k in attrs if k not in decls)
    return {k: attrs[k] for k in keys
            if not (k in decls and attr_equal(attrs[k], decls[k].default))}


def graphs_equal(a: Graph, b: Graph) -> bool:
    """True when `a` and `b` have the same name, inputs, nodes (op, operands, attributes,
    result types, quantization, layouts, scope, loc, shown names) and outputs, in order."""
    if a.name != b.name or len(a.inputs) != len(b.inputs) or len(a) != len(b) \
            or len(a.outputs) != len(b.outputs):
        return False
    names_a, names_b = display_names(a), display_names(b)
    counterpart: dict[int, int] = {}  # id(value of a) -> id(value of b)

    def same_value(x: Value, y: Value) -> bool:
        counterpart[id(x)] = id(y)
        return (names_a[id(x)] == names_b[id(y)] and x.type == y.type
                and x.layout == y.layout and _same_quant(x.quant, y.quant))

    if not all(same_value(x, y) for x, y in zip(a.inputs, b.inputs)):
        return False
    for m, n in zip(a, b):
        if (m.op != n.op or m.scope != n.scope or m.loc != n.loc
                or len(m.inputs) != len(n.inputs) or len(m.outputs) != len(n.outputs)
                or any(counterpart.get(id(x)) != id(y) for x, y in zip(m.inputs, n.inputs))):
            return False
        shown_m, shown_n = shown_attrs(m), shown_attrs(n)
        if shown_m.keys() != shown_n.keys() or \
                not all(attr_equal(v, shown_n[k]) for k, v in shown_m.items()):
            return False
        if not all(same_value(x, y) for x, y in zip(m.outputs, n.outputs)):
            return False
        if len(m.regions) != len(n.regions) or \
                not all(graphs_equal(r, s) for r, s in zip(m.regions, n.regions)):
            return False
    return all(counterpart.get(id(x)) == id(y) for x, y in zip(a.outputs, b.outputs))


def _same_quant(p: QuantParams | None, q: QuantParams | None) -> bool:
    if p is None or q is None:
        return p is q
    return (attr_equal(p.scale, q.scale) and p.zero_point == q.zero_point and p.axis == q.axis
            and p.bits == q.bits and p.signed == q.signed and p.narrow_range == q.narrow_range)
