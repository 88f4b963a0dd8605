"""The quantization driver: configuration -> calibration -> QDQ module -> per-target form.

    result = quantize_module(module, "int8", calibration_data=samples)
    result.module            # QDQ form (SavedModel and TF.js run it as is)
    for_target(result, "tflite")   # integer form for the TFLite backend

Also the QAT path (a module that already holds quantize/dequantize pairs from fake-quant
layers) and per-layer error analysis for `tensorforge quant-report`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from ..ir.errors import ConversionError, Diagnostic
from ..ir.graph import Module, Node
from ..ir.verify import verify_module
from ..passes.quantize import schemes as S
from ..passes.quantize.calibrate import calibrate, check_calibration_data
from ..passes.quantize.config import QuantizationConfigurationMap
from ..passes.quantize.configuration import ConfigError
from ..passes.quantize.insert import InsertReport, QuantizationPlan
from ..passes.quantize.lower import lower_quantized
from ..passes.quantize.observers import make_observer
from ..passes.quantize.prepare import unfuse_activations
from ..passes.quantize.resolution import Resolution


@dataclass
class QuantizeResult:
    """A quantized module in QDQ form and how it came about."""

    module: Module
    scheme: S.Scheme
    resolution: Resolution | None
    report: InsertReport | None
    float_module: Module | None = None
    node_map: dict = field(default_factory=dict, repr=False)   # id(qdq node) -> float node
    calibration_seconds: float = 0.0
    io: str = "float"

    def float_nodes(self) -> list[tuple[str, str, str]]:
        """(scope, op, reason) of every node the scheme would quantize but left in float: for
        static schemes every float computation, for weight-only, dynamic and fp16 schemes
        the nodes that hold a float weight (other nodes have nothing to quantize there)."""
        if self.resolution is None:
            return []
        static = self.scheme.mode == "static"
        out = []
        for n in self.resolution.float_nodes():
            node = n.node
            computes = any(v.type.dtype.is_float for v in node.outputs)
            # TFLiteConverter's rule for what counts as a weight: >= 1024 elements.
            has_weight = any(v.const is not None and v.type.dtype.is_float
                             and np.asarray(v.const).size >= 1024 for v in node.inputs)
            if (static and computes) or has_weight:
                out.append((n.scope, n.op, n.float_reason))
        return out


def as_config_map(quantization: Any) -> QuantizationConfigurationMap:
    """A QuantizationConfigurationMap from a scheme name, a Scheme or a map itself."""
    if isinstance(quantization, QuantizationConfigurationMap):
        return quantization
    if isinstance(quantization, (str, S.Scheme)):
        return QuantizationConfigurationMap(S.get(quantization))
    raise ConfigError(f"quantization must be a scheme name ({', '.join(S.names())}), a Scheme "
                      f"or a QuantizationConfigurationMap, got {type(quantization).__name__}")


# Set by the Keras frontend on a model Keras quantized (`frontends/keras/quantized.py`).
_KERAS_QUANTIZATION = "keras_quantization"
_KERAS_ACTIVATIONS = "keras_activation_quantization"


def has_fake_quant(module: Module) -> bool:
    """True when the module is already quantized: it holds QDQ pairs (a model trained with
    fake-quant) or integer weights Keras stored (`model.quantize(...)`)."""
    return bool(module.metadata.get(_KERAS_QUANTIZATION)) or \
        any(n.op == "quantize" for n in module.main)


def _observer(cfg):
    return make_observer(cfg.calibration, bits=cfg.bits, symmetric=cfg.symmetric,
                         percentile=cfg.percentile)


def quantize_module(module: Module, quantization: Any, calibration_data=None, *,
                    runner=None, progress: bool = True, keep_float: bool = False
                    ) -> QuantizeResult:
    """Quantizes `module` (not modified) into QDQ form.

    Static schemes need `calibration_data` (a representative dataset, checked against the
    signature before any work); dynamic, weight-only and fp16 schemes ignore it. `runner`
    executes the float graph for calibration (default: the IR interpreter). With
    `keep_float`, the result also keeps the float module and a node map for error analysis."""
    qmap = as_config_map(quantization)
    scheme = qmap.scheme
    float_module = module.clone() if keep_float else None
    work = module.clone()
    node_map = {}
    if float_module is not None:
        node_map = {id(a): b for a, b in zip(work.main, float_module.main)}
    # Tanh after a conv/matmul gets its own node: its input needs params of its own.
    unfuse_activations(work)
    resolution = qmap.resolve(work)
    plan = QuantizationPlan(work, resolution, scheme)
    requests = plan.requests()
    ranges: dict = {}
    seconds = 0.0
    if requests:
        if calibration_data is None:
            raise ConversionError(
                f"scheme {scheme.name} quantizes activations and needs calibration data "
                f"(calibration_data=..., or --calibration-data FILE.npz); "
                f"{len(requests)} activation tensors to calibrate")
        start = time.perf_counter()
        ranges = calibrate(work, calibration_data,
                           {v: _observer(cfg) for v, cfg in requests.items()},
                           runner=runner, progress=progress)
        seconds = time.perf_counter() - start
    report = plan.apply(ranges)
    verify_module(work)
    return QuantizeResult(work, scheme, resolution, report, float_module, node_map, seconds,
                          io=getattr(scheme, "io", "float"))


def from_fake_quant(module: Module) -> QuantizeResult:
    """A module lifted from a QAT model, or from a model Keras quantized, is already in QDQ
    form: wrap it as a result. Keras' int8 layers quantize their input at run time, which is
    the `dynamic-int8` scheme (TFLite's hybrid kernels on the stored codes); its int4 layers
    (and int8 ones without an input quantizer) are weight-only (`int4-weight`: DEQUANTIZE of
    the stored codes before a float kernel)."""
    if module.metadata.get(_KERAS_QUANTIZATION) and \
            not any(n.op == "quantize" for n in module.main):
        dynamic = module.metadata.get(_KERAS_ACTIVATIONS) == "dynamic"
        return QuantizeResult(module, S.get("dynamic-int8" if dynamic else "int4-weight"),
                              None, None)
    return QuantizeResult(module, S.get("int8-qat"), None, None)


def for_target(result: QuantizeResult, target: str) -> Module:
    """The module a backend gets: TFLite runs the integer form; SavedModel and TF.js run the
    QDQ form (their runtimes have no int8 kernels to gain from)."""
    if target != "tflite":
        return result.module
    lowered = result.module.clone()
    lower_quantized(lowered, hybrid=result.scheme.mode == "dynamic", io=result.io)
    verify_module(lowered)
    return lowered


# -- per-layer error analysis ------------------------------------------------------------------

@dataclass
class LayerError:
    """Error of one node's result in the quantized model against the float model."""

    scope: str
    op: str
    sqnr_db: float          # 10 log10(signal power / error power); inf when exact
    max_abs: float
    quantized: bool


def sqnr_db(reference: np.ndarray, actual: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio in dB (inf for an exact match)."""
    ref = np.asarray(reference, np.float64)
    err = np.asarray(actual, np.float64) - ref
    noise = float(np.sum(err * err))
    signal = float(np.sum(ref * ref))
    if noise == 0:
        return float("inf")
    if signal == 0:
        return float("-inf")
    return 10.0 * np.log10(signal / noise)


def layer_errors(result: QuantizeResult, calibration_data, *, runner=None,
                 limit: int = 32) -> list[LayerError]:
    """Runs the float and the quantized (QDQ) module on up to `limit` samples and compares
    every float node result that survives in both, in graph order (TFLite's
    QuantizationDebugger's per-layer view)."""
    if result.float_module is None:
        raise ValueError("quantize_module(..., keep_float=True) keeps what this needs")
    from ..passes.quantize.calibrate import interpreter_runner

    runner = runner or interpreter_runner
    samples = check_calibration_data(result.module, calibration_data)[:limit]
    pairs: list[tuple[Node, Node]] = []
    for node in result.module.main:
        twin = result.node_map.get(id(node))
        if twin is None or node.op in ("constant", "quantize", "dequantize"):
            continue
        if len(node.outputs) == 1 and node.output.type.dtype.is_float:
            pairs.append((node, twin))
    if not pairs:
        return []
    q_run = runner(result.module, [n.output for n, _ in pairs])
    f_run = runner(result.float_module, [t.output for _, t in pairs])
    q_acc = [[] for _ in pairs]
    f_acc = [[] for _ in pairs]
    for sample in samples:
        for acc, arrays in ((q_acc, q_run(sample)), (f_acc, f_run(sample))):
            for a, arr in zip(acc, arrays):
                a.append(np.asarray(arr, np.float64).ravel())
    quantized = _quantized_nodes(result)
    out = []
    for (node, _), qa, fa in zip(pairs, q_acc, f_acc):
        q, f = np.concatenate(qa), np.concatenate(fa)
        out.append(LayerError(node.scope, node.op, sqnr_db(f, q),
                              float(np.max(np.abs(q - f))) if q.size else 0.0,
                              id(node) in quantized))
    return out


def _quantized_nodes(result: QuantizeResult) -> set[int]:
    if result.resolution is None:
        return set()
    return {id(n.node) for n in result.resolution.nodes if not n.is_float}


def describe_float_nodes(result: QuantizeResult) -> list[Diagnostic]:
    """One diagnostic per node left in float (for reports and the CLI)."""
    return [Diagnostic(f"{op} stays float: {reason}", scope=scope)
            for scope, op, reason in result.float_nodes()]


__all__: Sequence[str] = [
    "QuantizeResult", "as_config_map", "has_fake_quant", "quantize_module", "from_fake_quant",
    "for_target", "LayerError", "sqnr_db", "layer_errors",
    "check_calibration_data",
    "describe_float_nodes"]
