"""Applies a scheme and a map's recorded overrides to one module: matches every key against
the module's scopes and tensor names (exact scope, regex, Keras layer, tensor key; every key
that matches nothing is reported at once, with the nearest names) and resolves each node by
the precedence and kind defaults the map documents (config.py), giving a `Resolution`.
"""

from __future__ import annotations

import difflib
import re
from typing import Any

from ...ir.graph import Module, Node
from ...ir.ops import get_op
from .configuration import BIAS_OPS, WEIGHT_ROLES, QuantizationConfiguration, _error
from .overrides import _Entry, _operand_names, _scope_prefixes
from .resolution import NodeResolution, Resolution, TensorResolution
from .schemes import Scheme


# Source ops the frontends unroll into long chains of dependent arithmetic (the matrix
# factorizations of frontends/linalg.py and frontends/eigen.py): rounding every step to int8
# compounds into meaningless results (a 3x3 eigh's Jacobi rotations reach values of 1e33 in
# calibration), so their nodes stay float unless an op entry opts them in, as TFLiteConverter
# leaves the Flex ops it runs them with in float. Matched on the node's loc, which both
# frontends write as `tf:<TF op>:...` / `jax:<primitive>:...`.
FLOAT_ONLY_SOURCES = frozenset({
    "Cholesky", "MatrixTriangularSolve", "MatrixInverse", "MatrixSolve", "MatrixDeterminant",
    "LogMatrixDeterminant", "Lu", "Qr", "SelfAdjointEigV2", "Svd",
    "cholesky", "triangular_solve", "lu", "qr", "geqrf", "householder_product", "eigh", "svd",
    "custom_linear_solve",
})


def float_only_source(loc: str | None) -> str | None:
    """The source op of a node lifted from one of FLOAT_ONLY_SOURCES (by its loc), else
    None."""
    if not loc:
        return None
    kind, _, rest = loc.partition(":")
    if kind not in ("tf", "jax"):
        return None
    for name in FLOAT_ONLY_SOURCES:
        if rest == name or rest.startswith(name + ":"):
            return name
    return None


def resolve(scheme: Scheme, entries: list[_Entry], module: Module) -> Resolution:
    """Per node of `module.main` (constants skipped), the config of every operand and result
    under `scheme` and the recorded `entries`. ConfigError listing every entry that matches
    nothing (with the nearest scopes or tensor names)."""
    return _Resolver(scheme, entries, module).run()


class _Resolver:
    """Matches every recorded override against one module, then resolves each node."""

    def __init__(self, scheme: Scheme, entries: list[_Entry], module: Module):
        self.entries = entries
        self.scheme = scheme
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
        for idx, e in enumerate(self.entries):
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
        source = float_only_source(n.loc)
        if op is not None:
            if op.config is None:
                reason = f"kept float by {op.describe()}"
        elif source is not None:
            reason = (f"lifted from {source}, a matrix factorization unrolled into long "
                      f"chains of arithmetic that int8 rounding would ruin")
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
