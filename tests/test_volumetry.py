"""Volumetry: exact volumes on an oblique anisotropic grid, asymmetry, % eTIV, the files and the report page."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from doubleunet_segment.catalog import SEGMENT_SETS
from doubleunet_segment.reporting import Volumetry, measure, report_png, write_batch_summary, write_volumes
from doubleunet_segment.segments import HIPPOCAMPUS_LR_SEGMENTS, HIPPOCAMPUS_SEGMENTS, LEFT, RIGHT, SegmentInfo
from helpers import DATA, needs_data
from PIL import Image
from pydicom.sr.codedict import codes

WHOLE_HEAD = DATA / "wholehead-t1" / "aomic-piop2-sub-0001"
SPACING = (0.8, 1.2, 2.5)  # mm: a voxel is 2.4 mm³
VOXELS = {1: 500, 2: 300, 3: 400, 4: 200}  # per label value
NAMES = [s.name for s in HIPPOCAMPUS_LR_SEGMENTS]


def oblique_affine() -> np.ndarray:
    """Anisotropic voxels on rotated axes: the voxel volume is still the product of the spacings."""
    angle = np.deg2rad(20.0)
    rotation = np.array(
        [[np.cos(angle), -np.sin(angle), 0.0], [np.sin(angle), np.cos(angle), 0.0], [0.0, 0.0, 1.0]]
    ) @ np.array([[1.0, 0.0, 0.0], [0.0, np.cos(angle), -np.sin(angle)], [0.0, np.sin(angle), np.cos(angle)]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag(SPACING)
    affine[:3, 3] = (-40.0, 12.0, 7.5)
    return affine


def synthetic_labels(drop: int | None = None) -> np.ndarray:
    """(X, Y, Z) map with VOXELS[v] voxels of each value v in separate blocks (``drop``: left out)."""
    labels = np.zeros((40, 30, 12), dtype=np.uint8)
    blocks = {1: (slice(0, 10), slice(0, 10), slice(0, 5)), 2: (slice(10, 20), slice(0, 10), slice(0, 3))}
    blocks |= {3: (slice(20, 30), slice(0, 10), slice(0, 4)), 4: (slice(30, 40), slice(0, 10), slice(0, 2))}
    for value, box in blocks.items():
        if value != drop:
            labels[box] = value
    assert all(np.count_nonzero(labels == v) == n for v, n in VOXELS.items() if v != drop)
    return labels


def test_four_segments_with_laterality() -> None:
    assert NAMES == [
        "Left anterior hippocampus",
        "Left posterior hippocampus",
        "Right anterior hippocampus",
        "Right posterior hippocampus",
    ]
    assert [s.value for s in HIPPOCAMPUS_LR_SEGMENTS] == [1, 2, 3, 4]
    assert len({s.color for s in HIPPOCAMPUS_LR_SEGMENTS + HIPPOCAMPUS_SEGMENTS}) == 6
    assert LEFT == (codes.SCT.Left.value, "SCT", codes.SCT.Left.meaning) and codes.cid244.Left == codes.SCT.Left
    assert RIGHT == (codes.SCT.Right.value, "SCT", codes.SCT.Right.meaning) and codes.cid244.Right == codes.SCT.Right
    assert [s.laterality for s in HIPPOCAMPUS_LR_SEGMENTS] == [LEFT, LEFT, RIGHT, RIGHT]
    assert [s.type_modifier for s in HIPPOCAMPUS_LR_SEGMENTS[:2]] == [s.type_modifier for s in HIPPOCAMPUS_SEGMENTS]
    assert SEGMENT_SETS["hippocampus_lr"] is HIPPOCAMPUS_LR_SEGMENTS
    for info in HIPPOCAMPUS_LR_SEGMENTS:
        assert json.loads(json.dumps(info.to_dict()))["laterality"] == list(info.laterality)
        assert SegmentInfo.from_dict(json.loads(json.dumps(info.to_dict()))) == info
    assert "laterality" not in HIPPOCAMPUS_SEGMENTS[0].to_dict()


def test_exact_volumes_asymmetry_and_etiv() -> None:
    v = measure(synthetic_labels(), oblique_affine(), HIPPOCAMPUS_LR_SEGMENTS, etiv_ml=1500.0)
    expected = {name: VOXELS[value] * 2.4 / 1000 for value, name in enumerate(NAMES, start=1)}
    assert v.structures == pytest.approx(expected, rel=1e-12)
    assert v.sides == pytest.approx({"left": 1.92, "right": 1.44}, rel=1e-12)
    assert v.asymmetry_index == pytest.approx(100 * 0.48 / 1.68, rel=1e-12)  # left larger: positive
    assert v.etiv_ml == 1500.0
    assert v.percent_etiv == pytest.approx({"left": 0.128, "right": 0.096}, rel=1e-12)
    assert v.structure_sides == dict(zip(NAMES, ["left", "left", "right", "right"]))
    assert list(v.to_dict()) == ["structures", "sides", "asymmetry_index", "etiv_ml", "percent_etiv", "structure_sides"]


def test_empty_side_or_no_laterality_gives_no_asymmetry() -> None:
    labels = synthetic_labels()
    labels[labels >= 3] = 0  # nothing on the right
    v = measure(labels, oblique_affine(), HIPPOCAMPUS_LR_SEGMENTS)
    assert v.sides["right"] == 0.0 and v.structures["Right posterior hippocampus"] == 0.0
    assert v.asymmetry_index is None and v.etiv_ml is None and v.percent_etiv is None
    two = measure(np.clip(synthetic_labels(), 0, 2), np.diag([*SPACING, 1.0]), HIPPOCAMPUS_SEGMENTS, etiv_ml=1000)
    assert two.sides == {} and two.asymmetry_index is None and two.percent_etiv == {}
    assert two.structures["Posterior hippocampus"] == pytest.approx((300 + 400 + 200) * 2.4 / 1000)


def test_invalid_inputs_are_refused() -> None:
    affine = oblique_affine()
    with pytest.raises(ValueError, match=r"label values \[4\]"):
        measure(synthetic_labels(), affine, HIPPOCAMPUS_LR_SEGMENTS[:3])
    with pytest.raises(ValueError, match="eTIV"):
        measure(synthetic_labels(), affine, HIPPOCAMPUS_LR_SEGMENTS, etiv_ml=0)
    with pytest.raises(ValueError, match="singular"):
        measure(synthetic_labels(), np.diag([1.0, 0.0, 1.0, 1.0]), HIPPOCAMPUS_LR_SEGMENTS)
    with pytest.raises(ValueError, match="integer"):
        measure(synthetic_labels().astype(np.float32), affine, HIPPOCAMPUS_LR_SEGMENTS)
    bilateral = SegmentInfo(
        1,
        "Both",
        (1, 2, 3),
        ("91723000", "SCT", "x"),
        ("5366008", "SCT", "y"),
        laterality=("51440002", "SCT", "Bilateral"),
    )
    with pytest.raises(ValueError, match="neither Left nor Right"):
        measure(synthetic_labels(drop=None).clip(0, 1), affine, [bilateral])


def test_case_files(tmp_path: Path) -> None:
    v = measure(synthetic_labels(), oblique_affine(), HIPPOCAMPUS_LR_SEGMENTS, etiv_ml=1500.0)
    qc = {"verdict": "pass", "reason": "", "score": 0.93}
    paths = write_volumes(v, qc, tmp_path / "case")
    assert paths == {"json": tmp_path / "case" / "volumes.json", "csv": tmp_path / "case" / "volumes.csv"}
    assert json.loads(paths["json"].read_text()) == {**v.to_dict(), "qc": qc}
    rows = list(csv.DictReader(paths["csv"].open()))
    by_measure = {(r["measure"], r["side"]): (r["value"], r["unit"]) for r in rows}
    assert by_measure[("Left anterior hippocampus", "left")] == ("1.2000", "mL")
    assert by_measure[("Right posterior hippocampus", "right")] == ("0.4800", "mL")
    assert by_measure[("total", "left")] == ("1.9200", "mL") and by_measure[("total", "right")] == ("1.4400", "mL")
    assert by_measure[("asymmetry index", "")] == ("28.571", "%")
    assert by_measure[("eTIV", "")] == ("1500.0000", "mL")
    assert by_measure[("total / eTIV", "left")] == ("0.1280", "%")
    with pytest.raises(FileExistsError):
        write_volumes(v, None, tmp_path / "case")
    write_volumes(v, None, tmp_path / "case", overwrite=True)
    assert "qc" not in json.loads(paths["json"].read_text())
    assert sorted(p.name for p in (tmp_path / "case").iterdir()) == ["volumes.csv", "volumes.json"]


def test_batch_summary(tmp_path: Path) -> None:
    full = measure(synthetic_labels(), oblique_affine(), HIPPOCAMPUS_LR_SEGMENTS, etiv_ml=1500.0)
    one_sided = measure(synthetic_labels(drop=3).clip(0, 2), oblique_affine(), HIPPOCAMPUS_LR_SEGMENTS)
    path = write_batch_summary(
        [("sub-01", full, {"verdict": "pass", "reason": ""}), ("sub-02", one_sided, None)], tmp_path / "summary.csv"
    )
    rows = list(csv.DictReader(path.open()))
    assert list(rows[0]) == [
        "case",
        *(f"{name} mL" for name in NAMES),
        "left mL",
        "right mL",
        "asymmetry index %",
        "eTIV mL",
        "left % eTIV",
        "right % eTIV",
        "qc verdict",
        "qc reason",
    ]
    assert [r["case"] for r in rows] == ["sub-01", "sub-02"]
    assert rows[0]["Left anterior hippocampus mL"] == "1.2000" and rows[0]["right mL"] == "1.4400"
    assert rows[0]["asymmetry index %"] == "28.571" and rows[0]["right % eTIV"] == "0.0960"
    assert rows[0]["qc verdict"] == "pass"
    assert rows[1]["right mL"] == "0.0000" and rows[1]["asymmetry index %"] == ""
    assert rows[1]["eTIV mL"] == rows[1]["left % eTIV"] == rows[1]["qc verdict"] == ""


@needs_data
def test_real_whole_head_volumes_and_report(tmp_path: Path) -> None:
    """FreeSurfer's hippocampi of a real T1 (LIA grid), each split into anterior/posterior halves at its median
    RAS y: the sides' volumes are FreeSurfer's own (4418 and 4247 mm³), and the report page is drawn."""
    t1, aseg = (nib.load(WHOLE_HEAD / name) for name in ("orig.mgz", "aseg.mgz"))
    aseg_data = np.asarray(aseg.dataobj)
    labels = np.zeros(aseg_data.shape, dtype=np.uint8)
    for freesurfer, (anterior, posterior) in ((17, (1, 2)), (53, (3, 4))):
        voxels = np.argwhere(aseg_data == freesurfer)
        y = nib.affines.apply_affine(aseg.affine, voxels)[:, 1]
        labels[tuple(voxels[y >= np.median(y)].T)] = anterior
        labels[tuple(voxels[y < np.median(y)].T)] = posterior
    v = measure(labels, aseg.affine, HIPPOCAMPUS_LR_SEGMENTS, etiv_ml=1450.0)
    assert v.sides == pytest.approx({"left": 4.418, "right": 4.247}, rel=1e-5)
    assert v.asymmetry_index == pytest.approx(100 * (4.418 - 4.247) / ((4.418 + 4.247) / 2), rel=1e-4)

    image = np.asarray(t1.dataobj, dtype=np.float32)
    qc = {"verdict": "review", "reason": "asymmetry above the expected range"}
    path = report_png(image, labels, aseg.affine, HIPPOCAMPUS_LR_SEGMENTS, v, qc, tmp_path / "report.png")
    with Image.open(path) as png:
        assert png.size == (827, 1169)  # A4 at 100 dpi
        pixels = np.asarray(png.convert("RGB"))
    assert 50_000 < path.stat().st_size < 2_000_000
    colours = {tuple(c) for c in pixels.reshape(-1, 3)[::7]}
    assert len(colours) > 200  # grey levels and overlay shades, not a blank page
    assert any(np.abs(pixels.astype(int) - s.color).sum(axis=-1).min() < 3 for s in HIPPOCAMPUS_LR_SEGMENTS)
    with pytest.raises(FileExistsError):
        report_png(image, labels, aseg.affine, HIPPOCAMPUS_LR_SEGMENTS, v, qc, path)


def test_report_with_an_empty_side_and_no_qc(tmp_path: Path) -> None:
    labels = synthetic_labels(drop=3)
    labels[labels == 4] = 0
    image = np.random.default_rng(0).normal(100.0, 20.0, labels.shape).astype(np.float32)
    v = measure(labels, oblique_affine(), HIPPOCAMPUS_LR_SEGMENTS)
    path = report_png(image, labels, oblique_affine(), HIPPOCAMPUS_LR_SEGMENTS, v, None, tmp_path / "r.png")
    with Image.open(path) as png:
        assert png.size == (827, 1169)
    with pytest.raises(ValueError, match="one shape"):
        report_png(image[:-1], labels, oblique_affine(), HIPPOCAMPUS_LR_SEGMENTS, v, None, tmp_path / "x.png")
    assert isinstance(v, Volumetry) and not (tmp_path / "x.png").exists()
