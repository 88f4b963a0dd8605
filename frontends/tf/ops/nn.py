"""Neural-network TF ops on NHWC images: Conv2D (grouped), DepthwiseConv2dNative, dilated
convolution (SpaceToBatchND -> conv -> BatchToSpaceND), Conv2DBackpropInput, pooling,
FusedBatchNorm, Softmax/LogSoftmax, image resizing and ExtractImagePatches (a one-hot conv)."""

from __future__ import annotations

import numpy as np

from ..context import Const, Dead, LiftError, Pending, TFNode, fmt_dims
from ..shapes import SymDim
from .common import node_attr


def _hw(values, what: str, node: TFNode) -> tuple[int, int]:
    """(h, w) of an NHWC 4-vector attribute whose N and C entries must be 1."""
    if len(values) == 2:
        return tuple(values)
    if len(values) != 4 or values[0] != 1 or values[3] != 1:
        raise LiftError(f"{node.op} {what} {list(values)} is not of the form [1, h, w, 1]")
    return values[1], values[2]


def _require_nhwc(node: TFNode) -> None:
    fmt = node_attr(node, "data_format", "NHWC")
    if fmt not in ("NHWC", "NWC"):
        raise LiftError(f"{node.op} with data_format {fmt} is not supported (only NHWC; the "
                        f"IR is NHWC)")


def _padding(node: TFNode):
    pad = node_attr(node, "padding")
    if pad in ("SAME", "VALID"):
        return pad
    if pad == "EXPLICIT":
        p = list(node.attr["explicit_paddings"].list.i)
        if len(p) != 8 or any(p[i] for i in (0, 1, 6, 7)):
            raise LiftError(f"{node.op} explicit_paddings {p} pad the batch or channel dim")
        return ((p[2], p[3]), (p[4], p[5]))
    raise LiftError(f"{node.op} padding {pad!r} is not supported")


def _dead_outputs(node, n, reason):
    return [Dead(f"output {i} of {node.op} ({reason}) has no IR equivalent")
            for i in range(1, n + 1)]


def _conv2d(ctx, node, ins):
    x, f = ins
    _require_nhwc(node)
    if isinstance(x, _SpaceToBatch):
        return [_AtrousConv(x, "conv2d", f, node)]
    xc, fi = ctx.type(x).shape[3], ctx.type(f).shape[2]
    # TF infers grouped convolution from the channel counts (Keras groups=, ConvNeXt-style).
    groups = xc // fi if isinstance(xc, int) and isinstance(fi, int) and fi and xc != fi else 1
    return ctx.emit("conv2d", [x, f], {
        "strides": _hw(node_attr(node, "strides"), "strides", node),
        "dilations": _hw(node_attr(node, "dilations", [1, 1, 1, 1]), "dilations", node),
        "padding": _padding(node), "groups": groups})


def _depthwise(ctx, node, ins):
    _require_nhwc(node)
    if isinstance(ins[0], _SpaceToBatch):
        return [_AtrousConv(ins[0], "depthwise_conv2d", ins[1], node)]
    return ctx.emit("depthwise_conv2d", ins[:2], {
        "strides": _hw(node_attr(node, "strides"), "strides", node),
        "dilations": _hw(node_attr(node, "dilations", [1, 1, 1, 1]), "dilations", node),
        "padding": _padding(node)})


# Dilated ("atrous") convolution: TF's CPU graph for a conv with dilation_rate d is
# SpaceToBatchND(x, [d, d], pads) -> Conv2D(VALID, stride 1) -> BatchToSpaceND(y, [d, d], crops).
# The three ops are one IR conv with dilations (d, d) and padding pads - crops.

class _SpaceToBatch(Pending):
    reason = "SpaceToBatchND is only supported as the start of a dilated convolution"

    def __init__(self, x, block, pads):
        self.x, self.block, self.pads = x, block, pads


class _AtrousConv(Pending):
    reason = "a convolution on SpaceToBatchND output must end in BatchToSpaceND"

    def __init__(self, s2b, op, f, node):
        self.s2b, self.op, self.f, self.node = s2b, op, f, node


def _space_to_batch(ctx, node, ins):
    x, block, pads = ins
    block = [int(b) for b in ctx.static(block, "SpaceToBatchND block_shape").ravel()]
    pads = np.asarray(ctx.static(pads, "SpaceToBatchND paddings")).reshape(-1, 2).tolist()
    if len(block) != 2 or ctx.type(x).rank != 4:
        raise LiftError("SpaceToBatchND is only supported on NHWC images with a 2-D block")
    return [_SpaceToBatch(x, block, pads)]


def _batch_to_space(ctx, node, ins):
    y, block, crops = ins
    if not isinstance(y, _AtrousConv):
        raise LiftError("BatchToSpaceND is only supported as the end of a dilated convolution")
    block = [int(b) for b in ctx.static(block, "BatchToSpaceND block_shape").ravel()]
    crops = np.asarray(ctx.static(crops, "BatchToSpaceND crops")).reshape(-1, 2).tolist()
    conv, s2b = y.node, y.s2b
    if block != s2b.block:
        raise LiftError(f"BatchToSpaceND block {block} differs from SpaceToBatchND's {s2b.block}")
    if node_attr(conv, "padding") != "VALID" or \
            _hw(node_attr(conv, "strides"), "strides", conv) != (1, 1):
        raise LiftError(f"{conv.op} between SpaceToBatchND and BatchToSpaceND must be VALID "
                        f"with stride 1")
    padding = tuple((p[0] - c[0], p[1] - c[1]) for p, c in zip(s2b.pads, crops))
    if min(min(p) for p in padding) < 0:
        raise LiftError(f"dilated convolution crops {crops} exceed its paddings {s2b.pads}")
    attrs = {"strides": (1, 1), "dilations": tuple(block), "padding": padding}
    if y.op == "conv2d":
        xc, fi = ctx.type(s2b.x).shape[3], ctx.type(y.f).shape[2]
        attrs["groups"] = xc // fi if isinstance(xc, int) and isinstance(fi, int) and \
            xc != fi else 1
    return ctx.emit(y.op, [s2b.x, y.f], attrs)


def _conv2d_transpose(ctx, node, ins):
    sizes, f, dy = ins
    _require_nhwc(node)
    pad = _padding(node)
    if not isinstance(pad, str):
        raise LiftError("Conv2DBackpropInput with EXPLICIT padding is not supported")
    dims = ctx.dims(sizes, "Conv2DBackpropInput input_sizes")
    if any(isinstance(d, SymDim) for d in dims[1:]):
        raise LiftError(f"Conv2DBackpropInput output size {fmt_dims(dims)} has a run-time "
                        f"spatial dim")
    out_shape = [-1 if isinstance(dims[0], SymDim) else int(dims[0])] + [int(d) for d in dims[1:]]
    return ctx.emit("conv2d_transpose", [dy, f], {
        "strides": _hw(node_attr(node, "strides"), "strides", node),
        "dilations": _hw(node_attr(node, "dilations", [1, 1, 1, 1]), "dilations", node),
        "padding": pad, "output_shape": out_shape})


def _pool(ir_op):
    def lower(ctx, node, ins):
        _require_nhwc(node)
        return ctx.emit(ir_op, ins[:1], {
            "ksize": _hw(node_attr(node, "ksize"), "ksize", node),
            "strides": _hw(node_attr(node, "strides"), "strides", node),
            "padding": node_attr(node, "padding")})
    return lower


def _pool3d(ir_op):
    """MaxPool3D / AvgPool3D as two 2-D poolings (TFLite has no 3-D pooling): over (H, W) on
    [N*D, H, W, C], then over D on [N, D, H'*W', C]. Exact for both: a max of maxes is the
    max, and a mean of means is the mean, since with TF's per-axis padding every inner
    window of one output position counts the same elements."""
    def lower(ctx, node, ins):
        if node_attr(node, "data_format", "NDHWC") != "NDHWC":
            raise LiftError(f"{node.op} supports data_format NDHWC only")
        ksize, strides = node_attr(node, "ksize"), node_attr(node, "strides")
        if len(ksize) != 5 or ksize[0] != 1 or ksize[4] != 1 or strides[0] != 1 or \
                strides[4] != 1:
            raise LiftError(f"{node.op} pools over depth, height and width only")
        x = ins[0]
        _, d, h, w, c = ctx.type(x).shape
        if not all(isinstance(n, int) for n in (d, h, w, c)):
            raise LiftError(f"{node.op} needs static depth, height, width and channels")
        padding = node_attr(node, "padding")
        planes = ctx.emit1("reshape", [x], {"shape": [-1, h, w, c]})
        hw = ctx.emit1(ir_op, [planes], {"ksize": list(ksize[2:4]),
                                         "strides": list(strides[2:4]), "padding": padding})
        _, h2, w2, _ = ctx.type(hw).shape
        depth = ctx.emit1("reshape", [hw], {"shape": [-1, d, h2 * w2, c]})
        pooled = ctx.emit1(ir_op, [depth], {"ksize": [ksize[1], 1], "strides": [strides[1], 1],
                                            "padding": padding})
        d2 = ctx.type(pooled).shape[1]
        return ctx.emit("reshape", [pooled], {"shape": [-1, d2, h2, w2, c]})
    return lower


def _conv3d(ctx, node, ins):
    if node_attr(node, "data_format", "NDHWC") != "NDHWC":
        raise LiftError("Conv3D supports data_format NDHWC only")
    strides, dilations = node_attr(node, "strides"), node_attr(node, "dilations", [1] * 5)
    if strides[0] != 1 or strides[4] != 1 or dilations[0] != 1 or dilations[4] != 1:
        raise LiftError("Conv3D strides and dilations apply to depth, height and width only")
    return ctx.emit("conv3d", ins[:2], {"strides": list(strides[1:4]),
                                        "dilations": list(dilations[1:4]),
                                        "padding": node_attr(node, "padding")})


def _conv3d_transpose(ctx, node, ins):
    sizes, f, dy = ins
    if node_attr(node, "data_format", "NDHWC") != "NDHWC":
        raise LiftError(f"{node.op} supports data_format NDHWC only")
    strides, dilations = node_attr(node, "strides"), node_attr(node, "dilations", [1] * 5)
    if any(d != 1 for d in dilations) or strides[0] != 1 or strides[4] != 1:
        raise LiftError(f"{node.op} supports depth/height/width strides and no dilation")
    dims = ctx.dims(sizes, f"{node.op} input_sizes")
    if any(isinstance(d, SymDim) for d in dims[1:]):
        raise LiftError(f"{node.op} output size {fmt_dims(dims)} has a run-time spatial dim")
    out_shape = [-1 if isinstance(dims[0], SymDim) else int(dims[0])] + [int(d) for d in dims[1:]]
    return ctx.emit("conv3d_transpose", [dy, f], {"strides": list(strides[1:4]),
                                                   "padding": node_attr(node, "padding"),
                                                   "output_shape": out_shape})


def _fused_batch_norm(ctx, node, ins):
    x, scale, offset, mean, var = ins[:5]
    if node_attr(node, "is_training", True):
        raise LiftError(f"{node.op} in training mode (is_training=true) normalizes with batch "
                        f"statistics; trace the model with training=False")
    fmt = node_attr(node, "data_format", "NHWC")
    axis = 1 if fmt.startswith("NC") else -1
    y = ctx.emit1("batch_norm", [x, mean, var, scale, offset],
                  {"epsilon": float(node_attr(node, "epsilon", 1e-3)), "axis": axis})
    return [y, *_dead_outputs(node, 5, "batch statistics")]


def _softmax(ir_op):
    def lower(ctx, node, ins):
        return ctx.emit(ir_op, ins[:1], {"axis": -1})
    return lower


def _resize(method):
    def lower(ctx, node, ins):
        size = [int(s) for s in ctx.static(ins[1], f"{node.op} size").ravel()]
        return ctx.emit("resize", ins[:1], {
            "size": size, "method": method,
            "align_corners": bool(node_attr(node, "align_corners", False)),
            "half_pixel_centers": bool(node_attr(node, "half_pixel_centers", False))})
    return lower


def _extract_patches(ctx, node, ins):
    """ExtractImagePatches (tf.image.extract_patches, keras.ops.unfold): each output pixel
    holds its [kh, kw, C] window flattened in that order. A conv2d with a constant one-hot
    [kh, kw, C, kh*kw*C] kernel copies every input exactly once (one product with 1, the rest
    with 0) and honours strides, rates (as dilations) and SAME/VALID as TF does."""
    (x,) = ins
    xt = ctx.type(x)
    if not xt.dtype.is_float:
        raise LiftError(f"ExtractImagePatches of {xt.dtype} (only float: it runs as a conv)")
    c = xt.shape[3]
    if not isinstance(c, int):
        raise LiftError("ExtractImagePatches needs a static channel count")
    kh, kw = _hw(node_attr(node, "ksizes"), "ksizes", node)
    kernel = np.zeros((kh, kw, c, kh * kw * c), xt.dtype.np)
    for i in range(kh):
        for j in range(kw):
            kernel[i, j, :, (i * kw + j) * c:(i * kw + j + 1) * c] = np.eye(c)
    strides = _hw(node_attr(node, "strides"), "strides", node)
    rates = _hw(node_attr(node, "rates"), "rates", node)
    padding = node_attr(node, "padding")
    kernel = Const(kernel, node, "patch_kernel")
    if max(strides) == 1 or max(rates) == 1:
        return ctx.emit("conv2d", [x, kernel], {"strides": strides, "dilations": rates,
                                                "padding": padding})
    # TF.js's conv2D takes strides or dilations, not both: a stride-1 dilated conv, then every
    # stride-th pixel. SAME pads as the strided conv does (its padding depends on the stride).
    if padding == "SAME":
        pads = []
        for size, k, s, r in zip(xt.shape[1:3], (kh, kw), strides, rates):
            if not isinstance(size, int):
                raise LiftError("ExtractImagePatches with strides and rates > 1 and SAME "
                                "padding needs static spatial dims")
            total = max((-(-size // s) - 1) * s + (k - 1) * r + 1 - size, 0)
            pads.append((total // 2, total - total // 2))
        padding = tuple(pads)
    full = ctx.emit1("conv2d", [x, kernel], {"strides": [1, 1], "dilations": rates,
                                             "padding": padding})
    return ctx.emit("strided_slice", [full], {
        "begin": [0, 0, 0, 0], "end": [0, 0, 0, 0], "strides": [1, *strides, 1],
        "begin_mask": 15, "end_mask": 15})


TABLE = {
    "ExtractImagePatches": _extract_patches,
    "Conv2D": _conv2d, "DepthwiseConv2dNative": _depthwise,
    "Conv2DBackpropInput": _conv2d_transpose, "MaxPool": _pool("max_pool2d"),
    "AvgPool": _pool("avg_pool2d"), "MaxPool3D": _pool3d("max_pool2d"), "Conv3D": _conv3d,
    "Conv3DBackpropInputV2": _conv3d_transpose,
    "AvgPool3D": _pool3d("avg_pool2d"),
    "FusedBatchNorm": _fused_batch_norm, "FusedBatchNormV2": _fused_batch_norm,
    "FusedBatchNormV3": _fused_batch_norm, "Softmax": _softmax("softmax"),
    "LogSoftmax": _softmax("log_softmax"), "ResizeBilinear": _resize("bilinear"),
    "ResizeNearestNeighbor": _resize("nearest"),
    "SpaceToBatchND": _space_to_batch, "BatchToSpaceND": _batch_to_space,
}
