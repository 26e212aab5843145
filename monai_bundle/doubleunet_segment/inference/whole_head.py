"""Whole-head studies for a model trained on crops around one hippocampus: find each hippocampus, segment its
crop, and put left and right labels back on the study's own grid.

The shipped hippocampus model learnt MSD Task04 crops (about 35 x 50 x 35 mm at 1 mm, RAS) of the LEFT
hippocampus: the anterior-minus-posterior centroid of its labels is (+2.1, +18.0, -7.3) voxels over all 208
training cases, as the left hippocampus of a real head in RAS mm is (+3.2, +19.8, -6.8) while the right one is
(-1.8, +18.2, -8.2) (FreeSurfer labels 17/53 of ``wholehead-t1/aomic-piop2-sub-0001``). Run over a whole head it
finds neither hippocampus (measured: 858 voxels, none near either), and it takes minutes. So a whole head is
registered affinely to the MNI152 template (:mod:`.localization`), a box around each hippocampus is resampled into
a crop like the training ones (the right one mirrored to look like a left one), each crop is segmented, and the
labels are pasted back: left anterior 1, left posterior 2, right anterior 3, right posterior 4.

``--localize auto`` does this when the study's field of view is far larger than a training crop; ``on`` and
``off`` force it either way.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from ..catalog import ModelSpec
from .localization import (
    Registration,
    extract,
    hippocampus_crops,
    is_whole_head,
    paste,
    paste_values,
    register_to_template,
)
from .predictor import Predictor

__all__ = [
    "LOCALIZE_CHOICES",
    "LR_SEGMENT_SET",
    "WholeHeadResult",
    "check_localize",
    "segment_whole_head",
    "should_localize",
    "whole_head_spec",
]

LOCALIZE_CHOICES = ("auto", "on", "off")
LR_SEGMENT_SET = "hippocampus_lr"  # doubleunet_segment.segments.HIPPOCAMPUS_LR_SEGMENTS: values 1-4


@dataclass
class WholeHeadResult:
    """What :func:`segment_whole_head` returns for one study.

    Attributes:
        labels: (X, Y, Z) uint8 on the study's grid: 1 left anterior, 2 left posterior, 3 right anterior,
            4 right posterior hippocampus.
        registration: the study-to-MNI152 registration (its eTIV and metric feed the report and QC).
        disagreement: (X, Y, Z) float32 in [0, 1], the stage-1 vs stage-2 disagreement of DoubleU-Net's two
            U-Nets (total variation distance of their class probabilities) inside the crops, 0 elsewhere; None
            unless asked for.
        probabilities: (5, X, Y, Z) float32 class probabilities (background, then labels 1-4) pasted back from
            the crops (trilinear), background 1 outside them; None unless asked for.
        seconds: wall time per stage: ``registration``, ``inference``.
        notes: things a person should know.
    """

    labels: np.ndarray
    registration: Registration
    disagreement: np.ndarray | None = None
    probabilities: np.ndarray | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def check_localize(choice: str, spec: ModelSpec) -> None:
    """Refuse a ``--localize`` choice no study could use with this model.

    Raises:
        ValueError: ``choice`` is not one of :data:`LOCALIZE_CHOICES`, or ``on`` for a model not trained on crops
            (no ``crop_size`` in its spec: nothing to localise).
    """
    if choice not in LOCALIZE_CHOICES:
        raise ValueError(f"--localize must be one of {', '.join(LOCALIZE_CHOICES)}, got {choice!r}")
    if choice == "on" and spec.crop_size is None:
        raise ValueError(f"--localize on: model {spec.name!r} was not trained on crops (no crop_size in its spec)")


def whole_head_spec(spec: ModelSpec) -> ModelSpec:
    """``spec`` labelling a whole head: its segments are the left/right set (:data:`LR_SEGMENT_SET`)."""
    return dataclasses.replace(spec, segments=LR_SEGMENT_SET)


def should_localize(choice: str, spec: ModelSpec, shape: tuple[int, ...], affine: np.ndarray) -> bool:
    """Whether a (X, Y, Z) study with this 4x4 voxel -> RAS mm ``affine`` goes through localisation.

    Args:
        choice: ``auto`` (a crop-trained model and a field of view far larger than its crops), ``on`` or ``off``.
        spec: the model.
        shape: the study's (X, Y, Z) voxels.
        affine: its 4x4 voxel -> RAS mm affine.

    Raises:
        ValueError: as :func:`check_localize`.
    """
    check_localize(choice, spec)
    if choice == "off" or spec.crop_size is None:
        return False
    return choice == "on" or is_whole_head(tuple(shape[:3]), affine, spec.crop_size)


def stage_disagreement(predictor: Predictor, crop: np.ndarray) -> np.ndarray:
    """(X', Y', Z') float32 in [0, 1]: how far DoubleU-Net's stage-1 and stage-2 class probabilities differ on a
    crop, as the total variation distance 0.5 * sum_k |p1_k - p2_k| per voxel, slice by slice along the model's
    slice axis. Stage 1 is the VGG19 U-Net's coarse mask, stage 2 its refinement (Jha et al., CBMS 2020); where
    they disagree the result rests on one stage alone.

    Args:
        predictor: the loaded model; its PyTorch network is used (``forward_stages``).
        crop: (X', Y', Z') intensities on the model's grid.
    """
    network = predictor._torch_network
    axis = predictor.inferer.slice_axis
    x = predictor.preprocessing(crop[None].astype(np.float32, copy=False))  # (1, X', Y', Z') normalised
    slices = torch.movedim(torch.as_tensor(x), axis + 1, 0)  # (S, 1, H, W)
    if predictor.spec.in_channels == 3:
        slices = slices.expand(-1, 3, -1, -1)
    h, w = slices.shape[-2:]
    pad = (0, -w % 16, 0, -h % 16)  # forward_stages wants multiples of 16
    with torch.inference_mode():
        stage1, stage2 = network.forward_stages(torch.nn.functional.pad(slices, pad).to(predictor.device))
    if stage1.shape[1] == 1:
        p1, p2 = torch.sigmoid(stage1), torch.sigmoid(stage2)
        tv = (p1 - p2).abs()[:, 0]
    else:
        tv = 0.5 * (torch.softmax(stage1, 1) - torch.softmax(stage2, 1)).abs().sum(1)
    tv = tv[:, :h, :w].float().cpu()  # (S, H, W)
    return np.ascontiguousarray(torch.movedim(tv, 0, axis).numpy())


def segment_whole_head(
    predictor: Predictor,
    array: np.ndarray,
    affine: np.ndarray,
    progress: Callable[[int, int], None] | None = None,
    uncertainty: bool = False,
    keep_probabilities: bool = False,
) -> WholeHeadResult:
    """Left and right hippocampus of a whole-head study.

    Args:
        predictor: the crop-trained model (the shipped hippocampus model).
        array: (C, X, Y, Z) intensities (grey: C = 1; RGB is averaged).
        affine: 4x4 voxel -> RAS mm.
        progress: called with (crops done, crops in total).
        uncertainty: also return the stage-1 vs stage-2 disagreement map.
        keep_probabilities: also return the class probabilities on the study's grid (the Slicer effect
            re-thresholds them).

    Returns:
        The :class:`WholeHeadResult`.

    Raises:
        RuntimeError: the registration to the template failed (SimpleITK's message).
    """
    grey = array.mean(axis=0) if array.shape[0] > 1 else array[0]
    shape = grey.shape
    start = time.monotonic()
    registration = register_to_template(grey, affine)
    seconds = {"registration": time.monotonic() - start}
    labels = np.zeros(shape, dtype=np.uint8)
    disagreement = np.zeros(shape, dtype=np.float32) if uncertainty else None
    classes = predictor.spec.out_channels - 1  # 2: anterior, posterior
    probabilities = None
    if keep_probabilities:
        probabilities = np.zeros((1 + 2 * classes, *shape), dtype=np.float32)
        probabilities[0] = 1.0  # outside the boxes: background
    start = time.monotonic()
    crops = hippocampus_crops(registration, trained_side=predictor.spec.crop_side or "left")
    for done, crop in enumerate(crops):
        patch = extract(grey, affine, crop)
        seg = predictor.segment(patch[None], keep_probabilities=probabilities is not None)
        offset = classes if crop.side == "right" else 0
        paste(seg.labels, crop, shape, affine, out=labels, offset=offset)
        if probabilities is not None:
            channels = [0, *range(1 + offset, 1 + offset + classes)]
            paste_values(seg.probabilities, crop, shape, affine, probabilities, channels)
        if disagreement is not None:
            tv = stage_disagreement(predictor, patch)
            # the map is pasted as labels are: quantised to 1/250 steps so it travels through the uint8 paster
            quantised = paste(np.rint(tv * 250).astype(np.uint8), crop, shape, affine)
            disagreement = np.maximum(disagreement, quantised.astype(np.float32) / 250)
        if progress:
            progress(done + 1, len(crops))
    seconds["inference"] = time.monotonic() - start
    return WholeHeadResult(labels, registration, disagreement, probabilities, seconds)
