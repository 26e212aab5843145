"""Inference: the predictor, the slice inferer, precision/backend choice, batching, the batch runner, the
persistent worker and the event protocol it speaks.

The names below are imported on first use, so importing the package itself imports nothing heavy.
"""

from __future__ import annotations

import importlib
from typing import Any

_PUBLIC = {
    "Predictor": "predictor",
    "Prediction": "predictor",
    "pick_device": "predictor",
    "DoubleUNetInferer": "inferer",
    "CaseResult": "runner",
    "segment_inputs": "runner",
    "segment_cases": "runner",
}

__all__ = list(_PUBLIC)


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(importlib.import_module(f".{_PUBLIC[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
