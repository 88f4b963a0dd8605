"""Pass plugins: third-party packages (entry-point group `tensorforge.passes`) and single
files loaded with `--load-pass-plugin FILE.py`. Either registers passes with `@register_pass`
when imported.

Plugins are opt-in: importing one runs its code, so an installed package's entry point is
imported only when asked for (`--plugins all` or `--plugins NAME,...` on the command line,
the TENSORFORGE_PLUGINS environment variable, or `load_entry_point_plugins()` in Python).
`installed_plugins()` lists them without importing anything."""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import os
import sys
import traceback
from pathlib import Path

from ..ir.errors import ConversionError, Diagnostic

ENTRY_POINT_GROUP = "tensorforge.passes"
PLUGINS_ENV = "TENSORFORGE_PLUGINS"   # "all", "none" or entry-point names, comma-separated


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
    if spec is None or spec.loader is None:
        raise PluginError(f"cannot load pass plugin {path}: not a Python source file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except KeyboardInterrupt:
        del sys.modules[name]
        raise
    except BaseException as exc:    # SystemExit too: a plugin must not end the compiler
        del sys.modules[name]
        raise _import_failure(str(path), exc, resolved) from None


def installed_plugins() -> list[importlib.metadata.EntryPoint]:
    """The installed `tensorforge.passes` entry points, by name, without importing them."""
    eps = {ep.name: ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}
    return [eps[n] for n in sorted(eps)]


_loaded_entry_points: set[str] = set()


def parse_plugin_request(text: str | None) -> list[str] | None:
    """`"all"` -> every installed plugin's name, `"a,b"` -> ["a", "b"], `"none"`, `""` or
    None -> None (load nothing). Unknown names raise PluginError listing the installed
    plugins."""
    names = [n.strip() for n in (text or "").split(",") if n.strip()]
    if not names or names == ["none"]:
        return None
    installed = [ep.name for ep in installed_plugins()]
    if "all" in names:
        return installed
    unknown = [n for n in names if n not in installed]
    if unknown:
        raise PluginError(f"unknown pass plugin{'s' if len(unknown) > 1 else ''} "
                          f"{', '.join(map(repr, unknown))}", [Diagnostic(
                              f"installed plugins: {', '.join(installed) or '(none)'}")])
    return names


def requested_plugins(flag: str | None) -> list[str] | None:
    """The entry points a command line asks for: `--plugins` if given, else the
    TENSORFORGE_PLUGINS environment variable (see parse_plugin_request)."""
    return parse_plugin_request(flag if flag is not None else os.environ.get(PLUGINS_ENV))


def unloaded_plugins_hint() -> str:
    """A hint for an unknown pass name when installed plugins were not asked for."""
    try:
        waiting = [ep.name for ep in installed_plugins() if ep.name not in _loaded_entry_points]
    except Exception:   # broken package metadata must not hide the real error
        return ""
    if not waiting:
        return ""
    return (f"; installed pass plugins ({', '.join(waiting)}) load only when asked: "
            f"--plugins all or {PLUGINS_ENV}=all")


def load_entry_point_plugins(names: "list[str] | str | None" = "all") -> None:
    """Imports installed `tensorforge.passes` entry points: all of them (the default, or
    "all"), or those named (each at most once per process). Nothing is imported unless this
    is called."""
    if names is None:
        return
    if isinstance(names, str):
        names = parse_plugin_request(names) or []
    eps = {ep.name: ep for ep in installed_plugins()}
    problems = []
    for name in names:
        if name in _loaded_entry_points:
            continue
        ep = eps.get(name)
        if ep is None:
            problems.append(Diagnostic(f"no installed pass plugin {name!r} (installed: "
                                       f"{', '.join(eps) or 'none'})"))
            continue
        try:
            ep.load()
        except KeyboardInterrupt:
            raise
        except BaseException as exc:
            problems += _import_failure(f"'{ep.name}' ({ep.value})", exc).diagnostics
            continue
        _loaded_entry_points.add(name)
    if problems:
        raise PluginError("cannot load installed pass plugins", problems)
