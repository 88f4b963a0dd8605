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
from .calibrate import calibrate, load_npz_samples
from .config import QuantizationConfigurationMap
from .insert import QuantizationPlan
from .observers import make_observer
from .prepare import unfuse_activations


def _observer(cfg):
    return make_observer(cfg.calibration, bits=cfg.bits, symmetric=cfg.symmetric,
                         percentile=cfg.percentile)


@register_pass("quantize")
class Quantize(Pass):
    """Resolves a scheme (and optional JSON config) per node, calibrates activation ranges on
    an .npz of samples (static schemes) and inserts quantize/dequantize pairs (QDQ form)."""

    options = {
        "scheme": Option(str, "int8", "quantization scheme (int8, int16x8, dynamic-int8, ...)"),
        "config": Option(str, "", "JSON file from QuantizationConfigurationMap.to_json()"),
        "calibration-data": Option(str, "", ".npz: one array per input, one row per sample"),
        "max-samples": Option(int, 100, "calibration samples to use at most"),
    }

    def run(self, module, ctx):
        config = self.option("config")
        if config:
            qmap = QuantizationConfigurationMap.from_json(Path(config).read_text())
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
