"""Quantization as IR passes: configuration, calibration, fake-quant insertion and integer
lowering (see README.md in this directory). Public as `tensorforge.quantization`. Importing
this package registers the `quantize` and `lower-quantized` passes."""

from . import lower, quantize_pass  # noqa: F401  (register passes)
