"""TF.js graph model written straight from the IR: no TensorFlow graph, freezing or grappler.

    from tensorforge.backends.tfjs_direct import build_direct, direct_problems
    text, shards = build_direct(module, quantize=None, quantize_globs=None, metadata={})
    direct_problems(module)      # [] when the direct path covers the module, else the reasons

Each IR op maps to the TF ops `backends/tf_lowering.py` would give it (same op types, same
constant operands, same attributes, so TF.js runs the same kernels on the same numbers), written
as the proto3-JSON NodeDefs `tensorflowjs_converter` writes and the TF.js OperationMapper reads
(the attribute names of tfjs-converter's op lists, e.g. `Conv2D`: strides, padding, dilations,
data_format, explicit_paddings). Shapes and dtypes come from the IR types, so nothing is traced.
The one deliberate difference: a grouped conv2d with one input channel per group (ConvNeXt's
depthwise convs, written by Keras as Conv2D(groups=C)) is a DepthwiseConv2dNative with the
filter reshaped, where the TF path splits it into C convs and a concat.

The module goes through the same preparation as the TF path (`lstm`/`rnn` and `scan` expanded,
bitwise ops expanded, non-f32 floats widened), then the same post-processing as the frozen
graph: int8/int16 weights that only feed Casts to float32 become float32 Consts of their codes
(stored at 1-2 bytes per element), Identity nodes are bypassed, dead nodes dropped, and the Const
values go into the weights manifest (`backends/tfjs.py` does the storage, compression and
sharding for both paths).

An IR op (or an attribute combination) without a mapping here raises `NotDirect`; `write_tfjs`
then writes the model through the TF path, which reports the same errors as before for what
neither path supports. `DIRECT_OPS` lists the ops mapped here; `FALLBACK_OPS` the ones that
still go the TF way (control flow, among others).
"""

from __future__ import annotations

import base64
import math
from typing import Callable

import numpy as np

from ..ir.errors import Diagnostic
from ..ir.graph import Graph, Module, Node, Value
from ..ir.ops import get_op
from ..ir.types import DType, code_range
from ..passes.bitwise import TFJS_MISSING, with_bitwise_expanded
from ..passes.control import without_scans
from ..passes.dtypes import NON_F32_FLOATS, widened
from ..passes.recurrent import with_recurrent_expanded
from .common import constant_name, dilate_filter, signature_names

__all__ = ["DIRECT_OPS", "FALLBACK_OPS", "NotDirect", "build_graph", "direct_problems",
           "prepared"]

VARIABLE_MIN_ELEMENTS = 16   # as tf_lowering: bigger constants are named like variables

# The GraphDef producer version written in modelTopology.versions (TF 2.21's; TF.js only
# reads it into GraphModel.version).
GRAPH_DEF_PRODUCER = 2474


class NotDirect(Exception):
    """The direct writer has no mapping for this node; the TF path takes the whole model."""

    def __init__(self, message: str, node: Node | None = None):
        super().__init__(message)
        self.node = node


# i4 travels as int8 (same codes), as in tf_lowering.TF_DTYPES.
DT = {DType.f32: "DT_FLOAT", DType.f16: "DT_HALF", DType.bf16: "DT_BFLOAT16",
      DType.f64: "DT_DOUBLE", DType.i4: "DT_INT8", DType.i8: "DT_INT8", DType.u8: "DT_UINT8",
      DType.i16: "DT_INT16", DType.i32: "DT_INT32", DType.i64: "DT_INT64",
      DType.bool: "DT_BOOL"}
_NP_OF_DT = {"DT_FLOAT": np.float32, "DT_HALF": np.float16, "DT_DOUBLE": np.float64,
             "DT_INT8": np.int8, "DT_UINT8": np.uint8, "DT_INT16": np.int16,
             "DT_UINT16": np.uint16, "DT_INT32": np.int32, "DT_INT64": np.int64,
             "DT_BOOL": np.bool_}
_FLOAT_DT = {"DT_FLOAT", "DT_HALF", "DT_BFLOAT16", "DT_DOUBLE"}
_INT_DT = {"DT_INT8", "DT_UINT8", "DT_INT16", "DT_UINT16", "DT_INT32", "DT_INT64"}


def _sanitize(name: str) -> str:
    """tf_lowering.sanitize (a string usable as a TF op / signature name), without TF."""
    import re

    name = re.sub(r"[^A-Za-z0-9_.\-/]", "_", name).strip("/") or "value"
    name = re.sub(r"/+", "/", name)
    return name if re.match(r"[A-Za-z0-9.]", name) else "v" + name


# -- attribute values (proto3 JSON of AttrValue) -----------------------------------------------

def _s(text: str) -> dict:
    return {"s": base64.b64encode(text.encode()).decode()}


def _i(n: int) -> dict:
    return {"i": str(int(n))}


def _f(x: float) -> dict:
    return {"f": float(str(np.float32(x)))}   # the float32 value, shortest spelling


def _b(flag: bool) -> dict:
    return {"b": bool(flag)}


def _ty(dt: str) -> dict:
    return {"type": dt}


def _ints(values) -> dict:
    values = [str(int(v)) for v in values]
    return {"list": {"i": values}} if values else {"list": {}}


def _shape_json(dims) -> dict:
    """TensorShapeProto as proto3 JSON: unknown dims -1, every size spelled out."""
    return {"dim": [{"size": str(d if isinstance(d, int) else -1)} for d in dims]} if dims \
        else {}


_NHWC = _s("NHWC")


# -- the graph being written -------------------------------------------------------------------

class T:
    """A tensor of the graph being written: its reference (`name` or `name:k`) and dtype."""

    __slots__ = ("ref", "dt")

    def __init__(self, ref: str, dt: str):
        self.ref, self.dt = ref, dt

    @property
    def is_float(self) -> bool:
        return self.dt in _FLOAT_DT


class _Builder:
    """NodeDefs (proto3-JSON dicts) in creation order, with TF-style unique names, plus the
    NumPy value of every Const (moved into the weights at the end)."""

    def __init__(self):
        self.nodes: list[dict] = []
        self.values: dict[str, np.ndarray] = {}     # Const name -> value (original dtype)
        self.weights: set[str] = set()   # Consts of IR constants named like variables
        self.taken: set[str] = set()
        self.counts: dict[str, int] = {}
        self.scope = ""

    def unique(self, base: str) -> str:
        name = f"{self.scope}/{base}" if self.scope else base
        if name not in self.taken:
            self.taken.add(name)
            return name
        n = self.counts.get(name, 0)
        while True:
            n += 1
            cand = f"{name}_{n}"
            if cand not in self.taken:
                self.counts[name] = n
                self.taken.add(cand)
                return cand

    def reserve(self, name: str) -> str:
        """`name` itself when free, else `name_1`, ... (no scope)."""
        scope, self.scope = self.scope, ""
        try:
            return self.unique(name)
        finally:
            self.scope = scope

    def op(self, op: str, inputs: list[T], attrs: dict, dt: str, n_out: int = 1,
           name: str | None = None, out_dts: list[str] | None = None):
        nm = self.unique(name or op)
        node = {"name": nm, "op": op, "attr": attrs}
        if inputs:
            node["input"] = [t.ref for t in inputs]
        self.nodes.append(node)
        if n_out == 1:
            return T(nm, dt)
        dts = out_dts or [dt] * n_out
        return [T(nm if k == 0 else f"{nm}:{k}", dts[k]) for k in range(n_out)]

    def const(self, arr, dt: str, name: str = "Const", exact_name: str | None = None) -> T:
        arr = np.asarray(arr)
        want = _NP_OF_DT.get(dt)
        if want is not None and arr.dtype != want:
            arr = arr.astype(want)
        nm = exact_name if exact_name is not None else self.unique(name)
        if exact_name is not None:
            self.weights.add(nm)
        self.nodes.append({"name": nm, "op": "Const", "attr": {
            "dtype": _ty(dt), "value": {"tensor": {"dtype": dt,
                                                   "tensorShape": _shape_json(arr.shape)}}}})
        self.values[nm] = arr
        return T(nm, dt)


# -- the op mappings ---------------------------------------------------------------------------

class _Ctx:
    """What a mapping sees: `g` (the builder), `x(value)` (the tensor of an IR operand;
    constants become Consts at first use), `np(value)` (a constant's payload, else None)."""

    def __init__(self, g: _Builder, savedmodel: bool = False):
        self.g = g
        self.savedmodel = savedmodel    # for a SavedModel (savedmodel_direct): TF's own ops
        self.env: dict[int, T] = {}
        self.const_names: dict[str, int] = {}

    def x(self, value: Value) -> T:
        t = self.env.get(id(value))
        if t is not None:
            return t
        arr = value.const
        if arr is None:
            raise KeyError(f"value %{value.name} is not defined")
        dt = _dt(value.type.dtype)
        arr = np.asarray(arr)
        if value.type.dtype == DType.i4:
            arr = arr.astype(np.int64).astype(np.int8)
        if arr.size > VARIABLE_MIN_ELEMENTS:
            # Named like tf_lowering's variables: the value name, else <scope>/<role>.
            base = _sanitize(constant_name(value))
            n = self.const_names.get(base, 0)
            self.const_names[base] = n + 1
            t = self.g.const(arr, dt, exact_name=self.g.reserve(base if n == 0 else
                                                                f"{base}_{n}"))
        else:
            t = self.g.const(arr, dt)
        self.env[id(value)] = t
        return t

    @staticmethod
    def np(value: Value):
        return value.const


def _dt(dtype: DType) -> str:
    try:
        return DT[dtype]
    except KeyError:
        raise NotDirect(f"no TF dtype for {dtype}") from None


def _scalar(g: _Builder, x: T, v) -> T:
    return g.const(np.asarray(v), x.dt)


def _i32(g: _Builder, values, name="Const") -> T:
    return g.const(np.asarray(values, np.int32), "DT_INT32", name)


# elementwise

_UNARY = {"identity": "Identity", "neg": "Neg", "abs": "Abs", "exp": "Exp", "log": "Log",
          "sqrt": "Sqrt", "rsqrt": "Rsqrt", "tanh": "Tanh", "sigmoid": "Sigmoid", "erf": "Erf",
          "sin": "Sin", "cos": "Cos", "relu": "Relu", "relu6": "Relu6", "sign": "Sign",
          "floor": "Floor", "ceil": "Ceil", "round": "Round", "logical_not": "LogicalNot",
          "is_finite": "IsFinite"}
_UNARY_ANY_DTYPE = {"identity", "neg", "abs", "sign", "relu", "relu6", "round", "logical_not"}

_BINARY = {"add": "AddV2", "sub": "Sub", "mul": "Mul", "pow": "Pow", "floor_div": "FloorDiv",
           "floor_mod": "FloorMod", "maximum": "Maximum", "minimum": "Minimum",
           "atan2": "Atan2", "equal": "Equal", "not_equal": "NotEqual", "less": "Less",
           "less_equal": "LessEqual", "greater": "Greater", "greater_equal": "GreaterEqual",
           "logical_and": "LogicalAnd", "logical_or": "LogicalOr"}
_COMPARE = {"equal", "not_equal", "less", "less_equal", "greater", "greater_equal"}


def _un(g, op, x, dt=None):
    return g.op(op, [x], {"T": _ty(x.dt)}, dt or x.dt)


def _bin(g, op, a, b):
    attrs = {"T": _ty(a.dt)}
    if op in ("Equal", "NotEqual"):
        attrs["incompatible_shape_error"] = _b(True)
    out = "DT_BOOL" if op in ("Equal", "NotEqual", "Less", "LessEqual", "Greater",
                              "GreaterEqual", "LogicalAnd", "LogicalOr") else a.dt
    if op in ("LogicalAnd", "LogicalOr"):
        attrs = {}
    return g.op(op, [a, b], attrs, out)


def _unary(cx, node):
    x = cx.x(node.inputs[0])
    if node.op not in _UNARY_ANY_DTYPE and not x.is_float:
        raise NotDirect(f"{node.op} on {x.dt}")
    if node.op == "logical_not":
        return [cx.g.op("LogicalNot", [x], {}, "DT_BOOL")]
    return [_un(cx.g, _UNARY[node.op], x)]


def _binary(cx, node):
    a, b = cx.x(node.inputs[0]), cx.x(node.inputs[1])
    if a.dt != b.dt:
        raise NotDirect(f"{node.op} of {a.dt} and {b.dt}")
    if node.op == "atan2" and not a.is_float:
        raise NotDirect("atan2 on integers")
    return [_bin(cx.g, _BINARY[node.op], a, b)]


def _div(cx, node):
    a, b = cx.x(node.inputs[0]), cx.x(node.inputs[1])
    if not a.is_float:
        if cx.savedmodel:
            return [cx.g.op("TruncateDiv", [a, b], {"T": _ty(a.dt)}, a.dt)]
        raise NotDirect("integer div is TruncateDiv, which TF.js lacks")
    return [cx.g.op("RealDiv", [a, b], {"T": _ty(a.dt)}, a.dt)]


def _gelu(cx, node):
    g, x = cx.g, cx.x(node.inputs[0])
    half = _scalar(g, x, 0.5)
    if node.attrs["approximate"]:
        c1 = _scalar(g, x, math.sqrt(2.0 / math.pi))
        c2 = _scalar(g, x, 0.044715)
        cube = _bin(g, "Mul", _bin(g, "Mul", x, x), x)
        inner = _bin(g, "Mul", c1, _bin(g, "AddV2", x, _bin(g, "Mul", c2, cube)))
        t = _un(g, "Tanh", inner)
    else:
        t = _un(g, "Erf", _bin(g, "Mul", x, _scalar(g, x, 1.0 / math.sqrt(2.0))))
    return [_bin(g, "Mul", _bin(g, "Mul", half, x), _bin(g, "AddV2", _scalar(g, x, 1.0), t))]


def _elu(cx, node):
    g, x = cx.g, cx.x(node.inputs[0])
    alpha = node.attrs["alpha"]
    y = _un(g, "Elu", x)
    if alpha == 1.0:
        return [y]
    cond = _bin(g, "Greater", x, _scalar(g, x, 0))
    e = _bin(g, "Mul", _scalar(g, x, alpha), y)
    return [g.op("SelectV2", [cond, x, e], {"T": _ty(x.dt)}, x.dt)]


def _leaky_relu(cx, node):
    x = cx.x(node.inputs[0])
    return [cx.g.op("LeakyRelu", [x], {"T": _ty(x.dt), "alpha": _f(node.attrs["alpha"])}, x.dt)]


def _hard_swish(cx, node):
    g, x = cx.g, cx.x(node.inputs[0])
    r = _un(g, "Relu6", _bin(g, "AddV2", x, _scalar(g, x, 3)))
    return [g.op("RealDiv", [_bin(g, "Mul", x, r), _scalar(g, x, 6)], {"T": _ty(x.dt)}, x.dt)]


def _hard_sigmoid(cx, node):
    g, x = cx.g, cx.x(node.inputs[0])
    d = g.op("RealDiv", [x, _scalar(g, x, 6)], {"T": _ty(x.dt)}, x.dt)
    y = _bin(g, "AddV2", d, _scalar(g, x, 0.5))
    return [_bin(g, "Minimum", _bin(g, "Maximum", y, _scalar(g, x, 0)), _scalar(g, x, 1))]


def _softplus(cx, node):
    g, x = cx.g, cx.x(node.inputs[0])
    e = _un(g, "Exp", _un(g, "Neg", _un(g, "Abs", x)))
    return [_bin(g, "AddV2", _bin(g, "Maximum", x, _scalar(g, x, 0)),
                 _un(g, "Log", _bin(g, "AddV2", _scalar(g, x, 1), e)))]


def _clip(cx, node):
    g, x = cx.g, cx.x(node.inputs[0])
    lo, hi = node.attrs["min"], node.attrs["max"]
    if x.dt in _INT_DT:
        lo, hi = math.ceil(lo), math.floor(hi)
    return [_bin(g, "Minimum", _bin(g, "Maximum", x, _scalar(g, x, lo)), _scalar(g, x, hi))]


def _cast_to(g, x: T, dt: str) -> T:
    if x.dt == dt:
        return x
    return g.op("Cast", [x], {"SrcT": _ty(x.dt), "DstT": _ty(dt), "Truncate": _b(False)}, dt)


def _cast(cx, node):
    return [_cast_to(cx.g, cx.x(node.inputs[0]), _dt(node.attrs["to"]))]


def _where(cx, node):
    c, a, b = (cx.x(v) for v in node.inputs)
    return [cx.g.op("SelectV2", [c, a, b], {"T": _ty(a.dt)}, a.dt)]


# nn

def _activation(g, y: T, act: str) -> T:
    if act == "none":
        return y
    if act == "relu":
        return _un(g, "Relu", y)
    if act == "relu6":
        return _un(g, "Relu6", y)
    if act == "relu_n1_to_1":
        return _bin(g, "Minimum", _bin(g, "Maximum", y, _scalar(g, y, -1)), _scalar(g, y, 1))
    if act == "tanh":
        return _un(g, "Tanh", y)
    raise NotDirect(f"unknown fused activation {act!r}")


def _bias_act(cx, node, y: T) -> T:
    g = cx.g
    if len(node.inputs) > 2:
        b = cx.x(node.inputs[2])
        if y.is_float:
            y = g.op("BiasAdd", [y, b], {"T": _ty(y.dt), "data_format": _NHWC}, y.dt)
        else:
            y = _bin(g, "AddV2", y, b)
    return _activation(g, y, node.attrs["activation"])


def _pair4(p):
    return [1, p[0], p[1], 1]


def _explicit_pad(g, x: T, pad) -> T:
    (t, b), (l, r) = pad
    if t or b or l or r:
        x = g.op("Pad", [x, _i32(g, [[0, 0], [t, b], [l, r], [0, 0]])],
                 {"T": _ty(x.dt), "Tpaddings": _ty("DT_INT32")}, x.dt)
    return x


def _filter(cx, node, dilations) -> T:
    fv = node.inputs[1]
    if tuple(dilations) == (1, 1):
        return cx.x(fv)
    arr = cx.np(fv)
    if arr is None:
        raise NotDirect(f"{node.op} with dilations needs a constant filter")
    arr = np.asarray(arr)
    if fv.type.dtype == DType.i4:
        arr = arr.astype(np.int64).astype(np.int8)
    return cx.g.const(dilate_filter(arr, dilations), _dt(fv.type.dtype))


def _conv_attrs(x: T, strides, pad: str, dilations) -> dict:
    return {"T": _ty(x.dt), "data_format": _NHWC, "dilations": _ints(_pair4(dilations)),
            "explicit_paddings": _ints([]), "padding": _s(pad),
            "strides": _ints(_pair4(strides)), "use_cudnn_on_gpu": _b(True)}


def _dw_attrs(x: T, strides, pad: str) -> dict:
    return {"T": _ty(x.dt), "data_format": _NHWC, "dilations": _ints([1, 1, 1, 1]),
            "explicit_paddings": _ints([]), "padding": _s(pad),
            "strides": _ints([1, strides[0], strides[1], 1])}


def _conv2d(cx, node):
    g, a = cx.g, node.attrs
    x = cx.x(node.inputs[0])
    if not x.is_float:
        raise NotDirect("conv2d on integers")
    pad = a["padding"]
    if not isinstance(pad, str):
        x, pad = _explicit_pad(g, x, pad), "VALID"
    groups = a["groups"]
    if groups == 1:
        y = g.op("Conv2D", [x, cx.x(node.inputs[1])],
                 _conv_attrs(x, a["strides"], pad, a["dilations"]), x.dt)
        return [_bias_act(cx, node, y)]
    fv = node.inputs[1]
    farr = cx.np(fv)
    cin = node.inputs[0].type.shape[3]
    sh, sw = a["strides"]
    if (farr is not None and cin == groups and np.asarray(farr).shape[2] == 1
            and tuple(a["dilations"]) == (1, 1) and sh == sw):
        # One input channel per group: a depthwise conv (output channel c * mult + m reads
        # input channel c), not `groups` convs and a concat.
        farr = np.asarray(farr)
        kh, kw, _, cout = farr.shape
        f = cx.g.const(farr.reshape(kh, kw, groups, cout // groups), _dt(fv.type.dtype),
                       exact_name=g.reserve(_sanitize(constant_name(fv))))
        y = g.op("DepthwiseConv2dNative", [x, f], _dw_attrs(x, a["strides"], pad), x.dt)
        return [_bias_act(cx, node, y)]
    # TF's CPU Conv2D has no grouped form: one conv per group, then concat (as tf_lowering).
    f = cx.x(fv)
    axis = _i32(g, 3, "split/split_dim")
    xs = g.op("Split", [axis, x], {"T": _ty(x.dt), "num_split": _i(groups)}, x.dt, groups,
              name="split")
    axis = _i32(g, 3, "split_1/split_dim")
    fs = g.op("Split", [axis, f], {"T": _ty(f.dt), "num_split": _i(groups)}, f.dt, groups,
              name="split_1")
    ys = [g.op("Conv2D", [xi, fi], _conv_attrs(x, a["strides"], pad, a["dilations"]), x.dt)
          for xi, fi in zip(xs, fs)]
    y = _concat(g, ys, 3)
    return [_bias_act(cx, node, y)]


def _concat(g, ts: list[T], axis: int) -> T:
    if len(ts) == 1:
        return g.op("Identity", ts, {"T": _ty(ts[0].dt)}, ts[0].dt)
    ax = _i32(g, axis, "concat/axis")
    return g.op("ConcatV2", [*ts, ax], {"N": _i(len(ts)), "T": _ty(ts[0].dt),
                                       "Tidx": _ty("DT_INT32")}, ts[0].dt, name="concat")


def _depthwise(cx, node):
    g, a = cx.g, node.attrs
    sh, sw = a["strides"]
    if sh != sw:
        raise NotDirect(f"depthwise strides {(sh, sw)}")
    x = cx.x(node.inputs[0])
    if not x.is_float:
        raise NotDirect("depthwise_conv2d on integers")
    pad = a["padding"]
    if not isinstance(pad, str):
        x, pad = _explicit_pad(g, x, pad), "VALID"
    f = _filter(cx, node, a["dilations"])
    y = g.op("DepthwiseConv2dNative", [x, f], _dw_attrs(x, a["strides"], pad), x.dt)
    return [_bias_act(cx, node, y)]


def _shape(g, x: T, out_dt: str = "DT_INT32") -> T:
    return g.op("Shape", [x], {"T": _ty(x.dt), "out_type": _ty(out_dt)}, out_dt)


def _strided(g, x: T, begin, end, strides, **masks) -> T:
    attrs = {"Index": _ty("DT_INT32"), "T": _ty(x.dt)}
    for k in ("begin_mask", "ellipsis_mask", "end_mask", "new_axis_mask", "shrink_axis_mask"):
        attrs[k] = _i(masks.get(k, 0))
    return g.op("StridedSlice", [x, _i32(g, begin, "stack"), _i32(g, end, "stack_1"),
                                 _i32(g, strides, "stack_2")], attrs, x.dt,
                name="strided_slice")


def _conv2d_transpose(cx, node):
    g, a = cx.g, node.attrs
    out = node.outputs[0].type.shape
    if not all(isinstance(d, int) for d in out[1:]):
        raise NotDirect("conv2d_transpose with a dynamic output shape")
    x = cx.x(node.inputs[0])
    if not x.is_float:
        raise NotDirect("conv2d_transpose on integers")
    f = _filter(cx, node, a["dilations"])
    if isinstance(out[0], int):
        shape = _i32(g, list(out), "conv2d_transpose/output_shape")
    else:
        first = _strided(g, _shape(g, x), [0], [1], [1], begin_mask=1)
        shape = _concat(g, [first, _i32(g, list(out[1:]))], 0)
    attrs = _conv_attrs(x, a["strides"], a["padding"], (1, 1))
    y = g.op("Conv2DBackpropInput", [shape, f, x], attrs, x.dt, name="conv2d_transpose")
    return [_bias_act(cx, node, y)]


def _matmul(cx, node):
    g, a = cx.g, node.attrs
    x, w = cx.x(node.inputs[0]), cx.x(node.inputs[1])
    ta, tb = node.inputs[0].type, node.inputs[1].type
    if max(ta.rank, tb.rank) >= 4 and min(ta.rank, tb.rank) >= 3 and \
            (ta.rank != tb.rank or any(d != e or d == "?" for d, e in
                                       zip(ta.shape[:-2], tb.shape[:-2]))):
        # TF.js's BatchMatMul broadcasts wrongly over several batch dims: explicit broadcast.
        sx, sw_ = _shape(g, x), _shape(g, w)
        bx = _strided(g, sx, [0], [-2], [1], begin_mask=1)
        bw = _strided(g, sw_, [0], [-2], [1], begin_mask=1)
        batch = g.op("BroadcastArgs", [bx, bw], {"T": _ty("DT_INT32")}, "DT_INT32")
        x = g.op("BroadcastTo", [x, _concat(g, [batch, _strided(
            g, sx, [-2], [0], [1], end_mask=1)], 0)],
            {"T": _ty(x.dt), "Tidx": _ty("DT_INT32")}, x.dt)
        w = g.op("BroadcastTo", [w, _concat(g, [batch, _strided(
            g, sw_, [-2], [0], [1], end_mask=1)], 0)],
            {"T": _ty(w.dt), "Tidx": _ty("DT_INT32")}, w.dt)
    lead = ta.shape[:-1]
    flat_ok = (sum(not isinstance(d, int) for d in lead) <= 1 and x.is_float
               and isinstance(ta.shape[-1], int) and all(isinstance(d, int) for d in tb.shape))
    if ta.rank > 2 and tb.rank == 2 and not a["transpose_a"] and flat_ok:
        # A Dense on a [.., K] activation: one 2-D MatMul between two reshapes. BatchMatMul
        # with a broadcast weight runs 6x slower in tfjs's WASM backend (ConvNeXt's MLPs).
        n = tb.shape[0] if a["transpose_b"] else tb.shape[1]
        flat = _reshape(g, x, [-1, ta.shape[-1]])
        y = g.op("MatMul", [flat, w], {"T": _ty(x.dt), "transpose_a": _b(False),
                                       "transpose_b": _b(a["transpose_b"])}, x.dt)
        y = _reshape(g, y, [d if isinstance(d, int) else -1 for d in lead] + [n])
    elif ta.rank == 2 and tb.rank == 2:
        y = g.op("MatMul", [x, w], {"T": _ty(x.dt), "transpose_a": _b(a["transpose_a"]),
                                    "transpose_b": _b(a["transpose_b"])}, x.dt)
    else:
        y = g.op("BatchMatMulV2", [x, w], {"T": _ty(x.dt), "adj_x": _b(a["transpose_a"]),
                                           "adj_y": _b(a["transpose_b"])}, x.dt)
    return [_bias_act(cx, node, y)]


def _pool(op):
    def emit(cx, node):
        a, x = node.attrs, cx.x(node.inputs[0])
        if not isinstance(a["padding"], str):
            raise NotDirect("pool with explicit padding")
        attrs = {"T": _ty(x.dt), "data_format": _NHWC, "ksize": _ints(_pair4(a["ksize"])),
                 "padding": _s(a["padding"]), "strides": _ints(_pair4(a["strides"]))}
        if op == "MaxPool":
            attrs["explicit_paddings"] = _ints([])
        return [cx.g.op(op, [x], attrs, x.dt)]
    return emit


def _transpose(g, x: T, perm) -> T:
    return g.op("Transpose", [x, _i32(g, list(perm), "transpose/perm")],
                {"T": _ty(x.dt), "Tperm": _ty("DT_INT32")}, x.dt, name="transpose")


def _softmax(op):
    def emit(cx, node):
        g, x = cx.g, cx.x(node.inputs[0])
        rank = node.inputs[0].type.rank
        axis = node.attrs["axis"] % rank
        if axis == rank - 1:
            return [g.op(op, [x], {"T": _ty(x.dt)}, x.dt)]
        perm = list(range(rank))
        perm[axis], perm[-1] = perm[-1], perm[axis]
        y = g.op(op, [_transpose(g, x, perm)], {"T": _ty(x.dt)}, x.dt)
        return [_transpose(g, y, perm)]
    return emit


def _bn_shape(rank, axis, n):
    shape = [1] * rank
    shape[axis] = n
    return shape


def _reshape(g, x: T, shape) -> T:
    return g.op("Reshape", [x, _i32(g, list(shape), "Reshape/shape")],
                {"T": _ty(x.dt), "Tshape": _ty("DT_INT32")}, x.dt, name="Reshape")


def _batch_norm(cx, node):
    g, a = cx.g, node.attrs
    x = cx.x(node.inputs[0])
    rank = node.inputs[0].type.rank
    axis = a["axis"] % rank
    params = [cx.np(v) for v in node.inputs[1:]]
    if all(p is not None for p in params):
        mean, var, scale, offset = (np.asarray(p, np.float64) for p in params)
        mult = scale / np.sqrt(var + a["epsilon"])
        shift = offset - mean * mult
        shape = _bn_shape(rank, axis, mult.shape[0]) if axis != rank - 1 else [mult.shape[0]]
        m = g.const(mult.reshape(shape), x.dt)
        s = g.const(shift.reshape(shape), x.dt)
        return [_bin(g, "AddV2", _bin(g, "Mul", x, m), s)]
    mean, var, scale, offset = (cx.x(v) for v in node.inputs[1:])
    if axis != rank - 1:
        shape = _bn_shape(rank, axis, -1)
        mean, var, scale, offset = (_reshape(g, p, shape) for p in (mean, var, scale, offset))
    inv = _un(g, "Rsqrt", _bin(g, "AddV2", var, _scalar(g, x, a["epsilon"])))
    y = _bin(g, "Mul", _bin(g, "Sub", x, mean), _bin(g, "Mul", inv, scale))
    return [_bin(g, "AddV2", y, offset)]


def _reduce_op(g, op, x: T, axes, keep: bool, out_dt=None) -> T:
    return g.op(op, [x, _i32(g, list(axes), "Const")],
                {"T": _ty(x.dt), "Tidx": _ty("DT_INT32"), "keep_dims": _b(keep)},
                out_dt or x.dt)


def _layer_norm(cx, node):
    g, a = cx.g, node.attrs
    x = cx.x(node.inputs[0])
    rank = node.inputs[0].type.rank
    axes = sorted(ax % rank for ax in a["axes"])
    mean = _reduce_op(g, "Mean", x, axes, True)
    d = _bin(g, "Sub", x, mean)
    var = _reduce_op(g, "Mean", _un(g, "Square", d), axes, True)
    y = _bin(g, "Mul", d, _un(g, "Rsqrt", _bin(g, "AddV2", var, _scalar(g, x, a["epsilon"]))))
    trailing = axes == list(range(rank - len(axes), rank))
    for i, v in enumerate(node.inputs[1:], 1):
        p = cx.x(v)
        if not trailing:
            pshape = list(v.type.shape)
            p = _reshape(g, p, [pshape[axes.index(ax)] if ax in axes else 1
                                for ax in range(rank)])
        y = _bin(g, "Mul", y, p) if i == 1 else _bin(g, "AddV2", y, p)
    return [y]


def _resize(cx, node):
    g, a = cx.g, node.attrs
    x = cx.x(node.inputs[0])
    size = _i32(g, list(a["size"]), "size")
    attrs = {"T": _ty(x.dt), "align_corners": _b(a["align_corners"]),
             "half_pixel_centers": _b(a["half_pixel_centers"])}
    if a["method"] == "nearest":
        return [g.op("ResizeNearestNeighbor", [x, size], attrs, x.dt)]
    if a["method"] != "bilinear":
        raise NotDirect(f"resize method {a['method']!r}")
    y = g.op("ResizeBilinear", [x, size], attrs, "DT_FLOAT")
    return [_cast_to(g, y, x.dt)]


_REDUCE = {"reduce_sum": "Sum", "reduce_mean": "Mean", "reduce_max": "Max",
           "reduce_min": "Min", "reduce_prod": "Prod", "reduce_all": "All",
           "reduce_any": "Any"}


def _reduce(cx, node):
    x = cx.x(node.inputs[0])
    axes = list(node.attrs["axes"]) or list(range(node.inputs[0].type.rank))
    op = _REDUCE[node.op]
    if op in ("All", "Any"):
        return [cx.g.op(op, [x, _i32(cx.g, axes)], {"Tidx": _ty("DT_INT32"),
                                                    "keep_dims": _b(node.attrs["keepdims"])},
                        "DT_BOOL")]
    return [_reduce_op(cx.g, op, x, axes, node.attrs["keepdims"])]


def _arg(op):
    def emit(cx, node):
        x = cx.x(node.inputs[0])
        out = _dt(node.attrs["output_type"])
        if out not in ("DT_INT32", "DT_INT64"):
            raise NotDirect(f"{node.op} output type {out}")
        dim = _i32(cx.g, node.attrs["axis"], f"{op}/dimension")
        return [cx.g.op(op, [x, dim], {"T": _ty(x.dt), "Tidx": _ty("DT_INT32"),
                                       "output_type": _ty(out)}, out)]
    return emit


def _cumsum(cx, node):
    a, x = node.attrs, cx.x(node.inputs[0])
    axis = _i32(cx.g, a["axis"] % node.inputs[0].type.rank, "Cumsum/axis")
    return [cx.g.op("Cumsum", [x, axis], {"T": _ty(x.dt), "Tidx": _ty("DT_INT32"),
                                         "exclusive": _b(a["exclusive"]),
                                         "reverse": _b(a["reverse"])}, x.dt)]


def _cumprod(cx, node):
    a, x = node.attrs, cx.x(node.inputs[0])
    axis = _i32(cx.g, a["axis"] % node.inputs[0].type.rank, "Cumprod/axis")
    return [cx.g.op("Cumprod", [x, axis], {"T": _ty(x.dt), "Tidx": _ty("DT_INT32"),
                                          "exclusive": _b(False),
                                          "reverse": _b(a["reverse"])}, x.dt)]


def _top_k(cx, node):
    k = node.attrs["k"]
    if k == -1:
        raise NotDirect("top_k with k = -1")
    x = cx.x(node.inputs[0])
    return cx.g.op("TopKV2", [x, _i32(cx.g, k, "TopKV2/k")],
                   {"T": _ty(x.dt), "sorted": _b(True)}, x.dt, 2,
                   out_dts=[x.dt, "DT_INT32"])


# quantization (float arithmetic, float codes as tf_lowering with float_codes=True)

def _param(g, node: Node, key: str, x_rank: int, dt: str) -> T:
    vals = np.asarray(node.attrs[key], np.float64)
    axis = node.attrs["axis"]
    if axis is None:
        return g.const(np.asarray(float(vals[0])), dt)
    axis %= x_rank
    if axis != x_rank - 1:
        shape = [1] * x_rank
        shape[axis] = -1
        vals = vals.reshape(shape)
    return g.const(vals, dt)


def _codes(g, node: Node, x: T, rank: int, qmin: int, qmax: int) -> T:
    if x.dt not in ("DT_FLOAT",):
        x = _cast_to(g, x, "DT_FLOAT")
    v = g.op("RealDiv", [x, _param(g, node, "scale", rank, "DT_FLOAT")], {"T": _ty(x.dt)},
             x.dt)
    av = _un(g, "Abs", v)
    fl = _un(g, "Floor", av)
    up = _cast_to(g, _bin(g, "GreaterEqual", _bin(g, "Sub", av, fl), _scalar(g, fl, 0.5)),
                  "DT_FLOAT")
    r = _bin(g, "Mul", _un(g, "Sign", v), _bin(g, "AddV2", fl, up))
    if np.any(np.asarray(node.attrs["zero_point"]) != 0):
        r = _bin(g, "AddV2", r, _param(g, node, "zero_point", rank, "DT_FLOAT"))
    return _bin(g, "Minimum", _bin(g, "Maximum", r, _scalar(g, r, qmin)), _scalar(g, r, qmax))


def _dequant(g, node: Node, q: T, rank: int, out_dt: str) -> T:
    if np.any(np.asarray(node.attrs["zero_point"]) != 0):
        q = _bin(g, "Sub", q, _param(g, node, "zero_point", rank, q.dt))
    y = _bin(g, "Mul", q, _param(g, node, "scale", rank, q.dt))
    return _cast_to(g, y, out_dt)


def _quantize(cx, node):
    dt = node.attrs["dtype"]
    if dt == DType.i32:
        raise NotDirect("quantize to i32")
    qmin, qmax = code_range(dt.bits, dt != DType.u8, node.attrs["narrow_range"])
    x = cx.x(node.inputs[0])
    if cx.savedmodel and x.dt != "DT_FLOAT":
        raise NotDirect(f"quantize of {x.dt}")
    codes = _codes(cx.g, node, x, node.inputs[0].type.rank, qmin, qmax)
    if cx.savedmodel:   # real integer codes, as tf_lowering without float_codes
        return [_cast_to(cx.g, codes, _dt(dt))]
    return [codes]


def _dequantize(cx, node):
    qv = node.inputs[0]
    out = _dt(node.attrs["dtype"])
    if out != "DT_FLOAT":
        raise NotDirect(f"dequantize to {out}")
    arr = cx.np(qv)
    if qv.type.dtype.bits > 16 and cx.savedmodel:
        # As tf_lowering without float_codes: 32/64-bit codes (biases) stay integer weights,
        # dequantized in float64 (float32 loses integers past 2^24).
        q = _cast_to(cx.g, cx.x(qv), "DT_DOUBLE")
        return [_dequant(cx.g, node, q, qv.type.rank, out)]
    if qv.type.dtype.bits > 16:
        if arr is None:
            raise NotDirect("dequantize of wide integer activations")
        return [cx.g.const(get_op("dequantize").kernel([np.asarray(arr)], node.attrs)[0], out)]
    q = _cast_to(cx.g, cx.x(qv), "DT_FLOAT")
    return [_dequant(cx.g, node, q, qv.type.rank, out)]


def _fake_quant(cx, node):
    a = node.attrs
    x = cx.x(node.inputs[0])
    if a["bits"] > 24:
        raise NotDirect("fake_quant wider than 24 bits")
    if cx.savedmodel and x.dt != "DT_FLOAT":
        raise NotDirect(f"fake_quant of {x.dt}")
    qmin, qmax = code_range(a["bits"], a["signed"], a["narrow_range"])
    rank = node.inputs[0].type.rank
    return [_dequant(cx.g, node, _codes(cx.g, node, x, rank, qmin, qmax), rank, x.dt)]


# shape

def _split(cx, node):
    g, a = cx.g, node.attrs
    x = cx.x(node.inputs[0])
    sizes = list(a["sizes"])
    if len(sizes) == 1:
        return [g.op("Identity", [x], {"T": _ty(x.dt)}, x.dt)]
    return g.op("SplitV", [x, _i32(g, sizes, "split/size_splits"),
                           _i32(g, a["axis"], "split/split_dim")],
                {"T": _ty(x.dt), "Tlen": _ty("DT_INT32"), "num_split": _i(len(sizes))},
                x.dt, len(sizes), name="split")


def _strided_slice(cx, node):
    a = node.attrs
    masks = {k: a[k] for k in ("begin_mask", "end_mask", "ellipsis_mask", "new_axis_mask",
                               "shrink_axis_mask")}
    return [_strided(cx.g, cx.x(node.inputs[0]), list(a["begin"]), list(a["end"]),
                     list(a["strides"]), **masks)]


def _pad(cx, node):
    g, a = cx.g, node.attrs
    x = cx.x(node.inputs[0])
    pads = [list(p) for p in a["pads"]]
    if not pads:
        return [g.op("Identity", [x], {"T": _ty(x.dt)}, x.dt)]
    paddings = _i32(g, pads, "Pad/paddings")
    if a["mode"] == "constant":
        value = a["value"]
        if x.dt in _INT_DT or x.dt == "DT_BOOL":
            value = np.asarray(value).astype(_NP_OF_DT[x.dt]).item()
        attrs = {"T": _ty(x.dt), "Tpaddings": _ty("DT_INT32")}
        if value == 0:
            return [g.op("Pad", [x, paddings], attrs, x.dt)]
        return [g.op("PadV2", [x, paddings, g.const(np.asarray(value), x.dt,
                                                     "Pad/constant_values")], attrs, x.dt)]
    return [g.op("MirrorPad", [x, paddings], {"T": _ty(x.dt), "Tpaddings": _ty("DT_INT32"),
                                              "mode": _s(a["mode"].upper())}, x.dt)]


def _gather(cx, node):
    g, a = cx.g, node.attrs
    x, idx = cx.x(node.inputs[0]), cx.x(node.inputs[1])
    return [g.op("GatherV2", [x, idx, _i32(g, a["axis"], "GatherV2/axis")],
                 {"Taxis": _ty("DT_INT32"), "Tindices": _ty(idx.dt), "Tparams": _ty(x.dt),
                  "batch_dims": _i(a["batch_dims"])}, x.dt)]


def _squeeze(cx, node):
    axes = list(node.attrs["axes"])
    if not axes:
        axes = [i for i, d in enumerate(node.inputs[0].type.shape) if d == 1]
    x = cx.x(node.inputs[0])
    return [cx.g.op("Squeeze", [x], {"T": _ty(x.dt), "squeeze_dims": _ints(axes)}, x.dt)]


def _scatter_nd_update(cx, node):
    g = cx.g
    x, indices, updates = (cx.x(v) for v in node.inputs)
    # TF.js's TensorScatterUpdate writes into its input: x * (1 - hit) + ScatterNd(updates).
    shape = _shape(g, x, indices.dt)
    tattrs = {"T": _ty(updates.dt), "Tindices": _ty(indices.dt)}
    ones = g.op("OnesLike", [updates], {"T": _ty(updates.dt)}, updates.dt)
    hit = _bin(g, "Minimum", g.op("ScatterNd", [indices, ones, shape], tattrs, updates.dt),
               _scalar(g, updates, 1))
    keep = _bin(g, "Mul", x, _bin(g, "Sub", _scalar(g, hit, 1), hit))
    return [_bin(g, "AddV2", keep, g.op("ScatterNd", [indices, updates, shape], tattrs,
                                        updates.dt))]


def _scatter_nd_add(cx, node):
    g = cx.g
    x, indices, updates = (cx.x(v) for v in node.inputs)
    shape = _shape(g, x, indices.dt)
    s = g.op("ScatterNd", [indices, updates, shape],
             {"T": _ty(updates.dt), "Tindices": _ty(indices.dt)}, updates.dt)
    return [_bin(g, "AddV2", x, s)]


def _simple(op: str, const_name: str, values: Callable, extra: Callable | None = None):
    """x plus one int32 Const operand built from the attrs (Reshape, Transpose, Tile, ...)."""
    def emit(cx, node):
        x = cx.x(node.inputs[0])
        attrs = {"T": _ty(x.dt)}
        if extra is not None:
            attrs.update(extra())
        return [cx.g.op(op, [x, _i32(cx.g, values(node), const_name)], attrs, x.dt)]
    return emit


def _sized(op: str, extra: Callable[[list[T]], dict]):
    """A run-time shape op: the data operand and its size tensors, passed as they are."""
    def emit(cx, node):
        ts = [cx.x(v) for v in node.inputs]
        return [cx.g.op(op, ts, {"T": _ty(ts[0].dt), **extra(ts)}, ts[0].dt)]
    return emit


def _range(cx, node):
    ts = [cx.x(v) for v in node.inputs]
    return [cx.g.op("Range", ts, {"Tidx": _ty(ts[0].dt)}, ts[0].dt)]


def _dynamic_pad(cx, node):
    g, a = cx.g, node.attrs
    x, pads = cx.x(node.inputs[0]), cx.x(node.inputs[1])
    attrs = {"T": _ty(x.dt), "Tpaddings": _ty(pads.dt)}
    if a["mode"] != "constant":
        return [g.op("MirrorPad", [x, pads], {**attrs, "mode": _s(a["mode"].upper())}, x.dt)]
    value = _cast_to(g, g.const(np.asarray(a["value"], np.float32), "DT_FLOAT"), x.dt)
    return [g.op("PadV2", [x, pads, value], attrs, x.dt)]


def _dynamic_strided_slice(cx, node):
    a = node.attrs
    ts = [cx.x(v) for v in node.inputs]
    attrs = {"Index": _ty(ts[1].dt), "T": _ty(ts[0].dt)}
    for k in ("begin_mask", "ellipsis_mask", "end_mask", "new_axis_mask", "shrink_axis_mask"):
        attrs[k] = _i(a[k])
    return [cx.g.op("StridedSlice", ts, attrs, ts[0].dt)]


def _cumulative(cx, node):
    """cummax / cummin: the log-depth scan of slices, maximum / minimum and concat."""
    from .common import log_scan

    g, a, v = cx.g, node.attrs, node.inputs[0]
    x, axis, rank = cx.x(v), a["axis"] % v.type.rank, v.type.rank
    n = v.type.shape[axis]
    if not isinstance(n, int):
        raise NotDirect(f"{node.op} along a dynamic axis")

    def take(t, begin, size):
        b, sz = [0] * rank, [-1] * rank
        b[axis], sz[axis] = begin, size
        return g.op("Slice", [t, _i32(g, b, "Slice/begin"), _i32(g, sz, "Slice/size")],
                    {"Index": _ty("DT_INT32"), "T": _ty(t.dt)}, t.dt)

    combine = (lambda p, q: _bin(g, "Maximum", p, q)) if node.op == "cummax" else \
        (lambda p, q: _bin(g, "Minimum", p, q))
    return [log_scan(x, n, a["reverse"], take, combine, lambda parts, last: _concat(g, parts,
                                                                                     axis))]


def _dynamic_update_slice(cx, node):
    """`update` written into `x` at clamped starts: padded to x's shape and selected by a
    padded mask (as tf_control._dynamic_update_slice: Pad, Greater and SelectV2)."""
    g = cx.g
    x, update, start = (cx.x(v) for v in node.inputs)
    xs, us = _shape(g, x), _shape(g, update)
    begin = _cast_to(g, start, "DT_INT32")
    begin = _bin(g, "Maximum", _bin(g, "Minimum", begin, _bin(g, "Sub", xs, us)),
                 _i32(g, 0, "clip_by_value/y"))
    end = _bin(g, "Sub", _bin(g, "Sub", xs, us), begin)
    pads = g.op("Pack", [begin, end], {"N": _i(2), "T": _ty("DT_INT32"), "axis": _i(1)},
                "DT_INT32", name="stack")
    first = _strided(g, us, [0], [1], [1], begin_mask=1)
    ones = _bin(g, "Mul", g.op("OnesLike", [first], {"T": _ty("DT_INT32")}, "DT_INT32"),
                g.op("Fill", [us, _i32(g, 1, "ones/Const")],
                     {"T": _ty("DT_INT32"), "index_type": _ty("DT_INT32")}, "DT_INT32",
                     name="ones"))
    pad_attrs = {"Tpaddings": _ty("DT_INT32")}
    mask = _bin(g, "Greater", g.op("Pad", [ones, pads], {"T": _ty("DT_INT32"), **pad_attrs},
                                   "DT_INT32"), _i32(g, 0))
    if x.dt == "DT_BOOL":
        p = g.op("Pad", [_cast_to(g, update, "DT_INT32"), pads],
                 {"T": _ty("DT_INT32"), **pad_attrs}, "DT_INT32")
        placed = _bin(g, "Greater", p, _i32(g, 0))
    else:
        placed = g.op("Pad", [update, pads], {"T": _ty(update.dt), **pad_attrs}, update.dt)
    return [g.op("SelectV2", [mask, placed, x], {"T": _ty(x.dt)}, x.dt)]


DIRECT: dict[str, Callable] = {
    **{op: _unary for op in _UNARY}, **{op: _binary for op in _BINARY},
    "div": _div, "gelu": _gelu, "elu": _elu, "leaky_relu": _leaky_relu,
    "hard_swish": _hard_swish, "hard_sigmoid": _hard_sigmoid, "softplus": _softplus,
    "clip": _clip, "cast": _cast, "where": _where,
    "conv2d": _conv2d, "depthwise_conv2d": _depthwise, "conv2d_transpose": _conv2d_transpose,
    "matmul": _matmul, "max_pool2d": _pool("MaxPool"), "avg_pool2d": _pool("AvgPool"),
    "softmax": _softmax("Softmax"), "log_softmax": _softmax("LogSoftmax"),
    "batch_norm": _batch_norm, "layer_norm": _layer_norm, "resize": _resize,
    **{op: _reduce for op in _REDUCE},
    "argmax": _arg("ArgMax"), "argmin": _arg("ArgMin"), "cumsum": _cumsum,
    "cumprod": _cumprod, "cummax": _cumulative, "cummin": _cumulative, "top_k": _top_k,
    "quantize": _quantize, "dequantize": _dequantize, "fake_quant": _fake_quant,
    "reshape": _simple("Reshape", "Reshape/shape", lambda n: list(n.attrs["shape"]),
                       lambda: {"Tshape": _ty("DT_INT32")}),
    "transpose": _simple("Transpose", "transpose/perm", lambda n: list(n.attrs["perm"]),
                         lambda: {"Tperm": _ty("DT_INT32")}),
    "concat": lambda cx, n: [_concat(cx.g, [cx.x(v) for v in n.inputs], n.attrs["axis"])],
    "split": _split,
    "slice": lambda cx, n: [cx.g.op("Slice", [
        cx.x(n.inputs[0]), _i32(cx.g, list(n.attrs["begin"]), "Slice/begin"),
        _i32(cx.g, list(n.attrs["size"]), "Slice/size")],
        {"Index": _ty("DT_INT32"), "T": _ty(cx.x(n.inputs[0]).dt)}, cx.x(n.inputs[0]).dt)],
    "strided_slice": _strided_slice, "pad": _pad, "gather": _gather,
    "broadcast_to": _simple("BroadcastTo", "BroadcastTo/shape",
                            lambda n: list(n.attrs["shape"]),
                            lambda: {"Tidx": _ty("DT_INT32")}),
    "squeeze": _squeeze,
    "gather_nd": lambda cx, n: [cx.g.op("GatherNd", [cx.x(n.inputs[0]), cx.x(n.inputs[1])], {
        "Tindices": _ty(cx.x(n.inputs[1]).dt), "Tparams": _ty(cx.x(n.inputs[0]).dt)},
        cx.x(n.inputs[0]).dt)],
    "scatter_nd_update": _scatter_nd_update, "scatter_nd_add": _scatter_nd_add,
    "expand_dims": _simple("ExpandDims", "ExpandDims/dim", lambda n: n.attrs["axis"],
                           lambda: {"Tdim": _ty("DT_INT32")}),
    "tile": _simple("Tile", "Tile/multiples", lambda n: list(n.attrs["multiples"]),
                    lambda: {"Tmultiples": _ty("DT_INT32")}),
    "reverse": _simple("ReverseV2", "ReverseV2/axis", lambda n: sorted(
        {a % n.inputs[0].type.rank for a in n.attrs["axes"]}),
        lambda: {"Tidx": _ty("DT_INT32")}),
    "shape_of": lambda cx, n: [_shape(cx.g, cx.x(n.inputs[0]), _dt(n.attrs["dtype"]))],
    "dynamic_reshape": _sized("Reshape", lambda ts: {"Tshape": _ty(ts[1].dt)}),
    "dynamic_broadcast_to": _sized("BroadcastTo", lambda ts: {"Tidx": _ty(ts[1].dt)}),
    "dynamic_tile": _sized("Tile", lambda ts: {"Tmultiples": _ty(ts[1].dt)}),
    "dynamic_slice": _sized("Slice", lambda ts: {"Index": _ty(ts[1].dt)}),
    "range": _range,
    "nonzero": lambda cx, n: [cx.g.op("Where", [cx.x(n.inputs[0])],
                                      {"T": _ty(cx.x(n.inputs[0]).dt)}, "DT_INT64")],
    "dynamic_pad": _dynamic_pad, "dynamic_strided_slice": _dynamic_strided_slice,
    "dynamic_update_slice": _dynamic_update_slice,
}

DIRECT_OPS = frozenset(DIRECT)
# IR ops the TF path lowers that the direct writer does not (yet): a module holding one goes
# the TF way (see `write_tfjs`). Control flow needs modelTopology.library functions.
FALLBACK_OPS = frozenset({"while", "if", "scan", "conv3d",
                          "conv3d_transpose", "erf_inv", "bitcast", "bitwise_and",
                          "bitwise_or", "bitwise_xor", "bitwise_not", "left_shift",
                          "right_shift"})


# -- whole graph -------------------------------------------------------------------------------

def prepared(module: Module) -> Module:
    """`module` as the TF path lowers it for TF.js (tf_lowering._f32_module(float_codes=True)):
    recurrent ops and scans expanded, bitwise ops as arithmetic, every float computed in f32."""
    module = with_bitwise_expanded(with_recurrent_expanded(module), TFJS_MISSING)
    return widened(without_scans(module), NON_F32_FLOATS)


def _emit(graph: Graph, cx: _Ctx) -> None:
    g = cx.g
    for node in graph:
        if node.op == "constant":
            continue
        emit = DIRECT.get(node.op)
        if emit is None:
            raise NotDirect(f"op '{node.op}' has no direct TF.js mapping", node)
        for v in (*node.inputs, *node.outputs):
            if v.type.dtype not in DT:
                raise NotDirect(f"no TF dtype for {v.type.dtype}", node)
        g.scope = _sanitize(node.scope) if node.scope else ""
        try:
            results = emit(cx, node)
        except NotDirect as err:
            err.node = err.node or node
            raise
        finally:
            g.scope = ""
        if len(results) != len(node.outputs):
            raise NotDirect(f"{len(results)} results for {len(node.outputs)} outputs", node)
        for v, t in zip(node.outputs, results):
            cx.env[id(v)] = t


def build_graph(module: Module, *, savedmodel: bool = False, weights: set | None = None):
    """The GraphDef (proto3-JSON dict, Const values moved out), {Const name: value}, the
    signature dict and the names of the integer-code Consts ({name: NumPy dtype name}) for
    `module.main`, already `prepared`. Raises NotDirect. savedmodel=True (the SavedModel
    writer, `savedmodel_direct`): TF ops TF.js lacks are allowed (integer TruncateDiv), and
    integer Consts feeding Casts stay as they are."""
    graph = module.main
    problems: list[Diagnostic] = []
    in_names = signature_names(module, "input_names", graph.inputs, "input", problems,
                               transform=_sanitize)
    out_names = signature_names(module, "output_names", graph.outputs, "output", problems,
                                transform=_sanitize)
    if problems:
        raise NotDirect("; ".join(p.message for p in problems))
    g = _Builder()
    cx = _Ctx(g, savedmodel)
    # The frozen TF function's output nodes are Identity, Identity_1, ... in sorted-key order.
    order = sorted(range(len(out_names)), key=lambda i: out_names[i])
    out_nodes = {i: ("Identity" if k == 0 else f"Identity_{k}") for k, i in enumerate(order)}
    g.taken.update(out_nodes.values())
    sig_in = {}
    for v, name in zip(graph.inputs, in_names):
        dt = _dt(v.type.dtype)
        if name in g.taken:
            raise NotDirect(f"input name {name!r} clashes with an output node name")
        g.taken.add(name)
        g.nodes.append({"name": name, "op": "Placeholder",
                        "attr": {"dtype": _ty(dt), "shape": {"shape": _shape_json(
                            v.type.shape)}}})
        cx.env[id(v)] = T(name, dt)
        sig_in[name] = {"dtype": dt, "name": f"{name}:0",
                        "tensorShape": _shape_json(v.type.shape)}
    _emit(graph, cx)
    sig_out = {}
    finals = []
    for i, (v, name) in enumerate(zip(graph.outputs, out_names)):
        t = cx.x(v)
        if t.is_float and not v.type.dtype.is_float:
            t = _cast_to(g, t, "DT_INT32")   # float codes leave as integers
        finals.append((i, t))
        sig_out[name] = {"dtype": t.dt, "name": f"{out_nodes[i]}:0",
                         "tensorShape": _shape_json(v.type.shape)}
    for i, t in sorted(finals, key=lambda it: out_nodes[it[0]]):
        g.nodes.append({"name": out_nodes[i], "op": "Identity", "input": [t.ref],
                        "attr": {"T": _ty(t.dt)}})
    keep = set(in_names) | set(out_nodes.values())
    codes = {} if savedmodel else _codes_as_float(g, keep)
    if weights is not None:
        weights.update(g.weights)
    nodes = _clean(g.nodes, keep)
    return nodes, g.values, {"inputs": sig_in, "outputs": sig_out}, codes


_CODE_DTS = {"DT_INT8": "int8", "DT_UINT8": "uint8", "DT_INT16": "int16",
             "DT_UINT16": "uint16"}


def _node_name(ref: str) -> str:
    return ref.lstrip("^").split(":")[0]


def _codes_as_float(g: _Builder, keep: set[str]) -> dict[str, str]:
    """As tfjs._codes_as_float: an int8/uint8/int16/uint16 Const whose only consumers are Casts
    to float32 becomes a float32 Const of its (exact) codes and those Casts Identity."""
    users: dict[str, list] = {}
    for n in g.nodes:
        for ref in n.get("input", ()):
            users.setdefault(_node_name(ref), []).append((n, ref))
    done: dict[str, str] = {}
    for n in g.nodes:
        if n["op"] != "Const" or n["name"] in keep:
            continue
        dt = n["attr"]["dtype"]["type"]
        if dt not in _CODE_DTS:
            continue
        uses = users.get(n["name"], [])
        if not uses or any(u["op"] != "Cast" or u["attr"]["DstT"]["type"] != "DT_FLOAT"
                           for u, _ in uses):
            continue
        arr = g.values[n["name"]]
        g.values[n["name"]] = arr.astype(np.float32)
        n["attr"]["dtype"] = _ty("DT_FLOAT")
        n["attr"]["value"]["tensor"]["dtype"] = "DT_FLOAT"
        for u, _ in uses:
            u["op"] = "Identity"
            u["attr"] = {"T": _ty("DT_FLOAT")}
        done[n["name"]] = arr.dtype.name
    return done


def _clean(nodes: list[dict], keep: set[str]) -> list[dict]:
    """Bypasses Identity nodes (not inputs or outputs), then drops every node the outputs and
    inputs do not need; order kept."""
    forward = {n["name"]: n["input"][0] for n in nodes
               if n["op"] == "Identity" and n["name"] not in keep}

    def resolve(ref: str) -> str:
        name, _, port = ref.partition(":")
        while name in forward and port in ("", "0"):
            ref = forward[name]
            name, _, port = ref.partition(":")
        return ref

    out = []
    for n in nodes:
        if n["name"] in forward:
            continue
        if "input" in n:
            n["input"] = [resolve(r) for r in n["input"]]
        out.append(n)
    by_name = {n["name"]: n for n in out}
    live: set[str] = set()
    stack = [k for k in keep if k in by_name]
    while stack:
        name = stack.pop()
        if name in live:
            continue
        live.add(name)
        stack.extend(_node_name(r) for r in by_name[name].get("input", ()))
    return [n for n in out if n["name"] in live]


def direct_problems(module: Module) -> list[Diagnostic]:
    """Why the direct writer cannot take `module` (empty when it can): the first node it has
    no mapping for."""
    try:
        build_graph(prepared(module))
    except NotDirect as err:
        n = err.node
        if n is None:
            return [Diagnostic(str(err))]
        return [Diagnostic(str(err), node=n.describe(), scope=n.scope, loc=n.loc)]
    return []
