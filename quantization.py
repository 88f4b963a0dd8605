"""`tensorforge.quantization`: the quantization API (the TF Quantization API preview, as IR
passes shared by every frontend and target).

    from tensorforge import quantization as tq
    cfg = tq.QuantizationConfigurationMap(tq.schemes.get("int8"))
    cfg.set_config("conv1", tq.LayerConfiguration(weight_config=..., activation_config=...))
    cfg.set_config("head", None)                                  # keep float
    tensorforge.convert(model, target="tflite", quantization=cfg, calibration_data=samples)

    qat_model = tq.apply_quantization_on_model(keras_model, cfg)  # trainable fake-quant
    qat_model.fit(...)
    tensorforge.convert(qat_model, target="tflite")               # int8 from learned ranges

    y = tq.fake_quant(x, lo, hi)                                  # JAX straight-through QAT

The TF Quantization API preview's spelling works as announced:

    scheme = tq.scheme_registry.get_scheme("pixel_8bit_qat")
    config_map = tq.QuantizationConfigurationMap(scheme)
    config_map.set_config(model.layers[0], layer_config)
    model = tq.apply_quantization_on_model(model, config_map)  # subclassed: in place, BN folded
    with tq.scope(config_map):
        model.fit(...); model.save(path); keras.models.load_model(path)

Keras and JAX helpers are imported on first use, so importing this module stays light.
"""

from __future__ import annotations

from ._lazy import lazy_getattr
from .passes.quantize import schemes
from .passes.quantize import schemes as scheme_registry
from .passes.quantize.calibrate import calibrate, check_calibration_data
from .passes.quantize.config import QuantizationConfigurationMap
from .passes.quantize.configuration import (ConfigError, LayerConfiguration,
                                            QuantizationConfiguration)
from .passes.quantize.insert import QuantizationPlan
from .passes.quantize.lower import lower_quantized
from .passes.quantize.observers import make_observer
from .passes.quantize.resolution import Resolution
from .passes.quantize.schemes import Scheme

_LAZY = {
    "apply_quantization_on_model": ("qat.keras", "apply_quantization_on_model"),
    "scope": ("qat.keras", "scope"),
    "fake_quant": ("qat.jax", "fake_quant"),
    "FakeQuant": ("qat.jax", "FakeQuant"),
    "quantized_training": ("qat.quantized_training", "quantized_training"),
    "quantize_module": ("tools.quantize", "quantize_module"),
    "layer_errors": ("tools.quantize", "layer_errors"),
    "QuantizeResult": ("tools.quantize", "QuantizeResult"),
}

__all__ = ["schemes", "scheme_registry", "Scheme", "QuantizationConfiguration",
           "LayerConfiguration",
           "QuantizationConfigurationMap", "Resolution", "ConfigError", "QuantizationPlan",
           "calibrate", "check_calibration_data", "make_observer", "lower_quantized",
           *_LAZY]


__getattr__ = lazy_getattr(__name__, __package__, _LAZY, globals())
