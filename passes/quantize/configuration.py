"""One tensor's and one layer's quantization settings: the vocabulary (bit widths,
granularities, calibrations, storage dtypes, tensor kinds and the operand roles that make a
weight or a bias), `ConfigError`, and the two validated value types `QuantizationConfiguration`
and `LayerConfiguration` with their dict forms.

The leaf of the configuration layer: schemes (schemes.py), the resolved table
(resolution.py), the resolver (resolver.py) and the map (config.py) build on it; it imports
none of them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Iterable

from ...ir.errors import ConversionError, Diagnostic

ACTIVATION_BITS = (4, 8, 16)          # widths for weights and activations
ALL_BITS = (4, 8, 16, 32, 64)         # 32 / 64: biases (int32, int64 for int16x8)
GRANULARITIES = ("per_tensor", "per_channel", "blockwise")
CALIBRATIONS = ("minmax", "moving_average", "percentile", "mse")
DTYPES = ("int", "float16")
KINDS = ("weight", "bias", "activation", "other")

# Operand roles holding the weight (when constant and float) / the bias, per op.
WEIGHT_ROLES = {"conv2d": "filter", "depthwise_conv2d": "filter", "conv2d_transpose": "filter",
                "matmul": "b", "gather": "params"}
BIAS_OPS = frozenset({"conv2d", "depthwise_conv2d", "conv2d_transpose", "matmul"})


class ConfigError(ConversionError):
    """A bad quantization configuration, scheme name or configuration key; lists every
    problem at once."""


def _error(summary: str, problems: Iterable[str]) -> ConfigError:
    return ConfigError(summary, [Diagnostic(p) for p in problems])


def _choices(values) -> str:
    return ", ".join(repr(v) if isinstance(v, str) else str(v) for v in values)


# -- QuantizationConfiguration -----------------------------------------------------------------

@dataclass(frozen=True)
class QuantizationConfiguration:
    """How one tensor is quantized.

    bits:         4, 8 or 16 for weights and activations; 32 or 64 for biases. Forced to 16
                  when dtype is float16.
    symmetric:    zero point 0 (symmetric range) or a free zero point (asymmetric).
    granularity:  `per_tensor`, `per_channel` (output-channel axis of a weight) or `blockwise`
                  (per-channel scales over blocks of `block_size` input elements).
    narrow_range: drop the most negative code (int8 weights in [-127, 127]); None means True
                  for symmetric weights and False otherwise (see `resolved_narrow_range`).
    calibration:  how activation ranges are found: `minmax`, `moving_average`, `percentile`
                  (`percentile` of |x|, e.g. 99.99) or `mse` (clipping minimizing the error).
    dtype:        `int` (integer codes + scale/zero point) or `float16` (fp16 storage).
    """

    bits: int = 8
    symmetric: bool = True
    granularity: str = "per_tensor"
    block_size: int | None = None
    narrow_range: bool | None = None
    calibration: str = "minmax"
    percentile: float = 99.99
    dtype: str = "int"

    def __post_init__(self):
        if self.dtype == "float16" and self.bits in (8, 16):
            # float16 storage is 16 bits whatever `bits` says; 8 is the field's default.
            object.__setattr__(self, "bits", 16)
        problems = self.problems()
        if problems:
            raise _error("invalid QuantizationConfiguration", problems)

    def problems(self) -> list[str]:
        """Every reason this configuration is invalid (empty when it is fine)."""
        out = []
        if isinstance(self.bits, bool) or not isinstance(self.bits, int) \
                or self.bits not in ALL_BITS:
            out.append(f"bits must be one of 4, 8, 16 (32, 64 for biases), got {self.bits!r}")
        if not isinstance(self.symmetric, bool):
            out.append(f"symmetric must be a bool, got {self.symmetric!r}")
        if self.granularity not in GRANULARITIES:
            out.append(f"granularity {self.granularity!r} is not one of "
                       f"{_choices(GRANULARITIES)}")
        if self.granularity == "blockwise":
            if self.block_size is None:
                out.append("granularity 'blockwise' needs block_size (e.g. 32)")
        if self.block_size is not None:
            if isinstance(self.block_size, bool) or not isinstance(self.block_size, int) \
                    or self.block_size <= 0:
                out.append(f"block_size must be a positive int, got {self.block_size!r}")
            elif self.granularity != "blockwise":
                out.append(f"block_size is only for granularity 'blockwise' (granularity is "
                           f"{self.granularity!r})")
        if self.narrow_range is not None and not isinstance(self.narrow_range, bool):
            out.append(f"narrow_range must be a bool or None, got {self.narrow_range!r}")
        if self.calibration not in CALIBRATIONS:
            out.append(f"calibration {self.calibration!r} is not one of "
                       f"{_choices(CALIBRATIONS)}")
        if isinstance(self.percentile, bool) or not isinstance(self.percentile, (int, float)) \
                or not 0 < self.percentile <= 100:
            out.append(f"percentile must be in (0, 100], got {self.percentile!r}")
        if self.dtype not in DTYPES:
            out.append(f"dtype {self.dtype!r} is not one of {_choices(DTYPES)}")
        elif self.dtype == "float16" and self.bits != 16 and self.bits in ALL_BITS:
            out.append(f"dtype 'float16' stores 16 bits, got bits={self.bits}")
        return out

    def resolved_narrow_range(self, kind: str) -> bool:
        """`narrow_range` for a tensor of `kind` (weight/bias/activation): the explicit value,
        else True for symmetric weights (TFLite's int8 weights) and False otherwise."""
        if kind not in KINDS:
            raise _error(f"unknown tensor kind {kind!r}", [f"valid kinds: {_choices(KINDS)}"])
        if self.narrow_range is not None:
            return self.narrow_range
        return self.symmetric and kind == "weight" and self.dtype == "int"

    def describe(self, kind: str = "activation") -> str:
        """Short form: `int8 sym,narrow per_channel minmax` / `float16`."""
        if self.dtype == "float16":
            return "float16"
        sym = "sym" if self.symmetric else "asym"
        if self.resolved_narrow_range(kind):
            sym += ",narrow"
        return f"int{self.bits} {sym} {self._granularity_str()} {self._calibration_str()}"

    def _granularity_str(self) -> str:
        if self.granularity == "blockwise":
            return f"blockwise({self.block_size})"
        return self.granularity

    def _calibration_str(self) -> str:
        if self.calibration == "percentile":
            return f"percentile({self.percentile:g})"
        return self.calibration

    def to_dict(self) -> dict[str, Any]:
        """Every field, JSON-ready."""
        return dataclasses.asdict(self)

    @staticmethod
    def from_dict(data: Any) -> "QuantizationConfiguration":
        """The configuration `to_dict` produced; ConfigError listing every problem otherwise
        (unknown fields included)."""
        problems: list[str] = []
        qc = _config_from_dict(data, "config", problems)
        if problems:
            raise _error("invalid QuantizationConfiguration", problems)
        return qc


_QC_FIELDS = tuple(f.name for f in dataclasses.fields(QuantizationConfiguration))


def _config_from_dict(data: Any, where: str, problems: list[str]):
    """A QuantizationConfiguration from `data`, or None after appending every problem (each
    prefixed by `where`) to `problems`."""
    if not isinstance(data, dict):
        problems.append(f"{where}: expected an object with fields {', '.join(_QC_FIELDS)}, "
                        f"got {type(data).__name__}")
        return None
    bad = False
    for k in data:
        if k not in _QC_FIELDS:
            problems.append(f"{where}: unknown field {k!r} (valid: {', '.join(_QC_FIELDS)})")
            bad = True
    try:
        qc = QuantizationConfiguration(**{k: v for k, v in data.items() if k in _QC_FIELDS})
    except ConfigError as e:
        problems.extend(f"{where}: {d.message}" for d in e.diagnostics)
        return None
    return None if bad else qc


# -- LayerConfiguration ------------------------------------------------------------------------

@dataclass(frozen=True)
class LayerConfiguration:
    """The configs of one layer's weights and activations; None keeps that part float."""

    weight_config: QuantizationConfiguration | None = None
    activation_config: QuantizationConfiguration | None = None

    def __post_init__(self):
        problems = []
        for name in ("weight_config", "activation_config"):
            v = getattr(self, name)
            if v is None:
                continue
            if not isinstance(v, QuantizationConfiguration):
                problems.append(f"{name} must be a QuantizationConfiguration or None, "
                                f"got {type(v).__name__}")
            elif v.dtype == "int" and v.bits not in ACTIVATION_BITS:
                problems.append(f"{name}: bits must be one of 4, 8, 16, got {v.bits}")
        if problems:
            raise _error("invalid LayerConfiguration", problems)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: each part as a dict or None."""
        return {"weight_config": _qc_dict(self.weight_config),
                "activation_config": _qc_dict(self.activation_config)}


def _qc_dict(qc: QuantizationConfiguration | None):
    return None if qc is None else qc.to_dict()
