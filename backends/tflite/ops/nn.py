"""Lowerings of pooling, softmax / log_softmax (over any axis), batch and layer normalization
(decomposed into MUL/ADD/MEAN/RSQRT) and resize.
"""

from __future__ import annotations

import numpy as np
from ai_edge_litert import schema_py_generated as fb

from ....ir.types import DType
from .common import F32, FUSED, PADDING, Unsupported, _need, _param, _scalar, emit


def _pool(code):
    def lower(e, node):
        x = node.inputs[0]
        _need(node, x, F32, code)
        a = node.attrs
        emit(e, code, [e.t(x)], out=e.out(node.output), options=fb.Pool2DOptionsT(
            padding=PADDING[a["padding"]], strideH=a["strides"][0], strideW=a["strides"][1],
            filterHeight=a["ksize"][0], filterWidth=a["ksize"][1],
            fusedActivationFunction=FUSED["none"]))
    return lower


def _softmax(code, options):
    def lower(e, node):
        x = node.inputs[0]
        _need(node, x, F32, code)
        rank = x.type.rank
        axis = node.attrs["axis"] % rank
        out = e.out(node.output)
        if axis == rank - 1:
            emit(e, code, [e.t(x)], out=out, options=options())
            return
        # TFLite normalizes over the last axis only: move `axis` last and back.
        perm = [i for i in range(rank) if i != axis] + [axis]
        inv = list(np.argsort(perm))
        t = emit(e, "TRANSPOSE", [e.t(x), _param(e, perm, "perm")],
                 shape=tuple(x.type.shape[p] for p in perm), quant=x.quant)
        t = emit(e, code, [t], options=options(), quant=node.output.quant)
        emit(e, "TRANSPOSE", [t, _param(e, inv, "inv_perm")], out=out)
    return lower


def _lower_batch_norm(e, node):
    x, mean, var, scale, offset = node.inputs
    _need(node, x, F32)
    eps, rank = node.attrs["epsilon"], x.type.rank
    axis = node.attrs["axis"] % rank
    out = e.out(node.output)
    params = [p.const for p in (mean, var, scale, offset)]
    if all(p is not None for p in params):
        # Inference batch norm folds into one MUL and one ADD (computed in float64).
        m, v, s, o = (p.astype(np.float64) for p in params)
        mul = s / np.sqrt(v + eps)
        add = o - m * mul
        trailing = (1,) * (rank - 1 - axis)
        k = e.const(mul.astype(np.float32).reshape((-1,) + trailing), f"{e.prefix}/bn_scale",
                    weight=True)
        c = e.const(add.astype(np.float32).reshape((-1,) + trailing), f"{e.prefix}/bn_shift",
                    weight=True)
        t = emit(e, "MUL", [e.t(x), k], options=fb.MulOptionsT())
        emit(e, "ADD", [t, c], out=out, options=fb.AddOptionsT())
        return
    # Non-constant statistics: (x - mean) * (rsqrt(var + eps) * scale) + offset.
    f = DType.f32
    inv = emit(e, "ADD", [e.t(var), _scalar(e, eps, f, "eps")], options=fb.AddOptionsT())
    inv = emit(e, "RSQRT", [inv])
    inv = emit(e, "MUL", [inv, e.t(scale)], options=fb.MulOptionsT(), name="bn_scale")
    d = emit(e, "SUB", [e.t(x), _reshape_channel(e, e.t(mean), axis, rank)],
             options=fb.SubOptionsT())
    d = emit(e, "MUL", [d, _reshape_channel(e, inv, axis, rank)], options=fb.MulOptionsT())
    emit(e, "ADD", [d, _reshape_channel(e, e.t(offset), axis, rank)], out=out,
         options=fb.AddOptionsT())


def _reshape_channel(e, t, axis, rank):
    trailing = rank - 1 - axis
    if trailing == 0:
        return t
    return emit(e, "RESHAPE", [t, _param(e, [-1] + [1] * trailing, "channel_shape")],
                shape=(e.shape(t)[0],) + (1,) * trailing, name="channel")


def _lower_layer_norm(e, node):
    x = node.inputs[0]
    _need(node, x, F32)
    rank = x.type.rank
    axes = sorted(a % rank for a in node.attrs["axes"])
    f = DType.f32
    kept = tuple(1 if i in axes else d for i, d in enumerate(x.type.shape))
    red = _param(e, axes, "axes")
    xt = e.t(x)
    mean = emit(e, "MEAN", [xt, red], shape=kept, options=fb.ReducerOptionsT(keepDims=True))
    d = emit(e, "SUB", [xt, mean], shape=x.type.shape, options=fb.SubOptionsT())
    sq = emit(e, "MUL", [d, d], options=fb.MulOptionsT())
    var = emit(e, "MEAN", [sq, red], shape=kept, options=fb.ReducerOptionsT(keepDims=True))
    var = emit(e, "ADD", [var, _scalar(e, node.attrs["epsilon"], f, "eps")],
               options=fb.AddOptionsT())
    inv = emit(e, "RSQRT", [var])
    affine = node.inputs[1:]
    y = emit(e, "MUL", [d, inv], shape=x.type.shape, options=fb.MulOptionsT(),
             out=e.out(node.output) if not affine else None)
    # scale/offset hold the normalized dims in axis order; dims before the first normalized
    # axis broadcast, those between normalized axes need explicit 1s.
    first = axes[0]
    bshape = [x.type.shape[i] if i in axes else 1 for i in range(first, rank)]
    for i, (p, code) in enumerate(zip(affine, ("MUL", "ADD"))):
        if p.const is not None:
            pt = e.derived(p, f"ln/{bshape}", lambda v: v.reshape(bshape))
        elif list(p.type.shape) == bshape:
            pt = e.t(p)
        else:
            if sum(not isinstance(d, int) for d in bshape) > 1:
                raise Unsupported("layer_norm with non-constant scale/offset over several "
                                  "symbolic axes")
            pt = emit(e, "RESHAPE", [e.t(p), _param(
                e, [d if isinstance(d, int) else -1 for d in bshape], "affine_shape")],
                shape=tuple(bshape), name="affine")
        last = i == len(affine) - 1
        opts = fb.MulOptionsT() if code == "MUL" else fb.AddOptionsT()
        y = emit(e, code, [y, pt], shape=x.type.shape, options=opts,
                 out=e.out(node.output) if last else None)


def _lower_resize(e, node):
    x = node.inputs[0]
    _need(node, x, F32, "RESIZE")
    a = node.attrs
    code = "RESIZE_BILINEAR" if a["method"] == "bilinear" else "RESIZE_NEAREST_NEIGHBOR"
    opts_cls = fb.ResizeBilinearOptionsT if a["method"] == "bilinear" \
        else fb.ResizeNearestNeighborOptionsT
    emit(e, code, [e.t(x), _param(e, list(a["size"]), "size")], out=e.out(node.output),
         options=opts_cls(alignCorners=a["align_corners"],
                          halfPixelCenters=a["half_pixel_centers"]))


LOWERINGS = {
    "max_pool2d": _pool("MAX_POOL_2D"), "avg_pool2d": _pool("AVERAGE_POOL_2D"),
    "softmax": _softmax("SOFTMAX", lambda: fb.SoftmaxOptionsT(beta=1.0)),
    "log_softmax": _softmax("LOG_SOFTMAX", fb.LogSoftmaxOptionsT),
    "batch_norm": _lower_batch_norm, "layer_norm": _lower_layer_norm, "resize": _lower_resize,
}
