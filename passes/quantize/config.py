"""The quantization configuration map: a scheme plus per-layer, per-op-type and per-tensor
overrides, with their JSON form; `resolve` says what each operand and result of each node is
quantized to.

Mirrors the TF Quantization API preview. A `QuantizationConfigurationMap` starts from a
scheme (schemes.py) and takes overrides (the configurations themselves are in
configuration.py, the recorded calls in overrides.py; resolver.py applies keys and precedence
below to a module and returns a resolution.py `Resolution`):

    qmap = QuantizationConfigurationMap("int8")
    qmap.set_config("conv1", LayerConfiguration(weight_config=w4, activation_config=a8))
    qmap.set_config("head", None)                                   # keep the layer float
    qmap.set_config("encoder/.*/attention", op_type="matmul",
                    config={"a": a16, "b": w8, "return": a16})       # per op type, per operand
    qmap.set_tensor_config("x", a16)                                # per tensor
    resolution = qmap.resolve(module)                               # per node, per operand
    print(resolution.table())

Keys
----
* **exact scope**: a key that equals some node scope, or is a `/`-prefix of one (`"conv1"`
  matches scopes `conv1` and `conv1/bn`, not `conv10`).
* **regex**: any other key, `re.fullmatch`ed against the scope and against each `/`-prefix of
  it (`"encoder/.*/attention"` matches `encoder/0/attention/query`).
* **Keras layer**: an object with `.path` (else `.name`); treated as an exact scope, also
  tried without its leading path components (Keras 3 paths start with the model's name, the
  frontend's scopes do not). Never imported here.
* **tensor keys** (`set_tensor_config`): an IR value name (`x`, a named constant), or
  `<node scope>/<operand name>` / `<node scope>/return` (`conv1/filter`, `fc/return`;
  `name:i` picks one operand of a variadic op or one result of a multi-result op), or a
  regex over those names.

Precedence
----------
For each operand and result: **tensor > op type > layer > scheme**. At the same level an exact
key beats a regex; between exact scope keys the longer (more specific) one wins, then the later
call; between regexes the later call wins. Whether a node is quantized at all is decided first,
per node: an op-type entry decides if there is one (a dict opts the op in even when the scheme
does not list it; None keeps it float); otherwise the op must be in `scheme.ops` and its layer
entry must not be None. Tensor entries refine operands of quantized nodes; they never bring a
float node back.

Kinds and defaults
------------------
* `weight`: a constant float operand in the role `filter` (conv2d, depthwise_conv2d,
  conv2d_transpose), `b` (matmul) or `params` (gather) -> the weight config. In `fp16` mode
  every constant float operand is a weight (stored as float16).
* `bias`: the `bias` operand of conv2d/depthwise_conv2d/conv2d_transpose/matmul -> int
  `scheme.bias_bits`, symmetric, the weight's granularity (per_channel for a blockwise weight),
  when the node's weight is quantized to int and the mode is static; else float.
* `activation`: any other float operand (constants included) -> the activation config in
  static mode, float otherwise. Float results are activations too.
* `other`: a non-float operand (int indices, ...) -> never quantized.

A config of `None` anywhere means "stays float".
"""

from __future__ import annotations

import difflib
import json
import re
from typing import Any

from ...ir.graph import Module
from ...ir.ops import all_ops, has_op
from . import schemes
from .configuration import (ConfigError, LayerConfiguration, QuantizationConfiguration,
                            _config_from_dict, _error)
from .overrides import _Entry, _key_string, _operand_names, _scope_prefixes
from .resolution import Resolution
from .resolver import resolve
from .schemes import Scheme


class QuantizationConfigurationMap:
    """A scheme plus per-layer, per-op-type and per-tensor overrides (see the module docstring
    for keys and precedence). `resolve(module)` applies it to a module."""

    def __init__(self, scheme: "Scheme | str" = "int8"):
        self.scheme: Scheme = schemes.get(scheme)
        self._entries: list[_Entry] = []

    # -- building ------------------------------------------------------------------------------
    def set_config(self, key: Any, config: "LayerConfiguration | dict | None",
                   op_type: str | None = None) -> "QuantizationConfigurationMap":
        """Configures a layer (`key`: scope, regex or Keras layer). Without `op_type`, `config`
        is a LayerConfiguration or None (the layer stays float). With `op_type`, it applies to
        that op's nodes in the layer: a dict {operand name or "return": config or None}
        (operands not named keep the layer's configs) or None (those nodes stay float).
        Returns self."""
        skey, layer = _key_string(key)
        problems = []
        if op_type is not None:
            if not isinstance(op_type, str) or not has_op(op_type) or op_type == "constant":
                close = difflib.get_close_matches(str(op_type), all_ops(), n=3)
                hint = f" (did you mean {', '.join(close)}?)" if close else ""
                raise _error("bad op_type", [f"op_type {op_type!r} is not an IR op{hint}"])
            if config is not None:
                if not isinstance(config, dict):
                    raise _error("bad config", [
                        f"with op_type, config is a dict {{operand name: "
                        f"QuantizationConfiguration | None}} or None, got "
                        f"{type(config).__name__}"])
                valid = _operand_names(op_type) + ["return"]
                for name, v in config.items():
                    if name not in valid:
                        close = difflib.get_close_matches(str(name), valid, n=1)
                        hint = f" (did you mean {close[0]!r}?)" if close else ""
                        problems.append(f"{op_type} has no operand {name!r}{hint}; valid: "
                                        f"{', '.join(valid)}")
                    if v is not None and not isinstance(v, QuantizationConfiguration):
                        problems.append(f"config[{name!r}] must be a QuantizationConfiguration "
                                        f"or None, got {type(v).__name__}")
                config = dict(config)
        elif config is not None and not isinstance(config, LayerConfiguration):
            hint = " (a dict config needs op_type=...)" if isinstance(config, dict) else ""
            problems.append(f"config must be a LayerConfiguration or None, got "
                            f"{type(config).__name__}{hint}")
        if problems:
            raise _error(f"bad set_config({skey!r})", problems)
        self._entries.append(_Entry("set_config", skey, config, op_type, layer))
        return self

    def set_tensor_config(self, name: str, config: QuantizationConfiguration | None
                          ) -> "QuantizationConfigurationMap":
        """Configures one tensor: an IR value name, `<scope>/<operand>`, `<scope>/return`, or a
        regex over those. None keeps it float. Returns self."""
        if not isinstance(name, str) or not name:
            raise _error("bad tensor key", [f"expected a non-empty string, got {name!r}"])
        if config is not None and not isinstance(config, QuantizationConfiguration):
            raise _error(f"bad set_tensor_config({name!r})",
                         [f"config must be a QuantizationConfiguration or None, got "
                          f"{type(config).__name__}"])
        self._entries.append(_Entry("set_tensor_config", name, config))
        return self

    @property
    def calls(self) -> list[dict[str, Any]]:
        """The recorded calls, in order, as dicts (the `calls` of `to_dict`)."""
        return [e.to_dict() for e in self._entries]

    # -- one layer, without a module (QAT wrappers) ----------------------------------------------
    def layer_configuration(self, path: str, op_type: str):
        """(weight config, activation config) for the `op_type` node of the layer at `path`,
        by the same layer and op-type precedence as `resolve` (tensor keys do not apply: QAT
        wraps whole layers). `op_type` is an IR op, or "input" for a model input. Either part
        is None when it stays float."""
        scheme = self.scheme
        weight = scheme.weight if scheme.mode in ("static", "weight_only", "dynamic") else None
        act = scheme.activation if scheme.mode == "static" else None
        if op_type != "input" and op_type not in scheme.ops:
            weight = act = None
        layer = self._best(path, None)
        if layer is not None:
            if layer.config is None:
                return None, None
            weight, act = layer.config.weight_config, layer.config.activation_config
        op = self._best(path, op_type) if op_type != "input" else None
        if op is not None:
            if op.config is None:
                return None, None
            weight_roles = {"filter", "b", "params"}
            for name, qc in op.config.items():
                if name in weight_roles:
                    weight = qc
                elif name == "return":
                    act = qc
        return weight, act

    def _best(self, path: str, op_type: str | None) -> "_Entry | None":
        """The set_config entry that governs `path` (for `op_type`, or the layer itself):
        exact keys beat regexes, a longer exact key beats a shorter one, later calls win."""
        best, best_rank = None, None
        for index, e in enumerate(self._entries):
            if e.method != "set_config" or e.op_type != op_type:
                continue
            exact = [c for c in e.candidates() if path == c or path.startswith(c + "/")]
            if exact:
                rank = (1, max(len(c) for c in exact), index)
            else:
                try:
                    hit = any(re.fullmatch(e.key, p) for p in _scope_prefixes(path))
                except re.error:
                    hit = False
                if not hit:
                    continue
                rank = (0, 0, index)
            if best_rank is None or rank > best_rank:
                best, best_rank = e, rank
        return best

    # -- resolving -----------------------------------------------------------------------------
    def resolve(self, module: Module) -> Resolution:
        """Per node of `module.main` (constants skipped), the config of every operand and
        result. ConfigError listing every key that matches nothing (with the nearest scopes
        or tensor names)."""
        return resolve(self.scheme, self._entries, module)

    # -- serialization -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """{"version": 1, "scheme": name (or the full scheme when it is not the registered
        one), "calls": [...]}; `from_dict` rebuilds an equal map."""
        registered = self.scheme.name in schemes.names() and \
            schemes.get(self.scheme.name) == self.scheme
        return {"version": 1,
                "scheme": self.scheme.name if registered else self.scheme.to_dict(),
                "calls": self.calls}

    def to_json(self, indent: int | None = 2) -> str:
        """`to_dict` as JSON text."""
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_json(cls, text: str) -> "QuantizationConfigurationMap":
        """The map `to_json` wrote; ConfigError listing every problem otherwise."""
        try:
            data = json.loads(text)
        except (ValueError, TypeError, RecursionError) as e:
            # ValueError: bad JSON, or an integer of more digits than Python converts.
            raise _error("invalid quantization config JSON", [str(e)[:200]]) from None
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: Any) -> "QuantizationConfigurationMap":
        """The map `to_dict` produced; ConfigError listing every problem otherwise."""
        problems: list[str] = []
        if not isinstance(data, dict):
            raise _error("invalid quantization config", ["expected a JSON object"])
        for k in data:
            if k not in ("version", "scheme", "calls"):
                problems.append(f"unknown field {k!r} (valid: version, scheme, calls)")
        if data.get("version", 1) != 1:
            problems.append(f"unsupported version {data.get('version')!r} (expected 1)")
        scheme = None
        if "scheme" not in data:
            problems.append("missing field 'scheme'")
        elif isinstance(data["scheme"], dict):
            try:
                scheme = schemes.Scheme.from_dict(data["scheme"])
            except ConfigError as e:
                problems.extend(d.message for d in e.diagnostics)
        else:
            try:
                scheme = schemes.get(data["scheme"])
            except ConfigError as e:
                problems.append(f"scheme: {e}")
        calls = data.get("calls", [])
        if not isinstance(calls, list):
            problems.append("calls: expected a list")
            calls = []
        qmap = cls.__new__(cls)
        qmap.scheme = scheme
        qmap._entries = []
        for i, call in enumerate(calls):
            _replay(qmap, call, f"calls[{i}]", problems)
        if problems:
            raise _error("invalid quantization config", problems)
        return qmap

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, QuantizationConfigurationMap):
            return NotImplemented
        return self.scheme == other.scheme and self._entries == other._entries

    __hash__ = None  # mutable

    def __repr__(self) -> str:
        return (f"QuantizationConfigurationMap({self.scheme.name!r}, "
                f"{len(self._entries)} override{'s' if len(self._entries) != 1 else ''})")


def _replay(qmap: QuantizationConfigurationMap, call: Any, where: str,
            problems: list[str]) -> None:
    """Re-applies one serialized call, appending its problems (if any) instead of raising."""
    if not isinstance(call, dict):
        problems.append(f"{where}: expected an object")
        return
    method = call.get("method")
    fields = {"set_config": ("method", "key", "config", "op_type", "layer"),
              "set_tensor_config": ("method", "key", "config")}
    if not isinstance(method, str) or method not in fields:
        problems.append(f"{where}.method: {method!r} is not one of set_config, "
                        f"set_tensor_config")
        return
    n = len(problems)
    for k in call:
        if k not in fields[method]:
            problems.append(f"{where}: unknown field {k!r} (valid: {', '.join(fields[method])})")
    key = call.get("key")
    if not isinstance(key, str) or not key:
        problems.append(f"{where}.key: expected a non-empty string, got {key!r}")
    if "config" not in call:
        problems.append(f"{where}: missing field 'config'")
    raw = call.get("config")
    op_type = call.get("op_type")
    layer = call.get("layer", False)
    if not isinstance(layer, bool):
        problems.append(f"{where}.layer: expected a bool")
    config: Any = None
    if method == "set_tensor_config":
        if raw is not None:
            config = _config_from_dict(raw, f"{where}.config", problems)
    elif op_type is not None:
        if not isinstance(op_type, str) or not has_op(op_type):
            problems.append(f"{where}.op_type: {op_type!r} is not an IR op")
        elif raw is not None:
            if not isinstance(raw, dict):
                problems.append(f"{where}.config: expected an object of operand configs")
            else:
                valid = _operand_names(op_type) + ["return"]
                config = {}
                for name, v in raw.items():
                    if name not in valid:
                        problems.append(f"{where}.config: {op_type} has no operand {name!r}; "
                                        f"valid: {', '.join(valid)}")
                    config[name] = None if v is None else \
                        _config_from_dict(v, f"{where}.config.{name}", problems)
    elif raw is not None:
        if not isinstance(raw, dict):
            problems.append(f"{where}.config: expected an object with weight_config, "
                            f"activation_config")
        else:
            parts = {}
            for k, v in raw.items():
                if k not in ("weight_config", "activation_config"):
                    problems.append(f"{where}.config: unknown field {k!r} (valid: "
                                    f"weight_config, activation_config)")
                elif v is not None:
                    parts[k] = _config_from_dict(v, f"{where}.config.{k}", problems)
            if len(problems) == n:
                try:
                    config = LayerConfiguration(**parts)
                except ConfigError as e:
                    problems.extend(f"{where}.config: {d.message}" for d in e.diagnostics)
    if len(problems) == n:
        qmap._entries.append(_Entry(method, key, config, op_type, layer))
