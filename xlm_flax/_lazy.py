"""Lazy package namespaces (PEP 562): a package's public names are imported from its modules on first use.

`import xlm_flax` and `xlm-flax --help` therefore import no JAX, and no package `__init__` imports its modules at
import time, so the order in which subpackages are first touched can never create an import cycle.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any


def lazy_namespace(package: str, names: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """Returns `__getattr__` and `__dir__` for a package whose attribute `name` lives in module `names[name]`.

    Args:
        package: The package's `__name__`.
        names: Public name -> module path, absolute or relative to `package` (`".encoder"`). A module path of its
            own (the name is the module itself) is written with a trailing `:` (`".multihost:"`).
    """

    def __getattr__(name: str) -> Any:  # noqa: N807 (the module hook PEP 562 names)
        target = names.get(name)
        if target is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module_path, _, attribute = target.partition(":")
        module = importlib.import_module(module_path, package)
        value = module if target.endswith(":") else getattr(module, attribute or name)
        setattr(sys.modules[package], name, value)  # later lookups skip __getattr__
        return value

    def __dir__() -> list[str]:  # noqa: N807
        return sorted(names)

    return __getattr__, __dir__


__all__ = ["lazy_namespace"]
