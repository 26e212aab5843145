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
