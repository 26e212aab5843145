"""Training: ignite handlers (checkpoints, resume, epoch log), losses, distributed training, evaluation.

The names below are imported on first use, so importing the package itself imports nothing heavy.
"""

from __future__ import annotations

from .._lazy import lazy_exports

_PUBLIC = {
    "StagewiseLoss": "losses",
    "CaseMetricsSaver": "evaluation",
    "case_metrics": "evaluation",
    "EpochLog": "handlers",
    "attach_checkpoints": "handlers",
    "start_from_weights": "handlers",
}

__all__ = list(_PUBLIC)

__getattr__, __dir__ = lazy_exports(__name__, _PUBLIC)
