"""The shipped models and how to load one: by name (``polyp``), bundle folder, or weights file.

Each shipped model is one MONAI bundle (``monai_bundle/<name>/``, see :mod:`.paths`). A model is its weights
plus a spec (channels, normalisation, in-plane handling, geometry, segment names), kept as data in the
bundle's ``models/model.json`` so the CLI, the bundle's configs and the Slicer module agree on it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import paths
from .networks.doubleunet import DoubleUNet
from .networks.weights import load_weights
from .segments import HIPPOCAMPUS_LR_SEGMENTS, HIPPOCAMPUS_SEGMENTS, POLYP_SEGMENTS, SegmentInfo, segments_from_dicts

__all__ = [
    "DEFAULT_MODEL",
    "SEGMENT_SETS",
    "ModelSpec",
    "build_network",
    "read_bundle",
    "load_model",
    "read_catalog",
    "resolve_model",
]

SEGMENT_SETS = {"polyp": POLYP_SEGMENTS, "hippocampus": HIPPOCAMPUS_SEGMENTS, "hippocampus_lr": HIPPOCAMPUS_LR_SEGMENTS}
DEFAULT_MODEL = "polyp"  # what runs when no --model is given


@dataclass
class ModelSpec:
    """What the engine must know to run a trained DoubleU-Net.

    Attributes:
        name: the model's name (its bundle folder's name, or the weights file's stem).
        weights: the state-dict file.
        in_channels: network input channels: 1 (grey), 3 (RGB, or 2.5D with ``context`` 1).
        out_channels: 1 for a binary model (sigmoid), K >= 2 for K classes with background first.
        normalization: one of :data:`doubleunet_segment.transforms.NORMALIZATIONS`.
        inplane: ``resize`` whole slices to ``roi_size``, or ``sliding_window`` over them.
        roi_size: the trained slice size (H, W) in pixels.
        slice_axis: the volume axis (0, 1 or 2 of X, Y, Z) that is cut into 2D slices (with ``consensus_axes``:
            the first of them, which slab previews and progress follow).
        consensus_axes: multi-view consensus: the axes whose slices are all segmented and whose probabilities
            are averaged; empty: ``slice_axis`` alone. ``model.json`` writes both as one list, ``"slice_axis":
            [1, 0, 2]``, first axis first.
        context: 2.5D: neighbouring slices on each side given as extra channels.
        threshold: foreground probability cut for binary models.
        largest_component: keep only each class's largest connected piece of the label map.
        fill_holes: fill each class's enclosed holes, slice by slice.
        min_component_fraction: drop pieces smaller than this fraction of a slice's pixels, slice by slice
            (0: none). The three clean-up steps are on only where they raised validation Dice
            (:func:`doubleunet_segment.transforms.postprocess_labels`).
        int8_keep_float: ONNX node-name prefixes (module paths, e.g. ``/head2/``) that stay float32 when the
            engine quantizes the model to int8 (:func:`doubleunet_segment.inference.quantization.quantize_int8`).
        axcodes: the orientation the model was trained in (nibabel axis codes, e.g. ``RAS``): volumes are
            reoriented to it before inference and the labels back after; None: used as given (2D frames).
        pixdim: the voxel size in mm the model was trained at, (X, Y, Z): volumes are resampled to it
            before inference and the labels back to the input grid after; None: used as given.
        crop_size: for a model trained on crops around one structure, the crops' size in mm (X, Y, Z): a study
            far larger is localised first (:mod:`doubleunet_segment.inference.whole_head`); None: whole images.
        crop_side: the side the training crops show (``left`` or ``right``); the other side is mirrored to look
            like it. None: the crops are not of one side.
        segments: a named set of :data:`SEGMENT_SETS`, or a list of :class:`SegmentInfo` dicts.
        description: free text for people.
        extra: the spec file's other keys (the weights' licence), kept as they are.
        bundle: the bundle folder the model came from (None for a bare weights file).
    """

    name: str
    weights: Path
    in_channels: int = 3
    out_channels: int = 1
    normalization: str = "median"
    inplane: str = "resize"  # "resize" whole slices to roi_size, or "sliding_window" over them
    roi_size: tuple[int, int] = (256, 256)
    slice_axis: int = 2
    consensus_axes: tuple[int, ...] = ()  # multi-view: axes whose probabilities are averaged; (): slice_axis only
    context: int = 0  # 2.5D: neighbouring slices on each side given as channels
    threshold: float = 0.5
    largest_component: bool = False  # keep only each class's largest connected piece of the label map
    fill_holes: bool = False  # fill each class's enclosed holes, slice by slice
    min_component_fraction: float = 0.0  # drop pieces under this fraction of a slice's pixels
    int8_keep_float: tuple[str, ...] = ()  # ONNX node-name prefixes left in float32 by int8 quantization
    axcodes: str | None = None  # trained orientation (e.g. "RAS"); None: as given
    pixdim: tuple[float, float, float] | None = None  # trained voxel size in mm; None: as given
    crop_size: tuple[float, float, float] | None = None  # training crops' size in mm; None: whole images
    crop_side: str | None = None  # the side the training crops show ("left"/"right"); None: not one side
    segments: str | list = "polyp"  # a named set of SEGMENT_SETS, or a list of SegmentInfo dicts
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    bundle: Path | None = None

    @classmethod
    def from_dict(cls, name: str, d: dict[str, Any], models_dir: Path, bundle: Path | None = None) -> ModelSpec:
        """A spec from a ``model.json`` (or a weights file's ``.json`` sidecar).

        Args:
            name: the model's name.
            d: the spec; ``weights`` (required) is relative to ``models_dir``, unknown keys go to ``extra``.
            models_dir: the folder the weights file lies in.
            bundle: the bundle folder, when the spec is a bundle's.

        Raises:
            KeyError: ``d`` has no ``weights``.
            ValueError: ``slice_axis`` is a list with an axis other than 0, 1, 2 or a repeated one.
        """
        own = ("name", "weights", "bundle", "extra")
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__ and k not in own}
        extra = {k: v for k, v in d.items() if k not in cls.__dataclass_fields__}
        known["roi_size"] = tuple(known.get("roi_size", (256, 256)))
        if isinstance(known.get("slice_axis"), list):  # [1, 0, 2]: multi-view, the first axis leads
            axes = tuple(int(a) for a in known["slice_axis"])
            if not axes or len(set(axes)) != len(axes) or any(a not in (0, 1, 2) for a in axes):
                raise ValueError(f"model {name!r}: slice_axis must be 0, 1, 2 or a list of distinct ones, got {axes}")
            known["slice_axis"], known["consensus_axes"] = axes[0], axes if len(axes) > 1 else ()
        known["int8_keep_float"] = tuple(known.get("int8_keep_float", ()))
        for key in ("pixdim", "crop_size"):
            if known.get(key) is not None:
                known[key] = tuple(float(v) for v in known[key])
        return cls(name=name, weights=models_dir / d["weights"], extra=extra, bundle=bundle, **known)

    @property
    def views(self) -> tuple[int, ...]:
        """The slice axes whose probabilities make the prediction: ``consensus_axes``, or ``(slice_axis,)``."""
        return self.consensus_axes or (self.slice_axis,)

    @property
    def slice_axis_setting(self) -> int | list[int]:
        """``slice_axis`` as ``model.json`` and the bundle configs write it: an int, or the consensus list."""
        return list(self.consensus_axes) if self.consensus_axes else self.slice_axis

    def postprocess(self, labels: np.ndarray, slice_axis: int | None = None) -> np.ndarray:
        """This model's label clean-up (:func:`doubleunet_segment.transforms.postprocess_labels`) of an
        (X, Y, Z) label map; ``slice_axis`` defaults to the model's."""
        from .transforms import postprocess_labels

        return postprocess_labels(
            labels,
            max(1, self.out_channels - 1),
            self.slice_axis if slice_axis is None else slice_axis,
            self.largest_component,
            self.fill_holes,
            self.min_component_fraction,
        )

    def segment_infos(self) -> list[SegmentInfo]:
        """Names, colours and codes of the label values this model writes.

        Raises:
            ValueError: ``segments`` names a set that does not exist.
        """
        if isinstance(self.segments, str):
            if self.segments not in SEGMENT_SETS:
                raise ValueError(f"model {self.name!r}: unknown segment set {self.segments!r}")
            return SEGMENT_SETS[self.segments]
        return segments_from_dicts(self.segments)


def read_bundle(bundle: Path) -> ModelSpec:
    """The model of one bundle folder, named after the folder.

    Args:
        bundle: a bundle folder (``models/model.json`` and the weights it names under ``models/``).

    Raises:
        FileNotFoundError: ``bundle`` has no ``models/model.json``.
    """
    bundle = Path(bundle).expanduser().resolve()
    spec_file = bundle / "models" / paths.MODEL_SPEC_NAME
    if not spec_file.is_file():
        raise FileNotFoundError(
            f"{bundle} is not a DoubleU-Net bundle: no models/{paths.MODEL_SPEC_NAME} (a bundle's configs find their "
            "folder through bundle_root: run from the bundle folder, or pass --bundle_root <folder>)"
        )
    return ModelSpec.from_dict(bundle.name, json.loads(spec_file.read_text()), spec_file.parent, bundle)


def read_catalog(root: Path | None = None) -> dict[str, ModelSpec]:
    """Every shipped model, by name: one per bundle folder in ``root``.

    Args:
        root: the bundles root; default :func:`doubleunet_segment.paths.bundles_root`.

    Raises:
        FileNotFoundError: no bundles root was found.
    """
    root = paths.bundles_root() if root is None else root
    return {name: read_bundle(root / name) for name in paths.bundle_names(root)}


def resolve_model(choice: str | None) -> ModelSpec:
    """A shipped model's name, a bundle folder or a ``.pt`` weights file.

    A bare weights file gets the default model's spec: it is assumed to be a retrained polyp model
    unless a ``<file>.json`` spec sits beside it.

    Args:
        choice: the model name, folder or file; None for :data:`DEFAULT_MODEL`.

    Returns:
        The spec; its weights file is not opened here.

    Raises:
        FileNotFoundError: ``choice`` is neither a shipped model nor an existing bundle folder or file.
    """
    catalog = read_catalog()
    if choice is None:
        return catalog[DEFAULT_MODEL]
    if choice in catalog:
        return catalog[choice]
    path = Path(choice).expanduser()
    if path.is_dir():
        return read_bundle(path)
    if path.is_file():
        sidecar = path.with_suffix(".json")
        if sidecar.is_file():
            return ModelSpec.from_dict(
                path.stem, {**json.loads(sidecar.read_text()), "weights": path.name}, path.parent
            )
        base = catalog[DEFAULT_MODEL]
        return ModelSpec(**{**base.__dict__, "name": path.stem, "weights": path, "bundle": None})
    raise FileNotFoundError(
        f"unknown model {choice!r}: not one of {sorted(catalog)}, nor a bundle folder or weights file"
    )


def build_network(spec: ModelSpec) -> DoubleUNet:
    """An untrained DoubleU-Net with the spec's channels."""
    return DoubleUNet(in_channels=spec.in_channels, out_channels=spec.out_channels)


def load_model(spec: ModelSpec, device: torch.device | str = "cpu") -> DoubleUNet:
    """The spec's network with its trained weights, in eval mode; a mismatch names the file.

    Args:
        spec: the model.
        device: where to put the network.

    A shipped file (listed in its bundle's ``large_files.yml``) is checked against its listed sha256 first;
    a weights file of the user's own is not listed and loads unchecked.

    Raises:
        FileNotFoundError: the weights file does not exist.
        WeightsHashError: a shipped weights file is damaged (a ``ValueError``; the message says how to restore it).
        ValueError: the weights do not fit the spec's channels.
    """
    return load_weights(build_network(spec), spec.weights).to(device)
