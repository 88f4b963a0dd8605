"""`Mesh`: named device-mesh axes and their sizes (DTensor / `jax.sharding.Mesh` style), and
`ShardingError`, the error every sharding problem is reported with."""

from __future__ import annotations

import numbers
import re
from typing import Iterable, Mapping

from ...ir.errors import ConversionError, Diagnostic

_AXIS_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class ShardingError(ConversionError):
    """A sharding request that cannot be honoured (unknown mesh axis, indivisible dim,
    conflicting layout-map keys, rank mismatch, ...). Lists every problem at once."""


class Mesh:
    """Ordered mesh axes `name -> size`; devices are numbered row-major over the axes, so
    device `d` has coordinate `coords(d)` (the last axis varies fastest)."""

    def __init__(self, axes: Mapping[str, int] | Iterable[tuple[str, int]]):
        items = list(axes.items()) if isinstance(axes, Mapping) else list(axes)
        problems = []
        seen = set()
        for name, size in items:
            if not isinstance(name, str) or not _AXIS_RE.match(name):
                problems.append(Diagnostic(f"mesh axis name {name!r} is not an identifier"))
            elif name in seen:
                problems.append(Diagnostic(f"mesh axis '{name}' is given twice"))
            seen.add(name)
            if isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < 1:
                problems.append(Diagnostic(f"mesh axis {name!r} has size {size!r}; sizes must "
                                           "be positive integers"))
        if not items:
            problems.append(Diagnostic("a mesh needs at least one axis"))
        if problems:
            raise ShardingError("invalid mesh", problems)
        self.axes: dict[str, int] = {name: int(size) for name, size in items}

    @property
    def axis_names(self) -> tuple[str, ...]:
        """The axis names, in order."""
        return tuple(self.axes)

    @property
    def shape(self) -> tuple[int, ...]:
        """The axis sizes, in order."""
        return tuple(self.axes.values())

    @property
    def size(self) -> int:
        """Number of devices."""
        n = 1
        for s in self.axes.values():
            n *= s
        return n

    def __getitem__(self, axis: str) -> int:
        return self.axes[axis]

    def __contains__(self, axis: object) -> bool:
        return axis in self.axes

    def coords(self, device: int) -> dict[str, int]:
        """The mesh coordinate of device `device` (row-major numbering)."""
        if not 0 <= device < self.size:
            raise ValueError(f"device {device} out of range for a mesh of {self.size} devices")
        out = {}
        for name in reversed(self.axis_names):
            out[name] = device % self.axes[name]
            device //= self.axes[name]
        return {n: out[n] for n in self.axis_names}

    def device(self, coords: Mapping[str, int]) -> int:
        """Inverse of `coords`."""
        d = 0
        for name in self.axis_names:
            d = d * self.axes[name] + coords[name]
        return d

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Mesh) and list(self.axes.items()) == list(other.axes.items())

    def __hash__(self) -> int:
        return hash(tuple(self.axes.items()))

    def __repr__(self) -> str:
        return f"Mesh({self.axes!r})"


def parse_mesh(text: str) -> Mesh:
    """`"batch=2,model=4"` (or `batch:2,model:4`) -> Mesh."""
    axes, problems = {}, []
    for part in filter(None, (p.strip() for p in text.split(","))):
        m = re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*)\s*[=:]\s*(\d+)", part)
        if m is None:
            problems.append(f"mesh axis {part!r} is not NAME=SIZE")
            continue
        axes[m.group(1)] = int(m.group(2))
    if problems or not axes:
        raise ShardingError(f"bad mesh {text!r}", [Diagnostic(p) for p in problems or
                                                   ["expected e.g. \"batch=2,model=4\""]])
    return Mesh(axes)


def mesh_text(mesh: Mesh) -> str:
    """The text form `parse_mesh` reads: `"batch=2,model=4"`."""
    return ",".join(f"{a}={n}" for a, n in zip(mesh.axis_names, mesh.shape))
