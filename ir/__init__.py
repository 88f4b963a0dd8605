"""The common IR: types, graph, op registry, verifier, text format, interpreter.

`ir` imports nothing else of the project; every other layer builds on it.
"""

from . import ops
from .errors import (ConversionError, Diagnostic, InferenceError, ParseError, TensorforgeError,
                     VerificationError)
from .graph import Graph, Module, Node, Value
from .text import print_module
from .types import DType, Layout, QuantParams, TensorType

# Printing is ir/text.py's job and graph.py does not import it; the package, which imports
# both, makes it a module's str() so that print(module) shows the IR.
Module.__str__ = print_module

__all__ = ["ops", "ConversionError", "Diagnostic", "InferenceError", "ParseError",
           "TensorforgeError", "VerificationError", "Graph", "Module", "Node", "Value", "DType",
           "Layout", "QuantParams", "TensorType"]
