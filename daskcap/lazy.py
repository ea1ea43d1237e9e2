"""Package names loaded on first use (a module ``__getattr__``, PEP 562), so importing
one module of a package never imports the modules its ``__init__`` names, and no
module imports, through its package, a module that imports it back."""

from __future__ import annotations

import importlib
from collections.abc import Callable


def lazy_names(package: str, homes: dict[str, str]) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``: ``homes`` maps each public name to
    ``"module:attribute"`` (the attribute may differ from the name: an alias)."""

    def __getattr__(name: str) -> object:
        if name not in homes:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module, attribute = homes[name].split(":")
        return getattr(importlib.import_module(module), attribute)

    def __dir__() -> list[str]:
        return sorted([*vars(importlib.import_module(package)), *homes])

    return __getattr__, __dir__
