"""Write and read DICOM SEG (binary segmentation) objects for a loaded source series, with highdicom.

The SEG references the source instances frame by frame, carries the patient and study of the source, one
segment per label value present (empty ones are left out, segment numbers renumbered 1..n as DICOM requires)
and identifies the algorithm as AUTOMATIC / Artificial Intelligence. A segment's laterality (Left/Right) is the
modifier of its anatomic region (see :func:`_description`). Source headers are normalised on copies
only (real PACS data has empty SpecificCharacterSet values that highdicom refuses; anonymised data lacks
Type 2 patient/study attributes, which the SEG then carries empty, as the standard allows); user files are never
touched. :func:`seg_writable` says up front, from headers only, whether a series can have a SEG. Output is
written atomically.
"""

from __future__ import annotations

import copy
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from ..segments import ANATOMICAL_STRUCTURE, SegmentInfo, segments_from_dicts
from .atomic import atomic_path
from .dicom_io import DicomSeries

__all__ = ["EmptySegmentationError", "read_dicom_seg", "seg_writable", "write_dicom_seg"]

MANUFACTURER = "DoubleU-Net Segment"
# Type 2 attributes (present, possibly empty) of the Patient and General Study modules that highdicom copies
# from the source; anonymisers often delete them instead of emptying them (qurit/rt-utils#20).
TYPE2_COPIED = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "StudyID",
    "ReferringPhysicianName",
)


class EmptySegmentationError(ValueError):
    """Nothing was segmented and no segment can be described; the caller decides how to report it."""


def _coded(code: tuple[str, str, str]) -> hd.sr.CodedConcept:
    value, scheme, meaning = code
    return hd.sr.CodedConcept(value=value, scheme_designator=scheme, meaning=meaning)


def _description(number: int, info: SegmentInfo, algorithm: hd.AlgorithmIdentificationSequence):
    """One item of the SegmentSequence; a lateral segment names its side as the modifier of its anatomic region.

    Laterality goes to AnatomicRegionSequence (the structure itself) + AnatomicRegionModifierSequence (CID 244
    Left/Right), not to a second SegmentedPropertyTypeModifierCodeSequence item: dcmqi (``segimage2itkimage``,
    and so 3D Slicer's DICOM SEG import) keeps only the first type modifier, which anterior/posterior already
    takes, whereas it reads the region and its modifier into the terminology's anatomic region slots, and the
    DICOM master list of anatomic regions that Slicer uses lists Hippocampus with exactly these Left/Right
    modifiers.

    Raises:
        ValueError: ``info`` has a laterality but is no Anatomical Structure, so it has no region to carry it.
    """
    regions = None
    if info.laterality is not None:
        if info.category[:2] != ANATOMICAL_STRUCTURE[:2]:
            raise ValueError(
                f"segment {info.name!r}: laterality is written as the modifier of the segment's anatomic region, "
                f"which is its type only for an Anatomical Structure, not for category {info.category[2]!r}"
            )
        regions = [_coded(info.type)]
    description = hd.seg.SegmentDescription(
        segment_number=number,
        segment_label=info.name,
        segmented_property_category=_coded(info.category),
        segmented_property_type=_coded(info.type),
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm,
        anatomic_regions=regions,
        display_color=hd.color.CIELabColor.from_rgb(*info.color),
    )
    if info.type_modifier is not None:
        item = description.SegmentedPropertyTypeCodeSequence[0]
        item.SegmentedPropertyTypeModifierCodeSequence = [_coded(info.type_modifier)]
    if info.laterality is not None:
        description.AnatomicRegionSequence[0].AnatomicRegionModifierSequence = [_coded(info.laterality)]
    return description


def _normalised_copy(ds: Dataset) -> Dataset:
    """A copy of a source header that highdicom accepts; identifiers are kept unchanged."""
    ds = copy.deepcopy(ds)
    charset = ds.get("SpecificCharacterSet")
    if charset is not None:
        values = [v for v in (charset if isinstance(charset, list | tuple) else [charset]) if str(v).strip()]
        if values:
            ds.SpecificCharacterSet = values if len(values) > 1 else values[0]
        else:
            del ds.SpecificCharacterSet  # empty means the default repertoire
    for keyword in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"):
        if keyword in ds:
            delattr(ds, keyword)
    for keyword in TYPE2_COPIED:
        if keyword not in ds:
            setattr(ds, keyword, "")  # the SEG gets the empty value the standard allows for an unknown one
    if "FrameOfReferenceUID" not in ds and "SliceThickness" not in ds and "PixelSpacing" in ds:
        # highdicom would copy a Pixel Measures item without SliceThickness, which it then cannot read back
        del ds.PixelSpacing
    return ds


def _check_label_map(series: DicomSeries, label_map: np.ndarray, segments: list[SegmentInfo]) -> np.ndarray:
    if label_map.shape != series.array.shape[1:]:
        raise ValueError(f"label map shape {label_map.shape} does not match the series grid {series.array.shape[1:]}")
    if not (np.issubdtype(label_map.dtype, np.integer) or label_map.dtype == bool):
        raise ValueError(f"label map must hold integers, got {label_map.dtype}")
    known = {s.value for s in segments}
    unknown = sorted(set(np.unique(label_map).tolist()) - known - {0})
    if unknown:
        raise ValueError(f"label values {unknown} have no segment definition (defined: {sorted(known)})")
    return label_map.astype(np.int64)


def seg_writable(series: DicomSeries) -> str | None:
    """Whether :func:`write_dicom_seg` can write a SEG for ``series``, decided from headers only (cheap).

    The runner asks this while planning a case's outputs, before any file is written, so a SEG the series
    cannot carry becomes a note instead of a failed case with files left behind.

    Frames without patient geometry (no FrameOfReferenceUID: a cine loop, a set of stills) can be referenced
    by a SEG only one image at a time here: the standard would allow a SEG whose frames point at their source
    frames without plane positions, but highdicom, which writes the SEG, supports images without a Frame of
    Reference for a single frame only (highdicom#284).

    Args:
        series: the loaded source series.

    Returns:
        None when a SEG can be written, else the reason, as a sentence part ("images without ...").
    """
    frames = len(series.slice_sources)
    if "FrameOfReferenceUID" not in series.datasets[0] and frames > 1:
        return (
            f"the series' {frames} frames have no patient geometry (no FrameOfReferenceUID); highdicom writes a "
            "DICOM SEG of such images for a single frame only"
        )
    first = series.datasets[0]
    located = "FrameOfReferenceUID" in first and "SharedFunctionalGroupsSequence" not in first
    if located and not any(keyword in first for keyword in ("PixelSpacing", "ImagerPixelSpacing")):
        # The reader assumes 1 mm pixels (and says so); a SEG would state that guess as the source's geometry.
        return "the source images have no PixelSpacing, so the SEG's plane geometry would be made up"
    multi_frame = any(frame > 0 for _, frame in series.slice_sources)
    if multi_frame and len(series.datasets) > 1:
        return "a DICOM SEG of a series made of several multi-frame instances is not supported"
    return None


def _source_frames(series: DicomSeries, numbered: np.ndarray) -> tuple[list[Dataset], np.ndarray]:
    """Source headers and the (frames, rows, columns) array in the order highdicom expects."""
    rows, columns = int(series.datasets[0].Rows), int(series.datasets[0].Columns)
    reason = seg_writable(series)
    if reason is not None:
        raise ValueError(f"no DICOM SEG: {reason}")
    multi_frame = any(frame > 0 for _, frame in series.slice_sources)
    count = len(series.slice_sources) if multi_frame else len(series.datasets)
    pixels = np.zeros((count, rows, columns), dtype=np.uint16)
    for k, (index, frame) in enumerate(series.slice_sources):
        pixels[frame if multi_frame else index] = numbered[:, :, k].T  # (X, Y) -> (rows, columns)
    return [_normalised_copy(ds) for ds in series.datasets], pixels


def _has_frame_of_reference(series: DicomSeries) -> bool:
    return "FrameOfReferenceUID" in series.datasets[0]


def _series_number(series: DicomSeries) -> int:
    try:
        return int(float(series.series_number)) + 1000
    except ValueError:
        return 1000


def write_dicom_seg(
    series: DicomSeries,
    label_map: np.ndarray,
    segments: Sequence[SegmentInfo] | Sequence[dict[str, Any]],
    path: str | os.PathLike,
    *,
    algorithm_name: str = "DoubleU-Net",
    algorithm_version: str,
    overwrite: bool = False,
) -> Path:
    """Write ``label_map`` (X, Y, Z integers on the series grid) as a BINARY DICOM SEG and return its path.

    Segments whose value is absent from the map are left out. When nothing at all is segmented, every
    defined segment is still described and the SEG holds empty frames (a valid "nothing found" result).

    Args:
        series: the source series, as :func:`doubleunet_segment.data.dicom_io.load_series` read it.
        label_map: (X, Y, Z) integer label values on the series grid (X columns, Y rows, Z slices).
        segments: the label values' names, colours and codes.
        path: the ``.dcm`` file to write.
        algorithm_name: AlgorithmName and manufacturer model name.
        algorithm_version: AlgorithmVersion and software versions.
        overwrite: replace an existing file.

    Raises:
        EmptySegmentationError: ``segments`` is empty.
        ValueError: the label map does not match the series grid, holds non-integers or values without a
            segment, a segment with a laterality is not an Anatomical Structure, or :func:`seg_writable` gives a
            reason (several multi-frame instances; several frames without a FrameOfReferenceUID).
        FileExistsError: ``path`` exists and ``overwrite`` is False.
    """
    infos = sorted(segments_from_dicts(list(segments)), key=lambda s: s.value)
    if not infos:
        raise EmptySegmentationError("no segment definitions given: a DICOM SEG needs at least one segment")
    labels = _check_label_map(series, np.asarray(label_map), infos)
    present = [s for s in infos if np.any(labels == s.value)]
    described = present or infos
    numbered = np.zeros(labels.shape, dtype=np.uint16)
    for number, info in enumerate(present, start=1):
        numbered[labels == info.value] = number
    algorithm = hd.AlgorithmIdentificationSequence(
        name=algorithm_name, family=codes.DCM.ArtificialIntelligence, version=algorithm_version
    )
    sources, pixels = _source_frames(series, numbered)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Person Name.*")  # one-component names are legal
        seg = hd.seg.Segmentation(
            source_images=sources,
            pixel_array=pixels,
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=[_description(n, info, algorithm) for n, info in enumerate(described, start=1)],
            series_instance_uid=hd.UID(),
            series_number=_series_number(series),
            sop_instance_uid=hd.UID(),
            instance_number=1,
            manufacturer=MANUFACTURER,
            manufacturer_model_name=algorithm_name,
            software_versions=algorithm_version,
            device_serial_number="0",
            content_description=f"{algorithm_name} {algorithm_version} segmentation"[:64],
            series_description=f"{algorithm_name} segmentation"[:64],
            omit_empty_frames=bool(present),
        )
    if "ContentCreatorName" not in seg:
        seg.ContentCreatorName = ""  # Type 2: present, empty for an automatic result (dcmqi warns if absent)
    if not _has_frame_of_reference(series):
        # Type 2C in the General Image module when there is no frame of reference
        seg.PatientOrientation = series.datasets[0].get("PatientOrientation", "")
    with atomic_path(path, overwrite=overwrite) as tmp:
        seg.save_as(tmp, enforce_file_format=True)
    return Path(path)


def read_dicom_seg(path: str | os.PathLike, series: DicomSeries) -> tuple[np.ndarray, dict[int, str]]:
    """Read a SEG back onto the grid of its source ``series``.

    Returns the (X, Y, Z) uint16 label map holding segment numbers (overlaps resolved by highdicom, which
    refuses them) and ``{segment number: segment label}``.

    Args:
        path: the SEG file.
        series: the loaded source series the SEG references.

    Raises:
        ValueError: the SEG's frames were resampled from their sources (SpatialLocationsPreserved NO), or
            highdicom cannot map them onto the series' instances.
    """
    seg = hd.seg.segread(path)
    labels = {int(item.SegmentNumber): str(item.SegmentLabel) for item in seg.SegmentSequence}
    planes = _seg_planes(seg, series)
    label_map = np.zeros(series.array.shape[1:], dtype=np.uint16)
    for k, plane in enumerate(planes):
        label_map[:, :, k] = plane.T
    return label_map, labels


def _locations_not_preserved(seg: hd.seg.Segmentation) -> bool:
    """True when a frame states that it was resampled from its source (SpatialLocationsPreserved NO)."""
    for frame in seg.get("PerFrameFunctionalGroupsSequence", []):
        for derivation in frame.get("DerivationImageSequence", []):
            for source in derivation.get("SourceImageSequence", []):
                if source.get("SpatialLocationsPreserved", "YES") == "NO":
                    return True
    return False


def _seg_planes(seg: hd.seg.Segmentation, series: DicomSeries) -> np.ndarray:
    """(Z, rows, columns) segment numbers for each slice of ``series``.

    SEGs from other tools (dcmqi) often omit SpatialLocationsPreserved; only an explicit NO is refused.
    """
    if _locations_not_preserved(seg):
        raise ValueError("the SEG frames were resampled from their sources and cannot be mapped onto the series")
    options = {
        "combine_segments": True,
        "assert_missing_frames_are_empty": True,
        "ignore_spatial_locations": True,
        "dtype": np.uint16,
    }
    multi_frame = any(frame > 0 for _, frame in series.slice_sources)
    if multi_frame:
        return seg.get_pixels_by_source_frame(
            source_sop_instance_uid=str(series.datasets[0].SOPInstanceUID),
            source_frame_numbers=[frame + 1 for _, frame in series.slice_sources],
            **options,
        )
    uids = [str(series.datasets[index].SOPInstanceUID) for index, _ in series.slice_sources]
    return seg.get_pixels_by_source_instance(source_sop_instance_uids=uids, **options)
