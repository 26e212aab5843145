"""Read DICOM image series into channel-first volumes with a RAS affine (Slicer-free, engine-free).

Conventions: a volume is ``(C, X, Y, Z)`` float32 (C=1 grey, C=3 RGB; X = columns, Y = rows, Z = slices, the
voxel order of nibabel) and its 4x4 affine maps (i, j, k) to RAS millimetres. The affine equals SimpleITK's
``ImageSeriesReader`` result (files ordered by ``GetGDCMSeriesFileNames``) converted from LPS to RAS.

Scanning (:func:`find_dicom_series`) reads headers only; pixels are decoded per series by :func:`load_series`,
so batch runs over many studies hold one series in memory at a time.

Uneven slice spacing (a missing slice, mixed spacings) is refused with :class:`DicomSeriesError` instead of
being resampled: every slice of the volume must stay one acquired slice so that a DICOM SEG can reference its
source instance exactly, and an interpolated slice would be segmented although nobody acquired it.

A series whose images lie in several orientations (the tri-plane localizer that starts every MR study: axial,
sagittal and coronal images under one SeriesInstanceUID) is split by orientation into one
:class:`SeriesRef` per plane, as 3D Slicer's DICOM scalar volume plugin and dcm2niix do. Splitting rather than
skipping because each plane is a valid stack with exact geometry, a person who points the tool at a study
expects every image series in it handled, and a silently dropped series is worse than a cheap extra case.

Geometry numbers (PixelSpacing, ImagePositionPatient, ...) are parsed from the stored text, not through
pydicom's DS conversion: non-conformant exporters write ``0.81,0.81`` (comma as delimiter) or ``0,81\\0,81``
(decimal comma), which GDCM reads and so does this module (with a note); anything else unparseable is a
:class:`DicomSeriesError` naming the file, the attribute and the raw value. pydicom's warnings while reading
(invalid values and the like) become the series' ``warnings`` (notes of the case), not raw stderr text.
"""

from __future__ import annotations

import math
import os
import threading
import warnings as _warnings
from collections import defaultdict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.datadict import keyword_for_tag, tag_for_keyword
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


class _Notes:
    """Messages about a series, each kept once with the files it concerns (35 slices, one note)."""

    def __init__(self) -> None:
        self._files: dict[str, list[Path]] = {}

    def add(self, message: str, path: Path) -> None:
        paths = self._files.setdefault(message, [])
        if path not in paths:
            paths.append(path)

    def lines(self) -> list[str]:
        """One line per message: ``message (in FILE)`` or ``message (in N files, e.g. FILE)``."""
        out = []
        for message, paths in self._files.items():
            where = f"in {paths[0]}" if len(paths) == 1 else f"in {len(paths)} files, e.g. {paths[0]}"
            out.append(f"{message} ({where})")
        return out


# pydicom reports invalid values with warnings.warn (and a logger that has only a NullHandler). Reading runs
# in the runner's prefetch thread while the main thread segments, so the usual warnings.catch_warnings
# (process-wide state) could take the other thread's warnings; instead one hook, installed while any reader
# is active, hands each warning to the collector of the thread that raised it and passes all others on.
_collector = threading.local()
_hook_lock = threading.Lock()
_hook_users = 0
_saved_showwarning = None
_ALWAYS = ("always", None, Warning, None, 0)  # a warnings filter entry: every pydicom warning reaches the hook


def _route_warning(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
    sink = getattr(_collector, "sink", None)
    if sink is not None:
        sink.append(str(message))
    elif _saved_showwarning is not None:
        _saved_showwarning(message, category, filename, lineno, file, line)


@contextmanager
def _pydicom_warnings(sink: list[str]) -> Iterator[None]:
    """Collect the warnings raised in this thread into ``sink`` instead of printing them.

    Every warning counts, not only the first of its kind: the "always" filter entry keeps Python's
    once-per-location registry from hiding a warning the second time a series with the same fault is read.
    """
    global _hook_users, _saved_showwarning
    with _hook_lock:
        if _hook_users == 0:
            _saved_showwarning = _warnings.showwarning
            _warnings.showwarning = _route_warning
            _warnings.filters.insert(0, _ALWAYS)
            _warnings._filters_mutated()  # type: ignore[attr-defined]
        _hook_users += 1
    outer = getattr(_collector, "sink", None)
    _collector.sink = sink
    try:
        yield
    finally:
        _collector.sink = outer
        with _hook_lock:
            _hook_users -= 1
            if _hook_users == 0:
                if _warnings.showwarning is _route_warning:
                    _warnings.showwarning = _saved_showwarning
                if _ALWAYS in _warnings.filters:
                    _warnings.filters.remove(_ALWAYS)
                    _warnings._filters_mutated()  # type: ignore[attr-defined]
                _saved_showwarning = None


# ------------------------------------------------------------------------------------- geometry numbers


def _raw_text(ds: Dataset, keyword: str) -> str | None:
    """The stored text of a decimal-string attribute, without pydicom's DS conversion (None if absent or empty).

    A not yet converted element is a RawDataElement holding the file's bytes; converting it would warn
    about, or choke on, the comma forms this module reads.
    """
    tag = tag_for_keyword(keyword)
    if tag is None or tag not in ds:
        return None
    value = ds.get_item(tag).value
    if value is None:
        return None
    if isinstance(value, bytes):
        text = value.decode("latin-1")
    elif isinstance(value, str):
        text = value
    elif isinstance(value, Iterable):
        text = "\\".join(str(getattr(v, "original_string", v)) for v in value)
    else:
        text = str(getattr(value, "original_string", value))
    text = text.strip(" \x00")
    return text or None


def _parse_numbers(text: str, count: int) -> tuple[list[str], str] | None:
    """``count`` decimal strings from ``text`` and how it was written (``""`` when conformant), else None.

    Besides the standard backslash-delimited form, reads what GDCM reads: a comma as the delimiter
    (``0.81,0.81`` for two values) and a decimal comma (``0,81\\0,81``; ``0,5`` for one value).
    """
    parts = [p.strip() for p in text.split("\\")]
    how = ""
    if len(parts) == 1 and count > 1 and len(text.split(",")) == count:
        parts, how = [p.strip() for p in text.split(",")], "a comma as the value delimiter"
    elif len(parts) == count and any("," in p for p in parts):
        if not all(p.count(",") <= 1 and "." not in p for p in parts):
            return None
        parts, how = [p.replace(",", ".") for p in parts], "decimal commas"
    if len(parts) != count:
        return None
    for part in parts:
        try:
            if not part or not math.isfinite(float(part)):
                return None
        except ValueError:
            return None
    return parts, how


def _numbers(ds: Dataset, keyword: str, count: int, path: Path, notes: _Notes | None = None) -> np.ndarray | None:
    """The ``count`` numbers of a decimal-string attribute of ``ds`` (a file or a functional-group item).

    A comma-written value is read (see :func:`_parse_numbers`), noted in ``notes`` and replaced in ``ds``
    (the in-memory header only) by its conformant form, so that a DICOM SEG copying it stays valid.

    Returns:
        float64 array of ``count`` values, or None when the attribute is absent or empty.

    Raises:
        DicomSeriesError: the value is not ``count`` decimal numbers; names the file, attribute and raw value.
    """
    text = _raw_text(ds, keyword)
    if text is None:
        return None
    parsed = _parse_numbers(text, count)
    if parsed is None:
        raise DicomSeriesError(
            f"{path}: {keyword} {text!r} is not {count} decimal number(s) "
            "(expected backslash-separated values such as '0.5\\0.5')"
        )
    parts, how = parsed
    if how:
        setattr(ds, keyword, parts if count > 1 else parts[0])
        if notes is not None:
            read_as = "\\".join(parts)
            notes.add(f"{keyword} written with {how} ({text!r}), read as {read_as}", path)
    return np.asarray([float(p) for p in parts], dtype=np.float64)


def _scalar(ds: Dataset, keyword: str, default: float, path: Path, notes: _Notes | None = None) -> float:
    values = _numbers(ds, keyword, 1, path, notes)
    return default if values is None else float(values[0])


def _display_name(patient_id: str, study_date: str, description: str, series_number: str, plane: str = "") -> str:
    return " ".join(part for part in (patient_id, study_date, f"{description}/{series_number}", plane) if part)


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
    # "axial", "sagittal", "coronal" (then "axial_2", ...): one orientation of a series whose images lie in
    # several (a tri-plane localizer), split so that each plane is a volume; "" for a whole series.
    part: str = ""

    @property
    def name(self) -> str:
        """Human-readable label: "<PatientID> <StudyDate> <SeriesDescription>/<SeriesNumber>[ part]"."""
        return _display_name(self.patient_id, self.study_date, self.description, self.series_number, self.part)


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
    # "axial", "sagittal", "coronal" (then "axial_2", ...) when the series was split by orientation, else "".
    part: str = ""
    # The frames have no patient geometry and are more than one: separate pictures (a cine loop, a set of
    # stills) with no known spatial relation, so each is normalised as a single image is.
    independent_frames: bool = False

    @property
    def name(self) -> str:
        """Human-readable label: "<PatientID> <StudyDate> <SeriesDescription>/<SeriesNumber>[ part]"."""
        return _display_name(self.patient_id, self.study_date, self.description, self.series_number, self.part)


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
    """Regular files under ``folder``, sorted; symlinked folders followed, each real folder once (no loops)."""
    seen = {os.path.realpath(folder)}
    for root, dirs, names in os.walk(folder, followlinks=True):
        kept = []
        for d in sorted(dirs):
            real = os.path.realpath(os.path.join(root, d))
            if real not in seen:
                seen.add(real)
                kept.append(d)
        dirs[:] = kept
        for name in sorted(names):
            path = Path(root) / name
            if path.is_file():  # not a FIFO (reading it would hang), socket, device or broken link
                yield path


def _reason(exc: BaseException) -> str:
    """``ExceptionName: message`` on one line, shortened: why one file could not be read."""
    text = " ".join(str(exc).split())
    if len(text) > 160:
        text = text[:157] + "..."
    return f"{exc.__class__.__name__}: {text}" if text else exc.__class__.__name__


def find_dicom_series(
    folder: str | os.PathLike, paths: Iterable[Path] | None = None
) -> tuple[list[SeriesRef], list[str]]:
    """Scan ``folder`` recursively (or only ``paths``, e.g. what a mixed folder holds besides images and
    volumes) and group image instances by study and series.

    Returns the series (sorted by patient, study date, series number, then plane) and messages: one per
    skipped file (non-DICOM, DICOMDIR, SR, SEG, RTSTRUCT, ...) and one per series split by orientation (a
    tri-plane localizer becomes one :class:`SeriesRef` per plane, ``part`` naming it). Only headers are read
    here; pydicom's warnings about them are not printed (loading the series reports them as notes).

    Raises:
        NotADirectoryError: ``folder`` is not a folder.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise NotADirectoryError(f"{folder} is not a folder")
    groups: dict[tuple[str, str], list[tuple[Path, Dataset]]] = defaultdict(list)
    skipped: list[str] = []
    # Header warnings are not shown here: loading the series reads the headers again and reports them as the
    # case's notes; a skipped file's warnings do not matter.
    with _pydicom_warnings([]):
        for path in _iter_files(folder) if paths is None else paths:
            try:
                ds = _dcmread(path, stop_before_pixels=True)
                reason = _skip_reason(ds)
            except Exception as exc:  # noqa: BLE001 - one bad file (struct.error, unknown VR, ...) must not end the scan
                skipped.append(f"{path}: skipped, not a readable DICOM file ({_reason(exc)})")
                continue
            finally:
                _collector.sink.clear()
            if reason:
                skipped.append(f"{path}: skipped, {reason}")
                continue
            groups[(_text(ds, "StudyInstanceUID"), _text(ds, "SeriesInstanceUID"))].append((path, ds))
        refs = []
        for (study, series), members in groups.items():
            parts = _split_by_orientation(members)
            if len(parts) > 1:
                skipped.append(
                    f"{members[0][0].parent}: series {series} holds images in {len(parts)} orientations "
                    f"(a localizer): split into {', '.join(name for name, _ in parts)} cases"
                )
            refs += [_series_ref(study, series, members, files, name) for name, files in parts]
            _collector.sink.clear()
    refs.sort(key=lambda r: (r.patient_id, r.study_date, r.study_uid, _number(r.series_number), r.series_uid, r.part))
    return refs, skipped


def _file_orientation(ds: Dataset, path: Path) -> np.ndarray | None:
    """The one ImageOrientationPatient of a file's frames, or None (absent, unreadable, or differing per frame)."""
    try:
        count = int(ds.get("NumberOfFrames", 1) or 1)
        if "PerFrameFunctionalGroupsSequence" in ds:
            items = [_group_item(ds, frame, "PlaneOrientationSequence") for frame in range(count)]
            values = [_numbers(item, "ImageOrientationPatient", 6, path) if item else None for item in items]
            if any(v is None for v in values) or any(
                not np.allclose(v, values[0], atol=ORIENTATION_TOLERANCE, rtol=0) for v in values
            ):
                return None
            return values[0]
        return _numbers(ds, "ImageOrientationPatient", 6, path) if count == 1 else None
    except (DicomSeriesError, ValueError, TypeError):
        return None  # loading the series reports it, naming the file


PLANES = ("sagittal", "coronal", "axial")  # by the LPS axis the slice normal is closest to


def _split_by_orientation(
    members: list[tuple[Path, Dataset]],
) -> list[tuple[str, list[Path]]]:
    """The files of one series grouped by image orientation: ``[("", files)]`` when they share one.

    Split (rather than skipped) because each orientation of a tri-plane localizer is a valid stack with
    exact geometry, as 3D Slicer and dcm2niix treat it. Only a series whose files all have a readable
    orientation is split; anything else stays one series, so loading it reports the fault as before.
    Each group is named after its slice normal's closest patient axis (``axial``, ``coronal``,
    ``sagittal``; a second group of the same name gets ``_2``, ...), ordered by name and orientation, so
    names do not depend on file names or scan order.
    """
    orientations = [_file_orientation(ds, path) for path, ds in members]
    if any(o is None for o in orientations):
        return [("", [path for path, _ in members])]
    groups: list[tuple[np.ndarray, list[Path]]] = []
    for (path, _), orientation in zip(members, orientations):
        for known, paths in groups:
            if np.allclose(known, orientation, atol=ORIENTATION_TOLERANCE, rtol=0):
                paths.append(path)
                break
        else:
            groups.append((orientation, [path]))
    if len(groups) == 1:
        return [("", groups[0][1])]
    named = []
    for orientation, paths in groups:
        normal = np.cross(orientation[:3], orientation[3:])
        plane = PLANES[int(np.argmax(np.abs(normal)))]
        named.append((plane, tuple(np.round(orientation, 4).tolist()), paths))
    named.sort(key=lambda item: (PLANES[::-1].index(item[0]), item[1]))
    out: list[tuple[str, list[Path]]] = []
    seen: dict[str, int] = {}
    for plane, _, paths in named:
        seen[plane] = seen.get(plane, 0) + 1
        out.append((plane if seen[plane] == 1 else f"{plane}_{seen[plane]}", paths))
    return out


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return float("inf")


def _series_ref(
    study_uid: str, series_uid: str, members: list[tuple[Path, Dataset]], files: list[Path], part: str
) -> SeriesRef:
    ds = next(ds for path, ds in members if path == files[0])
    return SeriesRef(
        study_uid=study_uid,
        series_uid=series_uid,
        modality=_text(ds, "Modality"),
        description=_text(ds, "SeriesDescription"),
        files=files,
        patient_id=_text(ds, "PatientID"),
        patient_name=_text(ds, "PatientName"),
        study_date=_text(ds, "StudyDate"),
        series_number=_text(ds, "SeriesNumber"),
        part=part,
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


def _pixel_spacing(item: Dataset | None, path: Path, notes: _Notes) -> tuple[float, float] | None:
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        values = _numbers(item, keyword, 2, path, notes) if item is not None else None
        if values is not None and np.all(values > 0):
            return float(values[0]), float(values[1])
    return None


def _enhanced_frames(ds: Dataset, index: int, path: Path, notes: _Notes) -> list[_Frame]:
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
                position=_numbers(position, "ImagePositionPatient", 3, path, notes) if position else None,
                orientation=_numbers(orientation, "ImageOrientationPatient", 6, path, notes) if orientation else None,
                spacing=_pixel_spacing(_group_item(ds, frame, "PixelMeasuresSequence"), path, notes),
                slope=_scalar(transform, "RescaleSlope", 1.0, path, notes) if transform else 1.0,
                intercept=_scalar(transform, "RescaleIntercept", 0.0, path, notes) if transform else 0.0,
                instance_number=float(frame),
            )
        )
    return frames


def _classic_frames(ds: Dataset, index: int, path: Path, notes: _Notes) -> list[_Frame]:
    """Frames of a classic object; a multi-frame one (cine, secondary capture) has no per-frame position."""
    count = int(ds.get("NumberOfFrames", 1) or 1)
    single = count == 1
    position = _numbers(ds, "ImagePositionPatient", 3, path, notes) if single else None
    orientation = _numbers(ds, "ImageOrientationPatient", 6, path, notes) if single else None
    spacing = _pixel_spacing(ds, path, notes)
    slope = _scalar(ds, "RescaleSlope", 1.0, path, notes) or 1.0  # a stored 0 means "not set"
    intercept = _scalar(ds, "RescaleIntercept", 0.0, path, notes)
    return [
        _Frame(
            dataset_index=index,
            frame=frame,
            path=path,
            position=position,
            orientation=orientation,
            spacing=spacing,
            slope=slope,
            intercept=intercept,
            instance_number=_number(_text(ds, "InstanceNumber")) + frame / count,
        )
        for frame in range(count)
    ]


def _frames_of(ds: Dataset, index: int, path: Path, notes: _Notes) -> list[_Frame]:
    if "PerFrameFunctionalGroupsSequence" in ds:
        return _enhanced_frames(ds, index, path, notes)
    return _classic_frames(ds, index, path, notes)


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


def _fallback_slice_spacing(ds: Dataset, path: Path, notes: _Notes) -> float:
    """Third-axis spacing of one slice or an unlocated stack: SpacingBetweenSlices, SliceThickness or 1 mm."""
    for keyword in ("SpacingBetweenSlices", "SliceThickness"):
        value = _numbers(ds, keyword, 1, path, notes)
        if value is not None and value[0] > 0:
            return float(value[0])
    return 1.0


# ---------------------------------------------------------------------------------------------- loading


def _read_datasets(files: list[Path], notes: _Notes) -> list[Dataset]:
    datasets = []
    for path in files:
        try:
            datasets.append(_dcmread(path))
        except (InvalidDicomError, OSError, ValueError, EOFError) as exc:
            raise DicomSeriesError(f"cannot read {path}: {exc}") from exc
        finally:
            _flush_warnings(notes, path)
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


def _fill_array(
    datasets: list[Dataset], files: list[Path], frames: list[_Frame], rgb: bool, notes: _Notes
) -> np.ndarray:
    """Decode each instance once into the (C, X, Y, Z) float32 volume, then drop its pixel bytes."""
    first = datasets[0]
    channels = 3 if rgb else 1
    array = np.empty((channels, int(first.Columns), int(first.Rows), len(frames)), dtype=np.float32)
    slots: dict[int, list[tuple[int, _Frame]]] = defaultdict(list)
    for k, frame in enumerate(frames):
        slots[frame.dataset_index].append((k, frame))
    for index, members in slots.items():
        try:
            pixels = _decode(datasets[index], files[index])
        finally:
            _flush_warnings(notes, files[index])
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


def _geometry(
    frames: list[_Frame], first: Dataset, path: Path, notes: _Notes, warnings: list[str]
) -> tuple[list[_Frame], np.ndarray, bool]:
    """Sort frames and build the affine; warn where geometry had to be assumed.

    Returns:
        The frames in volume order, the 4x4 RAS affine, and whether the frames have patient geometry.
    """
    if all(f.spacing is not None for f in frames):
        spacing = tuple(float(v) for v in _common(frames, "spacing", 1e-4, "PixelSpacing"))
    else:
        warnings.append("no PixelSpacing: 1 mm pixels assumed")
        spacing = (1.0, 1.0)
    if _check_geometry_present(frames):
        orientation = _common(frames, "orientation", ORIENTATION_TOLERANCE, "ImageOrientationPatient")
        normal = np.cross(orientation[:3], orientation[3:])
        frames, dz = _sort_by_position(frames, normal)
        dz = dz or _fallback_slice_spacing(first, path, notes)
        return frames, _located_affine(frames, orientation, spacing, dz), True
    frames = sorted(frames, key=lambda f: (f.instance_number, f.dataset_index, f.frame))
    warnings.append("no ImagePositionPatient/ImageOrientationPatient: identity orientation at the origin assumed")
    return frames, _unlocated_affine(spacing, _fallback_slice_spacing(first, path, notes)), False


def _flush_warnings(notes: _Notes, path: Path, keyword: str = "") -> None:
    """Move the warnings collected so far in this thread (see :func:`_pydicom_warnings`) into ``notes``."""
    sink = getattr(_collector, "sink", None)
    if sink:
        for message in sink:
            notes.add(f"pydicom: {keyword + ': ' if keyword else ''}{message}", path)
        sink.clear()


def _convert_elements(ds: Dataset, path: Path, notes: _Notes) -> None:
    """Convert every element of a header now, so pydicom's value warnings arise here, attributed to their
    attribute, rather than later (at SEG writing) or nowhere. An element pydicom cannot convert stays raw."""
    for tag in list(ds.keys()):
        keyword = keyword_for_tag(tag) or str(tag)
        try:
            elem = ds[tag]
        except Exception as exc:  # noqa: BLE001 - an unreadable optional element must not sink the series
            notes.add(f"pydicom: {keyword}: cannot read the value ({exc})", path)
            continue
        finally:
            _flush_warnings(notes, path, keyword)
        if elem.VR == "SQ":
            for item in elem.value:
                _convert_elements(item, path, notes)


def load_series(series: SeriesRef | Iterable[str | os.PathLike]) -> DicomSeries:
    """Read one series (a :class:`SeriesRef` or its files) into a :class:`DicomSeries`.

    A :class:`SeriesRef` that is one orientation of a split series (``part`` set) loads only its files.
    pydicom's warnings become entries of ``warnings`` (one per message, naming the files) instead of stderr.

    Raises:
        DicomSeriesError: naming the files, for no files, mixed sizes/orientations, duplicate positions,
            uneven spacing, mixed studies/series, non-image objects and unreadable pixel data; naming the
            file, attribute and raw value for a geometry number that cannot be read.
    """
    files = list(series.files) if isinstance(series, SeriesRef) else [Path(p) for p in series]
    if not files:
        raise DicomSeriesError("no files given for the series")
    notes = _Notes()
    with _pydicom_warnings([]):
        datasets = _read_datasets(files, notes)
        _check_same_series(datasets, files)
        _check_uniform_layout(datasets, files)
        frames = []
        for i, (ds, path) in enumerate(zip(datasets, files)):
            frames += _frames_of(ds, i, path, notes)
            _convert_elements(ds, path, notes)  # after _frames_of, which repaired comma-written numbers
        warnings: list[str] = []
        frames, affine, located = _geometry(frames, datasets[0], files[0], notes, warnings)
        order = list(dict.fromkeys(f.dataset_index for f in frames))  # datasets in volume order
        remap = {old: new for new, old in enumerate(order)}
        datasets = [datasets[i] for i in order]
        files = [files[i] for i in order]
        for frame in frames:
            frame.dataset_index = remap[frame.dataset_index]
        first = datasets[0]
        rgb = _is_rgb(first)
        array = _fill_array(datasets, files, frames, rgb, notes)
    part = series.part if isinstance(series, SeriesRef) else ""
    if part:
        warnings.append(
            f"series {_text(first, 'SeriesInstanceUID')} holds images in several orientations (a localizer); "
            f"this case is its {part} images, each other orientation is a case of its own"
        )
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
        warnings=warnings + notes.lines(),
        slice_sources=[(f.dataset_index, f.frame) for f in frames],
        study_date=_text(first, "StudyDate"),
        series_number=_text(first, "SeriesNumber"),
        part=part,
        independent_frames=not located and len(frames) > 1,
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
