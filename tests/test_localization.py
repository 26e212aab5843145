"""Hippocampus localisation (``inference/localization.py``): registration of a real whole head to the MNI152
template, the crops it gives, eTIV, the extract/paste round trip and the whole-head test.

The real head is ``wholehead-t1/aomic-piop2-sub-0001`` of the sample data (FreeSurfer ``orig.mgz`` and ``aseg.mgz``:
17 left hippocampus, 53 right); the template comes inside nilearn's wheel.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from doubleunet_segment.inference.localization import (
    ETIV_SCALE_ML,
    HIPPOCAMPUS_BOXES_MNI,
    Crop,
    Registration,
    extract,
    hippocampus_crops,
    is_whole_head,
    paste,
    register_to_template,
)
from helpers import DATA, needs_data

HEAD = DATA / "wholehead-t1" / "aomic-piop2-sub-0001"
LEFT_HIPPOCAMPUS, RIGHT_HIPPOCAMPUS = 17, 53  # FreeSurfer aseg labels


@pytest.fixture(scope="module")
def head() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(orig intensities, aseg labels, their shared affine) of the real head."""
    orig, aseg = nib.load(HEAD / "orig.mgz"), nib.load(HEAD / "aseg.mgz")
    assert np.allclose(orig.affine, aseg.affine)
    return np.asarray(orig.dataobj), np.asarray(aseg.dataobj), orig.affine


@pytest.fixture(scope="module")
def registration(head) -> Registration:
    return register_to_template(head[0], head[2])


@pytest.fixture(scope="module")
def template() -> nib.Nifti1Image:
    from nilearn import datasets

    return datasets.load_mni152_template(resolution=1)


def inside(crop: Crop, affine: np.ndarray, voxels: np.ndarray) -> np.ndarray:
    """Which of the (N, 3) subject ``voxels`` have their centre inside ``crop`` (nearest crop voxel exists)."""
    index = nib.affines.apply_affine(np.linalg.inv(crop.affine) @ affine, voxels)
    return np.all((index > -0.5) & (index < np.asarray(crop.shape) - 0.5), axis=1)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * np.sum(a & b) / (np.sum(a) + np.sum(b))


@needs_data
def test_real_head_crops_hold_its_hippocampi(head, registration):
    _, aseg, affine = head
    print(
        f"\nregistration {registration.seconds:.2f} s, metric {registration.metric:.3f}, "
        f"ASF {registration.scale_factor:.3f}, eTIV {registration.etiv_ml():.0f} mL"
    )
    assert registration.seconds < 10
    assert registration.plausible
    left, right = hippocampus_crops(registration)
    assert (left.side, left.mirrored, right.side, right.mirrored) == ("left", False, "right", True)
    centres = [(c.affine @ np.r_[(np.asarray(c.shape) - 1) / 2, 1])[:3] for c in (left, right)]
    assert centres[0][0] < centres[1][0]  # the left crop is on the subject's left: lower RAS x
    for crop, label in ((left, LEFT_HIPPOCAMPUS), (right, RIGHT_HIPPOCAMPUS)):
        fraction = inside(crop, affine, np.argwhere(aseg == label)).mean()
        print(f"{crop.side}: crop {crop.shape}, {fraction:.1%} of FreeSurfer label {label} inside")
        assert fraction >= 0.95
        other = RIGHT_HIPPOCAMPUS if label == LEFT_HIPPOCAMPUS else LEFT_HIPPOCAMPUS
        assert inside(crop, affine, np.argwhere(aseg == other)).mean() < 0.05


@needs_data
def test_crops_look_like_the_training_crops(head, registration):
    """Both crops, the right one mirrored, show the hippocampus as the MSD crops do: anterior half minus
    posterior half of the label is (+3, +18, -7) voxels over MSD case 001 (+x: lateral to medial, head low)."""
    _, aseg, affine = head
    msd = np.asarray(nib.load(DATA / "msd-hippocampus" / "labelsTr" / "hippocampus_001.nii.gz").dataobj) > 0
    for crop, label in zip(hippocampus_crops(registration), (LEFT_HIPPOCAMPUS, RIGHT_HIPPOCAMPUS)):
        mask = extract((aseg == label).astype(np.uint8), affine, crop, order=0) > 0
        for voxels in (np.argwhere(mask), np.argwhere(msd)):
            middle = np.median(voxels[:, 1])
            axis = voxels[voxels[:, 1] > middle].mean(0) - voxels[voxels[:, 1] <= middle].mean(0)
            assert axis[0] > 0 and axis[1] > 10 and axis[2] < -3, (crop.side, axis)


@needs_data
@pytest.mark.parametrize("axcodes", ["RAS", "LPS", "LIA"])
def test_template_registers_to_itself(template, axcodes):
    ras_to_codes = nib.orientations.ornt_transform(
        nib.orientations.axcodes2ornt("RAS"), nib.orientations.axcodes2ornt(axcodes)
    )
    image = template.as_reoriented(ras_to_codes)
    assert nib.aff2axcodes(image.affine) == tuple(axcodes)
    result = register_to_template(image.get_fdata(dtype=np.float32), image.affine)
    matrix = result.subject_to_template
    assert np.all(np.abs(matrix[:3, 3]) < 2)
    assert np.allclose(np.linalg.svd(matrix[:3, :3])[1], 1, atol=0.02)
    assert np.allclose(matrix[:3, :3], np.eye(3), atol=0.02)  # nor a rotation
    corners = np.array([corner for box in HIPPOCAMPUS_BOXES_MNI.values() for corner in box])
    assert np.all(np.linalg.norm(nib.affines.apply_affine(matrix, corners) - corners, axis=1) < 2)
    if axcodes == "RAS":  # same input, same transform (to the last digits ITK's threads may sum in any order)
        again = register_to_template(image.get_fdata(dtype=np.float32), image.affine)
        assert np.allclose(again.subject_to_template, matrix, rtol=0, atol=1e-9)


@needs_data
def test_etiv_of_the_real_head_and_a_bigger_one(head, registration):
    etiv = registration.etiv_ml()
    assert 1200 < etiv < 1900
    scaled = np.diag([1.1, 1.1, 1.1, 1.0]) @ head[2]  # the same head, 1.1 times larger in every direction
    bigger = register_to_template(head[0], scaled)
    print(f"\neTIV {etiv:.0f} mL, scaled head {bigger.etiv_ml():.0f} mL, ratio {bigger.etiv_ml() / etiv:.3f}")
    assert bigger.etiv_ml() / etiv == pytest.approx(1.1**3, rel=0.03)


def test_scale_factor_direction():
    """ASF is the subject -> template volume scaling: a head twice the template's size (halved to fit) has
    ASF 1/8 and eTIV 8 x 1948.106 mL."""
    big = Registration(np.diag([0.5, 0.5, 0.5, 1.0]), metric=-0.5, seconds=0.0)
    assert big.scale_factor == pytest.approx(0.125)
    assert big.etiv_ml() == pytest.approx(8 * ETIV_SCALE_ML)
    assert Registration(np.eye(4), -0.5, 0.0).etiv_ml() == pytest.approx(ETIV_SCALE_ML)


@needs_data
def test_extract_paste_round_trip(head, registration):
    _, aseg, affine = head
    # hippocampus 1 and amygdala 2 on each side, the way the model's two labels come back
    labels = np.zeros(aseg.shape, np.uint8)
    labels[np.isin(aseg, (17, 53))] = 1
    labels[np.isin(aseg, (18, 54))] = 2
    out = np.full(aseg.shape, 9, np.uint8)  # a value no paste writes: shows what was left alone
    expected = out.copy()
    voxels = np.indices(aseg.shape).reshape(3, -1).T
    for crop, offset in zip(hippocampus_crops(registration), (0, 2)):
        cropped = extract(labels, affine, crop, order=0)
        assert cropped.shape == crop.shape and cropped.dtype == np.float32
        fresh = paste(cropped.astype(np.uint8), crop, aseg.shape, affine)
        within = inside(crop, affine, voxels).reshape(aseg.shape)
        for value in (1, 2):
            score = dice(fresh[within] == value, labels[within] == value)
            print(f"{crop.side} label {value}: Dice {score:.3f}")
            assert score > 0.9
        assert not fresh[~within].any()  # nothing outside the crop
        assert paste(cropped.astype(np.uint8), crop, aseg.shape, affine, out=out, offset=offset) is out
        expected[fresh > 0] = fresh[fresh > 0] + offset
    assert set(np.unique(out)) == {1, 2, 3, 4, 9}
    assert np.array_equal(out, expected)  # labels + offset where the crop has them; background overwrites nothing


@needs_data
def test_extract_resamples_intensities(head, registration):
    orig, _, affine = head
    for crop in hippocampus_crops(registration):
        values = extract(orig, affine, crop)
        assert values.shape == crop.shape and values.dtype == np.float32
        assert 0 < values.mean() < orig.max() and not np.any(values == 0)  # inside the head, nothing outside


def grid_crop(mirrored: bool) -> Crop:
    """A crop of voxels (2..5, 1..6, 3..5) of a 1 mm grid, flipped in X when ``mirrored``."""
    affine = np.eye(4)
    affine[:3, 3] = (2, 1, 3)
    if mirrored:
        affine[0, 0], affine[0, 3] = -1, 5
    return Crop(side="right" if mirrored else "left", affine=affine, shape=(4, 6, 3), mirrored=mirrored)


@pytest.mark.parametrize("mirrored", [False, True])
def test_extract_and_paste_on_an_aligned_grid(mirrored):
    rng = np.random.default_rng(0)
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    volume = rng.random((8, 9, 7)).astype(np.float32)
    crop = grid_crop(mirrored)
    expected = volume[2:6, 1:7, 3:6]
    expected = expected[::-1] if mirrored else expected
    assert np.allclose(extract(volume, affine, crop), expected, atol=1e-6)
    labels = rng.integers(0, 3, crop.shape).astype(np.uint8)
    out = paste(labels, crop, volume.shape, affine, offset=2)
    back = out[2:6, 1:7, 3:6]
    assert np.array_equal(back[::-1] if mirrored else back, np.where(labels > 0, labels + 2, 0))
    out[2:6, 1:7, 3:6] = 0
    assert not out.any()


def test_errors():
    crop = grid_crop(False)
    with pytest.raises(ValueError, match="3D"):
        extract(np.zeros((8, 9)), np.eye(4), crop)
    with pytest.raises(ValueError, match="singular"):
        extract(np.zeros((8, 9, 7)), np.zeros((4, 4)), crop)
    with pytest.raises(ValueError, match="shape"):
        paste(np.zeros((2, 2, 2), np.uint8), crop, (8, 9, 7), np.eye(4))
    with pytest.raises(ValueError, match="uint8"):
        paste(np.full(crop.shape, 250, np.uint8), crop, (8, 9, 7), np.eye(4), offset=10)
    with pytest.raises(ValueError, match="contrast"):
        register_to_template(np.ones((20, 20, 20), np.float32), np.eye(4))
    with pytest.raises(ValueError, match="pixdim"):
        hippocampus_crops(Registration(np.eye(4), -0.5, 0.0), pixdim=0)
    with pytest.raises(ValueError, match="trained_side"):
        hippocampus_crops(Registration(np.eye(4), -0.5, 0.0), trained_side="both")


def test_the_side_the_model_was_not_trained_on_is_the_mirrored_one():
    identity = Registration(np.eye(4), -0.5, 0.0)
    assert [(c.side, c.mirrored) for c in hippocampus_crops(identity)] == [("left", False), ("right", True)]
    flipped = hippocampus_crops(identity, trained_side="right")
    assert [(c.side, c.mirrored) for c in flipped] == [("left", True), ("right", False)]
    assert np.linalg.det(flipped[0].affine[:3, :3]) < 0 < np.linalg.det(flipped[1].affine[:3, :3])


@needs_data
def test_is_whole_head(head, template):
    assert is_whole_head(head[0].shape, head[2])
    assert is_whole_head(template.shape, template.affine)
    msd = nib.load(DATA / "msd-hippocampus" / "imagesTr" / "hippocampus_001.nii.gz")
    assert not is_whole_head(msd.shape, msd.affine)
    assert not is_whole_head((256, 256, 30), np.eye(4))  # a thin slab is not a whole head either
