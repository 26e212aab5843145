"""Release: promoting trained weights (ship), the TorchScript export, model-card figures and the demo.

The names below are imported on first use, so importing the package itself imports nothing heavy.
"""

from __future__ import annotations

import importlib
from typing import Any

_PUBLIC = {
    "export_torchscript": "torchscript_export",
    "half_precision": "ship",
    "summarise": "ship",
}

__all__ = list(_PUBLIC)


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(importlib.import_module(f".{_PUBLIC[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
