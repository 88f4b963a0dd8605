"""The `.tfir` text format: a printer and a parser that round-trip exactly.

    module {producer="tensorforge 0.1.0", source="keras"}
    graph @main(%x: f32[batch,4]) -> (f32[batch,2]) {
      %w = constant {value=dense<f32[4,2]: 0x...>} : f32[4,2]
      %0 = matmul(%x, %w) : f32[batch,2]  scope="dense" loc="keras:Dense"
      return %0
    }

Values print under their own name when they have one (made unique), anonymous values are
numbered %0, %1, ... in definition order, so printing is stable: print(parse(print(m))) ==
print(m). Attributes equal to the op's default are omitted. Small constants print as lists,
uniform ones as `splat`, others as little-endian hex of their bytes (exact). `//` starts a
comment. Every parse error carries file:line:col; every problem in a file is reported at once
where the parser can continue.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import Diagnostic, ParseError
from .graph import Graph, Module, Node, Value, display_names, shown_attrs
from .ops import get_op, has_op
from .types import DType, Layout, QuantParams, TensorType

LIST_LIMIT = 16  # constants with at most this many elements print as readable lists
MAX_NESTING = 64  # attribute lists nested deeper than this are refused (no recursion blowup)
# The largest constant the parser materializes: a `splat` or list constant is expanded in
# memory, so its declared size (not the text's length) decides what it costs. Hex payloads
# are as long as their data and are bounded by the text itself.
MAX_CONSTANT_BYTES = 1 << 30

_NAME_CHARS = re.compile(r"[A-Za-z0-9_.$/\-]+")


# ============================================================================================
# Printer
# ============================================================================================

def format_float(x: float) -> str:
    """Shortest exact text for a float (repr), always recognisable as a float."""
    x = float(x)
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    s = repr(x)
    return s if any(c in s for c in ".eE") else s + ".0"


def _format_scalar(x, dtype: DType) -> str:
    """One element of a constant. Floats print as the shortest text that reads back to the
    same value *in their own dtype* (f32 0.1 prints `0.1`, not `0.10000000149011612`)."""
    if dtype == DType.bool:
        return "true" if x else "false"
    if dtype.is_float:
        s = str(dtype.np.type(x))
        if s in ("nan", "inf", "-inf"):
            return s
        return s if any(c in s for c in ".eE") else s + ".0"
    return str(int(x))


def format_dense(arr: np.ndarray, elide: bool = False) -> str:
    """`dense<f32[2]: [1.0, 2.0]>`, `dense<f32[8]: splat 0.0>` or `dense<f32[9]: 0x...>`."""
    dtype = DType.from_numpy(arr.dtype)
    head = f"dense<{TensorType(dtype, arr.shape)}: "
    flat = arr.reshape(-1)
    if flat.size <= LIST_LIMIT:
        return head + "[" + ", ".join(_format_scalar(x, dtype) for x in flat) + "]>"
    first = flat[0]
    if dtype.is_float and not np.isnan(float(first)):
        uniform = bool(np.all(flat == first)) and _same_sign_zeros(flat, first)
    else:
        uniform = bool(np.all(flat == first))
    if uniform:
        return head + "splat " + _format_scalar(first, dtype) + ">"
    if elide:
        return head + "...>"
    return head + "0x" + np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<")).tobytes().hex() + ">"


def _same_sign_zeros(flat, first) -> bool:
    # -0.0 == 0.0, but a splat must reproduce the exact bytes.
    if float(first) != 0.0:
        return True
    return bool(np.all(np.signbit(flat) == np.signbit(first)))


def format_attr(v: Any, elide: bool = False) -> str:
    if v is None:
        return "none"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return format_float(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, DType):
        return v.value
    if isinstance(v, tuple):
        return "[" + ", ".join(format_attr(x, elide) for x in v) + "]"
    if isinstance(v, np.ndarray):
        return format_dense(v, elide)
    raise TypeError(f"attribute value of type {type(v).__name__} cannot be printed: {v!r}")


def format_quant(q: QuantParams) -> str:
    parts = ["scale=" + format_attr(q.scale), "zero_point=" + format_attr(q.zero_point)]
    if q.axis is not None:
        parts.append(f"axis={q.axis}")
    if q.bits != 8:
        parts.append(f"bits={q.bits}")
    if not q.signed:
        parts.append("signed=false")
    if q.narrow_range:
        parts.append("narrow_range=true")
    return "quant<" + ", ".join(parts) + ">"


def format_value_type(v: Value) -> str:
    s = str(v.type)
    if v.quant is not None:
        s += " " + format_quant(v.quant)
    if v.layout is not None:
        s += f" layout<{v.layout}>"
    return s


def _format_name(name: str) -> str:
    return name if _NAME_CHARS.fullmatch(name) else json.dumps(name)


class _Namer:
    """Each value's printed name: `%` + its display name (`graph.display_names`), or a number
    in definition order for an anonymous value."""

    def __init__(self, graph: Graph):
        self.names: dict[int, str] = {}
        counter = 0
        values = list(graph.inputs) + [o for n in graph for o in n.outputs]
        shown = display_names(graph)
        for v in values:
            name = shown[id(v)]
            if name is None:
                name, counter = str(counter), counter + 1
            else:
                name = _format_name(name)
            self.names[id(v)] = "%" + name

    def __call__(self, v: Value) -> str:
        try:
            return self.names[id(v)]
        except KeyError:
            return f"%<undefined {v.name or '?'}>"


def print_node(node: Node, name: _Namer, elide: bool = False) -> str:
    results = ", ".join(name(o) for o in node.outputs)
    s = f"{results} = {node.op}"
    if node.inputs:
        s += "(" + ", ".join(name(v) for v in node.inputs) + ")"
    shown = shown_attrs(node)
    if shown:
        s += " {" + ", ".join(f"{k}={format_attr(v, elide)}" for k, v in shown.items()) + "}"
    s += " : " + ", ".join(format_value_type(o) for o in node.outputs)
    if node.scope:
        s += f"  scope={json.dumps(node.scope)}"
    if node.loc:
        s += f" loc={json.dumps(node.loc)}"
    return s


def print_graph(graph: Graph, elide: bool = False) -> str:
    """The text of one graph; the regions of a control-flow node follow it in braces, each
    a graph of its own (its names are its own: regions are isolated from above)."""
    name = _Namer(graph)
    args = ", ".join(f"{name(v)}: {format_value_type(v)}" for v in graph.inputs)
    rets = ", ".join(format_value_type(v) for v in graph.outputs)
    lines = [f"graph @{_format_name(graph.name)}({args}) -> ({rets}) {{"]
    for n in graph:
        head = "  " + print_node(n, name, elide)
        if not n.regions:
            lines.append(head)
            continue
        lines.append(head + " {")
        for region in n.regions:
            lines += ["    " + line for line in print_graph(region, elide).split("\n")]
        lines.append("  }")
    lines.append("  return" + ("" if not graph.outputs else
                               " " + ", ".join(name(v) for v in graph.outputs)))
    lines.append("}")
    return "\n".join(lines)


def print_module(module: Module, elide: bool = False) -> str:
    """The module's text. `elide=True` abbreviates large constants (`...`): readable, but
    such text cannot be parsed back."""
    parts = []
    if module.metadata:
        parts.append("module {" + ", ".join(f"{k}={format_attr(v)}"
                                            for k, v in sorted(module.metadata.items())) + "}")
    parts += [print_graph(g, elide) for g in module.graphs.values()]
    return "\n".join(parts) + "\n"


# ============================================================================================
# Lexer
# ============================================================================================

_TOKEN_RE = re.compile(r"""
    (?P<ws>[ \t\r]+)
  | (?P<nl>\n)
  | (?P<comment>//[^\n]*)
  | (?P<value>%(?:[A-Za-z0-9_.$/\-]+|"(?:[^"\\\n]|\\.)*"))
  | (?P<symbol>@(?:[A-Za-z0-9_.$/\-]+|"(?:[^"\\\n]|\\.)*"))
  | (?P<hex>0x[0-9a-fA-F]*)
  | (?P<number>-?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?)
  | (?P<string>"(?:[^"\\\n]|\\.)*")
  | (?P<ident>-?[A-Za-z_][A-Za-z0-9_.]*)
  | (?P<arrow>->)
  | (?P<punct>\.\.\.|[(){}\[\]<>,:=?])
""", re.VERBOSE)


@dataclass(slots=True)
class Token:
    kind: str   # value, symbol, hex, number, string, ident, arrow, punct, eof
    text: str
    line: int
    col: int


def tokenize(text: str, filename: str) -> list[Token]:
    tokens: list[Token] = []
    line, line_start, pos, n = 1, 0, 0, len(text)
    match = _TOKEN_RE.match
    while pos < n:
        m = match(text, pos)
        if m is None:
            col = pos - line_start + 1
            ch = text[pos]
            what = "unterminated string" if ch == '"' else f"unexpected character {ch!r}"
            raise ParseError("cannot parse IR text", [Diagnostic(what, file=filename, line=line,
                                                                  col=col)])
        kind = m.lastgroup
        if kind == "nl":
            line += 1
            line_start = m.end()
        elif kind not in ("ws", "comment"):
            tokens.append(Token(kind, m.group(), line, pos - line_start + 1))
        pos = m.end()
    tokens.append(Token("eof", "", line, pos - line_start + 1))
    return tokens


# ============================================================================================
# Parser
# ============================================================================================

class _Abort(Exception):
    """Stops parsing of the current statement after a diagnostic was recorded."""


@dataclass
class _Stmt:
    results: list[tuple[str, Token]]
    op: str
    operands: list[tuple[str, Token]]
    attrs: dict
    types: list[tuple[TensorType, QuantParams | None, Layout | None]]
    scope: str
    loc: str
    tok: Token
    regions: list = field(default_factory=list)


@dataclass
class _Parser:
    tokens: list[Token]
    filename: str
    pos: int = 0
    diags: list[Diagnostic] = field(default_factory=list)
    # Results of statements that failed to parse: later uses are not reported again.
    poisoned: set[str] = field(default_factory=set)
    partial_results: list[str] = field(default_factory=list)

    # -- token helpers ---------------------------------------------------------------------
    @property
    def tok(self) -> Token:
        return self.tokens[self.pos]

    def error(self, message: str, tok: Token | None = None) -> _Abort:
        tok = tok or self.tok
        self.diags.append(Diagnostic(message, file=self.filename, line=tok.line, col=tok.col))
        return _Abort()

    def describe(self, tok: Token) -> str:
        return "end of input" if tok.kind == "eof" else f"'{tok.text}'"

    def next(self) -> Token:
        t = self.tokens[self.pos]
        if t.kind != "eof":
            self.pos += 1
        return t

    def at(self, text: str) -> bool:
        return self.tok.text == text and self.tok.kind in ("punct", "arrow", "ident")

    def accept(self, text: str) -> bool:
        if self.at(text):
            self.pos += 1
            return True
        return False

    def expect(self, text: str, context: str) -> Token:
        if not self.at(text):
            raise self.error(f"expected '{text}' {context}, found {self.describe(self.tok)}")
        return self.next()

    def expect_kind(self, kind: str, context: str) -> Token:
        if self.tok.kind != kind:
            raise self.error(f"expected {kind} {context}, found {self.describe(self.tok)}")
        return self.next()

    def skip_to_line_end(self, line: int) -> None:
        while self.tok.kind != "eof" and self.tok.line == line:
            self.pos += 1

    # -- values and types ------------------------------------------------------------------
    def unquote(self, tok: Token) -> str:
        """The name in a `%name`, `%"quoted name"`, `@name` or `@"quoted"` token."""
        body = tok.text[1:]
        return self.string(tok, body) if body.startswith('"') else body

    def string(self, tok: Token, text: str | None = None) -> str:
        """The value of a double-quoted string token (JSON escapes, the inverse of the
        printer's `json.dumps`). A literal control character is taken as itself; a bad
        escape or an escaped lone surrogate (not Unicode text) is a diagnostic."""
        text = tok.text if text is None else text
        try:
            value = json.loads(text, strict=False)
        except ValueError as e:
            raise self.error(f"bad string {_shorten(text)}: {getattr(e, 'msg', e)}", tok)
        bad = unicode_problem(value)
        if bad:
            raise self.error(f"bad string {_shorten(text)}: {bad}", tok)
        return value

    def parse_dtype(self) -> DType:
        t = self.tok
        if t.kind != "ident":
            raise self.error(f"expected a dtype, found {self.describe(t)}")
        try:
            d = DType.parse(t.text)
        except ValueError as e:
            raise self.error(str(e))
        self.next()
        return d

    def parse_type(self) -> TensorType:
        start = self.tok
        dtype = self.parse_dtype()
        self.expect("[", "to open the shape")
        dims: list = []
        if not self.at("]"):
            while True:
                t = self.next()
                if t.kind == "number" and re.fullmatch(r"\d{1,18}", t.text):
                    dims.append(int(t.text))
                elif t.kind == "ident" and not t.text.startswith("-"):
                    dims.append(t.text)
                elif t.text == "?":
                    dims.append("?")
                else:
                    raise self.error(f"expected a dim (size, '?' or symbol), found "
                                     f"{self.describe(t)}", t)
                if not self.accept(","):
                    break
        self.expect("]", "to close the shape")
        try:
            return TensorType(dtype, tuple(dims))
        except (TypeError, ValueError) as e:
            raise self.error(f"bad type: {e}", start)

    def parse_value_type(self):
        ttype = self.parse_type()
        quant = layout = None
        if self.at("quant"):
            quant = self.parse_quant()
        if self.at("layout"):
            layout = self.parse_layout()
        return ttype, quant, layout

    def parse_quant(self) -> QuantParams:
        start = self.next()
        self.expect("<", "after 'quant'")
        fields: dict = {}
        while True:
            key = self.expect_kind("ident", "(a quant field)")
            self.expect("=", f"after '{key.text}'")
            fields[key.text] = self.parse_attr_value()
            if not self.accept(","):
                break
        self.expect(">", "to close quant<...>")
        valid = {"scale", "zero_point", "axis", "bits", "signed", "narrow_range"}
        bad = sorted(set(fields) - valid)
        if bad:
            raise self.error(f"unknown quant field(s) {', '.join(bad)} (valid: "
                             f"{', '.join(sorted(valid))})", start)
        if "scale" not in fields or "zero_point" not in fields:
            raise self.error("quant<...> needs scale and zero_point", start)
        try:
            return QuantParams(tuple(fields["scale"]), tuple(fields["zero_point"]),
                               fields.get("axis"), fields.get("bits", 8), fields.get("signed", True),
                               fields.get("narrow_range", False))
        except (TypeError, ValueError, OverflowError) as e:
            raise self.error(f"bad quant params: {e}", start)

    def parse_layout(self) -> Layout:
        self.next()
        self.expect("<", "after 'layout'")
        axes = []
        while not self.at(">"):  # a scalar's layout is empty: layout<>
            t = self.expect_kind("ident", "(a mesh axis or _)")
            axes.append(None if t.text == "_" else t.text)
            if not self.accept(","):
                break
        self.expect(">", "to close layout<...>")
        return Layout(tuple(axes))

    # -- attributes ------------------------------------------------------------------------
    def parse_attr_value(self, depth: int = 0):
        t = self.tok
        if depth > MAX_NESTING:
            raise self.error(f"attribute value nested too deeply (over {MAX_NESTING} levels)")
        if t.kind == "number":
            self.next()
            try:
                return float(t.text) if any(c in t.text for c in ".eE") else int(t.text)
            except ValueError:      # an integer of more digits than Python converts
                raise self.error(f"number too long ({len(t.text)} characters)", t)
        if t.kind == "string":
            value = self.string(t)
            self.next()
            return value
        if t.kind == "ident":
            if t.text == "dense":
                return self.parse_dense()
            self.next()
            lit = {"true": True, "false": False, "none": None, "inf": math.inf,
                   "-inf": -math.inf, "nan": math.nan}
            if t.text in lit:
                return lit[t.text]
            try:
                return DType.parse(t.text)
            except ValueError:
                raise self.error(f"unknown attribute value '{t.text}' (expected a number, "
                                 f"string, true/false, none, a dtype, [...] or dense<...>)", t)
        if self.accept("["):
            items = []
            if not self.at("]"):
                while True:
                    items.append(self.parse_attr_value(depth + 1))
                    if not self.accept(","):
                        break
            self.expect("]", "to close the list")
            return tuple(items)
        raise self.error(f"expected an attribute value, found {self.describe(t)}")

    def parse_dense(self) -> np.ndarray:
        start = self.next()
        self.expect("<", "after 'dense'")
        ttype = self.parse_type()
        if not ttype.is_static:
            raise self.error("a dense constant needs a static shape", start)
        self.expect(":", "after the dense type")
        np_dtype = ttype.dtype.np
        count = ttype.num_elements
        if count * np_dtype.itemsize > MAX_CONSTANT_BYTES:
            raise self.error(f"constant {ttype} is too large: {count * np_dtype.itemsize:,} "
                             f"bytes (at most {MAX_CONSTANT_BYTES:,})", start)
        t = self.tok
        if t.kind == "hex":
            self.next()
            raw = t.text[2:]
            if len(raw) % 2:
                raise self.error("hex payload has an odd number of digits", t)
            data = bytes.fromhex(raw)
            want = count * np_dtype.itemsize
            if len(data) != want:
                raise self.error(f"hex payload has {len(data)} bytes, {ttype} needs {want}", t)
            arr = np.frombuffer(data, dtype=np_dtype.newbyteorder("<")).astype(np_dtype)
        elif self.at("splat"):
            self.next()
            vt = self.tok
            v = self.parse_attr_value()
            if not isinstance(v, (bool, int, float)):
                raise self.error(f"splat needs a number or true/false, found "
                                 f"{self.describe(vt)}", vt)
            try:
                arr = _checked_array([v], np_dtype, ttype.dtype)
                arr = np.full(ttype.shape, arr[0], dtype=np_dtype)
            except (TypeError, ValueError, OverflowError) as e:
                raise self.error(f"bad splat value for {ttype.dtype}: {e}", vt)
        elif self.at("..."):
            raise self.error("elided constant (printed with elide) cannot be parsed")
        else:
            vals = self.parse_attr_value()
            if not isinstance(vals, tuple):
                raise self.error("expected [values], splat or 0x... in dense<...>", t)
            if len(vals) != count:
                raise self.error(f"dense<{ttype}> needs {count} values, got {len(vals)}", t)
            try:
                arr = _checked_array(vals, np_dtype, ttype.dtype).reshape(ttype.shape)
            except (TypeError, ValueError, OverflowError) as e:
                raise self.error(f"bad dense values for {ttype.dtype}: {e}", t)
        self.expect(">", "to close dense<...>")
        return arr.reshape(ttype.shape)

    def parse_attr_dict(self) -> dict:
        attrs: dict = {}
        self.expect("{", "to open attributes")
        if not self.at("}"):
            while True:
                key = self.expect_kind("ident", "(an attribute name)")
                if key.text in attrs:
                    raise self.error(f"duplicate attribute '{key.text}'", key)
                self.expect("=", f"after attribute '{key.text}'")
                attrs[key.text] = self.parse_attr_value()
                if not self.accept(","):
                    break
        self.expect("}", "to close attributes")
        return attrs

    # -- statements and graphs ---------------------------------------------------------------
    def parse_value_ref(self, context: str) -> tuple[str, Token]:
        t = self.expect_kind("value", context)
        return self.unquote(t), t

    def parse_stmt(self) -> _Stmt:
        first = self.tok
        results = self.partial_results = []
        results.append(self.parse_value_ref("(a result)"))
        while self.accept(","):
            results.append(self.parse_value_ref("(a result)"))
        self.expect("=", "after the results")
        op_tok = self.expect_kind("ident", "(an op name)")
        if not has_op(op_tok.text):
            try:
                get_op(op_tok.text)
            except KeyError as e:
                raise self.error(str(e.args[0]), op_tok)
        operands = []
        if self.accept("("):
            if not self.at(")"):
                while True:
                    operands.append(self.parse_value_ref("(an operand)"))
                    if not self.accept(","):
                        break
            self.expect(")", "to close the operands")
        attrs = self.parse_attr_dict() if self.at("{") else {}
        self.expect(":", "before the result types")
        types = [self.parse_value_type()]
        while self.accept(","):
            types.append(self.parse_value_type())
        if len(types) != len(results):
            raise self.error(f"{len(results)} results but {len(types)} types", first)
        scope = loc = ""
        while self.tok.kind == "ident" and self.tok.text in ("scope", "loc"):
            key = self.next().text
            self.expect("=", f"after '{key}'")
            val = self.string(self.expect_kind("string", f"(the {key})"))
            if key == "scope":
                scope = val
            else:
                loc = val
        regions = []
        if self.accept("{"):  # the regions of a control-flow op, one graph each
            while self.at("graph"):
                regions.append(self.parse_graph())
            self.expect("}", "to close the regions")
        return _Stmt(results, op_tok.text, operands, attrs, types, scope, loc, first, regions)

    def parse_graph(self) -> Graph | None:
        self.expect("graph", "to start a graph")
        gname_tok = self.expect_kind("symbol", "(the graph name, e.g. @main)")
        graph = Graph(self.unquote(gname_tok))
        env: dict[str, Value] = {}
        defined_at: dict[str, Token] = {}
        self.expect("(", "to open the graph arguments")
        if not self.at(")"):
            while True:
                name, tok = self.parse_value_ref("(a graph argument)")
                self.expect(":", f"after argument %{name}")
                ttype, quant, layout = self.parse_value_type()
                if name in env:
                    self.error(f"argument %{name} defined twice", tok)
                v = graph.add_input(ttype, None if name.isdigit() else name, quant, layout)
                env[name], defined_at[name] = v, tok
                if not self.accept(","):
                    break
        self.expect(")", "to close the graph arguments")
        self.expect("->", "before the result types")
        self.expect("(", "to open the result types")
        ret_types = []
        if not self.at(")"):
            while True:
                ret_types.append((self.tok, self.parse_value_type()))
                if not self.accept(","):
                    break
        self.expect(")", "to close the result types")
        self.expect("{", "to open the graph body")

        stmts: list[_Stmt] = []
        while not self.at("return"):
            if self.tok.kind == "eof":
                raise self.error(f"unexpected end of input inside graph @{graph.name} "
                                 f"(missing 'return' and '}}')")
            if self.at("}"):
                raise self.error(f"graph @{graph.name} has no 'return'")
            line = self.tok.line
            try:
                stmts.append(self.parse_stmt())
            except _Abort:
                # Record and resynchronise at the next line so every problem is reported.
                self.poisoned.update(name for name, _ in self.partial_results)
                self.skip_to_line_end(line)
        ret_tok = self.next()
        returns = []
        if self.tok.kind == "value":
            returns.append(self.parse_value_ref("(a returned value)"))
            while self.accept(","):
                returns.append(self.parse_value_ref("(a returned value)"))
        self.expect("}", "to close the graph body")

        self.build(graph, stmts, env, defined_at)
        outs = []
        for name, tok in returns:
            v = env.get(name)
            if v is None:
                if name not in self.poisoned:
                    self.error(f"return of undefined value %{name}", tok)
            else:
                outs.append(v)
        if len(returns) != len(ret_types):
            self.error(f"graph @{graph.name} declares {len(ret_types)} results but returns "
                       f"{len(returns)}", ret_tok)
        elif len(outs) == len(returns):
            for (tok, (ttype, quant, layout)), v in zip(ret_types, outs):
                if (ttype, quant, layout) != (v.type, v.quant, v.layout):
                    self.error(f"declared result type {ttype} does not match the returned "
                               f"value's type {v.type}", tok)
        if not self.diags:
            graph.set_outputs(outs)
        return graph

    def build(self, graph: Graph, stmts: list[_Stmt], env: dict, defined_at: dict) -> None:
        """Creates the nodes in order. A value used before its definition is reported as a
        cycle (with its path) when the graph has one, else as a use before definition."""
        later = {name: (i, tok) for i, s in enumerate(stmts) for name, tok in s.results}
        for i, s in enumerate(stmts):
            operands, ok = [], True
            for name, tok in s.operands:
                v = env.get(name)
                if v is not None:
                    operands.append(v)
                    continue
                ok = False
                if name in self.poisoned:
                    continue
                if name in later:
                    cycle = self.find_cycle(stmts, later, i)
                    if cycle:
                        self.error(f"cycle through {' -> '.join('%' + c for c in cycle)}: "
                                   f"%{name} is used before it is defined", tok)
                    else:
                        self.error(f"%{name} is used before its definition on line "
                                   f"{later[name][1].line}", tok)
                else:
                    self.error(f"use of undefined value %{name}", tok)
            for name, tok in s.results:
                if name in env:
                    prev = defined_at[name]
                    self.error(f"%{name} is defined twice (first on line {prev.line})", tok)
                    ok = False
            if not ok:
                self.poisoned.update(name for name, _ in s.results)
                continue
            outs = [Value(t, None if name.isdigit() else name, quant=q, layout=l)
                    for (name, _), (t, q, l) in zip(s.results, s.types)]
            opdef = get_op(s.op)
            graph.append(Node(s.op, operands, outs, opdef.complete_attrs(s.attrs),
                              scope=s.scope, loc=s.loc, regions=s.regions))
            for (name, tok), v in zip(s.results, outs):
                env[name], defined_at[name] = v, tok

    @staticmethod
    def find_cycle(stmts: list[_Stmt], later: dict, start: int) -> list[str] | None:
        import networkx as nx

        g = nx.DiGraph()
        for i, s in enumerate(stmts):
            for name, _ in s.operands:
                if name in later:
                    g.add_edge(later[name][0], i, value=name)
        try:
            edges = nx.find_cycle(g, source=start)
        except nx.NetworkXNoCycle:
            return None
        names = [g.edges[u, v]["value"] for u, v in edges]
        return names + names[:1]

    def parse_module(self) -> Module:
        metadata = {}
        if self.at("module"):
            self.next()
            try:
                metadata = self.parse_attr_dict()
            except _Abort:
                pass
        graphs = []
        if self.tok.kind == "eof" and not self.diags:
            self.error("empty input: expected 'graph @name(...)'")
        while self.tok.kind != "eof":
            try:
                graphs.append(self.parse_graph())
            except _Abort:
                break
        if self.diags:
            raise ParseError(f"cannot parse {self.filename}", self.diags)
        module = Module(metadata=metadata)
        for g in graphs:
            if g.name in module.graphs:
                raise ParseError(f"cannot parse {self.filename}",
                                 [Diagnostic(f"graph @{g.name} defined twice", file=self.filename)])
            module.add_graph(g)
        return module


def _checked_array(vals, np_dtype, dtype: DType) -> np.ndarray:
    """`vals` as an array of `np_dtype`; ValueError for a value the dtype cannot hold (an
    integer out of range, a finite float that overflows to infinity, a non-number)."""
    if any(not isinstance(v, (bool, int, float)) for v in vals):
        raise ValueError("values must be numbers or true/false")
    if not dtype.is_float and any(isinstance(v, float) for v in vals):
        raise ValueError(f"{dtype} values must be integers")
    with np.errstate(over="ignore", invalid="ignore"):
        arr = np.array(vals, dtype=np_dtype)
    if dtype.is_float:
        flat = arr.reshape(-1)
        for k, v in enumerate(vals):
            if math.isfinite(float(v)) and not np.isfinite(flat[k]):
                raise ValueError(f"{v} overflows {dtype}")
    return arr


def _shorten(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


def unicode_problem(text: str) -> str | None:
    """Why `text` is not valid Unicode (a lone surrogate, which no file encoding can hold), or
    None."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        return (f"holds a lone surrogate U+{ord(text[e.start]):04X} at index {e.start} (not "
                f"valid Unicode)")
    return None


def parse_module(text: str, filename: str = "<input>") -> Module:
    """Parses `.tfir` text. Raises ParseError listing every problem with file:line:col."""
    return _Parser(tokenize(text, filename), filename).parse_module()


def parse_graph(text: str, filename: str = "<input>") -> Graph:
    """Parses text holding exactly one graph."""
    module = parse_module(text, filename)
    if len(module.graphs) != 1:
        raise ParseError(f"{filename}: expected one graph, found {len(module.graphs)}")
    return module.main
