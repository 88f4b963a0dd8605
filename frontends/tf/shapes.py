"""Symbolic shape values for the TF importer.

Keras traced with a `None` batch computes shapes at run time: `Shape -> StridedSlice -> Pack ->
Reshape` (Flatten, Reshape), `Shape -> GatherV2 -> Prod` (Dense on rank-3 inputs via
Tensordot), `input_sizes` of Conv2DBackpropInput. The importer evaluates that arithmetic at
import time on NumPy object arrays whose entries are ints or `SymDim`s, so the IR sees static
attributes with at most one `-1` (the dynamic dim) instead of shape-computing ops.

A `SymDim` is a monomial: an integer coefficient times a product of named symbols
(`batch * 5` is `SymDim(5, ("batch",))`). That is all Keras' shape arithmetic needs
(products, exact quotients); anything else (sums, comparisons) raises `SymbolicError` and the
importer reports the op as not evaluable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import numpy as np

from ...ir.types import UNKNOWN


class SymbolicError(ValueError):
    """Shape arithmetic a monomial cannot represent (e.g. `batch + 1`)."""


@dataclass(frozen=True)
class SymDim:
    """coef * prod(syms); `syms` is sorted, with repeats. Never a plain int (coef * ())."""

    coef: int
    syms: tuple[str, ...]

    @staticmethod
    def of(name: str) -> "SymDim":
        """The run-time size named `name` (`batch`), as a SymDim."""
        return SymDim(1, (name,))

    @staticmethod
    def make(coef: int, syms) -> "Dim":
        """A SymDim, or a plain int when no symbol is left (or the coefficient is 0)."""
        syms = tuple(sorted(syms))
        if coef == 0:
            return 0
        if not syms:
            return int(coef)
        return SymDim(int(coef), syms)

    def __mul__(self, other):
        if isinstance(other, SymDim):
            return SymDim.make(self.coef * other.coef, self.syms + other.syms)
        if isinstance(other, (int, np.integer)) and not isinstance(other, bool):
            return SymDim.make(self.coef * int(other), self.syms)
        return NotImplemented

    __rmul__ = __mul__

    def __floordiv__(self, other):
        """Exact division only: `batch*6 // 3` is `batch*2`; `batch // 2` is an error."""
        if isinstance(other, (int, np.integer)) and not isinstance(other, bool):
            if other != 0 and self.coef % int(other) == 0:
                return SymDim.make(self.coef // int(other), self.syms)
        elif isinstance(other, SymDim):
            rest = list(self.syms)
            try:
                for s in other.syms:
                    rest.remove(s)
            except ValueError:
                raise SymbolicError(f"cannot divide {self} by {other}") from None
            if self.coef % other.coef == 0:
                return SymDim.make(self.coef // other.coef, rest)
        raise SymbolicError(f"cannot divide {self} by {other} exactly")

    def __rfloordiv__(self, other):
        raise SymbolicError(f"cannot divide {other} by the run-time size {self}")

    def _no(self, *args):
        raise SymbolicError(f"cannot evaluate arithmetic on the run-time size {self} "
                            f"(only products and exact quotients are tracked)")

    __add__ = __radd__ = __sub__ = __rsub__ = __truediv__ = __rtruediv__ = _no
    __mod__ = __rmod__ = __neg__ = __lt__ = __le__ = __gt__ = __ge__ = _no
    __pow__ = __rpow__ = _no

    def __int__(self):
        self._no()

    __index__ = __int__

    def as_ir_dim(self) -> Union[str, int]:
        """The IR dim naming this size: the symbol itself when it is exactly one named symbol,
        else the anonymous `?`."""
        if self.coef == 1 and len(self.syms) == 1 and not self.syms[0].startswith("?"):
            return self.syms[0]
        return UNKNOWN

    def __str__(self) -> str:
        parts = ([str(self.coef)] if self.coef != 1 else []) + list(self.syms)
        return "*".join(parts)


Dim = Union[int, SymDim]


def is_symbolic(array: np.ndarray) -> bool:
    """True if an object array holds at least one SymDim."""
    return array.dtype == object and any(isinstance(x, SymDim) for x in array.flat)


def to_ir_dim(d: Dim):
    """An IR dim (int or symbol name) for a tracked size."""
    return d.as_ir_dim() if isinstance(d, SymDim) else int(d)


def product(dims) -> Dim:
    """Product of ints and SymDims (1 for an empty list)."""
    out: Dim = 1
    for d in dims:
        out = out * d if isinstance(out, SymDim) or not isinstance(d, SymDim) else d * out
    return out
