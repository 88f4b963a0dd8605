"""Lowering of an IR module to plain TensorFlow ops, shared by the SavedModel and TF.js backends.

    lowered = lower_to_tf(module)          # ConversionError listing every unsupported node
    fn = lowered.concrete_function()       # tf.function traced with tf.TensorSpec inputs
    outputs = fn(x=...)                    # dict keyed by the signature's output names
    lowered.tf_module                      # the tf.Module holding the weights as tf.Variables

Every IR op maps to one small function `lower(cx, node) -> [tf.Tensor, ...]` in `LOWERINGS`
(see `_Ctx` for what `cx` offers). Lowerings emit only plain TF ops (no XlaCallModule, no fused
or composite ops TF.js lacks), one TF op per IR op where possible, so the same function can be
frozen into a GraphDef for the TF.js converter. A lowering raises `Unsupported` (with the
reason) for a node it cannot express; `lowering_problems` traces the whole graph once in a
throwaway tf.Graph and reports every offender at once.

Constants with more than `VARIABLE_MIN_ELEMENTS` elements become `tf.Variable`s on the
tf.Module (named after the value, else `<scope of its user>/<operand name>`, e.g.
`conv1/filter`); smaller ones are inlined as `tf.constant`.

Quantized (QDQ) IR: integer constants keep their integer dtype (an int8 weight is an int8
variable, 1 byte per element in the SavedModel); int4 has no TF dtype and is stored as int8
(same codes, 1 byte per element). `quantize`/`dequantize`/`fake_quant` lower to exact float32
arithmetic (division in float32 and rounding half away from zero, like TFLite and the IR).
`lower_to_tf(module, float_codes=True)` (used by the TF.js backend, which has no int8/int16
tensors) keeps activation codes as integral float32 values instead of casting them to an
integer type, and folds `dequantize` of 32/64-bit integer constants (biases) into float32
constants.

Trainable (`lower_to_tf(module, trainable=True)`, the SavedModel backend's fine-tuning form;
docs/design/trainable-savedmodel.md): every *parameter* (a named float constant: JAX params,
Flax variables and Keras weights are lifted as constants named by their paths) is a
`tf.Variable` whatever its size, trainable unless it is a statistic (see
`parameter_flags`). Lowerings never fold a parameter into a new constant (`cx.np` answers
None for it, so batch-norm and dilated filters are computed from the variables), quantized
modules are refused, and every TF op on a float path must have a registered gradient: the
dry run lists each IR node whose lowering emits one that has none. The default
(`trainable=False`) lowering is unchanged.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import math
import re
from types import SimpleNamespace
from typing import Callable

import numpy as np
import tensorflow as tf

from ..ir.errors import ConversionError, Diagnostic
from ..ir.graph import Graph, Module, Node, Value
from ..ir.ops import get_op
from ..ir.ops.elementwise import erf_inv_giles
from ..ir.ops.nn import _pads
from ..ir.types import DType, code_range
from ..passes.bitwise import TFJS_MISSING, with_bitwise_expanded
from ..passes.control import without_scans
from ..passes.dtypes import NARROW_FLOATS, NON_F32_FLOATS, widened
from ..passes.recurrent import with_recurrent_expanded
from . import tf_control
from .common import constant_name, dilate_filter, log_scan, signature_names

VARIABLE_MIN_ELEMENTS = 16   # constants with more elements than this become tf.Variables


class Unsupported(Exception):
    """A node this backend cannot lower; the message says why."""


# i4 has no TF dtype: its codes travel as int8 (same values, 1 byte per element).
TF_DTYPES = {DType.f32: tf.float32, DType.f16: tf.float16, DType.bf16: tf.bfloat16,
             DType.f64: tf.float64, DType.i4: tf.int8, DType.i8: tf.int8, DType.u8: tf.uint8,
             DType.i16: tf.int16, DType.i32: tf.int32, DType.i64: tf.int64, DType.bool: tf.bool}

_NAME_BAD = re.compile(r"[^A-Za-z0-9_.\-/]")


def sanitize(name: str) -> str:
    """A string usable as a TF op / variable / signature name."""
    name = _NAME_BAD.sub("_", name).strip("/") or "value"
    name = re.sub(r"/+", "/", name)
    return name if re.match(r"[A-Za-z0-9.]", name) else "v" + name


def _tf_dtype(dtype: DType):
    try:
        return TF_DTYPES[dtype]
    except KeyError:
        raise Unsupported(f"TensorFlow has no usable dtype for {dtype}") from None


def _storage_array(arr, dtype: DType) -> np.ndarray:
    """A constant's payload in the NumPy dtype of its TF dtype (int4 codes widened to int8:
    NumPy/TF cannot convert ml_dtypes.int4 directly)."""
    arr = np.asarray(arr)
    if dtype == DType.i4:
        return arr.astype(np.int64).astype(np.int8)
    return arr


def _static_shape(value: Value):
    return [d if isinstance(d, int) else None for d in value.type.shape]


# -- lowering context --------------------------------------------------------------------------

class _Ctx:
    """What a lowering sees.

    cx.x(value)       the tf.Tensor of an IR operand (constants: variable read or tf.constant)
    cx.np(value)      the NumPy payload of a constant operand, else None
    cx.const(array, dtype)  a small tf.constant (attribute-derived parameters)
    cx.float_codes    True: quantized activations stay integral float32 codes (TF.js)
    cx.params         trainable lowering: id(parameter value) -> trainable; else None
    """

    def __init__(self, variables: dict[int, tf.Variable] | None, record: set | None,
                 float_codes: bool = False, params: dict[int, bool] | None = None):
        self.env: dict[int, tf.Tensor] = {}
        self.variables = variables      # id(const value) -> tf.Variable (None: inline all)
        self.record = record            # ids of constants requested as tensors (dry run)
        self.float_codes = float_codes
        self.params = params            # trainable lowering: parameters are never folded
        self.problems: list[Diagnostic] | None = None   # the dry run's list (see _emit)

    def run_region(self, region: Graph, args: list) -> list:
        """Lowers a region (a while body, an if branch) on `args` into the TF graph being
        traced (a tf.while_loop / tf.cond function); returns its output tensors."""
        sub = _Ctx(self.variables, self.record, self.float_codes, self.params)
        return _emit(region, sub, list(args), self.problems)

    def x(self, value: Value) -> tf.Tensor:
        key = id(value)
        if key not in self.env:
            arr = value.const
            if arr is None:
                raise KeyError(f"value %{value.name} is not defined")
            _tf_dtype(value.type.dtype)
            if self.record is not None:
                self.record.add(key)
            if self.variables is not None and key in self.variables:
                self.env[key] = tf.convert_to_tensor(self.variables[key])
            elif self.variables is None and self.record is not None \
                    and np.size(arr) > VARIABLE_MIN_ELEMENTS:
                # Dry run: the real lowering reads a variable here, so a placeholder of the
                # same type stands in (a tf.constant would copy the weight into the
                # throwaway graph, and fail outright past 2 GB). Made in the dry run's own
                # graph, not in a while/cond body being traced, and captured from there.
                with tf.init_scope():
                    self.env[key] = tf.compat.v1.placeholder(_tf_dtype(value.type.dtype),
                                                             np.shape(arr))
            else:
                self.env[key] = tf.constant(_storage_array(arr, value.type.dtype),
                                            dtype=_tf_dtype(value.type.dtype))
        return self.env[key]

    def np(self, value: Value) -> np.ndarray | None:
        if self.params is not None and id(value) in self.params:
            return None     # a parameter is a variable: never folded into a constant
        return value.const

    @staticmethod
    def tf_dtype(dtype: DType):
        """The TF dtype of an IR dtype (Unsupported if TF has none)."""
        return _tf_dtype(dtype)

    @staticmethod
    def const(array, dtype) -> tf.Tensor:
        return tf.constant(np.asarray(array), dtype=dtype)


# -- helpers -----------------------------------------------------------------------------------

def _scalar(x: tf.Tensor, v) -> tf.Tensor:
    return tf.constant(v, dtype=x.dtype)


def _activation(y: tf.Tensor, act: str) -> tf.Tensor:
    if act == "none":
        return y
    if act == "relu":
        return tf.nn.relu(y)
    if act == "relu6":
        return tf.nn.relu6(y)
    if act == "relu_n1_to_1":
        return tf.minimum(tf.maximum(y, _scalar(y, -1)), _scalar(y, 1))
    if act == "tanh":
        return tf.math.tanh(y)
    raise Unsupported(f"unknown fused activation {act!r}")


def _bias_act(cx, node: Node, y: tf.Tensor) -> tf.Tensor:
    if len(node.inputs) > 2:
        b = cx.x(node.inputs[2])
        y = tf.nn.bias_add(y, b) if y.dtype.is_floating else tf.math.add(y, b)
    return _activation(y, node.attrs["activation"])


def _pair4(p):
    return [1, p[0], p[1], 1]


def _dilate_filter_tf(f: tf.Tensor, dilations) -> tf.Tensor:
    """`dilate_filter` in TF ops (pad, reshape, slice), differentiable: a trainable filter
    variable stays the parameter."""
    for axis, d in enumerate(dilations):
        if d == 1:
            continue
        shape = f.shape.as_list()
        k = shape[axis]
        pad = [[0, 0]] * (len(shape) + 1)
        pad[axis + 1] = [0, d - 1]
        f = tf.pad(tf.expand_dims(f, axis + 1), pad)          # each tap, then d-1 zeros
        shape[axis] = k * d
        f = tf.reshape(f, shape)
        begin, size = [0] * len(shape), [-1] * len(shape)
        size[axis] = (k - 1) * d + 1                          # the trailing zeros dropped
        f = tf.slice(f, begin, size)
    return f


def _explicit_pad(x: tf.Tensor, pad):
    (t, b), (l, r) = pad
    if t or b or l or r:
        x = tf.pad(x, [[0, 0], [t, b], [l, r], [0, 0]])
    return x


def _filter_tensor(cx, node: Node, dilations, what: str):
    """The filter operand, with dilation folded into a constant filter when needed."""
    fv = node.inputs[1]
    if tuple(dilations) == (1, 1):
        return cx.x(fv)
    arr = cx.np(fv)
    if arr is None and cx.params is not None and all(
            isinstance(d, int) for d in fv.type.shape[:2]):
        return _dilate_filter_tf(cx.x(fv), dilations)    # trainable: differentiable
    if arr is None:
        raise Unsupported(f"{what} with dilations {tuple(dilations)} needs a constant filter "
                          f"(TF's CPU kernel has no dilation support)")
    return tf.constant(dilate_filter(_storage_array(arr, fv.type.dtype), dilations),
                       dtype=_tf_dtype(fv.type.dtype))


# -- elementwise -------------------------------------------------------------------------------

def _unary(fn: Callable) -> Callable:
    return lambda cx, node: [fn(cx.x(node.inputs[0]))]


def _binary(fn: Callable) -> Callable:
    return lambda cx, node: [fn(cx.x(node.inputs[0]), cx.x(node.inputs[1]))]


def _div(cx, node):
    a, b = cx.x(node.inputs[0]), cx.x(node.inputs[1])
    if a.dtype.is_floating:
        return [tf.raw_ops.RealDiv(x=a, y=b)]
    return [tf.raw_ops.TruncateDiv(x=a, y=b)]


def _gelu(cx, node):
    x = cx.x(node.inputs[0])
    half = _scalar(x, 0.5)
    if node.attrs["approximate"]:
        inner = tf.math.multiply(
            _scalar(x, math.sqrt(2.0 / math.pi)),
            tf.math.add(x, tf.math.multiply(_scalar(x, 0.044715),
                                            tf.math.multiply(tf.math.multiply(x, x), x))))
        t = tf.math.tanh(inner)
    else:
        t = tf.math.erf(tf.math.multiply(x, _scalar(x, 1.0 / math.sqrt(2.0))))
    return [tf.math.multiply(tf.math.multiply(half, x), tf.math.add(_scalar(x, 1.0), t))]


def _elu(cx, node):
    x = cx.x(node.inputs[0])
    alpha = node.attrs["alpha"]
    y = tf.nn.elu(x)
    if alpha == 1.0:
        return [y]
    return [tf.where(tf.math.greater(x, _scalar(x, 0)), x, tf.math.multiply(_scalar(x, alpha), y))]


def _leaky_relu(cx, node):
    x = cx.x(node.inputs[0])
    return [tf.raw_ops.LeakyRelu(features=x, alpha=float(node.attrs["alpha"]))]


def _hard_swish(cx, node):
    x = cx.x(node.inputs[0])
    r = tf.nn.relu6(tf.math.add(x, _scalar(x, 3)))
    return [tf.raw_ops.RealDiv(x=tf.math.multiply(x, r), y=_scalar(x, 6))]


def _hard_sigmoid(cx, node):
    x = cx.x(node.inputs[0])
    y = tf.math.add(tf.raw_ops.RealDiv(x=x, y=_scalar(x, 6)), _scalar(x, 0.5))
    return [tf.minimum(tf.maximum(y, _scalar(x, 0)), _scalar(x, 1))]


def _softplus(cx, node):
    # max(x, 0) + log(1 + exp(-|x|)): stable, and only ops TF.js has.
    x = cx.x(node.inputs[0])
    e = tf.math.exp(tf.math.negative(tf.math.abs(x)))
    return [tf.math.add(tf.maximum(x, _scalar(x, 0)), tf.math.log(tf.math.add(_scalar(x, 1), e)))]


def _clip(cx, node):
    x = cx.x(node.inputs[0])
    lo, hi = node.attrs["min"], node.attrs["max"]
    if x.dtype.is_integer:
        lo, hi = math.ceil(lo), math.floor(hi)
    return [tf.minimum(tf.maximum(x, _scalar(x, lo)), _scalar(x, hi))]


def _cast(cx, node):
    return [tf.cast(cx.x(node.inputs[0]), _tf_dtype(node.attrs["to"]))]


def _where(cx, node):
    c, a, b = (cx.x(v) for v in node.inputs)
    return [tf.where(c, a, b)]


# -- nn ----------------------------------------------------------------------------------------

def _conv2d(cx, node):
    a = node.attrs
    x = cx.x(node.inputs[0])
    pad = a["padding"]
    if not isinstance(pad, str):
        x, pad = _explicit_pad(x, pad), "VALID"
    groups = a["groups"]
    f = cx.x(node.inputs[1])
    if groups == 1:
        y = tf.nn.conv2d(x, f, strides=_pair4(a["strides"]), padding=pad,
                         dilations=_pair4(a["dilations"]))
    else:
        # TF's CPU Conv2D has no grouped form: one conv per group, then concat.
        xs = tf.split(x, groups, axis=3)
        fs = tf.split(f, groups, axis=3)
        y = tf.concat([tf.nn.conv2d(xi, fi, strides=_pair4(a["strides"]), padding=pad,
                                    dilations=_pair4(a["dilations"]))
                       for xi, fi in zip(xs, fs)], axis=3)
    return [_bias_act(cx, node, y)]


def _conv3d(cx, node):
    a = node.attrs
    y = tf.nn.conv3d(cx.x(node.inputs[0]), cx.x(node.inputs[1]),
                     strides=[1, *a["strides"], 1], padding=a["padding"],
                     dilations=[1, *a["dilations"], 1])
    return [_bias_act(cx, node, y)]


def _conv3d_transpose(cx, node):
    """conv3d's input gradient as a stride-1 conv3d over the stride-dilated, padded input with
    the flipped, in/out-swapped filter: TF.js has Conv3D but no Conv3DBackpropInputV2."""
    a = node.attrs
    x, f = cx.x(node.inputs[0]), cx.x(node.inputs[1])
    spatial = node.inputs[0].type.shape[1:4]
    kernel = node.inputs[1].type.shape[:3]
    if not all(isinstance(d, int) for d in (*spatial, *kernel)):
        raise Unsupported("conv3d_transpose needs static input and filter spatial dims")
    dims = [*spatial, node.inputs[0].type.shape[4]]      # the static sizes after the batch
    paddings = [[0, 0]]
    for axis, (size, k, s, o) in enumerate(zip(spatial, kernel, a["strides"],
                                                a["output_shape"][1:4]), start=1):
        if s > 1:     # s - 1 zeros after every element, then the trailing ones dropped
            pad = [[0, 0]] * 6
            pad[axis + 1] = [0, s - 1]
            x = tf.pad(tf.expand_dims(x, axis + 1), pad)
            dims[axis - 1] = size * s
            x = tf.reshape(x, [-1, *dims])
            dims[axis - 1] = (size - 1) * s + 1
            x = x[(slice(None),) * axis + (slice(0, dims[axis - 1]),)]
        before = _pads(o, size, k, s, 1, a["padding"])[0]
        lo = k - 1 - before
        paddings.append([lo, o - (size - 1) * s - 1 - lo + k - 1])
    paddings.append([0, 0])
    x = tf.pad(x, paddings)
    ft = tf.transpose(tf.reverse(f, axis=[0, 1, 2]), (0, 1, 2, 4, 3))
    y = tf.nn.conv3d(x, ft, strides=[1] * 5, padding="VALID")
    return [_bias_act(cx, node, y)]


def _scatter_nd_update(cx, node):
    """TensorScatterUpdate; for TF.js, whose kernel writes into its input tensor (another
    reader of x then sees the update), x * (1 - hit) + ScatterNd(updates) instead."""
    x, indices, updates = (cx.x(v) for v in node.inputs)
    if not cx.float_codes:
        return [tf.tensor_scatter_nd_update(x, indices, updates)]
    shape = tf.shape(x, out_type=indices.dtype)
    hit = tf.minimum(tf.scatter_nd(indices, tf.ones_like(updates), shape), 1)
    return [x * (1 - hit) + tf.scatter_nd(indices, updates, shape)]


def _depthwise(cx, node):
    a = node.attrs
    sh, sw = a["strides"]
    if sh != sw:
        raise Unsupported(f"TF DepthwiseConv2dNative needs equal strides, got {(sh, sw)}")
    x = cx.x(node.inputs[0])
    pad = a["padding"]
    if not isinstance(pad, str):
        x, pad = _explicit_pad(x, pad), "VALID"
    f = _filter_tensor(cx, node, a["dilations"], "depthwise_conv2d")
    y = tf.raw_ops.DepthwiseConv2dNative(input=x, filter=f, strides=[1, sh, sw, 1],
                                         padding=pad)
    return [_bias_act(cx, node, y)]


def _conv2d_transpose(cx, node):
    a = node.attrs
    out = node.outputs[0].type.shape
    if not all(isinstance(d, int) for d in out[1:]):
        raise Unsupported(f"conv2d_transpose needs a static output height, width and channels, "
                          f"got {node.outputs[0].type}")
    x = cx.x(node.inputs[0])
    f = _filter_tensor(cx, node, a["dilations"], "conv2d_transpose")
    if isinstance(out[0], int):
        shape = tf.constant(list(out), tf.int32)
    else:
        shape = tf.concat([tf.shape(x, out_type=tf.int32)[:1],
                           tf.constant(list(out[1:]), tf.int32)], axis=0)
    y = tf.nn.conv2d_transpose(x, f, shape, strides=_pair4(a["strides"]), padding=a["padding"])
    return [_bias_act(cx, node, y)]


def _matmul(cx, node):
    a = node.attrs
    x, w = cx.x(node.inputs[0]), cx.x(node.inputs[1])
    ta, tb = node.inputs[0].type, node.inputs[1].type
    if max(ta.rank, tb.rank) >= 4 and min(ta.rank, tb.rank) >= 3 and \
            (ta.rank != tb.rank or any(d != e or d == "?" for d, e in
                                       zip(ta.shape[:-2], tb.shape[:-2]))):
        # TF.js's BatchMatMul broadcasts wrongly over more than one batch dim (rank >= 4):
        # broadcast the batch dims explicitly, for every TF target alike.
        batch = tf.broadcast_dynamic_shape(tf.shape(x)[:-2], tf.shape(w)[:-2])
        x = tf.broadcast_to(x, tf.concat([batch, tf.shape(x)[-2:]], 0))
        w = tf.broadcast_to(w, tf.concat([batch, tf.shape(w)[-2:]], 0))
    y = tf.linalg.matmul(x, w, transpose_a=a["transpose_a"], transpose_b=a["transpose_b"])
    return [_bias_act(cx, node, y)]


def _pool(fn):
    def lower(cx, node):
        a = node.attrs
        return [fn(cx.x(node.inputs[0]), ksize=_pair4(a["ksize"]), strides=_pair4(a["strides"]),
                   padding=a["padding"])]
    return lower


def _softmax(fn):
    def lower(cx, node):
        x = cx.x(node.inputs[0])
        rank = len(node.inputs[0].type.shape)
        axis = node.attrs["axis"] % rank
        if axis == rank - 1:
            return [fn(x)]
        # A constant permutation (swap axis and last) instead of tf.nn.softmax's dynamic one.
        perm = list(range(rank))
        perm[axis], perm[-1] = perm[-1], perm[axis]
        return [tf.transpose(fn(tf.transpose(x, perm)), perm)]
    return lower


def _bn_shape(rank, axis, n):
    shape = [1] * rank
    shape[axis] = n
    return shape


def _batch_norm(cx, node):
    a = node.attrs
    x = cx.x(node.inputs[0])
    rank = len(node.inputs[0].type.shape)
    axis = a["axis"] % rank
    params = [cx.np(v) for v in node.inputs[1:]]
    if all(p is not None for p in params):
        # Fold into one scale and shift (computed in float64): x * mult + shift.
        mean, var, scale, offset = (np.asarray(p, np.float64) for p in params)
        mult = scale / np.sqrt(var + a["epsilon"])
        shift = offset - mean * mult
        shape = _bn_shape(rank, axis, mult.shape[0]) if axis != rank - 1 else [mult.shape[0]]
        m = tf.constant(mult.reshape(shape), dtype=x.dtype)
        s = tf.constant(shift.reshape(shape), dtype=x.dtype)
        return [tf.math.add(tf.math.multiply(x, m), s)]
    mean, var, scale, offset = (cx.x(v) for v in node.inputs[1:])
    if axis != rank - 1:
        shape = _bn_shape(rank, axis, -1)
        mean, var, scale, offset = (tf.reshape(p, shape) for p in (mean, var, scale, offset))
    inv = tf.math.rsqrt(tf.math.add(var, _scalar(x, a["epsilon"])))
    y = tf.math.multiply(tf.math.subtract(x, mean), tf.math.multiply(inv, scale))
    return [tf.math.add(y, offset)]


def _layer_norm(cx, node):
    a = node.attrs
    x = cx.x(node.inputs[0])
    rank = len(node.inputs[0].type.shape)
    axes = sorted(ax % rank for ax in a["axes"])
    mean = tf.math.reduce_mean(x, axis=axes, keepdims=True)
    d = tf.math.subtract(x, mean)
    var = tf.math.reduce_mean(tf.math.square(d), axis=axes, keepdims=True)
    y = tf.math.multiply(d, tf.math.rsqrt(tf.math.add(var, _scalar(x, a["epsilon"]))))
    # scale/offset have the normalized dims' sizes; broadcast them in place.
    trailing = axes == list(range(rank - len(axes), rank))
    for i, v in enumerate(node.inputs[1:], 1):
        p = cx.x(v)
        if not trailing:
            pshape = list(v.type.shape)
            bshape = [pshape[axes.index(ax)] if ax in axes else 1 for ax in range(rank)]
            p = tf.reshape(p, bshape)
        y = tf.math.multiply(y, p) if i == 1 else tf.math.add(y, p)
    return [y]


def _resize(cx, node):
    a = node.attrs
    x = cx.x(node.inputs[0])
    size = list(a["size"])
    ac, hp = a["align_corners"], a["half_pixel_centers"]
    if a["method"] == "nearest":
        return [tf.raw_ops.ResizeNearestNeighbor(images=x, size=size, align_corners=ac,
                                                 half_pixel_centers=hp)]
    y = tf.raw_ops.ResizeBilinear(images=x, size=size, align_corners=ac, half_pixel_centers=hp)
    return [y if y.dtype == x.dtype else tf.cast(y, x.dtype)]


# -- reductions --------------------------------------------------------------------------------

def _reduce(fn):
    def lower(cx, node):
        axes = list(node.attrs["axes"]) or None
        return [fn(cx.x(node.inputs[0]), axis=axes, keepdims=node.attrs["keepdims"])]
    return lower


def _arg(fn):
    def lower(cx, node):
        return [fn(cx.x(node.inputs[0]), axis=node.attrs["axis"],
                   output_type=_tf_dtype(node.attrs["output_type"]))]
    return lower


def _cumsum(cx, node):
    a, x = node.attrs, cx.x(node.inputs[0])
    # A non-negative axis: TF.js's Cumsum kernel returns an empty tensor for axis -1.
    return [tf.math.cumsum(x, axis=a["axis"] % node.inputs[0].type.rank,
                           exclusive=a["exclusive"], reverse=a["reverse"])]


def _cumulative(cx, node):
    """cumprod is TF's Cumprod; cummax / cummin have no TF op TF.js runs, so they are the
    log-depth scan of slices, maximum / minimum and concat (`common.log_scan`)."""
    a, v = node.attrs, node.inputs[0]
    x, axis, rank = cx.x(v), a["axis"] % v.type.rank, v.type.rank
    if node.op == "cumprod":   # (non-negative axis, as for Cumsum)
        return [tf.math.cumprod(x, axis=axis, reverse=a["reverse"])]
    n = v.type.shape[axis]
    if not isinstance(n, int):
        raise Unsupported(f"{node.op} is composed of slices along axis {axis}, which needs a "
                          f"static size; got {v.type}")

    def take(t, begin, size):
        b, sz = [0] * rank, [-1] * rank
        b[axis], sz[axis] = begin, size
        return tf.slice(t, b, sz)

    combine = tf.math.maximum if node.op == "cummax" else tf.math.minimum
    return [tf.identity(log_scan(x, n, a["reverse"], take, combine,
                                 lambda parts, last: tf.concat(parts, axis=axis)))]


# TF's erfinv (Erfinv) is not an op TF.js runs: Giles' approximation in plain TF ops.
_TF_MATH = SimpleNamespace(log=tf.math.log, sqrt=tf.math.sqrt, abs=tf.math.abs, where=tf.where)


# -- quantization (float arithmetic) -----------------------------------------------------------

def _param(node: Node, key: str, x_rank: int, dtype):
    vals = np.asarray(node.attrs[key], np.float64)
    axis = node.attrs["axis"]
    if axis is None:
        return tf.constant(float(vals[0]), dtype=dtype)
    axis %= x_rank
    if axis != x_rank - 1:
        shape = [1] * x_rank
        shape[axis] = -1
        vals = vals.reshape(shape)
    return tf.constant(vals, dtype=dtype)


def _codes(node: Node, x: tf.Tensor, qmin: int, qmax: int) -> tf.Tensor:
    """clamp(round_half_away(x / scale) + zero_point, qmin, qmax), as floats (like the IR)."""
    rank = x.shape.rank
    ftype = tf.float64 if x.dtype == tf.float64 else tf.float32
    if x.dtype != ftype:
        x = tf.cast(x, ftype)
    v = tf.raw_ops.RealDiv(x=x, y=_param(node, "scale", rank, ftype))
    # Round half away from zero, exactly in float32: |v| - floor(|v|) is exact.
    av = tf.math.abs(v)
    fl = tf.math.floor(av)
    up = tf.cast(tf.math.greater_equal(tf.math.subtract(av, fl), _scalar(fl, 0.5)), ftype)
    r = tf.math.multiply(tf.math.sign(v), tf.math.add(fl, up))
    zp = np.asarray(node.attrs["zero_point"])
    if np.any(zp != 0):
        r = tf.math.add(r, _param(node, "zero_point", rank, ftype))
    return tf.minimum(tf.maximum(r, _scalar(r, qmin)), _scalar(r, qmax))


def _dequant(node: Node, q: tf.Tensor, out_dtype) -> tf.Tensor:
    rank = q.shape.rank
    zp = np.asarray(node.attrs["zero_point"])
    if np.any(zp != 0):
        q = tf.math.subtract(q, _param(node, "zero_point", rank, q.dtype))
    y = tf.math.multiply(q, _param(node, "scale", rank, q.dtype))
    return y if y.dtype == out_dtype else tf.cast(y, out_dtype)


def _quantize(cx, node):
    dt = node.attrs["dtype"]
    if dt == DType.i32:
        raise Unsupported("quantize to i32 is not exact in float32 arithmetic")
    qmin, qmax = code_range(dt.bits, dt != DType.u8, node.attrs["narrow_range"])
    codes = _codes(node, cx.x(node.inputs[0]), qmin, qmax)
    if cx.float_codes:
        # TF.js has no int8/int16 tensors: the codes stay integral floats (exact), and the
        # dequantize that consumes them needs no cast.
        return [codes]
    return [tf.cast(codes, _tf_dtype(dt))]


def _dequantize(cx, node):
    qv = node.inputs[0]
    out = _tf_dtype(node.attrs["dtype"])
    # 32/64-bit codes (biases) can exceed 2^24, where float32 loses integers: compute them in
    # float64 like the IR (reference_ops::Dequantize multiplies in double).
    wide = qv.type.dtype.bits > 16
    arr = cx.np(qv)
    if cx.float_codes and wide and arr is not None:
        # TF.js has no float64: fold the constant with the IR kernel itself (exact), a float32
        # weight the same size as the int32 codes.
        return [cx.const(get_op("dequantize").kernel([np.asarray(arr)], node.attrs)[0], out)]
    q = cx.x(qv)
    ftype = tf.float64 if out == tf.float64 or (wide and not cx.float_codes) else tf.float32
    return [_dequant(node, tf.cast(q, ftype), out)]


def _fake_quant(cx, node):
    a = node.attrs
    x = cx.x(node.inputs[0])
    qmin, qmax = code_range(a["bits"], a["signed"], a["narrow_range"])
    if a["bits"] > 24:
        raise Unsupported(f"fake_quant with {a['bits']} bits is not exact in float32")
    return [_dequant(node, _codes(node, x, qmin, qmax), x.dtype)]


# -- shape -------------------------------------------------------------------------------------

def _reshape(cx, node):
    return [tf.reshape(cx.x(node.inputs[0]), list(node.attrs["shape"]))]


def _split(cx, node):
    a = node.attrs
    x = cx.x(node.inputs[0])
    sizes = list(a["sizes"])
    if len(sizes) == 1:
        return [tf.identity(x)]
    return list(tf.split(x, sizes, axis=a["axis"]))


def _strided_slice(cx, node):
    a = node.attrs
    return [tf.strided_slice(cx.x(node.inputs[0]), list(a["begin"]), list(a["end"]),
                             list(a["strides"]), begin_mask=a["begin_mask"],
                             end_mask=a["end_mask"], ellipsis_mask=a["ellipsis_mask"],
                             new_axis_mask=a["new_axis_mask"],
                             shrink_axis_mask=a["shrink_axis_mask"])]


def _pad(cx, node):
    a = node.attrs
    x = cx.x(node.inputs[0])
    pads = [list(p) for p in a["pads"]]
    if not pads:
        return [tf.identity(x)]
    if a["mode"] == "constant":
        value = a["value"]
        if x.dtype.is_integer or x.dtype == tf.bool:
            value = np.asarray(value).astype(x.dtype.as_numpy_dtype).item()
        return [tf.pad(x, pads, constant_values=value)]
    return [tf.pad(x, pads, mode=a["mode"].upper())]


_STRIDED_MASKS = ("begin_mask", "end_mask", "ellipsis_mask", "new_axis_mask",
                  "shrink_axis_mask")


def _dynamic_pad(cx, node):
    x, pads, a = cx.x(node.inputs[0]), cx.x(node.inputs[1]), node.attrs
    if a["mode"] != "constant":
        return [tf.pad(x, pads, mode=a["mode"].upper())]
    return [tf.pad(x, pads, constant_values=tf.cast(a["value"], x.dtype))]


def _with_sizes(fn):
    """A run-time shape op: the data operand and its size tensors, passed as they are."""
    return lambda cx, node: [fn(*(cx.x(v) for v in node.inputs))]


def _squeeze(cx, node):
    axes = list(node.attrs["axes"])
    if not axes:
        axes = [i for i, d in enumerate(node.inputs[0].type.shape) if d == 1]
    return [tf.squeeze(cx.x(node.inputs[0]), axis=axes)]


LOWERINGS: dict[str, Callable] = {
    # elementwise
    "identity": _unary(tf.identity),
    "neg": _unary(tf.math.negative), "abs": _unary(tf.math.abs), "exp": _unary(tf.math.exp),
    "log": _unary(tf.math.log), "sqrt": _unary(tf.math.sqrt), "rsqrt": _unary(tf.math.rsqrt),
    "tanh": _unary(tf.math.tanh), "sigmoid": _unary(tf.math.sigmoid), "erf": _unary(tf.math.erf),
    "sin": _unary(tf.math.sin), "cos": _unary(tf.math.cos),
    "relu": _unary(tf.nn.relu), "relu6": _unary(tf.nn.relu6), "leaky_relu": _leaky_relu,
    "gelu": _gelu, "elu": _elu, "hard_swish": _hard_swish, "hard_sigmoid": _hard_sigmoid,
    "softplus": _softplus, "sign": _unary(tf.math.sign), "floor": _unary(tf.math.floor),
    "ceil": _unary(tf.math.ceil), "round": _unary(tf.math.round),
    "logical_not": _unary(tf.math.logical_not), "clip": _clip, "cast": _cast,
    "conv3d": _conv3d, "conv3d_transpose": _conv3d_transpose,
    "bitcast": lambda cx, node: [tf.bitcast(cx.x(node.inputs[0]),
                                            _tf_dtype(node.attrs["to"]))],
    "bitwise_and": _binary(tf.bitwise.bitwise_and), "bitwise_or": _binary(tf.bitwise.bitwise_or),
    "bitwise_xor": _binary(tf.bitwise.bitwise_xor), "bitwise_not": _unary(tf.bitwise.invert),
    "left_shift": _binary(tf.bitwise.left_shift),
    "right_shift": _binary(tf.bitwise.right_shift),
    "is_finite": _unary(tf.math.is_finite),
    "erf_inv": _unary(lambda y: erf_inv_giles(y, _TF_MATH)),
    "add": _binary(tf.math.add), "sub": _binary(tf.math.subtract),
    "mul": _binary(tf.math.multiply), "div": _div, "pow": _binary(tf.math.pow),
    "floor_div": _binary(tf.math.floordiv), "floor_mod": _binary(tf.math.floormod),
    "maximum": _binary(tf.math.maximum), "minimum": _binary(tf.math.minimum),
    "atan2": _binary(tf.math.atan2),
    "equal": _binary(tf.math.equal), "not_equal": _binary(tf.math.not_equal),
    "less": _binary(tf.math.less), "less_equal": _binary(tf.math.less_equal),
    "greater": _binary(tf.math.greater), "greater_equal": _binary(tf.math.greater_equal),
    "logical_and": _binary(tf.math.logical_and), "logical_or": _binary(tf.math.logical_or),
    "where": _where,
    # nn
    "conv2d": _conv2d, "depthwise_conv2d": _depthwise, "conv2d_transpose": _conv2d_transpose,
    "matmul": _matmul, "max_pool2d": _pool(tf.nn.max_pool2d), "avg_pool2d": _pool(tf.nn.avg_pool2d),
    "softmax": _softmax(tf.nn.softmax), "log_softmax": _softmax(tf.nn.log_softmax),
    "batch_norm": _batch_norm, "layer_norm": _layer_norm, "resize": _resize,
    # reductions
    "reduce_sum": _reduce(tf.math.reduce_sum), "reduce_mean": _reduce(tf.math.reduce_mean),
    "reduce_max": _reduce(tf.math.reduce_max), "reduce_min": _reduce(tf.math.reduce_min),
    "reduce_prod": _reduce(tf.math.reduce_prod),
    "reduce_all": _reduce(tf.math.reduce_all), "reduce_any": _reduce(tf.math.reduce_any),
    "argmax": _arg(tf.math.argmax), "argmin": _arg(tf.math.argmin), "cumsum": _cumsum,
    "cumprod": _cumulative, "cummax": _cumulative, "cummin": _cumulative,
    "top_k": lambda cx, n: list(tf.math.top_k(
        cx.x(n.inputs[0]), k=n.attrs["k"] if n.attrs["k"] != -1
        else tf.shape(cx.x(n.inputs[0]))[-1])),
    # quantization
    "quantize": _quantize, "dequantize": _dequantize, "fake_quant": _fake_quant,
    # shape
    "reshape": _reshape,
    "transpose": lambda cx, n: [tf.transpose(cx.x(n.inputs[0]), list(n.attrs["perm"]))],
    "concat": lambda cx, n: [tf.concat([cx.x(v) for v in n.inputs], axis=n.attrs["axis"])],
    "split": _split,
    "slice": lambda cx, n: [tf.slice(cx.x(n.inputs[0]), list(n.attrs["begin"]),
                                     list(n.attrs["size"]))],
    "strided_slice": _strided_slice, "pad": _pad,
    "gather": lambda cx, n: [tf.gather(cx.x(n.inputs[0]), cx.x(n.inputs[1]),
                                       axis=n.attrs["axis"], batch_dims=n.attrs["batch_dims"])],
    "broadcast_to": lambda cx, n: [tf.broadcast_to(cx.x(n.inputs[0]), list(n.attrs["shape"]))],
    "squeeze": _squeeze,
    "gather_nd": lambda cx, n: [tf.gather_nd(cx.x(n.inputs[0]), cx.x(n.inputs[1]))],
    "scatter_nd_update": _scatter_nd_update,
    # (ScatterNd, not TensorScatterAdd: TF.js runs only the former)
    "scatter_nd_add": lambda cx, n: [cx.x(n.inputs[0]) + tf.scatter_nd(
        cx.x(n.inputs[1]), cx.x(n.inputs[2]), tf.shape(cx.x(n.inputs[0]),
                                                        out_type=cx.x(n.inputs[1]).dtype))],
    "expand_dims": lambda cx, n: [tf.expand_dims(cx.x(n.inputs[0]), n.attrs["axis"])],
    "tile": lambda cx, n: [tf.tile(cx.x(n.inputs[0]), list(n.attrs["multiples"]))],
    "reverse": lambda cx, n: [tf.reverse(cx.x(n.inputs[0]), sorted(
        {a % n.inputs[0].type.rank for a in n.attrs["axes"]}))],
    # run-time shapes
    "shape_of": lambda cx, n: [tf.shape(cx.x(n.inputs[0]), out_type=_tf_dtype(n.attrs["dtype"]))],
    "dynamic_reshape": _with_sizes(tf.reshape), "dynamic_broadcast_to": _with_sizes(tf.broadcast_to),
    "dynamic_tile": _with_sizes(tf.tile), "dynamic_slice": _with_sizes(tf.slice),
    "range": lambda cx, n: [tf.range(*(cx.x(v) for v in n.inputs))],
    "nonzero": lambda cx, n: [tf.where(cx.x(n.inputs[0]))],
    "dynamic_pad": _dynamic_pad,
    "dynamic_strided_slice": lambda cx, n: [tf.strided_slice(
        *(cx.x(v) for v in n.inputs), **{k: n.attrs[k] for k in _STRIDED_MASKS})],
    # control flow, in-place updates
    **tf_control.LOWERINGS,
}


# -- whole-graph emission ----------------------------------------------------------------------

def _diag(node: Node, message: str) -> Diagnostic:
    return Diagnostic(message, node=node.describe(), scope=node.scope, loc=node.loc)


def _emit(graph: Graph, cx: _Ctx, inputs: list, problems: list[Diagnostic] | None) -> list:
    """Lowers `graph` node by node into the current TF graph; returns the output tensors.
    With `problems` given, a node that fails is recorded and stands in as a placeholder so the
    rest of the graph is still checked (dry run); otherwise failures propagate."""
    cx.problems = problems
    for v, t in zip(graph.inputs, inputs):
        cx.env[id(v)] = t
    tf_graph = tf.compat.v1.get_default_graph() if cx.params is not None else None
    for node in graph:
        if node.op == "constant":
            continue  # emitted where used
        lower = LOWERINGS.get(node.op)
        try:
            if lower is None:
                raise Unsupported(f"op '{node.op}' has no TensorFlow lowering")
            for v in [*node.inputs, *node.outputs]:
                _tf_dtype(v.type.dtype)
            if tf_graph is not None and node.op in QUANTIZED_OPS:
                raise Unsupported(_QUANTIZED_REFUSAL)
            first = _op_count(tf_graph)
            with tf.name_scope(sanitize(node.scope)) if node.scope else _null():
                results = lower(cx, node)
            if tf_graph is not None:
                _check_gradients(tf_graph, first)
            if len(results) != len(node.outputs):
                raise Unsupported(f"lowering gave {len(results)} results for "
                                  f"{len(node.outputs)} outputs")
        except Unsupported as err:
            if problems is None:
                raise ConversionError("cannot lower to TensorFlow", [_diag(node, str(err))])
            problems.append(_diag(node, str(err)))
            results = [_stand_in(v) for v in node.outputs]
        except (ConversionError, KeyError):
            raise
        except Exception as err:  # a TF-side error must still name the node
            if problems is None:
                raise ConversionError("cannot lower to TensorFlow", [_diag(
                    node, f"TensorFlow rejected the lowering: {type(err).__name__}: "
                          f"{str(err).splitlines()[0] if str(err) else ''}")]) from err
            problems.append(_diag(node, f"TensorFlow rejected the lowering: "
                                        f"{type(err).__name__}: {str(err)[:300]}"))
            results = [_stand_in(v) for v in node.outputs]
        for v, t in zip(node.outputs, results):
            cx.env[id(v)] = t
    return [cx.x(v) for v in graph.outputs]


QUANTIZED_OPS = frozenset({"quantize", "dequantize", "fake_quant"})
_QUANTIZED_REFUSAL = ("a quantized module cannot be lowered trainable (its weights are integer "
                      "codes): convert the float model with trainable=True, or fine-tune it "
                      "with quantization-aware training")


def _op_count(tf_graph) -> int:
    if tf_graph is None:
        return 0
    nodes = getattr(tf_graph, "_nodes_by_id", None)
    return len(nodes) if nodes is not None else len(tf_graph.get_operations())


def _check_gradients(tf_graph, first: int) -> None:
    """Raises Unsupported naming every op (type) created since op number `first` that lies on
    a float path (a float input and a float output) and has no registered TF gradient."""
    from tensorflow.python.framework import ops as tf_ops

    nodes = getattr(tf_graph, "_nodes_by_id", None)
    created = list(nodes.values())[first:] if nodes is not None else \
        tf_graph.get_operations()[first:]
    missing = []
    for op in created:
        if not any(t.dtype.is_floating for t in op.inputs) or \
                not any(t.dtype.is_floating for t in op.outputs):
            continue
        try:
            tf_ops.get_gradient_function(op)
        except LookupError:
            if op.type not in missing:
                missing.append(op.type)
    if missing:
        raise Unsupported(f"not differentiable in TensorFlow: its lowering uses "
                          f"{', '.join(missing)}, which has no registered gradient")


class _null:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def _stand_in(v: Value):
    dtype = TF_DTYPES.get(v.type.dtype, tf.float32)
    return tf.compat.v1.placeholder(dtype, _static_shape(v))


def _signature_names(module: Module, key: str, values, default: str,
                     problems: list[Diagnostic]) -> list[str]:
    return signature_names(module, key, values, default, problems, transform=sanitize)


def _dry_run(module: Module, float_codes: bool = False,
             params: dict[int, bool] | None = None) -> tuple[list[Diagnostic], set]:
    """Traces the graph in a throwaway tf.Graph: (every problem, ids of constants used as
    tensors). `params` (trainable lowering): the parameters, never folded, and every op
    checked for a gradient."""
    graph = module.main
    problems: list[Diagnostic] = []
    used: set = set()
    with tf.Graph().as_default():
        inputs = []
        for v in graph.inputs:
            try:
                inputs.append(tf.compat.v1.placeholder(_tf_dtype(v.type.dtype),
                                                       _static_shape(v)))
            except Unsupported as err:
                problems.append(Diagnostic(f"graph input %{v.name or '?'}: {err}"))
                inputs.append(_stand_in(v))
        cx = _Ctx(None, used, float_codes, params)
        try:
            _emit(graph, cx, inputs, problems)
        except Unsupported as err:  # a constant graph output of an unusable dtype
            problems.append(Diagnostic(f"graph output: {err}"))
    _signature_names(module, "input_names", graph.inputs, "input", problems)
    _signature_names(module, "output_names", graph.outputs, "output", problems)
    return problems, used


def _prepared(module: Module, float_codes: bool) -> Module:
    """`module` with its `lstm` / `rnn` ops as scans and, for TF.js (float_codes), its bitwise
    ops as integer arithmetic: TF.js has no bitwise kernel (passes/bitwise.py)."""
    module = with_recurrent_expanded(module)
    return with_bitwise_expanded(module, TFJS_MISSING) if float_codes else module


def _f32_module(module: Module, float_codes: bool) -> Module:
    """`module` as TF lowers it: scans and targets' missing ops expanded, bf16/f16 computed in
    f32, and f64 too for TF.js (`float_codes`), which has no float64."""
    floats = NON_F32_FLOATS if float_codes else NARROW_FLOATS
    return widened(without_scans(_prepared(module, float_codes)), floats)


def lowering_problems(module: Module, *, float_codes: bool = False) -> list[Diagnostic]:
    """Every reason `module` cannot be lowered to TensorFlow (empty when it can): each
    unsupported node with its node, scope and loc, plus signature-name problems. `float_codes`
    as for `lower_to_tf`."""
    return _dry_run(_f32_module(module, float_codes), float_codes)[0]


# -- the tf.Module -----------------------------------------------------------------------------

class TFModel(tf.Module):
    """The weights of a lowered module: big constants as (non-trainable) tf.Variables, in
    graph order, named after the value (else `<scope of its user>/<operand name>`)."""

    def __init__(self, weights: list[tf.Variable], name: str | None = None):
        super().__init__(name=name)
        self.weights = list(weights)


class TrainableModel(tf.__internal__.tracking.AutoTrackable):
    """The root object of a trainable SavedModel, in the shape of TF Hub's reusable SavedModel
    (and jax2tf's fine-tuning export): `__call__` (a differentiable tf.function: one output is
    returned as a tensor, several as a dict keyed by the output names), `variables`,
    `trainable_variables`, `non_trainable_variables` and `regularization_losses` (empty). All
    of these are attributes, so they survive `tf.saved_model.load`."""

    def __init__(self, variables: list[tf.Variable], call):
        super().__init__()
        self.variables = list(variables)
        self.trainable_variables = [v for v in variables if v.trainable]
        self.non_trainable_variables = [v for v in variables if not v.trainable]
        self.regularization_losses = []
        self.__call__ = call


# Parameters that are statistics, not weights (Keras BatchNormalization / Normalization, Flax
# BatchNorm): variables, but not trainable ones. Matched against a name's last component.
STATISTIC_NAMES = frozenset({"moving_mean", "moving_variance", "mean", "var", "variance",
                             "count"})


def parameter_flags(module: Module, trainable=True) -> dict[int, bool]:
    """id(value) -> trainable, for every parameter of `module`: a named float constant (JAX
    params / Flax variables / Keras weights are lifted as constants named by their paths;
    small constants a lowering or a pass made are unnamed), in any graph of the module.

    trainable=True: every parameter is trainable except statistics: a name with a
    `batch_stats` component (Flax) or a last component in STATISTIC_NAMES
    (`moving_mean`, ...), or a batch_norm's mean or variance operand. trainable=[globs]: a
    parameter is trainable when its name matches one of the globs (fnmatch), otherwise it is a
    non-trainable variable."""
    globs = None if trainable is True else [str(g) for g in trainable]
    stats: set[int] = set()
    for graph in module.all_graphs():
        for node in graph:
            if node.op == "batch_norm":
                stats.update(id(v) for v in node.inputs[1:3])
    flags: dict[int, bool] = {}
    for graph in module.all_graphs():
        for node in graph:
            if node.op != "constant":
                continue
            v = node.outputs[0]
            if not v.name or not v.type.dtype.is_float:
                continue
            if globs is not None:
                flags[id(v)] = any(fnmatch.fnmatchcase(v.name, g) for g in globs)
                continue
            parts = v.name.split("/")
            flags[id(v)] = not (id(v) in stats or "batch_stats" in parts
                                or parts[-1] in STATISTIC_NAMES)
    return flags


def _content_key(arr: np.ndarray, dtype: DType) -> tuple:
    """A key equal for two constants exactly when they hold the same data (dtype, shape and
    bytes): how modules lowered together find the weights they share."""
    data = np.ascontiguousarray(arr)
    # Hashed through the buffer protocol: a multi-GB weight is not copied to bytes first.
    flat = data.tobytes() if data.dtype.hasobject else data.reshape(-1).view(np.uint8)
    return (dtype, data.shape, hashlib.blake2b(flat, digest_size=20).digest())


def _make_variables(module: Module, used: set, shared: dict | None = None,
                    params: dict[int, bool] | None = None) -> dict[int, tf.Variable]:
    """id(constant value) -> tf.Variable for every big constant a lowering reads as a tensor.
    `shared` (content key -> tf.Variable), when given, is looked up and filled, so that
    modules lowered together (`lower_all_to_tf`) read one variable for the same weight.
    `params` (trainable lowering, see `parameter_flags`): every parameter, of any size and in
    any graph, is a variable, trainable as the flag says."""
    out: dict[int, tf.Variable] = {}
    taken: dict[str, int] = {}
    # Names already given to the other modules' variables stay unique across the set.
    names = {var.name.split(":")[0] for var in shared.values()} if shared else set()
    nodes = module.main if params is None else \
        (node for graph in module.all_graphs() for node in graph)
    for node in nodes:
        if node.op != "constant":
            continue
        v = node.outputs[0]
        arr = np.asarray(v.const)
        param = params is not None and id(v) in params
        if id(v) not in used or (arr.size <= VARIABLE_MIN_ELEMENTS and not param) or \
                (params is not None and node.graph is not module.main and not param):
            continue
        key = _content_key(arr, v.type.dtype) if shared is not None else None
        if key is not None and key in shared:
            out[id(v)] = shared[key]
            continue
        base = sanitize(constant_name(v))
        n = taken.get(base, 0)
        taken[base] = n + 1
        vname = base if n == 0 else f"{base}_{n}"
        while vname in names:
            n = taken[base]
            taken[base] = n + 1
            vname = f"{base}_{n}"
        names.add(vname)
        out[id(v)] = tf.Variable(_storage_array(arr, v.type.dtype),
                                 dtype=_tf_dtype(v.type.dtype), name=vname,
                                 trainable=bool(param and params[id(v)]))
        if key is not None:
            shared[key] = out[id(v)]
    return out


class LoweredTF:
    """A module lowered to TensorFlow: `tf_module` (weights) and `concrete_function()`."""

    def __init__(self, module: Module, used: set, float_codes: bool = False,
                 shared: dict | None = None, params: dict[int, bool] | None = None):
        self.module = module
        self.float_codes = float_codes
        self.params = params
        graph = module.main
        scratch: list[Diagnostic] = []
        self.input_names = _signature_names(module, "input_names", graph.inputs, "input",
                                            scratch)
        self.output_names = _signature_names(module, "output_names", graph.outputs, "output",
                                             scratch)
        self._variables = _make_variables(module, used, shared, params)
        self.input_specs = [tf.TensorSpec(_static_shape(v), _tf_dtype(v.type.dtype), name=n)
                            for v, n in zip(graph.inputs, self.input_names)]
        if params is None:
            self.tf_module = TFModel(list(self._variables.values()))
        else:   # the differentiable `__call__` beside the variables (TrainableModel)
            self.tf_module = TrainableModel(list(self._variables.values()),
                                            tf.function(self._call_plain,
                                                        input_signature=self.input_specs,
                                                        autograph=False))
        self._concrete = None

    def _call(self, *args):
        cx = _Ctx(self._variables, None, self.float_codes, self.params)
        outs = _emit(self.module.main, cx, list(args), None)
        result = {}
        for name, t, v in zip(self.output_names, outs, self.module.main.outputs):
            if t.dtype.is_floating and not v.type.dtype.is_float:
                t = tf.cast(t, tf.int32)   # float codes (float_codes) leave as integers
            result[name] = tf.identity(t, name=name)
        return result

    def _call_plain(self, *args):
        """`_call` as a Python callable returns it: the one output as a tensor, several as a
        dict keyed by the output names (the trainable module's `__call__`)."""
        result = self._call(*args)
        return next(iter(result.values())) if len(result) == 1 else result

    def function(self) -> tf.types.experimental.GenericFunction:
        """The tf.function (input_signature fixed to `input_specs`)."""
        return tf.function(self._call, input_signature=self.input_specs, autograph=False)

    def concrete_function(self):
        """The tf.function traced with the signature's TensorSpecs (symbolic dims -> None);
        returns a dict keyed by the output names. Traced once and cached."""
        if self._concrete is None:
            self._concrete = self.function().get_concrete_function()
            # The function only references its variables weakly: keep them (and the module)
            # alive as long as the function, so `lower_to_tf(m).concrete_function()` works.
            self._concrete._tensorforge_tf_module = self.tf_module
        return self._concrete


def lower_to_tf(module: Module, *, float_codes: bool = False, trainable=False) -> LoweredTF:
    """Lowers `module.main` to TensorFlow. Raises ConversionError listing every node (and
    signature name) that cannot be lowered.

    trainable=True (or a list of name globs, see `parameter_flags`): the fine-tuning form.
    Parameters are variables (trainable ones per the rule), never folded; a quantized node,
    or a node whose lowering uses a TF op without a gradient, is a problem listed in the
    ConversionError; `tf_module` is a `TrainableModel` (variables, trainable_variables,
    differentiable `__call__`). Not with float_codes.

    float_codes=False (SavedModel): `quantize` results are real integer tensors (int8, int16,
    ...). float_codes=True (TF.js, which has no int8/int16/float64): they stay integral float32
    codes, `dequantize` of a 32/64-bit integer constant is folded into a float32 constant, and
    integer graph outputs computed as float codes are cast to int32. Integer weight constants
    keep their dtype either way (the TF.js writer stores them at 1-2 bytes per element)."""
    if trainable is not False and float_codes:
        raise ValueError("a trainable lowering is for the SavedModel backend (not float_codes)")
    module = _f32_module(module, float_codes)
    params = None if trainable is False else parameter_flags(module, trainable)
    problems, used = _dry_run(module, float_codes, params)
    if problems:
        raise ConversionError("cannot lower to TensorFlow", problems)
    return LoweredTF(module, used, float_codes, params=params)


def lower_all_to_tf(modules: dict[str, Module], *, float_codes: bool = False
                    ) -> tuple[tf.Module, dict[str, LoweredTF]]:
    """Lowers several modules that read the same weights (an LLM's prefill and decode steps)
    as one unit: returns a tf.Module holding every variable once, since constants with equal
    contents share one tf.Variable across the modules, and key -> LoweredTF. Raises
    ConversionError listing every problem of every module (each prefixed by its key) before
    creating anything."""
    prepared, problems = {}, []
    for key, module in modules.items():
        module = _f32_module(module, float_codes)
        found, used = _dry_run(module, float_codes)
        problems += [dataclasses.replace(d, message=f"{key}: {d.message}") for d in found]
        prepared[key] = (module, used)
    if problems:
        raise ConversionError("cannot lower to TensorFlow", problems)
    shared: dict = {}
    lowered = {key: LoweredTF(module, used, float_codes, shared)
               for key, (module, used) in prepared.items()}
    holder = TFModel(list({id(v): v for v in shared.values()}.values()))
    for one in lowered.values():
        one.tf_module = holder      # every function keeps the one holder (and so all) alive
    return holder, lowered
