"""Textual pass pipelines: `canonicalize,fold-constants,dce{aggressive=true},cse`.

A pipeline is a comma-separated list of pass names, each optionally followed by
`{key=value,...}`. Option values may be double-quoted to contain `,` `{` `}` or spaces. Every
problem (unknown pass, unknown option, bad value) is reported at once, with close matches.
The canonical printed form has no spaces: `parse_pipeline(s)` prints back to `s`.
"""

from __future__ import annotations

import json
import re

from ..ir.errors import Diagnostic
from .base import Pass, PipelineError, get_pass, unknown_option_message

_NAME_RE = re.compile(r"[A-Za-z0-9_.\-]+")


def _split_options(body: str, where: str) -> list[tuple[str, str]]:
    """Splits `k=v,k2="a,b"` into pairs, honouring double quotes."""
    pairs, i, n = [], 0, len(body)
    while i < n:
        m = re.compile(r"\s*([A-Za-z0-9_\-]+)\s*=\s*").match(body, i)
        if not m:
            raise PipelineError(f"bad option syntax in {where}: expected key=value at "
                                f"'{body[i:]}'")
        key, i = m.group(1), m.end()
        if i < n and body[i] == '"':
            m2 = re.compile(r'"(?:[^"\\]|\\.)*"').match(body, i)
            if not m2:
                raise PipelineError(f"unterminated quoted value for '{key}' in {where}")
            try:
                value = json.loads(m2.group())
            except ValueError as e:   # a bad escape (\x), a control character
                raise PipelineError(f"bad quoted value for '{key}' in {where}: "
                                    f"{getattr(e, 'msg', e)} in {m2.group()}") from None
            i = m2.end()
        else:
            j = body.find(",", i)
            j = n if j < 0 else j
            value, i = body[i:j].strip(), j
        pairs.append((key, value))
        while i < n and body[i] in " \t":
            i += 1
        if i < n:
            if body[i] != ",":
                raise PipelineError(f"bad option syntax in {where} at '{body[i:]}'")
            i += 1
    return pairs


def _split_elements(text: str) -> list[tuple[str, str | None]]:
    """`a,b{x=1,y="p,q"}` -> [("a", None), ("b", 'x=1,y="p,q"')]."""
    out, i, n = [], 0, len(text)
    while i < n:
        while i < n and text[i] in " \t\n,":
            i += 1
        if i >= n:
            break
        m = _NAME_RE.match(text, i)
        if not m:
            raise PipelineError(f"bad pipeline syntax at '{text[i:]}' (expected a pass name)")
        name, i = m.group(), m.end()
        while i < n and text[i] in " \t":
            i += 1
        body = None
        if i < n and text[i] == "{":
            j, quoted = i + 1, False
            while j < n and (quoted or text[j] != "}"):
                if text[j] == '"' and text[j - 1] != "\\":
                    quoted = not quoted
                j += 1
            if j >= n:
                raise PipelineError(f"unclosed '{{' in options of pass '{name}'")
            body, i = text[i + 1:j], j + 1
        while i < n and text[i] in " \t\n":
            i += 1
        if i < n and text[i] != ",":
            raise PipelineError(f"bad pipeline syntax after '{name}': expected ',' at "
                                f"'{text[i:]}'")
        out.append((name, body))
    return out


def parse_pipeline(text: str) -> list[Pass]:
    """Pass instances for a textual pipeline; PipelineError listing every problem."""
    passes, problems = [], []
    for name, body in _split_elements(text):
        try:
            cls = get_pass(name)
        except PipelineError as e:
            problems.append(Diagnostic(e.summary))
            continue
        values = {}
        try:
            pairs = _split_options(body, f"pass '{name}'") if body else []
        except PipelineError as e:
            problems.append(Diagnostic(e.summary))
            continue
        for key, raw in pairs:
            opt = cls.options.get(key)
            if opt is None:
                problems.append(Diagnostic(unknown_option_message(name, key, cls.options)))
                continue
            try:
                values[key] = opt.convert(raw)
            except ValueError as e:
                problems.append(Diagnostic(f"option '{key}' of pass '{name}': {e}"))
        if not problems:
            passes.append(cls(**values))
    if problems:
        raise PipelineError(f"invalid pass pipeline '{text}'", problems)
    return passes


def print_pipeline(passes: list[Pass]) -> str:
    """The canonical text of a pipeline."""
    return ",".join(p.pipeline_text() for p in passes)
