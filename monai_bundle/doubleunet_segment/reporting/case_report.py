"""The volumetry outputs of one whole-head case: which files, and the writers that make them.

Beside the label map, a whole-head hippocampus case gets ``volumes.json`` and ``volumes.csv``
(:mod:`.volumetry`), the one-page ``report.png`` (:mod:`.report_figure`), for DICOM input a TID 1500 ``sr.dcm``
referencing the SEG (:mod:`doubleunet_segment.data.dicom_sr`), and with ``--uncertainty`` the stage
disagreement map ``uncertainty.nii.gz``. The batch runner writes them together with the label map, all or
nothing (:func:`doubleunet_segment.inference.runner.write_outputs`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..data.atomic import atomic_write_text
from ..data.image_io import Volume
from ..segments import SegmentInfo
from .qc import quality_control
from .volumetry import VOLUMES_CSV, VOLUMES_JSON, Volumetry, measure, volumes_csv_text, volumes_json_text

__all__ = ["REPORT_PNG", "SR_DCM", "UNCERTAINTY_NIFTI", "CaseReport"]

REPORT_PNG = "report.png"
SR_DCM = "sr.dcm"
UNCERTAINTY_NIFTI = "uncertainty.nii.gz"


@dataclass
class CaseReport:
    """Volumes, quality verdict and the pictures' inputs of one case.

    Attributes:
        volumetry: volumes per structure and side, asymmetry, eTIV.
        qc: :func:`.qc.quality_control`'s result.
        volume: the input (its first channel is the report's image; its series, for DICOM, the SR's source).
        labels: (X, Y, Z) uint8 label map on the input's grid.
        segments: the label values' definitions (with laterality).
        disagreement: (X, Y, Z) float32 stage disagreement map, or None.
    """

    volumetry: Volumetry
    qc: dict[str, Any]
    volume: Volume
    labels: np.ndarray
    segments: list[SegmentInfo]
    disagreement: np.ndarray | None = None

    @classmethod
    def build(
        cls,
        volume: Volume,
        labels: np.ndarray,
        segments: list[SegmentInfo],
        registration: Any,
        disagreement: np.ndarray | None,
    ) -> CaseReport:
        """Measure ``labels`` (X, Y, Z) on ``volume``'s grid and judge the result.

        Args:
            volume: the input study.
            labels: its label map.
            segments: the label values' definitions.
            registration: the study's :class:`~doubleunet_segment.inference.localization.Registration` (its eTIV
                and plausibility), or None.
            disagreement: the (X, Y, Z) stage disagreement map in [0, 1], or None; its mean inside the labels
                feeds the verdict.
        """
        etiv_ml = None if registration is None else registration.etiv_ml()
        volumetry = measure(labels, volume.affine, segments, etiv_ml)
        inside = labels > 0
        mean_tv = float(disagreement[inside].mean()) if disagreement is not None and inside.any() else None
        qc = quality_control(volumetry, registration, mean_tv)
        return cls(volumetry, qc, volume, labels, segments, disagreement)

    def outputs(
        self, case_dir: Path, formats: set[str], planned: dict[str, Path], uncertainty: bool
    ) -> dict[str, Path]:
        """The report's files: kind -> path in ``case_dir``. ``planned`` is the label map's plan (the SR goes
        with a planned DICOM SEG; the figure with ``png``)."""
        out = {"volumes-json": case_dir / VOLUMES_JSON, "volumes-csv": case_dir / VOLUMES_CSV}
        if "png" in formats:
            out["report"] = case_dir / REPORT_PNG
        if "dicom-seg" in planned:
            out["dicom-sr"] = case_dir / SR_DCM
        if uncertainty and self.disagreement is not None:
            out["uncertainty"] = case_dir / UNCERTAINTY_NIFTI
        return out

    def write(self, kind: str, target: Path, staged: dict[str, Path]) -> None:
        """Write the report file ``kind`` to ``target`` (a fresh temporary path); ``staged`` holds the case's
        other temporary files (the SR references the SEG there).

        Raises:
            KeyError: an unknown ``kind``.
        """
        if kind == "volumes-json":
            atomic_write_text(target, volumes_json_text(self.volumetry, self.qc), overwrite=True)
        elif kind == "volumes-csv":
            atomic_write_text(target, volumes_csv_text(self.volumetry), overwrite=True)
        elif kind == "report":
            from .report_figure import report_png

            image = self.volume.array.mean(axis=0)
            report_png(
                image, self.labels, self.volume.affine, self.segments, self.volumetry, self.qc, target, overwrite=True
            )
        elif kind == "dicom-sr":
            from ..data.dicom_sr import write_volumetry_sr

            write_volumetry_sr(
                self.volume.series,
                staged["dicom-seg"],
                self.segments,
                self.volumetry,
                target,
                __version__,
                overwrite=True,
            )
        elif kind == "uncertainty":
            from ..data.nifti_io import write_nifti

            write_nifti(self.disagreement, self.volume.affine, target)
        else:
            raise KeyError(kind)
