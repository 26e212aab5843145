"""Pictures a person looks at: mask PNGs, colour overlays on 2D images, orthogonal views of volumes."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from ..segments import SegmentInfo
from .atomic import atomic_path

__all__ = ["blend", "mask_png", "orthogonal_views", "save_png"]


def _to_rgb8(image: np.ndarray) -> np.ndarray:
    """(C, X, Y) -> (Y, X, 3) uint8, windowed to the 1st-99th percentile for non-8-bit data."""
    img = np.asarray(image, dtype=np.float32)
    img = np.repeat(img, 3, axis=0) if img.shape[0] == 1 else img[:3]
    lo, hi = np.percentile(img, [1, 99]) if img.max() > 255 or img.min() < 0 else (0.0, 255.0)
    img = np.clip((img - lo) / max(hi - lo, 1e-6), 0, 1) * 255
    return np.ascontiguousarray(np.transpose(img, (2, 1, 0))).astype(np.uint8)


def blend(image: np.ndarray, labels: np.ndarray, segments: Sequence[SegmentInfo], alpha: float = 0.45) -> np.ndarray:
    """(C, X, Y) image and (X, Y) labels -> (Y, X, 3) uint8 with filled, outlined segments.

    Intensities outside 0..255 are windowed to their 1st-99th percentile; grey is shown as grey, more than
    three channels use the first three.

    Args:
        image: (C, X, Y).
        labels: (X, Y) label values.
        segments: the colour of each label value; others are not drawn.
        alpha: the fill's opacity (the outline is opaque).
    """
    out = _to_rgb8(image).astype(np.float32)
    lab = np.asarray(labels).T
    for seg in segments:
        mask = lab == seg.value
        if not mask.any():
            continue
        color = np.array(seg.color, dtype=np.float32)
        out[mask] = (1 - alpha) * out[mask] + alpha * color
        edge = mask & ~ndimage.binary_erosion(mask, iterations=max(1, min(mask.shape) // 200))
        out[edge] = color
    return out.astype(np.uint8)


def save_png(rgb_or_grey: np.ndarray, path: Path, overwrite: bool = False) -> Path:
    """Write a (H, W, 3) or (H, W) uint8 picture as PNG, atomically; returns ``path``.

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is False.
    """
    with atomic_path(path, overwrite=overwrite) as tmp:
        Image.fromarray(rgb_or_grey).save(tmp, format="PNG")
    return path


def mask_png(labels: np.ndarray) -> np.ndarray:
    """(X, Y) labels -> (Y, X) uint8: 255 for a binary mask, the label value for several classes."""
    lab = np.asarray(labels).T.astype(np.uint8)
    return lab * 255 if lab.max(initial=0) <= 1 else lab


def orthogonal_views(volume: np.ndarray, labels: np.ndarray, segments: Sequence[SegmentInfo]) -> np.ndarray:
    """Axial, coronal and sagittal slices through the segmentation's centre, side by side.

    Args:
        volume: (C, X, Y, Z).
        labels: (X, Y, Z) label values; their foreground's centroid (or the volume's centre) picks the slices.
        segments: the colour of each label value.

    Returns:
        (H, W, 3) uint8: the three views, enlarged by a whole factor to at least 256 pixels high.
    """
    fg = np.argwhere(labels > 0)
    centre = fg.mean(axis=0).round().astype(int) if len(fg) else np.array(labels.shape) // 2
    x, y, z = centre
    views = [
        blend(volume[:, :, :, z], labels[:, :, z], segments),
        blend(volume[:, :, y, :], labels[:, y, :], segments)[::-1],
        blend(volume[:, x, :, :], labels[x, :, :], segments)[::-1],
    ]
    height = max(v.shape[0] for v in views)
    scale = max(1, 256 // height)
    padded = [np.pad(v, ((0, height - v.shape[0]), (0, 4), (0, 0))) for v in views]
    strip = np.concatenate(padded, axis=1)
    return np.kron(strip, np.ones((scale, scale, 1), dtype=np.uint8)) if scale > 1 else strip
