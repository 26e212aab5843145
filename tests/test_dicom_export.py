"""Writing a volume as a synthetic MR DICOM series: round trips through this package's reader and SimpleITK on the
real MNI152 template and on a small LIA-stored volume, DICOM conformance (dciodvfy), the synthetic marks and the
overwrite rules."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from doubleunet_segment.data.cases import discover
from doubleunet_segment.data.dicom_export import MANUFACTURER, write_volume_as_series
from helpers import dciodvfy_errors
from nilearn.datasets import load_mni152_template

AXIAL_IOP = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]


def to_ras(array: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``array`` (X, Y, Z) flipped/transposed so its axes run towards R, A, S, and the matching affine."""
    ornt = nib.orientations.io_orientation(affine)
    return nib.orientations.apply_orientation(array, ornt), affine @ nib.orientations.inv_ornt_aff(ornt, array.shape)


def read_back(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """The series in ``folder`` through the package's own case discovery: (X, Y, Z) float32 and RAS affine."""
    cases, notes = discover([str(folder)])
    assert len(cases) == 1 and cases[0].kind == "dicom" and not notes
    volume = cases[0].load()
    assert volume.array.shape[0] == 1 and volume.array.dtype == np.float32 and not volume.warnings
    return volume.array[0], volume.affine


def assert_same_world(
    written: tuple[np.ndarray, np.ndarray], original: tuple[np.ndarray, np.ndarray], atol: float
) -> None:
    """Same voxels at the same RAS positions, whatever the storage orders: compared after reorienting to RAS."""
    array, affine = to_ras(*written)
    expected, expected_affine = to_ras(*original)
    assert array.shape == expected.shape
    np.testing.assert_allclose(affine, expected_affine, atol=1e-3, rtol=0)
    np.testing.assert_allclose(array, expected, atol=atol, rtol=0)


def lia_volume(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``values`` (X, Y, Z) on an anisotropic RAS grid, re-stored LIA with nibabel (flipped and transposed)."""
    affine = np.diag([0.8, 1.2, 2.5, 1.0])
    affine[:3, 3] = (10.0, -20.0, 30.0)
    transform = nib.orientations.ornt_transform(
        nib.orientations.axcodes2ornt("RAS"), nib.orientations.axcodes2ornt("LIA")
    )
    array = nib.orientations.apply_orientation(values, transform)
    affine = affine @ nib.orientations.inv_ornt_aff(transform, values.shape)
    assert nib.aff2axcodes(affine) == ("L", "I", "A")
    return array, affine


@pytest.fixture(scope="module")
def mni(tmp_path_factory) -> tuple[nib.Nifti1Image, Path, list[Path]]:
    """The MNI152 T1 template at 2 mm (95 axial slices; 1 mm works the same, 189 slices) written as a series."""
    template = load_mni152_template(resolution=2)
    folder = tmp_path_factory.mktemp("mni") / "series"
    paths = write_volume_as_series(
        template.get_fdata(), template.affine, folder, series_description="MNI152 T1 2mm whole head"
    )
    return template, folder, paths


def test_mni152_round_trip(mni) -> None:
    template, folder, paths = mni
    original = template.get_fdata()
    assert len(paths) == 95 and sorted(folder.iterdir()) == paths
    array, affine = read_back(folder)
    assert nib.aff2axcodes(affine) == ("L", "P", "S")  # axial, stored as scanners do
    slope = float(pydicom.dcmread(paths[0], stop_before_pixels=True).RescaleSlope)
    assert slope == pytest.approx(original.max() / 65535, rel=1e-6)
    assert_same_world((array, affine), (original, template.affine), atol=slope / 2 + 1e-6)


def test_mni152_is_an_axial_series_simpleitk_agrees(mni) -> None:
    template, folder, paths = mni
    headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in paths]
    assert all(h.ImageOrientationPatient == AXIAL_IOP for h in headers)
    assert [int(h.InstanceNumber) for h in headers] == list(range(1, 96))
    heights = [float(h.ImagePositionPatient[2]) for h in headers]
    np.testing.assert_allclose(np.diff(heights), 2.0)  # foot to head, 2 mm apart
    assert [float(v) for v in headers[0].PixelSpacing] == [2.0, 2.0]
    assert float(headers[0].SliceThickness) == float(headers[0].SpacingBetweenSlices) == 2.0
    # an independent reader (GDCM's ordering, ITK's geometry) puts the template where nibabel has it
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder)))
    image = reader.Execute()
    lps = np.eye(4)
    lps[:3, :3] = np.asarray(image.GetDirection()).reshape(3, 3) @ np.diag(image.GetSpacing())
    lps[:3, 3] = image.GetOrigin()
    array = sitk.GetArrayFromImage(image).transpose(2, 1, 0)  # GDCM applies the rescale
    assert_same_world((array, np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps), (template.get_fdata(), template.affine), 1e-5)


def test_mni152_passes_dciodvfy(mni) -> None:
    _, _, paths = mni
    assert dciodvfy_errors(paths[len(paths) // 2]) == []


def test_synthetic_marks(mni) -> None:
    _, _, paths = mni
    headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in (paths[0], paths[-1])]
    ds = headers[0]
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.4" and ds.Modality == "MR"
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert ds.SyntheticData == "YES" and ds.PatientIdentityRemoved == "YES" and ds.BurnedInAnnotation == "NO"
    method = " ".join(ds.DeidentificationMethod)
    assert "SYNTHETIC" in method and "MNI152" in method and "written as DICOM" in method
    assert ds.SeriesDescription == "SYNTHETIC MNI152 T1 2mm whole head"
    assert "SYNTHETIC" in ds.ImageComments and "MNI152" in ds.ImageComments
    assert ds.Manufacturer == MANUFACTURER
    assert (str(ds.PatientName), ds.PatientID) == ("SYNTHETIC^MNI152", "SYNTHETIC-MNI152")
    assert len(ds.StudyDate) == 8 and len(ds.StudyTime) == 6
    assert ds.MRAcquisitionType == "3D" and float(ds.EchoTime) > 0 and float(ds.RepetitionTime) > 0
    # one new study, series and frame of reference for the files; a new instance UID per file
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID"):
        assert headers[0][keyword].value == headers[1][keyword].value
    assert headers[0].SOPInstanceUID != headers[1].SOPInstanceUID
    assert headers[0].SOPInstanceUID == headers[0].file_meta.MediaStorageSOPInstanceUID


@pytest.mark.parametrize(
    "values, rescaled",
    [
        (np.arange(210, dtype=np.int16).reshape(6, 7, 5) * 3, False),  # stored as they are
        (np.arange(210, dtype=np.int32).reshape(6, 7, 5) * 300 - 1024, True),  # shifted: intercept, slope 1
        (np.random.default_rng(0).normal(size=(6, 7, 5)).astype(np.float32), True),  # scaled onto 0..65535
    ],
    ids=["uint16-range", "int-shifted", "float"],
)
def test_lia_volume_comes_back_axial(tmp_path: Path, values: np.ndarray, rescaled: bool) -> None:
    array, affine = lia_volume(values)  # (6, 5, 7): L, I, A
    paths = write_volume_as_series(array, affine, tmp_path / "s", series_description="LIA test", source="a test grid")
    assert len(paths) == 5  # one file per axial plane, whatever the storage order
    ds = pydicom.dcmread(paths[0])
    assert ds.ImageOrientationPatient == AXIAL_IOP
    assert (ds.Rows, ds.Columns) == (7, 6) and [float(v) for v in ds.PixelSpacing] == [1.2, 0.8]
    assert float(ds.SliceThickness) == float(ds.SpacingBetweenSlices) == 2.5
    assert ("RescaleSlope" in ds) == rescaled and ds.pixel_array.dtype == np.uint16
    assert "a test grid written as DICOM" in ds.DeidentificationMethod
    assert dciodvfy_errors(paths[0]) == []
    written = read_back(tmp_path / "s")
    assert nib.aff2axcodes(written[1]) == ("L", "P", "S")
    step = float(ds.get("RescaleSlope", 1.0))
    exact = np.issubdtype(values.dtype, np.integer)
    assert_same_world(written, (array, affine), atol=0 if exact else step / 2 + 1e-6)


def test_oblique_affine_keeps_its_obliquity(tmp_path: Path) -> None:
    array, affine = lia_volume(np.arange(210, dtype=np.uint16).reshape(6, 7, 5))
    angle = np.deg2rad(12.0)
    rotation = np.eye(4)
    rotation[:2, :2] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]  # about S
    affine = rotation @ affine
    write_volume_as_series(array, affine, tmp_path / "s", series_description="oblique")
    assert_same_world(read_back(tmp_path / "s"), (array, affine), atol=0)


@pytest.mark.parametrize(
    "orientation, iop, slices",
    [("sagittal", [0.0, 1.0, 0.0, 0.0, 0.0, -1.0], 6), ("coronal", [1.0, 0.0, 0.0, 0.0, 0.0, -1.0], 7)],
)
def test_other_planes(tmp_path: Path, orientation: str, iop: list[float], slices: int) -> None:
    array, affine = lia_volume(np.arange(210, dtype=np.uint16).reshape(6, 7, 5))
    paths = write_volume_as_series(
        array, affine, tmp_path / "s", series_description=orientation, orientation=orientation
    )
    assert len(paths) == slices and pydicom.dcmread(paths[0]).ImageOrientationPatient == iop
    assert_same_world(read_back(tmp_path / "s"), (array, affine), atol=0)


def test_existing_folder_refused_unless_overwrite(tmp_path: Path) -> None:
    array, affine = lia_volume(np.arange(210, dtype=np.uint16).reshape(6, 7, 5))
    folder = tmp_path / "s"
    folder.mkdir()  # an existing empty folder is fine
    first = write_volume_as_series(array, affine, folder, series_description="first")
    before = [p.read_bytes() for p in first]
    with pytest.raises(FileExistsError, match="not empty"):
        write_volume_as_series(array, affine, folder, series_description="second")
    assert [p.read_bytes() for p in first] == before  # untouched
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("a user's file")
    with pytest.raises(FileExistsError):
        write_volume_as_series(array, affine, other, series_description="second")
    assert sorted(p.name for p in other.iterdir()) == ["notes.txt"]
    # overwrite with fewer slices: the first series' extra slices go, a file of the user's stays
    (folder / "notes.txt").write_text("a user's file")
    again = write_volume_as_series(array[:, :3], affine, folder, series_description="again", overwrite=True)
    assert sorted(p.name for p in folder.iterdir()) == sorted([p.name for p in again] + ["notes.txt"])
    assert len(again) == 3 and pydicom.dcmread(again[0]).SeriesDescription == "SYNTHETIC again"
    read_back(folder)  # one series


@pytest.mark.parametrize(
    "array, affine, kwargs, message",
    [
        (np.zeros((4, 4)), np.eye(4), {}, "3D"),
        (np.zeros((4, 4, 4)), np.diag([1.0, 1.0, 0.0, 1.0]), {}, "singular"),
        (np.zeros((4, 4, 4)), np.array([[1, 0.3, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]]), {}, "orthogonal"),
        (np.full((4, 4, 4), np.nan), np.eye(4), {}, "NaN"),
        (np.zeros((4, 4, 4)), np.eye(4), {"modality": "CT"}, "MR"),
        (np.zeros((4, 4, 4)), np.eye(4), {"orientation": "oblique"}, "orientation"),
        (np.zeros((4, 4, 4)), np.eye(4), {"patient_id": "X" * 65}, "patient_id"),
    ],
    ids=["2d", "singular", "sheared", "nan", "modality", "orientation", "too-long"],
)
def test_invalid_input_raises_before_writing(tmp_path: Path, array, affine, kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        write_volume_as_series(array, affine, tmp_path / "s", series_description="bad", **kwargs)
    assert not (tmp_path / "s").exists()
