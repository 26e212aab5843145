"""NIfTI / .seg.nrrd reading and writing with exact geometry and Slicer's segment metadata."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import nibabel as nib
import nrrd
import numpy as np
import pytest
import SimpleITK as sitk
import slicerio
from doubleunet_segment.data.dicom_io import DicomSeries, load_series
from doubleunet_segment.data.nifti_io import read_nifti, write_nifti, write_seg_nrrd
from doubleunet_segment.segments import HIPPOCAMPUS_SEGMENTS
from helpers import DATA

CT_DIR = DATA / "dcmqi-ct3slice-seg"
HIPPO_IMAGE = DATA / "msd-hippocampus" / "imagesTr" / "hippocampus_001.nii.gz"


@pytest.fixture(scope="module")
def ct(tmp_path_factory: pytest.TempPathFactory) -> DicomSeries:
    folder = shutil.copytree(CT_DIR / "ct-3slice", tmp_path_factory.mktemp("ct") / "ct")
    return load_series(sorted(folder.glob("*.dcm")))


@pytest.fixture(scope="module")
def liver() -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(CT_DIR / "liver_seg.nrrd"))).transpose(2, 1, 0)


def assert_same_sitk_geometry(a: sitk.Image, b: sitk.Image) -> None:
    np.testing.assert_allclose(a.GetOrigin(), b.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(a.GetSpacing(), b.GetSpacing(), atol=1e-5)
    np.testing.assert_allclose(a.GetDirection(), b.GetDirection(), atol=1e-6)


def test_label_map_nifti_on_the_dicom_grid(tmp_path: Path, ct: DicomSeries, liver: np.ndarray) -> None:
    path = write_nifti(liver, ct.affine, tmp_path / "liver.nii.gz")
    image = nib.load(path)
    assert image.get_data_dtype() == np.uint8
    assert int(image.header["sform_code"]) == 1 and int(image.header["qform_code"]) == 1
    np.testing.assert_allclose(image.affine, ct.affine, atol=1e-5)
    np.testing.assert_allclose(image.get_qform(), ct.affine, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(image.dataobj), liver)
    # SimpleITK places it exactly where it places the DICOM series and dcmqi's NRRD of the same mask
    assert_same_sitk_geometry(sitk.ReadImage(str(path)), sitk.ReadImage(str(CT_DIR / "liver_seg.nrrd")))


def test_oblique_affine_and_volume_round_trip(tmp_path: Path) -> None:
    rotation = np.array([[0.8, -0.36, 0.48], [0.6, 0.48, -0.64], [0.0, -0.8, -0.6]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([0.9, 1.2, 1.5])
    affine[:3, 3] = [12.5, -30.25, 41.0]
    volume = np.random.default_rng(0).normal(size=(1, 7, 6, 5)).astype(np.float32)
    path = write_nifti(volume, affine, tmp_path / "v.nii")
    array, read_affine = read_nifti(path)
    np.testing.assert_array_equal(array, volume)
    np.testing.assert_allclose(read_affine, affine, atol=1e-5)
    np.testing.assert_allclose(nib.load(path).get_qform(), affine, atol=1e-5)


def test_rgb_volume_round_trip(tmp_path: Path) -> None:
    rgb = np.random.default_rng(1).integers(0, 256, size=(3, 8, 5, 2)).astype(np.uint8)
    path = write_nifti(rgb, np.diag([-1.0, -1.0, 1.0, 1.0]), tmp_path / "rgb.nii.gz")
    assert nib.load(path).shape == (8, 5, 2, 3)
    array, _ = read_nifti(path)
    np.testing.assert_array_equal(array, rgb)


def test_read_real_nifti() -> None:
    array, affine = read_nifti(HIPPO_IMAGE)
    assert array.shape == (1, 35, 51, 35) and array.dtype == np.float32
    np.testing.assert_array_equal(array[0], nib.load(HIPPO_IMAGE).get_fdata())
    np.testing.assert_allclose(affine, nib.load(HIPPO_IMAGE).affine)


def test_bad_inputs(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="4x4"):
        write_nifti(np.zeros((2, 2, 2)), np.eye(3), tmp_path / "x.nii")
    with pytest.raises(ValueError, match="shape"):
        write_nifti(np.zeros((2, 2)), np.eye(4), tmp_path / "x.nii")
    assert list(tmp_path.iterdir()) == []


def test_seg_nrrd_for_slicer(tmp_path: Path, ct: DicomSeries, liver: np.ndarray) -> None:
    labels = liver.astype(np.uint8) * 2
    path = write_seg_nrrd(labels, ct.affine, HIPPOCAMPUS_SEGMENTS, tmp_path / "out.seg.nrrd")
    data, header = nrrd.read(str(path))
    assert data.dtype == np.uint8
    np.testing.assert_array_equal(data, labels)
    assert header["Segment1_Name"] == "Posterior hippocampus" and header["Segment1_LabelValue"] == "2"
    assert header["Segment0_ID"] == "Segment_1" and header["Segment0_Extent"] == "0 511 0 511 0 2"
    np.testing.assert_allclose([float(c) for c in header["Segment0_Color"].split()], [220 / 255, 180 / 255, 60 / 255])
    assert header["Segment0_Tags"] == (
        "TerminologyEntry:Segmentation category and type - DICOM master list~SCT^91723000^Anatomical Structure"
        "~SCT^5366008^Hippocampus~SCT^255549009^Anterior~Anatomic codes - DICOM master list~^^~^^|"
    )
    assert header["Segmentation_MasterRepresentation"] == "Binary labelmap"
    assert header["Segmentation_ContainedRepresentationNames"] == "Binary labelmap|"
    assert_same_sitk_geometry(sitk.ReadImage(str(path)), sitk.ReadImage(str(CT_DIR / "liver_seg.nrrd")))
    # as Slicer's own reader library sees it: every segment with its name, value, colour and codes
    segmentation = slicerio.read_segmentation(str(path))
    np.testing.assert_allclose(segmentation["ijkToLPS"], np.diag([-1.0, -1.0, 1.0, 1.0]) @ ct.affine, atol=1e-9)
    for segment, info in zip(segmentation["segments"], HIPPOCAMPUS_SEGMENTS, strict=True):
        assert (segment["name"], segment["labelValue"]) == (info.name, info.value)
        np.testing.assert_allclose(segment["color"], np.array(info.color) / 255)
        assert not segment["nameAutoGenerated"] and not segment["colorAutoGenerated"]
        for key, code in (("category", info.category), ("type", info.type), ("typeModifier", info.type_modifier)):
            assert segment["terminology"][key] == [code[1], code[0], code[2]]  # scheme, value, meaning


def test_seg_nrrd_wide_labels_and_no_overwrite(tmp_path: Path) -> None:
    labels = np.zeros((4, 3, 2), np.int32)
    labels[1, 1, 1] = 300
    segments = [{**HIPPOCAMPUS_SEGMENTS[0].to_dict(), "value": 300}]
    path = write_seg_nrrd(labels, np.eye(4), segments, tmp_path / "wide.seg.nrrd")
    data, header = nrrd.read(str(path))
    assert data.dtype == np.int16 and header["Segment0_LabelValue"] == "300"
    np.testing.assert_array_equal(data, labels)
    with pytest.raises(FileExistsError):
        write_seg_nrrd(labels, np.eye(4), segments, path)
    write_seg_nrrd(labels * 0, np.eye(4), segments, path, overwrite=True)
    assert not nrrd.read(str(path))[0].any()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["wide.seg.nrrd"]  # the atomic writer's temp file is gone


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_truncated_nifti_is_a_clear_error(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"cut{suffix}"
    nib.save(nib.load(HIPPO_IMAGE), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated or corrupt") as info:
        read_nifti(path)
    assert str(path) in str(info.value)
    assert path.read_bytes() == data[: len(data) // 2]


def test_nifti_header_promising_more_voxels_than_the_file_holds(tmp_path: Path) -> None:
    image = nib.Nifti1Image(np.zeros((10, 10, 10), np.int16), np.eye(4))
    image.header.set_data_shape((10, 10, 20))  # the header says 20 slices, the file will hold 10
    path = tmp_path / "short.nii"
    with open(path, "wb") as f:
        image.header.write_to(f)
        f.write(b"\0" * (int(image.header["vox_offset"]) - f.tell()))
        f.write(np.zeros((10, 10, 10), np.int16).tobytes())
    with pytest.raises(ValueError, match="short.nii.*Expected 4000 bytes, got 2000"):
        read_nifti(path)
    gz = tmp_path / "short.nii.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()))  # a complete gzip stream of too little data
    with pytest.raises(ValueError, match="short.nii.gz"):
        read_nifti(gz)


@pytest.mark.parametrize("content", [b"not a nifti", b"\x1f\x8b\x08\x00garbage"])
def test_not_a_nifti_is_a_clear_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "fake.nii.gz"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="fake.nii.gz: unreadable NIfTI file"):
        read_nifti(path)
    with pytest.raises(FileNotFoundError):
        read_nifti(tmp_path / "missing.nii")
