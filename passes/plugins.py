"""Pass plugins: third-party packages (entry-point group `tensorforge.passes`) and single
files loaded with `--load-pass-plugin FILE.py`. Either registers passes with `@register_pass`
when imported."""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import sys
import traceback
from pathlib import Path

from ..ir.errors import ConversionError, Diagnostic

ENTRY_POINT_GROUP = "tensorforge.passes"


class PluginError(ConversionError):
    """A plugin could not be loaded (missing file, syntax error, error at import)."""


def _import_failure(what: str, exc: BaseException, path: str | None = None) -> PluginError:
    if isinstance(exc, SyntaxError):
        return PluginError(f"cannot load pass plugin {what}", [Diagnostic(
            f"syntax error: {exc.msg}", file=exc.filename or path or "", line=exc.lineno or 0,
            col=exc.offset or 0)])
    # Point at the plugin's own frame (not ours) so its author can find the line.
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if path is None or Path(f.filename) == Path(path)]
    where = frames[-1] if frames else None
    return PluginError(f"cannot load pass plugin {what}", [Diagnostic(
        f"{type(exc).__name__}: {exc}", file=where.filename if where else "",
        line=where.lineno if where else 0)])


def load_pass_plugin(path: str | Path) -> None:
    """Imports one Python file so its `@register_pass` classes become available."""
    path = Path(path)
    if not path.is_file():
        raise PluginError(f"pass plugin file not found: {path}")
    resolved = str(path.resolve())
    name = "tensorforge_plugin_" + hashlib.sha1(resolved.encode()).hexdigest()[:12]
    if name in sys.modules:
        return
    spec = importlib.util.spec_from_file_location(name, resolved)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        raise _import_failure(str(path), exc, resolved) from None


_entry_points_loaded = False


def load_entry_point_plugins() -> None:
    """Imports every installed `tensorforge.passes` entry point (once per process)."""
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    problems = []
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            ep.load()
        except Exception as exc:
            problems += _import_failure(f"'{ep.name}' ({ep.value})", exc).diagnostics
    if problems:
        raise PluginError("cannot load installed pass plugins", problems)
