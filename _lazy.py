"""Lazy public names: the top-level modules (`tensorforge`, `tensorforge.quantization`,
`tensorforge.sharding`) expose names whose modules import TensorFlow, Keras or JAX only when
first used, so `import tensorforge` stays light."""

from __future__ import annotations

import importlib
from typing import Callable


def lazy_getattr(module_name: str, package: str, table: dict[str, tuple[str, str]],
                 namespace: dict) -> Callable[[str], object]:
    """A module-level `__getattr__` resolving `table[name] = (submodule, attribute)` relative
    to `package` on first access and caching the result in `namespace`."""
    def __getattr__(name: str):
        if name in table:
            module, attr = table[name]
            value = getattr(importlib.import_module(f"{package}.{module}"), attr)
            namespace[name] = value
            return value
        raise AttributeError(f"module '{module_name}' has no attribute {name!r}")
    return __getattr__
