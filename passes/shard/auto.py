"""`auto_shard`: choose a sharding plan under a per-device memory limit.

Strategy space (Alpa-style, at the granularity of transformer blocks): for every block that
`create_layout_map` recognises (an attention block, a two-layer MLP, an embedding) either
keep it replicated (data parallel only) or apply its Megatron tensor-parallel layout. Each
option's cost is measured by planning it alone with the real propagator: the parameter
bytes it saves per device and the collective bytes it adds. Blocks meet at replicated
boundaries (residual adds and layer norms see whole activations), so the costs add up; the
choice is then an exact 0/1 knapsack solved by dynamic programming: minimize the added
communication subject to saving at least (replicated bytes - limit). The chosen map is
re-planned as a whole, and if that plan communicates more than the all-Megatron plan (the
additivity assumption failed), the all-Megatron plan is returned instead, so the result
never communicates more than Megatron.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ...ir.errors import Diagnostic
from ...ir.graph import Module
from .layout_map import LayoutMap, create_layout_map
from .mesh import Mesh, ShardingError
from .plan import ShardingPlan, format_bytes
from .propagate import shard

GRID = 2000   # memory is discretized into this many units of the bytes that must be saved


@dataclass
class BlockOption:
    """Sharding one block: what it saves and what it costs, measured alone."""

    name: str
    keys: list[str]
    saved_bytes: float        # parameter bytes per device saved vs replicated
    added_comm_bytes: float   # collective bytes per device added vs replicated


def _map(mesh: Mesh, full: LayoutMap, keys) -> LayoutMap:
    lm = LayoutMap(mesh, inputs=full.inputs)
    for k in keys:
        lm[k] = full[k]
    return lm


def _knapsack(options: list[BlockOption], need: float) -> list[BlockOption]:
    """The subset saving >= need with the least added communication (exact DP on a grid;
    savings are rounded down, so the chosen subset really saves enough)."""
    unit = need / GRID
    best: dict[int, tuple[float, tuple[int, ...]]] = {0: (0.0, ())}
    for i, opt in enumerate(options):
        w = min(GRID, int(math.floor(opt.saved_bytes / unit)))
        if w <= 0:
            continue
        for have, (cost, chosen) in list(best.items()):
            reach = min(GRID, have + w)
            new = cost + max(opt.added_comm_bytes, 0.0)
            if reach not in best or new < best[reach][0]:
                best[reach] = (new, chosen + (i,))
    if GRID not in best:
        return []
    return [options[i] for i in best[GRID][1]]


def auto_shard(module: Module, mesh: Mesh, *, memory_limit_bytes: float, inputs=None,
               batch: int = 1, model_axis: str = "model", batch_axis: str = "batch"
               ) -> ShardingPlan:
    """A plan whose per-device parameter bytes fit `memory_limit_bytes` with the least
    communication the block-level search finds (see the module docstring). The plan's
    `auto` attribute records the options, the chosen blocks and the Megatron baseline."""
    full = create_layout_map(module, mesh, model_axis=model_axis, batch_axis=batch_axis)
    base = shard(module, _map(mesh, full, []), inputs, batch=batch)
    megatron = shard(module, full, inputs, batch=batch)
    base_mem, base_comm = base.parameter_bytes_per_device(), base.total_collective_bytes()
    options = []
    for name, keys in full.blocks.items():
        p = shard(module, _map(mesh, full, keys), inputs, batch=batch)
        options.append(BlockOption(name, list(keys), base_mem - p.parameter_bytes_per_device(),
                                   p.total_collective_bytes() - base_comm))
    need = base_mem - memory_limit_bytes
    if need <= 0:
        chosen, plan = [], base
    else:
        chosen = _knapsack(options, need)
        if not chosen:
            floor = megatron.parameter_bytes_per_device()
            raise ShardingError("no plan fits the memory limit", [Diagnostic(
                f"memory_limit_bytes={format_bytes(memory_limit_bytes)} per device, but even "
                f"the all-Megatron plan needs {format_bytes(floor)} of parameters per device "
                f"(replicated: {format_bytes(base_mem)})")])
        plan = shard(module, _map(mesh, full, [k for o in chosen for k in o.keys]), inputs,
                     batch=batch)
        if plan.total_collective_bytes() > megatron.total_collective_bytes() \
                or plan.parameter_bytes_per_device() > memory_limit_bytes:
            chosen, plan = options, megatron
    plan.auto = {"options": options, "chosen": [o.name for o in chosen],
                 "megatron": megatron, "replicated": base}
    return plan
