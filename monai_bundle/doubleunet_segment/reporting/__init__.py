"""Reporting: structure volumes in mL, left/right asymmetry and % of eTIV, their files and a one-page figure.

The names below are imported on first use, so importing the package itself imports nothing heavy.
"""

from __future__ import annotations

from .._lazy import lazy_exports

_PUBLIC = {
    "Volumetry": "volumetry",
    "measure": "volumetry",
    "write_volumes": "volumetry",
    "volumes_json_text": "volumetry",
    "volumes_csv_text": "volumetry",
    "quality_control": "qc",
    "write_batch_summary": "volumetry",
    "report_png": "report_figure",
}

__all__ = list(_PUBLIC)

__getattr__, __dir__ = lazy_exports(__name__, _PUBLIC)
