"""Errors a user can cause. Each carries every problem found, not just the first.

The CLI prints `str(error)` and exits non-zero; it never shows a traceback for these.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Diagnostic:
    """One problem, located: at a node (`node`, `scope`, `loc`) and/or a text position."""

    message: str
    node: str = ""      # e.g. "%3 = conv2d"
    scope: str = ""     # source layer / module path
    loc: str = ""       # frontend location (framework op, user source line)
    file: str = ""
    line: int = 0
    col: int = 0

    def __str__(self) -> str:
        where = []
        if self.file or self.line:
            where.append(f"{self.file or '<input>'}:{self.line}:{self.col}")
        if self.node:
            where.append(f"node {self.node}")
        if self.scope:
            where.append(f"scope '{self.scope}'")
        if self.loc:
            where.append(f"loc '{self.loc}'")
        return f"{' '.join(where)}: {self.message}" if where else self.message


class TensorforgeError(Exception):
    """Base of every error tensorforge raises on purpose."""


class ConversionError(TensorforgeError):
    """A user-caused failure; lists all diagnostics at once."""

    def __init__(self, summary: str, diagnostics: list[Diagnostic] | None = None):
        self.summary = summary
        self.diagnostics = list(diagnostics or [])
        super().__init__(self._render())

    def _render(self) -> str:
        if not self.diagnostics:
            return self.summary
        lines = [f"{self.summary} ({len(self.diagnostics)} problem"
                 f"{'s' if len(self.diagnostics) != 1 else ''}):"]
        lines += [f"  {d}" for d in self.diagnostics]
        return "\n".join(lines)


class ParseError(ConversionError):
    """Malformed `.tfir` text; the diagnostic holds file:line:col."""


class VerificationError(ConversionError):
    """The IR breaks an invariant (SSA, order, types, attributes, quant params)."""


class InferenceError(ValueError):
    """Raised by an op's type-inference rule when its operands or attributes do not fit."""
