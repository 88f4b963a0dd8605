"""Pass-scaling benchmark: canonicalize on synthetic graphs of 1k, 10k and 100k nodes.

Goal (issue 2): time per node flat within 20% across sizes, and 100k nodes under 2 s."""

from __future__ import annotations

import statistics
import time

from ...passes import PassManager
from .graphgen import synthetic_module

SIZES = (1_000, 10_000, 100_000)


def bench_canonicalize(sizes=SIZES, repeats: int = 3) -> list[dict]:
    """One row per size: nodes before/after, best-of-`repeats` seconds, microseconds per node."""
    rows = []
    for n in sizes:
        times = []
        for _ in range(repeats):
            module = synthetic_module(n)
            before = len(module.main)
            start = time.perf_counter()
            PassManager.parse("canonicalize").run(module)
            times.append(time.perf_counter() - start)
        best = min(times)
        rows.append({"nodes": before, "after": len(module.main), "seconds": best,
                     "median_s": statistics.median(times), "us_per_node": best / before * 1e6})
    base = rows[0]["us_per_node"]
    for r in rows:
        r["vs_smallest"] = r["us_per_node"] / base
    return rows
