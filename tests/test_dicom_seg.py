"""DICOM SEG writing: validated by dciodvfy, read back by dcmqi (as 3D Slicer does) and by highdicom."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from dicom_synth import SynthSeries, write_series
from doubleunet_segment.data.dicom_io import DicomSeries, find_dicom_series, load_series, lps_to_ras
from doubleunet_segment.data.dicom_seg import EmptySegmentationError, read_dicom_seg, seg_writable, write_dicom_seg
from doubleunet_segment.segments import HIPPOCAMPUS_SEGMENTS, POLYP_SEGMENTS, SegmentInfo
from helpers import DATA, dciodvfy_errors
from pydicom.data import get_testdata_file

CT_DIR = DATA / "dcmqi-ct3slice-seg"
HIPPO = DATA / "msd-hippocampus"
BIN = Path(sys.executable).parent
LIVER = SegmentInfo(
    1, "Liver", (221, 130, 101), ("91723000", "SCT", "Anatomical Structure"), ("10200004", "SCT", "Liver")
)


def dcmqi_read(path: Path, out: Path) -> tuple[dict, list[Path]]:
    """Convert with dcmqi's segimage2itkimage (3D Slicer's reader): metadata and one NRRD per segment."""
    out.mkdir()
    subprocess.run(
        [
            str(BIN / "segimage2itkimage"),
            "--inputDICOM",
            str(path),
            "--outputDirectory",
            str(out),
            "-t",
            "nrrd",
        ],
        capture_output=True,
        check=True,
    )
    return json.loads((out / "meta.json").read_text()), sorted(out.glob("*.nrrd"))


def on_source_grid(image: sitk.Image, series: DicomSeries) -> np.ndarray:
    """Place dcmqi's output (only frames with content) on the series grid, checking the geometry."""
    lps = np.eye(4)
    lps[:3, :3] = np.asarray(image.GetDirection()).reshape(3, 3) @ np.diag(image.GetSpacing())
    lps[:3, 3] = image.GetOrigin()
    affine = lps_to_ras(lps)
    np.testing.assert_allclose(affine[:3, :2], series.affine[:3, :2], atol=1e-5)  # same in-plane axes
    if image.GetSize()[2] > 1:
        np.testing.assert_allclose(affine[:3, 2], series.affine[:3, 2], atol=1e-4)
    offset = np.linalg.solve(series.affine, affine[:, 3])[:3]  # first frame's voxel index on the source grid
    np.testing.assert_allclose(offset, np.round(offset), atol=1e-3)
    i, j, k = np.round(offset).astype(int)
    data = sitk.GetArrayFromImage(image).transpose(2, 1, 0)
    grid = np.zeros(series.array.shape[1:], dtype=data.dtype)
    grid[i : i + data.shape[0], j : j + data.shape[1], k : k + data.shape[2]] = data
    return grid


@pytest.fixture(scope="module")
def ct(tmp_path_factory: pytest.TempPathFactory) -> DicomSeries:
    """The real 3-slice CT series (copied), whose headers highdicom refuses unless normalised."""
    folder = shutil.copytree(CT_DIR / "ct-3slice", tmp_path_factory.mktemp("ct") / "ct-3slice")
    refs, _ = find_dicom_series(folder)
    return load_series(refs[0])


@pytest.fixture(scope="module")
def liver_mask() -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(CT_DIR / "liver_seg.nrrd"))).transpose(2, 1, 0)


def test_real_ct_liver_seg(tmp_path: Path, ct: DicomSeries, liver_mask: np.ndarray) -> None:
    originals = {p: p.read_bytes() for p in ct.files}
    path = write_dicom_seg(ct, liver_mask, [LIVER], tmp_path / "liver.dcm", algorithm_version="1.2.3")
    assert dciodvfy_errors(path) == []
    assert all(p.read_bytes() == data for p, data in originals.items())  # user files untouched

    seg = pydicom.dcmread(path)
    source = ct.datasets[0]
    for keyword in ("PatientID", "PatientName", "StudyInstanceUID", "FrameOfReferenceUID"):
        assert seg[keyword].value == source[keyword].value
    assert seg.SegmentationType == "BINARY" and seg.Modality == "SEG"
    item = seg.SegmentSequence[0]
    assert item.SegmentLabel == "Liver" and item.SegmentAlgorithmType == "AUTOMATIC"
    algorithm = item.SegmentationAlgorithmIdentificationSequence[0]
    assert algorithm.AlgorithmName == "DoubleU-Net" and algorithm.AlgorithmVersion == "1.2.3"
    assert algorithm.AlgorithmFamilyCodeSequence[0].CodeValue == "123110"  # Artificial Intelligence
    assert item.SegmentedPropertyTypeCodeSequence[0].CodeValue == "10200004"
    assert hd.color.CIELabColor.from_dicom_value(item.RecommendedDisplayCIELabValue).to_rgb() == (
        221,
        130,
        101,
    )
    referenced = {i.ReferencedSOPInstanceUID for i in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence}
    assert referenced == {str(ds.SOPInstanceUID) for ds in ct.datasets}

    labels, names = read_dicom_seg(path, ct)
    np.testing.assert_array_equal(labels, liver_mask)
    assert names == {1: "Liver"}

    meta, nrrds = dcmqi_read(path, tmp_path / "dcmqi")
    assert meta["segmentAttributes"][0][0]["SegmentLabel"] == "Liver"
    np.testing.assert_array_equal(on_source_grid(sitk.ReadImage(str(nrrds[0])), ct), liver_mask)


def test_matches_the_reference_seg_from_dcmqi(ct: DicomSeries) -> None:
    """dcmqi's own liver.dcm, read onto our grid, equals the same liver mask: the frame mapping agrees."""
    labels, names = read_dicom_seg(CT_DIR / "liver.dcm", ct)
    assert list(names.values()) == ["Liver"]
    np.testing.assert_array_equal(
        labels > 0,
        sitk.GetArrayFromImage(sitk.ReadImage(str(CT_DIR / "liver_seg.nrrd"))).transpose(2, 1, 0) > 0,
    )


def test_synthesised_oblique_hippocampus(tmp_path: Path) -> None:
    image = np.asarray(nib.load(HIPPO / "imagesTr" / "hippocampus_003.nii.gz").dataobj, dtype=np.float64)
    label = np.asarray(nib.load(HIPPO / "labelsTr" / "hippocampus_003.nii.gz").dataobj).astype(np.uint8)
    synth = SynthSeries(
        image,
        row_dir=(0.8, 0.6, 0.0),
        col_dir=(-0.36, 0.48, -0.8),
        pixel_spacing=(1.2, 0.9),
        slice_spacing=1.5,
    )
    series = load_series(write_series(synth, tmp_path / "mr"))
    path = write_dicom_seg(series, label, HIPPOCAMPUS_SEGMENTS, tmp_path / "seg.dcm", algorithm_version="0.1.0")
    assert dciodvfy_errors(path) == []
    labels, names = read_dicom_seg(path, series)
    np.testing.assert_array_equal(labels, label)
    assert names == {1: "Anterior hippocampus", 2: "Posterior hippocampus"}
    seg = pydicom.dcmread(path)
    modifier = seg.SegmentSequence[1].SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence
    assert modifier[0].CodeMeaning == "Posterior"
    meta, nrrds = dcmqi_read(path, tmp_path / "dcmqi")
    assert [s[0]["labelID"] for s in meta["segmentAttributes"]] == [1, 2]
    for value, nrrd_path in zip((1, 2), nrrds):
        grid = on_source_grid(sitk.ReadImage(str(nrrd_path)), series)
        np.testing.assert_array_equal(grid > 0, label == value)


def test_absent_segments_are_skipped_and_renumbered(tmp_path: Path, ct: DicomSeries, liver_mask: np.ndarray) -> None:
    posterior_only = liver_mask.astype(np.uint8) * 2
    path = write_dicom_seg(ct, posterior_only, HIPPOCAMPUS_SEGMENTS, tmp_path / "s.dcm", algorithm_version="1")
    labels, names = read_dicom_seg(path, ct)
    assert names == {1: "Posterior hippocampus"}
    np.testing.assert_array_equal(labels, liver_mask)


def test_nothing_segmented_gives_valid_empty_seg(tmp_path: Path, ct: DicomSeries) -> None:
    empty = np.zeros(ct.array.shape[1:], dtype=np.uint8)
    path = write_dicom_seg(ct, empty, POLYP_SEGMENTS, tmp_path / "empty.dcm", algorithm_version="1")
    assert dciodvfy_errors(path) == []
    labels, names = read_dicom_seg(path, ct)
    assert names == {1: "Polyp"} and not labels.any()
    with pytest.raises(EmptySegmentationError):
        write_dicom_seg(ct, empty, [], tmp_path / "none.dcm", algorithm_version="1")


def test_rgb_secondary_capture_polyp(tmp_path: Path) -> None:
    series = load_series([get_testdata_file("SC_rgb_jpeg_dcmtk.dcm")])
    mask = np.zeros(series.array.shape[1:], dtype=np.uint8)
    mask[20:60, 30:50, 0] = 1
    path = write_dicom_seg(
        series, mask, [s.to_dict() for s in POLYP_SEGMENTS], tmp_path / "p.dcm", algorithm_version="1"
    )
    assert dciodvfy_errors(path) == []
    labels, names = read_dicom_seg(path, series)
    np.testing.assert_array_equal(labels, mask)
    assert names == {1: "Polyp"}


def test_enhanced_multiframe_source(tmp_path: Path) -> None:
    image = np.asarray(nib.load(HIPPO / "imagesTr" / "hippocampus_001.nii.gz").dataobj, dtype=np.float64)
    label = np.asarray(nib.load(HIPPO / "labelsTr" / "hippocampus_001.nii.gz").dataobj).astype(np.uint8)
    paths = write_series(SynthSeries(image, row_dir=(0, 1, 0), col_dir=(0, 0, -1)), tmp_path / "mr")
    enhanced = tmp_path / "enhanced.dcm"
    hd.legacy.LegacyConvertedEnhancedMRImage(
        [pydicom.dcmread(p) for p in paths],
        series_instance_uid=hd.UID(),
        series_number=4,
        sop_instance_uid=hd.UID(),
        instance_number=1,
    ).save_as(enhanced)
    series = load_series([enhanced])
    path = write_dicom_seg(series, label, HIPPOCAMPUS_SEGMENTS, tmp_path / "seg.dcm", algorithm_version="1")
    assert dciodvfy_errors(path) == []
    labels, _ = read_dicom_seg(path, series)
    np.testing.assert_array_equal(labels, label)


def test_invalid_inputs_and_overwrite(tmp_path: Path, ct: DicomSeries, liver_mask: np.ndarray) -> None:
    with pytest.raises(ValueError, match="shape"):
        write_dicom_seg(ct, liver_mask[:, :, :2], [LIVER], tmp_path / "a.dcm", algorithm_version="1")
    with pytest.raises(ValueError, match=r"label values \[7\]"):
        write_dicom_seg(ct, liver_mask * 7, [LIVER], tmp_path / "a.dcm", algorithm_version="1")
    target = tmp_path / "existing.dcm"
    target.write_bytes(b"keep me")
    with pytest.raises(FileExistsError, match="overwrite"):
        write_dicom_seg(ct, liver_mask, [LIVER], target, algorithm_version="1")
    assert target.read_bytes() == b"keep me"
    write_dicom_seg(ct, liver_mask, [LIVER], target, algorithm_version="1", overwrite=True)
    assert pydicom.dcmread(target).Modality == "SEG"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["existing.dcm"]  # no temporary files left


def test_seg_writable_is_decided_from_headers(tmp_path: Path, ct: DicomSeries) -> None:
    """``seg_writable`` (the runner's up-front check) agrees with what ``write_dicom_seg`` does."""
    assert seg_writable(ct) is None
    cine = load_series([get_testdata_file("SC_rgb_rle_2frame.dcm")])  # 2 RGB frames, no Frame of Reference
    reason = seg_writable(cine)
    assert reason is not None and "no FrameOfReferenceUID" in reason
    with pytest.raises(ValueError, match="no FrameOfReferenceUID"):
        write_dicom_seg(cine, np.zeros(cine.array.shape[1:], np.uint8), POLYP_SEGMENTS, tmp_path / "s.dcm",
                        algorithm_version="1")  # fmt: skip
    assert not (tmp_path / "s.dcm").exists()
