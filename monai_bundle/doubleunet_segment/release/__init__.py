"""Release: promoting trained weights (ship), the TorchScript export, model-card figures and the demo.

The names below are imported on first use, so importing the package itself imports nothing heavy.
"""

from __future__ import annotations

from .._lazy import lazy_exports

_PUBLIC = {
    "export_torchscript": "torchscript_export",
    "half_precision": "ship",
    "summarise": "ship",
}

__all__ = list(_PUBLIC)

__getattr__, __dir__ = lazy_exports(__name__, _PUBLIC)
