"""tensorforge: a compiler for trained models.

Frontends lift models into one IR; passes canonicalize, quantize and shard it; backends emit
deployment artifacts. This module is the public Python API:

    import tensorforge
    result = tensorforge.convert(keras_model, target="tflite", output="model.tflite", verify=True)
    module = tensorforge.from_keras(keras_model)         # the IR, for passes and inspection

Framework-heavy entry points (TensorFlow, Keras) are imported on first use, so
`import tensorforge` stays cheap for IR-only work.
"""

from ._lazy import lazy_getattr
from .ir import (ConversionError, DType, Graph, Layout, Module, Node, ParseError, QuantParams,
                 TensorforgeError, TensorType, Value, VerificationError)
from .ir.interpreter import run_graph, run_module
from .ir.text import parse_module, print_module
from .ir.verify import verify_module
from .passes import Pass, PassContext, PassManager, register_pass
from .version import __version__

_LAZY = {
    "convert": ("tools.convert", "convert"),
    "ConversionResult": ("tools.convert", "ConversionResult"),
    "from_keras": ("frontends.keras", "from_keras"),
    "from_saved_model": ("frontends.tf", "from_saved_model"),
    "from_jax": ("frontends.jax", "from_jax"),
    "from_flax": ("frontends.jax", "from_flax"),
    "JaxModel": ("tools.sources", "JaxModel"),
    "convert_lm": ("tools.generation", "convert_lm"),
    "generate": ("tools.generation", "generate"),
    "open_lm": ("tools.generation", "open_lm"),
    "LMRunner": ("tools.generation", "LMRunner"),
    "GenerationError": ("tools.generation", "GenerationError"),
    "JaxLM": ("tools.lm_jax", "JaxLM"),
}


__getattr__ = lazy_getattr(__name__, __name__, _LAZY, globals())


__all__ = ["__version__", "ConversionError", "DType", "Graph", "Layout", "Module", "Node",
           "ParseError", "QuantParams", "TensorforgeError", "TensorType", "Value",
           "VerificationError", "run_graph", "run_module", "parse_module", "print_module",
           "verify_module", "Pass", "PassContext", "PassManager", "register_pass", *_LAZY]
