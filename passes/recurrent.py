"""`fuse-recurrent`: recognises an LSTM or simple-RNN cell run over a sequence by a loop and
replaces the loop with one `lstm` / `rnn` op (ir/ops/recurrent.py).

Frontends lift recurrent layers as loops: a Keras LSTM traced on TF is a `while` over two
counters that reads row t of the time-major input with `gather` and writes h' into row t of
a buffer with `dynamic_update_slice`; a Flax `nn.RNN(LSTMCell)` is a `scan`. The pass reads
both shapes of loop, then matches the cell by what it computes rather than by the op
sequence a framework happens to emit:

- every gate pre-activation must be an *affine* function of x_t and h with constant
  coefficients (`_affine` follows matmul, add/sub, bias constants and column slices/splits,
  so one fused [F, 4U] kernel split four ways and four separate Dense layers match alike);
- LSTM: c' = sigmoid(F) * c + sigmoid(I) * tanh(G) and h' = sigmoid(O) * tanh(c');
  RNN: h' = tanh(A).

Anything else in the loop (a mask select, peepholes, another activation, extra state, a
trip count that is not the sequence length) leaves the loop as it is, so the result is
always exact. TFLite runs the fused ops as one kernel (UNIDIRECTIONAL_SEQUENCE_LSTM / _RNN);
its writer runs this pass on its own copy of the module, as TFLiteConverter fuses LSTMs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..ir.graph import Graph, Module, Node, Value
from ..ir.types import DType
from .base import Pass, register_pass
from .canonicalize.cleanup import eliminate_dead_code
from .canonicalize.shapes import shape_patterns
from .rewrite import apply_patterns_greedily


# -- the cell ----------------------------------------------------------------------------------

@dataclass
class _Affine:
    """v = x @ wx + h @ wh + b, for a [batch, N] value v."""

    wx: np.ndarray
    wh: np.ndarray
    b: np.ndarray

    def __add__(self, other: "_Affine") -> "_Affine":
        return _Affine(self.wx + other.wx, self.wh + other.wh, self.b + other.b)

    def __neg__(self) -> "_Affine":
        return _Affine(-self.wx, -self.wh, -self.b)

    def columns(self, start: int, stop: int) -> "_Affine":
        return _Affine(self.wx[:, start:stop], self.wh[:, start:stop], self.b[start:stop])


def _producer(v: Value, op: str) -> Node | None:
    p = v.producer
    return p if p is not None and p.op == op else None


class _CellReader:
    """Reads gate pre-activations as affine functions of the step input x and the state h."""

    def __init__(self, x: Value, h: Value):
        self.x, self.h = x, h
        self.f, self.u = x.type.shape[-1], h.type.shape[-1]
        self._memo: dict[int, _Affine | None] = {}

    def affine(self, v: Value) -> _Affine | None:
        key = id(v)
        if key not in self._memo:
            self._memo[key] = self._affine(v)
        return self._memo[key]

    def _columns(self, v: Value) -> int | None:
        n = v.type.shape[-1] if v.type.rank else 1
        return n if isinstance(n, int) else None

    def _affine(self, v: Value) -> _Affine | None:
        n = self._columns(v)
        if n is None or v.type.dtype != DType.f32:
            return None
        if v is self.x or v is self.h:
            eye = np.eye(n, dtype=np.float64)
            zero = np.zeros((self.u if v is self.x else self.f, n))
            return _Affine(eye, zero, np.zeros(n)) if v is self.x else _Affine(zero, eye, np.zeros(n))
        node = v.producer
        if node is None or v.type.rank != 2:
            return self._bias(v, n)
        if node.op in ("add", "sub"):
            a, b = (self._operand(u, n) for u in node.inputs)
            if a is None or b is None:
                return None
            return a + (-b if node.op == "sub" else b)
        if node.op == "matmul":
            return self._matmul(node)
        if node.op == "split" and node.attrs["axis"] in (1, -1):
            start = int(sum(node.attrs["sizes"][:v.index]))
            a = self.affine(node.inputs[0])
            return None if a is None else a.columns(start, start + n)
        if node.op == "slice":
            return self._slice(node, n)
        return self._bias(v, n)

    def _operand(self, v: Value, n: int) -> _Affine | None:
        """An operand of an add: a [batch, N] value, a bias, or (at batch 1, where TF's
        BiasAdd of a squeezed matmul shows up) a [1, N] value squeezed to [N]."""
        if v.const is not None:
            return self._bias(v, n)
        if v.type.rank == 2:
            return self.affine(v)
        row = _producer(v, "squeeze") or _producer(v, "reshape")
        if (v.type.rank == 1 and row is not None and row.inputs[0].type.shape == (1, n)
                and self.x.type.shape[0] == 1):
            return self.affine(row.inputs[0])
        return None

    def _bias(self, v: Value, n: int) -> _Affine | None:
        """A constant broadcast along the batch: a bias (a [N], [1, N] or scalar constant)."""
        c = v.const
        if (c is None or v.quant is not None or c.dtype != np.float32 or c.size not in (1, n)
                or (c.ndim == 2 and c.shape[0] != 1) or c.ndim > 2):
            return None
        b = np.broadcast_to(np.asarray(c, np.float64).reshape(-1), (n,)).copy()
        return _Affine(np.zeros((self.f, n)), np.zeros((self.u, n)), b)

    def _matmul(self, node: Node) -> _Affine | None:
        a, w, *bias = node.inputs
        if (node.attrs["transpose_a"] or node.attrs["activation"] != "none" or w.const is None
                or w.quant is not None or w.const.dtype != np.float32):
            return None
        form = self.affine(a)
        if form is None:
            return None
        weight = np.asarray(w.const, np.float64)
        weight = weight.T if node.attrs["transpose_b"] else weight
        out = _Affine(form.wx @ weight, form.wh @ weight, form.b @ weight)
        if bias:
            b = self._bias(bias[0], weight.shape[1])
            return None if b is None else out + b
        return out

    def _slice(self, node: Node, n: int) -> _Affine | None:
        begin, size = node.attrs["begin"], node.attrs["size"]
        if len(begin) != 2 or begin[0] != 0 or size[0] not in (-1, node.inputs[0].type.shape[0]):
            return None
        a = self.affine(node.inputs[0])
        return None if a is None else a.columns(begin[1], begin[1] + n)


def _unary(v: Value, op: str) -> Value | None:
    node = _producer(v, op)
    return node.inputs[0] if node is not None else None


def _product(v: Value, first, second):
    """(first(a), second(b)) for v = a * b in either order, when both match, else None."""
    node = _producer(v, "mul")
    if node is None:
        return None
    a, b = node.inputs
    for p, q in ((a, b), (b, a)):
        m, k = first(p), second(q)
        if m is not None and k is not None:
            return m, k
    return None


def _sigmoid_of(v):
    return _unary(v, "sigmoid")


def _tanh_of(v):
    return _unary(v, "tanh")


@dataclass
class _Cell:
    """A recognised cell: its op and its fused weights ([F, G*U] kernel, [U, G*U] recurrent
    kernel, [G*U] bias; gates i, f, g, o for LSTM)."""

    op: str
    kernel: np.ndarray
    recurrent: np.ndarray
    bias: np.ndarray


def _stack(forms: list[_Affine]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (np.concatenate([f.wx for f in forms], 1).astype(np.float32),
            np.concatenate([f.wh for f in forms], 1).astype(np.float32),
            np.concatenate([f.b for f in forms]).astype(np.float32))


def match_lstm(x: Value, h: Value, c: Value, new_h: Value, new_c: Value) -> _Cell | None:
    """The LSTM cell computing (new_h, new_c) from step input x and state (h, c), or None."""
    reader = _CellReader(x, h)
    node = _producer(new_c, "add")
    if node is None:
        return None
    forget = lambda v: v if v is c else None  # noqa: E731
    for kept, written in (node.inputs, node.inputs[::-1]):
        f = _product(kept, _sigmoid_of, forget)
        ig = _product(written, _sigmoid_of, _tanh_of)
        if f is not None and ig is not None:
            break
    else:
        return None
    og = _product(new_h, _sigmoid_of, lambda v: v if _tanh_of(v) is new_c else None)
    if og is None:
        return None
    forms = [reader.affine(v) for v in (ig[0], f[0], ig[1], og[0])]
    if any(form is None for form in forms):
        return None
    return _Cell("lstm", *_stack(forms))


def match_rnn(x: Value, h: Value, new_h: Value) -> _Cell | None:
    """The simple tanh RNN cell computing new_h from x and h, or None."""
    pre = _tanh_of(new_h)
    form = None if pre is None else _CellReader(x, h).affine(pre)
    return None if form is None else _Cell("rnn", *_stack([form]))


def _match_cell(x: Value, states: list[Value], new_states: list[Value]):
    """(cell, order): the cell and which state is h (and c), trying each assignment."""
    if len(states) == 1:
        cell = match_rnn(x, states[0], new_states[0])
        return (cell, [0]) if cell is not None else None
    if len(states) == 2:
        for hi, ci in ((0, 1), (1, 0)):
            cell = match_lstm(x, states[hi], states[ci], new_states[hi], new_states[ci])
            if cell is not None:
                return cell, [hi, ci]
    return None


# -- the loops ---------------------------------------------------------------------------------

@dataclass
class _Loop:
    """A recognised recurrent loop: the node, its time-major input, the cell, which of the
    loop's results are the final states (h, c), which are the stacked h of every step, which
    stay the value they started with, and whether it runs backwards over time. A loop runs
    at least one step (a sequence has at least one row)."""

    node: Node
    xs: int                     # operand indices of the node (its operands may be replaced
    init: list[int]             # by an earlier fusion before this one is rewritten)
    cell: _Cell
    state_results: list[int]
    sequence_results: list[int]
    passthrough: list[int]
    reverse: bool = False
    last: list[int] = field(default_factory=list)   # results holding [h of the last step]


def _is_int_const(v: Value, value: int) -> bool:
    c = v.const
    return c is not None and c.size == 1 and c.dtype.kind == "i" and int(c.reshape(())) == value


def _scan_loop(node: Node) -> _Loop | None:
    n = node.attrs["num_carry"]
    body = node.regions[0]
    xs_args = body.inputs[n:]
    if len(xs_args) != 1 or xs_args[0].type.rank != 2:
        return None
    states, new_states = body.inputs[:n], body.outputs[:n]
    matched = _match_cell(xs_args[0], list(states), list(new_states))
    if matched is None:
        return None
    cell, order = matched
    h_new = new_states[order[0]]
    if any(y is not h_new for y in body.outputs[n:]):
        return None
    return _Loop(node, n, order, cell, order, list(range(n, len(node.outputs))), [],
                 node.attrs["reverse"])


def _counter(k: int, args, outs, init) -> bool:
    """State k starts at 0 and grows by one each step."""
    step = _producer(outs[k], "add")
    return (step is not None and _is_int_const(init[k], 0) and args[k].type.rank == 0
            and any(a is args[k] and _is_int_const(b, 1)
                    for a, b in (step.inputs, step.inputs[::-1])))


def _row_start(start: Value, t: Value) -> bool:
    """`start` is [t, 0, 0, ...]: a DUS start writing row t."""
    node = _producer(start, "concat")
    if node is None or node.attrs["axis"] != 0 or len(node.inputs) != 2:
        return False
    first, rest = node.inputs
    row = _producer(first, "reshape") or _producer(first, "expand_dims")
    return (row is not None and row.inputs[0] is t and rest.const is not None
            and not np.any(rest.const))


def _dim0(v: Value, xs: Value) -> bool:
    """v (a scalar) is the run-time size of xs's leading axis."""
    node = _producer(v, "reshape")
    node = _producer(node.inputs[0], "slice") if node is not None else None
    if node is None or tuple(node.attrs["begin"]) != (0,) or tuple(node.attrs["size"]) != (1,):
        return False
    shape = _producer(node.inputs[0], "shape_of")
    return shape is not None and shape.inputs[0] is xs


def _runs_once_per_row(cond: Graph, counters: set[int], invariant: set[int], init,
                       xs: Value) -> bool:
    """The cond stops exactly after len(xs) steps: a conjunction of `counter < bound` where each
    bound is len(xs) or (when that is static) a constant at least len(xs), one of them equal."""
    time = xs.type.shape[0]
    index = {id(a): k for k, a in enumerate(cond.inputs)}
    tests = [cond.outputs[0]]
    exact = False
    while tests:
        v = tests.pop()
        if (node := _producer(v, "logical_and")) is not None:
            tests += node.inputs
            continue
        node = _producer(v, "less")
        if node is None or index.get(id(node.inputs[0])) not in counters:
            return False
        bound = node.inputs[1]
        k = index.get(id(bound))
        if k is not None:
            if k not in invariant:
                return False
            bound = init[k]
        if _dim0(bound, xs):
            exact = True
            continue
        c = bound.const
        if c is None or c.size != 1 or not isinstance(time, int) or int(c.reshape(())) < time:
            return False
        exact |= int(c.reshape(())) == time
    return exact


def _while_loop(node: Node) -> _Loop | None:
    cond, body = node.regions
    args, outs, init = body.inputs, body.outputs, node.inputs
    counters = {k for k in range(len(args)) if _counter(k, args, outs, init)}
    invariant = {k for k in range(len(args)) if outs[k] is args[k]}
    rows = [n for n in body if n.op == "gather" and n.inputs[0] in args
            and args.index(n.inputs[0]) in invariant]
    if len(rows) != 1 or rows[0].attrs["axis"] != 0 or rows[0].attrs["batch_dims"] != 0:
        return None
    row = rows[0]
    xs_k = args.index(row.inputs[0])
    t = row.inputs[1]
    if t not in args or args.index(t) not in counters or row.output.type.rank != 2:
        return None
    # Buffers: one row per step (written at row t), or Keras's one-row buffer holding the
    # last step's output (written at row 0 every step).
    buffers: dict[int, Value] = {}
    last: set[int] = set()
    for k in range(len(args)):
        dus = _producer(outs[k], "dynamic_update_slice")
        if dus is None or dus.inputs[0] is not args[k]:
            continue
        start = dus.inputs[2].const
        if start is not None and not np.any(start) and args[k].type.shape[0] == 1:
            last.add(k)
        elif not _row_start(dus.inputs[2], t):
            continue
        update = _producer(dus.inputs[1], "expand_dims")
        if update is None or update.attrs["axis"] != 0:
            return None
        buffers[k] = update.inputs[0]
    state = [k for k in range(len(args)) if k not in counters | invariant | set(buffers)]
    matched = _match_cell(row.output, [args[k] for k in state], [outs[k] for k in state])
    if matched is None:
        return None
    cell, order = matched
    h_new = outs[state[order[0]]]
    if any(y is not h_new for y in buffers.values()):
        return None
    xs = init[xs_k]
    if not _runs_once_per_row(cond, counters, invariant, init, xs):
        return None
    if any(node.outputs[k].uses for k in counters):
        return None
    return _Loop(node, xs_k, [state[i] for i in order], cell, [state[i] for i in order],
                 sorted(set(buffers) - last), sorted(invariant), last=sorted(last))


# -- the rewrite -------------------------------------------------------------------------------

def _fuse(loop: _Loop) -> None:
    node, graph = loop.node, loop.node.graph

    def add(op, inputs, attrs=None):
        return graph.add(op, inputs, attrs, before=node, scope=node.scope, loc=node.loc)

    def const(array, suffix):
        name = f"{node.scope}/{suffix}" if node.scope else None
        return graph.constant(array, name, before=node, scope=node.scope, loc=node.loc)

    xs = node.inputs[loop.xs]
    if loop.reverse:
        xs = add("reverse", [xs], {"axes": [0]}).output
    # A batch-major source transposed to time-major for the loop feeds the op directly.
    source = _producer(xs, "transpose")
    batch_major = source is not None and tuple(source.attrs["perm"]) == (1, 0, 2)
    cell = loop.cell
    fused = add(cell.op, [source.inputs[0] if batch_major else xs,
                          const(cell.kernel, "kernel"), const(cell.recurrent, "recurrent_kernel"),
                          const(cell.bias, "bias"), *(node.inputs[k] for k in loop.init)],
                {"time_major": not batch_major})
    seq = fused.outputs[0]
    if batch_major:
        seq = add("transpose", [seq], {"perm": [1, 0, 2]}).output
    if loop.reverse:
        seq = add("reverse", [seq], {"axes": [0]}).output
    for k, result in zip(loop.state_results, fused.outputs[1:]):
        node.outputs[k].replace_all_uses_with(result)
    for k in loop.sequence_results:
        node.outputs[k].replace_all_uses_with(seq)
    if loop.last:
        last = add("expand_dims", [fused.outputs[1]], {"axis": 0}).output
        for k in loop.last:
            node.outputs[k].replace_all_uses_with(last)
    for k in loop.passthrough:
        node.outputs[k].replace_all_uses_with(node.inputs[k])
    graph.erase(node)


def _loops(graph: Graph) -> list[_Loop]:
    """The recurrent loops of `graph` (not of its regions)."""
    found = []
    for node in graph:
        loop = _scan_loop(node) if node.op == "scan" else \
            _while_loop(node) if node.op == "while" else None
        if loop is not None:
            found.append(loop)
    return found


def tflite_problem(loop: _Loop) -> str | None:
    """Why TFLite's sequence kernel cannot run this loop, or None when it can. Its state lives
    in variable tensors allocated once at their declared size (the batch must be static) and
    it has no final-cell-state output (backends/tflite/ops/recurrent.py)."""
    if not isinstance(loop.node.inputs[loop.init[0]].type.shape[0], int):
        return "needs a static batch size (input_shapes= fixes it)"
    if loop.cell.op == "lstm" and loop.node.outputs[loop.state_results[1]].uses:
        return "has no final cell state output, and the model reads it"
    return None


def fuse_recurrent(module: Module, *, for_tflite: bool = False) -> int:
    """Replaces every recognised LSTM / simple-RNN loop of `module` with one `lstm` / `rnn`
    op; returns how many it fused. `for_tflite` fuses only the loops TFLite's kernels can
    run (`tflite_problem`)."""
    fused = 0
    for graph in list(module.all_graphs()):
        loops = [loop for loop in _loops(graph)
                 if not for_tflite or tflite_problem(loop) is None]
        for loop in loops:
            _fuse(loop)
        if loops:
            fused += len(loops)
            # The transposes around the op cancel; the loop's buffers and counters die.
            apply_patterns_greedily(graph, shape_patterns())
            eliminate_dead_code(graph)
    return fused


def tflite_unfused(module: Module) -> list[tuple[str, str]]:
    """(layer scope, reason) for each recurrent loop that TFLite runs as a WHILE loop although
    its cell is one of TFLite's sequence kernels (what `with_fused_recurrent` leaves)."""
    return [(loop.node.scope or loop.node.op, problem)
            for g in module.all_graphs() for loop in _loops(g)
            if (problem := tflite_problem(loop)) is not None]


def with_fused_recurrent(module: Module) -> Module:
    """`module` itself when it has no loop TFLite can run as a sequence kernel, else a copy
    with those loops fused (`fuse_recurrent(for_tflite=True)`)."""
    if not any(n.op in ("while", "scan") for g in module.graphs.values() for n in g.walk()):
        return module
    copy = module.clone()
    return copy if fuse_recurrent(copy, for_tflite=True) else module


@register_pass("fuse-recurrent")
class FuseRecurrent(Pass):
    """Replaces loops running an LSTM or simple-RNN cell (Keras LSTM/SimpleRNN, Flax
    LSTMCell/SimpleCell under nn.RNN) with one `lstm` / `rnn` op, as TFLite runs them."""

    def run(self, module, ctx):
        return fuse_recurrent(module) > 0


# -- the way back: a loop for targets without a sequence kernel --------------------------------

RECURRENT_OPS = frozenset({"lstm", "rnn"})


def _cell_body(node: Node) -> Graph:
    """The scan body of an `lstm` / `rnn` node: (h, c, x_t) -> (h', c', h') or (h, x_t) ->
    (h', h'), its weights copied in as constants (regions are isolated from above)."""
    x, kernel, recurrent, bias, *states = node.inputs
    body = Graph("body")
    args = [body.add_input(s.type) for s in states]
    x_t = body.add_input(x.type.with_shape(x.type.shape[1:] if node.attrs["time_major"]
                                           else (x.type.shape[0], x.type.shape[2])))

    def add(op, inputs, attrs=None):
        return body.add(op, inputs, attrs, scope=node.scope, loc=node.loc).outputs

    k, r, b = (body.constant(v.const, v.name, scope=node.scope, loc=node.loc)
               for v in (kernel, recurrent, bias))
    (z,) = add("add", [add("add", [add("matmul", [x_t, k])[0], add("matmul", [args[0], r])[0]])[0],
                       b])
    if node.op == "rnn":
        (h,) = add("tanh", [z])
        body.set_outputs([h, h])
        return body
    units = recurrent.type.shape[0]
    i, f, g, o = add("split", [z], {"axis": 1, "sizes": [units] * 4})
    sig = lambda v: add("sigmoid", [v])[0]  # noqa: E731
    (c,) = add("add", [add("mul", [sig(f), args[1]])[0],
                       add("mul", [sig(i), add("tanh", [g])[0]])[0]])
    (h,) = add("mul", [sig(o), add("tanh", [c])[0]])
    body.set_outputs([h, c, h])
    return body


def expand_recurrent(module: Module) -> int:
    """Rewrites every `lstm` / `rnn` op back into a `scan` of its cell (for targets without a
    sequence kernel); returns how many. Their weights must be constants, as `fuse-recurrent`
    makes them."""
    count = 0
    for graph in list(module.all_graphs()):
        for node in [n for n in graph if n.op in RECURRENT_OPS]:
            def add(op, inputs, attrs=None, **kw):
                return graph.add(op, inputs, attrs, before=node, scope=node.scope,
                                 loc=node.loc, **kw).outputs
            x, states = node.inputs[0], node.inputs[4:]
            xs = x if node.attrs["time_major"] else add("transpose", [x], {"perm": [1, 0, 2]})[0]
            *final, ys = add("scan", [*states, xs], {"num_carry": len(states)},
                             regions=[_cell_body(node)])
            seq = ys if node.attrs["time_major"] else add("transpose", [ys], {"perm": [1, 0, 2]})[0]
            graph.replace_node(node, [seq, *final])
            count += 1
    return count


def with_recurrent_expanded(module: Module) -> Module:
    """`module` itself when it has no `lstm` / `rnn` op, else a copy with each one a `scan`."""
    if not any(n.op in RECURRENT_OPS for g in module.graphs.values() for n in g.walk()):
        return module
    copy = module.clone()
    expand_recurrent(copy)
    return copy
