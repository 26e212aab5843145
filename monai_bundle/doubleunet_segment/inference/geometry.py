"""The model's geometry contract: volumes go to the orientation and voxel size a model was trained at, labels
come back to the input's own grid.

A model spec may name an orientation (``axcodes``, e.g. ``RAS``) and a voxel size in mm (``pixdim``). The
hippocampus model learnt MSD Task04 crops, RAS at 1 mm: a whole-head T1 stored sagittal at 0.9 x 0.9 x 1.2 mm
must be shown to it the same way, and its labels must land back on the study's own voxels so the NIfTI, the
DICOM SEG and the volumes in mL refer to the study. MONAI's ``Orientationd`` and ``Spacingd`` do the moving; its
``Invertd`` undoes them on the label map (nearest neighbour: a label map has no in-between values).

The same transforms serve the batch runner (:class:`ModelGrid`) and the bundle's dictionary inference workflow
(:func:`model_grid_transforms` in ``configs/inference.json``), so both see the same voxels.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import Compose, Invertd, MapTransform, Orientationd, Spacingd

from ..catalog import ModelSpec

__all__ = ["ModelGrid", "model_grid_transforms"]


def model_grid_transforms(spec: ModelSpec, keys: Sequence[Hashable] = ("image",)) -> list[MapTransform]:
    """``Orientationd`` to ``spec.axcodes`` and ``Spacingd`` to ``spec.pixdim`` (bilinear), each only when the
    spec names it; an empty list for a model used as given (the 2D polyp model).

    Args:
        spec: the model.
        keys: the (C, X, Y, Z) MetaTensor images to move.
    """
    steps: list[MapTransform] = []
    if spec.axcodes:
        steps.append(Orientationd(keys=keys, axcodes=spec.axcodes, labels=None))
    if spec.pixdim:
        steps.append(Spacingd(keys=keys, pixdim=spec.pixdim, mode="bilinear", padding_mode="border"))
    return steps


class ModelGrid:
    """A volume on the model's grid, and its label map back on the input's grid.

    Args:
        spec: the model; a spec without ``axcodes`` and ``pixdim`` makes this a no-op (:attr:`active` False).

    A volume already in the model's orientation and voxel size (an MSD crop for the hippocampus model) comes
    through unchanged: MONAI's resampler returns the input as it is when the grids agree.
    """

    def __init__(self, spec: ModelSpec) -> None:
        self.transform = Compose(model_grid_transforms(spec))
        self.active = bool(self.transform.transforms)

    def to_model(self, array: np.ndarray, affine: np.ndarray) -> dict:
        """``{"image": MetaTensor}``: the (C, X, Y, Z) ``array`` with its 4x4 voxel -> RAS mm ``affine``, moved to the
        model's orientation and voxel size (MONAI records the moves on the tensor for :meth:`labels_back`)."""
        # a flipped view (negative strides) cannot become a tensor; a contiguous array is not copied
        pixels = torch.as_tensor(np.ascontiguousarray(array), dtype=torch.float32)
        image = MetaTensor(pixels, affine=torch.as_tensor(affine, dtype=torch.float64))
        return self.transform({"image": image})

    def back(self, moved: dict, values: np.ndarray, nearest: bool = False) -> np.ndarray:
        """(K, X', Y', Z') ``values`` made on ``moved["image"]``'s grid, on the input's (K, X, Y, Z) grid.

        Args:
            moved: what :meth:`to_model` returned.
            values: per-voxel values on the model's grid (probabilities, or a label map as (1, X', Y', Z')).
            nearest: nearest-neighbour (label maps) instead of the forward transforms' own bilinear mode.

        Returns:
            float32 (K, X, Y, Z), inverted through MONAI's ``Invertd``.
        """
        pred = MetaTensor(torch.as_tensor(values, dtype=torch.float32), affine=moved["image"].affine)
        inverted = Invertd(keys="pred", transform=self.transform, orig_keys="image", nearest_interp=nearest)(
            {"image": moved["image"], "pred": pred}
        )["pred"]
        return np.asarray(inverted, dtype=np.float32)

    def labels_back(self, moved: dict, labels: np.ndarray) -> np.ndarray:
        """The (X', Y', Z') uint8 ``labels`` made on ``moved["image"]``'s grid, on the input's (X, Y, Z) grid
        (nearest neighbour: a label map has no in-between values)."""
        return np.rint(self.back(moved, labels[None], nearest=True)[0]).astype(np.uint8)
