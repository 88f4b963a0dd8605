"""Quantization as IR passes: configuration, calibration, fake-quant insertion and integer
lowering (design: docs/design/quantization.md). Public as `tensorforge.quantization`. Importing
this package registers the `quantize` and `lower-quantized` passes."""

from . import lower, quantize_pass  # noqa: F401  (register passes)
