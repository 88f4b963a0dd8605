"""The common IR: types, graph, op registry, verifier, text format, interpreter.

`ir` imports nothing else of the project; every other layer builds on it.
"""

from . import ops
from .errors import (ConversionError, Diagnostic, InferenceError, ParseError, TensorforgeError,
                     VerificationError)
from .graph import Graph, Module, Node, Value
from .types import DType, Layout, QuantParams, TensorType

__all__ = ["ops", "ConversionError", "Diagnostic", "InferenceError", "ParseError",
           "TensorforgeError", "VerificationError", "Graph", "Module", "Node", "Value", "DType",
           "Layout", "QuantParams", "TensorType"]
