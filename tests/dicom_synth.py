"""Synthesise realistic single-frame DICOM series (CT/MR Image Storage) from real volumes, for tests.

Each slice is a complete, standard file (explicit VR little endian, file meta, patient/study/series
identifiers, geometry, rescale). File names are random and unrelated to slice order, and InstanceNumber runs
opposite to the slice position, so a reader that sorts by name or number gets the order wrong.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid

SOP_CLASSES = {"CT": CTImageStorage, "MR": MRImageStorage}


@dataclass
class SynthSeries:
    """What to write: a volume (X, Y, Z) of real-world values and where it lies in LPS patient space."""

    volume: np.ndarray
    row_dir: Sequence[float] = (1.0, 0.0, 0.0)  # LPS direction of increasing column index (X)
    col_dir: Sequence[float] = (0.0, 1.0, 0.0)  # LPS direction of increasing row index (Y)
    pixel_spacing: tuple[float, float] = (1.0, 1.0)  # (between rows, between columns), DICOM order
    slice_spacing: float = 1.0
    origin: Sequence[float] = (0.0, 0.0, 0.0)  # LPS position of voxel (0, 0, 0)
    modality: str = "MR"
    slope: float = 1.0
    intercept: float = 0.0
    patient_id: str = "SYN-001"
    patient_name: str = "Synthetic^Patient"
    study_uid: str = field(default_factory=generate_uid)
    series_uid: str = field(default_factory=generate_uid)
    frame_of_reference_uid: str = field(default_factory=generate_uid)
    series_number: int = 3
    description: str = "synthetic series"

    @property
    def normal(self) -> np.ndarray:
        return np.cross(np.asarray(self.row_dir, float), np.asarray(self.col_dir, float))

    def position(self, k: int) -> np.ndarray:
        return np.asarray(self.origin, float) + k * self.slice_spacing * self.normal

    def stored(self) -> np.ndarray:
        """Stored integers such that stored * slope + intercept equals the volume."""
        values = np.rint((np.asarray(self.volume, np.float64) - self.intercept) / self.slope)
        return values.astype(np.int16)


def _decimal(value: float) -> str:
    return f"{value:.6f}".rstrip("0").rstrip(".") or "0"


def slice_dataset(series: SynthSeries, k: int, stored: np.ndarray) -> Dataset:
    """One image instance for slice ``k`` of ``series``."""
    sop_uid = generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SOP_CLASSES[series.modality]
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = SOP_CLASSES[series.modality]
    ds.SOPInstanceUID = sop_uid
    today = datetime.date(2024, 5, 17).strftime("%Y%m%d")
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = today
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "101500"
    ds.AccessionNumber = "ACC0001"
    ds.Modality = series.modality
    ds.Manufacturer = "Synthetic"
    ds.ReferringPhysicianName = ""
    ds.SeriesDescription = series.description
    ds.PatientName = series.patient_name
    ds.PatientID = series.patient_id
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.StudyInstanceUID = series.study_uid
    ds.SeriesInstanceUID = series.series_uid
    ds.StudyID = "1"
    ds.SeriesNumber = series.series_number
    ds.InstanceNumber = stored.shape[2] - k  # deliberately opposite to the position order
    ds.FrameOfReferenceUID = series.frame_of_reference_uid
    ds.PositionReferenceIndicator = ""
    ds.ImagePositionPatient = [_decimal(v) for v in series.position(k)]
    ds.ImageOrientationPatient = [_decimal(v) for v in (*series.row_dir, *series.col_dir)]
    ds.SliceLocation = _decimal(float(series.position(k) @ series.normal))
    ds.SliceThickness = _decimal(series.slice_spacing)
    ds.PixelSpacing = [_decimal(v) for v in series.pixel_spacing]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = stored.shape[1], stored.shape[0]
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.RescaleSlope, ds.RescaleIntercept = _decimal(series.slope), _decimal(series.intercept)
    if series.modality == "CT":
        ds.RescaleType = "HU"
        ds.KVP = "120"
    else:
        ds.ScanningSequence, ds.SequenceVariant, ds.ScanOptions, ds.MRAcquisitionType = "GR", "SP", "", "3D"
        ds.RepetitionTime, ds.EchoTime, ds.EchoTrainLength, ds.MagneticFieldStrength = "8.1", "3.7", "1", "3"
    ds.AcquisitionNumber = 1
    ds.PixelData = np.ascontiguousarray(stored[:, :, k].T).astype("<i2").tobytes()
    return ds


def write_series(series: SynthSeries, folder: Path, *, skip: Sequence[int] = (), seed: int = 0) -> list[Path]:
    """Write one file per slice (except ``skip``) into ``folder``; return the paths in slice order."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    stored = series.stored()
    paths = []
    for k in range(stored.shape[2]):
        if k in skip:
            continue
        path = folder / f"IM{rng.integers(10**9):09d}.dcm"
        pydicom.dcmwrite(path, slice_dataset(series, k, stored), enforce_file_format=True)
        paths.append(path)
    return paths


def ras_affine(series: SynthSeries) -> np.ndarray:
    """The RAS affine a correct reader must give (LPS columns: row_dir*dx, col_dir*dy, normal*dz)."""
    affine = np.eye(4)
    affine[:3, 0] = np.asarray(series.row_dir, float) * series.pixel_spacing[1]
    affine[:3, 1] = np.asarray(series.col_dir, float) * series.pixel_spacing[0]
    affine[:3, 2] = series.normal * series.slice_spacing
    affine[:3, 3] = series.origin
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine


TRIPLANE = {  # plane -> (row direction, column direction) in LPS, as a scanner's localizer writes them
    "axial": ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0)),
    "sagittal": ((0.0, 1.0, 0.0), (0.0, 0.0, -1.0)),
    "coronal": ((1.0, 0.0, 0.0), (0.0, 0.0, -1.0)),
}


def write_triplane_localizer(
    volume: np.ndarray, folder: Path, *, study_uid: str, frame_of_reference_uid: str
) -> tuple[dict[str, SynthSeries], dict[str, set[str]]]:
    """An MR localizer as scanners export it: axial, sagittal and coronal images of ``volume`` (X, Y, Z) under ONE
    SeriesInstanceUID, all in ``folder``.

    Returns:
        Per plane, its :class:`SynthSeries` (for the expected geometry) and its SOPInstanceUIDs.
    """
    series_uid = generate_uid()
    synth, uids = {}, {}
    for n, (plane, (row, col)) in enumerate(TRIPLANE.items()):
        synth[plane] = SynthSeries(
            volume,
            row_dir=row,
            col_dir=col,
            pixel_spacing=(1.5, 1.25),
            slice_spacing=5.0,
            origin=(-20.0 + n, -30.0, 10.0),
            series_uid=series_uid,
            series_number=1,
            description="localizer",
            study_uid=study_uid,
            frame_of_reference_uid=frame_of_reference_uid,
        )
        paths = write_series(synth[plane], folder, seed=n)
        uids[plane] = {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in paths}
    return synth, uids
