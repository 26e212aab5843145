"""NIfTI (and Slicer .seg.nrrd) output with an exact RAS affine, and NIfTI input in the same convention.

Volumes are channel-first ``(C, X, Y, Z)``; label maps are ``(X, Y, Z)``. The affine given by the caller (from
the DICOM reader, or from an input NIfTI) is written as both sform and qform with code 1 (scanner), so every
viewer places the result exactly on its source. Writes are atomic (see :mod:`.atomic`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from ..segments import SegmentInfo, segments_from_dicts
from .atomic import atomic_path

__all__ = ["label_dtype", "read_nifti", "write_nifti", "write_seg_nrrd"]


def label_dtype(array: np.ndarray) -> np.dtype:
    """Smallest common integer type holding a label map (uint8 for usual maps), float32 for images."""
    if array.dtype == bool:
        return np.dtype(np.uint8)
    if not np.issubdtype(array.dtype, np.integer):
        return np.dtype(np.float32)
    low, high = (int(array.min()), int(array.max())) if array.size else (0, 0)
    for dtype in (np.uint8, np.int16, np.int32):
        info = np.iinfo(dtype)
        if info.min <= low and high <= info.max:
            return np.dtype(dtype)
    return np.dtype(np.int64)


def _check_affine(affine: np.ndarray) -> np.ndarray:
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4) or not np.allclose(affine[3], [0, 0, 0, 1]):
        raise ValueError(f"affine must be a 4x4 homogeneous matrix, got {affine.tolist()}")
    if abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise ValueError("affine is singular")
    return affine


def write_nifti(array: np.ndarray, affine: np.ndarray, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write an (X, Y, Z) label map or a (C, X, Y, Z) volume to ``path`` (.nii or .nii.gz) atomically.

    C = 1 is written as a 3D image, C > 1 as 4D with the channel last (X, Y, Z, C), which MONAI and nibabel
    read as channels. Integer and boolean arrays are stored in the smallest fitting integer type,
    other arrays as float32. Both sform and qform get the affine (code 1); units are mm.

    Args:
        array: (X, Y, Z) labels or (C, X, Y, Z) values.
        affine: 4x4 voxel index -> RAS mm.
        path: a ``.nii`` or ``.nii.gz`` file.
        overwrite: replace an existing file.

    Returns:
        ``path``.

    Raises:
        ValueError: ``array`` is not 3D or 4D, or ``affine`` is not a non-singular 4x4 homogeneous matrix.
        FileExistsError: ``path`` exists and ``overwrite`` is False.
    """
    array = np.asarray(array)
    if array.ndim == 4:
        array = array[0] if array.shape[0] == 1 else np.moveaxis(array, 0, -1)
    elif array.ndim != 3:
        raise ValueError(f"expected (X, Y, Z) or (C, X, Y, Z), got shape {array.shape}")
    affine = _check_affine(affine)
    image = nib.Nifti1Image(array.astype(label_dtype(array), copy=False), affine)
    image.set_sform(affine, code=1)
    image.set_qform(affine, code=1)
    image.header.set_xyzt_units("mm")
    with atomic_path(path, overwrite=overwrite) as tmp:
        nib.save(image, tmp)
    return Path(path)


def read_nifti(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read a NIfTI (or FreeSurfer MGH/MGZ) image as ``((C, X, Y, Z) float32, 4x4 RAS affine)``; 2D images get
    Z = 1.

    A 4D image's last axis becomes C; a vector image (X, Y, Z, 1, C) too. Values are scaled by the header's
    slope and intercept (``get_fdata``); the affine is nibabel's (sform, else qform), in mm.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: ``path`` is not a readable NIfTI file: not NIfTI at all, a gzip stream cut short or
            corrupt, or a header promising more voxels than the file holds (the message names the file
            and the reason); or the image has an unsupported number of dimensions.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"input not found: {path}")
    try:
        image = nib.load(path)
        # reads every voxel now: a short or corrupt file must fail here, before any output is written
        data = np.asarray(image.get_fdata(dtype=np.float32))
    except Exception as err:  # nibabel, gzip, zlib and numpy each raise their own kinds for a bad file
        reason = " ".join(str(err).split()) or type(err).__name__
        if isinstance(err, EOFError):  # gzip's words for a .nii.gz cut short
            reason = f"compressed data ends early: {reason}"
        kind = "MGH" if str(path).lower().endswith((".mgz", ".mgh")) else "NIfTI"
        raise ValueError(f"{path}: unreadable {kind} file, truncated or corrupt? ({reason})") from err
    if data.ndim == 2:
        data = data[:, :, None]
    if data.ndim == 3:
        data = data[None]
    elif data.ndim == 4:
        data = np.moveaxis(data, -1, 0)
    elif data.ndim == 5 and data.shape[3] == 1:  # NIfTI vector images: (X, Y, Z, 1, C)
        data = np.moveaxis(data[:, :, :, 0], -1, 0)
    else:
        raise ValueError(f"{path}: unsupported NIfTI shape {data.shape}")
    return np.ascontiguousarray(data), np.asarray(image.affine, dtype=np.float64)


def _slicer_code(code: tuple[str, str, str]) -> list[str]:
    """slicerio (like Slicer's terminology strings) orders a code as [scheme, value, meaning]."""
    value, scheme, meaning = code
    return [scheme, value, meaning]


def _slicer_segment(info: SegmentInfo) -> dict[str, Any]:
    """One segment as slicerio writes it: the ``Segment<N>_*`` keys 3D Slicer reads (names, colours, terminology)."""
    terminology = {
        "contextName": "Segmentation category and type - DICOM master list",
        "category": _slicer_code(info.category),
        "type": _slicer_code(info.type),
        "anatomicContextName": "Anatomic codes - DICOM master list",
    }
    if info.type_modifier:
        terminology["typeModifier"] = _slicer_code(info.type_modifier)
    if info.laterality:
        # the structure as anatomic region, the side as its modifier: as the DICOM SEG and the Slicer import do
        terminology["anatomicRegion"] = _slicer_code(info.type)
        terminology["anatomicRegionModifier"] = _slicer_code(info.laterality)
    return {
        "id": f"Segment_{info.value}",
        "name": info.name,
        "nameAutoGenerated": False,
        "color": [c / 255 for c in info.color],
        "colorAutoGenerated": False,
        "labelValue": info.value,
        "layer": 0,
        "terminology": terminology,
    }


def write_seg_nrrd(
    label_map: np.ndarray,
    affine: np.ndarray,
    segments: Sequence[SegmentInfo] | Sequence[dict[str, Any]],
    path: str | os.PathLike,
    *,
    overwrite: bool = False,
) -> Path:
    """Write an (X, Y, Z) label map as a 3D Slicer segmentation (.seg.nrrd) with segment names and colours.

    slicerio writes it: LPS space (the RAS affine's first two axes negated), gzip-encoded, with the
    ``Segment<N>_*`` keys 3D Slicer reads, terminology from the segments' DICOM codes.

    Args:
        label_map: (X, Y, Z) label values.
        affine: 4x4 voxel index -> RAS mm.
        segments: the segments, as :class:`SegmentInfo` or their dicts.
        path: the ``.seg.nrrd`` file.
        overwrite: replace an existing file.

    Returns:
        ``path``.

    Raises:
        ValueError: ``label_map`` is not 3D, or ``affine`` is not a non-singular 4x4 homogeneous matrix.
        FileExistsError: ``path`` exists and ``overwrite`` is False.
    """
    import slicerio

    label_map = np.asarray(label_map)
    if label_map.ndim != 3:
        raise ValueError(f"expected an (X, Y, Z) label map, got shape {label_map.shape}")
    infos = sorted(segments_from_dicts(list(segments)), key=lambda s: s.value)
    segmentation = {
        "voxels": label_map.astype(np.uint8 if label_map.max(initial=0) < 256 else np.int16),
        "ijkToLPS": np.diag([-1.0, -1.0, 1.0, 1.0]) @ _check_affine(affine),
        "encoding": "gzip",
        "masterRepresentation": "Binary labelmap",
        "containedRepresentationNames": ["Binary labelmap"],
        "referenceImageExtentOffset": [0, 0, 0],
        "segments": [_slicer_segment(info) for info in infos],
    }
    with atomic_path(path, overwrite=overwrite) as tmp:
        slicerio.write_segmentation(str(tmp), segmentation)
    return Path(path)
