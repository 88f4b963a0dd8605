"""Pass base class, typed pass options and the pass registry.

    @register_pass("fold-batchnorm")
    class FoldBatchNorm(Pass):
        \"\"\"Folds inference batch-norm into the preceding conv or matmul weights.\"\"\"
        options = {"epsilon": Option(float, 1e-3, "epsilon to assume")}
        def run(self, module, ctx) -> bool:   # True iff the IR changed
            ...
"""

from __future__ import annotations

import abc
import difflib
import inspect
import json
import re
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Sequence

from ..ir.errors import ConversionError, Diagnostic, TensorforgeError
from ..ir.graph import Module


class PipelineError(ConversionError):
    """A pipeline names an unknown pass or option, or gives an option a bad value."""


@dataclass(frozen=True)
class Option:
    """A pass option: its type (int, float, bool, str), default and one-line doc, and what a
    value must satisfy: `choices` (the valid values, or a function returning them), `min`
    (numbers) and `check` (a function raising ValueError, or a TensorforgeError, with the
    reason). Values are validated when the pipeline is parsed, not when the pass runs."""

    type: type
    default: Any
    doc: str = ""
    choices: Sequence[Any] | Callable[[], Sequence[Any]] | None = None
    min: int | float | None = None
    check: Callable[[Any], None] | None = None

    def valid_choices(self) -> list[Any] | None:
        if self.choices is None:
            return None
        return list(self.choices() if callable(self.choices) else self.choices)

    def convert(self, text: str) -> Any:
        """Parses and validates a textual option value; raises ValueError with the reason."""
        if self.type is bool:
            low = text.lower()
            if low in ("true", "1", "yes", "on"):
                return True
            if low in ("false", "0", "no", "off"):
                return False
            raise ValueError(f"expected true or false, got '{text}'")
        if self.type is str:
            return self.validate(text)
        try:
            value = self.type(text)
        except (ValueError, OverflowError):
            raise ValueError(f"expected {self.type.__name__}, got '{text}'") from None
        return self.validate(value)

    def validate(self, value: Any) -> Any:
        """`value` if it is valid for this option; ValueError saying why (and listing the
        valid values) otherwise."""
        if self.type is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, self.type) or (self.type is int and isinstance(value, bool)):
            raise ValueError(f"expected {self.type.__name__}, got {value!r}")
        if self.type is float and value != value:
            raise ValueError("expected a number, got nan")
        choices = self.valid_choices()
        if choices is not None and value not in choices:
            close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            raise ValueError(f"'{value}' is not one of {', '.join(map(str, choices))}{hint}")
        if self.min is not None and value < self.min:
            raise ValueError(f"must be at least {self.min}, got {value}")
        if self.check is not None:
            try:
                self.check(value)
            except TensorforgeError as e:
                details = [str(d) for d in getattr(e, "diagnostics", ())]
                summary = getattr(e, "summary", str(e))
                raise ValueError("; ".join([summary, *details])) from None
        return value


_PLAIN_VALUE = re.compile(r"[A-Za-z0-9_.+\-/:@]*")


def format_option_value(value: Any) -> str:
    """An option value as pipeline text; a string that the pipeline syntax would split (a
    comma, a brace, a space, a quote) is double-quoted with JSON escapes, so the printed
    pipeline always parses back to the same values."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str) and not _PLAIN_VALUE.fullmatch(value):
        return json.dumps(value)
    return str(value)


class Pass(abc.ABC):
    """A transformation of a Module. Subclasses set `options` and implement `run`, which
    returns True exactly when it changed the IR (the pass manager can check this)."""

    name: ClassVar[str] = ""
    options: ClassVar[dict[str, Option]] = {}

    def __init__(self, **values: Any):
        self.given: dict[str, Any] = {}
        problems = []
        for key, value in values.items():
            key = key.replace("_", "-")
            if key not in self.options:
                problems.append(unknown_option_message(self.name, key, self.options))
                continue
            opt = self.options[key]
            try:
                value = opt.convert(value) if isinstance(value, str) else opt.validate(value)
            except ValueError as e:
                problems.append(f"option '{key}' of pass '{self.name}': {e}")
                continue
            self.given[key] = value
        if problems:
            raise PipelineError("bad pass options", [Diagnostic(p) for p in problems])

    def option(self, key: str) -> Any:
        """The value of option `key` (given or default)."""
        return self.given.get(key, self.options[key].default)

    @abc.abstractmethod
    def run(self, module: Module, ctx: "PassContext") -> bool:  # noqa: F821
        """Transforms `module`; returns True exactly when it changed the IR."""

    def pipeline_text(self) -> str:
        """This pass as a pipeline element: `name` or `name{key=value,...}`."""
        if not self.given:
            return self.name
        opts = ",".join(f"{k}={format_option_value(v)}" for k, v in self.given.items())
        return f"{self.name}{{{opts}}}"

    @classmethod
    def summary(cls) -> str:
        """The first paragraph of the pass's docstring, on one line (a wrapped first sentence
        is not cut at the end of its first physical line)."""
        doc = inspect.cleandoc(cls.__doc__ or "")
        return " ".join(doc.split("\n\n", 1)[0].split())


def unknown_option_message(pass_name: str, key: str, options: dict) -> str:
    close = difflib.get_close_matches(key, options, n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    valid = ", ".join(options) or "none"
    return f"pass '{pass_name}' has no option '{key}' (options: {valid}{hint})"


_PASSES: dict[str, type[Pass]] = {}


def register_pass(name: str) -> Callable[[type[Pass]], type[Pass]]:
    """Class decorator registering a Pass under `name` (used by pipelines and the CLI).
    Registering a name twice with a different class is an error; re-registering the same
    class (a plugin file loaded twice) is allowed."""

    def deco(cls: type[Pass]) -> type[Pass]:
        if not (isinstance(cls, type) and issubclass(cls, Pass)):
            raise TypeError(f"@register_pass({name!r}) needs a Pass subclass")
        existing = _PASSES.get(name)
        if existing is not None and existing.__qualname__ != cls.__qualname__:
            raise ValueError(f"pass '{name}' is already registered by "
                             f"{existing.__module__}.{existing.__qualname__}")
        cls.name = name
        _PASSES[name] = cls
        return cls

    return deco


def get_pass(name: str) -> type[Pass]:
    """The pass class registered as `name`; PipelineError naming close matches otherwise."""
    try:
        return _PASSES[name]
    except KeyError:
        close = difflib.get_close_matches(name, _PASSES, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        from .plugins import unloaded_plugins_hint

        raise PipelineError(f"unknown pass '{name}'{hint} (see `tensorforge passes`)"
                            f"{unloaded_plugins_hint()}") from None


def registered_passes() -> dict[str, type[Pass]]:
    """All registered passes by name, sorted."""
    return dict(sorted(_PASSES.items()))
