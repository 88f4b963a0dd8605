"""Preparing a float module for quantization: activations that TFLite's integer kernels cannot
fuse become nodes of their own, so that the value before them gets its own quantization
params.

TFLite's int8 CONV_2D / FULLY_CONNECTED / TRANSPOSE_CONV apply only clamping activations
(relu, relu6, relu_n1_to_1) inside the kernel; a tanh after them is its own TANH op whose int8
kernel has a fixed output scale (1/128) and needs the params of its *input*, the pre-tanh
tensor, which only exists once the activation is a node of its own.
"""

from __future__ import annotations

from ...ir.graph import Module

# Fused activations the integer kernels cannot apply themselves.
UNFUSED_FOR_INTEGER = frozenset({"tanh"})
_FUSING_OPS = frozenset({"conv2d", "depthwise_conv2d", "conv2d_transpose", "matmul"})


def unfuse_activations(module: Module) -> int:
    """Moves every fused tanh of a conv/matmul of `module` into a `tanh` node after it;
    returns how many. The result computes exactly what the module computed."""
    count = 0
    for graph in module.all_graphs():
        for node in list(graph):
            act = node.attrs.get("activation")
            if node.op not in _FUSING_OPS or act not in UNFUSED_FOR_INTEGER:
                continue
            out = node.outputs[0]
            pre = graph.add(node.op, list(node.inputs), {**node.attrs, "activation": "none"},
                            before=node, scope=node.scope, loc=node.loc).outputs[0]
            post = graph.add(act, [pre], before=node, scope=node.scope, loc=node.loc).outputs[0]
            post.name, out.name = out.name, None
            out.replace_all_uses_with(post)
            graph.erase(node)
            count += 1
    return count
