"""Read DICOM image series into channel-first volumes with a RAS affine (Slicer-free, engine-free).

Conventions: a volume is ``(C, X, Y, Z)`` float32 (C=1 grey, C=3 RGB; X = columns, Y = rows, Z = slices, the
voxel order of nibabel) and its 4x4 affine maps (i, j, k) to RAS millimetres. The affine equals SimpleITK's
``ImageSeriesReader`` result (files ordered by ``GetGDCMSeriesFileNames``) converted from LPS to RAS.

Scanning (:func:`find_dicom_series`) reads headers only; pixels are decoded per series by :func:`load_series`,
so batch runs over many studies hold one series in memory at a time.

Uneven slice spacing (a missing slice, mixed spacings) is refused with :class:`DicomSeriesError` instead of
being resampled: every slice of the volume must stay one acquired slice so that a DICOM SEG can reference its
source instance exactly, and an interpolated slice would be segmented although nobody acquired it.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_color_lut
from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

__all__ = [
    "DicomSeries",
    "DicomSeriesError",
    "SeriesRef",
    "find_dicom_series",
    "lps_to_ras",
    "load_series",
]

# Modalities of objects with no image to segment (reports, segmentations, plans, presentation states...).
NON_IMAGE_MODALITIES = frozenset(
    {
        "SR",
        "SEG",
        "RTSTRUCT",
        "RTPLAN",
        "RTDOSE",
        "RTRECORD",
        "RTIMAGE",
        "KO",
        "PR",
        "REG",
        "DOC",
        "RWV",
        "PLAN",
    }
)
MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"  # DICOMDIR
ORIENTATION_TOLERANCE = 1e-4  # direction cosine components
POSITION_TOLERANCE_MM = 1e-3  # rounding of positions written as decimal strings
SPACING_TOLERANCE = 0.01  # relative deviation of one slice gap from the mean gap
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


class DicomSeriesError(ValueError):
    """A series that cannot be turned into one volume; the message names the offending files."""


def lps_to_ras(affine_lps: np.ndarray) -> np.ndarray:
    """Flip the first two world axes: DICOM/ITK patient coordinates are LPS, NIfTI's are RAS.

    Args:
        affine_lps: 4x4 voxel -> LPS mm.

    Returns:
        4x4 voxel -> RAS mm (``diag(-1, -1, 1, 1) @ affine_lps``); the inverse conversion is the same product.
    """
    return LPS_TO_RAS @ affine_lps


def _display_name(patient_id: str, study_date: str, description: str, series_number: str) -> str:
    return " ".join(part for part in (patient_id, study_date, f"{description}/{series_number}") if part)


@dataclass
class SeriesRef:
    """A series found by :func:`find_dicom_series`: identifiers and files, pixels not read yet.

    The string fields are the DICOM attributes of the same names (StudyInstanceUID, SeriesInstanceUID,
    Modality, SeriesDescription, PatientID, PatientName, StudyDate, SeriesNumber), empty where absent;
    ``files`` are the series' instances in scan order.
    """

    study_uid: str
    series_uid: str
    modality: str
    description: str
    files: list[Path]
    patient_id: str = ""
    patient_name: str = ""
    study_date: str = ""
    series_number: str = ""

    @property
    def name(self) -> str:
        """Human-readable label: "<PatientID> <StudyDate> <SeriesDescription>/<SeriesNumber>"."""
        return _display_name(self.patient_id, self.study_date, self.description, self.series_number)


@dataclass
class DicomSeries:
    """A loaded series: the volume, its geometry and the source headers needed to write a DICOM SEG.

    ``array`` is (C, X, Y, Z) float32 with the modality rescale applied (HU for CT), X along columns,
    Y along rows and Z along the sorted slices; ``affine`` maps voxel (i, j, k) to RAS mm. The string
    fields are the DICOM attributes of the same names, as in :class:`SeriesRef`.
    """

    study_uid: str
    series_uid: str
    modality: str
    description: str
    files: list[Path]  # one per dataset, in volume order
    datasets: list[Dataset]  # headers of the source instances (pixel data dropped after decoding)
    array: np.ndarray  # (C, X, Y, Z) float32, modality rescale applied
    affine: np.ndarray  # 4x4, voxel (i, j, k) -> RAS mm
    patient_id: str = ""
    patient_name: str = ""
    is_rgb: bool = False
    warnings: list[str] = field(default_factory=list)
    # For every slice k: (index into datasets, 0-based frame number in that dataset).
    slice_sources: list[tuple[int, int]] = field(default_factory=list)
    study_date: str = ""
    series_number: str = ""

    @property
    def name(self) -> str:
        """Human-readable label: "<PatientID> <StudyDate> <SeriesDescription>/<SeriesNumber>"."""
        return _display_name(self.patient_id, self.study_date, self.description, self.series_number)


# ----------------------------------------------------------------------------------------------- scanning


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    return "" if value is None else str(value).strip()


def _skip_reason(ds: Dataset) -> str | None:
    """Why a header does not belong to an image series, or None when it does."""
    media_class = ds.file_meta.get("MediaStorageSOPClassUID") if hasattr(ds, "file_meta") else None
    if media_class == MEDIA_STORAGE_DIRECTORY or "DirectoryRecordSequence" in ds:
        return "DICOMDIR (media directory), not an image"
    modality = _text(ds, "Modality").upper()
    sop_class = ds.get("SOPClassUID")
    kind = UID(str(sop_class)).name if sop_class else "unknown SOP class"
    if modality in NON_IMAGE_MODALITIES:
        return f"{kind} (modality {modality}) is not an image to segment"
    if "Rows" not in ds or "Columns" not in ds:
        return f"{kind} (modality {modality or '?'}) holds no image"
    if not _text(ds, "SeriesInstanceUID"):
        return "no SeriesInstanceUID"
    return None


def _dcmread(path: Path, stop_before_pixels: bool = False) -> Dataset:
    """Read a Part 10 file, or a bare dataset without file meta (older exports) when it has a SOP class."""
    try:
        return pydicom.dcmread(path, stop_before_pixels=stop_before_pixels)
    except InvalidDicomError:
        ds = pydicom.dcmread(path, stop_before_pixels=stop_before_pixels, force=True)
        if "SOPClassUID" not in ds:
            raise
    if "TransferSyntaxUID" not in ds.file_meta:  # needed to decode pixels; guessed from the encoding read
        implicit, little = ds.original_encoding
        ds.file_meta.TransferSyntaxUID = (
            ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian if little else ExplicitVRBigEndian
        )
    return ds


def _iter_files(folder: Path) -> Iterable[Path]:
    for root, dirs, names in os.walk(folder):
        dirs.sort()
        for name in sorted(names):
            yield Path(root) / name


def find_dicom_series(folder: str | os.PathLike) -> tuple[list[SeriesRef], list[str]]:
    """Scan ``folder`` recursively and group image instances by study and series.

    Returns the series (sorted by patient, study date, series number) and one message per skipped file
    (non-DICOM, DICOMDIR, SR, SEG, RTSTRUCT, ...). Only headers are read here.

    Raises:
        NotADirectoryError: ``folder`` is not a folder.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise NotADirectoryError(f"{folder} is not a folder")
    groups: dict[tuple[str, str], list[tuple[Path, Dataset]]] = defaultdict(list)
    skipped: list[str] = []
    for path in _iter_files(folder):
        try:
            ds = _dcmread(path, stop_before_pixels=True)
        except (InvalidDicomError, OSError, ValueError, EOFError) as exc:
            skipped.append(f"{path}: skipped, not a readable DICOM file ({exc.__class__.__name__})")
            continue
        reason = _skip_reason(ds)
        if reason:
            skipped.append(f"{path}: skipped, {reason}")
            continue
        groups[(_text(ds, "StudyInstanceUID"), _text(ds, "SeriesInstanceUID"))].append((path, ds))
    refs = [_series_ref(study, series, members) for (study, series), members in groups.items()]
    refs.sort(key=lambda r: (r.patient_id, r.study_date, r.study_uid, _number(r.series_number), r.series_uid))
    return refs, skipped


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return float("inf")


def _series_ref(study_uid: str, series_uid: str, members: list[tuple[Path, Dataset]]) -> SeriesRef:
    ds = members[0][1]
    return SeriesRef(
        study_uid=study_uid,
        series_uid=series_uid,
        modality=_text(ds, "Modality"),
        description=_text(ds, "SeriesDescription"),
        files=[path for path, _ in members],
        patient_id=_text(ds, "PatientID"),
        patient_name=_text(ds, "PatientName"),
        study_date=_text(ds, "StudyDate"),
        series_number=_text(ds, "SeriesNumber"),
    )


# ---------------------------------------------------------------------------------------- frame geometry


@dataclass
class _Frame:
    """One 2D image of the series: where it comes from and where it lies."""

    dataset_index: int
    frame: int
    path: Path
    position: np.ndarray | None  # ImagePositionPatient (LPS mm)
    orientation: np.ndarray | None  # row and column direction cosines, 6 values
    spacing: tuple[float, float] | None  # (between rows, between columns) mm
    slope: float
    intercept: float
    instance_number: float


def _group_item(ds: Dataset, frame: int, sequence: str) -> Dataset | None:
    """The functional-group item ``sequence`` for ``frame``, per-frame first, then shared."""
    for groups_keyword, index in (
        ("PerFrameFunctionalGroupsSequence", frame),
        ("SharedFunctionalGroupsSequence", 0),
    ):
        groups = ds.get(groups_keyword)
        if groups and len(groups) > index and sequence in groups[index] and groups[index][sequence]:
            return groups[index][sequence][0]
    return None


def _floats(value: object, count: int) -> np.ndarray | None:
    if value is None:
        return None
    array = np.asarray([float(v) for v in value], dtype=np.float64)  # type: ignore[union-attr]
    return array if array.size == count else None


def _pixel_spacing(item: Dataset | None) -> tuple[float, float] | None:
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        values = _floats(item.get(keyword), 2) if item is not None else None
        if values is not None and np.all(values > 0):
            return float(values[0]), float(values[1])
    return None


def _enhanced_frames(ds: Dataset, index: int, path: Path) -> list[_Frame]:
    """Frames of an enhanced multi-frame object, geometry and rescale from the functional groups."""
    frames = []
    for frame in range(int(ds.get("NumberOfFrames", 1))):
        position = _group_item(ds, frame, "PlanePositionSequence")
        orientation = _group_item(ds, frame, "PlaneOrientationSequence")
        transform = _group_item(ds, frame, "PixelValueTransformationSequence")
        frames.append(
            _Frame(
                dataset_index=index,
                frame=frame,
                path=path,
                position=_floats(position.get("ImagePositionPatient"), 3) if position else None,
                orientation=_floats(orientation.get("ImageOrientationPatient"), 6) if orientation else None,
                spacing=_pixel_spacing(_group_item(ds, frame, "PixelMeasuresSequence")),
                slope=float(transform.get("RescaleSlope", 1.0)) if transform else 1.0,
                intercept=float(transform.get("RescaleIntercept", 0.0)) if transform else 0.0,
                instance_number=float(frame),
            )
        )
    return frames


def _classic_frames(ds: Dataset, index: int, path: Path) -> list[_Frame]:
    """Frames of a classic object; a multi-frame one (cine, secondary capture) has no per-frame position."""
    count = int(ds.get("NumberOfFrames", 1) or 1)
    single = count == 1
    return [
        _Frame(
            dataset_index=index,
            frame=frame,
            path=path,
            position=_floats(ds.get("ImagePositionPatient"), 3) if single else None,
            orientation=_floats(ds.get("ImageOrientationPatient"), 6) if single else None,
            spacing=_pixel_spacing(ds),
            slope=float(ds.get("RescaleSlope", 1.0) or 1.0),
            intercept=float(ds.get("RescaleIntercept", 0.0) or 0.0),
            instance_number=_number(_text(ds, "InstanceNumber")) + frame / count,
        )
        for frame in range(count)
    ]


def _frames_of(ds: Dataset, index: int, path: Path) -> list[_Frame]:
    if "PerFrameFunctionalGroupsSequence" in ds:
        return _enhanced_frames(ds, index, path)
    return _classic_frames(ds, index, path)


# ------------------------------------------------------------------------------------------- validation


def _names(paths: Iterable[Path], limit: int = 6) -> str:
    unique = list(dict.fromkeys(str(p) for p in paths))
    shown = ", ".join(unique[:limit])
    return shown + (f" and {len(unique) - limit} more" if len(unique) > limit else "")


def _check_uniform_layout(datasets: list[Dataset], files: list[Path]) -> None:
    """All instances must share rows, columns and samples per pixel."""
    layouts: dict[tuple, list[Path]] = defaultdict(list)
    for ds, path in zip(datasets, files):
        layouts[(int(ds.Rows), int(ds.Columns), int(ds.get("SamplesPerPixel", 1)))].append(path)
    if len(layouts) > 1:
        detail = "; ".join(f"{r}x{c}x{s} (rows x columns x samples): {_names(p)}" for (r, c, s), p in layouts.items())
        raise DicomSeriesError(f"mixed image sizes in one series: {detail}")


def _common(frames: list[_Frame], attribute: str, tolerance: float, what: str) -> np.ndarray:
    """The value shared by all frames (within tolerance), else an error naming each variant's files."""
    variants: list[tuple[np.ndarray, list[Path]]] = []
    for frame in frames:
        value = np.asarray(getattr(frame, attribute), dtype=np.float64)
        for known, paths in variants:
            if np.allclose(known, value, atol=tolerance, rtol=0):
                paths.append(frame.path)
                break
        else:
            variants.append((value, [frame.path]))
    if len(variants) > 1:
        detail = "; ".join(f"{np.round(v, 5).tolist()}: {_names(p)}" for v, p in variants)
        raise DicomSeriesError(f"differing {what} in one series: {detail}")
    return variants[0][0]


def _check_geometry_present(frames: list[_Frame]) -> bool:
    """True when every frame has a position and orientation; a mixture is an error."""
    located = [f.position is not None and f.orientation is not None for f in frames]
    if all(located):
        return True
    if any(located):
        missing = [f.path for f, ok in zip(frames, located) if not ok]
        raise DicomSeriesError(f"some instances lack ImagePositionPatient/ImageOrientationPatient: {_names(missing)}")
    return False


def _sort_by_position(frames: list[_Frame], normal: np.ndarray) -> tuple[list[_Frame], float | None]:
    """Order frames along the slice normal and return the slice spacing (None for one slice).

    Duplicate positions, positions off the normal (gantry tilt) and uneven gaps are refused.
    """
    frames = sorted(frames, key=lambda f: float(f.position @ normal))
    if len(frames) == 1:
        return frames, None
    positions = np.stack([f.position for f in frames])
    distances = positions @ normal
    gaps = np.diff(distances)
    duplicate = np.flatnonzero(gaps < POSITION_TOLERANCE_MM)
    if duplicate.size:
        pairs = [f"{frames[i].path} and {frames[i + 1].path}" for i in duplicate[:5]]
        raise DicomSeriesError(f"duplicate slice positions (same ImagePositionPatient): {'; '.join(pairs)}")
    offsets = positions - positions[0] - np.outer(distances - distances[0], normal)
    sheared = np.flatnonzero(np.linalg.norm(offsets, axis=1) > POSITION_TOLERANCE_MM + SPACING_TOLERANCE * gaps.mean())
    if sheared.size:
        raise DicomSeriesError(
            "slice positions do not lie along the slice normal (gantry tilt or mixed stacks), not supported: "
            f"{_names(frames[i].path for i in sheared)}"
        )
    spacing = (distances[-1] - distances[0]) / (len(frames) - 1)
    uneven = np.flatnonzero(np.abs(gaps - spacing) > SPACING_TOLERANCE * spacing + POSITION_TOLERANCE_MM)
    if uneven.size:
        worst = int(uneven[np.argmax(np.abs(gaps[uneven] - spacing))])
        raise DicomSeriesError(
            f"uneven slice spacing or missing slices: gap of {gaps[worst]:.4g} mm between "
            f"{frames[worst].path} and {frames[worst + 1].path}, mean spacing {spacing:.4g} mm "
            f"({uneven.size} uneven gap(s)); "
            "resampling is not done so that every slice stays an acquired slice"
        )
    return frames, float(spacing)


def _fallback_slice_spacing(ds: Dataset) -> float:
    """Third-axis spacing of one slice or an unlocated stack: SpacingBetweenSlices, SliceThickness or 1 mm."""
    for keyword in ("SpacingBetweenSlices", "SliceThickness"):
        value = ds.get(keyword)
        if value is not None and str(value).strip() and float(value) > 0:
            return float(value)
    return 1.0


# ---------------------------------------------------------------------------------------------- loading


def _read_datasets(files: list[Path]) -> list[Dataset]:
    datasets = []
    for path in files:
        try:
            datasets.append(_dcmread(path))
        except (InvalidDicomError, OSError, ValueError, EOFError) as exc:
            raise DicomSeriesError(f"cannot read {path}: {exc}") from exc
    return datasets


def _decode(ds: Dataset, path: Path) -> np.ndarray:
    """Pixels as (frames, rows, columns, samples); YBR becomes RGB, palette colour is looked up."""
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise DicomSeriesError(f"no pixel data in {path}")
    try:
        pixels = ds.pixel_array  # pydicom converts YBR_* to RGB by default
        if _text(ds, "PhotometricInterpretation") == "PALETTE COLOR":
            pixels = apply_color_lut(pixels, ds)
    except Exception as exc:  # any decoder failure (missing plugin, corrupt stream) is a broken series
        raise DicomSeriesError(f"cannot decode pixel data of {path}: {exc}") from exc
    if _text(ds, "PhotometricInterpretation") == "MONOCHROME1":
        pixels = _invert_monochrome1(pixels, ds)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    samples = 3 if pixels.shape[-1] == 3 and pixels.ndim == (4 if frames > 1 else 3) else 1
    return pixels.reshape(frames, int(ds.Rows), int(ds.Columns), samples)


def _invert_monochrome1(pixels: np.ndarray, ds: Dataset) -> np.ndarray:
    """Make higher values brighter, as SimpleITK/GDCM do: stored values mirrored within their range."""
    bits = int(ds.get("BitsStored", 8 * pixels.dtype.itemsize))
    low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if int(ds.get("PixelRepresentation", 0)) else (0, 2**bits - 1)
    return (low + high) - pixels.astype(np.int64)


def _is_rgb(ds: Dataset) -> bool:
    return int(ds.get("SamplesPerPixel", 1)) == 3 or _text(ds, "PhotometricInterpretation") == "PALETTE COLOR"


def _fill_array(datasets: list[Dataset], files: list[Path], frames: list[_Frame], rgb: bool) -> np.ndarray:
    """Decode each instance once into the (C, X, Y, Z) float32 volume, then drop its pixel bytes."""
    first = datasets[0]
    channels = 3 if rgb else 1
    array = np.empty((channels, int(first.Columns), int(first.Rows), len(frames)), dtype=np.float32)
    slots: dict[int, list[tuple[int, _Frame]]] = defaultdict(list)
    for k, frame in enumerate(frames):
        slots[frame.dataset_index].append((k, frame))
    for index, members in slots.items():
        pixels = _decode(datasets[index], files[index])
        for k, frame in members:
            plane = pixels[frame.frame].astype(np.float32)  # (rows, columns, samples)
            if not rgb and (frame.slope != 1.0 or frame.intercept != 0.0):
                plane = plane * np.float32(frame.slope) + np.float32(frame.intercept)
            array[:, :, :, k] = plane.transpose(2, 1, 0)
        for keyword in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"):
            if keyword in datasets[index]:
                delattr(datasets[index], keyword)
    return array


def _located_affine(
    frames: list[_Frame], orientation: np.ndarray, spacing: tuple[float, float], dz: float
) -> np.ndarray:
    """LPS affine of located frames (columns: row direction, column direction, normal) converted to RAS."""
    row_dir, col_dir = orientation[:3], orientation[3:]
    normal = np.cross(row_dir, col_dir)
    affine = np.eye(4)
    affine[:3, 0] = row_dir * spacing[1]  # along a row = next column, spaced by PixelSpacing[1]
    affine[:3, 1] = col_dir * spacing[0]
    affine[:3, 2] = normal * dz
    affine[:3, 3] = frames[0].position
    return lps_to_ras(affine)


def _unlocated_affine(spacing: tuple[float, float], dz: float) -> np.ndarray:
    """Identity orientation at the origin, as SimpleITK gives for images without patient geometry."""
    return lps_to_ras(np.diag([spacing[1], spacing[0], dz, 1.0]))


def _geometry(frames: list[_Frame], first: Dataset, warnings: list[str]) -> tuple[list[_Frame], np.ndarray]:
    """Sort frames and build the affine; warn where geometry had to be assumed."""
    if all(f.spacing is not None for f in frames):
        spacing = tuple(float(v) for v in _common(frames, "spacing", 1e-4, "PixelSpacing"))
    else:
        warnings.append("no PixelSpacing: 1 mm pixels assumed")
        spacing = (1.0, 1.0)
    if _check_geometry_present(frames):
        orientation = _common(frames, "orientation", ORIENTATION_TOLERANCE, "ImageOrientationPatient")
        normal = np.cross(orientation[:3], orientation[3:])
        frames, dz = _sort_by_position(frames, normal)
        return frames, _located_affine(frames, orientation, spacing, dz or _fallback_slice_spacing(first))
    frames = sorted(frames, key=lambda f: (f.instance_number, f.dataset_index, f.frame))
    warnings.append("no ImagePositionPatient/ImageOrientationPatient: identity orientation at the origin assumed")
    return frames, _unlocated_affine(spacing, _fallback_slice_spacing(first))


def load_series(series: SeriesRef | Iterable[str | os.PathLike]) -> DicomSeries:
    """Read one series (a :class:`SeriesRef` or its files) into a :class:`DicomSeries`.

    Raises:
        DicomSeriesError: naming the files, for no files, mixed sizes/orientations, duplicate positions,
            uneven spacing, mixed studies/series, non-image objects and unreadable pixel data.
    """
    files = list(series.files) if isinstance(series, SeriesRef) else [Path(p) for p in series]
    if not files:
        raise DicomSeriesError("no files given for the series")
    datasets = _read_datasets(files)
    _check_same_series(datasets, files)
    _check_uniform_layout(datasets, files)
    frames = [frame for i, (ds, path) in enumerate(zip(datasets, files)) for frame in _frames_of(ds, i, path)]
    warnings: list[str] = []
    frames, affine = _geometry(frames, datasets[0], warnings)
    order = list(dict.fromkeys(f.dataset_index for f in frames))  # datasets in volume order
    remap = {old: new for new, old in enumerate(order)}
    datasets = [datasets[i] for i in order]
    files = [files[i] for i in order]
    for frame in frames:
        frame.dataset_index = remap[frame.dataset_index]
    first = datasets[0]
    rgb = _is_rgb(first)
    array = _fill_array(datasets, files, frames, rgb)
    return DicomSeries(
        study_uid=_text(first, "StudyInstanceUID"),
        series_uid=_text(first, "SeriesInstanceUID"),
        modality=_text(first, "Modality"),
        description=_text(first, "SeriesDescription"),
        files=files,
        datasets=datasets,
        array=array,
        affine=affine,
        patient_id=_text(first, "PatientID"),
        patient_name=_text(first, "PatientName"),
        is_rgb=rgb,
        warnings=warnings,
        slice_sources=[(f.dataset_index, f.frame) for f in frames],
        study_date=_text(first, "StudyDate"),
        series_number=_text(first, "SeriesNumber"),
    )


def _check_same_series(datasets: list[Dataset], files: list[Path]) -> None:
    """Files handed in directly must form one series and must be images."""
    for ds, path in zip(datasets, files):
        reason = _skip_reason(ds)
        if reason:
            raise DicomSeriesError(f"{path}: {reason}")
    uids: dict[tuple[str, str], list[Path]] = defaultdict(list)
    for ds, path in zip(datasets, files):
        uids[(_text(ds, "StudyInstanceUID"), _text(ds, "SeriesInstanceUID"))].append(path)
    if len(uids) > 1:
        detail = "; ".join(f"series {s}: {_names(p)}" for (_, s), p in uids.items())
        raise DicomSeriesError(f"files from several series: {detail}")
