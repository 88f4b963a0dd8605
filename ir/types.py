"""Value types of the IR: element dtypes, tensor types with symbolic dims, quantization
parameters and sharding layouts.

All types here are immutable and hashable so they can be compared, shared between values and
used as dictionary keys (CSE keys, type caches).
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Iterable, Union

import ml_dtypes
import numpy as np


class DType(enum.Enum):
    """Element types. The value is the short name used by the text format (`f32`)."""

    f32 = "f32"
    f16 = "f16"
    bf16 = "bf16"
    f64 = "f64"
    i4 = "i4"
    i8 = "i8"
    u8 = "u8"
    i16 = "i16"
    i32 = "i32"
    i64 = "i64"
    bool = "bool"

    def __repr__(self) -> str:
        return f"DType.{self.value}"

    def __str__(self) -> str:
        return self.value

    @property
    def np(self) -> np.dtype:
        """The NumPy dtype used to hold values of this type (bf16 and i4 come from ml_dtypes)."""
        return _TO_NUMPY[self]

    @property
    def is_float(self) -> bool:
        """True for floating-point dtypes (f16, bf16, f32, f64)."""
        return self in (DType.f32, DType.f16, DType.bf16, DType.f64)

    @property
    def is_int(self) -> bool:
        """True for signed and unsigned integer dtypes (not bool)."""
        return self in (DType.i4, DType.i8, DType.u8, DType.i16, DType.i32, DType.i64)

    @property
    def bits(self) -> int:
        """Width of one element in bits."""
        return _BITS[self]

    @staticmethod
    def parse(name: str) -> "DType":
        """`DType.parse("f32")`; raises ValueError naming the valid dtypes otherwise."""
        try:
            return DType(name)
        except ValueError:
            valid = ", ".join(d.value for d in DType)
            raise ValueError(f"unknown dtype '{name}' (valid: {valid})") from None

    @staticmethod
    def from_numpy(dtype) -> "DType":
        """The IR dtype of a NumPy dtype; raises ValueError for dtypes the IR has no name for."""
        dtype = np.dtype(dtype)
        for d, n in _TO_NUMPY.items():
            if n == dtype:
                return d
        raise ValueError(f"NumPy dtype {dtype} has no IR dtype")


_TO_NUMPY = {
    DType.f32: np.dtype(np.float32),
    DType.f16: np.dtype(np.float16),
    DType.bf16: np.dtype(ml_dtypes.bfloat16),
    DType.f64: np.dtype(np.float64),
    DType.i4: np.dtype(ml_dtypes.int4),
    DType.i8: np.dtype(np.int8),
    DType.u8: np.dtype(np.uint8),
    DType.i16: np.dtype(np.int16),
    DType.i32: np.dtype(np.int32),
    DType.i64: np.dtype(np.int64),
    DType.bool: np.dtype(np.bool_),
}
_BITS = {DType.f32: 32, DType.f16: 16, DType.bf16: 16, DType.f64: 64, DType.i4: 4, DType.i8: 8,
         DType.u8: 8, DType.i16: 16, DType.i32: 32, DType.i64: 64, DType.bool: 1}

# A dimension is a static size or a symbol. `?` is the anonymous unknown dim; any other
# identifier (`batch`, `b`) is a named symbol: two dims with the same name are equal at run time.
Dim = Union[int, str]
UNKNOWN = "?"
SYMBOL_RE = re.compile(r"^(\?|[A-Za-z_][A-Za-z0-9_]*)$")


def is_static(dim: Dim) -> bool:
    return isinstance(dim, int)


@dataclass(frozen=True, slots=True)
class TensorType:
    """`dtype[d0,d1,...]`: a dtype and a shape whose dims are ints or symbols."""

    dtype: DType
    shape: tuple[Dim, ...]

    def __post_init__(self):
        if not isinstance(self.dtype, DType):
            raise TypeError(f"TensorType dtype must be a DType, got {self.dtype!r}")
        shape = tuple(self.shape)
        for d in shape:
            if isinstance(d, bool) or not isinstance(d, (int, str)):
                raise TypeError(f"dim must be int or symbol, got {d!r}")
            if isinstance(d, int) and d < 0:
                raise ValueError(f"static dim must be >= 0, got {d}")
            if isinstance(d, str) and not SYMBOL_RE.match(d):
                raise ValueError(f"invalid symbolic dim {d!r}")
        object.__setattr__(self, "shape", shape)

    @property
    def rank(self) -> int:
        """Number of dims."""
        return len(self.shape)

    @property
    def is_static(self) -> bool:
        """True when every dim is an int (no symbol)."""
        return all(isinstance(d, int) for d in self.shape)

    @property
    def num_elements(self) -> int | None:
        """Element count, or None when a dim is symbolic."""
        if not self.is_static:
            return None
        n = 1
        for d in self.shape:
            n *= d
        return n

    def with_shape(self, shape: Iterable[Dim]) -> "TensorType":
        """The same dtype with another shape."""
        return TensorType(self.dtype, tuple(shape))

    def with_dtype(self, dtype: DType) -> "TensorType":
        """The same shape with another dtype."""
        return TensorType(dtype, self.shape)

    def accepts(self, shape: tuple[int, ...], bindings: dict[str, int] | None = None) -> bool:
        """True if a concrete shape fits this type; named symbols bind consistently."""
        if len(shape) != len(self.shape):
            return False
        bindings = {} if bindings is None else bindings
        for want, got in zip(self.shape, shape):
            if isinstance(want, int):
                if want != got:
                    return False
            elif want != UNKNOWN:
                if bindings.setdefault(want, got) != got:
                    return False
        return True

    def __str__(self) -> str:
        return f"{self.dtype.value}[{','.join(str(d) for d in self.shape)}]"


def code_range(bits: int, signed: bool = True, narrow_range: bool = False) -> tuple[int, int]:
    """(qmin, qmax) of `bits`-bit codes; narrow range drops the most negative code."""
    lo = -(1 << (bits - 1)) if signed else 0
    hi = (1 << (bits - 1)) - 1 if signed else (1 << bits) - 1
    return (lo + 1 if narrow_range else lo), hi


@dataclass(frozen=True, slots=True)
class QuantParams:
    """Affine quantization: real = scale * (q - zero_point).

    Per-tensor when `axis` is None (one scale/zero-point), per-axis otherwise (one per slice of
    `axis`). `narrow_range` drops the most negative code (int8 weights use [-127, 127]).
    """

    scale: tuple[float, ...]
    zero_point: tuple[int, ...]
    axis: int | None = None
    bits: int = 8
    signed: bool = True
    narrow_range: bool = False

    def __post_init__(self):
        object.__setattr__(self, "scale", tuple(float(s) for s in self.scale))
        object.__setattr__(self, "zero_point", tuple(int(z) for z in self.zero_point))

    @property
    def qmin(self) -> int:
        """The smallest code (e.g. -128, or -127 with narrow_range, for signed 8 bits)."""
        return code_range(self.bits, self.signed, self.narrow_range)[0]

    @property
    def qmax(self) -> int:
        """The largest code (e.g. 127 for signed 8 bits)."""
        return code_range(self.bits, self.signed, self.narrow_range)[1]

    @property
    def per_axis(self) -> bool:
        """True when there is one scale/zero point per slice of `axis`."""
        return self.axis is not None

    def problems(self, ttype: TensorType | None = None) -> list[str]:
        """Every inconsistency of these params (alone, and against the tensor type given)."""
        out = []
        if not 2 <= self.bits <= 64:
            out.append(f"bits must be in [2, 64], got {self.bits}")
            return out
        if len(self.scale) == 0:
            out.append("scale is empty")
        if len(self.scale) != len(self.zero_point):
            out.append(f"{len(self.scale)} scales but {len(self.zero_point)} zero points")
        if self.axis is None and len(self.scale) > 1:
            out.append(f"per-tensor params need one scale, got {len(self.scale)}")
        for s in self.scale:
            if not (s > 0 and np.isfinite(s)):
                out.append(f"scale must be positive and finite, got {s}")
                break
        for z in self.zero_point:
            if not self.qmin <= z <= self.qmax:
                out.append(f"zero point {z} outside [{self.qmin}, {self.qmax}]")
                break
        if ttype is not None and self.axis is not None:
            if not 0 <= self.axis < ttype.rank:
                out.append(f"quantized axis {self.axis} out of range for rank {ttype.rank}")
            else:
                n = ttype.shape[self.axis]
                if isinstance(n, int) and n != len(self.scale):
                    out.append(f"axis {self.axis} has {n} slices but {len(self.scale)} scales")
        return out


@dataclass(frozen=True, slots=True)
class Layout:
    """Sharding layout: for each tensor dim, the mesh axis it is split over, or None."""

    axes: tuple[str | None, ...]

    def __post_init__(self):
        object.__setattr__(self, "axes", tuple(self.axes))

    def __str__(self) -> str:
        return ",".join("_" if a is None else a for a in self.axes)
