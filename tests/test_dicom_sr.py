"""DICOM SEG laterality and the TID 1500 volumetry SR on a real CT series: dciodvfy-valid, read back by dcmqi."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from doubleunet_segment.data.dicom_io import DicomSeries, find_dicom_series, load_series
from doubleunet_segment.data.dicom_seg import read_dicom_seg, write_dicom_seg
from doubleunet_segment.data.dicom_sr import write_volumetry_sr
from doubleunet_segment.reporting import measure
from doubleunet_segment.segments import HIPPOCAMPUS_LR_SEGMENTS, LEFT, POLYP_SEGMENTS, RIGHT
from helpers import DATA, dciodvfy_errors, needs_data
from pydicom.uid import Comprehensive3DSRStorage

pytestmark = needs_data
BIN = Path(sys.executable).parent
NAMES = [s.name for s in HIPPOCAMPUS_LR_SEGMENTS]


@pytest.fixture(scope="module")
def ct(tmp_path_factory: pytest.TempPathFactory) -> DicomSeries:
    """The real 3-slice CT series (512 x 512 x 3, 0.81 mm pixels), copied."""
    folder = tmp_path_factory.mktemp("ct") / "ct-3slice"
    shutil.copytree(DATA / "dcmqi-ct3slice-seg" / "ct-3slice", folder)
    refs, _ = find_dicom_series(folder)
    return load_series(refs[0])


def four_labels(ct: DicomSeries, drop: int | None = None) -> np.ndarray:
    """(X, Y, Z) map of the four hippocampus labels in separate blocks on the series grid."""
    labels = np.zeros(ct.array.shape[1:], dtype=np.uint8)
    labels[100:140, 100:130, 0:2] = 1
    labels[100:140, 130:160, 0:3] = 2
    labels[300:340, 100:130, 1:3] = 3
    labels[300:340, 130:170, :] = 4
    if drop is not None:
        labels[labels == drop] = 0
    return labels


def run_tool(*args: str) -> None:
    subprocess.run([str(BIN / args[0]), *args[1:]], capture_output=True, check=True)


def test_seg_carries_laterality_for_dcmqi(tmp_path: Path, ct: DicomSeries) -> None:
    labels = four_labels(ct)
    path = write_dicom_seg(ct, labels, HIPPOCAMPUS_LR_SEGMENTS, tmp_path / "seg.dcm", algorithm_version="1")
    assert dciodvfy_errors(path) == []
    items = pydicom.dcmread(path).SegmentSequence
    assert [i.SegmentLabel for i in items] == NAMES
    for item, info in zip(items, HIPPOCAMPUS_LR_SEGMENTS):
        region = item.AnatomicRegionSequence[0]
        assert region.CodeValue == "5366008"  # the structure itself is the region...
        assert region.AnatomicRegionModifierSequence[0].CodeValue == info.laterality[0]  # ...and the side its modifier
        modifiers = item.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence
        assert [m.CodeMeaning for m in modifiers] == [info.type_modifier[2]]  # anterior/posterior stays the one
    assert [i.AnatomicRegionSequence[0].AnatomicRegionModifierSequence[0].CodeMeaning for i in items] == [
        "Left",
        "Left",
        "Right",
        "Right",
    ]
    read, names = read_dicom_seg(path, ct)
    np.testing.assert_array_equal(read, labels)
    assert list(names.values()) == NAMES

    # dcmqi (3D Slicer's DICOM SEG reader) keeps the side
    run_tool("segimage2itkimage", "--inputDICOM", str(path), "--outputDirectory", str(tmp_path), "-t", "nrrd")
    meta = json.loads((tmp_path / "meta.json").read_text())
    segments = [s for group in meta["segmentAttributes"] for s in group]
    assert [s["AnatomicRegionModifierSequence"]["CodeValue"] for s in segments] == [LEFT[0]] * 2 + [RIGHT[0]] * 2
    assert {s["SegmentedPropertyTypeModifierCodeSequence"]["CodeMeaning"] for s in segments} == {
        "Anterior",
        "Posterior",
    }


def test_laterality_needs_an_anatomical_structure(tmp_path: Path, ct: DicomSeries) -> None:
    polyp = dataclasses.replace(POLYP_SEGMENTS[0], laterality=LEFT)
    with pytest.raises(ValueError, match="anatomic region"):
        write_dicom_seg(ct, four_labels(ct).clip(0, 1), [polyp], tmp_path / "p.dcm", algorithm_version="1")
    assert not (tmp_path / "p.dcm").exists()


def test_volumetry_sr_is_valid_and_read_back_by_dcmqi(tmp_path: Path, ct: DicomSeries) -> None:
    labels = four_labels(ct)
    seg_path = write_dicom_seg(ct, labels, HIPPOCAMPUS_LR_SEGMENTS, tmp_path / "seg.dcm", algorithm_version="2.0")
    volumetry = measure(labels, ct.affine, HIPPOCAMPUS_LR_SEGMENTS, etiv_ml=1400.0)
    voxel_ml = abs(np.linalg.det(ct.affine[:3, :3])) / 1000
    assert volumetry.structures["Right posterior hippocampus"] == pytest.approx(40 * 40 * 3 * voxel_ml)
    path = write_volumetry_sr(ct, seg_path, HIPPOCAMPUS_LR_SEGMENTS, volumetry, tmp_path / "sr.dcm", "2.0")
    assert dciodvfy_errors(path) == []

    sr, seg = pydicom.dcmread(path), pydicom.dcmread(seg_path)
    assert sr.SOPClassUID == Comprehensive3DSRStorage and sr.Modality == "SR"
    assert sr.StudyInstanceUID == ct.study_uid and sr.PatientID == ct.datasets[0].PatientID
    assert sr.SeriesNumber == seg.SeriesNumber + 1 and sr.CompletionFlag == "COMPLETE"
    assert sr.VerificationFlag == "UNVERIFIED"

    run_tool("tid1500reader", "--inputDICOM", str(path), "--outputMetadata", str(tmp_path / "sr.json"))
    groups = json.loads((tmp_path / "sr.json").read_text())["Measurements"]
    assert [g["TrackingIdentifier"] for g in groups] == NAMES
    assert [g["ReferencedSegment"] for g in groups] == [1, 2, 3, 4]
    assert {g["segmentationSOPInstanceUID"] for g in groups} == {seg.SOPInstanceUID}
    assert {g["SourceSeriesForImageSegmentation"] for g in groups} == {ct.series_uid}
    assert [g["Laterality"]["CodeMeaning"] for g in groups] == ["Left", "Left", "Right", "Right"]
    assert {g["FindingSite"]["CodeValue"] for g in groups} == {g["Finding"]["CodeValue"] for g in groups} == {"5366008"}
    for group, name in zip(groups, NAMES):
        (item,) = group["measurementItems"]
        assert item["quantity"]["CodeValue"] == "118565006" and item["units"]["CodeValue"] == "ml"
        assert float(item["value"]) == pytest.approx(volumetry.structures[name], rel=1e-9)
        assert group["measurementAlgorithmIdentification"]["AlgorithmVersion"] == "2.0"


def test_absent_segment_has_no_group_and_inconsistent_input_is_refused(tmp_path: Path, ct: DicomSeries) -> None:
    labels = four_labels(ct, drop=3)  # the SEG leaves "Right anterior hippocampus" out and renumbers
    seg_path = write_dicom_seg(ct, labels, HIPPOCAMPUS_LR_SEGMENTS, tmp_path / "seg.dcm", algorithm_version="1")
    volumetry = measure(labels, ct.affine, HIPPOCAMPUS_LR_SEGMENTS)
    path = write_volumetry_sr(ct, seg_path, HIPPOCAMPUS_LR_SEGMENTS, volumetry, tmp_path / "sr.dcm", "1")
    assert dciodvfy_errors(path) == []
    run_tool("tid1500reader", "--inputDICOM", str(path), "--outputMetadata", str(tmp_path / "sr.json"))
    groups = json.loads((tmp_path / "sr.json").read_text())["Measurements"]
    assert [(g["TrackingIdentifier"], g["ReferencedSegment"]) for g in groups] == [
        ("Left anterior hippocampus", 1),
        ("Left posterior hippocampus", 2),
        ("Right posterior hippocampus", 3),
    ]

    other = measure(four_labels(ct), ct.affine, HIPPOCAMPUS_LR_SEGMENTS)  # volumes of another label map
    with pytest.raises(ValueError, match="not in the SEG"):
        write_volumetry_sr(ct, seg_path, HIPPOCAMPUS_LR_SEGMENTS, other, tmp_path / "other.dcm", "1")
    with pytest.raises(FileExistsError):
        write_volumetry_sr(ct, seg_path, HIPPOCAMPUS_LR_SEGMENTS, volumetry, path, "1")
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".dcm") == ["seg.dcm", "sr.dcm"]
