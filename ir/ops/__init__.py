"""IR op definitions, one module per family. Importing this package registers them all."""

from .registry import REQUIRED, Attr, OpDef, all_ops, get_op, has_op, register_op
from . import bitwise, collective, control, dynamic, elementwise, indexing, nn, quant, recurrent, reduce, shape  # noqa: F401  (registers ops)

__all__ = ["REQUIRED", "Attr", "OpDef", "all_ops", "get_op", "has_op", "register_op"]
