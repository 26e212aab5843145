"""Which files train and which validate: datalist JSONs, folder layouts, seeded splits, volume slicing.

A dataset folder is either 2D (``images/`` + ``masks/``, same file names) or volumes (``imagesTr/`` +
``labelsTr/`` NIfTI, the Decathlon layout); a MONAI datalist JSON (``training``/``validation`` lists,
paths relative to the dataset folder) pins a split so anyone trains on the same cases.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from monai.data import load_decathlon_datalist
from monai.transforms import LoadImage

from ..transforms import normalize

__all__ = [
    "IMAGE_SUFFIXES",
    "VOLUME_SUFFIXES",
    "combined_split",
    "is_volume",
    "load_items",
    "main",
    "scan_pairs",
    "split_pairs",
    "volume_slices",
    "write_datalist",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
# .mgz/.mgh: FreeSurfer volumes (a whole-head T1 as FreeSurfer conforms it), read by nibabel
VOLUME_SUFFIXES = (".nii", ".nii.gz", ".mgz", ".mgh", ".nrrd", ".mha", ".mhd")


def _has_suffix(path: Path, suffixes: tuple[str, ...]) -> bool:
    return path.name.lower().endswith(suffixes)


def scan_pairs(dataset_dir: str | Path) -> list[dict[str, str]]:
    """Image/label pairs found in a 2D or Decathlon-style folder, paths relative to it, sorted by name.

    Returns:
        ``[{"image": "images/x.png", "label": "masks/x.png"}, ...]`` (or ``imagesTr``/``labelsTr``).

    Raises:
        FileNotFoundError: the folder has neither layout, no images, or an image without its label.
    """
    root = Path(dataset_dir)
    for images, labels, suffixes in (("images", "masks", IMAGE_SUFFIXES), ("imagesTr", "labelsTr", VOLUME_SUFFIXES)):
        if (root / images).is_dir() and (root / labels).is_dir():
            pairs = []
            for img in sorted((root / images).iterdir()):
                if not _has_suffix(img, suffixes):
                    continue
                lab = root / labels / img.name
                if not lab.is_file():
                    raise FileNotFoundError(f"no label for {img}: expected {lab}")
                pairs.append({"image": f"{images}/{img.name}", "label": f"{labels}/{img.name}"})
            if not pairs:
                raise FileNotFoundError(f"no images with suffix {suffixes} in {root / images}")
            return pairs
    raise FileNotFoundError(
        f"{root} holds neither images/ + masks/ (2D) nor imagesTr/ + labelsTr/ (volumes); pass a datalist JSON instead"
    )


def split_pairs(
    pairs: list[dict[str, str]], val_fraction: float = 1 / 9, seed: int = 42, test_fraction: float = 0.0
) -> dict[str, list]:
    """Seeded train/validation(/test) split by item (default 8:1, no test), stable for a given file list.

    The items held out are the first ``round(n * (val_fraction + test_fraction))`` of a seeded shuffle; the
    last ``round(n * test_fraction)`` of those form the test section. So adding a test section to an existing
    split carves it out of the old validation items and leaves the training items (and any weights trained
    on them) untouched: validation and test stay unseen in training.

    Args:
        pairs: the items to split (one per case).
        val_fraction: share for validation (at least one item).
        seed: seed of :class:`random.Random`'s shuffle.
        test_fraction: share for the test section (0: none).

    Returns:
        ``{"training": [...], "validation": [...]}`` plus ``"testing"`` when ``test_fraction`` > 0, each in
        the input's order.

    Raises:
        ValueError: the fractions leave no training or no validation item.
    """
    order = list(range(len(pairs)))
    random.Random(seed).shuffle(order)
    n_held = max(1, round(len(pairs) * (val_fraction + test_fraction)))
    n_test = round(len(pairs) * test_fraction) if test_fraction > 0 else 0
    if n_held >= len(pairs) or n_test >= n_held:
        raise ValueError(
            f"val_fraction={val_fraction} and test_fraction={test_fraction} leave no training or no validation "
            f"item among {len(pairs)}"
        )
    sections = {"training": order[n_held:], "validation": order[: n_held - n_test]}
    if n_test:
        sections["testing"] = order[n_held - n_test : n_held]
    return {name: [pairs[i] for i in sorted(idx)] for name, idx in sections.items()}


def write_datalist(path: str | Path, datalist: dict[str, Any]) -> None:
    """Write ``datalist`` as indented JSON."""
    Path(path).write_text(json.dumps(datalist, indent=1) + "\n")


def load_items(dataset_dir: str | Path, datalist: str | Path | None, section: str, limit: int = 0) -> list[dict]:
    """Absolute image/label paths of one section (``training`` or ``validation``).

    With a datalist JSON its split is used; without one the folder is scanned and split with the
    default seed, so an ad-hoc training run on a new folder still validates on unseen cases.

    Args:
        dataset_dir: the dataset folder; the datalist's paths are relative to it.
        datalist: a MONAI datalist JSON, or None to scan and split the folder.
        section: ``training``, ``validation`` or ``testing`` (the datalist key, as MONAI's ``data_list_key``).
        limit: keep only the first ``limit`` items (0: all).

    Returns:
        ``{"image": ..., "label": ...}`` dicts with absolute paths (plus any other keys of the datalist).

    Raises:
        FileNotFoundError: the folder, or an image or label it lists, does not exist.
        KeyError: no datalist, and ``section`` is neither ``training`` nor ``validation``.
    """
    root = Path(dataset_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder not found: {root} (set --dataset_dir)")
    if datalist:
        items = load_decathlon_datalist(str(datalist), data_list_key=section, base_dir=str(root))
    else:
        split = split_pairs(scan_pairs(root))
        if section not in split:
            raise KeyError(f"{root}: a folder without a datalist has no {section!r} section; pass a datalist JSON")
        items = [{k: str(root / v) for k, v in d.items()} for d in split[section]]
    for item in items:
        for key in ("image", "label"):
            if key in item and not Path(item[key]).is_file():
                raise FileNotFoundError(f"{section} {key} not found: {item[key]}")
    return items[:limit] if limit else items


def is_volume(path: str | Path) -> bool:
    """Whether ``path`` names a volume file (:data:`VOLUME_SUFFIXES`) rather than a 2D image."""
    return _has_suffix(Path(path), VOLUME_SUFFIXES)


def volume_slices(
    items: list[dict], axis: int | Sequence[int] = 2, context: int = 0, normalization: str | None = None
) -> list[dict]:
    """Cut each volume of ``items`` into 2D slices along ``axis`` (0..2 of X, Y, Z), or along each of several.

    Several axes give one network slices of every view (multi-view training, for an inferer that averages
    the views' probabilities); their planes differ in shape, so the training transforms must pad or crop them
    to one size.

    ``normalization`` (see :func:`doubleunet_segment.transforms.normalize`) is applied per volume before cutting, as the
    engine does at inference: per-slice statistics would differ from per-volume ones.

    ``context`` > 0 stacks that many neighbours on each side as channels (2.5D; edges repeat the
    outer slice). Each slice keeps its case and index so metrics can be gathered per case.
    2D image items pass through unchanged (they are loaded by the transforms).

    Args:
        items: ``{"image": path, "label": path}`` dicts (label optional).
        axis: the slice axis, 0..2 of (X, Y, Z), or a sequence of them.
        context: neighbouring slices on each side stacked as channels.
        normalization: one of :data:`doubleunet_segment.transforms.NORMALIZATIONS`, or None for raw values.

    Returns:
        Per slice ``{"image": (C * (2 * context + 1), a, b) float32, "label": (1, a, b) uint8, "case": path,
        "slice": k, "axis": axis}``, where (a, b) are the two axes other than ``axis`` in order.
    """
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    loader = LoadImage(image_only=True, ensure_channel_first=True)
    out: list[dict] = []
    for item in items:
        if not is_volume(item["image"]):
            out.append(item)
            continue
        image = np.asarray(loader(item["image"]), dtype=np.float32)
        if normalization:
            image = normalize(image, normalization).numpy()
        label = np.asarray(loader(item["label"])).astype(np.uint8) if "label" in item else None
        for ax in axes:
            planes = np.moveaxis(image, ax + 1, 1)  # (C, S, a, b): slices second
            labels = np.moveaxis(label, ax + 1, 1) if label is not None else None
            n = planes.shape[1]
            for k in range(n):
                idx = [min(max(k + d, 0), n - 1) for d in range(-context, context + 1)]
                sample = {
                    "image": planes[:, idx].reshape(-1, *planes.shape[2:]),
                    "case": item["image"],
                    "slice": k,
                    "axis": ax,
                }
                if labels is not None:
                    sample["label"] = labels[:, k]
                out.append(sample)
    return out


def combined_split(
    root: str | Path, subsets: list[str], val_fraction: float = 1 / 9, seed: int = 42, test_fraction: float = 0.0
) -> dict:
    """One datalist over several dataset folders under ``root``, split per folder (see :func:`split_pairs`).

    Args:
        root: the folder holding the dataset folders.
        subsets: dataset folder names under ``root``.
        val_fraction: share for validation in each folder.
        seed: the split's seed.
        test_fraction: share for the test section in each folder (0: none).

    Returns:
        ``{"training": [...], "validation": [...]}`` (plus ``"testing"``) with paths relative to ``root`` and a
        ``dataset`` key.

    Raises:
        FileNotFoundError: a folder has neither layout (see :func:`scan_pairs`).
    """
    out: dict[str, list] = {"training": [], "validation": []}
    for name in subsets:
        split = split_pairs(scan_pairs(Path(root) / name), val_fraction, seed, test_fraction)
        for section, pairs in split.items():
            out.setdefault(section, [])
            out[section] += [
                {"image": f"{name}/{p['image']}", "label": f"{name}/{p['label']}", "dataset": name} for p in pairs
            ]
    return out


def main(argv: list[str] | None = None) -> None:
    """``python -m doubleunet_segment.data.datalist``: write a split datalist and print its counts."""
    import argparse

    parser = argparse.ArgumentParser(
        description="Write a seeded train/validation(/test) datalist JSON for dataset folders, split by case."
    )
    parser.add_argument("root", help="folder holding the dataset folders")
    parser.add_argument(
        "subsets", nargs="+", help="dataset folders under root (each images/+masks/ or imagesTr/+labelsTr/)"
    )
    parser.add_argument("-o", "--output", required=True, help="datalist JSON to write")
    parser.add_argument("--val-fraction", type=float, default=1 / 9)
    parser.add_argument(
        "--test-fraction",
        type=float,
        default=0.0,
        help="share for a test section, carved out of the held-out items so training stays the same (default 0)",
    )
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)
    split = combined_split(args.root, args.subsets, args.val_fraction, args.seed, args.test_fraction)
    split["seed"] = args.seed
    split["val_fraction"] = args.val_fraction
    split["test_fraction"] = args.test_fraction
    write_datalist(args.output, split)
    counts = ", ".join(f"{len(v)} {k}" for k, v in split.items() if isinstance(v, list))
    print(f"{args.output}: {counts}")


if __name__ == "__main__":
    main()
