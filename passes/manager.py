"""PassContext and PassManager: run a pipeline over a Module with instrumentation.

Instrumentation (all off by default):
- `print_ir_after`: pass names (or {"all"}) after which the IR is printed to `ir_stream`;
- `verify_each`: run the verifier after every pass (a failure names the pass);
- `time_passes`: collect wall time per pass; `timing_report()` renders the table;
- `check_changes`: compare the printed IR before and after each pass and fail if the pass's
  "changed" answer is wrong (used by the tests: passes must report truthfully).
"""

from __future__ import annotations

import gc
import sys
import time
from dataclasses import dataclass, field
from typing import IO, Iterable

from ..ir.errors import TensorforgeError, VerificationError
from ..ir.graph import Module
from ..ir.text import print_module
from ..ir.verify import verify_module
from .base import Pass
from .pipeline import parse_pipeline, print_pipeline


@dataclass
class PassTiming:
    name: str
    seconds: float
    changed: bool


@dataclass
class PassContext:
    """Settings and shared state for one pipeline run."""

    print_ir_after: set[str] = field(default_factory=set)
    verify_each: bool = False
    time_passes: bool = False
    check_changes: bool = False
    elide_constants: bool = True
    ir_stream: IO[str] | None = None
    timings: list[PassTiming] = field(default_factory=list)
    # Free-form per-run statistics passes may record (e.g. rewrites applied per pattern).
    stats: dict[str, int] = field(default_factory=dict)

    def bump(self, key: str, n: int = 1) -> None:
        """Adds `n` to the statistic `key` (shown with the timing report)."""
        self.stats[key] = self.stats.get(key, 0) + n

    def wants_ir_after(self, name: str) -> bool:
        """True when the IR should be printed after pass `name` (`--print-ir-after`)."""
        return "all" in self.print_ir_after or name in self.print_ir_after

    def timing_report(self) -> str:
        """A plain-text table of wall time per pass (and the total)."""
        total = sum(t.seconds for t in self.timings) or 1e-12
        rows = [("pass", "seconds", "%", "changed")]
        rows += [(t.name, f"{t.seconds:.4f}", f"{100 * t.seconds / total:.1f}",
                  "yes" if t.changed else "no") for t in self.timings]
        rows.append(("total", f"{sum(t.seconds for t in self.timings):.4f}", "100.0", ""))
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        lines = ["===- Pass execution timing report -===",
                 "  ".join(h.ljust(w) for h, w in zip(rows[0], widths))]
        lines.append("  ".join("-" * w for w in widths))
        lines += ["  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                            for i, (c, w) in enumerate(zip(r, widths))) for r in rows[1:]]
        return "\n".join(lines)


class PassManager:
    """An ordered list of passes. `PassManager.parse("canonicalize,dce")` builds one from text."""

    def __init__(self, passes: Iterable[Pass] = ()):
        self.passes = list(passes)

    @classmethod
    def parse(cls, pipeline: str) -> "PassManager":
        """A pass manager for a textual pipeline (`"canonicalize{fold=false},dce"`)."""
        return cls(parse_pipeline(pipeline))

    def add(self, p: Pass) -> "PassManager":
        """Appends pass `p`; returns the manager (chainable)."""
        self.passes.append(p)
        return self

    def __str__(self) -> str:
        return print_pipeline(self.passes)

    def run(self, module: Module, ctx: PassContext | None = None) -> bool:
        """Runs every pass in order; returns True if any changed the module."""
        # The IR is full of reference cycles (node <-> value), so on big graphs CPython's
        # cyclic collector keeps rescanning the whole live graph while passes allocate: at
        # 100k nodes that was 40% of canonicalize. Collect once at the end instead.
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            return self._run(module, ctx or PassContext())
        finally:
            if was_enabled:
                gc.enable()

    def _run(self, module: Module, ctx: PassContext) -> bool:
        stream = ctx.ir_stream or sys.stderr
        any_changed = False
        for p in self.passes:
            before = print_module(module) if ctx.check_changes else None
            start = time.perf_counter()
            changed = bool(p.run(module, ctx))
            elapsed = time.perf_counter() - start
            ctx.timings.append(PassTiming(p.pipeline_text(), elapsed, changed))
            any_changed |= changed
            if ctx.check_changes:
                actually = print_module(module) != before
                if actually != changed:
                    raise TensorforgeError(
                        f"pass '{p.name}' reported changed={changed} but the IR "
                        f"{'changed' if actually else 'did not change'}")
            if ctx.verify_each:
                try:
                    verify_module(module)
                except VerificationError as e:
                    raise VerificationError(f"IR invalid after pass '{p.pipeline_text()}'",
                                            e.diagnostics) from None
            if ctx.wants_ir_after(p.name):
                stream.write(f"// -----// IR Dump After {p.pipeline_text()} "
                             f"({'changed' if changed else 'unchanged'}) //----- //\n")
                stream.write(print_module(module, elide=ctx.elide_constants))
                stream.flush()
        return any_changed
