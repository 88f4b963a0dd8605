"""`make demo`: runs the canonicalize pipeline on the bundled example and checks the result.

Parses `examples/small_cnn.tfir`, verifies it, canonicalizes it with timing, prints the
optimized IR (large constants elided), and runs both versions in the IR interpreter on the
same random batch to show they compute the same thing. Later issues extend it to compile a
model to every target and verify each artifact in its runtime.
"""

from __future__ import annotations

import collections
import sys
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from ..ir.interpreter import run_graph
from ..ir.text import parse_module, print_module
from ..ir.verify import verify_module
from ..passes import PassContext, PassManager

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "small_cnn.tfir"
PIPELINE = "canonicalize"


def op_histogram(graph) -> collections.Counter:
    return collections.Counter(n.op for n in graph)


def main() -> int:
    console = Console()
    module = parse_module(EXAMPLE.read_text(), str(EXAMPLE))
    verify_module(module)
    original = module.clone()
    console.rule(f"tensorforge demo: {EXAMPLE.name} | pipeline '{PIPELINE}'")

    ctx = PassContext(verify_each=True, time_passes=True)
    PassManager.parse(PIPELINE).run(module, ctx)
    console.print(print_module(module, elide=True), highlight=False, markup=False,
                  soft_wrap=True)
    console.print(ctx.timing_report(), highlight=False, soft_wrap=True)

    before, after = op_histogram(original.main), op_histogram(module.main)
    table = Table(title="ops before / after")
    for col in ("op", "before", "after"):
        table.add_column(col, justify="right" if col != "op" else "left")
    for op in sorted(set(before) | set(after)):
        table.add_row(op, str(before[op]), str(after[op]))
    table.add_row("[b]total[/b]", str(len(original.main)), str(len(module.main)))
    console.print(table)

    batch = np.random.default_rng(0).standard_normal((4, 8, 8, 1)).astype(np.float32)
    [ref] = run_graph(original.main, [batch])
    [out] = run_graph(module.main, [batch])
    err = float(np.max(np.abs(ref - out)))
    ok = err <= 1e-5 and np.allclose(out.sum(axis=-1), 1.0, atol=1e-5)
    console.print(f"interpreter check on a batch of 4: max |original - canonicalized| = "
                  f"{err:.2e} -> {'OK' if ok else 'MISMATCH'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
