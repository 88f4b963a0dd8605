"""The op registry: every IR op is declared once, with its operands, typed attributes, a
type/shape inference rule and a NumPy reference kernel.

Backends keep their own lowering tables; nothing backend-specific lives here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from ..attrs import normalize_attr
from ..errors import InferenceError
from ..types import SYMBOL_RE, DType, TensorType

REQUIRED = object()

def _is_dim(x) -> bool:
    if isinstance(x, str):
        return SYMBOL_RE.match(x) is not None
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


# Attribute kinds and the Python values they accept (after attrs.normalize_attr).
_ATTR_CHECKS: dict[str, Callable[[Any], bool]] = {
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "bool": lambda v: isinstance(v, bool),
    "str": lambda v: isinstance(v, str),
    "dtype": lambda v: isinstance(v, DType),
    "ints": lambda v: isinstance(v, tuple) and all(_ATTR_CHECKS["int"](x) for x in v),
    "floats": lambda v: isinstance(v, tuple) and all(_ATTR_CHECKS["float"](x) for x in v),
    "strs": lambda v: isinstance(v, tuple) and all(isinstance(x, str) for x in v),
    "tensor": lambda v: isinstance(v, np.ndarray),
    # nested int lists, e.g. explicit padding [[top, bottom], [left, right]]
    "intss": lambda v: isinstance(v, tuple) and all(_ATTR_CHECKS["ints"](x) for x in v),
    # a shape of static sizes and symbols, e.g. (batch, 16) or (?, 3)
    "dims": lambda v: isinstance(v, tuple) and all(_is_dim(x) for x in v),
    "any": lambda v: True,
}


@dataclass(frozen=True)
class Attr:
    """An attribute declaration: its kind, default (REQUIRED if none) and allowed values.
    `optional=True` lets the value also be None (e.g. an unset axis)."""

    kind: str
    default: Any = REQUIRED
    choices: tuple | None = None
    optional: bool = False
    doc: str = ""

    def problem(self, value: Any) -> str | None:
        """Why `value` does not fit this declaration, or None if it does."""
        if value is None and self.optional:
            return None
        if not _ATTR_CHECKS[self.kind](value):
            return f"expected {self.kind}, got {type(value).__name__} {value!r}"
        if self.choices is not None and value not in self.choices:
            return f"{value!r} is not one of {', '.join(repr(c) for c in self.choices)}"
        return None


InferFn = Callable[[Sequence[TensorType], dict], list[TensorType]]
KernelFn = Callable[[Sequence[np.ndarray], dict], list[np.ndarray]]


@dataclass
class OpDef:
    """Declaration of one op.

    inputs:  operand names; a trailing `*` makes the last one variadic (`"values*"`, zero or
             more), a trailing `?` makes it optional (`"bias?"`).
    infer:   (operand types, complete attrs) -> result types; raises InferenceError.
    kernel:  (operand arrays, complete attrs) -> result arrays (NumPy reference semantics).
    traits:  `elementwise`, `commutative`, `involution` (f(f(x)) = x), `idempotent`
             (f(f(x)) = f(x)), `pure` (no side effects; everything is pure today),
             `no_fold` (never constant-fold, e.g. `constant` itself).
    regions: names of the regions (nested graphs) each node owns, for control flow
             (`("cond", "body")`); a trailing `*` makes the last one variadic (`"branch*"`).
             Such an op's `infer` takes a third argument, the region graphs, and its `kernel`
             a third one, `run(k, arrays) -> arrays`, which runs region k (see
             `infer_types` / `run_kernel`).
    """

    name: str
    inputs: tuple[str, ...]
    infer: InferFn
    kernel: KernelFn
    attrs: dict[str, Attr] = field(default_factory=dict)
    traits: frozenset[str] = frozenset()
    doc: str = ""
    regions: tuple[str, ...] = ()

    def region_count_problem(self, n: int) -> str | None:
        """Why a node of this op cannot own `n` regions, or None."""
        variadic = bool(self.regions) and self.regions[-1].endswith("*")
        lo = len(self.regions) - (1 if variadic else 0)
        if n == lo or (variadic and n > lo):
            return None
        names = ", ".join(self.regions) or "none"
        return f"{self.name} owns {lo}{'+' if variadic else ''} regions ({names}), got {n}"

    @property
    def min_inputs(self) -> int:
        return sum(1 for n in self.inputs if not n.endswith(("*", "?")))

    @property
    def max_inputs(self) -> int | None:
        if self.inputs and self.inputs[-1].endswith("*"):
            return None
        return len(self.inputs)

    def complete_attrs(self, attrs: dict[str, Any]) -> dict[str, Any]:
        """`attrs` with defaults filled in. Unknown or missing attributes are left for the
        verifier to report (so that every problem is listed at once)."""
        out = {k: normalize_attr(v) for k, v in attrs.items()}
        for name, decl in self.attrs.items():
            if name not in out and decl.default is not REQUIRED:
                out[name] = normalize_attr(decl.default)
        return out

    def attr_problems(self, attrs: dict[str, Any]) -> list[str]:
        """Every unknown, missing or ill-typed attribute."""
        out = []
        for name in attrs:
            if name not in self.attrs:
                valid = ", ".join(sorted(self.attrs)) or "none"
                out.append(f"unknown attribute '{name}' for {self.name} (valid: {valid})")
        for name, decl in self.attrs.items():
            if name not in attrs:
                if decl.default is REQUIRED:
                    out.append(f"missing required attribute '{name}' ({decl.kind})")
                continue
            p = decl.problem(attrs[name])
            if p:
                out.append(f"attribute '{name}': {p}")
        return out

    def arity_problem(self, n: int) -> str | None:
        lo, hi = self.min_inputs, self.max_inputs
        if n < lo or (hi is not None and n > hi):
            want = f"{lo}" if lo == hi else f"{lo}..{'' if hi is None else hi}"
            return f"{self.name} takes {want} operands ({', '.join(self.inputs)}), got {n}"
        return None


def infer_types(opdef: OpDef, types: Sequence[TensorType], attrs: dict,
                regions: Sequence = ()) -> list[TensorType]:
    """The result types of `opdef` on operands of `types`; a region op also sees its region
    graphs (their argument and result types fix its own)."""
    if opdef.regions:
        problem = opdef.region_count_problem(len(regions))
        check(problem is None, problem or "")
        return opdef.infer(types, attrs, list(regions))
    check(not regions, f"{opdef.name} owns no regions, got {len(regions)}")
    return opdef.infer(types, attrs)


def run_kernel(opdef: OpDef, arrays: Sequence[np.ndarray], attrs: dict,
               run_region: Callable | None = None) -> list[np.ndarray]:
    """Runs the reference kernel of `opdef`; a region op gets `run_region(k, arrays)`."""
    if opdef.regions:
        if run_region is None:
            raise InferenceError(f"{opdef.name} needs its regions to run")
        return opdef.kernel(arrays, attrs, run_region)
    return opdef.kernel(arrays, attrs)


_REGISTRY: dict[str, OpDef] = {}


def register_op(opdef: OpDef) -> OpDef:
    """Adds an op to the registry (one definition per name)."""
    if opdef.name in _REGISTRY:
        raise ValueError(f"op '{opdef.name}' is already registered")
    _REGISTRY[opdef.name] = opdef
    return opdef


def get_op(name: str) -> OpDef:
    """The definition of op `name`; KeyError naming close matches if there is none."""
    try:
        return _REGISTRY[name]
    except KeyError:
        import difflib

        close = difflib.get_close_matches(name, _REGISTRY, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise KeyError(f"unknown op '{name}'{hint}") from None


def has_op(name: str) -> bool:
    return name in _REGISTRY


def all_ops() -> dict[str, OpDef]:
    return dict(_REGISTRY)


# -- helpers shared by op families -------------------------------------------------------------

def check(cond: bool, message: str) -> None:
    """Raises InferenceError(message) unless `cond`."""
    if not cond:
        raise InferenceError(message)


def broadcast_dims(a, b):
    """NumPy broadcasting of two dims that may be symbols. Raises InferenceError if they clash."""
    if a == b:
        return a
    if a == 1:
        return b
    if b == 1:
        return a
    if isinstance(a, int) and isinstance(b, int):
        raise InferenceError(f"cannot broadcast dims {a} and {b}")
    # a symbol against a static size > 1 (or another symbol): the static size wins because the
    # symbol must equal it at run time; two different symbols stay unknown.
    if isinstance(a, int):
        return a
    if isinstance(b, int):
        return b
    return "?"


def broadcast_shapes(*shapes):
    """NumPy broadcasting over shapes with symbolic dims."""
    rank = max((len(s) for s in shapes), default=0)
    out = [1] * rank
    for s in shapes:
        padded = (1,) * (rank - len(s)) + tuple(s)
        out = [broadcast_dims(x, y) for x, y in zip(out, padded)]
    return tuple(out)


def normalize_axis(axis: int, rank: int, what: str = "axis") -> int:
    """Maps a possibly negative axis into [0, rank); InferenceError if out of range."""
    check(-rank <= axis < rank, f"{what} {axis} out of range for rank {rank}")
    return axis % rank if rank else 0
