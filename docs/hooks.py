"""MkDocs hook: every public name the API reference renders must have a docstring.

mkdocstrings renders an undocumented object as a bare signature without complaint; this hook
imports each object named by a `::: identifier` directive and logs a warning for every public
member (module members in `__all__` or defined there, public methods and properties of
classes) that has no docstring of its own. `mkdocs build --strict` turns the warnings into a
failed build, which is how `make docs` and the test suite catch them.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import logging
import re

# Loggers under "mkdocs." are the ones strict mode counts.
log = logging.getLogger("mkdocs.hooks.docstrings")

_DIRECTIVE = re.compile(r"^:::\s+([\w.]+)", re.MULTILINE)


def on_page_markdown(markdown, page, **_):
    """Checks the objects of every `:::` directive on the page; returns the page unchanged."""
    for ident in _DIRECTIVE.findall(markdown):
        try:
            obj = _resolve(ident)
        except (ImportError, AttributeError) as e:
            log.warning(f"{page.file.src_path}: cannot import {ident}: {e}")
            continue
        for name in _undocumented(ident, obj):
            log.warning(f"{page.file.src_path}: public name {name} has no docstring")
    return markdown


def _resolve(ident: str):
    """The object a dotted path names: the longest importable module prefix, then attributes."""
    parts = ident.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            if i == 1:
                raise
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(ident)


def _own_doc(obj) -> str:
    """The object's own docstring (a dataclass's generated signature does not count)."""
    doc = getattr(obj, "__doc__", None) or ""
    if inspect.isclass(obj) and dataclasses.is_dataclass(obj) and \
            doc.startswith(f"{obj.__name__}("):
        return ""
    return doc.strip()


def _undocumented(path: str, obj) -> list[str]:
    missing = [] if _own_doc(obj) else [path]
    if inspect.ismodule(obj):
        names = getattr(obj, "__all__", None)
        if names is None:
            names = [n for n, v in vars(obj).items() if not n.startswith("_")
                     and getattr(v, "__module__", None) == obj.__name__]
        for name in names:
            member = getattr(obj, name)
            if inspect.ismodule(member) or not (inspect.isclass(member) or callable(member)):
                continue  # submodules are documented on their own; constants need no docstring
            missing += _undocumented(f"{path}.{name}", member)
    elif inspect.isclass(obj):
        for name, member in vars(obj).items():
            if name.startswith("_"):
                continue
            target = member.fget if isinstance(member, property) else \
                getattr(member, "__func__", member)
            if not inspect.isfunction(target):
                continue
            # An override documented on a base class (e.g. Pass.run) inherits its doc.
            if not (target.__doc__ or "").strip() and not _inherited_doc(obj, name):
                missing.append(f"{path}.{name}")
    return missing


def _inherited_doc(cls, name: str) -> bool:
    for base in cls.__mro__[1:]:
        member = vars(base).get(name)
        if member is not None:
            target = member.fget if isinstance(member, property) else \
                getattr(member, "__func__", member)
            return bool((getattr(target, "__doc__", None) or "").strip())
    return False
