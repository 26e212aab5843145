"""Lazy public names for the package and its subpackages (PEP 562).

A package lists its public names and the module each lives in; a name is imported on first use. So
``import doubleunet_segment.inference.protocol`` (which the 3D Slicer side relies on) imports neither torch
nor MONAI, while ``from doubleunet_segment.inference import Predictor`` still works.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, public: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package`` whose public ``name`` lives in submodule ``public[name]``.

    Args:
        package: the package's ``__name__``.
        public: public name -> submodule path relative to the package (e.g. ``"inference.predictor"``).

    Returns:
        The module-level ``__getattr__`` and ``__dir__`` to assign in the package's ``__init__``.

    Raises:
        AttributeError: (from the returned ``__getattr__``) for a name that is neither public nor defined.
    """

    def __getattr__(name: str) -> Any:
        if name in public:
            return getattr(importlib.import_module(f".{public[name]}", package), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *public})

    return __getattr__, __dir__
