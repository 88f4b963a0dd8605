"""The sharding pipeline passes, so `tensorforge opt` can plan and partition too:

    shard-propagate{mesh="batch=2,model=4",style=megatron}   annotate every value's layout
    insert-collectives                                        the per-device SPMD program

`shard-propagate` records the mesh in the module's metadata (`mesh`, as text) and the layouts
on the values (printed as `layout<...>`), so the annotated module round-trips through the
text format and `insert-collectives` can re-plan exactly those layouts.
"""

from __future__ import annotations

import re

from ...ir.errors import Diagnostic
from ..base import Option, Pass, register_pass
from .layout_map import LayoutMap, create_layout_map, node_order, tensor_name
from .mesh import ShardingError, mesh_text, parse_mesh
from .partition import partition
from .propagate import shard


@register_pass("shard-propagate")
class ShardPropagate(Pass):
    """Plans the module on a mesh with a canned layout map (Megatron tensor parallelism plus
    data parallelism on `batch`) and annotates every value with its layout."""

    options = {
        "mesh": Option(str, "batch=2,model=4", "mesh axes, e.g. \"batch=2,model=4\"",
                       check=parse_mesh),
        "style": Option(str, "megatron", "canned layout map (megatron)", choices=("megatron",)),
        "batch": Option(int, 1, "batch size assumed for byte counts", min=1),
    }

    def run(self, module, ctx):
        mesh = parse_mesh(self.option("mesh"))
        plan = shard(module, create_layout_map(module, mesh, style=self.option("style")),
                     batch=self.option("batch"))
        graph = module.main
        for v in [*graph.inputs, *(o for n in graph for o in n.outputs)]:
            v.layout = plan.layout_of(v)
        module.metadata["mesh"] = mesh_text(mesh)
        return True


@register_pass("insert-collectives")
class InsertCollectives(Pass):
    """Turns a layout-annotated module (from shard-propagate) into its per-device SPMD
    program: local shard shapes, sharded constants as extra inputs, and explicit all_reduce /
    all_gather ops where the layouts need them (run it with tensorforge.ir.spmd)."""

    options = {"mesh": Option(str, "", "mesh axes (default: the module's `mesh` metadata)",
                              check=lambda text: text and parse_mesh(text))}

    def run(self, module, ctx):
        text = self.option("mesh") or module.metadata.get("mesh", "")
        if not text:
            raise ShardingError("insert-collectives needs a mesh", [Diagnostic(
                "run shard-propagate first, or pass mesh=\"batch=2,model=4\"")])
        mesh = parse_mesh(text)
        graph = module.main
        lm = LayoutMap(mesh)
        order = node_order(graph)
        for n in graph:
            v = n.outputs[0] if n.op == "constant" else None
            if v is not None and v.layout is not None and any(v.layout.axes):
                name = tensor_name(v, order)
                if name is not None:
                    lm[f"^{re.escape(name)}$"] = v.layout
        inputs = {v.name: v.layout for v in graph.inputs if v.name and v.layout is not None}
        local, _ = partition(shard(module, lm, inputs))
        module.graphs = local.graphs
        module.metadata["mesh"] = mesh_text(mesh)
        return True
