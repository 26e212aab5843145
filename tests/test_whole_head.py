"""Whole-head T1 studies with the shipped hippocampus model: localisation, left and right, volumes, report, SR,
quality control, and the same result whatever the storage; on a real head with FreeSurfer labels and the MNI152
template."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from doubleunet_segment.reporting.qc import quality_control
from doubleunet_segment.reporting.volumetry import Volumetry
from helpers import DATA, dciodvfy_errors, needs_data

HEAD = DATA / "wholehead-t1" / "aomic-piop2-sub-0001"
SIDES = {"left": (1, 2), "right": (3, 4)}
FREESURFER = {"left": 17, "right": 53}  # aseg labels of the hippocampus
DICE_FLOOR = 0.78  # per side against FreeSurfer; measured 0.820 left, 0.810 right


def segment(inputs: list[Path], out: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "doubleunet_segment.cli", *map(str, inputs), "-o", str(out), "--model", "hippocampus"]
    done = subprocess.run([*cmd, "--progress", "none", *extra], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def side_volumes(case: Path) -> dict[str, float]:
    return json.loads((case / "volumes.json").read_text())["sides"]


@pytest.fixture(scope="module")
def head_result(tmp_path_factory) -> Path:
    """The real head (FreeSurfer's conformed orig.mgz: LIA, 1 mm, skull and face) through the CLI."""
    out = tmp_path_factory.mktemp("head")
    done = segment([HEAD / "orig.mgz"], out, "--uncertainty")
    assert "whole-head study" in done.stderr and "stage times: read" in done.stderr
    return out


@needs_data
def test_a_real_head_gives_both_hippocampi_close_to_freesurfer(head_result):
    case = head_result / "orig"
    labels = nib.load(case / "segmentation.nii.gz")
    aseg = nib.load(HEAD / "aseg.mgz")
    assert labels.shape == aseg.shape and np.allclose(labels.affine, aseg.affine, atol=1e-4)  # the study's own grid
    ours, theirs = np.asarray(labels.dataobj), np.asarray(aseg.dataobj)
    assert set(np.unique(ours)) == {0, 1, 2, 3, 4}
    for side, values in SIDES.items():
        a, b = np.isin(ours, values), theirs == FREESURFER[side]
        dice = 2 * (a & b).sum() / (a.sum() + b.sum())
        assert dice >= DICE_FLOOR, (side, dice)
    info = json.loads((case / "segments.json").read_text())
    assert [s["name"] for s in info["segments"]] == [
        "Left anterior hippocampus",
        "Left posterior hippocampus",
        "Right anterior hippocampus",
        "Right posterior hippocampus",
    ]
    assert [s["laterality"][0] for s in info["segments"]] == ["7771000", "7771000", "24028007", "24028007"]
    # left is the patient's left: lower RAS x
    xs = {
        side: nib.affines.apply_affine(labels.affine, np.argwhere(np.isin(ours, v))).mean(0)[0]
        for side, v in SIDES.items()
    }
    assert xs["left"] < 0 < xs["right"]


@needs_data
def test_the_report_files_of_a_head(head_result):
    case = head_result / "orig"
    volumes = json.loads((case / "volumes.json").read_text())
    assert volumes["qc"]["verdict"] == "pass", volumes["qc"]
    for side in ("left", "right"):
        assert 2.5 < volumes["sides"][side] < 5.5
    assert 1200 < volumes["etiv_ml"] < 1900 and abs(volumes["asymmetry_index"]) < 20
    rows = (case / "volumes.csv").read_text().splitlines()
    assert rows[0] == "measure,side,value,unit" and any(r.startswith("asymmetry index") for r in rows)
    assert (case / "report.png").stat().st_size > 50_000
    uncertainty = np.asarray(nib.load(case / "uncertainty.nii.gz").dataobj)
    assert 0 <= uncertainty.min() and uncertainty.max() <= 1 and uncertainty.any()
    import slicerio

    nrrd = slicerio.read_segmentation(str(case / "segmentation.seg.nrrd"), skip_voxels=True)
    sides = {seg["name"]: seg["terminology"]["anatomicRegionModifier"][2] for seg in nrrd["segments"]}
    assert sides == {
        "Left anterior hippocampus": "Left",
        "Left posterior hippocampus": "Left",
        "Right anterior hippocampus": "Right",
        "Right posterior hippocampus": "Right",
    }
    summary = (head_result / "volumes_summary.csv").read_text().splitlines()
    assert len(summary) == 2 and summary[1].startswith("orig,")


@needs_data
def test_localization_off_keeps_the_whole_volume_path(tmp_path):
    crop = DATA / "msd-hippocampus" / "imagesTr" / "hippocampus_001.nii.gz"
    done = segment([crop], tmp_path)
    assert "whole-head study" not in done.stderr  # a training-like crop: auto leaves it alone
    info = json.loads((tmp_path / "hippocampus_001" / "segments.json").read_text())
    assert [s["name"] for s in info["segments"]] == ["Anterior hippocampus", "Posterior hippocampus"]
    assert not (tmp_path / "hippocampus_001" / "volumes.json").exists()


@needs_data
def test_the_mni152_template_as_an_axial_dicom_series_gives_seg_sr_and_report(tmp_path):
    from doubleunet_segment.data.dicom_export import write_volume_as_series
    from nilearn.datasets import load_mni152_template

    template = load_mni152_template(resolution=1)
    write_volume_as_series(
        np.asarray(template.dataobj, dtype=np.float32),
        template.affine,
        tmp_path / "dicom",
        series_description="MNI152 T1",
    )
    segment([tmp_path / "dicom"], tmp_path / "out")
    (case,) = [p for p in (tmp_path / "out").iterdir() if p.is_dir()]
    labels = np.asarray(nib.load(case / "segmentation.nii.gz").dataobj)
    affine = nib.load(case / "segmentation.nii.gz").affine
    assert set(np.unique(labels)) == {0, 1, 2, 3, 4}  # both sides, all four structures
    for anterior, posterior in SIDES.values():  # anterior in front of posterior on each side (RAS y)
        y = [nib.affines.apply_affine(affine, np.argwhere(labels == v)).mean(0)[1] for v in (anterior, posterior)]
        assert y[0] > y[1]
    for ml in side_volumes(case).values():
        assert 3.0 <= ml <= 5.5, ml
    assert not dciodvfy_errors(case / "seg.dcm") and not dciodvfy_errors(case / "sr.dcm")
    sr = pydicom.dcmread(case / "sr.dcm")
    seg = pydicom.dcmread(case / "seg.dcm")
    assert sr.StudyInstanceUID == seg.StudyInstanceUID
    reader = Path(sys.executable).parent / "tid1500reader"
    done = subprocess.run(
        [str(reader), "--inputDICOM", str(case / "sr.dcm"), "--outputMetadata", str(tmp_path / "sr.json")],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    groups = json.loads((tmp_path / "sr.json").read_text())["Measurements"]
    volumes = json.loads((case / "volumes.json").read_text())["structures"]
    read = {g["TrackingIdentifier"]: float(g["measurementItems"][0]["value"]) for g in groups}
    assert len(read) == 4 and sorted(read.values()) == pytest.approx(sorted(volumes.values()), rel=1e-3)


@needs_data
def test_the_same_head_stored_otherwise_gives_the_same_volumes(tmp_path):
    """The head as RAS and LPS NIfTI, resampled to 0.9 x 0.9 x 1.2 mm (SimpleITK, as another scanner's
    protocol would store it), and as an axial and a sagittal DICOM series: each side's volume within 2% of the
    conformed original's (3% for the resampled copy).

    In float32: this pins the geometry, not the CPU's precision path (int8 is held to float32's masks by its own
    check; an int8 run on an AVX2 CPU measured -3.4% on the left of the resampled copy)."""
    import SimpleITK as sitk
    from doubleunet_segment.data.dicom_export import write_volume_as_series

    image = nib.load(HEAD / "orig.mgz")
    array = np.asarray(image.dataobj, dtype=np.float32)
    ras = nib.as_closest_canonical(nib.Nifti1Image(array, image.affine))
    nib.save(ras, tmp_path / "ras.nii.gz")
    ornt = nib.orientations.axcodes2ornt(("L", "P", "S"))
    transform = nib.orientations.ornt_transform(nib.orientations.io_orientation(ras.affine), ornt)
    lps = ras.as_reoriented(transform)
    nib.save(lps, tmp_path / "lps.nii.gz")
    source = sitk.ReadImage(str(tmp_path / "ras.nii.gz"))
    spacing = (0.9, 0.9, 1.2)
    size = [int(round(n * s / t)) for n, s, t in zip(source.GetSize(), source.GetSpacing(), spacing)]
    resampled = sitk.Resample(
        source, size, sitk.Transform(), sitk.sitkLinear, source.GetOrigin(), spacing, source.GetDirection()
    )
    sitk.WriteImage(resampled, str(tmp_path / "aniso.nii.gz"))
    nib.save(nib.Nifti1Image(array, image.affine), tmp_path / "original.nii.gz")
    names = ["original", "ras", "lps", "aniso"]
    inputs = [tmp_path / f"{n}.nii.gz" for n in names]
    for orientation in ("axial", "sagittal"):
        folder = tmp_path / orientation
        write_volume_as_series(array, image.affine, folder, series_description=orientation, orientation=orientation)
        inputs.append(folder)
    segment(inputs, tmp_path / "out", "--format", "nifti", "--precision", "fp32", "--backend", "torch")
    cases = {p.name: p for p in (tmp_path / "out").iterdir() if p.is_dir()}
    reference = side_volumes(cases.pop("original"))
    assert len(cases) == 5
    for name, case in cases.items():
        # re-stored losslessly: within 2%. Resampled to 1.2 mm slices and back (bilinear twice), the image itself
        # differs: within 3% (the 2.5D model of 0.6.0 measured -2.4% on the left there; the 2D model, under 2%)
        tolerance = 0.03 if name == "aniso" else 0.02
        for side, ml in side_volumes(case).items():
            assert ml == pytest.approx(reference[side], rel=tolerance), (name, side)


def _volumetry(left: tuple[float, float], right: tuple[float, float]) -> Volumetry:
    names = [
        "Left anterior hippocampus",
        "Left posterior hippocampus",
        "Right anterior hippocampus",
        "Right posterior hippocampus",
    ]
    structures = dict(zip(names, [*left, *right]))
    sides = {"left": sum(left), "right": sum(right)}
    return Volumetry(structures, sides, None, None, None, dict(zip(names, ["left", "left", "right", "right"])))


class _Registration:
    def __init__(self, plausible: bool) -> None:
        self.plausible, self.metric = plausible, -0.1 if not plausible else -0.38

    def etiv_ml(self) -> float:
        return 2600.0 if not self.plausible else 1600.0


def test_quality_control_flags_each_kind_of_doubt():
    good = _volumetry((1.9, 1.7), (2.0, 1.5))
    assert quality_control(good, _Registration(True), 0.05)["verdict"] == "pass"
    cases = {
        "registration": quality_control(good, _Registration(False), 0.05),
        "right hippocampus missing": quality_control(_volumetry((1.9, 1.7), (0.0, 0.0)), _Registration(True), 0.05),
        "incomplete": quality_control(_volumetry((1.9, 0.0), (2.0, 1.5)), _Registration(True), 0.05),
        "outside the plausible": quality_control(_volumetry((4.0, 3.5), (2.0, 1.5)), _Registration(True), 0.05),
        "stages disagree": quality_control(good, _Registration(True), 0.6),
    }
    for words, qc in cases.items():
        assert qc["verdict"] == "review" and words in qc["reason"], (words, qc)


@needs_data
def test_the_worker_localises_a_whole_head_once_and_answers_slabs_from_it(tmp_path, monkeypatch):
    """The Slicer effect's worker: the first request for a whole head localises and segments it; a Preview slab
    and an Apply of the whole volume are then answered from that result (left/right labels and probabilities
    the effect re-thresholds), without registering again."""
    import io

    from doubleunet_segment.catalog import read_catalog
    from doubleunet_segment.inference import whole_head
    from doubleunet_segment.inference.predictor import Predictor
    from doubleunet_segment.inference.worker import Worker
    from DoubleUNetSegmentLib.segment_import import labels_from_probabilities

    calls = []
    real = whole_head.register_to_template
    monkeypatch.setattr(whole_head, "register_to_template", lambda *a: calls.append(1) or real(*a))
    predictor = Predictor(read_catalog()["hippocampus"], device="cpu", precision="fp32", backend="torch")
    out = io.StringIO()
    worker = Worker(predictor, out)
    source = HEAD / "orig.mgz"
    full = {"id": "1", "input": str(source), "output": str(tmp_path), "name": "full"}
    assert worker.handle(full)
    labels = np.asarray(nib.load(tmp_path / "full" / "segmentation.nii.gz").dataobj)
    assert set(np.unique(labels)) == {0, 1, 2, 3, 4}
    axis = predictor.inferer.slice_axis
    k = int(np.argwhere(labels > 0)[:, axis].mean())  # a slice through the hippocampi
    assert worker.handle(
        {"id": "2", "input": str(source), "output": str(tmp_path), "name": "slab", "slices": [k, k + 3]}
    )
    assert len(calls) == 1  # registered once for the volume
    slab = nib.load(tmp_path / "slab" / "segmentation.nii.gz")
    expected = np.take(labels, range(k, k + 3), axis=axis)
    assert np.array_equal(np.asarray(slab.dataobj), expected) and expected.any()
    probabilities = np.asarray(nib.load(tmp_path / "slab" / "probabilities.nii.gz").dataobj)  # (X, Y, Z, 5)
    again = labels_from_probabilities(probabilities, 0.5, largest_component=False)
    assert (again == expected).mean() > 0.999  # the effect's re-threshold at 0.5 gives the engine's labels
    info = json.loads((tmp_path / "slab" / "segments.json").read_text())
    assert len(info["segments"]) == 4 and info["segments"][2]["name"] == "Right anterior hippocampus"
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [e["event"] for e in events if e.get("id") == "2"][-2:] == ["done", "idle"]


@needs_data
def test_the_hippocampus_bundle_localises_a_whole_head_as_the_cli_does(tmp_path, head_result):
    bundle = Path(__file__).resolve().parents[1] / "monai_bundle" / "hippocampus"
    cmd = [sys.executable, "-m", "monai.bundle", "run", "inference", "--config_file", "configs/inference.json"]
    cmd += ["--input", str(HEAD / "orig.mgz"), "--output_dir", str(tmp_path)]
    done = subprocess.run(cmd, cwd=bundle, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    ours = np.asarray(nib.load(tmp_path / "orig" / "segmentation.nii.gz").dataobj)
    cli = np.asarray(nib.load(head_result / "orig" / "segmentation.nii.gz").dataobj)
    assert np.array_equal(ours, cli) and set(np.unique(ours)) == {0, 1, 2, 3, 4}
    bundle_volumes, cli_volumes = (
        json.loads((r / "orig" / "volumes.json").read_text()) for r in (tmp_path, head_result)
    )
    assert bundle_volumes["structures"] == cli_volumes["structures"] and bundle_volumes["qc"]["verdict"] == "pass"
    # eTIV comes from a registration whose multi-threaded sums are not bit-exact from run to run
    assert bundle_volumes["etiv_ml"] == pytest.approx(cli_volumes["etiv_ml"], rel=1e-5)
    assert (tmp_path / "orig" / "report.png").is_file()
