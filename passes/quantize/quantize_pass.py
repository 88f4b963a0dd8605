"""The `quantize` pass: the whole resolve -> calibrate -> fake-quant insertion flow as one
pipeline element, so `tensorforge opt` and textual pipelines can quantize too:

    canonicalize,quantize{scheme=int8,calibration-data=calib.npz},lower-quantized

Calibration runs on the IR interpreter here (passes cannot reach the TensorFlow runner that
`tensorforge.convert` uses); the result is the same QDQ form.
"""

from __future__ import annotations

from pathlib import Path

from ...ir.errors import ConversionError
from ..base import Option, Pass, register_pass
from . import schemes
from .calibrate import calibrate, load_npz_samples
from .config import QuantizationConfigurationMap
from .insert import QuantizationPlan
from .observers import make_observer
from .prepare import unfuse_activations


def _existing_file(path: str) -> Path:
    p = Path(path)
    if not p.exists():
        raise ConversionError(f"no such file: {path}")
    if not p.is_file():
        raise ConversionError(f"{path} is not a file")
    return p


def read_config(path: str) -> QuantizationConfigurationMap:
    """The QuantizationConfigurationMap in a JSON file; ConversionError (ConfigError) naming
    the file and every problem otherwise."""
    p = _existing_file(path)
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConversionError(f"quantization config {path} is not UTF-8 text (byte "
                              f"{e.start})") from None
    except OSError as e:
        raise ConversionError(f"cannot read quantization config {path}: {e.strerror}") from None
    try:
        return QuantizationConfigurationMap.from_json(text)
    except ConversionError as e:
        raise type(e)(f"{e.summary} in {path}", e.diagnostics) from None


def _observer(cfg):
    return make_observer(cfg.calibration, bits=cfg.bits, symmetric=cfg.symmetric,
                         percentile=cfg.percentile)


@register_pass("quantize")
class Quantize(Pass):
    """Resolves a scheme (and optional JSON config) per node, calibrates activation ranges on
    an .npz of samples (static schemes) and inserts quantize/dequantize pairs (QDQ form)."""

    options = {
        "scheme": Option(str, "int8", "quantization scheme (int8, int16x8, dynamic-int8, ...)",
                         choices=schemes.names),
        "config": Option(str, "", "JSON file from QuantizationConfigurationMap.to_json()",
                         check=lambda path: path and read_config(path)),
        "calibration-data": Option(str, "", ".npz: one array per input, one row per sample",
                                   check=lambda path: path and _existing_file(path)),
        "max-samples": Option(int, 100, "calibration samples to use at most", min=1),
    }

    def run(self, module, ctx):
        config = self.option("config")
        if config:
            qmap = read_config(config)
        else:
            qmap = QuantizationConfigurationMap(self.option("scheme"))
        unfuse_activations(module)   # a fused tanh's input needs params of its own
        plan = QuantizationPlan(module, qmap.resolve(module), qmap.scheme)
        requests = plan.requests()
        ranges = {}
        if requests:
            data = self.option("calibration-data")
            if not data:
                raise ConversionError(f"pass 'quantize': scheme {qmap.scheme.name} calibrates "
                                      f"{len(requests)} activation tensors and needs "
                                      f"calibration-data=FILE.npz")
            samples = load_npz_samples(data, module)[:self.option("max-samples")]
            ranges = calibrate(module, samples, {v: _observer(c) for v, c in requests.items()},
                               progress=False)
        report = plan.apply(ranges)
        return bool(report.activations or report.weights)
