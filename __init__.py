"""tensorforge: a compiler for trained models.

Frontends lift models into one IR; passes canonicalize, quantize and shard it; backends emit
deployment artifacts. This module is the public Python API.
"""

__version__ = "0.1.0"

from .ir import (ConversionError, DType, Graph, Layout, Module, Node, ParseError, QuantParams,
                 TensorforgeError, TensorType, Value, VerificationError)

__all__ = ["__version__", "ConversionError", "DType", "Graph", "Layout", "Module", "Node",
           "ParseError", "QuantParams", "TensorforgeError", "TensorType", "Value",
           "VerificationError"]
