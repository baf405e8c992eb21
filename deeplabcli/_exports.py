"""Lazy re-exports: a package's public names, imported from their modules on first use.

Each package lists its public face explicitly (name → module), as timm's ``__init__`` files
do, but a name is imported only when it is used: importing a package, or a light module of it
(model cards, image decoding, output planning), never pays for torch unless the name needs it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(
    package: str, exports: Mapping[str, str]
) -> tuple[list[str], Callable[[str], Any], Callable[[], list[str]]]:
    """``__all__``, ``__getattr__`` and ``__dir__`` for ``package`` whose public names live in
    the submodules ``exports`` gives (name → module path relative to the package)."""
    namespace = importlib.import_module(package).__dict__

    def __getattr__(name: str) -> Any:
        if name in exports:
            value = getattr(importlib.import_module(f".{exports[name]}", package), name)
            namespace[name] = value
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    names = sorted(exports)
    return names, __getattr__, lambda: sorted({*names, *namespace.get("__all__", ())})
