"""Normalisations and label conversions shared by training and inference."""

import nibabel as nib
import numpy as np
import pytest
import torch
from doubleunet_segment.transforms import (
    ProbabilitiesToLabels,
    ProbabilitiesToLabelsd,
    add_slice_context,
    keep_largest_components,
    normalize,
    probabilities_to_labels,
)
from helpers import DATA, needs_data
from monai.data import MetaTensor
from monai.transforms import NormalizeIntensity


@needs_data
def test_zscore_equals_monai_nonzero_normalisation_and_leaves_input_alone():
    path = DATA / "msd-hippocampus" / "imagesTr" / "hippocampus_001.nii.gz"
    volume = np.asarray(nib.load(path).dataobj, dtype=np.float32)[None]
    before = volume.copy()
    ours = normalize(volume, "zscore")
    np.testing.assert_array_equal(volume, before)
    theirs = torch.as_tensor(NormalizeIntensity(nonzero=True)(torch.as_tensor(before))).float()
    assert torch.allclose(ours, theirs, atol=1e-5)


def test_median_normalisation_is_the_papers():
    img = np.array([[[10.0, 20.0, 30.0, 250.0]]], dtype=np.float32)
    expected = np.clip(img - 20.0 + 127.0, 0, 255) / 255.0  # torch.median takes the lower middle value
    np.testing.assert_allclose(normalize(img, "median").numpy(), expected, rtol=1e-6)
    with pytest.raises(ValueError, match="unknown normalisation"):
        normalize(img, "minmax")


def test_slice_context_stacks_neighbours_with_repeated_edges():
    vol = torch.arange(4.0).view(1, 1, 1, 4)  # slice k holds the value k
    ctx = add_slice_context(vol, axis=2, context=1)
    assert ctx.shape == (3, 1, 1, 4)
    assert ctx[:, 0, 0, 0].tolist() == [0, 0, 1] and ctx[:, 0, 0, 3].tolist() == [2, 3, 3]


def test_probabilities_to_labels_threshold_and_argmax():
    binary = torch.tensor([[[0.2, 0.5, 0.9]]])
    assert probabilities_to_labels(binary, 0.5).tolist() == [[[0, 1, 1]]]
    multi = torch.tensor([[[0.7, 0.1]], [[0.2, 0.3]], [[0.1, 0.6]]])
    assert probabilities_to_labels(multi).tolist() == [[[0, 2]]]
    assert probabilities_to_labels(multi, 0.9).tolist() == [[[0, 2]]]  # multi-class: plain argmax whatever the cut
    for probs in (binary, multi):
        labels = probabilities_to_labels(probs)
        assert type(labels) is torch.Tensor and labels.dtype == torch.uint8  # a plain tensor stays plain


def test_label_transforms_keep_metadata_and_give_one_hot():
    affine = torch.diag(torch.tensor([2.0, 3.0, 4.0, 1.0]), 0).double()
    multi = MetaTensor(torch.tensor([[[[0.7, 0.1]]], [[[0.2, 0.3]]], [[[0.1, 0.6]]]]), affine=affine)
    labels = probabilities_to_labels(multi)
    assert isinstance(labels, MetaTensor) and torch.equal(labels.affine, affine) and labels.dtype == torch.uint8
    out = ProbabilitiesToLabelsd("pred", one_hot=True)({"pred": multi})["pred"]
    assert isinstance(out, MetaTensor) and torch.equal(out.affine, affine) and out.dtype == torch.float32
    assert out[:, 0, 0].tolist() == [[1.0, 0.0], [0.0, 0.0], [0.0, 1.0]]
    binary = ProbabilitiesToLabelsd("pred", threshold=0.25, one_hot=True)({"pred": multi[1:2]})["pred"]
    assert binary.tolist() == [[[[0.0, 1.0]]]]  # one channel: thresholded, never one-hot
    assert ProbabilitiesToLabels(0.25)(multi[1:2].numpy()).tolist() == [[[0, 1]]]


def test_largest_component_per_class_drops_islands_only():
    labels = np.zeros((12, 12, 6), dtype=np.uint8)
    labels[1:5, 1:5, 1:4] = 1  # anterior: the big piece
    labels[9, 9, 4] = 1  # anterior: a one-voxel island
    labels[5:8, 1:5, 1:4] = 2  # posterior, touching anterior: one piece of its own class
    labels[10:12, 0:2, 0:2] = 2  # posterior island, smaller
    kept = keep_largest_components(labels, classes=2)
    assert kept.dtype == np.uint8 and kept.shape == labels.shape
    assert kept[9, 9, 4] == 0 and not kept[10:12, 0:2, 0:2].any()
    np.testing.assert_array_equal(kept[labels != 0][kept[labels != 0] != 0], labels[kept != 0])
    assert (kept == 1).sum() == 48 and (kept == 2).sum() == 36
