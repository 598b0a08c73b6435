"""Names of a package that are imported on first use (PEP 562 module ``__getattr__``).

Why: ``import tcpweave`` (and so ``tcpweave --help``) must not pay for numpy, pyarrow and
numba -- about a second of start-up -- before anything needs them. A package lists, per
module, the names it offers; :func:`attach` returns the ``__getattr__`` and ``__dir__``
that import a name's module the first time the name is looked up, and keep the value in
the package's namespace so that later look-ups are ordinary attribute reads. Type
checkers read the same names from the package's ``if TYPE_CHECKING:`` imports.
:func:`module` does the same for a module that a light module's annotations and
methods name (``np.ndarray``), so that ``typing.get_type_hints`` still resolves them.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any

__all__ = ["attach", "module"]


def attach(
    package: str, names_by_module: dict[str, tuple[str, ...]]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``: each name of ``names_by_module[module]``
    is ``module``'s attribute of that name, imported when first looked up."""
    module_of = {name: module for module, names in names_by_module.items() for name in names}

    def __getattr__(name: str) -> Any:
        module = module_of.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(module_of))

    return __getattr__, __dir__


class _Module:
    """Stands for a module not imported yet: its first attribute look-up imports it."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        return getattr(importlib.import_module(self._name), attr)

    def __repr__(self) -> str:
        return f"<module {self._name!r}, imported on first use>"


def module(name: str) -> Any:
    """A stand-in for module ``name`` that imports it when one of its attributes is read."""
    return _Module(name)
