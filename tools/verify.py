"""The numerics contract: run the source model, the IR interpreter and each artifact on the
same inputs and report max abs / relative error per output.

Relative error is max|got - want| / max|want| over an output (a tensor-level measure, so tiny
reference elements do not blow it up)."""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

from ..ir.errors import ConversionError, Diagnostic
from ..ir.graph import Graph, Module
from ..ir.interpreter import run_graph
from ..ir.ops.nn import float_accumulation
from ..ir.types import UNKNOWN, DType

FLOAT_RTOL = 1e-4  # the float32 contract (docs/guide/targets.md, "Tolerances")

# Weight compression bounds the error it implies: float16 keeps ~3 decimal digits, uint16 and
# uint8 affine codes keep 1/65535 and 1/255 of each tensor's range.
COMPRESSED_RTOL = {"float16": 1e-2, "uint16": 1e-2, "uint8": 1e-1}
# A quantized artifact against the IR of the same quantized module, when the output has no
# quantization step to count in (a float output computed after the last dequantize).
QUANT_RTOL = 5e-2
# Integer kernels round their accumulators differently from the reference's real arithmetic
# (and from each other: LiteRT's XNNPACK and builtin int8 kernels differ the same way), which
# moves a few codes by one. To hold an artifact to what that can do and no more, the quantized
# IR runs once more with the codes within this band of a .5 tie rounded the other way (about
# 2% of them); twice how far its outputs move, in output steps (at least one), is the
# tolerance. Measured: a random-weight MobileNetV2 (SQNR 8 dB) moves 36 steps, as far as
# LiteRT's two int8 kernel sets differ from each other on it (31-36), and its int16x8
# artifact differs by 1.03x that spread; a trained CNN does not move.
QUANT_TIE_BAND = 1e-2
QUANT_SPREAD_FACTOR = 2.0
# The float-vs-quantized check: each output's SQNR must reach this (the user can set it); an
# output that collapses (constant where the float one is not) always fails.
DEFAULT_MIN_SQNR_DB = 5.0


# bf16/f16 programs run in f32 in the artifacts (passes/dtypes.py) but in their own dtype in
# the source: they differ by the narrow dtype's rounding, a few units of its epsilon.
NARROW_FLOAT_RTOL = {DType.bf16: 5e-2, DType.f16: 5e-3}


def narrow_float_tolerance(module: Module) -> float:
    """The error floor of a module computing in bf16/f16 somewhere (0 when it does not)."""
    seen = {o.type.dtype for g in module.all_graphs() for n in g for o in n.outputs}
    seen |= {v.type.dtype for v in module.main.inputs}
    return max((NARROW_FLOAT_RTOL[d] for d in seen if d in NARROW_FLOAT_RTOL), default=0.0)


def tolerance(target: str, *, fp16: bool = False, tfjs_quantize: str | None = None) -> float:
    """The relative error a target's artifact is held to."""
    if target == "tflite" and fp16:
        return COMPRESSED_RTOL["float16"]
    if target == "tfjs" and tfjs_quantize:
        return COMPRESSED_RTOL[tfjs_quantize]
    return FLOAT_RTOL


@dataclass
class ErrorRow:
    runtime: str       # "ir", "tflite", ...
    output: str
    max_abs: float
    max_rel: float
    tolerance: float   # on max_rel, unless one of the checks below replaces it
    sizes: str = ""    # the run-time sizes of this run ("batch=1, seq=5"), when several
    abs_tolerance: float | None = None   # on max_abs instead (quantized artifacts)
    steps: float | None = None           # abs_tolerance in output quantization steps
    sqnr_db: float | None = None         # float vs quantized: signal-to-quantization-noise
    min_sqnr_db: float | None = None     # ... and the least it may be
    collapsed: bool = False              # quantized output constant where float's is not

    @property
    def ok(self) -> bool:
        if self.collapsed:
            return False
        if self.min_sqnr_db is not None:
            return self.sqnr_db is not None and self.sqnr_db >= self.min_sqnr_db
        if self.abs_tolerance is not None:
            return self.max_abs <= self.abs_tolerance
        return self.max_rel <= self.tolerance

    def tolerance_text(self) -> str:
        if self.min_sqnr_db is not None:
            return f"SQNR >= {self.min_sqnr_db:g} dB"
        if self.abs_tolerance is not None:
            steps = f" ({self.steps:g} steps)" if self.steps is not None else ""
            return f"{self.abs_tolerance:.1e} abs{steps}"
        return "-" if self.tolerance == float("inf") else f"{self.tolerance:.0e}"


@dataclass
class Verification:
    """Errors of each runtime against the reference (the source model, else the IR)."""

    reference: str
    batch: int
    rows: list[ErrorRow] = field(default_factory=list)
    inputs: str = "random inputs"   # what the runtimes were fed, for the table's title
    failures: dict[str, str] = field(default_factory=dict)  # runtime -> why it did not run
    # Wall seconds each runtime took over all the input sets (loading its artifact included),
    # in the order they ran, and how it ran where that varies ("wasm backend").
    seconds: dict[str, float] = field(default_factory=dict)
    details: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.rows)

    @contextmanager
    def timed(self, runtime: str):
        """Adds the wall time of the block to `runtime`'s seconds."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[runtime] = self.seconds.get(runtime, 0.0) + \
                time.perf_counter() - start

    def order_seconds(self, order) -> None:
        """Lists the runtimes' seconds in `order` (those not in it after)."""
        rank = {k: i for i, k in enumerate(order)}
        self.seconds = dict(sorted(self.seconds.items(),
                                   key=lambda kv: rank.get(kv[0], len(rank))))

    def timing_text(self) -> str:
        """`seconds: keras 1.2, ir 0.8, tflite 0.3, ...` (empty when nothing was timed)."""
        if not self.seconds:
            return ""
        parts = [f"{k} {v:.2f}" + (f" ({self.details[k]})" if k in self.details else "")
                 for k, v in self.seconds.items()]
        return "seconds per runtime: " + ", ".join(parts)

    def max_rel(self, runtime: str) -> float:
        return max((r.max_rel for r in self.rows if r.runtime == runtime), default=0.0)

    def table(self) -> str:
        """A plain-text table (the CLI prints it)."""
        sized = any(r.sizes for r in self.rows)
        snr = any(r.sqnr_db is not None for r in self.rows)
        head = ("runtime", "output") + (("sizes",) if sized else ()) + (
            "max abs err", "max rel err") + (("SQNR dB",) if snr else ()) + ("tolerance", "ok")
        rows = [head] + [(r.runtime, r.output) + ((r.sizes,) if sized else ()) + (
            f"{r.max_abs:.3e}", f"{r.max_rel:.3e}") + (
            (f"{r.sqnr_db:.1f}" if r.sqnr_db is not None else "",) if snr else ()) + (
            r.tolerance_text(), "yes" if r.ok else "NO") for r in self.rows]
        widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
        lines = [f"verification against {self.reference} (batch {self.batch}, {self.inputs})"]
        for i, row in enumerate(rows):
            lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths)))
            if i == 0:
                lines.append("  ".join("-" * w for w in widths))
        lines += [f"{runtime} did not run: {why}" for runtime, why in self.failures.items()]
        if self.seconds:
            lines.append(self.timing_text())
        lines += [f"{r.runtime} {r.output}: the quantized output is constant where the float "
                  f"one is not (quantization collapsed it)" for r in self.rows if r.collapsed]
        return "\n".join(lines)


def errors(got: np.ndarray, want: np.ndarray) -> tuple[float, float]:
    got = np.asarray(got, np.float64)
    want = np.asarray(want, np.float64)
    if got.shape != want.shape:
        return float("inf"), float("inf")
    if got.size == 0:
        return 0.0, 0.0
    # Equal values (infinities and NaNs included) agree; the scale is the largest finite one.
    same = (got == want) | (np.isnan(got) & np.isnan(want))
    with np.errstate(invalid="ignore"):
        diff = np.where(same, 0.0, np.abs(got - want))
    abs_err = float(np.max(diff)) if not np.isnan(diff).any() else float("inf")
    finite = np.abs(want[np.isfinite(want)])
    scale = float(np.max(finite)) if finite.size else 0.0
    return abs_err, abs_err / scale if scale > 0 else abs_err


# Ops that pass an integer input's values through unchanged (to the table lookup they feed).
_VALUE_PRESERVING = frozenset({"cast", "reshape", "expand_dims", "squeeze", "identity",
                               "transpose", "broadcast_to", "slice", "strided_slice", "tile",
                               "concat", "dynamic_reshape", "dynamic_broadcast_to",
                               "dynamic_tile", "dynamic_slice", "dynamic_strided_slice"})


def _int_upper_bound(graph: Graph, value) -> int:
    """A safe exclusive upper bound for an integer input: the size of the smallest table it
    indexes (token ids, segment ids, positions feeding a gather, also through casts and
    reshapes), else 10."""
    bound, seen, todo = None, set(), [value]
    while todo:
        v = todo.pop()
        if id(v) in seen:
            continue
        seen.add(id(v))
        for user, i in v.uses:
            op = getattr(user, "op", None)
            if op == "gather" and i == 1:
                axis = user.attrs["axis"] % user.inputs[0].type.rank
                dim = user.inputs[0].type.shape[axis]
                if isinstance(dim, int):
                    bound = dim if bound is None else min(bound, dim)
            elif op in _VALUE_PRESERVING or (op == "where" and i > 0):
                # where(ids < 0, ids + n, ids): Keras' negative-index wrap before a lookup.
                todo.extend(user.outputs)
    return bound or 10


def _is_mask(name: str, v) -> bool:
    """A padding/attention mask input (by name, as Keras and KerasHub call them, or a bool)."""
    return v.type.dtype == DType.bool or "mask" in name.lower()


def _mask(rng, shape) -> np.ndarray:
    """0/1 rows like real padding masks: a random-length prefix of ones, never empty."""
    if not shape:
        return np.ones(shape, np.int64)
    lengths = rng.integers(1, shape[-1] + 1, shape[:-1]) if shape[-1] else np.zeros(shape[:-1])
    return (np.arange(shape[-1]) < lengths[..., None]).astype(np.int64)


def sample_inputs(module: Module, batch: int = 2, seed: int = 0,
                  dim: int | None = None) -> dict[str, np.ndarray]:
    """Random inputs fitting the entry graph's signature (the symbol `batch` set to `batch`,
    other run-time dims to `dim`, default `batch`, distinct named ones to `dim`, `dim + 1`,
    ...), keyed by the module's input names, with
    values the model accepts: floats from a standard normal, integer ids below the size of
    the table they index, masks (bool inputs, or inputs named `*mask*`) as rows of ones then
    zeros with at least one one."""
    graph = module.main
    names = input_names(module)
    rng = np.random.default_rng(seed)
    dim = batch if dim is None else dim
    # Distinct named run-time dims (an encoder's and a decoder's lengths) get distinct sizes.
    named = sorted({d for v in graph.inputs for d in v.type.shape
                    if isinstance(d, str) and d not in ("batch", UNKNOWN)})
    size_of = {d: dim + j for j, d in enumerate(named)}
    out = {}
    for name, v in zip(names, graph.inputs):
        shape = [d if isinstance(d, int) else batch if d == "batch" else size_of.get(d, dim)
                 for d in v.type.shape]
        dt = v.type.dtype
        if dt.is_float:
            arr = rng.standard_normal(shape)
        elif _is_mask(name, v):
            arr = _mask(rng, shape)
        else:
            arr = rng.integers(0, _int_upper_bound(graph, v), shape)
        out[name] = np.asarray(arr).astype(dt.np)
    return out


def input_names(module: Module) -> list[str]:
    """The entry graph's input names, as the artifacts' signatures name them."""
    names = list(module.metadata.get("input_names", ()))
    return names or [v.name or f"input_{i}" for i, v in enumerate(module.main.inputs)]


def given_inputs(module: Module, data) -> dict[str, np.ndarray]:
    """User-given verification inputs (a mapping of input name -> array, or an .npz path with
    one array per input), checked against the entry graph's signature: every input given, no
    unknown name, the same rank, dtype kind and static dims, one size per symbolic dim.
    Raises ConversionError listing every problem."""
    where = "verify_inputs"
    if isinstance(data, (str, os.PathLike)):
        where = str(data)
        from ..passes.quantize.calibrate import read_npz

        data = read_npz(data, "verification inputs")
    if not isinstance(data, Mapping):
        raise ConversionError(f"{where} must map input names to arrays (or be an .npz path)")
    names = input_names(module)
    problems = [Diagnostic(f"input {n!r} is missing") for n in names if n not in data]
    problems += [Diagnostic(f"{k!r} is not an input of the model (inputs: {', '.join(names)})")
                 for k in data if k not in names]
    out, sizes = {}, {}
    for name, v in zip(names, module.main.inputs):
        if name not in data:
            continue
        arr, t = np.asarray(data[name]), v.type
        kind = "float" if t.dtype.is_float else "bool" if t.dtype == DType.bool else "integer"
        got = "float" if arr.dtype.kind == "f" else "bool" if arr.dtype.kind == "b" else \
            "integer" if arr.dtype.kind in "iu" else arr.dtype.name
        if got != kind:
            problems.append(Diagnostic(f"input {name!r}: {arr.dtype} values for a {t.dtype} "
                                       f"input"))
        if arr.ndim != len(t.shape):
            problems.append(Diagnostic(f"input {name!r}: shape {list(arr.shape)} for an input "
                                       f"of type {t} (rank {len(t.shape)})"))
            continue
        for d, (n, want) in enumerate(zip(arr.shape, t.shape)):
            if isinstance(want, int) and n != want:
                problems.append(Diagnostic(f"input {name!r}: dim {d} is {n}, the model needs "
                                           f"{want} (type {t})"))
            elif isinstance(want, str) and want != UNKNOWN and \
                    sizes.setdefault(want, (n, name))[0] != n:
                problems.append(Diagnostic(f"input {name!r}: dim {d} ({want}) is {n}, but "
                                           f"{sizes[want][1]!r} gives {want} = {sizes[want][0]}"))
        out[name] = arr.astype(t.dtype.np)
    if problems:
        raise ConversionError(f"{where} does not fit the model's inputs", problems)
    return out


def output_names(module: Module) -> list[str]:
    names = list(module.metadata.get("output_names", ()))
    return names or [v.name or f"output_{i}" for i, v in enumerate(module.main.outputs)]


def failed_run(verification: Verification, runtime: str, names: list[str], error: Exception,
               sizes: str = "") -> None:
    """Records that `runtime` could not run the artifact: a NO row per output (infinite
    error) and the reason under the table, so the check fails instead of crashing."""
    why = str(error).strip().splitlines()[0][:300] if str(error).strip() else \
        type(error).__name__
    verification.failures.setdefault(runtime, f"{type(error).__name__}: {why}")
    for name in names:
        verification.rows.append(ErrorRow(runtime, name, float("inf"), float("inf"), 0.0,
                                           sizes))


def compare(verification: Verification, runtime: str, got: list[np.ndarray],
            want: list[np.ndarray], names: list[str], tolerance: float,
            sizes: str = "") -> None:
    for name, g, w in zip(names, got, want, strict=True):
        a, r = errors(g, w)
        verification.rows.append(ErrorRow(runtime, name, a, r, tolerance, sizes))


def sqnr_db(want: np.ndarray, got: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio of `got` against `want`, in dB (inf: identical)."""
    want, got = np.asarray(want, np.float64), np.asarray(got, np.float64)
    noise = float(np.sum((want - got) ** 2))
    signal = float(np.sum(want ** 2))
    if noise == 0.0:
        return float("inf")
    return 10.0 * np.log10(signal / noise) if signal > 0 else float("-inf")


def compare_quantized(verification: Verification, runtime: str, quantized: list[np.ndarray],
                      floats: list[np.ndarray], names: list[str], min_sqnr: float) -> None:
    """The quantized model's outputs against the float model's: SQNR (at least `min_sqnr`)
    and collapse (a constant output where the float one varies)."""
    for name, q, w in zip(names, quantized, floats, strict=True):
        a, r = errors(q, w)
        q, w = np.asarray(q, np.float64), np.asarray(w, np.float64)
        collapsed = q.size > 1 and np.ptp(q) == 0 and np.ptp(w) > 0
        verification.rows.append(ErrorRow(runtime, name, a, r, float("inf"),
                                          sqnr_db=sqnr_db(w, q), min_sqnr_db=min_sqnr,
                                          collapsed=bool(collapsed)))


def compare_in_steps(verification: Verification, runtime: str, got: list[np.ndarray],
                     want: list[np.ndarray], names: list[str],
                     tolerances: list[tuple[float | None, float | None]]) -> None:
    """A quantized artifact against the quantized IR: each output held to (absolute
    tolerance, in how many output steps), or to QUANT_RTOL when it has no step."""
    for name, g, w, (tol, steps) in zip(names, got, want, tolerances, strict=True):
        a, r = errors(g, w)
        verification.rows.append(ErrorRow(runtime, name, a, r, QUANT_RTOL,
                                          abs_tolerance=tol, steps=steps))


def has_runtime_dims(module: Module) -> bool:
    """True when some input of the entry graph has a run-time (symbolic) dim."""
    return any(isinstance(d, str) for v in module.main.inputs for d in v.type.shape)


def sizes_label(module: Module, inputs: dict[str, np.ndarray]) -> str:
    """`batch=1, dim=5`: the sizes the run-time dims of the inputs took."""
    seen, unnamed = {}, []
    for v, arr in zip(module.main.inputs, inputs.values()):
        for d, n in zip(v.type.shape, np.shape(arr)):
            if d == UNKNOWN:
                unnamed.append(int(n)) if int(n) not in unnamed else None
            elif isinstance(d, str):
                seen.setdefault(d, int(n))
    if unnamed:     # anonymous run-time dims: their distinct sizes
        seen["dim"] = "/".join(map(str, unnamed))
    return ", ".join(f"{k}={n}" for k, n in seen.items())


def run_ir(module: Module, inputs: dict[str, np.ndarray], *, float32: bool = False
           ) -> list[np.ndarray]:
    """The IR interpreter's outputs; `float32`: convolutions and matmuls accumulate in
    float32 (twice as fast; for a run checked against the source model, which computes in
    float32 itself, not where the IR is the reference)."""
    # Set either way: a caller's own float_accumulation block must not change the reference.
    with float_accumulation(np.float32 if float32 else np.float64):
        return run_graph(module.main, list(inputs.values()))
