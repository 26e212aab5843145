"""How an engine result becomes Slicer segments: names, colours, terminology, thresholds, slices, ROIs.

The effect and the panel read the engine's ``segments.json`` and label map back into a segmentation the
user already works on. They must never delete or overwrite the user's segments, so every new segment gets
a name not yet taken; and each keeps the DICOM codes from the engine so a DICOM SEG export carries them.
Arrays here are in NIfTI voxel order (I, J, K) unless named ``*_kji`` (Slicer's ``arrayFromVolume`` order).

Concepts the engine also has carry the engine's names and fields: :class:`SegmentInfo`
(``doubleunet_segment.segments``), :class:`Prediction` (a ``doubleunet_segment`` ``Prediction`` as written to
a case folder) and :func:`keep_largest_components` (``doubleunet_segment.transforms``). They are re-implemented,
not imported, because Slicer's own process has no torch and no bundle on ``sys.path``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

# Context names as Slicer's DICOM terminology files call them (the same as the engine's .seg.nrrd writer).
TERMINOLOGY_CONTEXT = "Segmentation category and type - DICOM master list"
ANATOMIC_CONTEXT = "Anatomic codes - DICOM master list"


Code3 = tuple[str, str, str]  # (code value, coding scheme designator, code meaning), as the engine writes codes


@dataclass(frozen=True)
class SegmentInfo:
    """One label value of the engine's label map, as segments.json describes it (the engine's ``SegmentInfo``)."""

    value: int
    name: str
    color: tuple[int, int, int]  # RGB 0-255, as the engine stores it
    category: Code3
    type: Code3
    type_modifier: Code3 | None = None
    laterality: Code3 | None = None  # (value, scheme, meaning) of Left or Right (DICOM CID 244), else None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SegmentInfo:
        """One entry of segments.json (the engine's ``SegmentInfo.to_dict``)."""
        modifier = data.get("type_modifier")
        laterality = data.get("laterality")
        return cls(
            value=int(data["value"]),
            name=str(data["name"]),
            color=tuple(int(c) for c in data["color"]),  # type: ignore[arg-type]
            category=tuple(str(c) for c in data["category"]),  # type: ignore[arg-type]
            type=tuple(str(c) for c in data["type"]),  # type: ignore[arg-type]
            type_modifier=tuple(str(c) for c in modifier) if modifier else None,  # type: ignore[arg-type]
            laterality=tuple(str(c) for c in laterality) if laterality else None,  # type: ignore[arg-type]
        )

    def to_dict(self) -> dict[str, Any]:
        """Inverse of :meth:`from_dict`, the engine's JSON form (lists instead of tuples)."""
        out: dict[str, Any] = {
            "value": self.value,
            "name": self.name,
            "color": list(self.color),
            "category": list(self.category),
            "type": list(self.type),
        }
        if self.type_modifier is not None:
            out["type_modifier"] = list(self.type_modifier)
        if self.laterality is not None:
            out["laterality"] = list(self.laterality)
        return out

    @property
    def slicer_color(self) -> tuple[float, float, float]:
        """RGB 0-1, as ``vtkSegmentation.AddEmptySegment`` and ``vtkSegment.SetColor`` take it."""
        r, g, b = (c / 255.0 for c in self.color)
        return (r, g, b)

    @property
    def terminology(self) -> str:
        return terminology_entry(self.category, self.type, self.type_modifier, self.laterality)


@dataclass
class Prediction:
    """The engine's prediction for one case as its case folder holds it (segments.json and the files it names)."""

    folder: Path
    segments: list[SegmentInfo]
    labelmap: Path
    probabilities: Path | None
    model: str = ""
    device: str = ""
    device_reason: str = ""
    threshold: float | None = None
    largest_component: bool = False  # the engine kept one piece per structure; re-thresholding must too
    voxels: dict[str, int] = field(default_factory=dict)
    volumetry: dict[str, Any] | None = None  # volumes.json of a whole-head case: volumes, asymmetry, eTIV, qc


def volumetry_summary(volumetry: dict[str, Any]) -> str:
    """The lines the module panel shows for a whole-head case's ``volumes.json``: each side's volume (mL) with
    its structures, the asymmetry index and % of eTIV when known, and the quality verdict with its reason."""
    lines = []
    structures = volumetry.get("structures", {})
    sides_of = volumetry.get("structure_sides", {})
    percent = volumetry.get("percent_etiv") or {}
    for side, ml in volumetry.get("sides", {}).items():
        parts = ", ".join(f"{name} {structures[name]:.2f}" for name in structures if sides_of.get(name) == side)
        share = f"; {percent[side]:.3f} % of eTIV" if side in percent else ""
        lines.append(f"{side.capitalize()} hippocampus: {ml:.2f} mL ({parts}){share}")
    if volumetry.get("asymmetry_index") is not None:
        lines.append(f"Asymmetry index (L - R) / mean: {volumetry['asymmetry_index']:+.1f} %")
    if volumetry.get("etiv_ml") is not None:
        lines.append(f"eTIV: {volumetry['etiv_ml']:.0f} mL")
    qc = volumetry.get("qc") or {}
    if qc:
        lines.append(f"QC: {qc.get('verdict', '?')}" + (f" ({qc['reason']})" if qc.get("reason") else ""))
    return "\n".join(lines)


def _code(code: Sequence[str] | None) -> str:
    """Slicer orders a code scheme^value^meaning; the engine stores (value, scheme, meaning)."""
    if not code:
        return "^^"
    value, scheme, meaning = code
    return f"{scheme}^{value}^{meaning}"


def terminology_entry(
    category: Sequence[str],
    type_: Sequence[str],
    type_modifier: Sequence[str] | None = None,
    laterality: Sequence[str] | None = None,
) -> str:
    """A serialized Slicer terminology entry: context~category~type~modifier~anatomic context~region~modifier.

    A ``laterality`` makes the structure itself (``type_``) the anatomic region and the side its modifier.
    Slicer's own DICOM master list puts a hippocampus's side in the type modifier slot, but an entry holds one
    type modifier and anterior/posterior already takes it; the region slots are where the engine's DICOM SEG
    carries the side (AnatomicRegionSequence + AnatomicRegionModifierSequence), so a result imported here and the
    same result loaded from its DICOM SEG through dcmqi get the same entry. "Anatomic codes - DICOM master list"
    lists Hippocampus with exactly the Left/Right modifiers.
    """
    region = type_ if laterality else None
    return "~".join(
        [
            TERMINOLOGY_CONTEXT,
            _code(category),
            _code(type_),
            _code(type_modifier),
            ANATOMIC_CONTEXT,
            _code(region),
            _code(laterality),
        ]
    )


def read_result(folder: str | Path) -> Prediction:
    """The engine's case folder (``segments.json`` plus the files it names)."""
    folder = Path(folder)
    info = json.loads((folder / "segments.json").read_text(encoding="utf-8"))
    segments = [SegmentInfo.from_dict(s) for s in info["segments"]]
    files = info.get("files", {})
    probabilities = folder / files["probabilities"] if "probabilities" in files else None
    return Prediction(
        folder=folder,
        segments=segments,
        labelmap=folder / files.get("nifti", "segmentation.nii.gz"),
        probabilities=probabilities,
        model=str(info.get("model", "")),
        device=str(info.get("device", "")),
        device_reason=str(info.get("device_reason", "")),
        threshold=info.get("threshold"),
        largest_component=bool(info.get("largest_component", False)),
        voxels={str(k): int(v) for k, v in info.get("voxels", {}).items()},
        volumetry=json.loads((folder / files["volumes-json"]).read_text(encoding="utf-8"))
        if "volumes-json" in files
        else None,
    )


def unique_name(name: str, taken: Iterable[str]) -> str:
    """``name``, or ``name 2``, ``name 3``... whichever is free: a new result never hides an old segment."""
    taken = set(taken)
    if name not in taken:
        return name
    n = 2
    while f"{name} {n}" in taken:
        n += 1
    return f"{name} {n}"


@dataclass(frozen=True)
class ImportItem:
    """Label ``value`` of the result goes to a new segment ``name`` (or into the target segment)."""

    value: int
    name: str
    segment: SegmentInfo


@dataclass
class ImportPlan:
    items: list[ImportItem]
    into_segment: str | None = None  # a segment id: all foreground goes there, nothing new is created
    skipped: list[str] = field(default_factory=list)  # segment names with no voxels


def plan_import(
    segments: Sequence[SegmentInfo],
    existing_names: Iterable[str],
    voxels: dict[str, int] | None = None,
    into_segment: str | None = None,
    keep_empty: bool = False,
) -> ImportPlan:
    """Which label becomes which segment; empty labels are skipped (and reported) unless ``keep_empty``."""
    taken = set(existing_names)
    items, skipped = [], []
    for segment in segments:
        if voxels is not None and voxels.get(segment.name, 1) == 0 and not keep_empty:
            skipped.append(segment.name)
            continue
        name = segment.name if into_segment else unique_name(segment.name, taken)
        taken.add(name)
        items.append(ImportItem(segment.value, name, segment))
    return ImportPlan(items, into_segment, skipped)


def labels_from_probabilities(
    probabilities: np.ndarray, threshold: float, largest_component: bool = False
) -> np.ndarray:
    """Label map (I, J, K) from the engine's probabilities.nii.gz data, as the engine itself makes it.

    A binary model's file is (I, J, K): foreground where p >= threshold. A C-class model's is (I, J, K, C):
    argmax with the background weighted by t / (1 - t), so 0.5 gives the engine's plain argmax and, with
    two classes, the rule is exactly "foreground where p >= t": one slider works for both kinds of model.
    ``largest_component`` (the result's flag) keeps each label's largest 26-connected piece, as the engine does.
    """
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must lie between 0 and 1, got {threshold}")
    p = np.asarray(probabilities, dtype=np.float32)
    if p.ndim == 3:
        labels, classes = (p >= threshold).astype(np.uint8), 1
    elif p.ndim == 4:
        weighted = p.copy()
        weighted[..., 0] *= threshold / (1.0 - threshold)
        labels, classes = weighted.argmax(axis=-1).astype(np.uint8), p.shape[-1] - 1
    else:
        raise ValueError(f"expected (I, J, K) or (I, J, K, C) probabilities, got shape {p.shape}")
    return keep_largest_components(labels, classes) if largest_component else labels


def keep_largest_components(labels: np.ndarray, classes: int) -> np.ndarray:
    """Each label value 1..classes keeps only its largest 26-connected piece, as the engine's function of that name.

    scipy here instead of the engine's MONAI transform: Slicer's own process has no torch.
    """
    from scipy import ndimage

    out = labels.copy()
    for value in range(1, classes + 1):
        pieces, count = ndimage.label(labels == value, structure=np.ones((3, 3, 3)))
        if count > 1:
            largest = np.bincount(pieces.ravel())[1:].argmax() + 1
            out[(pieces > 0) & (pieces != largest)] = 0
    return out


def to_kji(array_ijk: np.ndarray) -> np.ndarray:
    """NIfTI voxel order to the (K, J, I) order of ``slicer.util.arrayFromVolume``."""
    return np.ascontiguousarray(np.transpose(array_ijk, (2, 1, 0)))


def slice_index(ras_to_ijk: np.ndarray, ras: Sequence[float], axis: int, size: int) -> int:
    """The voxel slice along ``axis`` through a RAS point (the centre of the slice view), clamped to the volume."""
    ijk = np.asarray(ras_to_ijk, dtype=float) @ np.array([*ras[:3], 1.0])
    return int(min(max(round(float(ijk[axis])), 0), size - 1))


def view_is_along_axis(ijk_to_ras: np.ndarray, view_normal_ras: Sequence[float], axis: int) -> bool:
    """True when a slice view shows planes of constant voxel index ``axis`` (what a 2D model segments)."""
    direction = np.asarray(ijk_to_ras, dtype=float)[:3, :3]
    slice_normal = np.cross(direction[:, (axis + 1) % 3], direction[:, (axis + 2) % 3])
    normal = np.asarray(view_normal_ras, dtype=float)[:3]
    cos = abs(slice_normal @ normal) / (np.linalg.norm(slice_normal) * np.linalg.norm(normal))
    return bool(cos > 0.999)


def ijk_box(ras_to_ijk: np.ndarray, ras_bounds: Sequence[float], shape: Sequence[int]) -> tuple[slice, slice, slice]:
    """Voxel index ranges covering a RAS box (xmin, xmax, ymin, ymax, zmin, zmax), e.g. a markups ROI."""
    m = np.asarray(ras_to_ijk, dtype=float)
    corners = np.array([[x, y, z, 1.0] for x in ras_bounds[0:2] for y in ras_bounds[2:4] for z in ras_bounds[4:6]])
    ijk = (m @ corners.T)[:3]
    lo = np.clip(np.floor(ijk.min(axis=1) + 0.5), 0, np.asarray(shape) - 1).astype(int)
    hi = np.clip(np.floor(ijk.max(axis=1) + 0.5), 0, np.asarray(shape) - 1).astype(int)
    return tuple(slice(int(a), int(b) + 1) for a, b in zip(lo, hi))  # type: ignore[return-value]


def mask_outside(labels_ijk: np.ndarray, box: tuple[slice, slice, slice], offset: Sequence[int] = (0, 0, 0)) -> None:
    """Zero labels outside ``box`` in place; ``offset`` is where ``labels_ijk`` starts in the full volume."""
    keep = np.zeros(labels_ijk.shape, dtype=bool)
    local = tuple(slice(max(b.start - o, 0), max(b.stop - o, 0)) for b, o in zip(box, offset))
    keep[local] = True
    labels_ijk[~keep] = 0
