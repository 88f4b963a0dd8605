"""The tensorforge version, for artifact metadata (`producer`, TF.js `convertedBy`), readable
from any layer without importing the root package `tensorforge/__init__.py` (a leaf: standard
library only)."""

from __future__ import annotations

import functools
from importlib.metadata import PackageNotFoundError, version

__version__ = "0.1.0"   # keep equal to pyproject.toml's [project] version


@functools.lru_cache(maxsize=1)
def package_version() -> str:
    """The version of the installed `tensorforge` distribution, else this source tree's
    `__version__` (a checkout on sys.path that is not installed). Read once per process: the
    distribution lookup scans sys.path on every call."""
    try:
        return version("tensorforge")
    except PackageNotFoundError:
        return __version__
