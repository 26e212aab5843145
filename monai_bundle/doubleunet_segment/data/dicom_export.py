"""Write a volume as a classic MR DICOM series (one file per slice), every file marked as synthetic.

The demo shows a radiologist's use case on a whole-head MR DICOM study without shipping patient data: the MNI152
T1 template (an average of many brains, shipped in nilearn's wheel) is written as an axial MR series with a
made-up identity, then segmented like any study from a PACS. :func:`write_volume_as_series` is that writer; it
is meant for synthetic and template volumes only, since it states in every file that no patient data is inside.

What is written follows the MR Image IOD (DICOM PS3.3 A.4), MR Image Storage SOP class
(1.2.840.10008.5.1.4.1.1.4), explicit VR little endian, with these PS3.3 modules: Patient (C.7.1.1, with the
de-identification attributes), General Study (C.7.2.1), General Series (C.7.3.1), Frame of Reference (C.7.4.1),
General Equipment (C.7.5.1), General Acquisition (C.7.10.1), General Image (C.7.6.1), Image Plane (C.7.6.2),
Image Pixel (C.7.6.3), MR Image (C.8.3.1) and SOP Common (C.12.1, with Synthetic Data = YES).
"""

from __future__ import annotations

import copy
import datetime
import os
import re
from pathlib import Path

import nibabel as nib
import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import dcmwrite
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid
from pydicom.valuerep import format_number_as_ds

from .atomic import OutputExistsError, atomic_files

__all__ = ["MANUFACTURER", "MNI152_SOURCE", "write_volume_as_series"]

MANUFACTURER = "DoubleU-Net Segment (synthetic)"
MNI152_SOURCE = "MNI152 T1 template (nilearn)"

# Voxel axes (columns, rows, slices) as scanners store each plane, in nibabel's axis codes (the direction each
# index increases towards). Axial: patient's right on the viewer's left, anterior at the top, slices foot to
# head; the slice axis is the cross product of the row and column directions, as DICOM readers assume.
_PLANES = {
    "axial": ("L", "P", "S"),
    "sagittal": ("P", "I", "R"),
    "coronal": ("L", "I", "P"),
}
_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])  # its own inverse
_ORTHOGONALITY_TOLERANCE = 1e-4  # direction cosines; float32 NIfTI affines carry ~1e-7 of noise
_UINT16_MAX = 65535
_LO_LIMIT = 64  # characters in an LO value (and a PN component group), PS3.5 6.2
_SLICE_NAME = re.compile(r"slice_\d+\.dcm")  # the files this writer names, see _slice_names

# MR Image module (PS3.3 C.8.3.1) acquisition attributes: nominal values of a 3D spoiled gradient-echo
# T1-weighted acquisition at 1.5 T, the kind of scan such templates are averaged from. They describe no actual
# scan (an average of many has none); type 1/2 attributes need values, and these are plausible ones.
_NOMINAL_T1_3D = {
    "ScanningSequence": "GR",
    "SequenceVariant": ["SP", "SS"],
    "ScanOptions": "",
    "MRAcquisitionType": "3D",
    "RepetitionTime": "18",  # ms
    "EchoTime": "10",  # ms
    "EchoTrainLength": 1,
    "FlipAngle": "30",  # degrees
    "NumberOfAverages": "1",
    "ImagedNucleus": "1H",
    "MagneticFieldStrength": "1.5",  # tesla
    "AngioFlag": "N",
}


def _ds(value: float) -> str:
    """``value`` as a DICOM decimal string (16 characters at most), as precise as that allows."""
    return format_number_as_ds(float(value))


def _check_length(value: str, name: str, limit: int = _LO_LIMIT) -> None:
    if len(value) > limit:
        raise ValueError(f"{name} is {len(value)} characters long; at most {limit} fit its DICOM attribute: {value!r}")


def _checked_geometry(array: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``array`` as finite float64 and ``affine`` as float64, or a ValueError saying what is wrong."""
    array = np.asarray(array)
    if array.ndim != 3 or 0 in array.shape:
        raise ValueError(f"expected a non-empty 3D (X, Y, Z) array, got shape {array.shape}")
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise ValueError(f"expected numeric intensities, got dtype {array.dtype}")
    values = array.astype(np.float64)
    if not np.all(np.isfinite(values)):
        raise ValueError("the array holds NaN or infinite values, which DICOM integers cannot store")
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
        raise ValueError(f"expected a finite 4x4 affine, got shape {affine.shape}")
    if not np.allclose(affine[3], (0, 0, 0, 1)):
        raise ValueError(f"the affine's last row must be (0, 0, 0, 1), got {affine[3].tolist()}")
    if abs(np.linalg.det(affine[:3, :3])) < 1e-9:
        raise ValueError("the affine is singular: its voxels have no extent along some direction")
    return values, affine


def _reoriented(values: np.ndarray, affine: np.ndarray, orientation: str) -> tuple[np.ndarray, np.ndarray]:
    """Flip and transpose voxels (never resample) so the axes run as ``_PLANES[orientation]``; the new affine."""
    transform = nib.orientations.ornt_transform(
        nib.orientations.io_orientation(affine), nib.orientations.axcodes2ornt(_PLANES[orientation])
    )
    return (
        nib.orientations.apply_orientation(values, transform),
        affine @ nib.orientations.inv_ornt_aff(transform, values.shape),
    )


def _plane_geometry(affine_ras: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Image Plane module values from a voxel -> RAS affine whose slices are planes of voxel axes 0 and 1.

    Returns:
        The LPS affine (4x4, mm), ImageOrientationPatient (row then column direction cosines, 6 values) and
        (between rows, between columns, between slices) spacing in mm.

    Raises:
        ValueError: the voxel axes are not orthogonal (a sheared affine, e.g. gantry tilt). A mirrored one cannot
            reach here: after :func:`_reoriented` every orthogonal affine is right-handed in LPS.
    """
    lps = _RAS_TO_LPS @ affine_ras
    steps = np.linalg.norm(lps[:3, :3], axis=0)
    units = lps[:3, :3] / steps
    normal = np.cross(units[:, 0], units[:, 1])
    if (
        abs(units[:, 0] @ units[:, 1]) > _ORTHOGONALITY_TOLERANCE
        or np.linalg.norm(normal - units[:, 2]) > _ORTHOGONALITY_TOLERANCE
    ):
        raise ValueError(
            "the affine's voxel axes are not orthogonal (sheared, e.g. gantry tilt); DICOM image planes need "
            f"orthogonal rows, columns and slices: direction matrix {np.round(units, 5).tolist()}"
        )
    return lps, np.concatenate([units[:, 0], units[:, 1]]), np.array([steps[1], steps[0], steps[2]])


def _stored_uint16(values: np.ndarray) -> tuple[np.ndarray, float, float]:
    """16-bit unsigned stored values with stored * slope + intercept = values (within slope / 2).

    Integers already within 0..65535 are stored as they are (slope 1, intercept 0, no rescale needed); other
    integers spanning at most 65535 keep slope 1 with their minimum as intercept; anything else is mapped
    linearly onto the full 0..65535 range. Slope and intercept are rounded to decimal strings first, so the
    stored values are computed with exactly the numbers a reader will use.
    """
    low, high = float(values.min()), float(values.max())
    if np.array_equal(values, np.round(values)) and high - low <= _UINT16_MAX:
        intercept = 0.0 if low >= 0 and high <= _UINT16_MAX else low
        slope = 1.0
    else:
        intercept = float(_ds(low)) + 0.0  # + 0.0 turns -0.0 (a float's minimum can be) into 0.0
        slope = float(_ds((high - low) / _UINT16_MAX)) or 1.0  # a constant non-integer volume: any slope works
    stored = np.clip(np.rint((values - intercept) / slope), 0, _UINT16_MAX)
    return stored.astype(np.uint16), slope, intercept


def _series_header(
    *,
    shape: tuple[int, int, int],
    iop: np.ndarray,
    spacing: np.ndarray,
    slope: float,
    intercept: float,
    series_description: str,
    patient_name: str,
    patient_id: str,
    source: str,
    orientation: str,
) -> Dataset:
    """Attributes shared by every slice of the series (new study, series and frame-of-reference UIDs)."""
    now = datetime.datetime.now()
    date, time = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    ds = Dataset()
    # SOP Common
    ds.SpecificCharacterSet = "ISO_IR 192"  # UTF-8: descriptions given by the caller may be non-ASCII
    ds.SOPClassUID = MRImageStorage
    ds.InstanceCreationDate, ds.InstanceCreationTime = date, time
    ds.SyntheticData = "YES"
    # Patient, with the de-identification attributes: the identity is made up, not removed from anyone
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = ["SYNTHETIC: no patient data", f"{source} written as DICOM"]
    # General Study
    ds.StudyInstanceUID = generate_uid()
    ds.StudyDate, ds.StudyTime = date, time
    ds.ReferringPhysicianName = ""
    ds.StudyID = "SYNTHETIC"
    ds.AccessionNumber = ""
    ds.StudyDescription = "SYNTHETIC demo study"
    # General Series
    ds.Modality = "MR"
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = 1
    ds.SeriesDate, ds.SeriesTime = date, time
    ds.SeriesDescription = series_description
    ds.BodyPartExamined = "HEAD"  # unpaired, so Laterality (type 2C) is absent
    ds.PatientPosition = "HFS"  # nominal: head first, supine, as heads are scanned
    # Frame of Reference
    ds.FrameOfReferenceUID = generate_uid()
    ds.PositionReferenceIndicator = ""
    # General Equipment
    ds.Manufacturer = MANUFACTURER
    # General Acquisition
    ds.AcquisitionNumber = 1
    # General Image (the volume is computed, not acquired: DERIVED, SECONDARY)
    ds.ImageType = ["DERIVED", "SECONDARY", "OTHER"]
    ds.ContentDate, ds.ContentTime = date, time
    ds.ImageComments = (
        f"SYNTHETIC image, no patient data: the {source} written as an {orientation} DICOM series by "
        "DoubleU-Net Segment for demonstration; the MR acquisition parameters are nominal."
    )
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = "00"
    # Image Plane (ImagePositionPatient and SliceLocation are per slice)
    ds.ImageOrientationPatient = [_ds(v) for v in iop]
    ds.PixelSpacing = [_ds(spacing[0]), _ds(spacing[1])]
    ds.SliceThickness = _ds(spacing[2])  # the voxels are contiguous: as thick as they are apart
    ds.SpacingBetweenSlices = _ds(spacing[2])
    # Image Pixel
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Columns, ds.Rows = shape[0], shape[1]
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    if slope != 1.0 or intercept != 0.0:
        # Not part of the MR Image IOD (dciodvfy warns) but written by MR scanners and applied by every reader,
        # this project's included; only written when stored values differ from the intensities.
        ds.RescaleSlope, ds.RescaleIntercept = _ds(slope), _ds(intercept)
    # MR Image
    for keyword, value in _NOMINAL_T1_3D.items():
        setattr(ds, keyword, value)
    return ds


def _slice_names(count: int) -> list[str]:
    """File names in slice order, zero-padded so that a listing sorted by name is in slice order too."""
    width = max(4, len(str(count)))
    return [f"slice_{k + 1:0{width}d}.dcm" for k in range(count)]


def write_volume_as_series(
    array: np.ndarray,
    affine: np.ndarray,
    folder: Path,
    *,
    modality: str = "MR",
    series_description: str,
    patient_name: str = "SYNTHETIC^MNI152",
    patient_id: str = "SYNTHETIC-MNI152",
    orientation: str = "axial",
    source: str = MNI152_SOURCE,
    overwrite: bool = False,
) -> list[Path]:
    """Write a synthetic volume as a classic MR DICOM series, one file per slice, and return the files.

    The voxels are flipped and transposed with nibabel (never resampled) so that each file holds one plane of
    ``orientation`` laid out as scanners store it, in DICOM's LPS patient coordinates: in axial images the column
    index increases towards the patient's left, the row index towards posterior, and slices run from foot
    to head (ImageOrientationPatient ``1\\0\\0\\0\\1\\0`` for an axis-aligned volume); sagittal ones
    ``0\\1\\0\\0\\0\\-1``, coronal ones ``1\\0\\0\\0\\0\\-1``. An oblique affine keeps its obliquity: the planes
    are those of the voxel axes nearest to ``orientation``. Reading the series back (this package's reader,
    SimpleITK) gives the same voxels at the same world positions, in that storage order.

    Intensities become 16-bit unsigned stored values. Integers within 0..65535 are stored as they are; other
    integers spanning at most 65535 keep unit steps (RescaleIntercept = their minimum); anything else is mapped
    linearly onto 0..65535 with RescaleSlope/RescaleIntercept, so read-back values differ from ``array`` by at
    most half the slope. Rescale attributes are written only when needed (dciodvfy warns that they are not part
    of the MR Image IOD, but MR scanners write them and readers apply them).

    Every file says it is synthetic: Synthetic Data = YES, PatientIdentityRemoved = YES, DeidentificationMethod
    ``SYNTHETIC: no patient data`` / ``<source> written as DICOM``, ImageComments and SeriesDescription
    containing ``SYNTHETIC`` (prefixed when ``series_description`` lacks it), BurnedInAnnotation = NO,
    Manufacturer :data:`MANUFACTURER`. Each call makes new study, series, frame-of-reference and instance UIDs;
    the study, series and content dates and times are those of the call. The MR acquisition attributes
    (ScanningSequence, EchoTime, RepetitionTime, ...) are nominal values of a 3D T1 spoiled gradient echo, and
    PatientPosition is a nominal HFS: a template has no acquisition of its own.

    Files are named ``slice_0001.dcm`` ... in slice order (InstanceNumber 1, 2, ... likewise) and published all
    or none (:func:`.atomic.atomic_files`: temporary files beside their targets, then renamed into place).

    Args:
        array: (X, Y, Z) intensities, any integer, float or bool dtype; X, Y, Z are the voxel axes of
            ``affine`` (nibabel's layout), in any storage order.
        affine: 4x4 voxel index (i, j, k) -> RAS mm (nibabel/NIfTI convention); its axes must be orthogonal.
        folder: created if missing (parents too); must be empty unless ``overwrite``.
        modality: must be ``MR`` (the only SOP class written is MR Image Storage).
        series_description: SeriesDescription (64 characters at most with the ``SYNTHETIC`` prefix).
        patient_name: PatientName, a made-up one (DICOM PN, ``Family^Given``).
        patient_id: PatientID, a made-up one.
        orientation: ``axial`` (transverse), ``sagittal`` or ``coronal``: the plane of each file.
        source: what the volume is, for DeidentificationMethod and ImageComments (47 characters at most).
        overwrite: write into a non-empty folder, replacing files of the same names; files named like this
            writer's slices (``slice_<digits>.dcm``) that the new series does not replace are removed, so that
            the folder never holds two series of this writer; other files are left.

    Returns:
        The written files, in slice order (foot to head for axial).

    Raises:
        ValueError: ``array`` is not 3D, is empty, not numeric or not finite; ``affine`` is not a finite 4x4
            affine, is singular or sheared; ``modality`` is not MR; ``orientation`` is unknown; a text attribute
            is longer than DICOM allows.
        FileExistsError: ``folder`` exists and is not empty and ``overwrite`` is False (an
            :class:`.atomic.OutputExistsError`), or ``folder`` is a file.
    """
    if modality != "MR":
        raise ValueError(f"only MR Image Storage is written; modality must be 'MR', got {modality!r}")
    if orientation not in _PLANES:
        raise ValueError(f"orientation must be one of {', '.join(_PLANES)}; got {orientation!r}")
    if "SYNTHETIC" not in series_description.upper():
        series_description = f"SYNTHETIC {series_description}".strip()
    for value, name in (
        (series_description, "series_description"),
        (patient_name, "patient_name"),
        (patient_id, "patient_id"),
    ):
        _check_length(value, name)
    _check_length(source, "source", _LO_LIMIT - len(" written as DICOM"))  # one DeidentificationMethod value
    values, affine = _checked_geometry(array, affine)
    values, affine = _reoriented(values, affine, orientation)
    lps, iop, spacing = _plane_geometry(affine)
    stored, slope, intercept = _stored_uint16(values)

    folder = Path(folder)
    if folder.is_dir() and any(folder.iterdir()) and not overwrite:
        raise OutputExistsError(
            folder, f"{folder} exists and is not empty; refusing to write a series into it (pass overwrite=True)"
        )
    folder.mkdir(parents=True, exist_ok=True)  # FileExistsError when ``folder`` is a file

    header = _series_header(
        shape=stored.shape,
        iop=iop,
        spacing=spacing,
        slope=slope,
        intercept=intercept,
        series_description=series_description,
        patient_name=patient_name,
        patient_id=patient_id,
        source=source,
        orientation=orientation,
    )
    normal = np.cross(iop[:3], iop[3:])
    paths = [folder / name for name in _slice_names(stored.shape[2])]
    with atomic_files(dict(enumerate(paths)), overwrite=overwrite) as temps:
        for k, tmp in temps.items():
            position = (lps @ (0.0, 0.0, k, 1.0))[:3]
            ds = copy.deepcopy(header)
            ds.SOPInstanceUID = generate_uid()
            ds.InstanceNumber = k + 1
            ds.ImagePositionPatient = [_ds(v) for v in position]
            ds.SliceLocation = _ds(position @ normal)
            # (X, Y) -> (rows, columns): DICOM stores a row of the image contiguously
            ds.PixelData = np.ascontiguousarray(stored[:, :, k].T).astype("<u2").tobytes()
            ds.file_meta = FileMetaDataset()
            ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
            dcmwrite(tmp, ds, enforce_file_format=True)
    if overwrite:
        written = {path.name for path in paths}
        for stale in folder.iterdir():
            if _SLICE_NAME.fullmatch(stale.name) and stale.name not in written:
                os.remove(stale)
    return paths
