"""The house rules that keep the code base readable as it grows: no import circles at all (not
only between sibling packages, which import-linter's contracts check, but between any two
modules), and every package shipped by the wheel."""

import tomllib
from pathlib import Path

import grimp
import networkx as nx

ROOT = Path(__file__).resolve().parent.parent


def _import_graph() -> nx.DiGraph:
    graph = grimp.build_graph("tensorforge", cache_dir=None)
    g = nx.DiGraph()
    for module in graph.modules:
        g.add_node(module)
        for imported in graph.find_modules_directly_imported_by(module):
            g.add_edge(module, imported)
    return g


def test_no_module_imports_itself_back():
    """Zero strongly connected components: no chain of imports (function-level ones included)
    leads from a module back to itself, so every module can be read and tested alone."""
    g = _import_graph()
    circles = [sorted(c) for c in nx.strongly_connected_components(g) if len(c) > 1]
    assert circles == [], "import circles:\n" + "\n".join(" <-> ".join(c) for c in circles)


def test_every_package_is_in_the_wheel():
    """Each directory with an `__init__.py` is listed in pyproject's setuptools packages (an
    unlisted one works in the editable install and is missing from a built wheel)."""
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
                 ["packages"])
    found = {"tensorforge"}
    for init in ROOT.rglob("__init__.py"):
        rel = init.parent.relative_to(ROOT)
        if rel.parts and rel.parts[0] in ("tests", "build", ".venv", "docs", "examples"):
            continue
        if any(p.startswith(".") or p == "node_modules" for p in rel.parts):
            continue
        found.add(".".join(("tensorforge", *rel.parts)) if rel.parts else "tensorforge")
    assert found - listed == set(), f"packages missing from pyproject: {sorted(found - listed)}"
    assert listed - found == set(), f"pyproject lists missing packages: {sorted(listed - found)}"
