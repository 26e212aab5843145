"""What the user pointed at, as cases to segment: DICOM folders (each series), volume files, 2D images.

A case is named and listed before any pixels are read, so a batch can report every case and fail
one without losing the others; ``load()`` reads it into the engine's (C, X, Y, Z) + RAS affine form.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from PIL import Image

from .datalist import IMAGE_SUFFIXES
from .dicom_io import DicomSeries, find_dicom_series, load_series, lps_to_ras
from .nifti_io import read_nifti

__all__ = ["VOLUME_SUFFIXES", "Case", "Volume", "discover", "read_image_2d", "read_volume_file", "safe_name"]


@dataclass
class Volume:
    """A loaded case: pixels, geometry, and the DICOM series it came from (for DICOM SEG output).

    Attributes:
        array: (C, X, Y, Z) float32 in the input's units (HU for CT); a 2D image is (C, X, Y, 1) with X
            along its columns.
        affine: 4x4 voxel index -> RAS mm (identity for 2D images).
        is_2d_image: a photograph-like image (PNG/JPEG, or a one-frame RGB DICOM).
        series: the DICOM series, for DICOM input.
        warnings: things about the input a person should know (e.g. uneven slice spacing).
    """

    array: np.ndarray  # (C, X, Y, Z) float32
    affine: np.ndarray  # 4x4 voxel -> RAS mm
    is_2d_image: bool = False
    series: DicomSeries | None = None
    warnings: list[str] = field(default_factory=list)


@dataclass
class Case:
    """One thing to segment, named before any pixels are read.

    Attributes:
        name: unique and file-system safe: the output folder's name.
        source: what the user gave, for messages.
        kind: ``dicom``, ``volume`` or ``image``.
        load: reads the case into a :class:`Volume`.
        study: the DICOM StudyInstanceUID, or empty.
        series: the DICOM SeriesInstanceUID, or empty.
    """

    name: str  # unique, file-system safe: the output folder's name
    source: str  # what the user gave, for messages
    kind: str  # "dicom", "volume" or "image"
    load: Callable[[], Volume]
    study: str = ""
    series: str = ""


def safe_name(text: str) -> str:
    """``text`` with every run of characters other than letters, digits, ``.``, ``_``, ``-`` as ``_``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "case"


def read_image_2d(path: Path) -> Volume:
    """A PNG/JPEG/... as (C, X, Y, 1) with X along image columns, as MONAI's PIL reader lays it out.

    Grey images (modes L, I;16, I) keep one channel, everything else becomes RGB (C = 3).

    Raises:
        OSError: the file cannot be read as an image (PIL's UnidentifiedImageError is one).
    """
    with Image.open(path) as img:
        rgb = np.asarray(img.convert("RGB") if img.mode not in ("L", "I;16", "I") else img, dtype=np.float32)
    array = rgb[None] if rgb.ndim == 2 else np.moveaxis(rgb, -1, 0)
    return Volume(np.ascontiguousarray(np.swapaxes(array, 1, 2)[..., None]), np.eye(4), is_2d_image=True)


def read_volume_file(path: Path) -> Volume:
    """NIfTI through nibabel (exact affine); NRRD/MHA through SimpleITK, converted from LPS to RAS.

    Returns:
        The volume, array (C, X, Y, Z) float32 and affine voxel -> RAS mm.

    Raises:
        nibabel.filebasedimages.ImageFileError: nibabel cannot read the NIfTI file.
        ValueError: the NIfTI array is not 2D, 3D, 4D or a vector image.
        RuntimeError: SimpleITK cannot read the file.
    """
    if path.name.lower().endswith((".nii", ".nii.gz")):
        array, affine = read_nifti(path)
        return Volume(array, affine)
    image = sitk.ReadImage(str(path))
    data = sitk.GetArrayFromImage(image).astype(np.float32)  # (Z, Y, X[, C])
    if image.GetNumberOfComponentsPerPixel() > 1:
        array = np.moveaxis(data, -1, 0).transpose(0, 3, 2, 1)
    else:
        array = data.transpose(2, 1, 0)[None]
    direction = np.array(image.GetDirection()).reshape(3, 3)
    lps = np.eye(4)
    lps[:3, :3] = direction * np.array(image.GetSpacing())
    lps[:3, 3] = image.GetOrigin()
    return Volume(np.ascontiguousarray(array), lps_to_ras(lps))


def _dicom_volume(ref) -> Callable[[], Volume]:
    def load() -> Volume:
        series = load_series(ref)
        is_2d = series.is_rgb and series.array.shape[-1] == 1
        return Volume(series.array, series.affine, is_2d_image=is_2d, series=series, warnings=series.warnings)

    return load


VOLUME_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".mha", ".mhd")


def discover(inputs: list[str]) -> tuple[list[Case], list[str]]:
    """Expand the command line's inputs into named cases; returns (cases, messages about skipped files).

    A folder gives one case per DICOM image series found in it (recursively); repeated names get ``_2``,
    ``_3``, ... Nothing is read beyond the DICOM headers.

    Args:
        inputs: DICOM folders, volume files (:data:`VOLUME_SUFFIXES`) or 2D images.

    Raises:
        FileNotFoundError: an input does not exist, or a folder holds no DICOM image series.
        ValueError: a file is neither a volume nor a 2D image.
    """
    cases: list[Case] = []
    notes: list[str] = []
    for item in inputs:
        path = Path(item).expanduser()
        if path.is_dir():
            refs, skipped = find_dicom_series(path)
            notes += skipped
            if not refs:
                raise FileNotFoundError(f"{path}: no DICOM image series found in this folder")
            for ref in refs:
                label = f"{ref.patient_id or path.name}_{ref.series_number or ref.series_uid[-8:]}_{ref.description}"
                cases.append(
                    Case(safe_name(label), str(path), "dicom", _dicom_volume(ref), ref.study_uid, ref.series_uid)
                )
        elif path.is_file() and path.name.lower().endswith(VOLUME_SUFFIXES):
            stem = re.sub(r"\.(nii\.gz|nii|nrrd|mha|mhd)$", "", path.name, flags=re.I)
            cases.append(Case(safe_name(stem), str(path), "volume", lambda p=path: read_volume_file(p)))
        elif path.is_file() and path.name.lower().endswith(IMAGE_SUFFIXES):
            cases.append(Case(safe_name(path.stem), str(path), "image", lambda p=path: read_image_2d(p)))
        elif path.is_file():
            raise ValueError(f"{path}: not a DICOM folder, volume ({', '.join(VOLUME_SUFFIXES)}) or 2D image")
        else:
            raise FileNotFoundError(f"input not found: {path}")
    seen: dict[str, int] = {}
    for case in cases:
        n = seen.get(case.name, 0)
        seen[case.name] = n + 1
        if n:
            case.name = f"{case.name}_{n + 1}"
    return cases, notes
