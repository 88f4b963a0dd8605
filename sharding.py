"""`tensorforge.sharding`: meshes, layouts and layout maps as IR passes; planning,
auto-sharding and the device-by-device SPMD check, and execution of a plan on JAX/XLA
(`compile_sharded`, `run_sharded`) and TF DTensor (`run_dtensor`). A plan carries its mesh.

    from tensorforge import sharding as ts
    mesh = ts.Mesh({"batch": 2, "model": 4})
    layout_map = ts.create_layout_map(module, mesh, style="megatron")
    layout_map[r"encoder_0_ff1/kernel"] = ts.Layout((None, "model"))
    plan = ts.shard(module, layout_map, inputs={"tokens": ts.Layout(("batch", None))})
    print(plan.report())
    plan = ts.auto_shard(module, mesh, memory_limit_bytes=...)
    outs = ts.run_sharded(plan, [x])          # JAX/XLA on the plan's mesh
    outs = ts.run_dtensor(plan, [x])          # TF DTensor
    layout_map = ts.from_keras_layout_map(keras_layout_map, module, weights=model)
"""

from __future__ import annotations

from ._lazy import lazy_getattr
from .passes.shard import (Collective, Layout, LayoutMap, Mesh, ShardingError, ShardingPlan,
                           auto_shard, create_layout_map, partition, run_partitioned, shard,
                           tensor_name)

_LAZY = {
    "to_keras_layout_map": ("backends.keras_layout_map", "to_keras_layout_map"),
    "from_keras_layout_map": ("backends.keras_layout_map", "from_keras_layout_map"),
    "compile_sharded": ("backends.jax_sharding", "compile_sharded"),
    "run_sharded": ("backends.jax_sharding", "run_sharded"),
    "run_dtensor": ("backends.dtensor", "run_dtensor"),
}

__all__ = ["Mesh", "Layout", "LayoutMap", "ShardingError", "ShardingPlan", "Collective",
           "create_layout_map", "shard", "auto_shard", "partition", "run_partitioned",
           "tensor_name", *_LAZY]


__getattr__ = lazy_getattr(__name__, __package__, _LAZY, globals())