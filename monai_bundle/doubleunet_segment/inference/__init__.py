"""Inference: the predictor, the slice inferer, precision/backend choice, batching, the batch runner, the
persistent worker and the event protocol it speaks.

The names below are imported on first use, so importing the package itself imports nothing heavy.
"""

from __future__ import annotations

from .._lazy import lazy_exports

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

__getattr__, __dir__ = lazy_exports(__name__, _PUBLIC)
