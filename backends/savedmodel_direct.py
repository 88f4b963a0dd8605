"""The SavedModel's forward function built from a GraphDef written straight from the IR.

    from tensorforge.backends.savedmodel_direct import NotDirect, build_direct
    weights, concrete = build_direct(module)   # NotDirect: take the tf_lowering path

`backends/tf_lowering.py` builds the SavedModel's function op by op through TF's Python API:
every TF op costs a Python `op_def_library` call, twice (the dry run that lists problems,
then the tf.function trace). For ConvNeXtTiny that is about 15,000 ops and most of the
conversion time. Here the IR is mapped to NodeDefs by the TF.js direct writer's mapping
(`tfjs_direct.build_graph`: the same TF ops and attributes as `tf_lowering`, with shapes and
dtypes from the IR types; a grouped conv with one input channel per group is one
`DepthwiseConv2dNative`, not C convs and a concat), the NodeDefs become one GraphDef proto,
and the GraphDef is imported in one call (`tf.graph_util.import_graph_def`, C++ graph
construction and shape inference) into the tf.function the SavedModel serves. Its inputs are
mapped to the function's arguments and the Consts of the model's constants past
`VARIABLE_MIN_ELEMENTS` elements (tf_lowering's variables, named alike) to reads of
`tf.Variable`s, so the artifact is the same kind of SavedModel as
before: a `serving_default` signature, a `TFModel` root whose `weights` are the variables,
the values in the checkpoint under `variables/`.

Not covered (`NotDirect`; `write_savedmodel` then takes the `tf_lowering` path and records
why): control flow (`while`, `if`, scans that stay loops), the ops in
`tfjs_direct.FALLBACK_OPS`, the trainable form (its gradient checks need the op-by-op trace)
and several modules sharing weights (`write_savedmodel_signatures`). The mapping runs in its
SavedModel mode (`build_graph(savedmodel=True)`): `quantize` gives integer codes (int8, int16,
... as `tf_lowering` without float_codes), integer `div` is TruncateDiv, integer weights keep
their dtype. A GraphDef TensorFlow refuses at import (an attribute or
shape combination a kernel rejects) also falls back, so that the TF path reports it with its
node.
"""

from __future__ import annotations

import base64

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import attr_value_pb2, graph_pb2, tensor_pb2, types_pb2

from ..ir.graph import Module
from . import tfjs_direct
from .tfjs_direct import NotDirect
from .tf_lowering import TFModel, _f32_module, _static_shape

__all__ = ["NotDirect", "build_direct", "graph_def"]


def _dtype_enum(name: str) -> int:
    return types_pb2.DataType.Value(name)


def _shape_proto(js: dict, proto) -> None:
    for d in js.get("dim", ()):
        proto.dim.add(size=int(d["size"]))
    if js.get("unknownRank"):
        proto.unknown_rank = True


def _set_attr(attr: attr_value_pb2.AttrValue, js: dict) -> None:
    """One proto3-JSON AttrValue (as tfjs_direct writes them) into `attr`."""
    ((kind, val),) = js.items()
    if kind == "s":
        attr.s = base64.b64decode(val)
    elif kind == "i":
        attr.i = int(val)
    elif kind == "f":
        attr.f = float(val)
    elif kind == "b":
        attr.b = bool(val)
    elif kind == "type":
        attr.type = _dtype_enum(val)
    elif kind == "shape":
        _shape_proto(val, attr.shape)
    elif kind == "list":
        lst = attr.list
        lst.SetInParent()
        for k, items in val.items():
            if k == "i":
                lst.i.extend(int(x) for x in items)
            elif k == "f":
                lst.f.extend(float(x) for x in items)
            elif k == "b":
                lst.b.extend(bool(x) for x in items)
            elif k == "s":
                lst.s.extend(base64.b64decode(x) for x in items)
            elif k == "type":
                lst.type.extend(_dtype_enum(x) for x in items)
            elif k == "shape":
                for s in items:
                    _shape_proto(s, lst.shape.add())
            else:
                raise NotDirect(f"attribute list of {k!r}")
    else:
        raise NotDirect(f"attribute kind {kind!r}")


def _tensor_proto(arr: np.ndarray, dt: str) -> tensor_pb2.TensorProto:
    proto = tensor_pb2.TensorProto(dtype=_dtype_enum(dt))
    for d in arr.shape:
        proto.tensor_shape.dim.add(size=int(d))
    if arr.dtype == np.bool_:
        proto.bool_val.extend(arr.reshape(-1).tolist())
    else:
        proto.tensor_content = np.ascontiguousarray(arr).tobytes()
    return proto


def graph_def(nodes: list[dict], values: dict[str, np.ndarray], variables: set[str]
              ) -> graph_pb2.GraphDef:
    """The GraphDef of tfjs_direct NodeDefs: Consts get their values from `values`, except
    those named in `variables`, which become Placeholders (mapped to variable reads)."""
    gd = graph_pb2.GraphDef()
    gd.versions.producer = tfjs_direct.GRAPH_DEF_PRODUCER
    for n in nodes:
        node = gd.node.add(name=n["name"], op=n["op"])
        node.input.extend(n.get("input", ()))
        attrs = n.get("attr", {})
        if n["op"] == "Const":
            dt = attrs["dtype"]["type"]
            arr = values[n["name"]]
            if n["name"] in variables:
                node.op = "Placeholder"
                node.attr["dtype"].type = _dtype_enum(dt)
                for d in arr.shape:
                    node.attr["shape"].shape.dim.add(size=int(d))
                node.attr["shape"].shape.SetInParent()
            else:
                node.attr["dtype"].type = _dtype_enum(dt)
                node.attr["value"].tensor.CopyFrom(_tensor_proto(arr, dt))
            continue
        for key, js in attrs.items():
            _set_attr(node.attr[key], js)
    return gd


def build_direct(module: Module):
    """(TFModel holding the variables, the traced concrete function of the serving
    signature: named TensorSpec inputs, a dict of named outputs) for `module.main`. Raises
    NotDirect (with the node) when this path does not cover the module."""
    module = _f32_module(module, float_codes=False)
    named: set[str] = set()
    nodes, values, sig, _ = tfjs_direct.build_graph(module, savedmodel=True, weights=named)
    # The model's constants past VARIABLE_MIN_ELEMENTS are variables, as in tf_lowering;
    # constants a mapping computed (per-channel quantization scales, ...) stay Consts.
    big = [n["name"] for n in nodes if n["op"] == "Const" and n["name"] in named]
    gd = graph_def(nodes, values, set(big))
    variables = [tf.Variable(values[name], name=name, trainable=False) for name in big]
    weights = TFModel(variables)

    in_names = list(sig["inputs"])
    graph = module.main
    specs = [tf.TensorSpec(_static_shape(v),
                           tf.as_dtype(_dtype_enum(sig["inputs"][name]["dtype"])), name=name)
             for v, name in zip(graph.inputs, in_names)]
    outputs = list(sig["outputs"].items())   # signature name -> {"name": "Identity_k:0"}

    def forward(*args):
        feed = {f"{name}:0": arg for name, arg in zip(in_names, args)}
        for name, var in zip(big, variables):
            feed[f"{name}:0"] = tf.convert_to_tensor(var)
        got = tf.graph_util.import_graph_def(
            gd, input_map=feed, return_elements=[o["name"] for _, o in outputs], name="g")
        return {name: tf.identity(t, name=name) for (name, _), t in zip(outputs, got)}

    try:
        concrete = tf.function(forward, input_signature=specs,
                               autograph=False).get_concrete_function()
    except (ValueError, TypeError, tf.errors.OpError) as err:
        raise NotDirect(f"TensorFlow refused the GraphDef: {type(err).__name__}: "
                        f"{str(err).splitlines()[0] if str(err) else ''}") from err
    concrete._tensorforge_tf_module = weights
    return weights, concrete

