"""`shard`: forward layout propagation over the global view (GSPMD-style, one pass in
topological order), recording every collective the program needs.

Seeds: graph inputs (`inputs=` / `layout_map.inputs`) and constants the layout map names.
Every other value gets the layout its producer's rule gives; constants the map does not name
are replicated. Propagation is forward only (no backward pass): an operand is never
re-laid-out to suit a later consumer except by a recorded collective, which keeps the plan
predictable and the user's layouts authoritative.

Rules (per op):
- elementwise (trait) and `where`: operands aligned from the right; the result takes, dim by
  dim, the axis of the highest-priority operand that shards it (priority: user-given layout,
  then more sharded dims, then operand order). An operand sharded differently from the
  result is all_gathered on that dim; a replicated operand where the result is sharded is
  sliced locally (free, no collective).
- matmul a[..., m, k] @ b[..., k, n]: batch dims and m from a, n from b; k split over the
  same axis on both sides -> the local result is partial: one all_reduce right after the
  matmul (before its fused bias/activation); k split on one side only (or over different
  axes) -> that operand is all_gathered first.
- reshape / expand_dims / squeeze: dims are grouped into split/merge groups; within a group
  only the leading dim's axis survives (any other sharded dim of the group is gathered), and
  it moves to the group's leading output dim if that dim divides by the axis size
  (contiguous blocks are preserved), else the input is gathered.
- transpose permutes; reduce_* over a sharded dim -> all_reduce (sum for sum/mean, else
  max/min/prod) right after; softmax/log_softmax/layer_norm/argmax over a sharded dim,
  concat/split along one, pad/slice/tile of one -> all_gather first.
- gather(table, ids) (axis 0 style): table sharded on the gathered dim -> masked lookup,
  partial result, all_reduce; other table dims and the ids' dims pass through.
- conv2d: batch from the input, output channels from the filter; everything else gathered.
  Pools/resize/batch_norm keep batch and channels.
- any other op: sharded operands are all_gathered and results replicated (recorded).

A gather of the same value into the same layout is recorded once (later consumers reuse it).
"""

from __future__ import annotations

from ...ir.errors import Diagnostic
from ...ir.graph import Graph, Module, Node, Value
from ...ir.ops import get_op
from ...ir.types import Layout
from .layout_map import (LayoutMap, as_layout, conflict_message, layout_problems, node_order,
                         tensor_name)
from .mesh import Mesh, ShardingError
from .plan import Collective, ShardingPlan, collective_bytes, full_bytes, shard_factor

_REDUCE_OPS = {"reduce_sum": "sum", "reduce_mean": "sum", "reduce_max": "max",
               "reduce_min": "min", "reduce_prod": "prod"}
_LAST_AXIS_OPS = {"softmax", "log_softmax", "argmax", "argmin"}
_SPATIAL_OPS = {"max_pool2d", "avg_pool2d", "resize", "depthwise_conv2d", "conv2d_transpose"}


def _none(rank: int) -> list:
    return [None] * rank


class _Propagator:
    def __init__(self, graph: Graph, mesh: Mesh, batch: int, dims: dict[str, int],
                 user_given: set[int]):
        self.graph = graph
        self.mesh = mesh
        self.batch = batch
        self.dims = dims
        self.user_given = user_given
        self.collectives: list[Collective] = []
        self.operand_layouts: dict[int, tuple[Layout, ...]] = {}
        self._gathered: set[tuple] = set()

    # -- helpers -------------------------------------------------------------------------
    def axes(self, v: Value) -> list:
        return list(v.layout.axes) if v.layout is not None else _none(v.type.rank)

    def bytes_at(self, v: Value, axes) -> float:
        return full_bytes(v.type, self.dims, self.batch) / shard_factor(Layout(tuple(axes)),
                                                                         self.mesh)

    def divides(self, d, axis: str) -> bool:
        return not isinstance(d, int) or d % self.mesh[axis] == 0

    def consume(self, node: Node, i: int, target, reason: str) -> None:
        """Operand i of node is used in layout `target`: gather every dim whose axis differs
        (recorded), slice locally where the target is sharded and the operand is not."""
        v = node.inputs[i]
        cur = self.axes(v)
        target = list(target)
        for d, (c, t) in enumerate(zip(cur, target)):
            if c is None or c == t:
                continue
            cur[d] = None
            key = (id(v), tuple(cur))
            if key in self._gathered:
                continue
            self._gathered.add(key)
            s_full = self.bytes_at(v, cur)
            self.collectives.append(Collective(
                "all_gather", c, v, node, collective_bytes("all_gather", self.mesh[c], s_full),
                node.scope, operand=i, dim=d, reason=reason))
        layouts = list(self.operand_layouts.get(id(node), [None] * len(node.inputs)))
        layouts[i] = Layout(tuple(target))
        self.operand_layouts[id(node)] = tuple(layouts)

    def all_reduce(self, node: Node, v: Value, axis: str, op: str, reason: str) -> None:
        s = self.bytes_at(v, self.axes(v))
        self.collectives.append(Collective(
            "all_reduce", axis, v, node, collective_bytes("all_reduce", self.mesh[axis], s),
            node.scope, reduce_op=op, reason=reason))

    def set_out(self, node: Node, axes, i: int = 0) -> None:
        node.outputs[i].layout = Layout(tuple(axes))

    def priority(self, v: Value):
        return (id(v) in self.user_given, sum(a is not None for a in self.axes(v)))

    # -- driver --------------------------------------------------------------------------
    def run(self) -> None:
        for node in self.graph:
            if node.op == "constant":
                v = node.output
                if v.layout is None:
                    v.layout = Layout(tuple(_none(v.type.rank)))
                continue
            rule = getattr(self, "rule_" + node.op, None)
            if rule is None:
                if "elementwise" in get_op(node.op).traits:
                    rule = self.rule_elementwise
                elif node.op in _REDUCE_OPS:
                    rule = self.rule_reduce
                elif node.op in _LAST_AXIS_OPS:
                    rule = self.rule_axis_op
                elif node.op in _SPATIAL_OPS:
                    rule = self.rule_spatial
                else:
                    rule = self.rule_replicate
            rule(node)
            for i in range(len(node.inputs)):
                if id(node) not in self.operand_layouts or \
                        self.operand_layouts[id(node)][i] is None:
                    self.consume(node, i, self.axes(node.inputs[i]), "")
            for o in node.outputs:
                if o.layout is None:
                    o.layout = Layout(tuple(_none(o.type.rank)))

    # -- rules ---------------------------------------------------------------------------
    def rule_replicate(self, node: Node, reason: str | None = None) -> None:
        reason = reason or f"{node.op} has no sharding rule: operands replicated"
        for i, v in enumerate(node.inputs):
            self.consume(node, i, _none(v.type.rank), reason)
        for o in node.outputs:
            self.set_out(node, _none(o.type.rank), o.index)

    def merge(self, node: Node, indices, out_shape, res=None) -> list:
        """Elementwise-style merge of operands `indices` aligned from the right onto a result
        of `out_shape`; returns the result axes and consumes each operand accordingly."""
        rank = len(out_shape)
        res = list(res) if res is not None else _none(rank)
        used = {a for a in res if a is not None}
        ranked = sorted(indices, key=lambda i: self.priority(node.inputs[i]), reverse=True)
        for i in ranked:
            v = node.inputs[i]
            off = rank - v.type.rank
            for d, a in enumerate(self.axes(v)):
                od = d + off
                if a is None or od < 0 or not _same_dim(v.type.shape[d], out_shape[od]):
                    continue
                if res[od] is None and a not in used:
                    res[od] = a
                    used.add(a)
        for i in indices:
            v = node.inputs[i]
            off = rank - v.type.rank
            target = [res[d + off] if d + off >= 0 and _same_dim(v.type.shape[d], out_shape[d + off])
                      and v.type.shape[d] != 1 else None for d in range(v.type.rank)]
            self.consume(node, i, target, "operand laid out unlike the result")
        return res

    def rule_elementwise(self, node: Node) -> None:
        o = node.outputs[0]
        self.set_out(node, self.merge(node, range(len(node.inputs)), o.type.shape))

    def rule_fake_quant(self, node: Node) -> None:
        axis = node.attrs.get("axis")
        x = node.inputs[0]
        if axis is not None and self.axes(x)[axis % x.type.rank] is not None:
            # per-channel params over a split dim would have to be sliced too: keep it simple
            target = self.axes(x)
            target[axis % x.type.rank] = None
            self.consume(node, 0, target, "per-axis quantization over a sharded dim")
            self.set_out(node, target)
        else:
            self.rule_elementwise(node)

    rule_quantize = rule_fake_quant
    rule_dequantize = rule_fake_quant

    def rule_matmul(self, node: Node) -> None:
        a, b = node.inputs[0], node.inputs[1]
        out = node.outputs[0]
        ta, tb = node.attrs.get("transpose_a", False), node.attrs.get("transpose_b", False)
        ra, rb, r = a.type.rank, b.type.rank, out.type.rank
        a_k, a_m = (ra - 2, ra - 1) if ta else (ra - 1, ra - 2)
        b_k, b_n = (rb - 1, rb - 2) if tb else (rb - 2, rb - 1)
        la, lb = self.axes(a), self.axes(b)
        partial = None
        ka, kb = la[a_k], lb[b_k]
        if ka is not None and ka == kb:
            partial = ka
        else:
            la[a_k] = lb[b_k] = None
        res = _none(r)
        used = {partial} if partial else set()
        # batch dims: a first (activations), then b; broadcast dims stay replicated
        for layout, v, rank in ((la, a, ra), (lb, b, rb)):
            off = (r - 2) - (rank - 2)
            for d in range(rank - 2):
                ax = layout[d]
                if ax is None:
                    continue
                if _same_dim(v.type.shape[d], out.type.shape[d + off]) and res[d + off] is None \
                        and ax not in used:
                    res[d + off] = ax
                    used.add(ax)
        for layout, v, rank in ((la, a, ra), (lb, b, rb)):
            off = (r - 2) - (rank - 2)
            for d in range(rank - 2):
                want = res[d + off] if _same_dim(v.type.shape[d], out.type.shape[d + off]) \
                    and v.type.shape[d] != 1 else None
                layout[d] = want
        if la[a_m] is not None and la[a_m] not in used:
            res[r - 2] = la[a_m]
            used.add(la[a_m])
        else:
            la[a_m] = None
        if lb[b_n] is not None and lb[b_n] not in used:
            res[r - 1] = lb[b_n]
            used.add(lb[b_n])
        else:
            lb[b_n] = None
        why = "contraction dim split on one side only" if (ka or kb) and not partial else \
            "operand laid out unlike the result"
        self.consume(node, 0, la, why)
        self.consume(node, 1, lb, why)
        if len(node.inputs) > 2:
            self.merge(node, [2], out.type.shape, res)
        self.set_out(node, res)
        if partial:
            self.all_reduce(node, out, partial, "sum",
                            "contraction dim split: partial sums reduced after the matmul")

    def _reshape(self, node: Node) -> None:
        x, out = node.inputs[0], node.outputs[0]
        ins, outs = x.type.shape, out.type.shape
        lx = self.axes(x)
        res = _none(len(outs))
        groups = _reshape_groups(ins, outs)
        if groups is None:
            self.rule_replicate(node, "reshape whose dims cannot be matched")
            return
        for gi, gj in groups:
            if not gi:
                continue
            for d in gi[1:]:
                lx[d] = None
            a = lx[gi[0]]
            if a is None:
                continue
            if gj and self.divides(outs[gj[0]], a) and (outs[gj[0]] != 1):
                res[gj[0]] = a
            else:
                lx[gi[0]] = None
        self.consume(node, 0, lx, "reshape splits/merges a sharded dim unevenly")
        self.set_out(node, res)

    rule_reshape = _reshape
    rule_expand_dims = _reshape
    rule_squeeze = _reshape

    def rule_transpose(self, node: Node) -> None:
        lx = self.axes(node.inputs[0])
        self.set_out(node, [lx[p] for p in node.attrs["perm"]])

    def rule_reduce(self, node: Node) -> None:
        x = node.inputs[0]
        rank = x.type.rank
        axes = node.attrs.get("axes") or tuple(range(rank))
        axes = sorted({a % rank for a in axes}) if rank else []
        lx = self.axes(x)
        keep = node.attrs.get("keepdims", False)
        res = []
        partial = []
        for d in range(rank):
            if d in axes:
                if lx[d] is not None:
                    partial.append(lx[d])
                if keep:
                    res.append(None)
            else:
                res.append(lx[d])
        self.set_out(node, res)
        for a in partial:
            self.all_reduce(node, node.outputs[0], a, _REDUCE_OPS[node.op],
                            "reduction over a sharded dim")

    def rule_axis_op(self, node: Node) -> None:
        x = node.inputs[0]
        rank = x.type.rank
        ax = node.attrs.get("axis", -1) % rank
        lx = self.axes(x)
        lx[ax] = None
        self.consume(node, 0, lx, f"{node.op} needs its whole axis {ax}")
        if node.op in ("argmax", "argmin"):
            self.set_out(node, [a for d, a in enumerate(lx) if d != ax])
        else:
            self.set_out(node, lx)

    def rule_layer_norm(self, node: Node) -> None:
        x, out = node.inputs[0], node.outputs[0]
        rank = x.type.rank
        lx = self.axes(x)
        for a in node.attrs.get("axes", (-1,)):
            lx[a % rank] = None
        self.consume(node, 0, lx, "layer_norm needs its whole normalized dims")
        if len(node.inputs) > 1:
            self.merge(node, range(1, len(node.inputs)), out.type.shape, lx)
        self.set_out(node, lx)

    def rule_batch_norm(self, node: Node) -> None:
        x = node.inputs[0]
        rank = x.type.rank
        lx = self.axes(x)
        ax = node.attrs.get("axis", -1) % rank
        for i in range(1, len(node.inputs)):
            self.consume(node, i, [lx[ax]], "per-channel parameters follow the channels")
        self.set_out(node, lx)

    def rule_gather(self, node: Node) -> None:
        params, ids = node.inputs[0], node.inputs[1]
        if node.attrs.get("batch_dims", 0):
            self.rule_replicate(node, "gather with batch_dims")
            return
        ax = node.attrs.get("axis", 0) % params.type.rank
        lp, li = self.axes(params), self.axes(ids)
        partial = lp[ax]
        used = {a for i, a in enumerate(lp) if a is not None}
        for d, a in enumerate(li):
            if a in used:
                li[d] = None
            elif a is not None:
                used.add(a)
        self.consume(node, 1, li, "indices sharded over an axis the table uses")
        res = lp[:ax] + li + lp[ax + 1:]
        self.set_out(node, res)
        if partial:
            self.all_reduce(node, node.outputs[0], partial, "sum",
                            "table split on the gathered dim: masked lookup, partial rows")

    def rule_conv2d(self, node: Node) -> None:
        x, f = node.inputs[0], node.inputs[1]
        lx, lf = self.axes(x), self.axes(f)
        bx = lx[0]
        oc = lf[3] if node.attrs.get("groups", 1) == 1 and lf[3] != bx else None
        self.consume(node, 0, [bx, None, None, None], "conv2d splits only batch and channels")
        self.consume(node, 1, [None, None, None, oc], "conv2d splits only batch and channels")
        res = [bx, None, None, oc]
        if len(node.inputs) > 2:
            self.consume(node, 2, [oc], "bias follows the output channels")
        self.set_out(node, res)

    def rule_spatial(self, node: Node) -> None:
        x = node.inputs[0]
        lx = self.axes(x)
        keep_c = node.op in ("max_pool2d", "avg_pool2d", "resize")
        target = [lx[0], None, None, lx[3] if keep_c else None]
        self.consume(node, 0, target, f"{node.op} splits only batch"
                     + (" and channels" if keep_c else ""))
        for i in range(1, len(node.inputs)):
            self.consume(node, i, _none(node.inputs[i].type.rank), f"{node.op} parameters")
        self.set_out(node, target)

    def rule_concat(self, node: Node) -> None:
        out = node.outputs[0]
        ax = node.attrs["axis"] % out.type.rank
        res = _none(out.type.rank)
        used = set()
        for v in sorted(node.inputs, key=self.priority, reverse=True):
            for d, a in enumerate(self.axes(v)):
                if d != ax and a is not None and res[d] is None and a not in used:
                    res[d] = a
                    used.add(a)
        for i in range(len(node.inputs)):
            self.consume(node, i, res, "concat along or across differently sharded dims")
        self.set_out(node, res)

    def rule_split(self, node: Node) -> None:
        x = node.inputs[0]
        lx = self.axes(x)
        lx[node.attrs.get("axis", 0) % x.type.rank] = None
        self.consume(node, 0, lx, "split along a sharded dim")
        for o in node.outputs:
            self.set_out(node, lx, o.index)

    def _pass_dims(self, node: Node, keep) -> None:
        """Ops whose result has the input's rank: dims where keep(d) pass through."""
        lx = self.axes(node.inputs[0])
        lx = [a if keep(d) else None for d, a in enumerate(lx)]
        self.consume(node, 0, lx, f"{node.op} changes a sharded dim")
        self.set_out(node, lx)

    def rule_pad(self, node: Node) -> None:
        self._pass_dims(node, lambda d: tuple(node.attrs["pads"][d]) == (0, 0))

    def rule_slice(self, node: Node) -> None:
        shape = node.inputs[0].type.shape
        self._pass_dims(node, lambda d: node.attrs["begin"][d] == 0 and
                        node.attrs["size"][d] in (-1, shape[d]))

    def rule_tile(self, node: Node) -> None:
        self._pass_dims(node, lambda d: node.attrs["multiples"][d] == 1)

    def rule_broadcast_to(self, node: Node) -> None:
        x, out = node.inputs[0], node.outputs[0]
        off = out.type.rank - x.type.rank
        lx = [a if x.type.shape[d] == out.type.shape[d + off] else None
              for d, a in enumerate(self.axes(x))]
        self.consume(node, 0, lx, "broadcast of a sharded dim")
        self.set_out(node, _none(off) + lx)


def _same_dim(a, b) -> bool:
    """Dims that are the same extent at run time: equal, or both symbolic (inference writes
    `?` where a named dim meets an anonymous one; a non-1 dim broadcasts only to itself)."""
    return a == b or (isinstance(a, str) and isinstance(b, str))


def _reshape_groups(ins, outs):
    """Pairs of (input dims, output dims) whose sizes multiply to the same number, in order;
    size-1 dims form groups of their own. None when symbolic dims cannot be matched.

    When matching from the left fails on symbolic dims (`[b, 8, 64] -> [?, 64]`, as JAX
    programs flatten batch and sequence), the static trailing dims are matched from the right
    and the leading remainder, which holds the symbolic dims, becomes one group: a merge or
    split of whole leading blocks, which keeps a sharded leading dim sharded."""
    groups = _groups_from_left(ins, outs)
    return groups if groups is not None else _groups_from_right(ins, outs)


def _groups_from_right(ins, outs):
    i, j = len(ins), len(outs)
    tail = []
    while i > 0 and j > 0 and isinstance(ins[i - 1], int) and isinstance(outs[j - 1], int):
        gi, gj, pi, pj = [i - 1], [j - 1], ins[i - 1], outs[j - 1]
        i, j = i - 1, j - 1
        while pi != pj:
            if pi < pj:
                if i == 0 or not isinstance(ins[i - 1], int):
                    return None
                pi *= ins[i - 1]
                gi.insert(0, i - 1)
                i -= 1
            else:
                if j == 0 or not isinstance(outs[j - 1], int):
                    return None
                pj *= outs[j - 1]
                gj.insert(0, j - 1)
                j -= 1
        tail.insert(0, (gi, gj))
    if i == 0 and j == 0:
        return tail
    if i == 0 or j == 0:
        return None
    # the leading remainder holds the symbolic dims: one group, matched as whole blocks
    return [(list(range(i)), list(range(j))), *tail]


def _groups_from_left(ins, outs):
    groups = []
    i = j = 0
    while i < len(ins) or j < len(outs):
        if i < len(ins) and ins[i] == 1:
            groups.append(([i], []))
            i += 1
            continue
        if j < len(outs) and outs[j] == 1:
            groups.append(([], [j]))
            j += 1
            continue
        if i >= len(ins) or j >= len(outs):
            return None
        if isinstance(ins[i], str) or isinstance(outs[j], str):
            if ins[i] != outs[j]:
                return None
            groups.append(([i], [j]))
            i += 1
            j += 1
            continue
        gi, gj, pi, pj = [i], [j], ins[i], outs[j]
        i += 1
        j += 1
        while pi != pj:
            if pi < pj:
                if i >= len(ins) or isinstance(ins[i], str):
                    return None
                pi *= ins[i]
                gi.append(i)
                i += 1
            else:
                if j >= len(outs) or isinstance(outs[j], str):
                    return None
                pj *= outs[j]
                gj.append(j)
                j += 1
        groups.append((gi, gj))
    return groups


def _value_map(src: Graph, dst: Graph) -> dict[int, Value]:
    m = {id(a): b for a, b in zip(src.inputs, dst.inputs)}
    for n1, n2 in zip(src, dst):
        for a, b in zip(n1.outputs, n2.outputs):
            m[id(a)] = b
    return m


def shard(module: Module, layout_map: LayoutMap, inputs: dict | None = None, *,
          batch: int = 1, dims: dict[str, int] | None = None) -> ShardingPlan:
    """Plans `module` (its main graph) on `layout_map.mesh`: assigns a Layout to every value
    of a clone of the module and records the collectives a forward pass needs.

    inputs: graph input name -> Layout (or tuple), over `layout_map.inputs`.
    batch / dims: sizes symbolic dims take in byte counts (`dims[name]`, else `batch`).

    Raises ShardingError listing every problem: unknown mesh axes, a layout whose rank is not
    its tensor's, a dim not divisible by its axis size (static dims; symbolic ones are
    checked at run time), a tensor matched by two regex keys, an unknown input name."""
    mesh = layout_map.mesh
    clone = module.clone()
    graph = clone.main
    problems: list[Diagnostic] = [Diagnostic(p) for p in layout_map.problems()]
    given = dict(layout_map.inputs)
    for k, v in (inputs or {}).items():
        given[k] = as_layout(v)
    user_given: set[int] = set()
    by_name = {v.name: v for v in graph.inputs}

    def assign(v: Value, layout: Layout, what: str, node: Node | None = None) -> None:
        where = dict(node=node.describe(), scope=node.scope) if node is not None else {}
        bad = layout_problems(layout, mesh)
        if bad:
            # map keys were reported once each by layout_map.problems()
            if node is None:
                problems.extend(Diagnostic(f"{what}: {b}", **where) for b in bad)
            return
        if len(layout.axes) != v.type.rank:
            problems.append(Diagnostic(
                f"{what}: layout ({layout}) has rank {len(layout.axes)} but the tensor is "
                f"{v.type} (rank {v.type.rank})", **where))
            return
        ok = True
        for d, (a, size) in enumerate(zip(layout.axes, v.type.shape)):
            if a is not None and isinstance(size, int) and size % mesh[a]:
                problems.append(Diagnostic(
                    f"{what} dim {d} has size {size}, not divisible by mesh axis '{a}' of "
                    f"size {mesh[a]}", **where))
                ok = False
        if ok:
            v.layout = layout
            user_given.add(id(v))

    for name, layout in given.items():
        if name not in by_name:
            known = ", ".join(repr(n) for n in by_name) or "none"
            problems.append(Diagnostic(f"no graph input named {name!r} (inputs: {known})"))
            continue
        assign(by_name[name], layout, f"input tensor '{name}'")
    for v in graph.inputs:
        if id(v) not in user_given:
            v.layout = None
    order = node_order(graph)
    for node in graph:
        for o in node.outputs:
            o.layout = None
        if node.op != "constant":
            continue
        v = node.output
        name = tensor_name(v, order)
        if name is None:
            continue
        found = layout_map.matches(name)
        if len(found) > 1:
            problems.append(Diagnostic(conflict_message(name, [k for k, _ in found]),
                                       node=node.describe(), scope=node.scope))
        elif found:
            assign(v, found[0][1], f"tensor '{name}'", node)
    if problems:
        raise ShardingError(f"cannot shard the module on mesh {mesh.axes}", problems)
    prop = _Propagator(graph, mesh, batch, dict(dims or {}), user_given)
    prop.run()
    return ShardingPlan(clone, mesh, prop.collectives, batch, dict(dims or {}),
                        prop.operand_layouts, _value_map(module.main, graph))
