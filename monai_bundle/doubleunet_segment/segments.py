"""Segment definitions shared by the DICOM SEG writer, the NRRD writer, the CLI and the Slicer module.

Codes are SNOMED CT ("SCT") concepts as listed in DICOM PS3.16 (checked against pydicom's code dictionary):
  91723000  Anatomical Structure (CID 7150 category)
  49755003  Morphologically Abnormal Structure (CID 7150 category)
  68496003  Polyp of colon (CID 6201)
  5366008   Hippocampus (CID 7140)
  255549009 Anterior, 255551008 Posterior (type modifiers; CID 2)
  7771000   Left, 24028007 Right (DICOM PS3.16 CID 244 "Laterality")

Laterality is a field of its own rather than a second type modifier: the DICOM SEG writer carries it as the
modifier of the segment's anatomic region (``AnatomicRegionModifierSequence``), because dcmqi and 3D Slicer read
only one type modifier, which the hippocampus segments already use for anterior/posterior.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = [
    "HIPPOCAMPUS_LR_SEGMENTS",
    "HIPPOCAMPUS_SEGMENTS",
    "LEFT",
    "POLYP_SEGMENTS",
    "RIGHT",
    "Code3",
    "SegmentInfo",
    "segments_from_dicts",
]

Code3 = tuple[str, str, str]  # (code value, coding scheme designator, code meaning)

ANATOMICAL_STRUCTURE: Code3 = ("91723000", "SCT", "Anatomical Structure")
MORPHOLOGICALLY_ABNORMAL_STRUCTURE: Code3 = ("49755003", "SCT", "Morphologically Abnormal Structure")
POLYP_OF_COLON: Code3 = ("68496003", "SCT", "Polyp of colon")
HIPPOCAMPUS: Code3 = ("5366008", "SCT", "Hippocampus")
ANTERIOR: Code3 = ("255549009", "SCT", "Anterior")
POSTERIOR: Code3 = ("255551008", "SCT", "Posterior")
LEFT: Code3 = ("7771000", "SCT", "Left")
RIGHT: Code3 = ("24028007", "SCT", "Right")


@dataclass(frozen=True)
class SegmentInfo:
    """One label value of a label map, with the name, colour and codes that describe it.

    Attributes:
        value: the label value (1..K-1; 0 is background).
        name: what a person sees.
        color: RGB, 0-255.
        category: DICOM SEG SegmentedPropertyCategoryCodeSequence (code value, scheme, meaning).
        type: SegmentedPropertyTypeCodeSequence.
        type_modifier: SegmentedPropertyTypeModifierCodeSequence, if any.
        laterality: :data:`LEFT` or :data:`RIGHT` (CID 244) for one side of a paired structure, else None.
    """

    value: int
    name: str
    color: tuple[int, int, int]  # RGB 0-255
    category: Code3
    type: Code3
    type_modifier: Code3 | None = None
    laterality: Code3 | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able description (lists instead of tuples)."""
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

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SegmentInfo:
        """Inverse of :meth:`to_dict`.

        Raises:
            KeyError: ``value``, ``name``, ``color``, ``category`` or ``type`` is missing.
        """
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


def segments_from_dicts(items: list[dict[str, Any]] | list[SegmentInfo]) -> list[SegmentInfo]:
    """Accept SegmentInfo objects or their dict form (as stored in JSON configs)."""
    return [item if isinstance(item, SegmentInfo) else SegmentInfo.from_dict(item) for item in items]


POLYP_SEGMENTS: list[SegmentInfo] = [
    SegmentInfo(1, "Polyp", (216, 101, 79), MORPHOLOGICALLY_ABNORMAL_STRUCTURE, POLYP_OF_COLON),
]

HIPPOCAMPUS_SEGMENTS: list[SegmentInfo] = [
    SegmentInfo(1, "Anterior hippocampus", (220, 180, 60), ANATOMICAL_STRUCTURE, HIPPOCAMPUS, ANTERIOR),
    SegmentInfo(2, "Posterior hippocampus", (90, 150, 220), ANATOMICAL_STRUCTURE, HIPPOCAMPUS, POSTERIOR),
]

# Left and right shades (lighter left, darker right) of the anterior and posterior colours above.
HIPPOCAMPUS_LR_SEGMENTS: list[SegmentInfo] = [
    SegmentInfo(1, "Left anterior hippocampus", (240, 205, 95), ANATOMICAL_STRUCTURE, HIPPOCAMPUS, ANTERIOR, LEFT),
    SegmentInfo(2, "Left posterior hippocampus", (130, 185, 245), ANATOMICAL_STRUCTURE, HIPPOCAMPUS, POSTERIOR, LEFT),
    SegmentInfo(3, "Right anterior hippocampus", (185, 140, 30), ANATOMICAL_STRUCTURE, HIPPOCAMPUS, ANTERIOR, RIGHT),
    SegmentInfo(4, "Right posterior hippocampus", (45, 105, 185), ANATOMICAL_STRUCTURE, HIPPOCAMPUS, POSTERIOR, RIGHT),
]
