"""An example pass plugin: `tensorforge opt --load-pass-plugin examples/plugins/clip_to_relu6.py`.

Rewrites clip(x, 0, 6) into relu6(x) (and, with `also-relu=true`, clip(x, 0, inf) into relu),
which backends map to fused TFLite activations. It shows the whole plugin API: a pattern, a
pass with an option, and registration with @register_pass.
"""

import math

from tensorforge.passes import (Option, Pass, RewritePattern, apply_patterns_greedily,
                                register_pass)


class ClipToActivation(RewritePattern):
    root = "clip"

    def __init__(self, also_relu: bool):
        self.also_relu = also_relu

    def match_and_rewrite(self, node, rw):
        lo, hi = node.attrs["min"], node.attrs["max"]
        if lo == 0 and hi == 6:
            op = "relu6"
        elif self.also_relu and lo == 0 and math.isinf(hi) and hi > 0:
            op = "relu"
        else:
            return False
        new = rw.create(op, node.inputs, like=node)
        rw.replace(node, new.outputs)
        return True


@register_pass("clip-to-relu6")
class ClipToRelu6(Pass):
    """Rewrites clip(x, 0, 6) as relu6(x) (and clip(x, 0, inf) as relu with also-relu)."""

    options = {"also-relu": Option(bool, False, "also rewrite clip(x, 0, inf) to relu")}

    def run(self, module, ctx):
        pattern = ClipToActivation(self.option("also-relu"))
        changed = False
        for graph in module.graphs.values():
            changed |= apply_patterns_greedily(graph, [pattern], stats=ctx.stats)
        return changed
