"""`LayoutMap` (tensor name -> Layout, exact keys then regexes, like Keras/DTensor's
`LayoutMap`), the tensor naming it keys on, and `create_layout_map`, which writes a
Megatron-style map for the transformer blocks it recognises in a module.

Tensor names: a value's IR name when it has one (`encoder_0_ff1/kernel`), else, for a
constant, `<scope>/<operand role>` of its first user in graph order, the role being the
operand's name in the op registry without `?`/`*` (`encoder_0_mha/query/b` for the kernel
operand `b` of the query projection's `matmul`).
"""

from __future__ import annotations

import re
from typing import Iterator

from ...ir.errors import Diagnostic
from ...ir.graph import Graph, Module, Node, Value
from ...ir.ops import get_op
from ...ir.types import Layout
from .mesh import Mesh, ShardingError


def as_layout(layout) -> Layout:
    """A Layout from a Layout, or a tuple/list of axis names and None."""
    if isinstance(layout, Layout):
        return layout
    if isinstance(layout, (tuple, list)):
        return Layout(tuple(layout))
    raise TypeError(f"expected a Layout or a tuple of mesh axis names/None, got {layout!r}")


def layout_problems(layout: Layout, mesh: Mesh) -> list[str]:
    """What is wrong with `layout` on `mesh` alone (unknown or repeated axes)."""
    out = []
    seen = set()
    for a in layout.axes:
        if a is None:
            continue
        if not isinstance(a, str) or a not in mesh:
            out.append(f"layout ({layout}) names unknown mesh axis {a!r} "
                       f"(mesh axes: {', '.join(mesh.axis_names)})")
        elif a in seen:
            out.append(f"layout ({layout}) uses mesh axis '{a}' on two dims")
        seen.add(a)
    return out


def node_order(graph: Graph) -> dict[int, int]:
    """id(node) -> position in the graph (the order first users are picked by)."""
    return {id(n): i for i, n in enumerate(graph)}


def tensor_name(value: Value, order: dict[int, int] | None = None) -> str | None:
    """The name layout-map keys are matched against (see the module doc); None for an
    unnamed non-constant value."""
    if value.name:
        return value.name
    best = None
    for user, idx in value.uses:
        if not isinstance(user, Node):
            continue
        pos = order.get(id(user), 0) if order is not None else 0
        if best is None or pos < best[0]:
            best = (pos, user, idx)
    if best is None:
        return None
    _, user, idx = best
    roles = get_op(user.op).inputs
    role = roles[min(idx, len(roles) - 1)].rstrip("?*") if roles else str(idx)
    return f"{user.scope}/{role}" if user.scope else role


class LayoutMap:
    """Tensor name -> Layout on `mesh`.

    Lookup (`resolve`): an exact key wins; otherwise every key is tried as a regex with
    `re.search`; two regexes matching one tensor is an error naming both; no match means
    replicated. `inputs` holds layouts for graph inputs by name (used by `shard` when it is
    not given `inputs=`). `blocks` groups keys that belong together (one attention block,
    one MLP pair, an embedding: what `create_layout_map` recognised; `auto_shard` chooses
    per block)."""

    def __init__(self, mesh: Mesh, inputs: dict[str, Layout] | None = None):
        if not isinstance(mesh, Mesh):
            raise TypeError(f"LayoutMap needs a Mesh, got {mesh!r}")
        self.mesh = mesh
        self._layouts: dict[str, Layout] = {}
        self._regex: dict[str, re.Pattern] = {}
        self.inputs: dict[str, Layout] = {k: as_layout(v) for k, v in (inputs or {}).items()}
        self.blocks: dict[str, list[str]] = {}

    def __setitem__(self, key: str, layout) -> None:
        if not isinstance(key, str) or not key:
            raise TypeError(f"layout map keys are non-empty strings, got {key!r}")
        try:
            pattern = re.compile(key)
        except re.error as e:
            raise ShardingError("invalid layout map key",
                                [Diagnostic(f"key {key!r} is not a valid regex: {e}")]) from None
        self._layouts[key] = as_layout(layout)
        self._regex[key] = pattern

    def __getitem__(self, key: str) -> Layout:
        return self._layouts[key]

    def __delitem__(self, key: str) -> None:
        del self._layouts[key]
        del self._regex[key]

    def __contains__(self, key: object) -> bool:
        return key in self._layouts

    def __iter__(self) -> Iterator[str]:
        return iter(self._layouts)

    def __len__(self) -> int:
        return len(self._layouts)

    def items(self):
        """(key, Layout) pairs in the order they were set."""
        return self._layouts.items()

    def matches(self, name: str) -> list[tuple[str, Layout]]:
        """The keys that apply to tensor `name`: [the exact key] if there is one, else every
        regex key that `re.search`es it (more than one is a conflict for the caller)."""
        if name in self._layouts:
            return [(name, self._layouts[name])]
        return [(k, self._layouts[k]) for k, p in self._regex.items() if p.search(name)]

    def resolve(self, name: str) -> Layout | None:
        """The layout of tensor `name` (None = replicated); ShardingError on conflicting keys."""
        found = self.matches(name)
        if len(found) > 1:
            raise ShardingError("conflicting layout map keys", [Diagnostic(
                conflict_message(name, [k for k, _ in found]))])
        return found[0][1] if found else None

    def problems(self) -> list[str]:
        """Keys whose layouts name unknown or repeated mesh axes (input layouts are checked
        by `shard`, with the graph they apply to)."""
        out = []
        for key, layout in self._layouts.items():
            out += [f"layout map key {key!r}: {p}" for p in layout_problems(layout, self.mesh)]
        return out

    def __repr__(self) -> str:
        body = ", ".join(f"{k!r}: ({v})" for k, v in self._layouts.items())
        return f"LayoutMap({self.mesh!r}, {{{body}}})"


def conflict_message(name: str, keys: list[str]) -> str:
    return (f"tensor '{name}' matches several layout map keys: "
            + ", ".join(repr(k) for k in keys))


# -- create_layout_map ------------------------------------------------------------------------

_COLUMN_SCOPES = {"query", "key", "value", "q_proj", "k_proj", "v_proj", "q", "k", "v"}
_ROW_SCOPES = {"attention_output", "out", "o_proj", "out_proj", "output"}


def _is_elementwise(node: Node) -> bool:
    return "elementwise" in get_op(node.op).traits


def _source(value: Value, memo: dict[int, Value | None]) -> Value | None:
    """The single non-constant value `value` is an elementwise function of (itself when its
    producer is not elementwise); None for constants. Used to find Dense pairs through an
    activation (gelu decomposes into several elementwise ops of one matmul result) without
    walking through residual adds or layer norms (two different sources)."""
    key = id(value)
    if key in memo:
        return memo[key]
    p = value.producer
    if p is None:
        out = value
    elif p.op == "constant":
        out = None
    elif _is_elementwise(p):
        srcs = {id(s): s for s in (_source(v, memo) for v in p.inputs) if s is not None}
        out = next(iter(srcs.values())) if len(srcs) == 1 else value
    else:
        out = value
    memo[key] = out
    return out


def _const_matmul_kernel(node: Node) -> Value | None:
    if node.op != "matmul" or len(node.inputs) < 2:
        return None
    b = node.inputs[1]
    if b.const is None or b.type.rank != 2 or node.attrs.get("transpose_b"):
        return None
    return b


def _bias_of(node: Node) -> tuple[Value | None, Node | None]:
    """The constant bias added to a projection's result: the matmul's own `bias` operand, or
    an `add` of a constant after it (possibly after reshapes, as Keras MHA adds its [heads,
    dh] bias after splitting heads). Returns (bias, the add node)."""
    if len(node.inputs) > 2 and node.inputs[2].const is not None:
        return node.inputs[2], node
    v = node.output
    for _ in range(3):
        users = v.users
        if len(users) != 1:
            return None, None
        u = users[0]
        if u.op == "reshape":
            v = u.output
            continue
        if u.op == "add":
            other = [x for x in u.inputs if x is not v]
            if len(other) == 1 and other[0].const is not None and other[0].type.rank >= 1:
                return other[0], u
        return None, None
    return None, None


def _leading_sharded(rank_shape, axis: str) -> Layout:
    """A layout with `axis` on the first dim of size != 1 (bias of a column-parallel layer)."""
    axes = [None] * len(rank_shape)
    for i, d in enumerate(rank_shape):
        if d != 1:
            axes[i] = axis
            break
    return Layout(tuple(axes))


def create_layout_map(module: Module, mesh: Mesh, style: str = "megatron", *,
                      model_axis: str = "model", batch_axis: str = "batch",
                      embedding: str = "auto") -> LayoutMap:
    """A LayoutMap for the transformer blocks found in `module` (Megatron-LM tensor
    parallelism plus data parallelism):

    - attention: query/key/value kernels column-parallel `(None, model)` and their biases on
      `model` (a Keras [heads, dh] bias on its heads dim); the output projection
      (`attention_output`, `out`, `o_proj`) row-parallel `(model, None)`, bias replicated.
      Projections are found by the last component of their matmul's scope.
    - MLP: two Dense layers joined only through elementwise ops (bias, activation): the first
      kernel column-parallel, its bias on `model`; the second row-parallel, bias replicated.
    - embeddings (`gather` from a constant [vocab, hidden] table): `embedding="vocab"` ->
      `(model, None)` (masked lookup + one all_reduce), `"hidden"` -> `(None, model)`,
      `"auto"` -> vocab when the vocab divides by the axis size, else left
      replicated (not hidden: see below), `"none"` -> replicated. With a hidden-split table
      the residual stream stays hidden-split (forward propagation keeps the more sharded
      operand of each residual add), so every layer gets an all_gather of its input before
      the column-parallel matmuls and small all_reduces in its layer norms.
    - every other weight (layer norms, the head) stays replicated.
    - `lm.inputs`: each graph input split on `batch` along dim 0 (data parallel), when the
      mesh has that axis.

    Keys are anchored escaped tensor names (`^encoder_0_ff1/kernel$`, see `tensor_name`);
    a user key added afterwards that matches the same tensor as a regex conflicts with them
    (an exact-name key wins). Mesh axes that are missing make this a data- or
    model-parallel-only map."""
    if style != "megatron":
        raise ShardingError("unknown layout style", [Diagnostic(
            f"style {style!r} is not supported (valid: 'megatron')")])
    if embedding not in ("auto", "vocab", "hidden", "none"):
        raise ShardingError("unknown embedding layout", [Diagnostic(
            f"embedding={embedding!r} (valid: 'auto', 'vocab', 'hidden', 'none')")])
    lm = LayoutMap(mesh)
    graph = module.main
    order = node_order(graph)
    if batch_axis in mesh:
        for v in graph.inputs:
            if v.name and v.type.rank >= 1:
                lm.inputs[v.name] = Layout((batch_axis,) + (None,) * (v.type.rank - 1))
    if model_axis not in mesh:
        return lm
    n = mesh[model_axis]

    def put(value: Value | None, layout: Layout, block: str) -> None:
        if value is None:
            return
        name = tensor_name(value, order)
        # anchored: a bare key is also a regex, and `x/query/b` would catch `x/query/bias`
        key = f"^{re.escape(name)}$" if name is not None else None
        if key is not None and key not in lm:
            lm[key] = layout
            lm.blocks.setdefault(block, []).append(key)

    column = Layout((None, model_axis))
    row = Layout((model_axis, None))
    memo: dict[int, Value | None] = {}
    claimed: set[int] = set()
    for node in graph:
        kernel = _const_matmul_kernel(node)
        if kernel is None:
            continue
        leaf = node.scope.rsplit("/", 1)[-1]
        block = node.scope.rsplit("/", 1)[0] if "/" in node.scope else node.scope
        if leaf in _COLUMN_SCOPES:
            put(kernel, column, block)
            bias, _ = _bias_of(node)
            if bias is not None:
                put(bias, _leading_sharded(bias.type.shape, model_axis), block)
            claimed.add(id(node))
        elif leaf in _ROW_SCOPES:
            put(kernel, row, block)
            claimed.add(id(node))
    for node in graph:
        kernel = _const_matmul_kernel(node)
        if kernel is None or id(node) in claimed:
            continue
        src = _source(node.inputs[0], memo)
        first = src.producer if src is not None else None
        if first is None or id(first) in claimed or _const_matmul_kernel(first) is None:
            continue
        k1 = _const_matmul_kernel(first)
        if k1.type.shape[1] != kernel.type.shape[0]:
            continue
        block = f"{first.scope}+{node.scope}"
        put(k1, column, block)
        bias, _ = _bias_of(first)
        if bias is not None:
            put(bias, _leading_sharded(bias.type.shape, model_axis), block)
        put(kernel, row, block)
        claimed.update((id(first), id(node)))
    for node in graph:
        if node.op != "gather" or node.attrs.get("axis", 0) != 0 or node.attrs.get("batch_dims"):
            continue
        table = node.inputs[0]
        if table.const is None or table.type.rank != 2:
            continue
        vocab, hidden = table.type.shape
        choice = embedding
        if choice == "auto":
            # not "hidden" when the vocab does not divide: a hidden-split table makes the
            # whole residual stream hidden-split (an all_gather before every column-parallel
            # matmul, all_reduces in every layer norm); ask for it explicitly
            choice = "vocab" if vocab % n == 0 else "none"
        if choice == "vocab":
            put(table, row, node.scope or "embedding")
        elif choice == "hidden":
            put(table, column, node.scope or "embedding")
    return lm
