"""Intensity normalisations the shipped models were trained with, as plain functions and MONAI transforms.

The engine and the bundle configs both go through these, so training and inference cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.transforms import AsDiscrete, KeepLargestConnectedComponent, MapTransform
from monai.utils import convert_to_dst_type

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "NORMALIZATIONS",
    "Normalize",
    "Normalized",
    "ProbabilitiesToLabels",
    "ProbabilitiesToLabelsd",
    "SliceContextd",
    "add_slice_context",
    "keep_largest_components",
    "normalize",
    "normalize_each_slice",
    "postprocess_labels",
    "probabilities_to_labels",
    "zscore_nonzero",
]

NORMALIZATIONS = ("median", "zscore", "imagenet", "unit")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def zscore_nonzero(x: torch.Tensor, chunk: int = 16) -> torch.Tensor:
    """MONAI's ``NormalizeIntensity(nonzero=True)`` (population std, zeros kept) in about 2.3x the input's memory.

    MONAI's version builds several full-size temporaries (7.6 GB peak for a 512x512x600 volume); here the
    statistics accumulate in float64 over chunks of the last axis and one copy is normalised in place.

    Args:
        x: any shape, e.g. (C, X, Y, Z); not modified.
        chunk: slices of the last axis per pass.

    Returns:
        A float32 tensor of ``x``'s shape: non-zero voxels ``(x - mean) / std`` over the non-zero voxels
        (std 1 when it is 0), zeros stay 0; an all-zero input comes back as a float copy.
    """
    out = x.detach().clone().float()
    total, count = 0.0, 0
    for part in torch.split(out, chunk, dim=-1):
        total += float(part.sum(dtype=torch.float64))
        count += int(torch.count_nonzero(part))
    if count == 0:
        return out
    mean = total / count
    squares = 0.0
    for part in torch.split(out, chunk, dim=-1):
        nz = part[part != 0].double()
        squares += float(((nz - mean) ** 2).sum())
    std = (squares / count) ** 0.5 or 1.0
    for part in torch.split(out, chunk, dim=-1):
        zero = part == 0
        part.sub_(mean).div_(std).masked_fill_(zero, 0.0)
    return out


def normalize(image: np.ndarray | torch.Tensor, method: str) -> torch.Tensor:
    """Channel-first image -> float32 tensor as the network expects it.

    - ``median``: the paper's ``clip(x - median(x) + 127, 0, 255) / 255`` for 8-bit images; it evens out
      the strong exposure differences between endoscopy frames.
    - ``zscore``: per-volume z-score over non-zero voxels (MR has no absolute scale).
    - ``imagenet``: x / 255 then ImageNet mean/std, to go with a torchvision-pretrained encoder.
    - ``unit``: x / 255.

    Args:
        image: channel-first, (C, H, W) or (C, X, Y, Z).
        method: one of :data:`NORMALIZATIONS`.

    Returns:
        A float32 tensor of the same shape.

    Raises:
        ValueError: ``method`` is unknown, or ``imagenet`` is asked of an image without 3 channels.
    """
    x = torch.as_tensor(np.asarray(image) if not isinstance(image, torch.Tensor) else image).float()
    if method == "median":
        return torch.clamp(x - x.median() + 127.0, 0.0, 255.0) / 255.0
    if method == "zscore":
        return zscore_nonzero(x)
    if method == "imagenet":
        if x.shape[0] != 3:
            raise ValueError(f"imagenet normalisation needs 3 channels, got {x.shape[0]}")
        shape = (3,) + (1,) * (x.ndim - 1)
        mean = torch.tensor(IMAGENET_MEAN).view(shape)
        std = torch.tensor(IMAGENET_STD).view(shape)
        return (x / 255.0 - mean) / std
    if method == "unit":
        return x / 255.0
    raise ValueError(f"unknown normalisation {method!r}; choose one of {NORMALIZATIONS}")


def normalize_each_slice(image: np.ndarray | torch.Tensor, preprocessing: Callable[..., torch.Tensor]) -> torch.Tensor:
    """``preprocessing`` applied to each slice along the last axis on its own, the results stacked again.

    For frames that are separate pictures (a cine loop without patient geometry): each frame is normalised
    exactly as the same frame given alone as a 2D image, (C, X, Y, 1), would be, instead of with statistics
    (a median, a mean) taken over all frames.

    Args:
        image: (C, X, Y, Z), Z the frames; not modified when ``preprocessing`` does not modify its input.
        preprocessing: a normalisation such as :class:`Normalize`, (C, X, Y, 1) -> tensor of that shape.

    Returns:
        A float32 tensor of ``image``'s shape.
    """
    return torch.cat(
        [torch.as_tensor(preprocessing(image[..., k : k + 1])).float() for k in range(image.shape[-1])], dim=-1
    )


class Normalize:
    """Array transform around :func:`normalize`: the engine's (and inference config's) preprocessing.

    Args:
        method: one of :data:`NORMALIZATIONS`.

    Raises:
        ValueError: ``method`` is unknown.
    """

    def __init__(self, method: str) -> None:
        if method not in NORMALIZATIONS:
            raise ValueError(f"unknown normalisation {method!r}; choose one of {NORMALIZATIONS}")
        self.method = method

    def __call__(self, image: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Channel-first (C, ...) image -> float32 tensor of the same shape."""
        return normalize(image, self.method)


class Normalized(MapTransform):
    """Dictionary transform around :func:`normalize`, for the bundle configs; keeps MetaTensor metadata.

    Args:
        keys: the channel-first images to normalise.
        method: one of :data:`NORMALIZATIONS`.
        allow_missing_keys: skip keys absent from the data instead of raising.
        each_slice_key: a data key that, when true, says the slices along Z are separate pictures (a cine
            loop without patient geometry): each is then normalised on its own (:func:`normalize_each_slice`).

    Raises:
        ValueError: ``method`` is unknown.
    """

    def __init__(
        self,
        keys: Sequence[Hashable],
        method: str,
        allow_missing_keys: bool = False,
        each_slice_key: str | None = None,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.normalize = Normalize(method)
        self.each_slice_key = each_slice_key

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        """A copy of ``data`` with each key's (C, ...) image normalised (a MetaTensor keeps its metadata)."""
        d = dict(data)
        each_slice = bool(self.each_slice_key and d.get(self.each_slice_key))
        for key in self.key_iterator(d):
            img = d[key]
            out = normalize_each_slice(img, self.normalize) if each_slice else self.normalize(img)
            if hasattr(img, "copy_meta_from"):
                img = img.clone().float()
                img.data = out  # keep affine and filename for the savers downstream
                d[key] = img
            else:
                d[key] = out
        return d


def probabilities_to_labels(probs: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """(K, ...) probabilities -> (1, ...) labels: threshold if K = 1, else argmax (background = 0).

    MONAI's :class:`~monai.transforms.AsDiscrete` does both. A multi-class model's labels are the plain argmax
    whatever ``threshold``; the Slicer panel's re-threshold slider weights the background by t / (1 - t)
    instead (``segment_import.labels_from_probabilities``, numpy only), which is this argmax at t = 0.5.

    Args:
        probs: (K, H, W) or (K, X, Y, Z) probabilities (a MetaTensor keeps its metadata).
        threshold: foreground cut (``>=``) for K = 1.

    Returns:
        uint8 labels (1, ...), values 0..max(K - 1, 1), of ``probs``'s tensor type.
    """
    if probs.shape[0] == 1:
        labels = AsDiscrete(threshold=threshold, dtype=torch.uint8)(probs)
    else:
        labels = AsDiscrete(argmax=True, dtype=torch.uint8)(probs)
    # AsDiscrete makes a plain tensor a MetaTensor: give back the caller's kind
    return convert_to_dst_type(labels, probs, dtype=torch.uint8)[0]


class ProbabilitiesToLabels:
    """Array transform around :func:`probabilities_to_labels`: the engine's postprocessing.

    Maps (K, ...) probabilities to a uint8 numpy label map (...) without the channel axis.
    """

    def __init__(self, threshold: float = 0.5) -> None:
        self.threshold = threshold

    def __call__(self, probs: np.ndarray | torch.Tensor) -> np.ndarray:
        """(K, ...) probabilities -> (...) uint8 labels."""
        return probabilities_to_labels(torch.as_tensor(probs), self.threshold)[0].numpy()


class ProbabilitiesToLabelsd(MapTransform):
    """Labels from the inferer's probabilities; ``one_hot`` gives the K-channel form MONAI metrics take.

    Args:
        keys: the (K, ...) probability tensors; replaced by float labels (1, ...), or (K, ...) one-hot.
        threshold: foreground cut for K = 1.
        one_hot: for K > 1, one channel per class instead of label values.
    """

    def __init__(self, keys: Sequence[Hashable], threshold: float = 0.5, one_hot: bool = False) -> None:
        super().__init__(keys)
        self.threshold = threshold
        self.one_hot = one_hot

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        """A copy of ``data`` with each key's (K, ...) probabilities replaced by float labels."""
        d = dict(data)
        for key in self.key_iterator(d):
            probs = d[key]
            labels = probabilities_to_labels(probs, self.threshold)
            if self.one_hot and probs.shape[0] > 1:
                labels = convert_to_dst_type(AsDiscrete(to_onehot=probs.shape[0])(labels), probs)[0]
            d[key] = labels.float()
        return d


def keep_largest_components(labels: np.ndarray, classes: int) -> np.ndarray:
    """Each label value 1..classes keeps only its largest connected piece (26-connected in 3D).

    A structure that is one piece in the anatomy (a hippocampus part) loses the stray islands a
    slice-by-slice model leaves; on the hippocampus validation split this raised Dice and cut HD95.

    Args:
        labels: a label map, (H, W) or (X, Y, Z).
        classes: the highest label value to clean.

    Returns:
        The cleaned label map, same shape and dtype.
    """
    keep = KeepLargestConnectedComponent(applied_labels=list(range(1, classes + 1)), independent=True)
    return np.asarray(keep(torch.as_tensor(labels[None]))[0], dtype=labels.dtype)


def postprocess_labels(
    labels: np.ndarray,
    classes: int,
    slice_axis: int = 2,
    largest_component: bool = False,
    fill_holes: bool = False,
    min_component_fraction: float = 0.0,
) -> np.ndarray:
    """A model's label clean-up, in this order: drop small pieces, fill holes, keep the largest piece.

    Each step is on per model (``models/model.json``) only where it raised validation Dice
    (:mod:`doubleunet_segment.release.split_evaluation` chooses them). The first two work slice by slice along
    ``slice_axis``, as the 2D network saw the data: ``scipy.ndimage.binary_fill_holes`` per class, and
    ``skimage.morphology.remove_small_objects`` (8-connected) per class; the largest piece is kept in 3D
    (:func:`keep_largest_components`).

    Args:
        labels: (X, Y, Z) label map (a 2D image is (X, Y, 1) with ``slice_axis`` 2); not modified.
        classes: the highest label value to clean (1 for binary models).
        slice_axis: the axis (0..2) the model slices along.
        largest_component: keep only each class's largest 3D piece.
        fill_holes: fill each class's enclosed holes, slice by slice.
        min_component_fraction: drop pieces smaller than this fraction of a slice's pixels, slice by slice.

    Returns:
        The cleaned (X, Y, Z) label map, same dtype.
    """
    from scipy.ndimage import binary_fill_holes
    from skimage.morphology import remove_small_objects

    out = labels.copy()
    if min_component_fraction > 0 or fill_holes:
        planes = np.moveaxis(out, slice_axis, 0)  # a view: writes go to ``out``
        min_size = int(round(min_component_fraction * planes[0].size))
        for plane in planes:
            for value in range(1, classes + 1):
                mask = plane == value
                if not mask.any():
                    continue
                if min_size > 0:
                    plane[mask & ~remove_small_objects(mask, max_size=min_size - 1, connectivity=2)] = 0
                    mask = plane == value
                if fill_holes:
                    plane[binary_fill_holes(mask) & (plane == 0)] = value
    if largest_component:
        out = keep_largest_components(out, classes)
    return out


def add_slice_context(volume: torch.Tensor, axis: int, context: int) -> torch.Tensor:
    """(1, X, Y, Z) -> (2 * context + 1, X, Y, Z): each voxel also sees its neighbours along ``axis``.

    For 2.5D models: slice k of channel j is slice k + j - context of the input (edges repeat), so a
    slice-by-slice inferer hands the network a slice with its neighbours as channels.

    Args:
        volume: (1, X, Y, Z).
        axis: the slice axis, 0..2 of (X, Y, Z).
        context: neighbouring slices on each side; 0 returns ``volume`` itself.

    Raises:
        ValueError: ``volume`` has more than one channel (and ``context`` > 0).
    """
    if context == 0:
        return volume
    if volume.shape[0] != 1:
        raise ValueError(f"2.5D context needs a one-channel volume, got {volume.shape[0]} channels")
    dim = axis + 1
    n = volume.shape[dim]
    channels = []
    for offset in range(-context, context + 1):
        index = torch.clamp(torch.arange(n) + offset, 0, n - 1)
        channels.append(torch.index_select(volume, dim, index.to(volume.device)))
    return torch.cat(channels, dim=0)


class SliceContextd(MapTransform):
    """Dictionary transform around :func:`add_slice_context` for the bundle configs.

    Args:
        keys: the (1, X, Y, Z) volumes.
        axis: the slice axis, 0..2 of (X, Y, Z).
        context: neighbouring slices on each side.
    """

    def __init__(self, keys: Sequence[Hashable], axis: int = 2, context: int = 0) -> None:
        super().__init__(keys)
        self.axis = axis
        self.context = context

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        """A copy of ``data`` with each key's (1, X, Y, Z) volume as (2 * context + 1, X, Y, Z)."""
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = add_slice_context(d[key], self.axis, self.context)
        return d
