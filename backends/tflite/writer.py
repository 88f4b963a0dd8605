"""Flatbuffer assembly: lowers a Module's entry graph through the table in `ops/` into the
schema's object API (ModelT, SubGraphT, TensorT, ...) and packs it into `.tflite` bytes.

The output is a pure function of the IR: tensors, buffers and operator codes are numbered in
graph order, nothing depends on dict/set iteration of unordered data, ids or the clock, so
the same module (or a clone of it) always gives byte-identical bytes.

Large models: a flatbuffer must stay under 2 GiB, so when the weights pass
`BUFFER_OFFSET_THRESHOLD` (or `buffer_offset=True`, or TENSORFORGE_TFLITE_BUFFER_OFFSET=1) the
weights are appended after the flatbuffer instead, each `Buffer` holding `offset` (from the
start of the file) and `size` with no `data`, 16-byte aligned, and the model gets the
`buffer_location = "outside flatbuffers"` metadata: TFLiteConverter's `use_buffer_offset`
layout, which LiteRT reads from a file or from the whole byte string. `save_tflite` streams
the weights to the file straight from the IR's arrays (no copy of them is made in memory).
"""

from __future__ import annotations

from typing import Callable, Mapping

import copy
import mmap
import os
import tempfile

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as fb

from ...ir.errors import ConversionError, Diagnostic
from ...ir.graph import Module, Node, Value
from ...ir.quantized import dequantize_array, is_quantized, real_type
from ...ir.types import DType, QuantParams
from ...passes.bitwise import TFLITE_MISSING, with_bitwise_expanded
from ...passes.control import without_scans
from ...passes.dtypes import NON_F32_FLOATS, widened
from ...passes.recurrent import with_fused_recurrent
from ...version import package_version
from ..common import signature_names, write_chunked
from .fast_builder import FastBuilder
from .ops import LOWERINGS, TFL_TYPES, Unsupported, copy_into, op_version
from .ops.common import emit
from .ops.weights import last_axis_first

SCHEMA_VERSION = 3
BUFFER_ALIGNMENT = 16  # schema.fbs: `data:[ubyte] (force_align: 16)`
SIGNATURE_KEY = "serving_default"
# Weights past this many bytes go after the flatbuffer (TFLiteConverter switches at the 2 GiB
# flatbuffer limit minus 512 MiB, its estimate of what the graph itself may need).
BUFFER_OFFSET_THRESHOLD = 2**31 - 2**29
BUFFER_OFFSET_ENV = "TENSORFORGE_TFLITE_BUFFER_OFFSET"   # "1": always append, "0": never
BUFFER_LOCATION = b"outside flatbuffers"    # the `buffer_location` metadata of that layout
_PLACEHOLDER = 2    # any offset > 1: the flatbuffer's size does not depend on the value
# Weight vectors at least this long are reserved in the builder, not copied into it: the file
# takes them straight from the IR's arrays (`_WeightBuilder`).
DEFER_MIN_BYTES = 4096
# Float weights at least this large are re-laid out as they are written (`RelaidWeight`).
RELAID_MIN_BYTES = 1 << 20
# Room for everything but the weights (tables, names, shapes, small vectors); reserved as
# untouched virtual memory, so over-reserving costs nothing.
_GRAPH_HEADROOM = 256 << 20


class RelaidWeight:
    """A float weight stored with its last axis first (HWIO -> OHWI, a matrix transposed),
    re-laid out block by block while the file is written instead of into a new array: a
    large model's filters are then never copied in memory (on ResNet50, 94 MB of fresh
    memory less, which was a third of writing it). `blocks()` yields the stored bytes in
    order, about 1 MiB at a time, from one reused buffer."""

    BLOCK_BYTES = 1 << 20

    def __init__(self, source: np.ndarray):
        self.source = source                     # C-contiguous, little-endian
        self.rows = source.reshape(-1, source.shape[-1])
        self.nbytes = source.nbytes

    def __len__(self) -> int:
        return self.nbytes

    def blocks(self):
        m, n = self.rows.shape
        per = max(1, self.BLOCK_BYTES // max(1, m * self.source.itemsize))
        buffer = np.empty((min(per, n), m), self.source.dtype)
        for start in range(0, n, per):
            out = buffer[:min(per, n - start)]
            np.copyto(out, self.rows[:, start:start + per].T)
            yield out.reshape(-1).view(np.uint8)

    def materialize(self) -> np.ndarray:
        return np.concatenate([b.copy() for b in self.blocks()]) if self.nbytes else \
            np.zeros(0, np.uint8)


def _payload(data):
    """A flat uint8 view of a buffer's bytes (bytes, or an array already little-endian and
    contiguous), without copying them; a RelaidWeight as it is."""
    if isinstance(data, RelaidWeight):
        return data
    if isinstance(data, np.ndarray):
        return data.reshape(-1).view(np.uint8)
    return np.frombuffer(data, np.uint8)


def _pieces(payload):
    """A payload's bytes as writable pieces (a RelaidWeight's blocks, else itself)."""
    if isinstance(payload, RelaidWeight):
        yield from payload.blocks()
    else:
        yield payload


def _fingerprint(data) -> tuple:
    """Length plus 256 bytes sampled evenly and the last 64: equal payloads share it, and
    different weights almost never do (those that do are told apart by a full compare).
    A RelaidWeight is fingerprinted by its source (equal sources give equal bytes)."""
    if isinstance(data, RelaidWeight):
        return ("relaid", data.source.shape) + _fingerprint(data.source.reshape(-1).view(np.uint8))
    n = len(data)
    if n <= 512:
        return n, data.tobytes()
    step = n // 256
    return n, data[::step][:256].tobytes(), data[-64:].tobytes()


def _same_payload(a, b) -> bool:
    if isinstance(a, RelaidWeight) or isinstance(b, RelaidWeight):
        return (isinstance(a, RelaidWeight) and isinstance(b, RelaidWeight)
                and a.source.shape == b.source.shape and np.array_equal(a.source, b.source))
    return np.array_equal(a, b)


class _WeightBuilder(FastBuilder):
    """A flatbuffers Builder (the lean one of fast_builder.py) over an anonymous memory map whose weight vectors are reserved,
    not filled: `deferred` lists (distance from the end of the buffer, payload) for each, and
    the writer streams the payloads into those holes from the IR's arrays.

    Why: copying every weight into the builder (and a builder too small for them doubling and
    copying itself) was most of the TFLite writer's time on large models. The map is sized
    for the weights plus `_GRAPH_HEADROOM` up front; pages that are never written (the holes,
    the unused headroom) are never allocated."""

    def __init__(self, size: int):
        super().__init__(0)
        self.Bytes = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        self.head = size
        self.deferred: list[tuple[int, np.ndarray]] = []

    def reserve(self, payload: np.ndarray) -> None:
        """Leaves room for `payload` at the head (filled in when the file is written)."""
        self.head -= len(payload)
        self.deferred.append((self.Offset(), payload))


class _AlignedBufferT(fb.BufferT):
    """BufferT whose data vector starts on a 16-byte boundary.

    The generated Python Pack ignores the schema's force_align; alignment is relative to the
    end of the flatbuffer, and Finish pads the front to the largest alignment used, so a
    16-aligned vector here is 16-aligned in the file (and in a memory-mapped model)."""

    def Pack(self, builder):
        data = None
        if self.data is not None:
            payload = _payload(self.data)
            builder.StartVector(1, len(payload), BUFFER_ALIGNMENT)
            if isinstance(builder, _WeightBuilder) and len(payload) >= DEFER_MIN_BYTES:
                builder.reserve(payload)
            else:
                if isinstance(payload, RelaidWeight):
                    payload = payload.materialize()
                builder.head -= len(payload)
                builder.Bytes[builder.head:builder.head + len(payload)] = memoryview(payload)
            data = builder.EndVector()
        fb.BufferStart(builder)
        if data is not None:
            fb.BufferAddData(builder, data)
        if self.offset:     # appended after the flatbuffer (absent, as before, when inline)
            fb.BufferAddOffset(builder, self.offset)
            fb.BufferAddSize(builder, self.size)
        return fb.BufferEnd(builder)


class Emitter:
    """Collects tensors, buffers and operators while the lowerings run (API in ops/__init__.py)."""

    def __init__(self, fp16: bool = False, parent: "Emitter | None" = None):
        self.fp16 = fp16
        self.prefix = "tf"                      # name stem for intermediates of the node
        self.tensors: list[fb.TensorT] = []     # (per subgraph)
        self.info: list[tuple[DType, tuple]] = []   # IR dtype and (symbolic) shape per tensor
        self.quants: list[QuantParams | None] = []
        self.operators: list[fb.OperatorT] = []
        if parent is None:
            # Model-wide: buffers, operator codes, and the subgraphs (0 is the entry graph,
            # filled in last; regions are appended as their ops are lowered).
            # Payloads: bytes, or flat uint8 views of the IR's arrays (not copies of them).
            self.buffers: list[np.ndarray | bytes | None] = [None]   # 0: the empty sentinel
            self.opcodes: dict[tuple[int, int], int] = {}   # (builtin, version) -> index
            self._buffer_ids: dict[tuple, list[int]] = {}   # fingerprint -> buffers
            self.subgraphs: list[fb.SubGraphT | None] = [None]
            self.problems: list[Diagnostic] = []
            # Quantized nodes written in float (`_lower_in_float`), for the conversion notes.
            self.float_fallbacks: list[Diagnostic] = []
        else:
            self.buffers, self.opcodes = parent.buffers, parent.opcodes
            self._buffer_ids, self.subgraphs = parent._buffer_ids, parent.subgraphs
            self.problems, self.float_fallbacks = parent.problems, parent.float_fallbacks
        self._values: dict[int, int] = {}           # id(Value) -> tensor index
        self._derived: dict[tuple[int, str], int] = {}
        self._names: set[str] = set()
        self._pinned: list[Value] = []              # keeps id() keys unique while we run
        self._skipped: set[int] = set()             # nodes another lowering already emitted

    # -- tensors -------------------------------------------------------------------------------
    def _unique(self, name: str) -> str:
        base, n = name, 1
        while name in self._names:
            name = f"{base}_{n}"
            n += 1
        self._names.add(name)
        return name

    def _tensor(self, dtype: DType, shape, name: str, buffer: int = 0,
                quant: QuantParams | None = None) -> int:
        if dtype not in TFL_TYPES:
            raise Unsupported(f"TFLite tensors of dtype {dtype} are not supported by this "
                              f"backend; cast to a supported dtype first")
        shape = tuple(shape)
        self.tensors.append(fb.TensorT(
            # Symbolic dims: 1 in `shape` (what the interpreter allocates first), -1 in
            # `shape_signature` (what resize_tensor_input may change).
            shape=[d if isinstance(d, int) else 1 for d in shape],
            shapeSignature=[d if isinstance(d, int) else -1 for d in shape],
            type=TFL_TYPES[dtype], buffer=buffer, name=self._unique(name), hasRank=True))
        self.info.append((dtype, shape))
        self.quants.append(None)
        index = len(self.tensors) - 1
        if quant is not None:
            self.set_quant(index, quant)
        return index

    def checkpoint(self) -> tuple[int, int]:
        """Where the tensors and operators of this subgraph end now (see `rollback`)."""
        return len(self.tensors), len(self.operators)

    def rollback(self, mark: tuple[int, int]) -> None:
        """Forgets the tensors and operators added since `checkpoint` returned `mark` (a
        buffer they added stays, unreferenced)."""
        tensors, operators = mark
        for tensor in self.tensors[tensors:]:
            self._names.discard(tensor.name)
        del self.tensors[tensors:], self.info[tensors:], self.quants[tensors:]
        del self.operators[operators:]
        self._values = {k: i for k, i in self._values.items() if i < tensors}
        self._derived = {k: i for k, i in self._derived.items() if i < tensors}

    def skip(self, node: Node) -> None:
        """Marks `node` as emitted by another node's lowering (a fused activation)."""
        self._skipped.add(id(node))
        self._pinned.append(node)

    def skipped(self, node: Node) -> bool:
        """True when another node's lowering already emitted `node` (see `skip`)."""
        return id(node) in self._skipped

    def dtype(self, index: int) -> DType:
        """The IR dtype of tensor `index`."""
        return self.info[index][0]

    def shape(self, index: int) -> tuple:
        """The IR shape (with symbolic dims) of tensor `index`."""
        return self.info[index][1]

    def quant(self, index: int) -> QuantParams | None:
        """The quantization params of tensor `index` (None when it has none)."""
        return self.quants[index]

    def set_quant(self, index: int, qp: QuantParams) -> None:
        """Gives tensor `index` the quantization params `qp` (in the flatbuffer too)."""
        self.quants[index] = qp
        self.tensors[index].quantization = fb.QuantizationParametersT(
            scale=list(qp.scale), zeroPoint=list(qp.zero_point),
            quantizedDimension=qp.axis or 0)

    def _buffer(self, data) -> int:
        # Identical payloads share one buffer (tensors may point at the same buffer). They
        # are matched by a cheap fingerprint (length and sampled bytes) and compared in full
        # only when fingerprints collide: hashing every weight cost a quarter of writing
        # ResNet50, and big weights are neither copied nor kept twice either way.
        data = _payload(data)
        key = _fingerprint(data)
        for index in self._buffer_ids.get(key, ()):
            if _same_payload(self.buffers[index], data):
                return index
        self._buffer_ids.setdefault(key, []).append(len(self.buffers))
        self.buffers.append(data)
        return len(self.buffers) - 1

    def const(self, array, name: str, *, weight: bool = False,
              quant: QuantParams | None = None) -> int:
        """A constant tensor. With fp16, float32 weights are stored as float16 and expanded by
        a DEQUANTIZE (TFLiteConverter's float16 quantization); parameters (shapes, axes,
        decomposition scalars) stay exact."""
        # (ascontiguousarray alone would turn a scalar into shape [1].)
        arr = np.ascontiguousarray(array).reshape(np.shape(array))
        dtype = DType.from_numpy(arr.dtype)
        if self.fp16 and weight and dtype == DType.f32 and quant is None:
            half = self.const(arr.astype(np.float16), f"{name}/fp16")
            out = self._tensor(DType.f32, arr.shape, name)
            self.op("DEQUANTIZE", [half], [out])
            return out
        if dtype not in TFL_TYPES:
            raise Unsupported(f"constant {name} has dtype {dtype}, which this TFLite backend "
                              f"does not store")
        if dtype == DType.i4:
            data = pack_int4(arr)
        else:   # a view of the IR's array (little-endian: no copy on this machine)
            data = np.ascontiguousarray(arr.astype(arr.dtype.newbyteorder("<"), copy=False))
        return self._tensor(dtype, arr.shape, name, buffer=self._buffer(data), quant=quant)

    def is_const(self, index: int) -> bool:
        """True when tensor `index` is a constant (has a data buffer)."""
        return self.tensors[index].buffer != 0

    def value_name(self, value: Value) -> str:
        """The tensor name of an IR value: its own name, else `scope/op` of its producer
        (`:i` for one result of several), or `input`."""
        if value.name:
            return value.name
        node = value.producer
        if node is None:
            return "input"
        base = f"{node.scope}/{node.op}" if node.scope else node.op
        return base if len(node.outputs) == 1 else f"{base}:{value.index}"

    def t(self, value: Value) -> int:
        """The tensor of an IR operand; a constant gets its tensor (and buffer) here."""
        key = id(value)
        if key not in self._values:
            self._pinned.append(value)
            arr = value.const
            if arr is not None:
                index = self.const(arr, self.value_name(value), weight=True, quant=value.quant)
            else:
                index = self._tensor(value.type.dtype, value.type.shape, self.value_name(value),
                                     quant=value.quant)
            self._values[key] = index
        return self._values[key]

    def out(self, value: Value) -> int:
        """The tensor of a node result (created on first request)."""
        return self.t(value)

    def tmp(self, dtype: DType, shape, name: str) -> int:
        """A fresh intermediate tensor, named after the node being lowered."""
        return self._tensor(dtype, shape, f"{self.prefix}/{name}")

    def alias(self, value: Value, index: int) -> None:
        """Makes IR value `value` an alias of existing tensor `index` (no operator)."""
        self._pinned.append(value)
        self._values[id(value)] = index

    def derived(self, value: Value, key: str, fn: Callable[[np.ndarray], np.ndarray],
                quant: QuantParams | None = None) -> int:
        """A weight computed once from IR constant `value` (a filter in TFLite's layout).
        `quant` is the re-laid weight's quantization (its axis moved with the layout); `key`
        must change whenever `fn` or `quant` does."""
        k = (id(value), key)
        if k not in self._derived:
            self._pinned.append(value)
            source = np.asarray(value.const)
            name = f"{self.value_name(value)}/{key}"
            if (fn is last_axis_first and quant is None and not self.fp16
                    and source.dtype == np.float32 and source.ndim >= 2
                    and source.flags.c_contiguous and source.nbytes >= RELAID_MIN_BYTES):
                # Re-laid out while the file is written, not into a new array.
                shape = (source.shape[-1], *source.shape[:-1])
                self._derived[k] = self._tensor(DType.f32, shape, name,
                                                buffer=self._buffer(RelaidWeight(source)))
            else:
                self._derived[k] = self.const(np.asarray(fn(source)), name, weight=True,
                                              quant=quant)
        return self._derived[k]

    # -- subgraphs -----------------------------------------------------------------------------
    def subgraph(self, graph, name: str) -> int:
        """Lowers a region into a subgraph of its own (for WHILE and IF) and returns its
        index. Its problems join the model's, so every offender is still listed at once."""
        sub = Emitter(self.fp16, parent=self)
        index = len(self.subgraphs)
        self.subgraphs.append(None)
        inputs, outputs = _lower_graph(sub, graph, self.problems, region=True)
        self.subgraphs[index] = fb.SubGraphT(tensors=sub.tensors, inputs=inputs,
                                             outputs=outputs, operators=sub.operators,
                                             name=name)
        return index

    # -- operators -----------------------------------------------------------------------------
    def op(self, code: str, inputs, outputs, options=None) -> None:
        """Appends builtin `code` at the lowest version supporting this use of it."""
        # (dtype, shape, quant) per tensor: versions depend on per-channel / hybrid weights.
        sig = lambda ids: [None if i < 0 else self.info[i] + (self.quants[i],)  # noqa: E731
                           for i in ids]
        quant = None
        if code == "QUANTIZE":
            quant = self.quants[outputs[0]]
        elif code == "DEQUANTIZE":
            quant = self.quants[inputs[0]]
        version = op_version(code, sig(inputs), sig(outputs), options, quant=quant)
        builtin = getattr(fb.BuiltinOperator, code)
        index = self.opcodes.setdefault((builtin, version), len(self.opcodes))
        self.operators.append(fb.OperatorT(
            opcodeIndex=index, inputs=list(inputs), outputs=list(outputs),
            builtinOptionsType=getattr(fb.BuiltinOptions, type(options).__name__[:-1])
            if options is not None else fb.BuiltinOptions.NONE,
            builtinOptions=options))


def pack_int4(arr: np.ndarray) -> bytes:
    """Int4 codes packed two per byte, element 2i in the low nibble and 2i+1 in the high one
    (an odd count leaves the last high nibble 0): how TFLite stores kTfLiteInt4 buffers
    (tensor_utils::UnpackDenseInt4IntoInt8 reads them back low nibble first)."""
    flat = np.asarray(arr).reshape(-1).astype(np.int8).astype(np.uint8) & 0x0F
    if flat.size % 2:
        flat = np.concatenate([flat, np.zeros(1, np.uint8)])
    return (flat[0::2] | (flat[1::2] << 4)).astype(np.uint8).tobytes()


def _diag(node: Node, message: str) -> Diagnostic:
    return Diagnostic(message, node=node.describe(), scope=node.scope, loc=node.loc)


def _lower_graph(e: Emitter, graph, problems: list[Diagnostic],
                 region: bool = False) -> tuple[list, list]:
    """Lowers `graph`'s nodes into `e`; returns its input and output tensor indices. A
    region (a WHILE body) may return its inputs as they are: LiteRT carries such loop
    invariants without a copy per iteration."""
    inputs = []
    for v in graph.inputs:
        try:
            inputs.append(e.t(v))
        except Unsupported as err:
            problems.append(Diagnostic(f"graph input %{v.name or '?'}: {err}"))
    for node in graph:
        if node.op == "constant" or e.skipped(node):
            continue  # emitted where used, or fused into an earlier operator
        lower = LOWERINGS.get(node.op)
        if lower is None:
            problems.append(_diag(node, f"op '{node.op}' has no TFLite lowering"))
            continue
        e.prefix = e.value_name(node.outputs[0]) if node.outputs else node.op
        mark = e.checkpoint()
        try:
            _check_rescale_range(node)
            lower(e, node)
        except Unsupported as err:
            e.rollback(mark)    # a lowering may have emitted part of the node already
            if not _lower_in_float(e, node, lower, str(err)):
                problems.append(_diag(node, str(err)))
        except Exception as err:  # a lowering bug must still name the node, not crash
            problems.append(_diag(node, f"internal error lowering to TFLite: "
                                        f"{type(err).__name__}: {err}"))

    outputs = []
    e.prefix = "output"
    for v in graph.outputs:
        try:
            index = e.t(v)
            # A subgraph output must be computed by an operator of its own: copy graph inputs,
            # constants and repeated outputs.
            if (index in inputs and not region) or e.is_const(index) or index in outputs:
                index = copy_into(e, index, name=f"{e.value_name(v)}/copy")
            outputs.append(index)
        except Unsupported as err:
            problems.append(Diagnostic(f"graph output %{v.name or '?'}: {err}"))
    return inputs, outputs


# TFLite's integer kernels rescale with a 32-bit fixed-point multiplier and a shift of at most
# 31 bits either way (QuantizeMultiplier); a ratio of scales beyond that fails a CHECK in the
# kernel's Prepare, which aborts the whole process.
_MAX_SCALE_SPAN = 2.0 ** 31


def _check_rescale_range(node: Node) -> None:
    """Raises Unsupported when the scales of a quantized node's operands and results span more
    than its integer kernel can rescale between (calibration saw values of wildly different
    size: an unrolled solver's intermediates); the node then runs in float."""
    scales = [float(s) for v in [*node.inputs, *node.outputs] if is_quantized(v)
              for s in np.ravel(v.quant.scale) if s > 0]
    if len(scales) < 2:
        return
    span = max(scales) / min(scales)
    if span > _MAX_SCALE_SPAN:
        raise Unsupported(f"its quantization scales span a factor of {span:.1e} "
                          f"({min(scales):.1e} to {max(scales):.1e}), more than the 2^31 "
                          f"TFLite's integer kernels can rescale by")


def _lower_in_float(e: Emitter, node: Node, lower, why: str) -> bool:
    """A quantized node no TFLite integer kernel runs, emitted as its float op between
    DEQUANTIZE and QUANTIZE: the very meaning of the integer form (ir/quantized.py), so the
    artifact still computes what the IR does. Returns False (emitting nothing) for a node
    without quantized values, or one the float lowering refuses too."""
    if node.regions or not any(is_quantized(v) for v in [*node.inputs, *node.outputs]):
        return False
    mark = e.checkpoint()
    try:
        inputs = []
        for v in node.inputs:
            if not is_quantized(v):
                inputs.append(v)
            elif v.const is not None:     # a weight: its real values, as a float constant
                real = Value(real_type(v))
                value = np.asarray(dequantize_array(v.const, v.quant), real.type.dtype.np)
                Node("constant", [], [real], {"value": value})
                inputs.append(real)
            else:
                real = Value(real_type(v))
                e.alias(real, emit(e, "DEQUANTIZE", [e.t(v)], dtype=DType.f32,
                                   shape=v.type.shape, name="dequantized"))
                inputs.append(real)
        outputs = [Value(real_type(v)) if is_quantized(v) else v for v in node.outputs]
        twin = Node(node.op, inputs, outputs, dict(node.attrs), scope=node.scope, loc=node.loc)
        e._pinned.extend([twin, *inputs, *outputs])
        lower(e, twin)
        for v, real in zip(node.outputs, outputs):
            if real is not v:
                emit(e, "QUANTIZE", [e.t(real)], out=e.out(v))
    except Unsupported:
        e.rollback(mark)
        return False
    e.float_fallbacks.append(_diag(node, f"runs in float between DEQUANTIZE and QUANTIZE: "
                                         f"{why}"))
    return True


def build_model(module: Module, *, fp16: bool = False, notes: list[str] | None = None) -> tuple[fb.ModelT, list[Diagnostic]]:
    """Lowers `module.main` (recurrent loops fused into TFLite's sequence ops, the other
    `scan`s rewritten into `while`s, bf16/f16 computed in f32 first: passes/recurrent.py,
    passes/control.py, passes/dtypes.py) and returns (the model object tree, every problem
    found). Regions become subgraphs 1, 2, ..."""
    return build_signatures({SIGNATURE_KEY: module}, fp16=fp16, notes=notes)


def build_signatures(entries: Mapping[str, Module], *, fp16: bool = False,
                     notes: list[str] | None = None) -> tuple[fb.ModelT, list[Diagnostic]]:
    """As `build_model`, for several entry points in one model: each module's main graph
    becomes a subgraph with a SignatureDef under its key (the first is subgraph 0). Their
    weights are stored once: buffers are shared by content (an LLM's prefill and decode steps
    read the same weights)."""
    root = Emitter(fp16)
    problems = root.problems
    signatures = []
    for k, (key, module) in enumerate(entries.items()):
        # No AND/OR/LEFT_SHIFT builtin: those become integer arithmetic (passes/bitwise.py).
        module = with_bitwise_expanded(module, TFLITE_MISSING)
        module = widened(without_scans(with_fused_recurrent(module)), NON_F32_FLOATS)
        graph = module.main
        e = root if k == 0 else Emitter(fp16, parent=root)
        index = 0 if k == 0 else len(root.subgraphs)
        if k:
            root.subgraphs.append(None)
        inputs, outputs = _lower_graph(e, graph, problems)
        in_names = signature_names(module, "input_names", graph.inputs, "input", problems)
        out_names = signature_names(module, "output_names", graph.outputs, "output", problems)
        root.subgraphs[index] = fb.SubGraphT(tensors=e.tensors, inputs=inputs, outputs=outputs,
                                             operators=e.operators, name=graph.name)
        signatures.append(fb.SignatureDefT(
            inputs=[fb.TensorMapT(name=n, tensorIndex=i) for n, i in zip(in_names, inputs)],
            outputs=[fb.TensorMapT(name=n, tensorIndex=i) for n, i in zip(out_names, outputs)],
            signatureKey=key, subgraphIndex=index))
    if notes is not None:
        notes += [f"TFLite: {d.node} (scope '{d.scope}') {d.message}"
                  for d in root.float_fallbacks]
    if problems:
        return fb.ModelT(), problems

    buffers = [_AlignedBufferT() if data is None else _AlignedBufferT(data=data)
               for data in root.buffers]
    producer = f"tensorforge {package_version()}"
    buffers.append(_AlignedBufferT(data=producer.encode()))
    codes = [fb.OperatorCodeT(
        # Codes past 126 live in builtin_code; the deprecated byte says "look there".
        deprecatedBuiltinCode=min(builtin, fb.BuiltinOperator.PLACEHOLDER_FOR_GREATER_OP_CODES),
        builtinCode=builtin, version=version) for builtin, version in root.opcodes]
    model = fb.ModelT(
        version=SCHEMA_VERSION, operatorCodes=codes, description=producer,
        subgraphs=list(root.subgraphs),
        buffers=buffers,
        metadata=[fb.MetadataT(name="producer", buffer=len(buffers) - 1)],
        signatureDefs=signatures)
    return model, []


def use_buffer_offset(model: fb.ModelT, buffer_offset: bool | None = None) -> bool:
    """Whether `model`'s weights go after the flatbuffer: `buffer_offset` when given, else
    TENSORFORGE_TFLITE_BUFFER_OFFSET (1/0) when set, else when they pass
    BUFFER_OFFSET_THRESHOLD bytes."""
    if buffer_offset is not None:
        return bool(buffer_offset)
    env = os.environ.get(BUFFER_OFFSET_ENV, "").strip()
    if env:
        return env not in ("0", "false", "no")
    total = sum(len(b.data) for b in model.buffers or [] if b.data is not None)
    return total > BUFFER_OFFSET_THRESHOLD


def _align(n: int) -> int:
    return -(-n // BUFFER_ALIGNMENT) * BUFFER_ALIGNMENT


def _finish(model: fb.ModelT) -> tuple[memoryview, list[tuple[int, np.ndarray]]]:
    """(the packed flatbuffer, a view of the builder's own bytes with holes where its large
    weight vectors go, [(offset in it, payload)] for those holes); nothing is copied."""
    inline = sum(len(b.data) + BUFFER_ALIGNMENT for b in model.buffers or []
                 if b.data is not None)
    builder = _WeightBuilder(min(inline + _GRAPH_HEADROOM, flatbuffers.Builder.MAX_BUFFER_SIZE))
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    end = len(builder.Bytes)
    holes = sorted(((end - back - builder.Head(), payload) for back, payload in builder.deferred),
                   key=lambda hole: hole[0])
    return memoryview(builder.Bytes)[builder.Head():], holes


def serialize(model: fb.ModelT, buffer_offset: bool | None = None
              ) -> tuple[memoryview, list[tuple[int, np.ndarray]]]:
    """(the flatbuffer, [(file offset, payload)] in offset order): each payload is written at
    its offset, into a hole of the flatbuffer or after it. Inline layout: every weight inside
    the flatbuffer (the large ones as holes, `_WeightBuilder`). Offset layout
    (`use_buffer_offset`): each non-empty weight buffer appended at a 16-byte-aligned offset
    past the flatbuffer; the metadata buffers (a few bytes) stay inline."""
    if not use_buffer_offset(model, buffer_offset):
        return _finish(model)
    inline = {m.buffer for m in model.metadata or []}
    payloads = [None if b.data is None or i in inline or not len(b.data) else _payload(b.data)
                for i, b in enumerate(model.buffers)]
    metadata = list(model.metadata or [])
    if not any(m.name in ("buffer_location", b"buffer_location") for m in metadata):
        metadata.append(fb.MetadataT(name="buffer_location", buffer=len(model.buffers)))
        extra = [_AlignedBufferT(data=BUFFER_LOCATION)]
    else:
        extra = []

    def layout(offsets: list[int]) -> memoryview:
        buffers = []
        for b, p, o in zip(model.buffers, payloads, offsets):
            if p is None:
                buffers.append(_AlignedBufferT(data=b.data))
            else:
                buffers.append(_AlignedBufferT(offset=o, size=len(p)))
        out = copy.copy(model)
        out.buffers, out.metadata = buffers + extra, metadata
        return _finish(out)

    # The offsets are scalars of fixed width, so placeholder values give a flatbuffer of the
    # final size: pack once to learn it, then again with the real offsets.
    size = len(layout([_PLACEHOLDER] * len(payloads))[0])
    offsets, tail, at = [], [], _align(size)
    for p in payloads:
        offsets.append(at if p is not None else 0)
        if p is not None:
            tail.append((at, p))
            at = _align(at + len(p))
    head, holes = layout(offsets)
    if len(head) != size:
        raise AssertionError(f"flatbuffer changed size with its offsets ({size} -> {len(head)})")
    return head, sorted(holes + tail, key=lambda piece: piece[0])


def _chunks(head: memoryview, tail: list[tuple[int, np.ndarray]]):
    """The file's bytes in order: the flatbuffer, each payload at its offset (in a hole of
    the flatbuffer, or after it past zero padding)."""
    at = 0
    for offset, payload in tail:
        if offset > at and at < len(head):
            yield head[at:min(offset, len(head))]
        if offset > max(at, len(head)):
            yield bytes(offset - max(at, len(head)))
        yield from _pieces(payload)
        at = offset + len(payload)
    if at < len(head):
        yield head[at:]


def pack(model: fb.ModelT, buffer_offset: bool | None = None) -> bytes:
    """Serializes a ModelT with the TFL3 file identifier (the whole file: the flatbuffer,
    then the appended weights in the offset layout; see `serialize`)."""
    head, tail = serialize(model, buffer_offset)
    out = bytearray()
    for chunk in _chunks(head, tail):   # copied as they come: a RelaidWeight reuses its buffer
        out += memoryview(chunk)
    return bytes(out)


def save(model: fb.ModelT, path: str | os.PathLike, buffer_offset: bool | None = None) -> int:
    """Writes the model to `path` atomically (a temporary sibling, renamed into place), the
    weights streamed from their arrays; returns the file's size."""
    head, tail = serialize(model, buffer_offset)
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.tmp-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            for chunk in _chunks(head, tail):
                write_chunked(f, chunk)
            size = f.tell()
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return size


def lower_problems(module: Module) -> list[Diagnostic]:
    """Every reason the module cannot be written as TFLite (empty when it can): each IR node
    that cannot be lowered, with its node, scope and loc."""
    return build_model(module)[1]


def write_tflite(module: Module, *, fp16: bool = False, notes: list[str] | None = None,
                 buffer_offset: bool | None = None) -> bytes:
    """The `.tflite` flatbuffer for `module.main`. Deterministic: the same IR always gives the
    same bytes. fp16=True stores float32 weights as float16 behind DEQUANTIZE ops. Raises
    ConversionError listing every node that cannot be lowered. `notes` receives a line per
    quantized node written in float (no integer kernel for it). `buffer_offset` picks the
    large-model layout (weights after the flatbuffer; None: past BUFFER_OFFSET_THRESHOLD);
    for big models prefer `save_tflite`, which does not hold the file in memory."""
    model, problems = build_model(module, fp16=fp16, notes=notes)
    if problems:
        raise ConversionError("cannot write TFLite", problems)
    return pack(model, buffer_offset)


def write_tflite_signatures(entries: Mapping[str, Module], *, fp16: bool = False,
                            notes: list[str] | None = None,
                            buffer_offset: bool | None = None) -> bytes:
    """One `.tflite` flatbuffer with a signature per entry of `entries` (key -> module), their
    weights stored once (`build_signatures`). Raises ConversionError listing every problem."""
    model, problems = build_signatures(entries, fp16=fp16, notes=notes)
    if problems:
        raise ConversionError("cannot write TFLite", problems)
    return pack(model, buffer_offset)


def save_tflite(module: Module, path: str | os.PathLike, *, fp16: bool = False,
                notes: list[str] | None = None, buffer_offset: bool | None = None) -> int:
    """`write_tflite` into the file `path`, written atomically and with the weights streamed
    from the IR's arrays (memory stays near the weights' own size); returns the file size.
    Raises ConversionError, before writing anything, listing every unlowerable node."""
    model, problems = build_model(module, fp16=fp16, notes=notes)
    if problems:
        raise ConversionError("cannot write TFLite", problems)
    return save(model, path, buffer_offset)


def save_tflite_signatures(entries: Mapping[str, Module], path: str | os.PathLike, *,
                           fp16: bool = False, notes: list[str] | None = None,
                           buffer_offset: bool | None = None) -> int:
    """`write_tflite_signatures` into the file `path` (atomic, weights streamed)."""
    model, problems = build_signatures(entries, fp16=fp16, notes=notes)
    if problems:
        raise ConversionError("cannot write TFLite", problems)
    return save(model, path, buffer_offset)
