"""Sharding plans side by side: the Megatron layout map and `auto_shard` under a memory limit
that forces model parallelism (planning only; bytes per device from the cost model)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from .models import transformer_encoder


def bench_sharding(layers: int = 4, d_model: int = 256, heads: int = 4, seq_len: int = 64,
                   batch: int = 8, fraction: float = 0.5) -> list[dict]:
    """Per plan: per-device parameter bytes, collective count and bytes per forward pass."""
    import tensorforge
    from tensorforge import sharding as ts
    from tensorforge.tools.convert import optimize

    module = optimize(tensorforge.from_keras(transformer_encoder(layers, d_model, heads,
                                                                 seq_len)), None)
    mesh = ts.Mesh({"batch": 2, "model": 4})
    replicated = ts.auto_shard(module, mesh, memory_limit_bytes=float("inf"), batch=batch)
    limit = fraction * replicated.parameter_bytes_per_device()
    plans = {"data parallel (replicated weights)": replicated,
             "Megatron (create_layout_map)": ts.shard(module, ts.create_layout_map(module, mesh),
                                                      batch=batch),
             f"auto_shard (limit {limit / 2**20:.1f} MiB)":
                 ts.auto_shard(module, mesh, memory_limit_bytes=limit, batch=batch)}
    return [{"plan": name, "param_bytes": p.parameter_bytes_per_device(),
             "collectives": len(p.collectives), "comm_bytes": p.total_collective_bytes()}
            for name, p in plans.items()]


def sharding_table(console: Console) -> list[dict]:
    """Prints bench_sharding's rows."""
    rows = bench_sharding()
    table = Table(title="encoder4 (d=256) on mesh {batch: 2, model: 4}, batch 8: sharding "
                        "plans (per device, one forward pass)")
    for col in ("plan", "parameter bytes", "collectives", "collective bytes"):
        table.add_column(col, justify="left" if col == "plan" else "right")
    for r in rows:
        table.add_row(r["plan"], f"{r['param_bytes']:,.0f}", str(r["collectives"]),
                      f"{r['comm_bytes']:,.0f}")
    console.print(table)
    return rows
