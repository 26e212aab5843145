"""Volumes of labelled structures in mL, summed per side, with the left/right asymmetry index and % of eTIV.

A structure's volume is its voxel count times the voxel volume, ``|det(affine[:3, :3])|`` mm³ (exact for any
voxel size, shear or orientation of the label map's grid), divided by 1000 to give mL. A side (``left`` or
``right``) sums the structures whose :class:`~doubleunet_segment.segments.SegmentInfo` has that laterality,
e.g. the anterior and posterior hippocampus of one side.

Asymmetry index, in percent: ``AI = 100 * (L - R) / ((L + R) / 2)``, the signed index of the ENIGMA subcortical
asymmetry study (Guadalupe et al., "Human subcortical brain asymmetries in 15,847 people worldwide reveal effects
of age and sex", Brain Imaging Behav 2017;11(5):1497-1514). Positive: the left side is larger.

Percent of eTIV: ``100 * side mL / eTIV mL``, the head-size normalisation of hippocampal volumetry; the eTIV
(estimated total intracranial volume, e.g. FreeSurfer's atlas-scaling estimate: Buckner et al., NeuroImage
2004;23(2):724-738) is measured elsewhere and given by the caller.

Files: :func:`write_volumes` writes one case's ``volumes.json`` and ``volumes.csv``; :func:`write_batch_summary`
one CSV row per case. All writes are atomic.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..data.atomic import atomic_write_text
from ..segments import LEFT, RIGHT, SegmentInfo

__all__ = [
    "VOLUMES_CSV",
    "VOLUMES_JSON",
    "Volumetry",
    "measure",
    "side_of",
    "volumes_csv_text",
    "volumes_json_text",
    "write_batch_summary",
    "write_volumes",
]

VOLUMES_JSON = "volumes.json"
VOLUMES_CSV = "volumes.csv"
SIDES = {LEFT[:2]: "left", RIGHT[:2]: "right"}  # (code value, scheme) -> side name
MM3_PER_ML = 1000.0


@dataclass
class Volumetry:
    """One case's volumes.

    Attributes:
        structures: segment name -> volume in mL, every segment of the label map's definition (0.0 when empty).
        sides: ``"left"`` / ``"right"`` -> mL summed over the structures of that laterality; only the sides that
            some segment has (empty for segments without laterality).
        asymmetry_index: percent, ``100 * (L - R) / ((L + R) / 2)``; None when either side is absent or empty.
        etiv_ml: estimated total intracranial volume in mL, as the caller gave it; None when not given.
        percent_etiv: side -> ``100 * side mL / eTIV``; None without an eTIV.
        structure_sides: segment name -> its side, for the structures that have a laterality (so that the files
            written from a Volumetry alone can say which side each structure is on).
    """

    structures: dict[str, float]
    sides: dict[str, float]
    asymmetry_index: float | None
    etiv_ml: float | None
    percent_etiv: dict[str, float] | None
    structure_sides: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict with the attribute names as keys."""
        return dataclasses.asdict(self)


def side_of(info: SegmentInfo) -> str | None:
    """``"left"``, ``"right"`` or None (no laterality) for a segment.

    Raises:
        ValueError: the segment's laterality is neither Left nor Right (e.g. Bilateral).
    """
    if info.laterality is None:
        return None
    side = SIDES.get(tuple(info.laterality[:2]))
    if side is None:
        raise ValueError(f"segment {info.name!r}: laterality {info.laterality} is neither Left nor Right")
    return side


def measure(
    labels: np.ndarray, affine: np.ndarray, segments: Sequence[SegmentInfo], etiv_ml: float | None = None
) -> Volumetry:
    """Volumes of each segment of ``labels`` and of each side.

    Args:
        labels: (X, Y, Z) integer label values (0 background).
        affine: 4x4 voxel (i, j, k) -> RAS mm of the label map's grid.
        segments: the label values' definitions; each one's ``laterality`` puts it on a side.
        etiv_ml: the case's estimated total intracranial volume in mL, for :attr:`Volumetry.percent_etiv`.

    Raises:
        ValueError: ``labels`` is not a 3D integer array, holds negative values or values without a segment;
            ``affine`` is not 4x4 or its voxel volume is 0; ``etiv_ml`` is not positive; a segment's laterality is
            neither Left nor Right.
    """
    labels = np.asarray(labels)
    if labels.ndim != 3 or not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == bool):
        raise ValueError(f"labels must be an (X, Y, Z) integer array, got {labels.dtype} of shape {labels.shape}")
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4):
        raise ValueError(f"affine must be 4x4, got shape {affine.shape}")
    voxel_mm3 = abs(float(np.linalg.det(affine[:3, :3])))
    if voxel_mm3 == 0.0:
        raise ValueError("the affine is singular: its voxels have no volume")
    if etiv_ml is not None and not etiv_ml > 0:
        raise ValueError(f"eTIV must be a positive volume in mL, got {etiv_ml}")
    if labels.size and labels.min() < 0:
        raise ValueError(f"labels hold negative values (minimum {labels.min()})")
    counts = np.bincount(labels.ravel().astype(np.int64), minlength=1)
    known = {s.value for s in segments}
    unknown = sorted(set(np.flatnonzero(counts).tolist()) - known - {0})
    if unknown:
        raise ValueError(f"label values {unknown} have no segment definition (defined: {sorted(known)})")

    structures: dict[str, float] = {}
    sides: dict[str, float] = {}
    structure_sides: dict[str, str] = {}
    for info in segments:
        ml = float(counts[info.value]) * voxel_mm3 / MM3_PER_ML if info.value < len(counts) else 0.0
        structures[info.name] = ml
        side = side_of(info)
        if side is not None:
            sides[side] = sides.get(side, 0.0) + ml
            structure_sides[info.name] = side
    left, right = sides.get("left", 0.0), sides.get("right", 0.0)
    asymmetry = 100.0 * (left - right) / ((left + right) / 2.0) if left > 0 and right > 0 else None
    percent = None if etiv_ml is None else {side: 100.0 * ml / etiv_ml for side, ml in sides.items()}
    etiv = None if etiv_ml is None else float(etiv_ml)
    return Volumetry(structures, sides, asymmetry, etiv, percent, structure_sides)


def _csv_text(rows: list[list[Any]]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return buffer.getvalue()


def _number(value: float | None, digits: int) -> str:
    """A CSV cell: fixed decimals, empty for a missing value."""
    return "" if value is None else f"{value:.{digits}f}"


def volumes_json_text(volumetry: Volumetry, qc: dict[str, Any] | None) -> str:
    """``volumes.json``: :meth:`Volumetry.to_dict` plus ``"qc"`` (the quality check's result as given, e.g.
    ``{"verdict": "pass", "reason": ""}``) when ``qc`` is given."""
    document = volumetry.to_dict() if qc is None else {**volumetry.to_dict(), "qc": qc}
    return json.dumps(document, indent=2) + "\n"


def volumes_csv_text(volumetry: Volumetry) -> str:
    """``volumes.csv``: the columns ``measure``, ``side``, ``value``, ``unit``; one row per structure (mL, 4
    decimals: 0.1 µL), then each side's total (mL), the asymmetry index (%), the eTIV (mL) and each side's % of
    eTIV; a missing value is an empty cell."""
    rows: list[list[Any]] = [["measure", "side", "value", "unit"]]
    for name, ml in volumetry.structures.items():
        rows.append([name, volumetry.structure_sides.get(name, ""), _number(ml, 4), "mL"])
    rows += [["total", side, _number(ml, 4), "mL"] for side, ml in volumetry.sides.items()]
    rows.append(["asymmetry index", "", _number(volumetry.asymmetry_index, 3), "%"])
    rows.append(["eTIV", "", _number(volumetry.etiv_ml, 4), "mL"])
    for side in volumetry.sides:
        percent = None if volumetry.percent_etiv is None else volumetry.percent_etiv.get(side)
        rows.append(["total / eTIV", side, _number(percent, 4), "%"])
    return _csv_text(rows)


def write_volumes(
    volumetry: Volumetry, qc: dict[str, Any] | None, folder: str | os.PathLike, *, overwrite: bool = False
) -> dict[str, Path]:
    """Write one case's ``volumes.json`` (:func:`volumes_json_text`) and ``volumes.csv``
    (:func:`volumes_csv_text`) into ``folder`` (created when missing), each atomically.

    Args:
        volumetry: the case's volumes.
        qc: the quality check's result, or None.
        folder: the case's output folder.
        overwrite: replace existing files.

    Returns:
        ``{"json": path, "csv": path}``.

    Raises:
        FileExistsError: a file exists and ``overwrite`` is False.
    """
    folder = Path(folder)
    paths = {"json": folder / VOLUMES_JSON, "csv": folder / VOLUMES_CSV}
    atomic_write_text(paths["json"], volumes_json_text(volumetry, qc), overwrite=overwrite)
    atomic_write_text(paths["csv"], volumes_csv_text(volumetry), overwrite=overwrite)
    return paths


def write_batch_summary(
    rows: Sequence[tuple[str, Volumetry, dict[str, Any] | None]], path: str | os.PathLike, *, overwrite: bool = False
) -> Path:
    """Write a batch's volumes as one CSV row per case and return ``path``.

    Columns: ``case``; ``<structure> mL`` for every structure of any case, in first-seen order (with the
    four-label hippocampus model: left anterior, left posterior, right anterior, right posterior); ``left mL``,
    ``right mL``; ``asymmetry index %``; ``eTIV mL``; ``left % eTIV``, ``right % eTIV``; ``qc verdict``,
    ``qc reason`` (the ``verdict`` and ``reason`` of each case's quality check). A value a case lacks is empty.

    Args:
        rows: ``(case name, volumes, quality check result or None)`` per case.
        path: the CSV file.
        overwrite: replace an existing file.

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is False.
    """
    structures = list(dict.fromkeys(name for _, volumetry, _ in rows for name in volumetry.structures))
    header = ["case", *(f"{name} mL" for name in structures), "left mL", "right mL", "asymmetry index %"]
    header += ["eTIV mL", "left % eTIV", "right % eTIV", "qc verdict", "qc reason"]
    table: list[list[Any]] = [header]
    for case, volumetry, qc in rows:
        percent = volumetry.percent_etiv or {}
        qc = qc or {}
        table.append(
            [
                case,
                *(_number(volumetry.structures.get(name), 4) for name in structures),
                _number(volumetry.sides.get("left"), 4),
                _number(volumetry.sides.get("right"), 4),
                _number(volumetry.asymmetry_index, 3),
                _number(volumetry.etiv_ml, 4),
                _number(percent.get("left"), 4),
                _number(percent.get("right"), 4),
                qc.get("verdict", ""),
                qc.get("reason", ""),
            ]
        )
    return atomic_write_text(path, _csv_text(table), overwrite=overwrite)
