"""DoubleU-Net and its parts: the network, its VGG19 encoder, weight files, the Keras weight mapping.

The names below are imported on first use, so importing the package itself imports nothing heavy.
"""

from __future__ import annotations

import importlib
from typing import Any

_PUBLIC = {
    "DoubleUNet": "doubleunet",
    "VGG19Encoder": "vgg19",
    "load_weights": "weights",
    "load_state": "weights",
    "half_storage": "weights",
    "load_keras_weights": "keras_weights",
}

__all__ = list(_PUBLIC)


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(importlib.import_module(f".{_PUBLIC[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
