"""TF.js backend: writes a TF.js graph model (`model.json` + `group1-shard{i}of{n}.bin`).

    from tensorforge.backends.tfjs import write_tfjs
    write_tfjs(module, "out/web_model")                         # float32 weights
    write_tfjs(module, "out/web_model", quantize="uint8")       # ~1/4 the weight bytes
    write_tfjs(module, "out/web_model", quantize="float16", quantize_globs=["*/kernel*"])

Two paths (docs/design/tfjs.md): by default the graph is written straight from the IR
(`backends/tfjs_direct.py`: the same TF ops, no TensorFlow imported); a module with an op that
has no direct mapping (control flow, ...) goes the TensorFlow way, with a note saying why.

TensorFlow path: the module is lowered to a `tf.function` of plain TF ops
(`backends/tf_lowering.py`), frozen (`convert_variables_to_constants_v2`), cleaned of
Identity/NoOp noise, checked op by op
against the TF.js converter's allowlist (every offender is reported at once), and written the
way `tensorflowjs_converter --output_format=tfjs_graph_model` writes it: the GraphDef as proto3
JSON with the Const nodes' tensor contents moved into the weights manifest, 64-bit types
narrowed to 32-bit, optional per-tensor uint8/uint16 affine or float16 weight compression
(tfjs-converter/python/tensorflowjs/quantization.py), shards of at most 4 MiB.

Quantized (QDQ) IR: TF.js has no int8/int4/int16 tensors, so the module is lowered with
`float_codes=True` (activation codes stay integral float32; rounding is the exact half-away-
from-zero formulation, never TF.js's half-to-even Round). Integer weight codes are stored
losslessly at 1 byte per element (2 for 16-bit) through the manifest's `quantization` entry
with scale 1 and min = the dtype's minimum (the loader computes q * scale + min): an int8/uint8/
int4 (as int8)/int16 Const that only feeds Casts to float32 (the dequantize) becomes a float32
Const of its codes and the Casts disappear; any other small-integer Const is an int32 weight
stored the same way. float16 Consts (fp16 weights) are stored as float16.

The `tensorflowjs` pip package is deliberately not used (see REFERENCES.md: it pins an old TF and
fails to import here). The output is a pure function of the module: no timestamps, keys sorted
where order is free, weights in GraphDef order, so the same module gives byte-identical files.
The directory is written atomically: into a temporary sibling, then renamed into place; a failed
write leaves nothing behind and never touches an existing directory.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import tempfile
from typing import Any, Iterable, Sequence

import numpy as np

from ..ir.errors import ConversionError, Diagnostic
from ..ir.graph import Module
from ..version import package_version
from .common import swap_directory, write_chunked

__all__ = ["SHARD_BYTES", "TFJS_OPS", "quantize_weight", "tfjs_problems", "weight_entries",
           "write_tfjs", "write_tfjs_function"]

SHARD_BYTES = 4 * 1024 * 1024   # tensorflowjs write_weights: shard_size_bytes = 4 MiB
QUANTIZE_DTYPES = ("uint8", "uint16", "float16")

# The TF ops the TF.js graph-model runtime executes: every `tfOpName` of
# tfjs-converter/python/tensorflowjs/op_list/*.json (identical to the op mappers shipped in
# @tensorflow/tfjs-converter 4.22.0, dist/operations/op_list/*.js, which tests/js pins). The
# converter refuses any other op; so do we, before writing anything.
TFJS_OPS = frozenset({
    # arithmetic
    "Add", "AddN", "AddV2", "BiasAdd", "Div", "DivNoNan", "FloorDiv", "FloorMod", "Maximum",
    "Minimum", "Mod", "Mul", "Pow", "RealDiv", "SquaredDifference", "Sub",
    # basic_math
    "Abs", "Acos", "Acosh", "Asin", "Asinh", "Atan", "Atan2", "Atanh", "Ceil", "ClipByValue",
    "Complex", "ComplexAbs", "Cos", "Cosh", "Elu", "Erf", "Exp", "Expm1", "Floor", "Imag",
    "IsFinite", "IsInf", "IsNan", "LeakyRelu", "Log", "Log1p", "Neg", "Prelu", "Real",
    "Reciprocal", "Relu", "Relu6", "Round", "Rsqrt", "Selu", "Sigmoid", "Sign", "Sin", "Sinh",
    "Softplus", "Sqrt", "Square", "Tan", "Tanh",
    # control
    "EmptyTensorList", "Enter", "Exit", "If", "LoopCond", "Merge", "NextIteration",
    "StatelessIf", "StatelessWhile", "Switch", "TensorArrayCloseV3", "TensorArrayConcatV3",
    "TensorArrayGatherV3", "TensorArrayReadV3", "TensorArrayScatterV3", "TensorArraySizeV3",
    "TensorArraySplitV3", "TensorArrayV3", "TensorArrayWriteV3", "TensorListConcat",
    "TensorListConcatV2", "TensorListFromTensor", "TensorListGather", "TensorListGetItem",
    "TensorListLength", "TensorListPopBack", "TensorListPushBack", "TensorListReserve",
    "TensorListResize", "TensorListScatter", "TensorListScatterV2", "TensorListSetItem",
    "TensorListSplit", "TensorListStack", "While",
    # convolution
    "AvgPool", "AvgPool3D", "Conv1D", "Conv2D", "Conv2DBackpropInput", "Conv3D",
    "DepthwiseConv2d", "DepthwiseConv2dNative", "Dilation2D", "FusedDepthwiseConv2dNative",
    "MaxPool", "MaxPool3D", "MaxPoolWithArgmax", "_FusedConv2D",
    # creation
    "Fill", "LinSpace", "Multinomial", "OneHot", "Ones", "OnesLike", "RandomStandardNormal",
    "RandomUniform", "RandomUniformInt", "Range", "TruncatedNormal", "Zeros", "ZerosLike",
    # dynamic
    "ListDiff", "NonMaxSuppressionV2", "NonMaxSuppressionV3", "NonMaxSuppressionV4",
    "NonMaxSuppressionV5", "Where",
    # evaluation
    "LowerBound", "TopKV2", "Unique", "UniqueV2", "UpperBound",
    # graph
    "Const", "FakeQuantWithMinMaxVars", "Identity", "IdentityN", "NoOp", "Placeholder",
    "PlaceholderWithDefault", "Print", "Rank", "Shape", "ShapeN", "Size", "Snapshot",
    "StopGradient",
    # hash_table
    "HashTable", "HashTableV2", "InitializeTable", "InitializeTableV2", "LookupTableFind",
    "LookupTableFindV2", "LookupTableImport", "LookupTableImportV2", "LookupTableSize",
    "LookupTableSizeV2",
    # image
    "CropAndResize", "ImageProjectiveTransformV3", "ResizeBilinear", "ResizeNearestNeighbor",
    # logical
    "BitwiseAnd", "Equal", "Greater", "GreaterEqual", "Less", "LessEqual", "LogicalAnd",
    "LogicalNot", "LogicalOr", "NotEqual", "Select", "SelectV2",
    # matrices
    "BatchMatMul", "BatchMatMulV2", "Einsum", "MatMul", "MatrixBandPart", "Transpose",
    "_FusedMatMul",
    # normalization
    "EuclideanNorm", "FusedBatchNorm", "FusedBatchNormV2", "FusedBatchNormV3", "LRN",
    "LogSoftmax", "Softmax",
    # ragged
    "RaggedGather", "RaggedRange", "RaggedTensorToTensor",
    # reduction
    "All", "Any", "ArgMax", "ArgMin", "Bincount", "Cumprod", "Cumsum", "DenseBincount", "Max",
    "Mean", "Min", "Prod", "Sum",
    # slice_join
    "Concat", "ConcatV2", "Gather", "GatherNd", "GatherV2", "Pack", "Reverse", "ReverseV2",
    "ScatterNd", "Slice", "SparseToDense", "Split", "SplitV", "StridedSlice",
    "TensorScatterUpdate", "Tile", "Unpack",
    # sparse
    "SparseFillEmptyRows", "SparseReshape", "SparseSegmentMean", "SparseSegmentSum",
    # spectral
    "FFT", "IFFT", "IRFFT", "RFFT",
    # string
    "StaticRegexReplace", "StringNGrams", "StringSplit", "StringToHashBucketFast",
    # transformation
    "BatchToSpaceND", "BroadcastArgs", "BroadcastTo", "Cast", "DepthToSpace", "EnsureShape",
    "ExpandDims", "MirrorPad", "Pad", "PadV2", "Reshape", "SpaceToBatchND", "Squeeze",
})

# Weight dtypes TF.js stores (WeightsManifestEntry.dtype) for NumPy kinds; everything else is
# narrowed first: 64-bit and small integers to int32, float64/float16/bfloat16 to float32.
_WEIGHT_DTYPES = {np.dtype(np.float32): "float32", np.dtype(np.int32): "int32",
                  np.dtype(np.bool_): "bool"}

# Integer dtypes stored losslessly at 1-2 bytes per element: NumPy dtype name -> (loader `min`
# = the dtype's minimum, manifest quantization dtype, NumPy storage dtype).
_CODE_STORAGE = {"int8": (-128, "uint8", np.uint8), "uint8": (0, "uint8", np.uint8),
                 "int16": (-32768, "uint16", np.uint16), "uint16": (0, "uint16", np.uint16)}

# TensorProto fields holding values; cleared from Const nodes once the value is a weight
# (tensorflowjs.converters.tf_saved_model_conversion_v2.CLEARED_TENSOR_FIELDS).
_CLEARED_TENSOR_FIELDS = ("tensor_content", "half_val", "float_val", "double_val", "int_val",
                          "string_val", "scomplex_val", "int64_val", "bool_val",
                          "resource_handle_val", "variant_val", "uint32_val", "uint64_val")

_ARTIFACT_FILE = re.compile(r"(model\.json|group\d+-shard\d+of\d+\.bin)\Z")


# -- lowering ----------------------------------------------------------------------------------

def _lowering():
    from . import tf_lowering  # imports TensorFlow: keep it off the package import path

    return tf_lowering


def tfjs_problems(module: Module) -> list[Diagnostic]:
    """Every reason `module` cannot be written as TF.js (empty when it can): nothing when the
    direct writer covers it, else IR nodes with no TF lowering, then TF ops outside the TF.js
    allowlist."""
    from .tfjs_direct import direct_problems

    if not direct_problems(module):
        return []
    problems = list(_lowering().lowering_problems(module, float_codes=True))
    if problems:
        return problems
    graph_def, inputs, outputs, _ = _frozen_graph(
        _lowering().lower_to_tf(module, float_codes=True).concrete_function())
    return _allowlist_problems(_clean(graph_def, {_node_name(n) for _, n, _ in inputs + outputs}))


# -- freezing and cleaning ---------------------------------------------------------------------

def _node_name(ref: str) -> str:
    """GraphDef input reference (`name`, `name:1`, `^name`) -> node name."""
    return ref.lstrip("^").split(":")[0]


def _frozen_graph(concrete_fn):
    """Freezes a ConcreteFunction; returns (GraphDef, [(input key, tensor name, tf.Tensor)],
    [(output key, tensor name, tf.Tensor)], {frozen variable Const name: variable name})."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2)

    # Functional While/If stay functions (as tensorflowjs_converter keeps them): TF.js runs
    # them with executeAsync, nested loops included, which the v1 lowering
    # (Enter/Merge/Switch/Exit frames) does not survive.
    frozen = convert_variables_to_constants_v2(concrete_fn, lower_control_flow=False)
    # Freezing turns each captured variable into a Const named after its capture placeholder
    # (`conv1/ReadVariableOp/resource`); name the weight after the variable (`conv1/filter`).
    variables = {id(v.handle): v for v in concrete_fn.graph.variables}
    renames = {}
    for external, internal in concrete_fn.graph.captures:
        var = variables.get(id(external))
        if var is not None:
            renames[internal.op.name] = var.name.split(":")[0]
    specs = [s for s in tf.nest.flatten(concrete_fn.structured_input_signature)
             if isinstance(s, tf.TensorSpec)]
    placeholders = [t for t in frozen.inputs if t.dtype != tf.resource]
    if len(specs) != len(placeholders):  # e.g. non-tensor arguments: fall back to op names
        specs = [None] * len(placeholders)
    inputs = []
    for spec, t in zip(specs, placeholders):
        key = (spec.name if spec is not None and spec.name else t.op.name)
        inputs.append((key, t.name, t))
    # Freezing loses the output dict's keys; nest flattens a dict in sorted-key order, the
    # order of `outputs` in both the original and the frozen function.
    structured = concrete_fn.structured_outputs
    flat = tf.nest.flatten(structured)
    if isinstance(structured, dict) and len(structured) == len(flat):
        keys = [str(k) for k in sorted(structured)]
    elif len(flat) == 1:
        keys = ["output_0"]
    else:
        keys = [f"output_{i}" for i in range(len(flat))]
    if len(keys) != len(frozen.outputs):
        raise ConversionError(f"cannot write TF.js graph model: the function has "
                              f"{len(frozen.outputs)} outputs but {len(keys)} output names")
    outputs = [(k, t.name, t) for k, t in zip(keys, frozen.outputs)]
    return frozen.graph.as_graph_def(), inputs, outputs, renames


def _clean(graph_def, keep: set[str]):
    """Bypasses Identity/Snapshot/StopGradient nodes (one data input, no control inputs, not an
    input or output), drops NoOps and control edges to them, then every node the outputs do not
    need (graph inputs in `keep` stay). Returns a new GraphDef with nodes in their old order."""
    from tensorflow.core.framework import graph_pb2

    forward: dict[str, str] = {}   # bypassed node name -> the tensor reference it forwards
    for n in graph_def.node:
        if (n.op in ("Identity", "Snapshot", "StopGradient") and n.name not in keep
                and len(n.input) == 1 and not n.input[0].startswith("^")):
            forward[n.name] = n.input[0]

    def resolve(ref: str) -> str:
        if ref.startswith("^"):
            name = ref[1:]
            while name in forward:
                name = _node_name(forward[name])
            return "^" + name
        name, _, port = ref.partition(":")
        if port not in ("", "0"):
            return ref
        seen = 0
        while name in forward and seen <= len(forward):
            ref = forward[name]
            name, _, port = ref.partition(":")
            seen += 1
            if port not in ("", "0"):
                return ref
        return ref

    noops = {n.name for n in graph_def.node if n.op == "NoOp" and n.name not in keep}
    gone = noops | set(forward)
    out = graph_pb2.GraphDef()
    out.versions.CopyFrom(graph_def.versions)
    out.library.CopyFrom(graph_def.library)
    for n in graph_def.node:
        if n.name in forward or n.name in noops:
            continue
        m = out.node.add()
        m.CopyFrom(n)
        refs = [resolve(r) for r in n.input]
        refs = [r for r in refs if not (r.startswith("^") and r[1:] in gone)]
        # Drop repeated control edges and ones that duplicate a data edge.
        data = {_node_name(r) for r in refs if not r.startswith("^")}
        seen_ctrl: set[str] = set()
        clean = []
        for r in refs:
            if r.startswith("^"):
                if r[1:] in data or r in seen_ctrl:
                    continue
                seen_ctrl.add(r)
            clean.append(r)
        del m.input[:]
        m.input.extend(clean)

    # Dead-code elimination from the outputs (and the inputs, which the signature names).
    by_name = {n.name: n for n in out.node}
    live: set[str] = set()
    stack = [k for k in keep if k in by_name]
    while stack:
        name = stack.pop()
        if name in live:
            continue
        live.add(name)
        stack.extend(_node_name(r) for r in by_name[name].input if _node_name(r) in by_name)
    pruned = graph_pb2.GraphDef()
    pruned.versions.CopyFrom(out.versions)
    pruned.library.CopyFrom(out.library)
    pruned.node.extend(n for n in out.node if n.name in live)
    return pruned


def _rename(graph_def, renames: dict[str, str]) -> None:
    """Renames Const nodes in place (a clash with another node's name gets a `_n` suffix)
    and every reference to them."""
    taken = {n.name for n in graph_def.node}
    final: dict[str, str] = {}
    for n in graph_def.node:
        if n.op == "Const" and n.name in renames and renames[n.name] != n.name:
            base, i = renames[n.name], 1
            new = base
            while new in taken:
                new, i = f"{base}_{i}", i + 1
            taken.add(new)
            final[n.name] = new
    if not final:
        return
    for n in graph_def.node:
        if n.name in final:
            n.name = final[n.name]
        refs = []
        for r in n.input:
            ctrl = r.startswith("^")
            name, sep, port = r.lstrip("^").partition(":")
            name = final.get(name, name)
            refs.append(("^" if ctrl else "") + name + sep + port)
        del n.input[:]
        n.input.extend(refs)


def _codes_as_float(graph_def, keep: set[str]) -> dict[str, str]:
    """Rewrites, in place, every int8/uint8/int16/uint16 Const (not a graph input/output) whose
    only consumers are Casts to float32 (a dequantized weight) into a float32 Const of the same
    integral values, and those Casts into Identity (which `_clean` then bypasses): TF.js then
    runs no Cast and the weight can still be stored at 1-2 bytes per element. Returns {Const
    name: original NumPy dtype name} for `_extract_weights`."""
    import tensorflow as tf
    from tensorflow.python.framework import tensor_util

    small = {tf.as_dtype(name).as_datatype_enum: name for name in _CODE_STORAGE}
    f32 = tf.float32.as_datatype_enum
    users: dict[str, list] = {}
    for n in graph_def.node:
        for ref in n.input:
            users.setdefault(_node_name(ref), []).append((n, ref))
    done: dict[str, str] = {}
    for n in graph_def.node:
        if n.op != "Const" or n.name in keep or n.attr["dtype"].type not in small:
            continue
        uses = users.get(n.name, [])
        if not uses or any(u.op != "Cast" or ref.startswith("^") or u.attr["DstT"].type != f32
                           for u, ref in uses):
            continue
        arr = tensor_util.MakeNdarray(n.attr["value"].tensor)
        # Integers of at most 16 bits are exact in float32.
        n.attr["value"].tensor.CopyFrom(tensor_util.make_tensor_proto(arr.astype(np.float32)))
        n.attr["dtype"].type = f32
        for u, _ in uses:
            u.op = "Identity"
            for key in ("SrcT", "DstT", "Truncate"):
                if key in u.attr:
                    del u.attr[key]
            u.attr["T"].type = f32
        done[n.name] = arr.dtype.name
    return done


def _scope_of(name: str) -> str:
    return name.rpartition("/")[0]


def _allowlist_problems(graph_def) -> list[Diagnostic]:
    problems = []
    for n in graph_def.node:
        if n.op not in TFJS_OPS:
            problems.append(Diagnostic(
                f"TF op '{n.op}' is not supported by TF.js (not in the tfjs-converter op list)",
                node=f"{n.name} = {n.op}", scope=_scope_of(n.name), loc=f"tf:{n.op}"))
    for f in graph_def.library.function:
        for n in f.node_def:
            if n.op not in TFJS_OPS:
                problems.append(Diagnostic(
                    f"TF op '{n.op}' (in function {f.signature.name}) is not supported by TF.js",
                    node=f"{n.name} = {n.op}", scope=_scope_of(n.name), loc=f"tf:{n.op}"))
    return problems


# -- weights -----------------------------------------------------------------------------------

def _narrow(arr: np.ndarray, name: str) -> np.ndarray:
    """The array in a dtype TF.js stores: 64-bit types narrowed to 32-bit (as the converter
    does), small ints widened to int32, half floats to float32."""
    if arr.dtype in _WEIGHT_DTYPES:
        return arr
    if arr.dtype.kind == "f" or arr.dtype.name == "bfloat16":
        return arr.astype(np.float32)
    if arr.dtype.kind in "iu":
        info = np.iinfo(np.int32)
        if arr.size and (arr.min() < info.min or arr.max() > info.max):
            raise ConversionError(f"constant '{name}' has {arr.dtype} values outside int32, "
                                  f"which TF.js cannot hold")
        return arr.astype(np.int32)
    raise ConversionError(f"constant '{name}' has dtype {arr.dtype}, which TF.js weights "
                          f"cannot hold")


def quantize_weight(data: np.ndarray, dtype: str) -> tuple[np.ndarray, dict[str, Any]]:
    """tensorflowjs.quantization.quantize_weights: per-tensor affine uint8/uint16 with the range
    nudged so that 0.0 is exact (when covered), or a float16 cast. Returns (stored array,
    manifest `quantization` entry); the loader computes q * scale + min."""
    if dtype == "float16":
        return data.astype(np.float16), {"dtype": "float16", "original_dtype": "float32"}
    qdt = np.uint8 if dtype == "uint8" else np.uint16
    lo = float(np.float64(data.min())) if data.size else 0.0
    hi = float(np.float64(data.max())) if data.size else 0.0
    if lo == hi:
        q, scale = np.zeros(data.shape, qdt), 1.0
    else:
        qmax = np.iinfo(qdt).max
        scale = (hi - lo) / qmax
        if lo <= 0 <= hi:
            zero = np.round((0 - lo) / scale)
            lo = float(-zero * scale)
            hi = float(qmax * scale + lo)
        q = np.round((data.clip(lo, hi) - lo) / scale).astype(qdt)
    return q, {"dtype": dtype, "min": lo, "scale": scale, "original_dtype": "float32"}


def _code_weight(arr: np.ndarray, code_dtype: str, as_dtype: str):
    """Integer codes (held in `arr`, any dtype) stored losslessly: q - min in uint8/uint16 with
    the manifest entry {dtype, min, scale: 1} the loader decodes as q * 1 + min (exact)."""
    lo, qname, qdt = _CODE_STORAGE[code_dtype]
    stored = (arr.astype(np.int64) - lo).astype(qdt)
    return stored, {"dtype": qname, "min": float(lo), "scale": 1.0, "original_dtype": as_dtype}


def _unique_function_consts(graph_def) -> None:
    """Renames the Consts inside functions (loop bodies, branches) to `<function>/<name>`:
    TF.js looks every Const up in one weights map by node name, and two bodies easily both
    have a `Const_1`."""
    taken = {n.name for n in graph_def.node}
    for f in graph_def.library.function:
        renames = {}
        for n in f.node_def:
            if n.op == "Const":
                new = f"{f.signature.name}/{n.name}"
                while new in taken:
                    new += "_"
                taken.add(new)
                renames[n.name], n.name = new, new
        if not renames:
            continue

        def fix(ref: str) -> str:
            head, sep, rest = ref.lstrip("^").partition(":")
            if head not in renames:
                return ref
            return ("^" if ref.startswith("^") else "") + renames[head] + sep + rest

        for n in f.node_def:
            n.input[:] = [fix(r) for r in n.input]
        for key in list(f.ret):
            f.ret[key] = fix(f.ret[key])


def _extract_weights(graph_def, quantize: str | None, globs: Sequence[str] | None,
                     codes: dict[str, str] | None = None):
    """Moves every Const node's value into the weights (node order); returns (manifest weight
    entries, payload arrays). Const nodes keep op, dtype and the tensor's dtype and shape."""
    from tensorflow.python.framework import tensor_util

    # The Consts of loop bodies and branches too (tensorflowjs_converter's extract_weights):
    # TF.js looks every Const up in the weights by its node name.
    nodes = [*graph_def.node, *(n for f in graph_def.library.function for n in f.node_def)]
    items = []
    for n in nodes:
        if n.op != "Const":
            continue
        tensor = n.attr["value"].tensor
        items.append((n.name, np.asarray(tensor_util.MakeNdarray(tensor))))
        for field in _CLEARED_TENSOR_FIELDS:
            tensor.ClearField(field)
    return weight_entries(items, quantize, globs, codes)


def weight_entries(items: Iterable[tuple[str, np.ndarray]], quantize: str | None,
                   globs: Sequence[str] | None, codes: dict[str, str] | None = None):
    """(manifest weight entries, payload: flat uint8 arrays, one per weight, in order) for
    the Const values `items` ((name, value) in node order), shared by the TF and the direct
    path. A weight stored as it is comes as a view of its array, not a copy. Consts named in `codes` (float32 codes of
    that integer dtype, see `_codes_as_float`) and small-integer Consts are stored at 1-2 bytes
    per element, float16 Consts as float16 (all lossless); `quantize` then applies to the
    float32 ones."""
    codes = codes or {}
    entries, chunks = [], []
    for name, orig in items:
        arr = _narrow(orig, name)
        entry: dict[str, Any] = {"name": name, "shape": [int(d) for d in arr.shape],
                                 "dtype": _WEIGHT_DTYPES[arr.dtype]}
        stored = arr
        if name in codes:
            stored, entry["quantization"] = _code_weight(arr, codes[name], "float32")
        elif orig.dtype.name in _CODE_STORAGE:
            # An int32 weight on the JS side: the loader rounds q * 1 + min (exact).
            stored, entry["quantization"] = _code_weight(orig, orig.dtype.name, "int32")
        elif (quantize is not None and arr.dtype == np.float32
                and (not globs or any(fnmatch.fnmatchcase(name, g) for g in globs))):
            stored, entry["quantization"] = quantize_weight(arr, quantize)
        elif orig.dtype == np.float16:
            stored, entry["quantization"] = quantize_weight(arr, "float16")   # lossless
        little = np.ascontiguousarray(stored).astype(stored.dtype.newbyteorder("<"),
                                                     copy=False)
        chunks.append(little.reshape(-1).view(np.uint8))
        entries.append(entry)
    return entries, chunks


def _shards(payload: list[np.ndarray]) -> list[list[memoryview]]:
    """The weights cut into SHARD_BYTES files, each a list of views of the weights' bytes
    (written one after another; no joined copy of the payload is made)."""
    shards: list[list[memoryview]] = []
    room = 0
    for piece in payload:
        view = memoryview(piece)
        while len(view):
            if not room:
                shards.append([])
                room = SHARD_BYTES
            shards[-1].append(view[:room])
            taken = min(room, len(view))
            view, room = view[taken:], room - taken
    return shards


# -- model.json --------------------------------------------------------------------------------

def _jsonable(v: Any) -> Any:
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (bool, int, str)) or v is None:
        return v
    if isinstance(v, float):
        return v if np.isfinite(v) else str(v)
    return str(v)


def _signature(graph_def, inputs, outputs) -> dict:
    """SignatureDef as proto3 JSON: key = user-facing name, `name` = graph tensor (what the
    TF.js OperationMapper maps through), dtype and tensorShape (-1 for unknown dims)."""
    from google.protobuf.json_format import MessageToDict
    from tensorflow.core.protobuf import meta_graph_pb2

    sig = meta_graph_pb2.SignatureDef()
    for section, items in ((sig.inputs, inputs), (sig.outputs, outputs)):
        for key, tensor_name, t in items:
            info = section[key]
            info.name = tensor_name
            info.dtype = t.dtype.as_datatype_enum
            info.tensor_shape.CopyFrom(t.shape.as_proto())
    return _spell_out_dims(MessageToDict(sig))


def _spell_out_dims(tree):
    """proto3 JSON drops fields equal to their default, so a TensorShapeProto dim of size 0
    ("no masks") comes out as `{}`, which TF.js reads as NaN: give every dim its size."""
    if isinstance(tree, dict):
        for k, v in tree.items():
            if k == "dim" and isinstance(v, list):
                for d in v:
                    if isinstance(d, dict):
                        d.setdefault("size", "0")
            else:
                _spell_out_dims(v)
    elif isinstance(tree, list):
        for v in tree:
            _spell_out_dims(v)
    return tree


def _build(concrete_fn, *, quantize: str | None, quantize_globs, metadata: dict):
    """(model.json text, [shard bytes]) for a ConcreteFunction; raises ConversionError."""
    import tensorflow as tf
    from google.protobuf.json_format import MessageToDict

    if quantize not in (None, *QUANTIZE_DTYPES):
        raise ConversionError(f"quantize must be one of {QUANTIZE_DTYPES} or None, "
                              f"got {quantize!r}")
    if isinstance(quantize_globs, str):
        quantize_globs = [quantize_globs]
    graph_def, inputs, outputs, renames = _frozen_graph(concrete_fn)
    problems = []
    for what, items in (("input", inputs), ("output", outputs)):
        keys = [k for k, _, _ in items]
        dup = sorted({k for k in keys if keys.count(k) > 1})
        if dup:
            problems.append(Diagnostic(f"signature {what} names repeat: {dup}"))
    keep = {_node_name(n) for _, n, _ in inputs + outputs}
    graph_def = _clean(graph_def, keep)
    _rename(graph_def, {k: v for k, v in renames.items() if k not in keep})
    codes = _codes_as_float(graph_def, keep)
    if codes:
        graph_def = _clean(graph_def, keep)   # bypass the Casts turned into Identity
    problems += _allowlist_problems(graph_def)
    if problems:
        raise ConversionError("cannot write TF.js graph model", problems)
    _unique_function_consts(graph_def)

    entries, payload = _extract_weights(graph_def, quantize, quantize_globs, codes)
    shards = _shards(payload)
    n = len(shards)
    model = {
        "format": "graph-model",
        "generatedBy": tf.__version__,
        "convertedBy": f"tensorforge {package_version()}",
        "modelTopology": _spell_out_dims(MessageToDict(graph_def)),
        "signature": _signature(graph_def, inputs, outputs),
        "userDefinedMetadata": _jsonable(metadata),
        "weightsManifest": [{"paths": [f"group1-shard{i}of{n}.bin" for i in range(1, n + 1)],
                             "weights": entries}],
    }
    text = json.dumps(model, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return text, shards


def _tf_version() -> str:
    """The installed TensorFlow's version (whose op definitions the NodeDefs follow), read from
    the package metadata: the direct path never imports TensorFlow."""
    from importlib import metadata

    for dist in ("tensorflow", "tensorflow-cpu", "tf-nightly", "tf-nightly-cpu"):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return "unknown"


def _build_direct(module: Module, *, quantize: str | None, quantize_globs, metadata: dict):
    """(model.json text, [shard bytes]) written straight from the IR (`tfjs_direct`); raises
    NotDirect when the module needs the TF path."""
    from .tfjs_direct import GRAPH_DEF_PRODUCER, build_graph, prepared

    nodes, values, signature, codes = build_graph(prepared(module))
    bad = sorted({n["op"] for n in nodes} - TFJS_OPS)
    if bad:   # a mapping bug, never expected: the TF path reports it properly
        from .tfjs_direct import NotDirect
        raise NotDirect(f"ops outside the TF.js allowlist: {bad}")
    entries, payload = weight_entries(((n["name"], values[n["name"]]) for n in nodes
                                       if n["op"] == "Const"), quantize, quantize_globs, codes)
    shards = _shards(payload)
    n = len(shards)
    model = {
        "format": "graph-model",
        "generatedBy": _tf_version(),
        "convertedBy": f"tensorforge {package_version()}",
        "modelTopology": {"library": {}, "node": nodes,
                          "versions": {"producer": GRAPH_DEF_PRODUCER}},
        "signature": signature,
        "userDefinedMetadata": _jsonable(metadata),
        "weightsManifest": [{"paths": [f"group1-shard{i}of{n}.bin" for i in range(1, n + 1)],
                             "weights": entries}],
    }
    text = json.dumps(model, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return text, shards


# -- writing -----------------------------------------------------------------------------------

def _check_target(directory: str) -> None:
    """An existing target may only be replaced when it holds a TF.js artifact (or nothing)."""
    if not os.path.lexists(directory):
        return
    if not os.path.isdir(directory) or os.path.islink(directory):
        raise ConversionError(f"cannot write TF.js graph model: '{directory}' exists and is "
                              f"not a directory")
    foreign = sorted(f for f in os.listdir(directory) if not _ARTIFACT_FILE.match(f))
    if foreign:
        raise ConversionError(f"cannot write TF.js graph model: '{directory}' holds files that "
                              f"are not a TF.js artifact ({', '.join(foreign[:5])}); "
                              f"refusing to replace it")


def _write_atomic(directory: str, text: str, shards: list[list[memoryview]]) -> None:
    directory = os.path.abspath(directory)
    parent, base = os.path.split(directory)
    os.makedirs(parent, exist_ok=True)
    _check_target(directory)
    tmp = tempfile.mkdtemp(prefix=f".{base}.tmp-", dir=parent)
    # The files are complete when the directory is swapped in (a failure before leaves only
    # the temporary directory, removed below); like the TFLite and SavedModel writers, no
    # fsync: it made ResNet50's 26 shards wait 0.05-0.15 s for the disk, which no reader in
    # this process needs (the OS writes them back as it does any file).
    try:
        n = len(shards)
        for i, data in enumerate(shards, 1):
            with open(os.path.join(tmp, f"group1-shard{i}of{n}.bin"), "wb") as f:
                for piece in data:
                    write_chunked(f, piece)
        with open(os.path.join(tmp, "model.json"), "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o755)
        swap_directory(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_tfjs_function(concrete_fn, directory: str | os.PathLike, *,
                        quantize: str | None = None,
                        quantize_globs: Iterable[str] | str | None = None,
                        metadata: dict | None = None) -> None:
    """Writes a TF.js graph model for a `tf.function` ConcreteFunction (inputs named by their
    TensorSpec names, outputs a dict keyed by output name). See `write_tfjs`."""
    globs = [quantize_globs] if isinstance(quantize_globs, str) else (
        list(quantize_globs) if quantize_globs is not None else None)
    text, shards = _build(concrete_fn, quantize=quantize, quantize_globs=globs,
                          metadata=dict(metadata or {}))
    _write_atomic(os.fspath(directory), text, shards)


# userDefinedMetadata keys that @tensorflow/tfjs itself reads (graph_model.ts: the signature
# and the structured output keys override the model's own): the module's metadata must not
# land on them (a SavedModel source's `signature` name made tfjs rename every output).
_TFJS_RESERVED = {"signature": "source_signature",
                  "structuredOutputKeys": "source_structuredOutputKeys"}


def write_tfjs(module: Module, directory: str | os.PathLike, *,
               quantize: str | None = None,
               quantize_globs: Iterable[str] | str | None = None,
               via: str = "auto", notes: list[str] | None = None) -> None:
    """Writes `module.main` as a TF.js graph model into `directory` (model.json + shards).

    quantize: None, "uint8", "uint16" (per-tensor affine, dequantized at load) or "float16";
    applied to float32 weights, only those whose name matches one of `quantize_globs` (fnmatch)
    when given. Raises ConversionError listing every IR node without a TF lowering, or else
    every TF op TF.js cannot run; nothing is written then. Deterministic and atomic.

    via: "auto" writes the graph straight from the IR (`tfjs_direct`) when every op has a
    direct mapping, else through TensorFlow (`tf_lowering`, freezing), noting in `notes` which
    op sent it there; "direct" raises ConversionError instead of falling back; "tf" always
    takes the TensorFlow path."""
    if quantize not in (None, *QUANTIZE_DTYPES):
        raise ConversionError(f"quantize must be one of {QUANTIZE_DTYPES} or None, "
                              f"got {quantize!r}")
    if via not in ("auto", "direct", "tf"):
        raise ConversionError(f"via must be 'auto', 'direct' or 'tf', got {via!r}")
    globs = [quantize_globs] if isinstance(quantize_globs, str) else (
        list(quantize_globs) if quantize_globs is not None else None)
    metadata = {_TFJS_RESERVED.get(k, k): v for k, v in sorted(module.metadata.items())}
    if via != "tf":
        from .tfjs_direct import NotDirect

        try:
            text, shards = _build_direct(module, quantize=quantize, quantize_globs=globs,
                                         metadata=metadata)
        except NotDirect as err:
            where = f" ({err.node.describe()})" if err.node is not None else ""
            if via == "direct":
                raise ConversionError(f"cannot write TF.js graph model directly: {err}{where}"
                                      ) from None
            if notes is not None:
                notes.append(f"tfjs: written through TensorFlow (slower): {err}{where}")
        else:
            _write_atomic(os.fspath(directory), text, shards)
            return
    try:
        concrete_fn = _lowering().lower_to_tf(module, float_codes=True).concrete_function()
    except ConversionError as err:  # every IR node without a TF lowering, all at once
        if not err.diagnostics:
            raise
        raise ConversionError("cannot write TF.js graph model", err.diagnostics) from None
    write_tfjs_function(concrete_fn, directory, quantize=quantize,
                        quantize_globs=globs, metadata=metadata)
