"""The batch runner on real inputs (through the command line): volumes keep their geometry, each format gets its
outputs, existing results are kept, one bad case fails alone."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
from doubleunet_segment.cli import main
from helpers import DATA, needs_data

HIPPO = DATA / "msd-hippocampus" / "imagesTr" / "hippocampus_001.nii.gz"
KVASIR = DATA / "kvasir-seg" / "images" / "cju0qoxqj9q6s0835b43399p4.jpg"
CT = DATA / "dcmqi-ct3slice-seg" / "ct-3slice"

pytestmark = needs_data


def test_nifti_volume_gives_label_map_with_identical_geometry(tmp_path, hippo_model):
    assert main([str(HIPPO), "-o", str(tmp_path), "--model", str(hippo_model), "--progress", "none"]) == 0
    src = nib.load(HIPPO)
    out = nib.load(tmp_path / "hippocampus_001" / "segmentation.nii.gz")
    assert out.shape == src.shape
    np.testing.assert_array_equal(out.affine, src.affine)
    labels = np.asarray(out.dataobj)
    assert labels.dtype == np.uint8 and set(np.unique(labels)) <= {0, 1, 2}
    info = json.loads((tmp_path / "hippocampus_001" / "segments.json").read_text())
    assert [s["name"] for s in info["segments"]] == ["Anterior hippocampus", "Posterior hippocampus"]
    assert (tmp_path / "hippocampus_001" / "views.png").is_file()


def test_resampled_oblique_nifti_keeps_its_affine(tmp_path, hippo_model):
    """A volume larger than the trained slice size goes through in-plane sliding windows."""
    src = nib.load(HIPPO)
    data = np.kron(np.asarray(src.dataobj, dtype=np.float32), np.ones((3, 2, 1), dtype=np.float32))[:, :, :5]
    affine = src.affine.copy()
    affine[:3, :3] = np.array([[0.0, 0.5, 0.0], [-0.33, 0.0, 0.1], [0.0, 0.0, 1.0]])
    affine[:3, 3] = [10.0, -20.0, 5.0]
    path = tmp_path / "oblique.nii.gz"
    nib.save(nib.Nifti1Image(data, affine), path)
    assert main([str(path), "-o", str(tmp_path / "out"), "--model", str(hippo_model), "--progress", "none"]) == 0
    out = nib.load(tmp_path / "out" / "oblique" / "segmentation.nii.gz")
    assert out.shape == data.shape
    np.testing.assert_allclose(out.affine, nib.load(path).affine, atol=1e-6)


def test_2d_image_gives_mask_and_overlay(tmp_path, polyp_model):
    from PIL import Image

    assert main([str(KVASIR), "-o", str(tmp_path), "--model", str(polyp_model), "--progress", "none"]) == 0
    case = tmp_path / KVASIR.stem
    with Image.open(KVASIR) as img:
        size = img.size
    with Image.open(case / "mask.png") as mask, Image.open(case / "overlay.png") as overlay:
        assert mask.size == size and overlay.size == size and overlay.mode == "RGB"


def test_dicom_folder_gives_nifti_and_dicom_seg(tmp_path, polyp_model):
    import pydicom

    assert main([str(CT), "-o", str(tmp_path), "--model", str(polyp_model), "--progress", "none"]) == 0
    (case,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    seg = pydicom.dcmread(case / "seg.dcm")
    assert seg.Modality == "SEG"
    src = pydicom.dcmread(next(CT.iterdir()))
    assert seg.StudyInstanceUID == src.StudyInstanceUID and seg.PatientID == src.PatientID
    assert nib.load(case / "segmentation.nii.gz").shape == (512, 512, 3)


def test_existing_output_is_kept_unless_overwrite(tmp_path, hippo_model):
    args = [str(HIPPO), "-o", str(tmp_path), "--model", str(hippo_model), "--progress", "none"]
    assert main(args) == 0
    target = tmp_path / "hippocampus_001" / "segmentation.nii.gz"
    before = target.read_bytes()
    target.write_bytes(b"user's own file")
    assert main(args) == 1  # the case fails, the file is untouched
    assert target.read_bytes() == b"user's own file"
    assert main([*args, "--overwrite"]) == 0
    assert target.read_bytes() == before
    assert not [p for p in target.parent.iterdir() if p.name.startswith(".")]  # no temp files left


def test_one_bad_input_fails_alone_with_nonzero_status(tmp_path, hippo_model, capsys):
    broken = tmp_path / "in" / "broken.nii.gz"
    broken.parent.mkdir()
    broken.write_bytes(b"not a nifti")
    status = main(
        [str(broken), str(HIPPO), "-o", str(tmp_path / "out"), "--model", str(hippo_model), "--progress", "none"]
    )
    assert status == 1
    assert (tmp_path / "out" / "hippocampus_001" / "segmentation.nii.gz").is_file()
    err = capsys.readouterr().err
    assert "FAILED" in err and "broken" in err and "1 of 2 case(s) segmented, 1 failed" in err


FAST = ["--progress", "none", "--precision", "fp32", "--backend", "torch"]


def _small_volume(folder):
    """A 3-slice crop of the hippocampus MR (keeps the test quick)."""
    src = nib.load(HIPPO)
    path = folder / "small.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(src.dataobj)[:, :, 15:18], src.affine), path)
    return path


def _picture(folder):
    from PIL import Image

    path = folder / "pic.png"
    with Image.open(KVASIR) as img:
        img.convert("RGB").resize((64, 48)).save(path)
    return path


def test_late_writer_failure_leaves_no_file_and_other_cases_succeed(tmp_path, polyp_model, monkeypatch, capsys):
    """The volume's views.png (written after the NIfTI and .seg.nrrd) fails: its folder is left empty."""
    from doubleunet_segment.inference import runner

    def broken_views(*args, **kwargs):
        raise OSError("disk full while drawing views")

    monkeypatch.setattr(runner, "orthogonal_views", broken_views)
    (tmp_path / "in").mkdir()
    volume, picture = _small_volume(tmp_path / "in"), _picture(tmp_path / "in")
    out = tmp_path / "out"
    assert main([str(volume), str(picture), "-o", str(out), "--model", str(polyp_model), *FAST]) == 1
    assert not (out / "small").exists() or list((out / "small").iterdir()) == []
    assert {p.name for p in (out / "pic").iterdir()} == {
        "segmentation.nii.gz",
        "segments.json",
        "mask.png",
        "overlay.png",
    }
    assert "disk full" in capsys.readouterr().err


def test_failed_rerun_with_overwrite_keeps_the_previous_results(tmp_path, polyp_model, monkeypatch):
    """--overwrite replaces files only once every new one is complete: a failed run leaves the old set."""
    from doubleunet_segment.inference import runner

    volume = _small_volume(tmp_path)
    args = [str(volume), "-o", str(tmp_path / "out"), "--model", str(polyp_model), *FAST]
    assert main(args) == 0
    case = tmp_path / "out" / "small"
    before = {p.name: p.read_bytes() for p in case.iterdir()}
    monkeypatch.setattr(runner, "orthogonal_views", lambda *a, **k: (_ for _ in ()).throw(OSError("no space")))
    assert main([*args, "--overwrite"]) == 1
    assert {p.name: p.read_bytes() for p in case.iterdir()} == before


def test_dicom_seg_writer_failure_is_a_note_and_other_failures_leave_nothing(tmp_path, polyp_model, monkeypatch):
    """A SEG writer that raises (as for a series the standard cannot reference) drops only the SEG, with a
    note; a failing NIfTI writer still takes the whole case with it."""
    from doubleunet_segment.data import dicom_seg
    from doubleunet_segment.inference import runner

    def refuse(*args, **kwargs):
        raise AttributeError("'FileDataset' object has no attribute 'PatientBirthDate'")

    monkeypatch.setattr(dicom_seg, "write_dicom_seg", refuse)
    monkeypatch.setattr(dicom_seg, "seg_writable", lambda series: None, raising=False)
    out = tmp_path / "out"
    assert main([str(CT), "-o", str(out), "--model", str(polyp_model), *FAST]) == 0
    names = {p.name for p in out.rglob("*") if p.is_file()}
    assert "segmentation.nii.gz" in names and "seg.dcm" not in names
    assert not [n for n in names if ".tmp" in n]
    monkeypatch.setattr(runner, "write_nifti", refuse)
    out = tmp_path / "out2"
    assert main([str(CT), "-o", str(out), "--model", str(polyp_model), *FAST]) == 1
    assert [p for p in out.rglob("*") if p.is_file()] == []


def test_unwritable_seg_is_skipped_with_a_note(tmp_path, polyp_model, monkeypatch, capsys):
    """When the SEG check says no, the other outputs are written and the note says why."""
    from doubleunet_segment.data import dicom_seg

    monkeypatch.setattr(dicom_seg, "seg_writable", lambda series: "no Frame of Reference", raising=False)
    out = tmp_path / "out"
    assert main([str(CT), "-o", str(out), "--model", str(polyp_model), "--progress", "json", *FAST[2:]]) == 0
    (case,) = [p for p in out.iterdir() if p.is_dir()]
    names = {p.name for p in case.iterdir()}
    assert "seg.dcm" not in names and "segmentation.nii.gz" in names
    assert "DICOM SEG not written: no Frame of Reference" in capsys.readouterr().out


def test_segments_json_records_the_labelling_rule_applied(tmp_path, polyp_model, hippo_model):
    picture = _picture(tmp_path)
    assert main([str(picture), "-o", str(tmp_path / "a"), "--model", str(polyp_model), *FAST]) == 0
    info = json.loads((tmp_path / "a" / "pic" / "segments.json").read_text())
    assert info["threshold"] == 0.5 and info["label_rule"] == "threshold"
    args = [str(picture), "-o", str(tmp_path / "b"), "--model", str(polyp_model), "--threshold", "0.3", *FAST]
    assert main(args) == 0
    assert json.loads((tmp_path / "b" / "pic" / "segments.json").read_text())["threshold"] == 0.3
    volume = _small_volume(tmp_path)
    assert main([str(volume), "-o", str(tmp_path / "c"), "--model", str(hippo_model), *FAST]) == 0
    info = json.loads((tmp_path / "c" / "small" / "segments.json").read_text())
    assert info["threshold"] is None and info["label_rule"] == "argmax"


def test_bundle_inference_exits_nonzero_when_a_case_fails(tmp_path, polyp_model):
    """``monai.bundle run inference`` over a good and a broken input: the good one is written, exit 1."""
    import subprocess
    import sys

    from helpers import REPO

    (tmp_path / "in").mkdir()
    good = _picture(tmp_path / "in")
    broken = tmp_path / "in" / "broken.nii.gz"
    broken.write_bytes(b"not a nifti")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "monai.bundle", "run", "inference"]
    bundle = REPO / "monai_bundle" / "polyp"
    cmd += ["--config_file", str(bundle / "configs" / "inference.json"), "--bundle_root", str(bundle)]
    cmd += ["--ckpt_path", str(polyp_model)]
    cmd += ["--input", f"['{good}','{broken}']", "--output_dir", str(out), "--progress", "none"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode != 0, proc.stderr
    assert (out / "pic" / "segmentation.nii.gz").is_file() and (out / "pic" / "segments.json").is_file()
    assert "1 of 2 case(s) failed: broken" in proc.stderr and "Traceback" not in proc.stderr


def test_a_dicom_seg_the_source_cannot_carry_is_a_note_and_the_other_outputs_are_written(tmp_path, polyp_model, capsys):
    import pydicom

    series = tmp_path / "ct"
    series.mkdir()
    for f in sorted(CT.glob("*.dcm")):
        ds = pydicom.dcmread(f)
        del ds.Modality
        ds.save_as(series / f.name)
    out = tmp_path / "out"
    assert main([str(series), "-o", str(out), "--model", str(polyp_model)]) == 0
    [case] = [p for p in out.iterdir() if p.is_dir()]
    assert (case / "segmentation.nii.gz").is_file() and (case / "segments.json").is_file()
    assert not (case / "seg.dcm").exists()
    assert not list(out.rglob("*.tmp*"))
    assert "seg.dcm" not in json.loads((case / "segments.json").read_text())["files"].values()
    assert "SEG not written" in capsys.readouterr().err


@needs_data
def test_a_seg_that_fails_to_build_takes_the_outputs_referencing_it_along(tmp_path, monkeypatch):
    """When building the DICOM SEG fails at write time (after the up-front check passed), the SR that would
    reference it is dropped with a note too, and the rest of the case is still written."""
    from doubleunet_segment.catalog import read_catalog
    from doubleunet_segment.data import dicom_seg
    from doubleunet_segment.data.cases import discover
    from doubleunet_segment.inference.predictor import Prediction
    from doubleunet_segment.inference.runner import planned_outputs, write_outputs

    def refuse(*args, **kwargs):
        raise ValueError("highdicom refused the source header")

    monkeypatch.setattr(dicom_seg, "write_dicom_seg", refuse)
    (case,), _ = discover([str(CT)])
    volume = case.load()
    case_dir = tmp_path / "case"
    planned, _ = planned_outputs(case_dir, volume, {"nifti", "dicom-seg"}, False)
    assert "dicom-seg" in planned
    planned = {
        "nifti": planned["nifti"],
        "dicom-seg": planned["dicom-seg"],
        "dicom-sr": case_dir / "sr.dcm",
        "segments": planned["segments"],
    }
    written = []
    extra = {"dicom-sr": lambda target, staged: written.append(target)}
    labels = np.zeros(volume.array.shape[1:], np.uint8)
    seg = Prediction(None, labels, "cpu", "test")
    notes = write_outputs(case_dir, volume, seg, read_catalog()["polyp"], planned, False, None, extra)
    assert not written and set(planned) == {"nifti", "segments"}
    assert any("DICOM SEG not written" in n for n in notes) and "DICOM SR not written: it references the SEG" in notes
    assert sorted(p.name for p in case_dir.iterdir()) == ["segmentation.nii.gz", "segments.json"]
