"""Attribute values: their canonical form and their exact equality.

Node attributes and module metadata hold `None`, bools, ints, floats, strings, `DType`s,
tuples of these, and read-only NumPy arrays (constant payloads). Both the op registry (which
fills in defaults) and the graph (which stores attributes) canonicalize through
`normalize_attr`; structural equality of graphs compares through `attr_equal`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .types import DType


def normalize_attr(v: Any) -> Any:
    """Makes attribute values immutable and canonical: lists become tuples, NumPy scalars
    become Python scalars, arrays become read-only (constants are shared between clones)."""
    if isinstance(v, np.ndarray):
        if v.flags.writeable:
            v = v.copy()
            v.flags.writeable = False
        return v
    if isinstance(v, (list, tuple)):
        return tuple(normalize_attr(x) for x in v)
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.dtype):
        return DType.from_numpy(v)
    return v


def attr_equal(a: Any, b: Any) -> bool:
    """Exact equality of two canonical attribute values, as the text format sees them: the
    same Python type (`1`, `1.0` and `True` differ), floats equal bit for bit up to NaN
    payloads (`-0.0` differs from `0.0`, NaN equals NaN), arrays equal in dtype, shape and
    bytes."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        if not (isinstance(a, np.ndarray) and isinstance(b, np.ndarray)):
            return False
        return (a.dtype == b.dtype and a.shape == b.shape
                and np.ascontiguousarray(a).tobytes() == np.ascontiguousarray(b).tobytes())
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)
    if isinstance(a, tuple):
        return len(a) == len(b) and all(attr_equal(x, y) for x, y in zip(a, b))
    return a == b
