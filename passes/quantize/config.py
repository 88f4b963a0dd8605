"""Quantization configuration: what each operand and result of each node is quantized to.

Mirrors the TF Quantization API preview. A `QuantizationConfigurationMap` starts from a
scheme (schemes.py) and takes overrides:

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

import dataclasses
import difflib
import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, NamedTuple

from ...ir.errors import ConversionError, Diagnostic
from ...ir.graph import Module, Node
from ...ir.ops import all_ops, get_op, has_op

if TYPE_CHECKING:  # schemes imports this module; import it lazily at run time
    from .schemes import Scheme

ACTIVATION_BITS = (4, 8, 16)          # widths for weights and activations
ALL_BITS = (4, 8, 16, 32, 64)         # 32 / 64: biases (int32, int64 for int16x8)
GRANULARITIES = ("per_tensor", "per_channel", "blockwise")
CALIBRATIONS = ("minmax", "moving_average", "percentile", "mse")
DTYPES = ("int", "float16")
KINDS = ("weight", "bias", "activation", "other")

# Operand roles holding the weight (when constant and float) / the bias, per op.
WEIGHT_ROLES = {"conv2d": "filter", "depthwise_conv2d": "filter", "conv2d_transpose": "filter",
                "matmul": "b", "gather": "params"}
BIAS_OPS = frozenset({"conv2d", "depthwise_conv2d", "conv2d_transpose", "matmul"})


class ConfigError(ConversionError):
    """A bad quantization configuration, scheme name or configuration key; lists every
    problem at once."""


def _error(summary: str, problems: Iterable[str]) -> ConfigError:
    return ConfigError(summary, [Diagnostic(p) for p in problems])


def _choices(values) -> str:
    return ", ".join(repr(v) if isinstance(v, str) else str(v) for v in values)


# -- QuantizationConfiguration -----------------------------------------------------------------

@dataclass(frozen=True)
class QuantizationConfiguration:
    """How one tensor is quantized.

    bits:         4, 8 or 16 for weights and activations; 32 or 64 for biases. Forced to 16
                  when dtype is float16.
    symmetric:    zero point 0 (symmetric range) or a free zero point (asymmetric).
    granularity:  `per_tensor`, `per_channel` (output-channel axis of a weight) or `blockwise`
                  (per-channel scales over blocks of `block_size` input elements).
    narrow_range: drop the most negative code (int8 weights in [-127, 127]); None means True
                  for symmetric weights and False otherwise (see `resolved_narrow_range`).
    calibration:  how activation ranges are found: `minmax`, `moving_average`, `percentile`
                  (`percentile` of |x|, e.g. 99.99) or `mse` (clipping minimizing the error).
    dtype:        `int` (integer codes + scale/zero point) or `float16` (fp16 storage).
    """

    bits: int = 8
    symmetric: bool = True
    granularity: str = "per_tensor"
    block_size: int | None = None
    narrow_range: bool | None = None
    calibration: str = "minmax"
    percentile: float = 99.99
    dtype: str = "int"

    def __post_init__(self):
        if self.dtype == "float16" and self.bits in (8, 16):
            # float16 storage is 16 bits whatever `bits` says; 8 is the field's default.
            object.__setattr__(self, "bits", 16)
        problems = self.problems()
        if problems:
            raise _error("invalid QuantizationConfiguration", problems)

    def problems(self) -> list[str]:
        """Every reason this configuration is invalid (empty when it is fine)."""
        out = []
        if isinstance(self.bits, bool) or not isinstance(self.bits, int) \
                or self.bits not in ALL_BITS:
            out.append(f"bits must be one of 4, 8, 16 (32, 64 for biases), got {self.bits!r}")
        if not isinstance(self.symmetric, bool):
            out.append(f"symmetric must be a bool, got {self.symmetric!r}")
        if self.granularity not in GRANULARITIES:
            out.append(f"granularity {self.granularity!r} is not one of "
                       f"{_choices(GRANULARITIES)}")
        if self.granularity == "blockwise":
            if self.block_size is None:
                out.append("granularity 'blockwise' needs block_size (e.g. 32)")
        if self.block_size is not None:
            if isinstance(self.block_size, bool) or not isinstance(self.block_size, int) \
                    or self.block_size <= 0:
                out.append(f"block_size must be a positive int, got {self.block_size!r}")
            elif self.granularity != "blockwise":
                out.append(f"block_size is only for granularity 'blockwise' (granularity is "
                           f"{self.granularity!r})")
        if self.narrow_range is not None and not isinstance(self.narrow_range, bool):
            out.append(f"narrow_range must be a bool or None, got {self.narrow_range!r}")
        if self.calibration not in CALIBRATIONS:
            out.append(f"calibration {self.calibration!r} is not one of "
                       f"{_choices(CALIBRATIONS)}")
        if isinstance(self.percentile, bool) or not isinstance(self.percentile, (int, float)) \
                or not 0 < self.percentile <= 100:
            out.append(f"percentile must be in (0, 100], got {self.percentile!r}")
        if self.dtype not in DTYPES:
            out.append(f"dtype {self.dtype!r} is not one of {_choices(DTYPES)}")
        elif self.dtype == "float16" and self.bits != 16 and self.bits in ALL_BITS:
            out.append(f"dtype 'float16' stores 16 bits, got bits={self.bits}")
        return out

    def resolved_narrow_range(self, kind: str) -> bool:
        """`narrow_range` for a tensor of `kind` (weight/bias/activation): the explicit value,
        else True for symmetric weights (TFLite's int8 weights) and False otherwise."""
        if kind not in KINDS:
            raise _error(f"unknown tensor kind {kind!r}", [f"valid kinds: {_choices(KINDS)}"])
        if self.narrow_range is not None:
            return self.narrow_range
        return self.symmetric and kind == "weight" and self.dtype == "int"

    def describe(self, kind: str = "activation") -> str:
        """Short form: `int8 sym,narrow per_channel minmax` / `float16`."""
        if self.dtype == "float16":
            return "float16"
        sym = "sym" if self.symmetric else "asym"
        if self.resolved_narrow_range(kind):
            sym += ",narrow"
        return f"int{self.bits} {sym} {self._granularity_str()} {self._calibration_str()}"

    def _granularity_str(self) -> str:
        if self.granularity == "blockwise":
            return f"blockwise({self.block_size})"
        return self.granularity

    def _calibration_str(self) -> str:
        if self.calibration == "percentile":
            return f"percentile({self.percentile:g})"
        return self.calibration

    def to_dict(self) -> dict[str, Any]:
        """Every field, JSON-ready."""
        return dataclasses.asdict(self)

    @staticmethod
    def from_dict(data: Any) -> "QuantizationConfiguration":
        """The configuration `to_dict` produced; ConfigError listing every problem otherwise
        (unknown fields included)."""
        problems: list[str] = []
        qc = _config_from_dict(data, "config", problems)
        if problems:
            raise _error("invalid QuantizationConfiguration", problems)
        return qc


_QC_FIELDS = tuple(f.name for f in dataclasses.fields(QuantizationConfiguration))


def _config_from_dict(data: Any, where: str, problems: list[str]):
    """A QuantizationConfiguration from `data`, or None after appending every problem (each
    prefixed by `where`) to `problems`."""
    if not isinstance(data, dict):
        problems.append(f"{where}: expected an object with fields {', '.join(_QC_FIELDS)}, "
                        f"got {type(data).__name__}")
        return None
    bad = False
    for k in data:
        if k not in _QC_FIELDS:
            problems.append(f"{where}: unknown field {k!r} (valid: {', '.join(_QC_FIELDS)})")
            bad = True
    try:
        qc = QuantizationConfiguration(**{k: v for k, v in data.items() if k in _QC_FIELDS})
    except ConfigError as e:
        problems.extend(f"{where}: {d.message}" for d in e.diagnostics)
        return None
    return None if bad else qc


# -- LayerConfiguration ------------------------------------------------------------------------

@dataclass(frozen=True)
class LayerConfiguration:
    """The configs of one layer's weights and activations; None keeps that part float."""

    weight_config: QuantizationConfiguration | None = None
    activation_config: QuantizationConfiguration | None = None

    def __post_init__(self):
        problems = []
        for name in ("weight_config", "activation_config"):
            v = getattr(self, name)
            if v is None:
                continue
            if not isinstance(v, QuantizationConfiguration):
                problems.append(f"{name} must be a QuantizationConfiguration or None, "
                                f"got {type(v).__name__}")
            elif v.dtype == "int" and v.bits not in ACTIVATION_BITS:
                problems.append(f"{name}: bits must be one of 4, 8, 16, got {v.bits}")
        if problems:
            raise _error("invalid LayerConfiguration", problems)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: each part as a dict or None."""
        return {"weight_config": _qc_dict(self.weight_config),
                "activation_config": _qc_dict(self.activation_config)}


def _qc_dict(qc: QuantizationConfiguration | None):
    return None if qc is None else qc.to_dict()


# -- Resolution --------------------------------------------------------------------------------

class TensorResolution(NamedTuple):
    """One operand or result of a node: its name (operand role, `values:i` for a variadic op,
    `return` / `return:i` for results), kind, config (None = float) and where the config came
    from (`scheme int8`, `layer 'conv1'`, `op matmul in 'enc/.*'`, `tensor 'x'`)."""

    name: str
    kind: str
    config: QuantizationConfiguration | None
    source: str


@dataclass
class NodeResolution:
    """What one node is quantized to. `float_reason` is set (and every config is None) when
    the node stays float."""

    node: Node
    scope: str
    op: str
    operands: list[TensorResolution]
    results: list[TensorResolution]
    float_reason: str | None = None

    @property
    def is_float(self) -> bool:
        """True when the node stays float (`float_reason` says why)."""
        return self.float_reason is not None

    def operand(self, name: str) -> TensorResolution:
        """The operand named `name` (a role such as `filter`, or `values:1`)."""
        for t in self.operands:
            if t.name == name:
                return t
        raise KeyError(f"{self.op} has no operand {name!r} "
                       f"(operands: {', '.join(t.name for t in self.operands)})")


class Resolution:
    """The resolved configuration of every non-constant node of a module's main graph."""

    def __init__(self, scheme: "Scheme", nodes: list[NodeResolution]):
        self.scheme = scheme
        self.nodes = nodes
        self._by_id = {id(n.node): n for n in nodes}

    def for_node(self, node: Node) -> NodeResolution | None:
        """The resolution of `node`; None for nodes that have none (constants)."""
        return self._by_id.get(id(node))

    def float_nodes(self) -> list[NodeResolution]:
        """The nodes that stay float, in graph order."""
        return [n for n in self.nodes if n.is_float]

    def table(self) -> str:
        """A fixed-width text table: one row per operand and result of each quantized node,
        one row per float node (with its reason)."""
        header = ("scope", "op", "operand", "kind", "bits", "sym", "granularity",
                  "calibration", "source")
        rows = [header]
        for nr in self.nodes:
            scope = nr.scope or "-"
            if nr.is_float:
                rows.append((scope, nr.op, "-", "float", "-", "-", "-", "-",
                             f"float: {nr.float_reason}"))
                continue
            for t in nr.operands + nr.results:
                rows.append((scope, nr.op, t.name, t.kind) + _config_cells(t) + (t.source,))
        widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


def _config_cells(t: TensorResolution) -> tuple[str, str, str, str]:
    qc = t.config
    if qc is None:
        return ("float", "-", "-", "-")
    if qc.dtype == "float16":
        return ("f16", "-", "-", "-")
    sym = "sym" if qc.symmetric else "asym"
    if qc.resolved_narrow_range(t.kind if t.kind in KINDS else "activation"):
        sym += ",narrow"
    return (str(qc.bits), sym, qc._granularity_str(), qc._calibration_str())


# -- QuantizationConfigurationMap --------------------------------------------------------------

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
    parts = scope.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]


class QuantizationConfigurationMap:
    """A scheme plus per-layer, per-op-type and per-tensor overrides (see the module docstring
    for keys and precedence). `resolve(module)` applies it to a module."""

    def __init__(self, scheme: "Scheme | str" = "int8"):
        from . import schemes

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
        return _Resolver(self, module).run()

    # -- serialization -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """{"version": 1, "scheme": name (or the full scheme when it is not the registered
        one), "calls": [...]}; `from_dict` rebuilds an equal map."""
        from . import schemes

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
        except (json.JSONDecodeError, TypeError) as e:
            raise _error("invalid quantization config JSON", [str(e)]) from None
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: Any) -> "QuantizationConfigurationMap":
        """The map `to_dict` produced; ConfigError listing every problem otherwise."""
        from . import schemes

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
    if method not in fields:
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


# -- the resolver ------------------------------------------------------------------------------

class _Resolver:
    """Matches every entry of a map against one module, then resolves each node."""

    def __init__(self, qmap: QuantizationConfigurationMap, module: Module):
        self.qmap = qmap
        self.scheme = qmap.scheme
        self.nodes = [n for n in module.main if n.op != "constant"]
        self.scopes = sorted({n.scope for n in self.nodes})
        # Keys may name a scope prefix (`encoder/0`), so suggestions come from all prefixes.
        self.prefixes = sorted({p for s in self.scopes for p in _scope_prefixes(s)})

    # Rank of a match at one level: exact beats regex, a longer exact key beats a shorter
    # one, then the later call wins.
    def run(self) -> Resolution:
        problems: list[str] = []
        layer_matches: dict[int, list[tuple[tuple, _Entry]]] = {}
        op_matches: dict[int, list[tuple[tuple, _Entry]]] = {}
        tensor_entries: list[tuple[int, _Entry, Any]] = []
        for idx, e in enumerate(self.qmap._entries):
            if e.method == "set_tensor_config":
                tensor_entries.append((idx, e, None))
                continue
            matcher, rank = self._scope_matcher(e, idx, problems)
            if matcher is None:
                continue
            hit = False
            for n in self.nodes:
                if (e.op_type is None or n.op == e.op_type) and matcher(n.scope):
                    hit = True
                    (layer_matches if e.op_type is None else op_matches) \
                        .setdefault(id(n), []).append((rank, e))
            if not hit:
                if e.op_type is not None and any(matcher(s) for s in self.scopes):
                    problems.append(f"{e.describe()} matches no {e.op_type} node (the scopes it "
                                    f"matches have none)")
                else:
                    problems.append(f"{e.describe()} matches no node scope; "
                                    f"{self._nearest(e.key, self.prefixes, 'scopes')}")
        tensor_rules = self._tensor_rules(tensor_entries, problems)
        if problems:
            raise _error("quantization config keys match nothing in the module", problems)
        out = []
        for n in self.nodes:
            layer = max(layer_matches.get(id(n), []), key=lambda m: m[0], default=None)
            op = max(op_matches.get(id(n), []), key=lambda m: m[0], default=None)
            out.append(self._resolve_node(n, layer and layer[1], op and op[1], tensor_rules))
        return Resolution(self.scheme, out)

    def _scope_matcher(self, e: _Entry, idx: int, problems: list[str]):
        for cand in e.candidates():
            if any(s == cand or s.startswith(cand + "/") for s in self.scopes):
                def exact(scope, c=cand):
                    return scope == c or scope.startswith(c + "/")
                return exact, (1, len(cand), idx)
        if e.layer:
            problems.append(f"{e.describe()} (a layer) matches no node scope; "
                            f"{self._nearest(e.key, self.prefixes, 'scopes')}")
            return None, None
        try:
            rx = re.compile(e.key)
        except re.error as err:
            problems.append(f"{e.describe()} is no node scope and not a valid regex ({err}); "
                            f"{self._nearest(e.key, self.prefixes, 'scopes')}")
            return None, None
        cache: dict[str, bool] = {}

        def regex(scope):
            if scope not in cache:
                cache[scope] = any(rx.fullmatch(p) for p in _scope_prefixes(scope))
            return cache[scope]
        return regex, (0, 0, idx)

    @staticmethod
    def _nearest(key: str, names: list[str], what: str) -> str:
        close = difflib.get_close_matches(key, names, n=3, cutoff=0.5)
        if close:
            return f"nearest {what}: {', '.join(repr(c) for c in close)}"
        shown = ", ".join(repr(s) for s in names[:8]) + (", ..." if len(names) > 8 else "")
        return f"no close match among the {what}: {shown or 'none'}"

    def _tensor_names(self, n: Node) -> tuple[list[list[str]], list[list[str]]]:
        """Candidate tensor-key names of each operand and result of `n`."""
        roles = _operand_names(n.op)
        variadic = bool(get_op(n.op).inputs) and get_op(n.op).inputs[-1].endswith("*")
        ops = []
        for i, v in enumerate(n.inputs):
            role = roles[min(i, len(roles) - 1)]
            names = [f"{n.scope}/{role}"]
            if variadic and i >= len(roles) - 1:
                names.append(f"{n.scope}/{role}:{i - len(roles) + 1}")
            if v.name:
                names.append(v.name)
            ops.append(names)
        res = []
        for i, v in enumerate(n.outputs):
            names = [f"{n.scope}/return"]
            if len(n.outputs) > 1:
                names.append(f"{n.scope}/return:{i}")
            if v.name:
                names.append(v.name)
            res.append(names)
        return ops, res

    def _tensor_rules(self, entries, problems):
        """(matcher(name) -> bool, rank, entry) per tensor entry that matches something."""
        all_names: set[str] = set()
        for n in self.nodes:
            ops, res = self._tensor_names(n)
            for names in ops + res:
                all_names.update(names)
        sorted_names = sorted(all_names)
        rules = []
        for idx, e, _ in entries:
            if e.key in all_names:
                rules.append((lambda name, k=e.key: name == k, (1, 0, idx), e))
                continue
            try:
                rx = re.compile(e.key)
            except re.error as err:
                problems.append(f"{e.describe()} is no tensor name and not a valid regex "
                                f"({err}); {self._nearest(e.key, sorted_names, 'tensor names')}")
                continue
            if not any(rx.fullmatch(s) for s in sorted_names):
                problems.append(f"{e.describe()} matches no tensor; "
                                f"{self._nearest(e.key, sorted_names, 'tensor names')}")
                continue
            rules.append((lambda name, r=rx: r.fullmatch(name) is not None, (0, 0, idx), e))
        return rules

    def _resolve_node(self, n: Node, layer: _Entry | None, op: _Entry | None,
                      tensor_rules) -> NodeResolution:
        scheme = self.scheme
        roles = _operand_names(n.op)
        operand_roles = [roles[min(i, len(roles) - 1)] if roles else f"operand{i}"
                         for i in range(len(n.inputs))]
        variadic = bool(get_op(n.op).inputs) and get_op(n.op).inputs[-1].endswith("*")
        display = [f"{r}:{i - len(roles) + 1}" if variadic and i >= len(roles) - 1 else r
                   for i, r in enumerate(operand_roles)]
        result_names = ["return"] if len(n.outputs) == 1 else \
            [f"return:{i}" for i in range(len(n.outputs))]

        reason = None
        if op is not None:
            if op.config is None:
                reason = f"kept float by {op.describe()}"
        elif n.op not in scheme.ops:
            reason = f"op '{n.op}' is not in scheme {scheme.name}"
        elif layer is not None and layer.config is None:
            reason = f"kept float by {layer.describe()}"
        if reason is not None:
            kinds = [self._kind(n, i, operand_roles[i]) for i in range(len(n.inputs))]
            return NodeResolution(
                n, n.scope, n.op,
                [TensorResolution(d, k, None, "float node") for d, k in zip(display, kinds)],
                [TensorResolution(r, "activation" if v.type.dtype.is_float else "other", None,
                                  "float node") for r, v in zip(result_names, n.outputs)],
                reason)

        # Layer / scheme defaults by kind.
        scheme_src = f"scheme {scheme.name}"
        if layer is not None and layer.config is not None:
            lsrc = f"layer '{layer.key}'"
            w_cfg, w_src = layer.config.weight_config, lsrc
            a_cfg, a_src = layer.config.activation_config, lsrc
        elif layer is not None:
            # Only reachable with an op-type entry opting the node in: the rest stays float.
            w_cfg = a_cfg = None
            w_src = a_src = f"layer '{layer.key}' (float)"
        else:
            w_cfg, w_src = scheme.weight, scheme_src
            a_cfg, a_src = scheme.activation, scheme_src
        if scheme.mode != "static":
            a_cfg, a_src = None, f"{scheme_src} (mode {scheme.mode}: activations float)"

        op_cfg: dict = op.config if op is not None else {}
        op_src = f"op {n.op} in '{op.key}'" if op is not None else ""
        tensor_names, result_tnames = self._tensor_names(n)

        def override(cfg, src, role, names):
            if role in op_cfg:
                cfg, src = op_cfg[role], op_src
            best = None
            for match, rank, e in tensor_rules:
                if any(match(name) for name in names) and (best is None or rank > best[0]):
                    best = (rank, e)
            if best is not None:
                cfg, src = best[1].config, f"tensor '{best[1].key}'"
            return cfg, src

        operands: list[TensorResolution | None] = [None] * len(n.inputs)
        bias_slots = []
        weight = None
        for i, v in enumerate(n.inputs):
            role, kind = operand_roles[i], self._kind(n, i, operand_roles[i])
            if kind == "bias":
                bias_slots.append(i)
                continue
            if kind == "weight":
                cfg, src = w_cfg, w_src
            elif kind == "activation":
                cfg, src = a_cfg, a_src
            else:
                cfg, src = None, "not float"
            if kind != "other":
                cfg, src = override(cfg, src, role, tensor_names[i])
            operands[i] = TensorResolution(display[i], kind, cfg, src)
            if kind == "weight" and weight is None:
                weight = operands[i]
        for i in bias_slots:
            cfg, src = None, f"{scheme_src} (bias of a float weight)"
            if scheme.mode != "static":
                src = f"{scheme_src} (mode {scheme.mode}: bias float)"
            elif weight is not None and weight.config is not None \
                    and weight.config.dtype == "int":
                gran = weight.config.granularity
                cfg = QuantizationConfiguration(
                    bits=scheme.bias_bits, symmetric=True,
                    granularity="per_channel" if gran == "blockwise" else gran)
                src = f"bias of weight ({weight.source})"
            cfg, src = override(cfg, src, operand_roles[i], tensor_names[i])
            operands[i] = TensorResolution(display[i], "bias", cfg, src)

        results = []
        for i, v in enumerate(n.outputs):
            if v.type.dtype.is_float:
                cfg, src = override(a_cfg, a_src, "return", result_tnames[i])
                results.append(TensorResolution(result_names[i], "activation", cfg, src))
            else:
                results.append(TensorResolution(result_names[i], "other", None, "not float"))

        nr = NodeResolution(n, n.scope, n.op, operands, results)
        if all(t.config is None for t in nr.operands + nr.results):
            if scheme.mode != "static" and not any(t.kind == "weight" for t in nr.operands):
                nr.float_reason = (f"no constant float weight to quantize (scheme "
                                   f"{scheme.name} is {scheme.mode})")
            else:
                nr.float_reason = "every operand and result is kept float by the overrides"
        return nr

    def _kind(self, n: Node, i: int, role: str) -> str:
        v = n.inputs[i]
        if not v.type.dtype.is_float:
            return "other"
        const = v.const is not None
        if const and (self.scheme.mode == "fp16" or WEIGHT_ROLES.get(n.op) == role):
            return "weight"
        if role == "bias" and n.op in BIAS_OPS:
            return "bias"
        return "activation"
