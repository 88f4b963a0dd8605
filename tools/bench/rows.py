"""One benchmark row per model, where a model the benchmark fails on (KerasHub missing, a
conversion error) becomes an error row instead of stopping `make bench`."""

from __future__ import annotations

from typing import Callable


def measure_row(console, table, name: str, bench: Callable[[str], dict], columns: int) -> dict:
    """`bench(name)`, or on failure {"model": name, "error": why} after adding a row of `-`
    for it to `table` (`columns` cells past the name) and printing why."""
    try:
        return bench(name)
    except Exception as e:
        why = f"{type(e).__name__}: {e}"
        table.add_row(name, *["-"] * columns)
        console.print(f"{name}: {why}")
        return {"model": name, "error": why}
