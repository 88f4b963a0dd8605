"""Quantization as IR passes: configuration, calibration, fake-quant insertion and integer
lowering (see README.md in this directory). Public as `tensorforge.quantization`."""

from . import lower  # noqa: F401  (registers lower-quantized)
