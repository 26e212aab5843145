"""The one-page volumetry report picture: orthogonal views through each side's structures, the volumes and QC.

Layout (A4 portrait, 100 dpi): one row per side (left, then right) of axial, coronal and sagittal slices through
the centroid of that side's labels, cropped to a field of view around it, with the labels drawn in their segment
colours (:func:`doubleunet_segment.data.overlay.blend`); below them the volume table and the quality check's
verdict. Slices are voxel planes taken after reorienting to the closest RAS axes (an oblique acquisition is not
resampled) and shown in radiological convention (the patient's right on the viewer's left, anterior on the left
in the sagittal view, superior up), each edge marked with its direction; pixels keep their physical aspect
ratio. The image is windowed once for the whole volume at its 1st-99.9th intensity percentiles, so both sides
are shown alike. Drawn with matplotlib's Agg canvas directly (no pyplot), so no global backend is switched in
the caller's process.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..data.atomic import atomic_path
from ..data.overlay import blend
from ..segments import SegmentInfo
from .volumetry import Volumetry, side_of

__all__ = ["FIELD_OF_VIEW_MM", "report_png"]

FIELD_OF_VIEW_MM = 80.0  # square crop around a side's centroid: a hippocampus is about 45 mm long
WINDOW_PERCENTILES = (1.0, 99.9)  # 99.5 already saturates white matter in a head T1
PAGE_INCHES = (8.27, 11.69)  # A4 portrait
DPI = 100
VERDICT_COLOURS = {"pass": "#2e7d32", "fail": "#c62828"}  # any other verdict is drawn in amber
VIEWS = ("axial", "coronal", "sagittal")


def _canonical(image: np.ndarray, labels: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Image and labels permuted/flipped to the closest RAS axes, and their voxel sizes in mm (X, Y, Z)."""
    ornt = nib.orientations.io_orientation(affine)
    ras_affine = affine @ nib.orientations.inv_ornt_aff(ornt, image.shape)
    zooms = np.sqrt((ras_affine[:3, :3] ** 2).sum(axis=0))
    return (
        nib.orientations.apply_orientation(image, ornt),
        nib.orientations.apply_orientation(labels, ornt),
        zooms,
    )


def _windowed(image: np.ndarray) -> np.ndarray:
    """0..255 float32 (what ``blend`` shows unchanged), windowed at the volume's intensity percentiles."""
    finite = image[np.isfinite(image)]
    lo, hi = np.percentile(finite, WINDOW_PERCENTILES) if finite.size else (0.0, 1.0)
    scaled = np.clip((np.nan_to_num(image, nan=lo) - lo) / max(hi - lo, 1e-6), 0.0, 1.0) * 255.0
    return scaled.astype(np.float32)


def _views(
    image: np.ndarray, labels: np.ndarray, zooms: np.ndarray, centre: np.ndarray, segments: Sequence[SegmentInfo]
) -> list[tuple[np.ndarray, float, tuple[str, str]]]:
    """(picture, pixel aspect height/width, (left edge, right edge) letters) of the three views through ``centre``.

    ``blend`` returns rows = the second plane axis; flipping both axes puts superior (or anterior) up and the
    patient's right (or anterior) on the viewer's left.
    """
    half = [max(1, math.ceil(FIELD_OF_VIEW_MM / 2 / z)) for z in zooms]
    box = [slice(max(0, int(c) - h), min(n, int(c) + h + 1)) for c, h, n in zip(centre, half, labels.shape)]
    x, y, z = (int(c) for c in centre)
    planes = (
        (image[box[0], box[1], z], labels[box[0], box[1], z], zooms[1] / zooms[0], ("R", "L")),
        (image[box[0], y, box[2]], labels[box[0], y, box[2]], zooms[2] / zooms[0], ("R", "L")),
        (image[x, box[1], box[2]], labels[x, box[1], box[2]], zooms[2] / zooms[1], ("A", "P")),
    )
    return [(blend(plane[None], lab, segments)[::-1, ::-1], aspect, edges) for plane, lab, aspect, edges in planes]


def _table_rows(volumetry: Volumetry) -> list[list[str]]:
    rows = [[name, volumetry.structure_sides.get(name, ""), f"{ml:.3f}"] for name, ml in volumetry.structures.items()]
    percent = volumetry.percent_etiv or {}
    for side, ml in volumetry.sides.items():
        share = f" ({percent[side]:.3f} % eTIV)" if side in percent else ""
        rows.append([f"Total {side}", side, f"{ml:.3f}{share}"])
    asymmetry = "n/a (a side is empty)" if volumetry.asymmetry_index is None else f"{volumetry.asymmetry_index:+.2f} %"
    rows.append(["Asymmetry index (L - R) / mean", "", asymmetry])
    rows.append(["eTIV", "", "not given" if volumetry.etiv_ml is None else f"{volumetry.etiv_ml:.1f}"])
    return rows


def report_png(
    image: np.ndarray,
    labels: np.ndarray,
    affine: np.ndarray,
    segments: Sequence[SegmentInfo],
    volumetry: Volumetry,
    qc: dict[str, Any] | None,
    path: str | os.PathLike,
    *,
    title: str = "Hippocampal volumetry",
    overwrite: bool = False,
) -> Path:
    """Write the one-page report PNG (A4 portrait, 827 x 1169 pixels) and return ``path``.

    Args:
        image: (X, Y, Z) intensities (e.g. the T1) on the label map's grid.
        labels: (X, Y, Z) integer label values.
        affine: 4x4 voxel (i, j, k) -> RAS mm of both.
        segments: the label values' names, colours and lateralities; one row of views per side (left first),
            or a single row through all labels when no segment has a laterality.
        volumetry: the case's volumes (:func:`doubleunet_segment.reporting.volumetry.measure`), for the table.
        qc: the quality check's result: its ``verdict`` and ``reason`` are shown; None: "not run".
        path: the PNG file.
        title: the page's heading.
        overwrite: replace an existing file.

    Raises:
        ValueError: ``image`` and ``labels`` are not 3D arrays of one shape, or ``affine`` is not 4x4.
        FileExistsError: ``path`` exists and ``overwrite`` is False.
    """
    image, labels = np.asarray(image, dtype=np.float32), np.asarray(labels)
    affine = np.asarray(affine, dtype=np.float64)
    if image.ndim != 3 or image.shape != labels.shape:
        raise ValueError(f"image {image.shape} and labels {labels.shape} must be (X, Y, Z) arrays of one shape")
    if affine.shape != (4, 4):
        raise ValueError(f"affine must be 4x4, got shape {affine.shape}")
    image, labels, zooms = _canonical(_windowed(image), labels, affine)

    groups: dict[str, list[int]] = {}
    for info in segments:
        groups.setdefault(side_of(info) or "all structures", []).append(info.value)
    order = [g for g in ("left", "right") if g in groups] + [g for g in groups if g not in ("left", "right")]

    fig = Figure(figsize=PAGE_INCHES, dpi=DPI)
    FigureCanvasAgg(fig)
    fig.suptitle(title, fontsize=16, fontweight="bold", y=0.985)
    grid = fig.add_gridspec(
        len(order) + 2,
        3,
        height_ratios=[1.0] * len(order) + [0.8, 0.25],
        left=0.04,
        right=0.96,
        top=0.95,
        bottom=0.02,
        wspace=0.05,
        hspace=0.12,
    )
    for row, side in enumerate(order):
        voxels = np.argwhere(np.isin(labels, groups[side]))
        centre = voxels.mean(axis=0).round() if len(voxels) else np.array(labels.shape) // 2
        for col, (picture, aspect, (left_edge, right_edge)) in enumerate(
            _views(image, labels, zooms, centre, segments)
        ):
            ax = fig.add_subplot(grid[row, col])
            ax.imshow(picture, aspect=aspect, interpolation="nearest")
            ax.set_axis_off()
            empty = "" if len(voxels) else " (no voxels)"
            ax.set_title(f"{side.capitalize()}{empty}: {VIEWS[col]}", fontsize=10)
            for x_pos, align, letter in ((0.02, "left", left_edge), (0.98, "right", right_edge)):
                ax.text(
                    x_pos,
                    0.5,
                    letter,
                    transform=ax.transAxes,
                    color="white",
                    fontsize=9,
                    va="center",
                    ha=align,
                    bbox={"facecolor": "black", "edgecolor": "none", "alpha": 0.6, "pad": 1.5},
                )

    table_ax = fig.add_subplot(grid[len(order), :])
    table_ax.set_axis_off()
    table = table_ax.table(
        cellText=_table_rows(volumetry),
        colLabels=["Structure", "Side", "Volume (mL)"],
        colWidths=[0.5, 0.15, 0.35],
        cellLoc="left",
        loc="upper center",
    )
    table.auto_set_font_size(False)
    table.set_fontsize(9)
    table.scale(1.0, 1.4)
    colours = {s.name: s.color for s in segments}
    for row, name in enumerate(volumetry.structures, start=1):  # the structures' rows come first, under the header
        if name in colours:
            table[row, 0].set_facecolor((*(v / 255 for v in colours[name]), 0.5))

    qc_ax = fig.add_subplot(grid[len(order) + 1, :])
    qc_ax.set_axis_off()
    verdict = "not run" if qc is None else str(qc.get("verdict", "unknown"))
    reason = "" if qc is None else str(qc.get("reason", ""))
    colour = "black" if qc is None else VERDICT_COLOURS.get(verdict.lower(), "#e69500")
    qc_ax.text(0.0, 0.7, f"Quality check: {verdict}", fontsize=13, fontweight="bold", color=colour)
    if reason:
        qc_ax.text(0.0, 0.2, reason, fontsize=10, wrap=True)

    with atomic_path(path, overwrite=overwrite) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
    return Path(path)
