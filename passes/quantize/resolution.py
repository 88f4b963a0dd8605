"""The resolved configuration of a module: per node, the `QuantizationConfiguration` of each
operand and result (or why the node stays float), and its printable table. Produced by
resolver.py, read by calibration and fake-quant insertion.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from ...ir.graph import Node
from .configuration import KINDS, QuantizationConfiguration
from .schemes import Scheme


class TensorResolution(NamedTuple):
    """One operand or result of a node: its name (operand role, `values:i` for a variadic op,
    `return` / `return:i` for results), kind, config (None = float) and where the config came
    from (`scheme int8`, `layer 'conv1'`, `op matmul in 'enc/.*'`, `tensor 'x'`)."""

    name: str
    kind: str
    config: QuantizationConfiguration | None
    source: str


@dataclass
class NodeResolution:
    """What one node is quantized to. `float_reason` is set (and every config is None) when
    the node stays float."""

    node: Node
    scope: str
    op: str
    operands: list[TensorResolution]
    results: list[TensorResolution]
    float_reason: str | None = None

    @property
    def is_float(self) -> bool:
        """True when the node stays float (`float_reason` says why)."""
        return self.float_reason is not None

    def operand(self, name: str) -> TensorResolution:
        """The operand named `name` (a role such as `filter`, or `values:1`)."""
        for t in self.operands:
            if t.name == name:
                return t
        raise KeyError(f"{self.op} has no operand {name!r} "
                       f"(operands: {', '.join(t.name for t in self.operands)})")


class Resolution:
    """The resolved configuration of every non-constant node of a module's main graph."""

    def __init__(self, scheme: "Scheme", nodes: list[NodeResolution]):
        self.scheme = scheme
        self.nodes = nodes
        self._by_id = {id(n.node): n for n in nodes}

    def for_node(self, node: Node) -> NodeResolution | None:
        """The resolution of `node`; None for nodes that have none (constants)."""
        return self._by_id.get(id(node))

    def float_nodes(self) -> list[NodeResolution]:
        """The nodes that stay float, in graph order."""
        return [n for n in self.nodes if n.is_float]

    def table(self) -> str:
        """A fixed-width text table: one row per operand and result of each quantized node,
        one row per float node (with its reason)."""
        header = ("scope", "op", "operand", "kind", "bits", "sym", "granularity",
                  "calibration", "source")
        rows = [header]
        for nr in self.nodes:
            scope = nr.scope or "-"
            if nr.is_float:
                rows.append((scope, nr.op, "-", "float", "-", "-", "-", "-",
                             f"float: {nr.float_reason}"))
                continue
            for t in nr.operands + nr.results:
                rows.append((scope, nr.op, t.name, t.kind) + _config_cells(t) + (t.source,))
        widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


def _config_cells(t: TensorResolution) -> tuple[str, str, str, str]:
    qc = t.config
    if qc is None:
        return ("float", "-", "-", "-")
    if qc.dtype == "float16":
        return ("f16", "-", "-", "-")
    sym = "sym" if qc.symmetric else "asym"
    if qc.resolved_narrow_range(t.kind if t.kind in KINDS else "activation"):
        sym += ",narrow"
    return (str(qc.bits), sym, qc._granularity_str(), qc._calibration_str())
