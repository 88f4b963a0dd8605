"""Sharding (DTensor-style global view): `Mesh`, `Layout`, `LayoutMap`,
`create_layout_map`, and `shard`, which propagates layouts through a module and plans the
collectives it needs. The contract: docs/design/sharding.md."""

from ...ir.types import Layout
from .auto import auto_shard
from .layout_map import LayoutMap, create_layout_map, tensor_name
from .mesh import Mesh, ShardingError
from .partition import partition, run_partitioned
from . import passes as _passes  # noqa: F401  (registers shard-propagate, insert-collectives)
from .plan import Collective, ShardingPlan, collective_bytes
from .propagate import shard

__all__ = ["Mesh", "Layout", "LayoutMap", "ShardingError", "create_layout_map", "tensor_name",
           "auto_shard", "partition", "run_partitioned",
           "shard", "ShardingPlan", "Collective", "collective_bytes"]
