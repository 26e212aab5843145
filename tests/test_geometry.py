"""The model's geometry contract: volumes go to the model's orientation and voxel size, labels come back to the
input's grid; on the real MSD hippocampus crops and the shipped hippocampus model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk
from doubleunet_segment.catalog import ModelSpec, read_catalog
from doubleunet_segment.inference.geometry import ModelGrid
from helpers import DATA, needs_data

CASE = DATA / "msd-hippocampus" / "imagesTr" / "hippocampus_001.nii.gz"
LABEL = DATA / "msd-hippocampus" / "labelsTr" / "hippocampus_001.nii.gz"
RAS_1MM = ModelSpec("h", Path("unused.pt"), axcodes="RAS", pixdim=(1.0, 1.0, 1.0))


def load(path: Path) -> tuple[np.ndarray, np.ndarray]:
    image = nib.load(path)
    return np.asarray(image.dataobj, dtype=np.float32), image.affine


def reoriented(array: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The same voxels stored another way round (axes permuted to Z, X, Y, the first flipped): an LIA-like layout
    as a scanner might write it, with the affine that keeps every voxel at its place in the patient."""
    ornt = np.array([[2, -1], [0, 1], [1, 1]])  # new axis 0 = old Z flipped, 1 = old X, 2 = old Y
    moved = nib.orientations.apply_orientation(array, ornt)
    return moved, affine @ nib.orientations.inv_ornt_aff(ornt, array.shape)


def test_a_model_without_geometry_takes_volumes_as_given():
    assert not ModelGrid(ModelSpec("p", Path("unused.pt"))).active
    assert ModelGrid(read_catalog()["hippocampus"]).active  # the shipped hippocampus model: RAS, 1 mm
    assert read_catalog()["hippocampus"].axcodes == "RAS" and read_catalog()["hippocampus"].pixdim == (1.0, 1.0, 1.0)
    assert read_catalog()["polyp"].axcodes is None and read_catalog()["polyp"].pixdim is None


@needs_data
def test_a_volume_already_on_the_models_grid_is_untouched():
    array, affine = load(CASE)
    grid = ModelGrid(RAS_1MM)
    moved = grid.to_model(array[None], affine)
    assert np.array_equal(np.asarray(moved["image"][0]), array)
    labels = np.asarray(nib.load(LABEL).dataobj).astype(np.uint8)
    assert np.array_equal(grid.labels_back(moved, labels), labels)


@needs_data
def test_another_orientation_shows_the_model_the_same_voxels_and_labels_return_to_the_input_layout():
    array, affine = load(CASE)
    labels = np.asarray(nib.load(LABEL).dataobj).astype(np.uint8)
    stored, stored_affine = reoriented(array, affine)
    assert nib.aff2axcodes(stored_affine) != ("R", "A", "S")
    grid = ModelGrid(RAS_1MM)
    moved = grid.to_model(stored[None], stored_affine)
    assert np.array_equal(np.asarray(moved["image"][0]), array)  # exactly what the model was trained on
    back = grid.labels_back(moved, labels)
    assert np.array_equal(back, reoriented(labels, affine)[0])


@needs_data
def test_anisotropic_voxels_are_resampled_to_1_mm_and_labels_come_back_to_the_input_grid():
    # The MSD crop at 1 x 1 x 2.5 mm, resampled by SimpleITK as a thick-slice acquisition would store it.
    image = sitk.ReadImage(str(LABEL))
    size = [image.GetSize()[0], image.GetSize()[1], int(image.GetSize()[2] / 2.5)]
    thick = sitk.Resample(
        image,
        size,
        sitk.Transform(),
        sitk.sitkNearestNeighbor,
        image.GetOrigin(),
        (1.0, 1.0, 2.5),
        image.GetDirection(),
        0,
        image.GetPixelID(),
    )
    labels_thick = sitk.GetArrayFromImage(thick).transpose(2, 1, 0).astype(np.uint8)  # (X, Y, Z)
    affine = nib.load(LABEL).affine @ np.diag([1.0, 1.0, 2.5, 1.0])
    grid = ModelGrid(RAS_1MM)
    moved = grid.to_model(labels_thick[None].astype(np.float32), affine)
    assert np.allclose(np.abs(np.diag(np.asarray(moved["image"].affine))[:3]), 1.0)
    assert moved["image"].shape[3] > 2 * labels_thick.shape[2]  # Z now at 1 mm
    on_model = np.rint(np.asarray(moved["image"][0])).astype(np.uint8)
    back = grid.labels_back(moved, on_model)
    assert back.shape == labels_thick.shape
    for value in (1, 2):
        a, b = back == value, labels_thick == value
        assert 2 * (a & b).sum() / (a.sum() + b.sum()) > 0.95, value


@needs_data
def test_the_cli_segments_a_reoriented_study_as_it_segments_the_original(tmp_path):
    """The shipped hippocampus model on an MSD case stored another way round: the label map is the original
    case's, in the stored layout (before the geometry contract the model saw sagittal slices as coronal)."""
    array, affine = load(CASE)
    stored, stored_affine = reoriented(array, affine)
    nib.save(nib.Nifti1Image(stored, stored_affine), tmp_path / "stored.nii.gz")
    nib.save(nib.Nifti1Image(array, affine), tmp_path / "original.nii.gz")
    for name in ("original", "stored"):
        cmd = [sys.executable, "-m", "doubleunet_segment.cli", str(tmp_path / f"{name}.nii.gz"), "--model"]
        cmd += ["hippocampus", "-o", str(tmp_path / "out"), "--progress", "none", "--device", "cpu"]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
    original = np.asarray(nib.load(tmp_path / "out" / "original" / "segmentation.nii.gz").dataobj)
    stored_labels = nib.load(tmp_path / "out" / "stored" / "segmentation.nii.gz")
    assert np.allclose(stored_labels.affine, stored_affine)  # written on the study's own grid
    assert np.array_equal(np.asarray(stored_labels.dataobj), reoriented(original, affine)[0])
    assert (
        json.loads((tmp_path / "out" / "stored" / "segments.json").read_text())["voxels"]["Anterior hippocampus"] > 100
    )
