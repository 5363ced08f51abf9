"""Module ``__getattr__`` factories: lazy package exports, and forwarding for modules that moved.

* :func:`lazy` — a package's public names, imported from its submodules on first use (so ``import ctseg.predict``
  costs nothing until a name is asked for, and packages never import each other in circles);
* :func:`forward` — a module that moved into a package keeps working for one release: each name asked of the
  old module is the new module's, with a ``DeprecationWarning`` that names the new path.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable, Sequence
from typing import Any


def lazy(package: str, submodules: Sequence[str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``: a name is looked up in each submodule's ``__all__``, in order."""

    def __getattr__(name: str) -> Any:
        if not name.startswith("__"):
            for sub in submodules:
                module = importlib.import_module(f"{package}.{sub}")
                if name in getattr(module, "__all__", ()):
                    return getattr(module, name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        names = set(submodules)
        for sub in submodules:
            names.update(getattr(importlib.import_module(f"{package}.{sub}"), "__all__", ()))
        return sorted(names)

    return __getattr__, __dir__


def forward(old: str, new: str) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``old`` that returns ``new``'s attribute, with a ``DeprecationWarning``."""

    def __getattr__(name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(f"module {old!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(new), name)
        warnings.warn(
            f"{old}.{name} moved to {new}.{name}; import it from there ({old} goes in the next release)",
            DeprecationWarning,
            stacklevel=2,
        )
        return value

    return __getattr__
