"""Fake-quant insertion: a resolved configuration plus calibrated ranges -> QDQ form.

    plan = QuantizationPlan(module, resolution, scheme)
    ranges = calibrate(module, data, plan.requests())      # activation values -> (lo, hi)
    report = plan.apply(ranges)                            # rewrites module.main in place

Weights become integer constants (per-channel along the output-channel axis, see
docs/design/quantization.md; blockwise ones as rows of blocks, see `_quantize_blockwise`) read
through `dequantize`; each quantized activation value gets one `quantize` -> `dequantize` pair,
with one set of params per tensor as TFLite requires. Ops whose TFLite integer kernels need
equal input and output params (pooling, reshape, concat, ...) have their values merged into one
group with the union of their ranges; softmax, sigmoid and tanh outputs get the fixed params of
the int8 spec. Biases stay float here; `lower-quantized` turns them into int32 with scale =
input scale x weight scale.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ...ir.errors import ConversionError, Diagnostic
from ...ir.graph import Graph, Module, Node, Value
from ...ir.quantized import quantize_array
from ...ir.types import DType, QuantParams
from .params import FIXED_OUTPUT, activation_params, storage_dtype, weight_params

# Ops whose TFLite int8 kernels require the same params on inputs and output.
SAME_PARAMS_OPS = frozenset({
    "max_pool2d", "avg_pool2d", "reshape", "squeeze", "expand_dims", "transpose", "concat",
    "slice", "strided_slice", "pad", "resize", "split", "identity", "gather",
    "maximum", "minimum", "reduce_max", "reduce_min", "broadcast_to", "tile",
    "dynamic_reshape", "dynamic_broadcast_to", "dynamic_tile", "dynamic_slice",
    "dynamic_strided_slice",
})


def weight_axis(node: Node, operand: int) -> int | None:
    """The output-channel axis of a weight operand in the IR layout (the table in
    docs/design/quantization.md), or None when the op has no per-channel form for it."""
    v = node.inputs[operand]
    rank = v.type.rank
    if node.op == "conv2d" and operand == 1:
        return 3
    if node.op == "depthwise_conv2d" and operand == 1:
        return 2 if v.type.shape[3] == 1 else None
    if node.op == "conv2d_transpose" and operand == 1:
        return 2
    if node.op == "matmul" and operand == 1 and rank >= 2:
        return rank - 2 if node.attrs["transpose_b"] else rank - 1
    if node.op == "gather" and operand == 0 and rank >= 1:
        return 0
    return None


def params_attrs(qp: QuantParams, dtype: DType | None = None, *, narrow: bool = False) -> dict:
    """quantize/dequantize attributes for params `qp`."""
    attrs = {"scale": list(qp.scale), "zero_point": list(qp.zero_point), "axis": qp.axis}
    if dtype is not None:
        attrs["dtype"] = dtype
        attrs["narrow_range"] = narrow
    return attrs


def attrs_params(attrs: dict, dtype: DType) -> QuantParams:
    """QuantParams of a quantize/dequantize node's attributes, for codes of `dtype`."""
    return QuantParams(attrs["scale"], attrs["zero_point"], attrs["axis"], dtype.bits,
                       dtype != DType.u8, bool(attrs.get("narrow_range", False)))


def _after(graph: Graph, v: Value) -> Node | None:
    """The node before which code reading `v` can be inserted right after its definition."""
    if v.producer is None:
        return graph.first
    return v.producer.next


def _add(graph: Graph, op, inputs, attrs, anchor: Node | None, scope: str, loc: str) -> Node:
    return graph.add(op, inputs, attrs, scope=scope, loc=loc, before=anchor)


@dataclass
class _Activation:
    value: Value
    config: object                 # QuantizationConfiguration of the primary requester
    produced: bool                 # the producer's result is quantized: every use reads QDQ
    consumers: list = field(default_factory=list)   # (node, operand index) reading QDQ
    symmetric: bool = False        # a consumer's kernel needs zero point 0


class _Groups:
    """Union-find over activation values that must share params."""

    def __init__(self):
        self.parent: dict[int, int] = {}

    def find(self, k: int) -> int:
        self.parent.setdefault(k, k)
        while self.parent[k] != k:
            self.parent[k] = self.parent[self.parent[k]]
            k = self.parent[k]
        return k

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[rb] = ra


@dataclass
class InsertReport:
    """What `QuantizationPlan.apply` did: params per quantized value and per weight."""

    activations: dict = field(default_factory=dict)   # value name -> QuantParams
    weights: dict = field(default_factory=dict)       # "<scope>/<operand>" -> QuantParams


class QuantizationPlan:
    """The activation values to calibrate and the rewrite to QDQ form, for one resolution."""

    def __init__(self, module: Module, resolution, scheme):
        self.module = module
        self.graph = module.main
        self.resolution = resolution
        self.scheme = scheme
        self.static = scheme.mode == "static"
        self.acts: dict[int, _Activation] = {}
        self.weights: list[tuple[Node, int, object]] = []
        self.fixed: dict[int, tuple[float, int]] = {}
        self._collect()

    # -- what to quantize ------------------------------------------------------------------
    def _want(self, v: Value, cfg, *, produced: bool, consumer=None) -> None:
        act = self.acts.get(id(v))
        if act is None:
            act = self.acts[id(v)] = _Activation(v, cfg, produced)
        act.produced = act.produced or produced
        if consumer is not None:
            act.consumers.append(consumer)

    def _collect(self) -> None:
        for node in self.graph:
            if node.op == "constant":
                continue
            nr = self.resolution.for_node(node)
            if nr is None or nr.float_reason:
                continue
            for i, t in enumerate(nr.operands):
                kind, cfg = t.kind, t.config
                if cfg is None:
                    continue
                v = node.inputs[i]
                if self.static and node.op == "gather" and i == 0:
                    # TFLite's int8 GATHER copies codes: the table is quantized per tensor
                    # with its result's params (an activation-like constant), not per row.
                    out_cfg = nr.results[0].config
                    if out_cfg is not None:
                        self._want(v, out_cfg, produced=False, consumer=(node, i))
                    continue
                if kind == "weight":
                    self.weights.append((node, i, cfg))
                elif kind == "activation" and self.static and v.type.dtype.is_float:
                    self._want(v, cfg, produced=False, consumer=(node, i))
                    if node.op == "matmul" and i == 1:
                        # BATCH_MATMUL's int8 kernel treats its right operand like a weight:
                        # zero point 0.
                        self.acts[id(v)].symmetric = True
            if not self.static:
                continue
            for j, t in enumerate(nr.results):
                cfg, out = t.config, node.outputs[j]
                if cfg is None or not out.type.dtype.is_float:
                    continue
                self._want(out, cfg, produced=True)
                fixed = FIXED_OUTPUT.get(node.op, {}).get(cfg.bits)
                if fixed is not None:
                    self.fixed[id(out)] = fixed

    def requests(self) -> dict[Value, object]:
        """Activation values (non-constant) whose ranges calibration must observe, with the
        configuration (method, bits, symmetry) that asks for each."""
        return {a.value: a.config for a in self.acts.values()
                if a.value.const is None and id(a.value) not in self.fixed}

    # -- the rewrite -------------------------------------------------------------------------
    def _group_params(self, ranges) -> dict[int, QuantParams]:
        groups = _Groups()
        for node in self.graph:
            if node.op not in SAME_PARAMS_OPS:
                continue
            members = [v for v in (*node.inputs[:1 if node.op != "concat" else None],
                                   *node.outputs) if id(v) in self.acts]
            if len(members) == len(node.inputs[:1 if node.op != "concat" else None]) + \
                    len(node.outputs):
                for v in members[1:]:
                    groups.union(id(members[0]), id(v))
        by_root: dict[int, list[_Activation]] = {}
        for key, act in self.acts.items():
            by_root.setdefault(groups.find(key), []).append(act)
        out: dict[int, QuantParams] = {}
        for members in by_root.values():
            cfg = members[0].config
            narrow = bool(cfg.narrow_range) if cfg.narrow_range is not None else False
            fixed = next((self.fixed[id(a.value)] for a in members
                          if id(a.value) in self.fixed), None)
            symmetric = cfg.symmetric or any(a.symmetric for a in members)
            if fixed is not None:
                qp = QuantParams((fixed[0],), (fixed[1],), None, cfg.bits, True, False)
            else:
                lo, hi = np.inf, -np.inf
                for a in members:
                    r = self._range(a, ranges)
                    if r is not None:
                        lo, hi = min(lo, r[0]), max(hi, r[1])
                if lo > hi:
                    lo = hi = 0.0
                qp = activation_params(lo, hi, bits=cfg.bits, symmetric=symmetric,
                                       narrow_range=narrow)
            for a in members:
                out[id(a.value)] = qp
        return out

    @staticmethod
    def _range(act: _Activation, ranges):
        v = act.value
        if v.const is not None:
            arr = np.asarray(v.const, np.float64)
            return (float(arr.min()), float(arr.max())) if arr.size else None
        r = ranges.get(v)
        return None if r is None else (float(r[0]), float(r[1]))

    def missing(self, ranges) -> list[Value]:
        """Requested values that `ranges` has no entry for."""
        return [v for v in self.requests() if v not in ranges]

    def apply(self, ranges) -> InsertReport:
        """Rewrites the graph into QDQ form with `ranges` (value -> (lo, hi))."""
        report = InsertReport()
        # Checked before anything is rewritten, so a refused plan leaves the graph untouched.
        self._check_blockwise()
        params = self._group_params(ranges) if self.static else {}
        for act in list(self.acts.values()):
            qp = params[id(act.value)]
            self._insert_qdq(act, qp)
            report.activations[act.value.name or _describe(act.value)] = qp
        for node, i, cfg in self.weights:
            qp = self._quantize_weight(node, i, cfg)
            if qp is not None:
                report.weights[f"{node.scope}/{_operand_name(node, i)}"] = qp
        return report

    def _insert_qdq(self, act: _Activation, qp: QuantParams) -> None:
        g, v = self.graph, act.value
        dtype = storage_dtype(qp.bits)
        anchor = _after(g, v)
        owner = v.producer or (act.consumers[0][0] if act.consumers else None)
        scope = owner.scope if owner is not None else ""
        loc = owner.loc if owner is not None else ""
        if act.produced:
            uses = list(v.uses)
        else:
            wanted = {(id(n), i) for n, i in act.consumers}
            uses = [(u, i) for u, i in v.uses if isinstance(u, Node) and (id(u), i) in wanted]
        if not uses:
            return
        q = _add(g, "quantize", [v], params_attrs(qp, dtype, narrow=qp.narrow_range), anchor,
                 scope, loc)
        q.output.quant = qp
        dq = _add(g, "dequantize", [q.output], params_attrs(qp) | {"dtype": v.type.dtype},
                  anchor, scope, loc)
        for user, i in uses:
            if isinstance(user, Node):
                user.set_input(i, dq.output)
            else:  # a graph output
                del v.uses[(user, i)]
                user.outputs[i] = dq.output
                dq.output.uses[(user, i)] = None

    def _check_blockwise(self) -> None:
        """ConversionError listing every blockwise weight that cannot be quantized blockwise
        (see `_blockwise_problem`): never a silent fallback to per-channel."""
        diags = []
        for node, i, cfg in self.weights:
            if getattr(cfg, "granularity", None) != "blockwise" or cfg.dtype != "int":
                continue
            problem = _blockwise_problem(node, i, cfg, self.scheme)
            if problem is not None:
                diags.append(Diagnostic(problem, node=node.describe(), scope=node.scope,
                                        loc=node.loc))
        if diags:
            raise ConversionError("blockwise weight quantization is not possible here", diags)

    def _quantize_weight(self, node: Node, i: int, cfg) -> QuantParams | None:
        g, w = self.graph, node.inputs[i]
        arr = w.const
        if arr is None or not w.type.dtype.is_float:
            return None
        if cfg.dtype == "float16":
            half = g.constant(np.asarray(arr, np.float16), before=node, scope=node.scope,
                              loc=node.loc)
            cast = g.add("cast", [half], {"to": w.type.dtype}, scope=node.scope,
                         loc=node.loc, before=node)
            node.set_input(i, cast.output)
            return None
        if cfg.granularity == "blockwise":
            return self._quantize_blockwise(node, i, cfg)
        axis = weight_axis(node, i) if cfg.granularity == "per_channel" else None
        narrow = cfg.narrow_range if cfg.narrow_range is not None else cfg.symmetric
        qp = weight_params(arr, bits=cfg.bits, axis=axis, narrow_range=bool(narrow))
        dtype = storage_dtype(cfg.bits)
        codes = g.constant(quantize_array(np.asarray(arr, np.float32), qp, dtype),
                           before=node, scope=node.scope, loc=node.loc)
        codes.quant = qp
        dq = g.add("dequantize", [codes], params_attrs(qp) | {"dtype": w.type.dtype},
                   scope=node.scope, loc=node.loc, before=node)
        node.set_input(i, dq.output)
        return qp

    def _quantize_blockwise(self, node: Node, i: int, cfg) -> QuantParams:
        """Blockwise weight of a matmul (checked by `_check_blockwise`): one symmetric scale
        per (output channel, block of `block_size` consecutive input elements).

        The IR's QuantParams has a single per-axis dim, so the blocks become rows: the weight
        in FULLY_CONNECTED's [N, K] order is stored as codes [N*K/B, B] with per-axis params
        on axis 0 (row r = channel r // (K/B), block r % (K/B)), read back through
        `dequantize` -> `reshape` [N, K], and the matmul takes it with transpose_b=True
        (a [K, N] weight's transpose is folded into the stored order here, so no TRANSPOSE
        op is left for any backend). TFLite then runs int4 blocks in FULLY_CONNECTED's
        blockwise kernel, whose scales are float16: 4-bit scales are rounded up to float16
        values here, so that every backend computes with the same weights."""
        g, w = self.graph, node.inputs[i]
        block = cfg.block_size
        arr = np.asarray(w.const, np.float32)
        nk = arr if node.attrs["transpose_b"] else arr.T
        n, k = nk.shape
        rows = np.ascontiguousarray(nk).reshape(n * k // block, block)
        narrow = cfg.narrow_range if cfg.narrow_range is not None else cfg.symmetric
        qp = weight_params(rows, bits=cfg.bits, axis=0, narrow_range=bool(narrow))
        if cfg.bits == 4:
            qp = _float16_scales(qp)
        dtype = storage_dtype(cfg.bits)
        codes = g.constant(quantize_array(rows, qp, dtype), before=node, scope=node.scope,
                           loc=node.loc)
        codes.quant = qp
        dq = g.add("dequantize", [codes], params_attrs(qp) | {"dtype": w.type.dtype},
                   scope=node.scope, loc=node.loc, before=node)
        full = g.add("reshape", [dq.output], {"shape": [n, k]}, scope=node.scope,
                     loc=node.loc, before=node)
        node.set_input(i, full.output)
        node.attrs["transpose_b"] = True
        return qp


def _float16_scales(qp: QuantParams) -> QuantParams:
    """`qp` with each scale rounded up to the nearest positive float16 value (rounding up
    never clips a code that the float32 scale kept in range)."""
    scale = np.asarray(qp.scale, np.float32)
    half = scale.astype(np.float16)
    low = half.astype(np.float32) < scale
    half[low] = np.nextafter(half[low], np.float16(np.inf))
    half = np.maximum(half, np.float16(2.0 ** -24))     # the smallest positive float16
    return QuantParams(tuple(float(v) for v in half.astype(np.float32)), qp.zero_point,
                       qp.axis, qp.bits, qp.signed, qp.narrow_range)


# Ops whose weight can be quantized blockwise (the contraction dim must be one IR axis).
BLOCKWISE_OPS = ("matmul",)


def _blockwise_problem(node: Node, i: int, cfg, scheme) -> str | None:
    """Why the weight operand `i` of `node` cannot be quantized blockwise with `cfg`, or
    None. Blockwise is a weight-only layout (integer kernels take per-channel weights only)
    for the constant rank-2 right operand of a matmul (FULLY_CONNECTED), whose contraction
    dim K must be a multiple of block_size."""
    b = cfg.block_size
    if node.op not in BLOCKWISE_OPS or i != 1:
        return (f"blockwise granularity (block_size {b}) is supported only for the weight of "
                f"{', '.join(BLOCKWISE_OPS)} (FULLY_CONNECTED), not operand {i} of "
                f"{node.op}; use per_channel for it")
    if scheme.mode != "weight_only":
        return (f"blockwise granularity needs a weight_only scheme (e.g. int4-weight): "
                f"scheme {scheme.name} is {scheme.mode}, whose integer kernels take "
                f"per-channel weights only")
    w = node.inputs[i]
    if w.type.rank != 2 or node.attrs["transpose_a"]:
        return (f"blockwise granularity needs a rank-2 matmul weight and transpose_a=False, "
                f"got a {w.type} weight, transpose_a={node.attrs['transpose_a']}")
    k = w.type.shape[1] if node.attrs["transpose_b"] else w.type.shape[0]
    if not isinstance(k, int) or k % b:
        return (f"blockwise granularity: the contraction dim K={k} of the weight {w.type} is "
                f"not a multiple of block_size B={b}")
    return None


def _operand_name(node: Node, i: int) -> str:
    from ...ir.ops import get_op

    names = get_op(node.op).inputs
    return names[min(i, len(names) - 1)].rstrip("?*") if names else str(i)


def _describe(v: Value) -> str:
    p = v.producer
    if p is None:
        return "input"
    return f"{p.scope}/{p.op}" if p.scope else p.op
