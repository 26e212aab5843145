"""Data in and out: DICOM series, DICOM SEG, NIfTI/NRRD and image readers and writers, case discovery,
datalists, atomic writes and overlays.

The names below are imported on first use, so importing the package itself imports nothing heavy.
"""

from __future__ import annotations

from .._lazy import lazy_exports

_PUBLIC = {
    "Case": "cases",
    "Volume": "image_io",
    "discover": "cases",
    "read_image_2d": "image_io",
    "read_volume_file": "image_io",
    "DicomSeries": "dicom_io",
    "DicomSeriesError": "dicom_io",
    "SeriesRef": "dicom_io",
    "find_dicom_series": "dicom_io",
    "load_series": "dicom_io",
    "EmptySegmentationError": "dicom_seg",
    "read_dicom_seg": "dicom_seg",
    "write_dicom_seg": "dicom_seg",
    "read_nifti": "nifti_io",
    "write_nifti": "nifti_io",
    "write_seg_nrrd": "nifti_io",
    "atomic_path": "atomic",
    "atomic_write_bytes": "atomic",
    "atomic_write_text": "atomic",
    "load_items": "datalist",
}

__all__ = list(_PUBLIC)

__getattr__, __dir__ = lazy_exports(__name__, _PUBLIC)
