"""`tensorforge inspect FILE`: inputs/outputs (names, shapes, dtypes), op histogram,
parameter count and size of a `.tflite`, `.keras`, SavedModel directory or `.tfir` file."""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..ir.errors import ConversionError
from .files import existing_path
from ..ir.graph import Module


@dataclass
class Summary:
    kind: str
    path: str
    size_bytes: int
    inputs: list[tuple[str, str, str]] = field(default_factory=list)   # (name, dtype, shape)
    outputs: list[tuple[str, str, str]] = field(default_factory=list)
    ops: collections.Counter = field(default_factory=collections.Counter)
    params: int = 0
    notes: list[str] = field(default_factory=list)

    def render(self) -> str:
        lines = [f"{self.path}: {self.kind}, {self.size_bytes:,} bytes, "
                 f"{self.params:,} parameters"]
        for title, rows in (("inputs", self.inputs), ("outputs", self.outputs)):
            lines.append(f"{title}:")
            lines += [f"  {n:<24} {d:<8} {s}" for n, d, s in rows]
        lines.append(f"ops ({sum(self.ops.values())}):")
        lines += [f"  {op:<28} {n}" for op, n in sorted(self.ops.items(),
                                                       key=lambda kv: (-kv[1], kv[0]))]
        lines += self.notes
        return "\n".join(lines)


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def _shape_text(shape) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"


def summarize_module(module: Module, path: str, kind: str, size: int) -> Summary:
    g = module.main
    in_names = list(module.metadata.get("input_names", ())) or [v.name or "?" for v in g.inputs]
    out_names = list(module.metadata.get("output_names", ())) or \
        [v.name or "?" for v in g.outputs]
    s = Summary(kind, path, size)
    s.inputs = [(n, v.type.dtype.value, _shape_text(v.type.shape))
                for n, v in zip(in_names, g.inputs)]
    s.outputs = [(n, v.type.dtype.value, _shape_text(v.type.shape))
                 for n, v in zip(out_names, g.outputs)]
    s.ops = collections.Counter(n.op for n in g if n.op != "constant")
    s.params = sum(int(n.attrs["value"].size) for n in g if n.op == "constant")
    return s


def summarize_tflite(path: Path) -> Summary:
    from ai_edge_litert import schema_py_generated as schema

    data = path.read_bytes()
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise ConversionError(f"{path} is not a TFLite flatbuffer (no TFL3 identifier)")
    try:
        model = schema.ModelT.InitFromObj(schema.Model.GetRootAs(data, 0))
    except Exception as e:
        raise ConversionError(f"{path} is a corrupt TFLite file ({type(e).__name__})") from None
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    dtypes = {v: k.lower() for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    s = Summary("TFLite flatbuffer", str(path), len(data))
    sub = model.subgraphs[0]

    def describe(i):
        t = sub.tensors[i]
        shape = t.shapeSignature if t.shapeSignature is not None and len(t.shapeSignature) \
            else t.shape
        name = t.name.decode() if isinstance(t.name, bytes) else str(t.name)
        return name, dtypes.get(t.type, str(t.type)), _shape_text(
            ["?" if d == -1 else int(d) for d in (shape if shape is not None else [])])

    sig = model.signatureDefs[0] if model.signatureDefs else None
    if sig is not None:
        s.inputs = [(m.name.decode(), *describe(m.tensorIndex)[1:]) for m in sig.inputs]
        s.outputs = [(m.name.decode(), *describe(m.tensorIndex)[1:]) for m in sig.outputs]
    else:
        s.inputs = [describe(i) for i in sub.inputs]
        s.outputs = [describe(i) for i in sub.outputs]
    for op in sub.operators:
        code = model.operatorCodes[op.opcodeIndex]
        s.ops[names.get(max(code.builtinCode, code.deprecatedBuiltinCode), "CUSTOM")] += 1
    weight_bytes: collections.Counter = collections.Counter()
    quantized = collections.Counter()
    for t in sub.tensors:
        buf = model.buffers[t.buffer] if t.buffer < len(model.buffers) else None
        if buf is not None and buf.data is not None and len(buf.data):
            s.params += int(np.prod(t.shape)) if t.shape is not None else 0
            weight_bytes[dtypes.get(t.type, str(t.type))] += len(buf.data)
        q = t.quantization
        if q is not None and q.scale is not None and len(q.scale):
            quantized["per-channel" if len(q.scale) > 1 else "per-tensor"] += 1
    if weight_bytes:
        s.notes.append("constant bytes by type: " + ", ".join(
            f"{k} {v:,}" for k, v in sorted(weight_bytes.items(), key=lambda kv: -kv[1])))
    if quantized:
        s.notes.append("quantized tensors: " + ", ".join(
            f"{n} {k}" for k, n in sorted(quantized.items())))
    for m in model.metadata or []:
        s.notes.append(f"metadata: {m.name.decode()}")
    return s


def summarize_keras(path: Path) -> Summary:
    from ..frontends.keras import load_keras_file

    model = load_keras_file(path, safe_mode=True)
    s = Summary("Keras model", str(path), _size(path))
    s.inputs = [(t.name, str(t.dtype), _shape_text(["?" if d is None else d for d in t.shape]))
                for t in model.inputs]
    s.outputs = [(t.name, str(t.dtype), _shape_text(["?" if d is None else d for d in t.shape]))
                 for t in model.outputs]
    s.ops = collections.Counter(type(layer).__name__ for layer in model.layers)
    s.params = int(model.count_params())
    return s


def summarize(path: str | Path) -> Summary:
    """A Summary of any file tensorforge reads or writes; ConversionError otherwise."""
    p = existing_path(path)
    if p.is_dir():
        from .sources import load_source

        src = load_source(p)
        return summarize_module(src.module, str(p), "SavedModel (lifted to IR)", _size(p))
    suffix = p.suffix.lower()
    if suffix == ".tflite":
        return summarize_tflite(p)
    if suffix == ".keras":
        return summarize_keras(p)
    if suffix == ".tfir":
        from ..ir.text import parse_module
        from .files import read_text

        return summarize_module(parse_module(read_text(p), str(p)), str(p), "tensorforge IR",
                                _size(p))
    raise ConversionError(f"cannot inspect {p}: expected .tflite, .keras, .tfir or a SavedModel "
                          f"directory")
