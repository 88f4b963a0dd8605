"""Lowerings of conv2d, depthwise_conv2d, conv2d_transpose and matmul (CONV_2D,
DEPTHWISE_CONV_2D, TRANSPOSE_CONV, FULLY_CONNECTED, BATCH_MATMUL) in their float, integer and
hybrid forms, with the node's activation fused where TFLite can; the weight operand itself is
weights.py's.
"""

from __future__ import annotations

import numpy as np
from ai_edge_litert import schema_py_generated as fb

from ....ir.quantized import is_quantized
from ....ir.types import DType
from .common import (ACTIVATION_OPS, F32, FUSED, PADDING, UNKNOWN, Unsupported, _need, _param,
                     _static, emit)
from .weights import (_bias, _blockwise_weight, _filter, _moved, _per_channel, _stored_weight,
                      _weight_mode, int4_fc_weight, last_axis_first)


def _finish(e, node, main):
    """Emits the main op (`main(target, fused_code)`) and the node's activation: relu-family
    activations fuse into the op, tanh follows as its own TANH (see FUSED)."""
    act = node.attrs["activation"]
    out = e.out(node.output)
    if act == "tanh":
        if is_quantized(node.output):
            # The pre-activation intermediate would need quantization params of its own.
            raise Unsupported("a quantized op with a fused tanh activation: TFLite needs "
                              "params for the pre-tanh tensor; emit tanh as its own node")
        mid = e.tmp(node.output.type.dtype, node.output.type.shape, "pre_tanh")
        main(mid, FUSED["none"])
        emit(e, "TANH", [mid], out=out)
    else:
        main(out, FUSED[act])


def _same_pads(size, k, stride, dilation):
    out = -(-size // stride)
    total = max((out - 1) * stride + (k - 1) * dilation + 1 - size, 0)
    return (total // 2, total - total // 2)


def _conv_input(e, node, kh, kw):
    """(input tensor, TFLite padding). Explicit padding becomes SAME when it is exactly what
    SAME computes, VALID when zero, otherwise a PAD op followed by a VALID conv."""
    x = node.inputs[0]
    pad = node.attrs["padding"]
    xt = e.t(x)
    if isinstance(pad, str):
        return xt, pad
    (t, b), (l, r) = pad
    if t == b == l == r == 0:
        return xt, "VALID"
    n, h, w, c = x.type.shape
    (sh, sw), (dh, dw) = node.attrs["strides"], node.attrs["dilations"]
    if _static((h, w)) and ((t, b), (l, r)) == (_same_pads(h, kh, sh, dh),
                                                _same_pads(w, kw, sw, dw)):
        return xt, "SAME"
    grow = lambda d, p: d + p if isinstance(d, int) else UNKNOWN  # noqa: E731
    # A quantized PAD fills with the zero point, i.e. real 0, like the float padding.
    padded = emit(e, "PAD", [xt, _param(e, [[0, 0], [t, b], [l, r], [0, 0]], "paddings")],
                  shape=(n, grow(h, t + b), grow(w, l + r), c), name="padded", quant=x.quant)
    return padded, "VALID"


def _lower_conv2d(e, node):
    x, f = node.inputs[:2]
    mode = _weight_mode(node, "CONV_2D", out_axis=3)
    _need(node, x, F32, "CONV_2D")
    kh, kw, _, co = f.type.shape
    a = node.attrs
    # IR HWIO -> TFLite OHWI (per-channel axis 3 -> 0). Grouped conv keeps I = C_in / groups:
    # CONV_2D infers the group count from the channel ratio (version 6).
    w = _filter(e, node, "ohwi", last_axis_first, perm=(3, 0, 1, 2),
                quant=_moved(f.quant, 0), move=lambda q: _moved(q, 0))
    xt, padding = _conv_input(e, node, kh, kw)
    bias = _bias(e, node, co, mode)

    def main(out, act):
        e.op("CONV_2D", [xt, w, bias], [out], fb.Conv2DOptionsT(
            padding=PADDING[padding], strideH=a["strides"][0], strideW=a["strides"][1],
            dilationHFactor=a["dilations"][0], dilationWFactor=a["dilations"][1],
            fusedActivationFunction=act))
    _finish(e, node, main)


def _lower_depthwise(e, node):
    x, f = node.inputs[:2]
    mode = _weight_mode(node, "DEPTHWISE_CONV_2D", out_axis=2)
    _need(node, x, F32, "DEPTHWISE_CONV_2D")
    kh, kw, c, m = f.type.shape
    a = node.attrs
    if not isinstance(m, int):
        raise Unsupported("depthwise_conv2d needs a static depth multiplier")
    # IR [H, W, C, M] -> TFLite [1, H, W, C*M]: the same memory order (channel c*M + m); the
    # per-channel params of axis 2 (C) become C*M params on axis 3, each repeated M times.
    shape = (1, kh, kw, c * m if _static((c, m)) else UNKNOWN)
    qp = _moved(f.quant, 3, repeat=m)
    key = "1hwcm"
    if mode == "hybrid" and isinstance(shape[3], int):
        # The hybrid depthwise kernel reads one scale per output channel.
        qp, key = _per_channel(qp, shape[3]), "1hwcm/per_channel"
    w = _filter(e, node, key, lambda arr: arr.reshape(1, kh, kw, -1), new_shape=shape,
                quant=qp, move=lambda q: _moved(q, 3, repeat=m))
    xt, padding = _conv_input(e, node, kh, kw)
    bias = _bias(e, node, shape[3], mode)

    def main(out, act):
        e.op("DEPTHWISE_CONV_2D", [xt, w, bias], [out], fb.DepthwiseConv2DOptionsT(
            padding=PADDING[padding], strideH=a["strides"][0], strideW=a["strides"][1],
            depthMultiplier=m, dilationHFactor=a["dilations"][0],
            dilationWFactor=a["dilations"][1], fusedActivationFunction=act))
    _finish(e, node, main)


def _output_shape(e, xt: int, shape) -> int:
    """The output_shape operand of a transposed conv: a constant, or with a symbolic batch
    read at run time from the input's shape."""
    n, rest = shape[0], list(shape[1:])
    if isinstance(n, int):
        return _param(e, [n, *rest], "output_shape")
    rank = len(shape)
    shp = emit(e, "SHAPE", [xt], dtype=DType.i32, shape=(rank,),
               options=fb.ShapeOptionsT(outType=fb.TensorType.INT32), name="input_shape")
    batch = emit(e, "STRIDED_SLICE", [shp, _param(e, [0], "b0"), _param(e, [1], "b1"),
                                      _param(e, [1], "b_stride")],
                 shape=(1,), options=fb.StridedSliceOptionsT(), name="batch")
    return emit(e, "CONCATENATION", [batch, _param(e, rest, "out_dims")], shape=(rank,),
                options=fb.ConcatenationOptionsT(axis=0), name="out_shape")


def _lower_conv3d_transpose(e, node):
    x, f = node.inputs[:2]
    _need(node, x, F32, "CONV_3D_TRANSPOSE")
    if is_quantized(f):
        raise Unsupported("TFLite's CONV_3D_TRANSPOSE has no integer or hybrid kernel")
    if not _static(node.output.type.shape[1:]):
        raise Unsupported(f"CONV_3D_TRANSPOSE needs static output dims, got {node.output.type}")
    a = node.attrs
    xt = e.t(x)
    ins = [_output_shape(e, xt, node.output.type.shape), e.t(f), xt] + \
        ([e.t(node.inputs[2])] if len(node.inputs) > 2 else [])
    sd, sh, sw = a["strides"]

    def main(out, act):
        e.op("CONV_3D_TRANSPOSE", ins, [out], fb.Conv3DOptionsT(
            padding=PADDING[a["padding"]], strideD=sd, strideH=sh, strideW=sw,
            dilationDFactor=1, dilationHFactor=1, dilationWFactor=1,
            fusedActivationFunction=act))
    _finish(e, node, main)


def _lower_conv2d_transpose(e, node):
    x, f = node.inputs[:2]
    mode = _weight_mode(node, "TRANSPOSE_CONV", out_axis=2)
    _need(node, x, F32, "TRANSPOSE_CONV")
    a = node.attrs
    if tuple(a["dilations"]) != (1, 1):
        raise Unsupported("TRANSPOSE_CONV has no dilation; dilations must be (1, 1)")
    n, oh, ow, co = node.output.type.shape
    if not _static((oh, ow, co)):
        raise Unsupported(f"TRANSPOSE_CONV needs static output spatial dims and channels, "
                          f"got {node.output.type}")
    # IR [H, W, C_out, C_in] -> TFLite [C_out, H, W, C_in].
    w = _filter(e, node, "ohwi_t", lambda arr: np.transpose(arr, (2, 0, 1, 3)),
                perm=(2, 0, 1, 3), quant=_moved(f.quant, 0), move=lambda q: _moved(q, 0))
    if mode == "hybrid":
        # No dynamic-range TRANSPOSE_CONV kernel: the int8 weight is stored as such and
        # expanded by a DEQUANTIZE (what TFLiteConverter does for weight-only quantization).
        w = emit(e, "DEQUANTIZE", [w], dtype=DType.f32, name="filter_f32")
        mode = "float"
    xt = e.t(x)
    out_shape = _output_shape(e, xt, node.output.type.shape)
    # The bias is the optional 4th input (version 3); absent, a float op stays at version 1.
    # The integer kernel always gets one (int32 codes of scale s_in * s_w[c], zeros if none).
    has_bias = len(node.inputs) > 2 or mode == "integer"
    ins = [out_shape, w, xt] + ([_bias(e, node, co, mode)] if has_bias else [])

    def main(out, act):
        e.op("TRANSPOSE_CONV", ins, [out], fb.TransposeConvOptionsT(
            padding=PADDING[a["padding"]], strideH=a["strides"][0], strideW=a["strides"][1],
            fusedActivationFunction=act))
    _finish(e, node, main)


def _lower_conv3d(e, node):
    x, f = node.inputs[:2]
    _need(node, x, F32, "CONV_3D")
    if is_quantized(f):
        raise Unsupported("TFLite's CONV_3D has no integer or hybrid kernel")
    a = node.attrs
    # TFLite's CONV_3D filter is DHWIO, the IR's own layout; the bias is optional.
    ins = [e.t(x), e.t(f)] + ([e.t(node.inputs[2])] if len(node.inputs) > 2 else [])
    (sd, sh, sw), (dd, dh, dw) = a["strides"], a["dilations"]

    def main(out, act):
        e.op("CONV_3D", ins, [out], fb.Conv3DOptionsT(
            padding=PADDING[a["padding"]], strideD=sd, strideH=sh, strideW=sw,
            dilationDFactor=dd, dilationHFactor=dh, dilationWFactor=dw,
            fusedActivationFunction=act))
    _finish(e, node, main)


def _lower_quantized_batch_matmul(e, node):
    """Activation x activation (attention scores, attention-weighted values): BATCH_MATMUL's
    integer kernel on two quantized operands of one dtype, per-tensor params."""
    a, b = node.inputs[:2]
    y = node.output
    problems = []
    if not (is_quantized(a) and is_quantized(y)) or len({a.type.dtype, b.type.dtype,
                                                        y.type.dtype}) != 1:
        problems.append(f"operands and result must be quantized with one dtype, got "
                        f"{a.type.dtype}, {b.type.dtype} -> {y.type.dtype}")
    if any(v.quant is not None and v.quant.axis is not None for v in (a, b, y)):
        problems.append("operands and result must be quantized per tensor")
    if len(node.inputs) > 2 or node.attrs["activation"] != "none":
        problems.append("a quantized BATCH_MATMUL takes no bias or fused activation")
    if problems:
        raise Unsupported("TFLite integer BATCH_MATMUL: " + "; ".join(problems))
    emit(e, "BATCH_MATMUL", [e.t(a), e.t(b)], out=e.out(y),
         options=fb.BatchMatMulOptionsT(adjX=node.attrs["transpose_a"],
                                        adjY=node.attrs["transpose_b"]))


def _lower_matmul(e, node):
    a, b = node.inputs[:2]
    ta, tb = node.attrs["transpose_a"], node.attrs["transpose_b"]
    if b.const is None and is_quantized(b):
        _lower_quantized_batch_matmul(e, node)
        return
    mode = _weight_mode(node, "FULLY_CONNECTED", out_axis=0 if tb else 1)
    _need(node, a, F32, "FULLY_CONNECTED / BATCH_MATMUL")
    has_bias = len(node.inputs) > 2
    if mode != "float" and not (b.const is not None and b.type.rank == 2 and not ta):
        raise Unsupported("a quantized matmul lowers to FULLY_CONNECTED only: it needs a "
                          "rank-2 constant weight and transpose_a=False")
    relayout = (lambda arr: arr) if tb else last_axis_first
    # One constant may feed matmuls with and without transpose_b (XLNet's relative
    # attention): each layout is its own derived weight.
    key = "fc_nk" if tb else "fc_nk_from_kn"
    stored = None
    if b.const is None and b.type.rank == 2 and not ta and mode == "float":
        int4 = int4_fc_weight(e, b, key, relayout, tb)
        if int4 is not None:
            ins = [e.t(a), int4, e.t(node.inputs[2]) if has_bias else -1]

            def int4_fc(out, act):
                # LiteRT's int4 kernels quantize the input per row at run time.
                e.op("FULLY_CONNECTED", ins, [out], fb.FullyConnectedOptionsT(
                    fusedActivationFunction=act, keepNumDims=a.type.rank != 2,
                    asymmetricQuantizeInputs=True))
            _finish(e, node, int4_fc)
            return
        stored = _stored_weight(e, b, key, relayout, lambda q: _moved(q, 0))
        if stored is None and tb and _blockwise_weight(b):
            # Already in FULLY_CONNECTED's [N, K] order: the RESHAPE of the DEQUANTIZE
            # that expands the blockwise (8-bit) codes feeds FC as a (prepare-time) weight.
            stored = e.t(b)
    if (b.const is not None or stored is not None) and b.type.rank == 2 and not ta:
        # FULLY_CONNECTED computes x @ W^T with W [N, K] (per-channel axis: N, 0). Inputs of
        # rank > 2 keep their leading dims with keep_num_dims (version 5) instead of a
        # reshape round trip. A weight stored compressed is expanded by one DEQUANTIZE.
        w = stored if stored is not None else e.derived(b, key, relayout,
                                                        quant=_moved(b.quant, 0))
        ins = [e.t(a), w, e.t(node.inputs[2]) if has_bias else -1]

        def fc(out, act):
            # Hybrid: quantize the input per row with its own zero point (what
            # TFLiteConverter's dynamic-range quantization asks for; more accurate than the
            # symmetric scheme).
            e.op("FULLY_CONNECTED", ins, [out], fb.FullyConnectedOptionsT(
                fusedActivationFunction=act, keepNumDims=a.type.rank != 2,
                asymmetricQuantizeInputs=mode == "hybrid"))
        _finish(e, node, fc)
        return
    # BATCH_MATMUL has neither bias nor fused activation: ADD (with the relu-family fused)
    # and a TANH follow where needed.

    def bmm(out, act):
        opts = fb.BatchMatMulOptionsT(adjX=ta, adjY=tb)
        if not has_bias and act == FUSED["none"]:
            e.op("BATCH_MATMUL", [e.t(a), e.t(b)], [out], opts)
            return
        prod = emit(e, "BATCH_MATMUL", [e.t(a), e.t(b)], dtype=node.output.type.dtype,
                    shape=node.output.type.shape, options=opts, name="matmul")
        if has_bias:
            emit(e, "ADD", [prod, e.t(node.inputs[2])], out=out,
                 options=fb.AddOptionsT(fusedActivationFunction=act))
        else:
            act_name = next(k for k, v in FUSED.items() if v == act)
            emit(e, ACTIVATION_OPS[act_name], [prod], out=out)
    _finish(e, node, bmm)


LOWERINGS = {
    "conv2d": _lower_conv2d, "depthwise_conv2d": _lower_depthwise,
    "conv2d_transpose": _lower_conv2d_transpose, "matmul": _lower_matmul,
    "conv3d": _lower_conv3d, "conv3d_transpose": _lower_conv3d_transpose,
}
