"""TFLite backend: writes `.tflite` flatbuffers straight from the IR.

    from tensorforge.backends.tflite import write_tflite, lower_problems
    data = write_tflite(module)             # bytes; ConversionError lists every unlowerable node
    data16 = write_tflite(module, fp16=True)  # float16 weights + DEQUANTIZE

The lowering table (IR op -> builtin, options, op version) is the `ops/` package, one module
per op family; flatbuffer assembly (tensors, buffers, operator codes, the `serving_default`
signature) is `writer.py`.
"""

from .writer import lower_problems, write_tflite

__all__ = ["lower_problems", "write_tflite"]
