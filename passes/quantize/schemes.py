"""Quantization schemes: named presets of what to quantize and how, and their registry.

A `Scheme` says which IR ops it quantizes (the kernel set the target runtime has integer
kernels for), the default `QuantizationConfiguration` of weights and activations, the bias
width and the mode. `QuantizationConfigurationMap` (config.py) starts from a scheme and
overrides it per layer, per op type and per tensor; this module imports only the
configurations (configuration.py), never the map.

Built-ins (mirroring the TFLite converter's modes):

| name | mode | weights | activations | bias |
|---|---|---|---|---|
| `int8` | static | 8-bit sym per-channel narrow | 8-bit asym per-tensor minmax | int32 |
| `int8-qat` | static, QAT | as int8 | as int8 (ranges learned) | int32 |
| `dynamic-int8` | dynamic | 8-bit sym per-channel | float (quantized at run time) | float |
| `int16x8` | static | 8-bit sym per-channel | 16-bit sym per-tensor | int64 |
| `fp16` | fp16 | float16 constants | float | float16 |
| `int4-weight` | weight_only | 4-bit sym per-channel (blockwise by override) | float | float |
| `pixel_8bit_qat` | static, QAT | 8-bit sym per-channel narrow | 8-bit asym per-tensor EMA | int32 |

`pixel_8bit_qat` is the TF Quantization API preview's named scheme for conv nets on mobile:
int8 weights per output channel, activations per tensor with moving-average ranges (EMA of
the batch min/max, in QAT and in calibration alike), relu/relu6 fused into the producing
conv/dense, ready for QAT (`apply_quantization_on_model`) and PTQ (`convert(...,
quantization="pixel_8bit_qat", calibration_data=...)`).

User schemes: `register(Scheme(...))`; a variant of a built-in is
`dataclasses.replace(get("int8"), name="int8-io", io="int8")`. The preview's spelling,
`tq.scheme_registry.get_scheme(name)` (also `register_scheme`, `list_schemes`), is this
module under another name.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any

from ...ir.errors import Diagnostic
from ...ir.ops import all_ops, has_op
from .configuration import (ACTIVATION_BITS, ConfigError, QuantizationConfiguration,
                            _config_from_dict)

MODES = ("static", "dynamic", "weight_only", "fp16")
BIAS_BITS = (32, 64)
IO_TYPES = ("float", "int8", "uint8", "int16")


@dataclass(frozen=True)
class Scheme:
    """A named quantization preset.

    mode:      `static` (weights and activations, calibrated ranges), `dynamic` (constant
               weights stored quantized, activations quantized at run time by the kernel),
               `weight_only` (weights stored quantized, dequantized before a float kernel),
               `fp16` (float constants stored as float16).
    weight:    default config of weights (constant filter / matmul b / gather table).
    activation: default config of activations and results; None outside `static` mode.
    bias_bits: 32, or 64 when activations are 16-bit (TFLite's int16x8).
    io:        dtype of the model's inputs and outputs: `float` keeps a float interface (a
               quantize at the inputs, a dequantize at the outputs); `int8`/`uint8`/`int16`
               expose the quantized tensors.
    ops:       IR op names the scheme quantizes; other ops stay float.
    qat:       the model is trained with fake-quant (ranges learned, not calibrated).
    """

    name: str
    mode: str
    weight: QuantizationConfiguration
    activation: QuantizationConfiguration | None = None
    bias_bits: int = 32
    io: str = "float"
    ops: frozenset[str] = field(default_factory=frozenset)
    qat: bool = False
    doc: str = ""

    def __post_init__(self):
        if not isinstance(self.ops, (frozenset, str)):
            # Frozen, but accept any iterable of names: normalise before validating.
            try:
                object.__setattr__(self, "ops", frozenset(self.ops))
            except TypeError:
                pass  # reported by problems()
        problems = self.problems()
        if problems:
            raise ConfigError(f"invalid scheme {self.name!r}", [Diagnostic(p) for p in problems])

    def problems(self) -> list[str]:
        """Every reason this scheme is invalid (empty when it is fine)."""
        out = []
        if not isinstance(self.name, str) or not self.name:
            out.append(f"name must be a non-empty string, got {self.name!r}")
        if self.mode not in MODES:
            out.append(f"mode {self.mode!r} is not one of {', '.join(MODES)}")
        if not isinstance(self.weight, QuantizationConfiguration):
            out.append(f"weight must be a QuantizationConfiguration, got {self.weight!r}")
        elif self.weight.dtype == "int" and self.weight.bits not in ACTIVATION_BITS:
            out.append(f"weight bits must be one of {', '.join(map(str, ACTIVATION_BITS))}, "
                       f"got {self.weight.bits}")
        if self.activation is not None:
            if not isinstance(self.activation, QuantizationConfiguration):
                out.append("activation must be a QuantizationConfiguration or None, "
                           f"got {self.activation!r}")
            elif self.activation.bits not in ACTIVATION_BITS:
                out.append(f"activation bits must be one of "
                           f"{', '.join(map(str, ACTIVATION_BITS))}, got {self.activation.bits}")
        if self.mode == "static" and self.activation is None:
            out.append("a static scheme needs an activation config")
        if self.mode in MODES and self.mode != "static" and self.activation is not None:
            out.append(f"a {self.mode} scheme keeps activations float: activation must be None")
        if isinstance(self.weight, QuantizationConfiguration):
            if self.mode == "fp16" and self.weight.dtype != "float16":
                out.append("an fp16 scheme needs weight dtype 'float16'")
            if self.mode in ("static", "dynamic", "weight_only") and self.weight.dtype != "int":
                out.append(f"a {self.mode} scheme needs weight dtype 'int'")
        if self.bias_bits not in BIAS_BITS:
            out.append(f"bias_bits must be one of {', '.join(map(str, BIAS_BITS))}, "
                       f"got {self.bias_bits!r}")
        if self.io not in IO_TYPES:
            out.append(f"io {self.io!r} is not one of {', '.join(IO_TYPES)}")
        if not isinstance(self.ops, frozenset):
            out.append(f"ops must be a set of IR op names, got {type(self.ops).__name__}")
        else:
            known = all_ops()
            for op in sorted(self.ops, key=str):
                if not isinstance(op, str) or not has_op(op):
                    close = difflib.get_close_matches(str(op), known, n=3)
                    hint = f" (did you mean {', '.join(close)}?)" if close else ""
                    out.append(f"ops: unknown IR op {op!r}{hint}")
        if not isinstance(self.qat, bool):
            out.append(f"qat must be a bool, got {self.qat!r}")
        return out

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (ops sorted) that `Scheme.from_dict` turns back into this."""
        return {"name": self.name, "mode": self.mode, "weight": self.weight.to_dict(),
                "activation": None if self.activation is None else self.activation.to_dict(),
                "bias_bits": self.bias_bits, "io": self.io, "ops": sorted(self.ops),
                "qat": self.qat, "doc": self.doc}

    @staticmethod
    def from_dict(data: Any, where: str = "scheme") -> "Scheme":
        """The scheme `to_dict` produced; ConfigError listing every problem otherwise."""
        problems: list[str] = []
        if not isinstance(data, dict):
            raise ConfigError("invalid scheme", [Diagnostic(f"{where}: expected an object")])
        fields = ("name", "mode", "weight", "activation", "bias_bits", "io", "ops", "qat", "doc")
        for k in data:
            if k not in fields:
                problems.append(f"{where}: unknown field {k!r} (valid: {', '.join(fields)})")
        for k in ("name", "mode", "weight"):
            if k not in data:
                problems.append(f"{where}: missing field {k!r}")
        kw = {k: data[k] for k in fields if k in data}
        if "weight" in kw:
            kw["weight"] = _config_from_dict(kw["weight"], f"{where}.weight", problems)
        if "activation" in kw and kw["activation"] is not None:
            kw["activation"] = _config_from_dict(kw["activation"], f"{where}.activation",
                                                 problems)
        if "ops" in kw:
            if not isinstance(kw["ops"], list):
                problems.append(f"{where}.ops: expected a list of op names")
            else:
                kw["ops"] = frozenset(str(o) for o in kw["ops"])
        if problems:
            raise ConfigError("invalid scheme", [Diagnostic(p) for p in problems])
        try:
            return Scheme(**kw)
        except ConfigError as e:
            raise ConfigError("invalid scheme", [Diagnostic(f"{where}: {d.message}")
                                                 for d in e.diagnostics]) from None


# -- built-ins ---------------------------------------------------------------------------------

# TFLite's int8 kernel set, as IR ops (builtin kernels with int8 versions).
INT8_OPS = frozenset({
    "conv2d", "depthwise_conv2d", "conv2d_transpose", "matmul", "add", "sub", "mul",
    "max_pool2d", "avg_pool2d", "concat", "reshape", "transpose", "squeeze", "expand_dims",
    "slice", "strided_slice", "pad", "softmax", "sigmoid", "tanh", "relu", "relu6", "clip",
    "hard_swish", "leaky_relu", "reduce_mean", "resize", "split", "gather", "maximum", "minimum",
    "identity"})

# TFLite's int16x8 (16-bit activations, 8-bit weights) kernel set: smaller than int8's.
INT16X8_OPS = frozenset({
    "conv2d", "depthwise_conv2d", "matmul", "add", "sub", "mul", "max_pool2d", "avg_pool2d",
    "concat", "reshape", "transpose", "squeeze", "expand_dims", "softmax", "sigmoid", "tanh",
    "relu", "relu6", "reduce_mean", "pad", "strided_slice", "slice", "identity"})

# fp16 stores every float constant as float16, whatever op reads it; nodes without a constant
# float operand resolve to "nothing to quantize". Quant ops themselves are excluded.
_NOT_FP16 = frozenset({"constant", "quantize", "dequantize", "fake_quant"})
FP16_OPS = frozenset(n for n in all_ops() if n not in _NOT_FP16)

_W8 = QuantizationConfiguration(bits=8, symmetric=True, granularity="per_channel",
                                narrow_range=True, calibration="minmax")
_A8 = QuantizationConfiguration(bits=8, symmetric=False, granularity="per_tensor",
                                calibration="minmax")
_A16 = QuantizationConfiguration(bits=16, symmetric=True, granularity="per_tensor",
                                 calibration="minmax")
_A8_EMA = QuantizationConfiguration(bits=8, symmetric=False, granularity="per_tensor",
                                    calibration="moving_average")
_W4 = QuantizationConfiguration(bits=4, symmetric=True, granularity="per_channel",
                                narrow_range=True, calibration="minmax")
_F16 = QuantizationConfiguration(bits=16, dtype="float16")

_BUILTINS = (
    Scheme("int8", "static", _W8, _A8, 32, ops=INT8_OPS,
           doc="Full integer: int8 per-channel weights, int8 per-tensor activations, int32 "
               "bias, calibrated on representative data."),
    Scheme("int8-qat", "static", _W8, _A8, 32, ops=INT8_OPS, qat=True,
           doc="As int8, with ranges learned by quantization-aware training."),
    Scheme("dynamic-int8", "dynamic", _W8, None, 32,
           ops=frozenset({"conv2d", "depthwise_conv2d", "matmul"}),
           doc="Dynamic range: int8 weights, activations quantized at run time; no "
               "calibration data needed."),
    Scheme("int16x8", "static", _W8, _A16, 64, ops=INT16X8_OPS,
           doc="16-bit symmetric activations with int8 weights and int64 bias."),
    Scheme("fp16", "fp16", _F16, None, 32, ops=FP16_OPS,
           doc="Float16 weights: every float constant stored as float16, computed in float."),
    # Depthwise filters stay float: 9 weights per channel leave 4 bits nothing to average
    # over (MobileNetV2's output SQNR fell below 0 dB with them), and they are a sliver of
    # the bytes; ai-edge-quantizer's int4 recipes likewise target FC, conv and embeddings.
    Scheme("int4-weight", "weight_only", _W4, None, 32,
           ops=frozenset({"conv2d", "matmul", "gather"}),
           doc="4-bit symmetric weights (per-channel; blockwise via a layer override), "
               "float compute; depthwise filters stay float."),
    Scheme("pixel_8bit_qat", "static", _W8, _A8_EMA, 32, ops=INT8_OPS, qat=True,
           doc="Conv nets on mobile (the TF Quantization API preview's scheme): int8 "
               "per-channel symmetric weights, int8 per-tensor asymmetric activations with "
               "moving-average ranges, fused relu/relu6; for QAT and for PTQ."),
)

_REGISTRY: dict[str, Scheme] = {s.name: s for s in _BUILTINS}
BUILTIN_NAMES = frozenset(_REGISTRY)


def names() -> list[str]:
    """Every registered scheme name, sorted."""
    return sorted(_REGISTRY)


def get(name: "str | Scheme") -> Scheme:
    """The scheme registered as `name` (a Scheme is returned as is). ConfigError listing the
    valid names and the closest match otherwise."""
    if isinstance(name, Scheme):
        return name
    if isinstance(name, str) and name in _REGISTRY:
        return _REGISTRY[name]
    close = difflib.get_close_matches(str(name), _REGISTRY, n=1, cutoff=0.3)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise ConfigError(f"unknown quantization scheme {name!r}",
                      [Diagnostic(f"valid schemes: {', '.join(names())}{hint}")])


def register(scheme: Scheme, *, replace: bool = False) -> Scheme:
    """Adds a user scheme to the registry and returns it. Registering a name that exists is a
    ConfigError unless `replace=True`; the built-ins can never be replaced."""
    if not isinstance(scheme, Scheme):
        raise ConfigError(f"register() needs a Scheme, got {type(scheme).__name__}")
    if scheme.name in BUILTIN_NAMES:
        raise ConfigError(f"scheme {scheme.name!r} is a built-in and cannot be replaced",
                          [Diagnostic("pick another name, e.g. with dataclasses.replace(scheme, "
                                      "name=...)")])
    if scheme.name in _REGISTRY and not replace:
        raise ConfigError(f"scheme {scheme.name!r} is already registered",
                          [Diagnostic("pass replace=True to replace it")])
    _REGISTRY[scheme.name] = scheme
    return scheme


def unregister(name: str) -> None:
    """Removes a user scheme (built-ins stay); a name that is not registered is a no-op."""
    if name in BUILTIN_NAMES:
        raise ConfigError(f"scheme {name!r} is a built-in and cannot be removed")
    _REGISTRY.pop(name, None)


# The TF Quantization API preview's names for the registry functions
# (`tq.scheme_registry.get_scheme("pixel_8bit_qat")`).
get_scheme = get
register_scheme = register
list_schemes = names
