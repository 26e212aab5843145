"""End-to-end DICOM cases from public bug reports (../shared/reliability-cases), run through the real CLI.

Each test builds its input with the case's ``make.py`` (or with pydicom, for the tri-plane localizer) and runs
``doubleunet-segment`` in-process with a small seeded random-weight model: the faults are in reading and
writing, not in the network.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from dicom_synth import TRIPLANE, SynthSeries, ras_affine, write_series, write_triplane_localizer
from doubleunet_segment.cli import main
from helpers import DATA, dciodvfy_errors, make_reliability_case, needs_cases, needs_data

HIPPO = DATA / "msd-hippocampus" / "imagesTr" / "hippocampus_001.nii.gz"
CVC = DATA / "cvc-clinicdb" / "images"

pytestmark = [needs_data, needs_cases]


def segment(inputs: list[Path], out: Path, model: Path, *extra: str) -> int:
    """The CLI's exit status for ``inputs`` into ``out`` (progress bars on: notes are shown with them)."""
    return main([*map(str, inputs), "-o", str(out), "--model", str(model), "--device", "cpu", *extra])


def sitk_ras_affine(folder: Path) -> tuple[np.ndarray, tuple[int, ...]]:
    """SimpleITK's reading of a DICOM folder as (4x4 RAS affine, size X, Y, Z): GDCM's file order and geometry."""
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    image = reader.Execute()
    lps = np.eye(4)
    lps[:3, :3] = np.asarray(image.GetDirection()).reshape(3, 3) * np.asarray(image.GetSpacing())
    lps[:3, 3] = image.GetOrigin()
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps, image.GetSize()


def case_dirs(out: Path) -> dict[str, Path]:
    return {p.name: p for p in sorted(out.iterdir()) if p.is_dir()}


# ------------------------------------------------------------------------------------ tri-plane localizer


def test_triplane_localizer_is_split_into_one_case_per_plane(tmp_path: Path, hippo_model: Path, capfd) -> None:
    """A localizer (axial, sagittal, coronal images under ONE SeriesInstanceUID) beside a normal series: the
    run exits 0, each plane is its own case with its own geometry and SEG, and the names are stable."""
    volume = np.asarray(nib.load(HIPPO).dataobj, dtype=np.float32)[:, :, 10:13]  # (35, 51, 3) real MR
    study = tmp_path / "study"
    common = {"study_uid": pydicom.uid.generate_uid(), "frame_of_reference_uid": pydicom.uid.generate_uid()}
    synth, uids = write_triplane_localizer(volume, study / "loc", **common)  # one folder, as scanners export
    t1 = SynthSeries(np.asarray(nib.load(HIPPO).dataobj, np.float32), series_number=2, description="T1", **common)
    write_series(t1, study / "t1", seed=9)

    assert segment([study], tmp_path / "out", hippo_model, "--format", "nifti,dicom-seg") == 0
    err = capfd.readouterr().err
    assert "3 orientations (a localizer): split into axial, coronal, sagittal" in err
    dirs = case_dirs(tmp_path / "out")
    expected = {f"SYN-001_1_localizer_{plane}": plane for plane in TRIPLANE}
    assert set(dirs) == {*expected, "SYN-001_2_T1"}
    for name, plane in expected.items():
        image = nib.load(dirs[name] / "segmentation.nii.gz")
        assert image.shape == volume.shape
        np.testing.assert_allclose(image.affine, ras_affine(synth[plane]), atol=1e-4)
        seg = pydicom.dcmread(dirs[name] / "seg.dcm")
        referenced = seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence
        assert {item.ReferencedSOPInstanceUID for item in referenced} == uids[plane]  # this plane's images only
    np.testing.assert_allclose(nib.load(dirs["SYN-001_2_T1"] / "segmentation.nii.gz").affine, ras_affine(t1), atol=1e-4)

    # stable: the same study scanned again (other file order on disk does not matter) gives the same names
    assert segment([study], tmp_path / "again", hippo_model, "--format", "nifti") == 0
    assert set(case_dirs(tmp_path / "again")) == set(dirs)


# ----------------------------------------------------------------------------- multi-frame cine, no FoR


def test_us_multiframe_cine_frames_match_the_same_frames_as_png(tmp_path: Path, polyp_model: Path, capfd) -> None:
    """4-frame RGB cine without Frame of Reference: segmented, SEG left out with a note decided before any
    file is written, and every frame's mask equals that frame's mask given alone as a PNG."""
    inputs = make_reliability_case("us-multiframe-nofor", tmp_path / "in")
    assert segment([inputs], tmp_path / "out", polyp_model, "--save-probabilities") == 0
    err = capfd.readouterr().err
    assert "DICOM SEG not written" in err and "no FrameOfReferenceUID" in err
    (case,) = case_dirs(tmp_path / "out").values()
    assert not (case / "seg.dcm").exists() and (case / "segments.json").is_file()
    cine = np.asarray(nib.load(case / "probabilities.nii.gz").dataobj).reshape(384, 288, 4)

    pngs = [shutil.copyfile(CVC / f"{k}.png", tmp_path / f"frame{k}.png") for k in (1, 2, 3, 4)]  # make.py's frames
    assert segment(pngs, tmp_path / "png", polyp_model, "--format", "nifti", "--save-probabilities") == 0
    for k in range(4):
        alone = np.asarray(nib.load(tmp_path / "png" / f"frame{k + 1}" / "probabilities.nii.gz").dataobj)
        np.testing.assert_allclose(cine[:, :, k], alone.reshape(384, 288), atol=1e-5, err_msg=f"frame {k + 1}")
        # the random model's masks at its own threshold are empty: compare masks at a cut that splits the frame
        cut = float(np.median(alone))
        np.testing.assert_array_equal(cine[:, :, k] >= cut, alone.reshape(384, 288) >= cut)


# ------------------------------------------------------------------------------- anonymised: no Type 2


def test_seg_written_without_type2_source_attributes(tmp_path: Path, polyp_model: Path) -> None:
    """Source without PatientBirthDate, PatientSex, AccessionNumber, StudyID, ...: the SEG carries them empty."""
    inputs = make_reliability_case("seg-missing-type2", tmp_path / "in")
    assert segment([inputs], tmp_path / "out", polyp_model) == 0
    (case,) = case_dirs(tmp_path / "out").values()
    seg = pydicom.dcmread(case / "seg.dcm")
    for keyword in ("PatientBirthDate", "PatientSex", "AccessionNumber", "StudyID", "ReferringPhysicianName"):
        assert keyword in seg and str(seg.get(keyword)) == ""
    assert seg.PatientID == "BH-T2-01"
    assert dciodvfy_errors(case / "seg.dcm") == []


# ---------------------------------------------------------------------------------- comma-written DS


@pytest.mark.parametrize("variant", ["comma-delimiter", "decimal-comma"])
def test_comma_written_pixel_spacing_is_read(tmp_path: Path, polyp_model: Path, variant: str, capfd) -> None:
    """``0.810547,0.810547`` and ``0,810547\\0,810547`` read as GDCM reads them; SEG gets the conformant value."""
    inputs = make_reliability_case("ds-comma-spacing", tmp_path / "in") / variant
    assert segment([inputs], tmp_path / "out", polyp_model) == 0
    err = capfd.readouterr().err
    assert "PixelSpacing written with" in err and "read as 0.810547\\0.810547" in err
    assert "Invalid value for VR DS" not in err
    (case,) = case_dirs(tmp_path / "out").values()
    affine = nib.load(case / "segmentation.nii.gz").affine
    np.testing.assert_allclose(np.linalg.norm(affine[:3, :2], axis=0), [0.810547, 0.810547], atol=1e-6)
    seg = pydicom.dcmread(case / "seg.dcm")
    spacing = seg.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing
    np.testing.assert_allclose([float(v) for v in spacing], [0.810547, 0.810547])
    assert dciodvfy_errors(case / "seg.dcm") == []


def test_unparseable_pixel_spacing_names_file_attribute_and_value(tmp_path: Path, polyp_model: Path, capfd) -> None:
    inputs = make_reliability_case("ds-comma-spacing", tmp_path / "in") / "comma-delimiter"
    bad = inputs / "IM0002.dcm"
    bad.write_bytes(bad.read_bytes().replace(b"0.810547,0.810547", b"0.810547;0.810547"))
    assert segment([inputs], tmp_path / "out", polyp_model) == 1
    err = capfd.readouterr().err
    assert f"{bad}: PixelSpacing '0.810547;0.810547' is not 2 decimal number(s)" in err
    assert not any((tmp_path / "out").rglob("*.nii.gz"))


# ------------------------------------------------------------------------------- pydicom's warnings


def test_pydicom_warnings_become_notes_not_raw_stderr(tmp_path: Path, polyp_model: Path, capfd) -> None:
    """An over-long SeriesDescription (LO, 64 at most) makes pydicom warn; the warning is a note of the case,
    naming the attribute and the files, and pydicom's raw ``UserWarning`` line never reaches stderr."""
    inputs = make_reliability_case("seg-missing-type2", tmp_path / "in") / "series"
    element = b"\x08\x00\x3e\x10LO"  # (0008,103E) SeriesDescription, explicit VR little endian
    for path in sorted(inputs.iterdir()):
        data = path.read_bytes()
        old = element + len(b"anonymised").to_bytes(2, "little") + b"anonymised"
        assert data.count(old) == 1
        path.write_bytes(data.replace(old, element + (70).to_bytes(2, "little") + b"x" * 70))
    assert segment([inputs], tmp_path / "out", polyp_model, "--format", "nifti") == 0
    err = capfd.readouterr().err
    assert "pydicom: SeriesDescription: The value length (70) exceeds the maximum length of 64" in err
    assert "in 3 files" in err
    assert "UserWarning" not in err and "warn_and_log" not in err


# ------------------------------------------------------------------------------ cases that work today


@pytest.mark.parametrize(
    "case, folders",
    [
        ("highbit-overlay", ["clean", "overlay", "overlay-rle"]),
        ("seg-nonascii-name", ["latin1", "utf8"]),
        ("instance-number-order", ["series"]),
        ("dicom-jpeg-endoscopy", ["ybr", "rgb"]),
        ("aniso-nonsquare-pixels", ["series"]),
    ],
)
def test_working_cases_stay_working(tmp_path: Path, polyp_model: Path, case: str, folders: list[str]) -> None:
    """Exit 0, and every output NIfTI on SimpleITK's geometry (shape and RAS affine) of its input folder."""
    inputs = make_reliability_case(case, tmp_path / "in")
    for folder in folders:
        out = tmp_path / "out" / folder
        assert segment([inputs / folder], out, polyp_model, "--format", "nifti,dicom-seg") == 0, folder
        (result,) = case_dirs(out).values()
        image = nib.load(result / "segmentation.nii.gz")
        affine, size = sitk_ras_affine(inputs / folder)
        assert tuple(image.shape) == tuple(size), folder
        np.testing.assert_allclose(image.affine, affine, atol=1e-4, err_msg=folder)
        assert np.abs(image.get_qform() - image.get_sform()).max() < 1e-4
