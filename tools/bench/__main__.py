"""`make bench`: the benchmarks, printed as tables. Later issues add conversion rows measured
side by side with the anchor tools (TFLiteConverter, jax2tf, tensorflowjs)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from .passes import bench_canonicalize


def main() -> None:
    console = Console()
    rows = bench_canonicalize()
    table = Table(title="canonicalize scaling (best of 3; goal: flat within 20%, 100k < 2 s)")
    for col in ("nodes", "after", "seconds", "µs/node", "× smallest"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(f"{r['nodes']:,}", f"{r['after']:,}", f"{r['seconds']:.3f}",
                      f"{r['us_per_node']:.2f}", f"{r['vs_smallest']:.2f}")
    console.print(table)
    flat = max(r["vs_smallest"] for r in rows) <= 1.2
    fast = rows[-1]["seconds"] < 2.0
    console.print(f"flat within 20%: {'yes' if flat else 'NO'}; "
                  f"largest under 2 s: {'yes' if fast else 'NO'}")


if __name__ == "__main__":
    main()
