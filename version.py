"""The installed tensorforge version, for artifact metadata (`producer`), readable from any
layer without importing the root package `tensorforge/__init__.py` (a leaf: standard library
only)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version


def package_version() -> str:
    """The version of the installed `tensorforge` distribution; "dev" when it is not
    installed (a source checkout on sys.path)."""
    try:
        return version("tensorforge")
    except PackageNotFoundError:
        return "dev"
