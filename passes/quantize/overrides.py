"""The overrides a configuration map records: one `set_config` / `set_tensor_config` call
(`_Entry`, also its JSON form), how a key is spelled (a string or a Keras layer), which exact
keys it tries and the `/`-prefixes of a scope it is matched against. The map (config.py)
records them; the resolver (resolver.py) matches them against a module.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...ir.ops import get_op
from .configuration import LayerConfiguration, _error, _qc_dict


@dataclass(frozen=True)
class _Entry:
    """One recorded set_config / set_tensor_config call."""

    method: str                      # "set_config" | "set_tensor_config"
    key: str
    config: Any                      # LayerConfiguration | dict | QuantizationConfiguration | None
    op_type: str | None = None
    layer: bool = False              # the key came from a Keras layer object

    def describe(self) -> str:
        if self.method == "set_tensor_config":
            return f"set_tensor_config({self.key!r}, {'None' if self.config is None else '...'})"
        op = f", op_type={self.op_type!r}" if self.op_type else ""
        return f"set_config({self.key!r}, {'None' if self.config is None else '...'}{op})"

    def candidates(self) -> list[str]:
        """Exact keys to try, most specific first: a layer path is also tried without its
        leading components (the model name the frontend's scopes leave out)."""
        if not self.layer:
            return [self.key]
        parts = self.key.split("/")
        return ["/".join(parts[i:]) for i in range(len(parts))]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"method": self.method, "key": self.key}
        if self.method == "set_config":
            if self.layer:
                out["layer"] = True
            out["op_type"] = self.op_type
            if self.config is None:
                out["config"] = None
            elif isinstance(self.config, LayerConfiguration):
                out["config"] = self.config.to_dict()
            else:
                out["config"] = {k: _qc_dict(v) for k, v in self.config.items()}
        else:
            out["config"] = _qc_dict(self.config)
        return out


def _operand_names(op: str) -> list[str]:
    """The operand role names of IR op `op` (without the `?` / `*` markers)."""
    return [n.rstrip("?*") for n in get_op(op).inputs]


def _key_string(key: Any) -> tuple[str, bool]:
    """(key string, came from a layer object)."""
    if isinstance(key, str):
        if not key:
            raise _error("empty configuration key", ["use a scope, a regex or a layer"])
        return key, False
    for attr in ("path", "name"):
        v = getattr(key, attr, None)
        if isinstance(v, str) and v:
            return v, True
    raise _error("bad configuration key",
                 [f"expected a scope string, a regex or a layer (an object with .path or "
                  f".name), got {type(key).__name__}"])


def _scope_prefixes(scope: str) -> list[str]:
    """Each `/`-prefix of `scope`, shortest first, ending with `scope` itself."""
    parts = scope.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
